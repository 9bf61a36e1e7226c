/*
 * smtp — the protocol core: command and address parsers and the session
 * state machine.  Pure: bytes in, replies and actions out.  No sockets, no
 * libevent, no OpenSSL, no clock, no globals.  net/ executes the actions.
 *
 * A session is fed client bytes with smtp_session_feed() and asynchronous
 * results with the other smtp_session_*() event calls.  After each call the
 * caller
 *   1. writes out everything smtp_session_output() holds (replies,
 *      possibly many when the client pipelines) and marks it consumed, and
 *   2. executes every action from smtp_session_next_action() in order.
 * Views handed out (output, body data, command text) stay valid until the
 * next event call on the session.
 */
#ifndef SLUICE_SMTP_H
#define SLUICE_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../auth/auth.h"
#include "../policy/policy.h"
#include "../util/util.h"

/* ---- addresses (RFC 5321 §4.1.2, RFC 6531) --------------------------- */

enum smtp_path_flags {
	SMTP_PATH_ALLOW_NULL = 1 << 0,  /* "<>" is valid (MAIL FROM) */
	SMTP_PATH_UTF8 = 1 << 1,        /* SMTPUTF8 in effect: UTF-8 allowed */
	SMTP_PATH_ALLOW_BARE = 1 << 2,  /* "<postmaster>" without domain (RCPT) */
};

/* A parsed path.  All pointers are views into the parsed text. */
struct smtp_path {
	bool is_null;             /* "<>" */
	bool has_route;           /* "@a,@b:" source route was present (ignored) */
	bool quoted;              /* local part is a Quoted-string */
	bool domain_literal;      /* domain is "[...]" (IPv4, IPv6: or general) */
	bool utf8;                /* non-ASCII bytes present (valid UTF-8) */
	const char *local;        /* local part as written (quotes included) */
	size_t local_len;
	const char *domain;       /* domain or literal as written; NULL if bare */
	size_t domain_len;
	const char *mailbox;      /* "local@domain" as written, without <> */
	size_t mailbox_len;
};

/* Error reasons of smtp_parse_path, also used to choose the reply. */
enum smtp_path_error {
	SMTP_PATH_OK = 0,
	SMTP_PATH_SYNTAX,      /* 501 5.1.3 / 553 5.1.3 */
	SMTP_PATH_TOO_LONG,    /* 501 5.1.3: §4.5.3.1 (local 64, domain 255, path 256) */
	SMTP_PATH_NON_ASCII,   /* 553 5.6.7: UTF-8 without SMTPUTF8 */
	SMTP_PATH_BAD_UTF8,    /* 501 5.6.7 */
};

/*
 * Parses "<path>" at p[0..n).  *used receives the bytes consumed (the path
 * including the angle brackets), so that ESMTP parameters can follow.
 */
enum smtp_path_error smtp_parse_path(const char *p, size_t n, unsigned flags,
				     struct smtp_path *out, size_t *used);

/*
 * Appends the canonical form of an accepted path to out: the domain
 * without a trailing dot; a quoted local part unquoted (quoted-pairs
 * resolved) when that is a Dot-string, else quoted with only '"' and
 * backslash escaped (RFC 5321 §4.1.2: such forms name the same mailbox).
 * Letter case is kept.  The null path appends nothing; a bare "<postmaster>" appends
 * its local part.  The result is never longer than the text parsed.
 * Returns 0, or -1 if out's limit was reached (out then holds a prefix).
 */
int smtp_path_canonical(const struct smtp_path *p, struct buf *out);

/*
 * True if p[0..n) is acceptable as the HELO/EHLO argument: an address
 * literal as in a path (RFC 5321 §4.1.3, the address checked), or a
 * domain of LDH labels of 1 to 63 octets, no label starting or ending with
 * '-'.  Lenient where real clients differ from the grammar: '_' in labels,
 * one trailing dot, and a bare name without dots are accepted.
 */
bool smtp_helo_arg_ok(const char *p, size_t n);

/* True if domain[0..n) (one trailing dot ignored, ASCII case-insensitive)
 * is one of domains (lowercase, no trailing dot). */
bool smtp_domain_in_list(const char *domain, size_t n, const char *const *domains,
			 size_t n_domains);

/* ---- commands -------------------------------------------------------- */

enum smtp_verb {
	SMTP_CMD_UNKNOWN = 0,
	SMTP_CMD_HELO, SMTP_CMD_EHLO, SMTP_CMD_MAIL, SMTP_CMD_RCPT, SMTP_CMD_DATA,
	SMTP_CMD_BDAT, SMTP_CMD_RSET, SMTP_CMD_NOOP, SMTP_CMD_QUIT, SMTP_CMD_VRFY,
	SMTP_CMD_EXPN, SMTP_CMD_HELP, SMTP_CMD_STARTTLS, SMTP_CMD_AUTH,
};

