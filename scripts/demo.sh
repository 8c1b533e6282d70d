#!/usr/bin/env bash
# Installs what is missing, builds qcal and runs its main job on a small real model:
# perplexity of stories260K on TinyStories text and of qcal-llama-25m on WikiText-2 (GPTQ protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)"
D=${QCAL_DATA:-../shared/data}
./build/qcal inspect "$D/qcal-llama-25m"
./build/qcal eval --model "$D/stories260K" --text "$D/text/tiny.utf8" --seqlen 256
./build/qcal eval --model "$D/qcal-llama-25m" --text "$D/text/wikitext2_test_gptq_eval.txt" --seqlen 512 --max-windows 40
