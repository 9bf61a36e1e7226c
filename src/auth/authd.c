/*
 * The auth process: the only process that reads credentials.  Workers
 * connect to an abstract unix socket (SOCK_SEQPACKET: one message per
 * datagram, so no framing to get wrong) and ask questions; answers carry
 * results, never hashes.
 *
 * Checking a password is slow on purpose (yescrypt, bcrypt, PBKDF2) and
 * runs here, one request at a time; the brute-force delay, on the other
 * hand, is a timer: a delayed answer never holds up another worker's
 * request.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "../conf/conf.h"
#include "backend.h"

/* Memory bound of the penalty table (entries, each an address or user). */
#define AUTHD_PENALTY_ENTRIES 100000
/* Iterations announced for users without SCRAM keys (Dovecot's default). */
#define AUTHD_FAKE_ITERATIONS 4096
/* Replies queued for a worker that does not read before it is dropped. */
#define AUTHD_MAX_QUEUED 4096
/* Failed checks are answered no sooner than the slowest recent check
 * (see authd_floor): measured over windows of this length... */
#define AUTHD_FLOOR_WINDOW_MS 60000
/* ...and never more than this, so one check slowed by a loaded machine
 * cannot hold every failure up for long. */
#define AUTHD_FLOOR_CAP_US 1000000
/* How long a stopping auth process waits for its successor to take the
 * penalty table (per message). */
#define AUTHD_HANDOFF_TIMEOUT_MS 2000

struct authd_out {
	struct authd_out *next;
	size_t n;
	uint8_t data[];
};

struct authd_pending;
struct plain_job;

struct authd_conn {
	struct authd *d;
	int fd;
	struct event *ev_read, *ev_write;
	struct authd_out *out_head, *out_tail;
	size_t n_out;
	struct authd_pending *pending;
	struct plain_job *jobs; /* PLAIN checks waiting for a remote answer */
	struct authd_conn *next;
};

/* A reply held back by the penalty delay. */
struct authd_pending {
	struct authd_conn *conn;
	struct event *timer;
	struct buf msg;
	struct authd_pending *next;
};

/*
 * The time a failed check is answered no sooner than: the slowest local
 * password check of the current and the previous window.  Checks cost what
 * their scheme costs (SHA512-CRYPT a few ms, yescrypt or PBKDF2 more) and
 * an unknown user costs the dummy hash; padding every failure up to the
 * slowest keeps the time from telling which case it was.
 */
struct authd_floor {
	int64_t win_start_ms;
	int64_t cur_us, prev_us;
};

struct authd {
	const struct conf *c;
	struct event_base *base;
	struct auth_backend *b;
	struct auth_dir *dir;
	struct penalty *pen;
	uid_t peer_uid;
	uint8_t secret[32];
	char *dummy_hash; /* checked for unknown users, so they cost the same time */
	struct authd_floor floor;
	struct authd_conn *conns;
	uint8_t *rbuf;
};

/* ---- sockets ----------------------------------------------------------- */

static int authd_addr(const char *tag, struct sockaddr_un *sa, socklen_t *len, struct err *e)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	static const char prefix[] = "sluice-auth.";
	size_t tl = strlen(tag), pl = sizeof(prefix) - 1;
	if (1 + pl + tl > sizeof(sa->sun_path))
		return err_set(e, "auth socket tag too long");
	/* Abstract namespace: leading NUL, no file to clean up or chown. */
	memcpy(sa->sun_path + 1, prefix, pl);
	memcpy(sa->sun_path + 1 + pl, tag, tl);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + pl + tl);
	return 0;
}

