"""Configuration values that would only fail once mail flows are refused
when the configuration is loaded: maildir_path, smarthost and lmtp_socket
by -bV with file:line; mail_user and aliases_file when the daemon starts
or reloads.  A corrected configuration starts."""
import os
import pwd
import re
import signal
import subprocess

import pytest

from helpers import broken_config, config_text, rewrite_config

as_root = pytest.mark.skipif(os.geteuid() != 0,
                             reason="mail_user and the user's file access are checked as root")




BROKEN = [
    # (config text, line of the error, text the message must hold)
    ("maildir_path = /x/mail/%d/%x\n", 1, "unknown escape '%x'"),
    ("# c\nmaildir_path = /x/mail/%n%\n", 2, "ends with a lone '%'"),
    ("maildir_path = relative/%n\n", 1, "expected an absolute path"),
    ("\nsmarthost = [::1:587\n", 2, "'[' without a closing ']'"),
    ("smarthost = 2001:db8::1\n", 1, "must be written in brackets"),
    ("smarthost = relay.example.net:0\n", 1, "bad port"),
    ("lmtp_socket = 127.0.0.1:99999\n", 1, "bad port"),
    ("lmtp_socket = relative\n", 1, "expected the absolute path of a unix socket"),
    ("local_delivery = lmtp\nlmtp_socket = localhost:24\n", 2, "not looked up by name"),
]


