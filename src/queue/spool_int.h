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
	/* This process's own open file description of tmp/ for syncfs:
	 * syncfs reports a writeback error once per description (Linux
	 * 5.8+), so one shared with the other workers (inherited tmpfd)
	 * would tell the error to one of them and let another acknowledge
	 * messages that never reached the disk.  -1 = not opened yet. */
	int syncfd;
	pid_t sync_pid;         /* the process syncfd belongs to */
	struct spool_fst *fst;  /* the file-system thread, NULL when not started */
};

#endif
