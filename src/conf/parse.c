/*
 * Configuration lexer, parser and validation.  Everything the operator
 * can get wrong is reported as "file:line: what is wrong" together with
 * the form that is expected, because the daemon refuses to start on any
 * error and the message is all the operator gets.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf_int.h"
#include "../auth/auth.h"

/* A file larger than this is certainly not a configuration. */
#define CONF_FILE_MAX (16u * 1024u * 1024u)
/* Source bytes of a bad value quoted back in a message. */
#define CONF_QUOTE_MAX 80

/* Indexes of conf_listener_settings[]. */
enum { LS_ROLE, LS_TLS, LS_MINVER, LS_CIPHERS, LS_SUITES, LS_AUTH, LS_ACL0,
       LS_COUNT = LS_ACL0 + ACL_NSTAGES };
/* Longest ACL name. */
#define CONF_ACL_NAME_MAX 64

struct conf_block {
	uint16_t port;
	int line;
	int set_line[LS_COUNT];
	enum conf_role role;
	enum conf_tls_mode tls;
	int min_version;
	char *ciphers;
	char *suites;
	bool auth;
	char *acl_name[ACL_NSTAGES];
	bool used;
};

struct parser {
	const char *name;
	struct conf *c;
	struct err *e;
	int *set_line;             /* per option: line it was set on, 0 = not */
	struct conf_block *blocks;
	size_t n_blocks;
	struct conf_block *cur;    /* open listener block */
	struct acl *cur_acl;       /* open acl block */
	bool *acl_used;            /* per c->acls entry: named by a listener */
	struct buf quote[2];       /* escaped values quoted in a message */
	int nquote;
};

/* ---- messages ---------------------------------------------------------- */

/* File text in a message is escaped and cut, so that a hostile or
 * binary file cannot produce a misleading or oversized error line. */
static const char *q(struct parser *p, const char *s)
{
	struct buf *b = &p->quote[p->nquote++ & 1];
	buf_reset(b);
	size_t n = strlen(s);
	for (size_t i = 0; i < n && i < CONF_QUOTE_MAX; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '\'')
			buf_append(b, &ch, 1);
		else
			buf_printf(b, "\\x%02X", ch);
	}
	if (n > CONF_QUOTE_MAX)
		buf_puts(b, "...");
	const char *r = buf_cstr(b);
	return r ? r : "?";
}

