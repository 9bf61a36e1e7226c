/* Tests of the SMTP/LMTP client machine: scripted server sessions, each
 * run twice (server turns fed whole, then one byte at a time) and
 * compared against the exact transcript of commands and actions; reply
 * parsing details; message refusals; dot-stuffing at every split. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "smtp/smtp.h"

/* ---- messages used by the scripts ---------------------------------------- */

static const struct smtpc_rcpt rc_one[] = { { "b@y.example", 0, NULL } };
static const struct smtpc_rcpt rc_three[] = {
	{ "r1@y.example", SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, "rfc822;r1@y.example" },
	{ "r2@y.example", SMTP_NOTIFY_NEVER, NULL },
	{ "r3@y.example", 0, NULL },
};
static const struct smtpc_rcpt rc_two[] = {
	{ "u1@y.example", SMTP_NOTIFY_DELAY, NULL },
	{ "u2@y.example", 0, NULL },
};

static const struct smtpc_msg msgs[] = {
	/* 0 */ { "a@x.example", rc_one, 1, 100, false, false, 0, NULL },
	/* 1 */ { "s@x.example", rc_three, 3, 500, false, false, SMTP_RET_HDRS, "id1" },
	/* 2 */ { "s@x.example", rc_two, 2, 5000, false, false, 0, NULL },
	/* 3 */ { "s@x.example", rc_one, 1, 10, true, true, SMTP_RET_FULL, NULL },
	/* 4 */ { "", rc_two, 2, 10, false, false, 0, NULL },
	/* 5 */ { "a@x.example", rc_one, 1, 100, true, false, 0, NULL },
	/* 6 */ { "s@x.example", rc_two, 2, 10, true, false, 0, NULL },
};

/* ---- the script runner ------------------------------------------------------ */

enum ev { END = 0, SRV, TLS_OK, TLS_FAIL, BODY, MSG, QUIT, EOF_, TMO };

struct step {
	enum ev ev;
	const char *s; /* SRV: server bytes */
	int msg;       /* MSG: index in msgs */
};

struct session {
	const char *name;
	struct smtpc_opts o;
	struct step steps[24];
	const char *want;
};

static void reply_fmt(struct buf *t, const struct smtpc_reply *r)
{
	buf_printf(t, "%d", r->code);
	if (r->status[0])
		buf_printf(t, " %s", r->status);
}

/* One line per action; SEND shows the bytes as written. */
static void drain(struct smtpc *c, struct buf *t, const struct smtpc_msg *m)
{
	struct smtpc_action a;
	for (;;) {
		smtpc_next(c, &a);
		switch (a.type) {
		case SMTPC_NONE:
			return;
		case SMTPC_SEND:
			buf_puts(t, "C:");
			buf_append(t, a.data, a.len);
			break;
		case SMTPC_STARTTLS:
			buf_puts(t, "+TLS\n");
			break;
		case SMTPC_BODY:
			buf_puts(t, "+BODY\n");
			break;
		case SMTPC_READY:
			buf_puts(t, "+READY\n");
			break;
		case SMTPC_RESULT:
			assert_non_null(m);
			assert_int_equal(a.n, m->n_rcpts);
			buf_puts(t, "+RESULT");
			for (size_t i = 0; i < a.n; i++) {
				buf_puts(t, i ? "," : " ");
				assert_non_null(a.replies[i].text);
				reply_fmt(t, &a.replies[i]);
			}
			buf_puts(t, "\n");
			break;
		case SMTPC_CLOSE:
			assert_non_null(a.reply);
			assert_non_null(a.reply->text);
			buf_puts(t, "+CLOSE ");
			reply_fmt(t, a.reply);
			buf_puts(t, "\n");
			break;
		}
	}
}

static void run_session(const struct session *s, bool bytewise, struct buf *t)
{
	struct smtpc *c = smtpc_new(&s->o);
	assert_non_null(c);
	const struct smtpc_msg *m = NULL;
	struct err e;
	for (const struct step *st = s->steps; st->ev != END; st++) {
		switch (st->ev) {
		case SRV:
			if (bytewise) {
				for (size_t i = 0; st->s[i]; i++) {
					smtpc_feed(c, st->s + i, 1);
					drain(c, t, m);
				}
			} else {
				smtpc_feed(c, st->s, strlen(st->s));
			}
			break;
		case TLS_OK:
			smtpc_tls_done(c, true);
			break;
		case TLS_FAIL:
			smtpc_tls_done(c, false);
			break;
		case BODY:
			smtpc_body_done(c);
			break;
		case MSG:
			m = &msgs[st->msg];
			if (smtpc_send_msg(c, m, &e) < 0)
				buf_printf(t, "+REFUSED\n");
			break;
		case QUIT:
			smtpc_quit(c);
			break;
		case EOF_:
			smtpc_eof(c);
			break;
		case TMO:
			smtpc_timeout(c);
			break;
		case END:
			break;
		}
		drain(c, t, m);
	}
	smtpc_free(c);
}

#define O_SMTP { .helo = "me.example", .reply_line_max = 512, .reply_lines_max = 32 }
#define O_LMTP { .lmtp = true, .helo = "me.example", .reply_line_max = 512, .reply_lines_max = 32 }
#define O_TLS(m) { .helo = "me.example", .tls = (m), .reply_line_max = 512, .reply_lines_max = 32 }
#define O_AUTH(act) { .helo = "me.example", .tls_active = (act), .auth_user = "alice", \
		      .auth_pass = "secret", .reply_line_max = 512, .reply_lines_max = 32 }

#define GREET { SRV, "220 mx.example ESMTP\r\n", 0 }
#define EHLO_C "C:EHLO me.example\r\n"

