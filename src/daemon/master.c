/*
 * The master: runs as root, never reads a byte from the network.  Binds
 * the sockets, loads certificates, recovers the spool, starts one worker
 * per core under the unprivileged user, replaces workers that die, reloads
 * on SIGHUP (a broken new configuration is refused and the old one keeps
 * serving) and stops on SIGTERM once the workers have finished.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../auth/auth.h"
#include "daemon.h"

struct sock {
	char *addr;
	uint16_t port;
	int fd;
	bool used; /* by the generation being built */
};

/* One configuration and everything built from it. */
struct gen {
	struct conf *conf;
	bool owns_conf;
	struct tls_ctx **tls;          /* per conf listener, NULL when no cert */
	size_t n_tls;
	struct worker_listener *wl;    /* per (listener, address) */
	size_t n_wl;
	uid_t uid;
	gid_t gid;
	bool drop;
};

struct child {
	pid_t pid;
	size_t slot;
	struct gen *gen;
	bool retiring;
	int64_t started_ms;
	int64_t kill_at_ms; /* retiring: SIGKILL if still alive then */
};

struct master {
	const struct daemon_opts *o;
	/* The fake SCRAM salts' key, read once by root (the auth process,
	 * as user, gets a copy in memory; the workers never see it). */
	uint8_t fake_key[AUTHD_FAKE_KEY_LEN];
	bool fake_key_ok;
	struct gen *cur;
	struct gen **old;  /* generations still used by retiring workers */
	size_t n_old;
	struct sock *socks;
	size_t n_socks;
	struct spool *spool;
	bool runner_stop_asked;    /* the runner (and so mdeliver) was told to go */
	bool authd_stop_asked;
	int spool_lock_fd;         /* flock'd spool directory: one daemon per spool */
	uint32_t *slots;
	struct net_hosts *hosts;
	struct child *children;
	size_t n_children;
	size_t want_workers;
	bool stopping;
	int64_t respawn_at_ms;
	/* The auth process: the only one that reads credentials. */
	char authd_tag[32];
	int authd_fd;          /* its listening socket, kept across restarts */
	pid_t authd_pid;
	int64_t authd_started_ms;
	int64_t authd_respawn_at_ms;
	/* The queue runner and its local delivery process, started and
	 * stopped as a pair (they share a socketpair). */
	int notify_rd, notify_wr;  /* workers -> runner datagrams */
	int ctl_fd;                /* control socket (-q, -M...) */
	int local_fd;              /* the sendmail socket */
	pid_t runner_pid, md_pid;
	int64_t runner_started_ms;
	int64_t runner_respawn_at_ms;
};

static bool auth_configured(const struct conf *c)
{
	return c->auth_backend && strcmp(c->auth_backend, "none") != 0;
}

static size_t ncores(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (size_t)n : 1;
}

static void gen_free(struct gen *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->n_tls; i++)
		tls_ctx_free(g->tls[i]);
	free(g->tls);
	free(g->wl);
	if (g->owns_conf)
		conf_free(g->conf);
	free(g);
}

static int find_sock(struct master *m, const char *addr, uint16_t port)
{
	for (size_t i = 0; i < m->n_socks; i++)
		if (m->socks[i].port == port && strcmp(m->socks[i].addr, addr) == 0)
			return (int)i;
	return -1;
}

/* Opens path for reading and checks that it is a regular file, as the
 * processes that read aliases_file do (queue runner, auth process): when
 * drop, in a child running as uid/gid without supplementary groups, so
 * that a file only root may read is refused too. */
static int aliases_open_code(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return errno;
	struct stat st;
	int r = fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? 0 : -1;
	close(fd);
	return r;
}

static int aliases_check(const char *path, bool drop, uid_t uid, gid_t gid, struct err *e)
{
	int code;
	if (!drop) {
		code = aliases_open_code(path);
	} else {
		pid_t pid = fork();
		if (pid < 0)
			return err_set(e, "fork: %s", strerror(errno));
		if (pid == 0) {
			if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
				_exit(255);
			int r = aliases_open_code(path);
			/* errno values are below 253 on Linux; 253 to 255 say why else. */
			_exit(r == 0 ? 0 : r < 0 ? 254 : r < 253 ? r : 253);
		}
		int st;
		while (waitpid(pid, &st, 0) < 0) {
			if (errno != EINTR)
				return err_set(e, "waitpid: %s", strerror(errno));
		}
		if (!WIFEXITED(st))
			return err_set(e, "the check ended by signal %d", WTERMSIG(st));
		code = WEXITSTATUS(st);
		if (code == 255)
			return err_set(e, "cannot change to the user to check it");
		if (code == 254)
			code = -1;
		else if (code == 253)
			return err_set(e, "cannot be opened");
	}
	if (code < 0)
		return err_set(e, "not a regular file");
	if (code > 0)
		return err_set(e, "%s", strerror(code));
	return 0;
}

