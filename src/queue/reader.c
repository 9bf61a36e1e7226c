/*
 * The spool file format: envelope text out (spool_format_env) and back in
 * (spool_parse_env), reading queued messages, listing the queue.
 *
 * The parser is strict because the only writer is spool_format_env: any
 * line it would not have produced means the file is damaged, and a damaged
 * envelope must be set aside, not guessed at.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue.h"

/* An envelope is read whole from the head of the file; recovery reads at
 * most this much, so the writer refuses to produce more. */
#define SPOOL_ENV_MAX (1024 * 1024)
/* One envelope line; a recipient with a long ORCPT is the largest. */
#define SPOOL_LINE_MAX (64 * 1024)
/* Notify bits are a small bit set (NEVER, SUCCESS, FAILURE, DELAY). */
#define SPOOL_NOTIFY_MAX 0xffffu

static const char spool_magic[] = "sluice-spool 1";

void spool_env_free(struct spool_env *env)
{
	if (!env)
		return;
	free(env->role);
	free(env->client_ip);
	free(env->helo);
	free(env->tls_version);
	free(env->tls_cipher);
	free(env->auth_user);
	free(env->sender);
	free(env->envid);
	for (size_t i = 0; i < env->n_rcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].orcpt);
	}
	free(env->rcpts);
	memset(env, 0, sizeof(*env));
}

/* ---- xtext (RFC 3461) -------------------------------------------------- */

static bool xtext_plain(unsigned char c)
{
	return c >= '!' && c <= '~' && c != '+' && c != '=';
}

/* force_hex: encode this one value entirely in hex when it would otherwise
 * be mistaken for a placeholder ("-" for "no ORCPT"). */
static int xtext_put(struct buf *out, const char *s, bool force_hex)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (xtext_plain(*p) && !force_hex) {
			if (buf_append(out, p, 1) < 0)
				return -1;
		} else {
			char t[3] = { '+', hex[*p >> 4], hex[*p & 15] };
			if (buf_append(out, t, 3) < 0)
				return -1;
		}
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes p[0..n) into a new string; NULL if malformed.  "+00" is refused
 * because a NUL cannot live in a C string and would silently cut it. */
