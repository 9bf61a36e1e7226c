/*
 * Unit tests of DNS routing against a real libunbound context that
 * answers only from local data: nothing leaves the machine.  Names
 * outside the local zones are forwarded to 127.0.0.1, which libunbound
 * is told not to query (do-not-query-localhost), so they fail at once
 * with SERVFAIL: the temporary-failure path without a timeout.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deliver/deliver.h"

static const char unbound_conf[] =
	"server:\n"
	/* libunbound's own default is "no": then the localhost forwarder
	 * below would be tried and time out instead of failing at once. */
	"\tdo-not-query-localhost: yes\n"
	"\tlocal-zone: \"test.\" static\n"
	/* MX with two hosts, one dual-stack */
	"\tlocal-data: \"one.test. IN MX 20 backup.one.test.\"\n"
	"\tlocal-data: \"one.test. IN MX 10 mail.one.test.\"\n"
	"\tlocal-data: \"mail.one.test. IN A 192.0.2.1\"\n"
	"\tlocal-data: \"mail.one.test. IN A 192.0.2.11\"\n"
	"\tlocal-data: \"mail.one.test. IN AAAA 2001:db8::1\"\n"
	"\tlocal-data: \"backup.one.test. IN A 192.0.2.2\"\n"
	/* Null MX, at preference 0 and at another preference */
	"\tlocal-data: \"null.test. IN MX 0 .\"\n"
	"\tlocal-data: \"nullpref.test. IN MX 10 .\"\n"
	/* "." among real hosts is skipped */
	"\tlocal-data: \"mixnull.test. IN MX 0 .\"\n"
	"\tlocal-data: \"mixnull.test. IN MX 10 ok.partial.test.\"\n"
	/* no MX: implicit MX */
	"\tlocal-data: \"implicit.test. IN A 192.0.2.3\"\n"
	"\tlocal-data: \"implicit.test. IN AAAA 2001:db8::3\"\n"
	/* MX to a host that has no address */
	"\tlocal-data: \"noaddr.test. IN MX 10 nohost.noaddr.test.\"\n"
	"\tlocal-data: \"partial.test. IN MX 10 nohost.partial.test.\"\n"
	"\tlocal-data: \"partial.test. IN MX 20 ok.partial.test.\"\n"
	"\tlocal-data: \"ok.partial.test. IN A 192.0.2.4\"\n"
	/* a name with no MX and no address */
	"\tlocal-data: \"txtonly.test. IN TXT hello\"\n"
	/* the address lookups fail temporarily (REFUSED) */
	"\tlocal-zone: \"refused.test.\" refuse\n"
	"\tlocal-data: \"tf.test. IN MX 10 host.refused.test.\"\n"
	"\tlocal-data: \"tfpart.test. IN MX 10 host.refused.test.\"\n"
	"\tlocal-data: \"tfpart.test. IN MX 20 ok.partial.test.\"\n"
	/* the same host twice */
	"\tlocal-data: \"dup.test. IN MX 30 ok.partial.test.\"\n"
	"\tlocal-data: \"dup.test. IN MX 5 OK.partial.test.\"\n"
	/* equal preferences between a first and a last */
	"\tlocal-data: \"eq.test. IN MX 5 first.eq.test.\"\n"
	"\tlocal-data: \"eq.test. IN MX 10 h1.eq.test.\"\n"
	"\tlocal-data: \"eq.test. IN MX 10 h2.eq.test.\"\n"
	"\tlocal-data: \"eq.test. IN MX 10 h3.eq.test.\"\n"
	"\tlocal-data: \"eq.test. IN MX 10 h4.eq.test.\"\n"
	"\tlocal-data: \"eq.test. IN MX 50 last.eq.test.\"\n"
	"\tlocal-data: \"first.eq.test. IN A 192.0.2.10\"\n"
	"\tlocal-data: \"h1.eq.test. IN A 192.0.2.21\"\n"
	"\tlocal-data: \"h2.eq.test. IN A 192.0.2.22\"\n"
	"\tlocal-data: \"h3.eq.test. IN A 192.0.2.23\"\n"
	"\tlocal-data: \"h4.eq.test. IN A 192.0.2.24\"\n"
	"\tlocal-data: \"last.eq.test. IN A 192.0.2.50\"\n"
	/* more MX hosts than are followed */
	"\tlocal-data: \"many.test. IN MX 1 m1.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 2 m2.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 3 m3.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 4 m4.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 5 m5.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 6 m6.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 7 m7.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 8 m8.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 9 m9.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 10 m10.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 11 m11.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 12 m12.many.test.\"\n"
	"\tlocal-data: \"many.test. IN MX 0 m0.many.test.\"\n"
	"\tlocal-zone: \"many.test.\" redirect\n"
	"\tlocal-data: \"many.test. IN A 192.0.2.99\"\n"
	/* everything else: a forwarder libunbound will not query */
	"forward-zone:\n"
	"\tname: \".\"\n"
	"\tforward-addr: 127.0.0.1@1\n";