int master_conf_check(const struct conf *c, uid_t *uid, gid_t *gid, bool *drop, struct err *e)
{
	*uid = 0;
	*gid = 0;
	*drop = false;
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam(c->user);
		if (!pw)
			return err_set(e, "%s: user '%s' does not exist (create it, e.g. `useradd "
				       "--system --home-dir /var/spool/sluice --shell /usr/sbin/nologin "
				       "%s`, or set user)", c->path, c->user, c->user);
		if (pw->pw_uid == 0)
			return err_set(e, "%s: user '%s' is root; workers must run unprivileged",
				       c->path, c->user);
		*uid = pw->pw_uid;
		*gid = pw->pw_gid;
		*drop = true;
		/* spawn_runner checks it again (the account may go later); here
		 * a mistake is refused instead of leaving mail queued for ever. */
		if (c->mail_user && *c->mail_user) {
			struct passwd *mp = getpwnam(c->mail_user);
			if (!mp)
				return err_set(e, "%s: mail_user '%s' does not exist (create it, or "
					       "leave mail_user empty for the mailboxes to be owned by "
					       "user '%s')", c->path, c->mail_user, c->user);
			if (mp->pw_uid == 0)
				return err_set(e, "%s: mail_user '%s' is root; mailboxes must be owned "
					       "by an unprivileged user", c->path, c->mail_user);
		}
	}
	/* The files read as user (the address files by the auth process and
	 * the runner, the user store by the auth process, the resolver's
	 * configuration by the runner): one they cannot read would defer
	 * every lookup, login or delivery for ever. */
	bool pwfile = c->auth_backend && strcmp(c->auth_backend, "passwd-file") == 0;
	bool sqlite = c->auth_backend && strcmp(c->auth_backend, "sqlite") == 0;
	const struct {
		const char *name, *path, *hint;
	} files[] = {
		{ "aliases_file", c->aliases_file, "or leave aliases_file empty for none" },
		{ "virtual_alias_file", c->virtual_alias_file,
		  "or leave virtual_alias_file empty for none" },
		{ "submission_senders_file", c->submission_senders_file,
		  "or leave submission_senders_file empty for none" },
		{ "auth_passwd_file", pwfile ? c->auth_passwd_file : NULL,
		  "e.g. chgrp that user's group and chmod 640; `sluice -buseradd` creates it so" },
		{ "auth_sqlite_database", sqlite ? c->auth_sqlite_database : NULL,
		  "e.g. chgrp that user's group and chmod 640" },
		{ "dns_unbound_config", c->dns_unbound_config,
		  "or leave dns_unbound_config empty for none" },
	};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (!files[i].path || !*files[i].path ||
		    aliases_check(files[i].path, *drop, *uid, *gid, e) == 0)
			continue;
		char why[sizeof(e->msg)];
		snprintf(why, sizeof(why), "%s", e->msg);
		if (*drop)
			return err_set(e, "%s: %s %s cannot be read by user '%s': %s (make it readable "
				       "by that user, %s)", c->path, files[i].name, files[i].path,
				       c->user, why, files[i].hint);
		return err_set(e, "%s: %s %s cannot be read: %s (%s)", c->path, files[i].name,
			       files[i].path, why, files[i].hint);
	}
	return 0;
}

/* Builds a generation: user, certificates and sockets.  On failure
 * nothing of the running generation is touched. */
static struct gen *gen_build(struct master *m, struct conf *c, struct err *e)
{
	struct gen *g = xcalloc(1, sizeof(*g));
	g->conf = c;
	if (master_conf_check(c, &g->uid, &g->gid, &g->drop, e) < 0) {
		gen_free(g);
		return NULL;
	}
	g->tls = xcalloc(c->n_listeners ? c->n_listeners : 1, sizeof(*g->tls));
	g->n_tls = c->n_listeners;
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct conf_listener *l = &c->listeners[i];
		if (!c->tls_certificate || l->tls == CONF_TLS_NONE)
			continue;
		if (tls_ctx_new(c, l, &g->tls[i], e) < 0) {
			gen_free(g);
			return NULL;
		}
	}
	for (size_t i = 0; i < m->n_socks; i++)
		m->socks[i].used = false;
	size_t nbound_before = m->n_socks;
	g->wl = xcalloc(c->n_listeners * c->n_local_interfaces + 1, sizeof(*g->wl));
	for (size_t i = 0; i < c->n_listeners; i++) {
		for (size_t j = 0; j < c->n_local_interfaces; j++) {
			const char *addr = c->local_interfaces[j];
			int k = find_sock(m, addr, c->listeners[i].port);
			if (k < 0) {
				int fd = listen_bind(addr, c->listeners[i].port,
						     (int)c->smtp_connect_backlog, e);
				if (fd < 0) {
					/* Close what this attempt bound; keep the old ones. */
					while (m->n_socks > nbound_before) {
						m->n_socks--;
						close(m->socks[m->n_socks].fd);
						free(m->socks[m->n_socks].addr);
					}
							gen_free(g);
					return NULL;
				}
				m->socks = xrealloc(m->socks, (m->n_socks + 1) * sizeof(*m->socks));
				m->socks[m->n_socks] = (struct sock){ str_dup(addr), c->listeners[i].port,
								      fd, false };
				k = (int)m->n_socks++;
			} else {
				/* A socket kept over a reload: listen() again applies
				 * a changed smtp_connect_backlog (Linux resizes the
				 * queue of a listening socket). */
				(void)listen(m->socks[k].fd, (int)c->smtp_connect_backlog);
			}
			m->socks[k].used = true;
			g->wl[g->n_wl].fd = m->socks[k].fd;
			g->wl[g->n_wl].conf = &c->listeners[i];
			g->wl[g->n_wl].tls = g->tls[i];
			g->n_wl++;
		}
	}
	/* From here on the generation owns its configuration. */
	g->owns_conf = true;
	return g;
}

