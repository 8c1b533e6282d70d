#!/usr/bin/env bash
# GPU vs CPU, end to end (label gpu; needs a CUDA build and a GPU): the same quantization run on
# --device cpu and --device cuda must give perplexities within 0.5% of each other, and packed codes
# that agree except for a small fraction (the GPU's forward keeps fp16 activations like an fp16
# model, the CPU's is FP32, so Hessians differ in the last bits and GPTQ's error feedback can flip
# a rounding now and then; RTN depends on the weights alone and must agree exactly).
# Also: the GPU's failure modes (no such device, out of memory) leave no output.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
D=${QCAL_DATA:-../shared/data}
CMP=${QCAL_CMP_CODES:-$(dirname "$Q")/tests/qc_cmp_codes}
if ! nvidia-smi -L >/dev/null 2>&1; then echo "SKIP: no GPU on this machine"; exit 77; fi
if [[ ! -d "$D/stories260K-fp16" ]]; then echo "SKIP: $D/stories260K-fp16 not found"; exit 77; fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

# parity MODEL GS NSAMPLES SEQLEN EVALWIN CODE_BOUND NAME [quantize args...]
parity() {
    local model=$1 gs=$2 ns=$3 sl=$4 win=$5 bound=$6 name=$7; shift 7
    local mdir=$model; [[ $mdir == /* ]] || mdir="$D/$model"
    local args=(--model "$mdir" --calib "$D/text/c4.utf8" --nsamples "$ns" --seqlen "$sl" --group-size "$gs"
                --eval "$D/text/wiki.test.raw" --eval-seqlen "${EVAL_SEQLEN:-512}" --eval-max-windows "$win" --quiet "$@")
    local t0=$SECONDS
    "$Q" quantize "${args[@]}" --out "$T/$name-cpu" --device cpu >"$T/$name-cpu.out" 2>"$T/$name-cpu.err" \
        || { bad "$name cpu: $(tail -3 "$T/$name-cpu.err")"; return; }
    local t1=$SECONDS
    "$Q" quantize "${args[@]}" --out "$T/$name-gpu" --device cuda >"$T/$name-gpu.out" 2>"$T/$name-gpu.err" \
        || { bad "$name gpu: $(tail -3 "$T/$name-gpu.err")"; return; }
    local t2=$SECONDS
    local pc pg
    pc=$(sed -n 's/^perplexity: //p' "$T/$name-cpu.out"); pg=$(sed -n 's/^perplexity: //p' "$T/$name-gpu.out")
    local codes; codes=$("$CMP" 4 "$T/$name-cpu" "$T/$name-gpu") || { bad "$name: codes compare failed"; return; }
    local frac; frac=$(sed -n 's/^codes: [0-9]* of [0-9]* differ (\([0-9.]*\)).*/\1/p' <<<"$codes")
    printf "%-28s ppl cpu %10.4f  gpu %10.4f  rel %.2e   %s   (cpu %ds, gpu %ds)\n" "$name" "$pc" "$pg" \
        "$(python3 -c "print(abs($pc-$pg)/$pc)")" "$codes" $((t1-t0)) $((t2-t1))
    local pb=${PPL_BOUND:-0.005}
    python3 -c "import sys; sys.exit(0 if abs($pc-$pg)/$pc <= $pb else 1)" && ok || bad "$name: ppl differ by more than $pb"
    python3 -c "import sys; sys.exit(0 if $frac <= $bound else 1)" && ok || bad "$name: code fraction $frac > $bound"
    grep -Eq '"device":[[:space:]]*"NVIDIA' "$T/$name-gpu/qcal_report.json" && ok || bad "$name: report lacks the device"
}

if [[ "${QCAL_GPU_PARITY_ONLY_25M:-0}" != 1 ]]; then
parity stories260K-fp16 32 32 128 40 0     rtn-w4g32          --method rtn --format gptq
parity stories260K-fp16 32 32 128 40 0.05  gptq-w4g32         --method gptq
parity stories260K-fp16 32 32 128 40 0.05  gptq-w4g32-act-asym --method gptq --act-order --asym --format gptq_v2
parity stories260K-fp16 32 32 128 40 0.05  awq-w4g32          --method awq --nsamples 16
fi
# The GPU's fast paths against their plain twins, same checkpoint bit for bit: the stash (o_proj's and
# down_proj's inputs kept for the in-place pass, QCAL_GPU_NO_STASH=1 recomputes the half) over several
# forward batches (--batch-tokens), with act-order and the shared q/k/v and gate/up factorisations.
same_tensors() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
(ha, da), (hb, db) = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if ha == hb and da == db else 1)
PY
}
twin=(--model "$D/stories260K-fp16" --calib "$D/text/c4.utf8" --nsamples 32 --seqlen 128 --group-size 32 --method gptq
      --act-order --batch-tokens 1024 --device cuda)
