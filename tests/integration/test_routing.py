"""Routing and retry decisions of outbound delivery: this host among the
mail exchangers (RFC 5321 5.1), recipient limits (4.5.3.1.8, 4.5.3.1.10),
the next mail exchanger after a temporary failure, and the wait for the
reply to the end of data (4.5.3.2.6)."""
import glob
import os
import re
import threading
import time

import pytest

from helpers import submit_authenticated, wait_queue_empty, wait_until
from peer import Peer, _Closed, first_rcpt_then_ok

ALICE = "alice@test.example"
MSG = ("From: Alice <alice@test.example>\r\nTo: someone\r\nSubject: routing test\r\n"
       "Message-ID: <route-1@test.example>\r\nDate: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
       "\r\nfirst line\r\n.leading dot\r\nlast line\r\n")


def submit(d, rcpts, msg=MSG, user=ALICE):
    submit_authenticated(d, rcpts, msg, user)


def bounces(d):
    return glob.glob(os.path.join(d.dir, "mail", "test.example", "alice", "new", "*"))


def delivered(p):
    with p.lock:
        return [r for t in p.transactions for r in t.rcpts]


# ---- 1. this host among the mail exchangers (RFC 5321 5.1) ----------------

def assert_fails_as_loop(d, domain):
    """x@domain fails with 554 5.4.6 and a bounce; its delivery line."""
    submit(d, ["x@" + domain])
    ok = wait_until(lambda: bounces(d), 20)
    assert ok, d.log_tail(30)
    wait_queue_empty(d)
    raw = open(bounces(d)[0], "rb").read()
    assert b"Status: 5.4.6" in raw
    assert ("mail for %s loops back to myself" % domain).encode() in raw
    ev = d.events("delivery", rcpt="x@" + domain)
    assert ev[0]["result"] == "failed"
    return ev[0]


def assert_waits_for_primary(d, domain):
    """x@domain is deferred, with this host dropped from the route."""
    submit(d, ["x@" + domain])
    d.wait_event("deferred", timeout=15)
    assert d.events("mx_self", dest=domain)
    ev = d.events("delivery", rcpt="x@" + domain)
    assert ev and ev[0]["result"] == "deferred"
    assert len(d.queue_ids()) == 1
    assert not bounces(d)


def test_backup_mx_that_is_us_is_not_used(dlv, peer):
    # bk.example: MX 10 an unreachable primary, MX 20 our own name (whose
    # address is, here, the peer's).  Sending to ourselves would be refused
    # or loop: only hosts preferred to us may be used, so the mail waits.
    d = dlv(records=["bk.example. MX 10 primary.bk.example.",
                     "primary.bk.example. A 127.0.0.3",
                     "bk.example. MX 20 mx.test.example.",
                     "mx.test.example. A 127.0.0.2"],
            queue_retry_min="1h", queue_retry_max="1h")
    assert_waits_for_primary(d, "bk.example")
    assert peer.connections == 0


def test_best_mx_that_is_us_fails_as_a_loop(dlv, peer):
    # Our name (written in another case, with a trailing dot) at the best
    # preference, with another host of equal preference: neither may be
    # used, so nothing is left and the recipient fails as a loop.
    d = dlv(records=["lp.example. MX 10 MX.Test.Example.",
                     "lp.example. MX 10 other.lp.example.",
                     "lp.example. MX 20 worse.lp.example.",
                     "MX.Test.Example. A 127.0.0.2",
                     "other.lp.example. A 127.0.0.2",
                     "worse.lp.example. A 127.0.0.2"])
    assert_fails_as_loop(d, "lp.example")
    assert peer.connections == 0


def self_by_address(dlv, records, **kw):
    """A daemon whose outbound port is its own MX port, so that a name
    with the address 127.0.0.1 (where it listens) is this host."""
    d = dlv(records=records, run=False, **kw)
    with open(d.conf) as f:
        text = f.read()
    text = re.sub(r"(?m)^remote_smtp_port\s*=.*$", "remote_smtp_port = %d" % d.mx, text)
    assert ("remote_smtp_port = %d" % d.mx) in text
    with open(d.conf, "w") as f:
        f.write(text)
    return d.launch()


def test_best_mx_with_our_address_fails_as_a_loop(dlv, peer):
    # The MX is a name of its own that resolves to an address at which we
    # listen on the port mail goes to: delivering there would hand the
    # mail to ourselves, so the recipient fails as a loop, with no
    # connection made (our MX listener would have refused it as relay).
    d = self_by_address(dlv, ["al.example. MX 10 alias.al.example.",
                              "alias.al.example. A 127.0.0.1"])
    ev = assert_fails_as_loop(d, "al.example")
    assert ev["via"] == "-"   # no connection was made


