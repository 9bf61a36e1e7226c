/* Tests of the queue module: ids, writer, group commit, reader, recovery,
 * listing and the envelope parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "queue/queue.h"

/* ---- fixtures ------------------------------------------------------------ */

struct fx {
	char dir[64];
	struct spool *sp;
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* Opens the spool dir/spool, a subdirectory that does not exist yet:
 * spool_open creates it. */
static int open_sub_spool(const char *dir, struct spool **sp)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/spool", dir);
	struct err e = { "" };
	if (spool_open(path, sp, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	return 0;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/spooltest.XXXXXX");
	if (!mkdtemp(fx->dir) || open_sub_spool(fx->dir, &fx->sp) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	spool_close(fx->sp);
	nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* Entries of <dir>/spool/<sub>, without "." and "..". */
static size_t count_dir(const char *dir, const char *sub)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/spool/%s", dir, sub);
	DIR *d = opendir(path);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static size_t count_entries(struct fx *fx, const char *sub)
{
	return count_dir(fx->dir, sub);
}

static void write_file(struct fx *fx, const char *sub, const char *name, const void *p,
		       size_t n)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/spool/%s/%s", fx->dir, sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static bool file_exists(struct fx *fx, const char *sub, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/spool/%s/%s", fx->dir, sub, name);
	struct stat st;
	return lstat(path, &st) == 0;
}

static struct spool_rcpt test_rcpts[] = {
	{ "bob@example.net", 6, "rfc822;bob@example.net" },
	{ "carol@example.net", 0, NULL },
};

static struct spool_env make_env(int64_t received)
{
	struct spool_env env = { 0 };
	env.received = received;
	env.role = "mx";
	env.client_ip = "192.0.2.7";
	env.helo = "mail.example.org";
	env.tls_version = "TLSv1.3";
	env.tls_cipher = "TLS_AES_256_GCM_SHA384";
	env.sender = "alice@example.org";
	env.body = 2;
	env.ret = 2;
	env.envid = "QQ314159";
	env.size_declared = 12345;
	env.rcpts = test_rcpts;
	env.n_rcpts = 2;
	return env;
}

static bool s_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static void assert_env_equal(const struct spool_env *a, const struct spool_env *b)
{
	assert_string_equal(a->id, b->id);
	assert_int_equal(a->received, b->received);
	assert_true(s_eq(a->role, b->role));
	assert_true(s_eq(a->client_ip, b->client_ip));
	assert_true(s_eq(a->helo, b->helo));
	assert_true(s_eq(a->tls_version, b->tls_version));
	assert_true(s_eq(a->tls_cipher, b->tls_cipher));
	assert_true(s_eq(a->auth_user, b->auth_user));
	assert_true(s_eq(a->sender, b->sender));
	assert_int_equal(a->body, b->body);
	assert_int_equal(a->smtputf8, b->smtputf8);
	assert_int_equal(a->ret, b->ret);
	assert_true(s_eq(a->envid, b->envid));
	assert_int_equal(a->size_declared, b->size_declared);
	assert_int_equal(a->n_rcpts, b->n_rcpts);
	for (size_t i = 0; i < a->n_rcpts; i++) {
		assert_true(s_eq(a->rcpts[i].addr, b->rcpts[i].addr));
		assert_int_equal(a->rcpts[i].notify, b->rcpts[i].notify);
		assert_true(s_eq(a->rcpts[i].orcpt, b->rcpts[i].orcpt));
	}
}

/* Writes and commits one message; returns its id in id_out. */
static void put_message(struct fx *fx, struct spool_env *env, int64_t now_us, const void *body,
			size_t n, char id_out[QUEUE_ID_LEN + 1])
{
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, env, now_us, &m, &e), 0);
	assert_int_equal(spool_msg_write(m, body, n, &e), 0);
	strcpy(id_out, spool_msg_id(m));
	assert_string_equal(env->id, id_out);
	bool ok = false;
	assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 1);
	assert_true(ok);
}

/* ---- ids ------------------------------------------------------------------ */

static void test_id_format(void **state)
{
	char id[QUEUE_ID_LEN + 1];
	queue_id_make(id, 0, 0, 0);
	assert_string_equal(id, "00000000000-00000-00");
	/* 32^10 us, pid 31, seq 1025 wraps to 1 */
	queue_id_make(id, (int64_t)1 << 50, 31, 1025);
	assert_string_equal(id, "10000000000-0000v-01");
	queue_id_make(id, 1700000000000000LL, 4194303, 1023);
	assert_int_equal(strlen(id), QUEUE_ID_LEN);
	assert_true(queue_id_valid(id));
	assert_string_equal(id + 11, "-3vvvv-vv");

	static const struct {
		const char *s;
		bool ok;
	} t[] = {
		{ "1kq3vb0d4a8-00c3f-00", true },
		{ "vvvvvvvvvvv-vvvvv-vv", true },
		{ "1kq3vb0d4a8-00c3f-0", false },   /* short */
		{ "1kq3vb0d4a8-00c3f-000", false }, /* long */
		{ "1kq3vb0d4a8_00c3f-00", false },  /* dash */
		{ "1kq3vb0d4a-800c3f-00", false },  /* dash placed wrong */
		{ "1kq3vb0d4a8-00c3f-0w", false },  /* w outside alphabet */
		{ "1KQ3VB0D4A8-00C3F-00", false },  /* upper case */
		{ "../../etc/passwd-0000", false },
		{ "", false },
		{ "1kq3vb0d4a8-00c3f-0/", false },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (queue_id_valid(t[i].s) != t[i].ok)
			fail_msg("queue_id_valid(\"%s\") != %d", t[i].s, t[i].ok);
	}
	assert_false(queue_id_valid(NULL));
}

