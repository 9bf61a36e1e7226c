#!/bin/bash
# `make bench`: runs the same loads against sluice, Postfix and smtp-sink on
# loopback, in turn, and prints one table (also written to
# bench/results/latest.txt).  See docs/performance.md for the method.
#
# usage: bench/run.sh [path/to/sluice]      (default: build/sluice)
# environment: QUICK=1      one run per figure and fewer messages (< 2 min)
#              BENCH_PORT   first of three loopback ports (default 24025)
#              BENCH_RUNS   runs per figure, the median is kept (default 3)
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
load_timeout=300 # seconds, per smtp-source run
[ "$quick" = 1 ] && load_timeout=60

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

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
need_pkgs postfix procps iproute2

for b in smtp-source smtp-sink postfix postconf; do
	command -v $b >/dev/null 2>&1 || die "$b not found after installing postfix"
done

# ---------------------------------------------------------------- workspace
work=$(mktemp -d /tmp/sluice-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$work" # Postfix's and sluice's unprivileged users must reach it
cgroot=""
cgdir=""
pids_to_stop=""
postfix_etc=""
postfix_pid=""

cleanup() {
	local p
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
}
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

for p in $port_sluice $port_postfix $port_sink; do
	port_free $p || die "port $p is in use (set BENCH_PORT)"
done

# ---------------------------------------------------------------- servers
user=nobody
sluice_dir="$work/sluice"
mkdir -p "$sluice_dir"
chmod 755 "$sluice_dir"
sed -e "s|@DIR@|$sluice_dir|g" -e "s|@PORT@|$port_sluice|g" -e "s|@USER@|$user|g" \
	"$conf/sluice.conf.in" > "$sluice_dir/sluice.conf"
"$sluice" -C "$sluice_dir/sluice.conf" -bV >/dev/null || die "sluice refuses the benchmark configuration"
sluice_pid=""
sluice_start() {
	spawn_in sluice "$sluice" -C "$sluice_dir/sluice.conf" -bdf
	sluice_pid=$spawned
	pids_to_stop="$pids_to_stop $sluice_pid"
	wait_port $port_sluice || die "sluice does not listen on $port_sluice (log: $sluice_dir/sluice.log)"
}
sluice_stop() {
	local i
	kill -TERM "$sluice_pid" 2>/dev/null
	for i in $(seq 1 100); do
		kill -0 "$sluice_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$sluice_pid" 2>/dev/null
	wait "$sluice_pid" 2>/dev/null
	pids_to_stop=$(echo "$pids_to_stop" | tr ' ' '\n' | grep -vx "$sluice_pid" | tr '\n' ' ')
	for i in $(seq 1 100); do
		port_free $port_sluice && return 0
		sleep 0.1
	done
	die "sluice still listens on $port_sluice after stopping"
}
sluice_start

pf="$work/postfix"
postfix_etc_new="$pf/etc"
mkdir -p "$postfix_etc_new" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
sed -e "s|@DIR@|$pf|g" "$conf/postfix-main.cf.in" > "$postfix_etc_new/main.cf"
sed -e "s|@PORT@|$port_postfix|g" "$conf/postfix-master.cf.in" > "$postfix_etc_new/master.cf"
[ -f /etc/postfix/dynamicmaps.cf ] && cp /etc/postfix/dynamicmaps.cf "$postfix_etc_new/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$postfix_etc_new/"
postfix_etc=$postfix_etc_new
postfix -c "$postfix_etc" check >/dev/null 2>&1 # creates the queue directories
run_in postfix postfix -c "$postfix_etc" start >/dev/null 2>&1
wait_port $port_postfix || die "Postfix does not listen on $port_postfix (log: $pf/maillog)"
postfix_pid=$(tr -d ' ' < "$pf/queue/pid/master.pid" 2>/dev/null)

mkdir -p "$work/sink"
spawn_in sink smtp-sink -u nobody -h bench.test 127.0.0.1:$port_sink 1024
sink_pid=$spawned
pids_to_stop="$pids_to_stop $sink_pid"
wait_port $port_sink || die "smtp-sink does not listen on $port_sink"

# Messages now in each server's queue: a check that what got 250 is there.
queued() {
	case $1 in
	sluice) find "$sluice_dir/spool/queue" -type f 2>/dev/null | wc -l ;;
	postfix) find "$pf/queue/hold" "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" -type f 2>/dev/null | wc -l ;;
	*) echo 0 ;;
	esac
}

# ---------------------------------------------------------------- workloads
# name size sessions messages(full) messages(quick)
workloads="
a-1k-s1    1024    1  3000  1000
a-1k-s20   1024    20 20000 5000
a-100k-s1  102400  1  1000  300
a-100k-s20 102400  20 3000  1000
"
runs=${BENCH_RUNS:-3}
[ "$quick" = 1 ] && runs=1

results="$work/results" # lines: server workload run msgs_per_s cpu_s_per_1000
: > "$results"