static int perr(struct parser *p, int line, const char *fmt, ...) UTIL_PRINTF(3, 4);
static int perr(struct parser *p, int line, const char *fmt, ...)
{
	char what[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (line > 0)
		return err_set(p->e, "%s:%d: %s", p->name, line, what);
	return err_set(p->e, "%s: %s", p->name, what);
}

static void pwarn(struct parser *p, int line, const char *fmt, ...) UTIL_PRINTF(3, 4);
static void pwarn(struct parser *p, int line, const char *fmt, ...)
{
	struct buf b;
	buf_init(&b, 1024);
	if (line > 0)
		buf_printf(&b, "%s:%d: ", p->name, line);
	else
		buf_printf(&b, "%s: ", p->name);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	const char *s = buf_cstr(&b);
	struct conf *c = p->c;
	c->warnings = xrealloc(c->warnings, (c->n_warnings + 1) * sizeof(*c->warnings));
	c->warnings[c->n_warnings++] = str_dup(s ? s : "warning");
	buf_free(&b);
}

/* ---- formatting shared with print.c ------------------------------------ */

void conf_format_size(struct buf *out, uint64_t v)
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

void conf_format_time(struct buf *out, uint64_t s)
{
	if (s == 0) {
		buf_puts(out, "0s");
		return;
	}
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

void conf_format_msec(struct buf *out, uint64_t ms)
{
	if (ms % 1000 == 0 || ms < 1000) {
		if (ms % 1000 == 0)
			conf_format_time(out, ms / 1000);
		else
			buf_printf(out, "%llums", (unsigned long long)ms);
		return;
	}
	conf_format_time(out, ms / 1000);
	buf_printf(out, "%llums", (unsigned long long)(ms % 1000));
}

static const struct { const char *name; unsigned bit; } conf_mechs[] = {
	{ "PLAIN", SASL_MECH_PLAIN },
	{ "LOGIN", SASL_MECH_LOGIN },
	{ "SCRAM-SHA-256", SASL_MECH_SCRAM_SHA_256 },
};
#define N_MECHS (sizeof(conf_mechs) / sizeof(conf_mechs[0]))
#define MECH_FORMS "PLAIN, LOGIN or SCRAM-SHA-256"

void conf_format_mechs(struct buf *out, unsigned bits)
{
	bool first = true;
	for (size_t i = 0; i < N_MECHS; i++) {
		if (!(bits & conf_mechs[i].bit))
			continue;
		buf_printf(out, "%s%s", first ? "" : " : ", conf_mechs[i].name);
		first = false;
	}
}

const char *conf_tls_version_name(int v)
{
	switch (v) {
	case 0x0301: return "TLSv1";
	case 0x0302: return "TLSv1.1";
	case 0x0303: return "TLSv1.2";
	case 0x0304: return "TLSv1.3";
	default: return "?";
	}
}

const char *conf_role_name(enum conf_role r)
{
	return r == CONF_ROLE_SUBMISSION ? "submission" : "mx";
}

const char *conf_tls_mode_name(enum conf_tls_mode m)
{
	switch (m) {
	case CONF_TLS_ON_CONNECT: return "on_connect";
	case CONF_TLS_NONE: return "none";
	default: return "starttls";
	}
}

/* ---- value parsers -------------------------------------------------- */

int conf_parse_port(const char *s)
{
	static const struct { const char *name; int port; } svc[] = {
		{ "smtp", 25 }, { "submission", 587 }, { "submissions", 465 },
		{ "smtps", 465 }, { "ssmtp", 465 },
	};
	if (!s || !*s)
		return -1;
	if (isdigit((unsigned char)*s)) {
		uint64_t v;
		if (num_parse_u64(&s, &v) < 0 || *s != '\0' || v < 1 || v > 65535)
			return -1;
		return (int)v;
	}
	for (size_t i = 0; i < sizeof(svc) / sizeof(svc[0]); i++)
		if (str_eq_nocase(s, strlen(s), svc[i].name))
			return svc[i].port;
	return -1;
}

#define PORT_FORMS "a number from 1 to 65535 or a service name (smtp, submissions, smtps, ssmtp, submission)"

/* Port with the specific complaint; where is "" or " in NAME". */
static int port_or_err(struct parser *p, int line, const char *s, const char *where)
{
	int port = conf_parse_port(s);
	if (port > 0)
		return port;
	if (isdigit((unsigned char)*s))
		return perr(p, line, "bad port '%s'%s: expected %s%s", q(p, s), where, PORT_FORMS,
			    strpbrk(s, " \t") ? " (list items are separated by ':', not spaces)" : "");
	return perr(p, line, "unknown service name '%s'%s: expected %s", q(p, s), where,
		    PORT_FORMS);
}

static bool domain_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253)
		return false;
	size_t lab = 0;
	for (size_t i = 0; i <= n; i++) {
		char ch = s[i];
		if (ch == '.' || ch == '\0') {
			if (lab == 0 || lab > 63 || s[i - 1] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!isalnum((unsigned char)ch) && ch != '-')
			return false;
		if (lab == 0 && ch == '-')
			return false;
		lab++;
	}
	return true;
}

/* A name whose last label is all digits is a mistyped IPv4 address
 * (no top-level domain is numeric): it would only fail later, in DNS. */
static bool numeric_tld(const char *s)
{
	const char *last = strrchr(s, '.');
	last = last ? last + 1 : s;
	if (!*last)
		return false;
	for (const char *t = last; *t; t++)
		if (!isdigit((unsigned char)*t))
			return false;
	return true;
}

#define HOSTPORT_FORMS "host, host:port, [address] or [address]:port"

int conf_parse_hostport(const char *s, char *host, size_t hn, uint16_t *port,
			uint16_t default_port, struct err *e)
{
	if (!s || !*s)
		return err_set(e, "empty: expected " HOSTPORT_FORMS);
	const char *hs, *he, *ps = NULL;
	bool bracket = s[0] == '[';
	if (bracket) {
		const char *end = strchr(s, ']');
		if (!end)
			return err_set(e, "'[' without a closing ']': expected [address] or "
				       "[address]:port");
		hs = s + 1;
		he = end;
		if (end[1] == ':')
			ps = end + 2;
		else if (end[1] != '\0')
			return err_set(e, "text after ']': expected nothing or :port");
	} else {
		const char *colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':'))
			return err_set(e, "an IPv6 address must be written in brackets (its colons "
				       "would be taken for a port): expected [2001:db8::1] or "
				       "[2001:db8::1]:port");
		hs = s;
		he = colon ? colon : s + strlen(s);
		ps = colon ? colon + 1 : NULL;
	}
	size_t n = (size_t)(he - hs);
	if (n == 0)
		return err_set(e, "no host%s: expected " HOSTPORT_FORMS,
			       bracket ? " between the brackets" : " before the port");
	/* Room for the longest domain name (253) or address text (45). */
	if (n >= hn || n > 253 + 1)
		return err_set(e, "host longer than 253 characters: expected a domain name or "
			       "an IP address");
	memcpy(host, hs, n);
	host[n] = '\0';
	unsigned char bin[sizeof(struct in6_addr)];
	if (bracket) {
		if (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)
			return err_set(e, "the text in brackets is not an IP address: expected "
				       "[192.0.2.1] or [2001:db8::1] (a host name is written "
				       "without brackets)");
	} else if (inet_pton(AF_INET, host, bin) != 1) {
		if (n > 1 && host[n - 1] == '.')
			host[--n] = '\0';
		if (!domain_ok(host))
			return err_set(e, "bad host name: expected a domain name (letters, digits, "
				       "'-' and dots) or an IPv4 address, as in " HOSTPORT_FORMS);
		if (numeric_tld(host))
			return err_set(e, "bad IPv4 address: expected four numbers from 0 to 255 "
				       "separated by dots, or a domain name");
	}
	if (!ps) {
		if (default_port == 0)
			return err_set(e, "no port: expected host:port or [address]:port");
		*port = default_port;
		return 0;
	}
	unsigned v = 0;
	size_t k = 0;
	for (; ps[k]; k++) {
		/* More than 5 digits is out of range whatever they are. */
		if (!isdigit((unsigned char)ps[k]) || k >= 5)
			break;
		v = v * 10 + (unsigned)(ps[k] - '0');
	}
	if (k == 0 || ps[k] != '\0' || v < 1 || v > 65535)
		return err_set(e, "bad port: expected a number from 1 to 65535 after the ':'");
	*port = (uint16_t)v;
	return 0;
}

uint16_t conf_smarthost_default_port(const struct conf *c)
{
	if (c->smarthost_tls && strcmp(c->smarthost_tls, "on_connect") == 0)
		return 465;
	if (c->smarthost_tls && strcmp(c->smarthost_tls, "starttls") == 0)
		return 587;
	return 25;
}

/* ---- option conversion ---------------------------------------------- */

struct list_ctx {
	struct parser *p;
	const struct conf_option *o;
	const char *where;   /* list name in messages */
	int line;
	void *items;
	size_t n;
};

static int add_port(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	int port = port_or_err(x->p, x->line, item, x->where);
	if (port < 0)
		return -1;
	uint16_t *v = x->items;
	for (size_t i = 0; i < x->n; i++)
		if (v[i] == port)
			return perr(x->p, x->line, "port %d is listed twice%s", port, x->where);
	v = xrealloc(v, (x->n + 1) * sizeof(*v));
	v[x->n++] = (uint16_t)port;
	x->items = v;
	return 0;
}

static int add_addr(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	unsigned char bin[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, item, bin) != 1 && inet_pton(AF_INET6, item, bin) != 1)
		return perr(x->p, x->line,
			    "bad address '%s' in %s: expected an IPv4 or IPv6 address; in a list "
			    "write IPv6 colons doubled (\"::::1\") or change the separator "
			    "(\"<; ::1 ; 127.0.0.1\")", q(x->p, item), x->o->name);
	char **v = x->items;
	/* A second bind of the same address would fail at start anyway;
	 * say so here, with the line. */
	for (size_t i = 0; i < x->n; i++) {
		unsigned char other[sizeof(struct in6_addr)];
		int fam = strchr(item, ':') ? AF_INET6 : AF_INET;
		if ((strchr(v[i], ':') ? AF_INET6 : AF_INET) == fam &&
		    inet_pton(fam, v[i], other) == 1 &&
		    memcmp(other, bin, fam == AF_INET6 ? 16 : 4) == 0)
			return perr(x->p, x->line, "address '%s' is listed twice in %s",
				    q(x->p, item), x->o->name);
	}
	v = xrealloc(v, (x->n + 1) * sizeof(*v));
	v[x->n++] = str_dup(item);
	x->items = v;
	return 0;
}

