"""Helpers for the integration tests: config writing, the daemon handle, a
byte-exact SMTP client, spool and log inspection."""
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import warnings

QUEUE_ID_RE = re.compile(r"^[0-9a-v]{11}-[0-9a-v]{5}-[0-9a-v]{2}$")
QUEUED_RE = re.compile(r"^OK queued as ([0-9a-v]{11}-[0-9a-v]{5}-[0-9a-v]{2})$")
ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
LOG_KV_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')

HOSTNAME = "mx.test.example"


# ---- setup ---------------------------------------------------------------

class Cert:
    def __init__(self, cert, key, der):
        self.cert = cert
        self.key = key
        self.der = der


def generate_cert(d, cn):
    cert = os.path.join(d, "cert.pem")
    key = os.path.join(d, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=DNS:" + cn],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    # The master loads them as root before dropping privileges.
    os.chmod(cert, 0o600)
    os.chmod(key, 0o600)
    with open(cert) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return Cert(cert, key, der)


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together while
    choosing so that they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def config_text(d, cert, ports, extra="", listeners=True, **overrides):
    mx, sub, smtps = ports
    opts = {
        "primary_hostname": HOSTNAME,
        "daemon_smtp_ports": "%d : %d : %d" % (mx, sub, smtps),
        "local_interfaces": "127.0.0.1",
        "tls_certificate": cert.cert,
        "tls_privatekey": cert.key,
        "spool_directory": os.path.join(d, "spool"),
        "local_domains": "test.example : other.example",
        "user": "nobody",
        "pid_file": os.path.join(d, "sluice.pid"),
        "log_file": os.path.join(d, "sluice.log"),
        "smtp_workers": "2",
        "message_size_limit": "1M",
        "shutdown_timeout": "3s",
        # Delivery stays off unless a test turns it on, so that tests can
        # look at what was queued; and nothing outside the test directory
        # is touched: local sockets, mailboxes and DNS data are its own.
        "queue_only": "yes",
        "sendmail_socket": os.path.join(d, "sendmail.sock"),
        "maildir_path": os.path.join(d, "mail", "%d", "%n"),
        "dns_resolv_conf": "",
        "dns_unbound_config": write_unbound_conf(d),
    }
    for k, v in overrides.items():
        if v is None:
            opts.pop(k, None)
        else:
            opts[k] = v
    lines = ["# sluice integration test configuration"]
    lines += ["%s = %s" % (k, v) for k, v in opts.items()]
    if listeners:
        lines += [
            "listener %d {" % mx, "    role = mx", "}",
            "listener %d {" % sub, "    role = submission", "    tls = starttls", "}",
            "listener %d {" % smtps, "    role = submission", "    tls = on_connect", "}",
        ]
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def write_unbound_conf(d, data=(), name="unbound.conf"):
    """A libunbound configuration answering from local data only: the
    static zones make every other name NXDOMAIN at once, so nothing leaves
    the machine.  data: local-data records ("example.net. MX 10 mx.example.net.")."""
    path = os.path.join(d, name)
    lines = ["server:",
             '    local-zone: "." static',
             "    do-not-query-localhost: yes"]
    for rr in data:
        lines.append('    local-data: "%s"' % rr)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def write_config(d, cert, ports, extra="", name="sluice.conf", **overrides):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(config_text(d, cert, ports, extra=extra, **overrides))
    return path


# ---- processes -----------------------------------------------------------

def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ..." — comm may hold spaces and parentheses.
    return data[data.rindex(")") + 2]


def pid_alive(pid):
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def proc_uids(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return None


def wait_until(pred, timeout=5.0, interval=0.05):
    """Polls pred() until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def _log_unescape(v):
    return re.sub(r'\\(x[0-9A-Fa-f]{2}|.)',
                  lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 3
                  else m.group(1), v)


def parse_log_line(line):
    """key=value fields; quoted values are unquoted and unescaped (\\",
    \\\\, \\xHH)."""
    out = {}
    for k, v in LOG_KV_RE.findall(line):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = _log_unescape(v[1:-1])
        out[k] = v
    return out


class Daemon:
    def __init__(self, binary, d, conf, ports):
        self.binary = binary
        self.dir = d
        self.conf = conf
        self.ports = ports
        self.mx = ports["mx"]
        self.sub = ports["sub"]
        self.smtps = ports["smtps"]
        self.spool = os.path.join(d, "spool")
        self.queue_dir = os.path.join(self.spool, "queue")
        self.tmp_dir = os.path.join(self.spool, "tmp")
        self.log_path = os.path.join(d, "sluice.log")
        self.pid_file = os.path.join(d, "sluice.pid")
        self.proc = None
        self.killed = False
        self.seen_workers = set()
        self.run_no = 0

    # -- life cycle --
    def start(self, args=()):
        self.run_no += 1
        self.stdout_path = os.path.join(self.dir, "stdout.%d" % self.run_no)
        self.stderr_path = os.path.join(self.dir, "stderr.%d" % self.run_no)
        self.log_offset = self.log_size()
        self.killed = False
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary, "-C", self.conf] + list(args) + ["-bdf"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        return self.proc

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "daemon exited with status %r before being ready\nstderr: %s\nlog: %s"
                    % (self.proc.returncode, self.stderr_text()[-2000:], self.log_tail(20)))
            if "event=workers_started" in self.log_since_start():
                if self.can_connect(self.mx) or self.can_connect(self.smtps):
                    self.note_workers()
                    return
            time.sleep(0.05)
        raise AssertionError("daemon not ready after %ss\nstderr: %s\nlog: %s"
                             % (timeout, self.stderr_text()[-2000:], self.log_tail(20)))

    @staticmethod
    def can_connect(port):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            return False
        s.close()
        return True

    def service_pids(self):
        """The master's children that are not SMTP workers: the auth
        process, the queue runner and the local delivery process."""
        out = set()
        for e in self.events("authd_started"):
            out.add(int(e["pid"]))
        for e in self.events("runner_started"):
            if "mdeliver" in e:
                out.add(int(e["pid"]))
                out.add(int(e["mdeliver"]))
        return out

    def worker_pids(self):
        pids = children(self.pid)
        self.seen_workers.update(pids)
        svc = self.service_pids()
        return [p for p in pids if p not in svc]

    def note_workers(self):
        return self.worker_pids()

    def wait_workers(self, n, timeout=10.0, exclude=()):
        """Waits until the master has n live children, none in exclude."""
        def ok():
            p = [x for x in self.worker_pids() if pid_alive(x)]
            return p if len(p) == n and not set(p) & set(exclude) else None
        return wait_until(ok, timeout)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status (None if it did not exit)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.worker_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None

    def kill_all(self):
        """SIGKILL the master and every worker at once (a crash)."""
        pids = [self.pid] + children(self.pid)
        self.seen_workers.update(pids[1:])
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.killed = True
        self.proc.wait(10)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 10)

    def cleanup_workers(self):
        """Workers must not outlive the master; kill any that did (only ones
        this test started, by pid)."""
        left = []
        if wait_until(lambda: not any(pid_alive(p) for p in self.seen_workers), 5):
            return left
        for p in self.seen_workers:
            if pid_alive(p):
                left.append(p)
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return left

    # -- command line --
    def cli(self, *args, input=None, timeout=20):
        return subprocess.run([self.binary, "-C", self.conf] + list(args), input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)

    # -- logs --
    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (FileNotFoundError, AttributeError):
            return ""

    def events(self, event=None, **match):
        out = []
        for line in self.log_text().splitlines():
            kv = parse_log_line(line)
            if event is not None and kv.get("event") != event:
                continue
            if all(kv.get(k) == v for k, v in match.items()):
                out.append(kv)
        return out

    def wait_event(self, event, timeout=10.0, count=1, **match):
        r = wait_until(lambda: len(self.events(event, **match)) >= count, timeout)
        if not r:
            raise AssertionError("no %d log line(s) event=%s %r within %ss; log tail:\n%s"
                                 % (count, event, match, timeout, self.log_tail(30)))
        return self.events(event, **match)

    # -- spool --
    def queue_ids(self):
        try:
            return sorted(x for x in os.listdir(self.queue_dir) if not x.startswith("."))
        except FileNotFoundError:
            return []

    def tmp_files(self):
        try:
            return sorted(os.listdir(self.tmp_dir))
        except FileNotFoundError:
            return []

    def read_queue(self, qid):
        with open(os.path.join(self.queue_dir, qid), "rb") as f:
            return f.read()

    def spool_msg(self, qid):
        return parse_spool(self.read_queue(qid))


def xtext_decode(s):
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


class SpoolFile:
    def __init__(self, env_lines, message):
        self.env_lines = env_lines
        self.message = message

    def env(self, key):
        """Values (rest of line) of every envelope line starting with key."""
        out = []
        for l in self.env_lines:
            parts = l.split(" ", 1)
            if parts[0] == key:
                out.append(parts[1] if len(parts) > 1 else "")
        return out

    def rcpts(self):
        return [xtext_decode(v.split(" ")[0]) for v in self.env("rcpt")]

    def headers(self):
        head = self.message.split(b"\r\n\r\n", 1)[0]
        return head.decode("utf-8", "replace")


def parse_spool(data):
    head, sep, msg = data.partition(b"\n\n")
    assert sep, "spool file has no blank line after the envelope"
    lines = head.decode("utf-8", "replace").split("\n")
    return SpoolFile(lines, msg)


# ---- SMTP client ---------------------------------------------------------

class Reply:
    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        m = ENHANCED_RE.match(self.lines[0]) if self.lines else None
        return m.group(0).strip() if m else None

    def all_enhanced(self):
        return all(ENHANCED_RE.match(l) for l in self.lines)

    @property
    def queue_id(self):
        m = QUEUED_RE.match(self.lines[-1][6:].strip()) if self.lines else None
        if m:
            return m.group(1)
        m = re.search(r"queued as ([0-9a-v]{11}-[0-9a-v]{5}-[0-9a-v]{2})", self.text)
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class SMTPClosed(Exception):
    pass


def client_ctx(minv=None, maxv=None, ciphers=None, cafile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if minv is not None:
            ctx.minimum_version = minv
        if maxv is not None:
            ctx.maximum_version = maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def tls11_ctx():
    return client_ctx(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1,
                      ciphers="DEFAULT:@SECLEVEL=0")


class Client:
    """Byte-exact SMTP client over a raw (or TLS) socket."""

    def __init__(self, port, tls=False, ctx=None, timeout=5.0, greet=True, source=None):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""
        self.tls = None
        self.eof = False
        if tls:
            self._wrap(ctx)
        self.greeting = self.reply() if greet else None

    def _wrap(self, ctx=None):
        ctx = ctx or client_ctx()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.tls = self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for the server")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""
        if not data:
            self.eof = True
            raise SMTPClosed("connection closed by server; pending %r" % self.buf)
        self.buf += data

    def readline(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                raise AssertionError("reply line too long")
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, timeout=None):
        raw = []
        lines = []
        code = None
        for _ in range(1000):
            line = self.readline(timeout)
            raw.append(line)
            m = re.match(rb"^(\d{3})([ -])(.*)$", line, re.S)
            assert m, "malformed reply line %r" % line
            c = int(m.group(1))
            assert code is None or c == code, "code changed inside a reply: %r" % raw
            code = c
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return Reply(code, lines, raw)
        raise AssertionError("reply with too many lines")

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.example"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        return r

    def starttls(self, ctx=None, ehlo=True):
        r = self.cmd("STARTTLS")
        assert r.code == 220, r
        assert self.buf == b"", "bytes after the STARTTLS reply before TLS: %r" % self.buf
        self._wrap(ctx)
        if ehlo:
            return self.ehlo()
        return r

    def replies_for(self, seconds):
        """Every complete reply arriving within seconds (stops at EOF)."""
        out = []
        deadline = time.monotonic() + seconds
        for _ in range(1000):
            try:
                out.append(self.reply(max(deadline - time.monotonic(), 0.001)))
            except (socket.timeout, SMTPClosed):
                return out
        return out

    def silent_for(self, seconds):
        """True if nothing at all arrives within seconds (EOF counts as
        something)."""
        if self.buf:
            return False
        try:
            self._fill(time.monotonic() + seconds)
        except socket.timeout:
            return True
        except SMTPClosed:
            return False
        return False

    def wait_closed(self, timeout=5.0):
        """True if the server closes within timeout (data before EOF is
        collected in self.buf)."""
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            try:
                self._fill(deadline)
            except SMTPClosed:
                return True
            except socket.timeout:
                return False
            except OSError:
                return True
        return False

    def begin_data(self):
        """MAIL, RCPT (user@test.example) and DATA in one write, up to the
        354: the message text is the caller's to send."""
        self.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@test.example>\r\nDATA\r\n")
        codes = [self.reply().code for _ in range(3)]
        assert codes == [250, 250, 354], codes

    def mail_transaction(self, sender="sender@client.example", rcpts=("user@test.example",),
                         body=None, mail_params=""):
        r = self.cmd("MAIL FROM:<%s>%s" % (sender, mail_params))
        assert r.code == 250, r
        for rc in rcpts:
            r = self.cmd("RCPT TO:<%s>" % rc)
            assert r.code == 250, (rc, r)
        r = self.cmd("DATA")
        assert r.code == 354, r
        if body is None:
            body = make_body()
        self.send(body + b".\r\n")
        return self.reply(timeout=15)


def make_body(subject="test", text="Hello.\r\n"):
    return ("From: sender@client.example\r\nTo: user@test.example\r\n"
            "Subject: %s\r\nMessage-ID: <%s@client.example>\r\n\r\n%s"
            % (subject, subject.replace(" ", "-"), text)).encode()


def send_message(port, tls=False, starttls=False, subject="test", **kw):
    """One message in one session; returns the final Reply."""
    with Client(port, tls=tls) as c:
        c.ehlo()
        if starttls:
            c.starttls()
        r = c.mail_transaction(body=make_body(subject), **kw)
        try:
            c.cmd("QUIT")
        except (SMTPClosed, OSError):
            pass
        return r


# ---- authentication ------------------------------------------------------

import base64 as _b64
import hashlib as _hashlib
import hmac as _hmac


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return _b64.b64encode(data).decode()


def crypt_sha512(password):
    """{SHA512-CRYPT} entry made by openssl (independent of the daemon)."""
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password.encode(),
                       stdout=subprocess.PIPE, check=True, timeout=20)
    return "{SHA512-CRYPT}" + r.stdout.decode().strip()


def doveadm_pw(scheme, password):
    """An entry made by Dovecot's own tool (interoperability)."""
    r = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True,
                       timeout=20)
    return r.stdout.decode().strip()


