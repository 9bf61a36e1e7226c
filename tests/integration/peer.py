"""A scriptable SMTP server on loopback: the remote side of delivery tests.

It speaks enough RFC 5321 (EHLO, PIPELINING, SIZE, 8BITMIME, STARTTLS,
per-recipient replies, DATA) to stand for the mail exchanger of another
domain, records every transaction, and can be told to misbehave (delay,
hang, answer garbage, drop the connection).
"""
import re
import socket
import ssl
import threading
import time


class Transaction:
    def __init__(self):
        self.helo = None
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []          # accepted recipients
        self.rcpts_tried = []    # every RCPT address
        self.rcpt_params = []    # the parameters after each RCPT address
        self.data = None         # bytes, dot-unstuffed, without the final dot line
        self.tls = False


class Peer:
    """Peer(host="127.0.0.2").  Behaviour hooks (set before use):
      rcpt_reply(addr, peer) -> reply line, default "250 2.1.5 ok"
      data_reply(txn, peer) -> reply line, default "250 2.0.0 queued"
      greeting: reply line, default "220 peer.example ESMTP"
      extensions: EHLO keywords
      before_data_reply: callable run before answering the final dot (e.g. wait)
      before_rset_reply: callable run before answering RSET
      mail_reply(peer) -> reply line to MAIL, default "250 2.1.0 ok"; a 421
            ends the session; mails counts the MAIL commands
      mode: "normal", "hang" (never greet), "garbage" (greet with junk),
            "drop_in_data" (close after the DATA payload, before the reply),
            "bad_tls" (accept STARTTLS, then answer the handshake with junk)
      auth: {user: password} -> AUTH PLAIN and LOGIN offered inside TLS,
            required before MAIL; logins records who authenticated
      tls_on_connect: TLS starts before the greeting (port 465 style)
    """

    def __init__(self, host="127.0.0.2", port=0, tls_cert=None):
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.greeting = "220 peer.example ESMTP test peer"
        self.extensions = ["PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES"]
        self.tls_ctx = None
        if tls_cert is not None:
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(tls_cert.cert, tls_cert.key)
            self.extensions.append("STARTTLS")
        self.rcpt_reply = lambda addr, peer: "250 2.1.5 ok"
        self.data_reply = lambda txn, peer: "250 2.0.0 queued as %d" % len(peer.transactions)
        self.before_data_reply = None
        self.before_rset_reply = None
        self.mail_reply = lambda peer: "250 2.1.0 ok"
        self.mails = 0
        self.mode = "normal"
        self.auth = None
        self.logins = []
        self.tls_on_connect = False
        self.transactions = []   # completed (final reply sent with 2xx)
        self.attempts = []       # every transaction that reached RCPT
        self.connections = 0
        self.lock = threading.Lock()
        self.closed = False
        self.threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_transactions(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.transactions) >= n:
                    return list(self.transactions)
            time.sleep(0.05)
        raise AssertionError("peer got %d transaction(s), wanted %d"
                             % (len(self.transactions), n))

    # -- server side --
    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, conn):
        conn.settimeout(60)
        s = _Stream(conn)
        try:
            self._session(s)
        except (OSError, ssl.SSLError, _Closed):
            pass
        finally:
            try:
                s.sock.close()
            except OSError:
                pass

    def _session(self, s):
        if self.mode == "hang":
            time.sleep(30)
            return
        if self.mode == "garbage":
            s.send(b"this is not smtp\r\n\x00\xff\r\n")
            time.sleep(1)
            return
        tls = False
        if self.tls_on_connect:
            s.start_tls(self.tls_ctx)
            tls = True
        s.send_line(self.greeting)
        if not self.greeting.startswith("220"):
            return
        txn = Transaction()
        helo = None
        user = None
        for _ in range(10000):
            line = s.readline()
            cmd = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
            arg = line[len(cmd) + 1:].decode("utf-8", "replace")
            if cmd in ("EHLO", "HELO", "LHLO"):
                helo = arg
                exts = [e for e in self.extensions if not (tls and e == "STARTTLS")]
                if self.auth is not None and tls:
                    exts.append("AUTH PLAIN LOGIN")
                if cmd == "HELO":
                    s.send_line("250 peer.example")
                else:
                    lines = ["peer.example greets %s" % arg] + exts
                    s.send_lines(250, lines)
                txn = Transaction()
            elif cmd == "STARTTLS" and self.tls_ctx is not None and not tls:
                s.send_line("220 2.0.0 go ahead")
                if self.mode == "bad_tls":
                    s.send(b"\x15\x03\x03\x00\x02\x02\x28junk that is not TLS\r\n")
                    return
                s.start_tls(self.tls_ctx)
                tls = True
                helo = None
            elif cmd == "AUTH" and self.auth is not None and tls:
                import base64
                parts = arg.split(" ")
                mech = parts[0].upper()
                if mech == "PLAIN":
                    resp = parts[1] if len(parts) > 1 else None
                    if resp is None:
                        s.send_line("334 ")
                        resp = s.readline().decode()
                    _, u, p = base64.b64decode(resp).decode().split("\0")
                elif mech == "LOGIN":
                    s.send_line("334 VXNlcm5hbWU6")
                    u = base64.b64decode(s.readline()).decode()
                    s.send_line("334 UGFzc3dvcmQ6")
                    p = base64.b64decode(s.readline()).decode()
                else:
                    s.send_line("504 5.5.4 mechanism not supported")
                    continue
                if self.auth.get(u) == p:
                    user = u
                    self.logins.append(u)
                    s.send_line("235 2.7.0 ok")
                else:
                    s.send_line("535 5.7.8 bad credentials")
            elif cmd == "MAIL" and self.auth is not None and user is None:
                s.send_line("530 5.7.0 authentication required")
            elif cmd == "MAIL":
                with self.lock:
                    self.mails += 1
                txn = Transaction()
                txn.helo = helo
                txn.tls = tls
                m = re.match(r"(?i)FROM:<([^>]*)>(.*)", arg)
                txn.mail_from = m.group(1) if m else arg
                txn.mail_params = m.group(2).strip() if m else ""
                r = self.mail_reply(self)
                s.send_line(r)
                if r.startswith("421"):
                    return
            elif cmd == "RCPT":
                m = re.match(r"(?i)TO:<([^>]*)>(.*)", arg)
                addr = m.group(1) if m else arg
                txn.rcpts_tried.append(addr)
                txn.rcpt_params.append(m.group(2).strip() if m else "")
                r = self.rcpt_reply(addr, self)
                if r.startswith("2"):
                    txn.rcpts.append(addr)
                s.send_line(r)
            elif cmd == "DATA":
                with self.lock:
                    self.attempts.append(txn)
                if not txn.rcpts:
                    s.send_line("554 5.5.1 no valid recipients")
                    continue
                s.send_line("354 go ahead")
                data = s.read_data()
                txn.data = data
                if self.mode == "drop_in_data":
                    return
                if self.before_data_reply:
                    self.before_data_reply(txn, self)
                r = self.data_reply(txn, self)
                if r.startswith("2"):
                    with self.lock:
                        self.transactions.append(txn)
                s.send_line(r)
                txn = Transaction()
            elif cmd == "RSET":
                txn = Transaction()
                if self.before_rset_reply:
                    self.before_rset_reply(self)
                s.send_line("250 2.0.0 ok")
            elif cmd == "NOOP":
                s.send_line("250 2.0.0 ok")
            elif cmd == "QUIT":
                s.send_line("221 2.0.0 bye")
                return
            else:
                s.send_line("500 5.5.1 unknown command")


def first_rcpt_then_ok(first, ok="250 2.1.5 ok"):
    """An rcpt_reply answering first to the first RCPT and ok to the rest;
    its .calls lists the addresses asked for."""
    calls = []

    def rcpt(addr, peer):
        calls.append(addr)
        return first if len(calls) == 1 else ok

    rcpt.calls = calls
    return rcpt


class _Closed(Exception):
    pass


class _Stream:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, b):
        self.sock.sendall(b)

    def send_line(self, line):
        self.send(line.encode() + b"\r\n")

    def send_lines(self, code, lines):
        out = b""
        for i, l in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out += ("%d%s%s\r\n" % (code, sep, l)).encode()
        self.send(out)

    def start_tls(self, ctx):
        self.buf = b""
        self.sock = ctx.wrap_socket(self.sock, server_side=True)

    def readline(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                raise _Closed()
            d = self.sock.recv(65536)
            if not d:
                raise _Closed()
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_data(self):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if line == b".":
                break
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)
            total += len(line)
            if total > 50 * 1024 * 1024:
                raise _Closed()
        return b"\r\n".join(lines) + b"\r\n"
