/*
 * Internals shared by the spool writer (spool.c) and its file-system
 * thread (fsthread.c); not part of the queue module's interface.
 */
#ifndef SLUICE_SPOOL_INT_H
#define SLUICE_SPOOL_INT_H

#include "queue.h"

struct spool_fst;

struct spool {
	int dirfd;
	int tmpfd;
	int queuefd;
	int corruptfd;
	int statefd;
	bool group_sync;        /* a batch of 2+ messages: one syncfs, not one fdatasync each */
	struct spool_fst *fst;  /* the file-system thread, NULL when not started */
};

#endif
