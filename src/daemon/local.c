/*
 * One SMTP session on stdin/stdout, in two flavours:
 *   -bs         a real session: in the mx role for a network peer on stdin
 *               (inetd), in the local role for a program (the caller's uid
 *               recorded); messages are spooled as the daemon spools them;
 *   -bh ip      a test session "as if" from ip on a given listener: every
 *               policy decision is printed, TLS is simulated, AUTH and
 *               recipient checks ask the real credential store, and nothing
 *               is queued.
 * Both drive the same protocol core as the daemon.  When an auth backend is
 * configured, a private auth process is forked for the session and asked
 * synchronously (this process serves one client, it can wait).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../auth/auth.h"
#include "../auth/backend.h"
#include "daemon.h"

struct local {
	const struct conf *c;
	const struct local_opts *o;
	struct smtp_policy pol;
	struct smtp_client cl;
	struct smtp_session *s;
	struct spool *sp;
	struct spool_msg *msg;
	enum spool_fail why;    /* why msg was dropped by a failed write */
	char qid[QUEUE_ID_LEN + 1];
	uint64_t test_bytes;
	pid_t authd_pid;
	int authd_fd;
	uint32_t next_id;
	struct buf io;
};

static void say(const struct local *L, const char *fmt, ...) UTIL_PRINTF(2, 3);
static void say(const struct local *L, const char *fmt, ...)
{
	if (!L->o->test)
		return;
	/* Decisions go to stdout between the replies, marked as in Exim. */
	fflush(stdout);
	struct buf b;
	buf_init(&b, 1 << 20);
	buf_puts(&b, ">>> ");
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	buf_puts(&b, "\n");
	(void)fs_write_all(1, buf_ptr(&b), buf_len(&b));
	buf_free(&b);
}

/* Copies what the daemon says to standard output; false at its end. */
static bool proxy_from_daemon(int s)
{
	char b[16384];
	ssize_t n;
	do
		n = read(s, b, sizeof(b));
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return true;
	if (n <= 0)
		return false;
	return fs_write_all(STDOUT_FILENO, b, (size_t)n) == 0;
}

/* -bs for a user who may not write the spool: the session is the
 * daemon's own, through sendmail_socket, as plain sendmail hands mail over
 * (the daemon learns the caller's uid from the kernel, and local users may
 * send as with sendmail).  Bytes are copied both ways until the daemon
 * closes; the end of standard input is passed on as a half-close.  The
 * socket is never waited on for writing while the daemon waits for us to
 * read, so neither side can block the other.  -1 if the daemon cannot be
 * reached, else the exit status (1: the session broke off). */
static int local_proxy(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -1;
	/* A unix socket connects at once or not at all (EAGAIN: the
	 * daemon's queue of connections is full; the caller says 421). */
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s);
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	struct buf out;
	buf_init(&out, 65536);
	bool in_eof = false, half_closed = false;
	int rc = 0;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = in_eof || buf_len(&out) >= 65536 ? -1 : STDIN_FILENO,
			  .events = POLLIN },
			{ .fd = s, .events = POLLIN | (buf_len(&out) ? POLLOUT : 0) },
		};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = 1;
			break;
		}
		if (p[0].revents) {
			char b[16384];
			size_t room = 65536 - buf_len(&out);
			ssize_t n = read(STDIN_FILENO, b, room < sizeof(b) ? room : sizeof(b));
			if (n > 0)
				buf_append(&out, b, (size_t)n);
			else if (n == 0 || (errno != EINTR && errno != EAGAIN))
				in_eof = true;
		}
		if (buf_len(&out) && (p[1].revents & POLLOUT)) {
			ssize_t n = write(s, buf_ptr(&out), buf_len(&out));
			if (n > 0)
				buf_consume(&out, (size_t)n);
			else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				rc = 1; /* the daemon went away in the middle */
				break;
			}
		}
		if (in_eof && !buf_len(&out) && !half_closed) {
			shutdown(s, SHUT_WR);
			half_closed = true;
		}
		if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) && !proxy_from_daemon(s))
			break;
	}
	buf_free(&out);
	close(s);
	return rc;
}

