/* Framing of the messages between workers and the auth process.  Both
 * ends are ours, so anything malformed is refused outright: a peer that
 * sends it is broken or compromised. */
#include <string.h>

#include "auth.h"

#define AUTHD_HDR_LEN 6 /* u8 type, u32 id, u8 nfields */

static void put_u32(uint8_t *w, uint32_t v)
{
	w[0] = (uint8_t)(v >> 24);
	w[1] = (uint8_t)(v >> 16);
	w[2] = (uint8_t)(v >> 8);
	w[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int authd_encode(struct buf *out, uint8_t type, uint32_t id, size_t n,
		 const struct authd_field *f)
{
	buf_reset(out);
	if (n > AUTHD_MAX_FIELDS || (n && !f))
		return -1;
	size_t total = AUTHD_HDR_LEN;
	for (size_t i = 0; i < n; i++) {
		if (f[i].n && !f[i].p)
			return -1;
		if (f[i].n > AUTHD_MAX_MSG || total + 4 + f[i].n > AUTHD_MAX_MSG)
			return -1;
		total += 4 + f[i].n;
	}
	uint8_t *w = buf_reserve(out, total);
	if (!w)
		return -1;
	w[0] = type;
	put_u32(w + 1, id);
	w[5] = (uint8_t)n;
	size_t o = AUTHD_HDR_LEN;
	for (size_t i = 0; i < n; i++) {
		put_u32(w + o, (uint32_t)f[i].n);
		o += 4;
		if (f[i].n)
			memcpy(w + o, f[i].p, f[i].n);
		o += f[i].n;
	}
	buf_commit(out, o);
	return 0;
}

int authd_decode(const uint8_t *p, size_t n, struct authd_msg *m)
{
	if (!p || !m || n < AUTHD_HDR_LEN || n > AUTHD_MAX_MSG)
		return -1;
	memset(m, 0, sizeof(*m));
	m->type = p[0];
	m->id = get_u32(p + 1);
	size_t nf = p[5];
	if (nf > AUTHD_MAX_FIELDS)
		return -1;
	size_t o = AUTHD_HDR_LEN;
	for (size_t i = 0; i < nf; i++) {
		if (n - o < 4)
			return -1;
		size_t len = get_u32(p + o);
		o += 4;
		if (len > n - o)
			return -1;
		m->f[i].p = p + o;
		m->f[i].n = len;
		o += len;
	}
	if (o != n)
		return -1;
	m->n = nf;
	return 0;
}

static const char *const auth_result_names[] = {
	[AUTH_OK] = "ok",
	[AUTH_FAIL] = "fail",
	[AUTH_TEMPFAIL] = "tempfail",
	[AUTH_BLOCKED] = "blocked",
};

const char *auth_result_name(enum auth_result r)
{
	if ((unsigned)r < sizeof(auth_result_names) / sizeof(auth_result_names[0]))
		return auth_result_names[r];
	return "fail";
}

int auth_result_parse(const uint8_t *p, size_t n, enum auth_result *r)
{
	for (size_t i = 0; i < sizeof(auth_result_names) / sizeof(auth_result_names[0]); i++) {
		size_t l = strlen(auth_result_names[i]);
		if (n == l && p && memcmp(p, auth_result_names[i], l) == 0) {
			*r = (enum auth_result)i;
			return 0;
		}
	}
	return -1;
}

/* ---- SASL questions and answers as messages --------------------------- */

size_t authd_sasl_fields(const struct sasl_request *q, const char *ip, struct authd_field *f,
			 uint8_t *type)
{
	size_t n = 0;
	f[n++] = (struct authd_field){ (const uint8_t *)ip, strlen(ip) };
	switch (q->kind) {
	case SASL_REQ_PLAIN:
		*type = AUTHD_PLAIN;
		f[n++] = (struct authd_field){ (const uint8_t *)(q->authzid ? q->authzid : ""),
					       q->authzid ? strlen(q->authzid) : 0 };
		f[n++] = (struct authd_field){ (const uint8_t *)q->user, strlen(q->user) };
		f[n++] = (struct authd_field){ (const uint8_t *)q->password, q->password_len };
		break;
	case SASL_REQ_SCRAM_LOOKUP:
		*type = AUTHD_SCRAM_LOOKUP;
		f[n++] = (struct authd_field){ (const uint8_t *)q->user, strlen(q->user) };
		break;
	case SASL_REQ_SCRAM_VERIFY:
		*type = AUTHD_SCRAM_VERIFY;
		f[n++] = (struct authd_field){ (const uint8_t *)q->user, strlen(q->user) };
		f[n++] = (struct authd_field){ (const uint8_t *)q->auth_message, q->auth_message_len };
		f[n++] = (struct authd_field){ q->proof, q->proof_len };
		break;
	}
	return n;
}

enum auth_result authd_reply_result(const struct authd_msg *m)
{
	enum auth_result r = AUTH_TEMPFAIL;
	if (!m || m->n < 1)
		return AUTH_TEMPFAIL;
	/* Recipient answers have words of their own. */
	if (m->f[0].n == 5 && memcmp(m->f[0].p, "local", 5) == 0)
		return AUTH_OK;
	if (m->f[0].n == 7 && memcmp(m->f[0].p, "unknown", 7) == 0)
		return AUTH_FAIL;
	if (auth_result_parse(m->f[0].p, m->f[0].n, &r) < 0)
		return AUTH_TEMPFAIL;
	return r;
}

void authd_sasl_answer(const struct authd_msg *m, enum sasl_req_kind kind, struct buf *user,
		       struct sasl_answer *out)
{
	memset(out, 0, sizeof(*out));
	out->result = authd_reply_result(m);
	if (m && m->n >= 2 && buf_append(user, m->f[1].p, m->f[1].n) == 0)
		out->user = buf_cstr(user);
	if (out->result != AUTH_OK)
		return;
	if (kind == SASL_REQ_SCRAM_LOOKUP) {
		unsigned long it = 0;
		if (m->n >= 4) {
			out->salt = m->f[2].p;
			out->salt_len = m->f[2].n;
			for (size_t i = 0; i < m->f[3].n; i++) {
				uint8_t ch = m->f[3].p[i];
				if (ch < '0' || ch > '9' || i >= 10) {
					it = 0;
					break;
				}
				it = it * 10 + (unsigned long)(ch - '0');
			}
		}
		out->iterations = it <= 0xffffffffu ? (unsigned)it : 0;
		/* A malformed answer from our own process is not a success. */
		if (!out->salt || out->iterations == 0)
			out->result = AUTH_TEMPFAIL;
	} else if (kind == SASL_REQ_SCRAM_VERIFY) {
		if (m->n >= 3) {
			out->server_signature = m->f[2].p;
			out->server_signature_len = m->f[2].n;
		} else {
			out->result = AUTH_TEMPFAIL;
		}
	}
}
