/* Tests of the sendmail command: message reading, header recipients,
 * Bcc removal, From insertion, and whole runs against a scripted SMTP
 * server on a unix socket. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "daemon/daemon.h"

/* ---- input streams: whole, or one byte per read ------------------------- */

struct cookie {
	const char *p;
	size_t n, pos;
	bool bytewise;
};

static ssize_t ck_read(void *c, char *buf, size_t size)
{
	struct cookie *k = c;
	size_t left = k->n - k->pos;
	size_t take = k->bytewise ? 1 : size;
	if (take > left)
		take = left;
	if (take > size)
		take = size;
	memcpy(buf, k->p + k->pos, take);
	k->pos += take;
	return (ssize_t)take;
}

static FILE *ck_open(struct cookie *k, const char *p, size_t n, bool bytewise)
{
	*k = (struct cookie){ p, n, 0, bytewise };
	FILE *f = fopencookie(k, "r", (cookie_io_functions_t){ .read = ck_read });
	assert_non_null(f);
	if (bytewise)
		setvbuf(f, NULL, _IONBF, 0);
	return f;
}

/* ---- reading ------------------------------------------------------------ */

static const struct read_case {
	const char *in;
	bool dot_ends;
	const char *out;
} read_cases[] = {
	{ "a\nb\n", true, "a\r\nb\r\n" },
	{ "a\r\nb\r\n", true, "a\r\nb\r\n" },
	{ "a\nb", true, "a\r\nb\r\n" },          /* no final line end */
	{ "a\r\nb\r", true, "a\r\nb\r\n" },
	{ "a\n.\nb\n", true, "a\r\n" },          /* "." ends it */
	{ "a\r\n.\r\nb\r\n", true, "a\r\n" },
	{ "a\n.", true, "a\r\n" },               /* "." at EOF */
	{ "a\n.\nb\n", false, "a\r\n.\r\nb\r\n" }, /* -i */
	{ "a\r\n.\r\nb", false, "a\r\n.\r\nb\r\n" },
	{ "a\n..\nb\n", true, "a\r\n..\r\nb\r\n" }, /* not a terminator, not unstuffed */
	{ "a\n.x\n .\n", true, "a\r\n.x\r\n .\r\n" },
	{ ".\n", true, "" },
	{ "a\n.\r", true, "a\r\n" },
	{ "a\n.\r\r\nb\n", true, "a\r\n" },     /* a bare CR ends the "." line */
	{ "a\n.\rx\n", true, "a\r\n" },
	{ "", true, "" },
	{ "\n", true, "\r\n" },
	{ "a\rb\n", true, "a\r\nb\r\n" },        /* a bare CR is a line end */
	{ "0%\r50%\r100%\n", false, "0%\r\n50%\r\n100%\r\n" },
	{ "a\r\r\nb", false, "a\r\n\r\nb\r\n" },
	/* mbox "From " first line: dropped; a header field or a later line is not */
	{ "From x@y Mon Jan  1 00:00:00 2001\nSubject: s\n\nb\n", true,
	  "Subject: s\r\n\r\nb\r\n" },
	{ "From : x@y\n\nb\n", true, "From : x@y\r\n\r\nb\r\n" },
	{ "From: x@y\n\nb\n", true, "From: x@y\r\n\r\nb\r\n" },
	{ "a: b\nFrom x@y Mon\n", true, "a: b\r\nFrom x@y Mon\r\n" },
	{ "a\n\nbody\n", false, "a\r\n\r\nbody\r\n" },
};

static void test_read(void **state)
{
	for (size_t i = 0; i < sizeof(read_cases) / sizeof(read_cases[0]); i++) {
		const struct read_case *t = &read_cases[i];
		for (int bw = 0; bw < 2; bw++) {
			struct cookie k;
			FILE *f = ck_open(&k, t->in, strlen(t->in), bw);
			struct buf out;
			buf_init(&out, 1 << 20);
			struct err e = { "" };
			bool big = true;
			int r = sendmail_read_message(f, t->dot_ends, 1 << 20, &out, &big, &e);
			if (r != 0 || buf_len(&out) != strlen(t->out) ||
			    memcmp(buf_ptr(&out), t->out, buf_len(&out)) != 0)
				fail_msg("case %zu (%s): got \"%.*s\" (%s)", i,
					 bw ? "bytewise" : "whole", (int)buf_len(&out),
					 (const char *)buf_ptr(&out), e.msg);
			assert_false(big);
			buf_free(&out);
			fclose(f);
		}
	}
}

/* RFC 5322 2.1.1: lines of at most 998 octets; a longer one is broken,
 * folded when it is a header field. */
