/*
 * Connections: accept, read, feed the protocol core, write its replies and
 * execute its actions (TLS, spool writes, group commit, close).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../auth/auth.h"
#include "net.h"

#define NET_READ_CHUNK (16 * 1024)
/* Bytes without a line end that count as progress for the receive timer
 * (a line of message text longer than this is legal, if unusual). */
#define NET_PROGRESS_BYTES 4096

enum tstate { T_PLAIN, T_HANDSHAKE, T_TLS };

struct net_conn {
	struct net_server *srv;
	struct net_listener *l;
	struct net_conn *next, *prev;   /* srv->conns */
	struct net_conn *commit_next;   /* srv->commit_head */
	int fd;
	struct tls_conn *tls;
	enum tstate tstate;
	bool greet_after_tls;           /* TLS on connect: greeting after handshake */
	struct event *ev_io;
	short ev_want;                  /* EV_READ / EV_WRITE currently registered */
	struct event *ev_timer;
	struct smtp_session *s;
	struct smtp_client client;
	char sid[40];
	char ip[INET6_ADDRSTRLEN];
	char luser[32];                 /* "uid:N" on the sendmail socket */
	size_t partial;                 /* bytes read since the receive timer was last restarted */
	int64_t body_deadline;          /* monotonic ms the message text must keep ahead of, 0 = none */
	bool host_counted;              /* counted in srv->hosts under host_bucket */
	uint32_t host_bucket[NET_HOST_ROWS];
	struct spool_msg *msg;
	bool msg_failed;
	enum spool_fail msg_why;        /* why msg_failed, when the spool said */
	char qid[QUEUE_ID_LEN + 1];
	bool want_starttls;
	bool want_close;
	bool commit_wait;
	bool async_wait;                /* waiting for the auth process */
	uint32_t auth_req;              /* its request id */
	bool auth_fail_pending;         /* no auth process: answer after the action loop */
	enum sasl_req_kind auth_kind;   /* what the pending request asked */
	enum smtp_action_type async_type;
	bool commit_fail_pending;
	enum spool_fail commit_fail_why;
	bool in_run;
	bool closed;
};

static void conn_run(struct net_conn *c);
static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_close(struct net_conn *c, const char *why);
static void body_abort(struct net_conn *c);

static uint32_t total_sessions(const struct net_server *srv)
{
	/* slots[n_slots] holds how many slots are in use at all. */
	size_t used = __atomic_load_n(&srv->slots[srv->n_slots], __ATOMIC_ACQUIRE);
	if (used > srv->n_slots)
		used = srv->n_slots;
	uint32_t n = 0;
	for (size_t i = 0; i < used; i++)
		n += __atomic_load_n(&srv->slots[i], __ATOMIC_RELAXED);
	return n;
}

static void body_begin(struct net_conn *c, const struct smtp_envelope *env)
{
	struct err e = { "" };
	body_abort(c); /* a message still open here would otherwise leak */
	if (net_message_begin(c->srv->spool, &c->l->policy, &c->client, env, &c->msg, c->qid,
			      &e) < 0) {
		c->msg_failed = true;
		log_event(LOG_LVL_ERR, "spool_error", "session=%s error=\"%s\"", c->sid, e.msg);
	}
}

static void body_abort(struct net_conn *c)
{
	if (c->msg)
		spool_msg_abort(c->msg);
	c->msg = NULL;
	c->msg_failed = false;
	c->msg_why = SPOOL_FAIL_NONE;
}

static void log_refused(struct net_conn *c, const struct smtp_action *a)
{
	struct buf *l = log_begin(LOG_LVL_INFO, "refused");
	log_kv(l, "session", "%s", c->sid);
	log_kv_esc(l, "cmd", a->data, a->len);
	log_kv_esc(l, "reply", a->reply, a->reply_len);
	log_end(l);
}

static void drain_actions(struct net_conn *c);

static void auth_reply_cb(void *arg, const struct authd_msg *m)
{
	struct net_conn *c = arg;
	c->async_wait = false;
	c->auth_req = 0;
	if (c->async_type == SMTP_ACT_LOOKUP) {
		smtp_session_lookup_answer(c->s, authd_reply_result(m));
	} else {
		struct sasl_answer ans;
		struct buf user;
		buf_init(&user, 1024);
		authd_sasl_answer(m, c->auth_kind, &user, &ans);
		smtp_session_auth_answer(c->s, &ans);
		buf_free(&user);
	}
	drain_actions(c);
	conn_run(c);
}

static void auth_request(struct net_conn *c, const struct smtp_action *a)
{
	struct authd_field f[4];
	size_t n = 0;
	uint8_t type = 0;
	c->async_type = a->type;
	if (a->type == SMTP_ACT_LOOKUP) {
		if (a->lookup == SMTP_LOOKUP_SENDER) {
			type = AUTHD_SENDER;
			f[n++] = (struct authd_field){ (const uint8_t *)(a->user ? a->user : ""),
						       a->user ? strlen(a->user) : 0 };
		} else {
			type = AUTHD_RCPT;
		}
		f[n++] = (struct authd_field){ a->data, a->len };
	} else {
		c->auth_kind = a->sasl_req->kind;
		n = authd_sasl_fields(a->sasl_req, c->ip, f, &type);
	}
	c->async_wait = true;
	if (!c->srv->authc) {
		/* No auth process configured: a temporary failure, told after the
		 * action loop. */
		c->auth_fail_pending = true;
		return;
	}
	c->auth_req = authc_request(c->srv->authc, type, n, f, auth_reply_cb, c);
}

