#!/bin/sh
# Runs every test: cmocka unit tests (each case counted), golden transcripts,
# a short libFuzzer smoke run of each target, and the pytest integration
# suite against the sanitizer build of the daemon.  Ends with one line
# "N passed, N failed" and exits non-zero if anything failed.
# usage: run-tests.sh TEST_BUILD_DIR FUZZ_BUILD_DIR
set -u
tb=$1
fb=$2
src=$(cd "$(dirname "$0")/.." && pwd)
pass=0
fail=0
log=$(mktemp)
export ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

count_tap() { # name, tap file
	p=$(grep -c '^ok ' "$2")
	f=$(grep -c '^not ok ' "$2")
	pass=$((pass + p))
	fail=$((fail + f))
	echo "unit $1: $p passed, $f failed"
}

echo "== unit tests"
for t in "$tb"/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=$(basename "$t")
	args=""
	[ "$name" = test_conf ] && args="$src/docs/configuration.md"
	CMOCKA_MESSAGE_OUTPUT=TAP "$t" $args >"$log" 2>&1
	rc=$?
	count_tap "$name" "$log"
	if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
		echo "unit $name: exited $rc"; fail=$((fail + 1))
	fi
	grep -E '^not ok |ERROR|runtime error' "$log" | head -n 20
done

echo "== golden transcripts"
if "$src/tests/golden/run.sh" "$tb/golden_replay" "$src/tests/golden" >"$log" 2>&1; then
	pass=$((pass + 1)); echo "golden: ok"
else
	fail=$((fail + 1)); echo "golden: FAILED"; tail -n 40 "$log"
fi

echo "== fuzz smoke"
"$src/scripts/fuzz.sh" "$fb" "${FUZZ_SMOKE_SECONDS:-15}" >"$log" 2>&1
cat "$log"
p=$(grep -c ': ok' "$log"); f=$(grep -c ': FAILED' "$log")
pass=$((pass + p)); fail=$((fail + f))

echo "== integration tests"
xml=$(mktemp)
SLUICE_BIN="$src/$tb/sluice"
[ -x "$SLUICE_BIN" ] || SLUICE_BIN="$tb/sluice"
export SLUICE_BIN
(cd "$src" && /usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$xml" tests/integration)
rc=$?
if [ -s "$xml" ]; then
	set -- $(/usr/bin/python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == 'testsuite' else r.findall('testsuite')
t = sum(int(s.get('tests', 0)) for s in suites)
f = sum(int(s.get('failures', 0)) + int(s.get('errors', 0)) for s in suites)
sk = sum(int(s.get('skipped', 0)) for s in suites)
print(t - f - sk, f)
PY
)
	pass=$((pass + $1)); fail=$((fail + $2))
	[ "$rc" -ne 0 ] && [ "$2" -eq 0 ] && fail=$((fail + 1))
else
	echo "integration: pytest produced no report (exit $rc)"; fail=$((fail + 1))
fi
rm -f "$log" "$xml"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
