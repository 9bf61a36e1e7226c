/*
 * ACL parser, printer, evaluator and rate table tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/policy.h"

/* Parses one line given as exactly n bytes followed by junk that must be
 * ignored (the parser is length-bounded, not NUL-bounded). */
static int parse(struct acl *a, const char *line, int lineno, struct err *e)
{
	size_t n = strlen(line);
	char *copy = malloc(n + 8);
	assert_non_null(copy);
	memcpy(copy, line, n);
	memcpy(copy + n, " !junk", 7);
	memset(e, 0, sizeof(*e));
	int r = acl_parse_line(a, copy, n, lineno, e);
	free(copy);
	return r;
}

/* ---- parse errors ------------------------------------------------------ */

static const struct { const char *line; const char *want; } bad_cases[] = {
	{ "allow", "unknown ACL verb 'allow': expected accept, deny, defer or warn" },
	{ "", "unknown ACL verb '': expected" },
	{ "Deny", "unknown ACL verb 'Deny'" },
	{ "deny message = \"450 4.7.1 no\"", "a deny message must start with a 5xx reply code" },
	{ "deny message = \"550 4.7.1 no\"", "a deny message must start with a 5xx" },
	{ "deny message = \"550 no\"", "a deny message must start with a 5xx" },
	{ "deny message = \"55 5.7.1 no\"", "a deny message must start with a 5xx" },
	{ "deny message = \"550 5.7.1234 no\"", "a deny message must start with a 5xx" },
	{ "defer message = \"550 5.7.1 no\"", "a defer message must start with a 4xx reply code" },
	{ "defer message = \"451 5.7.1 no\"", "a defer message must start with a 4xx" },
	{ "accept message = \"250 ok\"", "accept takes no message" },
	{ "deny message = 550", "the message must be in double quotes" },
	{ "deny message \"550 5.7.1 x\"", "expected message = \"text\"" },
	{ "deny message = \"550 5.7.1 x\" message = \"550 5.7.1 y\"", "message given twice" },
	{ "deny message = \"550 5.7.1 x", "unterminated quoted string in message" },
	{ "deny client = \"10.0.0.0/8", "unterminated quoted string in client" },
	{ "deny message = \"550 5.7.1 \\x\"", "bad escape in the quoted string of message" },
	{ "deny message = \"550 5.7.1 x\"tls", "a blank must follow the closing '\"' of message" },
	{ "deny message = \"\"", "the message must have 1 to" },
	{ "warn message = \"a\tb\"", "only printable ASCII" },
	{ "deny spf = pass", "unknown condition 'spf': expected authenticated, tls" },
	{ "deny tlsx", "unknown condition 'tlsx'" },
	{ "deny tls-version", "unknown condition 'tls-version'" },
	{ "deny = x", "expected a condition" },
	{ "deny !", "expected a condition" },
	{ "deny tls = yes", "tls takes no value" },
	{ "deny recipient_local = 1", "recipient_local takes no value" },
	{ "deny client", "client needs '= VALUE'" },
	{ "deny client =", "client needs a value" },
	{ "deny client < 10.0.0.1", "client takes '=', not '<'" },
	{ "deny client = 10.0.0.300", "bad address '10.0.0.300' in client" },
	{ "deny client = 10.0.0.0/33", "bad prefix length in '10.0.0.0/33' in client: expected /0 to /32" },
	{ "deny client = <;2001:db8::/129", "expected /0 to /128" },
	{ "deny client = 10.0.0.0/", "bad prefix length" },
	{ "deny client = 10.0.0.0/8x", "bad prefix length" },
	{ "deny client = 10.0.0.1/8", "has bits set after the /8 prefix" },
	{ "deny client = 2001:db8::1", "bad address '2001'" },
	{ "deny client = :", "client lists nothing" },
	{ "deny sender_domain = exa$mple.org", "bad domain 'exa$mple.org' in sender_domain" },
	{ "deny recipient_domain = \"\"", "recipient_domain lists nothing" },
	{ "deny authenticated = :", "authenticated lists nothing" },
	{ "deny tls_version", "tls_version needs a comparison" },
	{ "deny tls_version >= TLSv1.4", "bad TLS version 'TLSv1.4'" },
	{ "deny tls_version >= SSLv3", "bad TLS version 'SSLv3'" },
	{ "deny size", "size needs >, >=, < or <= and a size" },
	{ "deny size = 10", "size needs >, >=, < or <=" },
	{ "deny size > 10X", "bad size '10X'" },
	{ "deny size > -1", "bad size '-1'" },
	{ "deny size > 99999999999999999999", "bad size" },
	{ "deny size > 99999999999G", "bad size" },
	{ "deny header", "header needs '= VALUE'" },
	{ "deny header = \"X Bad\"", "bad header field name 'X Bad'" },
	{ "deny header = Subject:", "bad header field name" },
	{ "deny rate", "bad rate: expected rate > N / TIME per client" },
	{ "deny rate = 10 / 1h per client", "bad rate" },
	{ "deny rate < 10 / 1h per client", "bad rate" },
	{ "deny rate > 10 per client", "bad rate" },
	{ "deny rate > 10 / 1h", "bad rate" },
	{ "deny rate > 10 / 1h per", "bad rate" },
	{ "deny rate > 10 / 1h by client", "bad rate" },
	{ "deny rate > 10 / 1h per host", "bad rate" },
	{ "deny rate > x / 1h per client", "bad rate" },
	{ "deny rate > 10 / 1y per client", "bad rate window '1y'" },
	{ "deny rate > 10 / 0 per client", "bad rate window '0'" },
	{ "deny rate > 10 / 400d per client", "bad rate window '400d'" },
};

