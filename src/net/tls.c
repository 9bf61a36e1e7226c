/* TLS with OpenSSL 3: server contexts per listener policy, client contexts
 * for outgoing mail, and non-blocking connections.  The only file that
 * includes OpenSSL. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

struct tls_ctx {
	SSL_CTX *ctx;
	bool client;
	bool verify; /* client: refuse peers whose certificate does not verify */
};

struct tls_conn {
	SSL *ssl;
	bool fatal; /* SSL_ERROR_SSL/SYSCALL seen: no SSL_shutdown allowed */
	bool client;
	bool enforce; /* client with verify: a bad certificate fails the handshake */
	char err[256];
	char verify[160]; /* client: the peer certificate's verdict, set by the handshake */
};

void tls_global_init(void)
{
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS, NULL);
}

const char *tls_library_version(void)
{
	return OpenSSL_version(OPENSSL_VERSION);
}

static void ossl_err(char *out, size_t n)
{
	unsigned long code = ERR_get_error();
	if (code == 0)
		snprintf(out, n, "unknown error");
	else
		ERR_error_string_n(code, out, n);
	ERR_clear_error();
}

/* ALPN (RFC 7301): a client that names the protocols it means to speak
 * and does not name "smtp" was not meant to reach a mail server; it gets
 * the no_application_protocol alert (RFC 7301 3.2), which stops the
 * cross-protocol attacks that send a browser's TLS session here (ALPACA).
 * Mail clients send no ALPN, and are not affected. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char smtp[] = { 4, 's', 'm', 't', 'p' };
	unsigned char *sel = NULL;
	if (SSL_select_next_proto(&sel, outlen, smtp, sizeof(smtp), in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED) {
		*out = sel;
		return SSL_TLSEXT_ERR_OK;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int tls_ctx_new(const struct conf *c, const struct conf_listener *l, struct tls_ctx **out,
		struct err *e)
{
	char why[256];
	*out = NULL;
	if (!c->tls_certificate)
		return err_set(e, "no tls_certificate configured");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return err_set(e, "SSL_CTX_new failed");
	/* Our policy replaces the system-wide defaults (openssl.cnf), so that the
	 * MX port can stay compatible with old MTAs while submission is strict. */
	SSL_CTX_set_min_proto_version(ctx, l->tls_min_version);
	/* IGNORE_UNEXPECTED_EOF: many MTAs close without close_notify; SMTP
	 * frames its own data (the final "."), so truncation cannot go unseen,
	 * and such a close is an EOF, not an error to log. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET |
				 SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
	if (l->tls_ciphers && SSL_CTX_set_cipher_list(ctx, l->tls_ciphers) != 1) {
		ossl_err(why, sizeof(why));
		SSL_CTX_free(ctx);
		return err_set(e, "port %u: tls_ciphers: %s", l->port, why);
	}
	if (l->tls_ciphersuites && SSL_CTX_set_ciphersuites(ctx, l->tls_ciphersuites) != 1) {
		ossl_err(why, sizeof(why));
		SSL_CTX_free(ctx);
		return err_set(e, "port %u: tls_ciphersuites: %s", l->port, why);
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	/* A file that cannot be opened is told in plain words, not as
	 * OpenSSL's error stack. */
	const char *key = c->tls_privatekey ? c->tls_privatekey : c->tls_certificate;
	const char *files[] = { c->tls_certificate, key };
	const char *names[] = { "tls_certificate", "tls_privatekey" };
	for (int i = 0; i < 2; i++) {
		if (access(files[i], R_OK) < 0) {
			int er = errno;
			SSL_CTX_free(ctx);
			return err_set(e, "%s %s cannot be read: %s", names[i], files[i],
				       strerror(er));
		}
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_certificate) != 1) {
		ossl_err(why, sizeof(why));
		SSL_CTX_free(ctx);
		return err_set(e, "tls_certificate %s holds no certificate in PEM form (%s)",
			       c->tls_certificate, why);
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		ossl_err(why, sizeof(why));
		SSL_CTX_free(ctx);
		if (!c->tls_privatekey || strcmp(c->tls_privatekey, c->tls_certificate) == 0)
			return err_set(e, "tls_certificate %s holds no private key, and tls_privatekey "
				       "is not set to another file: set it to the key's file (%s)",
				       c->tls_certificate, why);
		return err_set(e, "tls_privatekey %s holds no private key in PEM form (%s)", key,
			       why);
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		return err_set(e, "tls_privatekey %s does not match tls_certificate %s", key,
			       c->tls_certificate);
	}
	struct tls_ctx *t = xcalloc(1, sizeof(*t));
	t->ctx = ctx;
	*out = t;
	return 0;
}

void tls_ctx_free(struct tls_ctx *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx->ctx);
	if (!ssl)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	struct tls_conn *t = xcalloc(1, sizeof(*t));
	t->ssl = ssl;
	return t;
}

int tls_client_ctx_new(bool verify, const char *ca_file, struct tls_ctx **out, struct err *e)
{
	char why[256];
	*out = NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return err_set(e, "SSL_CTX_new failed");
	/* Opportunistic TLS beats plain text with any version the library
	 * still allows; a peer we insist on authenticating must do better. */
	if (verify)
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* The chain is checked in both modes: without verify the verdict is
	 * only recorded (for logs and Received headers), never enforced. */
	int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
				     : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		ossl_err(why, sizeof(why));
		SSL_CTX_free(ctx);
		return err_set(e, "tls CA %s: %s", ca_file && *ca_file ? ca_file : "(system default)",
			       why);
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	struct tls_ctx *t = xcalloc(1, sizeof(*t));
	t->ctx = ctx;
	t->client = true;
	t->verify = verify;
	*out = t;
	return 0;
}

