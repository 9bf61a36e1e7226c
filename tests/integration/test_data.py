"""Message data: DATA and BDAT, dot-stuffing, SMTP smuggling, size and
line limits, aborted transfers, the stored message and its Received header."""
import os
import re
import time

import pytest

from helpers import (
    HOSTNAME,
    QUEUE_ID_RE,
    Client,
    SMTPClosed,
    make_body,
    send_message,
    wait_until,
)


def _start_data(c, rcpts=("user@test.example",), params=""):
    c.ehlo()
    assert c.cmd("MAIL FROM:<sender@client.example>%s" % params).code == 250
    for r in rcpts:
        assert c.cmd("RCPT TO:<%s>" % r).code == 250
    r = c.cmd("DATA")
    assert r.code == 354, r


def _received_prefix(message, rest):
    """Checks message == <Received header> + rest; returns the header."""
    assert message.endswith(rest), (message[-300:], rest[-300:])
    head = message[:len(message) - len(rest)]
    assert head.startswith(b"Received: "), head[:200]
    assert head.endswith(b"\r\n"), head
    lines = head[:-2].split(b"\r\n")
    for l in lines[1:]:
        assert l[:1] in (b" ", b"\t"), "more than one header before the message: %r" % head
    return b" ".join(x.strip() for x in lines).decode()


def test_message_stored_exactly(daemon):
    body = make_body("exact", "line one\r\n\r\n  indented\r\nlast line\r\n")
    with Client(daemon.mx) as c:
        _start_data(c, rcpts=("user@test.example", "second@other.example"))
        c.send(body + b".\r\n")
        r = c.reply(timeout=15)
        # Durability: the file is in queue/ by the time 250 arrives.
        assert r.code == 250 and r.enhanced == "2.0.0", r
        qid = r.queue_id
        assert qid and QUEUE_ID_RE.match(qid), r
        assert daemon.queue_ids() == [qid]
    data = daemon.read_queue(qid)
    env_text = data.split(b"\n\n", 1)[0].decode()
    env = env_text.split("\n")
    assert env[0] == "sluice-spool 1"
    assert "id " + qid in env
    assert any(re.match(r"^received \d+$", l) for l in env), env
    assert "role mx" in env
    assert "client 127.0.0.1" in env
    assert "helo client.example" in env
    assert "from sender@client.example" in env
    sp = daemon.spool_msg(qid)
    assert sp.rcpts() == ["user@test.example", "second@other.example"]
    assert sp.env("tls") == []
    recv = _received_prefix(sp.message, body)
    assert recv.startswith("Received: from client.example"), recv
    assert "[127.0.0.1]" in recv
    assert "by " + HOSTNAME in recv
    assert "role=mx" in recv
    assert "cipher=" not in recv
    assert "id " + qid in recv
    assert re.search(r"\bwith ESMTP\b", recv), recv
    assert daemon.queue_ids() == [qid]
    assert daemon.tmp_files() == []


