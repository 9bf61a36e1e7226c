/*
 * The SMTP session state machine: bytes in, replies and actions out.
 *
 * Input is framed strictly on CRLF; a bare CR or LF never ends a command
 * or a message (SMTP smuggling).  Message data is scanned in place in the
 * input buffer: dot-unstuffing shifts bytes down inside that buffer so that
 * each feed hands out one view of clean message bytes in the common case.
 */
#include <arpa/inet.h>
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
/* Room for a canonical address: never longer than the path parsed, which
 * RFC 5321 §4.5.3.1.3 bounds (and smtp_parse_path enforces). */
#define SMTP_CANON_MAX 512

enum sess_state {
	ST_CMD,
	ST_DISCARD_LINE,  /* after "line too long": drop up to the next LF */
	ST_DATA,
	ST_BDAT,
	ST_BDAT_SKIP,     /* refused BDAT: consume its bytes, then reply */
	ST_WAIT_COMMIT,
	ST_WAIT_TLS,
	ST_AUTH,          /* after "334": the next line is a SASL response */
	ST_WAIT_AUTHD,    /* after SMTP_ACT_AUTH_REQUEST */
	ST_WAIT_LOOKUP,   /* after SMTP_ACT_LOOKUP */
	ST_CLOSED,
};

enum pend_kind { PEND_NONE = 0, PEND_SENDER, PEND_RCPT, PEND_FROM };

/* From: field values kept for the check, and addresses checked. */
#define SMTP_FROM_MAX (8 * 1024)
#define SMTP_FROM_ADDRS 16

enum body_bad { BAD_NONE = 0, BAD_BARE, BAD_LINE, BAD_HEADER, BAD_SIZE, BAD_FOLD };

/* Scanner position inside message data. */
enum data_state {
	D_BOL,    /* just after CRLF (or the DATA line) */
	D_MID,
	D_CR,     /* after a CR that was kept */
	D_DOT,    /* after a leading dot (removed) */
	D_DOTCR,  /* after a leading dot and a CR (held back) */
	D_HCR,    /* a CR at the start of a header line, held back: the header
		   * block may end here, and added headers go before it */
};

/* A header line is matched against the field names looked for using this
 * many of its first bytes ("Message-ID" and a few spaces before ':'). */
#define SMTP_HDR_MATCH 64
/* Header field names remembered for ACL "header =" conditions. */
#define SMTP_HDR_NAMES 64

enum skip_why { SKIP_TLS, SKIP_NO_HELO, SKIP_NO_MAIL, SKIP_NO_RCPT, SKIP_SYNTAX };

