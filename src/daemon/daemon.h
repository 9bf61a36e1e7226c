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
#include <sys/types.h>

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
	bool drop_privileges;
	uid_t uid;
	gid_t gid;
	const char *authd_tag;        /* auth process socket name; NULL = no auth */
};

/* Runs in the forked child; returns its exit status. */
int worker_main(const struct worker_args *a);

/* Fills a protocol policy from the configuration of one listener. */
void worker_policy(const struct conf *c, const struct conf_listener *l, bool tls_available,
		   struct smtp_policy *p);

/* -bs and -bh: one SMTP session on stdin/stdout (see local.c). */
struct local_opts {
	const char *ip;     /* client address the session pretends to come from */
	uint16_t port;      /* listener whose policy applies; 0 = mx without TLS (-bs) */
	bool test;          /* -bh: print decisions, simulate TLS, queue nothing */
};
int local_session(const struct conf *c, const struct local_opts *o);
/* -bt: prints how an address resolves (local user, aliases, remote). */
int address_test(const struct conf *c, const char *address);

/* Prints the zone-file records a domain needs (-bdns); 0, or 1 if the
 * name is not a domain. */
int dns_records_print(FILE *f, const struct conf *c, const char *domain);

/* ---- ipc: memory shared between the master and its workers ----------- */

#define IPC_MAX_SLOTS 1024
/* Anonymous shared mapping of n counters, inherited across fork. */
uint32_t *ipc_slots_new(size_t n);
void ipc_slots_free(uint32_t *slots, size_t n);

#endif
