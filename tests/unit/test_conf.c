/*
 * Configuration parser, derivation, -bP and reference tests.
 * Argument: the path of docs/configuration.md, which must equal the
 * generated reference byte for byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth.h"
#include "conf/conf.h"

static const char *doc_path;

#define CERT "tls_certificate = /etc/sluice/cert.pem\n"
/* A backend, so that submission listeners draw no warning. */
#define AUTHB "auth_backend = passwd-file\n"
#define NO_BACKEND_WARNING \
	"auth_backend is none: submission ports will refuse MAIL (530 5.7.0) as no user can authenticate"

static int load(const char *text, const char *ox, bool all, struct conf **c, struct err *e)
{
	memset(e, 0, sizeof(*e));
	return conf_load_string("t.conf", text, ox, all, c, e);
}

/* The same text with every LF turned into CRLF, which must behave alike. */
static char *crlf(const char *s)
{
	size_t n = strlen(s), k = 0;
	char *o = malloc(2 * n + 1);
	assert_non_null(o);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			o[k++] = '\r';
		o[k++] = s[i];
	}
	o[k] = '\0';
	return o;
}

static char *print_to_string(const struct conf *c, const char *name, int *rc)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	assert_non_null(f);
	int r = conf_print(f, c, name);
	if (rc)
		*rc = r;
	fclose(f);
	return out;
}

/* ---- errors ------------------------------------------------------------ */

struct err_case {
	const char *text;
	const char *ox;
	bool all;
	const char *want; /* substring of the message, with the location */
};

/* 100 bytes: with a directory around it, too long for sun_path (108). */
#define LONG100 "0123456789012345678901234567890123456789012345678901234567890123456789" \
		"012345678901234567890123456789"

