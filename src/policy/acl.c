/*
 * ACL rules: parser, printer and pure evaluator.  Every value is parsed
 * and checked when the configuration is read, so that evaluation (per
 * SMTP command, on hostile input) is only comparisons and cannot fail.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy.h"

/* An SMTP reply line is at most 512 bytes with its CRLF (RFC 5321 4.5.3.1.5). */
#define ACL_MESSAGE_MAX 510
/* Bytes of a rate key taken from the session (sender address, user). */
#define ACL_RATE_KEY_MAX 512

enum acl_verb { V_ACCEPT, V_DENY, V_DEFER, V_WARN };
static const char *const verb_names[] = { "accept", "deny", "defer", "warn" };

enum cond_kind {
	C_AUTH, C_TLS, C_TLSVER, C_CLIENT, C_SENDER_DOM, C_RCPT_DOM, C_RCPT_LOCAL,
	C_SIZE, C_HEADER, C_RATE,
};

enum cmp_op { OP_EQ, OP_LT, OP_LE, OP_GT, OP_GE };
static const char *const op_names[] = { "=", "<", "<=", ">", ">=" };

enum rate_key { RK_CLIENT, RK_USER, RK_SENDER };
static const char *const rate_key_names[] = { "client", "user", "sender" };

#define ST(s) (1u << (s))
#define ST_ALL (ST(ACL_CONNECT) | ST(ACL_HELO) | ST(ACL_MAIL) | ST(ACL_RCPT) | ST(ACL_DATA))

static const struct cond_def {
	const char *name;
	enum cond_kind kind;
	unsigned stages;
} cond_defs[] = {
	{ "authenticated", C_AUTH, ST_ALL },
	{ "tls", C_TLS, ST_ALL },
	{ "tls_version", C_TLSVER, ST_ALL },
	{ "client", C_CLIENT, ST_ALL },
	{ "sender_domain", C_SENDER_DOM, ST(ACL_MAIL) | ST(ACL_RCPT) | ST(ACL_DATA) },
	{ "recipient_domain", C_RCPT_DOM, ST(ACL_RCPT) },
	{ "recipient_local", C_RCPT_LOCAL, ST(ACL_RCPT) },
	{ "size", C_SIZE, ST(ACL_MAIL) | ST(ACL_DATA) },
	{ "header", C_HEADER, ST(ACL_DATA) },
	{ "rate", C_RATE, ST_ALL },
};
#define N_CONDS (sizeof(cond_defs) / sizeof(cond_defs[0]))
#define COND_FORMS "authenticated, tls, tls_version, client, sender_domain, " \
	"recipient_domain, recipient_local, size, header or rate"

struct cidr {
	int family;          /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

struct acl_cond {
	const struct cond_def *def;
	bool neg;
	enum cmp_op op;
	char *text;          /* value as written (lists, header name), for printing */
	uint64_t num;        /* size, tls version, rate count */
	uint64_t window;     /* rate */
	enum rate_key key;   /* rate */
	char **items;        /* users or domains (lowercased, no trailing dot) */
	size_t n_items;
	bool local;          /* domain list has "@local" */
	struct cidr *nets;
	size_t n_nets;
};

struct acl_rule {
	enum acl_verb verb;
	char *message;       /* NULL: default */
	struct acl_cond *conds;
	size_t n_conds;
	int line;
};

struct acl {
	char *name;
	int line;
	struct acl_rule *rules;
	size_t n_rules;
};

const char *acl_stage_name(enum acl_stage s)
{
	static const char *const n[] = { "connect", "helo", "mail", "rcpt", "data" };
	return (unsigned)s < ACL_NSTAGES ? n[s] : "?";
}

struct acl *acl_new(const char *name, int line)
{
	struct acl *a = xcalloc(1, sizeof(*a));
	a->name = str_dup(name);
	a->line = line;
	return a;
}

static void cond_free(struct acl_cond *c)
{
	free(c->text);
	for (size_t i = 0; i < c->n_items; i++)
		free(c->items[i]);
	free(c->items);
	free(c->nets);
}

static void rule_free(struct acl_rule *r)
{
	for (size_t i = 0; i < r->n_conds; i++)
		cond_free(&r->conds[i]);
	free(r->conds);
	free(r->message);
}

void acl_free(struct acl *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_rules; i++)
		rule_free(&a->rules[i]);
	free(a->rules);
	free(a->name);
	free(a);
}

