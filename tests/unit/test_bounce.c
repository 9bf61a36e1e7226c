/* Tests of the retry schedule and of delivery status reports: who gets a
 * report (RFC 3461 NOTIFY), and the report read back with a small MIME
 * reader that checks RFC 6522 structure and RFC 3464 section 2 fields. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deliver/deliver.h"
#include "smtp/smtp.h"

/* ---- retry schedule ------------------------------------------------------ */

static void test_retry_table(void **state)
{
	const int64_t T = 1700000000;
	static const struct {
		unsigned min, max, life, attempts;
		int64_t received, now, want; /* relative to T except INT64 cases */
		const char *what;
	} t[] = {
		{ 60, 3600, 5 * 86400, 1, 0, 0, 60, "first retry after min" },
		{ 60, 3600, 5 * 86400, 2, 0, 100, 100 + 120, "doubles" },
		{ 60, 3600, 5 * 86400, 3, 0, 100, 100 + 240, "doubles again" },
		{ 60, 3600, 5 * 86400, 6, 0, 100, 100 + 1920, "60*32" },
		{ 60, 3600, 5 * 86400, 7, 0, 100, 100 + 3600, "60*64 capped at max" },
		{ 60, 3600, 5 * 86400, 40, 0, 100, 100 + 3600, "many attempts: max" },
		{ 60, 3600, 5 * 86400, UINT_MAX, 0, 100, 100 + 3600, "huge attempts: max" },
		{ 60, 3600, 5 * 86400, 0, 0, 0, 60, "attempts 0 read as 1" },
		{ 60, 3600, 3000, 7, 0, 2000, 3000, "clamped to end of lifetime" },
		{ 60, 3600, 3000, 1, 0, 2999, 3000, "one second before the end" },
		{ 60, 3600, 3000, 1, 0, 3000, -1, "at the end: give up" },
		{ 60, 3600, 3000, 1, 0, 5000, -1, "past the end: give up" },
		{ 60, 3600, 0, 1, 0, 0, -1, "lifetime 0: never retried" },
		{ 0, 0, 1000, 5, 0, 10, 11, "zero min/max: 1 s, not a busy loop" },
		{ 600, 60, 100000, 9, 0, 10, 610, "max below min: min" },
		{ 1, UINT_MAX, UINT_MAX, UINT_MAX, 0, 0, UINT_MAX, "32-bit extremes" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dlv_retry_conf rc = { t[i].min, t[i].max, t[i].life };
		int64_t got = dlv_retry_next(&rc, t[i].attempts, T + t[i].received, T + t[i].now);
		int64_t want = t[i].want < 0 ? -1 : T + t[i].want;
		if (got != want)
			fail_msg("%s: got %lld want %lld", t[i].what, (long long)got,
				 (long long)want);
	}
	/* Times at the edge of int64: no overflow, no wrap to the past. */
	struct dlv_retry_conf rc = { 60, 3600, UINT_MAX };
	assert_int_equal(dlv_retry_next(&rc, UINT_MAX, INT64_MAX - 10, INT64_MAX - 5), INT64_MAX);
	assert_int_equal(dlv_retry_next(&rc, 1, INT64_MAX - 100000, INT64_MAX - 1000),
			 INT64_MAX - 1000 + 60);
	assert_int_equal(dlv_retry_next(&rc, 1, INT64_MIN, INT64_MIN + 5), INT64_MIN + 65);
	/* never earlier than now, never later than the end, for a sweep */
	struct dlv_retry_conf rc2 = { 300, 14400, 4 * 86400 };
	for (unsigned a = 1; a < 100; a++) {
		for (int64_t now = 0; now < 4 * 86400 + 10; now += 7777) {
			int64_t n = dlv_retry_next(&rc2, a, 0, now);
			if (now >= 4 * 86400) {
				assert_int_equal(n, -1);
			} else {
				assert_true(n > now);
				assert_true(n <= 4 * 86400);
				assert_true(n - now <= 14400);
			}
		}
	}
}

/* ---- NOTIFY -------------------------------------------------------------- */

static void test_notify_table(void **state)
{
	enum { N = SMTP_NOTIFY_NEVER, S = SMTP_NOTIFY_SUCCESS, F = SMTP_NOTIFY_FAILURE,
	       D = SMTP_NOTIFY_DELAY };
	static const struct {
		const char *sender;
		unsigned notify;
		enum dlv_action action;
		bool want;
	} t[] = {
		/* no NOTIFY: failures and delays, never success */
		{ "a@b", 0, DLV_FAILED, true },
		{ "a@b", 0, DLV_DELAYED, true },
		{ "a@b", 0, DLV_DELIVERED, false },
		{ "a@b", 0, DLV_RELAYED, false },
		{ "a@b", 0, DLV_EXPANDED, false },
		/* NEVER: nothing */
		{ "a@b", N, DLV_FAILED, false },
		{ "a@b", N, DLV_DELAYED, false },
		{ "a@b", N, DLV_DELIVERED, false },
		/* explicit list without FAILURE: no failure report */
		{ "a@b", S, DLV_FAILED, false },
		{ "a@b", D, DLV_FAILED, false },
		{ "a@b", S | D, DLV_FAILED, false },
		/* only what was asked */
		{ "a@b", F, DLV_FAILED, true },
		{ "a@b", F, DLV_DELAYED, false },
		{ "a@b", F, DLV_DELIVERED, false },
		{ "a@b", D, DLV_DELAYED, true },
		{ "a@b", S, DLV_DELIVERED, true },
		{ "a@b", S, DLV_RELAYED, true },
		{ "a@b", S, DLV_EXPANDED, true },
		{ "a@b", S, DLV_DELAYED, false },
		{ "a@b", S | F | D, DLV_FAILED, true },
		{ "a@b", S | F | D, DLV_DELAYED, true },
		{ "a@b", S | F | D, DLV_DELIVERED, true },
		/* null sender: never, whatever NOTIFY says */
		{ "", 0, DLV_FAILED, false },
		{ "", F, DLV_FAILED, false },
		{ "", S, DLV_DELIVERED, false },
		{ NULL, 0, DLV_FAILED, false },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (dlv_report_wanted(t[i].sender, t[i].notify, t[i].action) != t[i].want)
			fail_msg("case %zu: sender=%s notify=%u action=%d want %d", i,
				 t[i].sender ? t[i].sender : "(null)", t[i].notify, t[i].action,
				 t[i].want);
}

/* ---- a minimal MIME reader -------------------------------------------------- */

struct part {
	const char *hdr;
	size_t hdr_len;
	const char *body;
	size_t body_len;
};

struct view {
	const char *hdr;
	size_t hdr_len;
	char boundary[128];
	struct part parts[8];
	size_t n_parts;
	/* the status part split at blank lines: [0] per-message, then one per
	 * recipient */
	struct part groups[16];
	size_t n_groups;
};

/* Every line ends in CRLF, no lone CR or LF, none longer than 998. */
static void check_lines(const char *m, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		if (m[i] == '\r') {
			if (i + 1 >= n || m[i + 1] != '\n')
				fail_msg("lone CR at %zu", i);
			i++;
			col = 0;
			continue;
		}
		if (m[i] == '\n')
			fail_msg("bare LF at %zu", i);
		if (++col > 998)
			fail_msg("line longer than 998 at %zu", i);
	}
	assert_true(n >= 2 && m[n - 2] == '\r' && m[n - 1] == '\n');
}

/* The unfolded value of the first field called name in h[0..n), leading
 * white space dropped; NULL if absent.  Valid until the 8th next call. */
static const char *field(const char *h, size_t n, const char *name)
{
	static char ring[8][16384];
	static unsigned next;
	size_t nl = strlen(name);
	size_t pos = 0;
	while (pos < n) {
		const char *eol = memmem(h + pos, n - pos, "\r\n", 2);
		size_t end = eol ? (size_t)(eol - h) : n;
		if (end - pos > nl && h[pos + nl] == ':' && strncasecmp(h + pos, name, nl) == 0) {
			char *out = ring[next++ % 8];
			size_t o = 0;
			size_t p = pos + nl + 1;
			for (;;) {
				for (; p < end && o < 16383; p++)
					out[o++] = h[p];
				size_t np = end + 2;
				if (np >= n || (h[np] != ' ' && h[np] != '\t'))
					break;
				const char *e2 = memmem(h + np, n - np, "\r\n", 2);
				p = np;
				end = e2 ? (size_t)(e2 - h) : n;
			}
			out[o] = '\0';
			char *v = out;
			while (*v == ' ' || *v == '\t')
				v++;
			return v;
		}
		pos = end + 2;
	}
	return NULL;
}

static size_t field_count(const char *h, size_t n, const char *name)
{
	size_t c = 0, nl = strlen(name), pos = 0;
	while (pos < n) {
		const char *eol = memmem(h + pos, n - pos, "\r\n", 2);
		size_t end = eol ? (size_t)(eol - h) : n;
		if (end - pos > nl && h[pos + nl] == ':' && strncasecmp(h + pos, name, nl) == 0)
			c++;
		pos = end + 2;
	}
	return c;
}

static void split_part(const char *c, size_t n, struct part *p)
{
	if (n >= 2 && c[0] == '\r' && c[1] == '\n') {
		p->hdr = c;
		p->hdr_len = 0;
		p->body = c + 2;
		p->body_len = n - 2;
		return;
	}
	const char *e = memmem(c, n, "\r\n\r\n", 4);
	assert_non_null(e);
	p->hdr = c;
	p->hdr_len = (size_t)(e - c) + 2;
	p->body = e + 4;
	p->body_len = n - (size_t)(e + 4 - c);
}

/* Reads a report: header, boundary, the parts, the status groups; asserts
 * the structure RFC 6522 and RFC 3464 section 2 require. */
static void read_report(const char *m, size_t n, struct view *v)
{
	memset(v, 0, sizeof(*v));
	check_lines(m, n);
	const char *e = memmem(m, n, "\r\n\r\n", 4);
	assert_non_null(e);
	v->hdr = m;
	v->hdr_len = (size_t)(e - m) + 2;
	static const char *const required[] = { "From", "To", "Subject", "Date", "Message-ID",
						"MIME-Version", "Auto-Submitted", "Content-Type" };
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
		if (field_count(v->hdr, v->hdr_len, required[i]) != 1)
			fail_msg("header %s not present exactly once", required[i]);
	assert_string_equal(field(v->hdr, v->hdr_len, "Auto-Submitted"), "auto-replied");
	assert_string_equal(field(v->hdr, v->hdr_len, "MIME-Version"), "1.0");
	const char *ct = field(v->hdr, v->hdr_len, "Content-Type");
	assert_int_equal(strncmp(ct, "multipart/report;", 17), 0);
	const char *b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	const char *q = strchr(b, '"');
	assert_non_null(q);
	assert_true(q > b && (size_t)(q - b) <= 70); /* RFC 2046 5.1.1 */
	memcpy(v->boundary, b, (size_t)(q - b));
	v->boundary[q - b] = '\0';

	/* Delimiter lines are exactly "--b" or "--b--". */
	size_t bl = strlen(v->boundary);
	const char *body = e + 4;
	size_t bn = n - (size_t)(body - m);
	size_t pos = 0;
	const char *cur = NULL;
	bool closed = false;
	while (pos < bn && !closed) {
		const char *eol = memmem(body + pos, bn - pos, "\r\n", 2);
		assert_non_null(eol);
		size_t len = (size_t)(eol - (body + pos));
		const char *line = body + pos;
		bool delim = len >= 2 + bl && line[0] == '-' && line[1] == '-' &&
			     memcmp(line + 2, v->boundary, bl) == 0;
		if (delim) {
			bool last = len == 4 + bl && memcmp(line + 2 + bl, "--", 2) == 0;
			if (!last && len != 2 + bl)
				fail_msg("line starting with the boundary inside a part");
			if (cur) {
				assert_true(v->n_parts < 8);
				/* the CRLF before the delimiter is the delimiter's */
				split_part(cur, (size_t)(line - 2 - cur), &v->parts[v->n_parts++]);
			}
			cur = eol + 2;
			closed = last;
		}
		pos = (size_t)(eol + 2 - body);
	}
	assert_true(closed);
	assert_int_equal(v->n_parts, 3);
	const char *t1 = field(v->parts[0].hdr, v->parts[0].hdr_len, "Content-Type");
	assert_non_null(t1);
	assert_int_equal(strncmp(t1, "text/plain", 10), 0);

	/* The status part: groups of fields separated by blank lines. */
	const struct part *st = &v->parts[1];
	pos = 0;
	size_t gstart = 0;
	while (pos < st->body_len) {
		const char *eol = memmem(st->body + pos, st->body_len - pos, "\r\n", 2);
		assert_non_null(eol);
		size_t len = (size_t)(eol - (st->body + pos));
		if (len == 0) {
			assert_true(pos > gstart); /* no empty group */
			assert_true(v->n_groups < 16);
			v->groups[v->n_groups++] = (struct part){ st->body + gstart, pos - gstart,
								  NULL, 0 };
			gstart = pos + 2;
		}
		pos += len + 2;
	}
	if (gstart < st->body_len)
		v->groups[v->n_groups++] = (struct part){ st->body + gstart,
							  st->body_len - gstart, NULL, 0 };
	assert_true(v->n_groups >= 2);
	/* RFC 3464 2.2: Reporting-MTA is required; 2.3: Final-Recipient,
	 * Action and Status for each recipient. */
	assert_int_equal(field_count(v->groups[0].hdr, v->groups[0].hdr_len, "Reporting-MTA"), 1);
	assert_int_equal(field_count(v->groups[0].hdr, v->groups[0].hdr_len, "Final-Recipient"), 0);
	for (size_t g = 1; g < v->n_groups; g++) {
		const char *h = v->groups[g].hdr;
		size_t hn = v->groups[g].hdr_len;
		assert_int_equal(field_count(h, hn, "Final-Recipient"), 1);
		assert_int_equal(field_count(h, hn, "Action"), 1);
		assert_int_equal(field_count(h, hn, "Status"), 1);
		const char *s = field(h, hn, "Status");
		assert_true(strlen(s) >= 5 && (s[0] == '2' || s[0] == '4' || s[0] == '5') &&
			    s[1] == '.');
	}
}

static const char *part_type(const struct view *v, size_t i)
{
	return field(v->parts[i].hdr, v->parts[i].hdr_len, "Content-Type");
}

/* ---- composing ------------------------------------------------------------- */

static const char orig_msg[] = "Received: from client.example.org by mx.example.net\r\n"
			       "From: Alice <alice@example.org>\r\n"
			       "To: bob@example.com\r\n"
			       "Subject: lunch\r\n"
			       "\r\n"
			       "Shall we meet at noon?\r\n"
			       "-- \r\n"
			       "Alice\r\n";
#define ORIG_HDR_LEN 123 /* up to, not including, the empty line */

static struct dlv_report base_report(const struct dlv_report_rcpt *rc, size_t n)
{
	return (struct dlv_report){
		.reporting_mta = "mx.example.net",
		.queue_id = "1kq3vb0d4a8-00c3f-00",
		.envid = NULL,
		.arrival = 1700000000,
		.now = 1700003600,
		.to = "alice@example.org",
		.message_id = "1kq3vb0d4a8-00c3f-00.dsn@mx.example.net",
		.rcpts = rc,
		.n_rcpts = n,
		.headers_only = false,
		.return_max = 1024 * 1024,
	};
}

static void compose_ok(const struct dlv_report *r, const char *orig, size_t n, struct buf *out,
		       struct view *v)
{
	struct err e = { "" };
	buf_init(out, 4 * 1024 * 1024);
	if (dlv_report_compose(r, orig, n, out, &e) < 0)
		fail_msg("compose: %s", e.msg);
	read_report((const char *)buf_ptr(out), buf_len(out), v);
}

static void test_compose_failure(void **state)
{
	struct dlv_report_rcpt rc[] = {
		{ "bob@example.com", NULL, DLV_FAILED, "5.1.1", "mx.example.com",
		  "550 5.1.1 <bob@example.com>: no such user", DLV_DIAG_SMTP },
		{ "carol@example.com", NULL, DLV_FAILED, NULL, NULL, NULL, DLV_DIAG_GUESS },
	};
	struct dlv_report r = base_report(rc, 2);
	r.envid = "QQ314159";
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);

	assert_string_equal(field(v.hdr, v.hdr_len, "From"),
			    "Mail Delivery System <MAILER-DAEMON@mx.example.net>");
	assert_string_equal(field(v.hdr, v.hdr_len, "To"), "<alice@example.org>");
	assert_string_equal(field(v.hdr, v.hdr_len, "Subject"),
			    "Undelivered Mail Returned to Sender");
	assert_string_equal(field(v.hdr, v.hdr_len, "Date"), "Tue, 14 Nov 2023 23:13:20 +0000");
	assert_string_equal(field(v.hdr, v.hdr_len, "Message-ID"),
			    "<1kq3vb0d4a8-00c3f-00.dsn@mx.example.net>");
	assert_non_null(strstr(field(v.hdr, v.hdr_len, "Content-Type"),
			       "report-type=delivery-status;"));
	assert_string_equal(part_type(&v, 1), "message/delivery-status");
	assert_string_equal(part_type(&v, 2), "message/rfc822");
	/* the whole original, byte for byte */
	assert_int_equal(v.parts[2].body_len, strlen(orig_msg));
	assert_memory_equal(v.parts[2].body, orig_msg, strlen(orig_msg));

	/* per-message fields */
	const struct part *g = &v.groups[0];
	assert_string_equal(field(g->hdr, g->hdr_len, "Reporting-MTA"), "dns; mx.example.net");
	assert_string_equal(field(g->hdr, g->hdr_len, "Original-Envelope-Id"), "QQ314159");
	assert_string_equal(field(g->hdr, g->hdr_len, "Arrival-Date"),
			    "Tue, 14 Nov 2023 22:13:20 +0000");
	assert_string_equal(field(g->hdr, g->hdr_len, "X-Sluice-Queue-ID"),
			    "1kq3vb0d4a8-00c3f-00");
	/* per-recipient fields */
	assert_int_equal(v.n_groups, 3);
	g = &v.groups[1];
	assert_string_equal(field(g->hdr, g->hdr_len, "Final-Recipient"), "rfc822; bob@example.com");
	assert_string_equal(field(g->hdr, g->hdr_len, "Action"), "failed");
	assert_string_equal(field(g->hdr, g->hdr_len, "Status"), "5.1.1");
	assert_string_equal(field(g->hdr, g->hdr_len, "Remote-MTA"), "dns; mx.example.com");
	assert_string_equal(field(g->hdr, g->hdr_len, "Diagnostic-Code"),
			    "smtp; 550 5.1.1 <bob@example.com>: no such user");
	assert_string_equal(field(g->hdr, g->hdr_len, "Last-Attempt-Date"),
			    "Tue, 14 Nov 2023 23:13:20 +0000");
	assert_null(field(g->hdr, g->hdr_len, "Original-Recipient"));
	g = &v.groups[2];
	assert_string_equal(field(g->hdr, g->hdr_len, "Final-Recipient"),
			    "rfc822; carol@example.com");
	/* no status given: the generic one for the action */
	assert_string_equal(field(g->hdr, g->hdr_len, "Status"), "5.0.0");
	assert_null(field(g->hdr, g->hdr_len, "Remote-MTA"));
	assert_null(field(g->hdr, g->hdr_len, "Diagnostic-Code"));
	/* the human part names each recipient and the diagnostic */
	char *human = strndup(v.parts[0].body, v.parts[0].body_len);
	assert_non_null(strstr(human, "<bob@example.com>: failed"));
	assert_non_null(strstr(human, "<carol@example.com>: failed"));
	assert_non_null(strstr(human, "mx.example.com said: 550 5.1.1"));
	free(human);
	/* the outer message is plain 7bit */
	assert_null(field(v.hdr, v.hdr_len, "Content-Transfer-Encoding"));
	buf_free(&out);
}

