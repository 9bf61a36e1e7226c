/*
 * Queue ids.  The alphabet is in ASCII order so that ids of equal length
 * compare as strings in the same order as their times: a directory listing
 * sorted by name is the arrival order.
 */
#include <string.h>

#include "queue.h"

static const char queue_id_alphabet[] = "0123456789abcdefghijklmnopqrstuv";

/* Writes the low 5*width bits of v as width base-32 digits, most
 * significant first (fixed width keeps string order = numeric order). */
static void queue_id_put(char *out, uint64_t v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		out[i] = queue_id_alphabet[v & 31];
		v >>= 5;
	}
}

void queue_id_make(char out[QUEUE_ID_LEN + 1], int64_t now_us, long pid, unsigned seq)
{
	/* 55 bits of microseconds last until the year 3111; a time before the
	 * epoch is clamped rather than wrapped so that order is kept. */
	uint64_t t = now_us < 0 ? 0 : (uint64_t)now_us;
	queue_id_put(out, t, 11);
	out[11] = '-';
	queue_id_put(out + 12, (uint64_t)pid, 5);
	out[17] = '-';
	queue_id_put(out + 18, seq % 1024u, 2);
	out[QUEUE_ID_LEN] = '\0';
}

static bool queue_id_char(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'v');
}

bool queue_id_valid(const char *s)
{
	if (!s)
		return false;
	for (size_t i = 0; i < QUEUE_ID_LEN; i++) {
		if (s[i] == '\0')
			return false;
		if (i == 11 || i == 17) {
			if (s[i] != '-')
				return false;
		} else if (!queue_id_char(s[i])) {
			return false;
		}
	}
	return s[QUEUE_ID_LEN] == '\0';
}
