"""ACLs per listener and stage against the real daemon, and the optional
From: header ownership check on submission."""
from conftest import AUTH_USERS
from helpers import Client, auth_plain

ALICE = "alice@test.example"

ACLS = """
acl mx_connect {
    deny message = "550 5.7.1 Network blocked" client = 127.0.0.2
}
acl mx_rcpt {
    warn message = "rcpt to other.example" recipient_domain = other.example
    defer message = "451 4.7.1 Slow down" rate > 3 / 1h per client
}
acl mx_data {
    deny message = "550 5.7.1 Subject required" !header = subject
}
"""


def mx_daemon(auth_daemon):
    return auth_daemon(extra=ACLS, mx_extra=("acl_connect = mx_connect", "acl_rcpt = mx_rcpt",
                                             "acl_data = mx_data"))


def test_connect_acl_refuses_a_network(auth_daemon):
    d = mx_daemon(auth_daemon)
    c = Client(d.ports["mx"], source="127.0.0.2")
    assert c.greeting.code == 554 and "Network blocked" in c.greeting.lines[0], c.greeting
    c.close()
    ok = Client(d.ports["mx"])
    assert ok.greeting.code == 220
    ok.close()
    # Other listeners have no such ACL.
    sub = Client(d.ports["sub"], source="127.0.0.2")
    assert sub.greeting.code == 220
    sub.close()
    assert d.events("refused", reply="554 5.7.1 Network blocked")


def test_rcpt_rate_and_warn(auth_daemon):
    d = mx_daemon(auth_daemon)
    c = Client(d.ports["mx"])
    c.ehlo()
    assert c.cmd("MAIL FROM:<x@remote.example>").code == 250
    codes = [c.cmd("RCPT TO:<%s>" % ALICE).code for _ in range(5)]
    # The fourth recipient within the hour is over "rate > 3".  (Counters
    # are per worker process: one session stays on one worker.)
    assert codes == [250, 250, 250, 451, 451], codes
    assert c.cmd("RCPT TO:<carol@other.example>").code == 451
    c.close()
    ev = d.wait_event("acl_warn")
    assert ev[0]["msg"] == "rcpt to other.example", ev


def test_data_acl_header_required(auth_daemon):
    d = mx_daemon(auth_daemon)
    c = Client(d.ports["mx"])
    c.ehlo()
    assert c.cmd("MAIL FROM:<x@remote.example>").code == 250
    assert c.cmd("RCPT TO:<%s>" % ALICE).code == 250
    assert c.cmd("DATA").code == 354
    r = c.cmd("From: x@remote.example\r\n\r\nno subject\r\n.")
    assert r.code == 550 and "Subject required" in r.lines[0], r
    assert c.cmd("MAIL FROM:<x@remote.example>").code == 250
    assert c.cmd("RCPT TO:<%s>" % ALICE).code == 250
    assert c.cmd("DATA").code == 354
    r = c.cmd("Subject: hi\r\n\r\nbody\r\n.")
    assert r.code == 250, r
    c.close()
    assert len(d.queue_ids()) == 1


def test_acl_config_errors(auth_daemon):
    d = auth_daemon(run=False, extra="acl a {\n    deny size > 10M\n}\n",
                    mx_extra=("acl_rcpt = a",))
    r = d.cli("-bV")
    assert r.returncode != 0
    assert b"size" in r.stderr and b"rcpt" in r.stderr, r.stderr
    d = auth_daemon(run=False, mx_extra=("acl_rcpt = missing",))
    r = d.cli("-bV")
    assert r.returncode != 0 and b"missing" in r.stderr, r.stderr


def from_check_session(auth_daemon):
    """A daemon with submission_check_from and a session of alice's on 465."""
    d = auth_daemon(submission_check_from="yes")
    c = Client(d.ports["smtps"], tls=True)
    c.ehlo()
    assert auth_plain(c, ALICE, AUTH_USERS[ALICE][0]).code == 235
    return d, c


def send_with_from(c, from_line, sender=ALICE):
    """One message whose header starts with from_line; the final reply."""
    assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
    assert c.cmd("RCPT TO:<friend@remote.example>").code == 250
    assert c.cmd("DATA").code == 354
    return c.cmd(from_line + "\r\nSubject: x\r\n\r\nhi\r\n.")


def test_from_header_check(auth_daemon):
    d, c = from_check_session(auth_daemon)
    r = send_with_from(c, "From: Boss <boss@test.example>")
    assert r.code == 550 and r.lines[0].startswith("5.7.1"), r
    r = send_with_from(c, 'From: "Alice, A." <%s>' % ALICE)
    assert r.code == 250, r
    # A quoted local part that needs no quotes is the same mailbox (RFC
    # 5322 3.4.1, RFC 5321 4.1.2), as MAIL FROM already takes it; a quoted
    # one that differs is another mailbox.
    for field, code in (('"alice"@test.example', 250),
                        ('Alice <"al\\ice"@test.example>', 250),
                        ('"alice "@test.example', 550)):
        r = send_with_from(c, "From: " + field, sender='"alice"@test.example')
        assert r.code == code, (field, r)
    c.close()
    assert len(d.queue_ids()) == 3


def test_from_header_display_name_that_reads_as_an_address(auth_daemon):
    # "victim@x <me@y>": the address is the user's own, but mail clients
    # show the unquoted '@' name as the sender (RFC 5322 3.4 forbids it);
    # a NUL byte in the field likewise.  Both cannot be parsed: 550 5.6.0.
    d, c = from_check_session(auth_daemon)
    for field in ("From: boss@test.example <%s>" % ALICE,
                  "From: boss@test.example\x00<%s>" % ALICE):
        r = send_with_from(c, field)
        assert r.code == 550 and r.lines[0].startswith("5.6.0"), (field, r)
    r = send_with_from(c, 'From: "boss@test.example" <%s>' % ALICE)
    assert r.code == 250, r
    c.close()


def test_bh_prints_acl_verdicts(auth_daemon):
    d = mx_daemon(auth_daemon)
    script = ("EHLO c\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<carol@other.example>\r\n"
              "DATA\r\nFrom: x@remote.example\r\n\r\nhi\r\n.\r\nQUIT\r\n").encode()
    r = d.cli("-bh", "127.0.0.2", "-oMi", str(d.ports["mx"]), input=script)
    out = r.stdout.decode()
    assert ">>> acl=mx_connect line=" in out and "stage=connect: deny (rule)" in out, out
    assert "554 5.7.1 Network blocked" in out
    r = d.cli("-bh", "127.0.0.1", "-oMi", str(d.ports["mx"]), input=script)
    out = r.stdout.decode()
    assert "stage=connect: accept (end of acl)" in out, out
    assert "stage=rcpt: rcpt to other.example" in out, out     # the warn rule
    assert "stage=rcpt: accept (end of acl)" in out, out
    assert "stage=data: deny (rule)" in out and "550 5.7.1 Subject required" in out, out