static void add_headers(struct net_conn *c, unsigned what)
{
	if (!c->msg || c->msg_failed)
		return;
	struct buf h;
	struct err e = { "" };
	buf_init(&h, 4096);
	net_missing_headers(&h, what, c->qid, c->srv->conf->primary_hostname);
	if (spool_msg_write(c->msg, buf_ptr(&h), buf_len(&h), &e) < 0) {
		log_event(LOG_LVL_ERR, "spool_error", "session=%s id=%s error=\"%s\"", c->sid, c->qid,
			  e.msg);
		c->msg_failed = true;
		c->msg_why = spool_msg_failure(c->msg);
	}
	buf_free(&h);
}

static void log_auth(struct net_conn *c, const struct smtp_action *a)
{
	struct buf *l = log_begin(LOG_LVL_INFO, "auth");
	log_kv(l, "session", "%s", c->sid);
	log_kv(l, "client", "%s", c->ip);
	log_kv_esc(l, "result", a->reply, a->reply_len);
	if (a->len)
		log_kv_esc(l, "user", a->data, a->len);
	log_end(l);
}

static enum smtp_commit_result commit_result(enum spool_fail why)
{
	return why == SPOOL_FAIL_NOSPACE ? SMTP_COMMIT_NOSPACE : SMTP_COMMIT_TEMPFAIL;
}

static void drain_actions(struct net_conn *c)
{
	const struct smtp_action *a;
	struct err e = { "" };
	while ((a = smtp_session_next_action(c->s)) != NULL) {
		switch (a->type) {
		case SMTP_ACT_STARTTLS:
			c->want_starttls = true;
			break;
		case SMTP_ACT_BODY_BEGIN:
			body_begin(c, a->env);
			break;
		case SMTP_ACT_BODY_DATA:
			if (c->msg && !c->msg_failed &&
			    spool_msg_write(c->msg, a->data, a->len, &e) < 0) {
				log_event(LOG_LVL_ERR, "spool_error", "session=%s id=%s error=\"%s\"",
					  c->sid, c->qid, e.msg);
				c->msg_failed = true;
				c->msg_why = spool_msg_failure(c->msg);
			}
			break;
		case SMTP_ACT_BODY_ABORT:
			body_abort(c);
			break;
		case SMTP_ACT_COMMIT:
			if (c->msg && !c->msg_failed) {
				c->commit_wait = true;
				c->commit_next = c->srv->commit_head;
				c->srv->commit_head = c;
				event_active(c->srv->commit_ev, 0, 0);
			} else {
				enum spool_fail why = c->msg_why;
				body_abort(c);
				c->commit_fail_pending = true;
				c->commit_fail_why = why;
			}
			break;
		case SMTP_ACT_LOG_REFUSED:
			log_refused(c, a);
			break;
		case SMTP_ACT_CLOSE:
			c->want_close = true;
			break;
		case SMTP_ACT_AUTH_REQUEST:
		case SMTP_ACT_LOOKUP:
			auth_request(c, a);
			break;
		case SMTP_ACT_LOG_AUTH:
			log_auth(c, a);
			break;
		case SMTP_ACT_LOG_ACL: {
			struct buf *l = log_begin(LOG_LVL_WARN, "acl_warn");
			log_kv(l, "session", "%s", c->sid);
			log_kv(l, "client", "%s", c->ip);
			log_kv_esc(l, "where", a->reply, a->reply_len);
			log_kv_esc(l, "msg", a->data, a->len);
			log_end(l);
			break;
		}
		case SMTP_ACT_ADD_HEADERS:
			add_headers(c, a->add_headers);
			break;
		}
	}
	if (c->auth_fail_pending) {
		c->auth_fail_pending = false;
		auth_reply_cb(c, NULL);
		return;
	}
	if (c->commit_fail_pending) {
		/* Told after the action loop so that the machine is never re-entered
		 * while we iterate its actions. */
		c->commit_fail_pending = false;
		smtp_session_commit_result(c->s, commit_result(c->commit_fail_why), NULL);
		drain_actions(c);
	}
}

static void set_events(struct net_conn *c, short want)
{
	if (c->ev_want == want)
		return;
	event_del(c->ev_io);
	event_assign(c->ev_io, c->srv->base, c->fd, want | EV_PERSIST, conn_io_cb, c);
	event_priority_set(c->ev_io, 0);
	c->ev_want = want;
}

static void arm_timer_full(struct net_conn *c)
{
	struct timeval tv = { (time_t)c->srv->conf->smtp_receive_timeout, 0 };
	event_add(c->ev_timer, &tv);
}

