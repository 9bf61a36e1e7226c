"""Protocol behaviour on the MX port: greeting, EHLO, replies, pipelining,
malformed commands, limits, timeouts."""
import re
import smtplib
import socket
import subprocess
import time

import pytest

from helpers import HOSTNAME, QUEUE_ID_RE, Client, SMTPClosed, make_body, wait_until


def test_greeting_and_ehlo(daemon):
    with Client(daemon.mx) as c:
        g = c.greeting
        assert g.code == 220
        assert g.lines[0].startswith(HOSTNAME + " "), g
        r = c.ehlo()
        assert r.lines[0].startswith(HOSTNAME), r
        kw = [l.split(" ")[0].upper() for l in r.lines[1:]]
        for ext in ("PIPELINING", "ENHANCEDSTATUSCODES", "SIZE", "STARTTLS", "CHUNKING",
                    "8BITMIME", "SMTPUTF8", "DSN"):
            assert ext in kw, (ext, r)
        size = [l for l in r.lines[1:] if l.upper().startswith("SIZE")]
        assert size[0].split() == ["SIZE", str(1024 * 1024)], size
        assert "AUTH" not in kw


def test_helo(daemon):
    with Client(daemon.mx) as c:
        r = c.cmd("HELO client.example")
        assert r.code == 250
        assert HOSTNAME in r.lines[0]
        r = c.mail_transaction()
        assert r.code == 250 and r.queue_id


def test_enhanced_codes_on_every_reply(daemon):
    cmds = ["NOOP", "RSET", "VRFY user", "HELP", "XYZZY", "RCPT TO:<user@test.example>",
            "MAIL FROM:<a@client.example>", "MAIL FROM:<b@client.example>",
            "RCPT TO:<user@test.example>", "RCPT TO:<user@nowhere.example>",
            "RCPT TO:<not an address>", "MAIL", "DATA", "QUIT"]
    with Client(daemon.mx) as c:
        c.ehlo()
        seen = []
        for cmd in cmds:
            r = c.cmd(cmd)
            seen.append((cmd, r))
            if r.code == 354:
                c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
                r = c.reply()
                seen.append(("<end of data>", r))
        for cmd, r in seen:
            if r.code == 354:
                continue
            assert r.all_enhanced(), (cmd, r)
            # The class of the enhanced code matches the reply code.
            assert r.enhanced[0] == str(r.code)[0], (cmd, r)
        codes = dict((cmd, r.code) for cmd, r in seen)
        assert codes["NOOP"] == 250
        assert codes["RSET"] == 250
        assert codes["XYZZY"] == 500
        assert codes["QUIT"] == 221


