#!/usr/bin/env bash
# The preflight plan (calib/plan.h) against real runs: for each case, plan_probe's prediction (the figures
# `qcal quantize --plan` will print), then the run itself, and the measured figures beside it:
#   host RAM   predicted host_peak        vs  getrusage maxrss (/usr/bin/time %M) and qcal_report.json peak_rss_bytes
#   GPU        predicted gpu_peak/gpu_own vs  qcal_report.json gpu_peak_device_bytes / gpu_peak_bytes
#   work dir   predicted work_disk_final  vs  du -sb of the kept work dir (--keep-work); work_disk (peak,
#              two activation snapshots while one replaces the other) vs the largest du -sb seen while it ran
#   checkpoint predicted out_disk         vs  du -sb of the output
# A figure passes within 15% ("ok*": the work dir's peak lasts while the next snapshot is written, which the
# 0.1 s sampling can miss for a small X; the figure without it is within 15%). The activation snapshot (x.bin) exists only in builds with resume support
# (calib/resume.c) and only for the drivers that write it: when the work dir holds no x.bin, the
# predicted work dir figures are compared without it (the line says "no x.bin").
#
#   benchmarks/bench_plan.sh cpu [BUILD_DIR]             qcal-llama-25m on the CPU: GPTQ 128x512, GPTQ 64x2048,
#                                                        AWQ, GPTQ 128x512 with --eval (a few minutes on 2 cores)
#   benchmarks/bench_plan.sh gpu [BUILD_DIR] [LAYERS...]  qcal synth --like llama-3.1-8b with LAYERS decoder layers
#                                                        (default: 32 and 4), GPTQ w4g128 128 x 2048 --device cuda
#                                                        (GPU_AWQ=1: AWQ w4g128 128 x 512 too)
# Environment: QCAL_DATA (../shared/data), WORK (scratch; the 32-layer 8B model takes 16 GB, its run ~15 GB more),
# TEXT (calibration text for gpu mode; default $QCAL_DATA/text/wiki.test.raw), CASES (cpu: names to run, e.g.
# "gptq512 awq"), THREADS (--threads for cpu mode).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: bench_plan.sh cpu|gpu [BUILD_DIR] [LAYERS...]}
B=${2:-build}
shift $(( $# >= 2 ? 2 : $# )) || true
D=${QCAL_DATA:-../shared/data}
WORK=${WORK:-/tmp/qcal-bench-plan}
mkdir -p "$WORK"
QCAL="$B/qcal"
PROBE="$B/benchmarks/plan_probe"
[[ -x $QCAL && -x $PROBE ]] || { echo "bench_plan.sh: build $QCAL and $PROBE first (cmake --build $B --target qcal plan_probe)" >&2; exit 1; }
RESULTS="$WORK/results.txt"
: >"$RESULTS"

# maxrss FILE CMD...: runs CMD, writes its peak RSS in KiB (getrusage's maxrss, what /usr/bin/time %M prints)
maxrss() {
    local f=$1; shift
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f "%M" -o "$f" "$@"
    else
        python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)' "$f" "$@"
    fi
}

# run_case NAME MODEL CALIB_FLAGS... -- QUANTIZE_FLAGS...
# CALIB_FLAGS go to `qcal calib` (to learn how many windows the sampler really draws) and to quantize.
run_case() {
    local name=$1 model=$2; shift 2
    local calib=() flags=()
    while [[ $1 != -- ]]; do calib+=("$1"); shift; done
    shift
    flags=("$@")
    local out="$WORK/$name" work="$WORK/$name.qcal-work"
    rm -rf "$out" "$work" "$out.qcal-lock"
    # the windows actually drawn (the AWQ protocol may cut fewer blocks than --nsamples)
    local drawn
    drawn=$("$QCAL" calib --tokenizer "$model" "${calib[@]}" 2>&1 | sed -n 's/^calibration: \([0-9]*\) x \([0-9]*\) tokens.*/\1 \2/p' | head -n 1)
    [[ -n $drawn ]] || { echo "bench_plan.sh: qcal calib failed for $name" >&2; return 1; }
    local ns=${drawn% *} sl=${drawn#* }
    local pflags=() skip=0
    for a in "${calib[@]}" "${flags[@]}"; do # the probe takes the quantize flags, not the calibration source
        if ((skip)); then skip=0; continue; fi
        case $a in --calib|--sampling|--seed|--nsamples|--seqlen) skip=1; continue ;; --quiet|--keep-work|*.yaml) continue ;; esac
        pflags+=("$a")
    done
    "$PROBE" --model "$model" --out "$out" --work-dir "$work" --nsamples "$ns" --seqlen "$sl" "${pflags[@]}" \
        >"$WORK/$name.plan" 2>&1 || { cat "$WORK/$name.plan" >&2; echo "bench_plan.sh: $name: the plan refuses the run" >&2; }
    # the run, with the work dir's size sampled while it runs (the snapshot's peak is short-lived)
    ( set +e +o pipefail; peak=0
      while :; do s=$(du -sb "$work" 2>/dev/null | cut -f1); s=${s:-0}
          if ((s > peak)); then peak=$s; echo "$peak" >"$WORK/$name.duwork"; fi; sleep 0.1; done ) &
    local watcher=$!
    local t0=$SECONDS
    maxrss "$WORK/$name.maxrss" "$QCAL" quantize --model "$model" --out "$out" --work-dir "$work" \
        --keep-work --quiet "${calib[@]}" "${flags[@]}" >"$WORK/$name.log" 2>&1 || { kill "$watcher" 2>/dev/null; cat "$WORK/$name.log" >&2; return 1; }
    local wall=$((SECONDS - t0))
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    local du_out du_work has_x=0
    du_out=$(du -sb "$out" | cut -f1)
    du_work=$(du -sb "$work" | cut -f1)
    if [[ -f $work/x.bin ]]; then has_x=1; fi
    python3 - "$name" "$WORK/$name.plan" "$out/qcal_report.json" "$WORK/$name.maxrss" "$du_out" "$du_work" \
        "$(cat "$WORK/$name.duwork" 2>/dev/null || echo 0)" "$has_x" "$ns" "$sl" "$wall" "$model/config.json" <<'PY' | tee -a "$RESULTS"
import json, sys
name, planf, repf, rssf, du_out, du_work, du_peak, has_x, ns, sl, wall, cfgf = sys.argv[1:]
plan = json.loads([l for l in open(planf) if l.startswith("{")][-1])
rep = json.load(open(repf))
cfg = json.load(open(cfgf))
rss = int(open(rssf).read().split()[-1]) * 1024
rows, d = int(ns) * int(sl), cfg["hidden_size"]
x = 64 + rows * d * 4
pw, pwf = plan["work_disk"], plan["work_disk_final"]
note = ""
if has_x == "0":  # no activation snapshot written by this build/driver: compare without it
    pw, pwf = pw - 2 * x, pwf - x
    note = " (no x.bin: predicted without the snapshot)"
rows_out = []
def line(what, pred, meas, alt=None):
    r = pred / meas - 1 if meas else float("nan")
    ok = "ok" if abs(r) <= 0.15 else "OFF"
    if ok == "OFF" and alt is not None and abs(alt / meas - 1) <= 0.15:
        ok = "ok*"  # the sampling (every 0.1 s) missed the short-lived second snapshot: alt is the peak without it
    rows_out.append(f"| {name} | {what} | {pred / 2**20:9.1f} | {meas / 2**20:9.1f} | {r:+6.1%} | {ok} |")
line("peak RSS (maxrss)", plan["host_peak"], rss)
line("peak RSS (report)", plan["host_peak"], rep["peak_rss_bytes"])
if "gpu_peak_device_bytes" in rep:
    line("GPU peak (device)", plan["gpu_peak"], rep["gpu_peak_device_bytes"])
    line("GPU peak (qcal buffers)", plan["gpu_own"], rep["gpu_peak_bytes"])
line("work dir after" + note, pwf, int(du_work))
if int(du_peak) > 0:
    line("work dir peak (sampled)" + note, pw, int(du_peak), pw - x if has_x == "1" else None)
line("checkpoint", plan["out_disk"], int(du_out))
s = rep.get("seconds", {})
print(f"# {name}: {ns} x {sl} tokens, host peak phase '{plan['host_phase']}', batch {plan['batch_seqs']} seqs; "
      f"ETA {plan['eta_total']:.0f} s (embed/fwd/hess/solve/write/eval {plan['eta']}), measured {wall} s "
      f"(report: fwd {s.get('forward', 0):.1f} hess {s.get('hessian', 0):.1f} solve {s.get('solve', 0):.1f} "
      f"write {s.get('pack_write', 0):.1f} total {s.get('total', 0):.1f})")
print("\n".join(rows_out))
PY
}

