#!/usr/bin/env bash
# qcal synth from the command line: help, usage errors and their exit codes, no half-written output,
# and one real preset (llama-2-7b with 1 layer: 0.93 GB of BF16, a few seconds) that qcal inspect,
# tokenize and eval read back.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

"$Q" synth --help >"$T/help" 2>&1 && ok || bad "--help exit $?"
grep -q "SYNTHETIC" "$T/help" && grep -q -- "--like NAME" "$T/help" && grep -q "qwen3-8b" "$T/help" && ok || bad "--help text"
"$Q" --help | grep -q "^  synth " && ok || bad "synth not in qcal --help"
"$Q" synth --list | grep -q "^llama-3.1-70b .*80 .*8192 .*28672" && ok || bad "--list"

# unknown preset: usage error naming the presets
"$Q" synth --like llama-9b --out "$T/u" 2>"$T/err"; rc=$?
[[ $rc == 2 ]] && ok || bad "unknown preset exit $rc"
grep -q "unknown model 'llama-9b'" "$T/err" && grep -q "llama-3.1-8b, llama-3.1-70b" "$T/err" && ok || bad "unknown preset message: $(cat "$T/err")"
"$Q" synth --out "$T/u" 2>/dev/null; [[ $? == 2 ]] && ok || bad "missing --like"
"$Q" synth --like llama-2-7b --layers 0 --out "$T/u" 2>"$T/err"; [[ $? == 2 ]] && ok || bad "--layers 0"
"$Q" synth --like llama-2-7b --layers 33 --out "$T/u" 2>"$T/err"; [[ $? == 2 ]] && grep -q "\[1, 32\]" "$T/err" && ok || bad "--layers 33"
"$Q" synth --like llama-2-7b --dtype f8 --out "$T/u" 2>/dev/null; [[ $? == 2 ]] && ok || bad "--dtype f8"
# unwritable output: runtime error, nothing left
"$Q" synth --like llama-2-7b --layers 1 --out "$T/missing/parent/x" 2>"$T/err"; rc=$?
[[ $rc == 1 ]] && grep -q "cannot create" "$T/err" && ok || bad "unwritable out exit $rc: $(cat "$T/err")"
[[ -z "$(ls "$T")" || "$(ls "$T")" == $'err\nhelp' ]] && ok || bad "left behind: $(ls "$T")"

# a real preset, one layer
start=$(date +%s)
"$Q" synth --like llama-2-7b --layers 1 --out "$T/l2" --seed 3 >"$T/out" 2>"$T/log" && ok || { bad "synth llama-2-7b exit $?"; cat "$T/log"; }
echo "synth llama-2-7b --layers 1: $(( $(date +%s) - start )) s: $(cat "$T/out")"
grep -q "SYNTHETIC llama-2-7b .* 1 of 32 layers, 12 tensors, 464531456 parameters, 929062912 bytes" "$T/out" && ok || bad "summary line: $(cat "$T/out")"
ls "$T" | grep -q "tmp-" && bad "temporary directory left: $(ls "$T")" || ok
python3 - "$T/l2" <<'PY' && ok || bad "config.json content"
import json, os, sys
d = sys.argv[1]
c = json.load(open(os.path.join(d, "config.json")))
assert c["qcal_synthetic"] is True and "SYNTHETIC" in c["qcal_synthetic_note"] and "32 layers" in c["qcal_synthetic_note"], c
assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama", c
assert (c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_key_value_heads"]) == (4096, 11008, 32, 32)
assert c["num_hidden_layers"] == 1 and c["vocab_size"] == 32000 and c["rope_theta"] == 10000 and c["rms_norm_eps"] == 1e-5
assert c["bos_token_id"] == 1 and c["eos_token_id"] == 2 and c["torch_dtype"] == "bfloat16" and c["tie_word_embeddings"] is False
t = json.load(open(os.path.join(d, "tokenizer.json")))
v = t["model"]["vocab"]
assert v["<unk>"] == 0 and v["<s>"] == 1 and v["</s>"] == 2 and sorted(v.values()) == list(range(259)), len(v)
assert {a["content"]: a["id"] for a in t["added_tokens"]} == {"<unk>": 0, "<s>": 1, "</s>": 2}
g = json.load(open(os.path.join(d, "generation_config.json")))
assert g["bos_token_id"] == 1 and g["eos_token_id"] == 2
assert not os.path.exists(os.path.join(d, "model.safetensors.index.json"))
PY
"$Q" inspect "$T/l2" --tensors >"$T/insp" 2>&1 && ok || { bad "inspect exit $?"; cat "$T/insp"; }
grep -q "layers:       1" "$T/insp" && grep -q "tensors:      12 (12 BF16)" "$T/insp" && \
    grep -q "model.layers.0.mlp.down_proj.weight .*BF16  \[4096, 11008\]" "$T/insp" && ok || bad "inspect output: $(cat "$T/insp")"
[[ "$("$Q" tokenize --tokenizer "$T/l2" --string "Hi")" == "1 75 108" ]] && ok || bad "tokenize: $("$Q" tokenize --tokenizer "$T/l2" --string "Hi")"
# the forward pass runs on it (a perplexity of random weights: only finite-ness means anything)
printf 'The synthetic model reads this text once, byte by byte, to show that eval runs on it. %.0s' {1..8} >"$T/text"
"$Q" eval --model "$T/l2" --text "$T/text" --seqlen 64 --max-windows 2 --quiet >"$T/eval" 2>&1 && ok || { bad "eval exit $?"; cat "$T/eval"; }
python3 -c "import math,sys; p=float(sys.argv[1]); sys.exit(0 if math.isfinite(p) and p > 1 else 1)" \
    "$(tail -n 1 "$T/eval" | sed -n 's/^perplexity: //p')" && ok || bad "eval result: $(tail -n 2 "$T/eval")"

# existing output: refused (exit 1, untouched), replaced with --force
before=$(sha256sum "$T/l2/model.safetensors" | cut -c1-64)
"$Q" synth --like llama-2-7b --layers 1 --out "$T/l2" 2>"$T/err"; rc=$?
[[ $rc == 1 ]] && grep -q "already exists" "$T/err" && ok || bad "existing out exit $rc: $(cat "$T/err")"
[[ "$(sha256sum "$T/l2/model.safetensors" | cut -c1-64)" == "$before" ]] && ok || bad "existing output modified"
# same seed, same bytes (with --force, into the same place)
"$Q" synth --like llama-2-7b --layers 1 --out "$T/l2" --seed 3 --force --quiet --threads 1 >/dev/null && ok || bad "--force exit $?"
[[ "$(sha256sum "$T/l2/model.safetensors" | cut -c1-64)" == "$before" ]] && ok || bad "same seed gave different bytes"
[[ "$(ls "$T" | grep -c l2)" == 1 ]] && ok || bad "leftovers after --force: $(ls "$T")"

echo "test_synth_cli: $pass passed, $fail failed"
[[ $fail == 0 ]]
