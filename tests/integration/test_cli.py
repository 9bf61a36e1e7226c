"""Command line: -bV, -bP, usage errors, -bs, -oX, -tls-on-connect, -bd."""
import os
import pwd
import re
import signal
import socket
import subprocess

from helpers import (
    HOSTNAME,
    QUEUE_ID_RE,
    Client,
    free_ports,
    pid_alive,
    send_message,
    wait_until,
)


def run(binary, *args, input=None, timeout=20):
    return subprocess.run([binary] + list(args), input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def test_bV_prints_version_and_libraries(binary, make_config):
    conf, _ = make_config()
    r = run(binary, "-C", conf, "-bV")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.search(r"sluice\b.*\d+\.\d+", out, re.I), out
    assert "openssl" in out.lower(), out
    assert "libevent" in out.lower(), out


def test_bV_broken_config_names_file_and_line(binary, test_dir):
    conf = os.path.join(test_dir, "broken.conf")
    with open(conf, "w") as f:
        f.write("# comment\nprimary_hostname = mx.test.example\nno_such_option = 1\n")
    r = run(binary, "-C", conf, "-bV")
    assert r.returncode == 1, (r.returncode, r.stderr)
    err = r.stderr.decode()
    assert re.search(re.escape(conf) + r":3: ", err), err


def test_unknown_flag_usage_exit_64(binary, make_config):
    conf, _ = make_config()
    r = run(binary, "-C", conf, "-bZZZ")
    assert r.returncode == 64, r.returncode
    assert r.stderr.strip(), "no usage text on stderr"
    assert "usage" in r.stderr.decode().lower()
    assert r.stdout == b""


def test_bP_named_option(binary, make_config):
    conf, _ = make_config()
    r = run(binary, "-C", conf, "-bP", "primary_hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "primary_hostname = " + HOSTNAME
    r = run(binary, "-C", conf, "-bP", "smtp_workers")
    assert r.stdout.decode().strip() == "smtp_workers = 2"


def test_bP_all_options(binary, make_config):
    conf, ports = make_config()
    r = run(binary, "-C", conf, "-bP")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    names = [l.split(" = ")[0] for l in out.splitlines() if " = " in l]
    for name in ("primary_hostname", "daemon_smtp_ports", "local_interfaces",
                 "spool_directory", "message_size_limit", "smtp_receive_timeout",
                 "smtp_workers", "user", "log_file", "tls_certificate"):
        assert name in names, (name, out)
    assert re.search(r"^user = nobody$", out, re.M), out
    assert str(ports["mx"]) in out


def test_bP_unknown_option_fails(binary, make_config):
    conf, _ = make_config()
    r = run(binary, "-C", conf, "-bP", "no_such_option")
    assert r.returncode != 0
    assert r.stderr.strip()


def test_bs_without_access_to_the_spool_replies_421(binary, make_config, test_dir):
    # A program running "sendmail -bs" as a user who cannot write the
    # spool, with no daemon to hand the session to, gets an SMTP reply it
    # understands, not an empty stream.
    conf, _ = make_config()
    os.makedirs(os.path.join(test_dir, "spool"), exist_ok=True)
    os.chmod(os.path.join(test_dir, "spool"), 0o700)
    os.chmod(conf, 0o644)
    r = subprocess.run(["runuser", "-u", "nobody", "--", binary, "-C", conf, "-bs"],
                       input=b"EHLO client.example\r\nQUIT\r\n", capture_output=True,
                       timeout=30)
    out = r.stdout.decode()
    assert r.returncode != 0
    assert re.match(r"^421 4\.3\.0 ", out), (out, r.stderr)
    assert b"LeakSanitizer" not in r.stderr, r.stderr


def test_bs_for_an_unprivileged_user_is_the_daemons_session(daemon):
    # "sendmail -bs" as a user who cannot write the spool (mutt, some
    # scripts) gets the running daemon's session through sendmail_socket,
    # as plain sendmail does, with the caller's uid recorded.
    os.chmod(daemon.conf, 0o644)
    # "daemon": not the spool's owner (user = nobody in the tests).
    script = (b"EHLO client.example\r\n"
              b"MAIL FROM:<daemon@test.example>\r\n"
              b"RCPT TO:<user@elsewhere.example>\r\n"
              b"DATA\r\n"
              b"Subject: -bs as daemon\r\n\r\nbody line\r\n.\r\n"
              b"QUIT\r\n")
    r = subprocess.run(["runuser", "-u", "daemon", "--", daemon.binary, "-C", daemon.conf,
                        "-bs"], input=script, capture_output=True, timeout=30)
    out = r.stdout.decode()
    assert r.returncode == 0, (r.returncode, out, r.stderr)
    assert out.startswith("220 "), out
    m = re.search(r"^250 2\.0\.0 OK queued as (\S+)\r$", out, re.M)
    assert m, out
    assert re.search(r"^221 ", out, re.M), out
    sp = daemon.spool_msg(m.group(1))
    assert sp.message.endswith(b"body line\r\n")
    assert "auth=uid:%d" % pwd.getpwnam("daemon").pw_uid in sp.headers(), sp.headers()[:400]


def test_queue_commands_refused_with_ex_noperm(daemon):
    # Only root and the spool's owner may run the queue; anyone else gets
    # EX_NOPERM (77) every time, never the EX_TEMPFAIL (75) that scripts
    # retry.
    os.chmod(daemon.conf, 0o644)
    for args in (["-q"], ["-Mrm", "1j1dhobb35d-00931-00"], ["-M", "1j1dhobb35d-00931-00"]) * 3:
        r = subprocess.run(["runuser", "-u", "daemon", "--", daemon.binary, "-C", daemon.conf]
                           + args, capture_output=True, timeout=30)
        assert r.returncode == 77, (args, r.returncode, r.stderr)
        assert b"permission denied" in r.stderr, r.stderr


BS_SCRIPT = (b"EHLO client.example\r\n"
             b"MAIL FROM:<sender@client.example>\r\n"
             b"RCPT TO:<user@test.example>\r\n"
             b"RCPT TO:<user@elsewhere.example>\r\n"
             b"DATA\r\n"
             b"Subject: via -bs\r\n\r\nbody line\r\n.\r\n"
             b"QUIT\r\n")


def bs_queued(out, test_dir):
    """The envelope and message of the one message -bs queued."""
    lines = out.split("\r\n")
    assert lines[0].startswith("220 "), out
    assert HOSTNAME in lines[0]
    m = re.search(r"^250 2\.0\.0 OK queued as (\S+)\r$", out, re.M)
    assert m, out
    qid = m.group(1)
    assert QUEUE_ID_RE.match(qid)
    assert re.search(r"^221 2\.0\.0", out, re.M), out
    path = os.path.join(test_dir, "spool", "queue", qid)
    data = open(path, "rb").read()
    assert b"Subject: via -bs\r\n" in data
    return qid, data


def bs_over_tcp(argv, script=b""):
    """Runs argv (a -bs command) with a TCP connection as its stdin and
    stdout, as inetd does; sends script (if any, else waits for the
    server to speak first) and returns (exit status, all it wrote)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    client = socket.create_connection(lsock.getsockname())
    server, _ = lsock.accept()
    lsock.close()
    p = None
    try:
        p = subprocess.Popen(argv, stdin=server, stdout=server, stderr=subprocess.PIPE)
        server.close()
        if script:
            client.sendall(script)
        client.settimeout(20)
        out = b""
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            out += chunk
        return p.wait(20), out
    finally:
        client.close()
        if p and p.poll() is None:
            p.kill()
            p.wait()


def test_bs_network_peer_is_never_handed_to_the_local_session(daemon):
    # inetd running -bs as a user who cannot write the spool: the peer on
    # stdin is from the network, and the daemon's local session (the
    # trust of sendmail: any recipient) would make it an open relay.  It
    # gets 421 instead.
    os.chmod(daemon.conf, 0o644)
    # As a client does, it waits for the greeting before it speaks.
    rc, out = bs_over_tcp(["runuser", "-u", "daemon", "--", daemon.binary, "-C", daemon.conf,
                           "-bs"])
    assert rc != 0
    assert out.startswith(b"421 4.3.0 "), out
    assert b"250" not in out, out
    assert daemon.queue_ids() == []


def test_bs_session_of_a_local_program(binary, make_config, test_dir):
    # From a pipe: a local program, with the trust of sendmail (any
    # recipient), its uid recorded, and a "queued" line in the log file.
    conf, _ = make_config()
    r = run(binary, "-C", conf, "-bs", input=BS_SCRIPT)
    out = r.stdout.decode()
    assert r.returncode == 0, (r.returncode, out, r.stderr)
    assert not re.search(r"^550 ", out, re.M), out
    qid, data = bs_queued(out, test_dir)
    env, msg = data.split(b"\n\n", 1)
    assert b"\nrole local\n" in data
    assert b"rcpt user@test.example " in env and b"rcpt user@elsewhere.example " in env
    assert b"Received: from client.example\r\n" in msg, msg[:300]
    assert b"(role=local auth=uid:0)" in msg, msg[:300]
    log = open(os.path.join(test_dir, "sluice.log")).read()
    assert re.search(r"proc=bs .*event=queued .*id=%s .*role=local user=uid:0" % qid, log), log
    assert not r.stderr.strip(), r.stderr


def test_bs_session_of_a_network_peer(binary, make_config, test_dir):
    # A TCP connection on stdin (inetd): an MX session from that address,
    # which may not relay.
    conf, _ = make_config()
    rc, out = bs_over_tcp([binary, "-C", conf, "-bs"], BS_SCRIPT)
    assert rc == 0
    out = out.decode()
    assert re.search(r"^550 5\.7\.1 ", out, re.M), out
    qid, data = bs_queued(out, test_dir)
    env, msg = data.split(b"\n\n", 1)
    assert b"\nrole mx\n" in data
    assert b"rcpt user@test.example " in env and b"elsewhere" not in env
    assert b"Received: from client.example ([127.0.0.1])" in msg, msg[:300]


def test_oX_overrides_ports(start_daemon, make_config):
    # -oX with only the MX port: the submission ports stay closed.
    conf, ports = make_config()
    d = start_daemon(conf=conf, ports=ports, args=["-oX", str(ports["mx"])])
    with Client(d.mx) as c:
        assert c.greeting.code == 220
        assert HOSTNAME in c.greeting.lines[0]
    assert not d.can_connect(d.sub)
    assert not d.can_connect(d.smtps)


def test_tls_on_connect_flag_forces_tls_on_every_port(start_daemon):
    d = start_daemon(args=["-tls-on-connect"])
    with Client(d.mx, tls=True) as c:
        assert c.greeting.code == 220
        assert c.tls.version().startswith("TLS")
        r = c.ehlo()
        assert "STARTTLS" not in r.text.upper()
        # Still the MX role: mail for a local domain is accepted.
        r = c.mail_transaction()
        assert r.code == 250 and r.queue_id, r


def test_missing_role_for_nonstandard_port(binary, make_config, test_dir):
    conf, ports = make_config()
    # A fourth port without a listener block.
    extra_port = free_ports(1)[0]
    text = open(conf).read().replace(
        "daemon_smtp_ports = %d : %d : %d" % (ports["mx"], ports["sub"], ports["smtps"]),
        "daemon_smtp_ports = %d : %d : %d : %d" % (ports["mx"], ports["sub"], ports["smtps"],
                                                   extra_port))
    with open(conf, "w") as f:
        f.write(text)
    p = subprocess.Popen([binary, "-C", conf, "-bdf"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)
        raise AssertionError("daemon started although port %d has no role" % extra_port)
    assert p.returncode != 0
    logf = os.path.join(test_dir, "sluice.log")
    log = open(logf).read() if os.path.exists(logf) else ""
    assert str(extra_port) in err.decode() + log, (err, log)


def test_bd_detaches_and_writes_pid_file(binary, make_config, test_dir):
    conf, ports = make_config()
    pid_file = os.path.join(test_dir, "sluice.pid")
    log_file = os.path.join(test_dir, "sluice.log")
    out = open(os.path.join(test_dir, "bd.out"), "wb")
    p = subprocess.Popen([binary, "-C", conf, "-bd"], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=out)
    pid = None
    try:
        rc = p.wait(15)
        assert rc == 0, open(os.path.join(test_dir, "bd.out")).read()
        assert wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(),
                          10), "no pid_file"
        pid = int(open(pid_file).read().strip())
        assert pid != p.pid, "did not detach"
        assert pid_alive(pid)
        assert wait_until(lambda: os.path.exists(log_file)
                          and "event=workers_started" in open(log_file).read(), 10)
        r2 = send_message(ports["mx"])
        assert r2.code == 250
    finally:
        if pid is None and p.poll() is None:
            p.kill()
            p.wait(5)
        if pid is None and wait_until(lambda: os.path.exists(pid_file)
                                      and open(pid_file).read().strip(), 3):
            pid = int(open(pid_file).read().strip())
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        out.close()
    assert wait_until(lambda: not pid_alive(pid), 15), "daemon did not stop on SIGTERM"


def test_bpc_bp_Mvc(daemon):
    r = daemon.cli("-bpc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "0"
    ids = []
    for i in range(3):
        rep = send_message(daemon.mx, subject="listing %d" % i)
        assert rep.code == 250, rep
        ids.append(rep.queue_id)
    r = daemon.cli("-bpc")
    assert r.stdout.decode().strip() == "3"
    r = daemon.cli("-bp")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    for qid in ids:
        assert qid in out
    assert "user@test.example" in out
    r = daemon.cli("-Mvc", ids[1])
    assert r.returncode == 0, r.stderr
    assert b"Subject: listing 1" in r.stdout
    assert b"Subject: listing 0" not in r.stdout
    r = daemon.cli("-Mvc", "00000000000-00000-00")
    assert r.returncode != 0
