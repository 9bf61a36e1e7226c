/* Brute-force penalty table: failures per key (a client address or a user
 * name) within a window, a growing answer delay past delay_after and a
 * refusal past block_after.  The table is bounded: when full, the entry
 * touched least recently is dropped, so flooding it costs an attacker the
 * protection of nothing newer than its own oldest failures. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"

struct pen_entry {
	struct pen_entry *hnext;          /* hash chain */
	struct pen_entry *prev, *next;    /* recency list, most recent first */
	uint64_t hash;
	unsigned failures;
	int64_t window_start;
	int64_t blocked_until;            /* 0: not blocked */
	char key[];
};

struct penalty {
	struct penalty_conf c;
	struct pen_entry **tab;
	size_t nbuckets;                  /* power of two */
	size_t count;
	struct pen_entry *head, *tail;
	uint64_t seed;
};

/* Keys come from clients (user names): rand_hash's secret seed keeps
 * them from choosing names that pile into one bucket. */
static uint64_t pen_hash(const struct penalty *p, const char *k)
{
	return rand_hash(p->seed, k, strlen(k));
}

struct penalty *penalty_new(const struct penalty_conf *c)
{
	if (!c)
		return NULL;
	struct penalty *p = xcalloc(1, sizeof(*p));
	p->c = *c;
	if (p->c.max_entries == 0)
		p->c.max_entries = 1;
	size_t nb = 16;
	while (nb < p->c.max_entries && nb < ((size_t)1 << 24))
		nb <<= 1;
	p->nbuckets = nb;
	p->tab = xcalloc(nb, sizeof(*p->tab));
	if (rand_bytes(&p->seed, sizeof(p->seed)) < 0)
		p->seed = (uint64_t)(uintptr_t)p;
	return p;
}

void penalty_free(struct penalty *p)
{
	if (!p)
		return;
	struct pen_entry *e = p->head;
	while (e) {
		struct pen_entry *n = e->next;
		free(e);
		e = n;
	}
	free(p->tab);
	free(p);
}

static struct pen_entry *pen_find(const struct penalty *p, const char *key, uint64_t h)
{
	for (struct pen_entry *e = p->tab[h & (p->nbuckets - 1)]; e; e = e->hnext)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void pen_unlink_list(struct penalty *p, struct pen_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		p->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		p->tail = e->prev;
	e->prev = e->next = NULL;
}

static void pen_push_front(struct penalty *p, struct pen_entry *e)
{
	e->prev = NULL;
	e->next = p->head;
	if (p->head)
		p->head->prev = e;
	p->head = e;
	if (!p->tail)
		p->tail = e;
}

static void pen_remove(struct penalty *p, struct pen_entry *e)
{
	struct pen_entry **pp = &p->tab[e->hash & (p->nbuckets - 1)];
	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	pen_unlink_list(p, e);
	p->count--;
	free(e);
}

/* Drops counts that no longer apply at now; true if the entry is now
 * empty and can go. */
static bool pen_expire(const struct penalty *p, struct pen_entry *e, int64_t now)
{
	if (e->blocked_until) {
		if (now < e->blocked_until)
			return false;
		/* A served block starts the count afresh. */
		e->blocked_until = 0;
		e->failures = 0;
	}
	if (e->failures && now - e->window_start >= (int64_t)p->c.window_s)
		e->failures = 0;
	return e->failures == 0;
}

enum auth_result penalty_check(struct penalty *p, const char *key, int64_t now_s,
			       unsigned *delay_ms)
{
	if (delay_ms)
		*delay_ms = 0;
	if (!p || !key)
		return AUTH_OK;
	uint64_t h = pen_hash(p, key);
	struct pen_entry *e = pen_find(p, key, h);
	if (!e)
		return AUTH_OK;
	if (pen_expire(p, e, now_s)) {
		pen_remove(p, e);
		return AUTH_OK;
	}
	if (e->blocked_until)
		return AUTH_BLOCKED;
	if (e->failures >= p->c.delay_after && delay_ms) {
		/* Linear growth that reaches the cap at the last failure before
		 * the block, so the delay follows the configured thresholds. */
		uint64_t span = p->c.block_after > p->c.delay_after
					? p->c.block_after - p->c.delay_after : 1;
		uint64_t steps = e->failures - p->c.delay_after + 1;
		uint64_t d = (uint64_t)p->c.max_delay_ms * steps / span;
		if (d > p->c.max_delay_ms)
			d = p->c.max_delay_ms;
		*delay_ms = (unsigned)d;
	}
	return AUTH_OK;
}

void penalty_fail(struct penalty *p, const char *key, int64_t now_s)
{
	if (!p || !key)
		return;
	uint64_t h = pen_hash(p, key);
	struct pen_entry *e = pen_find(p, key, h);
	if (e) {
		pen_expire(p, e, now_s);
		pen_unlink_list(p, e);
		pen_push_front(p, e);
	} else {
		while (p->count >= p->c.max_entries && p->tail)
			pen_remove(p, p->tail);
		size_t kl = strlen(key);
		e = xcalloc(1, sizeof(*e) + kl + 1);
		memcpy(e->key, key, kl);
		e->hash = h;
		size_t b = h & (p->nbuckets - 1);
		e->hnext = p->tab[b];
		p->tab[b] = e;
		pen_push_front(p, e);
		p->count++;
	}
	if (e->blocked_until)
		return; /* failures while refused were never checked */
	if (e->failures == 0)
		e->window_start = now_s;
	if (e->failures < UINT32_MAX)
		e->failures++;
	if (p->c.block_after && e->failures >= p->c.block_after)
		e->blocked_until = now_s + (int64_t)p->c.block_s;
}

void penalty_success(struct penalty *p, const char *key)
{
	if (!p || !key)
		return;
	struct pen_entry *e = pen_find(p, key, pen_hash(p, key));
	/* A correct password while blocked is never checked, so success
	 * cannot lift a block; still, clear counts of an unblocked key. */
	if (e && !e->blocked_until)
		pen_remove(p, e);
}