static char dir[128];
static char conf_path[256];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/mdns-dns-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(conf_path, sizeof(conf_path), "%s/unbound.conf", dir);
	struct err e;
	assert_int_equal(fs_write_atomic(conf_path, unbound_conf, sizeof(unbound_conf) - 1, 0600, &e), 0);
	return 0;
}

static int teardown(void **state)
{
	unlink(conf_path);
	rmdir(dir);
	return 0;
}

/* What a callback saw, flattened to text: "OK name/pref[addr,addr] ..."
 * or "<STATUS>". */
struct seen {
	int calls;
	char text[2048];
	enum dns_status st;
	char why[512];
};

static const char *st_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK: return "OK";
	case DNS_NOTFOUND: return "NOTFOUND";
	case DNS_NULLMX: return "NULLMX";
	case DNS_TEMPFAIL: return "TEMPFAIL";
	}
	return "?";
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(x, y);
}

static void record_cb(void *arg, const struct dns_route *r)
{
	struct seen *s = arg;
	s->calls++;
	s->st = r->status;
	struct buf b;
	buf_init(&b, sizeof(s->text) - 1);
	buf_puts(&b, st_name(r->status));
	if (r->status != DNS_OK) {
		assert_non_null(r->why);
		snprintf(s->why, sizeof(s->why), "%s", r->why);
		assert_int_equal(r->n_hosts, 0);
	}
	for (size_t i = 0; i < r->n_hosts; i++) {
		const struct dns_host *h = &r->hosts[i];
		assert_true(h->n_addrs > 0);
		buf_printf(&b, " %s/%u[", h->name, h->pref);
		/* IPv6 first; within a family the order is the server's
		 * (rotated), so it is sorted here. */
		char a[2][16][INET6_ADDRSTRLEN];
		size_t na[2] = { 0, 0 };
		bool seen4 = false;
		for (size_t k = 0; k < h->n_addrs; k++) {
			const struct sockaddr_storage *ss = &h->addrs[k];
			if (ss->ss_family == AF_INET6) {
				assert_false(seen4);
				const struct sockaddr_in6 *s6 = (const void *)ss;
				assert_int_equal(s6->sin6_port, 0);
				assert_true(na[0] < 16);
				inet_ntop(AF_INET6, &s6->sin6_addr, a[0][na[0]++], INET6_ADDRSTRLEN);
			} else {
				assert_int_equal(ss->ss_family, AF_INET);
				seen4 = true;
				const struct sockaddr_in *s4 = (const void *)ss;
				assert_int_equal(s4->sin_port, 0);
				assert_true(na[1] < 16);
				inet_ntop(AF_INET, &s4->sin_addr, a[1][na[1]++], INET6_ADDRSTRLEN);
			}
		}
		bool firstaddr = true;
		for (int f = 0; f < 2; f++) {
			qsort(a[f], na[f], INET6_ADDRSTRLEN, cmp_str);
			for (size_t k = 0; k < na[f]; k++) {
				buf_printf(&b, "%s%s", firstaddr ? "" : ",", a[f][k]);
				firstaddr = false;
			}
		}
		buf_puts(&b, "]");
	}
	snprintf(s->text, sizeof(s->text), "%s", buf_cstr(&b));
	buf_free(&b);
}

