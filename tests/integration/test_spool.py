"""The spool: durability across SIGKILL, crash recovery at start, many
concurrent commits, listing."""
import os
import threading
import time

from helpers import (
    QUEUE_ID_RE,
    Client,
    make_body,
    parse_spool,
    send_message,
    wait_until,
)


def _sender(port, acked, stop, errors, n_max=200):
    """Sends messages until stop is set, recording ids acknowledged by 250."""
    for i in range(n_max):
        if stop.is_set():
            return
        try:
            with Client(port, timeout=3) as c:
                c.ehlo()
                for j in range(5):
                    if stop.is_set():
                        return
                    r = c.mail_transaction(body=make_body("crash %d %d" % (i, j)))
                    if r.code == 250 and r.queue_id:
                        acked.append(r.queue_id)
                    else:
                        errors.append(repr(r))
        except Exception as e:  # connection cut by the kill
            errors.append(repr(e))
            if stop.is_set():
                return
            time.sleep(0.01)


def test_sigkill_loses_no_acknowledged_message(start_daemon):
    d = start_daemon()
    acked, errors = [], []
    stop = threading.Event()
    threads = [threading.Thread(target=_sender, args=(d.mx, acked, stop, errors))
               for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(acked) >= 20, 15), (len(acked), errors[:5])
        d.kill_all()
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not any(t.is_alive() for t in threads)
    got = list(acked)
    assert len(got) >= 20
    present = set(d.queue_ids())
    missing = [q for q in got if q not in present]
    assert not missing, "acknowledged but not in queue/: %r" % missing
    for qid in got:
        sp = parse_spool(d.read_queue(qid))
        assert sp.env_lines[0] == "sluice-spool 1"
        assert "id " + qid in sp.env_lines
        assert sp.rcpts() == ["user@test.example"]
        assert sp.message.startswith(b"Received: ")
        assert sp.message.endswith(b"Hello.\r\n")
    # Restart on the same spool: recovery runs, nothing acknowledged is lost.
    d.start()
    d.wait_ready()
    assert d.tmp_files() == [], "tmp/ not cleaned at start: %r" % d.tmp_files()
    present = set(d.queue_ids())
    assert set(got) <= present
    r = d.cli("-bpc")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.decode().strip()) == len(present)
    r = send_message(d.mx, subject="after restart")
    assert r.code == 250, r


def test_recovery_at_start(start_daemon):
    d = start_daemon()
    r = send_message(d.mx, subject="survivor")
    assert r.code == 250
    good = r.queue_id
    assert d.stop() == 0
    bad = "0000000000a-00001-00"
    leftover = "0000000000b-00001-00"
    with open(os.path.join(d.queue_dir, bad), "wb") as f:
        f.write(b"this is not a spool file\n")
    with open(os.path.join(d.tmp_dir, leftover), "wb") as f:
        f.write(b"sluice-spool 1\nid " + leftover.encode() + b"\n")
    d.start()
    d.wait_ready()
    assert d.tmp_files() == []
    assert d.queue_ids() == [good]
    corrupt = os.path.join(d.spool, "corrupt")
    assert os.path.isdir(corrupt)
    assert any(bad in x for x in os.listdir(corrupt)), os.listdir(corrupt)
    assert bad in d.log_since_start(), "setting aside a corrupt file was not logged"
    r = d.cli("-bpc")
    assert r.stdout.decode().strip() == "1"
    r = d.cli("-Mvc", good)
    assert b"Subject: survivor" in r.stdout


def test_concurrent_sessions_commit(daemon):
    results, errors = [], []

    def one(i):
        try:
            results.append(send_message(daemon.mx, subject="par %d" % i))
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert len(results) == 30
    assert all(r.code == 250 for r in results), [r for r in results if r.code != 250]
    ids = [r.queue_id for r in results]
    assert all(QUEUE_ID_RE.match(q) for q in ids)
    assert len(set(ids)) == 30
    assert sorted(ids) == daemon.queue_ids()
    subjects = set()
    for q in ids:
        msg = daemon.spool_msg(q).message
        for line in msg.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                subjects.add(line)
    assert len(subjects) == 30


def test_queue_ids_sort_by_time(daemon):
    ids = []
    for i in range(3):
        r = send_message(daemon.mx, subject="order %d" % i)
        ids.append(r.queue_id)
        time.sleep(0.01)
    assert ids == sorted(ids)
    r = daemon.cli("-bp")
    out = r.stdout.decode()
    pos = [out.index(q) for q in ids]
    assert pos == sorted(pos), out


SLOW_SYNC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
/* Every sync of the daemon takes 3 s longer: the disk of a busy server. */
static int slow(const char *name, int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
	usleep(3000000);
	return real(fd);
}
int fdatasync(int fd) { return slow("fdatasync", fd); }
int fsync(int fd) { return slow("fsync", fd); }
int syncfs(int fd) { return slow("syncfs", fd); }
"""


def test_session_closed_during_its_commit(start_daemon, test_dir, monkeypatch):
    """A session closed (here by the shutdown timeout) while the worker's
    file-system thread is still syncing its message never got its 250: the
    message is taken back out of the queue (the client will send it again)
    and logged as discarded, not left in queue/ with nobody told."""
    import subprocess
    shim_c = os.path.join(test_dir, "slowsync.c")
    shim = os.path.join(test_dir, "slowsync.so")
    with open(shim_c, "w") as f:
        f.write(SLOW_SYNC_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, shim_c], check=True)
    monkeypatch.setenv("LD_PRELOAD", shim)
    monkeypatch.setenv("ASAN_OPTIONS", "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""))
    d = start_daemon(shutdown_timeout="1s")
    monkeypatch.delenv("LD_PRELOAD")
    c = Client(d.mx, timeout=10)
    try:
        c.ehlo()
        c.begin_data()
        c.send(make_body("closed while syncing") + b".\r\n")
        # the batch is now in the thread (its sync takes 3 s): stop the
        # daemon, whose shutdown timeout (1 s) closes the session first
        time.sleep(0.5)
        d.signal(15)
        got = c.replies_for(8)
        assert all(r.code != 250 for r in got), got
    finally:
        c.close()
    assert d.proc.wait(30) == 0
    discarded = d.events("discarded")
    assert len(discarded) == 1, d.log_tail(30)
    assert d.queue_ids() == []
    assert d.events("queued") == []
