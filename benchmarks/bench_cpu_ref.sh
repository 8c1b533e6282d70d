#!/usr/bin/env bash
# qcal's CPU path against the plain PyTorch GPTQ reference on the same CPU and the same calibration windows
# (issue 15, the CPU item): qcal-llama-25m (8 layers, d 512), GPTQ w4g128, true-sequential, symmetric,
# C4 NSAMPLES x SEQLEN windows (default 128 x 512) sampled once by `qcal calib --save-tokens`.
#   qcal:      `qcal quantize --calib-tokens ... --device cpu --threads THREADS` (phases from its report)
#   reference: IST-DASLab/gptq's own `GPTQ.add_batch` / `GPTQ.fasterquant` / `Quantizer`, driven as its
#              llama.py does (one window at a time through each layer, groups [k, v, q], [o], [up, gate],
#              [down]) by `benchmarks/ref_parity.py --time` on `benchmarks/ref_model.py` (plain PyTorch, F32),
#              torch with THREADS threads; its source comes from .refs/ (benchmarks/fetch_refs.sh).
# Prints both runs' phases and the ratios side by side. Usage: benchmarks/bench_cpu_ref.sh [BUILD [OUT]]
#   env QCAL_DATA (default ../shared/data), NSAMPLES, SEQLEN, THREADS (default: all cores), PYTHON (one with
#   torch; default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
OUT=${2:-/tmp/qcal-cpu-ref}
D=$(realpath "${QCAL_DATA:-../shared/data}")
Q=$(realpath "$B/qcal")
NS=${NSAMPLES:-128}; SL=${SEQLEN:-512}; TH=${THREADS:-$(nproc)}
PY=${PYTHON:-/usr/bin/python3}
[[ -d .refs/gptq ]] || bash benchmarks/fetch_refs.sh >&2
mkdir -p "$OUT"
cat >"$OUT/recipe.yaml" <<EOR
model: $D/qcal-llama-25m
method: gptq
bits: 4
group_size: 128
sym: true
calib:
  - path: $D/text/c4.utf8
nsamples: $NS
seqlen: $SL
seed: 0
device: cpu
EOR
"$Q" calib "$OUT/recipe.yaml" --save-tokens "$OUT/tokens.bin" >/dev/null
rm -rf "$OUT/q" "$OUT/q.qcal-work" "$OUT/ref"
/usr/bin/time -v "$Q" quantize "$OUT/recipe.yaml" --calib-tokens "$OUT/tokens.bin" --out "$OUT/q" --threads "$TH" \
    --quiet >/dev/null 2>"$OUT/qcal-time.log" || { cat "$OUT/qcal-time.log" >&2; exit 1; }
OMP_NUM_THREADS=$TH /usr/bin/time -v "$PY" benchmarks/ref_parity.py --local-model --device cpu \
    --model "$D/qcal-llama-25m" --tokens "$OUT/tokens.bin" --out "$OUT/ref" --config gptq_w4:gptq:4:128 --time \
    >"$OUT/ref.log" 2>"$OUT/ref-time.log" || { tail -20 "$OUT/ref.log" "$OUT/ref-time.log" >&2; exit 1; }
"$PY" - "$OUT/q/qcal_report.json" "$OUT/ref/gptq_w4.json" "$OUT/qcal-time.log" "$OUT/ref-time.log" "$TH" <<'PY'
import json, re, sys
q, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
def rss(p):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(p).read())
    return int(m.group(1)) / 1024 if m else float("nan")
qs, rs = q["seconds"], r["seconds"]
print(f"qcal-llama-25m, GPTQ w4g128 true-sequential, {r['windows']} x {r['seqlen']} C4 tokens, {sys.argv[5]} threads, "
      f"{q['platform']}")
print("| phase | qcal (s) | reference (s) | reference / qcal |")
print("|---|---|---|---|")
for k, rk in (("forward", "forward"), ("hessian", "hessian"), ("solve", "solve"), ("total", "total")):
    print(f"| {k} | {qs[k]:.2f} | {rs[rk]:.2f} | {rs[rk] / qs[k]:.1f}x |")
print(f"peak RSS: qcal {rss(sys.argv[3]):.0f} MiB, reference {rss(sys.argv[4]):.0f} MiB (torch {r['torch']}, "
      f"{r['threads']} threads)")
PY
