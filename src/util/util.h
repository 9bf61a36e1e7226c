/*
 * util — growable bounded buffers, errors, logging, strings, lists,
 * files and time.  Knows nothing of mail.
 *
 * Ownership: a struct buf owns its bytes; views returned by buf_* are
 * borrowed and valid until the next call that modifies the buffer.
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define UTIL_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- errors ---------------------------------------------------------- */

/* A reason a caller can log.  Fixed size because it only ever holds text
 * we format ourselves (untrusted text is escaped and truncated first). */
struct err {
	char msg[512];
};

/* Formats the reason into e (if e is not NULL) and returns -1, so that
 * `return err_set(e, "...")` reads naturally. */
int err_set(struct err *e, const char *fmt, ...) UTIL_PRINTF(2, 3);

/* ---- buf: growable bytes with a hard maximum ------------------------- */

struct buf {
	uint8_t *data;
	size_t off; /* start of unconsumed bytes */
	size_t len; /* end of valid bytes (data[off..len) is the content) */
	size_t cap;
	size_t max; /* hard limit on content length; buf_append fails past it */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
/* Appends n bytes; -1 (nothing appended) if the content would exceed max
 * or memory runs out. */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) UTIL_PRINTF(2, 3);
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) UTIL_PRINTF(2, 0);
/* Reserves room for at least n more bytes and returns where to write them;
 * NULL if that would exceed max.  Call buf_commit with what was written. */
uint8_t *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);
static inline const uint8_t *buf_ptr(const struct buf *b)
{
	/* An empty, never-grown buffer has no storage: NULL + 0 is not valid C. */
	return b->data ? b->data + b->off : (const uint8_t *)"";
}
static inline size_t buf_len(const struct buf *b) { return b->len - b->off; }
/* Drops n bytes from the front (cheap: moves an offset). */
void buf_consume(struct buf *b, size_t n);
/* Moves the content to the start of the storage, invalidating views. */
void buf_compact(struct buf *b);
/* Empties the buffer but keeps its storage for reuse. */
void buf_reset(struct buf *b);
/* NUL-terminates the content (not counted in the length) and returns it;
 * NULL if out of memory. */
const char *buf_cstr(struct buf *b);

/* ---- strings --------------------------------------------------------- */

char *str_dup(const char *s);                 /* aborts on ENOMEM */
char *str_ndup(const void *p, size_t n);      /* aborts on ENOMEM */
void *xmalloc(size_t n);                      /* aborts on ENOMEM */
void *xcalloc(size_t n, size_t size);         /* aborts on ENOMEM */
void *xrealloc(void *p, size_t n);            /* aborts on ENOMEM */
bool str_eq_nocase(const char *a, size_t alen, const char *b); /* ASCII */
bool str_has_prefix_nocase(const char *s, size_t n, const char *prefix);
void str_lower(char *s); /* ASCII only */
/* Length of the well-formed UTF-8 sequence at p[0..n) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
size_t str_utf8_seq(const void *p, size_t n);
/* Any byte above 127 in p[0..n)? */
bool str_has_8bit(const void *p, size_t n);
/* p[0..n) is visible text: printable ASCII (%x21-7E) other than the bytes
 * of forbid (may be ""), or well-formed UTF-8 beyond ASCII. */
bool str_utf8_visible(const char *p, size_t n, const char *forbid);
/* Appends p[0..n) to out, escaping anything outside printable ASCII (space is kept),
 * backslash, quote and '=' as \xHH, cut at maxlen source bytes (with "...").
 * For client text in logs. */
void str_escape(struct buf *out, const void *p, size_t n, size_t maxlen);

/* ---- lists (Exim style) ---------------------------------------------- */

/*
 * Splits an Exim-style list: items separated by ':' by default; "::"
 * stands for a literal ':' inside an item (so IPv6 "::1" is written
 * "::::1"), or the list may begin with "<c" to choose another separator
 * character c (e.g. "<; ::1 ; 127.0.0.1").  Items are trimmed of spaces;
 * empty items are skipped.  Calls fn for each; stops and returns -1 if fn
 * does.  The item passed to fn is NUL-terminated and valid during the call.
 */
int list_foreach(const char *list, int (*fn)(const char *item, void *arg), void *arg);

/* ---- logging --------------------------------------------------------- */

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Where lines go: stderr (default), a file (appended), or syslog (mail). */
int log_to_file(const char *path, struct err *e);
void log_to_stderr(void);
void log_to_syslog(const char *ident);
void log_set_level(enum log_level lvl);
void log_set_process(const char *name); /* "proc=" field, e.g. master */

/*
 * One line per event: "ts=... lvl=... proc=... event=<event> <fields>".
 * Build the fields with log_kv/log_kv_esc between log_begin and log_end;
 * or use log_event for a line whose fields are all our own text.
 */
struct buf *log_begin(enum log_level lvl, const char *event);
void log_kv(struct buf *l, const char *key, const char *fmt, ...) UTIL_PRINTF(3, 4);
void log_kv_esc(struct buf *l, const char *key, const void *p, size_t n); /* untrusted */
void log_end(struct buf *l);
void log_event(enum log_level lvl, const char *event, const char *fmt, ...) UTIL_PRINTF(3, 4);

/* ---- files ----------------------------------------------------------- */

int fs_fsync_dir(int dirfd, struct err *e);
int fs_mkdir_p(const char *path, mode_t mode, struct err *e);
/* Writes data to path via a temporary file, fsync and rename. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, struct err *e);
/* Writes all n bytes (retrying short writes and EINTR). */
int fs_write_all(int fd, const void *p, size_t n);
/* Reads a whole (small) file into out, at most max bytes. */
int fs_read_file(const char *path, struct buf *out, struct err *e);

/* ---- numbers --------------------------------------------------------- */

/* Leading decimal digits at *sp (advanced past them); -1 if none or on
 * overflow. */
int num_parse_u64(const char **sp, uint64_t *out);
/* A whole string: a number with an optional K, M or G (powers of 1024). */
int num_parse_size(const char *s, uint64_t *out);
/* A whole string: plain seconds, or number+unit groups (s, m, h, d) such
 * as "1h30m".  With ms, the result is in milliseconds and "ms" is a unit
 * too (a plain number still means seconds). */
int num_parse_time(const char *s, bool ms, uint64_t *out);

/* ---- base64 (RFC 4648, strict) -------------------------------------- */

/* Appends the encoding of p[0..n) to out. */
int b64_encode(const void *p, size_t n, struct buf *out);
/* Decodes p[0..n) into out; -1 on any character outside the alphabet,
 * wrong padding, or non-canonical trailing bits. */
int b64_decode(const char *p, size_t n, struct buf *out);

/* ---- randomness ------------------------------------------------------ */

/* Fills p with n bytes from the kernel (getrandom); -1 on failure. */
int rand_bytes(void *p, size_t n);
/* Hash for tables whose keys come from clients: FNV-1a over a secret
 * seed (from rand_bytes) and the key, then a final mix so that the low
 * bits used for a bucket depend on every input bit.  Clients who do not
 * know the seed cannot choose keys that pile into one bucket. */
uint64_t rand_hash(uint64_t seed, const void *p, size_t n);

/* ---- time ------------------------------------------------------------ */

int64_t time_now_us(void);      /* wall clock, microseconds since the epoch */
int64_t time_mono_ms(void);     /* monotonic, milliseconds */
/* RFC 5322 date-time for `t`, e.g. "Sun, 29 Nov 2026 04:37:40 +0000". */
void time_rfc5322(struct buf *out, int64_t unix_seconds);

#endif
