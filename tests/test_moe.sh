#!/usr/bin/env bash
# Mixture-of-experts models (Mixtral, Qwen2-MoE with its shared expert, Qwen3-MoE with a dense layer), end to
# end on the CPU: GPTQ and RTN checkpoints whose report gives every expert its routed token count and coverage,
# whose routers stay F16 and declared unquantized, that qcal eval reads back close to the original; the fused
# 3-D expert layout quantizes to the same bytes as per-expert tensors; the low-coverage policies (all-tokens,
# rtn: an rtn-covered expert is exactly --method rtn's); bytes independent of the thread count; a run killed
# after its first layer resumes to the same bytes. AWQ: the block's experts scaled as one group (the router and
# shared-expert gate scaled with them, so 8-bit AWQ is as close to the original as 8-bit RTN), each down
# projection on its own rows; an under-covered expert rounded; --format awq refused before the run where a
# router's name would match a quantized linear (Qwen3-MoE's dense layers).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
TOK=$_qc_src/tests/data/parity/fixture-tokens.bin
CHK=$_qc_src/tests/moe_check.py
NS=16 SL=128
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
quant() { # quant MODEL OUT args...
    local m=$1 o=$2; shift 2
    "$Q" quantize --model "$m" --out "$o" --calib-tokens "$TOK" --sampling gptq --nsamples $NS --seqlen $SL \
        --group-size 32 --quiet "$@" >"$o.log" 2>&1 || { echo "quantize $o failed:"; tail -5 "$o.log"; return 1; }
}

for fx in mixtral qwen2-moe qwen3-moe; do
    M=$T/$fx
    cp -r "$_qc_src/tests/data/arch/$fx" "$M"
    "$PY" "$_qc_src/tests/fused_check.py" tokenizer "$M" >/dev/null || { bad "$fx: tokenizer"; continue; }
    # GPTQ w4: report, routers, evaluation against the original
    if quant "$M" "$T/$fx-gptq" --method gptq --bits 4 &&
       "$PY" "$CHK" report "$T/$fx-gptq" "$M" $NS $SL routed && "$PY" "$CHK" routers "$T/$fx-gptq" "$M"; then
        ok "$fx: gptq w4 report and routers"
    else bad "$fx: gptq w4"; fi
    cp "$M/tokenizer.json" "$T/$fx-gptq/" 2>/dev/null
    ev=$("$Q" eval --model "$T/$fx-gptq" --base "$M" --text "$TINY_EVAL" --seqlen 64 --max-windows 4 --quiet 2>&1)
    kl=$(echo "$ev" | sed -n 's/^kl-divergence: //p')
    if [[ -n $kl ]] && awk -v k="$kl" 'BEGIN { exit !(k >= 0 && k < 0.5) }' && [[ $(echo "$ev" | tail -1) == perplexity:* ]]; then
        ok "$fx: eval of the checkpoint, KL to the original $kl"
    else bad "$fx: eval: $ev"; fi
    # the fused 3-D layout reads as the same experts: the same checkpoint tensors
    "$PY" "$CHK" fuse "$M" "$T/$fx-fused" >/dev/null &&
        quant "$T/$fx-fused" "$T/$fx-fused-gptq" --method gptq --bits 4 &&
        cmp -s "$T/$fx-gptq/model.safetensors" "$T/$fx-fused-gptq/model.safetensors" &&
        ok "$fx: fused 3-D experts quantize to the same bytes" || bad "$fx: fused 3-D layout"
    if [[ $fx == mixtral ]]; then # transformers 5's names as well (mlp.gate, mlp.experts.gate_up_proj)
        "$PY" "$CHK" fuse "$M" "$T/$fx-v5" v5 >/dev/null && quant "$T/$fx-v5" "$T/$fx-v5-gptq" --method gptq --bits 4 &&
            cmp -s "$T/$fx-gptq/model.safetensors" "$T/$fx-v5-gptq/model.safetensors" &&
            ok "$fx: transformers 5's module names read, the Hub's written" || bad "$fx: transformers 5 names"
    fi
    # low coverage: every expert below the threshold
    if quant "$M" "$T/$fx-rtn" --method rtn --bits 4 &&
       quant "$M" "$T/$fx-lowrtn" --method gptq --bits 4 --moe-min-tokens 100000 --moe-low-coverage rtn &&
       "$PY" "$CHK" report "$T/$fx-lowrtn" "$M" $NS $SL rtn && "$PY" "$CHK" same-experts "$T/$fx-lowrtn" "$T/$fx-rtn"; then
        ok "$fx: --moe-low-coverage rtn rounds the under-covered experts exactly as --method rtn"
    else bad "$fx: low coverage rtn"; fi
    if quant "$M" "$T/$fx-all" --method gptq --bits 4 --moe-min-tokens 100000 &&
       "$PY" "$CHK" report "$T/$fx-all" "$M" $NS $SL all-tokens && "$PY" "$CHK" differ-experts "$T/$fx-all" "$T/$fx-gptq"; then
        ok "$fx: all-tokens Hessians for the under-covered experts"
    else bad "$fx: low coverage all-tokens"; fi
    # AWQ w4: the AutoAWQ GEMM format (Qwen3-MoE's dense layer: gptq_v2), report, routers, evaluation
    fmt=awq; [[ $fx == qwen3-moe ]] && fmt=gptq_v2
    if quant "$M" "$T/$fx-awq" --method awq --bits 4 --format $fmt &&
       "$PY" "$CHK" report "$T/$fx-awq" "$M" $NS $SL routed && "$PY" "$CHK" routers "$T/$fx-awq" "$M" scaled &&
       quant "$M" "$T/$fx-awqlow" --method awq --bits 4 --format $fmt --moe-min-tokens 100000 &&
       "$PY" "$CHK" report "$T/$fx-awqlow" "$M" $NS $SL rtn && "$PY" "$CHK" differ-experts "$T/$fx-awqlow" "$T/$fx-awq"; then
        ok "$fx: awq w4 ($fmt) report, routers, under-covered experts rounded"
    else bad "$fx: awq w4"; fi
    cp "$M/tokenizer.json" "$T/$fx-awq/" 2>/dev/null
    kl=$("$Q" eval --model "$T/$fx-awq" --base "$M" --text "$TINY_EVAL" --seqlen 64 --max-windows 4 --quiet 2>&1 |
         sed -n 's/^kl-divergence: //p')
    [[ -n $kl ]] && awk -v k="$kl" 'BEGIN { exit !(k >= 0 && k < 0.5) }' && ok "$fx: awq eval, KL $kl" || bad "$fx: awq eval '$kl'"
