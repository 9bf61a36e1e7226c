/*
 * DNS routing with libunbound: MX (RFC 5321 5.1), Null MX (RFC 7505),
 * then AAAA and A of every host, all asynchronous.
 *
 * Background mode.  libunbound answers asynchronous queries from a
 * background worker and reports through a pipe whose read end ub_fd()
 * gives: the runner's event loop watches it and calls ub_process(), so
 * no callback ever runs outside our own loop.  The worker is either a
 * thread in this process (ub_ctx_async(ctx, 1)) or a forked process
 * (ub_ctx_async(ctx, 0)).  We fork: the runner stays single-threaded
 * (no locks to reason about, signals and later fork()s behave as in any
 * one-threaded program), and the resolver's memory, sockets and parser
 * live in another address space.  The price: the child is forked at the
 * first query and keeps copies of the descriptors open at that moment,
 * so dns_start lets the runner fork it early, right after dropping
 * privileges and before it opens connections.
 *
 * Files.  libunbound reads resolv.conf and its config file when told,
 * but trust anchors, root hints, zone files and local zones only when
 * the context is "finalized", which normally happens at the first
 * query, after the runner has dropped privileges.  ub_ctx_zone_remove
 * is documented to finalize the context and to do nothing for a zone
 * that does not exist: dns_new calls it on a name nobody configures.
 *
 * Everything read from an answer is checked here again: rdata lengths,
 * name syntax, and how many hosts and addresses are followed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <idn2.h>
#include <unbound.h>

#include "deliver.h"

/* RFC 5321 asks clients to try every MX host; past a few the rest only
 * cost queries and time, and a hostile domain could list thousands. */
#define DNS_MX_MAX 10
/* Addresses kept per host and family: more would only be tried after
 * the first ones failed, which says the host is down anyway. */
#define DNS_ADDR_MAX 16
/* MX records looked at: the answer's 64 KiB could hold thousands, and
 * the duplicate check is quadratic. */
#define DNS_MX_SCAN 256
#define DNS_TEXT_MAX 253 /* a name in text, without the final dot */
#define DNS_WHY_MAX 512

#define DNS_T_A 1
#define DNS_T_MX 15
#define DNS_T_AAAA 28
#define DNS_C_IN 1

struct dns_lookup;

/* The mydata of one libunbound query: which lookup, which host. */
struct dns_q {
	struct dns_lookup *lk;
	size_t host; /* index into lk->hosts; unused for the MX query */
	int type;
};

struct dns_mx {
	char *name;
	unsigned pref;
	uint32_t key; /* random: order among equal preferences */
	bool tempfail;
	struct sockaddr_storage a6[DNS_ADDR_MAX], a4[DNS_ADDR_MAX];
	size_t n6, n4;
	struct dns_q q6, q4;
};

struct dns_lookup {
	struct dns *d;
	struct dns_lookup *prev, *next;
	char *domain; /* checked, without the final dot */
	dns_route_cb cb;
	void *arg;
	struct dns_q mxq;
	struct dns_mx *hosts;
	size_t n_hosts;
	size_t pending; /* address queries not answered yet */
};

struct dns {
	struct ub_ctx *ctx;
	struct dns_lookup *lookups;
	bool failed; /* the background worker is gone */
};

/* ---- names ----------------------------------------------------------- */

static bool dns_label_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* A host name in text: labels of 1..63 letters, digits, '-' or '_';
 * at most DNS_TEXT_MAX characters; one final dot allowed.  Returns its
 * length without that dot, or 0 if it is not acceptable. */
static size_t dns_text_check(const char *s)
{
	size_t n = strnlen(s, DNS_TEXT_MAX + 2);
	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || n > DNS_TEXT_MAX)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (dns_label_char(c) && label < 63) {
			label++;
		} else {
			return 0;
		}
	}
	return label ? n : 0;
}

/*
 * An uncompressed wire-format name at p[0..n) (libunbound hands out
 * rdata with names already decompressed), to text in out.  *root is set
 * for the root name.  Returns the wire length, or 0 if malformed:
 * compression pointers, labels running past the end, bytes that do not
 * belong in a host name, or a name longer than allowed.
 */