static void test_id_order(void **state)
{
	/* String order follows time order, across digit carries too. */
	int64_t times[] = { 0, 1, 31, 32, 1023, 1024, 1699999999999999LL, 1700000000000000LL,
			    1700000000000001LL, 4102444800000000LL };
	char prev[QUEUE_ID_LEN + 1], cur[QUEUE_ID_LEN + 1];
	queue_id_make(prev, times[0], 99999, 1000);
	for (size_t i = 1; i < sizeof(times) / sizeof(times[0]); i++) {
		/* A bigger pid and seq on the earlier id must not matter. */
		queue_id_make(cur, times[i], 1, 0);
		if (strcmp(prev, cur) >= 0)
			fail_msg("%s !< %s", prev, cur);
		queue_id_make(prev, times[i], 99999, 1000);
	}
	/* Within one microsecond and one pid, the sequence orders. */
	queue_id_make(prev, 5, 7, 3);
	queue_id_make(cur, 5, 7, 4);
	assert_true(strcmp(prev, cur) < 0);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_id_unique(void **state)
{
	struct fx *fx = *state;
	char id[QUEUE_ID_LEN + 1];
	/* The pure function: every sequence number in range is distinct. */
	char seen[1024][QUEUE_ID_LEN + 1];
	for (unsigned s = 0; s < 1024; s++)
		queue_id_make(seen[s], 1700000000000000LL, 1234, s);
	for (unsigned s = 1; s < 1024; s++)
		assert_true(strcmp(seen[s - 1], seen[s]) < 0);

	/* The writer: 10,000 messages begun with the same time. */
	enum { N = 10000 };
	char **ids = calloc(N, sizeof(*ids));
	struct err e = { "" };
	struct spool_env env = make_env(1700000000);
	int64_t now = 1700000000000000LL;
	for (size_t i = 0; i < N; i++) {
		struct spool_msg *m;
		assert_int_equal(spool_msg_begin(fx->sp, &env, now, &m, &e), 0);
		ids[i] = strdup(spool_msg_id(m));
		assert_true(queue_id_valid(ids[i]));
		spool_msg_abort(m);
	}
	/* Begun in order, so already sorted, and strictly increasing. */
	for (size_t i = 1; i < N; i++)
		if (strcmp(ids[i - 1], ids[i]) >= 0)
			fail_msg("id %zu not after %zu: %s %s", i, i - 1, ids[i], ids[i - 1]);
	qsort(ids, N, sizeof(*ids), cmp_str);
	for (size_t i = 1; i < N; i++)
		assert_string_not_equal(ids[i - 1], ids[i]);
	for (size_t i = 0; i < N; i++)
		free(ids[i]);
	free(ids);
	(void)id;
	assert_int_equal(count_entries(fx, "tmp"), 0);
}

/* ---- write and read back ------------------------------------------------- */

static void test_roundtrip_1mib(void **state)
{
	struct fx *fx = *state;
	enum { SIZE = 1024 * 1024 };
	uint8_t *body = malloc(SIZE);
	for (size_t i = 0; i < SIZE; i++)
		body[i] = (uint8_t)(i * 131 + (i >> 9));
	memcpy(body, "Received: from x\r\n", 18);

	struct spool_env env = make_env(1700000123);
	env.auth_user = "alice";
	env.smtputf8 = true;
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1700000123000000LL, &m, &e), 0);
	static const size_t pieces[] = { 1, 7, 4093, 65535, 65536, 65537, 3, 200000, 131072, 17 };
	size_t off = 0, k = 0;
	while (off < SIZE) {
		size_t n = pieces[k++ % (sizeof(pieces) / sizeof(pieces[0]))];
		if (n > SIZE - off)
			n = SIZE - off;
		assert_int_equal(spool_msg_write(m, body + off, n, &e), 0);
		off += n;
	}
	/* Nothing is in queue/ before the commit. */
	assert_int_equal(count_entries(fx, "queue"), 0);
	assert_int_equal(count_entries(fx, "tmp"), 1);
	char id[QUEUE_ID_LEN + 1];
	strcpy(id, spool_msg_id(m));
	bool ok = false;
	assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 1);
	assert_true(ok);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_true(file_exists(fx, "queue", id));

	struct spool_env back;
	assert_int_equal(spool_read_env(fx->sp, id, &back, &e), 0);
	assert_string_equal(back.id, id);
	assert_env_equal(&env, &back);
	assert_int_equal(back.data_size, SIZE);

	int fd = -1;
	assert_int_equal(spool_open_data(fx->sp, id, &fd, &e), 0);
	uint8_t *got = malloc(SIZE + 1);
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, got + have, SIZE + 1 - have);
		assert_true(r >= 0);
		if (r == 0)
			break;
		have += (size_t)r;
	}
	close(fd);
	assert_int_equal(have, SIZE);
	assert_memory_equal(got, body, SIZE);

	/* The file is the envelope text then exactly the body. */
	struct stat st;
	char path[256];
	snprintf(path, sizeof(path), "%s/spool/queue/%s", fx->dir, id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, back.data_offset + SIZE);
	assert_int_equal(st.st_mode & 0777, 0600);
	spool_env_free(&back);
	free(got);
	free(body);

	/* Ids that are not ids are refused before any file access. */
	assert_int_equal(spool_read_env(fx->sp, "../queue/x", &back, &e), -1);
	assert_int_equal(spool_open_data(fx->sp, "00000000000-00000-00", &fd, &e), -1);
}

static void test_xtext_hostile(void **state)
{
	struct fx *fx = *state;
	struct spool_rcpt rc[] = {
		{ "sp ace@example.net", 15, "-" },
		{ "plus+tag=eq@example.net", 1, "utf-8;j\xc3\xbcrgen@example.net" },
		{ "cr\rlf\n@x", 0, "" },
		{ "\xe2\x82\xac@\xc3\xa9xample.net", 8, "rfc822;a b\r\nc" },
	};
	struct spool_env env = make_env(1);
	env.role = "submission";
	env.helo = "[ bad\r\nhelo+= ]";
	env.sender = "";
	env.auth_user = "user name+\x01\x7f\xff";
	env.envid = "-";
	env.tls_version = NULL;
	env.tls_cipher = NULL;
	env.body = 1;
	env.ret = 1;
	env.size_declared = UINT64_MAX;
	env.rcpts = rc;
	env.n_rcpts = sizeof(rc) / sizeof(rc[0]);
	char id[QUEUE_ID_LEN + 1];
	put_message(fx, &env, 2000000, "x\r\n", 3, id);

	struct err e = { "" };
	struct spool_env back;
	assert_int_equal(spool_read_env(fx->sp, id, &back, &e), 0);
	assert_env_equal(&env, &back);
	assert_int_equal(back.data_size, 3);
	spool_env_free(&back);

	/* The envelope text itself stays one value per line, printable. */
	struct buf t;
	buf_init(&t, 1 << 20);
	assert_int_equal(spool_format_env(&env, &t, &e), 0);
	const char *s = buf_cstr(&t);
	for (const char *p = s; *p; p++)
		assert_true(*p == '\n' || (*p >= ' ' && *p <= '~'));
	assert_non_null(strstr(s, "\nrcpt sp+20ace@example.net 15 +2D\n"));
	assert_non_null(strstr(s, "\nfrom \n"));
	buf_free(&t);

	/* Values the format cannot carry are refused, not written wrongly. */
	struct spool_msg *m;
	struct spool_env bad = make_env(1);
	bad.client_ip = "1.2.3.4 extra";
	assert_int_equal(spool_msg_begin(fx->sp, &bad, 3000000, &m, &e), -1);
	bad = make_env(1);
	bad.n_rcpts = 0;
	assert_int_equal(spool_msg_begin(fx->sp, &bad, 3000000, &m, &e), -1);
	bad = make_env(1);
	bad.role = "relay";
	assert_int_equal(spool_msg_begin(fx->sp, &bad, 3000000, &m, &e), -1);
	assert_int_equal(count_entries(fx, "tmp"), 0);
}

static void test_abort(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(0);
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, &env, 7000001, &m, &e), 0);
	assert_int_equal(env.received, 7); /* unset arrival time: taken from now_us */
	char big[100000];
	memset(big, 'a', sizeof(big));
	assert_int_equal(spool_msg_write(m, big, sizeof(big), &e), 0);
	assert_int_equal(count_entries(fx, "tmp"), 1);
	spool_msg_abort(m);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_entries(fx, "queue"), 0);
	size_t n = 99;
	assert_int_equal(spool_count(fx->sp, &n, &e), 0);
	assert_int_equal(n, 0);
}