def test_backup_mx_with_our_address_is_not_used(dlv, peer):
    # The primary does not answer; the backup MX resolves to our address:
    # the mail waits for the primary instead of coming back here.
    d = self_by_address(dlv, ["ba.example. MX 10 primary.ba.example.",
                              "primary.ba.example. A 127.0.0.3",
                              "ba.example. MX 20 backup.ba.example.",
                              "backup.ba.example. A 127.0.0.1"],
                        queue_retry_min="1h", queue_retry_max="1h")
    assert_waits_for_primary(d, "ba.example")


# ---- 2. 552 to RCPT is temporary (RFC 5321 4.5.3.1.10) ---------------------

def test_552_to_rcpt_is_retried_not_bounced(dlv, peer):
    peer.rcpt_reply = first_rcpt_then_ok("552 5.5.3 too many recipients")
    d = dlv()
    submit(d, ["only@remote.example"])
    peer.wait_transactions(1, timeout=20)
    wait_queue_empty(d)
    ev = d.events("delivery", rcpt="only@remote.example")
    assert [e["result"] for e in ev] == ["deferred", "delivered"]
    assert ev[0]["reply"].startswith("552 5.5.3")
    assert not d.events("report")
    assert not bounces(d)


# ---- 3. recipient limits ----------------------------------------------------

def limited(peer, limit, reply="452 4.5.3 too many recipients"):
    """The peer takes at most `limit` recipients per transaction."""
    local = threading.local()

    def rcpt(addr, p):
        n = getattr(local, "n", 0)
        local.n = n + 1
        return "250 2.1.5 ok" if n < limit else reply

    orig = peer.data_reply

    def data(txn, p):
        local.n = 0
        return orig(txn, p)

    def rset(p):
        local.n = 0

    peer.rcpt_reply = rcpt
    peer.data_reply = data
    peer.before_rset_reply = rset


@pytest.mark.parametrize("reply", ["452 4.5.3 too many recipients",
                                   "552 5.5.3 too many recipients"])
def test_recipients_over_the_peer_limit_go_at_once(dlv, peer, reply):
    # The peer takes 3 recipients per transaction; the others go in further
    # transactions of the same attempt, not at the next retry (an hour).
    limited(peer, 3, reply)
    d = dlv(queue_retry_min="1h", queue_retry_max="1h")
    rcpts = ["u%d@remote.example" % i for i in range(8)]
    submit(d, rcpts)
    wait_queue_empty(d, timeout=20)
    got = delivered(peer)
    assert sorted(got) == sorted(rcpts)
    assert [len(t.rcpts) for t in peer.transactions] == [3, 3, 2]
    assert len(d.events("rcpt_again")) == 2
    assert not d.events("deferred")
    assert not bounces(d)


def test_remote_rcpt_max_splits_transactions(dlv, peer):
    d = dlv(remote_rcpt_max="2")
    rcpts = ["v%d@remote.example" % i for i in range(5)]
    submit(d, rcpts)
    wait_queue_empty(d)
    got = delivered(peer)
    assert sorted(got) == sorted(rcpts)
    sizes = sorted(len(t.rcpts_tried) for t in peer.transactions)
    assert sizes == [1, 2, 2]


def test_remote_rcpt_max_bounds(dlv, test_dir):
    out = dlv(run=False).cli("-bP", "remote_rcpt_max")
    assert out.stdout.decode().strip() == "remote_rcpt_max = 100"
    for bad in ("0", "1001"):
        r = dlv(run=False, remote_rcpt_max=bad).cli("-bV")
        assert r.returncode != 0, r
        assert "remote_rcpt_max = %s is out of range" % bad in r.stderr.decode(), r


# ---- 4. the next mail exchanger after a temporary failure -------------------

TWO_MX = ["two.example. MX 10 mx1.two.example.", "two.example. MX 20 mx2.two.example.",
          "mx1.two.example. A 127.0.0.3", "mx2.two.example. A 127.0.0.2"]


@pytest.fixture
def mx1(peer):
    p = Peer("127.0.0.3", port=peer.port)
    yield p
    p.close()


def hang_up(*args):
    raise _Closed()


# A connection lost or timed out before the final dot went out is one such
# failure too: that server cannot have the message.
@pytest.mark.parametrize("how", ["mail_451", "mail_421", "rcpt_450", "rcpt_421",
                                 "mail_hangup", "rcpt_hangup", "rcpt_timeout"])