static void test_compose_headers_only(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.2.2", NULL,
					  "552 mailbox full", DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	r.headers_only = true;
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_string_equal(part_type(&v, 2), "text/rfc822-headers");
	assert_int_equal(v.parts[2].body_len, ORIG_HDR_LEN);
	assert_memory_equal(v.parts[2].body, orig_msg, ORIG_HDR_LEN);
	assert_null(memmem(buf_ptr(&out), buf_len(&out), "Shall we meet", 13));
	buf_free(&out);

	/* A message that is only a header (no empty line): all of it. */
	const char *hdr_only = "Subject: x\r\nFrom: a@b\r\n";
	compose_ok(&r, hdr_only, strlen(hdr_only), &out, &v);
	assert_int_equal(v.parts[2].body_len, strlen(hdr_only));
	buf_free(&out);
}

static void test_compose_return_max(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.0.0", NULL,
					  NULL, DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	struct buf out;
	struct view v;
	static const struct {
		uint64_t max;
		const char *type;
		size_t len; /* of part 3's body */
	} t[] = {
		{ sizeof(orig_msg) - 1, "message/rfc822", sizeof(orig_msg) - 1 }, /* just fits */
		{ 100000, "message/rfc822", sizeof(orig_msg) - 1 },
		{ sizeof(orig_msg) - 2, "text/rfc822-headers", ORIG_HDR_LEN }, /* one byte short */
		{ ORIG_HDR_LEN, "text/rfc822-headers", ORIG_HDR_LEN },
		/* the header itself too long: cut at the last line end that fits */
		{ ORIG_HDR_LEN - 1, "text/rfc822-headers", 107 },
		{ 60, "text/rfc822-headers", 53 },
		{ 10, "text/rfc822-headers", 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r.return_max = t[i].max;
		compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
		if (strcmp(part_type(&v, 2), t[i].type) != 0 || v.parts[2].body_len != t[i].len)
			fail_msg("return_max %llu: %s %zu", (unsigned long long)t[i].max,
				 part_type(&v, 2), v.parts[2].body_len);
		assert_true(v.parts[2].body_len <= t[i].max);
		assert_memory_equal(v.parts[2].body, orig_msg, t[i].len);
		buf_free(&out);
	}
	/* An original without a final line end is returned with one added
	 * before the closing delimiter. */
	r.return_max = 1000;
	compose_ok(&r, "Subject: x\r\n\r\nno newline", 24, &out, &v);
	assert_int_equal(v.parts[2].body_len, 26);
	assert_memory_equal(v.parts[2].body, "Subject: x\r\n\r\nno newline\r\n", 26);
	buf_free(&out);
}

static void test_compose_hostile(void **state)
{
	/* A remote server tries to end the field and write its own. */
	struct dlv_report_rcpt rc[] = {
		{ "bob@example.com", NULL, DLV_FAILED, "5.7.1\r\nX-Evil: 1",
		  "mx.example.com\r\nX-Evil-Host: 1",
		  "550 rejected\r\nX-Injected: yes\r\n\r\nfake body\x01\x7f\xff end", DLV_DIAG_GUESS },
	};
	struct dlv_report r = base_report(rc, 1);
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	const char *m = (const char *)buf_ptr(&out);
	assert_null(memmem(m, buf_len(&out), "\r\nX-Injected", 12));
	assert_null(memmem(m, buf_len(&out), "\r\nX-Evil", 8));
	assert_null(memmem(m, buf_len(&out), "\r\nfake body", 11));
	const struct part *g = &v.groups[1];
	assert_string_equal(field(g->hdr, g->hdr_len, "Diagnostic-Code"),
			    "smtp; 550 rejected X-Injected: yes fake body ? end");
	/* a status that is not a status code is replaced */
	assert_string_equal(field(g->hdr, g->hdr_len, "Status"), "5.0.0");
	/* what is no host name is no Remote-MTA of type dns */
	assert_null(field(g->hdr, g->hdr_len, "Remote-MTA"));
	assert_int_equal(v.n_groups, 2);
	/* no 8-bit byte slipped into a 7bit report */
	for (size_t i = 0; i < buf_len(&out); i++)
		assert_true(buf_ptr(&out)[i] < 0x80);
	buf_free(&out);

	/* Remote-MTA (RFC 3464 2.3.5, type dns) names the host only: not the
	 * address that follows it, and nothing for an LMTP socket path or a
	 * bare address; the human part keeps the whole. */
	static const struct {
		const char *mta, *field;
	} mt[] = {
		{ "mx.example.com[192.0.2.1]", "dns; mx.example.com" },
		{ "mx.example.com", "dns; mx.example.com" },
		{ "/run/dovecot/lmtp", NULL },
		{ "::1[::1]", NULL },
		{ "192.0.2.1[192.0.2.1]", NULL },
	};
	for (size_t i = 0; i < sizeof(mt) / sizeof(mt[0]); i++) {
		struct dlv_report_rcpt one[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1",
						   mt[i].mta, "550 no", DLV_DIAG_GUESS } };
		r = base_report(one, 1);
		compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
		const char *f = field(v.groups[1].hdr, v.groups[1].hdr_len, "Remote-MTA");
		if (mt[i].field)
			assert_string_equal(f, mt[i].field);
		else
			assert_null(f);
		assert_non_null(memmem(v.parts[0].body, v.parts[0].body_len, mt[i].mta,
				       strlen(mt[i].mta)));
		buf_free(&out);
	}

	/* Long texts: folded at spaces, words too long for a line are cut;
	 * no line passes 998 (check_lines). */
	char *longw = malloc(5001);
	memset(longw, 'w', 5000);
	longw[5000] = '\0';
	char *words = malloc(6001);
	for (size_t i = 0; i < 6000; i++)
		words[i] = i % 10 == 9 ? ' ' : (char)('a' + i % 10);
	words[6000] = '\0';
	struct dlv_report_rcpt rc2[] = {
		{ "bob@example.com", NULL, DLV_FAILED, "5.0.0", NULL, longw, DLV_DIAG_SMTP },
		{ "carol@example.com", NULL, DLV_FAILED, "5.0.0", NULL, words, DLV_DIAG_SMTP },
	};
	r = base_report(rc2, 2);
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	const char *d = field(v.groups[1].hdr, v.groups[1].hdr_len, "Diagnostic-Code");
	assert_int_equal(strncmp(d, "smtp; www", 9), 0);
	/* "smtp;" then the word alone on a continuation line of 998 */
	assert_int_equal(strlen(d), 6 + 997);
	/* folding keeps every word: unfolded, it is the text again */
	d = field(v.groups[2].hdr, v.groups[2].hdr_len, "Diagnostic-Code");
	assert_int_equal(strncmp(d, "smtp; ", 6), 0);
	/* unfolding turns CRLF SP into SP, so the words read back with
	 * single spaces (the original's trailing space is dropped) */
	char *want = strndup(words, 5999);
	assert_string_equal(d + 6, want);
	free(want);
	free(longw);
	free(words);
	buf_free(&out);
}

