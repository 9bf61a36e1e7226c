/*
 * Starting a spooled message and writing the header fields sluice adds:
 * shared by the daemon's connections and the one-session modes, so that
 * a message looks the same however it arrived.
 */
#include <stdlib.h>
#include <string.h>

#include "net.h"

int net_message_begin(struct spool *sp, const struct smtp_policy *p,
		      const struct smtp_client *cl, const struct smtp_envelope *env,
		      struct spool_msg **out, char qid[QUEUE_ID_LEN + 1], struct err *e)
{
	struct spool_env se;
	memset(&se, 0, sizeof(se));
	se.role = (char *)smtp_role_name(p->role);
	se.client_ip = (char *)cl->ip;
	se.helo = env->helo ? env->helo : "";
	se.tls_version = (char *)env->tls_version;
	se.tls_cipher = (char *)env->tls_cipher;
	se.auth_user = (char *)env->auth_user;
	se.sender = env->sender ? env->sender : "";
	se.body = env->body;
	se.smtputf8 = env->smtputf8;
	se.ret = env->ret;
	se.envid = env->envid;
	se.size_declared = env->size_declared;
	se.n_rcpts = env->n_rcpts;
	se.rcpts = xcalloc(env->n_rcpts ? env->n_rcpts : 1, sizeof(*se.rcpts));
	for (size_t i = 0; i < env->n_rcpts; i++) {
		se.rcpts[i].addr = env->rcpts[i].addr;
		se.rcpts[i].notify = env->rcpts[i].notify;
		se.rcpts[i].orcpt = env->rcpts[i].orcpt;
	}
	int64_t now = time_now_us();
	int r = spool_msg_begin(sp, &se, now, out, e);
	free(se.rcpts);
	if (r < 0) {
		*out = NULL;
		return -1;
	}
	snprintf(qid, QUEUE_ID_LEN + 1, "%s", spool_msg_id(*out));
	struct buf date, hdr;
	buf_init(&date, 128);
	buf_init(&hdr, 64 * 1024);
	time_rfc5322(&date, now / 1000000);
	smtp_received_header(&hdr, p, cl, env, qid, buf_cstr(&date));
	r = spool_msg_write(*out, buf_ptr(&hdr), buf_len(&hdr), e);
	buf_free(&date);
	buf_free(&hdr);
	if (r < 0) {
		spool_msg_abort(*out);
		*out = NULL;
	}
	return r;
}

void net_missing_headers(struct buf *out, unsigned what, const char *qid, const char *hostname)
{
	if (what & SMTP_ADD_DATE) {
		buf_puts(out, "Date: ");
		time_rfc5322(out, time_now_us() / 1000000);
		buf_puts(out, "\r\n");
	}
	if (what & SMTP_ADD_MESSAGE_ID) {
		uint8_t r[9];
		struct buf rb;
		buf_init(&rb, 64);
		if (rand_bytes(r, sizeof(r)) == 0)
			b64_encode(r, sizeof(r), &rb);
		/* base64 may hold '/' and '+', both fine in a msg-id's id-left;
		 * the queue id alone already makes it unique on this host. */
		buf_printf(out, "Message-ID: <%s.%s@%s>\r\n", qid, buf_cstr(&rb), hostname);
		buf_free(&rb);
	}
}