static int add_domain(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	char *d = str_dup(item);
	size_t n = strlen(d);
	if (n > 1 && d[n - 1] == '.')
		d[n - 1] = '\0';
	str_lower(d);
	if (strcmp(d, "@") != 0 && !domain_ok(d)) {
		perr(x->p, x->line,
		     "bad domain '%s' in %s: expected a domain name (letters, digits, '-' and "
		     "dots) or @ for primary_hostname", q(x->p, item), x->o->name);
		free(d);
		return -1;
	}
	char **v = x->items;
	v = xrealloc(v, (x->n + 1) * sizeof(*v));
	v[x->n++] = d;
	x->items = v;
	return 0;
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void num_limits(struct buf *b, const struct conf_option *o)
{
	if (o->type == CONF_T_SIZE) {
		conf_format_size(b, o->min);
		buf_puts(b, " to ");
		conf_format_size(b, o->max);
	} else if (o->type == CONF_T_TIME) {
		conf_format_time(b, o->min);
		buf_puts(b, " to ");
		conf_format_time(b, o->max);
	} else if (o->type == CONF_T_MSEC) {
		conf_format_msec(b, o->min);
		buf_puts(b, " to ");
		conf_format_msec(b, o->max);
	} else {
		buf_printf(b, "%llu to %llu", (unsigned long long)o->min,
			   (unsigned long long)o->max);
	}
}

static int set_number(struct parser *p, const struct conf_option *o, const char *v, int line)
{
	uint64_t n;
	int r;
	const char *kind, *form;
	switch (o->type) {
	case CONF_T_SIZE:
		r = num_parse_size(v, &n);
		kind = "size";
		form = "a number with an optional K, M or G suffix (e.g. 50M)";
		break;
	case CONF_T_TIME:
		r = num_parse_time(v, false, &n);
		kind = "time";
		form = "a number with s, m, h or d suffixes (e.g. 30s, 5m, 1h30m; a plain "
		       "number is seconds)";
		break;
	case CONF_T_MSEC:
		r = num_parse_time(v, true, &n);
		kind = "time";
		form = "a number with ms, s, m, h or d suffixes (e.g. 500ms, 5s, 1s500ms; a "
		       "plain number is seconds)";
		break;
	default:
		r = num_parse_size(v, &n);
		kind = "number";
		form = "a whole number";
		break;
	}
	struct buf lim;
	buf_init(&lim, 256);
	num_limits(&lim, o);
	const char *ls = buf_cstr(&lim);
	if (r < 0) {
		r = perr(p, line, "bad %s '%s' for %s: expected %s, from %s", kind, q(p, v),
			 o->name, form, ls ? ls : "");
	} else if (n < o->min || n > o->max) {
		r = perr(p, line, "%s = %s is out of range: must be from %s", o->name, q(p, v),
			 ls ? ls : "");
	}
	buf_free(&lim);
	if (r < 0)
		return -1;
	void *f = (char *)p->c + o->off;
	if (o->width == CONF_W_U64)
		*(uint64_t *)f = n;
	else
		*(unsigned *)f = (unsigned)n;
	return 0;
}

/* 1 for yes/true, 0 for no/false (any case), -1 otherwise. */
static int parse_bool(const char *v)
{
	size_t n = strlen(v);
	if (str_eq_nocase(v, n, "yes") || str_eq_nocase(v, n, "true"))
		return 1;
	if (str_eq_nocase(v, n, "no") || str_eq_nocase(v, n, "false"))
		return 0;
	return -1;
}

static void choice_forms(struct buf *b, const struct conf_option *o)
{
	size_t n = 0;
	while (o->choices[n])
		n++;
	for (size_t i = 0; i < n; i++)
		buf_printf(b, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", o->choices[i]);
}

static int set_choice(struct parser *p, const struct conf_option *o, const char *v, int line)
{
	for (size_t i = 0; o->choices[i]; i++) {
		if (str_eq_nocase(v, strlen(v), o->choices[i])) {
			*(char **)((char *)p->c + o->off) = str_dup(o->choices[i]);
			return 0;
		}
	}
	struct buf forms;
	buf_init(&forms, 256);
	choice_forms(&forms, o);
	const char *fs = buf_cstr(&forms);
	perr(p, line, "bad value '%s' for %s: expected %s", q(p, v), o->name, fs ? fs : "");
	buf_free(&forms);
	return -1;
}

static int add_mech(const char *item, void *arg)
{
	struct list_ctx *x = arg;
	unsigned *bits = x->items;
	for (size_t i = 0; i < N_MECHS; i++) {
		if (!str_eq_nocase(item, strlen(item), conf_mechs[i].name))
			continue;
		if (*bits & conf_mechs[i].bit)
			return perr(x->p, x->line, "SASL mechanism %s is listed twice in %s",
				    conf_mechs[i].name, x->o->name);
		*bits |= conf_mechs[i].bit;
		return 0;
	}
	return perr(x->p, x->line, "unknown SASL mechanism '%s' in %s: expected " MECH_FORMS,
		    q(x->p, item), x->o->name);
}

/* Converts and stores one option value; line 0 means the built-in default. */
static int set_option(struct parser *p, const struct conf_option *o, const char *v, int line)
{
	void *f = (char *)p->c + o->off;
	size_t *nf = o->off_n ? (size_t *)((char *)p->c + o->off_n) : NULL;
	struct list_ctx x = { .p = p, .o = o, .line = line };
	struct buf where;
	buf_init(&where, 128);
	buf_printf(&where, " in %s", o->name);
	x.where = buf_cstr(&where);
	int r = 0;
	/* Comments are whole lines: "20  # per host" would be the value,
	 * a file name of that spelling even.  Free text may hold a '#'. */
	if (o->type != CONF_T_STRING && (strstr(v, " #") || strstr(v, "\t#"))) {
		r = perr(p, line, "%s = %s: a '#' after a value does not start a comment; put "
			 "comments on lines of their own", o->name, q(p, v));
		buf_free(&where);
		return r;
	}

	switch (o->type) {
	case CONF_T_STRING:
		*(char **)f = str_dup(v);
		break;
	case CONF_T_PATH:
		if (*v && *v != '/') {
			r = perr(p, line, "%s = %s: expected an absolute path (starting with /)",
				 o->name, q(p, v));
			break;
		}
		/* An empty optional path means "not set". */
		*(char **)f = *v ? str_dup(v) : NULL;
		break;
	case CONF_T_LOGFILE:
		if (*v && *v != '/' && strcmp(v, "syslog") != 0) {
			r = perr(p, line, "%s = %s: expected empty (standard error), syslog or an "
				 "absolute path", o->name, q(p, v));
			break;
		}
		*(char **)f = str_dup(v);
		break;
	case CONF_T_HOSTNAME: {
		char *d = str_dup(v);
		size_t n = strlen(d);
		if (n > 1 && d[n - 1] == '.')
			d[n - 1] = '\0';
		str_lower(d);
		if (!domain_ok(d)) {
			r = perr(p, line, "bad host name '%s' for %s: expected a domain name such "
				 "as mail.example.com", q(p, v), o->name);
			free(d);
			break;
		}
		*(char **)f = d;
		break;
	}
	case CONF_T_PORTS:
		r = list_foreach(v, add_port, &x);
		if (r == 0 && x.n == 0 && !o->allow_empty)
			r = perr(p, line, "%s lists no port: expected a list such as "
				 "\"smtp : submissions : submission\"", o->name);
		if (r < 0) {
			free(x.items);
			break;
		}
		*(uint16_t **)f = x.items;
		*nf = x.n;
		break;
	case CONF_T_ADDRS:
		r = list_foreach(v, add_addr, &x);
		if (r == 0 && x.n == 0 && !o->allow_empty)
			r = perr(p, line, "%s lists no address: expected a list such as "
				 "\"<; 0.0.0.0 ; ::\"", o->name);
		if (r < 0) {
			free_strv(x.items, x.n);
			break;
		}
		*(char ***)f = x.items;
		*nf = x.n;
		break;
	case CONF_T_DOMAINS:
		r = list_foreach(v, add_domain, &x);
		if (r < 0) {
			free_strv(x.items, x.n);
			break;
		}
		*(char ***)f = x.items;
		*nf = x.n;
		break;
	case CONF_T_UINT:
	case CONF_T_SIZE:
	case CONF_T_TIME:
	case CONF_T_MSEC:
		r = set_number(p, o, v, line);
		break;
	case CONF_T_CHOICE:
		r = set_choice(p, o, v, line);
		break;
	case CONF_T_MECHS: {
		unsigned bits = 0;
		x.items = &bits;
		r = list_foreach(v, add_mech, &x);
		if (r == 0 && bits == 0)
			r = perr(p, line, "%s lists no mechanism: expected a list of " MECH_FORMS
				 " such as \"PLAIN : LOGIN : SCRAM-SHA-256\"", o->name);
		if (r == 0)
			*(unsigned *)f = bits;
		break;
	}
	case CONF_T_BOOL: {
		int b = parse_bool(v);
		if (b < 0) {
			r = perr(p, line, "bad value '%s' for %s: expected yes or no (or true or "
				 "false)", q(p, v), o->name);
			break;
		}
		*(bool *)f = b;
		break;
	}
	}
	buf_free(&where);
	return r;
}

/* ---- listener blocks ------------------------------------------------ */

static struct conf_block *block_find(struct parser *p, uint16_t port)
{
	for (size_t i = 0; i < p->n_blocks; i++)
		if (p->blocks[i].port == port)
			return &p->blocks[i];
	return NULL;
}

static int block_open(struct parser *p, const char *rest, int line)
{
	if (p->cur)
		return perr(p, line, "listener block inside the listener %u block opened on "
			    "line %d: close that one with '}' first", p->cur->port, p->cur->line);
	while (*rest == ' ' || *rest == '\t')
		rest++;
	size_t n = strcspn(rest, " \t{");
	char *tok = str_ndup(rest, n);
	const char *s = rest + n;
	while (*s == ' ' || *s == '\t')
		s++;
	if (n == 0 || *s != '{' || s[1 + strspn(s + 1, " \t")] != '\0') {
		free(tok);
		return perr(p, line, "expected `listener PORT {` with the '{' at the end of the "
			    "same line");
	}
	int port = port_or_err(p, line, tok, " in listener");
	free(tok);
	if (port < 0)
		return -1;
	struct conf_block *old = block_find(p, (uint16_t)port);
	if (old)
		return perr(p, line, "listener %d already defined on line %d", port, old->line);
	p->blocks = xrealloc(p->blocks, (p->n_blocks + 1) * sizeof(*p->blocks));
	struct conf_block *b = &p->blocks[p->n_blocks++];
	memset(b, 0, sizeof(*b));
	b->port = (uint16_t)port;
	b->line = line;
	p->cur = b;
	return 0;
}

static int block_set(struct parser *p, const char *name, const char *v, int line)
{
	struct conf_block *b = p->cur;
	size_t i;
	for (i = 0; i < conf_n_listener_settings; i++)
		if (strcmp(conf_listener_settings[i].name, name) == 0)
			break;
	if (i == conf_n_listener_settings) {
		const char *hint = conf_option_find(name)
			? " (global options go outside listener blocks)" : "";
		struct buf names;
		buf_init(&names, 256);
		for (size_t k = 0; k < conf_n_listener_settings; k++)
			buf_printf(&names, "%s%s", k == 0 ? "" :
				   k + 1 == conf_n_listener_settings ? " or " : ", ",
				   conf_listener_settings[k].name);
		const char *ns = buf_cstr(&names);
		perr(p, line, "unknown listener setting '%s': expected %s%s", q(p, name),
		     ns ? ns : "", hint);
		buf_free(&names);
		return -1;
	}
	const struct conf_listener_setting *ls = &conf_listener_settings[i];
	if (b->set_line[i])
		return perr(p, line, "'%s' already set on line %d", ls->name, b->set_line[i]);
	if (*v == '\0')
		return perr(p, line, "'%s' needs a value: expected %s", ls->name, ls->values);
	bool ok = true;
	switch (i) {
	case LS_ROLE:
		if (strcmp(v, "mx") == 0)
			b->role = CONF_ROLE_MX;
		else if (strcmp(v, "submission") == 0)
			b->role = CONF_ROLE_SUBMISSION;
		else
			ok = false;
		break;
	case LS_TLS:
		if (strcmp(v, "starttls") == 0)
			b->tls = CONF_TLS_STARTTLS;
		else if (strcmp(v, "on_connect") == 0)
			b->tls = CONF_TLS_ON_CONNECT;
		else if (strcmp(v, "none") == 0)
			b->tls = CONF_TLS_NONE;
		else
			ok = false;
		break;
	case LS_MINVER: {
		static const char *const names[] = { "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" };
		ok = false;
		for (int k = 0; k < 4; k++) {
			if (str_eq_nocase(v, strlen(v), names[k]) ||
			    (k == 0 && str_eq_nocase(v, strlen(v), "TLSv1.0"))) {
				b->min_version = 0x0301 + k;
				ok = true;
			}
		}
		break;
	}
	case LS_CIPHERS:
		b->ciphers = str_dup(v);
		break;
	case LS_SUITES:
		b->suites = str_dup(v);
		break;
	case LS_AUTH: {
		int yes = parse_bool(v);
		ok = yes >= 0;
		b->auth = yes > 0;
		break;
	}
	default:
		/* Resolved once the whole file is read: an acl block may follow. */
		b->acl_name[i - LS_ACL0] = str_dup(v);
		break;
	}
	if (!ok)
		return perr(p, line, "bad value '%s' for %s: expected %s", q(p, v), ls->name,
			    ls->values);
	b->set_line[i] = line;
	return 0;
}

/* ---- acl blocks ------------------------------------------------------ */

static int acl_find(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->n_acls; i++)
		if (strcmp(acl_name(c->acls[i]), name) == 0)
			return (int)i;
	return -1;
}

static bool acl_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > CONF_ACL_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
			return false;
	return true;
}

