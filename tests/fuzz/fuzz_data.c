/*
 * Message data (DATA or BDAT chunks) fed to the session whole and again
 * split at fuzz-chosen points.  However the input is split:
 *   - the replies, the actions and the body bytes are identical;
 *   - no body data follows BODY_ABORT;
 *   - COMMIT comes only with a sender and at least one recipient;
 *   - the body handed out never exceeds message_max.
 *
 * Input: byte 0 = mode and limits, bytes 1..8 = split points, then the
 * data.  In BDAT mode the data is cut into chunks whose sizes come from
 * the data itself (first byte of each chunk), the last one sent with LAST.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fd_domains[] = { "test.example" };

struct fd_run {
	struct buf out;
	struct buf acts;
	struct buf body;
	bool open;
	bool aborted;
};

static void fd_drain(struct smtp_session *s, struct fd_run *r, const struct smtp_policy *p)
{
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	buf_append(&r->out, o, n);
	smtp_session_output_done(s, n);
	const struct smtp_action *a;
	while ((a = smtp_session_next_action(s)) != NULL) {
		if (a->type == SMTP_ACT_BODY_DATA) {
			if (!r->open || r->aborted)
				abort();
			buf_append(&r->body, a->data, a->len);
			continue;
		}
		char t = "TBDACLX"[a->type];
		buf_append(&r->acts, &t, 1);
		switch (a->type) {
		case SMTP_ACT_BODY_BEGIN:
			if (!a->env->sender || a->env->n_rcpts < 1)
				abort();
			r->open = true;
			r->aborted = false;
			buf_puts(&r->body, "<begin>");
			break;
		case SMTP_ACT_BODY_ABORT:
			r->aborted = true;
			r->open = false;
			buf_puts(&r->body, "<abort>");
			break;
		case SMTP_ACT_COMMIT:
			if (!r->open || !a->env->sender || a->env->n_rcpts < 1 ||
			    a->env->size > p->message_max)
				abort();
			r->open = false;
			buf_puts(&r->body, "<commit>");
			smtp_session_commit_result(s, SMTP_COMMIT_OK, "Q");
			fd_drain(s, r, p);
			return; /* commit_done started a new event call */
		default:
			break;
		}
	}
}

static void fd_feed(struct smtp_session *s, struct fd_run *r, const struct smtp_policy *p,
		    const uint8_t *d, size_t n)
{
	smtp_session_feed(s, d, n);
	fd_drain(s, r, p);
	smtp_session_feed(s, NULL, 0);
	fd_drain(s, r, p);
}

static void fd_run_input(const struct smtp_policy *p, const uint8_t *in, size_t n,
			 const size_t *cuts, size_t ncuts, struct fd_run *r)
{
	struct smtp_client c = { .session_id = "F", .ip = "192.0.2.1", .local_port = 25 };
	struct smtp_session *s = smtp_session_new(p, &c);
	buf_init(&r->out, 1 << 24);
	buf_init(&r->acts, 1 << 24);
	buf_init(&r->body, 1 << 24);
	r->open = r->aborted = false;
	size_t at = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		if (end < at)
			continue;
		if (end > at)
			fd_feed(s, r, p, in + at, end - at);
		at = end;
	}
	smtp_session_eof(s);
	fd_drain(s, r, p);
	smtp_session_free(s);
}

static void fd_free(struct fd_run *r)
{
	buf_free(&r->out);
	buf_free(&r->acts);
	buf_free(&r->body);
}

static bool fd_same(const struct buf *a, const struct buf *b)
{
	return buf_len(a) == buf_len(b) &&
	       (buf_len(a) == 0 || memcmp(buf_ptr(a), buf_ptr(b), buf_len(a)) == 0);
}

static int fd_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 9 || size > 65536)
		return 0;
	uint8_t f = data[0];
	struct smtp_policy p = {
		.role = SMTP_ROLE_MX,
		.hostname = "mx.test.example",
		.tls_available = true,
		.local_domains = fd_domains,
		.n_local_domains = 1,
		.line_max = 512,
		.message_max = (f & 2) ? 50 : 100000,
		.rcpt_max = 10,
		.errors_max = 1000,
		.data_line_max = (f & 4) ? 8 : 998,
		.header_max = (f & 8) ? 30 : 10000,
	};
	const uint8_t *body = data + 9;
	size_t blen = size - 9;

	struct buf in;
	buf_init(&in, 1 << 22);
	buf_puts(&in, "EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<u@test.example>\r\n");
	if (!(f & 1)) {
		buf_puts(&in, "DATA\r\n");
		buf_append(&in, body, blen);
		buf_puts(&in, "\r\n.\r\nNOOP\r\n");
	} else {
		size_t i = 0;
		while (i < blen) {
			size_t chunk = body[i] % 64;
			i++;
			if (chunk > blen - i)
				chunk = blen - i;
			bool last = i + chunk >= blen;
			buf_printf(&in, "BDAT %zu%s\r\n", chunk, last ? " LAST" : "");
			buf_append(&in, body + i, chunk);
			i += chunk;
		}
		buf_puts(&in, "NOOP\r\n");
	}
	size_t cuts[8];
	for (int k = 0; k < 8; k++)
		cuts[k] = buf_len(&in) ? (size_t)data[1 + k] * buf_len(&in) / 255 : 0;
	qsort(cuts, 8, sizeof(cuts[0]), fd_cmp);

	struct fd_run whole, split, bytes;
	fd_run_input(&p, buf_ptr(&in), buf_len(&in), NULL, 0, &whole);
	fd_run_input(&p, buf_ptr(&in), buf_len(&in), cuts, 8, &split);
	if (!fd_same(&whole.out, &split.out) || !fd_same(&whole.acts, &split.acts) ||
	    !fd_same(&whole.body, &split.body))
		abort();
	if (buf_len(&in) <= 2048) {
		size_t *every = malloc(buf_len(&in) * sizeof(size_t) + 1);
		for (size_t k = 0; k < buf_len(&in); k++)
			every[k] = k;
		fd_run_input(&p, buf_ptr(&in), buf_len(&in), every, buf_len(&in), &bytes);
		free(every);
		if (!fd_same(&whole.out, &bytes.out) || !fd_same(&whole.acts, &bytes.acts) ||
		    !fd_same(&whole.body, &bytes.body))
			abort();
		fd_free(&bytes);
	}
	fd_free(&whole);
	fd_free(&split);
	buf_free(&in);
	return 0;
}
