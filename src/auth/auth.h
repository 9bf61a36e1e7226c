/*
 * auth — SASL mechanisms (pure state machines), the messages between the
 * workers and the auth process, and the auth process itself with its
 * credential backends (passwd-file, SQLite, Dovecot) and the
 * brute-force penalty table.
 *
 * The auth process is the only process that reads credentials.  A worker
 * runs the SASL exchange with the client and asks the auth process
 * whenever a secret is involved; it never sees a password hash or a SCRAM
 * key.  The process also answers directory questions (is this a local
 * recipient, may this user send as this address), because it holds the
 * user database.
 */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../util/util.h"

struct conf;

/* ---- SASL (RFC 4422, 4954, 4616, 5802, 7677) -------------------------- */

enum sasl_mech {
	SASL_MECH_PLAIN = 1,
	SASL_MECH_LOGIN = 2,
	SASL_MECH_SCRAM_SHA_256 = 4,
};
/* Bit for a mechanism name (case-insensitive), 0 if unknown. */
unsigned sasl_mech_from_name(const char *name, size_t n);
const char *sasl_mech_name(unsigned mech);

enum sasl_status {
	SASL_CHALLENGE,  /* send "334 <challenge>" (already base64), then sasl_step */
	SASL_NEED_AUTHD, /* ask the auth process (sasl_request), then sasl_answer */
	SASL_SUCCESS,    /* authenticated as sasl_user(): 235 2.7.0 */
	SASL_FAILED,     /* bad credentials: 535 5.7.8 */
	SASL_BAD_SYNTAX, /* malformed base64 or message: 501 5.5.2 */
	SASL_CANCELLED,  /* client sent "*": 501 5.0.0 */
	SASL_TEMPFAIL,   /* credential store unreachable: 454 4.7.0 */
	SASL_BLOCKED,    /* client address or user in penalty: 454 4.7.0 (see auth_fail_*) */
};

enum sasl_req_kind { SASL_REQ_PLAIN = 1, SASL_REQ_SCRAM_LOOKUP, SASL_REQ_SCRAM_VERIFY };

/* What the mechanism needs from the auth process.  Views are owned by the
 * sasl object and valid until its next call. */
struct sasl_request {
	enum sasl_req_kind kind;
	const char *authzid;       /* PLAIN: may be "" */
	const char *user;          /* authentication identity (SCRAM: decoded =2C/=3D) */
	const char *password;      /* PLAIN/LOGIN */
	size_t password_len;
	const char *auth_message;  /* SCRAM_VERIFY: client-first-bare,server-first,client-final-without-proof */
	size_t auth_message_len;
	const uint8_t *proof;      /* SCRAM_VERIFY: ClientProof (32 bytes) */
	size_t proof_len;
};

enum auth_result { AUTH_OK = 0, AUTH_FAIL, AUTH_TEMPFAIL, AUTH_BLOCKED };

/* The auth process's answer, handed back to the mechanism. */
struct sasl_answer {
	enum auth_result result;
	const char *user;              /* canonical name when AUTH_OK */
	const uint8_t *salt;           /* SCRAM_LOOKUP */
	size_t salt_len;
	unsigned iterations;           /* SCRAM_LOOKUP */
	const uint8_t *server_signature; /* SCRAM_VERIFY (32 bytes) */
	size_t server_signature_len;
};

struct sasl;

/*
 * A new exchange for one mechanism.  nonce: printable ASCII (no ','),
 * from the caller's randomness (the module has none).  max: the longest
 * client response accepted, decoded (then SASL_BAD_SYNTAX).
 */
struct sasl *sasl_new(unsigned mech, const char *nonce, size_t max);
void sasl_free(struct sasl *a);
/* Starts with the initial response from the AUTH line (base64, or "=" for
 * an empty one), or NULL when there was none. */
enum sasl_status sasl_start(struct sasl *a, const char *initial, size_t n, struct buf *challenge);
/* A client line (base64, or "*" to cancel). */
enum sasl_status sasl_step(struct sasl *a, const char *line, size_t n, struct buf *challenge);
const struct sasl_request *sasl_request(const struct sasl *a);
enum sasl_status sasl_answer(struct sasl *a, const struct sasl_answer *ans, struct buf *challenge);
/* Canonical user after SASL_SUCCESS. */
const char *sasl_user(const struct sasl *a);

