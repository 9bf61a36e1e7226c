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

#include "../conf/conf.h"
#include "../queue/queue.h"
#include "../smtp/smtp.h"
#include "../util/util.h"

struct event_base;

/* ---- listening sockets (bound by the master) ------------------------- */

/* Binds and listens on addr:port (IPv4 or IPv6 text; IPv6 sockets are
 * V6ONLY so that "0.0.0.0" and "::" can both be bound).  Non-blocking,
 * close-on-exec. */
int listen_bind(const char *addr, uint16_t port, int backlog, struct err *e);
/* The local port of a bound socket. */
int listen_port(int fd);

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

/* ---- connections ----------------------------------------------------- */

/* What a worker knows about one listening port. */
struct net_listener {
	int fd;
	uint16_t port;
	const struct conf_listener *conf;
	struct smtp_policy policy;
	struct tls_ctx *tls;          /* NULL: no certificate */
	struct evconnlistener *ev;
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
	uint64_t next_session;
	/* Session counts of every worker, in memory shared with the master
	 * (smtp_accept_max is global; a dead worker's slot is zeroed). */
	uint32_t *slots;
	size_t n_slots;
	size_t my_slot;
	struct net_conn *conns;       /* every session of this worker */
	struct net_conn *commit_head; /* sessions waiting for group commit */
	struct event *commit_ev;
	struct event *stop_timer;
	struct buf rbuf;              /* read buffer reused by every session */
	struct authc *authc;          /* NULL when no auth process runs */
	void (*on_empty)(struct net_server *srv); /* called when stopping and n_conns hits 0 */
};

int net_server_start(struct net_server *srv, struct err *e);
/* Graceful stop: stop accepting, let sessions finish their message, close
 * the rest with 421; on_empty runs when the last one is gone. */
void net_server_stop(struct net_server *srv);
void net_server_free(struct net_server *srv);

#endif