/* The size of tmp/<id>, -1 if there is no such file. */
static off_t tmp_size(struct fx *fx, const char *id)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/spool/tmp/%s", fx->dir, id);
	struct stat st;
	if (stat(path, &st) < 0) {
		assert_int_equal(errno, ENOENT);
		return -1;
	}
	return st.st_size;
}

/* Small writes are gathered into 64 KiB blocks, not written one by one,
 * and the file is created only with the first block. */
static void test_buffering(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(1);
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &m, &e), 0);
	char id[QUEUE_ID_LEN + 1];
	strcpy(id, spool_msg_id(m));
	assert_int_equal(tmp_size(fx, id), -1);
	char line[100];
	memset(line, 'l', sizeof(line));
	size_t total = 0;
	while (total + sizeof(line) < 60000) {
		assert_int_equal(spool_msg_write(m, line, sizeof(line), &e), 0);
		total += sizeof(line);
	}
	assert_int_equal(tmp_size(fx, id), -1);
	for (int i = 0; i < 100; i++)
		assert_int_equal(spool_msg_write(m, line, sizeof(line), &e), 0);
	assert_int_equal(tmp_size(fx, id), 64 * 1024);
	spool_msg_abort(m);
}

/* A write error (here the file size limit, as ENOSPC would be) is
 * reported and fails the commit; nothing is left behind. */
static void test_write_error(void **state)
{
	struct fx *fx = *state;
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 100 * 1024;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	struct spool_env env = make_env(1);
	struct err e = { "" };
	struct spool_msg *msgs[2];
	bool ok[2];
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &msgs[0], &e), 0);
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &msgs[1], &e), 0);
	char id1[QUEUE_ID_LEN + 1];
	strcpy(id1, spool_msg_id(msgs[1]));
	static char big[256 * 1024];
	int r = spool_msg_write(msgs[0], big, sizeof(big), &e);
	assert_int_equal(r, -1);
	assert_non_null(strstr(e.msg, "write"));
	/* later writes keep failing */
	assert_int_equal(spool_msg_write(msgs[0], "x", 1, &e), -1);
	assert_int_equal(spool_msg_write(msgs[1], "fine\r\n", 6, &e), 0);
	e.msg[0] = '\0';
	/* EFBIG is a local error, not a full file system (451 4.3.0). */
	assert_int_equal(spool_msg_failure(msgs[0]), SPOOL_FAIL_OTHER);
	assert_int_equal(spool_msg_failure(msgs[1]), SPOOL_FAIL_NONE);
	enum spool_fail why[2] = { SPOOL_FAIL_NOSPACE, SPOOL_FAIL_NOSPACE };
	assert_int_equal(spool_commit_batch(fx->sp, msgs, 2, ok, why, &e), 1);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, prev);
	assert_false(ok[0]);
	assert_true(ok[1]);
	assert_int_equal(why[0], SPOOL_FAIL_OTHER);
	assert_int_equal(why[1], SPOOL_FAIL_NONE);
	assert_non_null(strstr(e.msg, "File too large"));
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_entries(fx, "queue"), 1);
	assert_true(file_exists(fx, "queue", id1));
}

/* syncfs reports a writeback error once per open file description: each
 * process must sync through a description of its own, or one worker's
 * syncfs would take the error that has to stop another's 250. */
static void test_sync_fd_per_process(void **state)
{
	struct fx *fx = *state;
	int pfd = spool_process_sync_fd(fx->sp);
	assert_true(pfd >= 0);
	assert_int_equal(spool_process_sync_fd(fx->sp), pfd);
	pid_t parent = getpid();
	pid_t ch = fork();
	assert_true(ch >= 0);
	if (ch == 0) {
		/* Inherited: the very same description (kcmp works here). */
		long before = syscall(SYS_kcmp, parent, getpid(), KCMP_FILE, pfd, pfd);
		if (before < 0 && (errno == ENOSYS || errno == EPERM))
			_exit(2); /* no kcmp here (a seccomp filter): skipped */
		int cfd = spool_process_sync_fd(fx->sp);
		long after = cfd < 0 ? -1 : syscall(SYS_kcmp, parent, getpid(), KCMP_FILE, pfd, cfd);
		/* kcmp: 0 same, 1 or 2 different, -1 error. */
		_exit(before == 0 && (after == 1 || after == 2) ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(ch, &st, 0), ch);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 2)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
	/* And the parent's is still its own, open. */
	assert_int_equal(spool_process_sync_fd(fx->sp), pfd);
	assert_true(fcntl(pfd, F_GETFD) >= 0);
}

/* spool_group_sync: a batch of two or more shares one syncfs for the
 * data of all its files, then one directory fsync; a single message still
 * gets its own fdatasync.  Every message is committed either way. */
static void test_group_commit_syncfs(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(1);
	struct err e = { "" };
	spool_set_group_sync(fx->sp, true);
	static const size_t sizes[] = { 1, 2, 5, 32 };
	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		size_t n = sizes[t];
		struct spool_msg *msgs[32];
		bool ok[32];
		char ids[32][QUEUE_ID_LEN + 1];
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(spool_msg_begin(fx->sp, &env, 5000000, &msgs[i], &e), 0);
			assert_int_equal(spool_msg_write(msgs[i], "body\r\n", 6, &e), 0);
			strcpy(ids[i], spool_msg_id(msgs[i]));
		}
		uint64_t before = spool_fsync_count();
		assert_int_equal(spool_commit_batch(fx->sp, msgs, n, ok, NULL, &e), n);
		/* One sync for the data (an fdatasync or the syncfs), one for
		 * the directory, whatever n; per file it would be n + 1. */
		assert_int_equal(spool_fsync_count() - before, 2);
		for (size_t i = 0; i < n; i++) {
			assert_true(ok[i]);
			assert_true(file_exists(fx, "queue", ids[i]));
		}
	}
	spool_set_group_sync(fx->sp, false);
}

