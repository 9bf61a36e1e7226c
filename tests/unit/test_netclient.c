/* Tests of outgoing SMTP/LMTP connections (net/client.c with the smtpc
 * machine): a real event loop against a scripted server on loopback or a
 * unix socket, served by a thread of this process with blocking I/O. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "deliver/deliver.h"
#include "net/net.h"

/* ---- certificate for the TLS tests -------------------------------------- */

static char g_dir[64];
static char g_cert[128];
static char g_key[128];
static struct tls_ctx *g_srv_tls;

static int group_setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	tls_global_init();
	log_set_level(LOG_LVL_ERR);
	snprintf(g_dir, sizeof(g_dir), "/tmp/netclienttest.XXXXXX");
	if (!mkdtemp(g_dir))
		return -1;
	snprintf(g_cert, sizeof(g_cert), "%s/c.pem", g_dir);
	snprintf(g_key, sizeof(g_key), "%s/k.pem", g_dir);
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost "
		 "-addext subjectAltName=DNS:localhost -keyout %s -out %s -days 2 2>/dev/null",
		 g_key, g_cert);
	if (system(cmd) != 0)
		return -1;
	struct conf cf;
	struct conf_listener l;
	memset(&cf, 0, sizeof(cf));
	memset(&l, 0, sizeof(l));
	cf.tls_certificate = g_cert;
	cf.tls_privatekey = g_key;
	l.port = 25;
	struct err e = { "" };
	if (tls_ctx_new(&cf, &l, &g_srv_tls, &e) < 0) {
		fprintf(stderr, "%s\n", e.msg);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	tls_ctx_free(g_srv_tls);
	unlink(g_cert);
	unlink(g_key);
	rmdir(g_dir);
	return 0;
}

/* ---- the scripted server ------------------------------------------------ */

enum srv_mode { SM_NORMAL, SM_SILENT, SM_GARBAGE, SM_CLOSE_MID_DATA, SM_STALL_DATA };

struct srv_conf {
	enum srv_mode mode;
	bool lmtp;
	bool starttls;        /* offer STARTTLS */
	bool tls_on_connect;
	bool dribble;         /* replies one byte per write */
	const int *rcpt_codes; /* per RCPT of a message, in order; NULL = all 250 */
	size_t n_rcpt_codes;
	const int *lmtp_codes; /* per accepted recipient after DATA */
	size_t n_lmtp_codes;
	size_t close_after;   /* SM_CLOSE_MID_DATA: data bytes before closing */
};

#define SRV_MAX_DATA 4

struct srv {
	struct srv_conf cf;
	int lfd;
	struct sockaddr_storage sa;
	socklen_t salen;
	char upath[100];
	pthread_t th;
	/* the connection */
	int fd;
	struct tls_conn *tls;
	char rb[65536];
	size_t rlen;
	/* what it saw */
	char *data[SRV_MAX_DATA];
	size_t data_len[SRV_MAX_DATA];
	size_t n_data;
	unsigned n_hello, n_mail, n_rcpt, n_quit, n_starttls, n_rset;
	bool saw_eof;
	bool tls_ok;
};

static int s_fill(struct srv *s)
{
	if (s->rlen == sizeof(s->rb))
		return -1;
	if (s->tls) {
		size_t got = 0;
		if (tls_read(s->tls, s->rb + s->rlen, sizeof(s->rb) - s->rlen, &got) != TLS_IO_OK)
			return -1;
		s->rlen += got;
		return 0;
	}
	ssize_t r = recv(s->fd, s->rb + s->rlen, sizeof(s->rb) - s->rlen, 0);
	if (r <= 0)
		return -1;
	s->rlen += (size_t)r;
	return 0;
}

static int s_write(struct srv *s, const char *p, size_t n)
{
	size_t step = s->cf.dribble ? 1 : n;
	for (size_t off = 0; off < n;) {
		size_t k = n - off < step ? n - off : step;
		if (s->tls) {
			size_t put = 0;
			if (tls_write(s->tls, p + off, k, &put) != TLS_IO_OK)
				return -1;
			off += put;
		} else {
			ssize_t w = send(s->fd, p + off, k, MSG_NOSIGNAL);
			if (w <= 0)
				return -1;
			off += (size_t)w;
		}
	}
	return 0;
}

