/*
 * queue — the spool: message ids, the on-disk format, the writer (with
 * group commit), the reader, listing and crash recovery.
 *
 * Layout under spool_directory:
 *   tmp/      messages being received (from their first 64 KiB) or committed;
 *             never acknowledged; removed at start
 *   queue/    committed messages, one file each, named by queue id
 *   corrupt/  files found unreadable at start, set aside with a log line
 *   state/    delivery state of queued messages (see state.c below)
 * A file in queue/ got there by rename() after fsync of the file, and the
 * directory is fsync'd before any 250 is sent for it (durability rule).
 *
 * File format (text envelope, blank line, then the message as received,
 * with CRLF line ends and the Received header first):
 *   sluice-spool 1
 *   id <queue id>
 *   received <unix seconds>
 *   role mx|submission|local
 *   client <ip>
 *   helo <xtext>
 *   tls <version> <cipher>            (optional)
 *   auth <xtext>                       (optional)
 *   from <xtext sender, empty for <>>
 *   body 7bit|8bitmime                 (optional)
 *   content 7bit|8bit                  (optional, with body 8bitmime or smtputf8)
 *   smtputf8                           (optional)
 *   ret full|hdrs                      (optional)
 *   envid <xtext>                      (optional)
 *   size <declared SIZE>               (optional)
 *   rcpt <xtext addr> <notify bits> <xtext orcpt or ->   (one or more)
 *   <empty line>
 *   <message>
 * Values are RFC 3461 xtext so that any byte survives on one line.
 *
 * "content" says whether a message declared BODY=8BITMIME or SMTPUTF8
 * holds any byte above 127.  The writer puts "content 8bit" in the
 * envelope before the message arrives and turns it into "content 7bit" at
 * the commit when no such byte came; without the line the message counts
 * as 8-bit.  The reader folds it into body and smtputf8: see struct
 * spool_env.
 */
#ifndef SLUICE_QUEUE_H
#define SLUICE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "../util/util.h"

/*
 * Queue id: 11 base-32 chars of microseconds since the epoch (sortable by
 * time), '-', 5 chars of pid, '-', 2 chars of a per-process sequence:
 * e.g. "1kq3vb0d4a8-00c3f-00".  Alphabet 0-9a-v.  QUEUE_ID_LEN excludes NUL.
 */
#define QUEUE_ID_LEN 20
void queue_id_make(char out[QUEUE_ID_LEN + 1], int64_t now_us, long pid, unsigned seq);
bool queue_id_valid(const char *s);

struct spool_rcpt {
	char *addr;
	unsigned notify;
	char *orcpt; /* NULL if none */
};

/* The envelope as stored.  Strings owned by the struct when read back. */
struct spool_env {
	char id[QUEUE_ID_LEN + 1];
	int64_t received;       /* unix seconds */
	char *role;             /* "mx" / "submission" */
	char *client_ip;
	char *helo;
	char *tls_version;      /* NULL if none */
	char *tls_cipher;
	char *auth_user;        /* NULL if none */
	char *sender;           /* "" for null sender */
	/* 0 unspecified, 1 7bit, 2 8bitmime.  Read back, 2 means declared
	 * 8BITMIME and holding 8-bit bytes: a message declared 8BITMIME
	 * whose bytes are all ASCII reads as 1, so that it may go to a
	 * server without 8BITMIME (RFC 6152 3).  To the writer, 2 means
	 * declared; it records the content itself. */
	int body;
	/* Read back: declared SMTPUTF8 and needing it (a non-ASCII address
	 * or byte); to the writer, declared. */
	bool smtputf8;
	int ret;                /* 0 unspecified, 1 full, 2 hdrs */
	char *envid;            /* NULL if none */
	uint64_t size_declared; /* 0 if none */
	struct spool_rcpt *rcpts;
	size_t n_rcpts;
	/* Filled by the reader: */
	off_t data_offset;      /* where the message begins in the file */
	off_t data_size;        /* bytes of message */
};

void spool_env_free(struct spool_env *env);

struct spool;      /* an open spool directory */
struct spool_msg;  /* a message being written */

/* Opens (creating subdirectories if missing) the spool at dir. */
int spool_open(const char *dir, struct spool **out, struct err *e);
void spool_close(struct spool *sp);

