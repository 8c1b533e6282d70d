#!/usr/bin/env bash
# CPU wall time and peak RSS of a full quantization run on qcal-llama-25m (GPTQ w4g128, 128 x 512
# calibration tokens from c4.utf8, seed 0), split into phases from the run's qcal_report.json, with
# the memory estimate of the README's formula beside the measured peak.
# Usage: benchmarks/bench_quantize.sh [BUILD_DIR] [extra qcal quantize flags, e.g. --method awq]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}; shift || true
D=${QCAL_DATA:-../shared/data}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
start=$(date +%s.%N)
"$B/qcal" quantize --model "$D/qcal-llama-25m" --out "$T/q" --calib "$D/text/c4.utf8" --nsamples 128 --seqlen 512 \
    --seed 0 --quiet "$@" >"$T/log" 2>&1 || { cat "$T/log"; exit 1; }
end=$(date +%s.%N)
python3 - "$T/q/qcal_report.json" "$D/qcal-llama-25m/config.json" "$start" "$end" "$*" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3])
s = r["seconds"]
d, ff, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
qd = c["num_attention_heads"] * c.get("head_dim", d // c["num_attention_heads"])
kvd = c["num_key_value_heads"] * c.get("head_dim", d // c["num_attention_heads"])
rows, B = 128 * 512, 8192
kmax = max(d, qd, ff)
est = 4 * (rows * d + B * d + B * (2 * d + 2 * qd + 2 * kvd + 2 * ff) + (2 * d * d + qd * qd + ff * ff)
           + 3 * kmax * kmax + (2 * d * d + 2 * d * kvd + 3 * d * ff) + 2 * kmax * kmax)
print(f"qcal-llama-25m quantize {sys.argv[5] or 'gptq w4 g128'} (128 x 512): wall {wall:.1f} s")
for k in ("embed", "forward", "hessian", "solve", "pack_write"):
    print(f"  {k:10s} {s[k]:7.1f} s  ({s[k] / s['total']:5.1%})")
print(f"  total      {s['total']:7.1f} s")
print(f"  peak RSS   {r['peak_rss_bytes'] / 2**20:7.0f} MiB (README estimate without the mmapped weights: {est / 2**20:.0f} MiB)")
PY