static const struct err_case err_cases[] = {
	/* syntax */
	{ "foo = 1\n", NULL, false, "t.conf:1: unknown option 'foo'" },
	{ "\nrole = mx\n", NULL, false,
	  "t.conf:2: unknown option 'role' (it belongs inside a `listener PORT { ... }` block)" },
	{ "# c\n\nuser\n", NULL, false, "t.conf:3: missing '=' after 'user': expected `user = value`" },
	{ "user mail\n", NULL, false, "t.conf:1: missing '=' after 'user'" },
	{ "= x\n", NULL, false, "t.conf:1: expected `name = value`" },
	{ "user =\n", NULL, false, "t.conf:1: option 'user' needs a value" },
	{ "spool_directory =   \n", NULL, false, "t.conf:1: option 'spool_directory' needs a value" },
	{ "user = a\nuser = b\n", NULL, false, "t.conf:2: option 'user' already set on line 1" },
	{ "user = a\n\\\n\nuser = b\n", NULL, false, "t.conf:4: option 'user' already set on line 1" },
	/* numbers, sizes, times */
	{ "recipients_max = abc\n", NULL, false,
	  "t.conf:1: bad number 'abc' for recipients_max: expected a whole number, from 1 to 1000000" },
	{ "recipients_max = 12 3\n", NULL, false, "t.conf:1: bad number '12 3' for recipients_max" },
	{ "recipients_max = -1\n", NULL, false, "t.conf:1: bad number '-1' for recipients_max" },
	/* Comments are whole lines; list items are separated by ':'. */
	{ "\nrecipients_max = 20   # per message\n", NULL, false,
	  "t.conf:2: recipients_max = 20   # per message: a '#' after a value does not start a "
	  "comment" },
	{ "log_file = /t/x.log # log\n", NULL, false,
	  "t.conf:1: log_file = /t/x.log # log: a '#' after a value does not start a comment" },
	{ "daemon_smtp_ports = 25 587\n", NULL, false,
	  "(list items are separated by ':', not spaces)" },
	{ "recipients_max = 0\n", NULL, false,
	  "t.conf:1: recipients_max = 0 is out of range: must be from 1 to 1000000" },
	{ "smtp_accept_max = 0\n", NULL, false, "t.conf:1: smtp_accept_max = 0 is out of range: must be from 1 to" },
	{ "smtp_max_errors = 0\n", NULL, false, "t.conf:1: smtp_max_errors = 0 is out of range: must be from 1 to" },
	{ "smtp_line_max = 511\n", NULL, false,
	  "t.conf:1: smtp_line_max = 511 is out of range: must be from 512 to 65536" },
	{ "smtp_line_max = 65537\n", NULL, false, "smtp_line_max = 65537 is out of range" },
	{ "message_line_max = 77\n", NULL, false,
	  "t.conf:1: message_line_max = 77 is out of range: must be from 78 to 1048576" },
	{ "message_line_max = 2M\n", NULL, false, "message_line_max = 2M is out of range" },
	{ "smtp_workers = 257\n", NULL, false,
	  "t.conf:1: smtp_workers = 257 is out of range: must be from 0 to 256" },
	{ "message_size_limit = 10X\n", NULL, false,
	  "t.conf:1: bad size '10X' for message_size_limit: expected a number with an optional K, M or G suffix (e.g. 50M), from 1K to 16G" },
	{ "message_size_limit = 99999999999999999999\n", NULL, false,
	  "t.conf:1: bad size '99999999999999999999' for message_size_limit" },
	{ "message_size_limit = 99999999999G\n", NULL, false,
	  "t.conf:1: bad size '99999999999G' for message_size_limit" },
	{ "message_size_limit = 1023\n", NULL, false,
	  "t.conf:1: message_size_limit = 1023 is out of range: must be from 1K to 16G" },
	{ "message_header_max = 512\n", NULL, false,
	  "t.conf:1: message_header_max = 512 is out of range: must be from 1K to 64M" },
	{ "smtp_receive_timeout = 5x\n", NULL, false,
	  "t.conf:1: bad time '5x' for smtp_receive_timeout: expected a number with s, m, h or d suffixes" },
	{ "smtp_receive_timeout = 1h5\n", NULL, false, "t.conf:1: bad time '1h5' for smtp_receive_timeout" },
	{ "smtp_receive_timeout = m\n", NULL, false, "t.conf:1: bad time 'm' for smtp_receive_timeout" },
	{ "smtp_receive_timeout = 0\n", NULL, false,
	  "t.conf:1: smtp_receive_timeout = 0 is out of range: must be from 1s to 1d" },
	{ "shutdown_timeout = 2d\n", NULL, false,
	  "t.conf:1: shutdown_timeout = 2d is out of range: must be from 0s to 1d" },
	/* strings, paths, names */
	{ "spool_directory = spool\n", NULL, false,
	  "t.conf:1: spool_directory = spool: expected an absolute path (starting with /)" },
	{ "tls_certificate = cert.pem\n", NULL, false, "t.conf:1: tls_certificate = cert.pem: expected an absolute path" },
	{ "log_file = mail.log\n", NULL, false,
	  "t.conf:1: log_file = mail.log: expected empty (standard error), syslog or an absolute path" },
	{ "primary_hostname = bad_name\n", NULL, false,
	  "t.conf:1: bad host name 'bad_name' for primary_hostname: expected a domain name" },
	{ "primary_hostname = a..b\n", NULL, false, "t.conf:1: bad host name 'a..b'" },
	{ "local_domains = exa mple.com\n", NULL, false,
	  "t.conf:1: bad domain 'exa mple.com' in local_domains: expected a domain name" },
	{ "local_domains = ok.example : -x.example\n", NULL, false, "t.conf:1: bad domain '-x.example' in local_domains" },
	/* ports */
	{ "daemon_smtp_ports = 25 : 0\n", NULL, false,
	  "t.conf:1: bad port '0' in daemon_smtp_ports: expected a number from 1 to 65535 or a service name" },
	{ "daemon_smtp_ports = 65536\n", NULL, false, "t.conf:1: bad port '65536' in daemon_smtp_ports" },
	{ "daemon_smtp_ports = 25x\n", NULL, false, "t.conf:1: bad port '25x' in daemon_smtp_ports" },
	{ "daemon_smtp_ports = smtp : pop3\n", NULL, false,
	  "t.conf:1: unknown service name 'pop3' in daemon_smtp_ports: expected a number from 1 to 65535 or a service name (smtp, submissions, smtps, ssmtp, submission)" },
	{ "daemon_smtp_ports = 25 : smtp\n", NULL, false,
	  "t.conf:1: port 25 is listed twice in daemon_smtp_ports" },
	{ "daemon_smtp_ports = :\n", NULL, false, "t.conf:1: daemon_smtp_ports lists no port" },
	{ "tls_on_connect_ports = imaps\n", NULL, false,
	  "t.conf:1: unknown service name 'imaps' in tls_on_connect_ports" },
	/* addresses */
	{ "local_interfaces = 127.0.0.1 : ::1\n", NULL, false,
	  "t.conf:1: bad address ':1' in local_interfaces: expected an IPv4 or IPv6 address; in a list write IPv6 colons doubled (\"::::1\")" },
	{ "local_interfaces = 300.1.1.1\n", NULL, false, "t.conf:1: bad address '300.1.1.1' in local_interfaces" },
	{ "local_interfaces = localhost\n", NULL, false, "t.conf:1: bad address 'localhost' in local_interfaces" },
	{ "local_interfaces = :\n", NULL, false, "t.conf:1: local_interfaces lists no address" },
	{ "local_interfaces = <; ::1 ; 10.0.0.1 ; 0::1\n", NULL, false,
	  "t.conf:1: address '0::1' is listed twice in local_interfaces" },
	/* listener blocks */
	{ "listener 25 {\nfoo = 1\n}\n", NULL, false,
	  "t.conf:2: unknown listener setting 'foo': expected role, tls, tls_min_version, tls_ciphers, tls_ciphersuites, auth, acl_connect, acl_helo, acl_mail, acl_rcpt or acl_data" },
	{ "listener 25 {\nuser = x\n}\n", NULL, false,
	  "t.conf:2: unknown listener setting 'user': expected role, tls, tls_min_version, tls_ciphers, tls_ciphersuites, auth, acl_connect, acl_helo, acl_mail, acl_rcpt or acl_data (global options go outside listener blocks)" },
	{ "listener 25 {\nauth_backend = sqlite\n}\n", NULL, false,
	  "t.conf:2: unknown listener setting 'auth_backend': expected role, tls, tls_min_version, tls_ciphers, tls_ciphersuites, auth, acl_connect, acl_helo, acl_mail, acl_rcpt or acl_data (global options go outside listener blocks)" },
	{ "listener 25 {\nauth = maybe\n}\n", NULL, false,
	  "t.conf:2: bad value 'maybe' for auth: expected `yes` or `no`" },
	{ "listener 25 {\nauth =\n}\n", NULL, false,
	  "t.conf:2: 'auth' needs a value: expected `yes` or `no`" },
	{ "listener 25 {\nauth = yes\nauth = no\n}\n", NULL, false,
	  "t.conf:3: 'auth' already set on line 2" },
	{ "auth = yes\n", NULL, false,
	  "t.conf:1: unknown option 'auth' (it belongs inside a `listener PORT { ... }` block)" },
	{ "user = x\nlistener 25 {\nrole = mx\n", NULL, false,
	  "t.conf:2: listener 25 block is not closed: '}' missing before the end of the file" },
	{ "user = x\n}\n", NULL, false, "t.conf:2: '}' without a listener or acl block" },
	{ "listener 25 {\n} x\n", NULL, false, "t.conf:2: '}' must be alone on its line" },
	{ "listener 25 {\nlistener 587 {\n}\n}\n", NULL, false,
	  "t.conf:2: listener block inside the listener 25 block opened on line 1: close that one with '}' first" },
	{ "listener 25\n{\n}\n", NULL, false,
	  "t.conf:1: expected `listener PORT {` with the '{' at the end of the same line" },
	{ "listener 25 { role = mx }\n", NULL, false, "t.conf:1: expected `listener PORT {`" },
	{ "listener {\n}\n", NULL, false, "t.conf:1: expected `listener PORT {`" },
	{ "listener 0 {\n}\n", NULL, false, "t.conf:1: bad port '0' in listener: expected a number from 1 to 65535" },
	{ "listener 70000 {\n}\n", NULL, false, "t.conf:1: bad port '70000' in listener" },
	{ "listener lmtp {\n}\n", NULL, false, "t.conf:1: unknown service name 'lmtp' in listener" },
	{ "listener 25 {\n}\nlistener smtp {\n}\n", NULL, false, "t.conf:3: listener 25 already defined on line 1" },
	{ "listener 25 {\nrole = relay\n}\n", NULL, false,
	  "t.conf:2: bad value 'relay' for role: expected `mx` or `submission`" },
	{ "listener 25 {\ntls = ssl\n}\n", NULL, false,
	  "t.conf:2: bad value 'ssl' for tls: expected `starttls`, `on_connect` or `none`" },
	{ "listener 25 {\ntls_min_version = SSLv3\n}\n", NULL, false,
	  "t.conf:2: bad value 'SSLv3' for tls_min_version: expected `TLSv1`, `TLSv1.1`, `TLSv1.2` or `TLSv1.3`" },
	{ "listener 25 {\nrole = mx\nrole = mx\n}\n", NULL, false, "t.conf:3: 'role' already set on line 2" },
	{ "listener 25 {\ntls_ciphers =\n}\n", NULL, false,
	  "t.conf:2: 'tls_ciphers' needs a value: expected an OpenSSL cipher list" },
	/* derivation */
	{ CERT "daemon_smtp_ports = 25 : 2525\n", NULL, false,
	  "t.conf:2: port 2525 has no role; add `listener 2525 { role = mx }` or `role = submission`" },
	{ CERT, "2525", false,
	  "t.conf: port 2525 has no role; add `listener 2525 { role = mx }` or `role = submission`" },
	{ CERT, "25 : 0", false, "t.conf: bad port '0' in -oX" },
	{ CERT, "smtp : nope", false, "t.conf: unknown service name 'nope' in -oX" },
	{ CERT, "25 : 25", false, "t.conf: port 25 is listed twice in -oX" },
	{ CERT, " : ", false, "t.conf: -oX lists no port" },
	{ CERT "tls_on_connect_ports = 25\nlistener 25 {\ntls = starttls\n}\n", NULL, false,
	  "t.conf:4: listener 25 says tls = starttls but tls_on_connect_ports lists 25: remove one of them" },
	{ CERT "tls_on_connect_ports = 25\nlistener 25 {\ntls = none\n}\n", NULL, false,
	  "t.conf:4: listener 25 says tls = none but tls_on_connect_ports lists 25" },
	{ CERT "listener 587 {\ntls = none\n}\n", NULL, false,
	  "t.conf:3: listener 587 is a submission port and must offer TLS: tls = none is only allowed with role = mx" },
	{ CERT "daemon_smtp_ports = 2587\nlistener 2587 {\nrole = submission\ntls = none\n}\n", NULL, false,
	  "t.conf:5: listener 2587 is a submission port and must offer TLS" },
	{ "", NULL, false,
	  "t.conf: port 465 needs TLS (submission requires it) but tls_certificate is not set" },
	{ "daemon_smtp_ports = 25 : 587\n", NULL, false,
	  "t.conf:1: port 587 needs TLS (submission requires it) but tls_certificate is not set" },
	{ "daemon_smtp_ports = 25 : 2526\nlistener 2526 {\nrole = mx\ntls = on_connect\n}\n", NULL, false,
	  "t.conf:2: port 2526 needs TLS (tls on connect) but tls_certificate is not set" },
	{ "daemon_smtp_ports = 25\n", NULL, true,
	  "t.conf:1: port 25 needs TLS (tls on connect) but tls_certificate is not set" },
	{ "daemon_smtp_ports = 25\ntls_on_connect_ports = 25\n", NULL, false,
	  "t.conf:1: port 25 needs TLS (tls on connect)" },
	{ "", "25", true, "t.conf: port 25 needs TLS (tls on connect)" },
	/* authentication */
	{ "auth_backend = ldap\n", NULL, false,
	  "t.conf:1: bad value 'ldap' for auth_backend: expected none, passwd-file, sqlite or dovecot" },
	{ "auth_backend = passwd\n", NULL, false, "t.conf:1: bad value 'passwd' for auth_backend" },
	{ "auth_backend =\n", NULL, false, "t.conf:1: option 'auth_backend' needs a value" },
	{ "auth_passwd_file = passwd\n", NULL, false,
	  "t.conf:1: auth_passwd_file = passwd: expected an absolute path (starting with /)" },
	{ "auth_passwd_file =\n", NULL, false, "t.conf:1: option 'auth_passwd_file' needs a value" },
	{ "auth_sqlite_database = users.db\n", NULL, false,
	  "t.conf:1: auth_sqlite_database = users.db: expected an absolute path (starting with /)" },
	{ "auth_dovecot_socket = run/auth\n", NULL, false,
	  "t.conf:1: auth_dovecot_socket = run/auth: expected an absolute path (starting with /)" },
	{ "auth_mechanisms = PLAIN : CRAM-MD5\n", NULL, false,
	  "t.conf:1: unknown SASL mechanism 'CRAM-MD5' in auth_mechanisms: expected PLAIN, LOGIN or SCRAM-SHA-256" },
	{ "auth_mechanisms = SCRAM-SHA-1\n", NULL, false,
	  "t.conf:1: unknown SASL mechanism 'SCRAM-SHA-1' in auth_mechanisms" },
	{ "auth_mechanisms = PLAIN LOGIN\n", NULL, false,
	  "t.conf:1: unknown SASL mechanism 'PLAIN LOGIN' in auth_mechanisms" },
	{ "auth_mechanisms = :\n", NULL, false,
	  "t.conf:1: auth_mechanisms lists no mechanism: expected a list of PLAIN, LOGIN or SCRAM-SHA-256" },
	{ "auth_mechanisms =\n", NULL, false, "t.conf:1: option 'auth_mechanisms' needs a value" },
	{ "auth_mechanisms = plain : LOGIN : PLAIN\n", NULL, false,
	  "t.conf:1: SASL mechanism PLAIN is listed twice in auth_mechanisms" },
	{ "auth_fail_delay_after = 0\n", NULL, false,
	  "t.conf:1: auth_fail_delay_after = 0 is out of range: must be from 1 to 1000000" },
	{ "auth_fail_block_after = 1\n", NULL, false,
	  "t.conf:1: auth_fail_block_after = 1 is out of range: must be from 2 to 1000000" },
	{ "auth_fail_block_after = ten\n", NULL, false,
	  "t.conf:1: bad number 'ten' for auth_fail_block_after: expected a whole number" },
	{ "auth_fail_block_after = 3\n", NULL, false,
	  "t.conf:1: auth_fail_block_after = 3 must be greater than auth_fail_delay_after = 3 (answers are delayed before a client is refused): raise auth_fail_block_after or lower auth_fail_delay_after" },
	{ "user = x\nauth_fail_delay_after = 10\n", NULL, false,
	  "t.conf:2: auth_fail_block_after = 10 must be greater than auth_fail_delay_after = 10" },
	{ "auth_fail_block_after = 4\nauth_fail_delay_after = 5\n", NULL, false,
	  "t.conf:1: auth_fail_block_after = 4 must be greater than auth_fail_delay_after = 5" },
	{ "auth_fail_window = 0\n", NULL, false,
	  "t.conf:1: auth_fail_window = 0 is out of range: must be from 1s to 7d" },
	{ "auth_fail_window = 8d\n", NULL, false, "t.conf:1: auth_fail_window = 8d is out of range" },
	{ "auth_fail_window = 500ms\n", NULL, false,
	  "t.conf:1: bad time '500ms' for auth_fail_window: expected a number with s, m, h or d suffixes" },
	{ "auth_fail_block_time = 5x\n", NULL, false, "t.conf:1: bad time '5x' for auth_fail_block_time" },
	{ "auth_fail_block_time = 0s\n", NULL, false,
	  "t.conf:1: auth_fail_block_time = 0s is out of range: must be from 1s to 7d" },
	{ "auth_fail_max_delay = 61s\n", NULL, false,
	  "t.conf:1: auth_fail_max_delay = 61s is out of range: must be from 0s to 1m" },
	{ "auth_fail_max_delay = 5000\n", NULL, false,
	  "t.conf:1: auth_fail_max_delay = 5000 is out of range: must be from 0s to 1m" },
	{ "auth_fail_max_delay = 1x\n", NULL, false,
	  "t.conf:1: bad time '1x' for auth_fail_max_delay: expected a number with ms, s, m, h or d suffixes (e.g. 500ms, 5s, 1s500ms; a plain number is seconds), from 0s to 1m" },
	{ "auth_fail_max_delay = 5ms5\n", NULL, false, "t.conf:1: bad time '5ms5' for auth_fail_max_delay" },
	{ "auth_fail_max_delay = ms\n", NULL, false, "t.conf:1: bad time 'ms' for auth_fail_max_delay" },
	{ "auth_fail_max_delay = 5mss\n", NULL, false, "t.conf:1: bad time '5mss' for auth_fail_max_delay" },
	{ "auth_fail_max_delay = 99999999999999999d\n", NULL, false,
	  "t.conf:1: bad time '99999999999999999d' for auth_fail_max_delay" },
	{ "auth_fail_max_delay = 99999999999999999999\n", NULL, false,
	  "t.conf:1: bad time '99999999999999999999' for auth_fail_max_delay" },
	/* aliases, senders, switches */
	{ "aliases_file = aliases\n", NULL, false,
	  "t.conf:1: aliases_file = aliases: expected an absolute path (starting with /)" },
	{ "virtual_alias_file = ./virtual\n", NULL, false,
	  "t.conf:1: virtual_alias_file = ./virtual: expected an absolute path (starting with /)" },
	{ "submission_senders_file = senders\n", NULL, false,
	  "t.conf:1: submission_senders_file = senders: expected an absolute path (starting with /)" },
	{ "submission_add_headers = maybe\n", NULL, false,
	  "t.conf:1: bad value 'maybe' for submission_add_headers: expected yes or no (or true or false)" },
	{ "submission_add_headers =\n", NULL, false, "t.conf:1: option 'submission_add_headers' needs a value" },
	{ "received_hide_client_ip = 1\n", NULL, false,
	  "t.conf:1: bad value '1' for received_hide_client_ip: expected yes or no" },
	{ "recipient_verify = on\n", NULL, false,
	  "t.conf:1: bad value 'on' for recipient_verify: expected yes or no" },
	{ "recipient_verify = yes no\n", NULL, false, "t.conf:1: bad value 'yes no' for recipient_verify" },
	/* listener auth */
	{ CERT "listener 587 {\nauth = no\n}\n", NULL, false,
	  "t.conf:3: listener 587 is a submission port and must offer AUTH: auth = no is only allowed with role = mx (a submission port without AUTH cannot accept any mail)" },
	{ CERT "daemon_smtp_ports = 2587\nlistener 2587 {\nauth = false\nrole = submission\n}\n", NULL, false,
	  "t.conf:4: listener 2587 is a submission port and must offer AUTH" },
	{ CERT "listener submissions {\nauth = No\n}\n", NULL, false,
	  "t.conf:3: listener 465 is a submission port and must offer AUTH" },
	/* ACL blocks and their use by listeners */
	{ CERT AUTHB "listener 25 {\nacl_rcpt = nope\n}\n", NULL, false,
	  "t.conf:4: unknown ACL 'nope' in acl_rcpt: no `acl nope { ... }` block is defined" },
	{ CERT AUTHB "acl Nope {\n}\nlistener 25 {\nacl_rcpt = nope\n}\n", NULL, false,
	  "t.conf:6: unknown ACL 'nope' in acl_rcpt" },
	{ CERT AUTHB "listener 25 {\nacl_data = \n}\n", NULL, false,
	  "t.conf:4: 'acl_data' needs a value: expected the name of an `acl` block" },
	{ CERT AUTHB "listener 25 {\nacl_mail = a\nacl_mail = a\n}\n", NULL, false,
	  "t.conf:5: 'acl_mail' already set on line 4" },
	{ CERT AUTHB "acl a {\n  deny size > 1M\n}\nlistener 25 {\nacl_rcpt = a\n}\n", NULL, false,
	  "t.conf:7: acl_rcpt = a: ACL a (line 4) uses size, which has no meaning at the rcpt "
	  "stage (only at: mail, data)" },
	{ CERT AUTHB "listener 587 {\nacl_connect = a\n}\nacl a {\n  accept authenticated\n"
	  "  deny recipient_domain = x.example\n}\n", NULL, false,
	  "t.conf:4: acl_connect = a: ACL a (line 8) uses recipient_domain, which has no meaning "
	  "at the connect stage (only at: rcpt)" },
	{ CERT AUTHB "acl a {\ndeny header = X-Foo\n}\nlistener 25 {\nacl_mail = a\n}\n", NULL, false,
	  "acl_mail = a: ACL a (line 4) uses header, which has no meaning at the mail stage (only at: data)" },
	{ CERT AUTHB "acl a {\ndefer rate > 1 / 1h per sender\n}\nlistener 25 {\nacl_helo = a\n}\n", NULL, false,
	  "acl_helo = a: ACL a (line 4) uses rate per sender, which has no meaning at the helo stage" },
	{ "acl a {\n# fine\n  deny client = 10.0.0.1/8\n}\n", NULL, false,
	  "t.conf:3: '10.0.0.1/8' in client has bits set after the /8 prefix: write the network address (in acl a)" },
	{ "acl a {\n  allow\n}\n", NULL, false,
	  "t.conf:2: unknown ACL verb 'allow': expected accept, deny, defer or warn (in acl a)" },
	{ "acl a {\n  deny message = \"451 4.7.1 x\"\n}\n", NULL, false,
	  "t.conf:2: a deny message must start with a 5xx reply code" },
	{ "acl a {\n  deny message = \"550 5.7.1 \\\n   x\n}\n", NULL, false,
	  "t.conf:2: unterminated quoted string in message" },
	{ "\nacl a {\n  deny\n", NULL, false,
	  "t.conf:2: acl a block is not closed: '}' missing before the end of the file" },
	{ "acl a {\n}\nacl a {\n}\n", NULL, false, "t.conf:3: acl a already defined on line 1" },
	{ "acl a/b {\n}\n", NULL, false,
	  "t.conf:1: bad ACL name 'a/b': expected 1 to 64 letters, digits, '_', '-' or '.'" },
	{ "acl a\n", NULL, false, "t.conf:1: expected `acl NAME {` with the '{' at the end of the same line" },
	{ "acl a { deny\n", NULL, false, "t.conf:1: expected `acl NAME {`" },
	{ "acl {\n", NULL, false, "t.conf:1: expected `acl NAME {`" },
	{ "listener 25 {\nacl a {\n", NULL, false,
	  "t.conf:2: acl block inside the listener 25 block opened on line 1" },
	{ "acl a {\nlistener 25 {\n", NULL, false,
	  "t.conf:2: block inside the acl a block opened on line 1: close that one with '}' first" },
	{ "acl a {\nacl b {\n", NULL, false, "t.conf:2: block inside the acl a block" },
	{ "acl a {\ndeny\n} x\n", NULL, false, "t.conf:3: '}' must be alone on its line" },
	{ "acl_rcpt = a\n", NULL, false,
	  "t.conf:1: unknown option 'acl_rcpt' (it belongs inside a `listener PORT { ... }` block)" },
	/* delivery values the runner would trip over on every message */
	{ "\nmaildir_path = /x/mail/%d/%x\n", NULL, false,
	  "t.conf:2: maildir_path = /x/mail/%d/%x: unknown escape '%x': expected %u (the "
	  "address), %n (its local part), %d (its domain) or %% (a percent sign)" },
	{ "maildir_path = /x/mail/%n%\n", NULL, false,
	  "t.conf:1: maildir_path = /x/mail/%n% ends with a lone '%': write %% for a percent sign" },
	{ "maildir_path = /x/%%%\n", NULL, false, "t.conf:1: maildir_path = /x/%%% ends with a lone '%'" },
	{ "maildir_path = /x/%U\n", NULL, false, "t.conf:1: maildir_path = /x/%U: unknown escape '%U'" },
	{ "maildir_path = /x/% n\n", NULL, false, "t.conf:1: maildir_path = /x/% n: unknown escape '%\\x20'" },
	{ "maildir_path = relative/%n\n", NULL, false,
	  "t.conf:1: maildir_path = relative/%n: expected an absolute path (starting with /), such "
	  "as /var/vmail/%d/%n" },
	{ "maildir_path = %d/%n\n", NULL, false, "t.conf:1: maildir_path = %d/%n: expected an absolute path" },
	{ "# x\nsmarthost = [::1:587\n", NULL, false,
	  "t.conf:2: smarthost = [::1:587: '[' without a closing ']': expected [address] or [address]:port" },
	{ "smarthost = 2001:db8::1\n", NULL, false,
	  "t.conf:1: smarthost = 2001:db8::1: an IPv6 address must be written in brackets" },
	{ "smarthost = ::1\n", NULL, false, "t.conf:1: smarthost = ::1: an IPv6 address must be written in brackets" },
	{ "smarthost = [::1]587\n", NULL, false,
	  "t.conf:1: smarthost = [::1]587: text after ']': expected nothing or :port" },
	{ "smarthost = []:25\n", NULL, false, "t.conf:1: smarthost = []:25: no host between the brackets" },
	{ "smarthost = :25\n", NULL, false, "t.conf:1: smarthost = :25: no host before the port" },
	{ "smarthost = [relay.example.net]:25\n", NULL, false,
	  "t.conf:1: smarthost = [relay.example.net]:25: the text in brackets is not an IP address" },
	{ "smarthost = relay.example.net:0\n", NULL, false,
	  "t.conf:1: smarthost = relay.example.net:0: bad port: expected a number from 1 to 65535" },
	{ "smarthost = relay.example.net:65536\n", NULL, false, "t.conf:1: smarthost = relay.example.net:65536: bad port" },
	{ "smarthost = relay.example.net:\n", NULL, false, "t.conf:1: smarthost = relay.example.net:: bad port" },
	{ "smarthost = relay.example.net:smtp\n", NULL, false, "t.conf:1: smarthost = relay.example.net:smtp: bad port" },
	{ "smarthost = relay.example.net:+25\n", NULL, false, "t.conf:1: smarthost = relay.example.net:+25: bad port" },
	{ "smarthost = relay.example.net:0000025\n", NULL, false, "t.conf:1: smarthost = relay.example.net:0000025: bad port" },
	{ "smarthost = relay.example.net 587\n", NULL, false,
	  "t.conf:1: smarthost = relay.example.net 587: bad host name: expected a domain name" },
	{ "smarthost = relay_1.example.net\n", NULL, false, "t.conf:1: smarthost = relay_1.example.net: bad host name" },
	{ "smarthost = 1.2.3.999\n", NULL, false,
	  "t.conf:1: smarthost = 1.2.3.999: bad IPv4 address: expected four numbers from 0 to 255" },
	{ "smarthost = [1.2.3.999]\n", NULL, false, "t.conf:1: smarthost = [1.2.3.999]: the text in brackets is not an IP address" },
	{ "lmtp_socket = 127.0.0.1:99999\n", NULL, false,
	  "t.conf:1: lmtp_socket = 127.0.0.1:99999: bad port: expected a number from 1 to 65535" },
	{ "lmtp_socket = relative\n", NULL, false,
	  "t.conf:1: lmtp_socket = relative: expected the absolute path of a unix socket (such as "
	  "/run/dovecot/lmtp) or address:port (such as 127.0.0.1:24 or [::1]:24)" },
	{ "lmtp_socket = 127.0.0.1\n", NULL, false, "t.conf:1: lmtp_socket = 127.0.0.1: expected the absolute path" },
	{ "lmtp_socket = [::1]\n", NULL, false,
	  "t.conf:1: lmtp_socket = [::1]: no port: expected host:port or [address]:port" },
	{ "lmtp_socket = ::1:24\n", NULL, false, "t.conf:1: lmtp_socket = ::1:24: an IPv6 address must be written in brackets" },
	{ "lmtp_socket = localhost:24\n", NULL, false,
	  "t.conf:1: lmtp_socket = localhost:24: the LMTP server is not looked up by name: expected "
	  "an IP address and port" },
	{ "lmtp_socket = /run/" LONG100 "/lmtp\n", NULL, false,
	  "t.conf:1: lmtp_socket = /run/" },
	{ "lmtp_socket = /run/" LONG100 "/lmtp\n", NULL, false,
	  "path too long for a unix socket: expected at most 107 bytes" },
};

