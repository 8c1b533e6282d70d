#!/usr/bin/env bash
# scripts/experiment_report.py, the report of `qcal experiment`: on the handcrafted results.jsonl fixtures
# of tests/data/experiment/ (see make_fixtures.py there) it must write the papers' table with an FP16 row
# and mean ± sd (Δ% vs FP16) cells whose numbers are recomputed here independently, state the
# calibration verdict (a clear reduction in domain/, none beyond the seed spread in flat/, no verdict for a
# single seed), draw valid PNG and SVG plots, and give byte-identical output when run again. Also: the
# statistics helpers (sample sd, n - 1), bad input (exit 1 naming the line), usage (exit 2), and no
# matplotlib (exit 3, report.md still written).
set -u
SRC=${QCAL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
REP=$SRC/scripts/experiment_report.py
FIX=$SRC/tests/data/experiment
# Debian's matplotlib lives in /usr/bin/python3's dist-packages; a version manager's python3 earlier on
# PATH would not see it
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3) || { echo "SKIP: python3 not found"; exit 77; }; fi
"$PY" -c 'import matplotlib' 2>/dev/null || { echo "SKIP: matplotlib not importable by $PY (install python3-matplotlib: scripts/install-deps.sh)"; exit 77; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
export MPLCONFIGDIR=$T/mplconfig   # no writes to $HOME, and no font cache left from elsewhere
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
has() { grep -qF -- "$2" "$1" && ok || bad "$1 lacks: $2"; }

# --- the statistics and formatting helpers, against numbers worked out by hand
PYTHONPATH=$SRC/scripts "$PY" - <<'PY' >"$T/unit" 2>&1 && ok || bad "unit checks: $(cat "$T/unit")"
import math, experiment_report as r
def near(a, b, tol=1e-12):
    assert abs(a - b) <= tol, (a, b)
m, sd = r.mean_sd([12.40, 12.46, 12.43])          # deviations -0.03, +0.03, 0: sd = sqrt(0.0018 / 2)
near(m, 12.43); near(sd, 0.03)
m, sd = r.mean_sd([1.0, 2.0, 3.0, 4.0])           # sum of squares 5, n - 1 = 3 (population sd would be 1.118)
near(m, 2.5); near(sd, math.sqrt(5.0 / 3.0))
assert r.mean_sd([5.0]) == (5.0, None)            # one seed: no sd
assert r.mean_sd([]) == (None, None)
near(r.delta_pct(12.43, 12.0), 3.5833333333333, 1e-9)
d, se, sig = r.compare(6.0, 0.3, 3, 4.0, 0.4, 3)   # se = sqrt(0.09/3 + 0.16/3) = 0.288675
near(d, -2.0); near(se, math.sqrt(0.25 / 3)); assert sig is True
d, se, sig = r.compare(6.0, 0.3, 3, 5.6, 0.4, 3)   # 0.4 < 2 x 0.2887
assert sig is False
assert r.compare(6.0, 0.3, 3, 5.0, None, 1)[2] is None
assert r.fmt_pm(12.43, 0.03) == "12.43 ± 0.03", r.fmt_pm(12.43, 0.03)
assert r.fmt_pm(4.151, 0.003) == "4.151 ± 0.003", r.fmt_pm(4.151, 0.003)   # sd never prints as 0.00
assert r.fmt_pm(12.4, None) == "12.40"
assert r.fmt_delta(3.58333) == " (+3.6%)" and r.fmt_delta(-0.123) == " (-0.12%)"
print("ok")
PY

# --- domain/: 2 methods x 2 bits x 3 calibration sets x 3 seeds
cp -r "$FIX/domain" "$T/domain"
"$PY" "$REP" "$T/domain" >"$T/out" 2>&1 && ok || bad "domain exit $?: $(cat "$T/out")"
R=$T/domain/report.md
has "$R" "| method | bits | calib | n | ppl \`wikitext2\` | ppl \`c4\` | ppl \`code\` | KL | top-1 |"
has "$R" "| **FP16** |  |  | 1 | 12.00 | 14.50 | 4.00 |"
has "$R" "Fixed across the grid: \`group_size\` = 128."
# the hand-set cell: wikitext2 ppl 12.40, 12.46, 12.43 over seeds 0-2 -> mean 12.43, sample sd 0.03,
# 12.43 / 12.00 - 1 = +3.58% -> "+3.6%"
[[ $(grep -cE '"cell":"method=gptq,bits=4,group_size=128,calib=c4".*"wikitext2":12\.4(6|3)?[,}]' "$FIX/domain/results.jsonl") == 3 ]] \
    && ok || bad "fixture: the gptq w4 c4 cell is not the hand-set 12.40, 12.46, 12.43"
has "$R" "| gptq | 4 | c4 | 3 | 12.43 ± 0.03 (+3.6%) |"
has "$R" "sample standard deviation over seeds (n − 1 denominator)"
# every cell of the table, recomputed here with the statistics module (not the script's code)
"$PY" - "$FIX/domain/results.jsonl" "$R" <<'PY' >"$T/recompute" 2>&1 && ok || bad "recomputed cells: $(cat "$T/recompute")"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fp = rows[0]["ppl"]
report = open(sys.argv[2], encoding="utf-8").read()
cells = {}
for r in rows[1:]:
    cells.setdefault((r["grid"]["method"], r["grid"]["bits"], r["grid"]["calib"]), []).append(r)
bad = 0
for (m, b, c), rs in cells.items():
    texts = []
    for e in ("wikitext2", "c4", "code"):
        xs = [r["ppl"][e] for r in rs]
        mean, sd = statistics.mean(xs), statistics.stdev(xs)
        d = 2 if round(sd, 2) else 3
        delta = (mean / fp[e] - 1) * 100
        texts.append("%.*f ± %.*f (%+.*f%%)" % (d, mean, d, sd, 1 if abs(delta) >= 1 else 2, delta))
    row = "| %s | %s | %s | %d | %s |" % (m, b, c, len(rs), " | ".join(texts))
    if row not in report:
        print("missing row:", row); bad += 1
sys.exit(1 if bad else 0)
PY
# the calibration verdicts: code calibration on the code text, recomputed (Δ% per seed, sample sd,
# se = sqrt(sd1²/n1 + sd2²/n2))
exp=$("$PY" - "$FIX/domain/results.jsonl" <<'PY'
import json, math, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ref = rows[0]["ppl"]["code"]
def d(calib):
    return [(r["ppl"]["code"] / ref - 1) * 100 for r in rows[1:]
            if r["grid"]["method"] == "gptq" and r["grid"]["bits"] == 4 and r["grid"]["calib"] == calib]
a, b = d("c4"), d("code")
diff = statistics.mean(b) - statistics.mean(a)
se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
assert abs(diff) > 2 * se
print("gptq w4: **`code` calibration reduced the `code`-text loss from %+.2f%% to %+.2f%% over FP16** "
      "(difference %+.2f ± %.2f points" % (statistics.mean(a), statistics.mean(b), diff, se))
PY
)
has "$R" "## Does domain calibration reduce the domain loss?"
has "$R" "$exp"
has "$R" "| gptq w4 | +6.15 ± 0.16% (n=3) | +3.78 ± 0.07% (n=3) | +4.62 ± 0.54% (n=3) | -2.37 ± 0.10 points (reduced) |"
has "$R" "## Per-layer error"
has "$R" "| gptq | 4 | c4 | 28/28 |"
has "$R" "\`model.layers.3.mlp.down_proj\`"
has "$R" "qcal experiment experiments/domain.yaml --out $T/domain"
has "$R" "- experiment plan sha256: \`$(sed -n 's/.*"plan_sha256": "\([0-9a-f]*\)".*/\1/p' "$FIX/domain/experiment.json")\`"
has "$R" "- 36 of 36 planned runs in results.jsonl"
has "$R" "- model: \`models/llama-3.1-8b\`"
has "$R" "6 reused from an earlier invocation"
has "$R" "![Perplexity vs bits](plots/ppl_vs_bits.png)"
for p in ppl_vs_bits layer_error calib_compare; do
    f=$T/domain/plots/$p
    [[ $(head -c 8 "$f.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] && ok || bad "$p.png: not a PNG"
    [[ $(stat -c %s "$f.png") -gt 20000 ]] && ok || bad "$p.png: only $(stat -c %s "$f.png") bytes"
    head -c 100 "$f.svg" | grep -q '^<?xml' && grep -q '<svg ' "$f.svg" && grep -q '</svg>' "$f.svg" && ok || bad "$p.svg: not an SVG"
    [[ $(stat -c %s "$f.svg") -gt 20000 ]] && ok || bad "$p.svg: only $(stat -c %s "$f.svg") bytes"
    ! grep -qi '<dc:date>' "$f.svg" && ok || bad "$p.svg carries a date"
done
# a second run: byte-identical report and plots
cp -r "$T/domain" "$T/domain.1"
"$PY" "$REP" "$T/domain" >"$T/out" 2>&1 && ok || bad "second run exit $?"
diff -r "$T/domain" "$T/domain.1" >"$T/diff" && ok || bad "second run differs: $(head -c 400 "$T/diff")"

# --- flat/: code calibration within the seed spread, and a single-seed calibration set
cp -r "$FIX/flat" "$T/flat"
"$PY" "$REP" "$T/flat" >"$T/out" 2>&1 && ok || bad "flat exit $?: $(cat "$T/out")"
R=$T/flat/report.md
has "$R" "| calib | n | ppl \`wikitext2\` | ppl \`code\` | KL | top-1 |"
has "$R" "| tiny | 1 | 12.44 (+3.7%) |"
has "$R" "gptq w4 g128: \`code\` calibration vs \`c4\` on \`code\`: +6.10% → +6.05% over FP16: no difference beyond the seed spread (difference -0.05 ± 0.41 points)."
has "$R" "| -0.05 ± 0.41 points (within the seed spread) | +0.52 points (n=1, no verdict) |"
has "$R" "a single seed, so the seed spread is unknown and no verdict is given"
! grep -q "reduced the" "$R" && ok || bad "flat: a reduction claimed"
has "$R" "Not drawn: \`bits\` takes a single value in this grid."
[[ ! -e $T/flat/plots/ppl_vs_bits.png && -s $T/flat/plots/calib_compare.svg && -s $T/flat/plots/layer_error.png ]] \
    && ok || bad "flat plots: $(ls "$T/flat/plots")"
# --reference-calib: code is the reference now
"$PY" "$REP" "$T/flat" --reference-calib code --no-plots >"$T/out" 2>&1 && ok || bad "--reference-calib exit $?"
has "$R" "Each set is compared with \`code\` (the reference)"
has "$R" "Plots skipped: --no-plots was given."
"$PY" "$REP" "$T/flat" --reference-calib wiki >"$T/out" 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "not a calib label of the grid (c4, code, tiny)" "$T/out" && ok || bad "unknown reference: exit $rc: $(cat "$T/out")"

# --- no matplotlib (-S: no site-packages): exit 3, report.md without plots, and the package named
mkdir "$T/nompl" && cp "$FIX/flat/results.jsonl" "$T/nompl/"
"$PY" -S "$REP" "$T/nompl" >"$T/out" 2>&1; rc=$?
[[ $rc == 3 ]] && grep -q "install python3-matplotlib" "$T/out" && ok || bad "no matplotlib: exit $rc: $(cat "$T/out")"
has "$T/nompl/report.md" "Plots skipped: matplotlib is not installed; install python3-matplotlib"
[[ ! -e $T/nompl/plots ]] && ok || bad "no matplotlib: plots/ made"

# --- bad input and usage
mkdir "$T/broken"
{ head -n 2 "$FIX/flat/results.jsonl"; echo '{"run": "x", "grid": {}, "ppl": {"code": 4.1'; } >"$T/broken/results.jsonl"
"$PY" "$REP" "$T/broken" >"$T/out" 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "results.jsonl:3: not JSON" "$T/out" && ok || bad "truncated line: exit $rc: $(cat "$T/out")"
[[ ! -e $T/broken/report.md ]] && ok || bad "report.md written from broken input"
{ head -n 2 "$FIX/flat/results.jsonl"; echo '{"run": "y", "grid": {"bits": 4}, "ppl": {"code": "4.1"}}'; } >"$T/broken/results.jsonl"
"$PY" "$REP" "$T/broken" >"$T/out" 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "results.jsonl:3: run 'y': ppl.code is not a number" "$T/out" && ok || bad "string ppl: exit $rc: $(cat "$T/out")"
"$PY" "$REP" "$T/missing" >"$T/out" 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "missing/results.jsonl: cannot read" "$T/out" && ok || bad "missing dir: exit $rc: $(cat "$T/out")"
"$PY" "$REP" >"$T/out" 2>&1; rc=$?
[[ $rc == 2 ]] && ok || bad "no DIR: exit $rc"

echo "test_experiment_report: $pass passed, $fail failed"
[[ $fail == 0 ]]
