/* tls_client: new TLS sessions per second on an implicit-TLS port (465
 * style), one message each.  P processes each open session after session:
 * TCP connect, full TLS handshake (no session resumption), greeting, EHLO,
 * MAIL, RCPT, DATA with a small message, QUIT.  Stops when COUNT sessions
 * have been started or SECONDS have passed, whichever is first.
 *
 * usage: tls_client HOST PORT PARALLEL COUNT SECONDS RCPT
 * prints: "ok=N failed=F seconds=S"
 * Compiled by bench/run.sh (cc ... -lssl -lcrypto).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct shared {
	atomic_long started, ok, failed;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct rd {
	SSL *ssl;
	char buf[4096];
	size_t len;
};

/* Reads one whole reply; returns its code, or -1. */
static int reply(struct rd *r)
{
	for (;;) {
		char *nl;
		while ((nl = memchr(r->buf, '\n', r->len)) != NULL) {
			size_t l = (size_t)(nl - r->buf) + 1;
			int last = l >= 4 && r->buf[3] == ' ';
			int code = l >= 3 ? atoi(r->buf) : -1;
			memmove(r->buf, r->buf + l, r->len - l);
			r->len -= l;
			if (last || l < 4)
				return code;
		}
		if (r->len == sizeof r->buf)
			return -1;
		int k = SSL_read(r->ssl, r->buf + r->len, (int)(sizeof r->buf - r->len));
		if (k <= 0)
			return -1;
		r->len += (size_t)k;
	}
}

static int say(SSL *ssl, const char *s)
{
	int l = (int)strlen(s);
	return SSL_write(ssl, s, l) == l ? 0 : -1;
}

static int session(SSL_CTX *ctx, const struct sockaddr_in *dst, const char *cmds[], const int codes[])
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int rc = -1;
	SSL *ssl = NULL;
	if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) != 0)
		goto out;
	ssl = SSL_new(ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1)
		goto out;
	struct rd r = { .ssl = ssl };
	if (reply(&r) != 220)
		goto out;
	for (int i = 0; cmds[i]; i++) {
		if (say(ssl, cmds[i]) != 0 || reply(&r) != codes[i])
			goto out;
	}
	rc = 0;
out:
	if (ssl) {
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: tls_client HOST PORT PARALLEL COUNT SECONDS RCPT\n");
		return 2;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	int par = atoi(argv[3]);
	long count = atol(argv[4]);
	double secs = atof(argv[5]);
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1 || par < 1 || par > 256 || count < 1 || secs <= 0) {
		fprintf(stderr, "tls_client: bad arguments\n");
		return 2;
	}
	char rcpt[600];
	snprintf(rcpt, sizeof rcpt, "RCPT TO:<%.500s>\r\n", argv[6]);
	const char *cmds[] = { "EHLO tls.client\r\n", "MAIL FROM:<sender@example.org>\r\n", rcpt, "DATA\r\n",
		               "From: <sender@example.org>\r\nTo: <rcpt@bench.test>\r\nSubject: tls bench\r\n\r\n"
		               "One message per TLS session.\r\n.\r\n",
		               "QUIT\r\n", NULL };
	const int codes[] = { 250, 250, 250, 354, 250, 221 };
	signal(SIGPIPE, SIG_IGN);

	struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("tls_client: mmap");
		return 1;
	}
	atomic_init(&sh->started, 0);
	atomic_init(&sh->ok, 0);
	atomic_init(&sh->failed, 0);
	double t0 = now();
	for (int p = 0; p < par; p++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("tls_client: fork");
			break;
		}
		if (pid == 0) {
			SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
			if (!ctx)
				_exit(1);
			SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
			/* Every session is a full handshake. */
			SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
			SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
			while (now() - t0 < secs && atomic_fetch_add(&sh->started, 1) < count) {
				if (session(ctx, &dst, cmds, codes) == 0)
					atomic_fetch_add(&sh->ok, 1);
				else
					atomic_fetch_add(&sh->failed, 1);
			}
			SSL_CTX_free(ctx);
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
	printf("ok=%ld failed=%ld seconds=%.3f\n", atomic_load(&sh->ok), atomic_load(&sh->failed), now() - t0);
	return 0;
}