/* Closes the master's sockets that the current generation no longer uses. */
static void socks_prune(struct master *m)
{
	size_t j = 0;
	for (size_t i = 0; i < m->n_socks; i++) {
		if (m->socks[i].used) {
			m->socks[j++] = m->socks[i];
		} else {
			log_event(LOG_LVL_INFO, "unlisten", "addr=%s port=%u", m->socks[i].addr,
				  m->socks[i].port);
			close(m->socks[i].fd);
			free(m->socks[i].addr);
		}
	}
	m->n_socks = j;
}

static size_t free_slot(struct master *m)
{
	for (size_t s = 0; s < IPC_MAX_SLOTS; s++) {
		bool taken = false;
		for (size_t i = 0; i < m->n_children; i++)
			if (m->children[i].slot == s)
				taken = true;
		if (!taken)
			return s;
	}
	return IPC_MAX_SLOTS;
}

static int spawn(struct master *m, struct gen *g)
{
	size_t slot = free_slot(m);
	if (slot >= IPC_MAX_SLOTS)
		return -1;
	m->slots[slot] = 0;
	net_hosts_clear_slot(m->hosts, slot);
	if (__atomic_load_n(&m->slots[IPC_MAX_SLOTS], __ATOMIC_RELAXED) < slot + 1)
		__atomic_store_n(&m->slots[IPC_MAX_SLOTS], (uint32_t)(slot + 1), __ATOMIC_RELEASE);
	pid_t pid = fork();
	if (pid < 0) {
		log_event(LOG_LVL_ERR, "fork_failed", "error=\"%s\"", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		struct worker_args a = {
			.conf = g->conf, .listeners = g->wl, .n_listeners = g->n_wl,
			.spool = m->spool, .slots = m->slots, .n_slots = IPC_MAX_SLOTS,
			.my_slot = slot, .hosts = m->hosts, .drop_privileges = g->drop, .uid = g->uid, .gid = g->gid,
			.authd_tag = auth_configured(g->conf) ? m->authd_tag : NULL,
			.notify_fd = m->notify_wr, .local_fd = m->local_fd,
		};
		close(m->notify_rd);
		if (m->ctl_fd >= 0)
			close(m->ctl_fd);
		if (m->authd_fd >= 0)
			close(m->authd_fd);
		if (m->spool_lock_fd >= 0)
			close(m->spool_lock_fd);
		/* The listening sockets of other generations are not ours. */
		for (size_t i = 0; i < m->n_socks; i++) {
			bool mine = false;
			for (size_t k = 0; k < g->n_wl; k++)
				if (g->wl[k].fd == m->socks[i].fd)
					mine = true;
			if (!mine)
				close(m->socks[i].fd);
		}
		_exit(worker_main(&a));
	}
	m->children = xrealloc(m->children, (m->n_children + 1) * sizeof(*m->children));
	m->children[m->n_children++] = (struct child){ pid, slot, g, false, time_mono_ms(), 0 };
	log_event(LOG_LVL_INFO, "worker_started", "worker=%ld slot=%zu", (long)pid, slot);
	return 0;
}

static void spawn_authd(struct master *m)
{
	struct gen *g = m->cur;
	if (!auth_configured(g->conf) || m->authd_pid > 0 || m->stopping)
		return;
	if (m->authd_fd < 0) {
		/* Named after the master's pid (taken after detaching), in the
		 * abstract namespace: workers reach it from inside their chroot. */
		struct err e = { "" };
		snprintf(m->authd_tag, sizeof(m->authd_tag), "%ld", (long)getpid());
		m->authd_fd = authd_listen(m->authd_tag, &e);
		if (m->authd_fd < 0) {
			log_event(LOG_LVL_ERR, "authd_failed", "error=\"%s\"", e.msg);
			m->authd_respawn_at_ms = time_mono_ms() + 1000;
			return;
		}
	}
	pid_t pid = fork();
	if (pid < 0) {
		log_event(LOG_LVL_ERR, "fork_failed", "error=\"%s\"", strerror(errno));
		return;
	}
	if (pid == 0) {
		log_set_process("auth");
		for (size_t i = 0; i < m->n_socks; i++)
			close(m->socks[i].fd);
		close(m->notify_rd);
		close(m->notify_wr);
		if (m->ctl_fd >= 0)
			close(m->ctl_fd);
		if (m->local_fd >= 0)
			close(m->local_fd);
		if (m->spool_lock_fd >= 0)
			close(m->spool_lock_fd);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		pid_t master = getppid();
		/* Not chrooted: it reads the credential files and Dovecot's socket,
		 * which is why it is a process of its own. */
		if (g->drop && (setgroups(0, NULL) < 0 || setgid(g->gid) < 0 || setuid(g->uid) < 0)) {
			log_event(LOG_LVL_ERR, "privileges", "error=\"auth process: %s\"",
				  strerror(errno));
			_exit(1);
		}
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)
			_exit(1);
		_exit(authd_main(g->conf, m->authd_fd, g->drop ? g->uid : getuid(),
				 m->fake_key_ok ? m->fake_key : NULL));
	}
	m->authd_pid = pid;
	m->authd_stop_asked = false;
	m->authd_started_ms = time_mono_ms();
	log_event(LOG_LVL_INFO, "authd_started", "pid=%ld backend=%s", (long)pid,
		  g->conf->auth_backend);
}