static void test_compose_boundary(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					  NULL, DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	char first[128];
	snprintf(first, sizeof(first), "%s", v.boundary);
	assert_non_null(strstr(first, "1kq3vb0d4a8-00c3f-00"));
	buf_free(&out);

	/* An original that contains the boundary we would pick, and the next
	 * two as well (same stem, counters 0, 1, 2), plus one in the middle
	 * of a line that does not matter. */
	size_t stem = strlen(first) - 8;
	struct buf hostile;
	buf_init(&hostile, 1 << 20);
	buf_puts(&hostile, "Subject: tricky\r\n\r\n");
	for (int i = 0; i < 3; i++)
		buf_printf(&hostile, "--%.*s%08x\r\nContent-Type: text/html\r\n\r\nX\r\n", (int)stem,
			   first, (unsigned)i);
	buf_printf(&hostile, "--%.*s%08x--\r\n", (int)stem, first, 2u);
	buf_printf(&hostile, "text --%.*s%08x\r\n", (int)stem, first, 3u);
	compose_ok(&r, (const char *)buf_ptr(&hostile), buf_len(&hostile), &out, &v);
	assert_string_not_equal(v.boundary, first);
	/* read_report failed already if a line began with the boundary; the
	 * original comes back whole */
	assert_int_equal(v.parts[2].body_len, buf_len(&hostile));
	assert_memory_equal(v.parts[2].body, buf_ptr(&hostile), buf_len(&hostile));
	assert_int_equal(strncmp(v.boundary + stem, "00000003", 8), 0);
	buf_free(&out);
	buf_free(&hostile);
}

