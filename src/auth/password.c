/*
 * Password hashes in Dovecot's "{SCHEME}hash" notation, checked with
 * libxcrypt (crypt_r) or, for SCRAM-SHA-256, by deriving the keys again.
 * Plain-text and unsalted schemes are refused on purpose: a store that
 * holds them is a store to fix, not to accept.
 */
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth.h"

enum pw_scheme { PW_CRYPT, PW_SCRAM, PW_REFUSED };

struct pw_scheme_def {
	const char *name;
	enum pw_scheme kind;
	const char *prefix; /* the crypt(3) setting prefix the scheme implies */
};

static const struct pw_scheme_def pw_schemes[] = {
	{ "CRYPT", PW_CRYPT, NULL },
	{ "SHA512-CRYPT", PW_CRYPT, "$6$" },
	{ "SHA256-CRYPT", PW_CRYPT, "$5$" },
	{ "BLF-CRYPT", PW_CRYPT, "$2" },
	{ "YESCRYPT", PW_CRYPT, "$y$" },
	{ "SCRAM-SHA-256", PW_SCRAM, NULL },
};

/* Splits "{SCHEME}rest"; no prefix means CRYPT (Dovecot's default for
 * passwd-files).  *def is NULL for an unknown or refused scheme. */
static int pw_split(const char *stored, const struct pw_scheme_def **def, const char **rest,
		    struct err *e)
{
	*def = &pw_schemes[0];
	*rest = stored;
	if (stored[0] != '{')
		return 0;
	const char *close = strchr(stored, '}');
	if (!close)
		return err_set(e, "password hash: unterminated {SCHEME}");
	size_t n = (size_t)(close - stored - 1);
	*rest = close + 1;
	for (size_t i = 0; i < sizeof(pw_schemes) / sizeof(pw_schemes[0]); i++) {
		if (str_eq_nocase(stored + 1, n, pw_schemes[i].name)) {
			*def = &pw_schemes[i];
			return 0;
		}
	}
	*def = NULL;
	struct buf s;
	buf_init(&s, 128);
	str_escape(&s, stored + 1, n, 32);
	err_set(e, "password scheme not accepted: %s", buf_cstr(&s));
	buf_free(&s);
	return -1;
}

static int pw_check_crypt(const struct pw_scheme_def *def, const char *hash, const char *password,
			  size_t n, struct err *e)
{
	if (def->prefix && strncmp(hash, def->prefix, strlen(def->prefix)) != 0)
		return err_set(e, "password hash does not match its scheme %s", def->name);
	if (hash[0] == '\0' || hash[0] == '*' || hash[0] == '!')
		return err_set(e, "password hash is empty or locked");
	/* crypt(3) takes a C string: a password with a NUL cannot be the one
	 * that was hashed (SASL PLAIN cannot carry one either). */
	if (memchr(password, '\0', n))
		return 0;
	char *pw = str_ndup(password, n);
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *out = crypt_r(pw, hash, cd);
	int r;
	if (!out || out[0] == '*') {
		r = err_set(e, "password hash not understood by crypt(3)");
	} else if (strlen(out) != strlen(hash)) {
		/* crypt keeps the setting and the hash length: a different
		 * length means a truncated or malformed stored hash. */
		r = err_set(e, "malformed password hash");
	} else {
		r = CRYPTO_memcmp(out, hash, strlen(hash)) == 0;
	}
	explicit_bzero(pw, n);
	explicit_bzero(cd, sizeof(*cd));
	free(pw);
	free(cd);
	return r;
}

/* Bounds a password's SASLprep form (NFKC may expand a character many
 * times); passwords arrive in auth messages of at most AUTHD_MAX_MSG. */
#define PW_PREP_MAX (8 * AUTHD_MAX_MSG)