static char *xtext_get(const char *p, size_t n)
{
	char *s = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '+') {
			if (n - i < 3)
				goto bad;
			int hi = hexval(p[i + 1]), lo = hexval(p[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				goto bad;
			s[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (xtext_plain(c)) {
			s[o++] = (char)c;
		} else {
			goto bad;
		}
	}
	s[o] = '\0';
	return s;
bad:
	free(s);
	return NULL;
}

/* Tokens written raw (client address, TLS names): printable, no space. */
static bool token_ok(const char *p, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < '!' || (unsigned char)p[i] > '~')
			return false;
	return true;
}

/* ---- writing ------------------------------------------------------------ */

static int format_env(const struct spool_env *env, bool mark, ssize_t *mark_at, struct buf *out,
		      struct err *e)
{
	if (mark_at)
		*mark_at = -1;
	if (!queue_id_valid(env->id))
		return err_set(e, "spool envelope: invalid queue id");
	if (!env->role || (strcmp(env->role, "mx") != 0 && strcmp(env->role, "submission") != 0 &&
			   strcmp(env->role, "local") != 0))
		return err_set(e, "spool envelope: invalid role");
	if (!env->client_ip || !token_ok(env->client_ip, strlen(env->client_ip)))
		return err_set(e, "spool envelope: invalid client address");
	if (env->received < 0)
		return err_set(e, "spool envelope: invalid received time");
	if (env->tls_version || env->tls_cipher) {
		if (!env->tls_version || !env->tls_cipher ||
		    !token_ok(env->tls_version, strlen(env->tls_version)) ||
		    !token_ok(env->tls_cipher, strlen(env->tls_cipher)))
			return err_set(e, "spool envelope: invalid TLS version or cipher");
	}
	if (!env->sender)
		return err_set(e, "spool envelope: no sender");
	if (env->body < 0 || env->body > 2 || env->ret < 0 || env->ret > 2)
		return err_set(e, "spool envelope: invalid BODY or RET");
	if (env->n_rcpts == 0)
		return err_set(e, "spool envelope: no recipients");
	for (size_t i = 0; i < env->n_rcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (!r->addr || !r->addr[0])
			return err_set(e, "spool envelope: empty recipient");
		if (r->notify > SPOOL_NOTIFY_MAX)
			return err_set(e, "spool envelope: invalid notify bits");
	}

	size_t start = buf_len(out);
	size_t line_start = start;
	int bad = 0;
#define LINE_END()                                                              \
	do {                                                                    \
		bad |= buf_append(out, "\n", 1);                                \
		if (buf_len(out) - line_start - 1 > SPOOL_LINE_MAX)             \
			bad = -1;                                               \
		line_start = buf_len(out);                                      \
	} while (0)

	bad |= buf_puts(out, spool_magic);
	LINE_END();
	bad |= buf_printf(out, "id %s", env->id);
	LINE_END();
	bad |= buf_printf(out, "received %lld", (long long)env->received);
	LINE_END();
	bad |= buf_printf(out, "role %s", env->role);
	LINE_END();
	bad |= buf_printf(out, "client %s", env->client_ip);
	LINE_END();
	if (env->helo) {
		bad |= buf_puts(out, "helo ");
		bad |= xtext_put(out, env->helo, false);
		LINE_END();
	}
	if (env->tls_version) {
		bad |= buf_printf(out, "tls %s %s", env->tls_version, env->tls_cipher);
		LINE_END();
	}
	if (env->auth_user) {
		bad |= buf_puts(out, "auth ");
		bad |= xtext_put(out, env->auth_user, false);
		LINE_END();
	}
	bad |= buf_puts(out, "from ");
	bad |= xtext_put(out, env->sender, false);
	LINE_END();
	if (env->body) {
		bad |= buf_puts(out, env->body == 1 ? "body 7bit" : "body 8bitmime");
		LINE_END();
	}
	if (mark && (env->body == 2 || env->smtputf8)) {
		/* Fixed width, so that the writer can turn 8bit into 7bit in
		 * place once the whole message has been seen. */
		bad |= buf_puts(out, "content ");
		if (mark_at)
			*mark_at = (ssize_t)(buf_len(out) - start);
		bad |= buf_puts(out, "8bit");
		LINE_END();
	}
	if (env->smtputf8) {
		bad |= buf_puts(out, "smtputf8");
		LINE_END();
	}
	if (env->ret) {
		bad |= buf_puts(out, env->ret == 1 ? "ret full" : "ret hdrs");
		LINE_END();
	}
	if (env->envid) {
		bad |= buf_puts(out, "envid ");
		bad |= xtext_put(out, env->envid, false);
		LINE_END();
	}
	if (env->size_declared) {
		bad |= buf_printf(out, "size %llu", (unsigned long long)env->size_declared);
		LINE_END();
	}
	for (size_t i = 0; i < env->n_rcpts && bad == 0; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		bad |= buf_puts(out, "rcpt ");
		bad |= xtext_put(out, r->addr, false);
		bad |= buf_printf(out, " %u ", r->notify);
		if (r->orcpt)
			bad |= xtext_put(out, r->orcpt, strcmp(r->orcpt, "-") == 0);
		else
			bad |= buf_puts(out, "-");
		LINE_END();
	}
	bad |= buf_append(out, "\n", 1);
#undef LINE_END
	if (bad || buf_len(out) - start > SPOOL_ENV_MAX) {
		out->len = out->off + start;
		if (mark_at)
			*mark_at = -1;
		return err_set(e, "spool envelope: too large");
	}
	return 0;
}

size_t spool_env_max(void)
{
	return SPOOL_ENV_MAX;
}

int spool_format_env(const struct spool_env *env, struct buf *out, struct err *e)
{
	return format_env(env, false, NULL, out, e);
}

int spool_format_env_marked(const struct spool_env *env, struct buf *out, ssize_t *mark_at,
			    struct err *e)
{
	return format_env(env, true, mark_at, out, e);
}

/* ---- parsing ------------------------------------------------------------ */

int spool_parse_number(const char *p, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || n > 20)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		unsigned d = (unsigned)(p[i] - '0');
		if (d > max || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static bool word_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(p, w, n) == 0;
}

/* One envelope line (without its LF): keyword, then " value" for all but
 * the bare flags. */
static int parse_line(const char *line, size_t len, struct spool_env *out, unsigned *seen,
		      bool *ascii_only, struct err *e, size_t lineno)
{
	const char *sp = memchr(line, ' ', len);
	size_t klen = sp ? (size_t)(sp - line) : len;
	const char *v = sp ? sp + 1 : NULL;
	size_t vlen = sp ? len - klen - 1 : 0;

	static const char *const keys[] = { "id",   "received", "role", "client", "helo",
					    "tls",  "auth",     "from", "body",   "smtputf8",
					    "ret",  "envid",    "size", "rcpt",   "content" };
	size_t k = 0;
	while (k < sizeof(keys) / sizeof(keys[0]) && !word_is(line, klen, keys[k]))
		k++;
	if (k == sizeof(keys) / sizeof(keys[0]))
		return err_set(e, "spool envelope line %zu: unknown line", lineno);
	bool is_flag = k == 9;
	if (is_flag != (sp == NULL))
		return err_set(e, "spool envelope line %zu: malformed %s", lineno, keys[k]);
	/* Every line but rcpt appears at most once. */
	if (k != 13) {
		if (*seen & (1u << k))
			return err_set(e, "spool envelope line %zu: duplicate %s", lineno, keys[k]);
		*seen |= 1u << k;
	}

	uint64_t num;
	switch (k) {
	case 0: /* id */
		if (vlen != QUEUE_ID_LEN)
			return err_set(e, "spool envelope line %zu: bad id", lineno);
		memcpy(out->id, v, QUEUE_ID_LEN);
		out->id[QUEUE_ID_LEN] = '\0';
		if (!queue_id_valid(out->id))
			return err_set(e, "spool envelope line %zu: bad id", lineno);
		return 0;
	case 1: /* received */
		if (spool_parse_number(v, vlen, INT64_MAX, &num) < 0)
			return err_set(e, "spool envelope line %zu: bad received time", lineno);
		out->received = (int64_t)num;
		return 0;
	case 2: /* role */
		if (!word_is(v, vlen, "mx") && !word_is(v, vlen, "submission") &&
		    !word_is(v, vlen, "local"))
			return err_set(e, "spool envelope line %zu: bad role", lineno);
		out->role = str_ndup(v, vlen);
		return 0;
	case 3: /* client */
		if (!token_ok(v, vlen))
			return err_set(e, "spool envelope line %zu: bad client", lineno);
		out->client_ip = str_ndup(v, vlen);
		return 0;
	case 5: { /* tls */
		const char *sp2 = memchr(v, ' ', vlen);
		if (!sp2 || !token_ok(v, (size_t)(sp2 - v)) ||
		    !token_ok(sp2 + 1, vlen - (size_t)(sp2 - v) - 1))
			return err_set(e, "spool envelope line %zu: bad tls", lineno);
		out->tls_version = str_ndup(v, (size_t)(sp2 - v));
		out->tls_cipher = str_ndup(sp2 + 1, vlen - (size_t)(sp2 - v) - 1);
		return 0;
	}
	case 4: /* helo */
	case 6: /* auth */
	case 7: /* from */
	case 11: { /* envid */
		char *s = xtext_get(v, vlen);
		if (!s)
			return err_set(e, "spool envelope line %zu: bad xtext in %s", lineno, keys[k]);
		char **dst = k == 4 ? &out->helo : k == 6 ? &out->auth_user
					   : k == 7 ? &out->sender : &out->envid;
		*dst = s;
		return 0;
	}
	case 8: /* body */
		if (word_is(v, vlen, "7bit"))
			out->body = 1;
		else if (word_is(v, vlen, "8bitmime"))
			out->body = 2;
		else
			return err_set(e, "spool envelope line %zu: bad body", lineno);
		return 0;
	case 9: /* smtputf8 */
		out->smtputf8 = true;
		return 0;
	case 10: /* ret */
		if (word_is(v, vlen, "full"))
			out->ret = 1;
		else if (word_is(v, vlen, "hdrs"))
			out->ret = 2;
		else
			return err_set(e, "spool envelope line %zu: bad ret", lineno);
		return 0;
	case 14: /* content */
		if (word_is(v, vlen, "7bit"))
			*ascii_only = true;
		else if (!word_is(v, vlen, "8bit"))
			return err_set(e, "spool envelope line %zu: bad content", lineno);
		return 0;
	case 12: /* size */
		if (spool_parse_number(v, vlen, UINT64_MAX, &num) < 0)
			return err_set(e, "spool envelope line %zu: bad size", lineno);
		out->size_declared = num;
		return 0;
	default: { /* rcpt <addr> <notify> <orcpt|-> */
		const char *s1 = memchr(v, ' ', vlen);
		const char *s2 = s1 ? memchr(s1 + 1, ' ', vlen - (size_t)(s1 + 1 - v)) : NULL;
		if (!s2)
			return err_set(e, "spool envelope line %zu: bad rcpt", lineno);
		size_t alen = (size_t)(s1 - v);
		size_t nlen = (size_t)(s2 - s1 - 1);
		const char *o = s2 + 1;
		size_t olen = vlen - (size_t)(o - v);
		if (alen == 0 || spool_parse_number(s1 + 1, nlen, SPOOL_NOTIFY_MAX, &num) < 0 ||
		    memchr(o, ' ', olen))
			return err_set(e, "spool envelope line %zu: bad rcpt", lineno);
		char *addr = xtext_get(v, alen);
		char *orcpt = NULL;
		bool ok = addr != NULL;
		if (ok && !word_is(o, olen, "-")) {
			orcpt = xtext_get(o, olen);
			ok = orcpt != NULL;
		}
		if (!ok) {
			free(addr);
			return err_set(e, "spool envelope line %zu: bad xtext in rcpt", lineno);
		}
		/* Grow by doubling: n_rcpts is a power of two exactly when full. */
		if ((out->n_rcpts & (out->n_rcpts - 1)) == 0) {
			size_t cap = out->n_rcpts ? out->n_rcpts * 2 : 1;
			out->rcpts = xrealloc(out->rcpts, cap * sizeof(*out->rcpts));
		}
		out->rcpts[out->n_rcpts++] = (struct spool_rcpt){ addr, (unsigned)num, orcpt };
		return 0;
	}
	}
}

static bool env_str_ascii(const char *s)
{
	return !s || !str_has_8bit(s, strlen(s));
}

/* Sender, recipients and original recipients all ASCII? */
static bool env_addrs_ascii(const struct spool_env *env)
{
	if (!env_str_ascii(env->sender))
		return false;
	for (size_t i = 0; i < env->n_rcpts; i++)
		if (!env_str_ascii(env->rcpts[i].addr) || !env_str_ascii(env->rcpts[i].orcpt))
			return false;
	return true;
}

int spool_parse_env(const char *text, size_t n, struct spool_env *out, struct err *e)
{
	memset(out, 0, sizeof(*out));
	size_t pos = 0, lineno = 0;
	unsigned seen = 0;
	bool ascii_only = false;
	for (;;) {
		lineno++;
		size_t avail = n - pos;
		size_t look = avail < SPOOL_LINE_MAX + 1 ? avail : SPOOL_LINE_MAX + 1;
		const char *nl = memchr(text + pos, '\n', look);
		if (!nl) {
			spool_env_free(out);
			if (look > SPOOL_LINE_MAX)
				return err_set(e, "spool envelope line %zu: too long", lineno);
			return err_set(e, "spool envelope: truncated (no blank line)");
		}
		size_t len = (size_t)(nl - (text + pos));
		const char *line = text + pos;
		pos += len + 1;
		if (pos > SPOOL_ENV_MAX) {
			spool_env_free(out);
			return err_set(e, "spool envelope: too large");
		}
		if (lineno == 1) {
			if (!word_is(line, len, spool_magic)) {
				spool_env_free(out);
				return err_set(e, "spool envelope: not a sluice spool file (version 1)");
			}
			continue;
		}
		if (len == 0)
			break;
		if (parse_line(line, len, out, &seen, &ascii_only, e, lineno) < 0) {
			spool_env_free(out);
			return -1;
		}
	}
	static const struct {
		unsigned bit;
		const char *name;
	} required[] = { { 1u << 0, "id" },     { 1u << 1, "received" }, { 1u << 2, "role" },
			 { 1u << 3, "client" }, { 1u << 7, "from" } };
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if (!(seen & required[i].bit)) {
			spool_env_free(out);
			return err_set(e, "spool envelope: no %s line", required[i].name);
		}
	}
	if (out->n_rcpts == 0) {
		spool_env_free(out);
		return err_set(e, "spool envelope: no rcpt line");
	}
	if ((seen & (1u << 14)) && out->body != 2 && !out->smtputf8) {
		spool_env_free(out);
		return err_set(e, "spool envelope: content line without body 8bitmime or "
			       "smtputf8");
	}
	/* Declared 8BITMIME but every byte is ASCII: the message is 7bit and
	 * may go to any server (RFC 6152 3). */
	if (ascii_only && out->body == 2)
		out->body = 1;
	/* Declared SMTPUTF8 with nothing but ASCII, in the message and the
	 * addresses: it needs no SMTPUTF8 server (RFC 6531 3.2), which, as
	 * many clients declare it whenever it is offered, would otherwise
	 * bounce it at an LMTP server or MX that lacks the extension. */
	if (ascii_only && out->smtputf8 && env_addrs_ascii(out))
		out->smtputf8 = false;
	out->data_offset = (off_t)pos;
	return 0;
}

