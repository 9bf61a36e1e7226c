/*
 * Session state machine tests: transcripts of client bytes and events,
 * each fed whole and again one byte at a time, checked against the final
 * reply lines and the actions taken.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

/* The transcript tables leave trailing fields (unused steps, flags) zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* ---- driver ---------------------------------------------------------- */

enum ev { EV_END = 0, EV_FEED, EV_START, EV_TLS, EV_OK, EV_FAIL, EV_TIMEOUT, EV_EOF,
	  EV_SHUTDOWN, EV_AUTH, EV_LOOKUP };

struct step {
	enum ev ev;
	const char *data;  /* EV_AUTH: the canonical user of an AUTH_OK answer */
	size_t len;        /* EV_AUTH, EV_LOOKUP: the enum auth_result */
	const struct sasl_answer *ans; /* EV_AUTH: a whole answer (SCRAM) */
};

#define F(s) { EV_FEED, s, sizeof(s) - 1 }
#define E(e) { e, NULL, 0 }
#define OK(id) { EV_OK, id, 0 }
#define AUTH(r, u) { EV_AUTH, u, r }
#define ANS(a) { EV_AUTH, NULL, 0, a }
#define LOOKUP(r) { EV_LOOKUP, NULL, r }

enum pflags { P_TLS_REQ = 1, P_AUTH_REQ = 2, P_NO_TLS = 4, P_SUB = 8, P_AUTH = 16,
	      P_PLAIN = 32, P_CHK_RCPT = 64, P_CHK_SENDER = 128, P_ADD_HDRS = 256,
	      P_NO_NONCE = 512, P_TLS_CONNECT = 1024, P_NONMAIL3 = 2048 };

static const char *const local_domains[] = { "test.example", "local.example" };

static void make_policy(struct smtp_policy *p, unsigned flags)
{
	memset(p, 0, sizeof(*p));
	p->role = (flags & P_SUB) ? SMTP_ROLE_SUBMISSION : SMTP_ROLE_MX;
	p->hostname = "mx.test.example";
	p->tls_available = !(flags & P_NO_TLS);
	p->tls_required = flags & P_TLS_REQ;
	p->auth_required = flags & P_AUTH_REQ;
	p->local_domains = local_domains;
	p->n_local_domains = 2;
	p->line_max = 512;
	p->message_max = 10000;
	p->rcpt_max = 3;
	p->errors_max = 5;
	p->data_line_max = 998;
	p->header_max = 2000;
	if (flags & P_AUTH)
		p->auth_mechs = SASL_MECH_PLAIN | SASL_MECH_LOGIN | SASL_MECH_SCRAM_SHA_256;
	if (flags & P_PLAIN)
		p->auth_mechs = SASL_MECH_PLAIN;
	p->check_rcpt_local = flags & P_CHK_RCPT;
	p->check_sender = flags & P_CHK_SENDER;
	p->add_missing_headers = flags & P_ADD_HDRS;
	p->tls_on_connect = flags & P_TLS_CONNECT;
	p->nonmail_max = (flags & P_NONMAIL3) ? 3 : 0;
}

/* A fixed SCRAM server nonce, so that exchanges can be canned. */
static void test_nonce(void *ctx, struct buf *out)
{
	buf_puts(out, "SNONCE");
}

static const struct smtp_client client = { "S1", "192.0.2.1", NULL, 25, test_nonce, NULL, NULL };
static const struct smtp_client client_no_nonce = { "S1", "192.0.2.1", NULL, 25, NULL, NULL, NULL };
static bool use_no_nonce;

/* Nothing a client sends as a secret ever reaches a log action: the
 * password, its base64 forms, the PLAIN initial response. */
static void check_no_secret(const void *p, size_t n)
{
	static const char *const secrets[] = { "s3cr3t", "czNjcjN0", "AHVzZXIAczNj" };
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		assert_null(memmem(p, n, secrets[i], strlen(secrets[i])));
}

/* What a session did: every final reply line, the actions (body data
 * merged across feeds) and the refusal log. */
struct trace {
	struct buf out;   /* all output bytes */
	struct buf last;  /* final lines of replies, '\n' separated */
	struct buf acts;  /* "B|D:...|C|" */
	struct buf logs;  /* "cmd => reply\n" */
	bool in_data;
};

static void trace_init(struct trace *t)
{
	buf_init(&t->out, 1 << 26);
	buf_init(&t->last, 1 << 26);
	buf_init(&t->acts, 1 << 26);
	buf_init(&t->logs, 1 << 26);
	t->in_data = false;
}

static void trace_free(struct trace *t)
{
	buf_free(&t->out);
	buf_free(&t->last);
	buf_free(&t->acts);
	buf_free(&t->logs);
}

static void drain(struct smtp_session *s, struct trace *t)
{
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	buf_append(&t->out, o, n);
	/* Keep final reply lines only (code followed by a space). */
	size_t i = 0;
	while (i < n) {
		const uint8_t *e = memchr(o + i, '\n', n - i);
		assert_non_null(e);
		size_t ll = (size_t)(e - (o + i)) + 1;
		assert_true(ll >= 2 && o[i + ll - 2] == '\r');
		if (ll > 5 && o[i + 3] == ' ') {
			buf_append(&t->last, o + i, ll - 2);
			buf_append(&t->last, "\n", 1);
		}
		i += ll;
	}
	smtp_session_output_done(s, n);
	const struct smtp_action *a;
	bool waiting = false;
	while ((a = smtp_session_next_action(s)) != NULL) {
		if (a->type == SMTP_ACT_BODY_DATA) {
			if (!t->in_data)
				buf_puts(&t->acts, "D:");
			t->in_data = true;
			buf_append(&t->acts, a->data, a->len);
			continue;
		}
		if (t->in_data)
			buf_puts(&t->acts, "|");
		t->in_data = false;
		switch (a->type) {
		case SMTP_ACT_STARTTLS: buf_puts(&t->acts, "T|"); break;
		case SMTP_ACT_BODY_BEGIN:
			assert_non_null(a->env);
			assert_true(a->env->n_rcpts >= 1);
			assert_non_null(a->env->sender);
			buf_puts(&t->acts, "B|");
			break;
		case SMTP_ACT_BODY_ABORT: buf_puts(&t->acts, "A|"); break;
		case SMTP_ACT_COMMIT:
			assert_non_null(a->env);
			assert_true(a->env->n_rcpts >= 1);
			assert_non_null(a->env->sender);
			buf_puts(&t->acts, "C|");
			break;
		case SMTP_ACT_LOG_REFUSED:
			buf_puts(&t->acts, "L|");
			check_no_secret(a->data, a->len);
			check_no_secret(a->reply, a->reply_len);
			buf_append(&t->logs, a->data, a->len);
			buf_puts(&t->logs, " => ");
			buf_append(&t->logs, a->reply, a->reply_len);
			buf_puts(&t->logs, "\n");
			break;
		case SMTP_ACT_CLOSE: buf_puts(&t->acts, "X|"); break;
		case SMTP_ACT_AUTH_REQUEST: {
			const struct sasl_request *rq = a->sasl_req;
			assert_non_null(rq);
			assert_true(smtp_session_in_tls(s));
			buf_printf(&t->acts, "Q%c:%s|",
				   rq->kind == SASL_REQ_PLAIN ? 'p'
				   : rq->kind == SASL_REQ_SCRAM_LOOKUP ? 'l' : 'v',
				   rq->user ? rq->user : "");
			waiting = true;
			break;
		}
		case SMTP_ACT_LOOKUP:
			buf_printf(&t->acts, "K%c:", a->lookup == SMTP_LOOKUP_SENDER ? 's' : 'r');
			buf_append(&t->acts, a->data, a->len);
			if (a->lookup == SMTP_LOOKUP_SENDER) {
				assert_non_null(a->user);
				buf_printf(&t->acts, ":%s", a->user);
			}
			buf_puts(&t->acts, "|");
			waiting = true;
			break;
		case SMTP_ACT_LOG_AUTH:
			check_no_secret(a->data, a->len);
			buf_printf(&t->acts, "G%.*s:", (int)a->reply_len, a->reply);
			buf_append(&t->acts, a->data, a->len);
			buf_puts(&t->acts, "|");
			buf_puts(&t->logs, "auth ");
			buf_append(&t->logs, a->reply, a->reply_len);
			buf_puts(&t->logs, "\n");
			break;
		case SMTP_ACT_ADD_HEADERS:
			buf_printf(&t->acts, "H%u|", a->add_headers);
			break;
		default: fail_msg("unknown action"); break;
		}
	}
	/* A question to the auth process stops the reading until the answer. */
	if (waiting)
		assert_false(smtp_session_wants_input(s));
}

static void finish_trace(struct trace *t)
{
	if (t->in_data)
		buf_puts(&t->acts, "|");
	t->in_data = false;
	buf_cstr(&t->out);
	buf_cstr(&t->last);
	buf_cstr(&t->acts);
	buf_cstr(&t->logs);
}

static void run_steps(const struct smtp_policy *pol, const struct step *st, bool bytewise,
		      struct trace *t)
{
	struct smtp_session *s = smtp_session_new(pol, use_no_nonce ? &client_no_nonce : &client);
	trace_init(t);
	for (; st->ev != EV_END; st++) {
		switch (st->ev) {
		case EV_FEED:
			if (bytewise) {
				for (size_t i = 0; i < st->len; i++) {
					smtp_session_feed(s, (const uint8_t *)st->data + i, 1);
					drain(s, t);
				}
			} else {
				smtp_session_feed(s, (const uint8_t *)st->data, st->len);
			}
			break;
		case EV_START: smtp_session_start(s); break;
		case EV_TLS: smtp_session_tls_started(s, "TLSv1.3", "TLS_AES_256_GCM_SHA384"); break;
		case EV_OK: smtp_session_commit_result(s, SMTP_COMMIT_OK, st->data); break;
		case EV_FAIL: smtp_session_commit_result(s, SMTP_COMMIT_TEMPFAIL, NULL); break;
		case EV_TIMEOUT: smtp_session_timeout(s); break;
		case EV_EOF: smtp_session_eof(s); break;
		case EV_SHUTDOWN: smtp_session_shutdown(s); break;
		case EV_AUTH:
			if (st->ans) {
				smtp_session_auth_answer(s, st->ans);
			} else {
				struct sasl_answer an = { .result = (enum auth_result)st->len,
							  .user = st->data };
				smtp_session_auth_answer(s, &an);
			}
			break;
		case EV_LOOKUP: smtp_session_lookup_answer(s, (enum auth_result)st->len); break;
		default: break;
		}
		drain(s, t);
		/* The caller resumes a session that stopped on backed-up output. */
		for (int k = 0; k < 1000 && !smtp_session_closing(s); k++) {
			smtp_session_feed(s, NULL, 0);
			size_t before = buf_len(&t->out) + buf_len(&t->acts);
			drain(s, t);
			if (buf_len(&t->out) + buf_len(&t->acts) == before)
				break;
		}
	}
	finish_trace(t);
	smtp_session_free(s);
}

/* Each expected line is a prefix of the corresponding final reply line. */
static void check_lines(const char *name, const char *got, const char *want)
{
	const char *g = got, *w = want;
	for (;;) {
		const char *ge = strchr(g, '\n');
		const char *we = strchr(w, '\n');
		if (!we && *w)
			we = w + strlen(w);
		if (!ge || !we || !*w) {
			if (ge || (we && *w))
				fail_msg("%s: replies differ\n got:\n%s\n want:\n%s", name, got, want);
			return;
		}
		size_t wl = (size_t)(we - w);
		if ((size_t)(ge - g) < wl || memcmp(g, w, wl) != 0)
			fail_msg("%s: replies differ\n got:\n%s\n want:\n%s", name, got, want);
		g = ge + 1;
		w = *we ? we + 1 : we;
	}
}

/* Drops the body data tokens from an action string. */
static void strip_data(char *a)
{
	char *w = a;
	const char *r = a;
	while (*r) {
		if (r[0] == 'D' && r[1] == ':') {
			const char *e = strchr(r, '|');
			r = e ? e + 1 : r + strlen(r);
			continue;
		}
		*w++ = *r++;
	}
	*w = '\0';
}

struct tcase {
	const char *name;
	unsigned flags;
	struct step steps[14];
	const char *replies;  /* final reply lines (prefixes), '\n' separated; NULL: not checked */
	const char *actions;  /* exact; NULL: not checked */
	bool no_data;         /* compare actions without body data */
};

static void run_case(const struct tcase *c)
{
	struct smtp_policy pol;
	make_policy(&pol, c->flags);
	use_no_nonce = c->flags & P_NO_NONCE;
	struct trace whole, bytes;
	run_steps(&pol, c->steps, false, &whole);
	run_steps(&pol, c->steps, true, &bytes);
	char name[160];
	if (c->replies) {
		snprintf(name, sizeof(name), "%s (whole)", c->name);
		check_lines(name, (const char *)buf_ptr(&whole.last), c->replies);
		snprintf(name, sizeof(name), "%s (bytewise)", c->name);
		check_lines(name, (const char *)buf_ptr(&bytes.last), c->replies);
	}
	if (c->actions) {
		char *aw = (char *)whole.acts.data, *ab = (char *)bytes.acts.data;
		if (c->no_data) {
			strip_data(aw);
			strip_data(ab);
		}
		if (strcmp(aw, c->actions) != 0)
			fail_msg("%s (whole): actions\n got: %s\n want: %s", c->name, aw,
				 c->actions);
		if (strcmp(ab, c->actions) != 0)
			fail_msg("%s (bytewise): actions\n got: %s\n want: %s", c->name, ab,
				 c->actions);
	}
	/* Same output bytes however the input was split. */
	assert_int_equal(buf_len(&whole.out), buf_len(&bytes.out));
	assert_memory_equal(buf_ptr(&whole.out), buf_ptr(&bytes.out), buf_len(&whole.out));
	trace_free(&whole);
	trace_free(&bytes);
}