static void test_read_long_lines(void **state)
{
	struct buf in, want;
	buf_init(&in, 1 << 20);
	buf_init(&want, 1 << 20);
	buf_puts(&in, "Subject: ");
	buf_puts(&want, "Subject: ");
	for (int i = 0; i < 1200; i++) {
		buf_puts(&in, "s");
		buf_puts(&want, i == 998 - 9 ? "\r\n s" : "s");
	}
	buf_puts(&in, "\n\n");
	buf_puts(&want, "\r\n\r\n");
	for (int i = 0; i < 2000; i++) {
		buf_puts(&in, "b");
		buf_puts(&want, i == 998 || i == 1996 ? "\r\nb" : "b");
	}
	buf_puts(&in, "\n");
	buf_puts(&want, "\r\n");
	for (int bw = 0; bw < 2; bw++) {
		struct cookie k;
		FILE *f = ck_open(&k, (const char *)buf_ptr(&in), buf_len(&in), bw);
		struct buf out;
		buf_init(&out, 1 << 20);
		struct err e = { "" };
		bool big = true;
		assert_int_equal(sendmail_read_message(f, true, 1 << 20, &out, &big, &e), 0);
		assert_int_equal(buf_len(&out), buf_len(&want));
		assert_memory_equal(buf_ptr(&out), buf_ptr(&want), buf_len(&want));
		buf_free(&out);
		fclose(f);
	}
	buf_free(&in);
	buf_free(&want);
}

