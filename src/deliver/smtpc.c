/*
 * The SMTP and LMTP client protocol machine (RFC 5321, 2920, 3207, 2033,
 * 1870, 6152, 6531, 3461, 4954).  Pure: server bytes and events in,
 * actions out.  The runner owns the socket, TLS and the clock.
 *
 * Everything the server says is hostile: replies are parsed line by line
 * into bounded buffers (opts reply_line_max, reply_lines_max), and any
 * deviation ends the session with a temporary failure, so that a broken
 * or malicious server can delay mail but never lose or misroute it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../smtp/smtp.h"
#include "deliver.h"

/* Used when the options leave a bound at 0: RFC 5321 4.5.3.1.5 says
 * 512 octets per line; generous, still bounded, for real servers. */
#define SMTPC_DEF_LINE_MAX 2048
#define SMTPC_DEF_LINES_MAX 128
/* Our own commands only (addresses come from the spool). */
#define SMTPC_OUT_MAX ((size_t)256 << 20)

enum smtpc_state {
	ST_GREETING,
	ST_EHLO,
	ST_HELO,
	ST_STARTTLS,   /* STARTTLS sent, waiting for 220 */
	ST_TLS,        /* handshake in progress: server bytes are discarded */
	ST_AUTH_PLAIN, /* AUTH PLAIN with initial response sent */
	ST_AUTH_PLAIN2,/* credentials sent after an empty 334 */
	ST_AUTH_LOGIN1,
	ST_AUTH_LOGIN2,
	ST_AUTH_LOGIN3,
	ST_READY,
	ST_TXN,        /* MAIL/RCPT/DATA replies, pipelined or not */
	ST_BODY,       /* waiting for smtpc_body_done */
	ST_DOT,        /* final reply (replies for LMTP) after the body */
	ST_NULLDOT,    /* ".\r\n" sent after a 354 with no recipient */
	ST_RSET,
	ST_QUIT,
	ST_CLOSED,
};

struct smtpc_ext {
	bool pipelining, size, eightbit, smtputf8, dsn, starttls, auth_plain, auth_login;
	uint64_t size_max;
};

struct smtpc_act {
	enum smtpc_action_type type;
	size_t off, len;                   /* SEND: a range of out */
	const struct smtpc_reply *replies; /* RESULT */
	size_t n;
	const struct smtpc_reply *reply;   /* CLOSE */
};

struct smtpc {
	bool lmtp;
	enum smtpc_tls tls_mode;
	char *helo, *user, *pass;
	size_t line_max, lines_max;

	enum smtpc_state st;
	bool tls, tls_refused;
	struct smtpc_ext ext, ext_new;

	/* reply parser */
	struct buf line;   /* the partial line */
	int r_code;
	size_t r_lines;    /* lines of the reply so far; 0 = between replies */
	char r_status[16];
	struct buf r_text;

	/* actions */
	struct buf out;
	bool out_secret;
	struct smtpc_act *acts;
	size_t n_acts, cap_acts, head;

	/* the message in progress */
	struct buf cmds;        /* MAIL, RCPT..., DATA, each with CRLF */
	size_t *cmd_off;        /* n_rcpts + 3 offsets into cmds */
	size_t n_rcpts;
	struct smtpc_reply *res;
	bool *accepted;
	bool pipelined, mail_ok;
	size_t idx;             /* reply expected: 0 MAIL, 1..n RCPT, n+1 DATA */
	size_t n_accepted;
	size_t dot_got;         /* final replies received */

	struct smtpc_reply close_r;
};

/* ---- small helpers ---------------------------------------------------- */

static bool has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

