"""Fixtures for the integration tests: a real sluice daemon on loopback.

Run with Debian's pytest:  /usr/bin/python3 -m pytest tests/integration

The binary is $SLUICE_BIN, else <repo>/build-test/sluice if it exists, else
<repo>/build/sluice.  Every test gets its own directory (configuration,
spool, log) and its own random loopback ports; the daemon runs in the
foreground (-bdf) as a child of the test and is stopped with SIGTERM, which
must end it with exit status 0.
"""
import os
import shutil
import tempfile

import pytest

from helpers import (
    Daemon,
    free_ports,
    generate_cert,
    write_config,
    write_unbound_conf,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sluice_bin():
    env = os.environ.get("SLUICE_BIN")
    if env:
        return os.path.abspath(env)
    alt = os.path.join(REPO, "build-test", "sluice")
    if os.path.exists(alt):
        return alt
    return os.path.join(REPO, "build", "sluice")


@pytest.fixture(scope="session")
def binary():
    return sluice_bin()


@pytest.fixture(scope="session")
def base_dir():
    # Workers run as "nobody": every directory above the spool must be
    # traversable by it, which pytest's 0700 tmp_path is not.
    d = tempfile.mkdtemp(prefix="sluice-it-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cert(base_dir):
    """Self-signed certificate and key for mx.test.example (root-only files)."""
    d = os.path.join(base_dir, "cert")
    os.mkdir(d, 0o700)
    return generate_cert(d, "mx.test.example")


_counter = [0]


@pytest.fixture
def test_dir(base_dir):
    _counter[0] += 1
    d = os.path.join(base_dir, "t%03d" % _counter[0])
    os.mkdir(d)
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def make_config(test_dir, cert):
    """make_config(extra="", ports=None, **overrides) -> (path, ports dict)."""

    def make(extra="", ports=None, name="sluice.conf", **kw):
        if ports is None:
            ports = free_ports(3)
        path = write_config(test_dir, cert, ports, extra=extra, name=name, **kw)
        # As a package would: the spool directory exists (owned by root);
        # the daemon makes it its workers' own.
        os.makedirs(os.path.join(test_dir, "spool"), exist_ok=True)
        return path, {"mx": ports[0], "sub": ports[1], "smtps": ports[2]}

    return make


@pytest.fixture
def start_daemon(binary, test_dir, make_config, request):
    """start_daemon(extra="", args=(), wait=True) -> Daemon.

    Every daemon started is stopped at teardown with SIGTERM and must exit
    with status 0 (unless the test already stopped or killed it)."""
    started = []

    def start(extra="", args=(), wait=True, conf=None, ports=None, **kw):
        if conf is None:
            conf, ports = make_config(extra=extra, **kw)
        d = Daemon(binary, test_dir, conf, ports)
        started.append(d)
        d.start(args=args)
        if wait:
            d.wait_ready()
        return d

    yield start

    failed = getattr(request.node, "rep_call", None)
    failed = failed is not None and failed.failed
    errors = []
    for d in started:
        if d.proc is None or d.proc.returncode is not None or d.killed:
            d.cleanup_workers()
            continue
        rc = d.stop()
        d.cleanup_workers()
        if rc != 0:
            errors.append("daemon exited with status %r on SIGTERM" % (rc,))
    if failed or errors:
        for d in started:
            print("---- log tail of %s ----" % d.log_path)
            print(d.log_tail(60))
            print("---- stderr ----")
            print(d.stderr_text()[-4000:])
    if errors:
        pytest.fail("; ".join(errors))


@pytest.fixture
def daemon(start_daemon):
    return start_daemon()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ---- authentication ------------------------------------------------------

from helpers import crypt_sha512, doveadm_pw, scram_entry, write_passwd  # noqa: E402

# login -> (password, how its entry is made)
AUTH_USERS = {
    "alice@test.example": ("Alice-pw-1 secret", "sha512"),
    "bob": ("Bob-pw-2 secret", "scram"),
    "carol@other.example": ("Carol-pw-3 secret", "blf"),
    "dave@test.example": ("Dave-pw-4 secret", "dovecot-scram"),
}


@pytest.fixture(scope="session")
def auth_entries():
    """{login: "{SCHEME}hash"} for AUTH_USERS, made once per session by
    tools other than the daemon."""
    out = {}
    for u, (pw, how) in AUTH_USERS.items():
        if how == "sha512":
            out[u] = crypt_sha512(pw)
        elif how == "scram":
            out[u] = scram_entry(pw)
        elif how == "blf":
            out[u] = doveadm_pw("BLF-CRYPT", pw)
        else:
            out[u] = doveadm_pw("SCRAM-SHA-256", pw)
    return out


def listener_blocks(ports, mx_auth=None, sub_extra=(), mx_extra=()):
    mx, sub, smtps = ports
    lines = ["listener %d {" % mx, "    role = mx"]
    if mx_auth is not None:
        lines.append("    auth = %s" % ("yes" if mx_auth else "no"))
    lines += ["    " + x for x in mx_extra]
    lines += ["}", "listener %d {" % sub, "    role = submission", "    tls = starttls"]
    lines += ["    " + x for x in sub_extra]
    lines += ["}", "listener %d {" % smtps, "    role = submission", "    tls = on_connect", "}"]
    return "\n".join(lines)


@pytest.fixture
def auth_daemon(start_daemon, make_config, test_dir, auth_entries, binary):
    """auth_daemon(extra="", users=None, mx_auth=None, wait=True, run=True,
    **overrides) -> Daemon with a passwd-file backend holding AUTH_USERS (or users:
    {login: entry}); d.passwords maps login -> password."""

    def start(extra="", users=None, mx_auth=None, wait=True, run=True, mx_extra=(),
              sub_extra=(), **kw):
        ports = free_ports(3)
        passwd = os.path.join(test_dir, "passwd")
        write_passwd(passwd, auth_entries if users is None else users)
        opts = {
            "auth_backend": "passwd-file",
            "auth_passwd_file": passwd,
            "auth_fail_max_delay": "200ms",
            # Some of AUTH_USERS are SCRAM users.
            "auth_mechanisms": "PLAIN : LOGIN : SCRAM-SHA-256",
        }
        opts.update(kw)
        text = (extra + "\n" if extra else "") + listener_blocks(ports, mx_auth, sub_extra,
                                                                  mx_extra)
        conf, p = make_config(extra=text, ports=ports, listeners=False, **opts)

        def launch(wait=True):
            d = start_daemon(conf=conf, ports=p, wait=wait)
            d.passwords = {u: pw for u, (pw, _) in AUTH_USERS.items()}
            d.passwd_file = passwd
            return d

        if not run:
            # Not started: for the command-line modes; launch() starts it.
            d = Daemon(binary, test_dir, conf, p)
            d.passwd_file = passwd
            d.launch = launch
            return d
        return launch(wait)

    return start


@pytest.fixture
def peer(cert):
    """A scripted next hop on 127.0.0.2 (tests/integration/peer.py)."""
    from peer import Peer
    p = Peer("127.0.0.2", tls_cert=cert)
    yield p
    p.close()


@pytest.fixture
def dlv(auth_daemon, test_dir, peer):
    """dlv(records=(), **options) -> a daemon that delivers: remote.example's
    MX is 127.0.0.2 (the peer), retries are seconds apart."""

    def start(records=(), run=True, **kw):
        recs = ["remote.example. MX 10 mx.remote.example.",
                "mx.remote.example. A 127.0.0.2"] + list(records)
        ub = write_unbound_conf(test_dir, recs, name="unbound-dlv.conf")
        opts = dict(queue_only="no", remote_smtp_port=str(peer.port), dns_unbound_config=ub,
                    queue_retry_min="1s", queue_retry_max="2s",
                    remote_command_timeout="5s", remote_connect_timeout="3s")
        opts.update(kw)
        return auth_daemon(run=run, **opts)

    return start

