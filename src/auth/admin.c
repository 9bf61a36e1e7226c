/*
 * Writing users: the command an administrator runs to add a user or change
 * a password, in the passwd-file (rewritten atomically, keeping its owner
 * and mode) or in the SQLite store.  Runs in the command-line process, never
 * in the daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../conf/conf.h"
#include "auth.h"
#include "backend.h"

/* The first field of a passwd-file line equals name (case-insensitively). */
static bool line_is_user(const char *line, size_t n, const char *name)
{
	const char *colon = memchr(line, ':', n);
	if (!colon)
		return false;
	return str_eq_nocase(line, (size_t)(colon - line), name);
}

/* A new file belongs to root and to the group of user, which the auth
 * process runs as and must read it with: 0640 (readable by that user and
 * nobody else).  -1 group when that cannot be known (not root, no such
 * user): the file is then the caller's. */
static gid_t new_file_group(const char *user)
{
	if (geteuid() != 0 || !user || !*user)
		return (gid_t)-1;
	struct passwd *pw = getpwnam(user);
	return pw ? pw->pw_gid : (gid_t)-1;
}

static int set_passwd_file(const char *path, const char *name, const char *stored,
			   const char *user, struct err *e)
{
	struct buf old, out, tmp;
	buf_init(&old, 64u << 20);
	buf_init(&out, (64u << 20) + 4096);
	buf_init(&tmp, 8192);
	struct stat st;
	bool exists = stat(path, &st) == 0;
	int rc = -1;
	if (exists && fs_read_file(path, &old, e) < 0)
		goto done;
	bool replaced = false;
	const char *p = (const char *)buf_ptr(&old);
	size_t left = buf_len(&old);
	while (left > 0) {
		const char *nl = memchr(p, '\n', left);
		size_t len = nl ? (size_t)(nl - p) : left;
		if (!replaced && line_is_user(p, len, name)) {
			/* Keep the fields after the password (uid, gid, home, extra). */
			const char *c1 = memchr(p, ':', len);
			const char *c2 = memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - p));
			buf_printf(&out, "%s:%s", name, stored);
			if (c2)
				buf_append(&out, c2, len - (size_t)(c2 - p));
			buf_puts(&out, "\n");
			replaced = true;
		} else {
			buf_append(&out, p, len);
			buf_puts(&out, "\n");
		}
		p += nl ? len + 1 : len;
		left -= nl ? len + 1 : len;
	}
	if (!replaced && buf_printf(&out, "%s:%s\n", name, stored) < 0) {
		err_set(e, "%s: file too large", path);
		goto done;
	}
	buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(buf_cstr(&tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		      exists ? st.st_mode & 07777 : 0640);
	if (fd < 0) {
		err_set(e, "%s: %s", buf_cstr(&tmp), strerror(errno));
		goto done;
	}
	if (exists && (fchown(fd, st.st_uid, st.st_gid) < 0 || fchmod(fd, st.st_mode & 07777) < 0)) {
		err_set(e, "%s: cannot keep owner and mode: %s", path, strerror(errno));
		close(fd);
		unlink(buf_cstr(&tmp));
		goto done;
	}
	gid_t grp = exists ? (gid_t)-1 : new_file_group(user);
	if (grp != (gid_t)-1 && (fchown(fd, 0, grp) < 0 || fchmod(fd, 0640) < 0)) {
		err_set(e, "%s: cannot give it to the group of user '%s': %s", path, user,
			strerror(errno));
		close(fd);
		unlink(buf_cstr(&tmp));
		goto done;
	}
	if (fs_write_all(fd, buf_ptr(&out), buf_len(&out)) < 0 || fsync(fd) < 0) {
		err_set(e, "%s: %s", buf_cstr(&tmp), strerror(errno));
		close(fd);
		unlink(buf_cstr(&tmp));
		goto done;
	}
	close(fd);
	if (rename(buf_cstr(&tmp), path) < 0) {
		err_set(e, "%s: %s", path, strerror(errno));
		unlink(buf_cstr(&tmp));
		goto done;
	}
	rc = 0;
done:
	buf_free(&old);
	buf_free(&out);
	buf_free(&tmp);
	return rc;
}

static int set_sqlite(const char *path, const char *name, const char *stored, struct err *e)
{
	sqlite3 *db = NULL;
	int rc = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		err_set(e, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
		goto done;
	}
	sqlite3_busy_timeout(db, 5000);
	char *msg = NULL;
	if (sqlite3_exec(db, auth_sqlite_schema(), NULL, NULL, &msg) != SQLITE_OK) {
		err_set(e, "%s: %s", path, msg ? msg : "cannot create tables");
		sqlite3_free(msg);
		goto done;
	}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO users(name, password) VALUES(?1, ?2) "
			       "ON CONFLICT(name) DO UPDATE SET password = excluded.password",
			       -1, &st, NULL) != SQLITE_OK) {
		err_set(e, "%s: %s", path, sqlite3_errmsg(db));
		goto done;
	}
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, stored, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		err_set(e, "%s: %s", path, sqlite3_errmsg(db));
	else
		rc = 0;
	sqlite3_finalize(st);
done:
	sqlite3_close(db);
	return rc;
}

int auth_admin_set_user(const struct conf *c, const char *name, const char *stored,
			struct err *e)
{
	size_t n = strlen(name);
	if (n == 0 || n > 320)
		return err_set(e, "user name must be 1 to 320 characters");
	if (name[0] == '#')
		return err_set(e, "user name must not start with '#' (a comment in passwd-file)");
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch <= ' ' || ch == ':' || ch == 0x7f)
			return err_set(e, "user name must not contain spaces, ':' or control "
					  "characters");
	}
	const char *b = c->auth_backend ? c->auth_backend : "none";
	if (strcmp(b, "passwd-file") == 0)
		return set_passwd_file(c->auth_passwd_file, name, stored, c->user, e);
	if (strcmp(b, "sqlite") == 0)
		return set_sqlite(c->auth_sqlite_database, name, stored, e);
	return err_set(e, "auth_backend is %s: users are added with passwd-file or sqlite (for "
			  "dovecot, use doveadm)", b);
}
