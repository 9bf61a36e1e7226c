/*
 * Outgoing SMTP and LMTP connections: connect, TLS, and the I/O for one
 * smtpc machine (deliver/smtpc.c), whose actions are executed here.  The
 * body is streamed from the spool file in bounded blocks, dot-stuffed on
 * the way, and only read again when the socket has taken the last block.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../deliver/deliver.h"
#include "net.h"

#define NET_SMTP_READ_CHUNK (16 * 1024)
#define NET_SMTP_BODY_BLOCK (64 * 1024)
/* Pending output: a pipelined batch of commands (many recipients) or one
 * dot-stuffed body block (at most twice its size) plus the end. */
#define NET_SMTP_OUT_MAX (4 * 1024 * 1024)
#define NET_SMTP_ROUNDS 64

enum nstate { N_CONNECT, N_HANDSHAKE, N_PLAIN, N_TLS };

struct net_smtp {
	struct event_base *base;
	int fd;
	enum nstate st;
	bool starttls;                 /* the handshake in progress answers STARTTLS */
	int connect_err;               /* errno of a failed connect, seen by step() */
	struct smtpc *m;
	struct smtpc_opts o;           /* with our copies of its strings */
	struct tls_ctx *tls_ctx;
	struct tls_conn *tls;
	bool tls_on_connect;
	struct net_smtp_timeouts to;
	unsigned data_done_s;          /* the reply to the final dot; 0 = to.data_s */
	struct net_smtp_cbs cbs;
	void *arg;

	struct event *ev_io;
	short ev_want;
	struct event *ev_timer;
	struct event *ev_defer;        /* runs step() from the loop after an API call */
	bool timer_fired;
	bool timeout_told;             /* smtpc_timeout already given: next expiry closes */

	struct buf out;                /* bytes for the server, in order */
	struct buf in;                 /* read chunk */
	uint8_t *block;                /* pread buffer for the body */

	/* The message being sent: our copy of it and where its body is. */
	struct smtpc_msg msg;
	struct smtpc_rcpt *rcpts;
	bool msg_active;               /* from net_smtp_send to its result */
	int data_fd;
	off_t data_pos, data_end;
	bool body_active;              /* BODY: still reading the file */
	bool dot_wait;                 /* body written out: waiting for its reply */
	struct smtpc_dot dot;
	unsigned n_sent;               /* messages with a result */

	bool idle;                     /* READY seen, nothing asked since */
	bool ever_ready;               /* greeting and EHLO done once */
	bool quitting;
	bool want_starttls;
	bool want_close;
	bool broken;                   /* TLS failed mid-stream: nothing more can be sent */
	struct smtpc_reply why;        /* the reason for closing (our copy) */

	bool in_run;
	bool closing;                  /* closed() is being or has been called */
	bool dead;                     /* free at the end of the current run */

	char *sni;                     /* peer_name: the TLS server name */
	char peer[320];
	char tls_info[256];
	char tls_err[256];             /* why a handshake failed, for the log line */
};

static void run(struct net_smtp *c);

/* ---- replies ----------------------------------------------------------- */

static void reply_clear(struct smtpc_reply *r)
{
	free(r->text);
	memset(r, 0, sizeof(*r));
}

static void reply_copy(struct smtpc_reply *dst, const struct smtpc_reply *src)
{
	dst->code = src->code;
	snprintf(dst->status, sizeof(dst->status), "%s", src->status);
	dst->text = str_dup(src->text ? src->text : "");
	dst->local = src->local;
	dst->dsn = src->dsn;
	dst->stage = src->stage;
}

static void reply_local(struct smtpc_reply *r, int code, const char *status, const char *fmt, ...)
	UTIL_PRINTF(4, 5);
static void reply_local(struct smtpc_reply *r, int code, const char *status, const char *fmt, ...)
{
	struct buf b;
	va_list ap;
	buf_init(&b, 1024);
	buf_printf(&b, "%d %s ", code, status);
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	reply_clear(r);
	r->code = code;
	snprintf(r->status, sizeof(r->status), "%s", status);
	const char *s = buf_cstr(&b);
	r->text = str_dup(s ? s : "");
	buf_free(&b);
}

