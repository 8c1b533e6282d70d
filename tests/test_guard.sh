#!/usr/bin/env bash
# Unattended runs never lose data (stories260K, a private copy per case):
#   - the work directory: created fresh and stamped; an existing directory without the stamp (".",
#     the model directory, an empty one) is refused and left as it was; cleanup removes only our files;
#   - OUT and the work directory may not be, contain or lie inside the model or an input file;
#     --overwrite replaces only a checkpoint qcal wrote;
#   - one run per output: a second run exits 1 naming the pid that holds the lock;
#   - leftovers of killed runs carrying qcal's stamp are removed, others kept;
#   - non-finite and beyond-F16 input weights are errors naming tensor and element (--clamp-f16 clamps);
#   - mistakes are found before any calibration output (no token-sha256 line, nothing written);
#   - a model file truncated during the run is an error naming the file (not a SIGBUS);
#   - signals and out of memory give the right status and message.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
. "$(dirname "$0")/data.sh"
if [[ ! -d "$S260" ]]; then echo "SKIP: $S260 not found"; exit 77; fi
T=$(mktemp -d); trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
snap() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) ; }   # a directory's content
cp -r "$S260" "$T/model"; chmod -R u+w "$T/model"
cp "$TINY" "$T/calib.txt"
common=(--model "$T/model" --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 32 --quiet)
model_snap=$(snap "$T/model")
model_intact() { [[ "$(snap "$T/model")" == "$model_snap" ]]; }
# expect_refused LABEL PATTERN CMD...: exit 1, message matching PATTERN, no token-sha256 line (nothing sampled)
expect_refused() {
    local label=$1 pat=$2; shift 2
    "$@" >"$T/o" 2>"$T/e"; local rc=$?
    if [[ $rc -eq 1 ]] && grep -qiE -- "$pat" "$T/e" && ! grep -q token-sha256 "$T/o" && model_intact; then ok
    else bad "$label: rc $rc, stderr: $(cat "$T/e")"; fi
}

# ---- the work directory ----
mkdir -p "$T/cwd"; echo keep >"$T/cwd/mine.txt"
(cd "$T/cwd" && expect_refused "--work-dir ." "no qcal stamp" "$Q" quantize "${common[@]}" --out "$T/o1" --work-dir .)
[[ -f "$T/cwd/mine.txt" && ! -e "$T/o1" ]] && ok || bad "--work-dir . touched the directory"
expect_refused "--work-dir MODEL" "model directory" "$Q" quantize "${common[@]}" --out "$T/o2" --work-dir "$T/model"
mkdir "$T/empty"
expect_refused "--work-dir empty unstamped" "no qcal stamp" "$Q" quantize "${common[@]}" --out "$T/o3" --work-dir "$T/empty"
[[ -d "$T/empty" ]] && ok || bad "the unstamped directory was removed"
expect_refused "--out o --work-dir o" "work-dir.*output directory|output directory" \
    "$Q" quantize "${common[@]}" --out "$T/o4" --work-dir "$T/o4" --overwrite
[[ ! -e "$T/o4" ]] && ok || bad "--out o --work-dir o created o"
# a file the user put into the work directory is left there (and so is the directory)
"$Q" quantize "${common[@]}" --out "$T/o5" --work-dir "$T/w5" --keep-work >/dev/null 2>&1
echo mine >"$T/w5/notes.txt"
"$Q" quantize "${common[@]}" --out "$T/o5" --work-dir "$T/w5" --overwrite >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 0 && -f "$T/w5/notes.txt" && ! -e "$T/w5/base.safetensors" && ! -e "$T/w5/qcal-work.json" ]] \
    && grep -q "notes.txt was not written by qcal" "$T/e" && ok || bad "cleanup removed or kept the wrong files: rc $rc $(ls "$T/w5")"
# the default work directory goes away after success
"$Q" quantize "${common[@]}" --out "$T/o6" >/dev/null 2>&1 && [[ -d "$T/o6" && ! -e "$T/o6.qcal-work" && ! -e "$T/o6.qcal-lock" ]] \
    && ok || bad "default work dir or lock left: $(ls "$T")"

# ---- OUT against the model and the inputs ----
expect_refused "--out MODEL" "model directory" "$Q" quantize "${common[@]}" --out "$T/model" --overwrite
expect_refused "--out PARENT_OF_MODEL --overwrite" "contains the model directory" "$Q" quantize "${common[@]}" --out "$T" --overwrite
expect_refused "--out inside MODEL" "lies inside the model directory" "$Q" quantize "${common[@]}" --out "$T/model/q"
expect_refused "--out is the calib file" "input" "$Q" quantize "${common[@]}" --out "$T/calib.txt" --overwrite
[[ -f "$T/calib.txt" ]] && ok || bad "calib file removed"
mkdir "$T/data"; cp "$T/calib.txt" "$T/data/c.txt"
expect_refused "--out holds the calib file" "contains the input" "$Q" quantize --model "$T/model" --calib "$T/data/c.txt" \
    --nsamples 8 --seqlen 128 --group-size 32 --out "$T/data" --overwrite --quiet