static void wipe(void *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

static void free_secret(char *s)
{
	if (s) {
		wipe(s, strlen(s));
		free(s);
	}
}

static void reply_set(struct smtpc_reply *r, int code, const char *status, const char *text)
{
	free(r->text);
	r->code = code;
	snprintf(r->status, sizeof(r->status), "%s", status ? status : "");
	r->text = str_dup(text ? text : "");
	r->stage = SMTPC_STAGE_NONE;
	/* Text given here is ours unless the caller then marks it as the
	 * server's (reply_copy, close_with_reply, dot_lost). */
	r->local = true;
}

static void reply_copy(struct smtpc_reply *dst, const struct smtpc_reply *src)
{
	reply_set(dst, src->code, src->status, src->text);
	dst->local = src->local;
	dst->stage = src->stage;
}

static void reply_clear(struct smtpc_reply *r)
{
	free(r->text);
	r->text = NULL;
	r->code = 0;
	r->status[0] = 0;
	r->local = false;
	r->stage = SMTPC_STAGE_NONE;
}

static void msg_free(struct smtpc *c)
{
	if (c->res)
		for (size_t i = 0; i < c->n_rcpts; i++)
			free(c->res[i].text);
	free(c->res);
	free(c->accepted);
	free(c->cmd_off);
	c->res = NULL;
	c->accepted = NULL;
	c->cmd_off = NULL;
	c->n_rcpts = 0;
	buf_reset(&c->cmds);
}

/* ---- the action queue -------------------------------------------------- */

static struct smtpc_act *act_push(struct smtpc *c, enum smtpc_action_type t)
{
	if (c->n_acts == c->cap_acts) {
		size_t ncap = c->cap_acts ? c->cap_acts * 2 : 8;
		c->acts = xrealloc(c->acts, ncap * sizeof(*c->acts));
		c->cap_acts = ncap;
	}
	struct smtpc_act *a = &c->acts[c->n_acts++];
	memset(a, 0, sizeof(*a));
	a->type = t;
	return a;
}

static void do_close(struct smtpc *c, int code, const char *status, const char *text, bool quit);
static void dot_lost(struct smtpc *c, int code, const char *status, const char *text,
		     bool local);

/* Consecutive sends become one write: that is what makes a pipelined
 * MAIL/RCPT/DATA group a single SEND. */
static void send_bytes(struct smtpc *c, const void *p, size_t n)
{
	if (c->st == ST_CLOSED)
		return;
	size_t at = buf_len(&c->out);
	if (buf_append(&c->out, p, n) < 0) {
		do_close(c, 451, "4.3.0", "451 4.3.0 local error: out of memory for commands",
			 false);
		return;
	}
	if (c->n_acts > c->head && c->acts[c->n_acts - 1].type == SMTPC_SEND &&
	    c->acts[c->n_acts - 1].off + c->acts[c->n_acts - 1].len == at) {
		c->acts[c->n_acts - 1].len += n;
		return;
	}
	struct smtpc_act *a = act_push(c, SMTPC_SEND);
	a->off = at;
	a->len = n;
}

static void send_str(struct smtpc *c, const char *s)
{
	send_bytes(c, s, strlen(s));
}

/* Called at the start of every event: once the caller has taken every
 * action, the storage behind them can be reused. */
static void event_begin(struct smtpc *c)
{
	if (c->head < c->n_acts)
		return;
	c->head = c->n_acts = 0;
	if (c->out_secret && c->out.data)
		wipe(c->out.data, c->out.cap);
	c->out_secret = false;
	buf_reset(&c->out);
}

static void do_close(struct smtpc *c, int code, const char *status, const char *text, bool quit)
{
	if (c->st == ST_CLOSED)
		return;
	if (quit)
		send_str(c, "QUIT\r\n");
	reply_set(&c->close_r, code, status, text);
	c->st = ST_CLOSED;
	struct smtpc_act *a = act_push(c, SMTPC_CLOSE);
	a->reply = &c->close_r;
	buf_reset(&c->line);
	c->r_lines = 0;
}

/* A server reply that ends the session: its own 4xx/5xx, or anything
 * else reported as a temporary protocol failure.  421 means the server
 * is already closing: no QUIT then. */
static void close_with_reply(struct smtpc *c, bool quit)
{
	const char *text = buf_cstr(&c->r_text);
	if (!text)
		text = "";
	if (c->r_code >= 400 && c->r_code < 600) {
		bool was_open = c->st != ST_CLOSED;
		do_close(c, c->r_code, c->r_status, text, quit && c->r_code != 421);
		if (was_open)
			c->close_r.local = false;
		return;
	}
	struct buf t;
	buf_init(&t, c->line_max * 2 + 64);
	buf_puts(&t, "451 4.5.0 protocol error: unexpected reply: ");
	buf_append(&t, text, strlen(text) < c->line_max ? strlen(text) : c->line_max);
	const char *s = buf_cstr(&t);
	do_close(c, 451, "4.5.0", s ? s : "451 4.5.0 protocol error", false);
	buf_free(&t);
}

static void protocol_error(struct smtpc *c, const char *why)
{
	char t[160];
	snprintf(t, sizeof(t), "451 4.5.0 protocol error: %s", why);
	dot_lost(c, 451, "4.5.0", t, true);
	do_close(c, 451, "4.5.0", t, false);
}

/* A failed send may have closed the session in the middle of a step:
 * nothing may follow a CLOSE. */
static void set_state(struct smtpc *c, enum smtpc_state s)
{
	if (c->st != ST_CLOSED)
		c->st = s;
}

static void push_if_open(struct smtpc *c, enum smtpc_action_type t)
{
	if (c->st != ST_CLOSED)
		act_push(c, t);
}

static void become_ready(struct smtpc *c)
{
	set_state(c, ST_READY);
	push_if_open(c, SMTPC_READY);
}

static void emit_result(struct smtpc *c)
{
	if (c->st == ST_CLOSED)
		return;
	for (size_t i = 0; i < c->n_rcpts; i++)
		c->res[i].dsn = c->ext.dsn;
	struct smtpc_act *a = act_push(c, SMTPC_RESULT);
	a->replies = c->res;
	a->n = c->n_rcpts;
}

/* ---- session setup ----------------------------------------------------- */

static void send_hello(struct smtpc *c)
{
	memset(&c->ext, 0, sizeof(c->ext));
	send_str(c, c->lmtp ? "LHLO " : "EHLO ");
	send_str(c, c->helo);
	send_str(c, "\r\n");
	set_state(c, ST_EHLO);
}

static void auth_send_b64(struct smtpc *c, const char *prefix, const void *p, size_t n)
{
	struct buf b;
	buf_init(&b, SMTPC_OUT_MAX);
	if (prefix)
		buf_puts(&b, prefix);
	if (b64_encode(p, n, &b) < 0 || buf_append(&b, "\r\n", 2) < 0) {
		wipe(b.data, b.cap);
		buf_free(&b);
		do_close(c, 451, "4.3.0", "451 4.3.0 local error: credentials too long", false);
		return;
	}
	send_bytes(c, buf_ptr(&b), buf_len(&b));
	c->out_secret = true;
	wipe(b.data, b.cap);
	buf_free(&b);
}

static void auth_plain_response(struct smtpc *c, const char *prefix)
{
	size_t ul = strlen(c->user), pl = strlen(c->pass);
	size_t n = ul + pl + 2;
	char *m = xmalloc(n);
	m[0] = 0;
	memcpy(m + 1, c->user, ul);
	m[1 + ul] = 0;
	memcpy(m + 2 + ul, c->pass, pl);
	auth_send_b64(c, prefix, m, n);
	wipe(m, n);
	free(m);
}

/* After a successful EHLO/LHLO/HELO: STARTTLS, then AUTH, then ready. */
static void after_hello(struct smtpc *c)
{
	if (!c->tls && c->ext.starttls && c->tls_mode != SMTPC_TLS_NO && !c->tls_refused) {
		send_str(c, "STARTTLS\r\n");
		set_state(c, ST_STARTTLS);
		return;
	}
	if (c->tls_mode == SMTPC_TLS_MUST && !c->tls) {
		do_close(c, 454, "4.7.4", "454 4.7.4 TLS required but not offered", true);
		return;
	}
	if (c->user) {
		if (!c->tls) {
			do_close(c, 454, "4.7.0",
				 "454 4.7.0 authentication configured: would send password without TLS",
				 true);
			return;
		}
		if (c->ext.auth_plain) {
			auth_plain_response(c, "AUTH PLAIN ");
			set_state(c, ST_AUTH_PLAIN);
			return;
		}
		if (c->ext.auth_login) {
			send_str(c, "AUTH LOGIN\r\n");
			set_state(c, ST_AUTH_LOGIN1);
			return;
		}
		do_close(c, 454, "4.7.0", "454 4.7.0 server offers no AUTH PLAIN or LOGIN", true);
		return;
	}
	become_ready(c);
}

/* One EHLO keyword line (everything after "250-"/"250 "). */
static void ext_parse(struct smtpc_ext *x, const char *p, size_t n)
{
	size_t k = 0;
	while (k < n && p[k] != ' ' && p[k] != '=')
		k++;
	const char *arg = p + k;
	size_t alen = n - k;
	if (alen > 0) {
		arg++;
		alen--;
	}
	if (str_eq_nocase(p, k, "PIPELINING")) {
		x->pipelining = true;
	} else if (str_eq_nocase(p, k, "SIZE")) {
		x->size = true;
		x->size_max = 0;
		if (alen > 0) {
			/* Bounded copy: num_parse_u64 reads a NUL-terminated string. */
			char num[24];
			size_t l = alen < sizeof(num) - 1 ? alen : sizeof(num) - 1;
			memcpy(num, arg, l);
			num[l] = 0;
			const char *s = num;
			uint64_t v;
			if (num_parse_u64(&s, &v) == 0 && (*s == 0 || *s == ' '))
				x->size_max = v;
		}
	} else if (str_eq_nocase(p, k, "8BITMIME")) {
		x->eightbit = true;
	} else if (str_eq_nocase(p, k, "SMTPUTF8")) {
		x->smtputf8 = true;
	} else if (str_eq_nocase(p, k, "DSN")) {
		x->dsn = true;
	} else if (str_eq_nocase(p, k, "STARTTLS")) {
		x->starttls = true;
	} else if (str_eq_nocase(p, k, "AUTH")) {
		size_t i = 0;
		while (i < alen) {
			while (i < alen && arg[i] == ' ')
				i++;
			size_t s = i;
			while (i < alen && arg[i] != ' ')
				i++;
			if (str_eq_nocase(arg + s, i - s, "PLAIN"))
				x->auth_plain = true;
			else if (str_eq_nocase(arg + s, i - s, "LOGIN"))
				x->auth_login = true;
		}
	}
}

/* ---- message ------------------------------------------------------------ */

static void txn_finish_failed(struct smtpc *c)
{
	emit_result(c);
	if (c->mail_ok) {
		/* A server may keep the accepted MAIL after refusing DATA; the
		 * next MAIL would be a nested one. */
		send_str(c, "RSET\r\n");
		set_state(c, ST_RSET);
	} else {
		become_ready(c);
	}
}

static void send_cmd(struct smtpc *c, size_t i)
{
	send_bytes(c, buf_ptr(&c->cmds) + c->cmd_off[i], c->cmd_off[i + 1] - c->cmd_off[i]);
}

static const struct smtpc_reply *cur_reply(struct smtpc *c, struct smtpc_reply *tmp)
{
	const char *t = buf_cstr(&c->r_text);
	tmp->code = c->r_code;
	memcpy(tmp->status, c->r_status, sizeof(tmp->status));
	tmp->text = (char *)(t ? t : "");
	tmp->local = false;
	tmp->dsn = false;
	tmp->stage = SMTPC_STAGE_NONE;
	return tmp;
}

/* RFC 5321 4.5.3.1.10: a 552 to RCPT is how old servers say "too many
 * recipients", and clients should take it as temporary.  The server's
 * text is kept; the code and the enhanced status class become 4. */
static void rcpt_552_as_452(struct smtpc_reply *r)
{
	if (r->code != 552)
		return;
	r->code = 452;
	if (r->status[0] == '5' && r->status[1] == '.')
		r->status[0] = '4';
}

static void txn_reply(struct smtpc *c)
{
	struct smtpc_reply tmp;
	const struct smtpc_reply *r = cur_reply(c, &tmp);
	size_t n = c->n_rcpts;
	bool ok = r->code / 100 == 2;
	size_t i = c->idx++;

	if (i == 0) {
		c->mail_ok = ok;
		if (!ok) {
			tmp.stage = SMTPC_STAGE_MAIL;
			for (size_t k = 0; k < n; k++)
				reply_copy(&c->res[k], r);
			if (!c->pipelined) {
				emit_result(c);
				become_ready(c);
				return;
			}
		} else if (!c->pipelined) {
			send_cmd(c, 1);
		}
		return;
	}
	if (i <= n) {
		if (c->mail_ok) {
			tmp.stage = SMTPC_STAGE_RCPT;
			reply_copy(&c->res[i - 1], r);
			c->accepted[i - 1] = ok;
			if (ok)
				c->n_accepted++;
			else
				rcpt_552_as_452(&c->res[i - 1]);
		}
		if (!c->pipelined) {
			if (i < n)
				send_cmd(c, i + 1);
			else if (c->n_accepted > 0)
				send_cmd(c, n + 1);
			else
				txn_finish_failed(c);
		}
		return;
	}
	/* DATA */
	if (r->code == 354) {
		if (c->mail_ok && c->n_accepted > 0) {
			set_state(c, ST_BODY);
			push_if_open(c, SMTPC_BODY);
			return;
		}
		/* RFC 2920 3.1: a broken server said go ahead with nobody to
		 * deliver to: send an empty message and ignore its fate. */
		emit_result(c);
		send_str(c, ".\r\n");
		set_state(c, ST_NULLDOT);
		return;
	}
	tmp.stage = SMTPC_STAGE_DATA;
	if (c->mail_ok)
		for (size_t k = 0; k < n; k++)
			if (c->accepted[k])
				reply_copy(&c->res[k], r);
	txn_finish_failed(c);
}

static void dot_reply(struct smtpc *c)
{
	struct smtpc_reply tmp;
	const struct smtpc_reply *r = cur_reply(c, &tmp);
	tmp.stage = SMTPC_STAGE_DATA;
	if (!c->lmtp) {
		for (size_t k = 0; k < c->n_rcpts; k++)
			if (c->accepted[k])
				reply_copy(&c->res[k], r);
		c->dot_got = c->n_accepted;
	} else {
		size_t seen = 0;
		for (size_t k = 0; k < c->n_rcpts; k++) {
			if (!c->accepted[k])
				continue;
			if (seen++ == c->dot_got) {
				reply_copy(&c->res[k], r);
				break;
			}
		}
		c->dot_got++;
	}
	if (c->dot_got >= c->n_accepted) {
		emit_result(c);
		become_ready(c);
	}
}

/* LMTP recipients already answered are delivered: report them even when
 * the connection dies before the rest, or they would be sent twice. */
static void dot_lost(struct smtpc *c, int code, const char *status, const char *text,
		     bool local)
{
	if (c->st != ST_DOT || !c->lmtp || c->dot_got == 0)
		return;
	size_t seen = 0;
	for (size_t k = 0; k < c->n_rcpts; k++)
		if (c->accepted[k] && seen++ >= c->dot_got) {
			reply_set(&c->res[k], code, status, text);
			c->res[k].local = local;
			c->res[k].stage = SMTPC_STAGE_DATA;
		}
	emit_result(c);
}

/* ---- reply dispatch ----------------------------------------------------- */

static bool is_ok(int code)
{
	return code / 100 == 2;
}

static void dispatch(struct smtpc *c)
{
	int code = c->r_code;
	if (code == 421 && c->st != ST_QUIT) {
		struct smtpc_reply tmp;
		const struct smtpc_reply *r = cur_reply(c, &tmp);
		dot_lost(c, r->code, r->status, r->text, false);
		close_with_reply(c, false);
		return;
	}
	switch (c->st) {
	case ST_GREETING:
		if (code == 220)
			send_hello(c);
		else
			close_with_reply(c, true);
		break;
	case ST_EHLO:
		if (is_ok(code)) {
			c->ext = c->ext_new;
			after_hello(c);
		} else if (code / 100 == 5 && !c->lmtp) {
			send_str(c, "HELO ");
			send_str(c, c->helo);
			send_str(c, "\r\n");
			set_state(c, ST_HELO);
		} else {
			close_with_reply(c, true);
		}
		break;
	case ST_HELO:
		if (is_ok(code)) {
			memset(&c->ext, 0, sizeof(c->ext));
			after_hello(c);
		} else {
			close_with_reply(c, true);
		}
		break;
	case ST_STARTTLS:
		if (code == 220) {
			set_state(c, ST_TLS);
			push_if_open(c, SMTPC_STARTTLS);
		} else if (c->tls_mode == SMTPC_TLS_MUST) {
			close_with_reply(c, true);
		} else {
			/* RFC 3207 4: the client may go on in the clear. */
			c->tls_refused = true;
			after_hello(c);
		}
		break;
	case ST_AUTH_PLAIN:
	case ST_AUTH_PLAIN2:
	case ST_AUTH_LOGIN3:
		if (code == 235)
			become_ready(c);
		else if (code == 334 && c->st == ST_AUTH_PLAIN) {
			/* The server ignored the initial response (RFC 4954 4). */
			auth_plain_response(c, NULL);
			set_state(c, ST_AUTH_PLAIN2);
		} else
			close_with_reply(c, true);
		break;
	case ST_AUTH_LOGIN1:
	case ST_AUTH_LOGIN2:
		if (code != 334) {
			close_with_reply(c, true);
		} else if (c->st == ST_AUTH_LOGIN1) {
			auth_send_b64(c, NULL, c->user, strlen(c->user));
			set_state(c, ST_AUTH_LOGIN2);
		} else {
			auth_send_b64(c, NULL, c->pass, strlen(c->pass));
			set_state(c, ST_AUTH_LOGIN3);
		}
		break;
	case ST_TXN:
		txn_reply(c);
		break;
	case ST_DOT:
		dot_reply(c);
		break;
	case ST_NULLDOT:
	case ST_RSET:
		become_ready(c);
		break;
	case ST_QUIT: {
		struct smtpc_reply tmp;
		const struct smtpc_reply *r = cur_reply(c, &tmp);
		if (code == 221) {
			do_close(c, 221, r->status, r->text, false);
			c->close_r.local = false;
		} else
			do_close(c, 221, "2.0.0", "221 2.0.0 session ended", false);
		break;
	}
	case ST_READY:
	case ST_BODY:
	case ST_TLS:
	case ST_CLOSED:
		protocol_error(c, "reply nobody asked for");
		break;
	}
}

/* ---- reply parser -------------------------------------------------------- */

/* class.subject.detail after the code, class equal to the reply's class
 * (RFC 3463, RFC 2034 3). */
static void parse_status(const char *p, size_t n, int code, char out[16])
{
	out[0] = 0;
	if (n < 5 || p[0] != '0' + code / 100 || p[1] != '.')
		return;
	size_t i = 2, d1 = 0, d2 = 0;
	while (i < n && p[i] >= '0' && p[i] <= '9' && d1 < 3)
		i++, d1++;
	if (d1 == 0 || i >= n || p[i] != '.')
		return;
	i++;
	while (i < n && p[i] >= '0' && p[i] <= '9' && d2 < 3)
		i++, d2++;
	if (d2 == 0 || (i < n && p[i] != ' '))
		return;
	memcpy(out, p, i);
	out[i] = 0;
}

/* Returns false when the session ended. */
static bool parse_line(struct smtpc *c, const char *p, size_t n)
{
	if (n > 0 && p[n - 1] == '\r')
		n--;
	if (n > c->line_max) {
		protocol_error(c, "reply line too long");
		return false;
	}
	if (memchr(p, '\r', n) || memchr(p, 0, n)) {
		protocol_error(c, "control characters in a reply");
		return false;
	}
	if (n < 3 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' || p[2] < '0' ||
	    p[2] > '9' || (n > 3 && p[3] != ' ' && p[3] != '-')) {
		protocol_error(c, "malformed reply line");
		return false;
	}
	int code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	bool more = n > 3 && p[3] == '-';
	const char *t = n > 4 ? p + 4 : p + n;
	size_t tn = n > 4 ? n - 4 : 0;
	if (c->r_lines == 0) {
		c->r_code = code;
		buf_reset(&c->r_text);
		parse_status(t, tn, code, c->r_status);
		memset(&c->ext_new, 0, sizeof(c->ext_new));
	} else if (code != c->r_code) {
		protocol_error(c, "reply code changes inside a multiline reply");
		return false;
	}
	if (++c->r_lines > c->lines_max) {
		protocol_error(c, "too many reply lines");
		return false;
	}
	if (c->r_lines > 1 && buf_append(&c->r_text, " / ", 3) < 0) {
		protocol_error(c, "reply too long");
		return false;
	}
	uint8_t *w = buf_reserve(&c->r_text, n);
	if (!w) {
		protocol_error(c, "reply too long");
		return false;
	}
	/* The text ends up in logs and reports: no control characters. */
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		w[i] = (ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch;
	}
	if (n > 3)
		w[3] = ' ';
	buf_commit(&c->r_text, n);
	if (c->st == ST_EHLO && c->r_lines > 1)
		ext_parse(&c->ext_new, t, tn);
	if (more)
		return true;
	dispatch(c);
	c->r_lines = 0;
	return c->st != ST_CLOSED;
}

void smtpc_feed(struct smtpc *c, const char *p, size_t n)
{
	event_begin(c);
	while (n > 0) {
		if (c->st == ST_CLOSED || c->st == ST_TLS) {
			/* After the 220 to STARTTLS, anything still in the clear
			 * was not protected by the handshake (RFC 3207 6). */
			buf_reset(&c->line);
			return;
		}
		const char *lf = memchr(p, '\n', n);
		size_t seg = lf ? (size_t)(lf - p) : n;
		if (buf_len(&c->line) > 0 || !lf) {
			if (buf_append(&c->line, p, seg) < 0) {
				protocol_error(c, "reply line too long");
				return;
			}
		}
		if (!lf)
			return;
		bool alive;
		if (buf_len(&c->line) > 0) {
			alive = parse_line(c, (const char *)buf_ptr(&c->line), buf_len(&c->line));
			buf_reset(&c->line);
		} else {
			alive = parse_line(c, p, seg);
		}
		p += seg + 1;
		n -= seg + 1;
		if (!alive)
			return;
	}
}

/* ---- events -------------------------------------------------------------- */

struct smtpc *smtpc_new(const struct smtpc_opts *o)
{
	if (!o || !o->helo || !o->helo[0] || has_crlf(o->helo) || has_crlf(o->auth_user))
		return NULL;
	if (o->auth_user && !o->auth_pass)
		return NULL;
	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->lmtp = o->lmtp;
	c->tls_mode = o->tls;
	c->tls = o->tls_active;
	c->helo = str_dup(o->helo);
	if (o->auth_user) {
		c->user = str_dup(o->auth_user);
		c->pass = str_dup(o->auth_pass);
	}
	c->line_max = o->reply_line_max ? o->reply_line_max : SMTPC_DEF_LINE_MAX;
	if (c->line_max < 3)
		c->line_max = 3;
	c->lines_max = o->reply_lines_max ? o->reply_lines_max : SMTPC_DEF_LINES_MAX;
	buf_init(&c->line, c->line_max + 1);
	size_t tmax = c->lines_max > SIZE_MAX / (c->line_max + 3)
			      ? SIZE_MAX / 2
			      : c->lines_max * (c->line_max + 3);
	buf_init(&c->r_text, tmax);
	buf_init(&c->out, SMTPC_OUT_MAX);
	buf_init(&c->cmds, SMTPC_OUT_MAX);
	c->st = ST_GREETING;
	return c;
}

void smtpc_free(struct smtpc *c)
{
	if (!c)
		return;
	msg_free(c);
	if (c->out.data)
		wipe(c->out.data, c->out.cap);
	buf_free(&c->out);
	buf_free(&c->cmds);
	buf_free(&c->line);
	buf_free(&c->r_text);
	free(c->acts);
	reply_clear(&c->close_r);
	free(c->helo);
	free_secret(c->user);
	free_secret(c->pass);
	free(c);
}

void smtpc_tls_done(struct smtpc *c, bool ok)
{
	event_begin(c);
	if (c->st != ST_TLS)
		return;
	if (!ok) {
		do_close(c, 454, "4.7.5", "454 4.7.5 TLS handshake failed", false);
		return;
	}
	c->tls = true;
	buf_reset(&c->line);
	c->r_lines = 0;
	/* RFC 3207 4.2: what the server said in the clear is forgotten. */
	send_hello(c);
}

void smtpc_body_done(struct smtpc *c)
{
	event_begin(c);
	if (c->st != ST_BODY)
		return;
	set_state(c, ST_DOT);
	c->dot_got = 0;
}

int smtpc_send_msg(struct smtpc *c, const struct smtpc_msg *m, struct err *e)
{
	event_begin(c);
	if (c->st != ST_READY)
		return err_set(e, "SMTP client: not ready for a message");
	if (!m || !m->sender || m->n_rcpts == 0 || !m->rcpts)
		return err_set(e, "SMTP client: message without sender or recipients");
	if (has_crlf(m->sender) || has_crlf(m->envid))
		return err_set(e, "SMTP client: CR or LF in the sender or ENVID");
	for (size_t i = 0; i < m->n_rcpts; i++)
		if (!m->rcpts[i].addr || has_crlf(m->rcpts[i].addr) || has_crlf(m->rcpts[i].orcpt))
			return err_set(e, "SMTP client: CR or LF in a recipient");

	msg_free(c);
	size_t n = m->n_rcpts;
	c->n_rcpts = n;
	c->res = xcalloc(n, sizeof(*c->res));
	c->accepted = xcalloc(n, sizeof(*c->accepted));
	c->cmd_off = xcalloc(n + 3, sizeof(*c->cmd_off));
	c->mail_ok = false;
	c->n_accepted = 0;
	c->idx = 0;
	c->dot_got = 0;

	if (c->ext.size && c->ext.size_max && m->size > c->ext.size_max) {
		char t[128];
		snprintf(t, sizeof(t), "552 5.3.4 message size %llu exceeds the server's limit %llu",
			 (unsigned long long)m->size, (unsigned long long)c->ext.size_max);
		for (size_t i = 0; i < n; i++)
			reply_set(&c->res[i], 552, "5.3.4", t);
		emit_result(c);
		become_ready(c);
		return 0;
	}
	if (m->smtputf8 && !c->ext.smtputf8) {
		for (size_t i = 0; i < n; i++)
			reply_set(&c->res[i], 553, "5.6.7",
				  "553 5.6.7 the message needs SMTPUTF8, which the server lacks");
		emit_result(c);
		become_ready(c);
		return 0;
	}
	/* RFC 6152 3: 8-bit content goes only to a server that offers
	 * 8BITMIME; sluice does not convert it to 7 bit, so it is returned. */
	if (m->eightbit && !c->ext.eightbit) {
		for (size_t i = 0; i < n; i++)
			reply_set(&c->res[i], 554, "5.6.3",
				  "554 5.6.3 the message has 8-bit content and the server does not "
				  "offer 8BITMIME; conversion to 7 bit is not supported");
		emit_result(c);
		become_ready(c);
		return 0;
	}

	struct buf *b = &c->cmds;
	buf_reset(b);
	int rc = 0;
	rc |= buf_printf(b, "MAIL FROM:<%s>", m->sender);
	if (c->ext.size)
		rc |= buf_printf(b, " SIZE=%llu", (unsigned long long)m->size);
	if (m->eightbit && c->ext.eightbit)
		rc |= buf_puts(b, " BODY=8BITMIME");
	if (m->smtputf8 && c->ext.smtputf8)
		rc |= buf_puts(b, " SMTPUTF8");
	if (c->ext.dsn) {
		if (m->ret == SMTP_RET_FULL)
			rc |= buf_puts(b, " RET=FULL");
		else if (m->ret == SMTP_RET_HDRS)
			rc |= buf_puts(b, " RET=HDRS");
		if (m->envid && m->envid[0])
			rc |= buf_printf(b, " ENVID=%s", m->envid);
	}
	rc |= buf_puts(b, "\r\n");
	for (size_t i = 0; i < n; i++) {
		const struct smtpc_rcpt *r = &m->rcpts[i];
		c->cmd_off[i + 1] = buf_len(b);
		rc |= buf_printf(b, "RCPT TO:<%s>", r->addr);
		if (c->ext.dsn) {
			if (r->notify & SMTP_NOTIFY_NEVER) {
				rc |= buf_puts(b, " NOTIFY=NEVER");
			} else if (r->notify & (SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE |
						SMTP_NOTIFY_DELAY)) {
				const char *sep = " NOTIFY=";
				static const struct {
					unsigned bit;
					const char *name;
				} nt[] = { { SMTP_NOTIFY_SUCCESS, "SUCCESS" },
					   { SMTP_NOTIFY_FAILURE, "FAILURE" },
					   { SMTP_NOTIFY_DELAY, "DELAY" } };
				for (size_t k = 0; k < 3; k++)
					if (r->notify & nt[k].bit) {
						rc |= buf_puts(b, sep);
						rc |= buf_puts(b, nt[k].name);
						sep = ",";
					}
			}
			if (r->orcpt && r->orcpt[0])
				rc |= buf_printf(b, " ORCPT=%s", r->orcpt);
		}
		rc |= buf_puts(b, "\r\n");
	}
	c->cmd_off[n + 1] = buf_len(b);
	rc |= buf_puts(b, "DATA\r\n");
	c->cmd_off[n + 2] = buf_len(b);
	if (rc != 0) {
		msg_free(c);
		return err_set(e, "SMTP client: commands too long");
	}

	set_state(c, ST_TXN);
	c->pipelined = c->ext.pipelining;
	if (c->pipelined)
		send_bytes(c, buf_ptr(b), buf_len(b));
	else
		send_cmd(c, 0);
	return 0;
}

void smtpc_quit(struct smtpc *c)
{
	event_begin(c);
	switch (c->st) {
	case ST_CLOSED:
	case ST_QUIT:
		return;
	case ST_BODY:
	case ST_TLS:
		/* QUIT cannot be written in the middle of the body or of a
		 * handshake. */
		do_close(c, 421, "4.3.0", "421 4.3.0 session ended by the client", false);
		return;
	default:
		send_str(c, "QUIT\r\n");
		set_state(c, ST_QUIT);
		return;
	}
}

static void lost(struct smtpc *c, const char *text)
{
	if (c->st == ST_CLOSED)
		return;
	if (c->st == ST_QUIT) {
		do_close(c, 221, "2.0.0", "221 2.0.0 session ended", false);
		return;
	}
	dot_lost(c, 421, "4.4.2", text, true);
	do_close(c, 421, "4.4.2", text, false);
}

void smtpc_eof(struct smtpc *c)
{
	event_begin(c);
	lost(c, "421 4.4.2 connection lost");
}

void smtpc_timeout(struct smtpc *c)
{
	event_begin(c);
	lost(c, "421 4.4.2 timeout waiting for the server");
}

void smtpc_next(struct smtpc *c, struct smtpc_action *a)
{
	memset(a, 0, sizeof(*a));
	if (c->head >= c->n_acts) {
		a->type = SMTPC_NONE;
		return;
	}
	const struct smtpc_act *x = &c->acts[c->head++];
	a->type = x->type;
	if (x->type == SMTPC_SEND) {
		a->data = (const char *)buf_ptr(&c->out) + x->off;
		a->len = x->len;
	}
	a->replies = x->replies;
	a->n = x->n;
	a->reply = x->reply;
}

bool smtpc_tls_on(const struct smtpc *c)
{
	return c->tls;
}

/* ---- dot-stuffing ----------------------------------------------------------- */

void smtpc_dot_init(struct smtpc_dot *d)
{
	d->at_line_start = true;
	d->last_cr = false;
	d->any = false;
}

/* A bare LF is written as CRLF: the message is CRLF text already, and a
 * lone LF before a '.' is how end-of-data gets smuggled past servers
 * that accept bare line ends. */
int smtpc_dot_stuff(struct smtpc_dot *d, const char *p, size_t n, struct buf *out)
{
	size_t run = 0; /* start of bytes not yet copied */
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (d->at_line_start && ch == '.') {
			if (buf_append(out, p + run, i - run) < 0 || buf_append(out, ".", 1) < 0)
				return -1;
			run = i;
		} else if (ch == '\n' && !d->last_cr) {
			if (buf_append(out, p + run, i - run) < 0 || buf_append(out, "\r", 1) < 0)
				return -1;
			run = i;
		}
		d->at_line_start = ch == '\n';
		d->last_cr = ch == '\r';
		d->any = true;
	}
	return buf_append(out, p + run, n - run);
}

int smtpc_dot_end(struct smtpc_dot *d, struct buf *out)
{
	if (d->any && !d->at_line_start) {
		if (buf_append(out, "\r\n.\r\n", 5) < 0)
			return -1;
	} else if (buf_append(out, ".\r\n", 3) < 0) {
		return -1;
	}
	d->at_line_start = true;
	d->last_cr = false;
	return 0;
}
