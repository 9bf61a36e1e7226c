/*
 * Replays a session transcript (*.in) through the state machine without a
 * socket and prints what the server did (the *.ref format).
 *
 * usage: golden_replay FILE.in            print the transcript to stdout
 *        golden_replay -w FILE.in         (re)write FILE.ref
 *
 * Input format, one directive per line ('#' starts a comment line):
 *   set KEY VALUE    policy, before the first event: role (mx|submission),
 *                    hostname, tls_available, tls_required, auth_required,
 *                    line_max, message_max, rcpt_max, errors_max,
 *                    data_line_max, header_max, auth_mechs (SASL_MECH_* bits),
 *                    check_rcpt_local, check_sender, check_from, add_missing_headers
 *                    (numbers, 0/1 for flags)
 *   C: TEXT          one feed: TEXT followed by CRLF
 *   R: BYTES         one feed: BYTES with escapes \r \n \t \\ \xHH, no CRLF added
 *   start | tls | commit ok ID | commit fail | timeout | eof | shutdown | resume
 *   auth ok USER | auth fail | auth tempfail | auth blocked
 *                    the auth process's answer to AUTH_REQUEST
 *   auth salt USER SALT ITERATIONS | auth sig USER
 *                    SCRAM answers: salt (text) and iterations, or a fixed
 *                    32-byte server signature
 *   lookup ok | lookup fail | lookup tempfail
 *                    the answer to LOOKUP
 * The SCRAM server nonce is always "SNONCE".
 *
 * Output: each event is echoed ("> ..."), followed by the server's reply
 * lines ("S: ...") and the actions ("A: ..."), body data escaped.
 *
 * Every transcript is also replayed with each feed split into single
 * bytes; the replies, the actions and the body bytes must be the same,
 * or the replay fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

#define MAX_DOMAINS 8

struct golden {
	struct smtp_policy pol;
	const char *domains[MAX_DOMAINS];
	char *hostname;
	struct acl *acls[ACL_NSTAGES]; /* "set acl_<stage> RULE" appends a rule */
	struct rate_table *rates;
};

/* Rate conditions see a clock that stands still: counts only grow. */
static int64_t golden_clock(void)
{
	return 1000;
}

struct record {
	struct buf text;  /* the transcript */
	struct buf out;   /* all server bytes */
	struct buf acts;  /* actions without body data */
	struct buf body;  /* all body bytes */
};

static void esc(struct buf *b, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		if (c == '\r')
			buf_puts(b, "\\r");
		else if (c == '\n')
			buf_puts(b, "\\n");
		else if (c == '\t')
			buf_puts(b, "\\t");
		else if (c == '\\')
			buf_puts(b, "\\\\");
		else if (c == '"')
			buf_puts(b, "\\\"");
		else if (c < 0x20 || c >= 0x7f)
			buf_printf(b, "\\x%02x", c);
		else
			buf_append(b, &c, 1);
	}
}

static int unesc(const char *s, struct buf *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; s[i]; i++) {
		uint8_t c = (uint8_t)s[i];
		if (c == '\\') {
			char n = s[++i];
			if (n == 'r') c = '\r';
			else if (n == 'n') c = '\n';
			else if (n == 't') c = '\t';
			else if (n == '\\') c = '\\';
			else if (n == 'x' && s[i + 1] && s[i + 2]) {
				const char *h1 = strchr(hex, s[i + 1] | 0x20);
				const char *h2 = strchr(hex, s[i + 2] | 0x20);
				if (!h1 || !h2)
					return -1;
				c = (uint8_t)((h1 - hex) * 16 + (h2 - hex));
				i += 2;
			} else
				return -1;
		}
		buf_append(out, &c, 1);
	}
	return 0;
}

static const char *act_name(enum smtp_action_type t)
{
	switch (t) {
	case SMTP_ACT_STARTTLS: return "STARTTLS";
	case SMTP_ACT_BODY_BEGIN: return "BODY_BEGIN";
	case SMTP_ACT_BODY_DATA: return "BODY_DATA";
	case SMTP_ACT_BODY_ABORT: return "BODY_ABORT";
	case SMTP_ACT_COMMIT: return "COMMIT";
	case SMTP_ACT_LOG_REFUSED: return "LOG_REFUSED";
	case SMTP_ACT_CLOSE: return "CLOSE";
	case SMTP_ACT_AUTH_REQUEST: return "AUTH_REQUEST";
	case SMTP_ACT_LOOKUP: return "LOOKUP";
	case SMTP_ACT_LOG_AUTH: return "LOG_AUTH";
	case SMTP_ACT_LOG_ACL: return "LOG_ACL";
	case SMTP_ACT_ADD_HEADERS: return "ADD_HEADERS";
	}
	return "?";
}

