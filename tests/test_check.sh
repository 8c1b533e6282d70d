#!/usr/bin/env bash
# qcal check, the deploy lint (formats/ckpt_check.h), rule by rule: good checkpoints just written by
# `qcal quantize` (stories260K, group size 32: its 172-wide MLP stays F16 and must be declared) have no
# error for gptq, gptq_v2 (asym, act-order) and awq; then one broken copy per rule, each expecting that
# rule at its level (a test that fails without the rule). The copies are edited by a small Python helper:
# config files as JSON, model.safetensors re-serialized with tensors changed, renamed, added or removed.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
need_data "$S260" "$TINY"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
# the interpreter itself, once: a version manager's shim can cost half a second per call, and this test
# runs Python about 150 times
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "SKIP: python3 not found"; exit 77; }
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

cat >"$T/edit.py" <<'PY'
# edit.py DIR CODE: runs CODE with cfg (config.json), qc (its quantization_config), side (quantize_config.json
# or quant_config.json, None if absent), t (model.safetensors: name -> [dtype, shape, bytes]) and meta
# (its __metadata__), then writes back whatever it changed (t = None removes model.safetensors). Helpers:
# rename(prefix_from, prefix_to), put(name, i, raw_bytes) patches element i's bytes, drop(name), and
# st_save(path, meta, tensors) writes another safetensors file.
import json, os, struct, sys
d, code = sys.argv[1], sys.argv[2]
def jload(n):
    p = os.path.join(d, n)
    return json.load(open(p)) if os.path.exists(p) else None
def jsave(n, v):
    p = os.path.join(d, n)
    if v is None:
        if os.path.exists(p): os.remove(p)
    else:
        json.dump(v, open(p, "w"), indent=1)
def st_load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    m = h.pop("__metadata__", None)
    data = b[8 + n:]
    return m, {k: [v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]] for k, v in h.items()}
def st_save(p, m, t):
    h, off, blobs = ({"__metadata__": m} if m is not None else {}), 0, []
    for k in sorted(t):
        dt, sh, by = t[k]
        h[k] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(by)]}
        off += len(by)
        blobs.append(by)
    hj = json.dumps(h).encode()
    hj += b" " * ((8 - (8 + len(hj)) % 8) % 8)
    open(p, "wb").write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
sidename = "quantize_config.json" if os.path.exists(os.path.join(d, "quantize_config.json")) else "quant_config.json"
cfg, side = jload("config.json"), jload(sidename)
qc = cfg.get("quantization_config")
stp = os.path.join(d, "model.safetensors")
meta, t = st_load(stp)
def rename(a, b):
    for k in [k for k in t if k.startswith(a + ".")]:
        t[b + k[len(a):]] = t.pop(k)
def put(name, i, raw):
    by = t[name][2]
    t[name][2] = by[:i * len(raw)] + raw + by[(i + 1) * len(raw):]
def drop(name):
    del t[name]
exec(code)
jsave("config.json", cfg)
jsave(sidename, side)
if t is None: os.remove(stp)
else: st_save(stp, meta, t)
PY

# expect DIR RC [RULE LEVEL [SUBJECT]]: `qcal check DIR` exits RC and reports RULE at LEVEL (about SUBJECT).
expect() {
    local dir=$1 want_rc=$2 rule=${3:-} level=${4:-} subject=${5:-}
    "$Q" check --json "$T/$dir" >"$T/j" 2>"$T/e"; local rc=$?
    if [[ $rc -ne $want_rc ]]; then bad "$dir: check exit $rc, expected $want_rc ($(head -c 300 "$T/e"))"; return; fi
    [[ -z $rule ]] && { ok; return; }
    if "$PY" - "$T/j" "$rule" "$level" "$subject" <<'PY'; then ok; else bad "$dir: no $rule $level ${subject:+about $subject }in: $("$PY" -c "import json,sys; print([(f['rule'], f['level'], f['subject']) for f in json.load(open(sys.argv[1]))['findings']][:12])" "$T/j")"; fi
import json, sys
r = json.load(open(sys.argv[1]))
rule, level, subject = sys.argv[2:5]
sys.exit(0 if any(f["rule"] == rule and f["level"] == level and (not subject or subject in f["subject"])
                  for f in r["findings"]) else 1)
PY
}
# mk BASE NAME CODE: a copy of checkpoint BASE edited by CODE (see edit.py)
mk() { rm -rf "$T/$2"; cp -r "$T/$1" "$T/$2"; "$PY" "$T/edit.py" "$T/$2" "$3" || bad "edit of $2 failed"; }
no_errors() {   # no_errors DIR: the JSON says 0 errors (and lists none)
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r['errors']==0 and all(f['level']!='error' for f in r['findings']) else 1)" "$T/j" \
        && ok || bad "$1: errors: $("$PY" -c "import json,sys; print([(f['rule'], f['subject'], f['message'][:90]) for f in json.load(open(sys.argv[1]))['findings'] if f['level']=='error'][:6])" "$T/j")"
}

