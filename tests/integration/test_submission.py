"""Message submission (RFC 6409) on 587 (STARTTLS) and 465 (TLS on
connect): AUTH before MAIL, the sender addresses a login owns, relaying for
authenticated users, the header fields added to submitted messages, and the
Received: field."""
import os
import re
import smtplib
import subprocess

import pytest

from conftest import AUTH_USERS
from helpers import (
    Client,
    auth_plain,
    auth_scram,
    client_ctx,
    header_fields,
    open_session,
    received_field,
    write_file,
)

ALICE = "alice@test.example"
BOB = "bob"
CAROL = "carol@other.example"

PORTS = ["sub", "smtps"]


def pw(user):
    return AUTH_USERS[user][0]


def session(d, port, user=None):
    c = open_session(d, port)
    if user is not None:
        if user == BOB:
            r = auth_scram(c, BOB, pw(BOB)).reply
        else:
            r = auth_plain(c, user, pw(user))
        assert r.code == 235, r
    return c


@pytest.fixture
def policy_daemon(auth_daemon, test_dir):
    """Aliases and sender grants for the sender-ownership tests."""
    def start(**kw):
        aliases = write_file(os.path.join(test_dir, "aliases"),
                             "# local aliases\nsales: bob\ninfo: alice@test.example, "
                             "friend@elsewhere.example\n")
        virtual = write_file(os.path.join(test_dir, "virtual"),
                             "team@other.example   alice@test.example\n"
                             "desk@test.example    carol@other.example\n")
        senders = write_file(os.path.join(test_dir, "senders"),
                             "alice@test.example: boss@test.example, *@partner.example\n"
                             "bob: shared@elsewhere.example\n")
        return auth_daemon(aliases_file=aliases, virtual_alias_file=virtual,
                           submission_senders_file=senders, **kw)
    return start


# ---- AUTH first ------------------------------------------------------------

@pytest.mark.parametrize("port", PORTS)
def test_mail_before_auth_530(auth_daemon, port):
    d = auth_daemon()
    with session(d, port) as c:
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code in (503, 530), r
        r = c.cmd("DATA")
        assert r.code in (503, 530, 554), r
    assert d.queue_ids() == []


def test_no_backend_refuses_mail(start_daemon):
    d = start_daemon(auth_backend="none")
    with session(d, "smtps") as c:
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code != 235, r


# ---- sender ownership ------------------------------------------------------

OWNED = [
    (ALICE, ALICE),
    (ALICE, "alice@TEST.EXAMPLE"),
    (ALICE, ""),
    (ALICE, "info@test.example"),          # aliases_file -> alice@test.example
    (ALICE, "info@other.example"),         # aliases_file applies to every local domain
    (ALICE, "team@other.example"),         # virtual_alias_file
    (ALICE, "boss@test.example"),          # submission_senders_file
    (ALICE, "anyone@partner.example"),     # *@domain grant
    (BOB, "bob@test.example"),             # bare login at each local domain
    (BOB, "bob@other.example"),
    (BOB, "sales@test.example"),           # alias to the bare login
    (BOB, "shared@elsewhere.example"),
    (CAROL, CAROL),
    (CAROL, "desk@test.example"),
]

NOT_OWNED = [
    (ALICE, "alice@other.example"),        # an address login is not a bare name
    (ALICE, "alice@elsewhere.example"),
    (ALICE, "bob@test.example"),
    (ALICE, "sales@test.example"),
    (ALICE, "anyone@sub.partner.example"),
    (ALICE, "postmaster@test.example"),
    (BOB, "bob@elsewhere.example"),
    (BOB, ALICE),
    (BOB, "info@test.example"),
    (BOB, "boss@test.example"),
    (CAROL, "carol@test.example"),
    (CAROL, "info@test.example"),
    (CAROL, "alice%test.example@other.example"),
]


@pytest.mark.parametrize("user,sender", OWNED)
def test_sender_owned(policy_daemon, user, sender):
    d = policy_daemon()
    with session(d, "smtps", user) as c:
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.code == 250, (user, sender, r)
        assert c.cmd("RCPT TO:<someone@elsewhere.example>").code == 250


@pytest.mark.parametrize("user,sender", NOT_OWNED)
def test_sender_not_owned_553(policy_daemon, user, sender):
    d = policy_daemon()
    with session(d, "sub", user) as c:
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.code == 553 and r.enhanced == "5.7.1", (user, sender, r)
        # The session goes on with an owned address.
        own = "bob@test.example" if user == BOB else user
        assert c.cmd("MAIL FROM:<%s>" % own).code == 250
    ev = d.wait_event("refused")
    assert any(e.get("reply", "").startswith("553 5.7.1") for e in ev), ev