/* ---- SCRAM-SHA-256 key material (libcrypto; used by the auth process
 * and by the command that writes users) ------------------------------- */

struct scram_keys {
	uint8_t salt[64];
	size_t salt_len;
	unsigned iterations;
	uint8_t stored_key[32];
	uint8_t server_key[32];
};
/* SASLprep (RFC 4013) of a UTF-8 password, as RFC 5802 2.2 has SCRAM
 * hash Normalize(password): non-ASCII spaces become spaces, soft hyphens
 * and the like vanish, NFKC.  stored: also refuse unassigned code points
 * (a password being set, RFC 4013 2.5 via RFC 3454 7).  -1 when the
 * password holds what SASLprep prohibits (control characters, ...). */
int scram_saslprep(const char *password, size_t n, bool stored, struct buf *out);
/* Derives keys from a password (PBKDF2-HMAC-SHA-256), as given: callers
 * prepare it with scram_saslprep. */
int scram_keys_derive(const char *password, size_t n, const uint8_t *salt, size_t salt_len,
		      unsigned iterations, struct scram_keys *out);
/* Parses/formats Dovecot's "{SCRAM-SHA-256}iter,salt,storedkey,serverkey"
 * (base64 fields; the scheme prefix is optional on input). */
int scram_keys_parse(const char *s, size_t n, struct scram_keys *out);
int scram_keys_format(const struct scram_keys *k, struct buf *out);
/* Verifies a ClientProof against StoredKey for auth_message; on success
 * writes ServerSignature.  Constant-time comparison. */
bool scram_verify(const struct scram_keys *k, const char *auth_message, size_t n,
		  const uint8_t *proof, size_t proof_len, uint8_t server_signature[32]);

/* ---- password hashes (libxcrypt) -------------------------------------- */

/*
 * Checks password against a stored "{SCHEME}hash" (Dovecot style: CRYPT,
 * SHA512-CRYPT, BLF-CRYPT, SHA256-CRYPT, YESCRYPT -> libxcrypt;
 * SCRAM-SHA-256 -> key derivation; PLAIN and anything else is refused).
 * Returns 1 match, 0 mismatch, -1 unusable hash (with e).
 */
int auth_password_check(const char *stored, const char *password, size_t n, struct err *e);
/* Makes "{SCHEME}hash" for a password: scheme is YESCRYPT (default),
 * SHA512-CRYPT, BLF-CRYPT or SCRAM-SHA-256. */
int auth_password_hash(const char *scheme, const char *password, size_t n, struct buf *out,
		       struct err *e);

/* Adds or replaces a user with a stored password ("{SCHEME}hash") in the
 * configured store (passwd-file or sqlite).  Command line only. */
int auth_admin_set_user(const struct conf *c, const char *name, const char *stored,
			struct err *e);

/* ---- messages between workers and the auth process ------------------- */

/*
 * One message per SOCK_SEQPACKET datagram:
 *   u8 type, u32 id (network order), u8 nfields, then per field
 *   u32 length (network order) + bytes.
 * The worker numbers its requests; a reply carries the request's id.
 * A malformed message is a bug in the peer: the receiver logs it and
 * closes the channel (it is never tolerated as input).
 */
#define AUTHD_MAX_FIELDS 8
#define AUTHD_MAX_MSG (64 * 1024)

enum authd_type {
	AUTHD_PLAIN = 1,        /* ip, authzid, user, password -> result, user */
	AUTHD_SCRAM_LOOKUP = 2, /* ip, user -> result, user, salt, iterations */
	AUTHD_SCRAM_VERIFY = 3, /* ip, user, auth_message, proof -> result, user, server_signature */
	AUTHD_RCPT = 4,         /* address -> result ("local", "unknown", "tempfail") */
	AUTHD_SENDER = 5,       /* user, address -> result ("ok", "fail", "tempfail") */
	AUTHD_PENALTY_STATE = 6, /* records (penalty_save) -> no reply: from an auth
				  * process that stops to the one replacing it */
	AUTHD_REPLY = 128,
};

struct authd_field {
	const uint8_t *p;
	size_t n;
};

