/*
 * Delivery state of queued messages: state/<id> beside queue/<id>.
 *
 * The queue file itself is never rewritten after the 250 (it is the
 * promise); what changes with each attempt lives here.  Losing a state
 * file costs at most a repeated attempt, so it is written atomically but
 * with no group commit.  Like the envelope, the text is parsed strictly:
 * the only writer is spool_state_format, so anything else is damage.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue.h"
#include "../smtp/smtp.h"

/* The last reply kept per recipient, in bytes (decoded).  Longer texts
 * are cut when written, and refused when read, so that whatever is read
 * is written back unchanged. */
#define STATE_LAST_MAX 2048
/* One line: "rcpt <index> <status> " and the xtext of STATE_LAST_MAX
 * bytes, three characters each at worst. */
#define STATE_LINE_MAX (64 + 3 * STATE_LAST_MAX)
/* A whole state file; bounds what is read into memory. */
#define STATE_FILE_MAX (64 * 1024 * 1024)
/* The shortest rcpt line, "rcpt 0 pending -\n": bounds n_rcpts by the
 * text's length before anything is allocated. */
#define STATE_RCPT_LINE_MIN 16
/* Temporary names taken in state/ before giving up. */
#define STATE_TMP_TRIES 8

static const char state_magic[] = "sluice-state 1";
static const char *const state_names[] = { "pending", "delivered", "failed" };

void spool_state_init(struct spool_state *st, size_t n_rcpts)
{
	memset(st, 0, sizeof(*st));
	st->rcpts = n_rcpts ? xcalloc(n_rcpts, sizeof(*st->rcpts)) : NULL;
	st->n_rcpts = n_rcpts;
}

void spool_state_free(struct spool_state *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_rcpts; i++)
		free(st->rcpts[i].last);
	free(st->rcpts);
	memset(st, 0, sizeof(*st));
}

/* ---- text ---------------------------------------------------------------- */

int spool_state_format(const struct spool_state *st, struct buf *out, struct err *e)
{
	if (st->next_try < 0)
		return err_set(e, "spool state: negative next try time");
	if (st->n_rcpts > 0 && !st->rcpts)
		return err_set(e, "spool state: no recipient array");
	size_t start = buf_len(out);
	int bad = 0;
	bad |= buf_printf(out, "%s\nattempts %u\nnext %lld\nwarned %d\ngiveup %d\n", state_magic,
			  st->attempts, (long long)st->next_try, st->warned ? 1 : 0,
			  st->giveup ? 1 : 0);
	for (size_t i = 0; i < st->n_rcpts && bad == 0; i++) {
		const struct spool_rcpt_state *r = &st->rcpts[i];
		if ((unsigned)r->status > SPOOL_RCPT_FAILED) {
			out->len = out->off + start;
			return err_set(e, "spool state: recipient %zu: invalid status", i);
		}
		bad |= buf_printf(out, "rcpt %zu %s ", i, state_names[r->status]);
		size_t n = r->last ? strlen(r->last) : 0;
		if (n == 0) {
			/* No text and empty text read back alike: nothing to tell. */
			bad |= buf_puts(out, "-");
		} else if (n == 1 && r->last[0] == '-') {
			/* the text "-" itself, not the placeholder */
			bad |= buf_puts(out, "+2D");
		} else {
			if (n > STATE_LAST_MAX) {
				n = STATE_LAST_MAX;
				/* keep a UTF-8 character whole or not at all */
				while (n > 0 && ((unsigned char)r->last[n] & 0xC0) == 0x80)
					n--;
			}
			bad |= smtp_xtext_encode(r->last, n, out);
		}
		bad |= buf_puts(out, "\n");
	}
	if (bad || buf_len(out) - start > STATE_FILE_MAX) {
		out->len = out->off + start;
		return err_set(e, "spool state: too large");
	}
	return 0;
}

/* A decimal number as the writer prints it: no sign, no leading zero. */
static int state_number(const char *p, size_t n, uint64_t max, uint64_t *out)
{
	if (n > 1 && p[0] == '0')
		return -1;
	return spool_parse_number(p, n, max, out);
}

/* "<key> <value>" with value a number up to max. */
static int state_keyed(const char *line, size_t len, const char *key, uint64_t max,
		       uint64_t *out)
{
	size_t kl = strlen(key);
	if (len <= kl + 1 || memcmp(line, key, kl) != 0 || line[kl] != ' ')
		return -1;
	return state_number(line + kl + 1, len - kl - 1, max, out);
}