[[ -f "$T/data/c.txt" ]] && ok || bad "calib file removed"
mkdir "$T/user"; echo precious >"$T/user/a.txt"
expect_refused "--overwrite of a directory qcal did not write" "not written by qcal" \
    "$Q" quantize "${common[@]}" --out "$T/user" --overwrite
[[ -f "$T/user/a.txt" ]] && ok || bad "--overwrite removed a user directory"
"$Q" quantize "${common[@]}" --out "$T/o6" --overwrite >/dev/null 2>&1 && ok || bad "--overwrite of qcal's own checkpoint"
expect_refused "existing out without --overwrite" "already exists" "$Q" quantize "${common[@]}" --out "$T/o6"
# a recipe file inside OUT
mkdir -p "$T/o7"; printf 'nsamples: 8\nseqlen: 128\n' >"$T/o7/r.yaml"
expect_refused "recipe inside --out" "input" "$Q" quantize "$T/o7/r.yaml" "${common[@]}" --out "$T/o7" --overwrite
[[ -f "$T/o7/r.yaml" ]] && ok || bad "recipe removed"

# ---- one run per output ----
M25=$D/qcal-llama-25m
if [[ -d "$M25" ]]; then
    "$Q" quantize --model "$M25" --calib "$D/text/c4.utf8" --nsamples 16 --seqlen 256 --out "$T/lk" --quiet >/dev/null 2>&1 &
    p1=$!
    for _ in $(seq 100); do [[ -f "$T/lk.qcal-work/status.json" ]] && break; sleep 0.05; done
    "$Q" quantize --model "$M25" --calib "$D/text/c4.utf8" --nsamples 16 --seqlen 256 --out "$T/lk" --quiet >/dev/null 2>"$T/e"; rc=$?
    [[ $rc -eq 1 ]] && grep -q "another qcal run (pid $p1)" "$T/e" && ok || bad "second run on the same out: rc $rc $(cat "$T/e")"
    wait $p1 && [[ -f "$T/lk/model.safetensors" ]] && ok || bad "the first run did not finish"
else
    echo "SKIP (lock case): $M25 not found"
fi
# a lock file left by a killed run does not block (flock dies with its holder)
echo 99999 >"$T/o8.qcal-lock"
"$Q" quantize "${common[@]}" --out "$T/o8" >/dev/null 2>&1 && [[ ! -e "$T/o8.qcal-lock" ]] && ok || bad "stale lock file blocked"
# a live holder blocks
flock "$T/o9.qcal-lock" sleep 3 & fl=$!; sleep 0.3
expect_refused "lock held" "another qcal run" "$Q" quantize "${common[@]}" --out "$T/o9"
kill $fl 2>/dev/null; wait $fl 2>/dev/null

# ---- leftovers of killed runs ----
mkdir "$T/o10.tmp-AbC123" "$T/o10.tmp-zzzzzz"; echo qcal >"$T/o10.tmp-AbC123/.qcal-tmp"; echo x >"$T/o10.tmp-zzzzzz/f"
"$Q" quantize "${common[@]}" --out "$T/o10" >/dev/null 2>"$T/e"
[[ ! -e "$T/o10.tmp-AbC123" && -f "$T/o10.tmp-zzzzzz/f" ]] && ok || bad "leftovers: $(ls "$T" | grep o10)"
# the work directory is made as <work>.tmp-XXXXXX holding its stamp, then renamed into place (a run killed in
# between used to leave an unstamped work directory that the rerun refused): a stamped leftover goes, others stay
mkdir "$T/o10w.qcal-work.tmp-AbC123" "$T/o10w.qcal-work.tmp-zzzzzz"; echo '{}' >"$T/o10w.qcal-work.tmp-AbC123/qcal-work.json"
echo x >"$T/o10w.qcal-work.tmp-zzzzzz/f"
"$Q" quantize "${common[@]}" --out "$T/o10w" --keep-work >/dev/null 2>"$T/e"
[[ ! -e "$T/o10w.qcal-work.tmp-AbC123" && -f "$T/o10w.qcal-work.tmp-zzzzzz/f" && -f "$T/o10w.qcal-work/qcal-work.json" &&
   $(stat -c %a "$T/o10w.qcal-work") == 7[57]5 ]] && ok || bad "work dir leftovers: $(ls "$T" | grep o10w) $(tail -2 "$T/e")"

# ---- numerical guards ----
poke() { # poke DIR TENSOR INDEX VALUE: set one F32 element of a copy of the model
    python3 - "$@" <<'PY'
import json, struct, sys
d, name, idx, val = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
p = d + "/model.safetensors"
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
off = 8 + n + h[name]["data_offsets"][0] + 4 * idx
b[off:off + 4] = struct.pack("<f", val)
open(p, "wb").write(b)
PY
}
cp -r "$T/model" "$T/nan"; poke "$T/nan" model.layers.2.self_attn.k_proj.weight 70 nan
"$Q" quantize --model "$T/nan" --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 32 --out "$T/o11" --quiet >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 1 && ! -e "$T/o11" ]] && grep -q "model.layers.2.self_attn.k_proj.weight: element \[1, 6\] is nan" "$T/e" \
    && ok || bad "NaN weight: rc $rc $(cat "$T/e")"