struct authd_msg {
	uint8_t type;
	uint32_t id;
	size_t n;
	struct authd_field f[AUTHD_MAX_FIELDS];
};

/* Appends one encoded message to out (out is reset first). */
int authd_encode(struct buf *out, uint8_t type, uint32_t id, size_t n,
		 const struct authd_field *f);
/* Parses p[0..n); views point into p.  -1 if malformed. */
int authd_decode(const uint8_t *p, size_t n, struct authd_msg *m);
/* Result words used in replies ("ok", "fail", "tempfail", "blocked"). */
const char *auth_result_name(enum auth_result r);
int auth_result_parse(const uint8_t *p, size_t n, enum auth_result *r);

/* The request for a mechanism's question (f: room for 4 fields); returns
 * the field count and sets *type.  Views borrow from q and ip. */
size_t authd_sasl_fields(const struct sasl_request *q, const char *ip, struct authd_field *f,
			 uint8_t *type);
/* The mechanism's answer in a reply (NULL: no reply, a temporary failure);
 * views point into m, the user name is copied into user. */
void authd_sasl_answer(const struct authd_msg *m, enum sasl_req_kind kind, struct buf *user,
		       struct sasl_answer *out);
/* ok/local -> AUTH_OK, fail/unknown -> AUTH_FAIL, blocked, else TEMPFAIL. */
enum auth_result authd_reply_result(const struct authd_msg *m);

/* ---- brute-force penalty table (times are inputs: testable) ---------- */

struct penalty_conf {
	unsigned delay_after;   /* failures in window before answers are delayed */
	unsigned block_after;   /* failures in window before refusing */
	unsigned window_s;      /* counting window */
	unsigned block_s;       /* how long an address/user stays refused */
	unsigned max_delay_ms;  /* cap of the growing delay */
	size_t max_entries;     /* memory bound: oldest entries evicted */
};

struct penalty;
struct penalty *penalty_new(const struct penalty_conf *c);
void penalty_free(struct penalty *p);
/* Before checking credentials: AUTH_BLOCKED if key (an address or a user
 * name) is refused at now_s, else AUTH_OK with *delay_ms to wait before
 * answering. */
enum auth_result penalty_check(struct penalty *p, const char *key, int64_t now_s,
			       unsigned *delay_ms);
void penalty_fail(struct penalty *p, const char *key, int64_t now_s);
void penalty_success(struct penalty *p, const char *key);
/*
 * The counts that still apply at now_s, as records appended to out (oldest
 * first) while out stays within max bytes.  *pos: NULL to begin; true when
 * more remain (call again with an emptied out), false when all is written.
 * The table must not change between the calls of one walk.
 */
bool penalty_save(const struct penalty *p, int64_t now_s, const void **pos, struct buf *out,
		  size_t max);
/* Adds saved records (whole ones, as penalty_save wrote them) to the
 * table: failures add up, blocks keep the later end (at most block_s from
 * now_s).  -1 if malformed (what came before is kept). */
int penalty_load(struct penalty *p, const uint8_t *data, size_t n, int64_t now_s);

/* ---- the auth process ------------------------------------------------ */

struct conf;
#define AUTHD_FAKE_KEY_LEN 32
/* Entry point of the auth process (forked by the master, already running
 * as the unprivileged user).  Serves the abstract unix socket name given,
 * accepting peers whose uid is peer_uid (or root).  Returns the exit
 * status. */
int authd_main(const struct conf *c, int listen_fd, uid_t peer_uid,
	       const uint8_t fake_key[AUTHD_FAKE_KEY_LEN]);
/* Reads the key of the fake SCRAM salts from the spool (auth-fake.key,
 * mode 0600, made on first use): an unknown user's salt must stay the same
 * across restarts and reloads, as a real user's does, or comparing the
 * salts before and after would tell which users exist. */
int authd_fake_key_load(const char *spool_dir, uint8_t key[AUTHD_FAKE_KEY_LEN], struct err *e);
/* Binds the abstract socket "\0sluice-auth.<tag>" (SOCK_SEQPACKET). */
int authd_listen(const char *tag, struct err *e);
/* Connects a worker to it (non-blocking). */
int authd_connect(const char *tag, struct err *e);

#endif