static int s_say(struct srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_say(struct srv *s, const char *fmt, ...)
{
	char b[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	return s_write(s, b, (size_t)n);
}

/* One command line without its CRLF into out (NUL-terminated). */
static int s_line(struct srv *s, char *out, size_t max)
{
	for (;;) {
		char *nl = memchr(s->rb, '\n', s->rlen);
		if (nl) {
			size_t n = (size_t)(nl - s->rb) + 1;
			size_t k = n >= 2 && s->rb[n - 2] == '\r' ? n - 2 : n - 1;
			if (k >= max)
				k = max - 1;
			memcpy(out, s->rb, k);
			out[k] = 0;
			memmove(s->rb, s->rb + n, s->rlen - n);
			s->rlen -= n;
			return 0;
		}
		if (s_fill(s) < 0)
			return -1;
	}
}

/* The DATA stream as sent, up to and including the terminating ".\r\n". */
static int s_data(struct srv *s, char **out, size_t *out_len)
{
	size_t cap = 1 << 16, len = 0;
	char *d = malloc(cap);
	for (;;) {
		size_t take = 0;
		bool end = false;
		while (take < s->rlen && !end) {
			if (len == cap)
				d = realloc(d, cap *= 2);
			d[len++] = s->rb[take++];
			end = (len == 3 && memcmp(d, ".\r\n", 3) == 0) ||
			      (len >= 5 && memcmp(d + len - 5, "\r\n.\r\n", 5) == 0);
		}
		memmove(s->rb, s->rb + take, s->rlen - take);
		s->rlen -= take;
		if (s->cf.mode == SM_CLOSE_MID_DATA && len >= s->cf.close_after) {
			free(d);
			return -2;
		}
		if (end) {
			*out = d;
			*out_len = len;
			return 0;
		}
		if (s_fill(s) < 0) {
			free(d);
			return -1;
		}
	}
}

static void s_drain_to_eof(struct srv *s)
{
	while (s_fill(s) == 0)
		s->rlen = 0;
	s->saw_eof = true;
}

static void s_session(struct srv *s)
{
	char line[4096];
	unsigned accepted = 0, rcpt_i = 0;
	if (s->cf.tls_on_connect || s->cf.mode == SM_NORMAL || s->cf.mode == SM_CLOSE_MID_DATA) {
		if (s->cf.tls_on_connect) {
			s->tls = tls_conn_new(g_srv_tls, s->fd);
			if (tls_handshake(s->tls) != TLS_IO_OK)
				return;
			s->tls_ok = true;
		}
	}
	if (s->cf.mode == SM_SILENT) {
		s_drain_to_eof(s);
		return;
	}
	if (s->cf.mode == SM_GARBAGE) {
		s_say(s, "\x01\x02 this is not smtp \xff\r\nHTTP/1.1 400 Bad Request\r\n");
		s_drain_to_eof(s);
		return;
	}
	s_say(s, "220 test.example ESMTP ready\r\n");
	while (s_line(s, line, sizeof(line)) == 0) {
		if (!strncasecmp(line, "EHLO", 4) || !strncasecmp(line, "LHLO", 4)) {
			s->n_hello++;
			s_say(s, "250-test.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n%s"
				 "250-ENHANCEDSTATUSCODES\r\n250 SIZE 100000000\r\n",
			      s->cf.starttls && !s->tls ? "250-STARTTLS\r\n" : "");
		} else if (!strncasecmp(line, "STARTTLS", 8)) {
			s->n_starttls++;
			s_say(s, "220 2.0.0 go ahead\r\n");
			s->rlen = 0;
			s->tls = tls_conn_new(g_srv_tls, s->fd);
			if (tls_handshake(s->tls) != TLS_IO_OK)
				return;
			s->tls_ok = true;
		} else if (!strncasecmp(line, "MAIL", 4)) {
			s->n_mail++;
			accepted = 0;
			rcpt_i = 0;
			s_say(s, "250 2.1.0 ok\r\n");
		} else if (!strncasecmp(line, "RCPT", 4)) {
			s->n_rcpt++;
			int code = s->cf.rcpt_codes && rcpt_i < s->cf.n_rcpt_codes
					   ? s->cf.rcpt_codes[rcpt_i]
					   : 250;
			rcpt_i++;
			if (code / 100 == 2) {
				accepted++;
				s_say(s, "%d 2.1.5 recipient ok\r\n", code);
			} else {
				s_say(s, "%d %d.1.1 no such user here\r\n", code, code / 100);
			}
		} else if (!strncasecmp(line, "DATA", 4)) {
			if (accepted == 0) {
				s_say(s, "554 5.5.1 no valid recipients\r\n");
				continue;
			}
			s_say(s, "354 go ahead\r\n");
			if (s->cf.mode == SM_STALL_DATA) {
				/* Stop reading: the client's writes block. */
				sleep(3);
				s_drain_to_eof(s);
				return;
			}
			char *d = NULL;
			size_t dl = 0;
			int r = s_data(s, &d, &dl);
			if (r == -2)
				return; /* hang up mid-DATA */
			if (r < 0)
				return;
			if (s->n_data < SRV_MAX_DATA) {
				s->data[s->n_data] = d;
				s->data_len[s->n_data++] = dl;
			} else {
				free(d);
			}
			if (s->cf.lmtp) {
				for (unsigned i = 0; i < accepted; i++) {
					int code = s->cf.lmtp_codes && i < s->cf.n_lmtp_codes
							   ? s->cf.lmtp_codes[i]
							   : 250;
					s_say(s, "%d %d.0.0 lmtp recipient %u\r\n", code, code / 100, i);
				}
			} else {
				s_say(s, "250 2.0.0 queued as X%zu\r\n", s->n_data);
			}
		} else if (!strncasecmp(line, "RSET", 4)) {
			s->n_rset++;
			s_say(s, "250 2.0.0 ok\r\n");
		} else if (!strncasecmp(line, "NOOP", 4)) {
			s_say(s, "250 2.0.0 ok\r\n");
		} else if (!strncasecmp(line, "QUIT", 4)) {
			s->n_quit++;
			s_say(s, "221 2.0.0 bye\r\n");
			return;
		} else {
			s_say(s, "500 5.5.1 what\r\n");
		}
	}
	s->saw_eof = true;
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	s->fd = accept(s->lfd, NULL, NULL);
	if (s->fd < 0)
		return NULL;
	int one = 1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s_session(s);
	if (s->tls) {
		tls_conn_shutdown(s->tls);
		tls_conn_free(s->tls);
		s->tls = NULL;
	}
	close(s->fd);
	return NULL;
}

static struct srv *srv_start(const struct srv_conf *cf, bool unix_socket)
{
	struct srv *s = calloc(1, sizeof(*s));
	s->cf = *cf;
	if (unix_socket) {
		struct sockaddr_un *su = (struct sockaddr_un *)&s->sa;
		snprintf(s->upath, sizeof(s->upath), "%.60s/lmtp.sock", g_dir);
		unlink(s->upath);
		su->sun_family = AF_UNIX;
		snprintf(su->sun_path, sizeof(su->sun_path), "%s", s->upath);
		s->salen = (socklen_t)sizeof(*su);
		s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	} else {
		struct sockaddr_in *si = (struct sockaddr_in *)&s->sa;
		si->sin_family = AF_INET;
		si->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s->salen = (socklen_t)sizeof(*si);
		s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	}
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&s->sa, s->salen), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	if (cf->mode == SM_STALL_DATA) {
		int small = 4096; /* inherited by the accepted socket */
		setsockopt(s->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	if (!unix_socket)
		getsockname(s->lfd, (struct sockaddr *)&s->sa, &s->salen);
	pthread_create(&s->th, NULL, srv_main, s);
	return s;
}

static void srv_join(struct srv *s)
{
	pthread_join(s->th, NULL);
}

static void srv_free(struct srv *s)
{
	close(s->lfd);
	if (s->upath[0])
		unlink(s->upath);
	for (size_t i = 0; i < s->n_data; i++)
		free(s->data[i]);
	free(s);
}

/* ---- the client side ------------------------------------------------------ */

struct cli {
	struct event_base *base;
	const struct smtpc_msg *msgs;
	size_t n_msgs, next;
	int fd;
	off_t off, len;
	bool abort_on_ready;
	bool send_in_result;
	unsigned data_s;                   /* data timeout; 0 = 10 s */               /* the next message from result(), not ready() */
	unsigned n_ready;
	int codes[SRV_MAX_DATA][8];
	size_t n_codes[SRV_MAX_DATA];
	char text0[SRV_MAX_DATA][256];
	size_t n_results;
	bool closed;
	int why_code;
	char why_text[512];
	char tls_info[256];
	int send_rc;
};

static void cli_ready(void *arg, struct net_smtp *c)
{
	struct cli *k = arg;
	k->n_ready++;
	snprintf(k->tls_info, sizeof(k->tls_info), "%s", net_smtp_tls_info(c));
	if (k->abort_on_ready) {
		net_smtp_abort(c);
		/* Long enough for a stray callback to show. */
		struct timeval tv = { 0, 300 * 1000 };
		event_base_loopexit(k->base, &tv);
		return;
	}
	if (k->next < k->n_msgs) {
		struct err e = { "" };
		k->send_rc = net_smtp_send(c, &k->msgs[k->next++], k->fd, k->off, k->len, &e);
		if (k->send_rc < 0)
			fprintf(stderr, "send: %s\n", e.msg);
		/* Not ready twice in a row: a second send is refused. */
		struct err e2 = { "" };
		if (k->send_rc == 0 && net_smtp_send(c, &k->msgs[0], k->fd, k->off, k->len, &e2) == 0)
			k->send_rc = -99;
	} else {
		net_smtp_quit(c);
	}
}

static void cli_result(void *arg, struct net_smtp *c, const struct smtpc_reply *r, size_t n)
{
	struct cli *k = arg;
	if (k->n_results < SRV_MAX_DATA) {
		for (size_t i = 0; i < n && i < 8; i++)
			k->codes[k->n_results][i] = r[i].code;
		k->n_codes[k->n_results] = n;
		snprintf(k->text0[k->n_results], sizeof(k->text0[0]), "%s",
			 n > 0 && r[0].text ? r[0].text : "");
	}
	k->n_results++;
	if (k->send_in_result && k->next < k->n_msgs) {
		struct err e = { "" };
		if (net_smtp_send(c, &k->msgs[k->next++], k->fd, k->off, k->len, &e) < 0) {
			fprintf(stderr, "send from result: %s\n", e.msg);
			k->send_rc = -97;
		}
	}
}

static void cli_closed(void *arg, struct net_smtp *c, const struct smtpc_reply *why)
{
	struct cli *k = arg;
	k->closed = true;
	k->why_code = why ? why->code : -1;
	snprintf(k->why_text, sizeof(k->why_text), "%s", why && why->text ? why->text : "");
	snprintf(k->tls_info, sizeof(k->tls_info), "%s", net_smtp_tls_info(c));
	event_base_loopbreak(k->base);
}

static const struct net_smtp_cbs cbs = { cli_ready, cli_result, cli_closed };

static struct smtpc_opts opts(bool lmtp)
{
	struct smtpc_opts o;
	memset(&o, 0, sizeof(o));
	o.lmtp = lmtp;
	o.helo = "client.example";
	o.tls = SMTPC_TLS_NO;
	o.reply_line_max = 2048;
	o.reply_lines_max = 100;
	return o;
}

/* Runs a client against s until closed() (or a 20 s safety limit). */
static void run_client(struct cli *k, struct srv *s, const struct smtpc_opts *o,
		       struct tls_ctx *tls, bool tls_on_connect, const char *peer, unsigned cmd_s)
{
	k->base = event_base_new();
	struct net_smtp_timeouts t = { 5, cmd_s, k->data_s ? k->data_s : 10 };
	struct err e = { "" };
	struct net_smtp *c = net_smtp_open(k->base, (struct sockaddr *)&s->sa, s->salen, peer, o,
					   tls, tls_on_connect, &t, &cbs, k, &e);
	if (!c)
		fprintf(stderr, "open: %s\n", e.msg);
	assert_non_null(c);
	struct timeval limit = { 20, 0 };
	event_base_loopexit(k->base, &limit);
	event_base_dispatch(k->base);
	event_base_free(k->base);
	k->base = NULL;
}

/* A spool-like file: 100 bytes of something else, then the body. */
static int body_file(const char *body, size_t n, off_t *off)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/body.XXXXXX", g_dir);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	char pre[100];
	memset(pre, 'H', sizeof(pre));
	assert_int_equal(write(fd, pre, sizeof(pre)), (ssize_t)sizeof(pre));
	assert_int_equal(write(fd, body, n), (ssize_t)n);
	*off = sizeof(pre);
	return fd;
}

/* About n bytes of CRLF lines, nearly all starting with dots. */
static char *dotty_body(size_t n, size_t *out_len)
{
	static const char *lines[] = { ".", "..", ".leading dot", "...three", "plain line",
				       ". space", ".\t tab", "x.y" };
	char *b = malloc(n + 256);
	size_t len = 0;
	for (unsigned i = 0; len < n; i++) {
		const char *l = lines[i % (sizeof(lines) / sizeof(lines[0]))];
		len += (size_t)sprintf(b + len, "%s %u\r\n", l, i);
		if (i % 7 == 0)
			len += (size_t)sprintf(b + len, ".\r\n");
	}
	*out_len = len;
	return b;
}

/* What must arrive: every line starting with '.' gets one more, then ".\r\n". */
static char *stuffed(const char *b, size_t n, size_t *out_len)
{
	char *o = malloc(2 * n + 8);
	size_t k = 0;
	bool bol = true;
	for (size_t i = 0; i < n; i++) {
		if (bol && b[i] == '.')
			o[k++] = '.';
		o[k++] = b[i];
		bol = b[i] == '\n';
	}
	memcpy(o + k, ".\r\n", 3);
	*out_len = k + 3;
	return o;
}

static const struct smtpc_rcpt rcpt1[] = { { "rcpt1@example.org", 0, NULL } };
static const struct smtpc_rcpt rcpt3[] = { { "a@example.org", 0, NULL },
					   { "b@example.org", 0, NULL },
					   { "c@example.org", 0, NULL } };

/* ---- tests ------------------------------------------------------------------ */

static void check_plain_session(bool dribble)
{
	struct srv_conf cf = { .mode = SM_NORMAL, .dribble = dribble };
	struct srv *s = srv_start(&cf, false);
	size_t bl, xl;
	char *body = dotty_body(200 * 1024, &bl);
	char *exp = stuffed(body, bl, &xl);
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "sender@example.net", .rcpts = rcpt1, .n_rcpts = 1,
			       .size = bl };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, bl, &k.off);
	k.len = (off_t)bl;
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_int_equal(k.send_rc, 0);
	assert_true(k.closed);
	assert_int_equal(k.n_ready, 2); /* after EHLO and after the message */
	assert_int_equal(k.n_results, 1);
	assert_int_equal(k.n_codes[0], 1);
	assert_int_equal(k.codes[0][0], 250);
	assert_non_null(strstr(k.text0[0], "queued as X1"));
	assert_int_equal(s->n_data, 1);
	assert_int_equal(s->data_len[0], xl);
	assert_memory_equal(s->data[0], exp, xl);
	assert_int_equal(s->n_quit, 1);
	assert_string_equal(k.tls_info, "none");
	assert_true(k.why_code >= 200 && k.why_code < 500);
	close(k.fd);
	free(body);
	free(exp);
	srv_free(s);
}

