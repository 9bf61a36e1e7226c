#!/bin/bash
# `make bench`: runs the same loads against sluice, Postfix, Exim, OpenSMTPD
# and smtp-sink on loopback, in turn, and prints one table (also written to
# bench/results/latest.txt).  See docs/performance.md for the method.
#
# usage: bench/run.sh [path/to/sluice]      (default: build/sluice)
# environment: QUICK=1      one run per figure and fewer messages (< 2 min)
#              BENCH_PORT   first of ten loopback ports (default 24025)
#              BENCH_RUNS   runs per figure, the median is kept (default 3)
#              BENCH_TMP    where the work directory is made (default /tmp)
#              BENCH_PEERS  "exim opensmtpd" (default): the extra peers, run
#                           in every workload (a, c, d, e; QUICK: a-1k-s20
#                           and d-idle-1000 only); "" leaves them out
#
# Needs root (Debian packages, a cgroup per server, Postfix's own users).
# Every process it starts is stopped by its pid on exit; temporary files
# live under one mktemp directory that is removed on exit.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
conf="$top/bench/conf"
sluice=${1:-$top/build/sluice}
quick=${QUICK:-0}
[ "$quick" = 0 ] || [ "$quick" = 1 ] || quick=1
port0=${BENCH_PORT:-24025}
port_sluice=$port0
port_postfix=$((port0 + 1))
port_sink=$((port0 + 2))
port_relay_sink=$((port0 + 3))
port_sluice_tls=$((port0 + 4))
port_postfix_tls=$((port0 + 5))
port_exim=$((port0 + 6))
port_opensmtpd=$((port0 + 7))
port_exim_tls=$((port0 + 8))
port_opensmtpd_tls=$((port0 + 9))
peers=${BENCH_PEERS-exim opensmtpd}
load_timeout=300 # seconds, per smtp-source run
[ "$quick" = 1 ] && load_timeout=60

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }
# Stops a process we started: signal $2 (default TERM), at most 10 s, then
# KILL; it is then forgotten by the clean-up lists.
stop_pid() { # pid [signal]
	local p=$1 i
	kill -"${2:-TERM}" "$p" 2>/dev/null
	for i in $(seq 1 100); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	pids_to_stop=$(echo "$pids_to_stop" | tr ' ' '\n' | grep -vx "$p" | tr '\n' ' ')
	peer_pids=$(echo "$peer_pids" | tr ' ' '\n' | grep -vx "$p" | tr '\n' ' ')
}

