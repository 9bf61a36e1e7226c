/*
 * sendmail — the sendmail-compatible command.  It holds no privilege and
 * decides nothing about delivery: it reads the message, works out the
 * envelope and speaks SMTP to the daemon's local socket, where the
 * daemon applies its own checks and records which user connected.
 *
 * Recipients the daemon refuses: the message still goes to the accepted
 * ones and the command exits with EX_NOUSER (67) after naming each refused
 * address.  A permanent status tells the caller something was lost without
 * inviting a retry that would deliver twice to the accepted recipients.
 * A temporary refusal of any recipient (4xx) instead abandons the whole
 * transaction (EX_TEMPFAIL, 75): a retry then reaches every recipient once.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include "../smtp/smtp.h"
#include "../util/util.h"
#include "daemon.h"

/* The peer is our own daemon, but a hung or broken one must not hang the
 * caller (cron, scripts) forever or make it buffer without bound. */
#define SM_TIMEOUT_MS (300 * 1000)
#define SM_REPLY_LINE_MAX 2048
#define SM_REPLY_LINES_MAX 100
#define SM_NAME_MAX 200      /* bytes of a full name kept in From: */
#define SM_CHUNK 65536       /* bytes per write of the message data */
#define SM_LINE_MAX 998      /* RFC 5322 2.1.1, without the CRLF */
#define SM_ENV_SOCKET "SLUICE_SENDMAIL_SOCKET"

/* ---- reading the message ------------------------------------------------ */

static int sm_put(struct buf *out, const void *p, size_t n, uint64_t max, bool *too_big,
		  struct err *e)
{
	if ((uint64_t)buf_len(out) + n > max || buf_append(out, p, n) < 0) {
		*too_big = true;
		return err_set(e, "message larger than %llu bytes", (unsigned long long)max);
	}
	return 0;
}

/* The first line of a message saved from an mbox ("From addr date"), not
 * a header field ("From:" or the obsolete "From :"). */
static bool sm_mbox_from(const char *p, size_t n)
{
	if (n < 5 || memcmp(p, "From ", 5) != 0)
		return false;
	size_t i = 4;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return !(i < n && p[i] == ':');
}

/*
 * Lines end with LF, CRLF or a bare CR, and each goes out as CRLF: the
 * daemon refuses a bare CR in message data (RFC 5321 2.3.8), and the CRs
 * of cron jobs' progress output are line ends to a reader.  A line longer
 * than SM_LINE_MAX is broken there (RFC 5322 2.1.1), folded in the header
 * so that it stays the same field.  A first line in mbox form is dropped.
 */
int sendmail_read_message(FILE *in, bool dot_ends, uint64_t max, struct buf *out, bool *too_big,
			  struct err *e)
{
	*too_big = false;
	size_t line_start = buf_len(out);
	bool first = true, in_header = true;
	/* A line that so far reads "." is held back: if it ends there it is
	 * the terminator, which must not count against max. */
	bool dot = false;
	for (;;) {
		int ch = getc(in);
		if (ch == EOF && ferror(in))
			return err_set(e, "reading the message: %s", strerror(errno));
		if (ch == '\r') {
			int nx = getc(in);
			if (nx != '\n' && nx != EOF)
				ungetc(nx, in);
			ch = '\n';
		}
		bool empty = buf_len(out) == line_start;
		if (dot_ends && empty && !dot && ch == '.') {
			dot = true;
			continue;
		}
		if (dot && empty && (ch == '\n' || ch == EOF))
			return 0;
		if (dot && sm_put(out, ".", 1, max, too_big, e) < 0)
			return -1;
		dot = false;
		if (ch != EOF && ch != '\n') {
			if (buf_len(out) - line_start >= SM_LINE_MAX) {
				const char *brk = in_header ? "\r\n " : "\r\n";
				if (sm_put(out, brk, strlen(brk), max, too_big, e) < 0)
					return -1;
				line_start = buf_len(out) - (in_header ? 1 : 0);
				first = false;
			}
			char c = (char)ch;
			if (sm_put(out, &c, 1, max, too_big, e) < 0)
				return -1;
			continue;
		}
		size_t len = buf_len(out) - line_start;
		if (ch == EOF && len == 0)
			return 0;
		if (first && sm_mbox_from((const char *)buf_ptr(out) + line_start, len)) {
			out->len -= len;
		} else {
			if (len == 0)
				in_header = false;
			if (sm_put(out, "\r\n", 2, max, too_big, e) < 0)
				return -1;
		}
		first = false;
		if (ch == EOF)
			return 0;
		line_start = buf_len(out);
	}
}

/* ---- header fields ------------------------------------------------------ */

/* One field of a CRLF header block, with its continuation lines. */
struct sm_field {
	const char *start;
	size_t len;              /* with the final CRLF */
	const char *name;
	size_t name_len;         /* 0 if the line has no ':' */
	const char *value;       /* after ':', without the final CRLF */
	size_t value_len;
};

