"""One canonical form per address (RFC 5321 4.1.2: a trailing dot on the
domain, a quoted local part that is a plain dot-atom), recipients beyond
recipients_max (RFC 5321 4.5.3.1.10: 452, not an error), and a message
whose first line would continue the Received: header sluice writes."""
import glob
import os

import pytest

from helpers import Client, wait_until


def maildir_new(d, domain, local):
    return os.path.join(d.dir, "mail", domain, local, "new")


def mails_in(path):
    return glob.glob(os.path.join(path, "*"))


def body(subject):
    return ("From: sender@client.example\r\nTo: bob@test.example\r\n"
            "Subject: %s\r\nMessage-ID: <%s@client.example>\r\n\r\nHello.\r\n"
            % (subject, subject)).encode()


def send(d, rcpt, subject, sender="sender@client.example"):
    with Client(d.mx) as c:
        c.ehlo()
        r = c.mail_transaction(sender=sender, rcpts=(rcpt,), body=body(subject))
        assert r.code == 250, r
        c.cmd("QUIT")
        return r.queue_id


# ---- canonical addresses --------------------------------------------------

@pytest.mark.parametrize("sender,rcpt,want_sender,want_rcpt", [
    ("sender@client.example.", "bob@test.example.", "sender@client.example",
     "bob@test.example"),
    ('"sender"@client.example', '"bob"@test.example', "sender@client.example",
     "bob@test.example"),
    ('"s\\e"@client.example', '"b\\ob"@test.example.', "se@client.example",
     "bob@test.example"),
    ('"a b"@client.example', '"first.last"@Test.Example.', '"a b"@client.example',
     "first.last@Test.Example"),
    ('"a\\ b"@client.example', '"x..y"@test.example.', '"a b"@client.example',
     '"x..y"@test.example'),
])
def test_envelope_is_canonical(daemon, sender, rcpt, want_sender, want_rcpt):
    qid = send(daemon, rcpt, "canon", sender=sender)
    m = daemon.spool_msg(qid)
    assert m.rcpts() == [want_rcpt], m.env_lines
    ev = daemon.wait_event("queued", id=qid)
    assert ev[0]["from"] == want_sender, ev
    assert ev[0]["to"] == want_rcpt, ev
    # The Received: header names the canonical recipient too.
    assert "for <%s>" % want_rcpt in m.headers(), m.headers()


@pytest.mark.parametrize("rcpt", ["bob@test.example.", '"bob"@test.example',
                                  '"b\\ob"@test.example.'])
def test_delivered_to_the_one_maildir(start_daemon, rcpt):
    d = start_daemon(queue_only="no", queue_retry_min="1s", queue_retry_max="2s")
    send(d, rcpt, "to-bob")
    new = maildir_new(d, "test.example", "bob")
    ok = wait_until(lambda: len(mails_in(new)) == 1, 20)
    assert ok, "no mail in %s; log:\n%s" % (new, d.log_tail(40))
    # Nothing went to a Maildir named as typed.
    assert not os.path.exists(os.path.join(d.dir, "mail", "test.example."))
    assert not os.path.exists(os.path.join(d.dir, "mail", "test.example", '"bob"'))
    assert not os.path.exists(os.path.join(d.dir, "mail", "test.example", "b\\ob"))


@pytest.mark.parametrize("rcpt", ['"alice"@test.example.', "alice@test.example.",
                                  '"alice"@test.example', '"al\\ice"@TEST.example',
                                  '"bob"@other.example.'])
def test_recipient_verification_sees_the_canonical_form(auth_daemon, rcpt):
    d = auth_daemon()
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 250, (rcpt, r)


def test_unknown_user_refused_with_the_canonical_form(auth_daemon):
    d = auth_daemon()
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        r = c.cmd('RCPT TO:<"nobody"@test.example.>')
        assert r.code == 550 and r.enhanced == "5.1.1", r
        assert "<nobody@test.example>" in r.text, r
        # A quoted local part that is no dot-atom is another mailbox.
        r = c.cmd('RCPT TO:<"al ice"@test.example>')
        assert r.code == 550 and r.enhanced == "5.1.1", r


def test_bt_canonicalizes(auth_daemon):
    d = auth_daemon(run=False)
    r = d.cli("-bt", '"alice"@test.example.')
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "canonical form alice@test.example" in out, out
    assert "local user alice@test.example (passwd-file)" in out, out
    assert "accepted at RCPT" in out, out
    r = d.cli("-bt", "alice@test.example")
    out = r.stdout.decode()
    assert "canonical form" not in out, out
    assert "accepted at RCPT" in out, out


# ---- recipients beyond recipients_max ---------------------------------------

