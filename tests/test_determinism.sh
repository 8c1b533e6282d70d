#!/usr/bin/env bash
# The same checkpoint bytes for any --threads and any --batch-tokens on the CPU: GPTQ act-order (sym,
# gptq format), AWQ (awq format) and RTN on stories260K and qcal-llama-25m, each run with --threads 1,
# 2 and 3 and with the default batch (all samples in one) and batches of 3 samples (3 + 2); every
# model.safetensors must be byte-identical to the --threads 1 default-batch one. Small on purpose
# (5 x 128 tokens): stories260K for its odd shapes, qcal-llama-25m for work big enough to be split
# over threads.
# Bits are only promised on one machine with one BLAS build (other kernels round differently).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
D=${QCAL_DATA:-../shared/data}
for m in stories260K qcal-llama-25m; do
    if [[ ! -d "$D/$m" ]]; then echo "SKIP: $D/$m not found"; exit 77; fi
done
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

check() { # model seqlen group-size name quantize-flags...
    local model=$1 seqlen=$2 gs=$3 name=$4; shift 4
    local ref="" batch=$((3 * seqlen))
    for bt in 8192 $batch; do
        for th in 1 2 3; do
            local out="$T/$model-$name-t$th-b$bt"
            if ! "$Q" quantize --model "$D/$model" --calib "$D/text/c4.utf8" --nsamples 5 --seqlen "$seqlen" \
                    --group-size "$gs" "$@" --threads "$th" --batch-tokens "$bt" --out "$out" --quiet \
                    >"$T/log" 2>&1; then
                bad "$model $name --threads $th --batch-tokens $bt: exit status"; cat "$T/log"; continue
            fi
            if [[ -z "$ref" ]]; then ref="$out/model.safetensors"; ok; continue; fi
            if cmp -s "$ref" "$out/model.safetensors"; then ok
            else bad "$model $name: --threads $th --batch-tokens $bt differs from --threads 1 --batch-tokens 8192" \
                     "($(cmp "$ref" "$out/model.safetensors" 2>&1 | head -n 1))"; fi
            rm -rf "$out"
        done
    done
    [[ -n "$ref" ]] && rm -rf "$(dirname "$ref")"
}

for spec in "stories260K 128 32" "qcal-llama-25m 128 128"; do
    set -- $spec
    check "$1" "$2" "$3" gptq --method gptq --act-order --sym --format gptq
    check "$1" "$2" "$3" awq --method awq --format awq
    check "$1" "$2" "$3" rtn --method rtn --sym --format gptq
done

echo "determinism: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