static void test_compose_delay_success(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_DELAYED, "4.4.1",
					  "mx.example.com", "421 try later", DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_string_equal(field(v.hdr, v.hdr_len, "Subject"),
			    "Delayed Mail (still being retried)");
	const struct part *g = &v.groups[1];
	assert_string_equal(field(g->hdr, g->hdr_len, "Action"), "delayed");
	assert_string_equal(field(g->hdr, g->hdr_len, "Status"), "4.4.1");
	assert_non_null(field(g->hdr, g->hdr_len, "Last-Attempt-Date"));
	char *human = strndup(v.parts[0].body, v.parts[0].body_len);
	assert_non_null(strstr(human, "no need to send it again"));
	free(human);
	buf_free(&out);

	/* failed and delayed together: it is a failure report */
	struct dlv_report_rcpt mix[] = {
		{ "bob@example.com", NULL, DLV_DELAYED, "4.4.1", NULL, NULL, DLV_DIAG_GUESS },
		{ "carol@example.com", NULL, DLV_FAILED, "5.1.1", NULL, NULL, DLV_DIAG_GUESS },
	};
	r = base_report(mix, 2);
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_string_equal(field(v.hdr, v.hdr_len, "Subject"),
			    "Undelivered Mail Returned to Sender");
	assert_string_equal(field(v.groups[1].hdr, v.groups[1].hdr_len, "Action"), "delayed");
	assert_string_equal(field(v.groups[2].hdr, v.groups[2].hdr_len, "Action"), "failed");
	buf_free(&out);

	static const struct {
		enum dlv_action a;
		const char *name;
	} ok[] = { { DLV_DELIVERED, "delivered" }, { DLV_RELAYED, "relayed" },
		   { DLV_EXPANDED, "expanded" } };
	for (size_t i = 0; i < 3; i++) {
		struct dlv_report_rcpt s[] = { { "bob@example.com", NULL, ok[i].a, NULL,
						 "mx.example.com", "250 ok", DLV_DIAG_GUESS } };
		r = base_report(s, 1);
		compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
		assert_string_equal(field(v.hdr, v.hdr_len, "Subject"),
				    "Successful Mail Delivery Report");
		g = &v.groups[1];
		assert_string_equal(field(g->hdr, g->hdr_len, "Action"), ok[i].name);
		assert_string_equal(field(g->hdr, g->hdr_len, "Status"), "2.0.0");
		assert_null(field(g->hdr, g->hdr_len, "Last-Attempt-Date"));
		buf_free(&out);
	}
}

