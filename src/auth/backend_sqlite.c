/*
 * SQLite backend.  The database is opened read-only: the auth process
 * never writes credentials; administrators (or a command) do, and SQLite's
 * locking lets them do so while the server runs.  Schema:
 *
 *   users(name TEXT PRIMARY KEY COLLATE NOCASE, password TEXT NOT NULL)
 *       password is "{SCHEME}hash", as in a passwd-file
 *   aliases(address TEXT NOT NULL COLLATE NOCASE, target TEXT NOT NULL)
 *       one row per target; address is a full address or a local part
 *       valid in every local domain
 *   senders(login TEXT NOT NULL COLLATE NOCASE, pattern TEXT NOT NULL)
 *       extra envelope senders a login may use: an address or "*@domain"
 *
 * A missing, unreadable or corrupt database makes lookups unavailable
 * (tempfail) with a log line; the handle is dropped and opened again on
 * the next lookup, and also when the file is replaced (new inode), so
 * that a database rebuilt and renamed into place is picked up.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "backend.h"

static const char sq_schema[] =
	"CREATE TABLE IF NOT EXISTS users (\n"
	"  name TEXT PRIMARY KEY COLLATE NOCASE,\n"
	"  password TEXT NOT NULL\n"
	");\n"
	"CREATE TABLE IF NOT EXISTS aliases (\n"
	"  address TEXT NOT NULL COLLATE NOCASE,\n"
	"  target TEXT NOT NULL\n"
	");\n"
	"CREATE INDEX IF NOT EXISTS aliases_address ON aliases(address);\n"
	"CREATE TABLE IF NOT EXISTS senders (\n"
	"  login TEXT NOT NULL COLLATE NOCASE,\n"
	"  pattern TEXT NOT NULL\n"
	");\n"
	"CREATE INDEX IF NOT EXISTS senders_login ON senders(login);\n";

const char *auth_sqlite_schema(void)
{
	return sq_schema;
}

enum { SQ_USER, SQ_ALIASES, SQ_SENDERS, SQ_N };

/* Logins and addresses match whatever their case, as in a passwd-file:
 * domains are case-insensitive (RFC 5321 2.4), and a database made with
 * columns of the default (binary) collation must not bounce
 * <alice@Example.COM>.  With the documented NOCASE columns the index is
 * still used. */
static const char *const sq_sql[SQ_N] = {
	"SELECT name, password FROM users WHERE name = ?1 COLLATE NOCASE",
	"SELECT target FROM aliases WHERE address = ?1 COLLATE NOCASE",
	"SELECT pattern FROM senders WHERE login = ?1 COLLATE NOCASE",
};

struct sq_backend {
	struct auth_backend b;
	char *path;
	sqlite3 *db;
	sqlite3_stmt *st[SQ_N];
	dev_t dev;
	ino_t ino;
	bool failing; /* logged once until it works again */
};

static void sq_close(struct sq_backend *s)
{
	for (int i = 0; i < SQ_N; i++) {
		sqlite3_finalize(s->st[i]);
		s->st[i] = NULL;
	}
	if (s->db)
		sqlite3_close_v2(s->db);
	s->db = NULL;
}

static int sq_fail(struct sq_backend *s, const char *what, struct err *e)
{
	const char *msg = s->db ? sqlite3_errmsg(s->db) : "cannot allocate a handle";
	err_set(e, "sqlite %s: %s: %s", s->path, what, msg);
	if (!s->failing)
		log_event(LOG_LVL_ERR, "auth_sqlite_error", "file=%s what=%s reason=\"%s\"", s->path,
			  what, msg);
	s->failing = true;
	sq_close(s);
	return -1;
}

static int sq_open(struct sq_backend *s, struct err *e)
{
	struct stat st;
	if (stat(s->path, &st) < 0) {
		err_set(e, "sqlite %s: %s", s->path, strerror(errno));
		if (!s->failing)
			log_event(LOG_LVL_ERR, "auth_sqlite_error", "file=%s reason=\"%s\"", s->path,
				  strerror(errno));
		s->failing = true;
		sq_close(s);
		return -1;
	}
	if (s->db && st.st_dev == s->dev && st.st_ino == s->ino)
		return 0;
	sq_close(s);
	/* NOMUTEX: one thread; no URI, so the path is taken literally. */
	if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		return sq_fail(s, "open", e);
	sqlite3_busy_timeout(s->db, 1000);
	for (int i = 0; i < SQ_N; i++)
		if (sqlite3_prepare_v2(s->db, sq_sql[i], -1, &s->st[i], NULL) != SQLITE_OK)
			return sq_fail(s, "prepare", e);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (s->failing)
		log_event(LOG_LVL_INFO, "auth_sqlite_ok", "file=%s", s->path);
	s->failing = false;
	return 0;
}

