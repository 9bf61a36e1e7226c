/*
 * Fuzzes the configuration parser: any text, any -oX value, with and
 * without -tls-on-connect.  A loaded configuration must satisfy the
 * invariants the rest of the daemon relies on; -bP and the reference
 * must run on it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct conf *c, bool tls_all)
{
	if (!c->primary_hostname || !c->primary_hostname[0] || !c->spool_directory ||
	    !c->user || !c->pid_file || !c->log_file)
		abort();
	if (c->n_ports == 0 || c->n_listeners != c->n_ports || !c->listeners)
		abort();
	if (c->n_local_interfaces == 0)
		abort();
	if (c->tls_certificate && !c->tls_privatekey)
		abort();
	for (size_t i = 0; i < c->n_ports; i++) {
		const struct conf_listener *l = &c->listeners[i];
		if (c->ports[i] == 0 || l->port != c->ports[i])
			abort();
		for (size_t j = 0; j < i; j++)
			if (c->ports[j] == c->ports[i])
				abort();
		if (l->role != CONF_ROLE_MX && l->role != CONF_ROLE_SUBMISSION)
			abort();
		if (l->tls != CONF_TLS_STARTTLS && l->tls != CONF_TLS_ON_CONNECT &&
		    l->tls != CONF_TLS_NONE)
			abort();
		if (l->tls_min_version < 0x0301 || l->tls_min_version > 0x0304)
			abort();
		if (!l->tls_ciphers || !l->tls_ciphersuites)
			abort();
		bool sub = l->role == CONF_ROLE_SUBMISSION;
		if (l->tls_required != sub || l->auth_required != sub)
			abort();
		if (sub && l->tls == CONF_TLS_NONE)
			abort();
		if ((sub || l->tls == CONF_TLS_ON_CONNECT) && !c->tls_certificate)
			abort();
		if (tls_all && l->tls != CONF_TLS_ON_CONNECT)
			abort();
		if (conf_listener_for_port(c, l->port) != l)
			abort();
	}
	for (size_t i = 0; i < c->n_local_domains; i++) {
		const char *d = c->local_domains[i];
		if (!d[0] || strcmp(d, "@") == 0)
			abort();
		for (const char *p = d; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				abort();
	}
	if (c->recipients_max < 1 || c->smtp_line_max < 512 || c->smtp_line_max > 65536 ||
	    c->message_line_max < 78 || c->message_size_limit < 1024 ||
	    c->smtp_receive_timeout < 1 || c->smtp_workers > 256)
		abort();
	/* Authentication settings the auth process and workers rely on. */
	if (!c->auth_backend || (strcmp(c->auth_backend, "none") != 0 &&
				 strcmp(c->auth_backend, "passwd-file") != 0 &&
				 strcmp(c->auth_backend, "sqlite") != 0 &&
				 strcmp(c->auth_backend, "dovecot") != 0))
		abort();
	const char *const paths[] = { c->auth_passwd_file, c->auth_sqlite_database,
				      c->auth_dovecot_socket };
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (!paths[i] || paths[i][0] != '/')
			abort();
	const char *const optional[] = { c->aliases_file, c->virtual_alias_file,
					 c->submission_senders_file };
	for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
		if (optional[i] && optional[i][0] != '/')
			abort();
	if (c->auth_mechanisms == 0 || (c->auth_mechanisms & ~7u) != 0)
		abort();
	if (c->auth_fail_delay_after < 1 ||
	    c->auth_fail_block_after <= c->auth_fail_delay_after ||
	    c->auth_fail_window < 1 || c->auth_fail_block_time < 1 ||
	    c->auth_fail_max_delay > 60000)
		abort();
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].role == CONF_ROLE_SUBMISSION && !c->listeners[i].auth)
			abort();
	for (size_t i = 0; i < c->n_warnings; i++)
		if (!c->warnings[i])
			abort();
	/* Each listener ACL is one of the configuration's and fits its stage. */
	for (size_t i = 0; i < c->n_listeners; i++) {
		for (int k = 0; k < ACL_NSTAGES; k++) {
			const struct acl *a = c->listeners[i].acl[k];
			if (!a)
				continue;
			bool found = false;
			for (size_t j = 0; j < c->n_acls; j++)
				found = found || c->acls[j] == a;
			struct err e;
			if (!found || acl_check_stage(a, (enum acl_stage)k, &e) != 0)
				abort();
		}
	}
	for (size_t i = 0; i < c->n_acls; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(acl_name(c->acls[i]), acl_name(c->acls[j])) == 0)
				abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Layout: flags byte, then "-oX value" up to the first 0x01 (if the
	 * flags ask for one), then the configuration text. */
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	data++;
	size--;
	char *ox = NULL;
	if (flags & 2) {
		const uint8_t *sep = memchr(data, 0x01, size);
		size_t n = sep ? (size_t)(sep - data) : size;
		ox = strndup((const char *)data, n);
		if (!ox)
			return 0;
		data += sep ? n + 1 : n;
		size -= sep ? n + 1 : n;
	}
	char *text = malloc(size + 1);
	if (!text) {
		free(ox);
		return 0;
	}
	memcpy(text, data, size);
	text[size] = '\0';
	/* The string API stops at a NUL; feed what precedes it. */
	bool tls_all = flags & 1;
	struct conf *c = NULL;
	struct err e;
	e.msg[0] = '\0';
	if (conf_load_string("fuzz.conf", text, ox, tls_all, &c, &e) == 0) {
		if (!c)
			abort();
		check(c, tls_all);
		FILE *f = fopen("/dev/null", "w");
		if (f) {
			if (conf_print(f, c, NULL) != 0 || conf_print(f, c, "user") != 0 ||
			    conf_print(f, c, "auth_mechanisms") != 0 ||
			    conf_print(f, c, "no_such_option") != -1)
				abort();
			fclose(f);
		}
		conf_free(c);
	} else {
		if (c || strncmp(e.msg, "fuzz.conf", 9) != 0)
			abort();
	}
	free(ox);
	free(text);
	return 0;
}