"$Q" quantize "${twin[@]}" --out "$T/twin-fast" >/dev/null 2>"$T/twin-fast.err" &&
    QCAL_GPU_NO_STASH=1 "$Q" quantize "${twin[@]}" --out "$T/twin-plain" >/dev/null 2>"$T/twin-plain.err" &&
    grep -q "inputs kept between passes" "$T/twin-fast.err" && ! grep -q "inputs kept" "$T/twin-plain.err" &&
    same_tensors "$T/twin-fast" "$T/twin-plain" && { ok; echo "stash vs recompute (stories260K, GPTQ act-order, 4 batches): identical"; } ||
    bad "stash vs recompute: checkpoints differ or the stash was not taken: $(tail -2 "$T/twin-fast.err" "$T/twin-plain.err")"

# Linears sharing an input solved stacked (q/k/v as one problem, gpu_solve_run) against one by one
# (QCAL_GPU_NO_STACK=1): GPTQ's rows are independent, so only the GEMMs' rounding at another N may flip a
# code, and a flip feeds that row's later columns; the bound is the GPU-vs-CPU one above.
for act in "" --act-order; do
    stk=(--model "$D/stories260K-fp16" --calib "$D/text/c4.utf8" --nsamples 32 --seqlen 128 --group-size 32 --method gptq
         --device cuda $act)
    if "$Q" quantize "${stk[@]}" --out "$T/stack-on" >/dev/null 2>"$T/stack-on.err" &&
       QCAL_GPU_NO_STACK=1 "$Q" quantize "${stk[@]}" --out "$T/stack-off" >/dev/null 2>"$T/stack-off.err"; then
        codes=$("$CMP" 4 "$T/stack-on" "$T/stack-off")
        frac=$(sed -n 's/^codes: [0-9]* of [0-9]* differ (\([0-9.]*\)).*/\1/p' <<<"$codes")
        echo "stacked vs one by one (stories260K, GPTQ w4g32${act:+ act-order}): $codes"
        if grep -q "solved stacked" "$T/stack-on.err" && ! grep -q "solved stacked" "$T/stack-off.err" &&
           [[ -n $frac ]] && python3 -c "import sys; sys.exit(0 if $frac <= 0.05 else 1)"; then ok
        else bad "stacked vs one by one${act:+ (act-order)}: codes '$codes', or the stacked solve was not taken / not switched off"; fi
    else
        bad "stacked vs one by one${act:+ (act-order)}: $(tail -2 "$T/stack-on.err" "$T/stack-off.err")"
    fi
    rm -rf "$T/stack-on" "$T/stack-off"
done

