/*
 * passwd-file backend, Dovecot's format:
 *   user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra]
 * '#' starts a comment line; blank lines are skipped.  Names may be full
 * addresses or bare local parts and compare case-insensitively.  The file
 * is re-read whenever it changes (one stat per lookup), so that an
 * administrator's edit takes effect without a reload; until it can be
 * read again, lookups are unavailable (tempfail), never "unknown user".
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"

struct pw_entry {
	char *name;
	char *pass;
	size_t line;
};

struct pw_backend {
	struct auth_backend b;
	struct auth_file file;
	size_t max_file;
	struct pw_entry *v; /* sorted by name, case-insensitively */
	size_t n;
};

static void pw_clear(struct pw_backend *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].name);
		if (p->v[i].pass) {
			explicit_bzero(p->v[i].pass, strlen(p->v[i].pass));
			free(p->v[i].pass);
		}
	}
	free(p->v);
	p->v = NULL;
	p->n = 0;
}

static int pw_cmp(const void *a, const void *b)
{
	const struct pw_entry *x = a, *y = b;
	return strcasecmp(x->name, y->name);
}

/* Sorting keeps file order among equal names so that the first wins. */
static int pw_cmp_line(const void *a, const void *b)
{
	const struct pw_entry *x = a, *y = b;
	int c = strcasecmp(x->name, y->name);
	if (c)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

/* Printable ASCII or UTF-8 (RFC 4616 makes the authentication identity
 * UTF-8; -buseradd and the SQLite store take such names too). */
static bool pw_name_ok(const char *s, size_t n)
{
	return n > 0 && n <= AUTH_NAME_MAX && str_utf8_visible(s, n, "");
}

/* Parses the whole file; malformed lines are skipped, each logged once
 * per reload with its line number. */
static void pw_parse(struct pw_backend *p, const char *text, size_t len)
{
	size_t cap = 0, lineno = 0;
	const char *s = text, *end = text + len;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *le = nl ? nl : end;
		lineno++;
		const char *line = s;
		size_t n = (size_t)(le - s);
		s = nl ? nl + 1 : end;
		if (n > 0 && line[n - 1] == '\r')
			n--;
		size_t i = 0;
		while (i < n && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == n || line[i] == '#')
			continue;
		const char *c1 = memchr(line, ':', n);
		const char *why = NULL;
		if (!c1) {
			why = "no ':' after the user name";
		} else if (!pw_name_ok(line, (size_t)(c1 - line))) {
			why = "empty or invalid user name";
		} else {
			const char *ps = c1 + 1;
			const char *c2 = memchr(ps, ':', (size_t)(line + n - ps));
			size_t pl = (size_t)((c2 ? c2 : line + n) - ps);
			if (pl == 0)
				why = "empty password field";
			else if (pl > AUTH_STORED_MAX)
				why = "password field too long";
			else if (memchr(ps, '\0', pl))
				why = "NUL byte in password field";
			if (!why) {
				struct pw_entry key = { .name = str_ndup(line, (size_t)(c1 - line)) };
				if (p->n == cap) {
					cap = cap ? cap * 2 : 64;
					p->v = xrealloc(p->v, cap * sizeof(*p->v));
				}
				key.pass = str_ndup(ps, pl);
				key.line = lineno;
				p->v[p->n++] = key;
				continue;
			}
		}
		log_event(LOG_LVL_WARN, "auth_file_error", "file=%s:%zu reason=\"%s\"", p->file.path,
			  lineno, why);
	}
	if (p->n == 0)
		return;
	qsort(p->v, p->n, sizeof(*p->v), pw_cmp_line);
	/* The first line for a name wins, as in Dovecot. */
	size_t w = 1;
	for (size_t r = 1; r < p->n; r++) {
		if (strcasecmp(p->v[r].name, p->v[w - 1].name) == 0) {
			log_event(LOG_LVL_WARN, "auth_file_error",
				  "file=%s:%zu reason=\"duplicate user name ignored\"",
				  p->file.path, p->v[r].line);
			free(p->v[r].name);
			explicit_bzero(p->v[r].pass, strlen(p->v[r].pass));
			free(p->v[r].pass);
			continue;
		}
		p->v[w++] = p->v[r];
	}
	p->n = w;
}

static int pw_refresh(struct pw_backend *p, struct err *e)
{
	struct buf text;
	buf_init(&text, p->max_file);
	int r = auth_file_refresh(&p->file, p->max_file, &text, e);
	if (r == 1) {
		pw_clear(p);
		pw_parse(p, (const char *)buf_ptr(&text), buf_len(&text));
		log_event(LOG_LVL_INFO, "auth_file_loaded", "file=%s users=%zu", p->file.path, p->n);
	}
	if (buf_len(&text))
		explicit_bzero(text.data, text.cap);
	buf_free(&text);
	if (r < 0) {
		/* Forget the old content: a file that went away is not a
		 * file whose users still exist. */
		pw_clear(p);
		return -1;
	}
	return 0;
}

static enum auth_lookup pw_lookup(struct auth_backend *b, const char *user, struct buf *stored,
				  struct buf *canon, struct err *e)
{
	struct pw_backend *p = (struct pw_backend *)b;
	if (pw_refresh(p, e) < 0)
		return AUTH_LOOKUP_UNAVAILABLE;
	if (!pw_name_ok(user, strlen(user)))
		return AUTH_LOOKUP_NOTFOUND;
	struct pw_entry key = { .name = (char *)user };
	const struct pw_entry *f = bsearch(&key, p->v, p->n, sizeof(*p->v), pw_cmp);
	if (!f)
		return AUTH_LOOKUP_NOTFOUND;
	if ((stored && buf_puts(stored, f->pass) < 0) || (canon && buf_puts(canon, f->name) < 0)) {
		err_set(e, "%s: entry too long", p->file.path);
		return AUTH_LOOKUP_UNAVAILABLE;
	}
	return AUTH_LOOKUP_FOUND;
}

static void pw_free(struct auth_backend *b)
{
	struct pw_backend *p = (struct pw_backend *)b;
	pw_clear(p);
	free((char *)p->file.path);
	free(p);
}

struct auth_backend *auth_backend_passwd_new(const char *path, size_t max_file)
{
	struct pw_backend *p = xcalloc(1, sizeof(*p));
	p->b.name = "passwd-file";
	p->b.can_list_users = true;
	p->b.lookup = pw_lookup;
	p->b.free = pw_free;
	p->file.path = str_dup(path);
	p->max_file = max_file;
	return &p->b;
}
