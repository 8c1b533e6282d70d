#!/usr/bin/env python3
"""ref_parity_check.py REF CKPT [--max-code-diff F] [--max-scale-diff F] [--ties-ok]

Holds a qcal checkpoint CKPT to the reference implementations' values REF.json / REF.safetensors.gz
(benchmarks/ref_parity.py: IST-DASLab GPTQ fasterquant, AutoAWQ and llm-awq, run on the same windows).
Python standard library only, so CI checks it without torch.

For every linear the reference recorded: the integer codes (qcal's unpacked from qweight: GPTQ v1/v2
packing along K, 2/3/4/8 bits; AWQ GEMM packing along N with its nibble order), the group scales (the
reference's fp32 rounded to fp16, as qcal stores them, against qcal's fp16 through each one's g_idx) and
zero points. For AWQ also every group's searched ratio, against qcal_report.json's awq_ratio: a different
choice is a tie when the reference's own loss for qcal's ratio is within 1e-4 (relative) of its best.
Prints one line per layer and a summary; exits 1 when codes differ in more than --max-code-diff of all
elements (default 0.001), group scales in more than --max-scale-diff (default 0.002), or a ratio differs
without being a tie.
"""
import argparse
import gzip
import json
import os
import struct
import sys

DT = {"U8": ("B", 1), "I32": ("i", 4), "F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2)}


def read_st(data):
    (n,) = struct.unpack("<Q", data[:8])
    hdr = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        fmt, size = DT[v["dtype"]]
        a, b = v["data_offsets"]
        cnt = (b - a) // size
        out[k] = (v["shape"], struct.unpack("<%d%s" % (cnt, fmt), data[base + a:base + b]))
    return out


def read_ckpt(d, wanted):
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    t = {}
    for f in sorted(files):
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        (n,) = struct.unpack("<Q", data[:8])
        hdr = json.loads(data[8:8 + n])
        keep = {k for k in hdr if k != "__metadata__" and any(k.startswith(w) for w in wanted)}
        if keep:
            sub = read_st(data)
            t.update({k: sub[k] for k in keep})
    return t


def unpack_rows(words, rows, cols, bits, n_out):
    """Values packed along the row axis of a [rows, cols] int32 tensor as a little-endian bit stream per
    column (GPTQ qweight: 32/bits values per word, 3 bits: 32 values per 3 words). -> [n_out][cols]."""
    mask = (1 << bits) - 1
    out = [[0] * cols for _ in range(n_out)]
    per = 32 if bits == 3 else 32 // bits  # values per chunk
    wpc = 3 if bits == 3 else 1           # words per chunk
    for c in range(cols):
        for ch in range(rows // wpc):
            s = 0
            for w in range(wpc):
                s |= (words[(ch * wpc + w) * cols + c] & 0xFFFFFFFF) << (32 * w)
            for i in range(per):
                k = ch * per + i
                if k < n_out:
                    out[k][c] = (s >> (bits * i)) & mask
    return out


def unpack_cols(words, rows, cols, bits, n_out):
    """Values packed along the column axis (GPTQ qzeros): -> [rows][n_out]."""
    mask = (1 << bits) - 1
    per = 32 if bits == 3 else 32 // bits
    wpc = 3 if bits == 3 else 1
    out = []
    for r in range(rows):
        row = [0] * n_out
        for ch in range(cols // wpc):
            s = 0
            for w in range(wpc):
                s |= (words[r * cols + ch * wpc + w] & 0xFFFFFFFF) << (32 * w)
            for i in range(per):
                k = ch * per + i
                if k < n_out:
                    row[k] = (s >> (bits * i)) & mask
        out.append(row)
    return out


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
CLIP_TIE = 1e-3  # relative gap between the clip search's two best shrinks under which either may win


def unpack_awq(words, rows, cols):
    """AWQ GEMM: [rows, cols] int32, 8 nibbles per word along the output axis in AWQ_ORDER -> [rows][cols*8]."""
    out = []
    for r in range(rows):
        row = [0] * (cols * 8)
        for c in range(cols):
            w = words[r * cols + c] & 0xFFFFFFFF
            for i in range(8):
                row[c * 8 + AWQ_ORDER[i]] = (w >> (4 * i)) & 15
        out.append(row)
    return out


def f16(x):
    return struct.unpack("<e", struct.pack("<e", x))[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("ckpt")
    ap.add_argument("--max-code-diff", type=float, default=0.001)
    ap.add_argument("--max-scale-diff", type=float, default=0.002)
    a = ap.parse_args()
    meta = json.load(open(a.ref + ".json"))
    with gzip.open(a.ref + ".safetensors.gz", "rb") as f:
        ref = read_st(f.read())
    qcfg = json.load(open(os.path.join(a.ckpt, "config.json"))).get("quantization_config", {})
    rep = json.load(open(os.path.join(a.ckpt, "qcal_report.json")))
    bits, gs = meta["bits"], meta["group_size"]
    awq_fmt = qcfg.get("quant_method") == "awq"
    v1 = not awq_fmt and qcfg.get("checkpoint_format", "gptq") == "gptq"
    lins = sorted({k.rsplit(".", 1)[0] for k in ref})
    ck = read_ckpt(a.ckpt, [l + "." for l in lins])
    tot = dict(codes=0, code_diff=0, groups=0, scale_diff=0, zero_diff=0, ties=0)
    per_layer = {}
    bad = []
    for lin in lins:
        (N, K), rc = ref[lin + ".codes"]
        _, rs = ref[lin + ".scales"]
        _, rz = ref[lin + ".zeros"]
        G = len(rs) // N
        rg = ref[lin + ".g_idx"][1] if lin + ".g_idx" in ref else [k // gs for k in range(K)]
        if lin + ".qweight" not in ck:
            bad.append(f"{lin}: not quantized in {a.ckpt}")
            continue
        (qr, qc), qw = ck[lin + ".qweight"]
        Nq = qc * 8 if awq_fmt else qc  # the reference may hold only the first rows (--rows)
        (zr_, zc), qz = ck[lin + ".qzeros"]
        _, qs = ck[lin + ".scales"]
        if awq_fmt:
            codes = unpack_awq(qw, qr, qc)          # [K][N]
            zeros = unpack_awq(qz, zr_, zc)         # [G][N]
            qg = [k // gs for k in range(K)]
        else:
            codes = unpack_rows(qw, qr, qc, bits, K)  # [K][N]
            zeros = unpack_cols(qz, zr_, zc, bits, Nq)  # [G][Nq]
            qg = list(ck[lin + ".g_idx"][1]) if lin + ".g_idx" in ck else [k // gs for k in range(K)]
        cd = sum(1 for n in range(N) for k in range(K) if codes[k][n] != rc[n * K + k])
        # group params: compared per (row, reference group) at the group's first column
        first = {}
        for k in range(K):
            first.setdefault(rg[k], k)
        margin = ref[lin + ".clip_margin"][1] if lin + ".clip_margin" in ref else None
        sd = zd = td = 0
        tie_cols = set()
        for g, k in first.items():
            qgi = qg[k]
            for n in range(N):
                z = zeros[qgi][n] + (1 if v1 else 0)
                if f16(rs[n * G + g]) == qs[qgi * Nq + n] and z == int(round(rz[n * G + g])):
                    continue
                if margin is not None and margin[n * G + g] < CLIP_TIE:
                    td += 1  # a clip tie: either shrink is the reference's choice up to rounding
                    tie_cols.add((n, g))
                    continue
                sd += f16(rs[n * G + g]) != qs[qgi * Nq + n]
                zd += z != int(round(rz[n * G + g]))
        if tie_cols:
            cd = sum(1 for n in range(N) for k in range(K) if codes[k][n] != rc[n * K + k] and (n, rg[k]) not in tie_cols)
        li = int(lin.split(".")[2])
        pl = per_layer.setdefault(li, dict(codes=0, code_diff=0, groups=0, scale_diff=0, zero_diff=0, ties=0))
        for d in (pl, tot):
            d["codes"] += N * K
            d["code_diff"] += cd
            d["groups"] += N * len(first)
            d["scale_diff"] += sd
            d["zero_diff"] += zd
            d["ties"] += td
        if cd or sd or zd or td:
            print(f"  {lin}: codes {cd}/{N * K} differ, scales {sd}, zeros {zd} of {N * len(first)} groups"
                  + (f" (+{td} clip ties, codes there not counted)" if td else ""))
    for li, d in sorted(per_layer.items()):
        print(f"layer {li}: codes {d['code_diff']}/{d['codes']} differ, scales {d['scale_diff']}/{d['groups']}, "
              f"zeros {d['zero_diff']}/{d['groups']}, clip ties {d['ties']}")
    ratios = ties = 0
    if meta["algo"] != "gptq":
        got = {l["name"]: l.get("awq_ratio") for l in rep["linears"]}
        for g in meta["groups"]:
            if "ratio" not in g:
                if g.get("clip_padded"):
                    print(f"layer {g['layer']}: {', '.join(g['clip_padded'])}: the reference's clip search ran on "
                          f"rows padded to a multiple of 64 (rows are independent)")
                continue
            name = f"model.layers.{g['layer']}.{g['layers'][0]}"
            q = got.get(name)
            ratios += 1
            if q is None or abs(q - g["ratio"]) > 1e-9:
                h = g["history"]
                best = h[round(g["ratio"] * 20)]
                if q is not None and q >= 0 and abs(h[round(q * 20)] - best) <= 1e-4 * best:
                    ties += 1
                    print(f"tie: {name} group: qcal ratio {q}, reference {g['ratio']} "
                          f"(losses {h[round(q * 20)]:.9g} vs {best:.9g})")
                else:
                    bad.append(f"{name} group: qcal ratio {q}, reference {g['ratio']}")
        print(f"ratios: {ratios - ties - sum(1 for b in bad if 'ratio' in b)} of {ratios} equal, {ties} tie(s)")
    cf = tot["code_diff"] / max(1, tot["codes"])
    sf = tot["scale_diff"] / max(1, tot["groups"])
    print(f"{meta['config']} ({meta['algo']} w{bits} g{gs}{' act-order' if meta.get('act_order') else ''}, "
          f"{meta['model']}): codes {tot['code_diff']}/{tot['codes']} differ ({cf:.2e}), group scales "
          f"{tot['scale_diff']}/{tot['groups']} ({sf:.2e}), zeros {tot['zero_diff']}, clip ties {tot['ties']}")
    if cf > a.max_code_diff:
        bad.append(f"code difference {cf:.2e} > {a.max_code_diff}")
    if sf > a.max_scale_diff:
        bad.append(f"scale difference {sf:.2e} > {a.max_scale_diff}")
    for b in bad:
        print("FAIL: " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
