/*
 * -bP output and the markdown reference, both generated from the option
 * table so that neither can disagree with what the parser accepts.
 */
#include <stdlib.h>
#include <string.h>

#include "conf_int.h"

static void join_strv(struct buf *out, char *const *v, size_t n)
{
	/* Items with colons (IPv6) are printed with ';' as separator, the
	 * form that needs no doubling and reads most naturally. */
	bool colon = false;
	for (size_t i = 0; i < n; i++)
		if (strchr(v[i], ':'))
			colon = true;
	if (colon && n > 0)
		buf_puts(out, "<; ");
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_puts(out, colon ? " ; " : " : ");
		buf_puts(out, v[i]);
	}
}

void conf_format_value(struct buf *out, const struct conf *c, const struct conf_option *o)
{
	const void *f = (const char *)c + o->off;
	size_t n = o->off_n ? *(const size_t *)((const char *)c + o->off_n) : 0;
	uint64_t num = 0;
	if (o->width == CONF_W_U64)
		num = *(const uint64_t *)f;
	else if (o->width == CONF_W_UNSIGNED)
		num = *(const unsigned *)f;
	switch (o->type) {
	case CONF_T_STRING:
	case CONF_T_PATH:
	case CONF_T_LOGFILE:
	case CONF_T_HOSTNAME:
	case CONF_T_CHOICE: {
		const char *s = *(char *const *)f;
		if (s)
			buf_puts(out, s);
		break;
	}
	case CONF_T_PORTS: {
		const uint16_t *v = *(uint16_t *const *)f;
		for (size_t i = 0; i < n; i++)
			buf_printf(out, "%s%u", i ? " : " : "", v[i]);
		break;
	}
	case CONF_T_ADDRS:
	case CONF_T_DOMAINS:
		join_strv(out, *(char **const *)f, n);
		break;
	case CONF_T_UINT:
		buf_printf(out, "%llu", (unsigned long long)num);
		break;
	case CONF_T_SIZE:
		conf_format_size(out, num);
		break;
	case CONF_T_TIME:
		conf_format_time(out, num);
		break;
	case CONF_T_MSEC:
		conf_format_msec(out, num);
		break;
	case CONF_T_MECHS:
		conf_format_mechs(out, (unsigned)num);
		break;
	case CONF_T_BOOL:
		buf_puts(out, *(const bool *)f ? "yes" : "no");
		break;
	}
}

static void print_option(FILE *f, const struct conf *c, const struct conf_option *o)
{
	struct buf b;
	buf_init(&b, (size_t)1 << 24);
	conf_format_value(&b, c, o);
	if (o->secret && buf_len(&b) > 0) {
		buf_reset(&b);
		buf_puts(&b, "(set, not shown)");
	}
	const char *s = buf_cstr(&b);
	if (s && *s)
		fprintf(f, "%s = %s\n", o->name, s);
	else
		fprintf(f, "%s =\n", o->name);
	buf_free(&b);
}

int conf_print(FILE *f, const struct conf *c, const char *name)
{
	if (name) {
		const struct conf_option *o = conf_option_find(name);
		if (!o)
			return -1;
		print_option(f, c, o);
		return 0;
	}
	for (size_t i = 0; i < conf_n_options; i++)
		print_option(f, c, &conf_options[i]);
	/* ACL blocks in file syntax, so that they can be read back. */
	for (size_t i = 0; i < c->n_acls; i++) {
		const struct acl *a = c->acls[i];
		fprintf(f, "acl %s {\n", acl_name(a));
		for (size_t k = 0; k < acl_n_rules(a); k++) {
			struct buf b;
			buf_init(&b, (size_t)1 << 20);
			acl_format_rule(&b, a, k);
			const char *s = buf_cstr(&b);
			fprintf(f, "    %s\n", s ? s : "");
			buf_free(&b);
		}
		fputs("}\n", f);
	}
	static const char *const acl_settings[ACL_NSTAGES] = {
		"acl_connect", "acl_helo", "acl_mail", "acl_rcpt", "acl_data",
	};
	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct conf_listener *l = &c->listeners[i];
		fprintf(f, "listener %u { role = %s tls = %s tls_min_version = %s "
			"tls_ciphers = %s tls_ciphersuites = %s",
			l->port, conf_role_name(l->role), conf_tls_mode_name(l->tls),
			conf_tls_version_name(l->tls_min_version),
			l->tls_ciphers ? l->tls_ciphers : "",
			l->tls_ciphersuites ? l->tls_ciphersuites : "");
		for (int k = 0; k < ACL_NSTAGES; k++)
			if (l->acl[k])
				fprintf(f, " %s = %s", acl_settings[k], acl_name(l->acl[k]));
		fprintf(f, " auth = %s }\n", l->auth ? "yes" : "no");
	}
	return 0;
}