# ---- good checkpoints, straight from qcal quantize (which runs the check itself) ----
common=(--model "$S260" --calib "$TINY" --nsamples 4 --seqlen 64 --group-size 32 --quiet)
"$Q" quantize "${common[@]}" --method rtn --out "$T/g1" >/dev/null 2>"$T/qerr" && ok || { bad "quantize gptq"; cat "$T/qerr"; }
grep -q "^check: 0 error(s), [0-9]* warning(s), [0-9]* note(s)$" "$T/qerr" && ok || bad "quantize printed no check summary: $(tail -3 "$T/qerr")"
grep -q "^tp-split       | warning | tp=8" "$T/qerr" && ok || bad "quantize with warnings printed no table"
"$Q" quantize "${common[@]}" --method gptq --format gptq_v2 --asym --act-order --out "$T/v2" >/dev/null 2>"$T/qerr" \
    && ok || { bad "quantize gptq_v2"; cat "$T/qerr"; }
"$Q" quantize "${common[@]}" --method awq --out "$T/awq" >/dev/null 2>"$T/qerr" && ok || { bad "quantize awq"; cat "$T/qerr"; }
for d in g1 v2 awq; do expect $d 0; no_errors $d; done
# what the good ones still tell: no Marlin at TP 1 (K = 64 < 128), TP 8 does not split (172 % 8), KV heads
# replicated at TP 8, gptq_v2 readers, asym gptq is not Marlin-eligible, act-order with row-parallel layers
expect g1 0 marlin note quantization_config
expect g1 0 marlin warning tp=1
expect g1 0 tp-split warning tp=8
expect g1 0 tp-split note tp=8
"$PY" -c "
import json,sys; r=json.load(open(sys.argv[1])); tp={x['tp']: x for x in r['tp']}
assert tp[1]['n_fail']==0 and tp[2]['n_fail']==0 and tp[4]['n_fail']==5 and tp[8]['n_fail']==30, tp
assert r['quantized']==20 and r['kept']==15 and r['format']=='gptq', r" "$T/j" && ok || bad "g1 TP table / counts"
expect v2 0 config-format warning checkpoint_format
expect v2 0 marlin warning quantization_config
expect v2 0 tp-split note 'tp>1'
expect awq 0 marlin note quantization_config
"$Q" check "$T/g1" >"$T/out" 2>&1; rc=$?
[[ $rc -eq 0 ]] && grep -q "^rule           | level   | subject" "$T/out" && grep -q "^check: 0 error(s), 3 warning(s), 2 note(s)$" "$T/out" \
    && grep -q "^  8 | 30 fail | 20 fall back | " "$T/out" && ok || { bad "table output"; cat "$T/out"; }

# ---- usage ----
"$Q" check >/dev/null 2>&1; [[ $? -eq 2 ]] && ok || bad "no argument: not exit 2"
"$Q" check "$T/g1" "$T/v2" >/dev/null 2>&1; [[ $? -eq 2 ]] && ok || bad "two arguments: not exit 2"
"$Q" check "$T/g1" --bogus >/dev/null 2>&1; [[ $? -eq 2 ]] && ok || bad "unknown option: not exit 2"
"$Q" check "$T/nope" >/dev/null 2>"$T/e"; [[ $? -eq 1 ]] && grep -q "not a directory" "$T/e" && ok || bad "missing dir"

