/* Kernel randomness for nonces and salts: getrandom(2) never returns
 * predictable bytes once the pool is initialised and needs no open file,
 * which matters inside a chroot. */
#include <errno.h>
#include <sys/random.h>

#include "util.h"

int rand_bytes(void *p, size_t n)
{
	uint8_t *w = p;
	while (n > 0) {
		ssize_t r = getrandom(w, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		w += r;
		n -= (size_t)r;
	}
	return 0;
}

uint64_t rand_hash(uint64_t seed, const void *p, size_t n)
{
	const uint8_t *c = p;
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}