@pytest.mark.parametrize("text,line,what", BROKEN)
def test_delivery_values_refused_by_bV(binary, test_dir, text, line, what):
    path = broken_config(test_dir, text)
    r = subprocess.run([binary, "-C", path, "-bV"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    m = re.search(r"(^|: )" + re.escape(path) + ":%d: (.*)$" % line, err, re.M)
    assert m, err
    assert what in m.group(2), err


GOOD = [
    "maildir_path = /x/mail/%d/%n/Maildir\n",
    "maildir_path = /x/100%%/%u\n",
    "smarthost = [::1]:587\n",
    "smarthost = relay.example.net\n",
    "smarthost = 192.0.2.1:2525\n",
    "lmtp_socket = /run/dovecot/lmtp\n",
    "lmtp_socket = 127.0.0.1:24\n",
    "lmtp_socket = [::1]:24\n",
]


@pytest.mark.parametrize("text", GOOD)
def test_delivery_values_accepted_by_bV(binary, test_dir, text):
    path = broken_config(test_dir, text)
    r = subprocess.run([binary, "-C", path, "-bV"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == 0, r.stderr.decode()


def test_bV_loads_the_certificate(binary, cert, test_dir):
    # -bV refuses what the daemon's start would: a missing certificate,
    # a key that is not the certificate's.
    ports = (2525, 2587, 2465)
    notpem = os.path.join(test_dir, "notpem.txt")
    with open(notpem, "w") as f:
        f.write("not a certificate\n")
    missing = os.path.join(test_dir, "missing.pem")
    cases = [
        (dict(tls_certificate=missing),
         "tls_certificate %s cannot be read: No such file or directory" % missing),
        (dict(tls_privatekey=os.path.join(test_dir, "other.key")), "other.key"),
        (dict(tls_certificate=notpem), "tls_certificate %s holds no certificate" % notpem),
        # No key given: the certificate's file is searched, and the message
        # says which setting is missing.
        (dict(tls_privatekey=None), "holds no private key, and tls_privatekey is not set to another file"),
    ]
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", os.path.join(test_dir, "other.key")],
                   check=True, capture_output=True, timeout=60)
    for kw, what in cases:
        path = os.path.join(test_dir, "tls.conf")
        with open(path, "w") as f:
            f.write(config_text(test_dir, cert, ports, **kw))
        r = subprocess.run([binary, "-C", path, "-bV"], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode == 1, (kw, r.stdout, r.stderr)
        assert what in r.stderr, r.stderr
    with open(path, "w") as f:
        f.write(config_text(test_dir, cert, ports))
    r = subprocess.run([binary, "-C", path, "-bV"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr


def _start_fails(start_daemon, **kw):
    """Starts the daemon with the overrides; it must exit non-zero without
    serving.  Returns (daemon, stderr)."""
    d = start_daemon(wait=False, **kw)
    try:
        rc = d.proc.wait(20)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(5)
        pytest.fail("daemon kept running: %s" % d.log_tail(20))
    err = d.stderr_text()
    assert rc != 0, (rc, err)
    assert not d.can_connect(d.mx)
    assert "LeakSanitizer" not in err, err
    return d, err


@as_root
def test_mail_user_missing_refused_at_start(start_daemon):
    d, err = _start_fails(start_daemon, mail_user="nosuchuser")
    assert "%s: mail_user 'nosuchuser' does not exist" % d.conf in err, err
    ev = d.events("start_failed")
    assert ev and "mail_user 'nosuchuser' does not exist" in ev[0]["error"], d.log_tail(10)


@as_root
def test_mail_user_root_refused_at_start(start_daemon):
    d, err = _start_fails(start_daemon, mail_user="root")
    assert "%s: mail_user 'root' is root" % d.conf in err, err


def test_aliases_file_missing_refused_at_start(start_daemon, test_dir):
    missing = os.path.join(test_dir, "no-such-aliases")
    d, err = _start_fails(start_daemon, aliases_file=missing)
    assert "%s: aliases_file %s cannot be read" % (d.conf, missing) in err, err
    assert os.strerror(2) in err, err  # ENOENT


@pytest.mark.parametrize("option", ["virtual_alias_file", "submission_senders_file",
                                    "dns_unbound_config", "auth_passwd_file"])
def test_other_files_missing_refused_at_start_and_by_bV(start_daemon, test_dir, option):
    # Each is read by an unprivileged process (auth or runner): missing,
    # it used to defer every lookup, login or delivery for ever (a runner
    # restarting each second), while -bV called the file valid.
    missing = os.path.join(test_dir, "no-such-file")
    extra = {"auth_backend": "passwd-file"} if option == "auth_passwd_file" else {}
    d, err = _start_fails(start_daemon, **{option: missing}, **extra)
    want = "%s: %s %s cannot be read" % (d.conf, option, missing)
    assert want in err, err
    assert os.strerror(2) in err, err  # ENOENT
    r = d.cli("-bV")
    assert r.returncode != 0 and want in r.stderr.decode(), r


@as_root
def test_bV_refuses_what_a_start_refuses(start_daemon):
    d, err = _start_fails(start_daemon, user="nosuchuser")
    r = d.cli("-bV")
    assert r.returncode != 0
    assert "user 'nosuchuser' does not exist" in r.stderr.decode(), r


@as_root
def test_buseradd_makes_a_store_the_auth_process_can_read(start_daemon, test_dir):
    # A store -buseradd creates belongs to root and user's group, 0640:
    # made root's own, every login got 454 and every lookup 451.
    path = os.path.join(test_dir, "new-passwd")
    conf_d, err = _start_fails(start_daemon, auth_backend="passwd-file", auth_passwd_file=path)
    r = conf_d.cli("-buseradd", "erin@test.example", input=b"Erin secret\n")
    assert r.returncode == 0, r.stderr
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o640, oct(st.st_mode)
    assert st.st_uid == 0 and st.st_gid == pwd.getpwnam("nobody").pw_gid
    # -bV checks it as user nobody would read it.
    r = conf_d.cli("-bV")
    assert r.returncode == 0, r.stderr


@as_root
def test_aliases_file_unreadable_by_user_refused(start_daemon, test_dir):
    # Root could read it; the processes that do (running as user) cannot.
    path = os.path.join(test_dir, "aliases")
    with open(path, "w") as f:
        f.write("info: alice\n")
    os.chmod(path, 0o600)
    d, err = _start_fails(start_daemon, aliases_file=path)
    assert "aliases_file %s cannot be read by user 'nobody'" % path in err, err
    assert os.strerror(13) in err, err  # EACCES


def test_aliases_file_directory_refused(start_daemon, test_dir):
    d, err = _start_fails(start_daemon, aliases_file=test_dir)
    assert "aliases_file %s cannot be read" % test_dir in err, err
    assert "not a regular file" in err, err


@as_root
def test_user_missing_exits_without_leak(start_daemon):
    d, err = _start_fails(start_daemon, user="nosuchuser")
    assert "user 'nosuchuser' does not exist" in err, err


def test_fixed_config_starts(start_daemon, test_dir):
    aliases = os.path.join(test_dir, "aliases")
    with open(aliases, "w") as f:
        f.write("info: alice\n")
    os.chmod(aliases, 0o644)
    kw = {"aliases_file": aliases}
    if os.geteuid() == 0:
        kw["mail_user"] = "nobody"
    d = start_daemon(**kw)
    # The runner (and its delivery process as mail_user) starts at once.
    d.wait_event("runner_started")
    assert d.events("runner_failed") == []
    assert d.proc.poll() is None


@as_root
@pytest.mark.parametrize("bad,what", [
    ({"mail_user": "nosuchuser"}, "mail_user 'nosuchuser' does not exist"),
    ({"aliases_file": "/nonexistent/aliases"}, "aliases_file /nonexistent/aliases cannot be read"),
])
def test_reload_refuses_and_keeps_serving(start_daemon, cert, bad, what):
    d = start_daemon()
    rewrite_config(d, cert, **bad)
    d.signal(signal.SIGHUP)
    ev = d.wait_event("reload_failed")
    assert what in ev[-1].get("error", ""), ev
    assert d.proc.poll() is None, "master died on a refused reload"
    assert d.can_connect(d.mx)
    # Corrected, the next reload is taken.
    rewrite_config(d, cert)
    d.signal(signal.SIGHUP)
    d.wait_event("reload")
    assert len(d.events("reload_failed")) == 1