static void test_read_limit(void **state)
{
	static const struct {
		const char *in;
		uint64_t max;
		bool big;
	} cases[] = {
		{ "12345678\n", 10, false },   /* exactly 10 with CRLF */
		{ "12345678\r\n", 10, false },
		{ "123456789\n", 10, true },   /* 11 */
		{ "123456789", 10, true },     /* the added line end counts */
		{ "12345678901234567890", 10, true },
		{ "1234\n1234\n", 11, true },
		{ "1234\n1234\n", 12, false },
		{ "1234\n123\n", 11, false },
		{ "1234\n.\n12345678\n", 6, false }, /* stops at the "." */
		{ "1234\n.\r\n12345678\n", 6, false },
		{ "1234\n.x\n", 6, true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (int bw = 0; bw < 2; bw++) {
			struct cookie k;
			FILE *f = ck_open(&k, cases[i].in, strlen(cases[i].in), bw);
			struct buf out;
			buf_init(&out, 1 << 20);
			struct err e = { "" };
			bool big = false;
			int r = sendmail_read_message(f, true, cases[i].max, &out, &big, &e);
			if ((r < 0) != cases[i].big || big != cases[i].big)
				fail_msg("case %zu: r=%d big=%d", i, r, big);
			assert_true(buf_len(&out) <= cases[i].max);
			if (big)
				assert_non_null(strstr(e.msg, "larger"));
			buf_free(&out);
			fclose(f);
		}
	}
}

/* ---- header block ------------------------------------------------------- */

static void test_header_end(void **state)
{
	static const struct {
		const char *msg;
		size_t hl, body;
	} cases[] = {
		{ "A: b\r\n\r\nbody\r\n", 6, 8 },
		{ "A: b\r\n c\r\nB: d\r\n\r\nx\r\n", 16, 18 },
		{ "A: b\r\n\tc\r\n\r\n", 10, 12 },
		{ "body only\r\n", 0, 0 },
		{ "From me@x Mon\r\nA: b\r\n\r\n", 0, 0 }, /* mbox line: no header */
		{ " A: b\r\n\r\n", 0, 0 },
		{ "A: b\r\nnot a header\r\n", 6, 6 },
		{ "A: b\r\n", 6, 6 },
		{ "Subject : x\r\n\r\n", 13, 15 },
		{ "", 0, 0 },
		{ "\r\nbody\r\n", 0, 2 },
		{ ": x\r\n\r\n", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t body = 99;
		size_t hl = sendmail_header_end((const uint8_t *)cases[i].msg, strlen(cases[i].msg),
						&body);
		if (hl != cases[i].hl || body != cases[i].body)
			fail_msg("case %zu: hl=%zu body=%zu", i, hl, body);
	}
}

/* ---- recipients --------------------------------------------------------- */

static void collect(const char *a, size_t len, void *arg)
{
	struct buf *b = arg;
	if (buf_len(b) > 0)
		buf_puts(b, " ");
	buf_append(b, a, len);
}

static const struct rcpt_case {
	const char *hdr;
	int count;          /* -1: error */
	bool resent;
	const char *addrs;  /* space-separated */
} rcpt_cases[] = {
	{ "To: a@x\r\nCc: b@y, c@z\r\nBcc: d@w\r\nSubject: s\r\n", 4, false, "a@x b@y c@z d@w" },
	{ "From: f@x\r\nReply-To: g@x\r\nSender: h@x\r\nTo: a@x\r\n", 1, false, "a@x" },
	{ "TO: a@x\r\ncc: b@y\r\nbCC: c@z\r\n", 3, false, "a@x b@y c@z" },
	/* Folded fields. */
	{ "To: A <a@x>,\r\n  \"B, b\" <b@y>\r\n", 2, false, "a@x b@y" },
	{ "To:\r\n a@x,\r\n\tb@y\r\nCc: c@z\r\n", 3, false, "a@x b@y c@z" },
	{ "To: Ann\r\n <a@x>\r\n", 1, false, "a@x" },
	/* Groups. */
	{ "To: friends: a@x, b@y;, c@z\r\n", 3, false, "a@x b@y c@z" },
	{ "To: undisclosed-recipients:;\r\n", 0, false, "" },
	{ "To: \"odd: name\" <a@x>\r\n", 1, false, "a@x" },
	/* Comments and quoting. */
	{ "To: a@x (Al), (c) b@y\r\n", 2, false, "a@x b@y" },
	{ "To: (x, y: z;) a@x\r\n", 1, false, "a@x" },
	{ "To: \"john doe\"@x\r\n", 1, false, "\"john doe\"@x" },
	{ "To: <@r1,@r2:a@x>\r\n", 1, false, "a@x" },
	{ "To: \"a <b@c>\" <d@e>\r\n", 1, false, "d@e" },
	/* Unqualified local names. */
	{ "To: root, Admin <admin>, x (comment)\r\n", 3, false,
	  "root@host.example admin@host.example x@host.example" },
	/* Resent-* take over. */
	{ "To: a@x\r\nResent-To: r@x\r\nCc: b@y\r\nResent-Bcc: s@y\r\n", 2, true, "r@x s@y" },
	{ "resent-cc: r@x\r\nTo: a@x\r\n", 1, true, "r@x" },
	{ "Resent-From: f@x\r\nTo: a@x\r\n", 1, false, "a@x" },
	/* Errors. */
	{ "To: <a@x\r\n", -1, false, "" },
	{ "To: \"a@x\r\n", -1, false, "" },
	{ "To: (a@x\r\n", -1, false, "" },
	{ "To: John Q. <>, Smith Jones\r\n", -1, false, "" },
	{ "To: \"a\tb\\\x01\"@x\r\n", -1, false, "" },
	{ "", 0, false, "" },
};

static void test_header_rcpts(void **state)
{
	for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct rcpt_case *t = &rcpt_cases[i];
		struct buf got;
		buf_init(&got, 4096);
		struct err e = { "" };
		bool resent = !t->resent;
		int r = sendmail_header_rcpts(t->hdr, strlen(t->hdr), "host.example", &resent,
					      collect, &got, &e);
		const char *g = buf_cstr(&got);
		if (r != t->count || (r >= 0 && strcmp(g, t->addrs) != 0) ||
		    (r >= 0 && resent != t->resent))
			fail_msg("case %zu: r=%d resent=%d got \"%s\" (%s)", i, r, resent, g,
				 e.msg);
		if (r < 0)
			assert_true(e.msg[0] != '\0');
		buf_free(&got);
	}
}

static void test_parse_addrs(void **state)
{
	static const struct {
		const char *in;
		int count;
		const char *addrs;
	} cases[] = {
		{ "a@x", 1, "a@x" },
		{ "a@x,b@y", 2, "a@x b@y" },
		{ "Name <a@x>", 1, "a@x" },
		{ "<a@x>", 1, "a@x" },
		{ "root", 1, "root@host.example" },
		{ "first.last", 1, "first.last@host.example" },
		{ "<>", 0, "" },
		{ "", 0, "" },
		{ ".root", -1, "" },
		{ "ro..ot", -1, "" },
		{ "two words", -1, "" },
		{ "\"a\rb\"@x", -1, "" },   /* would split the SMTP command */
		{ "<a@x> trailing", -1, "" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf got;
		buf_init(&got, 4096);
		struct err e = { "" };
		int r = sendmail_parse_addrs(cases[i].in, strlen(cases[i].in), "host.example",
					     collect, &got, &e);
		const char *g = buf_cstr(&got);
		if (r != cases[i].count || (r >= 0 && strcmp(g, cases[i].addrs) != 0))
			fail_msg("case %zu (%s): r=%d got \"%s\" (%s)", i, cases[i].in, r, g,
				 e.msg);
		buf_free(&got);
	}
	/* Without a domain to qualify with, a bare name is an error. */
	struct buf got;
	buf_init(&got, 64);
	struct err e = { "" };
	assert_int_equal(sendmail_parse_addrs("root", 4, NULL, collect, &got, &e), -1);
	buf_free(&got);
}

/* ---- header edits ------------------------------------------------------- */

static void test_strip_bcc(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "To: a\r\nBcc: b,\r\n c\r\nSubject: s\r\nresent-bcc: x\r\n",
		  "To: a\r\nSubject: s\r\n" },
		{ "BCC : b\r\nTo: a\r\n", "To: a\r\n" },
		{ "Bccx: b\r\nX-Bcc: c\r\n", "Bccx: b\r\nX-Bcc: c\r\n" },
		{ "To: a\r\n", "To: a\r\n" },
		{ "", "" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out;
		buf_init(&out, 4096);
		assert_int_equal(sendmail_strip_bcc(cases[i].in, strlen(cases[i].in), &out), 0);
		assert_string_equal(buf_cstr(&out), cases[i].out);
		buf_free(&out);
	}
	assert_true(sendmail_has_field("To: a\r\nfrom: b\r\n", 16, "From"));
	assert_false(sendmail_has_field("To: a\r\nFromx: b\r\n X\r\n", 21, "From"));
	assert_false(sendmail_has_field("To: a\r\n From: b\r\n", 17, "From"));
}

static void test_from_field(void **state)
{
	static const struct {
		const char *name, *out;
	} cases[] = {
		{ NULL, "From: u@h\r\n" },
		{ "", "From: u@h\r\n" },
		{ "  ", "From: u@h\r\n" },
		{ "Test User", "From: Test User <u@h>\r\n" },
		{ "Smith, John", "From: \"Smith, John\" <u@h>\r\n" },
		{ "J. R.", "From: \"J. R.\" <u@h>\r\n" },
		{ "a\"b\\c", "From: \"a\\\"b\\\\c\" <u@h>\r\n" },
		/* No header injection through the name. */
		{ "Evil\r\nBcc: x@y", "From: \"Evil  Bcc: x@y\" <u@h>\r\n" },
		{ "J\xc3\xb6rg", "From: =?UTF-8?B?SsO2cmc=?= <u@h>\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out;
		buf_init(&out, 4096);
		assert_int_equal(sendmail_from_field(&out, cases[i].name, "u@h"), 0);
		assert_string_equal(buf_cstr(&out), cases[i].out);
		buf_free(&out);
	}
	/* A long non-ASCII name: encoded-words of at most 75 characters,
	 * folded, each decoding to whole UTF-8 characters. */
	char name[400];
	size_t n = 0;
	while (n + 2 < sizeof(name)) {
		name[n++] = '\xc3';
		name[n++] = '\xa9';
	}
	name[n] = '\0';
	struct buf out;
	buf_init(&out, 8192);
	assert_int_equal(sendmail_from_field(&out, name, "u@h"), 0);
	const char *s = buf_cstr(&out);
	assert_non_null(strstr(s, "\r\n =?UTF-8?B?"));
	for (const char *w = strstr(s, "=?"); w; w = strstr(w + 2, "=?")) {
		const char *end = strstr(w, "?=");
		assert_non_null(end);
		assert_true(end + 2 - w <= 75);
		struct buf dec;
		buf_init(&dec, 256);
		assert_int_equal(b64_decode(w + 10, (size_t)(end - w - 10), &dec), 0);
		assert_int_equal(buf_len(&dec) % 2, 0);
		assert_int_equal(buf_ptr(&dec)[0], 0xc3);
		buf_free(&dec);
		w = end;
	}
	buf_free(&out);
}

static void test_prepare(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "To: a@x\r\nBcc: b@y\r\n\r\nbody\r\n",
		  "From: N <u@h>\r\nTo: a@x\r\n\r\nbody\r\n" },
		{ "from: me@x\r\nSubject: s\r\n\r\nb\r\n",
		  "from: me@x\r\nSubject: s\r\n\r\nb\r\n" },
		{ "hello\r\nworld\r\n", "From: N <u@h>\r\n\r\nhello\r\nworld\r\n" },
		{ "To: a@x\r\nhello\r\n", "From: N <u@h>\r\nTo: a@x\r\n\r\nhello\r\n" },
		{ "From: me@x\r\n", "From: me@x\r\n\r\n" },
		{ "", "From: N <u@h>\r\n\r\n" },
		{ "\r\nbody\r\n", "From: N <u@h>\r\n\r\nbody\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf out;
		buf_init(&out, 4096);
		assert_int_equal(sendmail_prepare((const uint8_t *)cases[i].in, strlen(cases[i].in),
						  "N", "u@h", &out),
				 0);
		assert_string_equal(buf_cstr(&out), cases[i].out);
		buf_free(&out);
	}
}

/* ---- whole runs against a scripted server ------------------------------- */

struct srv {
	const char *greeting;
	const char *ehlo;
	const char *mail;
	const char *rcpt_match, *rcpt_match_reply; /* RCPT lines containing it */
	const char *rcpt;
	const char *data;
	const char *end;
};

static const struct srv srv_ok = {
	.greeting = "220 test ESMTP\r\n",
	.ehlo = "250-test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n",
	.mail = "250 2.1.0 ok\r\n",
	.rcpt = "250 2.1.5 ok\r\n",
	.data = "354 go ahead\r\n",
	.end = "250 2.0.0 queued as X\r\n",
};

struct fx {
	char dir[64];
	char sock[128];
	char conf[128];
	char small_conf[128];
	char tr[128];
	char login[256];
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/sendmailtest.XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->sock, sizeof(fx->sock), "%s/sock", fx->dir);
	snprintf(fx->conf, sizeof(fx->conf), "%s/sluice.conf", fx->dir);
	snprintf(fx->small_conf, sizeof(fx->small_conf), "%s/small.conf", fx->dir);
	snprintf(fx->tr, sizeof(fx->tr), "%s/transcript", fx->dir);
	if (write_file(fx->conf, "primary_hostname = test.example\n"
				 "daemon_smtp_ports = 25\n"
				 "sendmail_socket = /nonexistent/sock\n") < 0 ||
	    write_file(fx->small_conf, "primary_hostname = test.example\n"
				       "daemon_smtp_ports = 25\n"
				       "message_size_limit = 1K\n") < 0)
		return -1;
	struct passwd *pw = getpwuid(getuid());
	if (!pw)
		return -1;
	snprintf(fx->login, sizeof(fx->login), "%s", pw->pw_name);
	setenv("SLUICE_SENDMAIL_SOCKET", fx->sock, 1);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	unsetenv("SLUICE_SENDMAIL_SOCKET");
	free(fx);
	return 0;
}

