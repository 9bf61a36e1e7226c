/*
 * The spool writer, group commit and crash recovery.
 *
 * Everything after spool_open works relative to directory descriptors
 * opened there, never by path: the daemon opens the spool before it drops
 * privileges and chroots, after which the path may no longer resolve.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "spool_int.h"

/* Message bytes are written in blocks of this size, not per call. */
#define SPOOL_BLOCK (64 * 1024)
/* Bound on the envelope text built in memory (the reader's limit is
 * enforced by spool_format_env). */
#define SPOOL_ENV_BUF_MAX (2 * 1024 * 1024)
/* Numbered names tried in corrupt/ when the plain name is taken. */
#define SPOOL_SET_ASIDE_TRIES 100

struct spool_msg {
	struct spool *sp;
	int fd;           /* -1 until the file is created (first full block, or the commit) */
	bool created;     /* tmp/<id> is ours */
	char id[QUEUE_ID_LEN + 1];
	struct buf out;   /* pending bytes, flushed in SPOOL_BLOCK pieces */
	bool failed;      /* a write failed: the commit must fail */
	struct err err;   /* why */
	enum spool_fail why; /* ... and whether that was a full file system */
	uint64_t written; /* bytes already in the file (the rest is in out) */
	off_t mark_at;    /* file offset of the '8' of "content 8bit", -1 if none */
	bool saw_8bit;    /* a message byte above 127 was written */
};

static atomic_uint_fast64_t spool_fsyncs;

/* Id allocation state of this process: the last time used and the
 * sequence within it.  Keeping the time monotonic here means ids stay
 * unique and ordered even if the clock steps back or more than 1024
 * messages start within one microsecond. */
static int64_t spool_id_last_us = -1;
static unsigned spool_id_seq;

static void spool_id_next(int64_t now_us, int64_t *t, unsigned *seq)
{
	if (now_us > spool_id_last_us) {
		spool_id_last_us = now_us;
		spool_id_seq = 0;
	} else if (++spool_id_seq >= 1024) {
		spool_id_last_us++;
		spool_id_seq = 0;
	}
	*t = spool_id_last_us;
	*seq = spool_id_seq;
}

uint64_t spool_fsync_count(void)
{
	return (uint64_t)atomic_load(&spool_fsyncs);
}

int spool_fsync(int fd)
{
	atomic_fetch_add(&spool_fsyncs, 1);
	return fsync(fd);
}

static int spool_fdatasync(int fd)
{
	atomic_fetch_add(&spool_fsyncs, 1);
	return fdatasync(fd);
}

int spool_queue_dirfd(const struct spool *sp)
{
	return sp->queuefd;
}

int spool_state_dirfd(const struct spool *sp)
{
	return sp->statefd;
}

/* ---- open / close ------------------------------------------------------- */

static int spool_open_sub(int dirfd, const char *dir, const char *name, bool *created,
			  struct err *e)
{
	if (mkdirat(dirfd, name, 0700) == 0)
		*created = true;
	else if (errno != EEXIST)
		return err_set(e, "spool %s/%s: mkdir: %s", dir, name, strerror(errno));
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "spool %s/%s: %s", dir, name, strerror(errno));
	return fd;
}

/* Opens this process's own description of tmp/ (see syncfd), before it
 * writes anything, so that every later writeback error is reported to it.
 * A child's copy of its parent's is closed, not used. */