/* Creates the static part of maildir_path (up to the first '%') for the
 * mailbox owner, so that it can create the rest. */
static void prepare_maildir_root(const struct conf *c, uid_t uid, gid_t gid, bool drop)
{
	size_t n = mdeliver_root_len(c->maildir_path);
	if (n == 0)
		return;
	char *root = str_ndup(c->maildir_path, n);
	struct err e = { "" };
	struct stat st;
	if (stat(root, &st) < 0) {
		if (fs_mkdir_p(root, 0750, &e) < 0)
			log_event(LOG_LVL_WARN, "maildir_root", "error=\"%s\"", e.msg);
		else if (drop && chown(root, uid, gid) < 0)
			log_event(LOG_LVL_WARN, "maildir_root", "error=\"chown %s: %s\"", root,
				  strerror(errno));
	}
	free(root);
}

static void child_common(struct master *m)
{
	for (size_t i = 0; i < m->n_socks; i++)
		if (m->socks[i].fd >= 0)
			close(m->socks[i].fd);
	if (m->authd_fd >= 0)
		close(m->authd_fd);
	if (m->local_fd >= 0)
		close(m->local_fd);
	close(m->notify_wr);
	/* The spool's lock says a master runs: children do not keep it. */
	if (m->spool_lock_fd >= 0)
		close(m->spool_lock_fd);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static void spawn_runner(struct master *m)
{
	struct gen *g = m->cur;
	const struct conf *c = g->conf;
	if (m->runner_pid > 0 || m->md_pid > 0 || m->stopping)
		return;
	uid_t muid = g->uid;
	gid_t mgid = g->gid;
	if (g->drop && c->mail_user && *c->mail_user) {
		struct passwd *pw = getpwnam(c->mail_user);
		if (!pw || pw->pw_uid == 0) {
			log_event(LOG_LVL_ERR, "runner_failed",
				  "error=\"mail_user '%s' does not exist or is root\"", c->mail_user);
			m->runner_respawn_at_ms = time_mono_ms() + 5000;
			return;
		}
		muid = pw->pw_uid;
		mgid = pw->pw_gid;
	}
	if (strcmp(c->local_delivery, "maildir") == 0)
		prepare_maildir_root(c, muid, mgid, g->drop);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_event(LOG_LVL_ERR, "runner_failed", "error=\"socketpair: %s\"", strerror(errno));
		m->runner_respawn_at_ms = time_mono_ms() + 1000;
		return;
	}
	pid_t master = getpid();
	pid_t md = fork();
	if (md == 0) {
		log_set_process("mdeliver");
		child_common(m);
		close(m->notify_rd);
		if (m->ctl_fd >= 0)
			close(m->ctl_fd);
		close(sv[0]);
		/* Confined to the mailbox tree: the runner names Maildirs relative
		 * to it, and the directories above it need not be open to the
		 * mailbox owner. */
		size_t rl = strcmp(c->local_delivery, "maildir") == 0
				    ? mdeliver_root_len(c->maildir_path) : 0;
		if (g->drop && rl > 0) {
			char *root = str_ndup(c->maildir_path, rl);
			if (chroot(root) < 0 || chdir("/") < 0) {
				log_event(LOG_LVL_ERR, "mdeliver_failed", "error=\"chroot %s: %s\"",
					  root, strerror(errno));
				_exit(1);
			}
			free(root);
		}
		if (g->drop && (setgroups(0, NULL) < 0 || setgid(mgid) < 0 || setuid(muid) < 0)) {
			log_event(LOG_LVL_ERR, "privileges", "error=\"mdeliver: %s\"", strerror(errno));
			_exit(1);
		}
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)
			_exit(1);
		umask(077);
		_exit(mdeliver_main(sv[1]));
	}
	close(sv[1]);
	if (md < 0) {
		close(sv[0]);
		log_event(LOG_LVL_ERR, "fork_failed", "error=\"%s\"", strerror(errno));
		m->runner_respawn_at_ms = time_mono_ms() + 1000;
		return;
	}
	m->md_pid = md;
	pid_t pid = fork();
	if (pid == 0) {
		child_common(m);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master)
			_exit(1);
		struct runner_args a = {
			.conf = c, .notify_fd = m->notify_rd, .ctl_fd = m->ctl_fd,
			.mdeliver_fd = sv[0], .drop_privileges = g->drop, .uid = g->uid, .gid = g->gid,
		};
		umask(077);
		_exit(runner_main(&a));
	}
	close(sv[0]);
	if (pid < 0) {
		log_event(LOG_LVL_ERR, "fork_failed", "error=\"%s\"", strerror(errno));
		kill(md, SIGTERM);
		m->runner_respawn_at_ms = time_mono_ms() + 1000;
		return;
	}
	m->runner_pid = pid;
	m->runner_stop_asked = false;
	m->runner_started_ms = time_mono_ms();
	log_event(LOG_LVL_INFO, "runner_started", "pid=%ld mdeliver=%ld", (long)pid, (long)md);
}

