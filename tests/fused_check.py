#!/usr/bin/env python3
"""Fused linears (arch.h: Phi-3's qkv_proj and gate_up_proj) against their unfused twin, stdlib only.

  fused_check.py fuse SRC DST       writes DST: the Llama-layout model SRC (no biases, default rope) with
                                    q/k/v_proj stored as one qkv_proj and gate/up_proj as one gate_up_proj,
                                    config Phi3ForCausalLM: the same function as SRC (Phi3 = that layer math)
  fused_check.py tokenizer DIR      writes DIR/tokenizer.json: byte-level BPE whose 256 tokens are the bytes
                                    (no merges), so `qcal eval` runs on a 256-token fixture
  fused_check.py compare FUSED UNFUSED
                                    two qcal checkpoints of those models from the same windows and recipe:
                                    every fused tensor must equal its slices joined (packed tensors along N,
                                    F16 weights along rows, one g_idx), every other tensor must be identical
Prints one line per checkpoint pair; exit 1 on the first difference.
"""
import json
import os
import shutil
import struct
import sys

FUSED = {"self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
         "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"]}
ESIZE = {"F16": 2, "BF16": 2, "F32": 4, "I32": 4}


def read(path):
    d = open(path, "rb").read()
    (n,) = struct.unpack("<Q", d[:8])
    h = json.loads(d[8:8 + n])
    body = d[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}


def write(path, tensors):
    h, off, blobs = {}, 0, []
    for k in sorted(tensors):
        dt, sh, b = tensors[k]
        h[k] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hb = json.dumps(h).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def join(parts, axis):
    """Joins (dtype, shape, bytes) tensors along axis (0: rows; 1: columns of 2-D tensors)."""
    dt, sh0 = parts[0][0], parts[0][1]
    if axis == 0 or len(sh0) == 1:
        return dt, [sum(p[1][0] for p in parts)] + sh0[1:], b"".join(p[2] for p in parts)
    e = ESIZE[dt]
    rows = []
    for r in range(sh0[0]):
        rows.append(b"".join(p[2][r * p[1][1] * e:(r + 1) * p[1][1] * e] for p in parts))
    return dt, [sh0[0], sum(p[1][1] for p in parts)], b"".join(rows)


def model_tensors(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(read(os.path.join(d, f)))
    return t


def fuse(src, dst):
    os.makedirs(dst, exist_ok=True)
    t = model_tensors(src)
    cfg = json.load(open(os.path.join(src, "config.json")))
    out = {k: v for k, v in t.items() if not any("." + s + "." in k for ss in FUSED.values() for s in ss)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for fname, slices in FUSED.items():
            out[p + fname + ".weight"] = join([t[p + s + ".weight"] for s in slices], 0)
    write(os.path.join(dst, "model.safetensors"), out)
    cfg["architectures"] = ["Phi3ForCausalLM"]
    cfg["model_type"] = "phi3"
    for k in ("attention_bias", "mlp_bias"):
        if cfg.get(k):
            sys.exit(f"fuse: {src} has biases; Phi-3 has none")
        cfg.pop(k, None)
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)


def tokenizer(d):
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):  # GPT-2's bytes_to_unicode
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(bs, cs)}
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": bl, "post_processor": None, "decoder": bl,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                     "vocab": vocab, "merges": []}}
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)


def compare(fused, unfused):
    a, b = model_tensors(fused), model_tensors(unfused)
    seen, n = set(), 0
    for k, v in a.items():
        hit = [(f, s) for f, s in FUSED.items() if "." + f + "." in k]
        if hit:
            f, slices = hit[0]
            pre, suf = k.split("." + f + ".")
            names = [f"{pre}.{s}.{suf}" for s in slices]
            missing = [x for x in names if x not in b]
            if missing:
                sys.exit(f"FAIL: {k}: the unfused checkpoint lacks {missing[0]}")
            seen.update(names)
            if suf == "g_idx":
                for x in names:
                    if b[x][2] != v[2]:
                        sys.exit(f"FAIL: {k} differs from {x}")
            else:
                want = join([b[x] for x in names], 0 if suf in ("weight", "bias") else 1)
                if want[0] != v[0] or list(want[1]) != list(v[1]) or want[2] != v[2]:
                    sys.exit(f"FAIL: {k} {v[0]} {v[1]} is not its slices joined ({want[0]} {want[1]})")
        else:
            if k not in b or b[k][2] != v[2] or list(b[k][1]) != list(v[1]):
                sys.exit(f"FAIL: {k} differs")
            seen.add(k)
        n += 1
    extra = sorted(set(b) - seen)
    if extra:
        sys.exit(f"FAIL: the unfused checkpoint has {extra[0]} that the fused one does not")
    qa = json.load(open(os.path.join(fused, "config.json")))["quantization_config"]
    qb = json.load(open(os.path.join(unfused, "config.json")))["quantization_config"]
    for q in (qa, qb):
        q.pop("meta", None)
        q.pop("modules_to_not_convert", None)
        q.pop("dynamic", None)
    if qa != qb:
        sys.exit(f"FAIL: quantization_config differs: {qa} vs {qb}")
    print(f"ok: {fused}: {n} tensors, each fused one its slices joined")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "fuse":
        fuse(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "tokenizer":
        tokenizer(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
