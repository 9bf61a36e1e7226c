/*
 * Drives each SASL mechanism with fuzzed client lines and fuzzed answers
 * from the auth process.
 *
 * Input: byte 0 picks the mechanism (low 2 bits), whether there is an
 * initial response (bit 2) and the response limit (high bits); the rest
 * is records separated by '\n'.  A record's first byte is a control
 * byte: bit 7 sends the rest raw, otherwise it is base64-encoded first so
 * that the parsers behind the decoding are reached.  While the mechanism
 * waits for the auth process, a record is an answer instead: control
 * byte low 3 bits the result, the rest the user, salt, iterations or
 * server signature.
 *
 * Invariants: a request exists exactly while one is due and is well
 * formed; SASL_SUCCESS comes only from an AUTH_OK answer (PLAIN, LOGIN)
 * or, for SCRAM, from the empty client response after an AUTH_OK verify
 * answer whose signature was sent back as "v="; an ended exchange accepts
 * nothing more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SNONCE "fyko+d2lbbFgONRv9qkxdawL"

static const unsigned mechs[4] = { SASL_MECH_PLAIN, SASL_MECH_LOGIN, SASL_MECH_SCRAM_SHA_256,
				   SASL_MECH_SCRAM_SHA_256 };

static bool terminal(enum sasl_status st)
{
	return st != SASL_CHALLENGE && st != SASL_NEED_AUTHD;
}

static void check_request(const struct sasl *a, unsigned mech, size_t max)
{
	const struct sasl_request *rq = sasl_request(a);
	if (!rq || !rq->user || !*rq->user || strlen(rq->user) > max)
		abort();
	switch (rq->kind) {
	case SASL_REQ_PLAIN:
		if (mech == SASL_MECH_SCRAM_SHA_256 || !rq->authzid || !rq->password ||
		    rq->password_len == 0 || rq->password_len > max ||
		    memchr(rq->password, 0, rq->password_len))
			abort();
		if (*rq->authzid && strcmp(rq->authzid, rq->user) != 0)
			abort();
		break;
	case SASL_REQ_SCRAM_LOOKUP:
		if (mech != SASL_MECH_SCRAM_SHA_256)
			abort();
		break;
	case SASL_REQ_SCRAM_VERIFY:
		if (mech != SASL_MECH_SCRAM_SHA_256 || !rq->proof || rq->proof_len != 32 ||
		    !rq->auth_message || rq->auth_message_len < 2 ||
		    strncmp(rq->auth_message, "n=", 2) != 0 ||
		    !memmem(rq->auth_message, rq->auth_message_len, SNONCE, strlen(SNONCE)))
			abort();
		break;
	default:
		abort();
	}
}

/* "v=" + base64(sig), base64-encoded again: the expected server-final. */
static void expect_final(const uint8_t *sig, struct buf *out)
{
	struct buf v;
	buf_init(&v, 1024);
	buf_puts(&v, "v=");
	b64_encode(sig, 32, &v);
	buf_reset(out);
	b64_encode(buf_ptr(&v), buf_len(&v), out);
	buf_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned mech = mechs[data[0] & 3];
	bool initial = data[0] & 4;
	size_t max = (size_t)(data[0] >> 3) * 16 + 8;
	data++;
	size--;

	struct sasl *a = sasl_new(mech, SNONCE, max);
	if (!a)
		abort();
	struct buf chal, line, want_final;
	buf_init(&chal, 1 << 16);
	buf_init(&line, 1 << 16);
	buf_init(&want_final, 1024);
	enum sasl_status st = SASL_CHALLENGE;
	bool started = false, ended = false;
	bool verified = false;     /* SCRAM: an AUTH_OK verify answer was relayed */
	char canon[64] = "";
	uint8_t sig[32];

	size_t pos = 0;
	while (pos <= size && !ended) {
		const uint8_t *rec = data + pos;
		const uint8_t *nl = memchr(rec, '\n', size - pos);
		size_t rl = nl ? (size_t)(nl - rec) : size - pos;
		pos += rl + 1;
		uint8_t ctl = rl ? rec[0] : 0;
		const uint8_t *pl = rl ? rec + 1 : rec;
		size_t pn = rl ? rl - 1 : 0;

		if (started && st == SASL_NEED_AUTHD) {
			const struct sasl_request *rq = sasl_request(a);
			enum sasl_req_kind kind = rq->kind;
			struct sasl_answer ans;
			memset(&ans, 0, sizeof(ans));
			ans.result = (enum auth_result)(ctl & 7);
			size_t ul = pn < sizeof(canon) - 1 ? pn : sizeof(canon) - 1;
			memcpy(canon, pl, ul);
			canon[ul] = '\0';
			ans.user = canon;
			ans.salt = pl;
			ans.salt_len = pn;
			ans.iterations = ctl >> 3;
			memset(sig, 0, sizeof(sig));
			memcpy(sig, pl, pn < 32 ? pn : 32);
			ans.server_signature = sig;
			ans.server_signature_len = (ctl & 8) ? pn : 32;
			st = sasl_answer(a, &ans, &chal);
			if (st == SASL_SUCCESS &&
			    (ans.result != AUTH_OK || kind != SASL_REQ_PLAIN || !sasl_user(a)))
				abort();
			if (st == SASL_SUCCESS && *canon && strcmp(sasl_user(a), canon) != 0)
				abort();
			if (ans.result != AUTH_OK && !terminal(st))
				abort();
			if (st == SASL_CHALLENGE && kind == SASL_REQ_SCRAM_LOOKUP) {
				struct buf d;
				buf_init(&d, 1 << 17);
				const char *cp = (const char *)buf_ptr(&chal);
				if (b64_decode(cp, buf_len(&chal), &d) < 0 ||
				    buf_len(&d) < 2 || memcmp(buf_ptr(&d), "r=", 2) != 0 ||
				    !memmem(buf_ptr(&d), buf_len(&d), SNONCE, strlen(SNONCE)))
					abort();
				buf_free(&d);
			}
			if (st == SASL_CHALLENGE && kind == SASL_REQ_SCRAM_VERIFY) {
				expect_final(sig, &want_final);
				if (ans.server_signature_len != 32 ||
				    buf_len(&want_final) != buf_len(&chal) ||
				    memcmp(buf_ptr(&want_final), buf_ptr(&chal),
					   buf_len(&chal)) != 0)
					abort();
				verified = true;
			}
		} else {
			buf_reset(&line);
			if (ctl & 0x80)
				buf_append(&line, pl, pn);
			else
				b64_encode(pl, pn, &line);
			const char *lp = (const char *)buf_ptr(&line);
			size_t ll = buf_len(&line);
			bool was_verified = verified;
			if (!started) {
				started = true;
				st = sasl_start(a, initial ? lp : NULL, ll, &chal);
			} else {
				st = sasl_step(a, lp, ll, &chal);
			}
			if (st == SASL_SUCCESS &&
			    (mech != SASL_MECH_SCRAM_SHA_256 || !was_verified || !sasl_user(a)))
				abort();
		}
		if (terminal(st))
			ended = true;
		if ((st == SASL_NEED_AUTHD) != (sasl_request(a) != NULL))
			abort();
		if (st == SASL_NEED_AUTHD)
			check_request(a, mech, max);
		if (st != SASL_SUCCESS && sasl_user(a))
			abort();
	}
	if (ended) {
		/* An ended exchange refuses everything and keeps its outcome. */
		bool ok = st == SASL_SUCCESS;
		struct sasl_answer ans = { .result = AUTH_OK, .user = "x" };
		if (sasl_step(a, "", 0, &chal) != SASL_BAD_SYNTAX ||
		    sasl_answer(a, &ans, &chal) != SASL_BAD_SYNTAX ||
		    sasl_start(a, NULL, 0, &chal) != SASL_BAD_SYNTAX || sasl_request(a) ||
		    (sasl_user(a) != NULL) != ok)
			abort();
	}
	sasl_free(a);
	buf_free(&chal);
	buf_free(&line);
	buf_free(&want_final);
	return 0;
}
