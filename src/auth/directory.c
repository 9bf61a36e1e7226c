/*
 * The directory: which recipients are local, and which sender addresses
 * an authenticated user may use.  Built from three optional files, each
 * re-read when it changes, and from the credential backend:
 *
 *   aliases_file             /etc/aliases style:  local: target, target
 *                            (keys are local parts valid in every local
 *                            domain; lines starting with white space
 *                            continue the previous one)
 *   virtual_alias_file       address target, target  (or "address: ...");
 *                            "@domain target" is the catch-all of domain
 *   submission_senders_file  login: pattern, pattern  (an address or
 *                            "*@domain")
 *
 * '#' starts a comment line in all three.  Targets and patterns are
 * separated by commas and/or white space.  Comparisons are
 * case-insensitive throughout (local parts included: a mailbox that
 * differs only in case is the same mailbox here).
 *
 * Aliases are followed one level only: an alias is local because it
 * exists, whatever its targets; delivery resolves chains later.  A
 * catch-all makes every address of its domain local but grants no sender
 * address to its target (it would let one user send as every other).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../conf/conf.h"
#include "backend.h"

/* ---- files re-read when they change ---------------------------------- */

int auth_file_refresh(struct auth_file *f, size_t max, struct buf *out, struct err *e)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return err_set(e, "%s: %s", f->path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		err_set(e, "%s: %s", f->path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(e, "%s: not a regular file", f->path);
	}
	int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if (f->loaded && f->dev == st.st_dev && f->ino == st.st_ino && f->size == st.st_size &&
	    f->mtime_ns == mt) {
		close(fd);
		return 0;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		f->loaded = false;
		return err_set(e, "%s: file larger than %zu bytes", f->path, max);
	}
	buf_reset(out);
	for (;;) {
		uint8_t *w = buf_reserve(out, 8192);
		if (!w) {
			close(fd);
			f->loaded = false;
			return err_set(e, "%s: file larger than %zu bytes", f->path, max);
		}
		ssize_t r = read(fd, w, 8192);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err_set(e, "%s: %s", f->path, strerror(errno));
			close(fd);
			f->loaded = false;
			return -1;
		}
		if (r == 0)
			break;
		buf_commit(out, (size_t)r);
	}
	close(fd);
	f->loaded = true;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtime_ns = mt;
	return 1;
}

/* ---- key -> values files ---------------------------------------------- */

struct dmap_entry {
	char *key;
	char **vals;
	size_t nvals;
	size_t line;
};

struct dmap {
	struct auth_file file;
	bool used;    /* a path is configured */
	bool failing; /* last refresh failed (logged once per failure) */
	size_t max_file;
	struct dmap_entry *v;
	size_t n;
};

static int dmap_cmp(const void *a, const void *b)
{
	const struct dmap_entry *x = a, *y = b;
	int c = strcasecmp(x->key, y->key);
	if (c)
		return c;
	return x->line < y->line ? -1 : x->line > y->line;
}

static int dmap_key_cmp(const void *k, const void *b)
{
	const struct dmap_entry *y = b;
	return strcasecmp(k, y->key);
}

static void dmap_clear(struct dmap *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].key);
		for (size_t j = 0; j < m->v[i].nvals; j++)
			free(m->v[i].vals[j]);
		free(m->v[i].vals);
	}
	free(m->v);
	m->v = NULL;
	m->n = 0;
}

