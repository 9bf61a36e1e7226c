/*
 * Feeds the session state machine a sequence of events decoded from the
 * fuzz input (client bytes, canned commands, TLS, commit results, timeout,
 * shutdown, eof) and checks its invariants with abort():
 *   - BODY_BEGIN and COMMIT only with a sender and at least one recipient;
 *   - body data only between BODY_BEGIN and ABORT/COMMIT;
 *   - no STARTTLS action inside TLS, and nothing answered between the
 *     STARTTLS action and the handshake;
 *   - nothing at all after CLOSE;
 *   - every reply line is "DDD" + ' ' or '-' and ends with CRLF;
 *   - no more body bytes than message_max per message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fz_domains[] = { "test.example" };

static const char *const fz_cmds[] = {
	"EHLO c.example\r\n", "HELO c.example\r\n", "MAIL FROM:<a@c.example>\r\n",
	"MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n", "RCPT TO:<u@test.example>\r\n",
	"RCPT TO:<postmaster>\r\n", "RCPT TO:<u@elsewhere.example>\r\n", "DATA\r\n",
	"\r\n.\r\n", "BDAT 5\r\n", "BDAT 3 LAST\r\n", "BDAT 0 LAST\r\n", "RSET\r\n",
	"NOOP\r\n", "QUIT\r\n", "STARTTLS\r\n", "VRFY u\r\n", "HELP\r\n", "AUTH PLAIN x\r\n",
	"Subject: x\r\n\r\nbody\r\n", "\n.\n", "\r.\r\n", "..\r\n",
};

struct fz_state {
	bool body_open;
	bool tls_pending;
	bool in_tls;
	bool closed;
	uint64_t body_bytes;
};

static void fz_check_output(const uint8_t *o, size_t n)
{
	size_t i = 0;
	while (i < n) {
		const uint8_t *e = memchr(o + i, '\n', n - i);
		if (!e)
			abort();
		size_t ll = (size_t)(e - (o + i)) + 1;
		if (ll < 6 || o[i + ll - 2] != '\r')
			abort();
		for (int k = 0; k < 3; k++)
			if (o[i + k] < '0' || o[i + k] > '9')
				abort();
		if (o[i + 3] != ' ' && o[i + 3] != '-')
			abort();
		i += ll;
	}
}

static void fz_drain(struct smtp_session *s, struct fz_state *st, const struct smtp_policy *p,
		     bool fed)
{
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	/* Client bytes sent before the handshake never get an answer. */
	if (n && (st->closed || (st->tls_pending && fed)))
		abort();
	fz_check_output(o, n);
	smtp_session_output_done(s, n);
	const struct smtp_action *a;
	while ((a = smtp_session_next_action(s)) != NULL) {
		if (st->closed)
			abort();
		switch (a->type) {
		case SMTP_ACT_STARTTLS:
			if (st->in_tls || st->body_open)
				abort();
			st->tls_pending = true;
			break;
		case SMTP_ACT_BODY_BEGIN:
			if (st->body_open || !a->env || !a->env->sender || a->env->n_rcpts < 1)
				abort();
			st->body_open = true;
			st->body_bytes = 0;
			break;
		case SMTP_ACT_BODY_DATA:
			if (!st->body_open || !a->data || a->len == 0)
				abort();
			st->body_bytes += a->len;
			if (st->body_bytes > p->message_max)
				abort();
			break;
		case SMTP_ACT_BODY_ABORT:
			if (!st->body_open)
				abort();
			st->body_open = false;
			break;
		case SMTP_ACT_COMMIT:
			if (!st->body_open || !a->env || !a->env->sender || a->env->n_rcpts < 1 ||
			    a->env->n_rcpts > p->rcpt_max)
				abort();
			st->body_open = false;
			break;
		case SMTP_ACT_LOG_REFUSED:
			if (!a->reply || a->reply_len < 4 || (a->reply[0] != '4' && a->reply[0] != '5'))
				abort();
			break;
		case SMTP_ACT_CLOSE:
			st->closed = true;
			break;
		}
	}
	if (st->closed != smtp_session_closing(s) && !smtp_session_closing(s))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t f = data[0];
	struct smtp_policy p = {
		.role = (f & 1) ? SMTP_ROLE_SUBMISSION : SMTP_ROLE_MX,
		.hostname = "mx.test.example",
		.tls_available = !(f & 2),
		.tls_required = (f & 4) != 0,
		.auth_required = (f & 8) != 0,
		.local_domains = fz_domains,
		.n_local_domains = 1,
		.line_max = 512,
		.message_max = (f & 16) ? 40 : 4000,
		.rcpt_max = 2,
		.errors_max = (f & 32) ? 2 : 50,
		.data_line_max = (f & 64) ? 10 : 998,
		.header_max = (f & 128) ? 20 : 2000,
	};
	struct smtp_client c = { "F", "192.0.2.1", NULL, 25 };
	struct smtp_session *s = smtp_session_new(&p, &c);
	struct fz_state st = { 0 };
	size_t i = 1;
	bool started = false;
	bool eof = false;
	while (i < size && !eof) {
		uint8_t op = data[i++];
		bool fed = op % 10 <= 5;
		switch (op % 10) {
		case 0: case 1: case 2: { /* raw bytes */
			size_t n = op / 10 + 1;
			if (n > size - i)
				n = size - i;
			smtp_session_feed(s, data + i, n);
			i += n;
			break;
		}
		case 3: case 4: case 5: {
			const char *cmd = fz_cmds[(op / 10) % (sizeof(fz_cmds) / sizeof(fz_cmds[0]))];
			smtp_session_feed(s, (const uint8_t *)cmd, strlen(cmd));
			break;
		}
		case 6:
			if (st.tls_pending || (!started && !st.in_tls && (op & 16))) {
				smtp_session_tls_started(s, "TLSv1.3", "TLS_AES_128_GCM_SHA256");
				if (!smtp_session_closing(s)) {
					st.tls_pending = false;
					st.in_tls = true;
					if (!smtp_session_in_tls(s))
						abort();
				}
			} else if (!started) {
				smtp_session_start(s);
				started = true;
			} else {
				smtp_session_feed(s, NULL, 0);
			}
			break;
		case 7:
			smtp_session_commit_done(s, (op & 16) != 0, "Q1");
			break;
		case 8:
			if (op & 16)
				smtp_session_timeout(s);
			else
				smtp_session_shutdown(s);
			break;
		default:
			if (op & 16) {
				smtp_session_output_done(s, SIZE_MAX);
				smtp_session_eof(s);
				eof = true;
			} else {
				smtp_session_feed(s, NULL, 0);
			}
			break;
		}
		if (!eof) {
			fz_drain(s, &st, &p, fed);
			continue;
		}
		/* After eof: no reply, at most the abort of the open body. */
		const uint8_t *o;
		size_t n;
		smtp_session_output(s, &o, &n);
		if (n)
			abort();
		const struct smtp_action *a;
		while ((a = smtp_session_next_action(s)) != NULL)
			if (a->type != SMTP_ACT_BODY_ABORT)
				abort();
	}
	smtp_session_free(s);
	return 0;
}
