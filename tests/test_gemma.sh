#!/usr/bin/env bash
# Gemma-2 and Gemma-3 end to end. Each arch fixture (tests/data/arch/gemma2, gemma3: transformers' random
# models with soft-capping, sliding layers, (1 + w) and post norms, Gemma-3's q/k norms and local rope; where
# one is missing, the same variant from scripts/gemma_numpy_reference.py) is
# quantized from fixed calibration tokens with GPTQ, AWQ and RTN (w4 g32; AWQ in the AutoAWQ format); each
# checkpoint must load back in `qcal eval` with a finite perplexity and a KL divergence against the F32
# model below KL_W4. AWQ folds 1/s into input_layernorm and pre_feedforward_layernorm, which scale by
# (1 + w): at 8 bits, where rounding noise is small, AWQ must stay as close to the model as RTN (KL within
# 1.5x of RTN's); folding into w alone (w / s) gives 21x (gemma2) and 7.5x (gemma3) RTN's KL on these fixtures.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
TOK=$_qc_src/tests/data/parity/fixture-tokens.bin
KL_W4=1.5
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# quant NAME FIXTURE ARGS...: quantizes, evaluates against the fixture, leaves "ppl kl top1" in $T/NAME.fig
quant() {
    local name=$1 fx=$2; shift 2
    local out=$T/$name
    if ! "$Q" quantize --model "$T/$fx" --out "$out" --group-size 32 --calib-tokens "$TOK" --sampling gptq \
            --nsamples 16 --seqlen 128 --quiet "$@" >"$T/$name.log" 2>&1; then
        bad "$name: quantize"; tail -5 "$T/$name.log"; return 1
    fi
    cp "$T/$fx/tokenizer.json" "$out/"
    if ! "$Q" eval --model "$out" --base "$T/$fx" --text "$TINY_EVAL" --seqlen 64 --max-windows 8 --json --quiet \
            >"$T/$name.eval" 2>&1; then
        bad "$name: eval"; tail -5 "$T/$name.eval"; return 1
    fi
    "$PY" - "$T/$name.eval" "$name" >"$T/$name.fig" <<'PY' || { bad "$name: no eval figures"; return 1; }
import json, sys
j = next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))
print(j["ppl"], j["kl_divergence"], j["top1_agreement"], j["base_ppl"])
PY
    read -r ppl kl top1 base <"$T/$name.fig"
    printf '%-14s perplexity %-10.4f (F32 %-10.4f) KL %-10.6f top-1 agreement %.3f\n' "$name" "$ppl" "$base" "$kl" "$top1"
}
need_data "$TOK"
for fx in gemma2 gemma3; do
    src=$_qc_src/tests/data/arch/$fx
    if [[ ! -f $src/config.json ]]; then # no transformers fixture: the numpy restatement's model of that variant
        if [[ ! -d $T/np ]]; then
            NP=
            for p in "$PY" python3 /usr/bin/python3; do "$p" -c 'import numpy' 2>/dev/null && { NP=$p; break; }; done
            [[ -n $NP ]] || { echo "SKIP: $src missing and no python3 with numpy"; exit 77; }
            "$NP" "$_qc_src/scripts/gemma_numpy_reference.py" "$T/np" >/dev/null || { bad "gemma_numpy_reference.py"; break; }
        fi
        echo "note: $src not found; using scripts/gemma_numpy_reference.py's $fx"
        src=$T/np/$fx
    fi
    cp -r "$src" "$T/$fx" && "$PY" "$_qc_src/tests/fused_check.py" tokenizer "$T/$fx" || { bad "$fx: setup"; continue; }
    for method in gptq awq rtn; do
        fmt=gptq
        [[ $method == awq ]] && fmt=awq
        quant "$fx-$method" "$fx" --method $method --bits 4 --format $fmt || continue
        read -r ppl kl top1 base <"$T/$fx-$method.fig"
        if "$PY" -c "import math, sys; p, k = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (math.isfinite(p) and p > 1 and 0 <= k < float(sys.argv[3])))" \
                "$ppl" "$kl" "$KL_W4"; then ok; else bad "$fx $method w4: perplexity $ppl, KL $kl (bound $KL_W4)"; fi
    done
    quant "$fx-awq8" "$fx" --method awq --bits 8 --format gptq_v2 && quant "$fx-rtn8" "$fx" --method rtn --bits 8 --format gptq_v2 || continue
    read -r _ kl_awq _ _ <"$T/$fx-awq8.fig"
    read -r _ kl_rtn _ _ <"$T/$fx-rtn8.fig"
    if "$PY" -c "import sys; a, r = map(float, sys.argv[1:]); sys.exit(not (0 <= a <= 1.5 * r and r < 0.05))" "$kl_awq" "$kl_rtn"; then ok
    else bad "$fx: AWQ w8 KL $kl_awq vs RTN w8 $kl_rtn: the (1 + w) norm fold changed the model"; fi
done
echo "gemma: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