static size_t dns_wire_name(const uint8_t *p, size_t n, struct buf *out, bool *root)
{
	size_t pos = 0;
	*root = false;
	buf_reset(out);
	for (;;) {
		if (pos >= n)
			return 0;
		uint8_t l = p[pos++];
		if (l == 0)
			break;
		if (l > 63 || l > n - pos)
			return 0;
		if (buf_len(out) > 0 && buf_append(out, ".", 1) < 0)
			return 0;
		for (size_t i = 0; i < l; i++)
			if (!dns_label_char(p[pos + i]))
				return 0;
		/* Lowercase: names compare case-insensitively, and answers
		 * may echo the question's case (0x20 randomisation too). */
		for (size_t i = 0; i < l; i++) {
			uint8_t c = p[pos + i];
			if (c >= 'A' && c <= 'Z')
				c = (uint8_t)(c - 'A' + 'a');
			if (buf_append(out, &c, 1) < 0)
				return 0;
		}
		pos += l;
	}
	if (buf_len(out) == 0)
		*root = true;
	if (!buf_cstr(out))
		return 0;
	return pos;
}

/* ---- context --------------------------------------------------------- */

static int dns_ub_err(struct err *e, const char *what, int r)
{
	if (r == UB_READFILE)
		return err_set(e, "%s: %s", what, strerror(errno));
	return err_set(e, "%s: %s", what, ub_strerror(r));
}

int dns_new(const struct dns_conf *c, struct dns **out, struct err *e)
{
	*out = NULL;
	struct ub_ctx *ctx = ub_ctx_create();
	if (!ctx)
		return err_set(e, "libunbound: cannot create a context: %s", strerror(errno));
	int r = ub_ctx_async(ctx, 0);
	if (r != 0) {
		ub_ctx_delete(ctx);
		return dns_ub_err(e, "libunbound background mode", r);
	}
	if (c && c->resolv_conf && *c->resolv_conf) {
		errno = 0;
		r = ub_ctx_resolvconf(ctx, c->resolv_conf);
		if (r != 0) {
			err_set(e, "%s: %s", c->resolv_conf,
				r == UB_READFILE ? strerror(errno) : ub_strerror(r));
			ub_ctx_delete(ctx);
			return -1;
		}
	}
	if (c && c->unbound_conf && *c->unbound_conf) {
		r = ub_ctx_config(ctx, c->unbound_conf);
		if (r != 0) {
			/* libunbound has logged the line at fault on stderr. */
			err_set(e, "%s: %s (unreadable, or a syntax error)", c->unbound_conf,
				ub_strerror(r));
			ub_ctx_delete(ctx);
			return -1;
		}
	}
	/* Finalize now: see the top of this file. */
	r = ub_ctx_zone_remove(ctx, "finalize.sluice.invalid.");
	if (r != 0) {
		dns_ub_err(e, "libunbound setup (trust anchors, hints, zones)", r);
		ub_ctx_delete(ctx);
		return -1;
	}
	struct dns *d = xcalloc(1, sizeof(*d));
	d->ctx = ctx;
	*out = d;
	return 0;
}

static void dns_lookup_free(struct dns_lookup *lk)
{
	for (size_t i = 0; i < lk->n_hosts; i++)
		free(lk->hosts[i].name);
	free(lk->hosts);
	free(lk->domain);
	free(lk);
}

static void dns_unlink(struct dns_lookup *lk)
{
	struct dns *d = lk->d;
	if (lk->prev)
		lk->prev->next = lk->next;
	else
		d->lookups = lk->next;
	if (lk->next)
		lk->next->prev = lk->prev;
	lk->prev = lk->next = NULL;
}

void dns_free(struct dns *d)
{
	if (!d)
		return;
	/* Deleting the context stops the worker and drops its queries
	 * without calling back; only then is our query state unused. */
	ub_ctx_delete(d->ctx);
	while (d->lookups) {
		struct dns_lookup *lk = d->lookups;
		dns_unlink(lk);
		dns_lookup_free(lk);
	}
	free(d);
}

int dns_fd(struct dns *d)
{
	return ub_fd(d->ctx);
}

static void dns_noop_cb(void *arg, int err, struct ub_result *res)
{
	ub_resolve_free(res);
}

int dns_start(struct dns *d, struct err *e)
{
	/* Any query forks the worker; this one is cancelled at once (its
	 * answer, local by default, is dropped unread). */
	int id = 0;
	int r = ub_resolve_async(d->ctx, "localhost.", DNS_T_A, DNS_C_IN, NULL, dns_noop_cb, &id);
	if (r != 0)
		return dns_ub_err(e, "libunbound start", r);
	ub_cancel(d->ctx, id);
	return 0;
}

