/* SMTP worker: drops privileges, runs the event loop serving thousands of
 * sessions; and the -bs one-session mode. */
#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "daemon.h"

/* What every listener shares: the name, the local domains, the limits. */
static void policy_common(const struct conf *c, struct smtp_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->hostname = c->primary_hostname;
	p->local_domains = (const char *const *)c->local_domains;
	p->n_local_domains = c->n_local_domains;
	p->line_max = c->smtp_line_max;
	p->message_max = c->message_size_limit;
	p->rcpt_max = c->recipients_max;
	p->errors_max = c->smtp_max_errors;
	p->nonmail_max = c->smtp_accept_max_nonmail;
	p->envelope_max = spool_env_max();
	p->data_line_max = c->message_line_max;
	p->header_max = c->message_header_max;
}

void worker_policy(const struct conf *c, const struct conf_listener *l, bool tls_available,
		   struct smtp_policy *p)
{
	policy_common(c, p);
	p->role = l->role == CONF_ROLE_SUBMISSION ? SMTP_ROLE_SUBMISSION : SMTP_ROLE_MX;
	p->tls_available = tls_available && l->tls != CONF_TLS_NONE;
	p->tls_on_connect = l->tls == CONF_TLS_ON_CONNECT;
	p->tls_required = l->tls_required;
	p->auth_required = l->auth_required;
	bool backend = c->auth_backend && strcmp(c->auth_backend, "none") != 0;
	p->auth_mechs = backend && l->auth ? c->auth_mechanisms : 0;
	/* On the MX port only: an authenticated user's typo to a local
	 * address bounces like any other delivery failure. */
	p->check_rcpt_local = backend && c->recipient_verify && l->role == CONF_ROLE_MX;
	/* Whoever authenticated, on any listener that offers AUTH, sends only
	 * as an address the login owns; other servers on an MX listener do
	 * not authenticate and are not concerned. */
	p->check_sender = backend && (l->role == CONF_ROLE_SUBMISSION || l->auth);
	p->check_from = p->check_sender && c->submission_check_from;
	for (int st = 0; st < ACL_NSTAGES; st++)
		p->acl[st] = l->acl[st];
	p->add_missing_headers = l->role == CONF_ROLE_SUBMISSION && c->submission_add_headers;
	p->hide_client_ip = l->role == CONF_ROLE_SUBMISSION && c->received_hide_client_ip;
}

void worker_policy_local(const struct conf *c, struct smtp_policy *p)
{
	policy_common(c, p);
	p->role = SMTP_ROLE_LOCAL;
	/* Scripts and cron omit them more often than mail clients do. */
	p->add_missing_headers = true;
}

/* The clock of ACL rate conditions: monotonic, so that a clock step does
 * not empty or fill the windows. */
static int64_t worker_clock(void)
{
	return time_mono_ms() / 1000;
}

static int drop_privileges(const struct worker_args *a)
{
	if (!a->drop_privileges)
		return 0;
	/* The spool is reached through descriptors opened by the master, so a
	 * worker needs no file system at all: lock it into the spool directory. */
	if (chroot(a->conf->spool_directory) < 0 || chdir("/") < 0) {
		log_event(LOG_LVL_ERR, "privileges", "error=\"chroot %s: %s\"",
			  a->conf->spool_directory, strerror(errno));
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(a->gid) < 0 || setuid(a->uid) < 0) {
		log_event(LOG_LVL_ERR, "privileges", "error=\"cannot switch to user %s: %s\"",
			  a->conf->user, strerror(errno));
		return -1;
	}
	/* Belt and braces: regaining root must be impossible now. */
	if (setuid(0) == 0) {
		log_event(LOG_LVL_ERR, "privileges", "error=\"could regain root\"");
		return -1;
	}
	return 0;
}

static void on_empty(struct net_server *srv)
{
	event_base_loopbreak(srv->base);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct net_server *srv = arg;
	log_event(LOG_LVL_INFO, "worker_stopping", "sessions=%zu", srv->n_conns);
	net_server_stop(srv);
}

/* SIGUSR1, from the master on reload: new connections go to the new
 * workers; the sessions here go on until their clients end them, for at
 * most shutdown_timeout, then the ordinary stop closes what is left. */