/* "rcpt <index> <status> <xtext|->" into st (index checked by caller). */
static int state_rcpt(const char *line, size_t len, struct spool_state *st, uint8_t *seen,
		      struct err *e, size_t lineno)
{
	if (len < 5 || memcmp(line, "rcpt ", 5) != 0)
		return err_set(e, "spool state line %zu: expected rcpt", lineno);
	const char *p = line + 5, *end = line + len;
	const char *s1 = memchr(p, ' ', (size_t)(end - p));
	const char *s2 = s1 ? memchr(s1 + 1, ' ', (size_t)(end - s1 - 1)) : NULL;
	if (!s2 || memchr(s2 + 1, ' ', (size_t)(end - s2 - 1)))
		return err_set(e, "spool state line %zu: bad rcpt", lineno);
	uint64_t idx;
	if (state_number(p, (size_t)(s1 - p), UINT64_MAX, &idx) < 0)
		return err_set(e, "spool state line %zu: bad index", lineno);
	if (idx >= st->n_rcpts)
		return err_set(e, "spool state line %zu: index out of range", lineno);
	if (seen[idx / 8] & (1u << (idx % 8)))
		return err_set(e, "spool state line %zu: duplicate index", lineno);
	const char *w = s1 + 1;
	size_t wl = (size_t)(s2 - w);
	size_t k = 0;
	while (k < 3 && !(strlen(state_names[k]) == wl && memcmp(w, state_names[k], wl) == 0))
		k++;
	if (k == 3)
		return err_set(e, "spool state line %zu: bad status", lineno);
	const char *x = s2 + 1;
	size_t xl = (size_t)(end - x);
	char *last = NULL;
	if (xl == 0)
		return err_set(e, "spool state line %zu: no reply field", lineno);
	if (!(xl == 1 && x[0] == '-')) {
		struct buf b;
		buf_init(&b, STATE_LAST_MAX);
		if (smtp_xtext_decode(x, xl, &b) < 0 || buf_len(&b) == 0 ||
		    memchr(buf_ptr(&b), '\0', buf_len(&b))) {
			buf_free(&b);
			return err_set(e, "spool state line %zu: bad reply text", lineno);
		}
		last = str_ndup(buf_ptr(&b), buf_len(&b));
		buf_free(&b);
	}
	seen[idx / 8] |= (uint8_t)(1u << (idx % 8));
	st->rcpts[idx].status = (enum spool_rcpt_status)k;
	st->rcpts[idx].last = last;
	return 0;
}

int spool_state_parse(const char *text, size_t n, size_t n_rcpts, struct spool_state *out,
		      struct err *e)
{
	memset(out, 0, sizeof(*out));
	if (n > STATE_FILE_MAX)
		return err_set(e, "spool state: too large");
	/* Checked before allocating: a count the text cannot hold is an error
	 * whatever the text says. */
	if (n_rcpts > n / STATE_RCPT_LINE_MIN)
		return err_set(e, "spool state: too short for %zu recipients", n_rcpts);
	spool_state_init(out, n_rcpts);
	uint8_t *seen = xcalloc(n_rcpts / 8 + 1, 1);
	size_t pos = 0, lineno = 0;
	uint64_t v;
	while (pos < n) {
		lineno++;
		size_t avail = n - pos;
		size_t look = avail < STATE_LINE_MAX + 1 ? avail : STATE_LINE_MAX + 1;
		const char *nl = memchr(text + pos, '\n', look);
		if (!nl) {
			err_set(e, look > STATE_LINE_MAX ? "spool state line %zu: too long"
							 : "spool state line %zu: truncated",
				lineno);
			goto bad;
		}
		const char *line = text + pos;
		size_t len = (size_t)(nl - line);
		pos += len + 1;
		switch (lineno) {
		case 1:
			if (len != strlen(state_magic) || memcmp(line, state_magic, len) != 0) {
				err_set(e, "spool state: not a sluice state file (version 1)");
				goto bad;
			}
			break;
		case 2:
			if (state_keyed(line, len, "attempts", UINT_MAX, &v) < 0) {
				err_set(e, "spool state line 2: bad attempts");
				goto bad;
			}
			out->attempts = (unsigned)v;
			break;
		case 3:
			if (state_keyed(line, len, "next", INT64_MAX, &v) < 0) {
				err_set(e, "spool state line 3: bad next");
				goto bad;
			}
			out->next_try = (int64_t)v;
			break;
		case 4:
		case 5:
			if (state_keyed(line, len, lineno == 4 ? "warned" : "giveup", 1, &v) < 0) {
				err_set(e, "spool state line %zu: bad %s", lineno,
					lineno == 4 ? "warned" : "giveup");
				goto bad;
			}
			if (lineno == 4)
				out->warned = v == 1;
			else
				out->giveup = v == 1;
			break;
		default:
			if (lineno - 5 > n_rcpts) {
				err_set(e, "spool state line %zu: more rcpt lines than recipients",
					lineno);
				goto bad;
			}
			if (state_rcpt(line, len, out, seen, e, lineno) < 0)
				goto bad;
		}
	}
	if (lineno < 5) {
		err_set(e, "spool state: truncated");
		goto bad;
	}
	/* Exactly n_rcpts distinct indexes below n_rcpts: all present. */
	if (lineno - 5 != n_rcpts) {
		err_set(e, "spool state: %zu rcpt lines for %zu recipients", lineno - 5, n_rcpts);
		goto bad;
	}
	free(seen);
	return 0;
bad:
	free(seen);
	spool_state_free(out);
	return -1;
}