static void test_plain_200k_dots(void **state)
{
	check_plain_session(false);
}

/* Replies arriving one byte at a time give the same session. */
static void test_plain_dribbled_replies(void **state)
{
	check_plain_session(true);
}

static void check_two_messages(bool in_result)
{
	struct srv_conf cf = { .mode = SM_NORMAL };
	struct srv *s = srv_start(&cf, false);
	const char body[] = "Subject: x\r\n\r\n.hello\r\n";
	struct cli k = { 0 };
	struct smtpc_msg m[2] = { { .sender = "", .rcpts = rcpt1, .n_rcpts = 1 },
				  { .sender = "s2@example.net", .rcpts = rcpt3, .n_rcpts = 3 } };
	k.msgs = m;
	k.n_msgs = 2;
	k.send_in_result = in_result;
	k.fd = body_file(body, sizeof(body) - 1, &k.off);
	k.len = sizeof(body) - 1;
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.send_rc, 0);
	/* Ready after EHLO and after the last message; after the first only
	 * when the second was not already sent from result(). */
	assert_int_equal(k.n_ready, in_result ? 2 : 3);
	assert_int_equal(k.n_results, 2);
	assert_int_equal(k.n_codes[0], 1);
	assert_int_equal(k.n_codes[1], 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(k.codes[1][i], 250);
	assert_int_equal(s->n_mail, 2);
	assert_int_equal(s->n_rcpt, 4);
	assert_int_equal(s->n_data, 2);
	assert_int_equal(s->n_hello, 1);
	assert_int_equal(s->n_quit, 1);
	const char want[] = "Subject: x\r\n\r\n..hello\r\n.\r\n";
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(s->data_len[i], sizeof(want) - 1);
		assert_memory_equal(s->data[i], want, sizeof(want) - 1);
	}
	close(k.fd);
	srv_free(s);
}

