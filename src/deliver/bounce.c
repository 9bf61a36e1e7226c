/*
 * Delivery status notifications: who gets one (RFC 3461 NOTIFY) and the
 * report message itself (RFC 6522 multipart/report carrying an RFC 3464
 * message/delivery-status, or RFC 6533 message/global-delivery-status
 * when an address is UTF-8).
 *
 * Much of what goes into a report came from elsewhere: recipient addresses
 * from clients, reply texts from remote servers, the original message from
 * anyone.  Everything that lands in a header field or a status field is
 * cleaned of control bytes first, so that no remote text can end a field
 * early and write its own; lines are folded or cut before 998 bytes
 * (RFC 5322 2.1.1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver.h"
#include "../smtp/smtp.h"

/* RFC 5322 2.1.1: the hard limit and the polite one. */
#define REPORT_LINE_HARD 998
#define REPORT_LINE_SOFT 78

bool dlv_report_wanted(const char *sender, unsigned notify, enum dlv_action action)
{
	/* RFC 3461 6.1: no DSN is ever sent to the null reverse-path. */
	if (!sender || !sender[0])
		return false;
	if (notify & SMTP_NOTIFY_NEVER)
		return false;
	switch (action) {
	case DLV_FAILED:
		return notify == 0 || (notify & SMTP_NOTIFY_FAILURE);
	case DLV_DELAYED:
		return notify == 0 || (notify & SMTP_NOTIFY_DELAY);
	default:
		/* delivered, relayed, expanded: only on request (RFC 3461 4.1) */
		return (notify & SMTP_NOTIFY_SUCCESS) != 0;
	}
}

/* ---- text hygiene --------------------------------------------------------- */

/*
 * Appends s to out as one line's worth of safe text: CR, LF and every other
 * control byte become a space (so "text\r\nX-Evil: 1" stays inside the
 * field it was put in); bytes above ASCII are kept only as well-formed
 * UTF-8 in a UTF-8 report and are '?' otherwise.
 */
static int report_clean(struct buf *out, const char *s, bool utf8)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (c < 0x20 || c == 0x7f) {
			if (buf_append(out, " ", 1) < 0)
				return -1;
			i++;
		} else if (c < 0x80) {
			if (buf_append(out, &p[i], 1) < 0)
				return -1;
			i++;
		} else {
			size_t l = utf8 ? str_utf8_seq(p + i, n - i) : 0;
			if (l == 0) {
				if (buf_append(out, "?", 1) < 0)
					return -1;
				i++;
			} else {
				if (buf_append(out, p + i, l) < 0)
					return -1;
				i += l;
			}
		}
	}
	return 0;
}

/*
 * Appends head, then the words of v[0..vn) separated by single spaces,
 * folding before a word that would pass the soft limit and cutting any
 * word that alone would pass the hard limit; ends with CRLF.  A head
 * ending in ':' makes a header field, whose continuation lines start with
 * white space (cont, or a space); otherwise head and cont are the indents
 * of a text paragraph.  v holds no control bytes.
 */
static int report_folded(struct buf *out, const char *head, const char *cont, const char *v,
			 size_t vn)
{
	size_t col = strlen(head), cont_len = strlen(cont);
	bool first = true, folded = false;
	bool is_field = col > 0 && head[col - 1] == ':';
	int bad = buf_puts(out, head);
	size_t i = 0;
	while (i < vn && bad == 0) {
		while (i < vn && v[i] == ' ')
			i++;
		if (i >= vn)
			break;
		size_t j = i;
		while (j < vn && v[j] != ' ')
			j++;
		size_t w = j - i;
		bool line_first = first;
		if (!first && col + 1 + w > REPORT_LINE_SOFT) {
			bad |= buf_puts(out, "\r\n");
			bad |= buf_puts(out, cont);
			col = cont_len;
			folded = line_first = true;
		}
		size_t room = REPORT_LINE_HARD - col - 1;
		if (w > room) {
			w = room;
			/* never end inside a UTF-8 sequence */
			while (w > 0 && ((unsigned char)v[i + w] & 0xC0) == 0x80)
				w--;
		}
		/* A word after a field name or another word takes a space, as
		 * does one starting a folded field line; the first word of a
		 * text line follows its indent directly. */
		const char *lead = line_first ? (folded ? cont : head) : NULL;
		size_t ll = lead ? strlen(lead) : 0;
		bool space = !line_first || (ll > 0 && lead[ll - 1] != ' ') ||
			     (ll == 0 && folded && is_field);
		if (space)
			bad |= buf_append(out, " ", 1);
		bad |= buf_append(out, v + i, w);
		col += (space ? 1 : 0) + w;
		first = false;
		i = j;
	}
	bad |= buf_puts(out, "\r\n");
	return bad ? -1 : 0;
}

