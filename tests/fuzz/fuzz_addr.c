/*
 * Fuzzes smtp_parse_path under every flag combination and checks that
 * results are views inside the input, within the RFC 5321 §4.5.3.1 limits,
 * consistent with each other and monotonic in the flags.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ALL_FLAGS (SMTP_PATH_ALLOW_NULL | SMTP_PATH_UTF8 | SMTP_PATH_ALLOW_BARE)

static bool inside(const char *v, size_t vl, const char *base, size_t n)
{
	return v >= base && vl <= n && (size_t)(v - base) <= n - vl;
}

static void check_ok(const char *p, size_t n, unsigned flags, const struct smtp_path *a,
		     size_t used)
{
	if (used < 2 || used > n || used > 256 || p[0] != '<' || p[used - 1] != '>')
		abort();
	if (!inside(a->mailbox, a->mailbox_len, p, used) || !inside(a->local, a->local_len, p, used))
		abort();
	if (a->is_null) {
		if (!(flags & SMTP_PATH_ALLOW_NULL) || used != 2 || a->mailbox_len != 0 ||
		    a->domain || a->has_route || a->quoted || a->utf8)
			abort();
		return;
	}
	if (a->local_len == 0 || a->local_len > 64 || a->mailbox != a->local)
		abort();
	if (a->quoted &&
	    (a->local_len < 2 || a->local[0] != '"' || a->local[a->local_len - 1] != '"'))
		abort();
	if (a->domain) {
		if (!inside(a->domain, a->domain_len, p, used) || a->domain_len == 0 ||
		    a->domain_len > 255)
			abort();
		if (a->local[a->local_len] != '@' || a->domain != a->local + a->local_len + 1 ||
		    a->mailbox_len != a->local_len + 1 + a->domain_len)
			abort();
		if (a->domain + a->domain_len != p + used - 1)
			abort();
		if (a->domain_literal != (a->domain[0] == '[') ||
		    (a->domain_literal && a->domain[a->domain_len - 1] != ']'))
			abort();
		if (a->domain[0] == '.' || a->domain[0] == '-' ||
		    (a->domain_len >= 2 && a->domain[a->domain_len - 1] == '.' &&
		     a->domain[a->domain_len - 2] == '.'))
			abort();
		if (!a->domain_literal) {
			/* The domain matches a list holding itself, normalised. */
			size_t dl = a->domain_len;
			if (a->domain[dl - 1] == '.')
				dl--;
			char *low = str_ndup(a->domain, dl);
			str_lower(low);
			const char *const list[] = { low };
			if (!smtp_domain_in_list(a->domain, a->domain_len, list, 1))
				abort();
			free(low);
		}
	} else {
		if (!(flags & SMTP_PATH_ALLOW_BARE) || a->has_route || a->quoted ||
		    a->domain_literal || a->mailbox_len != a->local_len ||
		    !str_eq_nocase(a->local, a->local_len, "postmaster") || used != a->local_len + 2)
			abort();
	}
	if (a->has_route != (p[1] == '@'))
		abort();
	bool high = false;
	for (size_t k = 0; k < used; k++) {
		unsigned char c = (unsigned char)p[k];
		if (c >= 0x80)
			high = true;
		/* Outside quotes nothing below '!' is allowed; inside, only SP. */
		if (c < 0x20 || c == 0x7f)
			abort();
	}
	if (a->utf8 != high || (a->utf8 && !(flags & SMTP_PATH_UTF8)))
		abort();
}

struct hdr_ctx {
	const char *base;
	size_t n;
	size_t calls;
};

static void hdr_cb(const char *a, size_t n, void *arg)
{
	struct hdr_ctx *h = arg;
	/* Every address handed out is no longer than the value and holds an
	 * '@' (it may be a copy: display-name words are dropped). */
	if (n == 0 || n > h->n || !memchr(a, '@', n))
		abort();
	h->calls++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	{
		struct hdr_ctx h = { p, size, 0 };
		int r = smtp_header_addresses(p, size, 16, hdr_cb, &h);
		if (r > 16 || (r >= 0 && (size_t)r != h.calls))
			abort();
	}
	enum smtp_path_error res[ALL_FLAGS + 1];
	size_t used_by[ALL_FLAGS + 1];

	for (unsigned flags = 0; flags <= ALL_FLAGS; flags++) {
		struct smtp_path a;
		size_t used = 99999;
		enum smtp_path_error r = smtp_parse_path(p, size, flags, &a, &used);
		res[flags] = r;
		used_by[flags] = used;
		if (r > SMTP_PATH_BAD_UTF8)
			abort();
		if (r != SMTP_PATH_OK) {
			if (used != 0)
				abort();
			continue;
		}
		check_ok(p, size, flags, &a, used);

		/* Only the bytes through '>' matter. */
		struct smtp_path b;
		size_t used2;
		if (smtp_parse_path(p, used, flags, &b, &used2) != SMTP_PATH_OK || used2 != used ||
		    b.mailbox != a.mailbox || b.mailbox_len != a.mailbox_len)
			abort();
		/* Without the '>' it cannot parse. */
		if (smtp_parse_path(p, used - 1, flags, &b, &used2) == SMTP_PATH_OK)
			abort();
	}

	for (unsigned f = 0; f <= ALL_FLAGS; f++) {
		/* More permissive flags never turn success into failure. */
		for (unsigned g = 0; g <= ALL_FLAGS; g++)
			if ((f & g) == f && res[f] == SMTP_PATH_OK &&
			    (res[g] != SMTP_PATH_OK || used_by[g] != used_by[f]))
				abort();
		/* Bad UTF-8 is bad whatever the flags. */
		if ((res[f] == SMTP_PATH_BAD_UTF8) != (res[0] == SMTP_PATH_BAD_UTF8))
			abort();
		/* Non-ASCII is only ever refused for want of SMTPUTF8. */
		if (res[f] == SMTP_PATH_NON_ASCII) {
			enum smtp_path_error u = res[f | SMTP_PATH_UTF8];
			if (f & SMTP_PATH_UTF8 || (u != SMTP_PATH_OK && u != SMTP_PATH_TOO_LONG))
				abort();
		}
	}
	return 0;
}