static bool sm_next_field(const char *h, size_t n, size_t *pos, struct sm_field *f)
{
	if (*pos >= n)
		return false;
	size_t start = *pos, i = start;
	for (;;) {
		const char *nl = memchr(h + i, '\n', n - i);
		if (!nl) {
			i = n;
			break;
		}
		i = (size_t)(nl - h) + 1;
		if (i >= n || (h[i] != ' ' && h[i] != '\t'))
			break;
	}
	f->start = h + start;
	f->len = i - start;
	size_t end = i;
	if (end > start && h[end - 1] == '\n')
		end--;
	if (end > start && h[end - 1] == '\r')
		end--;
	const char *colon = memchr(h + start, ':', end - start);
	f->name = h + start;
	if (!colon) {
		f->name_len = 0;
		f->value = h + start;
		f->value_len = end - start;
	} else {
		f->name_len = (size_t)(colon - (h + start));
		/* RFC 5322 §4.5.1 obsolete syntax: white space before the colon. */
		while (f->name_len > 0 &&
		       (f->name[f->name_len - 1] == ' ' || f->name[f->name_len - 1] == '\t'))
			f->name_len--;
		f->value = colon + 1;
		f->value_len = (size_t)(h + end - f->value);
	}
	*pos = i;
	return true;
}

static bool sm_field_is(const struct sm_field *f, const char *name)
{
	return f->name_len > 0 && str_eq_nocase(f->name, f->name_len, name);
}

/* RFC 5322 §2.2: field name = printable ASCII except ':'. */
static bool sm_is_field_line(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] >= 33 && p[i] <= 126 && p[i] != ':')
		i++;
	if (i == 0)
		return false;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < n && p[i] == ':';
}

size_t sendmail_header_end(const uint8_t *p, size_t n, size_t *body_off)
{
	size_t pos = 0;
	while (pos < n) {
		const uint8_t *nl = memchr(p + pos, '\n', n - pos);
		size_t end = nl ? (size_t)(nl - p) + 1 : n;
		size_t len = end - pos;
		if (len > 0 && p[pos + len - 1] == '\n')
			len--;
		if (len > 0 && p[pos + len - 1] == '\r')
			len--;
		if (len == 0) {
			*body_off = end;
			return pos;
		}
		bool cont = p[pos] == ' ' || p[pos] == '\t';
		bool field = sm_is_field_line(p + pos, len);
		if (pos == 0 ? !field : !(field || cont)) {
			*body_off = pos;
			return pos;
		}
		pos = end;
	}
	*body_off = n;
	return n;
}

bool sendmail_has_field(const char *hdr, size_t n, const char *name)
{
	size_t pos = 0;
	struct sm_field f;
	while (sm_next_field(hdr, n, &pos, &f))
		if (sm_field_is(&f, name))
			return true;
	return false;
}

int sendmail_strip_bcc(const char *hdr, size_t n, struct buf *out)
{
	size_t pos = 0;
	struct sm_field f;
	while (sm_next_field(hdr, n, &pos, &f)) {
		if (sm_field_is(&f, "Bcc") || sm_field_is(&f, "Resent-Bcc"))
			continue;
		if (buf_append(out, f.start, f.len) < 0)
			return -1;
	}
	return 0;
}

/* ---- addresses ---------------------------------------------------------- */

static bool sm_atext(unsigned char c)
{
	return isalnum(c) || c >= 0x80 || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool sm_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Nothing that could end or split an SMTP command line. */
static bool sm_addr_clean(const char *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return n > 0;
}

/* The local part of a mailbox written without a domain ("root",
 * "Admin <root>", "root (the admin)"), appended to out; false if el is
 * anything else. */
static bool sm_bare_local(const char *el, size_t n, struct buf *out)
{
	struct buf t;
	buf_init(&t, n + 1);
	int depth = 0;
	for (size_t i = 0; i < n; i++) {
		if (depth > 0) {
			if (el[i] == '\\')
				i++;
			else if (el[i] == '(')
				depth++;
			else if (el[i] == ')')
				depth--;
			continue;
		}
		if (el[i] == '(')
			depth = 1;
		else
			buf_append(&t, el + i, 1);
	}
	const char *p = (const char *)buf_ptr(&t);
	size_t len = buf_len(&t), a = 0, b = len;
	bool quoted = false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '"')
			quoted = !quoted;
		else if (p[i] == '\\' && quoted)
			i++;
		else if (p[i] == '<' && !quoted) {
			const char *gt = memchr(p + i, '>', len - i);
			if (!gt)
				break;
			a = i + 1;
			b = (size_t)(gt - p);
			for (const char *r = gt + 1; r < p + len; r++)
				if (!sm_ws(*r))
					b = a; /* text after the angle-addr */
			break;
		}
	}
	while (a < b && sm_ws(p[a]))
		a++;
	while (b > a && sm_ws(p[b - 1]))
		b--;
	bool ok = b > a && p[a] != '.' && p[b - 1] != '.';
	for (size_t i = a; ok && i < b; i++)
		ok = sm_atext((unsigned char)p[i]) || (p[i] == '.' && p[i + 1] != '.');
	if (ok)
		ok = buf_append(out, p + a, b - a) == 0;
	buf_free(&t);
	return ok;
}

/* The address handed over may live in the parser's own storage: copy. */
static void sm_take_one(const char *a, size_t len, void *arg)
{
	struct buf *o = arg;
	buf_reset(o);
	buf_append(o, a, len);
}