# ---- config ----
"$Q" check "$S260" >"$T/out" 2>&1; [[ $? -eq 1 ]] && grep -q "not a quantized checkpoint" "$T/out" && ok || bad "FP16 model dir"
mk g1 noqc 'del cfg["quantization_config"]; side = None'
expect noqc 1 config error quantization_config
mk g1 sideonly 'del cfg["quantization_config"]'
expect sideonly 1 config error quantization_config
mk g1 nodesc 'del qc["desc_act"]; del side["desc_act"]'
expect nodesc 1 config error desc_act
mk g1 damp 'qc["damp_percent"] = side["damp_percent"] = 1.5'
expect damp 1 config error damp_percent
mk g1 badre 'qc["dynamic"] = side["dynamic"] = dict([("-:(", {})] + list(qc["dynamic"].items()))'
expect badre 1 config error '-:('
mk g1 nosidefile 'side = None'
expect nosidefile 0 config warning quantize_config.json
mk g1 basename 'qc["model_file_base_name"] = side["model_file_base_name"] = "gptq_model-4bit-32g"'
expect basename 1 config error model_file_base_name
mk g1 method 'qc["quant_method"] = side["quant_method"] = "fp8"'
expect method 1 config error quant_method

# ---- config-mirror ----
mk g1 mirror 'side["bits"] = 8'
expect mirror 1 config-mirror error quantize_config.json
mk g1 mirror2 'side["dynamic"] = {}'
expect mirror2 1 config-mirror error quantize_config.json
mk awq mirror3 'side["q_group_size"] = 64'
expect mirror3 1 config-mirror error quant_config.json

# ---- config-bits, config-group ----
mk g1 bits8 'qc["bits"] = side["bits"] = 8'
expect bits8 1 config-bits error model.layers.0.self_attn.q_proj.qzeros
mk g1 bits5 'qc["bits"] = side["bits"] = 5'
expect bits5 1 config-bits error bits
mk g1 dynbits 'qc["dynamic"] = side["dynamic"] = dict([("+:.*k_proj$", {"bits": 8})] + list(qc["dynamic"].items()))'
expect dynbits 1 config-bits error model.layers.0.self_attn.k_proj.qzeros
mk awq awqbits 'qc["bits"] = side["w_bit"] = 8'
expect awqbits 1 config-bits error bits
mk g1 gs64 'qc["group_size"] = side["group_size"] = 64'
expect gs64 1 config-group error model.layers.0.self_attn.q_proj
mk awq awqgs 'qc["group_size"] = side["q_group_size"] = -1'
expect awqgs 1 config-group error group_size

# ---- config-format ----
mk g1 fmt 'qc["checkpoint_format"] = side["checkpoint_format"] = "marlin"'
expect fmt 1 config-format error checkpoint_format
mk g1 v1asym 'qc["sym"] = side["sym"] = False'
expect v1asym 1 config-format error checkpoint_format
mk awq zp 'qc["zero_point"] = side["zero_point"] = False'
expect zp 1 config-format error zero_point
mk awq gemv 'qc["version"] = "gemv"; side["version"] = "GEMV"'
expect gemv 1 config-format error version

# ---- gidx-desc-act ----
G="model.layers.0.self_attn.q_proj.g_idx"
mk g1 gidx "put('$G', 0, struct.pack('<i', 1)); put('$G', 32, struct.pack('<i', 0))"
expect gidx 1 gidx-desc-act error "$G"
mk v2 actoff 'qc["desc_act"] = side["desc_act"] = False'
expect actoff 1 gidx-desc-act error g_idx
mk g1 acttrivial 'qc["desc_act"] = side["desc_act"] = True'
expect acttrivial 0 gidx-desc-act note desc_act
mk g1 gidxrange "put('$G', 3, struct.pack('<i', 7))"
expect gidxrange 1 gidx-desc-act error "$G"
mk v2 nogidx "drop('$G')"
expect nogidx 1 gidx-desc-act error model.layers.0.self_attn.q_proj
mk g1 nogidx1 "drop('$G')"
expect nogidx1 0 gidx-desc-act warning model.layers.0.self_attn.q_proj

# ---- sym-zeros ----
mk g1 zeros "put('model.layers.1.self_attn.v_proj.qzeros', 0, struct.pack('<I', 0x77777778))"
expect zeros 1 sym-zeros error model.layers.1.self_attn.v_proj.qzeros