static void test_compose_orcpt(void **state)
{
	struct dlv_report_rcpt rc[] = {
		{ "bob@example.com", "rfc822;b+2Bob@example.com", DLV_FAILED, "5.1.1", NULL, NULL, DLV_DIAG_GUESS },
		{ "carol@example.com", NULL, DLV_FAILED, "5.1.1", NULL, NULL, DLV_DIAG_GUESS },
	};
	struct dlv_report r = base_report(rc, 2);
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	/* as the client gave it, xtext and all */
	assert_string_equal(field(v.groups[1].hdr, v.groups[1].hdr_len, "Original-Recipient"),
			    "rfc822;b+2Bob@example.com");
	/* it comes before Final-Recipient (RFC 3464 2.3) */
	assert_int_equal(strncmp(v.groups[1].hdr, "Original-Recipient:", 19), 0);
	assert_null(field(v.groups[2].hdr, v.groups[2].hdr_len, "Original-Recipient"));
	buf_free(&out);
}

static void test_compose_utf8(void **state)
{
	struct dlv_report_rcpt rc[] = {
		{ "d\xc3\xb6rte@b\xc3\xa4" "ckerei.example", NULL, DLV_FAILED, "5.1.1", NULL,
		  "550 unknown user d\xc3\xb6rte \xff", DLV_DIAG_GUESS },
		{ "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL, NULL, DLV_DIAG_GUESS },
	};
	struct dlv_report r = base_report(rc, 2);
	struct buf out;
	struct view v;
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_non_null(strstr(field(v.hdr, v.hdr_len, "Content-Type"),
			       "report-type=global-delivery-status"));
	assert_string_equal(part_type(&v, 1), "message/global-delivery-status");
	assert_string_equal(field(v.parts[1].hdr, v.parts[1].hdr_len,
				  "Content-Transfer-Encoding"),
			    "8bit");
	assert_string_equal(field(v.groups[1].hdr, v.groups[1].hdr_len, "Final-Recipient"),
			    "utf-8; d\xc3\xb6rte@b\xc3\xa4" "ckerei.example");
	/* well-formed UTF-8 kept, a stray byte replaced */
	assert_string_equal(field(v.groups[1].hdr, v.groups[1].hdr_len, "Diagnostic-Code"),
			    "smtp; 550 unknown user d\xc3\xb6rte ?");
	assert_string_equal(field(v.groups[2].hdr, v.groups[2].hdr_len, "Final-Recipient"),
			    "rfc822; bob@example.com");
	buf_free(&out);

	/* A UTF-8 report recipient alone makes it global too. */
	struct dlv_report_rcpt a[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					 NULL, DLV_DIAG_GUESS } };
	r = base_report(a, 1);
	r.to = "j\xc3\xb6rg@example.org";
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_string_equal(part_type(&v, 1), "message/global-delivery-status");
	assert_string_equal(field(v.hdr, v.hdr_len, "To"), "<j\xc3\xb6rg@example.org>");
	buf_free(&out);

	/* ASCII report: non-ASCII in a diagnostic becomes '?' */
	struct dlv_report_rcpt b[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					 "550 d\xc3\xb6rte", DLV_DIAG_GUESS } };
	r = base_report(b, 1);
	compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
	assert_string_equal(part_type(&v, 1), "message/delivery-status");
	assert_string_equal(field(v.groups[1].hdr, v.groups[1].hdr_len, "Diagnostic-Code"),
			    "smtp; 550 d??rte");
	buf_free(&out);

	/* ASCII addresses, but UTF-8 in the returned header (RFC 6532): the
	 * returned part is message/global(-headers), never message/rfc822;
	 * an 8-bit body alone keeps message/rfc822. */
	static const char u8hdr[] = "From: a@b.example\r\nSubject: Gr\xc3\xbc\xc3\x9f"
				    "e\r\n\r\nK\xc3\xa4se\r\n";
	static const char u8body[] = "From: a@b.example\r\nSubject: hi\r\n\r\n"
				     "K\xc3\xa4se\r\n";
	r = base_report(b, 1);
	compose_ok(&r, u8hdr, strlen(u8hdr), &out, &v);
	assert_string_equal(part_type(&v, 2), "message/global");
	buf_free(&out);
	r.headers_only = true;
	compose_ok(&r, u8hdr, strlen(u8hdr), &out, &v);
	assert_string_equal(part_type(&v, 2), "message/global-headers");
	buf_free(&out);
	r.headers_only = false;
	compose_ok(&r, u8body, strlen(u8body), &out, &v);
	assert_string_equal(part_type(&v, 2), "message/rfc822");
	buf_free(&out);
}