# One smtp-source run; appends a result line.  -d keeps each session open
# for its share of the messages, so the figure is messages, not connections.
load() { # server port workload size sessions count run
	local server=$1 port=$2 wl=$3 size=$4 sess=$5 count=$6 run=$7
	local root=$sluice_pid
	[ "$server" = postfix ] && root=$postfix_pid
	[ "$server" = sink ] && root=$sink_pid
	local q0 c0 t0 t1 c1 q1 rc
	q0=$(queued "$server")
	c0=$(cpu_usec "$server" "$root")
	t0=$(date +%s%N)
	timeout "$load_timeout" smtp-source -4 -d -s "$sess" -m "$count" -l "$size" -M bench.client \
		-f sender@example.org -t rcpt@bench.test 127.0.0.1:"$port" < /dev/null > "$work/source.out" 2>&1
	rc=$?
	t1=$(date +%s%N)
	c1=$(cpu_usec "$server" "$root")
	q1=$(queued "$server")
	if [ $rc != 0 ]; then
		say "$server $wl run $run: smtp-source failed (exit $rc): $(tail -n 3 "$work/source.out" | tr '\n' ' ')"
		echo "$server $wl $run FAIL FAIL" >> "$results"
		return
	fi
	if [ "$server" != sink ] && [ $((q1 - q0)) -lt "$count" ]; then
		say "$server $wl run $run: only $((q1 - q0)) of $count messages are in the queue"
	fi
	awk -v s="$server" -v w="$wl" -v r="$run" -v n="$count" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" \
		'BEGIN { dt = (t1 - t0) / 1e9; printf "%s %s %s %.1f %.3f\n", s, w, r, n / dt, (c1 - c0) / 1e6 * 1000 / n }' \
		>> "$results"
	say "$(tail -n 1 "$results")"
}

# Each run starts from an empty queue on every server, so that a figure does
# not depend on how much earlier runs left behind: sluice is restarted on
# an empty spool, Postfix's queue is emptied with postsuper.
reset_queues() {
	sluice_stop
	rm -rf "$sluice_dir/spool"
	sluice_start
	postsuper -c "$postfix_etc" -d ALL >/dev/null 2>&1
}

start=$(date +%s)
while read -r wl size sess full qk; do
	[ -n "$wl" ] || continue
	count=$full
	[ "$quick" = 1 ] && count=$qk
	for run in $(seq 1 "$runs"); do
		# Servers take turns within each run, so that noise on the
		# shared machine spreads over all of them.
		reset_queues
		load sluice $port_sluice "$wl" "$size" "$sess" "$count" "$run"
		load postfix $port_postfix "$wl" "$size" "$sess" "$count" "$run"
		load sink $port_sink "$wl" "$size" "$sess" "$count" "$run"
	done
done <<WORKLOADS
$workloads
WORKLOADS
elapsed=$(($(date +%s) - start))

# ---------------------------------------------------------------- table
mkdir -p "$top/bench/results"
out="$top/bench/results/latest.txt"
{
	echo "sluice benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $( [ "$quick" = 1 ] && echo "QUICK=1 (1 run per figure)" || echo "median of $runs runs")"
	echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
	echo "peers: Postfix $(postconf -d -h mail_version 2>/dev/null), smtp-sink (stores nothing); CPU: $cpu_method"
	echo "loads took ${elapsed}s; workload a-SIZE-sN = accept SIZE messages over N concurrent sessions (smtp-source -d)"
	echo
	awk '
	function median(key,   n, i, j, t, v) {
		n = cnt[key]; if (n == 0) return "-"
		for (i = 1; i <= n; i++) v[i] = val[key, i]
		for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
		return v[int((n + 1) / 2)]
	}
	function ratio(a, b) { return (a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
	$4 != "FAIL" {
		k = $1 SUBSEP $2 SUBSEP "r"; cnt[k]++; val[k, cnt[k]] = $4
		k = $1 SUBSEP $2 SUBSEP "c"; cnt[k]++; val[k, cnt[k]] = $5
		if (!($2 in seen)) { seen[$2] = 1; order[++nw] = $2 }
	}
	END {
		printf "%-11s | %10s %10s %8s %10s %8s | %12s %12s %8s\n", "workload", "sluice", "postfix", "s/pf", "smtp-sink", "s/sink", "sluice CPU", "postfix CPU", "s/pf"
		printf "%-11s | %10s %10s %8s %10s %8s | %12s %12s %8s\n", "", "msg/s", "msg/s", "", "msg/s", "", "s/1000 msg", "s/1000 msg", ""
		for (i = 1; i <= nw; i++) {
			w = order[i]
			sr = median("sluice" SUBSEP w SUBSEP "r"); pr = median("postfix" SUBSEP w SUBSEP "r"); kr = median("sink" SUBSEP w SUBSEP "r")
			sc = median("sluice" SUBSEP w SUBSEP "c"); pc = median("postfix" SUBSEP w SUBSEP "c")
			printf "%-11s | %10s %10s %8s %10s %8s | %12s %12s %8s\n", w, sr, pr, ratio(sr, pr), kr, ratio(sr, kr), sc, pc, ratio(sc, pc)
		}
	}' "$results"
	echo
	echo "s/pf = sluice / Postfix (throughput: higher is better for sluice; CPU: lower is better)."
	echo "s/sink = sluice / smtp-sink ceiling.  Figures are comparable only within one run."
	if grep -q FAIL "$results"; then
		echo "failed runs (left out of the medians):"
		grep FAIL "$results" | awk '{ print "  " $1 " " $2 " run " $3 }'
	fi
} > "$out.tmp"
mv "$out.tmp" "$out"
cp "$results" "$top/bench/results/latest-runs.txt"
cat "$out"