/* ---- reading queued files ---------------------------------------------- */

/* Reads the head of fd until the blank line, EOF or SPOOL_ENV_MAX. */
static int spool_read_head(int fd, struct buf *b, struct err *e)
{
	size_t chunk = 4096;
	for (;;) {
		size_t have = buf_len(b);
		size_t want = SPOOL_ENV_MAX - have < chunk ? SPOOL_ENV_MAX - have : chunk;
		if (want == 0)
			return 0;
		uint8_t *w = buf_reserve(b, want);
		if (!w)
			return err_set(e, "spool file: out of memory");
		ssize_t r = read(fd, w, want);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return err_set(e, "spool file: read: %s", strerror(errno));
		}
		if (r == 0)
			return 0;
		buf_commit(b, (size_t)r);
		size_t from = have ? have - 1 : 0;
		if (memmem(buf_ptr(b) + from, buf_len(b) - from, "\n\n", 2))
			return 0;
		if (chunk < 256 * 1024)
			chunk *= 2;
	}
}

/* Opens queue/<id> and reads its envelope; on success *fd_out (if not NULL)
 * is left open.  *sys_errno gets the errno of a failed open (ENOENT: the
 * message was delivered meanwhile). */
static int spool_read_env_at(int qfd, const char *id, struct spool_env *out, int *fd_out,
			     int *sys_errno, struct err *e)
{
	memset(out, 0, sizeof(*out));
	*sys_errno = 0;
	if (!queue_id_valid(id))
		return err_set(e, "spool: invalid queue id");
	/* O_NONBLOCK so that a FIFO planted in the queue cannot hang us. */
	int fd = openat(qfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		*sys_errno = errno;
		return err_set(e, "spool %s: open: %s", id, strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(e, "spool %s: not a regular file", id);
	}
	struct buf head;
	buf_init(&head, SPOOL_ENV_MAX);
	int r = spool_read_head(fd, &head, e);
	if (r == 0)
		r = spool_parse_env((const char *)buf_ptr(&head), buf_len(&head), out, e);
	buf_free(&head);
	if (r == 0 && strcmp(out->id, id) != 0) {
		spool_env_free(out);
		r = err_set(e, "spool %s: envelope names another id", id);
	}
	if (r < 0) {
		close(fd);
		return -1;
	}
	out->data_size = st.st_size > out->data_offset ? st.st_size - out->data_offset : 0;
	if (fd_out)
		*fd_out = fd;
	else
		close(fd);
	return 0;
}

int spool_read_env(struct spool *sp, const char *id, struct spool_env *out, struct err *e)
{
	int sys_errno;
	return spool_read_env_at(spool_queue_dirfd(sp), id, out, NULL, &sys_errno, e);
}

int spool_open_data(struct spool *sp, const char *id, int *fd_out, struct err *e)
{
	struct spool_env env;
	int fd, sys_errno;
	if (spool_read_env_at(spool_queue_dirfd(sp), id, &env, &fd, &sys_errno, e) < 0)
		return -1;
	off_t off = env.data_offset;
	spool_env_free(&env);
	if (lseek(fd, off, SEEK_SET) != off) {
		close(fd);
		return err_set(e, "spool %s: seek: %s", id, strerror(errno));
	}
	/* The reader wants ordinary blocking reads. */
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	*fd_out = fd;
	return 0;
}

/* ---- listing ------------------------------------------------------------ */

struct spool_id {
	char s[QUEUE_ID_LEN + 1];
};

static int spool_id_cmp(const void *a, const void *b)
{
	return strcmp(((const struct spool_id *)a)->s, ((const struct spool_id *)b)->s);
}

int spool_foreach(struct spool *sp, int (*fn)(const char *id, void *arg), void *arg,
		  struct err *e)
{
	/* A new open file description each time: the spool's own descriptor
	 * keeps no directory position, and this works after chroot. */
	int dfd = openat(spool_queue_dirfd(sp), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return err_set(e, "spool queue directory: %s", strerror(errno));
	DIR *d = fdopendir(dfd);
	if (!d) {
		int er = errno;
		close(dfd);
		return err_set(e, "spool queue directory: %s", strerror(er));
	}
	struct spool_id *ids = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (!queue_id_valid(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			ids = xrealloc(ids, cap * sizeof(*ids));
		}
		memcpy(ids[n++].s, de->d_name, QUEUE_ID_LEN + 1);
		errno = 0;
	}
	int rd_err = errno;
	closedir(d);
	if (rd_err) {
		free(ids);
		return err_set(e, "spool queue directory: read: %s", strerror(rd_err));
	}
	if (n > 1)
		qsort(ids, n, sizeof(*ids), spool_id_cmp);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		if (fn(ids[i].s, arg) != 0) {
			r = err_set(e, "spool listing stopped at %s", ids[i].s);
			break;
		}
	}
	free(ids);
	return r;
}

static int spool_count_one(const char *id, void *arg)
{
	(*(size_t *)arg)++;
	return 0;
}

int spool_count(struct spool *sp, size_t *n, struct err *e)
{
	*n = 0;
	return spool_foreach(sp, spool_count_one, n, e);
}

/* Addresses are untrusted bytes: keep UTF-8 but not terminal controls. */
static void spool_put_safe(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			fprintf(f, "\\x%02X", *p);
		else
			fputc(*p, f);
	}
}

