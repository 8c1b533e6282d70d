#!/usr/bin/env bash
# Runs ../shared/tools/loader_check.py (the loaders' own code: GPTQModel, AutoAWQ, vLLM's rules) on every
# checkpoint kind qcal writes, for stories260K (its MLP kept in float16: the declarations) and, when the
# reference data is there, qcal-llama-25m. Prints one markdown row per checkpoint; exit 1 if any FAILs.
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
[[ -z ${WORK:-} ]] && rm -rf "$T"
echo "loader_check: $fails failure(s)"
[[ $fails -eq 0 ]]
