#!/usr/bin/env python3
"""A plain PyTorch Llama / Mistral / Qwen2 / Qwen3 decoder with transformers' module layout, for running the
reference quantizers (benchmarks/ref_parity.py --local-model) where transformers is not installed.

The reference algorithms only need modules laid out as transformers lays them out (`model.layers[i]` with
`input_layernorm`, `self_attn.{q,k,v,o}_proj` (+ `q_norm`, `k_norm`), `post_attention_layernorm`,
`mlp.{gate,up,down}_proj`) whose forward computes the same function. This file builds that from a Hugging
Face directory (config.json with transformers 5's `rope_parameters`, *.safetensors in F32/F16/BF16) and
proves it with `--check`: the logits of each fixture's reference_logits.json (transformers' own F32 output)
must match to 1e-4. Rope: default, linear, llama3; Mistral's sliding window; Qwen2's q/k/v biases; Qwen3's
q/k RMSNorm; Llama's attention_bias/mlp_bias.

  python3 benchmarks/ref_model.py --check tests/data/arch/*
"""
import argparse
import json
import math
import os
import struct
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        (n,) = struct.unpack("<Q", data[:8])
        hdr = json.loads(data[8:8 + n])
        for k, v in hdr.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            buf = bytearray(data[8 + n + a:8 + n + b])
            t = torch.frombuffer(buf, dtype=_DT[v["dtype"]]) if b > a else torch.zeros(0, dtype=_DT[v["dtype"]])
            out[k] = t.reshape(v["shape"]).float()
    return out


class LocalRMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def inv_freq_of(c, hd):
    rp = c.get("rope_parameters") or {"rope_theta": c.get("rope_theta", 10000.0), **(c.get("rope_scaling") or {})}
    theta = rp.get("rope_theta", c.get("rope_theta", 10000.0))
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind == "linear":
        inv = inv / rp["factor"]
    elif kind == "llama3":
        factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
        lo_w, hi_w = old / lo, old / hi
        wl = 2 * math.pi / inv
        il = torch.where(wl > lo_w, inv / factor, inv)
        sm = (old / wl - lo) / (hi - lo)
        smoothed = (1 - sm) * il / factor + sm * il
        med = ~(wl < hi_w) * ~(wl > lo_w)
        inv = torch.where(med, smoothed, il)
    elif kind != "default":
        raise SystemExit(f"rope_type {kind}: not supported here")
    return inv


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LocalAttention(nn.Module):
    def __init__(self, c, arch):
        super().__init__()
        d, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        hd = c.get("head_dim") or d // H
        self.H, self.KV, self.hd = H, KV, hd
        qkv_b = arch == "qwen2" or c.get("attention_bias", False)
        o_b = arch != "qwen2" and c.get("attention_bias", False)
        self.q_proj = nn.Linear(d, H * hd, bias=qkv_b)
        self.k_proj = nn.Linear(d, KV * hd, bias=qkv_b)
        self.v_proj = nn.Linear(d, KV * hd, bias=qkv_b)
        self.o_proj = nn.Linear(H * hd, d, bias=o_b)
        if arch == "qwen3":
            self.q_norm = LocalRMSNorm(hd, c["rms_norm_eps"])
            self.k_norm = LocalRMSNorm(hd, c["rms_norm_eps"])

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.H, self.hd)
        k = self.k_proj(hidden_states).view(B, T, self.KV, self.hd)
        v = self.v_proj(hidden_states).view(B, T, self.KV, self.hd).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = position_embeddings
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.KV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * self.hd ** -0.5
        if attention_mask is not None:
            w = w + attention_mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(o), None


class LocalMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, I, b = c["hidden_size"], c["intermediate_size"], c.get("mlp_bias", False)
        self.gate_proj = nn.Linear(d, I, bias=b)
        self.up_proj = nn.Linear(d, I, bias=b)
        self.down_proj = nn.Linear(I, d, bias=b)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LocalDecoderLayer(nn.Module):
    def __init__(self, c, arch):
        super().__init__()
        self.input_layernorm = LocalRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = LocalAttention(c, arch)
        self.post_attention_layernorm = LocalRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = LocalMLP(c)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, **kwargs):
        r = hidden_states
        h, _ = self.self_attn(self.input_layernorm(hidden_states), position_embeddings=position_embeddings,
                              attention_mask=attention_mask)
        h = r + h
        return h + self.mlp(self.post_attention_layernorm(h))


class LocalInner(nn.Module):
    def __init__(self, c, arch):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([LocalDecoderLayer(c, arch) for _ in range(c["num_hidden_layers"])])
        self.norm = LocalRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.register_buffer("inv_freq", inv_freq_of(c, hd), persistent=False)
        sw = c.get("sliding_window")
        self.window = sw if sw and (arch == "mistral" or c.get("use_sliding_window")) else None

    def forward(self, input_ids, use_cache=False, **kwargs):
        B, T = input_ids.shape
        dev = input_ids.device
        h = self.embed_tokens(input_ids)
        pos = torch.arange(T, device=dev).float()
        fr = torch.outer(pos, self.inv_freq.to(dev))
        emb = torch.cat((fr, fr), dim=-1)
        pe = (emb.cos()[None], emb.sin()[None])
        i = torch.arange(T, device=dev)
        allowed = i[None, :] <= i[:, None]
        if self.window:
            allowed &= i[:, None] - i[None, :] < self.window
        mask = torch.zeros(T, T, device=dev).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_embeddings=pe)
            h = out[0] if isinstance(out, (tuple, list)) else out
        return self.norm(h)


class LocalModel(nn.Module):
    def __init__(self, d):
        super().__init__()
        c = json.load(open(os.path.join(d, "config.json")))
        arch = c["model_type"]
        if arch not in ("llama", "mistral", "qwen2", "qwen3"):
            raise SystemExit(f"{d}: model_type {arch} not supported here")
        self.config = types.SimpleNamespace(model_type=arch, vocab_size=c["vocab_size"], use_cache=False)
        self.model = LocalInner(c, arch)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        sd = read_safetensors(d)
        if "lm_head.weight" not in sd:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise SystemExit(f"{d}: missing {missing}, unexpected {unexpected}")

    def forward(self, input_ids):
        return self.lm_head(self.model(input_ids))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", nargs="+", required=True, help="model dirs with reference_logits.json")
    a = ap.parse_args()
    bad = 0
    for d in a.check:
        r = json.load(open(os.path.join(d, "reference_logits.json")))
        m = LocalModel(d).eval()
        with torch.no_grad():
            out = m(torch.tensor([r["input_ids"]]))[0]
        ref = torch.tensor(r["logits"])
        err = (out - ref).abs().max().item()
        print(f"{d}: max |logit - transformers| = {err:.2e}")
        bad += err > 1e-4
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