static void check_error(const char *text, const char *ox, bool all, const char *want)
{
	struct conf *c = (struct conf *)1;
	struct err e;
	int r = load(text, ox, all, &c, &e);
	if (r == 0 || !strstr(e.msg, want))
		fail_msg("config [%s] ox [%s]: got %d [%s], want [%s]", text, ox ? ox : "", r,
			 e.msg, want);
	assert_null(c);
}

static void test_errors(void **state)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		const struct err_case *t = &err_cases[i];
		check_error(t->text, t->ox, t->all, t->want);
		char *t2 = crlf(t->text);
		check_error(t2, t->ox, t->all, t->want);
		free(t2);
	}
}

static void test_long_lines(void **state)
{
	/* One physical line over the limit. */
	size_t n = 70000;
	char *s = malloc(n + 32);
	assert_non_null(s);
	strcpy(s, "user = x\nuser = ");
	memset(s + 16, 'a', n);
	s[16 + n] = '\0';
	check_error(s, NULL, false, "t.conf:2: line too long (more than 65536 bytes)");
	/* Two lines each within the limit, over it once joined. */
	memset(s + 16, 'b', n);
	s[16 + 40000] = '\\';
	s[16 + 40001] = '\n';
	s[16 + n] = '\0';
	check_error(s, NULL, false, "t.conf:2: line too long (more than 65536 bytes)");
	free(s);
}

static char *write_tmp(const void *data, size_t n)
{
	char *path = strdup("/tmp/test_conf_XXXXXX");
	assert_non_null(path);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
	return path;
}

static void test_load_file(void **state)
{
	static const char good[] = CERT "user = mailer\n";
	char *path = write_tmp(good, sizeof(good) - 1);
	struct conf *c = NULL;
	struct err e;
	assert_int_equal(conf_load(path, NULL, false, &c, &e), 0);
	assert_string_equal(c->user, "mailer");
	assert_string_equal(c->path, path);
	conf_free(c);
	unlink(path);
	free(path);

	static const char nul[] = "user = a\nspool_directory = /x\0y\n";
	path = write_tmp(nul, sizeof(nul) - 1);
	assert_int_equal(conf_load(path, NULL, false, &c, &e), -1);
	assert_null(c);
	char want[256];
	snprintf(want, sizeof(want), "%s:2: NUL byte in the file", path);
	assert_string_equal(e.msg, want);
	unlink(path);

	/* A missing file is an error naming it. */
	assert_int_equal(conf_load(path, NULL, false, &c, &e), -1);
	assert_non_null(strstr(e.msg, path));
	free(path);
}

/* ---- values -------------------------------------------------------------- */

struct val_case {
	const char *text;
	const char *name;
	const char *want; /* -bP line */
};

