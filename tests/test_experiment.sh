#!/usr/bin/env bash
# qcal experiment on the bundled stories260K: validation errors (file:line:col, exit 1), the grid's order,
# results.csv / results.jsonl on a tiny grid (baseline first, kl 0 and top1 1 for it, ppl equal to
# `qcal eval` of the checkpoint, held-out eval text included), reuse on a second invocation (byte-identical
# CSV but for the seconds_* and reused columns), resume after the runner or a quantize child is killed,
# --compare of a result set with itself and with a modified copy, calibration holdout (held-out
# documents never reach the token windows), and the shared token windows (DIR/tokens, quantize
# --calib-tokens: byte-identical checkpoints, corrupt or mismatched files refused).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
need_data "$S260" "$TINY" "$TINY_EVAL"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); echo "ok   $*"; }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

# csv_same A B: the same cells except the seconds_* and reused columns
csv_same() {
    python3 - "$1" "$2" <<'PY'
import csv, sys
a = list(csv.reader(open(sys.argv[1]))); b = list(csv.reader(open(sys.argv[2])))
keep = [i for i, c in enumerate(a[0]) if not c.startswith("seconds_") and c != "reused"]
ok = len(a) == len(b) and all([r[i] for i in keep] == [s[i] for i in keep] for r, s in zip(a, b))
if not ok:
    for r, s in zip(a, b):
        if [r[i] for i in keep] != [s[i] for i in keep]: print("  ", r, "\n  ", s)
sys.exit(0 if ok else 1)
PY
}

write_exp() { # write_exp FILE GRID_LINES...
    local f=$1; shift
    {
        echo "base:"
        echo "  model: $S260"
        echo "  bits: 4"
        echo "  group_size: 32"
        echo "  nsamples: 8"
        echo "  seqlen: 128"
        echo "  calib:"
        echo "    - path: $TINY"
        echo "      split: paragraph"
        echo "      holdout: 10"
        echo "grid:"
        for l in "$@"; do echo "  $l"; done
        echo "eval:"
        echo "  - name: tiny"
        echo "    text: $TINY_EVAL"
        echo "    seqlen: 256"
        echo "    max_windows: 4"
        echo "  - name: heldout"
        echo "    text: $TINY"
        echo "    split: paragraph"
        echo "    holdout: 10"
        echo "    seqlen: 128"
        echo "    max_windows: 4"
    } >"$f"
}

# ---- 1. validation: each error names file:line:col, exit 1
check_err() { # check_err LABEL WANT (reads $T/bad.yaml)
    local out rc
    out=$("$Q" experiment "$T/bad.yaml" --dry-run 2>&1); rc=$?
    if [[ $rc -eq 1 && $out == *"$2"* ]]; then ok "validation: $1"; else bad "validation $1: rc $rc, '$out' lacks '$2'"; fi
}
write_exp "$T/bad.yaml" "method: [rtn, gptq]"; sed -i 's/^grid:/grid:\n  bitz: [4]/' "$T/bad.yaml"
check_err "grid key not a recipe key" "bad.yaml:12:3: grid: 'bitz' is not a recipe key"
write_exp "$T/bad.yaml" "method: []"
check_err "empty grid list" "bad.yaml:12:11: grid.method: an empty list"
write_exp "$T/bad.yaml" "bits: [4, five]"
check_err "bad grid value" "bad.yaml:12:13: bits: expected an integer"
write_exp "$T/bad.yaml" "model: [a]"
check_err "model cannot vary" "bad.yaml:12:3: grid: 'model' cannot vary"
write_exp "$T/bad.yaml" "bits: [4, 4]"
check_err "duplicate value" "bad.yaml:12:13: grid.bits: duplicate value 4"
write_exp "$T/bad.yaml" "method: [rtn]"; sed -i 's/name: heldout/name: tiny/' "$T/bad.yaml"
check_err "duplicate eval name" "bad.yaml:18:11: eval[1].name: duplicate eval name 'tiny'"
write_exp "$T/bad.yaml" "method: [rtn]"; sed -i 's/name: heldout/name: held out/' "$T/bad.yaml"
check_err "eval name" "bad.yaml:18:11: eval[1].name: 'held out' is not [A-Za-z0-9_-]+"
write_exp "$T/bad.yaml" "method: [rtn]"; sed -i "s|text: $TINY_EVAL|text: $T/missing.txt|" "$T/bad.yaml"
check_err "missing eval text" "bad.yaml:15:11: eval[0].text: $T/missing.txt: No such file"
write_exp "$T/bad.yaml" "method: [rtn]"; sed -i 's/^eval:/evals:/' "$T/bad.yaml"
check_err "unknown top-level key" "bad.yaml:13:1: unknown top-level key 'evals'"
write_exp "$T/bad.yaml" "method: [rtn]"; sed -i "s|^  bits: 4|  out: $T/x|" "$T/bad.yaml"
check_err "base.out" "bad.yaml:3:3: base.out: not allowed"
write_exp "$T/bad.yaml" "method: [awq]"; sed -i 's/^  bits: 4/  bits: 3\n  format: awq/' "$T/bad.yaml"
check_err "cross-field check of a run" "run method=awq,seed=0: "
write_exp "$T/bad.yaml" "act_order: [maybe]"
check_err "bad boolean" "bad.yaml:12:15: act_order: expected true or false"
out=$("$Q" experiment 2>&1); rc=$?
[[ $rc -eq 2 ]] && ok "usage error exits 2" || bad "no file: exit $rc"