def test_temporary_failure_tries_the_next_mx_at_once(dlv, peer, mx1, how):
    if how == "mail_hangup":
        mx1.mail_reply = hang_up
    elif how == "rcpt_hangup":
        mx1.rcpt_reply = hang_up
    elif how == "rcpt_timeout":
        mx1.rcpt_reply = lambda a, p: time.sleep(4) or "250 2.1.5 late"
    elif how == "mail_451":
        mx1.mail_reply = lambda p: "451 4.3.0 local problem, try later"
    elif how == "mail_421":
        mx1.mail_reply = lambda p: "421 4.3.2 shutting down"
    elif how == "rcpt_450":
        mx1.rcpt_reply = lambda a, p: "450 4.2.0 greylisted"
    else:
        mx1.rcpt_reply = lambda a, p: "421 4.3.2 shutting down"
    d = dlv(records=TWO_MX, queue_retry_min="1h", queue_retry_max="1h",
            remote_command_timeout="1s")
    submit(d, ["a@two.example", "b@two.example"])
    peer.wait_transactions(1, timeout=15)
    wait_queue_empty(d)
    assert mx1.mails == 1
    assert sorted(delivered(peer)) == ["a@two.example", "b@two.example"]
    assert d.events("next_address", dest="two.example")
    assert not d.events("deferred")


def test_every_mx_failing_defers_once_each(dlv, mx1, peer):
    # Bounded by the route: each address is tried once in the attempt, and
    # the recipients wait with the last server's reply.
    mx1.mail_reply = lambda p: "451 4.3.0 first is busy"
    peer.rcpt_reply = lambda a, p: "450 4.2.0 second is busy"
    d = dlv(records=TWO_MX, queue_retry_min="1h", queue_retry_max="1h")
    submit(d, ["a@two.example"])
    d.wait_event("deferred", timeout=15)
    time.sleep(1)
    assert mx1.mails == 1
    assert peer.connections == 1
    ev = d.events("delivery", rcpt="a@two.example")
    assert len(ev) == 1
    assert ev[0]["result"] == "deferred"
    assert ev[0]["reply"] == "450 4.2.0 second is busy"


def test_connection_lost_after_the_dot_waits_for_the_retry(dlv, peer, mx1):
    # After the dot the first server may have taken the message: sending it
    # to the next one at once would make a second copy, so it waits.
    mx1.mode = "drop_in_data"
    d = dlv(records=TWO_MX, queue_retry_min="1h", queue_retry_max="1h")
    submit(d, ["a@two.example"])
    d.wait_event("deferred", timeout=15)
    time.sleep(1)
    assert len(mx1.attempts) == 1 and mx1.attempts[0].data is not None
    assert peer.connections == 0
    assert not d.events("next_address")
    assert len(d.queue_ids()) == 1


WIDE = (["wide.example. MX 10 many.wide.example.", "wide.example. MX 20 mx2.wide.example.",
         "mx2.wide.example. A 127.0.0.2"]
        + ["many.wide.example. A 127.0.0.%d" % i for i in range(10, 16)])


@pytest.mark.parametrize("limit", [3, 7])
def test_addresses_tried_per_attempt_are_bounded(dlv, peer, limit):
    # Six dead addresses before the peer: with remote_max_addresses = 3
    # only three are tried and the mail waits; with 7 the peer is reached.
    d = dlv(records=WIDE, remote_max_addresses=str(limit),
            queue_retry_min="1h", queue_retry_max="1h")
    submit(d, ["a@wide.example"])
    if limit < 7:
        d.wait_event("deferred", timeout=15)
        assert d.events("route_limited", dest="wide.example", addresses="7", used="3")
        assert len(d.events("connect_failed", dest="wide.example")) == 3
        assert peer.connections == 0
    else:
        peer.wait_transactions(1, timeout=15)
        wait_queue_empty(d)
        assert not d.events("route_limited")
        assert len(d.events("connect_failed", dest="wide.example")) == 6


# ---- 5. the wait for the reply to the end of data (RFC 5321 4.5.3.2.6) ------

def test_slow_reply_to_the_final_dot_is_waited_for(dlv, peer):
    # The server takes 2 s to answer the dot: longer than the command
    # timeout, within the data-done timeout.  Giving up would deliver the
    # message twice (the server goes on and takes it).
    peer.before_data_reply = lambda txn, p: time.sleep(2)
    d = dlv(remote_command_timeout="1s", remote_data_done_timeout="4s")
    submit(d, ["slow@remote.example"])
    peer.wait_transactions(1, timeout=15)
    wait_queue_empty(d)
    time.sleep(2)
    assert len(peer.transactions) == 1
    assert len(peer.attempts) == 1
    assert not d.events("deferred")


def test_data_done_timeout_still_ends_a_hung_server(dlv, peer):
    peer.before_data_reply = lambda txn, p: time.sleep(6)
    d = dlv(remote_command_timeout="1s", remote_data_done_timeout="2s",
            queue_retry_min="1h", queue_retry_max="1h")
    submit(d, ["hung@remote.example"])
    start = time.monotonic()
    d.wait_event("deferred", timeout=15)
    assert time.monotonic() - start < 6
    assert "timeout" in d.events("delivery", rcpt="hung@remote.example")[0]["reply"]