def test_sequence_errors(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code == 503 and r.enhanced == "5.5.1", r
        r = c.cmd("DATA")
        assert r.code in (503, 554) and r.enhanced.startswith("5.5."), r
        r = c.cmd("MAIL FROM:<a@client.example>")
        assert r.code == 250 and r.enhanced == "2.1.0", r
        r = c.cmd("MAIL FROM:<a@client.example>")
        assert r.code == 503 and r.enhanced == "5.5.1", r
        r = c.cmd("DATA")
        assert r.code in (503, 554) and r.enhanced.startswith("5.5."), r
        r = c.cmd("RSET")
        assert r.code == 250 and r.enhanced == "2.0.0"
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code == 503, "RSET did not end the transaction: %r" % r
    assert daemon.queue_ids() == []


def test_null_sender_and_syntax(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<user@exa mple.com>")
        assert r.code in (501, 553) and r.enhanced.startswith("5."), r
        r = c.cmd("MAIL FROM:user@example.com")
        assert r.code in (501, 553), r
        r = c.cmd("MAIL FROM:<>")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<>")
        assert r.code in (501, 553), r
        r = c.cmd("RCPT TO:<user@test.example>")
        assert r.code == 250, r


def test_size_parameter_over_limit(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@client.example> SIZE=%d" % (2 * 1024 * 1024))
        assert r.code == 552 and r.enhanced == "5.3.4", r
        r = c.cmd("MAIL FROM:<a@client.example> SIZE=1000")
        assert r.code == 250, r


def test_pipelining_all_replies(daemon):
    with Client(daemon.mx) as c:
        c.send(b"EHLO client.example\r\n"
               b"MAIL FROM:<sender@client.example>\r\n"
               b"RCPT TO:<user@test.example>\r\n"
               b"RCPT TO:<other@elsewhere.example>\r\n"
               b"RCPT TO:<postmaster@other.example>\r\n"
               b"DATA\r\n")
        r = [c.reply() for _ in range(6)]
        assert [x.code for x in r] == [250, 250, 250, 550, 250, 354], r
        assert len(r[0].lines) > 1 and r[0].lines[0].startswith(HOSTNAME)
        c.send(make_body("pipelined") + b".\r\nNOOP\r\nQUIT\r\n")
        end = c.reply(timeout=15)
        assert end.code == 250 and end.queue_id, end
        assert c.reply().code == 250
        assert c.reply().code == 221
        assert c.wait_closed()
    sp = daemon.spool_msg(end.queue_id)
    assert sorted(sp.rcpts()) == ["postmaster@other.example", "user@test.example"]


def test_pipelined_transactions_in_one_write(daemon):
    body = make_body("one") + b".\r\n"
    with Client(daemon.mx) as c:
        c.ehlo()
        one = (b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\nDATA\r\n"
               + body)
        c.send(one + one + b"QUIT\r\n")
        codes = []
        ids = []
        for _ in range(9):
            r = c.reply(timeout=15)
            codes.append(r.code)
            if r.queue_id:
                ids.append(r.queue_id)
        assert codes == [250, 250, 354, 250, 250, 250, 354, 250, 221], codes
    assert len(set(ids)) == 2
    assert sorted(ids) == daemon.queue_ids()


@pytest.mark.parametrize("line,probe,probe_code", [
    # A bare LF or CR makes the command invalid: it is answered 500 5.5.2
    # and not executed (what follows may be read as a new line).
    (b"MAIL FROM:<a@client.example>\nNOOP\r\n", "RCPT TO:<user@test.example>", 503),
    (b"MAIL FROM:<a@client.example>\rNOOP\r\n", "RCPT TO:<user@test.example>", 503),
    (b"MAIL FROM:<a@client.example>\n\r\n", "RCPT TO:<user@test.example>", 503),
    (b"MAIL FROM:<a@client.example> \r\r\n", "RCPT TO:<user@test.example>", 503),
])
def test_bare_cr_lf_in_command(daemon, line, probe, probe_code):
    with Client(daemon.mx) as c:
        c.ehlo()
        c.send(line)
        r = c.reply()
        assert r.code == 500 and r.enhanced == "5.5.2", r
        c.replies_for(0.3)
        r = c.cmd(probe)
        assert r.code == probe_code, "the bad line was executed: %r" % r
        assert c.cmd("NOOP").code == 250


def test_bare_cr_in_rcpt_adds_no_recipient(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.example>").code == 250
        c.send(b"RCPT TO:<user@test.example>\rX\r\n")
        r = c.reply()
        assert r.code == 500 and r.enhanced == "5.5.2", r
        c.replies_for(0.3)
        r = c.cmd("DATA")
        assert r.code in (503, 554), "a recipient was added from a bad line: %r" % r


def test_line_too_long(daemon):
    with Client(daemon.mx) as c:
        c.ehlo()
        c.send(b"NOOP " + b"x" * 5000 + b"\r\n")
        r = c.reply()
        assert r.code == 500 and r.enhanced == "5.5.2", r
        assert c.silent_for(0.3), "more than one reply to one long line: %r" % c.buf
        assert c.cmd("NOOP").code == 250
        # A long MAIL line does not start a transaction.
        c.send(b"MAIL FROM:<" + b"a" * 3000 + b"@client.example>\r\n")
        r = c.reply()
        assert r.code == 500 and r.enhanced == "5.5.2", r
        assert c.cmd("RCPT TO:<user@test.example>").code == 503


def test_line_at_limit_accepted(start_daemon):
    d = start_daemon(smtp_line_max="600")
    with Client(d.mx) as c:
        c.ehlo()
        # 600 bytes including CRLF is allowed, 601 is not.
        line = b"NOOP " + b"x" * (600 - 7)
        assert len(line) + 2 == 600
        assert c.cmd(line).code == 250
        r = c.cmd(line + b"y")
        assert r.code == 500 and r.enhanced == "5.5.2", r


def test_too_many_errors(start_daemon):
    d = start_daemon(smtp_max_errors="3")
    with Client(d.mx) as c:
        c.ehlo()
        codes = []
        for i in range(10):
            try:
                codes.append(c.cmd("BOGUS%d" % i).code)
            except SMTPClosed:
                break
            if codes[-1] == 421:
                break
        assert 421 in codes, codes
        # Three errors allowed: the third or fourth bad command ends it.
        assert codes.index(421) in (2, 3), codes
        assert all(x == 500 for x in codes[:-1]), codes
        assert c.wait_closed(3)


def test_session_held_with_noop_and_rset_is_ended(start_daemon):
    # NOOP or MAIL/RSET just before each timeout would hold the session,
    # and a slot of smtp_accept_max, for ever: smtp_accept_max_nonmail
    # ends it (at a NOOP or MAIL: never as the result of an RSET, RFC 5321
    # 4.1.1.5); an accepted message starts the count again.
    d = start_daemon(smtp_accept_max_nonmail="4")
    with Client(d.mx) as c:
        c.ehlo()                                            # 1
        assert c.cmd("NOOP").code == 250                    # 2
        r = c.mail_transaction(body=make_body("counted"))   # MAIL 3, then 0
        assert r.code == 250, r
        for i in range(4):
            assert c.cmd("MAIL FROM:<a@client.example>").code == 250   # 1..4
            assert c.cmd("RSET").code == 250, i
        for i in range(5):
            assert c.cmd("RSET").code == 250, i
        r = c.cmd("MAIL FROM:<a@client.example>")
        assert r.code == 421 and r.enhanced == "4.7.0", r
        assert "send no mail" in r.lines[0], r
        assert c.wait_closed(3)
    assert len(d.queue_ids()) == 1


def test_idle_timeout(start_daemon):
    d = start_daemon(smtp_receive_timeout="2s")
    with Client(d.mx) as c:
        c.ehlo()
        r = c.reply(timeout=6)
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert c.wait_closed(3)


def test_idle_timeout_in_data(start_daemon):
    d = start_daemon(smtp_receive_timeout="2s")
    with Client(d.mx) as c:
        c.ehlo()
        c.begin_data()
        c.send(b"Subject: slow\r\n\r\npartial")
        r = c.reply(timeout=6)
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert c.wait_closed(3)
    assert d.queue_ids() == []
    assert d.tmp_files() == []


def test_dribbled_command_is_cut_off(start_daemon):
    """Single bytes do not restart the receive timer: a client that sends
    a command one byte at a time gets the 421 timeout before the line is
    complete, instead of holding the session for as long as it likes."""
    d = start_daemon(smtp_receive_timeout="3s")
    with Client(d.mx) as c:
        c.ehlo()
        line = b"NOOP and a long argument sent one byte at a time\r\n"
        started = time.monotonic()
        got = None
        for ch in line:
            try:
                c.send(bytes([ch]))
            except OSError:
                break
            try:
                got = c.reply(timeout=0.4)
            except socket.timeout:
                got = None
            if got is not None or time.monotonic() - started > 15:
                break
        assert got is not None, "no reply within 15 s of dribbling"
        assert got.code == 421 and got.enhanced == "4.4.2", got
        # cut within the timeout (plus margin), well before the line ended
        assert time.monotonic() - started < 6
        assert c.wait_closed(3)


def test_message_text_below_min_rate_is_cut_off(start_daemon):
    """In the message text a line per second (3 bytes/s) is progress of a
    kind, but far below smtp_data_min_rate: the session is cut with 421
    4.4.2 about smtp_receive_timeout after the text began, instead of
    lasting as long as the client keeps sending a line now and then."""
    d = start_daemon(smtp_receive_timeout="3s", smtp_data_min_rate="1000")
    with Client(d.mx) as c:
        c.ehlo()
        c.begin_data()
        started = time.monotonic()
        got = None
        while got is None and time.monotonic() - started < 15:
            try:
                c.send(b"x\r\n")
            except OSError:
                break
            try:
                got = c.reply(timeout=1)
            except socket.timeout:
                got = None
        assert got is not None, "still receiving after 15 s of one line per second"
        assert got.code == 421 and got.enhanced == "4.4.2", got
        assert time.monotonic() - started < 6
    assert d.queue_ids() == []


def test_tiny_bdat_chunks_below_min_rate_are_cut_off(start_daemon):
    """The rate holds over all the BDAT chunks of a transaction: one byte
    per second in chunks of one byte, each answered 250, is cut with 421
    4.4.2 about smtp_receive_timeout after the first chunk."""
    d = start_daemon(smtp_receive_timeout="3s", smtp_data_min_rate="1000")
    with Client(d.mx) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\n")
        assert [c.reply().code for _ in range(2)] == [250, 250]
        started = time.monotonic()
        got = None
        while time.monotonic() - started < 15:
            try:
                c.send(b"BDAT 1\r\nx")
                got = c.reply(timeout=2)
            except (OSError, SMTPClosed):
                break
            if got.code != 250:
                break
            time.sleep(1)
        assert got is not None and got.code == 421 and got.enhanced == "4.4.2", got
        assert time.monotonic() - started < 7
    assert d.queue_ids() == []


def test_bdat_chunks_at_rate_are_queued(start_daemon):
    """Chunks that keep up the rate, with pauses shorter than the timeout
    between them, go on for longer than the timeout and are queued."""
    d = start_daemon(smtp_receive_timeout="2s", smtp_data_min_rate="1000")
    with Client(d.mx) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\n")
        assert [c.reply().code for _ in range(2)] == [250, 250]
        head = b"Subject: chunks\r\n\r\n"
        c.send(b"BDAT %d\r\n" % len(head) + head)
        assert c.reply().code == 250
        chunk = (b"z" * 98 + b"\r\n") * 10  # 1,000 bytes: 1 s of credit
        for _ in range(8):                     # 4 s at 2,000 bytes/s
            time.sleep(0.5)
            c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
            assert c.reply().code == 250
        r = c.cmd("BDAT 0 LAST")
        assert r.code == 250 and r.queue_id, r
    assert len(d.queue_ids()) == 1


def test_message_text_at_min_rate_is_not_cut_off(start_daemon):
    """A client that sends its text at twice smtp_data_min_rate for twice
    smtp_receive_timeout keeps its session, and the message is queued."""
    d = start_daemon(smtp_receive_timeout="2s", smtp_data_min_rate="1000")
    with Client(d.mx) as c:
        c.ehlo()
        c.begin_data()
        c.send(b"Subject: steady\r\n\r\n")
        line = b"y" * 98 + b"\r\n"
        for _ in range(8 * 5):          # 4 s, 200 ms apart: 500 bytes each
            c.send(line * 5)
            time.sleep(0.2)
        r = c.cmd(".")
        assert r.code == 250 and r.queue_id, r
    assert len(d.queue_ids()) == 1


def test_receive_timer_restarts_on_progress(start_daemon):
    """Complete lines restart the timer: a client that sends a command
    every 2 s on a 3 s timeout is never cut off."""
    d = start_daemon(smtp_receive_timeout="3s")
    with Client(d.mx) as c:
        c.ehlo()
        for _ in range(4):
            time.sleep(2)
            assert c.cmd("NOOP").code == 250


def test_quit(daemon):
    with Client(daemon.mx) as c:
        r = c.cmd("QUIT")
        assert r.code == 221 and r.enhanced == "2.0.0"
        assert c.wait_closed(3)


def test_verbs_case_insensitive(daemon):
    with Client(daemon.mx) as c:
        assert c.cmd("ehlo client.example").code == 250
        assert c.cmd("mail from:<a@client.example>").code == 250
        assert c.cmd("rcpt to:<user@test.example>").code == 250
        assert c.cmd("noop").code == 250
        assert c.cmd("rset").code == 250


def test_smtplib_sendmail(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.mx, timeout=10) as s:
        s.ehlo("client.example")
        assert s.has_extn("pipelining")
        refused = s.sendmail("sender@client.example", ["a@test.example", "b@other.example"],
                             make_body("smtplib"))
        assert refused == {}
        code, msg = s.noop()
        assert code == 250
    ids = daemon.queue_ids()
    assert len(ids) == 1
    assert sorted(daemon.spool_msg(ids[0]).rcpts()) == ["a@test.example", "b@other.example"]


def test_swaks_plain(daemon):
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % daemon.mx, "--to", "user@test.example",
         "--from", "sender@client.example", "--helo", "client.example",
         "--header", "Subject: swaks plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    m = re.search(r"<-  250 2\.0\.0 OK queued as (\S+)", out)
    assert m, out
    assert QUEUE_ID_RE.match(m.group(1))
    assert daemon.queue_ids() == [m.group(1)]


def test_vrfy_expn_helo_and_parameters(daemon):
    with Client(daemon.mx) as c:
        r = c.cmd("EHLO")
        assert r.code == 501 and r.enhanced == "5.5.4", r
        r = c.cmd("HELO")
        assert r.code == 501 and r.enhanced == "5.5.4", r
        c.ehlo()
        # VRFY never tells whether a user exists.
        for who in ("user@test.example", "nobody-here@test.example", "root"):
            r = c.cmd("VRFY " + who)
            assert r.code == 252 and r.enhanced == "2.0.0", r
        r = c.cmd("EXPN staff")
        assert r.code == 502 and r.enhanced == "5.5.1", r
        r = c.cmd("MAIL FROM:<a@client.example> FROBNICATE=yes")
        assert r.code == 555 and r.enhanced == "5.5.4", r
        r = c.cmd("MAIL FROM:<a@client.example> BODY=9BIT")
        assert r.code == 555 and r.enhanced == "5.5.4", r
        r = c.cmd("MAIL FROM:<a@client.example> SIZE=1 SIZE=2")
        assert r.code == 501 and r.enhanced == "5.5.4", r
        r = c.cmd("MAIL FROM:<a@client.example> BODY=8BITMIME SIZE=100")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<user@test.example> FROBNICATE")
        assert r.code == 555 and r.enhanced == "5.5.4", r
        r = c.cmd("RCPT TO:<user@test.example> NOTIFY=SOMETIMES")
        assert r.code == 501 and r.enhanced == "5.5.4", r


def test_smtp_accept_max(start_daemon):
    d = start_daemon(smtp_accept_max="2")
    # Let the readiness probes' sessions end first.
    wait_until(lambda: len(d.events("disconnect")) >= len(d.events("connect")), 3)
    a = Client(d.mx)
    b = Client(d.mx)
    try:
        assert a.greeting.code == 220 and b.greeting.code == 220
        c = Client(d.mx, greet=False)
        try:
            r = c.reply()
            assert r.code == 421 and r.enhanced == "4.3.2", r
            assert c.wait_closed(3)
        finally:
            c.close()
        assert a.cmd("NOOP").code == 250
    finally:
        a.close()
        b.close()
    # Once they are gone, new sessions are accepted again.
    assert wait_until(lambda: Client(d.mx).greeting.code == 220, 5)


def test_smtp_accept_max_per_host(start_daemon):
    """smtp_accept_max_per_host counts one address's sessions over all
    workers: the next gets 421 4.7.0, another address is still served, and
    a place freed is taken again."""
    d = start_daemon(smtp_accept_max_per_host="3", smtp_workers="2")
    wait_until(lambda: len(d.events("disconnect")) >= len(d.events("connect")), 3)
    held = []
    try:
        for _ in range(3):
            c = Client(d.mx)
            assert c.greeting.code == 220, c.greeting
            held.append(c)
        for _ in range(3):  # whichever worker takes it
            extra = Client(d.mx, greet=False)
            try:
                r = extra.reply()
                assert r.code == 421 and r.enhanced == "4.7.0", r
                assert extra.wait_closed(3)
            finally:
                extra.close()
        other = Client(d.mx, source="127.0.0.2")
        try:
            assert other.greeting.code == 220
            assert other.cmd("NOOP").code == 250
        finally:
            other.close()
        held.pop().close()
        # every session but the two still held has ended on the server
        assert wait_until(lambda: len(d.events("disconnect")) >= len(d.events("connect")) - 2, 3)
        again = Client(d.mx)
        held.append(again)
        assert again.greeting.code == 220
        refused = d.events("refused_connection")
        assert len(refused) == 3, refused
        assert all(e.get("reason") == "smtp_accept_max_per_host" for e in refused), refused
    finally:
        for c in held:
            c.close()


def test_listen_backlog_is_smtp_connect_backlog(start_daemon):
    """The listening socket's queue is smtp_connect_backlog (ss shows a
    listener's backlog in Send-Q), not a library's default of 128."""
    d = start_daemon(smtp_connect_backlog="777")
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % d.mx], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out and out[0] == "LISTEN", out
    assert out[2] == "777", out


def test_connection_burst_gets_replies(start_daemon):
    """A burst of connections far beyond smtp_accept_max (and beyond
    libevent's default listen queue of 128): every one gets either a
    greeting or a 421 and none waits without a reply; no more sessions
    are greeted than the limit allows, whichever worker accepts them."""
    import selectors
    import socket as socketmod
    limit, total = 40, 600
    d = start_daemon(smtp_accept_max=str(limit), smtp_workers="2",
                     smtp_connect_backlog="1024")
    wait_until(lambda: len(d.events("disconnect")) >= len(d.events("connect")), 3)
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(total):
            s = socketmod.socket(socketmod.AF_INET, socketmod.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", d.mx))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, bytearray())
        first = {}
        deadline = time.monotonic() + 20
        while len(first) < total and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                buf = key.data
                try:
                    chunk = key.fileobj.recv(512)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                buf += chunk
                if b"\r\n" in buf or not chunk:
                    first[key.fileobj.fileno()] = bytes(buf[:3])
                    sel.unregister(key.fileobj)
        greeted = sum(1 for v in first.values() if v == b"220")
        refused = sum(1 for v in first.values() if v == b"421")
        assert len(first) == total, "%d of %d got no reply" % (total - len(first), total)
        assert greeted + refused == total, (greeted, refused, total)
        assert greeted <= limit, greeted
        assert greeted >= 1 and refused >= total - limit
    finally:
        for s in socks:
            s.close()


def test_slow_clients_do_not_hold_the_workers(start_daemon):
    """Clients trickling one byte at a time (more of them than there are
    workers) do not hold a worker: a normal client is served meanwhile,
    and each trickler is still answered correctly at the end."""
    d = start_daemon()
    slow = [Client(d.mx) for _ in range(6)]
    line = b"EHLO slow.example\r\n"
    try:
        for i in range(len(line) - 1):
            for c in slow:
                c.send(line[i:i + 1])
            if i == 5:
                # In the middle of the trickle, a whole transaction.
                s = smtplib.SMTP("127.0.0.1", d.mx, timeout=10)
                assert s.sendmail("a@elsewhere.example", ["alice@test.example"],
                                  "Subject: t\r\n\r\nx\r\n") == {}
                s.quit()
            time.sleep(0.05)
        for c in slow:
            c.send(line[-1:])
            r = c.reply()
            assert r.code == 250, r
    finally:
        for c in slow:
            c.close()
    assert len(d.queue_ids()) == 1
