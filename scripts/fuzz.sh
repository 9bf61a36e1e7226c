#!/bin/sh
# Runs every libFuzzer target for the given number of seconds each, starting
# from the seed corpus in tests/fuzz/corpus/<target> (kept in a scratch copy
# so that runs never write into the source tree).
# usage: fuzz.sh BUILD_DIR SECONDS  -> prints one line per target, exits 1 on a finding
build=$1
secs=$2
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
fail=0
for bin in "$build"/fuzz_*; do
	[ -f "$bin" ] && [ -x "$bin" ] || continue
	name=$(basename "$bin" | sed 's/^fuzz_//')
	mkdir -p "$work/$name"
	[ -d "$src/tests/fuzz/corpus/$name" ] && cp -r "$src/tests/fuzz/corpus/$name/." "$work/$name/" 2>/dev/null
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
		-artifact_prefix="$work/crash-$name-" "$work/$name" >"$work/$name.log" 2>&1; then
		echo "fuzz $name: ok ($secs s)"
	else
		echo "fuzz $name: FAILED"
		tail -n 40 "$work/$name.log"
		fail=1
	fi
done
rm -rf "$work"
exit $fail