static bool is_ip_literal(const char *s)
{
	unsigned char a[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

struct tls_conn *tls_conn_new_client(struct tls_ctx *ctx, int fd, const char *sni)
{
	if (!ctx->client)
		return NULL;
	SSL *ssl = SSL_new(ctx->ctx);
	if (!ssl)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	if (sni && *sni) {
		if (is_ip_literal(sni)) {
			/* RFC 6066: no IP literals in server_name; still check the
			 * certificate's IP address entries. */
			if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), sni) != 1)
				goto fail;
		} else {
			if (SSL_set_tlsext_host_name(ssl, sni) != 1)
				goto fail;
			/* Without verify a mismatch only shows in the recorded verdict. */
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			if (SSL_set1_host(ssl, sni) != 1)
				goto fail;
		}
	}
	struct tls_conn *t = xcalloc(1, sizeof(*t));
	t->ssl = ssl;
	t->client = true;
	t->enforce = ctx->verify;
	snprintf(t->verify, sizeof(t->verify), "unverified: no handshake");
	return t;
fail:
	ERR_clear_error();
	SSL_free(ssl);
	return NULL;
}

static void record_verify(struct tls_conn *t)
{
	X509 *peer = SSL_get1_peer_certificate(t->ssl);
	if (!peer) {
		snprintf(t->verify, sizeof(t->verify), "unverified: no certificate");
		return;
	}
	X509_free(peer);
	long v = SSL_get_verify_result(t->ssl);
	if (v == X509_V_OK)
		snprintf(t->verify, sizeof(t->verify), "verified");
	else
		snprintf(t->verify, sizeof(t->verify), "unverified: %s",
			 X509_verify_cert_error_string(v));
}

const char *tls_conn_verify_result(const struct tls_conn *t)
{
	return t->client ? t->verify : "unverified: not a client connection";
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t);
}

static enum tls_io map(struct tls_conn *t, int r)
{
	int code = SSL_get_error(t->ssl, r);
	switch (code) {
	case SSL_ERROR_WANT_READ:
		return TLS_IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_IO_EOF;
	case SSL_ERROR_SYSCALL:
		t->fatal = true;
		if (ERR_peek_error() == 0) {
			snprintf(t->err, sizeof(t->err), "connection closed");
			return TLS_IO_EOF;
		}
		ossl_err(t->err, sizeof(t->err));
		return TLS_IO_ERROR;
	default:
		t->fatal = true;
		ossl_err(t->err, sizeof(t->err));
		return TLS_IO_ERROR;
	}
}

enum tls_io tls_handshake(struct tls_conn *t)
{
	ERR_clear_error();
	/* Client or server as chosen when the connection was made. */
	int r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		if (t->client)
			record_verify(t);
		return TLS_IO_OK;
	}
	if (t->enforce && SSL_get_verify_result(t->ssl) != X509_V_OK) {
		/* A refused certificate: say why, not just "handshake failure". */
		enum tls_io io = map(t, r);
		if (io == TLS_IO_ERROR)
			snprintf(t->err, sizeof(t->err), "certificate: %s",
				 X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
		return io;
	}
	return map(t, r);
}

enum tls_io tls_read(struct tls_conn *t, void *p, size_t n, size_t *got)
{
	ERR_clear_error();
	size_t g = 0;
	int r = SSL_read_ex(t->ssl, p, n, &g);
	if (r == 1) {
		*got = g;
		return TLS_IO_OK;
	}
	return map(t, r);
}

enum tls_io tls_write(struct tls_conn *t, const void *p, size_t n, size_t *put)
{
	ERR_clear_error();
	size_t w = 0;
	int r = SSL_write_ex(t->ssl, p, n, &w);
	if (r == 1) {
		*put = w;
		return TLS_IO_OK;
	}
	return map(t, r);
}

int net_write(int fd, struct tls_conn *t, const void *p, size_t n, size_t *put, short *want,
	      const char **err_text)
{
	*put = 0;
	if (t) {
		enum tls_io r = tls_write(t, p, n, put);
		if (r == TLS_IO_OK)
			return 1;
		if (r == TLS_IO_WANT_READ || r == TLS_IO_WANT_WRITE) {
			*want = r == TLS_IO_WANT_READ ? EV_READ : EV_WRITE;
			return 0;
		}
		*err_text = r == TLS_IO_EOF ? "connection closed" : tls_conn_error(t);
		return -1;
	}
	for (;;) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			*put = (size_t)w;
			return 1;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			*want = EV_WRITE;
			return 0;
		}
		*err_text = w < 0 ? strerror(errno) : "short write";
		return -1;
	}
}

const char *tls_conn_version(const struct tls_conn *t)
{
	return SSL_get_version(t->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
	return c ? SSL_CIPHER_get_name(c) : "none";
}

const char *tls_conn_error(struct tls_conn *t)
{
	return t->err[0] ? t->err : "unknown error";
}

void tls_conn_shutdown(struct tls_conn *t)
{
	/* After a fatal error OpenSSL forbids SSL_shutdown (it could send
	 * on a broken connection state). */
	if (!t || t->fatal)
		return;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl);
	ERR_clear_error();
}