static void test_group_commit(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(1);
	struct err e = { "" };
	static const size_t sizes[] = { 1, 5, 8, 32 };
	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		size_t n = sizes[t];
		struct spool_msg *msgs[32];
		bool ok[32];
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(spool_msg_begin(fx->sp, &env, 5000000, &msgs[i], &e), 0);
			assert_int_equal(spool_msg_write(msgs[i], "body\r\n", 6, &e), 0);
		}
		size_t before_q = count_entries(fx, "queue");
		uint64_t before = spool_fsync_count();
		assert_int_equal(spool_commit_batch(fx->sp, msgs, n, ok, NULL, &e), n);
		assert_int_equal(spool_fsync_count() - before, n + 1);
		for (size_t i = 0; i < n; i++)
			assert_true(ok[i]);
		assert_int_equal(count_entries(fx, "queue"), before_q + n);
	}

	/* One message of a batch fails (a file of someone else's is in the
	 * way of its name): only it is not ok, the file in the way is left
	 * alone, the others are committed, and the directory is still synced
	 * once. */
	struct spool_msg *msgs[3];
	bool ok[3];
	char ids[3][QUEUE_ID_LEN + 1];
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(spool_msg_begin(fx->sp, &env, 5000000, &msgs[i], &e), 0);
		strcpy(ids[i], spool_msg_id(msgs[i]));
	}
	write_file(fx, "tmp", ids[1], "x", 1);
	e.msg[0] = '\0';
	uint64_t before = spool_fsync_count();
	assert_int_equal(spool_commit_batch(fx->sp, msgs, 3, ok, NULL, &e), 2);
	/* one fdatasync per file that could be made, one for the directory */
	assert_int_equal(spool_fsync_count() - before, 2 + 1);
	assert_true(ok[0]);
	assert_false(ok[1]);
	assert_true(ok[2]);
	assert_true(strstr(e.msg, ids[1]) != NULL);
	assert_true(file_exists(fx, "queue", ids[0]));
	assert_false(file_exists(fx, "queue", ids[1]));
	assert_true(file_exists(fx, "queue", ids[2]));
	assert_int_equal(count_entries(fx, "tmp"), 1);
	assert_int_equal(tmp_size(fx, ids[1]), 1);

	/* An empty batch syncs nothing. */
	before = spool_fsync_count();
	assert_int_equal(spool_commit_batch(fx->sp, NULL, 0, NULL, NULL, &e), 0);
	assert_int_equal(spool_fsync_count(), before);
}

/* Waits (at most 10 s) for the thread's eventfd. */
static bool wait_commit_fd(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 10000) == 1;
}

/* The file-system thread: a batch handed over is committed by the thread
 * and reported through its descriptor; one batch is in flight at a time,
 * while the caller goes on starting messages; stopping the thread with a
 * batch in flight still finishes it. */
static void test_commit_thread(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(1);
	struct err e = { "" };
	struct spool_msg *msgs[4], *more[2];
	bool ok[4], ok2[2];
	char ids[4][QUEUE_ID_LEN + 1];

	/* Without the thread nothing is handed over. */
	assert_int_equal(spool_commit_fd(fx->sp), -1);
	assert_false(spool_commit_submit(fx->sp, msgs, 0, ok, NULL));

	assert_int_equal(spool_thread_start(fx->sp, &e), 0);
	int fd = spool_commit_fd(fx->sp);
	assert_true(fd >= 0);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(spool_msg_begin(fx->sp, &env, 5000000, &msgs[i], &e), 0);
		assert_int_equal(spool_msg_write(msgs[i], "body\r\n", 6, &e), 0);
		strcpy(ids[i], spool_msg_id(msgs[i]));
	}
	uint64_t before = spool_fsync_count();
	assert_true(spool_commit_submit(fx->sp, msgs, 4, ok, NULL));
	/* The loop goes on: new messages start while the batch is out, and a
	 * second batch waits for the first to be collected. */
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(spool_msg_begin(fx->sp, &env, 5000000, &more[i], &e), 0);
		assert_int_equal(spool_msg_write(more[i], "next\r\n", 6, &e), 0);
	}
	assert_false(spool_commit_submit(fx->sp, more, 2, ok2, NULL));
	assert_true(wait_commit_fd(fd));
	size_t committed = 0;
	assert_true(spool_commit_collect(fx->sp, &committed, &e));
	assert_int_equal(committed, 4);
	/* the thread's syncs are counted: one per file, one for queue/ */
	assert_int_equal(spool_fsync_count() - before, 5);
	for (size_t i = 0; i < 4; i++) {
		assert_true(ok[i]);
		assert_true(file_exists(fx, "queue", ids[i]));
	}
	/* collected once: nothing more to collect */
	assert_false(spool_commit_collect(fx->sp, &committed, &e));

	/* A batch in flight when the thread stops is finished first. */
	size_t before_q = count_entries(fx, "queue");
	assert_true(spool_commit_submit(fx->sp, more, 2, ok2, NULL));
	spool_thread_stop(fx->sp);
	assert_int_equal(spool_commit_fd(fx->sp), -1);
	assert_true(ok2[0] && ok2[1]);
	assert_int_equal(count_entries(fx, "queue"), before_q + 2);
	assert_int_equal(count_entries(fx, "tmp"), 0);
}

/* ---- recovery -------------------------------------------------------------- */

static void test_recover(void **state)
{
	struct fx *fx = *state;
	struct spool_env env = make_env(1700000000);
	char good[2][QUEUE_ID_LEN + 1];
	put_message(fx, &env, 1700000000000000LL, "hello\r\n", 7, good[0]);
	put_message(fx, &env, 1700000000000001LL, "world\r\n", 7, good[1]);

	/* A message caught half-written in tmp/, and an empty one. */
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1700000000000002LL, &m, &e), 0);
	static char partial[100000];
	memset(partial, 'p', sizeof(partial));
	assert_int_equal(spool_msg_write(m, partial, sizeof(partial), &e), 0);
	/* (leaked on purpose as a crash would: the file stays in tmp/) */
	write_file(fx, "tmp", "00000000000-00000-01", "", 0);

	/* Damaged files in queue/. */
	char path[256], garbage_id[QUEUE_ID_LEN + 1], trunc_id[QUEUE_ID_LEN + 1],
		other_id[QUEUE_ID_LEN + 1];
	queue_id_make(garbage_id, 1600000000000000LL, 1, 1);
	queue_id_make(trunc_id, 1600000000000000LL, 1, 2);
	queue_id_make(other_id, 1600000000000000LL, 1, 3);
	write_file(fx, "queue", garbage_id, "\x00\x01garbage\n\n", 11);
	/* truncated: the first 40 bytes of a good file */
	snprintf(path, sizeof(path), "%s/spool/queue/%s", fx->dir, good[0]);
	char head[40];
	int fd = open(path, O_RDONLY);
	assert_int_equal(read(fd, head, sizeof(head)), (ssize_t)sizeof(head));
	close(fd);
	write_file(fx, "queue", trunc_id, head, sizeof(head));
	/* a good envelope under another file's name */
	snprintf(path, sizeof(path), "%s/spool/queue/%s", fx->dir, good[1]);
	char whole[4096];
	fd = open(path, O_RDONLY);
	ssize_t wn = read(fd, whole, sizeof(whole));
	assert_true(wn > 0);
	close(fd);
	write_file(fx, "queue", other_id, whole, (size_t)wn);
	write_file(fx, "queue", "not-an-id", "x", 1);
	/* a stray directory is left alone */
	snprintf(path, sizeof(path), "%s/spool/queue/straydir", fx->dir);
	assert_int_equal(mkdir(path, 0700), 0);

	size_t counts[3] = { 9, 9, 9 };
	char logpath[128];
	snprintf(logpath, sizeof(logpath), "%s/log", fx->dir);
	assert_int_equal(log_to_file(logpath, &e), 0);
	log_set_level(LOG_LVL_INFO);
	assert_int_equal(spool_recover(fx->sp, counts, &e), 0);
	log_set_level(LOG_LVL_ERR);
	log_to_stderr();
	struct buf lb;
	buf_init(&lb, 1 << 20);
	assert_int_equal(fs_read_file(logpath, &lb, &e), 0);
	const char *logtext = buf_cstr(&lb);
	char want[128];
	snprintf(want, sizeof(want), "event=spool_recover_tmp id=%s", spool_msg_id(m));
	assert_non_null(strstr(logtext, want));
	snprintf(want, sizeof(want), "event=spool_set_aside id=%s", trunc_id);
	assert_non_null(strstr(logtext, want));
	assert_non_null(strstr(logtext, "event=spool_set_aside file=\"not-an-id\""));
	assert_non_null(strstr(logtext, "straydir"));
	buf_free(&lb);
	assert_int_equal(counts[0], 2);
	assert_int_equal(counts[1], 4);
	assert_int_equal(counts[2], 2);
	assert_int_equal(count_entries(fx, "tmp"), 0);
	assert_int_equal(count_entries(fx, "corrupt"), 4);
	assert_true(file_exists(fx, "corrupt", garbage_id));
	assert_true(file_exists(fx, "corrupt", trunc_id));
	assert_true(file_exists(fx, "corrupt", other_id));
	assert_true(file_exists(fx, "corrupt", "not-an-id"));
	assert_true(file_exists(fx, "queue", good[0]));
	assert_true(file_exists(fx, "queue", good[1]));
	assert_true(file_exists(fx, "queue", "straydir"));
	size_t n = 0;
	assert_int_equal(spool_count(fx->sp, &n, &e), 0);
	assert_int_equal(n, 2);

	/* The commit of the message interrupted by the "crash" now fails
	 * rather than resurrecting it. */
	bool ok = true;
	assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 0);
	assert_false(ok);

	/* A name already in corrupt/ gets a numbered twin, nothing is lost. */
	write_file(fx, "queue", garbage_id, "again", 5);
	assert_int_equal(spool_recover(fx->sp, counts, &e), 0);
	assert_int_equal(counts[1], 1);
	char twin[64];
	snprintf(twin, sizeof(twin), "%s.1", garbage_id);
	assert_true(file_exists(fx, "corrupt", twin));

	/* Nothing to do: nothing changes. */
	assert_int_equal(spool_recover(fx->sp, counts, &e), 0);
	assert_int_equal(counts[0] + counts[1], 0);
	assert_int_equal(counts[2], 2);
}

