/*
 * Path parsing: RFC 5321 §4.1.2 Reverse-path / Forward-path, with the
 * RFC 6531 UTF-8 extensions.  The parser is a single bounded left-to-right
 * scan; every result is a view into the caller's bytes.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

/* RFC 5321 §4.5.3.1 */
#define PATH_LOCAL_MAX 64
#define PATH_DOMAIN_MAX 255
#define PATH_MAX_LEN 256

/* Longest textual address inet_pton can accept (IPv6 with embedded IPv4). */
#define LITERAL_ADDR_MAX 45

struct scan {
	const unsigned char *p;
	size_t n;
	size_t i;
	bool non_ascii; /* valid UTF-8 seen */
};

/*
 * Consumes one non-ASCII character at the cursor.  Valid UTF-8 without
 * SMTPUTF8 is remembered rather than refused at once, so that a syntax
 * error elsewhere still takes precedence over the 553 5.6.7 reply.
 */
static enum smtp_path_error take_utf8(struct scan *sc)
{
	size_t l = str_utf8_seq(sc->p + sc->i, sc->n - sc->i);
	if (l == 0)
		return SMTP_PATH_BAD_UTF8;
	sc->non_ascii = true;
	sc->i += l;
	return SMTP_PATH_OK;
}

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5322 atext */
static bool is_atext(unsigned char c)
{
	if (is_alpha(c) || is_digit(c))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 5321 qtextSMTP */
static bool is_qtext(unsigned char c)
{
	return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126);
}

/* RFC 5321 dcontent */
static bool is_dcontent(unsigned char c)
{
	return (c >= 33 && c <= 90) || (c >= 94 && c <= 126);
}

static bool at(const struct scan *sc, unsigned char c)
{
	return sc->i < sc->n && sc->p[sc->i] == c;
}

/* Dot-string = Atom *("." Atom) */
static enum smtp_path_error scan_dot_string(struct scan *sc)
{
	for (;;) {
		size_t start = sc->i;
		while (sc->i < sc->n) {
			unsigned char c = sc->p[sc->i];
			if (is_atext(c)) {
				sc->i++;
			} else if (c >= 0x80) {
				enum smtp_path_error r = take_utf8(sc);
				if (r != SMTP_PATH_OK)
					return r;
			} else {
				break;
			}
		}
		if (sc->i == start)
			return SMTP_PATH_SYNTAX;
		if (!at(sc, '.'))
			return SMTP_PATH_OK;
		sc->i++;
	}
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
static enum smtp_path_error scan_quoted(struct scan *sc)
{
	sc->i++; /* opening quote */
	while (sc->i < sc->n) {
		unsigned char c = sc->p[sc->i];
		if (c == '"') {
			sc->i++;
			return SMTP_PATH_OK;
		}
		if (c == '\\') {
			if (sc->i + 1 >= sc->n)
				return SMTP_PATH_SYNTAX;
			unsigned char q = sc->p[sc->i + 1];
			if (q < 32 || q > 126)
				return SMTP_PATH_SYNTAX;
			sc->i += 2;
		} else if (is_qtext(c)) {
			sc->i++;
		} else if (c >= 0x80) {
			enum smtp_path_error r = take_utf8(sc);
			if (r != SMTP_PATH_OK)
				return r;
		} else {
			return SMTP_PATH_SYNTAX;
		}
	}
	return SMTP_PATH_SYNTAX;
}

/*
 * Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]
 * (or a U-label under RFC 6531).  One trailing dot is tolerated because
 * clients write fully qualified names that way.
 */
static enum smtp_path_error scan_hostname(struct scan *sc, bool allow_trailing_dot)
{
	bool first = true;
	for (;;) {
		size_t start = sc->i;
		unsigned char last = 0;
		while (sc->i < sc->n) {
			unsigned char c = sc->p[sc->i];
			if (is_alpha(c) || is_digit(c) || c == '-') {
				if (c == '-' && sc->i == start)
					return SMTP_PATH_SYNTAX;
				last = c;
				sc->i++;
			} else if (c >= 0x80) {
				enum smtp_path_error r = take_utf8(sc);
				if (r != SMTP_PATH_OK)
					return r;
				last = c;
			} else {
				break;
			}
		}
		if (sc->i == start) {
			/* Empty label: only the position after a final dot. */
			if (!first && allow_trailing_dot && !at(sc, '.'))
				return SMTP_PATH_OK;
			return SMTP_PATH_SYNTAX;
		}
		if (last == '-')
			return SMTP_PATH_SYNTAX;
		first = false;
		if (!at(sc, '.'))
			return SMTP_PATH_OK;
		sc->i++;
	}
}

static bool literal_addr_ok(int af, const unsigned char *s, size_t len)
{
	if (len == 0 || len > LITERAL_ADDR_MAX)
		return false;
	char *t = str_ndup(s, len);
	unsigned char out[16];
	int r = inet_pton(af, t, out);
	free(t);
	return r == 1;
}

/*
 * address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]"
 */
static enum smtp_path_error scan_literal(struct scan *sc)
{
	size_t start = ++sc->i; /* after '[' */
	while (sc->i < sc->n && is_dcontent(sc->p[sc->i]))
		sc->i++;
	if (!at(sc, ']'))
		return SMTP_PATH_SYNTAX;
	const unsigned char *c = sc->p + start;
	size_t len = sc->i - start;
	sc->i++; /* ']' */
	if (len == 0)
		return SMTP_PATH_SYNTAX;

