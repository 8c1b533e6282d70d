#!/usr/bin/env bash
# Beyond the references, measured (issue 12 item 4): GPTQ (act-order) with and without the MSE
# group-parameter search, RTN with and without it, AWQ, and awq+gptq (AWQ's scales and clipping, then
# the GPTQ solver instead of rounding) on qcal-llama-25m, CPU, at w4g128 and w3g128, over seeds.
# Calibration: C4 (text), 64 x 512 tokens; perplexity: WikiText-2 test, seqlen 512, 40 windows.
# Writes OUT/runs.csv (one line per run) and prints the markdown table of mean +- sd over seeds.
#
# Usage: benchmarks/beyond_ref.sh [BUILD_DIR [OUT_DIR]]
#   env QCAL_DATA (default ../shared/data), SEEDS (default "0 1 2"), BITS (default "4 3"),
#   METHODS (default "gptq gptq+mse rtn rtn+mse awq awq+gptq"), JOBS (parallel runs, default 2;
#   each run uses --threads 1, so results do not depend on JOBS), WINDOWS (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
OUT=${2:-/tmp/qcal-beyond-ref}
Q=$(realpath "$B/qcal")
D=${QCAL_DATA:-../shared/data}
SEEDS=${SEEDS:-0 1 2}
BITS=${BITS:-4 3}
METHODS=${METHODS:-gptq gptq+mse rtn rtn+mse awq awq+gptq}
JOBS=${JOBS:-2}
WINDOWS=${WINDOWS:-40}
M=$D/qcal-llama-25m
CAL=$D/text/c4.utf8
EV=$D/text/wikitext2_test_gptq_eval.txt
[[ -x $Q ]] || { echo "build qcal first (cmake --build $B)"; exit 1; }
[[ -d $M && -f $CAL && -f $EV ]] || { echo "reference data not found under $D"; exit 1; }
mkdir -p "$OUT"

flags() { # method -> qcal quantize flags
    case $1 in
    gptq) echo "--method gptq --act-order" ;;
    gptq+mse) echo "--method gptq --act-order --mse" ;;
    rtn) echo "--method rtn" ;;
    rtn+mse) echo "--method rtn --mse" ;;
    awq) echo "--method awq" ;;
    awq+gptq) echo "--method awq+gptq" ;;
    *) echo "unknown method $1" >&2; exit 1 ;;
    esac
}

one() { # method bits seed: quantize, evaluate, append a CSV line
    local m=$1 b=$2 s=$3 dir=$OUT/$1-w$2-s$3
    # shellcheck disable=SC2046
    "$Q" quantize --model "$M" --out "$dir" $(flags "$m") --bits "$b" --group-size 128 --calib "$CAL" \
        --nsamples 64 --seqlen 512 --seed "$s" --threads 1 --overwrite --quiet >"$dir.log" 2>&1
    local ppl
    ppl=$("$Q" eval --model "$dir" --text "$EV" --seqlen 512 --max-windows "$WINDOWS" --quiet 2>>"$dir.log" |
          awk '/^perplexity:/ {print $2}')
    local secs
    secs=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['seconds']['total'],1))" \
           "$dir/qcal_report.json" 2>/dev/null || echo "")
    echo "$m,$b,$s,$ppl,$secs" >>"$OUT/runs.csv"
    rm -rf "$dir" # checkpoints are not needed once measured
    echo "$m w$b seed $s: ppl $ppl" >&2
}
export -f one flags
export Q M CAL EV OUT WINDOWS

echo "method,bits,seed,ppl,quantize_seconds" >"$OUT/runs.csv"
for s in $SEEDS; do for b in $BITS; do for m in $METHODS; do echo "$m $b $s"; done; done; done |
    xargs -P "$JOBS" -L 1 bash -c 'one "$0" "$1" "$2"'

python3 - "$OUT/runs.csv" "$BITS" "$METHODS" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["ppl"]]
bits, methods = sys.argv[2].split(), sys.argv[3].split()
print("| method | " + " | ".join(f"w{b}g128 ppl" for b in bits) + " | seeds | "
      + " | ".join(f"per seed w{b}" for b in bits) + " |")
print("|---|" + "---|" * (2 * len(bits) + 1))
for m in methods:
    cells, ns, per = [], [], []
    for b in bits:
        rs = sorted((r for r in rows if r["method"] == m and r["bits"] == b), key=lambda r: int(r["seed"]))
        v = [float(r["ppl"]) for r in rs]
        ns.append(str(len(v)))
        per.append(", ".join(f"s{r['seed']} {float(r['ppl']):.2f}" for r in rs))
        cells.append("n/a" if not v else f"{v[0]:.2f}" if len(v) == 1
                     else f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}")
    print(f"| {m} | " + " | ".join(cells) + f" | {' / '.join(ns)} | " + " | ".join(per) + " |")
PY
