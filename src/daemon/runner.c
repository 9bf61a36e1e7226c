/*
 * The queue runner: one unprivileged process that delivers what the
 * workers queued.  It is woken by a datagram from a worker for each new
 * message (no polling), keeps every queued message's next attempt time in
 * memory, and runs an attempt per message ("job"):
 *
 *   route   every pending recipient: local domain -> aliases (recursive,
 *           bounded) -> local mailboxes (Maildir through the local
 *           delivery process, or LMTP) or remote addresses; remote ->
 *           one destination per domain (or the smarthost)
 *   deliver one transaction per destination; a destination holds at most
 *           remote_max_per_destination connections, each carrying the
 *           destination's waiting transactions in turn
 *   record  per recipient delivered / failed / pending: failures and
 *           expired recipients get an RFC 3464 report, committed to the
 *           spool before the state that says they are done (a crash in
 *           between repeats a report, never loses one); then the state
 *           file is written, or the message removed when nothing is left.
 *
 * Delivery is at least once: the state is written after the deliveries it
 * records, so a crash in between delivers again.  A recipient that was
 * expanded into several mailboxes is retried as a whole.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "../auth/backend.h"
#include "../deliver/deliver.h"
#include "../smtp/smtp.h"
#include "daemon.h"

#define RUNNER_ALIAS_DEPTH 10      /* alias chains longer than this are loops */
#define RUNNER_TARGETS_MAX 1000    /* mailboxes one recipient may expand into */
#define RUNNER_CTL_MAX 512         /* a control request */
#define RUNNER_READ_MAX (64u << 20) /* alias files */
/* Further transactions at once for recipients a server put off with a
 * temporary RCPT reply (a recipient limit): each one delivers to someone,
 * so the number of recipients bounds them already; this bounds the work
 * of one attempt whatever a server does. */
#define RUNNER_RCPT_ROUNDS 100

enum dest_kind { DEST_DOMAIN, DEST_SMARTHOST, DEST_LMTP, DEST_LITERAL };
enum target_kind { T_LOCAL, T_SMTP };

struct target {
	size_t rcpt;       /* index into the envelope's recipients */
	char *addr;        /* the mailbox it goes to */
	enum target_kind kind;
	bool done;
	int code;          /* 2xx, 4xx, 5xx */
	char status[16];
	char *text;        /* reply or error */
	char *mta;         /* server that answered, or NULL */
	bool server_reply; /* text is a reply a server sent, not ours */
	bool reports_on;   /* the server took the recipient's NOTIFY (it offered
			      DSN): success reports are its to send */
};

struct rmsg;
struct dest;

struct job {
	struct runner *r;
	struct rmsg *m;
	struct spool_env env;
	struct spool_state st;
	int fd;             /* the spool file, for data */
	struct target *t;
	size_t n_t;
	size_t outstanding; /* transactions and Maildir requests not finished */
	bool *recorded;     /* recipients already recorded as delivered while
			       other parts were still on their way */
	int ctl_fd;         /* a -M caller waiting for the outcome, or -1 */
	struct job *next;   /* in r->jobs */
};

struct txn {
	struct job *job;
	struct dest *d;
	size_t *tix;        /* target indices */
	size_t n;
	struct smtpc_rcpt *rc;
	size_t min_ord;     /* only addresses of the route from this one on (in
			       route order) may take it: those before failed it */
	unsigned rounds;    /* further transactions made of what a server put off */
	struct txn *next;
};

struct rconn {
	struct dest *d;
	struct net_smtp *c;
	struct txn *cur;
	bool ready;          /* the session got as far as a first READY */
	bool idle;           /* READY and given nothing since: the only state
				in which a message may be handed to it */
	bool quitting;       /* QUIT sent: takes no more work */
	size_t ord;          /* the address it went to, in route order */
	char peer[300];
	struct rconn *next;
};

struct route_host {
	char *name;
	struct sockaddr_storage *addrs;
	size_t n;
};

struct dest {
	struct runner *r;
	enum dest_kind kind;
	char *key;            /* domain, "[literal]", "smarthost", "lmtp" */
	struct txn *head, *tail;
	struct rconn *conns;
	unsigned n_conns;
	int route;            /* 0 none, 1 resolving, 2 ready */
	struct route_host *hosts;
	size_t n_hosts;
	size_t try_host, try_addr; /* next address to connect to */
	struct smtpc_reply last;   /* why the last connection failed */
	bool plain;                /* TLS handshakes failed here: opportunistic
				      TLS falls back to plain text */
	struct dest *next;
};

struct lreq {
	struct job *job;
	size_t ti;
	struct lreq *next;
};

struct rmsg {
	char id[QUEUE_ID_LEN + 1];
	int64_t next_try;
	bool busy;
	size_t idx;          /* in runner.msgs */
	size_t hidx;         /* in runner.heap; SIZE_MAX while busy */
};

struct runner {
	const struct conf *c;
	struct event_base *base;
	struct spool *sp;
	struct auth_backend *backend;
	struct auth_dir *dir;
	struct dns *dns;
	struct tls_ctx *tls_mx, *tls_smarthost;
	struct event *ev_notify, *ev_ctl, *ev_dns, *ev_md, *ev_timer, *ev_term, *ev_stop, *ev_kick;
	struct event *ev_md_timer;
	int notify_fd, ctl_fd, md_fd;
	/* Every queued message: an array, a hash index by id, and a min-heap
	 * by next attempt of those not being delivered, so that a wake-up and
	 * a lookup cost the same with ten or a million messages queued. */
	struct rmsg **msgs;
	size_t n_msgs;
	struct rmsg **hash;  /* open addressing, linear probing; cap a power of 2 */
	size_t hash_cap;
	struct rmsg **heap;
	size_t n_heap;
	struct job *jobs;
	size_t n_jobs;
	struct dest *dests;
	unsigned n_conns;
	struct lreq *lq_head, *lq_tail;
	bool md_busy;
	bool md_chroot;      /* mdeliver is chrooted into maildir_path's root */
	bool stopping;
	unsigned seq;
	struct smtpc_opts mx_opts, mx_plain_opts, sh_opts, lmtp_opts;
};

static void schedule(struct runner *r);
static void kick(struct runner *r);
static void dest_pump(struct dest *d);
static size_t dest_n_addrs(const struct dest *d);
static struct txn *txn_new(struct job *j, struct dest *d, size_t *tix, size_t n);
static void job_target_done(struct job *j, size_t ti, int code, const char *status,
			    const char *text, const char *mta);

/* ---- small helpers ---------------------------------------------------- */

static int64_t now_s(void)
{
	return time_now_us() / 1000000;
}

static const char *addr_domain(const char *a)
{
	const char *at = strrchr(a, '@');
	return at ? at + 1 : NULL;
}

static void set_reply(struct smtpc_reply *r, int code, const char *status, const char *text)
{
	free(r->text);
	r->code = code;
	snprintf(r->status, sizeof(r->status), "%s", status ? status : "");
	r->text = str_dup(text ? text : "");
}

static size_t max_jobs(const struct runner *r)
{
	/* Each job holds one spool descriptor and its envelope: enough to keep
	 * every connection busy, bounded so a huge queue costs no more. */
	return (size_t)r->c->remote_max_parallel * 4 + 16;
}

/* ---- the message table ----------------------------------------------- */

static size_t id_hash(const char *id)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *id; id++)
		h = (h ^ (uint8_t)*id) * 1099511628211ull;
	return (size_t)h;
}

static struct rmsg *msg_find(struct runner *r, const char *id)
{
	if (!r->hash_cap)
		return NULL;
	for (size_t i = id_hash(id) & (r->hash_cap - 1);; i = (i + 1) & (r->hash_cap - 1)) {
		if (!r->hash[i])
			return NULL;
		if (strcmp(r->hash[i]->id, id) == 0)
			return r->hash[i];
	}
}

static void hash_put(struct runner *r, struct rmsg *m)
{
	size_t i = id_hash(m->id) & (r->hash_cap - 1);
	while (r->hash[i])
		i = (i + 1) & (r->hash_cap - 1);
	r->hash[i] = m;
}

static void hash_grow(struct runner *r)
{
	/* Kept at most half full. */
	if (2 * (r->n_msgs + 1) <= r->hash_cap)
		return;
	size_t cap = r->hash_cap ? 2 * r->hash_cap : 1024;
	free(r->hash);
	r->hash = xcalloc(cap, sizeof(*r->hash));
	r->hash_cap = cap;
	for (size_t k = 0; k < r->n_msgs; k++)
		hash_put(r, r->msgs[k]);
}

/* Deletion by backward shift: no tombstones. */
static void hash_del(struct runner *r, struct rmsg *m)
{
	size_t mask = r->hash_cap - 1;
	size_t i = id_hash(m->id) & mask;
	while (r->hash[i] != m)
		i = (i + 1) & mask;
	r->hash[i] = NULL;
	for (size_t j = (i + 1) & mask; r->hash[j]; j = (j + 1) & mask) {
		size_t home = id_hash(r->hash[j]->id) & mask;
		/* Moves back when its home is not in (i, j] cyclically. */
		bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!between) {
			r->hash[i] = r->hash[j];
			r->hash[j] = NULL;
			i = j;
		}
	}
}

static bool heap_less(const struct rmsg *a, const struct rmsg *b)
{
	return a->next_try < b->next_try;
}

static void heap_set(struct runner *r, size_t i, struct rmsg *m)
{
	r->heap[i] = m;
	m->hidx = i;
}

static void heap_up(struct runner *r, size_t i)
{
	struct rmsg *m = r->heap[i];
	while (i > 0 && heap_less(m, r->heap[(i - 1) / 2])) {
		heap_set(r, i, r->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(r, i, m);
}

static void heap_down(struct runner *r, size_t i)
{
	struct rmsg *m = r->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= r->n_heap)
			break;
		if (c + 1 < r->n_heap && heap_less(r->heap[c + 1], r->heap[c]))
			c++;
		if (!heap_less(r->heap[c], m))
			break;
		heap_set(r, i, r->heap[c]);
		i = c;
	}
	heap_set(r, i, m);
}

static void heap_push(struct runner *r, struct rmsg *m)
{
	r->heap = xrealloc(r->heap, (r->n_heap + 1) * sizeof(*r->heap));
	heap_set(r, r->n_heap++, m);
	heap_up(r, m->hidx);
}

static void heap_remove(struct runner *r, struct rmsg *m)
{
	if (m->hidx == SIZE_MAX)
		return;
	size_t i = m->hidx;
	m->hidx = SIZE_MAX;
	struct rmsg *last = r->heap[--r->n_heap];
	if (i == r->n_heap)
		return;
	heap_set(r, i, last);
	heap_up(r, i);
	heap_down(r, last->hidx);
}

/* A message not being delivered gets a new next attempt time. */
static void msg_set_next(struct runner *r, struct rmsg *m, int64_t t)
{
	m->next_try = t;
	if (m->hidx != SIZE_MAX) {
		heap_up(r, m->hidx);
		heap_down(r, m->hidx);
	}
}