static int spool_sync_fd(struct spool *sp)
{
	pid_t me = getpid();
	if (sp->sync_pid == me && sp->syncfd >= 0)
		return sp->syncfd;
	if (sp->syncfd >= 0)
		close(sp->syncfd);
	sp->syncfd = openat(sp->tmpfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	sp->sync_pid = me;
	return sp->syncfd;
}

int spool_process_sync_fd(struct spool *sp)
{
	return spool_sync_fd(sp);
}

void spool_set_group_sync(struct spool *sp, bool on)
{
	sp->group_sync = on;
	/* Only group commit uses syncfs.  Called by each worker as it starts,
	 * before its file-system thread and its first write: the description
	 * is opened here, by one thread, in time to see every error. */
	if (on)
		(void)spool_sync_fd(sp);
}

int spool_open(const char *dir, struct spool **out, struct err *e)
{
	*out = NULL;
	if (fs_mkdir_p(dir, 0700, e) < 0)
		return -1;
	struct spool *sp = xcalloc(1, sizeof(*sp));
	sp->tmpfd = sp->queuefd = sp->corruptfd = sp->statefd = sp->syncfd = -1;
	sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dirfd < 0) {
		err_set(e, "spool %s: %s", dir, strerror(errno));
		free(sp);
		return -1;
	}
	bool created = false;
	if ((sp->tmpfd = spool_open_sub(sp->dirfd, dir, "tmp", &created, e)) < 0 ||
	    (sp->queuefd = spool_open_sub(sp->dirfd, dir, "queue", &created, e)) < 0 ||
	    (sp->corruptfd = spool_open_sub(sp->dirfd, dir, "corrupt", &created, e)) < 0 ||
	    (sp->statefd = spool_open_sub(sp->dirfd, dir, "state", &created, e)) < 0) {
		spool_close(sp);
		return -1;
	}
	/* New subdirectories must survive a crash before a message goes in. */
	if (created && spool_fsync(sp->dirfd) < 0) {
		err_set(e, "spool %s: fsync: %s", dir, strerror(errno));
		spool_close(sp);
		return -1;
	}
	*out = sp;
	return 0;
}

void spool_close(struct spool *sp)
{
	if (!sp)
		return;
	spool_thread_stop(sp);
	int fds[] = { sp->dirfd, sp->tmpfd, sp->queuefd, sp->corruptfd, sp->statefd, sp->syncfd };
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(sp);
}

/* ---- writing ------------------------------------------------------------ */

/* A full file system or quota is worth telling apart: the client is told
 * 452 4.3.1 (RFC 3463) rather than a generic local error. */
static enum spool_fail spool_fail_of(int er)
{
	return er == ENOSPC || er == EDQUOT ? SPOOL_FAIL_NOSPACE : SPOOL_FAIL_OTHER;
}

static void spool_msg_fail(struct spool_msg *m, const char *what, int er)
{
	if (!m->failed) {
		err_set(&m->err, "spool %s: %s: %s", m->id, what, strerror(er));
		m->why = spool_fail_of(er);
	}
	m->failed = true;
}

enum spool_fail spool_msg_failure(const struct spool_msg *m)
{
	return m->failed ? m->why : SPOOL_FAIL_NONE;
}

int spool_free_space(const struct spool *sp, uint64_t *bytes, struct err *e)
{
	struct statvfs st;
	if (fstatvfs(sp->tmpfd, &st) < 0)
		return err_set(e, "spool: statvfs: %s", strerror(errno));
	/* f_bavail: what an unprivileged writer (the workers) may still use. */
	uint64_t fr = st.f_frsize ? st.f_frsize : st.f_bsize;
	uint64_t av = st.f_bavail;
	*bytes = fr && av > UINT64_MAX / fr ? UINT64_MAX : av * fr;
	return 0;
}

/* The file is made only when bytes must go to it: a message that fits in
 * one block is created, written and synced in one go by the commit, which
 * may run in the file-system thread, and the event loop never waits for
 * the directory or the inode allocator.  The id was allocated at begin
 * (it is in the Received header already); O_EXCL still guards it. */
static int spool_msg_create(struct spool_msg *m)
{
	if (m->fd >= 0)
		return 0;
	m->fd = openat(m->sp->tmpfd, m->id, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW,
		       0600);
	if (m->fd < 0) {
		spool_msg_fail(m, "create", errno);
		return -1;
	}
	m->created = true;
	return 0;
}

