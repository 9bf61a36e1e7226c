"""Exim-style test modes: -bh (a session as if from an address, printing
every policy decision, queueing nothing) and -bt (how an address resolves)."""
import base64
import os

from conftest import AUTH_USERS

ALICE = "alice@test.example"


def bh(d, ip, port, lines):
    script = "".join(l + "\r\n" for l in lines).encode()
    r = d.cli("-bh", ip, "-oMi", "%s.%d" % ("127.0.0.1", port), input=script, timeout=30)
    return r.returncode, r.stdout.decode(errors="replace")


def queue_count(d):
    r = d.cli("-bpc")
    return int(r.stdout.decode().strip())


def test_bh_mx_decisions(auth_daemon):
    d = auth_daemon(run=False)
    rc, out = bh(d, "192.0.2.7", d.ports["mx"], [
        "EHLO client.example", "MAIL FROM:<a@b.example>", "RCPT TO:<%s>" % ALICE,
        "RCPT TO:<nobody@test.example>", "RCPT TO:<x@remote.example>", "DATA",
        "Subject: t", "", "hi", ".", "QUIT"])
    assert rc == 0, out
    assert "test session from 192.0.2.7 to port %d: role mx" % d.ports["mx"] in out
    assert ">>> recipient lookup <%s>: local" % ALICE in out
    assert ">>> recipient lookup <nobody@test.example>: unknown" in out
    assert "550 5.1.1" in out and "550 5.7.1 Relaying denied" in out
    assert "-bh queues nothing" in out and "250 2.0.0" in out
    assert queue_count(d) == 0


def test_bh_submission_requires_tls_then_auth(auth_daemon):
    d = auth_daemon(run=False)
    pw = AUTH_USERS[ALICE][0]
    plain = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + pw.encode()).decode()
    rc, out = bh(d, "198.51.100.1", d.ports["sub"], [
        "EHLO c", "MAIL FROM:<%s>" % ALICE, "STARTTLS", "EHLO c", "MAIL FROM:<%s>" % ALICE,
        "AUTH PLAIN " + plain, "MAIL FROM:<eve@test.example>", "MAIL FROM:<%s>" % ALICE,
        "RCPT TO:<x@remote.example>", "DATA", "Subject: t", "", "hi", ".", "QUIT"])
    assert rc == 0, out
    assert "530 5.7.0 Must issue a STARTTLS command first" in out
    assert ">>> STARTTLS: TLS is simulated" in out
    assert "530 5.7.0 Authentication required" in out
    assert "235 2.7.0" in out
    assert ">>> sender lookup <eve@test.example>: not owned" in out
    assert "553 5.7.1" in out
    assert ">>> adding missing header(s): Date Message-ID" in out
    assert pw not in out and plain not in out
    assert queue_count(d) == 0


def test_bh_wrong_password_and_bad_ip(auth_daemon):
    d = auth_daemon(run=False)
    bad = base64.b64encode(b"\0" + ALICE.encode() + b"\0wrong").decode()
    rc, out = bh(d, "::1", d.ports["smtps"], ["EHLO c", "AUTH PLAIN " + bad, "QUIT"])
    assert rc == 0, out
    assert "TLS on connect" in out
    assert "535 5.7.8" in out
    r = d.cli("-bh", "not-an-ip", input=b"QUIT\r\n")
    assert r.returncode == 64


def test_bt_resolves(auth_daemon, test_dir):
    aliases = os.path.join(test_dir, "aliases")
    with open(aliases, "w") as f:
        f.write("info: %s, bob@remote.example\n" % ALICE)
    os.chmod(aliases, 0o644)
    d = auth_daemon(run=False, aliases_file=aliases)

    def bt(a):
        r = d.cli("-bt", a)
        return r.returncode, r.stdout.decode()
    rc, out = bt(ALICE)
    assert rc == 0 and "local user %s (passwd-file)" % ALICE in out, out
    rc, out = bt("info@test.example")
    assert "alias (aliases_file) -> %s" % ALICE in out, out
    assert "alias (aliases_file) -> bob@remote.example" in out, out
    rc, out = bt("nobody@test.example")
    assert "550 5.1.1" in out, out
    rc, out = bt("someone@remote.example")
    assert "is remote" in out and "550 5.7.1" in out, out
    rc, out = bt("not an address")
    assert rc == 1 and "not a valid address" in out, out