static int acl_open(struct parser *p, const char *rest, int line)
{
	if (p->cur)
		return perr(p, line, "acl block inside the listener %u block opened on line %d: "
			    "close that one with '}' first", p->cur->port, p->cur->line);
	while (*rest == ' ' || *rest == '\t')
		rest++;
	size_t n = strcspn(rest, " \t{");
	const char *s = rest + n;
	while (*s == ' ' || *s == '\t')
		s++;
	if (n == 0 || *s != '{' || s[1 + strspn(s + 1, " \t")] != '\0')
		return perr(p, line, "expected `acl NAME {` with the '{' at the end of the same "
			    "line");
	char *name = str_ndup(rest, n);
	int r = 0;
	if (!acl_name_ok(name, n)) {
		r = perr(p, line, "bad ACL name '%s': expected 1 to %d letters, digits, '_', '-' "
			 "or '.'", q(p, name), CONF_ACL_NAME_MAX);
	} else if (acl_find(p->c, name) >= 0) {
		r = perr(p, line, "acl %s already defined on line %d", name,
			 acl_line(p->c->acls[acl_find(p->c, name)]));
	} else {
		struct conf *c = p->c;
		c->acls = xrealloc(c->acls, (c->n_acls + 1) * sizeof(*c->acls));
		p->acl_used = xrealloc(p->acl_used, (c->n_acls + 1) * sizeof(*p->acl_used));
		p->acl_used[c->n_acls] = false;
		p->cur_acl = c->acls[c->n_acls++] = acl_new(name, line);
	}
	free(name);
	return r;
}