static enum auth_lookup sq_lookup(struct auth_backend *b, const char *user, struct buf *stored,
				  struct buf *canon, struct err *e)
{
	struct sq_backend *s = (struct sq_backend *)b;
	if (sq_open(s, e) < 0)
		return AUTH_LOOKUP_UNAVAILABLE;
	size_t ul = strlen(user);
	if (ul == 0 || ul > AUTH_NAME_MAX)
		return AUTH_LOOKUP_NOTFOUND;
	sqlite3_stmt *st = s->st[SQ_USER];
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, user, (int)ul, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	enum auth_lookup r = AUTH_LOOKUP_NOTFOUND;
	if (rc == SQLITE_ROW) {
		const unsigned char *name = sqlite3_column_text(st, 0);
		const unsigned char *pw = sqlite3_column_text(st, 1);
		int pl = sqlite3_column_bytes(st, 1);
		if (!name || !pw || pl <= 0 || (size_t)pl > AUTH_STORED_MAX ||
		    memchr(pw, '\0', (size_t)pl)) {
			err_set(e, "sqlite %s: unusable password for a user", s->path);
			r = AUTH_LOOKUP_NOTFOUND;
		} else if ((stored && buf_append(stored, pw, (size_t)pl) < 0) ||
			   (canon && buf_puts(canon, (const char *)name) < 0)) {
			err_set(e, "sqlite %s: entry too long", s->path);
			r = AUTH_LOOKUP_UNAVAILABLE;
		} else {
			if (stored)
				buf_cstr(stored);
			r = AUTH_LOOKUP_FOUND;
		}
	} else if (rc != SQLITE_DONE) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		sq_fail(s, "query users", e);
		return AUTH_LOOKUP_UNAVAILABLE;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

/* Runs a one-column query; FOUND even with no rows (the store answered). */
static enum auth_lookup sq_each(struct sq_backend *s, int which, const char *key,
				auth_value_fn fn, void *arg, struct err *e)
{
	if (sq_open(s, e) < 0)
		return AUTH_LOOKUP_UNAVAILABLE;
	size_t kl = strlen(key);
	if (kl == 0 || kl > AUTH_NAME_MAX)
		return AUTH_LOOKUP_FOUND;
	sqlite3_stmt *st = s->st[which];
	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, key, (int)kl, SQLITE_STATIC);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);
		int vl = sqlite3_column_bytes(st, 0);
		if (!v || vl <= 0 || (size_t)vl > AUTH_NAME_MAX || memchr(v, '\0', (size_t)vl))
			continue;
		if (fn((const char *)v, arg) < 0) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE) {
		sq_fail(s, which == SQ_ALIASES ? "query aliases" : "query senders", e);
		return AUTH_LOOKUP_UNAVAILABLE;
	}
	return AUTH_LOOKUP_FOUND;
}

static enum auth_lookup sq_aliases(struct auth_backend *b, const char *address, auth_value_fn fn,
				   void *arg, struct err *e)
{
	return sq_each((struct sq_backend *)b, SQ_ALIASES, address, fn, arg, e);
}

static enum auth_lookup sq_senders(struct auth_backend *b, const char *login, auth_value_fn fn,
				   void *arg, struct err *e)
{
	return sq_each((struct sq_backend *)b, SQ_SENDERS, login, fn, arg, e);
}

static void sq_free(struct auth_backend *b)
{
	struct sq_backend *s = (struct sq_backend *)b;
	sq_close(s);
	free(s->path);
	free(s);
}

struct auth_backend *auth_backend_sqlite_new(const char *path)
{
	struct sq_backend *s = xcalloc(1, sizeof(*s));
	s->b.name = "sqlite";
	s->b.can_list_users = true;
	s->b.lookup = sq_lookup;
	s->b.aliases = sq_aliases;
	s->b.senders = sq_senders;
	s->b.free = sq_free;
	s->path = str_dup(path);
	return &s->b;
}