[ "$(id -u)" = 0 ] || die "run as root (packages, cgroups, Postfix's users)"
case "$sluice" in /*) ;; *) sluice="$PWD/$sluice" ;; esac
[ -x "$sluice" ] || die "no sluice binary at $sluice (build it first: make build)"

# ---------------------------------------------------------------- packages
# Postfix provides smtp-source, smtp-sink and the Postfix peer.  Installing
# it must not leave a system Postfix running or enabled: the service is
# kept from starting during the install (policy-rc.d) and disabled after,
# and Debian's configuration question is answered "No configuration".
need_pkgs() {
	local missing="" p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	say "installing:$missing"
	local made_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
	local rc=$?
	[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
	case " $missing " in *" postfix "*)
		if command -v systemctl >/dev/null 2>&1; then
			systemctl disable --now postfix >/dev/null 2>&1 || true
		fi ;;
	esac
	[ $rc = 0 ] || die "apt-get install failed"
}
need_pkgs postfix procps iproute2 strace gcc libc6-dev libssl-dev openssl

for b in smtp-source smtp-sink postfix postconf strace cc openssl; do
	command -v $b >/dev/null 2>&1 || die "$b not found after installing postfix"
done

# ---------------------------------------------------------------- workspace
work=$(mktemp -d "${BENCH_TMP:-/tmp}/sluice-bench.XXXXXX") || die "mktemp failed"
chmod 755 "$work" # Postfix's and sluice's unprivileged users must reach it
cgroot=""
cgdir=""
pids_to_stop=""
postfix_etc=""
postfix_pid=""
made_users=""
idle_pids=""

cleanup() {
	local p
	for p in $idle_pids; do kill -TERM "$p" 2>/dev/null; done
	for p in $idle_pids; do wait "$p" 2>/dev/null; done
	peer_stop_all
	if [ -n "$postfix_etc" ]; then
		postfix -c "$postfix_etc" stop >/dev/null 2>&1
		if [ -n "$postfix_pid" ]; then
			for _ in $(seq 1 40); do
				kill -0 "$postfix_pid" 2>/dev/null || break
				sleep 0.25
			done
			kill -KILL "$postfix_pid" 2>/dev/null
		fi
	fi
	for p in $pids_to_stop; do kill -TERM "$p" 2>/dev/null; done
	for p in $pids_to_stop; do
		for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [ -n "$cgdir" ] && [ -d "$cgdir" ]; then
		local d
		for d in "$cgdir"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
		rmdir "$cgdir" 2>/dev/null
	fi
	rm -rf "$work"
	for p in $made_users; do userdel "$p" 2>/dev/null; done
}
peer_stop_all() { :; } # replaced once the peers are set up
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- CPU accounting
# A cgroup v2 per server holds its whole process tree: the server is moved
# into it before it starts, so every child it forks is counted, including
# children that have exited.  Without a writable cgroup v2 hierarchy the
# fallback sums utime+stime (and cutime+cstime of reaped children) over the
# live process tree in /proc.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	cgroot=/sys/fs/cgroup
elif [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then
	cgroot=/sys/fs/cgroup/unified
fi
cpu_method="/proc utime+stime of the process tree"
if [ -n "$cgroot" ] && mkdir "$cgroot/sluice-bench.$$" 2>/dev/null; then
	cgdir="$cgroot/sluice-bench.$$"
	if [ -f "$cgdir/cpu.stat" ]; then
		cpu_method="cgroup v2 cpu.stat usage_usec ($cgroot)"
	else
		rmdir "$cgdir"
		cgdir=""
	fi
fi
say "CPU accounting: $cpu_method"

clk_tck=$(getconf CLK_TCK)

# Runs "$@" in the background inside cgroup $1 (when cgroups are in use).
# Prints nothing; sets $spawned to the pid.
spawn_in() {
	local name=$1
	shift
	if [ -n "$cgdir" ]; then
		mkdir -p "$cgdir/$name"
		sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cgdir/$name" "$@" &
	else
		"$@" &
	fi
	spawned=$!
}

# Joins cgroup $1 for one command run in the foreground (Postfix's start
# script daemonizes its master, which inherits the cgroup).
run_in() {
	local name=$1
	shift
	if [ -n "$cgdir" ]; then
		mkdir -p "$cgdir/$name"
		sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$cgdir/$name" "$@"
	else
		"$@"
	fi
}

# CPU microseconds used so far by server $1 whose top process is $2.
cpu_usec() {
	local name=$1 root=$2
	if [ -n "$cgdir" ]; then
		awk '$1 == "usage_usec" { print $2 }' "$cgdir/$name/cpu.stat"
		return
	fi
	# Whole tree under $root: ps gives the parent links, /proc the times.
	local all p ticks=0 f
	all=$(ps -e -o pid=,ppid= | awk -v r="$root" '
		{ parent[$1] = $2 }
		END { n = 1; want[r] = 1; changed = 1
		      while (changed) { changed = 0
		          for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 } }
		      for (p in want) print p }')
	for p in $all; do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		# Fields after the command name "(...)": utime=14 stime=15 cutime=16 cstime=17.
		ticks=$((ticks + $(echo "${f##*) }" | awk '{ print $12 + $13 + $14 + $15 }')))
	done
	echo $((ticks * 1000000 / clk_tck))
}

wait_port() { # port -> 0 when something listens on 127.0.0.1:port (at most 10 s)
	local i
	for i in $(seq 1 100); do
		ss -ltn "sport = :$1" 2>/dev/null | grep -q LISTEN && return 0
		sleep 0.1
	done
	return 1
}

port_free() {
	! ss -ltn "sport = :$1" 2>/dev/null | grep -q LISTEN
}

for p in $port_sluice $port_postfix $port_sink $port_relay_sink $port_sluice_tls $port_postfix_tls \
	$port_exim $port_opensmtpd $port_exim_tls $port_opensmtpd_tls; do
	port_free $p || die "port $p is in use (set BENCH_PORT)"
done


# ---------------------------------------------------------------- tools
# The load clients of workloads c and d are small C programs (a Python loop
# would be the bottleneck on two cores shared with the server).
bin="$work/bin"
mkdir -p "$bin"
cc -O2 -o "$bin/idle_client" "$top/bench/idle_client.c" || die "cannot compile bench/idle_client.c"
cc -O2 -o "$bin/tls_client" "$top/bench/tls_client.c" -lssl -lcrypto || die "cannot compile bench/tls_client.c"
# Idle sessions need a descriptor each, in the servers and in the client.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 10100 ] || say "descriptor limit $(ulimit -n): too low for 10,000 idle sessions"

# One certificate for every server's implicit-TLS listener: RSA 2048,
# self-signed, the common case on port 465.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.test \
	-keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1 || die "openssl req failed"
chmod 644 "$work/cert.pem" "$work/key.pem" # a throw-away key, read by unprivileged workers

# ---------------------------------------------------------------- servers
user=nobody
sluice_dir="$work/sluice"
mkdir -p "$sluice_dir"
chmod 755 "$sluice_dir"
cp "$work/cert.pem" "$work/key.pem" "$sluice_dir/"
echo "@fwd.test rcpt@relay.test" > "$sluice_dir/virtual"
chmod 644 "$sluice_dir/virtual"
sed -e "s|@DIR@|$sluice_dir|g" -e "s|@PORT@|$port_sluice|g" -e "s|@TLSPORT@|$port_sluice_tls|g" \
	-e "s|@SINKPORT@|$port_relay_sink|g" -e "s|@USER@|$user|g" \
	"$conf/sluice.conf.in" > "$sluice_dir/sluice.conf"
# Variants: group commit off (the "before" of spool_group_sync), and
# delivery on (relay, workload e).
sed -e 's/^spool_group_sync = .*//' "$sluice_dir/sluice.conf" > "$sluice_dir/sluice-nogs.conf"
echo "spool_group_sync = no" >> "$sluice_dir/sluice-nogs.conf"
sed -e 's/^queue_only = yes/queue_only = no/' "$sluice_dir/sluice.conf" > "$sluice_dir/sluice-relay.conf"
for c in sluice sluice-nogs sluice-relay; do
	"$sluice" -C "$sluice_dir/$c.conf" -bV >/dev/null || die "sluice refuses the benchmark configuration $c.conf"
done
sluice_pid=""
sluice_conf=sluice
sluice_start() { # [configuration name]
	sluice_conf=${1:-sluice}
	spawn_in sluice "$sluice" -C "$sluice_dir/$sluice_conf.conf" -bdf
	sluice_pid=$spawned
	pids_to_stop="$pids_to_stop $sluice_pid"
	wait_port $port_sluice || die "sluice does not listen on $port_sluice (log: $sluice_dir/sluice.log)"
	wait_port $port_sluice_tls || die "sluice does not listen on $port_sluice_tls"
}
sluice_stop() {
	local i
	stop_pid "$sluice_pid"
	for i in $(seq 1 100); do
		port_free $port_sluice && port_free $port_sluice_tls && return 0
		sleep 0.1
	done
	die "sluice still listens on $port_sluice after stopping"
}
# Restarts sluice on an empty spool with configuration $1.
sluice_fresh() {
	[ -n "$sluice_pid" ] && sluice_stop
	rm -rf "$sluice_dir/spool"
	sluice_start "${1:-sluice}"
}
sluice_fresh sluice

