"""Queue runner and delivery, end to end on loopback: local Maildirs,
remote mail exchangers found through the resolver's local data, retries,
bounces (RFC 3464), Null MX, crash recovery and the queue tools."""
import email
import email.policy
import glob
import mailbox
import os
import pwd
import signal
import smtplib
import subprocess
import time

import pytest

from helpers import client_ctx, submit_authenticated, wait_queue_empty, wait_until, write_file
from peer import Peer, first_rcpt_then_ok

ALICE = "alice@test.example"
CAROL = "carol@other.example"
MSG = ("From: Alice <alice@test.example>\r\nTo: someone\r\nSubject: delivery test\r\n"
       "Message-ID: <dlv-1@test.example>\r\nDate: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
       "\r\nfirst line\r\n.leading dot\r\nlast line\r\n")


def submit(d, rcpts, msg=MSG, user=ALICE, sender=None):
    submit_authenticated(d, rcpts, msg, user, sender)


def maildir(d, addr):
    local, dom = addr.split("@")
    return os.path.join(d.dir, "mail", dom, local)


def wait_mail(d, addr, n=1, timeout=20):
    md = maildir(d, addr)
    ok = wait_until(lambda: len(glob.glob(os.path.join(md, "new", "*"))) >= n, timeout)
    assert ok, "no mail in %s; log:\n%s" % (md, d.log_tail(40))
    return mailbox.Maildir(md, factory=None, create=False)


# ---- local delivery --------------------------------------------------------

def test_submission_to_local_maildir(dlv):
    d = dlv()
    submit(d, [ALICE])
    box = wait_mail(d, ALICE)
    msgs = list(box)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["Subject"] == "delivery test"
    assert m["Return-Path"] == "<%s>" % ALICE
    assert m["Delivered-To"] == ALICE
    assert m["Received"] is not None
    # Maildir files hold LF line ends; the dot-stuffed line is restored.
    name = glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0]
    raw = open(name, "rb").read()
    assert b"\r\n" not in raw
    assert b"\n.leading dot\n" in raw
    assert raw.endswith(b"last line\n")
    # The S= size in the name is the file's size.
    assert name.endswith(",S=%d" % len(raw))
    # Owned by the mailbox user (mail_user defaults to user = nobody).
    st = os.stat(name)
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid
    assert st.st_mode & 0o077 == 0
    wait_queue_empty(d)
    ev = d.wait_event("delivery", result="delivered")
    assert ev[0]["via"] == "maildir"
    assert d.events("completed")


def test_mx_to_local_user_and_alias(dlv, test_dir):
    aliases = os.path.join(test_dir, "aliases")
    with open(aliases, "w") as f:
        f.write("team: alice, dave\n")
    os.chmod(aliases, 0o644)
    d = dlv(aliases_file=aliases)
    s = smtplib.SMTP("127.0.0.1", d.mx, timeout=15)
    s.sendmail("someone@elsewhere.example", ["team@test.example"], MSG)
    s.quit()
    a = wait_mail(d, ALICE)
    dv = wait_mail(d, "dave@test.example")
    assert list(a)[0]["Delivered-To"] == ALICE
    assert list(dv)[0]["Delivered-To"] == "dave@test.example"
    assert list(a)[0]["Return-Path"] == "<someone@elsewhere.example>"
    wait_queue_empty(d)


@pytest.mark.parametrize("alias", [None, "virtual"])
def test_bare_postmaster_reaches_a_local_mailbox(dlv, test_dir, alias):
    # RFC 5321 4.5.1: <postmaster> must reach someone.  primary_hostname
    # (mx.test.example) is not a local domain here, so it is the postmaster
    # of the first local domain, with that address's aliases; it used to
    # go out to mx.test.example's MX and bounce.
    kw = {}
    if alias:
        kw["virtual_alias_file"] = write_file(os.path.join(test_dir, "virtual"),
                                              "postmaster@test.example  alice@test.example\n")
    d = dlv(**kw)
    s = smtplib.SMTP("127.0.0.1", d.mx, timeout=15)
    s.sendmail("someone@elsewhere.example", ["postmaster"], MSG)
    s.quit()
    box = wait_mail(d, ALICE if alias else "postmaster@test.example")
    assert list(box)[0]["Return-Path"] == "<someone@elsewhere.example>"
    wait_queue_empty(d)
    ev = d.events("delivery", rcpt="postmaster")
    assert [e["result"] for e in ev] == ["delivered"]
    assert not d.events("report")