static void run_table(const struct tcase *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		run_case(&t[i]);
}

#define TABLE(t) run_table(t, sizeof(t) / sizeof(t[0]))

#define EHLO "EHLO c.example\r\n"
#define MAIL "MAIL FROM:<a@client.example>\r\n"
#define RCPT "RCPT TO:<u@test.example>\r\n"
#define TX EHLO MAIL RCPT
#define TXR "250 HELP\n250 2.1.0\n250 2.1.5\n"

/* ---- tables ---------------------------------------------------------- */

static void test_basic(void **state)
{
	static const struct tcase t[] = {
		{ "greeting", 0, { E(EV_START), F("QUIT\r\n") },
		  "220 mx.test.example ESMTP sluice\n221 2.0.0 mx.test.example closing", "X|" },
		{ "one message", 0,
		  { E(EV_START), F(TX "DATA\r\nSubject: hi\r\n\r\nbody\r\n..dot\r\n.\r\n"), OK("Q1"),
		    F("QUIT\r\n") },
		  "220 \n" TXR "354 End data with <CR><LF>.<CR><LF>\n250 2.0.0 OK queued as Q1\n221 ",
		  "B|D:Subject: hi\r\n\r\nbody\r\n.dot\r\n|C|X|" },
		{ "empty message", 0, { F(TX "DATA\r\n.\r\n"), OK("Q2") },
		  TXR "354 \n250 2.0.0 OK queued as Q2", "B|C|" },
		{ "dot lines", 0, { F(TX "DATA\r\n.\r\n"), OK("Q2") },
		  TXR "354 \n250 2.0.0 OK queued as Q2", "B|C|" },
		{ "leading dots only unstuffed at line start", 0,
		  { F(TX "DATA\r\na.b\r\n...\r\n. \r\n.\r\n"), OK("Q") },
		  TXR "354 \n250 2.0.0 OK", "B|D:a.b\r\n..\r\n \r\n|C|" },
		{ "pipelined commands wait for the commit", 0,
		  { F(TX "DATA\r\nx\r\n.\r\nMAIL FROM:<b@client.example>\r\nNOOP\r\n"), OK("Q3"),
		    F(RCPT "DATA\r\ny\r\n.\r\n"), OK("Q4") },
		  TXR "354 \n250 2.0.0 OK queued as Q3\n250 2.1.0\n250 2.0.0\n250 2.1.5\n354 \n"
		      "250 2.0.0 OK queued as Q4",
		  "B|D:x\r\n|C|B|D:y\r\n|C|" },
		{ "commit failure resets the transaction", 0,
		  { F(TX "DATA\r\nx\r\n.\r\n"), E(EV_FAIL), F(RCPT "NOOP\r\n") },
		  TXR "354 \n451 4.3.0 Local error in processing; try again later\n503 5.5.1\n250 ",
		  "B|D:x\r\n|C|L|" },
		{ "commit keeps EHLO", 0,
		  { F(TX "DATA\r\n.\r\n"), OK("Q"), F(MAIL) },
		  TXR "354 \n250 2.0.0 OK\n250 2.1.0", NULL },
		{ "RSET NOOP VRFY EXPN HELP unknown", 0,
		  { F("RSET\r\nRSET x\r\nNOOP hi\r\nVRFY root\r\nVRFY\r\nEXPN staff\r\nHELP\r\n"
		      "FOO bar\r\n") },
		  "250 2.0.0\n501 5.5.4\n250 2.0.0\n252 2.0.0 Cannot VRFY user\n501 5.5.4\n502 5.5.1\n"
		  "214 2.0.0\n500 5.5.1 Command unrecognized",
		  "L|L|L|L|" },
		{ "QUIT stops processing", 0, { F("QUIT\r\nNOOP\r\n") }, "221 2.0.0", "X|" },
		{ "AUTH not available", 0, { F(EHLO "AUTH PLAIN AGFiAGM=\r\n") },
		  "250 HELP\n502 5.5.1 AUTH not available", "L|" },
		{ "AUTH not available in TLS either", 0,
		  { E(EV_TLS), F(EHLO "AUTH PLAIN AGFiAGM=\r\n") },
		  "250 HELP\n502 5.5.1 AUTH not available", "L|" },
	};
	TABLE(t);
}

static void test_helo(void **state)
{
	static const struct tcase t[] = {
		{ "HELO", 0, { F("HELO c.example\r\n" MAIL) }, "250 mx.test.example\n250 2.1.0",
		  NULL },
		/* After HELO no extension was announced: parameters are refused. */
		{ "HELO then parameters", 0,
		  { F("HELO c.example\r\nMAIL FROM:<a@client.example> SIZE=10\r\n" MAIL
		      "RCPT TO:<u@test.example> NOTIFY=NEVER\r\n" RCPT) },
		  "250 mx.test.example\n555 5.5.4 MAIL parameters need EHLO\n250 2.1.0\n"
		  "555 5.5.4 RCPT parameters need EHLO\n250 2.1.5", NULL },
		{ "HELO literal", 0, { F("HELO [192.0.2.1]\r\nEHLO [IPv6:2001:db8::1]\r\n") },
		  "250 mx.test.example\n250 HELP", NULL },
		{ "HELO without argument", 0, { F("HELO\r\nEHLO\r\nEHLO   \r\n") },
		  "501 5.5.4\n501 5.5.4\n501 5.5.4", "L|L|L|" },
		{ "HELO bad argument", 0,
		  { F("HELO a b\r\nEHLO bad!name\r\nEHLO [1.2\r\nEHLO a\x01\r\nEHLO caf\xc3\xa9\r\n") },
		  "501 5.5.4\n501 5.5.4\n501 5.5.4\n501 5.5.4\n501 5.5.4", NULL },
		{ "HELO address literal outside the grammar", 0,
		  { F("EHLO [999.1.1.1]\r\nEHLO [1.2.3]\r\nHELO [IPv6:zz]\r\n"
		      "EHLO [IPv6:1::2::3]\r\n" MAIL) },
		  "501 5.5.4 Invalid domain name\n501 5.5.4\n501 5.5.4\n501 5.5.4\n"
		  "503 5.5.1 Send HELO/EHLO first",
		  "L|L|L|L|L|" },
		{ "HELO domain outside the grammar", 0,
		  { F("EHLO foo..bar\r\nEHLO -foo.example\r\n"
		      "EHLO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\r\n"
		      MAIL) },
		  "501 5.5.4 Invalid domain name\n501 5.5.4\n501 5.5.4\n"
		  "503 5.5.1 Send HELO/EHLO first",
		  "L|L|L|L|" },
		{ "HELO forms real clients send", 0,
		  { F("EHLO MyPC\r\nHELO localhost\r\nEHLO my_pc.corp.example.\r\n"
		      "EHLO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\r\n"
		      "EHLO [IPv6:::1]\r\n" MAIL) },
		  "250 HELP\n250 mx.test.example\n250 HELP\n250 HELP\n250 HELP\n250 2.1.0", "" },
		{ "MAIL before HELO", 0,
		  { F(MAIL RCPT "DATA\r\nBDAT 3 LAST\r\nabcNOOP\r\n") },
		  "503 5.5.1\n503 5.5.1\n503 5.5.1\n503 5.5.1\n250 2.0.0", "L|L|L|L|" },
		{ "EHLO resets the transaction", 0, { F(TX EHLO "RCPT TO:<u@test.example>\r\n") },
		  TXR "250 HELP\n503 5.5.1", NULL },
	};
	TABLE(t);
}

static void test_ehlo_reply(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	static const struct step st[] = { F(EHLO), E(EV_END) };
	struct trace t;
	run_steps(&pol, st, false, &t);
	assert_string_equal((const char *)buf_ptr(&t.out),
			    "250-mx.test.example Hello c.example\r\n"
			    "250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
			    "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n"
			    "250-STARTTLS\r\n250 HELP\r\n");
	trace_free(&t);
	make_policy(&pol, P_NO_TLS);
	run_steps(&pol, st, false, &t);
	assert_null(strstr((const char *)buf_ptr(&t.out), "STARTTLS"));
	trace_free(&t);
}

static void test_framing(void **state)
{
	static const struct tcase t[] = {
		{ "bare LF ends nothing", 0, { F("NOOP\nNOOP\r\n") },
		  "500 5.5.2 Syntax error: bare CR or LF in command\n250 2.0.0", "L|" },
		{ "bare CR in command", 0, { F("NO\rOP\r\nNOOP\r\r\n") },
		  "500 5.5.2 Syntax error: bare CR or LF\n500 5.5.2 Syntax error: bare CR or LF",
		  "L|L|" },
		{ "bare LF does not end MAIL", 0, { F(EHLO "MAIL FROM:<a@client.example>\n" RCPT) },
		  "250 HELP\n500 5.5.2\n503 5.5.1", NULL },
		{ "split reads", 0, { F("NO"), F("OP\r"), F("\nQU"), F("IT\r\n") },
		  "250 2.0.0\n221 2.0.0", "X|" },
	};
	TABLE(t);
}

static void test_line_too_long(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	for (int variant = 0; variant < 3; variant++) {
		/* line_max counts the CRLF: 512 is allowed, 513 is not. */
		size_t len = variant == 0 ? 512 : variant == 1 ? 513 : 5000;
		char *line = malloc(len + 16);
		memcpy(line, "NOOP ", 5);
		memset(line + 5, 'x', len - 7);
		memcpy(line + len - 2, "\r\nNOOP\r\n", 8);
		struct step st[] = { { EV_FEED, line, len + 6 }, E(EV_END) };
		for (int bw = 0; bw < 2; bw++) {
			struct trace t;
			run_steps(&pol, st, bw, &t);
			if (variant == 0)
				check_lines("512", (const char *)buf_ptr(&t.last), "250 \n250 ");
			else
				check_lines("long", (const char *)buf_ptr(&t.last),
					    "500 5.5.2 Line too long\n250 2.0.0");
			trace_free(&t);
		}
		free(line);
	}
}

static void test_errors_max(void **state)
{
	static const struct tcase t[] = {
		{ "too many errors", 0,
		  { F("A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\nF\r\nG\r\nNOOP\r\n") },
		  "500 \n500 \n500 \n500 \n500 \n250 \n421 4.7.0 mx.test.example Too many errors",
		  "L|L|L|L|L|L|X|" },
		{ "an accepted message starts the count again", 0,
		  { F("A\r\nB\r\nC\r\nD\r\n" TX "DATA\r\nx\r\n.\r\n"), OK("Q1"),
		    F("E\r\nF\r\nG\r\nH\r\nNOOP\r\n") },
		  "500 \n500 \n500 \n500 \n" TXR "354 \n250 2.0.0 OK queued as Q1\n"
		  "500 \n500 \n500 \n500 \n250 ", "L|L|L|L|B|D:x\r\n|C|L|L|L|L|" },
		{ "errors counted across kinds", 0,
		  { F("HELO\r\n" MAIL "VRFY\r\nEXPN x\r\nNOOP\n\r\nX\r\nNOOP\r\n") },
		  "501 \n503 \n501 \n502 \n500 \n421 4.7.0", "L|L|L|L|L|L|X|" },
	};
	TABLE(t);
}

static void test_nonmail_max(void **state)
{
	static const struct tcase t[] = {
		{ "the fourth command without mail ends the session", P_NONMAIL3,
		  { F("NOOP\r\nVRFY x\r\nNOOP\r\nNOOP\r\n") },
		  "250 \n252 \n250 \n421 4.7.0 mx.test.example Too many commands that send no mail",
		  "L|X|" },
		{ "EHLO, HELP and MAIL count; RCPT does not, RSET never ends it", P_NONMAIL3,
		  { F(EHLO "HELP\r\n" MAIL RCPT "RSET\r\nRSET\r\nRSET\r\nRSET\r\n" MAIL) },
		  "250 HELP\n214 \n250 2.1.0\n250 2.1.5\n250 2.0.0\n250 2.0.0\n250 2.0.0\n"
		  "250 2.0.0\n421 4.7.0", "L|X|" },
		{ "an accepted message starts the count again", P_NONMAIL3,
		  { F("NOOP\r\n" TX "DATA\r\nx\r\n.\r\n"), OK("Q1"),
		    F("RSET\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n") },
		  "250 \n" TXR "354 \n250 2.0.0 OK queued as Q1\n250 \n250 \n250 \n250 \n"
		  "421 4.7.0", "B|D:x\r\n|C|L|X|" },
		{ "no limit when 0", 0,
		  { F("NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nQUIT\r\n") },
		  "250 \n250 \n250 \n250 \n250 \n221 ", "X|" },
	};
	TABLE(t);
}