static bool dmap_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* One logical line (continuations joined with a space). */
static void dmap_add_line(struct dmap *m, size_t *cap, const char *s, size_t n, size_t lineno)
{
	size_t i = 0;
	while (i < n && dmap_space(s[i]))
		i++;
	size_t ks = i;
	while (i < n && !dmap_space(s[i]) && s[i] != ':')
		i++;
	size_t kl = i - ks;
	while (i < n && dmap_space(s[i]))
		i++;
	if (i < n && s[i] == ':')
		i++;
	struct dmap_entry ent = { .line = lineno };
	size_t vcap = 0;
	while (i < n) {
		while (i < n && (dmap_space(s[i]) || s[i] == ','))
			i++;
		size_t vs = i;
		while (i < n && !dmap_space(s[i]) && s[i] != ',')
			i++;
		if (i > vs && i - vs <= AUTH_NAME_MAX) {
			if (ent.nvals == vcap) {
				vcap = vcap ? vcap * 2 : 4;
				ent.vals = xrealloc(ent.vals, vcap * sizeof(*ent.vals));
			}
			ent.vals[ent.nvals++] = str_ndup(s + vs, i - vs);
		}
	}
	const char *why = NULL;
	if (kl == 0 || kl > AUTH_NAME_MAX)
		why = "empty or overlong key";
	else if (ent.nvals == 0)
		why = "no targets";
	else if (memchr(s + ks, '\0', kl))
		why = "NUL byte in key";
	if (why) {
		log_event(LOG_LVL_WARN, "auth_file_error", "file=%s:%zu reason=\"%s\"", m->file.path,
			  lineno, why);
		for (size_t j = 0; j < ent.nvals; j++)
			free(ent.vals[j]);
		free(ent.vals);
		return;
	}
	ent.key = str_ndup(s + ks, kl);
	if (m->n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		m->v = xrealloc(m->v, *cap * sizeof(*m->v));
	}
	m->v[m->n++] = ent;
}

static void dmap_parse(struct dmap *m, const char *text, size_t len)
{
	struct buf logical;
	buf_init(&logical, len + 1);
	size_t cap = 0, lineno = 0, start_line = 0;
	bool have = false;
	const char *s = text, *end = text + len;
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *le = nl ? nl : end;
		const char *line = s;
		size_t n = (size_t)(le - s);
		s = nl ? nl + 1 : end;
		lineno++;
		size_t i = 0;
		while (i < n && dmap_space(line[i]))
			i++;
		if (i < n && line[i] == '#')
			continue;
		if (i == n) {
			/* A blank line ends a logical line. */
			if (have)
				dmap_add_line(m, &cap, (const char *)buf_ptr(&logical),
					      buf_len(&logical), start_line);
			have = false;
			continue;
		}
		if (i > 0) {
			if (!have) {
				log_event(LOG_LVL_WARN, "auth_file_error",
					  "file=%s:%zu reason=\"continuation without a first line\"",
					  m->file.path, lineno);
				continue;
			}
			buf_append(&logical, " ", 1);
			buf_append(&logical, line + i, n - i);
			continue;
		}
		if (have)
			dmap_add_line(m, &cap, (const char *)buf_ptr(&logical), buf_len(&logical),
				      start_line);
		buf_reset(&logical);
		buf_append(&logical, line, n);
		have = true;
		start_line = lineno;
	}
	if (have)
		dmap_add_line(m, &cap, (const char *)buf_ptr(&logical), buf_len(&logical), start_line);
	buf_free(&logical);
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), dmap_cmp);
}

/* 0 ready (possibly empty), -1 unavailable. */
static int dmap_refresh(struct dmap *m, struct err *e)
{
	if (!m->used)
		return 0;
	struct buf text;
	buf_init(&text, m->max_file);
	struct err e2;
	int r = auth_file_refresh(&m->file, m->max_file, &text, &e2);
	if (r == 1) {
		dmap_clear(m);
		dmap_parse(m, (const char *)buf_ptr(&text), buf_len(&text));
		m->failing = false;
		log_event(LOG_LVL_INFO, "auth_file_loaded", "file=%s entries=%zu", m->file.path,
			  m->n);
	}
	buf_free(&text);
	if (r < 0) {
		if (!m->failing)
			log_event(LOG_LVL_ERR, "auth_file_error", "reason=\"%s\"", e2.msg);
		m->failing = true;
		dmap_clear(m);
		return err_set(e, "%s", e2.msg);
	}
	return 0;
}

/* First entry for key, or NULL (entries for one key are adjacent; the
 * values of all lines for the key are consulted by dmap_each). */
