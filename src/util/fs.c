/* File helpers for the durability rule: fsync of files and directories. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int fs_fsync_dir(int dirfd, struct err *e)
{
	if (fsync(dirfd) < 0)
		return err_set(e, "fsync of directory: %s", strerror(errno));
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode, struct err *e)
{
	char *p = str_dup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			err_set(e, "mkdir %s: %s", p, strerror(errno));
			free(p);
			return -1;
		}
		*s = '/';
	}
	int r = 0;
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		r = err_set(e, "mkdir %s: %s", p, strerror(errno));
	free(p);
	return r;
}

int fs_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *e)
{
	struct buf tmp;
	buf_init(&tmp, 8192);
	buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	const char *t = buf_cstr(&tmp);
	int fd = open(t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		err_set(e, "open %s: %s", t, strerror(errno));
		buf_free(&tmp);
		return -1;
	}
	if (fs_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		err_set(e, "write %s: %s", t, strerror(errno));
		close(fd);
		unlink(t);
		buf_free(&tmp);
		return -1;
	}
	close(fd);
	if (rename(t, path) < 0) {
		err_set(e, "rename %s: %s", path, strerror(errno));
		unlink(t);
		buf_free(&tmp);
		return -1;
	}
	buf_free(&tmp);
	/* The new name is durable only once its directory is synced. */
	char *dir = str_dup(path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (dfd < 0)
		return err_set(e, "open directory of %s: %s", path, strerror(errno));
	int r = fs_fsync_dir(dfd, e);
	close(dfd);
	return r;
}

int fs_read_file(const char *path, struct buf *out, struct err *e)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "%s: %s", path, strerror(errno));
	for (;;) {
		/* Never ask for more than fits, so a file of exactly max bytes
		 * reads; a one-byte probe at the limit detects a larger one. */
		size_t room = out->max - buf_len(out);
		size_t want = room < 4096 ? room : 4096;
		uint8_t probe;
		uint8_t *w = want ? buf_reserve(out, want) : &probe;
		if (!w) {
			close(fd);
			return err_set(e, "%s: out of memory", path);
		}
		ssize_t r = read(fd, w, want ? want : 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return err_set(e, "%s: %s", path, strerror(errno));
		}
		if (r == 0)
			break;
		if (!want) {
			close(fd);
			return err_set(e, "%s: file too large", path);
		}
		buf_commit(out, (size_t)r);
	}
	close(fd);
	return 0;
}