static void test_mail_params(void **state)
{
	static const struct tcase t[] = {
		{ "MAIL syntax", 0,
		  { F(EHLO "MAIL FROM: <a@client.example>\r\nRSET\r\nmail from:<>\r\nRSET\r\n"
			   "MAIL TO:<a@b>\r\nMAIL FROM:a@b\r\nMAIL FROM:<a@b>x\r\n"
			   "MAIL FROM:<a..b@c>\r\n") },
		  "250 HELP\n250 2.1.0\n250 \n250 2.1.0\n250 \n501 5.5.4\n501 5.1.7\n501 5.1.7\n"
		  "501 5.1.7",
		  NULL },
		{ "nested MAIL", 0, { F(EHLO MAIL MAIL) }, "250 HELP\n250 2.1.0\n503 5.5.1", NULL },
		{ "declared size", 0,
		  { F(EHLO "MAIL FROM:<a@b.example> SIZE=10001\r\n"
			   "MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n"
			   "MAIL FROM:<a@b.example> SIZE=x\r\nMAIL FROM:<a@b.example> SIZE\r\n"
			   "MAIL FROM:<a@b.example> SIZE=10000\r\n") },
		  "250 HELP\n552 5.3.4\n552 5.3.4\n501 5.5.4\n501 5.5.4\n250 2.1.0", NULL },
		{ "BODY", 0,
		  { F(EHLO "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"
			   "MAIL FROM:<a@b.example> BODY=9BIT\r\n"
			   "MAIL FROM:<a@b.example> BODY=8bitmime\r\nRSET\r\n"
			   "MAIL FROM:<a@b.example> BODY=7BIT\r\n") },
		  "250 HELP\n555 5.5.4\n555 5.5.4\n250 2.1.0\n250 \n250 2.1.0", NULL },
		{ "unknown and duplicate", 0,
		  { F(EHLO "MAIL FROM:<a@b.example> FOO=1\r\n"
			   "MAIL FROM:<a@b.example> SIZE=1 SIZE=2\r\n"
			   "MAIL FROM:<a@b.example> =x\r\n") },
		  "250 HELP\n555 5.5.4\n501 5.5.4\n501 5.5.4", NULL },
		{ "DSN and AUTH", 0,
		  { F(EHLO "MAIL FROM:<a@b.example> RET=HDRS ENVID=abc+2Bd AUTH=<>\r\nRSET\r\n"
			   "MAIL FROM:<a@b.example> RET=ALL\r\n"
			   "MAIL FROM:<a@b.example> ENVID=a+ZZ\r\n"
			   "MAIL FROM:<a@b.example> ENVID="
			   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			   "xxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
			   "MAIL FROM:<a@b.example> SMTPUTF8=yes\r\n") },
		  "250 HELP\n250 2.1.0\n250 \n501 5.5.4\n501 5.5.4\n501 5.5.4\n501 5.5.4", NULL },
		{ "UTF-8 sender", 0,
		  { F(EHLO "MAIL FROM:<j\xc3\xb6rg@b.example>\r\n"
			   "MAIL FROM:<j\xc3\xb6rg@b.example> SMTPUTF8\r\n"
			   "RCPT TO:<\xc3\xbc@test.example>\r\n") },
		  "250 HELP\n553 5.6.7\n250 2.1.0\n250 2.1.5", NULL },
		{ "UTF-8 recipient needs SMTPUTF8", 0,
		  { F(EHLO MAIL "RCPT TO:<\xc3\xbc@test.example>\r\n") },
		  "250 HELP\n250 2.1.0\n553 5.6.7", NULL },
		{ "auth required", P_AUTH_REQ, { F(EHLO MAIL) },
		  "250 HELP\n530 5.7.0 Authentication required", "L|" },
	};
	TABLE(t);
}

