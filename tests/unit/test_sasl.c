/*
 * Unit tests of the SASL mechanisms (PLAIN, LOGIN, SCRAM-SHA-256), base64,
 * SCRAM key material, the worker/auth-process message framing and the
 * brute-force penalty table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

#define MAX 4096

static void assert_buf(const struct buf *b, const void *want, size_t n)
{
	assert_int_equal(buf_len(b), n);
	if (n)
		assert_memory_equal(buf_ptr(b), want, n);
}

/* base64 of p[0..n) as a NUL-terminated string (caller frees). */
static char *enc(const void *p, size_t n)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(b64_encode(p, n, &b), 0);
	char *s = str_ndup(buf_ptr(&b), buf_len(&b));
	buf_free(&b);
	return s;
}

static char *enc_s(const char *s)
{
	return enc(s, strlen(s));
}

/* Decodes a challenge (base64) into a NUL-terminated string. */
static char *dec(const struct buf *chal)
{
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(b64_decode((const char *)buf_ptr(chal), buf_len(chal), &b), 0);
	char *s = str_ndup(buf_ptr(&b), buf_len(&b));
	buf_free(&b);
	return s;
}

/* ---- base64 ---------------------------------------------------------- */

static const struct {
	const char *plain, *b64;
} b64_vectors[] = {
	/* RFC 4648 section 10 */
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
	/* the whole alphabet */
	{ "\x00\x10\x83\x10\x51\x87\x20\x92\x8b\x30\xd3\x8f\x41\x14\x93\x51\x55\x97"
	  "\x61\x96\x9b\x71\xd7\x9f\x82\x18\xa3\x92\x59\xa7\xa2\x9a\xab\xb2\xdb\xaf"
	  "\xc3\x1c\xb3\xd3\x5d\xb7\xe3\x9e\xbb\xf3\xdf\xbf",
	  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" },
};

static void test_b64_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		const char *pl = b64_vectors[i].plain, *b6 = b64_vectors[i].b64;
		size_t pn = i == 7 ? 48 : strlen(pl);
		struct buf b;
		buf_init(&b, 1000);
		assert_int_equal(b64_encode(pl, pn, &b), 0);
		assert_buf(&b, b6, strlen(b6));
		buf_reset(&b);
		assert_int_equal(b64_decode(b6, strlen(b6), &b), 0);
		assert_buf(&b, pl, pn);
		/* Appends after existing content. */
		buf_reset(&b);
		buf_puts(&b, "x");
		assert_int_equal(b64_decode(b6, strlen(b6), &b), 0);
		assert_int_equal(buf_len(&b), pn + 1);
		buf_free(&b);
	}
	/* Every byte value survives a round trip, at each length mod 3. */
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	for (size_t n = 253; n <= 256; n++) {
		struct buf e, d;
		buf_init(&e, 1000);
		buf_init(&d, 1000);
		assert_int_equal(b64_encode(all, n, &e), 0);
		assert_int_equal(buf_len(&e), (n + 2) / 3 * 4);
		assert_int_equal(b64_decode((const char *)buf_ptr(&e), buf_len(&e), &d), 0);
		assert_buf(&d, all, n);
		buf_free(&e);
		buf_free(&d);
	}
}

static void test_b64_malformed(void **state)
{
	static const char *const bad[] = {
		"Zg=", "Zg", "Z", "Zm9", "Z===", "====", "Zh==", "Zm9=", "Zm8",
		"Zg==Zg==", "Zm=v", "Zm9v=", "Zm9v====", " Zm9v", "Zm9v ", "Zm 9", "Zm9v\r\n",
		"Zm-v", "Zm_v", "Zm9\x80", "=Zm9", "Zg=A", "A===",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf b;
		buf_init(&b, 100);
		buf_puts(&b, "keep");
		assert_int_equal(b64_decode(bad[i], strlen(bad[i]), &b), -1);
		/* Nothing appended on failure. */
		assert_buf(&b, "keep", 4);
		buf_free(&b);
	}
	/* An embedded NUL is outside the alphabet. */
	struct buf b;
	buf_init(&b, 100);
	assert_int_equal(b64_decode("Zm\0v", 4, &b), -1);
	/* The buffer's maximum bounds the decoded length. */
	buf_free(&b);
	buf_init(&b, 5);
	assert_int_equal(b64_decode("Zm9vYmFy", 8, &b), -1);
	assert_int_equal(b64_decode("Zm9vYmE=", 8, &b), 0);
	assert_buf(&b, "fooba", 5);
	/* and the encoded one. */
	buf_reset(&b);
	assert_int_equal(b64_encode("foob", 4, &b), -1);
	assert_int_equal(buf_len(&b), 0);
	buf_free(&b);
}

