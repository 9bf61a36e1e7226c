/* abuse_client: hostile SMTP clients for bench/abuse.sh.  One process, one
 * epoll loop, many sessions; each session's fate is classified and summed
 * into one "key=value ..." status line.
 *
 * usage: abuse_client MODE HOST PORT N NSRC WINDOW T LIMIT STATUS [INTERVAL_MS [LINE_MS]]
 *
 *   MODE   flood  open N sessions; a session greeted 220 is held (and
 *                 watched) until SIGTERM or LIMIT; one that gets a 421 must
 *                 then see the server close it within T seconds.
 *          idle   open N sessions, send nothing; a greeted session is
 *                 watched until the server sends its 421 and closes it.
 *          slow   open N sessions; once greeted, each sends
 *                 "EHLO slow.test\r\n" (16 bytes) then "NOOP\r\n" forever,
 *                 one byte every INTERVAL_MS, until the server closes it or
 *                 LIMIT.  With LINE_MS (>= 0), the EHLO line is instead sent
 *                 whole LINE_MS after the greeting, and only the NOOPs are
 *                 dribbled.  Ends once the server has closed every session.
 *   NSRC   sources 127.0.0.F .. 127.0.0.(F+NSRC-1) in turn, F being the
 *          environment's ABUSE_SRC_FIRST (default 1)
 *   WINDOW most sessions waiting for their first reply at any time
 *   T      seconds a session may wait for its first reply (and, after a
 *          421, for the server's close) before it counts as hung
 *   LIMIT  seconds the whole run may last
 *
 * STATUS is written (atomically, via STATUS.tmp) once every session has its
 * first reply or failed ("phase=open"), and again at exit ("phase=end").
 * Figures: greeted, refused (421 as first reply), refused_enh (of them, with
 * an enhanced status code "421 4."), refused_closed (closed by the server
 * within T after the 421), refused_open (421, no close within T),
 * refused_432 / refused_470 (of them "421 4.3.2" / "421 4.7.0"),
 * noreply_closed (closed with no reply at all), other (another first
 * reply), hung (no reply, no close within T), failed (socket or connect
 * error), max_421_ms (connect to 421), then per mode: cut_421 (greeted
 * sessions that got a 421 later), cut_enh (of them "421 4.4.2"),
 * cut_closed (greeted sessions the server closed), cut_min_ms/cut_max_ms
 * (greeting to close), line_min_ms/line_max_ms (last complete line sent,
 * or the greeting if none, to close), replies (final replies after the
 * greeting), sent (bytes sent), open (greeted sessions still open at the
 * end).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { LINE_KEEP = 128, EVS = 1024 };
enum mode { M_FLOOD, M_IDLE, M_SLOW };
enum st { S_NEW, S_WAIT, S_GREETED, S_REFUSED, S_DONE };

struct sess {
	int fd;
	unsigned char st;
	bool cut421, cut_enh;
	unsigned short len;
	unsigned sent;
	double t0, t_greet, t_reply, t_line;
	char line[LINE_KEEP];
};

static const char slow_script[] = "EHLO slow.test\r\n";
static const char slow_repeat[] = "NOOP\r\n";

static struct {
	long greeted, refused, refused_enh, refused_432, refused_470, refused_closed, refused_open,
		noreply_closed, other, hung, failed, cut_421, cut_enh, cut_closed, replies, sent, open;
	double max_421, cut_min, cut_max, line_min, line_max;
} f;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void status(const char *path, const char *phase, double secs)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *o = fopen(tmp, "w");
	if (!o)
		return;
	fprintf(o,
		"phase=%s greeted=%ld refused=%ld refused_enh=%ld refused_432=%ld refused_470=%ld "
		"refused_closed=%ld refused_open=%ld noreply_closed=%ld other=%ld hung=%ld failed=%ld "
		"max_421_ms=%.0f cut_421=%ld cut_enh=%ld cut_closed=%ld cut_min_ms=%.0f "
		"cut_max_ms=%.0f line_min_ms=%.0f line_max_ms=%.0f replies=%ld sent=%ld open=%ld "
		"seconds=%.1f\n",
		phase, f.greeted, f.refused, f.refused_enh, f.refused_432, f.refused_470,
		f.refused_closed, f.refused_open, f.noreply_closed, f.other, f.hung, f.failed,
		f.max_421 * 1000, f.cut_421, f.cut_enh, f.cut_closed,
		f.cut_closed ? f.cut_min * 1000 : 0, f.cut_max * 1000,
		f.cut_closed ? f.line_min * 1000 : 0, f.line_max * 1000, f.replies, f.sent, f.open,
		secs);
	fclose(o);
	rename(tmp, path);
}

static void finish(int ep, struct sess *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->st = S_DONE;
}

/* One complete reply line from the server. */
static void on_line(int ep, struct sess *c, double t)
{
	bool code421 = c->len >= 3 && memcmp(c->line, "421", 3) == 0;
	bool final = c->len == 3 || (c->len > 3 && c->line[3] == ' ');
	if (c->st == S_WAIT) {
		c->t_reply = t;
		if (c->len >= 3 && memcmp(c->line, "220", 3) == 0) {
			c->st = S_GREETED;
			c->t_greet = t;
			c->t_line = t;
			f.greeted++;
			f.open++;
		} else if (code421) {
			c->st = S_REFUSED;
			f.refused++;
			if (c->len >= 6 && memcmp(c->line + 3, " 4.", 3) == 0)
				f.refused_enh++;
			if (c->len >= 9 && memcmp(c->line + 3, " 4.3.2", 6) == 0)
				f.refused_432++;
			if (c->len >= 9 && memcmp(c->line + 3, " 4.7.0", 6) == 0)
				f.refused_470++;
			if (t - c->t0 > f.max_421)
				f.max_421 = t - c->t0;
		} else {
			f.other++;
			finish(ep, c);
		}
		return;
	}
	if (c->st == S_GREETED && final) {
		/* Lines of a multi-line greeting end with the "220 " line. */
		if (c->len >= 3 && memcmp(c->line, "220", 3) == 0 && c->t_greet == t)
			return;
		f.replies++;
		if (code421 && !c->cut421) {
			c->cut421 = true;
			f.cut_421++;
			if (c->len >= 9 && memcmp(c->line + 3, " 4.4.2", 6) == 0)
				f.cut_enh++;
		}
	}
}

