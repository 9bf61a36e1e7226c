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

/* The entry of key, made the most recent (created empty if needed). */
static struct pen_entry *pen_touch(struct penalty *p, const char *key, size_t kl, int64_t now_s)
{
	uint64_t h = rand_hash(p->seed, key, kl);
	struct pen_entry *e = pen_find(p, key, h);
	if (e) {
		pen_expire(p, e, now_s);
		pen_unlink_list(p, e);
		pen_push_front(p, e);
		return e;
	}
	while (p->count >= p->c.max_entries && p->tail)
		pen_remove(p, p->tail);
	e = xcalloc(1, sizeof(*e) + kl + 1);
	memcpy(e->key, key, kl);
	e->hash = h;
	size_t b = h & (p->nbuckets - 1);
	e->hnext = p->tab[b];
	p->tab[b] = e;
	pen_push_front(p, e);
	p->count++;
	return e;
}

void penalty_fail(struct penalty *p, const char *key, int64_t now_s)
{
	if (!p || !key)
		return;
	struct pen_entry *e = pen_touch(p, key, strlen(key), now_s);
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

/* ---- saving and loading (the table outlives a reload) ----------------- */

/* Record: u32 failures, u64 window_start, u64 blocked_until (seconds,
 * two's complement), u16 key length, key bytes; big-endian. */
#define PEN_REC_FIXED (4 + 8 + 8 + 2)
#define PEN_KEY_MAX 0xffff

static void pen_put(uint8_t *o, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		o[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t pen_get(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

bool penalty_save(const struct penalty *p, int64_t now_s, const void **pos, struct buf *out,
		  size_t max)
{
	if (!p)
		return false;
	/* Oldest first: loading makes each the most recent in turn, so the
	 * order of eviction survives. */
	const struct pen_entry *e = *pos ? *pos : p->tail;
	for (; e; e = e->prev) {
		bool live = e->blocked_until ? now_s < e->blocked_until
					     : e->failures && now_s - e->window_start <
								(int64_t)p->c.window_s;
		size_t kl = strlen(e->key);
		/* A record that could never fit is left out, not waited for. */
		if (!live || kl > PEN_KEY_MAX || PEN_REC_FIXED + kl > max)
			continue;
		if (buf_len(out) + PEN_REC_FIXED + kl > max) {
			*pos = e;
			return true;
		}
		uint8_t fx[PEN_REC_FIXED];
		pen_put(fx, e->failures, 4);
		pen_put(fx + 4, (uint64_t)e->window_start, 8);
		pen_put(fx + 12, (uint64_t)e->blocked_until, 8);
		pen_put(fx + 20, kl, 2);
		if (buf_append(out, fx, sizeof(fx)) < 0 || buf_append(out, e->key, kl) < 0) {
			*pos = e;
			return true;
		}
	}
	*pos = NULL;
	return false;
}

/* Adds saved counts to what this table already holds for the key. */
static void pen_merge(struct penalty *p, const char *key, size_t kl, unsigned failures,
		      int64_t window_start, int64_t blocked_until, int64_t now_s)
{
	if (blocked_until ? now_s >= blocked_until
			  : failures == 0 || now_s - window_start >= (int64_t)p->c.window_s)
		return;
	/* A block never outlasts what this configuration would give. */
	if (blocked_until > now_s + (int64_t)p->c.block_s)
		blocked_until = now_s + (int64_t)p->c.block_s;
	struct pen_entry *e = pen_touch(p, key, kl, now_s);
	if (blocked_until) {
		if (blocked_until > e->blocked_until)
			e->blocked_until = blocked_until;
		if (failures > e->failures)
			e->failures = failures;
		return;
	}
	if (e->blocked_until)
		return;
	if (e->failures == 0 || window_start < e->window_start)
		e->window_start = window_start;
	uint64_t f = (uint64_t)e->failures + failures;
	e->failures = f > UINT32_MAX ? UINT32_MAX : (unsigned)f;
	if (p->c.block_after && e->failures >= p->c.block_after)
		e->blocked_until = now_s + (int64_t)p->c.block_s;
}

int penalty_load(struct penalty *p, const uint8_t *data, size_t n, int64_t now_s)
{
	if (!p)
		return 0;
	size_t i = 0;
	while (i < n) {
		if (n - i < PEN_REC_FIXED)
			return -1;
		const uint8_t *r = data + i;
		size_t kl = (size_t)pen_get(r + 20, 2);
		if (n - i - PEN_REC_FIXED < kl)
			return -1;
		const char *key = (const char *)r + PEN_REC_FIXED;
		if (kl == 0 || memchr(key, '\0', kl))
			return -1;
		/* pen_touch hashes kl bytes but compares C strings: give it one. */
		char *k = str_ndup(key, kl);
		pen_merge(p, k, kl, (unsigned)pen_get(r, 4), (int64_t)pen_get(r + 4, 8),
			  (int64_t)pen_get(r + 12, 8), now_s);
		free(k);
		i += PEN_REC_FIXED + kl;
	}
	return 0;
}