cp -r "$T/model" "$T/inf"; poke "$T/inf" model.embed_tokens.weight 5 inf
"$Q" quantize --model "$T/inf" --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 32 --out "$T/o12" --quiet >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 1 && ! -e "$T/o12" ]] && grep -q "model.embed_tokens.weight" "$T/e" && grep -qi "not finite" "$T/e" \
    && ok || bad "inf weight: rc $rc $(cat "$T/e")"
cp -r "$T/model" "$T/big"; poke "$T/big" model.layers.1.post_attention_layernorm.weight 3 1e6
"$Q" quantize --model "$T/big" --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 32 --out "$T/o13" --quiet >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 1 && ! -e "$T/o13" ]] && grep -q "post_attention_layernorm.weight: element 3 = 1e+06 is beyond the F16 range" "$T/e" \
    && grep -q -- "--clamp-f16" "$T/e" && ok || bad "beyond F16: rc $rc $(cat "$T/e")"
"$Q" quantize --model "$T/big" --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 32 --out "$T/o13" --clamp-f16 --quiet >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 0 ]] && python3 - "$T/o13" <<'PY' && ok || bad "--clamp-f16: rc $rc $(cat "$T/e")"
import json, struct, sys
b = open(sys.argv[1] + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
t = h["model.layers.1.post_attention_layernorm.weight"]; o = 8 + n + t["data_offsets"][0]
assert t["dtype"] == "F16" and struct.unpack("<e", b[o + 6:o + 8])[0] == 65504.0
PY

# ---- mistakes found before calibration ----
expect_refused "missing eval file" "nothere.txt" "$Q" quantize "${common[@]}" --out "$T/o14" --eval "$T/nothere.txt"
expect_refused "shard size 0" "max-shard-size" "$Q" quantize "${common[@]}" --out "$T/o15" --max-shard-size 0
expect_refused "group size fitting no linear" "none of this model's linears" "$Q" quantize --model "$T/model" \
    --calib "$T/calib.txt" --nsamples 8 --seqlen 128 --group-size 24 --out "$T/o16" --quiet
expect_refused "missing calib file" "nocalib.txt" "$Q" quantize --model "$T/model" --calib "$T/nocalib.txt" \
    --nsamples 8 --seqlen 128 --group-size 32 --out "$T/o17" --quiet
ls "$T" | grep -qE '^o1[4-7]' && bad "refused runs left files: $(ls "$T")" || ok

# ---- a model file that shrinks during the run: an error naming it, never a SIGBUS ----
if [[ -d "$M25" ]]; then
    cp -r "$M25" "$T/m25"; chmod -R u+w "$T/m25"
    "$Q" quantize --model "$T/m25" --calib "$D/text/c4.utf8" --nsamples 16 --seqlen 256 --out "$T/o18" --quiet >/dev/null 2>"$T/e" &
    p=$!
    for _ in $(seq 200); do grep -q '"layer": 1' "$T/o18.qcal-work/status.json" 2>/dev/null && break; sleep 0.05; done
    last=$(ls "$T/m25"/model-0000*.safetensors | tail -n 1)
    truncate -s 100000 "$last"
    wait $p; rc=$?
    [[ $rc -eq 1 ]] && grep -q "$(basename "$last") changed while it was being read" "$T/e" && ok \
        || bad "truncated model file: rc $rc $(tail -n 2 "$T/e")"
fi

# ---- out of memory is named as such ----
"$Q" quantize --model "$T/model" --calib "$T/calib.txt" --nsamples 1000000 --seqlen 2048 \
    --group-size 32 --out "$T/o19" --quiet >"$T/o" 2>"$T/e"; rc=$?
[[ $rc -eq 1 && ! -e "$T/o19" ]] && grep -q "host RAM: the run needs" "$T/e" && grep -q -- "--nsamples" "$T/e" \
    && ! grep -q token-sha256 "$T/o" && ok || bad "plan refusal: rc $rc $(cat "$T/e")"
# a JSON parse that runs out of memory (allocation failure injected after N cJSON allocations)
for n in 100 5000; do
    QCAL_TEST_JSON_ALLOC_FAIL=$n "$Q" quantize "${common[@]}" --out "$T/o20" >/dev/null 2>"$T/e"; rc=$?
    [[ $rc -eq 1 ]] && grep -q "out of memory" "$T/e" && ! grep -qi "invalid JSON\|not valid JSON" "$T/e" \
        && ok || bad "JSON out of memory ($n): rc $rc $(cat "$T/e")"
done
# awq sampling that finds too little text asks for a longer seqlen (it takes documents up to seqlen tokens)
"$Q" quantize --model "$T/model" --calib "$T/calib.txt" --method awq --sampling awq --nsamples 1 --seqlen 64 \
    --group-size 32 --out "$T/o21" --quiet >/dev/null 2>"$T/e"; rc=$?
[[ $rc -eq 0 ]] || grep -q "longer --seqlen" "$T/e" && ok || bad "awq seqlen advice: rc $rc $(cat "$T/e")"

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
