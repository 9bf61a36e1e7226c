"""AUTH data never reaches the log: an AUTH line in any spelling (a TAB
instead of the space, any letter case, a verb that only starts with AUTH)
is logged as "AUTH" at most with its mechanism, and the SASL responses a
client sends after a refused AUTH are not logged at all, on every kind of
port."""
import base64

import pytest

from helpers import open_session

ALICE = "alice@test.example"


def plain_ir(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


def secrets_of(password, ir):
    """Every form of the secret that must not be in the log."""
    b64pw = base64.b64encode(password.encode()).decode()
    return [ir, ir[:16], password, b64pw, b64pw.rstrip("=")]


def session(d, kind):
    """A session past EHLO on a port of the given kind."""
    return open_session(d, "sub" if kind == "sub-tls" else kind)


# port kind -> the reply to an AUTH line that is no AUTH command
KINDS = {
    "mx": "500 5.5.1",
    "sub-plain": "530 5.7.0",   # 587 before STARTTLS
    "sub-tls": "500 5.5.1",     # 587 inside TLS
    "smtps": "500 5.5.1",       # 465
}


def assert_no_secret(d, secrets):
    log = d.log_text()
    for s in secrets:
        assert s not in log, "secret %r in the log:\n%s" % (s, d.log_tail(30))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tab_after_auth_not_logged(auth_daemon, kind):
    d = auth_daemon()
    password = d.passwords[ALICE]
    ir = plain_ir(ALICE, password)
    before = len(d.events("refused"))
    with session(d, kind) as c:
        r = c.cmd("AUTH\tPLAIN " + ir)
        assert "%d %s" % (r.code, r.enhanced) == KINDS[kind], r
        # The session goes on.
        assert c.cmd("NOOP").code == 250
        c.cmd("QUIT")
    evs = d.wait_event("refused", count=before + 1)
    assert evs[-1]["cmd"] == "AUTH", evs[-1]
    assert evs[-1]["reply"].startswith(KINDS[kind]), evs[-1]
    assert_no_secret(d, secrets_of(password, ir))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_auth_spellings_not_logged(auth_daemon, kind):
    d = auth_daemon()
    password = d.passwords[ALICE]
    ir = plain_ir(ALICE, password)
    b64pw = base64.b64encode(password.encode()).decode()
    lines = [
        "auth\tplain " + ir,
        "AUTHX " + ir,
        "AuthPlain " + ir,
        "AUTH\x0bPLAIN " + ir,
        " AUTH PLAIN " + ir,
        "AUTH PLAIN\t" + ir,
    ]
    before = len(d.events("refused"))
    with session(d, kind) as c:
        for ln in lines:
            r = c.cmd(ln)
            assert r.code >= 500, (ln, r)
        c.cmd("QUIT")
    evs = d.wait_event("refused", count=before + len(lines))[before:]
    assert all(e["cmd"] == "AUTH" for e in evs), evs
    assert_no_secret(d, secrets_of(password, ir) + [b64pw])


@pytest.mark.parametrize("kind", ["mx", "sub-plain"])
def test_responses_after_refused_auth_not_logged(auth_daemon, kind):
    """A client that sends its LOGIN responses although AUTH was refused
    (no AUTH on the MX port, no TLS yet on 587)."""
    d = auth_daemon()
    password = d.passwords[ALICE]
    user64 = base64.b64encode(ALICE.encode()).decode()
    pw64 = base64.b64encode(password.encode()).decode()
    before = len(d.events("refused"))
    with session(d, kind) as c:
        r = c.cmd("AUTH LOGIN")
        assert r.code in (502, 530), r
        assert c.cmd(user64).code >= 500
        assert c.cmd(pw64).code >= 500
        c.cmd("QUIT")
    evs = d.wait_event("refused", count=before + 3)[before:]
    assert evs[0]["cmd"] == "AUTH LOGIN", evs
    assert all("not logged" in e["cmd"] for e in evs[1:]), evs
    assert_no_secret(d, [user64, pw64, password])


def test_over_long_response_not_logged(auth_daemon):
    """An exchange line over the limit, and the response sent after it."""
    d = auth_daemon()
    password = d.passwords[ALICE]
    pw64 = base64.b64encode(password.encode()).decode()
    with session(d, "smtps") as c:
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(base64.b64encode(ALICE.encode()).decode()).code == 334
        r = c.cmd(pw64 * 400)
        assert r.code == 500, r
        assert c.cmd(pw64).code == 500
        assert c.cmd("NOOP").code == 250
        c.cmd("QUIT")
    d.wait_event("refused", count=2)
    assert_no_secret(d, [pw64, password])