static void test_rand(void **state)
{
	uint8_t a[64], b[64];
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_int_equal(rand_bytes(a, sizeof(a)), 0);
	assert_int_equal(rand_bytes(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(rand_bytes(a, 0), 0);
	/* Larger than one getrandom call may return. */
	size_t big = 1 << 20;
	uint8_t *p = xcalloc(1, big);
	assert_int_equal(rand_bytes(p, big), 0);
	size_t zero = 0;
	for (size_t i = 0; i < big; i++)
		zero += p[i] == 0;
	assert_true(zero < big / 64);
	free(p);
}

/* ---- mechanism names ------------------------------------------------- */

static void test_mech_names(void **state)
{
	assert_int_equal(sasl_mech_from_name("PLAIN", 5), SASL_MECH_PLAIN);
	assert_int_equal(sasl_mech_from_name("plain", 5), SASL_MECH_PLAIN);
	assert_int_equal(sasl_mech_from_name("Login", 5), SASL_MECH_LOGIN);
	assert_int_equal(sasl_mech_from_name("scram-sha-256", 13), SASL_MECH_SCRAM_SHA_256);
	assert_int_equal(sasl_mech_from_name("SCRAM-SHA-256-PLUS", 18), 0);
	assert_int_equal(sasl_mech_from_name("PLAINX", 6), 0);
	assert_int_equal(sasl_mech_from_name("PLAINX", 5), SASL_MECH_PLAIN);
	assert_int_equal(sasl_mech_from_name("CRAM-MD5", 8), 0);
	assert_int_equal(sasl_mech_from_name("", 0), 0);
	assert_string_equal(sasl_mech_name(SASL_MECH_PLAIN), "PLAIN");
	assert_string_equal(sasl_mech_name(SASL_MECH_LOGIN), "LOGIN");
	assert_string_equal(sasl_mech_name(SASL_MECH_SCRAM_SHA_256), "SCRAM-SHA-256");
	assert_null(sasl_mech_name(3));
	assert_null(sasl_new(3, "n", MAX));
	assert_null(sasl_new(0, "n", MAX));
	/* SCRAM needs a usable server nonce. */
	assert_null(sasl_new(SASL_MECH_SCRAM_SHA_256, "", MAX));
	assert_null(sasl_new(SASL_MECH_SCRAM_SHA_256, NULL, MAX));
	assert_null(sasl_new(SASL_MECH_SCRAM_SHA_256, "a,b", MAX));
	assert_null(sasl_new(SASL_MECH_SCRAM_SHA_256, "a b", MAX));
}

/* ---- PLAIN ----------------------------------------------------------- */

#define S(x) x, sizeof(x) - 1

enum feed {
	F_INITIAL, /* AUTH PLAIN <b64> */
	F_STEP,    /* AUTH PLAIN, 334, <b64> */
	F_EMPTY,   /* AUTH PLAIN =, which is an empty response */
};

static const struct {
	const char *msg;
	size_t n;
	enum sasl_status want;
	const char *authzid, *user, *password;
} plain_cases[] = {
	{ S("\0tim\0tanstaaftanstaaf"), SASL_NEED_AUTHD, "", "tim", "tanstaaftanstaaf" },
	{ S("tim\0tim\0pw"), SASL_NEED_AUTHD, "tim", "tim", "pw" },
	{ S("\0us\xc3\xa9r\0p w"), SASL_NEED_AUTHD, "", "us\xc3\xa9r", "p w" },
	{ S("\0u\0=,:\x01\xff"), SASL_NEED_AUTHD, "", "u", "=,:\x01\xff" },
	/* proxy authorization is not supported */
	{ S("admin\0tim\0pw"), SASL_FAILED, NULL, NULL, NULL },
	{ S("Tim\0tim\0pw"), SASL_FAILED, NULL, NULL, NULL },
	/* malformed */
	{ S(""), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("timpw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0timpw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0\0pw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0tim\0"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0tim\0pw\0"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0tim\0p\0w"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0\0"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0ti\xffm\0pw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\0ti\nm\0pw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
	{ S("\xc3\0tim\0pw"), SASL_BAD_SYNTAX, NULL, NULL, NULL },
};

/* Runs one PLAIN message fed as chosen; returns the status and leaves
 * the object for the caller to inspect. */
static enum sasl_status plain_run(struct sasl *a, const char *msg, size_t n, enum feed f,
				  struct buf *chal)
{
	char *b = enc(msg, n);
	enum sasl_status st;
	if (f == F_INITIAL) {
		st = sasl_start(a, n ? b : "=", n ? strlen(b) : 1, chal);
	} else {
		if (f == F_EMPTY)
			st = sasl_start(a, "=", 1, chal);
		else
			st = sasl_start(a, NULL, 0, chal);
		if (f == F_EMPTY && n == 0) {
			free(b);
			return st;
		}
		if (f == F_EMPTY) {
			/* "=" is a complete (empty) response, never a request for one. */
			assert_int_equal(st, SASL_BAD_SYNTAX);
			free(b);
			return SASL_BAD_SYNTAX;
		}
		assert_int_equal(st, SASL_CHALLENGE);
		assert_int_equal(buf_len(chal), 0);
		assert_null(sasl_request(a));
		st = sasl_step(a, b, strlen(b), chal);
	}
	free(b);
	return st;
}

static void test_plain(void **state)
{
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		for (enum feed f = F_INITIAL; f <= F_STEP; f++) {
			struct buf chal;
			buf_init(&chal, MAX);
			struct sasl *a = sasl_new(SASL_MECH_PLAIN, "", MAX);
			assert_non_null(a);
			enum sasl_status st = plain_run(a, plain_cases[i].msg, plain_cases[i].n, f,
							&chal);
			if (st != plain_cases[i].want)
				fail_msg("case %zu feed %d: status %d want %d", i, f, st,
					 plain_cases[i].want);
			const struct sasl_request *rq = sasl_request(a);
			if (st == SASL_NEED_AUTHD) {
				assert_non_null(rq);
				assert_int_equal(rq->kind, SASL_REQ_PLAIN);
				assert_string_equal(rq->authzid, plain_cases[i].authzid);
				assert_string_equal(rq->user, plain_cases[i].user);
				assert_int_equal(rq->password_len, strlen(plain_cases[i].password));
				assert_memory_equal(rq->password, plain_cases[i].password,
						    rq->password_len);
				assert_null(sasl_user(a));
				/* The canonical user comes from the answer. */
				struct sasl_answer ans = { .result = AUTH_OK,
							   .user = "Tim@Example.org" };
				assert_int_equal(sasl_answer(a, &ans, &chal), SASL_SUCCESS);
				assert_string_equal(sasl_user(a), "Tim@Example.org");
				assert_null(sasl_request(a));
			} else {
				assert_null(rq);
				assert_null(sasl_user(a));
			}
			sasl_free(a);
			buf_free(&chal);
		}
	}
}

static void test_plain_special(void **state)
{
	struct buf chal;
	buf_init(&chal, MAX);
	/* "=": an empty initial response, which PLAIN cannot parse. */
	struct sasl *a = sasl_new(SASL_MECH_PLAIN, "", MAX);
	assert_int_equal(sasl_start(a, "=", 1, &chal), SASL_BAD_SYNTAX);
	sasl_free(a);
	/* An empty line after the 334. */
	a = sasl_new(SASL_MECH_PLAIN, "", MAX);
	assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
	assert_int_equal(sasl_step(a, "", 0, &chal), SASL_BAD_SYNTAX);
	sasl_free(a);
	/* "*" cancels, as initial response or as a line. */
	a = sasl_new(SASL_MECH_PLAIN, "", MAX);
	assert_int_equal(sasl_start(a, "*", 1, &chal), SASL_CANCELLED);
	sasl_free(a);
	a = sasl_new(SASL_MECH_PLAIN, "", MAX);
	assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
	assert_int_equal(sasl_step(a, "*", 1, &chal), SASL_CANCELLED);
	assert_null(sasl_request(a));
	sasl_free(a);
	/* Malformed base64. */
	static const char *const badb64[] = { "AHRpbQB0aW0", "AHRpbQB0aW0==", "AHRp bQB0aW0=",
					      "**", "AHRpbQB0aW0=\r", "-" };
	for (size_t i = 0; i < sizeof(badb64) / sizeof(badb64[0]); i++) {
		a = sasl_new(SASL_MECH_PLAIN, "", MAX);
		assert_int_equal(sasl_start(a, badb64[i], strlen(badb64[i]), &chal),
				 SASL_BAD_SYNTAX);
		sasl_free(a);
		a = sasl_new(SASL_MECH_PLAIN, "", MAX);
		assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
		assert_int_equal(sasl_step(a, badb64[i], strlen(badb64[i]), &chal),
				 SASL_BAD_SYNTAX);
		sasl_free(a);
	}
	buf_free(&chal);
}

/* The decoded response is bounded by max: at the limit it is accepted,
 * one byte over it is a syntax error. */
static void test_plain_max(void **state)
{
	const size_t max = 64;
	for (size_t len = max - 2; len <= max + 2; len++) {
		for (enum feed f = F_INITIAL; f <= F_STEP; f++) {
			char *msg = xmalloc(len);
			memset(msg, 'p', len);
			msg[0] = '\0';
			memcpy(msg + 1, "tim", 3);
			msg[4] = '\0';
			struct buf chal;
			buf_init(&chal, MAX);
			struct sasl *a = sasl_new(SASL_MECH_PLAIN, "", max);
			enum sasl_status st = plain_run(a, msg, len, f, &chal);
			assert_int_equal(st, len <= max ? SASL_NEED_AUTHD : SASL_BAD_SYNTAX);
			if (st == SASL_NEED_AUTHD)
				assert_int_equal(sasl_request(a)->password_len, len - 5);
			sasl_free(a);
			buf_free(&chal);
			free(msg);
		}
	}
	/* A huge line is refused without decoding it. */
	size_t big = 1 << 20;
	char *line = xmalloc(big);
	memset(line, 'A', big);
	struct buf chal;
	buf_init(&chal, MAX);
	struct sasl *a = sasl_new(SASL_MECH_PLAIN, "", max);
	assert_int_equal(sasl_start(a, line, big, &chal), SASL_BAD_SYNTAX);
	sasl_free(a);
	buf_free(&chal);
	free(line);
}

/* ---- answers ---------------------------------------------------------- */

static void test_answers(void **state)
{
	static const struct {
		enum auth_result r;
		enum sasl_status want;
	} map[] = {
		{ AUTH_OK, SASL_SUCCESS },
		{ AUTH_FAIL, SASL_FAILED },
		{ AUTH_TEMPFAIL, SASL_TEMPFAIL },
		{ AUTH_BLOCKED, SASL_BLOCKED },
		{ (enum auth_result)77, SASL_FAILED },
	};
	char *plain = enc("\0tim\0pw", 7);
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		struct buf chal;
		buf_init(&chal, MAX);
		/* PLAIN */
		struct sasl *a = sasl_new(SASL_MECH_PLAIN, "", MAX);
		assert_int_equal(sasl_start(a, plain, strlen(plain), &chal), SASL_NEED_AUTHD);
		struct sasl_answer ans = { .result = map[i].r, .user = "tim" };
		assert_int_equal(sasl_answer(a, &ans, &chal), map[i].want);
		if (map[i].want == SASL_SUCCESS)
			assert_string_equal(sasl_user(a), "tim");
		else
			assert_null(sasl_user(a));
		/* Ended: nothing more is accepted. */
		assert_int_equal(sasl_answer(a, &ans, &chal), SASL_BAD_SYNTAX);
		assert_int_equal(sasl_step(a, "", 0, &chal), SASL_BAD_SYNTAX);
		sasl_free(a);

		/* SCRAM lookup: only AUTH_OK continues. */
		a = sasl_new(SASL_MECH_SCRAM_SHA_256, "srv", MAX);
		const char *cf = "n,,n=user,r=abc";
		char *b = enc_s(cf);
		assert_int_equal(sasl_start(a, b, strlen(b), &chal), SASL_NEED_AUTHD);
		free(b);
		struct sasl_answer la = { .result = map[i].r, .user = "user",
					  .salt = (const uint8_t *)"salt", .salt_len = 4,
					  .iterations = 4096 };
		enum sasl_status st = sasl_answer(a, &la, &chal);
		assert_int_equal(st, map[i].want == SASL_SUCCESS ? SASL_CHALLENGE : map[i].want);
		sasl_free(a);
		buf_free(&chal);
	}
	free(plain);
}

/* ---- LOGIN ----------------------------------------------------------- */

static void test_login(void **state)
{
	char *u = enc_s("tim"), *p = enc_s("tanstaaf");
	for (int initial = 0; initial <= 1; initial++) {
		struct buf chal;
		buf_init(&chal, MAX);
		struct sasl *a = sasl_new(SASL_MECH_LOGIN, "", MAX);
		if (initial) {
			assert_int_equal(sasl_start(a, u, strlen(u), &chal), SASL_CHALLENGE);
		} else {
			assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
			assert_buf(&chal, "VXNlcm5hbWU6", 12);
			char *d = dec(&chal);
			assert_string_equal(d, "Username:");
			free(d);
			assert_int_equal(sasl_step(a, u, strlen(u), &chal), SASL_CHALLENGE);
		}
		assert_buf(&chal, "UGFzc3dvcmQ6", 12);
		char *d = dec(&chal);
		assert_string_equal(d, "Password:");
		free(d);
		assert_null(sasl_request(a));
		assert_int_equal(sasl_step(a, p, strlen(p), &chal), SASL_NEED_AUTHD);
		const struct sasl_request *rq = sasl_request(a);
		assert_non_null(rq);
		assert_int_equal(rq->kind, SASL_REQ_PLAIN);
		assert_string_equal(rq->authzid, "");
		assert_string_equal(rq->user, "tim");
		assert_int_equal(rq->password_len, 8);
		assert_memory_equal(rq->password, "tanstaaf", 8);
		/* Out of turn while waiting for the auth process. */
		assert_int_equal(sasl_step(a, p, strlen(p), &chal), SASL_BAD_SYNTAX);
		assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_BAD_SYNTAX);
		assert_non_null(sasl_request(a));
		struct sasl_answer ans = { .result = AUTH_OK, .user = "tim@example.org" };
		assert_int_equal(sasl_answer(a, &ans, &chal), SASL_SUCCESS);
		assert_string_equal(sasl_user(a), "tim@example.org");
		sasl_free(a);
		buf_free(&chal);
	}
	/* Errors at each step. */
	static const struct {
		const char *ini, *l1, *l2;
		enum sasl_status want;
	} bad[] = {
		{ "=", NULL, NULL, SASL_BAD_SYNTAX },         /* empty user name */
		{ "*", NULL, NULL, SASL_CANCELLED },
		{ "dGlt=", NULL, NULL, SASL_BAD_SYNTAX },
		{ NULL, "", NULL, SASL_BAD_SYNTAX },
		{ NULL, "*", NULL, SASL_CANCELLED },
		{ NULL, "AHRpbQ==", NULL, SASL_BAD_SYNTAX }, /* "\0tim" */
		{ NULL, "dGlt", "", SASL_BAD_SYNTAX },       /* empty password */
		{ NULL, "dGlt", "=", SASL_BAD_SYNTAX },
		{ NULL, "dGlt", "*", SASL_CANCELLED },
		{ NULL, "dGlt", "cABx", SASL_BAD_SYNTAX },   /* "p\0q" */
		{ NULL, "dGlt", "cHc", SASL_BAD_SYNTAX },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf chal;
		buf_init(&chal, MAX);
		struct sasl *a = sasl_new(SASL_MECH_LOGIN, "", MAX);
		enum sasl_status st = sasl_start(a, bad[i].ini, bad[i].ini ? strlen(bad[i].ini) : 0,
						 &chal);
		if (bad[i].l1) {
			assert_int_equal(st, SASL_CHALLENGE);
			st = sasl_step(a, bad[i].l1, strlen(bad[i].l1), &chal);
		}
		if (bad[i].l2) {
			assert_int_equal(st, SASL_CHALLENGE);
			st = sasl_step(a, bad[i].l2, strlen(bad[i].l2), &chal);
		}
		if (st != bad[i].want)
			fail_msg("LOGIN case %zu: %d want %d", i, st, bad[i].want);
		sasl_free(a);
		buf_free(&chal);
	}
	free(u);
	free(p);
}

/* ---- SCRAM-SHA-256 --------------------------------------------------- */

/* RFC 7677 section 3 */
#define V_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define V_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define V_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define V_FIRST "n,,n=user,r=" V_CNONCE
#define V_SFIRST "r=" V_CNONCE V_SNONCE ",s=" V_SALT ",i=4096"
#define V_FINAL_NP "c=biws,r=" V_CNONCE V_SNONCE
#define V_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define V_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void b64_to(const char *s, struct buf *out)
{
	buf_init(out, 1024);
	assert_int_equal(b64_decode(s, strlen(s), out), 0);
}

/* The whole RFC 7677 exchange, with the auth process's part done by
 * scram_keys_derive and scram_verify. */
static void test_scram_rfc7677(void **state)
{
	struct buf salt, chal;
	b64_to(V_SALT, &salt);
	struct scram_keys k;
	assert_int_equal(scram_keys_derive("pencil", 6, buf_ptr(&salt), buf_len(&salt), 4096, &k),
			 0);

	for (int initial = 0; initial <= 1; initial++) {
		for (int eq_end = 0; eq_end <= 1; eq_end++) {
			buf_init(&chal, MAX);
			struct sasl *a = sasl_new(SASL_MECH_SCRAM_SHA_256, V_SNONCE, MAX);
			assert_non_null(a);
			char *cf = enc_s(V_FIRST);
			enum sasl_status st;
			if (initial) {
				st = sasl_start(a, cf, strlen(cf), &chal);
			} else {
				assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
				assert_int_equal(buf_len(&chal), 0);
				st = sasl_step(a, cf, strlen(cf), &chal);
			}
			free(cf);
			assert_int_equal(st, SASL_NEED_AUTHD);
			const struct sasl_request *rq = sasl_request(a);
			assert_int_equal(rq->kind, SASL_REQ_SCRAM_LOOKUP);
			assert_string_equal(rq->user, "user");

			struct sasl_answer la = { .result = AUTH_OK, .user = "user",
						  .salt = k.salt, .salt_len = k.salt_len,
						  .iterations = k.iterations };
			assert_int_equal(sasl_answer(a, &la, &chal), SASL_CHALLENGE);
			char *sf = dec(&chal);
			assert_string_equal(sf, V_SFIRST);
			free(sf);

			char *fin = enc_s(V_FINAL_NP ",p=" V_PROOF);
			assert_int_equal(sasl_step(a, fin, strlen(fin), &chal), SASL_NEED_AUTHD);
			free(fin);
			rq = sasl_request(a);
			assert_int_equal(rq->kind, SASL_REQ_SCRAM_VERIFY);
			assert_string_equal(rq->user, "user");
			const char *am = "n=user,r=" V_CNONCE "," V_SFIRST "," V_FINAL_NP;
			assert_int_equal(rq->auth_message_len, strlen(am));
			assert_memory_equal(rq->auth_message, am, strlen(am));
			assert_int_equal(rq->proof_len, 32);

			uint8_t sig[32];
			assert_true(scram_verify(&k, rq->auth_message, rq->auth_message_len,
						 rq->proof, rq->proof_len, sig));
			struct sasl_answer va = { .result = AUTH_OK, .user = "user",
						  .server_signature = sig,
						  .server_signature_len = 32 };
			assert_int_equal(sasl_answer(a, &va, &chal), SASL_CHALLENGE);
			char *fs = dec(&chal);
			assert_string_equal(fs, V_SFINAL);
			free(fs);
			/* Not yet: the client has not acknowledged. */
			assert_null(sasl_user(a));
			assert_int_equal(sasl_step(a, eq_end ? "=" : "", eq_end ? 1 : 0, &chal),
					 SASL_SUCCESS);
			assert_string_equal(sasl_user(a), "user");
			sasl_free(a);
			buf_free(&chal);
		}
	}

	/* A wrong password gives a proof that does not verify. */
	struct scram_keys bad;
	assert_int_equal(scram_keys_derive("pencils", 7, buf_ptr(&salt), buf_len(&salt), 4096,
					   &bad), 0);
	struct buf proof;
	b64_to(V_PROOF, &proof);
	const char *am = "n=user,r=" V_CNONCE "," V_SFIRST "," V_FINAL_NP;
	uint8_t sig[32];
	assert_false(scram_verify(&bad, am, strlen(am), buf_ptr(&proof), 32, sig));
	assert_false(scram_verify(&k, am, strlen(am) - 1, buf_ptr(&proof), 32, sig));
	assert_false(scram_verify(&k, am, strlen(am), buf_ptr(&proof), 31, sig));
	assert_true(scram_verify(&k, am, strlen(am), buf_ptr(&proof), 32, sig));
	buf_free(&proof);
	buf_free(&salt);
}

/* Runs a SCRAM exchange from client-first up to where it stops, with a
 * verify answer carrying sig; returns the final status. */
static enum sasl_status scram_run(const char *first, const char *final, const char *snonce,
				  enum auth_result verify_result, char **user_out)
{
	struct buf chal;
	buf_init(&chal, MAX);
	struct sasl *a = sasl_new(SASL_MECH_SCRAM_SHA_256, snonce, MAX);
	char *b = enc_s(first);
	enum sasl_status st = sasl_start(a, b, strlen(b), &chal);
	free(b);
	if (user_out)
		*user_out = NULL;
	if (st == SASL_NEED_AUTHD) {
		if (user_out)
			*user_out = str_dup(sasl_request(a)->user);
		struct sasl_answer la = { .result = AUTH_OK, .user = "canon",
					  .salt = (const uint8_t *)"NaCl", .salt_len = 4,
					  .iterations = 4096 };
		st = sasl_answer(a, &la, &chal);
		assert_int_equal(st, SASL_CHALLENGE);
		char *sf = dec(&chal);
		assert_true(strncmp(sf, "r=", 2) == 0);
		free(sf);
		if (final) {
			b = enc_s(final);
			st = sasl_step(a, b, strlen(b), &chal);
			free(b);
		}
		if (final && st == SASL_NEED_AUTHD) {
			uint8_t sig[32];
			memset(sig, 0x5a, sizeof(sig));
			struct sasl_answer va = { .result = verify_result, .user = "canon",
						  .server_signature = sig,
						  .server_signature_len = 32 };
			st = sasl_answer(a, &va, &chal);
			if (st == SASL_CHALLENGE) {
				char *v = dec(&chal);
				assert_string_equal(v, "v=" "WlpaWlpaWlpaWlpaWlpaWlpa"
						       "WlpaWlpaWlpaWlpaWlo=");
				free(v);
				st = sasl_step(a, "", 0, &chal);
			}
		}
	}
	if (st == SASL_SUCCESS)
		assert_string_equal(sasl_user(a), "canon");
	else
		assert_null(sasl_user(a));
	sasl_free(a);
	buf_free(&chal);
	return st;
}

#define P32 "p=WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo="

static void test_scram_errors(void **state)
{
	static const struct {
		const char *first, *final;
		enum sasl_status want;
		const char *user; /* decoded, when the lookup is reached */
	} cases[] = {
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV," P32, SASL_SUCCESS, "user" },
		/* "y": the client could bind but thinks we cannot; c= carries "y,," */
		{ "y,,n=user,r=abc", "c=eSws,r=abcSRV," P32, SASL_SUCCESS, "user" },
		{ "y,,n=user,r=abc", "c=biws,r=abcSRV," P32, SASL_FAILED, "user" },
		{ "n,,n=user,r=abc", "c=eSws,r=abcSRV," P32, SASL_FAILED, "user" },
		/* channel binding requested: not offered */
		{ "p=tls-unique,,n=user,r=abc", NULL, SASL_FAILED, NULL },
		{ "p=tls-exporter,a=user,n=user,r=abc", NULL, SASL_FAILED, NULL },
		/* gs2 authzid: the same user is fine, another is proxying */
		{ "n,a=user,n=user,r=abc", "c=bixhPXVzZXIs,r=abcSRV," P32, SASL_SUCCESS, "user" },
		{ "n,a=admin,n=user,r=abc", NULL, SASL_FAILED, NULL },
		{ "n,a=,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,a=user,n=user,r=abc", "c=biws,r=abcSRV," P32, SASL_FAILED, "user" },
		/* nonce */
		{ "n,,n=user,r=abc", "c=biws,r=abcSRX," P32, SASL_FAILED, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abc," P32, SASL_FAILED, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRVx," P32, SASL_FAILED, "user" },
		{ "n,,n=user,r=", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user,r=a b", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user,r=a\x7f", NULL, SASL_BAD_SYNTAX, NULL },
		/* user names */
		{ "n,,n=a=2Cb=3Dc,r=abc", "c=biws,r=abcSRV," P32, SASL_SUCCESS, "a,b=c" },
		{ "n,a=a=2Cb,n=a=2Cb,r=abc", "c=bixhPWE9MkNiLA==,r=abcSRV," P32, SASL_SUCCESS,
		  "a,b" },
		{ "n,,n=a=2cb,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=a=3,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=a=,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=a=41,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=us\xffr,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=us\xc3\xa9r,r=abc", "c=biws,r=abcSRV," P32, SASL_SUCCESS, "us\xc3\xa9r" },
		/* missing or misplaced attributes */
		{ "n,,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user,", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,r=abc,n=user", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n", NULL, SASL_BAD_SYNTAX, NULL },
		{ "x,,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "p,,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,b=x,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ ",,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		/* mandatory extensions are refused; optional ones ignored */
		{ "n,,m=ext,n=user,r=abc", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user,r=abc,m=ext", NULL, SASL_BAD_SYNTAX, NULL },
		{ "n,,n=user,r=abc,x=ext", "c=biws,r=abcSRV,x=y," P32, SASL_SUCCESS, "user" },
		{ "n,,n=user,r=abc,x=ext,", NULL, SASL_BAD_SYNTAX, NULL },
		/* client-final */
		{ "n,,n=user,r=abc", "r=abcSRV," P32, SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws," P32, SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV,", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV,p=", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV,p=WlpaWlpa", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV,p=!!!!", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV," P32 ",x=y", SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV,m=y," P32, SASL_BAD_SYNTAX, "user" },
		{ "n,,n=user,r=abc", "r=abcSRV,c=biws," P32, SASL_BAD_SYNTAX, "user" },
		/* the verify answer */
		{ "n,,n=user,r=abc", "c=biws,r=abcSRV," P32, SASL_SUCCESS, "user" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *user = NULL;
		enum sasl_status st =
			scram_run(cases[i].first, cases[i].final, "SRV", AUTH_OK, &user);
		if (st != cases[i].want)
			fail_msg("SCRAM case %zu (%s / %s): %d want %d", i, cases[i].first,
				 cases[i].final ? cases[i].final : "-", st, cases[i].want);
		if (cases[i].user) {
			assert_non_null(user);
			assert_string_equal(user, cases[i].user);
		} else {
			assert_null(user);
		}
		free(user);
	}
	/* Verify answers other than AUTH_OK end the exchange accordingly. */
	assert_int_equal(scram_run("n,,n=user,r=abc", "c=biws,r=abcSRV," P32, "SRV", AUTH_FAIL,
				   NULL), SASL_FAILED);
	assert_int_equal(scram_run("n,,n=user,r=abc", "c=biws,r=abcSRV," P32, "SRV", AUTH_TEMPFAIL,
				   NULL), SASL_TEMPFAIL);
	assert_int_equal(scram_run("n,,n=user,r=abc", "c=biws,r=abcSRV," P32, "SRV", AUTH_BLOCKED,
				   NULL), SASL_BLOCKED);
}

static void test_scram_flow_edges(void **state)
{
	struct buf chal;
	buf_init(&chal, MAX);
	char *cf = enc_s("n,,n=user,r=abc");
	char *fin = enc_s("c=biws,r=abcSRV," P32);
	struct sasl_answer la = { .result = AUTH_OK, .user = "user",
				  .salt = (const uint8_t *)"NaCl", .salt_len = 4, .iterations = 1 };
	uint8_t sig[32] = { 0 };
	struct sasl_answer va = { .result = AUTH_OK, .user = "user", .server_signature = sig,
				  .server_signature_len = 32 };

	/* "=" as initial response: an empty client-first. */
	struct sasl *a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, "=", 1, &chal), SASL_BAD_SYNTAX);
	sasl_free(a);
	/* Cancel at each point. */
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, NULL, 0, &chal), SASL_CHALLENGE);
	assert_int_equal(sasl_step(a, "*", 1, &chal), SASL_CANCELLED);
	sasl_free(a);
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
	/* Out of turn: a line while the lookup is out; the state is kept. */
	assert_int_equal(sasl_step(a, fin, strlen(fin), &chal), SASL_BAD_SYNTAX);
	assert_int_equal(sasl_request(a)->kind, SASL_REQ_SCRAM_LOOKUP);
	assert_int_equal(sasl_answer(a, &la, &chal), SASL_CHALLENGE);
	/* An answer nobody asked for. */
	assert_int_equal(sasl_answer(a, &va, &chal), SASL_BAD_SYNTAX);
	assert_int_equal(sasl_step(a, "*", 1, &chal), SASL_CANCELLED);
	sasl_free(a);
	/* After server-final: anything but an empty response fails, "*" cancels. */
	static const struct {
		const char *line;
		enum sasl_status want;
	} ends[] = { { "", SASL_SUCCESS }, { "=", SASL_SUCCESS }, { "*", SASL_CANCELLED },
		     { "eA==", SASL_BAD_SYNTAX }, { "!", SASL_BAD_SYNTAX } };
	for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
		a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
		assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
		assert_int_equal(sasl_answer(a, &la, &chal), SASL_CHALLENGE);
		assert_int_equal(sasl_step(a, fin, strlen(fin), &chal), SASL_NEED_AUTHD);
		assert_int_equal(sasl_answer(a, &va, &chal), SASL_CHALLENGE);
		assert_int_equal(sasl_step(a, ends[i].line, strlen(ends[i].line), &chal),
				 ends[i].want);
		if (ends[i].want == SASL_SUCCESS)
			assert_string_equal(sasl_user(a), "user");
		else
			assert_null(sasl_user(a));
		/* Ended: no more steps. */
		assert_int_equal(sasl_step(a, "", 0, &chal), SASL_BAD_SYNTAX);
		sasl_free(a);
	}
	/* A lookup answer without salt, or a verify answer without a
	 * signature, is the auth process's fault: temporary, never success. */
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
	struct sasl_answer nosalt = { .result = AUTH_OK, .iterations = 4096 };
	assert_int_equal(sasl_answer(a, &nosalt, &chal), SASL_TEMPFAIL);
	sasl_free(a);
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
	struct sasl_answer noiter = la;
	noiter.iterations = 0;
	assert_int_equal(sasl_answer(a, &noiter, &chal), SASL_TEMPFAIL);
	sasl_free(a);
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", MAX);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
	assert_int_equal(sasl_answer(a, &la, &chal), SASL_CHALLENGE);
	assert_int_equal(sasl_step(a, fin, strlen(fin), &chal), SASL_NEED_AUTHD);
	struct sasl_answer shortsig = va;
	shortsig.server_signature_len = 31;
	assert_int_equal(sasl_answer(a, &shortsig, &chal), SASL_TEMPFAIL);
	assert_null(sasl_user(a));
	sasl_free(a);
	/* Bounded by max like every mechanism. */
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", 14);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_BAD_SYNTAX);
	sasl_free(a);
	a = sasl_new(SASL_MECH_SCRAM_SHA_256, "SRV", 15);
	assert_int_equal(sasl_start(a, cf, strlen(cf), &chal), SASL_NEED_AUTHD);
	sasl_free(a);
	/* NULL-safe */
	assert_int_equal(sasl_step(NULL, "", 0, &chal), SASL_BAD_SYNTAX);
	assert_int_equal(sasl_answer(NULL, &la, &chal), SASL_BAD_SYNTAX);
	assert_null(sasl_request(NULL));
	assert_null(sasl_user(NULL));
	sasl_free(NULL);
	free(cf);
	free(fin);
	buf_free(&chal);
}