static void test_rcpt(void **state)
{
	static const struct tcase t[] = {
		{ "RCPT without MAIL", 0, { F(EHLO RCPT) }, "250 HELP\n503 5.5.1", NULL },
		{ "local domains and postmaster", 0,
		  { F(EHLO MAIL "RCPT TO:<u@TEST.example>\r\nRCPT TO:<postmaster>\r\n"
				"RCPT TO: <v@local.example.>\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5", NULL },
		{ "relaying denied", 0,
		  { F(EHLO MAIL "RCPT TO:<u@elsewhere.example>\r\nRCPT TO:<u@test.example.org>\r\n") },
		  "250 HELP\n250 2.1.0\n550 5.7.1 Relaying denied\n550 5.7.1 Relaying denied",
		  "L|L|" },
		{ "relay tricks", 0,
		  { F(EHLO MAIL "RCPT TO:<u%elsewhere.example@test.example>\r\n"
				"RCPT TO:<elsewhere.example!u@test.example>\r\n"
				"RCPT TO:<@test.example:u@elsewhere.example>\r\n"
				"RCPT TO:<@elsewhere.example:u@test.example>\r\n"
				"RCPT TO:<\"u@elsewhere.example\"@test.example>\r\n") },
		  "250 HELP\n250 2.1.0\n550 5.7.1\n550 5.7.1\n550 5.7.1\n550 5.7.1\n550 5.7.1",
		  NULL },
		{ "relay trick: domain literal", 0,
		  { F("EHLO c.example\r\n" MAIL "RCPT TO:<u@[192.0.2.7]>\r\n") },
		  "250 HELP\n250 2.1.0\n550 5.7.1", NULL },
		{ "submission without auth does not relay", P_SUB,
		  { F(EHLO MAIL "RCPT TO:<u@elsewhere.example>\r\n" RCPT) },
		  "250 HELP\n250 2.1.0\n550 5.7.1 Relaying denied\n250 2.1.5", NULL },
		{ "recipient syntax", 0,
		  { F(EHLO MAIL "RCPT TO:<>\r\nRCPT TO:<user>\r\nRCPT <u@test.example>\r\n"
				"RCPT TO:u@test.example\r\n") },
		  "250 HELP\n250 2.1.0\n501 5.1.3\n501 5.1.3\n501 5.5.4\n501 5.1.3", NULL },
		{ "too many recipients", 0,
		  { F(EHLO MAIL RCPT RCPT RCPT RCPT "DATA\r\n.\r\n"), OK("Q") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5\n"
		  "452 4.5.3 Too many recipients\n354 \n250 2.0.0",
		  "L|B|C|" },
		{ "DSN parameters", 0,
		  { F(EHLO MAIL "RCPT TO:<u@test.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x\r\n"
				"RCPT TO:<u@test.example> NOTIFY=NEVER\r\n"
				"RCPT TO:<u@test.example> NOTIFY=NEVER,SUCCESS\r\n"
				"RCPT TO:<u@test.example> NOTIFY=\r\n"
				"RCPT TO:<u@test.example> ORCPT=rfc822\r\n"
				"RCPT TO:<u@test.example> ORCPT=rfc822;a ORCPT=rfc822;b\r\n"
				"RCPT TO:<u@test.example> FOO\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n501 5.5.4\n501 5.5.4\n501 5.5.4\n"
		  "501 5.5.4\n555 5.5.4",
		  NULL },
		/* RFC 6533 3: the UTF-8 form of ORCPT, in a SMTPUTF8 transaction
		 * only; '+' and '=' still not (they are xtext's). */
		{ "ORCPT utf-8 form", 0,
		  { F(EHLO "MAIL FROM:<a@client.example> SMTPUTF8\r\n"
			   "RCPT TO:<u@test.example> ORCPT=utf-8;\xc3\xbc@test.example\r\n"
			   "RCPT TO:<u@test.example> ORCPT=UTF-8;j\\x{FC}rg@test.example\r\n"
			   "RCPT TO:<u@test.example> ORCPT=utf-8;a+b@test.example\r\n"
			   "RCPT TO:<u@test.example> ORCPT=rfc822;\xc3\xbc@test.example\r\n"
			   "RSET\r\n" MAIL
			   "RCPT TO:<u@test.example> ORCPT=utf-8;\xc3\xbc@test.example\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n501 5.5.4\n501 5.5.4\n250 2.0.0\n"
		  "250 2.1.0\n5", NULL },
	};
	TABLE(t);
}

static void test_data_cmd(void **state)
{
	static const struct tcase t[] = {
		{ "DATA without MAIL", 0, { F(EHLO "DATA\r\n") }, "250 HELP\n503 5.5.1", "L|" },
		{ "DATA without recipients", 0, { F(EHLO MAIL "DATA\r\n") },
		  "250 HELP\n250 2.1.0\n554 5.5.1 No valid recipients", "L|" },
		{ "DATA with argument", 0, { F(TX "DATA x\r\n") }, TXR "501 5.5.4", "L|" },
		{ "DATA after BDAT", 0, { F(TX "BDAT 2\r\nabDATA\r\n") },
		  TXR "250 2.0.0 2 octets received\n503 5.5.1", "B|D:ab|L|" },
	};
	TABLE(t);
}

/* A message carrying a smuggled transaction after a fake end. */
#define SMUGGLE(v)                                                                       \
	F(TX "DATA\r\nSubject: x\r\n\r\na" v "MAIL FROM:<evil@x.example>\r\n"             \
	     "RCPT TO:<u@test.example>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n")
#define SMUGGLED TXR "354 \n550 5.6.0 Message refused: bare CR or LF in message data\n250 2.0.0"

static void test_smuggling(void **state)
{
	static const struct tcase t[] = {
		{ "\\n.\\n", 0, { SMUGGLE("\n.\n") }, SMUGGLED, "B|A|L|", true },
		{ "\\n.\\r\\n", 0, { SMUGGLE("\n.\r\n") }, SMUGGLED, "B|A|L|", true },
		{ "\\r\\n.\\n", 0, { SMUGGLE("\r\n.\n") }, SMUGGLED, "B|A|L|", true },
		{ "\\r.\\r\\n", 0, { SMUGGLE("\r.\r\n") }, SMUGGLED, "B|A|L|", true },
		{ "\\r\\n.\\r", 0, { SMUGGLE("\r\n.\r") }, SMUGGLED, "B|A|L|", true },
		{ "\\r\\n.\\r\\r\\n", 0, { SMUGGLE("\r\n.\r\r\n") }, SMUGGLED, "B|A|L|", true },
		{ "\\n\\n", 0, { SMUGGLE("\n\n") }, SMUGGLED, "B|A|L|", true },
		{ "bare CR in a line", 0, { SMUGGLE("b\rc\r\n") }, SMUGGLED, "B|A|L|", true },
		{ "bare CR at the end", 0, { SMUGGLE("\r") }, SMUGGLED, "B|A|L|", true },
		{ "nothing committed", 0,
		  { F(TX "DATA\r\nx\ny\r\n.\r\n"), OK("Q") },
		  TXR "354 \n550 5.6.0", "B|A|L|", true },
		{ "split CRLF is fine", 0,
		  { F(TX "DATA\r\nab\r"), F("\n.\r"), F("\n"), OK("Q") },
		  TXR "354 \n250 2.0.0 OK queued as Q", "B|D:ab\r\n|C|" },
		{ "BDAT bare LF", 0, { F(TX "BDAT 4 LAST\r\na\nb\r") }, TXR "550 5.6.0", "B|A|L|",
		  true },
		{ "BDAT bare CR across chunks", 0,
		  { F(TX "BDAT 2\r\na\rBDAT 2 LAST\r\nb\n") },
		  TXR "250 2.0.0 2 octets\n550 5.6.0", "B|A|L|", true },
		{ "BDAT CRLF across chunks", 0,
		  { F(TX "BDAT 2\r\na\rBDAT 1 LAST\r\n\n"), OK("Q") },
		  TXR "250 2.0.0 2 octets\n250 2.0.0 OK queued as Q", "B|D:a\r\n|C|" },
		{ "BDAT trailing CR", 0, { F(TX "BDAT 2 LAST\r\na\r") }, TXR "550 5.6.0", "B|A|L|",
		  true },
	};
	TABLE(t);
}

static void test_bdat(void **state)
{
	static const struct tcase t[] = {
		{ "chunks", 0,
		  { F(TX "BDAT 5\r\nhelloBDAT 3 LAST\r\n\r\n."), OK("Q1"), F("NOOP\r\n") },
		  TXR "250 2.0.0 5 octets received\n250 2.0.0 OK queued as Q1\n250 2.0.0",
		  "B|D:hello\r\n.|C|" },
		{ "chunk data looks like commands", 0,
		  { F(TX "BDAT 17\r\nQUIT\r\n.\r\nRSET\r\n\r\nBDAT 0 LAST\r\n"), OK("Q") },
		  TXR "250 2.0.0 17 octets\n250 2.0.0 OK queued as Q",
		  "B|D:QUIT\r\n.\r\nRSET\r\n\r\n|C|" },
		{ "BDAT 0 LAST", 0, { F(TX "BDAT 0 LAST\r\n"), OK("Q") },
		  TXR "250 2.0.0 OK queued as Q", "B|C|" },
		/* A size followed by junk: its chunk is still skipped, never run
		 * as commands (the NOOP here is chunk data); no size at all: the
		 * chunk cannot be found, so the session ends. */
		{ "BDAT syntax: a size and junk", 0,
		  { F(TX "BDAT 6 FIRST\r\nNOOP\r\nBDAT 12 LASTX\r\nNOOP\r\nRSET\r\nNOOP\r\n") },
		  TXR "501 5.5.4 Syntax: BDAT\n501 5.5.4 Syntax: BDAT\n250 2.0.0", "L|L|" },
		{ "BDAT syntax: no size", 0,
		  { F(TX "BDAT x\r\nNOOP\r\n") },
		  TXR "421 4.7.0 mx.test.example BDAT without a valid size", "L|X|" },
		{ "BDAT syntax: no size at all", 0, { F(TX "BDAT\r\nNOOP\r\n") },
		  TXR "421 4.7.0", "L|X|" },
		{ "BDAT syntax: negative", 0, { F(TX "BDAT -1\r\nNOOP\r\n") }, TXR "421 4.7.0",
		  "L|X|" },
		{ "BDAT syntax: too big", 0,
		  { F(TX "BDAT 99999999999999999999999\r\nNOOP\r\n") }, TXR "421 4.7.0", "L|X|" },
		{ "BDAT syntax mid-message drops the message", 0,
		  { F(TX "BDAT 3\r\nabcBDAT 2 X\r\nxyBDAT 1 LAST\r\nz") },
		  TXR "250 2.0.0 3 octets received\n501 5.5.4\n503 5.5.1 Need MAIL command",
		  "B|D:abc|A|L|L|" },
		{ "BDAT refused still consumes", 0,
		  { F(EHLO "BDAT 6\r\nQUIT\r\nNOOP\r\n" MAIL "BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n") },
		  "250 HELP\n503 5.5.1\n250 2.0.0\n250 2.1.0\n554 5.5.1\n250 2.0.0", "L|L|" },
		{ "BDAT RSET aborts", 0, { F(TX "BDAT 1\r\nxRSET\r\n" RCPT) },
		  TXR "250 2.0.0 1 octets\n250 2.0.0\n503 5.5.1", "B|D:x|A|L|" },
		{ "BDAT after failed chunk", 0,
		  { F(TX "BDAT 2\r\n\nxBDAT 1 LAST\r\nx") },
		  TXR "550 5.6.0\n503 5.5.1", "B|A|L|L|" },
	};
	TABLE(t);
}

static void test_starttls(void **state)
{
	static const struct tcase t[] = {
		{ "injection discarded", 0,
		  { F(EHLO "STARTTLS\r\nRSET\r\n"), E(EV_TLS), F("NOOP\r\n") },
		  "250 HELP\n220 2.0.0 Ready to start TLS\n250 2.0.0", "T|" },
		{ "bytes before the handshake discarded", 0,
		  { F(EHLO "STARTTLS\r\n"), F("NOOP\r\n"), E(EV_TLS), F("QUIT\r\n") },
		  "250 HELP\n220 2.0.0\n221 ", "T|X|" },
		{ "state forgotten", 0,
		  { F(EHLO MAIL "STARTTLS\r\n"), E(EV_TLS), F(RCPT MAIL EHLO MAIL "STARTTLS\r\n") },
		  "250 HELP\n250 2.1.0\n220 2.0.0\n503 5.5.1\n503 5.5.1\n250 HELP\n250 2.1.0\n503 5.5.1",
		  "T|L|L|L|" },
		{ "argument", 0, { F("STARTTLS now\r\nNOOP\r\n") }, "501 5.5.4\n250 ", "L|" },
		{ "not available", P_NO_TLS, { F("STARTTLS\r\n") }, "454 4.7.0", "L|" },
		{ "TLS required", P_TLS_REQ,
		  { F(EHLO MAIL RCPT "DATA\r\nVRFY u\r\nNOOP\r\n") },
		  "250 HELP\n530 5.7.0\n530 5.7.0\n530 5.7.0\n530 5.7.0\n250 2.0.0", "L|L|L|L|" },
		{ "TLS required, more", P_TLS_REQ,
		  { F("EXPN l\r\nHELP\r\nAUTH PLAIN x\r\nBDAT 4 LAST\r\nabcdNOOP\r\nRSET\r\n"
		      "HELO c.example\r\nXYZ\r\n") },
		  "530 5.7.0\n530 5.7.0\n530 5.7.0\n530 5.7.0\n250 2.0.0\n250 2.0.0\n"
		  "250 mx.test.example\n530 5.7.0",
		  "L|L|L|L|L|" },
		{ "TLS required then TLS", P_TLS_REQ,
		  { F(EHLO "STARTTLS\r\n"), E(EV_TLS), F(TX "BDAT 1 LAST\r\nx"), OK("Q") },
		  "250 HELP\n220 2.0.0\n" TXR "250 2.0.0 OK queued as Q", "T|B|D:x|C|" },
		{ "TLS on connect", P_TLS_REQ,
		  { E(EV_TLS), E(EV_START), F(EHLO "STARTTLS\r\n" MAIL) },
		  "220 mx.test.example ESMTP\n250 HELP\n503 5.5.1\n250 2.1.0", "L|" },
	};
	TABLE(t);
}

static void test_end_events(void **state)
{
	static const struct tcase t[] = {
		{ "timeout", 0, { F(EHLO), E(EV_TIMEOUT), F("NOOP\r\n") },
		  "250 HELP\n421 4.4.2 mx.test.example Timeout", "X|" },
		{ "timeout in DATA", 0, { F(TX "DATA\r\nabc"), E(EV_TIMEOUT) },
		  TXR "354 \n421 4.4.2", "B|D:abc|A|X|" },
		{ "eof in DATA", 0, { F(TX "DATA\r\nabc"), E(EV_EOF) }, TXR "354 ", "B|D:abc|A|" },
		{ "eof in BDAT", 0, { F(TX "BDAT 1\r\nx"), E(EV_EOF) }, TXR "250 2.0.0 1 octets",
		  "B|D:x|A|" },
		{ "shutdown idle", 0, { F(EHLO MAIL), E(EV_SHUTDOWN) },
		  "250 HELP\n250 2.1.0\n421 4.3.2 mx.test.example Service shutting down", "X|" },
		{ "shutdown during DATA", 0,
		  { F(TX "DATA\r\nabc"), E(EV_SHUTDOWN), F("\r\n.\r\nNOOP\r\n"), OK("Q9") },
		  TXR "354 \n250 2.0.0 OK queued as Q9\n421 4.3.2", "B|D:abc\r\n|C|X|" },
		{ "shutdown during DATA, bad message", 0,
		  { F(TX "DATA\r\na\nb"), E(EV_SHUTDOWN), F("\r\n.\r\nNOOP\r\n") },
		  TXR "354 \n550 5.6.0\n421 4.3.2", "B|A|L|X|", true },
		{ "shutdown during commit", 0,
		  { F(TX "DATA\r\n.\r\n"), E(EV_SHUTDOWN), OK("Q") },
		  TXR "354 \n250 2.0.0 OK queued as Q\n421 4.3.2", "B|C|X|" },
		{ "shutdown between BDAT chunks", 0,
		  { F(TX "BDAT 1\r\nx"), E(EV_SHUTDOWN), F("BDAT 1 LAST\r\ny"), OK("Q") },
		  TXR "250 2.0.0 1 octets\n250 2.0.0 OK queued as Q\n421 4.3.2", "B|D:xy|C|X|" },
	};
	TABLE(t);
}

/* ---- generated inputs ------------------------------------------------ */

static char *gen_message(size_t hdr_lines, size_t body_lines, size_t line_len, size_t *n)
{
	size_t cap = 64 + (hdr_lines + body_lines + 2) * (line_len + 16) + sizeof(TX) + 16;
	char *m = malloc(cap);
	size_t k = 0;
	k += (size_t)snprintf(m + k, cap - k, "%sDATA\r\n", TX);
	for (size_t i = 0; i < hdr_lines; i++) {
		memcpy(m + k, "X-H: ", 5);
		memset(m + k + 5, 'h', 95);
		k += 100;
		memcpy(m + k, "\r\n", 2);
		k += 2;
	}
	memcpy(m + k, "\r\n", 2);
	k += 2;
	for (size_t i = 0; i < body_lines; i++) {
		memset(m + k, i % 2 ? '.' : 'b', line_len);
		k += line_len;
		memcpy(m + k, "\r\n", 2);
		k += 2;
	}
	memcpy(m + k, ".\r\nNOOP\r\n", 9);
	k += 9;
	*n = k;
	return m;
}

static void gen_case(size_t hdr, size_t body, size_t ll, const char *want_last,
		     const char *want_acts)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	size_t n;
	char *m = gen_message(hdr, body, ll, &n);
	struct step st[] = { { EV_FEED, m, n }, OK("QG"), E(EV_END) };
	for (int bw = 0; bw < 2; bw++) {
		struct trace t;
		run_steps(&pol, st, bw, &t);
		check_lines("generated", (const char *)buf_ptr(&t.last), want_last);
		char *a = (char *)t.acts.data;
		strip_data(a);
		assert_string_equal(a, want_acts);
		trace_free(&t);
	}
	free(m);
}

static void test_limits(void **state)
{
	/* 998-octet lines pass, 999 do not. */
	gen_case(2, 2, 998, TXR "354 \n250 2.0.0 OK queued as QG\n250 2.0.0", "B|C|");
	gen_case(2, 2, 999,
		 TXR "354 \n550 5.6.0 Message refused: line longer than 998 octets\n250 2.0.0",
		 "B|A|L|");
	/* Header block of 2000 bytes is allowed; more is not. */
	gen_case(19, 1, 100, TXR "354 \n250 2.0.0 OK queued as QG\n250 2.0.0", "B|C|");
	gen_case(20, 1, 100, TXR "354 \n552 5.3.4 Message header too large\n250 2.0.0",
		 "B|A|L|");
	/* Size counts unstuffed bytes: a 206-byte header, then lines of 102
	 * and (dot-stuffed) 101 bytes: 96 lines make 9950 bytes, 97 make 10052. */
	gen_case(2, 96, 100, TXR "354 \n250 2.0.0 OK queued as QG\n250 2.0.0", "B|C|");
	gen_case(2, 97, 100,
		 TXR "354 \n552 5.3.4 Message size exceeds fixed maximum message size\n250 2.0.0",
		 "B|A|L|");
}

/* The size abort comes as soon as the limit is crossed, and env.size
 * counts the unstuffed bytes. */
static void test_size_abort_early(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	const char *pre = TX "DATA\r\n";
	smtp_session_feed(s, (const uint8_t *)pre, strlen(pre));
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	smtp_session_output_done(s, n);
	char line[102];
	memset(line, '.', 100);
	memcpy(line + 100, "\r\n", 2);
	uint64_t total = 0;
	bool aborted = false;
	for (int i = 0; i < 200 && !aborted; i++) {
		smtp_session_feed(s, (const uint8_t *)line, sizeof(line));
		const struct smtp_action *a;
		while ((a = smtp_session_next_action(s)) != NULL) {
			if (a->type == SMTP_ACT_BODY_DATA) {
				assert_false(aborted);
				total += a->len;
			}
			if (a->type == SMTP_ACT_BODY_ABORT)
				aborted = true;
		}
		/* 99 bytes of each 100-dot line plus CRLF are message data. */
		assert_int_equal(smtp_session_envelope(s)->size, (uint64_t)(i + 1) * 101);
	}
	assert_true(aborted);
	assert_true(total <= pol.message_max);
	assert_true(smtp_session_envelope(s)->size > pol.message_max);
	assert_true(smtp_session_envelope(s)->size < pol.message_max + 102);
	smtp_session_output(s, &o, &n);
	assert_int_equal(n, 0); /* no reply until the real end */
	smtp_session_feed(s, (const uint8_t *)".\r\n", 3);
	smtp_session_output(s, &o, &n);
	assert_true(n > 4 && memcmp(o, "552 5.3.4", 9) == 0);
	const struct smtp_action *a;
	while ((a = smtp_session_next_action(s)) != NULL)
		assert_true(a->type != SMTP_ACT_COMMIT && a->type != SMTP_ACT_BODY_DATA);
	smtp_session_free(s);
}

static void test_log_refused(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	static const struct step st[] = {
		F("EHLO c.example\r\nAUTH PLAIN c2VjcmV0\r\nRCPT TO:<x@y>\r\n"), E(EV_END)
	};
	for (int bw = 0; bw < 2; bw++) {
		struct trace t;
		run_steps(&pol, st, bw, &t);
		assert_string_equal((const char *)buf_ptr(&t.logs),
				    "AUTH PLAIN => 502 5.5.1 AUTH not available\n"
				    "RCPT TO:<x@y> => 503 5.5.1 Need MAIL command\n");
		trace_free(&t);
	}
	/* An AUTH line too long to be parsed is logged as "AUTH <mech>" too
	 * (check_no_secret in drain also looks at every log action). */
	char *line = malloc(1200);
	memcpy(line, "AUTH PLAIN ", 11);
	for (size_t i = 11; i < 1198; i += 12)
		memcpy(line + i, "AHVzZXIAczNj", i + 12 <= 1198 ? 12 : 1198 - i);
	memcpy(line + 1198, "\r\n", 2);
	struct step st2[] = { { EV_FEED, line, 1200 }, F("NOOP\r\n"), E(EV_END) };
	make_policy(&pol, P_AUTH);
	for (int bw = 0; bw < 2; bw++) {
		struct trace t;
		run_steps(&pol, st2, bw, &t);
		assert_string_equal((const char *)buf_ptr(&t.logs),
				    "AUTH PLAIN => 500 5.5.2 Line too long\n");
		check_lines("long AUTH", (const char *)buf_ptr(&t.last), "500 5.5.2\n250 2.0.0");
		trace_free(&t);
	}
	free(line);
}

static void test_backpressure(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	size_t cmds = 2000;
	char *in = malloc(cmds * 6);
	for (size_t i = 0; i < cmds; i++)
		memcpy(in + i * 6, "HELP\r\n", 6);
	smtp_session_feed(s, (const uint8_t *)in, cmds * 6);
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	assert_true(n > 64 * 1024 && n < 64 * 1024 + 1024);
	assert_false(smtp_session_wants_input(s));
	size_t total = 0, lines = 0;
	for (int round = 0; round < 100; round++) {
		smtp_session_output(s, &o, &n);
		for (size_t i = 0; i < n; i++)
			lines += o[i] == '\n';
		total += n;
		smtp_session_output_done(s, n);
		if (n == 0)
			break;
		smtp_session_feed(s, NULL, 0);
	}
	assert_int_equal(lines, cmds);
	assert_true(total > 64 * 1024);
	assert_true(smtp_session_wants_input(s));
	free(in);
	smtp_session_free(s);
}

static void test_overfill(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	const char *pre = TX "DATA\r\n.\r\n";
	smtp_session_feed(s, (const uint8_t *)pre, strlen(pre));
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	smtp_session_output_done(s, n);
	/* Waiting for the commit: input piles up until the hard limit. */
	assert_false(smtp_session_wants_input(s));
	size_t big = pol.line_max + 256 * 1024 + 1;
	uint8_t *junk = calloc(1, big);
	smtp_session_feed(s, junk, big);
	assert_true(smtp_session_closing(s));
	smtp_session_output(s, &o, &n);
	assert_true(n > 4 && memcmp(o, "421 ", 4) == 0);
	free(junk);
	smtp_session_free(s);
}

/* Feeds in whole and returns the envelope of the last commit it led to
 * (the test fails if there is none); the actions are drained. */
static const struct smtp_envelope *feed_to_commit(struct smtp_session *s, const char *in)
{
	smtp_session_feed(s, (const uint8_t *)in, strlen(in));
	const struct smtp_action *a, *commit = NULL;
	while ((a = smtp_session_next_action(s)) != NULL)
		if (a->type == SMTP_ACT_COMMIT)
			commit = a;
	assert_non_null(commit);
	return commit->env;
}

static void test_envelope(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	const char *in = "EHLO c.example\r\nMAIL FROM:<@r.example:a@client.example> SIZE=10 "
			 "BODY=8BITMIME RET=FULL ENVID=e1\r\n"
			 "RCPT TO:<u@test.example> NOTIFY=FAILURE ORCPT=rfc822;u@test.example\r\n"
			 "RCPT TO:<Postmaster>\r\nDATA\r\nab\r\n.\r\n";
	const struct smtp_envelope *e = feed_to_commit(s, in);
	assert_string_equal(e->helo, "c.example");
	assert_true(e->esmtp);
	assert_string_equal(e->sender, "a@client.example");
	assert_int_equal(e->size_declared, 10);
	assert_int_equal(e->body, SMTP_BODY_8BITMIME);
	assert_int_equal(e->ret, SMTP_RET_FULL);
	assert_string_equal(e->envid, "e1");
	assert_int_equal(e->n_rcpts, 2);
	assert_string_equal(e->rcpts[0].addr, "u@test.example");
	assert_string_equal(e->rcpts[0].orcpt, "rfc822;u@test.example");
	assert_int_equal(e->rcpts[0].notify, SMTP_NOTIFY_FAILURE);
	assert_string_equal(e->rcpts[1].addr, "Postmaster");
	assert_null(e->rcpts[1].orcpt);
	assert_int_equal(e->size, 4);
	assert_true(smtp_session_in_transaction(s));
	smtp_session_commit_result(s, SMTP_COMMIT_OK, "Q");
	assert_false(smtp_session_in_transaction(s));
	assert_null(smtp_session_envelope(s)->sender);
	assert_int_equal(smtp_session_envelope(s)->n_rcpts, 0);
	smtp_session_free(s);
}

static void test_received(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	struct smtp_rcpt r = { "u@test.example", NULL, 0 };
	struct smtp_envelope env = { 0 };
	env.helo = "c.example";
	env.esmtp = true;
	env.rcpts = &r;
	env.n_rcpts = 1;
	struct smtp_client c = { "S", "192.0.2.1", "host.client.example", 25 };
	struct buf b;
	buf_init(&b, 4096);
	smtp_received_header(&b, &pol, &c, &env, "Q1", "Sun, 29 Nov 2026 04:37:40 +0000");
	assert_string_equal(buf_cstr(&b),
			    "Received: from c.example (host.client.example [192.0.2.1])\r\n"
			    "\tby mx.test.example (sluice) with ESMTP\r\n"
			    "\t(role=mx)\r\n"
			    "\tid Q1\r\n"
			    "\tfor <u@test.example>;\r\n"
			    "\tSun, 29 Nov 2026 04:37:40 +0000\r\n");
	static const struct {
		bool esmtp, tls, auth, utf8;
		const char *proto;
	} protos[] = {
		{ false, false, false, false, "with SMTP\r\n" },
		{ true, false, false, false, "with ESMTP\r\n" },
		{ true, true, false, false, "with ESMTPS\r\n" },
		{ true, false, true, false, "with ESMTPA\r\n" },
		{ true, true, true, false, "with ESMTPSA\r\n" },
		{ true, false, false, true, "with UTF8SMTP\r\n" },
		{ true, true, false, true, "with UTF8SMTPS\r\n" },
		{ true, false, true, true, "with UTF8SMTPA\r\n" },
		{ true, true, true, true, "with UTF8SMTPSA\r\n" },
	};
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		env.esmtp = protos[i].esmtp;
		env.tls_version = protos[i].tls ? "TLSv1.3" : NULL;
		env.tls_cipher = protos[i].tls ? "TLS_AES_128_GCM_SHA256" : NULL;
		env.auth_user = protos[i].auth ? "user" : NULL;
		env.smtputf8 = protos[i].utf8;
		buf_reset(&b);
		smtp_received_header(&b, &pol, &c, &env, "Q1", "D");
		const char *h = buf_cstr(&b);
		assert_non_null(strstr(h, protos[i].proto));
		if (protos[i].tls)
			assert_non_null(strstr(h, protos[i].auth
						       ? "(role=mx auth=user tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)"
						       : "(role=mx tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)"));
	}
	/* A local submission names its uid, but no SMTP AUTH was used: no "A"
	 * (RFC 3848). */
	{
		struct smtp_policy lp = pol;
		lp.role = SMTP_ROLE_LOCAL;
		env.esmtp = true;
		env.tls_version = NULL;
		env.tls_cipher = NULL;
		env.smtputf8 = false;
		env.auth_user = "uid:1000";
		buf_reset(&b);
		smtp_received_header(&b, &lp, &c, &env, "Q1", "D");
		assert_non_null(strstr(buf_cstr(&b), "with ESMTP\r\n"));
		assert_non_null(strstr(buf_cstr(&b), "auth=uid:1000"));
		/* No TCP connection, so no TCP-info ("[local]" is no literal). */
		struct smtp_client lc = { "S", "local", NULL, 0 };
		buf_reset(&b);
		smtp_received_header(&b, &lp, &lc, &env, "Q1", "D");
		assert_true(str_has_prefix_nocase(buf_cstr(&b), strlen(buf_cstr(&b)),
						  "Received: from c.example\r\n\tby "));
		assert_null(strstr(buf_cstr(&b), "[local]"));
		env.auth_user = NULL;
	}
	/* An IPv6 client: the literal carries its tag (RFC 5321 4.1.3). */
	{
		struct smtp_client c6 = { "S", "2001:db8::1", NULL, 25 };
		buf_reset(&b);
		smtp_received_header(&b, &pol, &c6, &env, "Q1", "D");
		assert_non_null(strstr(buf_cstr(&b), "Received: from c.example ([IPv6:2001:db8::1])"));
	}
	/* Two recipients: no "for"; a hostile rDNS name is left out. */
	struct smtp_rcpt r2[2] = { { "a@x", NULL, 0 }, { "b@x", NULL, 0 } };
	env.rcpts = r2;
	env.n_rcpts = 2;
	c.rdns = "evil\r\nX-Injected: 1";
	pol.role = SMTP_ROLE_SUBMISSION;
	buf_reset(&b);
	smtp_received_header(&b, &pol, &c, &env, "Q1", "D");
	const char *h = buf_cstr(&b);
	assert_null(strstr(h, "for <"));
	assert_null(strstr(h, "Injected"));
	assert_non_null(strstr(h, "from c.example ([192.0.2.1])"));
	assert_non_null(strstr(h, "role=submission"));
	buf_free(&b);
}

/* ---- authentication -------------------------------------------------- */

#define TLS_EHLO E(EV_TLS), F(EHLO)
#define PLAIN_IR "AUTH PLAIN AHVzZXIAczNjcjN0\r\n"   /* \0user\0s3cr3t */
#define AUTHED TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_OK, "user")

static void test_auth_ehlo(void **state)
{
	static const struct {
		unsigned flags;
		bool tls;
		const char *want; /* the AUTH line, or NULL for none */
	} t[] = {
		{ P_AUTH, false, NULL },
		{ P_AUTH, true, "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n" },
		{ P_PLAIN, true, "250-AUTH PLAIN\r\n" },
		{ P_AUTH | P_NO_NONCE, true, "250-AUTH PLAIN LOGIN\r\n" },
		{ 0, true, NULL },
		{ P_AUTH | P_TLS_REQ | P_SUB, false, NULL },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct smtp_policy pol;
		make_policy(&pol, t[i].flags);
		use_no_nonce = t[i].flags & P_NO_NONCE;
		struct step st[] = { E(EV_TLS), E(EV_START), F(EHLO), E(EV_END) };
		if (!t[i].tls)
			st[0].ev = EV_START;
		for (int bw = 0; bw < 2; bw++) {
			struct trace tr;
			run_steps(&pol, st, bw, &tr);
			const char *out = (const char *)buf_ptr(&tr.out);
			const char *a = strstr(out, "250-AUTH");
			if (t[i].want) {
				assert_non_null(a);
				assert_memory_equal(a, t[i].want, strlen(t[i].want));
				assert_null(strstr(out, "STARTTLS"));
			} else {
				assert_null(a);
			}
			trace_free(&tr);
		}
	}
	use_no_nonce = false;
}

static void test_auth_refused(void **state)
{
	static const struct tcase t[] = {
		{ "outside TLS", P_AUTH, { F(EHLO PLAIN_IR "NOOP\r\n") },
		  "250 HELP\n538 5.7.11 Encryption required for requested authentication mechanism\n"
		  "250 2.0.0",
		  "L|" },
		{ "TLS required first", P_AUTH | P_TLS_REQ, { F(EHLO PLAIN_IR) },
		  "250 HELP\n530 5.7.0 Must issue a STARTTLS command first", "L|" },
		{ "before EHLO", P_AUTH, { E(EV_TLS), F(PLAIN_IR "HELO c.example\r\n" PLAIN_IR) },
		  "503 5.5.1 Send EHLO first\n250 mx.test.example\n503 5.5.1 Send EHLO first",
		  "L|L|" },
		{ "unknown mechanism", P_AUTH,
		  { TLS_EHLO, F("AUTH CRAM-MD5\r\nAUTH X!Y\r\nAUTH\r\nauth plain AHVzZXIAczNjcjN0 x\r\n") },
		  "250 HELP\n504 5.5.4 Unrecognized authentication mechanism\n"
		  "504 5.5.4\n501 5.5.4 Syntax\n501 5.5.2 Invalid authentication data",
		  "L|L|L|Gsyntax:|L|" },
		{ "mechanism not offered", P_PLAIN, { TLS_EHLO, F("AUTH LOGIN\r\nAUTH SCRAM-SHA-256\r\n") },
		  "250 HELP\n504 5.5.4\n504 5.5.4", "L|L|" },
		{ "SCRAM without a nonce source", P_AUTH | P_NO_NONCE,
		  { TLS_EHLO, F("AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9Y25vbmNlMTIz\r\n") },
		  "250 HELP\n504 5.5.4", "L|" },
		{ "during a transaction", P_AUTH, { TLS_EHLO, F(MAIL PLAIN_IR) },
		  "250 HELP\n250 2.1.0\n503 5.5.1 AUTH not permitted during a mail transaction",
		  "L|" },
		{ "already authenticated", P_AUTH, { AUTHED, F(PLAIN_IR) },
		  "250 HELP\n235 2.7.0\n503 5.5.1 Already authenticated", "Qp:user|Gok:user|L|" },
		{ "AUTH lines refused unparsed log no credentials", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN AHVzZXIAczNjcjN0\nNOOP\r\nauth login czNjcjN0\rx\r\n") },
		  "250 HELP\n500 5.5.2 Syntax error\n250 2.0.0\n500 5.5.2 Syntax error", "L|L|" },
		{ "malformed initial response", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN !!!!\r\nAUTH PLAIN AHVzZXIA\r\n") },
		  "250 HELP\n501 5.5.2 Invalid authentication data\n501 5.5.2",
		  "Gsyntax:|L|Gsyntax:|L|" },
		{ "AUTH failures count as errors", P_AUTH,
		  { TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_FAIL, NULL), F(PLAIN_IR), AUTH(AUTH_FAIL, NULL),
		    F(PLAIN_IR), AUTH(AUTH_FAIL, NULL), F("AUTH PLAIN\r\n*\r\nAUTH FOO\r\n"),
		    F(PLAIN_IR), AUTH(AUTH_FAIL, NULL), F("NOOP\r\n") },
		  "250 HELP\n535 \n535 \n535 \n334 \n501 5.0.0\n504 \n421 4.7.0 mx.test.example Too many",
		  "Qp:user|Gfailed:user|L|Qp:user|Gfailed:user|L|Qp:user|Gfailed:user|L|"
		  "Gcancelled:|L|L|Qp:user|Gfailed:user|L|X|" },
	};
	TABLE(t);
}

static void test_auth_plain_login(void **state)
{
	static const struct tcase t[] = {
		{ "PLAIN with initial response", P_AUTH,
		  { AUTHED, F("MAIL FROM:<user@test.example>\r\nRCPT TO:<x@elsewhere.example>\r\n") },
		  "250 HELP\n235 2.7.0 Authentication successful\n250 2.1.0\n250 2.1.5",
		  "Qp:user|Gok:user|" },
		{ "PLAIN with an empty challenge", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN\r\n"), F("dXNlcgB1c2VyAHMzY3IzdA==\r\n"),
		    AUTH(AUTH_OK, "User") },
		  "250 HELP\n334 \n235 2.7.0", "Qp:user|Gok:User|" },
		{ "PLAIN: no proxy authorization", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN YXV0aHoAdXNlcgBzM2NyM3Q=\r\n") },
		  "250 HELP\n535 5.7.8", "Gfailed:|L|" },
		{ "PLAIN empty initial response", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN =\r\n") },
		  "250 HELP\n501 5.5.2", "Gsyntax:|L|" },
		{ "LOGIN", P_AUTH,
		  { TLS_EHLO, F("AUTH LOGIN\r\n"), F("dXNlcg==\r\n"), F("czNjcjN0\r\n"),
		    AUTH(AUTH_OK, "user"), F("NOOP\r\n") },
		  "250 HELP\n334 VXNlcm5hbWU6\n334 UGFzc3dvcmQ6\n235 2.7.0\n250 2.0.0",
		  "Qp:user|Gok:user|" },
		{ "response lines are not commands", P_AUTH,
		  { TLS_EHLO, F("AUTH LOGIN\r\ndXNlcg==\r\nRSET\r\n"), AUTH(AUTH_FAIL, NULL),
		    F("NOOP\r\n") },
		  "250 HELP\n334 VXNlcm5hbWU6\n334 UGFzc3dvcmQ6\n535 5.7.8 Authentication credentials "
		  "invalid\n250 2.0.0",
		  NULL },
		{ "cancel", P_AUTH, { TLS_EHLO, F("AUTH LOGIN\r\n*\r\nNOOP\r\n") },
		  "250 HELP\n334 \n501 5.0.0 Authentication cancelled\n250 2.0.0",
		  "Gcancelled:|L|" },
		{ "bare LF in a response", P_AUTH, { TLS_EHLO, F("AUTH LOGIN\r\ndXNlcg==\nNOOP\r\n") },
		  "250 HELP\n334 \n501 5.5.2\n250 2.0.0", "Gsyntax:|L|" },
		{ "pipelined commands wait for the answer", P_AUTH,
		  { TLS_EHLO, F(PLAIN_IR "MAIL FROM:<user@test.example>\r\nNOOP\r\n"),
		    AUTH(AUTH_OK, "user") },
		  "250 HELP\n235 2.7.0\n250 2.1.0\n250 2.0.0", "Qp:user|Gok:user|" },
		{ "timeout while asking", P_AUTH,
		  { TLS_EHLO, F(PLAIN_IR), E(EV_TIMEOUT), AUTH(AUTH_OK, "user") },
		  "250 HELP\n421 4.4.2", "Qp:user|X|" },
		{ "shutdown while asking", P_AUTH,
		  { TLS_EHLO, F(PLAIN_IR), E(EV_SHUTDOWN), AUTH(AUTH_OK, "user") },
		  "250 HELP\n421 4.3.2", "Qp:user|X|" },
		{ "shutdown inside the exchange", P_AUTH,
		  { TLS_EHLO, F("AUTH LOGIN\r\n"), E(EV_SHUTDOWN), F("dXNlcg==\r\n") },
		  "250 HELP\n334 \n421 4.3.2", "X|" },
		{ "answer without a question is ignored", P_AUTH,
		  { TLS_EHLO, AUTH(AUTH_OK, "user"), F(MAIL "RCPT TO:<x@elsewhere.example>\r\n") },
		  "250 HELP\n250 2.1.0\n550 5.7.1 Relaying denied", "L|" },
		{ "auth required satisfied", P_AUTH | P_AUTH_REQ | P_SUB,
		  { TLS_EHLO, F(MAIL), F(PLAIN_IR), AUTH(AUTH_OK, "user"), F(MAIL) },
		  "250 HELP\n530 5.7.0 Authentication required\n235 \n250 2.1.0",
		  "L|Qp:user|Gok:user|" },
	};
	TABLE(t);
}

static void test_auth_outcomes(void **state)
{
	static const struct tcase t[] = {
		{ "failed", P_AUTH, { TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_FAIL, NULL), F(MAIL) },
		  "250 HELP\n535 5.7.8\n250 2.1.0", "Qp:user|Gfailed:user|L|" },
		{ "tempfail", P_AUTH, { TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_TEMPFAIL, NULL) },
		  "250 HELP\n454 4.7.0 Temporary authentication failure",
		  "Qp:user|Gtempfail:user|L|" },
		{ "blocked", P_AUTH, { TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_BLOCKED, NULL) },
		  "250 HELP\n454 4.7.0 Too many authentication failures; try again later",
		  "Qp:user|Gblocked:user|L|" },
		{ "retry after failure", P_AUTH,
		  { TLS_EHLO, F(PLAIN_IR), AUTH(AUTH_FAIL, NULL), F(PLAIN_IR), AUTH(AUTH_OK, "user") },
		  "250 HELP\n535 \n235 ", "Qp:user|Gfailed:user|L|Qp:user|Gok:user|" },
		{ "response line too long", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN\r\n"),
		    F("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\nNOOP\r\n") },
		  "250 HELP\n334 \n500 5.5.6 Authentication exchange line is too long\n250 2.0.0",
		  "Gsyntax:|L|" },
	};
	TABLE(t);
}