int authd_listen(const char *tag, struct err *e)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (authd_addr(tag, &sa, &len, e) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set(e, "auth socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 128) < 0) {
		err_set(e, "auth socket sluice-auth.%s: %s", tag, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int authd_connect(const char *tag, struct err *e)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (authd_addr(tag, &sa, &len, e) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set(e, "auth socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, len) < 0) {
		/* Unix sockets connect at once or fail (EAGAIN: backlog full). */
		err_set(e, "connect to auth process sluice-auth.%s: %s", tag, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- connections ------------------------------------------------------- */

static void detach_jobs(struct authd_conn *k);

static void authd_conn_close(struct authd_conn *k)
{
	struct authd *d = k->d;
	for (struct authd_conn **pp = &d->conns; *pp; pp = &(*pp)->next) {
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	}
	detach_jobs(k);
	while (k->pending) {
		struct authd_pending *p = k->pending;
		k->pending = p->next;
		event_free(p->timer);
		buf_free(&p->msg);
		free(p);
	}
	while (k->out_head) {
		struct authd_out *o = k->out_head;
		k->out_head = o->next;
		free(o);
	}
	event_free(k->ev_read);
	event_free(k->ev_write);
	close(k->fd);
	free(k);
}

/* Sends queued replies; -1 if the connection had to be closed. */
static int authd_flush(struct authd_conn *k)
{
	while (k->out_head) {
		struct authd_out *o = k->out_head;
		ssize_t w = send(k->fd, o->data, o->n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				event_add(k->ev_write, NULL);
				return 0;
			}
			log_event(LOG_LVL_WARN, "authd_peer_error", "fd=%d reason=\"send: %s\"", k->fd,
				  strerror(errno));
			authd_conn_close(k);
			return -1;
		}
		k->out_head = o->next;
		if (!k->out_head)
			k->out_tail = NULL;
		k->n_out--;
		free(o);
	}
	return 0;
}

static int authd_send(struct authd_conn *k, const struct buf *msg)
{
	if (k->n_out >= AUTHD_MAX_QUEUED) {
		log_event(LOG_LVL_WARN, "authd_peer_error", "fd=%d reason=\"peer does not read\"",
			  k->fd);
		authd_conn_close(k);
		return -1;
	}
	struct authd_out *o = xmalloc(sizeof(*o) + buf_len(msg));
	o->next = NULL;
	o->n = buf_len(msg);
	memcpy(o->data, buf_ptr(msg), o->n);
	if (k->out_tail)
		k->out_tail->next = o;
	else
		k->out_head = o;
	k->out_tail = o;
	k->n_out++;
	return authd_flush(k);
}

static void authd_on_write(evutil_socket_t fd, short what, void *arg)
{
	(void)authd_flush(arg);
}

static void authd_on_delay(evutil_socket_t fd, short what, void *arg)
{
	struct authd_pending *p = arg;
	struct authd_conn *k = p->conn;
	for (struct authd_pending **pp = &k->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	struct buf msg = p->msg;
	event_free(p->timer);
	free(p);
	(void)authd_send(k, &msg);
	buf_free(&msg);
}

/* ---- replies ----------------------------------------------------------- */

struct authd_reply {
	size_t n;
	struct authd_field f[AUTHD_MAX_FIELDS];
	char iter[16];
};

static void reply_add(struct authd_reply *r, const void *p, size_t n)
{
	r->f[r->n].p = n ? p : (const uint8_t *)"";
	r->f[r->n].n = n;
	r->n++;
}

static void reply_str(struct authd_reply *r, const char *s)
{
	reply_add(r, s, strlen(s));
}

/* Sends now, or after delay_us.  -1 if the connection was closed. */
static int authd_reply(struct authd_conn *k, uint32_t id, const struct authd_reply *r,
		       int64_t delay_us)
{
	struct buf msg;
	buf_init(&msg, AUTHD_MAX_MSG);
	if (authd_encode(&msg, AUTHD_REPLY, id, r->n, r->f) < 0) {
		buf_free(&msg);
		log_event(LOG_LVL_ERR, "authd_error", "reason=\"cannot encode a reply\"");
		authd_conn_close(k);
		return -1;
	}
	if (delay_us <= 0) {
		int rc = authd_send(k, &msg);
		buf_free(&msg);
		return rc;
	}
	struct authd_pending *p = xcalloc(1, sizeof(*p));
	p->conn = k;
	p->msg = msg;
	p->timer = evtimer_new(k->d->base, authd_on_delay, p);
	struct timeval tv = { .tv_sec = (time_t)(delay_us / 1000000),
			      .tv_usec = (suseconds_t)(delay_us % 1000000) };
	p->next = k->pending;
	k->pending = p;
	evtimer_add(p->timer, &tv);
	return 0;
}

/* ---- the time floor of failures -------------------------------------- */

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void floor_rotate(struct authd_floor *f, int64_t now_us)
{
	int64_t now_ms = now_us / 1000;
	if (now_ms - f->win_start_ms < AUTHD_FLOOR_WINDOW_MS)
		return;
	/* A window without checks keeps the last measure: an idle spell
	 * must not leave the next failures unpadded. */
	if (f->cur_us)
		f->prev_us = f->cur_us;
	f->cur_us = 0;
	f->win_start_ms = now_ms;
}

/* A password check (or the dummy one) took us. */
static void floor_note(struct authd_floor *f, int64_t us)
{
	floor_rotate(f, mono_us());
	if (us > AUTHD_FLOOR_CAP_US)
		us = AUTHD_FLOOR_CAP_US;
	if (us > f->cur_us)
		f->cur_us = us;
}

/* What is left to wait for a failure whose request came at start_us. */
static int64_t floor_pad(struct authd_floor *f, int64_t start_us)
{
	int64_t now = mono_us();
	floor_rotate(f, now);
	int64_t fl = f->cur_us > f->prev_us ? f->cur_us : f->prev_us;
	return fl > now - start_us ? fl - (now - start_us) : 0;
}

/* The answer delay of a failure: the penalty's, after the floor. */
static int64_t fail_delay_us(struct authd *d, int64_t start_us, unsigned penalty_ms)
{
	return floor_pad(&d->floor, start_us) + (int64_t)penalty_ms * 1000;
}

/* ---- requests ----------------------------------------------------------- */

/* A field as a C string; NULL if it holds a NUL byte or exceeds max. */
static char *field_str(const struct authd_field *f, size_t max)
{
	if (f->n > max || (f->n && memchr(f->p, '\0', f->n)))
		return NULL;
	return str_ndup(f->n ? (const char *)f->p : "", f->n);
}

struct authd_keys {
	char *ip;   /* "ip:<addr>" */
	char *user; /* "user:<name, lowercased>" */
};

static void keys_make(struct authd_keys *k, const char *ip, const char *user)
{
	struct buf b;
	buf_init(&b, 2 * AUTH_NAME_MAX);
	buf_printf(&b, "ip:%s", ip);
	k->ip = str_dup(buf_cstr(&b));
	buf_reset(&b);
	buf_printf(&b, "user:%s", user);
	k->user = str_dup(buf_cstr(&b));
	str_lower(k->user);
	buf_free(&b);
}

/* The keys of a login attempt, the user's under the name the store knows
 * it by: "dave", "dave@example.org" and "Dave@example.org." may all log
 * in as one user, and counted apart they would multiply the guesses the
 * per-user count allows.  An unknown name counts as typed, lowercased,
 * without a trailing dot. */
static void keys_for(struct authd *d, struct authd_keys *k, const char *ip,
		     const char *user)
{
	struct buf canon, stored;
	buf_init(&canon, AUTH_NAME_MAX);
	buf_init(&stored, 64 * 1024);
	struct err e = { "" };
	const char *name = user;
	if (d->dir && d->b && d->b->lookup && !d->b->verify_plain && *user &&
	    auth_dir_user(d->dir, user, &stored, &canon, &e) == AUTH_LOOKUP_FOUND &&
	    buf_len(&canon) > 0)
		name = buf_cstr(&canon);
	char *n = str_dup(name);
	size_t len = strlen(n);
	if (len > 1 && n[len - 1] == '.')
		n[len - 1] = 0;
	keys_make(k, ip, n);
	free(n);
	if (stored.data)
		explicit_bzero(stored.data, stored.cap);
	buf_free(&stored);
	buf_free(&canon);
}

static void keys_free(struct authd_keys *k)
{
	free(k->ip);
	free(k->user);
}

/* AUTH_BLOCKED, or AUTH_OK with the delay owed to the worse of the two. */
static enum auth_result keys_check(struct authd *d, const struct authd_keys *k, unsigned *delay)
{
	int64_t now = time_now_us() / 1000000;
	unsigned d1 = 0, d2 = 0;
	enum auth_result a = penalty_check(d->pen, k->ip, now, &d1);
	enum auth_result b = penalty_check(d->pen, k->user, now, &d2);
	*delay = d1 > d2 ? d1 : d2;
	return a == AUTH_BLOCKED || b == AUTH_BLOCKED ? AUTH_BLOCKED : AUTH_OK;
}

/* A success clears the user's count only: the address's count runs out
 * with its window, or one account could buy an address endless guesses
 * at the others. */
static void keys_outcome(struct authd *d, const struct authd_keys *k, enum auth_result r)
{
	if (r == AUTH_OK) {
		penalty_success(d->pen, k->user);
	} else if (r == AUTH_FAIL) {
		int64_t now = time_now_us() / 1000000;
		penalty_fail(d->pen, k->ip, now);
		penalty_fail(d->pen, k->user, now);
	}
}

static void log_outcome(enum auth_result r, const char *kind, const char *user, const char *ip,
			const char *reason)
{
	const char *ev = r == AUTH_OK ? "auth_ok" : r == AUTH_BLOCKED ? "auth_blocked"
				   : r == AUTH_TEMPFAIL ? "auth_tempfail" : "auth_failed";
	struct buf *l = log_begin(r == AUTH_OK ? LOG_LVL_INFO : LOG_LVL_WARN, ev);
	log_kv(l, "kind", "%s", kind);
	log_kv_esc(l, "user", user, strlen(user));
	log_kv_esc(l, "ip", ip, strlen(ip));
	if (reason && *reason)
		log_kv_esc(l, "reason", reason, strlen(reason));
	log_end(l);
}

/* A PLAIN request in progress; it outlives its connection when the
 * backend answers later (Dovecot): the outcome is still counted. */
struct plain_job {
	struct authd *d;
	struct authd_conn *conn; /* NULL once the connection closed */
	struct plain_job *next;  /* in conn->jobs */
	uint32_t id;
	struct authd_keys keys;
	char *ip, *authzid, *user;
	unsigned delay;   /* the penalty's, ms */
	int64_t start_us; /* when the request came (monotonic) */
};

static void detach_jobs(struct authd_conn *k)
{
	for (struct plain_job *j = k->jobs; j; j = j->next)
		j->conn = NULL;
	k->jobs = NULL;
}

static void plain_job_free(struct plain_job *j)
{
	keys_free(&j->keys);
	free(j->ip);
	free(j->authzid);
	free(j->user);
	free(j);
}

static void plain_finish(struct plain_job *j, enum auth_result res, const char *canon,
			 const char *reason)
{
	struct authd *d = j->d;
	if (res == AUTH_OK && j->authzid[0] && !str_eq_nocase(j->authzid, strlen(j->authzid), j->user) &&
	    !str_eq_nocase(j->authzid, strlen(j->authzid), canon)) {
		res = AUTH_FAIL;
		reason = "authorization identity differs from the user";
	}
	keys_outcome(d, &j->keys, res);
	log_outcome(res, "plain", j->user, j->ip, res == AUTH_OK ? NULL : reason);
	struct authd_conn *k = j->conn;
	if (k) {
		for (struct plain_job **pp = &k->jobs; *pp; pp = &(*pp)->next) {
			if (*pp == j) {
				*pp = j->next;
				break;
			}
		}
		struct authd_reply r = { 0 };
		reply_str(&r, auth_result_name(res));
		reply_str(&r, res == AUTH_OK ? canon : "");
		(void)authd_reply(k, j->id, &r,
				  res == AUTH_FAIL ? fail_delay_us(d, j->start_us, j->delay) : 0);
	}
	plain_job_free(j);
}

static void plain_done(enum auth_result r, const char *canon, const char *reason, void *arg)
{
	plain_finish(arg, r, canon ? canon : "", reason);
}

/* Password check through a backend with stored hashes. */
static void authd_check_plain(struct plain_job *j, const char *pw, size_t n)
{
	struct authd *d = j->d;
	struct err e = { "" };
	struct buf stored, canon;
	buf_init(&stored, AUTH_STORED_MAX + 1);
	buf_init(&canon, AUTH_NAME_MAX + 1);
	enum auth_result res;
	switch (auth_dir_user(d->dir, j->user, &stored, &canon, &e)) {
	case AUTH_LOOKUP_FOUND: {
		int64_t t0 = mono_us();
		int r = auth_password_check(buf_cstr(&stored), pw, n, &e);
		floor_note(&d->floor, mono_us() - t0);
		if (r == 1) {
			res = AUTH_OK;
		} else {
			if (r == 0)
				err_set(&e, "wrong password");
			res = AUTH_FAIL;
		}
		break;
	}
	case AUTH_LOOKUP_NOTFOUND:
		if (d->dummy_hash) {
			int64_t t0 = mono_us();
			(void)auth_password_check(d->dummy_hash, pw, n, NULL);
			floor_note(&d->floor, mono_us() - t0);
		}
		err_set(&e, "unknown user");
		res = AUTH_FAIL;
		break;
	default:
		res = AUTH_TEMPFAIL;
		break;
	}
	if (stored.data)
		explicit_bzero(stored.data, stored.cap);
	buf_free(&stored);
	plain_finish(j, res, buf_cstr(&canon), e.msg);
	buf_free(&canon);
}

/* The reply may be sent, and the connection closed, before this returns:
 * the caller must not use k afterwards. */
static void authd_plain(struct authd_conn *k, const struct authd_msg *m)
{
	struct authd *d = k->d;
	char *ip = field_str(&m->f[0], 256);
	if (!ip) {
		log_event(LOG_LVL_ERR, "authd_peer_error", "reason=\"malformed client address\"");
		authd_conn_close(k);
		return;
	}
	struct plain_job *j = xcalloc(1, sizeof(*j));
	j->d = d;
	j->conn = k;
	j->id = m->id;
	j->start_us = mono_us();
	j->ip = ip;
	j->authzid = field_str(&m->f[1], AUTH_NAME_MAX);
	j->user = field_str(&m->f[2], AUTH_NAME_MAX);
	bool user_ok = j->user && j->authzid && j->user[0];
	if (!j->user)
		j->user = str_dup("");
	if (!j->authzid)
		j->authzid = str_dup("");
	keys_for(d, &j->keys, ip, j->user);
	j->next = k->jobs;
	k->jobs = j;
	const char *pw = m->f[3].n ? (const char *)m->f[3].p : "";
	size_t pwn = m->f[3].n;
	if (keys_check(d, &j->keys, &j->delay) == AUTH_BLOCKED)
		plain_finish(j, AUTH_BLOCKED, "", "too many failures");
	else if (!user_ok)
		plain_finish(j, AUTH_FAIL, "", "unusable user name");
	else if (!d->b)
		plain_finish(j, AUTH_TEMPFAIL, "", "no credential backend configured");
	else if (d->b->verify_plain)
		d->b->verify_plain(d->b, d->base, ip, j->user, pw, pwn, plain_done, j);
	else
		authd_check_plain(j, pw, pwn);
}

static void fake_salt(const struct authd *d, const char *user, uint8_t out[16])
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned ml = 0;
	char *low = str_dup(user);
	str_lower(low);
	HMAC(EVP_sha256(), d->secret, sizeof(d->secret), (const uint8_t *)low, strlen(low), mac,
	     &ml);
	free(low);
	memcpy(out, mac, 16);
}

/* SCRAM keys of a user: AUTH_OK with keys, AUTH_FAIL (unknown user or no
 * SCRAM entry), AUTH_TEMPFAIL. */
static enum auth_result authd_scram_keys(struct authd *d, const char *user, struct buf *canon,
					 struct scram_keys *keys, struct err *e)
{
	if (!d->b || !d->b->lookup) {
		err_set(e, "the credential backend cannot serve SCRAM");
		return AUTH_TEMPFAIL;
	}
	struct buf stored;
	buf_init(&stored, AUTH_STORED_MAX + 1);
	enum auth_result res = AUTH_FAIL;
	switch (auth_dir_user(d->dir, user, &stored, canon, e)) {
	case AUTH_LOOKUP_FOUND: {
		const char *s = buf_cstr(&stored);
		if (str_has_prefix_nocase(s, strlen(s), "{SCRAM-SHA-256}") &&
		    scram_keys_parse(s, strlen(s), keys) == 0)
			res = AUTH_OK;
		else
			err_set(e, "no SCRAM-SHA-256 keys stored for the user");
		break;
	}
	case AUTH_LOOKUP_NOTFOUND:
		err_set(e, "unknown user");
		break;
	default:
		res = AUTH_TEMPFAIL;
		break;
	}
	if (stored.data)
		explicit_bzero(stored.data, stored.cap);
	buf_free(&stored);
	buf_cstr(canon);
	return res;
}

/* The client address and user name of a SCRAM request, and its penalty
 * keys.  A request without a usable address is a bug in the worker: the
 * connection is closed and -1 returned. */
static int scram_who(struct authd_conn *k, const struct authd_msg *m, char **ip, char **user,
		     struct authd_keys *keys)
{
	*ip = field_str(&m->f[0], 256);
	*user = field_str(&m->f[1], AUTH_NAME_MAX);
	if (!*ip) {
		log_event(LOG_LVL_ERR, "authd_peer_error", "reason=\"malformed client address\"");
		free(*user);
		authd_conn_close(k);
		return -1;
	}
	keys_for(k->d, keys, *ip, *user ? *user : "");
	return 0;
}

static int authd_scram_lookup(struct authd_conn *k, const struct authd_msg *m)
{
	struct authd *d = k->d;
	struct err e = { "" };
	char *ip, *user;
	struct authd_keys keys;
	if (scram_who(k, m, &ip, &user, &keys) < 0)
		return -1;
	struct buf canon;
	buf_init(&canon, AUTH_NAME_MAX + 1);
	struct scram_keys sk;
	memset(&sk, 0, sizeof(sk));
	struct authd_reply r = { 0 };
	uint8_t salt[16];
	unsigned delay;
	enum auth_result res;
	if (keys_check(d, &keys, &delay) == AUTH_BLOCKED) {
		res = AUTH_BLOCKED;
		err_set(&e, "too many failures");
	} else if (!user || !user[0]) {
		res = AUTH_FAIL;
		err_set(&e, "unusable user name");
	} else {
		res = authd_scram_keys(d, user, &canon, &sk, &e);
	}
	if (res == AUTH_FAIL && user && user[0]) {
		/* Answer as for a real user, with a salt that is stable per
		 * name, so that users cannot be enumerated; verify fails. */
		fake_salt(d, user, salt);
		reply_str(&r, auth_result_name(AUTH_OK));
		reply_str(&r, user);
		reply_add(&r, salt, sizeof(salt));
		snprintf(r.iter, sizeof(r.iter), "%u", AUTHD_FAKE_ITERATIONS);
		reply_str(&r, r.iter);
	} else if (res == AUTH_OK) {
		reply_str(&r, auth_result_name(AUTH_OK));
		reply_str(&r, buf_cstr(&canon));
		reply_add(&r, sk.salt, sk.salt_len);
		snprintf(r.iter, sizeof(r.iter), "%u", sk.iterations);
		reply_str(&r, r.iter);
	} else {
		reply_str(&r, auth_result_name(res));
		log_outcome(res, "scram", user ? user : "", ip, e.msg);
	}
	int rc = authd_reply(k, m->id, &r, 0);
	OPENSSL_cleanse(&sk, sizeof(sk));
	keys_free(&keys);
	buf_free(&canon);
	free(ip);
	free(user);
	return rc;
}

static int authd_scram_verify(struct authd_conn *k, const struct authd_msg *m)
{
	struct authd *d = k->d;
	int64_t start_us = mono_us();
	struct err e = { "" };
	char *ip, *user;
	struct authd_keys keys;
	if (scram_who(k, m, &ip, &user, &keys) < 0)
		return -1;
	struct buf canon;
	buf_init(&canon, AUTH_NAME_MAX + 1);
	struct scram_keys sk;
	memset(&sk, 0, sizeof(sk));
	uint8_t sig[32];
	struct authd_reply r = { 0 };
	unsigned delay = 0;
	enum auth_result res;
	if (keys_check(d, &keys, &delay) == AUTH_BLOCKED) {
		res = AUTH_BLOCKED;
		err_set(&e, "too many failures");
	} else if (!user || !user[0]) {
		res = AUTH_FAIL;
		err_set(&e, "unusable user name");
	} else {
		res = authd_scram_keys(d, user, &canon, &sk, &e);
		if (res == AUTH_OK &&
		    !scram_verify(&sk, (const char *)m->f[2].p, m->f[2].n, m->f[3].p, m->f[3].n,
				  sig)) {
			res = AUTH_FAIL;
			err_set(&e, "wrong password");
		}
	}
	keys_outcome(d, &keys, res);
	reply_str(&r, auth_result_name(res));
	if (res == AUTH_OK) {
		reply_str(&r, buf_cstr(&canon));
		reply_add(&r, sig, sizeof(sig));
	}
	log_outcome(res, "scram", user ? user : "", ip, res == AUTH_OK ? NULL : e.msg);
	int rc = authd_reply(k, m->id, &r,
			     res == AUTH_FAIL ? fail_delay_us(d, start_us, delay) : 0);
	OPENSSL_cleanse(&sk, sizeof(sk));
	keys_free(&keys);
	buf_free(&canon);
	free(ip);
	free(user);
	return rc;
}

static int authd_rcpt(struct authd_conn *k, const struct authd_msg *m)
{
	struct err e = { "" };
	char *addr = field_str(&m->f[0], AUTH_NAME_MAX);
	const char *word = "unknown";
	if (addr) {
		enum auth_lookup l = auth_dir_rcpt(k->d->dir, addr, &e);
		if (l == AUTH_LOOKUP_FOUND)
			word = "local";
		else if (l == AUTH_LOOKUP_UNAVAILABLE) {
			word = "tempfail";
			struct buf *lb = log_begin(LOG_LVL_WARN, "rcpt_tempfail");
			log_kv_esc(lb, "address", addr, strlen(addr));
			log_kv_esc(lb, "reason", e.msg, strlen(e.msg));
			log_end(lb);
		}
	}
	free(addr);
	struct authd_reply r = { 0 };
	reply_str(&r, word);
	return authd_reply(k, m->id, &r, 0);
}

static int authd_sender(struct authd_conn *k, const struct authd_msg *m)
{
	struct err e = { "" };
	char *user = field_str(&m->f[0], AUTH_NAME_MAX);
	char *addr = field_str(&m->f[1], AUTH_NAME_MAX);
	const char *word = "fail";
	if (user && addr) {
		enum auth_lookup l = auth_dir_sender(k->d->dir, user, addr, &e);
		if (l == AUTH_LOOKUP_FOUND)
			word = "ok";
		else if (l == AUTH_LOOKUP_UNAVAILABLE) {
			word = "tempfail";
			struct buf *lb = log_begin(LOG_LVL_WARN, "sender_tempfail");
			log_kv_esc(lb, "user", user, strlen(user));
			log_kv_esc(lb, "reason", e.msg, strlen(e.msg));
			log_end(lb);
		}
	}
	free(user);
	free(addr);
	struct authd_reply r = { 0 };
	reply_str(&r, word);
	return authd_reply(k, m->id, &r, 0);
}

/* Counts from the auth process this one replaces.  The peer passed the
 * same check as any worker; loading only adds failures and never lifts a
 * block, which a worker could bring about anyway by asking. */
static int authd_penalty_state(struct authd_conn *k, const struct authd_msg *m)
{
	if (penalty_load(k->d->pen, m->f[0].p, m->f[0].n, time_now_us() / 1000000) < 0) {
		log_event(LOG_LVL_ERR, "authd_peer_error", "fd=%d reason=\"malformed penalty state\"",
			  k->fd);
		authd_conn_close(k);
		return -1;
	}
	log_event(LOG_LVL_INFO, "authd_penalty_loaded", "bytes=%zu", m->f[0].n);
	return 0;
}

/* Field count per request type (index = type). */
static const size_t authd_nfields[] = {
	[AUTHD_PLAIN] = 4, [AUTHD_SCRAM_LOOKUP] = 2, [AUTHD_SCRAM_VERIFY] = 4,
	[AUTHD_RCPT] = 1,  [AUTHD_SENDER] = 2,    [AUTHD_PENALTY_STATE] = 1,
};

/* -1 if the connection was closed. */
static int authd_dispatch(struct authd_conn *k, const uint8_t *p, size_t n)
{
	struct authd_msg m;
	const char *why = NULL;
	if (authd_decode(p, n, &m) < 0)
		why = "malformed message";
	else if (m.type < AUTHD_PLAIN || m.type > AUTHD_PENALTY_STATE)
		why = "unexpected message type";
	else if (m.n != authd_nfields[m.type])
		why = "wrong number of fields";
	if (why) {
		log_event(LOG_LVL_ERR, "authd_peer_error", "fd=%d reason=\"%s\"", k->fd, why);
		authd_conn_close(k);
		return -1;
	}
	switch (m.type) {
	case AUTHD_PLAIN: authd_plain(k, &m); return -1; /* k may be gone */
	case AUTHD_SCRAM_LOOKUP: return authd_scram_lookup(k, &m);
	case AUTHD_SCRAM_VERIFY: return authd_scram_verify(k, &m);
	case AUTHD_RCPT: return authd_rcpt(k, &m);
	case AUTHD_PENALTY_STATE: return authd_penalty_state(k, &m);
	default: return authd_sender(k, &m);
	}
}

/* One message per call: a request may close its connection (a send
 * error, a malformed message), so k is not used after dispatching.  The
 * event is level-triggered and persistent: further messages come next. */
static void authd_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct authd_conn *k = arg;
	uint8_t *buf = k->d->rbuf;
	ssize_t r;
	do
		r = recv(fd, buf, AUTHD_MAX_MSG + 1, MSG_DONTWAIT | MSG_TRUNC);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (errno == EAGAIN)
			return;
		log_event(LOG_LVL_WARN, "authd_peer_error", "fd=%d reason=\"recv: %s\"", k->fd,
			  strerror(errno));
		authd_conn_close(k);
		return;
	}
	if (r == 0) {
		authd_conn_close(k);
		return;
	}
	if ((size_t)r > AUTHD_MAX_MSG) {
		log_event(LOG_LVL_ERR, "authd_peer_error", "fd=%d reason=\"message too long\"",
			  k->fd);
		authd_conn_close(k);
		return;
	}
	(void)authd_dispatch(k, buf, (size_t)r);
	explicit_bzero(buf, (size_t)r); /* passwords pass through here */
}

static void authd_on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct authd *d = arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				log_event(LOG_LVL_WARN, "authd_accept_error", "reason=\"%s\"",
					  strerror(errno));
			return;
		}
		struct ucred cr;
		socklen_t cl = sizeof(cr);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 ||
		    (cr.uid != d->peer_uid && cr.uid != 0)) {
			log_event(LOG_LVL_WARN, "authd_peer_refused", "uid=%ld pid=%ld",
				  cl == sizeof(cr) ? (long)cr.uid : -1L,
				  cl == sizeof(cr) ? (long)cr.pid : -1L);
			close(fd);
			continue;
		}
		struct authd_conn *k = xcalloc(1, sizeof(*k));
		k->d = d;
		k->fd = fd;
		k->ev_read = event_new(d->base, fd, EV_READ | EV_PERSIST, authd_on_read, k);
		k->ev_write = event_new(d->base, fd, EV_WRITE, authd_on_write, k);
		event_add(k->ev_read, NULL);
		k->next = d->conns;
		d->conns = k;
	}
}