/* ---- listing ------------------------------------------------------------ */

static int collect(const char *id, void *arg)
{
	struct buf *b = arg;
	buf_puts(b, id);
	buf_puts(b, "\n");
	return 0;
}

static void test_list(void **state)
{
	struct fx *fx = *state;
	struct err e = { "" };
	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);
	assert_int_equal(spool_print_list(fx->sp, f, &e), 0);
	fclose(f);
	assert_string_equal(out, "");
	free(out);

	int64_t now = time_now_us() / 1000000;
	char ids[3][QUEUE_ID_LEN + 1];
	struct spool_env env = make_env(now - 3 * 86400 - 100);
	static char big[2 * 1024 * 1024];
	memset(big, 'b', sizeof(big));
	put_message(fx, &env, 1000, big, sizeof(big), ids[0]);
	env = make_env(now - 300);
	env.sender = "";
	put_message(fx, &env, 2000, big, 1234, ids[1]);
	env = make_env(now - 3 * 3600 - 10);
	struct spool_rcpt one = { "esc\x1b[2J@example.net", 0, NULL };
	env.rcpts = &one;
	env.n_rcpts = 1;
	put_message(fx, &env, 3000, big, 10, ids[2]);

	f = open_memstream(&out, &outlen);
	assert_int_equal(spool_print_list(fx->sp, f, &e), 0);
	fclose(f);
	char want[2048];
	snprintf(want, sizeof(want),
		 " 3d  2.0M %s <alice@example.org>\n"
		 "          bob@example.net\n"
		 "          carol@example.net\n\n"
		 " 5m  1.2K %s <>\n"
		 "          bob@example.net\n"
		 "          carol@example.net\n\n"
		 " 3h    10 %s <alice@example.org>\n"
		 "          esc\\x1B[2J@example.net\n\n",
		 ids[0], ids[1], ids[2]);
	assert_string_equal(out, want);
	free(out);

	size_t n = 0;
	assert_int_equal(spool_count(fx->sp, &n, &e), 0);
	assert_int_equal(n, 3);

	/* foreach gives id (= time) order */
	struct buf b;
	buf_init(&b, 4096);
	assert_int_equal(spool_foreach(fx->sp, collect, &b, &e), 0);
	snprintf(want, sizeof(want), "%s\n%s\n%s\n", ids[0], ids[1], ids[2]);
	assert_string_equal(buf_cstr(&b), want);
	buf_free(&b);
}

/* ---- parser ------------------------------------------------------------- */

#define HDR "sluice-spool 1\nid 1kq3vb0d4a8-00c3f-00\nreceived 1700000000\n"
#define REQ HDR "role mx\nclient 192.0.2.1\nfrom a@b\nrcpt c@d 0 -\n"

