/*
 * Unit tests of the auth process side: password schemes, the passwd-file
 * and SQLite backends, the directory (aliases, virtual aliases,
 * catch-alls, sender grants) and the auth process end to end over its
 * socket (results, penalty delay and block, SCRAM fake salts).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include "auth/auth.h"
#include "auth/backend.h"
#include "conf/conf.h"

static char tdir[256];

static void path_in(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tdir, name);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *slurp(const char *path)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	struct err e;
	if (fs_read_file(path, &b, &e) < 0) {
		buf_free(&b);
		return str_dup("");
	}
	char *s = str_dup(buf_cstr(&b));
	buf_free(&b);
	return s;
}

static int setup_dir(void **state)
{
	snprintf(tdir, sizeof(tdir), "/tmp/sluice-test-auth.XXXXXX");
	assert_non_null(mkdtemp(tdir));
	return 0;
}

static int teardown_dir(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- passwords ---------------------------------------------------------- */

/* Made with doveadm pw for the password "correct horse". */
static const char *const known_good[] = {
	"{SHA512-CRYPT}$6$4d0XTFxjWyqL5MPI$KFhDOmcuU1UY6feKmoXVGRXR7EqHLc8S37NwLQWcZAtkt18UMuRzKXTCUNoKCXlw8vz4DJeQC0D43hEqBbCWN.",
	"{SHA256-CRYPT}$5$DXTFcdZ9BdeQGUUx$oRFsjMGvHv9mmX4x73fgs5imubY4Np9L5ox.zAbeJz/",
	"{BLF-CRYPT}$2y$05$n6dCXFpQG7FYxIOWLydQcONHZnY96IGJaeBW3od.Mg8y31XTwt4oi",
	"{SCRAM-SHA-256}4096,RnealJggDbh2/0D70shHlw==,9xpBtx1xXyB65arsM8G9/Xbh8YRy0YV/1UpCho7sRNA=,rDBZXPOCElzaM+gk4ZmyDYq4gGet+HegdUbwdIbnKsQ=",
	/* no scheme = CRYPT; {CRYPT} takes any crypt(3) hash */
	"$6$4d0XTFxjWyqL5MPI$KFhDOmcuU1UY6feKmoXVGRXR7EqHLc8S37NwLQWcZAtkt18UMuRzKXTCUNoKCXlw8vz4DJeQC0D43hEqBbCWN.",
	"{CRYPT}$1$US6Sn/5C$RTELzHL6C3Q90KHy1j78g.",
	"{crypt}$5$DXTFcdZ9BdeQGUUx$oRFsjMGvHv9mmX4x73fgs5imubY4Np9L5ox.zAbeJz/",
};

static void test_password_known(void **state)
{
	for (size_t i = 0; i < sizeof(known_good) / sizeof(known_good[0]); i++) {
		struct err e = { "" };
		const char *pw = "correct horse";
		assert_int_equal(auth_password_check(known_good[i], pw, strlen(pw), &e), 1);
		assert_int_equal(auth_password_check(known_good[i], "correct horsf", 13, &e), 0);
		assert_int_equal(auth_password_check(known_good[i], "correct hors", 12, &e), 0);
		assert_int_equal(auth_password_check(known_good[i], "", 0, &e), 0);
		/* A NUL inside never matches (crypt takes C strings). */
		assert_int_equal(auth_password_check(known_good[i], "correct horse\0x", 15, &e), 0);
	}
}

static void test_password_refused(void **state)
{
	static const char *const bad[] = {
		"{PLAIN}correct horse",
		"{CLEARTEXT}correct horse",
		"{MD5}$1$US6Sn/5C$RTELzHL6C3Q90KHy1j78g.",
		"{MD5-CRYPT}$1$US6Sn/5C$RTELzHL6C3Q90KHy1j78g.",
		"{NOSUCH}abc",
		"{SHA512-CRYPT",
		/* scheme and hash disagree */
		"{SHA512-CRYPT}$5$DXTFcdZ9BdeQGUUx$oRFsjMGvHv9mmX4x73fgs5imubY4Np9L5ox.zAbeJz/",
		"{YESCRYPT}$6$4d0XTFxjWyqL5MPI$KFhDOmcuU1UY6feKmoXVGRXR7EqHLc8S37NwLQWcZAtkt18UMuRzKXTCUNoKCXlw8vz4DJeQC0D43hEqBbCWN.",
		"{CRYPT}",
		"{CRYPT}*",
		"!locked",
		"{SCRAM-SHA-256}not,scram",
		"{CRYPT}$6$bad",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct err e = { "" };
		int r = auth_password_check(bad[i], "correct horse", 13, &e);
		if (r != -1)
			fail_msg("accepted %s", bad[i]);
		assert_true(e.msg[0] != '\0');
	}
	struct err e = { "" };
	assert_int_equal(auth_password_check("{PLAIN}x", "x", 1, &e), -1);
	assert_non_null(strstr(e.msg, "not accepted"));
}

static void test_password_hash_roundtrip(void **state)
{
	static const char *const schemes[] = { "YESCRYPT", "SHA512-CRYPT", "BLF-CRYPT",
					       "SCRAM-SHA-256", "yescrypt", NULL };
	static const char *const prefixes[] = { "{YESCRYPT}$y$", "{SHA512-CRYPT}$6$",
						"{BLF-CRYPT}$2", "{SCRAM-SHA-256}4096,",
						"{YESCRYPT}$y$", "{YESCRYPT}$y$" };
	for (size_t i = 0; i < 6; i++) {
		struct buf h, h2;
		buf_init(&h, 1024);
		buf_init(&h2, 1024);
		struct err e = { "" };
		const char *pw = "pässwörd 1";
		assert_int_equal(auth_password_hash(schemes[i], pw, strlen(pw), &h, &e), 0);
		assert_int_equal(auth_password_hash(schemes[i], pw, strlen(pw), &h2, &e), 0);
		const char *s = buf_cstr(&h);
		assert_true(strncmp(s, prefixes[i], strlen(prefixes[i])) == 0);
		/* salted: two hashes of one password differ */
		assert_string_not_equal(s, buf_cstr(&h2));
		assert_int_equal(auth_password_check(s, pw, strlen(pw), &e), 1);
		assert_int_equal(auth_password_check(s, "pässwörd 2", strlen(pw), &e), 0);
		buf_free(&h);
		buf_free(&h2);
	}
	struct buf h;
	buf_init(&h, 1024);
	struct err e;
	assert_int_equal(auth_password_hash("PLAIN", "x", 1, &h, &e), -1);
	assert_int_equal(auth_password_hash("MD5", "x", 1, &h, &e), -1);
	assert_int_equal(buf_len(&h), 0);
	buf_free(&h);
}

/* ---- passwd-file -------------------------------------------------------- */

static char hash_pw[512];  /* SHA512-CRYPT of "pw" */
static char scram_pw[512]; /* SCRAM-SHA-256 of "pw" */

static void make_hashes(void)
{
	if (hash_pw[0])
		return;
	struct buf h;
	buf_init(&h, 1024);
	struct err e;
	assert_int_equal(auth_password_hash("SHA512-CRYPT", "pw", 2, &h, &e), 0);
	snprintf(hash_pw, sizeof(hash_pw), "%s", buf_cstr(&h));
	buf_reset(&h);
	assert_int_equal(auth_password_hash("SCRAM-SHA-256", "pw", 2, &h, &e), 0);
	snprintf(scram_pw, sizeof(scram_pw), "%s", buf_cstr(&h));
	buf_free(&h);
}

static enum auth_lookup lk(struct auth_backend *b, const char *user, char *canon_out,
			   size_t n)
{
	struct buf stored, canon;
	buf_init(&stored, 8192);
	buf_init(&canon, 1024);
	struct err e = { "" };
	enum auth_lookup r = b->lookup(b, user, &stored, &canon, &e);
	if (canon_out)
		snprintf(canon_out, n, "%s", r == AUTH_LOOKUP_FOUND ? buf_cstr(&canon) : "");
	if (r == AUTH_LOOKUP_FOUND)
		assert_true(buf_len(&stored) > 0);
	if (r == AUTH_LOOKUP_UNAVAILABLE)
		assert_true(e.msg[0] != '\0');
	buf_free(&stored);
	buf_free(&canon);
	return r;
}