/* Polls the descriptor until every seen[i] has had its callback, 5 s at
 * most. */
static void run(struct dns *d, struct seen *s, size_t n)
{
	int64_t end = time_mono_ms() + 5000;
	for (;;) {
		size_t done = 0;
		for (size_t i = 0; i < n; i++)
			done += s[i].calls > 0;
		if (done == n)
			break;
		int left = (int)(end - time_mono_ms());
		if (left <= 0) {
			for (size_t i = 0; i < n; i++)
				if (s[i].calls == 0)
					print_error("lookup %zu: no answer\n", i);
			fail_msg("lookups did not finish in 5 s");
		}
		struct pollfd p = { .fd = dns_fd(d), .events = POLLIN };
		int r = poll(&p, 1, left);
		assert_true(r >= 0);
		if (r > 0)
			dns_process(d);
	}
	for (size_t i = 0; i < n; i++)
		assert_int_equal(s[i].calls, 1);
}

static struct dns *new_dns(void)
{
	struct dns_conf c = { .resolv_conf = NULL, .unbound_conf = conf_path };
	struct dns *d = NULL;
	struct err e = { { 0 } };
	int r = dns_new(&c, &d, &e);
	if (r != 0)
		fail_msg("dns_new: %s", e.msg);
	return d;
}

static void test_routes(void **state)
{
	static const struct {
		const char *domain, *want;
	} t[] = {
		{ "one.test", "OK mail.one.test/10[2001:db8::1,192.0.2.1,192.0.2.11] "
			      "backup.one.test/20[192.0.2.2]" },
		{ "ONE.test.", "OK mail.one.test/10[2001:db8::1,192.0.2.1,192.0.2.11] "
			       "backup.one.test/20[192.0.2.2]" },
		{ "null.test", "NULLMX" },
		{ "nullpref.test", "NULLMX" },
		{ "mixnull.test", "OK ok.partial.test/10[192.0.2.4]" },
		{ "implicit.test", "OK implicit.test/0[2001:db8::3,192.0.2.3]" },
		{ "Implicit.TEST", "OK implicit.test/0[2001:db8::3,192.0.2.3]" },
		{ "noaddr.test", "NOTFOUND" },
		{ "partial.test", "OK ok.partial.test/20[192.0.2.4]" },
		{ "txtonly.test", "NOTFOUND" },
		{ "nx.test", "NOTFOUND" },
		{ "deeper.nx.test", "NOTFOUND" },
		{ "tf.test", "TEMPFAIL" },
		{ "tfpart.test", "OK ok.partial.test/20[192.0.2.4]" },
		{ "x.refused.test", "TEMPFAIL" },
		{ "dup.test", "OK ok.partial.test/5[192.0.2.4]" },
		{ "example.org", "TEMPFAIL" }, /* outside: SERVFAIL at once */
	};
	size_t n = sizeof(t) / sizeof(t[0]);
	struct dns *d = new_dns();
	struct seen *s = calloc(n, sizeof(*s));
	for (size_t i = 0; i < n; i++) {
		struct err e;
		assert_int_equal(dns_route_lookup(d, t[i].domain, record_cb, &s[i], &e), 0);
	}
	run(d, s, n);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s[i].text, t[i].want) != 0)
			fail_msg("%s: got \"%s\" (%s), want \"%s\"", t[i].domain, s[i].text,
				 s[i].why, t[i].want);
	}
	free(s);
	dns_free(d);
}

static void test_limit_hosts(void **state)
{
	struct dns *d = new_dns();
	struct seen s = { 0 };
	struct err e;
	assert_int_equal(dns_route_lookup(d, "many.test", record_cb, &s, &e), 0);
	run(d, &s, 1);
	/* 13 MX records; the 10 best are followed, in preference order. */
	assert_string_equal(s.text, "OK m0.many.test/0[192.0.2.99] m1.many.test/1[192.0.2.99] "
				    "m2.many.test/2[192.0.2.99] m3.many.test/3[192.0.2.99] "
				    "m4.many.test/4[192.0.2.99] m5.many.test/5[192.0.2.99] "
				    "m6.many.test/6[192.0.2.99] m7.many.test/7[192.0.2.99] "
				    "m8.many.test/8[192.0.2.99] m9.many.test/9[192.0.2.99]");
	dns_free(d);
}