# Every architecture end to end on the GPU (the random-weight fixtures of tests/data/arch, OPT's included: biases and an
# untied head, llama3 and linear RoPE, Mistral's sliding window, Qwen2, Qwen3's q/k norms), each with a
# byte-level tokenizer (ids 0-255 fit their 256-token vocabularies) and its F32 weights stored as F16
# (what the GPU computes with), so both devices quantize the same weights.
S=${QCAL_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
if [[ "${QCAL_GPU_PARITY_ONLY_25M:-0}" != 1 && -d "$S/tests/data/arch" ]]; then
    for a in "$S"/tests/data/arch/*/; do
        a=${a%/}; n=$(basename "$a")
        moe=0; grep -Eq '"num_(local_)?experts"' "$a/config.json" && moe=1
        if [[ $moe == 1 ]]; then # MoE: AWQ runs on the CPU only, refused on cuda before calibration, nothing written
            "$Q" quantize --model "$a" --out "$T/arch-$n-awq" --calib-tokens "$S/tests/data/parity/fixture-tokens.bin" \
                --sampling gptq --nsamples 16 --seqlen 128 --group-size 32 --method awq --format gptq_v2 --device cuda \
                --quiet \
                >"$T/arch-$n.out" 2>&1
            rc=$?
            [[ $rc -eq 1 ]] && grep -q "runs on the CPU only" "$T/arch-$n.out" && [[ ! -e $T/arch-$n-awq ]] && ok ||
                bad "arch-$n: MoE AWQ on cuda: rc $rc, $(tail -2 "$T/arch-$n.out")"
        fi
        cp -r "$a" "$T/arch-$n"
        python3 - "$T/arch-$n/tokenizer.json" <<'PY'
import json, sys
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, k = bs[:], 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + k); k += 1
vocab = {chr(c): b for b, c in zip(bs, cs)}
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": bl, "post_processor": None, "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": False, "vocab": vocab, "merges": []}}, open(sys.argv[1], "w"))
PY
        python3 - "$T/arch-$n/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
raw = open(p, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr, data = json.loads(raw[8:8 + n]), raw[8 + n:]
out, off, meta = bytearray(), 0, hdr.pop("__metadata__", None)
for name in sorted(hdr, key=lambda k: hdr[k]["data_offsets"][0]):
    t = hdr[name]; a, b = t["data_offsets"]; buf = data[a:b]
    if t["dtype"] == "F32":
        vals = struct.unpack("<%df" % ((b - a) // 4), buf)
        buf = struct.pack("<%de" % len(vals), *vals); t["dtype"] = "F16"
    t["data_offsets"] = [off, off + len(buf)]; off += len(buf); out += buf
if meta is not None: hdr["__metadata__"] = meta
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(p, "wb").write(struct.pack("<Q", len(h)) + h + bytes(out))
PY
        # the bound is these 2-3 layer random models' own calibration spread, measured on an H100: gemma3 with
        # --seed 0..3 gives 3628.8 / 3663.2 / 3700.5 / 3689.6 on the CPU and 3557.3 / 3693.8 / 3739.4 / 3695.6 on
        # the GPU (means 3670 and 3671), so seed 0 alone differs by 2.0% between the devices
        EVAL_SEQLEN=128 PPL_BOUND=0.03 parity "$T/arch-$n" 32 16 128 20 0.3 "arch-$n" --method gptq --act-order
        if [[ $moe == 1 ]]; then # each expert's routed tokens in the report, routers F16; the fused 3-D layout alike
            CHK=$S/tests/moe_check.py
            python3 "$CHK" report "$T/arch-$n-gpu" "$T/arch-$n" 16 128 any >"$T/arch-$n.chk" 2>&1 &&
                python3 "$CHK" routers "$T/arch-$n-gpu" "$T/arch-$n" >>"$T/arch-$n.chk" 2>&1 && ok ||
                bad "arch-$n: MoE report/routers: $(tail -2 "$T/arch-$n.chk")"
            python3 "$CHK" fuse "$T/arch-$n" "$T/arch-$n-fused" >/dev/null &&
                "$Q" quantize --model "$T/arch-$n-fused" --out "$T/arch-$n-fused-gpu" --calib "$D/text/c4.utf8" \
                    --nsamples 16 --seqlen 128 --group-size 32 --method gptq --act-order --device cuda --quiet \
                    >"$T/arch-$n-fused.out" 2>&1 &&
                python3 "$CHK" same-experts "$T/arch-$n-gpu" "$T/arch-$n-fused-gpu" >>"$T/arch-$n.chk" 2>&1 && ok ||
                bad "arch-$n: the fused layout on cuda: $(tail -2 "$T/arch-$n-fused.out") $(tail -1 "$T/arch-$n.chk")"
        fi
    done
fi

# qcal-llama-25m (8 layers): a flipped code changes the next layer's inputs, so differences compound
# layer after layer. Measured on an H100 (GPTQ act-order w4g128, 128 x 512, 100 windows): CPU 113.225,
# GPU 114.019 (0.70%, 12.4% of codes), while the GPU alone with calibration seed 1 instead of 0 gives
# 113.128 (0.79% from seed 0): the CPU/GPU difference is within the calibration's own spread. The CPU
# reference moves as much between machines: the same command on 2026-12-07 gave 112.426 on the device's
# CPU and 113.477 on the 2-core CI-class EPYC (0.93% apart; OpenBLAS picks other kernels), the GPU 113.605
# (1.05% from the first, 0.11% from the second), and a rounding-sized perturbation moves this perplexity by
# sd 1.6% (benchmarks/results/ref_parity.md section 3). So the GPTQ row's bound is 1.5%; the code
# fraction's is the measured one with margin.
if [[ -d "$D/qcal-llama-25m" && "${QCAL_GPU_PARITY_25M:-1}" == 1 ]]; then
    [[ "${QCAL_GPU_PARITY_AWQ_ONLY:-0}" == 1 ]] ||
        PPL_BOUND=0.015 parity qcal-llama-25m 128 128 512 100 0.2 25m-gptq-w4g128-act --method gptq --act-order
    PPL_BOUND=0.01 parity qcal-llama-25m 128 64 512 100 0.2  25m-awq-w4g128      --method awq
fi

# failure modes: a device that does not exist, a device too small; nothing written
common=(--model "$D/stories260K-fp16" --calib "$D/text/c4.utf8" --nsamples 8 --seqlen 64 --group-size 32 --quiet)
"$Q" quantize "${common[@]}" --out "$T/e1" --device cuda:63 >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 && ! -e "$T/e1" ]] && grep -q "cuda:63" "$T/err" && ok || bad "cuda:63: rc $rc $(cat "$T/err")"
QCAL_GPU_MEM_LIMIT_MB=1 "$Q" quantize "${common[@]}" --out "$T/e2" --device cuda >/dev/null 2>"$T/err"; rc=$?
# refused by the preflight plan ("does not fit: GPU memory: cuda:0 needs ... MiB") or, past it, by the allocator
[[ $rc -eq 1 && ! -e "$T/e2" ]] && grep -Eq "(out of GPU memory|does not fit: GPU memory): .* needs .* MiB" "$T/err" && ok \
    || bad "memory limit: rc $rc $(cat "$T/err")"
ls "$T" | grep -q "tmp-" && bad "temporary directory left: $(ls "$T")" || ok

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
