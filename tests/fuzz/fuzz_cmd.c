/*
 * Fuzzes the command-line parsers: smtp_parse_cmd, smtp_parse_params and
 * the xtext codec, checking their documented invariants.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const char *v, size_t vl, const char *base, size_t n)
{
	return v >= base && vl <= n && (size_t)(v - base) <= n - vl;
}

static const char *const fuzz_verbs[] = {
	"", "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP",
	"QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH",
};

static void check_cmd(const char *line, size_t n)
{
	struct smtp_cmd cmd;
	smtp_parse_cmd(line, n, &cmd);
	if (cmd.arg_len > n)
		abort();
	if (cmd.arg_len > 0) {
		if (!inside(cmd.arg, cmd.arg_len, line, n))
			abort();
		if (cmd.arg[0] == ' ' || cmd.arg[cmd.arg_len - 1] == ' ')
			abort();
	}
	if ((unsigned)cmd.verb >= sizeof(fuzz_verbs) / sizeof(fuzz_verbs[0]))
		abort();
	if (cmd.verb != SMTP_CMD_UNKNOWN) {
		const char *name = fuzz_verbs[cmd.verb];
		size_t vl = strlen(name);
		if (n < vl || !str_has_prefix_nocase(line, n, name))
			abort();
		if (n > vl && line[vl] != ' ')
			abort();
	}
}

static bool key_char(unsigned char c, bool first)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return true;
	return !first && c == '-';
}

static void check_params(const char *p, size_t n, bool utf8)
{
	struct smtp_param pa[SMTP_MAX_PARAMS];
	size_t count = 0;
	if (smtp_parse_params(p, n, utf8, pa, &count) < 0)
		return;
	if (count > SMTP_MAX_PARAMS)
		abort();
	for (size_t k = 0; k < count; k++) {
		if (pa[k].key_len == 0 || !inside(pa[k].key, pa[k].key_len, p, n))
			abort();
		for (size_t j = 0; j < pa[k].key_len; j++)
			if (!key_char((unsigned char)pa[k].key[j], j == 0))
				abort();
		if (pa[k].value) {
			if (pa[k].value_len == 0 || !inside(pa[k].value, pa[k].value_len, p, n))
				abort();
			if (pa[k].value != pa[k].key + pa[k].key_len + 1)
				abort();
			for (size_t j = 0; j < pa[k].value_len; j++) {
				unsigned char c = (unsigned char)pa[k].value[j];
				if (c <= ' ' || c == '=' || c == 0x7f || (c >= 0x80 && !utf8))
					abort();
			}
		}
		if (k > 0 && pa[k].key <= pa[k - 1].key)
			abort();
	}
}

/* buf_ptr of a never-grown buffer would be NULL + 0. */
static const uint8_t *bp(const struct buf *b)
{
	return b->data ? buf_ptr(b) : (const uint8_t *)"";
}

static void check_xtext(const uint8_t *data, size_t size)
{
	struct buf enc, dec, again;
	buf_init(&enc, 3 * size + 1);
	buf_init(&dec, size + 1);
	buf_init(&again, 3 * size + 1);

	/* Encoding any bytes gives canonical xtext that decodes back. */
	if (smtp_xtext_encode(data, size, &enc) < 0)
		abort();
	if (buf_len(&enc) < size || buf_len(&enc) > 3 * size)
		abort();
	for (size_t k = 0; k < buf_len(&enc); k++) {
		uint8_t c = bp(&enc)[k];
		if (c < 33 || c > 126 || c == '=')
			abort();
	}
	if (smtp_xtext_decode((const char *)bp(&enc), buf_len(&enc), &dec) < 0)
		abort();
	if (buf_len(&dec) != size || (size && memcmp(bp(&dec), data, size) != 0))
		abort();

	/* Decoding the input as xtext: the result re-encodes to an xtext
	 * that decodes to the same bytes. */
	buf_reset(&dec);
	buf_reset(&enc);
	if (smtp_xtext_decode((const char *)data, size, &dec) == 0) {
		if (buf_len(&dec) > size)
			abort();
		if (smtp_xtext_encode(bp(&dec), buf_len(&dec), &enc) < 0)
			abort();
		if (smtp_xtext_decode((const char *)bp(&enc), buf_len(&enc), &again) < 0)
			abort();
		if (buf_len(&again) != buf_len(&dec) ||
		    (buf_len(&dec) && memcmp(bp(&again), bp(&dec), buf_len(&dec)) != 0))
			abort();
		/* Canonical text is its own encoding. */
		buf_reset(&again);
		if (smtp_xtext_encode(bp(&dec), buf_len(&dec), &again) < 0 ||
		    buf_len(&again) != buf_len(&enc))
			abort();
	} else if (buf_len(&dec) != 0) {
		abort(); /* a failed decode must leave the buffer untouched */
	}

	buf_free(&enc);
	buf_free(&dec);
	buf_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	check_cmd(line, size);

	struct smtp_cmd cmd;
	smtp_parse_cmd(line, size, &cmd);
	if (cmd.arg_len > 0) {
		check_params(cmd.arg, cmd.arg_len, false);
		check_params(cmd.arg, cmd.arg_len, true);
	}
	check_params(line, size, false);
	check_params(line, size, true);

	check_xtext(data, size);
	return 0;
}
