#!/usr/bin/env bash
# Installs what is missing, builds qcal and runs its main job on a small real model: GPTQ w4g128 of
# qcal-llama-25m calibrated on real C4 text, written as a GPTQ checkpoint, then the perplexity of the
# original and of the checkpoint on WikiText-2 (GPTQ paper protocol, first 40 windows of 512).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
D=${QCAL_DATA:-../shared/data}
OUT=${OUT:-out/qcal-llama-25m-gptq-w4g128}
mkdir -p "$(dirname "$OUT")"
./build/qcal inspect "$D/qcal-llama-25m"
./build/qcal quantize --model "$D/qcal-llama-25m" --out "$OUT" --overwrite --calib "$D/text/c4.utf8" \
    --nsamples 64 --seqlen 512 --bits 4 --group-size 128 --act-order
./build/qcal inspect "$OUT"
./build/qcal eval --model "$D/qcal-llama-25m" --text "$D/text/wikitext2_test_gptq_eval.txt" --seqlen 512 --max-windows 40
./build/qcal eval --model "$OUT" --text "$D/text/wikitext2_test_gptq_eval.txt" --seqlen 512 --max-windows 40