/* ---- timers and events ------------------------------------------------- */

static void arm(struct net_smtp *c, unsigned s)
{
	struct timeval tv = { (time_t)s, 0 };
	evtimer_add(c->ev_timer, &tv);
}

/* Waiting for the server (or for the socket to take the body) restarts the
 * clock; an idle connection is the caller's to keep or quit. */
static void rearm(struct net_smtp *c)
{
	c->timeout_told = false;
	if (c->st == N_CONNECT)
		return;
	if (c->idle && !c->want_close) {
		evtimer_del(c->ev_timer);
		return;
	}
	if (c->dot_wait && buf_len(&c->out) == 0 && c->data_done_s) {
		/* The server may be checking or delivering the message: giving up
		 * early while it goes on to take it sends the message twice. */
		arm(c, c->data_done_s);
		return;
	}
	arm(c, c->body_active || c->dot_wait ? c->to.data_s : c->to.command_s);
}

static void io_cb(evutil_socket_t fd, short what, void *arg);

static void set_events(struct net_smtp *c, short want)
{
	if (c->ev_want == want)
		return;
	event_del(c->ev_io);
	c->ev_want = want;
	if (want == 0)
		return;
	event_assign(c->ev_io, c->base, c->fd, want | EV_PERSIST, io_cb, c);
	event_add(c->ev_io, NULL);
}

/* ---- closing ----------------------------------------------------------- */

static void log_outcome(struct net_smtp *c)
{
	struct buf *l = log_begin(c->why.code >= 500 ? LOG_LVL_WARN : LOG_LVL_INFO, "remote_close");
	log_kv_esc(l, "peer", c->peer, strlen(c->peer));
	log_kv(l, "proto", "%s", c->o.lmtp ? "lmtp" : "smtp");
	log_kv_esc(l, "tls", c->tls_info, strlen(c->tls_info));
	if (c->tls_err[0])
		log_kv_esc(l, "tls_error", c->tls_err, strlen(c->tls_err));
	log_kv(l, "messages", "%u", c->n_sent);
	if (c->msg_active)
		log_kv(l, "aborted_message", "yes");
	log_kv(l, "code", "%d", c->why.code);
	const char *t = c->why.text ? c->why.text : "";
	log_kv_esc(l, "reason", t, strlen(t));
	log_end(l);
}

/* Ends the connection: one log line, then closed().  The object is freed
 * by run() once the current call chain unwinds. */
static void finish(struct net_smtp *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->why.code == 0)
		reply_local(&c->why, 421, "4.4.2", "connection closed");
	log_outcome(c);
	if (c->st == N_TLS && !c->broken)
		tls_conn_shutdown(c->tls);
	set_events(c, 0);
	evtimer_del(c->ev_timer);
	if (!c->dead && c->cbs.closed)
		c->cbs.closed(c->arg, c, &c->why);
	c->dead = true;
}

static void fail_local(struct net_smtp *c, int code, const char *status, const char *what,
		       const char *detail)
{
	if (c->closing)
		return;
	reply_local(&c->why, code, status, "%s%s%s", what, detail ? ": " : "",
		    detail ? detail : "");
	finish(c);
}

static void free_msg(struct net_smtp *c)
{
	for (size_t i = 0; i < c->msg.n_rcpts; i++) {
		free((char *)c->rcpts[i].addr);
		free((char *)c->rcpts[i].orcpt);
	}
	free(c->rcpts);
	free((char *)c->msg.sender);
	free((char *)c->msg.envid);
	c->rcpts = NULL;
	memset(&c->msg, 0, sizeof(c->msg));
}