static struct rmsg *msg_add(struct runner *r, const char *id, int64_t next_try)
{
	struct rmsg *m = msg_find(r, id);
	if (m) {
		if (!m->busy && next_try < m->next_try)
			msg_set_next(r, m, next_try);
		return m;
	}
	hash_grow(r);
	m = xcalloc(1, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->next_try = next_try;
	m->hidx = SIZE_MAX;
	r->msgs = xrealloc(r->msgs, (r->n_msgs + 1) * sizeof(*r->msgs));
	m->idx = r->n_msgs;
	r->msgs[r->n_msgs++] = m;
	hash_put(r, m);
	heap_push(r, m);
	return m;
}

static void msg_drop(struct runner *r, struct rmsg *m)
{
	heap_remove(r, m);
	hash_del(r, m);
	struct rmsg *last = r->msgs[--r->n_msgs];
	r->msgs[m->idx] = last;
	last->idx = m->idx;
	free(m);
}

static int scan_one(const char *id, void *arg)
{
	struct runner *r = arg;
	struct spool_env env;
	struct err e = { "" };
	memset(&env, 0, sizeof(env));
	if (spool_read_env(r->sp, id, &env, &e) < 0) {
		log_event(LOG_LVL_ERR, "queue_unreadable", "id=%s error=\"%s\"", id, e.msg);
		return 0;
	}
	struct spool_state st;
	int64_t next = 0;
	if (spool_state_read(r->sp, id, env.n_rcpts, &st, &e) == 0) {
		next = st.giveup ? 0 : st.next_try;
		if (r->c->queue_only && st.attempts == 0 && !st.giveup)
			next = INT64_MAX; /* waits for -q */
		spool_state_free(&st);
	} else {
		log_event(LOG_LVL_ERR, "state_unreadable", "id=%s error=\"%s\"", id, e.msg);
	}
	spool_env_free(&env);
	msg_add(r, id, next);
	return 0;
}

/* ---- bounces and reports --------------------------------------------- */

/* Queues a report to the envelope sender; returns 0 when committed. */
/* A report must always fit its buffer, whatever the servers said: each
 * recipient's diagnostic is cut to this (a full multi-line reply). */
#define REPORT_DIAG_MAX 2048
/* Room per recipient: address, original recipient, MTA and diagnostic, in
 * the human-readable and in the delivery-status part. */
#define REPORT_RCPT_ROOM (4 * REPORT_DIAG_MAX + 4096)

/* s cut to at most max bytes, at a UTF-8 character boundary; owned. */
static char *report_cut(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max)
		return str_dup(s);
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	struct buf b;
	buf_init(&b, max + 16);
	buf_append(&b, s, max);
	buf_puts(&b, " [...]");
	char *r = str_dup(buf_cstr(&b));
	buf_free(&b);
	return r;
}

static int send_report(struct job *j, enum dlv_action action, const size_t *rcpts, size_t n)
{
	struct runner *r = j->r;
	const struct conf *c = r->c;
	struct dlv_report_rcpt *rr = xcalloc(n, sizeof(*rr));
	char **diag = xcalloc(n ? n : 1, sizeof(*diag));
	struct buf *orcpt = xcalloc(n ? n : 1, sizeof(*orcpt));
	for (size_t k = 0; k < n; k++) {
		size_t i = rcpts[k];
		buf_init(&orcpt[k], 4096);
		const struct spool_rcpt *sr = &j->env.rcpts[i];
		rr[k].addr = sr->addr;
		if (sr->orcpt && smtp_xtext_decode(sr->orcpt, strlen(sr->orcpt), &orcpt[k]) == 0)
			rr[k].orcpt = buf_cstr(&orcpt[k]);
		rr[k].action = action;
		/* The outcome of the recipient's targets: the first one that
		 * decided it (a failure for failures, else any). */
		const struct target *best = NULL;
		for (size_t t = 0; t < j->n_t; t++) {
			if (j->t[t].rcpt != i)
				continue;
			if (!best || (action == DLV_FAILED && j->t[t].code >= 500 &&
				      best->code < 500))
				best = &j->t[t];
		}
		const char *st = best && best->status[0] ? best->status : NULL;
		if (!st)
			st = action == DLV_FAILED    ? "5.0.0"
			     : action == DLV_DELAYED ? "4.0.0"
						     : "2.0.0";
		rr[k].status = st;
		/* Handed to another server that does not report further (it did
		 * not offer DSN): RFC 3461 calls that "relayed"; stored locally
		 * is "delivered".  A server that took the NOTIFY reports itself
		 * (reported_onward leaves those out). */
		if (action == DLV_DELIVERED && best && best->kind == T_SMTP)
			rr[k].action = DLV_RELAYED;
		rr[k].remote_mta = best ? best->mta : NULL;
		const char *dg = best ? best->text : j->st.rcpts[i].last;
		/* Stored here: where and how is this host's business (a
		 * mailbox path, the LMTP server's session), not the sender's. */
		if (action == DLV_DELIVERED && best && best->kind != T_SMTP)
			dg = NULL;
		diag[k] = dg ? report_cut(dg, REPORT_DIAG_MAX) : NULL;
		rr[k].diagnostic = diag[k];
		rr[k].diag_type = !best ? DLV_DIAG_GUESS
				  : best->server_reply ? DLV_DIAG_SMTP
						       : DLV_DIAG_LOCAL;
	}
	/* The original: enough for its header, and all of it if it fits. */
	size_t want = (size_t)(c->bounce_return_size_limit + 1);
	if (want < (size_t)c->message_header_max + 2)
		want = (size_t)c->message_header_max + 2;
	if ((off_t)want > j->env.data_size)
		want = (size_t)j->env.data_size;
	char *orig = xmalloc(want + 1);
	ssize_t got = pread(j->fd, orig, want, j->env.data_offset);
	if (got < 0)
		got = 0;
	struct buf mid, out;
	buf_init(&mid, 1024);
	buf_init(&out, (size_t)c->bounce_return_size_limit + c->message_header_max + (1u << 20) +
			       n * REPORT_RCPT_ROOM);
	buf_printf(&mid, "%s.%u.report@%s", j->m->id, ++r->seq, c->primary_hostname);
	struct dlv_report rep = {
		.reporting_mta = c->primary_hostname,
		.queue_id = j->m->id,
		.envid = NULL,
		.arrival = j->env.received,
		.now = now_s(),
		.to = j->env.sender,
		.message_id = buf_cstr(&mid),
		.rcpts = rr,
		.n_rcpts = n,
		/* RFC 3461 4.3: a report of no failure SHOULD return only
		 * the headers. */
		.headers_only = j->env.ret == SMTP_RET_HDRS || action != DLV_FAILED ||
				j->env.data_size > (off_t)c->bounce_return_size_limit,
		.return_max = c->bounce_return_size_limit,
	};
	struct buf envid;
	buf_init(&envid, 4096);
	if (j->env.envid && smtp_xtext_decode(j->env.envid, strlen(j->env.envid), &envid) == 0)
		rep.envid = buf_cstr(&envid);
	struct err e = { "" };
	int rc = -1;
	if (dlv_report_compose(&rep, orig, (size_t)got, &out, &e) == 0) {
		struct spool_env be;
		memset(&be, 0, sizeof(be));
		struct spool_rcpt br = { (char *)j->env.sender, 0, NULL };
		be.received = now_s();
		be.role = (char *)"local";
		be.client_ip = (char *)"local";
		be.helo = (char *)c->primary_hostname;
		be.sender = (char *)"";
		be.rcpts = &br;
		be.n_rcpts = 1;
		for (size_t k = 0; k < out.len - out.off; k++)
			if (buf_ptr(&out)[k] & 0x80) {
				be.body = SMTP_BODY_8BITMIME;
				break;
			}
		for (const char *q = j->env.sender; *q; q++)
			if ((unsigned char)*q & 0x80)
				be.smtputf8 = true;
		struct spool_msg *sm = NULL;
		if (spool_msg_begin(r->sp, &be, time_now_us(), &sm, &e) == 0) {
			char bid[QUEUE_ID_LEN + 1];
			snprintf(bid, sizeof(bid), "%s", spool_msg_id(sm));
			bool ok = false;
			if (spool_msg_write(sm, buf_ptr(&out), buf_len(&out), &e) < 0) {
				spool_msg_abort(sm);
			} else if (spool_commit_batch(r->sp, &sm, 1, &ok, NULL, &e) == 1 && ok) {
				rc = 0;
				log_event(LOG_LVL_INFO, "report",
					  "id=%s report_id=%s action=%s rcpts=%zu", j->m->id, bid,
					  action == DLV_FAILED    ? "failed"
					  : action == DLV_DELAYED ? "delayed"
								  : "delivered",
					  n);
				msg_add(r, bid, 0);
			}
		}
	}
	if (rc < 0)
		log_event(LOG_LVL_ERR, "report_failed", "id=%s error=\"%s\"", j->m->id, e.msg);
	for (size_t k = 0; k < n; k++) {
		buf_free(&orcpt[k]);
		free(diag[k]);
	}
	free(orcpt);
	free(diag);
	buf_free(&envid);
	buf_free(&mid);
	buf_free(&out);
	free(orig);
	free(rr);
	return rc;
}

/* ---- finishing an attempt --------------------------------------------- */

static void ctl_answer(int fd, const char *text)
{
	if (fd < 0)
		return;
	(void)!send(fd, text, strlen(text), MSG_NOSIGNAL);
	close(fd);
}

static void job_free(struct job *j)
{
	for (size_t i = 0; i < j->n_t; i++) {
		free(j->t[i].addr);
		free(j->t[i].text);
		free(j->t[i].mta);
	}
	free(j->t);
	free(j->recorded);
	spool_env_free(&j->env);
	spool_state_free(&j->st);
	if (j->fd >= 0)
		close(j->fd);
	free(j);
}

static void job_unlink(struct job *j)
{
	struct runner *r = j->r;
	for (struct job **pp = &r->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			r->n_jobs--;
			break;
		}
}

/* Every target of recipient i went to a server that took its NOTIFY
 * (RFC 3461 4.1, 5.2.2): a success report is that server's to send, and
 * one from here as well would tell the sender twice. */
static bool reported_onward(const struct job *j, size_t i)
{
	bool any = false;
	for (size_t t = 0; t < j->n_t; t++) {
		if (j->t[t].rcpt != i)
			continue;
		if (j->t[t].kind != T_SMTP || !j->t[t].reports_on)
			return false;
		any = true;
	}
	return any;
}

