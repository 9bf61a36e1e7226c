/*
 * Dovecot backend: a client of Dovecot's authentication protocol (v1) on
 * its auth-client unix socket.  Dovecot checks the password itself, so
 * only PLAIN and LOGIN can be served: this side never sees a hash, and
 * SCRAM lookups are unavailable (the worker answers 454 for SCRAM).
 *
 * The auth-client socket cannot look users up, so the directory treats
 * every address of a local domain as a user (can_list_users = false):
 * recipient_verify then only distinguishes local domains from others,
 * aliases still apply, and the delivery agent (Dovecot LMTP) refuses
 * unknown users at delivery time.
 *
 * Dovecot delays its failures (auth_failure_delay, 2 s by default), so
 * requests are asynchronous: the AUTH line is written at once, the answer
 * arrives through the auth process's event loop, and other requests are
 * served meanwhile.  Only connecting and the handshake are done in place,
 * bounded by connect_ms.  The connection is kept between requests and
 * opened again after any error; an error fails the pending requests with
 * a tempfail.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"

/* Longest line accepted from Dovecot (its protocol expects 16 KiB). */
#define DOVECOT_LINE_MAX (64 * 1024)

struct dc_backend;

struct dc_req {
	struct dc_backend *d;
	unsigned id;
	char *user;
	auth_verify_done_fn done;
	void *arg;
	struct event *timer;
	struct dc_req *next;
};

struct dc_backend {
	struct auth_backend b;
	char *path;
	unsigned timeout_ms; /* connect and handshake */
	unsigned answer_ms;
	int fd;
	unsigned next_id;
	struct buf in; /* bytes received, not yet consumed as lines */
	struct event_base *base;
	struct event *ev_read;
	struct dc_req *reqs;
};

static void dc_req_finish(struct dc_req *q, enum auth_result r, const char *canon,
			  const char *reason)
{
	struct dc_backend *d = q->d;
	for (struct dc_req **pp = &d->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	}
	if (q->timer)
		event_free(q->timer);
	auth_verify_done_fn done = q->done;
	void *arg = q->arg;
	free(q->user);
	free(q);
	done(r, canon, reason, arg);
}

static void dc_close(struct dc_backend *d)
{
	if (d->ev_read)
		event_free(d->ev_read);
	d->ev_read = NULL;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	buf_reset(&d->in);
}

/* Drops the connection and fails what was waiting on it. */
static void dc_reset(struct dc_backend *d, const char *reason)
{
	dc_close(d);
	while (d->reqs)
		dc_req_finish(d->reqs, AUTH_TEMPFAIL, NULL, reason);
}