static void test_shuffle(void **state)
{
	struct dns *d = new_dns();
	assert_int_equal(dns_start(d, NULL), 0);
	enum { RUNS = 40 };
	struct seen *s = calloc(RUNS, sizeof(*s));
	for (int i = 0; i < RUNS; i++) {
		struct err e;
		assert_int_equal(dns_route_lookup(d, "eq.test", record_cb, &s[i], &e), 0);
	}
	run(d, s, RUNS);
	int distinct = 0;
	for (int i = 0; i < RUNS; i++) {
		assert_int_equal(s[i].st, DNS_OK);
		/* first always first, last always last, h1..h4 between */
		assert_true(strncmp(s[i].text, "OK first.eq.test/5[192.0.2.10] ", 31) == 0);
		const char *tail = " last.eq.test/50[192.0.2.50]";
		size_t tl = strlen(s[i].text), ll = strlen(tail);
		assert_true(tl > ll && strcmp(s[i].text + tl - ll, tail) == 0);
		for (int k = 1; k <= 4; k++) {
			char h[32];
			snprintf(h, sizeof(h), " h%d.eq.test/10[", k);
			assert_non_null(strstr(s[i].text, h));
		}
		bool seen_before = false;
		for (int j = 0; j < i; j++)
			if (strcmp(s[j].text, s[i].text) == 0)
				seen_before = true;
		distinct += !seen_before;
	}
	/* 24 orders; 40 identical draws would mean no shuffle at all. */
	assert_true(distinct >= 2);
	free(s);
	dns_free(d);
}

static int cb_calls;
static void counting_cb(void *arg, const struct dns_route *r)
{
	cb_calls++;
}

/* Freeing with lookups in flight: no callback, nothing leaked (ASan). */
static void test_free_pending(void **state)
{
	struct dns *d = new_dns();
	struct err e;
	cb_calls = 0;
	assert_int_equal(dns_route_lookup(d, "one.test", counting_cb, NULL, &e), 0);
	assert_int_equal(dns_route_lookup(d, "eq.test", counting_cb, NULL, &e), 0);
	/* Let the MX answers arrive so that address queries are in flight
	 * too, then stop. */
	struct pollfd p = { .fd = dns_fd(d), .events = POLLIN };
	if (poll(&p, 1, 2000) > 0)
		dns_process(d);
	int before = cb_calls;
	dns_free(d);
	assert_int_equal(cb_calls, before);
}

static void test_bad_input(void **state)
{
	struct dns *d = new_dns();
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	char longlabel[80];
	memset(longlabel, 'b', 64);
	snprintf(longlabel + 64, sizeof(longlabel) - 64, ".test");
	const char *bad[] = { "", ".", "a..test", ".a.test", "a.test..", "sp ace.test",
			      "semi;colon.test", "a\\.test", "a\nb.test", longname, longlabel };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct err e = { { 0 } };
		assert_int_equal(dns_route_lookup(d, bad[i], counting_cb, NULL, &e), -1);
		assert_true(strlen(e.msg) > 0);
	}
	struct err e;
	assert_int_equal(dns_route_lookup(d, NULL, counting_cb, NULL, &e), -1);
	dns_free(d);
}

