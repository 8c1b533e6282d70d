#!/usr/bin/env bash
# Runs ../shared/tools/loader_check.py (the loaders' own code: GPTQModel, AutoAWQ, vLLM's rules) on every
# checkpoint kind qcal writes, for stories260K (its MLP kept in float16: the declarations), when the
# reference data is there qcal-llama-25m, and every architecture fixture of tests/data/arch (transformers'
# random-weight models: GPTQ, AWQ and RTN on the 16 x 128 windows of tests/data/parity/fixture-tokens.bin).
# Prints one markdown row per checkpoint; exit 1 if any FAILs.
# Usage: benchmarks/loader_check.sh [BUILD_DIR]
# Env: QCAL_DATA (../shared/data), LOADERS (.loaders: extracted per ../shared/tools/README.md),
#      PYTHON (/usr/bin/python3 with Debian's python3-torch and python3-numpy), WORK (scratch dir)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${1:-$root/build}; Q=$B/qcal
D=${QCAL_DATA:-$root/../shared/data}
L=${LOADERS:-$root/.loaders}
PY=${PYTHON:-/usr/bin/python3}
CHECK=${CHECK:-$D/../tools/loader_check.py}
[[ -x $Q && -d $L && -f $CHECK ]] || { echo "need $Q, $L and $CHECK" >&2; exit 1; }
T=${WORK:-$(mktemp -d)}
mkdir -p "$T"
fails=0
run() { # run MODEL_DIR NAME CALIB ARGS...
    local m=$1 n=$2 c=$3; shift 3
    local out=$T/$(basename "$m")-$n r
    rm -rf "$out"
    if ! "$Q" quantize --model "$m" --calib "$c" --out "$out" "$@" --quiet >/dev/null 2>"$out.err"; then
        r="quantize failed: $(tail -n 1 "$out.err")"
    else
        r=$("$PY" "$CHECK" "$out" "$m" --loaders "$L" 2>&1 | tail -n 1)
    fi
    [[ $r == ok:* ]] || fails=$((fails + 1))
    echo "| $(basename "$m") | $n | \`$*\` | $r |"
}
S=$root/examples/stories260K; ST=(--nsamples 16 --seqlen 128)
TC=$root/examples/text/tiny-calib.utf8
run "$S" gptq-w4g32 "$TC" "${ST[@]}" --method gptq --bits 4 --group-size 32
run "$S" gptq-w4g32-act "$TC" "${ST[@]}" --method gptq --bits 4 --group-size 32 --act-order
run "$S" gptq-w4g32-static "$TC" "${ST[@]}" --method gptq --bits 4 --group-size 32 --act-order --static-groups
run "$S" gptq-w8g32 "$TC" "${ST[@]}" --method gptq --bits 8 --group-size 32
run "$S" gptq-w4g64 "$TC" "${ST[@]}" --method gptq --bits 4 --group-size 64
run "$S" gptq-w4-chan "$TC" "${ST[@]}" --method gptq --bits 4 --group-size -1
run "$S" v2-w4g32-asym "$TC" "${ST[@]}" --method gptq --bits 4 --group-size 32 --asym --format gptq_v2
run "$S" v2-w3g32-asym-act "$TC" "${ST[@]}" --method gptq --bits 3 --group-size 32 --asym --act-order --format gptq_v2
run "$S" v2-w2g32-asym "$TC" "${ST[@]}" --method gptq --bits 2 --group-size 32 --asym --format gptq_v2
run "$S" rtn-w4g32 "$TC" "${ST[@]}" --method rtn --bits 4 --group-size 32
run "$S" awq-w4g32 "$TC" "${ST[@]}" --method awq --group-size 32
run "$S" awq-w4g64 "$TC" "${ST[@]}" --method awq --group-size 64
M=$D/qcal-llama-25m; MT=(--nsamples 16 --seqlen 512)
if [[ -d $M ]]; then
    C=$D/text/c4.utf8
    run "$M" gptq-w4g128 "$C" "${MT[@]}" --method gptq --bits 4 --group-size 128
    run "$M" gptq-w4g128-act "$C" "${MT[@]}" --method gptq --bits 4 --group-size 128 --act-order
    run "$M" gptq-w8g128 "$C" "${MT[@]}" --method gptq --bits 8 --group-size 128
    run "$M" v2-w4g128-asym "$C" "${MT[@]}" --method gptq --bits 4 --group-size 128 --asym --format gptq_v2
    run "$M" v2-w3g128 "$C" "${MT[@]}" --method gptq --bits 3 --group-size 128 --format gptq_v2
    run "$M" v2-w2g64-asym "$C" "${MT[@]}" --method gptq --bits 2 --group-size 64 --asym --format gptq_v2
    run "$M" awq-w4g128 "$C" "${MT[@]}" --method awq --group-size 128
    run "$M" awq-w4g64 "$C" "${MT[@]}" --method awq --group-size 64