static void spool_fmt_age(char *out, size_t n, int64_t secs)
{
	if (secs < 0)
		secs = 0;
	int64_t m = secs / 60, h = secs / 3600, d = secs / 86400;
	if (m < 60)
		snprintf(out, n, "%lldm", (long long)m);
	else if (h < 48)
		snprintf(out, n, "%lldh", (long long)h);
	else
		snprintf(out, n, "%lldd", (long long)d);
}

static void spool_fmt_size(char *out, size_t n, uint64_t sz)
{
	static const char units[] = "KMGT";
	if (sz < 1000) {
		snprintf(out, n, "%llu", (unsigned long long)sz);
		return;
	}
	uint64_t div = 1024;
	size_t u = 0;
	/* Pick the unit in which the number is below 1000. */
	while (u + 1 < sizeof(units) - 1 && (sz + div / 2) / div >= 1000) {
		div *= 1024;
		u++;
	}
	uint64_t tenths = (sz * 10 + div / 2) / div;
	if (tenths < 100)
		snprintf(out, n, "%llu.%llu%c", (unsigned long long)(tenths / 10),
			 (unsigned long long)(tenths % 10), units[u]);
	else
		snprintf(out, n, "%llu%c", (unsigned long long)((sz + div / 2) / div), units[u]);
}