/* Links the acl_* settings of every listener block to their ACL, checking
 * that each ACL fits the stage it is named for. */
static int link_acls(struct parser *p)
{
	struct conf *c = p->c;
	for (size_t i = 0; i < p->n_blocks; i++) {
		struct conf_block *b = &p->blocks[i];
		for (int k = 0; k < ACL_NSTAGES; k++) {
			if (!b->acl_name[k])
				continue;
			const char *set = conf_listener_settings[LS_ACL0 + k].name;
			int line = b->set_line[LS_ACL0 + k];
			int idx = acl_find(c, b->acl_name[k]);
			if (idx < 0)
				return perr(p, line, "unknown ACL '%s' in %s: no `acl %s { ... }` "
					    "block is defined", q(p, b->acl_name[k]), set,
					    q(p, b->acl_name[k]));
			struct err ae;
			if (acl_check_stage(c->acls[idx], (enum acl_stage)k, &ae) < 0)
				return perr(p, line, "%s = %s: %s", set, acl_name(c->acls[idx]),
					    ae.msg);
			p->acl_used[idx] = true;
			struct conf_listener *l = NULL;
			for (size_t j = 0; j < c->n_listeners; j++)
				if (c->listeners[j].port == b->port)
					l = &c->listeners[j];
			if (l)
				l->acl[k] = c->acls[idx];
		}
	}
	for (size_t i = 0; i < c->n_acls; i++)
		if (!p->acl_used[i])
			pwarn(p, acl_line(c->acls[i]), "acl %s is not used: no listener names it in "
			      "acl_connect, acl_helo, acl_mail, acl_rcpt or acl_data",
			      acl_name(c->acls[i]));
	return 0;
}

/* ---- statements ----------------------------------------------------- */

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}


