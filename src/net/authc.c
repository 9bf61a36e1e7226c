/*
 * The worker's side of the auth process: requests over a SOCK_SEQPACKET
 * connection, answered asynchronously, so that a slow password hash never
 * blocks the event loop.  Any failure of the channel turns every pending
 * request into a temporary failure for its session.
 */
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../auth/auth.h"
#include "net.h"

struct pending {
	struct pending *next;
	uint32_t id;
	authc_cb cb;
	void *arg;
	int64_t deadline_ms;
};

struct authc {
	struct event_base *base;
	char *tag;
	unsigned timeout_s;
	int fd;
	struct event *ev;
	struct event *timer;
	uint32_t next_id;
	struct pending *pending;
	struct buf msg;
	struct buf in;
};

static void fail_all(struct authc *a)
{
	/* Detach the list first: a callback may issue a new request. */
	struct pending *p = a->pending;
	a->pending = NULL;
	while (p) {
		struct pending *next = p->next;
		p->cb(p->arg, NULL);
		free(p);
		p = next;
	}
}

static void close_channel(struct authc *a, const char *why)
{
	if (a->fd < 0)
		return;
	log_event(LOG_LVL_WARN, "authd_channel", "state=lost reason=\"%s\"", why);
	event_free(a->ev);
	a->ev = NULL;
	close(a->fd);
	a->fd = -1;
}

static void disconnect(struct authc *a, const char *why)
{
	close_channel(a, why);
	fail_all(a);
}

/* Fails every pending request from the event loop, not from the caller's
 * stack. */
static void fail_soon(struct authc *a)
{
	for (struct pending *p = a->pending; p; p = p->next)
		p->deadline_ms = 0;
	event_active(a->timer, EV_TIMEOUT, 0);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct authc *a = arg;
	for (;;) {
		buf_reset(&a->in);
		uint8_t *w = buf_reserve(&a->in, AUTHD_MAX_MSG + 1);
		ssize_t r = recv(a->fd, w, AUTHD_MAX_MSG + 1, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			disconnect(a, r == 0 ? "closed by the auth process" : strerror(errno));
			return;
		}
		struct authd_msg m;
		if ((size_t)r > AUTHD_MAX_MSG || authd_decode(w, (size_t)r, &m) < 0 ||
		    m.type != AUTHD_REPLY) {
			/* The peer is our own process: a bad message is a bug. */
			disconnect(a, "malformed message from the auth process");
			return;
		}
		struct pending **pp = &a->pending;
		while (*pp && (*pp)->id != m.id)
			pp = &(*pp)->next;
		if (!*pp)
			continue; /* cancelled: the session went away */
		struct pending *p = *pp;
		*pp = p->next;
		p->cb(p->arg, &m);
		free(p);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct authc *a = arg;
	int64_t now = time_mono_ms();
	struct pending **pp = &a->pending;
	while (*pp) {
		struct pending *p = *pp;
		if (p->deadline_ms <= now) {
			*pp = p->next;
			log_event(LOG_LVL_WARN, "authd_timeout", "request=%u", p->id);
			p->cb(p->arg, NULL);
			free(p);
			pp = &a->pending; /* the callback may have changed the list */
			continue;
		}
		pp = &p->next;
	}
	if (a->pending) {
		struct timeval tv = { 1, 0 };
		evtimer_add(a->timer, &tv);
	}
}

struct authc *authc_new(struct event_base *base, const char *tag, unsigned timeout_s)
{
	struct authc *a = xcalloc(1, sizeof(*a));
	a->base = base;
	a->tag = str_dup(tag);
	a->timeout_s = timeout_s ? timeout_s : 30;
	a->fd = -1;
	a->next_id = 1;
	a->timer = evtimer_new(base, on_timer, a);
	buf_init(&a->msg, AUTHD_MAX_MSG);
	buf_init(&a->in, AUTHD_MAX_MSG + 1);
	return a;
}

void authc_free(struct authc *a)
{
	if (!a)
		return;
	if (a->ev)
		event_free(a->ev);
	if (a->fd >= 0)
		close(a->fd);
	while (a->pending) {
		struct pending *p = a->pending;
		a->pending = p->next;
		free(p);
	}
	event_free(a->timer);
	buf_free(&a->msg);
	buf_free(&a->in);
	free(a->tag);
	free(a);
}

static int ensure_connected(struct authc *a)
{
	if (a->fd >= 0)
		return 0;
	struct err e = { "" };
	int fd = authd_connect(a->tag, &e);
	if (fd < 0) {
		log_event(LOG_LVL_WARN, "authd_channel", "state=unavailable reason=\"%s\"", e.msg);
		return -1;
	}
	a->fd = fd;
	a->ev = event_new(a->base, fd, EV_READ | EV_PERSIST, on_read, a);
	event_add(a->ev, NULL);
	return 0;
}

uint32_t authc_request(struct authc *a, uint8_t type, size_t n, const struct authd_field *f,
		       authc_cb cb, void *arg)
{
	uint32_t id = a->next_id++;
	if (a->next_id == 0)
		a->next_id = 1;
	struct pending *p = xcalloc(1, sizeof(*p));
	p->id = id;
	p->cb = cb;
	p->arg = arg;
	p->deadline_ms = time_mono_ms() + (int64_t)a->timeout_s * 1000;
	p->next = a->pending;
	a->pending = p;
	if (!evtimer_pending(a->timer, NULL)) {
		struct timeval tv = { 1, 0 };
		evtimer_add(a->timer, &tv);
	}
	bool sent = false;
	if (ensure_connected(a) == 0 && authd_encode(&a->msg, type, id, n, f) == 0) {
		for (;;) {
			ssize_t w = send(a->fd, buf_ptr(&a->msg), buf_len(&a->msg),
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			sent = w == (ssize_t)buf_len(&a->msg);
			if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				/* Lost: everything pending fails, this one included. */
				close_channel(a, strerror(errno));
				fail_soon(a);
				return id;
			}
			break;
		}
	}
	if (!sent) {
		/* Answered as a temporary failure from the event loop, never from
		 * inside this call (the caller is in the middle of its own
		 * bookkeeping). */
		p->deadline_ms = 0;
		event_active(a->timer, EV_TIMEOUT, 0);
	}
	return id;
}

void authc_cancel(struct authc *a, uint32_t id)
{
	for (struct pending **pp = &a->pending; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			struct pending *p = *pp;
			*pp = p->next;
			free(p);
			return;
		}
	}
}