/* SCRAM-SHA-256 with canned answers of the auth process. */
static const uint8_t scram_salt[] = "saltsaltsaltsalt";
static const uint8_t scram_sig[32] = { 1, 2, 3 };
static const struct sasl_answer scram_lookup = {
	.result = AUTH_OK, .user = "user", .salt = scram_salt, .salt_len = 16,
	.iterations = 4096,
};
static const struct sasl_answer scram_ans_verify = {
	.result = AUTH_OK, .user = "user", .server_signature = scram_sig,
	.server_signature_len = 32,
};
static const struct sasl_answer scram_bad = { .result = AUTH_FAIL };

#define SCRAM_FIRST "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9Y25vbmNlMTIz\r\n"
#define SCRAM_FINAL                                                                      \
	"Yz1iaXdzLHI9Y25vbmNlMTIzU05PTkNFLHA9QUFFQ0F3UUZCZ2NJQ1FvTERBME9EeEFSRWhNVUZSWVhHQmth" \
	"R3h3ZEhoOD0=\r\n"

static void test_auth_scram(void **state)
{
	static const struct tcase t[] = {
		{ "SCRAM-SHA-256", P_AUTH,
		  { TLS_EHLO, F(SCRAM_FIRST), ANS(&scram_lookup), F(SCRAM_FINAL), ANS(&scram_ans_verify),
		    F("\r\n"), F("NOOP\r\n") },
		  "250 HELP\n334 \n334 \n235 2.7.0\n250 2.0.0",
		  "Ql:user|Qv:user|Gok:user|" },
		{ "SCRAM wrong proof", P_AUTH,
		  { TLS_EHLO, F(SCRAM_FIRST), ANS(&scram_lookup), F(SCRAM_FINAL), ANS(&scram_bad) },
		  "250 HELP\n334 \n535 5.7.8", "Ql:user|Qv:user|Gfailed:user|L|" },
		{ "SCRAM unknown user", P_AUTH,
		  { TLS_EHLO, F(SCRAM_FIRST), ANS(&scram_bad) },
		  "250 HELP\n535 5.7.8", "Ql:user|Gfailed:user|L|" },
	};
	TABLE(t);
	/* The server-first message carries the client's and our nonce. */
	struct smtp_policy pol;
	make_policy(&pol, P_AUTH);
	static const struct step st[] = { TLS_EHLO, F(SCRAM_FIRST), ANS(&scram_lookup), E(EV_END) };
	struct trace tr;
	run_steps(&pol, st, false, &tr);
	const char *o = strstr((const char *)buf_ptr(&tr.out), "334 ");
	assert_non_null(o);
	const char *e = strstr(o, "\r\n");
	struct buf d;
	buf_init(&d, 4096);
	assert_int_equal(b64_decode(o + 4, (size_t)(e - o - 4), &d), 0);
	assert_non_null(strstr(buf_cstr(&d), "r=cnonce123SNONCE,"));
	assert_non_null(strstr(buf_cstr(&d), ",i=4096"));
	buf_free(&d);
	trace_free(&tr);
}