static int statement(struct parser *p, char *s, int line)
{
	size_t len = strlen(s);
	while (len > 0 && is_blank(s[len - 1]))
		s[--len] = '\0';
	if (s[0] == '}') {
		if (s[1] != '\0')
			return perr(p, line, "'}' must be alone on its line");
		if (!p->cur && !p->cur_acl)
			return perr(p, line, "'}' without a listener or acl block");
		p->cur = NULL;
		p->cur_acl = NULL;
		return 0;
	}
	if (p->cur_acl) {
		struct err ae;
		if (len > 0 && s[len - 1] == '{')
			return perr(p, line, "block inside the acl %s block opened on line %d: "
				    "close that one with '}' first", acl_name(p->cur_acl),
				    acl_line(p->cur_acl));
		if (acl_parse_line(p->cur_acl, s, len, line, &ae) < 0)
			return perr(p, line, "%s (in acl %s)", ae.msg, acl_name(p->cur_acl));
		return 0;
	}
	if (strncmp(s, "acl", 3) == 0 && (s[3] == ' ' || s[3] == '\t'))
		return acl_open(p, s + 3, line);
	if (strncmp(s, "listener", 8) == 0 && (s[8] == ' ' || s[8] == '\t' || s[8] == '{' ||
					       s[8] == '\0'))
		return block_open(p, s + 8, line);

	size_t n = strcspn(s, " \t=");
	if (n == 0)
		return perr(p, line, "expected `name = value`");
	char *name = str_ndup(s, n);
	const char *v = s + n;
	while (*v == ' ' || *v == '\t')
		v++;
	int r;
	if (*v != '=') {
		r = perr(p, line, "missing '=' after '%s': expected `%s = value`", q(p, name),
			 q(p, name));
		free(name);
		return r;
	}
	v++;
	while (*v == ' ' || *v == '\t')
		v++;
	/* The lexer trimmed the line's end, so v is the trimmed value. */

	if (p->cur) {
		r = block_set(p, name, v, line);
		free(name);
		return r;
	}
	const struct conf_option *o = conf_option_find(name);
	if (!o) {
		bool lset = false;
		for (size_t i = 0; i < conf_n_listener_settings; i++)
			if (strcmp(conf_listener_settings[i].name, name) == 0)
				lset = true;
		r = perr(p, line, "unknown option '%s'%s", q(p, name),
			 lset ? " (it belongs inside a `listener PORT { ... }` block)" : "");
		free(name);
		return r;
	}
	free(name);
	size_t idx = (size_t)(o - conf_options);
	if (p->set_line[idx])
		return perr(p, line, "option '%s' already set on line %d", o->name,
			    p->set_line[idx]);
	if (*v == '\0' && !o->allow_empty)
		return perr(p, line, "option '%s' needs a value", o->name);
	if (set_option(p, o, v, line) < 0)
		return -1;
	p->set_line[idx] = line;
	if (o->off == offsetof(struct conf, recipients_max) && p->c->recipients_max < 100)
		pwarn(p, line, "recipients_max = %u is below 100, the number of recipients RFC "
		      "5321 section 4.5.3.1.8 requires a server to accept", p->c->recipients_max);
	return 0;
}

/* Splits the text into logical lines (joining continuations, dropping
 * comments and blank lines) and hands each to statement(). */
static int lex(struct parser *p, const char *text, size_t len)
{
	struct buf l;
	buf_init(&l, CONF_LINE_MAX);
	size_t pos = 0;
	int lineno = 0, start = 0;
	bool cont = false;
	int r = 0;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		const char *ln = text + pos;
		size_t n = end - pos;
		pos = nl ? end + 1 : len;
		lineno++;
		if (n > CONF_LINE_MAX) {
			r = perr(p, lineno, "line too long (more than %d bytes)", CONF_LINE_MAX);
			break;
		}
		if (memchr(ln, '\0', n)) {
			r = perr(p, lineno, "NUL byte in the file");
			break;
		}
		while (n > 0 && is_blank(ln[0])) {
			ln++;
			n--;
		}
		if (!cont) {
			start = lineno;
			if (n == 0 || ln[0] == '#')
				continue;
		}
		while (n > 0 && is_blank(ln[n - 1]))
			n--;
		/* As in Exim: the backslash, the newline and the next line's
		 * leading blanks vanish; blanks before the backslash stay. */
		bool more = n > 0 && ln[n - 1] == '\\';
		if (more)
			n--;
		if (buf_append(&l, ln, n) < 0) {
			r = perr(p, start, "line too long (more than %d bytes)", CONF_LINE_MAX);
			break;
		}
		cont = more;
		if (cont)
			continue;
		const char *s = buf_cstr(&l);
		if (!s || (*s && statement(p, (char *)s, start) < 0)) {
			r = -1;
			break;
		}
		buf_reset(&l);
	}
	if (r == 0 && cont && buf_len(&l) > 0) {
		const char *s = buf_cstr(&l);
		if (!s || statement(p, (char *)s, start) < 0)
			r = -1;
	}
	buf_free(&l);
	if (r == 0 && p->cur)
		r = perr(p, p->cur->line, "listener %u block is not closed: '}' missing before "
			 "the end of the file", p->cur->port);
	if (r == 0 && p->cur_acl)
		r = perr(p, acl_line(p->cur_acl), "acl %s block is not closed: '}' missing "
			 "before the end of the file", acl_name(p->cur_acl));
	return r;
}

/* ---- defaults and derivation ---------------------------------------- */

static char *default_hostname(void)
{
	char h[256];
	if (gethostname(h, sizeof(h) - 1) < 0 || h[0] == '\0')
		return str_dup("localhost");
	h[sizeof(h) - 1] = '\0';
	char *name = NULL;
	if (!strchr(h, '.')) {
		struct addrinfo hints = { .ai_flags = AI_CANONNAME, .ai_family = AF_UNSPEC };
		struct addrinfo *res = NULL;
		if (getaddrinfo(h, NULL, &hints, &res) == 0 && res) {
			if (res->ai_canonname && strchr(res->ai_canonname, '.'))
				name = str_dup(res->ai_canonname);
			freeaddrinfo(res);
		}
	}
	if (!name)
		name = str_dup(h);
	str_lower(name);
	return name;
}

static bool port_in(const uint16_t *v, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == port)
			return true;
	return false;
}

/* Line an option was set on, 0 if it has its default. */
static int opt_line(const struct parser *p, const char *name)
{
	const struct conf_option *o = conf_option_find(name);
	return o ? p->set_line[(size_t)(o - conf_options)] : 0;
}

