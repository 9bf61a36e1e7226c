/*
 * net — sockets, the event loop glue, connections and TLS.  The only
 * module that calls libevent; net/tls.c is the only file that includes
 * OpenSSL.  A connection runs one smtp_session and executes its actions.
 */
#ifndef SLUICE_NET_H
#define SLUICE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../conf/conf.h"
#include "../queue/queue.h"
#include "../smtp/smtp.h"
#include "../util/util.h"

struct event_base;

/* ---- listening sockets (bound by the master) ------------------------- */

/* Fills ss with an IPv4 or IPv6 address in text form and port; returns
 * the length to pass to bind/connect, or 0 when text is no address. */
socklen_t listen_sockaddr(const char *text, uint16_t port, struct sockaddr_storage *ss);
/* Binds and listens on addr:port (IPv4 or IPv6 text; IPv6 sockets are
 * V6ONLY so that "0.0.0.0" and "::" can both be bound).  Non-blocking,
 * close-on-exec. */
int listen_bind(const char *addr, uint16_t port, int backlog, struct err *e);
/* The local port of a bound socket. */
int listen_port(int fd);
/* Would a connection to ss (address and port) reach a socket this server
 * listens on: port one of ports, address one of ifaces (IPv4/IPv6 text;
 * none = the wildcards 0.0.0.0 and ::), where a wildcard takes every
 * address of this host.  Mail sent there would come back to us.  *ifa
 * (start with NULL) caches the host's interface list over several calls;
 * the caller frees it with freeifaddrs. */
struct ifaddrs;
bool listen_is_own(const struct sockaddr_storage *ss, char *const *ifaces, size_t n_ifaces,
		   const uint16_t *ports, size_t n_ports, struct ifaddrs **ifa);

/* ---- TLS ------------------------------------------------------------- */

struct tls_ctx;  /* a server context for one listener (certificate + policy) */
struct tls_conn; /* one TLS connection */

void tls_global_init(void);
/* Builds a context from the certificate/key and the listener's policy
 * (minimum version, ciphers).  Loaded by the master before workers start,
 * so workers never need to read key files. */
int tls_ctx_new(const struct conf *c, const struct conf_listener *l, struct tls_ctx **out,
		struct err *e);
void tls_ctx_free(struct tls_ctx *t);
const char *tls_library_version(void);

enum tls_io { TLS_IO_OK = 0, TLS_IO_WANT_READ, TLS_IO_WANT_WRITE, TLS_IO_EOF, TLS_IO_ERROR };

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd);
void tls_conn_free(struct tls_conn *t);
enum tls_io tls_handshake(struct tls_conn *t);
/* Reads up to n bytes; *got receives the count when TLS_IO_OK. */
enum tls_io tls_read(struct tls_conn *t, void *p, size_t n, size_t *got);
enum tls_io tls_write(struct tls_conn *t, const void *p, size_t n, size_t *put);
/* One write of the next bytes of a connection's output, over TLS when t is
 * not NULL, else plain on fd: 1 = *put bytes went out, 0 = would block
 * (*want is EV_READ or EV_WRITE), -1 = broken (*err_text says why). */
int net_write(int fd, struct tls_conn *t, const void *p, size_t n, size_t *put, short *want,
	      const char **err_text);
/* After a successful handshake (static strings). */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);
/* Last error text for logs (our formatting of OpenSSL's queue). */
const char *tls_conn_error(struct tls_conn *t);
/* Sends close_notify (best effort, non-blocking). */
void tls_conn_shutdown(struct tls_conn *t);

/* ---- the auth process, seen from a worker ---------------------------- */

struct authd_msg;
struct authd_field;
struct authc;

/* A reply, or NULL when the auth process could not answer (not running,
 * connection lost, timeout): the caller treats that as a temporary failure. */
typedef void (*authc_cb)(void *arg, const struct authd_msg *reply);

/* Client of the auth process at the abstract socket named by tag; connects
 * lazily and again after a loss. */
struct authc *authc_new(struct event_base *base, const char *tag, unsigned timeout_s);
void authc_free(struct authc *a);
/* Sends a request; cb runs once, later, from the event loop.  Returns the
 * request id (never 0). */
uint32_t authc_request(struct authc *a, uint8_t type, size_t n, const struct authd_field *f,
		       authc_cb cb, void *arg);
/* Forgets a pending request (its session is gone): cb will not run. */
void authc_cancel(struct authc *a, uint32_t id);

/* ---- messages ------------------------------------------------------- */

/* Starts a spooled message for env: its spool file and envelope, then the
 * Received header.  Sets *out and qid; -1 (nothing left open) on error. */