static const struct dmap_entry *dmap_find(const struct dmap *m, const char *key, size_t *count)
{
	*count = 0;
	if (m->n == 0)
		return NULL;
	const struct dmap_entry *f = bsearch(key, m->v, m->n, sizeof(*m->v), dmap_key_cmp);
	if (!f)
		return NULL;
	while (f > m->v && strcasecmp(f[-1].key, key) == 0)
		f--;
	const struct dmap_entry *l = f;
	while (l < m->v + m->n && strcasecmp(l->key, key) == 0)
		l++;
	*count = (size_t)(l - f);
	return f;
}

static void dmap_init(struct dmap *m, const char *path, size_t max_file)
{
	memset(m, 0, sizeof(*m));
	m->used = path && *path;
	m->file.path = m->used ? path : "";
	m->max_file = max_file;
}

/* ---- the directory ----------------------------------------------------- */

struct auth_dir {
	const struct conf *c;
	struct auth_backend *b;
	struct dmap aliases, virt, senders;
};

struct auth_dir *auth_dir_new(const struct conf *c, struct auth_backend *b, size_t max_file)
{
	struct auth_dir *d = xcalloc(1, sizeof(*d));
	d->c = c;
	d->b = b;
	dmap_init(&d->aliases, c->aliases_file, max_file);
	dmap_init(&d->virt, c->virtual_alias_file, max_file);
	dmap_init(&d->senders, c->submission_senders_file, max_file);
	return d;
}

void auth_dir_free(struct auth_dir *d)
{
	if (!d)
		return;
	dmap_clear(&d->aliases);
	dmap_clear(&d->virt);
	dmap_clear(&d->senders);
	free(d);
}

bool auth_dir_is_local_domain(const struct auth_dir *d, const char *domain, size_t n)
{
	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (n == 0)
		return false;
	for (size_t i = 0; i < d->c->n_local_domains; i++) {
		const char *ld = d->c->local_domains[i];
		if (strcmp(ld, "@") == 0)
			ld = d->c->primary_hostname ? d->c->primary_hostname : "";
		if (str_eq_nocase(domain, n, ld))
			return true;
	}
	return false;
}

/* An address split at its last '@' (local parts may be quoted and hold
 * one; domains cannot). */
struct dir_addr {
	char *local; /* owned */
	const char *domain; /* NULL for a bare local part */
	size_t domain_len;
	bool local_domain;
};

static void dir_addr_split(const struct auth_dir *d, const char *a, struct dir_addr *out)
{
	const char *at = strrchr(a, '@');
	if (!at) {
		out->local = str_dup(a);
		out->domain = NULL;
		out->domain_len = 0;
		out->local_domain = false;
		return;
	}
	out->local = str_ndup(a, (size_t)(at - a));
	out->domain = at + 1;
	out->domain_len = strlen(at + 1);
	out->local_domain = auth_dir_is_local_domain(d, out->domain, out->domain_len);
}

enum auth_lookup auth_dir_user(struct auth_dir *d, const char *user, struct buf *stored,
			       struct buf *canon, struct err *e)
{
	if (!d->b || !d->b->lookup) {
		err_set(e, "the credential backend has no user lookup");
		return AUTH_LOOKUP_UNAVAILABLE;
	}
	enum auth_lookup r = d->b->lookup(d->b, user, stored, canon, e);
	if (r != AUTH_LOOKUP_NOTFOUND)
		return r;
	struct dir_addr a;
	dir_addr_split(d, user, &a);
	if (a.local_domain && a.local[0])
		r = d->b->lookup(d->b, a.local, stored, canon, e);
	free(a.local);
	return r;
}

struct dir_found {
	bool found;
};

static int dir_found_fn(const char *v, void *arg)
{
	((struct dir_found *)arg)->found = true;
	return -1;
}