static void free_now(struct net_smtp *c)
{
	if (c->ev_io)
		event_free(c->ev_io);
	if (c->ev_timer)
		event_free(c->ev_timer);
	if (c->ev_defer)
		event_free(c->ev_defer);
	free(c->sni);
	tls_conn_free(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	smtpc_free(c->m);
	free((char *)c->o.helo);
	free((char *)c->o.auth_user);
	if (c->o.auth_pass) {
		explicit_bzero((char *)c->o.auth_pass, strlen(c->o.auth_pass));
		free((char *)c->o.auth_pass);
	}
	free_msg(c);
	buf_free(&c->out);
	buf_free(&c->in);
	free(c->block);
	reply_clear(&c->why);
	free(c);
}

/* ---- the machine's actions --------------------------------------------- */

static void tell_result(struct net_smtp *c, const struct smtpc_reply *r, size_t n)
{
	/* Our copy: the machine's replies live only until its next call, and
	 * the callback may well call it (net_smtp_send). */
	struct smtpc_reply *copy = xcalloc(n ? n : 1, sizeof(*copy));
	for (size_t i = 0; i < n; i++)
		reply_copy(&copy[i], &r[i]);
	c->msg_active = false;
	c->dot_wait = false;
	c->body_active = false;
	c->n_sent++;
	free_msg(c);
	if (c->cbs.result)
		c->cbs.result(c->arg, c, copy, n);
	for (size_t i = 0; i < n; i++)
		reply_clear(&copy[i]);
	free(copy);
}

/* Executes the machine's actions until it waits.  Stops early when a
 * callback ended the connection. */
static void drain(struct net_smtp *c)
{
	struct smtpc_action a;
	bool any = false;
	while (!c->dead && !c->want_close) {
		smtpc_next(c->m, &a);
		if (a.type == SMTPC_NONE)
			break;
		any = true;
		switch (a.type) {
		case SMTPC_SEND:
			c->idle = false;
			if (c->broken)
				break;
			if (buf_append(&c->out, a.data, a.len) < 0) {
				fail_local(c, 451, "4.3.0", "local error", "output buffer full");
				return;
			}
			break;
		case SMTPC_STARTTLS:
			c->want_starttls = true;
			break;
		case SMTPC_BODY:
			if (!c->msg_active || c->body_active) {
				fail_local(c, 451, "4.3.0", "local error", "body asked for without a message");
				return;
			}
			c->body_active = true;
			smtpc_dot_init(&c->dot);
			break;
		case SMTPC_RESULT:
			tell_result(c, a.replies, a.n);
			break;
		case SMTPC_READY:
			/* A message sent from result() is already on its way. */
			if (c->msg_active || c->quitting)
				break;
			c->idle = true;
			c->ever_ready = true;
			if (c->cbs.ready)
				c->cbs.ready(c->arg, c);
			break;
		case SMTPC_CLOSE:
			if (a.reply)
				reply_copy(&c->why, a.reply);
			c->want_close = true;
			break;
		default:
			break;
		}
	}
	if (any && !c->dead)
		rearm(c);
}

/* ---- I/O --------------------------------------------------------------- */

/* Writes pending output: 1 = all written, 0 = would block (*want set),
 * -1 = broken (*err_text set). */
static int flush_out(struct net_smtp *c, short *want, bool *wrote, const char **err_text)
{
	while (buf_len(&c->out) > 0) {
		size_t put;
		int r = net_write(c->fd, c->st == N_TLS ? c->tls : NULL, buf_ptr(&c->out),
				  buf_len(&c->out), &put, want, err_text);
		if (r <= 0)
			return r;
		buf_consume(&c->out, put);
		*wrote = true;
	}
	buf_reset(&c->out); /* keeps the storage, drops the consumed offset */
	return 1;
}

/* Reads the next block of the body and queues it dot-stuffed; at the end
 * the terminating dot, and the machine learns the body is out. */
static int fill_body(struct net_smtp *c)
{
	if (c->data_pos < c->data_end) {
		off_t left = c->data_end - c->data_pos;
		size_t want = left < NET_SMTP_BODY_BLOCK ? (size_t)left : NET_SMTP_BODY_BLOCK;
		ssize_t r;
		do
			r = pread(c->data_fd, c->block, want, c->data_pos);
		while (r < 0 && errno == EINTR);
		if (r <= 0) {
			/* Never end a message the server would take as complete. */
			fail_local(c, 451, "4.3.0", "local error reading the message",
				   r < 0 ? strerror(errno) : "file shorter than expected");
			return -1;
		}
		c->data_pos += r;
		if (smtpc_dot_stuff(&c->dot, (const char *)c->block, (size_t)r, &c->out) < 0) {
			fail_local(c, 451, "4.3.0", "local error", "output buffer full");
			return -1;
		}
		return 0;
	}
	if (smtpc_dot_end(&c->dot, &c->out) < 0) {
		fail_local(c, 451, "4.3.0", "local error", "output buffer full");
		return -1;
	}
	c->body_active = false;
	c->dot_wait = true;
	smtpc_body_done(c->m);
	drain(c);
	return 0;
}

static void tls_up(struct net_smtp *c)
{
	c->st = N_TLS;
	snprintf(c->tls_info, sizeof(c->tls_info), "%s %s %s", tls_conn_version(c->tls),
		 tls_conn_cipher(c->tls), tls_conn_verify_result(c->tls));
	if (c->starttls) {
		c->starttls = false;
		smtpc_tls_done(c->m, true);
		drain(c);
	}
	rearm(c);
}

static void tls_failed(struct net_smtp *c)
{
	const char *err = tls_conn_error(c->tls);
	snprintf(c->tls_err, sizeof(c->tls_err), "%s", err);
	if (!c->starttls) {
		fail_local(c, 421, "4.7.0", "TLS handshake failed", err);
		return;
	}
	/* The connection is unusable now whatever the machine wants to say:
	 * let it give its reason for the message, or use ours. */
	c->starttls = false;
	c->broken = true;
	buf_reset(&c->out);
	smtpc_tls_done(c->m, false);
	drain(c);
	if (c->dead)
		return;
	if (!c->want_close)
		reply_local(&c->why, 421, "4.7.0", "TLS handshake failed: %s", err);
	finish(c);
}

/* The peer hung up or the connection broke: the machine turns that into
 * the reason for a message in progress. */
static void peer_gone(struct net_smtp *c, const char *detail)
{
	if (!c->want_close) {
		smtpc_eof(c->m);
		drain(c);
		if (c->dead)
			return;
	}
	if (!c->want_close || c->why.code == 0)
		reply_local(&c->why, 421, "4.4.2", "connection lost%s%s", detail ? ": " : "",
			    detail ? detail : "");
	finish(c);
}

static void on_timeout(struct net_smtp *c)
{
	if (c->st == N_CONNECT) {
		fail_local(c, 421, "4.4.1", "connect timeout", NULL);
		return;
	}
	if (c->st == N_HANDSHAKE) {
		fail_local(c, 421, "4.4.2", "TLS handshake timeout", NULL);
		return;
	}
	if (c->timeout_told || c->want_close) {
		/* The machine's last words (a QUIT) did not go out in time. */
		fail_local(c, 421, "4.4.2", "timeout", NULL);
		return;
	}
	smtpc_timeout(c->m);
	drain(c);
	if (c->dead)
		return;
	c->timeout_told = true; /* after drain: its rearm must not clear it */
	if (!c->want_close)
		fail_local(c, 421, "4.4.2", "timeout", NULL);
	else
		arm(c, c->to.command_s); /* bounds the wait for its QUIT to go out */
}

/* Runs the connection as far as it goes without blocking, then waits for
 * the readiness it needs.  Bounded so one peer cannot starve the others. */
static void step(struct net_smtp *c)
{
	if (c->st != N_CONNECT)
		drain(c);
	for (int rounds = 0;; rounds++) {
		if (c->dead)
			return;
		if (c->timer_fired) {
			c->timer_fired = false;
			on_timeout(c);
			continue;
		}
		if (c->st == N_CONNECT) {
			if (c->connect_err)
				fail_local(c, 421, "4.4.1", "connect failed", strerror(c->connect_err));
			return;
		}
		if (rounds == NET_SMTP_ROUNDS) {
			/* Work may be left that no readiness event reports (records
			 * already decrypted inside OpenSSL, body blocks to queue). */
			event_active(c->ev_defer, 0, 0);
			return;
		}
		short want = 0;
		bool progress = false;
		if (c->st == N_HANDSHAKE) {
			enum tls_io r = tls_handshake(c->tls);
			if (r == TLS_IO_OK) {
				tls_up(c);
				continue;
			}
			if (r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE) {
				set_events(c, r == TLS_IO_WANT_READ ? EV_READ : EV_WRITE);
				return;
			}
			tls_failed(c);
			continue;
		}
		if (c->want_close) {
			/* Best effort for the machine's last words (QUIT). */
			const char *err = NULL;
			bool wrote = false;
			if (!c->broken)
				(void)flush_out(c, &want, &wrote, &err);
			finish(c);
			continue;
		}
		if (c->want_starttls && buf_len(&c->out) == 0) {
			c->want_starttls = false;
			tls_conn_free(c->tls);
			c->tls = c->tls_ctx ? tls_conn_new_client(c->tls_ctx, c->fd, c->sni) : NULL;
			if (!c->tls) {
				c->starttls = false;
				c->broken = true;
				smtpc_tls_done(c->m, false);
				drain(c);
				if (!c->dead && !c->want_close)
					reply_local(&c->why, 421, "4.7.0", "TLS not possible");
				finish(c);
				continue;
			}
			c->starttls = true;
			c->st = N_HANDSHAKE;
			arm(c, c->to.command_s);
			continue;
		}
		if (c->body_active && buf_len(&c->out) < NET_SMTP_BODY_BLOCK) {
			if (fill_body(c) < 0)
				continue;
			progress = true;
		}
		const char *err = NULL;
		bool wrote = false;
		int f = flush_out(c, &want, &wrote, &err);
		if (f < 0) {
			peer_gone(c, err);
			continue;
		}
		if (wrote) {
			progress = true;
			rearm(c);
		}
		/* TLS: a write cut short must be retried before anything else. */
		if (f == 0 && c->st == N_TLS) {
			set_events(c, want);
			return;
		}
		uint8_t *p = buf_reserve(&c->in, NET_SMTP_READ_CHUNK);
		if (!p) {
			fail_local(c, 451, "4.3.0", "local error", "out of memory");
			continue;
		}
		size_t got = 0;
		short rwant = EV_READ;
		if (c->st == N_TLS) {
			enum tls_io r = tls_read(c->tls, p, NET_SMTP_READ_CHUNK, &got);
			if (r == TLS_IO_WANT_WRITE)
				rwant = EV_WRITE;
			else if (r == TLS_IO_EOF || r == TLS_IO_ERROR) {
				peer_gone(c, r == TLS_IO_EOF ? NULL : tls_conn_error(c->tls));
				continue;
			}
		} else {
			ssize_t r = recv(c->fd, p, NET_SMTP_READ_CHUNK, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
				peer_gone(c, r < 0 ? strerror(errno) : NULL);
				continue;
			}
			if (r > 0)
				got = (size_t)r;
		}
		if (got > 0) {
			smtpc_feed(c->m, (const char *)p, got);
			buf_reset(&c->in);
			drain(c);
			continue;
		}
		if (progress || (c->body_active && buf_len(&c->out) < NET_SMTP_BODY_BLOCK))
			continue;
		if (c->want_close || c->want_starttls)
			continue;
		set_events(c, (short)(rwant | (f == 0 ? want : 0)));
		return;
	}
}

static void run(struct net_smtp *c)
{
	if (c->in_run)
		return; /* the outer run goes on with whatever changed */
	c->in_run = true;
	step(c);
	c->in_run = false;
	if (c->dead)
		free_now(c);
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_smtp *c = arg;
	if (c->st == N_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return;
		if (err) {
			c->connect_err = err;
		} else {
			c->st = c->tls_on_connect ? N_HANDSHAKE : N_PLAIN;
			arm(c, c->to.command_s);
		}
	}
	run(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_smtp *c = arg;
	c->timer_fired = true;
	run(c);
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
	run(arg);
}

/* ---- the API ----------------------------------------------------------- */

static void format_peer(struct net_smtp *c, const struct sockaddr *sa, socklen_t salen,
			const char *name)
{
	char a[INET6_ADDRSTRLEN] = "?";
	const char *n = name && *name ? name : "";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", n, a, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		snprintf(c->peer, sizeof(c->peer), "%s[%s]:%u", n, a, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_un *su = (const struct sockaddr_un *)sa;
		size_t max = salen > offsetof(struct sockaddr_un, sun_path)
				     ? salen - offsetof(struct sockaddr_un, sun_path)
				     : 0;
		size_t len = strnlen(su->sun_path, max < sizeof(su->sun_path) ? max
								 : sizeof(su->sun_path));
		snprintf(c->peer, sizeof(c->peer), "%s[unix:%.*s]", n, (int)len, su->sun_path);
	}
}

static char *dup_or_null(const char *s)
{
	return s ? str_dup(s) : NULL;
}

struct net_smtp *net_smtp_open(struct event_base *base, const struct sockaddr *sa,
			       socklen_t salen, const char *peer_name, const struct smtpc_opts *o,
			       struct tls_ctx *tls_client, bool tls_on_connect,
			       const struct net_smtp_timeouts *t, const struct net_smtp_cbs *cbs,
			       void *arg, struct err *e)
{
	if (!base || !sa || !o || !t || !cbs) {
		err_set(e, "net_smtp_open: missing argument");
		return NULL;
	}
	int fam = sa->sa_family;
	if ((fam == AF_INET && salen < (socklen_t)sizeof(struct sockaddr_in)) ||
	    (fam == AF_INET6 && salen < (socklen_t)sizeof(struct sockaddr_in6)) ||
	    (fam == AF_UNIX && salen <= (socklen_t)offsetof(struct sockaddr_un, sun_path)) ||
	    (fam != AF_INET && fam != AF_INET6 && fam != AF_UNIX)) {
		err_set(e, "net_smtp_open: unsupported address");
		return NULL;
	}
	if (tls_on_connect && !tls_client) {
		err_set(e, "net_smtp_open: TLS on connect without a TLS context");
		return NULL;
	}
	int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err_set(e, "socket: %s", strerror(errno));
		return NULL;
	}
	if (fam != AF_UNIX) {
		/* Pipelined commands and body blocks go out whole: no need to wait
		 * for acknowledgements before the last bytes. */
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct net_smtp *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->fd = fd;
	c->st = N_CONNECT;
	c->o = *o;
	c->o.helo = dup_or_null(o->helo);
	c->o.auth_user = dup_or_null(o->auth_user);
	c->o.auth_pass = dup_or_null(o->auth_pass);
	c->o.tls_active = tls_on_connect;
	if (!tls_client && c->o.tls == SMTPC_TLS_MAY)
		c->o.tls = SMTPC_TLS_NO;
	c->tls_ctx = tls_client;
	c->tls_on_connect = tls_on_connect;
	c->to = *t;
	c->cbs = *cbs;
	c->arg = arg;
	c->data_fd = -1;
	buf_init(&c->out, NET_SMTP_OUT_MAX);
	buf_init(&c->in, 2 * NET_SMTP_READ_CHUNK);
	c->block = xmalloc(NET_SMTP_BODY_BLOCK);
	format_peer(c, sa, salen, peer_name);
	c->sni = dup_or_null(peer_name);
	snprintf(c->tls_info, sizeof(c->tls_info), "none");
	c->m = smtpc_new(&c->o);
	c->ev_io = event_new(base, fd, EV_WRITE | EV_PERSIST, io_cb, c);
	c->ev_timer = evtimer_new(base, timer_cb, c);
	c->ev_defer = event_new(base, -1, 0, defer_cb, c);
	if (!c->m || !c->ev_io || !c->ev_timer || !c->ev_defer) {
		err_set(e, "net_smtp_open: out of memory");
		c->dead = true;
		free_now(c);
		return NULL;
	}
	if (tls_on_connect) {
		c->tls = tls_conn_new_client(tls_client, fd, peer_name);
		if (!c->tls) {
			err_set(e, "net_smtp_open: TLS setup failed");
			free_now(c);
			return NULL;
		}
	}
	/* Whatever happens now is told through closed(), from the loop. */
	if (connect(fd, sa, salen) == 0) {
		c->st = tls_on_connect ? N_HANDSHAKE : N_PLAIN;
		arm(c, t->command_s);
		event_active(c->ev_defer, 0, 0);
	} else if (errno == EINPROGRESS || errno == EINTR) {
		c->ev_want = EV_WRITE;
		event_add(c->ev_io, NULL);
		arm(c, t->connect_s);
	} else {
		/* EAGAIN on a unix socket: its backlog is full; like a refusal. */
		c->connect_err = errno;
		event_active(c->ev_defer, 0, 0);
	}
	return c;
}

int net_smtp_send(struct net_smtp *c, const struct smtpc_msg *m, int data_fd, off_t data_off,
		  off_t data_len, struct err *e)
{
	if (c->closing || c->dead || c->quitting)
		return err_set(e, "connection closing");
	/* From result() the machine may not have said READY yet: it decides. */
	if (c->msg_active || !c->ever_ready)
		return err_set(e, "connection not ready for a message");
	if (data_fd < 0 || data_off < 0 || data_len < 0)
		return err_set(e, "bad message data");
	c->msg.sender = str_dup(m->sender ? m->sender : "");
	c->msg.envid = dup_or_null(m->envid);
	c->msg.size = m->size;
	c->msg.eightbit = m->eightbit;
	c->msg.smtputf8 = m->smtputf8;
	c->msg.ret = m->ret;
	c->rcpts = xcalloc(m->n_rcpts ? m->n_rcpts : 1, sizeof(*c->rcpts));
	for (size_t i = 0; i < m->n_rcpts; i++) {
		c->rcpts[i].addr = str_dup(m->rcpts[i].addr ? m->rcpts[i].addr : "");
		c->rcpts[i].notify = m->rcpts[i].notify;
		c->rcpts[i].orcpt = dup_or_null(m->rcpts[i].orcpt);
	}
	c->msg.rcpts = c->rcpts;
	c->msg.n_rcpts = m->n_rcpts;
	if (smtpc_send_msg(c->m, &c->msg, e) < 0) {
		free_msg(c);
		return -1;
	}
	c->msg_active = true;
	c->idle = false;
	c->body_active = false;
	c->dot_wait = false;
	c->data_fd = data_fd;
	c->data_pos = data_off;
	c->data_end = data_off + data_len;
	rearm(c);
	event_active(c->ev_defer, 0, 0);
	return 0;
}

bool net_smtp_dot_sent(const struct net_smtp *c)
{
	return c->msg_active && c->dot_wait;
}

void net_smtp_set_data_done_timeout(struct net_smtp *c, unsigned s)
{
	c->data_done_s = s;
}

void net_smtp_quit(struct net_smtp *c)
{
	if (c->closing || c->dead || c->quitting)
		return;
	c->quitting = true;
	c->idle = false;
	smtpc_quit(c->m);
	rearm(c);
	event_active(c->ev_defer, 0, 0);
}

void net_smtp_abort(struct net_smtp *c)
{
	if (c->dead)
		return;
	c->dead = true; /* no callback from here on */
	if (!c->closing) {
		c->closing = true;
		if (c->why.code == 0)
			reply_local(&c->why, 421, "4.4.2", "closed by us");
		log_outcome(c);
	}
	if (c->in_run)
		return; /* inside one of our callbacks: run() frees on the way out */
	free_now(c);
}

const char *net_smtp_tls_info(const struct net_smtp *c)
{
	return c->tls_info;
}

const char *net_smtp_peer(const struct net_smtp *c)
{
	return c->peer;
}
