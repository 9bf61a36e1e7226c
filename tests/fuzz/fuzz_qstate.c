/*
 * Fuzzes the delivery state parser.  The first byte picks the recipient
 * count the caller expects (0..15), the rest is the text.  Invariants: it
 * never crashes or leaks; a refused text leaves nothing behind; an
 * accepted one has every recipient, writes back no longer than it was
 * read, and reads back identical.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_state(const struct spool_state *a, const struct spool_state *b)
{
	if (a->attempts != b->attempts || a->next_try != b->next_try || a->warned != b->warned ||
	    a->giveup != b->giveup || a->n_rcpts != b->n_rcpts)
		return 0;
	for (size_t i = 0; i < a->n_rcpts; i++) {
		const char *x = a->rcpts[i].last, *y = b->rcpts[i].last;
		if (a->rcpts[i].status != b->rcpts[i].status)
			return 0;
		if ((!x || !y) ? x != y : strcmp(x, y) != 0)
			return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t n_rcpts = data[0] & 15;
	const char *text = (const char *)data + 1;
	size_t n = size - 1;
	struct spool_state st;
	struct err e;
	if (spool_state_parse(text, n, n_rcpts, &st, &e) < 0) {
		if (st.rcpts || st.n_rcpts || st.attempts || st.next_try)
			abort();
		return 0;
	}
	if (st.n_rcpts != n_rcpts || (n_rcpts && !st.rcpts) || st.next_try < 0)
		abort();
	for (size_t i = 0; i < st.n_rcpts; i++)
		if ((unsigned)st.rcpts[i].status > SPOOL_RCPT_FAILED ||
		    (st.rcpts[i].last && !st.rcpts[i].last[0]))
			abort();

	struct buf out;
	buf_init(&out, 64 * 1024 * 1024);
	if (spool_state_format(&st, &out, &e) < 0)
		abort(); /* accepted but not writable: parser and writer disagree */
	if (buf_len(&out) > n)
		abort(); /* the writer's form is the shortest */
	struct spool_state again;
	if (spool_state_parse((const char *)buf_ptr(&out), buf_len(&out), n_rcpts, &again, &e) < 0)
		abort();
	if (!same_state(&st, &again))
		abort();
	/* and the canonical text is a fixed point */
	struct buf out2;
	buf_init(&out2, 64 * 1024 * 1024);
	if (spool_state_format(&again, &out2, &e) < 0 || buf_len(&out2) != buf_len(&out) ||
	    memcmp(buf_ptr(&out2), buf_ptr(&out), buf_len(&out)) != 0)
		abort();
	buf_free(&out2);
	spool_state_free(&again);
	spool_state_free(&st);
	buf_free(&out);
	return 0;
}