static int derive_listeners(struct parser *p, bool from_ox, bool tls_all)
{
	struct conf *c = p->c;
	int ports_line = from_ox ? 0 : p->set_line[(size_t)(conf_option_find("daemon_smtp_ports") - conf_options)];
	c->listeners = xcalloc(c->n_ports, sizeof(*c->listeners));
	for (size_t i = 0; i < c->n_ports; i++) {
		uint16_t port = c->ports[i];
		struct conf_listener *l = &c->listeners[i];
		struct conf_block *b = block_find(p, port);
		int where = b ? b->line : ports_line;
		l->port = port;
		l->line = b ? b->line : 0;
		c->n_listeners = i + 1;
		if (b) {
			b->used = true;
			if (b->set_line[LS_ROLE])
				l->role = b->role;
		}
		if (!b || !b->set_line[LS_ROLE]) {
			if (port == 25)
				l->role = CONF_ROLE_MX;
			else if (port == 465 || port == 587)
				l->role = CONF_ROLE_SUBMISSION;
			else
				return perr(p, b ? b->line : ports_line, "port %u has no role; add "
					    "`listener %u { role = mx }` or `role = submission`",
					    port, port);
		}
		bool listed = port_in(c->tls_on_connect_ports, c->n_tls_on_connect_ports, port);
		if (b && b->set_line[LS_TLS] && b->tls != CONF_TLS_ON_CONNECT && listed)
			return perr(p, b->set_line[LS_TLS], "listener %u says tls = %s but "
				    "tls_on_connect_ports lists %u: remove one of them", port,
				    conf_tls_mode_name(b->tls), port);
		if (tls_all)
			l->tls = CONF_TLS_ON_CONNECT;
		else if (b && b->set_line[LS_TLS])
			l->tls = b->tls;
		else
			l->tls = listed || port == 465 ? CONF_TLS_ON_CONNECT : CONF_TLS_STARTTLS;
		bool sub = l->role == CONF_ROLE_SUBMISSION;
		if (sub && l->tls == CONF_TLS_NONE)
			return perr(p, b && b->set_line[LS_TLS] ? b->set_line[LS_TLS] : where,
				    "listener %u is a submission port and must offer TLS: tls = none "
				    "is only allowed with role = mx", port);
		l->tls_required = sub;
		l->auth_required = sub;
		l->auth = b && b->set_line[LS_AUTH] ? b->auth : sub;
		if (sub && !l->auth)
			return perr(p, b->set_line[LS_AUTH], "listener %u is a submission port and "
				    "must offer AUTH: auth = no is only allowed with role = mx (a "
				    "submission port without AUTH cannot accept any mail)", port);
		l->tls_min_version = b && b->set_line[LS_MINVER] ? b->min_version
				   : sub ? CONF_SUB_MIN_VERSION : CONF_MX_MIN_VERSION;
		l->tls_ciphers = str_dup(b && b->ciphers ? b->ciphers
					 : sub ? CONF_SUB_CIPHERS : CONF_MX_CIPHERS);
		l->tls_ciphersuites = str_dup(b && b->suites ? b->suites : CONF_CIPHERSUITES);
		if ((sub || l->tls == CONF_TLS_ON_CONNECT) && !c->tls_certificate)
			return perr(p, where, "port %u needs TLS (%s) but tls_certificate is not "
				    "set", port, sub ? "submission requires it" : "tls on connect");
		/* AUTH is only offered inside TLS: say so rather than let the
		 * operator wonder why EHLO never lists it. */
		if (l->auth && (l->tls == CONF_TLS_NONE || !c->tls_certificate))
			pwarn(p, b && b->set_line[LS_AUTH] ? b->set_line[LS_AUTH] : where,
			      "listener %u has auth = yes but %s; AUTH is offered only inside TLS, "
			      "so it is never offered on this port", port,
			      l->tls == CONF_TLS_NONE ? "tls = none" : "tls_certificate is not set");
	}
	return 0;
}

/* Values that only the queue runner and the delivery process read: a
 * bad one would not stop the daemon, it would defer or fail every
 * message, so it is refused here with its line. */
static int check_maildir_path(struct parser *p)
{
	const char *v = p->c->maildir_path;
	int line = opt_line(p, "maildir_path");
	if (v[0] != '/')
		return perr(p, line, "maildir_path = %s: expected an absolute path (starting "
			    "with /), such as /var/vmail/%%d/%%n", q(p, v));
	for (const char *s = v; *s; s++) {
		if (*s != '%')
			continue;
		s++;
		if (*s == '\0')
			return perr(p, line, "maildir_path = %s ends with a lone '%%': write %%%% "
				    "for a percent sign", q(p, v));
		if (strchr("und%", *s))
			continue;
		unsigned char ch = (unsigned char)*s;
		char shown[8];
		if (ch > 0x20 && ch < 0x7f && ch != '\'' && ch != '\\')
			snprintf(shown, sizeof(shown), "%%%c", ch);
		else
			snprintf(shown, sizeof(shown), "%%\\x%02X", ch);
		return perr(p, line, "maildir_path = %s: unknown escape '%s': expected %%u (the "
			    "address), %%n (its local part), %%d (its domain) or %%%% (a percent "
			    "sign)", q(p, v), shown);
	}
	return 0;
}

