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
