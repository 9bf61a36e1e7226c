"""Recipient verification on the MX port when an auth backend knows the
users: unknown local users are refused at RCPT (550 5.1.1), users, aliases
and catch-alls are accepted, postmaster always is, and relay tricks stay
refused."""
import os

import pytest

from helpers import Client, write_file


@pytest.fixture
def rcpt_daemon(auth_daemon, test_dir):
    def start(catchall=False, **kw):
        aliases = write_file(os.path.join(test_dir, "aliases"),
                             "# aliases\n\ninfo: alice@test.example\n"
                             "abuse: bob, friend@elsewhere.example\n"
                             "Webmaster: alice@test.example\n")
        vtext = ("sales@test.example     carol@other.example\n"
                 "list@other.example     alice@test.example, bob\n")
        if catchall:
            vtext += "@other.example          bob\n"
        virtual = write_file(os.path.join(test_dir, "virtual"), vtext)
        return auth_daemon(aliases_file=aliases, virtual_alias_file=virtual, **kw)
    return start


def mx_session(d):
    c = Client(d.mx)
    c.ehlo()
    r = c.cmd("MAIL FROM:<sender@client.example>")
    assert r.code == 250, r
    return c


KNOWN = [
    "alice@test.example",
    "alice@TEST.EXAMPLE",
    "bob@test.example",            # bare login: every local domain
    "bob@other.example",
    "carol@other.example",
    "dave@test.example",
    "info@test.example",           # aliases_file, every local domain
    "info@other.example",
    "abuse@test.example",
    "webmaster@test.example",
    "sales@test.example",          # virtual_alias_file
    "list@other.example",
    "postmaster@test.example",
    "postmaster@other.example",
    "postmaster",
    "Postmaster@Test.Example",
]

UNKNOWN = [
    "nobody@test.example",
    "nobody@other.example",
    "carol@test.example",          # carol's login is an address of other.example
    "alice@other.example",
    "sales@other.example",
    "list@test.example",
    "alice.x@test.example",
    "bob+tag@test.example",
]


@pytest.mark.parametrize("rcpt", KNOWN)
def test_known_recipient_accepted(rcpt_daemon, rcpt):
    d = rcpt_daemon()
    with mx_session(d) as c:
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 250, (rcpt, r)


@pytest.mark.parametrize("rcpt", UNKNOWN)
def test_unknown_recipient_550_511(rcpt_daemon, rcpt):
    d = rcpt_daemon()
    with mx_session(d) as c:
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 550 and r.enhanced == "5.1.1", (rcpt, r)
        # The transaction goes on; the known recipient alone is delivered.
        assert c.cmd("RCPT TO:<alice@test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: verify\r\n\r\nx\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250, r
    assert d.spool_msg(r.queue_id).rcpts() == ["alice@test.example"]
    ev = d.wait_event("refused")
    assert any(e.get("reply", "").startswith("550 5.1.1") for e in ev), ev


def test_catchall(rcpt_daemon):
    d = rcpt_daemon(catchall=True)
    with mx_session(d) as c:
        for a in ("anything@other.example", "nobody@other.example", "carol@other.example",
                  "list@other.example"):
            assert c.cmd("RCPT TO:<%s>" % a).code == 250, a
        # The catch-all is for its domain only.
        r = c.cmd("RCPT TO:<nobody@test.example>")
        assert r.code == 550 and r.enhanced == "5.1.1", r


def test_recipient_verify_off(rcpt_daemon):
    d = rcpt_daemon(recipient_verify="no")
    with mx_session(d) as c:
        assert c.cmd("RCPT TO:<nobody@test.example>").code == 250
        r = c.cmd("RCPT TO:<user@elsewhere.example>")
        assert r.code == 550 and r.enhanced == "5.7.1", r


def test_no_backend_no_verification(start_daemon):
    d = start_daemon()
    with mx_session(d) as c:
        assert c.cmd("RCPT TO:<nobody@test.example>").code == 250


RELAY_TRICKS = [
    "user%other@test.example",
    "alice%elsewhere.example@test.example",
    '"a@b"@test.example',
    '"alice@elsewhere.example"@test.example',
    "@route.example:alice@test.example",
    "alice!x@test.example",
    "elsewhere.example!alice@test.example",
    "user@[127.0.0.1]",
    "alice@elsewhere.example",
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_tricks_refused_on_mx(rcpt_daemon, rcpt):
    d = rcpt_daemon(catchall=True)
    with mx_session(d) as c:
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 550 and r.enhanced == "5.7.1", (rcpt, r)


def test_pipelined_rcpts_keep_order(rcpt_daemon):
    d = rcpt_daemon()
    with Client(d.mx) as c:
        c.ehlo()
        rcpts = ["alice@test.example", "nobody@test.example", "info@other.example",
                 "x@elsewhere.example", "bob@test.example", "ghost@other.example"]
        c.send("MAIL FROM:<s@client.example>\r\n" +
               "".join("RCPT TO:<%s>\r\n" % r for r in rcpts) + "DATA\r\n")
        assert c.reply(timeout=15).code == 250
        codes = [c.reply(timeout=15).code for _ in rcpts]
        assert codes == [250, 550, 250, 550, 250, 550], codes
        assert c.reply(timeout=15).code == 354
        c.send(b"Subject: p\r\n\r\nx\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250, r
    assert d.spool_msg(r.queue_id).rcpts() == ["alice@test.example", "info@other.example",
                                               "bob@test.example"]


def test_alias_file_edit_takes_effect(rcpt_daemon, test_dir):
    d = rcpt_daemon()
    with mx_session(d) as c:
        assert c.cmd("RCPT TO:<newalias@test.example>").code == 550
    path = os.path.join(test_dir, "aliases")
    with open(path, "a") as f:
        f.write("newalias: alice@test.example\n")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with mx_session(d) as c:
        assert c.cmd("RCPT TO:<newalias@test.example>").code == 250
