#!/usr/bin/env bash
# Runs every test and prints one closing line "N passed, N failed, N skipped".
#   tests/run.sh           unit tests (plain + ASan/UBSan), then tests/t_*.sh
#   tests/run.sh --unit    unit tests only
#   tests/run.sh t_foo     only the scripts whose name contains t_foo
# Unit programs are cmocka; their own per-case counts are added up. A script
# passes with exit 0, fails with any other code except 77, which means it
# could not run here (counted as skipped, never as passed).
set -u
cd "$(dirname "$0")/.."
pass=0 fail=0 skip=0 failed=()
log_dir=build/test-logs
mkdir -p "$log_dir"

run_unit() { # $1: program, $2: optional NAME=VALUE to run it with (logged apart)
    local prog=$1 env=${2:-} name out p f
    name=$(echo "$prog${env:+-$env}" | tr /= __)
    out="$log_dir/$name.log"
    if env $env "$prog" >"$out" 2>&1; then :; fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
    p=${p:-0} f=${f:-0}
    # A program that crashed before cmocka's summary is one failure.
    if ! grep -q '^\[==========\] .* \(ran\|run\)\.' "$out"; then f=$((f + 1)); fi
    pass=$((pass + p)) fail=$((fail + f))
    if [ "$f" -gt 0 ]; then failed+=("$prog $env"); echo "FAIL $prog $env ($out)"; sed 's/^/    /' "$out" | tail -30;
    else echo "ok   $prog${env:+ ($env)} ($p cases)"; fi
}

run_script() { # $1: script
    local s=$1 out rc t0 t1
    out="$log_dir/$(basename "$s").log"
    t0=$(date +%s)
    bash "$s" >"$out" 2>&1; rc=$?
    t1=$(date +%s)
    case $rc in
        0) pass=$((pass + 1)); echo "ok   $s ($((t1 - t0)) s)" ;;
        77) skip=$((skip + 1)); echo "SKIP $s: $(tail -1 "$out")" ;;
        *) fail=$((fail + 1)); failed+=("$s"); echo "FAIL $s (exit $rc, $out)"; sed 's/^/    /' "$out" | tail -40 ;;
    esac
}

mode=${1:-all}
if [ "$mode" = all ] || [ "$mode" = --unit ]; then
    for p in build/tests/test_* build/asan/tests/test_*; do
        [ -x "$p" ] && run_unit "$p"
    done
    # The wire's C code paths whole, as on a CPU without F16C or AVX-512 (here
    # they only do the tails of the vector loops).
    [ -x build/tests/test_wire ] && run_unit build/tests/test_wire SPLITINFER_SIMD=off
fi
if [ "$mode" != --unit ]; then
    for s in tests/t_*.sh; do
        [ -e "$s" ] || continue
        case $mode in all) ;; *) [[ "$s" == *"$mode"* ]] || continue ;; esac
        run_script "$s"
    done
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