/* The envelope carries the user across transactions. */
static void test_auth_envelope(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, P_AUTH | P_SUB);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	smtp_session_tls_started(s, "TLSv1.3", "X");
	const char *in = EHLO PLAIN_IR;
	smtp_session_feed(s, (const uint8_t *)in, strlen(in));
	const struct smtp_action *a;
	const struct sasl_request *rq = NULL;
	while ((a = smtp_session_next_action(s)) != NULL)
		if (a->type == SMTP_ACT_AUTH_REQUEST)
			rq = a->sasl_req;
	assert_non_null(rq);
	assert_string_equal(rq->user, "user");
	assert_int_equal(rq->password_len, 6);
	assert_memory_equal(rq->password, "s3cr3t", 6);
	assert_null(smtp_session_envelope(s)->auth_user);
	struct sasl_answer an = { .result = AUTH_OK, .user = "canon" };
	smtp_session_auth_answer(s, &an);
	assert_string_equal(smtp_session_envelope(s)->auth_user, "canon");
	for (int i = 0; i < 2; i++) {
		const char *tx = "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\n"
				 "DATA\r\nDate: x\r\n\r\n.\r\n";
		assert_string_equal(feed_to_commit(s, tx)->auth_user, "canon");
		smtp_session_commit_result(s, SMTP_COMMIT_OK, "Q");
	}
	smtp_session_free(s);
}

static void test_lookup_sender(void **state)
{
	static const struct tcase t[] = {
		{ "sender owned", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F("MAIL FROM:<me@test.example>\r\n" RCPT), LOOKUP(AUTH_OK) },
		  "250 HELP\n235 \n250 2.1.0 Sender OK\n250 2.1.5",
		  "Qp:user|Gok:user|Ks:me@test.example:user|" },
		{ "sender not owned", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F("MAIL FROM:<boss@test.example>\r\n" RCPT "DATA\r\n"),
		    LOOKUP(AUTH_FAIL) },
		  "250 HELP\n235 \n553 5.7.1 Sender address not owned by authenticated user <user>\n"
		  "503 5.5.1 Need MAIL\n503 5.5.1 Need MAIL",
		  "Qp:user|Gok:user|Ks:boss@test.example:user|L|L|L|" },
		{ "sender lookup tempfail", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F("MAIL FROM:<me@test.example>\r\n"), LOOKUP(AUTH_TEMPFAIL), F(RCPT) },
		  "250 HELP\n235 \n451 4.3.0 Temporary lookup failure\n503 5.5.1",
		  "Qp:user|Gok:user|Ks:me@test.example:user|L|L|" },
		{ "null sender is not looked up", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F("MAIL FROM:<>\r\n") }, "250 HELP\n235 \n250 2.1.0",
		  "Qp:user|Gok:user|" },
		{ "not authenticated: no lookup", P_CHK_SENDER, { F(EHLO MAIL) },
		  "250 HELP\n250 2.1.0", "" },
		{ "lookup off", P_AUTH, { AUTHED, F(MAIL) }, "250 HELP\n235 \n250 2.1.0",
		  "Qp:user|Gok:user|" },
		{ "timeout while asking", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F(MAIL), E(EV_TIMEOUT), LOOKUP(AUTH_OK) }, "250 HELP\n235 \n421 4.4.2",
		  "Qp:user|Gok:user|Ks:a@client.example:user|X|" },
	};
	TABLE(t);
}

static void test_lookup_rcpt(void **state)
{
	static const struct tcase t[] = {
		{ "known local user", P_CHK_RCPT, { F(EHLO MAIL RCPT), LOOKUP(AUTH_OK), F("DATA\r\n.\r\n"),
		    OK("Q") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n354 \n250 2.0.0", "Kr:u@test.example|B|C|" },
		{ "unknown local user", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<nobody@test.example>\r\nDATA\r\n"), LOOKUP(AUTH_FAIL) },
		  "250 HELP\n250 2.1.0\n550 5.1.1 <nobody@test.example>: Recipient address rejected: "
		  "User unknown\n554 5.5.1 No valid recipients",
		  "Kr:nobody@test.example|L|L|" },
		{ "lookup tempfail", P_CHK_RCPT, { F(EHLO MAIL RCPT), LOOKUP(AUTH_TEMPFAIL) },
		  "250 HELP\n250 2.1.0\n451 4.3.0 Temporary lookup failure", "Kr:u@test.example|L|" },
		{ "postmaster and remote domains are not looked up", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<postmaster>\r\nRCPT TO:<u@elsewhere.example>\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n550 5.7.1 Relaying denied", "L|" },
		{ "authenticated: local checked, remote relayed", P_AUTH | P_CHK_RCPT,
		  { AUTHED, F(MAIL "RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<nobody@local.example>\r\n"),
		    LOOKUP(AUTH_FAIL), F("RCPT TO:<u%v@elsewhere.example>\r\nRCPT TO:<u@[192.0.2.9]>\r\n") },
		  "250 HELP\n235 \n250 2.1.0\n250 2.1.5\n550 5.1.1\n250 2.1.5\n250 2.1.5",
		  "Qp:user|Gok:user|Kr:nobody@local.example|L|" },
		{ "authenticated, check off: no lookup", P_AUTH,
		  { AUTHED, F(MAIL "RCPT TO:<nobody@local.example>\r\nRCPT TO:<bare>\r\n") },
		  "250 HELP\n235 \n250 2.1.0\n250 2.1.5\n501 5.1.3", "Qp:user|Gok:user|L|" },
		{ "DSN parameters kept through the lookup", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<u@test.example> NOTIFY=NEVER ORCPT=rfc822;u@test.example\r\n"),
		    LOOKUP(AUTH_OK) },
		  "250 HELP\n250 2.1.0\n250 2.1.5", "Kr:u@test.example|" },
	};
	TABLE(t);
	/* The recipient added after the answer carries its parameters. */
	struct smtp_policy pol;
	make_policy(&pol, P_CHK_RCPT);
	struct smtp_session *s = smtp_session_new(&pol, &client);
	const char *in = EHLO MAIL "RCPT TO:<u@test.example> NOTIFY=NEVER ORCPT=rfc822;x\r\n";
	smtp_session_feed(s, (const uint8_t *)in, strlen(in));
	assert_false(smtp_session_wants_input(s));
	assert_int_equal(smtp_session_envelope(s)->n_rcpts, 0);
	smtp_session_lookup_answer(s, AUTH_OK);
	assert_true(smtp_session_wants_input(s));
	const struct smtp_envelope *e = smtp_session_envelope(s);
	assert_int_equal(e->n_rcpts, 1);
	assert_string_equal(e->rcpts[0].addr, "u@test.example");
	assert_string_equal(e->rcpts[0].orcpt, "rfc822;x");
	assert_int_equal(e->rcpts[0].notify, SMTP_NOTIFY_NEVER);
	smtp_session_free(s);
}

/* ---- one canonical form per address ---------------------------------- */

static void test_canonical(void **state)
{
	static const struct tcase t[] = {
		{ "trailing dot and quotes are looked up canonical", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<\"alice\"@test.example.>\r\n"), LOOKUP(AUTH_OK),
		    F("RCPT TO:<b\\ob@local.example.>\r\n"), LOOKUP(AUTH_OK),
		    F("RCPT TO:<\"b\\ob\"@local.example.>\r\n"), LOOKUP(AUTH_OK) },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n501 5.1.3\n250 2.1.5",
		  "Kr:alice@test.example|L|Kr:bob@local.example|" },
		{ "the refusal names the canonical address", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<\"nobody\"@test.example.>\r\n"), LOOKUP(AUTH_FAIL) },
		  "250 HELP\n250 2.1.0\n550 5.1.1 <nobody@test.example>: Recipient address "
		  "rejected",
		  "Kr:nobody@test.example|L|" },
		{ "quoted local part that must stay quoted", P_CHK_RCPT,
		  { F(EHLO MAIL "RCPT TO:<\"a\\ b\"@test.example.>\r\n"), LOOKUP(AUTH_OK) },
		  "250 HELP\n250 2.1.0\n250 2.1.5", "Kr:\"a b\"@test.example|" },
		{ "authenticated sender looked up canonical", P_AUTH | P_CHK_SENDER,
		  { AUTHED, F("MAIL FROM:<\"user\"@test.example.>\r\n"), LOOKUP(AUTH_OK) },
		  "250 HELP\n235 \n250 2.1.0", "Qp:user|Gok:user|Ks:user@test.example:user|" },
	};
	TABLE(t);

	struct smtp_policy pol;
	make_policy(&pol, 0);
	pol.rcpt_max = 10;
	struct smtp_session *s = smtp_session_new(&pol, &client);
	const char *in = "EHLO c.example\r\nMAIL FROM:<\"a\"@Client.Example.>\r\n"
			 "RCPT TO:<bob@test.example.>\r\n"
			 "RCPT TO:<\"bob\"@test.example>\r\n"
			 "RCPT TO:<\"B\\ob\"@TEST.example.>\r\n"
			 "RCPT TO:<\"first.last\"@local.example>\r\n"
			 "RCPT TO:<\"a..b\"@local.example>\r\n"
			 "RCPT TO:<\"a\\ b\"@local.example>\r\n"
			 "RCPT TO:<@r.example:u@test.example.>\r\n"
			 "RCPT TO:<\"u%v\"@test.example>\r\n"
			 "DATA\r\nab\r\n.\r\n";
	const struct smtp_envelope *e = feed_to_commit(s, in);
	assert_string_equal(e->sender, "a@Client.Example");
	static const char *const want[] = {
		"bob@test.example", "bob@test.example", "Bob@TEST.example",
		"first.last@local.example", "\"a..b\"@local.example", "\"a b\"@local.example",
	};
	/* The route and the '%' form are refused for an unauthenticated client. */
	assert_int_equal(e->n_rcpts, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < e->n_rcpts; i++)
		assert_string_equal(e->rcpts[i].addr, want[i]);
	smtp_session_free(s);
}