int net_message_begin(struct spool *sp, const struct smtp_policy *p,
		      const struct smtp_client *cl, const struct smtp_envelope *env,
		      struct spool_msg **out, char qid[QUEUE_ID_LEN + 1], struct err *e);
/* Appends the header fields named by what (SMTP_ADD_*) for message qid. */
void net_missing_headers(struct buf *out, unsigned what, const char *qid, const char *hostname);

/* ---- sessions per client address (hostcount.c) ---------------------- */

#include <sys/socket.h>

#define NET_HOST_SLOTS 1024   /* = IPC_MAX_SLOTS: one set of rows per worker slot */
#define NET_HOST_ROWS 2
#define NET_HOST_BUCKETS 16384

/* Shared by the master and its workers (one mapping made before forking). */
struct net_hosts {
	uint64_t key[NET_HOST_ROWS];     /* random seeds: clients cannot aim at a bucket */
	uint32_t counts[];               /* [slot][row][bucket] */
};

struct net_hosts *net_hosts_new(void);
void net_hosts_free(struct net_hosts *h);
/* A dead worker's sessions are gone: the master zeroes its rows. */
void net_hosts_clear_slot(struct net_hosts *h, size_t slot);
/* The buckets of a client address; false for other families (unix). */
bool net_hosts_key(const struct net_hosts *h, const struct sockaddr *sa,
		   uint32_t bucket[NET_HOST_ROWS]);
/* Counts one more session of that address for worker my_slot; false (and
 * nothing counted) if the address would then have more than limit. */
bool net_hosts_take(struct net_hosts *h, size_t my_slot, size_t used_slots,
		    const uint32_t bucket[NET_HOST_ROWS], unsigned limit);
void net_hosts_release(struct net_hosts *h, size_t my_slot, const uint32_t bucket[NET_HOST_ROWS]);

/* ---- connections ----------------------------------------------------- */

/* What a worker knows about one listening port. */
struct net_listener {
	int fd;
	uint16_t port;
	const struct conf_listener *conf;
	struct smtp_policy policy;
	struct tls_ctx *tls;          /* NULL: no certificate */
	struct evconnlistener *ev;
	bool local;                   /* the sendmail socket (unix, SO_PEERCRED) */
	struct net_server *server;
};

/* A worker's shared state: the loop, the spool, the limits. */
struct net_server {
	struct event_base *base;
	const struct conf *conf;
	struct spool *spool;
	struct net_listener *listeners;
	size_t n_listeners;
	size_t n_conns;               /* sessions of this worker */
	bool stopping;
	bool retiring;                /* accepts no more; sessions run on */
	uint64_t next_session;
	/* Session counts of every worker, in memory shared with the master
	 * (smtp_accept_max is global; a dead worker's slot is zeroed);
	 * slots[n_slots] is how many of them have ever been used. */
	uint32_t *slots;
	size_t n_slots;
	size_t my_slot;
	struct net_hosts *hosts;      /* sessions per client address, NULL = not counted */
	struct net_conn *conns;       /* every session of this worker */
	struct net_conn *commit_head; /* sessions waiting for group commit */
	struct event *commit_ev;
	struct commit_job *commit_inflight; /* the batch the spool's thread is syncing */
	struct event *commit_done_ev;       /* on spool_commit_fd */
	struct event *stop_timer;
	struct buf rbuf;              /* read buffer reused by every session */
	struct authc *authc;          /* NULL when no auth process runs */
	int notify_fd;                /* datagram socket to the queue runner, -1 = none */
	void (*on_empty)(struct net_server *srv); /* called when stopping or retiring and
						     n_conns hits 0 */
};

int net_server_start(struct net_server *srv, struct err *e);
/* Graceful stop: stop accepting, let sessions finish their message, close
 * the rest with 421; on_empty runs when the last one is gone. */
void net_server_stop(struct net_server *srv);
/* Retirement (a reload): stop accepting, and let every session go on as
 * usual until it ends; on_empty runs when the last one is gone.  Those
 * still there after shutdown_timeout are stopped (net_server_stop). */
void net_server_retire(struct net_server *srv);
void net_server_free(struct net_server *srv);
/* The "queued" log line of an acknowledged message (workers and -bs). */
void net_log_queued(const char *sid, const char *qid, const struct smtp_envelope *env,
		    enum smtp_role role, const char *local_user);

/* ---- outgoing connections (client.c; TLS client in tls.c) ------------ */

#include <sys/socket.h>
#include <sys/types.h>

struct smtpc_opts;
struct smtpc_msg;
struct smtpc_reply;

