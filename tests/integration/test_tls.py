"""TLS: STARTTLS on the MX and submission ports, TLS on connect (465),
version policy per port, STARTTLS injection, real TLS clients."""
import smtplib
import socket
import ssl
import subprocess

import pytest

from helpers import (
    HOSTNAME,
    Client,
    client_ctx,
    make_body,
    tls11_ctx,
)


def test_starttls_on_mx(daemon):
    with Client(daemon.mx) as c:
        r = c.ehlo()
        assert any(l.upper() == "STARTTLS" for l in r.lines[1:]), r
        r = c.starttls()
        assert c.tls.version() in ("TLSv1.2", "TLSv1.3")
        assert not any(l.upper().startswith("STARTTLS") for l in r.lines[1:]), r
        r = c.cmd("STARTTLS")
        assert 500 <= r.code < 600 and r.enhanced.startswith("5."), r
        version = c.tls.version()
        cipher = c.tls.cipher()[0]
        r = c.mail_transaction(body=make_body("over tls"))
        assert r.code == 250 and r.queue_id, r
        assert c.cmd("QUIT").code == 221
    sp = daemon.spool_msg(r.queue_id)
    assert sp.env("tls") == ["%s %s" % (version, cipher)], sp.env_lines
    assert sp.message.startswith(b"Received: "), sp.message[:200]
    received = sp.headers().split("\r\n")
    recv = received[0]
    for l in received[1:]:
        if l[:1] in (" ", "\t"):
            recv += " " + l.strip()
        else:
            break
    assert "role=mx" in recv, recv
    assert "tls=" + version in recv, recv
    assert "cipher=" + cipher in recv, recv
    assert "ESMTPS" in recv, recv
    ev = daemon.wait_event("tls", version=version)
    assert ev[-1].get("cipher") == cipher, ev