static int spool_msg_flush(struct spool_msg *m)
{
	if (m->failed || spool_msg_create(m) < 0)
		return -1;
	if (buf_len(&m->out) > 0) {
		if (fs_write_all(m->fd, buf_ptr(&m->out), buf_len(&m->out)) < 0) {
			spool_msg_fail(m, "write", errno);
			return -1;
		}
		m->written += buf_len(&m->out);
		buf_reset(&m->out);
	}
	return 0;
}

/* Appends to the block buffer, writing each full block; runs of whole
 * blocks are written straight from the caller's memory. */
static int spool_msg_put(struct spool_msg *m, const void *p, size_t n)
{
	const uint8_t *c = p;
	if (m->failed)
		return -1;
	while (n > 0) {
		size_t have = buf_len(&m->out);
		if (have == 0 && n >= SPOOL_BLOCK) {
			size_t whole = n - n % SPOOL_BLOCK;
			if (spool_msg_create(m) < 0)
				return -1;
			if (fs_write_all(m->fd, c, whole) < 0) {
				spool_msg_fail(m, "write", errno);
				return -1;
			}
			m->written += whole;
			c += whole;
			n -= whole;
			continue;
		}
		size_t take = SPOOL_BLOCK - have < n ? SPOOL_BLOCK - have : n;
		if (buf_append(&m->out, c, take) < 0) {
			spool_msg_fail(m, "buffer", ENOMEM);
			return -1;
		}
		c += take;
		n -= take;
		if (buf_len(&m->out) == SPOOL_BLOCK && spool_msg_flush(m) < 0)
			return -1;
	}
	return 0;
}

int spool_msg_begin(struct spool *sp, struct spool_env *env, int64_t now_us,
		    struct spool_msg **out, struct err *e)
{
	*out = NULL;
	char id[QUEUE_ID_LEN + 1];
	int64_t t;
	unsigned seq;
	spool_id_next(now_us, &t, &seq);
	queue_id_make(id, t, (long)getpid(), seq);

	memcpy(env->id, id, sizeof(id));
	/* An unset arrival time would make the message look decades old. */
	if (env->received == 0)
		env->received = now_us / 1000000;
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	m->sp = sp;
	m->fd = -1;
	memcpy(m->id, id, sizeof(id));
	buf_init(&m->out, SPOOL_BLOCK);

	struct buf text;
	buf_init(&text, SPOOL_ENV_BUF_MAX);
	ssize_t mark = -1;
	int r = spool_format_env_marked(env, &text, &mark, e);
	m->mark_at = (off_t)mark;
	if (r == 0 && spool_msg_put(m, buf_ptr(&text), buf_len(&text)) < 0)
		r = err_set(e, "%s", m->err.msg);
	buf_free(&text);
	if (r < 0) {
		spool_msg_abort(m);
		return -1;
	}
	*out = m;
	return 0;
}

const char *spool_msg_id(const struct spool_msg *m)
{
	return m->id;
}

/* Records that the message is 7-bit after all: "content 8bit" becomes
 * "content 7bit", in the block buffer while the envelope is still there,
 * else in the file.  Before the fsync, so the commit covers it. */
static void spool_msg_settle(struct spool_msg *m)
{
	if (m->failed || m->mark_at < 0 || m->saw_8bit)
		return;
	if ((uint64_t)m->mark_at >= m->written) {
		size_t at = (size_t)((uint64_t)m->mark_at - m->written);
		if (at < buf_len(&m->out))
			m->out.data[m->out.off + at] = '7';
		return;
	}
	ssize_t w;
	do
		w = pwrite(m->fd, "7", 1, m->mark_at);
	while (w < 0 && errno == EINTR);
	if (w != 1)
		spool_msg_fail(m, "write", w < 0 ? errno : EIO);
}

