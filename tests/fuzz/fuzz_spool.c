/*
 * Fuzzes the spool envelope parser.  Invariants: it never crashes or
 * leaks; whatever it accepts the writer can write again, and reading that
 * back gives the same envelope, ending where the written text ends.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same_str(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static int same_env(const struct spool_env *a, const struct spool_env *b)
{
	if (strcmp(a->id, b->id) != 0 || a->received != b->received ||
	    !same_str(a->role, b->role) || !same_str(a->client_ip, b->client_ip) ||
	    !same_str(a->helo, b->helo) || !same_str(a->tls_version, b->tls_version) ||
	    !same_str(a->tls_cipher, b->tls_cipher) || !same_str(a->auth_user, b->auth_user) ||
	    !same_str(a->sender, b->sender) || a->body != b->body || a->smtputf8 != b->smtputf8 ||
	    a->ret != b->ret || !same_str(a->envid, b->envid) ||
	    a->size_declared != b->size_declared || a->n_rcpts != b->n_rcpts)
		return 0;
	for (size_t i = 0; i < a->n_rcpts; i++) {
		if (!same_str(a->rcpts[i].addr, b->rcpts[i].addr) ||
		    a->rcpts[i].notify != b->rcpts[i].notify ||
		    !same_str(a->rcpts[i].orcpt, b->rcpts[i].orcpt))
			return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_env env;
	struct err e;
	if (spool_parse_env((const char *)data, size, &env, &e) < 0) {
		/* A refused envelope leaves nothing behind. */
		if (env.role || env.sender || env.rcpts || env.n_rcpts)
			abort();
		return 0;
	}
	if (env.data_offset <= 0 || (size_t)env.data_offset > size ||
	    data[env.data_offset - 1] != '\n' || data[env.data_offset - 2] != '\n')
		abort();
	if (!queue_id_valid(env.id) || env.n_rcpts == 0 || !env.sender || !env.role)
		abort();

	struct buf out;
	buf_init(&out, 4 * 1024 * 1024);
	if (spool_format_env(&env, &out, &e) < 0)
		abort(); /* accepted but not writable: reader and writer disagree */
	/* The writer's form is canonical: never longer than what was read. */
	if (buf_len(&out) > (size_t)env.data_offset)
		abort();
	struct spool_env again;
	if (spool_parse_env((const char *)buf_ptr(&out), buf_len(&out), &again, &e) < 0)
		abort();
	if (!same_env(&env, &again) || (size_t)again.data_offset != buf_len(&out))
		abort();
	spool_env_free(&again);
	spool_env_free(&env);
	buf_free(&out);
	return 0;
}
