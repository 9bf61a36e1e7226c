/*
 * Unit tests of the SMTP command, parameter, path and xtext parsers.
 * Inputs are copied into exactly-sized heap blocks so that the address
 * sanitizer reports any read past the given length, and every input is
 * parsed whole and again at every shorter length.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

/* An exactly-sized copy: one byte past the end is outside the block. */
static char *exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

static void assert_view(const char *view, size_t len, const char *want)
{
	if (!want) {
		assert_null(view);
		return;
	}
	assert_non_null(view);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(view, want, len);
}

/* ---- smtp_parse_cmd -------------------------------------------------- */

struct cmd_case {
	const char *line;
	size_t len; /* 0: strlen */
	enum smtp_verb verb;
	const char *arg;
};

static const struct cmd_case cmd_cases[] = {
	{ "HELO example.com", 0, SMTP_CMD_HELO, "example.com" },
	{ "ehlo  client.example   ", 0, SMTP_CMD_EHLO, "client.example" },
	{ "MAIL FROM:<a@b.example> SIZE=10", 0, SMTP_CMD_MAIL, "FROM:<a@b.example> SIZE=10" },
	{ "mail from:<>", 0, SMTP_CMD_MAIL, "from:<>" },
	{ "RcPt To:<x@y>", 0, SMTP_CMD_RCPT, "To:<x@y>" },
	{ "DATA", 0, SMTP_CMD_DATA, "" },
	{ "data   ", 0, SMTP_CMD_DATA, "" },
	{ "BDAT 100 LAST", 0, SMTP_CMD_BDAT, "100 LAST" },
	{ "RSET", 0, SMTP_CMD_RSET, "" },
	{ "NOOP anything at all", 0, SMTP_CMD_NOOP, "anything at all" },
	{ "QUIT", 0, SMTP_CMD_QUIT, "" },
	{ "VRFY user", 0, SMTP_CMD_VRFY, "user" },
	{ "EXPN list", 0, SMTP_CMD_EXPN, "list" },
	{ "HELP", 0, SMTP_CMD_HELP, "" },
	{ "StartTLS", 0, SMTP_CMD_STARTTLS, "" },
	{ "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", 0, SMTP_CMD_AUTH, "PLAIN dGVzdAB0ZXN0AHRlc3Q=" },
	{ "MAILFROM:<a@b>", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "HELO:x", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "DATA\t", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "HELOO x", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "HEL x", 0, SMTP_CMD_UNKNOWN, NULL },
	{ " HELO x", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "FOO bar", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "", 0, SMTP_CMD_UNKNOWN, "" },
	{ "QUIT\0x", 6, SMTP_CMD_UNKNOWN, NULL },
	{ "STARTTLSX", 0, SMTP_CMD_UNKNOWN, NULL },
	{ "\xc3\xa9HLO x", 0, SMTP_CMD_UNKNOWN, NULL },
};

static void check_cmd(const struct cmd_case *c, const char *line, size_t n)
{
	struct smtp_cmd cmd;
	memset(&cmd, 0xA5, sizeof(cmd));
	smtp_parse_cmd(line, n, &cmd);
	assert_int_equal(cmd.verb, c->verb);
	assert_true(cmd.arg_len <= n);
	if (cmd.arg_len > 0)
		assert_true(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + n);
	if (c->arg)
		assert_view(cmd.arg, cmd.arg_len, c->arg);
}

static void test_cmd_table(void **state)
{
	for (size_t k = 0; k < sizeof(cmd_cases) / sizeof(cmd_cases[0]); k++) {
		const struct cmd_case *c = &cmd_cases[k];
		size_t n = c->len ? c->len : strlen(c->line);
		char *line = exact(c->line, n);
		check_cmd(c, line, n);
		/* Every prefix: must stay inside the prefix. */
		for (size_t m = 0; m < n; m++) {
			char *pre = exact(c->line, m);
			struct smtp_cmd cmd;
			smtp_parse_cmd(pre, m, &cmd);
			assert_true(cmd.arg_len <= m);
			if (cmd.arg_len > 0)
				assert_true(cmd.arg >= pre && cmd.arg + cmd.arg_len <= pre + m);
			free(pre);
		}
		free(line);
	}
}

static void test_cmd_prefix_verbs(void **state)
{
	/* A truncated verb is never mistaken for the full one. */
	struct smtp_cmd cmd;
	smtp_parse_cmd("STARTTLS", 5, &cmd);
	assert_int_equal(cmd.verb, SMTP_CMD_UNKNOWN);
	smtp_parse_cmd("HELO example", 4, &cmd);
	assert_int_equal(cmd.verb, SMTP_CMD_HELO);
	assert_int_equal(cmd.arg_len, 0);
	smtp_parse_cmd("HELO example", 6, &cmd);
	assert_int_equal(cmd.verb, SMTP_CMD_HELO);
	assert_view(cmd.arg, cmd.arg_len, "e");
}

/* ---- smtp_parse_path ------------------------------------------------- */

enum { NUL = SMTP_PATH_ALLOW_NULL, U8 = SMTP_PATH_UTF8, BARE = SMTP_PATH_ALLOW_BARE };
enum { Q = 1, LIT = 2, RT = 4, UTF = 8, ISNULL = 16 };