/* The sendmail socket: world-connectable, in a directory of its own. */
static int local_socket(const struct conf *c, const struct gen *g, struct err *e)
{
	const char *path = c->sendmail_socket;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(e, "sendmail_socket %s: path too long", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	char *dir = str_dup(path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (fs_mkdir_p(dir, 0755, e) < 0) {
			free(dir);
			return -1;
		}
	}
	free(dir);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return err_set(e, "sendmail_socket %s exists and is not a socket", path);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set(e, "socket: %s", strerror(errno));
	mode_t old = umask(0);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || chmod(path, 0666) < 0 || listen(fd, 128) < 0) {
		err_set(e, "sendmail_socket %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	(void)g;
	return fd;
}

static size_t count_current(struct master *m)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_children; i++)
		if (!m->children[i].retiring)
			n++;
	return n;
}

static void fill_workers(struct master *m)
{
	while (!m->stopping && count_current(m) < m->want_workers) {
		if (spawn(m, m->cur) < 0)
			break;
	}
}

static void release_gen_if_unused(struct master *m, struct gen *g)
{
	if (g == m->cur)
		return;
	for (size_t i = 0; i < m->n_children; i++)
		if (m->children[i].gen == g)
			return;
	for (size_t i = 0; i < m->n_old; i++) {
		if (m->old[i] == g) {
			m->old[i] = m->old[--m->n_old];
			gen_free(g);
			return;
		}
	}
}

