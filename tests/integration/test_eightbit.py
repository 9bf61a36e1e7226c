"""8-bit content and next hops without 8BITMIME (RFC 6152 section 3): a
message declared BODY=8BITMIME that holds 8-bit bytes is returned with
5.6.3 rather than sent raw to a 7-bit peer; one declared 8BITMIME that is
plain ASCII goes to that peer.  The peer is a scripted server on 127.0.0.2
that the resolver's local data makes remote.example's MX."""
import email
import email.policy
import glob
import os
import re
import smtplib

import pytest

from helpers import submit_authenticated, wait_queue_empty, wait_until
from peer import Peer

ALICE = "alice@test.example"
HEAD = ("From: Alice <alice@test.example>\r\nTo: someone\r\nSubject: eightbit test\r\n"
        "Message-ID: <8bit-%d@test.example>\r\nDate: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n")
EIGHT = (HEAD % 1).encode() + "caf\u00e9 na\u00efve \u2713\r\n".encode()
ASCII = (HEAD % 2).encode() + b"plain ASCII only\r\n"
NO_8BITMIME = ["PIPELINING", "SIZE 10485760", "ENHANCEDSTATUSCODES"]


@pytest.fixture
def peer():
    # Overrides conftest's: a next hop without 8BITMIME (and without TLS).
    p = Peer("127.0.0.2")
    p.extensions = list(NO_8BITMIME)
    yield p
    p.close()


def submit(d, rcpts, msg, body8=True):
    submit_authenticated(d, rcpts, msg, ALICE,
                         mail_options=["BODY=8BITMIME"] if body8 else [])


def mx_send(d, sender, rcpts, msg):
    s = smtplib.SMTP("127.0.0.1", d.mx, timeout=15)
    try:
        assert s.sendmail(sender, rcpts, msg, mail_options=["BODY=8BITMIME"]) == {}
    finally:
        s.quit()


def alice_mail(d, n=1, timeout=20):
    md = os.path.join(d.dir, "mail", "test.example", "alice", "new")
    ok = wait_until(lambda: len(glob.glob(os.path.join(md, "*"))) >= n, timeout)
    assert ok, "no mail for alice; log:\n%s" % d.log_tail(40)
    return [open(f, "rb").read() for f in sorted(glob.glob(os.path.join(md, "*")))]


def test_8bit_to_7bit_peer_fails_5_6_3_and_bounces(dlv, peer):
    d = dlv()
    submit(d, ["bob@remote.example"], EIGHT)
    raw = alice_mail(d)[0]
    wait_queue_empty(d)
    # Nothing was sent raw: the peer never saw a transaction.
    assert peer.attempts == [] and peer.transactions == []
    ev = d.wait_event("delivery", result="failed")
    assert ev[0]["rcpt"] == "bob@remote.example"
    assert "5.6.3" in ev[0]["reply"] and "8BITMIME" in ev[0]["reply"]
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["Return-Path"] == "<>"
    assert m.get_content_type() == "multipart/report"
    status = list(m.iter_parts())[1].as_bytes().decode("utf-8", "replace")
    assert "Final-Recipient: rfc822; bob@remote.example" in status
    assert "Action: failed" in status
    assert "Status: 5.6.3" in status
    # The refusal is this server's own, not a reply the peer sent.
    assert re.search(r"Diagnostic-Code: X-Sluice; 554 5\.6\.3 ", status), status
    # The report quotes the 8-bit original, so it is 8-bit itself.
    assert "caf\u00e9".encode() in raw
    assert m["Content-Transfer-Encoding"] == "8bit"


def test_8bitmime_declared_ascii_goes_to_7bit_peer(dlv, peer):
    d = dlv()
    submit(d, ["bob@remote.example"], ASCII)
    txn = peer.wait_transactions(1)[0]
    wait_queue_empty(d)
    assert txn.rcpts == ["bob@remote.example"]
    assert "BODY=8BITMIME" not in txn.mail_params.upper()
    assert txn.data.endswith(b"plain ASCII only\r\n")
    d.wait_event("delivery", result="delivered")
    assert d.events("delivery", result="failed") == []
    # No bounce for alice.
    assert not glob.glob(os.path.join(d.dir, "mail", "test.example", "alice", "new", "*"))


def test_8bit_to_8bitmime_peer_is_sent(dlv, peer):
    peer.extensions = NO_8BITMIME + ["8BITMIME"]
    d = dlv()
    submit(d, ["bob@remote.example"], EIGHT)
    txn = peer.wait_transactions(1)[0]
    wait_queue_empty(d)
    assert "BODY=8BITMIME" in txn.mail_params.upper()
    assert "caf\u00e9 na\u00efve \u2713\r\n".encode() in txn.data


