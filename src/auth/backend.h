/*
 * auth/backend — private to the auth process: credential backends
 * (passwd-file, SQLite, Dovecot) behind one interface, and the directory
 * (aliases, virtual aliases, sender grants) built on top of them.
 *
 * Every lookup has three outcomes: found, not found, or unavailable (the
 * store cannot be read now: the caller answers tempfail, 454/451, and
 * never treats it as "not found").  Backends re-read their store when it
 * changes, so lookups may block for a file read or a socket round trip;
 * they only ever run inside the auth process.
 */
#ifndef SLUICE_AUTH_BACKEND_H
#define SLUICE_AUTH_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "auth.h"

struct conf;

/* Largest passwd, aliases, virtual or senders file read (bytes). */
#define AUTH_FILE_MAX (64u * 1024 * 1024)
/* Longest user name or address considered (longer: not found). */
#define AUTH_NAME_MAX 320
/* Longest stored password field taken from a store. */
#define AUTH_STORED_MAX 4096

enum auth_lookup { AUTH_LOOKUP_FOUND = 0, AUTH_LOOKUP_NOTFOUND, AUTH_LOOKUP_UNAVAILABLE };

/* Called per value of a multi-valued lookup (aliases, sender grants);
 * the string is valid during the call only; returning -1 stops. */
typedef int (*auth_value_fn)(const char *value, void *arg);

struct event_base;
typedef void (*auth_verify_done_fn)(enum auth_result r, const char *canon, const char *reason,
				    void *arg);

struct auth_backend {
	const char *name; /* "passwd-file", "sqlite", "dovecot" */
	/* false when the store cannot say whether a user exists (Dovecot's
	 * auth-client socket): the directory then treats every address of a
	 * local domain as a user. */
	bool can_list_users;
	/*
	 * user -> "{SCHEME}hash" (appended to stored) and the canonical name
	 * (appended to canon), both NUL-terminated with buf_cstr.  User names
	 * compare case-insensitively.  NULL for a backend without stored
	 * passwords (Dovecot): SCRAM is then unavailable.
	 */
	enum auth_lookup (*lookup)(struct auth_backend *b, const char *user, struct buf *stored,
				   struct buf *canon, struct err *e);
	/*
	 * For a backend that checks passwords itself (Dovecot); NULL
	 * otherwise (the auth process then uses lookup + auth_password_check).
	 * Asynchronous, because the remote side delays its failures (Dovecot's
	 * auth_failure_delay) and the auth process must keep answering other
	 * workers meanwhile: done is called exactly once, later, from the
	 * event loop of base (or before this returns, on an immediate error),
	 * with AUTH_OK and the canonical name, AUTH_FAIL or AUTH_TEMPFAIL and
	 * a reason for the log.
	 */
	void (*verify_plain)(struct auth_backend *b, struct event_base *base, const char *ip,
			     const char *user, const char *password, size_t n,
			     auth_verify_done_fn done, void *arg);
	/* Alias targets of an address held by the store itself (SQLite
	 * aliases table); NULL if the store holds none. */
	enum auth_lookup (*aliases)(struct auth_backend *b, const char *address, auth_value_fn fn,
				    void *arg, struct err *e);
	/* Sender patterns granted to a login (SQLite senders table). */
	enum auth_lookup (*senders)(struct auth_backend *b, const char *login, auth_value_fn fn,
				    void *arg, struct err *e);
	void (*free)(struct auth_backend *b);
};

/* Constructors: they do not touch the store (a store missing at start is
 * reported by the first lookup, as unavailable). */
struct auth_backend *auth_backend_passwd_new(const char *path, size_t max_file);
struct auth_backend *auth_backend_sqlite_new(const char *path);
/* connect_ms bounds the connection and handshake (done in place);
 * answer_ms the wait for each answer, which must exceed Dovecot's
 * auth_failure_delay (2 s by default). */
struct auth_backend *auth_backend_dovecot_new(const char *socket_path, unsigned connect_ms,
					      unsigned answer_ms);
/* From the configuration (auth_backend); NULL for "none". -1 if the
 * backend is unknown or its file/socket setting is missing. */
int auth_backend_from_conf(const struct conf *c, struct auth_backend **out, struct err *e);
void auth_backend_free(struct auth_backend *b);

/* CREATE TABLE statements of the SQLite store (for a command that makes
 * a database). */
const char *auth_sqlite_schema(void);

/* ---- files re-read when they change -------------------------------- */

struct auth_file {
	const char *path;
	bool loaded;      /* a version was read */
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t mtime_ns;
};
/*
 * Reads the file into out (reset first) if it changed since the last
 * read (device, inode, size or modification time): 1 read, 0 unchanged,
 * -1 missing, unreadable or larger than max (with e).
 */
int auth_file_refresh(struct auth_file *f, size_t max, struct buf *out, struct err *e);

/* ---- directory ------------------------------------------------------- */

struct auth_dir;

/*
 * c supplies local_domains, primary_hostname, aliases_file,
 * virtual_alias_file and submission_senders_file (NULL or "" = none);
 * b may be NULL (no user store).  Both must outlive the directory.
 */
struct auth_dir *auth_dir_new(const struct conf *c, struct auth_backend *b, size_t max_file);
void auth_dir_free(struct auth_dir *d);

/* Whether the domain (no trailing dot) is one of local_domains. */
bool auth_dir_is_local_domain(const struct auth_dir *d, const char *domain, size_t n);

/*
 * Is address (local@domain, or bare "postmaster") a local recipient:
 * FOUND = local, NOTFOUND = unknown, UNAVAILABLE = tempfail.
 */
enum auth_lookup auth_dir_rcpt(struct auth_dir *d, const char *address, struct err *e);

/*
 * May login (a canonical user name) use address as its envelope sender:
 * FOUND = yes, NOTFOUND = no, UNAVAILABLE = tempfail.
 */
enum auth_lookup auth_dir_sender(struct auth_dir *d, const char *login, const char *address,
				 struct err *e);

/*
 * Calls fn for every alias target of address (virtual aliases, aliases_file
 * for local domains, the store's aliases; catch-alls only when nothing
 * else matched), naming where each came from.  Returns how many, or -1 if
 * a source was unavailable.  One level, as at RCPT time (-bt).
 */
int auth_dir_expand(struct auth_dir *d, const char *address,
		    void (*fn)(const char *source, const char *target, void *arg), void *arg,
		    struct err *e);

/*
 * Looks a login up in the backend: the name as given, then, for
 * user@<local domain>, the bare local part (stores may hold either form).
 */
enum auth_lookup auth_dir_user(struct auth_dir *d, const char *user, struct buf *stored,
			       struct buf *canon, struct err *e);

#endif