case $mode in
cpu)
    M="$D/qcal-llama-25m"
    C4="$D/text/c4.utf8"
    EV="$D/text/wikitext2_test_gptq_eval.txt"
    thr=()
    [[ -n ${THREADS:-} ]] && thr=(--threads "$THREADS")
    cases=${CASES:-"gptq512 gptq2048 awq eval"}
    echo "| case | figure | predicted MiB | measured MiB | diff | |"
    echo "|---|---|---|---|---|---|"
    for c in $cases; do
        case $c in
        gptq512)  run_case gptq512 "$M" --calib "$C4" --nsamples 128 --seqlen 512 --seed 0 -- "${thr[@]}" ;;
        gptq2048) run_case gptq2048 "$M" --calib "$C4" --nsamples 64 --seqlen 2048 --seed 0 -- "${thr[@]}" ;;
        awq)      run_case awq "$M" --calib "$C4" --sampling awq --nsamples 32 --seqlen 512 --seed 0 -- --method awq "${thr[@]}" ;;
        eval)     run_case eval "$M" --calib "$C4" --nsamples 128 --seqlen 512 --seed 0 -- --eval "$EV" --eval-max-windows 16 "${thr[@]}" ;;
        *) echo "bench_plan.sh: unknown case $c" >&2; exit 2 ;;
        esac
    done
    ;;
