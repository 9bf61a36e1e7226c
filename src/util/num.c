/* Numbers, sizes and times as the configuration and the ACLs write them;
 * one set of parsers so that both accept exactly the same forms. */
#include <ctype.h>

#include "util.h"

int num_parse_u64(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	uint64_t v = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	while (isdigit((unsigned char)*s)) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
		s++;
	}
	*sp = s;
	*out = v;
	return 0;
}

/* A number with an optional K, M or G (powers of 1024) multiplier. */
int num_parse_size(const char *s, uint64_t *out)
{
	uint64_t v;
	if (num_parse_u64(&s, &v) < 0)
		return -1;
	unsigned shift = 0;
	switch (*s) {
	case 'k': case 'K': shift = 10; s++; break;
	case 'm': case 'M': shift = 20; s++; break;
	case 'g': case 'G': shift = 30; s++; break;
	default: break;
	}
	if (*s != '\0')
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

/*
 * A plain number of seconds, or number+unit groups such as "1h30m".  With
 * ms, the result is in milliseconds and "ms" is a unit too; a plain
 * number still means seconds, as for every other time.
 */
int num_parse_time(const char *s, bool ms, uint64_t *out)
{
	uint64_t total = 0, v;
	uint64_t scale = ms ? 1000 : 1;
	if (num_parse_u64(&s, &v) < 0)
		return -1;
	if (*s == '\0') {
		if (v > UINT64_MAX / scale)
			return -1;
		*out = v * scale;
		return 0;
	}
	for (;;) {
		uint64_t mul;
		switch (*s) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		default: return -1;
		}
		mul *= scale;
		if (ms && s[0] == 'm' && s[1] == 's') {
			mul = 1;
			s++;
		}
		s++;
		if (v > (UINT64_MAX - total) / mul)
			return -1;
		total += v * mul;
		if (*s == '\0')
			break;
		if (num_parse_u64(&s, &v) < 0)
			return -1;
	}
	*out = total;
	return 0;
}