/* One ESMTP parameter "KEYWORD[=value]", views into the line. */
struct smtp_param {
	const char *key;
	size_t key_len;
	const char *value; /* NULL when there is no '=' */
	size_t value_len;
};

#define SMTP_MAX_PARAMS 16

/*
 * A parsed command line (without CRLF).  verb is matched case-insensitively;
 * arg is everything after the verb and one space (may be empty).
 */
struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;
	size_t arg_len;
};

/* Splits a command line into verb and argument.  Never fails: an unknown
 * verb yields SMTP_CMD_UNKNOWN. */
void smtp_parse_cmd(const char *line, size_t n, struct smtp_cmd *out);
/* An HTTP request line ("GET / HTTP/1.1", "POST ...", "CONNECT ..."): a
 * browser or proxy sent here by a cross-protocol attack, whose following
 * lines may carry SMTP commands in a request body. */
bool smtp_is_http_request(const char *line, size_t n);

/*
 * Parses the ESMTP parameters of MAIL/RCPT: p[0..n) is the text after the
 * path.  Keywords are esmtp-keyword (ALPHA/DIGIT then ALPHA/DIGIT/"-"),
 * values esmtp-value (printable ASCII except '=' and SP; UTF-8 allowed when
 * utf8).  Returns 0, or -1 on syntax error or more than SMTP_MAX_PARAMS.
 */
int smtp_parse_params(const char *p, size_t n, bool utf8, struct smtp_param *out,
		      size_t *count);

/* Decodes RFC 3461 xtext into out (bounded by out's max); -1 if malformed. */
int smtp_xtext_decode(const char *p, size_t n, struct buf *out);
/* Encodes bytes as xtext (used for the spool and ORCPT). */
int smtp_xtext_encode(const void *p, size_t n, struct buf *out);

/* ---- session --------------------------------------------------------- */

enum smtp_role { SMTP_ROLE_MX = 0, SMTP_ROLE_SUBMISSION = 1, SMTP_ROLE_LOCAL = 2 };
const char *smtp_role_name(enum smtp_role r);

/*
 * Listener policy: a const struct built by the worker from the
 * configuration for each listening port, shared by its sessions.
 */
struct smtp_policy {
	enum smtp_role role;
	const char *hostname;           /* primary_hostname: greeting, EHLO */
	bool tls_available;             /* a certificate is loaded: STARTTLS possible */
	bool tls_on_connect;            /* session begins inside TLS (port 465) */
	bool tls_required;              /* only EHLO/HELO/NOOP/RSET/QUIT/STARTTLS before TLS */
	bool auth_required;             /* MAIL refused (530 5.7.0) until authenticated */
	const char *const *local_domains; /* lowercase, no trailing dot */
	size_t n_local_domains;
	size_t line_max;                /* command line incl. CRLF (>= 512) */
	uint64_t message_max;           /* message_size_limit, bytes */
	size_t rcpt_max;                /* recipients per message */
	size_t errors_max;              /* then 421 and close */
	size_t nonmail_max;             /* commands sending no mail between messages; 0 = any */
	size_t envelope_max;            /* bytes the spool's envelope may take; 0 = no bound */
	size_t data_line_max;           /* message line, excluding CRLF */
	size_t header_max;              /* whole header block, bytes */
	/* Authentication and submission policy. */
	unsigned auth_mechs;            /* SASL_MECH_* offered, only inside TLS; 0 = no AUTH */
	bool check_rcpt_local;          /* local-domain RCPT asks SMTP_ACT_LOOKUP (550 5.1.1) */
	bool check_sender;              /* authenticated MAIL asks SMTP_ACT_LOOKUP (553 5.7.1) */
	bool check_from;                /* ... and so does each From: header address (550 5.7.1) */
	bool add_missing_headers;       /* Message-ID and Date when missing (RFC 6409 §8) */
	bool hide_client_ip;            /* Received: without the client's address */
	/* Declarative ACLs (policy.h), one per stage; NULL = none.  They run
	 * after the built-in checks and can only refuse more. */
	const struct acl *acl[ACL_NSTAGES];
	struct rate_table *rates;       /* the worker's table for rate conditions */
	int64_t (*clock_s)(void);       /* seconds, for rate conditions (injected) */
	bool trace_acl;                 /* -bh: every ACL verdict as SMTP_ACT_LOG_ACL */
};

