/*
 * deliver — getting queued mail out: the retry schedule, RFC 3464
 * reports (bounces, delay warnings), Maildir, DNS routing with libunbound
 * and the SMTP/LMTP client protocol machine.
 *
 * The retry schedule, the report composer and the client machine are
 * pure (no sockets, no clock, no globals): the runner in daemon/ owns the
 * event loop and feeds them.  maildir.c touches only the file system it
 * is given; dns.c owns a libunbound context whose descriptor the runner
 * watches.
 */
#ifndef SLUICE_DELIVER_H
#define SLUICE_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "../util/util.h"

/* ---- retry schedule (retry.c, pure) ---------------------------------- */

struct dlv_retry_conf {
	unsigned min_s;      /* first interval (queue_retry_min) */
	unsigned max_s;      /* intervals grow up to this (queue_retry_max) */
	unsigned lifetime_s; /* give up this long after arrival (queue_lifetime) */
};

/*
 * When to try again after the attempts-th failed attempt (attempts >= 1)
 * of a message that arrived at `received`: min_s doubling per attempt up
 * to max_s, never later than the end of its lifetime.  Returns -1 when
 * now is already past received + lifetime_s (give up and bounce).
 */
int64_t dlv_retry_next(const struct dlv_retry_conf *rc, unsigned attempts, int64_t received,
		       int64_t now);

/* ---- delivery status reports (bounce.c, pure) ------------------------ */

enum dlv_action { DLV_FAILED = 0, DLV_DELAYED, DLV_DELIVERED, DLV_RELAYED, DLV_EXPANDED };

/* The Diagnostic-Code type of a recipient's diagnostic text. */
enum dlv_diag {
	DLV_DIAG_GUESS = 0, /* not known: "smtp" if the text starts with a 3-digit
			       reply code, else "X-Sluice" (texts read back from
			       the queue state, which does not record the origin) */
	DLV_DIAG_SMTP,      /* a reply received from an SMTP or LMTP server: "smtp" */
	DLV_DIAG_LOCAL,     /* our own text (Maildir delivery, a loop, a limit,
			       a lost connection): "X-Sluice" */
};

struct dlv_report_rcpt {
	const char *addr;        /* the envelope recipient */
	const char *orcpt;       /* ORCPT as the client gave it, xtext decoded
				    ("rfc822;a@b"), or NULL */
	enum dlv_action action;
	const char *status;      /* enhanced status code, e.g. "5.1.1" */
	const char *remote_mta;  /* host name of the server that answered, or NULL */
	const char *diagnostic;  /* that server's reply text ("550 5.1.1 ..."), or our
				    own reason (a local delivery, a loop), or NULL */
	enum dlv_diag diag_type; /* what diagnostic is (RFC 3464 2.3.6 diagnostic-type) */
};

struct dlv_report {
	const char *reporting_mta; /* our primary_hostname */
	const char *queue_id;
	const char *envid;         /* ENVID as given (decoded), or NULL */
	int64_t arrival;           /* unix seconds */
	int64_t now;               /* unix seconds, for Date: */
	const char *to;            /* the original envelope sender: the report's recipient */
	const char *message_id;    /* Message-ID for the report, without <> */
	const struct dlv_report_rcpt *rcpts;
	size_t n_rcpts;
	bool headers_only;         /* RET=HDRS, or the original is larger than return_max */
	uint64_t return_max;       /* most bytes of the original to return */
};

/*
 * Which recipients deserve a report of this action, from their NOTIFY
 * (SMTP_NOTIFY_* bits, 0 = not given): failures unless NOTIFY says
 * otherwise, delays only when asked or NOTIFY was not given, successes
 * only when asked.  A null sender never gets any (no bounce for a bounce).
 */
bool dlv_report_wanted(const char *sender, unsigned notify, enum dlv_action action);

/*
 * Composes the whole report message (header and multipart/report body,
 * RFC 3464 and RFC 6522, CRLF line ends) into out.  orig is the original
 * message as spooled (header and body, CRLF), orig_len its length: the
 * third part is its header only (text/rfc822-headers) when headers_only,
 * else the message (message/rfc822) cut to return_max bytes at a line end.
 */
int dlv_report_compose(const struct dlv_report *r, const char *orig, size_t orig_len,
		       struct buf *out, struct err *e);

/* ---- Maildir (maildir.c) --------------------------------------------- */

/*
 * Expands a maildir_path template for address local@domain: %u the
 * address, %n the local part, %d the domain, %% a percent sign; both parts
 * lowercased.  Refuses parts that are empty, start with '.', or contain
 * '/' or control bytes (they become path components).
 */