def scram_entry(password, salt=None, iterations=4096):
    """{SCRAM-SHA-256}iter,salt,StoredKey,ServerKey as Dovecot writes it."""
    salt = salt or os.urandom(16)
    salted = _hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    ck = _hmac.new(salted, b"Client Key", _hashlib.sha256).digest()
    sk = _hmac.new(salted, b"Server Key", _hashlib.sha256).digest()
    return "{SCRAM-SHA-256}%d,%s,%s,%s" % (iterations, b64(salt),
                                          b64(_hashlib.sha256(ck).digest()), b64(sk))


def write_passwd(path, entries):
    """entries: {user: "{SCHEME}hash"}; readable by the daemon's user."""
    with open(path, "w") as f:
        f.write("# test users\n\n")
        for u, h in entries.items():
            f.write("%s:%s\n" % (u, h))
    os.chmod(path, 0o644)
    return path


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def plain_ir(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


def auth_plain(c, user, password, authzid=""):
    return c.cmd("AUTH PLAIN " + plain_ir(user, password, authzid), timeout=15)


def auth_login(c, user, password):
    r = c.cmd("AUTH LOGIN")
    if r.code != 334:
        return r
    assert _b64.b64decode(r.lines[0]).lower().startswith(b"user"), r
    r = c.cmd(b64(user))
    if r.code != 334:
        return r
    assert _b64.b64decode(r.lines[0]).lower().startswith(b"pass"), r
    return c.cmd(b64(password), timeout=15)


def _saslname(u):
    return u.replace("=", "=3D").replace(",", "=2C")


class ScramResult:
    def __init__(self, reply, server_ok=None, server_first=None):
        self.reply = reply
        self.server_ok = server_ok
        self.server_first = server_first


def auth_scram(c, user, password, cnonce=None):
    """RFC 5802 / 7677 client over an SMTP session (RFC 4954 framing).
    server_ok: the server signature was checked and correct."""
    cnonce = cnonce or b64(os.urandom(18))
    first_bare = "n=%s,r=%s" % (_saslname(user), cnonce)
    r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + first_bare), timeout=15)
    if r.code != 334:
        return ScramResult(r)
    server_first = _b64.b64decode(r.lines[0]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(cnonce) and len(attrs["r"]) > len(cnonce), server_first
    salt = _b64.b64decode(attrs["s"])
    iters = int(attrs["i"])
    assert iters >= 4096, server_first
    salted = _hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iters)
    ck = _hmac.new(salted, b"Client Key", _hashlib.sha256).digest()
    stored = _hashlib.sha256(ck).digest()
    final_wo = "c=biws,r=" + attrs["r"]
    auth_msg = ("%s,%s,%s" % (first_bare, server_first, final_wo)).encode()
    sig = _hmac.new(stored, auth_msg, _hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(ck, sig))
    r = c.cmd(b64(final_wo + ",p=" + b64(proof)), timeout=15)
    if r.code != 334:
        return ScramResult(r, None, server_first)
    server_final = _b64.b64decode(r.lines[0]).decode()
    sk = _hmac.new(salted, b"Server Key", _hashlib.sha256).digest()
    want = _hmac.new(sk, auth_msg, _hashlib.sha256).digest()
    ok = server_final == "v=" + b64(want)
    r = c.cmd("", timeout=15)
    return ScramResult(r, ok, server_first)


