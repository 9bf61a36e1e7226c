/*
 * Maildir delivery (cr.yp.to/proto/maildir.html, as Dovecot reads it):
 * write tmp/<unique>, fsync, hard-link into new/ under the final name
 * that carries ,S=<size>, remove the tmp entry, fsync new/.
 *
 * The spooled message has CRLF line ends; a Maildir holds LF, so the
 * copy converts on the fly.  The tmp name lacks ,S= (the size of the LF
 * form is known only once the copy is done), which lets the message be
 * read once; readers never look at tmp/, so its names are free.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deliver.h"

/* Large reads keep the copy cheap for big messages; the converted block
 * is never larger than what was read. */
#define MAILDIR_BLOCK (64 * 1024)
#define MAILDIR_NAME_MAX 1024
/* O_EXCL collisions can only come from a foreign writer using our pid or
 * a clock that went back; a few fresh sequence numbers settle them. */
#define MAILDIR_TRIES 8

/* ---- path templates -------------------------------------------------- */

/* A part that becomes (part of) a path component must not be able to
 * climb out of or split the directory tree. */
static int maildir_part_check(const char *what, const char *p, size_t n, struct err *e)
{
	if (n == 0)
		return err_set(e, "maildir path: empty %s", what);
	if (p[0] == '.')
		return err_set(e, "maildir path: %s starts with '.'", what);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '/')
			return err_set(e, "maildir path: %s contains '/'", what);
		if (c < 0x20 || c == 0x7f)
			return err_set(e, "maildir path: %s contains a control byte", what);
	}
	return 0;
}

static int maildir_put_lower(struct buf *out, const char *p, size_t n)
{
	uint8_t *w = buf_reserve(out, n);
	if (!w)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		w[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
	}
	buf_commit(out, n);
	return 0;
}

int maildir_path_expand(const char *tmpl, const char *address, struct buf *out, struct err *e)
{
	if (!tmpl || !*tmpl)
		return err_set(e, "maildir path: empty template");
	if (!address)
		return err_set(e, "maildir path: no address");
	const char *at = strrchr(address, '@');
	const char *local = address;
	size_t local_len = at ? (size_t)(at - address) : strlen(address);
	const char *dom = at ? at + 1 : "";
	size_t dom_len = strlen(dom);
	/* Both parts are checked even when the template uses only one: an
	 * address that fails here is malformed whatever the template. */
	if (maildir_part_check("local part", local, local_len, e) < 0 ||
	    maildir_part_check("domain", dom, dom_len, e) < 0)
		return -1;

	size_t start = buf_len(out);
	for (const char *p = tmpl; *p; p++) {
		int r;
		if (*p != '%') {
			r = buf_append(out, p, 1);
		} else {
			switch (p[1]) {
			case 'u':
				r = maildir_put_lower(out, address, local_len + 1 + dom_len);
				break;
			case 'n':
				r = maildir_put_lower(out, local, local_len);
				break;
			case 'd':
				r = maildir_put_lower(out, dom, dom_len);
				break;
			case '%':
				r = buf_append(out, "%", 1);
				break;
			default:
				out->len = out->off + start;
				return err_set(e, "maildir path: unknown escape in template");
			}
			p++;
		}
		if (r < 0) {
			out->len = out->off + start;
			return err_set(e, "maildir path: too long");
		}
	}
	return 0;
}

/* ---- names ----------------------------------------------------------- */

int maildir_name(int64_t now_us, long pid, unsigned seq, const char *host, uint64_t size,
		 struct buf *out)
{
	if (now_us < 0)
		now_us = 0;
	if (buf_printf(out, "%lld.M%lldP%ldQ%u.", (long long)(now_us / 1000000),
		       (long long)(now_us % 1000000), pid, seq) < 0)
		return -1;
	/* '/' would split the path and ':' starts the info part. */
	for (const char *h = host ? host : "localhost"; *h; h++) {
		int r;
		if (*h == '/')
			r = buf_puts(out, "\\057");
		else if (*h == ':')
			r = buf_puts(out, "\\072");
		else
			r = buf_append(out, h, 1);
		if (r < 0)
			return -1;
	}
	return buf_printf(out, ",S=%llu", (unsigned long long)size);
}

/* ---- delivery -------------------------------------------------------- */

