#!/bin/sh
# Replays every *.in transcript through the state machine and compares the
# result with its *.ref.  Regenerate one with: golden_replay -w FILE.in
# usage: run.sh REPLAY_BINARY GOLDEN_DIR
set -u
bin=$1
dir=$2
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
fail=0
n=0
for f in "$dir"/*.in; do
	[ -e "$f" ] || continue
	n=$((n + 1))
	ref=${f%.in}.ref
	if ! "$bin" "$f" >"$tmp"; then
		echo "golden $(basename "$f"): replay failed"
		fail=1
		continue
	fi
	if [ ! -f "$ref" ]; then
		echo "golden $(basename "$f"): no $(basename "$ref")"
		fail=1
	elif ! diff -u "$ref" "$tmp"; then
		echo "golden $(basename "$f"): differs from $(basename "$ref")"
		fail=1
	else
		echo "golden $(basename "$f"): ok"
	fi
done
if [ "$n" -eq 0 ]; then
	echo "golden: no transcripts in $dir"
	exit 1
fi
exit $fail