static int sm_element(const char *el, size_t n, const char *domain, sendmail_addr_fn *fn,
		      void *arg, struct err *e)
{
	while (n > 0 && sm_ws(*el))
		el++, n--;
	while (n > 0 && sm_ws(el[n - 1]))
		n--;
	if (n == 0)
		return 0;
	struct buf o;
	buf_init(&o, n + 1);
	int r = smtp_header_addresses(el, n, 1, sm_take_one, &o);
	bool ok = r == 1 && sm_addr_clean((const char *)buf_ptr(&o), buf_len(&o));
	if (ok)
		fn((const char *)buf_ptr(&o), buf_len(&o), arg);
	buf_free(&o);
	if (r == 0)
		return 0; /* "<>" */
	if (ok)
		return 1;
	if (r < 0 && domain && *domain) {
		struct buf q;
		buf_init(&q, n + strlen(domain) + 2);
		if (sm_bare_local(el, n, &q) && buf_puts(&q, "@") == 0 &&
		    buf_puts(&q, domain) == 0) {
			fn((const char *)buf_ptr(&q), buf_len(&q), arg);
			buf_free(&q);
			return 1;
		}
		buf_free(&q);
	}
	struct buf esc;
	buf_init(&esc, 512);
	str_escape(&esc, el, n, 200);
	err_set(e, "cannot parse \"%s\" as an address", buf_cstr(&esc) ? buf_cstr(&esc) : "");
	buf_free(&esc);
	return -1;
}

int sendmail_parse_addrs(const char *v, size_t n, const char *domain, sendmail_addr_fn *fn,
			 void *arg, struct err *e)
{
	int count = 0, depth = 0;
	bool quoted = false, angle = false;
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n) {
			char c = v[i];
			if (quoted || depth > 0) {
				if (c == '\\') {
					if (i + 1 < n)
						i++;
				} else if (quoted && c == '"') {
					quoted = false;
				} else if (!quoted && c == '(') {
					depth++;
				} else if (!quoted && c == ')') {
					depth--;
				}
				continue;
			}
			if (c == '"') {
				quoted = true;
				continue;
			}
			if (c == '(') {
				depth = 1;
				continue;
			}
			if (angle) {
				if (c == '>')
					angle = false;
				continue;
			}
			if (c == '<') {
				angle = true;
				continue;
			}
			if (c == ':') {
				start = i + 1; /* a group's display name */
				continue;
			}
			if (c != ',' && c != ';')
				continue;
		} else if (quoted || depth > 0 || angle) {
			const char *what = quoted ? "quoted string" : depth > 0 ? "comment"
									  : "<address>";
			return err_set(e, "unterminated %s in an address list", what);
		}
		int r = sm_element(v + start, i - start, domain, fn, arg, e);
		if (r < 0)
			return -1;
		if (count > INT_MAX - r)
			return err_set(e, "too many addresses");
		count += r;
		start = i + 1;
	}
	return count;
}

int sendmail_header_rcpts(const char *hdr, size_t n, const char *domain, bool *resent,
			  sendmail_addr_fn *fn, void *arg, struct err *e)
{
	static const char *const plain[] = { "To", "Cc", "Bcc", NULL };
	static const char *const re[] = { "Resent-To", "Resent-Cc", "Resent-Bcc", NULL };
	size_t pos = 0;
	struct sm_field f;
	*resent = false;
	while (!*resent && sm_next_field(hdr, n, &pos, &f))
		for (const char *const *k = re; *k; k++)
			if (sm_field_is(&f, *k))
				*resent = true;
	/* RFC 5322 §3.6.6: a resent message goes to the Resent- recipients,
	 * not again to the original ones. */
	const char *const *names = *resent ? re : plain;
	int count = 0;
	pos = 0;
	while (sm_next_field(hdr, n, &pos, &f)) {
		bool want = false;
		for (const char *const *k = names; *k && !want; k++)
			want = sm_field_is(&f, *k);
		if (!want)
			continue;
		/* Unfolding (RFC 5322 §2.2.3) is removing the CRLFs. */
		struct buf v;
		buf_init(&v, f.value_len + 1);
		for (size_t i = 0; i < f.value_len; i++)
			if (f.value[i] != '\r' && f.value[i] != '\n')
				buf_append(&v, f.value + i, 1);
		struct err sub = { "" };
		int r = sendmail_parse_addrs((const char *)buf_ptr(&v), buf_len(&v), domain, fn,
					     arg, &sub);
		buf_free(&v);
		if (r < 0)
			return err_set(e, "%.*s: %s", (int)(f.name_len < 40 ? f.name_len : 40),
				       f.name, sub.msg);
		if (count > INT_MAX - r)
			return err_set(e, "too many addresses");
		count += r;
	}
	return count;
}

/* ---- adding From -------------------------------------------------------- */

/* Appends an addr-spec, quoting the local part when it is not a dot-atom
 * (login names may hold characters an atom may not). */
static int sm_mailbox(struct buf *out, const char *local, const char *domain)
{
	size_t n = strlen(local);
	bool atom = n > 0 && local[0] != '.' && local[n - 1] != '.';
	for (size_t i = 0; atom && i < n; i++)
		atom = sm_atext((unsigned char)local[i]) ||
		       (local[i] == '.' && local[i + 1] != '.');
	int r = 0;
	if (atom) {
		r = buf_puts(out, local);
	} else {
		r |= buf_puts(out, "\"");
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)local[i];
			if (c < 0x20 || c == 0x7f)
				continue;
			if (c == '"' || c == '\\')
				r |= buf_puts(out, "\\");
			r |= buf_append(out, &c, 1);
		}
		r |= buf_puts(out, "\"");
	}
	r |= buf_printf(out, "@%s", domain);
	return r < 0 ? -1 : 0;
}