/*
 * Whether an errno is worth a retry.  Running out of something (space,
 * quota, descriptors, memory), permissions and I/O errors are fixed by
 * time or by an administrator without the sender's help: retry.  A path
 * component that is a file (ENOTDIR), a symbolic link where a directory
 * must be (ELOOP, from O_NOFOLLOW) or a name that is too long describes
 * a Maildir that cannot work as configured: fail now so that the sender
 * hears of it rather than after the queue lifetime.  Anything unknown is
 * retried, the safe side for a message already accepted.
 */
static bool maildir_errno_temporary(int err)
{
	switch (err) {
	case ENOTDIR:
	case ELOOP:
	case ENAMETOOLONG:
	case EINVAL:
		return false;
	default:
		return true;
	}
}

static int maildir_fail(bool *temporary, int err, struct err *e, const char *what,
			const char *name)
{
	*temporary = maildir_errno_temporary(err);
	return err_set(e, "maildir %s %s: %s", what, name, strerror(err));
}

/* mkdir -p keeping errno for the caller (fs_mkdir_p reports text only). */
static int maildir_mkdirs(const char *path)
{
	char *p = str_dup(path);
	int r = 0;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			r = -1;
			break;
		}
		*s = '/';
	}
	if (r == 0 && mkdir(p, 0700) < 0 && errno != EEXIST)
		r = -1;
	int saved = errno;
	free(p);
	errno = saved;
	return r;
}

/* Opens (creating if missing) a subdirectory of the Maildir without ever
 * following a symbolic link in its place. */