/* A client context for outgoing TLS.  ca_file NULL or "" = the system's
 * default CA paths.  verify=false is opportunistic: any certificate is
 * accepted but its verdict is still recorded (tls_conn_verify_result);
 * verify=true refuses a peer whose chain or name does not check out and
 * requires TLS 1.2 or later. */
int tls_client_ctx_new(bool verify, const char *ca_file, struct tls_ctx **out, struct err *e);
/* A client connection on fd (tls_handshake drives it).  sni is the name
 * sent as server_name and checked against the certificate (an IP literal
 * is checked against its IP entries and not sent); NULL/"" = neither.
 * NULL if ctx is not a client context or on failure. */
struct tls_conn *tls_conn_new_client(struct tls_ctx *ctx, int fd, const char *sni);
/* After a client handshake: "verified" or "unverified: <reason>". */
const char *tls_conn_verify_result(const struct tls_conn *t);

struct net_smtp; /* one outgoing SMTP or LMTP connection running one smtpc machine */

struct net_smtp_timeouts {
	unsigned connect_s; /* TCP (or unix socket) connect */
	unsigned command_s; /* each reply wait: greeting, EHLO, MAIL, RCPT, DATA, QUIT;
			       also a TLS handshake */
	unsigned data_s;    /* each write progress while sending the body, and the
			       reply to the final dot (unless set apart with
			       net_smtp_set_data_done_timeout) */
};

/* Every callback runs from the event loop, never from inside a net_smtp_*
 * call, and may call net_smtp_send, net_smtp_quit or net_smtp_abort. */
struct net_smtp_cbs {
	/* Greeted, EHLO/LHLO (and STARTTLS, AUTH) done, or the previous
	 * message finished: the connection can take a message (or a quit).
	 * Not called again while a message sent from result() is running. */
	void (*ready)(void *arg, struct net_smtp *c);
	/* The per-recipient outcome of the message (replies[n], one per
	 * recipient in order); valid during the call only. */
	void (*result)(void *arg, struct net_smtp *c, const struct smtpc_reply *replies, size_t n);
	/* The connection is gone; why is the reason (4xx unless a server's 5xx
	 * ended the session) and applies to a message in progress, which gets
	 * no result().  c is freed when this returns. */
	void (*closed)(void *arg, struct net_smtp *c, const struct smtpc_reply *why);
};

/*
 * Connects (non-blocking) to sa (AF_INET, AF_INET6 with a port, or AF_UNIX
 * for LMTP) and runs a machine made from o.  peer_name names the peer in
 * logs and is the TLS server name.  tls_client: a context from
 * tls_client_ctx_new, NULL when TLS is impossible (then o->tls MAY acts as
 * NO); it must outlive the connection.  tls_on_connect: handshake before
 * the greeting.  o's strings are copied.  -1 only for local failures (no
 * socket, bad arguments); a connection that fails ends in closed().
 */
struct net_smtp *net_smtp_open(struct event_base *base, const struct sockaddr *sa,
			       socklen_t salen, const char *peer_name, const struct smtpc_opts *o,
			       struct tls_ctx *tls_client, bool tls_on_connect,
			       const struct net_smtp_timeouts *t, const struct net_smtp_cbs *cbs,
			       void *arg, struct err *e);
/* Sends message m (copied) after ready(): the body is data_len bytes of
 * data_fd from data_off (CRLF lines, as spooled), read with pread in
 * blocks and dot-stuffed on the way; data_fd must stay open until
 * result() or closed().  -1 when not ready or m is refused. */
int net_smtp_send(struct net_smtp *c, const struct smtpc_msg *m, int data_fd, off_t data_off,
		  off_t data_len, struct err *e);
/* The wait for the reply to the final dot, once the dot is written out
 * (RFC 5321 4.5.3.2.6: at least 10 minutes, as the server may be checking
 * or delivering the message); 0 = the timeouts' data_s.  Applies from the
 * next wait on. */
void net_smtp_set_data_done_timeout(struct net_smtp *c, unsigned s);
/* True from the moment the final dot of the message in progress is
 * queued until its reply: the server may have taken the message, so a
 * connection lost now must not hand it to another server at once. */
bool net_smtp_dot_sent(const struct net_smtp *c);
/* QUIT, then closed(). */
void net_smtp_quit(struct net_smtp *c);
/* Closes now; no callback runs afterwards. */
void net_smtp_abort(struct net_smtp *c);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384 verified", "... unverified: <reason>"
 * or "none": for logs and Received headers. */
const char *net_smtp_tls_info(const struct net_smtp *c);
/* The peer for logs: peer_name and address, e.g. "mx.example.net[192.0.2.1]:25". */
const char *net_smtp_peer(const struct net_smtp *c);

#endif
