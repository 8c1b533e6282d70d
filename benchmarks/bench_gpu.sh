#!/usr/bin/env bash
# The GPU path at real scale, on synthetic models with real shapes (`qcal synth`: random weights,
# byte-level tokenizer; calibration text from WikiText-2), one command per measurement:
#
#   bench_gpu.sh gemm                 the cuBLAS fp16 GEMM rate of this device (the reference rate)
#   bench_gpu.sh gptq LIKE LAYERS     qcal GPTQ w4g128, 128 x 2048 tokens, --device cuda
#   bench_gpu.sh awq LIKE LAYERS      qcal AWQ w4g128, AWQ protocol 128 x 512
#   bench_gpu.sh torch LIKE LAYERS    benchmarks/gptq_torch_ref.py on the same model and tokens
#
# Each prints the phases (read, forward, Hessian, solve, pack/write), the achieved TFLOP/s of the
# forward and Hessian phases (FLOPs counted from the shapes as computed: causal attention once, the Hessians' lower tiles), peak GPU
# memory and host RSS. LIKE is a `qcal synth --like` preset; LAYERS how many decoder layers to build
# (per-layer figures scale to the full model: the note says which were scaled).
# Environment: QCAL (the qcal binary), BENCH_GEMM (bench_gemm), TEXT (wiki.test.raw),
# WORK (scratch directory with room for the synthetic model), NSAMPLES/SEQLEN to override.
set -euo pipefail
cd "$(dirname "$0")/.."
QCAL=${QCAL:-build-cuda/qcal}
BENCH_GEMM=${BENCH_GEMM:-build-cuda/benchmarks/bench_gemm}
TEXT=${TEXT:-../shared/data/text/wiki.test.raw}
WORK=${WORK:-/tmp/qcal-bench}
mode=${1:?usage: bench_gpu.sh gemm|gptq|awq|torch [LIKE LAYERS]}
like=${2:-llama-3.1-8b}; layers=${3:-4}
mkdir -p "$WORK"
model="$WORK/synth-$like-$layers"
if [[ $mode != gemm && ! -d $model ]]; then
    "$QCAL" synth --like "$like" --layers "$layers" --out "$model" >&2
fi
ns=${NSAMPLES:-128}
case $mode in
gemm) exec "$BENCH_GEMM" 8192 ;;
gptq|torch) sl=${SEQLEN:-2048}; split=file; sampling=gptq; method=gptq ;;
awq) sl=${SEQLEN:-512}; split=line; sampling=awq; method=awq ;;
*) echo "bench_gpu.sh: unknown mode $mode" >&2; exit 2 ;;
esac
recipe="$WORK/recipe-$mode.yaml"
cat >"$recipe" <<EOR
model: $model
method: $method
bits: 4
group_size: 128
calib:
  - path: $(readlink -f "$TEXT")
    split: $split
sampling: $sampling
nsamples: $ns
seqlen: $sl
seed: 0
device: cuda
EOR
# the calibration actually drawn (the AWQ protocol takes nsamples documents and may cut fewer blocks)
ns=$("$QCAL" calib "$recipe" 2>&1 | sed -n 's/^calibration: \([0-9]*\) x [0-9]* tokens.*/\1/p' | head -n 1)
[[ -n $ns ]] || { echo "bench_gpu.sh: qcal calib failed" >&2; exit 1; }
out="$WORK/q-$mode-$like-$layers"
rm -rf "$out" "$out.qcal-work"
if [[ $mode == torch ]]; then
    "$QCAL" calib "$recipe" --save "$WORK/tokens.i32" >/dev/null
    python3 benchmarks/gptq_torch_ref.py --model "$model" --nsamples "$ns" --seqlen "$sl" --wbits 4 --groupsize 128 \
        --tokens "$WORK/tokens.i32" --json "$WORK/torch.json"
    report="$WORK/torch.json"
else
    /usr/bin/time -v "$QCAL" quantize "$recipe" --out "$out" --quiet 2>"$WORK/time.log" >/dev/null \
        || { cat "$WORK/time.log" >&2; exit 1; }
    grep -E "^(time|gpu|summary):" "$WORK/time.log" >&2 || true
    report="$out/qcal_report.json"
fi
python3 - "$report" "$model/config.json" "$mode" "$ns" "$sl" "$WORK/time.log" <<'PY'
import json, sys, re
rep, cfg, mode, ns, T = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
d, ff, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = cfg.get("head_dim") or d // H
qd, kvd, R = H * hd, KV * hd, ns * T
qkv, o, gu, dn = 2 * R * d * (qd + 2 * kvd), 2 * R * qd * d, 2 * R * 2 * d * ff, 2 * R * ff * d
att = 2 * R * T * qd  # QK^T and PV, causal half
def tri(K):  # the share of a K x K Hessian qcal computes (gpu_forward.cu: lower tiles of 512 when K allows)
    B = K // 512
    return B * (B + 1) / 2 / (B * B) if K >= 1024 and K % 512 == 0 else 1.0
hq = 2 * R * (2 * d * d * tri(d) + qd * qd * tri(qd) + ff * ff * tri(ff))  # qcal: q/k/v share one, gate/up one
if mode == "awq":
    fwd = qkv + att + o + gu + dn
    hess = hq
elif mode == "torch":  # the reference: 4 capture passes of the whole layer + 1 with the quantized weights
    fwd = 5 * (qkv + att + o + gu + dn)
    hess = 2 * R * (3 * d * d + qd * qd + 2 * d * d + ff * ff)  # q, k, v each; gate, up each
elif rep.get("gpu_stash_bytes"):  # qcal true-sequential, o_proj's and down_proj's inputs kept: each part once
    fwd = qkv + att + o + gu + dn
    hess = hq
else:  # qcal true-sequential: attention half for the q/k/v and o captures, once more in place; MLP half likewise
    fwd = 2 * qkv + 2 * att + o + 2 * gu + dn
    hess = hq
s = rep["seconds"]
print(f"{mode} {cfg.get('qcal_synthetic_like', '')} layers={L} d={d} ff={ff} heads={H}/{KV} tokens={ns}x{T}")
for k in ("read", "embed", "forward", "hessian", "solve", "pack", "pack_write", "total"):
    if k in s:
        print(f"  {k:10s} {s[k]:8.2f} s   per layer {s[k] / L:7.3f} s")
if s.get("forward"):
    print(f"  forward   {fwd * L / 1e12:9.1f} TFLOP -> {fwd * L / s['forward'] / 1e12:6.1f} TFLOP/s")
if s.get("hessian"):
    print(f"  hessian   {hess * L / 1e12:9.1f} TFLOP -> {hess * L / s['hessian'] / 1e12:6.1f} TFLOP/s")
for k in ("gpu_peak_device_bytes", "gpu_peak_bytes", "gpu_stash_bytes", "peak_rss_bytes", "peak_gpu_bytes", "host_rss_bytes"):
    if k in rep:
        print(f"  {k:22s} {rep[k] / 2**30:7.2f} GiB")
try:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[6]).read())
    if m and mode != "torch": print(f"  max RSS (time -v)       {int(m.group(1)) / 2**20:7.2f} GiB")
except OSError:
    pass
PY