static const struct session sessions[] = {
	{ "plain EHLO session, no PIPELINING", O_SMTP,
	  { GREET, { SRV, "250-mx.example\r\n250 8BITMIME\r\n", 0 }, { MSG, NULL, 5 },
	    { SRV, "250 2.1.0 ok\r\n", 0 }, { SRV, "250 2.1.5 ok\r\n", 0 },
	    { SRV, "354 go on\r\n", 0 }, { BODY, NULL, 0 }, { SRV, "250 2.0.0 queued as X\r\n", 0 },
	    { QUIT, NULL, 0 }, { SRV, "221 2.0.0 bye\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<a@x.example> BODY=8BITMIME\r\n"
	  "C:RCPT TO:<b@y.example>\r\n"
	  "C:DATA\r\n"
	  "+BODY\n"
	  "+RESULT 250 2.0.0\n+READY\n"
	  "C:QUIT\r\n"
	  "+CLOSE 221 2.0.0\n" },

	{ "PIPELINING batch, DSN and SIZE parameters, partial failures", O_SMTP,
	  { GREET,
	    { SRV, "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-DSN\r\n250 8BITMIME\r\n", 0 },
	    { MSG, NULL, 1 },
	    { SRV, "250 ok\r\n250 ok\r\n450 4.2.0 later\r\n550 5.1.1 unknown\r\n354 go\r\n", 0 },
	    { BODY, NULL, 0 }, { SRV, "250 2.0.0 ok\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example> SIZE=500 RET=HDRS ENVID=id1\r\n"
	  "RCPT TO:<r1@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r1@y.example\r\n"
	  "RCPT TO:<r2@y.example> NOTIFY=NEVER\r\n"
	  "RCPT TO:<r3@y.example>\r\n"
	  "DATA\r\n"
	  "+BODY\n"
	  "+RESULT 250 2.0.0,450 4.2.0,550 5.1.1\n+READY\n" },

	{ "no PIPELINING: one command per reply, partial failures", O_SMTP,
	  { GREET, { SRV, "250-mx.example\r\n250 SIZE\r\n", 0 }, { MSG, NULL, 1 },
	    { SRV, "250 ok\r\n", 0 }, { SRV, "550 5.1.1 no r1\r\n", 0 },
	    { SRV, "250 ok\r\n", 0 }, { SRV, "450 4.2.0 no r3 now\r\n", 0 },
	    { SRV, "354 go\r\n", 0 }, { BODY, NULL, 0 }, { SRV, "250 fine\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example> SIZE=500\r\n"
	  "C:RCPT TO:<r1@y.example>\r\n"
	  "C:RCPT TO:<r2@y.example>\r\n"
	  "C:RCPT TO:<r3@y.example>\r\n"
	  "C:DATA\r\n"
	  "+BODY\n"
	  "+RESULT 550 5.1.1,250,450 4.2.0\n+READY\n" },

	{ "pipelined, all recipients refused: DATA refused, RSET", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 2 },
	    { SRV, "250 ok\r\n550 5.1.1 a\r\n551 5.1.6 b\r\n554 5.5.1 no valid recipients\r\n", 0 },
	    { SRV, "250 reset\r\n", 0 }, { MSG, NULL, 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<u1@y.example>\r\nRCPT TO:<u2@y.example>\r\nDATA\r\n"
	  "+RESULT 550 5.1.1,551 5.1.6\n"
	  "C:RSET\r\n"
	  "+READY\n"
	  "C:MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n" },

	{ "pipelined, all refused, broken server says 354 anyway", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 2 },
	    { SRV, "250 ok\r\n550 a\r\n550 b\r\n354 go\r\n", 0 }, { SRV, "554 empty\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<u1@y.example>\r\nRCPT TO:<u2@y.example>\r\nDATA\r\n"
	  "+RESULT 550,550\n"
	  "C:.\r\n"
	  "+READY\n" },

	{ "no PIPELINING, all refused: no DATA, RSET", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 2 }, { SRV, "250 ok\r\n", 0 },
	    { SRV, "550 5.1.1 a\r\n", 0 }, { SRV, "450 4.1.1 b\r\n", 0 }, { SRV, "250 ok\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\n"
	  "C:RCPT TO:<u1@y.example>\r\n"
	  "C:RCPT TO:<u2@y.example>\r\n"
	  "+RESULT 550 5.1.1,450 4.1.1\n"
	  "C:RSET\r\n"
	  "+READY\n" },

	{ "MAIL refused applies to every recipient (pipelined)", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 2 },
	    { SRV, "553 5.1.8 bad sender\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<u1@y.example>\r\nRCPT TO:<u2@y.example>\r\nDATA\r\n"
	  "+RESULT 553 5.1.8,553 5.1.8\n+READY\n" },

	{ "MAIL refused, no PIPELINING", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 2 }, { SRV, "452 4.3.1 full\r\n", 0 } },
	  EHLO_C "+READY\nC:MAIL FROM:<s@x.example>\r\n+RESULT 452 4.3.1,452 4.3.1\n+READY\n" },

	{ "final reply 451 after the body", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 1 },
	    { SRV, "250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n", 0 }, { BODY, NULL, 0 },
	    { SRV, "451 4.3.0 try again\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<r1@y.example>\r\nRCPT TO:<r2@y.example>\r\n"
	  "RCPT TO:<r3@y.example>\r\nDATA\r\n"
	  "+BODY\n+RESULT 451 4.3.0,550 5.1.1,451 4.3.0\n+READY\n" },

	{ "DATA itself refused 554: accepted recipients get it, RSET", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 2 }, { SRV, "250 ok\r\n", 0 },
	    { SRV, "250 ok\r\n", 0 }, { SRV, "550 5.1.1 no\r\n", 0 },
	    { SRV, "554 5.7.1 go away\r\n", 0 }, { SRV, "250 ok\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nC:RCPT TO:<u1@y.example>\r\nC:RCPT TO:<u2@y.example>\r\n"
	  "C:DATA\r\n"
	  "+RESULT 554 5.7.1,550 5.1.1\nC:RSET\r\n+READY\n" },

	{ "LMTP: LHLO and one reply per accepted recipient", O_LMTP,
	  { GREET, { SRV, "250-lmtp\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n", 0 },
	    { MSG, NULL, 1 },
	    { SRV, "250 ok\r\n250 ok\r\n550 5.1.1 no r2\r\n250 ok\r\n354 go\r\n", 0 },
	    { BODY, NULL, 0 }, { SRV, "250 2.1.5 r1 delivered\r\n", 0 },
	    { SRV, "452 4.2.2 r3 over quota\r\n", 0 } },
	  "C:LHLO me.example\r\n+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<r1@y.example>\r\nRCPT TO:<r2@y.example>\r\n"
	  "RCPT TO:<r3@y.example>\r\nDATA\r\n"
	  "+BODY\n+RESULT 250 2.1.5,550 5.1.1,452 4.2.2\n+READY\n" },

	{ "LMTP: connection lost after some final replies reports them", O_LMTP,
	  { GREET, { SRV, "250-lmtp\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 1 },
	    { SRV, "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", 0 }, { BODY, NULL, 0 },
	    { SRV, "250 2.1.5 r1 delivered\r\n", 0 }, { EOF_, NULL, 0 } },
	  "C:LHLO me.example\r\n+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<r1@y.example>\r\nRCPT TO:<r2@y.example>\r\n"
	  "RCPT TO:<r3@y.example>\r\nDATA\r\n"
	  "+BODY\n+RESULT 250 2.1.5,421 4.4.2,421 4.4.2\n+CLOSE 421 4.4.2\n" },

	{ "LMTP: LHLO refused is not retried as HELO", O_LMTP,
	  { GREET, { SRV, "500 5.5.1 what\r\n", 0 } },
	  "C:LHLO me.example\r\nC:QUIT\r\n+CLOSE 500 5.5.1\n" },

	{ "STARTTLS: bytes after the 220 are discarded, EHLO again", O_TLS(SMTPC_TLS_MAY),
	  { GREET, { SRV, "250-mx\r\n250-STARTTLS\r\n250 SIZE 100\r\n", 0 },
	    { SRV, "220 2.0.0 go ahead\r\n250-mx\r\n250 PIPELINING\r\n", 0 },
	    { SRV, "250 injected\r\n", 0 }, { TLS_OK, NULL, 0 },
	    { SRV, "250-mx\r\n250 8BITMIME\r\n", 0 }, { MSG, NULL, 2 } },
	  EHLO_C "C:STARTTLS\r\n+TLS\n" EHLO_C "+READY\n"
	  /* no SIZE (forgotten), no pipelining (injected, discarded) */
	  "C:MAIL FROM:<s@x.example>\r\n" },

	{ "STARTTLS handshake fails", O_TLS(SMTPC_TLS_MAY),
	  { GREET, { SRV, "250-mx\r\n250 STARTTLS\r\n", 0 }, { SRV, "220 go\r\n", 0 },
	    { TLS_FAIL, NULL, 0 }, { SRV, "250 late\r\n", 0 }, { QUIT, NULL, 0 } },
	  EHLO_C "C:STARTTLS\r\n+TLS\n+CLOSE 454 4.7.5\n" },

	{ "STARTTLS refused, TLS optional: go on in the clear", O_TLS(SMTPC_TLS_MAY),
	  { GREET, { SRV, "250-mx\r\n250 STARTTLS\r\n", 0 }, { SRV, "454 4.7.0 not now\r\n", 0 } },
	  EHLO_C "C:STARTTLS\r\n+READY\n" },

	{ "STARTTLS refused, TLS required", O_TLS(SMTPC_TLS_MUST),
	  { GREET, { SRV, "250-mx\r\n250 STARTTLS\r\n", 0 }, { SRV, "454 4.7.0 not now\r\n", 0 } },
	  EHLO_C "C:STARTTLS\r\nC:QUIT\r\n+CLOSE 454 4.7.0\n" },

	{ "TLS required, not offered", O_TLS(SMTPC_TLS_MUST),
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 } },
	  EHLO_C "C:QUIT\r\n+CLOSE 454 4.7.4\n" },

	{ "TLS off: STARTTLS offered but not used", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 STARTTLS\r\n", 0 } }, EHLO_C "+READY\n" },

	{ "AUTH PLAIN preferred", O_AUTH(true),
	  { GREET, { SRV, "250-mx\r\n250 AUTH LOGIN PLAIN\r\n", 0 },
	    { SRV, "235 2.7.0 ok\r\n", 0 } },
	  EHLO_C "C:AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n+READY\n" },

	{ "AUTH PLAIN without initial response support", O_AUTH(true),
	  { GREET, { SRV, "250-mx\r\n250 AUTH PLAIN\r\n", 0 }, { SRV, "334 \r\n", 0 },
	    { SRV, "235 2.7.0 ok\r\n", 0 } },
	  EHLO_C "C:AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nC:AGFsaWNlAHNlY3JldA==\r\n+READY\n" },

	{ "AUTH LOGIN (legacy AUTH= form)", O_AUTH(true),
	  { GREET, { SRV, "250-mx\r\n250 AUTH=LOGIN\r\n", 0 }, { SRV, "334 VXNlcm5hbWU6\r\n", 0 },
	    { SRV, "334 UGFzc3dvcmQ6\r\n", 0 }, { SRV, "235 2.7.0 ok\r\n", 0 } },
	  EHLO_C "C:AUTH LOGIN\r\nC:YWxpY2U=\r\nC:c2VjcmV0\r\n+READY\n" },

	{ "AUTH refused: the 5xx ends the session", O_AUTH(true),
	  { GREET, { SRV, "250-mx\r\n250 AUTH PLAIN\r\n", 0 },
	    { SRV, "535 5.7.8 bad credentials\r\n", 0 } },
	  EHLO_C "C:AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nC:QUIT\r\n+CLOSE 535 5.7.8\n" },

	{ "AUTH configured but no TLS: password never sent", O_AUTH(false),
	  { GREET, { SRV, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n", 0 } },
	  EHLO_C "C:QUIT\r\n+CLOSE 454 4.7.0\n" },

	{ "AUTH after STARTTLS", { .helo = "me.example", .tls = SMTPC_TLS_MAY, .auth_user = "alice",
				   .auth_pass = "secret", .reply_line_max = 512, .reply_lines_max = 32 },
	  { GREET, { SRV, "250-mx\r\n250 STARTTLS\r\n", 0 }, { SRV, "220 go\r\n", 0 },
	    { TLS_OK, NULL, 0 }, { SRV, "250-mx\r\n250 AUTH PLAIN\r\n", 0 },
	    { SRV, "235 ok\r\n", 0 } },
	  EHLO_C "C:STARTTLS\r\n+TLS\n" EHLO_C "C:AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n+READY\n" },

	{ "SIZE too big: refused without sending", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 0 }, { MSG, NULL, 2 },
	    { MSG, NULL, 0 } },
	  EHLO_C "+READY\n+RESULT 552 5.3.4,552 5.3.4\n+READY\n"
	  "C:MAIL FROM:<a@x.example> SIZE=100\r\nRCPT TO:<b@y.example>\r\nDATA\r\n" },

	{ "SMTPUTF8 needed, not offered", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 8BITMIME\r\n", 0 }, { MSG, NULL, 3 } },
	  EHLO_C "+READY\n+RESULT 553 5.6.7\n+READY\n" },

	{ "SMTPUTF8 and 8BITMIME offered, DSN RET=FULL", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n", 0 },
	    { MSG, NULL, 3 } },
	  EHLO_C "+READY\nC:MAIL FROM:<s@x.example> BODY=8BITMIME SMTPUTF8 RET=FULL\r\n" },

	{ "8-bit content, 8BITMIME not offered: 5.6.3 for all, nothing sent", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250-PIPELINING\r\n250-DSN\r\n250 SMTPUTF8\r\n", 0 },
	    { MSG, NULL, 6 }, { MSG, NULL, 2 } },
	  EHLO_C "+READY\n+RESULT 554 5.6.3,554 5.6.3\n+READY\n"
	  /* the next message, 7-bit, goes on the same connection */
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<u1@y.example> NOTIFY=DELAY\r\n"
	  "RCPT TO:<u2@y.example>\r\nDATA\r\n" },

	{ "8-bit content after HELO fallback: 5.6.3", O_SMTP,
	  { GREET, { SRV, "502 5.5.2 what\r\n", 0 }, { SRV, "250 hello\r\n", 0 },
	    { MSG, NULL, 5 } },
	  EHLO_C "C:HELO me.example\r\n+READY\n+RESULT 554 5.6.3\n+READY\n" },

	{ "LMTP: 8-bit content, 8BITMIME not offered: 5.6.3", O_LMTP,
	  { GREET, { SRV, "250-lmtp\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 6 } },
	  "C:LHLO me.example\r\n+READY\n+RESULT 554 5.6.3,554 5.6.3\n+READY\n" },

	{ "LMTP: 8-bit content, 8BITMIME offered", O_LMTP,
	  { GREET, { SRV, "250-lmtp\r\n250 8BITMIME\r\n", 0 }, { MSG, NULL, 5 } },
	  "C:LHLO me.example\r\n+READY\nC:MAIL FROM:<a@x.example> BODY=8BITMIME\r\n" },

	{ "8-bit content and SMTPUTF8 needed, neither offered: 5.6.7 first", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 3 } },
	  EHLO_C "+READY\n+RESULT 553 5.6.7\n+READY\n" },

	{ "HELO fallback after EHLO 5xx: no extensions", O_SMTP,
	  { GREET, { SRV, "502 5.5.2 what\r\n", 0 }, { SRV, "250 hello\r\n", 0 }, { MSG, NULL, 0 },
	    { SRV, "250 ok\r\n", 0 } },
	  EHLO_C "C:HELO me.example\r\n+READY\nC:MAIL FROM:<a@x.example>\r\n"
	  "C:RCPT TO:<b@y.example>\r\n" },

	{ "HELO refused too", O_SMTP,
	  { GREET, { SRV, "502 5.5.2 what\r\n", 0 }, { SRV, "550 no\r\n", 0 } },
	  EHLO_C "C:HELO me.example\r\nC:QUIT\r\n+CLOSE 550\n" },

	{ "EHLO 4xx is not a reason for HELO", O_SMTP,
	  { GREET, { SRV, "450 4.7.1 slow down\r\n", 0 } },
	  EHLO_C "C:QUIT\r\n+CLOSE 450 4.7.1\n" },

	{ "multiline replies with bare LF, DSN NOTIFY=DELAY", O_SMTP,
	  { { SRV, "220-mx.example\n220-second\r\n220 third\n", 0 },
	    { SRV, "250-mx\n250-DSN\n250 PIPELINING\n", 0 }, { MSG, NULL, 2 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<s@x.example>\r\nRCPT TO:<u1@y.example> NOTIFY=DELAY\r\n"
	  "RCPT TO:<u2@y.example>\r\nDATA\r\n" },

	{ "code changes inside a multiline reply", O_SMTP,
	  { { SRV, "220-mx\r\n250 hello\r\n", 0 }, { SRV, "220 late\r\n", 0 } },
	  "+CLOSE 451 4.5.0\n" },

	{ "garbage greeting", O_SMTP, { { SRV, "hello there\r\n", 0 } }, "+CLOSE 451 4.5.0\n" },

	{ "reply code out of range", O_SMTP, { { SRV, "620 x\r\n", 0 } }, "+CLOSE 451 4.5.0\n" },

	{ "no separator after the code", O_SMTP, { { SRV, "220x\r\n", 0 } }, "+CLOSE 451 4.5.0\n" },

	{ "embedded CR", O_SMTP, { { SRV, "220 a\rb\r\n", 0 } }, "+CLOSE 451 4.5.0\n" },

	{ "reply line over reply_line_max", { .helo = "me", .reply_line_max = 16, .reply_lines_max = 4 },
	  { { SRV, "220 0123456789abcdefghij\r\n", 0 } }, "+CLOSE 451 4.5.0\n" },

	{ "reply line exactly reply_line_max", { .helo = "me", .reply_line_max = 16, .reply_lines_max = 4 },
	  { { SRV, "220 0123456789ab\r\n", 0 } }, "C:EHLO me\r\n" },

	{ "over reply_lines_max", { .helo = "me", .reply_line_max = 64, .reply_lines_max = 3 },
	  { { SRV, "220 mx\r\n", 0 }, { SRV, "250-a\r\n250-b\r\n250-c\r\n250 d\r\n", 0 } },
	  "C:EHLO me\r\n+CLOSE 451 4.5.0\n" },

	{ "exactly reply_lines_max", { .helo = "me", .reply_line_max = 64, .reply_lines_max = 3 },
	  { { SRV, "220 mx\r\n", 0 }, { SRV, "250-a\r\n250-b\r\n250 c\r\n", 0 } },
	  "C:EHLO me\r\n+READY\n" },

	{ "greeting 554: QUIT, close with the 5xx", O_SMTP,
	  { { SRV, "554 5.7.1 not you\r\n", 0 } }, "C:QUIT\r\n+CLOSE 554 5.7.1\n" },

	{ "greeting 421: close without QUIT", O_SMTP,
	  { { SRV, "421 4.3.2 busy\r\n", 0 } }, "+CLOSE 421 4.3.2\n" },

	{ "unsolicited reply while idle", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { SRV, "250 surprise\r\n", 0 }, { MSG, NULL, 0 } },
	  EHLO_C "+READY\n+CLOSE 451 4.5.0\n+REFUSED\n" },

	{ "421 in the middle of a transaction", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 0 }, { SRV, "421 4.4.2 timeout\r\n", 0 } },
	  EHLO_C "+READY\nC:MAIL FROM:<a@x.example>\r\n+CLOSE 421 4.4.2\n" },

	{ "eof mid-transaction", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { MSG, NULL, 0 }, { SRV, "250 ok\r\n", 0 },
	    { EOF_, NULL, 0 }, { SRV, "250 ok\r\n", 0 }, { QUIT, NULL, 0 } },
	  EHLO_C "+READY\nC:MAIL FROM:<a@x.example>\r\nC:RCPT TO:<b@y.example>\r\n"
	  "+CLOSE 421 4.4.2\n" },

	{ "timeout waiting for the final reply (SMTP: no RESULT)", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 0 },
	    { SRV, "250 ok\r\n250 ok\r\n354 go\r\n", 0 }, { BODY, NULL, 0 }, { TMO, NULL, 0 } },
	  EHLO_C "+READY\nC:MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n"
	  "+BODY\n+CLOSE 421 4.4.2\n" },

	{ "eof before the greeting", O_SMTP, { { EOF_, NULL, 0 } }, "+CLOSE 421 4.4.2\n" },

	{ "quit then eof", O_SMTP,
	  { GREET, { SRV, "250 mx\r\n", 0 }, { QUIT, NULL, 0 }, { EOF_, NULL, 0 } },
	  EHLO_C "+READY\nC:QUIT\r\n+CLOSE 221 2.0.0\n" },

	{ "two messages on one connection", O_SMTP,
	  { GREET, { SRV, "250-mx\r\n250 PIPELINING\r\n", 0 }, { MSG, NULL, 0 },
	    { SRV, "250 ok\r\n250 ok\r\n354 go\r\n", 0 }, { BODY, NULL, 0 },
	    { SRV, "250 2.0.0 first\r\n", 0 }, { MSG, NULL, 4 },
	    { SRV, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", 0 }, { BODY, NULL, 0 },
	    { SRV, "550 5.7.1 content refused\r\n", 0 }, { QUIT, NULL, 0 },
	    { SRV, "221 bye\r\n", 0 } },
	  EHLO_C "+READY\n"
	  "C:MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n+BODY\n"
	  "+RESULT 250 2.0.0\n+READY\n"
	  "C:MAIL FROM:<>\r\nRCPT TO:<u1@y.example>\r\nRCPT TO:<u2@y.example>\r\nDATA\r\n+BODY\n"
	  "+RESULT 550 5.7.1,550 5.7.1\n+READY\n"
	  "C:QUIT\r\n+CLOSE 221\n" },

	{ "message refused while not ready", O_SMTP,
	  { GREET, { MSG, NULL, 0 }, { SRV, "250 mx\r\n", 0 } }, EHLO_C "+REFUSED\n+READY\n" },
};