static void test_compose_8bit_original(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					  NULL, DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	const char *m = "Subject: caf\xc3\xa9" "\r\n\r\nna\xc3\xafve\r\n";
	struct buf out;
	struct view v;
	compose_ok(&r, m, strlen(m), &out, &v);
	/* A UTF-8 Subject: message/global (RFC 6532 3.7), not message/rfc822. */
	assert_string_equal(part_type(&v, 2), "message/global");
	assert_string_equal(field(v.parts[2].hdr, v.parts[2].hdr_len, "Content-Transfer-Encoding"),
			    "8bit");
	assert_string_equal(field(v.hdr, v.hdr_len, "Content-Transfer-Encoding"), "8bit");
	buf_free(&out);
}

static bool any_8bit(const struct buf *b)
{
	for (size_t i = 0; i < buf_len(b); i++)
		if (buf_ptr(b)[i] >= 0x80)
			return true;
	return false;
}

/* A report quoting an 8-bit original is 8-bit itself, whole or header
 * only, and says so at the top; one quoting a 7-bit original has no
 * byte above 127, so the queue treats it as 7-bit and it may go to a
 * server without 8BITMIME. */
static void test_compose_8bit_report(void **state)
{
	static const struct {
		const char *orig;
		bool headers_only;
		bool eight;
	} t[] = {
		{ "Subject: x\r\n\r\nna\xc3\xafve\r\n", false, true },
		{ "Subject: x\r\n\r\nna\xc3\xafve\r\n", true, false },
		{ "Subject: caf\xc3\xa9\r\n\r\nplain\r\n", true, true },
		{ "Subject: x\r\n\r\nplain\r\n", false, false },
		{ "Subject: x\r\n\r\n\x80\r\n", false, true },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.6.3",
						  "mx.example.com", "554 5.6.3 no 8BITMIME",
						  DLV_DIAG_LOCAL } };
		struct dlv_report r = base_report(rc, 1);
		r.headers_only = t[i].headers_only;
		struct buf out;
		struct view v;
		compose_ok(&r, t[i].orig, strlen(t[i].orig), &out, &v);
		if (any_8bit(&out) != t[i].eight)
			fail_msg("case %zu: 8-bit bytes %d, expected %d", i, !t[i].eight, t[i].eight);
		const char *cte = field(v.hdr, v.hdr_len, "Content-Transfer-Encoding");
		if (t[i].eight)
			assert_string_equal(cte, "8bit");
		else
			assert_null(cte);
		buf_free(&out);
	}
}

