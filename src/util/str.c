/* Small string helpers, allocation wrappers and error formatting. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

int err_set(struct err *e, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void oom(void)
{
	static const char m[] = "sluice: out of memory\n";
	(void)!write(2, m, sizeof(m) - 1);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *str_dup(const char *s)
{
	return str_ndup(s, strlen(s));
}

char *str_ndup(const void *p, size_t n)
{
	char *s = xmalloc(n + 1);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

bool str_eq_nocase(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++)
		if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
			return false;
	return true;
}

bool str_has_prefix_nocase(const char *s, size_t n, const char *prefix)
{
	size_t pl = strlen(prefix);
	if (n < pl)
		return false;
	return str_eq_nocase(s, pl, prefix);
}

void str_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

void str_escape(struct buf *out, const void *p, size_t n, size_t maxlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = p;
	size_t lim = n < maxlen ? n : maxlen;
	for (size_t i = 0; i < lim; i++) {
		unsigned char c = s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"' && c != '=') {
			if (buf_append(out, &c, 1) < 0)
				return;
		} else {
			char esc[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
			if (buf_append(out, esc, 4) < 0)
				return;
		}
	}
	if (n > maxlen)
		buf_puts(out, "...");
}

size_t str_utf8_seq(const void *p, size_t n)
{
	const unsigned char *s = p;
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k < len; k++)
		if (s[k] < 0x80 || s[k] > 0xBF)
			return 0;
	return len;
}

bool str_utf8_visible(const char *p, size_t n, const char *forbid)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x80) {
			size_t l = str_utf8_seq(p + i, n - i);
			if (l == 0)
				return false;
			i += l;
			continue;
		}
		if (c < 0x21 || c > 0x7e || strchr(forbid, c))
			return false;
		i++;
	}
	return true;
}

/* The spool sees every byte of every message through it: eight bytes at
 * a time, and 64 per branch. */
bool str_has_8bit(const void *p, size_t n)
{
	const uint8_t *s = p;
	const uint64_t high = 0x8080808080808080ULL;
	while (n >= 64) {
		uint64_t w[8];
		memcpy(w, s, sizeof(w));
		if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) & high)
			return true;
		s += 64;
		n -= 64;
	}
	uint64_t acc = 0;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, sizeof(w));
		acc |= w;
		s += 8;
		n -= 8;
	}
	while (n > 0) {
		acc |= *s++;
		n--;
	}
	return (acc & high) != 0;
}
