/*
 * The SMTP session state machine: bytes in, replies and actions out.
 *
 * Input is framed strictly on CRLF; a bare CR or LF never ends a command
 * or a message (SMTP smuggling).  Message data is scanned in place in the
 * input buffer: dot-unstuffing shifts bytes down inside that buffer so that
 * each feed hands out one view of clean message bytes in the common case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

/* Stop executing commands while this much output waits to be written, so
 * that a pipelining client that never reads cannot grow our memory. */
#define SMTP_OUT_HIGH_WATER (64 * 1024)
/* Input that may be buffered beyond one command line. */
#define SMTP_IN_SLACK (256 * 1024)
/* Storage for the refusal log lines of one event call. */
#define SMTP_LOG_MAX (4 * 1024 * 1024)
/* A command line copied into a refusal log is cut here. */
#define SMTP_LOG_CMD_MAX 512

enum sess_state {
	ST_CMD,
	ST_DISCARD_LINE,  /* after "line too long": drop up to the next LF */
	ST_DATA,
	ST_BDAT,
	ST_BDAT_SKIP,     /* refused BDAT: consume its bytes, then reply */
	ST_WAIT_COMMIT,
	ST_WAIT_TLS,
	ST_CLOSED,
};

enum body_bad { BAD_NONE = 0, BAD_BARE, BAD_LINE, BAD_HEADER, BAD_SIZE };

/* Scanner position inside message data. */
enum data_state {
	D_BOL,    /* just after CRLF (or the DATA line) */
	D_MID,
	D_CR,     /* after a CR that was kept */
	D_DOT,    /* after a leading dot (removed) */
	D_DOTCR,  /* after a leading dot and a CR (held back) */
};

enum skip_why { SKIP_TLS, SKIP_NO_HELO, SKIP_NO_MAIL, SKIP_NO_RCPT };

struct sess_act {
	struct smtp_action a;
	size_t cmd_off;   /* LOG_REFUSED: offsets into logb, resolved on read */
	size_t reply_off;
};

/* An envelope an action of this event call still points to, kept until
 * the next event call although the transaction was reset meanwhile. */
struct retired_env {
	struct retired_env *next;
	struct smtp_envelope env;
};

struct smtp_session {
	const struct smtp_policy *pol;
	const struct smtp_client *cli;
	struct buf in;
	struct buf out;
	struct buf logb;
	struct sess_act *acts;
	size_t n_acts, cap_acts, next_act;
	struct smtp_action cur;
	struct smtp_envelope env;
	struct retired_env *retired;
	bool env_ref;            /* an action of this event call points to env */
	size_t rcpt_cap;
	size_t n_errors;
	uint64_t bdat_left;
	uint64_t bdat_chunk;
	uint64_t hdr_bytes;
	size_t line_len;
	uint8_t state, dstate, bad, skip_why;
	bool helo_done;
	bool in_tls;
	bool bdat_used;
	bool bdat_last;
	bool body_open;
	bool abort_sent;
	bool in_header;
	bool shutdown_pending;
	bool closing;
};

/* ---- output and actions ---------------------------------------------- */

static void force_close(struct smtp_session *s);

static void push_act(struct smtp_session *s, enum smtp_action_type t, const uint8_t *d,
		     size_t len)
{
	if (s->n_acts == s->cap_acts) {
		size_t ncap = s->cap_acts ? s->cap_acts * 2 : 8;
		s->acts = xrealloc(s->acts, ncap * sizeof(*s->acts));
		s->cap_acts = ncap;
	}
	struct sess_act *a = &s->acts[s->n_acts++];
	memset(a, 0, sizeof(*a));
	a->a.type = t;
	a->a.data = d;
	a->a.len = len;
	if (t == SMTP_ACT_BODY_BEGIN || t == SMTP_ACT_COMMIT) {
		a->a.env = &s->env;
		s->env_ref = true;
	}
}

static void put_line(struct smtp_session *s, const void *p, size_t n)
{
	if (buf_append(&s->out, p, n) < 0 || buf_append(&s->out, "\r\n", 2) < 0)
		force_close(s);
}

static void reply(struct smtp_session *s, const char *fmt, ...) UTIL_PRINTF(2, 3);
static void reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	if (r < 0 || buf_append(&s->out, "\r\n", 2) < 0)
		force_close(s);
}

static void set_closing(struct smtp_session *s)
{
	if (s->closing)
		return;
	s->closing = true;
	s->state = ST_CLOSED;
	push_act(s, SMTP_ACT_CLOSE, NULL, 0);
}

static void body_abort(struct smtp_session *s)
{
	if (s->body_open) {
		push_act(s, SMTP_ACT_BODY_ABORT, NULL, 0);
		s->body_open = false;
		s->abort_sent = true;
	}
}

/* Last resort when our own output cannot be stored: drop the connection. */
static void force_close(struct smtp_session *s)
{
	body_abort(s);
	set_closing(s);
}

/*
 * A 4xx/5xx reply to a command: counted against errors_max (the reply is
 * replaced by 421 past it) and logged with the command line.
 */
static void refuse(struct smtp_session *s, const void *cmd, size_t cmdlen, const char *fmt, ...)
	UTIL_PRINTF(4, 5);
