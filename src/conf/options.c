/*
 * The option table: one entry per configuration option.  The parser,
 * -bP and docs/configuration.md are all generated from it, so a new
 * option needs exactly one new entry here (and its struct conf field).
 */
#include <string.h>

#include "conf_int.h"

#define K 1024ull
#define M (1024ull * 1024ull)
#define G (1024ull * 1024ull * 1024ull)
#define OFF(f) offsetof(struct conf, f)

static const char *const remote_tls_modes[] = { "may", "verify", "none", NULL };
static const char *const smarthost_tls_modes[] = { "starttls", "on_connect", "may", "none", NULL };
static const char *const local_deliveries[] = { "maildir", "lmtp", NULL };
static const char *const auth_backends[] = { "none", "passwd-file", "sqlite", "dovecot", NULL };

const struct conf_option conf_options[] = {
	{
		.name = "primary_hostname", .type = CONF_T_HOSTNAME,
		.def_doc = "the host's name (gethostname), fully qualified through the resolver when it has no dot",
		.off = OFF(primary_hostname),
		.help = "The name this server uses for itself: in the SMTP greeting, the EHLO reply, "
			"`Received:` header fields and generated message IDs.  It should be a fully "
			"qualified domain name whose address records point at this host.",
	},
	{
		.name = "daemon_smtp_ports", .type = CONF_T_PORTS,
		.def = "smtp : submissions : submission",
		.off = OFF(ports), .off_n = OFF(n_ports),
		.help = "The TCP ports to listen on, in a list.  Each entry is a number from 1 to 65535 "
			"or a service name: `smtp` (25), `submissions` (465, also written `smtps` or "
			"`ssmtp`) or `submission` (587).  A port may appear only once.  Ports 25, 465 and "
			"587 have a built-in role (see *Listener blocks*); any other port needs a "
			"`listener` block that sets its `role`.  The `-oX` command-line option replaces "
			"this list.",
	},
	{
		.name = "local_interfaces", .type = CONF_T_ADDRS,
		.def = "<; 0.0.0.0 ; ::",
		.off = OFF(local_interfaces), .off_n = OFF(n_local_interfaces),
		.help = "The IP addresses to listen on, in a list; every port of `daemon_smtp_ports` is "
			"opened on each of them.  Each entry must be a literal IPv4 or IPv6 address "
			"(`0.0.0.0` and `::` mean every address of that family).  Because `:` is the list "
			"separator, the colons of an IPv6 address are doubled (`::::1` is `::1`), or the "
			"separator is changed at the start of the list: `<; ::1 ; 192.0.2.1`.",
	},
	{
		.name = "tls_on_connect_ports", .type = CONF_T_PORTS,
		.def = "", .def_doc = "empty (only port 465 uses TLS on connect)",
		.allow_empty = true,
		.off = OFF(tls_on_connect_ports), .off_n = OFF(n_tls_on_connect_ports),
		.help = "Ports, besides 465, on which the TLS handshake starts as soon as the "
			"connection is accepted (implicit TLS, RFC 8314) instead of after `STARTTLS`.  "
			"Listing a port here that `daemon_smtp_ports` does not list opens nothing and "
			"is reported as a warning.  A `listener` block that says `tls = starttls` or "
			"`tls = none` for a port listed here is an error.",
	},
	{
		.name = "tls_certificate", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (no certificate)", .allow_empty = true,
		.off = OFF(tls_certificate),
		.help = "The PEM file holding the server certificate, followed by any intermediate "
			"certificates.  Unset means no TLS: `STARTTLS` is not offered on MX ports, and "
			"the configuration is refused if any listener needs TLS (every submission "
			"listener, and every port with TLS on connect).",
	},
	{
		.name = "tls_privatekey", .type = CONF_T_PATH,
		.def_doc = "the `tls_certificate` file", .allow_empty = true,
		.off = OFF(tls_privatekey),
		.help = "The PEM file holding the private key of `tls_certificate`.",
	},
	{
		.name = "spool_directory", .type = CONF_T_PATH,
		.def = "/var/spool/sluice",
		.off = OFF(spool_directory),
		.help = "The directory holding the message queue.  Messages are written and synced "
			"here before they are accepted.",
	},
	{
		.name = "spool_group_sync", .type = CONF_T_BOOL,
		.def = "yes",
		.off = OFF(spool_group_sync),
		.help = "When several sessions finish a message in the same event-loop round, make "
			"all their files durable with one `syncfs` of the spool's file system instead "
			"of one `fdatasync` each, then rename them and sync the directory once.  Each "
			"message still gets its `250` only once its own file is on disk.  `syncfs` "
			"also writes whatever else is waiting on that file system: keep the spool on "
			"a file system of its own, or set `no` to sync each file on its own.",
	},
	{
		.name = "local_domains", .type = CONF_T_DOMAINS,
		.def = "@", .allow_empty = true,
		.off = OFF(local_domains), .off_n = OFF(n_local_domains),
		.help = "The domains whose mail is delivered on this host, in a list.  `@` stands "
			"for `primary_hostname`.  Names are compared without regard to case and a "
			"trailing dot is ignored.",
	},
	{
		.name = "message_size_limit", .type = CONF_T_SIZE, .width = CONF_W_U64,
		.def = "50M", .min = K, .max = 16 * G,
		.off = OFF(message_size_limit),
		.help = "The largest message accepted, in bytes, as announced by the `SIZE` "
			"extension (RFC 1870).  Larger messages are refused with a 552 reply.",
	},
	{
		.name = "recipients_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "1000", .min = 1, .max = 1000000,
		.off = OFF(recipients_max),
		.help = "The most recipients accepted for one message; further `RCPT` commands get "
			"a 452 reply (RFC 5321 section 4.5.3.1.10).  RFC 5321 section 4.5.3.1.8 requires "
			"a server to accept at least 100, so a lower value draws a warning.",
	},
	{
		.name = "smtp_accept_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "10000", .min = 1, .max = 1000000,
		.off = OFF(smtp_accept_max),
		.help = "The most SMTP connections handled at once, over all listeners.  Further "
			"connections get a 421 reply and are closed.",
	},
	{
		.name = "smtp_accept_max_per_host", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "0", .min = 0, .max = 1000000,
		.off = OFF(smtp_accept_max_per_host),
		.help = "The most SMTP connections handled at once from one client address (an IPv6 "
			"address counts by its /64), over all listeners and workers; 0, the default, "
			"sets no limit.  Further connections from that address get `421 4.7.0` and are "
			"closed.  Without it, one client can take every place of smtp_accept_max; 10 to "
			"50 suits a server on the Internet.  The sendmail socket is not counted.",
	},
	{
		.name = "smtp_connect_backlog", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "1024", .min = 1, .max = 65535,
		.off = OFF(smtp_connect_backlog),
		.help = "How many connections the kernel may hold for each listening socket before "
			"the server accepts them (the listen(2) backlog; Linux caps it at "
			"net.core.somaxconn).  A burst larger than this is met by the kernel, not by "
			"a 421: clients may wait for a greeting that never comes.",
	},
	{
		.name = "smtp_receive_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "5m", .min = 1, .max = 86400,
		.off = OFF(smtp_receive_timeout),
		.help = "How long the server waits for the client's next command or the next part of "
			"the message text before closing the connection with a 421 reply.  RFC 5321 "
			"section 4.5.3.2 recommends at least 5 minutes.  Only progress restarts the "
			"clock: a line completed or 4 KiB received, so a client that sends a command "
			"one byte at a time must still finish it within this time.",
	},
	{
		.name = "smtp_data_min_rate", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "500", .min = 0, .max = 1000000000,
		.off = OFF(smtp_data_min_rate),
		.help = "The slowest the message text may come, in bytes per second on average, "
			"once smtp_receive_timeout has been used up: from the start of the text (DATA, "
			"or the first BDAT chunk, the deadline then running over every chunk of the "
			"transaction) the client has smtp_receive_timeout, and every byte received "
			"adds 1/rate of a second, never beyond smtp_receive_timeout ahead.  A client "
			"that keeps a session by sending a short line or a tiny chunk just before each "
			"timeout is cut off with 421 4.4.2 after about smtp_receive_timeout; a client "
			"sending a large message at this rate or faster is never.  0 turns it off "
			"(each line of text then restarts the timer).  As Postfix's "
			"smtpd_min_data_rate.",
	},
	{
		.name = "smtp_max_errors", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "20", .min = 1, .max = 1000000,
		.off = OFF(smtp_max_errors),
		.help = "How many rejected or malformed commands a client may send in one connection "
			"without sending mail (an accepted message starts the count again); after "
			"that the connection is closed with a 421 reply.  The `452` for "
			"recipients beyond `recipients_max` counts only after as many again "
			"(RFC 5321 section 4.5.3.1.10: the client sends the rest later).",
	},
	{
		.name = "smtp_accept_max_nonmail", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "100", .min = 0, .max = 1000000,
		.off = OFF(smtp_accept_max_nonmail),
		.help = "How many commands that send no mail (`NOOP`, `VRFY`, `EXPN`, `HELP`, "
			"`HELO`, `EHLO`, and `MAIL` that begins a transaction) a client may give "
			"between two accepted messages (and before the first); one more ends the "
			"connection with a 421 reply.  Without it a client could hold a session, "
			"and its slot of `smtp_accept_max`, for ever by sending one such command "
			"(or `MAIL` then `RSET`) before each timeout.  `RSET` itself is not "
			"counted: RFC 5321 section 4.1.1.5 forbids closing a connection as its "
			"result.  0: no limit.  As Exim's option of that name and Postfix's "
			"smtpd_junk_command_limit.",
	},
	{
		.name = "smtp_line_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "2048", .min = 512, .max = 65536,
		.off = OFF(smtp_line_max),
		.help = "The longest command line accepted, in bytes including CRLF.  RFC 5321 section "
			"4.5.3.1.4 sets 512 as the least a server must accept; longer lines are needed "
			"for `AUTH` with large credentials and for extension parameters.",
	},
	{
		.name = "message_line_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "998", .min = 78, .max = M,
		.off = OFF(message_line_max),
		.help = "The longest line of message text accepted, in bytes without CRLF.  RFC 5322 "
			"section 2.1.1 limits lines to 998 characters; a message with a longer line is "
			"refused.",
	},
	{
		.name = "message_header_max", .type = CONF_T_SIZE, .width = CONF_W_U64,
		.def = "1M", .min = K, .max = 64 * M,
		.off = OFF(message_header_max),
		.help = "The largest header section of a message accepted, in bytes.",
	},
	{
		.name = "smtp_workers", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "0", .min = 0, .max = 256,
		.off = OFF(smtp_workers),
		.help = "How many SMTP worker processes to start.  0 means one per CPU core.",
	},
	{
		.name = "shutdown_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "30s", .min = 0, .max = 86400,
		.off = OFF(shutdown_timeout),
		.help = "On stop, how long sessions in progress may run before they are closed with "
			"a 421 reply.  On reload, how long the old workers' sessions go on as usual "
			"before that stop begins.",
	},
	{
		.name = "user", .type = CONF_T_STRING,
		.def = "sluice",
		.off = OFF(user),
		.help = "The unprivileged user the worker processes run as.",
	},
	{
		.name = "pid_file", .type = CONF_T_PATH,
		.def = "/run/sluice.pid",
		.off = OFF(pid_file),
		.help = "The file the master process writes its process ID to.",
	},
	{
		.name = "log_file", .type = CONF_T_LOGFILE,
		.def = "", .def_doc = "empty (standard error)", .allow_empty = true,
		.off = OFF(log_file),
		.help = "Where log lines go: empty means standard error, `syslog` means syslog "
			"(facility mail), anything else is the absolute path of a file that lines are "
			"appended to.",
	},
	{
		.name = "auth_backend", .type = CONF_T_CHOICE, .choices = auth_backends,
		.def = "none",
		.off = OFF(auth_backend),
		.help = "Where the users who may authenticate (SMTP `AUTH`) come from: `none`, "
			"`passwd-file` (`auth_passwd_file`), `sqlite` (`auth_sqlite_database`) or "
			"`dovecot` (Dovecot's authentication service at `auth_dovecot_socket`).  See "
			"*Authentication* below.  With `none` nobody can authenticate, so submission "
			"listeners refuse every `MAIL` command with `530 5.7.0`; the configuration is "
			"still accepted, with a warning, as long as any listener offers `AUTH`.",
	},
	{
		.name = "auth_passwd_file", .type = CONF_T_PATH,
		.def = "/etc/sluice/passwd",
		.off = OFF(auth_passwd_file),
		.help = "The user file of `auth_backend = passwd-file`, in Dovecot's passwd-file "
			"format (`user:{SCHEME}hash`, see *Authentication*).  Only the auth process "
			"reads it, so it should be readable by the `user` account and nobody else.  "
			"The start (and `-bV`) refuses a file that account cannot read; "
			"`sluice -buseradd` creates it owned by root and that account's group, "
			"mode 0640.",
	},
	{
		.name = "auth_sqlite_database", .type = CONF_T_PATH,
		.def = "/var/lib/sluice/users.db",
		.off = OFF(auth_sqlite_database),
		.help = "The SQLite database of `auth_backend = sqlite`, with the tables `users`, "
			"`aliases` and `senders` described under *Authentication*.",
	},
	{
		.name = "auth_dovecot_socket", .type = CONF_T_PATH,
		.def = "/run/dovecot/auth-client",
		.off = OFF(auth_dovecot_socket),
		.help = "The Dovecot auth-client socket of `auth_backend = dovecot`.  The `user` "
			"account needs read and write permission on it (Dovecot's "
			"`service auth { unix_listener auth-client { ... } }`).",
	},
	{
		.name = "auth_mechanisms", .type = CONF_T_MECHS, .width = CONF_W_UNSIGNED,
		.def = "PLAIN : LOGIN",
		.off = OFF(auth_mechanisms),
		.help = "The SASL mechanisms offered by `AUTH`, in a list; names are accepted in "
			"any case.  `PLAIN` (RFC 4616) and `LOGIN` send the password itself, inside "
			"TLS, and work with every password scheme.  `SCRAM-SHA-256` (RFC 7677) never "
			"sends the password, but works only for users whose stored password is a "
			"`{SCRAM-SHA-256}` entry.  It is not offered by default: mail clients that "
			"can use it (mutt, msmtp) choose it over `PLAIN` and do not fall back, so "
			"every user stored in another scheme (the default of `-buseradd`) would be "
			"refused with the right password.  Add it once all users have SCRAM entries.  "
			"`LOGIN` is obsolete but some older mail clients offer nothing else.",
	},
	{
		.name = "auth_fail_delay_after", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "3", .min = 1, .max = 1000000,
		.off = OFF(auth_fail_delay_after),
		.help = "Protection against password guessing: after this many failed "
			"authentications within `auth_fail_window`, from one client address or for "
			"one user name, each further answer is delayed, the delay growing with every "
			"failure up to `auth_fail_max_delay`.  A success for the user clears its count.",
	},
	{
		.name = "auth_fail_block_after", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "10", .min = 2, .max = 1000000,
		.off = OFF(auth_fail_block_after),
		.help = "After this many failed authentications within `auth_fail_window`, the "
			"client address or user name is refused outright (`454 4.7.0`, without "
			"checking the password) for `auth_fail_block_time`.  Must be greater than "
			"`auth_fail_delay_after`.  Users behind one shared address (a company NAT) "
			"share its count; raise this value if they lock each other out.",
	},
	{
		.name = "auth_fail_window", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "15m", .min = 1, .max = 7 * 86400,
		.off = OFF(auth_fail_window),
		.help = "How long a failed authentication counts towards `auth_fail_delay_after` "
			"and `auth_fail_block_after`.",
	},
	{
		.name = "auth_fail_block_time", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "15m", .min = 1, .max = 7 * 86400,
		.off = OFF(auth_fail_block_time),
		.help = "How long a client address or user name stays refused once it reached "
			"`auth_fail_block_after`.",
	},
	{
		.name = "auth_fail_max_delay", .type = CONF_T_MSEC, .width = CONF_W_UNSIGNED,
		.def = "5s", .min = 0, .max = 60000,
		.off = OFF(auth_fail_max_delay),
		.help = "The longest delay added to an authentication answer (see "
			"`auth_fail_delay_after`).  This time also accepts `ms` for milliseconds: "
			"`500ms`, `1s500ms`; `0s` turns delaying off.",
	},
	{
		.name = "aliases_file", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (no file)", .allow_empty = true,
		.off = OFF(aliases_file),
		.help = "A file of aliases for local parts, in the style of `/etc/aliases`: "
			"`local: target, target`.  Each entry applies to every domain of "
			"`local_domains`.  When set, the file must be readable by `user` when the "
			"daemon starts or reloads.  See *Aliases and senders*.",
	},
	{
		.name = "virtual_alias_file", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (no file)", .allow_empty = true,
		.off = OFF(virtual_alias_file),
		.help = "A file of aliases for whole addresses: `address target, target`, with "
			"`@domain target` catching every other address of a domain.  When set, the "
			"file must be readable by `user` when the daemon starts or reloads.  See "
			"*Aliases and senders*.",
	},
	{
		.name = "submission_senders_file", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (no file)", .allow_empty = true,
		.off = OFF(submission_senders_file),
		.help = "A file giving logins the right to send as further addresses: "
			"`login: pattern, pattern`, where a pattern is an address or `*@domain`.  "
			"When set, the file must be readable by `user` when the daemon starts or "
			"reloads.  See *Aliases and senders* for the addresses a login may use "
			"without an entry.",
	},
	{
		.name = "submission_add_headers", .type = CONF_T_BOOL,
		.def = "yes",
		.off = OFF(submission_add_headers),
		.help = "On submission listeners, add a `Message-ID:` and a `Date:` header field "
			"to a message that lacks them (RFC 6409 section 8).  Turn it off only if "
			"every client is known to add them itself.",
	},
	{
		.name = "submission_check_from", .type = CONF_T_BOOL,
		.def = "no",
		.off = OFF(submission_check_from),
		.help = "On submission listeners, also require every address of the `From:` "
			"header field of an authenticated message to be one the user owns, by the "
			"same rule as the envelope sender: a message with another author is refused "
			"after its data (550 5.7.1), one whose `From:` cannot be parsed gets "
			"550 5.6.0.  Off by default: mailing-list software and delegated mailboxes "
			"legitimately send with another `From:`.",
	},
	{
		.name = "received_hide_client_ip", .type = CONF_T_BOOL,
		.def = "no",
		.off = OFF(received_hide_client_ip),
		.help = "On submission listeners, leave the client's IP address and host name out "
			"of the `Received:` header field, so that recipients do not learn where the "
			"sender was (at home, on the road).  The address is still logged.  MX "
			"listeners always record it.",
	},
	{
		.name = "recipient_verify", .type = CONF_T_BOOL,
		.def = "yes",
		.off = OFF(recipient_verify),
		.help = "On MX listeners, when `auth_backend` is not `none`, refuse a recipient of "
			"a local domain that is neither a user nor an alias with `550 5.1.1` at "
			"`RCPT`, instead of accepting the message and bouncing it later (which sends "
			"bounces to forged senders).  Turn it off when the users are not all known "
			"to the backend.",
	},
	{
		.name = "queue_only", .type = CONF_T_BOOL,
		.def = "no",
		.off = OFF(queue_only),
		.help = "When set, a message is not delivered as soon as it arrives: it waits in "
			"the queue for the next queue run (`-q`) or for `-M`.  Messages already "
			"tried once keep their retry times.",
	},
	{
		.name = "queue_lifetime", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "5d", .min = 1, .max = 365 * 86400,
		.off = OFF(queue_lifetime),
		.help = "How long a message may stay in the queue.  A recipient still not "
			"delivered when this time has passed since the message arrived is given up, "
			"and the sender gets a delivery status report (bounce).",
	},
	{
		.name = "queue_retry_min", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "5m", .min = 1, .max = 86400,
		.off = OFF(queue_retry_min),
		.help = "The wait after the first failed delivery attempt.  Each further failure "
			"doubles the wait, up to `queue_retry_max`.",
	},
	{
		.name = "queue_retry_max", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "4h", .min = 1, .max = 7 * 86400,
		.off = OFF(queue_retry_max),
		.help = "The longest wait between two delivery attempts of one message.",
	},
	{
		.name = "delay_warning", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "4h", .min = 0, .max = 365 * 86400,
		.off = OFF(delay_warning),
		.help = "When a message has waited this long without being delivered to every "
			"recipient, send its sender one delay warning (RFC 3464 `Action: delayed`), "
			"to recipients whose `NOTIFY` allows it.  0 sends none.",
	},
	{
		.name = "remote_max_parallel", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "20", .min = 1, .max = 10000,
		.off = OFF(remote_max_parallel),
		.help = "The most outgoing SMTP and LMTP connections open at once.",
	},
	{
		.name = "remote_max_per_destination", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "4", .min = 1, .max = 1000,
		.off = OFF(remote_max_per_destination),
		.help = "The most connections open at once to one destination (one recipient "
			"domain, the smarthost, or the LMTP server).  Messages beyond it wait for a "
			"connection, which then carries several messages in turn.",
	},
	{
		.name = "remote_rcpt_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "100", .min = 1, .max = 1000,
		.off = OFF(remote_rcpt_max),
		.help = "The most recipients sent in one SMTP or LMTP transaction; a message for "
			"more recipients of one destination goes in several transactions.  RFC 5321 "
			"section 4.5.3.1.8 requires servers to take at least 100.  Recipients a "
			"server refuses with a temporary reply to `RCPT` (a limit of its own, or "
			"`552`, which is taken as `452`) go at once in a further transaction after "
			"one that delivered to some recipient.",
	},
	{
		.name = "remote_max_addresses", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "5", .min = 2, .max = 1000,
		.off = OFF(remote_max_addresses),
		.help = "The most addresses tried for one destination in one delivery attempt: the "
			"first ones of its route (mail exchangers by preference, each one's IPv6 then "
			"IPv4 addresses).  Each may cost a connect and a greeting timeout, and a "
			"domain's DNS can list hundreds; the rest of the route is not used "
			"(`event=route_limited`).  RFC 5321 section 5.1 asks for at least 2.  As "
			"Exim's hosts_max_try and Postfix's smtp_mx_address_limit.",
	},
	{
		.name = "remote_smtp_port", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "25", .min = 1, .max = 65535,
		.off = OFF(remote_smtp_port),
		.help = "The port connected to on the mail exchangers of remote domains.  It is 25 "
			"on the Internet; other values are for tests and private networks.",
	},
	{
		.name = "remote_tls", .type = CONF_T_CHOICE, .choices = remote_tls_modes,
		.def = "may",
		.off = OFF(remote_tls),
		.help = "TLS when delivering to remote mail exchangers: `may` uses `STARTTLS` when "
			"offered without checking the certificate (opportunistic TLS, RFC 7435; the "
			"verification result is logged); `verify` requires `STARTTLS` and a "
			"certificate valid for the MX host name; `none` never starts TLS.",
	},
	{
		.name = "tls_verify_certificates", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (the system's certificate authorities)", .allow_empty = true,
		.off = OFF(tls_verify_certificates),
		.help = "A PEM file of certificate authorities trusted when verifying the "
			"certificates of remote servers and of the smarthost.",
	},
	{
		.name = "remote_connect_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "30s", .min = 1, .max = 3600,
		.off = OFF(remote_connect_timeout),
		.help = "How long an outgoing connection may take to be established.",
	},
	{
		.name = "remote_command_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "5m", .min = 1, .max = 3600,
		.off = OFF(remote_command_timeout),
		.help = "How long to wait for each reply of a remote server except the one to "
			"the end of the message data, and for each block of message data to be "
			"taken.  RFC 5321 section 4.5.3.2 suggests 5 minutes for the greeting, "
			"`MAIL` and `RCPT`, 2 minutes for `DATA` and 3 minutes per data block.",
	},
	{
		.name = "remote_data_done_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "10m", .min = 1, .max = 3600,
		.off = OFF(remote_data_done_timeout),
		.help = "How long to wait for the reply to the end of the message data (the final "
			"dot), when the server may be checking the message.  RFC 5321 section "
			"4.5.3.2.6 asks for at least 10 minutes: giving up earlier while the server "
			"goes on to deliver sends the message twice.",
	},
	{
		.name = "smarthost", .type = CONF_T_STRING,
		.def = "", .def_doc = "empty (deliver to each domain's mail exchangers)",
		.allow_empty = true,
		.off = OFF(smarthost),
		.help = "Send all mail for non-local domains to this one relay instead of looking "
			"up MX records: a host name or an IP address, optionally followed by `:port` "
			"(default 587 with `smarthost_tls = starttls`, 465 with `on_connect`, else 25).  "
			"Write an IPv6 address in brackets: `[2001:db8::1]:587`.",
	},
	{
		.name = "smarthost_tls", .type = CONF_T_CHOICE, .choices = smarthost_tls_modes,
		.def = "starttls",
		.off = OFF(smarthost_tls),
		.help = "TLS to the smarthost: `starttls` requires `STARTTLS` and a certificate "
			"valid for the smarthost name; `on_connect` starts TLS at once (port 465) with "
			"the same check; `may` uses `STARTTLS` when offered, unchecked; `none` never.  "
			"A password is never sent without TLS.",
	},
	{
		.name = "smarthost_user", .type = CONF_T_STRING,
		.def = "", .def_doc = "empty (no authentication)", .allow_empty = true,
		.off = OFF(smarthost_user),
		.help = "The user name to authenticate to the smarthost with (`AUTH PLAIN`, or "
			"`LOGIN` when only that is offered).",
	},
	{
		.name = "smarthost_password", .type = CONF_T_STRING,
		.def = "", .allow_empty = true, .secret = true,
		.off = OFF(smarthost_password),
		.help = "The password of `smarthost_user`.  Keep the configuration file readable "
			"by root only when it holds one; `-bP` does not print it.",
	},
	{
		.name = "dns_resolv_conf", .type = CONF_T_PATH,
		.def = "/etc/resolv.conf", .allow_empty = true,
		.off = OFF(dns_resolv_conf),
		.help = "The resolver file whose `nameserver` lines the DNS resolver forwards to.  "
			"Empty means no forwarders: the resolver recurses from the root servers itself.",
	},
	{
		.name = "dns_unbound_config", .type = CONF_T_PATH,
		.def = "", .def_doc = "empty (none)", .allow_empty = true,
		.off = OFF(dns_unbound_config),
		.help = "A libunbound configuration file read by the resolver: trust anchors for "
			"DNSSEC, `local-zone` and `local-data` entries that override public DNS "
			"(useful for private networks and tests), and other `server:` settings.",
	},
	{
		.name = "local_delivery", .type = CONF_T_CHOICE, .choices = local_deliveries,
		.def = "maildir",
		.off = OFF(local_delivery),
		.help = "How mail for local users is stored: `maildir` writes it into each user's "
			"Maildir (`maildir_path`) as `mail_user`; `lmtp` hands it to an LMTP server "
			"such as Dovecot's (`lmtp_socket`).",
	},
	{
		.name = "maildir_path", .type = CONF_T_STRING,
		.def = "/var/vmail/%d/%n",
		.off = OFF(maildir_path),
		.help = "Where a local user's Maildir is: an absolute path in which `%u` stands for "
			"the address, `%n` for its local part and `%d` for its domain (both "
			"lowercased), `%%` for a percent sign; any other `%` is an error.  Missing "
			"directories are created.",
	},
	{
		.name = "mail_user", .type = CONF_T_STRING,
		.def = "", .def_doc = "empty (the `user` account)", .allow_empty = true,
		.off = OFF(mail_user),
		.help = "The account that owns the mailboxes: local delivery into Maildirs runs as "
			"this user, in a process of its own.  When the daemon is started as root it "
			"must exist and must not be root, or the daemon does not start (nor take a "
			"reload).",
	},
	{
		.name = "lmtp_socket", .type = CONF_T_STRING,
		.def = "/run/dovecot/lmtp",
		.off = OFF(lmtp_socket),
		.help = "The LMTP server of `local_delivery = lmtp`: the absolute path of a unix "
			"socket, or `address:port` with an IP address, an IPv6 one in brackets "
			"(`127.0.0.1:24`, `[::1]:24`); host names are not looked up.",
	},
	{
		.name = "local_delivery_timeout", .type = CONF_T_TIME, .width = CONF_W_UNSIGNED,
		.def = "10m", .min = 1, .max = 86400,
		.off = OFF(local_delivery_timeout),
		.help = "How long one Maildir delivery may take (a hung file system, a stuck "
			"disk).  When it is over, the local deliveries waiting are deferred and the "
			"local delivery process is replaced once it ends.",
	},
	{
		.name = "sendmail_socket", .type = CONF_T_PATH,
		.def = "/run/sluice/sendmail.sock",
		.off = OFF(sendmail_socket),
		.help = "The local socket through which the `sendmail` command hands messages to "
			"the daemon.  Every local user may connect; the daemon records the caller's "
			"user ID in the `Received:` header field.",
	},
	{
		.name = "received_headers_max", .type = CONF_T_UINT, .width = CONF_W_UNSIGNED,
		.def = "100", .min = 1, .max = 1000,
		.off = OFF(received_headers_max),
		.help = "A message with more `Received:` header fields than this is taken to be "
			"in a mail loop (RFC 5321 section 6.3, which advises a threshold of at "
			"least 100): it is not delivered, and its recipients fail with `554 5.4.6`.",
	},
	{
		.name = "bounce_return_size_limit", .type = CONF_T_SIZE, .width = CONF_W_U64,
		.def = "100K", .min = 0, .max = 64 * M,
		.off = OFF(bounce_return_size_limit),
		.help = "A bounce returns the whole original message when it is at most this "
			"large and the sender did not ask for headers only (`RET=HDRS`); otherwise "
			"only its header.",
	},
};

const size_t conf_n_options = sizeof(conf_options) / sizeof(conf_options[0]);

const struct conf_listener_setting conf_listener_settings[] = {
	{ "role", "`mx` or `submission`",
	  "What the port is for.  `mx` receives mail from other servers for local domains: "
	  "TLS is offered but not required, and no authentication is needed.  `submission` "
	  "receives mail from this site's users (RFC 6409): TLS and authentication are "
	  "required before a message is accepted." },
	{ "tls", "`starttls`, `on_connect` or `none`",
	  "How TLS starts: `starttls` offers the `STARTTLS` command (RFC 3207); `on_connect` "
	  "starts the handshake as soon as the connection is accepted (implicit TLS, RFC 8314); "
	  "`none` offers no TLS and is not allowed on a submission listener." },
	{ "tls_min_version", "`TLSv1`, `TLSv1.1`, `TLSv1.2` or `TLSv1.3`",
	  "The oldest TLS version accepted." },
	{ "tls_ciphers", "an OpenSSL cipher list",
	  "The ciphers offered for TLS 1.2 and older, in OpenSSL cipher-list syntax." },
	{ "tls_ciphersuites", "an OpenSSL ciphersuite list",
	  "The TLS 1.3 ciphersuites offered, in OpenSSL ciphersuite syntax." },
	{ "auth", "`yes` or `no`",
	  "Whether `AUTH` (RFC 4954) is offered; it is offered only inside TLS.  Submission "
	  "listeners always offer it (`auth = no` is refused there, as a submission port "
	  "without `AUTH` could accept no mail).  On an MX listener `auth = yes` lets the "
	  "site's users authenticate on it too; other servers still need no authentication.  "
	  "With `tls = none`, or without `tls_certificate`, it would never be offered, and "
	  "`auth = yes` draws a warning." },
	{ "acl_connect", "the name of an `acl` block",
	  "ACL checked when a client connects, before the greeting (see *ACLs*)." },
	{ "acl_helo", "the name of an `acl` block",
	  "ACL checked at `HELO` and `EHLO`." },
	{ "acl_mail", "the name of an `acl` block",
	  "ACL checked at `MAIL FROM`." },
	{ "acl_rcpt", "the name of an `acl` block",
	  "ACL checked at each `RCPT TO`." },
	{ "acl_data", "the name of an `acl` block",
	  "ACL checked when the whole message has been received, before it is accepted." },
};

const size_t conf_n_listener_settings =
	sizeof(conf_listener_settings) / sizeof(conf_listener_settings[0]);

const struct conf_option *conf_option_find(const char *name)
{
	for (size_t i = 0; i < conf_n_options; i++)
		if (strcmp(conf_options[i].name, name) == 0)
			return &conf_options[i];
	return NULL;
}
