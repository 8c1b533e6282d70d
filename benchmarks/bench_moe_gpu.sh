#!/usr/bin/env bash
# Mixture-of-experts GPTQ on the GPU at real shapes (issue 13): `qcal synth --like LIKE --layers N` models
# (random weights, the real config), GPTQ w4g128, 128 x 2048 WikiText-2 tokens, --device cuda.
#
#   bench_moe_gpu.sh LIKE N1 N2 [FULL_LAYERS]
#
# Runs the model cut to N1 and to N2 decoder layers (N2 > N1) and prints each run's phases (forward with
# routing, Hessians, solves, pack/write), GPU peak and host RSS; then the marginal cost of a layer, (run N2 -
# run N1) / (N2 - N1) per phase, and the whole model scaled from it: run N2 + (FULL_LAYERS - N2) x marginal
# (the fixed costs, CUDA start-up and the first layers' warm-up, are in run N2 once; the layers of these
# models are alike). Environment: QCAL (the qcal binary), TEXT (wiki.test.raw), WORK (scratch with room for
# the synthetic models), NSAMPLES/SEQLEN to override.
set -euo pipefail
cd "$(dirname "$0")/.."
QCAL=${QCAL:-build-cuda/qcal}
TEXT=${TEXT:-../shared/data/text/wiki.test.raw}
WORK=${WORK:-/tmp/qcal-bench}
usage="usage: bench_moe_gpu.sh LIKE N1 N2 [FULL_LAYERS]"
like=${1:?$usage}; n1=${2:?$usage}; n2=${3:?$usage}
full=${4:-$("$QCAL" synth --list | awk -v p="$like" '$1 == p {print $3}')}
[[ $n2 -gt $n1 && -n $full ]] || { echo "$usage (N2 > N1; LIKE a synth preset)" >&2; exit 2; }
mkdir -p "$WORK"
reports=()
for n in "$n1" "$n2"; do
    model="$WORK/synth-$like-$n"
    [[ -d $model ]] || "$QCAL" synth --like "$like" --layers "$n" --out "$model" --quiet >&2
    recipe="$WORK/recipe-moe-$n.yaml"
    cat >"$recipe" <<EOR
model: $model
method: gptq
bits: 4
group_size: 128
calib:
  - path: $(readlink -f "$TEXT")
    split: file
sampling: gptq
nsamples: ${NSAMPLES:-128}
seqlen: ${SEQLEN:-2048}
seed: 0
device: cuda
EOR
    out="$WORK/q-moe-$like-$n"
    rm -rf "$out" "$out.qcal-work"
    /usr/bin/time -v "$QCAL" quantize "$recipe" --out "$out" --quiet 2>"$WORK/time-$n.log" >/dev/null \
        || { cat "$WORK/time-$n.log" >&2; exit 1; }
    cp "$out/qcal_report.json" "$WORK/report-$n.json"
    reports+=("$WORK/report-$n.json" "$WORK/time-$n.log" "$n")
    rm -rf "$out" # room on the disk for the next model
done
python3 - "$model/config.json" "$full" "${reports[@]}" <<'PY'
import json, re, sys
cfg, full = json.load(open(sys.argv[1])), int(sys.argv[2])
runs = []
for i in range(3, len(sys.argv), 3):
    rep, log, n = json.load(open(sys.argv[i])), open(sys.argv[i + 1]).read(), int(sys.argv[i + 2])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    gpu = re.search(r"peak GPU memory (\d+) MiB", log)
    rows = [r for r in rep["linears"] if r.get("coverage")]
    runs.append(dict(n=n, s=rep["seconds"], dev=rep["device"], rss=int(rss.group(1)) / 1048576 if rss else -1,
                     gpu=int(gpu.group(1)) / 1024 if gpu else -1, experts=len(rows),
                     low=sum(1 for r in rows if r["coverage"] != "routed")))
E = cfg.get("num_experts") or cfg.get("num_local_experts")
a, b = runs
print(f"{cfg['architectures'][0]} ({E} experts, top-{cfg['num_experts_per_tok']}), GPTQ w4g128, "
      f"{a['n']} and {b['n']} of {full} layers, {b['dev']}")
print(f"| phase | {a['n']} layers (s) | {b['n']} layers (s) | marginal per layer (s) |")
print("|---|---|---|---|")
ph = ("embed", "forward", "hessian", "solve", "pack_write", "total")
for k in ph:
    print(f"| {k} | {a['s'][k]:.2f} | {b['s'][k]:.2f} | {(b['s'][k] - a['s'][k]) / (b['n'] - a['n']):.2f} |")
for r in runs:
    print(f"{r['n']} layers: GPU peak {r['gpu']:.1f} GiB, host peak RSS {r['rss']:.1f} GiB, expert linears "
          f"{r['experts']}, under-covered (all-tokens) {r['low']}")
marg = (b["s"]["total"] - a["s"]["total"]) / (b["n"] - a["n"])
print(f"whole model ({full} layers) scaled: {b['s']['total']:.1f} + {full - b['n']} x {marg:.2f} = "
      f"{b['s']['total'] + (full - b['n']) * marg:.0f} s")
PY