int spool_msg_write(struct spool_msg *m, const void *p, size_t n, struct err *e)
{
	if (m->mark_at >= 0 && !m->saw_8bit && str_has_8bit(p, n))
		m->saw_8bit = true;
	if (spool_msg_put(m, p, n) < 0)
		return err_set(e, "%s", m->err.msg);
	return 0;
}

static void spool_msg_free(struct spool_msg *m)
{
	if (m->fd >= 0)
		close(m->fd);
	buf_free(&m->out);
	free(m);
}

void spool_msg_abort(struct spool_msg *m)
{
	if (!m)
		return;
	if (m->created)
		unlinkat(m->sp->tmpfd, m->id, 0);
	spool_msg_free(m);
}

/* Moves tmp/<id> to queue/<id> without ever replacing a queued message. */
static int spool_rename_noreplace(int from_dir, const char *from, int to_dir, const char *to)
{
	if (renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* File systems without RENAME_NOREPLACE: link() never replaces. */
	if (linkat(from_dir, from, to_dir, to, 0) < 0)
		return -1;
	unlinkat(from_dir, from, 0);
	return 0;
}

size_t spool_commit_batch(struct spool *sp, struct spool_msg **msgs, size_t n, bool *ok,
			  enum spool_fail *why, struct err *e)
{
	bool first_err = true;
	size_t renamed = 0;
#define NOTE_ERR(...)                              \
	do {                                       \
		if (first_err)                     \
			err_set(e, __VA_ARGS__);   \
		first_err = false;                 \
	} while (0)

	size_t live = 0;
	for (size_t i = 0; i < n; i++) {
		ok[i] = false;
		if (why)
			why[i] = SPOOL_FAIL_NONE;
		spool_msg_settle(msgs[i]);
		if (spool_msg_flush(msgs[i]) == 0)
			live++;
	}
	/* Every file's data must be on disk before its rename.  One syncfs
	 * flushes them all (and anything else dirty on that file system) in
	 * one journal commit, where N fdatasyncs make N; it reports writeback
	 * errors since Linux 5.8, and on failure each file is synced on its
	 * own so that the failure lands on the right message. */
	bool synced = false;
	int sfd = sp->group_sync && live >= 2 ? spool_sync_fd(sp) : -1;
	if (sfd >= 0) {
		atomic_fetch_add(&spool_fsyncs, 1);
		synced = syncfs(sfd) == 0;
	}
	for (size_t i = 0; i < n && !synced; i++) {
		struct spool_msg *m = msgs[i];
		if (!m->failed && spool_fdatasync(m->fd) < 0)
			spool_msg_fail(m, "fsync", errno);
	}
	for (size_t i = 0; i < n; i++) {
		struct spool_msg *m = msgs[i];
		if (!m->failed) {
			int fd = m->fd;
			m->fd = -1;
			if (close(fd) < 0)
				spool_msg_fail(m, "close", errno);
		}
		if (!m->failed && spool_rename_noreplace(sp->tmpfd, m->id, sp->queuefd, m->id) < 0)
			spool_msg_fail(m, "rename into queue", errno);
		if (m->failed) {
			NOTE_ERR("%s", m->err.msg);
			if (why)
				why[i] = m->why;
			if (m->created)
				unlinkat(sp->tmpfd, m->id, 0);
			continue;
		}
		ok[i] = true;
		renamed++;
	}

	/* One directory sync makes every rename above durable. */
	if (renamed > 0 && spool_fsync(sp->queuefd) < 0) {
		int er = errno;
		NOTE_ERR("spool queue directory: fsync: %s", strerror(er));
		/* Not acknowledged, so not to be delivered either: the client
		 * will send it again. */
		for (size_t i = 0; i < n; i++) {
			if (ok[i]) {
				unlinkat(sp->queuefd, msgs[i]->id, 0);
				ok[i] = false;
				if (why)
					why[i] = spool_fail_of(er);
			}
		}
		renamed = 0;
	}
#undef NOTE_ERR
	for (size_t i = 0; i < n; i++) {
		spool_msg_free(msgs[i]);
		msgs[i] = NULL;
	}
	return renamed;
}

/* ---- recovery ------------------------------------------------------------ */

struct spool_names {
	char **v;
	size_t n, cap;
};

static void spool_names_free(struct spool_names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* Lists a directory first, so that entries moved away while we work do not
 * disturb the readdir position. */
static int spool_list_dir(int dirfd, const char *what, struct spool_names *l, struct err *e)
{
	memset(l, 0, sizeof(*l));
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "spool %s: %s", what, strerror(errno));
	DIR *d = fdopendir(fd);
	if (!d) {
		int er = errno;
		close(fd);
		return err_set(e, "spool %s: %s", what, strerror(er));
	}
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
			errno = 0;
			continue;
		}
		if (l->n == l->cap) {
			l->cap = l->cap ? l->cap * 2 : 32;
			l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
		}
		l->v[l->n++] = str_dup(de->d_name);
		errno = 0;
	}
	int er = errno;
	closedir(d);
	if (er) {
		spool_names_free(l);
		return err_set(e, "spool %s: read: %s", what, strerror(er));
	}
	return 0;
}

