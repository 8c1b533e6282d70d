#!/usr/bin/env bash
# End to end on a real model (stories260K, group size 32: its 172-wide MLP cannot be packed and must
# stay F16): quantize with GPTQ and RTN, write checkpoints, reload them with `qcal eval`, check the
# report, the config a loader reads, and the failure modes (no half-written output).
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
if [[ ! -d "$S260" ]]; then echo "SKIP: $S260 not found"; exit 77; fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
common=(--model "$S260" --calib "$TINY" --nsamples 16 --seqlen 128 --group-size 32)

# GPTQ, sym, v1: quantize + in-memory vs reloaded evaluation (qcal fails if they disagree)
"$Q" quantize "${common[@]}" --out "$T/g4" --eval "$TINY_EVAL" --eval-seqlen 256 --eval-max-windows 20 --quiet \
    >"$T/out" 2>"$T/err" && ok || { bad "gptq quantize exit $?"; cat "$T/err"; }
grep -q "^token-sha256: [0-9a-f]\{64\}$" "$T/out" && ok || bad "no token-sha256 line"
ppl=$(tail -n 1 "$T/out" | sed -n 's/^perplexity: //p')
[[ -n "$ppl" ]] && ok || bad "quantize did not end with a perplexity line: $(tail -n 1 "$T/out")"
# The loaders' own rules for which linears they build as quantized modules, restated (see
# ../shared/tools/loader_check.py, which runs their code): GPTQModel (GPTQ and AWQ checkpoints) builds every
# decoder-block linear as quantized unless a `dynamic` "-:" rule re.match-es its full name (first matching rule
# decides); vLLM GPTQ: "-:" rules, then the substring rule of modules_in_block_to_quantize; AutoAWQ: skips a
# linear when an entry of modules_to_not_convert is a substring of its block-relative name; vLLM AWQ: of its
# full name. Every loader must skip exactly the linears the checkpoint keeps in float16.
cat >"$T/loaders.py" <<'PY'
import json, os, re, sys
def check(d):
    q = json.load(open(os.path.join(d, "config.json")))["quantization_config"]
    lin = json.load(open(os.path.join(d, "qcal_report.json")))["linears"]
    kept = {l["name"] for l in lin if not l["quantized"]}
    dyn = q.get("dynamic") or {}
    def gm_skip(name):
        for pat in dyn:
            neg = pat.startswith("-:")
            if re.match(pat[2:] if pat[:2] in ("-:", "+:") else pat, name):
                return neg
        return False
    rel = lambda n: re.sub(r"^.*?\.\d+\.", "", n)
    loaders = {"gptqmodel": gm_skip}
    if q["quant_method"] == "gptq":
        mib = [m for g in (q.get("modules_in_block_to_quantize") or []) for m in g]
        loaders["vllm"] = lambda n: gm_skip(n) or (bool(mib) and not any(m in n for m in mib))
    else:
        mtnc = q.get("modules_to_not_convert") or []
        loaders["autoawq"] = lambda n: any(k in rel(n) for k in mtnc)
        loaders["vllm"] = lambda n: any(k in n for k in mtnc)
    for who, skip in loaders.items():
        got = {l["name"] for l in lin if skip(l["name"])}
        assert got == kept, (who, sorted(got ^ kept)[:4])
    return len(kept)