enum auth_lookup auth_dir_rcpt(struct auth_dir *d, const char *address, struct err *e)
{
	size_t alen = strlen(address);
	if (alen == 0 || alen > AUTH_NAME_MAX)
		return AUTH_LOOKUP_NOTFOUND;
	if (str_eq_nocase(address, alen, "postmaster"))
		return AUTH_LOOKUP_FOUND;
	struct dir_addr a;
	dir_addr_split(d, address, &a);
	enum auth_lookup res = AUTH_LOOKUP_NOTFOUND;
	bool unavailable = false;
	size_t cnt;
	if (a.domain && !a.local_domain)
		goto out;
	if (a.local[0] == '\0')
		goto out;
	if (str_eq_nocase(a.local, strlen(a.local), "postmaster")) {
		res = AUTH_LOOKUP_FOUND;
		goto out;
	}
	/* Virtual aliases: the full address, then the domain's catch-all. */
	if (dmap_refresh(&d->virt, e) < 0) {
		unavailable = true;
	} else if (a.domain) {
		if (dmap_find(&d->virt, address, &cnt)) {
			res = AUTH_LOOKUP_FOUND;
			goto out;
		}
	}
	if (dmap_refresh(&d->aliases, e) < 0) {
		unavailable = true;
	} else if (dmap_find(&d->aliases, a.local, &cnt) || dmap_find(&d->aliases, address, &cnt)) {
		res = AUTH_LOOKUP_FOUND;
		goto out;
	}
	if (d->b && d->b->aliases) {
		struct dir_found f = { false };
		enum auth_lookup r = d->b->aliases(d->b, address, dir_found_fn, &f, e);
		if (r == AUTH_LOOKUP_FOUND && !f.found && a.domain)
			r = d->b->aliases(d->b, a.local, dir_found_fn, &f, e);
		if (r == AUTH_LOOKUP_UNAVAILABLE)
			unavailable = true;
		else if (f.found) {
			res = AUTH_LOOKUP_FOUND;
			goto out;
		}
	}
	if (!d->b || !d->b->can_list_users || !d->b->lookup) {
		/* No store can say who exists: every address of a local domain is
		 * accepted and the delivery agent decides. */
		res = AUTH_LOOKUP_FOUND;
		goto out;
	} else {
		enum auth_lookup r = auth_dir_user(d, address, NULL, NULL, e);
		if (r == AUTH_LOOKUP_FOUND) {
			res = r;
			goto out;
		}
		if (r == AUTH_LOOKUP_UNAVAILABLE)
			unavailable = true;
	}
	if (a.domain && !d->virt.failing && d->virt.used) {
		struct buf k;
		buf_init(&k, AUTH_NAME_MAX + 2);
		buf_puts(&k, "@");
		buf_append(&k, a.domain, a.domain_len);
		if (dmap_find(&d->virt, buf_cstr(&k), &cnt))
			res = AUTH_LOOKUP_FOUND;
		buf_free(&k);
		if (res == AUTH_LOOKUP_FOUND)
			goto out;
	}
	if (a.domain && d->b && d->b->aliases) {
		/* A store's aliases may hold a catch-all too, as "@domain". */
		struct buf k;
		struct dir_found f = { false };
		buf_init(&k, AUTH_NAME_MAX + 2);
		buf_puts(&k, "@");
		buf_append(&k, a.domain, a.domain_len);
		enum auth_lookup r = d->b->aliases(d->b, buf_cstr(&k), dir_found_fn, &f, e);
		buf_free(&k);
		if (r == AUTH_LOOKUP_UNAVAILABLE)
			unavailable = true;
		else if (f.found) {
			res = AUTH_LOOKUP_FOUND;
			goto out;
		}
	}
	if (unavailable)
		res = AUTH_LOOKUP_UNAVAILABLE;
out:
	free(a.local);
	return res;
}

/* Whether an alias target designates the login. */
static bool dir_target_is_login(const struct auth_dir *d, const char *t, const char *login)
{
	size_t tl = strlen(t);
	if (tl >= 2 && t[0] == '<' && t[tl - 1] == '>') {
		t++;
		tl -= 2;
	}
	if (str_eq_nocase(t, tl, login))
		return true;
	const char *tat = memrchr(t, '@', tl);
	const char *lat = strrchr(login, '@');
	if (tat && !lat) {
		/* target user@localdomain, login bare */
		size_t ll = (size_t)(tat - t);
		return str_eq_nocase(t, ll, login) &&
		       auth_dir_is_local_domain(d, tat + 1, (size_t)(t + tl - tat - 1));
	}
	if (!tat && lat) {
		/* bare target, login user@localdomain */
		size_t ll = (size_t)(lat - login);
		return ll > 0 && tl == ll && strncasecmp(t, login, tl) == 0 &&
		       auth_dir_is_local_domain(d, lat + 1, strlen(lat + 1));
	}
	return false;
}