static int maildir_subdir(int dfd, const char *name)
{
	if (mkdirat(dfd, name, 0700) < 0 && errno != EEXIST)
		return -1;
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* CRLF -> LF, streaming: a CR is held back until the next byte shows
 * whether it ends a line (it may be the last byte of a block). */
struct maildir_conv {
	bool cr;
};

static int maildir_conv_block(struct maildir_conv *c, const uint8_t *p, size_t n, struct buf *out)
{
	/* The output of a block is at most n + 1 bytes (a held CR). */
	uint8_t *w = buf_reserve(out, n + 1);
	if (!w)
		return -1;
	size_t k = 0;
	size_t i = 0;
	if (c->cr && n > 0) {
		c->cr = false;
		if (p[0] == '\n') {
			w[k++] = '\n';
			i = 1;
		} else {
			w[k++] = '\r';
		}
	}
	while (i < n) {
		const uint8_t *q = memchr(p + i, '\r', n - i);
		size_t span = q ? (size_t)(q - (p + i)) : n - i;
		memcpy(w + k, p + i, span);
		k += span;
		i += span;
		if (!q)
			break;
		if (i + 1 == n) {
			c->cr = true;
			i++;
		} else if (p[i + 1] == '\n') {
			w[k++] = '\n';
			i += 2;
		} else {
			w[k++] = '\r';
			i++;
		}
	}
	buf_commit(out, k);
	return 0;
}

static int maildir_flush(int fd, struct buf *out, uint64_t *written)
{
	if (fs_write_all(fd, buf_ptr(out), buf_len(out)) < 0)
		return -1;
	*written += buf_len(out);
	buf_reset(out);
	return 0;
}

/* Copies prefix then fd[off, off+len) converted into wfd; *size gets the
 * bytes written.  errno tells what failed. */
/* p[0..n) without its Return-Path fields, into out, when its header ends
 * within it; returns the bytes of p it stands for (0: the header goes on
 * past n, and nothing is changed).  Final delivery puts the one true
 * Return-Path on top; one the sender wrote would show a forged return
 * path, and RFC 5321 4.4 lets final delivery remove them. */
static size_t maildir_header_without_return_path(const uint8_t *p, size_t n, struct buf *out)
{
	static const char name[] = "return-path";
	bool skipping = false;
	size_t i = 0;
	while (i < n) {
		const uint8_t *nl = memchr(p + i, '\n', n - i);
		if (!nl)
			return 0;
		size_t end = (size_t)(nl - p) + 1;
		bool blank = end - i == 1 || (end - i == 2 && p[i] == '\r');
		if (!blank && (p[i] == ' ' || p[i] == '\t')) {
			/* a continuation line belongs to the field above */
		} else if (!blank) {
			size_t k = 0;
			while (k < sizeof(name) - 1 && i + k < end &&
			       (p[i + k] | 0x20) == (uint8_t)name[k])
				k++;
			size_t c = i + k;
			while (k == sizeof(name) - 1 && c < end && (p[c] == ' ' || p[c] == '\t'))
				c++;
			skipping = k == sizeof(name) - 1 && c < end && p[c] == ':';
		}
		if (blank || !skipping) {
			if (buf_append(out, p + i, end - i) < 0)
				return 0;
		}
		i = end;
		if (blank)
			return i;
	}
	return 0;
}

static int maildir_copy(int wfd, const char *prefix, size_t prefix_len, int fd, off_t off,
			off_t len, uint64_t *size, bool *short_read)
{
	struct buf in, out;
	buf_init(&in, MAILDIR_BLOCK);
	buf_init(&out, MAILDIR_BLOCK + 1);
	struct maildir_conv conv = { .cr = false };
	int r = -1;
	*size = 0;
	*short_read = false;
	uint8_t *ib = buf_reserve(&in, MAILDIR_BLOCK);
	if (!ib) {
		errno = ENOMEM;
		goto done;
	}
	for (size_t pos = 0; pos < prefix_len;) {
		size_t n = prefix_len - pos < MAILDIR_BLOCK ? prefix_len - pos : MAILDIR_BLOCK;
		if (maildir_conv_block(&conv, (const uint8_t *)prefix + pos, n, &out) < 0) {
			errno = ENOMEM;
			goto done;
		}
		pos += n;
		if (maildir_flush(wfd, &out, size) < 0)
			goto done;
	}
	off_t done_len = 0;
	{
		/* The first block, its header filtered when it ends there; an
		 * error or a short file is left to the loop below. */
		size_t want = len < MAILDIR_BLOCK ? (size_t)len : MAILDIR_BLOCK;
		ssize_t got;
		do
			got = pread(fd, ib, want, off);
		while (got < 0 && errno == EINTR);
		if (got > 0) {
			struct buf hdr;
			buf_init(&hdr, MAILDIR_BLOCK);
			size_t used = maildir_header_without_return_path(ib, (size_t)got, &hdr);
			int r1 = used > 0 ? maildir_conv_block(&conv, buf_ptr(&hdr), buf_len(&hdr), &out)
					  : 0;
			buf_free(&hdr);
			if (r1 < 0) {
				errno = ENOMEM;
				goto done;
			}
			if (used > 0 && maildir_flush(wfd, &out, size) < 0)
				goto done;
			if (maildir_conv_block(&conv, ib + used, (size_t)got - used, &out) < 0) {
				errno = ENOMEM;
				goto done;
			}
			if (maildir_flush(wfd, &out, size) < 0)
				goto done;
			done_len = got;
		}
	}
	while (done_len < len) {
		size_t want = (len - done_len) < MAILDIR_BLOCK ? (size_t)(len - done_len) : MAILDIR_BLOCK;
		ssize_t got = pread(fd, ib, want, off + done_len);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			goto done;
		}
		if (got == 0) {
			/* The spool file is shorter than its envelope says. */
			*short_read = true;
			errno = EIO;
			goto done;
		}
		if (maildir_conv_block(&conv, ib, (size_t)got, &out) < 0) {
			errno = ENOMEM;
			goto done;
		}
		done_len += got;
		if (maildir_flush(wfd, &out, size) < 0)
			goto done;
	}
	if (conv.cr) {
		if (fs_write_all(wfd, "\r", 1) < 0)
			goto done;
		(*size)++;
	}
	r = 0;
done:;
	int saved = errno;
	buf_free(&in);
	buf_free(&out);
	errno = saved;
	return r;
}

static unsigned maildir_seq;

int maildir_deliver(const char *path, const char *prefix, size_t prefix_len, int fd, off_t off,
		    off_t len, const char *host, struct buf *name_out, bool *temporary,
		    struct err *e)
{
	bool tmp_flag;
	if (!temporary)
		temporary = &tmp_flag;
	*temporary = false;
	if (!path || !*path)
		return err_set(e, "maildir: empty path");
	if (off < 0 || len < 0 || (prefix_len > 0 && !prefix))
		return err_set(e, "maildir: bad message range");

	int dfd = -1, tfd = -1, nfd = -1, wfd = -1;
	int r = -1;
	struct buf base, final;
	buf_init(&base, MAILDIR_NAME_MAX);
	buf_init(&final, MAILDIR_NAME_MAX);
	bool tmp_made = false, new_made = false;

