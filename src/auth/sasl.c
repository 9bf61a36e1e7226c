/*
 * SASL mechanisms as pure state machines: PLAIN (RFC 4616), LOGIN
 * (draft-murchison-sasl-login) and SCRAM-SHA-256 (RFC 5802, RFC 7677)
 * without channel binding.  Secrets are checked by the auth process; the
 * machine only parses, asks and relays.  Every client response is
 * decoded into a buffer bounded by `max`, and everything kept is derived
 * from such responses, so memory stays within a small multiple of it.
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define SCRAM_PROOF_LEN 32
#define SCRAM_SIG_LEN 32

/* "Username:" and "Password:" in base64, as every LOGIN client expects. */
#define LOGIN_USER_CHAL "VXNlcm5hbWU6"
#define LOGIN_PASS_CHAL "UGFzc3dvcmQ6"

enum sasl_state {
	ST_INIT,
	ST_PLAIN_RESP,     /* waiting for the PLAIN response */
	ST_LOGIN_USER,     /* sent "Username:" */
	ST_LOGIN_PASS,     /* sent "Password:" */
	ST_PLAIN_AUTHD,    /* PLAIN/LOGIN request out */
	ST_SCRAM_FIRST,    /* waiting for client-first-message */
	ST_SCRAM_LOOKUP,   /* lookup request out */
	ST_SCRAM_FINAL,    /* sent server-first, waiting for client-final */
	ST_SCRAM_VERIFY,   /* verify request out */
	ST_SCRAM_END,      /* sent server-final, waiting for the empty response */
	ST_SUCCESS,
	ST_DONE,           /* ended without success */
};

struct sasl {
	unsigned mech;
	enum sasl_state st;
	size_t max;
	char *snonce;          /* server part of the SCRAM nonce */
	struct buf dec;        /* the last decoded client response */
	struct sasl_request req;
	char *authzid;
	char *user;            /* authentication identity as the client sent it */
	char *password;
	size_t password_len;
	char *canon;           /* canonical user from the auth process */
	/* SCRAM */
	char *gs2;             /* gs2 header, e.g. "n,," */
	char *cfirst_bare;
	char *nonce;           /* client nonce + server nonce */
	char *sfirst;
	char *auth_message;
	size_t auth_message_len;
	uint8_t proof[SCRAM_PROOF_LEN];
};

static const struct {
	const char *name;
	unsigned mech;
} sasl_mechs[] = {
	{ "PLAIN", SASL_MECH_PLAIN },
	{ "LOGIN", SASL_MECH_LOGIN },
	{ "SCRAM-SHA-256", SASL_MECH_SCRAM_SHA_256 },
};

unsigned sasl_mech_from_name(const char *name, size_t n)
{
	if (!name)
		return 0;
	for (size_t i = 0; i < sizeof(sasl_mechs) / sizeof(sasl_mechs[0]); i++)
		if (str_eq_nocase(name, n, sasl_mechs[i].name))
			return sasl_mechs[i].mech;
	return 0;
}

const char *sasl_mech_name(unsigned mech)
{
	for (size_t i = 0; i < sizeof(sasl_mechs) / sizeof(sasl_mechs[0]); i++)
		if (sasl_mechs[i].mech == mech)
			return sasl_mechs[i].name;
	return NULL;
}

/* Frees a secret after wiping it; the volatile pointer keeps the wipe
 * from being optimised away. */
static void secret_free(char *p, size_t n)
{
	if (!p)
		return;
	volatile char *v = p;
	for (size_t i = 0; i < n; i++)
		v[i] = 0;
	free(p);
}

static void buf_wipe(struct buf *b)
{
	if (b->data) {
		volatile uint8_t *v = b->data;
		for (size_t i = 0; i < b->cap; i++)
			v[i] = 0;
	}
	buf_reset(b);
}

struct sasl *sasl_new(unsigned mech, const char *nonce, size_t max)
{
	if (mech != SASL_MECH_PLAIN && mech != SASL_MECH_LOGIN && mech != SASL_MECH_SCRAM_SHA_256)
		return NULL;
	if (mech == SASL_MECH_SCRAM_SHA_256) {
		/* The nonce goes verbatim into server-first: printable, no ','. */
		if (!nonce || !*nonce)
			return NULL;
		for (const char *c = nonce; *c; c++)
			if (*c < 0x21 || *c > 0x7e || *c == ',')
				return NULL;
	}
	struct sasl *a = xcalloc(1, sizeof(*a));
	a->mech = mech;
	a->max = max;
	a->st = ST_INIT;
	a->snonce = str_dup(nonce ? nonce : "");
	buf_init(&a->dec, max);
	return a;
}

