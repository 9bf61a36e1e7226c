/*
 * daemon — process entry points: the master (root: config, sockets,
 * certificates, children, signals), the SMTP workers (unprivileged event
 * loops) and the one-session stdin/stdout mode (-bs).
 */
#ifndef SLUICE_DAEMON_H
#define SLUICE_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "../conf/conf.h"
#include "../net/net.h"
#include "../queue/queue.h"

/* How the daemon was asked to start (command line). */
struct daemon_opts {
	const char *conf_path;
	const char *ports_override;   /* -oX */
	bool tls_on_connect_all;      /* -tls-on-connect */
	bool foreground;              /* -bdf */
};

/* Runs the master until SIGTERM; returns the process exit status. */
int master_run(const struct daemon_opts *o, struct conf *c);
/* What a start (and -bV) refuses beyond the syntax: user and mail_user
 * (as root), and the files the unprivileged processes must read.  Fills
 * the uid/gid to run as and whether to drop privileges. */
int master_conf_check(const struct conf *c, uid_t *uid, gid_t *gid, bool *drop, struct err *e);

/* One listening socket as handed to a worker. */
struct worker_listener {
	int fd;
	const struct conf_listener *conf;
	struct tls_ctx *tls;
};

struct worker_args {
	const struct conf *conf;
	struct worker_listener *listeners;
	size_t n_listeners;
	struct spool *spool;
	uint32_t *slots;
	size_t n_slots;
	size_t my_slot;
	struct net_hosts *hosts;     /* sessions per client address, shared */
	bool drop_privileges;
	uid_t uid;
	gid_t gid;
	const char *authd_tag;        /* auth process socket name; NULL = no auth */
	int notify_fd;                /* to the queue runner; -1 = none */
	int local_fd;                 /* the sendmail socket; -1 = none */
};

/* Runs in the forked child; returns its exit status. */
int worker_main(const struct worker_args *a);

/* Fills a protocol policy from the configuration of one listener. */
void worker_policy(const struct conf *c, const struct conf_listener *l, bool tls_available,
		   struct smtp_policy *p);

/* The policy of the sendmail socket: local users, already identified by
 * the kernel, relay anywhere; no TLS, no AUTH. */
void worker_policy_local(const struct conf *c, struct smtp_policy *p);

/* -bs and -bh: one SMTP session on stdin/stdout (see local.c). */
struct local_opts {
	const char *ip;     /* client address the session pretends to come from */
	uint16_t port;      /* listener whose policy applies; 0 = mx without TLS (-bs) */
	bool test;          /* -bh: print decisions, simulate TLS, queue nothing */
	const char *local_user; /* -bs from a local program ("uid:N"): the local role;
				   NULL for a network peer on stdin (inetd) */
};
int local_session(const struct conf *c, const struct local_opts *o);
/* -bt: prints how an address resolves (local user, aliases, remote). */
int address_test(const struct conf *c, const char *address);

/* Prints the zone-file records a domain needs (-bdns); 0, or 1 if the
 * name is not a domain. */
int dns_records_print(FILE *f, const struct conf *c, const char *domain);

/* ---- queue runner and local delivery (runner.c, mdeliver.c) ---------- */

struct runner_args {
	const struct conf *conf;
	int notify_fd;      /* datagrams from the workers: ids of new messages */
	int ctl_fd;         /* listening control socket (-q, -M, -Mrm, -Mg) */
	int mdeliver_fd;    /* socketpair to the local delivery process */
	bool drop_privileges;
	uid_t uid;
	gid_t gid;
};
/* The queue runner: schedules and delivers; returns its exit status. */
int runner_main(const struct runner_args *a);

/* The control socket's abstract name for a configuration (derived from
 * the spool directory, so that one spool has one runner). */
void runner_ctl_name(const struct conf *c, struct sockaddr_un *sa, socklen_t *len);
/* Binds and listens on it (master); -1 with e if taken or failing. */
int runner_ctl_listen(const struct conf *c, struct err *e);
/* Tells a running runner that message id was queued (best effort). */
void runner_ctl_notify(const struct conf *c, const char *id);
/* -q, -M, -Mrm, -Mg from the command line: asks the running daemon;
 * prints its answer; returns an exit status. */