/* ---- files ----------------------------------------------------------------- */

int spool_state_read(struct spool *sp, const char *id, size_t n_rcpts, struct spool_state *out,
		     struct err *e)
{
	memset(out, 0, sizeof(*out));
	if (!queue_id_valid(id))
		return err_set(e, "spool state: invalid queue id");
	/* O_NONBLOCK: a FIFO planted in state/ must not hang the runner. */
	int fd = openat(spool_state_dirfd(sp), id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT) {
			spool_state_init(out, n_rcpts);
			return 0;
		}
		return err_set(e, "spool state %s: open: %s", id, strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(e, "spool state %s: not a regular file", id);
	}
	if (st.st_size > STATE_FILE_MAX) {
		close(fd);
		return err_set(e, "spool state %s: too large", id);
	}
	struct buf b;
	buf_init(&b, STATE_FILE_MAX);
	int r = 0;
	for (;;) {
		uint8_t *w = buf_reserve(&b, 64 * 1024);
		if (!w) {
			r = err_set(e, "spool state %s: too large", id);
			break;
		}
		ssize_t got = read(fd, w, 64 * 1024);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = err_set(e, "spool state %s: read: %s", id, strerror(errno));
			break;
		}
		if (got == 0)
			break;
		buf_commit(&b, (size_t)got);
	}
	close(fd);
	if (r == 0) {
		struct err pe;
		if (spool_state_parse((const char *)buf_ptr(&b), buf_len(&b), n_rcpts, out, &pe) < 0)
			r = err_set(e, "%s: %s", id, pe.msg);
	}
	buf_free(&b);
	return r;
}

int spool_state_write(struct spool *sp, const char *id, const struct spool_state *st,
		      struct err *e)
{
	if (!queue_id_valid(id))
		return err_set(e, "spool state: invalid queue id");
	struct buf text;
	buf_init(&text, STATE_FILE_MAX);
	if (spool_state_format(st, &text, e) < 0) {
		buf_free(&text);
		return -1;
	}
	int dfd = spool_state_dirfd(sp);
	/* "<id>.tmp.<pid>.<n>": recovery knows the "<id>.tmp" prefix. */
	char tmp[QUEUE_ID_LEN + 48];
	int fd = -1;
	for (int i = 0; i < STATE_TMP_TRIES; i++) {
		snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%d", id, (long)getpid(), i);
		fd = openat(dfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		buf_free(&text);
		return err_set(e, "spool state %s: create: %s", id, strerror(errno));
	}
	const char *what = NULL;
	if (fs_write_all(fd, buf_ptr(&text), buf_len(&text)) < 0)
		what = "write";
	else if (spool_fsync(fd) < 0)
		what = "fsync";
	int er = errno;
	if (close(fd) < 0 && !what) {
		what = "close";
		er = errno;
	}
	buf_free(&text);
	if (!what && renameat(dfd, tmp, dfd, id) < 0) {
		what = "rename";
		er = errno;
	}
	if (what) {
		unlinkat(dfd, tmp, 0);
		return err_set(e, "spool state %s: %s: %s", id, what, strerror(er));
	}
	if (spool_fsync(dfd) < 0)
		return err_set(e, "spool state directory: fsync: %s", strerror(errno));
	return 0;
}

int spool_remove(struct spool *sp, const char *id, bool durable, struct err *e)
{
	if (!queue_id_valid(id))
		return err_set(e, "spool: invalid queue id");
	/* The message first: a crash between the two leaves an orphan state
	 * file, which recovery removes; the other order could leave a message
	 * that looks never tried and is delivered again to every recipient.
	 * So a state file is removed only once the message's removal is on
	 * disk.  A message delivered at its first attempt has none, and then
	 * nothing is synced unless durable. */
	if (unlinkat(spool_queue_dirfd(sp), id, 0) < 0 && errno != ENOENT)
		return err_set(e, "spool %s: remove: %s", id, strerror(errno));
	struct stat st;
	bool has_state = fstatat(spool_state_dirfd(sp), id, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if ((durable || has_state) && spool_fsync(spool_queue_dirfd(sp)) < 0)
		return err_set(e, "spool queue directory: fsync: %s", strerror(errno));
	if (has_state && unlinkat(spool_state_dirfd(sp), id, 0) < 0 && errno != ENOENT)
		return err_set(e, "spool state %s: remove: %s", id, strerror(errno));
	if (durable && has_state && spool_fsync(spool_state_dirfd(sp)) < 0)
		return err_set(e, "spool state directory: fsync: %s", strerror(errno));
	return 0;
}
