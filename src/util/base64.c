/* Base64 (RFC 4648 section 4), strict: SASL peers must send canonical
 * encodings, so anything else is treated as a syntax error rather than
 * guessed at. */
#include "util.h"

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_encode(const void *p, size_t n, struct buf *out)
{
	const uint8_t *s = p;
	if (n == 0)
		return 0;
	if (n > (SIZE_MAX - 2) / 4 * 3)
		return -1;
	size_t olen = (n + 2) / 3 * 4;
	uint8_t *w = buf_reserve(out, olen);
	if (!w)
		return -1;
	size_t i = 0, o = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		w[o++] = (uint8_t)b64_alphabet[v >> 18 & 63];
		w[o++] = (uint8_t)b64_alphabet[v >> 12 & 63];
		w[o++] = (uint8_t)b64_alphabet[v >> 6 & 63];
		w[o++] = (uint8_t)b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		w[o++] = (uint8_t)b64_alphabet[v >> 18 & 63];
		w[o++] = (uint8_t)b64_alphabet[v >> 12 & 63];
		w[o++] = '=';
		w[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		w[o++] = (uint8_t)b64_alphabet[v >> 18 & 63];
		w[o++] = (uint8_t)b64_alphabet[v >> 12 & 63];
		w[o++] = (uint8_t)b64_alphabet[v >> 6 & 63];
		w[o++] = '=';
	}
	buf_commit(out, o);
	return 0;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int b64_decode(const char *p, size_t n, struct buf *out)
{
	if (n == 0)
		return 0;
	if (n % 4 != 0)
		return -1;
	size_t pad = 0;
	if (p[n - 1] == '=')
		pad = (p[n - 2] == '=') ? 2 : 1;
	size_t olen = n / 4 * 3 - pad;
	size_t start = buf_len(out);
	uint8_t *w = buf_reserve(out, olen);
	if (!w)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = (i + 4 == n);
		size_t k = last ? 4 - pad : 4;
		uint32_t v = 0;
		for (size_t j = 0; j < 4; j++) {
			int d = 0;
			if (j < k) {
				d = b64_value(p[i + j]);
				if (d < 0)
					return -1; /* includes '=' in the middle */
			}
			v = v << 6 | (uint32_t)d;
		}
		if (k == 2 && (v & 0xffff) != 0)
			return -1; /* non-zero bits hidden under the padding */
		if (k == 3 && (v & 0xff) != 0)
			return -1;
		w[o++] = (uint8_t)(v >> 16);
		if (k > 2)
			w[o++] = (uint8_t)(v >> 8);
		if (k > 3)
			w[o++] = (uint8_t)v;
	}
	(void)start;
	buf_commit(out, o);
	return 0;
}
