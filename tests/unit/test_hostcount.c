/*
 * Sessions per client address (net/hostcount.c): which addresses share a
 * count, and the limit over several workers' rows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "net/net.h"

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;
	assert_int_not_equal(listen_sockaddr(text, 0, &ss), 0);
	return ss;
}

static bool same_buckets(struct net_hosts *h, const char *a, const char *b)
{
	struct sockaddr_storage x = addr(a), y = addr(b);
	uint32_t bx[NET_HOST_ROWS], by[NET_HOST_ROWS];
	assert_true(net_hosts_key(h, (struct sockaddr *)&x, bx));
	assert_true(net_hosts_key(h, (struct sockaddr *)&y, by));
	return memcmp(bx, by, sizeof(bx)) == 0;
}

static void test_keys(void **state)
{
	struct net_hosts *h = net_hosts_new();
	assert_non_null(h);
	static const struct {
		const char *a, *b;
		bool same;
	} cases[] = {
		{ "192.0.2.1", "192.0.2.1", true },
		{ "192.0.2.1", "::ffff:192.0.2.1", true },   /* v4-mapped is the same host */
		{ "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true }, /* one /64 */
		{ "192.0.2.1", "192.0.2.2", false },
		{ "2001:db8:1:2::1", "2001:db8:1:3::1", false },
		{ "0.0.0.0", "::", false },                   /* families never merge */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(same_buckets(h, cases[i].a, cases[i].b), cases[i].same);
	/* Not an IP address: not counted. */
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	uint32_t b[NET_HOST_ROWS];
	assert_false(net_hosts_key(h, (struct sockaddr *)&un, b));
	net_hosts_free(h);
}

static void test_limit_over_workers(void **state)
{
	struct net_hosts *h = net_hosts_new();
	struct sockaddr_storage a = addr("198.51.100.7"), o = addr("198.51.100.8");
	uint32_t ba[NET_HOST_ROWS], bo[NET_HOST_ROWS];
	assert_true(net_hosts_key(h, (struct sockaddr *)&a, ba));
	assert_true(net_hosts_key(h, (struct sockaddr *)&o, bo));
	/* Three places for the address, taken from workers 0 and 1. */
	assert_true(net_hosts_take(h, 0, 2, ba, 3));
	assert_true(net_hosts_take(h, 1, 2, ba, 3));
	assert_true(net_hosts_take(h, 0, 2, ba, 3));
	assert_false(net_hosts_take(h, 1, 2, ba, 3));
	assert_false(net_hosts_take(h, 0, 2, ba, 3));
	/* Another address is not affected (unless both of its buckets are
	 * shared, which the random key makes unlikely: retried keys below). */
	if (memcmp(ba, bo, sizeof(ba)) != 0)
		assert_true(net_hosts_take(h, 1, 2, bo, 3));
	/* A released place is free again. */
	net_hosts_release(h, 1, ba);
	assert_true(net_hosts_take(h, 1, 2, ba, 3));
	/* A dead worker's sessions are written off. */
	net_hosts_clear_slot(h, 0);
	assert_true(net_hosts_take(h, 0, 2, ba, 3));
	assert_true(net_hosts_take(h, 0, 2, ba, 3));
	assert_false(net_hosts_take(h, 0, 2, ba, 3));
	net_hosts_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_limit_over_workers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
