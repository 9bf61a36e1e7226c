/*
 * conf — the configuration: lexer, parser, validation, -bP printing and
 * the generated reference.  One table of options (conf/options.c: name,
 * type, default, limits, help) drives all of them.  A loaded struct conf
 * is immutable; a reload builds a new one.
 *
 * File syntax (Exim style):
 *   # comment                    (whole lines only)
 *   name = value                 value runs to end of line, trimmed
 *   name = first part \          a trailing backslash continues the line
 *          second part
 *   listener PORT {              per-port settings (see docs/configuration.md)
 *       role = mx | submission
 *       tls = starttls | on_connect | none
 *       tls_min_version = TLSv1 | TLSv1.1 | TLSv1.2 | TLSv1.3
 *       tls_ciphers = OpenSSL cipher list (TLS <= 1.2)
 *       tls_ciphersuites = OpenSSL TLS 1.3 ciphersuites
 *       auth = yes | no          AUTH offered; submission: always yes
 *       acl_connect = NAME       ACL per SMTP stage (also acl_helo, acl_mail,
 *                                acl_rcpt, acl_data)
 *   }
 *   acl NAME {                   named ACL: one rule per line (policy/policy.h)
 *       deny client = 192.0.2.0/24
 *   }
 * Lists are Exim lists (util.h list_foreach).  Sizes take K/M/G suffixes,
 * times s/m/h/d suffixes.
 */
#ifndef SLUICE_CONF_H
#define SLUICE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../util/util.h"
#include "../policy/policy.h"

#define CONF_DEFAULT_PATH "/etc/sluice/sluice.conf"

enum conf_role { CONF_ROLE_MX = 0, CONF_ROLE_SUBMISSION = 1 };
enum conf_tls_mode { CONF_TLS_STARTTLS = 0, CONF_TLS_ON_CONNECT, CONF_TLS_NONE };

/* Effective settings of one listening port (after defaults are applied). */
struct conf_listener {
	uint16_t port;
	enum conf_role role;
	enum conf_tls_mode tls;
	int tls_min_version;        /* OpenSSL constant value, e.g. 0x0303 = TLS 1.2 */
	char *tls_ciphers;          /* TLS <= 1.2 cipher list */
	char *tls_ciphersuites;     /* TLS 1.3 suites */
	bool tls_required;          /* derived: submission => true */
	bool auth_required;         /* derived: submission => true */
	bool auth;                  /* AUTH offered (inside TLS); submission default yes, mx no */
	int line;                   /* line of its listener block, 0 if default */
	/* ACL per stage (ACL_CONNECT .. ACL_DATA), owned by struct conf;
	 * NULL = none (accept).  Checked at load to fit its stage. */
	const struct acl *acl[ACL_NSTAGES];
};