# ---- 2. grid order: file order, the last key fastest, seed innermost wherever it is written
write_exp "$T/order.yaml" "seed: [0, 1]" "method: [rtn, gptq]" "act_order: [false, true]"
sed -i 's/act_order: \[false, true\]/bits: [4, 8]/' "$T/order.yaml"
ids=$("$Q" experiment "$T/order.yaml" --dry-run | sed -n 's/^\[ *[0-9]*\/[0-9]*\] \([^ ]*\) .*/\1/p' | tr '\n' ' ')
want="method=rtn,bits=4,seed=0 method=rtn,bits=4,seed=1 method=rtn,bits=8,seed=0 method=rtn,bits=8,seed=1 method=gptq,bits=4,seed=0 method=gptq,bits=4,seed=1 method=gptq,bits=8,seed=0 method=gptq,bits=8,seed=1 "
[[ $ids == "$want" ]] && ok "grid order" || bad "grid order: $ids"

# variants: named bundles of recipe keys (rows that are no product); their label is the id value
write_exp "$T/var.yaml" "variant:" "  - {label: rtn, method: rtn}" "  - {label: gptq-act, method: gptq, act_order: true}" "bits: [4, 8]"
ids=$("$Q" experiment "$T/var.yaml" --dry-run | sed -n 's/^\[ *[0-9]*\/[0-9]*\] \([^ ]*\) .*/\1/p' | tr '\n' ' ')
want="variant=rtn,bits=4,seed=0 variant=rtn,bits=8,seed=0 variant=gptq-act,bits=4,seed=0 variant=gptq-act,bits=8,seed=0 "
[[ $ids == "$want" ]] && ok "variant grid order" || bad "variant ids: $ids"
h1=$("$Q" experiment "$T/var.yaml" --dry-run | grep 'variant=gptq-act,bits=4' | awk '{print $NF}')
printf 'model: %s\nmethod: gptq\nact_order: true\nbits: 4\ngroup_size: 32\nnsamples: 8\nseqlen: 128\ncalib: [{path: %s, split: paragraph, holdout: 10}]\n' \
    "$S260" "$TINY" >"$T/var-recipe.yaml"
h2=$("$Q" recipe "$T/var-recipe.yaml" | sed -n 's/^recipe-sha256: //p')
[[ -n $h1 && $h1 == "$h2" ]] && ok "a variant's recipe is the recipe its keys make" || bad "variant recipe hash $h1 vs $h2"
write_exp "$T/bad.yaml" "variant:" "  - {label: x, model: foo}"
check_err "variant key that cannot vary" "grid.variant: 'model' cannot vary inside a variant"
write_exp "$T/bad.yaml" "variant:" "  - {method: rtn}"
check_err "variant without label" "grid.variant: 'label' is required"

