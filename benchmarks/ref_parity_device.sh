#!/usr/bin/env bash
# ref_parity_device.sh OUT [M25_DIR]: the reference values of tests/data/parity made on a machine with
# transformers (torch + transformers, CUDA) instead of benchmarks/ref_model.py; the same configurations. Needs .refs/ (benchmarks/fetch_refs.sh). Every configuration runs even
# if another fails; the log says which failed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: ref_parity_device.sh OUT [M25_DIR]}
m25=${2:-}
py=${PYTHON:-python3}
fx="gptq_w4:gptq:4:32 gptq_w4_act:gptq:4:32:act gptq_w3:gptq:3:32 awq_w4:autoawq:4:32 llmawq_w4:llm-awq:4:32 awq_w3:autoawq:3:32 llmawq_w3:llm-awq:3:32"
fail=0
for arch in llama-bias-untied llama-linear-rope llama3-rope mistral-swa qwen2 qwen3; do
    for c in $fx; do
        $py "$here/benchmarks/ref_parity.py" --refs "$here/.refs" --model "$here/tests/data/arch/$arch" \
            --tokens "$here/tests/data/parity/fixture-tokens.bin" --out "$out/$arch" --config "$c" || { echo "FAILED $arch $c"; fail=1; }
    done
done
if [ -n "$m25" ]; then
    for c in gptq_w4:gptq:4:128:nts gptq_w4_act:gptq:4:128:act+nts gptq_w3:gptq:3:128:nts awq_w4:autoawq:4:128 llmawq_w4:llm-awq:4:128 awq_w3:autoawq:3:128; do
        $py "$here/benchmarks/ref_parity.py" --refs "$here/.refs" --model "$m25" --layers 1 --tensor-layers 1 --rows 128 \
            --tokens "$here/tests/data/parity/llama25m-c4-16x512.bin" --out "$out/qcal-llama-25m" --config "$c" || { echo "FAILED 25m $c"; fail=1; }
    done
fi
exit $fail