static const struct val_case val_cases[] = {
	{ "", "message_size_limit", "message_size_limit = 50M\n" },
	{ "message_size_limit = 10m", "message_size_limit", "message_size_limit = 10M\n" },
	{ "message_size_limit = 2048K", "message_size_limit", "message_size_limit = 2M\n" },
	{ "message_size_limit = 1536", "message_size_limit", "message_size_limit = 1536\n" },
	{ "message_size_limit = 1g", "message_size_limit", "message_size_limit = 1G\n" },
	{ "message_header_max = 64K", "message_header_max", "message_header_max = 64K\n" },
	{ "smtp_receive_timeout = 90", "smtp_receive_timeout", "smtp_receive_timeout = 1m30s\n" },
	{ "smtp_receive_timeout = 1h30m", "smtp_receive_timeout", "smtp_receive_timeout = 1h30m\n" },
	{ "smtp_receive_timeout = 1d", "smtp_receive_timeout", "smtp_receive_timeout = 1d\n" },
	{ "smtp_receive_timeout = 30s", "smtp_receive_timeout", "smtp_receive_timeout = 30s\n" },
	{ "shutdown_timeout = 0", "shutdown_timeout", "shutdown_timeout = 0s\n" },
	{ "recipients_max = 1K", "recipients_max", "recipients_max = 1024\n" },
	{ "recipients_max = 100", "recipients_max", "recipients_max = 100\n" },
	{ "smtp_line_max = 512", "smtp_line_max", "smtp_line_max = 512\n" },
	{ "smtp_line_max = 64K", "smtp_line_max", "smtp_line_max = 65536\n" },
	{ "message_line_max = 1M", "message_line_max", "message_line_max = 1048576\n" },
	{ "smtp_workers = 256", "smtp_workers", "smtp_workers = 256\n" },
	{ "smtp_accept_max = 1", "smtp_accept_max", "smtp_accept_max = 1\n" },
	{ "smtp_max_errors = 3", "smtp_max_errors", "smtp_max_errors = 3\n" },
	{ "", "local_interfaces", "local_interfaces = <; 0.0.0.0 ; ::\n" },
	{ "local_interfaces = 127.0.0.1 : ::::1", "local_interfaces", "local_interfaces = <; 127.0.0.1 ; ::1\n" },
	{ "local_interfaces = 127.0.0.1", "local_interfaces", "local_interfaces = 127.0.0.1\n" },
	{ "local_interfaces = <; ::1 ; 10.0.0.1", "local_interfaces", "local_interfaces = <; ::1 ; 10.0.0.1\n" },
	{ "primary_hostname = Mail.Example.COM.\nlocal_domains = @ : Example.org.", "local_domains",
	  "local_domains = mail.example.com : example.org\n" },
	{ "primary_hostname = Mail.Example.COM.", "primary_hostname", "primary_hostname = mail.example.com\n" },
	{ "local_domains = @\nprimary_hostname = mx.example", "local_domains", "local_domains = mx.example\n" },
	{ "local_domains =", "local_domains", "local_domains =\n" },
	{ "", "daemon_smtp_ports", "daemon_smtp_ports = 25 : 465 : 587\n" },
	{ "daemon_smtp_ports = submission : 25", "daemon_smtp_ports", "daemon_smtp_ports = 587 : 25\n" },
	{ "daemon_smtp_ports = smtps", "daemon_smtp_ports", "daemon_smtp_ports = 465\n" },
	{ "daemon_smtp_ports = SSMTP", "daemon_smtp_ports", "daemon_smtp_ports = 465\n" },
	{ "", "tls_on_connect_ports", "tls_on_connect_ports =\n" },
	{ "tls_on_connect_ports = 587", "tls_on_connect_ports", "tls_on_connect_ports = 587\n" },
	{ "", "log_file", "log_file =\n" },
	{ "log_file = syslog", "log_file", "log_file = syslog\n" },
	{ "log_file = /var/log/sluice.log", "log_file", "log_file = /var/log/sluice.log\n" },
	{ "", "tls_privatekey", "tls_privatekey = /etc/sluice/cert.pem\n" },
	{ "tls_privatekey = /k.pem", "tls_privatekey", "tls_privatekey = /k.pem\n" },
	{ "", "spool_directory", "spool_directory = /var/spool/sluice\n" },
	{ "", "user", "user = sluice\n" },
	{ "", "pid_file", "pid_file = /run/sluice.pid\n" },
	/* authentication */
	{ "", "auth_backend", "auth_backend = none\n" },
	{ "auth_backend = passwd-file", "auth_backend", "auth_backend = passwd-file\n" },
	{ "auth_backend = SQLite", "auth_backend", "auth_backend = sqlite\n" },
	{ "auth_backend = DOVECOT", "auth_backend", "auth_backend = dovecot\n" },
	{ "auth_backend = none", "auth_backend", "auth_backend = none\n" },
	{ "", "auth_passwd_file", "auth_passwd_file = /etc/sluice/passwd\n" },
	{ "auth_passwd_file = /etc/dovecot/users", "auth_passwd_file", "auth_passwd_file = /etc/dovecot/users\n" },
	{ "", "auth_sqlite_database", "auth_sqlite_database = /var/lib/sluice/users.db\n" },
	{ "", "auth_dovecot_socket", "auth_dovecot_socket = /run/dovecot/auth-client\n" },
	{ "auth_dovecot_socket = /var/spool/sluice/auth", "auth_dovecot_socket",
	  "auth_dovecot_socket = /var/spool/sluice/auth\n" },
	{ "", "auth_mechanisms", "auth_mechanisms = PLAIN : LOGIN\n" },
	{ "auth_mechanisms = login", "auth_mechanisms", "auth_mechanisms = LOGIN\n" },
	{ "auth_mechanisms = Scram-Sha-256 : plain", "auth_mechanisms", "auth_mechanisms = PLAIN : SCRAM-SHA-256\n" },
	{ "auth_mechanisms = <; PLAIN ; LOGIN", "auth_mechanisms", "auth_mechanisms = PLAIN : LOGIN\n" },
	{ "auth_mechanisms = SCRAM-SHA-256 :", "auth_mechanisms", "auth_mechanisms = SCRAM-SHA-256\n" },
	{ "", "auth_fail_delay_after", "auth_fail_delay_after = 3\n" },
	{ "", "auth_fail_block_after", "auth_fail_block_after = 10\n" },
	{ "auth_fail_delay_after = 1\nauth_fail_block_after = 2", "auth_fail_block_after",
	  "auth_fail_block_after = 2\n" },
	{ "auth_fail_delay_after = 50\nauth_fail_block_after = 1K", "auth_fail_delay_after",
	  "auth_fail_delay_after = 50\n" },
	{ "", "auth_fail_window", "auth_fail_window = 15m\n" },
	{ "auth_fail_window = 7d", "auth_fail_window", "auth_fail_window = 7d\n" },
	{ "auth_fail_window = 3600", "auth_fail_window", "auth_fail_window = 1h\n" },
	{ "", "auth_fail_block_time", "auth_fail_block_time = 15m\n" },
	{ "auth_fail_block_time = 1h30m", "auth_fail_block_time", "auth_fail_block_time = 1h30m\n" },
	{ "", "auth_fail_max_delay", "auth_fail_max_delay = 5s\n" },
	{ "auth_fail_max_delay = 500ms", "auth_fail_max_delay", "auth_fail_max_delay = 500ms\n" },
	{ "auth_fail_max_delay = 1500ms", "auth_fail_max_delay", "auth_fail_max_delay = 1s500ms\n" },
	{ "auth_fail_max_delay = 1s500ms", "auth_fail_max_delay", "auth_fail_max_delay = 1s500ms\n" },
	{ "auth_fail_max_delay = 59s999ms", "auth_fail_max_delay", "auth_fail_max_delay = 59s999ms\n" },
	{ "auth_fail_max_delay = 1m", "auth_fail_max_delay", "auth_fail_max_delay = 1m\n" },
	{ "auth_fail_max_delay = 60000ms", "auth_fail_max_delay", "auth_fail_max_delay = 1m\n" },
	{ "auth_fail_max_delay = 2", "auth_fail_max_delay", "auth_fail_max_delay = 2s\n" },
	{ "auth_fail_max_delay = 0", "auth_fail_max_delay", "auth_fail_max_delay = 0s\n" },
	{ "auth_fail_max_delay = 0ms", "auth_fail_max_delay", "auth_fail_max_delay = 0s\n" },
	{ "auth_fail_max_delay = 1ms", "auth_fail_max_delay", "auth_fail_max_delay = 1ms\n" },
	/* aliases, senders, switches */
	{ "", "aliases_file", "aliases_file =\n" },
	{ "aliases_file = /etc/aliases", "aliases_file", "aliases_file = /etc/aliases\n" },
	{ "aliases_file =", "aliases_file", "aliases_file =\n" },
	{ "", "virtual_alias_file", "virtual_alias_file =\n" },
	{ "virtual_alias_file = /etc/sluice/virtual", "virtual_alias_file",
	  "virtual_alias_file = /etc/sluice/virtual\n" },
	{ "", "submission_senders_file", "submission_senders_file =\n" },
	{ "submission_senders_file = /etc/sluice/senders", "submission_senders_file",
	  "submission_senders_file = /etc/sluice/senders\n" },
	{ "", "submission_add_headers", "submission_add_headers = yes\n" },
	{ "", "submission_check_from", "submission_check_from = no\n" },
	{ "submission_check_from = yes\n", "submission_check_from", "submission_check_from = yes\n" },
	{ "submission_add_headers = no", "submission_add_headers", "submission_add_headers = no\n" },
	{ "submission_add_headers = FALSE", "submission_add_headers", "submission_add_headers = no\n" },
	{ "", "received_hide_client_ip", "received_hide_client_ip = no\n" },
	{ "received_hide_client_ip = Yes", "received_hide_client_ip", "received_hide_client_ip = yes\n" },
	{ "received_hide_client_ip = true", "received_hide_client_ip", "received_hide_client_ip = yes\n" },
	{ "", "recipient_verify", "recipient_verify = yes\n" },
	{ "recipient_verify = no", "recipient_verify", "recipient_verify = no\n" },
	/* lexer: continuation, comments, blanks */
	{ "local_domains = a.example : \\\n     b.example", "local_domains", "local_domains = a.example : b.example\n" },
	{ "local_domains = a.example:\\\n  b.example \\\n  : c.example", "local_domains",
	  "local_domains = a.example : b.example : c.example\n" },
	{ "# comment\n   # indented comment\n\n\t\nuser = x # not a comment", "user", "user = x # not a comment\n" },
	{ "  user\t=\tmailer  ", "user", "user = mailer\n" },
	{ "user=mailer", "user", "user = mailer\n" },
	{ "user = mailer \\", "user", "user = mailer\n" },
};

static void check_value(const char *text, const char *name, const char *want)
{
	char *full = malloc(strlen(text) + 64);
	assert_non_null(full);
	strcpy(full, CERT);
	strcat(full, text);
	struct conf *c = NULL;
	struct err e;
	if (load(full, NULL, false, &c, &e) < 0)
		fail_msg("config [%s]: %s", full, e.msg);
	int rc;
	char *got = print_to_string(c, name, &rc);
	assert_int_equal(rc, 0);
	if (strcmp(got, want) != 0)
		fail_msg("config [%s]: got [%s] want [%s]", full, got, want);
	free(got);
	conf_free(c);
	free(full);
}

static void test_values(void **state)
{
	for (size_t i = 0; i < sizeof(val_cases) / sizeof(val_cases[0]); i++) {
		const struct val_case *t = &val_cases[i];
		check_value(t->text, t->name, t->want);
		char *t2 = crlf(t->text);
		check_value(t2, t->name, t->want);
		free(t2);
	}
}