static void test_two_messages(void **state)
{
	check_two_messages(false);
}

/* The next message sent from result(): ready() is not called in between. */
static void test_two_messages_from_result(void **state)
{
	check_two_messages(true);
}

static void test_rcpt_mix(void **state)
{
	static const int codes[] = { 250, 550, 250 };
	struct srv_conf cf = { .mode = SM_NORMAL, .rcpt_codes = codes, .n_rcpt_codes = 3 };
	struct srv *s = srv_start(&cf, false);
	const char body[] = "a\r\n";
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "s@example.net", .rcpts = rcpt3, .n_rcpts = 3 };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, sizeof(body) - 1, &k.off);
	k.len = sizeof(body) - 1;
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_results, 1);
	assert_int_equal(k.n_codes[0], 3);
	assert_int_equal(k.codes[0][0], 250);
	assert_int_equal(k.codes[0][1], 550);
	assert_int_equal(k.codes[0][2], 250);
	assert_int_equal(s->n_data, 1);
	close(k.fd);
	srv_free(s);
}

static void test_close_mid_data(void **state)
{
	struct srv_conf cf = { .mode = SM_CLOSE_MID_DATA, .close_after = 5000 };
	struct srv *s = srv_start(&cf, false);
	size_t bl;
	char *body = dotty_body(400 * 1024, &bl);
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "s@example.net", .rcpts = rcpt1, .n_rcpts = 1 };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, bl, &k.off);
	k.len = (off_t)bl;
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_results, 0); /* a message in progress gets no result */
	assert_int_equal(k.why_code / 100, 4);
	assert_int_equal(s->n_data, 0);
	close(k.fd);
	free(body);
	srv_free(s);
}