def ehlo_auth_mechs(reply):
    """The mechanisms of the AUTH line of an EHLO reply, or None."""
    for l in reply.lines[1:]:
        w = l.split()
        if w and w[0].upper() == "AUTH":
            return [x.upper() for x in w[1:]]
    return None


def received_field(sp):
    """The first Received: field of a spooled message, unfolded."""
    lines = sp.headers().split("\r\n")
    assert lines[0].startswith("Received:"), lines[:3]
    out = lines[0]
    for l in lines[1:]:
        if l[:1] in (" ", "\t"):
            out += " " + l.strip()
        else:
            break
    return out


def header_fields(sp, name):
    """Every field named name (case-insensitive) of the spooled message."""
    out = []
    for l in sp.headers().split("\r\n"):
        if l[:1] in (" ", "\t"):
            continue
        k, sep, v = l.partition(":")
        if sep and k.strip().lower() == name.lower():
            out.append(v.strip())
    return out


# ---- delivery ----------------------------------------------------------------

def submit_authenticated(d, rcpts, msg, user, sender=None, mail_options=()):
    """Submits msg on the STARTTLS submission port as user (its password
    from d.passwords); every recipient must be accepted."""
    import smtplib
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    try:
        s.starttls(context=client_ctx())
        s.login(user, d.passwords[user])
        refused = s.sendmail(sender or user, rcpts, msg, mail_options=list(mail_options))
        assert refused == {}
    finally:
        s.quit()


