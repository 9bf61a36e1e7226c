/*
 * Rate table: per-key event counts in a sliding window, with a hard
 * bound on the number of keys.  Two fixed-window counters per key give a
 * sliding-window estimate in constant memory per key, whatever the limit
 * (an exact count would need one timestamp per event).  Keys come from
 * clients, so the hash is seeded and the table forgets the least recently
 * hit key when full rather than growing.
 */
#include <stdlib.h>
#include <string.h>

#include "policy.h"

struct rate_entry {
	struct rate_entry *hnext;          /* hash chain */
	struct rate_entry *lprev, *lnext;  /* recency list, most recent first */
	uint64_t hash;
	uint64_t window;
	int64_t cur_start;                 /* start of the current fixed window */
	uint64_t cur, prev;                /* events in the current and previous one */
	size_t keylen;
	uint8_t key[];
};

struct rate_table {
	struct rate_entry **buckets;
	size_t nbuckets;                   /* power of two */
	size_t n, max;
	uint64_t seed;
	struct rate_entry *head, *tail;
};

struct rate_table *rate_new(size_t max_entries, uint64_t seed)
{
	struct rate_table *t = xcalloc(1, sizeof(*t));
	t->max = max_entries ? max_entries : 1;
	t->nbuckets = 16;
	while (t->nbuckets < t->max && t->nbuckets < ((size_t)1 << 30))
		t->nbuckets <<= 1;
	t->buckets = xcalloc(t->nbuckets, sizeof(*t->buckets));
	t->seed = seed;
	return t;
}

void rate_free(struct rate_table *t)
{
	if (!t)
		return;
	struct rate_entry *e = t->head;
	while (e) {
		struct rate_entry *nx = e->lnext;
		free(e);
		e = nx;
	}
	free(t->buckets);
	free(t);
}

size_t rate_count(const struct rate_table *t)
{
	return t->n;
}

static void lru_unlink(struct rate_table *t, struct rate_entry *e)
{
	if (e->lprev)
		e->lprev->lnext = e->lnext;
	else
		t->head = e->lnext;
	if (e->lnext)
		e->lnext->lprev = e->lprev;
	else
		t->tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push(struct rate_table *t, struct rate_entry *e)
{
	e->lprev = NULL;
	e->lnext = t->head;
	if (t->head)
		t->head->lprev = e;
	t->head = e;
	if (!t->tail)
		t->tail = e;
}

static void evict(struct rate_table *t, struct rate_entry *e)
{
	struct rate_entry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(t, e);
	free(e);
	t->n--;
}

uint64_t rate_hit(struct rate_table *t, const void *key, size_t n, uint64_t window_s,
		  int64_t now_s)
{
	if (window_s == 0)
		window_s = 1;
	if (window_s > INT64_MAX / 2)
		window_s = INT64_MAX / 2;
	if (now_s < 0)
		now_s = 0;
	int64_t w = (int64_t)window_s;
	int64_t start = now_s - now_s % w;
	uint64_t h = rand_hash(t->seed, key, n);
	struct rate_entry **bucket = &t->buckets[h & (t->nbuckets - 1)];
	struct rate_entry *e = *bucket;
	while (e && !(e->hash == h && e->keylen == n && memcmp(e->key, key, n) == 0))
		e = e->hnext;
	if (e && e->window != window_s) {
		evict(t, e);
		e = NULL;
	}
	if (!e) {
		if (t->n >= t->max)
			evict(t, t->tail);
		e = xcalloc(1, sizeof(*e) + n);
		e->hash = h;
		e->window = window_s;
		e->cur_start = start;
		e->keylen = n;
		if (n)
			memcpy(e->key, key, n);
		e->hnext = *bucket;
		*bucket = e;
		lru_push(t, e);
		t->n++;
	} else {
		lru_unlink(t, e);
		lru_push(t, e);
	}
	/* A clock step backwards counts in the current window. */
	if (start > e->cur_start) {
		e->prev = start - e->cur_start == w ? e->cur : 0;
		e->cur = 0;
		e->cur_start = start;
	}
	if (e->cur < UINT64_MAX)
		e->cur++;
	int64_t elapsed = now_s - e->cur_start;
	if (elapsed < 0)
		elapsed = 0;
	uint64_t left = (uint64_t)(w - elapsed); /* 1..w: share of the previous window still covered */
	uint64_t part;
	/* Rounded up: a limit errs on the strict side. */
	if (e->prev <= UINT64_MAX / window_s)
		part = (e->prev * left + window_s - 1) / window_s;
	else
		part = e->prev / window_s * left;
	return e->cur > UINT64_MAX - part ? UINT64_MAX : e->cur + part;
}