assert check(sys.argv[1]) == int(sys.argv[2]), "kept count"
PY
python3 "$T/loaders.py" "$T/g4" 15 && ok || bad "gptq: the loaders' rules do not skip exactly the kept linears"
python3 - "$T/g4" <<'PY' && ok || bad "checkpoint content"
import json, sys, os
d = sys.argv[1]
c = json.load(open(os.path.join(d, "config.json")))
q = c["quantization_config"]
assert q["quant_method"] == "gptq" and q["bits"] == 4 and q["group_size"] == 32 and q["sym"] is True, q
assert q["checkpoint_format"] == "gptq" and q["desc_act"] is False, q
assert c["torch_dtype"] == "float16"
mods = q["modules_in_block_to_quantize"]
flat = [m for g in mods for m in g]
assert "mlp.gate_proj" not in flat and "self_attn.q_proj" in flat, mods
assert json.load(open(os.path.join(d, "quantize_config.json")))["bits"] == 4
meta = q["meta"]
assert len(meta["recipe_sha256"]) == 64 and len(meta["tokens_sha256"]) == 64 and meta["nsamples"] == 16, meta
r = json.load(open(os.path.join(d, "qcal_report.json")))
lin = r["linears"]
assert len(lin) == 35 and sum(l["quantized"] for l in lin) == 20, len(lin)
assert all(0 < l["rel_err"] < 0.1 for l in lin if l["quantized"]), [l["rel_err"] for l in lin if l["quantized"]]
assert all("multiple of 32" in l["reason"] for l in lin if not l["quantized"])
assert r["eval"][0]["ppl_fake_quant"] == r["eval"][0]["ppl_checkpoint"]
for k in ("forward", "hessian", "solve", "pack_write"): assert r["seconds"][k] >= 0
PY
[[ ! -e "$T/g4.qcal-work" ]] && ok || bad "work directory left behind"
# the checkpoint evaluates with the same code as any model, to the same number
"$Q" eval --model "$T/g4" --text "$TINY_EVAL" --seqlen 256 --max-windows 20 --quiet >"$T/eval" 2>&1 \
    && ok || bad "eval of checkpoint"
[[ "$(tail -n 1 "$T/eval")" == "perplexity: $ppl" ]] && ok || bad "reloaded eval $(tail -n 1 "$T/eval") != $ppl"
"$Q" eval --model "$S260" --text "$TINY_EVAL" --seqlen 256 --max-windows 20 --quiet >"$T/fp" 2>&1
fp=$(tail -n 1 "$T/fp" | sed -n 's/^perplexity: //p')
python3 -c "import sys; fp, q = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if fp < q < fp * 1.5 else 1)" "$fp" "$ppl" \
    && ok || bad "quantized ppl $ppl not slightly above FP $fp"
echo "stories260K tiny.utf8 20x256: FP32 $fp, GPTQ w4 g32 $ppl"
"$Q" inspect "$T/g4" --tensors >"$T/insp" 2>&1 && grep -q "self_attn.q_proj.qweight" "$T/insp" && ok || bad "inspect checkpoint"

# act-order + asym -> gptq_v2; a recipe file with a flag overriding it
cat >"$T/r.yaml" <<Y
model: $S260
calib: [$TINY]
nsamples: 16
seqlen: 128
group_size: 32
bits: 3
act_order: true
sym: false
format: gptq_v2
Y
"$Q" quantize "$T/r.yaml" --bits 4 --out "$T/v2" --quiet >"$T/out" 2>"$T/err" && ok || { bad "asym v2 exit"; cat "$T/err"; }
python3 -c "
import json,sys; q=json.load(open(sys.argv[1]+'/config.json'))['quantization_config']
assert q['checkpoint_format']=='gptq_v2' and q['sym'] is False and q['desc_act'] is True and q['bits']==4, q" "$T/v2" \
    && ok || bad "v2 config"
"$Q" eval --model "$T/v2" --text "$TINY_EVAL" --seqlen 256 --max-windows 5 --quiet >/dev/null 2>&1 && ok || bad "eval v2"
python3 "$T/loaders.py" "$T/v2" 15 && ok || bad "gptq_v2: the loaders' rules do not skip exactly the kept linears"

# AWQ, exported in the AWQ GEMM layout; in-memory and reloaded perplexities must agree (qcal checks)
"$Q" quantize --model "$S260" --calib "$TINY" --method awq --group-size 32 --nsamples 32 \
    --seqlen 128 --out "$T/awq" --eval "$TINY_EVAL" --eval-seqlen 256 --eval-max-windows 10 --quiet \
    >"$T/out" 2>"$T/err" && ok || { bad "awq exit"; cat "$T/err"; }