static void srv_send(int fd, const char *s)
{
	if (s)
		(void)send(fd, s, strlen(s), MSG_NOSIGNAL);
}

/* Records every byte received in the transcript file. */
static void serve(const struct srv *s, int lfd, const char *trpath)
{
	int c = accept(lfd, NULL, NULL);
	if (c < 0)
		_exit(1);
	FILE *tr = fopen(trpath, "w");
	if (!tr)
		_exit(1);
	srv_send(c, s->greeting);
	char *acc = NULL;
	size_t alen = 0;
	bool data = false;
	for (;;) {
		char b[4096];
		ssize_t r = recv(c, b, sizeof(b), 0);
		if (r <= 0)
			break;
		acc = realloc(acc, alen + (size_t)r);
		memcpy(acc + alen, b, (size_t)r);
		alen += (size_t)r;
		char *nl;
		while ((nl = memchr(acc, '\n', alen))) {
			size_t n = (size_t)(nl - acc) + 1;
			fwrite(acc, 1, n, tr);
			if (data) {
				if (n == 3 && memcmp(acc, ".\r\n", 3) == 0) {
					data = false;
					srv_send(c, s->end);
				}
			} else if (strncmp(acc, "EHLO", 4) == 0) {
				srv_send(c, s->ehlo);
			} else if (strncmp(acc, "MAIL", 4) == 0) {
				srv_send(c, s->mail);
			} else if (strncmp(acc, "RCPT", 4) == 0) {
				bool m = s->rcpt_match && memmem(acc, n, s->rcpt_match,
								  strlen(s->rcpt_match));
				srv_send(c, m ? s->rcpt_match_reply : s->rcpt);
			} else if (strncmp(acc, "DATA", 4) == 0) {
				srv_send(c, s->data);
				data = strncmp(s->data, "354", 3) == 0;
			} else if (strncmp(acc, "QUIT", 4) == 0) {
				srv_send(c, "221 bye\r\n");
			} else {
				srv_send(c, "500 what\r\n");
			}
			memmove(acc, acc + n, alen - n);
			alen -= n;
		}
	}
	fclose(tr);
	_exit(0);
}