static void arm_timer_at(struct net_conn *c, int64_t deadline_ms)
{
	int64_t left = deadline_ms - time_mono_ms();
	if (left < 0)
		left = 0;
	struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000 };
	event_add(c->ev_timer, &tv);
}

/* Restarts the receive timer: a full smtp_receive_timeout, except while
 * the message text of a transaction runs against its smtp_data_min_rate
 * deadline, which a reply (say to a BDAT chunk) does not move. */
static void arm_timer(struct net_conn *c)
{
	if (c->body_deadline && !smtp_session_in_transaction(c->s))
		c->body_deadline = 0;
	if (c->body_deadline)
		arm_timer_at(c, c->body_deadline);
	else
		arm_timer_full(c);
}

/*
 * Restarts the receive timer for what a read brought.  Commands: a
 * completed line, or a good part of one; single bytes do not count, so a
 * client that dribbles a command must still finish it within
 * smtp_receive_timeout.  Message text (DATA, and every BDAT chunk of the
 * transaction with the commands between them): a deadline that every
 * byte moves on by 1/smtp_data_min_rate of a second, never further than
 * smtp_receive_timeout ahead, so that neither one short line nor one
 * tiny chunk per timeout keeps a session for ever (Postfix's
 * smtpd_min_data_rate).
 */
static void conn_progress(struct net_conn *c, const uint8_t *buf, size_t got)
{
	const struct conf *cf = c->srv->conf;
	if (c->body_deadline && !smtp_session_in_transaction(c->s))
		c->body_deadline = 0;
	if (cf->smtp_data_min_rate > 0 && (c->body_deadline || smtp_session_in_body(c->s))) {
		int64_t cap = time_mono_ms() + (int64_t)cf->smtp_receive_timeout * 1000;
		if (c->body_deadline == 0)
			c->body_deadline = cap; /* the text starts: a full timeout */
		c->body_deadline += (int64_t)(got * 1000 / cf->smtp_data_min_rate);
		if (c->body_deadline > cap)
			c->body_deadline = cap;
		arm_timer_at(c, c->body_deadline);
		return;
	}
	c->partial += got;
	if (c->partial >= NET_PROGRESS_BYTES || memchr(buf, '\n', got)) {
		c->partial = 0;
		arm_timer(c);
	}
}

/* After a read was fed: text that began within it ("DATA" and its first
 * lines, or "BDAT n" and its bytes, in one read) starts the deadline. */
static void conn_text_started(struct net_conn *c)
{
	const struct conf *cf = c->srv->conf;
	if (cf->smtp_data_min_rate == 0 || c->body_deadline || !smtp_session_in_transaction(c->s))
		return;
	if (smtp_session_in_body(c->s) || smtp_session_envelope(c->s)->size > 0)
		c->body_deadline = time_mono_ms() + (int64_t)cf->smtp_receive_timeout * 1000;
}

/* Writes pending output.  1 = all written, 0 = would block (want set),
 * -1 = connection broken.  *wrote tells whether any byte went out. */
static int flush_output(struct net_conn *c, short *want, bool *wrote)
{
	*wrote = false;
	for (;;) {
		const uint8_t *p;
		size_t n, put;
		const char *why;
		smtp_session_output(c->s, &p, &n);
		if (n == 0)
			return 1;
		int r = net_write(c->fd, c->tstate == T_TLS ? c->tls : NULL, p, n, &put, want, &why);
		if (r <= 0)
			return r;
		smtp_session_output_done(c->s, put);
		*wrote = true;
	}
}

static void tls_ready(struct net_conn *c)
{
	const char *ver = tls_conn_version(c->tls);
	const char *cip = tls_conn_cipher(c->tls);
	log_event(LOG_LVL_INFO, "tls", "session=%s version=%s cipher=%s", c->sid, ver, cip);
	smtp_session_tls_started(c->s, ver, cip);
	if (c->greet_after_tls) {
		c->greet_after_tls = false;
		smtp_session_start(c->s);
	}
	drain_actions(c);
}

/* Runs the connection as far as it can go without blocking, then registers
 * for the readiness it waits on.  Bounded so one client cannot starve
 * the others. */
