#!/usr/bin/env bash
# Installs what is missing, builds qcal and runs every test:
#   1. Release build: all CTest tests (unit, model: forward pass and perplexity vs transformers, CLI)
#   2. ASan+UBSan build: the unit tests
#   3. clang libFuzzer build: short fuzz runs of the untrusted-input parsers
# Usage: scripts/test.sh [--quick]   (--quick: unit tests of the Release build only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --with-fuzz
jobs=$(nproc 2>/dev/null || echo 2)
log=$(mktemp); trap 'rm -f "$log"' EXIT
total_pass=0; total_fail=0
run_ctest() { # run_ctest BUILD_DIR [ctest args...]
    local dir=$1; shift
    set +e
    (cd "$dir" && ctest --output-on-failure "$@") 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    set -e
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
echo "suites: $total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 ]]