struct run {
	int rc;
	char *tr;   /* what the server received ("" if no server) */
	char *err;  /* what sendmail printed */
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *s = NULL;
	size_t n = 0;
	FILE *m = open_memstream(&s, &n);
	char b[4096];
	size_t r;
	while ((r = fread(b, 1, sizeof(b), f)) > 0)
		fwrite(b, 1, r, m);
	fclose(f);
	fclose(m);
	return s;
}

static void run_sendmail(struct fx *fx, const struct srv *s, const char *conf,
			 const char *const *args, const char *input, struct run *out)
{
	unlink(fx->sock);
	unlink(fx->tr);
	pid_t pid = -1;
	if (s) {
		int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_true(lfd >= 0);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		assert_true(strlen(fx->sock) < sizeof(sa.sun_path));
		memcpy(sa.sun_path, fx->sock, strlen(fx->sock) + 1);
		assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(lfd, 1), 0);
		fflush(NULL);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			serve(s, lfd, fx->tr);
		close(lfd);
	}
	char *argv[32];
	int argc = 0;
	argv[argc++] = "sendmail";
	argv[argc++] = "-C";
	argv[argc++] = (char *)conf;
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	struct cookie k;
	FILE *in = ck_open(&k, input, strlen(input), false);
	size_t elen = 0;
	out->err = NULL;
	FILE *errf = open_memstream(&out->err, &elen);
	out->rc = sendmail_run(argc, argv, in, errf);
	fclose(in);
	fclose(errf);
	if (pid > 0) {
		/* A run that never connected leaves the server in accept():
		 * a connection of our own that says nothing ends it. */
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		memcpy(sa.sun_path, fx->sock, strlen(fx->sock) + 1);
		(void)connect(c, (struct sockaddr *)&sa, sizeof(sa));
		close(c);
		int ws;
		assert_int_equal(waitpid(pid, &ws, 0), pid);
		assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
	}
	out->tr = slurp(fx->tr);
}

