/* Memory shared between the master and the workers it forks: one session
 * counter per worker, so that smtp_accept_max is enforced across workers
 * and a dead worker's sessions can be written off by the master. */
#include <sys/mman.h>

#include "daemon.h"

/* One more word after the n counters: how many slots have ever been used
 * (set by the master before it forks a worker into a slot), so that
 * counting sessions at each accept reads a handful of words, not n. */
uint32_t *ipc_slots_new(size_t n)
{
	void *p = mmap(NULL, (n + 1) * sizeof(uint32_t), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void ipc_slots_free(uint32_t *slots, size_t n)
{
	if (slots)
		munmap(slots, (n + 1) * sizeof(uint32_t));
}
