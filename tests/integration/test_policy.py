"""Recipient policy of the MX port: local domains only, no relay tricks;
recipient limits; refusals are logged."""
import pytest

from helpers import Client


ACCEPTED = [
    "user@test.example",
    "user@TEST.Example",
    "user@test.example.",
    "someone@other.example",
    "postmaster@test.example",
    "postmaster",
    "Postmaster",
    "POSTMASTER",
]

REFUSED = [
    "user@elsewhere.example",
    "user@sub.test.example",
    "user@test.example.evil.example",
    "user%other.example@test.example",
    "user%elsewhere.example@test.example",
    "@relay.example:user@test.example",
    "@relay.example,@relay2.example:user@elsewhere.example",
    "user!elsewhere.example@test.example",
    "elsewhere.example!user@test.example",
    '"user@elsewhere.example"@test.example',
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "postmaster@elsewhere.example",
]


@pytest.fixture
def mx_session(daemon):
    c = Client(daemon.mx)
    c.ehlo()
    r = c.cmd("MAIL FROM:<sender@client.example>")
    assert r.code == 250, r
    yield c
    c.close()


@pytest.mark.parametrize("rcpt", ACCEPTED)
def test_local_recipient_accepted(mx_session, rcpt):
    r = mx_session.cmd("RCPT TO:<%s>" % rcpt)
    assert r.code == 250 and r.enhanced.startswith("2.1."), (rcpt, r)


@pytest.mark.parametrize("rcpt", REFUSED)
def test_relay_refused(daemon, mx_session, rcpt):
    r = mx_session.cmd("RCPT TO:<%s>" % rcpt)
    assert r.code == 550 and r.enhanced == "5.7.1", (rcpt, r)
    # The session goes on and a local recipient is still accepted.
    assert mx_session.cmd("RCPT TO:<user@test.example>").code == 250
    ev = daemon.wait_event("refused")
    assert any(e.get("cmd") == "RCPT TO:<%s>" % rcpt for e in ev), ev
    assert ev[-1].get("reply", "").startswith("550 5.7.1"), ev


def test_refused_recipient_not_in_envelope(daemon, mx_session):
    c = mx_session
    assert c.cmd("RCPT TO:<user%elsewhere.example@test.example>").code == 550
    assert c.cmd("RCPT TO:<user@test.example>").code == 250
    assert c.cmd("RCPT TO:<user@elsewhere.example>").code == 550
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: partial\r\n\r\nx\r\n.\r\n")
    r = c.reply(timeout=15)
    assert r.code == 250, r
    assert daemon.spool_msg(r.queue_id).rcpts() == ["user@test.example"]


def test_no_valid_recipient_no_data(mx_session):
    c = mx_session
    assert c.cmd("RCPT TO:<user@elsewhere.example>").code == 550
    r = c.cmd("DATA")
    assert r.code in (503, 554), r


def test_recipients_max(start_daemon):
    d = start_daemon(recipients_max="3")
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.example>").code == 250
        for i in range(3):
            assert c.cmd("RCPT TO:<u%d@test.example>" % i).code == 250
        r = c.cmd("RCPT TO:<u9@test.example>")
        assert r.code == 452 and r.enhanced == "4.5.3", r
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: max\r\n\r\nx\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250
    assert len(d.spool_msg(r.queue_id).rcpts()) == 3


def test_submission_does_not_relay_unauthenticated(daemon):
    # Even inside TLS a submission port takes no mail without AUTH.
    with Client(daemon.smtps, tls=True) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<user@test.example>")
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = c.cmd("RCPT TO:<user@elsewhere.example>")
        assert r.code in (503, 530), r
    assert daemon.queue_ids() == []