static void reap(struct master *m)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid <= 0)
			return;
		if (pid == m->runner_pid || pid == m->md_pid) {
			bool runner = pid == m->runner_pid;
			if (runner)
				m->runner_pid = 0;
			else
				m->md_pid = 0;
			/* The end a reload asked for is no failure. */
			bool clean = (WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
				     (m->runner_stop_asked && WIFSIGNALED(st) &&
				      WTERMSIG(st) == SIGTERM);
			log_event(m->stopping || clean ? LOG_LVL_INFO : LOG_LVL_ERR,
				  runner ? "runner_exit" : "mdeliver_exit", "pid=%ld status=%d",
				  (long)pid, WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
			/* A pair: when one fails the other goes too, and both come
			 * back.  (A runner that stops normally closes the socket,
			 * and mdeliver ends by itself.) */
			bool failed = WIFSIGNALED(st) || WEXITSTATUS(st) != 0;
			if (runner && failed && m->md_pid > 0)
				kill(m->md_pid, SIGTERM);
			if (!runner && m->runner_pid > 0)
				kill(m->runner_pid, SIGTERM);
			if (time_mono_ms() - m->runner_started_ms < 1000)
				m->runner_respawn_at_ms = time_mono_ms() + 1000;
			continue;
		}
		if (pid == m->authd_pid) {
			m->authd_pid = 0;
			bool clean = (WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
				     (m->authd_stop_asked && WIFSIGNALED(st) &&
				      WTERMSIG(st) == SIGTERM);
			log_event(m->stopping || clean ? LOG_LVL_INFO : LOG_LVL_ERR, "authd_exit",
				  "pid=%ld status=%d", (long)pid,
				  WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
			if (time_mono_ms() - m->authd_started_ms < 1000)
				m->authd_respawn_at_ms = time_mono_ms() + 1000;
			continue;
		}
		for (size_t i = 0; i < m->n_children; i++) {
			if (m->children[i].pid != pid)
				continue;
			struct child ch = m->children[i];
			m->children[i] = m->children[--m->n_children];
			/* Sessions of a dead worker are gone: free its share of
			 * smtp_accept_max. */
			m->slots[ch.slot] = 0;
			net_hosts_clear_slot(m->hosts, ch.slot);
			if (WIFSIGNALED(st))
				log_event(ch.retiring || m->stopping ? LOG_LVL_INFO : LOG_LVL_ERR,
					  "worker_exit", "worker=%ld signal=%d", (long)pid,
					  WTERMSIG(st));
			else
				log_event(WEXITSTATUS(st) && !m->stopping ? LOG_LVL_ERR : LOG_LVL_INFO,
					  "worker_exit", "worker=%ld status=%d", (long)pid,
					  WEXITSTATUS(st));
			if (!ch.retiring && !m->stopping &&
			    time_mono_ms() - ch.started_ms < 1000) {
				/* Dying at once: do not spin, retry in a second. */
				m->respawn_at_ms = time_mono_ms() + 1000;
			}
			release_gen_if_unused(m, ch.gen);
			break;
		}
	}
}

static void log_warnings(const struct conf *c)
{
	for (size_t i = 0; i < c->n_warnings; i++) {
		struct buf *l = log_begin(LOG_LVL_WARN, "config_warning");
		log_kv_esc(l, "msg", c->warnings[i], strlen(c->warnings[i]));
		log_end(l);
	}
}

/* Opens log_file again, under its name: after logrotate renamed it, the
 * processes started from now on write to the new file. */
static void log_reopen(const struct conf *c)
{
	if (!c->log_file || !*c->log_file || strcmp(c->log_file, "syslog") == 0)
		return;
	struct err e = { "" };
	if (log_to_file(c->log_file, &e) < 0) {
		struct buf *l = log_begin(LOG_LVL_ERR, "log_reopen_failed");
		log_kv_esc(l, "error", e.msg, strlen(e.msg));
		log_end(l);
	}
}

static void reload_failed(const char *why)
{
	static const char keep[] = "keeping the running configuration";
	struct buf *l = log_begin(LOG_LVL_ERR, "reload_failed");
	log_kv_esc(l, "error", why, strlen(why));
	log_kv_esc(l, "action", keep, sizeof(keep) - 1);
	log_end(l);
}

static void reload(struct master *m)
{
	struct err e = { "" };
	struct conf *nc = NULL;
	log_reopen(m->cur->conf);
	if (conf_load(m->o->conf_path, m->o->ports_override, m->o->tls_on_connect_all, &nc, &e) <
	    0) {
		reload_failed(e.msg);
		return;
	}
	if (strcmp(nc->spool_directory, m->cur->conf->spool_directory) != 0) {
		/* Every process of the new generation uses the spool this master
		 * recovered, holds locked and hands out; a new one would be
		 * neither. */
		log_event(LOG_LVL_WARN, "reload_note",
			  "msg=\"spool_directory change takes effect at the next restart\"");
		free(nc->spool_directory);
		nc->spool_directory = str_dup(m->cur->conf->spool_directory);
	}
	struct gen *g = gen_build(m, nc, &e);
	if (!g) {
		conf_free(nc);
		/* gen_build may have cleared the used marks: restore them. */
		for (size_t i = 0; i < m->n_socks; i++)
			for (size_t k = 0; k < m->cur->n_wl; k++)
				if (m->cur->wl[k].fd == m->socks[i].fd)
					m->socks[i].used = true;
		reload_failed(e.msg);
		return;
	}
	log_warnings(nc);
	/* Retire the old workers (SIGUSR1): they stop accepting at once, and
	 * their sessions go on until the clients end them; the new generation
	 * serves new connections. */
	for (size_t i = 0; i < m->n_children; i++) {
		if (!m->children[i].retiring) {
			m->children[i].retiring = true;
			/* The worker stops what is left after shutdown_timeout and
			 * closes it after one more; a worker that does not exit by
			 * then must not hold its slot, its sockets and its
			 * generation forever. */
			m->children[i].kill_at_ms = time_mono_ms() +
				(int64_t)m->children[i].gen->conf->shutdown_timeout * 2000 + 5000;
			kill(m->children[i].pid, SIGUSR1);
		}
	}
	m->old = xrealloc(m->old, (m->n_old + 1) * sizeof(*m->old));
	m->old[m->n_old++] = m->cur;
	struct gen *prev = m->cur;
	m->cur = g;
	if (!prev->conf->log_file || !nc->log_file || strcmp(prev->conf->log_file, nc->log_file) != 0)
		log_reopen(nc);
	m->want_workers = nc->smtp_workers ? nc->smtp_workers : ncores();
	/* The auth process reads the new configuration (backend, files) by
	 * being replaced; workers reconnect to the same socket. */
	if (m->authd_pid > 0) {
		kill(m->authd_pid, SIGTERM);
		m->authd_pid = 0;
		m->authd_stop_asked = true;
	}
	spawn_authd(m);
	/* The runner takes the new configuration by being replaced; the
	 * attempts it has running finish first (shutdown_timeout). */
	if (m->runner_pid > 0) {
		kill(m->runner_pid, SIGTERM);
		m->runner_stop_asked = true;
	}
	fill_workers(m);
	socks_prune(m);
	release_gen_if_unused(m, prev);
	log_event(LOG_LVL_INFO, "reload", "config=%s workers=%zu", nc->path, m->want_workers);
	log_event(LOG_LVL_INFO, "workers_started", "count=%zu", count_current(m));
}

static int prepare_spool(struct master *m, const struct conf *c, const struct gen *g,
			 struct err *e)
{
	if (fs_mkdir_p(c->spool_directory, 0700, e) < 0)
		return -1;
	/* Before anything is recovered: recovery empties tmp/, which holds
	 * the messages another daemon on this spool is receiving. */
	m->spool_lock_fd = open(c->spool_directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m->spool_lock_fd < 0)
		return err_set(e, "%s: %s", c->spool_directory, strerror(errno));
	if (flock(m->spool_lock_fd, LOCK_EX | LOCK_NB) < 0)
		return err_set(e, "%s is in use by another sluice daemon (%s)",
			       c->spool_directory,
			       errno == EWOULDBLOCK ? "locked" : strerror(errno));
	if (spool_open(c->spool_directory, &m->spool, e) < 0)
		return -1;
	if (g->drop) {
		static const char *const subs[] = { "", "/tmp", "/queue", "/corrupt", "/state" };
		for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
			struct buf p;
			buf_init(&p, 8192);
			buf_printf(&p, "%s%s", c->spool_directory, subs[i]);
			if (chown(buf_cstr(&p), g->uid, g->gid) < 0) {
				err_set(e, "chown %s: %s", buf_cstr(&p), strerror(errno));
				buf_free(&p);
				return -1;
			}
			buf_free(&p);
		}
	}
	size_t counts[3] = { 0, 0, 0 };
	if (spool_recover(m->spool, counts, e) < 0)
		return -1;
	log_event(LOG_LVL_INFO, "spool", "dir=%s queued=%zu removed_tmp=%zu set_aside=%zu",
		  c->spool_directory, counts[2], counts[0], counts[1]);
	return 0;
}

static int daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	if (chdir("/") < 0)
		return -1;
	return 0;
}

