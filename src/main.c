/* Command line: Exim/sendmail-compatible flags mapped to the modes. */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <event2/event.h>
#include <stdio.h>
#include <termios.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "conf/conf.h"
#include "daemon/daemon.h"
#include "net/net.h"
#include "queue/queue.h"
#include "util/util.h"

#define EX_USAGE 64
#define EX_CONFIG 78

enum mode { M_NONE, M_DAEMON, M_VERSION, M_PRINT, M_LIST, M_COUNT, M_VIEW, M_STDIO, M_REFERENCE,
	    M_DNS, M_PWHASH, M_USERADD, M_TEST, M_ADDRESS, M_CTL };

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice [-C file] mode [options]\n"
		"modes:\n"
		"  -bd               run the daemon (detaches, writes pid_file)\n"
		"  -bdf              run the daemon in the foreground\n"
		"  -bV               check the configuration, print version and libraries\n"
		"  -bP [name]        print effective option values\n"
		"  -bp               list the queue (as mailq)\n"
		"  -bpc              print the number of queued messages\n"
		"  -Mvc id           print a queued message\n"
		"  -q                deliver every queued message now (the daemon's runner)\n"
		"  -M id             deliver one message now and print the outcome\n"
		"  -Mrm id           remove a message from the queue\n"
		"  -Mg id            give up on a message: bounce it to its sender now\n"
		"  [-t] [-i] [-f addr] [-F name] [rcpt...]  read a message on stdin and\n"
		"                    queue it (as sendmail; also when called as sendmail)\n"
		"  -bs               one SMTP session on stdin/stdout\n"
		"  -bh ip [-oMi port]  test session from ip on a listener: prints every policy\n"
		"                    decision, simulates TLS, queues nothing\n"
		"  -bt address       print how an address resolves (local user, aliases, remote)\n"
		"  -bdns domain      print the DNS records the domain needs (MX, SRV, SPF, ...)\n"
		"  -bpw [scheme]     read a password on stdin, print its {SCHEME}hash\n"
		"  -buseradd name [scheme]  read a password on stdin, add or replace the user\n"
		"                    in the configured store (passwd-file or sqlite)\n"
		"options:\n"
		"  -C file           configuration file (default " CONF_DEFAULT_PATH ")\n"
		"  -oX ports         listen on these ports instead of daemon_smtp_ports\n"
		"  -tls-on-connect   start TLS at connect on every port\n");
}