static void test_sessions(void **state)
{
	for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			struct buf t;
			buf_init(&t, 1 << 20);
			run_session(&sessions[i], bytewise, &t);
			const char *got = buf_cstr(&t);
			if (strcmp(got, sessions[i].want) != 0) {
				print_error("session '%s' (%s):\n--- got\n%s\n--- want\n%s\n",
					    sessions[i].name, bytewise ? "byte by byte" : "whole",
					    got, sessions[i].want);
				buf_free(&t);
				fail();
			}
			buf_free(&t);
		}
	}
}

/* ---- reply details ------------------------------------------------------------ */

static const struct smtpc_action *next_of(struct smtpc *c, struct smtpc_action *a,
					  enum smtpc_action_type want)
{
	do
		smtpc_next(c, a);
	while (a->type != want && a->type != SMTPC_NONE);
	assert_int_equal(a->type, want);
	return a;
}

/* A machine past its greeting and EHLO (the server's lines in greet). */
static struct smtpc *ready_client(const struct smtpc_opts *o, const char *greet)
{
	struct smtpc *c = smtpc_new(o);
	smtpc_feed(c, greet, strlen(greet));
	struct smtpc_action a;
	next_of(c, &a, SMTPC_READY);
	return c;
}

/* Sends m, feeds the server's replies up to DATA's 354, and has the body
 * sent, so that the reply to the dot comes next. */