int sendmail_from_field(struct buf *out, const char *name, const char *addr)
{
	/* The name is the caller's own text but must not end the field or
	 * start another: control characters go. */
	struct buf nm;
	buf_init(&nm, SM_NAME_MAX);
	bool ascii = true;
	for (const char *s = name ? name : ""; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			c = ' ';
		if (buf_append(&nm, &c, 1) < 0)
			break;
		if (c >= 0x80)
			ascii = false;
	}
	/* Cut at a character boundary: drop a partial UTF-8 sequence. */
	if (buf_len(&nm) == SM_NAME_MAX) {
		size_t k = buf_len(&nm);
		const uint8_t *p = buf_ptr(&nm);
		size_t lead = k;
		while (lead > 0 && (p[lead - 1] & 0xC0) == 0x80)
			lead--;
		if (lead > 0 && p[lead - 1] >= 0xC0) {
			unsigned need = p[lead - 1] >= 0xF0 ? 4 : p[lead - 1] >= 0xE0 ? 3 : 2;
			if (k - (lead - 1) < need)
				nm.len -= k - (lead - 1);
		}
	}
	const char *p = (const char *)buf_ptr(&nm);
	size_t a = 0, b = buf_len(&nm);
	while (a < b && p[a] == ' ')
		a++;
	while (b > a && p[b - 1] == ' ')
		b--;
	int r = buf_puts(out, "From: ");
	if (a == b) {
		r |= buf_puts(out, addr);
	} else if (!ascii) {
		/* RFC 2047 encoded-words of at most 75 characters, never
		 * splitting a UTF-8 sequence. */
		size_t i = a;
		while (i < b) {
			size_t j = i + 45 < b ? i + 45 : b;
			while (j < b && j > i + 1 && ((unsigned char)p[j] & 0xC0) == 0x80)
				j--;
			if (i > a)
				r |= buf_puts(out, "\r\n ");
			r |= buf_puts(out, "=?UTF-8?B?");
			r |= b64_encode(p + i, j - i, out);
			r |= buf_puts(out, "?=");
			i = j;
		}
		r |= buf_printf(out, " <%s>", addr);
	} else {
		bool atoms = true;
		for (size_t i = a; i < b && atoms; i++)
			atoms = p[i] == ' ' || sm_atext((unsigned char)p[i]);
		if (atoms) {
			r |= buf_append(out, p + a, b - a);
		} else {
			r |= buf_puts(out, "\"");
			for (size_t i = a; i < b; i++) {
				if (p[i] == '"' || p[i] == '\\')
					r |= buf_puts(out, "\\");
				r |= buf_append(out, p + i, 1);
			}
			r |= buf_puts(out, "\"");
		}
		r |= buf_printf(out, " <%s>", addr);
	}
	r |= buf_puts(out, "\r\n");
	buf_free(&nm);
	return r < 0 ? -1 : 0;
}

int sendmail_prepare(const uint8_t *msg, size_t n, const char *from_name, const char *from_addr,
		     struct buf *out)
{
	size_t body_off;
	size_t hl = sendmail_header_end(msg, n, &body_off);
	const char *h = (const char *)msg;
	if (!sendmail_has_field(h, hl, "From") &&
	    sendmail_from_field(out, from_name, from_addr) < 0)
		return -1;
	/* Bcc goes whether or not -t was given: the copies must not show
	 * who else received one (RFC 5322 §3.6.3). */
	if (sendmail_strip_bcc(h, hl, out) < 0 || buf_append(out, "\r\n", 2) < 0 ||
	    buf_append(out, msg + body_off, n - body_off) < 0)
		return -1;
	return 0;
}

/* ---- command line ------------------------------------------------------- */

struct sm_opts {
	bool extract;           /* -t */
	bool dot_ends;          /* no -i / -oi */
	const char *sender;     /* -f / -r; NULL = the caller */
	const char *fullname;   /* -F */
	const char *conf_path;  /* -C */
	const char *notify;     /* -N, uppercased copy */
	const char *ret;        /* -R: FULL or HDRS */
	const char *envid;      /* -V */
	char **rcpts;
	int n_rcpts;
};

static int sm_usage(FILE *f, const char *why, const char *arg)
{
	if (why)
		fprintf(f, "sendmail: %s%s%s\n", why, arg ? ": " : "", arg ? arg : "");
	fprintf(f,
		"usage: sendmail [-t] [-i] [-f sender] [-F name] [-C file] [-N dsn]\n"
		"                [-R full|hdrs] [-V envid] [--] [recipient ...]\n"
		"  -t        recipients also from To:, Cc:, Bcc: (or Resent-*) of the message\n"
		"  -i, -oi   a line holding only \".\" does not end the message\n"
		"  -f addr   envelope sender (\"<>\" for none)\n"
		"  -F name   full name for the From: field added when it is missing\n"
		"  -N never | success,failure,delay   delivery status notifications\n");
	return EX_USAGE;
}

static bool sm_notify_ok(const char *v, char *up)
{
	size_t n = strlen(v);
	for (size_t i = 0; i <= n; i++)
		up[i] = (char)toupper((unsigned char)v[i]);
	if (strcmp(up, "NEVER") == 0)
		return true;
	const char *s = up;
	while (*s) {
		size_t k = strcspn(s, ",");
		if (!((k == 7 && strncmp(s, "SUCCESS", 7) == 0) ||
		      (k == 7 && strncmp(s, "FAILURE", 7) == 0) ||
		      (k == 5 && strncmp(s, "DELAY", 5) == 0)))
			return false;
		s += k;
		if (*s == ',' && *++s == '\0')
			return false;
	}
	return n > 0;
}

