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