pf="$work/postfix"
postfix_etc_new="$pf/etc"
mkdir -p "$postfix_etc_new" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
cp "$work/cert.pem" "$work/key.pem" "$pf/"
chmod 600 "$pf/key.pem"
sed -e "s|@DIR@|$pf|g" -e "s|@SINKPORT@|$port_relay_sink|g" "$conf/postfix-main.cf.in" > "$postfix_etc_new/main.cf"
sed -e "s|@PORT@|$port_postfix|g" -e "s|@TLSPORT@|$port_postfix_tls|g" -e "s|@DIR@|$pf|g" \
	"$conf/postfix-master.cf.in" > "$postfix_etc_new/master.cf"
[ -f /etc/postfix/dynamicmaps.cf ] && cp /etc/postfix/dynamicmaps.cf "$postfix_etc_new/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$postfix_etc_new/"
postfix_etc=$postfix_etc_new
postfix -c "$postfix_etc" check >/dev/null 2>&1 # creates the queue directories
run_in postfix postfix -c "$postfix_etc" start >/dev/null 2>&1
wait_port $port_postfix || die "Postfix does not listen on $port_postfix (log: $pf/maillog)"
wait_port $port_postfix_tls || die "Postfix does not listen on $port_postfix_tls (log: $pf/maillog)"
postfix_pid=$(tr -d ' ' < "$pf/queue/pid/master.pid" 2>/dev/null)

spawn_in sink smtp-sink -u nobody -h bench.test 127.0.0.1:$port_sink 1024
sink_pid=$spawned
pids_to_stop="$pids_to_stop $sink_pid"
wait_port $port_sink || die "smtp-sink does not listen on $port_sink"
# The relay target counts what it receives (-c: "sess=.. quit=.. mesg=N"
# after each message).  Its name differs from the servers' so that neither
# takes it for a mail loop.
spawn_in relaysink smtp-sink -c -u nobody -h sink.test 127.0.0.1:$port_relay_sink 1024 > "$work/relaysink.out"
relaysink_pid=$spawned
pids_to_stop="$pids_to_stop $relaysink_pid"
wait_port $port_relay_sink || die "smtp-sink does not listen on $port_relay_sink"
sink_received() {
	tr '\r' '\n' < "$work/relaysink.out" | awk -F'mesg=' 'NF > 1 { n = $2 + 0 } END { print n + 0 }'
}


# Messages now in each server's queue: a check that what got 250 is there.
queued() {
	case $1 in
	sluice*) find "$sluice_dir/spool/queue" -type f 2>/dev/null | wc -l ;;
	postfix) find "$pf/queue/hold" "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" -type f 2>/dev/null | wc -l ;;
	exim) find "$exim_dir/spool/input" -type f -name '*-D' 2>/dev/null | wc -l ;;
	opensmtpd) find "$os_dir/var_spool/smtpd/queue" -type f -name message 2>/dev/null | wc -l ;;
	*) echo 0 ;;
	esac
}

root_of() {
	case $1 in
	sluice*) echo "$sluice_pid" ;;
	postfix) echo "$postfix_pid" ;;
	exim) echo "$exim_pid" ;;
	opensmtpd) echo "$opensmtpd_pid" ;;
	*) echo "$sink_pid" ;;
	esac
}
cg_of() { case $1 in sluice*) echo sluice ;; *) echo "$1" ;; esac; }

# Every process of server $1: its cgroup, or its process tree.
server_pids() {
	local cg
	cg=$(cg_of "$1")
	if [ -n "$cgdir" ]; then
		cat "$cgdir/$cg/cgroup.procs"
		return
	fi
	ps -e -o pid=,ppid= | awk -v r="$(root_of "$1")" '
		{ parent[$1] = $2 }
		END { want[r] = 1; changed = 1
		      while (changed) { changed = 0
		          for (p in parent) if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 } }
		      for (p in want) print p }'
}

# PSS in KiB summed over every process of server $1.
pss_kib() {
	server_pids "$1" | sed 's|.*|/proc/&/smaps_rollup|' | xargs cat 2>/dev/null |
		awk '$1 == "Pss:" { s += $2 } END { print s + 0 }'
}