# ---- 3. the tiny grid
write_exp "$T/exp.yaml" "method: [rtn, gptq]" "seed: [0, 1]"
"$Q" experiment "$T/exp.yaml" --out "$T/d" >"$T/out1" 2>"$T/err1"; rc=$?
if [[ $rc -ne 0 ]]; then bad "experiment exit $rc: $(tail -n 5 "$T/err1")"; echo "$pass passed, $fail failed"; exit 1; fi
cat "$T/err1" "$T/out1"
head -n 3 "$T/d/results.csv"
# report.md and the plots, drawn by scripts/experiment_report.py at the end (its own test checks their content)
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null || python3 -c 'import matplotlib' 2>/dev/null; then
    [[ -s $T/d/report.md && -s $T/d/plots/layer_error.png ]] && grep -q "FP16" "$T/d/report.md" \
        && ok "report.md and plots drawn" || bad "no report.md/plots after the experiment: $(ls "$T/d")"
else
    echo "SKIP: python3-matplotlib not installed: report.md not checked"
fi
python3 - "$T/d" <<'PY' && ok "results.csv / results.jsonl contents" || bad "results contents"
import csv, json, sys, os
d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))
jl = [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
head = open(os.path.join(d, "results.csv")).readline().strip().split(",")
want = ("run,cell,seed,method,ppl_tiny,ppl_heldout,kl,top1,rel_err_mean,rel_err_max,recipe_sha256,tokens_sha256,"
        "checkpoint_sha256,qcal_version,device,seconds_quantize,seconds_eval,reused").split(",")
assert head == want, head
assert [r["run"] for r in rows] == ["fp16", "method=rtn,seed=0", "method=rtn,seed=1", "method=gptq,seed=0", "method=gptq,seed=1"], rows
b = rows[0]
assert b["kl"] == "0.00000000" and b["top1"] == "1.000000" and b["recipe_sha256"] == "", b
assert jl[0]["baseline"] is True and jl[0]["kl"] == 0 and jl[0]["top1"] == 1 and jl[0]["grid"] == {}
for r, j in zip(rows[1:], jl[1:]):
    assert j["baseline"] is False and j["run"] == r["run"] and j["cell"] == r["cell"] and j["seed"] == int(r["seed"])
    assert set(j["grid"]) == {"method", "seed"} and j["grid"]["method"] == r["method"]
    assert float(r["ppl_tiny"]) > float(b["ppl_tiny"]) * 0.98, (r, b)
    assert 0 < float(r["kl"]) < 1 and 0.5 < float(r["top1"]) < 1
    assert j["layers"]["quantized"] > 0 and len(j["linears"]) == j["layers"]["quantized"]
    # stories260K: the MLP's K = 172 cannot be packed in groups of 32, so only attention is quantized
    assert j["layers"]["n"] == 35 and list(j["layers"]["rel_err_by_type"]) == ["q_proj", "k_proj", "v_proj", "o_proj"], j["layers"]
    assert abs(float(r["ppl_tiny"]) - j["ppl"]["tiny"]) < 1e-6 and j["reused"] is False
    assert os.path.isdir(os.path.join(d, j["checkpoint"]))
# the same sampling seed, the same windows whatever the method; another seed, other windows
assert rows[1]["tokens_sha256"] == rows[3]["tokens_sha256"] != rows[2]["tokens_sha256"]
PY
# ppl equal to qcal eval of the checkpoint (the same windows), and on the held-out text written to evals/
ck="$T/d/runs/method=gptq,seed=1"
p1=$("$Q" eval --model "$ck" --text "$TINY_EVAL" --seqlen 256 --max-windows 4 --quiet | sed -n 's/^perplexity: //p')
p2=$("$Q" eval --model "$ck" --text "$T/d/evals/heldout.txt" --seqlen 128 --max-windows 4 --quiet | sed -n 's/^perplexity: //p')
row=$(grep '^"method=gptq,seed=1"' "$T/d/results.csv")
[[ -n $p1 && $row == *",$p1,$p2,"* ]] && ok "ppl = qcal eval of the checkpoint ($p1, $p2)" || bad "qcal eval $p1 $p2 vs $row"
kl=$("$Q" eval --model "$ck" --base "$S260" --text "$TINY_EVAL" --seqlen 256 --max-windows 4 --quiet | sed -n 's/^top1-agreement: //p')
[[ -n $kl && $row == *",$kl,"* ]] && ok "top1 = qcal eval --base ($kl)" || bad "top1 $kl vs $row"

# ---- 4. reuse: nothing is run again, the table is the same
cp "$T/d/results.csv" "$T/ref.csv"
"$Q" experiment "$T/exp.yaml" --out "$T/d" >"$T/out2" 2>"$T/err2"; rc=$?
n=$(grep -c "reused (finished earlier)" "$T/err2")
[[ $rc -eq 0 && $n -eq 4 ]] && ok "second invocation reuses all 4 runs" || bad "reuse: rc $rc, $n reused: $(cat "$T/err2")"
csv_same "$T/ref.csv" "$T/d/results.csv" && ok "rerun: results.csv the same but for time/reused" || bad "rerun CSV differs"
grep -q ',true$' "$T/d/results.csv" && ok "reused column" || bad "reused column"
# another file into the same DIR is refused; a non-experiment directory too
write_exp "$T/other.yaml" "method: [rtn]"
"$Q" experiment "$T/other.yaml" --out "$T/d" >/dev/null 2>"$T/err3" && bad "another plan accepted" || \
    { grep -q "holds another experiment" "$T/err3" && ok "another plan refused" || bad "refusal: $(cat "$T/err3")"; }
mkdir "$T/notexp"; echo x >"$T/notexp/f"
"$Q" experiment "$T/exp.yaml" --out "$T/notexp" >/dev/null 2>"$T/err3" && bad "non-empty dir accepted" || \
    { grep -q "not an experiment directory" "$T/err3" && ok "non-experiment dir refused" || bad "refusal: $(cat "$T/err3")"; }

# ---- 5. resume: the runner killed before its 3rd run, then a quantize child killed mid-run
QCAL_TEST_KILL=experiment:run:3 "$Q" experiment "$T/exp.yaml" --out "$T/r" >/dev/null 2>"$T/err4"; rc=$?
"$Q" experiment "$T/exp.yaml" --out "$T/r" >/dev/null 2>"$T/err5"; rc2=$?
n=$(grep -c "reused (finished earlier)" "$T/err5")
[[ $rc -eq 137 && $rc2 -eq 0 && $n -eq 2 ]] && csv_same "$T/ref.csv" "$T/r/results.csv" && ok "runner killed: 2 runs reused, the rest run, same table" \
    || bad "runner kill: rc $rc/$rc2, $n reused: $(tail -n 3 "$T/err5")"
QCAL_TEST_KILL=phase:forward:4 "$Q" experiment "$T/exp.yaml" --out "$T/k" >/dev/null 2>"$T/err6"; rc=$?
"$Q" experiment "$T/exp.yaml" --out "$T/k" >/dev/null 2>"$T/err7"; rc2=$?
if [[ $rc -eq 1 ]] && grep -q "stopped by signal 9" "$T/err6" && [[ $rc2 -eq 0 ]] && grep -q "resuming at layer" "$T/k/runs/method=rtn,seed=0.log" \
    && csv_same "$T/ref.csv" "$T/k/results.csv"; then ok "quantize child killed: the run resumes at its layer, same table"
else bad "child kill: rc $rc/$rc2: $(tail -n 2 "$T/err6") / $(grep -i resum "$T/k/runs/method=rtn,seed=0.log")"; fi
ls "$T/k/runs" | grep -q 'qcal-work\|tmp-' && bad "work or temporary directories left in runs/" || ok "nothing left behind"

# ---- 6. --compare
out=$("$Q" experiment --compare "$T/d" "$T/r" --fail-on-diff); rc=$?
[[ $rc -eq 0 && $out == *"3 cells compared, 0 differences flagged"* ]] && ok "compare: same results, nothing flagged" || bad "compare self: rc $rc $out"
python3 - "$T/d/results.jsonl" "$T/mod.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    if r["cell"] == "method=gptq": r["ppl"]["tiny"] += 0.5
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
out=$("$Q" experiment --compare "$T/d" "$T/mod.jsonl" --fail-on-diff); rc=$?
echo "$out" | grep -E "ppl_tiny"
[[ $rc -eq 1 ]] && echo "$out" | grep -q '^method=gptq .*ppl_tiny .*\* beyond 2 sd' && echo "$out" | grep -q '^method=rtn .*ppl_tiny .*+0 ' \
    && ok "compare: a modified cell is flagged, exit 1 with --fail-on-diff" || bad "compare modified: rc $rc"

# ---- 7. holdout: the held-out documents never reach the calibration windows
python3 - "$TINY" "$T/marked.utf8" <<'PY'
import sys
docs = [d for d in open(sys.argv[1]).read().split("\n\n") if d.strip()]
out = [("MARKER zebra quartz " * 40).strip() if i % 10 == 9 else d for i, d in enumerate(docs)]
open(sys.argv[2], "w").write("\n\n".join(out) + "\n")
PY
calib_hash() { # calib_hash FILE HOLDOUT
    printf 'calib:\n  - path: %s\n    split: paragraph\n    holdout: %s\nnsamples: 32\nseqlen: 64\n' "$1" "$2" >"$T/c.yaml"
    "$Q" calib "$T/c.yaml" --tokenizer "$S260" 2>/dev/null | sed -n 's/^token-sha256: //p'
}
h1=$(calib_hash "$TINY" 10); h2=$(calib_hash "$T/marked.utf8" 10); h3=$(calib_hash "$T/marked.utf8" 0); h4=$(calib_hash "$TINY" 0)
[[ -n $h1 && $h1 == "$h2" && $h3 != "$h4" ]] && ok "holdout: held-out documents replaced -> the same windows (without holdout they differ)" \
    || bad "holdout hashes $h1 $h2 $h3 $h4"
r1=$(printf 'calib:\n  - path: %s\n    holdout: 10\n' "$TINY" >"$T/h.yaml"; "$Q" recipe "$T/h.yaml" | grep -o 'recipe-sha256.*')
r2=$(printf 'calib:\n  - path: %s\n' "$TINY" >"$T/h.yaml"; "$Q" recipe "$T/h.yaml" | grep -o 'recipe-sha256.*')
[[ -n $r1 && $r1 != "$r2" ]] && ok "holdout is in the recipe hash" || bad "recipe hash: $r1 / $r2"

# ---- 8. shared token windows: sampled once per token group into DIR/tokens/<token-sha256>.bin
python3 - "$T/d" <<'PY' && ok "tokens/: one file per token group, named by the runs' tokens_sha256" || bad "tokens/: $(ls "$T/d/tokens")"
import csv, os, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))[1:]
want = sorted({r["tokens_sha256"] + ".bin" for r in rows})
have = sorted(os.listdir(os.path.join(d, "tokens")))
assert len(want) == 2 and have == want, (have, want)
PY
n=$(grep -c '^tokens [0-9a-f]\{12\}: sampled for 2 runs' "$T/err1")
[[ $n -eq 2 ]] && ok "the runner samples each group once ('sampled for 2 runs' x 2)" || bad "sampling lines: $(grep '^tokens' "$T/err1")"
grep -q '^tokens' "$T/err2" && bad "a rerun that quantizes nothing samples: $(grep '^tokens' "$T/err2")" || ok "a full reuse touches no tokens"
n=$(grep -c '^tokens [0-9a-f]\{12\}: reused for 1 run$' "$T/err5")
[[ $n -eq 2 ]] && ok "resumed experiment reuses the token files" || bad "resume token lines: $(grep '^tokens' "$T/err5")"
# the same checkpoint as sampling in-process: a plain `qcal quantize` of a run's resolved recipe
id="method=gptq,seed=1"; rec="$T/d/runs/$id.recipe.yaml"
"$Q" quantize "$rec" --out "$T/direct" --quiet >"$T/q1" 2>&1; rc=$?
[[ $rc -eq 0 ]] && cmp -s "$T/direct/model.safetensors" "$T/d/runs/$id/model.safetensors" \
    && ok "runner (shared tokens) and sampling quantize: byte-identical model.safetensors" || bad "direct quantize rc $rc: $(tail -n 3 "$T/q1")"
