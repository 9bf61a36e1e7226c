"""A full spool file system: a message is told 452 4.3.1 Insufficient
system storage (RFC 5321 4.2.2, RFC 3463 X.3.1), not the generic 451
4.3.0, and a MAIL whose SIZE= does not fit is told so at once (RFC 1870
section 6); once there is space again, mail is accepted.

The spool is a small tmpfs mounted for the test (root only; skipped where
mounting is not possible)."""
import errno
import os
import subprocess

import pytest

from helpers import Client, make_body

SIZE_MB = 4


@pytest.fixture
def spool_tmpfs(test_dir):
    """test_dir/spool on a tmpfs of its own, unmounted at teardown (after
    the daemon stopped: this fixture is set up before start_daemon)."""
    spool = os.path.join(test_dir, "spool")
    os.makedirs(spool, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % SIZE_MB,
                        "tmpfs", spool], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.decode(errors="replace").strip())
    yield spool
    subprocess.run(["umount", "-l", spool], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def fill(spool):
    """Fills the file system; returns the path of the filler file."""
    path = os.path.join(spool, "filler")
    blk = b"f" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(blk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    # The last, partial block too.
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                if f.write(b"f" * 512) == 0:
                    break
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    return path


def transaction(port, body, mail_params=""):
    """Returns (MAIL reply, final reply or None)."""
    with Client(port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<sender@client.example>%s" % mail_params)
        if r.code != 250:
            c.cmd("QUIT")
            return r, None
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(body + b".\r\n")
        fin = c.reply(timeout=15)
        # The session goes on after either reply.
        assert c.cmd("RSET").code == 250
        c.cmd("QUIT")
        return r, fin


def big_body(n):
    line = b"x" * 78 + b"\r\n"
    return make_body("big") + line * (n // len(line))


def test_full_spool_452_then_250(spool_tmpfs, start_daemon):
    d = start_daemon()
    filler = fill(spool_tmpfs)
    queued_before = len(d.queue_ids())

    # A small message (written by the commit) and a large one (written
    # while it arrives): both are told the storage is short.
    for body in (make_body("small"), big_body(300 * 1024)):
        _, fin = transaction(d.mx, body)
        assert fin.code == 452, fin
        assert fin.enhanced == "4.3.1", fin
        assert "Insufficient system storage" in fin.text, fin
    evs = d.wait_event("commit_failed", count=1)
    assert any(e.get("nospace") == "yes" for e in evs), evs
    assert len(d.queue_ids()) == queued_before
    assert d.tmp_files() == []

    # RFC 1870 section 6: a declared size that does not fit is refused at MAIL.
    r, _ = transaction(d.mx, make_body("sized"), " SIZE=200000")
    assert r.code == 452, r
    assert r.enhanced == "4.3.1", r

    # Space again: the next messages are accepted.
    os.unlink(filler)
    r, fin = transaction(d.mx, make_body("after"), " SIZE=200000")
    assert r.code == 250, r
    assert fin.code == 250, fin
    qid = fin.queue_id
    assert qid in d.queue_ids()
    _, fin = transaction(d.mx, big_body(300 * 1024))
    assert fin.code == 250, fin


def test_size_that_fits_is_accepted(spool_tmpfs, start_daemon):
    """A SIZE within the free space is not refused at MAIL."""
    d = start_daemon()
    r, fin = transaction(d.mx, make_body("fits"), " SIZE=1000")
    assert r.code == 250, r
    assert fin.code == 250, fin


def test_bs_full_spool_452(spool_tmpfs, start_daemon):
    """sluice -bs answers the same way."""
    d = start_daemon()
    filler = fill(spool_tmpfs)
    script = (b"EHLO client.example\r\n"
              b"MAIL FROM:<sender@client.example>\r\n"
              b"RCPT TO:<user@test.example>\r\n"
              b"DATA\r\n" + make_body("bs") + b".\r\n"
              b"MAIL FROM:<sender@client.example> SIZE=200000\r\n"
              b"QUIT\r\n")
    r = d.cli("-bs", input=script)
    out = r.stdout.decode(errors="replace")
    assert "\r\n452 4.3.1 Insufficient system storage" in out, (out, r.stderr)
    assert out.count("\r\n452 4.3.1") == 2, out
    os.unlink(filler)
    r = d.cli("-bs", input=script.replace(b" SIZE=200000", b""))
    out = r.stdout.decode(errors="replace")
    assert "\r\n250 2.0.0 OK queued as" in out, (out, r.stderr)