def test_starttls_with_argument_refused(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd("STARTTLS now")
        assert r.code == 501 and r.enhanced.startswith("5.5."), r
        assert c.cmd("NOOP").code == 250


def test_starttls_before_ehlo_state_forgotten(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.example>").code == 250
        c.starttls(ehlo=False)
        # RFC 3207 4.2: everything from before TLS is forgotten.
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code == 503, r


@pytest.mark.parametrize("port_name", ["mx", "sub"])
def test_starttls_command_injection(daemon, port_name):
    port = daemon.ports[port_name]
    with Client(port) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        r = c.reply()
        assert r.code == 220, r
        assert c.silent_for(0.3), "plaintext after the STARTTLS reply: %r" % c.buf
        c._wrap()
        # Nothing arrives inside TLS before the client speaks: the NOOP
        # sent before the handshake was discarded.
        assert c.silent_for(0.5), "reply inside TLS to an injected command: %r" % c.buf
        c.send(b"EHLO client.example\r\n")
        r = c.reply()
        assert r.code == 250 and r.lines[0].startswith(HOSTNAME), r
        assert len(r.lines) > 1, "first reply inside TLS is not the EHLO reply: %r" % r
        assert c.cmd("NOOP").code == 250
        assert c.silent_for(0.3), c.buf


def test_465_greeting_only_inside_tls(daemon):
    s = socket.create_connection(("127.0.0.1", daemon.smtps), timeout=5)
    try:
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            data = s.recv(100)
            raise AssertionError("plaintext before TLS on port 465: %r" % data)
    finally:
        s.close()
    with Client(daemon.smtps, tls=True) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines[0].startswith(HOSTNAME)
        r = c.ehlo()
        assert not any(l.upper().startswith("STARTTLS") for l in r.lines[1:]), r
        r = c.cmd("STARTTLS")
        assert 500 <= r.code < 600, r
        # Submission: no mail without authentication, even inside TLS.
        r = c.cmd("MAIL FROM:<user@test.example>")
        assert r.code == 530 and r.enhanced == "5.7.0", r
        assert c.cmd("NOOP").code == 250


def test_465_plaintext_client_gets_nothing_useful(daemon):
    with Client(daemon.smtps, greet=False) as c:
        c.send(b"EHLO client.example\r\n")
        # The server reads that as a broken TLS ClientHello: it must not
        # answer with SMTP.
        assert c.wait_closed(5) or c.silent_for(0.1)
        assert b"250" not in c.buf and b"220" not in c.buf, c.buf


def alpn_ctx(protocols):
    ctx = client_ctx()
    ctx.set_alpn_protocols(protocols)
    return ctx


@pytest.mark.parametrize("port_name", ["smtps", "sub", "mx"])
def test_alpn_of_another_protocol_is_refused(daemon, port_name):
    # RFC 7301 3.2 / ALPACA: a TLS client that means to speak HTTP gets the
    # no_application_protocol alert, on TLS on connect and after STARTTLS.
    port = daemon.ports[port_name]
    with Client(port, greet=port_name != "smtps") as c:
        if port_name != "smtps":
            c.ehlo()
            assert c.cmd("STARTTLS").code == 220
        with pytest.raises(ssl.SSLError) as ei:
            c._wrap(alpn_ctx(["http/1.1", "h2"]))
        assert "no application protocol" in str(ei.value), ei.value


@pytest.mark.parametrize("protocols", [None, ["smtp"], ["h2", "smtp"]])
def test_alpn_smtp_or_none_is_served(daemon, protocols):
    ctx = alpn_ctx(protocols) if protocols else client_ctx()
    with Client(daemon.smtps, tls=True, ctx=ctx) as c:
        assert c.greeting.code == 220
        assert c.tls.selected_alpn_protocol() == ("smtp" if protocols else None)
        assert c.ehlo().code == 250


@pytest.mark.parametrize("port_name", ["mx", "smtps"])
def test_http_request_ends_the_session(daemon, port_name):
    # A browser's request (cross-protocol attack) gets one 421 and the
    # connection ends: SMTP commands in its body are never run.
    port = daemon.ports[port_name]
    with Client(port, tls=port_name == "smtps") as c:
        c.send(b"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n"
               b"EHLO evil.example\r\nMAIL FROM:<a@b.example>\r\n")
        assert c.wait_closed(5), c.buf
        assert c.buf.startswith(b"421 4.7.0 "), c.buf
        assert c.buf.count(b"\r\n") == 1, c.buf
    ev = daemon.wait_event("refused")
    assert any("POST /form" in e.get("cmd", "") for e in ev), ev


def test_587_requires_tls_first(daemon):
    with Client(daemon.sub) as c:
        assert c.greeting.code == 220
        r = c.ehlo()
        assert any(l.upper() == "STARTTLS" for l in r.lines[1:]), r
        for cmd in ("MAIL FROM:<user@test.example>", "RCPT TO:<user@test.example>", "DATA",
                    "VRFY user", "EXPN list", "HELP", "BDAT 0 LAST"):
            r = c.cmd(cmd)
            assert r.code == 530 and r.enhanced == "5.7.0", (cmd, r)
        for cmd, code in (("NOOP", 250), ("RSET", 250), ("HELO client.example", 250)):
            r = c.cmd(cmd)
            assert r.code == code, (cmd, r)
        r = c.starttls()
        assert not any(l.upper().startswith("STARTTLS") for l in r.lines[1:]), r
        assert c.tls.version() in ("TLSv1.2", "TLSv1.3")
        r = c.cmd("MAIL FROM:<user@test.example>")
        assert r.code == 530 and r.enhanced == "5.7.0", r
        r = c.cmd("QUIT")
        assert r.code == 221
    assert daemon.queue_ids() == []


def test_smtplib_submission_ports(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.sub, timeout=10) as s:
        s.ehlo("client.example")
        assert s.has_extn("starttls")
        s.starttls(context=client_ctx())
        s.ehlo("client.example")
        assert not s.has_extn("starttls")
        code, msg = s.mail("user@test.example")
        assert code == 530 and msg.startswith(b"5.7.0"), (code, msg)
    with smtplib.SMTP_SSL("127.0.0.1", daemon.smtps, timeout=10, context=client_ctx()) as s:
        code, msg = s.ehlo("client.example")
        assert code == 250
        assert not s.has_extn("starttls")
        code, msg = s.mail("user@test.example")
        assert code == 530 and msg.startswith(b"5.7.0"), (code, msg)


def _starttls_handshake(port, ctx):
    c = Client(port)
    c.ehlo()
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    c._wrap(ctx)
    return c


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_refused_on_submission(daemon):
    with pytest.raises((ssl.SSLError, ConnectionError, socket.timeout, OSError)):
        c = Client(daemon.smtps, tls=True, ctx=tls11_ctx())
        c.close()
    with pytest.raises((ssl.SSLError, ConnectionError, socket.timeout, OSError)):
        c = _starttls_handshake(daemon.sub, tls11_ctx())
        c.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_accepted_on_mx(daemon):
    c = _starttls_handshake(daemon.mx, tls11_ctx())
    try:
        assert c.tls.version() == "TLSv1.1"
        r = c.ehlo()
        r = c.mail_transaction()
        assert r.code == 250, r
    finally:
        c.close()
    assert daemon.spool_msg(r.queue_id).env("tls")[0].startswith("TLSv1.1 ")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["TLSv1.2", "TLSv1.3"])
def test_tls12_and_13_accepted_on_submission(daemon, version):
    ctx = client_ctx(version, version)
    with Client(daemon.smtps, tls=True, ctx=ctx) as c:
        assert c.greeting.code == 220
        assert c.tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                   ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    c = _starttls_handshake(daemon.sub, client_ctx(version, version))
    try:
        assert c.ehlo().code == 250
    finally:
        c.close()


def test_certificate_verifies(daemon, cert):
    ctx = client_ctx(cafile=cert.cert)
    with Client(daemon.smtps, tls=True, ctx=ctx) as c:
        assert c.tls.getpeercert(binary_form=True) == cert.der
    c = _starttls_handshake(daemon.mx, client_ctx(cafile=cert.cert))
    try:
        assert c.tls.getpeercert(binary_form=True) == cert.der
    finally:
        c.close()


def _s_client(args, data=b"QUIT\n"):
    # -crlf turns each LF into CRLF: the data has bare LF line ends.
    return subprocess.run(["openssl", "s_client", "-crlf"] + args, input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)


@pytest.mark.parametrize("port_name", ["mx", "sub"])
def test_openssl_s_client_starttls(daemon, port_name):
    port = daemon.ports[port_name]
    r = _s_client(["-connect", "127.0.0.1:%d" % port, "-starttls", "smtp",
                   "-servername", HOSTNAME])
    out = r.stdout.decode("utf-8", "replace")
    assert "Cipher is (NONE)" not in out, out
    assert "Cipher is " in out, out
    assert "CN = " + HOSTNAME in out or "CN=" + HOSTNAME in out, out


def test_openssl_s_client_on_connect(daemon):
    r = _s_client(["-connect", "127.0.0.1:%d" % daemon.smtps, "-servername", HOSTNAME,
                   "-ign_eof"], data=b"EHLO client.example\nQUIT\n")
    out = r.stdout.decode("utf-8", "replace")
    assert "Cipher is " in out and "Cipher is (NONE)" not in out, out
    assert "220 " + HOSTNAME in out, out
    assert "221 2.0.0" in out, out


def _swaks_tls():
    r = subprocess.run(["swaks", "--support"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    return b"TLS not available" not in r.stdout


swaks_tls = pytest.mark.skipif(not _swaks_tls(),
                               reason="swaks without TLS support (needs Net::SSLeay)")


@swaks_tls
def test_swaks_starttls_mx(daemon):
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % daemon.mx, "--to", "user@test.example",
         "--from", "sender@client.example", "--helo", "client.example", "--tls"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert "TLS started" in out, out
    assert "250 2.0.0 OK queued as" in out, out
    ids = daemon.queue_ids()
    assert len(ids) == 1
    assert daemon.spool_msg(ids[0]).env("tls"), "no tls line in the envelope"


@swaks_tls
@pytest.mark.parametrize("mode", ["--tls", "--tlsc"])
def test_swaks_submission_needs_auth(daemon, mode):
    port = daemon.sub if mode == "--tls" else daemon.smtps
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % port, "--to", "user@elsewhere.example",
         "--from", "user@test.example", "--helo", "client.example", mode],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode()
    assert r.returncode != 0, out
    assert "TLS started" in out, out
    assert "530 5.7.0" in out, out
    assert daemon.queue_ids() == []
