/*
 * Command-line parsing: verb and argument (RFC 5321 §4.1.1), ESMTP
 * parameters (§4.1.2 Mail-parameters / Rcpt-parameters) and RFC 3461
 * xtext.  All results are views into the caller's line.
 */
#include <string.h>

#include "smtp.h"

static const struct {
	const char *name;
	enum smtp_verb verb;
} smtp_verbs[] = {
	{ "HELO", SMTP_CMD_HELO }, { "EHLO", SMTP_CMD_EHLO }, { "MAIL", SMTP_CMD_MAIL },
	{ "RCPT", SMTP_CMD_RCPT }, { "DATA", SMTP_CMD_DATA }, { "BDAT", SMTP_CMD_BDAT },
	{ "RSET", SMTP_CMD_RSET }, { "NOOP", SMTP_CMD_NOOP }, { "QUIT", SMTP_CMD_QUIT },
	{ "VRFY", SMTP_CMD_VRFY }, { "EXPN", SMTP_CMD_EXPN }, { "HELP", SMTP_CMD_HELP },
	{ "STARTTLS", SMTP_CMD_STARTTLS }, { "AUTH", SMTP_CMD_AUTH },
};

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

void smtp_parse_cmd(const char *line, size_t n, struct smtp_cmd *out)
{
	size_t i = 0;
	while (i < n && is_alpha((unsigned char)line[i]))
		i++;
	size_t verb_len = i;

	out->verb = SMTP_CMD_UNKNOWN;
	/* "MAILFROM:" or "DATA\t" must not pass for a known verb. */
	if (verb_len > 0 && (i == n || line[i] == ' ')) {
		for (size_t k = 0; k < sizeof(smtp_verbs) / sizeof(smtp_verbs[0]); k++) {
			if (str_eq_nocase(line, verb_len, smtp_verbs[k].name)) {
				out->verb = smtp_verbs[k].verb;
				break;
			}
		}
	}

	while (i < n && line[i] == ' ')
		i++;
	size_t end = n;
	while (end > i && line[end - 1] == ' ')
		end--;
	out->arg = n ? line + i : line;
	out->arg_len = end - i;
}

bool smtp_is_http_request(const char *line, size_t n)
{
	/* Methods are case-sensitive (RFC 9110 9.1) and none is an SMTP verb. */
	static const char *const methods[] = { "GET ", "POST ", "HEAD ", "PUT ", "DELETE ",
						"CONNECT ", "OPTIONS ", "TRACE ", "PATCH " };
	for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
		size_t m = strlen(methods[k]);
		if (n >= m && memcmp(line, methods[k], m) == 0)
			return true;
	}
	return false;
}

/* esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 under RFC 6531 */
static size_t scan_value(const unsigned char *p, size_t n, bool utf8, bool *ok)
{
	size_t i = 0;
	*ok = true;
	while (i < n && p[i] != ' ') {
		unsigned char c = p[i];
		if ((c >= 33 && c <= 60) || (c >= 62 && c <= 126)) {
			i++;
		} else if (c >= 0x80 && utf8) {
			size_t l = str_utf8_seq(p + i, n - i);
			if (l == 0) {
				*ok = false;
				return i;
			}
			i += l;
		} else {
			*ok = false;
			return i;
		}
	}
	if (i == 0)
		*ok = false;
	return i;
}

int smtp_parse_params(const char *p, size_t n, bool utf8, struct smtp_param *out,
		      size_t *count)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;
	*count = 0;
	for (;;) {
		while (i < n && s[i] == ' ')
			i++;
		if (i == n)
			return 0;
		if (*count == SMTP_MAX_PARAMS)
			return -1;

		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		size_t key = i;
		if (!is_alpha(s[i]) && !is_digit(s[i]))
			return -1;
		i++;
		while (i < n && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-'))
			i++;
		struct smtp_param *pa = &out[*count];
		pa->key = p + key;
		pa->key_len = i - key;
		pa->value = NULL;
		pa->value_len = 0;

		if (i < n && s[i] == '=') {
			i++;
			bool ok;
			size_t vl = scan_value(s + i, n - i, utf8, &ok);
			if (!ok)
				return -1;
			pa->value = p + i;
			pa->value_len = vl;
			i += vl;
		}
		if (i < n && s[i] != ' ')
			return -1;
		(*count)++;
	}
}

static int hex_upper(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* xchar = %d33-42 / %d44-60 / %d62-126 ('+' and '=' are excluded) */
static bool is_xchar(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '+' && c != '=';
}

int smtp_xtext_decode(const char *p, size_t n, struct buf *out)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t keep = buf_len(out);
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		if (c == '+') {
			/* hexchar = "+" 2(%x30-39 / %x41-46): uppercase only */
			if (n - i < 3)
				goto bad;
			int hi = hex_upper(s[i + 1]), lo = hex_upper(s[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			c = (unsigned char)(hi << 4 | lo);
			i += 3;
		} else if (is_xchar(c)) {
			i++;
		} else {
			goto bad;
		}
		if (buf_append(out, &c, 1) < 0)
			goto bad;
	}
	return 0;
bad:
	/* Leave out as it was; compaction keeps the content length. */
	out->len = out->off + keep;
	return -1;
}

int smtp_xtext_encode(const void *p, size_t n, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = p;
	size_t keep = buf_len(out);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		int r;
		if (is_xchar(c)) {
			r = buf_append(out, &c, 1);
		} else {
			char e[3] = { '+', hex[c >> 4], hex[c & 15] };
			r = buf_append(out, e, 3);
		}
		if (r < 0) {
			out->len = out->off + keep;
			return -1;
		}
	}
	return 0;
}

const char *smtp_role_name(enum smtp_role r)
{
	switch (r) {
	case SMTP_ROLE_MX:
		return "mx";
	case SMTP_ROLE_SUBMISSION:
		return "submission";
	case SMTP_ROLE_LOCAL:
		return "local";
	}
	return "unknown";
}