static void spool_log_name(enum log_level lvl, const char *event, const char *name,
			   const char *reason)
{
	struct buf *l = log_begin(lvl, event);
	/* Any other name is whatever someone put there: escaped. */
	if (queue_id_valid(name))
		log_kv(l, "id", "%s", name);
	else
		log_kv_esc(l, "file", name, strlen(name));
	if (reason)
		log_kv_esc(l, "reason", reason, strlen(reason));
	log_end(l);
}

/* Regular file?  1 yes, 0 no, -1 gone or unreadable (errno). */
static int spool_is_reg(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return S_ISREG(st.st_mode) ? 1 : 0;
}

static bool spool_set_aside(struct spool *sp, const char *name, const char *reason)
{
	/* Keep the name when we can; number it if corrupt/ has one already. */
	struct buf to;
	buf_init(&to, 4096 + 16);
	bool moved = false;
	int er = 0;
	for (int i = 0; i < SPOOL_SET_ASIDE_TRIES && !moved; i++) {
		buf_reset(&to);
		if (i == 0 ? buf_puts(&to, name) : buf_printf(&to, "%s.%d", name, i))
			break;
		const char *t = buf_cstr(&to);
		if (!t)
			break;
		if (spool_rename_noreplace(sp->queuefd, name, sp->corruptfd, t) == 0)
			moved = true;
		else if ((er = errno) != EEXIST)
			break;
	}
	buf_free(&to);
	if (moved) {
		spool_log_name(LOG_LVL_WARN, "spool_set_aside", name, reason);
	} else {
		char why[600];
		snprintf(why, sizeof(why), "%s; could not move to corrupt/: %s", reason,
			 strerror(er ? er : ENAMETOOLONG));
		spool_log_name(LOG_LVL_ERR, "spool_set_aside_failed", name, why);
	}
	return moved;
}

/* Is name "<queue id>.tmp..." (an unfinished state/ write, see state.c)? */
static bool spool_is_state_tmp(const char *name)
{
	char id[QUEUE_ID_LEN + 1];
	if (strlen(name) < QUEUE_ID_LEN + 4 || memcmp(name + QUEUE_ID_LEN, ".tmp", 4) != 0)
		return false;
	memcpy(id, name, QUEUE_ID_LEN);
	id[QUEUE_ID_LEN] = '\0';
	return queue_id_valid(id);
}

/* Removes state/ files of messages no longer queued, and unfinished state
 * writes; anything else there is left alone with a warning. */
