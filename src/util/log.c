/* key=value event log to stderr, a file or syslog.  One line per event. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static int log_fd = 2;
static bool log_syslog;
static enum log_level log_max = LOG_LVL_INFO;
static const char *log_proc = "sluice";
static struct buf log_line;
static bool log_skip;
static enum log_level log_cur;

int log_to_file(const char *path, struct err *e)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return err_set(e, "log file %s: %s", path, strerror(errno));
	if (log_fd > 2)
		close(log_fd);
	log_fd = fd;
	log_syslog = false;
	return 0;
}

void log_to_stderr(void)
{
	if (log_fd > 2)
		close(log_fd);
	log_fd = 2;
	log_syslog = false;
}

void log_to_syslog(const char *ident)
{
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	log_syslog = true;
}

void log_set_level(enum log_level lvl)
{
	log_max = lvl;
}

void log_set_process(const char *name)
{
	log_proc = name;
}

static const char *lvl_name(enum log_level l)
{
	switch (l) {
	case LOG_LVL_ERR: return "err";
	case LOG_LVL_WARN: return "warn";
	case LOG_LVL_INFO: return "info";
	default: return "debug";
	}
}

struct buf *log_begin(enum log_level lvl, const char *event)
{
	if (log_line.max == 0)
		buf_init(&log_line, 64 * 1024);
	buf_reset(&log_line);
	log_skip = lvl > log_max;
	log_cur = lvl;
	if (!log_syslog) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		buf_printf(&log_line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ", tm.tm_year + 1900,
			   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			   ts.tv_nsec / 1000000);
	}
	buf_printf(&log_line, "lvl=%s proc=%s pid=%ld event=%s", lvl_name(lvl), log_proc,
		   (long)getpid(), event);
	return &log_line;
}

void log_kv(struct buf *l, const char *key, const char *fmt, ...)
{
	buf_printf(l, " %s=", key);
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(l, fmt, ap);
	va_end(ap);
}

void log_kv_esc(struct buf *l, const char *key, const void *p, size_t n)
{
	buf_printf(l, " %s=\"", key);
	str_escape(l, p, n, 200);
	buf_puts(l, "\"");
}

void log_end(struct buf *l)
{
	if (log_skip)
		return;
	if (log_syslog) {
		static const int pri[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
		syslog(pri[log_cur], "%s", buf_cstr(l));
		return;
	}
	buf_append(l, "\n", 1);
	/* One write per line so that lines from several processes sharing the
	 * file never interleave (O_APPEND). */
	(void)fs_write_all(log_fd, buf_ptr(l), buf_len(l));
}

void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
{
	struct buf *l = log_begin(lvl, event);
	if (fmt && *fmt) {
		buf_puts(l, " ");
		va_list ap;
		va_start(ap, fmt);
		buf_vprintf(l, fmt, ap);
		va_end(ap);
	}
	log_end(l);
}