def test_pipelined_recipients_over_the_limit(daemon):
    n = 1025
    with Client(daemon.mx, timeout=30) as c:
        c.ehlo()
        lines = ["MAIL FROM:<sender@client.example>"]
        lines += ["RCPT TO:<u%d@test.example>" % i for i in range(n)]
        c.send(("\r\n".join(lines) + "\r\n").encode())
        assert c.reply().code == 250
        codes = [c.reply(timeout=30) for _ in range(n)]
        ok = [r for r in codes if r.code == 250]
        over = [r for r in codes if r.code != 250]
        assert len(ok) == 1000, codes[:3]
        assert len(over) == 25
        assert all(r.code == 452 and r.enhanced == "4.5.3" for r in over), over[:3]
        assert all(r.code == 250 for r in codes[:1000])
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(body("many") + b".\r\n")
        r = c.reply(timeout=30)
        assert r.code == 250, r
        qid = r.queue_id
        assert c.cmd("NOOP").code == 250
    assert len(daemon.spool_msg(qid).rcpts()) == 1000


def test_recipients_over_the_limit_are_still_bounded(start_daemon):
    # recipients_max 100, smtp_max_errors 5: 100 free 452s, then 5 counted.
    d = start_daemon(recipients_max="100", smtp_max_errors="5")
    with Client(d.mx, timeout=30) as c:
        c.ehlo()
        lines = ["MAIL FROM:<sender@client.example>"]
        lines += ["RCPT TO:<u%d@test.example>" % i for i in range(300)]
        c.send(("\r\n".join(lines) + "\r\n").encode())
        replies = [c.reply(timeout=30) for _ in range(1 + 100 + 100 + 5 + 1)]
        assert [r.code for r in replies[1:101]] == [250] * 100
        assert [r.code for r in replies[101:206]] == [452] * 105
        assert replies[206].code == 421, replies[206]
        assert c.wait_closed()


# ---- a first line that continues our Received: ----------------------------

@pytest.mark.parametrize("text", [
    b"\tby forged.example with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: x\r\n\r\nbody\r\n",
    b" x\r\nSubject: x\r\n\r\nbody\r\n",
    b". x\r\n\r\nbody\r\n",  # dot-stuffed: the text begins with a space
])
def test_data_starting_with_continuation_refused(daemon, text):
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<bob@test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(text + b".\r\n")
        r = c.reply(timeout=15)
        assert r.code == 550 and r.enhanced == "5.6.0", r
        assert "white space" in r.text, r
        # The session goes on; nothing was queued.
        assert c.cmd("NOOP").code == 250
        r = c.mail_transaction(rcpts=("bob@test.example",), body=body("after"))
        assert r.code == 250, r
    assert daemon.queue_ids() == [r.queue_id]
    assert daemon.tmp_files() == []


def test_bdat_starting_with_continuation_refused(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<bob@test.example>").code == 250
        chunk = b"\tforged\r\nSubject: x\r\n\r\nbody\r\n"
        c.send(b"BDAT 0\r\nBDAT %d LAST\r\n" % len(chunk) + chunk)
        assert c.reply().code == 250
        r = c.reply(timeout=15)
        assert r.code == 550 and r.enhanced == "5.6.0", r
        assert c.cmd("NOOP").code == 250
    assert daemon.queue_ids() == []
    assert daemon.tmp_files() == []


def test_continuation_after_a_field_is_fine(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        text = b"Subject: a\r\n\tb\r\n\r\n body\r\n"
        r = c.mail_transaction(rcpts=("bob@test.example",), body=text)
        assert r.code == 250, r
    m = daemon.spool_msg(r.queue_id)
    assert b"\r\nSubject: a\r\n\tb\r\n\r\n body\r\n" in m.message


# ---- HELO/EHLO argument syntax (RFC 5321 4.1.3) -----------------------------

@pytest.mark.parametrize("arg,code", [
    ("[999.1.1.1]", 501), ("[1.2.3]", 501), ("[IPv6:zz]", 501), ("[IPv6:1::2::3]", 501),
    ("foo..bar", 501), ("-foo.example", 501), ("a" * 64 + ".example", 501),
    ("MyPC", 250), ("localhost", 250), ("client.example.", 250), ("[127.0.0.1]", 250),
    ("[IPv6:::1]", 250), ("a" * 63 + ".example", 250),
])
def test_helo_argument_syntax(daemon, arg, code):
    with Client(daemon.mx) as c:
        r = c.cmd("EHLO " + arg)
        assert r.code == code, (arg, r)
        r = c.cmd("HELO " + arg)
        assert r.code == code, (arg, r)
        if code == 501:
            assert r.enhanced == "5.5.4", r
            assert c.cmd("MAIL FROM:<a@client.example>").code == 503