void sasl_free(struct sasl *a)
{
	if (!a)
		return;
	buf_wipe(&a->dec);
	buf_free(&a->dec);
	free(a->snonce);
	free(a->authzid);
	free(a->user);
	secret_free(a->password, a->password_len);
	free(a->canon);
	free(a->gs2);
	free(a->cfirst_bare);
	free(a->nonce);
	free(a->sfirst);
	free(a->auth_message);
	volatile uint8_t *v = a->proof;
	for (size_t i = 0; i < sizeof(a->proof); i++)
		v[i] = 0;
	free(a);
}

/* Ends the exchange with st. */
static enum sasl_status sasl_end(struct sasl *a, enum sasl_status st)
{
	a->st = st == SASL_SUCCESS ? ST_SUCCESS : ST_DONE;
	buf_wipe(&a->dec);
	memset(&a->req, 0, sizeof(a->req));
	if (a->password) {
		secret_free(a->password, a->password_len);
		a->password = NULL;
		a->password_len = 0;
	}
	return st;
}

/* Decodes a client response into a->dec.  1 for "*", 0 decoded, -1 bad. */
static int sasl_decode(struct sasl *a, const char *p, size_t n)
{
	buf_wipe(&a->dec);
	if (n == 1 && p[0] == '*')
		return 1;
	/* "=" is an empty initial response (RFC 4954 section 4); accepted on
	 * later lines too, where some clients send it for "nothing". */
	if (n == 1 && p[0] == '=')
		return 0;
	/* Refuse before decoding anything that could not fit. */
	if (n / 4 > a->max / 3 + 1)
		return -1;
	if (b64_decode(p, n, &a->dec) < 0) {
		buf_wipe(&a->dec);
		return -1;
	}
	return 0;
}

/* Well-formed UTF-8 (RFC 3629) without NUL or other C0 controls: what an
 * identity may be before it goes into lookups and logs. */
static bool sasl_identity_ok(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = p[i];
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t k;
		uint32_t cp;
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i - 1 < k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

static enum sasl_status sasl_need_plain(struct sasl *a)
{
	memset(&a->req, 0, sizeof(a->req));
	a->req.kind = SASL_REQ_PLAIN;
	a->req.authzid = a->authzid ? a->authzid : "";
	a->req.user = a->user;
	a->req.password = a->password;
	a->req.password_len = a->password_len;
	a->st = ST_PLAIN_AUTHD;
	return SASL_NEED_AUTHD;
}

/* ---- PLAIN ----------------------------------------------------------- */

/* message = [authzid] NUL authcid NUL passwd (RFC 4616 section 2). */
static enum sasl_status plain_parse(struct sasl *a)
{
	const uint8_t *p = buf_ptr(&a->dec);
	size_t n = buf_len(&a->dec);
	const uint8_t *z1 = memchr(p, 0, n);
	if (!z1)
		return sasl_end(a, SASL_BAD_SYNTAX);
	const uint8_t *c = z1 + 1;
	size_t rest = n - (size_t)(c - p);
	const uint8_t *z2 = memchr(c, 0, rest);
	if (!z2)
		return sasl_end(a, SASL_BAD_SYNTAX);
	const uint8_t *pw = z2 + 1;
	size_t zl = (size_t)(z1 - p), cl = (size_t)(z2 - c), pl = n - (size_t)(pw - p);
	if (cl == 0 || pl == 0 || memchr(pw, 0, pl))
		return sasl_end(a, SASL_BAD_SYNTAX);
	if (!sasl_identity_ok(p, zl) || !sasl_identity_ok(c, cl))
		return sasl_end(a, SASL_BAD_SYNTAX);
	/* No proxy authorization: an authzid must name the same identity. */
	if (zl && (zl != cl || memcmp(p, c, cl) != 0))
		return sasl_end(a, SASL_FAILED);
	free(a->authzid);
	free(a->user);
	a->authzid = str_ndup(p, zl);
	a->user = str_ndup(c, cl);
	secret_free(a->password, a->password_len);
	a->password = str_ndup(pw, pl);
	a->password_len = pl;
	buf_wipe(&a->dec);
	return sasl_need_plain(a);
}

/* ---- LOGIN ----------------------------------------------------------- */

static enum sasl_status login_user(struct sasl *a, struct buf *challenge)
{
	const uint8_t *p = buf_ptr(&a->dec);
	size_t n = buf_len(&a->dec);
	if (n == 0 || !sasl_identity_ok(p, n))
		return sasl_end(a, SASL_BAD_SYNTAX);
	free(a->user);
	a->user = str_ndup(p, n);
	buf_wipe(&a->dec);
	if (buf_puts(challenge, LOGIN_PASS_CHAL) < 0)
		return sasl_end(a, SASL_TEMPFAIL);
	a->st = ST_LOGIN_PASS;
	return SASL_CHALLENGE;
}

static enum sasl_status login_pass(struct sasl *a)
{
	const uint8_t *p = buf_ptr(&a->dec);
	size_t n = buf_len(&a->dec);
	if (n == 0 || memchr(p, 0, n))
		return sasl_end(a, SASL_BAD_SYNTAX);
	secret_free(a->password, a->password_len);
	a->password = str_ndup(p, n);
	a->password_len = n;
	buf_wipe(&a->dec);
	return sasl_need_plain(a);
}

/* ---- SCRAM-SHA-256 --------------------------------------------------- */

/* Decodes a saslname ("=2C" -> ',', "=3D" -> '='); NULL if malformed. */
static char *scram_name(const char *p, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == ',' || p[i] == '\0')
			goto bad;
		if (p[i] != '=') {
			out[o++] = p[i];
			continue;
		}
		if (n - i < 3)
			goto bad;
		if (p[i + 1] == '2' && p[i + 2] == 'C')
			out[o++] = ',';
		else if (p[i + 1] == '3' && p[i + 2] == 'D')
			out[o++] = '=';
		else
			goto bad;
		i += 2;
	}
	out[o] = '\0';
	if (o == 0 || !sasl_identity_ok((const uint8_t *)out, o))
		goto bad;
	return out;