# --calib-tokens FILE from `qcal calib --save-tokens`: the same bytes, tokens_sha256 and recipe hash
"$Q" calib "$rec" --save-tokens "$T/tok.bin" >"$T/c1" 2>/dev/null; th=$(sed -n 's/^token-sha256: //p' "$T/c1")
"$Q" quantize "$rec" --out "$T/viafile" --quiet --calib-tokens "$T/tok.bin" >"$T/q2" 2>&1; rc=$?
python3 - "$T/direct" "$T/viafile" "$th" <<'PY' && [[ $rc -eq 0 ]] && cmp -s "$T/direct/model.safetensors" "$T/viafile/model.safetensors" \
    && ok "--calib-tokens: byte-identical checkpoint, same tokens_sha256 ($th) and recipe hash" || bad "--calib-tokens rc $rc: $(tail -n 3 "$T/q2")"
import json, sys
a, b = (json.load(open(p + "/qcal_report.json")) for p in sys.argv[1:3])
assert a["tokens_sha256"] == b["tokens_sha256"] == sys.argv[3] and a["recipe_sha256"] == b["recipe_sha256"], (a["tokens_sha256"], b["tokens_sha256"])
PY
cmp -s <(tail -c +161 "$T/tok.bin") <(tail -c +161 "$T/d/tokens/$th.bin") && ok "calib --save-tokens and the runner write the same windows" \
    || bad "calib --save-tokens vs DIR/tokens/$th.bin"