def test_content_recorded_in_the_spool(dlv, peer):
    """The envelope says what the bytes are, whatever was declared."""
    d = dlv(queue_only="yes")
    submit(d, ["bob@remote.example"], EIGHT)
    submit(d, ["carol@remote.example"], ASCII)
    submit(d, ["dave@remote.example"], ASCII, body8=False)
    ok = wait_until(lambda: len(d.queue_ids()) == 3, 10)
    assert ok, d.queue_ids()
    seen = {}
    for qid in d.queue_ids():
        sp = d.spool_msg(qid)
        seen[sp.rcpts()[0]] = (sp.env("body"), sp.env("content"))
    assert seen["bob@remote.example"] == (["8bitmime"], ["8bit"])
    assert seen["carol@remote.example"] == (["8bitmime"], ["7bit"])
    assert seen["dave@remote.example"] == ([], [])
    # Delivered on -q: the two ASCII ones go to the 7-bit peer, the 8-bit
    # one is returned.
    r = d.cli("-q")
    assert r.returncode == 0, r.stderr
    txns = peer.wait_transactions(2)
    assert sorted(t.rcpts[0] for t in txns) == ["carol@remote.example", "dave@remote.example"]
    raw = alice_mail(d)[0]
    assert b"Status: 5.6.3" in raw
    wait_queue_empty(d)


def test_bounce_of_8bit_message_is_8bit_too(dlv, peer, test_dir):
    """A report quoting an 8-bit original is 8-bit: to a sender whose MX
    lacks 8BITMIME it fails with 5.6.3 as well (and, coming from <>, is not
    reported on), while the report on an ASCII message reaches it."""
    aliases = os.path.join(test_dir, "aliases-8bit")
    with open(aliases, "w") as f:
        f.write("gone: someone@does-not-exist.example\n")
    os.chmod(aliases, 0o644)
    d = dlv(aliases_file=aliases)
    mx_send(d, "bob@remote.example", ["gone@test.example"], EIGHT)
    ev = d.wait_event("delivery", timeout=20, rcpt="bob@remote.example")
    assert ev[0]["result"] == "failed"
    assert "5.6.3" in ev[0]["reply"]
    wait_queue_empty(d)
    assert peer.transactions == []

    mx_send(d, "bob@remote.example", ["gone@test.example"], ASCII)
    txn = peer.wait_transactions(1)[0]
    wait_queue_empty(d)
    assert txn.mail_from == ""
    assert txn.rcpts == ["bob@remote.example"]
    assert b"Status: 5.1.2" in txn.data or b"Action: failed" in txn.data


@pytest.mark.parametrize("body8", [False, True])
def test_smtputf8_declared_for_ascii_goes_to_a_peer_without_it(dlv, peer, body8):
    # Many clients declare SMTPUTF8 whenever it is offered: an all-ASCII
    # message does not need it (RFC 6531 3.2) and goes to a next hop (or
    # an LMTP server like Dovecot's) that lacks the extension.
    peer.extensions = list(NO_8BITMIME) + (["8BITMIME"] if body8 else [])
    d = dlv()
    submit_authenticated(d, ["bob@remote.example"], ASCII, ALICE,
                         mail_options=["SMTPUTF8"] + (["BODY=8BITMIME"] if body8 else []))
    peer.wait_transactions(1, timeout=20)
    wait_queue_empty(d)
    t = peer.transactions[0]
    assert "SMTPUTF8" not in t.mail_params
    assert t.data.endswith(b"plain ASCII only\r\n")
    assert not d.events("report")


def test_smtputf8_with_a_utf8_header_still_needs_it(dlv, peer):
    # A UTF-8 Subject (RFC 6532) does need it: refused 5.6.7 and returned,
    # the header in a message/global-headers part (RFC 6533).
    d = dlv()
    msg = (HEAD % 3).replace("Subject: eightbit test", "Subject: Gr\u00fc\u00dfe").encode()
    msg += b"body\r\n"
    submit_authenticated(d, ["bob@remote.example"], msg, ALICE,
                         mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    raw = alice_mail(d)[0]
    assert b"Status: 5.6.7" in raw
    assert re.search(rb"Content-Type: message/global", raw), raw[:2000]
    assert b"message/rfc822" not in raw and b"text/rfc822-headers" not in raw
    assert peer.transactions == []
