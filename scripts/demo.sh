#!/usr/bin/env bash
# qcal's main job, end to end, on the model shipped in examples/ (needs nothing beside the clone):
#   install what is missing, build, quantize stories260K with GPTQ (w4g32, act-order) and AWQ (w4g32),
#   calibrated on examples/text/tiny-calib.utf8, evaluate the original and both checkpoints on the
#   disjoint examples/text/tiny-eval.utf8 (perplexity, KL divergence to the original, top-1 agreement),
#   check both checkpoints with `qcal check`, and print a table.
# When the reference data is there ($QCAL_DATA, default ../shared/data beside the clone), the same for
# qcal-llama-25m (GPTQ w4g128 on C4, WikiText-2 at seqlen 512, 40 windows).
# Usage: scripts/demo.sh [OUT_DIR]   (default: out/demo in the clone; works from any directory)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/out/demo}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$root"
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
Q=$root/build/qcal
E=$root/examples
D=${QCAL_DATA:-$root/../shared/data}
mkdir -p "$out"

rows=()
# row NAME MODEL BASE TEXT SEQLEN MAXWIN: evaluates MODEL (against BASE unless it is the base) and checks it
row() {
    local name=$1 model=$2 base=$3 text=$4 seqlen=$5 maxw=$6 json ppl kl top1 chk
    local args=(--model "$model" --text "$text" --seqlen "$seqlen" --quiet --json)
    [[ $maxw -gt 0 ]] && args+=(--max-windows "$maxw")
    if [[ $model == "$base" ]]; then
        json=$("$Q" eval "${args[@]}" | grep '^{')
        kl=0; top1=1; chk="(the original)"
    else
        json=$("$Q" eval "${args[@]}" --base "$base" | grep '^{')
        kl=$(jfield "$json" kl_divergence); top1=$(jfield "$json" top1_agreement)
        "$Q" check "$model" >"$out/$name.check.txt" 2>&1 || { cat "$out/$name.check.txt"; exit 1; }
        chk=$(tail -n 1 "$out/$name.check.txt")
    fi
    ppl=$(jfield "$json" ppl)
    rows+=("$(printf '%-26s %10.4f %12.6f %8.4f   %s' "$name" "$ppl" "$kl" "$top1" "$chk")")
}
jfield() { # jfield JSON KEY: a number from a one-line JSON object
    local v; v=$(sed -n "s/.*\"$2\": *\([-0-9.eE+]*\).*/\1/p" <<<"$1")
    [[ -n $v ]] || { echo "demo: no $2 in: $1" >&2; exit 1; }
    echo "$v"
}

"$Q" inspect "$E/stories260K"
"$Q" quantize "$E/stories260K-gptq.yaml" --out "$out/stories260K-gptq-w4g32" --overwrite
"$Q" quantize "$E/stories260K-awq.yaml" --out "$out/stories260K-awq-w4g32" --overwrite
T=$E/text/tiny-eval.utf8
row stories260K "$E/stories260K" "$E/stories260K" "$T" 256 0
row stories260K-gptq-w4g32 "$out/stories260K-gptq-w4g32" "$E/stories260K" "$T" 256 0
row stories260K-awq-w4g32 "$out/stories260K-awq-w4g32" "$E/stories260K" "$T" 256 0

if [[ -d $D/qcal-llama-25m && -f $D/text/c4.utf8 && -f $D/text/wikitext2_test_gptq_eval.txt ]]; then
    M=$D/qcal-llama-25m
    W=$D/text/wikitext2_test_gptq_eval.txt
    "$Q" quantize --model "$M" --out "$out/qcal-llama-25m-gptq-w4g128" --overwrite --calib "$D/text/c4.utf8" \
        --nsamples 64 --seqlen 512 --bits 4 --group-size 128 --act-order
    row qcal-llama-25m "$M" "$M" "$W" 512 40
    row qcal-llama-25m-gptq-w4g128 "$out/qcal-llama-25m-gptq-w4g128" "$M" "$W" 512 40
else
    echo "demo: $D/qcal-llama-25m not found: the larger model is skipped (set QCAL_DATA to the reference data)"
fi

echo
echo "evaluation: stories260K on examples/text/tiny-eval.utf8 (seqlen 256, all windows); qcal-llama-25m on"
echo "WikiText-2 (seqlen 512, 40 windows). KL = mean KL(original || quantized) per token, nats."
printf '%-26s %10s %12s %8s   %s\n' model perplexity KL top1 "qcal check"
for r in "${rows[@]}"; do echo "$r"; done
echo "checkpoints in $out"