bool dns_failed(const struct dns *d)
{
	return d->failed;
}

/* ---- finishing ------------------------------------------------------- */

static void dns_finish(struct dns_lookup *lk, enum dns_status st, const char *why)
{
	struct dns_route r = { .status = st };
	struct dns_host *hosts = NULL;
	char *why_copy = NULL;
	if (st == DNS_OK) {
		hosts = xcalloc(lk->n_hosts ? lk->n_hosts : 1, sizeof(*hosts));
		for (size_t i = 0; i < lk->n_hosts; i++) {
			struct dns_mx *m = &lk->hosts[i];
			size_t n = m->n6 + m->n4;
			if (n == 0)
				continue;
			struct dns_host *h = &hosts[r.n_hosts++];
			h->name = m->name;
			h->pref = m->pref;
			h->addrs = xcalloc(n, sizeof(*h->addrs));
			/* IPv6 first: where both work it is the future-proof
			 * path, and a dead one falls through to IPv4 at once. */
			memcpy(h->addrs, m->a6, m->n6 * sizeof(*h->addrs));
			memcpy(h->addrs + m->n6, m->a4, m->n4 * sizeof(*h->addrs));
			h->n_addrs = n;
		}
		r.hosts = hosts;
	} else {
		why_copy = str_dup(why ? why : "");
		r.why = why_copy;
	}
	dns_unlink(lk);
	lk->cb(lk->arg, &r);
	for (size_t i = 0; i < r.n_hosts; i++)
		free(hosts[i].addrs);
	free(hosts);
	free(why_copy);
	dns_lookup_free(lk);
}

/* The last address answer is in: the route is known. */
static void dns_addrs_done(struct dns_lookup *lk)
{
	bool any = false, tempfail = false;
	for (size_t i = 0; i < lk->n_hosts; i++) {
		if (lk->hosts[i].n6 + lk->hosts[i].n4 > 0)
			any = true;
		if (lk->hosts[i].tempfail)
			tempfail = true;
	}
	if (any) {
		dns_finish(lk, DNS_OK, NULL);
		return;
	}
	struct buf why;
	buf_init(&why, DNS_WHY_MAX);
	if (tempfail)
		buf_printf(&why, "address lookup for the mail hosts of %s failed temporarily",
			   lk->domain);
	else
		buf_printf(&why, "no address for any mail host of %s", lk->domain);
	dns_finish(lk, tempfail ? DNS_TEMPFAIL : DNS_NOTFOUND, buf_cstr(&why));
	buf_free(&why);
}

static const char *dns_rcode_name(int rcode)
{
	switch (rcode) {
	case 1: return "FORMERR";
	case 2: return "SERVFAIL";
	case 4: return "NOTIMP";
	case 5: return "REFUSED";
	default: return "error";
	}
}

/* ---- address answers ------------------------------------------------- */

static void dns_addr_cb(void *my, int err, struct ub_result *res)
{
	struct dns_q *q = my;
	struct dns_lookup *lk = q->lk;
	struct dns_mx *m = &lk->hosts[q->host];
	if (err != 0 || !res || res->bogus || (res->rcode != 0 && res->rcode != 3)) {
		m->tempfail = true;
	} else if (res->havedata) {
		for (size_t i = 0; res->data[i]; i++) {
			if (q->type == DNS_T_AAAA && res->len[i] == 16 && m->n6 < DNS_ADDR_MAX) {
				struct sockaddr_in6 *s = (struct sockaddr_in6 *)&m->a6[m->n6++];
				s->sin6_family = AF_INET6;
				memcpy(&s->sin6_addr, res->data[i], 16);
			} else if (q->type == DNS_T_A && res->len[i] == 4 && m->n4 < DNS_ADDR_MAX) {
				struct sockaddr_in *s = (struct sockaddr_in *)&m->a4[m->n4++];
				s->sin_family = AF_INET;
				memcpy(&s->sin_addr, res->data[i], 4);
			}
		}
	}
	/* NXDOMAIN and NODATA: this host simply has no such address. */
	ub_resolve_free(res);
	if (--lk->pending == 0)
		dns_addrs_done(lk);
}

