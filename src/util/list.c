/* Exim-style list splitting (see util.h for the syntax). */
#include <stdlib.h>
#include <string.h>

#include "util.h"

int list_foreach(const char *list, int (*fn)(const char *item, void *arg), void *arg)
{
	char sep = ':';
	const char *p = list;
	while (*p == ' ' || *p == '\t')
		p++;
	if (p[0] == '<' && p[1] != '\0' && p[1] != ' ' && p[1] != '\t') {
		sep = p[1];
		p += 2;
	}
	struct buf item;
	buf_init(&item, strlen(list) + 1);
	int rc = 0;
	for (;;) {
		buf_reset(&item);
		while (*p) {
			if (*p == sep) {
				/* A doubled default separator is a literal one. */
				if (sep == ':' && p[1] == ':') {
					buf_append(&item, p, 1);
					p += 2;
					continue;
				}
				break;
			}
			buf_append(&item, p, 1);
			p++;
		}
		const char *s = buf_cstr(&item);
		if (!s) {
			rc = -1;
			break;
		}
		size_t n = strlen(s);
		while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
			n--;
		while (n > 0 && (*s == ' ' || *s == '\t')) {
			s++;
			n--;
		}
		if (n > 0) {
			char *t = str_ndup(s, n);
			int r = fn(t, arg);
			free(t);
			if (r < 0) {
				rc = -1;
				break;
			}
		}
		if (*p == '\0')
			break;
		p++; /* the separator */
	}
	buf_free(&item);
	return rc;
}