static void test_defaults(void **state)
{
	struct conf *c = NULL;
	struct err e;
	assert_int_equal(load(CERT, NULL, false, &c, &e), 0);
	assert_non_null(c->primary_hostname);
	assert_true(c->primary_hostname[0] != '\0');
	assert_int_equal(c->n_ports, 3);
	assert_int_equal(c->ports[0], 25);
	assert_int_equal(c->ports[1], 465);
	assert_int_equal(c->ports[2], 587);
	assert_int_equal(c->n_local_interfaces, 2);
	assert_string_equal(c->local_interfaces[0], "0.0.0.0");
	assert_string_equal(c->local_interfaces[1], "::");
	assert_int_equal(c->n_tls_on_connect_ports, 0);
	assert_string_equal(c->tls_certificate, "/etc/sluice/cert.pem");
	assert_string_equal(c->tls_privatekey, "/etc/sluice/cert.pem");
	assert_string_equal(c->spool_directory, "/var/spool/sluice");
	assert_int_equal(c->n_local_domains, 1);
	assert_string_equal(c->local_domains[0], c->primary_hostname);
	assert_true(c->message_size_limit == 50ull * 1024 * 1024);
	assert_int_equal(c->recipients_max, 1000);
	assert_int_equal(c->smtp_accept_max, 10000);
	assert_int_equal(c->smtp_receive_timeout, 300);
	assert_int_equal(c->smtp_max_errors, 20);
	assert_int_equal(c->smtp_accept_max_nonmail, 100);
	assert_int_equal(c->smtp_line_max, 2048);
	assert_int_equal(c->message_line_max, 998);
	assert_true(c->message_header_max == 1024 * 1024);
	assert_int_equal(c->smtp_workers, 0);
	assert_int_equal(c->shutdown_timeout, 30);
	assert_string_equal(c->user, "sluice");
	assert_string_equal(c->pid_file, "/run/sluice.pid");
	assert_string_equal(c->log_file, "");
	assert_string_equal(c->auth_backend, "none");
	assert_string_equal(c->auth_passwd_file, "/etc/sluice/passwd");
	assert_string_equal(c->auth_sqlite_database, "/var/lib/sluice/users.db");
	assert_string_equal(c->auth_dovecot_socket, "/run/dovecot/auth-client");
	assert_int_equal(c->auth_mechanisms, SASL_MECH_PLAIN | SASL_MECH_LOGIN);
	assert_int_equal(c->auth_fail_delay_after, 3);
	assert_int_equal(c->auth_fail_block_after, 10);
	assert_int_equal(c->auth_fail_window, 900);
	assert_int_equal(c->auth_fail_block_time, 900);
	assert_int_equal(c->auth_fail_max_delay, 5000);
	assert_null(c->aliases_file);
	assert_null(c->virtual_alias_file);
	assert_null(c->submission_senders_file);
	assert_true(c->submission_add_headers);
	assert_false(c->received_hide_client_ip);
	assert_true(c->recipient_verify);
	/* Submission listeners offer AUTH but no backend has users. */
	assert_int_equal(c->n_warnings, 1);
	assert_string_equal(c->warnings[0], "t.conf: " NO_BACKEND_WARNING);
	assert_int_equal(c->n_listeners, 3);
	conf_free(c);

	/* Stored values, not only their printed form. */
	assert_int_equal(load(CERT AUTHB "auth_mechanisms = scram-sha-256 : login\n"
			      "auth_fail_max_delay = 2s250ms\nauth_fail_window = 1h\n"
			      "auth_fail_block_time = 1d\nauth_fail_delay_after = 7\n"
			      "auth_fail_block_after = 8\naliases_file = /etc/aliases\n"
			      "virtual_alias_file = /v\nsubmission_senders_file = /s\n"
			      "submission_add_headers = no\nreceived_hide_client_ip = yes\n"
			      "recipient_verify = false\n", NULL, false, &c, &e), 0);
	assert_string_equal(c->auth_backend, "passwd-file");
	assert_int_equal(c->auth_mechanisms, SASL_MECH_SCRAM_SHA_256 | SASL_MECH_LOGIN);
	assert_int_equal(c->auth_fail_max_delay, 2250);
	assert_int_equal(c->auth_fail_window, 3600);
	assert_int_equal(c->auth_fail_block_time, 86400);
	assert_int_equal(c->auth_fail_delay_after, 7);
	assert_int_equal(c->auth_fail_block_after, 8);
	assert_string_equal(c->aliases_file, "/etc/aliases");
	assert_string_equal(c->virtual_alias_file, "/v");
	assert_string_equal(c->submission_senders_file, "/s");
	assert_false(c->submission_add_headers);
	assert_true(c->received_hide_client_ip);
	assert_false(c->recipient_verify);
	assert_int_equal(c->n_warnings, 0);
	conf_free(c);

	/* No certificate: tls_certificate and tls_privatekey stay unset. */
	assert_int_equal(load("daemon_smtp_ports = 25\n", NULL, false, &c, &e), 0);
	assert_null(c->tls_certificate);
	assert_null(c->tls_privatekey);
	assert_int_equal(c->listeners[0].tls, CONF_TLS_STARTTLS);
	conf_free(c);
}

static void test_print_all(void **state)
{
	struct conf *c = NULL;
	struct err e;
	assert_int_equal(load(CERT "primary_hostname = mx.example.org\n"
			      "local_domains = @ : example.org\n", NULL, false, &c, &e), 0);
	char *got = print_to_string(c, NULL, NULL);
	static const char want[] =
		"primary_hostname = mx.example.org\n"
		"daemon_smtp_ports = 25 : 465 : 587\n"
		"local_interfaces = <; 0.0.0.0 ; ::\n"
		"tls_on_connect_ports =\n"
		"tls_certificate = /etc/sluice/cert.pem\n"
		"tls_privatekey = /etc/sluice/cert.pem\n"
		"spool_directory = /var/spool/sluice\n"
		"spool_group_sync = yes\n"
		"local_domains = mx.example.org : example.org\n"
		"message_size_limit = 50M\n"
		"recipients_max = 1000\n"
		"smtp_accept_max = 10000\n"
		"smtp_accept_max_per_host = 0\n"
		"smtp_connect_backlog = 1024\n"
		"smtp_receive_timeout = 5m\n"
		"smtp_data_min_rate = 500\n"
		"smtp_max_errors = 20\n"
		"smtp_accept_max_nonmail = 100\n"
		"smtp_line_max = 2048\n"
		"message_line_max = 998\n"
		"message_header_max = 1M\n"
		"smtp_workers = 0\n"
		"shutdown_timeout = 30s\n"
		"user = sluice\n"
		"pid_file = /run/sluice.pid\n"
		"log_file =\n"
		"auth_backend = none\n"
		"auth_passwd_file = /etc/sluice/passwd\n"
		"auth_sqlite_database = /var/lib/sluice/users.db\n"
		"auth_dovecot_socket = /run/dovecot/auth-client\n"
		"auth_mechanisms = PLAIN : LOGIN\n"
		"auth_fail_delay_after = 3\n"
		"auth_fail_block_after = 10\n"
		"auth_fail_window = 15m\n"
		"auth_fail_block_time = 15m\n"
		"auth_fail_max_delay = 5s\n"
		"aliases_file =\n"
		"virtual_alias_file =\n"
		"submission_senders_file =\n"
		"submission_add_headers = yes\n"
		"submission_check_from = no\n"
		"received_hide_client_ip = no\n"
		"recipient_verify = yes\n"
		"queue_only = no\n"
		"queue_lifetime = 5d\n"
		"queue_retry_min = 5m\n"
		"queue_retry_max = 4h\n"
		"delay_warning = 4h\n"
		"remote_max_parallel = 20\n"
		"remote_max_per_destination = 4\n"
		"remote_rcpt_max = 100\n"
		"remote_max_addresses = 5\n"
		"remote_smtp_port = 25\n"
		"remote_tls = may\n"
		"tls_verify_certificates =\n"
		"remote_connect_timeout = 30s\n"
		"remote_command_timeout = 5m\n"
		"remote_data_done_timeout = 10m\n"
		"smarthost =\n"
		"smarthost_tls = starttls\n"
		"smarthost_user =\n"
		"smarthost_password =\n"
		"dns_resolv_conf = /etc/resolv.conf\n"
		"dns_unbound_config =\n"
		"local_delivery = maildir\n"
		"maildir_path = /var/vmail/%d/%n\n"
		"mail_user =\n"
		"lmtp_socket = /run/dovecot/lmtp\n"
		"local_delivery_timeout = 10m\n"
		"sendmail_socket = /run/sluice/sendmail.sock\n"
		"received_headers_max = 100\n"
		"bounce_return_size_limit = 100K\n"
		"listener 25 { role = mx tls = starttls tls_min_version = TLSv1 "
		"tls_ciphers = DEFAULT:@SECLEVEL=0 tls_ciphersuites = "
		"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256 auth = no }\n"
		"listener 465 { role = submission tls = on_connect tls_min_version = TLSv1.2 "
		"tls_ciphers = ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20 tls_ciphersuites = "
		"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256 auth = yes }\n"
		"listener 587 { role = submission tls = starttls tls_min_version = TLSv1.2 "
		"tls_ciphers = ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20 tls_ciphersuites = "
		"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256 auth = yes }\n";
	assert_string_equal(got, want);
	free(got);

	int rc;
	got = print_to_string(c, "no_such_option", &rc);
	assert_int_equal(rc, -1);
	assert_string_equal(got, "");
	free(got);
	conf_free(c);
}

/* -bP output (options part) is itself a configuration giving the same conf. */
static void test_print_roundtrip(void **state)
{
	static const char text[] =
		"primary_hostname = mx.example.org\n"
		"daemon_smtp_ports = 25 : 2525 : 587\n"
		"local_interfaces = 192.0.2.1 : 2001::db8::::1\n"
		"tls_on_connect_ports = 2525\n"
		"tls_certificate = /c.pem\n"
		"tls_privatekey = /k.pem\n"
		"spool_directory = /srv/spool\n"
		"local_domains = @ : a.example : B.example.\n"
		"message_size_limit = 1500K\n"
		"recipients_max = 200\n"
		"smtp_accept_max = 50\n"
		"smtp_receive_timeout = 3h25m7s\n"
		"smtp_max_errors = 4\n"
		"smtp_line_max = 4K\n"
		"message_line_max = 1000\n"
		"message_header_max = 100000\n"
		"smtp_workers = 7\n"
		"shutdown_timeout = 0\n"
		"user = mailer\n"
		"pid_file = /run/s.pid\n"
		"log_file = syslog\n"
		"auth_backend = SQLite\n"
		"auth_passwd_file = /etc/dovecot/users\n"
		"auth_sqlite_database = /srv/users.sqlite\n"
		"auth_dovecot_socket = /var/spool/sluice/private/auth\n"
		"auth_mechanisms = scram-sha-256 : login\n"
		"auth_fail_delay_after = 5\n"
		"auth_fail_block_after = 2K\n"
		"auth_fail_window = 5400\n"
		"auth_fail_block_time = 2d\n"
		"auth_fail_max_delay = 1250ms\n"
		"aliases_file = /etc/aliases\n"
		"virtual_alias_file = /etc/sluice/virtual\n"
		"submission_senders_file = /etc/sluice/senders\n"
		"submission_add_headers = false\n"
		"received_hide_client_ip = TRUE\n"
		"recipient_verify = no\n"
		"listener 2525 {\n  role = submission\n}\n";
	struct conf *c = NULL, *c2 = NULL;
	struct err e;
	if (load(text, NULL, false, &c, &e) < 0)
		fail_msg("%s", e.msg);
	char *p1 = print_to_string(c, NULL, NULL);
	/* Drop the listener lines, add the block back. */
	size_t keep = 0;
	while (p1[keep] && strncmp(p1 + keep, "listener ", 9) != 0)
		keep++;
	assert_true(p1[keep] != '\0');
	static const char block[] = "listener 2525 {\n  role = submission\n}\n";
	char *again = malloc(keep + sizeof(block));
	assert_non_null(again);
	memcpy(again, p1, keep);
	memcpy(again + keep, block, sizeof(block));
	if (load(again, NULL, false, &c2, &e) < 0)
		fail_msg("reparse of -bP output failed: %s\n%s", e.msg, again);
	char *p2 = print_to_string(c2, NULL, NULL);
	char *p1full = print_to_string(c, NULL, NULL);
	assert_string_equal(p1full, p2);
	assert_string_equal(c2->local_interfaces[1], "2001:db8::1");
	assert_true(c2->message_size_limit == 1500 * 1024);
	assert_int_equal(c2->smtp_receive_timeout, 3 * 3600 + 25 * 60 + 7);
	assert_string_equal(c2->auth_backend, "sqlite");
	assert_int_equal(c2->auth_mechanisms, SASL_MECH_SCRAM_SHA_256 | SASL_MECH_LOGIN);
	assert_int_equal(c2->auth_fail_block_after, 2048);
	assert_int_equal(c2->auth_fail_window, 5400);
	assert_int_equal(c2->auth_fail_max_delay, 1250);
	assert_string_equal(c2->submission_senders_file, "/etc/sluice/senders");
	assert_false(c2->submission_add_headers);
	assert_true(c2->received_hide_client_ip);
	assert_false(c2->recipient_verify);
	assert_non_null(strstr(p2, "auth_fail_max_delay = 1s250ms\n"));
	assert_non_null(strstr(p2, "auth_mechanisms = LOGIN : SCRAM-SHA-256\n"));
	assert_non_null(strstr(p2, "listener 2525 { role = submission tls = on_connect "));
	assert_non_null(strstr(p2, " auth = yes }\n"));
	/* Unset optional files print as empty and read back as unset. */
	conf_free(c2);
	c2 = NULL;
	assert_int_equal(load(CERT AUTHB "aliases_file =\n", NULL, false, &c2, &e), 0);
	assert_null(c2->aliases_file);
	free(p1);
	free(p2);
	free(p1full);
	free(again);
	conf_free(c);
	conf_free(c2);
}