static void send_to_body(struct smtpc *c, const struct smtpc_msg *m, const char *replies)
{
	struct err e;
	struct smtpc_action a;
	assert_int_equal(smtpc_send_msg(c, m, &e), 0);
	smtpc_feed(c, replies, strlen(replies));
	next_of(c, &a, SMTPC_BODY);
	smtpc_body_done(c);
}

/* The close reply of a session whose greeting is `greeting`. */
static void greeting_close(const char *greeting, struct smtpc_reply *out)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	struct smtpc *c = smtpc_new(&o);
	smtpc_feed(c, greeting, strlen(greeting));
	struct smtpc_action a;
	next_of(c, &a, SMTPC_CLOSE);
	out->code = a.reply->code;
	memcpy(out->status, a.reply->status, sizeof(out->status));
	out->text = str_dup(a.reply->text);
	smtpc_free(c);
}

static void test_reply_status_and_text(void **state)
{
	static const struct {
		const char *in;
		int code;
		const char *status, *text;
	} t[] = {
		{ "554 5.7.1 go away\r\n", 554, "5.7.1", "554 5.7.1 go away" },
		{ "554 4.7.1 wrong class\r\n", 554, "", "554 4.7.1 wrong class" },
		{ "554 5.7.1x no\r\n", 554, "", "554 5.7.1x no" },
		{ "554 5.1234.1 long\r\n", 554, "", "554 5.1234.1 long" },
		{ "554 5.123.123\r\n", 554, "5.123.123", "554 5.123.123" },
		{ "554 5.7\r\n", 554, "", "554 5.7" },
		{ "554\r\n", 554, "", "554" },
		{ "554-5.7.1 first\r\n554-second\r\n554 third\r\n", 554, "5.7.1",
		  "554 5.7.1 first / 554 second / 554 third" },
		{ "554 bell\a tab\there\r\n", 554, "", "554 bell? tab\there" },
		{ "421-4.3.2 a\n421 b\n", 421, "4.3.2", "421 4.3.2 a / 421 b" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct smtpc_reply r;
		greeting_close(t[i].in, &r);
		assert_int_equal(r.code, t[i].code);
		assert_string_equal(r.status, t[i].status);
		assert_string_equal(r.text, t[i].text);
		free(r.text);
	}
}

/* Replies are kept until the next message: text of a per-recipient reply. */
static void test_result_text_lifetime(void **state)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	struct smtpc *c = ready_client(&o, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
	struct smtpc_action a;
	send_to_body(c, &msgs[2],
		     "250 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n250 ok\r\n354 go\r\n");
	smtpc_feed(c, "250 2.0.0 done\r\n", 16);
	next_of(c, &a, SMTPC_RESULT);
	const struct smtpc_reply *r = a.replies;
	next_of(c, &a, SMTPC_READY);
	smtpc_quit(c); /* another call: the replies are still valid */
	assert_string_equal(r[0].text, "550 5.1.1 no such / 550 5.1.1 user");
	assert_string_equal(r[1].text, "250 2.0.0 done");
	assert_true(!smtpc_tls_on(c));
	smtpc_free(c);
}

static void test_send_msg_refusals(void **state)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	static const struct smtpc_rcpt cr[] = { { "a\r\n@b", 0, NULL } };
	static const struct smtpc_rcpt lf_orcpt[] = { { "a@b", 0, "rfc822;x\n" } };
	static const struct smtpc_msg bad[] = {
		{ "x@y\r\nRSET", rc_one, 1, 1, false, false, 0, NULL },
		{ "x@y", cr, 1, 1, false, false, 0, NULL },
		{ "x@y", lf_orcpt, 1, 1, false, false, 0, NULL },
		{ "x@y", rc_one, 1, 1, false, false, SMTP_RET_FULL, "e\rnv" },
		{ "x@y", rc_one, 0, 1, false, false, 0, NULL },
		{ NULL, rc_one, 1, 1, false, false, 0, NULL },
	};
	struct smtpc *c = smtpc_new(&o);
	struct err e;
	struct smtpc_action a;
	/* not ready yet */
	assert_int_equal(smtpc_send_msg(c, &msgs[0], &e), -1);
	const char *srv = "220 mx\r\n250-mx\r\n250 DSN\r\n";
	smtpc_feed(c, srv, strlen(srv));
	next_of(c, &a, SMTPC_READY);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(smtpc_send_msg(c, &bad[i], &e), -1);
		smtpc_next(c, &a);
		assert_int_equal(a.type, SMTPC_NONE);
	}
	/* still ready after refusals */
	assert_int_equal(smtpc_send_msg(c, &msgs[0], &e), 0);
	smtpc_next(c, &a);
	assert_int_equal(a.type, SMTPC_SEND);
	/* busy now */
	assert_int_equal(smtpc_send_msg(c, &msgs[0], &e), -1);
	smtpc_free(c);

	/* option strings with line ends are refused outright */
	struct smtpc_opts bo = { .helo = "me\r\nMAIL FROM:<x>" };
	assert_null(smtpc_new(&bo));
	struct smtpc_opts bu = { .helo = "me", .auth_user = "u\n", .auth_pass = "p" };
	assert_null(smtpc_new(&bu));
}