def test_sender_checked_after_auth_on_mx_listener(policy_daemon):
    # An MX listener with auth = yes: a login there sends only as an
    # address it owns, as on the submission ports; servers that do not
    # authenticate still send as anyone (ordinary MX traffic).
    d = policy_daemon(mx_auth="yes")
    c = Client(d.mx)
    c.ehlo()
    c.starttls()
    assert auth_plain(c, CAROL, pw(CAROL)).code == 235
    r = c.cmd("MAIL FROM:<alice@test.example>")
    assert r.code == 553 and r.enhanced == "5.7.1", r
    assert c.cmd("MAIL FROM:<%s>" % CAROL).code == 250
    c.close()
    c = Client(d.mx)
    c.ehlo()
    assert c.cmd("MAIL FROM:<alice@test.example>").code == 250
    assert c.cmd("RCPT TO:<alice@test.example>").code == 250
    c.close()


# ---- relaying ---------------------------------------------------------------

RELAY_FORMS = [
    "user@elsewhere.example",
    "user%other@test.example",
    '"a@b"@test.example',
    "@route.example:user@test.example",
    "user!x@test.example",
    "user@[127.0.0.1]",
]


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("rcpt", RELAY_FORMS)
def test_authenticated_relay(auth_daemon, port, rcpt):
    d = auth_daemon()
    with session(d, port, ALICE) as c:
        assert c.cmd("MAIL FROM:<%s>" % ALICE).code == 250
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 250, (rcpt, r)


def test_submission_to_unknown_local_user_still_accepted_or_refused_cleanly(auth_daemon):
    """A submitted message to a local address that does not exist: the
    submission port may accept it (bounce later) or refuse it with 550
    5.1.1, never with a relay error."""
    d = auth_daemon()
    with session(d, "smtps", ALICE) as c:
        assert c.cmd("MAIL FROM:<%s>" % ALICE).code == 250
        r = c.cmd("RCPT TO:<nobody@test.example>")
        assert r.code == 250 or (r.code == 550 and r.enhanced == "5.1.1"), r


# ---- the submitted message -------------------------------------------------

def submit(c, body, sender=ALICE, rcpts=("friend@elsewhere.example",)):
    assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
    for rc in rcpts:
        assert c.cmd("RCPT TO:<%s>" % rc).code == 250
    assert c.cmd("DATA").code == 354
    c.send(body + b".\r\n")
    r = c.reply(timeout=15)
    assert r.code == 250 and r.queue_id, r
    return r.queue_id


BARE = b"From: alice@test.example\r\nTo: friend@elsewhere.example\r\nSubject: bare\r\n\r\nHi.\r\n"
FULL = (b"From: alice@test.example\r\nTo: friend@elsewhere.example\r\nSubject: full\r\n"
        b"Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nMessage-ID: <given.1@client.example>\r\n"
        b"\r\nHi.\r\n")


@pytest.mark.parametrize("port", PORTS)
def test_message_id_and_date_added(auth_daemon, port):
    d = auth_daemon()
    with session(d, port, ALICE) as c:
        qid = submit(c, BARE)
    sp = d.spool_msg(qid)
    mids = header_fields(sp, "Message-ID")
    dates = header_fields(sp, "Date")
    assert len(mids) == 1 and re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", mids[0]), mids
    assert len(dates) == 1, dates
    assert re.match(r"^(\w{3}, )?\d{1,2} \w{3} \d{4} \d\d:\d\d(:\d\d)? [+-]\d{4}", dates[0]), dates
    # The body is untouched.
    assert sp.message.endswith(b"\r\n\r\nHi.\r\n"), sp.message[-50:]
    assert header_fields(sp, "Subject") == ["bare"]


@pytest.mark.parametrize("text", [b"hello\r\nsecond line\r\n", b"hello\r\nDate: fake\r\n"])
def test_fields_added_to_message_without_header_section(auth_daemon, text):
    # RFC 5322 3.6: Date is required.  A message whose first line is no
    # header field has no header section: the fields go first, then the
    # empty line, and the client's text is the body.
    import email
    import email.policy
    d = auth_daemon()
    with session(d, "smtps", ALICE) as c:
        qid = submit(c, text)
    sp = d.spool_msg(qid)
    m = email.message_from_bytes(sp.message, policy=email.policy.default)
    assert m.defects == [], m.defects
    assert m["Date"] is not None and m["Message-ID"] is not None, sp.message
    assert sp.message.endswith(b"\r\n\r\n" + text), sp.message


def test_message_ids_differ(auth_daemon):
    d = auth_daemon()
    with session(d, "smtps", ALICE) as c:
        q1 = submit(c, BARE)
        q2 = submit(c, BARE)
    m1 = header_fields(d.spool_msg(q1), "Message-ID")
    m2 = header_fields(d.spool_msg(q2), "Message-ID")
    assert m1 != m2, (m1, m2)