static void job_finish(struct job *j)
{
	struct runner *r = j->r;
	const struct conf *c = r->c;
	int64_t now = now_s();
	size_t n = j->env.n_rcpts;
	size_t *newly_failed = xcalloc(n + 1, sizeof(size_t)), n_failed = 0;
	size_t *newly_done = xcalloc(n + 1, sizeof(size_t)), n_done = 0;
	size_t pending = 0;
	for (size_t i = 0; i < n; i++) {
		struct spool_rcpt_state *rs = &j->st.rcpts[i];
		if (rs->status != SPOOL_RCPT_PENDING)
			continue;
		bool temp = false, perm = false, any = false;
		const char *why = NULL;
		for (size_t t = 0; t < j->n_t; t++) {
			if (j->t[t].rcpt != i)
				continue;
			any = true;
			if (j->t[t].code >= 500) {
				perm = true;
				why = j->t[t].text;
			} else if (j->t[t].code >= 400 || j->t[t].code < 200) {
				temp = true;
				if (!why || j->t[t].code >= 400)
					why = j->t[t].text;
			}
		}
		if (!any)
			temp = true;
		free(rs->last);
		rs->last = why ? str_dup(why) : NULL;
		if (temp) {
			pending++;
		} else if (perm) {
			rs->status = SPOOL_RCPT_FAILED;
			newly_failed[n_failed++] = i;
		} else {
			rs->status = SPOOL_RCPT_DELIVERED;
			newly_done[n_done++] = i;
		}
	}
	/* Give up: lifetime over, or the administrator said so (-Mg). */
	bool expired = false;
	if (pending) {
		struct dlv_retry_conf rc = { c->queue_retry_min, c->queue_retry_max,
					     c->queue_lifetime };
		j->st.attempts++;
		int64_t next = dlv_retry_next(&rc, j->st.attempts, j->env.received, now);
		if (next < 0 || j->st.giveup) {
			expired = true;
			const char *why = j->st.giveup ? "delivery cancelled by the administrator"
						       : "retry time exceeded";
			for (size_t i = 0; i < n; i++) {
				struct spool_rcpt_state *rs = &j->st.rcpts[i];
				if (rs->status != SPOOL_RCPT_PENDING)
					continue;
				struct buf t;
				buf_init(&t, 8192);
				buf_printf(&t, "%s; last error: %s", why, rs->last ? rs->last : "none");
				free(rs->last);
				rs->last = str_dup(buf_cstr(&t));
				buf_free(&t);
				rs->status = SPOOL_RCPT_FAILED;
				newly_failed[n_failed++] = i;
				/* The report shows the reason, not a stale 4xx. */
				for (size_t k = 0; k < j->n_t; k++)
					if (j->t[k].rcpt == i) {
						free(j->t[k].text);
						j->t[k].text = str_dup(rs->last);
						/* Our words now, quoting the server's:
						 * not a Diagnostic-Code of type smtp. */
						j->t[k].server_reply = false;
						j->t[k].code = 500;
						snprintf(j->t[k].status, sizeof(j->t[k].status), "%s",
							 j->st.giveup ? "5.0.0" : "4.4.7");
					}
			}
			pending = 0;
		} else {
			j->st.next_try = next;
		}
	}
	/* Reports first, state second (see the top of the file). */
	bool reports_ok = true;
	size_t *want = xcalloc(n + 1, sizeof(size_t)), n_want = 0;
	for (size_t k = 0; k < n_failed; k++) {
		const struct spool_rcpt *sr = &j->env.rcpts[newly_failed[k]];
		if (dlv_report_wanted(j->env.sender, sr->notify, DLV_FAILED))
			want[n_want++] = newly_failed[k];
	}
	if (n_want && send_report(j, DLV_FAILED, want, n_want) < 0)
		reports_ok = false;
	n_want = 0;
	for (size_t k = 0; k < n_done; k++) {
		const struct spool_rcpt *sr = &j->env.rcpts[newly_done[k]];
		if (dlv_report_wanted(j->env.sender, sr->notify, DLV_DELIVERED) &&
		    !reported_onward(j, newly_done[k]))
			want[n_want++] = newly_done[k];
	}
	if (n_want)
		(void)send_report(j, DLV_DELIVERED, want, n_want);
	n_want = 0;
	if (pending && !j->st.warned && c->delay_warning &&
	    now - j->env.received >= (int64_t)c->delay_warning) {
		for (size_t i = 0; i < n; i++)
			if (j->st.rcpts[i].status == SPOOL_RCPT_PENDING &&
			    dlv_report_wanted(j->env.sender, j->env.rcpts[i].notify, DLV_DELAYED))
				want[n_want++] = i;
		if (!n_want || send_report(j, DLV_DELAYED, want, n_want) == 0)
			j->st.warned = true;
	}
	free(want);
	struct err e = { "" };
	if (!reports_ok) {
		/* The failures are not reported yet: keep them pending so that
		 * the next attempt reports them. */
		for (size_t k = 0; k < n_failed; k++)
			j->st.rcpts[newly_failed[k]].status = SPOOL_RCPT_PENDING;
		pending += n_failed;
		int64_t soon = now + c->queue_retry_min;
		/* Never a time already past: that would retry at once, for
		 * ever, a report that cannot be written. */
		if (!j->st.next_try || j->st.next_try > soon || j->st.next_try <= now || expired)
			j->st.next_try = soon;
	}
	if (reports_ok)
		j->st.giveup = false;
	const char *outcome;
	bool removed = true;
	if (!pending) {
		if (spool_remove(r->sp, j->m->id, false, &e) < 0) {
			/* Kept in the table: the next attempt finds nothing to
			 * deliver and tries the removal again. */
			removed = false;
			j->st.next_try = now + c->queue_retry_min;
			(void)spool_state_write(r->sp, j->m->id, &j->st, &e);
			log_event(LOG_LVL_ERR, "queue_remove_failed", "id=%s error=\"%s\"", j->m->id,
				  e.msg);
		}
		log_event(LOG_LVL_INFO, "completed", "id=%s delivered=%zu failed=%zu", j->m->id,
			  n_done, n_failed);
		outcome = "completed";
	} else {
		if (spool_state_write(r->sp, j->m->id, &j->st, &e) < 0)
			log_event(LOG_LVL_ERR, "state_write_failed", "id=%s error=\"%s\"", j->m->id,
				  e.msg);
		log_event(LOG_LVL_INFO, "deferred", "id=%s pending=%zu attempts=%u next_in=%llds",
			  j->m->id, pending, j->st.attempts,
			  (long long)(j->st.next_try - now));
		outcome = "deferred";
	}
	if (j->ctl_fd >= 0) {
		struct buf a;
		buf_init(&a, 256);
		buf_printf(&a, "%s %s delivered=%zu failed=%zu pending=%zu", outcome, j->m->id,
			   n_done, n_failed, pending);
		ctl_answer(j->ctl_fd, buf_cstr(&a));
		j->ctl_fd = -1;
		buf_free(&a);
	}
	struct rmsg *m = j->m;
	m->busy = false;
	if (!pending && removed) {
		msg_drop(r, m);
	} else {
		m->next_try = j->st.next_try;
		heap_push(r, m);
	}
	free(newly_failed);
	free(newly_done);
	job_unlink(j);
	job_free(j);
	kick(r);
}

static void job_target_done(struct job *j, size_t ti, int code, const char *status,
			    const char *text, const char *mta)
{
	struct target *t = &j->t[ti];
	if (t->done)
		return;
	t->done = true;
	t->code = code;
	snprintf(t->status, sizeof(t->status), "%s", status ? status : "");
	free(t->text);
	t->text = str_dup(text ? text : "");
	free(t->mta);
	t->mta = mta ? str_dup(mta) : NULL;
	struct buf *l = log_begin(code < 300 ? LOG_LVL_INFO : LOG_LVL_WARN, "delivery");
	log_kv(l, "id", "%s", j->m->id);
	log_kv_esc(l, "rcpt", j->env.rcpts[t->rcpt].addr, strlen(j->env.rcpts[t->rcpt].addr));
	if (strcmp(t->addr, j->env.rcpts[t->rcpt].addr) != 0)
		log_kv_esc(l, "to", t->addr, strlen(t->addr));
	log_kv(l, "result", "%s", code < 300 ? "delivered" : code < 500 ? "deferred" : "failed");
	log_kv(l, "via", "%s", mta ? mta : t->kind == T_LOCAL ? j->r->c->local_delivery : "-");
	log_kv_esc(l, "reply", t->text, strlen(t->text));
	log_end(l);
}

/* Records at once the recipients whose every target is now delivered,
 * while other parts of the job are still on their way (a slow remote
 * server, a long local queue): otherwise a crash before the job ends would
 * deliver them again, however long ago they were delivered.  The memory
 * state is left as it is, so that job_finish still reports them. */
static void job_record_delivered(struct job *j)
{
	size_t n = j->env.n_rcpts;
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		if (j->st.rcpts[i].status != SPOOL_RCPT_PENDING || (j->recorded && j->recorded[i]))
			continue;
		bool all = false;
		for (size_t t = 0; t < j->n_t; t++) {
			if (j->t[t].rcpt != i)
				continue;
			all = j->t[t].done && j->t[t].code >= 200 && j->t[t].code < 300;
			if (!all)
				break;
		}
		if (!all)
			continue;
		if (!j->recorded)
			j->recorded = xcalloc(n, sizeof(*j->recorded));
		j->recorded[i] = true;
		any = true;
	}
	if (!any)
		return;
	for (size_t i = 0; i < n; i++)
		if (j->recorded[i])
			j->st.rcpts[i].status = SPOOL_RCPT_DELIVERED;
	struct err e = { "" };
	if (spool_state_write(j->r->sp, j->m->id, &j->st, &e) < 0)
		log_event(LOG_LVL_ERR, "state_write_failed", "id=%s error=\"%s\"", j->m->id, e.msg);
	for (size_t i = 0; i < n; i++)
		if (j->recorded[i])
			j->st.rcpts[i].status = SPOOL_RCPT_PENDING;
}

static void job_part_done(struct job *j)
{
	if (j->outstanding > 0)
		j->outstanding--;
	if (j->outstanding == 0)
		job_finish(j);
	else
		job_record_delivered(j);
}

/* ---- local delivery (Maildir, through the mdeliver process) ---------- */

static void md_pump(struct runner *r);

static void md_fail_all(struct runner *r, const char *why)
{
	while (r->lq_head) {
		struct lreq *q = r->lq_head;
		r->lq_head = q->next;
		job_target_done(q->job, q->ti, 451, "4.3.0", why, NULL);
		struct job *j = q->job;
		free(q);
		job_part_done(j);
	}
	r->lq_tail = NULL;
}

static void md_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	char b[4097];
	ssize_t n = recv(fd, b, sizeof(b) - 1, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	struct lreq *q = r->lq_head;
	evtimer_del(r->ev_md_timer);
	if (n <= 0 || !q) {
		log_event(LOG_LVL_ERR, "mdeliver_lost", "msg=\"local delivery process gone\"");
		event_del(r->ev_md);
		close(r->md_fd);
		r->md_fd = -1;
		r->md_busy = false;
		md_fail_all(r, "local delivery process unavailable");
		return;
	}
	b[n] = 0;
	r->lq_head = q->next;
	if (!r->lq_head)
		r->lq_tail = NULL;
	r->md_busy = false;
	int code = b[0] == '2' ? 250 : b[0] == '5' ? 550 : 451;
	job_target_done(q->job, q->ti, code, code == 250 ? "2.0.0" : code == 550 ? "5.2.0" : "4.2.0",
			b + 1, NULL);
	struct job *j = q->job;
	free(q);
	md_pump(r);
	job_part_done(j);
}

/* A delivery that does not end (a hung file system): stop waiting.  The
 * process is left to finish and exit, and the master then replaces the
 * runner and it together; meanwhile local mail is deferred. */
static void md_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	log_event(LOG_LVL_ERR, "mdeliver_timeout", "timeout=%us msg=\"local delivery hung\"",
		  r->c->local_delivery_timeout);
	if (r->md_fd >= 0) {
		event_del(r->ev_md);
		close(r->md_fd);
		r->md_fd = -1;
	}
	r->md_busy = false;
	md_fail_all(r, "local delivery timed out");
}

static void md_pump(struct runner *r)
{
	while (r->lq_head && !r->md_busy) {
		struct lreq *q = r->lq_head;
		struct job *j = q->job;
		struct target *t = &j->t[q->ti];
		if (r->md_fd < 0) {
			md_fail_all(r, "local delivery process unavailable");
			return;
		}
		struct buf path, prefix;
		buf_init(&path, 8192);
		buf_init(&prefix, 8192);
		struct err e = { "" };
		if (maildir_path_expand(r->c->maildir_path, t->addr, &path, &e) < 0) {
			r->lq_head = q->next;
			if (!r->lq_head)
				r->lq_tail = NULL;
			job_target_done(j, q->ti, 550, "5.1.3", e.msg, NULL);
			free(q);
			buf_free(&path);
			buf_free(&prefix);
			job_part_done(j);
			continue;
		}
		buf_printf(&prefix, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", j->env.sender,
			   t->addr);
		/* The delivery process is chrooted into the fixed part of the
		 * template when it runs as another user (see master.c). */
		const char *p = buf_cstr(&path);
		if (r->md_chroot)
			p += mdeliver_root_len(r->c->maildir_path);
		if (mdeliver_send(r->md_fd, j->fd, j->env.data_offset, j->env.data_size, p, (const char *)buf_ptr(&prefix), buf_len(&prefix),
				  r->c->primary_hostname) < 0) {
			r->lq_head = q->next;
			if (!r->lq_head)
				r->lq_tail = NULL;
			job_target_done(j, q->ti, 451, "4.3.0", "cannot reach the local delivery process",
					NULL);
			free(q);
			buf_free(&path);
			buf_free(&prefix);
			job_part_done(j);
			continue;
		}
		r->md_busy = true;
		struct timeval tv = { (time_t)r->c->local_delivery_timeout, 0 };
		evtimer_add(r->ev_md_timer, &tv);
		buf_free(&path);
		buf_free(&prefix);
	}
}

static void md_queue(struct job *j, size_t ti)
{
	struct runner *r = j->r;
	struct lreq *q = xcalloc(1, sizeof(*q));
	q->job = j;
	q->ti = ti;
	if (r->lq_tail)
		r->lq_tail->next = q;
	else
		r->lq_head = q;
	r->lq_tail = q;
	j->outstanding++;
}

/* ---- destinations and connections ------------------------------------ */

static struct dest *dest_get(struct runner *r, enum dest_kind kind, const char *key)
{
	for (struct dest *d = r->dests; d; d = d->next)
		if (d->kind == kind && strcmp(d->key, key) == 0)
			return d;
	struct dest *d = xcalloc(1, sizeof(*d));
	d->r = r;
	d->kind = kind;
	d->key = str_dup(key);
	d->next = r->dests;
	r->dests = d;
	return d;
}