/* "Name: value" for a value from anywhere: cleaned, folded, CRLF. */
static int report_field(struct buf *out, struct buf *tmp, const char *name, const char *prefix,
			const char *value, bool utf8)
{
	buf_reset(tmp);
	if (prefix && buf_puts(tmp, prefix) < 0)
		return -1;
	if (report_clean(tmp, value, utf8) < 0)
		return -1;
	char head[64];
	size_t hn = strlen(name);
	if (hn + 2 > sizeof(head))
		return -1;
	memcpy(head, name, hn);
	head[hn] = ':';
	head[hn + 1] = '\0';
	return report_folded(out, head, "", (const char *)buf_ptr(tmp), buf_len(tmp));
}

static int report_date_field(struct buf *out, const char *name, int64_t t)
{
	size_t before = buf_len(out);
	if (buf_printf(out, "%s: ", name) < 0)
		return -1;
	time_rfc5322(out, t);
	/* time_rfc5322 cannot report a full buffer: check that it wrote. */
	if (buf_len(out) <= before + strlen(name) + 2)
		return -1;
	return buf_puts(out, "\r\n");
}

/* ---- pieces of the report ------------------------------------------------ */

static const char *report_action_name(enum dlv_action a)
{
	switch (a) {
	case DLV_FAILED: return "failed";
	case DLV_DELAYED: return "delayed";
	case DLV_DELIVERED: return "delivered";
	case DLV_RELAYED: return "relayed";
	default: return "expanded";
	}
}