/* A start that fails after the first generation was built: what it holds
 * (configuration, certificates, sockets, the spool and its lock) is given
 * back before the exit. */
static int start_failed(struct master *m)
{
	for (size_t i = 0; i < m->n_socks; i++) {
		if (m->socks[i].fd >= 0)
			close(m->socks[i].fd);
		free(m->socks[i].addr);
	}
	free(m->socks);
	m->socks = NULL;
	m->n_socks = 0;
	if (m->spool)
		spool_close(m->spool);
	m->spool = NULL;
	if (m->spool_lock_fd >= 0)
		close(m->spool_lock_fd);
	m->spool_lock_fd = -1;
	gen_free(m->cur);
	m->cur = NULL;
	return 1;
}

int master_run(const struct daemon_opts *o, struct conf *c)
{
	struct master m;
	struct err e = { "" };
	memset(&m, 0, sizeof(m));
	m.o = o;
	m.authd_fd = -1;
	m.ctl_fd = -1;
	m.local_fd = -1;
	m.spool_lock_fd = -1;
	log_set_process("master");
	tls_global_init();

	if (c->log_file && strcmp(c->log_file, "syslog") == 0) {
		log_to_syslog("sluice");
	} else if (c->log_file && *c->log_file) {
		if (log_to_file(c->log_file, &e) < 0) {
			fprintf(stderr, "sluice: %s\n", e.msg);
			conf_free(c);
			return 1;
		}
	} else if (!o->foreground) {
		log_to_syslog("sluice");
	}

	m.cur = gen_build(&m, c, &e);
	if (!m.cur) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		log_event(LOG_LVL_ERR, "start_failed", "error=\"%s\"", e.msg);
		/* Not owned by a generation yet: freed here. */
		conf_free(c);
		return 1;
	}
	if (prepare_spool(&m, c, m.cur, &e) < 0) {
		fprintf(stderr, "sluice: spool: %s\n", e.msg);
		log_event(LOG_LVL_ERR, "start_failed", "error=\"spool: %s\"", e.msg);
		return start_failed(&m);
	}
	{
		int nv[2];
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, nv) < 0) {
			fprintf(stderr, "sluice: socketpair: %s\n", strerror(errno));
			return start_failed(&m);
		}
		m.notify_rd = nv[0];
		m.notify_wr = nv[1];
		/* Workers never wait for the runner. */
		fcntl(nv[1], F_SETFL, fcntl(nv[1], F_GETFL) | O_NONBLOCK);
		fcntl(nv[0], F_SETFL, fcntl(nv[0], F_GETFL) | O_NONBLOCK);
		int big = 1 << 20;
		setsockopt(nv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	m.ctl_fd = runner_ctl_listen(c, &e);
	if (m.ctl_fd < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		log_event(LOG_LVL_ERR, "start_failed", "error=\"%s\"", e.msg);
		close(m.notify_rd);
		close(m.notify_wr);
		return start_failed(&m);
	}
	m.local_fd = local_socket(c, m.cur, &e);
	if (m.local_fd < 0) {
		log_event(LOG_LVL_WARN, "sendmail_socket", "error=\"%s\" msg=\"sendmail cannot "
			  "hand mail to the daemon\"", e.msg);
		e.msg[0] = 0;
	}
	if (auth_configured(c)) {
		m.fake_key_ok = authd_fake_key_load(c->spool_directory, m.fake_key, &e) == 0;
		if (!m.fake_key_ok) {
			log_event(LOG_LVL_WARN, "auth_fake_key", "error=\"%s\" msg=\"unknown users' "
				  "SCRAM salts change at each start\"", e.msg);
			e.msg[0] = 0;
		}
	}
	m.slots = ipc_slots_new(IPC_MAX_SLOTS);
	m.hosts = net_hosts_new();
	if (!m.slots || !m.hosts) {
		fprintf(stderr, "sluice: cannot map shared memory\n");
		return 1;
	}
	if (!o->foreground && daemonize() < 0) {
		fprintf(stderr, "sluice: cannot detach: %s\n", strerror(errno));
		return 1;
	}
	if (c->pid_file && *c->pid_file) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		if (fs_write_atomic(c->pid_file, pid, (size_t)n, 0644, &e) < 0)
			log_event(LOG_LVL_WARN, "pid_file", "error=\"%s\"", e.msg);
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	/* Not for the master, but for its workers to inherit blocked: the
	 * retire signal of a reload may come before their handler is set. */
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	signal(SIGPIPE, SIG_IGN);

	log_event(LOG_LVL_INFO, "start", "version=%s config=%s uid_split=%s", SLUICE_VERSION,
		  c->path, m.cur->drop ? "yes" : "no");
	if (!m.cur->drop)
		log_event(LOG_LVL_WARN, "unprivileged",
			  "msg=\"not started as root: running without privilege separation\"");
	log_warnings(c);
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct conf_listener *l = &c->listeners[i];
		log_event(LOG_LVL_INFO, "listen", "port=%u role=%s tls=%s", l->port,
			  l->role == CONF_ROLE_MX ? "mx" : "submission",
			  l->tls == CONF_TLS_ON_CONNECT ? "on_connect"
			  : l->tls == CONF_TLS_STARTTLS ? (m.cur->tls[i] ? "starttls" : "unavailable")
							: "none");
	}
	m.want_workers = c->smtp_workers ? c->smtp_workers : ncores();
	spawn_authd(&m);
	spawn_runner(&m);
	fill_workers(&m);
	log_event(LOG_LVL_INFO, "workers_started", "count=%zu", count_current(&m));

	int64_t stop_deadline = 0;
	for (;;) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts);
		if (sig == SIGCHLD || sig < 0)
			reap(&m);
		if (sig == SIGHUP && !m.stopping)
			reload(&m);
		if ((sig == SIGTERM || sig == SIGINT) && !m.stopping) {
			m.stopping = true;
			log_event(LOG_LVL_INFO, "stopping", "workers=%zu", m.n_children);
			/* The workers close theirs at once: with this copy closed too
			 * new connections are refused rather than left unanswered
			 * while sessions finish. */
			for (size_t i = 0; i < m.n_socks; i++) {
				if (m.socks[i].fd >= 0)
					close(m.socks[i].fd);
				m.socks[i].fd = -1;
			}
			for (size_t i = 0; i < m.n_children; i++)
				kill(m.children[i].pid, SIGTERM);
			if (m.authd_pid > 0)
				kill(m.authd_pid, SIGTERM);
			if (m.runner_pid > 0)
				kill(m.runner_pid, SIGTERM);
			stop_deadline = time_mono_ms() + (int64_t)m.cur->conf->shutdown_timeout * 1000 +
					5000;
		}
		if (m.stopping) {
			reap(&m);
			/* mdeliver ends when the runner closes its socket. */
			if (m.n_children == 0 && m.authd_pid <= 0 && m.runner_pid <= 0 &&
			    m.md_pid <= 0)
				break;
			if (time_mono_ms() > stop_deadline) {
				for (size_t i = 0; i < m.n_children; i++)
					kill(m.children[i].pid, SIGKILL);
				if (m.authd_pid > 0)
					kill(m.authd_pid, SIGKILL);
				if (m.runner_pid > 0)
					kill(m.runner_pid, SIGKILL);
				if (m.md_pid > 0)
					kill(m.md_pid, SIGKILL);
			}
			continue;
		}
		for (size_t i = 0; i < m.n_children; i++) {
			struct child *ch = &m.children[i];
			if (ch->retiring && ch->kill_at_ms && time_mono_ms() > ch->kill_at_ms) {
				log_event(LOG_LVL_WARN, "worker_kill", "worker=%ld reason=retire_timeout",
					  (long)ch->pid);
				kill(ch->pid, SIGKILL);
				ch->kill_at_ms = 0;
			}
		}
		if (m.authd_pid <= 0 && time_mono_ms() >= m.authd_respawn_at_ms)
			spawn_authd(&m);
		if (m.runner_pid <= 0 && m.md_pid <= 0 && time_mono_ms() >= m.runner_respawn_at_ms)
			spawn_runner(&m);
		if (time_mono_ms() >= m.respawn_at_ms) {
			size_t before = count_current(&m);
			fill_workers(&m);
			if (count_current(&m) > before)
				log_event(LOG_LVL_INFO, "workers_started", "count=%zu",
					  count_current(&m));
		}
	}
	if (m.cur->conf->pid_file && *m.cur->conf->pid_file)
		unlink(m.cur->conf->pid_file);
	log_event(LOG_LVL_INFO, "stop", "status=0");
	for (size_t i = 0; i < m.n_socks; i++) {
		if (m.socks[i].fd >= 0)
			close(m.socks[i].fd);
		free(m.socks[i].addr);
	}
	free(m.socks);
	if (m.authd_fd >= 0)
		close(m.authd_fd);
	if (m.local_fd >= 0) {
		close(m.local_fd);
		unlink(m.cur->conf->sendmail_socket);
	}
	if (m.ctl_fd >= 0)
		close(m.ctl_fd);
	close(m.notify_rd);
	close(m.notify_wr);
	for (size_t i = 0; i < m.n_old; i++)
		gen_free(m.old[i]);
	free(m.old);
	free(m.children);
	spool_close(m.spool);
	ipc_slots_free(m.slots, IPC_MAX_SLOTS);
	net_hosts_free(m.hosts);
	gen_free(m.cur);
	return 0;
}