static void conn_run(struct net_conn *c)
{
	if (c->in_run || c->closed)
		return;
	c->in_run = true;
	short want = 0;
	bool more = false; /* stopped by the round limit, not by the socket */
	for (int rounds = 0;; rounds++) {
		want = 0;
		if (rounds == 64) {
			more = true;
			break;
		}
		if (c->tstate == T_HANDSHAKE) {
			enum tls_io r = tls_handshake(c->tls);
			if (r == TLS_IO_OK) {
				c->tstate = T_TLS;
				tls_ready(c);
				continue;
			}
			if (r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE) {
				want = r == TLS_IO_WANT_READ ? EV_READ : EV_WRITE;
				break;
			}
			log_event(LOG_LVL_INFO, "tls_failed", "session=%s error=\"%s\"", c->sid,
				  tls_conn_error(c->tls));
			c->in_run = false;
			conn_close(c, "tls failed");
			return;
		}
		bool wrote = false;
		int f = flush_output(c, &want, &wrote);
		if (f < 0) {
			c->in_run = false;
			conn_close(c, "write error");
			return;
		}
		if (wrote)
			arm_timer(c); /* a client reading its replies is not idle */
		if (f == 0)
			break;
		if (c->want_close) {
			c->in_run = false;
			conn_close(c, NULL);
			return;
		}
		if (c->want_starttls) {
			c->want_starttls = false;
			c->tls = c->l->tls ? tls_conn_new(c->l->tls, c->fd) : NULL;
			if (!c->tls) {
				c->in_run = false;
				conn_close(c, "tls setup failed");
				return;
			}
			c->tstate = T_HANDSHAKE;
			continue;
		}
		if (c->commit_wait || c->async_wait)
			break;
		if (wrote || !smtp_session_wants_input(c->s)) {
			/* The machine stops on a full output buffer with complete
			 * commands still buffered; now that the output drained, let it
			 * go on, or a pipelining client that waits for its replies
			 * would wait forever. */
			size_t pending;
			const uint8_t *p;
			smtp_session_feed(c->s, NULL, 0);
			drain_actions(c);
			smtp_session_output(c->s, &p, &pending);
			if (pending > 0 || c->want_close || c->want_starttls || c->commit_wait ||
			    c->async_wait)
				continue;
			if (!smtp_session_wants_input(c->s)) {
				if (smtp_session_closing(c->s)) {
					/* Nothing left to say and nothing to read. */
					c->in_run = false;
					conn_close(c, NULL);
					return;
				}
				break;
			}
		}
		uint8_t *buf = buf_reserve(&c->srv->rbuf, NET_READ_CHUNK);
		if (!buf) {
			c->in_run = false;
			conn_close(c, "out of memory");
			return;
		}
		size_t got = 0;
		if (c->tstate == T_TLS) {
			enum tls_io r = tls_read(c->tls, buf, NET_READ_CHUNK, &got);
			if (r == TLS_IO_WANT_READ) {
				want = EV_READ;
				break;
			}
			if (r == TLS_IO_WANT_WRITE) {
				want = EV_WRITE;
				break;
			}
			if (r == TLS_IO_EOF || r == TLS_IO_ERROR) {
				smtp_session_eof(c->s);
				drain_actions(c);
				c->in_run = false;
				conn_close(c, r == TLS_IO_EOF ? NULL : tls_conn_error(c->tls));
				return;
			}
		} else {
			ssize_t r = recv(c->fd, buf, NET_READ_CHUNK, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				want = EV_READ;
				break;
			}
			if (r <= 0) {
				smtp_session_eof(c->s);
				drain_actions(c);
				c->in_run = false;
				conn_close(c, r < 0 ? strerror(errno) : NULL);
				return;
			}
			got = (size_t)r;
		}
		conn_progress(c, buf, got);
		smtp_session_feed(c->s, buf, got);
		conn_text_started(c);
		drain_actions(c);
	}
	if (want == 0 && !c->commit_wait && !c->async_wait)
		want = EV_READ;
	if (want == 0) {
		event_del(c->ev_io);
		c->ev_want = 0;
	} else {
		set_events(c, want);
		event_add(c->ev_io, NULL);
	}
	if (more) {
		/* Work may be left where no readiness event will report it:
		 * replies not yet written, commands buffered in the machine, or
		 * records already decrypted inside OpenSSL (the socket may stay
		 * silent).  Come back on the next loop round. */
		event_active(c->ev_io, EV_READ, 0);
	}
	c->in_run = false;
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_run(arg);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_conn *c = arg;
	if (c->commit_wait || c->async_wait) {
		/* Our own wait, not the client's: the auth client has its own
		 * timeout and the commit always completes. */
		arm_timer_full(c);
		return;
	}
	if (c->tstate == T_HANDSHAKE) {
		log_event(LOG_LVL_INFO, "timeout", "session=%s", c->sid);
		conn_close(c, "tls handshake timeout");
		return;
	}
	if (smtp_session_closing(c->s)) {
		/* Its last reply (a 421, a 221) has not gone out in a whole
		 * timeout: a client that stops reading must not hold the slot. */
		conn_close(c, "timeout writing to client");
		return;
	}
	log_event(LOG_LVL_INFO, "timeout", "session=%s", c->sid);
	smtp_session_timeout(c->s);
	arm_timer_full(c); /* bounds the wait for the 421 to be written */
	drain_actions(c);
	conn_run(c);
}

/*
 * Lingering close.  close() on a socket with unread input makes the kernel
 * send a reset, and a reset can destroy the last reply (a 421 after too
 * many errors, the 221 to a pipelined QUIT) before the client reads it.
 * So the write side is shut first, and what the client still sends is
 * read and dropped until it closes too, for at most NET_LINGER_MS and
 * NET_LINGER_BYTES.  The session (and its slot) is already gone by then.
 */
#define NET_LINGER_MS 2000
#define NET_LINGER_BYTES (256 * 1024)

struct net_linger {
	struct event *ev;
	int fd;
	size_t drained;
};

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_linger *lg = arg;
	if (what & EV_READ) {
		char b[4096];
		for (int k = 0; k < 16; k++) {
			ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
			if (n > 0) {
				lg->drained += (size_t)n;
				if (lg->drained < NET_LINGER_BYTES)
					continue;
			} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				return; /* more later */
			}
			break; /* EOF, error, or enough */
		}
	}
	event_free(lg->ev);
	close(lg->fd);
	free(lg);
}

