"""SMTP AUTH (RFC 4954): where it is offered, the SASL mechanisms PLAIN,
LOGIN and SCRAM-SHA-256 against a passwd-file and an SQLite database, the
replies for every failure, brute-force penalties, the log, and the
commands that write password entries."""
import base64
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
import hashlib
import hmac
import os
import signal
import smtplib
import statistics
import subprocess
import time

import pytest

from conftest import AUTH_USERS
from helpers import (
    Client,
    auth_login,
    auth_plain,
    auth_scram,
    b64,
    client_ctx,
    ehlo_auth_mechs,
    open_session,
    scram_entry,
    wait_until,
    write_file,
)

ALICE = "alice@test.example"
BOB = "bob"
CAROL = "carol@other.example"
DAVE = "dave@test.example"


def pw(user):
    return AUTH_USERS[user][0]


def sub_client(d, port="sub"):
    """A session on 587 after STARTTLS, or on 465, past EHLO."""
    return open_session(d, port)


# ---- where AUTH is offered -------------------------------------------------

def test_auth_offered_only_after_starttls_on_587(auth_daemon):
    d = auth_daemon()
    with Client(d.sub) as c:
        r = c.ehlo()
        assert ehlo_auth_mechs(r) is None, r
        r = c.starttls()
        assert ehlo_auth_mechs(r) == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], r


def test_auth_offered_at_once_on_465(auth_daemon):
    d = auth_daemon()
    with Client(d.smtps, tls=True) as c:
        r = c.ehlo()
        assert ehlo_auth_mechs(r) == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], r


def test_auth_not_offered_on_mx_by_default(auth_daemon):
    d = auth_daemon()
    with Client(d.mx) as c:
        assert ehlo_auth_mechs(c.ehlo()) is None
        r = c.starttls()
        assert ehlo_auth_mechs(r) is None, r
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code in (502, 503, 504) and r.enhanced.startswith("5.5."), r
        # Nothing was authenticated: the session still works as an MX.
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@elsewhere.example>").code == 550


def test_auth_on_mx_with_listener_auth_yes(auth_daemon):
    d = auth_daemon(mx_auth=True)
    with Client(d.mx) as c:
        assert ehlo_auth_mechs(c.ehlo()) is None
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 538 and r.enhanced == "5.7.11", r
        r = c.starttls()
        assert ehlo_auth_mechs(r) == ["PLAIN", "LOGIN", "SCRAM-SHA-256"], r
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 235 and r.enhanced == "2.7.0", r
        # An authenticated MX session may relay.
        assert c.cmd("MAIL FROM:<%s>" % ALICE).code == 250
        assert c.cmd("RCPT TO:<user@elsewhere.example>").code == 250


def test_auth_before_starttls_on_587_refused(auth_daemon):
    d = auth_daemon()
    with Client(d.sub) as c:
        c.ehlo()
        r = auth_plain(c, ALICE, pw(ALICE))
        # RFC 3207 (530 5.7.0) and RFC 4954 (538 5.7.11) both fit here.
        assert (r.code, r.enhanced) in ((530, "5.7.0"), (538, "5.7.11")), r
        r = c.starttls()
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_scram_not_offered_by_default(auth_daemon):
    # Clients that can do SCRAM pick it and do not fall back to PLAIN: a
    # user stored in another scheme would be refused with the right
    # password, so only mechanisms that work for every user are offered.
    d = auth_daemon(auth_mechanisms=None)
    with sub_client(d, "smtps") as c:
        assert ehlo_auth_mechs(c.ehlo()) == ["PLAIN", "LOGIN"]
        r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=bob,r=abcdefgh"))
        assert r.code == 504 and r.enhanced == "5.5.4", r
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_auth_mechanisms_option(auth_daemon):
    d = auth_daemon(auth_mechanisms="plain")
    with sub_client(d, "smtps") as c:
        assert ehlo_auth_mechs(c.ehlo()) == ["PLAIN"]
        r = c.cmd("AUTH LOGIN")
        assert r.code == 504 and r.enhanced == "5.5.4", r
        r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=bob,r=abcdefgh"))
        assert r.code == 504 and r.enhanced == "5.5.4", r
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


# ---- PLAIN and LOGIN -------------------------------------------------------