gpu)
    TEXT=${TEXT:-$D/text/wiki.test.raw}
    layers=("$@")
    ((${#layers[@]})) || layers=(32 4)
    echo "| case | figure | predicted MiB | measured MiB | diff | |"
    echo "|---|---|---|---|---|---|"
    for L in "${layers[@]}"; do
        model="$WORK/synth-llama-3.1-8b-$L"
        [[ -d $model ]] || "$QCAL" synth --like llama-3.1-8b --layers "$L" --out "$model" >&2
        # the calibration text as one document (GPTQ's windows) or one document per line (AWQ's blocks),
        # as bench_gpu.sh draws them; a recipe holds the split, and `qcal calib` reads it too
        for split in file line; do
            printf 'calib:\n  - path: %s\n    split: %s\n' "$(readlink -f "$TEXT")" "$split" >"$WORK/recipe-$split.yaml"
        done
        run_case "gpu-8b-$L" "$model" "$WORK/recipe-file.yaml" --nsamples 128 --seqlen 2048 --seed 0 -- --device cuda
        if [[ ${GPU_AWQ:-0} == 1 ]]; then
            run_case "gpu-8b-$L-awq" "$model" "$WORK/recipe-line.yaml" --sampling awq --nsamples 128 --seqlen 512 --seed 0 \
                -- --method awq --device cuda
        fi
        rm -rf "$WORK/gpu-8b-$L" "$WORK/gpu-8b-$L.qcal-work" "$WORK/gpu-8b-$L-awq" "$WORK/gpu-8b-$L-awq.qcal-work"
    done
    ;;
*) echo "bench_plan.sh: unknown mode $mode (cpu or gpu)" >&2; exit 2 ;;
esac
echo "results in $RESULTS" >&2