/* ---- derivation -------------------------------------------------------- */

static void test_derive_defaults(void **state)
{
	struct conf *c = NULL;
	struct err e;
	assert_int_equal(load(CERT, NULL, false, &c, &e), 0);
	assert_int_equal(c->n_listeners, c->n_ports);
	const struct conf_listener *l = conf_listener_for_port(c, 25);
	assert_non_null(l);
	assert_int_equal(l->role, CONF_ROLE_MX);
	assert_int_equal(l->tls, CONF_TLS_STARTTLS);
	assert_int_equal(l->tls_min_version, 0x0301);
	assert_string_equal(l->tls_ciphers, "DEFAULT:@SECLEVEL=0");
	assert_string_equal(l->tls_ciphersuites,
			    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
	assert_false(l->tls_required);
	assert_false(l->auth_required);
	assert_false(l->auth);
	assert_int_equal(l->line, 0);
	l = conf_listener_for_port(c, 465);
	assert_non_null(l);
	assert_int_equal(l->role, CONF_ROLE_SUBMISSION);
	assert_int_equal(l->tls, CONF_TLS_ON_CONNECT);
	assert_int_equal(l->tls_min_version, 0x0303);
	assert_string_equal(l->tls_ciphers, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20");
	assert_true(l->tls_required);
	assert_true(l->auth_required);
	assert_true(l->auth);
	l = conf_listener_for_port(c, 587);
	assert_non_null(l);
	assert_int_equal(l->role, CONF_ROLE_SUBMISSION);
	assert_int_equal(l->tls, CONF_TLS_STARTTLS);
	assert_true(l->tls_required);
	assert_true(l->auth_required);
	assert_true(l->auth);
	assert_null(conf_listener_for_port(c, 2525));
	/* Listeners are in the order of the ports. */
	for (size_t i = 0; i < c->n_ports; i++)
		assert_int_equal(c->listeners[i].port, c->ports[i]);
	conf_free(c);
}

static void test_derive_blocks(void **state)
{
	struct conf *c = NULL;
	struct err e;
	static const char text[] = CERT AUTHB
		"daemon_smtp_ports = 2525 : 25 : 587 : 10465\n"
		"tls_on_connect_ports = 10465 : 587\n"
		"listener 2525 {\n"
		"    role = submission\n"
		"    tls_min_version = TLSv1.3\n"
		"    tls_ciphers = HIGH\n"
		"    tls_ciphersuites = TLS_AES_128_GCM_SHA256\n"
		"}\n"
		"listener smtp {\n"
		"    tls = none\n"
		"}\n"
		"listener 10465 {\n"
		"    role = mx\n"
		"    tls = on_connect\n"
		"    tls_min_version = tlsv1.1\n"
		"    auth = yes\n"
		"}\n";
	assert_int_equal(load(text, NULL, false, &c, &e), 0);
	assert_int_equal(c->n_listeners, 4);
	assert_int_equal(c->n_warnings, 0);
	const struct conf_listener *l = &c->listeners[0];
	assert_int_equal(l->port, 2525);
	assert_int_equal(l->role, CONF_ROLE_SUBMISSION);
	assert_int_equal(l->tls, CONF_TLS_STARTTLS);
	assert_int_equal(l->tls_min_version, 0x0304);
	assert_string_equal(l->tls_ciphers, "HIGH");
	assert_string_equal(l->tls_ciphersuites, "TLS_AES_128_GCM_SHA256");
	assert_true(l->tls_required && l->auth_required);
	assert_int_equal(l->line, 5);
	assert_true(l->auth);
	l = &c->listeners[1];
	assert_int_equal(l->port, 25);
	assert_int_equal(l->tls, CONF_TLS_NONE);
	assert_int_equal(l->line, 11);
	assert_false(l->auth);
	l = &c->listeners[2];
	assert_int_equal(l->port, 587);
	assert_int_equal(l->tls, CONF_TLS_ON_CONNECT); /* from tls_on_connect_ports */
	l = &c->listeners[3];
	assert_int_equal(l->port, 10465);
	assert_int_equal(l->role, CONF_ROLE_MX);
	assert_int_equal(l->tls, CONF_TLS_ON_CONNECT);
	assert_int_equal(l->tls_min_version, 0x0302);
	assert_string_equal(l->tls_ciphers, "DEFAULT:@SECLEVEL=0");
	assert_false(l->tls_required || l->auth_required);
	assert_true(l->auth); /* offered, not required */
	conf_free(c);
}

static void test_derive_overrides(void **state)
{
	struct conf *c = NULL;
	struct err e;
	/* -oX replaces daemon_smtp_ports; blocks still apply. */
	assert_int_equal(load(CERT AUTHB "daemon_smtp_ports = 25\nlistener 2525 {\nrole = mx\n}\n",
			      "2525 : submission", false, &c, &e), 0);
	assert_int_equal(c->n_ports, 2);
	assert_int_equal(c->ports[0], 2525);
	assert_int_equal(c->ports[1], 587);
	assert_int_equal(c->n_listeners, 2);
	assert_int_equal(c->listeners[0].role, CONF_ROLE_MX);
	assert_int_equal(c->listeners[1].role, CONF_ROLE_SUBMISSION);
	assert_null(conf_listener_for_port(c, 25));
	assert_int_equal(c->n_warnings, 0);
	conf_free(c);

	/* -tls-on-connect forces on_connect on every port, over blocks too. */
	assert_int_equal(load(CERT "listener 25 {\ntls = starttls\n}\n", NULL, true, &c, &e), 0);
	for (size_t i = 0; i < c->n_listeners; i++)
		assert_int_equal(c->listeners[i].tls, CONF_TLS_ON_CONNECT);
	assert_int_equal(c->n_listeners, 3);
	conf_free(c);
}

struct warn_case {
	const char *text;
	const char *want; /* NULL: no warning */
};

static const struct warn_case warn_cases[] = {
	{ CERT AUTHB "tls_on_connect_ports = 465 : 2465\n",
	  "t.conf:3: tls_on_connect_ports lists 2465 but daemon_smtp_ports does not; it opens no port" },
	{ CERT AUTHB "daemon_smtp_ports = 25 : 587\ntls_on_connect_ports = 465\n",
	  "t.conf:4: tls_on_connect_ports lists 465 but daemon_smtp_ports does not; it opens no port" },
	{ CERT AUTHB "listener 2525 {\nrole = mx\n}\n",
	  "t.conf:3: listener 2525 block is for a port daemon_smtp_ports does not list; it opens no port" },
	{ CERT AUTHB "recipients_max = 50\n",
	  "t.conf:3: recipients_max = 50 is below 100, the number of recipients RFC 5321 section 4.5.3.1.8 requires a server to accept" },
	{ CERT AUTHB "recipients_max = 100\n", NULL },
	{ CERT AUTHB "tls_on_connect_ports = 465\n", NULL },
	/* an MX listener that can take mail for nobody */
	{ CERT AUTHB "local_domains =\n",
	  "t.conf:3: local_domains is empty: the mx listeners take mail for no domain" },
	{ CERT AUTHB "local_domains =\ndaemon_smtp_ports = 587\n", NULL },
	/* authentication */
	{ CERT, "t.conf: " NO_BACKEND_WARNING },
	{ CERT "\nauth_backend = none\n", "t.conf:3: " NO_BACKEND_WARNING },
	{ CERT "daemon_smtp_ports = 25\n", NULL },
	{ CERT "daemon_smtp_ports = 25\nauth_backend = none\nlistener 25 {\nauth = no\n}\n", NULL },
	{ CERT "daemon_smtp_ports = 25\nlistener 25 {\nauth = yes\n}\n",
	  "t.conf: " NO_BACKEND_WARNING },
	{ CERT AUTHB "daemon_smtp_ports = 25\nlistener 25 {\nauth = yes\n}\n", NULL },
	{ CERT "auth_backend = dovecot\n", NULL },
	{ CERT "auth_backend = sqlite\n", NULL },
	{ CERT AUTHB "daemon_smtp_ports = 25\nlistener 25 {\ntls = none\nauth = yes\n}\n",
	  "t.conf:6: listener 25 has auth = yes but tls = none; AUTH is offered only inside "
	  "TLS, so it is never offered on this port" },
	{ "auth_backend = sqlite\ndaemon_smtp_ports = 25\nlistener 25 {\nauth = yes\n}\n",
	  "t.conf:4: listener 25 has auth = yes but tls_certificate is not set; AUTH is offered "
	  "only inside TLS, so it is never offered on this port" },
	/* ACLs */
	{ CERT AUTHB "\nacl spare {\n  deny\n}\n",
	  "t.conf:4: acl spare is not used: no listener names it in acl_connect, acl_helo, "
	  "acl_mail, acl_rcpt or acl_data" },
	{ CERT AUTHB "acl used {\n  deny\n}\nlistener 465 {\nacl_data = used\n}\n", NULL },
	/* A reference from a block for an unopened port still counts as a use. */
	{ CERT AUTHB "acl used {\n}\nlistener 2525 {\nrole = mx\nacl_mail = used\n}\n",
	  "t.conf:5: listener 2525 block is for a port daemon_smtp_ports does not list" },
};

static void test_warnings(void **state)
{
	for (size_t i = 0; i < sizeof(warn_cases) / sizeof(warn_cases[0]); i++) {
		struct conf *c = NULL;
		struct err e;
		if (load(warn_cases[i].text, NULL, false, &c, &e) < 0)
			fail_msg("[%s]: %s", warn_cases[i].text, e.msg);
		if (!warn_cases[i].want) {
			if (c->n_warnings != 0)
				fail_msg("[%s]: unexpected warning [%s]", warn_cases[i].text,
					 c->warnings[0]);
		} else {
			if (c->n_warnings != 1 ||
			    strncmp(c->warnings[0], warn_cases[i].want, strlen(warn_cases[i].want)) != 0)
				fail_msg("[%s]: %zu warnings, first [%s], want [%s]",
					 warn_cases[i].text, c->n_warnings,
					 c->n_warnings ? c->warnings[0] : "", warn_cases[i].want);
		}
		conf_free(c);
	}
}

struct lauth_case {
	const char *text;
	const char *ox;
	bool all;
	uint16_t port;
	bool auth;
};

static const struct lauth_case lauth_cases[] = {
	{ CERT AUTHB, NULL, false, 25, false },
	{ CERT AUTHB, NULL, false, 465, true },
	{ CERT AUTHB, NULL, false, 587, true },
	{ CERT AUTHB "listener 25 {\nauth = yes\n}\n", NULL, false, 25, true },
	{ CERT AUTHB "listener 25 {\nauth = YES\n}\n", NULL, false, 25, true },
	{ CERT AUTHB "listener 25 {\nauth = true\n}\n", NULL, false, 25, true },
	{ CERT AUTHB "listener 25 {\nauth = no\n}\n", NULL, false, 25, false },
	{ CERT AUTHB "listener 587 {\nauth = yes\n}\n", NULL, false, 587, true },
	{ CERT AUTHB "daemon_smtp_ports = 2525\nlistener 2525 {\nrole = submission\n}\n",
	  NULL, false, 2525, true },
	{ CERT AUTHB "daemon_smtp_ports = 2525\nlistener 2525 {\nrole = mx\n}\n",
	  NULL, false, 2525, false },
	{ CERT AUTHB "listener 2525 {\nrole = mx\nauth = yes\n}\n", "2525", false, 2525, true },
	{ CERT AUTHB "listener 25 {\nauth = yes\n}\n", NULL, true, 25, true },
	{ CERT AUTHB, NULL, true, 25, false },
};

static void test_listener_auth(void **state)
{
	for (size_t i = 0; i < sizeof(lauth_cases) / sizeof(lauth_cases[0]); i++) {
		const struct lauth_case *t = &lauth_cases[i];
		struct conf *c = NULL;
		struct err e;
		if (load(t->text, t->ox, t->all, &c, &e) < 0)
			fail_msg("[%s]: %s", t->text, e.msg);
		const struct conf_listener *l = conf_listener_for_port(c, t->port);
		assert_non_null(l);
		if (l->auth != t->auth)
			fail_msg("[%s] port %u: auth %d, want %d", t->text, t->port, l->auth, t->auth);
		/* Offering AUTH never makes it required on an MX port. */
		assert_int_equal(l->auth_required, l->role == CONF_ROLE_SUBMISSION);
		char want[32];
		snprintf(want, sizeof(want), " auth = %s }\n", t->auth ? "yes" : "no");
		char *bp = print_to_string(c, NULL, NULL);
		char head[32];
		snprintf(head, sizeof(head), "listener %u {", t->port);
		char *line = strstr(bp, head);
		assert_non_null(line);
		char *end = strchr(line, '\n');
		assert_non_null(end);
		assert_true((size_t)(end + 1 - line) > strlen(want));
		assert_memory_equal(end + 1 - strlen(want), want, strlen(want));
		free(bp);
		assert_int_equal(c->n_warnings, 0);
		conf_free(c);
	}
}

static void test_parse_port(void **state)
{
	static const struct { const char *s; int port; } t[] = {
		{ "25", 25 }, { "1", 1 }, { "65535", 65535 }, { "smtp", 25 },
		{ "submission", 587 }, { "submissions", 465 }, { "smtps", 465 },
		{ "ssmtp", 465 }, { "SMTP", 25 }, { "0", -1 }, { "65536", -1 },
		{ "", -1 }, { "25 ", -1 }, { "-25", -1 }, { "pop3", -1 },
		{ "99999999999999999999999", -1 }, { "2x", -1 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (conf_parse_port(t[i].s) != t[i].port)
			fail_msg("conf_parse_port(%s) = %d, want %d", t[i].s,
				 conf_parse_port(t[i].s), t[i].port);
	assert_int_equal(conf_parse_port(NULL), -1);
}

/* ---- host and port, delivery values --------------------------------------- */

static void test_parse_hostport(void **state)
{
	static const struct {
		const char *s;
		uint16_t def;
		int r;
		const char *host;
		uint16_t port;
	} t[] = {
		{ "relay.example.net", 587, 0, "relay.example.net", 587 },
		{ "relay.example.net", 25, 0, "relay.example.net", 25 },
		{ "Relay.Example.NET.", 25, 0, "Relay.Example.NET", 25 },
		{ "relay.example.net:2525", 587, 0, "relay.example.net", 2525 },
		{ "localhost:1", 0, 0, "localhost", 1 },
		{ "mx:65535", 0, 0, "mx", 65535 },
		{ "mx:00025", 0, 0, "mx", 25 },
		{ "192.0.2.1", 465, 0, "192.0.2.1", 465 },
		{ "192.0.2.1:24", 0, 0, "192.0.2.1", 24 },
		{ "[192.0.2.1]", 25, 0, "192.0.2.1", 25 },
		{ "[192.0.2.1]:26", 25, 0, "192.0.2.1", 26 },
		{ "[::1]", 587, 0, "::1", 587 },
		{ "[::1]:24", 0, 0, "::1", 24 },
		{ "[2001:db8::1]:587", 25, 0, "2001:db8::1", 587 },
		{ "[::ffff:192.0.2.1]:25", 0, 0, "::ffff:192.0.2.1", 25 },
		/* refused */
		{ "", 25, -1, NULL, 0 },
		{ "[::1:587", 25, -1, NULL, 0 },
		{ "[::1", 25, -1, NULL, 0 },
		{ "::1", 25, -1, NULL, 0 },
		{ "2001:db8::1:25", 25, -1, NULL, 0 },
		{ "[::1]x", 25, -1, NULL, 0 },
		{ "[::1]:", 25, -1, NULL, 0 },
		{ "[]", 25, -1, NULL, 0 },
		{ "[relay.example.net]", 25, -1, NULL, 0 },
		{ "[fe80::1%eth0]", 25, -1, NULL, 0 },
		{ ":25", 25, -1, NULL, 0 },
		{ "mx:", 25, -1, NULL, 0 },
		{ "mx:0", 25, -1, NULL, 0 },
		{ "mx:65536", 25, -1, NULL, 0 },
		{ "mx:99999", 25, -1, NULL, 0 },
		{ "mx:123456", 25, -1, NULL, 0 },
		{ "mx:-1", 25, -1, NULL, 0 },
		{ "mx:25 ", 25, -1, NULL, 0 },
		{ "mx:smtp", 25, -1, NULL, 0 },
		{ "mx", 0, -1, NULL, 0 },
		{ "[::1]", 0, -1, NULL, 0 },
		{ "bad host", 25, -1, NULL, 0 },
		{ "-mx.example", 25, -1, NULL, 0 },
		{ "mx..example", 25, -1, NULL, 0 },
		{ "1.2.3.256", 25, -1, NULL, 0 },
		{ "10.1", 25, -1, NULL, 0 },
		{ "/run/dovecot/lmtp", 25, -1, NULL, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char host[256] = "unset";
		uint16_t port = 7;
		struct err e = { "" };
		int r = conf_parse_hostport(t[i].s, host, sizeof(host), &port, t[i].def, &e);
		if (r != t[i].r)
			fail_msg("conf_parse_hostport(%s) = %d [%s], want %d", t[i].s, r, e.msg, t[i].r);
		if (r < 0) {
			/* Every refusal says what is expected. */
			if (!strstr(e.msg, "expected"))
				fail_msg("conf_parse_hostport(%s): reason without the expected form: %s",
					 t[i].s, e.msg);
			continue;
		}
		if (strcmp(host, t[i].host) != 0 || port != t[i].port)
			fail_msg("conf_parse_hostport(%s) = %s port %u, want %s port %u", t[i].s, host,
				 port, t[i].host, t[i].port);
	}
	/* The host must fit the caller's buffer. */
	char small[8];
	uint16_t port;
	struct err e;
	assert_int_equal(conf_parse_hostport("mx.example.net", small, sizeof(small), &port, 25, &e), -1);
	assert_int_equal(conf_parse_hostport("mx.exa", small, sizeof(small), &port, 25, &e), 0);
	assert_string_equal(small, "mx.exa");
	/* A domain name of 253 characters (and its absolute form) fits 256 bytes. */
	char big[300], h[256];
	memset(big, 0, sizeof(big));
	for (int k = 0; k < 4; k++)
		memcpy(big + 64 * k, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", 64);
	big[253] = '\0';
	assert_int_equal(conf_parse_hostport(big, h, sizeof(h), &port, 25, &e), 0);
	assert_string_equal(h, big);
	big[253] = '.';
	big[254] = '\0';
	assert_int_equal(conf_parse_hostport(big, h, sizeof(h), &port, 25, &e), 0);
	assert_int_equal(strlen(h), 253);
	big[253] = 'b';
	assert_int_equal(conf_parse_hostport(big, h, sizeof(h), &port, 25, &e), -1);
}

/* Forms that stay accepted, with the value kept as written. */
static const struct val_case delivery_ok[] = {
	{ "", "maildir_path", "maildir_path = /var/vmail/%d/%n\n" },
	{ "maildir_path = /srv/mail/%u", "maildir_path", "maildir_path = /srv/mail/%u\n" },
	{ "maildir_path = /srv/100%%/%d/%n/Maildir", "maildir_path",
	  "maildir_path = /srv/100%%/%d/%n/Maildir\n" },
	{ "maildir_path = /srv/shared", "maildir_path", "maildir_path = /srv/shared\n" },
	{ "maildir_path = /%d/%n", "maildir_path", "maildir_path = /%d/%n\n" },
	{ "", "lmtp_socket", "lmtp_socket = /run/dovecot/lmtp\n" },
	{ "lmtp_socket = /var/spool/postfix/private/dovecot-lmtp", "lmtp_socket",
	  "lmtp_socket = /var/spool/postfix/private/dovecot-lmtp\n" },
	{ "lmtp_socket = /run/" LONG100, "lmtp_socket", "lmtp_socket = /run/" LONG100 "\n" },
	{ "lmtp_socket = 127.0.0.1:24", "lmtp_socket", "lmtp_socket = 127.0.0.1:24\n" },
	{ "lmtp_socket = [127.0.0.1]:24", "lmtp_socket", "lmtp_socket = [127.0.0.1]:24\n" },
	{ "lmtp_socket = [::1]:24", "lmtp_socket", "lmtp_socket = [::1]:24\n" },
	{ "local_delivery = lmtp\nlmtp_socket = 192.0.2.7:2424", "lmtp_socket",
	  "lmtp_socket = 192.0.2.7:2424\n" },
	{ "", "smarthost", "smarthost =\n" },
	{ "smarthost =", "smarthost", "smarthost =\n" },
	{ "smarthost = relay.example.net", "smarthost", "smarthost = relay.example.net\n" },
	{ "smarthost = relay.example.net:587", "smarthost", "smarthost = relay.example.net:587\n" },
	{ "smarthost = relay.example.net.", "smarthost", "smarthost = relay.example.net.\n" },
	{ "smarthost = 192.0.2.1", "smarthost", "smarthost = 192.0.2.1\n" },
	{ "smarthost = 192.0.2.1:25\nsmarthost_tls = none", "smarthost", "smarthost = 192.0.2.1:25\n" },
	{ "smarthost = [192.0.2.1]:2525", "smarthost", "smarthost = [192.0.2.1]:2525\n" },
	{ "smarthost = [2001:db8::1]:587", "smarthost", "smarthost = [2001:db8::1]:587\n" },
	{ "smarthost = [::1]\nsmarthost_tls = on_connect", "smarthost", "smarthost = [::1]\n" },
	{ "", "mail_user", "mail_user =\n" },
	{ "mail_user = vmail", "mail_user", "mail_user = vmail\n" },
};

static void test_delivery_values_ok(void **state)
{
	for (size_t i = 0; i < sizeof(delivery_ok) / sizeof(delivery_ok[0]); i++) {
		const struct val_case *t = &delivery_ok[i];
		check_value(t->text, t->name, t->want);
		char *t2 = crlf(t->text);
		check_value(t2, t->name, t->want);
		free(t2);
	}
}

/* The smarthost's port when none is written follows smarthost_tls. */
static void test_smarthost_default_port(void **state)
{
	static const struct { const char *tls; uint16_t port; } t[] = {
		{ "", 587 }, { "smarthost_tls = starttls\n", 587 },
		{ "smarthost_tls = on_connect\n", 465 }, { "smarthost_tls = may\n", 25 },
		{ "smarthost_tls = none\n", 25 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char text[256];
		snprintf(text, sizeof(text), CERT "smarthost = relay.example.net\n%s", t[i].tls);
		struct conf *c = NULL;
		struct err e;
		if (load(text, NULL, false, &c, &e) < 0)
			fail_msg("[%s]: %s", text, e.msg);
		assert_int_equal(conf_smarthost_default_port(c), t[i].port);
		char host[256];
		uint16_t port = 0;
		assert_int_equal(conf_parse_hostport(c->smarthost, host, sizeof(host), &port,
						     conf_smarthost_default_port(c), &e), 0);
		assert_int_equal(port, t[i].port);
		assert_string_equal(host, "relay.example.net");
		conf_free(c);
	}
}

/* ---- ACLs ------------------------------------------------------------------ */

static const char acl_text[] =
	CERT AUTHB
	"local_domains = example.org\n"
	"acl mx_rcpt {\n"
	"    # comments and blank lines inside the block\n"
	"\n"
	"    deny message = \"550 5.7.1 Not from there\" client = 198.51.100.0/24\n"
	"    deny message = \"550 5.7.10 TLS 1.2 required\" \\\n"
	"        recipient_domain = secure.example.org !tls_version >= TLSv1.2\n"
	"    defer rate > 2 / 1h per client\n"
	"}\n"
	"acl sub_data {\n"
	"    warn message = \"big\" size > 20M\n"
	"    deny authenticated = \"intern : guest\" size > 5M\n"
	"}\n"
	"acl empty {\n"
	"}\n"
	"listener 25 {\n"
	"    acl_rcpt = mx_rcpt\n"
	"    acl_connect = empty\n"
	"}\n"
	"listener 587 {\n"
	"    acl_data = sub_data\n"
	"    acl_mail = sub_data\n"
	"}\n";

static void check_acl_conf(const struct conf *c)
{
	assert_int_equal(c->n_acls, 3);
	assert_string_equal(acl_name(c->acls[0]), "mx_rcpt");
	assert_int_equal(acl_line(c->acls[0]), 4);
	assert_int_equal(acl_n_rules(c->acls[0]), 3);
	assert_int_equal(acl_rule_line(c->acls[0], 1), 8);
	assert_int_equal(acl_n_rules(c->acls[2]), 0);
	assert_int_equal(c->n_warnings, 0);
	const struct conf_listener *mx = conf_listener_for_port(c, 25);
	const struct conf_listener *sub = conf_listener_for_port(c, 587);
	const struct conf_listener *ssl = conf_listener_for_port(c, 465);
	assert_ptr_equal(mx->acl[ACL_RCPT], c->acls[0]);
	assert_ptr_equal(mx->acl[ACL_CONNECT], c->acls[2]);
	assert_null(mx->acl[ACL_MAIL]);
	assert_null(mx->acl[ACL_HELO]);
	assert_null(mx->acl[ACL_DATA]);
	assert_ptr_equal(sub->acl[ACL_DATA], c->acls[1]);
	assert_ptr_equal(sub->acl[ACL_MAIL], c->acls[1]);
	for (int k = 0; k < ACL_NSTAGES; k++)
		assert_null(ssl->acl[k]);

	/* The linked ACL evaluates as configured. */
	struct acl_ctx x;
	memset(&x, 0, sizeof(x));
	x.stage = ACL_RCPT;
	x.client_family = AF_INET;
	x.client_addr[0] = 198;
	x.client_addr[1] = 51;
	x.client_addr[2] = 100;
	x.client_addr[3] = 9;
	x.recipient = "a@example.org";
	x.local_domains = c->local_domains;
	x.n_local_domains = c->n_local_domains;
	struct acl_result r;
	acl_eval(mx->acl[ACL_RCPT], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DENY);
	assert_string_equal(r.reply, "550 5.7.1 Not from there");
	x.client_addr[0] = 192;
	acl_eval(mx->acl[ACL_RCPT], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	x.recipient = "a@Secure.Example.org";
	x.tls_version = 0x0302;
	acl_eval(mx->acl[ACL_RCPT], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DENY);
	assert_int_equal(r.rule_line, 8);
	x.tls_version = 0x0303;
	acl_eval(mx->acl[ACL_RCPT], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
	x.stage = ACL_DATA;
	x.size = 6u << 20;
	x.auth_user = "guest";
	acl_eval(sub->acl[ACL_DATA], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_DENY);
	x.auth_user = "alice";
	acl_eval(sub->acl[ACL_DATA], &x, &r, NULL, NULL);
	assert_int_equal(r.verdict, ACL_ACCEPT);
}

static void test_acl(void **state)
{
	struct conf *c = NULL;
	struct err e;
	if (load(acl_text, NULL, false, &c, &e) < 0)
		fail_msg("%s", e.msg);
	check_acl_conf(c);
	/* CRLF line ends read the same. */
	char *t2 = crlf(acl_text);
	struct conf *c2 = NULL;
	if (load(t2, NULL, false, &c2, &e) < 0)
		fail_msg("crlf: %s", e.msg);
	check_acl_conf(c2);
	free(t2);

	/* -bP prints the blocks in file syntax, and the listeners' ACLs. */
	char *p1 = print_to_string(c, NULL, NULL);
	static const char blocks[] =
		"bounce_return_size_limit = 100K\n"
		"acl mx_rcpt {\n"
		"    deny message = \"550 5.7.1 Not from there\" client = 198.51.100.0/24\n"
		"    deny message = \"550 5.7.10 TLS 1.2 required\" recipient_domain = "
		"secure.example.org !tls_version >= TLSv1.2\n"
		"    defer rate > 2 / 1h per client\n"
		"}\n"
		"acl sub_data {\n"
		"    warn message = \"big\" size > 20M\n"
		"    deny authenticated = \"intern : guest\" size > 5M\n"
		"}\n"
		"acl empty {\n"
		"}\n"
		"listener 25 {";
	if (!strstr(p1, blocks))
		fail_msg("-bP output lacks the ACL blocks:\n%s", p1);
	assert_non_null(strstr(p1, " acl_connect = empty acl_rcpt = mx_rcpt auth = no }\n"));
	assert_non_null(strstr(p1, " acl_mail = sub_data acl_data = sub_data auth = yes }\n"));
	assert_non_null(strstr(p1, "TLS_AES_128_GCM_SHA256 auth = yes }\n")); /* 465: none */

	/* Round trip: the options and blocks, with the listener blocks
	 * written back, give the same configuration and the same output. */
	size_t keep = 0;
	while (p1[keep] && strncmp(p1 + keep, "listener ", 9) != 0)
		keep++;
	static const char lst[] =
		"listener 25 {\nacl_rcpt = mx_rcpt\nacl_connect = empty\n}\n"
		"listener 587 {\nacl_data = sub_data\nacl_mail = sub_data\n}\n";
	char *again = malloc(keep + sizeof(lst));
	assert_non_null(again);
	memcpy(again, p1, keep);
	memcpy(again + keep, lst, sizeof(lst));
	struct conf *c3 = NULL;
	if (load(again, NULL, false, &c3, &e) < 0)
		fail_msg("reparse: %s\n%s", e.msg, again);
	char *p3 = print_to_string(c3, NULL, NULL);
	assert_string_equal(p1, p3);
	assert_int_equal(c3->n_acls, 3);
	free(again);
	free(p3);
	free(p1);
	conf_free(c);
	conf_free(c2);
	conf_free(c3);
}

/* ---- reference ----------------------------------------------------------- */

static void test_reference(void **state)
{
	char *ref = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&ref, &len);
	assert_non_null(f);
	conf_print_reference(f);
	fclose(f);

	static const char *const must[] = {
		"# sluice configuration reference", "## File syntax", "::::1", "<;",
		"## Listener blocks", "## Command-line overrides", "-oX", "-tls-on-connect",
		"`role`", "`tls`", "`tls_min_version`", "`tls_ciphers`", "`tls_ciphersuites`",
		"DEFAULT:@SECLEVEL=0", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20",
		"### primary_hostname", "### daemon_smtp_ports", "### local_interfaces",
		"### tls_on_connect_ports", "### tls_certificate", "### tls_privatekey",
		"### spool_directory", "### local_domains", "### message_size_limit",
		"### recipients_max", "### smtp_accept_max", "### smtp_receive_timeout",
		"### smtp_max_errors", "### smtp_line_max", "### message_line_max",
		"### message_header_max", "### smtp_workers", "### shutdown_timeout",
		"### user", "### pid_file", "### log_file",
		"- Default: `50M`", "- Limits: `512` to `65536`", "- Default: `5m`",
		"### auth_backend", "### auth_passwd_file", "### auth_sqlite_database",
		"### auth_dovecot_socket", "### auth_mechanisms", "### auth_fail_delay_after",
		"### auth_fail_block_after", "### auth_fail_window", "### auth_fail_block_time",
		"### auth_fail_max_delay", "### aliases_file", "### virtual_alias_file",
		"### submission_senders_file", "### submission_add_headers",
		"### received_hide_client_ip", "### recipient_verify",
		"- Type: one of `none`, `passwd-file`, `sqlite` or `dovecot`",
		"- Default: `PLAIN : LOGIN`", "- Limits: `0s` to `1m`",
		"- Type: time (`ms` allowed)", "- Type: `yes` or `no`", "`ms`",
		"| `auth` | `no` | `yes` (cannot be `no`) |", "- `auth` = `yes` or `no`.",
		"## Authentication", "## Aliases and senders", "530 5.7.0",
		"user:{SCHEME}hash", "SHA512-CRYPT", "BLF-CRYPT", "YESCRYPT", "{SCRAM-SHA-256}",
		"users   (name", "aliases (address", "senders (login", "auth-client",
		"local: target, target", "address target, target", "@domain",
		"login: pattern, pattern", "*@domain", "each domain of `local_domains`",
		"points to the login",
		"## ACLs", "- `acl_connect` = the name of an `acl` block.", "- `acl_rcpt` =",
		"- `acl_helo` =", "- `acl_mail` =", "- `acl_data` =",
		"550 5.7.1 Rejected by policy", "451 4.7.1 Try again later",
		"`rate > N / TIME per KEY`", "`recipient_local`", "`header = NAME`",
		"`sender_domain = LIST`", "`recipient_domain = LIST`", "`tls_version OP VERSION`",
		"`client = LIST`", "`size OP SIZE`", "`authenticated = LIST`", "`@local`",
		"rate > 200 / 1h per client", "client = 203.0.113.0/24", "!tls_version >= TLSv1.2",
	};
	for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
		if (!strstr(ref, must[i]))
			fail_msg("reference lacks [%s]", must[i]);

	/* Every option printed by -bP has a section. */
	struct conf *c = NULL;
	struct err e;
	assert_int_equal(load(CERT, NULL, false, &c, &e), 0);
	char *bp = print_to_string(c, NULL, NULL);
	for (char *line = bp; line && *line;) {
		char *nl = strchr(line, '\n');
		/* Options only: listener and acl blocks have their own sections. */
		bool acl_block = strncmp(line, "acl ", 4) == 0 || strncmp(line, "    ", 4) == 0 ||
				 strcmp(line, "}") == 0 || strncmp(line, "}\n", 2) == 0;
		if (strncmp(line, "listener ", 9) != 0 && !acl_block) {
			char head[128];
			snprintf(head, sizeof(head), "\n### %.*s\n", (int)strcspn(line, " "), line);
			if (!strstr(ref, head))
				fail_msg("no section %s", head);
		}
		line = nl ? nl + 1 : NULL;
	}
	free(bp);
	conf_free(c);

	/* The committed manual page is exactly the generated one. */
	assert_non_null(doc_path);
	FILE *d = fopen(doc_path, "rb");
	if (!d)
		fail_msg("cannot open %s", doc_path);
	char *doc = malloc(len + 2);
	assert_non_null(doc);
	size_t got = fread(doc, 1, len + 1, d);
	fclose(d);
	if (got != len || memcmp(doc, ref, len) != 0)
		fail_msg("%s differs from conf_print_reference output; regenerate it", doc_path);
	free(doc);
	free(ref);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s docs/configuration.md\n", argv[0]);
		return 2;
	}
	doc_path = argv[1];
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_print_all),
		cmocka_unit_test(test_print_roundtrip),
		cmocka_unit_test(test_derive_defaults),
		cmocka_unit_test(test_derive_blocks),
		cmocka_unit_test(test_derive_overrides),
		cmocka_unit_test(test_warnings),
		cmocka_unit_test(test_listener_auth),
		cmocka_unit_test(test_parse_port),
		cmocka_unit_test(test_parse_hostport),
		cmocka_unit_test(test_delivery_values_ok),
		cmocka_unit_test(test_smarthost_default_port),
		cmocka_unit_test(test_acl),
		cmocka_unit_test(test_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