python3 "$T/loaders.py" "$T/awq" 15 && ok || bad "awq: the loaders' rules do not skip exactly the kept linears"
python3 - "$T/awq" <<'PY' && ok || bad "awq checkpoint content"
import json, sys, os
d = sys.argv[1]
q = json.load(open(os.path.join(d, "config.json")))["quantization_config"]
assert q["quant_method"] == "awq" and q["version"] == "gemm" and q["zero_point"] is True and q["bits"] == 4, q
assert "mlp.down_proj" in q["modules_to_not_convert"], q
assert json.load(open(os.path.join(d, "quant_config.json")))["w_bit"] == 4
r = json.load(open(os.path.join(d, "qcal_report.json")))
lin = {l["name"]: l for l in r["linears"]}
# GQA (8 heads, 4 KV heads): v_proj -> o_proj is not scaled; q/k/v share one ratio
assert "awq_ratio" not in lin["model.layers.0.self_attn.o_proj"]
assert lin["model.layers.0.self_attn.q_proj"]["awq_ratio"] == lin["model.layers.0.self_attn.v_proj"]["awq_ratio"]
# awq_scale best (the default): each searched linear names the formula its group chose, with the loss
for l in r["linears"]:
    if "awq_ratio" in l:
        assert l["awq_formula"] in ("duo", "x") and l["awq_loss"] > 0, l
assert lin["model.layers.0.self_attn.q_proj"]["awq_formula"] == lin["model.layers.0.self_attn.k_proj"]["awq_formula"]
assert "awq_formula" not in lin["model.layers.0.self_attn.o_proj"]
assert r["eval"][0]["ppl_fake_quant"] == r["eval"][0]["ppl_checkpoint"]
PY
grep -qE "^awq: [0-9]+ scale groups searched \(awq_scale best; attention/MLP forwards on 12 of 32 windows\): the duo formula \(AutoAWQ\) chosen for [0-9]+, x\^r \(llm-awq\) for [0-9]+$" "$T/err" \
    && ok || bad "awq: no formula summary in: $(grep '^awq' "$T/err")"
"$Q" eval --model "$T/awq" --text "$TINY_EVAL" --seqlen 256 --max-windows 10 --quiet >"$T/eval" 2>&1 \
    && [[ "$(tail -n 1 "$T/eval")" == "$(tail -n 1 "$T/out")" ]] && ok || bad "awq reload: $(tail -n 1 "$T/eval") vs $(tail -n 1 "$T/out")"
"$Q" quantize --model "$S260" --calib "$TINY" --method awq --bits 3 --group-size 32 \
    --nsamples 16 --seqlen 128 --out "$T/awq3" --quiet >/dev/null 2>"$T/err" && ok || { bad "awq w3"; cat "$T/err"; }
python3 -c "
import json,sys; q=json.load(open(sys.argv[1]+'/config.json'))['quantization_config']
assert q['quant_method']=='gptq' and q['checkpoint_format']=='gptq_v2' and q['bits']==3 and q['sym'] is False, q" "$T/awq3" \
    && ok || bad "awq w3 goes to gptq_v2"

# llm-awq's scale formula (x^r) without clipping: a different, valid checkpoint, recorded in the recipe
"$Q" quantize --model "$S260" --calib "$TINY" --method awq --group-size 32 --nsamples 16 \
    --seqlen 128 --awq-scale llm-awq --no-awq-clip --out "$T/awq-llm" --quiet >/dev/null 2>"$T/err" \
    && ok || { bad "awq llm-awq"; cat "$T/err"; }
python3 -c "
import json,sys; m=json.load(open(sys.argv[1]+'/config.json'))['quantization_config']['meta']['recipe']
assert m['awq_scale']=='llm-awq' and m['awq_clip'] is False, m
r=json.load(open(sys.argv[1]+'/qcal_report.json'))
assert all(l['awq_formula']=='x' for l in r['linears'] if 'awq_ratio' in l), r" "$T/awq-llm" && ok || bad "llm-awq recorded"
cmp -s "$T/awq-llm/model.safetensors" "$T/awq/model.safetensors" && bad "llm-awq gave the same weights" || ok

# RTN
"$Q" quantize "${common[@]}" --method rtn --out "$T/rtn" --quiet >/dev/null 2>"$T/err" && ok || { bad "rtn"; cat "$T/err"; }