static int check_lmtp_socket(struct parser *p)
{
	const char *v = p->c->lmtp_socket;
	int line = opt_line(p, "lmtp_socket");
	if (v[0] == '/') {
		if (strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return perr(p, line, "lmtp_socket = %s: path too long for a unix socket: "
				    "expected at most %zu bytes", q(p, v),
				    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return 0;
	}
	/* Without a colon it was meant as a path (a relative one). */
	if (!strchr(v, ':'))
		return perr(p, line, "lmtp_socket = %s: expected the absolute path of a unix "
			    "socket (such as /run/dovecot/lmtp) or address:port (such as "
			    "127.0.0.1:24 or [::1]:24)", q(p, v));
	char host[256];
	uint16_t port;
	struct err he;
	if (conf_parse_hostport(v, host, sizeof(host), &port, 0, &he) < 0)
		return perr(p, line, "lmtp_socket = %s: %s", q(p, v), he.msg);
	unsigned char bin[sizeof(struct in6_addr)];
	if (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)
		return perr(p, line, "lmtp_socket = %s: the LMTP server is not looked up by "
			    "name: expected an IP address and port (such as 127.0.0.1:24 or "
			    "[::1]:24) or the absolute path of a unix socket", q(p, v));
	return 0;
}

static int check_smarthost(struct parser *p)
{
	const struct conf *c = p->c;
	if (!c->smarthost || !*c->smarthost)
		return 0;
	char host[256];
	uint16_t port;
	struct err he;
	if (conf_parse_hostport(c->smarthost, host, sizeof(host), &port,
				conf_smarthost_default_port(c), &he) < 0)
		return perr(p, opt_line(p, "smarthost"), "smarthost = %s: %s", q(p, c->smarthost),
			    he.msg);
	return 0;
}

static int finish(struct parser *p, const char *ports_override, bool tls_all)
{
	struct conf *c = p->c;
	for (size_t i = 0; i < conf_n_options; i++) {
		const struct conf_option *o = &conf_options[i];
		if (p->set_line[i])
			continue;
		if (o->def) {
			if (set_option(p, o, o->def, 0) < 0)
				return -1;
		} else if (o->type == CONF_T_HOSTNAME) {
			*(char **)((char *)c + o->off) = default_hostname();
		}
	}
	if (!c->tls_privatekey && c->tls_certificate)
		c->tls_privatekey = str_dup(c->tls_certificate);

	if (c->auth_fail_block_after <= c->auth_fail_delay_after) {
		int bl = opt_line(p, "auth_fail_block_after");
		return perr(p, bl ? bl : opt_line(p, "auth_fail_delay_after"),
			    "auth_fail_block_after = %u must be greater than auth_fail_delay_after "
			    "= %u (answers are delayed before a client is refused): raise "
			    "auth_fail_block_after or lower auth_fail_delay_after",
			    c->auth_fail_block_after, c->auth_fail_delay_after);
	}
	if (check_maildir_path(p) < 0 || check_lmtp_socket(p) < 0 || check_smarthost(p) < 0)
		return -1;

	for (size_t i = 0; i < c->n_local_domains; i++) {
		if (strcmp(c->local_domains[i], "@") == 0) {
			free(c->local_domains[i]);
			c->local_domains[i] = str_dup(c->primary_hostname);
		}
	}

	if (ports_override) {
		struct list_ctx x = { .p = p, .where = " in -oX" };
		if (list_foreach(ports_override, add_port, &x) < 0) {
			free(x.items);
			return -1;
		}
		if (x.n == 0)
			return perr(p, 0, "-oX lists no port: expected a list such as \"25 : 587\"");
		free(c->ports);
		c->ports = x.items;
		c->n_ports = x.n;
	}

	if (derive_listeners(p, ports_override != NULL, tls_all) < 0)
		return -1;
	if (link_acls(p) < 0)
		return -1;

	int tline = p->set_line[(size_t)(conf_option_find("tls_on_connect_ports") - conf_options)];
	for (size_t i = 0; i < c->n_tls_on_connect_ports; i++) {
		uint16_t port = c->tls_on_connect_ports[i];
		if (!port_in(c->ports, c->n_ports, port))
			pwarn(p, tline, "tls_on_connect_ports lists %u but daemon_smtp_ports does "
			      "not; it opens no port", port);
	}
	for (size_t i = 0; i < p->n_blocks; i++)
		if (!p->blocks[i].used)
			pwarn(p, p->blocks[i].line, "listener %u block is for a port "
			      "daemon_smtp_ports does not list; it opens no port",
			      p->blocks[i].port);
	bool any_auth = false;
	for (size_t i = 0; i < c->n_listeners; i++)
		any_auth = any_auth || c->listeners[i].auth;
	if (any_auth && strcmp(c->auth_backend, "none") == 0)
		pwarn(p, opt_line(p, "auth_backend"), "auth_backend is none: submission ports "
		      "will refuse MAIL (530 5.7.0) as no user can authenticate");
	bool any_mx = false;
	for (size_t i = 0; i < c->n_listeners; i++)
		any_mx = any_mx || c->listeners[i].role == CONF_ROLE_MX;
	if (any_mx && c->n_local_domains == 0)
		pwarn(p, opt_line(p, "local_domains"), "local_domains is empty: the mx "
		      "listeners take mail for no domain (every RCPT but postmaster gets 550 "
		      "5.7.1)");
	return 0;
}

static int load_mem(const char *name, const char *text, size_t len, const char *ports_override,
		    bool tls_all, struct conf **out, struct err *e)
{
	*out = NULL;
	struct parser p = { .name = name, .e = e };
	p.c = xcalloc(1, sizeof(*p.c));
	p.c->path = str_dup(name);
	p.set_line = xcalloc(conf_n_options, sizeof(*p.set_line));
	buf_init(&p.quote[0], 4 * CONF_QUOTE_MAX + 16);
	buf_init(&p.quote[1], 4 * CONF_QUOTE_MAX + 16);
	int r = lex(&p, text, len);
	if (r == 0)
		r = finish(&p, ports_override, tls_all);
	for (size_t i = 0; i < p.n_blocks; i++) {
		free(p.blocks[i].ciphers);
		free(p.blocks[i].suites);
		for (int k = 0; k < ACL_NSTAGES; k++)
			free(p.blocks[i].acl_name[k]);
	}
	free(p.blocks);
	free(p.acl_used);
	free(p.set_line);
	buf_free(&p.quote[0]);
	buf_free(&p.quote[1]);
	if (r < 0) {
		conf_free(p.c);
		return -1;
	}
	*out = p.c;
	return 0;
}

int conf_load_string(const char *name, const char *text, const char *ports_override,
		     bool tls_on_connect_all, struct conf **out, struct err *e)
{
	return load_mem(name, text, strlen(text), ports_override, tls_on_connect_all, out, e);
}

int conf_load(const char *path, const char *ports_override, bool tls_on_connect_all,
	      struct conf **out, struct err *e)
{
	*out = NULL;
	struct buf b;
	buf_init(&b, CONF_FILE_MAX);
	if (fs_read_file(path, &b, e) < 0) {
		buf_free(&b);
		return -1;
	}
	int r = load_mem(path, (const char *)buf_ptr(&b), buf_len(&b), ports_override,
			 tls_on_connect_all, out, e);
	buf_free(&b);
	return r;
}

void conf_free(struct conf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < conf_n_options; i++) {
		const struct conf_option *o = &conf_options[i];
		void *f = (char *)c + o->off;
		switch (o->type) {
		case CONF_T_STRING:
		case CONF_T_PATH:
		case CONF_T_LOGFILE:
		case CONF_T_HOSTNAME:
		case CONF_T_CHOICE:
			free(*(char **)f);
			break;
		case CONF_T_PORTS:
			free(*(uint16_t **)f);
			break;
		case CONF_T_ADDRS:
		case CONF_T_DOMAINS:
			free_strv(*(char ***)f, *(size_t *)((char *)c + o->off_n));
			break;
		default:
			break;
		}
	}
	for (size_t i = 0; i < c->n_listeners; i++) {
		free(c->listeners[i].tls_ciphers);
		free(c->listeners[i].tls_ciphersuites);
	}
	free(c->listeners);
	for (size_t i = 0; i < c->n_acls; i++)
		acl_free(c->acls[i]);
	free(c->acls);
	free_strv(c->warnings, c->n_warnings);
	free(c->path);
	free(c);
}

const struct conf_listener *conf_listener_for_port(const struct conf *c, uint16_t port)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].port == port)
			return &c->listeners[i];
	return NULL;
}