static void test_parse_errors(void **state)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct acl *a = acl_new("t", 1);
		struct err e;
		if (parse(a, bad_cases[i].line, 3, &e) == 0)
			fail_msg("[%s] parsed", bad_cases[i].line);
		if (!strstr(e.msg, bad_cases[i].want))
			fail_msg("[%s]: got [%s], want [%s]", bad_cases[i].line, e.msg,
				 bad_cases[i].want);
		assert_int_equal(acl_n_rules(a), 0);
		acl_free(a);
	}
}

/* ---- parse and print ---------------------------------------------------- */

static const struct { const char *line; const char *canon; } ok_cases[] = {
	{ "accept", "accept" },
	{ "  deny\t", "deny" },
	{ "deny message = \"550 5.7.1 Go away\"", "deny message = \"550 5.7.1 Go away\"" },
	{ "deny message=\"554 5.7.1\"", "deny message = \"554 5.7.1\"" },
	{ "defer message = \"421 4.7.0 say \\\"later\\\" \\\\ ok\" tls",
	  "defer message = \"421 4.7.0 say \\\"later\\\" \\\\ ok\" tls" },
	{ "warn message = \"anything at all\" !tls", "warn message = \"anything at all\" !tls" },
	{ "accept authenticated", "accept authenticated" },
	{ "accept ! authenticated", "accept !authenticated" },
	{ "accept authenticated = alice : bob", "accept authenticated = \"alice : bob\"" },
	{ "accept authenticated = alice : bob tls", "accept authenticated = \"alice : bob\" tls" },
	{ "accept authenticated = alice: bob :carol tls", "accept authenticated = \"alice: bob :carol\" tls" },
	{ "deny client = <; ::1 ; 10.0.0.0/8 tls", "deny client = \"<; ::1 ; 10.0.0.0/8\" tls" },
	{ "deny client = <;::1; 10.0.0.0/8 !tls", "deny client = \"<;::1; 10.0.0.0/8\" !tls" },
	{ "accept authenticated = \"alice : bob\"", "accept authenticated = \"alice : bob\"" },
	{ "accept authenticated=alice:bob", "accept authenticated = alice:bob" },
	{ "deny !tls", "deny !tls" },
	{ "deny tls_version<tlsv1.2", "deny tls_version < TLSv1.2" },
	{ "deny tls_version >= TLSv1.0", "deny tls_version >= TLSv1" },
	{ "deny tls_version = TLSv1.3 tls_version <= TLSv1.3 tls_version > TLSv1.1",
	  "deny tls_version = TLSv1.3 tls_version <= TLSv1.3 tls_version > TLSv1.1" },
	{ "deny client = 192.0.2.0/24:10.0.0.0/8", "deny client = 192.0.2.0/24:10.0.0.0/8" },
	{ "deny client = <;2001:db8::/32;::1", "deny client = <;2001:db8::/32;::1" },
	{ "deny client = 2001::db8::::/32", "deny client = 2001::db8::::/32" },
	{ "deny !client = \"<; ::1 ; 10.0.0.0/8\"", "deny !client = \"<; ::1 ; 10.0.0.0/8\"" },
	{ "deny client = 0.0.0.0/0", "deny client = 0.0.0.0/0" },
	{ "deny sender_domain = @local:Example.ORG.", "deny sender_domain = @local:Example.ORG." },
	{ "deny recipient_domain = *.example.org", "deny recipient_domain = *.example.org" },
	{ "deny recipient_local !recipient_local", "deny recipient_local !recipient_local" },
	{ "deny size > 10485760", "deny size > 10M" },
	{ "deny size>=1k size < 3G size <= 1000", "deny size >= 1K size < 3G size <= 1000" },
	{ "deny header = X-Spam-Flag", "deny header = X-Spam-Flag" },
	{ "deny rate > 10 / 1h per client", "deny rate > 10 / 1h per client" },
	{ "deny rate > 10/3600 per user", "deny rate > 10 / 1h per user" },
	{ "deny rate >= 5 /90m per sender", "deny rate >= 5 / 1h30m per sender" },
	{ "deny rate > 0/ 1d per client", "deny rate > 0 / 1d per client" },
	{ "deny message = \"550 5.7.1 x\" !authenticated client = 10.0.0.0/8 rate > 3 / 1m per client",
	  "deny message = \"550 5.7.1 x\" !authenticated client = 10.0.0.0/8 rate > 3 / 1m per client" },
	{ "deny tls message = \"550 5.7.1 late message\"",
	  "deny message = \"550 5.7.1 late message\" tls" },
};