static void refuse(struct smtp_session *s, const void *cmd, size_t cmdlen, const char *fmt, ...)
{
	if (cmdlen > SMTP_LOG_CMD_MAX)
		cmdlen = SMTP_LOG_CMD_MAX;
	size_t base = buf_len(&s->logb);
	size_t cmd_off = base;
	if (buf_append(&s->logb, cmd, cmdlen) < 0)
		cmdlen = 0;
	size_t reply_off = buf_len(&s->logb);
	va_list ap;
	va_start(ap, fmt);
	int r = buf_vprintf(&s->logb, fmt, ap);
	va_end(ap);
	bool too_many = ++s->n_errors > s->pol->errors_max;
	if (too_many) {
		s->logb.len = s->logb.off + reply_off;
		r = buf_printf(&s->logb, "421 4.7.0 %s Too many errors", s->pol->hostname);
	}
	if (r < 0) {
		s->logb.len = s->logb.off + base;
		force_close(s);
		return;
	}
	size_t reply_len = buf_len(&s->logb) - reply_off;
	put_line(s, buf_ptr(&s->logb) + reply_off, reply_len);
	push_act(s, SMTP_ACT_LOG_REFUSED, NULL, cmdlen);
	struct sess_act *a = &s->acts[s->n_acts - 1];
	a->cmd_off = cmd_off;
	a->reply_off = reply_off;
	a->a.reply_len = reply_len;
	if (too_many) {
		body_abort(s);
		set_closing(s);
	}
}

/* ---- transaction ----------------------------------------------------- */

static void free_rcpts(struct smtp_session *s)
{
	for (size_t i = 0; i < s->env.n_rcpts; i++) {
		free(s->env.rcpts[i].addr);
		free(s->env.rcpts[i].orcpt);
	}
	free(s->env.rcpts);
	s->env.rcpts = NULL;
	s->env.n_rcpts = 0;
	s->rcpt_cap = 0;
}

static void free_env(struct smtp_envelope *e)
{
	free(e->sender);
	free(e->envid);
	for (size_t i = 0; i < e->n_rcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].orcpt);
	}
	free(e->rcpts);
}

static void free_retired(struct smtp_session *s)
{
	while (s->retired) {
		struct retired_env *r = s->retired;
		s->retired = r->next;
		free(r->env.helo);
		free_env(&r->env);
		free(r);
	}
}

/* Hands the envelope over to the actions that point to it. */
static void retire_env(struct smtp_session *s)
{
	struct retired_env *r = xcalloc(1, sizeof(*r));
	r->env = s->env;
	r->env.helo = s->env.helo ? str_dup(s->env.helo) : NULL;
	r->next = s->retired;
	s->retired = r;
	for (size_t i = 0; i < s->n_acts; i++)
		if (s->acts[i].a.env == &s->env)
			s->acts[i].a.env = &r->env;
	s->env.sender = NULL;
	s->env.envid = NULL;
	s->env.rcpts = NULL;
	s->env.n_rcpts = 0;
	s->rcpt_cap = 0;
	s->env_ref = false;
}

static void reset_tx(struct smtp_session *s)
{
	body_abort(s);
	if (s->env_ref)
		retire_env(s);
	free(s->env.sender);
	s->env.sender = NULL;
	free(s->env.envid);
	s->env.envid = NULL;
	free_rcpts(s);
	s->env.size_declared = 0;
	s->env.body = SMTP_BODY_UNSPEC;
	s->env.smtputf8 = false;
	s->env.ret = SMTP_RET_UNSPEC;
	s->env.size = 0;
	s->bdat_used = false;
	s->bdat_last = false;
	s->abort_sent = false;
	s->bad = BAD_NONE;
}

static void forget_helo(struct smtp_session *s)
{
	free(s->env.helo);
	s->env.helo = NULL;
	s->env.esmtp = false;
	s->helo_done = false;
}

/* ---- message data scanner -------------------------------------------- */

struct scan {
	uint8_t *w; /* where the next kept byte goes (<= the read position) */
	uint8_t *v; /* start of the view not yet handed out */
};

static void mark_bad(struct smtp_session *s, enum body_bad why)
{
	if (s->bad == BAD_NONE)
		s->bad = (uint8_t)why;
}

static void scan_flush(struct smtp_session *s, struct scan *c)
{
	if (c->w > c->v)
		push_act(s, SMTP_ACT_BODY_DATA, c->v, (size_t)(c->w - c->v));
	c->v = c->w;
}

static size_t room(uint64_t used, uint64_t max)
{
	return used >= max ? 0 : (size_t)(max - used);
}

/*
 * Keeps len message bytes (text: line content, counted against the line
 * limit).  When a limit is crossed, exactly the bytes up to it are written,
 * so that what is handed out never depends on how the input was split.
 */
static void keep(struct smtp_session *s, struct scan *c, const uint8_t *src, size_t len,
		 bool text)
{
	if (len == 0)
		return;
	const struct smtp_policy *p = s->pol;
	size_t ok = len;
	enum body_bad why = BAD_NONE;
	if (text && s->line_len + len > p->data_line_max) {
		ok = room(s->line_len, p->data_line_max);
		why = BAD_LINE;
	}
	if (s->in_header && s->hdr_bytes + len > p->header_max) {
		size_t r = room(s->hdr_bytes, p->header_max);
		if (why == BAD_NONE || r < ok) {
			ok = r;
			why = BAD_HEADER;
		}
	}
	bool over = s->env.size + len > p->message_max;
	if (over) {
		size_t r = room(s->env.size, p->message_max);
		if (why == BAD_NONE || r < ok) {
			ok = r;
			why = BAD_SIZE;
		}
	}
	if (text)
		s->line_len += len;
	if (s->in_header)
		s->hdr_bytes += len;
	s->env.size += len;
	if (s->bad == BAD_NONE && s->body_open && ok > 0) {
		if (c->w != src)
			memmove(c->w, src, ok);
		c->w += ok;
	}
	if (why != BAD_NONE)
		mark_bad(s, why);
	if (over && !s->abort_sent) {
		/* Stop writing at once: the rest is only scanned for its end. */
		scan_flush(s, c);
		body_abort(s);
		s->abort_sent = true;
	}
}

