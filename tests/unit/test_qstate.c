/* Tests of the delivery state kept beside queued messages: the text
 * format, its strict parser, the files in state/, spool_remove and the
 * recovery of state files left behind. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue/queue.h"

/* ---- helpers --------------------------------------------------------------- */

static bool s_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static void assert_state_equal(const struct spool_state *a, const struct spool_state *b)
{
	assert_int_equal(a->attempts, b->attempts);
	assert_int_equal(a->next_try, b->next_try);
	assert_int_equal(a->warned, b->warned);
	assert_int_equal(a->giveup, b->giveup);
	assert_int_equal(a->n_rcpts, b->n_rcpts);
	for (size_t i = 0; i < a->n_rcpts; i++) {
		assert_int_equal(a->rcpts[i].status, b->rcpts[i].status);
		if (!s_eq(a->rcpts[i].last, b->rcpts[i].last))
			fail_msg("rcpt %zu: \"%s\" vs \"%s\"", i,
				 a->rcpts[i].last ? a->rcpts[i].last : "(null)",
				 b->rcpts[i].last ? b->rcpts[i].last : "(null)");
	}
}

/* A state whose texts cover every xtext case: spaces, '+', '=', the
 * placeholder "-" itself, line ends and UTF-8. */
static void make_state(struct spool_state *st)
{
	spool_state_init(st, 5);
	st->attempts = 7;
	st->next_try = 1700003600;
	st->warned = true;
	st->giveup = false;
	st->rcpts[0].status = SPOOL_RCPT_PENDING;
	st->rcpts[1].status = SPOOL_RCPT_DELIVERED;
	st->rcpts[1].last = str_dup("250 2.0.0 Ok: queued as 4F2x+y=z");
	st->rcpts[2].status = SPOOL_RCPT_FAILED;
	st->rcpts[2].last = str_dup("550-5.1.1 no\r\n550 5.1.1 such user \xc3\xa9");
	st->rcpts[3].status = SPOOL_RCPT_PENDING;
	st->rcpts[3].last = str_dup("-");
	st->rcpts[4].status = SPOOL_RCPT_FAILED;
	st->rcpts[4].last = str_dup("--");
}

static const char state_text[] = "sluice-state 1\n"
				 "attempts 7\n"
				 "next 1700003600\n"
				 "warned 1\n"
				 "giveup 0\n"
				 "rcpt 0 pending -\n"
				 "rcpt 1 delivered 250+202.0.0+20Ok:+20queued+20as+204F2x+2By+3Dz\n"
				 "rcpt 2 failed 550-5.1.1+20no+0D+0A550+205.1.1+20such+20user+20+C3+A9\n"
				 "rcpt 3 pending +2D\n"
				 "rcpt 4 failed --\n";

/* ---- text ------------------------------------------------------------------ */

static void test_format_parse(void **state)
{
	struct spool_state st, back;
	struct err e = { "" };
	struct buf out;
	make_state(&st);
	buf_init(&out, 1 << 20);
	assert_int_equal(spool_state_format(&st, &out, &e), 0);
	assert_int_equal(buf_len(&out), strlen(state_text));
	assert_memory_equal(buf_ptr(&out), state_text, strlen(state_text));
	assert_int_equal(spool_state_parse(state_text, strlen(state_text), 5, &back, &e), 0);
	assert_state_equal(&st, &back);
	spool_state_free(&back);

	/* Every cut of the text short of its end is refused: a file written
	 * halfway never passes for a whole one. */
	for (size_t n = 0; n < strlen(state_text); n++) {
		char *copy = malloc(n + 1);
		memcpy(copy, state_text, n);
		if (spool_state_parse(copy, n, 5, &back, &e) == 0)
			fail_msg("prefix of %zu bytes accepted", n);
		assert_null(back.rcpts);
		free(copy);
	}

	/* rcpt lines may come in any order */
	const char *shuffled = "sluice-state 1\nattempts 0\nnext 0\nwarned 0\ngiveup 1\n"
			       "rcpt 1 failed x\nrcpt 0 delivered y\n";
	assert_int_equal(spool_state_parse(shuffled, strlen(shuffled), 2, &back, &e), 0);
	assert_true(back.giveup);
	assert_int_equal(back.rcpts[0].status, SPOOL_RCPT_DELIVERED);
	assert_string_equal(back.rcpts[0].last, "y");
	assert_int_equal(back.rcpts[1].status, SPOOL_RCPT_FAILED);
	spool_state_free(&back);

	/* extremes of the numbers */
	const char *big = "sluice-state 1\nattempts 4294967295\nnext 9223372036854775807\n"
			  "warned 0\ngiveup 0\nrcpt 0 pending -\n";
	assert_int_equal(spool_state_parse(big, strlen(big), 1, &back, &e), 0);
	assert_int_equal(back.attempts, 4294967295u);
	assert_int_equal(back.next_try, INT64_MAX);
	buf_reset(&out);
	assert_int_equal(spool_state_format(&back, &out, &e), 0);
	assert_memory_equal(buf_ptr(&out), big, strlen(big));
	spool_state_free(&back);
	spool_state_free(&st);
	buf_free(&out);
}