/*
 * Crash recovery, run by the master before workers start: removes tmp/
 * leftovers, moves queue/ files that do not parse to corrupt/, and removes
 * state/ files whose message is gone and unfinished state writes, logging
 * each.  Never fails on content; fails only if the directories are unusable.
 * counts (optional): [0] removed from tmp, [1] set aside, [2] queued ok.
 */
int spool_recover(struct spool *sp, size_t counts[3], struct err *e);

/* Starts a message: allocates the id (env->id is filled in) and buffers the
 * envelope.  Its file tmp/<id> is created when the first 64 KiB block is
 * written, or by the commit: a small message costs the event loop no
 * file-system call at all. */
int spool_msg_begin(struct spool *sp, struct spool_env *env, int64_t now_us,
		    struct spool_msg **out, struct err *e);
const char *spool_msg_id(const struct spool_msg *m);
/* Appends message bytes (buffered; written in large blocks), noting
 * whether any is above 127 (see "content" above). */
int spool_msg_write(struct spool_msg *m, const void *p, size_t n, struct err *e);
/* Discards the message: closes and unlinks its tmp file, frees m. */
void spool_msg_abort(struct spool_msg *m);

/* Why a message could not be written or committed: a full file system
 * or quota (ENOSPC, EDQUOT: RFC 3463 X.3.1) or any other local error. */
enum spool_fail { SPOOL_FAIL_NONE = 0, SPOOL_FAIL_OTHER, SPOOL_FAIL_NOSPACE };
/* Why m's writes have failed so far; NONE while they have not. */
enum spool_fail spool_msg_failure(const struct spool_msg *m);
/*
 * Group commit: makes every message in msgs durable with shared directory
 * fsyncs — each file is flushed and fsync'd, renamed into queue/, then
 * queue/ is fsync'd once.  ok[i] tells each message's outcome; a message
 * is ok only once its own file and the directory entry are on disk.
 * why[i] (why may be NULL) says why a message failed, NONE when it is ok.
 * Frees every msgs[i].  Returns the number committed.
 */
size_t spool_commit_batch(struct spool *sp, struct spool_msg **msgs, size_t n, bool *ok,
			  enum spool_fail *why, struct err *e);
/* Bytes an unprivileged writer may still put on the spool's file system
 * (fstatvfs: one system call, no disk access), for RFC 1870 §6. */
int spool_free_space(const struct spool *sp, uint64_t *bytes, struct err *e);

/*
 * The file-system thread (fsthread.c), started by each worker: it runs the
 * group commits, so that the event loop keeps serving other sessions while
 * the disk syncs, and a batch fills while the previous one is on its way.
 * Without it (sendmail -bs, tests) everything runs in the caller.
 */
int spool_thread_start(struct spool *sp, struct err *e);
/* Finishes a batch in flight and stops the thread. */
void spool_thread_stop(struct spool *sp);
/* Readable when a submitted batch is done; -1 when no thread runs. */
int spool_commit_fd(const struct spool *sp);
/* Hands msgs[0..n) to the thread, which runs spool_commit_batch on them.
 * false, and nothing taken, while the previous batch is in flight.  msgs,
 * ok and why (may be NULL) must stay valid until collected. */
bool spool_commit_submit(struct spool *sp, struct spool_msg **msgs, size_t n, bool *ok,
			 enum spool_fail *why);
/* true once the submitted batch is done: ok[] is filled, the messages are
 * freed, *committed counts the durable ones and e has the first error. */
bool spool_commit_collect(struct spool *sp, size_t *committed, struct err *e);
/* Waits until a submitted batch is done (for shutdown). */
void spool_commit_wait(struct spool *sp);
/* Group commit with one syncfs per batch of two or more messages instead
 * of one fdatasync per message (spool_group_sync; off by default here). */
void spool_set_group_sync(struct spool *sp, bool on);
/* The descriptor this process gives syncfs: its own open file description
 * of tmp/, never one shared with another process (exposed for tests). */
int spool_process_sync_fd(struct spool *sp);
/* Counters for tests and benchmarks: fsync calls made by this process
 * (a syncfs counts as one). */
uint64_t spool_fsync_count(void);
/* fsync(2), counted by spool_fsync_count. */
int spool_fsync(int fd);

/*
 * Writes env as envelope text (through the blank line) to out; fails if a
 * field could not be read back (bad role, no recipients, token with spaces,
 * too long).  Used by the writer and to check the parser by round trip.
 */
