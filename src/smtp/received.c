/*
 * The Received: trace header (RFC 5321 §4.4) with the protocol names of
 * RFC 3848 and RFC 6531.  Only text we validated or produced ourselves goes
 * into it, so that a client cannot inject header lines.
 */
#include <stdio.h>
#include <string.h>

#include "smtp.h"

/* True if s may appear in a header: no controls, no CR/LF, printable
 * ASCII (or UTF-8 when utf8), and not empty. */
static bool header_safe(const char *s, bool utf8)
{
	if (!s || !*s)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p >= 0x80 ? !utf8 : (*p < 0x21 || *p == 0x7f))
			return false;
	}
	return true;
}

/* A DNS name as resolved: letters, digits, '-', '.', '_' only. */
static bool dns_name_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 255)
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

/* A user name inside the comment: printable ASCII that cannot end the
 * comment or escape from it, of a sane length. */
static bool comment_safe(const char *s)
{
	if (!header_safe(s, false) || strlen(s) > 256)
		return false;
	return strpbrk(s, "()\\") == NULL;
}

static const char *received_proto(const struct smtp_policy *p, const struct smtp_envelope *env,
				  char *tmp, size_t n)
{
	bool tls = env->tls_version != NULL;
	/* "A" says SMTP AUTH was used (RFC 3848); a local submission's user
	 * comes from the kernel, and the comment names it (auth=uid:N). */
	bool auth = env->auth_user != NULL && p->role != SMTP_ROLE_LOCAL;
	if (!env->esmtp)
		return "SMTP";
	const char *base = env->smtputf8 ? "UTF8SMTP" : "ESMTP";
	snprintf(tmp, n, "%s%s%s", base, tls ? "S" : "", auth ? "A" : "");
	return tmp;
}

void smtp_received_header(struct buf *out, const struct smtp_policy *p,
			  const struct smtp_client *c, const struct smtp_envelope *env,
			  const char *queue_id, const char *date)
{
	char proto[16];
	const char *helo = header_safe(env->helo, false) ? env->helo : "unknown";
	const char *ip = header_safe(c->ip, false) ? c->ip : "unknown";
	/* A submission server may keep its users' addresses private. */
	if (p->role == SMTP_ROLE_SUBMISSION && p->hide_client_ip) {
		/* Clients often greet with their address as a literal: that
		 * would give away exactly what the option hides. */
		if (helo[0] == '[')
			helo = "localhost";
		buf_printf(out, "Received: from %s\r\n", helo);
	} else if (p->role == SMTP_ROLE_LOCAL) {
		/* A local program: no TCP connection, so no TCP-info (RFC 5321
		 * 4.4); the comment below names the user. */
		buf_printf(out, "Received: from %s\r\n", helo);
	} else {
		buf_printf(out, "Received: from %s (", helo);
		if (dns_name_ok(c->rdns))
			buf_printf(out, "%s ", c->rdns);
		/* An address literal: IPv6 ones are tagged (RFC 5321 4.1.3). */
		buf_printf(out, "[%s%s])\r\n", strchr(ip, ':') ? "IPv6:" : "", ip);
	}
	buf_printf(out, "\tby %s (sluice) with %s\r\n", p->hostname,
		   received_proto(p, env, proto, sizeof(proto)));
	buf_printf(out, "\t(role=%s", smtp_role_name(p->role));
	if (env->auth_user && comment_safe(env->auth_user))
		buf_printf(out, " auth=%s", env->auth_user);
	if (env->tls_version && header_safe(env->tls_version, false))
		buf_printf(out, " tls=%s", env->tls_version);
	if (env->tls_version && header_safe(env->tls_cipher, false))
		buf_printf(out, " cipher=%s", env->tls_cipher);
	buf_printf(out, ")\r\n\tid %s", queue_id);
	if (env->n_rcpts == 1 && header_safe(env->rcpts[0].addr, env->smtputf8) &&
	    strlen(env->rcpts[0].addr) <= 256)
		buf_printf(out, "\r\n\tfor <%s>", env->rcpts[0].addr);
	buf_printf(out, ";\r\n\t%s\r\n", date);
}