	const unsigned char *colon = memchr(c, ':', len);
	if (!colon)
		return literal_addr_ok(AF_INET, c, len) ? SMTP_PATH_OK : SMTP_PATH_SYNTAX;
	size_t tag_len = (size_t)(colon - c);
	if (str_eq_nocase((const char *)c, tag_len, "IPv6"))
		return literal_addr_ok(AF_INET6, colon + 1, len - tag_len - 1) ? SMTP_PATH_OK
									 : SMTP_PATH_SYNTAX;
	/* Standardized-tag = Ldh-str: starts and ends with a letter or digit. */
	if (tag_len == 0 || !(is_alpha(c[0]) || is_digit(c[0])))
		return SMTP_PATH_SYNTAX;
	for (size_t k = 0; k < tag_len; k++)
		if (!(is_alpha(c[k]) || is_digit(c[k]) || c[k] == '-'))
			return SMTP_PATH_SYNTAX;
	if (c[tag_len - 1] == '-')
		return SMTP_PATH_SYNTAX;
	if (len - tag_len - 1 == 0)
		return SMTP_PATH_SYNTAX;
	return SMTP_PATH_OK;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain */
static enum smtp_path_error scan_route(struct scan *sc)
{
	for (;;) {
		if (!at(sc, '@'))
			return SMTP_PATH_SYNTAX;
		sc->i++;
		enum smtp_path_error r = scan_hostname(sc, false);
		if (r != SMTP_PATH_OK)
			return r;
		if (at(sc, ':')) {
			sc->i++;
			return SMTP_PATH_OK;
		}
		if (!at(sc, ','))
			return SMTP_PATH_SYNTAX;
		sc->i++;
	}
}

static enum smtp_path_error parse_path(const char *p, size_t n, unsigned flags,
				       struct smtp_path *out, size_t *used)
{
	struct scan sc = { .p = (const unsigned char *)p, .n = n, .i = 0 };
	enum smtp_path_error r;

	if (!at(&sc, '<'))
		return SMTP_PATH_SYNTAX;
	sc.i++;

	if (at(&sc, '>')) {
		if (!(flags & SMTP_PATH_ALLOW_NULL))
			return SMTP_PATH_SYNTAX;
		out->is_null = true;
		out->local = out->mailbox = p + 1;
		*used = 2;
		return SMTP_PATH_OK;
	}

	if (at(&sc, '@')) {
		r = scan_route(&sc);
		if (r != SMTP_PATH_OK)
			return r;
		out->has_route = true;
	}

	size_t local_start = sc.i;
	if (at(&sc, '"')) {
		out->quoted = true;
		r = scan_quoted(&sc);
	} else {
		r = scan_dot_string(&sc);
	}
	if (r != SMTP_PATH_OK)
		return r;
	out->local = p + local_start;
	out->local_len = sc.i - local_start;

	if (at(&sc, '>')) {
		/* RFC 5321 §4.1.1.3: "<Postmaster>" is the one domainless path. */
		if (!(flags & SMTP_PATH_ALLOW_BARE) || out->has_route || out->quoted ||
		    !str_eq_nocase(out->local, out->local_len, "postmaster"))
			return SMTP_PATH_SYNTAX;
	} else {
		if (!at(&sc, '@'))
			return SMTP_PATH_SYNTAX;
		sc.i++;
		size_t dom_start = sc.i;
		if (at(&sc, '[')) {
			out->domain_literal = true;
			r = scan_literal(&sc);
		} else {
			r = scan_hostname(&sc, true);
		}
		if (r != SMTP_PATH_OK)
			return r;
		out->domain = p + dom_start;
		out->domain_len = sc.i - dom_start;
		if (!at(&sc, '>'))
			return SMTP_PATH_SYNTAX;
	}
	out->mailbox = out->local;
	out->mailbox_len = (size_t)(p + sc.i - out->local);
	sc.i++; /* '>' */

