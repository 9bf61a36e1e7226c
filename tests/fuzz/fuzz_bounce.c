/*
 * Fuzz target for the RFC 3464 report composer: the original message and
 * the remote server's diagnostic text are hostile.  Invariants: the
 * report is composed, every line ends in CRLF with no bare CR or LF, and
 * no line is longer than RFC 5322's 998 characters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	/* First byte: flags; then diagnostic up to the first NUL; the rest is
	 * the original message. */
	uint8_t flags = data[0];
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	const uint8_t *nul = memchr(p, 0, n);
	size_t dlen = nul ? (size_t)(nul - p) : n;
	char *diag = malloc(dlen + 1);
	memcpy(diag, p, dlen);
	diag[dlen] = 0;
	const char *orig = nul ? (const char *)nul + 1 : "";
	size_t olen = nul ? n - dlen - 1 : 0;

	struct dlv_report_rcpt rc[2] = {
		{ "a@example.org", (flags & 1) ? "rfc822;A@example.org" : NULL,
		  (flags & 2) ? DLV_DELAYED : DLV_FAILED, (flags & 4) ? diag : "5.1.1",
		  (flags & 8) ? diag : "mx.example.org", diag,
		  (olen & 1) ? DLV_DIAG_LOCAL : (olen & 2) ? DLV_DIAG_SMTP : DLV_DIAG_GUESS },
		{ (flags & 16) ? "\xc3\xa9t\xc3\xa9@example.org" : "b@example.org", NULL,
		  DLV_FAILED, "5.0.0", NULL, NULL, DLV_DIAG_GUESS },
	};
	struct dlv_report r = {
		.reporting_mta = "mx.example.net", .queue_id = "1kq3vb0d4a8-00c3f-00",
		.envid = (flags & 32) ? diag : NULL, .arrival = 1700000000, .now = 1700003600,
		.to = "sender@example.net", .message_id = "x@mx.example.net",
		.rcpts = rc, .n_rcpts = (flags & 64) ? 2 : 1,
		.headers_only = flags & 128, .return_max = 4096,
	};
	struct buf out;
	buf_init(&out, 1u << 20);
	struct err e;
	if (dlv_report_compose(&r, orig, olen, &out, &e) != 0)
		abort();
	const uint8_t *b = buf_ptr(&out);
	size_t len = buf_len(&out), line = 0;
	for (size_t i = 0; i < len; i++) {
		if (b[i] == '\r') {
			if (i + 1 >= len || b[i + 1] != '\n')
				abort();
			i++;
			line = 0;
			continue;
		}
		if (b[i] == '\n')
			abort();
		if (++line > 998)
			abort();
	}
	buf_free(&out);
	free(diag);
	return 0;
}
