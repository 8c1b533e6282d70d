#!/usr/bin/env bash
# MoE coverage policy: what an expert with too few routed calibration tokens should get. For each MoE fixture
# (tests/data/arch: mixtral, qwen2-moe, qwen3-moe; random weights, a byte tokenizer) and seeds 0..S-1, GPTQ w4
# g32 from NSAMPLES x SEQLEN tokens of examples/text/tiny-calib.utf8, measured by the KL divergence of the
# checkpoint's next-token distribution to the original's on tiny-eval.utf8 (qcal eval --base):
#   routed      every expert's Hessians from its routed tokens only (--moe-min-tokens 1: only an expert no token
#               reached is under-covered)
#   all-tokens  every expert treated as under-covered: Hessians from every token sent through it
#   rtn         every expert treated as under-covered: round to nearest
#   default     the shipped defaults (--moe-min-tokens auto = hidden_size, all-tokens)
# Prints one line per run and a table of means +- sd over the seeds (markdown on stdout's tail).
# usage: benchmarks/moe_coverage.sh BUILD_DIR [SEEDS [NSAMPLES [SEQLEN]]]
set -u
B=${1:?usage: moe_coverage.sh BUILD_DIR [SEEDS [NSAMPLES [SEQLEN]]]}
S=${2:-5} NS=${3:-4} SL=${4:-64}
R=$(cd "$(dirname "$0")/.." && pwd)
Q=$B/qcal
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
printf "%-10s %-11s %4s %10s\n" model policy seed kl
for fx in mixtral qwen2-moe qwen3-moe; do
    M=$T/$fx
    cp -r "$R/tests/data/arch/$fx" "$M" && python3 "$R/tests/fused_check.py" tokenizer "$M" >/dev/null || exit 1
    for seed in $(seq 0 $((S - 1))); do
        for pol in routed all-tokens rtn default; do
            case $pol in
            routed) a=(--moe-min-tokens 1) ;;
            all-tokens) a=(--moe-min-tokens 1000000000 --moe-low-coverage all-tokens) ;;
            rtn) a=(--moe-min-tokens 1000000000 --moe-low-coverage rtn) ;;
            default) a=() ;;
            esac
            o=$T/o-$fx-$pol-$seed
            "$Q" quantize --model "$M" --out "$o" --calib "$R/examples/text/tiny-calib.utf8" --format gptq --bits 4 \
                --group-size 32 --nsamples "$NS" --seqlen "$SL" --seed "$seed" --quiet "${a[@]}" >/dev/null 2>"$o.err" ||
                { echo "quantize failed: $(tail -2 "$o.err")"; exit 1; }
            cp "$M/tokenizer.json" "$o/"
            kl=$("$Q" eval --model "$o" --base "$M" --text "$R/examples/text/tiny-eval.utf8" --seqlen 64 \
                 --max-windows 32 --quiet 2>&1 | sed -n 's/^kl-divergence: //p')
            printf "%-10s %-11s %4d %10s\n" "$fx" "$pol" "$seed" "$kl" | tee -a "$T/rows"
            rm -rf "$o"
        done
    done
done
echo
echo "| model | routed | all-tokens | rtn | default |"
echo "|---|---|---|---|---|"
awk '{ k = $1 SUBSEP $2; n[k]++; s[k] += $4; q[k] += $4 * $4; m[$1] = 1 }
     END { split("routed all-tokens rtn default", P, " ");
           for (x in m) { line = "| " x;
               for (i = 1; i <= 4; i++) { k = x SUBSEP P[i]; mu = s[k] / n[k]; v = q[k] / n[k] - mu * mu;
                   line = line sprintf(" | %.4f +- %.4f", mu, sqrt(v > 0 ? v * n[k] / (n[k] - 1) : 0)) }
               print line " |" } }' "$T/rows" | sort
echo "(KL divergence to the original, mean +- sd over $S seeds; GPTQ w4 g32, $NS x $SL calibration tokens)"