/* A server that stops reading the body: the data timeout, not the
 * (longer) command timeout, ends it. */
static void test_data_timeout(void **state)
{
	struct srv_conf cf = { .mode = SM_STALL_DATA };
	struct srv *s = srv_start(&cf, false);
	size_t bl;
	char *body = dotty_body(12 * 1024 * 1024, &bl);
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "s@example.net", .rcpts = rcpt1, .n_rcpts = 1 };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, bl, &k.off);
	k.len = (off_t)bl;
	k.data_s = 1;
	struct smtpc_opts o = opts(false);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 8);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_results, 0);
	assert_int_equal(k.why_code / 100, 4);
	double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(dt >= 0.9 && dt < 5.0);
	close(k.fd);
	free(body);
	srv_free(s);
}

static void test_silent_server(void **state)
{
	struct srv_conf cf = { .mode = SM_SILENT };
	struct srv *s = srv_start(&cf, false);
	struct cli k = { 0 };
	struct smtpc_opts o = opts(false);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_ready, 0);
	assert_int_equal(k.why_code / 100, 4);
	assert_true(s->saw_eof); /* we hung up, not the server */
	double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(dt >= 0.9 && dt < 5.0);
	srv_free(s);
}

static void test_garbage_server(void **state)
{
	struct srv_conf cf = { .mode = SM_GARBAGE };
	struct srv *s = srv_start(&cf, false);
	struct cli k = { 0 };
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_ready, 0);
	assert_true(k.why_code >= 400 && k.why_code < 600);
	assert_true(s->saw_eof);
	srv_free(s);
}