/* RFC 3464 2.3.6: diagnostic-type "smtp" only for a reply received from a
 * server; sluice's own texts are "X-Sluice"; unknown origin: by the form. */
static void test_compose_diagnostic_type(void **state)
{
	static const struct {
		const char *diag;
		enum dlv_diag type;
		const char *mta;
		const char *want;  /* Diagnostic-Code */
		const char *human; /* in the human part */
	} t[] = {
		{ "550 5.1.1 no such user", DLV_DIAG_SMTP, "mx.example.com",
		  "smtp; 550 5.1.1 no such user", "mx.example.com said: 550 5.1.1 no such user" },
		{ "550 5.1.1 no such user", DLV_DIAG_GUESS, "mx.example.com",
		  "smtp; 550 5.1.1 no such user", "mx.example.com said: 550 5.1.1" },
		{ "554 5.6.3 the message has 8-bit content", DLV_DIAG_LOCAL, "mx.example.com",
		  "X-Sluice; 554 5.6.3 the message has 8-bit content",
		  "delivery to mx.example.com: 554 5.6.3" },
		{ "delivered to /var/mail/bob/new/1700.M1P2Q3.host", DLV_DIAG_GUESS, NULL,
		  "X-Sluice; delivered to /var/mail/bob/new/1700.M1P2Q3.host",
		  "    delivered to /var/mail/bob/new/" },
		{ "mail loop: too many Received header fields", DLV_DIAG_GUESS, NULL,
		  "X-Sluice; mail loop: too many Received header fields", "mail loop:" },
		{ "mail loop: too many Received header fields", DLV_DIAG_LOCAL, NULL,
		  "X-Sluice; mail loop: too many Received header fields", "mail loop:" },
		{ "server text without a code", DLV_DIAG_SMTP, "mx.example.com",
		  "smtp; server text without a code", "said: server text" },
		{ "451-4.3.0 first / 451 4.3.0 second", DLV_DIAG_GUESS, NULL,
		  "smtp; 451-4.3.0 first / 451 4.3.0 second", "451-4.3.0 first" },
		{ "250", DLV_DIAG_GUESS, NULL, "smtp; 250", "250" },
		{ "5500 x", DLV_DIAG_GUESS, NULL, "X-Sluice; 5500 x", "5500 x" },
		{ "650 x", DLV_DIAG_GUESS, NULL, "X-Sluice; 650 x", "650 x" },
		{ "55", DLV_DIAG_GUESS, NULL, "X-Sluice; 55", "55" },
		{ "5x0 y", DLV_DIAG_GUESS, NULL, "X-Sluice; 5x0 y", "5x0 y" },
		{ " 550 x", DLV_DIAG_GUESS, NULL, "X-Sluice; 550 x", "550 x" },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.0.0",
						  t[i].mta, t[i].diag, t[i].type } };
		struct dlv_report r = base_report(rc, 1);
		struct buf out;
		struct view v;
		compose_ok(&r, orig_msg, strlen(orig_msg), &out, &v);
		const char *d = field(v.groups[1].hdr, v.groups[1].hdr_len, "Diagnostic-Code");
		if (!d || strcmp(d, t[i].want) != 0)
			fail_msg("case %zu: Diagnostic-Code \"%s\", expected \"%s\"", i,
				 d ? d : "(none)", t[i].want);
		char *human = strndup(v.parts[0].body, v.parts[0].body_len);
		if (!strstr(human, t[i].human))
			fail_msg("case %zu: human part lacks \"%s\":\n%s", i, t[i].human, human);
		/* "said" is kept for what a server said */
		bool said = strstr(human, " said: ") != NULL;
		if (said != (strncmp(t[i].want, "smtp;", 5) == 0 && t[i].mta != NULL))
			fail_msg("case %zu: \"said\" %d", i, said);
		free(human);
		buf_free(&out);
	}
}