def test_maildir_unwritable_is_retried(dlv, test_dir):
    d = dlv()
    nobody = pwd.getpwnam("nobody").pw_uid
    # The domain's directory belongs to root, mode 0700: the mailbox owner
    # (nobody) cannot create the Maildir.  A temporary failure: the message
    # stays queued, and is delivered once the permissions are mended.
    base = os.path.join(test_dir, "mail", "test.example")
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o700)
    submit(d, [ALICE])
    d.wait_event("deferred", timeout=15)
    assert len(d.queue_ids()) == 1
    ev = d.events("delivery", result="deferred")
    assert ev and ev[0]["via"] == "maildir"
    assert "Permission denied" in ev[0]["reply"]
    # Then a file where the Maildir should be: still only deferred.
    os.chown(base, nobody, -1)
    blocker = os.path.join(base, "alice")
    with open(blocker, "w") as f:
        f.write("in the way")
    r = d.cli("-q")
    assert r.returncode == 0, r.stderr
    d.wait_event("deferred", count=2, timeout=15)
    assert len(d.queue_ids()) == 1
    os.unlink(blocker)
    d.cli("-q")
    wait_mail(d, ALICE, timeout=20)
    wait_queue_empty(d)


# ---- remote delivery ------------------------------------------------------

def test_remote_delivery_through_mx(dlv, peer):
    d = dlv()
    submit(d, ["bob@remote.example", "carl@remote.example"])
    t = peer.wait_transactions(1)[0]
    assert t.mail_from == ALICE
    assert sorted(t.rcpts) == ["bob@remote.example", "carl@remote.example"]
    assert b"Subject: delivery test" in t.data
    assert b"\r\n.leading dot\r\n" in t.data
    assert t.data.startswith(b"Received: ")
    # Opportunistic STARTTLS was used (the peer offers it).
    assert t.tls
    assert "SIZE=" in t.mail_params.upper()
    wait_queue_empty(d)
    ev = d.wait_event("delivery", result="delivered")
    assert "127.0.0.2" in ev[0]["via"]
    # One connection for both recipients.
    assert peer.connections == 1


def test_connection_reused_for_several_messages(dlv, peer):
    d = dlv(queue_only="yes", remote_max_per_destination="1")
    for i in range(3):
        submit(d, ["r%d@remote.example" % i])
    assert len(d.queue_ids()) == 3
    r = d.cli("-q")
    assert r.returncode == 0, r.stderr
    peer.wait_transactions(3)
    wait_queue_empty(d)
    # One connection at most: it carried the three messages in turn.
    assert peer.connections == 1


def test_451_then_250_delivered_on_retry(dlv, peer):
    peer.rcpt_reply = first_rcpt_then_ok("451 4.3.0 try again later")
    calls = peer.rcpt_reply.calls
    d = dlv()
    submit(d, ["later@remote.example"])
    d.wait_event("deferred", timeout=15)
    peer.wait_transactions(1, timeout=20)
    wait_queue_empty(d)
    assert len(calls) == 2
    assert not glob.glob(os.path.join(maildir(d, ALICE), "new", "*")), "no bounce expected"