static void test_parse_errors(void **state)
{
	static const struct {
		const char *text;
		const char *err; /* NULL: must parse */
	} t[] = {
		{ REQ "\nbody", NULL },
		{ HDR "role submission\nclient ::1\nhelo \nauth u\nfrom \nbody 7bit\nsmtputf8\n"
		      "ret hdrs\nenvid +2D\nsize 0\nrcpt c@d 15 rfc822;x+2By\nrcpt e@f 1 -\n\n",
		  NULL },
		{ "", "truncated" },
		{ "\n\n", "not a sluice" },
		{ "sluice-spool 2\n" REQ "\n", "not a sluice" },
		{ "Sluice-spool 1\nid x\n\n", "not a sluice" },
		{ REQ, "truncated" },
		{ REQ "x", "truncated" },
		{ REQ "bogus 1\n\n", "unknown line" },
		{ REQ "ID 1kq3vb0d4a8-00c3f-00\n\n", "unknown line" },
		{ REQ "\r\n\n", "unknown line" },
		{ REQ " \n\n", "unknown line" },
		{ REQ "from x\n\n", "duplicate from" },
		{ REQ "role mx\n\n", "duplicate role" },
		{ REQ "smtputf8 \n\n", "malformed smtputf8" },
		{ REQ "helo\n\n", "malformed helo" },
		{ HDR "client 192.0.2.1\nfrom a@b\nrcpt c@d 0 -\n\n", "no role" },
		{ HDR "role mx\nfrom a@b\nrcpt c@d 0 -\n\n", "no client" },
		{ HDR "role mx\nclient 1\nrcpt c@d 0 -\n\n", "no from" },
		{ HDR "role mx\nclient 1\nfrom a@b\n\n", "no rcpt" },
		{ "sluice-spool 1\nreceived 1\nrole mx\nclient 1\nfrom a\nrcpt c 0 -\n\n", "no id" },
		{ "sluice-spool 1\nid 1kq3vb0d4a8-00c3f-00\nrole mx\nclient 1\nfrom a\nrcpt c 0 -\n\n",
		  "no received" },
		{ REQ "id 1kq3vb0d4a8-00c3f-01\n\n", "duplicate id" },
		{ "sluice-spool 1\nid 1kq3vb0d4a8-00c3f-0w\n\n", "bad id" },
		{ "sluice-spool 1\nid ../../../etc/passw\n\n", "bad id" },
		{ "sluice-spool 1\nid 1kq3vb0d4a8-00c3f-00x\n\n", "bad id" },
		{ "sluice-spool 1\nid 1\nreceived -1\n\n", "bad id" },
		{ "sluice-spool 1\nreceived -1\n\n", "bad received" },
		{ "sluice-spool 1\nreceived 99999999999999999999\n\n", "bad received" },
		{ "sluice-spool 1\nreceived 9223372036854775808\n\n", "bad received" },
		{ "sluice-spool 1\nreceived \n\n", "bad received" },
		{ REQ "size 18446744073709551616\n\n", "bad size" },
		{ REQ "size 1x\n\n", "bad size" },
		{ HDR "role relay\n\n", "bad role" },
		{ HDR "role MX\n\n", "bad role" },
		{ HDR "client 1 2\n\n", "bad client" },
		{ HDR "client \n\n", "bad client" },
		{ REQ "tls TLSv1.3\n\n", "bad tls" },
		{ REQ "tls TLSv1.3 A B\n\n", "bad tls" },
		{ REQ "tls  A\n\n", "bad tls" },
		{ REQ "body 8BITMIME\n\n", "bad body" },
		{ REQ "body 8bitmime\ncontent 7bit\n\n", NULL },
		{ REQ "content 8bit\nbody 8bitmime\n\n", NULL },
		{ REQ "content 8bit\n\n", "content line without body 8bitmime or smtputf8" },
		{ REQ "body 7bit\ncontent 7bit\n\n", "content line without body 8bitmime" },
		{ REQ "smtputf8\ncontent 7bit\n\n", NULL },
		{ REQ "body 8bitmime\ncontent 8BIT\n\n", "bad content" },
		{ REQ "body 8bitmime\ncontent\n\n", "malformed content" },
		{ REQ "body 8bitmime\ncontent 7bit\ncontent 8bit\n\n", "duplicate content" },
		{ REQ "ret\tfull\n\n", "unknown line" },
		{ REQ "ret none\n\n", "bad ret" },
		{ REQ "helo a b\n\n", "bad xtext in helo" },
		{ REQ "auth a+2\n\n", "bad xtext in auth" },
		{ REQ "envid a+2g\n\n", "bad xtext in envid" },
		{ REQ "envid a+00\n\n", "bad xtext in envid" },
		{ REQ "envid a=b\n\n", "bad xtext in envid" },
		{ REQ "envid \xc3\xa9\n\n", "bad xtext in envid" },
		{ REQ "rcpt c@d 0\n\n", "bad rcpt" },
		{ REQ "rcpt  0 -\n\n", "bad rcpt" },
		{ REQ "rcpt c@d x -\n\n", "bad rcpt" },
		{ REQ "rcpt c@d 65536 -\n\n", "bad rcpt" },
		{ REQ "rcpt c@d 0 - x\n\n", "bad rcpt" },
		{ REQ "rcpt c+0@d 0 -\n\n", "bad xtext in rcpt" },
		{ REQ "rcpt c@d 0 +\n\n", "bad xtext in rcpt" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct spool_env env;
		struct err e = { "" };
		size_t n = strlen(t[i].text);
		int r = spool_parse_env(t[i].text, n, &env, &e);
		if (!t[i].err) {
			if (r != 0)
				fail_msg("case %zu: unexpected error: %s", i, e.msg);
			spool_env_free(&env);
			/* Every proper prefix is incomplete and refused. */
			for (size_t k = 0; k < n; k++) {
				const char *end = memmem(t[i].text, n, "\n\n", 2);
				if (k >= (size_t)(end - t[i].text) + 2)
					break;
				if (spool_parse_env(t[i].text, k, &env, &e) == 0)
					fail_msg("case %zu: prefix of %zu bytes parsed", i, k);
			}
			continue;
		}
		if (r == 0) {
			spool_env_free(&env);
			fail_msg("case %zu: parsed, expected \"%s\"", i, t[i].err);
		}
		if (!strstr(e.msg, t[i].err))
			fail_msg("case %zu: error \"%s\", expected \"%s\"", i, e.msg, t[i].err);
		/* On failure nothing is left allocated (checked by ASan) and the
		 * struct is cleared. */
		assert_null(env.role);
		assert_int_equal(env.n_rcpts, 0);
	}

	/* The good cases decode to what they say. */
	struct spool_env env;
	struct err e = { "" };
	const char *txt = t[1].text;
	assert_int_equal(spool_parse_env(txt, strlen(txt), &env, &e), 0);
	assert_string_equal(env.id, "1kq3vb0d4a8-00c3f-00");
	assert_int_equal(env.received, 1700000000);
	assert_string_equal(env.role, "submission");
	assert_string_equal(env.client_ip, "::1");
	assert_string_equal(env.helo, "");
	assert_string_equal(env.auth_user, "u");
	assert_string_equal(env.sender, "");
	assert_int_equal(env.body, 1);
	assert_true(env.smtputf8);
	assert_int_equal(env.ret, 2);
	assert_string_equal(env.envid, "-");
	assert_int_equal(env.n_rcpts, 2);
	assert_string_equal(env.rcpts[0].orcpt, "rfc822;x+y");
	assert_int_equal(env.rcpts[0].notify, 15);
	assert_null(env.rcpts[1].orcpt);
	assert_int_equal(env.data_offset, strlen(txt));
	spool_env_free(&env);

	/* "content" decides what a BODY=8BITMIME declaration reads as: only
	 * a message that has 8-bit bytes (or is not known not to) stays 2. */
	static const struct {
		const char *text;
		int body;
	} ct[] = {
		{ REQ "body 8bitmime\n\n", 2 },
		{ REQ "body 8bitmime\ncontent 8bit\n\n", 2 },
		{ REQ "body 8bitmime\ncontent 7bit\n\n", 1 },
		{ REQ "content 7bit\nbody 8bitmime\n\n", 1 },
		{ REQ "body 7bit\n\n", 1 },
		{ REQ "\n", 0 },
	};
	for (size_t i = 0; i < sizeof(ct) / sizeof(ct[0]); i++) {
		assert_int_equal(spool_parse_env(ct[i].text, strlen(ct[i].text), &env, &e), 0);
		if (env.body != ct[i].body)
			fail_msg("content case %zu: body %d, expected %d", i, env.body, ct[i].body);
		spool_env_free(&env);
	}
	/* ... and whether a SMTPUTF8 declaration still needs the extension:
	 * only with a non-ASCII byte in the message or an address. */
	static const struct {
		const char *text;
		bool utf8;
	} ut[] = {
		{ REQ "smtputf8\n\n", true },
		{ REQ "smtputf8\ncontent 8bit\n\n", true },
		{ REQ "smtputf8\ncontent 7bit\n\n", false },
		{ REQ "content 7bit\nsmtputf8\nbody 8bitmime\n\n", false },
		{ HDR "role mx\nclient 192.0.2.1\nfrom j+C3+B6rg@b\nrcpt c@d 0 -\nsmtputf8\n"
		      "content 7bit\n\n", true },
		{ HDR "role mx\nclient 192.0.2.1\nfrom a@b\nrcpt c+C3+A9@d 0 -\nsmtputf8\n"
		      "content 7bit\n\n", true },
	};
	for (size_t i = 0; i < sizeof(ut) / sizeof(ut[0]); i++) {
		assert_int_equal(spool_parse_env(ut[i].text, strlen(ut[i].text), &env, &e), 0);
		if (env.smtputf8 != ut[i].utf8)
			fail_msg("smtputf8 case %zu: %d, expected %d", i, env.smtputf8, ut[i].utf8);
		spool_env_free(&env);
	}

	/* data_offset points just past the blank line, whatever follows. */
	const char *withbody = REQ "\nReceived: x\r\n\r\n";
	assert_int_equal(spool_parse_env(withbody, strlen(withbody), &env, &e), 0);
	assert_int_equal(env.data_offset, strlen(REQ) + 1);
	spool_env_free(&env);

	/* An over-long line is refused as such. */
	size_t big = 70 * 1024;
	char *longl = malloc(strlen(REQ) + big + 16);
	strcpy(longl, REQ "helo ");
	size_t l = strlen(longl);
	memset(longl + l, 'h', big);
	memcpy(longl + l + big, "\n\n", 2);
	assert_int_equal(spool_parse_env(longl, l + big + 2, &env, &e), -1);
	assert_non_null(strstr(e.msg, "too long"));
	free(longl);
}

/* Reads the head of queued message id (its envelope text). */
static char *read_head(struct fx *fx, const char *id)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/spool/queue/%s", fx->dir, id);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char *t = calloc(1, 4097);
	size_t n = fread(t, 1, 4096, f);
	fclose(f);
	char *end = strstr(t, "\n\n");
	assert_non_null(end);
	end[2] = '\0';
	assert_true(n > 0);
	return t;
}

