"""Configuration: syntax, errors with file:line, reload on SIGHUP (new
settings, new certificate, broken file keeps the old one), listeners."""
import os
import re
import signal
import socket
import subprocess

import pytest

from helpers import (
    Client,
    SMTPClosed,
    broken_config,
    client_ctx,
    free_ports,
    generate_cert,
    rewrite_config,
    send_message,
    wait_until,
)



def _rcpt_code(port, rcpt):
    """Reply code to RCPT (or to the first command that failed: around a
    reload a connection may meet a stopping worker's 421)."""
    with Client(port) as c:
        for cmd in ("EHLO client.example", "MAIL FROM:<a@client.example>"):
            try:
                r = c.cmd(cmd)
            except SMTPClosed:
                return None
            if r.code != 250:
                return r.code
        return c.cmd("RCPT TO:<%s>" % rcpt).code


def test_sighup_reload_applies_new_config(daemon, cert):
    assert _rcpt_code(daemon.mx, "user@new.example") == 550
    rewrite_config(daemon, cert, local_domains="test.example : new.example")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")
    assert wait_until(lambda: _rcpt_code(daemon.mx, "user@new.example") == 250, 8), \
        "reloaded local_domains not in effect"
    assert wait_until(lambda: _rcpt_code(daemon.mx, "user@other.example") == 550, 8)
    assert daemon.events("reload_failed") == []
    assert daemon.proc.poll() is None


def _backlog(port):
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[2]) if out else None


def test_sighup_applies_smtp_connect_backlog(start_daemon, cert):
    """The listening sockets are kept over a reload; a changed
    smtp_connect_backlog is applied to them all the same."""
    d = start_daemon(smtp_connect_backlog="100")
    assert _backlog(d.mx) == 100
    rewrite_config(d, cert, smtp_connect_backlog="300")
    d.signal(signal.SIGHUP)
    d.wait_event("reload")
    assert wait_until(lambda: _backlog(d.mx) == 300, 8), _backlog(d.mx)
    assert _backlog(d.sub) == 300 and _backlog(d.smtps) == 300


def test_sighup_open_session_survives(daemon, cert):
    with Client(daemon.mx) as c:
        c.ehlo()
        c.begin_data()
        c.send(b"Subject: across reload\r\n\r\nfirst half\r\n")
        rewrite_config(daemon, cert, local_domains="test.example : new.example")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload")
        # The message in progress before the reload is finished and queued.
        c.send(b"second half\r\n.\r\n")
        r = c.reply(timeout=10)
        assert r.code == 250 and r.queue_id, r
    assert daemon.queue_ids() == [r.queue_id]
    assert daemon.spool_msg(r.queue_id).message.endswith(b"first half\r\nsecond half\r\n")


def test_sighup_session_between_commands_goes_on(daemon, cert):
    # A reload (a renewed certificate, say) must not cut off the clients
    # that are connected: a session between commands, or idle after MAIL
    # and RCPT, goes on with its old worker as if nothing happened.
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        old = set(daemon.worker_pids())
        rewrite_config(daemon, cert, local_domains="test.example : new.example")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("worker_retiring", count=len(old))
        assert c.silent_for(0.5), c.buf
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(b"Subject: across reload\r\n\r\nbody\r\n.\r\n")
        r = c.reply(timeout=10)
        assert r.code == 250 and r.queue_id, r
        # Its old worker still serves it, with the configuration it began
        # with; another message in the same session works too.
        assert c.cmd("MAIL FROM:<b@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@new.example>").code == 550
        assert c.cmd("QUIT").code == 221
    assert daemon.queue_ids() == [r.queue_id]
    # With its last session gone, each old worker exits.
    assert wait_until(lambda: not old & set(daemon.worker_pids()), 10)


def test_sighup_session_outlasting_shutdown_timeout_is_stopped(daemon):
    # A retired worker's sessions may run for shutdown_timeout (3 s here);
    # then they are stopped as on SIGTERM: 421, and a message still coming
    # in after one more shutdown_timeout.
    with Client(daemon.mx) as idle, Client(daemon.mx) as busy:
        idle.ehlo()
        busy.ehlo()
        busy.begin_data()
        busy.send(b"Subject: slow\r\n\r\nhalf\r\n")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("worker_retiring")
        assert idle.silent_for(2.0), idle.buf
        r = idle.reply(timeout=5)
        assert r.code == 421 and r.enhanced == "4.3.2", r
        assert daemon.events("worker_stopping", reason="retired")
        r = busy.reply(timeout=8)
        assert r.code == 421 and r.enhanced == "4.3.2", r
    assert daemon.queue_ids() == []


def test_sighup_broken_config_keeps_old(daemon):
    with open(daemon.conf, "a") as f:
        f.write("this line is not an option\n")
    n_lines = len(open(daemon.conf).read().splitlines())
    daemon.signal(signal.SIGHUP)
    ev = daemon.wait_event("reload_failed")
    err = ev[-1].get("error", "")
    assert "%s:%d:" % (daemon.conf, n_lines) in err, ev
    assert daemon.proc.poll() is None, "master died on a broken reload"
    # Still serving with the old configuration, on every port.
    r = send_message(daemon.mx)
    assert r.code == 250, r
    assert _rcpt_code(daemon.mx, "user@other.example") == 250
    with Client(daemon.smtps, tls=True) as c:
        assert c.ehlo().code == 250
    assert daemon.wait_workers(2)
    # A later good reload works again.
    text = open(daemon.conf).read().replace("this line is not an option\n", "")
    with open(daemon.conf, "w") as f:
        f.write(text)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")