# part shards (formats/ckpt_write.h): with --max-shard-size below the checkpoint (32 MB) and above every part
# (the 25.2 MB base part, 0.8 MB layers), the work dir's parts become the shards by hard links, one per part,
# base first: the same tensors with the same bytes as the one-file copy, and `qcal check` passes. 23 MB is
# below the base part: the sorted copy, as before.
if [[ -d "$D/qcal-llama-25m" ]]; then
    pc=(--model "$D/qcal-llama-25m" --calib "$D/text/c4.utf8" --nsamples 8 --seqlen 256 --quiet)
    "$Q" quantize "${pc[@]}" --out "$T/ps" --max-shard-size 25 --keep-work >/dev/null 2>"$T/err" \
        && ok || { bad "part shards: quantize"; cat "$T/err"; }
    "$Q" quantize "${pc[@]}" --out "$T/ps1" >/dev/null 2>"$T/err" && ok || { bad "part shards: one file"; cat "$T/err"; }
    "$Q" quantize "${pc[@]}" --out "$T/ps23" --max-shard-size 23 >/dev/null 2>"$T/err" \
        && ok || { bad "part shards: 23 MB"; cat "$T/err"; }
    "$Q" check "$T/ps" >"$T/chk" 2>&1 && ok || { bad "part shards: qcal check"; cat "$T/chk"; }
    python3 - "$T/ps" "$T/ps1" "$T/ps23" "$T/ps.qcal-work" <<'PY' && ok || bad "part shards: layout or bytes"
import json, os, struct, sys
ps, one, copy, work = sys.argv[1:]
def tensors(path):  # name -> (dtype, shape, bytes), in header order
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items()}
def all_tensors(d):
    out, files = {}, sorted(f for f in os.listdir(d) if f.startswith("model") and f.endswith(".safetensors"))
    for f in files:
        t = tensors(os.path.join(d, f))
        assert not set(t) & set(out), f
        out.update(t)
    return out, files
L = json.load(open(os.path.join(ps, "config.json")))["num_hidden_layers"]
got, files = all_tensors(ps)
assert files == ["model-%05d-of-%05d.safetensors" % (i + 1, L + 1) for i in range(L + 1)], files
parts = ["base.safetensors"] + ["layer-%05d.safetensors" % i for i in range(L)]
wm = json.load(open(os.path.join(ps, "model.safetensors.index.json")))["weight_map"]
assert len(wm) == len(got), (len(wm), len(got))
for f, p in zip(files, parts):
    a, b = os.stat(os.path.join(ps, f)), os.stat(os.path.join(work, p))
    assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), (f, p, "not a hard link")
    assert all(wm[k] == f for k in tensors(os.path.join(ps, f))), f
ref, rf = all_tensors(one)
assert rf == ["model.safetensors"], rf
assert got == ref, sorted(k for k in set(got) | set(ref) if got.get(k) != ref.get(k))[:5]
c, cf = all_tensors(copy)
assert len(cf) >= 2 and c == ref, cf
names = [k for f in cf for k in tensors(os.path.join(copy, f))]
assert names == sorted(names), "23 MB: not the sorted copy"
assert all(os.stat(os.path.join(copy, f)).st_nlink == 1 for f in cf)
PY
    rm -rf "$T/ps.qcal-work"
    "$Q" check "$T/ps" >"$T/chk" 2>&1 && ok || { bad "part shards: qcal check without the work dir"; cat "$T/chk"; }
else
    echo "SKIP part shards: $D/qcal-llama-25m not found"
fi

# failures: clear message, right status, nothing written
"$Q" quantize "${common[@]}" --out "$T/g4" --quiet >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q "already exists" "$T/err" && ok || bad "existing out: rc $rc $(cat "$T/err")"
"$Q" quantize "${common[@]}" --out "$T/x1" --asym --format gptq >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 2 && ! -e "$T/x1" ]] && grep -q "gptq_v2" "$T/err" && ok || bad "asym v1: rc $rc $(cat "$T/err")"
"$Q" quantize "${common[@]}" --out "$T/x2" --bits 5 >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 2 && ! -e "$T/x2" ]] && ok || bad "bits 5: rc $rc"
"$Q" quantize --model "$S260" --calib "$T/none.txt" --out "$T/x3" --nsamples 4 --seqlen 64 >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 && ! -e "$T/x3" ]] && grep -q "none.txt" "$T/err" && ok || bad "missing calib: rc $rc $(cat "$T/err")"
"$Q" quantize "${common[@]}" --out "$T/x4" --device cuda >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 && ! -e "$T/x4" ]] && ok || bad "cuda without CUDA build: rc $rc"
"$Q" quantize "${common[@]}" --out "$T/x5" --seqlen 100000 >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 && ! -e "$T/x5" ]] && ok || bad "seqlen longer than every document: rc $rc $(cat "$T/err")"
ls "$T" | grep -q "tmp-" && bad "temporary directory left: $(ls "$T")" || ok

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
