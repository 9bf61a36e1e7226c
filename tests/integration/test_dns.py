"""`sluice -bdns DOMAIN`: the DNS records a domain needs, as zone-file lines."""
import re

import pytest


def records(text):
    """(name, type, rdata) of every non-comment line."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        m = re.match(r"^(\S+)\s+(?:\d+\s+)?IN\s+([A-Z]+)\s+(.*)$", s)
        assert m, "not a zone-file record: %r" % line
        out.append((m.group(1).lower(), m.group(2), m.group(3).strip()))
    return out


def find(recs, name, rtype):
    return [r for n, t, r in recs if n == name and t == rtype]


@pytest.fixture
def dns_out(make_config, binary):
    import subprocess

    def run(domain, **kw):
        conf, ports = make_config(**kw)
        r = subprocess.run([binary, "-C", conf, "-bdns", domain], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        return r, ports
    return run


def test_dns_records(dns_out):
    r, ports = dns_out("example.org")
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout.decode())
    assert find(recs, "example.org.", "MX") == ["10 mx.test.example."], recs
    subs = find(recs, "_submissions._tcp.example.org.", "SRV")
    assert len(subs) == 1, recs
    prio, weight, port, target = subs[0].split()
    assert (int(prio), int(port), target) == (0, ports["smtps"], "mx.test.example."), subs
    sub = find(recs, "_submission._tcp.example.org.", "SRV")
    assert len(sub) == 1, recs
    prio2, weight2, port2, target2 = sub[0].split()
    assert int(prio2) > int(prio) and int(port2) == ports["sub"], sub
    assert target2 == "mx.test.example."
    assert find(recs, "example.org.", "TXT") == ['"v=spf1 mx -all"'], recs
    dmarc = find(recs, "_dmarc.example.org.", "TXT")
    assert len(dmarc) == 1 and dmarc[0].startswith('"v=DMARC1;'), recs
    sts = find(recs, "_mta-sts.example.org.", "TXT")
    assert len(sts) == 1 and sts[0].startswith('"v=STSv1;'), recs
    tlsrpt = find(recs, "_smtp._tls.example.org.", "TXT")
    assert len(tlsrpt) == 1 and tlsrpt[0].startswith('"v=TLSRPTv1;'), recs


def test_dns_domain_normalised(dns_out):
    r, _ = dns_out("Example.ORG.")
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout.decode())
    assert find(recs, "example.org.", "MX"), recs
    assert not any(n.endswith("..") for n, _, _ in recs), recs


def test_dns_only_starttls_submission(dns_out):
    from helpers import free_ports
    mx, sub = free_ports(2)
    extra = ("listener %d {\n    role = mx\n}\n"
             "listener %d {\n    role = submission\n    tls = starttls\n}\n" % (mx, sub))
    r, _ = dns_out("example.net", listeners=False, extra=extra,
                   daemon_smtp_ports="%d : %d" % (mx, sub))
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout.decode())
    assert find(recs, "_submissions._tcp.example.net.", "SRV") == [], recs
    sub_rec = find(recs, "_submission._tcp.example.net.", "SRV")
    assert len(sub_rec) == 1 and int(sub_rec[0].split()[2]) == sub, recs


@pytest.mark.parametrize("bad", ["not a domain", "-x", "a..b", ".", "exa_mple.org;rm",
                                 "user@example.org", "", "a" * 300])
def test_dns_bad_argument(dns_out, bad):
    r, _ = dns_out(bad)
    assert r.returncode == 1, (bad, r)
    assert r.stdout.strip() == b"" or b"IN MX" not in r.stdout, r.stdout