static int spool_recover_state(struct spool *sp, size_t *removed, struct err *e)
{
	struct spool_names l;
	if (spool_list_dir(sp->statefd, "state", &l, e) < 0)
		return -1;
	for (size_t i = 0; i < l.n; i++) {
		const char *name = l.v[i];
		int reg = spool_is_reg(sp->statefd, name);
		if (reg == 0) {
			spool_log_name(LOG_LVL_WARN, "spool_stray_entry", name,
				       "not a regular file in state/; left alone");
			continue;
		}
		if (reg < 0)
			continue;
		const char *event;
		if (queue_id_valid(name)) {
			struct stat st;
			if (fstatat(sp->queuefd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
				continue;
			event = "spool_recover_state_orphan";
		} else if (spool_is_state_tmp(name)) {
			event = "spool_recover_state_tmp";
		} else {
			spool_log_name(LOG_LVL_WARN, "spool_stray_entry", name,
				       "not a state file in state/; left alone");
			continue;
		}
		if (unlinkat(sp->statefd, name, 0) == 0) {
			spool_log_name(LOG_LVL_INFO, event, name, NULL);
			(*removed)++;
		} else if (errno != ENOENT) {
			spool_log_name(LOG_LVL_ERR, "spool_recover_state_failed", name,
				       strerror(errno));
		}
	}
	spool_names_free(&l);
	return 0;
}

int spool_recover(struct spool *sp, size_t counts[3], struct err *e)
{
	size_t c[3] = { 0, 0, 0 };
	struct spool_names l;

	if (spool_list_dir(sp->tmpfd, "tmp", &l, e) < 0)
		return -1;
	for (size_t i = 0; i < l.n; i++) {
		int reg = spool_is_reg(sp->tmpfd, l.v[i]);
		if (reg == 0) {
			spool_log_name(LOG_LVL_WARN, "spool_stray_entry", l.v[i],
				       "not a regular file in tmp/; left alone");
			continue;
		}
		if (reg < 0)
			continue;
		if (unlinkat(sp->tmpfd, l.v[i], 0) == 0) {
			spool_log_name(LOG_LVL_INFO, "spool_recover_tmp", l.v[i], NULL);
			c[0]++;
		} else if (errno != ENOENT) {
			spool_log_name(LOG_LVL_ERR, "spool_recover_tmp_failed", l.v[i],
				       strerror(errno));
		}
	}
	spool_names_free(&l);

	if (spool_list_dir(sp->queuefd, "queue", &l, e) < 0)
		return -1;
	for (size_t i = 0; i < l.n; i++) {
		const char *name = l.v[i];
		int reg = spool_is_reg(sp->queuefd, name);
		if (reg == 0) {
			spool_log_name(LOG_LVL_WARN, "spool_stray_entry", name,
				       "not a regular file in queue/; left alone");
			continue;
		}
		if (reg < 0)
			continue;
		if (!queue_id_valid(name)) {
			if (spool_set_aside(sp, name, "not a queue id"))
				c[1]++;
			continue;
		}
		struct spool_env env;
		struct err er;
		if (spool_read_env(sp, name, &env, &er) < 0) {
			if (spool_set_aside(sp, name, er.msg))
				c[1]++;
			continue;
		}
		spool_env_free(&env);
		c[2]++;
	}
	spool_names_free(&l);

	/* Runs after the queue/ pass: the state of a message just set aside
	 * is an orphan too. */
	size_t state_removed = 0;
	if (spool_recover_state(sp, &state_removed, e) < 0)
		return -1;

	/* Make the moves durable so a second crash does not bring them back. */
	if (c[1] > 0 && (spool_fsync(sp->corruptfd) < 0 || spool_fsync(sp->queuefd) < 0))
		return err_set(e, "spool: fsync after recovery: %s", strerror(errno));
	if (state_removed > 0 && spool_fsync(sp->statefd) < 0)
		return err_set(e, "spool: fsync of state/ after recovery: %s", strerror(errno));
	if (counts)
		memcpy(counts, c, sizeof(c));
	return 0;
}
