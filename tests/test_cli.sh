#!/usr/bin/env bash
# The command line: exit statuses (0 ok, 1 input error, 2 usage), messages on stderr, last line of eval.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
if [[ ! -d "$S260" ]]; then echo "SKIP: $S260 not found"; exit 77; fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0

expect() { # expect STATUS DESCRIPTION -- command...
    local want=$1 desc=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [[ $rc -eq $want ]]; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: $desc: exit $rc, expected $want"; sed 's/^/  stderr: /' "$T/err" | head -5; fi
}
expect_err() { # expect_err NEEDLE: stderr of the last command contains NEEDLE
    if grep -qF -- "$1" "$T/err"; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: stderr lacks '$1':"; sed 's/^/  /' "$T/err" | head -5; fi
}

expect 2 "no arguments" -- "$Q"
expect 0 "--help" -- "$Q" --help
grep -q "eval" "$T/out" || { fail=$((fail+1)); echo "FAIL: --help does not list eval"; }
expect 0 "--version" -- "$Q" --version
expect 2 "unknown command" -- "$Q" frobnicate
expect_err "unknown command 'frobnicate'"
for c in eval inspect tokenize; do expect 0 "$c --help" -- "$Q" $c --help; done
expect 2 "eval without --model" -- "$Q" eval --text "$TINY_EVAL"
expect_err "--model DIR is required"
expect 2 "eval bad seqlen" -- "$Q" eval --model "$S260" --text "$TINY_EVAL" --seqlen abc
expect_err "--seqlen expects an integer"
expect 2 "eval unknown option" -- "$Q" eval --model "$S260" --bogus 1
expect_err "unknown option '--bogus'"
expect 1 "eval missing model dir" -- "$Q" eval --model "$T/nope" --text "$TINY_EVAL"
expect_err "$T/nope: model directory not found"
mkdir -p "$T/empty"
expect 1 "eval directory without config.json" -- "$Q" eval --model "$T/empty" --text "$TINY_EVAL"
expect_err "$T/empty/config.json"
expect 1 "eval missing text" -- "$Q" eval --model "$S260" --text "$T/missing.txt"
expect_err "$T/missing.txt"

# a model whose safetensors is truncated: clear error, exit 1
mkdir -p "$T/broken" && cp "$S260/config.json" "$S260/tokenizer.json" "$T/broken/"
head -c 5000 "$S260/model.safetensors" >"$T/broken/model.safetensors"
expect 1 "eval truncated safetensors" -- "$Q" eval --model "$T/broken" --text "$TINY_EVAL"
expect_err "model.safetensors"
expect 1 "inspect truncated safetensors" -- "$Q" inspect "$T/broken"

# invalid UTF-8 text
printf 'abc\xff\xfedef' >"$T/bad.txt"
expect 1 "eval invalid utf-8" -- "$Q" eval --model "$S260" --text "$T/bad.txt" --seqlen 4
# text shorter than one window
printf 'Once upon a time' >"$T/short.txt"
expect 1 "eval text shorter than a window" -- "$Q" eval --model "$S260" --text "$T/short.txt" --seqlen 256
expect_err "fewer than one window"

# the real thing, short
expect 0 "eval stories260K" -- "$Q" eval --model "$S260" --text "$TINY_EVAL" --seqlen 256 --max-windows 4 --json
last=$(tail -n 1 "$T/out")
if [[ "$last" =~ ^perplexity:\ [0-9]+\.[0-9]+$ ]]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: last line '$last'"; fi
python3 -c "import json,sys; d=json.loads(open(sys.argv[1]).read().split('\n')[-3]); assert d['windows']==4, d" "$T/out" \
    && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: --json line"; }
expect 0 "inspect" -- "$Q" inspect "$S260" --tensors
grep -q "model.layers.4.mlp.down_proj.weight" "$T/out" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: inspect listing"; }
expect 0 "tokenize" -- "$Q" tokenize --tokenizer "$S260" --string "Hello world!"
[[ "$(cat "$T/out")" == "1 346 306 414 263 304 341 443" ]] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: tokenize ids $(cat "$T/out")"; }

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
