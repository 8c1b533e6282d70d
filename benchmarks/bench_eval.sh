#!/usr/bin/env bash
# Perplexity-evaluation throughput and memory: runs `qcal eval --json` on the reference models and
# prints tokens/s and peak RSS next to the size of the mmapped weights and of one window's
# activations, so the memory claim (weights + one window) can be checked.
# Usage: benchmarks/bench_eval.sh [BUILD_DIR]   (env QCAL_DATA, default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
Q=$B/qcal
D=${QCAL_DATA:-../shared/data}
[[ -x $Q ]] || { echo "build qcal first (cmake --build $B)"; exit 1; }
printf "%-18s %-26s %6s %7s %10s %11s %12s %12s\n" model text seqlen windows tokens/s "peak RSS" "weights" "fp32 layer+head"
run() { # model text seqlen max_windows
    local m=$1 t=$2 s=$3 w=$4
    local out; out=$("$Q" eval --model "$D/$m" --text "$D/text/$t" --seqlen "$s" --max-windows "$w" --json --quiet | tail -n 2 | head -n 1)
    local wbytes; wbytes=$(du -cb "$D/$m"/*.safetensors | tail -n 1 | cut -f1)
    python3 - "$out" "$m" "$t" "$s" "$wbytes" "$D/$m/config.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); m, t, s, wb = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
c = json.load(open(sys.argv[6]))
d, ff, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
kv = c.get("num_key_value_heads", c["num_attention_heads"]) * c.get("head_dim", d // c["num_attention_heads"])
layer = 4 * (2 * d * d + 2 * d * kv + 3 * d * ff)        # one layer's weights in FP32
head = 4 * V * d
print(f"{m:18s} {t:26s} {s:6d} {r['windows']:7d} {r['tokens_per_s']:10.0f} {r['peak_rss_bytes']/2**20:9.1f}Mi "
      f"{wb/2**20:10.1f}Mi {(layer+head)/2**20:10.1f}Mi")
PY
}
run stories260K tiny.utf8 256 100
run stories260K wikitext2_test_gptq_eval.txt 512 100
run stories260K-fp16 wikitext2_test_gptq_eval.txt 512 100
run qcal-llama-25m wikitext2_test_gptq_eval.txt 512 40
run qcal-llama-25m wikitext2_test_gptq_eval.txt 2048 10