static void line_end(struct smtp_session *s)
{
	if (s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->dstate = D_BOL;
}

/*
 * Scans p[0..n) of message data.  dot: DATA (unstuffing, ends at
 * CRLF.CRLF) rather than BDAT.  Returns the bytes consumed; *ended is set
 * when the DATA terminator was consumed.
 */
static size_t scan(struct smtp_session *s, uint8_t *p, size_t n, bool dot, bool *ended)
{
	struct scan c = { p, p };
	uint8_t *r = p, *e = p + n;
	*ended = false;
	while (r < e) {
		switch (s->dstate) {
		case D_BOL:
			if (dot && *r == '.') {
				r++;
				s->dstate = D_DOT;
			} else {
				s->dstate = D_MID;
			}
			continue;
		case D_DOT:
			if (*r == '\r') {
				r++;
				s->dstate = D_DOTCR;
			} else {
				s->dstate = D_MID;
			}
			continue;
		case D_DOTCR:
			if (*r == '\n') {
				r++;
				*ended = true;
				goto out;
			}
			mark_bad(s, BAD_BARE);
			s->dstate = D_MID;
			continue;
		case D_CR:
			if (*r == '\n') {
				keep(s, &c, r, 1, false);
				r++;
				line_end(s);
			} else {
				mark_bad(s, BAD_BARE);
				s->dstate = D_MID;
			}
			continue;
		default:
			break;
		}
		/* D_MID: the common path, a run of line content. */
		size_t left = (size_t)(e - r);
		uint8_t *lf = memchr(r, '\n', left);
		size_t lim = lf ? (size_t)(lf - r) : left;
		uint8_t *cr = memchr(r, '\r', lim);
		uint8_t *q = cr ? cr : (lf ? lf : e);
		keep(s, &c, r, (size_t)(q - r), true);
		r = q;
		if (r == e)
			break;
		if (*r == '\r') {
			keep(s, &c, r, 1, false);
			r++;
			if (r < e && *r == '\n') {
				keep(s, &c, r, 1, false);
				r++;
				line_end(s);
			} else {
				s->dstate = D_CR;
			}
		} else {
			/* A bare LF is data, never a line end. */
			mark_bad(s, BAD_BARE);
			keep(s, &c, r, 1, false);
			r++;
		}
	}
out:
	scan_flush(s, &c);
	return (size_t)(r - p);
}

static void body_start(struct smtp_session *s)
{
	s->env.size = 0;
	s->dstate = D_BOL;
	s->line_len = 0;
	s->in_header = true;
	s->hdr_bytes = 0;
	s->bad = BAD_NONE;
	s->abort_sent = false;
	s->body_open = true;
	push_act(s, SMTP_ACT_BODY_BEGIN, NULL, 0);
}

/* The message ended badly: discard it and say why. */
static void body_refuse(struct smtp_session *s, const char *cmd)
{
	body_abort(s);
	switch (s->bad) {
	case BAD_LINE:
		refuse(s, cmd, strlen(cmd), "550 5.6.0 Message refused: line longer than %zu octets",
		       s->pol->data_line_max);
		break;
	case BAD_HEADER:
		refuse(s, cmd, strlen(cmd), "552 5.3.4 Message header too large");
		break;
	case BAD_SIZE:
		refuse(s, cmd, strlen(cmd),
		       "552 5.3.4 Message size exceeds fixed maximum message size");
		break;
	default:
		refuse(s, cmd, strlen(cmd),
		       "550 5.6.0 Message refused: bare CR or LF in message data");
		break;
	}
	reset_tx(s);
	if (!s->closing)
		s->state = ST_CMD;
}

static void body_commit(struct smtp_session *s)
{
	s->body_open = false;
	push_act(s, SMTP_ACT_COMMIT, NULL, 0);
	s->state = ST_WAIT_COMMIT;
}

static bool step_data(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (n == 0)
		return false;
	bool ended;
	size_t used = scan(s, s->in.data + s->in.off, n, true, &ended);
	buf_consume(&s->in, used);
	if (!ended)
		return false;
	if (s->bad != BAD_NONE)
		body_refuse(s, "DATA");
	else
		body_commit(s);
	return true;
}

static bool step_bdat(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (s->bdat_left > 0) {
		if (n == 0)
			return false;
		if (n > s->bdat_left)
			n = (size_t)s->bdat_left;
		bool ended;
		size_t used = scan(s, s->in.data + s->in.off, n, false, &ended);
		buf_consume(&s->in, used);
		s->bdat_left -= used;
		if (s->bdat_left > 0)
			return false;
	}
	if (s->bdat_last && s->dstate == D_CR)
		mark_bad(s, BAD_BARE); /* a CR that no LF will ever follow */
	if (s->bad != BAD_NONE) {
		body_refuse(s, "BDAT");
	} else if (s->bdat_last) {
		body_commit(s);
	} else {
		s->state = ST_CMD;
		reply(s, "250 2.0.0 %llu octets received",
		      (unsigned long long)s->bdat_chunk);
	}
	return true;
}

static bool step_bdat_skip(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (s->bdat_left > 0) {
		if (n == 0)
			return false;
		if (n > s->bdat_left)
			n = (size_t)s->bdat_left;
		buf_consume(&s->in, n);
		s->bdat_left -= n;
		if (s->bdat_left > 0)
			return false;
	}
	s->state = ST_CMD;
	switch (s->skip_why) {
	case SKIP_TLS:
		refuse(s, "BDAT", 4, "530 5.7.0 Must issue a STARTTLS command first");
		break;
	case SKIP_NO_HELO:
		refuse(s, "BDAT", 4, "503 5.5.1 Send HELO/EHLO first");
		break;
	case SKIP_NO_MAIL:
		refuse(s, "BDAT", 4, "503 5.5.1 Need MAIL command");
		break;
	default:
		refuse(s, "BDAT", 4, "554 5.5.1 No valid recipients");
		break;
	}
	return true;
}

/* ---- commands -------------------------------------------------------- */

static bool is_domain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.';
}

