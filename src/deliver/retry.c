/*
 * The retry schedule: exponential back-off between a floor and a ceiling,
 * bounded by the message's lifetime.  Pure arithmetic on the times given.
 */
#include "deliver.h"

/* a + b for b >= 0, stopping at INT64_MAX instead of overflowing. */
static int64_t retry_add_sat(int64_t a, uint64_t b)
{
	if (a >= 0 && b > (uint64_t)(INT64_MAX - a))
		return INT64_MAX;
	if (a < 0 && b > (uint64_t)INT64_MAX) {
		/* a + b cannot overflow as long as b - |a| fits. */
		uint64_t rest = b - (uint64_t)(-(a + 1)) - 1;
		return rest > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)rest;
	}
	return a + (int64_t)b;
}

int64_t dlv_retry_next(const struct dlv_retry_conf *rc, unsigned attempts, int64_t received,
		       int64_t now)
{
	int64_t end = retry_add_sat(received, rc->lifetime_s);
	/* At the very end of the lifetime a retry "now" could only fail again
	 * within the same second, over and over: that is giving up too. */
	if (now >= end)
		return -1;

	/* A zero floor would retry in a busy loop; a ceiling below the floor
	 * is read as "no growth". */
	uint64_t floor = rc->min_s ? rc->min_s : 1;
	uint64_t ceil = rc->max_s > floor ? rc->max_s : floor;
	unsigned doublings = attempts > 0 ? attempts - 1 : 0;
	uint64_t interval = floor;
	/* Shift one step at a time: stops as soon as the ceiling is reached,
	 * so a huge attempt count costs nothing and never overflows. */
	for (unsigned i = 0; i < doublings && interval < ceil; i++)
		interval <<= 1;
	if (interval > ceil)
		interval = ceil;

	int64_t next = retry_add_sat(now, interval);
	return next > end ? end : next;
}