/* RFC 3463 status-code: class "." subject "." detail, 1-3 digits each. */
static bool report_status_ok(const char *s)
{
	if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (s[d] >= '0' && s[d] <= '9')
			d++;
		if (d == 0 || d > 3)
			return false;
		s += d;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

static const char *report_status(const struct dlv_report_rcpt *rc)
{
	if (report_status_ok(rc->status))
		return rc->status;
	switch (rc->action) {
	case DLV_FAILED: return "5.0.0";
	case DLV_DELAYED: return "4.0.0";
	default: return "2.0.0";
	}
}

static bool report_is_ascii(const char *s)
{
	return !s || !str_has_8bit(s, strlen(s));
}

/*
 * Is the diagnostic an SMTP reply from a server?  RFC 3464 2.3.6 gives
 * diagnostic-type "smtp" to exactly that; anything sluice says itself
 * gets the private type "X-Sluice" (an atom: RFC 3464 allows "X-" types).
 * When the caller does not know, a text that begins like a reply (three
 * digits, then a space, a hyphen or the end) is taken as one.
 */
static bool report_diag_is_smtp(const struct dlv_report_rcpt *rc)
{
	switch (rc->diag_type) {
	case DLV_DIAG_SMTP:
		return true;
	case DLV_DIAG_LOCAL:
		return false;
	default:
		break;
	}
	const char *d = rc->diagnostic;
	if (!d || d[0] < '2' || d[0] > '5' || d[1] < '0' || d[1] > '9' || d[2] < '0' ||
	    d[2] > '9')
		return false;
	return d[3] == ' ' || d[3] == '-' || d[3] == '\0';
}

enum report_kind { REPORT_FAILURE, REPORT_DELAY, REPORT_SUCCESS };

static enum report_kind report_kind_of(const struct dlv_report *r)
{
	bool delayed = false;
	for (size_t i = 0; i < r->n_rcpts; i++) {
		if (r->rcpts[i].action == DLV_FAILED)
			return REPORT_FAILURE;
		if (r->rcpts[i].action == DLV_DELAYED)
			delayed = true;
	}
	return delayed ? REPORT_DELAY : REPORT_SUCCESS;
}

/* Part 1: for people. */
static int report_human(const struct dlv_report *r, enum report_kind kind, bool utf8,
			struct buf *out, struct buf *tmp)
{
	static const char *const intro[] = {
		[REPORT_FAILURE] = "Your message could not be delivered to one or more of its "
				   "recipients. The mail system will not try again for them.",
		[REPORT_DELAY] = "Your message has not yet been delivered to one or more of its "
				 "recipients. The mail system keeps trying; there is no need to "
				 "send it again. You will be told if delivery finally fails.",
		[REPORT_SUCCESS] = "Your message was delivered as listed below; you asked to be "
				   "told.",
	};
	int bad = 0;
	buf_reset(tmp);
	bad |= buf_puts(tmp, "This is the mail system at host ");
	bad |= report_clean(tmp, r->reporting_mta, utf8);
	bad |= buf_puts(tmp, ".");
	bad |= report_folded(out, "", "", (const char *)buf_ptr(tmp), buf_len(tmp));
	bad |= buf_puts(out, "\r\n");
	bad |= report_folded(out, "", "", intro[kind], strlen(intro[kind]));
	bad |= buf_puts(out, "\r\n");
	bad |= report_folded(out, "", "", "A machine-readable report and the original message "
				   "(or its header) are attached.",
			     strlen("A machine-readable report and the original message "
				    "(or its header) are attached."));
	for (size_t i = 0; i < r->n_rcpts && bad == 0; i++) {
		const struct dlv_report_rcpt *rc = &r->rcpts[i];
		bad |= buf_puts(out, "\r\n");
		buf_reset(tmp);
		bad |= buf_puts(tmp, "<");
		bad |= report_clean(tmp, rc->addr, utf8);
		bad |= buf_printf(tmp, ">: %s (%s)", report_action_name(rc->action),
				  report_status(rc));
		bad |= report_folded(out, "  ", "     ", (const char *)buf_ptr(tmp),
				     buf_len(tmp));
		if (rc->diagnostic) {
			buf_reset(tmp);
			/* "said" only of what the server did say. */
			if (rc->remote_mta) {
				bool said = report_diag_is_smtp(rc);
				if (!said)
					bad |= buf_puts(tmp, "delivery to ");
				bad |= report_clean(tmp, rc->remote_mta, utf8);
				bad |= buf_puts(tmp, said ? " said: " : ": ");
			}
			bad |= report_clean(tmp, rc->diagnostic, utf8);
			bad |= report_folded(out, "    ", "       ", (const char *)buf_ptr(tmp),
					     buf_len(tmp));
		}
	}
	return bad ? -1 : 0;
}

/* Part 2: for programs (RFC 3464 section 2). */
/* The host name in "mx.example.net[192.0.2.1]" for Remote-MTA, whose type
 * dns wants one (RFC 3464 2.3.5); false for what has none: an LMTP unix
 * socket's path, a bare address. */
static bool report_mta_name(const char *mta, char *out, size_t n)
{
	if (!mta || mta[0] == '/' || mta[0] == '[')
		return false;
	size_t len = strcspn(mta, "[");
	if (len == 0 || len >= n)
		return false;
	bool letter = false;
	for (size_t i = 0; i < len; i++) {
		char c = mta[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		if (!alpha && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_')
			return false; /* an IPv6 address, or no name at all */
		letter |= alpha;
	}
	if (!letter)
		return false; /* an IPv4 address */
	memcpy(out, mta, len);
	out[len] = 0;
	return true;
}

static int report_status_part(const struct dlv_report *r, bool utf8, struct buf *out,
			      struct buf *tmp)
{
	int bad = 0;
	bad |= report_field(out, tmp, "Reporting-MTA", "dns; ", r->reporting_mta, utf8);
	if (r->queue_id)
		bad |= report_field(out, tmp, "X-Sluice-Queue-ID", NULL, r->queue_id, false);
	if (r->envid)
		bad |= report_field(out, tmp, "Original-Envelope-Id", NULL, r->envid, utf8);
	bad |= report_date_field(out, "Arrival-Date", r->arrival);
	for (size_t i = 0; i < r->n_rcpts && bad == 0; i++) {
		const struct dlv_report_rcpt *rc = &r->rcpts[i];
		bad |= buf_puts(out, "\r\n");
		/* ORCPT is "addr-type;xtext" exactly as the client sent it:
		 * RFC 3464 2.3.1 wants it back unchanged. */
		if (rc->orcpt)
			bad |= report_field(out, tmp, "Original-Recipient", NULL, rc->orcpt, utf8);
		/* RFC 6533 3: a UTF-8 mailbox is of address type utf-8. */
		bad |= report_field(out, tmp, "Final-Recipient",
				    report_is_ascii(rc->addr) ? "rfc822; " : "utf-8; ", rc->addr,
				    utf8);
		bad |= buf_printf(out, "Action: %s\r\nStatus: %s\r\n", report_action_name(rc->action),
				  report_status(rc));
		char mta[256];
		if (report_mta_name(rc->remote_mta, mta, sizeof(mta)))
			bad |= report_field(out, tmp, "Remote-MTA", "dns; ", mta, utf8);
		if (rc->diagnostic)
			bad |= report_field(out, tmp, "Diagnostic-Code",
					    report_diag_is_smtp(rc) ? "smtp; " : "X-Sluice; ",
					    rc->diagnostic, utf8);
		if (rc->action == DLV_FAILED || rc->action == DLV_DELAYED)
			bad |= report_date_field(out, "Last-Attempt-Date", r->now);
	}
	return bad ? -1 : 0;
}

/* Length of the header block of a message: up to, not including, the
 * empty line (CRLF or bare LF); the whole message if there is none. */
static size_t report_header_len(const char *m, size_t n)
{
	size_t pos = 0;
	while (pos < n) {
		if (m[pos] == '\n' || (m[pos] == '\r' && pos + 1 < n && m[pos + 1] == '\n'))
			return pos;
		const char *nl = memchr(m + pos, '\n', n - pos);
		if (!nl)
			return n;
		pos = (size_t)(nl - m) + 1;
	}
	return n;
}

/* The longest prefix of m[0..n) that ends at a line end and has at most
 * max bytes; all of it if it fits. */
static size_t report_cut(const char *m, size_t n, uint64_t max)
{
	if ((uint64_t)n <= max)
		return n;
	size_t lim = (size_t)max;
	while (lim > 0 && m[lim - 1] != '\n')
		lim--;
	return lim;
}

/*
 * The boundary: a fixed stem from the queue id plus an 8-digit hex
 * counter.  Every line of the parts that starts with "--<stem>" and eight
 * hex digits rules out that counter; with k such lines one of the first
 * k + 1 counters is free, so the search always ends, in linear time.
 */
static int report_boundary(const char *queue_id, const struct buf *parts[], size_t n_parts,
			   const char *orig, size_t orig_len, char *out, size_t out_size)
{
	char stem[64];
	size_t sl = 0;
	const char *pre = "=_sluice_";
	memcpy(stem, pre, strlen(pre));
	sl = strlen(pre);
	/* bchars only (RFC 2046 5.1.1); the id normally is [0-9a-v-]. */
	for (const char *q = queue_id ? queue_id : ""; *q && sl < 40; q++) {
		char c = *q;
		if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    c == '-')
			stem[sl++] = c;
	}
	stem[sl++] = '_';
	stem[sl] = '\0';

	const char *texts[8];
	size_t lens[8];
	size_t nt = 0;
	for (size_t i = 0; i < n_parts && nt < 7; i++) {
		texts[nt] = (const char *)buf_ptr(parts[i]);
		lens[nt++] = buf_len(parts[i]);
	}
	texts[nt] = orig;
	lens[nt++] = orig_len;

	/* Pass 1: how many lines could collide at all. */
	size_t hits = 0;
	for (int pass = 0; pass < 2; pass++) {
		uint8_t *taken = NULL;
		if (pass == 1)
			taken = xcalloc(hits / 8 + 1, 1);
		for (size_t t = 0; t < nt; t++) {
			const char *s = texts[t];
			size_t n = lens[t];
			size_t pos = 0;
			while (pos < n) {
				if (n - pos >= 2 + sl + 8 && s[pos] == '-' && s[pos + 1] == '-' &&
				    memcmp(s + pos + 2, stem, sl) == 0) {
					if (pass == 0) {
						hits++;
					} else {
						uint64_t v = 0;
						bool hex = true;
						for (size_t k = 0; k < 8 && hex; k++) {
							char c = s[pos + 2 + sl + k];
							int d = c >= '0' && c <= '9'   ? c - '0'
								: c >= 'a' && c <= 'f' ? c - 'a' + 10
											: -1;
							if (d < 0)
								hex = false;
							v = v * 16 + (uint64_t)(d < 0 ? 0 : d);
						}
						if (hex && v <= hits)
							taken[v / 8] |= (uint8_t)(1u << (v % 8));
					}
				}
				const char *nl = memchr(s + pos, '\n', n - pos);
				if (!nl)
					break;
				pos = (size_t)(nl - s) + 1;
			}
		}
		if (pass == 1) {
			size_t v = 0;
			while (taken[v / 8] & (1u << (v % 8)))
				v++;
			free(taken);
			/* hits is bounded by the bytes scanned, far below 2^32. */
			int w = snprintf(out, out_size, "%s%08zx", stem, v);
			if (w < 0 || (size_t)w >= out_size)
				return -1;
		}
	}
	return 0;
}

/*
 * The original as a body part.  The spool holds CRLF lines, but the
 * report must hold them whatever it is given: a bare LF becomes CRLF, a
 * bare CR a space (so that no line starts where the boundary search did
 * not look), and a line is cut at 998 characters (RFC 5322 2.1.1) rather
 * than split.  Ends with a line end: the CRLF before a delimiter belongs
 * to the delimiter (RFC 2046 5.1.1).
 */
static int append_original(struct buf *out, const char *p, size_t n)
{
	int bad = 0;
	size_t line = 0, i = 0;
	while (i < n) {
		size_t run = 0;
		while (i + run < n && p[i + run] != '\r' && p[i + run] != '\n')
			run++;
		if (run > 0) {
			size_t room = line < 998 ? 998 - line : 0;
			bad |= buf_append(out, p + i, run < room ? run : room);
			line += run;
			i += run;
			continue;
		}
		if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') {
			bad |= buf_puts(out, "\r\n");
			line = 0;
			i += 2;
		} else if (p[i] == '\n') {
			bad |= buf_puts(out, "\r\n");
			line = 0;
			i++;
		} else {
			if (line < 998)
				bad |= buf_puts(out, " ");
			line++;
			i++;
		}
	}
	if (line > 0)
		bad |= buf_puts(out, "\r\n");
	return bad;
}

int dlv_report_compose(const struct dlv_report *r, const char *orig, size_t orig_len,
		       struct buf *out, struct err *e)
{
	if (!r->to || !r->to[0])
		return err_set(e, "report: no recipient (null sender)");
	if (r->n_rcpts == 0 || !r->rcpts)
		return err_set(e, "report: no recipients to report on");
	if (!r->reporting_mta || !r->reporting_mta[0] || !r->message_id || !r->message_id[0])
		return err_set(e, "report: reporting MTA and Message-ID are required");
	for (size_t i = 0; i < r->n_rcpts; i++)
		if (!r->rcpts[i].addr || !r->rcpts[i].addr[0])
			return err_set(e, "report: recipient %zu has no address", i);
	if (!orig)
		orig_len = 0;

	/* RFC 6533: UTF-8 addresses need the global status type. */
	bool utf8 = !report_is_ascii(r->to);
	for (size_t i = 0; i < r->n_rcpts; i++)
		if (!report_is_ascii(r->rcpts[i].addr) || !report_is_ascii(r->rcpts[i].orcpt))
			utf8 = true;

	enum report_kind kind = report_kind_of(r);
	size_t keep = buf_len(out);
	struct buf human, status, tmp;
	buf_init(&human, out->max);
	buf_init(&status, out->max);
	buf_init(&tmp, out->max);
	int bad = 0;
	bad |= report_human(r, kind, utf8, &human, &tmp);
	bad |= report_status_part(r, utf8, &status, &tmp);
	if (bad) {
		bad = err_set(e, "report: too large");
		goto done;
	}

	/* Part 3: the whole original if it fits, else (or when only the
	 * header was asked for) its header block. */
	size_t hlen = report_header_len(orig, orig_len);
	bool whole = !r->headers_only && (uint64_t)orig_len <= r->return_max;
	size_t p3len = whole ? orig_len : report_cut(orig, hlen, r->return_max);
	bool p3_8bit = str_has_8bit(orig, p3len);
	/* message/rfc822 and text/rfc822-headers hold ASCII header fields
	 * only (RFC 2046 5.2.1): UTF-8 in them (RFC 6532) makes the part
	 * message/global(-headers) (RFC 6533 6), whatever the addresses. */
	bool global = (utf8 && p3_8bit) || str_has_8bit(orig, hlen < p3len ? hlen : p3len);
	const char *p3type;
	if (whole)
		p3type = global ? "message/global" : "message/rfc822";
	else
		p3type = global ? "message/global-headers" : "text/rfc822-headers";

	char boundary[96];
	const struct buf *parts[] = { &human, &status };
	if (report_boundary(r->queue_id, parts, 2, orig, p3len, boundary, sizeof(boundary)) < 0) {
		bad = err_set(e, "report: no boundary");
		goto done;
	}
	bool any_8bit = p3_8bit || str_has_8bit(buf_ptr(&human), buf_len(&human)) ||
			str_has_8bit(buf_ptr(&status), buf_len(&status));

	static const char *const subjects[] = {
		[REPORT_FAILURE] = "Undelivered Mail Returned to Sender",
		[REPORT_DELAY] = "Delayed Mail (still being retried)",
		[REPORT_SUCCESS] = "Successful Mail Delivery Report",
	};
	buf_reset(&tmp);
	bad |= buf_puts(&tmp, "Mail Delivery System <MAILER-DAEMON@");
	bad |= report_clean(&tmp, r->reporting_mta, utf8);
	bad |= buf_puts(&tmp, ">");
	bad |= report_folded(out, "From:", "", (const char *)buf_ptr(&tmp), buf_len(&tmp));
	buf_reset(&tmp);
	bad |= buf_puts(&tmp, "<");
	bad |= report_clean(&tmp, r->to, utf8);
	bad |= buf_puts(&tmp, ">");
	bad |= report_folded(out, "To:", "", (const char *)buf_ptr(&tmp), buf_len(&tmp));
	bad |= buf_printf(out, "Subject: %s\r\n", subjects[kind]);
	bad |= report_date_field(out, "Date", r->now);
	buf_reset(&tmp);
	bad |= buf_puts(&tmp, "<");
	bad |= report_clean(&tmp, r->message_id, false);
	bad |= buf_puts(&tmp, ">");
	bad |= report_folded(out, "Message-ID:", "", (const char *)buf_ptr(&tmp), buf_len(&tmp));
	bad |= buf_puts(out, "MIME-Version: 1.0\r\n");
	/* RFC 3834 5: marks the report as automatic, so that responders and
	 * vacation programs do not answer it. */
	bad |= buf_puts(out, "Auto-Submitted: auto-replied\r\n");
	bad |= buf_printf(out,
			  "Content-Type: multipart/report; report-type=%s;\r\n"
			  "\tboundary=\"%s\"\r\n",
			  utf8 ? "global-delivery-status" : "delivery-status", boundary);
	if (any_8bit)
		bad |= buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	bad |= buf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	bad |= buf_printf(out, "--%s\r\nContent-Description: Notification\r\n"
			       "Content-Type: text/plain; charset=utf-8\r\n",
			  boundary);
	if (str_has_8bit(buf_ptr(&human), buf_len(&human)))
		bad |= buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	bad |= buf_puts(out, "\r\n");
	bad |= buf_append(out, buf_ptr(&human), buf_len(&human));

	bad |= buf_printf(out, "\r\n--%s\r\nContent-Description: Delivery report\r\n"
			       "Content-Type: %s\r\n",
			  boundary,
			  utf8 ? "message/global-delivery-status" : "message/delivery-status");
	if (str_has_8bit(buf_ptr(&status), buf_len(&status)))
		bad |= buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	bad |= buf_puts(out, "\r\n");
	bad |= buf_append(out, buf_ptr(&status), buf_len(&status));

	bad |= buf_printf(out, "\r\n--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n",
			  boundary, whole ? "Undelivered message" : "Message header", p3type);
	if (p3_8bit)
		bad |= buf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
	bad |= buf_puts(out, "\r\n");
	bad |= append_original(out, orig, p3len);
	bad |= buf_printf(out, "\r\n--%s--\r\n", boundary);
	if (bad)
		bad = err_set(e, "report: too large");

done:
	if (bad)
		out->len = out->off + keep;
	buf_free(&human);
	buf_free(&status);
	buf_free(&tmp);
	return bad ? -1 : 0;
}
