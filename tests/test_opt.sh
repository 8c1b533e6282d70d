#!/usr/bin/env bash
# OPT end to end on the CPU. The opt fixture (tests/data/arch/opt: transformers' random OPTForCausalLM with
# LayerNorm biases, learned positions, ReLU and biases on every linear, tied embeddings) is quantized from
# fixed calibration tokens with GPTQ, AWQ and RTN (w4 g32; AWQ in the AutoAWQ format); each checkpoint must keep
# OPT's tensor names (model.decoder.layers.N.self_attn.q_proj.qweight, fc1, fc2, the LayerNorm biases, the
# position table), load back in `qcal eval` with a finite perplexity and a KL divergence against the F32
# model below KL_W4. AWQ folds 1/s into the LayerNorms' weights and biases and into fc1's rows and bias: at 8
# bits AWQ must stay as close to the model as RTN (KL within 1.5x of RTN's).
# The shared loader check runs on OPT's checkpoints in benchmarks/loader_check.sh (it needs the loaders' source,
# extracted per machine).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "SKIP: python3 not found"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
TOK=$_qc_src/tests/data/parity/fixture-tokens.bin
SRC=$_qc_src/tests/data/arch/opt
KL_W4=1.5
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
need_data "$TOK"
[[ -f $SRC/config.json ]] || { bad "$SRC missing"; exit 1; }
cp -r "$SRC" "$T/opt" && "$PY" "$_qc_src/tests/fused_check.py" tokenizer "$T/opt" || { echo "FAIL: setup"; exit 1; }

# q FIXTURE NAME ARGS...: quantizes FIXTURE into $T/NAME
q() {
    local fx=$1 name=$2; shift 2
    if ! "$Q" quantize --model "$T/$fx" --out "$T/$name" --group-size 32 --calib-tokens "$TOK" --sampling gptq \
            --nsamples 16 --seqlen 128 --quiet "$@" >"$T/$name.log" 2>&1; then
        bad "$name: quantize"; tail -5 "$T/$name.log"; return 1
    fi
}
# quant NAME ARGS...: quantizes the fixture, checks the names, evaluates against it ("ppl kl top1" in $T/NAME.fig)
quant() {
    local name=$1; shift
    q opt "$name" "$@" || return 1
    "$PY" - "$T/$name/model.safetensors" "$T/opt/model.safetensors" <<'PY' || { bad "$name: tensor names"; return 1; }
import json, struct, sys
def names(p):
    raw = open(p, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
    return set(k for k in json.loads(raw[8:8 + n]) if k != "__metadata__")
out, orig = names(sys.argv[1]), names(sys.argv[2])
need = {"model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
        "model.decoder.final_layer_norm.weight", "model.decoder.final_layer_norm.bias"}
for i in range(2):
    p = "model.decoder.layers.%d." % i
    need |= {p + n + ".qweight" for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.out_proj", "fc1", "fc2")}
    need |= {p + n + ".bias" for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.out_proj", "fc1", "fc2")}
    need |= {p + n + s for n in ("self_attn_layer_norm", "final_layer_norm") for s in (".weight", ".bias")}
missing = sorted(need - out)
stray = sorted(k for k in out if k.startswith("model.layers.") or "gate" in k)
if missing or stray:
    sys.exit("missing %s, unexpected %s" % (missing[:4], stray[:4]))
PY
    cp "$T/opt/tokenizer.json" "$T/$name/"
    if ! "$Q" eval --model "$T/$name" --base "$T/opt" --text "$TINY_EVAL" --seqlen 64 --max-windows 8 --json --quiet \
            >"$T/$name.eval" 2>&1; then
        bad "$name: eval"; tail -5 "$T/$name.eval"; return 1
    fi
    "$PY" - "$T/$name.eval" >"$T/$name.fig" <<'PY' || { bad "$name: no eval figures"; return 1; }
import json, sys
j = next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))
print(j["ppl"], j["kl_divergence"], j["top1_agreement"], j["base_ppl"])
PY
    read -r ppl kl top1 base <"$T/$name.fig"
    printf '%-10s perplexity %-10.4f (F32 %-10.4f) KL %-10.6f top-1 agreement %.3f\n' "$name" "$ppl" "$base" "$kl" "$top1"
}

for method in gptq awq rtn; do
    fmt=gptq
    [[ $method == awq ]] && fmt=awq
    quant "opt-$method" --method $method --bits 4 --format $fmt || continue
    read -r ppl kl top1 base <"$T/opt-$method.fig"
    if "$PY" -c "import math, sys; p, k = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (math.isfinite(p) and p > 1 and 0 <= k < float(sys.argv[3])))" \
            "$ppl" "$kl" "$KL_W4"; then ok; else bad "opt $method w4: perplexity $ppl, KL $kl (bound $KL_W4)"; fi
done
if quant opt-awq8 --method awq --bits 8 --format gptq_v2 && quant opt-rtn8 --method rtn --bits 8 --format gptq_v2; then
    read -r _ kl_awq _ _ <"$T/opt-awq8.fig"
    read -r _ kl_rtn _ _ <"$T/opt-rtn8.fig"
    if "$PY" -c "import sys; a, r = map(float, sys.argv[1:]); sys.exit(not (0 <= a <= 1.5 * r and r < 0.05))" "$kl_awq" "$kl_rtn"; then ok
    else bad "opt: AWQ w8 KL $kl_awq vs RTN w8 $kl_rtn: the LayerNorm / fc1 folds changed the model"; fi
fi
# qcal inspect names OPT's modules; the preflight plan counts its tensors (positions, LayerNorm biases)
if "$Q" inspect "$T/opt-gptq" 2>&1 | grep -q "layers path:  model.decoder.layers.N"; then ok
else bad "inspect does not show OPT's layer path"; fi
if "$Q" quantize --model "$T/opt" --out "$T/plan" --calib-tokens "$TOK" --nsamples 16 --seqlen 128 --group-size 32 \
        --plan >"$T/plan.out" 2>&1 && grep -q "72 tensors" "$T/plan.out"; then ok
else bad "plan: $(grep -m1 'tensors' "$T/plan.out")"; fi

# The loaders' own code (../shared/tools/loader_check.py, which needs the loaders' source extracted per machine)
# runs on each method's OPT checkpoint in benchmarks/loader_check.sh (benchmarks/results/loader_check.md).
echo "opt: $pass passed, $fail failed"
[[ $fail -eq 0 ]] || exit 1