/* A password buffer is cleared before it is given back. */
static void pw_buf_free(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

/* Do the keys that password derives (as given) match k?  1, 0, -1. */
static int pw_scram_match(const struct scram_keys *k, const char *password, size_t n,
			  struct err *e)
{
	struct scram_keys d;
	if (scram_keys_derive(password, n, k->salt, k->salt_len, k->iterations, &d) < 0)
		return err_set(e, "SCRAM-SHA-256 key derivation failed");
	int r = CRYPTO_memcmp(k->stored_key, d.stored_key, sizeof(k->stored_key)) == 0;
	OPENSSL_cleanse(&d, sizeof(d));
	return r;
}

/* The keys are made from the SASLprep form of the password (RFC 5802
 * 2.2), which is what SCRAM clients hash; keys written from the raw bytes
 * (by other tools) are still recognised. */
static int pw_check_scram(const char *rest, const char *password, size_t n, struct err *e)
{
	struct scram_keys k;
	if (scram_keys_parse(rest, strlen(rest), &k) < 0)
		return err_set(e, "malformed SCRAM-SHA-256 password entry");
	struct buf prep;
	buf_init(&prep, PW_PREP_MAX);
	int r = 0;
	bool prepped = scram_saslprep(password, n, false, &prep) == 0;
	if (prepped)
		r = pw_scram_match(&k, (const char *)buf_ptr(&prep), buf_len(&prep), e);
	if (r == 0 && (!prepped || buf_len(&prep) != n || memcmp(buf_ptr(&prep), password, n) != 0))
		r = pw_scram_match(&k, password, n, e);
	pw_buf_free(&prep);
	return r;
}

int auth_password_check(const char *stored, const char *password, size_t n, struct err *e)
{
	const struct pw_scheme_def *def;
	const char *rest;
	if (!stored)
		return err_set(e, "no password hash");
	if (pw_split(stored, &def, &rest, e) < 0)
		return -1;
	switch (def->kind) {
	case PW_CRYPT:
		return pw_check_crypt(def, rest, password, n, e);
	case PW_SCRAM:
		return pw_check_scram(rest, password, n, e);
	default:
		return err_set(e, "password scheme not accepted");
	}
}

int auth_password_hash(const char *scheme, const char *password, size_t n, struct buf *out,
		       struct err *e)
{
	if (!scheme || !*scheme)
		scheme = "YESCRYPT";
	if (str_eq_nocase(scheme, strlen(scheme), "SCRAM-SHA-256")) {
		uint8_t salt[16];
		struct scram_keys k;
		if (rand_bytes(salt, sizeof(salt)) < 0)
			return err_set(e, "no randomness for the salt");
		struct buf prep;
		buf_init(&prep, PW_PREP_MAX);
		if (scram_saslprep(password, n, true, &prep) < 0) {
			pw_buf_free(&prep);
			return err_set(e, "the password holds characters that SASLprep (RFC 4013) "
				       "does not allow in SCRAM: control characters, unassigned "
				       "or prohibited code points, or invalid UTF-8");
		}
		int dr = scram_keys_derive((const char *)buf_ptr(&prep), buf_len(&prep), salt,
					   sizeof(salt), 4096, &k);
		pw_buf_free(&prep);
		if (dr < 0)
			return err_set(e, "SCRAM-SHA-256 key derivation failed");
		struct buf tmp;
		buf_init(&tmp, 1024);
		int r = scram_keys_format(&k, &tmp);
		OPENSSL_cleanse(&k, sizeof(k));
		if (r == 0) {
			/* The formatter may or may not write the prefix. */
			const char *t = buf_cstr(&tmp);
			if (!t || (t[0] != '{' && buf_puts(out, "{SCRAM-SHA-256}") < 0) ||
			    buf_puts(out, t) < 0)
				r = -1;
		}
		buf_free(&tmp);
		return r < 0 ? err_set(e, "cannot format SCRAM-SHA-256 keys") : 0;
	}
	const char *prefix, *name;
	if (str_eq_nocase(scheme, strlen(scheme), "YESCRYPT")) {
		prefix = "$y$";
		name = "YESCRYPT";
	} else if (str_eq_nocase(scheme, strlen(scheme), "SHA512-CRYPT")) {
		prefix = "$6$";
		name = "SHA512-CRYPT";
	} else if (str_eq_nocase(scheme, strlen(scheme), "BLF-CRYPT")) {
		prefix = "$2y$";
		name = "BLF-CRYPT";
	} else {
		return err_set(e, "password scheme not offered for new hashes");
	}
	if (memchr(password, '\0', n))
		return err_set(e, "password contains a NUL byte");
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	/* NULL random bytes: libxcrypt takes them from the kernel itself. */
	if (!crypt_gensalt_rn(prefix, 0, NULL, 0, setting, sizeof(setting)))
		return err_set(e, "crypt_gensalt failed for %s", name);
	char *pw = str_ndup(password, n);
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *h = crypt_r(pw, setting, cd);
	int r = 0;
	if (!h || h[0] == '*')
		r = err_set(e, "crypt failed for %s", name);
	else if (buf_printf(out, "{%s}%s", name, h) < 0)
		r = err_set(e, "password hash too long");
	explicit_bzero(pw, n);
	explicit_bzero(cd, sizeof(*cd));
	free(pw);
	free(cd);
	return r;
}
