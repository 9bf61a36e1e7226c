/* idle_client: opens N SMTP sessions to HOST:PORT, reads each greeting and
 * then holds every session open without sending anything, so that the
 * server's memory per idle session can be measured.
 *
 * usage: idle_client HOST PORT N NSRC CONNECT_SECONDS HOLD_SECONDS STATUS_FILE
 *
 * Source addresses are 127.0.0.1 .. 127.0.0.NSRC in turn, so that more
 * sessions than one address's ephemeral ports can be opened.  At most 256
 * connections are waiting for their greeting at any time (the server's
 * listen backlog is not what is measured).  Once every session has been
 * greeted, refused (421) or has failed, or CONNECT_SECONDS have passed, one
 * line "greeted=G refused=R failed=F pending=P seconds=S" is written to
 * STATUS_FILE; the sessions are then held until SIGTERM or HOLD_SECONDS.
 * Compiled by bench/run.sh.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_PENDING = 256, LINE_MAX_LEN = 512 };

struct sess {
	int fd;
	int state; /* 0 connecting/reading, 1 greeted, 2 refused, 3 failed */
	size_t len;
	char line[LINE_MAX_LEN];
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: idle_client HOST PORT N NSRC CONNECT_SECONDS HOLD_SECONDS STATUS_FILE\n");
		return 2;
	}
	const char *host = argv[1];
	int port = atoi(argv[2]);
	long n = atol(argv[3]);
	int nsrc = atoi(argv[4]);
	double connect_s = atof(argv[5]);
	int hold_s = atoi(argv[6]);
	const char *status = argv[7];
	if (port <= 0 || port > 65535 || n <= 0 || n > 1000000 || nsrc < 1 || nsrc > 250) {
		fprintf(stderr, "idle_client: bad arguments\n");
		return 2;
	}

	struct rlimit rl = { (rlim_t)n + 64, (rlim_t)n + 64 };
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		perror("idle_client: setrlimit");
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct sess *s = calloc((size_t)n, sizeof *s);
	struct epoll_event *evs = calloc(MAX_PENDING, sizeof *evs);
	int ep = epoll_create1(0);
	if (!s || !evs || ep < 0) {
		perror("idle_client");
		return 1;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
		fprintf(stderr, "idle_client: bad address %s\n", host);
		return 2;
	}

	long next = 0, pending = 0, greeted = 0, refused = 0, failed = 0;
	double t0 = now();
	while (!stop && greeted + refused + failed < n && now() - t0 < connect_s) {
		while (next < n && pending < MAX_PENDING) {
			struct sess *c = &s[next];
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (c->fd < 0) {
				c->state = 3;
				failed++;
				next++;
				continue;
			}
			int one = 1;
			setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
			struct sockaddr_in src = { .sin_family = AF_INET };
			src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(next % nsrc));
			struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)next };
			if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0 ||
			    (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) ||
			    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
				close(c->fd);
				c->fd = -1;
				c->state = 3;
				failed++;
				next++;
				continue;
			}
			pending++;
			next++;
		}
		int k = epoll_wait(ep, evs, MAX_PENDING, 100);
		for (int i = 0; i < k; i++) {
			struct sess *c = &s[evs[i].data.u64];
			if (c->state != 0)
				continue;
			ssize_t r = read(c->fd, c->line + c->len, sizeof c->line - c->len);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			int done = 0;
			if (r <= 0) {
				c->state = 3;
				done = 1;
			} else {
				c->len += (size_t)r;
				char *nl = memchr(c->line, '\n', c->len);
				if (nl || c->len == sizeof c->line) {
					/* A multi-line greeting ("220-") ends at "220 ";
					 * the first line's code is what counts. */
					if (c->len >= 3 && memcmp(c->line, "220", 3) == 0)
						c->state = 1;
					else if (c->len >= 3 && memcmp(c->line, "421", 3) == 0)
						c->state = 2;
					else
						c->state = 3;
					done = 1;
				}
			}
			if (done) {
				/* Held sessions are no longer watched: the client
				 * costs no CPU while the server is measured. */
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				if (c->state != 1) {
					close(c->fd);
					c->fd = -1;
				}
				greeted += c->state == 1;
				refused += c->state == 2;
				failed += c->state == 3;
				pending--;
			}
		}
	}
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", status);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		perror("idle_client: status file");
		return 1;
	}
	fprintf(f, "greeted=%ld refused=%ld failed=%ld pending=%ld seconds=%.1f\n", greeted, refused, failed,
	        n - greeted - refused - failed, now() - t0);
	fclose(f);
	rename(tmp, status);
	alarm((unsigned)hold_s);
	while (!stop)
		pause();
	return 0;
}