static void linger_close(struct net_server *srv, int fd)
{
	struct net_linger *lg = srv->stopping ? NULL : calloc(1, sizeof(*lg));
	if (!lg || shutdown(fd, SHUT_WR) < 0) {
		free(lg);
		close(fd);
		return;
	}
	lg->fd = fd;
	lg->ev = event_new(srv->base, fd, EV_READ | EV_PERSIST, linger_cb, lg);
	struct timeval tv = { NET_LINGER_MS / 1000, (NET_LINGER_MS % 1000) * 1000 };
	if (!lg->ev || event_add(lg->ev, &tv) < 0) {
		if (lg->ev)
			event_free(lg->ev);
		free(lg);
		close(fd);
	}
}

static void conn_free(struct net_conn *c)
{
	struct net_server *srv = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->auth_req && srv->authc)
		authc_cancel(srv->authc, c->auth_req); /* its answer has nobody to go to */
	event_free(c->ev_io);
	event_free(c->ev_timer);
	tls_conn_free(c->tls);
	smtp_session_free(c->s);
	linger_close(srv, c->fd);
	if (c->host_counted)
		net_hosts_release(srv->hosts, srv->my_slot, c->host_bucket);
	free(c);
	__atomic_sub_fetch(&srv->slots[srv->my_slot], 1, __ATOMIC_RELAXED);
	srv->n_conns--;
	if ((srv->stopping || srv->retiring) && srv->n_conns == 0 && srv->on_empty)
		srv->on_empty(srv);
}

static void conn_close(struct net_conn *c, const char *why)
{
	if (c->closed)
		return;
	c->closed = true;
	body_abort(c);
	if (why)
		log_event(LOG_LVL_INFO, "disconnect", "session=%s reason=\"%s\"", c->sid, why);
	else
		log_event(LOG_LVL_INFO, "disconnect", "session=%s", c->sid);
	if (c->tstate == T_TLS)
		tls_conn_shutdown(c->tls);
	if (c->commit_wait)
		return; /* waiting for its commit: freed by commit_finish, which
			 * also takes back a message the thread had already
			 * committed (never acknowledged) */
	conn_free(c);
}

void net_log_queued(const char *sid, const char *qid, const struct smtp_envelope *env,
		    enum smtp_role role, const char *local_user)
{
	struct buf *l = log_begin(LOG_LVL_INFO, "queued");
	log_kv(l, "session", "%s", sid);
	log_kv(l, "id", "%s", qid);
	log_kv(l, "size", "%llu", (unsigned long long)env->size);
	log_kv_esc(l, "from", env->sender ? env->sender : "", env->sender ? strlen(env->sender) : 0);
	log_kv(l, "nrcpt", "%zu", env->n_rcpts);
	struct buf to;
	buf_init(&to, 1 << 20);
	for (size_t r = 0; r < env->n_rcpts; r++) {
		if (r)
			buf_puts(&to, ",");
		buf_puts(&to, env->rcpts[r].addr);
	}
	log_kv_esc(l, "to", buf_ptr(&to), buf_len(&to));
	buf_free(&to);
	log_kv(l, "role", "%s", smtp_role_name(role));
	if (env->tls_version)
		log_kv(l, "tls", "%s", env->tls_version);
	if (local_user)
		log_kv(l, "user", "%s", local_user);
	log_end(l);
}

/* A group commit: the sessions (cs), their messages (ms) and outcomes. */
struct commit_job {
	struct net_conn **cs;
	struct spool_msg **ms;
	bool *ok;
	enum spool_fail *why; /* per message, beside ok */
	size_t *at; /* cs[i]'s index in ms, or n */
	size_t n, nm;
};

static void commit_job_free(struct commit_job *j)
{
	free(j->cs);
	free(j->ms);
	free(j->ok);
	free(j->why);
	free(j->at);
	free(j);
}