static bool ip_ok(const char *s)
{
	unsigned char b[16];
	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* One line from stdin, without echo on a terminal; at most 1024 bytes. */
static int read_password(struct buf *out)
{
	struct termios old, quiet;
	bool tty = isatty(0) && tcgetattr(0, &old) == 0;
	if (tty) {
		fprintf(stderr, "Password: ");
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
	}
	int rc = 0;
	for (;;) {
		char ch;
		ssize_t r = read(0, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || ch == '\n')
			break;
		if (buf_append(out, &ch, 1) < 0) {
			rc = -1;
			break;
		}
	}
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	if (buf_len(out) > 0 && buf_ptr(out)[buf_len(out) - 1] == '\r')
		out->len--;
	if (rc == 0 && buf_len(out) == 0) {
		fprintf(stderr, "sluice: empty password\n");
		return -1;
	}
	if (rc < 0)
		fprintf(stderr, "sluice: password longer than 1024 bytes\n");
	return rc;
}

static int hash_password(const char *scheme, struct buf *stored)
{
	struct buf pw;
	struct err e = { "" };
	buf_init(&pw, 1024);
	int rc = read_password(&pw);
	if (rc == 0 && auth_password_hash(scheme ? scheme : "YESCRYPT", (const char *)buf_ptr(&pw),
					  buf_len(&pw), stored, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		rc = -1;
	}
	/* The password does not outlive its use. */
	if (pw.data)
		explicit_bzero(pw.data, pw.cap);
	buf_free(&pw);
	return rc;
}

static int view_message(const struct conf *c, const char *id)
{
	struct err e = { "" };
	if (!queue_id_valid(id)) {
		fprintf(stderr, "sluice: %s: not a queue id\n", id);
		return 1;
	}
	struct spool *sp;
	if (spool_open(c->spool_directory, &sp, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		return 1;
	}
	int fd;
	if (spool_open_data(sp, id, &fd, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		spool_close(sp);
		return 1;
	}
	struct buf b;
	buf_init(&b, 65536);
	int rc = 0;
	for (;;) {
		buf_reset(&b);
		uint8_t *w = buf_reserve(&b, 65536);
		ssize_t r = read(fd, w, 65536);
		if (r < 0) {
			rc = 1;
			break;
		}
		if (r == 0)
			break;
		if (fs_write_all(1, w, (size_t)r) < 0) {
			rc = 1;
			break;
		}
	}
	buf_free(&b);
	close(fd);
	spool_close(sp);
	return rc;
}

static int queue_cmd(const struct conf *c, enum mode m)
{
	struct err e = { "" };
	struct spool *sp;
	if (spool_open(c->spool_directory, &sp, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		return 1;
	}
	int rc = 0;
	if (m == M_LIST) {
		rc = spool_print_list(sp, stdout, &e);
	} else {
		size_t n = 0;
		rc = spool_count(sp, &n, &e);
		if (rc == 0)
			printf("%zu\n", n);
	}
	if (rc < 0)
		fprintf(stderr, "sluice: %s\n", e.msg);
	spool_close(sp);
	return rc < 0 ? 1 : 0;
}

/* -Mrm while the daemon is stopped: nobody else writes the queue then. */
static int remove_offline(const struct conf *c, const char *id)
{
	struct spool *sp = NULL;
	struct err e = { "" };
	if (spool_open(c->spool_directory, &sp, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		return 1;
	}
	struct spool_env env;
	memset(&env, 0, sizeof(env));
	int r = 0;
	if (spool_read_env(sp, id, &env, &e) < 0) {
		fprintf(stderr, "sluice: %s: no such message (%s)\n", id, e.msg);
		r = 1;
	} else if (spool_remove(sp, id, true, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		r = 1;
	} else {
		fprintf(stderr, "sluice: %s removed from the queue (daemon not running)\n", id);
	}
	spool_env_free(&env);
	spool_close(sp);
	return r;
}

int main(int argc, char **argv)
{
	struct daemon_opts o = { .conf_path = CONF_DEFAULT_PATH };
	enum mode mode = M_NONE;
	const char *arg = NULL;
	const char *arg2 = NULL;
	int test_port = 0;
	const char *ctl = NULL;

	/* Called as sendmail or mailq (a symbolic link): behave as those. */
	const char *prog = argv[0] ? strrchr(argv[0], '/') : NULL;
	prog = prog ? prog + 1 : argv[0] ? argv[0] : "sluice";
	if (strcmp(prog, "sendmail") == 0) {
		/* "sendmail -bp", "-q", "-bs"... are sluice's own modes. */
		bool own = false;
		for (int i = 1; i < argc; i++)
			if (strncmp(argv[i], "-bp", 3) == 0 || strcmp(argv[i], "-bs") == 0 ||
			    strncmp(argv[i], "-q", 2) == 0 || strncmp(argv[i], "-M", 2) == 0 ||
			    strcmp(argv[i], "-bV") == 0 || strcmp(argv[i], "-bd") == 0)
				own = true;
		if (!own)
			return sendmail_main(argc, argv);
	}
	if (strcmp(prog, "mailq") == 0)
		mode = M_LIST;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-C") == 0 && i + 1 < argc) {
			o.conf_path = argv[++i];
		} else if (strcmp(a, "-bd") == 0) {
			mode = M_DAEMON;
		} else if (strcmp(a, "-bdf") == 0) {
			mode = M_DAEMON;
			o.foreground = true;
		} else if (strcmp(a, "-oX") == 0 && i + 1 < argc) {
			o.ports_override = argv[++i];
		} else if (strcmp(a, "-tls-on-connect") == 0) {
			o.tls_on_connect_all = true;
		} else if (strcmp(a, "-bV") == 0) {
			mode = M_VERSION;
		} else if (strcmp(a, "-bP") == 0) {
			mode = M_PRINT;
			if (i + 1 < argc && argv[i + 1][0] != '-')
				arg = argv[++i];
		} else if (strcmp(a, "-bp") == 0) {
			mode = M_LIST;
		} else if (strcmp(a, "-bpc") == 0) {
			mode = M_COUNT;
		} else if (strcmp(a, "-Mvc") == 0 && i + 1 < argc) {
			mode = M_VIEW;
			arg = argv[++i];
		} else if (strcmp(a, "-q") == 0 || (strncmp(a, "-q", 2) == 0 && mode == M_DAEMON)) {
			/* "-bd -q30m" from old start scripts: the runner is always on,
			 * woken by new mail and its own retry times, so the interval is
			 * not needed. */
			if (mode != M_DAEMON) {
				mode = M_CTL;
				ctl = "q";
			}
		} else if ((strcmp(a, "-M") == 0 || strcmp(a, "-Mrm") == 0 ||
			    strcmp(a, "-Mg") == 0) && i + 1 < argc) {
			mode = M_CTL;
			ctl = a + 1;
			arg = argv[++i];
		} else if (strcmp(a, "-bm") == 0 || strcmp(a, "-t") == 0 || strcmp(a, "-i") == 0 ||
			   strcmp(a, "-oi") == 0 || strncmp(a, "-f", 2) == 0 ||
			   strncmp(a, "-F", 2) == 0 || a[0] != '-') {
			/* sendmail's interface: it parses the whole command line. */
			return sendmail_main(argc, argv);
		} else if (strcmp(a, "-bh") == 0 && i + 1 < argc) {
			mode = M_TEST;
			arg = argv[++i];
			if (!ip_ok(arg)) {
				fprintf(stderr, "sluice: -bh %s: not an IPv4 or IPv6 address\n", arg);
				return EX_USAGE;
			}
		} else if (strcmp(a, "-oMi") == 0 && i + 1 < argc) {
			/* Exim writes the interface as "address.port"; a bare port
			 * is accepted too. */
			const char *v = argv[++i];
			const char *dot = strrchr(v, '.');
			test_port = conf_parse_port(dot ? dot + 1 : v);
			if (test_port <= 0) {
				fprintf(stderr, "sluice: -oMi %s: no port\n", v);
				return EX_USAGE;
			}
		} else if (strcmp(a, "-bt") == 0 && i + 1 < argc) {
			mode = M_ADDRESS;
			arg = argv[++i];
		} else if (strcmp(a, "-bs") == 0) {
			mode = M_STDIO;
		} else if (strcmp(a, "-bdns") == 0 && i + 1 < argc) {
			mode = M_DNS;
			arg = argv[++i];
		} else if (strcmp(a, "-bpw") == 0) {
			mode = M_PWHASH;
			if (i + 1 < argc && argv[i + 1][0] != '-')
				arg = argv[++i];
		} else if (strcmp(a, "-buseradd") == 0 && i + 1 < argc) {
			mode = M_USERADD;
			arg = argv[++i];
			if (i + 1 < argc && argv[i + 1][0] != '-')
				arg2 = argv[++i];
		} else if (strcmp(a, "--config-reference") == 0) {
			mode = M_REFERENCE;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "sluice: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (mode == M_NONE) {
		fprintf(stderr, "sluice: no mode given\n");
		usage(stderr);
		return EX_USAGE;
	}
	if (mode == M_REFERENCE) {
		conf_print_reference(stdout);
		return 0;
	}
	if (mode == M_PWHASH) {
		struct buf stored;
		buf_init(&stored, 4096);
		int r = hash_password(arg, &stored);
		if (r == 0)
			printf("%s\n", buf_cstr(&stored));
		buf_free(&stored);
		return r < 0 ? 1 : 0;
	}

	/* Absolute, so that a reload finds the file after the daemon chdir'd. */
	static char *abs_path; /* static: lives as long as the process */
	abs_path = realpath(o.conf_path, NULL);
	if (abs_path)
		o.conf_path = abs_path;

	struct err e = { "" };
	struct conf *c = NULL;
	if (conf_load(o.conf_path, o.ports_override, o.tls_on_connect_all, &c, &e) < 0) {
		fprintf(stderr, "sluice: %s\n", e.msg);
		return mode == M_VERSION ? 1 : EX_CONFIG;
	}
	switch (mode) {
	case M_VERSION:
		for (size_t i = 0; i < c->n_warnings; i++)
			fprintf(stderr, "sluice: warning: %s\n", c->warnings[i]);
		/* What a start refuses, -bV refuses: the accounts and the files
		 * the unprivileged processes read, then the certificate and key
		 * (start and reload refuse what fails here). */
		{
			uid_t vu;
			gid_t vg;
			bool vd;
			if (master_conf_check(c, &vu, &vg, &vd, &e) < 0) {
				fprintf(stderr, "sluice: %s\n", e.msg);
				conf_free(c);
				return 1;
			}
		}
		tls_global_init();
		for (size_t i = 0; i < c->n_listeners; i++) {
			const struct conf_listener *l = &c->listeners[i];
			struct tls_ctx *t = NULL;
			if (!c->tls_certificate || l->tls == CONF_TLS_NONE)
				continue;
			if (tls_ctx_new(c, l, &t, &e) < 0) {
				fprintf(stderr, "sluice: %s: %s\n", c->path, e.msg);
				conf_free(c);
				return 1;
			}
			tls_ctx_free(t);
		}
		printf("sluice version %s\n", SLUICE_VERSION);
		printf("Configuration file %s is valid\n", c->path);
		printf("Libraries: %s; libevent %s\n", tls_library_version(), event_get_version());
		conf_free(c);
		return 0;
	case M_PRINT: {
		int r = conf_print(stdout, c, arg);
		if (r < 0)
			fprintf(stderr, "sluice: no option named '%s'\n", arg);
		conf_free(c);
		return r < 0 ? 1 : 0;
	}
	case M_LIST:
	case M_COUNT: {
		int r = queue_cmd(c, mode);
		conf_free(c);
		return r;
	}
	case M_VIEW: {
		int r = view_message(c, arg);
		conf_free(c);
		return r;
	}
	case M_STDIO:
	case M_TEST: {
		struct local_opts lo = { .ip = mode == M_TEST ? arg : "127.0.0.1",
					 .port = (uint16_t)test_port, .test = mode == M_TEST };
		if (mode == M_TEST && lo.port == 0)
			lo.port = c->n_ports ? c->ports[0] : 25;
		char peer_ip[INET6_ADDRSTRLEN], uid_text[32];
		if (mode == M_STDIO) {
			/* A TCP peer on stdin (inetd) is a network client in the mx
			 * role; anything else is a local program, known by the uid
			 * that started us (before the switch to the spool owner). */
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &sl) == 0 &&
			    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
				const void *a = ss.ss_family == AF_INET
					? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
					: (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
				if (inet_ntop(ss.ss_family, a, peer_ip, sizeof(peer_ip)))
					lo.ip = peer_ip;
			} else {
				snprintf(uid_text, sizeof(uid_text), "uid:%u", (unsigned)getuid());
				lo.local_user = uid_text;
			}
			/* Its log lines go where the daemon's go, when that is a
			 * file or syslog (opened while still root); not onto the
			 * caller's standard error. */
			if (c->log_file && strcmp(c->log_file, "syslog") == 0)
				log_to_syslog("sluice");
			else if (!c->log_file || !*c->log_file || log_to_file(c->log_file, &e) < 0)
				log_set_level(LOG_LVL_ERR);
			e.msg[0] = 0;
			log_set_process("bs");
		}
		/* As root, become the spool's owner first (once the daemon made it
		 * the workers'): the files written are the queue runner's to
		 * read, as the workers' are. */
		struct stat sst;
		if (geteuid() == 0 && stat(c->spool_directory, &sst) == 0) {
			struct passwd *pw = getpwnam(c->user);
			if (pw && pw->pw_uid != 0 && sst.st_uid == pw->pw_uid &&
			    (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
			     setuid(pw->pw_uid) < 0)) {
				fprintf(stderr, "sluice: cannot switch to user %s: %s\n", c->user,
					strerror(errno));
				conf_free(c);
				return 1;
			}
		}
		int r = local_session(c, &lo);
		conf_free(c);
		return r;
	}
	case M_ADDRESS: {
		int r = address_test(c, arg);
		conf_free(c);
		return r;
	}
	case M_DNS: {
		int r = dns_records_print(stdout, c, arg);
		conf_free(c);
		return r;
	}
	case M_USERADD: {
		struct buf stored;
		buf_init(&stored, 4096);
		int r = hash_password(arg2, &stored);
		if (r == 0 && auth_admin_set_user(c, arg, buf_cstr(&stored), &e) < 0) {
			fprintf(stderr, "sluice: %s\n", e.msg);
			r = -1;
		}
		if (r == 0)
			printf("user %s set in %s\n", arg,
			       strcmp(c->auth_backend, "sqlite") == 0 ? c->auth_sqlite_database
								       : c->auth_passwd_file);
		buf_free(&stored);
		conf_free(c);
		return r < 0 ? 1 : 0;
	}
	case M_CTL: {
		int r;
		if (strcmp(ctl, "q") != 0 && !queue_id_valid(arg)) {
			fprintf(stderr, "sluice: %s: not a queue id\n", arg);
			r = EX_USAGE;
		} else {
			r = runner_ctl_command(c, ctl, strcmp(ctl, "q") == 0 ? NULL : arg);
			if (r == 69 && strcmp(ctl, "Mrm") == 0)
				r = remove_offline(c, arg);
		}
		conf_free(c);
		return r;
	}
	case M_DAEMON:
		/* master_run owns c from here. */
		return master_run(&o, c);
	default:
		return EX_USAGE;
	}
}