# ---- declared-f16 ----
mk g1 nodyn 'del qc["dynamic"]; del side["dynamic"]'
expect nodyn 1 declared-f16 error model.layers.0.mlp.down_proj
mk g1 nomib 'del qc["modules_in_block_to_quantize"]; del side["modules_in_block_to_quantize"]'
expect nomib 1 declared-f16 error modules_in_block_to_quantize
mk g1 miblisted 'qc["modules_in_block_to_quantize"][0].append("mlp.up_proj"); side["modules_in_block_to_quantize"] = qc["modules_in_block_to_quantize"]'
expect miblisted 1 declared-f16 error model.layers.3.mlp.up_proj
mk g1 mibmissing 'qc["modules_in_block_to_quantize"][0].remove("self_attn.o_proj"); side["modules_in_block_to_quantize"] = qc["modules_in_block_to_quantize"]'
expect mibmissing 1 declared-f16 error model.layers.2.self_attn.o_proj
mk g1 skipq 'qc["dynamic"] = side["dynamic"] = dict([("-:.*\\.q_proj$", {})] + list(qc["dynamic"].items()))'
expect skipq 1 declared-f16 error model.layers.0.self_attn.q_proj
# the first matching rule decides: a positive rule ahead of the "-:" ones un-declares the kept down_proj
mk g1 firstwins 'qc["dynamic"] = side["dynamic"] = dict([("+:.*down_proj$", {})] + list(qc["dynamic"].items()))'
expect firstwins 1 declared-f16 error model.layers.4.mlp.down_proj
# vLLM asks `dynamic` about the fused name of quantized q/k/v
mk g1 fusedskip 'qc["dynamic"] = side["dynamic"] = dict(list(qc["dynamic"].items()) + [("-:.*qkv_proj$", {})])'
expect fusedskip 1 declared-f16 error model.layers.0.self_attn.qkv_proj
# AWQ: full paths alone (vLLM matches them, AutoAWQ does not); an entry matching quantized linears
mk awq fullpaths 'qc["modules_to_not_convert"] = side["modules_to_not_convert"] = ["model.layers.%d.mlp.%s" % (i, n) for i in range(5) for n in ("gate_proj", "up_proj", "down_proj")]'
expect fullpaths 1 declared-f16 error model.layers.0.mlp.gate_proj
"$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); e=[f for f in r['findings'] if f['rule']=='declared-f16' and f['level']=='error']; assert len(e)==15 and all('AutoAWQ' in f['message'] for f in e), e[:2]" "$T/j" \
    && ok || bad "full paths: only AutoAWQ's rule should fail"
mk awq mtncq 'qc["modules_to_not_convert"].append("self_attn.k"); side["modules_to_not_convert"] = qc["modules_to_not_convert"]'
expect mtncq 1 declared-f16 error model.layers.0.self_attn.k_proj
mk awq awqnodyn 'del qc["dynamic"]'
# the fused name of a kept gate/up: older vLLM and SGLang match modules_to_not_convert against it (a warning);
# listing it silences the warning
mk awq nofused 'qc["modules_to_not_convert"] = side["modules_to_not_convert"] = ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]'
expect nofused 0 declared-f16 warning model.layers.4.mlp.gate_up_proj
mk awq fused 'qc["modules_to_not_convert"] = side["modules_to_not_convert"] = ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.gate_up_proj"]'
"$Q" check --json "$T/fused" >"$T/j" 2>&1; [[ $? -eq 0 ]] && ! grep -q '"subject":.*gate_up_proj' "$T/j" && ok || bad "fused name listed: still a warning"
expect awqnodyn 1 declared-f16 error model.layers.0.mlp.up_proj

# ---- router, fused-bits ----
mk g1 router 'rename("model.layers.1.self_attn.q_proj", "model.layers.1.mlp.gate")'
expect router 1 router error model.layers.1.mlp.gate
mk g1 mixed 'rename("model.layers.2.self_attn.v_proj", "model.layers.2.mlp.up_proj"); drop("model.layers.2.mlp.up_proj.weight")'
expect mixed 1 fused-bits error model.layers.2.mlp.gate_up_proj
expect dynbits 1 fused-bits error model.layers.0.self_attn.qkv_proj
mk g1 experts 'rename("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.experts.0.gate_proj"); rename("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.experts.1.gate_proj")'
expect experts 1 fused-bits error model.layers.0.mlp.experts