static void test_parse_print(void **state)
{
	for (size_t i = 0; i < sizeof(ok_cases) / sizeof(ok_cases[0]); i++) {
		struct acl *a = acl_new("t", 1);
		struct err e;
		if (parse(a, ok_cases[i].line, 7, &e) < 0)
			fail_msg("[%s]: %s", ok_cases[i].line, e.msg);
		assert_int_equal(acl_n_rules(a), 1);
		assert_int_equal(acl_rule_line(a, 0), 7);
		struct buf b;
		buf_init(&b, 4096);
		acl_format_rule(&b, a, 0);
		const char *got = buf_cstr(&b);
		if (strcmp(got, ok_cases[i].canon) != 0)
			fail_msg("[%s]: printed [%s], want [%s]", ok_cases[i].line, got,
				 ok_cases[i].canon);
		/* The printed form parses back to itself. */
		struct acl *a2 = acl_new("t", 1);
		if (parse(a2, got, 7, &e) < 0)
			fail_msg("reparse [%s]: %s", got, e.msg);
		struct buf b2;
		buf_init(&b2, 4096);
		acl_format_rule(&b2, a2, 0);
		assert_string_equal(buf_cstr(&b2), got);
		buf_free(&b);
		buf_free(&b2);
		acl_free(a);
		acl_free(a2);
	}
}

/* ---- evaluation --------------------------------------------------------- */

struct ev {
	enum acl_stage stage;
	const char *client;   /* textual address or NULL */
	const char *user;
	int tls;
	const char *sender;
	const char *rcpt;
	int rcpt_local;       /* 0 unknown, RL_NO, RL_YES */
	uint64_t size;
	const char *headers;  /* ":"-joined names the message has */
};

static bool has_header(void *arg, const char *name)
{
	const char *h = arg;
	size_t n = strlen(name);
	for (const char *p = h; p && *p;) {
		const char *c = strchr(p, ':');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		if (len == n && strncasecmp(p, name, n) == 0)
			return true;
		p = c ? c + 1 : NULL;
	}
	return false;
}

static char *local_domains[] = { "example.org", "mx.example.org" };

static void make_ctx(struct acl_ctx *c, const struct ev *v)
{
	memset(c, 0, sizeof(*c));
	c->stage = v->stage;
	if (v->client) {
		if (inet_pton(AF_INET, v->client, c->client_addr) == 1)
			c->client_family = AF_INET;
		else if (inet_pton(AF_INET6, v->client, c->client_addr) == 1)
			c->client_family = AF_INET6;
		else
			fail_msg("bad test address %s", v->client);
	}
	c->auth_user = v->user;
	c->tls_version = v->tls;
	c->sender = v->sender;
	c->recipient = v->rcpt;
	c->recipient_local = v->rcpt_local - 1;
	c->size = v->size;
	c->has_header = v->headers ? has_header : NULL;
	c->hdr_arg = (void *)v->headers;
	c->local_domains = local_domains;
	c->n_local_domains = 2;
	c->now_s = 1000;
}

#define RCPT(...) { .stage = ACL_RCPT, __VA_ARGS__ }
#define RL_NO 1
#define RL_YES 2

struct eval_case {
	const char *acl;      /* rules, one per line */
	struct ev ev;
	enum acl_verdict want;
	const char *reply;    /* NULL: default for the verdict */
	int line;             /* deciding line (1-based in acl), 0: end */
};

