#!/usr/bin/env bash
# How far a rounding-level change moves a quantized model's perplexity (issue 12, item 5: CPU vs GPU).
# Quantizes one model from the same token windows several times, changing only --damp by a relative
# 1e-5 (H's diagonal moves by ~1e-7 of itself: the size of an fp32 rounding difference, far below fp16's),
# and evaluates each checkpoint the same way. The spread of these perplexities is what any two
# implementations that differ at the rounding level (fp32 CPU vs fp16-activation GPU, another BLAS, another
# reference) should be expected to differ by at one seed, whatever their quality.
#
# Usage: benchmarks/perturb.sh TOKENS.bin "QUANTIZE FLAGS" [DAMPS...]
#   e.g. benchmarks/perturb.sh build-harness/qcal-llama-25m-tokens-0.bin "--method gptq --sym --act-order --bits 4"
# Env: QCAL_BIN (default build/qcal), QCAL_DATA (../shared/data), MODEL (qcal-llama-25m), NSAMPLES 128,
#      SEQLEN 512, EVAL_TEXT (text/wikitext2_test_gptq_eval.txt), EVAL_WINDOWS 40, KEEP=DIR keeps checkpoints
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${QCAL_BIN:-build/qcal}
D=${QCAL_DATA:-../shared/data}
M=$D/${MODEL:-qcal-llama-25m}
tok=$1; flags=$2; shift 2
damps=("$@"); [[ ${#damps[@]} -gt 0 ]] || damps=(0.01 0.0100001 0.0099999 0.01000005 0.00999995)
if [[ -n ${KEEP:-} ]]; then T=$KEEP; mkdir -p "$T"; else T=$(mktemp -d); trap 'rm -rf "$T"' EXIT; fi
read -r -a fl <<<"$flags"
ppls=()
for dp in "${damps[@]}"; do
    out=$T/ck-$dp
    rm -rf "$out"
    "$Q" quantize --model "$M" --out "$out" --calib-tokens "$tok" --sampling gptq --nsamples "${NSAMPLES:-128}" \
        --seqlen "${SEQLEN:-512}" --damp "$dp" --quiet "${fl[@]}" >"$T/q-$dp.log" 2>&1 || { cat "$T/q-$dp.log"; exit 1; }
    p=$("$Q" eval --model "$out" --text "$D/${EVAL_TEXT:-text/wikitext2_test_gptq_eval.txt}" --seqlen 512 \
        --max-windows "${EVAL_WINDOWS:-40}" --quiet 2>&1 | sed -n 's/^perplexity: //p' | tail -1)
    echo "damp $dp: perplexity $p"
    ppls+=("$p")
    [[ -n ${KEEP:-} ]] || rm -rf "$out"
done
python3 - "${ppls[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
m = statistics.mean(v)
print(f"n {len(v)}: mean {m:.3f}, sd {statistics.stdev(v):.3f} ({100 * statistics.stdev(v) / m:.2f}%), "
      f"range {min(v):.3f}-{max(v):.3f} ({100 * (max(v) - min(v)) / m:.2f}%)")
PY