static void test_bad_config(void **state)
{
	struct dns *d = NULL;
	struct err e = { { 0 } };
	char path[300];
	snprintf(path, sizeof(path), "%s/missing.conf", dir);
	struct dns_conf c = { .unbound_conf = path };
	assert_int_equal(dns_new(&c, &d, &e), -1);
	assert_null(d);
	assert_non_null(strstr(e.msg, "missing.conf"));
	struct dns_conf c2 = { .resolv_conf = path };
	assert_int_equal(dns_new(&c2, &d, &e), -1);
	assert_null(d);
	/* A trust anchor file is read by finalization: dns_new must see it
	 * missing now, not at the first lookup. */
	char conf2[300];
	snprintf(conf2, sizeof(conf2), "%s/ta.conf", dir);
	char text[600];
	snprintf(text, sizeof(text), "server:\n\ttrust-anchor-file: \"%s/no-such-key\"\n", dir);
	assert_int_equal(fs_write_atomic(conf2, text, strlen(text), 0600, &e), 0);
	struct dns_conf c3 = { .unbound_conf = conf2 };
	int r = dns_new(&c3, &d, &e);
	unlink(conf2);
	assert_int_equal(r, -1);
	assert_null(d);
}

static void test_resolv_conf(void **state)
{
	/* Forwarders from a resolv.conf, read by dns_new: a localhost
	 * forwarder is never queried, so lookups fail temporarily, fast. */
	char rc[300];
	snprintf(rc, sizeof(rc), "%s/resolv.conf", dir);
	const char *text = "nameserver 127.0.0.1\n";
	struct err e;
	assert_int_equal(fs_write_atomic(rc, text, strlen(text), 0600, &e), 0);
	char uc[300];
	snprintf(uc, sizeof(uc), "%s/lh.conf", dir);
	const char *utext = "server:\n\tdo-not-query-localhost: yes\n";
	assert_int_equal(fs_write_atomic(uc, utext, strlen(utext), 0600, &e), 0);
	struct dns_conf c = { .resolv_conf = rc, .unbound_conf = uc };
	struct dns *d = NULL;
	assert_int_equal(dns_new(&c, &d, &e), 0);
	unlink(rc); /* read already */
	unlink(uc);
	struct seen s = { 0 };
	assert_int_equal(dns_route_lookup(d, "example.org", record_cb, &s, &e), 0);
	run(d, &s, 1);
	assert_int_equal(s.st, DNS_TEMPFAIL);
	dns_free(d);
}

/* The resolver process dies with a lookup pending: the lookup fails
 * temporarily, the context says it is broken and refuses new lookups. */
static void test_resolver_dies(void **state)
{
	signal(SIGPIPE, SIG_IGN); /* as in the daemon: a dead pipe is an error, not a signal */
	struct dns *d = new_dns();
	struct err e;
	assert_int_equal(dns_start(d, &e), 0);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%ld/children", (long)getpid());
	FILE *f = fopen(path, "r");
	if (!f)
		skip();
	long child = 0;
	int got = fscanf(f, "%ld", &child);
	fclose(f);
	assert_int_equal(got, 1);
	assert_true(child > 0);
	/* Stopped, so that the lookup is surely still pending when it dies. */
	assert_int_equal(kill((pid_t)child, SIGSTOP), 0);
	int wst = 0;
	assert_int_equal(waitpid((pid_t)child, &wst, WUNTRACED), (pid_t)child);
	assert_true(WIFSTOPPED(wst));
	struct seen s = { 0 };
	assert_int_equal(dns_route_lookup(d, "one.test", record_cb, &s, &e), 0);
	assert_int_equal(kill((pid_t)child, SIGKILL), 0);
	assert_int_equal(waitpid((pid_t)child, NULL, 0), (pid_t)child);
	run(d, &s, 1);
	assert_int_equal(s.st, DNS_TEMPFAIL);
	assert_true(dns_failed(d));
	assert_int_equal(dns_route_lookup(d, "one.test", record_cb, &s, &e), -1);
	dns_free(d);
}

/*
 * libunbound's resolver is a fork of this test that ends with exit():
 * under LeakSanitizer it would report the test's own memory, which it
 * holds a copy of but never frees.  Leave that process quietly.
 */
static void child_exit(void)
{
	fflush(NULL);
	_exit(0);
}

static void in_child(void)
{
	atexit(child_exit);
}

int main(void)
{
	pthread_atfork(NULL, NULL, in_child);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_limit_hosts),
		cmocka_unit_test(test_shuffle),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_resolv_conf),
		cmocka_unit_test(test_resolver_dies),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