/* Tells each session of a finished batch its outcome. */
static void commit_finish(struct net_server *srv, struct commit_job *j, const struct err *e)
{
	for (size_t i = 0; i < j->n; i++) {
		struct net_conn *c = j->cs[i];
		bool done = j->at[i] < j->n && j->ok[j->at[i]];
		enum spool_fail why = j->at[i] < j->n ? j->why[j->at[i]] : SPOOL_FAIL_OTHER;
		c->commit_wait = false;
		if (c->closed) {
			/* Closed (shutdown timeout, write error) while the thread had
			 * its message: committed but never acknowledged.  The client
			 * will send it again, so it is taken back out; left in
			 * queue/ with nobody told, it would also wait for the
			 * runner's next start. */
			if (done) {
				struct err re = { "" };
				if (spool_remove(srv->spool, c->qid, false, &re) < 0)
					log_event(LOG_LVL_ERR, "queue_remove_failed",
						  "session=%s id=%s error=\"%s\"", c->sid, c->qid,
						  re.msg);
				log_event(LOG_LVL_INFO, "discarded",
					  "session=%s id=%s reason=\"session closed before its reply\"",
					  c->sid, c->qid);
			}
			conn_free(c);
			continue;
		}
		if (done) {
			/* The envelope is still the session's until commit_result. */
			net_log_queued(c->sid, c->qid, smtp_session_envelope(c->s),
				       c->l->policy.role, c->client.local_user);
			/* Wake the queue runner.  A lost datagram (runner restarting,
			 * queue full) only delays: the runner scans the spool when
			 * it starts. */
			if (srv->notify_fd >= 0)
				(void)!send(srv->notify_fd, c->qid, strlen(c->qid),
					    MSG_DONTWAIT | MSG_NOSIGNAL);
		} else {
			log_event(LOG_LVL_ERR, "commit_failed", "session=%s id=%s nospace=%s error=\"%s\"",
				  c->sid, c->qid, why == SPOOL_FAIL_NOSPACE ? "yes" : "no", e->msg);
		}
		/* 250 only now: spool_commit_batch said this message is durable. */
		smtp_session_commit_result(c->s, done ? SMTP_COMMIT_OK : commit_result(why), c->qid);
		drain_actions(c);
		conn_run(c);
	}
	commit_job_free(j);
}

static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	if (srv->commit_inflight)
		return; /* commit_done_cb starts the next batch */
	size_t n = 0;
	for (struct net_conn *c = srv->commit_head; c; c = c->commit_next)
		n++;
	if (n == 0)
		return;
	struct commit_job *j = xcalloc(1, sizeof(*j));
	j->cs = xcalloc(n, sizeof(*j->cs));
	j->ms = xcalloc(n, sizeof(*j->ms));
	j->ok = xcalloc(n, sizeof(*j->ok));
	j->why = xcalloc(n, sizeof(*j->why));
	j->at = xcalloc(n, sizeof(*j->at));
	j->n = n;
	size_t i = 0;
	for (struct net_conn *c = srv->commit_head; c; c = c->commit_next, i++) {
		j->cs[i] = c;
		j->at[i] = n;
		/* A session closed while waiting had its message discarded. */
		if (c->msg) {
			j->at[i] = j->nm;
			j->ms[j->nm++] = c->msg;
		}
		c->msg = NULL;
	}
	srv->commit_head = NULL;
	/* With the spool's thread the loop goes on serving sessions while the
	 * batch syncs; the sessions that end their data meanwhile wait on
	 * commit_head for the next batch. */
	if (j->nm > 0 && spool_commit_submit(srv->spool, j->ms, j->nm, j->ok, j->why)) {
		srv->commit_inflight = j;
		return;
	}
	struct err e = { "" };
	if (j->nm > 0)
		spool_commit_batch(srv->spool, j->ms, j->nm, j->ok, j->why, &e);
	commit_finish(srv, j, &e);
}

static void commit_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	size_t committed = 0;
	struct err e = { "" };
	if (!srv->commit_inflight || !spool_commit_collect(srv->spool, &committed, &e))
		return;
	struct commit_job *j = srv->commit_inflight;
	srv->commit_inflight = NULL;
	commit_finish(srv, j, &e);
	commit_cb(-1, 0, srv);
}

/* SCRAM server nonce: 18 random bytes, base64 (never contains ','). */
static void make_nonce(void *ctx, struct buf *out)
{
	uint8_t r[18];
	if (rand_bytes(r, sizeof(r)) < 0) {
		/* The kernel's generator does not fail once booted; be safe. */
		int64_t t = time_now_us();
		memset(r, 0, sizeof(r));
		memcpy(r, &t, sizeof(t));
	}
	b64_encode(r, sizeof(r), out);
}

/* RFC 1870 §6: a declared SIZE larger than the spool's free space is
 * refused at MAIL (452 4.3.1).  One fstatvfs, only for a MAIL with SIZE=;
 * when it cannot tell, the message is tried. */
static bool conn_space_ok(void *ctx, uint64_t size)
{
	struct net_conn *c = ctx;
	uint64_t avail = 0;
	if (!c->srv->spool || spool_free_space(c->srv->spool, &avail, NULL) < 0)
		return true;
	return size <= avail;
}