bad:
	free(out);
	return NULL;
}

/* Splits the next attribute "x=value" off s[*pos..n) (up to ',' or end).
 * Returns the attribute letter, or 0 if the text there is no attribute. */
static char scram_attr(const char *s, size_t n, size_t *pos, const char **val, size_t *vlen)
{
	size_t i = *pos;
	if (n - i < 2 || s[i + 1] != '=')
		return 0;
	char c = s[i];
	if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
		return 0;
	size_t j = i + 2;
	while (j < n && s[j] != ',')
		j++;
	*val = s + i + 2;
	*vlen = j - i - 2;
	*pos = j;
	return c;
}

/* Skips the ',' after an attribute; false at the end of the message. */
static bool scram_comma(const char *s, size_t n, size_t *pos)
{
	if (*pos >= n)
		return false;
	(*pos)++; /* scram_attr stops only at ',' or the end */
	return true;
}

static bool scram_printable(const char *p, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
			return false;
	return true;
}

/* Optional extensions (RFC 5802: attr-val *("," attr-val)) up to `end`,
 * which are ignored but must be well-formed. */
static bool scram_skip_ext(const char *s, size_t n, size_t *pos, char stop)
{
	const char *v;
	size_t vl;
	for (;;) {
		size_t save = *pos;
		char c = scram_attr(s, n, pos, &v, &vl);
		if (!c)
			return false;
		if (c == stop) {
			*pos = save;
			return true;
		}
		if (c == 'm')
			return false;
		if (!scram_comma(s, n, pos))
			return stop == 0;
	}
}

static enum sasl_status scram_first(struct sasl *a)
{
	const char *s = (const char *)buf_ptr(&a->dec);
	size_t n = buf_len(&a->dec);
	size_t pos = 0;
	const char *v;
	size_t vl;

