/*
 * Unit tests of the Maildir writer: real directories under a fresh
 * mkdtemp, real files, CRLF conversion across read-block boundaries,
 * refusal of links in place of tmp/new/cur, and failure handling.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/wait.h>
#include <grp.h>

#include "deliver/deliver.h"

static char root[256];

static int setup_root(void **state)
{
	snprintf(root, sizeof(root), "/tmp/mdns-test-XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static void rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		chmod(path, 0700);
		DIR *d = opendir(path);
		if (d) {
			struct dirent *de;
			while ((de = readdir(d))) {
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				char sub[1024];
				snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
				rm_rf(sub);
			}
			closedir(d);
		}
		rmdir(path);
	} else {
		unlink(path);
	}
}

static int teardown_root(void **state)
{
	rm_rf(root);
	return 0;
}

static void join(char *out, size_t n, const char *a, const char *b)
{
	snprintf(out, n, "%s/%s", a, b);
}

/* Number of entries in a directory; the only entry's name in first. */
static int dir_count(const char *path, char *first, size_t n)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int c = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (c == 0 && first)
			snprintf(first, n, "%s", de->d_name);
		c++;
	}
	closedir(d);
	return c;
}

static int spool_file(const void *p, size_t n)
{
	char path[300];
	join(path, sizeof(path), root, "spool-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(fs_write_all(fd, p, n), 0);
	return fd;
}

static void read_all(const char *path, struct buf *out)
{
	struct err e;
	buf_init(out, 16 << 20);
	assert_int_equal(fs_read_file(path, out, &e), 0);
}

/* The reference conversion, byte by byte. */
static void to_lf(const uint8_t *p, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
			continue;
		assert_int_equal(buf_append(out, &p[i], 1), 0);
	}
}