/*
 * The writer records whether a message declared BODY=8BITMIME really has
 * a byte above 127: small messages (envelope still in the block buffer at
 * the commit) and large ones (envelope already in the file), the byte at
 * the start, the end or nowhere, written whole and one byte per call.
 */
static void test_content_8bit(void **state)
{
	struct fx *fx = *state;
	enum { BIG = 200 * 1024 };
	static const struct {
		int declared;   /* env.body given to the writer; 3: none, but SMTPUTF8 */
		size_t len;     /* message length */
		long hi;        /* offset of a byte 0xe9, -1 none */
		int back;       /* body read back */
		const char *line; /* content line expected in the file, NULL none */
	} t[] = {
		{ 2, 40, -1, 1, "\ncontent 7bit\n" },
		{ 2, 40, 20, 2, "\ncontent 8bit\n" },
		{ 2, 40, 39, 2, "\ncontent 8bit\n" },
		{ 2, BIG, -1, 1, "\ncontent 7bit\n" },
		{ 2, BIG, 0, 2, "\ncontent 8bit\n" },
		{ 2, BIG, BIG - 1, 2, "\ncontent 8bit\n" },
		{ 2, BIG, 65536 + 13, 2, "\ncontent 8bit\n" },
		{ 1, 40, 20, 1, NULL },
		{ 0, 40, 20, 0, NULL },
		{ 0, 40, -1, 0, NULL },
		{ 3, 40, -1, 0, "\ncontent 7bit\n" },
		{ 3, BIG, 65536 + 13, 0, "\ncontent 8bit\n" },
	};
	char *msg = malloc(BIG);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			for (size_t k = 0; k < t[i].len; k++)
				msg[k] = (k % 64 == 63) ? '\n' : (char)('a' + k % 26);
			if (t[i].hi >= 0)
				msg[t[i].hi] = (char)0xe9;
			struct spool_env env = make_env(1700000000);
			env.body = t[i].declared == 3 ? 0 : t[i].declared;
			env.smtputf8 = t[i].declared == 3;
			struct err e = { "" };
			struct spool_msg *m;
			assert_int_equal(spool_msg_begin(fx->sp, &env, 1700000000000000LL, &m, &e), 0);
			if (bytewise) {
				for (size_t k = 0; k < t[i].len; k++)
					assert_int_equal(spool_msg_write(m, msg + k, 1, &e), 0);
			} else {
				assert_int_equal(spool_msg_write(m, msg, t[i].len, &e), 0);
			}
			char id[QUEUE_ID_LEN + 1];
			strcpy(id, spool_msg_id(m));
			bool ok = false;
			assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 1);
			assert_true(ok);
			struct spool_env back;
			assert_int_equal(spool_read_env(fx->sp, id, &back, &e), 0);
			if (back.body != t[i].back)
				fail_msg("case %zu/%d: body %d, expected %d", i, bytewise, back.body,
					 t[i].back);
			/* SMTPUTF8 is still needed only with an 8-bit byte. */
			if (t[i].declared == 3 && back.smtputf8 != (t[i].hi >= 0))
				fail_msg("case %zu/%d: smtputf8 %d", i, bytewise, back.smtputf8);
			assert_int_equal(back.data_size, t[i].len);
			char *head = read_head(fx, id);
			if (t[i].line)
				assert_non_null(strstr(head, t[i].line));
			else
				assert_null(strstr(head, "\ncontent "));
			/* The message itself is untouched by the patch. */
			int fd = -1;
			assert_int_equal(spool_open_data(fx->sp, id, &fd, &e), 0);
			char *got = malloc(t[i].len + 1);
			size_t have = 0;
			ssize_t r;
			while ((r = read(fd, got + have, t[i].len + 1 - have)) > 0)
				have += (size_t)r;
			close(fd);
			assert_int_equal(have, t[i].len);
			assert_memory_equal(got, msg, t[i].len);
			free(got);
			free(head);
			spool_env_free(&back);
			assert_int_equal(spool_remove(fx->sp, id, false, &e), 0);
		}
	}

	/* Wherever the byte falls against the 8- and 64-byte steps of the
	 * scan, it is seen; and one byte short of each, it is not. */
	for (size_t k = 0; k <= 140; k++) {
		for (int has = 0; has < 2; has++) {
			size_t len = k + 1;
			memset(msg, 'x', len);
			if (has)
				msg[k] = (char)0x80;
			struct spool_env env = make_env(1700000000);
			struct err e = { "" };
			struct spool_msg *m;
			assert_int_equal(spool_msg_begin(fx->sp, &env, 1700000000000000LL, &m, &e), 0);
			/* Odd start address: the scan must not need alignment. */
			char *p = malloc(len + 1);
			memcpy(p + 1, msg, len);
			assert_int_equal(spool_msg_write(m, p + 1, len, &e), 0);
			free(p);
			char id[QUEUE_ID_LEN + 1];
			strcpy(id, spool_msg_id(m));
			bool ok = false;
			assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 1);
			struct spool_env back;
			assert_int_equal(spool_read_env(fx->sp, id, &back, &e), 0);
			if (back.body != (has ? 2 : 1))
				fail_msg("offset %zu has %d: body %d", k, has, back.body);
			spool_env_free(&back);
			assert_int_equal(spool_remove(fx->sp, id, false, &e), 0);
		}
	}
	free(msg);
}