refuse() { # refuse LABEL NEEDLE FILE [quantize flags...]
    local label=$1 needle=$2 f=$3; shift 3
    local out rc; out=$("$Q" quantize "$rec" --out "$T/refused" --quiet --calib-tokens "$f" "$@" 2>&1); rc=$?
    if [[ $rc -eq 1 && $out == *"$f"* && $out == *"$needle"* && ! -e $T/refused ]]; then ok "--calib-tokens refuses $label"
    else bad "--calib-tokens $label: rc $rc: $out"; fi
}
cp "$T/tok.bin" "$T/flip.bin"; printf '\x07' | dd of="$T/flip.bin" bs=1 seek=200 conv=notrunc 2>/dev/null
refuse "a flipped byte (sha mismatch)" "the file is corrupt" "$T/flip.bin"
refuse "another seqlen" "the recipe asks for gptq sampling, nsamples 8, seqlen 64" "$T/tok.bin" --seqlen 64
refuse "another nsamples" "nsamples 4" "$T/tok.bin" --nsamples 4
refuse "another seed" "seed 0" "$T/tok.bin" --seed 0
refuse "a missing file" "cannot open" "$T/none.bin"
python3 - "$T/tok.bin" "$T/vocab.bin" <<'PY'
import hashlib, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
b[160:164] = struct.pack("<i", 100000)   # beyond stories260K's 512, with a matching hash
b[32:96] = hashlib.sha256(bytes(b[160:])).hexdigest().encode()
open(sys.argv[2], "wb").write(b)
PY
refuse "an id beyond the vocabulary" "id 100000 is outside the model's vocabulary of 512" "$T/vocab.bin"

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
