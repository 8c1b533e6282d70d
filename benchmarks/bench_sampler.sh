#!/usr/bin/env bash
# The calibration sampler on a large source: generates ~1 GB (uncompressed) of C4-like JSON lines,
# gzip-compressed, then runs `qcal calib` on it (GPTQ protocol, 128 x 2048, Llama-2 tokenizer): two
# streaming passes (lengths, then the chosen windows). Prints wall time, throughput and peak RSS
# (target < 100 MB).
# Usage: benchmarks/bench_sampler.sh [BUILD_DIR] [MB]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
MB=${2:-1024}
D=${QCAL_DATA:-../shared/data}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$B/benchmarks/bench_docs" --generate "$T/big.jsonl.gz" --mb "$MB"
ls -l "$T/big.jsonl.gz"
start=$(date +%s.%N)
"$B/qcal" calib --tokenizer "$D/tokenizers/llama2-32k" --calib "$T/big.jsonl.gz" --nsamples 128 --seqlen 2048 --seed 0 \
    2>&1 | grep -v "^preview"
end=$(date +%s.%N)
python3 -c "import sys; mb, t = float(sys.argv[1]), float(sys.argv[2]) - float(sys.argv[3]); print(f'sampler: {mb:.0f} MB of JSON lines in {t:.1f} s -> {mb / t:.1f} MB/s (two passes)')" "$MB" "$end" "$start"