/* format then parse gives the same envelope, for a spread of values. */
static void test_format_parse(void **state)
{
	struct spool_env env = make_env(42);
	queue_id_make(env.id, 42000000, 77, 5);
	struct err e = { "" };
	struct buf t;
	buf_init(&t, 1 << 21);
	assert_int_equal(spool_format_env(&env, &t, &e), 0);
	struct spool_env back;
	assert_int_equal(spool_parse_env((const char *)buf_ptr(&t), buf_len(&t), &back, &e), 0);
	assert_env_equal(&env, &back);
	assert_int_equal(back.data_offset, buf_len(&t));
	spool_env_free(&back);

	/* Too many recipients for the envelope limit: refused by the writer. */
	size_t n = 20000;
	struct spool_rcpt *many = calloc(n, sizeof(*many));
	char *addr = malloc(200);
	memset(addr, 'x', 199);
	addr[199] = '\0';
	for (size_t i = 0; i < n; i++)
		many[i].addr = addr;
	env.rcpts = many;
	env.n_rcpts = n;
	buf_reset(&t);
	assert_int_equal(spool_format_env(&env, &t, &e), -1);
	assert_non_null(strstr(e.msg, "too large"));
	assert_int_equal(buf_len(&t), 0);
	free(addr);
	free(many);
	buf_free(&t);
}

/* ---- a full file system ---------------------------------------------------- */

/* The spool on a 1 MiB tmpfs of its own (needs root; skipped without). */
struct fullfx {
	char dir[64];
	bool mounted;
	struct spool *sp;
};

static int setup_full(void **state)
{
	struct fullfx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/spoolfull.XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	*state = fx;
	if (mount("tmpfs", fx->dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700") < 0)
		return 0; /* the test skips */
	fx->mounted = true;
	return open_sub_spool(fx->dir, &fx->sp);
}

static int teardown_full(void **state)
{
	struct fullfx *fx = *state;
	if (fx->sp) {
		spool_thread_stop(fx->sp);
		spool_close(fx->sp);
	}
	if (fx->mounted)
		umount2(fx->dir, MNT_DETACH);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Writes to <dir>/fill until the file system says it is full. */
static void fill_fs(struct fullfx *fx)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/fill", fx->dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	static char blk[4096];
	memset(blk, 'f', sizeof(blk));
	ssize_t w;
	while ((w = write(fd, blk, sizeof(blk))) > 0)
		;
	assert_int_equal(w, -1);
	assert_int_equal(errno, ENOSPC);
	close(fd);
}

static void unfill_fs(struct fullfx *fx)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/fill", fx->dir);
	assert_int_equal(unlink(path), 0);
}

static size_t count_sub(struct fullfx *fx, const char *sub)
{
	return count_dir(fx->dir, sub);
}

static void test_full_fs(void **state)
{
	struct fullfx *fx = *state;
	if (!fx->mounted)
		skip();
	struct err e = { "" };
	uint64_t before = 0, full = 0, after = 0;
	assert_int_equal(spool_free_space(fx->sp, &before, &e), 0);
	assert_true(before > 512 * 1024 && before <= 1024 * 1024);
	fill_fs(fx);
	assert_int_equal(spool_free_space(fx->sp, &full, &e), 0);
	assert_true(full < 64 * 1024);

	struct spool_env env = make_env(1);
	/* A small message is written by the commit itself: the commit fails,
	 * saying the file system is full. */
	struct spool_msg *m[2];
	bool ok[2];
	enum spool_fail why[2];
	static char body[200 * 1024];
	memset(body, 'a', sizeof(body));
	for (size_t i = 0; i < sizeof(body); i += 100)
		memcpy(body + i + 98, "\r\n", 2);
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &m[0], &e), 0);
	assert_int_equal(spool_msg_write(m[0], body, sizeof(body), &e), -1);
	assert_non_null(strstr(e.msg, "No space left"));
	assert_int_equal(spool_msg_failure(m[0]), SPOOL_FAIL_NOSPACE);
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &m[1], &e), 0);
	assert_int_equal(spool_msg_write(m[1], body, 1000, &e), 0);
	assert_int_equal(spool_msg_failure(m[1]), SPOOL_FAIL_NONE);
	e.msg[0] = '\0';
	assert_int_equal(spool_commit_batch(fx->sp, m, 2, ok, why, &e), 0);
	assert_false(ok[0]);
	assert_false(ok[1]);
	assert_int_equal(why[0], SPOOL_FAIL_NOSPACE);
	assert_int_equal(why[1], SPOOL_FAIL_NOSPACE);
	assert_non_null(strstr(e.msg, "No space left"));
	assert_int_equal(count_sub(fx, "tmp"), 0);
	assert_int_equal(count_sub(fx, "queue"), 0);

	/* The same through the file-system thread. */
	assert_int_equal(spool_thread_start(fx->sp, &e), 0);
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &m[0], &e), 0);
	assert_int_equal(spool_msg_write(m[0], body, 1000, &e), 0);
	why[0] = SPOOL_FAIL_NONE;
	assert_true(spool_commit_submit(fx->sp, m, 1, ok, why));
	spool_commit_wait(fx->sp);
	size_t committed = 9;
	assert_true(spool_commit_collect(fx->sp, &committed, &e));
	assert_int_equal(committed, 0);
	assert_false(ok[0]);
	assert_int_equal(why[0], SPOOL_FAIL_NOSPACE);

	/* Space again: the next message is committed. */
	unfill_fs(fx);
	assert_int_equal(spool_free_space(fx->sp, &after, &e), 0);
	assert_true(after > full + 512 * 1024);
	assert_int_equal(spool_msg_begin(fx->sp, &env, 1000, &m[0], &e), 0);
	assert_int_equal(spool_msg_write(m[0], body, sizeof(body), &e), 0);
	why[0] = SPOOL_FAIL_OTHER;
	assert_true(spool_commit_submit(fx->sp, m, 1, ok, why));
	spool_commit_wait(fx->sp);
	assert_true(spool_commit_collect(fx->sp, &committed, &e));
	assert_int_equal(committed, 1);
	assert_true(ok[0]);
	assert_int_equal(why[0], SPOOL_FAIL_NONE);
	assert_int_equal(count_sub(fx, "queue"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_format),
		cmocka_unit_test(test_id_order),
		cmocka_unit_test_setup_teardown(test_id_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_1mib, setup, teardown),
		cmocka_unit_test_setup_teardown(test_xtext_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_syncfs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_fd_per_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_content_8bit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_fs, setup_full, teardown_full),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_format_parse),
	};
	log_set_level(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