	if (maildir_mkdirs(path) < 0) {
		maildir_fail(temporary, errno, e, "mkdir", path);
		goto out;
	}
	/* The Maildir itself may be a link an administrator placed; what is
	 * inside it is the user's and is never followed. */
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		maildir_fail(temporary, errno, e, "open", path);
		goto out;
	}
	static const char *const subs[] = { "tmp", "new", "cur" };
	int sfd[3] = { -1, -1, -1 };
	for (int k = 0; k < 3; k++) {
		sfd[k] = maildir_subdir(dfd, subs[k]);
		if (sfd[k] < 0) {
			int err = errno;
			for (int j = 0; j < k; j++)
				close(sfd[j]);
			maildir_fail(temporary, err, e, "open", subs[k]);
			goto out;
		}
	}
	tfd = sfd[0];
	nfd = sfd[1];
	close(sfd[2]);

	int64_t now = time_now_us();
	for (int tries = 0;; tries++) {
		buf_reset(&base);
		unsigned seq = __atomic_add_fetch(&maildir_seq, 1, __ATOMIC_RELAXED);
		if (maildir_name(now, (long)getpid(), seq, host, 0, &base) < 0) {
			*temporary = false;
			err_set(e, "maildir: host name too long");
			goto out;
		}
		/* The tmp name is the final one without ",S=": cut the suffix
		 * maildir_name always ends with. */
		const char *b = buf_cstr(&base);
		if (!b) {
			*temporary = true;
			err_set(e, "maildir: out of memory");
			goto out;
		}
		size_t blen = buf_len(&base) - strlen(",S=0");
		base.len = base.off + blen;
		b = buf_cstr(&base);
		wfd = openat(tfd, b, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (wfd >= 0)
			break;
		if (errno != EEXIST || tries + 1 >= MAILDIR_TRIES) {
			maildir_fail(temporary, errno, e, "create tmp", b);
			goto out;
		}
	}
	tmp_made = true;
	const char *bname = buf_cstr(&base);

	uint64_t size = 0;
	bool short_read = false;
	if (maildir_copy(wfd, prefix, prefix_len, fd, off, len, &size, &short_read) < 0) {
		int err = errno;
		*temporary = true;
		if (short_read)
			err_set(e, "maildir: message file shorter than expected");
		else
			err_set(e, "maildir write tmp/%s: %s", bname, strerror(err));
		goto out;
	}
	if (fsync(wfd) < 0) {
		maildir_fail(temporary, errno, e, "fsync", bname);
		goto out;
	}
	/* close can report a deferred write error (NFS): the data is not
	 * safe until it has succeeded. */
	int cr = close(wfd);
	wfd = -1;
	if (cr < 0) {
		maildir_fail(temporary, errno, e, "close", bname);
		goto out;
	}

	if (buf_append(&final, buf_ptr(&base), buf_len(&base)) < 0 ||
	    buf_printf(&final, ",S=%llu", (unsigned long long)size) < 0 || !buf_cstr(&final)) {
		*temporary = false;
		err_set(e, "maildir: file name too long");
		goto out;
	}
	const char *fname = buf_cstr(&final);
	/* link never replaces an existing file, unlike rename; file systems
	 * without hard links get a rename that refuses to replace. */
	if (linkat(tfd, bname, nfd, fname, 0) == 0) {
		new_made = true;
		unlinkat(tfd, bname, 0);
		tmp_made = false;
	} else if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS || errno == EMLINK) {
		int rr = renameat2(tfd, bname, nfd, fname, RENAME_NOREPLACE);
		if (rr < 0 && (errno == EINVAL || errno == ENOSYS))
			rr = renameat(tfd, bname, nfd, fname);
		if (rr < 0) {
			maildir_fail(temporary, errno, e, "rename into new/", fname);
			goto out;
		}
		new_made = true;
		tmp_made = false;
	} else {
		maildir_fail(temporary, errno, e, "link into new/", fname);
		goto out;
	}
	if (fsync(nfd) < 0) {
		maildir_fail(temporary, errno, e, "fsync new/ of", path);
		goto out;
	}
	if (name_out && buf_append(name_out, fname, strlen(fname)) < 0) {
		/* Delivered: a caller's too-small buffer does not undo it. */
		log_event(LOG_LVL_WARN, "maildir_name_cut", "path=%s", path);
	}
	new_made = false;
	r = 0;
out:
	if (wfd >= 0)
		close(wfd);
	if (tmp_made && tfd >= 0)
		unlinkat(tfd, buf_cstr(&base), 0);
	if (new_made && nfd >= 0)
		unlinkat(nfd, buf_cstr(&final), 0);
	if (tfd >= 0)
		close(tfd);
	if (nfd >= 0)
		close(nfd);
	if (dfd >= 0)
		close(dfd);
	buf_free(&base);
	buf_free(&final);
	return r;
}