static int sm_parse_args(int argc, char **argv, struct sm_opts *o, char **notify_copy, FILE *errf)
{
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		char opt = a[1];
		if (strchr("fFrCNRVBLhO", opt) && opt) {
			const char *v = a[2] ? a + 2 : i + 1 < argc ? argv[++i] : NULL;
			if (!v)
				return sm_usage(errf, "option needs a value", a);
			switch (opt) {
			case 'f':
			case 'r':
				o->sender = v;
				break;
			case 'F':
				o->fullname = v;
				break;
			case 'C':
				o->conf_path = v;
				break;
			case 'N':
				free(*notify_copy);
				*notify_copy = xmalloc(strlen(v) + 1);
				if (!sm_notify_ok(v, *notify_copy))
					return sm_usage(errf, "bad -N value", v);
				o->notify = *notify_copy;
				break;
			case 'R':
				if (strcasecmp(v, "full") == 0)
					o->ret = "FULL";
				else if (strcasecmp(v, "hdrs") == 0)
					o->ret = "HDRS";
				else
					return sm_usage(errf, "bad -R value", v);
				break;
			case 'V':
				o->envid = v;
				break;
			case 'B':
				/* The body type is found from the content. */
				if (strcasecmp(v, "7BIT") != 0 && strcasecmp(v, "8BITMIME") != 0)
					return sm_usage(errf, "bad -B value", v);
				break;
			default:
				/* -L tag (syslog name), -h hops, -O option=value: other
				 * MTAs' settings that programs pass along; the daemon's
				 * own configuration decides. */
				break;
			}
			continue;
		}
		/* Exim's -oMr protocol, -oMs host and the like: trusted callers'
		 * overrides of the Received: trace, which the daemon writes from
		 * what it knows; the value is skipped. */
		if (strncmp(a, "-oM", 3) == 0 && a[3] && !a[4]) {
			if (++i >= argc)
				return sm_usage(errf, "option needs a value", a);
			continue;
		}
		if (strcmp(a, "-bm") == 0)
			continue;
		if (strcmp(a, "-oi") == 0) {
			o->dot_ends = false;
			continue;
		}
		/* Error-reporting and delivery-mode options of other MTAs: the
		 * daemon reports by bounce and always queues. */
		static const char *const ignored[] = { "-oem", "-oee", "-oep", "-oeq", "-oew",
						       "-odi", "-odb", "-odq", "-om",  "-em",
						       "-ee",  "-ep",  "-eq",  "-ew",  "-Am",
						       "-Ac",  "-G",   NULL };
		bool skip = false;
		for (const char *const *k = ignored; *k && !skip; k++)
			skip = strcmp(a, *k) == 0;
		if (skip)
			continue;
		/* Single-letter flags, possibly bundled ("-ti"). */
		if (a[1] == '\0' || a[strspn(a + 1, "tivnU") + 1] != '\0')
			return sm_usage(errf, "unknown option", a);
		for (const char *s = a + 1; *s; s++) {
			if (*s == 't')
				o->extract = true;
			else if (*s == 'i')
				o->dot_ends = false;
		}
	}
	o->rcpts = argv + i;
	o->n_rcpts = argc - i;
	return 0;
}

/* An unprivileged caller may not be able to read the configuration: the
 * defaults then locate the daemon (and SLUICE_SENDMAIL_SOCKET covers a
 * moved socket). */
static int sm_load_conf(const char *path_opt, FILE *errf, struct conf **out)
{
	const char *path = path_opt ? path_opt : CONF_DEFAULT_PATH;
	struct err e = { "" };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && (errno == EACCES || errno == EPERM || (errno == ENOENT && !path_opt))) {
		/* Listeners do not matter here; port 25 alone needs no
		 * certificate to pass validation. */
		if (conf_load_string("(defaults)", "daemon_smtp_ports = 25\n", NULL, false, out,
				     &e) == 0)
			return 0;
		fprintf(errf, "sendmail: %s\n", e.msg);
		return EX_SOFTWARE;
	}
	if (fd >= 0)
		close(fd);
	if (conf_load(path, NULL, false, out, &e) < 0) {
		fprintf(errf, "sendmail: %s\n", e.msg);
		return EX_CONFIG;
	}
	return 0;
}

/* ---- recipients --------------------------------------------------------- */

struct sm_list {
	char **v;
	size_t n, cap;
};

static void sm_list_add(const char *a, size_t len, void *arg)
{
	struct sm_list *l = arg;
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->v[i]) == len && memcmp(l->v[i], a, len) == 0)
			return;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 8;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = str_ndup(a, len);
}

static void sm_list_free(struct sm_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* ---- the SMTP conversation ---------------------------------------------- */

struct sm_conn {
	int fd;
	struct buf in;
};

struct sm_reply {
	int code;
	struct buf text; /* the lines without their codes, '\n' between */
};

static int sm_wait(int fd, short ev, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - time_mono_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = { .fd = fd, .events = ev };
		int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		return 0;
	}
}

static int sm_send(struct sm_conn *k, const void *p, size_t n, struct err *e)
{
	const uint8_t *b = p;
	int64_t deadline = time_mono_ms() + SM_TIMEOUT_MS;
	while (n > 0) {
		ssize_t w = send(k->fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (sm_wait(k->fd, POLLOUT, deadline) < 0)
				return err_set(e, "sending: %s", strerror(errno));
			continue;
		}
		if (w < 0)
			return err_set(e, "sending: %s", strerror(errno));
		b += w;
		n -= (size_t)w;
		deadline = time_mono_ms() + SM_TIMEOUT_MS;
	}
	return 0;
}