static void test_init_free(void **state)
{
	struct spool_state st;
	spool_state_init(&st, 3);
	assert_int_equal(st.n_rcpts, 3);
	assert_int_equal(st.attempts, 0);
	assert_int_equal(st.next_try, 0);
	assert_false(st.warned);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(st.rcpts[i].status, SPOOL_RCPT_PENDING);
		assert_null(st.rcpts[i].last);
	}
	spool_state_free(&st);
	assert_null(st.rcpts);
	assert_int_equal(st.n_rcpts, 0);
	spool_state_free(&st); /* twice is harmless */
	spool_state_free(NULL);
}

static void test_format_limits(void **state)
{
	struct spool_state st, back;
	struct err e = { "" };
	struct buf out;
	buf_init(&out, 1 << 20);
	spool_state_init(&st, 2);
	/* a reply far longer than what is kept: cut, and the cut reads back */
	st.rcpts[0].last = malloc(10001);
	memset(st.rcpts[0].last, 'x', 10000);
	st.rcpts[0].last[10000] = '\0';
	/* cut inside a UTF-8 character: the character goes whole */
	st.rcpts[1].last = malloc(3001);
	memset(st.rcpts[1].last, 'y', 3000);
	memcpy(st.rcpts[1].last + 2046, "\xe2\x82\xac", 3);
	st.rcpts[1].last[3000] = '\0';
	assert_int_equal(spool_state_format(&st, &out, &e), 0);
	assert_int_equal(spool_state_parse((const char *)buf_ptr(&out), buf_len(&out), 2, &back, &e),
			 0);
	assert_int_equal(strlen(back.rcpts[0].last), 2048);
	assert_int_equal(strlen(back.rcpts[1].last), 2046);
	spool_state_free(&back);

	/* an empty text is no text */
	free(st.rcpts[0].last);
	st.rcpts[0].last = str_dup("");
	buf_reset(&out);
	assert_int_equal(spool_state_format(&st, &out, &e), 0);
	assert_int_equal(spool_state_parse((const char *)buf_ptr(&out), buf_len(&out), 2, &back, &e),
			 0);
	assert_null(back.rcpts[0].last);
	spool_state_free(&back);

	/* refused: negative time, unknown status; out is left as it was */
	buf_reset(&out);
	buf_puts(&out, "keep");
	st.next_try = -1;
	assert_int_equal(spool_state_format(&st, &out, &e), -1);
	st.next_try = 0;
	st.rcpts[1].status = (enum spool_rcpt_status)3;
	assert_int_equal(spool_state_format(&st, &out, &e), -1);
	assert_int_equal(buf_len(&out), 4);
	st.rcpts[1].status = SPOOL_RCPT_PENDING;
	/* output limit */
	struct buf small;
	buf_init(&small, 40);
	assert_int_equal(spool_state_format(&st, &small, &e), -1);
	assert_int_equal(buf_len(&small), 0);
	buf_free(&small);
	spool_state_free(&st);
	buf_free(&out);
}

