/*
 * Fuzzes the ACL rule parser and evaluator.  Input: one control byte,
 * then rule lines separated by LF.  Invariants: a refused line adds no
 * rule and says why; every accepted rule prints to a form that parses
 * back to the same print; stage checks agree with acl_stages; evaluation
 * gives a reply of the verdict's class and the rate table stays bounded.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_RATE_MAX 8

static bool has_header(void *arg, const char *name)
{
	const uint8_t *ctl = arg;
	return (strlen(name) + *ctl) % 2 == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	data++;
	size--;
	struct acl *a = acl_new("fuzz", 1);
	int lineno = 0;
	size_t pos = 0;
	while (pos < size) {
		const uint8_t *nl = memchr(data + pos, '\n', size - pos);
		size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
		lineno++;
		size_t before = acl_n_rules(a);
		struct err e;
		e.msg[0] = '\0';
		if (acl_parse_line(a, (const char *)data + pos, n, lineno, &e) < 0) {
			if (acl_n_rules(a) != before || e.msg[0] == '\0')
				abort();
		} else if (acl_n_rules(a) != before + 1 || acl_rule_line(a, before) != lineno) {
			abort();
		}
		pos += n + (nl ? 1 : 0);
	}

	/* Printing round-trips. */
	for (size_t i = 0; i < acl_n_rules(a); i++) {
		struct buf b1, b2;
		buf_init(&b1, 1 << 20);
		buf_init(&b2, 1 << 20);
		acl_format_rule(&b1, a, i);
		struct acl *a2 = acl_new("fuzz", 1);
		struct err e;
		if (acl_parse_line(a2, (const char *)buf_ptr(&b1), buf_len(&b1), 1, &e) < 0)
			abort();
		acl_format_rule(&b2, a2, 0);
		if (buf_len(&b1) != buf_len(&b2) ||
		    memcmp(buf_ptr(&b1), buf_ptr(&b2), buf_len(&b1)) != 0)
			abort();
		acl_free(a2);
		buf_free(&b1);
		buf_free(&b2);
	}

	unsigned st = acl_stages(a);
	for (int s = 0; s < ACL_NSTAGES; s++) {
		struct err e;
		if ((acl_check_stage(a, (enum acl_stage)s, &e) == 0) != ((st >> s) & 1))
			abort();
	}

	/* Evaluate in a few sessions derived from the control byte. */
	struct rate_table *t = rate_new(FUZZ_RATE_MAX, ctl);
	char *domains[] = { "example.org", "mx.example.org" };
	static const char *const users[] = { NULL, "alice", "bob" };
	static const char *const addrs[] = { "", "a@example.org", "b@Sub.Example.ORG.",
					     "c@example.net", "noat" };
	for (int i = 0; i < 12; i++) {
		struct acl_ctx x;
		memset(&x, 0, sizeof(x));
		unsigned v = (unsigned)ctl * 31u + (unsigned)i * 7u;
		x.stage = (enum acl_stage)(v % ACL_NSTAGES);
		if (v & 1) {
			x.client_family = AF_INET;
			x.client_addr[0] = (uint8_t)(v >> 2);
			x.client_addr[3] = (uint8_t)i;
		} else if (v & 2) {
			x.client_family = AF_INET6;
			x.client_addr[0] = 0x20;
			x.client_addr[1] = 0x01;
			x.client_addr[15] = (uint8_t)i;
		}
		x.auth_user = users[v % 3];
		x.tls_version = (v & 4) ? 0x0301 + (int)(v % 4) : 0;
		x.sender = x.stage >= ACL_MAIL ? addrs[v % 5] : NULL;
		x.recipient = x.stage == ACL_RCPT ? addrs[(v / 5) % 5] : NULL;
		x.recipient_local = (int)(v % 3) - 1;
		x.size = (uint64_t)v << (v % 24);
		x.has_header = has_header;
		x.hdr_arg = &ctl;
		x.local_domains = domains;
		x.n_local_domains = 2;
		x.rates = (v & 8) ? NULL : t;
		x.now_s = i * 600;
		struct acl_result r;
		acl_eval(a, &x, &r, NULL, NULL);
		switch (r.verdict) {
		case ACL_ACCEPT:
			if (r.reply)
				abort();
			break;
		case ACL_DENY:
			if (!r.reply || r.reply[0] != '5' || r.rule_line < 1 || r.rule_line > lineno)
				abort();
			break;
		case ACL_DEFER:
			if (!r.reply || r.reply[0] != '4' || r.rule_line < 1 || r.rule_line > lineno)
				abort();
			break;
		default:
			abort();
		}
		if (rate_count(t) > FUZZ_RATE_MAX)
			abort();
	}
	rate_free(t);
	acl_free(a);
	return 0;
}