struct conf {
	char *path;                  /* file it was read from */
	char *primary_hostname;      /* default: the host's name */
	uint16_t *ports;             /* daemon_smtp_ports, in order given */
	size_t n_ports;
	char **local_interfaces;     /* addresses; default: all (0.0.0.0 and ::) */
	size_t n_local_interfaces;
	uint16_t *tls_on_connect_ports;
	size_t n_tls_on_connect_ports;
	char *tls_certificate;       /* PEM file or NULL */
	char *tls_privatekey;        /* PEM file or NULL (then the certificate file) */
	char *spool_directory;
	bool spool_group_sync;       /* one syncfs per commit batch */
	char **local_domains;        /* lowercased, trailing dot removed; "@" = primary_hostname */
	size_t n_local_domains;
	uint64_t message_size_limit;
	unsigned recipients_max;
	unsigned smtp_accept_max;
	unsigned smtp_connect_backlog; /* listen(2) queue of each listening socket */
	unsigned smtp_accept_max_per_host; /* 0 = no limit */
	unsigned smtp_receive_timeout; /* seconds */
	unsigned smtp_data_min_rate; /* bytes per second of message text, 0 = no minimum */
	unsigned smtp_max_errors;
	unsigned smtp_accept_max_nonmail; /* 0 = no limit */
	unsigned smtp_line_max;
	unsigned message_line_max;
	uint64_t message_header_max;
	unsigned smtp_workers;       /* 0 = one per core */
	unsigned shutdown_timeout;   /* seconds sessions get to finish on stop/reload */
	char *user;                  /* unprivileged user for workers */
	char *pid_file;
	char *log_file;              /* "" or unset = stderr; "syslog" = syslog */
	/* Authentication (auth process) and submission policy. */
	char *auth_backend;          /* "none" (default), "passwd-file", "sqlite", "dovecot" */
	char *auth_passwd_file;      /* Dovecot passwd-file format: user:{SCHEME}hash[:...] */
	char *auth_sqlite_database;  /* SQLite file with tables users, aliases, senders */
	char *auth_dovecot_socket;   /* Dovecot auth-client unix socket */
	unsigned auth_mechanisms;    /* SASL_MECH_* bits; default PLAIN : LOGIN : SCRAM-SHA-256 */
	unsigned auth_fail_delay_after;
	unsigned auth_fail_block_after;
	unsigned auth_fail_window;   /* seconds */
	unsigned auth_fail_block_time; /* seconds */
	unsigned auth_fail_max_delay;  /* milliseconds */
	char *aliases_file;          /* /etc/aliases style: local: target, target */
	char *virtual_alias_file;    /* address target, target ; "@domain target" = catch-all */
	char *submission_senders_file; /* login: pattern, pattern (addresses or *@domain) */
	bool submission_add_headers; /* add Message-ID and Date when missing */
	bool submission_check_from;  /* From: addresses must be the user's too */
	bool received_hide_client_ip;/* submission: Received without the client address */
	bool recipient_verify;       /* mx: unknown local users refused at RCPT (550 5.1.1) */
	/* Queue and delivery (the queue runner). */
	bool queue_only;             /* new mail waits for a queue run (-q) */
	unsigned queue_lifetime;     /* seconds before undeliverable mail is bounced */
	unsigned queue_retry_min;    /* first retry interval, seconds */
	unsigned queue_retry_max;    /* longest retry interval, seconds */
	unsigned delay_warning;      /* seconds before a delay warning; 0 = none */
	unsigned remote_max_parallel;   /* outgoing connections in all */
	unsigned remote_max_per_destination; /* outgoing connections per destination */
	unsigned remote_rcpt_max;    /* recipients per outgoing transaction */
	unsigned remote_max_addresses; /* addresses tried per destination and attempt */
	unsigned remote_smtp_port;   /* port of remote MX hosts */
	char *remote_tls;            /* "may", "verify", "none" */
	char *tls_verify_certificates; /* CA file; "" = system default */
	unsigned remote_connect_timeout; /* seconds */
	unsigned remote_command_timeout; /* seconds per reply / data block */
	unsigned remote_data_done_timeout; /* seconds for the reply to the final dot */
	char *smarthost;             /* "" or host[:port]: all remote mail goes there */
	char *smarthost_tls;         /* "starttls", "on_connect", "may", "none" */
	char *smarthost_user;        /* "" = no AUTH */
	char *smarthost_password;
	char *dns_resolv_conf;       /* "" = full recursion */
	char *dns_unbound_config;    /* libunbound configuration file, "" = none */
	char *local_delivery;        /* "maildir" or "lmtp" */
	char *maildir_path;          /* template: %u address, %n local part, %d domain */
	char *mail_user;             /* owner of the mailboxes; "" = user */
	char *lmtp_socket;           /* unix path or host:port */
	unsigned local_delivery_timeout; /* seconds one Maildir delivery may take */
	char *sendmail_socket;       /* local injection socket (sendmail command) */
	uint64_t bounce_return_size_limit;
	unsigned received_headers_max; /* more Received: fields = a mail loop */
	struct acl **acls;           /* every `acl NAME { }` block, in file order */
	size_t n_acls;
	struct conf_listener *listeners; /* one per entry of ports, same order */
	size_t n_listeners;
	char **warnings;             /* to be logged at start ("file:line: text") */
	size_t n_warnings;
};

/*
 * Reads and validates a file.  On error returns -1 and e holds
 * "file:line: what is wrong" (line omitted when not tied to one).
 * ports_override: -oX value replacing daemon_smtp_ports (NULL = none);
 * tls_on_connect_all: -tls-on-connect.
 */
int conf_load(const char *path, const char *ports_override, bool tls_on_connect_all,
	      struct conf **out, struct err *e);
/* Same from a string (tests, fuzzing); name is used in messages. */
int conf_load_string(const char *name, const char *text, const char *ports_override,
		     bool tls_on_connect_all, struct conf **out, struct err *e);
void conf_free(struct conf *c);

/* Port number for a number or service name (smtp, submission, submissions,
 * smtps, ssmtp); -1 if invalid. */
int conf_parse_port(const char *s);

/*
 * Host and port of smarthost and lmtp_socket: "host", "host:port",
 * "[address]" or "[address]:port".  host is a domain name or an IPv4
 * address; the brackets hold an IPv4 or IPv6 address (an IPv6 address
 * without them is refused: its colons read as a port).  port is 1 to
 * 65535 in digits; default_port applies when none is given, 0 = the port
 * is required.  On success host (hn bytes, 256 is always enough) holds
 * the name without a trailing dot, or the address without brackets.
 * -1 with the reason and the expected forms in e.
 */
int conf_parse_hostport(const char *s, char *host, size_t hn, uint16_t *port,
			uint16_t default_port, struct err *e);
/* Port of a smarthost given without one: by smarthost_tls, 465 for
 * on_connect, 587 for starttls, else 25. */
uint16_t conf_smarthost_default_port(const struct conf *c);

/* -bP: prints "name = value" for every option, or only the named one;
 * -1 if no such option. */
int conf_print(FILE *f, const struct conf *c, const char *name);
/* Markdown reference of every option, from the table (docs/configuration.md). */
void conf_print_reference(FILE *f);

const struct conf_listener *conf_listener_for_port(const struct conf *c, uint16_t port);

#endif
