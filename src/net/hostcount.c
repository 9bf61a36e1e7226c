/*
 * Sessions per client address over all workers (smtp_accept_max_per_host).
 *
 * Workers accept from the same sockets, so a count per address must live
 * in memory they share.  Addresses are not stored: each worker adds its
 * sessions to two buckets chosen by two keyed hashes of the address (a
 * count-min sketch).  The estimate is the smaller of the two bucket sums
 * over all workers; it never undercounts, and overcounts only when both
 * buckets are shared with busy addresses, which with a secret key and
 * 16,384 buckets a client cannot arrange.  With S sessions in all, a
 * bucket carries about S / 16,384 sessions of other addresses, so a new
 * address is refused early only when both of its buckets are that full:
 * negligible below some 100,000 sessions for a limit of 10 or more.  IPv6 addresses count by their
 * /64: one customer's prefix is one host.  Each worker has its own rows,
 * which the master zeroes when the worker dies, as it does its session
 * count.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/mman.h>

#include "net.h"

static size_t hosts_words(void)
{
	return (size_t)NET_HOST_SLOTS * NET_HOST_ROWS * NET_HOST_BUCKETS;
}

struct net_hosts *net_hosts_new(void)
{
	/* Shared, and touched only where used: untouched pages cost nothing. */
	void *p = mmap(NULL, sizeof(struct net_hosts) + hosts_words() * sizeof(uint32_t),
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct net_hosts *h = p;
	if (rand_bytes(h->key, sizeof(h->key)) < 0) {
		munmap(p, sizeof(struct net_hosts) + hosts_words() * sizeof(uint32_t));
		return NULL;
	}
	return h;
}

void net_hosts_free(struct net_hosts *h)
{
	if (h)
		munmap(h, sizeof(struct net_hosts) + hosts_words() * sizeof(uint32_t));
}

static uint32_t *row(struct net_hosts *h, size_t slot, size_t r)
{
	return h->counts + (slot * NET_HOST_ROWS + r) * NET_HOST_BUCKETS;
}

void net_hosts_clear_slot(struct net_hosts *h, size_t slot)
{
	if (h && slot < NET_HOST_SLOTS)
		memset(row(h, slot, 0), 0, NET_HOST_ROWS * NET_HOST_BUCKETS * sizeof(uint32_t));
}

bool net_hosts_key(const struct net_hosts *h, const struct sockaddr *sa,
		   uint32_t bucket[NET_HOST_ROWS])
{
	/* The key: a family tag and the address (IPv4, or the /64 of IPv6). */
	uint8_t k[9];
	size_t n;
	if (sa->sa_family == AF_INET) {
		k[0] = 4;
		memcpy(k + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		n = 5;
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (memcmp(a, v4mapped, 12) == 0) {
			k[0] = 4;
			memcpy(k + 1, a + 12, 4);
			n = 5;
		} else {
			k[0] = 6;
			memcpy(k + 1, a, 8);
			n = 9;
		}
	} else {
		return false;
	}
	for (size_t r = 0; r < NET_HOST_ROWS; r++)
		bucket[r] = (uint32_t)(rand_hash(h->key[r], k, n) % NET_HOST_BUCKETS);
	return true;
}

bool net_hosts_take(struct net_hosts *h, size_t my_slot, size_t used_slots,
		    const uint32_t bucket[NET_HOST_ROWS], unsigned limit)
{
	for (size_t r = 0; r < NET_HOST_ROWS; r++)
		__atomic_add_fetch(&row(h, my_slot, r)[bucket[r]], 1, __ATOMIC_RELAXED);
	/* Same order as the session count: add, fence, then read, so that two
	 * workers taking the last place at once cannot both miss the other. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint64_t est = UINT64_MAX;
	for (size_t r = 0; r < NET_HOST_ROWS; r++) {
		uint64_t sum = 0;
		for (size_t s = 0; s < used_slots && s < NET_HOST_SLOTS; s++)
			sum += __atomic_load_n(&row(h, s, r)[bucket[r]], __ATOMIC_RELAXED);
		if (sum < est)
			est = sum;
	}
	if (est <= limit)
		return true;
	net_hosts_release(h, my_slot, bucket);
	return false;
}

void net_hosts_release(struct net_hosts *h, size_t my_slot, const uint32_t bucket[NET_HOST_ROWS])
{
	for (size_t r = 0; r < NET_HOST_ROWS; r++)
		__atomic_sub_fetch(&row(h, my_slot, r)[bucket[r]], 1, __ATOMIC_RELAXED);
}