static void test_lmtp_unix(void **state)
{
	static const int rc[] = { 250, 250, 550 };
	static const int lc[] = { 250, 452 };
	struct srv_conf cf = { .mode = SM_NORMAL, .lmtp = true, .rcpt_codes = rc,
			       .n_rcpt_codes = 3, .lmtp_codes = lc, .n_lmtp_codes = 2 };
	struct srv *s = srv_start(&cf, true);
	const char body[] = "Subject: lmtp\r\n\r\n.\r\n..\r\nend\r\n";
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "s@example.net", .rcpts = rcpt3, .n_rcpts = 3 };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, sizeof(body) - 1, &k.off);
	k.len = sizeof(body) - 1;
	struct smtpc_opts o = opts(true);
	run_client(&k, s, &o, NULL, false, "lmtp", 5);
	srv_join(s);
	assert_true(k.closed);
	assert_int_equal(k.n_results, 1);
	assert_int_equal(k.n_codes[0], 3);
	assert_int_equal(k.codes[0][0], 250);
	assert_int_equal(k.codes[0][1], 452);
	assert_int_equal(k.codes[0][2], 550);
	assert_int_equal(s->n_hello, 1);
	const char want[] = "Subject: lmtp\r\n\r\n..\r\n...\r\nend\r\n.\r\n";
	assert_int_equal(s->n_data, 1);
	assert_int_equal(s->data_len[0], sizeof(want) - 1);
	assert_memory_equal(s->data[0], want, sizeof(want) - 1);
	close(k.fd);
	srv_free(s);
}

