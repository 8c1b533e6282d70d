#!/usr/bin/env bash
# CPU AWQ against CPU GPTQ, side by side, on the same calibration windows: both with their default
# settings (AWQ: awq_scale best, the default awq_search_samples, clipping; GPTQ: w4 g128 sym,
# true-sequential), the same model, the same --calib/--nsamples/--seqlen/--seed/--sampling/--threads.
# Prints each wall time with its phases, and the ratio AWQ / GPTQ (issue 12's target: <= 2 on
# qcal-llama-25m, 128 x 512), plus the AWQ formula count and the load average before and after, since
# a shared machine slows both runs (not necessarily equally).
#
# Usage: benchmarks/bench_awq_cpu.sh [BUILD_DIR] [extra flags for both runs, e.g. --nsamples 32]
#        AWQ_FLAGS="--awq-search-samples all" benchmarks/bench_awq_cpu.sh build   # flags for AWQ only
#        KEEP=DIR keeps both checkpoints (DIR/gptq, DIR/awq) and their logs
# Defaults: --model $QCAL_DATA/qcal-llama-25m --calib $QCAL_DATA/text/c4.utf8 --nsamples 128 --seqlen 512
#           --seed 0 --sampling gptq --threads 2 (later flags override earlier ones: pass your own after).
# --sampling gptq for both: AWQ's default sampling (concatenated documents) would give other windows.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}; shift || true
D=${QCAL_DATA:-../shared/data}
if [[ -n ${KEEP:-} ]]; then T=$KEEP; mkdir -p "$T"; else T=$(mktemp -d); trap 'rm -rf "$T"' EXIT; fi
common=(--model "$D/qcal-llama-25m" --calib "$D/text/c4.utf8" --nsamples 128 --seqlen 512 --seed 0 --sampling gptq
        --threads 2 "$@")
read -r -a awq_flags <<<"${AWQ_FLAGS:-}"

run() { # name flags...
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$B/qcal" quantize "${common[@]}" "$@" --out "$T/$name" >"$T/$name.log" 2>&1 || { cat "$T/$name.log"; exit 1; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" >"$T/$name.wall"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
run gptq --method gptq
echo "load between: $(cut -d' ' -f1-3 /proc/loadavg)"
run awq --method awq "${awq_flags[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$T" "${common[*]}" "${awq_flags[*]}" <<'PY'
import json, re, sys
T, common, awq_flags = sys.argv[1], sys.argv[2], sys.argv[3]
res = {}
for name in ("gptq", "awq"):
    t0, t1 = map(float, open(f"{T}/{name}.wall").read().split())
    r = json.load(open(f"{T}/{name}/qcal_report.json"))
    res[name] = (t1 - t0, r)
    s = r["seconds"]
    print(f"{name:4s} wall {t1 - t0:7.1f} s  (forward {s['forward']:.1f}, Hessians {s['hessian']:.1f}, "
          f"solve {s['solve']:.1f}, pack/write {s['pack_write']:.1f})")
m = re.search(r"^awq: .*$", open(f"{T}/awq.log").read(), re.M)
if m: print(m.group(0))
print(f"ratio AWQ / GPTQ: {res['awq'][0] / res['gptq'][0]:.2f}")
print(f"command: qcal quantize {common} --method gptq|awq {awq_flags}".rstrip())
PY