static void dns_query_addrs(struct dns_lookup *lk)
{
	struct buf qn;
	buf_init(&qn, DNS_TEXT_MAX + 2);
	lk->pending = 1; /* held until all are sent, so none finishes early */
	for (size_t i = 0; i < lk->n_hosts; i++) {
		struct dns_mx *m = &lk->hosts[i];
		buf_reset(&qn);
		buf_printf(&qn, "%s.", m->name);
		const char *name = buf_cstr(&qn);
		struct dns_q *qs[2] = { &m->q6, &m->q4 };
		int types[2] = { DNS_T_AAAA, DNS_T_A };
		for (int k = 0; k < 2; k++) {
			*qs[k] = (struct dns_q){ .lk = lk, .host = i, .type = types[k] };
			if (ub_resolve_async(lk->d->ctx, name, types[k], DNS_C_IN, qs[k],
					     dns_addr_cb, NULL) == 0)
				lk->pending++;
			else
				m->tempfail = true;
		}
	}
	buf_free(&qn);
	if (--lk->pending == 0)
		dns_addrs_done(lk);
}

/* ---- MX answer ------------------------------------------------------- */

static int dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return 0;
}

/* Builds lk->hosts from the MX rdata; returns the status to finish with
 * now, or DNS_OK to go on with address lookups. */
static enum dns_status dns_mx_parse(struct dns_lookup *lk, struct ub_result *res, struct buf *why)
{
	size_t count = 0;
	while (res->data[count] && count < DNS_MX_SCAN)
		count++;
	struct dns_mx *c = xcalloc(count, sizeof(*c));
	size_t n = 0, roots = 0, bad = 0;
	struct buf name;
	buf_init(&name, DNS_TEXT_MAX);
	for (size_t i = 0; i < count; i++) {
		const uint8_t *p = (const uint8_t *)res->data[i];
		int len = res->len[i];
		bool root = false;
		if (len < 3) {
			bad++;
			continue;
		}
		size_t used = dns_wire_name(p + 2, (size_t)len - 2, &name, &root);
		if (used == 0 || used != (size_t)len - 2) {
			bad++;
			continue;
		}
		if (root) {
			roots++;
			continue;
		}
		unsigned pref = ((unsigned)p[0] << 8) | p[1];
		/* One host listed twice is tried once, at its best preference. */
		bool dup = false;
		for (size_t j = 0; j < n; j++) {
			if (strcmp(c[j].name, buf_cstr(&name)) == 0) {
				if (pref < c[j].pref) {
					c[j].pref = pref;
					free(c[j].name);
					c[j].name = str_dup(buf_cstr(&name));
				}
				dup = true;
				break;
			}
		}
		if (!dup) {
			c[n].name = str_dup(buf_cstr(&name));
			c[n].pref = pref;
			n++;
		}
	}
	buf_free(&name);

	enum dns_status st = DNS_OK;
	if (roots == 1 && count == 1) {
		/* RFC 7505: a single MX of "." says the domain takes no mail,
		 * whatever its preference. */
		st = DNS_NULLMX;
		buf_printf(why, "%s does not accept mail (null MX)", lk->domain);
	} else if (n == 0) {
		/* Records exist but none names a usable host ("." mixed with
		 * others, or malformed): nothing a retry would change. */
		st = DNS_NOTFOUND;
		buf_printf(why, "no usable MX host for %s (%zu malformed, %zu null)", lk->domain,
			   bad, roots);
	}
	if (st != DNS_OK) {
		for (size_t j = 0; j < n; j++)
			free(c[j].name);
		free(c);
		return st;
	}

	uint32_t *keys = xcalloc(n, sizeof(*keys));
	/* Without randomness equal preferences keep the answer's order,
	 * which is still a valid (if unbalanced) choice. */
	if (rand_bytes(keys, n * sizeof(*keys)) < 0)
		memset(keys, 0, n * sizeof(*keys));
	for (size_t j = 0; j < n; j++)
		c[j].key = keys[j];
	free(keys);
	qsort(c, n, sizeof(*c), dns_mx_cmp);
	for (size_t j = DNS_MX_MAX; j < n; j++)
		free(c[j].name);
	lk->hosts = c;
	lk->n_hosts = n < DNS_MX_MAX ? n : DNS_MX_MAX;
	return DNS_OK;
}