static void format_ip(const struct sockaddr *sa, char *out, size_t n)
{
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)n);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)n);
	else
		snprintf(out, n, "unknown");
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct net_listener *l = arg;
	struct net_server *srv = l->server;
	char ip[INET6_ADDRSTRLEN];
	format_ip(sa, ip, sizeof(ip));
	/* Take the slot first, then count: two workers that accept the last
	 * free slot at the same instant each see the other's increment (the
	 * fence orders each one's add before its reads), so at most one of
	 * them keeps it.  Counting first let both through. */
	__atomic_add_fetch(&srv->slots[srv->my_slot], 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (srv->stopping || srv->retiring || total_sessions(srv) > srv->conf->smtp_accept_max) {
		__atomic_sub_fetch(&srv->slots[srv->my_slot], 1, __ATOMIC_RELAXED);
		log_event(LOG_LVL_WARN, "refused_connection",
			  "client=%s port=%u reason=smtp_accept_max limit=%u", ip, l->port,
			  srv->conf->smtp_accept_max);
		if (!l->policy.tls_on_connect) {
			struct buf m;
			buf_init(&m, 1024);
			buf_printf(&m, "421 4.3.2 %s Too many connections, try again later\r\n",
				   srv->conf->primary_hostname);
			(void)!send(fd, buf_ptr(&m), buf_len(&m), MSG_NOSIGNAL | MSG_DONTWAIT);
			buf_free(&m);
		}
		close(fd);
		return;
	}
	uint32_t hb[NET_HOST_ROWS] = { 0 };
	bool host_counted = false;
	unsigned per_host = srv->conf->smtp_accept_max_per_host;
	if (per_host && srv->hosts && !l->local && net_hosts_key(srv->hosts, sa, hb)) {
		size_t used = __atomic_load_n(&srv->slots[srv->n_slots], __ATOMIC_ACQUIRE);
		if (!net_hosts_take(srv->hosts, srv->my_slot, used, hb, per_host)) {
			__atomic_sub_fetch(&srv->slots[srv->my_slot], 1, __ATOMIC_RELAXED);
			log_event(LOG_LVL_WARN, "refused_connection",
				  "client=%s port=%u reason=smtp_accept_max_per_host limit=%u", ip,
				  l->port, per_host);
			if (!l->policy.tls_on_connect) {
				struct buf m;
				buf_init(&m, 1024);
				buf_printf(&m,
					   "421 4.7.0 %s Too many connections from your address, "
					   "try again later\r\n",
					   srv->conf->primary_hostname);
				(void)!send(fd, buf_ptr(&m), buf_len(&m), MSG_NOSIGNAL | MSG_DONTWAIT);
				buf_free(&m);
			}
			close(fd);
			return;
		}
		host_counted = true;
	}
	evutil_make_socket_nonblocking(fd);
	int one = 1;
	if (!l->local)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct net_conn *c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->l = l;
	c->fd = fd;
	c->host_counted = host_counted;
	memcpy(c->host_bucket, hb, sizeof(hb));
	snprintf(c->ip, sizeof(c->ip), "%s", ip);
	snprintf(c->sid, sizeof(c->sid), "%lx.%llx", (unsigned long)getpid(),
		 (unsigned long long)++srv->next_session);
	c->client.session_id = c->sid;
	c->client.ip = c->ip;
	c->client.rdns = NULL;
	c->client.local_port = l->port;
	if (l->local) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
			__atomic_sub_fetch(&srv->slots[srv->my_slot], 1, __ATOMIC_RELAXED);
			close(fd);
			free(c);
			return;
		}
		snprintf(c->ip, sizeof(c->ip), "local");
		snprintf(c->luser, sizeof(c->luser), "uid:%u", (unsigned)cred.uid);
		c->client.local_user = c->luser;
	}
	c->client.make_nonce = make_nonce;
	c->s = smtp_session_new(&l->policy, &c->client);
	smtp_session_set_space_check(c->s, conn_space_ok, c);
	c->ev_io = event_new(srv->base, fd, EV_READ | EV_PERSIST, conn_io_cb, c);
	c->ev_want = EV_READ;
	c->ev_timer = evtimer_new(srv->base, conn_timer_cb, c);
	event_priority_set(c->ev_io, 0);
	event_priority_set(c->ev_timer, 0);
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->n_conns++; /* its slot was taken above */
	log_event(LOG_LVL_INFO, "connect", "session=%s client=%s port=%u role=%s tls=%s", c->sid,
		  c->ip, l->port, smtp_role_name(l->policy.role),
		  l->policy.tls_on_connect ? "on_connect" : "no");
	arm_timer(c);
	if (l->policy.tls_on_connect) {
		c->tls = l->tls ? tls_conn_new(l->tls, fd) : NULL;
		if (!c->tls) {
			conn_close(c, "tls setup failed");
			return;
		}
		c->tstate = T_HANDSHAKE;
		c->greet_after_tls = true;
	} else {
		smtp_session_start(c->s);
		drain_actions(c);
	}
	conn_run(c);
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	/* Sessions that did not finish in shutdown_timeout are closed; a
	 * message still being received is discarded, never acknowledged. */
	struct net_conn *c = srv->conns;
	while (c) {
		struct net_conn *next = c->next;
		if (!c->closed && !c->commit_wait && c->tstate != T_HANDSHAKE) {
			/* RFC 5321 3.8: a server shut down by force SHOULD send a
			 * 421 first, also in the middle of a message.  Best
			 * effort: what the socket takes now. */
			short want;
			bool wrote;
			smtp_session_shutdown_final(c->s);
			drain_actions(c);
			(void)flush_output(c, &want, &wrote);
		}
		/* A session waiting for its commit is only marked closed here
		 * (its message discarded) and freed by commit_finish. */
		conn_close(c, "shutdown timeout");
		c = next;
	}
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_listener *l = arg;
	if (l->ev && !l->server->stopping && !l->server->retiring)
		evconnlistener_enable(l->ev);
}