int runner_ctl_command(const struct conf *c, const char *cmd, const char *id);

/* Length of maildir_path's fixed directory (before the first '%'
 * component, without the trailing '/'); 0 if it is the root. */
size_t mdeliver_root_len(const char *tmpl);
/* The local delivery process (as mail_user): serves requests on sock. */
int mdeliver_main(int sock);
/* Sends one Maildir delivery request (fd passed along). */
int mdeliver_send(int sock, int fd, off_t off, off_t len, const char *path, const char *prefix,
		  size_t prefix_len, const char *host);

/* ---- ipc: memory shared between the master and its workers ----------- */

#define IPC_MAX_SLOTS 1024
_Static_assert(IPC_MAX_SLOTS == NET_HOST_SLOTS, "one set of per-address rows per worker slot");
/* Anonymous shared mapping of n counters, inherited across fork, and
 * after them the number of slots ever used (slots[n]). */
uint32_t *ipc_slots_new(size_t n);
void ipc_slots_free(uint32_t *slots, size_t n);

/* ---- sendmail: the local injection command (sendmail.c) -------------- */

/*
 * The sendmail-compatible command: reads a message on stdin and hands it
 * over SMTP to the running daemon's local socket (sendmail_socket, or the
 * environment variable SLUICE_SENDMAIL_SOCKET).  Returns a sysexits(3)
 * status.  sendmail_run is the same with the streams chosen by the caller.
 */
int sendmail_main(int argc, char **argv);
int sendmail_run(int argc, char **argv, FILE *in, FILE *errf);

/* Called with each address found; addr[0..len) is not NUL-terminated. */
typedef void sendmail_addr_fn(const char *addr, size_t len, void *arg);

/*
 * Reads a message until EOF, or until a line holding only "." when
 * dot_ends (sendmail without -i); LF or CRLF line ends in, CRLF out, a
 * missing final line end added.  -1 with e on a read error or when the
 * result would exceed max bytes (then *too_big is set).
 */
int sendmail_read_message(FILE *in, bool dot_ends, uint64_t max, struct buf *out, bool *too_big,
			  struct err *e);
/*
 * Length of the header block of a CRLF message p[0..n) (its fields with
 * their CRLFs, without the empty line); *body_off receives where the body
 * starts.  A first line that is not a header field means no header block
 * (0); a later line that is neither a field nor a continuation ends the
 * block without an empty line (*body_off == the returned length).
 */
size_t sendmail_header_end(const uint8_t *p, size_t n, size_t *body_off);
/*
 * Recipients of an address-list value v[0..n) (a header field value,
 * folded or not, or a command-line argument): addr-specs, display names,
 * comments, groups; a bare local part ("root", "Admin <root>") is
 * qualified with @domain.  Returns the count, or -1 with e.
 */
int sendmail_parse_addrs(const char *v, size_t n, const char *domain, sendmail_addr_fn *fn,
			 void *arg, struct err *e);
/*
 * Recipients of a header block (sendmail -t): those of the Resent-To,
 * Resent-Cc and Resent-Bcc fields if any is present (*resent set), else
 * of To, Cc and Bcc.  Returns the count, or -1 with e.
 */
int sendmail_header_rcpts(const char *hdr, size_t n, const char *domain, bool *resent,
			  sendmail_addr_fn *fn, void *arg, struct err *e);
/* True if the header block has a field of this name (any case). */
bool sendmail_has_field(const char *hdr, size_t n, const char *name);
/* Appends the header block without its Bcc and Resent-Bcc fields. */
int sendmail_strip_bcc(const char *hdr, size_t n, struct buf *out);
/* Appends "From: name <addr>\r\n" (name quoted or RFC 2047-encoded as
 * needed, control characters dropped; "From: addr" when name is NULL or
 * empty). */
int sendmail_from_field(struct buf *out, const char *name, const char *addr);
/*
 * The message as handed to the daemon: the From field added when missing
 * (from_name, from_addr), Bcc and Resent-Bcc removed, an empty line
 * between header and body.
 */
int sendmail_prepare(const uint8_t *msg, size_t n, const char *from_name, const char *from_addr,
		     struct buf *out);

#endif