struct e2e_case {
	const char *name;
	const struct srv *srv;  /* NULL: no server */
	bool small_conf;
	const char *args[16];
	const char *input;
	int rc;
	const char *tr;         /* expected transcript; NULL = not checked; @LOGIN@ = login */
	const char *err;        /* expected in stderr; NULL = stderr empty */
};

static const struct srv srv_refuse_bad = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "250 ok\r\n",
	.rcpt_match = "bad@", .rcpt_match_reply = "550 5.1.1 no such user\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "250 ok\r\n",
};
static const struct srv srv_refuse_all = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "250 ok\r\n",
	.rcpt = "550 5.7.1 relaying denied\r\n", .data = "354 go\r\n", .end = "250 ok\r\n",
};
static const struct srv srv_452 = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "250 ok\r\n",
	.rcpt_match = "b@", .rcpt_match_reply = "452 4.5.3 too many recipients\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "250 ok\r\n",
};
static const struct srv srv_mail_550 = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "553 5.7.1 not yours\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "250 ok\r\n",
};
static const struct srv srv_end_554 = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "250 ok\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "554 5.6.0 refused content\r\n",
};
static const struct srv srv_end_451 = {
	.greeting = "220 test\r\n", .ehlo = "250 test\r\n", .mail = "250 ok\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "451 4.3.0 try later\r\n",
};
static const struct srv srv_greet_421 = {
	.greeting = "421 4.3.2 shutting down\r\n",
};
/* Greeting filled at run time: one line longer than any reply may be. */
static char long_greeting[3000];
static struct srv srv_long_line = { .greeting = long_greeting };
static const struct srv srv_bad_reply = {
	.greeting = "220 test\r\n", .ehlo = "250-test\r\n251 mixed codes\r\n",
};
static const struct srv srv_no_utf8 = {
	.greeting = "220 test\r\n", .ehlo = "250-test\r\n250 8BITMIME\r\n", .mail = "250 ok\r\n",
	.rcpt = "250 ok\r\n", .data = "354 go\r\n", .end = "250 ok\r\n",
};

/* Filled at run time: more than the 1K message_size_limit of small_conf. */
static char big_input[1200];