static void dns_mx_cb(void *my, int err, struct ub_result *res)
{
	struct dns_q *q = my;
	struct dns_lookup *lk = q->lk;
	struct buf why;
	buf_init(&why, DNS_WHY_MAX);
	enum dns_status st = DNS_OK;

	if (err != 0) {
		st = DNS_TEMPFAIL;
		buf_printf(&why, "MX lookup for %s: %s", lk->domain, ub_strerror(err));
	} else if (res->bogus) {
		st = DNS_TEMPFAIL;
		buf_printf(&why, "MX lookup for %s: DNSSEC validation failed", lk->domain);
		if (res->why_bogus) {
			buf_puts(&why, ": ");
			str_escape(&why, res->why_bogus, strlen(res->why_bogus), 200);
		}
	} else if (res->rcode == 3 || res->nxdomain) {
		st = DNS_NOTFOUND;
		buf_printf(&why, "no such domain: %s", lk->domain);
	} else if (res->rcode != 0) {
		st = DNS_TEMPFAIL;
		buf_printf(&why, "MX lookup for %s: %s", lk->domain, dns_rcode_name(res->rcode));
	} else if (res->havedata) {
		st = dns_mx_parse(lk, res, &why);
	} else {
		/* No MX: the domain itself is the implicit MX, preference 0. */
		lk->hosts = xcalloc(1, sizeof(*lk->hosts));
		lk->hosts[0].name = str_dup(lk->domain);
		lk->n_hosts = 1;
	}
	ub_resolve_free(res);
	if (st != DNS_OK)
		dns_finish(lk, st, buf_cstr(&why));
	else
		dns_query_addrs(lk);
	buf_free(&why);
}

/* ---- entry points ---------------------------------------------------- */

/* An internationalised domain (UTF-8, from an SMTPUTF8 message) is looked
 * up by its ASCII form (IDNA2008 A-labels, RFC 5891): *out gets that form,
 * to be freed with idn2_free, or NULL when domain is ASCII already. */
static int dns_idna(const char *domain, char **out, struct err *e)
{
	*out = NULL;
	if (!str_has_8bit(domain, strlen(domain)))
		return 0;
	int r = idn2_to_ascii_8z(domain, out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (r != IDN2_OK) {
		*out = NULL;
		return err_set(e, "domain has no IDNA form (%s)", idn2_strerror(r));
	}
	return 0;
}

int dns_route_lookup(struct dns *d, const char *domain, dns_route_cb cb, void *arg,
		     struct err *e)
{
	if (d->failed)
		return err_set(e, "resolver not running");
	char *alabel = NULL;
	if (domain && dns_idna(domain, &alabel, e) < 0)
		return -1;
	if (alabel)
		domain = alabel;
	size_t n = domain ? dns_text_check(domain) : 0;
	if (n == 0) {
		idn2_free(alabel);
		return err_set(e, "not a valid domain name for DNS");
	}
	struct dns_lookup *lk = xcalloc(1, sizeof(*lk));
	lk->d = d;
	lk->domain = str_ndup(domain, n);
	idn2_free(alabel);
	str_lower(lk->domain);
	lk->cb = cb;
	lk->arg = arg;
	lk->mxq = (struct dns_q){ .lk = lk, .type = DNS_T_MX };
	/* Absolute: no search list may turn a domain into another. */
	char *qn = xmalloc(n + 2);
	memcpy(qn, lk->domain, n);
	qn[n] = '.';
	qn[n + 1] = '\0';
	int r = ub_resolve_async(d->ctx, qn, DNS_T_MX, DNS_C_IN, &lk->mxq, dns_mx_cb, NULL);
	free(qn);
	if (r != 0) {
		dns_lookup_free(lk);
		return dns_ub_err(e, "MX lookup", r);
	}
	lk->next = d->lookups;
	if (d->lookups)
		d->lookups->prev = lk;
	d->lookups = lk;
	return 0;
}

void dns_process(struct dns *d)
{
	if (d->failed)
		return;
	int r = ub_process(d->ctx);
	if (r == 0)
		return;
	/* The worker is gone (killed, out of memory): nothing pending will
	 * ever be answered.  Say so to every waiter now. */
	d->failed = true;
	log_event(LOG_LVL_ERR, "dns_failed", "reason=\"%s\"", ub_strerror(r));
	while (d->lookups)
		dns_finish(d->lookups, DNS_TEMPFAIL, "resolver failed");
}