fi
# Every architecture fixture. OPT: the fixture's LayerNorm biases (drawn around 1) leave fc2 input columns no
# calibration token reaches, which the check's weight-distance bound cannot tell from a bad pack, so its rows
# use a copy with small biases. OPT and Phi-3 run through tests/arch_loader_check.py, which adds their linear
# names (out_proj, fc1, fc2; the fused qkv_proj, gate_up_proj) to the check's list of in-block linears (the
# loaders build those: GPTQModel's OPT definition, AutoAWQ's get_named_linears and phi3.py).
FT=$root/tests/data/parity/fixture-tokens.bin
for a in "$root"/tests/data/arch/*/; do
    a=${a%/}; n=$(basename "$a"); m=$a; chk=("$CHECK")
    if [[ $n == opt ]]; then
        m=$T/opt-small-bias; rm -rf "$m"; cp -r "$a" "$m"
        "$PY" - "$m/model.safetensors" <<'PY'
import json, random, struct, sys
p = sys.argv[1]
raw = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
rng = random.Random(0)
for k, t in sorted(h.items()):
    if k.endswith("layer_norm.bias"):
        a, b = t["data_offsets"]
        raw[8 + n + a:8 + n + b] = struct.pack("<%df" % ((b - a) // 4), *[0.02 * rng.gauss(0, 1) for _ in range((b - a) // 4)])
open(p, "wb").write(raw)
PY
    fi
    [[ $n == opt || $n == phi3 ]] && chk=("$root/tests/arch_loader_check.py" "$CHECK")
    for v in gptq-w4g32:gptq:gptq rtn-w4g32:rtn:gptq awq-w4g32:awq:awq; do
        IFS=: read -r name method fmt <<<"$v"
        out=$T/arch-$n-$name
        rm -rf "$out"
        args=(--method "$method" --bits 4 --group-size 32 --format "$fmt")
        if ! "$Q" quantize --model "$m" --calib-tokens "$FT" --sampling gptq --nsamples 16 --seqlen 128 \
                --out "$out" "${args[@]}" --quiet >/dev/null 2>"$out.err"; then
            if [[ $fmt == awq ]] && grep -q "use --format gptq_v2" "$out.err"; then # Qwen3-MoE's router name
                args=(--method "$method" --bits 4 --group-size 32 --format gptq_v2)
                "$Q" quantize --model "$m" --calib-tokens "$FT" --sampling gptq --nsamples 16 --seqlen 128 \
                    --out "$out" "${args[@]}" --quiet >/dev/null 2>"$out.err"
            fi
        fi
        if [[ -d $out ]]; then
            r=$("$PY" "${chk[@]}" "$out" "$m" --loaders "$L" 2>&1 | tail -n 1)
        else
            r="quantize failed: $(tail -n 1 "$out.err")"
        fi
        [[ $r == ok:* ]] || fails=$((fails + 1))
        echo "| $n | $name | \`${args[*]}\` | $r |"
    done
done
[[ -z ${WORK:-} ]] && rm -rf "$T"
echo "loader_check: $fails failure(s)"
[[ $fails -eq 0 ]]