done

M=$T/mixtral
# the same bytes on 1 and 2 threads, act-order v2 at 3 bits
if quant "$M" "$T/t1" --method gptq --bits 3 --act-order --asym --format gptq_v2 --threads 1 &&
   quant "$M" "$T/t2" --method gptq --bits 3 --act-order --asym --format gptq_v2 --threads 2 &&
   cmp -s "$T/t1/model.safetensors" "$T/t2/model.safetensors"; then ok "mixtral: 1 and 2 threads give the same bytes"
else bad "mixtral: thread count changes the bytes"; fi
# killed at the second layer's part, then resumed: the uninterrupted run's bytes
QCAL_TEST_KILL=phase:part:2 "$Q" quantize --model "$M" --out "$T/rs" --calib-tokens "$TOK" --sampling gptq \
    --nsamples $NS --seqlen $SL --group-size 32 --quiet --method gptq --bits 3 --act-order --asym --format gptq_v2 \
    >"$T/rs.log" 2>&1
rc=$?
if [[ $rc -ne 0 ]] && quant "$M" "$T/rs" --method gptq --bits 3 --act-order --asym --format gptq_v2 &&
   grep -q "resuming at layer 1" "$T/rs.log" && cmp -s "$T/t2/model.safetensors" "$T/rs/model.safetensors"; then
    ok "mixtral: killed in layer 1, resumed to the same bytes"
else bad "mixtral: resume (first rc $rc): $(tail -2 "$T/rs.log")"; fi
# AWQ's folds keep the function: the router reads the scaled block input, so its columns take the scales too;
# 8-bit AWQ must then be as close to the original as 8-bit RTN (unscaled routers measured 4x RTN's KL)
kl_of() { cp "$M/tokenizer.json" "$1/"; "$Q" eval --model "$1" --base "$M" --text "$TINY_EVAL" --seqlen 64 --max-windows 16 \
          --quiet 2>&1 | sed -n 's/^kl-divergence: //p'; }
if quant "$M" "$T/a8" --method awq --bits 8 --format gptq_v2 && quant "$M" "$T/r8" --method rtn --bits 8 --asym --format gptq_v2; then
    ka=$(kl_of "$T/a8"); kr=$(kl_of "$T/r8")
    awk -v a="$ka" -v r="$kr" 'BEGIN { exit !(a != "" && r != "" && a <= 1.5 * r) }' &&
        ok "mixtral: awq w8 KL $ka <= 1.5 x rtn w8 KL $kr" || bad "mixtral: awq w8 KL $ka vs rtn $kr"
else bad "mixtral: w8 runs"; fi
# --format awq where a router's name is a substring of a quantized linear's: refused before the run, exit 1
"$Q" quantize --model "$T/qwen3-moe" --out "$T/q3awq" --calib-tokens "$TOK" --sampling gptq --nsamples $NS \
    --seqlen $SL --group-size 32 --method awq --format awq --quiet >"$T/q3awq.log" 2>&1
rc=$?
if [[ $rc -eq 1 ]] && grep -q "use --format gptq_v2" "$T/q3awq.log" && [[ ! -e $T/q3awq && ! -e $T/q3awq.qcal-work ]]; then
    ok "qwen3-moe: --format awq refused before the run (exit 1)"
else bad "qwen3-moe --format awq: rc $rc, $(tail -2 "$T/q3awq.log")"; fi
echo "moe: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