/* Whatever line ends or line lengths the original has, the report has
 * CRLF lines of at most 998 characters (read_report checks both). */
static void test_compose_bad_original(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					  NULL, DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	size_t n = 3000;
	char *m = malloc(n + 64);
	assert_non_null(m);
	int k = snprintf(m, 64, "Subject: x\nBare: cr\rhere\r\n\r\n");
	memset(m + k, 'y', n - (size_t)k - 1);
	m[n - 1] = '\n';
	struct buf out;
	struct err e = { "" };
	buf_init(&out, 4 * 1024 * 1024);
	assert_int_equal(dlv_report_compose(&r, m, n, &out, &e), 0);
	const char *b = (const char *)buf_ptr(&out);
	size_t len = buf_len(&out);
	for (size_t i = 0; i < len; i++) {
		if (b[i] == '\n')
			assert_true(i > 0 && b[i - 1] == '\r');
		if (b[i] == '\r')
			assert_true(i + 1 < len && b[i + 1] == '\n');
	}
	assert_non_null(memmem(b, len, "Subject: x\r\nBare: cr here\r\n", 27));
	buf_free(&out);
	free(m);
}

static void test_compose_errors(void **state)
{
	struct dlv_report_rcpt rc[] = { { "bob@example.com", NULL, DLV_FAILED, "5.1.1", NULL,
					  NULL, DLV_DIAG_GUESS } };
	struct dlv_report r = base_report(rc, 1);
	struct buf out;
	struct err e = { "" };
	buf_init(&out, 1 << 20);
	buf_puts(&out, "keep");
	r.to = "";
	assert_int_equal(dlv_report_compose(&r, orig_msg, strlen(orig_msg), &out, &e), -1);
	r.to = NULL;
	assert_int_equal(dlv_report_compose(&r, orig_msg, strlen(orig_msg), &out, &e), -1);
	r = base_report(rc, 0);
	assert_int_equal(dlv_report_compose(&r, orig_msg, strlen(orig_msg), &out, &e), -1);
	struct dlv_report_rcpt noaddr[] = { { "", NULL, DLV_FAILED, NULL, NULL, NULL, DLV_DIAG_GUESS } };
	r = base_report(noaddr, 1);
	assert_int_equal(dlv_report_compose(&r, orig_msg, strlen(orig_msg), &out, &e), -1);
	assert_int_equal(buf_len(&out), 4);
	buf_free(&out);

	/* Output limit reached: fails and leaves out as it was. */
	r = base_report(rc, 1);
	buf_init(&out, 600);
	buf_puts(&out, "keep");
	assert_int_equal(dlv_report_compose(&r, orig_msg, strlen(orig_msg), &out, &e), -1);
	assert_int_equal(buf_len(&out), 4);
	assert_memory_equal(buf_ptr(&out), "keep", 4);
	buf_free(&out);

	/* No original at all: the third part is empty but present. */
	struct view v;
	compose_ok(&r, NULL, 0, &out, &v);
	assert_int_equal(v.parts[2].body_len, 0);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_table),
		cmocka_unit_test(test_notify_table),
		cmocka_unit_test(test_compose_failure),
		cmocka_unit_test(test_compose_headers_only),
		cmocka_unit_test(test_compose_return_max),
		cmocka_unit_test(test_compose_hostile),
		cmocka_unit_test(test_compose_boundary),
		cmocka_unit_test(test_compose_delay_success),
		cmocka_unit_test(test_compose_orcpt),
		cmocka_unit_test(test_compose_utf8),
		cmocka_unit_test(test_compose_8bit_original),
		cmocka_unit_test(test_compose_8bit_report),
		cmocka_unit_test(test_compose_diagnostic_type),
		cmocka_unit_test(test_compose_bad_original),
		cmocka_unit_test(test_compose_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