static bool dir_pattern_match(const char *pat, const char *address, const struct dir_addr *a)
{
	if (pat[0] == '*' && pat[1] == '@')
		return a->domain && str_eq_nocase(a->domain, a->domain_len, pat + 2);
	return str_eq_nocase(address, strlen(address), pat);
}

struct dir_sender_ctx {
	const struct auth_dir *d;
	const char *login;
	const char *address;
	const struct dir_addr *a;
	bool found;
};

static int dir_alias_target_fn(const char *v, void *arg)
{
	struct dir_sender_ctx *x = arg;
	if (dir_target_is_login(x->d, v, x->login)) {
		x->found = true;
		return -1;
	}
	return 0;
}

static int dir_grant_fn(const char *v, void *arg)
{
	struct dir_sender_ctx *x = arg;
	if (dir_pattern_match(v, x->address, x->a)) {
		x->found = true;
		return -1;
	}
	return 0;
}

static bool dmap_any(const struct dmap *m, const char *key, int (*fn)(const char *, void *),
		     void *arg)
{
	size_t cnt;
	const struct dmap_entry *f = dmap_find(m, key, &cnt);
	for (size_t i = 0; i < cnt; i++)
		for (size_t j = 0; j < f[i].nvals; j++)
			if (fn(f[i].vals[j], arg) < 0)
				return true;
	return false;
}

enum auth_lookup auth_dir_sender(struct auth_dir *d, const char *login, const char *address,
				 struct err *e)
{
	size_t alen = strlen(address);
	/* The null reverse-path impersonates nobody. */
	if (alen == 0)
		return AUTH_LOOKUP_FOUND;
	if (alen > AUTH_NAME_MAX || !login[0])
		return AUTH_LOOKUP_NOTFOUND;
	struct dir_addr a;
	dir_addr_split(d, address, &a);
	enum auth_lookup res = AUTH_LOOKUP_NOTFOUND;
	bool unavailable = false;
	struct dir_sender_ctx x = { d, login, address, &a, false };
	if (str_eq_nocase(address, alen, login)) {
		res = AUTH_LOOKUP_FOUND;
		goto out;
	}
	if (!strchr(login, '@') && a.local_domain &&
	    str_eq_nocase(a.local, strlen(a.local), login)) {
		res = AUTH_LOOKUP_FOUND;
		goto out;
	}
	if (a.domain && a.local[0]) {
		if (dmap_refresh(&d->virt, e) < 0)
			unavailable = true;
		else if (dmap_any(&d->virt, address, dir_alias_target_fn, &x))
			goto found;
		if (a.local_domain) {
			if (dmap_refresh(&d->aliases, e) < 0)
				unavailable = true;
			else if (dmap_any(&d->aliases, a.local, dir_alias_target_fn, &x) ||
				 dmap_any(&d->aliases, address, dir_alias_target_fn, &x))
				goto found;
		}
		if (d->b && d->b->aliases) {
			enum auth_lookup r = d->b->aliases(d->b, address, dir_alias_target_fn, &x, e);
			if (r == AUTH_LOOKUP_UNAVAILABLE)
				unavailable = true;
			else if (!x.found && a.local_domain)
				r = d->b->aliases(d->b, a.local, dir_alias_target_fn, &x, e);
			if (r == AUTH_LOOKUP_UNAVAILABLE)
				unavailable = true;
			if (x.found)
				goto found;
		}
	}
	if (dmap_refresh(&d->senders, e) < 0)
		unavailable = true;
	else if (dmap_any(&d->senders, login, dir_grant_fn, &x))
		goto found;
	if (d->b && d->b->senders) {
		enum auth_lookup r = d->b->senders(d->b, login, dir_grant_fn, &x, e);
		if (r == AUTH_LOOKUP_UNAVAILABLE)
			unavailable = true;
		if (x.found)
			goto found;
	}
	if (unavailable)
		res = AUTH_LOOKUP_UNAVAILABLE;
	goto out;
found:
	res = AUTH_LOOKUP_FOUND;
out:
	free(a.local);
	return res;
}