static const char *type_name(const struct conf_option *o)
{
	switch (o->type) {
	case CONF_T_STRING: return "string";
	case CONF_T_PATH: return "absolute path";
	case CONF_T_LOGFILE: return "empty, `syslog` or an absolute path";
	case CONF_T_HOSTNAME: return "domain name";
	case CONF_T_PORTS: return "list of ports";
	case CONF_T_ADDRS: return "list of IP addresses";
	case CONF_T_DOMAINS: return "list of domains";
	case CONF_T_UINT: return "number";
	case CONF_T_SIZE: return "size";
	case CONF_T_TIME: return "time";
	case CONF_T_MSEC: return "time (`ms` allowed)";
	case CONF_T_CHOICE: return "word";
	case CONF_T_MECHS: return "list of SASL mechanisms";
	case CONF_T_BOOL: return "`yes` or `no`";
	}
	return "?";
}

static void print_type(FILE *f, const struct conf_option *o)
{
	if (o->type != CONF_T_CHOICE) {
		fprintf(f, "- Type: %s\n", type_name(o));
		return;
	}
	size_t n = 0;
	while (o->choices[n])
		n++;
	fputs("- Type: one of ", f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s`%s`", i == 0 ? "" : i + 1 == n ? " or " : ", ", o->choices[i]);
	fputs("\n", f);
}

static void print_limits(FILE *f, const struct conf_option *o)
{
	if (o->type != CONF_T_UINT && o->type != CONF_T_SIZE && o->type != CONF_T_TIME &&
	    o->type != CONF_T_MSEC)
		return;
	struct buf b;
	buf_init(&b, 256);
	if (o->type == CONF_T_SIZE) {
		conf_format_size(&b, o->min);
		buf_puts(&b, "` to `");
		conf_format_size(&b, o->max);
	} else if (o->type == CONF_T_TIME) {
		conf_format_time(&b, o->min);
		buf_puts(&b, "` to `");
		conf_format_time(&b, o->max);
	} else if (o->type == CONF_T_MSEC) {
		conf_format_msec(&b, o->min);
		buf_puts(&b, "` to `");
		conf_format_msec(&b, o->max);
	} else {
		buf_printf(&b, "%llu` to `%llu", (unsigned long long)o->min,
			   (unsigned long long)o->max);
	}
	const char *s = buf_cstr(&b);
	fprintf(f, "- Limits: `%s`\n", s ? s : "");
	buf_free(&b);
}

static const char ref_intro[] =
	"# sluice configuration reference\n"
	"\n"
	"sluice reads its configuration from `" CONF_DEFAULT_PATH "` (or the file given\n"
	"with `-C`).  The daemon checks the whole file before it starts and refuses to\n"
	"start on any error; every error names the file and line and says what form\n"
	"was expected.  `sluice -bP` prints the effective value of every option, and\n"
	"`sluice -bP NAME` the value of one.\n"
	"\n"
	"## File syntax\n"
	"\n"
	"- One setting per line: `name = value`.  The value runs to the end of the line;\n"
	"  blanks around it are removed.  Each option may be set only once.\n"
	"- A line whose first non-blank character is `#` is a comment.  Comments take\n"
	"  whole lines only: a value with ` #` in it is refused (free text, such as a\n"
	"  message, may hold a `#`).\n"
	"- A line ending in a backslash (`\\`) continues on the next line: the backslash,\n"
	"  the line break and the blanks at the start of the next line are removed.\n"
	"- Blank lines are ignored.  A line may be at most 65536 bytes long (also after\n"
	"  joining continuations) and the file may not contain NUL bytes.\n"
	"- Options not set in the file keep the default shown below.\n"
	"\n"
	"### Lists\n"
	"\n"
	"Lists are written as in Exim: items separated by colons, with blanks around\n"
	"items ignored and empty items skipped, e.g. `smtp : submission`.  A literal\n"
	"colon inside an item is written twice, so an IPv6 address has every colon\n"
	"doubled: `::::1` is the address `::1`.  Alternatively the list may begin with\n"
	"`<` followed by another separator character, after which colons are ordinary:\n"
	"`<; ::1 ; 192.0.2.1`.\n"
	"\n"
	"### Numbers, sizes, times and yes/no values\n"
	"\n"
	"- A *number* is a whole decimal number; a `K`, `M` or `G` suffix multiplies it\n"
	"  by 1024, 1024\xc2\xb2 or 1024\xc2\xb3.\n"
	"- A *size* is a number of bytes with an optional `K`, `M` or `G` suffix (powers\n"
	"  of 1024): `50M` is 52428800 bytes.\n"
	"- A *time* is a number followed by `s` (seconds), `m` (minutes), `h` (hours) or\n"
	"  `d` (days); several may be combined, largest first: `1h30m`.  A plain number\n"
	"  is a number of seconds.  Where the type says `ms` allowed, `ms`\n"
	"  (milliseconds) is a unit too: `500ms`, `1s500ms`.\n"
	"- A *yes/no* value is `yes` or `no`; `true` and `false` are accepted too, in\n"
	"  any case.\n"
	"\n"
	"Values outside an option's limits are refused with the allowed range.\n"
	"\n"
	"## Options\n";

static const char ref_listener[] =
	"## Listener blocks\n"
	"\n"
	"Every port of `daemon_smtp_ports` becomes a listener with a role and a TLS\n"
	"policy.  A `listener` block sets them for one port:\n"
	"\n"
	"```\n"
	"listener 2525 {\n"
	"    role = submission\n"
	"    tls = starttls\n"
	"    tls_min_version = TLSv1.2\n"
	"}\n"
	"```\n"
	"\n"
	"The port is a number or a service name as in `daemon_smtp_ports`.  The `{`\n"
	"must end the `listener` line and the `}` must stand alone on its own line.\n"
	"Blocks cannot be nested, a port can have only one block, and only the settings\n"
	"below are allowed inside.  A block for a port that `daemon_smtp_ports` does not\n"
	"list opens nothing and draws a warning.\n"
	"\n"
	"### Settings\n"
	"\n";

static const char ref_derivation[] =
	"\n"
	"### Defaults\n"
	"\n"
	"A setting not given in a block (or a port without a block) gets its default:\n"
	"\n"
	"- `role`: port 25 is `mx`; ports 465 and 587 are `submission`.  Any other port\n"
	"  must have a block that sets `role`, or the configuration is refused.\n"
	"- `tls`: `on_connect` for port 465 and for the ports listed in\n"
	"  `tls_on_connect_ports`, `starttls` otherwise.  A block that says `starttls` or\n"
	"  `none` for a port in `tls_on_connect_ports` is an error.\n"
	"- The TLS policy depends on the role:\n"
	"\n"
	"| Setting | `role = mx` | `role = submission` |\n"
	"|---|---|---|\n";

static const char ref_roles[] =
	"\n"
	"MX listeners accept mail from any server: TLS is offered (when\n"
	"`tls_certificate` is set) but not required, authentication is not required,\n"
	"and old protocol versions and ciphers stay enabled, because an encrypted\n"
	"connection with an old cipher is still better than the plaintext a sending\n"
	"server falls back to.  Submission listeners serve this site's own users:\n"
	"TLS and authentication are both required before mail is accepted, `tls = none`\n"
	"is refused, and the defaults allow only TLS 1.2 or newer with forward-secret\n"
	"AEAD ciphers.\n"
	"\n"
	"A listener that needs TLS (every submission listener, and every listener with\n"
	"`tls = on_connect`) requires `tls_certificate`; without it the configuration is\n"
	"refused with an error naming the port.\n"
	"\n"
	"## Command-line overrides\n"
	"\n"
	"- `-oX PORTS` replaces `daemon_smtp_ports` with PORTS, a list in the same\n"
	"  syntax (`-oX 25:587`, `-oX smtp`).  The ports get their listeners as above,\n"
	"  so a port without a built-in role still needs a `listener` block in the file.\n"
	"- `-tls-on-connect` makes every listener use TLS on connect (`tls =\n"
	"  on_connect`), whatever the file says; `tls_certificate` must then be set.\n";

static const char ref_auth[] =
	"\n"
	"## Authentication\n"
	"\n"
	"Listeners with `auth = yes` (every submission listener) offer the SMTP `AUTH`\n"
	"command (RFC 4954) once TLS is active, with the SASL mechanisms of\n"
	"`auth_mechanisms`.  Passwords are checked by a separate auth process, the only\n"
	"process that reads the user database: the processes that talk to clients\n"
	"never hold a password hash.  Repeated failures are slowed down and then\n"
	"refused as set by the `auth_fail_*` options.  `auth_backend` says where the\n"
	"users come from.  Whether its file, database or socket exists is checked when\n"
	"the auth process starts, which logs the problem; it is not checked here.\n"
	"\n"
	"### auth_backend = none\n"
	"\n"
	"No users.  Nobody can authenticate, so submission listeners refuse every\n"
	"`MAIL` command with `530 5.7.0`.  The configuration is accepted with a warning\n"
	"(an MX-only server needs no users).\n"
	"\n"
	"### auth_backend = passwd-file\n"
	"\n"
	"Users are read from `auth_passwd_file`, in Dovecot's passwd-file format: one\n"
	"user per line, fields separated by colons, the first field the user name (the\n"
	"login), the second the password as `{SCHEME}hash`.  Further fields (uid, gid,\n"
	"home and so on) are ignored, so the file Dovecot uses can be shared.  Blank\n"
	"lines and lines starting with `#` are ignored.\n"
	"\n"
	"```\n"
	"alice@example.org:{SHA512-CRYPT}$6$wL0d5uNs$...\n"
	"bob:{BLF-CRYPT}$2y$05$...\n"
	"carol:{YESCRYPT}$y$j9T$...\n"
	"dave:{SCRAM-SHA-256}4096,c2FsdA==,<StoredKey>,<ServerKey>\n"
	"```\n"
	"\n"
	"The schemes are `SHA512-CRYPT`, `BLF-CRYPT` (bcrypt) and `YESCRYPT` (also\n"
	"`SHA256-CRYPT` and `CRYPT`), checked with the system's crypt library, and\n"
	"`SCRAM-SHA-256`, written as Dovecot does: iteration count, salt, StoredKey and\n"
	"ServerKey, the last three in base64.  `doveadm pw -s SCHEME` makes such\n"
	"entries.  Cleartext passwords (`{PLAIN}`) and unknown schemes are refused.  A\n"
	"user with a crypt hash can log in with `PLAIN` and `LOGIN` only; a user with a\n"
	"`{SCRAM-SHA-256}` entry can use all three mechanisms.\n"
	"\n"
	"### auth_backend = sqlite\n"
	"\n"
	"Users, aliases and sender rights are read from the SQLite database\n"
	"`auth_sqlite_database`, which other programs may change while sluice runs:\n"
	"\n"
	"```\n"
	"CREATE TABLE users   (name TEXT PRIMARY KEY COLLATE NOCASE, password TEXT NOT NULL);\n"
	"CREATE TABLE aliases (address TEXT NOT NULL COLLATE NOCASE, target TEXT NOT NULL);\n"
	"CREATE TABLE senders (login TEXT NOT NULL COLLATE NOCASE, pattern TEXT NOT NULL);\n"
	"```\n"
	"\n"
	"- `users`: the login and its password, `{SCHEME}hash` as in a passwd-file.\n"
	"- `aliases`: one row per target; `address` is an address, or `@domain` to\n"
	"  catch every other address of the domain, as in `virtual_alias_file`.\n"
	"- `senders`: one row per pattern (an address or `*@domain`) that the login may\n"
	"  send as, as in `submission_senders_file`.\n"
	"\n"
	"The rows add to the entries of the files of *Aliases and senders*, when those\n"
	"are set.\n"
	"\n"
	"### auth_backend = dovecot\n"
	"\n"
	"Passwords are checked by Dovecot's authentication service through its\n"
	"auth-client socket, `auth_dovecot_socket`, so that mail clients use the same\n"
	"login for sending and reading mail.  Dovecot must let the sluice `user` open\n"
	"the socket, for example:\n"
	"\n"
	"```\n"
	"service auth {\n"
	"  unix_listener auth-client {\n"
	"    mode = 0660\n"
	"    group = sluice\n"
	"  }\n"
	"}\n"
	"```\n"
	"\n"
	"Aliases and sender rights then come from the files of *Aliases and senders*.\n"
	"\n";

static const char ref_aliases[] =
	"## Aliases and senders\n"
	"\n"
	"Three optional files, read by the auth process, say which local addresses\n"
	"exist besides the users and which addresses a login may send as.  In each,\n"
	"blank lines and lines starting with `#` are ignored, targets and patterns are\n"
	"separated by commas, and domains are compared without regard to case.\n"
	"\n"
	"`aliases_file` has the form of `/etc/aliases`: a local part, a colon, and the\n"
	"targets.  Each entry applies to every domain of `local_domains`.  A target is a\n"
	"login or a full address (which may be remote):\n"
	"\n"
	"```\n"
	"postmaster: alice\n"
	"abuse: alice, bob@example.net\n"
	"```\n"
	"\n"
	"`virtual_alias_file` maps whole addresses: the address, blanks, and the\n"
	"targets.  `@domain` as the address catches every address of that domain that\n"
	"no other entry or user matches:\n"
	"\n"
	"```\n"
	"info@example.org     alice, bob\n"
	"sales@example.com    carol@example.org\n"
	"@example.net         alice\n"
	"```\n"
	"\n"
	"`submission_senders_file` gives a login, a colon, and the patterns of the\n"
	"further sender addresses (`MAIL FROM`) it may use on submission listeners; a\n"
	"pattern is an address or `*@domain` for every address of a domain:\n"
	"\n"
	"```\n"
	"alice: info@example.org, alice@example.net\n"
	"bob: *@example.com\n"
	"```\n"
	"\n"
	"Without any entry a login owns these addresses, and may send as them:\n"
	"\n"
	"- a login that is an address (`alice@example.org`) owns that address;\n"
	"- a bare login (`alice`) owns `alice@` each domain of `local_domains`;\n"
	"- and every address whose alias (in `aliases_file`, `virtual_alias_file` or the\n"
	"  `aliases` table) points to the login.\n"
	"\n"
	"The entries of `submission_senders_file` (and the `senders` table) add to these.\n"
	"Any other sender address is refused at `MAIL`.\n";

static const char ref_acl[] =
	"\n"
	"## ACLs\n"
	"\n"
	"An ACL (access control list) adds restrictions to one SMTP stage of a\n"
	"listener.  It is a named block of rules, one per line, and a listener names\n"
	"the ACL to check at each stage with `acl_connect`, `acl_helo`, `acl_mail`,\n"
	"`acl_rcpt` and `acl_data`:\n"
	"\n"
	"```\n"
	"acl mx_rcpt {\n"
	"    # comment lines are allowed\n"
	"    deny message = \"550 5.7.1 Not from this network\" client = 198.51.100.0/24\n"
	"    defer rate > 100 / 1h per client\n"
	"}\n"
	"\n"
	"listener 25 {\n"
	"    acl_rcpt = mx_rcpt\n"
	"}\n"
	"```\n"
	"\n"
	"ACLs only restrict: they run after the built-in checks (relaying to other\n"
	"domains is refused on MX listeners, submission listeners require TLS and\n"
	"authentication), and `accept` cannot lift those.  There is no expansion\n"
	"language: every rule is checked when the configuration is read.\n"
	"\n"
	"- A listener setting that names no defined ACL is an error, and so is an ACL\n"
	"  with a condition that has no meaning at the stage it is named for (the\n"
	"  error says at which stages it can be used).\n"
	"- An ACL that no listener names draws a warning.\n"
	"- One ACL may serve several listeners and stages.\n"
	"- The `acl` line must end with `{`, and `}` must stand alone on its line.\n"
	"  An ACL name is 1 to 64 letters, digits, `_`, `-` or `.`.\n"
	"\n"
	"### Rules\n"
	"\n"
	"```\n"
	"VERB [message = \"text\"] CONDITION...\n"
	"```\n"
	"\n"
	"Rules are checked in order.  A rule holds when all its conditions hold; a\n"
	"rule without conditions always holds.  The verb of the first rule that holds\n"
	"decides, except `warn`:\n"
	"\n"
	"- `accept`: the command is accepted (no further rule is checked).\n"
	"- `deny`: the command is refused with the message, by default\n"
	"  `550 5.7.1 Rejected by policy`.  A deny message must start with a `5xx`\n"
	"  reply code and a `5.x.x` enhanced status code: `\"554 5.7.1 No thanks\"`.\n"
	"- `defer`: the command is refused for now with the message, by default\n"
	"  `451 4.7.1 Try again later`; the message must start with a `4xx` code and a\n"
	"  `4.x.x` enhanced status code.\n"
	"- `warn`: the message (any text) is logged and the next rule is checked.\n"
	"\n"
	"When no rule decides, the command is accepted.  A message is written in\n"
	"double quotes (`\\\"` and `\\\\` inside stand for `\"` and `\\`), holds\n"
	"printable ASCII only, and is at most 510 characters long.\n"
	"\n"
	"### Conditions\n"
	"\n"
	"Conditions are separated by blanks.  A leading `!` negates a condition.  A\n"
	"value containing blanks may be written in double quotes; an unquoted list\n"
	"may contain blanks around its separators (`alice : bob`).  Lists are\n"
	"written as in the options above.\n"
	"\n"
	"| Condition | Holds when | Stages |\n"
	"|---|---|---|\n"
	"| `authenticated` | the client has authenticated | all |\n"
	"| `authenticated = LIST` | the client has authenticated as one of these logins (compared exactly) | all |\n"
	"| `tls` | the session is inside TLS | all |\n"
	"| `tls_version OP VERSION` | the session is inside TLS and its version compares so; OP is `=`, `<`, `<=`, `>` or `>=`, VERSION `TLSv1`, `TLSv1.1`, `TLSv1.2` or `TLSv1.3`.  Never holds outside TLS, so `!tls_version >= TLSv1.2` also holds without TLS | all |\n"
	"| `client = LIST` | the client address is one of these IPv4 or IPv6 addresses or `address/prefix` networks (an IPv4 client on an IPv6 socket is matched as IPv4) | all |\n"
	"| `sender_domain = LIST` | the domain of the envelope sender is in the list (never for the null sender) | mail, rcpt, data |\n"
	"| `recipient_domain = LIST` | the domain of the recipient being checked is in the list | rcpt |\n"
	"| `recipient_local` | the recipient is a known local user or alias | rcpt |\n"
	"| `size OP SIZE` | the message size compares so; OP is `<`, `<=`, `>` or `>=`.  At `mail` the size declared with `SIZE=` (0 when none), at `data` the received size | mail, data |\n"
	"| `header = NAME` | the message has a header field NAME (any case) | data |\n"
	"| `rate > N / TIME per KEY` | this rule was reached more than N times within TIME for the same KEY: `client` (address), `user` (login; never holds unauthenticated) or `sender` (envelope sender).  `>=` is accepted too | all; `per sender`: mail, rcpt, data |\n"
	"\n"
	"Domain lists compare without regard to case and ignore a trailing dot;\n"
	"`@local` stands for the domains of `local_domains`, and `*.example.org` for\n"
	"every subdomain of `example.org` (not the domain itself).  Client networks\n"
	"must be written with their host bits clear (`192.0.2.0/24`, not\n"
	"`192.0.2.1/24`); IPv6 entries double their colons or change the separator:\n"
	"`client = <; 2001:db8::/32 ; 192.0.2.0/24`.\n"
	"\n"
	"Conditions are checked from left to right and stop at the first that fails,\n"
	"so a `rate` condition counts only the events that reach it: in\n"
	"`deny !authenticated rate > 10 / 1m per client` authenticated clients are not\n"
	"counted.  Each rule counts on its own, in each worker process, with a\n"
	"sliding window; the counters are kept in memory, are bounded in number (the\n"
	"least recently used are dropped first) and start afresh on restart.\n"
	"\n"
	"### Examples\n"
	"\n"
	"Rate-limit the MX port without affecting relaying rules (those are built in):\n"
	"\n"
	"```\n"
	"acl mx_mail {\n"
	"    defer message = \"450 4.7.1 Too many messages, slow down\" rate > 200 / 1h per client\n"
	"}\n"
	"listener 25 {\n"
	"    acl_mail = mx_mail\n"
	"}\n"
	"```\n"
	"\n"
	"Refuse a network at connection time, except one host in it:\n"
	"\n"
	"```\n"
	"acl no_bad_net {\n"
	"    accept client = 203.0.113.7\n"
	"    deny message = \"554 5.7.1 Your network is blocked\" client = 203.0.113.0/24\n"
	"}\n"
	"listener 25 {\n"
	"    acl_connect = no_bad_net\n"
	"}\n"
	"```\n"
	"\n"
	"Require TLS 1.2 or newer for mail to one domain, limit message sizes per\n"
	"user, and log large messages:\n"
	"\n"
	"```\n"
	"acl rcpt_policy {\n"
	"    deny message = \"550 5.7.10 TLS 1.2 required for this domain\" \\\n"
	"        recipient_domain = secure.example.org !tls_version >= TLSv1.2\n"
	"}\n"
	"acl data_policy {\n"
	"    warn message = \"large message\" size > 20M\n"
	"    deny message = \"552 5.3.4 Message too big for this user\" \\\n"
	"        authenticated = intern@example.org size > 5M\n"
	"}\n"
	"listener 25 {\n"
	"    acl_rcpt = rcpt_policy\n"
	"    acl_data = data_policy\n"
	"}\n"
	"```\n"
	"\n"
	"`sluice -bP` prints every ACL in this syntax after the options.\n";

void conf_print_reference(FILE *f)
{
	fputs(ref_intro, f);
	for (size_t i = 0; i < conf_n_options; i++) {
		const struct conf_option *o = &conf_options[i];
		fprintf(f, "\n### %s\n\n", o->name);
		print_type(f, o);
		if (o->def && *o->def)
			fprintf(f, "- Default: `%s`\n", o->def);
		else if (o->def_doc)
			fprintf(f, "- Default: %s\n", o->def_doc);
		else
			fputs("- Default: empty (unset)\n", f);
		print_limits(f, o);
		fprintf(f, "\n%s\n", o->help);
	}
	fputs("\n", f);
	fputs(ref_listener, f);
	for (size_t i = 0; i < conf_n_listener_settings; i++) {
		const struct conf_listener_setting *s = &conf_listener_settings[i];
		fprintf(f, "- `%s` = %s.  %s\n", s->name, s->values, s->help);
	}
	fputs(ref_derivation, f);
	fprintf(f, "| `tls_min_version` | `%s` | `%s` |\n",
		conf_tls_version_name(CONF_MX_MIN_VERSION),
		conf_tls_version_name(CONF_SUB_MIN_VERSION));
	fprintf(f, "| `tls_ciphers` | `%s` | `%s` |\n", CONF_MX_CIPHERS, CONF_SUB_CIPHERS);
	fprintf(f, "| `tls_ciphersuites` | `%s` | `%s` |\n", CONF_CIPHERSUITES,
		CONF_CIPHERSUITES);
	fputs("| `auth` | `no` | `yes` (cannot be `no`) |\n", f);
	fputs("| TLS required | no | yes |\n", f);
	fputs("| authentication required | no | yes |\n", f);
	fputs(ref_roles, f);
	fputs(ref_auth, f);
	fputs(ref_aliases, f);
	fputs(ref_acl, f);
}
