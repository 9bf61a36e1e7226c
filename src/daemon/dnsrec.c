/*
 * The DNS records a domain needs for this server, ready to paste into a
 * zone file: MX, the RFC 6186 / RFC 8314 §5.1 SRV records that let mail
 * clients find the submission ports (465 preferred), and starting points
 * for SPF, DMARC, MTA-STS and TLS-RPT.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

static bool domain_ok(const char *d)
{
	size_t n = strlen(d);
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)d[i];
		if (!isalnum(ch) && ch != '-' && ch != '.')
			return false;
	}
	return d[0] != '.' && d[0] != '-' && strstr(d, "..") == NULL;
}

static const struct conf_listener *find(const struct conf *c, enum conf_role role,
					enum conf_tls_mode tls)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (c->listeners[i].role == role && c->listeners[i].tls == tls)
			return &c->listeners[i];
	return NULL;
}

int dns_records_print(FILE *f, const struct conf *c, const char *domain_in)
{
	char domain[256];
	snprintf(domain, sizeof(domain), "%s", domain_in);
	size_t n = strlen(domain);
	if (n > 0 && domain[n - 1] == '.')
		domain[n - 1] = '\0';
	for (char *p = domain; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	if (!domain_ok(domain)) {
		fprintf(stderr, "sluice: '%s' is not a domain name\n", domain_in);
		return 1;
	}
	const char *host = c->primary_hostname;
	const struct conf_listener *mx = find(c, CONF_ROLE_MX, CONF_TLS_STARTTLS);
	if (!mx)
		mx = find(c, CONF_ROLE_MX, CONF_TLS_NONE);
	const struct conf_listener *subs = find(c, CONF_ROLE_SUBMISSION, CONF_TLS_ON_CONNECT);
	const struct conf_listener *sub = find(c, CONF_ROLE_SUBMISSION, CONF_TLS_STARTTLS);

	fprintf(f, "; DNS records for %s served by %s (sluice)\n", domain, host);
	fprintf(f, "; Check every line before publishing it; replace what is in <>.\n\n");
	fprintf(f, "; Mail for %s is delivered to this host (RFC 5321 section 5).\n", domain);
	if (!mx || mx->port != 25)
		fprintf(f, "; Note: no mx listener on port 25 in this configuration; other MTAs "
			   "only ever connect to port 25.\n");
	fprintf(f, "%s.\t\tIN MX\t10 %s.\n\n", domain, host);

	fprintf(f, "; Mail clients find the submission ports (RFC 6186; RFC 8314 section 5.1:\n");
	fprintf(f, "; TLS on connect is preferred, so it gets the lower priority number).\n");
	if (subs)
		fprintf(f, "_submissions._tcp.%s.\tIN SRV\t0 1 %u %s.\n", domain, subs->port, host);
	if (sub)
		fprintf(f, "_submission._tcp.%s.\tIN SRV\t%d 1 %u %s.\n", domain, subs ? 10 : 0,
			sub->port, host);
	if (!subs && !sub)
		fprintf(f, "; (no submission listener configured: clients cannot submit mail)\n");
	fprintf(f, "\n");

	fprintf(f, "; SPF (RFC 7208): only the domain's MX hosts send its mail.\n");
	fprintf(f, "%s.\t\tIN TXT\t\"v=spf1 mx -all\"\n\n", domain);

	fprintf(f, "; DMARC (RFC 7489): start with p=none and reports, tighten later.\n");
	fprintf(f, "_dmarc.%s.\tIN TXT\t\"v=DMARC1; p=none; rua=mailto:postmaster@%s\"\n\n",
		domain, domain);

	fprintf(f, "; MTA-STS (RFC 8461): change id whenever the policy changes, and serve\n");
	fprintf(f, "; https://mta-sts.%s/.well-known/mta-sts.txt containing:\n", domain);
	fprintf(f, ";   version: STSv1\n;   mode: testing\n;   mx: %s\n;   max_age: 86400\n",
		host);
	fprintf(f, "_mta-sts.%s.\tIN TXT\t\"v=STSv1; id=<yyyymmddnn>\"\n", domain);
	fprintf(f, "mta-sts.%s.\tIN CNAME\t<your web server>.\n\n", domain);

	fprintf(f, "; SMTP TLS reporting (RFC 8460).\n");
	fprintf(f, "_smtp._tls.%s.\tIN TXT\t\"v=TLSRPTv1; rua=mailto:postmaster@%s\"\n", domain,
		domain);
	return 0;
}
