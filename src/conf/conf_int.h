/*
 * Private to conf/: the option table shared by the parser, -bP and the
 * reference generator, and the value converters they have in common.
 */
#ifndef SLUICE_CONF_INT_H
#define SLUICE_CONF_INT_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

enum conf_type {
	CONF_T_STRING,   /* any text */
	CONF_T_PATH,     /* absolute path */
	CONF_T_LOGFILE,  /* "", "syslog" or an absolute path */
	CONF_T_HOSTNAME, /* a domain name */
	CONF_T_PORTS,    /* list of ports (numbers or service names) */
	CONF_T_ADDRS,    /* list of IPv4/IPv6 addresses */
	CONF_T_DOMAINS,  /* list of domains, "@" = primary_hostname */
	CONF_T_UINT,     /* whole number (K/M/G multipliers accepted) */
	CONF_T_SIZE,     /* byte count with K/M/G suffix */
	CONF_T_TIME,     /* duration with s/m/h/d suffixes, stored in seconds */
	CONF_T_MSEC,     /* duration that also takes "ms", stored in milliseconds */
	CONF_T_CHOICE,   /* one word of .choices (any case), stored as the canonical char * */
	CONF_T_MECHS,    /* list of SASL mechanism names, stored as SASL_MECH_* bits */
	CONF_T_BOOL,     /* yes/no/true/false, stored as bool */
};

/* Storage width of numeric options: the struct conf field type. */
enum conf_width { CONF_W_NONE = 0, CONF_W_UNSIGNED, CONF_W_U64 };

struct conf_option {
	const char *name;
	enum conf_type type;
	enum conf_width width;
	/* Default in configuration syntax, run through the same parser as
	 * the file (so the documented default is exactly what applies);
	 * NULL when it is computed (def_doc then says how). */
	const char *def;
	const char *def_doc;
	bool allow_empty;
	bool secret;         /* -bP shows only whether it is set */
	uint64_t min, max;   /* numeric types only */
	size_t off;          /* value field in struct conf */
	size_t off_n;        /* count field for list types */
	const char *const *choices; /* CONF_T_CHOICE: NULL-terminated */
	const char *help;    /* markdown paragraph(s) for the reference */
};

extern const struct conf_option conf_options[];
extern const size_t conf_n_options;

/* Listener-block settings, for the parser and the reference. */
struct conf_listener_setting {
	const char *name;
	const char *values;  /* accepted values, for messages and docs */
	const char *help;
};
extern const struct conf_listener_setting conf_listener_settings[];
extern const size_t conf_n_listener_settings;

/* Per-role defaults of listener settings. */
#define CONF_MX_MIN_VERSION 0x0301
#define CONF_MX_CIPHERS "DEFAULT:@SECLEVEL=0"
#define CONF_SUB_MIN_VERSION 0x0303
#define CONF_SUB_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
#define CONF_CIPHERSUITES "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

/* Longest logical line (after joining continuations) the lexer accepts. */
#define CONF_LINE_MAX 65536

const struct conf_option *conf_option_find(const char *name);

/* Formatting shared by -bP and the reference (output always re-parses
 * to the same value). */
void conf_format_size(struct buf *out, uint64_t v);
void conf_format_time(struct buf *out, uint64_t seconds);
void conf_format_msec(struct buf *out, uint64_t ms);
/* "PLAIN : LOGIN : SCRAM-SHA-256" for a set of SASL_MECH_* bits. */
void conf_format_mechs(struct buf *out, unsigned bits);
const char *conf_tls_version_name(int v);
const char *conf_role_name(enum conf_role r);
const char *conf_tls_mode_name(enum conf_tls_mode m);
/* Appends the option's effective value in c, in configuration syntax. */
void conf_format_value(struct buf *out, const struct conf *c, const struct conf_option *o);

#endif