/* The fields of the authentication and submission actions.  A password
 * is shown by its length only. */
static void act_detail(struct buf *l, const struct smtp_action *a, size_t body_off)
{
	switch (a->type) {
	case SMTP_ACT_AUTH_REQUEST: {
		const struct sasl_request *q = a->sasl_req;
		if (!q) {
			buf_puts(l, " (none)");
			break;
		}
		static const char *const kinds[] = { "?", "plain", "scram-lookup", "scram-verify" };
		buf_printf(l, " %s user=\"", q->kind <= 3 ? kinds[q->kind] : "?");
		if (q->user)
			esc(l, (const uint8_t *)q->user, strlen(q->user));
		buf_puts(l, "\"");
		if (q->kind == SASL_REQ_PLAIN) {
			buf_puts(l, " authzid=\"");
			if (q->authzid)
				esc(l, (const uint8_t *)q->authzid, strlen(q->authzid));
			buf_printf(l, "\" password=<%zu bytes>", q->password_len);
		}
		if (q->kind == SASL_REQ_SCRAM_VERIFY) {
			buf_puts(l, " auth_message=\"");
			esc(l, (const uint8_t *)q->auth_message, q->auth_message_len);
			buf_printf(l, "\" proof=<%zu bytes>", q->proof_len);
		}
		break;
	}
	case SMTP_ACT_LOOKUP:
		buf_printf(l, " %s \"", a->lookup == SMTP_LOOKUP_SENDER ? "sender" : "rcpt");
		esc(l, a->data, a->len);
		buf_puts(l, "\"");
		if (a->user) {
			buf_puts(l, " user=\"");
			esc(l, (const uint8_t *)a->user, strlen(a->user));
			buf_puts(l, "\"");
		}
		break;
	case SMTP_ACT_LOG_AUTH:
		buf_puts(l, " ");
		esc(l, (const uint8_t *)a->reply, a->reply_len);
		buf_puts(l, " user=\"");
		esc(l, a->data, a->len);
		buf_puts(l, "\"");
		break;
	case SMTP_ACT_LOG_ACL:
		buf_puts(l, " \"");
		esc(l, (const uint8_t *)a->reply, a->reply_len);
		buf_puts(l, "\" \"");
		esc(l, a->data, a->len);
		buf_puts(l, "\"");
		break;
	case SMTP_ACT_ADD_HEADERS:
		buf_printf(l, "%s%s at=%zu", a->add_headers & SMTP_ADD_DATE ? " date" : "",
			   a->add_headers & SMTP_ADD_MESSAGE_ID ? " message-id" : "", body_off);
		break;
	default:
		break;
	}
}