struct spool_list_ctx {
	struct spool *sp;
	FILE *f;
	int64_t now;
};

static int spool_list_one(const char *id, void *arg)
{
	struct spool_list_ctx *c = arg;
	struct spool_env env;
	struct err er;
	int sys_errno;
	if (spool_read_env_at(spool_queue_dirfd(c->sp), id, &env, NULL, &sys_errno, &er) < 0) {
		if (sys_errno == ENOENT)
			return 0; /* delivered while we listed */
		fprintf(c->f, "%3s %5s %s *** unreadable: %s ***\n\n", "?", "?", id, er.msg);
		return 0;
	}
	char age[32], size[32];
	spool_fmt_age(age, sizeof(age), c->now - env.received);
	spool_fmt_size(size, sizeof(size), (uint64_t)env.data_size);
	fprintf(c->f, "%3s %5s %s <", age, size, id);
	spool_put_safe(c->f, env.sender);
	fputs(">\n", c->f);
	/* As Exim's listing: "D" before a recipient that is done (delivered,
	 * or failed and reported), from the runner's state file. */
	struct spool_state st;
	bool have_st = spool_state_read(c->sp, id, env.n_rcpts, &st, &er) == 0;
	for (size_t i = 0; i < env.n_rcpts; i++) {
		bool done = have_st && i < st.n_rcpts && st.rcpts[i].status != SPOOL_RCPT_PENDING;
		fputs(done ? "        D " : "          ", c->f);
		spool_put_safe(c->f, env.rcpts[i].addr);
		fputc('\n', c->f);
	}
	fputc('\n', c->f);
	if (have_st)
		spool_state_free(&st);
	spool_env_free(&env);
	return 0;
}

int spool_print_list(struct spool *sp, FILE *f, struct err *e)
{
	struct spool_list_ctx c = { sp, f, time_now_us() / 1000000 };
	if (spool_foreach(sp, spool_list_one, &c, e) < 0)
		return -1;
	if (fflush(f) != 0 || ferror(f))
		return err_set(e, "queue listing: write error");
	return 0;
}