int maildir_path_expand(const char *tmpl, const char *address, struct buf *out, struct err *e);

/*
 * A unique Maildir file name: "<sec>.M<usec>P<pid>Q<seq>.<host>,S=<size>"
 * with '/' and ':' in host written as \057 and \072.
 */
int maildir_name(int64_t now_us, long pid, unsigned seq, const char *host, uint64_t size,
		 struct buf *out);

/*
 * Delivers one message into the Maildir at path (creating path, tmp/,
 * new/ and cur/ with mode 0700 when missing): prefix (header fields such
 * as Return-Path and Delivered-To, CRLF) then len bytes of fd from off,
 * with CRLF line ends written as LF; fsync; link into new/; fsync new/.
 * On failure nothing is left in new/; *temporary tells whether to retry
 * (disk full, quota, permissions, I/O) or not (path is not a directory
 * that can ever work).  name_out (optional) receives the new/ file name.
 */
int maildir_deliver(const char *path, const char *prefix, size_t prefix_len, int fd, off_t off,
		    off_t len, const char *host, struct buf *name_out, bool *temporary,
		    struct err *e);

/* ---- DNS routing (dns.c, libunbound) --------------------------------- */

struct dns_conf {
	const char *resolv_conf;   /* forwarders from this file; NULL/"" = none (full recursion) */
	const char *unbound_conf;  /* libunbound configuration file (local-zone, local-data,
				      trust anchors...); NULL/"" = none */
};

enum dns_status { DNS_OK = 0, DNS_NOTFOUND, DNS_NULLMX, DNS_TEMPFAIL };

struct dns_host {
	char *name;                 /* MX target (or the domain for an implicit MX) */
	unsigned pref;
	struct sockaddr_storage *addrs; /* AAAA then A answers, port 0 */
	size_t n_addrs;
};

struct dns_route {
	enum dns_status status;
	char *why;                  /* for logs and reports when not DNS_OK */
	struct dns_host *hosts;     /* by preference, random order among equals;
				       hosts without addresses are left out */
	size_t n_hosts;
};

struct dns;
/* The context is ready to use once this returns (files read now). */
int dns_new(const struct dns_conf *c, struct dns **out, struct err *e);
/* Cancels pending lookups without calling their callbacks. */
void dns_free(struct dns *d);
/* Descriptor to watch for reading; call dns_process when it is readable. */
int dns_fd(struct dns *d);
void dns_process(struct dns *d);

/* r and everything in it are valid only during the call. */
typedef void (*dns_route_cb)(void *arg, const struct dns_route *r);
/*
 * Where to send mail for domain: MX records (RFC 5321 5.1), their A and
 * AAAA, or the domain's own A/AAAA when it has no MX (implicit MX); a
 * single MX "." is a Null MX (RFC 7505) -> DNS_NULLMX; no such domain or
 * no address at all -> DNS_NOTFOUND; SERVFAIL or timeout -> DNS_TEMPFAIL.
 * cb runs later, from dns_process, exactly once unless dns_free is called.
 */
int dns_route_lookup(struct dns *d, const char *domain, dns_route_cb cb, void *arg,
		     struct err *e);
/*
 * Optional: starts libunbound's background process now rather than at
 * the first lookup.  It is a fork of the caller and keeps copies of the
 * descriptors open at that moment: call this after dropping privileges
 * and before opening connections or files.
 */
int dns_start(struct dns *d, struct err *e);
/* True once the background process is gone (dns_process then failed
 * every pending lookup with DNS_TEMPFAIL and new lookups are refused):
 * stop watching dns_fd and make a new context. */
bool dns_failed(const struct dns *d);
/* Callbacks must not call dns_free: the context is in use around them. */

/* ---- SMTP and LMTP client machine (smtpc.c, pure) -------------------- */

enum smtpc_tls { SMTPC_TLS_NO = 0, SMTPC_TLS_MAY, SMTPC_TLS_MUST };

struct smtpc_opts {
	bool lmtp;                  /* LHLO, and one reply per recipient after DATA */
	const char *helo;           /* our name */
	enum smtpc_tls tls;         /* STARTTLS when offered (MAY), or required (MUST) */
	bool tls_active;            /* TLS already on (TLS on connect) */
	const char *auth_user;      /* AUTH PLAIN or LOGIN when set and offered (inside TLS) */
	const char *auth_pass;
	size_t reply_line_max;      /* longest reply line accepted */
	size_t reply_lines_max;     /* most lines of one multiline reply */
};