def wait_queue_empty(d, timeout=20):
    ok = wait_until(lambda: d.queue_ids() == [], timeout)
    assert ok, "queue not empty: %r\n%s" % (d.queue_ids(), d.log_tail(40))


# ---- configuration files -------------------------------------------------------

def rewrite_config(d, cert, **kw):
    """Replaces d's configuration with config_text(...) and the overrides
    kw, atomically (the daemon may be reading it on SIGHUP)."""
    text = config_text(d.dir, cert, (d.mx, d.sub, d.smtps), **kw)
    tmp = d.conf + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, d.conf)


# Appended (so that line numbers stay) to broken_config's text when it does
# not set the ports: the default ports include submission ones, which need
# a certificate.
MX_ONLY_PORTS = "daemon_smtp_ports = 2525\nlistener 2525 {\n    role = mx\n}\n"


def broken_config(test_dir, body):
    """Writes body (plus MX_ONLY_PORTS if it sets no ports, and user =
    nobody if it names no user: the default account need not exist here)
    to test_dir/broken.conf and returns its path."""
    path = os.path.join(test_dir, "broken.conf")
    if "daemon_smtp_ports" not in body:
        body += MX_ONLY_PORTS
    if not re.search(r"(?m)^user\s*=", body):
        body += "user = nobody\n"
    with open(path, "w") as f:
        f.write(body)
    return path


def open_session(d, kind):
    """A session past EHLO: kind "mx" (port 25's role), "sub-plain" (587
    before STARTTLS), "sub" (587 after STARTTLS) or "smtps" (465)."""
    if kind == "smtps":
        c = Client(d.smtps, tls=True)
        c.ehlo()
        return c
    c = Client(d.mx if kind == "mx" else d.sub)
    c.ehlo()
    if kind == "sub":
        c.starttls()
    return c

