#!/usr/bin/env bash
# Fused linears (arch.h; Phi-3's qkv_proj and gate_up_proj): qcal loads them as separate linears and writes
# them back fused. GPTQ, RTN and AWQ treat output rows independently given one input (one Hessian, one set
# of AWQ scales per group), so the Phi-3 layout of a model must quantize to exactly its Llama-layout twin's
# tensors, joined. tests/fused_check.py builds the Phi-3 twin of the mistral-swa fixture (no biases, default
# rope, a sliding window, which Phi-3 also has) and compares the checkpoints tensor by tensor, for GPTQ
# (v1, act-order v2 at 3 bits), RTN at 8 bits and AWQ (GEMM; clipping off: AutoAWQ clips Phi-3's q/k rows
# inside qkv_proj but not Llama's q_proj/k_proj, the one intended difference). Also: the twin's logits equal
# the fixture's (transformers' Mistral logits), and qcal eval reads the fused checkpoint.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
SRC=$_qc_src/tests/data/arch/mistral-swa
TOK=$_qc_src/tests/data/parity/fixture-tokens.bin
"$PY" "$_qc_src/tests/fused_check.py" fuse "$SRC" "$T/phi3" || exit 1
cp -r "$SRC" "$T/mistral" && SRC=$T/mistral  # with a 256-byte tokenizer, for qcal eval
"$PY" "$_qc_src/tests/fused_check.py" tokenizer "$T/mistral" && "$PY" "$_qc_src/tests/fused_check.py" tokenizer "$T/phi3" || exit 1
pass=0; fail=0
run() { # name args...
    local name=$1; shift
    local common=(--calib-tokens "$TOK" --sampling gptq --nsamples 16 --seqlen 128 --group-size 32 --quiet "$@")
    if ! "$Q" quantize --model "$T/phi3" --out "$T/$name-fused" "${common[@]}" >"$T/$name.log" 2>&1 ||
       ! "$Q" quantize --model "$SRC" --out "$T/$name-unfused" "${common[@]}" >>"$T/$name.log" 2>&1; then
        echo "FAIL: $name: quantize"; tail -5 "$T/$name.log"; fail=$((fail + 1)); return
    fi
    if "$PY" "$_qc_src/tests/fused_check.py" compare "$T/$name-fused" "$T/$name-unfused"; then pass=$((pass + 1))
    else echo "FAIL: $name"; fail=$((fail + 1)); fi
}
run gptq-w4 --method gptq --bits 4
run gptq-w3-act-v2 --method gptq --bits 3 --act-order --asym --format gptq_v2
run rtn-w8 --method rtn --bits 8
run awq-w4 --method awq --bits 4 --format awq --no-awq-clip
# the twin computes what the fixture does: perplexity of the same text through both, F32 and quantized
for m in "$T/phi3:$SRC" "$T/gptq-w4-fused:$T/gptq-w4-unfused"; do
    a=${m%%:*}; b=${m##*:}
    cp "$T/phi3/tokenizer.json" "$a/" 2>/dev/null; cp "$T/phi3/tokenizer.json" "$b/" 2>/dev/null
    pa=$("$Q" eval --model "$a" --text "$TINY_EVAL" --seqlen 64 --max-windows 4 --quiet 2>&1 | tail -1)
    pb=$("$Q" eval --model "$b" --text "$TINY_EVAL" --seqlen 64 --max-windows 4 --quiet 2>&1 | tail -1)
    if [[ $pa == perplexity:* && $pa == "$pb" ]]; then pass=$((pass + 1)); echo "ok: $(basename "$a"): $pa"
    else echo "FAIL: eval $(basename "$a"): '$pa' vs '$pb'"; fail=$((fail + 1)); fi
done
echo "fused: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
