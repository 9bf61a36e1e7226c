/*
 * policy — declarative ACLs per listener and SMTP stage, and the rate
 * table they count in.  Pure: no clock (times are inputs), no globals,
 * no I/O; the rate table is an object the caller owns and passes in.
 *
 * An ACL is a named list of rules, one per configuration line:
 *
 *   VERB [message = "text"] CONDITION...
 *
 * VERB is accept, deny, defer or warn.  All conditions of a rule must
 * hold; a rule without conditions always holds.  The first accept, deny
 * or defer rule that holds ends the evaluation; warn rules that hold are
 * reported and evaluation goes on.  No rule holding means accept.  ACLs
 * only add restrictions: built-in checks (relay, TLS and AUTH
 * requirements) run before them.
 *
 * Conditions (each may be preceded by '!' to negate it):
 *   authenticated [= LIST]      tls
 *   tls_version OP TLSv1.x      client = LIST (addresses or CIDR prefixes)
 *   sender_domain = LIST        recipient_domain = LIST
 *   recipient_local             size OP N[K|M|G]
 *   header = NAME               rate > N / TIME per client|user|sender
 * OP is one of = < <= > >=.  A value with blanks or '"' is written in
 * double quotes (\" and \\ escape inside).  LIST is an Exim list
 * (util.h list_foreach).
 */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/util.h"

enum acl_stage { ACL_CONNECT, ACL_HELO, ACL_MAIL, ACL_RCPT, ACL_DATA, ACL_NSTAGES };

/* "connect", "helo", "mail", "rcpt", "data". */
const char *acl_stage_name(enum acl_stage s);

struct acl; /* opaque: a name and its rules */

/* A new empty ACL (no rules: accepts everything).  line: where it was
 * defined, kept for messages (0 if none).  Aborts on ENOMEM. */
struct acl *acl_new(const char *name, int line);
void acl_free(struct acl *a);
const char *acl_name(const struct acl *a);
int acl_line(const struct acl *a);
size_t acl_n_rules(const struct acl *a);

/*
 * Parses one rule line (line[0..n), not NUL-terminated, no line break)
 * and appends it to a.  lineno is kept for messages and results.  On
 * error returns -1, appends nothing, and e says what is wrong and what
 * form was expected (without file or line: the caller adds them).
 */
int acl_parse_line(struct acl *a, const char *line, size_t n, int lineno, struct err *e);

/* Bit set of the stages at which every condition of a is meaningful. */
unsigned acl_stages(const struct acl *a);
/* 0 if a can be used at stage s; otherwise -1 and e names the first
 * condition that cannot, its line, and the stages where it can. */
int acl_check_stage(const struct acl *a, enum acl_stage s, struct err *e);

/* Appends rule i (0-based) of a in configuration syntax; parsing the
 * output gives the same rule. */
void acl_format_rule(struct buf *out, const struct acl *a, size_t i);
/* Line number given to acl_parse_line for rule i. */
int acl_rule_line(const struct acl *a, size_t i);

/* ---- evaluation ------------------------------------------------------ */

struct rate_table;

/* What the evaluator knows of the session.  Pointers are borrowed for
 * the call; NULL means "not known at this stage". */
struct acl_ctx {
	enum acl_stage stage;
	int client_family;          /* AF_INET, AF_INET6, or 0 (no network client) */
	uint8_t client_addr[16];    /* network order; 4 bytes used for AF_INET */
	const char *auth_user;      /* NULL: not authenticated */
	int tls_version;            /* 0: no TLS; else 0x0301 (TLSv1) .. 0x0304 (TLSv1.3) */
	const char *helo;
	const char *sender;         /* envelope sender, "" for the null sender */
	const char *recipient;      /* rcpt stage: the recipient being checked */
	int recipient_local;        /* -1 unknown, 0 no, 1 yes */
	uint64_t size;              /* mail: declared SIZE (0 if none); data: actual size */
	bool (*has_header)(void *arg, const char *name);  /* data stage */
	void *hdr_arg;
	char *const *local_domains; /* lowercased, no trailing dot ("@local") */
	size_t n_local_domains;
	struct rate_table *rates;   /* NULL: rate conditions never hold */
	int64_t now_s;              /* seconds, any epoch that only moves forward */
};

enum acl_verdict { ACL_ACCEPT, ACL_DENY, ACL_DEFER };

struct acl_result {
	enum acl_verdict verdict;
	/* Reply to send for DENY/DEFER ("550 5.7.1 ..." without CRLF), owned
	 * by the ACL; NULL for ACCEPT. */
	const char *reply;
	int rule_line;              /* line of the deciding rule; 0: end of ACL */
};

/* Called for each warn rule that holds; msg is the rule's message or a
 * default text, owned by the ACL. */
typedef void (*acl_warn_fn)(void *arg, const struct acl *a, int line, const char *msg);

/* Evaluates a (NULL = accept) for ctx.  Counts in ctx->rates for the
 * rate conditions it reaches (conditions are evaluated left to right and
 * stop at the first that fails).  warn may be NULL. */
void acl_eval(const struct acl *a, const struct acl_ctx *ctx, struct acl_result *res,
	      acl_warn_fn warn, void *warn_arg);

/* ---- rate table ------------------------------------------------------ */

/*
 * Counts events per key in a sliding window, in bounded memory: at most
 * max_entries keys; when full, the key hit least recently is forgotten.
 * seed varies the hash so that clients cannot choose colliding keys; pass
 * random bytes.  Aborts on ENOMEM.
 */
struct rate_table *rate_new(size_t max_entries, uint64_t seed);
void rate_free(struct rate_table *t);
/*
 * Records one event for key[0..n) at now_s and returns the number of
 * events in the last window_s seconds, this one included.  The count is
 * a sliding-window estimate: the events of the current fixed window plus
 * those of the previous one weighted by how much of it the sliding
 * window still covers.  A key whose window_s differs from its last call
 * starts over.
 */
uint64_t rate_hit(struct rate_table *t, const void *key, size_t n, uint64_t window_s,
		  int64_t now_s);
size_t rate_count(const struct rate_table *t); /* keys held */

#endif
