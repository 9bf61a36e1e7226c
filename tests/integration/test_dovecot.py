"""auth_backend = dovecot: passwords checked by a private Dovecot through
its auth-client socket."""
import glob
import os
import shutil
import signal
import smtplib
import subprocess

import pytest

from helpers import (
    Client,
    auth_login,
    auth_plain,
    client_ctx,
    crypt_sha512,
    wait_until,
    pid_alive,
    children,
)

BOB = "bob@test.example"
BOB_PW = "Bob dovecot pw"
EVE = "eve@other.example"
EVE_PW = "Eve:dovecot\\pw"

DOVECOT_CONF = """\
base_dir = @DIR@/run
state_dir = @DIR@/state
log_path = @DIR@/dovecot.log
protocols = lmtp
ssl = no
auth_failure_delay = 0
mail_location = maildir:@DIR@/mail/%d/%n/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {
  driver = passwd-file
  args = scheme=CRYPT username_format=%u @DIR@/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=@DIR@/mail/%d/%n
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
"""


class Dovecot:
    def __init__(self, d):
        self.dir = d
        self.conf = os.path.join(d, "dovecot.conf")
        self.socket = os.path.join(d, "run", "auth-client")
        self.pid = None

    def write(self):
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for sub in ("state", "mail"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        text = DOVECOT_CONF.replace("@DIR@", self.dir)
        if not _have_user("dovecot"):
            text = text.replace("default_internal_user = dovecot",
                                "default_internal_user = nobody\n"
                                "default_internal_group = nogroup")
        if not _have_user("dovenull"):
            text = text.replace("default_login_user = dovenull",
                                "default_login_user = nobody")
        with open(self.conf, "w") as f:
            f.write(text)
        users = os.path.join(self.dir, "users")
        with open(users, "w") as f:
            f.write("%s:%s\n" % (BOB, crypt_sha512(BOB_PW)))
            f.write("%s:%s\n" % (EVE, crypt_sha512(EVE_PW)))
        os.chmod(users, 0o644)

    def start(self):
        # Dovecot's master keeps inherited descriptors: no pipes here.
        out = os.path.join(self.dir, "start.out")
        with open(out, "wb") as f:
            r = subprocess.run(["dovecot", "-c", self.conf], stdin=subprocess.DEVNULL,
                               stdout=f, stderr=subprocess.STDOUT, timeout=30)
        assert r.returncode == 0, open(out).read() + self.log()
        pidf = os.path.join(self.dir, "run", "master.pid")

        def read_pid():
            # Dovecot creates master.pid and writes it in two steps: an
            # empty or partial file is not yet the pid.
            try:
                with open(pidf) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            return int(text) if text.endswith("\n") and text.strip().isdigit() else None

        assert wait_until(lambda: read_pid() is not None and os.path.exists(self.socket), 10), \
            self.log()
        self.pid = read_pid()

    def stop(self):
        if self.pid is None:
            return
        # As a service manager stops it: the master and every child (the
        # auth process keeps serving connected clients after the master
        # is gone).
        procs = [self.pid] + children(self.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            if wait_until(lambda: not any(pid_alive(p) for p in procs), 5):
                break
        self.pid = None

    def log(self):
        try:
            with open(os.path.join(self.dir, "dovecot.log")) as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""


def _have_user(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def dovecot(test_dir):
    if not shutil.which("dovecot"):
        pytest.skip("dovecot not installed")
    dv = Dovecot(os.path.join(test_dir, "dovecot"))
    dv.write()
    dv.start()
    yield dv
    dv.stop()


@pytest.fixture
def dv_daemon(auth_daemon, dovecot):
    def start(**kw):
        return auth_daemon(auth_backend="dovecot", auth_dovecot_socket=dovecot.socket,
                           auth_fail_delay_after="50", auth_fail_block_after="100", **kw)
    return start


def tls_session(d):
    c = Client(d.smtps, tls=True)
    c.ehlo()
    return c


def test_smtplib_login(dv_daemon):
    d = dv_daemon()
    s = smtplib.SMTP_SSL("127.0.0.1", d.smtps, context=client_ctx(), timeout=15)
    try:
        assert s.login(BOB, BOB_PW)[0] == 235
        s.sendmail(BOB, ["friend@elsewhere.example"],
                   b"From: bob@test.example\r\nSubject: dv\r\n\r\nx\r\n")
    finally:
        s.quit()
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    try:
        s.starttls(context=client_ctx())
        s.ehlo()
        # One mechanism only: smtplib would try the next one after a 535.
        s.esmtp_features["auth"] = "PLAIN"
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            s.login(BOB, "wrong")
        assert ei.value.smtp_code == 535
    finally:
        s.quit()
    assert len(d.queue_ids()) == 1
    ev = d.wait_event("auth", result="ok")
    assert ev[-1].get("user") == BOB, ev


def test_login_mechanism_and_special_password(dv_daemon):
    d = dv_daemon()
    with tls_session(d) as c:
        r = auth_login(c, EVE, EVE_PW)
        assert r.code == 235, r
    with tls_session(d) as c:
        r = auth_plain(c, EVE, EVE_PW.replace("\\", ""))
        assert r.code == 535 and r.enhanced == "5.7.8", r


@pytest.mark.parametrize("user,password", [
    ("nobody@test.example", "x"),
    (BOB, ""),
    (BOB, BOB_PW + "\tx"),
    (BOB + "\tnologin", BOB_PW),
    (BOB + "\nAUTH\t1\tPLAIN", BOB_PW),
    ("bob", BOB_PW),
])
def test_bad_credentials(dv_daemon, user, password):
    """Fields that the Dovecot protocol separates with TAB and LF must not
    be able to change the request."""
    d = dv_daemon()
    with tls_session(d) as c:
        r = auth_plain(c, user, password)
        assert r.code in (535, 501), (user, r)
        assert r.code != 235
    # From another address: Dovecot's own penalty delays the one that failed.
    c = Client(d.smtps, tls=True, source="127.0.0.2")
    with c:
        c.ehlo()
        assert auth_plain(c, BOB, BOB_PW).code == 235


def test_sender_policy_with_dovecot(dv_daemon):
    d = dv_daemon()
    with tls_session(d) as c:
        assert auth_plain(c, BOB, BOB_PW).code == 235
        assert c.cmd("MAIL FROM:<%s>" % BOB).code == 250
        assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<%s>" % EVE)
        assert r.code == 553 and r.enhanced == "5.7.1", r


def test_dovecot_stopped_then_restarted(dv_daemon, dovecot):
    d = dv_daemon()
    with tls_session(d) as c:
        assert auth_plain(c, BOB, BOB_PW).code == 235
    dovecot.stop()
    with tls_session(d) as c:
        r = auth_plain(c, BOB, BOB_PW)
        assert r.code == 454 and r.enhanced == "4.7.0", r
    # The daemon keeps serving.
    with Client(d.mx) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@client.example>").code == 250
    dovecot.start()
    with tls_session(d) as c:
        assert auth_plain(c, BOB, BOB_PW).code == 235


def test_socket_missing(auth_daemon, test_dir):
    d = auth_daemon(auth_backend="dovecot",
                    auth_dovecot_socket=os.path.join(test_dir, "no-such-socket"))
    with tls_session(d) as c:
        r = auth_plain(c, BOB, BOB_PW)
        assert r.code == 454 and r.enhanced == "4.7.0", r


def test_no_password_in_logs(dv_daemon, dovecot):
    d = dv_daemon()
    with tls_session(d) as c:
        assert auth_plain(c, BOB, BOB_PW).code == 235
    with tls_session(d) as c:
        assert auth_plain(c, BOB, "Guess-9876").code == 535
    assert d.stop() == 0
    log = d.log_text()
    for s in (BOB_PW, "Guess-9876"):
        assert s not in log
        assert s not in dovecot.log()


def test_lmtp_delivery_into_dovecot(auth_daemon, dovecot):
    """local_delivery = lmtp: a real Dovecot LMTP server stores the message,
    and its per-recipient replies are honoured (an unknown user fails while
    the other recipient is delivered)."""
    lmtp = os.path.join(dovecot.dir, "run", "lmtp")
    assert wait_until(lambda: os.path.exists(lmtp), 10), dovecot.log()
    # Dovecot's users are stored as nobody (its userdb): the mail tree is theirs.
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.chown(os.path.join(dovecot.dir, "mail"), nobody.pw_uid, nobody.pw_gid)
    d = auth_daemon(queue_only="no", local_delivery="lmtp", lmtp_socket=lmtp)
    s = smtplib.SMTP("127.0.0.1", d.mx, timeout=15)
    refused = s.sendmail("someone@elsewhere.example", [BOB, "dave@test.example"],
                         "Subject: via lmtp\r\nMessage-ID: <lmtp-1@x>\r\n\r\nhello dovecot\r\n")
    s.quit()
    assert refused == {}
    d.wait_event("completed", timeout=20)
    md = os.path.join(dovecot.dir, "mail", "test.example", "bob", "Maildir")
    files = glob.glob(os.path.join(md, "new", "*")) + glob.glob(os.path.join(md, "cur", "*"))
    assert len(files) == 1, dovecot.log()
    raw = open(files[0], "rb").read()
    assert b"Subject: via lmtp" in raw
    assert b"hello dovecot" in raw
    qid = d.events("queued")[0]["id"]
    ok = d.events("delivery", result="delivered", id=qid)
    bad = d.events("delivery", result="failed", id=qid)
    assert [e["rcpt"] for e in ok] == [BOB]
    assert [e["rcpt"] for e in bad] == ["dave@test.example"]
    assert bad[0]["reply"].startswith("550")


def test_maildir_delivery_readable_by_dovecot(auth_daemon, dovecot):
    """local_delivery = maildir into the tree Dovecot serves: Dovecot's own
    doveadm reads the message back (what an IMAP client would see)."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.chown(os.path.join(dovecot.dir, "mail"), nobody.pw_uid, nobody.pw_gid)
    d = auth_daemon(queue_only="no", local_delivery="maildir",
                    maildir_path=os.path.join(dovecot.dir, "mail", "%d", "%n", "Maildir"))
    s = smtplib.SMTP("127.0.0.1", d.mx, timeout=15)
    s.sendmail("someone@elsewhere.example", [BOB],
               "Subject: for dovecot\r\nMessage-ID: <md-1@x>\r\n\r\nread me back\r\n")
    s.quit()
    d.wait_event("completed", timeout=20)
    r = subprocess.run(["doveadm", "-c", dovecot.conf, "fetch", "-u", BOB,
                        "hdr.subject body", "mailbox", "INBOX", "all"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr.decode() + dovecot.log()
    out = r.stdout.decode()
    assert "for dovecot" in out
    assert "read me back" in out