static bool name_ok(const char *name, const char *host_esc)
{
	char pat[512];
	snprintf(pat, sizeof(pat), "^[0-9]+\\.M[0-9]+P[0-9]+Q[0-9]+\\.%s,S=([0-9]+)$", host_esc);
	regex_t re;
	assert_int_equal(regcomp(&re, pat, REG_EXTENDED), 0);
	bool ok = regexec(&re, name, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

static unsigned long long name_size(const char *name)
{
	const char *s = strrchr(name, '=');
	assert_non_null(s);
	return strtoull(s + 1, NULL, 10);
}

/* ---- names ----------------------------------------------------------- */

static void test_name_format(void **state)
{
	struct buf b;
	buf_init(&b, 1024);
	assert_int_equal(maildir_name(1234567890000042LL, 4242, 7, "mx/a:b", 99, &b), 0);
	assert_string_equal(buf_cstr(&b), "1234567890.M42P4242Q7.mx\\057a\\072b,S=99");
	/* Same microsecond, same process: the sequence keeps them apart. */
	struct buf c;
	buf_init(&c, 1024);
	assert_int_equal(maildir_name(1234567890000042LL, 4242, 8, "mx/a:b", 99, &c), 0);
	assert_string_not_equal(buf_cstr(&b), buf_cstr(&c));
	buf_free(&c);
	/* A bounded output refuses a name that does not fit. */
	struct buf s;
	buf_init(&s, 10);
	assert_int_equal(maildir_name(1, 1, 1, "host", 1, &s), -1);
	buf_free(&s);
	buf_free(&b);
}

/* ---- delivery -------------------------------------------------------- */

static const char prefix[] = "Return-Path: <s@example.org>\r\nDelivered-To: u@example.net\r\n";

/* The delivered file holds exactly want, and its name gives its size. */
static void assert_delivered_as(const char *file, const char *name, const char *want)
{
	struct buf got;
	read_all(file, &got);
	assert_int_equal(buf_len(&got), strlen(want));
	assert_memory_equal(buf_ptr(&got), want, strlen(want));
	assert_int_equal((unsigned long long)buf_len(&got), name_size(name));
	buf_free(&got);
}

static void test_deliver_basic(void **state)
{
	char md[300];
	join(md, sizeof(md), root, "deep/er/Maildir");
	/* Junk before the message checks that off is honoured. */
	const char spool[] = "JUNK\r\nSubject: hi\r\n\r\nline one\r\nbare\rcr\r\n\r\nend\r\n";
	int fd = spool_file(spool, sizeof(spool) - 1);
	struct buf name;
	buf_init(&name, 1024);
	bool temp = true;
	struct err e = { { 0 } };
	int r = maildir_deliver(md, prefix, strlen(prefix), fd, 6, (off_t)(sizeof(spool) - 1 - 6),
				"mx/1:2", &name, &temp, &e);
	assert_int_equal(r, 0);

	static const char *const subs[] = { "tmp", "new", "cur" };
	for (int k = 0; k < 3; k++) {
		char p[400];
		struct stat st;
		join(p, sizeof(p), md, subs[k]);
		assert_int_equal(lstat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0700);
	}
	char p[400], first[256];
	join(p, sizeof(p), md, "tmp");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	join(p, sizeof(p), md, "cur");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	join(p, sizeof(p), md, "new");
	assert_int_equal(dir_count(p, first, sizeof(first)), 1);
	assert_string_equal(first, buf_cstr(&name));
	assert_true(name_ok(first, "mx\\\\0571\\\\0722"));

	char file[700];
	snprintf(file, sizeof(file), "%s/new/%s", md, first);
	struct stat st;
	assert_int_equal(stat(file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal((unsigned long long)st.st_size, name_size(first));

	assert_delivered_as(file, first,
			    "Return-Path: <s@example.org>\nDelivered-To: u@example.net\n"
			    "Subject: hi\n\nline one\nbare\rcr\n\nend\n");
	buf_free(&name);
	close(fd);
}

/* Return-Path fields of the message are dropped (ours is on top): in any
 * case, with space before the colon, with continuation lines; not in the
 * body, not X-Return-Path. */
static void test_deliver_drops_return_path(void **state)
{
	char md[300];
	join(md, sizeof(md), root, "rp/Maildir");
	const char spool[] = "Return-Path: <forged@evil.example>\r\n\tcontinued\r\n"
			     "Subject: hi\r\nRETURN-PATH : <x@evil.example>\r\n"
			     "X-Return-Path: keep\r\n\r\nReturn-Path: in the body\r\n";
	int fd = spool_file(spool, sizeof(spool) - 1);
	struct buf name;
	buf_init(&name, 1024);
	bool temp = true;
	struct err e = { { 0 } };
	assert_int_equal(maildir_deliver(md, prefix, strlen(prefix), fd, 0,
					 (off_t)(sizeof(spool) - 1), "h", &name, &temp, &e), 0);
	char file[700];
	snprintf(file, sizeof(file), "%s/new/%s", md, buf_cstr(&name));
	assert_delivered_as(file, buf_cstr(&name),
			    "Return-Path: <s@example.org>\nDelivered-To: u@example.net\n"
			    "Subject: hi\nX-Return-Path: keep\n\nReturn-Path: in the body\n");
	buf_free(&name);
	close(fd);
}

static void test_deliver_two_distinct(void **state)
{
	char md[300];
	join(md, sizeof(md), root, "two");
	int fd = spool_file("a\r\n", 3);
	struct buf n1, n2;
	buf_init(&n1, 1024);
	buf_init(&n2, 1024);
	bool temp;
	struct err e;
	/* Back to back: usually within the same microsecond on a fast
	 * machine, and the names must differ anyway. */
	assert_int_equal(maildir_deliver(md, "", 0, fd, 0, 3, "h", &n1, &temp, &e), 0);
	assert_int_equal(maildir_deliver(md, "", 0, fd, 0, 3, "h", &n2, &temp, &e), 0);
	assert_string_not_equal(buf_cstr(&n1), buf_cstr(&n2));
	char p[400];
	join(p, sizeof(p), md, "new");
	assert_int_equal(dir_count(p, NULL, 0), 2);
	buf_free(&n1);
	buf_free(&n2);
	close(fd);
}

/* A message > 128 KiB with a CRLF split across each 64 KiB read block,
 * a lone CR at a block end and a final lone CR. */
static void check_big(size_t shift)
{
	size_t n = 3 * 65536 + 5000;
	uint8_t *m = malloc(n + shift);
	assert_non_null(m);
	for (size_t i = 0; i < n + shift; i++)
		m[i] = (i % 61 == 60) ? '\n' : (i % 61 == 59) ? '\r' : (uint8_t)('a' + i % 26);
	uint8_t *msg = m + shift;
	msg[65535] = '\r';
	msg[65536] = '\n';
	msg[2 * 65536 - 1] = '\r';
	msg[2 * 65536] = '\n';
	msg[3 * 65536 - 1] = '\r'; /* lone CR at a block end */
	msg[3 * 65536] = 'x';
	msg[n - 1] = '\r';         /* lone CR at the very end */
	int fd = spool_file(m, n + shift);

	char md[300];
	snprintf(md, sizeof(md), "%s/big%zu", root, shift);
	struct buf name;
	buf_init(&name, 1024);
	bool temp;
	struct err e;
	assert_int_equal(maildir_deliver(md, prefix, strlen(prefix), fd, (off_t)shift, (off_t)n,
					 "h", &name, &temp, &e), 0);
	struct buf want;
	buf_init(&want, 16 << 20);
	to_lf((const uint8_t *)prefix, strlen(prefix), &want);
	to_lf(msg, n, &want);

	char file[700];
	snprintf(file, sizeof(file), "%s/new/%s", md, buf_cstr(&name));
	struct buf got;
	read_all(file, &got);
	assert_int_equal(buf_len(&got), buf_len(&want));
	assert_memory_equal(buf_ptr(&got), buf_ptr(&want), buf_len(&want));
	assert_int_equal((unsigned long long)buf_len(&got), name_size(buf_cstr(&name)));
	/* The split pairs really were converted. */
	assert_true(buf_len(&got) < n);
	buf_free(&got);
	buf_free(&want);
	buf_free(&name);
	free(m);
	close(fd);
}

static void test_deliver_big_blocks(void **state)
{
	check_big(0);
	check_big(1);
	check_big(65535);
}

static void make_md(const char *md, bool tmp, bool new, bool cur)
{
	assert_int_equal(mkdir(md, 0700), 0);
	char p[400];
	if (tmp) {
		join(p, sizeof(p), md, "tmp");
		assert_int_equal(mkdir(p, 0700), 0);
	}
	if (new) {
		join(p, sizeof(p), md, "new");
		assert_int_equal(mkdir(p, 0700), 0);
	}
	if (cur) {
		join(p, sizeof(p), md, "cur");
		assert_int_equal(mkdir(p, 0700), 0);
	}
}

static void test_deliver_new_symlink(void **state)
{
	char md[300], elsewhere[300], p[400];
	join(md, sizeof(md), root, "sym");
	join(elsewhere, sizeof(elsewhere), root, "elsewhere");
	assert_int_equal(mkdir(elsewhere, 0700), 0);
	make_md(md, true, false, true);
	join(p, sizeof(p), md, "new");
	assert_int_equal(symlink(elsewhere, p), 0);

	int fd = spool_file("a\r\n", 3);
	bool temp = true;
	struct err e = { { 0 } };
	assert_int_equal(maildir_deliver(md, "", 0, fd, 0, 3, "h", NULL, &temp, &e), -1);
	assert_false(temp);
	assert_true(strlen(e.msg) > 0);
	assert_int_equal(dir_count(elsewhere, NULL, 0), 0);
	join(p, sizeof(p), md, "tmp");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	close(fd);
}

static void test_deliver_tmp_is_file(void **state)
{
	char md[300], p[400];
	join(md, sizeof(md), root, "tmpfile");
	make_md(md, false, true, true);
	join(p, sizeof(p), md, "tmp");
	int t = open(p, O_CREAT | O_WRONLY, 0600);
	assert_true(t >= 0);
	close(t);

	int fd = spool_file("a\r\n", 3);
	bool temp = true;
	struct err e;
	assert_int_equal(maildir_deliver(md, "", 0, fd, 0, 3, "h", NULL, &temp, &e), -1);
	assert_false(temp); /* ENOTDIR: this Maildir cannot work as it is */
	join(p, sizeof(p), md, "new");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	close(fd);
}

/* The delivery itself, as a user the permissions bind: 0 when it failed
 * as a temporary error and left nothing in new/. */
static int readonly_attempt(const char *md, int fd)
{
	char p[400];
	bool temp = false;
	struct err e;
	if (maildir_deliver(md, "", 0, fd, 0, 3, "h", NULL, &temp, &e) != -1 || !temp)
		return 1;
	join(p, sizeof(p), md, "new");
	return dir_count(p, NULL, 0) == 0 ? 0 : 2;
}

static void test_deliver_readonly(void **state)
{
	char md[300], p[400];
	join(md, sizeof(md), root, "ro");
	make_md(md, true, true, true);
	join(p, sizeof(p), md, "tmp");
	assert_int_equal(chmod(p, 0500), 0);
	int fd = spool_file("a\r\n", 3);
	if (geteuid() != 0) {
		assert_int_equal(readonly_attempt(md, fd), 0);
		close(fd);
		return;
	}
	/* Permissions do not bind root: the attempt runs in a child as an
	 * unprivileged user that owns the Maildir (whose tmp/ is 0500). */
	assert_int_equal(chmod(root, 0755), 0);
	const char *subs[] = { "", "/tmp", "/new", "/cur" };
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s%s", md, subs[i]);
		assert_int_equal(chown(p, 65534, 65534), 0);
	}
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(3);
		_exit(readonly_attempt(md, fd));
	}
	close(fd);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A write that fails midway (a file size limit stands in for a full disk
 * or a quota, and binds root too): retry later, nothing left behind. */
static void test_deliver_write_fails(void **state)
{
	size_t n = 200000;
	char *m = malloc(n);
	assert_non_null(m);
	memset(m, 'x', n);
	int fd = spool_file(m, n);
	char md[300], p[400];
	join(md, sizeof(md), root, "full");
	make_md(md, true, true, true);

	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 4096;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	bool temp = false;
	struct err e = { { 0 } };
	int r = maildir_deliver(md, "", 0, fd, 0, (off_t)n, "h", NULL, &temp, &e);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(r, -1);
	assert_true(temp);
	assert_non_null(strstr(e.msg, "write"));
	join(p, sizeof(p), md, "new");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	join(p, sizeof(p), md, "tmp");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	free(m);
	close(fd);
}

/* An envelope that claims more bytes than the file holds. */
static void test_deliver_short_file(void **state)
{
	int fd = spool_file("abc\r\n", 5);
	char md[300], p[400];
	join(md, sizeof(md), root, "short");
	bool temp = false;
	struct err e;
	assert_int_equal(maildir_deliver(md, "", 0, fd, 0, 100, "h", NULL, &temp, &e), -1);
	assert_true(temp);
	join(p, sizeof(p), md, "new");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	join(p, sizeof(p), md, "tmp");
	assert_int_equal(dir_count(p, NULL, 0), 0);
	close(fd);
}

/* ---- path templates -------------------------------------------------- */

static void test_path_expand(void **state)
{
	static const struct {
		const char *tmpl, *addr, *want; /* want NULL: refused */
	} t[] = {
		{ "/var/mail/%d/%n/Maildir", "User@Example.ORG", "/var/mail/example.org/user/Maildir" },
		{ "/m/%u", "A.B@C", "/m/a.b@c" },
		{ "/m/100%%/%n", "x@y", "/m/100%/x" },
		{ "/m/%n%n", "x@y", "/m/xx" },
		{ "/m/plain", "x@y", "/m/plain" },
		{ "/m/%n", "\"q@r\"@y", "/m/\"q@r\"" }, /* the last '@' splits */
		{ "/m/%n", "j\xc3\xbcrgen@y", "/m/j\xc3\xbcrgen" },
		{ "/m/%n", "../x", NULL },
		{ "/m/%n", "../x@y", NULL },
		{ "/m/%n", ".hidden@y", NULL },
		{ "/m/%n", "a/b@y", NULL },
		{ "/m/%n", "@y", NULL },
		{ "/m/%n", "x@", NULL },
		{ "/m/%d", "x@.y", NULL },
		{ "/m/%d", "x@y/z", NULL },
		{ "/m/%n", "x\x01@y", NULL },
		{ "/m/%n", "x\x7f@y", NULL },
		{ "/m/%d", "x@y\n", NULL },
		{ "/m/%q", "x@y", NULL },
		{ "/m/%", "x@y", NULL },
		{ "", "x@y", NULL },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct buf out;
		buf_init(&out, 4096);
		buf_puts(&out, "keep:");
		struct err e = { { 0 } };
		int r = maildir_path_expand(t[i].tmpl, t[i].addr, &out, &e);
		if (t[i].want) {
			assert_int_equal(r, 0);
			char want[300];
			snprintf(want, sizeof(want), "keep:%s", t[i].want);
			assert_string_equal(buf_cstr(&out), want);
		} else {
			assert_int_equal(r, -1);
			assert_true(strlen(e.msg) > 0);
			assert_string_equal(buf_cstr(&out), "keep:");
		}
		buf_free(&out);
	}
	/* The output bound holds. */
	struct buf s;
	buf_init(&s, 8);
	struct err e;
	assert_int_equal(maildir_path_expand("/m/%u", "longname@example.org", &s, &e), -1);
	assert_int_equal(buf_len(&s), 0);
	buf_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_format),
		cmocka_unit_test(test_path_expand),
		cmocka_unit_test_setup_teardown(test_deliver_basic, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_two_distinct, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_drops_return_path, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_big_blocks, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_new_symlink, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_tmp_is_file, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_readonly, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_write_fails, setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_deliver_short_file, setup_root, teardown_root),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
