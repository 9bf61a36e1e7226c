/*
 * Decodes fuzzed worker/auth-process messages.  Invariants: a decoded
 * message's fields are views inside the input, and re-encoding it gives
 * the input back byte for byte (there is exactly one encoding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct authd_msg m;
	if (authd_decode(data, size, &m) < 0)
		return 0;
	if (m.n > AUTHD_MAX_FIELDS || size > AUTHD_MAX_MSG)
		abort();
	for (size_t i = 0; i < m.n; i++) {
		if (m.f[i].n > size || (m.f[i].n && (m.f[i].p < data ||
						     (size_t)(m.f[i].p - data) > size - m.f[i].n)))
			abort();
	}
	struct buf out;
	buf_init(&out, AUTHD_MAX_MSG);
	if (authd_encode(&out, m.type, m.id, m.n, m.f) < 0)
		abort();
	if (buf_len(&out) != size || memcmp(buf_ptr(&out), data, size) != 0)
		abort();
	/* The result words round-trip too. */
	enum auth_result r;
	if (m.n >= 1 && auth_result_parse(m.f[0].p, m.f[0].n, &r) == 0) {
		const char *w = auth_result_name(r);
		if (strlen(w) != m.f[0].n || memcmp(w, m.f[0].p, m.f[0].n) != 0)
			abort();
	}
	buf_free(&out);
	return 0;
}