struct sess_act {
	struct smtp_action a;
	size_t cmd_off;   /* LOG_REFUSED, LOG_AUTH: offsets into logb, resolved on read */
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
	size_t n_nonmail;       /* commands sending no mail since the last message */
	bool connect_refused;   /* greeted 554: only QUIT is served */
	size_t env_bytes;       /* bound on the spool envelope of this transaction */
	size_t n_rcpt_over;      /* RCPTs past rcpt_max in this transaction */
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
	/* Authentication. */
	struct sasl *sasl;       /* exchange in progress */
	struct sasl *sasl_old;   /* ended exchange an action of this event call points to */
	bool sasl_ref;           /* an AUTH_REQUEST of this event call points into sasl */
	char *auth_user;         /* owned; env.auth_user points here */
	char *auth_try;          /* identity given in the exchange, for the log */
	struct buf auth_cmd;     /* "AUTH <mech>": what refusals of AUTH log */
	bool after_auth;         /* an AUTH was refused: unknown lines may be SASL data */
	/* RFC 1870 §6: does a declared SIZE fit in the spool now (injected). */
	bool (*space_ok)(void *ctx, uint64_t size);
	void *space_ctx;
	struct buf chal;
	/* A MAIL or RCPT waiting for the answer to SMTP_ACT_LOOKUP. */
	uint8_t pend;
	char *pend_addr;
	char *pend_orcpt;
	unsigned pend_notify;
	struct buf pend_cmd;
	/* Missing header detection (submission). */
	bool track_hdrs;
	/* ACLs */
	int cli_family;
	uint8_t cli_addr[16];
	enum acl_stage acl_cur;
	bool track_names;     /* a data ACL may ask which header fields exist */
	char *hnames[SMTP_HDR_NAMES];
	size_t n_hnames;
	/* From: check (submission, authenticated, check_from). */
	bool track_from;
	bool from_active;     /* the current header field is From: */
	bool from_unreadable; /* longer than SMTP_FROM_MAX */
	bool hline_over;      /* the current header line did not fit in hline */
	struct buf hline;     /* the current header line, while tracking From: */
	struct buf fromv;     /* the From: field values */
	char *from_addrs[SMTP_FROM_ADDRS];
	size_t n_from, i_from;
	const char *from_cmd; /* "DATA" or "BDAT", for the refusal log */
	bool seen_date;
	bool seen_msgid;
	char hm[SMTP_HDR_MATCH];
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

static void auth_end(struct smtp_session *s);

static void set_closing(struct smtp_session *s)
{
	if (s->closing)
		return;
	auth_end(s);
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

/* A SASL mechanism name (RFC 4422 §3.1): 1 to 20 of A-Z 0-9 - _. */
static bool mech_token_ok(const char *p, size_t n)
{
	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

static bool is_letter(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/*
 * True if a client line may be an AUTH command in any spelling: after
 * whatever non-letters lead it, its first four letters are "AUTH" in any
 * case, whatever follows them (TAB, other bytes, more letters as in
 * "AUTHX").  Such a line may carry credentials and is never logged whole.
 */
static bool line_is_auth(const void *line, size_t n)
{
	const char *p = line;
	size_t i = 0;
	while (i < n && !is_letter((unsigned char)p[i]))
		i++;
	return n - i >= 4 && str_has_prefix_nocase(p + i, n - i, "AUTH");
}

/*
 * Appends what the log shows of an AUTH line: "AUTH", and the mechanism
 * name, upper-cased, only for the well-formed "AUTH" SP mechanism [SP ...]
 * (the initial response after it is never shown).
 */
static int auth_log_form(struct buf *out, const void *line, size_t n)
{
	const char *p = line;
	if (buf_puts(out, "AUTH") < 0)
		return -1;
	if (n < 6 || !str_has_prefix_nocase(p, n, "AUTH "))
		return 0;
	const char *m = p + 5;
	size_t rest = n - 5, ml = 0;
	while (ml < rest && m[ml] != ' ')
		ml++;
	if (!mech_token_ok(m, ml))
		return 0;
	size_t at = buf_len(out);
	if (buf_puts(out, " ") < 0 || buf_append(out, m, ml) < 0)
		return -1;
	char *w = (char *)out->data + out->off + at + 1;
	for (size_t i = 0; i < ml; i++)
		if (w[i] >= 'a' && w[i] <= 'z')
			w[i] = (char)(w[i] - 'a' + 'A');
	return 0;
}

/* Logged instead of a line that may be a SASL response of a refused AUTH. */
static const char auth_tail_log[] = "(line after AUTH, not logged)";

/*
 * A 4xx/5xx reply to a command, logged with the command line.  counted:
 * it counts against errors_max (the reply is replaced by 421 past it).
 */
static void refuse_v(struct smtp_session *s, bool counted, const void *cmd, size_t cmdlen,
		     const char *fmt, va_list ap) UTIL_PRINTF(5, 0);
static void refuse_v(struct smtp_session *s, bool counted, const void *cmd, size_t cmdlen,
		     const char *fmt, va_list ap)
{
	size_t base = buf_len(&s->logb);
	size_t cmd_off = base;
	if (line_is_auth(cmd, cmdlen)) {
		/* Whatever the spelling, an AUTH line is logged as "AUTH" and at
		 * most its mechanism: the rest may be credentials.  The lines
		 * after it may be SASL responses sent regardless. */
		s->after_auth = true;
		if (auth_log_form(&s->logb, cmd, cmdlen) < 0)
			s->logb.len = s->logb.off + base;
		cmdlen = buf_len(&s->logb) - base;
	} else {
		if (cmdlen > SMTP_LOG_CMD_MAX)
			cmdlen = SMTP_LOG_CMD_MAX;
		if (buf_append(&s->logb, cmd, cmdlen) < 0)
			cmdlen = 0;
	}
	size_t reply_off = buf_len(&s->logb);
	int r = buf_vprintf(&s->logb, fmt, ap);
	bool too_many = counted && ++s->n_errors > s->pol->errors_max;
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

static void refuse(struct smtp_session *s, const void *cmd, size_t cmdlen, const char *fmt, ...)
	UTIL_PRINTF(4, 5);
static void refuse(struct smtp_session *s, const void *cmd, size_t cmdlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	refuse_v(s, true, cmd, cmdlen, fmt, ap);
	va_end(ap);
}

/* A refusal the client was right to provoke: not an error. */
static void refuse_nocount(struct smtp_session *s, const void *cmd, size_t cmdlen,
			   const char *fmt, ...) UTIL_PRINTF(4, 5);
static void refuse_nocount(struct smtp_session *s, const void *cmd, size_t cmdlen,
			   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	refuse_v(s, false, cmd, cmdlen, fmt, ap);
	va_end(ap);
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

static void from_clear(struct smtp_session *s);

static void reset_tx(struct smtp_session *s)
{
	body_abort(s);
	from_clear(s);
	if (s->env_ref)
		retire_env(s);
	free(s->env.sender);
	s->env.sender = NULL;
	free(s->env.envid);
	s->env.envid = NULL;
	free_rcpts(s);
	s->env_bytes = 0;
	s->env.size_declared = 0;
	s->env.body = SMTP_BODY_UNSPEC;
	s->env.smtputf8 = false;
	s->env.ret = SMTP_RET_UNSPEC;
	s->env.size = 0;
	s->bdat_used = false;
	s->bdat_last = false;
	s->abort_sent = false;
	s->bad = BAD_NONE;
	s->n_rcpt_over = 0;
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
 * in_place: src is in the input buffer at or after the write position;
 * otherwise it is constant storage handed out as its own view.
 */
static void keep_bytes(struct smtp_session *s, struct scan *c, const uint8_t *src, size_t len,
		       bool text, bool in_place)
{
	if (len == 0)
		return;
	const struct smtp_policy *p = s->pol;
	size_t ok = len;
	enum body_bad why = BAD_NONE;
	/* White space first would continue the Received: field written
	 * before the message: the client could add to our trace text. */
	if (s->env.size == 0 && (src[0] == ' ' || src[0] == '\t'))
		mark_bad(s, BAD_FOLD);
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
	if (text && s->in_header && s->track_from && buf_append(&s->hline, src, len) < 0)
		s->hline_over = true;
	if (text && s->in_header && (s->track_hdrs || s->track_names) &&
	    s->line_len < SMTP_HDR_MATCH) {
		size_t k = SMTP_HDR_MATCH - s->line_len;
		memcpy(s->hm + s->line_len, src, len < k ? len : k);
	}
	if (text)
		s->line_len += len;
	if (s->in_header)
		s->hdr_bytes += len;
	s->env.size += len;
	if (s->bad == BAD_NONE && s->body_open && ok > 0) {
		if (in_place) {
			if (c->w != src)
				memmove(c->w, src, ok);
			c->w += ok;
		} else {
			scan_flush(s, c);
			push_act(s, SMTP_ACT_BODY_DATA, src, ok);
		}
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

static void keep(struct smtp_session *s, struct scan *c, const uint8_t *src, size_t len,
		 bool text)
{
	keep_bytes(s, c, src, len, text, true);
}

/* True if the line starts with the field name (any case), optional
 * white space (obsolete syntax) and ':'. */
static bool hdr_is(const char *p, size_t n, const char *name)
{
	size_t k = strlen(name);
	if (n < k + 1 || !str_has_prefix_nocase(p, n, name))
		return false;
	while (k < n && (p[k] == ' ' || p[k] == '\t'))
		k++;
	return k < n && p[k] == ':';
}

/* A whole header line was seen: keep it if it is (a continuation of) a
 * From: field. */
static void from_line(struct smtp_session *s)
{
	const char *l = (const char *)buf_ptr(&s->hline);
	size_t n = buf_len(&s->hline);
	if (s->hline_over) {
		/* Only a From: line that did not fit matters. */
		s->hline_over = false;
		if ((n > 0 && (l[0] == ' ' || l[0] == '\t') && s->from_active) ||
		    str_has_prefix_nocase(l, n, "from"))
			s->from_unreadable = true;
		buf_reset(&s->hline);
		return;
	}
	if (n > 0 && (l[0] == ' ' || l[0] == '\t')) {
		if (s->from_active && (buf_puts(&s->fromv, " ") < 0 ||
				       buf_append(&s->fromv, l, n) < 0))
			s->from_unreadable = true;
	} else if (hdr_is(l, n, "from")) {
		const char *colon = memchr(l, ':', n);
		s->from_active = true;
		/* Several From: fields join into one list. */
		if ((buf_len(&s->fromv) > 0 && buf_puts(&s->fromv, ",") < 0) ||
		    buf_append(&s->fromv, colon + 1, n - (size_t)(colon + 1 - l)) < 0)
			s->from_unreadable = true;
	} else {
		s->from_active = false;
	}
	buf_reset(&s->hline);
}

/* Remembers the field name of a header line (lowercase) for ACLs. */
static void name_line(struct smtp_session *s)
{
	size_t n = s->line_len < SMTP_HDR_MATCH ? s->line_len : SMTP_HDR_MATCH;
	if (n == 0 || s->hm[0] == ' ' || s->hm[0] == '\t' || s->n_hnames >= SMTP_HDR_NAMES)
		return;
	size_t k = 0;
	while (k < n && s->hm[k] != ':' && s->hm[k] != ' ' && s->hm[k] != '\t')
		k++;
	if (k == 0 || k == n)
		return; /* no ':' within the bytes kept: not a field we can name */
	char *name = str_ndup(s->hm, k);
	str_lower(name);
	s->hnames[s->n_hnames++] = name;
}

static void names_clear(struct smtp_session *s)
{
	for (size_t i = 0; i < s->n_hnames; i++)
		free(s->hnames[i]);
	s->n_hnames = 0;
}

static void line_end(struct smtp_session *s)
{
	if (s->in_header && s->track_from)
		from_line(s);
	if (s->in_header && s->track_names && s->line_len > 0)
		name_line(s);
	if (s->in_header && s->track_hdrs && s->line_len > 0) {
		size_t n = s->line_len < SMTP_HDR_MATCH ? s->line_len : SMTP_HDR_MATCH;
		if (hdr_is(s->hm, n, "date"))
			s->seen_date = true;
		else if (hdr_is(s->hm, n, "message-id"))
			s->seen_msgid = true;
	}
	if (s->line_len == 0)
		s->in_header = false;
	s->line_len = 0;
	s->dstate = D_BOL;
}

/* Asks the caller to write the header fields RFC 6409 §8.1 and §8.3 let a
 * submission server add, here: at the end of the header block. */
static void add_headers(struct smtp_session *s)
{
	unsigned bits = (s->seen_date ? 0u : SMTP_ADD_DATE) |
			(s->seen_msgid ? 0u : SMTP_ADD_MESSAGE_ID);
	s->track_hdrs = false;
	if (!bits || s->bad != BAD_NONE || !s->body_open)
		return;
	push_act(s, SMTP_ACT_ADD_HEADERS, NULL, 0);
	s->acts[s->n_acts - 1].a.add_headers = bits;
}

/* How long a header line's start may be before it is taken for a field
 * without seeing its ':' (a bound on waiting, not on storage). */
#define SMTP_HDR_DECIDE_MAX 1024

/* Whether a header-block line that starts with p[0..n) is a header field
 * (RFC 5322 3.6.8: a field name of printable ASCII without ':', white space
 * as the obsolete syntax allows, then ':') or the continuation of one:
 * 1 yes, 0 no, -1 not known yet.  complete: the line ends within p[0..n). */
static int hdr_line_kind(const uint8_t *p, size_t n, bool complete)
{
	if (n > 0 && (p[0] == ' ' || p[0] == '\t'))
		return 1;
	size_t i = 0;
	while (i < n && p[i] >= 33 && p[i] <= 126 && p[i] != ':')
		i++;
	if (i < n && i == 0)
		return 0;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < n)
		return p[i] == ':';
	if (complete)
		return n > 0 ? 0 : 1;
	return n >= SMTP_HDR_DECIDE_MAX ? 1 : -1;
}

/* A line of the header block that is no header field: the message has no
 * header section, or lacks the empty line after it (RFC 5322 2.1).  Fields
 * to add go before this line, with the empty line after them, so that
 * they are header fields and the line is body text, not appended to the
 * body where no reader sees them. */
static void hdr_missing_separator(struct smtp_session *s, struct scan *c)
{
	s->in_header = false;
	if (s->seen_date && s->seen_msgid) {
		s->track_hdrs = false;
		return;
	}
	scan_flush(s, c);
	add_headers(s);
	keep_bytes(s, c, (const uint8_t *)"\r\n", 2, false, false);
}

/* The empty line that ends the header block: what came before is handed
 * out, the added fields come next, then the empty line itself. */
static void hdr_block_end(struct smtp_session *s, struct scan *c)
{
	scan_flush(s, c);
	add_headers(s);
	keep_bytes(s, c, (const uint8_t *)"\r\n", 2, false, false);
	line_end(s);
}

/*
 * Scans p[0..n) of message data.  dot: DATA (unstuffing, ends at
 * CRLF.CRLF) rather than BDAT.  more: bytes after p[n) may still come for
 * this data (not so at the end of a BDAT chunk).  Returns the bytes
 * consumed, which may stop short at the start of a header line still
 * undecided; *ended is set when the DATA terminator was consumed.
 */
static size_t scan(struct smtp_session *s, uint8_t *p, size_t n, bool dot, bool more,
		   bool *ended)
{
	struct scan c = { p, p };
	uint8_t *r = p, *e = p + n;
	*ended = false;
	while (r < e) {
		switch (s->dstate) {
		case D_BOL:
			if (s->track_hdrs && s->in_header && *r == '\r') {
				r++;
				s->dstate = D_HCR;
			} else if (dot && *r == '.') {
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
		case D_HCR:
			if (*r == '\n') {
				r++;
				hdr_block_end(s, &c);
			} else {
				/* A bare CR: the message is refused, the CR only counts. */
				mark_bad(s, BAD_BARE);
				keep_bytes(s, &c, (const uint8_t *)"\r", 1, false, false);
				s->dstate = D_MID;
			}
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
		if (s->track_hdrs && s->in_header && s->line_len == 0) {
			/* Decided on the line's start alone, however the input
			 * was split: until then it waits in the input buffer. */
			int kind = hdr_line_kind(r, (size_t)(q - r), q < e);
			if (kind < 0 && more)
				goto out;
			/* Cut by the end of a BDAT chunk: taken for a field. */
			if (kind == 0)
				hdr_missing_separator(s, &c);
		}
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

/* ---- ACLs ------------------------------------------------------------ */

static int tls_version_number(const char *v)
{
	static const struct { const char *name; int num; } t[] = {
		{ "TLSv1", 0x0301 }, { "TLSv1.1", 0x0302 }, { "TLSv1.2", 0x0303 }, { "TLSv1.3", 0x0304 },
	};
	for (size_t i = 0; v && i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(v, t[i].name) == 0)
			return t[i].num;
	return v ? 0x0304 : 0; /* a newer version than we know of */
}

static bool acl_has_header(void *arg, const char *name)
{
	const struct smtp_session *s = arg;
	for (size_t i = 0; i < s->n_hnames; i++)
		if (strcasecmp(s->hnames[i], name) == 0)
			return true;
	return false;
}

static void acl_warn(void *arg, const struct acl *a, int line, const char *msg)
{
	struct smtp_session *s = arg;
	size_t msg_off = buf_len(&s->logb);
	if (buf_puts(&s->logb, msg) < 0)
		return;
	size_t msg_len = buf_len(&s->logb) - msg_off;
	size_t where_off = buf_len(&s->logb);
	if (buf_printf(&s->logb, "acl=%s line=%d stage=%s", acl_name(a), line,
		       acl_stage_name(s->acl_cur)) < 0)
		return;
	push_act(s, SMTP_ACT_LOG_ACL, NULL, msg_len);
	struct sess_act *x = &s->acts[s->n_acts - 1];
	x->cmd_off = msg_off;
	x->reply_off = where_off;
	x->a.reply_len = buf_len(&s->logb) - where_off;
}

/*
 * Runs the stage's ACL, if any.  True: go on.  False: it refused, and the
 * refusal (deny or defer, with the rule's reply) was sent for cmd.
 */
static bool acl_pass(struct smtp_session *s, enum acl_stage st, const char *cmd, size_t cmdlen,
		     const char *rcpt, int rcpt_local)
{
	const struct acl *a = s->pol->acl[st];
	if (!a)
		return true;
	struct acl_ctx c;
	memset(&c, 0, sizeof(c));
	c.stage = st;
	c.client_family = s->cli_family;
	memcpy(c.client_addr, s->cli_addr, sizeof(c.client_addr));
	c.auth_user = s->auth_user;
	c.tls_version = tls_version_number(s->env.tls_version);
	c.helo = s->env.helo;
	c.sender = s->env.sender;
	c.recipient = rcpt;
	c.recipient_local = rcpt_local;
	c.size = st == ACL_MAIL ? s->env.size_declared : s->env.size;
	c.has_header = acl_has_header;
	c.hdr_arg = s;
	c.local_domains = (char *const *)s->pol->local_domains;
	c.n_local_domains = s->pol->n_local_domains;
	c.rates = s->pol->rates;
	c.now_s = s->pol->clock_s ? s->pol->clock_s() : 0;
	s->acl_cur = st;
	struct acl_result r;
	acl_eval(a, &c, &r, acl_warn, s);
	if (s->pol->trace_acl) {
		char what[64];
		snprintf(what, sizeof(what), "%s (%s)",
			 r.verdict == ACL_ACCEPT ? "accept" : r.verdict == ACL_DENY ? "deny" : "defer",
			 r.rule_line ? "rule" : "end of acl");
		acl_warn(s, a, r.rule_line, what);
	}
	if (r.verdict == ACL_ACCEPT)
		return true;
	const char *reply = r.reply ? r.reply
				    : r.verdict == ACL_DENY ? "550 5.7.1 Rejected by policy"
							    : "451 4.7.1 Try again later";
	if (st == ACL_CONNECT) {
		/* A refused connection is told 554 (or 421 to come back later),
		 * RFC 5321 §3.1, with the rule's text.  After 554 the server
		 * MUST wait for QUIT, answering 503 meanwhile (the error limit
		 * and the receive timeout bound that); 421 closes at once. */
		const char *text = strlen(reply) > 4 ? reply + 4 : "Rejected by policy";
		refuse(s, "(connect)", 9, "%s %s", r.verdict == ACL_DENY ? "554" : "421", text);
		if (r.verdict == ACL_DENY)
			s->connect_refused = true;
		else
			set_closing(s);
		return false;
	}
	refuse(s, cmd, cmdlen, "%s", reply);
	return false;
}

static void from_clear(struct smtp_session *s)
{
	for (size_t i = 0; i < s->n_from; i++)
		free(s->from_addrs[i]);
	s->n_from = s->i_from = 0;
	s->track_from = s->from_active = s->from_unreadable = s->hline_over = false;
	buf_reset(&s->hline);
	buf_reset(&s->fromv);
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
	s->track_hdrs = s->pol->role != SMTP_ROLE_MX && s->pol->add_missing_headers;
	s->seen_date = false;
	s->seen_msgid = false;
	from_clear(s);
	s->track_from = s->pol->check_from && s->auth_user != NULL;
	names_clear(s);
	s->track_names = s->pol->acl[ACL_DATA] != NULL;
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
	case BAD_FOLD:
		refuse(s, cmd, strlen(cmd),
		       "550 5.6.0 Message refused: first line begins with white space "
		       "(a header continuation line without a header)");
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

static void commit_now(struct smtp_session *s)
{
	const char *cmd = s->bdat_used ? "BDAT" : "DATA";
	if (!acl_pass(s, ACL_DATA, cmd, 4, NULL, -1)) {
		body_abort(s);
		reset_tx(s);
		s->state = ST_CMD;
		return;
	}
	s->body_open = false;
	push_act(s, SMTP_ACT_COMMIT, NULL, 0);
	s->state = ST_WAIT_COMMIT;
}

/* The canonical form of an accepted path (owned), the one form used from
 * here on: envelope, checks, lookups, logs.  NULL if it does not fit. */
static char *path_canonical_dup(const struct smtp_path *p)
{
	struct buf b;
	buf_init(&b, SMTP_CANON_MAX);
	char *r = NULL;
	if (smtp_path_canonical(p, &b) == 0)
		r = str_ndup(buf_ptr(&b), buf_len(&b));
	buf_free(&b);
	return r;
}

/* Each From: address in the canonical form the envelope uses, so that
 * "demo"@example.org is demo@example.org here as it is in MAIL FROM; one
 * that is no SMTP path is kept as written (and is nobody's). */
static void from_collect(const char *a, size_t n, void *arg)
{
	struct smtp_session *s = arg;
	if (s->n_from >= SMTP_FROM_ADDRS)
		return;
	char *canon = NULL;
	struct buf b;
	buf_init(&b, SMTP_CANON_MAX);
	if (buf_puts(&b, "<") == 0 && buf_append(&b, a, n) == 0 && buf_puts(&b, ">") == 0) {
		struct smtp_path path;
		size_t used;
		if (smtp_parse_path(buf_cstr(&b), buf_len(&b), SMTP_PATH_UTF8, &path, &used) ==
			    SMTP_PATH_OK && used == buf_len(&b))
			canon = path_canonical_dup(&path);
	}
	buf_free(&b);
	s->from_addrs[s->n_from++] = canon ? canon : str_ndup(a, n);
}

static void from_ask(struct smtp_session *s)
{
	const char *a = s->from_addrs[s->i_from];
	s->pend = PEND_FROM;
	buf_reset(&s->pend_cmd);
	buf_puts(&s->pend_cmd, s->from_cmd);
	push_act(s, SMTP_ACT_LOOKUP, (const uint8_t *)a, strlen(a));
	struct smtp_action *act = &s->acts[s->n_acts - 1].a;
	act->lookup = SMTP_LOOKUP_SENDER;
	act->user = s->auth_user;
	s->state = ST_WAIT_LOOKUP;
}

/* The message is complete and good: with check_from, every From: address
 * must be the user's before it is committed (RFC 6409 §6.1 lets a
 * submission server enforce this). */
static void body_commit(struct smtp_session *s, const char *cmd)
{
	if (!s->track_from) {
		commit_now(s);
		return;
	}
	if (s->in_header && buf_len(&s->hline) > 0)
		from_line(s); /* the message ended inside its header */
	s->track_from = false;
	s->from_cmd = cmd;
	if (buf_len(&s->fromv) == 0) {
		commit_now(s); /* nothing claims an author */
		return;
	}
	int n = s->from_unreadable ? -1
		: smtp_header_addresses((const char *)buf_ptr(&s->fromv), buf_len(&s->fromv),
					SMTP_FROM_ADDRS, from_collect, s);
	if (n <= 0) {
		body_abort(s);
		refuse(s, cmd, strlen(cmd), "550 5.6.0 Message refused: From: header cannot be "
		       "parsed");
		reset_tx(s);
		s->state = ST_CMD;
		return;
	}
	s->i_from = 0;
	from_ask(s);
}

static bool step_data(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (n == 0)
		return false;
	bool ended;
	size_t used = scan(s, s->in.data + s->in.off, n, true, true, &ended);
	buf_consume(&s->in, used);
	if (!ended)
		return false;
	if (s->bad != BAD_NONE) {
		body_refuse(s, "DATA");
		return true;
	}
	if (s->track_hdrs && s->in_header)
		add_headers(s); /* no empty line: the whole message was header */
	body_commit(s, "DATA");
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
		size_t used = scan(s, s->in.data + s->in.off, n, false, n < s->bdat_left, &ended);
		buf_consume(&s->in, used);
		s->bdat_left -= used;
		if (s->bdat_left > 0)
			return false;
	}
	if (s->bdat_last && (s->dstate == D_CR || s->dstate == D_HCR))
		mark_bad(s, BAD_BARE); /* a CR that no LF will ever follow */
	if (s->bad != BAD_NONE) {
		body_refuse(s, "BDAT");
	} else if (s->bdat_last) {
		/* Added fields need a line boundary; a message ending inside a
		 * header line gets none. */
		if (s->track_hdrs && s->in_header && s->dstate == D_BOL)
			add_headers(s);
		body_commit(s, "BDAT");
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
	case SKIP_SYNTAX:
		/* A chunk of the message lost: the message cannot be whole. */
		if (s->bdat_used)
			reset_tx(s);
		refuse(s, "BDAT", 4, "501 5.5.4 Syntax: BDAT <size> [LAST]");
		break;
	default:
		refuse(s, "BDAT", 4, "554 5.5.1 No valid recipients");
		break;
	}
	return true;
}

/* ---- authentication (RFC 4954) and directory lookups ----------------- */

#define SMTP_AUTH_MECHS (SASL_MECH_PLAIN | SASL_MECH_LOGIN | SASL_MECH_SCRAM_SHA_256)
/* A user name copied into a log line or a reply is cut here. */
#define SMTP_USER_MAX 256

/* SCRAM needs a fresh nonce from the caller: without a source of one the
 * mechanism is not offered at all. */
static unsigned offered_mechs(const struct smtp_session *s)
{
	unsigned m = s->pol->auth_mechs & SMTP_AUTH_MECHS;
	if (!s->cli->make_nonce)
		m &= ~(unsigned)SASL_MECH_SCRAM_SHA_256;
	return m;
}

/*
 * What refusals of this AUTH log as the command: "AUTH" and the mechanism
 * name, never the rest of the line (an initial response carries
 * credentials) nor anything that does not look like a mechanism name.
 */
static void auth_cmd_set(struct smtp_session *s, const char *arg, size_t n)
{
	size_t ml = 0;
	while (ml < n && arg[ml] != ' ')
		ml++;
	buf_reset(&s->auth_cmd);
	buf_puts(&s->auth_cmd, "AUTH");
	if (mech_token_ok(arg, ml)) {
		buf_puts(&s->auth_cmd, " ");
		buf_append(&s->auth_cmd, arg, ml);
	}
}

static void refuse_auth(struct smtp_session *s, const char *msg)
{
	refuse(s, buf_ptr(&s->auth_cmd), buf_len(&s->auth_cmd), "%s", msg);
}

/* The outcome of an exchange for the log; user is never the secret. */
static void log_auth(struct smtp_session *s, const char *what, const char *user)
{
	size_t off = buf_len(&s->logb);
	size_t n = user ? strnlen(user, SMTP_USER_MAX) : 0;
	if (n && buf_append(&s->logb, user, n) < 0)
		n = 0;
	push_act(s, SMTP_ACT_LOG_AUTH, NULL, n);
	struct sess_act *a = &s->acts[s->n_acts - 1];
	a->cmd_off = off;
	a->a.reply = what;
	a->a.reply_len = strlen(what);
}

/* Ends the exchange in progress.  An AUTH_REQUEST handed out in this event
 * call still points into the sasl object: it then lives until the next. */
static void auth_end(struct smtp_session *s)
{
	if (s->sasl) {
		if (s->sasl_ref) {
			sasl_free(s->sasl_old);
			s->sasl_old = s->sasl;
		} else {
			sasl_free(s->sasl);
		}
		s->sasl = NULL;
	}
	free(s->auth_try);
	s->auth_try = NULL;
}

static void auth_forget(struct smtp_session *s)
{
	auth_end(s);
	free(s->auth_user);
	s->auth_user = NULL;
	s->env.auth_user = NULL;
}

/* Failures all count as errors (errors_max), which bounds the guesses one
 * connection can make. */
static void auth_fail(struct smtp_session *s, const char *what, const char *msg)
{
	s->state = ST_CMD;
	log_auth(s, what, s->auth_try);
	auth_end(s);
	refuse_auth(s, msg);
}

/* Acts on what the mechanism said after a client line or an answer. */
static void auth_status(struct smtp_session *s, enum sasl_status st)
{
	switch (st) {
	case SASL_CHALLENGE:
		s->state = ST_AUTH;
		reply(s, "334 %.*s", (int)buf_len(&s->chal), (const char *)buf_ptr(&s->chal));
		return;
	case SASL_NEED_AUTHD: {
		const struct sasl_request *rq = sasl_request(s->sasl);
		if (!rq) {
			auth_fail(s, "tempfail", "454 4.7.0 Temporary authentication failure");
			return;
		}
		free(s->auth_try);
		s->auth_try = rq->user ? str_ndup(rq->user, strnlen(rq->user, SMTP_USER_MAX)) : NULL;
		push_act(s, SMTP_ACT_AUTH_REQUEST, NULL, 0);
		s->acts[s->n_acts - 1].a.sasl_req = rq;
		s->sasl_ref = true;
		s->state = ST_WAIT_AUTHD;
		return;
	}
	case SASL_SUCCESS: {
		const char *u = sasl_user(s->sasl);
		if (!u || !*u)
			u = s->auth_try;
		if (!u || !*u) {
			auth_fail(s, "tempfail", "454 4.7.0 Temporary authentication failure");
			return;
		}
		s->auth_user = str_dup(u);
		s->env.auth_user = s->auth_user;
		s->state = ST_CMD;
		log_auth(s, "ok", s->auth_user);
		auth_end(s);
		reply(s, "235 2.7.0 Authentication successful");
		return;
	}
	case SASL_FAILED:
		auth_fail(s, "failed", "535 5.7.8 Authentication credentials invalid");
		return;
	case SASL_CANCELLED:
		auth_fail(s, "cancelled", "501 5.0.0 Authentication cancelled");
		return;
	case SASL_TEMPFAIL:
		auth_fail(s, "tempfail", "454 4.7.0 Temporary authentication failure");
		return;
	case SASL_BLOCKED:
		auth_fail(s, "blocked", "454 4.7.0 Too many authentication failures; try again later");
		return;
	default:
		auth_fail(s, "syntax", "501 5.5.2 Invalid authentication data");
		return;
	}
}

static void cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
	const char *p = c->arg;
	size_t n = c->arg_len;
	auth_cmd_set(s, p, n);
	unsigned offered = offered_mechs(s);
	if (!offered) {
		refuse_auth(s, "502 5.5.1 AUTH not available");
		return;
	}
	if (!s->in_tls) {
		refuse_auth(s, "538 5.7.11 Encryption required for requested authentication "
			       "mechanism");
		return;
	}
	if (!s->helo_done || !s->env.esmtp) {
		refuse_auth(s, "503 5.5.1 Send EHLO first");
		return;
	}
	if (s->auth_user) {
		refuse_auth(s, "503 5.5.1 Already authenticated");
		return;
	}
	if (s->env.sender) {
		refuse_auth(s, "503 5.5.1 AUTH not permitted during a mail transaction");
		return;
	}
	size_t ml = 0;
	while (ml < n && p[ml] != ' ')
		ml++;
	if (ml == 0) {
		refuse_auth(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	unsigned mech = sasl_mech_from_name(p, ml);
	if (!mech || (mech & (mech - 1)) || !(mech & offered)) {
		refuse_auth(s, "504 5.5.4 Unrecognized authentication mechanism");
		return;
	}
	const char *ini = NULL;
	size_t il = 0;
	if (ml < n) {
		ini = p + ml + 1;
		il = n - ml - 1;
		if (il == 0 || memchr(ini, ' ', il)) {
			log_auth(s, "syntax", NULL);
			refuse_auth(s, "501 5.5.2 Invalid authentication data");
			return;
		}
	}
	struct buf nonce;
	buf_init(&nonce, 256);
	if (mech == SASL_MECH_SCRAM_SHA_256)
		s->cli->make_nonce(s->cli->nonce_ctx, &nonce);
	const char *nz = buf_cstr(&nonce);
	if (mech == SASL_MECH_SCRAM_SHA_256 && (!nz || !*nz)) {
		buf_free(&nonce);
		log_auth(s, "tempfail", NULL);
		refuse_auth(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	s->sasl = sasl_new(mech, nz ? nz : "", s->pol->line_max);
	buf_free(&nonce);
	if (!s->sasl) {
		log_auth(s, "tempfail", NULL);
		refuse_auth(s, "454 4.7.0 Temporary authentication failure");
		return;
	}
	auth_status(s, sasl_start(s->sasl, ini, il, &s->chal));
}

/* One line of the SASL exchange: framed like a command, never executed. */
static bool step_auth(struct smtp_session *s)
{
	size_t n = buf_len(&s->in);
	if (n == 0)
		return false;
	uint8_t *p = s->in.data + s->in.off;
	size_t max = s->pol->line_max;
	uint8_t *lf = memchr(p, '\n', n);
	if (!lf && n < max)
		return false;
	size_t ll = lf ? (size_t)(lf - p) + 1 : n;
	buf_consume(&s->in, ll);
	if (!lf || ll > max) {
		s->state = lf ? ST_CMD : ST_DISCARD_LINE;
		log_auth(s, "syntax", s->auth_try);
		auth_end(s);
		refuse_auth(s, "500 5.5.6 Authentication exchange line is too long");
		return true;
	}
	if (ll < 2 || p[ll - 2] != '\r' || memchr(p, '\r', ll - 2)) {
		auth_fail(s, "syntax", "501 5.5.2 Invalid authentication data");
		return true;
	}
	auth_status(s, sasl_step(s->sasl, (const char *)p, ll - 2, &s->chal));
	return true;
}

static void pend_clear(struct smtp_session *s)
{
	s->pend = PEND_NONE;
	free(s->pend_addr);
	s->pend_addr = NULL;
	free(s->pend_orcpt);
	s->pend_orcpt = NULL;
	s->pend_notify = 0;
	buf_reset(&s->pend_cmd);
}

/* Asks the directory about addr; the command's reply waits for the answer
 * (and so do the commands pipelined after it). */
static void start_lookup(struct smtp_session *s, enum pend_kind kind, const char *line,
			 size_t len, const char *addr, size_t addr_len)
{
	pend_clear(s);
	s->pend = (uint8_t)kind;
	if (buf_append(&s->pend_cmd, line, len > SMTP_LOG_CMD_MAX ? SMTP_LOG_CMD_MAX : len) < 0)
		buf_reset(&s->pend_cmd);
	s->pend_addr = str_ndup(addr, addr_len);
	push_act(s, SMTP_ACT_LOOKUP, (const uint8_t *)s->pend_addr, addr_len);
	struct smtp_action *a = &s->acts[s->n_acts - 1].a;
	a->lookup = kind == PEND_SENDER ? SMTP_LOOKUP_SENDER : SMTP_LOOKUP_RCPT;
	a->user = s->auth_user;
	s->state = ST_WAIT_LOOKUP;
}

/* Text from the directory is put in a reply only if it cannot break it. */
static bool reply_safe(const char *u)
{
	if (!u || !*u || strlen(u) > SMTP_USER_MAX)
		return false;
	for (const unsigned char *q = (const unsigned char *)u; *q; q++)
		if (*q < 0x21 || *q > 0x7e || *q == '<' || *q == '>')
			return false;
	return true;
}

/* ---- commands -------------------------------------------------------- */

static void cmd_helo(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c, bool ehlo)
{
	if (c->arg_len == 0) {
		refuse(s, line, len, "501 5.5.4 %s requires a domain name", ehlo ? "EHLO" : "HELO");
		return;
	}
	if (!smtp_helo_arg_ok(c->arg, c->arg_len)) {
		refuse(s, line, len, "501 5.5.4 Invalid domain name");
		return;
	}
	/* The ACL sees the new name; refused, the session stays as it was,
	 * transaction and greeting included (RFC 5321 4.1.4). */
	char *old_helo = s->env.helo;
	bool old_esmtp = s->env.esmtp;
	s->env.helo = str_ndup(c->arg, c->arg_len);
	s->env.esmtp = ehlo;
	if (!acl_pass(s, ACL_HELO, line, len, NULL, -1)) {
		free(s->env.helo);
		s->env.helo = old_helo;
		s->env.esmtp = old_esmtp;
		return;
	}
	free(old_helo);
	reset_tx(s);
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
	/* Never before TLS: the mechanisms offered send secrets (RFC 8314). */
	unsigned mechs = offered_mechs(s);
	if (mechs && s->in_tls) {
		static const unsigned order[] = { SASL_MECH_PLAIN, SASL_MECH_LOGIN,
						  SASL_MECH_SCRAM_SHA_256 };
		int r = buf_puts(&s->out, "250-AUTH");
		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			const char *name = sasl_mech_name(order[i]);
			if ((mechs & order[i]) && name && r == 0)
				r = buf_printf(&s->out, " %s", name);
		}
		if (r < 0 || buf_puts(&s->out, "\r\n") < 0)
			force_close(s);
	}
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

static void add_rcpt(struct smtp_session *s, char *addr, char *orcpt, unsigned notify);

/* The sender passed every built-in check: the MAIL ACL has the last word. */
static void mail_ok(struct smtp_session *s, const char *cmd, size_t cmdlen)
{
	if (acl_pass(s, ACL_MAIL, cmd, cmdlen, NULL, -1))
		reply(s, "250 2.1.0 Sender OK");
	else
		reset_tx(s);
}

/* A recipient passed the built-in checks (local: -1 not looked up, 1 a
 * known local recipient); addr and orcpt are owned and given away. */
static void rcpt_ok(struct smtp_session *s, const char *cmd, size_t cmdlen, char *addr,
		    char *orcpt, unsigned notify, int local)
{
	if (!acl_pass(s, ACL_RCPT, cmd, cmdlen, addr, local)) {
		free(addr);
		free(orcpt);
		return;
	}
	/* The spool writes each address and ORCPT as xtext (at worst three
	 * bytes each) within a bounded envelope: a recipient that would not
	 * fit is put off like one beyond recipients_max, not taken and then
	 * failed at the end of data again and again. */
	if (s->pol->envelope_max) {
		if (s->env_bytes == 0)
			s->env_bytes = 8192 + 3 * (s->env.sender ? strlen(s->env.sender) : 0) +
				       3 * (s->env.envid ? strlen(s->env.envid) : 0);
		size_t need = 32 + 3 * strlen(addr) + 3 * (orcpt ? strlen(orcpt) : 0);
		if (s->env_bytes + need > s->pol->envelope_max) {
			free(addr);
			free(orcpt);
			refuse_nocount(s, cmd, cmdlen, "452 4.5.3 Too many recipients");
			return;
		}
		s->env_bytes += need;
	}
	add_rcpt(s, addr, orcpt, notify);
	reply(s, "250 2.1.5 Recipient OK");
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
	/* After HELO the client said it knows no extension (RFC 5321 3.2). */
	if (np > 0 && !s->env.esmtp) {
		refuse(s, line, len, "555 5.5.4 MAIL parameters need EHLO");
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
	/* RFC 1870 §6.1: a size that fits the limit but not the spool's free
	 * space now is a temporary refusal.  Not the client's error. */
	if ((seen & P_SIZE) && size > 0 && s->space_ok && !s->space_ok(s->space_ctx, size)) {
		refuse_nocount(s, line, len, "452 4.3.1 Insufficient system storage");
		return;
	}
	char *sender = path_canonical_dup(&path);
	if (!sender) {
		refuse(s, line, len, "501 5.1.7 Invalid sender address");
		return;
	}
	reset_tx(s);
	s->env.sender = sender;
	s->env.size_declared = size;
	s->env.body = body;
	s->env.smtputf8 = utf8;
	s->env.ret = ret;
	if (envid)
		s->env.envid = str_ndup(envid->value, envid->value_len);
	/* The null sender (bounces, auto-replies) is nobody's address. */
	if (s->env.auth_user && s->pol->check_sender && !path.is_null) {
		start_lookup(s, PEND_SENDER, line, len, sender, strlen(sender));
		return;
	}
	mail_ok(s, line, len);
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
/* RFC 6533 3 utf-8-addr-unitext: printable ASCII but '+', '=' (and the
 * "\x{...}" escapes, whose backslash is allowed), and UTF-8. */
static bool orcpt_unitext_ok(const char *p, size_t n)
{
	return n > 0 && n <= 500 && str_utf8_visible(p, n, "+=");
}

/* addr-type ";" xtext (RFC 3461 4.2); in a SMTPUTF8 transaction also
 * "utf-8;" with the address in UTF-8 itself (RFC 6533 3). */
static bool orcpt_ok(const char *p, size_t n, bool utf8)
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
	if (utf8 && str_eq_nocase(p, (size_t)(semi - p), "utf-8"))
		return orcpt_unitext_ok(semi + 1, rest);
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

/* Takes ownership of addr and orcpt. */
static void add_rcpt(struct smtp_session *s, char *addr, char *orcpt, unsigned notify)
{
	if (s->env.n_rcpts == s->rcpt_cap) {
		size_t ncap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
		s->env.rcpts = xrealloc(s->env.rcpts, ncap * sizeof(*s->env.rcpts));
		s->rcpt_cap = ncap;
	}
	struct smtp_rcpt *r = &s->env.rcpts[s->env.n_rcpts++];
	r->addr = addr;
	r->orcpt = orcpt;
	r->notify = notify;
}

/* RCPT and DATA need a transaction begun with MAIL, and no BDAT in it
 * yet (RFC 3030: a transaction is DATA or BDAT, never both). */
static bool in_transaction(struct smtp_session *s, const char *line, size_t len,
			   const char *after_bdat)
{
	if (!s->helo_done) {
		refuse(s, line, len, "503 5.5.1 Send HELO/EHLO first");
		return false;
	}
	if (!s->env.sender) {
		refuse(s, line, len, "503 5.5.1 Need MAIL command");
		return false;
	}
	if (s->bdat_used) {
		refuse(s, line, len, "%s", after_bdat);
		return false;
	}
	return true;
}

static void cmd_rcpt(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c)
{
	if (!in_transaction(s, line, len, "503 5.5.1 RCPT not allowed during BDAT"))
		return;
	if (s->env.n_rcpts >= s->pol->rcpt_max) {
		/* RFC 5321 §4.5.3.1.10: the client sends the rest in another
		 * transaction, so this is no error; only a client that goes on
		 * for as many again past the limit is counted. */
		if (++s->n_rcpt_over > s->pol->rcpt_max)
			refuse(s, line, len, "452 4.5.3 Too many recipients");
		else
			refuse_nocount(s, line, len, "452 4.5.3 Too many recipients");
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
	if (np > 0 && !s->env.esmtp) {
		refuse(s, line, len, "555 5.5.4 RCPT parameters need EHLO");
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
			if (!pa->value || !orcpt_ok(pa->value, pa->value_len, s->env.smtputf8)) {
				refuse(s, line, len, "501 5.5.4 Invalid value for ORCPT parameter");
				return;
			}
		} else {
			refuse(s, line, len, "555 5.5.4 Unsupported parameter");
			return;
		}
	}
	bool bare = path.domain == NULL;
	if (bare && !str_eq_nocase(path.local, path.local_len, "postmaster")) {
		refuse(s, line, len, "501 5.1.3 Invalid recipient address");
		return;
	}
	bool local = !bare && smtp_domain_in_list(path.domain, path.domain_len,
						  s->pol->local_domains, s->pol->n_local_domains);
	/* An authenticated user relays anywhere, in any address form: the
	 * address goes to the remote system as given (in canonical form, the
	 * same mailbox by RFC 5321 §4.1.2). */
	if (!s->env.auth_user && !bare) {
		if (relay_trick(&path)) {
			refuse(s, line, len, "550 5.7.1 Relaying denied: address form not accepted");
			return;
		}
		if (!local) {
			refuse(s, line, len, "550 5.7.1 Relaying denied");
			return;
		}
	}
	char *addr = path_canonical_dup(&path);
	if (!addr) {
		refuse(s, line, len, "501 5.1.3 Invalid recipient address");
		return;
	}
	if (local && s->pol->check_rcpt_local) {
		start_lookup(s, PEND_RCPT, line, len, addr, strlen(addr));
		free(addr);
		s->pend_orcpt = orcpt ? str_ndup(orcpt->value, orcpt->value_len) : NULL;
		s->pend_notify = notify;
		return;
	}
	rcpt_ok(s, line, len, addr, orcpt ? str_ndup(orcpt->value, orcpt->value_len) : NULL,
		notify, -1);
}

static void cmd_data(struct smtp_session *s, const char *line, size_t len,
		     const struct smtp_cmd *c)
{
	if (!in_transaction(s, line, len, "503 5.5.1 DATA not allowed after BDAT"))
		return;
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
	bool sized = i > 0 && parse_u64(p, i, &size, &ovf) && !ovf;
	bool ok = sized;
	if (ok && i < n) {
		size_t j = i;
		while (j < n && p[j] == ' ')
			j++;
		last = j > i && str_eq_nocase(p + j, n - j, "LAST");
		ok = last;
	}
	if (!sized) {
		/* Without a size the chunk cannot be told from the commands
		 * after it: going on would run message text as commands. */
		refuse(s, line, len, "421 4.7.0 %s BDAT without a valid size, closing connection",
		       s->pol->hostname);
		body_abort(s);
		set_closing(s);
		return;
	}
	s->bdat_left = size;
	s->bdat_chunk = size;
	if (!ok || tls_block || !s->helo_done || !s->env.sender || s->env.n_rcpts == 0) {
		/* Refused, but its chunk is still read and thrown away (RFC
		 * 3030: exactly size octets follow, whatever they hold). */
		s->skip_why = tls_block ? SKIP_TLS
			      : !ok ? SKIP_SYNTAX
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

/* Counts a command that sends no mail; true when it is one too many.
 * MAIL counts (a transaction begun, not yet a message), RSET does not:
 * RFC 5321 4.1.1.5 forbids closing the connection as its result, and a
 * MAIL/RSET cycle is caught at its MAIL. */
static bool nonmail_over(struct smtp_session *s, enum smtp_verb v)
{
	switch (v) {
	case SMTP_CMD_NOOP: case SMTP_CMD_VRFY: case SMTP_CMD_EXPN: case SMTP_CMD_HELP:
	case SMTP_CMD_HELO: case SMTP_CMD_EHLO: case SMTP_CMD_MAIL:
		break;
	default:
		return false;
	}
	return s->pol->nonmail_max > 0 && ++s->n_nonmail > s->pol->nonmail_max;
}

static void exec_cmd(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	smtp_parse_cmd(line, len, &c);
	/* After a refused AUTH the client may go on with its SASL responses
	 * (base64 credentials): until a command is recognised again, a line
	 * that is none is not logged. */
	if (c.verb != SMTP_CMD_UNKNOWN)
		s->after_auth = false;
	if (c.verb == SMTP_CMD_UNKNOWN && s->after_auth && !line_is_auth(line, len)) {
		line = auth_tail_log;
		len = sizeof(auth_tail_log) - 1;
	}
	if (c.verb == SMTP_CMD_UNKNOWN && !s->after_auth && smtp_is_http_request(line, len)) {
		/* Nothing good comes after it (ALPACA, request smuggling into
		 * SMTP): the connection ends here, unread lines unexecuted. */
		refuse(s, line, len, "421 4.7.0 %s HTTP request refused, closing connection",
		       s->pol->hostname);
		body_abort(s);
		set_closing(s);
		return;
	}
	if (s->connect_refused) {
		if (c.verb == SMTP_CMD_QUIT) {
			reply(s, "221 2.0.0 %s closing connection", s->pol->hostname);
			set_closing(s);
		} else {
			refuse(s, line, len, "503 5.5.1 Bad sequence of commands: this connection was "
			       "refused; send QUIT");
		}
		return;
	}
	if (nonmail_over(s, c.verb)) {
		/* A session kept open with NOOPs (or RSETs) before each timeout
		 * holds a slot of smtp_accept_max for ever. */
		refuse(s, line, len, "421 4.7.0 %s Too many commands that send no mail, closing "
		       "connection", s->pol->hostname);
		body_abort(s);
		set_closing(s);
		return;
	}
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
			auth_cmd_set(s, c.arg, c.arg_len);
			refuse_auth(s, "530 5.7.0 Must issue a STARTTLS command first");
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
		cmd_auth(s, &c);
		break;
	default:
		refuse(s, line, len, "500 5.5.1 Command unrecognized");
		break;
	}
}

/* A line refused before it was parsed.  refuse() never logs more than
 * "AUTH <mech>" of an AUTH line; a line that may be a SASL response of a
 * refused AUTH is not logged at all. */
static void refuse_line(struct smtp_session *s, const uint8_t *p, size_t n, const char *msg)
{
	if (s->after_auth && !line_is_auth(p, n)) {
		refuse(s, auth_tail_log, sizeof(auth_tail_log) - 1, "%s", msg);
		return;
	}
	refuse(s, p, n, "%s", msg);
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
		refuse_line(s, p, n, "500 5.5.2 Line too long");
		return true;
	}
	size_t ll = (size_t)(lf - p) + 1;
	buf_consume(&s->in, ll); /* the bytes stay in place until the next event */
	if (ll > max) {
		refuse_line(s, p, ll - 1, "500 5.5.2 Line too long");
		return true;
	}
	if (ll < 2 || p[ll - 2] != '\r' || memchr(p, '\r', ll - 2)) {
		refuse_line(s, p, ll - 1, "500 5.5.2 Syntax error: bare CR or LF in command");
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
	       (s->state == ST_WAIT_LOOKUP && s->pend == PEND_FROM) || s->bdat_used;
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
		case ST_AUTH:
			if (buf_len(&s->out) > SMTP_OUT_HIGH_WATER)
				return;
			more = step_auth(s);
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
	sasl_free(s->sasl_old);
	s->sasl_old = NULL;
	s->sasl_ref = false;
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
	buf_init(&s->auth_cmd, 64);
	buf_init(&s->chal, 2 * policy->line_max + 4096);
	buf_init(&s->pend_cmd, SMTP_LOG_CMD_MAX);
	buf_init(&s->hline, policy->data_line_max + 2);
	buf_init(&s->fromv, SMTP_FROM_MAX);
	if (client->ip && inet_pton(AF_INET, client->ip, s->cli_addr) == 1)
		s->cli_family = AF_INET;
	else if (client->ip && inet_pton(AF_INET6, client->ip, s->cli_addr) == 1)
		s->cli_family = AF_INET6;
	s->state = ST_CMD;
	if (client->local_user) {
		s->auth_user = str_dup(client->local_user);
		s->env.auth_user = s->auth_user;
	}
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
	s->sasl_ref = false;
	auth_forget(s);
	sasl_free(s->sasl_old);
	pend_clear(s);
	buf_free(&s->auth_cmd);
	buf_free(&s->chal);
	buf_free(&s->pend_cmd);
	from_clear(s);
	names_clear(s);
	buf_free(&s->hline);
	buf_free(&s->fromv);
	buf_free(&s->in);
	buf_free(&s->out);
	buf_free(&s->logb);
	free(s->acts);
	free(s);
}

void smtp_session_set_space_check(struct smtp_session *s, bool (*fn)(void *ctx, uint64_t size),
				  void *ctx)
{
	s->space_ok = fn;
	s->space_ctx = ctx;
}

void smtp_session_start(struct smtp_session *s)
{
	event_begin(s);
	if (s->closing)
		return;
	if (!acl_pass(s, ACL_CONNECT, NULL, 0, NULL, -1))
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
	if (s->closing || s->state == ST_WAIT_COMMIT || s->state == ST_WAIT_TLS ||
	    s->state == ST_WAIT_AUTHD || s->state == ST_WAIT_LOOKUP)
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
	auth_forget(s);
	pend_clear(s); /* a question still open is answered into the void */
	buf_reset(&s->in);
	s->in_tls = true;
	s->env.tls_version = version;
	s->env.tls_cipher = cipher;
	s->state = ST_CMD;
}

void smtp_session_commit_result(struct smtp_session *s, enum smtp_commit_result r,
				const char *queue_id)
{
	event_begin(s);
	if (s->closing || s->state != ST_WAIT_COMMIT)
		return;
	if (r == SMTP_COMMIT_OK) {
		reply(s, "250 2.0.0 OK queued as %s", queue_id ? queue_id : "");
		/* Both limits count what a client does without sending mail
		 * (as Postfix's error limits do): a mailing list with a stale
		 * address in every message is not cut off after 20 of them. */
		s->n_nonmail = 0;
		s->n_errors = 0;
	}
	else if (r == SMTP_COMMIT_NOSPACE) /* RFC 5321 §4.2.3, RFC 3463 X.3.1 */
		reply(s, "452 4.3.1 Insufficient system storage; try again later");
	else
		reply(s, "451 4.3.0 Local error in processing; try again later");
	reset_tx(s);
	s->state = ST_CMD;
	run(s);
}

void smtp_session_auth_answer(struct smtp_session *s, const struct sasl_answer *a)
{
	event_begin(s);
	if (s->closing || s->state != ST_WAIT_AUTHD || !s->sasl || !a)
		return;
	auth_status(s, sasl_answer(s->sasl, a, &s->chal));
	run(s);
}

void smtp_session_lookup_answer(struct smtp_session *s, enum auth_result r)
{
	event_begin(s);
	if (s->closing || s->state != ST_WAIT_LOOKUP)
		return;
	s->state = ST_CMD;
	const char *cmd = (const char *)buf_ptr(&s->pend_cmd);
	size_t cl = buf_len(&s->pend_cmd);
	if (s->pend == PEND_FROM) {
		s->pend = PEND_NONE;
		if (r == AUTH_OK && ++s->i_from < s->n_from) {
			from_ask(s);
			return;
		}
		if (r == AUTH_OK) {
			commit_now(s);
		} else {
			const char *bad = s->from_addrs[s->i_from];
			body_abort(s);
			if (r != AUTH_FAIL)
				refuse(s, cmd, cl, "451 4.3.0 Temporary lookup failure");
			else if (reply_safe(bad))
				refuse(s, cmd, cl, "550 5.7.1 From: header address <%s> not owned by "
				       "authenticated user", bad);
			else
				refuse(s, cmd, cl, "550 5.7.1 From: header address not owned by "
				       "authenticated user");
			reset_tx(s);
		}
		from_clear(s);
		buf_reset(&s->pend_cmd);
		run(s);
		return;
	}
	if (s->pend == PEND_SENDER) {
		if (r == AUTH_OK) {
			mail_ok(s, cmd, cl);
		} else {
			reset_tx(s);
			if (r != AUTH_FAIL)
				refuse(s, cmd, cl, "451 4.3.0 Temporary lookup failure");
			else if (reply_safe(s->auth_user))
				refuse(s, cmd, cl, "553 5.7.1 Sender address not owned by authenticated "
					 "user <%s>", s->auth_user);
			else
				refuse(s, cmd, cl, "553 5.7.1 Sender address not owned by authenticated "
					 "user");
		}
	} else if (s->pend == PEND_RCPT) {
		if (r == AUTH_OK) {
			char *addr = s->pend_addr, *orcpt = s->pend_orcpt;
			s->pend_addr = NULL;
			s->pend_orcpt = NULL;
			rcpt_ok(s, cmd, cl, addr, orcpt, s->pend_notify, 1);
		} else if (r == AUTH_FAIL) {
			refuse(s, cmd, cl, "550 5.1.1 <%s>: Recipient address rejected: User unknown",
			       s->pend_addr);
		} else {
			refuse(s, cmd, cl, "451 4.3.0 Temporary lookup failure");
		}
	}
	pend_clear(s);
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

void smtp_session_shutdown_final(struct smtp_session *s)
{
	event_begin(s);
	if (s->closing || s->state == ST_WAIT_COMMIT)
		return;
	shutdown_now(s);
}

void smtp_session_eof(struct smtp_session *s)
{
	event_begin(s);
	body_abort(s);
	auth_end(s);
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
	if (a->a.type == SMTP_ACT_LOG_REFUSED || a->a.type == SMTP_ACT_LOG_ACL) {
		const uint8_t *base = buf_ptr(&s->logb);
		s->cur.data = base + a->cmd_off;
		s->cur.reply = (const char *)base + a->reply_off;
	} else if (a->a.type == SMTP_ACT_LOG_AUTH) {
		s->cur.data = buf_ptr(&s->logb) + a->cmd_off;
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

bool smtp_session_in_body(const struct smtp_session *s)
{
	return s->state == ST_DATA || s->state == ST_BDAT || s->state == ST_BDAT_SKIP;
}

bool smtp_session_closing(const struct smtp_session *s)
{
	return s->closing;
}