@pytest.mark.parametrize("user", [ALICE, BOB, CAROL, DAVE])
@pytest.mark.parametrize("mech,port", [("PLAIN", "smtps"), ("LOGIN", "sub")])
def test_plain_and_login_every_scheme(auth_daemon, user, mech, port):
    d = auth_daemon()
    with sub_client(d, port) as c:
        if mech == "PLAIN":
            r = auth_plain(c, user, pw(user))
        else:
            r = auth_login(c, user, pw(user))
        assert r.code == 235 and r.enhanced == "2.7.0", r
        r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, pw(user))))
        assert r.code == 503 and r.enhanced == "5.5.1", r
    ev = d.wait_event("auth", result="ok")
    assert ev[-1].get("user") == user, ev


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("user,password", [
    (ALICE, "wrong password"),
    (ALICE, pw(ALICE) + "x"),
    (ALICE, pw(ALICE)[:-1]),
    (ALICE, ""),
    ("nosuchuser@test.example", "whatever"),
    (BOB, pw(ALICE)),
    ("alice", pw(ALICE)),
    ("ALICE@test.example.", pw(ALICE)),
])
def test_bad_credentials_535(auth_daemon, mech, user, password):
    d = auth_daemon(auth_fail_delay_after="100", auth_fail_block_after="200")
    with sub_client(d, "smtps") as c:
        if mech == "PLAIN":
            r = auth_plain(c, user, password)
        else:
            r = auth_login(c, user, password)
        if password == "":
            # RFC 4616: passwd = 1*SAFE, so an empty one is also malformed.
            assert (r.code, r.enhanced) in ((535, "5.7.8"), (501, "5.5.2")), r
        else:
            assert r.code == 535 and r.enhanced == "5.7.8", r
        # Not authenticated: MAIL still needs AUTH, and AUTH may be retried.
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        assert r.code == 530 and r.enhanced == "5.7.0", r
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
    if password:
        d.wait_event("auth", result="failed")