static void check_tls(bool on_connect, bool verify, const char *peer, bool expect_ok,
		      const char *expect_verdict)
{
	struct srv_conf cf = { .mode = SM_NORMAL, .starttls = !on_connect,
			       .tls_on_connect = on_connect };
	struct srv *s = srv_start(&cf, false);
	size_t bl, xl;
	char *body = dotty_body(100 * 1024, &bl);
	char *exp = stuffed(body, bl, &xl);
	struct tls_ctx *ctx = NULL;
	struct err e = { "" };
	assert_int_equal(tls_client_ctx_new(verify, verify ? g_cert : NULL, &ctx, &e), 0);
	struct cli k = { 0 };
	struct smtpc_msg m = { .sender = "s@example.net", .rcpts = rcpt1, .n_rcpts = 1 };
	k.msgs = &m;
	k.n_msgs = 1;
	k.fd = body_file(body, bl, &k.off);
	k.len = (off_t)bl;
	struct smtpc_opts o = opts(false);
	o.tls = on_connect ? SMTPC_TLS_NO : SMTPC_TLS_MUST;
	run_client(&k, s, &o, ctx, on_connect, peer, 5);
	srv_join(s);
	assert_true(k.closed);
	if (expect_ok) {
		assert_true(s->tls_ok);
		assert_int_equal(s->n_starttls, on_connect ? 0 : 1);
		assert_int_equal(s->n_hello, on_connect ? 1 : 2); /* EHLO again inside TLS */
		assert_int_equal(k.n_results, 1);
		assert_int_equal(k.codes[0][0], 250);
		assert_int_equal(s->n_data, 1);
		assert_int_equal(s->data_len[0], xl);
		assert_memory_equal(s->data[0], exp, xl);
		assert_true(strncmp(k.tls_info, "TLSv1.", 6) == 0);
		assert_non_null(strstr(k.tls_info, expect_verdict));
	} else {
		assert_int_equal(k.n_results, 0);
		assert_int_equal(s->n_data, 0);
		assert_int_equal(k.why_code / 100, 4);
	}
	close(k.fd);
	free(body);
	free(exp);
	tls_ctx_free(ctx);
	srv_free(s);
}

static void test_starttls_unverified(void **state)
{
	/* Self-signed and not in the system's CA store. */
	check_tls(false, false, "localhost", true, " unverified: ");
}

static void test_starttls_verified(void **state)
{
	check_tls(false, true, "localhost", true, " verified");
}

static void test_starttls_name_mismatch_refused(void **state)
{
	check_tls(false, true, "mx.other.example", false, NULL);
}

static void test_tls_on_connect(void **state)
{
	check_tls(true, false, "localhost", true, " unverified: ");
}

static void test_unverified_names_mismatch(void **state)
{
	/* Opportunistic: delivered, but the verdict tells the name was wrong. */
	check_tls(false, false, "mx.other.example", true, "unverified: ");
}

static void test_connect_refused(void **state)
{
	/* A port nothing listens on: bind, learn it, close. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in si = { .sin_family = AF_INET };
	si.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(si);
	assert_int_equal(bind(fd, (struct sockaddr *)&si, sl), 0);
	getsockname(fd, (struct sockaddr *)&si, &sl);
	close(fd);
	struct cli k = { 0 };
	k.base = event_base_new();
	struct net_smtp_timeouts t = { 5, 5, 5 };
	struct err e = { "" };
	struct smtpc_opts o = opts(false);
	struct net_smtp *c = net_smtp_open(k.base, (struct sockaddr *)&si, sl, "nowhere", &o, NULL,
					   false, &t, &cbs, &k, &e);
	assert_non_null(c);
	assert_false(k.closed); /* told from the loop, not from inside open */
	event_base_dispatch(k.base);
	event_base_free(k.base);
	assert_true(k.closed);
	assert_int_equal(k.why_code, 421);
	assert_non_null(strstr(k.why_text, "4.4.1"));
}

static void test_abort_in_callback(void **state)
{
	struct srv_conf cf = { .mode = SM_NORMAL };
	struct srv *s = srv_start(&cf, false);
	struct cli k = { 0 };
	k.abort_on_ready = true;
	struct smtpc_opts o = opts(false);
	run_client(&k, s, &o, NULL, false, "mx.example.org", 5);
	srv_join(s);
	assert_int_equal(k.n_ready, 1);
	assert_false(k.closed); /* no callback after abort */
	assert_int_equal(s->n_hello, 1);
	assert_int_equal(s->n_mail, 0);
	assert_true(s->saw_eof);
	srv_free(s);
}