/* Whether a reply's text is the server's or ours: bounces label the
 * first "smtp" and the second not (RFC 3464 2.3.6). */
static void test_reply_origin(void **state)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	struct err e;
	struct smtpc_action a;

	/* Refused before sending: ours. */
	struct smtpc *c = ready_client(&o, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
	assert_int_equal(smtpc_send_msg(c, &msgs[6], &e), 0);
	next_of(c, &a, SMTPC_RESULT);
	assert_int_equal(a.n, 2);
	for (size_t i = 0; i < a.n; i++) {
		assert_true(a.replies[i].local);
		assert_int_equal(a.replies[i].code, 554);
		assert_string_equal(a.replies[i].status, "5.6.3");
		assert_non_null(strstr(a.replies[i].text, "8BITMIME"));
	}
	next_of(c, &a, SMTPC_READY);

	/* Per-recipient replies the server sent: the server's. */
	send_to_body(c, &msgs[2], "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n");
	smtpc_feed(c, "250 2.0.0 done\r\n", 16);
	next_of(c, &a, SMTPC_RESULT);
	assert_false(a.replies[0].local);
	assert_false(a.replies[1].local);
	assert_string_equal(a.replies[0].text, "550 5.1.1 no");

	/* The connection lost: ours. */
	smtpc_eof(c);
	next_of(c, &a, SMTPC_CLOSE);
	assert_true(a.reply->local);
	smtpc_free(c);

	/* The server's own 5xx ending the session: the server's. */
	c = smtpc_new(&o);
	smtpc_feed(c, "554 5.7.1 not you\r\n", 19);
	next_of(c, &a, SMTPC_CLOSE);
	assert_false(a.reply->local);
	smtpc_free(c);

	/* A protocol error: ours, although it quotes the server. */
	c = smtpc_new(&o);
	smtpc_feed(c, "hello\r\n", 7);
	next_of(c, &a, SMTPC_CLOSE);
	assert_true(a.reply->local);
	smtpc_free(c);

	/* LMTP: replies given before the loss are the server's, the rest ours. */
	struct smtpc_opts lo = o;
	lo.lmtp = true;
	c = ready_client(&lo, "220 mx\r\n250-lmtp\r\n250 PIPELINING\r\n");
	send_to_body(c, &msgs[2], "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	const char *one = "250 2.1.5 one\r\n";
	smtpc_feed(c, one, strlen(one));
	smtpc_timeout(c);
	next_of(c, &a, SMTPC_RESULT);
	assert_false(a.replies[0].local);
	assert_true(a.replies[1].local);
	smtpc_free(c);
}

/* RFC 5321 4.5.3.1.10: a 552 to RCPT (a recipient limit) is temporary; a
 * 552 to MAIL or to the end of data is not.  Each reply also says which
 * command it answered. */
static void test_rcpt_552_is_temporary(void **state)
{
	static const struct {
		const char *srv; /* after the 250 to MAIL... as the server answers */
		int code[3];
		const char *status[3];
		const char *text1;
		enum smtpc_stage stage[3];
	} t[] = {
		{ "250 ok\r\n250 ok\r\n552 5.5.3 too many recipients\r\n552 too many\r\n354 go\r\n",
		  { 250, 452, 452 }, { "2.0.0", "4.5.3", "" },
		  "552 5.5.3 too many recipients",
		  { SMTPC_STAGE_DATA, SMTPC_STAGE_RCPT, SMTPC_STAGE_RCPT } },
		{ "250 ok\r\n250 ok\r\n552 4.5.3 odd class\r\n550 5.1.1 no\r\n354 go\r\n",
		  { 250, 452, 550 }, { "2.0.0", "", "5.1.1" },
		  "552 4.5.3 odd class",
		  { SMTPC_STAGE_DATA, SMTPC_STAGE_RCPT, SMTPC_STAGE_RCPT } },
		{ "552 5.3.4 too big\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n"
		  "503 5.5.1 no\r\n", /* MAIL: a size limit, permanent */
		  { 552, 552, 552 }, { "5.3.4", "5.3.4", "5.3.4" }, "552 5.3.4 too big",
		  { SMTPC_STAGE_MAIL, SMTPC_STAGE_MAIL, SMTPC_STAGE_MAIL } },
		{ "250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n",
		  { 552, 552, 552 }, { "5.3.4", "5.3.4", "5.3.4" }, "552 5.3.4 after data",
		  { SMTPC_STAGE_DATA, SMTPC_STAGE_DATA, SMTPC_STAGE_DATA } },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			struct smtpc_opts o = { .helo = "me", .reply_line_max = 100,
						.reply_lines_max = 5 };
			struct smtpc *c = ready_client(&o, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
			struct smtpc_action a;
			struct err e;
			assert_int_equal(smtpc_send_msg(c, &msgs[1], &e), 0);
			size_t len = strlen(t[i].srv);
			if (bytewise)
				for (size_t k = 0; k < len; k++)
					smtpc_feed(c, t[i].srv + k, 1);
			else
				smtpc_feed(c, t[i].srv, len);
			if (t[i].stage[0] == SMTPC_STAGE_DATA) {
				next_of(c, &a, SMTPC_BODY);
				smtpc_body_done(c);
				const char *dot = i == 3 ? "552 5.3.4 after data\r\n"
							 : "250 2.0.0 done\r\n";
				smtpc_feed(c, dot, strlen(dot));
			}
			next_of(c, &a, SMTPC_RESULT);
			assert_int_equal(a.n, 3);
			for (size_t k = 0; k < 3; k++) {
				assert_int_equal(a.replies[k].code, t[i].code[k]);
				assert_string_equal(a.replies[k].status, t[i].status[k]);
				assert_int_equal(a.replies[k].stage, t[i].stage[k]);
				assert_false(a.replies[k].local);
			}
			assert_string_equal(a.replies[1].text, t[i].text1);
			smtpc_free(c);
		}
	}
}

/* The pipelined group is one write (RFC 2920: MAIL, RCPTs and DATA). */
static void test_pipeline_single_send(void **state)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	struct smtpc *c = ready_client(&o, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
	struct smtpc_action a;
	struct err e;
	assert_int_equal(smtpc_send_msg(c, &msgs[1], &e), 0);
	smtpc_next(c, &a);
	assert_int_equal(a.type, SMTPC_SEND);
	const char *want = "MAIL FROM:<s@x.example>\r\nRCPT TO:<r1@y.example>\r\n"
			   "RCPT TO:<r2@y.example>\r\nRCPT TO:<r3@y.example>\r\nDATA\r\n";
	assert_int_equal(a.len, strlen(want));
	assert_memory_equal(a.data, want, a.len);
	smtpc_next(c, &a);
	assert_int_equal(a.type, SMTPC_NONE);
	smtpc_free(c);
}

/* After CLOSE nothing else comes out, whatever happens. */
static void test_closed_is_final(void **state)
{
	struct smtpc_opts o = { .helo = "me", .reply_line_max = 100, .reply_lines_max = 5 };
	struct smtpc *c = smtpc_new(&o);
	smtpc_feed(c, "bogus\r\n", 7);
	struct smtpc_action a;
	next_of(c, &a, SMTPC_CLOSE);
	smtpc_feed(c, "220 mx\r\n", 8);
	smtpc_quit(c);
	smtpc_eof(c);
	smtpc_timeout(c);
	smtpc_tls_done(c, true);
	smtpc_body_done(c);
	smtpc_next(c, &a);
	assert_int_equal(a.type, SMTPC_NONE);
	smtpc_free(c);
}

/* ---- dot-stuffing ----------------------------------------------------------------- */

static const struct {
	const char *in, *out;
} dots[] = {
	{ "", ".\r\n" },
	{ "a\r\n", "a\r\n.\r\n" },
	{ "a", "a\r\n.\r\n" },
	{ ".\r\n", "..\r\n.\r\n" },
	{ ".", "..\r\n.\r\n" },
	{ "a\r\n.b\r\n..\r\n", "a\r\n..b\r\n...\r\n.\r\n" },
	{ "a\r\n.", "a\r\n..\r\n.\r\n" },
	{ "a.b\r\nc.\r\n", "a.b\r\nc.\r\n.\r\n" },
	{ "a\n.\n", "a\r\n..\r\n.\r\n" },       /* bare LF: smuggling defence */
	{ "a\r\n\n.\r\n", "a\r\n\r\n..\r\n.\r\n" },
	{ "x\r.y", "x\r.y\r\n.\r\n" },
	{ "x\r", "x\r\r\n.\r\n" },
	{ "\r\n\r\n", "\r\n\r\n.\r\n" },
};

static void dot_run(const char *in, size_t len, const size_t *cuts, size_t ncuts, struct buf *out)
{
	struct smtpc_dot d;
	smtpc_dot_init(&d);
	size_t at = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		assert_int_equal(smtpc_dot_stuff(&d, in + at, end - at, out), 0);
		at = end;
	}
	assert_int_equal(smtpc_dot_end(&d, out), 0);
}