/* ---- SCRAM key material ---------------------------------------------- */

static void test_scram_keys(void **state)
{
	struct buf salt;
	b64_to(V_SALT, &salt);
	struct scram_keys k, k2;
	assert_int_equal(scram_keys_derive("pencil", 6, buf_ptr(&salt), buf_len(&salt), 4096, &k),
			 0);
	struct buf out;
	buf_init(&out, 1024);
	buf_puts(&out, "old");
	assert_int_equal(scram_keys_format(&k, &out), 0);
	const char *want = "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"
			   "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
			   "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
	assert_buf(&out, want, strlen(want));
	assert_int_equal(scram_keys_parse(want, strlen(want), &k2), 0);
	assert_memory_equal(&k, &k2, sizeof(k));
	/* prefix optional, any case */
	const char *bare = want + strlen("{SCRAM-SHA-256}");
	assert_int_equal(scram_keys_parse(bare, strlen(bare), &k2), 0);
	assert_memory_equal(&k, &k2, sizeof(k));
	char *lower = str_dup(want);
	memcpy(lower, "{scram-sha-256}", 15);
	assert_int_equal(scram_keys_parse(lower, strlen(lower), &k2), 0);
	free(lower);

	static const char *const bad[] = {
		"",
		"{SCRAM-SHA-256}",
		"{SCRAM-SHA-1}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"
		"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"0,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"04096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"-1,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"99999999999,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"4096,,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"4096,W22ZaJ0SNY7soEsUEjb6gQ=,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
		"4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=,",
		"4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
		"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (scram_keys_parse(bad[i], strlen(bad[i]), &k2) != -1)
			fail_msg("scram_keys_parse accepted bad[%zu]", i);
	/* Only the given length is read. */
	assert_int_equal(scram_keys_parse(want, strlen(want) - 1, &k2), -1);

	assert_int_equal(scram_keys_derive("x", 1, buf_ptr(&salt), 0, 4096, &k2), -1);
	assert_int_equal(scram_keys_derive("x", 1, buf_ptr(&salt), buf_len(&salt), 0, &k2), -1);
	uint8_t big[65] = { 0 };
	assert_int_equal(scram_keys_derive("x", 1, big, sizeof(big), 1, &k2), -1);
	/* An empty password still derives (the auth process decides policy). */
	assert_int_equal(scram_keys_derive("", 0, buf_ptr(&salt), buf_len(&salt), 1, &k2), 0);
	assert_memory_not_equal(k2.stored_key, k.stored_key, 32);
	struct scram_keys z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(scram_keys_format(&z, &out), -1);
	buf_free(&out);
	buf_free(&salt);
}

/* ---- penalty table --------------------------------------------------- */

static const struct penalty_conf pconf = {
	.delay_after = 3, .block_after = 6, .window_s = 100, .block_s = 50,
	.max_delay_ms = 3000, .max_entries = 1000,
};

static void test_penalty_delay_block(void **state)
{
	struct penalty *p = penalty_new(&pconf);
	unsigned d = 99;
	assert_int_equal(penalty_check(p, "1.2.3.4", 0, &d), AUTH_OK);
	assert_int_equal(d, 0);
	unsigned prev = 0;
	for (unsigned f = 1; f <= 5; f++) {
		penalty_fail(p, "1.2.3.4", f);
		assert_int_equal(penalty_check(p, "1.2.3.4", f, &d), AUTH_OK);
		if (f < pconf.delay_after) {
			assert_int_equal(d, 0);
		} else {
			assert_true(d > prev);
			assert_true(d <= pconf.max_delay_ms);
		}
		prev = d;
	}
	assert_int_equal(prev, pconf.max_delay_ms);
	/* Another key is unaffected. */
	assert_int_equal(penalty_check(p, "1.2.3.5", 5, &d), AUTH_OK);
	assert_int_equal(d, 0);
	/* The block_after-th failure blocks, for block_s. */
	penalty_fail(p, "1.2.3.4", 10);
	assert_int_equal(penalty_check(p, "1.2.3.4", 10, &d), AUTH_BLOCKED);
	assert_int_equal(penalty_check(p, "1.2.3.4", 59, &d), AUTH_BLOCKED);
	/* A success cannot lift a block (the password is not checked then). */
	penalty_success(p, "1.2.3.4");
	assert_int_equal(penalty_check(p, "1.2.3.4", 59, &d), AUTH_BLOCKED);
	/* Expired: counting starts afresh. */
	assert_int_equal(penalty_check(p, "1.2.3.4", 60, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_fail(p, "1.2.3.4", 61);
	assert_int_equal(penalty_check(p, "1.2.3.4", 61, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_free(p);

	/* The cap holds when the growth would pass it (no blocking). */
	struct penalty_conf c = pconf;
	c.block_after = 0;
	c.delay_after = 1;
	p = penalty_new(&c);
	for (int i = 0; i < 50; i++)
		penalty_fail(p, "u", 1);
	assert_int_equal(penalty_check(p, "u", 1, &d), AUTH_OK);
	assert_int_equal(d, c.max_delay_ms);
	penalty_free(p);
	/* Delay off. */
	c = pconf;
	c.max_delay_ms = 0;
	p = penalty_new(&c);
	for (int i = 0; i < 5; i++)
		penalty_fail(p, "u", 1);
	assert_int_equal(penalty_check(p, "u", 1, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_fail(p, "u", 1);
	assert_int_equal(penalty_check(p, "u", 1, &d), AUTH_BLOCKED);
	penalty_free(p);
}

static void test_penalty_window(void **state)
{
	struct penalty *p = penalty_new(&pconf);
	unsigned d;
	/* Failures spread wider than the window never block. */
	for (int64_t t = 1000; t < 1000 + 20 * 60; t += 60) {
		penalty_fail(p, "slow", t);
		assert_int_equal(penalty_check(p, "slow", t, &d), AUTH_OK);
	}
	/* Counts inside one window add up... */
	for (int i = 0; i < 5; i++)
		penalty_fail(p, "k", 2000 + i);
	assert_int_equal(penalty_check(p, "k", 2010, &d), AUTH_OK);
	assert_true(d > 0);
	/* ...and are gone once it has passed. */
	assert_int_equal(penalty_check(p, "k", 2100, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_fail(p, "k", 2100);
	assert_int_equal(penalty_check(p, "k", 2100, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_free(p);
}

static void test_penalty_success(void **state)
{
	struct penalty *p = penalty_new(&pconf);
	unsigned d;
	for (int i = 0; i < 5; i++) {
		penalty_fail(p, "user@example.org", 1);
		penalty_fail(p, "10.0.0.1", 1);
	}
	penalty_success(p, "user@example.org");
	assert_int_equal(penalty_check(p, "user@example.org", 1, &d), AUTH_OK);
	assert_int_equal(d, 0);
	/* Only the key given is cleared. */
	assert_int_equal(penalty_check(p, "10.0.0.1", 1, &d), AUTH_OK);
	assert_true(d > 0);
	/* A cleared key needs block_after fresh failures again. */
	for (int i = 0; i < 5; i++)
		penalty_fail(p, "user@example.org", 2);
	assert_int_equal(penalty_check(p, "user@example.org", 2, &d), AUTH_OK);
	penalty_fail(p, "user@example.org", 2);
	assert_int_equal(penalty_check(p, "user@example.org", 2, &d), AUTH_BLOCKED);
	penalty_success(p, "never-seen");
	penalty_free(p);
}

static void test_penalty_bounded(void **state)
{
	struct penalty_conf c = pconf;
	c.max_entries = 8;
	struct penalty *p = penalty_new(&c);
	unsigned d;
	char key[32];
	/* The oldest block is evicted once more than max_entries keys fail. */
	for (int i = 0; i < 6; i++)
		penalty_fail(p, "first", 1);
	assert_int_equal(penalty_check(p, "first", 1, &d), AUTH_BLOCKED);
	for (int k = 0; k < 7; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		penalty_fail(p, key, 2);
	}
	assert_int_equal(penalty_check(p, "first", 2, &d), AUTH_BLOCKED);
	/* A failure refreshes a key, so the least recently failed goes first. */
	penalty_fail(p, "k0", 3);
	penalty_fail(p, "new", 3);
	assert_int_equal(penalty_check(p, "first", 3, &d), AUTH_OK);
	penalty_fail(p, "k0", 3);
	penalty_fail(p, "k0", 3);
	penalty_fail(p, "new2", 3); /* evicts k1, not k0 */
	assert_int_equal(penalty_check(p, "k0", 3, &d), AUTH_OK);
	assert_true(d > 0);
	/* A flood of keys: only the newest max_entries survive, each whole. */
	for (int k = 0; k < 10000; k++) {
		snprintf(key, sizeof(key), "flood%d", k);
		for (unsigned i = 0; i < c.delay_after; i++)
			penalty_fail(p, key, 4);
	}
	for (int k = 0; k < 10000; k++) {
		snprintf(key, sizeof(key), "flood%d", k);
		assert_int_equal(penalty_check(p, key, 4, &d), AUTH_OK);
		if (k >= 10000 - (int)c.max_entries)
			assert_true(d > 0);
		else
			assert_int_equal(d, 0);
	}
	assert_int_equal(penalty_check(p, "k0", 4, &d), AUTH_OK);
	assert_int_equal(d, 0);
	penalty_free(p);
	penalty_free(NULL);
}

/* ---- worker/auth-process messages ------------------------------------ */

static void test_authmsg_roundtrip(void **state)
{
	struct authd_field f[AUTHD_MAX_FIELDS];
	const char *vals[] = { "10.0.0.1", "", "tim", "pw\0x", "", "a", "bb", "ccc" };
	size_t lens[] = { 8, 0, 3, 4, 0, 1, 2, 3 };
	for (size_t n = 0; n <= AUTHD_MAX_FIELDS; n++) {
		for (size_t i = 0; i < n; i++)
			f[i] = (struct authd_field){ (const uint8_t *)vals[i], lens[i] };
		struct buf out;
		buf_init(&out, AUTHD_MAX_MSG);
		buf_puts(&out, "stale");
		assert_int_equal(authd_encode(&out, AUTHD_PLAIN, 0xdeadbeef, n, f), 0);
		const uint8_t *p = buf_ptr(&out);
		assert_int_equal(p[0], AUTHD_PLAIN);
		assert_int_equal(p[1], 0xde);
		assert_int_equal(p[4], 0xef);
		assert_int_equal(p[5], n);
		struct authd_msg m;
		assert_int_equal(authd_decode(p, buf_len(&out), &m), 0);
		assert_int_equal(m.type, AUTHD_PLAIN);
		assert_int_equal(m.id, 0xdeadbeef);
		assert_int_equal(m.n, n);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(m.f[i].n, lens[i]);
			if (lens[i])
				assert_memory_equal(m.f[i].p, vals[i], lens[i]);
		}
		/* Every strict prefix is truncated, every extension is garbage. */
		for (size_t cut = 0; cut < buf_len(&out); cut++)
			assert_int_equal(authd_decode(p, cut, &m), -1);
		uint8_t *x = xmalloc(buf_len(&out) + 1);
		memcpy(x, p, buf_len(&out));
		x[buf_len(&out)] = 0;
		assert_int_equal(authd_decode(x, buf_len(&out) + 1, &m), -1);
		free(x);
		buf_free(&out);
	}
	/* Exact bytes of a small message. */
	struct buf out;
	buf_init(&out, AUTHD_MAX_MSG);
	f[0] = (struct authd_field){ (const uint8_t *)"ok", 2 };
	assert_int_equal(authd_encode(&out, AUTHD_REPLY, 7, 1, f), 0);
	assert_buf(&out, "\x80\0\0\0\x07\x01\0\0\0\x02ok", 12);
	/* Limits on encoding. */
	assert_int_equal(authd_encode(&out, AUTHD_REPLY, 7, AUTHD_MAX_FIELDS + 1, f), -1);
	uint8_t *big = xcalloc(1, AUTHD_MAX_MSG);
	f[0] = (struct authd_field){ big, AUTHD_MAX_MSG - 10 };
	assert_int_equal(authd_encode(&out, AUTHD_REPLY, 7, 1, f), 0);
	assert_int_equal(buf_len(&out), AUTHD_MAX_MSG);
	struct authd_msg m;
	assert_int_equal(authd_decode(buf_ptr(&out), buf_len(&out), &m), 0);
	f[0].n++;
	assert_int_equal(authd_encode(&out, AUTHD_REPLY, 7, 1, f), -1);
	free(big);
	buf_free(&out);
}

static void test_authmsg_malformed(void **state)
{
	static const struct {
		const char *p;
		size_t n;
	} bad[] = {
		{ "", 0 },
		{ "\x01", 1 },
		{ "\x01\0\0\0\x01", 5 },                          /* truncated header */
		{ "\x01\0\0\0\x01\x01", 6 },                      /* field missing */
		{ "\x01\0\0\0\x01\x01\0\0\0", 9 },                /* length truncated */
		{ "\x01\0\0\0\x01\x01\0\0\0\x05" "abcd", 14 },    /* length beyond end */
		{ "\x01\0\0\0\x01\x01\xff\xff\xff\xff" "abcd", 14 },
		{ "\x01\0\0\0\x01\x09\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
		  "\0\0\0\0\0\0\0\0\0\0\0\0", 42 },               /* too many fields */
		{ "\x01\0\0\0\x01\xff", 6 },
		{ "\x01\0\0\0\x01\0x", 7 },                       /* trailing garbage */
		{ "\x01\0\0\0\x01\x01\0\0\0\x01" "ab", 12 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct authd_msg m;
		if (authd_decode((const uint8_t *)bad[i].p, bad[i].n, &m) != -1)
			fail_msg("authd_decode accepted bad[%zu]", i);
	}
	struct authd_msg m;
	assert_int_equal(authd_decode((const uint8_t *)"\x01\0\0\0\x01\0", 6, &m), 0);
	assert_int_equal(m.n, 0);
	assert_int_equal(m.id, 1);
	/* Longer than a message may be. */
	uint8_t *big = xcalloc(1, AUTHD_MAX_MSG + 1);
	big[5] = 1;
	big[8] = (uint8_t)((AUTHD_MAX_MSG + 1 - 10) >> 8);
	big[9] = (uint8_t)(AUTHD_MAX_MSG + 1 - 10);
	assert_int_equal(authd_decode(big, AUTHD_MAX_MSG + 1, &m), -1);
	free(big);
}

static void test_auth_result_words(void **state)
{
	static const struct {
		enum auth_result r;
		const char *w;
	} words[] = { { AUTH_OK, "ok" }, { AUTH_FAIL, "fail" }, { AUTH_TEMPFAIL, "tempfail" },
		      { AUTH_BLOCKED, "blocked" } };
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		assert_string_equal(auth_result_name(words[i].r), words[i].w);
		enum auth_result r = (enum auth_result)99;
		assert_int_equal(auth_result_parse((const uint8_t *)words[i].w, strlen(words[i].w),
						   &r), 0);
		assert_int_equal(r, words[i].r);
	}
	enum auth_result r;
	assert_int_equal(auth_result_parse((const uint8_t *)"OK", 2, &r), -1);
	assert_int_equal(auth_result_parse((const uint8_t *)"okay", 4, &r), -1);
	assert_int_equal(auth_result_parse((const uint8_t *)"ok", 1, &r), -1);
	assert_int_equal(auth_result_parse((const uint8_t *)"", 0, &r), -1);
	assert_int_equal(auth_result_parse((const uint8_t *)"fail\0", 5, &r), -1);
}


/* Replies of the auth process turned back into answers. */
static void test_authd_answers(void **state)
{
	(void)state;
	struct authd_msg m;
	memset(&m, 0, sizeof(m));
	static const struct { const char *w; enum auth_result r; } words[] = {
		{ "ok", AUTH_OK }, { "local", AUTH_OK }, { "fail", AUTH_FAIL },
		{ "unknown", AUTH_FAIL }, { "blocked", AUTH_BLOCKED }, { "tempfail", AUTH_TEMPFAIL },
		{ "OK", AUTH_TEMPFAIL }, { "locals", AUTH_TEMPFAIL }, { "", AUTH_TEMPFAIL },
	};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		m.n = 1;
		m.f[0] = (struct authd_field){ (const uint8_t *)words[i].w, strlen(words[i].w) };
		assert_int_equal(authd_reply_result(&m), words[i].r);
	}
	assert_int_equal(authd_reply_result(NULL), AUTH_TEMPFAIL);
	m.n = 0;
	assert_int_equal(authd_reply_result(&m), AUTH_TEMPFAIL);

	/* SCRAM lookup: salt and decimal iterations; a malformed count is a
	 * temporary failure, never a success. */
	static const struct { const char *iter; unsigned want; enum auth_result r; } its[] = {
		{ "4096", 4096, AUTH_OK }, { "1", 1, AUTH_OK }, { "0", 0, AUTH_TEMPFAIL },
		{ "40x6", 0, AUTH_TEMPFAIL }, { "99999999999", 0, AUTH_TEMPFAIL },
	};
	for (size_t i = 0; i < sizeof(its) / sizeof(its[0]); i++) {
		m.n = 4;
		m.f[0] = (struct authd_field){ (const uint8_t *)"ok", 2 };
		m.f[1] = (struct authd_field){ (const uint8_t *)"bob", 3 };
		m.f[2] = (struct authd_field){ (const uint8_t *)"saltsalt", 8 };
		m.f[3] = (struct authd_field){ (const uint8_t *)its[i].iter, strlen(its[i].iter) };
		struct buf user;
		buf_init(&user, 64);
		struct sasl_answer a;
		authd_sasl_answer(&m, SASL_REQ_SCRAM_LOOKUP, &user, &a);
		assert_int_equal(a.result, its[i].r);
		if (a.result == AUTH_OK) {
			assert_int_equal(a.iterations, its[i].want);
			assert_int_equal(a.salt_len, 8);
			assert_string_equal(a.user, "bob");
		}
		buf_free(&user);
	}
	/* A verify answer without its signature is not a success. */
	m.n = 2;
	struct buf user;
	buf_init(&user, 64);
	struct sasl_answer a;
	authd_sasl_answer(&m, SASL_REQ_SCRAM_VERIFY, &user, &a);
	assert_int_equal(a.result, AUTH_TEMPFAIL);
	buf_free(&user);

	/* Request fields for PLAIN carry ip, authzid, user and password. */
	struct sasl_request q = { .kind = SASL_REQ_PLAIN, .authzid = "", .user = "u",
				  .password = "pw", .password_len = 2 };
	struct authd_field f[4];
	uint8_t type = 0;
	assert_int_equal(authd_sasl_fields(&q, "192.0.2.1", f, &type), 4);
	assert_int_equal(type, AUTHD_PLAIN);
	assert_int_equal(f[3].n, 2);
	assert_memory_equal(f[0].p, "192.0.2.1", 9);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_b64_malformed),
		cmocka_unit_test(test_rand),
		cmocka_unit_test(test_mech_names),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_plain_special),
		cmocka_unit_test(test_plain_max),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_login),
		cmocka_unit_test(test_scram_rfc7677),
		cmocka_unit_test(test_scram_errors),
		cmocka_unit_test(test_scram_flow_edges),
		cmocka_unit_test(test_scram_keys),
		cmocka_unit_test(test_penalty_delay_block),
		cmocka_unit_test(test_penalty_window),
		cmocka_unit_test(test_penalty_success),
		cmocka_unit_test(test_penalty_bounded),
		cmocka_unit_test(test_authmsg_roundtrip),
		cmocka_unit_test(test_authmsg_malformed),
		cmocka_unit_test(test_auth_result_words),
		cmocka_unit_test(test_authd_answers),
	};
	return cmocka_run_group_tests_name("sasl", tests, NULL, NULL);
}