/* RFC 5321 §4.5.3.1.10: recipients past the limit get 452 and are no error. */
static void test_rcpt_overshoot(void **state)
{
	/* rcpt_max 3, errors_max 5: three 452s are free, then they count. */
#define R4 RCPT RCPT RCPT RCPT
#define R452 "452 4.5.3 Too many recipients\n"
	static const struct tcase t[] = {
		{ "452s beyond errors_max, then the message", 0,
		  { F(EHLO MAIL RCPT RCPT RCPT R4 R4 "DATA\r\n.\r\n"), OK("Q") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5\n" R452 R452 R452 R452 R452
		  R452 R452 R452 "354 \n250 2.0.0 OK queued as Q",
		  "L|L|L|L|L|L|L|L|B|C|" },
		{ "an endless stream of RCPTs is still bounded", 0,
		  { F(EHLO MAIL RCPT RCPT RCPT R4 R4 RCPT "NOOP\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5\n" R452 R452 R452 R452 R452
		  R452 R452 R452 "421 4.7.0 mx.test.example Too many errors",
		  "L|L|L|L|L|L|L|L|L|X|" },
		/* The first transaction spends one error; the second gets its
		 * three free 452s again. */
		{ "a new transaction starts a new allowance", 0,
		  { F(EHLO MAIL RCPT RCPT RCPT R4 "RSET\r\n" MAIL RCPT RCPT RCPT R4 R4 "NOOP\r\n") },
		  "250 HELP\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5\n" R452 R452 R452 R452
		  "250 2.0.0\n250 2.1.0\n250 2.1.5\n250 2.1.5\n250 2.1.5\n" R452 R452 R452 R452
		  R452 R452 R452 "421 4.7.0",
		  NULL },
	};
#undef R4
#undef R452
	TABLE(t);
}

/* A first line of white space would continue our Received: field. */
#define FOLDED TXR "354 \n550 5.6.0 Message refused: first line begins with white space"

static void test_first_line_folded(void **state)
{
	static const struct tcase t[] = {
		{ "tab", 0, { F(TX "DATA\r\n\tby forged.example\r\nSubject: x\r\n\r\nb\r\n.\r\n"
				"NOOP\r\n"), OK("Q") },
		  FOLDED "\n250 2.0.0", "B|A|L|" },
		{ "space", 0, { F(TX "DATA\r\n x\r\n.\r\n"), OK("Q") }, FOLDED, "B|A|L|" },
		{ "space after a stuffed dot", 0, { F(TX "DATA\r\n. x\r\n.\r\n"), OK("Q") },
		  FOLDED, "B|A|L|" },
		{ "continuation of a real field is fine", 0,
		  { F(TX "DATA\r\nSubject: a\r\n b\r\n\r\n c\r\n.\r\n"), OK("Q") },
		  TXR "354 \n250 2.0.0 OK queued as Q", "B|D:Subject: a\r\n b\r\n\r\n c\r\n|C|" },
		{ "empty header block, then white space", 0,
		  { F(TX "DATA\r\n\r\n x\r\n.\r\n"), OK("Q") },
		  TXR "354 \n250 2.0.0 OK queued as Q", "B|D:\r\n x\r\n|C|" },
		{ "BDAT first byte", 0, { F(TX "BDAT 4 LAST\r\n\tx\r\nNOOP\r\n"), OK("Q") },
		  TXR "550 5.6.0 Message refused: first line begins with white space\n250 2.0.0",
		  "B|A|L|" },
		{ "BDAT first byte after an empty chunk", 0,
		  { F(TX "BDAT 0\r\nBDAT 3 LAST\r\n x\n"), OK("Q") },
		  TXR "250 2.0.0 0 octets\n550 5.6.0 Message refused: first line begins", "B|A|L|" },
		{ "BDAT white space in a later chunk is fine", 0,
		  { F(TX "BDAT 2\r\nA:BDAT 6 LAST\r\n b\r\n\r\n"), OK("Q") },
		  TXR "250 2.0.0 2 octets\n250 2.0.0 OK queued as Q", "B|D:A: b\r\n\r\n|C|" },
	};
	TABLE(t);
}

#define SUB_TX E(EV_TLS), F(EHLO PLAIN_IR), AUTH(AUTH_OK, "user"), F(MAIL RCPT)
#define SUB_A "Qp:user|Gok:user|"
#define P_SUBH (P_SUB | P_AUTH | P_ADD_HDRS)

static void test_add_headers(void **state)
{
	static const struct tcase t[] = {
		{ "both missing", P_SUBH,
		  { SUB_TX, F("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"), OK("Q") },
		  "250 HELP\n235 \n250 2.1.0\n250 2.1.5\n354 \n250 2.0.0",
		  SUB_A "B|D:Subject: x\r\n|H3|D:\r\nbody\r\n|C|" },
		{ "Date present, any case", P_SUBH,
		  { SUB_TX, F("DATA\r\nDATE: x\r\nSubject: y\r\n z\r\n\r\nb\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:DATE: x\r\nSubject: y\r\n z\r\n|H2|D:\r\nb\r\n|C|" },
		{ "both present", P_SUBH,
		  { SUB_TX, F("DATA\r\nMessage-Id : <a@b>\r\ndate:x\r\n\r\nb\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Message-Id : <a@b>\r\ndate:x\r\n\r\nb\r\n|C|" },
		{ "names must start the line and end with a colon", P_SUBH,
		  { SUB_TX, F("DATA\r\nX-Date: x\r\nSubject: y\r\n Date: z\r\nDates: q\r\nDate\r\n"
			      "\r\nDate: body\r\n.\r\n"), OK("Q") },
		  NULL,
		  SUB_A "B|D:X-Date: x\r\nSubject: y\r\n Date: z\r\nDates: q\r\n|H3|"
			"D:\r\nDate\r\n\r\nDate: body\r\n|C|" },
		/* RFC 5322 2.1: a line that is no field ends the header section;
		 * the fields go before it, with the empty line after them. */
		{ "no header section", P_SUBH,
		  { SUB_TX, F("DATA\r\nhello\r\nsecond line\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|H3|D:\r\nhello\r\nsecond line\r\n|C|" },
		{ "a field name in the body text is not a field", P_SUBH,
		  { SUB_TX, F("DATA\r\nhello\r\nDate: fake\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|H3|D:\r\nhello\r\nDate: fake\r\n|C|" },
		{ "no empty line after the fields", P_SUBH,
		  { SUB_TX, F("DATA\r\nSubject: x\r\nDate: y\r\nHi there.\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Subject: x\r\nDate: y\r\n|H2|D:\r\nHi there.\r\n|C|" },
		{ "nothing to add: the text is left as it is", P_SUBH,
		  { SUB_TX, F("DATA\r\nDate: y\r\nMessage-ID: <a@b>\r\nHi there.\r\n.\r\n"),
		    OK("Q") },
		  NULL, SUB_A "B|D:Date: y\r\nMessage-ID: <a@b>\r\nHi there.\r\n|C|" },
		{ "obsolete white space before the colon", P_SUBH,
		  { SUB_TX, F("DATA\r\nSubject : x\r\n\r\nb\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Subject : x\r\n|H3|D:\r\nb\r\n|C|" },
		{ "a line cut by the chunk counts as a field", P_SUBH,
		  { SUB_TX, F("BDAT 5\r\nhello"), F("BDAT 10 LAST\r\n world\r\n\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:hello world\r\n|H3|D:\r\n|C|" },
		{ "dot-stuffed field name", P_SUBH,
		  { SUB_TX, F("DATA\r\n.Date: x\r\n\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Date: x\r\n|H2|D:\r\n|C|" },
		{ "no empty line", P_SUBH, { SUB_TX, F("DATA\r\nDate: x\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Date: x\r\n|H2|C|" },
		{ "empty header block", P_SUBH, { SUB_TX, F("DATA\r\n\r\nhi\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|H3|D:\r\nhi\r\n|C|" },
		{ "empty message", P_SUBH, { SUB_TX, F("DATA\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|H3|C|" },
		{ "BDAT split at the empty line", P_SUBH,
		  { SUB_TX, F("BDAT 11\r\nSubject: x\r"), F("BDAT 7 LAST\r\n\n\r\nbody"), OK("Q") },
		  NULL, SUB_A "B|D:Subject: x\r\n|H3|D:\r\nbody|C|" },
		{ "BDAT ending inside a header line", P_SUBH,
		  { SUB_TX, F("BDAT 10 LAST\r\nSubject: x"), OK("Q") },
		  NULL, SUB_A "B|D:Subject: x|C|" },
		{ "BDAT ending at a line end", P_SUBH,
		  { SUB_TX, F("BDAT 12 LAST\r\nSubject: x\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Subject: x\r\n|H3|C|" },
		{ "bare CR at the start of a header line", P_SUBH,
		  { SUB_TX, F("DATA\r\nA: b\r\n\rX: y\r\n\r\n.\r\n"), F("NOOP\r\n") },
		  NULL, SUB_A "B|D:A: b\r\n|A|L|" },
		{ "MX: never", P_ADD_HDRS, { F(TX "DATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"), OK("Q") },
		  NULL, "B|D:Subject: x\r\n\r\nb\r\n|C|" },
		{ "submission with the option off", P_SUB | P_AUTH,
		  { SUB_TX, F("DATA\r\nSubject: x\r\n\r\nb\r\n.\r\n"), OK("Q") },
		  NULL, SUB_A "B|D:Subject: x\r\n\r\nb\r\n|C|" },
		{ "each message on its own", P_SUBH,
		  { SUB_TX, F("DATA\r\nDate: x\r\n\r\n.\r\n"), OK("Q"),
		    F(MAIL RCPT "DATA\r\nMessage-ID: <m@x>\r\n\r\n.\r\n"), OK("Q2") },
		  NULL, SUB_A "B|D:Date: x\r\n|H2|D:\r\n|C|B|D:Message-ID: <m@x>\r\n|H1|D:\r\n|C|" },
	};
	TABLE(t);
}

static void test_received_auth(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, P_SUB);
	struct smtp_rcpt r = { "u@test.example", NULL, 0 };
	struct smtp_envelope env = { 0 };
	env.helo = "c.example";
	env.esmtp = true;
	env.rcpts = &r;
	env.n_rcpts = 1;
	env.tls_version = "TLSv1.3";
	env.tls_cipher = "C";
	env.auth_user = "alice@test.example";
	struct smtp_client c = { "S", "192.0.2.1", "host.client.example", 587, NULL, NULL, NULL };
	struct buf b;
	buf_init(&b, 4096);
	smtp_received_header(&b, &pol, &c, &env, "Q1", "D");
	assert_string_equal(buf_cstr(&b),
			    "Received: from c.example (host.client.example [192.0.2.1])\r\n"
			    "\tby mx.test.example (sluice) with ESMTPSA\r\n"
			    "\t(role=submission auth=alice@test.example tls=TLSv1.3 cipher=C)\r\n"
			    "\tid Q1\r\n\tfor <u@test.example>;\r\n\tD\r\n");
	/* Hidden client address; a user name that could break the comment. */
	static const char *const bad_users[] = { "a(b", "a)b", "a\\b", "a b", "a\r\nX: y",
						 "\xc3\xa9" };
	pol.hide_client_ip = true;
	for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
		env.auth_user = bad_users[i];
		buf_reset(&b);
		smtp_received_header(&b, &pol, &c, &env, "Q1", "D");
		const char *h = buf_cstr(&b);
		assert_true(strncmp(h, "Received: from c.example\r\n\tby ", 30) == 0);
		assert_null(strstr(h, "192.0.2.1"));
		assert_null(strstr(h, "auth="));
		assert_non_null(strstr(h, "with ESMTPSA"));
		assert_non_null(strstr(h, "(role=submission tls=TLSv1.3 cipher=C)"));
	}
	/* Only submission hides the address. */
	pol.role = SMTP_ROLE_MX;
	buf_reset(&b);
	smtp_received_header(&b, &pol, &c, &env, "Q1", "D");
	assert_non_null(strstr(buf_cstr(&b), "[192.0.2.1]"));
	buf_free(&b);
}

/* ---- AUTH lines in the refusal log ------------------------------------ */

struct logcase {
	const char *name;
	unsigned flags;
	struct step steps[8];
	const char *logs;     /* the refusal log, exact */
	const char *replies;  /* final reply lines (prefixes) */
};

/* Runs each case whole and byte by byte: the log must be exactly the one
 * given, and (checked in drain and here) hold no form of the secret. */
static void run_logcases(const struct logcase *lc, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct smtp_policy pol;
		make_policy(&pol, lc[i].flags);
		for (int bw = 0; bw < 2; bw++) {
			struct trace t;
			run_steps(&pol, lc[i].steps, bw, &t);
			check_no_secret(buf_ptr(&t.logs), buf_len(&t.logs));
			check_no_secret(buf_ptr(&t.acts), buf_len(&t.acts));
			if (strcmp((const char *)buf_ptr(&t.logs), lc[i].logs) != 0)
				fail_msg("%s (%s): log\n got:\n%s\n want:\n%s", lc[i].name,
					 bw ? "bytewise" : "whole", (const char *)buf_ptr(&t.logs),
					 lc[i].logs);
			char name[160];
			snprintf(name, sizeof(name), "%s (%s)", lc[i].name, bw ? "bytewise" : "whole");
			if (lc[i].replies)
				check_lines(name, (const char *)buf_ptr(&t.last), lc[i].replies);
			trace_free(&t);
		}
	}
}

static void test_auth_log_spellings(void **state)
{
	static const struct logcase t[] = {
		{ "TAB after AUTH (MX)", 0,
		  { F(EHLO "AUTH\tPLAIN AHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\n", "250 HELP\n500 5.5.1" },
		{ "TAB after AUTH before STARTTLS (submission)", P_SUB | P_AUTH | P_TLS_REQ | P_AUTH_REQ,
		  { F(EHLO "AUTH\tPLAIN AHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 530 5.7.0 Must issue a STARTTLS command first\n", "250 HELP\n530 5.7.0" },
		{ "TAB after AUTH inside TLS", P_SUB | P_AUTH,
		  { TLS_EHLO, F("AUTH\tPLAIN AHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\n", "250 HELP\n500 5.5.1" },
		{ "lower case and TAB", 0,
		  { F("auth\tplain AHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\n", "500 5.5.1" },
		{ "mixed case with a space keeps the mechanism", 0,
		  { F(EHLO "aUtH pLaIn AHVzZXIAczNjcjN0\r\n") },
		  "AUTH PLAIN => 502 5.5.1 AUTH not available\n", "250 HELP\n502 5.5.1" },
		{ "verb that starts with AUTH", 0,
		  { F("AUTHX AHVzZXIAczNjcjN0\r\nauthplain s3cr3t\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\nAUTH => 500 5.5.1 Command unrecognized\n",
		  "500 5.5.1\n500 5.5.1" },
		{ "other bytes after AUTH", 0,
		  { F("AUTH\x01PLAIN AHVzZXIAczNjcjN0\r\nAUTH\x0bPLAIN AHVzZXIAczNjcjN0\r\n"
		      "AUTH\xc2\xa0PLAIN AHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\nAUTH => 500 5.5.1 Command unrecognized\n"
		  "AUTH => 500 5.5.1 Command unrecognized\n", NULL },
		{ "white space before AUTH", 0,
		  { F(" AUTH PLAIN AHVzZXIAczNjcjN0\r\n\tAuth LOGIN czNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\nAUTH => 500 5.5.1 Command unrecognized\n",
		  NULL },
		{ "TAB form with a bare CR", 0,
		  { F("AUTH\tPLAIN AHVzZXIAczNjcjN0\rx\r\n") },
		  "AUTH => 500 5.5.2 Syntax error: bare CR or LF in command\n", "500 5.5.2" },
		{ "mechanism that is not a token is not logged", P_AUTH,
		  { TLS_EHLO, F("AUTH PLAIN\tAHVzZXIAczNjcjN0\r\n") },
		  "AUTH => 504 5.5.4 Unrecognized authentication mechanism\n", "250 HELP\n504 5.5.4" },
		{ "a refused AUTH LOGIN: the responses after it are not logged",
		  P_SUB | P_AUTH | P_TLS_REQ,
		  { F(EHLO "AUTH LOGIN\r\ndXNlcg==\r\nczNjcjN0\r\nNOOP\r\nXYZZY\r\n") },
		  "AUTH LOGIN => 530 5.7.0 Must issue a STARTTLS command first\n"
		  "(line after AUTH, not logged) => 530 5.7.0 Must issue a STARTTLS command first\n"
		  "(line after AUTH, not logged) => 530 5.7.0 Must issue a STARTTLS command first\n"
		  "XYZZY => 530 5.7.0 Must issue a STARTTLS command first\n",
		  "250 HELP\n530 \n530 \n530 \n250 2.0.0\n530 " },
		{ "responses after a refused TAB form", 0,
		  { F("AUTH\tLOGIN\r\ndXNlcg==\r\nczNjcjN0\r\n") },
		  "AUTH => 500 5.5.1 Command unrecognized\n"
		  "(line after AUTH, not logged) => 500 5.5.1 Command unrecognized\n"
		  "(line after AUTH, not logged) => 500 5.5.1 Command unrecognized\n", NULL },
		{ "a failed exchange: a response sent after it is not logged", P_AUTH,
		  { TLS_EHLO, F("AUTH LOGIN\r\ndXNlcg==\r\n*\r\nczNjcjN0\r\n") },
		  "auth cancelled\nAUTH LOGIN => 501 5.0.0 Authentication cancelled\n"
		  "(line after AUTH, not logged) => 500 5.5.1 Command unrecognized\n",
		  "250 HELP\n334 \n334 \n501 5.0.0\n500 5.5.1" },
		{ "cut off after too many errors", 0,
		  { F("A\r\nB\r\nC\r\nD\r\nE\r\nAUTH\tPLAIN AHVzZXIAczNjcjN0\r\nczNjcjN0\r\n") },
		  "A => 500 5.5.1 Command unrecognized\nB => 500 5.5.1 Command unrecognized\n"
		  "C => 500 5.5.1 Command unrecognized\nD => 500 5.5.1 Command unrecognized\n"
		  "E => 500 5.5.1 Command unrecognized\nAUTH => 421 4.7.0 mx.test.example Too many "
		  "errors\n",
		  NULL },
	};
	run_logcases(t, sizeof(t) / sizeof(t[0]));
}

/* Over-long lines: a TAB-form AUTH, and an over-long SASL response inside
 * an exchange and the response sent after it. */
static void test_auth_log_long(void **state)
{
	char *line = malloc(1200);
	memcpy(line, "AUTH\tPLAIN ", 11);
	for (size_t i = 11; i < 1198; i += 16)
		memcpy(line + i, "AHVzZXIAczNjcjN0", i + 16 <= 1198 ? 16 : 1198 - i);
	memcpy(line + 1198, "\r\n", 2);
	char *resp = malloc(1200);
	for (size_t i = 0; i < 1198; i += 8)
		memcpy(resp + i, "czNjcjN0", i + 8 <= 1198 ? 8 : 1198 - i);
	memcpy(resp + 1198, "\r\n", 2);
	struct logcase t[] = {
		{ "long TAB form", 0,
		  { { EV_FEED, line, 1200 }, F("NOOP\r\n") },
		  "AUTH => 500 5.5.2 Line too long\n", "500 5.5.2\n250 2.0.0" },
		{ "long TAB form without its end", 0,
		  { { EV_FEED, line, 1100 } },
		  "AUTH => 500 5.5.2 Line too long\n", "500 5.5.2" },
		{ "long response in an exchange, then a response", P_AUTH,
		  { TLS_EHLO, F("AUTH LOGIN\r\ndXNlcg==\r\n"), { EV_FEED, resp, 1200 },
		    F("czNjcjN0\r\nNOOP\r\n") },
		  "auth syntax\nAUTH LOGIN => 500 5.5.6 Authentication exchange line is too long\n"
		  "(line after AUTH, not logged) => 500 5.5.1 Command unrecognized\n",
		  "250 HELP\n334 \n334 \n500 5.5.6\n500 5.5.1\n250 2.0.0" },
	};
	run_logcases(t, sizeof(t) / sizeof(t[0]));
	free(line);
	free(resp);
}

/* ---- commit failures and SIZE against free space ---------------------- */

static uint64_t fake_free;
static unsigned space_asked;

static bool fake_space_ok(void *ctx, uint64_t size)
{
	space_asked++;
	return size <= fake_free;
}

static void test_commit_reasons(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	static const struct {
		enum smtp_commit_result r;
		const char *want;
	} t[] = {
		{ SMTP_COMMIT_OK, "250 2.0.0 OK queued as Q1" },
		{ SMTP_COMMIT_TEMPFAIL, "451 4.3.0 Local error in processing" },
		{ SMTP_COMMIT_NOSPACE, "452 4.3.1 Insufficient system storage" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct smtp_session *s = smtp_session_new(&pol, &client);
		struct trace tr;
		trace_init(&tr);
		static const char in[] = TX "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
		smtp_session_feed(s, (const uint8_t *)in, sizeof(in) - 1);
		drain(s, &tr);
		smtp_session_commit_result(s, t[i].r, "Q1");
		drain(s, &tr);
		/* The session goes on: the next transaction is accepted. */
		smtp_session_feed(s, (const uint8_t *)MAIL, sizeof(MAIL) - 1);
		drain(s, &tr);
		finish_trace(&tr);
		char want[256];
		snprintf(want, sizeof(want), TXR "354 \n%s\n250 2.1.0", t[i].want);
		check_lines("commit reason", (const char *)buf_ptr(&tr.last), want);
		trace_free(&tr);
		smtp_session_free(s);
	}
	/* The table's EV_FAIL (TEMPFAIL) still answers 451. */
	static const struct tcase c[] = {
		{ "commit TEMPFAIL", 0,
		  { F(TX "DATA\r\nx\r\n.\r\n"), E(EV_FAIL) },
		  TXR "354 \n451 4.3.0", NULL },
	};
	TABLE(c);
}

static void test_size_free_space(void **state)
{
	struct smtp_policy pol;
	make_policy(&pol, 0);
	static const struct {
		const char *mail;
		uint64_t free;
		unsigned asked;
		const char *want;
	} t[] = {
		{ "MAIL FROM:<a@client.example> SIZE=5000\r\n", 4999, 1,
		  "452 4.3.1 Insufficient system storage" },
		{ "MAIL FROM:<a@client.example> SIZE=5000\r\n", 5000, 1, "250 2.1.0" },
		{ "MAIL FROM:<a@client.example>\r\n", 0, 0, "250 2.1.0" },       /* no SIZE: not asked */
		{ "MAIL FROM:<a@client.example> SIZE=0\r\n", 0, 0, "250 2.1.0" },
		{ "MAIL FROM:<a@client.example> SIZE=20000\r\n", 0, 0, "552 5.3.4" }, /* limit first */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		for (int bw = 0; bw < 2; bw++) {
			struct smtp_session *s = smtp_session_new(&pol, &client);
			smtp_session_set_space_check(s, fake_space_ok, NULL);
			fake_free = t[i].free;
			space_asked = 0;
			struct trace tr;
			trace_init(&tr);
			char in[256];
			snprintf(in, sizeof(in), "EHLO c.example\r\n%s" RCPT, t[i].mail);
			size_t n = strlen(in);
			if (bw) {
				for (size_t k = 0; k < n; k++) {
					smtp_session_feed(s, (const uint8_t *)in + k, 1);
					drain(s, &tr);
				}
			} else {
				smtp_session_feed(s, (const uint8_t *)in, n);
				drain(s, &tr);
			}
			finish_trace(&tr);
			char want[256];
			snprintf(want, sizeof(want), "250 HELP\n%s\n%s", t[i].want,
				 t[i].want[0] == '2' ? "250 2.1.5" : "503 5.5.1 Need MAIL");
			check_lines("SIZE and free space", (const char *)buf_ptr(&tr.last), want);
			assert_int_equal(space_asked, t[i].asked);
			trace_free(&tr);
			smtp_session_free(s);
		}
	}
	/* Without a check, SIZE is held against message_max only. */
	static const struct tcase c[] = {
		{ "no space check", 0, { F(EHLO "MAIL FROM:<a@client.example> SIZE=9999\r\n") },
		  "250 HELP\n250 2.1.0", NULL },
	};
	TABLE(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_ehlo_reply),
		cmocka_unit_test(test_framing),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_errors_max),
		cmocka_unit_test(test_nonmail_max),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_rcpt),
		cmocka_unit_test(test_data_cmd),
		cmocka_unit_test(test_smuggling),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_starttls),
		cmocka_unit_test(test_end_events),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_size_abort_early),
		cmocka_unit_test(test_log_refused),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_overfill),
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_received),
		cmocka_unit_test(test_auth_ehlo),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_auth_plain_login),
		cmocka_unit_test(test_auth_scram),
		cmocka_unit_test(test_auth_outcomes),
		cmocka_unit_test(test_auth_envelope),
		cmocka_unit_test(test_lookup_sender),
		cmocka_unit_test(test_lookup_rcpt),
		cmocka_unit_test(test_add_headers),
		cmocka_unit_test(test_received_auth),
		cmocka_unit_test(test_canonical),
		cmocka_unit_test(test_rcpt_overshoot),
		cmocka_unit_test(test_first_line_folded),
		cmocka_unit_test(test_auth_log_spellings),
		cmocka_unit_test(test_auth_log_long),
		cmocka_unit_test(test_commit_reasons),
		cmocka_unit_test(test_size_free_space),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