	if (n == 0 || memchr(s, 0, n))
		return sasl_end(a, SASL_BAD_SYNTAX);
	/* gs2-cbind-flag */
	if (s[0] == 'p') {
		if (n < 2 || s[1] != '=')
			return sasl_end(a, SASL_BAD_SYNTAX);
		/* Channel binding is not offered (no -PLUS mechanism). */
		return sasl_end(a, SASL_FAILED);
	}
	if (s[0] != 'n' && s[0] != 'y')
		return sasl_end(a, SASL_BAD_SYNTAX);
	if (n < 2 || s[1] != ',')
		return sasl_end(a, SASL_BAD_SYNTAX);
	pos = 2;
	char *authzid = NULL;
	if (pos < n && s[pos] != ',') {
		char c = scram_attr(s, n, &pos, &v, &vl);
		if (c != 'a' || pos >= n)
			return sasl_end(a, SASL_BAD_SYNTAX);
		authzid = scram_name(v, vl);
		if (!authzid)
			return sasl_end(a, SASL_BAD_SYNTAX);
	}
	if (pos >= n || s[pos] != ',') {
		free(authzid);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	pos++;
	size_t gs2_len = pos;
	size_t bare = pos;

	/* client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions] */
	char c = scram_attr(s, n, &pos, &v, &vl);
	if (c != 'n' || !scram_comma(s, n, &pos)) {
		free(authzid);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	char *user = scram_name(v, vl);
	if (!user) {
		free(authzid);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	c = scram_attr(s, n, &pos, &v, &vl);
	if (c != 'r' || !scram_printable(v, vl)) {
		free(authzid);
		free(user);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	const char *cnonce = v;
	size_t cnl = vl;
	if (pos < n && (!scram_comma(s, n, &pos) || !scram_skip_ext(s, n, &pos, 0))) {
		free(authzid);
		free(user);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	if (authzid && strcmp(authzid, user) != 0) {
		free(authzid);
		free(user);
		return sasl_end(a, SASL_FAILED);
	}
	free(authzid);

	free(a->user);
	a->user = user;
	free(a->gs2);
	a->gs2 = str_ndup(s, gs2_len);
	free(a->cfirst_bare);
	a->cfirst_bare = str_ndup(s + bare, n - bare);
	size_t sl = strlen(a->snonce);
	free(a->nonce);
	a->nonce = xmalloc(cnl + sl + 1);
	memcpy(a->nonce, cnonce, cnl);
	memcpy(a->nonce + cnl, a->snonce, sl + 1);
	buf_wipe(&a->dec);

	memset(&a->req, 0, sizeof(a->req));
	a->req.kind = SASL_REQ_SCRAM_LOOKUP;
	a->req.user = a->user;
	a->st = ST_SCRAM_LOOKUP;
	return SASL_NEED_AUTHD;
}

static enum sasl_status scram_lookup_answer(struct sasl *a, const struct sasl_answer *ans,
					    struct buf *challenge)
{
	if (!ans->salt || ans->salt_len == 0 || ans->salt_len > AUTHD_MAX_MSG ||
	    ans->iterations == 0)
		return sasl_end(a, SASL_TEMPFAIL);
	struct buf sf;
	buf_init(&sf, SIZE_MAX / 2);
	if (buf_printf(&sf, "r=%s,s=", a->nonce) < 0 ||
	    b64_encode(ans->salt, ans->salt_len, &sf) < 0 ||
	    buf_printf(&sf, ",i=%u", ans->iterations) < 0 || !buf_cstr(&sf)) {
		buf_free(&sf);
		return sasl_end(a, SASL_TEMPFAIL);
	}
	free(a->sfirst);
	a->sfirst = str_ndup(buf_ptr(&sf), buf_len(&sf));
	int rc = b64_encode(buf_ptr(&sf), buf_len(&sf), challenge);
	buf_free(&sf);
	if (rc < 0)
		return sasl_end(a, SASL_TEMPFAIL);
	a->st = ST_SCRAM_FINAL;
	return SASL_CHALLENGE;
}

static enum sasl_status scram_final(struct sasl *a)
{
	const char *s = (const char *)buf_ptr(&a->dec);
	size_t n = buf_len(&a->dec);
	size_t pos = 0;
	const char *v;
	size_t vl;

	if (n == 0 || memchr(s, 0, n))
		return sasl_end(a, SASL_BAD_SYNTAX);
	/* client-final-message = channel-binding "," nonce ["," extensions] "," proof */
	if (scram_attr(s, n, &pos, &v, &vl) != 'c' || !scram_comma(s, n, &pos))
		return sasl_end(a, SASL_BAD_SYNTAX);
	const char *cb = v;
	size_t cbl = vl;
	if (scram_attr(s, n, &pos, &v, &vl) != 'r' || !scram_comma(s, n, &pos))
		return sasl_end(a, SASL_BAD_SYNTAX);
	const char *rn = v;
	size_t rnl = vl;
	if (!scram_skip_ext(s, n, &pos, 'p'))
		return sasl_end(a, SASL_BAD_SYNTAX);
	size_t without_proof = pos - 1; /* up to the ',' before "p=" */
	if (scram_attr(s, n, &pos, &v, &vl) != 'p' || pos != n)
		return sasl_end(a, SASL_BAD_SYNTAX);
	struct buf pr;
	buf_init(&pr, SCRAM_PROOF_LEN);
	if (b64_decode(v, vl, &pr) < 0 || buf_len(&pr) != SCRAM_PROOF_LEN) {
		buf_free(&pr);
		return sasl_end(a, SASL_BAD_SYNTAX);
	}
	/* pr.data, not buf_ptr(): the length is checked above, but the
	 * compiler (-O3, _FORTIFY_SOURCE=3) sees buf_ptr's "" for an empty
	 * buffer and refuses the copy. */
	memcpy(a->proof, pr.data + pr.off, SCRAM_PROOF_LEN);
	buf_wipe(&pr);
	buf_free(&pr);

	/* Without channel binding, c= carries the gs2 header only. */
	struct buf want;
	buf_init(&want, SIZE_MAX / 2);
	int rc = b64_encode(a->gs2, strlen(a->gs2), &want);
	bool cb_ok = rc == 0 && buf_len(&want) == cbl && memcmp(buf_ptr(&want), cb, cbl) == 0;
	buf_free(&want);
	if (rc < 0)
		return sasl_end(a, SASL_TEMPFAIL);
	if (!cb_ok)
		return sasl_end(a, SASL_FAILED);
	if (rnl != strlen(a->nonce) || memcmp(rn, a->nonce, rnl) != 0)
		return sasl_end(a, SASL_FAILED);

	size_t bl = strlen(a->cfirst_bare), sl = strlen(a->sfirst);
	free(a->auth_message);
	a->auth_message_len = bl + 1 + sl + 1 + without_proof;
	a->auth_message = xmalloc(a->auth_message_len + 1);
	char *w = a->auth_message;
	memcpy(w, a->cfirst_bare, bl);
	w += bl;
	*w++ = ',';
	memcpy(w, a->sfirst, sl);
	w += sl;
	*w++ = ',';
	memcpy(w, s, without_proof);
	w[without_proof] = '\0';
	buf_wipe(&a->dec);

	memset(&a->req, 0, sizeof(a->req));
	a->req.kind = SASL_REQ_SCRAM_VERIFY;
	a->req.user = a->user;
	a->req.auth_message = a->auth_message;
	a->req.auth_message_len = a->auth_message_len;
	a->req.proof = a->proof;
	a->req.proof_len = SCRAM_PROOF_LEN;
	a->st = ST_SCRAM_VERIFY;
	return SASL_NEED_AUTHD;
}

static enum sasl_status scram_verify_answer(struct sasl *a, const struct sasl_answer *ans,
					    struct buf *challenge)
{
	if (!ans->server_signature || ans->server_signature_len != SCRAM_SIG_LEN)
		return sasl_end(a, SASL_TEMPFAIL);
	struct buf sf;
	buf_init(&sf, SIZE_MAX / 2);
	int rc = buf_puts(&sf, "v=");
	if (rc == 0)
		rc = b64_encode(ans->server_signature, SCRAM_SIG_LEN, &sf);
	if (rc == 0)
		rc = b64_encode(buf_ptr(&sf), buf_len(&sf), challenge);
	buf_free(&sf);
	if (rc < 0)
		return sasl_end(a, SASL_TEMPFAIL);
	a->st = ST_SCRAM_END;
	return SASL_CHALLENGE;
}

/* ---- the exchange ---------------------------------------------------- */

enum sasl_status sasl_start(struct sasl *a, const char *initial, size_t n, struct buf *challenge)
{
	/* A call out of turn is the caller's bug: refuse it, change nothing. */
	if (!a || !challenge || a->st != ST_INIT)
		return SASL_BAD_SYNTAX;
	buf_reset(challenge);
	if (!initial) {
		switch (a->mech) {
		case SASL_MECH_PLAIN:
			a->st = ST_PLAIN_RESP;
			return SASL_CHALLENGE;
		case SASL_MECH_LOGIN:
			if (buf_puts(challenge, LOGIN_USER_CHAL) < 0)
				return sasl_end(a, SASL_TEMPFAIL);
			a->st = ST_LOGIN_USER;
			return SASL_CHALLENGE;
		default:
			a->st = ST_SCRAM_FIRST;
			return SASL_CHALLENGE;
		}
	}
	int d = sasl_decode(a, initial, n);
	if (d > 0)
		return sasl_end(a, SASL_CANCELLED);
	if (d < 0)
		return sasl_end(a, SASL_BAD_SYNTAX);
	switch (a->mech) {
	case SASL_MECH_PLAIN:
		return plain_parse(a);
	case SASL_MECH_LOGIN:
		return login_user(a, challenge);
	default:
		return scram_first(a);
	}
}

enum sasl_status sasl_step(struct sasl *a, const char *line, size_t n, struct buf *challenge)
{
	if (!a || !challenge || (!line && n))
		return SASL_BAD_SYNTAX;
	switch (a->st) {
	case ST_PLAIN_RESP:
	case ST_LOGIN_USER:
	case ST_LOGIN_PASS:
	case ST_SCRAM_FIRST:
	case ST_SCRAM_FINAL:
	case ST_SCRAM_END:
		break;
	default:
		return SASL_BAD_SYNTAX;
	}
	buf_reset(challenge);
	int d = sasl_decode(a, line ? line : "", n);
	if (d > 0)
		return sasl_end(a, SASL_CANCELLED);
	if (d < 0)
		return sasl_end(a, SASL_BAD_SYNTAX);
	switch (a->st) {
	case ST_PLAIN_RESP:
		return plain_parse(a);
	case ST_LOGIN_USER:
		return login_user(a, challenge);
	case ST_LOGIN_PASS:
		return login_pass(a);
	case ST_SCRAM_FIRST:
		return scram_first(a);
	case ST_SCRAM_FINAL:
		return scram_final(a);
	default: /* ST_SCRAM_END: RFC 5802 ends with an empty client response */
		if (buf_len(&a->dec) != 0)
			return sasl_end(a, SASL_BAD_SYNTAX);
		return sasl_end(a, SASL_SUCCESS);
	}
}

const struct sasl_request *sasl_request(const struct sasl *a)
{
	if (!a || (a->st != ST_PLAIN_AUTHD && a->st != ST_SCRAM_LOOKUP && a->st != ST_SCRAM_VERIFY))
		return NULL;
	return &a->req;
}

static enum sasl_status sasl_not_ok(struct sasl *a, enum auth_result r)
{
	switch (r) {
	case AUTH_TEMPFAIL:
		return sasl_end(a, SASL_TEMPFAIL);
	case AUTH_BLOCKED:
		return sasl_end(a, SASL_BLOCKED);
	default:
		return sasl_end(a, SASL_FAILED);
	}
}

/* Keeps the auth process's name for the user, or the identity the client
 * proved when the answer carries none. */
static void sasl_set_canon(struct sasl *a, const struct sasl_answer *ans)
{
	free(a->canon);
	if (ans->user && *ans->user)
		a->canon = str_dup(ans->user);
	else
		a->canon = str_dup(a->user ? a->user : "");
}

enum sasl_status sasl_answer(struct sasl *a, const struct sasl_answer *ans, struct buf *challenge)
{
	if (!a || !ans || !challenge)
		return SASL_BAD_SYNTAX;
	switch (a->st) {
	case ST_PLAIN_AUTHD:
	case ST_SCRAM_LOOKUP:
	case ST_SCRAM_VERIFY:
		break;
	default:
		return SASL_BAD_SYNTAX;
	}
	buf_reset(challenge);
	memset(&a->req, 0, sizeof(a->req));
	if (ans->result != AUTH_OK)
		return sasl_not_ok(a, ans->result);
	switch (a->st) {
	case ST_PLAIN_AUTHD:
		sasl_set_canon(a, ans);
		return sasl_end(a, SASL_SUCCESS);
	case ST_SCRAM_LOOKUP:
		return scram_lookup_answer(a, ans, challenge);
	default: {
		enum sasl_status st = scram_verify_answer(a, ans, challenge);
		if (st == SASL_CHALLENGE)
			sasl_set_canon(a, ans);
		return st;
	}
	}
}

const char *sasl_user(const struct sasl *a)
{
	if (!a || a->st != ST_SUCCESS)
		return NULL;
	return a->canon;
}
