#!/bin/sh
# `make run`: writes a demo configuration under ./run (self-signed
# certificate, unprivileged ports) and runs the daemon in the foreground.
set -e
bin=$1
top=$(cd "$(dirname "$0")/.." && pwd)
# Absolute, so that the commands printed below work from any directory.
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
dir="$top/run"
mkdir -p "$dir"
if [ ! -f "$dir/key.pem" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
		-days 365 -subj "/CN=localhost" >/dev/null 2>&1
	chmod 600 "$dir/key.pem"
fi
user=nobody
[ "$(id -u)" = 0 ] || user=$(id -un)
# The demo user, for the submission ports: -buseradd (below) makes the
# file readable by $user, which the auth process runs as, and nobody else.
cat > "$dir/sluice.conf" <<CONF
# Demo configuration written by \`make run\`; see docs/configuration.md.
primary_hostname = localhost
daemon_smtp_ports = 2525 : 2587 : 2465
local_interfaces = <; 127.0.0.1 ; ::1
tls_certificate = $dir/cert.pem
tls_privatekey = $dir/key.pem
spool_directory = $dir/spool
local_domains = localhost : example.test
user = $user
pid_file = $dir/sluice.pid
log_file =
auth_backend = passwd-file
auth_passwd_file = $dir/passwd
# Local mail is delivered into Maildirs under ./run/mail (readable by
# Dovecot, mutt or Python's mailbox module); the sendmail command reaches
# the daemon through this socket.
maildir_path = $dir/mail/%d/%n
mail_user = $user
sendmail_socket = $dir/sendmail.sock

listener 2525 {
    role = mx
}
listener 2587 {
    role = submission
    tls = starttls
}
listener 2465 {
    role = submission
    tls = on_connect
}
CONF
grep -qs '^demo@example.test:' "$dir/passwd" ||
	printf 'demo\n' | "$bin" -C "$dir/sluice.conf" -buseradd demo@example.test SCRAM-SHA-256 >/dev/null
cat <<MSG
sluice demo: configuration in $dir/sluice.conf, queue in $dir/spool/queue,
local mailboxes in $dir/mail/<domain>/<user> (Maildir)

  port 2525  mx          (STARTTLS offered)
  port 2587  submission  (STARTTLS required)
  port 2465  submission  (TLS on connect)

Demo user (for the submission ports): demo@example.test, password demo

Send a test message from another terminal, as the world does (port 2525):
  swaks --server 127.0.0.1:2525 --from you@example.org --to demo@example.test
or as a mail client does (port 2465, TLS on connect, authenticated):
  swaks --server 127.0.0.1:2465 --tlsc --auth PLAIN --auth-user demo@example.test \\
        --auth-password demo --from demo@example.test --to someone@example.org
or
  python3 -c "import smtplib; s=smtplib.SMTP('127.0.0.1',2525); s.starttls(); s.sendmail('you@example.org',['demo@example.test'],'Subject: hi\r\n\r\nhello\r\n'); s.quit()"
or from a script, as sendmail (any local user):
  printf 'Subject: hi\\n\\nhello\\n' | $bin -C $dir/sluice.conf demo@example.test
The message for demo@example.test lands in $dir/mail/example.test/demo/new/.
List the queue with: $bin -C $dir/sluice.conf -bp   (mail for other domains waits
there, retried, when this machine cannot reach them)
Stop with Ctrl-C.

MSG
exec "$bin" -C "$dir/sluice.conf" -bdf