const char *acl_name(const struct acl *a) { return a->name; }
int acl_line(const struct acl *a) { return a->line; }
size_t acl_n_rules(const struct acl *a) { return a->n_rules; }
int acl_rule_line(const struct acl *a, size_t i) { return i < a->n_rules ? a->rules[i].line : 0; }

/* ---- lexing ------------------------------------------------------------ */

struct lex {
	const char *p, *end;
	struct err *e;
	struct buf tok;     /* last token read */
};

static bool blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

static void skip_blanks(struct lex *x)
{
	while (x->p < x->end && blank(*x->p))
		x->p++;
}

static bool at_end(struct lex *x)
{
	skip_blanks(x);
	return x->p >= x->end;
}

/* Quotes untrusted (file) text for a message: printable, cut. */
static const char *quoted(struct buf *b, const char *s, size_t n)
{
	buf_reset(b);
	str_escape(b, s, n, 60);
	const char *r = buf_cstr(b);
	return r ? r : "?";
}

/* A value: a double-quoted string (\" and \\ escapes) or a run of
 * non-blank bytes.  The result is in x->tok, NUL-terminated. */
static int read_value(struct lex *x, const char *what)
{
	buf_reset(&x->tok);
	skip_blanks(x);
	if (x->p >= x->end)
		return err_set(x->e, "%s needs a value", what);
	if (*x->p == '"') {
		x->p++;
		for (;;) {
			if (x->p >= x->end)
				return err_set(x->e, "unterminated quoted string in %s (a '\"' is "
					       "missing at the end)", what);
			char ch = *x->p++;
			if (ch == '"')
				break;
			if (ch == '\\') {
				if (x->p >= x->end || (*x->p != '"' && *x->p != '\\'))
					return err_set(x->e, "bad escape in the quoted string of %s: "
						       "only \\\" and \\\\ are allowed", what);
				ch = *x->p++;
			}
			if (buf_append(&x->tok, &ch, 1) < 0)
				return err_set(x->e, "value of %s too long", what);
		}
		if (x->p < x->end && !blank(*x->p))
			return err_set(x->e, "a blank must follow the closing '\"' of %s", what);
	} else {
		const char *s = x->p;
		while (x->p < x->end && !blank(*x->p))
			x->p++;
		if (buf_append(&x->tok, s, (size_t)(x->p - s)) < 0)
			return err_set(x->e, "value of %s too long", what);
	}
	if (!buf_cstr(&x->tok))
		return err_set(x->e, "out of memory");
	return 0;
}

static const char *tok(struct lex *x)
{
	const char *s = buf_cstr(&x->tok);
	return s ? s : "";
}

/* An operator if one is next (returns 1), else 0 (nothing consumed). */
static int read_op(struct lex *x, enum cmp_op *op)
{
	const char *save = x->p;
	skip_blanks(x);
	if (x->p >= x->end) {
		x->p = save;
		return 0;
	}
	char c0 = *x->p, c1 = x->p + 1 < x->end ? x->p[1] : '\0';
	if (c0 == '=') {
		*op = OP_EQ;
		x->p++;
	} else if (c0 == '<' || c0 == '>') {
		bool eq = c1 == '=';
		*op = c0 == '<' ? (eq ? OP_LE : OP_LT) : (eq ? OP_GE : OP_GT);
		x->p += eq ? 2 : 1;
	} else {
		x->p = save;
		return 0;
	}
	return 1;
}

/*
 * A list value: quoted, or unquoted words joined by single blanks for as
 * long as a separator joins them, so that "a : b" reads as written in
 * Exim while "a b" is two conditions.
 */
static int read_list_value(struct lex *x, const char *what)
{
	skip_blanks(x);
	if (x->p < x->end && *x->p == '"')
		return read_value(x, what);
	struct buf all;
	buf_init(&all, x->tok.max);
	char sep = ':';
	int r = 0;
	for (bool first = true;; first = false) {
		if (read_value(x, what) < 0) {
			r = -1;
			break;
		}
		const char *t = tok(x);
		size_t n = strlen(t);
		if (first && t[0] == '<' && t[1] && !blank(t[1]))
			sep = t[1];
		if ((!first && buf_puts(&all, " ") < 0) || buf_puts(&all, t) < 0) {
			r = err_set(x->e, "value of %s too long", what);
			break;
		}
		bool more = n > 0 && t[n - 1] == sep;
		if (first && n == 2 && t[0] == '<')
			more = true;
		const char *save = x->p;
		skip_blanks(x);
		if (x->p < x->end && *x->p == sep)
			more = true;
		x->p = save;
		if (!more || at_end(x)) {
			x->p = save;
			break;
		}
	}
	if (r == 0) {
		buf_reset(&x->tok);
		if (buf_append(&x->tok, buf_ptr(&all), buf_len(&all)) < 0 || !buf_cstr(&x->tok))
			r = err_set(x->e, "value of %s too long", what);
	}
	buf_free(&all);
	return r;
}