/* ---- handing the penalty table to the next auth process --------------- */

/*
 * A reload replaces the auth process; its counts must not go with it, or
 * a routine reload would lift every block.  The stopping process connects
 * to the listening socket it shares with its successor (the master keeps
 * it across restarts) and sends the table there: the connection waits in
 * the backlog until the successor accepts it, however late that process
 * starts.  Connecting comes before the workers' connections close, so the
 * table is queued ahead of their reconnections.  When nothing replaces
 * the process (a stop), the queued table goes with the socket.
 */
static int handoff_connect(int listen_fd)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	memset(&sa, 0, sizeof(sa));
	if (getsockname(listen_fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX ||
	    len <= offsetof(struct sockaddr_un, sun_path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Blocking with a bound: a full backlog or a successor slow to read
	 * delays the exit, never holds it. */
	struct timeval tv = { .tv_sec = AUTHD_HANDOFF_TIMEOUT_MS / 1000,
			      .tv_usec = (AUTHD_HANDOFF_TIMEOUT_MS % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, len) < 0) {
		log_event(LOG_LVL_WARN, "authd_handoff_failed", "reason=\"connect: %s\"",
			  strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void handoff_send(struct authd *d, int fd)
{
	struct buf rec, msg;
	buf_init(&rec, AUTHD_MAX_MSG);
	buf_init(&msg, AUTHD_MAX_MSG);
	const void *pos = NULL;
	bool more;
	size_t bytes = 0;
	int64_t now = time_now_us() / 1000000;
	do {
		buf_reset(&rec);
		/* Room for the message header and the field length. */
		more = penalty_save(d->pen, now, &pos, &rec, AUTHD_MAX_MSG - 16);
		if (buf_len(&rec) == 0)
			break;
		struct authd_field f = { buf_ptr(&rec), buf_len(&rec) };
		if (authd_encode(&msg, AUTHD_PENALTY_STATE, 0, 1, &f) < 0)
			break;
		ssize_t w;
		do
			w = send(fd, buf_ptr(&msg), buf_len(&msg), MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w != (ssize_t)buf_len(&msg)) {
			log_event(LOG_LVL_WARN, "authd_handoff_failed", "reason=\"send: %s\"",
				  w < 0 ? strerror(errno) : "short");
			break;
		}
		bytes += buf_len(&rec);
	} while (more);
	log_event(LOG_LVL_INFO, "authd_handoff", "bytes=%zu", bytes);
	buf_free(&rec);
	buf_free(&msg);
}

static void authd_on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct authd *d = arg;
	log_event(LOG_LVL_INFO, "authd_stop", "signal=%d", (int)sig);
	event_base_loopbreak(d->base);
}

int authd_fake_key_load(const char *spool_dir, uint8_t key[AUTHD_FAKE_KEY_LEN], struct err *e)
{
	struct buf path;
	buf_init(&path, 4096);
	buf_printf(&path, "%s/auth-fake.key", spool_dir);
	int r = -1;
	int fd = open(buf_cstr(&path), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		ssize_t n = read(fd, key, AUTHD_FAKE_KEY_LEN);
		close(fd);
		if (n == AUTHD_FAKE_KEY_LEN)
			r = 0;
		else
			err_set(e, "%s: shorter than %d bytes", buf_cstr(&path), AUTHD_FAKE_KEY_LEN);
	} else if (errno != ENOENT) {
		err_set(e, "%s: %s", buf_cstr(&path), strerror(errno));
	} else if (rand_bytes(key, AUTHD_FAKE_KEY_LEN) < 0) {
		err_set(e, "no randomness for %s", buf_cstr(&path));
	} else {
		/* Written whole under a temporary name, then linked: a crash
		 * never leaves a short key. */
		struct err we = { "" };
		if (fs_write_atomic(buf_cstr(&path), key, AUTHD_FAKE_KEY_LEN, 0600, &we) < 0)
			err_set(e, "%s", we.msg);
		else
			r = 0;
	}
	buf_free(&path);
	return r;
}

int authd_main(const struct conf *c, int listen_fd, uid_t peer_uid,
	       const uint8_t fake_key[AUTHD_FAKE_KEY_LEN])
{
	struct err e = { "" };
	struct authd d;
	memset(&d, 0, sizeof(d));
	d.c = c;
	d.peer_uid = peer_uid;
	signal(SIGPIPE, SIG_IGN);
	if (auth_backend_from_conf(c, &d.b, &e) < 0) {
		log_event(LOG_LVL_ERR, "authd_error", "reason=\"%s\"", e.msg);
		return 1;
	}
	if (fake_key)
		memcpy(d.secret, fake_key, sizeof(d.secret));
	else if (rand_bytes(d.secret, sizeof(d.secret)) < 0) {
		log_event(LOG_LVL_ERR, "authd_error", "reason=\"no randomness\"");
		auth_backend_free(d.b);
		return 1;
	}
	struct penalty_conf pc = {
		.delay_after = c->auth_fail_delay_after,
		.block_after = c->auth_fail_block_after,
		.window_s = c->auth_fail_window,
		.block_s = c->auth_fail_block_time,
		.max_delay_ms = c->auth_fail_max_delay,
		.max_entries = AUTHD_PENALTY_ENTRIES,
	};
	d.pen = penalty_new(&pc);
	d.dir = auth_dir_new(c, d.b, AUTH_FILE_MAX);
	d.rbuf = xmalloc(AUTHD_MAX_MSG + 1);
	{
		uint8_t rnd[16];
		struct buf h;
		buf_init(&h, 1024);
		if (rand_bytes(rnd, sizeof(rnd)) == 0 &&
		    auth_password_hash("YESCRYPT", (const char *)rnd, 0, &h, NULL) == 0)
			d.dummy_hash = str_dup(buf_cstr(&h));
		buf_free(&h);
		/* A first measure, so that the first failures are padded too. */
		if (d.dummy_hash) {
			int64_t t0 = mono_us();
			(void)auth_password_check(d.dummy_hash, "x", 1, NULL);
			floor_note(&d.floor, mono_us() - t0);
		}
	}
	d.base = event_base_new();
	int rc = 1, hfd = -1;
	if (!d.base || !d.pen) {
		log_event(LOG_LVL_ERR, "authd_error", "reason=\"cannot initialise\"");
		goto out;
	}
	struct event *ev_listen =
		event_new(d.base, listen_fd, EV_READ | EV_PERSIST, authd_on_accept, &d);
	struct event *ev_term = evsignal_new(d.base, SIGTERM, authd_on_signal, &d);
	struct event *ev_int = evsignal_new(d.base, SIGINT, authd_on_signal, &d);
	event_add(ev_listen, NULL);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	log_event(LOG_LVL_INFO, "authd_start", "backend=%s", d.b ? d.b->name : "none");
	rc = event_base_dispatch(d.base) < 0 ? 1 : 0;
	hfd = handoff_connect(listen_fd);
	while (d.conns)
		authd_conn_close(d.conns);
	event_free(ev_listen);
	event_free(ev_term);
	event_free(ev_int);
out:
	/* The backend first: it completes its pending checks, which count
	 * their outcome in the penalty table and use the event base. */
	auth_dir_free(d.dir);
	auth_backend_free(d.b);
	if (hfd >= 0) {
		handoff_send(&d, hfd);
		close(hfd);
	}
	if (d.base)
		event_base_free(d.base);
	penalty_free(d.pen);
	free(d.dummy_hash);
	free(d.rbuf);
	OPENSSL_cleanse(d.secret, sizeof(d.secret));
	return rc;
}
