#!/usr/bin/env bash
# The same checkpoint bytes for any --threads and any --batch-tokens on the CPU: GPTQ act-order (sym,
# gptq format), AWQ (awq format) and RTN on stories260K and qcal-llama-25m, each run with --threads 1,
# 2 and 3 and with the default batch (all samples in one) and batches of 3 samples (3 + 2); every
# model.safetensors must be byte-identical to the --threads 1 default-batch one. Small on purpose
# (5 x 128 tokens): the bundled stories260K for its odd shapes, qcal-llama-25m for work big enough to be split
# over threads.
# Bits are only promised on one machine with one BLAS build (other kernels round differently).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

check() { # model-dir calib seqlen group-size name quantize-flags...
    local dir=$1 calib=$2 seqlen=$3 gs=$4 name=$5; shift 5
    local model; model=$(basename "$dir")
    local ref="" batch=$((3 * seqlen))
    for bt in 8192 $batch; do
        for th in 1 2 3; do
            local out="$T/$model-$name-t$th-b$bt"
            if ! "$Q" quantize --model "$dir" --calib "$calib" --nsamples 5 --seqlen "$seqlen" \
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

specs=("$S260 $TINY 128 32")
if [[ -d $D/qcal-llama-25m && -f $D/text/c4.utf8 ]]; then specs+=("$D/qcal-llama-25m $D/text/c4.utf8 128 128")
else echo "SKIP: $D/qcal-llama-25m or $D/text/c4.utf8 not found: only stories260K is checked"; fi
for spec in "${specs[@]}"; do
    set -- $spec
    check "$1" "$2" "$3" "$4" gptq --method gptq --act-order --sym --format gptq
    check "$1" "$2" "$3" "$4" awq --method awq --format awq
    # the search on 2 of the 5 windows (awq_search_samples), once: stories260K
    [[ $1 == "$S260" ]] && check "$1" "$2" "$3" "$4" awq-win2 --method awq --format awq --awq-search-samples 2
    check "$1" "$2" "$3" "$4" rtn --method rtn --sym --format gptq
done

echo "determinism: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