	if (sc.non_ascii) {
		if (!(flags & SMTP_PATH_UTF8))
			return SMTP_PATH_NON_ASCII;
		out->utf8 = true;
	}
	if (out->local_len > PATH_LOCAL_MAX || out->domain_len > PATH_DOMAIN_MAX ||
	    sc.i > PATH_MAX_LEN)
		return SMTP_PATH_TOO_LONG;
	*used = sc.i;
	return SMTP_PATH_OK;
}

enum smtp_path_error smtp_parse_path(const char *p, size_t n, unsigned flags,
				     struct smtp_path *out, size_t *used)
{
	memset(out, 0, sizeof(*out));
	*used = 0;
	enum smtp_path_error r = parse_path(p, n, flags, out, used);
	if (r != SMTP_PATH_OK) {
		/* No half-filled views escape a failed parse. */
		memset(out, 0, sizeof(*out));
		*used = 0;
	}
	return r;
}

bool smtp_helo_arg_ok(const char *p, size_t n)
{
	if (n == 0 || n > PATH_DOMAIN_MAX)
		return false;
	const unsigned char *u = (const unsigned char *)p;
	if (u[0] == '[') {
		struct scan sc = { .p = u, .n = n, .i = 0 };
		return scan_literal(&sc) == SMTP_PATH_OK && sc.i == n;
	}
	/* Labels of letters, digits, '-' (not first or last) and '_' (in
	 * many hosts' own names), 63 octets at most (RFC 1035 §2.3.4); one
	 * trailing dot; a name without dots is accepted, as many clients
	 * send their bare host name. */
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && u[i] != '.') {
			if (!is_alpha(u[i]) && !is_digit(u[i]) && u[i] != '-' && u[i] != '_')
				return false;
			continue;
		}
		size_t len = i - start;
		if (len == 0)
			return i == n && i > 0; /* only after a final dot */
		if (len > 63 || u[start] == '-' || u[i - 1] == '-')
			return false;
		start = i + 1;
	}
	return true;
}

/* True if q[0..n) is a Dot-string: atoms of atext (or UTF-8, already
 * checked by the parser) separated by single dots. */
static bool is_dot_atom(const unsigned char *q, size_t n)
{
	if (n == 0 || q[0] == '.' || q[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (q[i] == '.') {
			if (q[i - 1] == '.')
				return false;
		} else if (!is_atext(q[i]) && q[i] < 0x80) {
			return false;
		}
	}
	return true;
}

int smtp_path_canonical(const struct smtp_path *p, struct buf *out)
{
	if (p->is_null)
		return 0;
	const unsigned char *l = (const unsigned char *)p->local;
	size_t n = p->local_len;
	if (!p->quoted) {
		if (buf_append(out, l, n) < 0)
			return -1;
	} else {
		/* The content with its quoted-pairs resolved, at most as long
		 * as the text written. */
		if (n < 2)
			return -1;
		unsigned char *t = xmalloc(n);
		size_t tn = 0;
		for (size_t i = 1; i + 1 < n; i++) {
			if (l[i] == '\\' && i + 2 < n)
				i++;
			t[tn++] = l[i];
		}
		int r = 0;
		if (is_dot_atom(t, tn)) {
			r = buf_append(out, t, tn);
		} else {
			/* Minimal quoting: only '"' and '\' need a backslash. */
			r = buf_append(out, "\"", 1);
			for (size_t i = 0; i < tn && r == 0; i++) {
				if (t[i] == '"' || t[i] == '\\')
					r = buf_append(out, "\\", 1);
				if (r == 0)
					r = buf_append(out, t + i, 1);
			}
			if (r == 0)
				r = buf_append(out, "\"", 1);
		}
		free(t);
		if (r < 0)
			return -1;
	}
	if (!p->domain)
		return 0;
	size_t dn = p->domain_len;
	if (!p->domain_literal && dn > 1 && p->domain[dn - 1] == '.')
		dn--;
	if (buf_append(out, "@", 1) < 0 || buf_append(out, p->domain, dn) < 0)
		return -1;
	return 0;
}

bool smtp_domain_in_list(const char *domain, size_t n, const char *const *domains,
			 size_t n_domains)
{
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0)
		return false;
	for (size_t k = 0; k < n_domains; k++)
		if (domains[k] && str_eq_nocase(domain, n, domains[k]))
			return true;
	return false;
}

/* ---- addresses in header fields (RFC 5322 §3.4) ---------------------- */

/* Skips a comment starting at v[i] == '('; returns the index after it, or
 * n + 1 if it is not closed. */