# ---- shapes, tensors ----
mk g1 inter 'cfg["intermediate_size"] = 128'
expect inter 1 shapes error model.layers.0.mlp.gate_proj
mk g1 qscales 't["model.layers.0.self_attn.o_projx.qzeros"] = t.pop("model.layers.0.self_attn.o_proj.qzeros")'
expect qscales 1 shapes error model.layers.0.self_attn.o_proj
expect qscales 1 tensors error model.layers.0.self_attn.o_projx.qzeros
mk g1 both 't["model.layers.0.self_attn.k_proj.weight"] = ["F16", [32, 64], bytes(32 * 64 * 2)]'
expect both 1 tensors error model.layers.0.self_attn.k_proj
mk g1 tgi 't["gptq_bits"] = ["I32", [1], struct.pack("<i", 4)]'
expect tgi 1 tensors error gptq_bits
mk awq awqgidx 't["model.layers.0.self_attn.q_proj.g_idx"] = ["I32", [64], bytes(256)]'
expect awqgidx 1 tensors error model.layers.0.self_attn.q_proj.g_idx
mk g1 bf16scale 't["model.layers.0.self_attn.q_proj.scales"][0] = "BF16"'
expect bf16scale 0 shapes warning model.layers.0.self_attn.q_proj.scales
mk g1 outside 'rename("model.layers.0.self_attn.q_proj", "model.extra_proj")'
expect outside 1 tensors error model.extra_proj
mk g1 badscale 't["model.layers.0.self_attn.q_proj.scales"][0] = "I16"'
expect badscale 1 shapes error model.layers.0.self_attn.q_proj

# ---- lm-head ----
mk g1 tiedhead 't["lm_head.weight"] = list(t["model.embed_tokens.weight"])'
expect tiedhead 1 lm-head error lm_head.weight
mk g1 untied 'cfg["tie_word_embeddings"] = False'
expect untied 1 lm-head error lm_head.weight
mk g1 headflag 'qc["lm_head"] = side["lm_head"] = True'
expect headflag 1 lm-head error lm_head

# ---- finite ----
mk g1 nan "put('model.layers.3.self_attn.k_proj.scales', 37, b'\\x00\\x7e')"
expect nan 1 finite error model.layers.3.self_attn.k_proj.scales
grep -q '\[1\]\[5\] is NaN' "$T/j" && ok || bad "NaN position not named: $(grep -o '"message".*NaN[^"]*' "$T/j")"
mk g1 inf "put('model.layers.2.mlp.down_proj.weight', 1000, b'\\x00\\xfc')"
expect inf 1 finite error model.layers.2.mlp.down_proj.weight
grep -q '\[5\]\[140\] is infinite' "$T/j" && ok || bad "inf position not named"

# ---- shards ----
mk g1 orphan ''
cp "$T/orphan/model.safetensors" "$T/orphan/model-00002-of-00002.safetensors"
expect orphan 1 shards error model-00002-of-00002.safetensors
mk g1 fmtmeta 'meta["format"] = "tf"'
expect fmtmeta 1 shards error model.safetensors
# a sharded copy: good, then with a tensor the index forgets, and with one in two shards
shard='names = sorted(t); h = names[:len(names) // 2]; r = names[len(names) // 2:]
f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
st_save(os.path.join(d, f1), meta, {k: t[k] for k in h + (r[-1:] if HOW == "dup" else [])})
st_save(os.path.join(d, f2), meta, {k: t[k] for k in r})
wm = dict([(k, f1) for k in h] + [(k, f2) for k in r[:-1] if HOW != "forget"] + [(r[-1], f2)])
json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
t = None'
for how in good forget dup; do mk g1 sh_$how "HOW = '$how'
$shard"; done
expect sh_good 0; no_errors sh_good
expect sh_forget 1 shards error weights
expect sh_dup 1 shards error weights

# ---- tokenizer ----
mk g1 notok ''
rm "$T/notok/tokenizer.json"
expect notok 0 tokenizer warning tokenizer.json

echo "test_check: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