static void dest_free_route(struct dest *d)
{
	for (size_t i = 0; i < d->n_hosts; i++) {
		free(d->hosts[i].name);
		free(d->hosts[i].addrs);
	}
	free(d->hosts);
	d->hosts = NULL;
	d->n_hosts = 0;
	d->route = 0;
	d->try_host = d->try_addr = 0;
}

static void dest_maybe_free(struct dest *d)
{
	if (d->head || d->conns || d->route == 1)
		return;
	struct runner *r = d->r;
	for (struct dest **pp = &r->dests; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	dest_free_route(d);
	free(d->last.text);
	free(d->key);
	free(d);
}

static void txn_free(struct txn *x)
{
	free(x->tix);
	free(x->rc);
	free(x);
}

/* Ends a transaction with the same outcome for all its targets. */
static void txn_fail(struct txn *x, int code, const char *status, const char *text,
		     const char *mta, bool server_reply)
{
	for (size_t k = 0; k < x->n; k++) {
		struct target *t = &x->job->t[x->tix[k]];
		if (!t->done && t->code && !server_reply) {
			/* A server's reply at an earlier address of the route says
			 * more than our own reason for not getting further. */
			char st[sizeof(t->status)];
			memcpy(st, t->status, sizeof(st));
			char *tt = t->text, *tm = t->mta;
			bool sr = t->server_reply;
			t->text = t->mta = NULL;
			job_target_done(x->job, x->tix[k], t->code, st, tt, tm);
			t->server_reply = sr;
			free(tt);
			free(tm);
			continue;
		}
		job_target_done(x->job, x->tix[k], code, status, text, mta);
		t->server_reply = server_reply;
	}
	struct job *j = x->job;
	txn_free(x);
	job_part_done(j);
}

static void dest_fail_waiting(struct dest *d, int code, const char *status, const char *text)
{
	while (d->head) {
		struct txn *x = d->head;
		d->head = x->next;
		if (!d->head)
			d->tail = NULL;
		txn_fail(x, code, status, text, NULL, false);
	}
}

/* Keeps a server's reply on a target that is not done yet: what it ends
 * with unless a later try says otherwise (see txn_fail). */
static void target_keep(struct target *t, const struct smtpc_reply *r, const char *mta)
{
	t->code = r->code;
	snprintf(t->status, sizeof(t->status), "%s", r->status);
	free(t->text);
	t->text = str_dup(r->text ? r->text : "");
	free(t->mta);
	t->mta = mta ? str_dup(mta) : NULL;
	t->server_reply = !r->local;
}

/* A transaction that failed temporarily as a whole at rc's address goes
 * back in line for the addresses after it (RFC 5321 5.1: the next MX
 * now, not at the next retry); false when rc's was the last address. */
static bool txn_next_address(struct txn *x, struct rconn *rc, const char *why)
{
	struct dest *d = rc->d;
	if (rc->ord + 1 >= dest_n_addrs(d))
		return false;
	x->min_ord = rc->ord + 1;
	x->next = d->head;
	d->head = x;
	if (!d->tail)
		d->tail = x;
	log_event(LOG_LVL_INFO, "next_address", "id=%s dest=%s peer=%s rcpts=%zu reason=\"%s\"",
		  x->job->m->id, d->key, rc->peer, x->n, why ? why : "");
	return true;
}

static void conn_ready_cb(void *arg, struct net_smtp *c);
static void conn_result_cb(void *arg, struct net_smtp *c, const struct smtpc_reply *rp, size_t n);
static void conn_closed_cb(void *arg, struct net_smtp *c, const struct smtpc_reply *why);

static const struct net_smtp_cbs conn_cbs = { conn_ready_cb, conn_result_cb, conn_closed_cb };

static void conn_unlink(struct rconn *rc)
{
	struct dest *d = rc->d;
	for (struct rconn **pp = &d->conns; *pp; pp = &(*pp)->next)
		if (*pp == rc) {
			*pp = rc->next;
			break;
		}
	d->n_conns--;
	d->r->n_conns--;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)n);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)n);
	else if (ss->ss_family == AF_UNIX)
		snprintf(out, n, "%s", ((const struct sockaddr_un *)ss)->sun_path);
	else
		snprintf(out, n, "?");
}

/* Addresses are numbered in route order (hosts by preference, each
 * host's addresses in turn). */
static size_t dest_n_addrs(const struct dest *d)
{
	size_t n = 0;
	for (size_t i = 0; i < d->n_hosts; i++)
		n += d->hosts[i].n;
	return n;
}

static size_t dest_next_ord(const struct dest *d)
{
	size_t n = 0;
	for (size_t i = 0; i < d->try_host && i < d->n_hosts; i++)
		n += d->hosts[i].n;
	return n + d->try_addr;
}

static void dest_seek(struct dest *d, size_t ord)
{
	d->try_host = 0;
	while (d->try_host < d->n_hosts && ord >= d->hosts[d->try_host].n) {
		ord -= d->hosts[d->try_host].n;
		d->try_host++;
	}
	d->try_addr = d->try_host < d->n_hosts ? ord : 0;
}

/* Opens one more connection to the next address of the route; false when
 * every address has been tried. */
static bool dest_connect(struct dest *d)
{
	struct runner *r = d->r;
	const struct conf *c = r->c;
	while (d->try_host < d->n_hosts) {
		struct route_host *h = &d->hosts[d->try_host];
		if (d->try_addr >= h->n) {
			d->try_host++;
			d->try_addr = 0;
			continue;
		}
		size_t ord = dest_next_ord(d);
		struct sockaddr_storage ss = h->addrs[d->try_addr++];
		socklen_t len = sizeof(struct sockaddr_un);
		if (ss.ss_family == AF_INET)
			len = sizeof(struct sockaddr_in);
		else if (ss.ss_family == AF_INET6)
			len = sizeof(struct sockaddr_in6);
		const struct smtpc_opts *o = d->plain ? &r->mx_plain_opts : &r->mx_opts;
		struct tls_ctx *tls = d->plain ? NULL : r->tls_mx;
		bool on_connect = false;
		if (d->kind == DEST_SMARTHOST) {
			o = &r->sh_opts;
			tls = r->tls_smarthost;
			on_connect = strcmp(c->smarthost_tls, "on_connect") == 0;
		} else if (d->kind == DEST_LMTP) {
			o = &r->lmtp_opts;
			tls = NULL;
		}
		struct rconn *rc = xcalloc(1, sizeof(*rc));
		rc->d = d;
		rc->ord = ord;
		char ip[INET6_ADDRSTRLEN + 120];
		fmt_addr(&ss, ip, sizeof(ip));
		if (ss.ss_family == AF_UNIX)
			snprintf(rc->peer, sizeof(rc->peer), "%s", ip);
		else
			snprintf(rc->peer, sizeof(rc->peer), "%s[%s]", h->name, ip);
		struct net_smtp_timeouts to = { c->remote_connect_timeout, c->remote_command_timeout,
						c->remote_command_timeout };
		struct err e = { "" };
		rc->c = net_smtp_open(r->base, (struct sockaddr *)&ss, len, h->name, o, tls,
				      on_connect, &to, &conn_cbs, rc, &e);
		if (!rc->c) {
			log_event(LOG_LVL_WARN, "connect_failed", "dest=%s peer=%s error=\"%s\"",
				  d->key, rc->peer, e.msg);
			set_reply(&d->last, 451, "4.4.1", e.msg);
			free(rc);
			continue;
		}
		net_smtp_set_data_done_timeout(rc->c, c->remote_data_done_timeout);
		rc->next = d->conns;
		d->conns = rc;
		d->n_conns++;
		r->n_conns++;
		return true;
	}
	return false;
}

static void conn_ready_cb(void *arg, struct net_smtp *c)
{
	struct rconn *rc = arg;
	struct dest *d = rc->d;
	rc->ready = true;
	rc->idle = true;
	/* A working server: later connections start from it again. */
	d->try_host = 0;
	d->try_addr = 0;
	/* The first transaction this address may carry (those that failed
	 * here wait for a later address). */
	struct txn *x = d->head, *prev = NULL;
	while (x && x->min_ord > rc->ord) {
		prev = x;
		x = x->next;
	}
	if (!x || rc->quitting) {
		rc->idle = false;
		rc->quitting = true;
		net_smtp_quit(c);
		return;
	}
	/* Busy until the machine says READY again: after a message it may
	 * first reset the session, or end it. */
	rc->idle = false;
	if (prev)
		prev->next = x->next;
	else
		d->head = x->next;
	if (d->tail == x)
		d->tail = prev;
	x->next = NULL;
	struct job *j = x->job;
	struct smtpc_msg m = {
		.sender = j->env.sender,
		.rcpts = x->rc,
		.n_rcpts = x->n,
		.size = (uint64_t)j->env.data_size,
		.eightbit = j->env.body == SMTP_BODY_8BITMIME,
		.smtputf8 = j->env.smtputf8,
		.ret = j->env.ret,
		.envid = j->env.envid,
	};
	struct err e = { "" };
	rc->cur = x;
	if (net_smtp_send(c, &m, j->fd, j->env.data_offset, j->env.data_size, &e) < 0) {
		rc->cur = NULL;
		txn_fail(x, 451, "4.3.0", e.msg, rc->peer, false);
		rc->quitting = true;
		net_smtp_quit(c);
		return;
	}
	if (d->head)
		dest_pump(d);
}

static void conn_result_cb(void *arg, struct net_smtp *c, const struct smtpc_reply *rp, size_t n)
{
	struct rconn *rc = arg;
	struct txn *x = rc->cur;
	rc->cur = NULL;
	if (!x)
		return;
	struct dest *d = rc->d;
	bool stopping = d->r->stopping;
	bool any_ok = false, all_temp = n == x->n && n > 0, before_data = true;
	for (size_t k = 0; k < n; k++) {
		if (rp[k].code / 100 == 2)
			any_ok = true;
		if (rp[k].code / 100 != 4)
			all_temp = false;
		if (rp[k].stage != SMTPC_STAGE_MAIL && rp[k].stage != SMTPC_STAGE_RCPT)
			before_data = false;
	}
	/* Put off as a whole before any recipient was taken (4xx to MAIL, or
	 * to every RCPT): the next address of the route may take it now. */
	if (all_temp && before_data && !stopping) {
		for (size_t k = 0; k < x->n; k++)
			target_keep(&x->job->t[x->tix[k]], &rp[k], rc->peer);
		if (txn_next_address(x, rc, rp[0].text))
			return;
	}
	/* Recipients put off at RCPT (most often a per-transaction limit,
	 * RFC 5321 4.5.3.1.10) after the others were delivered go again at
	 * once in a further transaction, rather than at the next retry. */
	size_t *again = NULL, n_again = 0;
	for (size_t k = 0; k < x->n; k++) {
		const struct smtpc_reply *one = k < n ? &rp[k] : NULL;
		if (one && any_ok && !stopping && x->rounds < RUNNER_RCPT_ROUNDS &&
		    one->code / 100 == 4 && one->stage == SMTPC_STAGE_RCPT) {
			again = xrealloc(again, (n_again + 1) * sizeof(*again));
			again[n_again++] = x->tix[k];
			target_keep(&x->job->t[x->tix[k]], one, rc->peer);
			continue;
		}
		job_target_done(x->job, x->tix[k], one ? one->code : 451,
				one ? one->status : "4.3.0", one ? one->text : "no reply", rc->peer);
		struct target *t = &x->job->t[x->tix[k]];
		t->server_reply = one && !one->local;
		t->reports_on = one && one->dsn;
	}
	struct job *j = x->job;
	if (n_again) {
		log_event(LOG_LVL_INFO, "rcpt_again", "id=%s dest=%s peer=%s rcpts=%zu round=%u",
			  j->m->id, d->key, rc->peer, n_again, x->rounds + 1);
		struct txn *y = txn_new(j, d, again, n_again);
		y->min_ord = x->min_ord;
		y->rounds = x->rounds + 1;
		/* First in line: this connection takes it at its next READY. */
		y->next = d->head;
		d->head = y;
		if (!d->tail)
			d->tail = y;
	} else {
		free(again);
	}
	txn_free(x);
	job_part_done(j);
	/* ready_cb follows from the machine (READY): it takes the next one. */
}