def test_plain_without_initial_response(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("AUTH PLAIN")
        assert r.code == 334 and r.lines == [""], r
        r = c.cmd(b64("\0%s\0%s" % (ALICE, pw(ALICE))))
        assert r.code == 235, r


def test_plain_with_authzid_equal_to_user(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        r = auth_plain(c, ALICE, pw(ALICE), authzid=ALICE)
        assert r.code == 235, r


def test_plain_with_foreign_authzid_refused(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        r = auth_plain(c, ALICE, pw(ALICE), authzid=CAROL)
        assert r.code == 535 and r.enhanced == "5.7.8", r


def test_empty_initial_response(auth_daemon):
    """'=' is an empty initial response, not a missing one: PLAIN with an
    empty message cannot succeed and must not ask for more."""
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("AUTH PLAIN =")
        assert r.code in (501, 535) and r.code != 334, r
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_unknown_mechanism_504(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        for m in ("CRAM-MD5", "DIGEST-MD5", "GSSAPI", "XOAUTH2", "PLAINX", "SCRAM-SHA-1"):
            r = c.cmd("AUTH " + m)
            assert r.code == 504 and r.enhanced == "5.5.4", (m, r)
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


@pytest.mark.parametrize("data", ["!!!!", "AHVzZXI", "a b", "YWxpY2U===", "%%%%"])
def test_malformed_base64_501(auth_daemon, data):
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("AUTH PLAIN " + data)
        assert r.code == 501 and r.enhanced == "5.5.2", (data, r)
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334, r
        r = c.cmd(data)
        assert r.code == 501 and r.enhanced == "5.5.2", (data, r)
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_cancel_with_star(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        r = c.cmd("*")
        assert r.code == 501 and r.enhanced == "5.0.0", r
        r = c.cmd("AUTH LOGIN " + b64(ALICE))
        assert r.code == 334, r
        r = c.cmd("*")
        assert r.code == 501 and r.enhanced == "5.0.0", r
        r = c.cmd("AUTH PLAIN")
        assert r.code == 334
        r = c.cmd("*")
        assert r.code == 501 and r.enhanced == "5.0.0", r
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_auth_during_transaction_503(auth_daemon):
    d = auth_daemon(mx_auth=True)
    with Client(d.mx) as c:
        c.ehlo()
        c.starttls()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 503 and r.enhanced == "5.5.1", r
        assert c.cmd("RSET").code == 250
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_auth_twice_503(auth_daemon):
    d = auth_daemon()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
        r = auth_plain(c, CAROL, pw(CAROL))
        assert r.code == 503 and r.enhanced == "5.5.1", r
        r = c.cmd("AUTH LOGIN")
        assert r.code == 503 and r.enhanced == "5.5.1", r
        # Still alice, not carol.
        assert c.cmd("MAIL FROM:<%s>" % ALICE).code == 250


def test_pipelined_auth_and_mail(auth_daemon):
    """AUTH with an initial response may be pipelined with MAIL (RFC 4954
    section 4): MAIL must see the outcome of AUTH."""
    d = auth_daemon()
    with sub_client(d, "smtps") as c:
        c.send("AUTH PLAIN %s\r\nMAIL FROM:<%s>\r\n" % (
            b64("\0%s\0%s" % (ALICE, pw(ALICE))), ALICE))
        assert c.reply(timeout=15).code == 235
        assert c.reply(timeout=15).code == 250
    with sub_client(d, "smtps") as c:
        c.send("AUTH PLAIN %s\r\nMAIL FROM:<%s>\r\n" % (
            b64("\0%s\0bad" % ALICE), ALICE))
        assert c.reply(timeout=15).code == 535
        assert c.reply(timeout=15).code == 530


def test_smtplib_login(auth_daemon):
    d = auth_daemon()
    s = smtplib.SMTP_SSL("127.0.0.1", d.smtps, context=client_ctx(), timeout=15)
    try:
        code, _ = s.login(ALICE, pw(ALICE))
        assert code == 235
    finally:
        s.quit()
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    try:
        s.starttls(context=client_ctx())
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            s.login(ALICE, "not the password")
        assert ei.value.smtp_code == 535
        code, _ = s.login(CAROL, pw(CAROL))
        assert code == 235
    finally:
        s.quit()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks(auth_daemon, mech):
    d = auth_daemon()
    base = ["swaks", "--server", "127.0.0.1", "--port", str(d.sub), "--tls",
            "--from", ALICE, "--to", "someone@elsewhere.example", "--auth", mech,
            "--auth-user", ALICE, "--timeout", "15"]
    r = subprocess.run(base + ["--auth-password", pw(ALICE)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "235 2.7.0" in out and "queued as" in out, out
    r = subprocess.run(base + ["--auth-password", "wrong"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode != 0 and "535 5.7.8" in out, out


# ---- SCRAM-SHA-256 ---------------------------------------------------------

@pytest.mark.parametrize("user", [BOB, DAVE])
@pytest.mark.parametrize("port", ["sub", "smtps"])
def test_scram_success_and_server_signature(auth_daemon, user, port):
    d = auth_daemon()
    with sub_client(d, port) as c:
        res = auth_scram(c, user, pw(user))
        assert res.reply.code == 235 and res.reply.enhanced == "2.7.0", res.reply
        assert res.server_ok is True
        assert c.cmd("MAIL FROM:<>").code == 250
    ev = d.wait_event("auth", result="ok")
    assert ev[-1].get("user") == user, ev


def test_scram_wrong_password(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        res = auth_scram(c, BOB, "not the password")
        assert res.server_first is not None
        assert res.reply.code == 535 and res.reply.enhanced == "5.7.8", res.reply
        assert auth_scram(c, BOB, pw(BOB)).reply.code == 235


def test_scram_unknown_user_looks_like_any_user(auth_daemon):
    """An unknown user gets a salt and fails at the proof, so that SCRAM
    does not tell which users exist; its salt stays the same over a reload
    and a restart, as a real user's does (comparing the salts before and
    after would tell them apart)."""
    d0 = auth_daemon(run=False)
    d = d0.launch()

    def salts():
        out = []
        for user in ("nosuchuser@test.example", BOB):
            with sub_client(d) as c:
                res = auth_scram(c, user, "whatever")
                assert res.reply.code == 535 and res.reply.enhanced == "5.7.8", res.reply
                out.append(dict(kv.split("=", 1) for kv in res.server_first.split(","))["s"])
        return out

    before = salts()
    assert salts() == before
    d.signal(signal.SIGHUP)
    d.wait_event("authd_started", count=2)
    assert salts() == before
    assert d.stop() == 0
    d = d0.launch()
    assert salts() == before
    st = os.stat(os.path.join(d.spool, "auth-fake.key"))
    assert st.st_mode & 0o777 == 0o600 and st.st_size == 32


def test_scram_crypt_user_cannot_but_plain_can(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        res = auth_scram(c, ALICE, pw(ALICE))
        assert res.reply.code == 535 and res.reply.enhanced == "5.7.8", res.reply
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_scram_tampered_nonce_fails(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        cn = "clientnonce123456"
        r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=bob,r=" + cn))
        assert r.code == 334, r
        sf = base64.b64decode(r.lines[0]).decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        final = "c=biws,r=%sX,p=%s" % (attrs["r"], b64(b"\0" * 32))
        r = c.cmd(b64(final))
        assert r.code in (501, 535), r
        assert auth_scram(c, BOB, pw(BOB)).reply.code == 235


def test_scram_channel_binding_flag_refused(auth_daemon):
    """'p=' asks for channel binding that the server does not offer
    (no -PLUS mechanism): the exchange must fail, never succeed."""
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("AUTH SCRAM-SHA-256 " + b64("p=tls-unique,,n=bob,r=abcdefgh"))
        assert r.code in (501, 535), r


# ---- credential store unreachable -----------------------------------------

def test_missing_passwd_file_tempfails_and_daemon_serves(auth_daemon, test_dir):
    # Missing at start, the file stops the start (test_config_values); gone
    # while the daemon runs, logins and lookups wait (454/451), never 535.
    d = auth_daemon()
    os.unlink(d.passwd_file)
    with sub_client(d) as c:
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        # The user may exist: a temporary refusal, never 550.
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code in (250, 451), r
        # postmaster needs no lookup (RFC 5321 section 4.5.1).
        r = c.cmd("RCPT TO:<postmaster@test.example>")
        assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: pm\r\n\r\nx\r\n.\r\n")
        assert c.reply(timeout=15).code == 250


def test_passwd_file_removed_then_restored(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
    saved = open(d.passwd_file).read()
    os.unlink(d.passwd_file)
    with sub_client(d) as c:
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    write_file(d.passwd_file, saved)
    with sub_client(d) as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235


def test_passwd_file_edit_takes_effect(auth_daemon, auth_entries):
    d = auth_daemon()
    with sub_client(d) as c:
        assert auth_plain(c, "erin@test.example", "Erin pw").code == 535
    with open(d.passwd_file, "a") as f:
        f.write("erin@test.example:%s\n" % scram_entry("Erin pw"))
    # mtime granularity: make the change visible even within one tick.
    st = os.stat(d.passwd_file)
    os.utime(d.passwd_file, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with sub_client(d) as c:
        assert auth_plain(c, "erin@test.example", "Erin pw").code == 235


def test_plain_scheme_entries_refused(auth_daemon):
    d = auth_daemon(users={"pat@test.example": "{PLAIN}cleartext",
                           "ann@test.example": "{SHA512-CRYPT}garbage"})
    with sub_client(d) as c:
        r = auth_plain(c, "pat@test.example", "cleartext")
        assert r.code in (454, 535), r
        r = auth_plain(c, "ann@test.example", "garbage")
        assert r.code in (454, 535), r


# ---- brute force -----------------------------------------------------------

def test_block_after_failures_refuses_correct_password(auth_daemon):
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="4",
                    auth_fail_window="1m", auth_fail_block_time="3s",
                    auth_fail_max_delay="100ms")
    with sub_client(d, "smtps") as c:
        for i in range(4):
            r = auth_plain(c, ALICE, "guess %d" % i)
            assert r.code == 535, (i, r)
    with sub_client(d, "smtps") as c:
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
        # The address is blocked, not only the user.
        r = auth_plain(c, CAROL, pw(CAROL))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    d.wait_event("auth", result="blocked")
    d.wait_event("auth_blocked")
    time.sleep(3.5)
    with sub_client(d, "smtps") as c:
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 235, r


def test_block_per_user_from_other_address(auth_daemon):
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="3",
                    auth_fail_window="1m", auth_fail_block_time="30s",
                    auth_fail_max_delay="100ms")
    with sub_client(d, "smtps") as c:
        for i in range(3):
            assert auth_plain(c, ALICE, "guess %d" % i).code == 535
    # Another client address: alice is blocked, carol is not.
    c = Client(d.smtps, tls=True, source="127.0.0.2")
    with c:
        c.ehlo()
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
        r = auth_plain(c, CAROL, pw(CAROL))
        assert r.code == 235, r


def test_block_per_user_counts_every_spelling_of_the_name(auth_daemon):
    # bob is stored without a domain: "bob", "bob@test.example" and
    # "BOB@other.example." all log in as bob, and all count as bob, or each
    # spelling would bring guesses of its own.
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="3",
                    auth_fail_window="1m", auth_fail_block_time="30s",
                    auth_fail_max_delay="100ms")
    for i, name in enumerate(["bob", "bob@test.example", "BOB@other.example."]):
        c = Client(d.smtps, tls=True, source="127.0.0.%d" % (10 + i))
        with c:
            c.ehlo()
            assert auth_plain(c, name, "guess %d" % i).code == 535
    c = Client(d.smtps, tls=True, source="127.0.0.20")
    with c:
        c.ehlo()
        r = auth_plain(c, "bob@test.example", pw(BOB))
        assert r.code == 454 and r.enhanced == "4.7.0", r


def test_failures_are_delayed(auth_daemon):
    d = auth_daemon(auth_fail_delay_after="1", auth_fail_block_after="5",
                    auth_fail_window="1m", auth_fail_max_delay="400ms")
    # A first check warms the auth process up (a cold first hash would
    # look like a delay); a success counts no failure.
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, CAROL, pw(CAROL)).code == 235
    times = []
    with sub_client(d, "smtps") as c:
        for i in range(5):
            t = time.monotonic()
            r = auth_plain(c, ALICE, "guess %d" % i)
            times.append(time.monotonic() - t)
            assert r.code == 535, (i, r)
        # Now blocked.
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    # No delay before the first failure; then growing up to the cap (plus
    # hashing, the time floor and scheduling, which all answers share: so
    # the first is compared with the others, not with a fixed time).
    assert times[0] + 0.2 < times[4], times
    assert times[1] >= times[0] + 0.05, times   # the delay begins at the second
    assert times[4] >= 0.3 and times[4] > times[1], times
    assert max(times) < 2.0, times


def test_success_clears_user_count(auth_daemon):
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="4",
                    auth_fail_window="1m", auth_fail_block_time="30s",
                    auth_fail_max_delay="50ms")
    # Different addresses so that only the user's count matters.
    for src in ("127.0.0.3", "127.0.0.4"):
        with Client(d.smtps, tls=True, source=src) as c:
            c.ehlo()
            for i in range(3):
                assert auth_plain(c, CAROL, "guess %d" % i).code == 535
        with Client(d.smtps, tls=True, source="127.0.0.5" if src.endswith("3")
                    else "127.0.0.6") as c:
            c.ehlo()
            assert auth_plain(c, CAROL, pw(CAROL)).code == 235


def test_success_does_not_clear_address_count(auth_daemon):
    """One valid account must not buy an address unlimited guesses at the
    others: failures for several users interleaved with successful logins
    from the same address end in the block."""
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="6",
                    auth_fail_window="1m", auth_fail_block_time="30s",
                    auth_fail_max_delay="20ms")
    codes = []
    with Client(d.smtps, tls=True, source="127.0.0.21") as c:
        c.ehlo()
        for rnd in range(8):
            for i in range(2):
                codes.append(auth_plain(c, "victim%d@test.example" % rnd, "guess %d" % i).code)
            r = auth_plain(c, BOB, pw(BOB))
            codes.append(r.code)
            if r.code == 454:
                break
            assert r.code == 235, (rnd, codes)
            # A new session to log in again (AUTH once per session).
            c.close()
            c = Client(d.smtps, tls=True, source="127.0.0.21")
            c.ehlo()
        assert 454 in codes, codes
        # Six failures: the seventh attempt and everything after is refused.
        assert codes.index(454) <= 8, codes
        assert auth_plain(c, BOB, pw(BOB)).code in (454, 503), codes
    with Client(d.smtps, tls=True, source="127.0.0.21") as c:
        c.ehlo()
        r = auth_plain(c, BOB, pw(BOB))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    # Bob himself is not blocked from elsewhere: only the address is.
    with Client(d.smtps, tls=True, source="127.0.0.22") as c:
        c.ehlo()
        assert auth_plain(c, BOB, pw(BOB)).code == 235


def test_failure_time_does_not_tell_if_user_exists(auth_daemon):
    """A wrong password for a SCRAM-SHA-256 user, a SHA512-CRYPT user and
    a BLF-CRYPT user, and any password for an unknown user, take about the
    same time: failures are answered no sooner than the slowest recent
    check."""
    d = auth_daemon(auth_fail_delay_after="1000", auth_fail_block_after="2000")
    who = {"unknown": "nobody-here@test.example", "scram": BOB, "sha512": ALICE,
           "blf": CAROL}
    times = {k: [] for k in who}
    n = 0
    for rnd in range(7):
        for kind, user in who.items():
            n += 1
            # A fresh address each time: no penalty count builds up.
            with Client(d.smtps, tls=True, source="127.0.%d.%d" % (40 + n // 200, n % 200 + 1)) as c:
                c.ehlo()
                t = time.monotonic()
                r = auth_plain(c, user, "not the password %d" % rnd)
                dt = time.monotonic() - t
                assert r.code == 535, (kind, r)
                if rnd:  # the first round warms up
                    times[kind].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["unknown"]
    for kind, m in med.items():
        assert 0.6 * base <= m <= 1.6 * base, (kind, med, times)


def test_reload_keeps_penalties(auth_daemon):
    """A reload replaces the auth process; its blocks carry over."""
    d = auth_daemon(auth_fail_delay_after="2", auth_fail_block_after="3",
                    auth_fail_window="5m", auth_fail_block_time="5m",
                    auth_fail_max_delay="20ms")
    with Client(d.smtps, tls=True, source="127.0.0.31") as c:
        c.ehlo()
        for i in range(3):
            assert auth_plain(c, ALICE, "guess %d" % i).code == 535
        assert auth_plain(c, CAROL, pw(CAROL)).code == 454
    # Counts below the block carry over too.
    with Client(d.smtps, tls=True, source="127.0.0.32") as c:
        c.ehlo()
        for i in range(2):
            assert auth_plain(c, CAROL, "guess %d" % i).code == 535
    d.signal(signal.SIGHUP)
    d.wait_event("reload")
    d.wait_event("authd_handoff")
    d.wait_event("authd_penalty_loaded")

    def answer(src, user, password):
        try:
            with Client(d.smtps, tls=True, source=src) as c:
                c.ehlo()
                return auth_plain(c, user, password).code
        except OSError:
            return None

    # The new auth process answers (a user never counted logs in) ...
    assert wait_until(lambda: answer("127.0.0.33", BOB, pw(BOB)) == 235, 10)
    # ... and the address and the user are still refused.
    assert answer("127.0.0.31", BOB, pw(BOB)) == 454
    assert answer("127.0.0.34", ALICE, pw(ALICE)) == 454
    # Carol had two failures: one more from anywhere blocks her.
    assert answer("127.0.0.35", CAROL, "guess 3") == 535
    assert answer("127.0.0.36", CAROL, pw(CAROL)) == 454
    assert d.events("authd_handoff_failed") == []


# ---- log -------------------------------------------------------------------

def test_log_never_holds_passwords(auth_daemon):
    d = auth_daemon(auth_fail_delay_after="100", auth_fail_block_after="200")
    wrong = "Wrong-Secret-%d" % os.getpid()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, wrong).code == 535
        assert auth_login(c, CAROL, wrong).code == 535
        assert auth_login(c, CAROL, pw(CAROL)).code == 235
    with sub_client(d) as c:
        assert auth_scram(c, BOB, pw(BOB)).reply.code == 235
    with sub_client(d) as c:
        r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (ALICE, wrong)) + "X")
        assert r.code == 501
    d.wait_event("auth", result="ok", count=3)
    d.wait_event("auth", result="failed", count=2)
    ok = d.events("auth_ok")
    assert any(e.get("user") == ALICE for e in ok), ok
    assert d.events("auth_failed"), d.log_tail(30)
    assert d.stop() == 0
    log = d.log_text()
    for secret in (pw(ALICE), pw(CAROL), pw(BOB), wrong):
        for form in (secret, b64(secret), b64("\0%s\0%s" % (ALICE, secret)),
                     b64("\0%s\0%s" % (CAROL, secret))):
            assert form not in log, form
        assert secret.split()[0] not in log
    with open(d.passwd_file) as f:
        for line in f:
            if ":" in line:
                h = line.strip().split(":", 1)[1]
                assert h not in log


def test_auth_log_fields(auth_daemon):
    d = auth_daemon()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, "wrong").code == 535
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
    ev = d.wait_event("auth", result="failed")
    assert ev[-1].get("user") == ALICE, ev
    assert ev[-1].get("session"), ev
    ev = d.wait_event("auth", result="ok")
    assert ev[-1].get("user") == ALICE, ev
    assert d.events("auth_failed") and d.events("auth_ok"), d.log_tail(20)


# ---- password commands -----------------------------------------------------

def _crypt_ok(stored, password):
    h = stored.split("}", 1)[1]
    return crypt.crypt(password, h) == h


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "BLF-CRYPT", "YESCRYPT"])
def test_bpw_crypt_schemes(auth_daemon, scheme):
    d = auth_daemon(run=False)
    r = d.cli("-bpw", scheme, input=b"Pw for bpw\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().strip()
    assert out.startswith("{%s}" % scheme), out
    assert "Pw for bpw" not in out
    assert _crypt_ok(out, "Pw for bpw"), out
    assert not _crypt_ok(out, "Pw for bpx"), out


def test_bpw_scram(auth_daemon):
    d = auth_daemon(run=False)
    r = d.cli("-bpw", "SCRAM-SHA-256", input=b"scram pw\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().strip()
    assert out.startswith("{SCRAM-SHA-256}"), out
    it, salt, stored, server = out.split("}", 1)[1].split(",")
    salt = base64.b64decode(salt)
    salted = hashlib.pbkdf2_hmac("sha256", b"scram pw", salt, int(it))
    ck = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored) == hashlib.sha256(ck).digest()
    assert base64.b64decode(server) == hmac.new(salted, b"Server Key",
                                                hashlib.sha256).digest()


def test_bpw_unknown_scheme_fails(auth_daemon):
    d = auth_daemon(run=False)
    r = d.cli("-bpw", "PLAIN", input=b"x\n")
    assert r.returncode != 0 and not r.stdout.strip(), r


def test_buseradd_then_login(auth_daemon):
    d = auth_daemon(run=False)
    r = d.cli("-buseradd", "erin@test.example", input=b"Erin secret\n")
    assert r.returncode == 0, r.stderr
    r = d.cli("-buseradd", "fred@test.example", "SCRAM-SHA-256", input=b"Fred secret\n")
    assert r.returncode == 0, r.stderr
    # A password with a no-break space and the "fi" ligature: SCRAM clients
    # hash its SASLprep form "p\u00e4ss wfi" (RFC 5802 2.2, RFC 4013).
    r = d.cli("-buseradd", "gus@test.example", "SCRAM-SHA-256",
              input="p\u00e4ss\u00a0w\ufb01\n".encode())
    assert r.returncode == 0, r.stderr
    # A UTF-8 user name (RFC 4616: the identity is UTF-8), as SQLite takes.
    r = d.cli("-buseradd", "zo\u00eb@test.example", input=b"Zoe secret\n")
    assert r.returncode == 0, r.stderr
    # SASLprep prohibits control characters: such a SCRAM password is refused.
    r = d.cli("-buseradd", "hal@test.example", "SCRAM-SHA-256", input=b"bell\x07\n")
    assert r.returncode != 0 and b"SASLprep" in r.stderr, r
    # Replacing keeps one line per user.
    r = d.cli("-buseradd", ALICE, "SHA512-CRYPT", input=b"Alice new\n")
    assert r.returncode == 0, r.stderr
    text = open(d.passwd_file).read()
    assert "Erin secret" not in text and "Fred secret" not in text
    assert sum(1 for l in text.splitlines() if l.startswith(ALICE + ":")) == 1, text
    assert any(l.startswith(CAROL + ":") for l in text.splitlines()), text
    st = os.stat(d.passwd_file)
    assert not st.st_mode & 0o002, oct(st.st_mode)
    d = d.launch()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, "erin@test.example", "Erin secret").code == 235
    with sub_client(d, "smtps") as c:
        assert auth_scram(c, "fred@test.example", "Fred secret").reply.code == 235
    with sub_client(d, "smtps") as c:
        assert auth_scram(c, "gus@test.example", "p\u00e4ss wfi").reply.code == 235
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, "zo\u00eb@test.example", "Zoe secret").code == 235
    assert not d.events("auth_file_error")
    with sub_client(d, "smtps") as c:
        # PLAIN sends the password as typed; it is prepared the same way.
        assert auth_plain(c, "gus@test.example", "p\u00e4ss\u00a0w\ufb01").code == 235
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 535
        assert auth_plain(c, ALICE, "Alice new").code == 235
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, CAROL, pw(CAROL)).code == 235


# ---- SQLite backend --------------------------------------------------------

def make_sqlite(path, users=(), aliases=(), senders=()):
    sql = ["CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT NOT NULL);",
           "CREATE TABLE aliases (address TEXT NOT NULL, target TEXT NOT NULL);",
           "CREATE TABLE senders (login TEXT NOT NULL, pattern TEXT NOT NULL);"]
    q = lambda s: "'" + s.replace("'", "''") + "'"  # noqa: E731
    for u, h in users:
        sql.append("INSERT INTO users VALUES (%s, %s);" % (q(u), q(h)))
    for a, t in aliases:
        sql.append("INSERT INTO aliases VALUES (%s, %s);" % (q(a), q(t)))
    for l, p in senders:
        sql.append("INSERT INTO senders VALUES (%s, %s);" % (q(l), q(p)))
    subprocess.run(["sqlite3", path], input="\n".join(sql).encode(), check=True, timeout=30)
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def sqlite_daemon(auth_daemon, auth_entries, test_dir):
    def start(**kw):
        db = os.path.join(test_dir, "users.db")
        make_sqlite(db, users=[(ALICE, auth_entries[ALICE]), (BOB, auth_entries[BOB])],
                    aliases=[("info@test.example", ALICE), ("@other.example", BOB)],
                    senders=[(ALICE, "*@partner.example"), (BOB, "boss@test.example")])
        d = auth_daemon(auth_backend="sqlite", auth_sqlite_database=db, **kw)
        d.db = db
        return d
    return start


def test_sqlite_matches_any_case(sqlite_daemon):
    # The tables above have the default (binary) collation: logins and
    # addresses still match in any case, as with a passwd-file (domains
    # are case-insensitive, RFC 5321 2.4).
    d = sqlite_daemon()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE.upper(), pw(ALICE)).code == 235
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        for a in ("alice@TEST.EXAMPLE", "info@Test.Example", "anything@OTHER.example"):
            assert c.cmd("RCPT TO:<%s>" % a).code == 250, a


def test_sqlite_login_and_policy(sqlite_daemon):
    d = sqlite_daemon()
    with sub_client(d, "smtps") as c:
        assert auth_plain(c, ALICE, pw(ALICE)).code == 235
        for s in (ALICE, "info@test.example", "anyone@partner.example", ""):
            r = c.cmd("MAIL FROM:<%s>" % s)
            assert r.code == 250, (s, r)
            assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<boss@test.example>")
        assert r.code == 553 and r.enhanced == "5.7.1", r
    with sub_client(d) as c:
        assert auth_scram(c, BOB, pw(BOB)).reply.code == 235
        for s in ("bob@test.example", "boss@test.example"):
            assert c.cmd("MAIL FROM:<%s>" % s).code == 250, s
            c.cmd("RSET")
        assert c.cmd("MAIL FROM:<x@partner.example>").code == 553
    with sub_client(d) as c:
        assert auth_plain(c, CAROL, pw(CAROL)).code == 535
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        for a in (ALICE, "info@test.example", "anything@other.example", "bob@test.example",
                  "postmaster@test.example"):
            assert c.cmd("RCPT TO:<%s>" % a).code == 250, a
        r = c.cmd("RCPT TO:<nobody@test.example>")
        assert r.code == 550 and r.enhanced == "5.1.1", r


def test_sqlite_changes_seen_while_running(sqlite_daemon, auth_entries):
    d = sqlite_daemon()
    with sub_client(d) as c:
        assert auth_plain(c, CAROL, pw(CAROL)).code == 535
    subprocess.run(["sqlite3", d.db, "INSERT INTO users VALUES ('%s', '%s');"
                    % (CAROL, auth_entries[CAROL])], check=True, timeout=30)
    with sub_client(d) as c:
        assert auth_plain(c, CAROL, pw(CAROL)).code == 235


def test_sqlite_corrupt_database(sqlite_daemon):
    d = sqlite_daemon()
    with open(d.db, "r+b") as f:
        f.write(b"this is not an sqlite database" * 40)
    with sub_client(d, "smtps") as c:
        r = auth_plain(c, ALICE, pw(ALICE))
        assert r.code == 454 and r.enhanced == "4.7.0", r
    with sub_client(d) as c:
        r = auth_scram(c, BOB, pw(BOB)).reply
        assert r.code == 454 and r.enhanced == "4.7.0", r
    # The daemon keeps serving: the MX port takes mail (recipient lookups
    # fail temporarily, never with a 5xx for a user that may exist).
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
        r = c.cmd("RCPT TO:<%s>" % ALICE)
        assert r.code in (250, 451), r
        assert c.cmd("RCPT TO:<postmaster@test.example>").code == 250
    assert d.proc.poll() is None


def test_sqlite_missing_database(auth_daemon, test_dir):
    # Refused at start and by -bV, with what to do; and never created by
    # the check (an empty database would pass for "no users").
    missing = os.path.join(test_dir, "missing.db")
    d = auth_daemon(auth_backend="sqlite", auth_sqlite_database=missing, run=False)
    r = d.cli("-bV")
    assert r.returncode != 0, r
    assert "auth_sqlite_database %s cannot be read" % missing in r.stderr.decode(), r
    with pytest.raises(AssertionError, match="before being ready"):
        d.launch()
    assert not os.path.exists(missing)


def test_buseradd_sqlite_creates_tables(auth_daemon, test_dir):
    db = os.path.join(test_dir, "new.db")
    d = auth_daemon(auth_backend="sqlite", auth_sqlite_database=db, run=False)
    r = d.cli("-buseradd", "gina@test.example", input=b"Gina secret\n")
    assert r.returncode == 0, r.stderr
    r = d.cli("-buseradd", "gina@test.example", "SCRAM-SHA-256", input=b"Gina new\n")
    assert r.returncode == 0, r.stderr
    out = subprocess.run(["sqlite3", db, "SELECT name, password FROM users;"],
                         stdout=subprocess.PIPE, check=True, timeout=30).stdout.decode()
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gina@test.example|{SCRAM-SHA-256}"), out
    tables = subprocess.run(["sqlite3", db, ".tables"], stdout=subprocess.PIPE, check=True,
                            timeout=30).stdout.decode().split()
    assert {"users", "aliases", "senders"} <= set(tables), tables
    os.chmod(db, 0o644)
    d = d.launch()
    with sub_client(d) as c:
        assert auth_scram(c, "gina@test.example", "Gina new").reply.code == 235


# ---- more edges --------------------------------------------------------------

def test_auth_process_runs_as_user_not_chrooted(auth_daemon):
    import pwd
    from helpers import proc_uids
    d = auth_daemon()
    ev = d.wait_event("authd_started")
    pid = int(ev[-1]["pid"])
    nobody = pwd.getpwnam("nobody").pw_uid
    assert proc_uids(pid) == [nobody] * 4, proc_uids(pid)
    assert os.readlink("/proc/%d/root" % pid) == "/"


def test_mechanism_name_case_insensitive(auth_daemon):
    d = auth_daemon()
    with sub_client(d) as c:
        r = c.cmd("auth plain " + b64("\0%s\0%s" % (ALICE, pw(ALICE))))
        assert r.code == 235, r


def test_scram_username_escapes(auth_daemon, auth_entries):
    """saslname escapes ',' as =2C and '=' as =3D (RFC 5802 section 5.1)."""
    odd = "we=ird,one@test.example"
    users = dict(auth_entries)
    users[odd] = scram_entry("odd pw")
    d = auth_daemon(users=users)
    with sub_client(d) as c:
        res = auth_scram(c, odd, "odd pw")
        assert res.reply.code == 235 and res.server_ok, res.reply
    with sub_client(d) as c:
        assert auth_plain(c, odd, "odd pw").code == 235
    with sub_client(d) as c:
        # A raw ',' in the name is malformed.
        r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=we=ird,one@test.example,r=abcdefgh"))
        assert r.code in (501, 535), r


@pytest.mark.parametrize("name", ["evil:{PLAIN}x", "a\nroot", "", "with space@test.example",
                                  "#comment"])
def test_buseradd_refuses_bad_names(auth_daemon, name):
    d = auth_daemon(run=False)
    before = open(d.passwd_file).read()
    r = d.cli("-buseradd", name, input=b"Some password\n")
    assert r.returncode != 0, (name, r)
    assert open(d.passwd_file).read() == before


def test_buseradd_refuses_empty_password(auth_daemon):
    d = auth_daemon(run=False)
    before = open(d.passwd_file).read()
    r = d.cli("-buseradd", "erin@test.example", input=b"\n")
    assert r.returncode != 0, r
    assert open(d.passwd_file).read() == before