struct smtpc_rcpt {
	const char *addr;
	unsigned notify;            /* SMTP_NOTIFY_* bits, sent when the server offers DSN */
	const char *orcpt;          /* xtext ORCPT as stored, or NULL */
};

struct smtpc_msg {
	const char *sender;         /* "" for <> */
	const struct smtpc_rcpt *rcpts;
	size_t n_rcpts;
	uint64_t size;              /* for SIZE= */
	bool eightbit;              /* 8-bit content declared BODY=8BITMIME: sent
				       with BODY=8BITMIME, fails (5.6.3) if the
				       server does not offer it (RFC 6152 3) */
	bool smtputf8;              /* needs SMTPUTF8: fails (5.6.7) if not offered */
	int ret;                    /* SMTP_RET_*, sent with DSN */
	const char *envid;          /* xtext, sent with DSN */
};

/* Which command of the transaction a recipient's reply answered. */
enum smtpc_stage {
	SMTPC_STAGE_NONE = 0,       /* not a reply to the transaction (ours, a session end) */
	SMTPC_STAGE_MAIL,           /* MAIL FROM refused: no recipient was tried */
	SMTPC_STAGE_RCPT,           /* the recipient's own RCPT TO reply (a refusal) */
	SMTPC_STAGE_DATA,           /* DATA or the end of data (accepted at RCPT) */
};

/* The outcome for one recipient: code 2xx delivered, 4xx retry, 5xx failed. */
struct smtpc_reply {
	int code;
	char status[16];            /* enhanced status, "" if the server gave none */
	char *text;                 /* the whole reply, lines joined by " / " (bounded) */
	bool local;                 /* text is ours (a limit, a missing extension, a
				       lost connection), not a reply the server sent */
	bool dsn;                   /* RESULT: the server offered DSN, so the
				       recipient's NOTIFY went with it and the server
				       reports from there (RFC 3461 4.1) */
	enum smtpc_stage stage;     /* RESULT: the command answered.  A 552 to RCPT
				       arrives as 452 (RFC 5321 4.5.3.1.10) */
};

enum smtpc_action_type {
	SMTPC_NONE = 0,
	SMTPC_SEND,                 /* write data/len to the server */
	SMTPC_STARTTLS,             /* handshake now, then smtpc_tls_done */
	SMTPC_BODY,                 /* send the message (smtpc_dot_*), then smtpc_body_done */
	SMTPC_RESULT,               /* per-recipient replies for the message: replies[n] */
	SMTPC_READY,                /* idle: smtpc_send_msg or smtpc_quit */
	SMTPC_CLOSE,                /* close the connection; reply says why */
};

struct smtpc_action {
	enum smtpc_action_type type;
	const char *data;           /* SEND: borrowed until the next smtpc call */
	size_t len;
	const struct smtpc_reply *replies; /* RESULT: one per recipient of the message */
	size_t n;
	/* CLOSE: the reason as a reply (4xx unless the server's own 5xx
	   ends the session), applying to a message in progress. */
	const struct smtpc_reply *reply;
};

struct smtpc;
struct smtpc *smtpc_new(const struct smtpc_opts *o);
void smtpc_free(struct smtpc *c);
/* Events: bytes from the server; handshake result; body fully written;
 * a message to send (only after READY); end the session; the server
 * closed; no answer in time. */
void smtpc_feed(struct smtpc *c, const char *p, size_t n);
void smtpc_tls_done(struct smtpc *c, bool ok);
void smtpc_body_done(struct smtpc *c);
int smtpc_send_msg(struct smtpc *c, const struct smtpc_msg *m, struct err *e);
void smtpc_quit(struct smtpc *c);
void smtpc_eof(struct smtpc *c);
void smtpc_timeout(struct smtpc *c);
/* The next action, in order; SMTPC_NONE when waiting for an event. */
void smtpc_next(struct smtpc *c, struct smtpc_action *a);
/* What the server offered (after EHLO/LHLO): for logs. */
bool smtpc_tls_on(const struct smtpc *c);

/* Dot-stuffing of a CRLF message streamed in pieces. */
struct smtpc_dot {
	bool at_line_start;
	bool last_cr;
	bool any;
};
void smtpc_dot_init(struct smtpc_dot *d);
/* Appends p[0..n) dot-stuffed to out; -1 if out's maximum is reached. */
int smtpc_dot_stuff(struct smtpc_dot *d, const char *p, size_t n, struct buf *out);
/* Appends the end: CRLF if the message did not end with one, then ".\r\n". */
int smtpc_dot_end(struct smtpc_dot *d, struct buf *out);

#endif
