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
 *   - no more body bytes than message_max per message;
 *   - AUTH is advertised and asked about only inside TLS, and no
 *     "235" without an AUTH_OK answer to a pending AUTH_REQUEST;
 *   - no COMMIT of an authenticated session with check_sender unless the
 *     last sender lookup, for this very sender, was answered AUTH_OK
 *     (the null sender is never looked up);
 *   - a refused AUTH is logged as "AUTH <mech>" only, and LOG_AUTH
 *     carries only a user name (the one given, or the canonical one);
 *   - ADD_HEADERS only inside a message, on submission with the option.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fz_domains[] = { "test.example" };

/* The password is "s3cr3t"; the other secrets are its base64 forms. */
static const char *const fz_secrets[] = { "s3cr3t", "czNjcjN0", "AHVzZXIAczNj" };

static const char *const fz_cmds[] = {
	"EHLO c.example\r\n", "HELO c.example\r\n", "MAIL FROM:<a@c.example>\r\n",
	"MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8\r\n", "RCPT TO:<u@test.example>\r\n",
	"RCPT TO:<postmaster>\r\n", "RCPT TO:<u@elsewhere.example>\r\n", "DATA\r\n",
	"\r\n.\r\n", "BDAT 5\r\n", "BDAT 3 LAST\r\n", "BDAT 0 LAST\r\n", "RSET\r\n",
	"NOOP\r\n", "QUIT\r\n", "STARTTLS\r\n", "VRFY u\r\n", "HELP\r\n", "AUTH PLAIN x\r\n",
	"Subject: x\r\n\r\nbody\r\n", "\n.\n", "\r.\r\n", "..\r\n",
	"AUTH PLAIN AHVzZXIAczNjcjN0\r\n", "AUTH PLAIN\r\n", "AHVzZXIAczNjcjN0\r\n",
	"AUTH LOGIN\r\n", "dXNlcg==\r\n", "czNjcjN0\r\n", "*\r\n", "AUTH CRAM-MD5\r\n",
	"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9Y25vbmNlMTIz\r\n",
	("Yz1iaXdzLHI9Y25vbmNlMTIzU05PTkNFLHA9QUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmth"
	 "R3h3ZEhoOD0=\r\n"),
	"\r\n", "MAIL FROM:<u@test.example>\r\n", "RCPT TO:<nobody@test.example>\r\n",
	"Date: x\r\nMessage-ID: <m@x>\r\n", "\r\n\r\n", "\rx\r\n",
};

static void fz_nonce(void *ctx, struct buf *out)
{
	buf_puts(out, "SNONCE");
}

static void fz_no_secret(const void *p, size_t n)
{
	if (n == 0)
		return;
	for (size_t i = 0; i < sizeof(fz_secrets) / sizeof(fz_secrets[0]); i++)
		if (memmem(p, n, fz_secrets[i], strlen(fz_secrets[i])))
			abort();
}

struct fz_state {
	bool body_open;
	bool tls_pending;
	bool in_tls;
	bool closed;
	uint64_t body_bytes;
	bool auth_pending;     /* an AUTH_REQUEST waits for its answer */
	size_t auth_ok_given;  /* AUTH_OK answers to pending requests */
	size_t n_235;
	bool lookup_pending;
	enum smtp_lookup_kind lookup_kind;
	char *sender_asked;    /* the last sender lookup's address */
	char *req_user;        /* the user of the last AUTH_REQUEST */
	bool sender_ok;        /* ... and whether it was answered AUTH_OK */
};

static bool fz_is(const uint8_t *p, size_t n, const char *s)
{
	return s && strlen(s) == n && memcmp(p, s, n) == 0;
}