# ---------------------------------------------------------------- Exim, OpenSMTPD
# Neither can be installed next to Postfix (Debian's packages conflict), so
# their packages are fetched with apt-get download, unpacked with dpkg -x
# under the work directory and run from there, with configuration files from
# bench/conf/.  They take part in every workload (QUICK: a-1k-s20, d only).
# A peer that cannot be fetched or started is left out with a message; the
# rest of the benchmark runs as before.
#   Exim: the daemon-light binary, -C exim.conf -bdf -oX PORT:TLSPORT; it
#   drops to its compiled-in user Debian-exim (not a trusted -C file).  Its
#   set-uid bit is cleared in the unpacked copy, so that the re-executions
#   of exim_path (deliveries) keep LD_LIBRARY_PATH.  exim-relay.conf (e) is
#   exim.conf with queue_only = false.
#   OpenSMTPD: its queue (/var/spool/smtpd), chroot (/var/lib/opensmtpd/empty)
#   and control socket (/run/smtpd.sock) paths are compiled in, so smtpd runs
#   in a mount namespace of its own (unshare -m) where work directories are
#   bind-mounted on /var/spool, /var/lib and /run, and files of the work
#   directory on /etc/hosts and /etc/resolv.conf ("lookup file"): it looks
#   every client up in the DNS (reverse, then forward), which the other
#   servers do not do, and the idle clients' sources 127.0.0.2-16 are not in
#   the system's hosts file.  Nothing outside the work directory is touched.
#   It runs with its delivery agents paused (-P mda -P mta): accepted
#   messages stay queued, as with sluice's queue_only; in the relay workload
#   (e) only the local delivery agent is paused (-P mda).
# Users the binaries need (Debian-exim; opensmtpd, opensmtpq) are created as
# system users when missing and removed again on exit.
peer_root="$work/peers/root"
peer_lib="$peer_root/usr/lib/x86_64-linux-gnu"
exim_bin="$peer_root/usr/sbin/exim4"
osmtpd_bin="$peer_root/usr/sbin/smtpd"
exim_dir="$work/exim"
os_dir="$work/opensmtpd"
peer_pids=""
exim_pid=""
opensmtpd_pid=""
peer_has() { case " $peers " in *" $1 "*) return 0 ;; esac; return 1; }
peer_drop() { # name reason
	say "$1 left out: $2"
	peers=$(echo " $peers " | sed "s/ $1 / /" | tr -s ' ')
	peers=${peers# }
	peers=${peers% }
}
need_user() {
	id "$1" >/dev/null 2>&1 && return 0
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1" || return 1
	made_users="$made_users $1"
}
if [ -n "$peers" ]; then
	mkdir -p "$work/peers/debs" "$peer_root"
	chmod 755 "$work/peers" "$work/peers/debs"
	debs=""
	peer_has exim && debs="$debs exim4-daemon-light exim4-base exim4-config"
	peer_has opensmtpd && debs="$debs opensmtpd"
	# Libraries the binaries link against that a Postfix system may lack.
	for p in libidn12; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || debs="$debs $p"
	done
	say "fetching:$debs"
	if ! (cd "$work/peers/debs" && apt-get download $debs >/dev/null 2>&1); then
		apt-get update -qq >/dev/null 2>&1
		(cd "$work/peers/debs" && apt-get download $debs >/dev/null 2>&1) || {
			peer_drop exim "apt-get download failed"
			peer_drop opensmtpd "apt-get download failed"
		}
	fi
	for d in "$work/peers/debs"/*.deb; do
		[ -f "$d" ] && dpkg -x "$d" "$peer_root"
	done
	for p in exim opensmtpd; do
		peer_has $p || continue
		b=$exim_bin
		[ $p = opensmtpd ] && b=$osmtpd_bin
		if [ ! -x "$b" ]; then peer_drop $p "no binary $b in the packages"; continue; fi
		chmod u-s,g-s "$b"
		miss=$(LD_LIBRARY_PATH="$peer_lib" ldd "$b" 2>&1 | awk '/not found/ { print $1 }' | tr '\n' ' ')
		[ -z "$miss" ] || peer_drop $p "missing libraries: $miss"
	done
fi
if peer_has exim; then
	need_user Debian-exim || peer_drop exim "cannot create user Debian-exim"
fi
if peer_has opensmtpd; then
	{ need_user opensmtpd && need_user opensmtpq; } || peer_drop opensmtpd "cannot create users opensmtpd, opensmtpq"
	command -v unshare >/dev/null 2>&1 || peer_drop opensmtpd "no unshare(1)"
fi
if peer_has exim; then
	mkdir -p "$exim_dir"
	chmod 755 "$exim_dir"
	cp "$work/cert.pem" "$work/key.pem" "$exim_dir/"
	sed -e "s|@DIR@|$exim_dir|g" -e "s|@EXIM@|$exim_bin|g" -e "s|@PORT@|$port_exim|g" \
		-e "s|@TLSPORT@|$port_exim_tls|g" -e "s|@SINKPORT@|$port_relay_sink|g" \
		"$conf/exim.conf.in" > "$exim_dir/exim.conf"
	sed -e 's/^queue_only = true/queue_only = false/' "$exim_dir/exim.conf" > "$exim_dir/exim-relay.conf"
	for c in exim exim-relay; do
		LD_LIBRARY_PATH="$peer_lib" "$exim_bin" -C "$exim_dir/$c.conf" -bV >/dev/null 2>&1 ||
			peer_drop exim "it refuses $c.conf (from bench/conf/exim.conf.in)"
	done
fi
if peer_has opensmtpd; then
	mkdir -p "$os_dir/var_lib/opensmtpd/empty" "$os_dir/run"
	chmod 755 "$os_dir" "$os_dir/var_lib" "$os_dir/var_lib/opensmtpd" "$os_dir/run"
	chmod 711 "$os_dir/var_lib/opensmtpd/empty"
	# smtpd refuses a private key that others can read.
	cp "$work/cert.pem" "$work/key.pem" "$os_dir/"
	chmod 600 "$os_dir/key.pem"
	{
		echo "127.0.0.1 localhost"
		for i in $(seq 2 16); do echo "127.0.0.$i src$i.bench.test"; done
	} > "$os_dir/hosts"
	printf 'nameserver 127.0.0.1\nlookup file\n' > "$os_dir/resolv.conf"
	chmod 644 "$os_dir/hosts" "$os_dir/resolv.conf"
	sed -e "s|@DIR@|$os_dir|g" -e "s|@PORT@|$port_opensmtpd|g" -e "s|@TLSPORT@|$port_opensmtpd_tls|g" \
		-e "s|@SINKPORT@|$port_relay_sink|g" "$conf/opensmtpd.conf.in" > "$os_dir/smtpd.conf"
	LD_LIBRARY_PATH="$peer_lib" "$osmtpd_bin" -n -f "$os_dir/smtpd.conf" >/dev/null 2>&1 ||
		peer_drop opensmtpd "it refuses bench/conf/opensmtpd.conf"
fi
peer_port() { # name [tls]
	case $1${2:-} in
	exim) echo "$port_exim" ;;
	opensmtpd) echo "$port_opensmtpd" ;;
	eximtls) echo "$port_exim_tls" ;;
	opensmtpdtls) echo "$port_opensmtpd_tls" ;;
	esac
}
peer_start() { # name [relay] -> 0 when it listens on both its ports
	local p=$1 mode=${2:-accept} cf=exim paused="-P mda -P mta"
	[ "$mode" = relay ] && { cf=exim-relay; paused="-P mda"; }
	case $p in
	exim)
		rm -rf "$exim_dir/spool"
		mkdir -p "$exim_dir/spool"
		chown Debian-exim "$exim_dir" "$exim_dir/spool"
		spawn_in exim env LD_LIBRARY_PATH="$peer_lib" "$exim_bin" -C "$exim_dir/$cf.conf" -bdf \
			-oX "$port_exim:$port_exim_tls" >> "$exim_dir/stderr" 2>&1
		exim_pid=$spawned ;;
	opensmtpd)
		rm -rf "$os_dir/var_spool"
		mkdir -p "$os_dir/var_spool"
		chmod 755 "$os_dir/var_spool"
		# $paused is split on purpose: "-P mda -P mta" or "-P mda".
		spawn_in opensmtpd env LD_LIBRARY_PATH="$peer_lib" unshare -m sh -c '
			mount --make-rprivate / 2>/dev/null
			mount --bind "$1/hosts" /etc/hosts 2>/dev/null
			mount --bind "$1/resolv.conf" /etc/resolv.conf 2>/dev/null
			mount --bind "$1/var_spool" /var/spool && mount --bind "$1/var_lib" /var/lib &&
			mount --bind "$1/run" /run && d=$1 && shift && exec "$0" -d -f "$d/smtpd.conf" "$@"' \
			"$osmtpd_bin" "$os_dir" $paused >> "$os_dir/stderr" 2>&1
		opensmtpd_pid=$spawned ;;
	esac
	peer_pids="$peer_pids $spawned"
	wait_port "$(peer_port $p)" && wait_port "$(peer_port $p tls)"
}
peer_stop() { # name
	local p=$1 pid i
	pid=$(root_of "$p")
	[ -n "$pid" ] || return 0
	stop_pid "$pid"
	# Children left behind in the cgroup (connection handlers): by pid.
	if [ -n "$cgdir" ] && [ -f "$cgdir/$p/cgroup.procs" ]; then
		for i in $(cat "$cgdir/$p/cgroup.procs"); do kill -KILL "$i" 2>/dev/null; done
	fi
	case $p in exim) exim_pid="" ;; opensmtpd) opensmtpd_pid="" ;; esac
	for i in $(seq 1 100); do
		port_free "$(peer_port "$p")" && port_free "$(peer_port "$p" tls)" && return 0
		sleep 0.1
	done
	say "$p still listens on $(peer_port "$p") or $(peer_port "$p" tls) after stopping"
}
peer_stop_all() {
	local p
	for p in exim opensmtpd; do peer_stop $p; done
}
# Restarts peer $1 on an empty queue, set up for accepting only or ($2 =
# relay) for delivering too; drops it from the run if it does not come up.
peer_fresh() {
	peer_stop "$1"
	peer_start "$1" "${2:-accept}" && return 0
	peer_stop "$1"
	peer_drop "$1" "does not listen on $(peer_port "$1") and $(peer_port "$1" tls) (stderr: $(tail -n 3 "$work/$1/stderr" 2>/dev/null | tr '\n' ' '))"
	return 1
}
for p in $peers; do peer_fresh $p; done
say "extra peers: ${peers:-none}"
peer_version() {
	case $1 in
	exim) LD_LIBRARY_PATH="$peer_lib" "$exim_bin" -C "$exim_dir/exim.conf" -bV 2>/dev/null | awk '/^Exim version/ { print "Exim " $3; exit }' ;;
	opensmtpd) LD_LIBRARY_PATH="$peer_lib" "$osmtpd_bin" -h 2>&1 | awk '/^version:/ { print $2 " " $3; exit }' ;;
	esac
}

# ---------------------------------------------------------------- results
runs=${BENCH_RUNS:-3}
[ "$quick" = 1 ] && runs=1
results="$work/results" # lines: server workload run metric value
: > "$results"
record() { # server workload run metric value
	echo "$*" >> "$results"
	say "$*"
}

# ---------------------------------------------------------------- a, b, f: accept
# name size sessions messages(full) messages(quick)
workloads="
a-1k-s1    1024    1  3000  600
a-1k-s20   1024    20 20000 4000
a-100k-s1  102400  1  1000  300
a-100k-s20 102400  20 3000  1000
"

# One smtp-source run; records msg/s and CPU s/1000 msg.  -d keeps each
# session open for its share of the messages, so the figure is messages,
# not connections.
load() { # server port workload size sessions count run
	local server=$1 port=$2 wl=$3 size=$4 sess=$5 count=$6 run=$7
	local q0 c0 t0 t1 c1 q1 rc cg
	cg=$(cg_of "$server")
	q0=$(queued "$server")
	c0=$(cpu_usec "$cg" "$(root_of "$server")")
	t0=$(date +%s%N)
	timeout "$load_timeout" smtp-source -4 -d -s "$sess" -m "$count" -l "$size" -M bench.client \
		-f sender@example.org -t rcpt@bench.test 127.0.0.1:"$port" < /dev/null > "$work/source.out" 2>&1
	rc=$?
	t1=$(date +%s%N)
	c1=$(cpu_usec "$cg" "$(root_of "$server")")
	q1=$(queued "$server")
	if [ $rc != 0 ]; then
		say "$server $wl run $run: smtp-source failed (exit $rc): $(tail -n 3 "$work/source.out" | tr '\n' ' ')"
		record "$server" "$wl" "$run" msg/s FAIL
		return
	fi
	if [ "$server" != sink ] && [ $((q1 - q0)) -lt "$count" ]; then
		say "$server $wl run $run: only $((q1 - q0)) of $count messages are in the queue"
	fi
	record "$server" "$wl" "$run" msg/s "$(awk -v n="$count" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", n / ((t1 - t0) / 1e9) }')"
	record "$server" "$wl" "$run" cpu-s/1000msg "$(awk -v n="$count" -v c0="$c0" -v c1="$c1" 'BEGIN { printf "%.3f", (c1 - c0) / 1e6 * 1000 / n }')"
}

# Each run starts from an empty queue on every server, so that a figure does
# not depend on how much earlier runs left behind: sluice is restarted on
# an empty spool, Postfix's queue is emptied with postsuper.
start=$(date +%s)
while read -r wl size sess full qk; do
	[ -n "$wl" ] || continue
	count=$full
	[ "$quick" = 1 ] && count=$qk
	for run in $(seq 1 "$runs"); do
		# Servers take turns within each run, so that noise on the
		# shared machine spreads over all of them.  sluice-nogs is
		# sluice with spool_group_sync = no (one fdatasync per message).
		sluice_fresh sluice
		postsuper -c "$postfix_etc" -d ALL >/dev/null 2>&1
		load sluice $port_sluice "$wl" "$size" "$sess" "$count" "$run"
		sluice_fresh sluice-nogs
		load sluice-nogs $port_sluice "$wl" "$size" "$sess" "$count" "$run"
		load postfix $port_postfix "$wl" "$size" "$sess" "$count" "$run"
		# QUICK keeps the extra peers to a-1k-s20 (time budget).
		these=$peers
		[ "$quick" = 1 ] && [ "$wl" != a-1k-s20 ] && these=""
		for p in $these; do
			peer_fresh $p && load $p "$(peer_port $p)" "$wl" "$size" "$sess" "$count" "$run"
		done
		load sink $port_sink "$wl" "$size" "$sess" "$count" "$run"
	done
done <<WORKLOADS
$workloads
WORKLOADS
peer_stop_all

# ---------------------------------------------------------------- group commit: syscall counts
# strace -c on every sluice process (attached after start, so the workers
# and the runner are all traced) while 1,000 1 KB messages arrive over 20
# sessions; once with spool_group_sync = no, once with yes.
fsync_count() { # config name -> records fsync calls per 1000 messages
	local cfg=$1 n=1000 pids spid i
	sluice_fresh "$cfg"
	pids=$(server_pids sluice | sed 's/^/-p /' | tr '\n' ' ')
	strace -f -c -e trace=fdatasync,fsync,syncfs -o "$work/strace.$cfg" $pids 2>/dev/null &
	spid=$!
	pids_to_stop="$pids_to_stop $spid"
	sleep 1 # attached
	timeout "$load_timeout" smtp-source -4 -d -s 20 -m $n -l 1024 -M bench.client \
		-f sender@example.org -t rcpt@bench.test 127.0.0.1:"$port_sluice" < /dev/null > "$work/source.out" 2>&1 ||
		say "smtp-source failed under strace ($cfg)"
	sleep 0.5
	stop_pid "$spid" INT # strace prints its counts on SIGINT
	for sc in fdatasync fsync syncfs; do
		record "$cfg" a-1k-s20 1 "$sc/1000msg" \
			"$(awk -v s="$sc" -v n=$n '$NF == s { c = $4 } END { printf "%d", (c + 0) * 1000 / n }' "$work/strace.$cfg")"
	done
}
fsync_count sluice-nogs
fsync_count sluice

# ---------------------------------------------------------------- e: relay
# Accept on the server's port, deliver by SMTP to smtp-sink; from the first
# message sent until the sink has received the last one.  CPU is the whole
# server tree (accept + queue + delivery).
relay_count=10000
[ "$quick" = 1 ] && relay_count=2000
relay_timeout=$load_timeout
relay() { # server port run
	local server=$1 port=$2 run=$3 n=$relay_count r0 r1 c0 c1 t0 t1 cg i
	cg=$(cg_of "$server")
	r0=$(sink_received)
	c0=$(cpu_usec "$cg" "$(root_of "$server")")
	t0=$(date +%s%N)
	timeout "$relay_timeout" smtp-source -4 -d -s 20 -m "$n" -l 1024 -M bench.client \
		-f sender@example.org -t rcpt@fwd.test 127.0.0.1:"$port" < /dev/null > "$work/source.out" 2>&1 ||
		say "$server relay run $run: smtp-source failed: $(tail -n 2 "$work/source.out" | tr '\n' ' ')"
	for i in $(seq 1 $((relay_timeout * 20))); do
		r1=$(sink_received)
		[ $((r1 - r0)) -ge "$n" ] && break
		[ $(( ($(date +%s%N) - t0) / 1000000000 )) -ge "$relay_timeout" ] && break
		sleep 0.05
	done
	t1=$(date +%s%N)
	c1=$(cpu_usec "$cg" "$(root_of "$server")")
	if [ $((r1 - r0)) -lt "$n" ]; then
		say "$server relay run $run: the sink got $((r1 - r0)) of $n messages in ${relay_timeout}s"
		record "$server" e-relay-1k-s20 "$run" msg/s FAIL
		return
	fi
	record "$server" e-relay-1k-s20 "$run" msg/s "$(awk -v n="$n" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", n / ((t1 - t0) / 1e9) }')"
	record "$server" e-relay-1k-s20 "$run" cpu-s/1000msg "$(awk -v n="$n" -v c0="$c0" -v c1="$c1" 'BEGIN { printf "%.3f", (c1 - c0) / 1e6 * 1000 / n }')"
}
for run in $(seq 1 "$runs"); do
	sluice_fresh sluice-relay
	postsuper -c "$postfix_etc" -d ALL >/dev/null 2>&1
	relay sluice $port_sluice "$run"
	relay postfix $port_postfix "$run"
	# QUICK leaves the extra peers out of e (time budget: Exim alone
	# would take about 15 s).
	[ "$quick" = 1 ] && continue
	for p in $peers; do
		peer_fresh $p relay && relay $p "$(peer_port $p)" "$run"
		peer_stop $p
	done
done

# ---------------------------------------------------------------- c: TLS
# New TLS sessions per second on the implicit-TLS port, one message each,
# full handshake every time (no resumption), 16 client processes.
tls_count=5000
tls_secs=30
[ "$quick" = 1 ] && { tls_count=1000; tls_secs=10; }
tls() { # server port run
	local server=$1 port=$2 run=$3 c0 c1 out ok cg
	cg=$(cg_of "$server")
	c0=$(cpu_usec "$cg" "$(root_of "$server")")
	out=$(timeout $((tls_secs + 30)) "$bin/tls_client" 127.0.0.1 "$port" 16 "$tls_count" "$tls_secs" rcpt@bench.test)
	c1=$(cpu_usec "$cg" "$(root_of "$server")")
	say "$server tls run $run: $out"
	ok=$(echo "$out" | sed -n 's/.*ok=\([0-9]*\).*/\1/p')
	if [ -z "$ok" ] || [ "$ok" = 0 ] || echo "$out" | grep -qv 'failed=0 '; then
		say "$server tls run $run: failed sessions"
		[ -z "$ok" ] || [ "$ok" = 0 ] && { record "$server" c-tls-465 "$run" sessions/s FAIL; return; }
	fi
	record "$server" c-tls-465 "$run" sessions/s "$(echo "$out" | awk -F'[ =]' '{ printf "%.1f", $2 / $6 }')"
	record "$server" c-tls-465 "$run" cpu-ms/session "$(awk -v n="$ok" -v c0="$c0" -v c1="$c1" 'BEGIN { printf "%.3f", (c1 - c0) / 1e3 / n }')"
}
# A peer whose first session fails is not loaded (tls_client would retry
# for tls_secs): OpenSMTPD 6.8.0p2 linked with OpenSSL 3 fails every
# handshake ("EVP lib"; its key is held by another process, and OpenSSL 3
# no longer lets it reach that key), so it has no figure in c.
tls_probe() { # server port -> 0 when one session goes through
	local out
	out=$(timeout 20 "$bin/tls_client" 127.0.0.1 "$2" 1 1 5 rcpt@bench.test)
	case $out in *"ok=1 "*) return 0 ;; esac
	say "$1 tls: a single session fails ($out; log: $work/$1/stderr), left out of c"
	return 1
}
for run in $(seq 1 "$runs"); do
	sluice_fresh sluice
	postsuper -c "$postfix_etc" -d ALL >/dev/null 2>&1
	tls sluice $port_sluice_tls "$run"
	tls postfix $port_postfix_tls "$run"
	# QUICK leaves the extra peers out of c (time budget).
	[ "$quick" = 1 ] && continue
	for p in $peers; do
		peer_fresh $p || continue
		if tls_probe $p "$(peer_port $p tls)"; then
			tls $p "$(peer_port $p tls)" "$run"
		else
			record $p c-tls-465 "$run" sessions/s FAIL
		fi
	done