static int64_t local_clock(void)
{
	return time_mono_ms() / 1000;
}

static void local_nonce(void *ctx, struct buf *out)
{
	uint8_t r[18];
	if (rand_bytes(r, sizeof(r)) < 0)
		memset(r, 0x5a, sizeof(r));
	b64_encode(r, sizeof(r), out);
}

static int start_authd(struct local *L)
{
	L->authd_fd = -1;
	if (!L->c->auth_backend || strcmp(L->c->auth_backend, "none") == 0)
		return 0;
	char tag[64];
	struct err e = { "" };
	snprintf(tag, sizeof(tag), "local.%ld", (long)getpid());
	int lfd = authd_listen(tag, &e);
	if (lfd < 0) {
		fprintf(stderr, "sluice: auth process: %s\n", e.msg);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(lfd);
		return -1;
	}
	if (pid == 0) {
		log_set_process("auth");
		_exit(authd_main(L->c, lfd, getuid(), NULL));
	}
	close(lfd);
	L->authd_pid = pid;
	L->authd_fd = authd_connect(tag, &e);
	if (L->authd_fd < 0) {
		fprintf(stderr, "sluice: auth process: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static void stop_authd(struct local *L)
{
	if (L->authd_fd >= 0)
		close(L->authd_fd);
	if (L->authd_pid > 0) {
		kill(L->authd_pid, SIGTERM);
		waitpid(L->authd_pid, NULL, 0);
	}
}

/* One request, answered within 30 s; NULL reply (tempfail) otherwise. */
static bool ask(struct local *L, uint8_t type, size_t n, const struct authd_field *f,
		struct authd_msg *reply)
{
	if (L->authd_fd < 0)
		return false;
	uint32_t id = ++L->next_id;
	buf_reset(&L->io);
	if (authd_encode(&L->io, type, id, n, f) < 0)
		return false;
	if (send(L->authd_fd, buf_ptr(&L->io), buf_len(&L->io), MSG_NOSIGNAL) !=
	    (ssize_t)buf_len(&L->io))
		return false;
	int64_t deadline = time_mono_ms() + 30000;
	for (;;) {
		int64_t left = deadline - time_mono_ms();
		if (left <= 0)
			return false;
		struct pollfd p = { L->authd_fd, POLLIN, 0 };
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		buf_reset(&L->io);
		uint8_t *w = buf_reserve(&L->io, AUTHD_MAX_MSG + 1);
		ssize_t got = recv(L->authd_fd, w, AUTHD_MAX_MSG + 1, MSG_DONTWAIT);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got <= 0 || (size_t)got > AUTHD_MAX_MSG)
			return false;
		buf_commit(&L->io, (size_t)got);
		if (authd_decode(w, (size_t)got, reply) < 0 || reply->type != AUTHD_REPLY)
			return false;
		if (reply->id == id)
			return true;
	}
}

static void do_lookup(struct local *L, const struct smtp_action *a)
{
	struct authd_field f[2];
	size_t n = 0;
	uint8_t type = AUTHD_RCPT;
	if (a->lookup == SMTP_LOOKUP_SENDER) {
		type = AUTHD_SENDER;
		f[n++] = (struct authd_field){ (const uint8_t *)(a->user ? a->user : ""),
					       a->user ? strlen(a->user) : 0 };
	}
	f[n++] = (struct authd_field){ a->data, a->len };
	struct authd_msg m;
	enum auth_result r = authd_reply_result(ask(L, type, n, f, &m) ? &m : NULL);
	say(L, "%s lookup <%.*s>: %s", type == AUTHD_RCPT ? "recipient" : "sender",
	    (int)a->len, (const char *)a->data,
	    r == AUTH_OK ? (type == AUTHD_RCPT ? "local" : "owned")
	    : r == AUTH_FAIL ? (type == AUTHD_RCPT ? "unknown" : "not owned") : "temporary failure");
	smtp_session_lookup_answer(L->s, r);
}

static void do_auth(struct local *L, const struct sasl_request *q)
{
	struct authd_field f[4];
	uint8_t type = 0;
	size_t n = authd_sasl_fields(q, L->cl.ip, f, &type);
	struct authd_msg m;
	bool ok = ask(L, type, n, f, &m);
	struct sasl_answer ans;
	struct buf user;
	buf_init(&user, 1024);
	authd_sasl_answer(ok ? &m : NULL, q->kind, &user, &ans);
	say(L, "authentication request for user \"%s\": %s", q->user,
	    auth_result_name(ans.result));
	smtp_session_auth_answer(L->s, &ans);
	buf_free(&user);
}

/* RFC 1870 §6, as in the daemon: a SIZE= the spool cannot hold now. */
static bool local_space_ok(void *ctx, uint64_t size)
{
	struct local *L = ctx;
	uint64_t avail = 0;
	if (!L->sp || spool_free_space(L->sp, &avail, NULL) < 0)
		return true;
	return size <= avail;
}

static void body_begin(struct local *L, const struct smtp_envelope *env)
{
	struct err e = { "" };
	if (L->msg)
		spool_msg_abort(L->msg);
	L->msg = NULL;
	L->why = SPOOL_FAIL_NONE;
	L->test_bytes = 0;
	if (L->o->test) {
		snprintf(L->qid, sizeof(L->qid), "%s", "bh-test");
		return;
	}
	if (net_message_begin(L->sp, &L->pol, &L->cl, env, &L->msg, L->qid, &e) < 0)
		fprintf(stderr, "sluice: spool: %s\n", e.msg);
}

static void body_write(struct local *L, const void *p, size_t n)
{
	struct err e = { "" };
	L->test_bytes += n;
	if (L->msg && spool_msg_write(L->msg, p, n, &e) < 0) {
		L->why = spool_msg_failure(L->msg);
		spool_msg_abort(L->msg);
		L->msg = NULL;
	}
}

static void add_headers(struct local *L, unsigned what)
{
	struct buf h;
	buf_init(&h, 4096);
	net_missing_headers(&h, what, L->qid, L->c->primary_hostname);
	say(L, "adding missing header(s): %s%s", what & SMTP_ADD_DATE ? "Date " : "",
	    what & SMTP_ADD_MESSAGE_ID ? "Message-ID" : "");
	body_write(L, buf_ptr(&h), buf_len(&h));
	buf_free(&h);
}

static int flush(struct local *L, size_t *wrote)
{
	const uint8_t *p;
	size_t n;
	smtp_session_output(L->s, &p, &n);
	*wrote = n;
	if (n == 0)
		return 0;
	fflush(stdout);
	if (fs_write_all(1, p, n) < 0)
		return -1;
	smtp_session_output_done(L->s, n);
	return 0;
}

/* What must be told to the machine once its action list is drained. */
enum pend { P_NONE, P_COMMIT, P_TLS, P_AUTH, P_LOOKUP };

static void run(struct local *L)
{
	struct err e = { "" };
	bool done = false, eof = false, resumed = false;
	struct buf in;
	buf_init(&in, 64 * 1024);
	struct smtp_action pending_act;
	memset(&pending_act, 0, sizeof(pending_act));
	const struct sasl_request *pending_req = NULL;
	for (;;) {
		const struct smtp_action *a;
		enum pend pend = P_NONE;
		while ((a = smtp_session_next_action(L->s)) != NULL) {
			switch (a->type) {
			case SMTP_ACT_STARTTLS:
				pend = P_TLS;
				break;
			case SMTP_ACT_BODY_BEGIN:
				body_begin(L, a->env);
				break;
			case SMTP_ACT_BODY_DATA:
				body_write(L, a->data, a->len);
				break;
			case SMTP_ACT_BODY_ABORT:
				if (L->msg)
					spool_msg_abort(L->msg);
				L->msg = NULL;
				say(L, "message discarded");
				break;
			case SMTP_ACT_COMMIT:
				pend = P_COMMIT;
				break;
			case SMTP_ACT_LOG_REFUSED:
				say(L, "refused \"%.*s\": %.*s", (int)a->len, (const char *)a->data,
				    (int)a->reply_len, a->reply);
				break;
			case SMTP_ACT_CLOSE:
				done = true;
				break;
			case SMTP_ACT_AUTH_REQUEST:
				pend = P_AUTH;
				pending_req = a->sasl_req;
				break;
			case SMTP_ACT_LOOKUP:
				pend = P_LOOKUP;
				pending_act = *a;
				break;
			case SMTP_ACT_LOG_ACL:
				say(L, "%.*s: %.*s", (int)a->reply_len, a->reply, (int)a->len,
				    (const char *)a->data);
				break;
			case SMTP_ACT_LOG_AUTH:
				say(L, "authentication %.*s for \"%.*s\"", (int)a->reply_len, a->reply,
				    (int)a->len, (const char *)a->data);
				break;
			case SMTP_ACT_ADD_HEADERS:
				add_headers(L, a->add_headers);
				break;
			}
		}
		size_t wrote = 0;
		if (flush(L, &wrote) < 0)
			break;
		if (pend == P_COMMIT) {
			bool ok = false;
			enum spool_fail why = L->why;
			if (L->o->test) {
				ok = true;
				say(L, "message of %llu bytes accepted; -bh queues nothing",
				    (unsigned long long)L->test_bytes);
			} else if (L->msg) {
				spool_commit_batch(L->sp, &L->msg, 1, &ok, &why, &e);
				L->msg = NULL;
				/* Tell a running daemon's queue runner; without one the
				 * message waits for the next start. */
				if (ok) {
					net_log_queued("bs", L->qid, smtp_session_envelope(L->s),
						       L->pol.role, L->o->local_user);
					runner_ctl_notify(L->c, L->qid);
				}
			}
			smtp_session_commit_result(L->s,
						   ok ? SMTP_COMMIT_OK
						   : why == SPOOL_FAIL_NOSPACE ? SMTP_COMMIT_NOSPACE
									       : SMTP_COMMIT_TEMPFAIL,
						   L->qid);
			continue;
		}
		if (pend == P_TLS) {
			say(L, "STARTTLS: TLS is simulated in -bh (TLSv1.3)");
			smtp_session_tls_started(L->s, "TLSv1.3", "simulated");
			continue;
		}
		if (pend == P_AUTH) {
			do_auth(L, pending_req);
			continue;
		}
		if (pend == P_LOOKUP) {
			do_lookup(L, &pending_act);
			continue;
		}
		if (done)
			break;
		/* Output drained with commands still buffered: go on before
		 * blocking in read(), or a pipelining client waits forever. */
		if (wrote > 0 || (!smtp_session_wants_input(L->s) && !resumed)) {
			resumed = true;
			smtp_session_feed(L->s, NULL, 0);
			continue;
		}
		resumed = false;
		if (!smtp_session_wants_input(L->s) || eof)
			break;
		if (buf_len(&in) == 0) {
			buf_reset(&in);
			uint8_t *w = buf_reserve(&in, 16384);
			ssize_t r = read(0, w, 16384);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				eof = true;
				smtp_session_eof(L->s);
				continue;
			}
			buf_commit(&in, (size_t)r);
		}
		/* -bh feeds a script one line at a time, as a client that waits
		 * for each reply would send it: otherwise everything after
		 * STARTTLS would be (rightly) thrown away as injected. */
		size_t n = buf_len(&in);
		if (L->o->test) {
			const uint8_t *lf = memchr(buf_ptr(&in), '\n', n);
			if (lf)
				n = (size_t)(lf - buf_ptr(&in)) + 1;
		}
		smtp_session_feed(L->s, buf_ptr(&in), n);
		buf_consume(&in, n);
	}
	buf_free(&in);
}

int local_session(const struct conf *c, const struct local_opts *o)
{
	struct local L;
	struct err e = { "" };
	memset(&L, 0, sizeof(L));
	L.c = c;
	L.o = o;
	L.authd_fd = -1;
	buf_init(&L.io, AUTHD_MAX_MSG + 1);
	struct conf_listener mx;
	const struct conf_listener *l = NULL;
	if (o->port) {
		l = conf_listener_for_port(c, o->port);
		if (!l) {
			fprintf(stderr, "sluice: port %u is not one of daemon_smtp_ports\n", o->port);
			return 1;
		}
	} else {
		memset(&mx, 0, sizeof(mx));
		mx.role = CONF_ROLE_MX;
		mx.tls = CONF_TLS_NONE;
		l = &mx;
	}
	if (o->local_user)
		worker_policy_local(c, &L.pol);
	else
		worker_policy(c, l, o->test && c->tls_certificate != NULL, &L.pol);
	struct rate_table *rates = rate_new(1000, 1);
	L.pol.rates = rates;
	L.pol.clock_s = local_clock;
	L.pol.trace_acl = o->test;
	L.cl.session_id = o->test ? "bh" : "bs";
	L.cl.ip = o->local_user ? "local" : o->ip;
	L.cl.local_user = o->local_user;
	L.cl.rdns = NULL;
	L.cl.local_port = o->port;
	L.cl.make_nonce = local_nonce;
	if (!o->test && spool_open(c->spool_directory, &L.sp, &e) < 0) {
		rate_free(rates);
		buf_free(&L.io);
		/* -bs writes the spool itself, which needs the spool's owner or
		 * root: a local program run by anyone else gets the running
		 * daemon's session instead, with the trust of sendmail.  Never a
		 * network peer (inetd): the daemon's local session would let it
		 * relay. */
		int pr = o->local_user ? local_proxy(c->sendmail_socket) : -1;
		if (pr >= 0)
			return pr;
		fprintf(stderr, "sluice: %s\n", e.msg);
		/* The client on the other end speaks SMTP: it gets a reply, not
		 * an empty stream. */
		printf("421 4.3.0 %s cannot open the mail queue, and the daemon is not running\r\n",
		       c->primary_hostname);
		fflush(stdout);
		return 1;
	}
	if (start_authd(&L) < 0) {
		stop_authd(&L);
		if (L.sp)
			spool_close(L.sp);
		return 1;
	}
	L.s = smtp_session_new(&L.pol, &L.cl);
	if (L.sp)
		smtp_session_set_space_check(L.s, local_space_ok, &L);
	if (o->test)
		say(&L, "test session from %s to port %u: role %s, TLS %s, AUTH %s", o->ip, o->port,
		    smtp_role_name(L.pol.role),
		    L.pol.tls_on_connect ? "on connect"
		    : L.pol.tls_required ? "required (STARTTLS)"
		    : L.pol.tls_available ? "offered (STARTTLS)" : "not available",
		    L.pol.auth_mechs ? "offered inside TLS" : "not offered");
	if (L.pol.tls_on_connect) {
		say(&L, "TLS on connect: simulated in -bh (TLSv1.3)");
		smtp_session_tls_started(L.s, "TLSv1.3", "simulated");
	}
	smtp_session_start(L.s);
	run(&L);
	if (L.msg)
		spool_msg_abort(L.msg);
	smtp_session_free(L.s);
	stop_authd(&L);
	if (L.sp)
		spool_close(L.sp);
	buf_free(&L.io);
	rate_free(rates);
	return 0;
}

/* ---- -bt: how an address resolves ------------------------------------ */

static void print_target(const char *source, const char *target, void *arg)
{
	printf("  alias (%s) -> %s\n", source, target);
}

int address_test(const struct conf *c, const char *address)
{
	struct buf path;
	struct err e = { "" };
	buf_init(&path, 1024);
	buf_printf(&path, "<%s>", address);
	struct smtp_path p;
	size_t used = 0;
	const char *ps = buf_cstr(&path);
	if (!ps || smtp_parse_path(ps, buf_len(&path), SMTP_PATH_ALLOW_BARE | SMTP_PATH_UTF8, &p,
				   &used) != SMTP_PATH_OK ||
	    used != buf_len(&path)) {
		printf("%s\n  not a valid address (RFC 5321 4.1.2)\n", address);
		buf_free(&path);
		return 1;
	}
	/* Resolved in the one form the SMTP server uses after RCPT. */
	struct buf canon_addr;
	buf_init(&canon_addr, 1024);
	if (smtp_path_canonical(&p, &canon_addr) < 0 || !buf_cstr(&canon_addr)) {
		printf("%s\n  not a valid address (RFC 5321 4.1.2)\n", address);
		buf_free(&canon_addr);
		buf_free(&path);
		return 1;
	}
	log_set_level(LOG_LVL_WARN); /* the answer is what is printed */
	printf("%s\n", address);
	if (strcmp(buf_cstr(&canon_addr), address) != 0)
		printf("  canonical form %s\n", buf_cstr(&canon_addr));
	address = buf_cstr(&canon_addr);
	bool local = !p.domain || smtp_domain_in_list(p.domain, p.domain_len,
						      (const char *const *)c->local_domains,
						      c->n_local_domains);
	if (!local) {
		printf("  domain %.*s is remote\n", (int)p.domain_len, p.domain);
		printf("  result: on the MX port refused (550 5.7.1 relaying denied); from an "
		       "authenticated user, delivered by SMTP to the domain's MX hosts\n");
		buf_free(&path);
		buf_free(&canon_addr);
		return 0;
	}
	if (p.domain)
		printf("  domain %.*s is local\n", (int)p.domain_len, p.domain);
	struct auth_backend *b = NULL;
	buf_free(&path); /* p's views are not used past this point */
	if (auth_backend_from_conf(c, &b, &e) < 0) {
		printf("  user store: %s\n", e.msg);
		buf_free(&canon_addr);
		return 1;
	}
	struct auth_dir *d = auth_dir_new(c, b, 64u << 20);
	int n = auth_dir_expand(d, address, print_target, NULL, &e);
	if (n < 0)
		printf("  a source of aliases is unavailable: %s\n", e.msg);
	if (b && b->can_list_users) {
		struct buf stored, canon;
		buf_init(&stored, 4096);
		buf_init(&canon, 1024);
		enum auth_lookup r = auth_dir_user(d, address, &stored, &canon, &e);
		if (r == AUTH_LOOKUP_FOUND)
			printf("  local user %s (%s)\n", buf_cstr(&canon), b->name);
		else if (r == AUTH_LOOKUP_UNAVAILABLE)
			printf("  user store %s unavailable: %s\n", b->name, e.msg);
		buf_free(&stored);
		buf_free(&canon);
	}
	enum auth_lookup r = auth_dir_rcpt(d, address, &e);
	bool verify = b && c->recipient_verify;
	if (r == AUTH_LOOKUP_FOUND)
		printf("  result: accepted at RCPT on the MX port\n");
	else if (r == AUTH_LOOKUP_NOTFOUND)
		printf("  result: %s\n", verify ? "unknown local user: refused at RCPT on the MX port "
						   "(550 5.1.1)"
						 : "unknown local user (recipient_verify is off or no "
						   "user store: accepted at RCPT)");
	else
		printf("  result: temporary failure at RCPT (451 4.3.0): %s\n", e.msg);
	auth_dir_free(d);
	auth_backend_free(b);
	buf_free(&canon_addr);
	return r == AUTH_LOOKUP_UNAVAILABLE ? 1 : 0;
}