static const struct e2e_case e2e_cases[] = {
	{ "all accepted, -t, From added, Bcc removed, dot-stuffing", &srv_ok, false,
	  { "-t", "-F", "Test User", "extra", NULL },
	  "To: a@x.example, B <b@y.example>\nBcc: hidden@z.example,\n a@x.example\nSubject: hi\n"
	  "\nline1\n.dot\n..\n.\nnot part of the message\n",
	  EX_OK,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<@LOGIN@@test.example>\r\n"
	  "RCPT TO:<extra@test.example>\r\n"
	  "RCPT TO:<a@x.example>\r\n"
	  "RCPT TO:<b@y.example>\r\n"
	  "RCPT TO:<hidden@z.example>\r\n"
	  "DATA\r\n"
	  "From: Test User <@LOGIN@@test.example>\r\n"
	  "To: a@x.example, B <b@y.example>\r\n"
	  "Subject: hi\r\n"
	  "\r\n"
	  "line1\r\n"
	  "..dot\r\n"
	  "...\r\n"
	  ".\r\n"
	  "QUIT\r\n",
	  NULL },
	{ "-i, null sender, 8-bit body, DSN options", &srv_ok, false,
	  { "-oi", "-f", "<>", "-N", "success,Failure", "-R", "hdrs", "-V", "id+1=", "--",
	    "a@x.example", NULL },
	  "From: me@x\nSubject: \xc3\xa9\n\n.\nend",
	  EX_OK,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3D\r\n"
	  "RCPT TO:<a@x.example> NOTIFY=SUCCESS,FAILURE\r\n"
	  "DATA\r\n"
	  "From: me@x\r\nSubject: \xc3\xa9\r\n\r\n..\r\nend\r\n.\r\n"
	  "QUIT\r\n",
	  NULL },
	{ "UTF-8 recipient, sender from -f, no header block, bundled -ti", &srv_ok, false,
	  { "-fsender@x.example", "-F", "", "-ti", "j\xc3\xb6rg@x.example", NULL },
	  "no header here\n",
	  EX_OK,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<sender@x.example> SMTPUTF8\r\n"
	  "RCPT TO:<j\xc3\xb6rg@x.example>\r\n"
	  "DATA\r\n"
	  "From: @LOGIN@@test.example\r\n"
	  "\r\n"
	  "no header here\r\n"
	  ".\r\n"
	  "QUIT\r\n",
	  NULL },
	{ "DSN options dropped when the server has no DSN", &srv_no_utf8, false,
	  { "-N", "never", "-f", "s@x", "a@x", NULL },
	  "From: me@x\n\nhi\n",
	  EX_OK,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<s@x>\r\n"
	  "RCPT TO:<a@x>\r\n"
	  "DATA\r\n"
	  "From: me@x\r\n\r\nhi\r\n.\r\n"
	  "QUIT\r\n",
	  NULL },
	{ "UTF-8 address but no SMTPUTF8", &srv_no_utf8, false,
	  { "j\xc3\xb6rg@x.example", NULL }, "From: me@x\n\nhi\n", EX_UNAVAILABLE, NULL,
	  "SMTPUTF8" },
	{ "one recipient refused: sent to the others, 67", &srv_refuse_bad, false,
	  { "-f", "s@x", "a@x", "bad@x", "c@x", NULL },
	  "From: me@x\n\nhi\n",
	  EX_NOUSER,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<s@x>\r\n"
	  "RCPT TO:<a@x>\r\n"
	  "RCPT TO:<bad@x>\r\n"
	  "RCPT TO:<c@x>\r\n"
	  "DATA\r\n"
	  "From: me@x\r\n\r\nhi\r\n.\r\n"
	  "QUIT\r\n",
	  "sendmail: bad@x: 550 5.1.1 no such user\n" },
	{ "all recipients refused: nothing sent, 67", &srv_refuse_all, false,
	  { "-f", "s@x", "a@x", "b@x", NULL },
	  "From: me@x\n\nhi\n",
	  EX_NOUSER,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<s@x>\r\n"
	  "RCPT TO:<a@x>\r\n"
	  "RCPT TO:<b@x>\r\n"
	  "QUIT\r\n",
	  "sendmail: b@x: 550 5.7.1 relaying denied\n" },
	{ "452 on one RCPT: whole message deferred, 75", &srv_452, false,
	  { "-f", "s@x", "a@x", "b@x", NULL },
	  "From: me@x\n\nhi\n",
	  EX_TEMPFAIL,
	  "EHLO localhost\r\n"
	  "MAIL FROM:<s@x>\r\n"
	  "RCPT TO:<a@x>\r\n"
	  "RCPT TO:<b@x>\r\n"
	  "QUIT\r\n",
	  "sendmail: b@x: 452 4.5.3 too many recipients\n" },
	{ "server absent: 75", NULL, false, { "a@x", NULL }, "hi\n", EX_TEMPFAIL, "",
	  "sendmail: cannot reach the sluice daemon at " },
	{ "sender refused: 65", &srv_mail_550, false, { "-f", "s@x", "a@x", NULL }, "hi\n",
	  EX_DATAERR, "EHLO localhost\r\nMAIL FROM:<s@x>\r\nQUIT\r\n",
	  "sendmail: s@x: 553 5.7.1 not yours\n" },
	{ "message refused after data: 65", &srv_end_554, false, { "a@x", NULL }, "hi\n",
	  EX_DATAERR, NULL, "554 5.6.0 refused content" },
	{ "message deferred after data: 75", &srv_end_451, false, { "a@x", NULL }, "hi\n",
	  EX_TEMPFAIL, NULL, "451 4.3.0 try later" },
	{ "greeting 421: 75", &srv_greet_421, false, { "a@x", NULL }, "hi\n", EX_TEMPFAIL, "",
	  "421 4.3.2 shutting down" },
	{ "reply line too long: 75", &srv_long_line, false, { "a@x", NULL }, "hi\n", EX_TEMPFAIL,
	  "", "reply line longer than" },
	{ "inconsistent multiline reply: 75", &srv_bad_reply, false, { "a@x", NULL }, "hi\n",
	  EX_TEMPFAIL, "EHLO localhost\r\n", "malformed reply" },
	{ "message over message_size_limit: 65, nothing sent", &srv_ok, true, { "a@x", NULL },
	  big_input,
	  EX_DATAERR, "", "message too big" },
	{ "no recipients: 64", &srv_ok, false, { "-i", NULL }, "hi\n", EX_USAGE, "",
	  "no recipients" },
	{ "-t without recipients in the header: 64", &srv_ok, false, { "-t", NULL },
	  "Subject: x\n\nhi\n", EX_USAGE, "", "no recipients" },
	{ "-t with a broken To: 65", &srv_ok, false, { "-t", NULL }, "To: <a@x\n\nhi\n",
	  EX_DATAERR, "", "To: unterminated" },
	{ "unknown option: 64", &srv_ok, false, { "-X", "a@x", NULL }, "hi\n", EX_USAGE, "",
	  "unknown option: -X" },
	{ "bad -N: 64", &srv_ok, false, { "-N", "sometimes", "a@x", NULL }, "hi\n", EX_USAGE, "",
	  "bad -N value" },
	{ "-f without value: 64", &srv_ok, false, { "-f", NULL }, "hi\n", EX_USAGE, "",
	  "needs a value" },
	{ "ignored compatibility options", &srv_ok, false,
	  { "-bm", "-oem", "-odi", "-v", "-em", "-B", "8BITMIME", "-f", "s@x", "a@x", NULL },
	  "From: me@x\n\nhi\n", EX_OK,
	  "EHLO localhost\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nDATA\r\n"
	  "From: me@x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
	  NULL },
	{ "other MTAs' options programs pass along", &srv_ok, false,
	  { "-Am", "-G", "-L", "mytag", "-h", "3", "-ODeliveryMode=b", "-O", "x=y", "-oMr",
	    "local", "-f", "s@x", "a@x", NULL },
	  "From: me@x\n\nhi\n", EX_OK,
	  "EHLO localhost\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nDATA\r\n"
	  "From: me@x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
	  NULL },
	{ "-oMr without its value: 64", &srv_ok, false, { "-oMr", NULL }, "hi\n", EX_USAGE, "",
	  "option needs a value" },
};

