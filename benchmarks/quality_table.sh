#!/usr/bin/env bash
# Perplexity table of issue 4: qcal-llama-25m on WikiText-2 (seqlen 512) for FP16, RTN and GPTQ at
# w4g128 and w3g128 (GPTQ with and without act-order, sym and asym), calibrated on c4.utf8, 128 x 512,
# seed 0. Runs the configurations as parallel jobs of one BLAS thread each.
# Usage: benchmarks/quality_table.sh QCAL DATA_DIR OUT_DIR JOBS [quantize|eval|all]
set -euo pipefail
Q=$1 D=$2 O=$3 J=$4 PHASE=${5:-all}
mkdir -p "$O"
M=$D/qcal-llama-25m
W=$D/text/wikitext2_test_gptq_eval.txt
CONFIGS=(
  "rtn-w4-sym|--method rtn --bits 4"
  "rtn-w4-asym|--method rtn --bits 4 --asym --format gptq_v2"
  "gptq-w4-sym|--bits 4"
  "gptq-w4-sym-act|--bits 4 --act-order"
  "gptq-w4-asym|--bits 4 --asym --format gptq_v2"
  "gptq-w4-asym-act|--bits 4 --asym --act-order --format gptq_v2"
  "rtn-w3-sym|--method rtn --bits 3"
  "rtn-w3-asym|--method rtn --bits 3 --asym --format gptq_v2"
  "gptq-w3-sym|--bits 3"
  "gptq-w3-sym-act|--bits 3 --act-order"
  "gptq-w3-asym|--bits 3 --asym --format gptq_v2"
  "gptq-w3-asym-act|--bits 3 --asym --act-order --format gptq_v2"
)
quantize() { # name flags
    local name=$1; shift
    rm -rf "$O/$name" "$O/$name.qcal-work"
    # shellcheck disable=SC2086
    "$Q" quantize --model "$M" --out "$O/$name" --calib "$D/text/c4.utf8" --nsamples 128 --seqlen 512 --seed 0 \
        --group-size 128 --threads 1 --quiet $* >"$O/$name.quantize.log" 2>&1
}
evaluate() { # name model_dir
    "$Q" eval --model "$2" --text "$W" --seqlen 512 --threads 1 --json --quiet >"$O/$1.eval.log" 2>&1
}
limited() { # run "$@" in the background, at most J at once
    while (( $(jobs -rp | wc -l) >= J )); do wait -n || true; done
    "$@" &
}
if [[ $PHASE == quantize || $PHASE == all ]]; then
    for c in "${CONFIGS[@]}"; do
        # shellcheck disable=SC2086
        limited quantize "${c%%|*}" ${c#*|}
    done
    wait
    for c in "${CONFIGS[@]}"; do
        [[ -f "$O/${c%%|*}/config.json" ]] || { echo "quantize ${c%%|*} failed:"; tail -5 "$O/${c%%|*}.quantize.log"; }
    done
fi
if [[ $PHASE == eval || $PHASE == all ]]; then
    limited evaluate fp16 "$M"
    for c in "${CONFIGS[@]}"; do limited evaluate "${c%%|*}" "$O/${c%%|*}"; done
    wait
    printf "| config | WikiText-2 ppl (seqlen 512) | vs FP16 | worst layer rel err | quantize wall s |\n|---|---|---|---|---|\n"
    fp=$(python3 -c "import json; print(json.loads(open('$O/fp16.eval.log').read().strip().split('\n')[-2])['ppl'])")
    for n in fp16 $(for c in "${CONFIGS[@]}"; do echo "${c%%|*}"; done); do
        python3 - "$O" "$n" "$fp" <<'PY'
import json, os, sys
o, n, fp = sys.argv[1], sys.argv[2], float(sys.argv[3])
lines = open(os.path.join(o, n + ".eval.log")).read().strip().split("\n")
ppl = json.loads(lines[-2])["ppl"]
worst, secs = "", ""
rp = os.path.join(o, n, "qcal_report.json")
if os.path.exists(rp):
    r = json.load(open(rp))
    worst = "%.2e" % max(l.get("rel_err", 0) for l in r["linears"])
    secs = "%.0f" % r["seconds"]["total"]
print(f"| {n} | {ppl:.3f} | {ppl / fp - 1:+.2%} | {worst} | {secs} |")
PY
    done
fi