static int dc_write(struct dc_backend *d, const void *p, size_t n, int64_t deadline,
		    struct err *e)
{
	const uint8_t *c = p;
	while (n > 0) {
		ssize_t w = send(d->fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int64_t left = deadline - time_mono_ms();
				struct pollfd pfd = { .fd = d->fd, .events = POLLOUT };
				if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
					return err_set(e, "dovecot %s: write timeout", d->path);
				continue;
			}
			return err_set(e, "dovecot %s: write: %s", d->path, strerror(errno));
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Next complete line (without LF) into line; -1 on timeout/EOF/overlong. */
static int dc_read_line(struct dc_backend *d, struct buf *line, int64_t deadline, struct err *e)
{
	for (;;) {
		const uint8_t *p = buf_ptr(&d->in);
		const uint8_t *nl = memchr(p, '\n', buf_len(&d->in));
		if (nl) {
			buf_reset(line);
			if (buf_append(line, p, (size_t)(nl - p)) < 0)
				return err_set(e, "dovecot %s: line too long", d->path);
			buf_consume(&d->in, (size_t)(nl - p) + 1);
			buf_cstr(line);
			return 0;
		}
		int64_t left = deadline - time_mono_ms();
		if (left <= 0)
			return err_set(e, "dovecot %s: no answer in %u ms", d->path, d->timeout_ms);
		struct pollfd pfd = { .fd = d->fd, .events = POLLIN };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return err_set(e, "dovecot %s: no answer in %u ms", d->path, d->timeout_ms);
		uint8_t *w = buf_reserve(&d->in, 4096);
		if (!w)
			return err_set(e, "dovecot %s: line too long", d->path);
		ssize_t r = recv(d->fd, w, 4096, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return err_set(e, "dovecot %s: read: %s", d->path, strerror(errno));
		}
		if (r == 0)
			return err_set(e, "dovecot %s: connection closed", d->path);
		buf_commit(&d->in, (size_t)r);
	}
}

static bool dc_is(const struct buf *line, const char *cmd)
{
	size_t n = strlen(cmd);
	const char *s = (const char *)buf_ptr(line);
	return buf_len(line) >= n && memcmp(s, cmd, n) == 0 &&
	       (buf_len(line) == n || s[n] == '\t');
}

static int dc_connect(struct dc_backend *d, struct err *e)
{
	if (d->fd >= 0)
		return 0;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t pl = strlen(d->path);
	if (pl >= sizeof(sa.sun_path))
		return err_set(e, "dovecot socket path too long");
	memcpy(sa.sun_path, d->path, pl);
	d->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (d->fd < 0)
		return err_set(e, "socket: %s", strerror(errno));
	/* A unix stream connect completes at once or fails; a full backlog
	 * blocks, which the receive timeout bounds. */
	struct timeval tv = { .tv_sec = d->timeout_ms / 1000,
			      .tv_usec = (d->timeout_ms % 1000) * 1000 };
	setsockopt(d->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(d->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_set(e, "dovecot %s: connect: %s", d->path, strerror(errno));
		dc_close(d);
		return -1;
	}
	int64_t deadline = time_mono_ms() + d->timeout_ms;
	struct buf hello;
	buf_init(&hello, 128);
	buf_printf(&hello, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
	int r = dc_write(d, buf_ptr(&hello), buf_len(&hello), deadline, e);
	buf_free(&hello);
	if (r < 0) {
		dc_close(d);
		return -1;
	}
	struct buf line;
	buf_init(&line, DOVECOT_LINE_MAX);
	bool version_ok = false;
	for (;;) {
		if (dc_read_line(d, &line, deadline, e) < 0)
			break;
		if (dc_is(&line, "VERSION")) {
			const char *s = buf_cstr(&line);
			version_ok = strncmp(s, "VERSION\t1\t", 10) == 0;
			if (!version_ok) {
				err_set(e, "dovecot %s: unsupported protocol version", d->path);
				break;
			}
		} else if (dc_is(&line, "DONE")) {
			if (!version_ok) {
				err_set(e, "dovecot %s: handshake without VERSION", d->path);
				break;
			}
			buf_free(&line);
			return 0;
		}
		/* MECH, SPID, CUID, COOKIE and anything newer: not needed. */
	}
	buf_free(&line);
	dc_close(d);
	return -1;
}

/* Dovecot's tab-escaping: \001 followed by 0,1,t,r,n/l. */
static void dc_unescape(const char *s, size_t n, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\001' && i + 1 < n) {
			char x = s[++i];
			c = x == '0' ? '\0' : x == '1' ? '\001' : x == 't' ? '\t' : x == 'r' ? '\r'
			    : (x == 'n' || x == 'l') ? '\n' : x;
		}
		buf_append(out, &c, 1);
	}
}

static bool dc_ip_ok(const char *ip)
{
	if (!ip || !*ip || strlen(ip) > 64)
		return false;
	for (const char *p = ip; *p; p++)
		if (!strchr("0123456789abcdefABCDEF:.", *p))
			return false;
	return true;
}

/* Handles one line from Dovecot: an answer to a pending request. */
static void dc_line(struct dc_backend *d, const char *s, size_t ln)
{
	bool ok = ln >= 3 && memcmp(s, "OK\t", 3) == 0;
	bool fail = ln >= 5 && memcmp(s, "FAIL\t", 5) == 0;
	bool cont = ln >= 5 && memcmp(s, "CONT\t", 5) == 0;
	if (!ok && !fail && !cont)
		return;
	const char *t = memchr(s, '\t', ln);
	unsigned long id = strtoul(t + 1, NULL, 10);
	struct dc_req *q = d->reqs;
	while (q && q->id != id)
		q = q->next;
	if (!q)
		return; /* an answer to a request that timed out */
	if (cont) {
		/* PLAIN with an initial response needs no continuation. */
		dc_req_finish(q, AUTH_TEMPFAIL, NULL, "dovecot asked for a continuation");
		return;
	}
	enum auth_result r = ok ? AUTH_OK : AUTH_FAIL;
	struct buf canon;
	buf_init(&canon, AUTH_NAME_MAX + 1);
	bool have_user = false;
	const char *p = t + 1;
	while ((p = memchr(p, '\t', (size_t)(s + ln - p)))) {
		p++;
		const char *f = p;
		const char *fe = memchr(f, '\t', (size_t)(s + ln - f));
		size_t fl = (size_t)((fe ? fe : s + ln) - f);
		if (fail && ((fl == 4 && memcmp(f, "temp", 4) == 0) ||
			     (fl == 14 && memcmp(f, "code=temp_fail", 14) == 0)))
			r = AUTH_TEMPFAIL;
		if (ok && fl > 5 && memcmp(f, "user=", 5) == 0) {
			buf_reset(&canon);
			dc_unescape(f + 5, fl - 5, &canon);
			have_user = true;
		}
	}
	if (ok && (!have_user || buf_len(&canon) == 0 ||
		   memchr(buf_ptr(&canon), '\0', buf_len(&canon)))) {
		buf_reset(&canon);
		buf_puts(&canon, q->user);
	}
	const char *why = r == AUTH_OK ? NULL : r == AUTH_FAIL ? "dovecot refused the credentials"
					     : "dovecot reports a temporary failure";
	dc_req_finish(q, r, r == AUTH_OK ? buf_cstr(&canon) : NULL, why);
	buf_free(&canon);
}

static void dc_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct dc_backend *d = arg;
	for (;;) {
		uint8_t *w = buf_reserve(&d->in, 4096);
		if (!w) {
			log_event(LOG_LVL_ERR, "auth_dovecot_error", "reason=\"line too long\"");
			dc_reset(d, "dovecot sent an overlong line");
			return;
		}
		ssize_t r = recv(d->fd, w, 4096, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			break;
		if (r <= 0) {
			if (d->reqs)
				log_event(LOG_LVL_WARN, "auth_dovecot_error",
					  "reason=\"connection lost\"");
			dc_reset(d, "connection to dovecot lost");
			return;
		}
		buf_commit(&d->in, (size_t)r);
		for (;;) {
			const uint8_t *p = buf_ptr(&d->in);
			const uint8_t *nl = memchr(p, '\n', buf_len(&d->in));
			if (!nl)
				break;
			char *line = str_ndup(p, (size_t)(nl - p));
			size_t ln = (size_t)(nl - p);
			buf_consume(&d->in, ln + 1);
			dc_line(d, line, ln);
			free(line);
		}
	}
}

static void dc_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dc_req *q = arg;
	log_event(LOG_LVL_WARN, "auth_dovecot_error", "reason=\"no answer in %u ms\"",
		  q->d->answer_ms);
	dc_req_finish(q, AUTH_TEMPFAIL, NULL, "no answer from dovecot");
}

/* Writes the request on the current (or a new) connection. */
static int dc_send(struct dc_backend *d, const struct buf *req, struct err *e)
{
	if (d->fd < 0) {
		if (dc_connect(d, e) < 0)
			return -1;
		d->ev_read = event_new(d->base, d->fd, EV_READ | EV_PERSIST, dc_on_read, d);
		if (!d->ev_read || event_add(d->ev_read, NULL) < 0) {
			dc_close(d);
			return err_set(e, "cannot watch the dovecot connection");
		}
		/* Bytes that came with the handshake are answers to nothing. */
	}
	return dc_write(d, buf_ptr(req), buf_len(req), time_mono_ms() + d->timeout_ms, e);
}

static void dc_verify_plain(struct auth_backend *b, struct event_base *base, const char *ip,
			    const char *user, const char *password, size_t n,
			    auth_verify_done_fn done, void *arg)
{
	struct dc_backend *d = (struct dc_backend *)b;
	if (strlen(user) > AUTH_NAME_MAX || memchr(password, '\0', n)) {
		done(AUTH_FAIL, NULL, "credentials not acceptable", arg);
		return;
	}
	if (d->base && d->base != base)
		dc_close(d);
	d->base = base;
	unsigned id = ++d->next_id;
	if (id == 0)
		id = d->next_id = 1;
	struct buf resp, req;
	buf_init(&resp, 4 * AUTH_STORED_MAX);
	buf_init(&req, 8 * AUTH_STORED_MAX);
	buf_append(&resp, "", 1);
	buf_puts(&resp, user);
	buf_append(&resp, "", 1);
	const char *why = NULL;
	if (buf_append(&resp, password, n) < 0 ||
	    buf_printf(&req, "AUTH\t%u\tPLAIN\tservice=smtp\tsecured\tnologin", id) < 0)
		why = "credentials too long";
	if (!why && dc_ip_ok(ip))
		buf_printf(&req, "\trip=%s", ip);
	if (!why && (buf_puts(&req, "\tresp=") < 0 ||
		     b64_encode(buf_ptr(&resp), buf_len(&resp), &req) < 0 ||
		     buf_puts(&req, "\n") < 0))
		why = "credentials too long";
	if (why) {
		done(AUTH_FAIL, NULL, why, arg);
		goto out;
	}
	struct err e = { "" };
	bool reused = d->fd >= 0;
	if (dc_send(d, &req, &e) < 0) {
		dc_reset(d, e.msg);
		/* A kept connection may have been closed by a Dovecot restart. */
		if (!reused || dc_send(d, &req, &e) < 0) {
			dc_close(d);
			log_event(LOG_LVL_ERR, "auth_dovecot_error", "reason=\"%s\"", e.msg);
			done(AUTH_TEMPFAIL, NULL, e.msg, arg);
			goto out;
		}
	}
	struct dc_req *q = xcalloc(1, sizeof(*q));
	q->d = d;
	q->id = id;
	q->user = str_dup(user);
	q->done = done;
	q->arg = arg;
	q->timer = evtimer_new(base, dc_on_timeout, q);
	struct timeval tv = { .tv_sec = d->answer_ms / 1000, .tv_usec = (d->answer_ms % 1000) * 1000 };
	evtimer_add(q->timer, &tv);
	q->next = d->reqs;
	d->reqs = q;
out:
	if (resp.data)
		explicit_bzero(resp.data, resp.cap);
	if (req.data)
		explicit_bzero(req.data, req.cap);
	buf_free(&resp);
	buf_free(&req);
}

static void dc_free(struct auth_backend *b)
{
	struct dc_backend *d = (struct dc_backend *)b;
	dc_reset(d, "shutting down");
	buf_free(&d->in);
	free(d->path);
	free(d);
}

struct auth_backend *auth_backend_dovecot_new(const char *socket_path, unsigned connect_ms,
					      unsigned answer_ms)
{
	struct dc_backend *d = xcalloc(1, sizeof(*d));
	d->b.name = "dovecot";
	d->b.can_list_users = false;
	d->b.verify_plain = dc_verify_plain;
	d->b.free = dc_free;
	d->path = str_dup(socket_path);
	d->timeout_ms = connect_ms ? connect_ms : 2000;
	d->answer_ms = answer_ms ? answer_ms : 10000;
	d->fd = -1;
	buf_init(&d->in, DOVECOT_LINE_MAX);
	return &d->b;
}