static void conn_closed_cb(void *arg, struct net_smtp *c, const struct smtpc_reply *why)
{
	struct rconn *rc = arg;
	struct dest *d = rc->d;
	struct runner *r = d->r;
	bool was_ready = rc->ready;
	struct txn *x = rc->cur;
	conn_unlink(rc);
	if (why)
		set_reply(&d->last, why->code, why->status, why->text);
	if (x && why && !why->local && why->code / 100 == 4 && !r->stopping) {
		/* The server itself ended the transaction (421): it did not take
		 * the message, so the next address of the route may now. */
		for (size_t k = 0; k < x->n; k++)
			target_keep(&x->job->t[x->tix[k]], why, rc->peer);
		if (txn_next_address(x, rc, why->text))
			x = NULL;
	} else if (x && why && why->local && strcmp(why->status, "4.4.2") == 0 &&
		   !net_smtp_dot_sent(c) && !r->stopping) {
		/* Lost or timed out before the final dot went out: the server
		 * cannot have the message, so the next address may take it now
		 * (after the dot it may have, and it waits for the retry). */
		if (txn_next_address(x, rc, why->text))
			x = NULL;
	}
	if (x) {
		/* Lost in the middle of a message: it may or may not have been
		 * taken; trying later again is the at-least-once side. */
		int code = why && why->code >= 400 && why->code < 500 ? why->code : 451;
		txn_fail(x, code,
			 why && why->status[0] == '4' ? why->status : "4.4.2",
			 why && why->text ? why->text : "connection lost", rc->peer,
			 why && why->text && !why->local);
	}
	if (!was_ready && why && strcmp(why->status, "4.7.5") == 0 && d->kind == DEST_DOMAIN &&
	    r->mx_opts.tls == SMTPC_TLS_MAY && !d->plain) {
		/* Opportunistic TLS (RFC 7435): a peer whose TLS is broken still
		 * gets its mail, in plain text, rather than never.  The same
		 * address is tried again without STARTTLS. */
		d->plain = true;
		if (d->try_addr > 0)
			d->try_addr--;
		log_event(LOG_LVL_WARN, "tls_fallback", "dest=%s peer=%s msg=\"TLS handshake failed, "
			  "retrying without TLS\"", d->key, rc->peer);
	}
	if (!was_ready) {
		log_event(LOG_LVL_WARN, "connect_failed", "dest=%s peer=%s code=%d error=\"%s\"",
			  d->key, rc->peer, why ? why->code : 0, why && why->text ? why->text : "");
	}
	free(rc);
	dest_pump(d);
	dest_maybe_free(d);
	kick(r);
}

/* The smarthost's host and port (default by its TLS mode).  The value
 * was checked when the configuration was loaded, so it parses. */
static bool smarthost_split(const struct conf *c, char *host, size_t hn, uint16_t *port)
{
	struct err e = { "" };
	return conf_parse_hostport(c->smarthost, host, hn, port, conf_smarthost_default_port(c),
				   &e) == 0;
}

/* Host names equal, ASCII case aside, a trailing dot ignored. */
static bool host_name_eq(const char *a, const char *b)
{
	size_t an = strlen(a), bn = strlen(b);
	if (an && a[an - 1] == '.')
		an--;
	if (bn && b[bn - 1] == '.')
		bn--;
	return an == bn && strncasecmp(a, b, an) == 0;
}

/* Is h this host: our primary_hostname, or a name with an address at
 * which we listen on the port mail would go to (an alias, a CNAME, a
 * name in another domain)? */
static bool route_host_is_self(const struct runner *r, const struct dns_host *h,
			       struct ifaddrs **ifa)
{
	const char *me = r->c->primary_hostname;
	if (me && *me && h->name && host_name_eq(h->name, me))
		return true;
	uint16_t port = htons((uint16_t)r->c->remote_smtp_port);
	for (size_t k = 0; k < h->n_addrs; k++) {
		struct sockaddr_storage ss = h->addrs[k];
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = port;
		else if (ss.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&ss)->sin6_port = port;
		if (listen_is_own(&ss, r->c->local_interfaces, r->c->n_local_interfaces, r->c->ports,
				  r->c->n_ports, ifa))
			return true;
	}
	return false;
}

/* RFC 5321 5.1: when this host is one of the domain's mail exchangers,
 * only the hosts preferred to it (a lower preference value) may be used;
 * the others, itself included, would send the mail back here.  Returns
 * how many of the route's first hosts remain (all when it is not in the
 * list; 0 when it is the best). */
static size_t route_self_cut(const struct runner *r, const struct dns_route *rt)
{
	struct ifaddrs *ifa = NULL;
	size_t keep = rt->n_hosts;
	for (size_t i = 0; i < rt->n_hosts; i++) {
		if (!route_host_is_self(r, &rt->hosts[i], &ifa))
			continue;
		/* By preference: those of our preference come just before us. */
		keep = i;
		while (keep > 0 && rt->hosts[keep - 1].pref >= rt->hosts[i].pref)
			keep--;
		break;
	}
	if (ifa)
		freeifaddrs(ifa);
	return keep;
}

static void route_cb(void *arg, const struct dns_route *rt)
{
	struct dest *d = arg;
	struct runner *r = d->r;
	d->route = 0;
	size_t n_use = rt->n_hosts;
	if (d->kind == DEST_SMARTHOST && rt->status != DNS_OK) {
		/* The relay's name not resolving is a configuration or DNS
		 * problem of this site, not a property of the recipients. */
		struct buf t;
		buf_init(&t, 4096);
		buf_printf(&t, "smarthost %s: %s", d->key, rt->why ? rt->why : "not found");
		dest_fail_waiting(d, 451, "4.4.3", buf_cstr(&t));
		buf_free(&t);
	} else if (rt->status == DNS_NULLMX) {
		dest_fail_waiting(d, 556, "5.1.10", "the recipient domain accepts no mail (null MX)");
	} else if (rt->status == DNS_NOTFOUND) {
		struct buf t;
		buf_init(&t, 4096);
		buf_printf(&t, "no mail server for the domain: %s", rt->why ? rt->why : "not found");
		dest_fail_waiting(d, 550, "5.1.2", buf_cstr(&t));
		buf_free(&t);
	} else if (rt->status != DNS_OK || rt->n_hosts == 0) {
		struct buf t;
		buf_init(&t, 4096);
		buf_printf(&t, "DNS lookup failed: %s", rt->why ? rt->why : "temporary failure");
		dest_fail_waiting(d, 451, "4.4.3", buf_cstr(&t));
		buf_free(&t);
	} else if (d->kind == DEST_DOMAIN && (n_use = route_self_cut(r, rt)) == 0) {
		struct buf t;
		buf_init(&t, 4096);
		buf_printf(&t, "mail for %s loops back to myself", d->key);
		log_event(LOG_LVL_WARN, "mx_loop", "dest=%s msg=\"this host is the best MX\"", d->key);
		dest_fail_waiting(d, 554, "5.4.6", buf_cstr(&t));
		buf_free(&t);
	} else {
		uint16_t port_host = (uint16_t)r->c->remote_smtp_port;
		if (n_use < rt->n_hosts)
			log_event(LOG_LVL_INFO, "mx_self", "dest=%s used=%zu dropped=%zu", d->key, n_use,
				  rt->n_hosts - n_use);
		if (d->kind == DEST_SMARTHOST) {
			char host[300];
			if (!smarthost_split(r->c, host, sizeof(host), &port_host))
				port_host = conf_smarthost_default_port(r->c);
		}
		/* RFC 5321 5.1 lets the number of addresses tried be bounded
		 * (at least two): each costs up to a connect and a greeting
		 * timeout, and a domain's DNS may list hundreds. */
		size_t budget = r->c->remote_max_addresses, total = 0;
		for (size_t i = 0; i < n_use; i++)
			total += rt->hosts[i].n_addrs;
		if (total > budget)
			log_event(LOG_LVL_INFO, "route_limited", "dest=%s addresses=%zu used=%zu",
				  d->key, total, budget);
		d->hosts = xcalloc(n_use, sizeof(*d->hosts));
		for (size_t i = 0; i < n_use && budget > 0; i++) {
			struct route_host *h = &d->hosts[d->n_hosts++];
			h->name = str_dup(rt->hosts[i].name);
			h->n = rt->hosts[i].n_addrs < budget ? rt->hosts[i].n_addrs : budget;
			budget -= h->n;
			h->addrs = xcalloc(h->n ? h->n : 1, sizeof(*h->addrs));
			for (size_t k = 0; k < h->n; k++) {
				h->addrs[k] = rt->hosts[i].addrs[k];
				uint16_t port = htons(port_host);
				if (h->addrs[k].ss_family == AF_INET)
					((struct sockaddr_in *)&h->addrs[k])->sin_port = port;
				else if (h->addrs[k].ss_family == AF_INET6)
					((struct sockaddr_in6 *)&h->addrs[k])->sin6_port = port;
			}
		}
		d->route = 2;
	}
	/* Called from dns_process: pump later, outside the resolver. */
	dest_pump(d);
	dest_maybe_free(d);
}

/* Fills a one-host route from an address literal; false if it is not one. */
static bool literal_route(struct dest *d, const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	const char *h = host;
	if (strncasecmp(h, "IPv6:", 5) == 0)
		h += 5;
	if (listen_sockaddr(h, port, &ss) == 0)
		return false;
	d->hosts = xcalloc(1, sizeof(*d->hosts));
	d->hosts[0].name = str_dup(host);
	d->hosts[0].addrs = xcalloc(1, sizeof(ss));
	d->hosts[0].addrs[0] = ss;
	d->hosts[0].n = 1;
	d->n_hosts = 1;
	d->route = 2;
	return true;
}

static bool lmtp_route(struct dest *d, const char *spec)
{
	if (spec[0] == '/') {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		struct sockaddr_un *su = (struct sockaddr_un *)&ss;
		if (strlen(spec) >= sizeof(su->sun_path))
			return false;
		su->sun_family = AF_UNIX;
		memcpy(su->sun_path, spec, strlen(spec) + 1);
		d->hosts = xcalloc(1, sizeof(*d->hosts));
		d->hosts[0].name = str_dup("lmtp");
		d->hosts[0].addrs = xcalloc(1, sizeof(ss));
		d->hosts[0].addrs[0] = ss;
		d->hosts[0].n = 1;
		d->n_hosts = 1;
		d->route = 2;
		return true;
	}
	char host[256];
	uint16_t port;
	struct err e = { "" };
	return conf_parse_hostport(spec, host, sizeof(host), &port, 0, &e) == 0 &&
	       literal_route(d, host, port);
}

/* Resolves the destination if needed, then opens connections for the
 * waiting transactions within the limits. */