/* The expected transcript with @LOGIN@ replaced by the caller's name. */
static char *subst_login(const char *t, const char *login)
{
	char *s = NULL;
	size_t n = 0;
	FILE *m = open_memstream(&s, &n);
	for (const char *p; (p = strstr(t, "@LOGIN@")); t = p + 7) {
		fwrite(t, 1, (size_t)(p - t), m);
		fputs(login, m);
	}
	fputs(t, m);
	fclose(m);
	return s;
}

static void test_e2e(void **state)
{
	struct fx *fx = *state;
	memset(big_input, 'x', sizeof(big_input) - 1);
	big_input[1] = '\n';
	memset(long_greeting, 'x', sizeof(long_greeting));
	memcpy(long_greeting, "220-", 4);
	memcpy(long_greeting + sizeof(long_greeting) - 11, "\r\n220 ok\r\n", 11);
	for (size_t i = 0; i < sizeof(e2e_cases) / sizeof(e2e_cases[0]); i++) {
		const struct e2e_case *t = &e2e_cases[i];
		struct run r;
		run_sendmail(fx, t->srv, t->small_conf ? fx->small_conf : fx->conf, t->args,
			     t->input, &r);
		if (r.rc != t->rc)
			fail_msg("%s: exit %d, want %d; stderr: %s", t->name, r.rc, t->rc, r.err);
		if (t->err ? !strstr(r.err, t->err) : r.err[0] != '\0')
			fail_msg("%s: stderr \"%s\"", t->name, r.err);
		if (t->tr) {
			char *want = subst_login(t->tr, fx->login);
			if (strcmp(r.tr, want) != 0)
				fail_msg("%s: server received\n%s\nwant\n%s", t->name, r.tr, want);
			free(want);
		}
		free(r.tr);
		free(r.err);
	}
}

/* An explicit configuration that cannot be read is an error, not a
 * silent fallback. */
static void test_conf_missing(void **state)
{
	struct fx *fx = *state;
	char path[160];
	snprintf(path, sizeof(path), "%s/absent.conf", fx->dir);
	const char *args[] = { "a@x", NULL };
	struct run r;
	run_sendmail(fx, NULL, path, args, "hi\n", &r);
	assert_int_equal(r.rc, EX_CONFIG);
	assert_non_null(strstr(r.err, "absent.conf"));
	free(r.tr);
	free(r.err);
}

/* Without the environment variable, the configured socket is used. */
static void test_conf_socket(void **state)
{
	struct fx *fx = *state;
	char path[160], text[300];
	snprintf(path, sizeof(path), "%s/sock.conf", fx->dir);
	snprintf(text, sizeof(text),
		 "primary_hostname = test.example\ndaemon_smtp_ports = 25\nsendmail_socket = %s\n",
		 fx->sock);
	assert_int_equal(write_file(path, text), 0);
	unsetenv("SLUICE_SENDMAIL_SOCKET");
	const char *args[] = { "-f", "s@x", "a@x", NULL };
	struct run r;
	run_sendmail(fx, &srv_ok, path, args, "From: me@x\n\nhi\n", &r);
	assert_int_equal(r.rc, EX_OK);
	assert_string_equal(r.tr, "EHLO localhost\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nDATA\r\n"
				  "From: me@x\r\n\r\nhi\r\n.\r\nQUIT\r\n");
	free(r.tr);
	free(r.err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read),
		cmocka_unit_test(test_read_long_lines),
		cmocka_unit_test(test_read_limit),
		cmocka_unit_test(test_header_end),
		cmocka_unit_test(test_header_rcpts),
		cmocka_unit_test(test_parse_addrs),
		cmocka_unit_test(test_strip_bcc),
		cmocka_unit_test(test_from_field),
		cmocka_unit_test(test_prepare),
		cmocka_unit_test_setup_teardown(test_e2e, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conf_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conf_socket, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