/* accept() failed for a reason that does not go away by itself (out of
 * descriptors or memory).  The listening socket stays readable, so without
 * a pause the loop would spin on it: stop accepting for a second. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct net_listener *l = arg;
	int er = EVUTIL_SOCKET_ERROR();
	log_event(LOG_LVL_ERR, "accept_failed", "port=%u error=\"%s\"", l->port,
		  evutil_socket_error_to_string(er));
	evconnlistener_disable(lev);
	struct timeval tv = { 1, 0 };
	if (event_base_once(l->server->base, -1, EV_TIMEOUT, accept_resume_cb, l, &tv) < 0)
		evconnlistener_enable(lev);
}

int net_server_start(struct net_server *srv, struct err *e)
{
	buf_init(&srv->rbuf, 4 * NET_READ_CHUNK);
	/* Same priority as the sessions: a lower one would starve under load
	 * (libevent runs a lower priority only when no higher one is active).
	 * Activated from session callbacks, it still runs after every session
	 * made ready in the same loop round, so they share one commit. */
	srv->commit_ev = event_new(srv->base, -1, 0, commit_cb, srv);
	if (spool_commit_fd(srv->spool) >= 0) {
		srv->commit_done_ev = event_new(srv->base, spool_commit_fd(srv->spool),
						EV_READ | EV_PERSIST, commit_done_cb, srv);
		event_add(srv->commit_done_ev, NULL);
	}
	for (size_t i = 0; i < srv->n_listeners; i++) {
		struct net_listener *l = &srv->listeners[i];
		l->server = srv;
		/* 0: the master already called listen() with smtp_connect_backlog; -1
		 * would make libevent call it again with 128. */
		l->ev = evconnlistener_new(srv->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE, 0, l->fd);
		if (!l->ev)
			return err_set(e, "cannot listen on port %u", l->port);
		evconnlistener_set_error_cb(l->ev, accept_error_cb);
	}
	return 0;
}

static void close_listeners(struct net_server *srv)
{
	for (size_t i = 0; i < srv->n_listeners; i++) {
		if (srv->listeners[i].ev) {
			evconnlistener_free(srv->listeners[i].ev);
			srv->listeners[i].ev = NULL;
		}
	}
}

static void retire_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *srv = arg;
	log_event(LOG_LVL_INFO, "worker_stopping", "sessions=%zu reason=retired", srv->n_conns);
	net_server_stop(srv);
}

void net_server_retire(struct net_server *srv)
{
	if (srv->stopping || srv->retiring)
		return;
	srv->retiring = true;
	close_listeners(srv);
	if (srv->n_conns == 0) {
		if (srv->on_empty)
			srv->on_empty(srv);
		return;
	}
	/* Sessions that outlast shutdown_timeout are stopped as on SIGTERM. */
	srv->stop_timer = evtimer_new(srv->base, retire_timer_cb, srv);
	struct timeval tv = { (time_t)srv->conf->shutdown_timeout, 0 };
	if (srv->stop_timer)
		evtimer_add(srv->stop_timer, &tv);
}

void net_server_stop(struct net_server *srv)
{
	if (srv->stopping)
		return;
	srv->stopping = true;
	close_listeners(srv);
	if (srv->n_conns == 0) {
		if (srv->on_empty)
			srv->on_empty(srv);
		return;
	}
	struct net_conn *c = srv->conns;
	while (c) {
		struct net_conn *next = c->next;
		if (c->tstate == T_HANDSHAKE) {
			conn_close(c, "shutdown");
		} else {
			smtp_session_shutdown(c->s);
			drain_actions(c);
			conn_run(c);
		}
		c = next;
	}
	if (srv->n_conns > 0) {
		/* After a retirement the timer exists (it may be the one that
		 * brought us here, fired and no longer pending). */
		if (!srv->stop_timer) {
			srv->stop_timer = evtimer_new(srv->base, stop_timer_cb, srv);
		} else {
			evtimer_del(srv->stop_timer);
			evtimer_assign(srv->stop_timer, srv->base, stop_timer_cb, srv);
		}
		struct timeval tv = { (time_t)srv->conf->shutdown_timeout, 0 };
		evtimer_add(srv->stop_timer, &tv);
	}
}

void net_server_free(struct net_server *srv)
{
	if (srv->commit_inflight) {
		/* Durable or not, its sessions are closed below without a reply. */
		size_t committed;
		struct err e = { "" };
		spool_commit_wait(srv->spool);
		(void)spool_commit_collect(srv->spool, &committed, &e);
		commit_job_free(srv->commit_inflight);
		srv->commit_inflight = NULL;
	}
	while (srv->conns) {
		struct net_conn *c = srv->conns;
		c->commit_wait = false;
		c->closed = true;
		body_abort(c);
		conn_free(c);
	}
	for (size_t i = 0; i < srv->n_listeners; i++)
		if (srv->listeners[i].ev)
			evconnlistener_free(srv->listeners[i].ev);
	if (srv->commit_ev)
		event_free(srv->commit_ev);
	if (srv->commit_done_ev)
		event_free(srv->commit_done_ev);
	if (srv->stop_timer)
		event_free(srv->stop_timer);
	buf_free(&srv->rbuf);
}