static void on_retire_signal(evutil_socket_t sig, short what, void *arg)
{
	struct net_server *srv = arg;
	if (srv->retiring || srv->stopping)
		return;
	log_event(LOG_LVL_INFO, "worker_retiring", "sessions=%zu", srv->n_conns);
	net_server_retire(srv);
}

int worker_main(const struct worker_args *a)
{
	log_set_process("worker");
	pid_t master = getppid();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* SIGUSR1 (retire) stays blocked, as the master had it at the fork,
	 * until its handler is in place: one sent early is then not lost. */
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_SETMASK, &usr1, NULL);
	/* A session is a descriptor: the usual soft limit of 1024 is far below
	 * smtp_accept_max.  Raising it to the hard limit needs no privilege. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (drop_privileges(a) < 0)
		return 1;
	/* After the uid change, which clears it: stop if the master dies. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != master)
		return 1;

	struct event_base *base = event_base_new();
	if (!base) {
		log_event(LOG_LVL_ERR, "worker_failed", "error=\"event_base_new\"");
		return 1;
	}
	/* One priority for every event: libevent runs a lower priority only
	 * while no higher one is active, which under load would starve the
	 * group commit, the listeners and the stop signal. */

	struct net_server srv;
	memset(&srv, 0, sizeof(srv));
	srv.base = base;
	srv.conf = a->conf;
	srv.spool = a->spool;
	spool_set_group_sync(a->spool, a->conf->spool_group_sync);
	srv.slots = a->slots;
	srv.n_slots = a->n_slots;
	srv.my_slot = a->my_slot;
	srv.hosts = a->hosts;
	srv.on_empty = on_empty;
	if (a->authd_tag)
		srv.authc = authc_new(base, a->authd_tag, 30);
	srv.notify_fd = a->notify_fd;
	srv.n_listeners = a->n_listeners + (a->local_fd >= 0);
	/* One rate table per worker: ACL rate limits count per process. */
	uint64_t seed = 0;
	(void)rand_bytes(&seed, sizeof(seed));
	struct rate_table *rates = rate_new(100000, seed);
	srv.listeners = xcalloc(srv.n_listeners, sizeof(*srv.listeners));
	if (a->local_fd >= 0) {
		struct net_listener *l = &srv.listeners[a->n_listeners];
		l->fd = a->local_fd;
		l->local = true;
		worker_policy_local(a->conf, &l->policy);
		l->policy.rates = rates;
		l->policy.clock_s = worker_clock;
	}
	for (size_t i = 0; i < a->n_listeners; i++) {
		struct net_listener *l = &srv.listeners[i];
		l->fd = a->listeners[i].fd;
		l->port = a->listeners[i].conf->port;
		l->conf = a->listeners[i].conf;
		l->tls = a->listeners[i].tls;
		worker_policy(a->conf, l->conf, l->tls != NULL, &l->policy);
		l->policy.rates = rates;
		l->policy.clock_s = worker_clock;
	}
	struct err e = { "" };
	/* After the chroot and the uid change: the thread inherits them. */
	if (spool_thread_start(a->spool, &e) < 0)
		log_event(LOG_LVL_WARN, "spool_thread", "error=\"%s\" commits run in the event loop",
			  e.msg);
	if (net_server_start(&srv, &e) < 0) {
		log_event(LOG_LVL_ERR, "worker_failed", "error=\"%s\"", e.msg);
		return 1;
	}
	struct event *sigterm = evsignal_new(base, SIGTERM, on_stop_signal, &srv);
	struct event *sigint = evsignal_new(base, SIGINT, on_stop_signal, &srv);
	struct event *sigusr1 = evsignal_new(base, SIGUSR1, on_retire_signal, &srv);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_add(sigusr1, NULL);
	sigprocmask(SIG_UNBLOCK, &usr1, NULL);
	log_event(LOG_LVL_INFO, "worker_start", "listeners=%zu", a->n_listeners);
	event_base_dispatch(base);
	log_event(LOG_LVL_INFO, "worker_exit", "status=0");
	event_free(sigterm);
	event_free(sigint);
	event_free(sigusr1);
	net_server_free(&srv);
	spool_thread_stop(a->spool);
	authc_free(srv.authc);
	rate_free(rates);
	free(srv.listeners);
	event_base_free(base);
	return 0;
}