static void dest_pump(struct dest *d)
{
	struct runner *r = d->r;
	const struct conf *c = r->c;
	/* Idle ready connections take work first. */
	for (struct rconn *rc = d->conns; rc && d->head; rc = rc->next)
		if (rc->idle && !rc->cur && !rc->quitting)
			conn_ready_cb(rc, rc->c);
	if (!d->head || r->stopping)
		return;
	if (d->route == 1)
		return;
	if (d->route == 0) {
		if (d->kind == DEST_LMTP) {
			if (!lmtp_route(d, c->lmtp_socket)) {
				dest_fail_waiting(d, 451, "4.3.5", "lmtp_socket is not a path or host:port");
				return;
			}
		} else if (d->kind == DEST_LITERAL) {
			char host[300];
			size_t n = strlen(d->key);
			snprintf(host, sizeof(host), "%.*s", (int)(n > 2 ? n - 2 : 0), d->key + 1);
			if (!literal_route(d, host, (uint16_t)c->remote_smtp_port)) {
				dest_fail_waiting(d, 550, "5.1.2", "invalid address literal");
				return;
			}
		} else if (d->kind == DEST_SMARTHOST) {
			char host[300];
			uint16_t port;
			if (!smarthost_split(c, host, sizeof(host), &port)) {
				dest_fail_waiting(d, 451, "4.3.5", "smarthost is not host or host:port");
				return;
			}
			if (!literal_route(d, host, port)) {
				d->route = 1;
				struct err e = { "" };
				if (dns_route_lookup(r->dns, host, route_cb, d, &e) < 0) {
					d->route = 0;
					dest_fail_waiting(d, 451, "4.4.3", e.msg);
				}
				return;
			}
		} else {
			d->route = 1;
			struct err e = { "" };
			if (dns_route_lookup(r->dns, d->key, route_cb, d, &e) < 0) {
				d->route = 0;
				dest_fail_waiting(d, 451, "4.4.3", e.msg);
			}
			return;
		}
	}
	/* Count the transactions not yet on a connection; new connections
	 * start no earlier than the first address one of them may use. */
	size_t waiting = 0, need = SIZE_MAX;
	for (struct txn *x = d->head; x; x = x->next) {
		waiting++;
		if (x->min_ord < need)
			need = x->min_ord;
	}
	if (need != SIZE_MAX && dest_next_ord(d) < need)
		dest_seek(d, need);
	size_t connecting = 0;
	for (struct rconn *rc = d->conns; rc; rc = rc->next)
		if (!rc->ready)
			connecting++;
	/* Slow start: one connection at a time is being set up; when it is
	 * ready and work is still waiting, the next one opens (conn_ready_cb).
	 * A destination that answers quickly is thus served by few
	 * connections, each carrying several messages. */
	while (waiting > connecting && connecting == 0 &&
	       d->n_conns < c->remote_max_per_destination && r->n_conns < c->remote_max_parallel) {
		if (!dest_connect(d)) {
			if (d->n_conns == 0) {
				/* Every address failed: the route is forgotten so that the
				 * next attempt asks DNS again. */
				const char *why = d->last.text ? d->last.text
								: "no server could be reached";
				struct buf t;
				buf_init(&t, 8192);
				buf_printf(&t, "%s", why);
				int code = d->last.code >= 400 && d->last.code < 500 ? d->last.code : 451;
				dest_free_route(d);
				dest_fail_waiting(d, code,
						  d->last.status[0] && d->last.status[0] == '4'
							  ? d->last.status
							  : "4.4.1",
						  buf_cstr(&t));
				buf_free(&t);
			}
			return;
		}
		connecting++;
	}
}

/* A transaction for targets tix[n] (taken over) of job j, counted in the
 * job's outstanding parts; the caller puts it in d's line. */
static struct txn *txn_new(struct job *j, struct dest *d, size_t *tix, size_t n)
{
	struct txn *x = xcalloc(1, sizeof(*x));
	x->job = j;
	x->d = d;
	x->tix = tix;
	x->n = n;
	x->rc = xcalloc(n, sizeof(*x->rc));
	for (size_t k = 0; k < n; k++) {
		const struct target *t = &j->t[tix[k]];
		const struct spool_rcpt *sr = &j->env.rcpts[t->rcpt];
		x->rc[k].addr = t->addr;
		/* DSN parameters belong to the recipient as the client gave it. */
		if (strcmp(t->addr, sr->addr) == 0) {
			x->rc[k].notify = sr->notify;
			x->rc[k].orcpt = sr->orcpt;
		}
	}
	j->outstanding++;
	return x;
}

static void dest_add_one(struct job *j, struct dest *d, size_t *tix, size_t n)
{
	struct txn *x = txn_new(j, d, tix, n);
	if (d->tail)
		d->tail->next = x;
	else
		d->head = x;
	d->tail = x;
}

/* Targets tix[n] (taken over) for d, in transactions of at most
 * remote_rcpt_max recipients (RFC 5321 4.5.3.1.8 guarantees servers take
 * 100; more in one go only meets the server's own limit). */
static void dest_add(struct job *j, struct dest *d, size_t *tix, size_t n)
{
	size_t max = j->r->c->remote_rcpt_max; /* at least 1 (its minimum) */
	if (n <= max) {
		dest_add_one(j, d, tix, n);
		return;
	}
	for (size_t off = 0; off < n; off += max) {
		size_t m = n - off < max ? n - off : max;
		size_t *part = xmalloc(m * sizeof(*part));
		memcpy(part, tix + off, m * sizeof(*part));
		dest_add_one(j, d, part, m);
	}
	free(tix);
}

/* ---- routing --------------------------------------------------------- */

struct expand_ctx {
	struct runner *r;
	char **out;
	size_t n;
	bool tempfail;
	bool overflow;
	bool loop;
	const char *path[RUNNER_ALIAS_DEPTH + 1]; /* the chain being expanded */
	char **seen;         /* addresses already expanded (diamonds) */
	size_t n_seen;
	size_t steps;        /* expansions done: bounds the work */
};

static bool is_local(struct runner *r, const char *addr)
{
	const char *dom = addr_domain(addr);
	if (!dom)
		return true; /* bare "postmaster" */
	return auth_dir_is_local_domain(r->dir, dom, strlen(dom));
}

/* The domain of a bare "postmaster", which must reach someone here (RFC
 * 5321 4.5.1): primary_hostname when it is a local domain, else the first
 * of local_domains; postmaster@primary_hostname would leave this host
 * for its MX, which is this host again. */
static const char *postmaster_domain(struct runner *r)
{
	const char *me = r->c->primary_hostname;
	if (auth_dir_is_local_domain(r->dir, me, strlen(me)))
		return me;
	for (size_t i = 0; i < r->c->n_local_domains; i++)
		if (strcmp(r->c->local_domains[i], "@") != 0)
			return r->c->local_domains[i];
	return me;
}

static void push_target(struct expand_ctx *x, const char *a)
{
	for (size_t i = 0; i < x->n; i++)
		if (strcasecmp(x->out[i], a) == 0)
			return;
	if (x->n >= RUNNER_TARGETS_MAX) {
		x->overflow = true;
		return;
	}
	x->out = xrealloc(x->out, (x->n + 1) * sizeof(*x->out));
	x->out[x->n++] = str_dup(a);
}

struct collect {
	char **v;
	size_t n;
};

static void collect_cb(const char *source, const char *target, void *arg)
{
	struct collect *c = arg;
	if (c->n >= RUNNER_TARGETS_MAX)
		return;
	c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
	c->v[c->n++] = str_dup(target);
}

static void expand(struct expand_ctx *x, const char *addr, unsigned depth)
{
	if (!is_local(x->r, addr)) {
		push_target(x, addr);
		return;
	}
	/* An address on its own chain is a loop, and so is a chain deeper
	 * than RUNNER_ALIAS_DEPTH: the recipient fails rather than landing in
	 * a mailbox named after an alias. */
	for (unsigned i = 0; i < depth; i++)
		if (strcasecmp(x->path[i], addr) == 0)
			x->loop = true;
	if (depth >= RUNNER_ALIAS_DEPTH)
		x->loop = true;
	if (x->loop || x->overflow || x->tempfail)
		return;
	for (size_t i = 0; i < x->n_seen; i++)
		if (strcasecmp(x->seen[i], addr) == 0)
			return; /* reached before by another branch: done already */
	if (++x->steps > RUNNER_TARGETS_MAX) {
		x->overflow = true;
		return;
	}
	x->seen = xrealloc(x->seen, (x->n_seen + 1) * sizeof(*x->seen));
	x->seen[x->n_seen++] = str_dup(addr);
	x->path[depth] = addr;
	struct collect col = { NULL, 0 };
	struct err e = { "" };
	int n = auth_dir_expand(x->r->dir, addr, collect_cb, &col, &e);
	if (n < 0) {
		x->tempfail = true;
	} else if (col.n == 0) {
		/* A mailbox.  A bare "postmaster" is that of a local domain,
		 * whose own aliases then apply. */
		if (!addr_domain(addr)) {
			struct buf b;
			buf_init(&b, 1024);
			buf_printf(&b, "%s@%s", addr, postmaster_domain(x->r));
			expand(x, buf_cstr(&b), depth + 1);
			buf_free(&b);
		} else {
			push_target(x, addr);
		}
	} else {
		const char *dom = addr_domain(addr);
		for (size_t i = 0; i < col.n; i++) {
			/* A bare target ("team: alice") stays in the domain of the
			 * address it came from (Exim's qualify_preserve_domain). */
			struct buf q;
			buf_init(&q, 2048);
			if (!addr_domain(col.v[i]) && strcasecmp(col.v[i], "postmaster") != 0 && dom)
				buf_printf(&q, "%s@%s", col.v[i], dom);
			else
				buf_puts(&q, col.v[i]);
			const char *t = buf_cstr(&q);
			if (strcasecmp(t, addr) == 0)
				push_target(x, addr); /* "user: user, other" keeps a copy */
			else
				expand(x, t, depth + 1);
			buf_free(&q);
		}
	}
	for (size_t i = 0; i < col.n; i++)
		free(col.v[i]);
	free(col.v);
}

static void add_target(struct job *j, size_t rcpt, const char *addr, enum target_kind kind)
{
	j->t = xrealloc(j->t, (j->n_t + 1) * sizeof(*j->t));
	struct target *t = &j->t[j->n_t++];
	memset(t, 0, sizeof(*t));
	t->rcpt = rcpt;
	t->addr = str_dup(addr);
	t->kind = kind;
}

/* Routes every pending recipient into targets, then hands the targets to
 * their destinations. */
static void job_route(struct job *j)
{
	struct runner *r = j->r;
	const struct conf *c = r->c;
	bool lmtp = strcmp(c->local_delivery, "lmtp") == 0;
	for (size_t i = 0; i < j->env.n_rcpts; i++) {
		if (j->st.rcpts[i].status != SPOOL_RCPT_PENDING)
			continue;
		const char *a = j->env.rcpts[i].addr;
		if (!is_local(r, a)) {
			add_target(j, i, a, T_SMTP);
			continue;
		}
		struct expand_ctx x;
		memset(&x, 0, sizeof(x));
		x.r = r;
		expand(&x, a, 0);
		for (size_t k = 0; k < x.n_seen; k++)
			free(x.seen[k]);
		free(x.seen);
		if (x.loop) {
			size_t before = j->n_t;
			add_target(j, i, a, T_LOCAL);
			job_target_done(j, before, 550, "5.4.6", "alias loop: the address expands into itself", NULL);
		} else if (x.tempfail) {
			size_t before = j->n_t;
			add_target(j, i, a, T_LOCAL);
			job_target_done(j, before, 451, "4.3.0", "alias lookup temporarily unavailable", NULL);
		} else if (x.overflow) {
			size_t before = j->n_t;
			add_target(j, i, a, T_LOCAL);
			job_target_done(j, before, 550, "5.3.0", "alias expands to too many addresses", NULL);
		} else {
			for (size_t k = 0; k < x.n; k++)
				add_target(j, i, x.out[k], is_local(r, x.out[k]) ? T_LOCAL : T_SMTP);
		}
		for (size_t k = 0; k < x.n; k++)
			free(x.out[k]);
		free(x.out);
	}
	/* Group: local mailboxes (Maildir or one LMTP transaction), remote
	 * targets by destination. */
	size_t *lm = NULL, n_lm = 0;
	bool *placed = xcalloc(j->n_t + 1, sizeof(bool));
	for (size_t t = 0; t < j->n_t; t++) {
		if (j->t[t].done) {
			placed[t] = true;
			continue;
		}
		if (j->t[t].kind == T_LOCAL) {
			placed[t] = true;
			if (lmtp) {
				lm = xrealloc(lm, (n_lm + 1) * sizeof(*lm));
				lm[n_lm++] = t;
			} else {
				md_queue(j, t);
			}
		}
	}
	if (n_lm)
		dest_add(j, dest_get(r, DEST_LMTP, "lmtp"), lm, n_lm);
	else
		free(lm);
	for (size_t t = 0; t < j->n_t; t++) {
		if (placed[t])
			continue;
		const char *dom = addr_domain(j->t[t].addr);
		enum dest_kind kind = DEST_DOMAIN;
		char key[300];
		if (c->smarthost && *c->smarthost) {
			kind = DEST_SMARTHOST;
			snprintf(key, sizeof(key), "smarthost");
		} else if (dom && dom[0] == '[') {
			kind = DEST_LITERAL;
			snprintf(key, sizeof(key), "%s", dom);
		} else {
			snprintf(key, sizeof(key), "%s", dom ? dom : "");
			str_lower(key);
		}
		size_t *ix = NULL, n = 0;
		for (size_t u = t; u < j->n_t; u++) {
			if (placed[u])
				continue;
			const char *d2 = addr_domain(j->t[u].addr);
			bool same = kind == DEST_SMARTHOST ||
				    (d2 && dom && strcasecmp(d2, dom) == 0);
			if (!same)
				continue;
			placed[u] = true;
			ix = xrealloc(ix, (n + 1) * sizeof(*ix));
			ix[n++] = u;
		}
		if (!dom || !*dom) {
			for (size_t k = 0; k < n; k++)
				job_target_done(j, ix[k], 550, "5.1.3", "no domain in the address", NULL);
			free(ix);
			continue;
		}
		dest_add(j, dest_get(r, kind, key), ix, n);
	}
	free(placed);
}

