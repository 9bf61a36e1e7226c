/*
 * Fuzzes the SMTP/LMTP client machine as a hostile server would.  The
 * first byte picks the options (LMTP, TLS mode, TLS on connect, AUTH,
 * small or large reply bounds); the rest is a list of operations: feed
 * the next bytes, or an event (TLS result, body written, a message,
 * QUIT, EOF, timeout).  Invariants: every SEND is CRLF text (no bare CR
 * or LF); RESULT has one reply per recipient of the message sent, each
 * a 2xx-5xx code with text; CLOSE is the last action ever; a message is
 * accepted only right after READY; nothing leaks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct smtpc_rcpt fz_rcpts[] = {
	{ "r1@example.org", SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, "rfc822;r1@example.org" },
	{ "r2@example.org", SMTP_NOTIFY_NEVER, NULL },
	{ "r3@example.org", SMTP_NOTIFY_DELAY, NULL },
	{ "r4@example.org", 0, NULL },
};

static const struct smtpc_msg fz_msgs[] = {
	{ "s@example.com", fz_rcpts, 1, 100, false, false, 0, NULL },
	{ "s@example.com", fz_rcpts, 4, 100000, true, false, SMTP_RET_HDRS, "env+2Bid" },
	{ "", fz_rcpts + 1, 3, 5, false, true, SMTP_RET_FULL, NULL },
	{ "s@example.com", fz_rcpts, 2, 0, true, true, 0, "x" },
};

struct fz {
	const struct smtpc_msg *msg; /* the message in progress, if any */
	bool ready, closed, body;
	bool starttls;
};

static void check_send(const char *p, size_t n)
{
	if (!p || n == 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			abort();
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			abort();
	}
	if (p[n - 1] != '\n')
		abort();
}

static void drain(struct smtpc *c, struct fz *z)
{
	struct smtpc_action a;
	for (;;) {
		smtpc_next(c, &a);
		if (a.type == SMTPC_NONE)
			return;
		if (z->closed)
			abort(); /* nothing after CLOSE */
		switch (a.type) {
		case SMTPC_SEND:
			check_send(a.data, a.len);
			break;
		case SMTPC_STARTTLS:
			z->starttls = true;
			break;
		case SMTPC_BODY:
			if (!z->msg)
				abort();
			z->body = true;
			break;
		case SMTPC_RESULT:
			if (!z->msg || a.n != z->msg->n_rcpts || !a.replies)
				abort();
			for (size_t i = 0; i < a.n; i++)
				if (a.replies[i].code < 200 || a.replies[i].code > 599 ||
				    !a.replies[i].text ||
				    memchr(a.replies[i].status, 0, sizeof(a.replies[i].status)) == NULL)
					abort();
			z->msg = NULL;
			break;
		case SMTPC_READY:
			z->ready = true;
			break;
		case SMTPC_CLOSE:
			if (!a.reply || !a.reply->text ||
			    (a.reply->code != 221 && (a.reply->code < 400 || a.reply->code > 599)))
				abort();
			z->closed = true;
			break;
		case SMTPC_NONE:
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t f = data[0];
	struct smtpc_opts o = {
		.lmtp = f & 1,
		.helo = "client.example",
		.tls = (enum smtpc_tls)((f >> 1) % 3),
		.tls_active = f & 8,
		.auth_user = (f & 16) ? "user" : NULL,
		.auth_pass = (f & 16) ? "pass\r\nword" : NULL,
		.reply_line_max = (f & 32) ? 40 : 1000,
		.reply_lines_max = (f & 64) ? 3 : 50,
	};
	struct smtpc *c = smtpc_new(&o);
	if (!c)
		abort();
	struct fz z = { 0 };
	struct err e;
	size_t i = 1;
	while (i < size) {
		uint8_t op = data[i++];
		switch (op >> 5) {
		case 0:
		case 1:
		case 2:
		case 3: { /* feed up to 128 bytes */
			size_t n = (size_t)(op & 0x7f) + 1;
			if (n > size - i)
				n = size - i;
			smtpc_feed(c, (const char *)data + i, n);
			i += n;
			break;
		}
		case 4:
			smtpc_tls_done(c, op & 1);
			break;
		case 5:
			smtpc_body_done(c);
			break;
		case 6: {
			const struct smtpc_msg *m = &fz_msgs[op & 3];
			bool was_ready = z.ready && !z.closed && !z.msg;
			int rc = smtpc_send_msg(c, m, &e);
			if (rc == 0) {
				if (!was_ready)
					abort();
				z.msg = m;
				z.ready = false;
				z.body = false;
			}
			break;
		}
		default:
			switch (op & 3) {
			case 0:
				smtpc_quit(c);
				break;
			case 1:
				smtpc_eof(c);
				break;
			default:
				smtpc_timeout(c);
				break;
			}
			z.ready = false;
			break;
		}
		drain(c, &z);
	}
	smtpc_free(c);
	return 0;
}