def test_550_bounces_to_sender_with_rfc3464_report(dlv, peer):
    peer.rcpt_reply = lambda a, p: ("550 5.1.1 no such user here" if a.startswith("nobody")
                                    else "250 2.1.5 ok")
    d = dlv()
    submit(d, ["nobody@remote.example", "somebody@remote.example"])
    box = wait_mail(d, ALICE)
    wait_queue_empty(d)
    assert len(peer.wait_transactions(1)[0].rcpts) == 1
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m["Return-Path"] == "<>"
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert m["Auto-Submitted"].startswith("auto-replied")
    parts = list(m.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    assert parts[2].get_content_type() in ("message/rfc822", "text/rfc822-headers")
    # The per-recipient fields of RFC 3464 section 2.3.
    status = parts[1].as_bytes().decode("utf-8", "replace")
    assert "Reporting-MTA: dns; " in status
    assert "Final-Recipient: rfc822; nobody@remote.example" in status
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user here" in status
    assert "somebody@remote.example" not in status
    assert b"Subject: delivery test" in parts[2].as_bytes()
    # No bounce for the bounce: the report itself went out from <>.
    ev = d.events("report", action="failed")
    assert len(ev) == 1


def test_bounce_for_many_long_server_replies_is_sent_once(dlv, peer):
    # The receiving server decides how long its replies are: 1000
    # recipients refused with 2 KB multi-line replies made the report
    # larger than its buffer, and the failing report was retried at once,
    # for ever (RCPT storms at the server, no bounce, no expiry).  The
    # report now always fits (each diagnostic cut to 2 KB).
    long = "550-5.1.1 " + "x" * 500 + "\r\n"
    peer.rcpt_reply = lambda a, p: long * 3 + "550 5.1.1 " + "y" * 500
    d = dlv(queue_retry_min="1h", queue_retry_max="1h")
    rcpts = ["u%04d-%s@remote.example" % (i, "q" * 50) for i in range(1000)]
    submit(d, rcpts)
    box = wait_mail(d, ALICE, timeout=60)
    wait_queue_empty(d, timeout=30)
    assert not d.events("report_failed")
    assert len(box) == 1
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert raw.count(b"Final-Recipient: rfc822;") == 1000
    assert raw.count(b"Status: 5.1.1") == 1000
    assert max(len(l) for l in raw.split(b"\n")) <= 1000
    time.sleep(1)
    assert sum(len(t.rcpts_tried) for t in peer.attempts) == 1000


def test_null_mx_bounces_without_connecting(dlv, peer):
    d = dlv(records=["nullmx.example. MX 0 ."])
    submit(d, ["x@nullmx.example"])
    box = wait_mail(d, ALICE)
    wait_queue_empty(d)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Status: 5.1.10" in raw
    assert peer.connections == 0


def test_no_such_domain_bounces(dlv, peer):
    d = dlv()
    submit(d, ["x@does-not-exist.example"])
    wait_mail(d, ALICE)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Action: failed" in raw
    assert peer.connections == 0


def test_implicit_mx_and_literal(dlv, peer):
    d = dlv(records=["plain.example. A 127.0.0.2"])
    submit(d, ["a@plain.example"])
    submit(d, ["b@[127.0.0.2]"])
    peer.wait_transactions(2)
    got = sorted(r for t in peer.transactions for r in t.rcpts)
    assert got == ["a@plain.example", "b@[127.0.0.2]"]
    wait_queue_empty(d)


def test_lifetime_expiry_bounces(dlv, peer):
    peer.rcpt_reply = lambda a, p: "451 4.7.1 greylisted"
    d = dlv(queue_lifetime="3s")
    submit(d, ["grey@remote.example"])
    wait_mail(d, ALICE, timeout=30)
    wait_queue_empty(d)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Action: failed" in raw
    assert b"retry time exceeded" in raw


# ---- robustness ------------------------------------------------------------

@pytest.mark.parametrize("mode", ["hang", "garbage", "drop_in_data"])
def test_bad_peer_is_a_temporary_failure(dlv, peer, mode):
    peer.mode = mode
    d = dlv(remote_command_timeout="2s")
    submit(d, ["x@remote.example"])
    d.wait_event("deferred", timeout=20)
    assert len(d.queue_ids()) == 1
    ev = d.events("delivery", result="deferred")
    assert ev, d.log_tail(30)
    # Fixed peer: delivered on a later attempt.
    peer.mode = "normal"
    peer.wait_transactions(1, timeout=30)
    wait_queue_empty(d, timeout=30)


def test_sigkill_during_delivery_loses_nothing(dlv, peer):
    import threading
    release = threading.Event()
    peer.before_data_reply = lambda t, p: release.wait(30)
    d = dlv()
    submit(d, ["slow@remote.example"])
    assert wait_until(lambda: len(peer.attempts) >= 1, 15)
    ids = d.queue_ids()
    assert len(ids) == 1
    d.kill_all()
    release.set()
    peer.before_data_reply = None
    # The message is still queued; after a restart it is delivered again
    # (at least once) and then gone.
    assert d.queue_ids() == ids
    d.start()
    d.wait_ready()
    peer.wait_transactions(1, timeout=30)
    wait_queue_empty(d, timeout=30)


def test_local_delivery_recorded_while_remote_part_is_slow(dlv, peer):
    # One message, a local and a remote recipient: the local copy is
    # delivered at once, the remote server holds its reply.  A crash then
    # must not deliver the local copy again: its outcome is recorded when
    # it happens, not when the slowest part of the message ends.
    import threading
    release = threading.Event()
    peer.before_data_reply = lambda t, p: release.wait(30)
    d = dlv(remote_command_timeout="60s")
    submit(d, ["slow@remote.example", ALICE])
    wait_mail(d, ALICE)
    assert wait_until(lambda: len(peer.attempts) >= 1, 15)
    ids = d.queue_ids()
    assert len(ids) == 1
    state = os.path.join(d.dir, "spool", "state", ids[0])
    assert wait_until(lambda: os.path.exists(state), 10), d.log_tail(30)
    # Recorded while the remote part is still waiting for its reply.
    assert d.events("deferred") == [] and len(peer.transactions) == 0
    d.kill_all()
    release.set()
    peer.before_data_reply = None
    d.start()
    d.wait_ready()
    peer.wait_transactions(1, timeout=30)
    wait_queue_empty(d, timeout=30)
    md = maildir(d, ALICE)
    assert len(os.listdir(os.path.join(md, "new"))) == 1, d.log_tail(40)


def test_connection_busy_resetting_is_not_handed_a_message(dlv, peer):
    # After a message whose every recipient was refused the client resets
    # the session; a message handed to the connection meanwhile used to be
    # deferred ("not ready for a message") although nothing had failed.
    peer.rcpt_reply = lambda a, p: ("550 5.1.1 no such user" if a.startswith("bad")
                                    else "250 2.1.5 ok")
    peer.before_rset_reply = lambda p: time.sleep(0.3)
    d = dlv(queue_only="yes", remote_max_per_destination="1")
    for i in range(3):
        submit(d, ["bad%d@remote.example" % i])
        submit(d, ["ok%d@remote.example" % i])
    r = d.cli("-q")
    assert r.returncode == 0, r.stderr
    peer.wait_transactions(3, timeout=30)

    def remote():
        return sorted((e["rcpt"], e["result"]) for e in d.events("delivery")
                      if e["rcpt"].endswith("@remote.example"))

    assert wait_until(lambda: len(remote()) >= 6, 20), d.log_tail(40)
    results = remote()
    assert results == sorted([("bad%d@remote.example" % i, "failed") for i in range(3)] +
                             [("ok%d@remote.example" % i, "delivered") for i in range(3)]), \
        d.log_tail(60)


def test_restart_resumes_retry_schedule(dlv, peer):
    peer.rcpt_reply = lambda a, p: "451 4.3.0 later"
    d = dlv(queue_retry_min="1h", queue_retry_max="2h")
    submit(d, ["x@remote.example"])
    d.wait_event("deferred")
    qid = d.queue_ids()[0]
    state = os.path.join(d.spool, "state", qid)
    assert os.path.exists(state)
    text = open(state).read()
    assert "attempts 1" in text
    assert d.stop() == 0
    peer.rcpt_reply = lambda a, p: "250 ok"
    d.start()
    d.wait_ready()
    # The new runner read the queue and its state, and chose to wait.
    def runner_starts():
        return [e for e in d.events("runner_started") if "queued" in e]
    assert wait_until(lambda: len(runner_starts()) == 2, 10)
    assert runner_starts()[-1]["queued"] == "1"
    time.sleep(2)
    # Not due for an hour: no new attempt after the restart.
    assert len(peer.attempts) == 1
    assert d.queue_ids() == [qid]


# ---- queue tools -------------------------------------------------------------

def test_queue_tools(dlv, peer, test_dir):
    d = dlv(queue_only="yes")
    submit(d, ["one@remote.example"])
    submit(d, ["two@remote.example"])
    submit(d, ["three@remote.example"])
    ids = sorted(d.queue_ids())
    assert len(ids) == 3
    # mailq: the binary called by that name lists the queue.
    mailq = os.path.join(test_dir, "mailq")
    if not os.path.exists(mailq):
        os.symlink(d.binary, mailq)
    r = subprocess.run([mailq, "-C", d.conf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    for i in ids:
        assert i in out
    assert "two@remote.example" in out
    # -M: deliver one now.
    r = d.cli("-M", ids[0])
    assert r.returncode == 0, r.stderr
    assert b"completed" in r.stdout
    assert peer.wait_transactions(1)[0].rcpts == ["one@remote.example"]
    # -Mrm: remove one.
    r = d.cli("-Mrm", ids[1])
    assert r.returncode == 0, r.stderr
    assert sorted(d.queue_ids()) == [ids[2]]
    # -Mg: give up, bounce now.
    r = d.cli("-Mg", ids[2])
    assert r.returncode == 0, r.stderr
    wait_mail(d, ALICE)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Action: failed" in raw
    assert b"three@remote.example" in raw
    wait_queue_empty(d)
    assert len(peer.transactions) == 1
    # Unknown ids are refused.
    r = d.cli("-M", "0000000000a-00001-00")
    assert r.returncode != 0
    r = d.cli("-Mrm", "not-an-id")
    assert r.returncode == 64


def test_internationalised_domain_is_looked_up_by_its_a_label(dlv, peer):
    # An SMTPUTF8 message to a UTF-8 domain: DNS knows the domain only by
    # its IDNA form (RFC 5891), and the peer gets the address as written.
    peer.extensions.append("SMTPUTF8")
    d = dlv(records=["xn--bcher-kva.example. MX 10 mx.remote.example."])
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    try:
        s.starttls(context=client_ctx())
        s.login(ALICE, d.passwords[ALICE])
        s.sendmail(ALICE, ["jörg@bücher.example"], MSG.encode(),
                   mail_options=["SMTPUTF8"])
    finally:
        s.quit()
    peer.wait_transactions(1)
    assert peer.transactions[0].rcpts == ["jörg@bücher.example"]
    wait_queue_empty(d)


def test_queue_listing_marks_recipients_done(dlv, peer):
    # -bp marks with "D" the recipients that need nothing more (as Exim's
    # listing does): here the local one, while the remote one waits.
    peer.rcpt_reply = lambda a, p: "451 4.3.0 later"
    d = dlv(queue_retry_min="1h", queue_retry_max="2h")
    submit(d, ["later@remote.example", ALICE])
    wait_mail(d, ALICE)
    d.wait_event("deferred")
    out = d.cli("-bp").stdout.decode()
    assert "\n        D %s\n" % ALICE in out, out
    assert "\n          later@remote.example\n" in out, out


def test_mrm_without_daemon(dlv, peer):
    d = dlv(queue_only="yes")
    submit(d, ["x@remote.example"])
    ids = d.queue_ids()
    assert d.stop() == 0
    r = d.cli("-Mrm", ids[0])
    assert r.returncode == 0, r.stderr
    assert d.queue_ids() == []
    r = d.cli("-q")
    assert r.returncode == 69


def test_sendmail_from_unprivileged_user(dlv, test_dir):
    d = dlv()
    nobody = pwd.getpwnam("nobody")
    os.chmod(d.conf, 0o644)
    msg = b"To: alice@test.example\nSubject: from cron\n\nhello from a script\n"
    r = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                        "--clear-groups", d.binary, "-C", d.conf, "-t", "-i"],
                       input=msg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr
    box = wait_mail(d, ALICE)
    m = list(box)[0]
    assert m["Subject"] == "from cron"
    assert m["Date"] is not None and m["Message-ID"] is not None
    assert "nobody@" in m["From"]
    assert "uid:%d" % nobody.pw_uid in str(m["Received"])
    ev = d.events("queued", role="local")
    assert ev and ev[0]["user"] == "uid:%d" % nobody.pw_uid


def test_sendmail_takes_what_cron_and_mbox_tools_write(dlv):
    # Progress output with bare CRs, a line over 998 octets and a leading
    # mbox "From " line: the daemon would refuse the first two (RFC 5321
    # 2.3.8, RFC 5322 2.1.1), so sendmail makes lines of them; the mbox
    # line is dropped, as Postfix's and Exim's sendmail do.
    d = dlv()
    long = b"x" * 2000
    msg = (b"From someone@example.org Mon Jan  1 00:00:00 2001\n"
           b"Subject: cron output\n\n 0%\r50%\r100%\n" + long + b"\n")
    r = subprocess.run([d.binary, "-C", d.conf, "-i", ALICE], input=msg,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr
    box = wait_mail(d, ALICE)
    m = list(box)[0]
    assert m["Subject"] == "cron output"
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    body = raw.split(b"\n\n", 1)[1]
    assert body.startswith(b" 0%\n50%\n100%\n" + b"x" * 998 + b"\n"), body[:80]
    assert b"From someone@example.org" not in raw


def test_sendmail_name_and_recipient_args(dlv, test_dir, peer):
    d = dlv()
    sm = os.path.join(test_dir, "sendmail")
    if not os.path.exists(sm):
        os.symlink(d.binary, sm)
    msg = b"Subject: args\n\nbody\n.\nnot reached\n"
    r = subprocess.run([sm, "-C", d.conf, "-f", "robot@test.example", "x@remote.example"],
                       input=msg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr
    t = peer.wait_transactions(1)[0]
    assert t.mail_from == "robot@test.example"
    assert t.rcpts == ["x@remote.example"]
    # Without -i a lone dot ends the message.
    assert b"not reached" not in t.data
    assert b"body" in t.data


def test_sendmail_without_daemon_is_tempfail(dlv):
    d = dlv(run=False)
    r = subprocess.run([d.binary, "-C", d.conf, "x@test.example"], input=b"Subject: x\n\ny\n",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 75
    assert b"daemon" in r.stderr


def test_broken_tls_falls_back_to_plain(dlv, peer):
    # Opportunistic TLS: a peer that offers STARTTLS but cannot do it
    # still gets the message, in plain text, and the fallback is logged.
    peer.mode = "bad_tls"
    d = dlv()
    submit(d, ["x@remote.example"])
    d.wait_event("tls_fallback", timeout=15)
    peer.mode = "normal"
    t = peer.wait_transactions(1, timeout=20)[0]
    assert not t.tls
    wait_queue_empty(d)


def test_remote_tls_verify_refuses_unverified_peer(dlv, peer):
    # remote_tls = verify: a self-signed certificate is not good enough;
    # the message waits instead of going out unverified.
    d = dlv(remote_tls="verify")
    submit(d, ["x@remote.example"])
    d.wait_event("deferred", timeout=20)
    assert peer.transactions == []
    assert len(d.queue_ids()) == 1


def test_ipv6_mail_exchanger(dlv, cert):
    p6 = Peer("::1", tls_cert=cert)
    try:
        d = dlv(records=["v6.example. MX 10 mx.v6.example.", "mx.v6.example. AAAA ::1"],
                remote_smtp_port=str(p6.port))
        submit(d, ["six@v6.example"])
        t = p6.wait_transactions(1)[0]
        assert t.rcpts == ["six@v6.example"]
        ev = d.wait_event("delivery", result="delivered")
        assert "[::1]" in ev[0]["via"]
    finally:
        p6.close()


@pytest.mark.parametrize("mode", ["starttls", "on_connect"])
def test_smarthost_with_tls_and_auth(dlv, peer, cert, mode):
    peer.auth = {"relayuser": "relay secret"}
    peer.tls_on_connect = mode == "on_connect"
    if mode == "on_connect":
        peer.extensions = [e for e in peer.extensions if e != "STARTTLS"]
    # The smarthost's certificate is checked against its name: the test
    # certificate is for mx.test.example, made trusted here.
    d = dlv(records=["mx.test.example. A 127.0.0.2"],
            smarthost="mx.test.example:%d" % peer.port, smarthost_tls=mode,
            smarthost_user="relayuser", smarthost_password="relay secret",
            tls_verify_certificates=cert.cert)
    # Even a domain with its own MX goes to the smarthost.
    submit(d, ["far@remote.example", "away@nowhere.example"])
    t = peer.wait_transactions(1)[0]
    assert sorted(t.rcpts) == ["away@nowhere.example", "far@remote.example"]
    assert t.tls
    assert peer.logins == ["relayuser"]
    wait_queue_empty(d)
    r = d.cli("-bP", "smarthost_password")
    assert b"relay secret" not in r.stdout


def test_smarthost_refuses_to_send_password_without_tls(dlv, peer):
    peer.auth = {"relayuser": "pw"}
    peer.extensions = [e for e in peer.extensions if e != "STARTTLS"]
    peer.tls_ctx = None
    d = dlv(smarthost="127.0.0.2:%d" % peer.port, smarthost_tls="may",
            smarthost_user="relayuser", smarthost_password="pw")
    submit(d, ["x@remote.example"])
    d.wait_event("deferred", timeout=20)
    assert peer.logins == []
    assert peer.transactions == []


def test_delay_warning(dlv, peer):
    peer.rcpt_reply = lambda a, p: "451 4.3.0 not now"
    d = dlv(delay_warning="1s", queue_lifetime="1h")
    submit(d, ["slowpoke@remote.example"])
    box = wait_mail(d, ALICE, timeout=30)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Action: delayed" in raw
    assert b"Status: 4.3.0" in raw
    # No failure: the headers only (RFC 3461 4.3).
    assert b"text/rfc822-headers" in raw and b"last line" not in raw
    # Still queued: a warning is not a bounce (once the warning itself has
    # left the queue, the original is still there); and only one is sent.
    assert wait_until(lambda: len(d.queue_ids()) == 1, 10), d.queue_ids()
    d.wait_event("deferred", count=3, timeout=30)
    assert len(d.events("report", action="delayed")) == 1


def test_dsn_notify_never_and_success(dlv, peer):
    peer.rcpt_reply = lambda a, p: ("550 5.1.1 unknown" if a.startswith("gone")
                                    else "250 2.1.5 ok")
    d = dlv()
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    s.starttls(context=client_ctx())
    s.login(ALICE, d.passwords[ALICE])
    s.ehlo()
    assert s.has_extn("dsn")
    s.sendmail(ALICE, ["gone@remote.example"], MSG, rcpt_options=["NOTIFY=NEVER"])
    s.sendmail(ALICE, ["here@remote.example"], MSG, mail_options=["ENVID=env-42"],
               rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;here@remote.example"])
    s.sendmail(ALICE, ["dave@test.example"], MSG, rcpt_options=["NOTIFY=SUCCESS"])
    s.quit()
    box = wait_mail(d, ALICE, n=2, timeout=20)
    wait_queue_empty(d)
    time.sleep(1)
    files = sorted(glob.glob(os.path.join(maildir(d, ALICE), "new", "*")))
    # Only the success reports: NOTIFY=NEVER suppressed the bounce.
    assert len(files) == 2
    raws = [open(f, "rb").read() for f in files]
    raw = [r for r in raws if b"here@remote.example" in r][0]
    assert b"Action: relayed" in raw
    assert b"Original-Envelope-Id: env-42" in raw
    assert b"Original-Recipient: rfc822;here@remote.example" in raw
    # No failure: the headers only (RFC 3461 4.3).
    assert b"text/rfc822-headers" in raw and b"last line" not in raw
    # Stored here: no word on where (a mailbox path is this host's business).
    local = [r for r in raws if b"dave@test.example" in r][0]
    assert b"Action: delivered" in local
    assert b"/new/" not in local and b"Diagnostic-Code" not in local, local
    # The peer offers no DSN: the parameters were not passed on.
    assert "NOTIFY" not in peer.transactions[0].mail_params


def test_no_relayed_report_when_the_next_server_takes_notify(dlv, peer):
    # A next hop that offers DSN gets NOTIFY=SUCCESS with the recipient and
    # reports the delivery itself (RFC 3461 4.1); a "relayed" report from
    # here as well would tell the sender twice.
    peer.extensions.append("DSN")
    d = dlv()
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=15)
    s.starttls(context=client_ctx())
    s.login(ALICE, d.passwords[ALICE])
    s.sendmail(ALICE, ["here@remote.example"], MSG, mail_options=["ENVID=env-43"],
               rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    s.quit()
    peer.wait_transactions(1)
    wait_queue_empty(d)
    assert "NOTIFY=SUCCESS,FAILURE" in peer.transactions[0].rcpt_params[0]
    assert "ENVID=env-43" in peer.transactions[0].mail_params
    d.wait_event("completed")
    time.sleep(1)
    # The runner decides at completion: no report was made at all.
    assert not d.events("report"), d.log_tail(20)
    assert glob.glob(os.path.join(maildir(d, ALICE), "new", "*")) == [], d.log_tail(20)


def test_alias_loop_fails_instead_of_delivering(dlv, test_dir):
    aliases = os.path.join(test_dir, "aliases")
    with open(aliases, "w") as f:
        f.write("loop1: loop2\nloop2: loop1\n")
    os.chmod(aliases, 0o644)
    d = dlv(aliases_file=aliases)
    submit(d, ["loop1@test.example"])
    # The sender hears about it; no mailbox named after an alias appears.
    box = wait_mail(d, ALICE)
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Status: 5.4.6" in raw
    assert not os.path.exists(os.path.join(d.dir, "mail", "test.example", "loop1"))
    assert not os.path.exists(os.path.join(d.dir, "mail", "test.example", "loop2"))
    ev = d.events("delivery", result="failed")
    assert "alias loop" in ev[0]["reply"]


def test_connection_limit_holds_then_releases(dlv, peer):
    # remote_max_parallel = 1: the second domain waits for the first
    # connection to end, then gets its own; nothing is left stuck.
    d = dlv(queue_only="yes", remote_max_parallel="1",
            records=["plain.example. A 127.0.0.2"])
    submit(d, ["a@remote.example"])
    submit(d, ["b@plain.example"])
    assert d.cli("-q").returncode == 0
    peer.wait_transactions(2, timeout=20)
    wait_queue_empty(d)
    assert peer.connections == 2


def test_hung_local_delivery_times_out_and_recovers(dlv):
    # A local delivery process that stops answering (SIGSTOP stands for a
    # hung file system): the message is deferred after local_delivery_timeout,
    # and delivered once the process is replaced.
    d = dlv(local_delivery_timeout="2s")
    md = int(d.wait_event("runner_started")[0]["mdeliver"])
    os.kill(md, signal.SIGSTOP)
    try:
        submit(d, [ALICE])
        d.wait_event("mdeliver_timeout", timeout=15)
        d.wait_event("deferred", timeout=15)
        assert len(d.queue_ids()) == 1
    finally:
        os.kill(md, signal.SIGCONT)
    # The old pair ends, a new one starts, the retry delivers.
    d.wait_event("runner_started", count=2, timeout=20)
    assert d.cli("-q").returncode == 0
    wait_mail(d, ALICE, timeout=20)
    wait_queue_empty(d)


def test_bs_as_root_is_delivered(dlv):
    # sluice -bs run by root writes the spool as its owner and wakes the
    # runner, so the message is delivered like any other.
    d = dlv()
    script = ("EHLO local\r\nMAIL FROM:<root@test.example>\r\nRCPT TO:<%s>\r\nDATA\r\n"
              "Subject: via -bs\r\n\r\nhi\r\n.\r\nQUIT\r\n" % ALICE)
    r = d.cli("-bs", input=script.encode())
    assert r.returncode == 0, r.stderr
    assert b"250 2.0.0" in r.stdout
    box = wait_mail(d, ALICE)
    assert list(box)[0]["Subject"] == "via -bs"
    wait_queue_empty(d)


def test_mail_loop_is_not_delivered(dlv):
    # More Received: fields than received_headers_max: a loop (RFC 5321
    # 6.3); the message is bounced, not delivered.
    d = dlv(received_headers_max="20")
    hops = "".join("Received: from hop%d.example by hop%d.example; "
                   "Sun, 29 Nov 2026 08:00:00 +0000\r\n" % (i, i + 1) for i in range(25))
    submit(d, [ALICE], msg=hops + MSG)
    box = wait_mail(d, ALICE)
    wait_queue_empty(d)
    msgs = list(box)
    assert len(msgs) == 1
    assert msgs[0].get_content_type() == "multipart/report"
    raw = open(glob.glob(os.path.join(maildir(d, ALICE), "new", "*"))[0], "rb").read()
    assert b"Status: 5.4.6" in raw


def test_wakeups_for_messages_already_done_are_not_errors(dlv):
    # Messages committed while the runner is down wake the next runner,
    # which has already found them in queue/ and may have finished them
    # (a mail loop fails at once): those wake-ups name no message any
    # more, and that is not an error to log.
    d = dlv(received_headers_max="20")
    runner = int(d.wait_event("runner_started")[-1]["pid"])
    hops = "".join("Received: from hop%d.example by hop%d.example; "
                   "Sun, 29 Nov 2026 08:00:00 +0000\r\n" % (i, i + 1) for i in range(25))
    os.kill(runner, signal.SIGSTOP)
    try:
        for _ in range(3):
            submit(d, [ALICE], msg=hops + MSG)
    finally:
        os.kill(runner, signal.SIGKILL)
    wait_mail(d, ALICE, n=3)
    wait_queue_empty(d)
    d.wait_event("runner_started", count=2)
    time.sleep(0.5)
    assert d.events("queue_read_failed") == [], d.log_tail(30)


def test_lmtp_failure_is_logged_as_lmtp(dlv, test_dir):
    # With local_delivery = lmtp an unreachable LMTP server is what failed:
    # the log must not name Maildir delivery.
    d = dlv(local_delivery="lmtp", lmtp_socket=os.path.join(test_dir, "no-lmtp.sock"))
    submit(d, [ALICE])
    ev = d.wait_event("delivery", rcpt=ALICE, timeout=15)[0]
    assert ev["result"] == "deferred", ev
    assert ev["via"] == "lmtp", ev


def test_queue_index_with_many_messages(dlv, peer):
    # Many queued messages, some removed by id, then one queue run: the
    # runner's index (hash by id, heap by next attempt) finds and delivers
    # exactly the others.
    d = dlv(queue_only="yes")
    s = smtplib.SMTP("127.0.0.1", d.sub, timeout=30)
    s.starttls(context=client_ctx())
    s.login(ALICE, d.passwords[ALICE])
    for i in range(150):
        s.sendmail(ALICE, ["n%d@remote.example" % i], MSG)
    s.quit()
    ids = sorted(d.queue_ids())
    assert len(ids) == 150
    removed = ids[::7]
    for qid in removed:
        r = d.cli("-Mrm", qid)
        assert r.returncode == 0, r.stderr
    assert d.cli("-q").returncode == 0
    want = 150 - len(removed)
    peer.wait_transactions(want, timeout=60)
    wait_queue_empty(d, timeout=60)
    assert len(peer.transactions) == want
    # -Mrm of an id already gone is refused.
    assert d.cli("-Mrm", removed[0]).returncode != 0


def test_silent_control_clients_do_not_stall_the_runner(daemon):
    """Control connections that never send their request wait in the
    runner's event loop, not in a blocking read: with ten of them open
    (2 s each, one after the other, before), a queue run is answered at
    once and they are closed after their 2 s."""
    import socket as socketmod
    name = b"\0sluice-runner:" + daemon.spool.encode()
    silent = []
    try:
        for _ in range(10):
            s = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_SEQPACKET)
            s.connect(name)
            silent.append(s)
        started = time.monotonic()
        r = daemon.cli("-q", timeout=30)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - started < 10, "queue run waited for the silent clients"
        # each silent client is dropped after its wait
        for s in silent:
            s.settimeout(10)
            assert s.recv(64) == b""
    finally:
        for s in silent:
            s.close()