/* Collects the reply lines and actions of the last event call. */
static void drain(struct smtp_session *s, struct record *r)
{
	const uint8_t *o;
	size_t n;
	smtp_session_output(s, &o, &n);
	buf_append(&r->out, o, n);
	size_t i = 0;
	while (i < n) {
		const uint8_t *e = memchr(o + i, '\n', n - i);
		size_t ll = e ? (size_t)(e - (o + i)) + 1 : n - i;
		size_t tl = ll;
		if (tl >= 2 && o[i + tl - 2] == '\r' && o[i + tl - 1] == '\n')
			tl -= 2;
		buf_puts(&r->text, "S: ");
		esc(&r->text, o + i, tl);
		buf_puts(&r->text, tl == ll ? " [no CRLF]\n" : "\n");
		i += ll;
	}
	smtp_session_output_done(s, n);
	bool in_data = false;
	const struct smtp_action *a;
	while ((a = smtp_session_next_action(s)) != NULL) {
		if (a->type == SMTP_ACT_BODY_DATA) {
			/* Views are merged: how the data was cut is not part of
			 * the transcript. */
			if (!in_data)
				buf_puts(&r->text, "A: BODY_DATA \"");
			in_data = true;
			esc(&r->text, a->data, a->len);
			buf_append(&r->body, a->data, a->len);
			continue;
		}
		if (in_data)
			buf_puts(&r->text, "\"\n");
		in_data = false;
		buf_printf(&r->text, "A: %s", act_name(a->type));
		buf_printf(&r->acts, "%s", act_name(a->type));
		if (a->type == SMTP_ACT_LOG_REFUSED) {
			struct buf l;
			buf_init(&l, 1 << 20);
			buf_puts(&l, " \"");
			esc(&l, a->data, a->len);
			buf_puts(&l, "\" \"");
			esc(&l, (const uint8_t *)a->reply, a->reply_len);
			buf_puts(&l, "\"");
			buf_append(&r->text, buf_ptr(&l), buf_len(&l));
			buf_append(&r->acts, buf_ptr(&l), buf_len(&l));
			buf_free(&l);
		}
		if (a->type == SMTP_ACT_AUTH_REQUEST || a->type == SMTP_ACT_LOOKUP ||
		    a->type == SMTP_ACT_LOG_AUTH || a->type == SMTP_ACT_ADD_HEADERS ||
		    a->type == SMTP_ACT_LOG_ACL) {
			struct buf l;
			buf_init(&l, 1 << 20);
			act_detail(&l, a, buf_len(&r->body));
			buf_append(&r->text, buf_ptr(&l), buf_len(&l));
			buf_append(&r->acts, buf_ptr(&l), buf_len(&l));
			buf_free(&l);
		}
		if (a->type == SMTP_ACT_COMMIT || a->type == SMTP_ACT_BODY_BEGIN) {
			const struct smtp_envelope *e = a->env;
			buf_printf(&r->text, " from=<%s> rcpts=%zu", e->sender ? e->sender : "",
				   e->n_rcpts);
			if (a->type == SMTP_ACT_COMMIT)
				buf_printf(&r->text, " size=%llu", (unsigned long long)e->size);
			if (e->n_rcpts < 1 || !e->sender) {
				fprintf(stderr, "replay: %s without an envelope\n", act_name(a->type));
				fwrite(buf_ptr(&r->text), 1, buf_len(&r->text), stderr);
				exit(2);
			}
		}
		buf_puts(&r->text, "\n");
		buf_puts(&r->acts, "\n");
	}
	if (in_data)
		buf_puts(&r->text, "\"\n");
}

static int set_policy(struct golden *g, const char *key, const char *val)
{
	struct smtp_policy *p = &g->pol;
	for (int st = 0; st < ACL_NSTAGES; st++) {
		char k[32];
		snprintf(k, sizeof(k), "acl_%s", acl_stage_name((enum acl_stage)st));
		if (strcmp(key, k) != 0)
			continue;
		if (!g->acls[st])
			g->acls[st] = acl_new(k, 0);
		struct err e = { "" };
		if (acl_parse_line(g->acls[st], val, strlen(val), 1, &e) < 0) {
			fprintf(stderr, "replay: %s: %s\n", key, e.msg);
			return -1;
		}
		if (!g->rates)
			g->rates = rate_new(1000, 42);
		p->acl[st] = g->acls[st];
		p->rates = g->rates;
		p->clock_s = golden_clock;
		return 0;
	}
	unsigned long long v = strtoull(val, NULL, 10);
	if (strcmp(key, "role") == 0)
		p->role = strcmp(val, "submission") == 0 ? SMTP_ROLE_SUBMISSION : SMTP_ROLE_MX;
	else if (strcmp(key, "hostname") == 0) {
		free(g->hostname);
		g->hostname = str_dup(val);
		p->hostname = g->hostname;
	} else if (strcmp(key, "tls_available") == 0)
		p->tls_available = v != 0;
	else if (strcmp(key, "tls_required") == 0)
		p->tls_required = v != 0;
	else if (strcmp(key, "auth_required") == 0)
		p->auth_required = v != 0;
	else if (strcmp(key, "line_max") == 0)
		p->line_max = (size_t)v;
	else if (strcmp(key, "message_max") == 0)
		p->message_max = v;
	else if (strcmp(key, "rcpt_max") == 0)
		p->rcpt_max = (size_t)v;
	else if (strcmp(key, "errors_max") == 0)
		p->errors_max = (size_t)v;
	else if (strcmp(key, "data_line_max") == 0)
		p->data_line_max = (size_t)v;
	else if (strcmp(key, "header_max") == 0)
		p->header_max = (size_t)v;
	else if (strcmp(key, "auth_mechs") == 0)
		p->auth_mechs = (unsigned)v;
	else if (strcmp(key, "check_rcpt_local") == 0)
		p->check_rcpt_local = v != 0;
	else if (strcmp(key, "check_sender") == 0)
		p->check_sender = v != 0;
	else if (strcmp(key, "check_from") == 0)
		p->check_from = v != 0;
	else if (strcmp(key, "add_missing_headers") == 0)
		p->add_missing_headers = v != 0;
	else
		return -1;
	return 0;
}