/* ---- backends from the configuration ----------------------------------- */

int auth_backend_from_conf(const struct conf *c, struct auth_backend **out, struct err *e)
{
	*out = NULL;
	const char *kind = c->auth_backend ? c->auth_backend : "none";
	if (strcmp(kind, "none") == 0 || kind[0] == '\0')
		return 0;
	if (strcmp(kind, "passwd-file") == 0) {
		if (!c->auth_passwd_file || !*c->auth_passwd_file)
			return err_set(e, "auth_backend = passwd-file needs auth_passwd_file");
		*out = auth_backend_passwd_new(c->auth_passwd_file, AUTH_FILE_MAX);
		return 0;
	}
	if (strcmp(kind, "sqlite") == 0) {
		if (!c->auth_sqlite_database || !*c->auth_sqlite_database)
			return err_set(e, "auth_backend = sqlite needs auth_sqlite_database");
		*out = auth_backend_sqlite_new(c->auth_sqlite_database);
		return 0;
	}
	if (strcmp(kind, "dovecot") == 0) {
		if (!c->auth_dovecot_socket || !*c->auth_dovecot_socket)
			return err_set(e, "auth_backend = dovecot needs auth_dovecot_socket");
		*out = auth_backend_dovecot_new(c->auth_dovecot_socket, 2000, 10000);
		return 0;
	}
	return err_set(e, "unknown auth_backend %s", kind);
}

void auth_backend_free(struct auth_backend *b)
{
	if (b)
		b->free(b);
}

/* ---- expansion, for -bt --------------------------------------------- */

struct dir_expand_ctx {
	void (*fn)(const char *source, const char *target, void *arg);
	void *arg;
	const char *source;
	size_t n;
};

static int dir_expand_fn(const char *v, void *arg)
{
	struct dir_expand_ctx *x = arg;
	x->fn(x->source, v, x->arg);
	x->n++;
	return 0;
}

int auth_dir_expand(struct auth_dir *d, const char *address,
		    void (*fn)(const char *source, const char *target, void *arg), void *arg,
		    struct err *e)
{
	struct dir_addr a;
	dir_addr_split(d, address, &a);
	struct dir_expand_ctx x = { fn, arg, NULL, 0 };
	bool unavailable = false;
	if (dmap_refresh(&d->virt, e) < 0)
		unavailable = true;
	else if (a.domain) {
		x.source = "virtual_alias_file";
		dmap_any(&d->virt, address, dir_expand_fn, &x);
	}
	if (a.local_domain || !a.domain) {
		if (dmap_refresh(&d->aliases, e) < 0) {
			unavailable = true;
		} else {
			x.source = "aliases_file";
			dmap_any(&d->aliases, a.local, dir_expand_fn, &x);
		}
	}
	if (d->b && d->b->aliases) {
		x.source = d->b->name;
		if (d->b->aliases(d->b, address, dir_expand_fn, &x, e) == AUTH_LOOKUP_UNAVAILABLE)
			unavailable = true;
	}
	if (x.n == 0 && a.domain && a.local_domain) {
		/* Only when nothing more specific matched, as at RCPT time. */
		struct buf k;
		buf_init(&k, AUTH_NAME_MAX + 2);
		buf_puts(&k, "@");
		buf_append(&k, a.domain, a.domain_len);
		x.source = "catch-all (virtual_alias_file)";
		if (!d->virt.failing)
			dmap_any(&d->virt, buf_cstr(&k), dir_expand_fn, &x);
		if (x.n == 0 && d->b && d->b->aliases) {
			x.source = "catch-all (store)";
			if (d->b->aliases(d->b, buf_cstr(&k), dir_expand_fn, &x, e) ==
			    AUTH_LOOKUP_UNAVAILABLE)
				unavailable = true;
		}
		buf_free(&k);
	}
	free(a.local);
	if (unavailable)
		return -1;
	return (int)x.n;
}