def test_sighup_reloads_certificate(daemon, test_dir, cert):
    with Client(daemon.smtps, tls=True) as c:
        assert c.tls.getpeercert(binary_form=True) == cert.der
    new_dir = os.path.join(test_dir, "newcert")
    os.mkdir(new_dir, 0o700)
    new = generate_cert(new_dir, "mx.test.example")
    assert new.der != cert.der
    rewrite_config(daemon, new)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")

    def presented():
        with Client(daemon.smtps, tls=True) as c:
            return c.tls.getpeercert(binary_form=True)

    assert wait_until(lambda: presented() == new.der, 8), "old certificate still served"
    c = Client(daemon.mx)
    try:
        c.starttls(ctx=client_ctx(cafile=new.cert))
    finally:
        c.close()


def test_syntax_continuation_and_comments(start_daemon, make_config):
    conf, ports = make_config(local_domains="test.example : \\\n    other.example : \\\n"
                              "    third.example")
    text = open(conf).read()
    text = "# leading comment\n\n" + text.replace(
        "message_size_limit = 1M", "# the size\nmessage_size_limit = 2M")
    with open(conf, "w") as f:
        f.write(text)
    d = start_daemon(conf=conf, ports=ports)
    assert _rcpt_code(d.mx, "user@third.example") == 250
    assert _rcpt_code(d.mx, "user@other.example") == 250
    with Client(d.mx) as c:
        r = c.ehlo()
        assert "SIZE %d" % (2 * 1024 * 1024) in r.lines, r


def test_local_interfaces_respected(daemon):
    # Bound to 127.0.0.1 only: another loopback address gets nothing.
    assert daemon.can_connect(daemon.mx)
    try:
        s = socket.create_connection(("127.0.0.2", daemon.mx), timeout=1)
        s.close()
        connected = True
    except OSError:
        connected = False
    assert not connected, "listening beyond local_interfaces"


def test_tls_on_connect_ports_option(start_daemon, make_config):
    # TLS on connect chosen by tls_on_connect_ports rather than by the
    # listener block; the other submission port keeps STARTTLS.
    ports = free_ports(3)
    mx, sub, smtps = ports
    extra = ("tls_on_connect_ports = %d\n"
             "listener %d {\n    role = mx\n}\n"
             "listener %d {\n    role = submission\n}\n"
             "listener %d {\n    role = submission\n}\n" % (smtps, mx, sub, smtps))
    conf, pd = make_config(extra=extra, ports=ports, listeners=False)
    d = start_daemon(conf=conf, ports=pd)
    with Client(d.smtps, tls=True) as c:
        assert c.greeting.code == 220
        r = c.ehlo()
        assert not any(l.upper() == "STARTTLS" for l in r.lines[1:]), r
    with Client(d.sub) as c:
        r = c.ehlo()
        assert any(l.upper() == "STARTTLS" for l in r.lines[1:]), r
        assert c.cmd("MAIL FROM:<a@client.example>").code == 530


def test_ipv6_loopback_listener(start_daemon):
    d = start_daemon(local_interfaces="<; 127.0.0.1 ; ::1")
    s = socket.create_connection(("::1", d.mx), timeout=5)
    try:
        s.settimeout(5)
        data = b""
        for _ in range(20):
            data += s.recv(1000)
            if b"\r\n" in data:
                break
        assert data.startswith(b"220 "), data
    finally:
        s.close()
    ev = d.wait_event("connect", client="::1")
    assert ev[0].get("port") == str(d.mx)


def test_tls_on_connect_ports_unused_warns(start_daemon):
    unused = free_ports(1)[0]
    d = start_daemon(tls_on_connect_ports=str(unused))
    warn = [l for l in d.log_text().splitlines() if "lvl=warn" in l and str(unused) in l]
    assert warn, d.log_tail(20)
    assert not d.can_connect(unused)



BROKEN = [
    # (config text, line of the error or None when not tied to one line)
    ("primary_hostname = mx.test.example\nno_such_option = yes\n", 2),
    ("# c\nmessage_size_limit = 10Q\n", 2),
    ("\n\nsmtp_line_max = 100\n", 3),
    ("daemon_smtp_ports = 70000\n", 1),
    ("daemon_smtp_ports = 2525 : 2525\nlistener 2525 {\n role = mx\n}\n", 1),
    ("daemon_smtp_ports = smtp : 25\n", 1),
    ("smtp_receive_timeout = soon\n", 1),
    ("daemon_smtp_ports = 2525\nlistener 2525 {\n    role = relay\n}\n", 3),
    ("daemon_smtp_ports = 2525\nlistener 2525 {\n    colour = blue\n}\n", 3),
    ("daemon_smtp_ports = 2525\nlistener 2525 {\n    role = mx\n", None),
    ("daemon_smtp_ports = 2587\n"
     "listener 2587 {\n    role = submission\n    tls = none\n}\n", None),
    ("primary_hostname\n", 1),
]


@pytest.mark.parametrize("text,line", BROKEN)
def test_config_errors(binary, test_dir, text, line):
    path = broken_config(test_dir, text)
    r = subprocess.run([binary, "-C", path, "-bV"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    # "file:line: what", possibly after the program name ("sluice: ").
    if line is None:
        assert re.search(r"(^|: )" + re.escape(path) + ":", err, re.M), err
    else:
        assert re.search(r"(^|: )" + re.escape(path) + ":%d: " % line, err, re.M), err


def test_missing_config_file(binary, test_dir):
    path = os.path.join(test_dir, "does-not-exist.conf")
    r = subprocess.run([binary, "-C", path, "-bV"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == 1
    assert path in r.stderr.decode()