def test_present_headers_not_duplicated(auth_daemon):
    d = auth_daemon()
    with session(d, "sub", ALICE) as c:
        qid = submit(c, FULL)
    sp = d.spool_msg(qid)
    assert header_fields(sp, "Message-ID") == ["<given.1@client.example>"]
    assert header_fields(sp, "Date") == ["Mon, 2 Jan 2023 10:00:00 +0000"]


def test_lowercase_present_headers_not_duplicated(auth_daemon):
    d = auth_daemon()
    body = (b"from: alice@test.example\r\nmessage-id: <lc.2@client.example>\r\n"
            b"date: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nHi.\r\n")
    with session(d, "smtps", ALICE) as c:
        qid = submit(c, body)
    sp = d.spool_msg(qid)
    assert header_fields(sp, "Message-ID") == ["<lc.2@client.example>"]
    assert len(header_fields(sp, "Date")) == 1


def test_only_missing_header_added(auth_daemon):
    d = auth_daemon()
    body = b"From: alice@test.example\r\nMessage-ID: <only.3@client.example>\r\n\r\nHi.\r\n"
    with session(d, "smtps", ALICE) as c:
        qid = submit(c, body)
    sp = d.spool_msg(qid)
    assert header_fields(sp, "Message-ID") == ["<only.3@client.example>"]
    assert len(header_fields(sp, "Date")) == 1


def test_add_headers_off(auth_daemon):
    d = auth_daemon(submission_add_headers="no")
    with session(d, "smtps", ALICE) as c:
        qid = submit(c, BARE)
    sp = d.spool_msg(qid)
    assert header_fields(sp, "Message-ID") == []
    assert header_fields(sp, "Date") == []


def test_mx_does_not_add_headers(auth_daemon):
    d = auth_daemon()
    with Client(d.mx) as c:
        c.ehlo()
        qid = submit(c, BARE, sender="x@client.example", rcpts=(ALICE,))
    sp = d.spool_msg(qid)
    assert header_fields(sp, "Message-ID") == []
    assert header_fields(sp, "Date") == []


@pytest.mark.parametrize("port", PORTS)
def test_received_esmtpsa_with_user(auth_daemon, port):
    d = auth_daemon()
    with session(d, port, ALICE) as c:
        qid = submit(c, FULL)
    sp = d.spool_msg(qid)
    recv = received_field(sp)
    assert "with ESMTPSA" in recv, recv
    assert "auth=" + ALICE in recv, recv
    assert "[127.0.0.1]" in recv, recv
    assert "role=submission" in recv, recv


def test_received_hide_client_ip(auth_daemon):
    d = auth_daemon(received_hide_client_ip="yes")
    with session(d, "smtps", ALICE) as c:
        qid = submit(c, FULL)
    sp = d.spool_msg(qid)
    recv = received_field(sp)
    assert "127.0.0.1" not in sp.headers(), sp.headers()
    assert "with ESMTPSA" in recv and "auth=" + ALICE in recv, recv
    # Still in the log.
    assert "127.0.0.1" in d.log_text()
    # The MX port always records the client.
    with Client(d.mx) as c:
        c.ehlo()
        qid = submit(c, BARE, sender="x@client.example", rcpts=(ALICE,))
    assert "[127.0.0.1]" in received_field(d.spool_msg(qid))


def test_smtplib_sendmail(auth_daemon):
    d = auth_daemon()
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    try:
        s.starttls(context=client_ctx())
        s.login(CAROL, pw(CAROL))
        refused = s.sendmail(CAROL, ["x@elsewhere.example", ALICE], BARE)
        assert refused == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:
            s.sendmail(ALICE, ["x@elsewhere.example"], BARE)
        assert ei.value.smtp_code == 553
    finally:
        s.quit()
    assert len(d.queue_ids()) == 1


def test_swaks_tls_on_connect(auth_daemon):
    d = auth_daemon()
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(d.smtps), "--tlsc",
                        "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", pw(ALICE),
                        "--from", ALICE, "--to", "friend@elsewhere.example",
                        "--timeout", "15"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    m = re.search(r"queued as (\S+)", out)
    assert m, out
    sp = d.spool_msg(m.group(1))
    assert "with ESMTPSA" in received_field(sp)
    assert sp.rcpts() == ["friend@elsewhere.example"]


def test_received_hide_client_ip_address_literal_helo(auth_daemon):
    """Mail clients often say EHLO [their address]: with the option on, that
    address must not reach the Received: field either."""
    d = auth_daemon(received_hide_client_ip="yes")
    with Client(d.smtps, tls=True) as c:
        c.ehlo("[127.0.0.1]")
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
        qid = submit(c, FULL)
    sp = d.spool_msg(qid)
    assert "127.0.0.1" not in sp.headers(), received_field(sp)
