/*
 * The spool's file-system thread.
 *
 * A sync waits for the disk: in a single-threaded worker every session
 * would stand still meanwhile, including those that are only sending
 * commands.  This thread runs the group commits, one batch at a time;
 * sessions that reach end-of-data while a batch is on its way form the
 * next batch, so batches grow with the load instead of the wait.
 *
 * The event loop and the thread share only this struct, under mu; the
 * messages of a batch belong to the thread from submit to collect.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "spool_int.h"

struct spool_fst {
	struct spool *sp;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int efd;               /* eventfd: a batch is done */
	bool stop;
	/* The batch: submitted (job), done (done), collected (both false). */
	struct spool_msg **msgs;
	size_t n;
	bool *ok;
	enum spool_fail *why;  /* may be NULL */
	bool job, done;
	size_t committed;
	struct err err;
};

static void *fst_main(void *arg)
{
	struct spool_fst *t = arg;
	pthread_mutex_lock(&t->mu);
	for (;;) {
		if (t->job && !t->done) {
			struct spool_msg **msgs = t->msgs;
			size_t n = t->n;
			bool *ok = t->ok;
			enum spool_fail *why = t->why;
			pthread_mutex_unlock(&t->mu);
			struct err e = { "" };
			size_t c = spool_commit_batch(t->sp, msgs, n, ok, why, &e);
			pthread_mutex_lock(&t->mu);
			t->committed = c;
			t->err = e;
			t->done = true;
			pthread_cond_broadcast(&t->cv);
			uint64_t one = 1;
			(void)!write(t->efd, &one, sizeof(one));
			continue;
		}
		if (t->stop)
			break;
		pthread_cond_wait(&t->cv, &t->mu);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

int spool_thread_start(struct spool *sp, struct err *e)
{
	if (sp->fst)
		return 0;
	struct spool_fst *t = xcalloc(1, sizeof(*t));
	t->sp = sp;
	t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (t->efd < 0) {
		free(t);
		return err_set(e, "spool thread: eventfd: %s", strerror(errno));
	}
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	/* Signals stay with the event loop's thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&t->th, NULL, fst_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		close(t->efd);
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mu);
		free(t);
		return err_set(e, "spool thread: %s", strerror(r));
	}
	sp->fst = t;
	return 0;
}

void spool_thread_stop(struct spool *sp)
{
	struct spool_fst *t = sp->fst;
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->th, NULL);
	close(t->efd);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t);
	sp->fst = NULL;
}

int spool_commit_fd(const struct spool *sp)
{
	return sp->fst ? sp->fst->efd : -1;
}

bool spool_commit_submit(struct spool *sp, struct spool_msg **msgs, size_t n, bool *ok,
			 enum spool_fail *why)
{
	struct spool_fst *t = sp->fst;
	if (!t)
		return false;
	pthread_mutex_lock(&t->mu);
	bool taken = !t->job;
	if (taken) {
		t->msgs = msgs;
		t->n = n;
		t->ok = ok;
		t->why = why;
		t->job = true;
		t->done = false;
		pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&t->mu);
	return taken;
}

bool spool_commit_collect(struct spool *sp, size_t *committed, struct err *e)
{
	struct spool_fst *t = sp->fst;
	if (!t)
		return false;
	uint64_t v;
	(void)!read(t->efd, &v, sizeof(v));
	pthread_mutex_lock(&t->mu);
	bool done = t->job && t->done;
	if (done) {
		*committed = t->committed;
		*e = t->err;
		t->job = t->done = false;
		t->msgs = NULL;
		t->ok = NULL;
		t->why = NULL;
	}
	pthread_mutex_unlock(&t->mu);
	return done;
}

void spool_commit_wait(struct spool *sp)
{
	struct spool_fst *t = sp->fst;
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	while (t->job && !t->done)
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);
}