static void test_passwd_backend(void **state)
{
	make_hashes();
	char path[512], logp[512], text[4096], canon[256];
	path_in(path, sizeof(path), "passwd");
	path_in(logp, sizeof(logp), "passwd.log");
	struct auth_backend *b = auth_backend_passwd_new(path, AUTH_FILE_MAX);
	/* missing file: unavailable, not "unknown user" */
	assert_int_equal(lk(b, "alice", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);

	snprintf(text, sizeof(text),
		 "# users\n"
		 "\n"
		 "Alice:%s:1000:1000::/home/alice:/bin/sh:\n"
		 "malformed line without colon\n"
		 "bob@Example.org:%s\n"
		 "emptypw:\n"
		 "alice:{PLAIN}second entry loses\n"
		 "  \t\n"
		 "carol:%s::::\r\n",
		 hash_pw, scram_pw, hash_pw);
	write_file(path, text);
	struct err e;
	assert_int_equal(log_to_file(logp, &e), 0);
	assert_int_equal(lk(b, "alice", canon, sizeof(canon)), AUTH_LOOKUP_FOUND);
	assert_string_equal(canon, "Alice");
	assert_int_equal(lk(b, "ALICE", canon, sizeof(canon)), AUTH_LOOKUP_FOUND);
	assert_int_equal(lk(b, "bob@example.ORG", canon, sizeof(canon)), AUTH_LOOKUP_FOUND);
	assert_string_equal(canon, "bob@Example.org");
	assert_int_equal(lk(b, "carol", NULL, 0), AUTH_LOOKUP_FOUND);
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	assert_int_equal(lk(b, "malformed line without colon", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	assert_int_equal(lk(b, "emptypw", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	assert_int_equal(lk(b, "", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	/* the first entry wins, and its hash is the one returned */
	{
		struct buf st;
		buf_init(&st, 8192);
		assert_int_equal(b->lookup(b, "alice", &st, NULL, &e), AUTH_LOOKUP_FOUND);
		assert_string_equal(buf_cstr(&st), hash_pw);
		buf_free(&st);
	}
	/* loaded once: a second lookup does not log the bad lines again */
	assert_int_equal(lk(b, "alice", NULL, 0), AUTH_LOOKUP_FOUND);
	log_to_stderr();
	char *log = slurp(logp);
	char want[600];
	snprintf(want, sizeof(want), "%s:4 ", path);
	assert_non_null(strstr(log, want));
	snprintf(want, sizeof(want), "%s:6 ", path);
	assert_non_null(strstr(log, want));
	snprintf(want, sizeof(want), "%s:7 ", path);
	assert_non_null(strstr(log, want)); /* duplicate */
	char *second = strstr(log, ":4 ");
	assert_null(strstr(second + 1, ":4 "));
	free(log);

	/* the file changes: the new content is used without a restart */
	snprintf(text, sizeof(text), "dave:%s\n", hash_pw);
	write_file(path, text);
	assert_int_equal(lk(b, "dave", NULL, 0), AUTH_LOOKUP_FOUND);
	assert_int_equal(lk(b, "alice", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	/* same size, new content: detected by mtime/inode */
	snprintf(text, sizeof(text), "erin:%s\n", hash_pw);
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	write_file(tmp, text);
	assert_int_equal(rename(tmp, path), 0);
	assert_int_equal(lk(b, "erin", NULL, 0), AUTH_LOOKUP_FOUND);
	assert_int_equal(lk(b, "dave", NULL, 0), AUTH_LOOKUP_NOTFOUND);

	/* the file goes away: unavailable again, old users forgotten */
	unlink(path);
	assert_int_equal(lk(b, "erin", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	/* unreadable (a directory) */
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(lk(b, "erin", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	rmdir(path);
	auth_backend_free(b);
}

/* ---- SQLite ------------------------------------------------------------- */

static void sql_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("sqlite: %s", msg ? msg : "?");
}

static void make_db(const char *path)
{
	make_hashes();
	unlink(path);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sql_exec(db, auth_sqlite_schema());
	char sql[2048];
	snprintf(sql, sizeof(sql),
		 "INSERT INTO users VALUES ('Alice@example.org', '%s');"
		 "INSERT INTO users VALUES ('bob', '%s');"
		 "INSERT INTO aliases VALUES ('sales@example.org', 'alice@example.org');"
		 "INSERT INTO aliases VALUES ('sales@example.org', 'bob');"
		 "INSERT INTO aliases VALUES ('help', 'bob');"
		 "INSERT INTO senders VALUES ('bob', '*@partner.example');"
		 "INSERT INTO senders VALUES ('BOB', 'ceo@example.org');",
		 hash_pw, scram_pw);
	sql_exec(db, sql);
	sqlite3_close(db);
}

static int collect_fn(const char *v, void *arg)
{
	struct buf *b = arg;
	buf_puts(b, v);
	buf_puts(b, ";");
	return 0;
}

static void test_sqlite_backend(void **state)
{
	char path[512], canon[256];
	path_in(path, sizeof(path), "users.db");
	unlink(path);
	struct auth_backend *b = auth_backend_sqlite_new(path);
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	make_db(path);
	assert_int_equal(lk(b, "alice@EXAMPLE.org", canon, sizeof(canon)), AUTH_LOOKUP_FOUND);
	assert_string_equal(canon, "Alice@example.org");
	assert_int_equal(lk(b, "BOB", canon, sizeof(canon)), AUTH_LOOKUP_FOUND);
	assert_string_equal(canon, "bob");
	assert_int_equal(lk(b, "carol", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	assert_int_equal(lk(b, "x' OR '1'='1", NULL, 0), AUTH_LOOKUP_NOTFOUND);
	struct buf v;
	buf_init(&v, 4096);
	struct err e;
	assert_int_equal(b->aliases(b, "SALES@example.org", collect_fn, &v, &e), AUTH_LOOKUP_FOUND);
	assert_string_equal(buf_cstr(&v), "alice@example.org;bob;");
	buf_reset(&v);
	assert_int_equal(b->aliases(b, "nobody@example.org", collect_fn, &v, &e),
			 AUTH_LOOKUP_FOUND);
	assert_int_equal(buf_len(&v), 0);
	assert_int_equal(b->senders(b, "bob", collect_fn, &v, &e), AUTH_LOOKUP_FOUND);
	assert_non_null(strstr(buf_cstr(&v), "*@partner.example;"));
	assert_non_null(strstr(buf_cstr(&v), "ceo@example.org;"));

	/* a database replaced by a corrupt file: unavailable, no crash */
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	char junk[8192];
	memset(junk, 'x', sizeof(junk));
	memcpy(junk, "SQLite format 3", 16);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	fwrite(junk, 1, sizeof(junk), f);
	fclose(f);
	assert_int_equal(rename(tmp, path), 0);
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	assert_int_equal(b->senders(b, "bob", collect_fn, &v, &e), AUTH_LOOKUP_UNAVAILABLE);
	write_file(path, "not a database at all, just text\n");
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	/* repaired: works again */
	make_db(path);
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_FOUND);
	unlink(path);
	assert_int_equal(lk(b, "bob", NULL, 0), AUTH_LOOKUP_UNAVAILABLE);
	buf_free(&v);
	auth_backend_free(b);
}

/* ---- directory ---------------------------------------------------------- */

static char *dom_list[] = { "example.org", "@", "catch.example.org" };

static struct conf *make_conf(const char *aliases, const char *virt, const char *senders)
{
	struct conf *c = xcalloc(1, sizeof(*c));
	c->primary_hostname = "mx.example.net";
	c->local_domains = dom_list;
	c->n_local_domains = 3;
	c->aliases_file = (char *)aliases;
	c->virtual_alias_file = (char *)virt;
	c->submission_senders_file = (char *)senders;
	return c;
}

struct dir_case {
	const char *address;
	enum auth_lookup want;
};

static void check_rcpt(struct auth_dir *d, const struct dir_case *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct err e = { "" };
		enum auth_lookup r = auth_dir_rcpt(d, cs[i].address, &e);
		if (r != cs[i].want)
			fail_msg("rcpt %s: got %d want %d (%s)", cs[i].address, r, cs[i].want, e.msg);
	}
}

struct sender_case {
	const char *login, *address;
	enum auth_lookup want;
};

static void check_sender(struct auth_dir *d, const struct sender_case *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct err e = { "" };
		enum auth_lookup r = auth_dir_sender(d, cs[i].login, cs[i].address, &e);
		if (r != cs[i].want)
			fail_msg("sender %s as %s: got %d want %d (%s)", cs[i].login, cs[i].address, r,
				 cs[i].want, e.msg);
	}
}

static void test_directory_files(void **state)
{
	make_hashes();
	char pw[512], al[512], vi[512], se[512], text[4096];
	path_in(pw, sizeof(pw), "dir.passwd");
	path_in(al, sizeof(al), "aliases");
	path_in(vi, sizeof(vi), "virtual");
	path_in(se, sizeof(se), "senders");
	snprintf(text, sizeof(text), "alice:%s\nbob@example.org:%s\ncarol:%s\n", hash_pw, hash_pw,
		 hash_pw);
	write_file(pw, text);
	write_file(al, "# aliases\n"
		       "root: alice\n"
		       "info: alice,\n"
		       "   bob@example.org\n"
		       "\n"
		       "team: <dave@elsewhere.example>\n"
		       ": broken\n"
		       "nothing:\n");
	write_file(vi, "sales@example.org alice@example.org, carol\n"
		       "Support@Example.org: bob\n"
		       "@catch.example.org carol\n"
		       "press@other.example alice\n");
	write_file(se, "alice: *@lists.example.com, boss@example.org\n"
		       "bob@example.org: noreply@example.org\n");
	struct conf *c = make_conf(al, vi, se);
	struct auth_backend *b = auth_backend_passwd_new(pw, AUTH_FILE_MAX);
	struct auth_dir *d = auth_dir_new(c, b, AUTH_FILE_MAX);

	assert_true(auth_dir_is_local_domain(d, "EXAMPLE.ORG", 11));
	assert_true(auth_dir_is_local_domain(d, "mx.example.net.", 15));
	assert_false(auth_dir_is_local_domain(d, "example.com", 11));

	static const struct dir_case rc[] = {
		{ "alice@example.org", AUTH_LOOKUP_FOUND },     /* bare user, any local domain */
		{ "ALICE@mx.example.net", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", AUTH_LOOKUP_FOUND },       /* full-address user */
		{ "bob@mx.example.net", AUTH_LOOKUP_NOTFOUND }, /* ... only in its domain */
		{ "info@example.org", AUTH_LOOKUP_FOUND },      /* alias */
		{ "Root@mx.example.net", AUTH_LOOKUP_FOUND },
		{ "team@example.org", AUTH_LOOKUP_FOUND },
		{ "nothing@example.org", AUTH_LOOKUP_NOTFOUND }, /* malformed line skipped */
		{ "sales@example.org", AUTH_LOOKUP_FOUND },     /* virtual */
		{ "support@EXAMPLE.org", AUTH_LOOKUP_FOUND },
		{ "sales@mx.example.net", AUTH_LOOKUP_NOTFOUND },
		{ "anything@catch.example.org", AUTH_LOOKUP_FOUND }, /* catch-all */
		{ "postmaster", AUTH_LOOKUP_FOUND },
		{ "PostMaster", AUTH_LOOKUP_FOUND },
		{ "postmaster@example.org", AUTH_LOOKUP_FOUND },
		{ "postmaster@mx.example.net", AUTH_LOOKUP_FOUND },
		{ "postmaster@example.com", AUTH_LOOKUP_NOTFOUND },
		{ "nobody@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "alice@example.com", AUTH_LOOKUP_NOTFOUND },  /* not a local domain */
		{ "press@other.example", AUTH_LOOKUP_NOTFOUND },
		{ "@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "", AUTH_LOOKUP_NOTFOUND },
	};
	check_rcpt(d, rc, sizeof(rc) / sizeof(rc[0]));

	static const struct sender_case sc[] = {
		{ "alice", "alice@example.org", AUTH_LOOKUP_FOUND },
		{ "alice", "Alice@MX.example.net", AUTH_LOOKUP_FOUND },
		{ "alice", "alice@example.com", AUTH_LOOKUP_NOTFOUND },
		{ "alice", "info@example.org", AUTH_LOOKUP_FOUND },   /* alias target */
		{ "alice", "root@example.org", AUTH_LOOKUP_FOUND },
		{ "alice", "sales@example.org", AUTH_LOOKUP_FOUND },  /* virtual target */
		{ "alice", "support@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "alice", "bob@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "alice", "x@lists.example.com", AUTH_LOOKUP_FOUND }, /* grant *@domain */
		{ "alice", "x@sub.lists.example.com", AUTH_LOOKUP_NOTFOUND },
		{ "alice", "boss@example.org", AUTH_LOOKUP_FOUND },   /* grant address */
		{ "alice", "boss2@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "alice", "press@other.example", AUTH_LOOKUP_FOUND }, /* virtual, any domain */
		{ "alice", "", AUTH_LOOKUP_FOUND },                   /* null sender */
		{ "bob@example.org", "bob@example.org", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", "BOB@example.ORG", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", "bob@mx.example.net", AUTH_LOOKUP_NOTFOUND },
		{ "bob@example.org", "info@example.org", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", "support@example.org", AUTH_LOOKUP_FOUND }, /* bare target */
		{ "bob@example.org", "noreply@example.org", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", "x@lists.example.com", AUTH_LOOKUP_NOTFOUND },
		{ "carol", "sales@example.org", AUTH_LOOKUP_FOUND },
		/* a catch-all grants nothing */
		{ "carol", "anyone@catch.example.org", AUTH_LOOKUP_NOTFOUND },
		{ "carol", "carol@catch.example.org", AUTH_LOOKUP_FOUND },
		{ "dave", "team@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "dave@elsewhere.example", "team@example.org", AUTH_LOOKUP_FOUND },
	};
	check_sender(d, sc, sizeof(sc) / sizeof(sc[0]));

	/* edits are picked up */
	write_file(se, "alice: *@lists.example.com, boss@example.org, *@new.example\n");
	static const struct sender_case sc2[] = {
		{ "alice", "x@new.example", AUTH_LOOKUP_FOUND },
		{ "bob@example.org", "noreply@example.org", AUTH_LOOKUP_NOTFOUND },
	};
	check_sender(d, sc2, 2);

	/* a configured file that cannot be read: tempfail unless another
	 * source already says yes */
	unlink(al);
	static const struct dir_case rc2[] = {
		{ "alice@example.org", AUTH_LOOKUP_FOUND },
		{ "sales@example.org", AUTH_LOOKUP_FOUND },
		{ "info@example.org", AUTH_LOOKUP_UNAVAILABLE },
		{ "nobody@example.org", AUTH_LOOKUP_UNAVAILABLE },
		{ "postmaster@example.org", AUTH_LOOKUP_FOUND },
	};
	check_rcpt(d, rc2, sizeof(rc2) / sizeof(rc2[0]));
	static const struct sender_case sc3[] = {
		{ "alice", "alice@example.org", AUTH_LOOKUP_FOUND },
		{ "alice", "info@example.org", AUTH_LOOKUP_UNAVAILABLE },
	};
	check_sender(d, sc3, 2);
	unlink(pw);
	static const struct dir_case rc3[] = {
		{ "alice@example.org", AUTH_LOOKUP_UNAVAILABLE },
		{ "sales@example.org", AUTH_LOOKUP_FOUND },
	};
	check_rcpt(d, rc3, 2);

	auth_dir_free(d);
	auth_backend_free(b);
	free(c);
}

static void test_directory_sqlite(void **state)
{
	char db[512];
	path_in(db, sizeof(db), "dir.db");
	make_db(db);
	struct conf *c = make_conf(NULL, "", NULL);
	struct auth_backend *b = auth_backend_sqlite_new(db);
	struct auth_dir *d = auth_dir_new(c, b, AUTH_FILE_MAX);
	static const struct dir_case rc[] = {
		{ "alice@example.org", AUTH_LOOKUP_FOUND },
		{ "alice@mx.example.net", AUTH_LOOKUP_NOTFOUND },
		{ "bob@mx.example.net", AUTH_LOOKUP_FOUND },
		{ "sales@example.org", AUTH_LOOKUP_FOUND },
		{ "help@mx.example.net", AUTH_LOOKUP_FOUND },
		{ "nobody@example.org", AUTH_LOOKUP_NOTFOUND },
	};
	check_rcpt(d, rc, sizeof(rc) / sizeof(rc[0]));
	static const struct sender_case sc[] = {
		{ "bob", "sales@example.org", AUTH_LOOKUP_FOUND },
		{ "bob", "help@example.org", AUTH_LOOKUP_FOUND },
		{ "bob", "x@partner.example", AUTH_LOOKUP_FOUND },
		{ "bob", "ceo@example.org", AUTH_LOOKUP_FOUND },
		{ "bob", "cfo@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "Alice@example.org", "sales@example.org", AUTH_LOOKUP_FOUND },
		{ "Alice@example.org", "help@example.org", AUTH_LOOKUP_NOTFOUND },
		{ "Alice@example.org", "x@partner.example", AUTH_LOOKUP_NOTFOUND },
	};
	check_sender(d, sc, sizeof(sc) / sizeof(sc[0]));
	/* the user lookup also accepts the full address of a bare user */
	struct buf st, canon;
	buf_init(&st, 8192);
	buf_init(&canon, 512);
	struct err e;
	assert_int_equal(auth_dir_user(d, "bob@example.org", &st, &canon, &e), AUTH_LOOKUP_FOUND);
	assert_string_equal(buf_cstr(&canon), "bob");
	buf_reset(&canon);
	assert_int_equal(auth_dir_user(d, "bob@example.com", &st, &canon, &e),
			 AUTH_LOOKUP_NOTFOUND);
	buf_free(&st);
	buf_free(&canon);
	unlink(db);
	struct dir_case gone = { "nobody@example.org", AUTH_LOOKUP_UNAVAILABLE };
	check_rcpt(d, &gone, 1);
	struct sender_case sgone = { "bob", "x@partner.example", AUTH_LOOKUP_UNAVAILABLE };
	check_sender(d, &sgone, 1);
	auth_dir_free(d);
	auth_backend_free(b);
	free(c);
}

struct dc_result {
	int calls;
	enum auth_result r;
	char canon[256];
	char reason[256];
};

static void dc_done(enum auth_result r, const char *canon, const char *reason, void *arg)
{
	struct dc_result *x = arg;
	x->calls++;
	x->r = r;
	snprintf(x->canon, sizeof(x->canon), "%s", canon ? canon : "");
	snprintf(x->reason, sizeof(x->reason), "%s", reason ? reason : "");
}

/* With no user store (Dovecot), every address of a local domain is local. */
static void test_directory_no_user_list(void **state)
{
	struct conf *c = make_conf(NULL, NULL, NULL);
	struct auth_backend *b = auth_backend_dovecot_new("/nonexistent/auth-client", 200, 500);
	struct auth_dir *d = auth_dir_new(c, b, AUTH_FILE_MAX);
	static const struct dir_case rc[] = {
		{ "whoever@example.org", AUTH_LOOKUP_FOUND },
		{ "whoever@example.com", AUTH_LOOKUP_NOTFOUND },
	};
	check_rcpt(d, rc, 2);
	/* and a password check through an unreachable Dovecot is a tempfail */
	struct event_base *base = event_base_new();
	struct dc_result x = { 0 };
	b->verify_plain(b, base, "192.0.2.1", "u", "p", 1, dc_done, &x);
	assert_int_equal(x.calls, 1);
	assert_int_equal(x.r, AUTH_TEMPFAIL);
	assert_true(x.reason[0] != '\0');
	auth_dir_free(d);
	auth_backend_free(b);
	event_base_free(base);
	free(c);
}

static bool line_has_resp(const char *line, const char *user, const char *pw)
{
	struct buf raw, enc;
	buf_init(&raw, 1024);
	buf_init(&enc, 2048);
	buf_append(&raw, "", 1);
	buf_puts(&raw, user);
	buf_append(&raw, "", 1);
	buf_puts(&raw, pw);
	buf_puts(&enc, "\tresp=");
	b64_encode(buf_ptr(&raw), buf_len(&raw), &enc);
	buf_puts(&enc, "\n");
	bool r = strstr(line, buf_cstr(&enc)) != NULL;
	buf_free(&raw);
	buf_free(&enc);
	return r;
}

/* A stand-in Dovecot auth server: answers "slow" only after the next
 * request (so answers come out of order), then closes after "bye". */
static void fake_dovecot(int lfd)
{
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(1);
	FILE *in = fdopen(fd, "r");
	FILE *out = fdopen(dup(fd), "w");
	fputs("VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tabc\nDONE\n", out);
	fflush(out);
	char line[4096];
	unsigned slow_id = 0;
	while (fgets(line, sizeof(line), in)) {
		unsigned id = 0;
		if (sscanf(line, "AUTH\t%u\t", &id) != 1)
			continue;
		if (!strstr(line, "\tservice=smtp\t") || !strstr(line, "\tnologin") ||
		    !strstr(line, "\trip=192.0.2.9\t"))
			fprintf(out, "FAIL\t%u\treason=bad request\n", id);
		else if (line_has_resp(line, "slow", "pw"))
			slow_id = id;
		else if (line_has_resp(line, "alice", "pw"))
			fprintf(out, "OK\t%u\tuser=alice@example.org\n", id);
		else if (line_has_resp(line, "tab", "pw"))
			fprintf(out, "OK\t%u\tuser=t\001tb\n", id);
		else if (line_has_resp(line, "temp", "pw"))
			fprintf(out, "FAIL\t%u\tuser=temp\ttemp\n", id);
		else if (line_has_resp(line, "bye", "pw"))
			break;
		else
			fprintf(out, "FAIL\t%u\tuser=x\n", id);
		if (slow_id && id != slow_id) {
			fprintf(out, "OK\t%u\n", slow_id);
			slow_id = 0;
		}
		fflush(out);
	}
	_exit(0);
}

static void dc_run_until(struct event_base *base, const struct dc_result *x, int calls)
{
	int64_t end = time_mono_ms() + 5000;
	while (x->calls < calls && time_mono_ms() < end)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(x->calls, calls);
}

static void test_dovecot_backend(void **state)
{
	char sock[512];
	path_in(sock, sizeof(sock), "auth-client");
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		fake_dovecot(lfd);
	close(lfd);
	struct event_base *base = event_base_new();
	struct auth_backend *b = auth_backend_dovecot_new(sock, 2000, 2000);
	struct dc_result x[6];
	memset(x, 0, sizeof(x));
	b->verify_plain(b, base, "192.0.2.9", "slow", "pw", 2, dc_done, &x[0]);
	b->verify_plain(b, base, "192.0.2.9", "alice", "pw", 2, dc_done, &x[1]);
	dc_run_until(base, &x[1], 1);
	dc_run_until(base, &x[0], 1);
	assert_int_equal(x[0].r, AUTH_OK);
	assert_string_equal(x[0].canon, "slow");
	assert_int_equal(x[1].r, AUTH_OK);
	assert_string_equal(x[1].canon, "alice@example.org");
	b->verify_plain(b, base, "192.0.2.9", "alice", "wrong", 5, dc_done, &x[2]);
	dc_run_until(base, &x[2], 1);
	assert_int_equal(x[2].r, AUTH_FAIL);
	b->verify_plain(b, base, "192.0.2.9", "temp", "pw", 2, dc_done, &x[3]);
	dc_run_until(base, &x[3], 1);
	assert_int_equal(x[3].r, AUTH_TEMPFAIL);
	b->verify_plain(b, base, "192.0.2.9", "tab", "pw", 2, dc_done, &x[4]);
	dc_run_until(base, &x[4], 1);
	assert_int_equal(x[4].r, AUTH_OK);
	assert_string_equal(x[4].canon, "t\tb");
	/* the server goes away with a request pending: tempfail */
	b->verify_plain(b, base, "192.0.2.9", "bye", "pw", 2, dc_done, &x[5]);
	dc_run_until(base, &x[5], 1);
	assert_int_equal(x[5].r, AUTH_TEMPFAIL);
	int st;
	waitpid(pid, &st, 0);
	auth_backend_free(b);
	event_base_free(base);
	unlink(sock);
}

/* ---- the penalty table across a reload (save / load) ------------------- */

static const struct penalty_conf save_conf = {
	.delay_after = 2, .block_after = 4, .window_s = 100, .block_s = 50,
	.max_delay_ms = 1000, .max_entries = 64,
};

/* Saves p at now in chunks of at most max bytes, each loaded into q
 * whole, or record by record when by_record (records found by their
 * length fields). */
static void save_into(const struct penalty *p, struct penalty *q, int64_t now, size_t max,
		      bool by_record)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	const void *pos = NULL;
	bool more;
	int chunks = 0;
	do {
		buf_reset(&b);
		more = penalty_save(p, now, &pos, &b, max);
		assert_true(buf_len(&b) <= max);
		const uint8_t *d = buf_ptr(&b);
		size_t n = buf_len(&b);
		if (!by_record) {
			assert_int_equal(penalty_load(q, d, n, now), 0);
		} else {
			size_t i = 0;
			while (i < n) {
				assert_true(n - i >= 22);
				size_t len = 22 + ((size_t)d[i + 20] << 8 | d[i + 21]);
				assert_int_equal(penalty_load(q, d + i, len, now), 0);
				i += len;
			}
		}
		assert_true(++chunks < 1000);
	} while (more);
	buf_free(&b);
}

static void test_penalty_save_load(void **state)
{
	static const struct {
		size_t max;
		bool by_record;
	} modes[] = { { 1 << 16, false }, { 1 << 16, true }, { 40, false }, { 40, true } };
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		struct penalty *p = penalty_new(&save_conf);
		unsigned d;
		/* blocked at 10 until 60 */
		for (int i = 0; i < 4; i++)
			penalty_fail(p, "ip:192.0.2.1", 10);
		/* three failures from 20: delayed, not blocked */
		for (int i = 0; i < 3; i++)
			penalty_fail(p, "user:carol", 20);
		/* one failure at 0: out of the window at 100 */
		penalty_fail(p, "user:old", 0);
		/* a block served by 70 */
		for (int i = 0; i < 4; i++)
			penalty_fail(p, "ip:192.0.2.9", 5);
		struct penalty *q = penalty_new(&save_conf);
		/* q already counted one failure for carol: they add up to the block */
		penalty_fail(q, "user:carol", 40);
		save_into(p, q, 50, modes[m].max, modes[m].by_record);
		assert_int_equal(penalty_check(q, "ip:192.0.2.1", 50, &d), AUTH_BLOCKED);
		assert_int_equal(penalty_check(q, "ip:192.0.2.1", 59, &d), AUTH_BLOCKED);
		assert_int_equal(penalty_check(q, "ip:192.0.2.1", 60, &d), AUTH_OK);
		assert_int_equal(penalty_check(q, "user:carol", 50, &d), AUTH_BLOCKED);
		penalty_free(q);

		/* into an empty table: the count below the block carries its delay */
		q = penalty_new(&save_conf);
		save_into(p, q, 100, modes[m].max, modes[m].by_record);
		assert_int_equal(penalty_check(q, "user:carol", 100, &d), AUTH_OK);
		assert_true(d > 0);
		penalty_fail(q, "user:carol", 100);
		assert_int_equal(penalty_check(q, "user:carol", 100, &d), AUTH_BLOCKED);
		/* what had run out does not come back */
		assert_int_equal(penalty_check(q, "user:old", 100, &d), AUTH_OK);
		assert_int_equal(d, 0);
		assert_int_equal(penalty_check(q, "ip:192.0.2.9", 100, &d), AUTH_OK);
		assert_int_equal(d, 0);
		assert_int_equal(penalty_check(q, "ip:192.0.2.1", 100, &d), AUTH_OK);
		penalty_free(q);
		penalty_free(p);
	}
}

static void test_penalty_load_bounds(void **state)
{
	struct penalty *p = penalty_new(&save_conf);
	for (int i = 0; i < 4; i++)
		penalty_fail(p, "ip:192.0.2.1", 10);
	struct buf b;
	buf_init(&b, 4096);
	const void *pos = NULL;
	assert_false(penalty_save(p, 10, &pos, &b, 4096));
	size_t n = buf_len(&b);
	assert_int_equal(n, 22 + strlen("ip:192.0.2.1"));
	/* every truncation is refused and blocks nothing */
	for (size_t cut = 1; cut < n; cut++) {
		struct penalty *q = penalty_new(&save_conf);
		assert_int_equal(penalty_load(q, buf_ptr(&b), cut, 10), -1);
		unsigned d;
		assert_int_equal(penalty_check(q, "ip:192.0.2.1", 10, &d), AUTH_OK);
		penalty_free(q);
	}
	/* a NUL in a key, an empty key */
	uint8_t bad[64];
	memcpy(bad, buf_ptr(&b), n);
	bad[25] = 0;
	struct penalty *q = penalty_new(&save_conf);
	assert_int_equal(penalty_load(q, bad, n, 10), -1);
	memset(bad + 20, 0, 2);
	assert_int_equal(penalty_load(q, bad, 22, 10), -1);
	/* a saved block lasts no longer than this table's block_s */
	struct penalty_conf shortc = save_conf;
	shortc.block_s = 5;
	struct penalty *r = penalty_new(&shortc);
	assert_int_equal(penalty_load(r, buf_ptr(&b), n, 10), 0);
	unsigned d;
	assert_int_equal(penalty_check(r, "ip:192.0.2.1", 14, &d), AUTH_BLOCKED);
	assert_int_equal(penalty_check(r, "ip:192.0.2.1", 15, &d), AUTH_OK);
	/* the table stays bounded whatever is loaded */
	struct penalty_conf tiny = save_conf;
	tiny.max_entries = 2;
	struct penalty *t = penalty_new(&tiny);
	penalty_fail(p, "user:a", 10);
	penalty_fail(p, "user:b", 10);
	penalty_fail(p, "user:c", 10);
	buf_reset(&b);
	pos = NULL;
	assert_false(penalty_save(p, 10, &pos, &b, 4096));
	assert_int_equal(penalty_load(t, buf_ptr(&b), buf_len(&b), 10), 0);
	/* the newest two survive: c and b; the block of the address went */
	assert_int_equal(penalty_check(t, "ip:192.0.2.1", 10, &d), AUTH_OK);
	penalty_fail(t, "user:c", 10);
	penalty_fail(t, "user:b", 10);
	assert_int_equal(penalty_check(t, "user:c", 10, &d), AUTH_OK);
	assert_int_equal(d, (unsigned)(tiny.max_delay_ms * 1 / 2));
	penalty_free(t);
	penalty_free(r);
	penalty_free(q);
	buf_free(&b);
	penalty_free(p);
}

/* ---- the auth process end to end --------------------------------------- */

struct authd_fixture {
	pid_t pid;
	char tag[64];
	struct conf *c;
	char passwd[512];
	char logp[512];
};

static struct authd_fixture fx;

static int authd_setup(void **state)
{
	make_hashes();
	path_in(fx.passwd, sizeof(fx.passwd), "authd.passwd");
	path_in(fx.logp, sizeof(fx.logp), "authd.log");
	char text[4096];
	snprintf(text, sizeof(text), "alice:%s\nscram:%s\ncarol:%s\n", hash_pw, scram_pw, hash_pw);
	write_file(fx.passwd, text);
	fx.c = make_conf(NULL, NULL, NULL);
	fx.c->auth_backend = "passwd-file";
	fx.c->auth_passwd_file = fx.passwd;
	fx.c->auth_fail_delay_after = 1;
	fx.c->auth_fail_block_after = 5;
	fx.c->auth_fail_window = 300;
	fx.c->auth_fail_block_time = 300;
	fx.c->auth_fail_max_delay = 400;
	snprintf(fx.tag, sizeof(fx.tag), "test-%ld", (long)getpid());
	struct err e;
	int lfd = authd_listen(fx.tag, &e);
	if (lfd < 0)
		fail_msg("%s", e.msg);
	fx.pid = fork();
	assert_true(fx.pid >= 0);
	if (fx.pid == 0) {
		log_to_file(fx.logp, &e);
		_exit(authd_main(fx.c, lfd, 54321, NULL));
	}
	close(lfd);
	return 0;
}

static int authd_teardown(void **state)
{
	kill(fx.pid, SIGTERM);
	int st = 0;
	waitpid(fx.pid, &st, 0);
	free(fx.c);
	/* a clean exit on SIGTERM */
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

struct reply {
	uint8_t raw[AUTHD_MAX_MSG];
	struct authd_msg m;
	int64_t ms; /* time from request to reply */
};

static int cli_connect(void)
{
	struct err e;
	int fd = authd_connect(fx.tag, &e);
	if (fd < 0)
		fail_msg("%s", e.msg);
	return fd;
}

static void cli_send(int fd, uint8_t type, uint32_t id, size_t n, ...)
{
	struct authd_field f[AUTHD_MAX_FIELDS];
	va_list ap;
	va_start(ap, n);
	for (size_t i = 0; i < n; i++) {
		f[i].p = va_arg(ap, const uint8_t *);
		f[i].n = va_arg(ap, size_t);
	}
	va_end(ap);
	struct buf b;
	buf_init(&b, AUTHD_MAX_MSG);
	assert_int_equal(authd_encode(&b, type, id, n, f), 0);
	assert_int_equal(send(fd, buf_ptr(&b), buf_len(&b), MSG_NOSIGNAL), (ssize_t)buf_len(&b));
	buf_free(&b);
}

#define S(s) (const uint8_t *)(s), strlen(s)

/* Waits up to 5 s; returns bytes (0 = closed). */
static ssize_t cli_recv(int fd, struct reply *r)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		fail_msg("no reply within 5 s");
	ssize_t n = recv(fd, r->raw, sizeof(r->raw), 0);
	if (n > 0) {
		assert_int_equal(authd_decode(r->raw, (size_t)n, &r->m), 0);
		assert_int_equal(r->m.type, AUTHD_REPLY);
	}
	return n;
}

static bool field_is(const struct authd_msg *m, size_t i, const char *s)
{
	return i < m->n && m->f[i].n == strlen(s) && memcmp(m->f[i].p, s, m->f[i].n) == 0;
}

static void ask(int fd, struct reply *r, uint32_t id, uint8_t type, size_t n, ...)
{
	struct authd_field f[AUTHD_MAX_FIELDS];
	va_list ap;
	va_start(ap, n);
	for (size_t i = 0; i < n; i++) {
		f[i].p = va_arg(ap, const uint8_t *);
		f[i].n = va_arg(ap, size_t);
	}
	va_end(ap);
	struct buf b;
	buf_init(&b, AUTHD_MAX_MSG);
	assert_int_equal(authd_encode(&b, type, id, n, f), 0);
	int64_t t0 = time_mono_ms();
	assert_int_equal(send(fd, buf_ptr(&b), buf_len(&b), MSG_NOSIGNAL), (ssize_t)buf_len(&b));
	buf_free(&b);
	assert_true(cli_recv(fd, r) > 0);
	r->ms = time_mono_ms() - t0;
	assert_int_equal(r->m.id, id);
}

static void test_authd_plain(void **state)
{
	int fd = cli_connect();
	struct reply *r = xmalloc(sizeof(*r));
	ask(fd, r, 1, AUTHD_PLAIN, 4, S("192.0.2.1"), S(""), S("ALICE"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));
	assert_true(field_is(&r->m, 1, "alice"));
	/* the address of a local domain reaches the bare user */
	ask(fd, r, 2, AUTHD_PLAIN, 4, S("192.0.2.1"), S(""), S("alice@example.org"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));
	assert_true(field_is(&r->m, 1, "alice"));
	ask(fd, r, 3, AUTHD_PLAIN, 4, S("192.0.2.1"), S("alice"), S("alice"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));
	/* acting as someone else is refused */
	ask(fd, r, 4, AUTHD_PLAIN, 4, S("192.0.2.2"), S("carol"), S("alice"), S("pw"));
	assert_true(field_is(&r->m, 0, "fail"));
	ask(fd, r, 5, AUTHD_PLAIN, 4, S("192.0.2.3"), S(""), S("alice"), S("wrong"));
	assert_true(field_is(&r->m, 0, "fail"));
	ask(fd, r, 6, AUTHD_PLAIN, 4, S("192.0.2.4"), S(""), S("nosuchuser"), S("pw"));
	assert_true(field_is(&r->m, 0, "fail"));
	/* a SCRAM entry also serves PLAIN */
	ask(fd, r, 7, AUTHD_PLAIN, 4, S("192.0.2.1"), S(""), S("scram"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));

	ask(fd, r, 8, AUTHD_RCPT, 1, S("alice@example.org"));
	assert_true(field_is(&r->m, 0, "local"));
	ask(fd, r, 9, AUTHD_RCPT, 1, S("zed@example.org"));
	assert_true(field_is(&r->m, 0, "unknown"));
	ask(fd, r, 10, AUTHD_SENDER, 2, S("alice"), S("alice@mx.example.net"));
	assert_true(field_is(&r->m, 0, "ok"));
	ask(fd, r, 11, AUTHD_SENDER, 2, S("alice"), S("carol@example.org"));
	assert_true(field_is(&r->m, 0, "fail"));

	/* passwords never reach the log; outcomes do */
	char *log = slurp(fx.logp);
	assert_non_null(strstr(log, "event=auth_ok"));
	assert_non_null(strstr(log, "event=auth_failed"));
	assert_non_null(strstr(log, "ip=\"192.0.2.3\""));
	assert_null(strstr(log, "wrong\""));
	assert_null(strstr(log, hash_pw));
	free(log);
	free(r);
	close(fd);
}

static void test_authd_penalty(void **state)
{
	int fd = cli_connect();
	int fd2 = cli_connect();
	struct reply *r = xmalloc(sizeof(*r));
	int64_t worst = 0;
	bool blocked = false;
	uint32_t id = 100;
	for (int i = 0; i < 12 && !blocked; i++) {
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.7"), S(""), S("carol"), S("bad"));
		if (field_is(&r->m, 0, "blocked"))
			blocked = true;
		else
			assert_true(field_is(&r->m, 0, "fail"));
		if (r->ms > worst)
			worst = r->ms;
	}
	assert_true(blocked);
	/* failures were answered late */
	assert_true(worst >= 50);
	/* blocked: even the right password is refused, at once */
	ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.7"), S(""), S("carol"), S("pw"));
	assert_true(field_is(&r->m, 0, "blocked"));
	assert_true(r->ms < 200);
	/* the user is blocked from another address too */
	ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.8"), S(""), S("carol"), S("pw"));
	assert_true(field_is(&r->m, 0, "blocked"));
	/* other users from other addresses are not */
	ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.9"), S(""), S("alice"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));
	char *log = slurp(fx.logp);
	assert_non_null(strstr(log, "event=auth_blocked"));
	free(log);

	/* a delayed answer holds up nobody else: fail once from a new address
	 * (delay_after = 1 is reached by the second failure) */
	ask(fd, r, ++id, AUTHD_PLAIN, 4, S("203.0.113.5"), S(""), S("alice"), S("bad1"));
	cli_send(fd, AUTHD_PLAIN, ++id, 4, S("203.0.113.5"), S(""), S("alice"), S("bad2"));
	uint32_t delayed_id = id;
	int64_t t0 = time_mono_ms();
	ask(fd2, r, 500, AUTHD_RCPT, 1, S("alice@example.org"));
	assert_true(field_is(&r->m, 0, "local"));
	int64_t quick = time_mono_ms() - t0;
	assert_true(cli_recv(fd, r) > 0);
	int64_t slow = time_mono_ms() - t0;
	assert_int_equal(r->m.id, delayed_id);
	assert_true(field_is(&r->m, 0, "fail"));
	if (slow >= 50)
		assert_true(quick < slow);
	free(r);
	close(fd);
	close(fd2);
}

/* A correct login clears the user's count, not the address's: one account
 * must not buy an address endless guesses at the others. */
static void test_authd_success_keeps_address_count(void **state)
{
	int fd = cli_connect();
	struct reply *r = xmalloc(sizeof(*r));
	uint32_t id = 600;
	bool blocked = false;
	char user[32];
	for (int i = 0; i < 8 && !blocked; i++) {
		snprintf(user, sizeof(user), "ghost%d", i);
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.60"), S(""), S(user), S("bad"));
		assert_true(field_is(&r->m, 0, "fail") || field_is(&r->m, 0, "blocked"));
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.60"), S(""), S("alice"), S("pw"));
		if (field_is(&r->m, 0, "blocked"))
			blocked = true;
		else
			assert_true(field_is(&r->m, 0, "ok"));
	}
	/* block_after = 5: the fifth failure blocks the address */
	assert_true(blocked);
	assert_int_equal(id, 600 + 2 * 5);
	/* alice herself is not blocked elsewhere */
	ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.61"), S(""), S("alice"), S("pw"));
	assert_true(field_is(&r->m, 0, "ok"));
	free(r);
	close(fd);
}

/* Failures are answered no sooner than the slowest recent check: a wrong
 * password for a SHA512-CRYPT user takes as long as an unknown user's
 * (dummy yescrypt). */
static int64_t median3(int64_t a, int64_t b, int64_t c)
{
	return a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}

static void test_authd_failure_floor(void **state)
{
	int fd = cli_connect();
	struct reply *r = xmalloc(sizeof(*r));
	uint32_t id = 700;
	int64_t known[3], unknown[3], ok[3];
	char ip[32], nobody[32];
	for (int i = 0; i < 3; i++) {
		/* fresh addresses and unknown names, and alice's count cleared by
		 * her success: no penalty delay */
		snprintf(ip, sizeof(ip), "198.51.100.%d", 80 + 3 * i);
		snprintf(nobody, sizeof(nobody), "nobody%d", i);
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S(ip), S(""), S(nobody), S("bad"));
		assert_true(field_is(&r->m, 0, "fail"));
		unknown[i] = r->ms;
		snprintf(ip, sizeof(ip), "198.51.100.%d", 81 + 3 * i);
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S(ip), S(""), S("alice"), S("bad"));
		assert_true(field_is(&r->m, 0, "fail"));
		known[i] = r->ms;
		snprintf(ip, sizeof(ip), "198.51.100.%d", 82 + 3 * i);
		ask(fd, r, ++id, AUTHD_PLAIN, 4, S(ip), S(""), S("alice"), S("pw"));
		assert_true(field_is(&r->m, 0, "ok"));
		ok[i] = r->ms;
	}
	int64_t mu = median3(unknown[0], unknown[1], unknown[2]);
	int64_t mk = median3(known[0], known[1], known[2]);
	int64_t mo = median3(ok[0], ok[1], ok[2]);
	/* SHA512-CRYPT alone is several times faster than yescrypt; padded,
	 * the failure is not */
	if (mu >= 8 && mo * 3 < mu)
		assert_true(mk * 10 >= mu * 6);
	else
		print_message("floor check skipped: unknown %lld ms, success %lld ms\n",
			      (long long)mu, (long long)mo);
	free(r);
	close(fd);
}

/* A reload replaces the auth process: the stopping one hands its table to
 * the next through the listening socket they share. */
static void test_authd_handoff(void **state)
{
	char tag[64];
	snprintf(tag, sizeof(tag), "test-ho-%ld", (long)getpid());
	struct err e;
	int lfd = authd_listen(tag, &e);
	if (lfd < 0)
		fail_msg("%s", e.msg);
	char logp[512];
	path_in(logp, sizeof(logp), "handoff.log");
	pid_t pids[3];
	struct reply *r = xmalloc(sizeof(*r));
	uint32_t id = 800;
	for (int gen = 0; gen < 3; gen++) {
		pids[gen] = fork();
		assert_true(pids[gen] >= 0);
		if (pids[gen] == 0) {
			log_to_file(logp, &e);
			_exit(authd_main(fx.c, lfd, 54321, NULL));
		}
		int fd = authd_connect(tag, &e);
		if (fd < 0)
			fail_msg("%s", e.msg);
		if (gen == 0) {
			for (int i = 0; i < 5; i++) {
				ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.90"), S(""),
				    S("ho-user"), S("bad"));
				assert_true(field_is(&r->m, 0, "fail"));
			}
			ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.91"), S(""), S("carol"),
			    S("bad"));
		} else {
			/* still blocked after one and after two replacements */
			ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.90"), S(""), S("alice"),
			    S("pw"));
			assert_true(field_is(&r->m, 0, "blocked"));
			ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.92"), S(""), S("ho-user"),
			    S("bad"));
			assert_true(field_is(&r->m, 0, "blocked"));
			ask(fd, r, ++id, AUTHD_PLAIN, 4, S("198.51.100.93"), S(""), S("alice"),
			    S("pw"));
			assert_true(field_is(&r->m, 0, "ok"));
		}
		close(fd);
		kill(pids[gen], SIGTERM);
		int st = 0;
		waitpid(pids[gen], &st, 0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(lfd);
	char *log = slurp(logp);
	assert_non_null(strstr(log, "event=authd_handoff "));
	assert_non_null(strstr(log, "event=authd_penalty_loaded"));
	assert_null(strstr(log, "event=authd_handoff_failed"));
	free(log);
	free(r);
}

static void scram_client(const char *password, const uint8_t *salt, size_t salt_len,
			 unsigned iter, const char *am, uint8_t proof[32], uint8_t server_sig[32])
{
	uint8_t salted[32], ck[32], sk[32], stored[32], csig[32];
	unsigned l = 0;
	PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iter,
			  EVP_sha256(), 32, salted);
	HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, ck, &l);
	HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Server Key", 10, sk, &l);
	EVP_Digest(ck, 32, stored, &l, EVP_sha256(), NULL);
	HMAC(EVP_sha256(), stored, 32, (const uint8_t *)am, strlen(am), csig, &l);
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ csig[i];
	HMAC(EVP_sha256(), sk, 32, (const uint8_t *)am, strlen(am), server_sig, &l);
}

static void test_authd_scram(void **state)
{
	int fd = cli_connect();
	struct reply *r = xmalloc(sizeof(*r));
	ask(fd, r, 1, AUTHD_SCRAM_LOOKUP, 2, S("192.0.2.50"), S("scram"));
	assert_true(field_is(&r->m, 0, "ok"));
	assert_true(field_is(&r->m, 1, "scram"));
	assert_true(field_is(&r->m, 3, "4096"));
	struct scram_keys k;
	const char *sp = scram_pw;
	assert_int_equal(scram_keys_parse(sp, strlen(sp), &k), 0);
	assert_int_equal(r->m.f[2].n, k.salt_len);
	assert_memory_equal(r->m.f[2].p, k.salt, k.salt_len);

	const char *am = "n=scram,r=abc,r=abcdef,s=xx,i=4096,c=biws,r=abcdef";
	uint8_t proof[32], sig[32];
	scram_client("pw", k.salt, k.salt_len, 4096, am, proof, sig);
	ask(fd, r, 2, AUTHD_SCRAM_VERIFY, 4, S("192.0.2.50"), S("scram"), S(am), proof,
	    (size_t)32);
	assert_true(field_is(&r->m, 0, "ok"));
	assert_true(field_is(&r->m, 1, "scram"));
	assert_int_equal(r->m.f[2].n, 32);
	assert_memory_equal(r->m.f[2].p, sig, 32);
	proof[0] ^= 1;
	ask(fd, r, 3, AUTHD_SCRAM_VERIFY, 4, S("192.0.2.50"), S("scram"), S(am), proof,
	    (size_t)32);
	assert_true(field_is(&r->m, 0, "fail"));

	/* unknown user: a plausible, stable salt, different per user */
	ask(fd, r, 4, AUTHD_SCRAM_LOOKUP, 2, S("192.0.2.51"), S("ghost"));
	assert_true(field_is(&r->m, 0, "ok"));
	assert_true(field_is(&r->m, 3, "4096"));
	assert_int_equal(r->m.f[2].n, 16);
	uint8_t s1[16];
	memcpy(s1, r->m.f[2].p, 16);
	ask(fd, r, 5, AUTHD_SCRAM_LOOKUP, 2, S("192.0.2.52"), S("ghost"));
	assert_memory_equal(r->m.f[2].p, s1, 16);
	ask(fd, r, 6, AUTHD_SCRAM_LOOKUP, 2, S("192.0.2.52"), S("phantom"));
	assert_int_equal(r->m.f[2].n, 16);
	assert_memory_not_equal(r->m.f[2].p, s1, 16);
	scram_client("pw", s1, 16, 4096, am, proof, sig);
	ask(fd, r, 7, AUTHD_SCRAM_VERIFY, 4, S("192.0.2.51"), S("ghost"), S(am), proof,
	    (size_t)32);
	assert_true(field_is(&r->m, 0, "fail"));
	/* a user whose entry is not SCRAM looks the same as an unknown one */
	ask(fd, r, 8, AUTHD_SCRAM_LOOKUP, 2, S("192.0.2.53"), S("alice"));
	assert_true(field_is(&r->m, 0, "ok"));
	assert_int_equal(r->m.f[2].n, 16);
	free(r);
	close(fd);
}

static void test_authd_bad_peer(void **state)
{
	struct reply *r = xmalloc(sizeof(*r));
	/* malformed message: the connection is closed */
	int fd = cli_connect();
	assert_int_equal(send(fd, "\x01\x00", 2, MSG_NOSIGNAL), 2);
	assert_int_equal(cli_recv(fd, r), 0);
	close(fd);
	/* a reply type sent as a request */
	fd = cli_connect();
	cli_send(fd, AUTHD_REPLY, 1, 1, S("ok"));
	assert_int_equal(cli_recv(fd, r), 0);
	close(fd);
	/* wrong field count */
	fd = cli_connect();
	cli_send(fd, AUTHD_PLAIN, 1, 2, S("192.0.2.1"), S("alice"));
	assert_int_equal(cli_recv(fd, r), 0);
	close(fd);
	/* a message longer than the limit */
	fd = cli_connect();
	uint8_t *big = xcalloc(1, AUTHD_MAX_MSG + 100);
	big[0] = AUTHD_RCPT;
	int sz = 4 * AUTHD_MAX_MSG;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (send(fd, big, AUTHD_MAX_MSG + 100, MSG_NOSIGNAL) > 0)
		assert_int_equal(cli_recv(fd, r), 0);
	free(big);
	close(fd);
	/* a peer with another uid is refused (needs root to switch) */
	if (geteuid() == 0) {
		pid_t p = fork();
		assert_true(p >= 0);
		if (p == 0) {
			if (setuid(65534) < 0)
				_exit(2);
			struct err e;
			int cfd = authd_connect(fx.tag, &e);
			if (cfd < 0)
				_exit(0);
			struct buf b;
			buf_init(&b, 1024);
			struct authd_field f = { (const uint8_t *)"x@example.org", 13 };
			authd_encode(&b, AUTHD_RCPT, 1, 1, &f);
			(void)!send(cfd, buf_ptr(&b), buf_len(&b), MSG_NOSIGNAL);
			struct pollfd pf = { .fd = cfd, .events = POLLIN };
			if (poll(&pf, 1, 3000) != 1)
				_exit(3);
			uint8_t tmp[256];
			_exit(recv(cfd, tmp, sizeof(tmp), 0) <= 0 ? 0 : 1);
		}
		int st;
		waitpid(p, &st, 0);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	/* the server still serves others */
	fd = cli_connect();
	ask(fd, r, 9, AUTHD_RCPT, 1, S("postmaster"));
	assert_true(field_is(&r->m, 0, "local"));
	close(fd);
	char *log = slurp(fx.logp);
	assert_non_null(strstr(log, "event=authd_peer_error"));
	if (geteuid() == 0)
		assert_non_null(strstr(log, "event=authd_peer_refused"));
	free(log);
	free(r);
}

/* RFC 4013 section 3's examples, and what RFC 5802 makes of them: the
 * keys of a password are those of its SASLprep form. */
static void test_scram_saslprep(void **state)
{
	static const struct {
		const char *in;
		const char *out; /* NULL: prohibited */
		bool stored_only; /* prohibited only when stored */
	} cases[] = {
		{ "I\xc2\xadX", "IX", false },          /* SOFT HYPHEN mapped to nothing */
		{ "user", "user", false },
		{ "USER", "USER", false },               /* case is kept */
		{ "\xc2\xaa", "a", false },              /* NFKC */
		{ "\xe2\x85\xa8", "IX", false },         /* ROMAN NUMERAL NINE, NFKC */
		{ "p\xc3\xa4ss\xc2\xa0w\xef\xac\x81", "p\xc3\xa4ss wfi", false },
		{ "\x07", NULL, false },                 /* control character */
		{ "\xd8\xa7" "1", NULL, false },         /* RandALCat then LCat: bidi rule */
		{ "a\xff", NULL, false },                /* not UTF-8 */
		{ "x\xf0\xb0\x80\x80", "x\xf0\xb0\x80\x80", true }, /* unassigned in Unicode 3.2 */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int stored = 0; stored <= 1; stored++) {
			struct buf b;
			buf_init(&b, 4096);
			int r = scram_saslprep(cases[i].in, strlen(cases[i].in), stored, &b);
			bool refused = !cases[i].out || (stored && cases[i].stored_only);
			if (refused) {
				if (r != -1)
					fail_msg("case %zu stored=%d: accepted", i, stored);
			} else if (r != 0 || strcmp(buf_cstr(&b), cases[i].out) != 0) {
				fail_msg("case %zu stored=%d: got %d \"%s\"", i, stored, r,
					 r == 0 ? buf_cstr(&b) : "");
			}
			buf_free(&b);
		}
	}
	/* A NUL inside is prohibited too (it would cut libidn's C string). */
	struct buf b;
	buf_init(&b, 64);
	assert_int_equal(scram_saslprep("a\0b", 3, false, &b), -1);
	buf_free(&b);

	/* A key made from a password checks against the password as typed
	 * and as prepared, and keys made from the raw bytes (other tools)
	 * still check. */
	const char *typed = "p\xc3\xa4ss\xc2\xa0w\xef\xac\x81";
	struct buf h;
	buf_init(&h, 1024);
	struct err e = { "" };
	assert_int_equal(auth_password_hash("SCRAM-SHA-256", typed, strlen(typed), &h, &e), 0);
	assert_int_equal(auth_password_check(buf_cstr(&h), typed, strlen(typed), &e), 1);
	assert_int_equal(auth_password_check(buf_cstr(&h), "p\xc3\xa4ss wfi", 9, &e), 1);
	assert_int_equal(auth_password_check(buf_cstr(&h), "p\xc3\xa4ss w", 7, &e), 0);
	buf_free(&h);
	struct scram_keys k;
	static const uint8_t salt[] = "saltsaltsalt";
	assert_int_equal(scram_keys_derive(typed, strlen(typed), salt, 12, 4096, &k), 0);
	buf_init(&h, 1024);
	assert_int_equal(scram_keys_format(&k, &h), 0);
	assert_int_equal(auth_password_check(buf_cstr(&h), typed, strlen(typed), &e), 1);
	buf_free(&h);
	/* -bpw refuses what SASLprep prohibits. */
	buf_init(&h, 1024);
	assert_int_equal(auth_password_hash("SCRAM-SHA-256", "bell\x07", 5, &h, &e), -1);
	assert_non_null(strstr(e.msg, "SASLprep"));
	buf_free(&h);
}

int main(void)
{
	const struct CMUnitTest unit[] = {
		cmocka_unit_test(test_password_known),
		cmocka_unit_test(test_password_refused),
		cmocka_unit_test(test_password_hash_roundtrip),
		cmocka_unit_test(test_scram_saslprep),
		cmocka_unit_test(test_passwd_backend),
		cmocka_unit_test(test_sqlite_backend),
		cmocka_unit_test(test_directory_files),
		cmocka_unit_test(test_directory_sqlite),
		cmocka_unit_test(test_directory_no_user_list),
		cmocka_unit_test(test_dovecot_backend),
		cmocka_unit_test(test_penalty_save_load),
		cmocka_unit_test(test_penalty_load_bounds),
	};
	const struct CMUnitTest e2e[] = {
		cmocka_unit_test(test_authd_plain),
		cmocka_unit_test(test_authd_scram),
		cmocka_unit_test(test_authd_penalty),
		cmocka_unit_test(test_authd_success_keeps_address_count),
		cmocka_unit_test(test_authd_failure_floor),
		cmocka_unit_test(test_authd_handoff),
		cmocka_unit_test(test_authd_bad_peer),
	};
	log_set_level(LOG_LVL_DEBUG);
	setup_dir(NULL);
	int r = cmocka_run_group_tests_name("auth", unit, NULL, NULL);
	r += cmocka_run_group_tests_name("authd", e2e, authd_setup, authd_teardown);
	teardown_dir(NULL);
	return r;
}