static void golden_defaults(struct golden *g)
{
	memset(g, 0, sizeof(*g));
	g->domains[0] = "test.example";
	g->domains[1] = "local.example";
	g->pol.role = SMTP_ROLE_MX;
	g->pol.hostname = "mx.test.example";
	g->pol.tls_available = true;
	g->pol.local_domains = g->domains;
	g->pol.n_local_domains = 2;
	g->pol.line_max = 512;
	g->pol.message_max = 10000;
	g->pol.rcpt_max = 5;
	g->pol.errors_max = 10;
	g->pol.data_line_max = 998;
	g->pol.header_max = 4096;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct buf b;
	buf_init(&b, 1 << 26);
	char tmp[4096];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(&b, tmp, n);
	fclose(f);
	char *s = str_ndup(buf_ptr(&b), buf_len(&b));
	buf_free(&b);
	return s;
}

static void golden_nonce(void *ctx, struct buf *out)
{
	buf_puts(out, "SNONCE");
}

/* "auth ..." directives: the auth process's answers. */
static int auth_directive(struct smtp_session *s, const char *arg)
{
	static const uint8_t sig[32] = { 0x5e, 0x12, 0x34, 0x56 };
	struct sasl_answer a = { .result = AUTH_OK };
	char user[128], salt[128];
	unsigned iter = 0;
	if (strncmp(arg, "ok ", 3) == 0) {
		a.user = arg + 3;
	} else if (strcmp(arg, "fail") == 0) {
		a.result = AUTH_FAIL;
	} else if (strcmp(arg, "tempfail") == 0) {
		a.result = AUTH_TEMPFAIL;
	} else if (strcmp(arg, "blocked") == 0) {
		a.result = AUTH_BLOCKED;
	} else if (sscanf(arg, "salt %127s %127s %u", user, salt, &iter) == 3) {
		a.user = user;
		a.salt = (const uint8_t *)salt;
		a.salt_len = strlen(salt);
		a.iterations = iter;
	} else if (sscanf(arg, "sig %127s", user) == 1) {
		a.user = user;
		a.server_signature = sig;
		a.server_signature_len = sizeof(sig);
	} else {
		return -1;
	}
	smtp_session_auth_answer(s, &a);
	return 0;
}

/* Runs the transcript; returns 0, or -1 on a malformed directive. */
static int replay(const char *script, bool bytewise, struct record *r, struct golden *g)
{
	char *copy = str_dup(script);
	struct smtp_session *s = NULL;
	static const struct smtp_client client = { "G1", "192.0.2.1", NULL, 25, golden_nonce,
						   NULL, NULL };
	int rc = 0;
	int lineno = 0;
	char *save = NULL;
	golden_defaults(g);
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		size_t ll = strlen(line);
		if (ll && line[ll - 1] == '\r')
			line[--ll] = '\0';
		if (ll == 0 || line[0] == '#')
			continue;
		if (strncmp(line, "set ", 4) == 0) {
			char key[64];
			const char *val = strchr(line + 4, ' ');
			if (s || !val || (size_t)(val - (line + 4)) >= sizeof(key)) {
				rc = -1;
				break;
			}
			memcpy(key, line + 4, (size_t)(val - (line + 4)));
			key[val - (line + 4)] = '\0';
			if (set_policy(g, key, val + 1) < 0) {
				rc = -1;
				break;
			}
			buf_printf(&r->text, "# %s\n", line);
			continue;
		}
		if (!s)
			s = smtp_session_new(&g->pol, &client);
		buf_printf(&r->text, "> %s\n", line);
		if (strncmp(line, "C: ", 3) == 0 || strncmp(line, "R: ", 3) == 0) {
			struct buf in;
			buf_init(&in, 1 << 26);
			if (line[0] == 'C') {
				buf_puts(&in, line + 3);
				buf_puts(&in, "\r\n");
			} else if (unesc(line + 3, &in) < 0) {
				buf_free(&in);
				rc = -1;
				break;
			}
			if (bytewise) {
				for (size_t i = 0; i < buf_len(&in); i++) {
					smtp_session_feed(s, buf_ptr(&in) + i, 1);
					drain(s, r);
				}
			} else {
				smtp_session_feed(s, buf_ptr(&in), buf_len(&in));
			}
			buf_free(&in);
		} else if (strcmp(line, "start") == 0) {
			smtp_session_start(s);
		} else if (strcmp(line, "tls") == 0) {
			smtp_session_tls_started(s, "TLSv1.3", "TLS_AES_256_GCM_SHA384");
		} else if (strncmp(line, "commit ok ", 10) == 0) {
			smtp_session_commit_result(s, SMTP_COMMIT_OK, line + 10);
		} else if (strcmp(line, "commit fail") == 0) {
			smtp_session_commit_result(s, SMTP_COMMIT_TEMPFAIL, NULL);
		} else if (strcmp(line, "timeout") == 0) {
			smtp_session_timeout(s);
		} else if (strcmp(line, "eof") == 0) {
			smtp_session_eof(s);
		} else if (strcmp(line, "shutdown") == 0) {
			smtp_session_shutdown(s);
		} else if (strcmp(line, "resume") == 0) {
			smtp_session_feed(s, NULL, 0);
		} else if (strncmp(line, "auth ", 5) == 0) {
			if (auth_directive(s, line + 5) < 0) {
				rc = -1;
				break;
			}
		} else if (strcmp(line, "lookup ok") == 0) {
			smtp_session_lookup_answer(s, AUTH_OK);
		} else if (strcmp(line, "lookup fail") == 0) {
			smtp_session_lookup_answer(s, AUTH_FAIL);
		} else if (strcmp(line, "lookup tempfail") == 0) {
			smtp_session_lookup_answer(s, AUTH_TEMPFAIL);
		} else {
			rc = -1;
			break;
		}
		drain(s, r);
		buf_printf(&r->text, "%s%s", smtp_session_closing(s) ? "= closing\n" : "",
			   !smtp_session_closing(s) && !smtp_session_wants_input(s)
				   ? "= not reading\n" : "");
	}
	if (rc < 0)
		fprintf(stderr, "replay: bad directive at line %d\n", lineno);
	smtp_session_free(s);
	free(copy);
	free(g->hostname);
	g->hostname = NULL;
	for (int st = 0; st < ACL_NSTAGES; st++) {
		acl_free(g->acls[st]);
		g->acls[st] = NULL;
	}
	rate_free(g->rates);
	g->rates = NULL;
	return rc;
}