/* ---- attempts -------------------------------------------------------- */

/* Received: fields in the message header (RFC 5321 6.3 loop detection). */
static unsigned count_received(const struct job *j)
{
	/* Read in blocks up to the empty line that ends the header (never
	 * past message_header_max), matching "Received:" at each line start. */
	static const char pat[] = "received:";
	off_t off = j->env.data_offset;
	off_t end = off + (j->env.data_size < (off_t)j->r->c->message_header_max
				   ? j->env.data_size
				   : (off_t)j->r->c->message_header_max);
	unsigned n = 0;
	size_t col = 0;
	bool match = true;
	char b[16384];
	while (off < end) {
		size_t want = (size_t)(end - off) < sizeof(b) ? (size_t)(end - off) : sizeof(b);
		ssize_t got = pread(j->fd, b, want, off);
		if (got <= 0)
			break;
		off += got;
		for (ssize_t i = 0; i < got; i++) {
			char c = b[i];
			if (c == '\n') {
				col = 0;
				match = true;
				continue;
			}
			if (col == 0 && c == '\r')
				return n;
			if (match && col < sizeof(pat) - 1) {
				if (tolower((unsigned char)c) != pat[col])
					match = false;
				else if (col == sizeof(pat) - 2)
					n++;
			}
			col++;
		}
	}
	return n;
}

static void job_start(struct runner *r, struct rmsg *m, int ctl_fd)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->r = r;
	j->m = m;
	j->fd = -1;
	j->ctl_fd = ctl_fd;
	struct err e = { "" };
	if (spool_read_env(r->sp, m->id, &j->env, &e) < 0 ||
	    spool_state_read(r->sp, m->id, j->env.n_rcpts, &j->st, &e) < 0 ||
	    spool_open_data(r->sp, m->id, &j->fd, &e) < 0) {
		/* A wake-up sent before this runner started can name a message
		 * that its first pass has already delivered and removed: that is
		 * no error.  A file still there but unreadable is. */
		struct stat sb;
		bool gone = fstatat(spool_queue_dirfd(r->sp), m->id, &sb, AT_SYMLINK_NOFOLLOW) < 0 &&
			    errno == ENOENT;
		if (gone)
			log_event(LOG_LVL_DEBUG, "queue_gone", "id=%s", m->id);
		else
			log_event(LOG_LVL_ERR, "queue_read_failed", "id=%s error=\"%s\"", m->id,
				  e.msg);
		ctl_answer(ctl_fd, gone ? "error: no such message" : "error: message unreadable");
		j->ctl_fd = -1;
		/* Gone (removed under us) or unreadable: forget it until the next
		 * start, when recovery sets unreadable files aside. */
		msg_drop(r, m);
		spool_env_free(&j->env);
		if (j->st.rcpts)
			spool_state_free(&j->st);
		if (j->fd >= 0)
			close(j->fd);
		free(j);
		return;
	}
	heap_remove(r, m);
	m->busy = true;
	j->next = r->jobs;
	r->jobs = j;
	r->n_jobs++;
	log_event(LOG_LVL_INFO, "attempt", "id=%s attempt=%u rcpts=%zu", m->id, j->st.attempts + 1,
		  j->env.n_rcpts);
	j->outstanding = 1; /* held until routing is done */
	if (j->st.giveup) {
		/* -Mg: no delivery, straight to the report. */
	} else if (count_received(j) > r->c->received_headers_max) {
		for (size_t i = 0; i < j->env.n_rcpts; i++) {
			if (j->st.rcpts[i].status != SPOOL_RCPT_PENDING)
				continue;
			size_t t = j->n_t;
			add_target(j, i, j->env.rcpts[i].addr, T_SMTP);
			job_target_done(j, t, 554, "5.4.6",
					"mail loop: too many Received header fields", NULL);
		}
	} else {
		job_route(j);
		md_pump(r);
		for (struct dest *d = r->dests, *next; d; d = next) {
			next = d->next;
			dest_pump(d);
			dest_maybe_free(d);
		}
	}
	job_part_done(j);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	/* Connections freed elsewhere may let a destination held back by
	 * remote_max_parallel open one now. */
	for (struct dest *d = r->dests, *next; d; d = next) {
		next = d->next;
		dest_pump(d);
		dest_maybe_free(d);
	}
	schedule(r);
}

/* Runs schedule() from the event loop: attempts that end inside another
 * attempt's call chain must not recurse into starting more. */
static void kick(struct runner *r)
{
	if (r->ev_kick)
		event_active(r->ev_kick, EV_TIMEOUT, 0);
}

/* Starts the attempts that are due and arms the timer for the next one. */
static void schedule(struct runner *r)
{
	if (r->stopping)
		return;
	int64_t now = now_s();
	/* An attempt that ends at once puts its message back with a later
	 * time; the bound only guards against a time that is not later. */
	for (size_t k = r->n_heap; k > 0 && r->n_heap > 0 && r->n_jobs < max_jobs(r); k--) {
		struct rmsg *m = r->heap[0];
		if (m->next_try > now)
			break;
		job_start(r, m, -1);
	}
	int64_t next = r->n_heap ? r->heap[0]->next_try : INT64_MAX;
	if (next >= INT64_MAX / 2)
		return;
	int64_t wait = next - now;
	if (wait < 1)
		wait = 1; /* due but over the job limit: a job ending reschedules */
	struct timeval tv = { (time_t)wait, 0 };
	evtimer_add(r->ev_timer, &tv);
}

/* ---- wake-ups from the workers and the control socket ----------------- */

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	for (int k = 0; k < 256; k++) {
		char b[64];
		ssize_t n = recv(fd, b, sizeof(b) - 1, MSG_DONTWAIT);
		if (n <= 0)
			break;
		b[n] = 0;
		if (!queue_id_valid(b)) {
			/* Only our workers can write here: a bad datagram is a bug. */
			log_event(LOG_LVL_ERR, "notify_invalid", "len=%zd", n);
			continue;
		}
		msg_add(r, b, r->c->queue_only ? INT64_MAX : 0);
	}
	schedule(r);
}

static void ctl_request(struct runner *r, int fd, unsigned uid, char *b);

/* A control connection accepted, its request not read yet. */
struct ctl_wait {
	struct runner *r;
	unsigned uid;
};

/* The request, or the end of the wait for it: the event loop never
 * blocks on a control client, however slow. */
static void ctl_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_wait w = *(struct ctl_wait *)arg;
	free(arg);
	char b[RUNNER_CTL_MAX + 1];
	ssize_t n = (what & EV_READ) ? recv(fd, b, RUNNER_CTL_MAX, MSG_DONTWAIT) : -1;
	if (n <= 0) {
		close(fd);
		return;
	}
	b[n] = 0;
	ctl_request(w.r, fd, w.uid, b);
}

static void ctl_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct runner *r = arg;
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		ctl_answer(fd, "error: permission denied");
		return;
	}
	/* The caller sends its request at once; 2 s bound one that does not. */
	struct ctl_wait *w = xcalloc(1, sizeof(*w));
	w->r = r;
	w->uid = (unsigned)cred.uid;
	struct timeval tv = { 2, 0 };
	if (event_base_once(r->base, fd, EV_READ, ctl_read_cb, w, &tv) < 0) {
		free(w);
		close(fd);
	}
}

static void ctl_request(struct runner *r, int fd, unsigned uid, char *b)
{
	char *sp = strchr(b, ' ');
	const char *id = sp ? sp + 1 : "";
	if (sp)
		*sp = 0;
	log_event(LOG_LVL_INFO, "control", "command=%s id=%s uid=%u", b,
		  queue_id_valid(id) ? id : "-", uid);
	if (strcmp(b, "n") == 0 && queue_id_valid(id)) {
		/* A message queued outside the workers (-bs). */
		msg_add(r, id, r->c->queue_only ? INT64_MAX : 0);
		ctl_answer(fd, "ok");
		schedule(r);
		return;
	}
	if (strcmp(b, "q") == 0) {
		/* Everything waiting is due now: the heap order is then any. */
		size_t k = r->n_heap;
		for (size_t i = 0; i < r->n_heap; i++)
			r->heap[i]->next_try = 0;
		char a[64];
		snprintf(a, sizeof(a), "queue run started: %zu messages", k);
		ctl_answer(fd, a);
		schedule(r);
		return;
	}
	if (!queue_id_valid(id)) {
		ctl_answer(fd, "error: invalid message id");
		return;
	}
	struct rmsg *m = msg_find(r, id);
	if (!m) {
		ctl_answer(fd, "error: no such message");
		return;
	}
	if (m->busy) {
		ctl_answer(fd, "error: message is being delivered, try again");
		return;
	}
	if (r->stopping) {
		ctl_answer(fd, "error: the queue runner is stopping");
		return;
	}
	struct err e = { "" };
	if (strcmp(b, "M") == 0) {
		job_start(r, m, fd);
	} else if (strcmp(b, "Mrm") == 0) {
		if (spool_remove(r->sp, id, true, &e) < 0) {
			ctl_answer(fd, "error: cannot remove");
			return;
		}
		log_event(LOG_LVL_INFO, "removed", "id=%s by=admin", id);
		msg_drop(r, m);
		char a[80];
		snprintf(a, sizeof(a), "removed %s", id);
		ctl_answer(fd, a);
	} else if (strcmp(b, "Mg") == 0) {
		struct spool_env env;
		struct spool_state st;
		memset(&env, 0, sizeof(env));
		if (spool_read_env(r->sp, id, &env, &e) < 0 ||
		    spool_state_read(r->sp, id, env.n_rcpts, &st, &e) < 0) {
			spool_env_free(&env);
			ctl_answer(fd, "error: message unreadable");
			return;
		}
		st.giveup = true;
		int rc = spool_state_write(r->sp, id, &st, &e);
		spool_state_free(&st);
		spool_env_free(&env);
		if (rc < 0) {
			ctl_answer(fd, "error: cannot write the state");
			return;
		}
		job_start(r, m, fd);
	} else {
		ctl_answer(fd, "error: unknown command");
	}
	schedule(r);
}

static void term_cb(evutil_socket_t fd, short what, void *arg);

static void dns_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	dns_process(r->dns);
	if (dns_failed(r->dns)) {
		/* The resolver process is gone: start over (the master restarts
		 * us); the lookups in flight were failed as temporary. */
		log_event(LOG_LVL_ERR, "runner_dns_lost", "msg=\"resolver process gone, restarting\"");
		event_del(r->ev_dns);
		term_cb(-1, 0, r);
		return;
	}
	schedule(r);
}

static void stop_now_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	log_event(LOG_LVL_WARN, "runner_stop", "msg=\"deliveries still running are cut\" jobs=%zu",
		  r->n_jobs);
	event_base_loopbreak(r->base);
}