static void test_tls_ctx_kinds(void **state)
{
	struct tls_ctx *ctx = NULL;
	struct err e = { "" };
	/* A server context cannot make client connections. */
	assert_null(tls_conn_new_client(g_srv_tls, 0, "x"));
	assert_int_equal(tls_client_ctx_new(true, "/nonexistent/ca.pem", &ctx, &e), -1);
	assert_null(ctx);
	assert_non_null(strstr(e.msg, "/nonexistent/ca.pem"));
}

/* ---- listen_is_own: would a connection come back to us? ---------------- */

static struct sockaddr_storage own_addr(const char *text, uint16_t port)
{
	struct sockaddr_storage ss;
	assert_int_not_equal(listen_sockaddr(text, port, &ss), 0);
	return ss;
}

static void test_listen_is_own(void **state)
{
	static char *const lo1[] = { "127.0.0.1" };
	static char *const v6w[] = { "::" };
	static const struct {
		const char *addr;
		uint16_t port;
		char *const *ifaces;
		size_t n_ifaces;
		bool own;
	} cases[] = {
		/* Wildcard listeners: every address of the host. */
		{ "127.0.0.1", 25, NULL, 0, true },
		{ "127.9.8.7", 25, NULL, 0, true },      /* all of 127/8 is lo */
		{ "::1", 25, NULL, 0, true },
		{ "::ffff:127.0.0.1", 25, NULL, 0, true },
		{ "0.0.0.0", 25, NULL, 0, true },
		{ "192.0.2.1", 25, NULL, 0, false },     /* TEST-NET: not ours */
		{ "2001:db8::1", 25, NULL, 0, false },
		{ "127.0.0.1", 2525, NULL, 0, false },   /* a port we do not listen on */
		/* Listening on one address only. */
		{ "127.0.0.1", 25, lo1, 1, true },
		{ "127.0.0.2", 25, lo1, 1, false },
		{ "::1", 25, lo1, 1, false },
		{ "::ffff:127.0.0.1", 587, lo1, 1, true },
		/* An IPv6 wildcard takes no IPv4 (its sockets are V6ONLY). */
		{ "::1", 587, v6w, 1, true },
		{ "127.0.0.1", 587, v6w, 1, false },
	};
	static const uint16_t ports[] = { 25, 587 };
	struct ifaddrs *cache = NULL; /* one interface list for every call */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss = own_addr(cases[i].addr, cases[i].port);
		bool got = listen_is_own(&ss, cases[i].ifaces, cases[i].n_ifaces, ports, 2, &cache);
		if (got != cases[i].own)
			fail_msg("%s port %u: got %d", cases[i].addr, cases[i].port, got);
	}
	/* An address of a real interface (other than lo) is ours too. */
	struct ifaddrs *ifa;
	assert_int_equal(getifaddrs(&ifa), 0);
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		memcpy(&ss, i->ifa_addr, sizeof(struct sockaddr_in));
		((struct sockaddr_in *)&ss)->sin_port = htons(25);
		assert_true(listen_is_own(&ss, NULL, 0, ports, 2, &cache));
		((struct sockaddr_in *)&ss)->sin_port = htons(26);
		assert_false(listen_is_own(&ss, NULL, 0, ports, 2, &cache));
	}
	freeifaddrs(ifa);
	if (cache)
		freeifaddrs(cache);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_200k_dots),
		cmocka_unit_test(test_plain_dribbled_replies),
		cmocka_unit_test(test_two_messages),
		cmocka_unit_test(test_two_messages_from_result),
		cmocka_unit_test(test_rcpt_mix),
		cmocka_unit_test(test_close_mid_data),
		cmocka_unit_test(test_data_timeout),
		cmocka_unit_test(test_silent_server),
		cmocka_unit_test(test_garbage_server),
		cmocka_unit_test(test_lmtp_unix),
		cmocka_unit_test(test_starttls_unverified),
		cmocka_unit_test(test_starttls_verified),
		cmocka_unit_test(test_starttls_name_mismatch_refused),
		cmocka_unit_test(test_tls_on_connect),
		cmocka_unit_test(test_unverified_names_mismatch),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_abort_in_callback),
		cmocka_unit_test(test_tls_ctx_kinds),
		cmocka_unit_test(test_listen_is_own),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
