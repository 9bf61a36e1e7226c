/* Growable byte buffer with a hard maximum: the one type that holds
 * network input, so that no input ever lands in a fixed-size array. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

void buf_compact(struct buf *b)
{
	if (b->off == 0)
		return;
	memmove(b->data, b->data + b->off, b->len - b->off);
	b->len -= b->off;
	b->off = 0;
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
	size_t content = b->len - b->off;
	if (n > b->max || content > b->max - n)
		return NULL;
	if (b->cap - b->len > n)
		return b->data + b->len;
	/* Reclaim consumed space before growing. */
	if (b->off > 0) {
		buf_compact(b);
		if (b->cap - b->len > n)
			return b->data + b->len;
	}
	size_t want = b->len + n + 1; /* +1 keeps room for buf_cstr's NUL */
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < want)
		ncap *= 2;
	if (ncap > b->max + 1 && want <= b->max + 1)
		ncap = b->max + 1;
	uint8_t *p = realloc(b->data, ncap);
	if (!p)
		return NULL;
	b->data = p;
	b->cap = ncap;
	return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	uint8_t *w = buf_reserve(b, n);
	if (!w)
		return -1;
	memcpy(w, p, n);
	b->len += n;
	return 0;
}

int buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -1;
	/* buf_reserve always leaves room for one more byte: the NUL. */
	uint8_t *w = buf_reserve(b, (size_t)n);
	if (!w)
		return -1;
	vsnprintf((char *)w, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len - b->off) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

const char *buf_cstr(struct buf *b)
{
	if (b->cap <= b->len) {
		/* Room for the terminator regardless of max. */
		size_t ncap = b->len + 1;
		uint8_t *p = realloc(b->data, ncap);
		if (!p)
			return NULL;
		b->data = p;
		b->cap = ncap;
	}
	b->data[b->len] = '\0';
	return (const char *)b->data + b->off;
}