/* HELO/EHLO argument: a domain name or an address literal, nothing else. */
static bool helo_arg_ok(const char *p, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	if (p[0] == '[') {
		if (n < 3 || p[n - 1] != ']')
			return false;
		for (size_t i = 1; i < n - 1; i++) {
			unsigned char c = (unsigned char)p[i];
			if (c < 33 || c > 126 || c == '[' || c == ']' || c == '\\')
				return false;
		}
		return true;
	}
	for (size_t i = 0; i < n; i++)
		if (!is_domain_char((unsigned char)p[i]))
			return false;
	return true;
}

static void cmd_helo(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c, bool ehlo)
{
	if (c->arg_len == 0) {
		refuse(s, line, len, "501 5.5.4 %s requires a domain name", ehlo ? "EHLO" : "HELO");
		return;
	}
	if (!helo_arg_ok(c->arg, c->arg_len)) {
		refuse(s, line, len, "501 5.5.4 Invalid domain name");
		return;
	}
	reset_tx(s);
	free(s->env.helo);
	s->env.helo = str_ndup(c->arg, c->arg_len);
	s->env.esmtp = ehlo;
	s->helo_done = true;
	const char *h = s->pol->hostname;
	if (!ehlo) {
		reply(s, "250 %s", h);
		return;
	}
	reply(s, "250-%s Hello %s", h, s->env.helo);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)s->pol->message_max);
	reply(s, "250-8BITMIME");
	reply(s, "250-SMTPUTF8");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-CHUNKING");
	reply(s, "250-DSN");
	if (s->pol->tls_available && !s->in_tls)
		reply(s, "250-STARTTLS");
	reply(s, "250 HELP");
}

/* Skips "KEYWORD:" (case-insensitive) and spaces after it. */
static bool take_prefix(const char **p, size_t *n, const char *kw)
{
	size_t kl = strlen(kw);
	if (!str_has_prefix_nocase(*p, *n, kw))
		return false;
	*p += kl;
	*n -= kl;
	while (*n > 0 && **p == ' ') {
		(*p)++;
		(*n)--;
	}
	return true;
}

/* Decimal digits into *v, saturating at UINT64_MAX; false if not digits. */
static bool parse_u64(const char *p, size_t n, uint64_t *v, bool *overflow)
{
	if (n == 0)
		return false;
	uint64_t x = 0;
	*overflow = false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			x = x * 10 + d;
	}
	*v = *overflow ? UINT64_MAX : x;
	return true;
}

static bool xtext_ok(const char *p, size_t n, size_t max)
{
	if (n > max)
		return false;
	struct buf b;
	buf_init(&b, max + 1);
	bool ok = smtp_xtext_decode(p, n, &b) == 0;
	buf_free(&b);
	return ok;
}

static bool param_is(const struct smtp_param *pa, const char *k)
{
	return str_eq_nocase(pa->key, pa->key_len, k);
}

static bool value_is(const struct smtp_param *pa, const char *v)
{
	return pa->value && str_eq_nocase(pa->value, pa->value_len, v);
}

