/*
 * The local delivery process: runs as mail_user and writes messages into
 * Maildirs for the queue runner, which never holds the mailbox owner's
 * rights.  One request at a time over a SOCK_SEQPACKET socketpair: the
 * runner sends the spool file's descriptor (SCM_RIGHTS) and where to put
 * it; the answer is one status byte and a text.  Blocking on purpose:
 * fsync is the work here, and the runner's event loop is not held by it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../deliver/deliver.h"
#include "daemon.h"

/* Request layout: struct mdeliver_req, then path NUL prefix NUL host NUL. */
struct mdeliver_req {
	uint64_t off;
	uint64_t len;
	uint32_t path_len;
	uint32_t prefix_len;
	uint32_t host_len;
};

#define MDELIVER_MSG_MAX 65536

size_t mdeliver_root_len(const char *tmpl)
{
	const char *pct = strchr(tmpl, '%');
	size_t n = pct ? (size_t)(pct - tmpl) : strlen(tmpl);
	while (n > 0 && tmpl[n - 1] != '/')
		n--;
	/* n now ends after a '/': drop it. */
	return n > 1 ? n - 1 : 0;
}

int mdeliver_send(int sock, int fd, off_t off, off_t len, const char *path, const char *prefix,
		  size_t prefix_len, const char *host)
{
	struct mdeliver_req h = { (uint64_t)off, (uint64_t)len, (uint32_t)strlen(path),
				  (uint32_t)prefix_len, (uint32_t)strlen(host) };
	size_t total = sizeof(h) + h.path_len + 1 + h.prefix_len + 1 + h.host_len + 1;
	if (total > MDELIVER_MSG_MAX)
		return -1;
	char *m = xmalloc(total);
	char *p = m;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	memcpy(p, path, h.path_len + 1);
	p += h.path_len + 1;
	memcpy(p, prefix, h.prefix_len);
	p[h.prefix_len] = 0;
	p += h.prefix_len + 1;
	memcpy(p, host, h.host_len + 1);
	struct iovec iov = { m, total };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	free(m);
	return n == (ssize_t)total ? 0 : -1;
}

/* A malformed request comes from our own runner: a bug, so exit. */
static void bad_request(const char *why)
{
	log_event(LOG_LVL_ERR, "mdeliver_failed", "error=\"malformed request: %s\"", why);
	_exit(70);
}

static void reply(int sock, char status, const char *text)
{
	struct buf b;
	buf_init(&b, 4096);
	buf_append(&b, &status, 1);
	buf_append(&b, text, strnlen(text, 4000));
	(void)!send(sock, buf_ptr(&b), buf_len(&b), MSG_NOSIGNAL);
	buf_free(&b);
}

int mdeliver_main(int sock)
{
	log_set_process("mdeliver");
	char *m = xmalloc(MDELIVER_MSG_MAX);
	for (;;) {
		struct iovec iov = { m, MDELIVER_MSG_MAX };
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
				     .msg_controllen = sizeof(ctl.b) };
		ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the runner is gone */
		int fd = -1;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
			    cm->cmsg_len == CMSG_LEN(sizeof(int)))
				memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		if (fd < 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
			bad_request("no descriptor or truncated");
		struct mdeliver_req h;
		if ((size_t)n < sizeof(h))
			bad_request("short");
		memcpy(&h, m, sizeof(h));
		size_t need = sizeof(h) + (size_t)h.path_len + 1 + h.prefix_len + 1 + h.host_len + 1;
		if (h.path_len > MDELIVER_MSG_MAX || h.prefix_len > MDELIVER_MSG_MAX ||
		    h.host_len > MDELIVER_MSG_MAX || need != (size_t)n)
			bad_request("lengths");
		const char *path = m + sizeof(h);
		const char *prefix = path + h.path_len + 1;
		const char *host = prefix + h.prefix_len + 1;
		if (path[h.path_len] || prefix[h.prefix_len] || host[h.host_len] || path[0] != '/')
			bad_request("strings");
		struct buf name;
		buf_init(&name, 4096);
		struct err e = { "" };
		bool temp = true;
		if (maildir_deliver(path, prefix, h.prefix_len, fd, (off_t)h.off, (off_t)h.len, host,
				    &name, &temp, &e) == 0) {
			struct buf t;
			buf_init(&t, 8192);
			buf_printf(&t, "delivered to %s/new/%s", path, buf_cstr(&name));
			reply(sock, '2', buf_cstr(&t));
			buf_free(&t);
		} else {
			/* Even what can never work as configured (a file where a
			 * directory should be) is the administrator's to mend, not
			 * the sender's: the message waits, logged, until its
			 * lifetime ends. */
			(void)temp;
			reply(sock, '4', e.msg);
		}
		buf_free(&name);
		close(fd);
	}
	free(m);
	return 0;
}