done
peer_stop_all

# ---------------------------------------------------------------- d: idle sessions
# PSS of every process of the server, before and while N sessions that
# have been greeted sit idle; sources 127.0.0.1-16.  Postfix and Exim run
# one process per session: 10,000 sessions are opened on a server other than
# sluice only when the memory they would take (measured at 1,000) fits three
# times in what is available.
# OpenSMTPD listens with a backlog of 5 (fixed in its code): a burst of
# connections overflows it, and the connections the kernel then completes
# with SYN cookies are dropped on the server's side while the client holds
# them as open, so they are never greeted.  Its sessions are therefore
# opened 4 at a time, by one idle_client per 4 sessions, each started once
# the previous one has been greeted.
idle_sizes="1000 10000"
[ "$quick" = 1 ] && idle_sizes="1000"
idle_batch_of() { case $1 in opensmtpd) echo 4 ;; *) echo 0 ;; esac; }
idle() { # server port n
	local server=$1 port=$2 n=$3 p0 p1 st cpid i b batch left k t0 t1 g wait_s=120
	batch=$(idle_batch_of "$server")
	# A batch of 4 is greeted in milliseconds: a short wait for each.
	if [ "$batch" -gt 0 ]; then wait_s=10; else batch=$n; fi
	p0=$(pss_kib "$server")
	rm -f "$work"/idle.status.*
	idle_pids=""
	t0=$(date +%s%N)
	b=0
	left=$n
	while [ "$left" -gt 0 ]; do
		b=$((b + 1))
		k=$batch
		[ "$k" -gt "$left" ] && k=$left
		left=$((left - k))
		"$bin/idle_client" 127.0.0.1 "$port" "$k" 16 "$wait_s" 300 "$work/idle.status.$b" &
		cpid=$!
		idle_pids="$idle_pids $cpid"
		for i in $(seq 1 $((wait_s * 100 + 1000))); do
			[ -f "$work/idle.status.$b" ] && break
			kill -0 "$cpid" 2>/dev/null || break
			sleep 0.01
		done
		# The server stopped greeting (its session limit): the sessions
		# not tried yet count as never answered.
		grep -q "greeted=$k " "$work/idle.status.$b" 2>/dev/null || break
	done
	t1=$(date +%s%N)
	sleep 1 # let forked processes settle
	p1=$(pss_kib "$server")
	# Summed over the batches; seconds: until the last batch was greeted.
	st=$(cat "$work"/idle.status.* 2>/dev/null | awk -v t0="$t0" -v t1="$t1" -v left="$left" '
		{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
		END { printf "greeted=%d refused=%d failed=%d pending=%d seconds=%.1f", v["greeted"], v["refused"], v["failed"], v["pending"] + left, (t1 - t0) / 1e9 }')
	for cpid in $idle_pids; do kill -TERM "$cpid" 2>/dev/null; done
	for cpid in $idle_pids; do wait "$cpid" 2>/dev/null; done
	idle_pids=""
	say "$server idle $n: PSS ${p0} KiB -> ${p1} KiB; $st"
	record "$server" "d-idle-$n" 1 pss-mib-total "$(awk -v p="$p1" 'BEGIN { printf "%.1f", p / 1024 }')"
	# Per session actually open: a server that refused some of the N has
	# fewer to hold.
	g=$(echo "$st" | sed -n 's/.*greeted=\([0-9]*\).*/\1/p')
	[ "${g:-0}" -gt 0 ] || g=$n
	record "$server" "d-idle-$n" 1 pss-kib/session "$(awk -v a="$p0" -v b="$p1" -v n="$g" 'BEGIN { printf "%.1f", (b - a) / n }')"
	for k in greeted refused failed pending; do
		record "$server" "d-idle-$n" 1 "$k" "$(echo "$st" | sed -n "s/.*$k=\([0-9]*\).*/\1/p")"
	done
}
# 0 when server $1 may take $2 idle sessions (see above).
idle_fits() {
	local per avail
	[ "$2" -gt 1000 ] || return 0
	per=$(awk -v s="$1" '$1 == s && $2 == "d-idle-1000" && $4 == "pss-kib/session" { print int($5) }' "$results")
	avail=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)
	if [ -z "$per" ] || [ $((per * $2 * 3)) -gt "$avail" ]; then
		say "$1 with $2 idle sessions skipped: about $((${per:-0} * $2 / 1024)) MiB needed, $((avail / 1024)) MiB available"
		return 1
	fi
}
for n in $idle_sizes; do
	sluice_fresh sluice
	idle sluice $port_sluice "$n"
	# Postfix is not restarted: its smtpd processes need time to exit
	# before the next size.
	idle_fits postfix "$n" && idle postfix $port_postfix "$n" && sleep 2
	for p in $peers; do
		idle_fits $p "$n" || continue
		peer_fresh $p && idle $p "$(peer_port $p)" "$n"
		peer_stop $p
	done
done
elapsed=$(($(date +%s) - start))

# ---------------------------------------------------------------- table
mkdir -p "$top/bench/results"
out="$top/bench/results/latest.txt"
{
	echo "sluice benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $( [ "$quick" = 1 ] && echo "QUICK=1 (1 run per figure)" || echo "median of $runs runs")"
	echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
	pv=""
	for p in $peers; do pv="$pv, $(peer_version $p)"; done
	echo "peers: Postfix $(postconf -d -h mail_version 2>/dev/null)$pv, smtp-sink (stores nothing); CPU: $cpu_method"
	echo "loads took ${elapsed}s"
	echo
	awk '
	function median(key,   n, i, j, t, v) {
		n = cnt[key]; if (n == 0) return "-"
		for (i = 1; i <= n; i++) v[i] = val[key, i]
		for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
		return v[int((n + 1) / 2)]
	}
	function ratio(a, b) { return (a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
	function m(s, w, x) { return median(s SUBSEP w SUBSEP x) }
	$5 != "FAIL" {
		k = $1 SUBSEP $2 SUBSEP $4; cnt[k]++; val[k, cnt[k]] = $5
		if (!(($2, $4) in seen)) { seen[$2, $4] = 1; order[++nr] = $2 SUBSEP $4 }
	}
	END {
		f = "%-15s %-16s | %10s %10s %6s | %10s %6s | %10s %6s | %10s %6s\n"
		printf f, "workload", "figure", "sluice", "postfix", "s/pf", "exim", "s/ex", "opensmtpd", "s/os", "smtp-sink", "s/sink"
		for (i = 1; i <= nr; i++) {
			split(order[i], a, SUBSEP); w = a[1]; x = a[2]
			if (x ~ /^(greeted|refused|failed|pending)$/ || x ~ /\/1000msg$/ && x !~ /^cpu/) continue
			s = m("sluice", w, x); p = m("postfix", w, x); k = m("sink", w, x)
			e = m("exim", w, x); o = m("opensmtpd", w, x)
			if (s == "-" && p == "-") continue
			printf f, w, x, s, p, ratio(s, p), e, ratio(s, e), o, ratio(s, o), k, ratio(s, k)
		}
		print ""
		print "group commit (sluice only): spool_group_sync = no -> yes"
		g = "%-15s %-16s | %10s %10s %6s\n"
		printf g, "workload", "figure", "no", "yes", "yes/no"
		for (i = 1; i <= nr; i++) {
			split(order[i], a, SUBSEP); w = a[1]; x = a[2]
			n0 = m("sluice-nogs", w, x); y = (x ~ /\/1000msg$/ && x !~ /^cpu/) ? m("sluice", w, x) : m("sluice", w, x)
			if (n0 == "-") continue
			printf g, w, x, n0, y, ratio(y, n0)
		}
		print ""
		print "idle sessions (d): greeted / refused / failed / never answered, of N"
		ns = split("sluice postfix exim opensmtpd", svs, " ")
		for (i = 1; i <= nr; i++) {
			split(order[i], a, SUBSEP); w = a[1]; x = a[2]
			if (x != "greeted") continue
			for (j = 1; j <= ns; j++) {
				sv = svs[j]
				if (m(sv, w, "greeted") == "-") continue
				printf "  %-15s %-10s %s / %s / %s / %s\n", w, sv, m(sv, w, "greeted"), m(sv, w, "refused"), m(sv, w, "failed"), m(sv, w, "pending")
			}
		}
	}' "$results"
	echo
	echo "s/pf = sluice / Postfix (msg/s, sessions/s: higher is better for sluice; CPU, PSS: lower is better)."
	echo "s/ex, s/os = sluice / Exim, sluice / OpenSMTPD (OpenSMTPD does not fsync its queue: its figures are an upper bound)."
	[ "$quick" = 1 ] && [ -n "$peers" ] && echo "QUICK: Exim and OpenSMTPD run in a-1k-s20 and d-idle-1000 only."
	echo "s/sink = sluice / smtp-sink ceiling.  Figures are comparable only within one run."
	echo "a-SIZE-sN: accept SIZE messages over N sessions; e-relay: accept + deliver by SMTP to smtp-sink, end to end;"
	echo "c-tls-465: new implicit-TLS sessions, one message each; d-idle-N: N greeted idle sessions (PSS of all processes)."
	grep -q '^opensmtpd c-tls-465 .* FAIL$' "$results" &&
		echo "OpenSMTPD c-tls-465: no TLS session succeeded (6.8.0p2 with OpenSSL 3 fails every handshake, see docs/performance.md)."
	if grep -q FAIL "$results"; then
		echo "failed runs (left out of the medians):"
		grep FAIL "$results" | awk '{ print "  " $1 " " $2 " run " $3 }'
	fi
} > "$out.tmp"
mv "$out.tmp" "$out"
cp "$results" "$top/bench/results/latest-runs.txt"
cat "$out"
