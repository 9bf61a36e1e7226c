"""What an administrator does to a running daemon: a second start on the
same spool, log rotation, a reload that changes spool_directory, a stop
while sessions are still open."""
import os
import signal
import socket
import subprocess
import time

from helpers import Client, config_text, free_ports, parse_log_line, rewrite_config, wait_until


def test_second_daemon_leaves_the_spool_alone(daemon, cert, binary, test_dir):
    # tmp/ holds the messages the running daemon is receiving; a second
    # daemon pointed at the same spool must refuse before its recovery
    # empties tmp/ under the first one.
    marker = os.path.join(daemon.tmp_dir, "in-progress")
    with open(marker, "wb") as f:
        f.write(b"a message being received\r\n")
    other = os.path.join(test_dir, "second")
    os.mkdir(other)
    conf = os.path.join(other, "sluice.conf")
    with open(conf, "w") as f:
        f.write(config_text(other, cert, tuple(free_ports(3)),
                            spool_directory=daemon.spool))
    r = subprocess.run([binary, "-C", conf, "-bdf"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "in use by another sluice daemon" in r.stderr, r.stderr
    assert "LeakSanitizer" not in r.stderr, r.stderr
    assert os.path.exists(marker)
    assert daemon.proc.poll() is None


def test_log_file_reopened_on_sighup(daemon):
    # logrotate renames the file, then signals: the processes started
    # after the signal write to a new file under the old name.
    rotated = daemon.log_path + ".1"
    os.rename(daemon.log_path, rotated)
    daemon.signal(signal.SIGHUP)
    assert wait_until(lambda: os.path.exists(daemon.log_path), 10)
    daemon.wait_event("reload")
    assert wait_until(lambda: "event=workers_started" in daemon.log_text(), 10)
    with Client(daemon.mx) as c:
        c.ehlo()
    assert wait_until(lambda: "event=connect" in daemon.log_text(), 10), daemon.log_text()
    assert "event=reload " not in open(rotated).read()


def test_reload_keeps_the_spool_directory(daemon, cert, test_dir):
    # The master recovered and locked its spool; a reload naming another
    # one takes effect at the next start, for every process alike.
    rewrite_config(daemon, cert, spool_directory=os.path.join(test_dir, "other-spool"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")
    assert daemon.events("reload_note")
    daemon.wait_event("runner_started", count=2)
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.mail_transaction(rcpts=("user@test.example",))
        assert r.code == 250 and r.queue_id, r
    assert r.queue_id in daemon.queue_ids()
    time.sleep(0.5)
    assert daemon.events("queue_scan_failed") == [], daemon.log_tail(20)
    assert daemon.events("privileges") == [], daemon.log_tail(20)
    assert not os.path.exists(os.path.join(test_dir, "other-spool"))


def test_reload_logs_no_errors(daemon):
    # The runner, its delivery process and the auth process are replaced
    # on a reload: their ending is asked for, not an error.
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")
    daemon.wait_event("runner_started", count=2)
    time.sleep(0.5)
    errors = [x for x in daemon.log_since_start().splitlines() if " lvl=err " in x]
    assert errors == [], errors


def test_reload_failed_is_one_key_value_line(daemon):
    with open(daemon.conf, "a") as f:
        f.write("no_such_option = 1\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload_failed")
    line = [x for x in daemon.log_text().splitlines() if "event=reload_failed" in x][-1]
    kv = parse_log_line(line)
    assert kv["action"] == "keeping the running configuration", line


def test_stop_refuses_new_connections_at_once(daemon):
    # A session in the middle of its message may finish (shutdown_timeout);
    # meanwhile a new connection is refused, not left without a greeting.
    c = Client(daemon.mx)
    c.ehlo()
    c.begin_data()
    c.send(b"Subject: across the stop\r\n\r\nfirst half\r\n")
    daemon.signal(signal.SIGTERM)
    daemon.wait_event("stopping")

    def refused():
        try:
            s = socket.create_connection(("127.0.0.1", daemon.mx), timeout=1)
        except ConnectionRefusedError:
            return True
        s.close()
        return False

    assert wait_until(refused, 2)
    c.send(b"second half\r\n.\r\n")
    r = c.reply(timeout=10)
    assert r.code == 250 and r.queue_id, r
    c.close()
    assert daemon.proc.wait(timeout=20) == 0