static void fz_check_output(const uint8_t *o, size_t n, struct fz_state *st)
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
		if (memcmp(o + i, "235 ", 4) == 0 && ++st->n_235 > st->auth_ok_given)
			abort();
		if (ll >= 10 && memcmp(o + i, "250-AUTH ", 9) == 0 && !st->in_tls)
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
	fz_check_output(o, n, st);
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
			if (p->check_sender && a->env->auth_user && a->env->sender[0] &&
			    (!st->sender_ok || !st->sender_asked ||
			     strcmp(st->sender_asked, a->env->sender) != 0))
				abort();
			st->body_open = false;
			break;
		case SMTP_ACT_LOG_REFUSED:
			if (!a->reply || a->reply_len < 4 || (a->reply[0] != '4' && a->reply[0] != '5'))
				abort();
			/* A refused AUTH logs "AUTH" and the mechanism name only.
			 * (Other lines are logged as sent: a client that types its
			 * password as a command has it logged as one.) */
			if (a->len >= 4 && str_has_prefix_nocase((const char *)a->data, a->len, "AUTH") &&
			    (a->len == 4 || a->data[4] == ' ')) {
				fz_no_secret(a->data, a->len);
				if (a->len > 4 && (a->data[4] != ' ' || a->len > 5 + 20 ||
						   memchr(a->data + 5, ' ', a->len - 5)))
					abort();
			}
			break;
		case SMTP_ACT_CLOSE:
			st->closed = true;
			break;
		case SMTP_ACT_AUTH_REQUEST:
			if (!a->sasl_req || !st->in_tls || st->auth_pending || st->lookup_pending ||
			    !p->auth_mechs)
				abort();
			st->auth_pending = true;
			free(st->req_user);
			st->req_user = a->sasl_req->user ? str_dup(a->sasl_req->user) : NULL;
			break;
		case SMTP_ACT_LOOKUP:
			if (!a->data || a->len == 0 || st->auth_pending || st->lookup_pending)
				abort();
			st->lookup_pending = true;
			st->lookup_kind = a->lookup;
			if (a->lookup == SMTP_LOOKUP_SENDER) {
				if (!a->user || !p->check_sender)
					abort();
				free(st->sender_asked);
				st->sender_asked = str_ndup(a->data, a->len);
				st->sender_ok = false;
			} else if (a->lookup != SMTP_LOOKUP_RCPT || !p->check_rcpt_local) {
				abort();
			}
			break;
		case SMTP_ACT_LOG_AUTH:
			/* The user logged is the identity the client gave (in the
			 * last request) or the auth process's canonical name: never
			 * the password or other data of the exchange. */
			if (!a->reply || a->reply_len == 0)
				abort();
			if (a->len && !fz_is(a->data, a->len, st->req_user) &&
			    !fz_is(a->data, a->len, "user") && !fz_is(a->data, a->len, "u2"))
				abort();
			break;
		case SMTP_ACT_ADD_HEADERS:
			if (!st->body_open || !p->add_missing_headers ||
			    p->role != SMTP_ROLE_SUBMISSION || a->add_headers == 0 ||
			    (a->add_headers & ~(unsigned)(SMTP_ADD_DATE | SMTP_ADD_MESSAGE_ID)))
				abort();
			break;
		default:
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
	if (size < 2)
		return 0;
	uint8_t f = data[0];
	uint8_t g = data[1];
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
		.auth_mechs = g & 7,
		.check_rcpt_local = (g & 8) != 0,
		.check_sender = (g & 16) != 0,
		.add_missing_headers = (g & 32) != 0,
		.hide_client_ip = (g & 64) != 0,
	};
	struct smtp_client c = { "F", "192.0.2.1", NULL, 25, (g & 128) ? NULL : fz_nonce, NULL, NULL };
	struct smtp_session *s = smtp_session_new(&p, &c);
	struct fz_state st = { 0 };
	size_t i = 2;
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
			size_t k = (size_t)(op / 10) * 3 + (size_t)(op % 10 - 3);
			const char *cmd = fz_cmds[k % (sizeof(fz_cmds) / sizeof(fz_cmds[0]))];
			smtp_session_feed(s, (const uint8_t *)cmd, strlen(cmd));
			break;
		}
		case 6:
			if (st.tls_pending || (!started && !st.in_tls && (op & 16))) {
				smtp_session_tls_started(s, "TLSv1.3", "TLS_AES_128_GCM_SHA256");
				if (!smtp_session_closing(s)) {
					/* Everything before TLS is forgotten, questions
					 * still open included. */
					st.tls_pending = false;
					st.in_tls = true;
					st.auth_pending = false;
					st.lookup_pending = false;
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
			if (op & 32) {
				/* The auth process answers (or, by mistake, answers
				 * nothing that was asked). */
				static const uint8_t salt[] = "saltsaltsaltsalt";
				static const uint8_t sig[32] = { 1 };
				enum auth_result r = (enum auth_result)((op >> 6) & 3);
				struct sasl_answer an = { .result = r, .user = (op & 16) ? "user" : "u2",
							  .salt = salt, .salt_len = 16, .iterations = 4096,
							  .server_signature = sig,
							  .server_signature_len = sizeof(sig) };
				/* An answer counts if the session was waiting for it
				 * (it may close while acting on it). */
				bool was = st.auth_pending && !smtp_session_closing(s);
				smtp_session_auth_answer(s, &an);
				if (was) {
					st.auth_pending = false;
					if (r == AUTH_OK)
						st.auth_ok_given++;
				}
			} else if (op & 64) {
				enum auth_result r = (op & 128) ? AUTH_OK : (op & 16) ? AUTH_FAIL
											: AUTH_TEMPFAIL;
				bool was = st.lookup_pending && !smtp_session_closing(s);
				smtp_session_lookup_answer(s, r);
				if (was) {
					st.lookup_pending = false;
					if (st.lookup_kind == SMTP_LOOKUP_SENDER)
						st.sender_ok = r == AUTH_OK;
				}
			} else {
				smtp_session_commit_result(s, (op & 16) ? SMTP_COMMIT_OK : SMTP_COMMIT_TEMPFAIL, "Q1");
			}
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
	free(st.sender_asked);
	free(st.req_user);
	return 0;
}