int spool_format_env(const struct spool_env *env, struct buf *out, struct err *e);
/* The most bytes an envelope may take: a session stops taking recipients
 * before its envelope would not fit. */
size_t spool_env_max(void);
/* The writer's form: as spool_format_env, plus "content 8bit" when body
 * is 2; *mark_at gets the offset of that '8' from where the text starts
 * in out, or -1 when there is no such line. */
int spool_format_env_marked(const struct spool_env *env, struct buf *out, ssize_t *mark_at,
			    struct err *e);
/* The open queue/ directory, for reading relative to it (never by path). */
int spool_queue_dirfd(const struct spool *sp);

/* Reads the envelope of queued message id. */
int spool_read_env(struct spool *sp, const char *id, struct spool_env *out, struct err *e);
/* A decimal number of n bytes (digits only) up to max: the number syntax
 * of the envelope and state files. */
int spool_parse_number(const char *p, size_t n, uint64_t max, uint64_t *out);
/* Parses an envelope from a file's first bytes (for recovery and fuzzing). */
int spool_parse_env(const char *text, size_t n, struct spool_env *out, struct err *e);
/* Opens the queued file read-only, positioned at the message data. */
int spool_open_data(struct spool *sp, const char *id, int *fd_out, struct err *e);

/* Calls fn for every queued message id, in id (= time) order. */
int spool_foreach(struct spool *sp, int (*fn)(const char *id, void *arg), void *arg,
		  struct err *e);

/* -bp / mailq listing and -bpc count, written to f. */
int spool_print_list(struct spool *sp, FILE *f, struct err *e);
int spool_count(struct spool *sp, size_t *n, struct err *e);

/* ---- delivery state (state.c) ---------------------------------------- */

/*
 * What the queue runner knows about a queued message, kept beside it in
 * state/<id> (written to a temporary file, fsync'd, renamed, directory
 * fsync'd).  A message without a state file has never been tried.
 * Format:
 *   sluice-state 1
 *   attempts <n>
 *   next <unix seconds>
 *   warned 0|1
 *   giveup 0|1
 *   rcpt <index> pending|delivered|failed <xtext last reply or ->
 */
enum spool_rcpt_status { SPOOL_RCPT_PENDING = 0, SPOOL_RCPT_DELIVERED, SPOOL_RCPT_FAILED };

struct spool_rcpt_state {
	enum spool_rcpt_status status;
	char *last;           /* last reply or error text, NULL if none */
};

struct spool_state {
	unsigned attempts;    /* delivery attempts made */
	int64_t next_try;     /* unix seconds; 0 = as soon as possible */
	bool warned;          /* a delay warning was sent */
	bool giveup;          /* bounce the pending recipients now (-Mg) */
	struct spool_rcpt_state *rcpts; /* one per envelope recipient, same order */
	size_t n_rcpts;
};

void spool_state_init(struct spool_state *st, size_t n_rcpts);
void spool_state_free(struct spool_state *st);
int spool_state_format(const struct spool_state *st, struct buf *out, struct err *e);
/* Parses state text for a message of n_rcpts recipients; -1 if malformed. */
int spool_state_parse(const char *text, size_t n, size_t n_rcpts, struct spool_state *out,
		      struct err *e);
/* Reads state/<id>; a missing file gives a fresh state (never tried). */
int spool_state_read(struct spool *sp, const char *id, size_t n_rcpts, struct spool_state *out,
		     struct err *e);
/* Writes state/<id> durably (see above). */
int spool_state_write(struct spool *sp, const char *id, const struct spool_state *st,
		      struct err *e);
/* Removes a message that is done: queue/<id>, then state/<id>.  A missing
 * file is not an error.  durable syncs the directories: an administrator's
 * removal must stay removed.  After a delivery it is not needed: a removal
 * lost in a crash only means the message is delivered once more (delivery
 * is at least once), and the directory syncs per message were the largest
 * part of the queue runner's cost.  Either way a state file goes only
 * after queue/ is synced, so that a crash cannot leave the message without
 * its record of finished recipients. */
int spool_remove(struct spool *sp, const char *id, bool durable, struct err *e);
/* The open state/ directory, for reading relative to it (never by path). */
int spool_state_dirfd(const struct spool *sp);

#endif