/* One reply line, LF included, as a view into k->in (consume it after). */
static int sm_line(struct sm_conn *k, int64_t deadline, const char **line, size_t *len,
		   struct err *e)
{
	for (;;) {
		const uint8_t *p = buf_ptr(&k->in);
		size_t n = buf_len(&k->in);
		const uint8_t *nl = memchr(p, '\n', n);
		if (nl) {
			*line = (const char *)p;
			*len = (size_t)(nl - p) + 1;
			return 0;
		}
		if (n >= SM_REPLY_LINE_MAX)
			return err_set(e, "reply line longer than %d bytes", SM_REPLY_LINE_MAX);
		if (sm_wait(k->fd, POLLIN, deadline) < 0)
			return err_set(e, "%s", errno == ETIMEDOUT ? "no reply in time"
								    : strerror(errno));
		buf_compact(&k->in);
		uint8_t *w = buf_reserve(&k->in, SM_REPLY_LINE_MAX - n);
		if (!w)
			return err_set(e, "out of memory");
		ssize_t r = recv(k->fd, w, SM_REPLY_LINE_MAX - n, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (r < 0)
			return err_set(e, "receiving: %s", strerror(errno));
		if (r == 0)
			return err_set(e, "connection closed");
		buf_commit(&k->in, (size_t)r);
	}
}

static int sm_reply(struct sm_conn *k, struct sm_reply *rp, struct err *e)
{
	buf_reset(&rp->text);
	rp->code = 0;
	int64_t deadline = time_mono_ms() + SM_TIMEOUT_MS;
	for (int nl = 0;; nl++) {
		if (nl >= SM_REPLY_LINES_MAX)
			return err_set(e, "reply of more than %d lines", SM_REPLY_LINES_MAX);
		const char *l = "";
		size_t n = 0;
		if (sm_line(k, deadline, &l, &n, e) < 0)
			return -1;
		if (n == 0)
			return err_set(e, "empty reply line");
		size_t len = n - 1;
		if (len > 0 && l[len - 1] == '\r')
			len--;
		bool ok = len >= 3 && l[0] >= '2' && l[0] <= '5' && isdigit((unsigned char)l[1]) &&
			  isdigit((unsigned char)l[2]) && (len == 3 || l[3] == ' ' || l[3] == '-');
		int code = ok ? (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0') : 0;
		if (!ok || (nl > 0 && code != rp->code))
			return err_set(e, "malformed reply");
		rp->code = code;
		if (nl > 0)
			buf_puts(&rp->text, "\n");
		if (len > 4)
			buf_append(&rp->text, l + 4, len - 4);
		bool last = len == 3 || l[3] == ' ';
		buf_consume(&k->in, n);
		if (last)
			return 0;
	}
}

static int sm_cmd(struct sm_conn *k, struct sm_reply *rp, struct err *e, const char *cmd)
{
	if (sm_send(k, cmd, strlen(cmd), e) < 0 || sm_send(k, "\r\n", 2, e) < 0)
		return -1;
	return sm_reply(k, rp, e);
}

/* The reply as one printable line. */
static void sm_print_reply(FILE *f, const char *what, const struct sm_reply *rp)
{
	fprintf(f, "sendmail: %s: %d ", what, rp->code);
	const uint8_t *p = buf_ptr(&rp->text);
	for (size_t i = 0; i < buf_len(&rp->text); i++) {
		if (p[i] == '\n')
			fputs(" / ", f);
		else
			fputc(p[i] < 0x20 || p[i] == 0x7f ? '?' : p[i], f);
	}
	fputc('\n', f);
}

/* True if the EHLO reply lists this keyword (RFC 5321 §4.1.1.1). */
static bool sm_ext(const struct sm_reply *rp, const char *kw)
{
	const char *p = (const char *)buf_ptr(&rp->text);
	size_t n = buf_len(&rp->text), kl = strlen(kw);
	const char *nl = memchr(p, '\n', n);
	while (nl) {
		const char *l = nl + 1;
		const char *end = memchr(l, '\n', (size_t)(p + n - l));
		size_t len = end ? (size_t)(end - l) : (size_t)(p + n - l);
		if (len >= kl && str_has_prefix_nocase(l, len, kw) && (len == kl || l[kl] == ' '))
			return true;
		nl = end;
	}
	return false;
}

struct sm_env {
	const char *sender;     /* "" = null sender */
	struct sm_list *rcpts;
	const struct buf *data;
	const struct sm_opts *o;
};

static int sm_send_data(struct sm_conn *k, const struct buf *data, struct err *e)
{
	struct buf out;
	buf_init(&out, SM_CHUNK * 2 + 8);
	const uint8_t *p = buf_ptr(data);
	size_t n = buf_len(data), pos = 0;
	int rc = 0;
	while (pos < n && rc == 0) {
		const uint8_t *nl = memchr(p + pos, '\n', n - pos);
		size_t end = nl ? (size_t)(nl - p) + 1 : n;
		/* RFC 5321 §4.5.2: transparency. */
		if (p[pos] == '.')
			buf_append(&out, ".", 1);
		size_t take = end - pos;
		while (take > 0 && rc == 0) {
			size_t room = SM_CHUNK * 2 - buf_len(&out);
			size_t c = take < room ? take : room;
			buf_append(&out, p + pos, c);
			pos += c;
			take -= c;
			if (buf_len(&out) >= SM_CHUNK) {
				rc = sm_send(k, buf_ptr(&out), buf_len(&out), e);
				buf_reset(&out);
			}
		}
	}
	if (rc == 0 && n > 0 && (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n'))
		buf_append(&out, "\r\n", 2);
	if (rc == 0) {
		buf_append(&out, ".\r\n", 3);
		rc = sm_send(k, buf_ptr(&out), buf_len(&out), e);
	}
	buf_free(&out);
	return rc;
}

static int sm_transaction(struct sm_conn *k, const struct sm_env *env, FILE *errf,
			  struct sm_reply *rp, struct err *e)
{
	struct buf cmd;
	buf_init(&cmd, 4096);
	int st = -1; /* -1: connection failure (e) */
	const struct sm_opts *o = env->o;

	if (sm_reply(k, rp, e) < 0)
		goto out;
	if (rp->code != 220) {
		sm_print_reply(errf, "the daemon refused the connection", rp);
		st = rp->code < 500 ? EX_TEMPFAIL : EX_UNAVAILABLE;
		goto out;
	}
	if (sm_cmd(k, rp, e, "EHLO localhost") < 0)
		goto out;
	if (rp->code != 250) {
		sm_print_reply(errf, "EHLO refused", rp);
		st = rp->code < 500 ? EX_TEMPFAIL : EX_UNAVAILABLE;
		goto out;
	}
	bool utf8 = str_has_8bit(env->sender, strlen(env->sender));
	for (size_t i = 0; i < env->rcpts->n; i++)
		utf8 = utf8 || str_has_8bit(env->rcpts->v[i], strlen(env->rcpts->v[i]));
	bool eight = str_has_8bit(buf_ptr(env->data), buf_len(env->data));
	bool dsn = sm_ext(rp, "DSN");
	if (utf8 && !sm_ext(rp, "SMTPUTF8")) {
		fprintf(errf, "sendmail: the daemon does not offer SMTPUTF8, which the "
			      "non-ASCII addresses need\n");
		st = EX_UNAVAILABLE;
		goto out;
	}

	buf_reset(&cmd);
	buf_printf(&cmd, "MAIL FROM:<%s>", env->sender);
	if (eight && sm_ext(rp, "8BITMIME"))
		buf_puts(&cmd, " BODY=8BITMIME");
	if (utf8)
		buf_puts(&cmd, " SMTPUTF8");
	if (dsn && o->ret)
		buf_printf(&cmd, " RET=%s", o->ret);
	if (dsn && o->envid) {
		buf_puts(&cmd, " ENVID=");
		smtp_xtext_encode(o->envid, strlen(o->envid), &cmd);
	}
	if (!buf_cstr(&cmd) || sm_cmd(k, rp, e, buf_cstr(&cmd)) < 0)
		goto out;
	if (rp->code / 100 != 2) {
		sm_print_reply(errf, *env->sender ? env->sender : "<>", rp);
		st = rp->code < 500 ? EX_TEMPFAIL : EX_DATAERR;
		goto quit;
	}

	size_t accepted = 0, refused = 0;
	bool temp = false;
	for (size_t i = 0; i < env->rcpts->n; i++) {
		buf_reset(&cmd);
		buf_printf(&cmd, "RCPT TO:<%s>", env->rcpts->v[i]);
		if (dsn && o->notify)
			buf_printf(&cmd, " NOTIFY=%s", o->notify);
		if (!buf_cstr(&cmd) || sm_cmd(k, rp, e, buf_cstr(&cmd)) < 0)
			goto out;
		if (rp->code / 100 == 2) {
			accepted++;
			continue;
		}
		sm_print_reply(errf, env->rcpts->v[i], rp);
		if (rp->code < 500)
			temp = true;
		else
			refused++;
	}
	if (temp) {
		fprintf(errf, "sendmail: message not sent; try again later\n");
		st = EX_TEMPFAIL;
		goto quit;
	}
	if (accepted == 0) {
		fprintf(errf, "sendmail: message not sent: no recipient accepted\n");
		st = EX_NOUSER;
		goto quit;
	}
	if (sm_cmd(k, rp, e, "DATA") < 0)
		goto out;
	if (rp->code != 354) {
		sm_print_reply(errf, "DATA refused", rp);
		st = rp->code / 100 == 4 ? EX_TEMPFAIL : EX_SOFTWARE;
		goto quit;
	}
	if (sm_send_data(k, env->data, e) < 0 || sm_reply(k, rp, e) < 0)
		goto out;
	if (rp->code / 100 != 2) {
		sm_print_reply(errf, "message refused", rp);
		st = rp->code < 500 ? EX_TEMPFAIL : EX_DATAERR;
		goto quit;
	}
	if (refused > 0) {
		fprintf(errf, "sendmail: message sent to %zu of %zu recipients\n", accepted,
			accepted + refused);
		st = EX_NOUSER;
	} else {
		st = EX_OK;
	}
quit:
	/* The outcome is settled; a failing QUIT changes nothing. */
	{
		struct err ignored = { "" };
		sm_cmd(k, rp, &ignored, "QUIT");
	}
out:
	buf_free(&cmd);
	return st;
}

static int sm_connect(const char *path, int *fd, struct err *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(sa.sun_path))
		return err_set(e, "socket path empty or too long");
	memcpy(sa.sun_path, path, n + 1);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return err_set(e, "%s", strerror(errno));
	/* A full listen queue makes connect wait: bound it too. */
	struct timeval tv = { .tv_sec = SM_TIMEOUT_MS / 1000 };
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int r;
	do
		r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
	while (r < 0 && errno == EINTR);
	int fl = r == 0 ? fcntl(s, F_GETFL) : -1;
	if (r < 0 || fl < 0 || fcntl(s, F_SETFL, fl | O_NONBLOCK) < 0) {
		err_set(e, "%s", strerror(errno));
		close(s);
		return -1;
	}
	*fd = s;
	return 0;
}

/* ---- entry points ------------------------------------------------------- */

static int sm_run_conf(const struct sm_opts *o, const struct conf *c, FILE *in, FILE *errf)
{
	const char *domain = c->primary_hostname;
	const char *env_sock = getenv(SM_ENV_SOCKET);
	const char *path = env_sock && *env_sock ? env_sock : c->sendmail_socket;
	struct err e = { "" };
	int st = EX_OK;

	struct passwd *pw = getpwuid(getuid());
	if (!pw) {
		fprintf(errf, "sendmail: no login name for user ID %u\n", (unsigned)getuid());
		return EX_NOUSER;
	}
	struct buf from_addr, name, msg, data;
	struct sm_list rcpts = { NULL, 0, 0 }, snd = { NULL, 0, 0 };
	buf_init(&from_addr, 1024);
	buf_init(&name, 1024);
	buf_init(&msg, c->message_size_limit);
	buf_init(&data, c->message_size_limit + 4096);
	sm_mailbox(&from_addr, pw->pw_name, domain);
	if (o->fullname)
		buf_puts(&name, o->fullname);
	else if (pw->pw_gecos)
		buf_append(&name, pw->pw_gecos, strcspn(pw->pw_gecos, ","));

	const char *sender = buf_cstr(&from_addr);
	if (o->sender) {
		int r = sendmail_parse_addrs(o->sender, strlen(o->sender), domain, sm_list_add,
					     &snd, &e);
		if (r < 0 || r > 1) {
			fprintf(errf, "sendmail: -f %s: %s\n", o->sender,
				r < 0 ? e.msg : "more than one address");
			st = EX_USAGE;
			goto done;
		}
		sender = r == 0 ? "" : snd.v[0];
	}
	for (int i = 0; i < o->n_rcpts; i++) {
		if (sendmail_parse_addrs(o->rcpts[i], strlen(o->rcpts[i]), domain, sm_list_add,
					 &rcpts, &e) < 0) {
			fprintf(errf, "sendmail: %s\n", e.msg);
			st = EX_DATAERR;
			goto done;
		}
	}

	bool big;
	if (sendmail_read_message(in, o->dot_ends, c->message_size_limit, &msg, &big, &e) < 0) {
		if (big)
			fprintf(errf, "sendmail: message too big: more than message_size_limit "
				      "(%llu bytes)\n", (unsigned long long)c->message_size_limit);
		else
			fprintf(errf, "sendmail: %s\n", e.msg);
		st = big ? EX_DATAERR : EX_IOERR;
		goto done;
	}
	if (o->extract) {
		size_t body_off, hl = sendmail_header_end(buf_ptr(&msg), buf_len(&msg), &body_off);
		bool resent;
		if (sendmail_header_rcpts((const char *)buf_ptr(&msg), hl, domain, &resent,
					  sm_list_add, &rcpts, &e) < 0) {
			fprintf(errf, "sendmail: %s\n", e.msg);
			st = EX_DATAERR;
			goto done;
		}
	}
	if (rcpts.n == 0) {
		fprintf(errf, "sendmail: no recipients%s\n",
			o->extract ? " (none in the message header either)" : "");
		st = EX_USAGE;
		goto done;
	}
	if (rcpts.n > c->recipients_max) {
		fprintf(errf, "sendmail: %zu recipients, more than recipients_max (%u)\n", rcpts.n,
			c->recipients_max);
		st = EX_DATAERR;
		goto done;
	}
	if (sendmail_prepare(buf_ptr(&msg), buf_len(&msg), buf_cstr(&name), buf_cstr(&from_addr),
			     &data) < 0) {
		fprintf(errf, "sendmail: message too big: more than message_size_limit "
			      "(%llu bytes)\n", (unsigned long long)c->message_size_limit);
		st = EX_DATAERR;
		goto done;
	}

	struct sm_conn k = { .fd = -1 };
	if (sm_connect(path, &k.fd, &e) < 0) {
		fprintf(errf, "sendmail: cannot reach the sluice daemon at %s: %s\n", path, e.msg);
		st = EX_TEMPFAIL;
		goto done;
	}
	buf_init(&k.in, SM_REPLY_LINE_MAX);
	struct sm_reply rp;
	buf_init(&rp.text, SM_REPLY_LINE_MAX * SM_REPLY_LINES_MAX);
	struct sm_env env = { .sender = sender, .rcpts = &rcpts, .data = &data, .o = o };
	st = sm_transaction(&k, &env, errf, &rp, &e);
	if (st < 0) {
		fprintf(errf, "sendmail: lost the sluice daemon at %s: %s\n", path, e.msg);
		st = EX_TEMPFAIL;
	}
	buf_free(&rp.text);
	buf_free(&k.in);
	close(k.fd);
done:
	sm_list_free(&rcpts);
	sm_list_free(&snd);
	buf_free(&from_addr);
	buf_free(&name);
	buf_free(&msg);
	buf_free(&data);
	return st;
}

int sendmail_run(int argc, char **argv, FILE *in, FILE *errf)
{
	struct sm_opts o = { .dot_ends = true };
	char *notify = NULL;
	int st = sm_parse_args(argc, argv, &o, &notify, errf);
	if (st == 0 && !o.extract && o.n_rcpts == 0) {
		fprintf(errf, "sendmail: no recipients\n");
		st = EX_USAGE;
	}
	struct conf *c = NULL;
	if (st == 0)
		st = sm_load_conf(o.conf_path, errf, &c);
	if (st == 0)
		st = sm_run_conf(&o, c, in, errf);
	conf_free(c);
	free(notify);
	fflush(errf);
	return st;
}

int sendmail_main(int argc, char **argv)
{
	return sendmail_run(argc, argv, stdin, stderr);
}