static void cmd_mail(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c)
{
	if (!s->helo_done) {
		refuse(s, line, len, "503 5.5.1 Send HELO/EHLO first");
		return;
	}
	if (s->env.sender) {
		refuse(s, line, len, "503 5.5.1 Sender already specified");
		return;
	}
	if (s->pol->auth_required && !s->env.auth_user) {
		refuse(s, line, len, "530 5.7.0 Authentication required");
		return;
	}
	const char *p = c->arg;
	size_t n = c->arg_len;
	if (!take_prefix(&p, &n, "FROM:")) {
		refuse(s, line, len, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	struct smtp_path path;
	size_t used = 0;
	enum smtp_path_error pe =
		smtp_parse_path(p, n, SMTP_PATH_ALLOW_NULL | SMTP_PATH_UTF8, &path, &used);
	if (pe == SMTP_PATH_NON_ASCII || pe == SMTP_PATH_BAD_UTF8) {
		refuse(s, line, len, "553 5.6.7 Invalid UTF-8 in sender address");
		return;
	}
	if (pe != SMTP_PATH_OK) {
		refuse(s, line, len, "501 5.1.7 Invalid sender address");
		return;
	}
	if (used < n && p[used] != ' ') {
		refuse(s, line, len, "501 5.1.7 Invalid sender address");
		return;
	}
	struct smtp_param prm[SMTP_MAX_PARAMS];
	size_t np = 0;
	if (smtp_parse_params(p + used, n - used, true, prm, &np) < 0) {
		refuse(s, line, len, "501 5.5.4 Syntax error in parameters");
		return;
	}
	enum { P_SIZE = 1, P_BODY = 2, P_UTF8 = 4, P_RET = 8, P_ENVID = 16, P_AUTH = 32 };
	unsigned seen = 0;
	uint64_t size = 0;
	enum smtp_body body = SMTP_BODY_UNSPEC;
	enum smtp_ret ret = SMTP_RET_UNSPEC;
	const struct smtp_param *envid = NULL;
	for (size_t i = 0; i < np; i++) {
		const struct smtp_param *pa = &prm[i];
		unsigned bit;
		if (param_is(pa, "SIZE"))
			bit = P_SIZE;
		else if (param_is(pa, "BODY"))
			bit = P_BODY;
		else if (param_is(pa, "SMTPUTF8"))
			bit = P_UTF8;
		else if (param_is(pa, "RET"))
			bit = P_RET;
		else if (param_is(pa, "ENVID"))
			bit = P_ENVID;
		else if (param_is(pa, "AUTH"))
			bit = P_AUTH;
		else {
			refuse(s, line, len, "555 5.5.4 Unsupported parameter");
			return;
		}
		if (seen & bit) {
			refuse(s, line, len, "501 5.5.4 Duplicate parameter");
			return;
		}
		seen |= bit;
		bool bad = false;
		switch (bit) {
		case P_SIZE: {
			bool ovf;
			if (!pa->value || !parse_u64(pa->value, pa->value_len, &size, &ovf))
				bad = true;
			break;
		}
		case P_BODY:
			if (!pa->value) {
				bad = true;
			} else if (value_is(pa, "7BIT")) {
				body = SMTP_BODY_7BIT;
			} else if (value_is(pa, "8BITMIME")) {
				body = SMTP_BODY_8BITMIME;
			} else {
				refuse(s, line, len, "555 5.5.4 Unsupported BODY type");
				return;
			}
			break;
		case P_UTF8:
			bad = pa->value != NULL;
			break;
		case P_RET:
			if (value_is(pa, "FULL"))
				ret = SMTP_RET_FULL;
			else if (value_is(pa, "HDRS"))
				ret = SMTP_RET_HDRS;
			else
				bad = true;
			break;
		case P_ENVID:
			bad = !pa->value || !xtext_ok(pa->value, pa->value_len, 100);
			envid = pa;
			break;
		default: /* AUTH=: accepted, not used without authentication */
			bad = !pa->value || (!value_is(pa, "<>") &&
					     !xtext_ok(pa->value, pa->value_len, 500));
			break;
		}
		if (bad) {
			refuse(s, line, len, "501 5.5.4 Invalid value for %.*s parameter",
			       (int)(pa->key_len > 16 ? 16 : pa->key_len), pa->key);
			return;
		}
	}
	if (size > s->pol->message_max) {
		refuse(s, line, len, "552 5.3.4 Message size exceeds fixed maximum message size");
		return;
	}
	bool utf8 = (seen & P_UTF8) != 0;
	if (path.utf8 && !utf8) {
		refuse(s, line, len, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return;
	}
	reset_tx(s);
	s->env.sender = path.is_null ? str_dup("") : str_ndup(path.mailbox, path.mailbox_len);
	s->env.size_declared = size;
	s->env.body = body;
	s->env.smtputf8 = utf8;
	s->env.ret = ret;
	if (envid)
		s->env.envid = str_ndup(envid->value, envid->value_len);
	reply(s, "250 2.1.0 Sender OK");
}

/* NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1). */
static unsigned parse_notify(const char *p, size_t n)
{
	if (str_eq_nocase(p, n, "NEVER"))
		return SMTP_NOTIFY_NEVER;
	unsigned bits = 0;
	size_t i = 0;
	while (i <= n) {
		size_t j = i;
		while (j < n && p[j] != ',')
			j++;
		unsigned b;
		if (str_eq_nocase(p + i, j - i, "SUCCESS"))
			b = SMTP_NOTIFY_SUCCESS;
		else if (str_eq_nocase(p + i, j - i, "FAILURE"))
			b = SMTP_NOTIFY_FAILURE;
		else if (str_eq_nocase(p + i, j - i, "DELAY"))
			b = SMTP_NOTIFY_DELAY;
		else
			return 0;
		if (bits & b)
			return 0;
		bits |= b;
		i = j + 1;
	}
	return bits;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 §4.2). */
static bool orcpt_ok(const char *p, size_t n)
{
	const char *semi = memchr(p, ';', n);
	if (!semi || semi == p)
		return false;
	for (const char *q = p; q < semi; q++) {
		unsigned char ch = (unsigned char)*q;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-'))
			return false;
	}
	size_t rest = n - (size_t)(semi + 1 - p);
	return rest > 0 && xtext_ok(semi + 1, rest, 500);
}

/* The old relay tricks: source routes, '%' or '!' hacks, quoted '@',
 * domain literals.  Refused even for local domains. */
static bool relay_trick(const struct smtp_path *path)
{
	if (path->has_route || path->domain_literal)
		return true;
	for (size_t i = 0; i < path->local_len; i++) {
		char ch = path->local[i];
		if (ch == '%' || ch == '!' || (path->quoted && ch == '@'))
			return true;
	}
	return false;
}

static void cmd_rcpt(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c)
{
	if (!s->helo_done) {
		refuse(s, line, len, "503 5.5.1 Send HELO/EHLO first");
		return;
	}
	if (!s->env.sender) {
		refuse(s, line, len, "503 5.5.1 Need MAIL command");
		return;
	}
	if (s->bdat_used) {
		refuse(s, line, len, "503 5.5.1 RCPT not allowed during BDAT");
		return;
	}
	if (s->env.n_rcpts >= s->pol->rcpt_max) {
		refuse(s, line, len, "452 4.5.3 Too many recipients");
		return;
	}
	const char *p = c->arg;
	size_t n = c->arg_len;
	if (!take_prefix(&p, &n, "TO:")) {
		refuse(s, line, len, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	struct smtp_path path;
	size_t used = 0;
	unsigned flags = SMTP_PATH_ALLOW_BARE | (s->env.smtputf8 ? SMTP_PATH_UTF8 : 0);
	enum smtp_path_error pe = smtp_parse_path(p, n, flags, &path, &used);
	if (pe == SMTP_PATH_NON_ASCII || pe == SMTP_PATH_BAD_UTF8) {
		refuse(s, line, len, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return;
	}
	if (pe != SMTP_PATH_OK || path.is_null || (used < n && p[used] != ' ')) {
		refuse(s, line, len, "501 5.1.3 Invalid recipient address");
		return;
	}
	struct smtp_param prm[SMTP_MAX_PARAMS];
	size_t np = 0;
	if (smtp_parse_params(p + used, n - used, s->env.smtputf8, prm, &np) < 0) {
		refuse(s, line, len, "501 5.5.4 Syntax error in parameters");
		return;
	}
	unsigned notify = 0;
	const struct smtp_param *orcpt = NULL;
	bool seen_notify = false;
	for (size_t i = 0; i < np; i++) {
		const struct smtp_param *pa = &prm[i];
		if (param_is(pa, "NOTIFY")) {
			if (seen_notify) {
				refuse(s, line, len, "501 5.5.4 Duplicate parameter");
				return;
			}
			seen_notify = true;
			notify = pa->value ? parse_notify(pa->value, pa->value_len) : 0;
			if (!notify) {
				refuse(s, line, len, "501 5.5.4 Invalid value for NOTIFY parameter");
				return;
			}
		} else if (param_is(pa, "ORCPT")) {
			if (orcpt) {
				refuse(s, line, len, "501 5.5.4 Duplicate parameter");
				return;
			}
			orcpt = pa;
			if (!pa->value || !orcpt_ok(pa->value, pa->value_len)) {
				refuse(s, line, len, "501 5.5.4 Invalid value for ORCPT parameter");
				return;
			}
		} else {
			refuse(s, line, len, "555 5.5.4 Unsupported parameter");
			return;
		}
	}
	if (!s->env.auth_user) {
		bool bare = path.domain == NULL;
		if (bare && !str_eq_nocase(path.local, path.local_len, "postmaster")) {
			refuse(s, line, len, "501 5.1.3 Invalid recipient address");
			return;
		}
		if (!bare) {
			if (relay_trick(&path)) {
				refuse(s, line, len, "550 5.7.1 Relaying denied: address form not accepted");
				return;
			}
			if (!smtp_domain_in_list(path.domain, path.domain_len, s->pol->local_domains,
						 s->pol->n_local_domains)) {
				refuse(s, line, len, "550 5.7.1 Relaying denied");
				return;
			}
		}
	}
	if (s->env.n_rcpts == s->rcpt_cap) {
		size_t ncap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
		s->env.rcpts = xrealloc(s->env.rcpts, ncap * sizeof(*s->env.rcpts));
		s->rcpt_cap = ncap;
	}
	struct smtp_rcpt *r = &s->env.rcpts[s->env.n_rcpts++];
	r->addr = str_ndup(path.mailbox, path.mailbox_len);
	r->orcpt = orcpt ? str_ndup(orcpt->value, orcpt->value_len) : NULL;
	r->notify = notify;
	reply(s, "250 2.1.5 Recipient OK");
}

static void cmd_data(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c)
{
	if (!s->helo_done) {
		refuse(s, line, len, "503 5.5.1 Send HELO/EHLO first");
		return;
	}
	if (!s->env.sender) {
		refuse(s, line, len, "503 5.5.1 Need MAIL command");
		return;
	}
	if (s->bdat_used) {
		refuse(s, line, len, "503 5.5.1 DATA not allowed after BDAT");
		return;
	}
	if (s->env.n_rcpts == 0) {
		refuse(s, line, len, "554 5.5.1 No valid recipients");
		return;
	}
	if (c->arg_len) {
		refuse(s, line, len, "501 5.5.4 DATA takes no argument");
		return;
	}
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	body_start(s);
	s->state = ST_DATA;
}

static void cmd_bdat(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c, bool tls_block)
{
	const char *p = c->arg;
	size_t n = c->arg_len;
	size_t i = 0;
	while (i < n && p[i] >= '0' && p[i] <= '9')
		i++;
	uint64_t size = 0;
	bool ovf = false;
	bool last = false;
	bool ok = i > 0 && parse_u64(p, i, &size, &ovf) && !ovf;
	if (ok && i < n) {
		size_t j = i;
		while (j < n && p[j] == ' ')
			j++;
		last = j > i && str_eq_nocase(p + j, n - j, "LAST");
		ok = last;
	}
	if (!ok) {
		if (tls_block)
			refuse(s, line, len, "530 5.7.0 Must issue a STARTTLS command first");
		else
			refuse(s, line, len, "501 5.5.4 Syntax: BDAT <size> [LAST]");
		return;
	}
	s->bdat_left = size;
	s->bdat_chunk = size;
	if (tls_block || !s->helo_done || !s->env.sender || s->env.n_rcpts == 0) {
		s->skip_why = tls_block ? SKIP_TLS
			      : !s->helo_done ? SKIP_NO_HELO
			      : !s->env.sender ? SKIP_NO_MAIL
					       : SKIP_NO_RCPT;
		s->state = ST_BDAT_SKIP;
		return;
	}
	if (!s->bdat_used) {
		s->bdat_used = true;
		body_start(s);
	}
	s->bdat_last = last;
	s->state = ST_BDAT;
}

static void cmd_starttls(struct smtp_session *s, const char *line, size_t len,
			 const struct smtp_cmd *c)
{
	if (s->in_tls) {
		refuse(s, line, len, "503 5.5.1 TLS already active");
		return;
	}
	if (c->arg_len) {
		refuse(s, line, len, "501 5.5.4 STARTTLS takes no argument");
		return;
	}
	if (!s->pol->tls_available) {
		refuse(s, line, len, "454 4.7.0 TLS not available");
		return;
	}
	reset_tx(s); /* drops a BDAT message in progress before the handshake */
	reply(s, "220 2.0.0 Ready to start TLS");
	push_act(s, SMTP_ACT_STARTTLS, NULL, 0);
	/* Whatever followed the command in plaintext must never be executed
	 * inside TLS (CVE-2011-0411). */
	buf_reset(&s->in);
	s->state = ST_WAIT_TLS;
}

static void exec_cmd(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	smtp_parse_cmd(line, len, &c);
	bool tls_block = s->pol->tls_required && !s->in_tls;
	if (tls_block) {
		switch (c.verb) {
		case SMTP_CMD_EHLO: case SMTP_CMD_HELO: case SMTP_CMD_NOOP:
		case SMTP_CMD_RSET: case SMTP_CMD_QUIT: case SMTP_CMD_STARTTLS:
			break;
		case SMTP_CMD_BDAT:
			cmd_bdat(s, line, len, &c, true);
			return;
		case SMTP_CMD_AUTH:
			refuse(s, line, 4, "530 5.7.0 Must issue a STARTTLS command first");
			return;
		default:
			refuse(s, line, len, "530 5.7.0 Must issue a STARTTLS command first");
			return;
		}
	}
	switch (c.verb) {
	case SMTP_CMD_HELO:
		cmd_helo(s, line, len, &c, false);
		break;
	case SMTP_CMD_EHLO:
		cmd_helo(s, line, len, &c, true);
		break;
	case SMTP_CMD_MAIL:
		cmd_mail(s, line, len, &c);
		break;
	case SMTP_CMD_RCPT:
		cmd_rcpt(s, line, len, &c);
		break;
	case SMTP_CMD_DATA:
		cmd_data(s, line, len, &c);
		break;
	case SMTP_CMD_BDAT:
		cmd_bdat(s, line, len, &c, false);
		break;
	case SMTP_CMD_RSET:
		if (c.arg_len) {
			refuse(s, line, len, "501 5.5.4 RSET takes no argument");
			break;
		}
		reset_tx(s);
		reply(s, "250 2.0.0 OK");
		break;
	case SMTP_CMD_NOOP:
		reply(s, "250 2.0.0 OK");
		break;
	case SMTP_CMD_QUIT:
		reset_tx(s);
		reply(s, "221 2.0.0 %s closing connection", s->pol->hostname);
		set_closing(s);
		break;
	case SMTP_CMD_VRFY:
		if (c.arg_len == 0)
			refuse(s, line, len, "501 5.5.4 VRFY requires an argument");
		else
			reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and "
				 "attempt delivery");
		break;
	case SMTP_CMD_EXPN:
		refuse(s, line, len, "502 5.5.1 EXPN not available");
		break;
	case SMTP_CMD_HELP:
		reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT "
			 "VRFY HELP STARTTLS");
		break;
	case SMTP_CMD_STARTTLS:
		cmd_starttls(s, line, len, &c);
		break;
	case SMTP_CMD_AUTH:
		/* Never log AUTH arguments: they may carry credentials. */
		refuse(s, line, 4, "502 5.5.1 AUTH not available");
		break;
	default:
		refuse(s, line, len, "500 5.5.1 Command unrecognized");
		break;
	}
}

static bool step_cmd(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (n == 0)
		return false; /* before touching in.data, which may still be NULL */
	uint8_t *p = s->in.data + s->in.off;
	size_t max = s->pol->line_max;
	uint8_t *lf = memchr(p, '\n', n);
	if (!lf) {
		if (n < max)
			return false;
		buf_consume(&s->in, n);
		s->state = ST_DISCARD_LINE;
		refuse(s, p, n, "500 5.5.2 Line too long");
		return true;
	}
	size_t ll = (size_t)(lf - p) + 1;
	buf_consume(&s->in, ll); /* the bytes stay in place until the next event */
	if (ll > max) {
		refuse(s, p, ll - 1, "500 5.5.2 Line too long");
		return true;
	}
	if (ll < 2 || p[ll - 2] != '\r' || memchr(p, '\r', ll - 2)) {
		refuse(s, p, ll - 1, "500 5.5.2 Syntax error: bare CR or LF in command");
		return true;
	}
	exec_cmd(s, (const char *)p, ll - 2);
	return true;
}

static bool step_discard(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (n == 0)
		return false; /* before touching in.data, which may still be NULL */
	uint8_t *p = s->in.data + s->in.off;
	uint8_t *lf = memchr(p, '\n', n);
	if (!lf) {
		buf_consume(&s->in, n);
		return false;
	}
	buf_consume(&s->in, (size_t)(lf - p) + 1);
	s->state = ST_CMD;
	return true;
}

static bool body_in_progress(const struct smtp_session *s)
{
	return s->state == ST_DATA || s->state == ST_BDAT || s->state == ST_WAIT_COMMIT ||
	       s->bdat_used;
}

static void shutdown_now(struct smtp_session *s)
{
	body_abort(s);
	reply(s, "421 4.3.2 %s Service shutting down", s->pol->hostname);
	set_closing(s);
}

static void run(struct smtp_session *s)
{
	for (;;) {
		if (s->closing)
			return;
		bool more;
		switch (s->state) {
		case ST_DATA:
			more = step_data(s);
			break;
		case ST_BDAT:
			more = step_bdat(s);
			break;
		case ST_BDAT_SKIP:
			more = step_bdat_skip(s);
			break;
		case ST_DISCARD_LINE:
			more = step_discard(s);
			break;
		case ST_CMD:
			if (s->shutdown_pending && !body_in_progress(s)) {
				shutdown_now(s);
				return;
			}
			if (buf_len(&s->out) > SMTP_OUT_HIGH_WATER)
				return;
			more = step_cmd(s);
			break;
		default:
			return;
		}
		if (!more)
			return;
	}
}

/* ---- events ---------------------------------------------------------- */

/* Views handed out by the previous event call expire here. */
static void event_begin(struct smtp_session *s)
{
	s->n_acts = 0;
	s->next_act = 0;
	s->env_ref = false;
	free_retired(s);
	buf_reset(&s->logb);
	if (s->cap_acts > 64) {
		free(s->acts);
		s->acts = NULL;
		s->cap_acts = 0;
	}
	if (s->logb.cap > 4096)
		buf_free(&s->logb);
	/* Keep idle sessions small: drop large buffers once empty. */
	if (buf_len(&s->in) == 0 && s->in.cap > 4096)
		buf_free(&s->in);
	if (buf_len(&s->out) == 0 && s->out.cap > 4096)
		buf_free(&s->out);
}

struct smtp_session *smtp_session_new(const struct smtp_policy *policy,
				      const struct smtp_client *client)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->pol = policy;
	s->cli = client;
	buf_init(&s->in, policy->line_max + SMTP_IN_SLACK);
	buf_init(&s->out, SMTP_OUT_HIGH_WATER + 2 * policy->line_max + 16384);
	buf_init(&s->logb, SMTP_LOG_MAX);
	s->state = ST_CMD;
	return s;
}

void smtp_session_free(struct smtp_session *s)
{
	if (!s)
		return;
	s->env_ref = false;
	reset_tx(s);
	forget_helo(s);
	free_retired(s);
	buf_free(&s->in);
	buf_free(&s->out);
	buf_free(&s->logb);
	free(s->acts);
	free(s);
}

void smtp_session_start(struct smtp_session *s)
{
	event_begin(s);
	if (s->closing)
		return;
	reply(s, "220 %s ESMTP sluice", s->pol->hostname);
}

void smtp_session_feed(struct smtp_session *s, const uint8_t *data, size_t len)
{
	event_begin(s);
	if (s->closing)
		return;
	if (s->state == ST_WAIT_TLS)
		return; /* plaintext sent before the handshake is never used */
	if (len > 0 && buf_append(&s->in, data, len) < 0) {
		body_abort(s);
		buf_reset(&s->in);
		reply(s, "421 4.7.0 %s Too much input, closing connection", s->pol->hostname);
		set_closing(s);
		return;
	}
	run(s);
}

bool smtp_session_wants_input(const struct smtp_session *s)
{
	if (s->closing || s->state == ST_WAIT_COMMIT || s->state == ST_WAIT_TLS)
		return false;
	return buf_len(&s->out) <= SMTP_OUT_HIGH_WATER;
}

void smtp_session_tls_started(struct smtp_session *s, const char *version, const char *cipher)
{
	event_begin(s);
	if (s->closing)
		return;
	/* RFC 3207 §4.2: forget everything learned before TLS. */
	reset_tx(s);
	forget_helo(s);
	buf_reset(&s->in);
	s->in_tls = true;
	s->env.tls_version = version;
	s->env.tls_cipher = cipher;
	s->state = ST_CMD;
}

void smtp_session_commit_done(struct smtp_session *s, bool ok, const char *queue_id)
{
	event_begin(s);
	if (s->closing || s->state != ST_WAIT_COMMIT)
		return;
	if (ok)
		reply(s, "250 2.0.0 OK queued as %s", queue_id ? queue_id : "");
	else
		reply(s, "451 4.3.0 Local error in processing; try again later");
	reset_tx(s);
	s->state = ST_CMD;
	run(s);
}

void smtp_session_timeout(struct smtp_session *s)
{
	event_begin(s);
	if (s->closing)
		return;
	reply(s, "421 4.4.2 %s Timeout, closing connection", s->pol->hostname);
	body_abort(s);
	set_closing(s);
}

void smtp_session_shutdown(struct smtp_session *s)
{
	event_begin(s);
	if (s->closing)
		return;
	if (body_in_progress(s) && s->state != ST_WAIT_TLS) {
		s->shutdown_pending = true;
		return;
	}
	shutdown_now(s);
}

void smtp_session_eof(struct smtp_session *s)
{
	event_begin(s);
	body_abort(s);
	s->closing = true;
	s->state = ST_CLOSED;
}

void smtp_session_output(const struct smtp_session *s, const uint8_t **data, size_t *len)
{
	*data = buf_ptr(&s->out);
	*len = buf_len(&s->out);
}

void smtp_session_output_done(struct smtp_session *s, size_t n)
{
	buf_consume(&s->out, n);
}

const struct smtp_action *smtp_session_next_action(struct smtp_session *s)
{
	if (s->next_act >= s->n_acts)
		return NULL;
	struct sess_act *a = &s->acts[s->next_act++];
	s->cur = a->a;
	if (a->a.type == SMTP_ACT_LOG_REFUSED) {
		const uint8_t *base = buf_ptr(&s->logb);
		s->cur.data = base + a->cmd_off;
		s->cur.reply = (const char *)base + a->reply_off;
	}
	return &s->cur;
}

const struct smtp_envelope *smtp_session_envelope(const struct smtp_session *s)
{
	return &s->env;
}

bool smtp_session_in_tls(const struct smtp_session *s)
{
	return s->in_tls;
}

bool smtp_session_in_transaction(const struct smtp_session *s)
{
	return s->env.sender != NULL;
}

bool smtp_session_closing(const struct smtp_session *s)
{
	return s->closing;
}