static const struct eval_case eval_cases[] = {
	/* Verbs. */
	{ "", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "accept", RCPT(), ACL_ACCEPT, NULL, 1 },
	{ "deny", RCPT(), ACL_DENY, "550 5.7.1 Rejected by policy", 1 },
	{ "defer", RCPT(), ACL_DEFER, "451 4.7.1 Try again later", 1 },
	{ "warn\ndeny", RCPT(), ACL_DENY, NULL, 2 },
	{ "accept\ndeny", RCPT(), ACL_ACCEPT, NULL, 1 },
	{ "deny message = \"554 5.7.1 No thanks\"", RCPT(), ACL_DENY, "554 5.7.1 No thanks", 1 },
	{ "defer message = \"450 4.2.0 Busy\"", RCPT(), ACL_DEFER, "450 4.2.0 Busy", 1 },
	{ "deny tls\ndefer !tls\naccept", RCPT(), ACL_DEFER, NULL, 2 },
	/* authenticated */
	{ "deny authenticated", RCPT(.user = "alice"), ACL_DENY, NULL, 1 },
	{ "deny authenticated", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !authenticated", RCPT(), ACL_DENY, NULL, 1 },
	{ "deny !authenticated", RCPT(.user = "alice"), ACL_ACCEPT, NULL, 0 },
	{ "deny authenticated = bob : alice", RCPT(.user = "alice"), ACL_DENY, NULL, 1 },
	{ "deny authenticated = bob : alice", RCPT(.user = "carol"), ACL_ACCEPT, NULL, 0 },
	{ "deny authenticated = bob : alice", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !authenticated = bob", RCPT(.user = "alice"), ACL_DENY, NULL, 1 },
	{ "deny !authenticated = bob", RCPT(), ACL_DENY, NULL, 1 },
	/* tls, tls_version */
	{ "deny tls", RCPT(.tls = 0x0303), ACL_DENY, NULL, 1 },
	{ "deny tls", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !tls", RCPT(), ACL_DENY, NULL, 1 },
	{ "deny tls_version < TLSv1.2", RCPT(.tls = 0x0302), ACL_DENY, NULL, 1 },
	{ "deny tls_version < TLSv1.2", RCPT(.tls = 0x0303), ACL_ACCEPT, NULL, 0 },
	{ "deny tls_version < TLSv1.2", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !tls_version >= TLSv1.2", RCPT(), ACL_DENY, NULL, 1 },
	{ "deny !tls_version >= TLSv1.2", RCPT(.tls = 0x0301), ACL_DENY, NULL, 1 },
	{ "deny !tls_version >= TLSv1.2", RCPT(.tls = 0x0304), ACL_ACCEPT, NULL, 0 },
	{ "deny tls_version = TLSv1.3", RCPT(.tls = 0x0304), ACL_DENY, NULL, 1 },
	{ "deny tls_version = TLSv1.3", RCPT(.tls = 0x0303), ACL_ACCEPT, NULL, 0 },
	{ "deny tls_version > TLSv1.2", RCPT(.tls = 0x0304), ACL_DENY, NULL, 1 },
	{ "deny tls_version <= TLSv1.1", RCPT(.tls = 0x0302), ACL_DENY, NULL, 1 },
	/* client */
	{ "deny client = 192.0.2.0/24", RCPT(.client = "192.0.2.77"), ACL_DENY, NULL, 1 },
	{ "deny client = 192.0.2.0/24", RCPT(.client = "192.0.3.1"), ACL_ACCEPT, NULL, 0 },
	{ "deny client = 192.0.2.0/24", RCPT(.client = "::ffff:192.0.2.9"), ACL_DENY, NULL, 1 },
	{ "deny client = 192.0.2.0/24", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !client = 192.0.2.0/24", RCPT(.client = "198.51.100.1"), ACL_DENY, NULL, 1 },
	{ "deny !client = 192.0.2.0/24", RCPT(.client = "192.0.2.1"), ACL_ACCEPT, NULL, 0 },
	/* sender_domain, recipient_domain */
	{ "deny sender_domain = example.net", RCPT(.sender = "a@EXAMPLE.net."), ACL_DENY, NULL, 1 },
	{ "deny sender_domain = Example.NET.", RCPT(.sender = "a@example.net"), ACL_DENY, NULL, 1 },
	{ "deny sender_domain = example.net", RCPT(.sender = "a@example.com"), ACL_ACCEPT, NULL, 0 },
	{ "deny sender_domain = example.net", RCPT(.sender = ""), ACL_ACCEPT, NULL, 0 },
	{ "deny !sender_domain = example.net", RCPT(.sender = ""), ACL_DENY, NULL, 1 },
	{ "deny sender_domain = @local", RCPT(.sender = "b@mx.example.org"), ACL_DENY, NULL, 1 },
	{ "deny sender_domain = @local", RCPT(.sender = "b@sub.example.org"), ACL_ACCEPT, NULL, 0 },
	{ "deny sender_domain = *.example.org", RCPT(.sender = "b@sub.example.org"), ACL_DENY, NULL, 1 },
	{ "deny sender_domain = *.example.org", RCPT(.sender = "b@example.org"), ACL_ACCEPT, NULL, 0 },
	{ "deny sender_domain = *.example.org", RCPT(.sender = "b@badexample.org"), ACL_ACCEPT, NULL, 0 },
	{ "deny recipient_domain = a.example : b.example", RCPT(.rcpt = "x@b.example"), ACL_DENY, NULL, 1 },
	{ "deny recipient_domain = a.example", RCPT(.rcpt = "x@c.example"), ACL_ACCEPT, NULL, 0 },
	{ "deny !recipient_domain = @local", RCPT(.rcpt = "x@c.example"), ACL_DENY, NULL, 1 },
	{ "deny !recipient_domain = @local", RCPT(.rcpt = "x@example.org"), ACL_ACCEPT, NULL, 0 },
	/* recipient_local */
	{ "deny recipient_local", RCPT(.rcpt_local = RL_YES), ACL_DENY, NULL, 1 },
	{ "deny recipient_local", RCPT(.rcpt_local = RL_NO), ACL_ACCEPT, NULL, 0 },
	{ "deny recipient_local", RCPT(), ACL_ACCEPT, NULL, 0 },
	{ "deny !recipient_local", RCPT(.rcpt_local = RL_NO), ACL_DENY, NULL, 1 },
	/* size */
	{ "deny size > 1M", { .stage = ACL_MAIL, .size = 1048577 }, ACL_DENY, NULL, 1 },
	{ "deny size > 1M", { .stage = ACL_MAIL, .size = 1048576 }, ACL_ACCEPT, NULL, 0 },
	{ "deny size >= 1M", { .stage = ACL_DATA, .size = 1048576 }, ACL_DENY, NULL, 1 },
	{ "deny size < 10", { .stage = ACL_DATA, .size = 9 }, ACL_DENY, NULL, 1 },
	{ "deny size <= 10", { .stage = ACL_DATA, .size = 11 }, ACL_ACCEPT, NULL, 0 },
	{ "deny !size > 1K", { .stage = ACL_MAIL, .size = 0 }, ACL_DENY, NULL, 1 },
	/* header */
	{ "deny header = X-Spam", { .stage = ACL_DATA, .headers = "From:x-spam" }, ACL_DENY, NULL, 1 },
	{ "deny header = X-Spam", { .stage = ACL_DATA, .headers = "From:To" }, ACL_ACCEPT, NULL, 0 },
	{ "deny !header = Date", { .stage = ACL_DATA, .headers = "From:To" }, ACL_DENY, NULL, 1 },
	{ "deny header = Date", { .stage = ACL_DATA }, ACL_ACCEPT, NULL, 0 },
	/* AND of conditions, and rule order. */
	{ "deny client = 10.0.0.0/8 !authenticated", RCPT(.client = "10.1.2.3"), ACL_DENY, NULL, 1 },
	{ "deny client = 10.0.0.0/8 !authenticated", RCPT(.client = "10.1.2.3", .user = "a"), ACL_ACCEPT, NULL, 0 },
	{ "deny client = 10.0.0.0/8 !authenticated", RCPT(.client = "11.1.2.3"), ACL_ACCEPT, NULL, 0 },
	{ "accept authenticated\ndeny message = \"550 5.7.1 auth first\"",
	  RCPT(.user = "u"), ACL_ACCEPT, NULL, 1 },
	{ "accept authenticated\ndeny message = \"550 5.7.1 auth first\"",
	  RCPT(), ACL_DENY, "550 5.7.1 auth first", 2 },
	{ "# a comment line is the caller's business\ndefer recipient_domain = slow.example",
	  RCPT(.rcpt = "x@slow.example"), ACL_DEFER, NULL, 2 },
};

struct warn_log {
	int n;
	int line;
	char msg[128];
};

static void on_warn(void *arg, const struct acl *a, int line, const char *msg)
{
	struct warn_log *w = arg;
	w->n++;
	w->line = line;
	snprintf(w->msg, sizeof(w->msg), "%s", msg);
	assert_string_equal(acl_name(a), "t");
}

static struct acl *acl_from(const char *text)
{
	struct acl *a = acl_new("t", 1);
	int lineno = 0;
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		lineno++;
		if (n > 0 && p[0] != '#') {
			struct err e;
			char *l = strndup(p, n);
			if (parse(a, l, lineno, &e) < 0)
				fail_msg("[%s]: %s", l, e.msg);
			free(l);
		}
		p += n;
		if (*p)
			p++;
	}
	return a;
}

static void test_eval(void **state)
{
	for (size_t i = 0; i < sizeof(eval_cases) / sizeof(eval_cases[0]); i++) {
		const struct eval_case *t = &eval_cases[i];
		struct acl *a = acl_from(t->acl);
		struct acl_ctx ctx;
		make_ctx(&ctx, &t->ev);
		struct acl_result r;
		struct warn_log w = { 0 };
		acl_eval(a, &ctx, &r, on_warn, &w);
		if (r.verdict != t->want || r.rule_line != t->line)
			fail_msg("case %zu [%s]: verdict %d line %d, want %d line %d", i, t->acl,
				 r.verdict, r.rule_line, t->want, t->line);
		if (t->want == ACL_ACCEPT) {
			assert_null(r.reply);
		} else {
			const char *want = t->reply ? t->reply : t->want == ACL_DENY
				? "550 5.7.1 Rejected by policy" : "451 4.7.1 Try again later";
			if (!r.reply || strcmp(r.reply, want) != 0)
				fail_msg("case %zu [%s]: reply [%s], want [%s]", i, t->acl,
					 r.reply ? r.reply : "(null)", want);
		}
		acl_free(a);
	}
}

static void test_warn(void **state)
{
	struct acl *a = acl_from("warn message = \"client from ten\" client = 10.0.0.0/8\n"
				 "warn !tls\n"
				 "warn tls\n"
				 "deny authenticated");
	struct acl_ctx ctx;
	struct ev v = RCPT(.client = "10.9.9.9");
	make_ctx(&ctx, &v);
	struct acl_result r;
	struct warn_log w = { 0 };
	acl_eval(a, &ctx, &r, on_warn, &w);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	assert_int_equal(w.n, 2);
	assert_int_equal(w.line, 2);
	assert_string_equal(w.msg, "warn rule matched");
	memset(&w, 0, sizeof(w));
	ctx.tls_version = 0x0303;
	ctx.auth_user = "x";
	acl_eval(a, &ctx, &r, on_warn, &w);
	assert_int_equal(r.verdict, ACL_DENY);
	assert_int_equal(r.rule_line, 4);
	assert_int_equal(w.n, 2);
	assert_int_equal(w.line, 3);
	/* The first warning carried its message. */
	struct warn_log w1 = { 0 };
	ctx.tls_version = 0;
	ctx.auth_user = NULL;
	acl_free(a);
	a = acl_from("warn message = \"client from ten\" client = 10.0.0.0/8");
	acl_eval(a, &ctx, &r, on_warn, &w1);
	assert_int_equal(w1.n, 1);
	assert_string_equal(w1.msg, "client from ten");
	/* No callback: warnings are dropped, evaluation still goes on. */
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	/* No ACL at all accepts. */
	acl_eval(NULL, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	acl_free(a);
}

/* ---- CIDR --------------------------------------------------------------- */

static const struct { const char *list; const char *addr; bool match; } cidr_cases[] = {
	{ "0.0.0.0/0", "203.0.113.5", true },
	{ "0.0.0.0/0", "2001:db8::1", false },
	{ "<; ::/0", "2001:db8::1", true },
	{ "<; ::/0", "203.0.113.5", false },
	{ "192.0.2.1", "192.0.2.1", true },
	{ "192.0.2.1", "192.0.2.2", false },
	{ "192.0.2.1/32", "192.0.2.1", true },
	{ "192.0.2.0/31", "192.0.2.1", true },
	{ "192.0.2.0/31", "192.0.2.2", false },
	{ "10.0.0.0/8", "10.255.255.255", true },
	{ "10.0.0.0/8", "11.0.0.0", false },
	{ "172.16.0.0/12", "172.31.1.1", true },
	{ "172.16.0.0/12", "172.32.0.1", false },
	{ "192.0.2.128/25", "192.0.2.127", false },
	{ "192.0.2.128/25", "192.0.2.200", true },
	{ "<; 2001:db8::1/128", "2001:db8::1", true },
	{ "<; 2001:db8::1/128", "2001:db8::2", false },
	{ "<; 2001:db8::1", "2001:db8::1", true },
	{ "2001::db8::::/32", "2001:db8:ffff::1", true },
	{ "2001::db8::::/32", "2001:db9::1", false },
	{ "<; 2001:db8::/33", "2001:db8:7fff::1", true },
	{ "<; 2001:db8::/33", "2001:db8:8000::1", false },
	{ "<; ::1 ; 10.0.0.0/8", "::1", true },
	{ "<; ::1 ; 10.0.0.0/8", "10.0.0.1", true },
	{ "<; ::1 ; 10.0.0.0/8", "::2", false },
	{ "::::1", "::1", true },
	{ "<; ::ffff:192.0.2.0/120", "::ffff:192.0.2.3", false }, /* mapped is matched as IPv4 */
	{ "192.0.2.0/24", "::ffff:192.0.2.3", true },
	{ "<; fe80::/10", "febf::1", true },
	{ "<; fe80::/10", "fec0::1", false },
};

static void test_cidr(void **state)
{
	for (size_t i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		struct acl *a = acl_new("t", 1);
		struct err e;
		char line[200];
		snprintf(line, sizeof(line), "deny client = \"%s\"", cidr_cases[i].list);
		if (parse(a, line, 1, &e) < 0)
			fail_msg("[%s]: %s", line, e.msg);
		struct ev v = RCPT(.client = cidr_cases[i].addr);
		struct acl_ctx ctx;
		make_ctx(&ctx, &v);
		struct acl_result r;
		acl_eval(a, &ctx, &r, NULL, NULL);
		if ((r.verdict == ACL_DENY) != cidr_cases[i].match)
			fail_msg("%s in %s: got %d", cidr_cases[i].addr, cidr_cases[i].list,
				 r.verdict == ACL_DENY);
		acl_free(a);
	}
}

/* ---- stages ------------------------------------------------------------- */

static const struct { const char *rule; unsigned ok; } stage_cases[] = {
	/* bits: connect helo mail rcpt data */
	{ "deny", 0x1f },
	{ "deny authenticated tls tls_version < TLSv1.2 client = 10.0.0.0/8", 0x1f },
	{ "deny rate > 1 / 1m per client", 0x1f },
	{ "deny rate > 1 / 1m per user", 0x1f },
	{ "deny rate > 1 / 1m per sender", 0x1c },
	{ "deny sender_domain = a.example", 0x1c },
	{ "deny recipient_domain = a.example", 0x08 },
	{ "deny !recipient_local", 0x08 },
	{ "deny size > 1", 0x14 },
	{ "deny header = Subject", 0x10 },
	{ "deny header = Subject size > 1", 0x10 },
	{ "deny recipient_local size > 1", 0x00 },
};

static void test_stages(void **state)
{
	for (size_t i = 0; i < sizeof(stage_cases) / sizeof(stage_cases[0]); i++) {
		struct acl *a = acl_new("chk", 1);
		struct err e;
		assert_int_equal(parse(a, "accept tls", 4, &e), 0);
		if (parse(a, stage_cases[i].rule, 5, &e) < 0)
			fail_msg("[%s]: %s", stage_cases[i].rule, e.msg);
		assert_int_equal(acl_stages(a), stage_cases[i].ok);
		for (int s = 0; s < ACL_NSTAGES; s++) {
			memset(&e, 0, sizeof(e));
			int r = acl_check_stage(a, (enum acl_stage)s, &e);
			bool ok = stage_cases[i].ok & (1u << s);
			if ((r == 0) != ok)
				fail_msg("[%s] stage %s: %d", stage_cases[i].rule,
					 acl_stage_name((enum acl_stage)s), r);
			if (!ok && !strstr(e.msg, "ACL chk (line 5) uses "))
				fail_msg("message [%s]", e.msg);
		}
		acl_free(a);
	}
	struct acl *a = acl_new("chk", 1);
	struct err e;
	assert_int_equal(parse(a, "deny size > 1M", 9, &e), 0);
	assert_int_equal(acl_check_stage(a, ACL_RCPT, &e), -1);
	assert_string_equal(e.msg, "ACL chk (line 9) uses size, which has no meaning at the rcpt "
			    "stage (only at: mail, data)");
	acl_free(a);
}

/* ---- rate --------------------------------------------------------------- */

static void test_rate_window(void **state)
{
	struct rate_table *t = rate_new(100, 42);
	/* 5 hits in window [0,60), at t = 10. */
	for (int i = 1; i <= 5; i++)
		assert_int_equal(rate_hit(t, "k", 1, 60, 10), (uint64_t)i);
	/* Another key counts apart. */
	assert_int_equal(rate_hit(t, "j", 1, 60, 10), 1);
	/* Next window, at its start: the whole previous window still counts. */
	assert_int_equal(rate_hit(t, "k", 1, 60, 60), 6);
	/* Half-way: half of the previous 5 (rounded up) + 2 current. */
	assert_int_equal(rate_hit(t, "k", 1, 60, 90), 2 + 3);
	/* Late in the window: the previous one weighs 1/60 (rounded up). */
	assert_int_equal(rate_hit(t, "k", 1, 60, 119), 3 + 1);
	/* Window [120,180): previous = 3 events of [60,120). */
	assert_int_equal(rate_hit(t, "k", 1, 60, 150), 1 + 2);
	/* A gap longer than a window forgets everything. */
	assert_int_equal(rate_hit(t, "k", 1, 60, 1000), 1);
	/* A clock step backwards counts in the current window. */
	assert_int_equal(rate_hit(t, "k", 1, 60, 500), 2);
	/* Another window length for the same key starts over. */
	assert_int_equal(rate_hit(t, "k", 1, 3600, 1000), 1);
	assert_int_equal(rate_count(t), 2);
	rate_free(t);
}

static void test_rate_bound(void **state)
{
	struct rate_table *t = rate_new(3, 7);
	char k[16];
	for (int i = 0; i < 3; i++) {
		snprintf(k, sizeof(k), "key%d", i);
		assert_int_equal(rate_hit(t, k, strlen(k), 60, 1), 1);
		assert_int_equal(rate_hit(t, k, strlen(k), 60, 1), 2);
	}
	assert_int_equal(rate_count(t), 3);
	/* key0 is the least recently hit: touching it makes key1 the oldest. */
	assert_int_equal(rate_hit(t, "key0", 4, 60, 2), 3);
	assert_int_equal(rate_hit(t, "key3", 4, 60, 2), 1);
	assert_int_equal(rate_count(t), 3);
	assert_int_equal(rate_hit(t, "key0", 4, 60, 2), 4);   /* kept */
	assert_int_equal(rate_hit(t, "key2", 4, 60, 2), 3);   /* kept */
	assert_int_equal(rate_hit(t, "key1", 4, 60, 2), 1);   /* was forgotten */
	assert_int_equal(rate_count(t), 3);
	/* Many keys never grow the table. */
	for (int i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "x%d", i);
		rate_hit(t, k, strlen(k), 60, 3);
	}
	assert_int_equal(rate_count(t), 3);
	rate_free(t);
	/* Empty keys and a bound of 0 (taken as 1) work too. */
	t = rate_new(0, 0);
	assert_int_equal(rate_hit(t, "", 0, 0, 0), 1);
	assert_int_equal(rate_hit(t, "", 0, 0, 0), 2);
	assert_int_equal(rate_hit(t, "a", 1, 0, 0), 1);
	assert_int_equal(rate_count(t), 1);
	rate_free(t);
}

static void test_rate_condition(void **state)
{
	struct rate_table *t = rate_new(1000, 1);
	struct acl *a = acl_from("defer message = \"450 4.7.1 slow down\" rate > 3 / 1m per client\n"
		     "deny authenticated rate >= 5 / 1h per user");
	struct ev v = RCPT(.client = "192.0.2.1");
	struct acl_ctx ctx;
	make_ctx(&ctx, &v);
	ctx.rates = t;
	struct acl_result r;
	for (int i = 1; i <= 3; i++) {
		acl_eval(a, &ctx, &r, NULL, NULL);
		assert_int_equal(r.verdict, ACL_ACCEPT);
	}
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DEFER);
	assert_string_equal(r.reply, "450 4.7.1 slow down");
	/* Another client has its own count. */
	ctx.client_addr[3] = 2;
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	/* Two windows later the first client is free again. */
	ctx.client_addr[3] = 1;
	ctx.now_s += 180;
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	/* Rule 2 counts only when reached with authenticated true (AND stops early). */
	ctx.now_s += 600;
	size_t before = rate_count(t);
	for (int i = 0; i < 3; i++) {
		ctx.client_addr[3] = (uint8_t)(10 + i);
		acl_eval(a, &ctx, &r, NULL, NULL);
	}
	/* Three new client keys for rule 1, none for rule 2. */
	assert_int_equal(rate_count(t), before + 3);
	ctx.auth_user = "alice";
	for (int i = 0; i < 4; i++) {
		ctx.client_addr[3] = (uint8_t)(20 + i);
		acl_eval(a, &ctx, &r, NULL, NULL);
		assert_int_equal(r.verdict, ACL_ACCEPT);
	}
	ctx.client_addr[3] = 30;
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DENY);
	assert_int_equal(r.rule_line, 2);
	/* Another ACL with the same rule counts on its own. */
	struct acl *b = acl_new("other", 1);
	struct err e;
	assert_int_equal(parse(b, "deny authenticated rate >= 5 / 1h per user", 2, &e), 0);
	acl_eval(b, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	/* Without a table, rate conditions never hold; without a user, per user neither. */
	ctx.rates = NULL;
	acl_eval(a, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	ctx.rates = t;
	ctx.auth_user = NULL;
	struct acl *c = acl_from("deny rate >= 0 / 1h per user\ndeny rate >= 1 / 1h per sender");
	acl_eval(c, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	ctx.sender = "s@example.net";
	acl_eval(c, &ctx, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DENY);
	assert_int_equal(r.rule_line, 2);
	acl_free(a);
	acl_free(b);
	acl_free(c);
	rate_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_print),
		cmocka_unit_test(test_eval),
		cmocka_unit_test(test_warn),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_stages),
		cmocka_unit_test(test_rate_window),
		cmocka_unit_test(test_rate_bound),
		cmocka_unit_test(test_rate_condition),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