#define HEAD "sluice-state 1\nattempts 1\nnext 5\nwarned 0\ngiveup 0\n"

static void test_parse_malformed(void **state)
{
	static const struct {
		const char *text;
		size_t n_rcpts;
		const char *why;
	} t[] = {
		{ "", 1, "empty" },
		{ "sluice-state 2\nattempts 1\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "other version" },
		{ "sluice-spool 1\nattempts 1\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "spool magic" },
		{ HEAD "rcpt 0 pending -", 1, "no final newline" },
		{ HEAD "rcpt 0 pending -\n\n", 1, "trailing blank line" },
		{ HEAD "rcpt 0 pending -\nx\n", 1, "trailing garbage" },
		{ "sluice-state 1\r\nattempts 1\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "CRLF" },
		{ "sluice-state 1\nnext 5\nattempts 1\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "order" },
		{ "sluice-state 1\nattempts -1\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "negative attempts" },
		{ "sluice-state 1\nattempts 01\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "leading zero" },
		{ "sluice-state 1\nattempts 4294967296\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n",
		  1, "attempts overflow" },
		{ "sluice-state 1\nattempts 1\nnext 9223372036854775808\nwarned 0\ngiveup 0\n"
		  "rcpt 0 pending -\n",
		  1, "next overflow" },
		{ "sluice-state 1\nattempts 1\nnext -5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "negative next" },
		{ "sluice-state 1\nattempts 1\nnext 5\nwarned 2\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "warned 2" },
		{ "sluice-state 1\nattempts 1\nnext 5\nwarned 0\ngiveup \nrcpt 0 pending -\n", 1,
		  "giveup empty" },
		{ "sluice-state 1\nattempts  1\nnext 5\nwarned 0\ngiveup 0\nrcpt 0 pending -\n", 1,
		  "two spaces" },
		{ "sluice-state 1\nattempts 1\nnext 5\nwarned 0\ngiveup 0\n", 1, "rcpt missing" },
		{ HEAD "rcpt 0 pending -\n", 2, "one of two rcpt lines" },
		{ HEAD "rcpt 1 pending -\n", 1, "index out of range" },
		{ HEAD "rcpt 0 pending -\nrcpt 0 failed -\n", 2, "duplicate index" },
		{ HEAD "rcpt 0 pending -\nrcpt 1 pending -\n", 1, "more lines than recipients" },
		{ HEAD "rcpt 00 pending -\n", 1, "index leading zero" },
		{ HEAD "rcpt x pending -\n", 1, "index not a number" },
		{ HEAD "rcpt 18446744073709551616 pending -\n", 1, "index overflow" },
		{ HEAD "rcpt 0 done -\n", 1, "unknown status" },
		{ HEAD "rcpt 0 Pending -\n", 1, "status case" },
		{ HEAD "rcpt 0 pending\n", 1, "no text field" },
		{ HEAD "rcpt 0 pending \n", 1, "empty text field" },
		{ HEAD "rcpt 0 pending a b\n", 1, "space in text" },
		{ HEAD "rcpt 0 pending +4\n", 1, "short hex" },
		{ HEAD "rcpt 0 pending +2d\n", 1, "lowercase hex" },
		{ HEAD "rcpt 0 pending a+00b\n", 1, "NUL" },
		{ HEAD "rcpt 0 pending a=b\n", 1, "raw =" },
		{ HEAD "rcpt 0 pending \xc3\xa9\n", 1, "raw 8-bit" },
		{ HEAD "rcpt 0 pending a\tb\n", 1, "tab" },
		{ HEAD "rcpt  0 pending -\n", 1, "double space" },
		{ HEAD "rcpt 0 pending -\n", (size_t)-1, "absurd recipient count" },
		{ HEAD "rcpt 0 pending -\n", 1000, "more recipients than the text can hold" },
		{ HEAD "rcpt 0 pending -\n", 0, "rcpt line for no recipients" },
	};
	struct err e;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct spool_state st;
		e.msg[0] = '\0';
		if (spool_state_parse(t[i].text, strlen(t[i].text), t[i].n_rcpts, &st, &e) == 0) {
			spool_state_free(&st);
			fail_msg("accepted: %s", t[i].why);
		}
		assert_true(e.msg[0] != '\0');
		assert_null(st.rcpts);
		assert_int_equal(st.n_rcpts, 0);
	}

	/* A NUL byte inside the text (not xtext-encoded) is refused too. */
	struct spool_state st;
	char withnul[] = HEAD "rcpt 0 pending a\0b\n";
	assert_int_equal(spool_state_parse(withnul, sizeof(withnul) - 1, 1, &st, &e), -1);

	/* A text longer than what the writer keeps cannot have come from it. */
	struct buf big;
	buf_init(&big, 1 << 20);
	buf_puts(&big, HEAD "rcpt 0 pending ");
	for (int i = 0; i < 2049; i++)
		buf_puts(&big, "a");
	buf_puts(&big, "\n");
	assert_int_equal(spool_state_parse((const char *)buf_ptr(&big), buf_len(&big), 1, &st, &e),
			 -1);
	/* ... while 2048 bytes, even hex-encoded, are fine */
	buf_reset(&big);
	buf_puts(&big, HEAD "rcpt 0 pending ");
	for (int i = 0; i < 2048; i++)
		buf_puts(&big, "+20");
	buf_puts(&big, "\n");
	assert_int_equal(spool_state_parse((const char *)buf_ptr(&big), buf_len(&big), 1, &st, &e),
			 0);
	assert_int_equal(strlen(st.rcpts[0].last), 2048);
	spool_state_free(&st);
	/* and no recipients at all is a well-formed (if odd) state */
	assert_int_equal(spool_state_parse(HEAD, strlen(HEAD), 0, &st, &e), 0);
	assert_int_equal(st.n_rcpts, 0);
	spool_state_free(&st);
	buf_free(&big);
}

/* ---- files ----------------------------------------------------------------- */

struct fx {
	char dir[64];
	char spool[96];
	struct spool *sp;
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/qstatetest.XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->spool, sizeof(fx->spool), "%s/spool", fx->dir);
	struct err e = { "" };
	if (spool_open(fx->spool, &fx->sp, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
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

static bool file_exists(struct fx *fx, const char *sub, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s/%s", fx->spool, sub, name);
	struct stat st;
	return lstat(path, &st) == 0;
}

static void write_file(struct fx *fx, const char *sub, const char *name, const char *text)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s/%s", fx->spool, sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static size_t count_entries(struct fx *fx, const char *sub)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/%s", fx->spool, sub);
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

static struct spool_rcpt rcpts[] = {
	{ "bob@example.net", 0, NULL }, { "carol@example.net", 0, NULL },
	{ "dave@example.net", 0, NULL }, { "erin@example.net", 0, NULL },
	{ "frank@example.net", 0, NULL },
};

static void put_message(struct fx *fx, int64_t now_us, char id[QUEUE_ID_LEN + 1])
{
	struct spool_env env = { 0 };
	env.role = "mx";
	env.client_ip = "192.0.2.7";
	env.sender = "alice@example.org";
	env.rcpts = rcpts;
	env.n_rcpts = 5;
	struct err e = { "" };
	struct spool_msg *m;
	assert_int_equal(spool_msg_begin(fx->sp, &env, now_us, &m, &e), 0);
	assert_int_equal(spool_msg_write(m, "Subject: x\r\n\r\nhi\r\n", 18, &e), 0);
	snprintf(id, QUEUE_ID_LEN + 1, "%s", spool_msg_id(m));
	bool ok = false;
	assert_int_equal(spool_commit_batch(fx->sp, &m, 1, &ok, NULL, &e), 1);
	assert_true(ok);
}

static void test_state_files(void **state)
{
	struct fx *fx = *state;
	struct err e = { "" };
	char id[QUEUE_ID_LEN + 1];
	put_message(fx, 1700000000000000LL, id);
	assert_true(file_exists(fx, ".", "state"));
	assert_true(spool_state_dirfd(fx->sp) >= 0);

	/* never tried: a fresh state */
	struct spool_state st, back;
	assert_int_equal(spool_state_read(fx->sp, id, 5, &back, &e), 0);
	assert_int_equal(back.n_rcpts, 5);
	assert_int_equal(back.attempts, 0);
	assert_int_equal(back.next_try, 0);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(back.rcpts[i].status, SPOOL_RCPT_PENDING);
	spool_state_free(&back);
	assert_false(file_exists(fx, "state", id));

	/* written, read back, replaced */
	make_state(&st);
	assert_int_equal(spool_state_write(fx->sp, id, &st, &e), 0);
	assert_true(file_exists(fx, "state", id));
	assert_int_equal(count_entries(fx, "state"), 1); /* no temporary left */
	assert_int_equal(spool_state_read(fx->sp, id, 5, &back, &e), 0);
	assert_state_equal(&st, &back);
	spool_state_free(&back);
	st.attempts = 8;
	st.rcpts[0].status = SPOOL_RCPT_DELIVERED;
	assert_int_equal(spool_state_write(fx->sp, id, &st, &e), 0);
	assert_int_equal(count_entries(fx, "state"), 1);
	assert_int_equal(spool_state_read(fx->sp, id, 5, &back, &e), 0);
	assert_state_equal(&st, &back);
	spool_state_free(&back);

	/* the wrong recipient count, a damaged file, a bad id: errors */
	assert_int_equal(spool_state_read(fx->sp, id, 4, &back, &e), -1);
	assert_non_null(strstr(e.msg, id));
	assert_int_equal(spool_state_read(fx->sp, "../queue/x", 5, &back, &e), -1);
	assert_int_equal(spool_state_write(fx->sp, "nope", &st, &e), -1);
	write_file(fx, "state", id, "sluice-state 1\nattempts 1\n");
	assert_int_equal(spool_state_read(fx->sp, id, 5, &back, &e), -1);
	assert_null(back.rcpts);
	/* a state that cannot be written leaves the old file */
	st.next_try = -1;
	assert_int_equal(spool_state_write(fx->sp, id, &st, &e), -1);
	st.next_try = 0;
	assert_int_equal(count_entries(fx, "state"), 1);
	/* a directory where the file should be */
	char other[QUEUE_ID_LEN + 1];
	queue_id_make(other, 1600000000000000LL, 1, 1);
	char path[256];
	snprintf(path, sizeof(path), "%s/state/%s", fx->spool, other);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(spool_state_read(fx->sp, other, 5, &back, &e), -1);
	assert_int_equal(rmdir(path), 0);

	/* done: both files go; twice is fine */
	assert_int_equal(spool_state_write(fx->sp, id, &st, &e), 0);
	uint64_t syncs = spool_fsync_count();
	assert_int_equal(spool_remove(fx->sp, id, true, &e), 0);
	/* an administrator's removal syncs queue/ and state/ */
	assert_int_equal(spool_fsync_count() - syncs, 2);
	assert_false(file_exists(fx, "queue", id));
	assert_false(file_exists(fx, "state", id));
	assert_int_equal(spool_remove(fx->sp, id, true, &e), 0);
	assert_int_equal(spool_remove(fx->sp, "bad/id", true, &e), -1);
	/* a message never tried has no state file: removal still works; the
	 * removal after a delivery syncs nothing */
	put_message(fx, 1700000000000001LL, id);
	syncs = spool_fsync_count();
	assert_int_equal(spool_remove(fx->sp, id, false, &e), 0);
	assert_int_equal(spool_fsync_count(), syncs);
	assert_false(file_exists(fx, "queue", id));
	/* with a state file, even a removal after a delivery syncs queue/
	 * once before the state goes (never a message without its state) */
	put_message(fx, 1700000000000002LL, id);
	assert_int_equal(spool_state_write(fx->sp, id, &st, &e), 0);
	syncs = spool_fsync_count();
	assert_int_equal(spool_remove(fx->sp, id, false, &e), 0);
	assert_int_equal(spool_fsync_count() - syncs, 1);
	assert_false(file_exists(fx, "queue", id));
	assert_false(file_exists(fx, "state", id));
	size_t n = 9;
	assert_int_equal(spool_count(fx->sp, &n, &e), 0);
	assert_int_equal(n, 0);
	spool_state_free(&st);
}

static void test_recover_state(void **state)
{
	struct fx *fx = *state;
	struct err e = { "" };
	char live[QUEUE_ID_LEN + 1], damaged[QUEUE_ID_LEN + 1], orphan[QUEUE_ID_LEN + 1];
	put_message(fx, 1700000000000000LL, live);
	struct spool_state st;
	make_state(&st);
	assert_int_equal(spool_state_write(fx->sp, live, &st, &e), 0);
	/* a queue file that will be set aside as damaged, with a state */
	queue_id_make(damaged, 1600000000000000LL, 1, 1);
	write_file(fx, "queue", damaged, "garbage\n\n");
	assert_int_equal(spool_state_write(fx->sp, damaged, &st, &e), 0);
	/* a state whose message was removed before the crash */
	queue_id_make(orphan, 1600000000000000LL, 1, 2);
	assert_int_equal(spool_state_write(fx->sp, orphan, &st, &e), 0);
	/* an unfinished write of the live message's state */
	char tmpname[64];
	snprintf(tmpname, sizeof(tmpname), "%s.tmp.1234.0", live);
	write_file(fx, "state", tmpname, "sluice-state 1\n");
	/* strangers: left alone */
	write_file(fx, "state", "README", "x");
	char path[256];
	snprintf(path, sizeof(path), "%s/state/subdir", fx->spool);
	assert_int_equal(mkdir(path, 0700), 0);
	spool_state_free(&st);

	char logpath[128];
	snprintf(logpath, sizeof(logpath), "%s/log", fx->dir);
	assert_int_equal(log_to_file(logpath, &e), 0);
	log_set_level(LOG_LVL_INFO);
	size_t counts[3];
	assert_int_equal(spool_recover(fx->sp, counts, &e), 0);
	log_set_level(LOG_LVL_ERR);
	log_to_stderr();
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 1);

	assert_true(file_exists(fx, "state", live));
	assert_false(file_exists(fx, "state", damaged));
	assert_false(file_exists(fx, "state", orphan));
	assert_false(file_exists(fx, "state", tmpname));
	assert_true(file_exists(fx, "state", "README"));
	assert_true(file_exists(fx, "state", "subdir"));
	assert_int_equal(count_entries(fx, "state"), 3);

	struct buf lb;
	buf_init(&lb, 1 << 20);
	assert_int_equal(fs_read_file(logpath, &lb, &e), 0);
	const char *logtext = buf_cstr(&lb);
	char want[160];
	snprintf(want, sizeof(want), "event=spool_recover_state_orphan id=%s", orphan);
	assert_non_null(strstr(logtext, want));
	snprintf(want, sizeof(want), "event=spool_recover_state_orphan id=%s", damaged);
	assert_non_null(strstr(logtext, want));
	snprintf(want, sizeof(want), "event=spool_recover_state_tmp file=\"%s\"", tmpname);
	assert_non_null(strstr(logtext, want));
	assert_non_null(strstr(logtext, "README"));
	assert_non_null(strstr(logtext, "subdir"));
	buf_free(&lb);

	/* the live message's state is intact */
	struct spool_state back;
	assert_int_equal(spool_state_read(fx->sp, live, 5, &back, &e), 0);
	assert_int_equal(back.attempts, 7);
	spool_state_free(&back);

	/* nothing left to do: nothing changes */
	assert_int_equal(spool_recover(fx->sp, counts, &e), 0);
	assert_int_equal(count_entries(fx, "state"), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_parse),
		cmocka_unit_test(test_init_free),
		cmocka_unit_test(test_format_limits),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test_setup_teardown(test_state_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_state, setup, teardown),
	};
	log_set_level(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