static void term_cb(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	if (r->stopping)
		return;
	r->stopping = true;
	evtimer_del(r->ev_timer);
	/* What has not started yet is deferred now (a transaction not on a
	 * connection, a Maildir request not sent), so that the attempts in
	 * flight are all that is waited for. */
	for (struct dest *d = r->dests; d; d = d->next)
		dest_fail_waiting(d, 451, "4.3.2", "queue runner stopping");
	if (r->lq_head) {
		struct lreq *keep = r->md_busy ? r->lq_head : NULL;
		if (keep) {
			struct lreq *rest = keep->next;
			keep->next = NULL;
			r->lq_head = rest;
		}
		md_fail_all(r, "queue runner stopping");
		if (keep)
			r->lq_head = r->lq_tail = keep;
	}
	if (r->n_jobs == 0) {
		event_base_loopbreak(r->base);
		return;
	}
	/* Attempts in progress may finish; at-least-once covers any cut. */
	struct timeval tv = { (time_t)r->c->shutdown_timeout, 0 };
	evtimer_add(r->ev_stop, &tv);
}

static void check_stopped(evutil_socket_t fd, short what, void *arg)
{
	struct runner *r = arg;
	if (r->stopping && r->n_jobs == 0)
		event_base_loopbreak(r->base);
}

/* ---- entry ------------------------------------------------------------ */

/* libunbound's resolver process ends with exit(): it must not run our
 * exit handlers (leak reports of memory it merely inherited, buffers it
 * does not own). */
static bool in_resolver_child;
static int resolver_close_fds[3] = { -1, -1, -1 };
static void resolver_exit(void)
{
	if (in_resolver_child)
		_exit(0);
}
/* The resolver process needs none of our sockets: holding the control
 * socket would keep its name taken after the runner is gone.  And it must
 * not outlive the runner. */
static void resolver_child(void)
{
	in_resolver_child = true;
	for (size_t i = 0; i < 3; i++)
		if (resolver_close_fds[i] >= 0)
			close(resolver_close_fds[i]);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	atexit(resolver_exit);
}

static void opts_init(struct runner *r)
{
	const struct conf *c = r->c;
	struct smtpc_opts base = {
		.lmtp = false, .helo = c->primary_hostname, .tls = SMTPC_TLS_MAY,
		.reply_line_max = 4096, .reply_lines_max = 100,
	};
	r->mx_plain_opts = base;
	r->mx_plain_opts.tls = SMTPC_TLS_NO;
	r->mx_opts = base;
	if (strcmp(c->remote_tls, "none") == 0)
		r->mx_opts.tls = SMTPC_TLS_NO;
	else if (strcmp(c->remote_tls, "verify") == 0)
		r->mx_opts.tls = SMTPC_TLS_MUST;
	r->sh_opts = base;
	if (strcmp(c->smarthost_tls, "none") == 0)
		r->sh_opts.tls = SMTPC_TLS_NO;
	else if (strcmp(c->smarthost_tls, "may") == 0)
		r->sh_opts.tls = SMTPC_TLS_MAY;
	else if (strcmp(c->smarthost_tls, "on_connect") == 0)
		r->sh_opts.tls_active = true, r->sh_opts.tls = SMTPC_TLS_NO;
	else
		r->sh_opts.tls = SMTPC_TLS_MUST;
	if (c->smarthost_user && *c->smarthost_user) {
		r->sh_opts.auth_user = c->smarthost_user;
		r->sh_opts.auth_pass = c->smarthost_password ? c->smarthost_password : "";
	}
	r->lmtp_opts = base;
	r->lmtp_opts.lmtp = true;
	r->lmtp_opts.tls = SMTPC_TLS_NO;
}

int runner_main(const struct runner_args *a)
{
	struct runner rr, *r = &rr;
	memset(r, 0, sizeof(*r));
	r->c = a->conf;
	r->notify_fd = a->notify_fd;
	r->ctl_fd = a->ctl_fd;
	r->md_fd = a->mdeliver_fd;
	r->md_chroot = a->drop_privileges && mdeliver_root_len(a->conf->maildir_path) > 0;
	log_set_process("runner");
	struct err e = { "" };
	const struct conf *c = r->c;

	/* Everything that needs files outside the spool is opened first. */
	if (spool_open(c->spool_directory, &r->sp, &e) < 0) {
		log_event(LOG_LVL_ERR, "runner_failed", "error=\"spool: %s\"", e.msg);
		return 1;
	}
	struct dns_conf dc = { c->dns_resolv_conf, c->dns_unbound_config };
	if (dns_new(&dc, &r->dns, &e) < 0) {
		log_event(LOG_LVL_ERR, "runner_failed", "error=\"dns: %s\"", e.msg);
		return 1;
	}
	if (tls_client_ctx_new(strcmp(c->remote_tls, "verify") == 0, c->tls_verify_certificates,
			       &r->tls_mx, &e) < 0 ||
	    tls_client_ctx_new(strcmp(c->smarthost_tls, "starttls") == 0 ||
				       strcmp(c->smarthost_tls, "on_connect") == 0,
			       c->tls_verify_certificates, &r->tls_smarthost, &e) < 0) {
		log_event(LOG_LVL_ERR, "runner_failed", "error=\"tls: %s\"", e.msg);
		return 1;
	}
	if (a->drop_privileges &&
	    (setgroups(0, NULL) < 0 || setgid(a->gid) < 0 || setuid(a->uid) < 0)) {
		log_event(LOG_LVL_ERR, "privileges", "error=\"runner: %s\"", strerror(errno));
		return 1;
	}
	if (a->drop_privileges && setuid(0) == 0) {
		log_event(LOG_LVL_ERR, "privileges", "error=\"runner: root could be regained\"");
		return 1;
	}
	/* The uid change cleared it: stop with the master. */
	pid_t master = getppid();
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != master)
		return 1;
	/* libunbound forks its resolver process at the first query; now, with
	 * our privileges gone. */
	signal(SIGPIPE, SIG_IGN);
	resolver_close_fds[0] = r->ctl_fd;
	resolver_close_fds[1] = r->notify_fd;
	resolver_close_fds[2] = r->md_fd;
	pthread_atfork(NULL, NULL, resolver_child);
	if (dns_start(r->dns, &e) < 0) {
		log_event(LOG_LVL_ERR, "runner_failed", "error=\"dns: %s\"", e.msg);
		return 1;
	}
	/* The directory (aliases) is read as the unprivileged user, like the
	 * auth process does. */
	if (auth_backend_from_conf(c, &r->backend, &e) < 0) {
		log_event(LOG_LVL_WARN, "runner_backend", "error=\"%s\"", e.msg);
		r->backend = NULL;
	}
	r->dir = auth_dir_new(c, r->backend, RUNNER_READ_MAX);
	opts_init(r);

	r->base = event_base_new();
	if (!r->base)
		return 1;
	r->ev_notify = event_new(r->base, r->notify_fd, EV_READ | EV_PERSIST, notify_cb, r);
	event_add(r->ev_notify, NULL);
	if (r->ctl_fd >= 0) {
		r->ev_ctl = event_new(r->base, r->ctl_fd, EV_READ | EV_PERSIST, ctl_cb, r);
		event_add(r->ev_ctl, NULL);
	}
	r->ev_dns = event_new(r->base, dns_fd(r->dns), EV_READ | EV_PERSIST, dns_cb, r);
	event_add(r->ev_dns, NULL);
	if (r->md_fd >= 0) {
		r->ev_md = event_new(r->base, r->md_fd, EV_READ | EV_PERSIST, md_read_cb, r);
		event_add(r->ev_md, NULL);
	}
	r->ev_timer = evtimer_new(r->base, timer_cb, r);
	r->ev_md_timer = evtimer_new(r->base, md_timeout_cb, r);
	r->ev_kick = event_new(r->base, -1, 0, timer_cb, r);
	r->ev_stop = evtimer_new(r->base, stop_now_cb, r);
	r->ev_term = evsignal_new(r->base, SIGTERM, term_cb, r);
	event_add(r->ev_term, NULL);
	struct event *ev_check = event_new(r->base, -1, EV_PERSIST, check_stopped, r);
	struct timeval sec = { 0, 200000 };
	event_add(ev_check, &sec);

	if (spool_foreach(r->sp, scan_one, r, &e) < 0)
		log_event(LOG_LVL_ERR, "queue_scan_failed", "error=\"%s\"", e.msg);
	log_event(LOG_LVL_INFO, "runner_started", "queued=%zu", r->n_msgs);
	schedule(r);
	event_base_dispatch(r->base);

	/* Cut what is left; the state on disk is what the next start uses. */
	for (struct dest *d = r->dests; d; d = d->next)
		for (struct rconn *rc = d->conns; rc; rc = rc->next)
			net_smtp_abort(rc->c);
	event_free(ev_check);
	dns_free(r->dns);
	log_event(LOG_LVL_INFO, "runner_exit", "jobs=%zu", r->n_jobs);
	return 0;
}

/* ---- control socket, both sides --------------------------------------- */

void runner_ctl_name(const struct conf *c, struct sockaddr_un *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* Abstract: reachable from anywhere in the network namespace, checked
	 * with SO_PEERCRED.  Long spool paths are cut: the name only has to
	 * differ between the spools of one machine. */
	int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "sluice-runner:%s",
			 c->spool_directory);
	if (n < 0 || (size_t)n >= sizeof(sa->sun_path) - 1)
		n = (int)sizeof(sa->sun_path) - 2;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int runner_ctl_listen(const struct conf *c, struct err *e)
{
	struct sockaddr_un sa;
	socklen_t len;
	runner_ctl_name(c, &sa, &len);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set(e, "control socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 16) < 0) {
		err_set(e, "control socket: %s (is another daemon using %s?)", strerror(errno),
			c->spool_directory);
		close(fd);
		return -1;
	}
	return fd;
}

void runner_ctl_notify(const struct conf *c, const char *id)
{
	struct sockaddr_un sa;
	socklen_t len;
	runner_ctl_name(c, &sa, &len);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (struct sockaddr *)&sa, len) == 0) {
		char b[64];
		int n = snprintf(b, sizeof(b), "n %s", id);
		(void)!send(fd, b, (size_t)n, MSG_NOSIGNAL);
		struct timeval tv = { 2, 0 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		(void)!recv(fd, b, sizeof(b), 0);
	}
	close(fd);
}

int runner_ctl_command(const struct conf *c, const char *cmd, const char *id)
{
	/* The runner takes commands from root and its own user, who owns the
	 * spool: tell anyone else at once, with sendmail's EX_NOPERM (a
	 * refusal raced with the request could read as "no answer", 75,
	 * which scripts retry). */
	struct stat sst;
	if (geteuid() != 0 && stat(c->spool_directory, &sst) == 0 && sst.st_uid != geteuid()) {
		fprintf(stderr, "sluice: permission denied: only root and the owner of %s may "
			"control the queue\n", c->spool_directory);
		return 77;
	}
	struct sockaddr_un sa;
	socklen_t len;
	runner_ctl_name(c, &sa, &len);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) < 0) {
		fprintf(stderr, "sluice: the daemon is not running (spool %s): %s\n",
			c->spool_directory, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 69; /* EX_UNAVAILABLE */
	}
	struct buf b;
	buf_init(&b, RUNNER_CTL_MAX);
	if (buf_printf(&b, "%s%s%s", cmd, id ? " " : "", id ? id : "") < 0) {
		close(fd);
		buf_free(&b);
		fprintf(stderr, "sluice: request too long\n");
		return 64;
	}
	(void)!send(fd, buf_ptr(&b), buf_len(&b), MSG_NOSIGNAL);
	buf_free(&b);
	/* -M waits for the attempt; a delivery may take a while. */
	struct timeval tv = { (time_t)c->remote_command_timeout * 4 +
				      (time_t)c->remote_data_done_timeout + 60, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char ans[1024];
	ssize_t n = recv(fd, ans, sizeof(ans) - 1, 0);
	close(fd);
	if (n <= 0) {
		fprintf(stderr, "sluice: no answer from the daemon\n");
		return 75;
	}
	ans[n] = 0;
	bool err = strncmp(ans, "error", 5) == 0;
	fprintf(err ? stderr : stdout, "%s%s\n", err ? "sluice: " : "", ans);
	if (err && strstr(ans, "permission denied"))
		return 77; /* EX_NOPERM */
	return err ? 1 : 0;
}