static void test_dot_stuffing(void **state)
{
	for (size_t i = 0; i < sizeof(dots) / sizeof(dots[0]); i++) {
		size_t len = strlen(dots[i].in);
		/* whole, split at every offset, and one byte at a time */
		for (size_t cut = 0; cut <= len + 1; cut++) {
			struct buf out;
			buf_init(&out, 4096);
			if (cut <= len) {
				dot_run(dots[i].in, len, &cut, 1, &out);
			} else {
				size_t all[64];
				assert_true(len < 64);
				for (size_t k = 0; k < len; k++)
					all[k] = k;
				dot_run(dots[i].in, len, all, len, &out);
			}
			const char *got = buf_cstr(&out);
			if (strcmp(got, dots[i].out) != 0)
				fail_msg("dot case %zu cut %zu: got '%s'", i, cut, got);
			buf_free(&out);
		}
	}
	/* a full buffer is reported */
	struct buf small;
	buf_init(&small, 4);
	struct smtpc_dot d;
	smtpc_dot_init(&d);
	assert_int_equal(smtpc_dot_stuff(&d, ".abcdef", 7, &small), -1);
	buf_free(&small);
	buf_init(&small, 2);
	smtpc_dot_init(&d);
	assert_int_equal(smtpc_dot_end(&d, &small), -1);
	buf_free(&small);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sessions),
		cmocka_unit_test(test_reply_status_and_text),
		cmocka_unit_test(test_result_text_lifetime),
		cmocka_unit_test(test_send_msg_refusals),
		cmocka_unit_test(test_pipeline_single_send),
		cmocka_unit_test(test_reply_origin),
		cmocka_unit_test(test_closed_is_final),
		cmocka_unit_test(test_dot_stuffing),
		cmocka_unit_test(test_rcpt_552_is_temporary),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