/* The server closed (or reset) the session. */
static void on_eof(int ep, struct sess *c, double t)
{
	switch (c->st) {
	case S_WAIT:
		f.noreply_closed++;
		break;
	case S_REFUSED:
		f.refused_closed++;
		break;
	case S_GREETED: {
		double d = t - c->t_greet, dl = t - c->t_line;
		f.open--;
		if (f.cut_closed == 0 || d < f.cut_min)
			f.cut_min = d;
		if (d > f.cut_max)
			f.cut_max = d;
		if (f.cut_closed == 0 || dl < f.line_min)
			f.line_min = dl;
		if (dl > f.line_max)
			f.line_max = dl;
		f.cut_closed++;
		break;
	}
	default:
		break;
	}
	finish(ep, c);
}

static void on_readable(int ep, struct sess *c, double t)
{
	char b[4096];
	for (int k = 0; k < 4 && c->st != S_DONE; k++) {
		ssize_t r = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r < 0 && c->st == S_WAIT && (errno == ECONNREFUSED || errno == ETIMEDOUT)) {
			f.failed++;
			finish(ep, c);
			return;
		}
		if (r <= 0) {
			on_eof(ep, c, t);
			return;
		}
		for (ssize_t i = 0; i < r && c->st != S_DONE; i++) {
			if (b[i] == '\n') {
				while (c->len > 0 && c->line[c->len - 1] == '\r')
					c->len--;
				on_line(ep, c, t);
				c->len = 0;
			} else if (c->len < LINE_KEEP) {
				c->line[c->len++] = b[i];
			}
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 10 || argc > 12) {
		fprintf(stderr, "usage: abuse_client flood|idle|slow HOST PORT N NSRC WINDOW T LIMIT STATUS "
				"[INTERVAL_MS [LINE_MS]]\n");
		return 2;
	}
	enum mode mode;
	if (strcmp(argv[1], "flood") == 0)
		mode = M_FLOOD;
	else if (strcmp(argv[1], "idle") == 0)
		mode = M_IDLE;
	else if (strcmp(argv[1], "slow") == 0)
		mode = M_SLOW;
	else {
		fprintf(stderr, "abuse_client: unknown mode %s\n", argv[1]);
		return 2;
	}
	const char *host = argv[2];
	int port = atoi(argv[3]);
	long n = atol(argv[4]);
	int nsrc = atoi(argv[5]);
	long window = atol(argv[6]);
	double tmax = atof(argv[7]);
	double limit = atof(argv[8]);
	const char *path = argv[9];
	long interval_ms = argc >= 11 ? atol(argv[10]) : 1000;
	long line_ms = argc >= 12 ? atol(argv[11]) : -1;
	const char *first_env = getenv("ABUSE_SRC_FIRST");
	int src_first = first_env && *first_env ? atoi(first_env) : 1;
	if (port <= 0 || port > 65535 || n <= 0 || n > 200000 || nsrc < 1 || nsrc > 250 ||
	    window < 1 || tmax <= 0 || limit <= 0 || limit > 3600 || interval_ms < 1 ||
	    line_ms > 3600000 || src_first < 1 || src_first + nsrc - 1 > 254) {
		fprintf(stderr, "abuse_client: bad arguments\n");
		return 2;
	}
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 64) {
		rl.rlim_cur = (rlim_t)n + 64;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			perror("abuse_client: setrlimit");
			return 1;
		}
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct sess *s = calloc((size_t)n, sizeof *s);
	struct epoll_event *evs = calloc(EVS, sizeof *evs);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!s || !evs || ep < 0) {
		perror("abuse_client");
		return 1;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
		fprintf(stderr, "abuse_client: bad address %s\n", host);
		return 2;
	}

	long next = 0, waiting = 0, refused_waiting = 0;
	bool opened = false;
	double t0 = now(), next_tick = t0, last_check = t0;
	while (!stop && now() - t0 < limit) {
		double t = now();
		while (next < n && waiting < window) {
			struct sess *c = &s[next];
			c->t0 = t;
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (c->fd < 0) {
				c->st = S_DONE;
				f.failed++;
				next++;
				continue;
			}
			int one = 1;
			setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
			struct sockaddr_in src = { .sin_family = AF_INET };
			src.sin_addr.s_addr =
				htonl(0x7f000000u + (uint32_t)src_first + (uint32_t)(next % nsrc));
			struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)next };
			if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0 ||
			    (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) ||
			    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
				close(c->fd);
				c->fd = -1;
				c->st = S_DONE;
				f.failed++;
				next++;
				continue;
			}
			c->st = S_WAIT;
			waiting++;
			next++;
		}
		int wait_ms = 100;
		if (mode == M_SLOW) {
			int until = (int)((next_tick - t) * 1000);
			if (until < wait_ms)
				wait_ms = until < 0 ? 0 : until;
		}
		int k = epoll_wait(ep, evs, EVS, wait_ms);
		t = now();
		for (int i = 0; i < k; i++) {
			struct sess *c = &s[evs[i].data.u64];
			unsigned char before = c->st;
			if (c->st == S_DONE)
				continue;
			on_readable(ep, c, t);
			if (before == S_WAIT && c->st != S_WAIT)
				waiting--;
			if (before == S_WAIT && c->st == S_REFUSED)
				refused_waiting++;
			if (before == S_REFUSED && c->st != S_REFUSED)
				refused_waiting--;
		}
		/* Deadlines: at most ten sweeps a second over all sessions. */
		if (t - last_check >= 0.1) {
			last_check = t;
			for (long j = 0; j < next; j++) {
				struct sess *c = &s[j];
				if (c->st == S_WAIT && t - c->t0 > tmax) {
					f.hung++;
					finish(ep, c);
					waiting--;
				} else if (c->st == S_REFUSED && t - c->t_reply > tmax) {
					f.refused_open++;
					finish(ep, c);
					refused_waiting--;
				}
			}
		}
		if (mode == M_SLOW && t >= next_tick) {
			next_tick += interval_ms / 1000.0;
			if (next_tick < t)
				next_tick = t + interval_ms / 1000.0;
			for (long j = 0; j < next; j++) {
				struct sess *c = &s[j];
				if (c->st != S_GREETED)
					continue;
				size_t n1 = sizeof slow_script - 1, n2 = sizeof slow_repeat - 1;
				if (line_ms >= 0 && c->sent < n1) {
					/* The whole line at once: it must restart the
					 * server's receive timer. */
					if (t - c->t_greet < line_ms / 1000.0)
						continue;
					ssize_t w = send(c->fd, slow_script + c->sent, n1 - c->sent,
							 MSG_NOSIGNAL | MSG_DONTWAIT);
					if (w > 0) {
						c->sent += (unsigned)w;
						f.sent += w;
						if (c->sent == n1)
							c->t_line = now();
					}
					continue;
				}
				char b = c->sent < n1 ? slow_script[c->sent]
						      : slow_repeat[(c->sent - n1) % n2];
				if (send(c->fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
					c->sent++;
					f.sent++;
					if (b == '\n')
						c->t_line = now();
				}
			}
		}
		if (!opened && next == n && waiting == 0 && refused_waiting == 0) {
			opened = true;
			status(path, "open", now() - t0);
		}
		/* idle, slow: done once the server has closed every greeted
		 * session. */
		if (mode != M_FLOOD && opened && f.open == 0)
			break;
	}
	if (!opened)
		status(path, "open", now() - t0);
	/* Unresolved at the end: counted as hung, never silently dropped. */
	for (long j = 0; j < next; j++) {
		if (s[j].st == S_WAIT)
			f.hung++;
		else if (s[j].st == S_REFUSED)
			f.refused_open++;
	}
	status(path, "end", now() - t0);
	return 0;
}