/* Who is on the other end; strings are borrowed for the session's life. */
struct smtp_client {
	const char *session_id;
	const char *ip;          /* textual client address */
	const char *rdns;        /* may be NULL */
	uint16_t local_port;
	/* Fills out with a fresh SCRAM server nonce (printable, no ','):
	 * randomness comes from the caller, never from this module. */
	void (*make_nonce)(void *ctx, struct buf *out);
	void *nonce_ctx;
	/* Set on the local injection socket: the session starts authenticated
	 * as this identity, which the kernel vouched for (SO_PEERCRED). */
	const char *local_user;
};

struct smtp_rcpt {
	char *addr;          /* mailbox as given, without <> (owned) */
	char *orcpt;         /* DSN ORCPT value, raw xtext form, or NULL */
	unsigned notify;     /* SMTP_NOTIFY_* bits; 0 = not given */
};

enum { SMTP_NOTIFY_NEVER = 1, SMTP_NOTIFY_SUCCESS = 2, SMTP_NOTIFY_FAILURE = 4,
       SMTP_NOTIFY_DELAY = 8 };
enum smtp_body { SMTP_BODY_UNSPEC = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_ret { SMTP_RET_UNSPEC = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

/* The envelope of the transaction in progress; owned by the session. */
struct smtp_envelope {
	char *helo;          /* HELO/EHLO argument (owned) */
	bool esmtp;          /* EHLO rather than HELO */
	char *sender;        /* reverse-path mailbox, "" for <> (owned) */
	uint64_t size_declared;
	enum smtp_body body;
	bool smtputf8;
	enum smtp_ret ret;
	char *envid;         /* DSN ENVID, raw xtext form, or NULL */
	struct smtp_rcpt *rcpts;
	size_t n_rcpts;
	uint64_t size;       /* bytes of message data received (after unstuffing) */
	const char *tls_version; /* borrowed from smtp_session_tls_started, or NULL */
	const char *tls_cipher;
	const char *auth_user;   /* authenticated identity, or NULL */
};

enum smtp_action_type {
	SMTP_ACT_STARTTLS,    /* flush output, then start the TLS handshake */
	SMTP_ACT_BODY_BEGIN,  /* open a spool file for envelope (DATA/first BDAT) */
	SMTP_ACT_BODY_DATA,   /* append data[0..len) (unstuffed message bytes) */
	SMTP_ACT_BODY_ABORT,  /* discard the spool file being written */
	SMTP_ACT_COMMIT,      /* make it durable, then call smtp_session_commit_result */
	SMTP_ACT_LOG_REFUSED, /* a command was refused: log cmd and reply */
	SMTP_ACT_CLOSE,       /* flush output, then close the connection */
	SMTP_ACT_AUTH_REQUEST,/* ask the auth process *sasl_req; answer with smtp_session_auth_answer */
	SMTP_ACT_LOOKUP,      /* directory question (lookup, data = address, user); answer
			       * with smtp_session_lookup_answer */
	SMTP_ACT_LOG_AUTH,    /* AUTH outcome: reply = "ok"/"failed"/..., data = user, len */
	SMTP_ACT_LOG_ACL,     /* an ACL warn rule held: data = message, reply = where */
	SMTP_ACT_ADD_HEADERS, /* write the missing headers named by add_headers (Date,
			       * Message-ID) into the body now (end of the header block) */
};

enum smtp_lookup_kind { SMTP_LOOKUP_RCPT = 1, SMTP_LOOKUP_SENDER = 2 };
enum { SMTP_ADD_DATE = 1, SMTP_ADD_MESSAGE_ID = 2 };

struct smtp_action {
	enum smtp_action_type type;
	const uint8_t *data;   /* BODY_DATA: bytes; LOG_REFUSED: the command line */
	size_t len;
	const char *reply;     /* LOG_REFUSED: the reply line (no CRLF) */
	size_t reply_len;
	const struct smtp_envelope *env; /* BODY_BEGIN, COMMIT */
	const struct sasl_request *sasl_req; /* AUTH_REQUEST */
	enum smtp_lookup_kind lookup;    /* LOOKUP */
	const char *user;                /* LOOKUP (SENDER): authenticated user */
	unsigned add_headers;            /* ADD_HEADERS: SMTP_ADD_* bits */
};

struct smtp_session;

struct smtp_session *smtp_session_new(const struct smtp_policy *policy,
				      const struct smtp_client *client);
void smtp_session_free(struct smtp_session *s);

/* Sends the greeting.  For TLS on connect, call smtp_session_tls_started
 * first (after the handshake), then this. */
void smtp_session_start(struct smtp_session *s);

/* Client bytes.  len may be 0 to resume processing buffered input after
 * the output was drained.  Input is consumed only while the session wants
 * it; the rest stays buffered (bounded by the line limit). */
void smtp_session_feed(struct smtp_session *s, const uint8_t *data, size_t len);

/* False while waiting for a commit or TLS, while output is backed up, or
 * once closing: the caller then stops reading from the socket. */
bool smtp_session_wants_input(const struct smtp_session *s);

/* The TLS handshake finished (after SMTP_ACT_STARTTLS, or on connect).
 * Strings are borrowed for the session's life.  Everything learned before
 * TLS is forgotten (RFC 3207 §4.2). */
void smtp_session_tls_started(struct smtp_session *s, const char *version, const char *cipher);

/* How a commit ended, for the reply. */
enum smtp_commit_result {
	SMTP_COMMIT_OK = 0,
	SMTP_COMMIT_TEMPFAIL,   /* 451 4.3.0 */
	SMTP_COMMIT_NOSPACE,    /* the spool's file system is full: 452 4.3.1 (RFC 3463) */
};
/* Result of SMTP_ACT_COMMIT: OK with the queue id, or why it failed. */
void smtp_session_commit_result(struct smtp_session *s, enum smtp_commit_result r,
				const char *queue_id);

/* RFC 1870 §6: fn (called during a MAIL with a SIZE= parameter) tells
 * whether size bytes fit in the spool now; a MAIL whose SIZE does not is
 * answered 452 4.3.1.  Without it (the default) SIZE is checked only
 * against message_max. */
void smtp_session_set_space_check(struct smtp_session *s, bool (*fn)(void *ctx, uint64_t size),
				  void *ctx);

/* The auth process's answer to SMTP_ACT_AUTH_REQUEST (views borrowed for
 * the call). */
void smtp_session_auth_answer(struct smtp_session *s, const struct sasl_answer *a);
/* The answer to SMTP_ACT_LOOKUP: AUTH_OK (local recipient / sender owned),
 * AUTH_FAIL (unknown / not owned), AUTH_TEMPFAIL (451 4.3.0 / 451 4.3.0). */
void smtp_session_lookup_answer(struct smtp_session *s, enum auth_result r);

/* Events that end the session. */
void smtp_session_timeout(struct smtp_session *s);   /* idle too long: 421 4.4.2 */
void smtp_session_shutdown(struct smtp_session *s);  /* daemon stopping: 421 4.3.2 */
/* The stop's time is up: 421 4.3.2 now in any state, a message still being
 * received given up (RFC 5321 3.8); not while its commit runs. */
void smtp_session_shutdown_final(struct smtp_session *s);
void smtp_session_eof(struct smtp_session *s);       /* client closed: abort body */

/* Pending replies.  Mark what was written with smtp_session_output_done. */
void smtp_session_output(const struct smtp_session *s, const uint8_t **data, size_t *len);
void smtp_session_output_done(struct smtp_session *s, size_t n);

/* Next action, or NULL when there are none. */
const struct smtp_action *smtp_session_next_action(struct smtp_session *s);

/* The current transaction's envelope (valid until the next event call;
 * after SMTP_ACT_COMMIT it stays intact until smtp_session_commit_result). */
const struct smtp_envelope *smtp_session_envelope(const struct smtp_session *s);

bool smtp_session_in_tls(const struct smtp_session *s);
bool smtp_session_in_transaction(const struct smtp_session *s); /* MAIL..end */
/* Reading message text: DATA up to its end, or the bytes of a BDAT chunk. */
bool smtp_session_in_body(const struct smtp_session *s);
bool smtp_session_closing(const struct smtp_session *s);

/*
 * Calls fn with each address (addr-spec) of a From:-style header field
 * value (RFC 5322 §3.4 mailbox-list / address-list: display names,
 * comments, quoted strings, groups, obsolete routes), at most max
 * addresses.  Returns the count, or -1 if the value cannot be parsed or
 * holds more than max.
 */
int smtp_header_addresses(const char *v, size_t n, size_t max,
			  void (*fn)(const char *addr, size_t len, void *arg), void *arg);

/* ---- Received header ------------------------------------------------- */

/*
 * Appends a RFC 5321 §4.4 trace header for the message to out:
 *   Received: from <helo> (<rdns> [<ip>])
 *           by <hostname> (sluice) with <ESMTP|ESMTPS|ESMTPSA|...>
 *           (role=<role> tls=<version> cipher=<cipher>)
 *           id <queue_id> for <rcpt>; <date>
 * The date string comes from the caller (no clock in this module).
 */
void smtp_received_header(struct buf *out, const struct smtp_policy *p,
			  const struct smtp_client *c, const struct smtp_envelope *env,
			  const char *queue_id, const char *date);

#endif
