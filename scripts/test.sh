#!/usr/bin/env bash
# Installs what is missing, builds qcal and runs every test:
#   1. Release build: all CTest tests (unit, model: forward pass and perplexity vs transformers, CLI)
#   2. ASan+UBSan build: the unit tests
#   3. clang libFuzzer build: short fuzz runs of the untrusted-input parsers
# Tests that need data which is not there (the reference data in $QCAL_DATA, default ../shared/data beside
# the clone; a GPU) are skipped, and listed at the end by name with the reason they printed. What the
# repository ships in examples/ (stories260K and its texts) is always there.
# Usage: scripts/test.sh [--quick]   (--quick: unit tests of the Release build only); from any directory
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh --with-fuzz
jobs=$(nproc 2>/dev/null || echo 2)
log=$(mktemp); trap 'rm -f "$log"' EXIT
total_pass=0; total_fail=0
skipped=()
# note_skipped BUILD_DIR: each test of the last ctest run that did not run, with the SKIP line it printed,
# and each test that ran but skipped some of its cases (a SKIP line in its output), with those lines
note_skipped() {
    local dir=$1 name reason
    local notrun; notrun=$(sed -n 's/^[[:space:]]*[0-9][0-9]* - \(.*\) (\(Skipped\|Not Run\|Disabled\))$/\1/p' "$log")
    while IFS=$'\t' read -r name reason; do
        [[ -n $name ]] || continue
        if grep -qxF "$name" <<<"$notrun"; then
            skipped+=("$(printf '%-32s %s' "$name" "$reason")")
        else
            skipped+=("$(printf '%-32s %s' "$name (some cases)" "$reason")")
        fi
    done < <(awk '
        /^[0-9]+\/[0-9]+ Test: / { t = $0; sub(/^[0-9]+\/[0-9]+ Test: /, "", t); out = 0; next }
        /^Output:$/ { out = 1; next }
        /^<end of output>$/ { out = 0; next }
        out && /^ *SKIP/ { r = $0; sub(/^ *SKIP[^:]*: */, "", r); said[t] = 1; if (!((t, r) in seen)) { seen[t, r] = 1; print t "\t" r } }
        out && /^\[  SKIPPED \] [A-Za-z0-9_]+$/ { c = $0; sub(/^\[  SKIPPED \] /, "", c); cases[t] = cases[t] " " c }
        END { for (t in cases) if (!(t in said)) print t "\tcases skipped without a reason:" cases[t] }' \
        "$dir/Testing/Temporary/LastTest.log" 2>/dev/null)
    while IFS= read -r name; do   # skipped without saying why
        [[ -n $name ]] || continue
        printf '%s\n' "${skipped[@]}" | grep -q "^$name " || skipped+=("$(printf '%-32s %s' "$name" "(it printed no reason)")")
    done <<<"$notrun"
}
run_ctest() { # run_ctest BUILD_DIR [ctest args...]
    local dir=$1; shift
    set +e
    (cd "$dir" && ctest --output-on-failure "$@") 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
    note_skipped "$dir"
    local line; line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -n 1 || true)
    if [[ $line =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
        total_fail=$((total_fail + BASH_REMATCH[1]))
        total_pass=$((total_pass + BASH_REMATCH[2] - BASH_REMATCH[1]))
    elif [[ $rc -ne 0 ]]; then
        total_fail=$((total_fail + 1))
    fi
}

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
# The CUDA build must compile wherever nvcc is (CI has nvcc but no GPU: its `gpu` tests run on a GPU
# machine, see README). Counted as one suite: the build succeeding.
nvcc_bin=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [[ -n "$nvcc_bin" ]]; then
    echo "== CUDA build (QCAL_CUDA=ON, sm_90) with $nvcc_bin"
    if cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DQCAL_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
            -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null && cmake --build build-cuda -j"$jobs"; then
        total_pass=$((total_pass + 1))
        if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
            run_ctest build-cuda -L gpu
        else
            echo "== no GPU here: the gpu-labelled tests are compiled, not run"
        fi
    else
        echo "CUDA build FAILED"; total_fail=$((total_fail + 1))
    fi
else
    echo "== nvcc not found: the CUDA build is NOT checked here"
fi

if [[ "${1:-}" == "--quick" ]]; then
    run_ctest build -L unit
else
    run_ctest build -LE fuzz
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DQCAL_SANITIZE=ON >/dev/null
    cmake --build build-asan -j"$jobs"
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest build-asan -L unit
    CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DQCAL_FUZZ=ON >/dev/null
    cmake --build build-fuzz -j"$jobs" --target qcal_fuzz_all
    run_ctest build-fuzz -L fuzz
fi
echo
if [[ ${#skipped[@]} -gt 0 ]]; then
    echo "skipped tests (${#skipped[@]}), each with its reason:"
    printf '  %s\n' "${skipped[@]}"
else
    echo "skipped tests: none"
fi
echo "suites: $total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 ]]