struct path_case {
	const char *in;
	unsigned flags;
	enum smtp_path_error err;
	const char *local;
	const char *domain;
	const char *mailbox;
	size_t used;
	unsigned props;
};

static const struct path_case path_cases[] = {
	/* plain */
	{ "<user@example.com>", 0, SMTP_PATH_OK, "user", "example.com", "user@example.com", 18, 0 },
	{ "<user@example.com> SIZE=100", 0, SMTP_PATH_OK, "user", "example.com",
	  "user@example.com", 18, 0 },
	{ "<first.last+tag@sub.example.org>", 0, SMTP_PATH_OK, "first.last+tag",
	  "sub.example.org", "first.last+tag@sub.example.org", 32, 0 },
	{ "<!#$%&'*+-/=?^_`{|}~@x>", 0, SMTP_PATH_OK, "!#$%&'*+-/=?^_`{|}~", "x",
	  "!#$%&'*+-/=?^_`{|}~@x", 23, 0 },
	{ "<u@localhost>", 0, SMTP_PATH_OK, "u", "localhost", "u@localhost", 13, 0 },
	{ "<u@a-b.c1.2d>", 0, SMTP_PATH_OK, "u", "a-b.c1.2d", "u@a-b.c1.2d", 13, 0 },
	{ "<u@example.com.>", 0, SMTP_PATH_OK, "u", "example.com.", "u@example.com.", 16, 0 },
	/* null path */
	{ "<>", NUL, SMTP_PATH_OK, "", NULL, "", 2, ISNULL },
	{ "<> BODY=8BITMIME", NUL, SMTP_PATH_OK, "", NULL, "", 2, ISNULL },
	{ "<>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<>", BARE | U8, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* postmaster */
	{ "<postmaster>", BARE, SMTP_PATH_OK, "postmaster", NULL, "postmaster", 12, 0 },
	{ "<PostMaster>", BARE, SMTP_PATH_OK, "PostMaster", NULL, "PostMaster", 12, 0 },
	{ "<postmaster>", NUL, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<postmaster@example.com>", 0, SMTP_PATH_OK, "postmaster", "example.com",
	  "postmaster@example.com", 24, 0 },
	{ "<abuse>", BARE, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\"postmaster\">", BARE, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@relay:postmaster>", BARE, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* source route */
	{ "<@relay.example:u@d.example>", 0, SMTP_PATH_OK, "u", "d.example", "u@d.example", 28, RT },
	{ "<@a,@b.c:u@d>", 0, SMTP_PATH_OK, "u", "d", "u@d", 13, RT },
	{ "<@a,b:u@d>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@-a:u@d>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@a u@d>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@a:>", NUL, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@:u@d>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* quoted local part */
	{ "<\"john doe\"@example.com>", 0, SMTP_PATH_OK, "\"john doe\"", "example.com",
	  "\"john doe\"@example.com", 24, Q },
	{ "<\"a\\\"b\\\\c\"@x>", 0, SMTP_PATH_OK, "\"a\\\"b\\\\c\"", "x", "\"a\\\"b\\\\c\"@x", 13, Q },
	{ "<\"a>b\"@x>", 0, SMTP_PATH_OK, "\"a>b\"", "x", "\"a>b\"@x", 9, Q },
	{ "<\"\"@x>", 0, SMTP_PATH_OK, "\"\"", "x", "\"\"@x", 6, Q },
	{ "<\"a\tb\"@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\"a\\\tb\"@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\"ab@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\"a\"b@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\"a\\", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* address literals */
	{ "<u@[192.0.2.1]>", 0, SMTP_PATH_OK, "u", "[192.0.2.1]", "u@[192.0.2.1]", 15, LIT },
	{ "<u@[IPv6:2001:db8::1]>", 0, SMTP_PATH_OK, "u", "[IPv6:2001:db8::1]",
	  "u@[IPv6:2001:db8::1]", 22, LIT },
	{ "<u@[ipv6:::1]>", 0, SMTP_PATH_OK, "u", "[ipv6:::1]", "u@[ipv6:::1]", 14, LIT },
	{ "<u@[IPv6:::ffff:192.0.2.1]>", 0, SMTP_PATH_OK, "u", "[IPv6:::ffff:192.0.2.1]",
	  "u@[IPv6:::ffff:192.0.2.1]", 27, LIT },
	{ "<u@[x-tag:some-content]>", 0, SMTP_PATH_OK, "u", "[x-tag:some-content]",
	  "u@[x-tag:some-content]", 24, LIT },
	{ "<u@[192.0.2.256]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[192.0.2]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[IPv6:2001:db8::g]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[IPv6:192.0.2.1]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[tag:]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[-tag:x]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[tag-:x]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[:x]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[a[b:x]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[tag:a\\b]>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[192.0.2.1]x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[192.0.2.1>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@[tag:\xc3\xa9]>", U8, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* syntax errors */
	{ "", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<", NUL, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "user@example.com", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<user@example.com", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ " <u@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "< u@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x >", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u @x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<user>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x@y>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<.u@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u.@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<a..b@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@.x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x..y>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x..>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@.>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@-x.y>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x-.y>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x.y->", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x_y>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u(c)@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u,v@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u\x01@x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x\x7f>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<u@x\r\n>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<<u@x>>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	/* UTF-8 (RFC 6531) */
	{ "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", U8, SMTP_PATH_OK, "j\xc3\xb6rg",
	  "b\xc3\xbc" "cher.example", "j\xc3\xb6rg@b\xc3\xbc" "cher.example", 23, UTF },
	{ "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>", U8,
	  SMTP_PATH_OK, "\xe7\x94\xa8\xe6\x88\xb7",
	  "\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8",
	  "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8", 22, UTF },
	{ "<\"\xc3\xa9 x\"@y>", U8, SMTP_PATH_OK, "\"\xc3\xa9 x\"", "y", "\"\xc3\xa9 x\"@y", 10, Q | UTF },
	{ "<\xf0\x9f\x98\x80@x>", U8, SMTP_PATH_OK, "\xf0\x9f\x98\x80", "x", "\xf0\x9f\x98\x80@x", 8, UTF },
	{ "<u@x>", U8, SMTP_PATH_OK, "u", "x", "u@x", 5, 0 },
	{ "<j\xc3\xb6rg@x>", 0, SMTP_PATH_NON_ASCII, NULL, NULL, NULL, 0, 0 },
	{ "<u@b\xc3\xbc" "cher>", NUL | BARE, SMTP_PATH_NON_ASCII, NULL, NULL, NULL, 0, 0 },
	{ "<\"\xc3\xa9\"@x>", 0, SMTP_PATH_NON_ASCII, NULL, NULL, NULL, 0, 0 },
	{ "<@\xc3\xa9:u@x>", 0, SMTP_PATH_NON_ASCII, NULL, NULL, NULL, 0, 0 },
	{ "<\xc3\xa9 @x>", 0, SMTP_PATH_SYNTAX, NULL, NULL, NULL, 0, 0 },
	{ "<\xc3@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<\xc3@x>", 0, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<\xc0\xaf@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },    /* overlong */
	{ "<\xe0\x80\xaf@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 }, /* overlong */
	{ "<\xed\xa0\x80@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 }, /* surrogate */
	{ "<\xf4\x90\x80\x80@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 }, /* > U+10FFFF */
	{ "<\xf5\x80\x80\x80@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<\x80@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<u@x\xff>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<\"\xe2\x82\"@x>", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
	{ "<\xe2\x82", U8, SMTP_PATH_BAD_UTF8, NULL, NULL, NULL, 0, 0 },
};

static void check_path(const struct path_case *c, const char *in, size_t n)
{
	struct smtp_path p;
	size_t used = 12345;
	memset(&p, 0xA5, sizeof(p));
	enum smtp_path_error r = smtp_parse_path(in, n, c->flags, &p, &used);
	if (r != c->err)
		fail_msg("%s: got %d, want %d", c->in, (int)r, (int)c->err);
	if (r != SMTP_PATH_OK) {
		assert_int_equal(used, 0);
		assert_null(p.mailbox);
		return;
	}
	if (used != c->used)
		fail_msg("%s: used %zu, want %zu", c->in, used, c->used);
	assert_view(p.local, p.local_len, c->local);
	assert_view(p.domain, p.domain_len, c->domain);
	assert_view(p.mailbox, p.mailbox_len, c->mailbox);
	assert_true(p.mailbox >= in && p.mailbox + p.mailbox_len <= in + n);
	assert_int_equal(p.quoted, !!(c->props & Q));
	assert_int_equal(p.domain_literal, !!(c->props & LIT));
	assert_int_equal(p.has_route, !!(c->props & RT));
	assert_int_equal(p.utf8, !!(c->props & UTF));
	assert_int_equal(p.is_null, !!(c->props & ISNULL));
}

static void test_path_table(void **state)
{
	for (size_t k = 0; k < sizeof(path_cases) / sizeof(path_cases[0]); k++) {
		const struct path_case *c = &path_cases[k];
		size_t n = strlen(c->in);
		char *in = exact(c->in, n);
		check_path(c, in, n);
		free(in);
		/* Byte by byte: a prefix without the '>' never parses; any
		 * longer prefix parses exactly like the whole. */
		for (size_t m = 0; m < n; m++) {
			char *pre = exact(c->in, m);
			struct smtp_path p;
			size_t used;
			enum smtp_path_error r = smtp_parse_path(pre, m, c->flags, &p, &used);
			if (c->err == SMTP_PATH_OK && m < c->used)
				assert_int_not_equal(r, SMTP_PATH_OK);
			else if (c->err == SMTP_PATH_OK)
				check_path(c, pre, m);
			if (r == SMTP_PATH_OK)
				assert_true(used <= m);
			free(pre);
		}
	}
}

static char *repeat(char ch, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, ch, n);
	s[n] = '\0';
	return s;
}

static enum smtp_path_error parse_fmt(const char *pre, const char *mid, const char *post,
				      size_t *used)
{
	size_t a = strlen(pre), b = strlen(mid), c = strlen(post);
	char *s = malloc(a + b + c);
	assert_non_null(s);
	memcpy(s, pre, a);
	memcpy(s + a, mid, b);
	memcpy(s + a + b, post, c);
	struct smtp_path p;
	enum smtp_path_error r = smtp_parse_path(s, a + b + c, 0, &p, used);
	free(s);
	return r;
}

static void test_path_limits(void **state)
{
	size_t used;
	char *s;

	/* Local part: 64 octets. */
	s = repeat('a', 64);
	assert_int_equal(parse_fmt("<", s, "@x>", &used), SMTP_PATH_OK);
	assert_int_equal(used, 68);
	free(s);
	s = repeat('a', 65);
	assert_int_equal(parse_fmt("<", s, "@x>", &used), SMTP_PATH_TOO_LONG);
	assert_int_equal(used, 0);
	free(s);
	/* Quotes count towards the local part. */
	s = repeat('a', 62);
	assert_int_equal(parse_fmt("<\"", s, "\"@x>", &used), SMTP_PATH_OK);
	free(s);
	s = repeat('a', 63);
	assert_int_equal(parse_fmt("<\"", s, "\"@x>", &used), SMTP_PATH_TOO_LONG);
	free(s);

	/* Whole path: 256 octets including the brackets. */
	s = repeat('b', 252);
	assert_int_equal(parse_fmt("<a@", s, ">", &used), SMTP_PATH_OK);
	assert_int_equal(used, 256);
	free(s);
	s = repeat('b', 253);
	assert_int_equal(parse_fmt("<a@", s, ">", &used), SMTP_PATH_TOO_LONG);
	free(s);
	/* A source route counts towards the path. */
	s = repeat('b', 240);
	assert_int_equal(parse_fmt("<@r:a@", s, ">", &used), SMTP_PATH_OK);
	assert_int_equal(parse_fmt("<@relay.example.org:a@", s, ">", &used),
			 SMTP_PATH_TOO_LONG);
	free(s);

	/* Domain: 255 octets (reported even though the path is also long). */
	s = repeat('c', 300);
	assert_int_equal(parse_fmt("<a@", s, ">", &used), SMTP_PATH_TOO_LONG);
	free(s);

	/* A long syntax error is a syntax error. */
	s = repeat('d', 1000);
	assert_int_equal(parse_fmt("<", s, " @x>", &used), SMTP_PATH_SYNTAX);
	free(s);
}

/* ---- smtp_parse_params ----------------------------------------------- */

struct param_case {
	const char *in;
	bool utf8;
	int rc;
	size_t count;
	const char *kv[6]; /* key, value (NULL: none), ... */
};

static const struct param_case param_cases[] = {
	{ "", false, 0, 0, { NULL } },
	{ "    ", false, 0, 0, { NULL } },
	{ "SIZE=1000", false, 0, 1, { "SIZE", "1000" } },
	{ " SIZE=1000 BODY=8BITMIME ", false, 0, 2, { "SIZE", "1000", "BODY", "8BITMIME" } },
	{ "SMTPUTF8", false, 0, 1, { "SMTPUTF8", NULL } },
	{ "SMTPUTF8  RET=HDRS   ENVID=a+2Bb", false, 0, 3,
	  { "SMTPUTF8", NULL, "RET", "HDRS", "ENVID", "a+2Bb" } },
	{ "X-FOO-1=~!\"<>", false, 0, 1, { "X-FOO-1", "~!\"<>" } },
	{ "9X=1", false, 0, 1, { "9X", "1" } },
	{ "ORCPT=rfc822;\xc3\xa9@x", true, 0, 1, { "ORCPT", "rfc822;\xc3\xa9@x" } },
	{ "ORCPT=rfc822;\xc3\xa9@x", false, -1, 0, { NULL } },
	{ "ORCPT=rfc822;\xc3@x", true, -1, 0, { NULL } },
	{ "ORCPT=\xed\xa0\x80", true, -1, 0, { NULL } },
	{ "SIZE=", false, -1, 0, { NULL } },
	{ "SIZE= 1", false, -1, 0, { NULL } },
	{ "=1", false, -1, 0, { NULL } },
	{ "-X=1", false, -1, 0, { NULL } },
	{ "SI_ZE=1", false, -1, 0, { NULL } },
	{ "SIZE=1=2", false, -1, 0, { NULL } },
	{ "SIZE==1", false, -1, 0, { NULL } },
	{ "SIZE=1\t", false, -1, 0, { NULL } },
	{ "SIZE=a\x7f", false, -1, 0, { NULL } },
	{ "\tSIZE=1", false, -1, 0, { NULL } },
	{ "SIZE=1\x01", false, -1, 0, { NULL } },
	{ "A B C D E F G H I J K L M N O P", false, 0, 16, { "A", NULL, "B", NULL, "C", NULL } },
	{ "A B C D E F G H I J K L M N O P Q", false, -1, 0, { NULL } },
	{ "A B C D E F G H I J K L M N O P  ", false, 0, 16, { "A", NULL } },
};

static void check_params(const struct param_case *c, const char *in, size_t n)
{
	struct smtp_param pa[SMTP_MAX_PARAMS];
	size_t count = 99;
	int rc = smtp_parse_params(in, n, c->utf8, pa, &count);
	if (rc != c->rc)
		fail_msg("%s: rc %d, want %d", c->in, rc, c->rc);
	if (rc < 0)
		return;
	assert_int_equal(count, c->count);
	for (size_t k = 0; k < count && k < 3 && c->kv[2 * k]; k++) {
		assert_view(pa[k].key, pa[k].key_len, c->kv[2 * k]);
		assert_view(pa[k].value, pa[k].value_len, c->kv[2 * k + 1]);
	}
	for (size_t k = 0; k < count; k++) {
		assert_true(pa[k].key >= in && pa[k].key + pa[k].key_len <= in + n);
		assert_true(pa[k].key_len > 0);
		if (pa[k].value)
			assert_true(pa[k].value_len > 0 &&
				    pa[k].value + pa[k].value_len <= in + n);
	}
}

static void test_params_table(void **state)
{
	for (size_t k = 0; k < sizeof(param_cases) / sizeof(param_cases[0]); k++) {
		const struct param_case *c = &param_cases[k];
		size_t n = strlen(c->in);
		char *in = exact(c->in, n);
		check_params(c, in, n);
		free(in);
		for (size_t m = 0; m < n; m++) {
			char *pre = exact(c->in, m);
			struct smtp_param pa[SMTP_MAX_PARAMS];
			size_t count;
			if (smtp_parse_params(pre, m, c->utf8, pa, &count) == 0) {
				assert_true(count <= SMTP_MAX_PARAMS);
				for (size_t j = 0; j < count; j++)
					assert_true(pa[j].key + pa[j].key_len <= pre + m);
			}
			free(pre);
		}
	}
}

/* ---- xtext ----------------------------------------------------------- */

struct xtext_case {
	const char *in;
	int rc;
	const char *out;
	size_t out_len;
};

static const struct xtext_case xdec_cases[] = {
	{ "", 0, "", 0 },
	{ "abc", 0, "abc", 3 },
	{ "a+2Bb", 0, "a+b", 3 },
	{ "+3D", 0, "=", 1 },
	{ "rfc822;user+40example.com", 0, "rfc822;user@example.com", 23 },
	{ "+00+FF", 0, "\0\xff", 2 },
	{ "~!\"*,<>", 0, "~!\"*,<>", 7 },
	{ "+2b", -1, NULL, 0 },
	{ "+g0", -1, NULL, 0 },
	{ "+2", -1, NULL, 0 },
	{ "+", -1, NULL, 0 },
	{ "a+", -1, NULL, 0 },
	{ "a=b", -1, NULL, 0 },
	{ "a b", -1, NULL, 0 },
	{ "a\x7f", -1, NULL, 0 },
	{ "\xc3\xa9", -1, NULL, 0 },
	{ "a\tb", -1, NULL, 0 },
};

static void test_xtext_decode(void **state)
{
	for (size_t k = 0; k < sizeof(xdec_cases) / sizeof(xdec_cases[0]); k++) {
		const struct xtext_case *c = &xdec_cases[k];
		size_t n = strlen(c->in);
		char *in = exact(c->in, n);
		struct buf b;
		buf_init(&b, 1024);
		buf_puts(&b, "pre:");
		int rc = smtp_xtext_decode(in, n, &b);
		if (rc != c->rc)
			fail_msg("%s: rc %d, want %d", c->in, rc, c->rc);
		if (rc == 0) {
			assert_int_equal(buf_len(&b), 4 + c->out_len);
			assert_memory_equal(buf_ptr(&b) + 4, c->out, c->out_len);
		} else {
			/* A failed decode leaves the buffer as it was. */
			assert_int_equal(buf_len(&b), 4);
		}
		assert_memory_equal(buf_ptr(&b), "pre:", 4);
		buf_free(&b);
		free(in);
		for (size_t m = 0; m < n; m++) {
			char *pre = exact(c->in, m);
			buf_init(&b, 1024);
			(void)smtp_xtext_decode(pre, m, &b);
			assert_true(buf_len(&b) <= m);
			buf_free(&b);
			free(pre);
		}
	}
}

static void test_xtext_encode(void **state)
{
	static const struct {
		const char *in;
		size_t n;
		const char *out;
	} cases[] = {
		{ "", 0, "" },
		{ "abc", 3, "abc" },
		{ "a+b=c", 5, "a+2Bb+3Dc" },
		{ "a b", 3, "a+20b" },
		{ "\0\x7f\x80\xff", 4, "+00+7F+80+FF" },
		{ "rfc822;u@x", 10, "rfc822;u@x" },
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct buf b;
		buf_init(&b, 1024);
		assert_int_equal(smtp_xtext_encode(cases[k].in, cases[k].n, &b), 0);
		assert_int_equal(buf_len(&b), strlen(cases[k].out));
		if (buf_len(&b))
			assert_memory_equal(buf_ptr(&b), cases[k].out, buf_len(&b));
		buf_free(&b);
	}
}

static void test_xtext_roundtrip(void **state)
{
	unsigned char all[256];
	for (size_t k = 0; k < 256; k++)
		all[k] = (unsigned char)k;
	struct buf enc, dec;
	buf_init(&enc, 4096);
	buf_init(&dec, 4096);
	assert_int_equal(smtp_xtext_encode(all, sizeof(all), &enc), 0);
	/* Canonical: only '+', uppercase hex and xchars. */
	for (size_t k = 0; k < buf_len(&enc); k++) {
		unsigned char c = buf_ptr(&enc)[k];
		assert_true(c >= 33 && c <= 126 && c != '=');
		assert_false(c >= 'a' && c <= 'f' && k > 0 && buf_ptr(&enc)[k - 1] == '+');
	}
	assert_int_equal(smtp_xtext_decode((const char *)buf_ptr(&enc), buf_len(&enc), &dec), 0);
	assert_int_equal(buf_len(&dec), 256);
	assert_memory_equal(buf_ptr(&dec), all, 256);
	buf_free(&enc);
	buf_free(&dec);
}

static void test_xtext_bounded(void **state)
{
	struct buf b;
	buf_init(&b, 5);
	/* "a+b=c" encodes to 9 bytes: more than max. */
	assert_int_equal(smtp_xtext_encode("a+b=c", 5, &b), -1);
	assert_int_equal(buf_len(&b), 0);
	assert_int_equal(smtp_xtext_encode("a+", 2, &b), 0);
	assert_int_equal(buf_len(&b), 4);
	buf_reset(&b);
	assert_int_equal(smtp_xtext_decode("abcdef", 6, &b), -1);
	assert_int_equal(buf_len(&b), 0);
	assert_int_equal(smtp_xtext_decode("ab+2Bcd", 7, &b), 0);
	assert_int_equal(buf_len(&b), 5);
	/* Restoring after failure works on a consumed buffer too. */
	buf_consume(&b, 3);
	assert_int_equal(smtp_xtext_decode("xyzw", 4, &b), -1);
	assert_int_equal(buf_len(&b), 2);
	assert_memory_equal(buf_ptr(&b), "cd", 2);
	buf_free(&b);
}

/* ---- smtp_path_canonical --------------------------------------------- */

struct canon_case {
	const char *in;   /* the path as on the command line */
	unsigned flags;
	const char *want; /* canonical form */
};

static const struct canon_case canon_cases[] = {
	{ "<bob@test.example>", 0, "bob@test.example" },
	{ "<bob@test.example.>", 0, "bob@test.example" },
	{ "<Bob@Test.Example.>", 0, "Bob@Test.Example" }, /* case is kept */
	{ "<\"bob\"@test.example>", 0, "bob@test.example" },
	{ "<\"alice\"@test.example.>", 0, "alice@test.example" },
	{ "<\"b\\ob\"@test.example>", 0, "bob@test.example" },      /* quoted-pair */
	{ "<\"first.last\"@x.example>", 0, "first.last@x.example" },
	{ "<\"a+b=c\"@x.example>", 0, "a+b=c@x.example" },
	{ "<\"a..b\"@x.example>", 0, "\"a..b\"@x.example" },         /* not a dot-atom */
	{ "<\".a\"@x.example>", 0, "\".a\"@x.example" },
	{ "<\"a.\"@x.example>", 0, "\"a.\"@x.example" },
	{ "<\"\"@x.example>", 0, "\"\"@x.example" },                  /* empty */
	{ "<\"a b\"@x.example>", 0, "\"a b\"@x.example" },
	{ "<\"a\\ b\"@x.example>", 0, "\"a b\"@x.example" },       /* needless escape */
	{ "<\"a\\\"b\"@x.example>", 0, "\"a\\\"b\"@x.example" },  /* needed escape */
	{ "<\"a\\\\b\"@x.example>", 0, "\"a\\\\b\"@x.example" },
	{ "<\"a@b\"@x.example>", 0, "\"a@b\"@x.example" },
	{ "<\"a(b)\"@x.example>", 0, "\"a(b)\"@x.example" },
	{ "<@r1.example,@r2.example:bob@x.example.>", 0, "bob@x.example" },
	{ "<bob@[192.0.2.1]>", 0, "bob@[192.0.2.1]" },
	{ "<bob@[IPv6:2001:db8::1]>", 0, "bob@[IPv6:2001:db8::1]" },
	{ "<>", SMTP_PATH_ALLOW_NULL, "" },
	{ "<Postmaster>", SMTP_PATH_ALLOW_BARE, "Postmaster" },
	{ "<\"j\xc3\xb6rg\"@x.example.>", SMTP_PATH_UTF8, "j\xc3\xb6rg@x.example" },
	{ "<\"j\xc3\xb6 rg\"@x.example>", SMTP_PATH_UTF8, "\"j\xc3\xb6 rg\"@x.example" },
};

static void check_canon(const struct canon_case *c, const char *in, size_t n)
{
	struct smtp_path p;
	size_t used;
	assert_int_equal(smtp_parse_path(in, n, c->flags, &p, &used), SMTP_PATH_OK);
	struct buf b;
	buf_init(&b, 1024);
	buf_puts(&b, "x"); /* appended to, not replaced */
	assert_int_equal(smtp_path_canonical(&p, &b), 0);
	const char *got = buf_cstr(&b);
	assert_non_null(got);
	if (strcmp(got + 1, c->want) != 0)
		fail_msg("%s: got %s want %s", c->in, got + 1, c->want);
	assert_true(buf_len(&b) - 1 <= used);
	/* The canonical form is a fixed point: parsed again, it stays. */
	struct buf again;
	buf_init(&again, 1024);
	buf_printf(&again, "<%s>", got + 1);
	char *in2 = exact((const char *)buf_ptr(&again), buf_len(&again));
	struct smtp_path p2;
	assert_int_equal(smtp_parse_path(in2, buf_len(&again), c->flags, &p2, &used),
			 SMTP_PATH_OK);
	buf_reset(&b);
	assert_int_equal(smtp_path_canonical(&p2, &b), 0);
	assert_string_equal(buf_cstr(&b), c->want);
	free(in2);
	buf_free(&again);
	buf_free(&b);
}

static void test_path_canonical(void **state)
{
	for (size_t k = 0; k < sizeof(canon_cases) / sizeof(canon_cases[0]); k++) {
		const struct canon_case *c = &canon_cases[k];
		size_t n = strlen(c->in);
		char *in = exact(c->in, n);
		check_canon(c, in, n);
		free(in);
	}
}

static void test_path_canonical_bounded(void **state)
{
	static const char in[] = "<\"bob\"@test.example.>";
	struct smtp_path p;
	size_t used;
	assert_int_equal(smtp_parse_path(in, sizeof(in) - 1, 0, &p, &used), SMTP_PATH_OK);
	for (size_t max = 0; max < 16; max++) {
		struct buf b;
		buf_init(&b, max);
		assert_int_equal(smtp_path_canonical(&p, &b), -1);
		assert_true(buf_len(&b) <= max);
		buf_free(&b);
	}
	struct buf b;
	buf_init(&b, 16);
	assert_int_equal(smtp_path_canonical(&p, &b), 0);
	assert_int_equal(buf_len(&b), 16);
	buf_free(&b);
}

/* ---- smtp_helo_arg_ok ------------------------------------------------ */

static void test_helo_arg(void **state)
{
	char l63[64], l64[65], longname[260];
	memset(l63, 'a', 63);
	l63[63] = '\0';
	memset(l64, 'a', 64);
	l64[64] = '\0';
	/* 4 labels of 63 and dots: 255 octets; one more label char: 256. */
	snprintf(longname, sizeof(longname), "%s.%s.%s.%s", l63, l63, l63, l63);
	static const struct {
		const char *arg;
		bool ok;
	} cases[] = {
		{ "client.example", true },      { "client.example.", true },
		{ "localhost", true },           { "MyPC", true },
		{ "my_pc.corp.example", true },  { "a-b.example", true },
		{ "1.2.3.4", true },             { "x", true },
		{ "[192.0.2.1]", true },         { "[IPv6:2001:db8::1]", true },
		{ "[IPv6:::ffff:192.0.2.1]", true }, { "[tag:anything]", true },
		{ "", false },                   { ".", false },
		{ "foo..bar", false },           { ".foo", false },
		{ "foo..", false },              { "-foo.example", false },
		{ "foo-.example", false },       { "foo.-bar", false },
		{ "bad!name", false },           { "a b", false },
		{ "caf\xc3\xa9", false },        { "a\x01", false },
		{ "[999.1.1.1]", false },        { "[1.2.3]", false },
		{ "[1.2.3.4", false },           { "[]", false },
		{ "[IPv6:zz]", false },          { "[IPv6:1::2::3]", false },
		{ "[192.0.2.1]x", false },       { "[:x]", false },
		{ "[-tag:x]", false },           { "[tag:]", false },
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t n = strlen(cases[k].arg);
		char *a = exact(cases[k].arg, n);
		if (smtp_helo_arg_ok(a, n) != cases[k].ok)
			fail_msg("%s: want %d", cases[k].arg, cases[k].ok);
		/* Every proper prefix is judged on its own length only. */
		for (size_t m = 0; m < n; m++) {
			char *b = exact(cases[k].arg, m);
			(void)smtp_helo_arg_ok(b, m);
			free(b);
		}
		free(a);
	}
	char lbl[80];
	snprintf(lbl, sizeof(lbl), "%s.example", l63);
	assert_true(smtp_helo_arg_ok(lbl, strlen(lbl)));
	snprintf(lbl, sizeof(lbl), "%s.example", l64);
	assert_false(smtp_helo_arg_ok(lbl, strlen(lbl)));
	assert_int_equal(strlen(longname), 255);
	assert_true(smtp_helo_arg_ok(longname, 255));
	longname[255] = 'a';
	longname[256] = '\0';
	assert_false(smtp_helo_arg_ok(longname, 256));
}

/* ---- smtp_domain_in_list / smtp_role_name ---------------------------- */

static void test_domain_in_list(void **state)
{
	static const char *const doms[] = { "example.com", "mail.example.org" };
	static const struct {
		const char *d;
		bool want;
	} cases[] = {
		{ "example.com", true },      { "EXAMPLE.Com", true },
		{ "example.com.", true },     { "mail.example.org", true },
		{ "example.com..", false },   { "sub.example.com", false },
		{ "example.co", false },      { "example.comm", false },
		{ "", false },                { ".", false },
		{ "example.org", false },
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		size_t n = strlen(cases[k].d);
		char *d = exact(cases[k].d, n);
		if (smtp_domain_in_list(d, n, doms, 2) != cases[k].want)
			fail_msg("%s", cases[k].d);
		free(d);
	}
	assert_false(smtp_domain_in_list("example.com", 11, doms, 0));
	assert_false(smtp_domain_in_list("example.com", 11, NULL, 0));
	/* Length-bounded: "example.com" is a prefix of the text given. */
	assert_true(smtp_domain_in_list("example.comXYZ", 11, doms, 2));
}

static void test_role_name(void **state)
{
	assert_string_equal(smtp_role_name(SMTP_ROLE_MX), "mx");
	assert_string_equal(smtp_role_name(SMTP_ROLE_SUBMISSION), "submission");
}


/* ---- smtp_header_addresses ------------------------------------------- */

static void collect_addr(const char *a, size_t n, void *arg)
{
	struct buf *b = arg;
	if (buf_len(b))
		buf_puts(b, "|");
	buf_append(b, a, n);
}

static void test_header_addresses(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int count;
		const char *out; /* addresses joined with '|' */
	} cases[] = {
		{ "user@example.org", 1, "user@example.org" },
		{ " User Name <user@example.org>", 1, "user@example.org" },
		{ "\"Doe, John\" <j@x.example>, k@y.example", 2, "j@x.example|k@y.example" },
		{ "a@x.example (comment, with comma)", 1, "a@x.example" },
		{ "(c) <a@x.example> (d)", 1, "a@x.example" },
		{ "Team: a@x.example, B <b@y.example>;", 2, "a@x.example|b@y.example" },
		{ "undisclosed-recipients:;", 0, "" },
		{ "<@route.example:a@x.example>", 1, "a@x.example" },
		{ "\"quoted local\"@x.example", 1, "\"quoted local\"@x.example" },
		{ "<a@x.example", -1, "" },
		{ "a@x.example (unclosed", -1, "" },
		{ "\"unclosed <a@x.example>", -1, "" },
		{ "<a@x.example> <b@x.example>", -1, "" },
		/* RFC 5322 3.4: a display name is a phrase, '@' in it is quoted */
		{ "alice@x.example <bob@y.example>", -1, "" },
		{ "\"alice@x.example\" <bob@y.example>", 1, "bob@y.example" },
		{ "Team alice@x.example: b@y.example;", -1, "" },
		{ "a@x.example, Bob <b@y.example>", 2, "a@x.example|b@y.example" },
		{ "no-at-sign", -1, "" },
		{ "@x.example", -1, "" },
		{ "a@", -1, "" },
		{ "a@x.example, b@x.example, c@x.example", -1, "" }, /* more than max 2 */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b;
		buf_init(&b, 4096);
		size_t n = strlen(cases[i].in);
		char *copy = malloc(n ? n : 1); /* exactly sized: no reading past n */
		memcpy(copy, cases[i].in, n);
		int r = smtp_header_addresses(copy, n, 2, collect_addr, &b);
		if (r != cases[i].count)
			fail_msg("case %zu \"%s\": got %d, want %d", i, cases[i].in, r, cases[i].count);
		if (r >= 0)
			assert_string_equal(buf_cstr(&b), cases[i].out);
		free(copy);
		buf_free(&b);
	}
}

static void test_http_request_lines(void **state)
{
	static const struct {
		const char *line;
		bool http;
	} cases[] = {
		{ "GET / HTTP/1.1", true },
		{ "POST /form HTTP/1.0", true },
		{ "CONNECT mx.example:25 HTTP/1.1", true },
		{ "HEAD / HTTP/1.1", true },
		{ "OPTIONS * HTTP/1.1", true },
		{ "get / HTTP/1.1", false },   /* methods are case-sensitive */
		{ "GET", false },
		{ "GETX / HTTP/1.1", false },
		{ "POSTMASTER", false },
		{ "HELO GET", false },
		{ "EHLO client.example", false },
		{ "", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (smtp_is_http_request(cases[i].line, strlen(cases[i].line)) != cases[i].http)
			fail_msg("\"%s\"", cases[i].line);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmd_table),
		cmocka_unit_test(test_cmd_prefix_verbs),
		cmocka_unit_test(test_http_request_lines),
		cmocka_unit_test(test_path_table),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_params_table),
		cmocka_unit_test(test_xtext_decode),
		cmocka_unit_test(test_xtext_encode),
		cmocka_unit_test(test_xtext_roundtrip),
		cmocka_unit_test(test_xtext_bounded),
		cmocka_unit_test(test_path_canonical),
		cmocka_unit_test(test_path_canonical_bounded),
		cmocka_unit_test(test_helo_arg),
		cmocka_unit_test(test_domain_in_list),
		cmocka_unit_test(test_role_name),
		cmocka_unit_test(test_header_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