/* ---- values ---------------------------------------------------------- */

static void format_size(struct buf *out, uint64_t v)
{
	static const char suffix[] = "GMK";
	for (int i = 0; i < 3; i++) {
		uint64_t unit = 1ull << (10 * (3 - i));
		if (v >= unit && v % unit == 0) {
			buf_printf(out, "%llu%c", (unsigned long long)(v / unit), suffix[i]);
			return;
		}
	}
	buf_printf(out, "%llu", (unsigned long long)v);
}

/* Seconds, or number+unit groups (s, m, h, d) such as 1h30m; at most a
 * year, which keeps window arithmetic far from overflow. */
static int parse_time(const char *s, uint64_t *out)
{
	uint64_t total;
	if (num_parse_time(s, false, &total) < 0 || total < 1 || total > 366ull * 86400)
		return -1;
	*out = total;
	return 0;
}

static void format_time(struct buf *out, uint64_t s)
{
	static const struct { uint64_t sec; char unit; } u[] = {
		{ 86400, 'd' }, { 3600, 'h' }, { 60, 'm' }, { 1, 's' },
	};
	for (size_t i = 0; i < 4; i++) {
		if (s >= u[i].sec) {
			buf_printf(out, "%llu%c", (unsigned long long)(s / u[i].sec), u[i].unit);
			s %= u[i].sec;
		}
	}
}

static const char *const tls_names[] = { "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" };

static int parse_tls_version(const char *s)
{
	for (int k = 0; k < 4; k++)
		if (str_eq_nocase(s, strlen(s), tls_names[k]))
			return 0x0301 + k;
	if (str_eq_nocase(s, strlen(s), "TLSv1.0"))
		return 0x0301;
	return -1;
}

struct list_ctx {
	struct acl_cond *c;
	struct err *e;
	struct buf q;
};

static int add_net(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	struct cidr n = { 0 };
	const char *slash = strchr(item, '/');
	size_t alen = slash ? (size_t)(slash - item) : strlen(item);
	char *a = str_ndup(item, alen);
	unsigned maxp;
	if (inet_pton(AF_INET, a, n.addr) == 1) {
		n.family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, a, n.addr) == 1) {
		n.family = AF_INET6;
		maxp = 128;
	} else {
		free(a);
		return err_set(x->e, "bad address '%s' in client: expected an IPv4 or IPv6 "
			       "address with an optional /prefix, such as 192.0.2.0/24 or "
			       "2001:db8::/32 (colons doubled, or the list starting with \"<;\")",
			       quoted(&x->q, item, strlen(item)));
	}
	free(a);
	n.prefix = maxp;
	if (slash) {
		const char *s = slash + 1;
		uint64_t v;
		if (num_parse_u64(&s, &v) < 0 || *s != '\0' || v > maxp || s - slash > 4)
			return err_set(x->e, "bad prefix length in '%s' in client: expected /0 to "
				       "/%u", quoted(&x->q, item, strlen(item)), maxp);
		n.prefix = (unsigned)v;
	}
	/* Host bits set below the prefix are a typo more often than not. */
	size_t bytes = n.family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < bytes; i++) {
		unsigned bit0 = (unsigned)i * 8;
		uint8_t mask = bit0 >= n.prefix ? 0xff
			     : bit0 + 8 <= n.prefix ? 0 : (uint8_t)(0xff >> (n.prefix - bit0));
		if (n.addr[i] & mask)
			return err_set(x->e, "'%s' in client has bits set after the /%u prefix: "
				       "write the network address", quoted(&x->q, item, strlen(item)),
				       n.prefix);
	}
	struct acl_cond *c = x->c;
	c->nets = xrealloc(c->nets, (c->n_nets + 1) * sizeof(*c->nets));
	c->nets[c->n_nets++] = n;
	return 0;
}

static void add_item(struct acl_cond *c, char *s)
{
	c->items = xrealloc(c->items, (c->n_items + 1) * sizeof(*c->items));
	c->items[c->n_items++] = s;
}

static int add_user(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	add_item(x->c, str_dup(item));
	return 0;
}

static bool domain_chars_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '[' || ch == ']' ||
		      ch == ':' || ch >= 0x80))
			return false;
	}
	return true;
}