static size_t hdr_skip_comment(const char *v, size_t n, size_t i)
{
	int depth = 0;
	for (; i < n; i++) {
		if (v[i] == '\\') {
			i++;
			continue;
		}
		if (v[i] == '(')
			depth++;
		else if (v[i] == ')' && --depth == 0)
			return i + 1;
	}
	return n + 1;
}

/* Skips a quoted string at v[i] == '"', appending it to tok if given. */
static size_t hdr_skip_quoted(const char *v, size_t n, size_t i, struct buf *tok)
{
	size_t start = i++;
	for (; i < n; i++) {
		if (v[i] == '\\') {
			i++;
			continue;
		}
		if (v[i] == '"') {
			if (tok)
				buf_append(tok, v + start, i + 1 - start);
			return i + 1;
		}
	}
	return n + 1;
}

static int hdr_emit(const char *a, size_t len, size_t *count, size_t max,
		    void (*fn)(const char *, size_t, void *), void *arg)
{
	while (len > 0 && (*a == ' ' || *a == '\t'))
		a++, len--;
	while (len > 0 && (a[len - 1] == ' ' || a[len - 1] == '\t'))
		len--;
	/* Obsolete route syntax inside <>: "@a,@b:user@domain". */
	if (len > 0 && a[0] == '@') {
		const char *colon = memchr(a, ':', len);
		if (!colon)
			return -1;
		len -= (size_t)(colon + 1 - a);
		a = colon + 1;
	}
	if (len == 0)
		return 0; /* "<>" */
	const char *at = NULL;
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)a[i];
		if (ch == '"')
			quoted = !quoted;
		else if (ch == '\\' && quoted)
			i++;
		else if (!quoted && (ch == ' ' || ch == '\t' || ch < 0x20 || ch == 0x7f))
			return -1;
		else if (!quoted && ch == '@')
			at = a + i;
	}
	if (!at || at == a || at == a + len - 1)
		return -1;
	if (++*count > max)
		return -1;
	fn(a, len, arg);
	return 0;
}

int smtp_header_addresses(const char *v, size_t n, size_t max,
			  void (*fn)(const char *addr, size_t len, void *arg), void *arg)
{
	struct buf tok;
	buf_init(&tok, n + 1);
	size_t count = 0;
	bool angle = false; /* the current mailbox had <...> */
	/* An unquoted '@' before a '<' is a display name that reads as an
	 * address ("alice@example.org <mallory@example.net>"): RFC 5322 3.4
	 * forbids it, and mail clients would show the wrong sender. */
	bool bare_at = false;
	int rc = 0;
	size_t i = 0;
	while (i <= n && rc == 0) {
		char c = i < n ? v[i] : ',';
		if (c == '(') {
			i = hdr_skip_comment(v, n, i);
			if (i > n)
				rc = -1;
		} else if (c == '"') {
			i = hdr_skip_quoted(v, n, i, &tok);
			if (i > n)
				rc = -1;
		} else if (c == '<') {
			size_t j = i + 1;
			while (j < n && v[j] != '>') {
				if (v[j] == '"') {
					j = hdr_skip_quoted(v, n, j, NULL);
					continue;
				}
				j++;
			}
			if (j >= n) {
				rc = -1;
				break;
			}
			if (angle || bare_at) {
				rc = -1; /* two angle-addrs in one mailbox, or '@' in its name */
				break;
			}
			rc = hdr_emit(v + i + 1, j - i - 1, &count, max, fn, arg);
			angle = true;
			buf_reset(&tok);
			i = j + 1;
		} else if (c == '>') {
			rc = -1; /* no '<' opened it */
		} else if (c == ':') {
			/* A group's display name ends here; its members follow. */
			if (angle || bare_at)
				rc = -1;
			buf_reset(&tok);
			i++;
		} else if (c == ',' || c == ';') {
			if (!angle && buf_len(&tok) > 0)
				rc = hdr_emit((const char *)buf_ptr(&tok), buf_len(&tok), &count, max, fn,
					      arg);
			buf_reset(&tok);
			angle = false;
			bare_at = false;
			i++;
		} else if ((unsigned char)c < 0x20 && c != ' ' && c != '\t' && c != '\r' &&
			   c != '\n') {
			rc = -1; /* a control byte (NUL and the like) is no part of a field */
		} else {
			/* Outside <>, the display name's words and the addr-spec's
			 * parts; white space between them is folding. */
			if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
				if (angle) {
					rc = -1; /* text after the angle-addr */
					break;
				}
				buf_append(&tok, &c, 1);
				if (c == '@')
					bare_at = true;
			}
			i++;
		}
	}
	buf_free(&tok);
	return rc < 0 ? -1 : (int)count;
}