def test_dot_unstuffing(daemon):
    with Client(daemon.mx) as c:
        _start_data(c)
        c.send(b"Subject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\n. space\r\nend\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250, r
    msg = daemon.spool_msg(r.queue_id).message
    assert msg.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\n space\r\nend\r\n"), msg


def test_8bitmime_body(daemon):
    text = "caf\u00e9 na\u00efve \u2713\r\n".encode()
    with Client(daemon.mx) as c:
        _start_data(c, params=" BODY=8BITMIME")
        c.send(b"Subject: 8bit\r\n\r\n" + text + b".\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250, r
    sp = daemon.spool_msg(r.queue_id)
    assert sp.env("body") == ["8bitmime"]
    assert sp.message.endswith(text)


SMUGGLE = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
    pytest.param(b"\r.\r", id="CR.CR"),
]


@pytest.mark.parametrize("end", SMUGGLE)
def test_smtp_smuggling(daemon, end):
    smuggled = (b"MAIL FROM:<evil@client.example>\r\n"
                b"RCPT TO:<victim@test.example>\r\n"
                b"DATA\r\n"
                b"Subject: smuggled\r\n\r\nevil\r\n")
    with Client(daemon.mx) as c:
        _start_data(c)
        c.send(b"Subject: innocent\r\n\r\nhello" + end + smuggled + b".\r\n")
        replies = c.replies_for(1.0)
        assert replies, "no reply to the end of data"
        assert replies[0].code == 550 and replies[0].enhanced == "5.6.0", replies
        assert len(replies) == 1, "smuggled commands were executed: %r" % replies
        try:
            r = c.cmd("QUIT")
            assert r.code == 221, r
        except SMTPClosed:
            pass
    time.sleep(0.2)
    assert daemon.queue_ids() == [], "a message was queued"
    assert wait_until(lambda: daemon.tmp_files() == [], 3), daemon.tmp_files()
    assert daemon.events("queued") == []


@pytest.mark.parametrize("body", [
    pytest.param(b"Subject: lf\n\nbare lf only\n", id="all-LF"),
    pytest.param(b"Subject: lf\r\n\r\none bare\nLF\r\n", id="one-LF"),
    pytest.param(b"Subject: cr\r\n\r\none bare\rCR\r\n", id="one-CR"),
])
def test_bare_line_ends_in_data(daemon, body):
    with Client(daemon.mx) as c:
        _start_data(c)
        # The proper end marker follows: the bare line ends must not end it.
        c.send(body + b"\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 550 and r.enhanced == "5.6.0", r
        assert c.silent_for(0.3)
        # The session is usable afterwards: a clean message goes through.
        assert c.cmd("RSET").code == 250
        r = c.mail_transaction()
        assert r.code == 250, r
    assert daemon.queue_ids() == [r.queue_id]


def test_oversize_message(daemon):
    line = b"x" * 76 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * (1200 * 1024 // len(line))
    with Client(daemon.mx, timeout=20) as c:
        _start_data(c)
        c.send(big + b".\r\n")
        r = c.reply(timeout=20)
        assert r.code == 552 and r.enhanced == "5.3.4", r
        assert c.silent_for(0.3), c.buf
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
        r = c.mail_transaction()
        assert r.code == 250, r
    assert daemon.queue_ids() == [r.queue_id]
    assert wait_until(lambda: daemon.tmp_files() == [], 3)


def test_message_just_under_limit(daemon):
    line = b"y" * 76 + b"\r\n"
    body = b"Subject: fits\r\n\r\n" + line * (1000 * 1000 // len(line))
    assert len(body) < 1024 * 1024
    with Client(daemon.mx, timeout=20) as c:
        _start_data(c)
        c.send(body + b".\r\n")
        r = c.reply(timeout=20)
        assert r.code == 250, r
    assert daemon.spool_msg(r.queue_id).message.endswith(body)


def test_message_line_too_long(daemon):
    with Client(daemon.mx) as c:
        _start_data(c)
        c.send(b"Subject: long\r\n\r\n" + b"z" * 1500 + b"\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 550 and r.enhanced == "5.6.0", r
        assert c.cmd("NOOP").code == 250
    assert daemon.queue_ids() == []


def test_disconnect_mid_data(daemon):
    c = Client(daemon.mx)
    _start_data(c)
    c.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 2000 + b"no end")
    time.sleep(0.2)
    c.close()
    assert wait_until(lambda: daemon.tmp_files() == [], 3), daemon.tmp_files()
    assert daemon.queue_ids() == []
    daemon.wait_event("disconnect")
    assert daemon.events("queued") == []


def test_disconnect_mid_bdat(daemon):
    c = Client(daemon.mx)
    c.ehlo()
    c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\n")
    assert [c.reply().code for _ in range(2)] == [250, 250]
    c.send(b"BDAT 10\r\n0123456789")
    assert c.reply().code == 250
    c.send(b"BDAT 100000 LAST\r\n" + b"a" * 5000)
    time.sleep(0.2)
    c.close()
    assert wait_until(lambda: daemon.tmp_files() == [], 3), daemon.tmp_files()
    assert daemon.queue_ids() == []


def test_bdat_chunks(daemon):
    chunk1 = b"Subject: bdat\r\n\r\nfirst "
    chunk2 = b"chunk\r\n.\r\nQUIT\r\n"
    chunk3 = b"..after\r\n"
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        for ch in (chunk1, chunk2):
            c.send(b"BDAT %d\r\n" % len(ch) + ch)
            r = c.reply()
            assert r.code == 250 and r.enhanced == "2.0.0", r
        c.send(b"BDAT %d LAST\r\n" % len(chunk3) + chunk3)
        r = c.reply(timeout=15)
        assert r.code == 250 and r.queue_id, r
        # The QUIT inside the chunk was data, not a command.
        assert c.cmd("NOOP").code == 250
    msg = daemon.spool_msg(r.queue_id).message
    # BDAT data is taken as is: no dot-unstuffing, no end marker.
    _received_prefix(msg, chunk1 + chunk2 + chunk3)


def test_bdat_zero_last(daemon):
    data = b"Subject: zero\r\n\r\nbody\r\n"
    with Client(daemon.mx) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<user@test.example>\r\n"
               b"BDAT %d\r\n" % len(data) + data + b"BDAT 0 LAST\r\n")
        codes = [c.reply(timeout=15) for _ in range(4)]
        assert [x.code for x in codes] == [250, 250, 250, 250], codes
        assert codes[3].queue_id, codes
    _received_prefix(daemon.spool_msg(codes[3].queue_id).message, data)


def test_bdat_pipelined_with_quit(daemon):
    data = b"Subject: pipe\r\n\r\nx\r\n.\r\nMAIL FROM:<evil@x>\r\n"
    with Client(daemon.mx) as c:
        c.send(b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\n"
               b"RCPT TO:<user@test.example>\r\nBDAT %d LAST\r\n" % len(data) + data
               + b"QUIT\r\n")
        r = [c.reply(timeout=15) for _ in range(5)]
        assert [x.code for x in r] == [250, 250, 250, 250, 221], r
        assert c.wait_closed()
    ids = daemon.queue_ids()
    assert ids == [r[3].queue_id]
    _received_prefix(daemon.spool_msg(ids[0]).message, data)


def test_bdat_then_data_refused(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        c.send(b"BDAT 3\r\nabc")
        assert c.reply().code == 250
        r = c.cmd("DATA")
        assert r.code == 503 and r.enhanced.startswith("5.5."), r


def test_bdat_oversize(daemon):
    with Client(daemon.mx, timeout=20) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@client.example>").code == 250
        assert c.cmd("RCPT TO:<user@test.example>").code == 250
        chunk = b"Subject: big\r\n\r\n" + (b"b" * 98 + b"\r\n") * (1100 * 1024 // 100)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        r = c.reply(timeout=20)
        assert r.code == 552 and r.enhanced == "5.3.4", r
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
    assert daemon.queue_ids() == []
    assert wait_until(lambda: daemon.tmp_files() == [], 3)


def test_queued_log_line(daemon):
    with Client(daemon.mx) as c:
        _start_data(c, rcpts=("a@test.example", "b@other.example"))
        c.send(make_body("logged") + b".\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250
    ev = daemon.wait_event("queued", id=r.queue_id)[0]
    assert ev["from"] == "sender@client.example"
    assert ev["nrcpt"] == "2"
    assert ev["to"] == "a@test.example,b@other.example"
    assert ev["role"] == "mx"
    assert int(ev["size"]) > 0
    assert ev.get("session")


def test_header_block_too_large(start_daemon):
    d = start_daemon(message_header_max="1K")
    with Client(d.mx) as c:
        _start_data(c)
        hdr = b"".join(b"X-Filler-%02d: %s\r\n" % (i, b"h" * 60) for i in range(30))
        c.send(b"Subject: big header\r\n" + hdr + b"\r\nbody\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.code == 552 and r.enhanced == "5.3.4", r
        assert c.cmd("NOOP").code == 250
    assert d.queue_ids() == []


def test_dsn_parameters_stored(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<sender@client.example> RET=HDRS ENVID=QQ314159")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<user@test.example> NOTIFY=SUCCESS,FAILURE "
                  "ORCPT=rfc822;user@test.example")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<other@test.example> NOTIFY=NEVER")
        assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send(make_body("dsn") + b".\r\n")
        r = c.reply(timeout=15)
        assert r.code == 250, r
    sp = daemon.spool_msg(r.queue_id)
    assert sp.env("ret") == ["hdrs"]
    assert sp.env("envid") == ["QQ314159"]
    rc = [v.split(" ") for v in sp.env("rcpt")]
    assert rc[0][0] == "user@test.example" and rc[0][1] == "6", rc
    assert "rfc822" in rc[0][2] and "test.example" in rc[0][2], rc
    assert rc[1][0] == "other@test.example" and rc[1][1] == "1" and rc[1][2] == "-", rc


def test_recipients_beyond_the_envelope_bound_are_put_off(start_daemon):
    # 3000 recipients with long ORCPTs would not fit the spool's envelope:
    # it used to take them all and fail the end of data with 451, a
    # message the client could never get through.  Those that would not
    # fit get 452 (the client sends them in another transaction) and the
    # rest is queued.
    d = start_daemon(recipients_max="3000")
    orcpt = "rfc822;" + "o" * 480
    with Client(d.mx, timeout=30) as c:  # 1.6 MB of RCPTs in one write
        c.ehlo()
        lines = ["MAIL FROM:<a@client.example>"]
        lines += ["RCPT TO:<u%04d@test.example> ORCPT=%s%04d" % (i, orcpt, i)
                  for i in range(3000)]
        c.send(("\r\n".join(lines) + "\r\n").encode())
        codes = [c.reply(timeout=30).code for _ in lines]
        assert codes[0] == 250
        took = codes[1:].count(250)
        put_off = codes[1:].count(452)
        assert took + put_off == 3000, set(codes)
        assert 100 <= took < 3000 and codes[1:took + 1] == [250] * took
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: many\r\n\r\nbody\r\n.\r\n")
        r = c.reply(timeout=30)
        assert r.code == 250, r
        assert c.cmd("QUIT").code == 221
    sp = d.spool_msg(r.queue_id)
    assert len(sp.env("rcpt")) == took


def test_smtputf8(daemon):
    sender = "j\u00f6rg@client.example"
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd(("MAIL FROM:<%s>" % sender).encode())
        assert r.code == 553 and r.enhanced == "5.6.7", r
        r = c.cmd(("MAIL FROM:<%s> SMTPUTF8" % sender).encode())
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<\u00fcser@test.example>".encode())
        assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send("Subject: utf8 \u2713\r\n\r\nok\r\n.\r\n".encode())
        r = c.reply(timeout=15)
        assert r.code == 250, r
    sp = daemon.spool_msg(r.queue_id)
    assert "smtputf8" in sp.env_lines
    env = daemon.read_queue(r.queue_id).split(b"\n\n", 1)[0].split(b"\n")
    rcpt = [l.split(b" ")[1] for l in env if l.startswith(b"rcpt ")]
    unx = [re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), x) for x in rcpt]
    assert unx == ["\u00fcser@test.example".encode()], rcpt


def test_spool_failure_temporary(daemon):
    # queue/ not writable for the workers: the message is not acknowledged
    # (451 4.3.0) and nothing is left behind; the client keeps its copy.
    mode = os.stat(daemon.queue_dir).st_mode & 0o7777
    os.chmod(daemon.queue_dir, 0o500)
    try:
        with Client(daemon.mx) as c:
            _start_data(c)
            c.send(make_body("no room") + b".\r\n")
            r = c.reply(timeout=15)
            assert r.code == 451 and r.enhanced == "4.3.0", r
            assert c.cmd("NOOP").code == 250
    finally:
        os.chmod(daemon.queue_dir, mode)
    assert daemon.queue_ids() == []
    assert wait_until(lambda: daemon.tmp_files() == [], 3), daemon.tmp_files()
    r = send_message(daemon.mx, subject="room again")
    assert r.code == 250, r