static int add_domain(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	if (strcmp(item, "@local") == 0) {
		x->c->local = true;
		return 0;
	}
	char *d = str_dup(item);
	size_t n = strlen(d);
	if (n > 1 && d[n - 1] == '.')
		d[--n] = '\0';
	str_lower(d);
	const char *body = strncmp(d, "*.", 2) == 0 ? d + 2 : d;
	if (!domain_chars_ok(body)) {
		free(d);
		return err_set(x->e, "bad domain '%s' in %s: expected a domain, *.domain (its "
			       "subdomains) or @local (the local_domains)",
			       quoted(&x->q, item, strlen(item)), x->c->def->name);
	}
	add_item(x->c, d);
	return 0;
}

static bool header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
			return false;
	return true;
}

/* "550 5.7.1 text": a reply code of the class, then an enhanced code of
 * the same class (RFC 3463). */
static bool message_ok(const char *m, char cls)
{
	if (!(m[0] == cls && isdigit((unsigned char)m[1]) && isdigit((unsigned char)m[2]) &&
	      m[3] == ' ' && m[4] == cls && m[5] == '.'))
		return false;
	const char *s = m + 6;
	for (int part = 0; part < 2; part++) {
		const char *d = s;
		while (isdigit((unsigned char)*s))
			s++;
		if (s == d || s - d > 3)
			return false;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0' || *s == ' ';
}

/* ---- rule parser ----------------------------------------------------- */

static int parse_cond(struct lex *x, struct acl_cond *c, struct buf *q)
{
	struct err *e = x->e;
	skip_blanks(x);
	if (*x->p == '!') {
		c->neg = true;
		x->p++;
		skip_blanks(x);
	}
	const char *s = x->p;
	while (x->p < x->end && (isalnum((unsigned char)*x->p) || *x->p == '_'))
		x->p++;
	size_t n = (size_t)(x->p - s);
	if (n == 0)
		return err_set(e, "expected a condition (%s) at '%s'", COND_FORMS,
			       quoted(q, s, (size_t)(x->end - s)));
	for (size_t i = 0; i < N_CONDS; i++)
		if (strlen(cond_defs[i].name) == n && memcmp(cond_defs[i].name, s, n) == 0)
			c->def = &cond_defs[i];
	if (!c->def)
		return err_set(e, "unknown condition '%s': expected %s", quoted(q, s, n),
			       COND_FORMS);
	const char *name = c->def->name;
	if (x->p < x->end && !blank(*x->p) && *x->p != '=' && *x->p != '<' && *x->p != '>') {
		const char *w = x->p;
		while (w < x->end && !blank(*w))
			w++;
		return err_set(e, "unknown condition '%s': expected %s",
			       quoted(q, s, (size_t)(w - s)), COND_FORMS);
	}
	enum cmp_op op = OP_EQ;
	int has_op = read_op(x, &op);
	c->op = op;
	struct list_ctx lc = { .c = c, .e = e };
	buf_init(&lc.q, 512);
	int r = 0;
	switch (c->def->kind) {
	case C_AUTH:
	case C_CLIENT:
	case C_SENDER_DOM:
	case C_RCPT_DOM:
	case C_HEADER:
		if (!has_op) {
			if (c->def->kind == C_AUTH)
				break;
			r = err_set(e, "%s needs '= VALUE'", name);
			break;
		}
		if (op != OP_EQ) {
			r = err_set(e, "%s takes '=', not '%s'", name, op_names[op]);
			break;
		}
		if ((c->def->kind == C_HEADER ? read_value(x, name) : read_list_value(x, name)) < 0) {
			r = -1;
			break;
		}
		c->text = str_dup(tok(x));
		if (c->def->kind == C_AUTH)
			r = list_foreach(c->text, add_user, &lc);
		else if (c->def->kind == C_CLIENT)
			r = list_foreach(c->text, add_net, &lc);
		else if (c->def->kind == C_HEADER)
			r = header_name_ok(c->text) ? 0 :
			    err_set(e, "bad header field name '%s': expected printable characters "
				    "without blanks or ':'", quoted(q, c->text, strlen(c->text)));
		else
			r = list_foreach(c->text, add_domain, &lc);
		if (r == 0 && c->def->kind != C_HEADER && c->n_items == 0 && c->n_nets == 0 &&
		    !c->local)
			r = err_set(e, "%s lists nothing: expected a list such as %s", name,
				    c->def->kind == C_CLIENT ? "192.0.2.0/24 : 10.0.0.0/8"
				    : c->def->kind == C_AUTH ? "alice : bob"
				    : "@local : example.org");
		break;
	case C_TLS:
	case C_RCPT_LOCAL:
		if (has_op)
			r = err_set(e, "%s takes no value", name);
		break;
	case C_TLSVER: {
		if (!has_op) {
			r = err_set(e, "tls_version needs a comparison, such as tls_version >= TLSv1.2");
			break;
		}
		if (read_value(x, name) < 0) {
			r = -1;
			break;
		}
		int v = parse_tls_version(tok(x));
		if (v < 0)
			r = err_set(e, "bad TLS version '%s': expected TLSv1, TLSv1.1, TLSv1.2 or "
				    "TLSv1.3", quoted(q, tok(x), strlen(tok(x))));
		c->num = (uint64_t)(v < 0 ? 0 : v);
		break;
	}
	case C_SIZE:
		if (!has_op || op == OP_EQ) {
			r = err_set(e, "size needs >, >=, < or <= and a size, such as size > 10M");
			break;
		}
		if (read_value(x, name) < 0) {
			r = -1;
			break;
		}
		if (num_parse_size(tok(x), &c->num) < 0)
			r = err_set(e, "bad size '%s': expected a number with an optional K, M or G "
				    "suffix", quoted(q, tok(x), strlen(tok(x))));
		break;
	case C_RATE: {
		if (!has_op || (op != OP_GT && op != OP_GE)) {
			r = err_set(e, "bad rate: expected rate > N / TIME per client|user|sender");
			break;
		}
		/* "10/1h", "10 / 1h", "10 /1h", "10/ 1h": gather until both sides. */
		struct buf v;
		buf_init(&v, 256);
		for (int k = 0; k < 3 && r == 0; k++) {
			const char *cur = buf_cstr(&v);
			const char *sl = cur ? strchr(cur, '/') : NULL;
			if (sl && sl[1])
				break;
			if (at_end(x) || read_value(x, name) < 0 || buf_puts(&v, tok(x)) < 0)
				r = -1;
		}
		const char *vs = buf_cstr(&v);
		const char *sl = vs ? strchr(vs, '/') : NULL;
		if (r == 0 && sl && sl[1]) {
			char *cnt = str_ndup(vs, (size_t)(sl - vs));
			const char *cs = cnt;
			if (num_parse_u64(&cs, &c->num) < 0 || *cs != '\0')
				r = -1;
			else if (parse_time(sl + 1, &c->window) < 0)
				r = err_set(e, "bad rate window '%s': expected a time from 1s to 366d "
					    "such as 1h or 30m", quoted(q, sl + 1, strlen(sl + 1)));
			free(cnt);
		} else {
			r = -1;
		}
		if (r == 0) {
			skip_blanks(x);
			if (read_value(x, name) < 0 || strcmp(tok(x), "per") != 0)
				r = -1;
			else if (read_value(x, name) < 0)
				r = -1;
			else {
				r = -1;
				for (int k = 0; k < 3; k++) {
					if (strcmp(tok(x), rate_key_names[k]) == 0) {
						c->key = (enum rate_key)k;
						r = 0;
					}
				}
			}
		}
		if (r < 0 && (e->msg[0] == '\0' || strncmp(e->msg, "bad rate window", 15) != 0))
			err_set(e, "bad rate: expected rate > N / TIME per client, user or sender, "
				"such as rate > 100 / 1h per client");
		buf_free(&v);
		break;
	}
	}
	buf_free(&lc.q);
	if (r == 0 && x->p < x->end && !blank(*x->p))
		r = err_set(e, "unexpected '%s' after %s", quoted(q, x->p, (size_t)(x->end - x->p)),
			    name);
	return r;
}

int acl_parse_line(struct acl *a, const char *line, size_t n, int lineno, struct err *e)
{
	struct err tmp;
	if (!e)
		e = &tmp;
	e->msg[0] = '\0';
	struct lex x = { .p = line, .end = line + n, .e = e };
	buf_init(&x.tok, ACL_MESSAGE_MAX * 4 + 4096);
	struct buf q;
	buf_init(&q, 512);
	struct acl_rule r = { .line = lineno };
	int rc = 0;

	if (memchr(line, '\0', n)) {
		rc = err_set(e, "NUL byte in an ACL rule");
		goto out;
	}
	skip_blanks(&x);
	const char *s = x.p;
	while (x.p < x.end && !blank(*x.p))
		x.p++;
	size_t vn = (size_t)(x.p - s);
	size_t v;
	for (v = 0; v < 4; v++)
		if (strlen(verb_names[v]) == vn && memcmp(verb_names[v], s, vn) == 0)
			break;
	if (v == 4) {
		rc = err_set(e, "unknown ACL verb '%s': expected accept, deny, defer or warn",
			     quoted(&q, s, vn));
		goto out;
	}
	r.verb = (enum acl_verb)v;

	while (!at_end(&x)) {
		const char *m = x.p;
		static const char kw[] = "message";
		size_t kn = sizeof(kw) - 1;
		if ((size_t)(x.end - m) >= kn && memcmp(m, kw, kn) == 0 &&
		    (m + kn == x.end || blank(m[kn]) || m[kn] == '=')) {
			x.p += kn;
			enum cmp_op op;
			if (!read_op(&x, &op) || op != OP_EQ) {
				rc = err_set(e, "expected message = \"text\"");
				goto out;
			}
			if (r.message) {
				rc = err_set(e, "message given twice");
				goto out;
			}
			skip_blanks(&x);
			if (x.p >= x.end || *x.p != '"') {
				rc = err_set(e, "the message must be in double quotes: message = "
					     "\"550 5.7.1 text\"");
				goto out;
			}
			if (read_value(&x, "message") < 0) {
				rc = -1;
				goto out;
			}
			const char *t = tok(&x);
			size_t tn = strlen(t);
			if (tn == 0 || tn > ACL_MESSAGE_MAX) {
				rc = err_set(e, "the message must have 1 to %d characters",
					     ACL_MESSAGE_MAX);
				goto out;
			}
			for (size_t i = 0; i < tn; i++) {
				if ((unsigned char)t[i] < 0x20 || (unsigned char)t[i] > 0x7e) {
					rc = err_set(e, "the message may contain only printable ASCII "
						     "characters");
					goto out;
				}
			}
			if (r.verb == V_DENY && !message_ok(t, '5')) {
				rc = err_set(e, "a deny message must start with a 5xx reply code and a "
					     "5.x.x enhanced status code, such as \"550 5.7.1 text\"");
				goto out;
			}
			if (r.verb == V_DEFER && !message_ok(t, '4')) {
				rc = err_set(e, "a defer message must start with a 4xx reply code and a "
					     "4.x.x enhanced status code, such as \"451 4.7.1 text\"");
				goto out;
			}
			if (r.verb == V_ACCEPT) {
				rc = err_set(e, "accept takes no message (the command's normal reply "
					     "is sent)");
				goto out;
			}
			r.message = str_dup(t);
			continue;
		}
		r.conds = xrealloc(r.conds, (r.n_conds + 1) * sizeof(*r.conds));
		struct acl_cond *c = &r.conds[r.n_conds++];
		memset(c, 0, sizeof(*c));
		if (parse_cond(&x, c, &q) < 0) {
			rc = -1;
			goto out;
		}
	}
	a->rules = xrealloc(a->rules, (a->n_rules + 1) * sizeof(*a->rules));
	a->rules[a->n_rules++] = r;
	memset(&r, 0, sizeof(r));
out:
	rule_free(&r);
	buf_free(&x.tok);
	buf_free(&q);
	return rc;
}

/* ---- stages ---------------------------------------------------------- */

static unsigned cond_stages(const struct acl_cond *c)
{
	unsigned st = c->def->stages;
	/* A sender exists from MAIL on. */
	if (c->def->kind == C_RATE && c->key == RK_SENDER)
		st &= ST(ACL_MAIL) | ST(ACL_RCPT) | ST(ACL_DATA);
	return st;
}

static void stage_list(struct buf *b, unsigned st)
{
	bool first = true;
	for (int s = 0; s < ACL_NSTAGES; s++) {
		if (!(st & ST(s)))
			continue;
		buf_printf(b, "%s%s", first ? "" : ", ", acl_stage_name((enum acl_stage)s));
		first = false;
	}
}

unsigned acl_stages(const struct acl *a)
{
	unsigned st = ST_ALL;
	for (size_t i = 0; i < a->n_rules; i++)
		for (size_t k = 0; k < a->rules[i].n_conds; k++)
			st &= cond_stages(&a->rules[i].conds[k]);
	return st;
}

int acl_check_stage(const struct acl *a, enum acl_stage s, struct err *e)
{
	for (size_t i = 0; i < a->n_rules; i++) {
		const struct acl_rule *r = &a->rules[i];
		for (size_t k = 0; k < r->n_conds; k++) {
			unsigned st = cond_stages(&r->conds[k]);
			if (st & ST(s))
				continue;
			struct buf b;
			buf_init(&b, 256);
			stage_list(&b, st);
			const char *ls = buf_cstr(&b);
			err_set(e, "ACL %s (line %d) uses %s%s, which has no meaning at the %s "
				"stage (only at: %s)", a->name, r->line, r->conds[k].def->name,
				r->conds[k].def->kind == C_RATE && r->conds[k].key == RK_SENDER
				? " per sender" : "", acl_stage_name(s), ls ? ls : "");
			buf_free(&b);
			return -1;
		}
	}
	return 0;
}

/* ---- printing -------------------------------------------------------- */

static void put_value(struct buf *out, const char *v)
{
	bool plain = *v != '\0' && *v != '"';
	for (const char *s = v; *s && plain; s++)
		if (blank(*s))
			plain = false;
	if (plain) {
		buf_puts(out, v);
		return;
	}
	buf_puts(out, "\"");
	for (const char *s = v; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_puts(out, "\\");
		buf_append(out, s, 1);
	}
	buf_puts(out, "\"");
}

void acl_format_rule(struct buf *out, const struct acl *a, size_t i)
{
	if (i >= a->n_rules)
		return;
	const struct acl_rule *r = &a->rules[i];
	buf_puts(out, verb_names[r->verb]);
	if (r->message) {
		buf_puts(out, " message = \"");
		for (const char *s = r->message; *s; s++) {
			if (*s == '"' || *s == '\\')
				buf_puts(out, "\\");
			buf_append(out, s, 1);
		}
		buf_puts(out, "\"");
	}
	for (size_t k = 0; k < r->n_conds; k++) {
		const struct acl_cond *c = &r->conds[k];
		buf_printf(out, " %s%s", c->neg ? "!" : "", c->def->name);
		switch (c->def->kind) {
		case C_AUTH:
		case C_CLIENT:
		case C_SENDER_DOM:
		case C_RCPT_DOM:
		case C_HEADER:
			if (c->text) {
				buf_puts(out, " = ");
				put_value(out, c->text);
			}
			break;
		case C_TLS:
		case C_RCPT_LOCAL:
			break;
		case C_TLSVER:
			buf_printf(out, " %s %s", op_names[c->op], tls_names[c->num - 0x0301]);
			break;
		case C_SIZE:
			buf_printf(out, " %s ", op_names[c->op]);
			format_size(out, c->num);
			break;
		case C_RATE:
			buf_printf(out, " %s %llu / ", op_names[c->op], (unsigned long long)c->num);
			format_time(out, c->window);
			buf_printf(out, " per %s", rate_key_names[c->key]);
			break;
		}
	}
}

/* ---- evaluation ------------------------------------------------------ */

static bool net_match(const struct cidr *n, int fam, const uint8_t *addr)
{
	if (n->family != fam)
		return false;
	unsigned full = n->prefix / 8, rest = n->prefix % 8;
	if (memcmp(n->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (n->addr[full] & mask) == (addr[full] & mask);
}

static bool client_match(const struct acl_cond *c, const struct acl_ctx *ctx)
{
	int fam = ctx->client_family;
	const uint8_t *addr = ctx->client_addr;
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	/* An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d. */
	if (fam == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
		fam = AF_INET;
		addr += 12;
	}
	if (fam != AF_INET && fam != AF_INET6)
		return false;
	for (size_t i = 0; i < c->n_nets; i++)
		if (net_match(&c->nets[i], fam, addr))
			return true;
	return false;
}

/* Domain of an address (after the last '@'), without a trailing dot;
 * false if it has none. */
static bool addr_domain(const char *addr, const char **d, size_t *n)
{
	if (!addr)
		return false;
	const char *at = strrchr(addr, '@');
	if (!at || !at[1])
		return false;
	*d = at + 1;
	*n = strlen(*d);
	if (*n > 1 && (*d)[*n - 1] == '.')
		(*n)--;
	return true;
}

static bool domain_match(const struct acl_cond *c, const struct acl_ctx *ctx, const char *addr)
{
	const char *d;
	size_t n;
	if (!addr_domain(addr, &d, &n))
		return false;
	if (c->local)
		for (size_t i = 0; i < ctx->n_local_domains; i++)
			if (ctx->local_domains[i] && str_eq_nocase(d, n, ctx->local_domains[i]))
				return true;
	for (size_t i = 0; i < c->n_items; i++) {
		const char *it = c->items[i];
		if (it[0] == '*' && it[1] == '.') {
			size_t sl = strlen(it + 1); /* ".example.org" */
			if (n > sl && str_eq_nocase(d + n - sl, sl, it + 1))
				return true;
		} else if (str_eq_nocase(d, n, it)) {
			return true;
		}
	}
	return false;
}

static bool cmp(uint64_t a, enum cmp_op op, uint64_t b)
{
	switch (op) {
	case OP_EQ: return a == b;
	case OP_LT: return a < b;
	case OP_LE: return a <= b;
	case OP_GT: return a > b;
	case OP_GE: return a >= b;
	}
	return false;
}

static bool rate_match(const struct acl *a, size_t ri, const struct acl_cond *c,
		       const struct acl_ctx *ctx)
{
	if (!ctx->rates)
		return false;
	const char *who = NULL;
	size_t wn = 0;
	struct buf k;
	buf_init(&k, 2 * ACL_RATE_KEY_MAX + 256);
	if (c->key == RK_CLIENT) {
		if (ctx->client_family != AF_INET && ctx->client_family != AF_INET6) {
			buf_free(&k);
			return false;
		}
		who = (const char *)ctx->client_addr;
		wn = ctx->client_family == AF_INET ? 4 : 16;
	} else {
		who = c->key == RK_USER ? ctx->auth_user : ctx->sender;
		if (!who) {
			buf_free(&k);
			return false;
		}
		wn = strnlen(who, ACL_RATE_KEY_MAX);
	}
	/* Each rule counts on its own: the key names the ACL and rule.  The
	 * condition's position keeps two rate conditions of one rule apart. */
	size_t ci = (size_t)(c - a->rules[ri].conds);
	buf_printf(&k, "%s%c%zu%c%zu%c%c", a->name, 0, ri, 0, ci, 0, (char)('0' + c->key));
	buf_append(&k, who, wn);
	uint64_t n = rate_hit(ctx->rates, buf_ptr(&k), buf_len(&k), c->window, ctx->now_s);
	buf_free(&k);
	return cmp(n, c->op, c->num);
}

static bool cond_holds(const struct acl *a, size_t ri, const struct acl_cond *c,
		       const struct acl_ctx *ctx)
{
	switch (c->def->kind) {
	case C_AUTH:
		if (!ctx->auth_user)
			return false;
		if (!c->text)
			return true;
		for (size_t i = 0; i < c->n_items; i++)
			if (strcmp(c->items[i], ctx->auth_user) == 0)
				return true;
		return false;
	case C_TLS:
		return ctx->tls_version != 0;
	case C_TLSVER:
		return ctx->tls_version != 0 && cmp((uint64_t)ctx->tls_version, c->op, c->num);
	case C_CLIENT:
		return client_match(c, ctx);
	case C_SENDER_DOM:
		return domain_match(c, ctx, ctx->sender);
	case C_RCPT_DOM:
		return domain_match(c, ctx, ctx->recipient);
	case C_RCPT_LOCAL:
		return ctx->recipient_local == 1;
	case C_SIZE:
		return cmp(ctx->size, c->op, c->num);
	case C_HEADER:
		return ctx->has_header && ctx->has_header(ctx->hdr_arg, c->text);
	case C_RATE:
		return rate_match(a, ri, c, ctx);
	}
	return false;
}

void acl_eval(const struct acl *a, const struct acl_ctx *ctx, struct acl_result *res,
	      acl_warn_fn warn, void *warn_arg)
{
	res->verdict = ACL_ACCEPT;
	res->reply = NULL;
	res->rule_line = 0;
	if (!a)
		return;
	for (size_t i = 0; i < a->n_rules; i++) {
		const struct acl_rule *r = &a->rules[i];
		bool all = true;
		for (size_t k = 0; k < r->n_conds && all; k++)
			all = cond_holds(a, i, &r->conds[k], ctx) != r->conds[k].neg;
		if (!all)
			continue;
		switch (r->verb) {
		case V_WARN:
			if (warn)
				warn(warn_arg, a, r->line, r->message ? r->message : "warn rule matched");
			continue;
		case V_ACCEPT:
			break;
		case V_DENY:
			res->verdict = ACL_DENY;
			res->reply = r->message ? r->message : "550 5.7.1 Rejected by policy";
			break;
		case V_DEFER:
			res->verdict = ACL_DEFER;
			res->reply = r->message ? r->message : "451 4.7.1 Try again later";
			break;
		}
		res->rule_line = r->line;
		return;
	}
}