static void record_init(struct record *r)
{
	buf_init(&r->text, 1 << 26);
	buf_init(&r->out, 1 << 26);
	buf_init(&r->acts, 1 << 26);
	buf_init(&r->body, 1 << 26);
}

static void record_free(struct record *r)
{
	buf_free(&r->text);
	buf_free(&r->out);
	buf_free(&r->acts);
	buf_free(&r->body);
}

static bool same(const struct buf *a, const struct buf *b)
{
	return buf_len(a) == buf_len(b) && (buf_len(a) == 0 || memcmp(buf_ptr(a), buf_ptr(b), buf_len(a)) == 0);
}

int main(int argc, char **argv)
{
	bool write_ref = false;
	int i = 1;
	if (i < argc && strcmp(argv[i], "-w") == 0) {
		write_ref = true;
		i++;
	}
	if (i + 1 != argc) {
		fprintf(stderr, "usage: %s [-w] FILE.in\n", argv[0]);
		return 2;
	}
	const char *path = argv[i];
	char *script = slurp(path);
	if (!script) {
		perror(path);
		return 2;
	}
	struct golden g;
	struct record whole, bytes;
	record_init(&whole);
	record_init(&bytes);
	int rc = 0;
	if (replay(script, false, &whole, &g) < 0 || replay(script, true, &bytes, &g) < 0) {
		rc = 2;
		goto out;
	}
	if (!same(&whole.out, &bytes.out) || !same(&whole.acts, &bytes.acts) ||
	    !same(&whole.body, &bytes.body)) {
		fprintf(stderr, "replay: %s: fed byte by byte, the session behaves differently\n",
			path);
		fwrite(buf_ptr(&bytes.text), 1, buf_len(&bytes.text), stderr);
		rc = 1;
	}
	if (write_ref) {
		size_t pl = strlen(path);
		struct buf ref;
		buf_init(&ref, 4096);
		buf_append(&ref, path, pl > 3 && strcmp(path + pl - 3, ".in") == 0 ? pl - 3 : pl);
		buf_puts(&ref, ".ref");
		FILE *f = fopen(buf_cstr(&ref), "wb");
		if (!f || fwrite(buf_ptr(&whole.text), 1, buf_len(&whole.text), f) !=
				  buf_len(&whole.text) || fclose(f) != 0) {
			perror(buf_cstr(&ref));
			rc = 2;
		}
		buf_free(&ref);
	} else {
		fwrite(buf_ptr(&whole.text), 1, buf_len(&whole.text), stdout);
	}
out:
	record_free(&whole);
	record_free(&bytes);
	free(script);
	return rc;
}
