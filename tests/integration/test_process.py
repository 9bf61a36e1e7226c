"""Process model: master and workers, privileges, worker restart, signals,
log lines."""
import os
import pwd
import signal
import time

from helpers import (
    Client,
    make_body,
    pid_alive,
    proc_uids,
    send_message,
    wait_until,
)

NOBODY = pwd.getpwnam("nobody").pw_uid


def test_master_and_workers(daemon):
    workers = daemon.wait_workers(2)
    assert workers, "expected 2 worker processes, got %r" % daemon.worker_pids()
    assert proc_uids(daemon.pid)[0] == 0
    for w in workers:
        uids = proc_uids(w)
        assert uids == [NOBODY] * 4, (w, uids)
    st = os.stat(daemon.spool)
    assert st.st_uid == NOBODY
    ev = daemon.events("start")
    assert ev and ev[0].get("proc") == "master"
    assert daemon.events("workers_started")


def test_worker_sigkill_replaced(daemon):
    workers = daemon.wait_workers(2)
    assert workers
    victim = workers[0]
    n_started = len(daemon.events("worker_started"))
    os.kill(victim, signal.SIGKILL)
    # The other worker keeps serving meanwhile.
    r = send_message(daemon.mx, subject="during restart")
    assert r.code == 250, r
    daemon.wait_event("worker_exit")
    daemon.wait_event("worker_started", count=n_started + 1)
    new = daemon.wait_workers(2, exclude=[victim])
    assert new, "worker not replaced: %r" % daemon.worker_pids()
    assert victim not in new
    for w in new:
        assert proc_uids(w)[0] == NOBODY
    for i in range(4):
        r = send_message(daemon.mx, subject="after restart %d" % i)
        assert r.code == 250, r
    assert len(daemon.queue_ids()) == 5
    assert pid_alive(daemon.pid)


def test_sigterm_exits_cleanly(daemon):
    workers = daemon.wait_workers(2)
    assert send_message(daemon.mx).code == 250
    rc = daemon.stop()
    assert rc == 0
    assert wait_until(lambda: not any(pid_alive(w) for w in workers), 5), \
        "workers outlived the master"
    assert daemon.events("stop")
    assert not daemon.can_connect(daemon.mx)
    assert not daemon.can_connect(daemon.smtps)


def test_sigterm_closes_idle_session_with_421(daemon):
    c = Client(daemon.mx)
    c.ehlo()
    daemon.signal(signal.SIGTERM)
    try:
        r = c.reply(timeout=8)
        assert r.code == 421 and r.enhanced == "4.3.2", r
        assert c.wait_closed(3)
    finally:
        c.close()
    assert daemon.proc.wait(10) == 0


def test_sigterm_lets_message_finish(daemon):
    c = Client(daemon.mx)
    try:
        c.ehlo()
        c.begin_data()
        c.send(b"Subject: finishing\r\n\r\nfirst half\r\n")
        daemon.signal(signal.SIGTERM)
        time.sleep(0.3)
        c.send(b"second half\r\n.\r\n")
        r = c.reply(timeout=8)
        assert r.code == 250 and r.queue_id, r
        # Then the session is ended by the server.
        try:
            r2 = c.cmd("NOOP", timeout=5)
            assert r2.code == 421, r2
        except Exception:
            pass
    finally:
        c.close()
    assert daemon.proc.wait(10) == 0
    assert daemon.queue_ids() == [r.queue_id]


def test_sigterm_message_unfinished_at_shutdown_timeout_gets_421(daemon):
    # A message still coming in when shutdown_timeout (3 s here) is up is
    # given up, never acknowledged, and its client told 421 first (RFC
    # 5321 3.8), on DATA and on BDAT alike.
    cs = [Client(daemon.mx), Client(daemon.mx)]
    try:
        for c, start in zip(cs, (b"DATA\r\n", b"BDAT 1000\r\n")):
            c.ehlo()
            c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\n" + start)
            n = 3 if start.startswith(b"DATA") else 2
            assert [c.reply().code for _ in range(n)][:2] == [250, 250]
            c.send(b"Subject: never finished\r\n\r\npartial\r\n")
        daemon.signal(signal.SIGTERM)
        for c in cs:
            r = c.reply(timeout=10)
            assert r.code == 421 and r.enhanced == "4.3.2", r
            assert c.wait_closed(3)
    finally:
        for c in cs:
            c.close()
    assert daemon.proc.wait(10) == 0
    assert daemon.queue_ids() == []


def test_session_log_lines(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        c.starttls()
        version, cipher = c.tls.version(), c.tls.cipher()[0]
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@elsewhere.example>").code == 550
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(make_body("logs") + b".\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250
        c.cmd("QUIT")
    q = daemon.wait_event("queued", id=r.queue_id)
    sid = q[0].get("session")
    assert sid
    daemon.wait_event("disconnect", session=sid)
    conn = daemon.events("connect", session=sid)
    assert len(conn) == 1, conn
    assert conn[0].get("client") == "127.0.0.1"
    assert conn[0].get("port") == str(daemon.mx)
    assert conn[0].get("role") == "mx"
    assert conn[0].get("proc") == "worker"
    tls = daemon.events("tls", session=sid)
    assert tls and tls[0].get("version") == version and tls[0].get("cipher") == cipher, tls
    ref = daemon.events("refused", session=sid)
    assert ref and ref[0].get("cmd") == "RCPT TO:<user@elsewhere.example>", ref
    assert ref[0].get("reply", "").startswith("550 5.7.1"), ref
    assert daemon.events("disconnect", session=sid)
    # Every line is one key=value record with a timestamp and level.
    for line in daemon.log_text().splitlines():
        assert line.startswith("ts="), line
        assert " lvl=" in line and " event=" in line, line


def test_submission_connect_logged_with_role(daemon):
    with Client(daemon.smtps, tls=True) as c:
        c.ehlo()
        c.cmd("QUIT")
    ev = daemon.wait_event("connect", port=str(daemon.smtps))
    assert ev[0].get("role") == "submission"
