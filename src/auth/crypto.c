/* SCRAM-SHA-256 key material (RFC 5802 section 3, RFC 7677).  The store
 * keeps StoredKey and ServerKey only, so a stolen user file does not
 * directly give a password or a working ClientKey. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <stringprep.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

#define SCRAM_KEY_LEN 32
#define SCRAM_PREFIX "{SCRAM-SHA-256}"

static int scram_hmac(const uint8_t *key, size_t klen, const void *msg, size_t n,
		      uint8_t out[SCRAM_KEY_LEN])
{
	unsigned olen = 0;
	if (klen > INT_MAX)
		return -1;
	/* HMAC() with a NULL data pointer is fine only for n == 0; give it a
	 * valid address anyway. */
	if (!HMAC(EVP_sha256(), key, (int)klen, msg ? msg : (const void *)"", n, out, &olen) ||
	    olen != SCRAM_KEY_LEN)
		return -1;
	return 0;
}

static int scram_sha256(const uint8_t *p, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned olen = 0;
	if (!EVP_Digest(p, n, out, &olen, EVP_sha256(), NULL) || olen != SCRAM_KEY_LEN)
		return -1;
	return 0;
}

int scram_saslprep(const char *password, size_t n, bool stored, struct buf *out)
{
	/* libidn wants a C string; a NUL inside is prohibited anyway. */
	if (memchr(password, 0, n))
		return -1;
	char *in = str_ndup(password, n);
	char *prepped = NULL;
	int rc = stringprep_profile(in, &prepped, "SASLprep",
				    stored ? STRINGPREP_NO_UNASSIGNED : 0);
	explicit_bzero(in, n);
	free(in);
	if (rc != STRINGPREP_OK) {
		free(prepped);
		return -1;
	}
	size_t pn = strlen(prepped);
	int r = buf_append(out, prepped, pn);
	explicit_bzero(prepped, pn);
	free(prepped);
	return r;
}

int scram_keys_derive(const char *password, size_t n, const uint8_t *salt, size_t salt_len,
		      unsigned iterations, struct scram_keys *out)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	int rc = -1;

	if (!out || salt_len == 0 || salt_len > sizeof(out->salt) || iterations == 0 ||
	    iterations > INT_MAX || n > INT_MAX)
		return -1;
	memset(out, 0, sizeof(*out));
	if (!PKCS5_PBKDF2_HMAC(n ? password : "", (int)n, salt, (int)salt_len, (int)iterations,
			       EVP_sha256(), SCRAM_KEY_LEN, salted))
		goto out;
	if (scram_hmac(salted, sizeof(salted), "Client Key", 10, client_key) < 0 ||
	    scram_sha256(client_key, sizeof(client_key), out->stored_key) < 0 ||
	    scram_hmac(salted, sizeof(salted), "Server Key", 10, out->server_key) < 0)
		goto out;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	out->iterations = iterations;
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (rc < 0)
		OPENSSL_cleanse(out, sizeof(*out));
	return rc;
}

/* Decodes one base64 field into dst, which must receive between min and
 * max bytes. */
static int scram_field(const char *p, size_t n, uint8_t *dst, size_t min, size_t max,
		       size_t *got)
{
	struct buf b;
	int rc = -1;
	buf_init(&b, max);
	if (b64_decode(p, n, &b) == 0 && buf_len(&b) >= min && buf_len(&b) <= max) {
		memcpy(dst, buf_ptr(&b), buf_len(&b));
		*got = buf_len(&b);
		rc = 0;
	}
	if (b.data)
		OPENSSL_cleanse(b.data, b.cap);
	buf_free(&b);
	return rc;
}

int scram_keys_parse(const char *s, size_t n, struct scram_keys *out)
{
	const size_t plen = sizeof(SCRAM_PREFIX) - 1;
	const char *f[4];
	size_t fl[4];
	size_t nf = 0, got;

	if (!s || !out)
		return -1;
	memset(out, 0, sizeof(*out));
	if (n >= plen && str_has_prefix_nocase(s, n, SCRAM_PREFIX)) {
		s += plen;
		n -= plen;
	}
	const char *start = s;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == ',') {
			if (nf == 4)
				return -1;
			f[nf] = start;
			fl[nf] = (size_t)(s + i - start);
			nf++;
			start = s + i + 1;
		}
	}
	if (nf != 4)
		return -1;

	unsigned long iter = 0;
	if (fl[0] == 0 || fl[0] > 10 || f[0][0] == '0')
		return -1;
	for (size_t i = 0; i < fl[0]; i++) {
		if (f[0][i] < '0' || f[0][i] > '9')
			return -1;
		iter = iter * 10 + (unsigned long)(f[0][i] - '0');
	}
	if (iter == 0 || iter > INT_MAX)
		return -1;
	out->iterations = (unsigned)iter;

	if (scram_field(f[1], fl[1], out->salt, 1, sizeof(out->salt), &out->salt_len) < 0 ||
	    scram_field(f[2], fl[2], out->stored_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN, &got) < 0 ||
	    scram_field(f[3], fl[3], out->server_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN, &got) < 0) {
		OPENSSL_cleanse(out, sizeof(*out));
		return -1;
	}
	return 0;
}

int scram_keys_format(const struct scram_keys *k, struct buf *out)
{
	if (!k || k->salt_len == 0 || k->salt_len > sizeof(k->salt) || k->iterations == 0)
		return -1;
	buf_reset(out);
	if (buf_printf(out, SCRAM_PREFIX "%u,", k->iterations) < 0 ||
	    b64_encode(k->salt, k->salt_len, out) < 0 || buf_append(out, ",", 1) < 0 ||
	    b64_encode(k->stored_key, SCRAM_KEY_LEN, out) < 0 || buf_append(out, ",", 1) < 0 ||
	    b64_encode(k->server_key, SCRAM_KEY_LEN, out) < 0) {
		buf_reset(out);
		return -1;
	}
	return 0;
}

bool scram_verify(const struct scram_keys *k, const char *auth_message, size_t n,
		  const uint8_t *proof, size_t proof_len, uint8_t server_signature[32])
{
	uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	bool ok = false;

	if (!k || !proof || proof_len != SCRAM_KEY_LEN || !server_signature ||
	    (!auth_message && n))
		return false;
	if (scram_hmac(k->stored_key, SCRAM_KEY_LEN, auth_message, n, client_sig) < 0)
		goto out;
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = proof[i] ^ client_sig[i];
	if (scram_sha256(client_key, SCRAM_KEY_LEN, stored) < 0)
		goto out;
	if (CRYPTO_memcmp(stored, k->stored_key, SCRAM_KEY_LEN) != 0)
		goto out;
	if (scram_hmac(k->server_key, SCRAM_KEY_LEN, auth_message, n, server_signature) < 0)
		goto out;
	ok = true;
out:
	OPENSSL_cleanse(client_sig, sizeof(client_sig));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	OPENSSL_cleanse(stored, sizeof(stored));
	return ok;
}
