#!/usr/bin/env bash
# qcal eval --base on stories260K (the bundled copy, tiny-eval.utf8): the lines it adds and where, the last
# line unchanged, --base == --model gives 0 and 1, the same bytes for any thread count, a different tokenizer
# refused, exit statuses.
# (The KL figures themselves are checked against a direct computation in test_eval_kl.c.)
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
FP=$S260 TXT=$TINY_EVAL
need_data "$FP" "$TXT" "$TINY"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
w=(--text "$TXT" --seqlen 256 --max-windows 4 --quiet)

"$Q" quantize --model "$FP" --method rtn --bits 4 --group-size 32 --format gptq_v2 --calib "$TINY" --nsamples 16 \
    --seqlen 128 --out "$T/q" --quiet >/dev/null 2>"$T/err" && ok || { bad "quantize"; cat "$T/err"; }

# the added lines come before the perplexity line, which is plain eval's, byte for byte
"$Q" eval --model "$T/q" "${w[@]}" >"$T/plain" 2>"$T/err" && ok || { bad "plain eval"; cat "$T/err"; }
"$Q" eval --model "$T/q" --base "$FP" "${w[@]}" >"$T/kl" 2>"$T/err" && ok || { bad "eval --base"; cat "$T/err"; }
cat "$T/kl"
[[ "$(sed -n 1p "$T/kl")" =~ ^base-perplexity:\ [0-9.]+$ ]] && ok || bad "line 1: $(sed -n 1p "$T/kl")"
[[ "$(sed -n 2p "$T/kl")" =~ ^kl-divergence:\ [0-9.e-]+$ ]] && ok || bad "line 2: $(sed -n 2p "$T/kl")"
[[ "$(sed -n 3p "$T/kl")" =~ ^top1-agreement:\ [0-9.]+$ ]] && ok || bad "line 3: $(sed -n 3p "$T/kl")"
[[ $(wc -l <"$T/kl") -eq 4 ]] && ok || bad "expected 4 lines"
[[ "$(tail -n 1 "$T/kl")" == "$(tail -n 1 "$T/plain")" && "$(tail -n 1 "$T/plain")" == perplexity:* ]] && ok \
    || bad "last line '$(tail -n 1 "$T/kl")' != plain eval's '$(tail -n 1 "$T/plain")'"
"$Q" eval --model "$FP" "${w[@]}" >"$T/fp" 2>/dev/null
[[ "$(sed -n 1p "$T/kl")" == "base-$(tail -n 1 "$T/fp")" ]] && ok || bad "base-perplexity != eval of the base"
kl=$(sed -n 's/^kl-divergence: //p' "$T/kl"); agree=$(sed -n 's/^top1-agreement: //p' "$T/kl")
python3 -c "import sys; k, a = map(float, sys.argv[1:]); sys.exit(0 if 1e-4 < k < 1 and 0.5 < a < 1 else 1)" "$kl" "$agree" \
    && ok || bad "implausible kl $kl / agreement $agree for RTN w4"
# --json: the object on the line before the perplexity line
"$Q" eval --model "$T/q" --base "$FP" "${w[@]}" --json >"$T/json" 2>/dev/null && ok || bad "eval --base --json"
tail -n 2 "$T/json" | head -n 1 | python3 -c "
import json, sys
j = json.loads(sys.stdin.read())
for k in ('kl_divergence', 'kl_max', 'kl_p99', 'top1_agreement', 'base_ppl', 'ppl'): assert isinstance(j[k], float), k
assert 0 < j['kl_divergence'] <= j['kl_p99'] <= j['kl_max'], j
assert '%.6g' % j['kl_divergence'] == sys.argv[1], (j['kl_divergence'], sys.argv[1])
" "$kl" && ok || bad "json figures"

# the same bytes for any thread count
for t in 1 3; do
    "$Q" eval --model "$T/q" --base "$FP" "${w[@]}" --threads $t >"$T/t$t" 2>/dev/null
    cmp -s "$T/t$t" "$T/kl" && ok || bad "--threads $t: $(head -3 "$T/t$t" | tr '\n' ' ')"
done

# a model against itself: exactly 0 and 1
"$Q" eval --model "$T/q" --base "$T/q" "${w[@]}" --json >"$T/self" 2>"$T/err" && ok || { bad "self"; cat "$T/err"; }
grep -qx "kl-divergence: 0" "$T/self" && ok || bad "self KL: $(grep kl-div "$T/self")"
grep -qx "top1-agreement: 1.000000" "$T/self" && ok || bad "self agreement: $(grep top1 "$T/self")"
grep -q '"kl_divergence":0,"kl_max":0,"kl_p99":0,"top1_agreement":1,' "$T/self" && ok || bad "self json"
[[ "$(tail -n 1 "$T/self")" == "$(tail -n 1 "$T/plain")" ]] && ok || bad "self ppl"

# another tokenizer (no merges: same vocabulary, other ids) is refused, naming both files
mkdir "$T/other"
for f in config.json model.safetensors tokenizer_config.json; do ln -s "$(cd "$FP" && pwd)/$f" "$T/other/$f"; done
python3 -c "
import json, sys
t = json.load(open(sys.argv[1])); t['model']['merges'] = []
json.dump(t, open(sys.argv[2], 'w'))" "$FP/tokenizer.json" "$T/other/tokenizer.json"
"$Q" eval --model "$T/q" --base "$T/other" "${w[@]}" >"$T/out" 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && ok || bad "other tokenizer: exit $rc"
grep -q "tokenizers differ" "$T/err" && grep -q "$T/q/tokenizer.json" "$T/err" && grep -q "$T/other/tokenizer.json" "$T/err" \
    && ok || bad "other tokenizer message: $(cat "$T/err")"
[[ ! -s "$T/out" ]] && ok || bad "refused run printed: $(cat "$T/out")"

# bad --base: missing or a file -> 1 with the path; empty or without a value -> 2
"$Q" eval --model "$T/q" --base "$T/nope" "${w[@]}" >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q "$T/nope" "$T/err" && ok || bad "missing base: exit $rc, $(cat "$T/err")"
"$Q" eval --model "$T/q" --base "$TXT" "${w[@]}" >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q "$TXT" "$T/err" && ok || bad "file as base: exit $rc, $(cat "$T/err")"
"$Q" eval --model "$T/q" --base "" "${w[@]}" >/dev/null 2>&1; rc=$?
[[ $rc -eq 2 ]] && ok || bad "empty --base: exit $rc"
"$Q" eval --model "$T/q" "${w[@]}" --base >/dev/null 2>&1; rc=$?
[[ $rc -eq 2 ]] && ok || bad "--base without a value: exit $rc"

# the help explains the new lines
"$Q" eval --help >"$T/help" 2>&1
for s in "--base" "kl-divergence:" "top1-agreement:" "base-perplexity:" "seqlen-1" "kl_p99"; do
    grep -q -- "$s" "$T/help" && ok || bad "help lacks '$s'"
done

echo "test_eval_kl.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
