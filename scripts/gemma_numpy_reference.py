#!/usr/bin/env python3
"""A float64 numpy restatement of transformers' Gemma-2 / Gemma-3 (text) forward pass, for checking qcal's
Gemma forward where torch is not installed. It writes small random-weight models in the layout and with the
configs of scripts/make_arch_fixtures.py's gemma2 / gemma3 variants (config.json, model.safetensors F32,
reference_logits.json with a fixed 40-token input), and their logits as this reading of
transformers.models.gemma2 / gemma3 computes them: embeddings * sqrt(hidden) (float32 normalizer), (1 + w)
RMSNorms, pre/post norms around attention and MLP, GELU-tanh gating, query_pre_attn_scalar ** -0.5, score
soft-capping before the mask, sliding window (j > i - window) on the layer_types' sliding layers, Gemma-3's
q/k norms and local rope base on sliding layers (linear scaling on full layers only), final logit soft-capping.

It is not transformers: make_arch_fixtures.py's outputs (tests/data/arch/gemma2, gemma3) are the reference;
this is the torch-free cross-check used while they were being made.

usage: gemma_numpy_reference.py OUTDIR      (writes OUTDIR/gemma2 and OUTDIR/gemma3)
"""
import json, os, struct, sys
import numpy as np

def write_st(path, tensors):
    hdr = {}; off = 0; blobs = []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype=np.float32).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)

def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)

def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

def rope_tables(theta, hd, T, factor=1.0):
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd) / factor
    ang = np.arange(T)[:, None] * inv[None, :]
    return np.cos(ang), np.sin(ang)

def apply_rope(x, c, s):  # x [T, h, hd]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c = c[:, None, :]; s = s[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], -1)

def build(name, cfg, out, seed):
    rng = np.random.default_rng(seed)
    d, ff, L, nh, nkv, hd, V = (cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size"))
    W = {}
    W["model.embed_tokens.weight"] = 0.15 * rng.standard_normal((V, d))
    g3 = cfg["model_type"] == "gemma3_text"
    for i in range(L):
        p = f"model.layers.{i}."
        W[p + "self_attn.q_proj.weight"] = 0.15 * rng.standard_normal((nh * hd, d))
        W[p + "self_attn.k_proj.weight"] = 0.15 * rng.standard_normal((nkv * hd, d))
        W[p + "self_attn.v_proj.weight"] = 0.15 * rng.standard_normal((nkv * hd, d))
        W[p + "self_attn.o_proj.weight"] = 0.15 * rng.standard_normal((d, nh * hd))
        W[p + "mlp.gate_proj.weight"] = 0.15 * rng.standard_normal((ff, d))
        W[p + "mlp.up_proj.weight"] = 0.15 * rng.standard_normal((ff, d))
        W[p + "mlp.down_proj.weight"] = 0.15 * rng.standard_normal((d, ff))
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            W[p + n + ".weight"] = 1.0 + 0.2 * rng.standard_normal(d)
        if g3:
            W[p + "self_attn.q_norm.weight"] = 1.0 + 0.2 * rng.standard_normal(hd)
            W[p + "self_attn.k_norm.weight"] = 1.0 + 0.2 * rng.standard_normal(hd)
    W["model.norm.weight"] = 1.0 + 0.2 * rng.standard_normal(d)
    W = {k: v.astype(np.float32).astype(np.float64) for k, v in W.items()}
    T = 40
    ids = rng.integers(3, V, T); ids[0] = 1
    eps = cfg["rms_norm_eps"]
    x = W["model.embed_tokens.weight"][ids] * np.float32(np.sqrt(d))
    types = cfg["layer_types"]
    win = cfg["sliding_window"]
    scale = cfg["query_pre_attn_scalar"] ** -0.5
    acap = cfg.get("attn_logit_softcapping"); fcap = cfg.get("final_logit_softcapping")
    if g3:
        cg, sg = rope_tables(cfg["rope_theta"], hd, T, cfg["rope_scaling"]["factor"])
        cl, sl = rope_tables(cfg["rope_local_base_freq"], hd, T)
    else:
        cg, sg = rope_tables(cfg["rope_theta"], hd, T); cl, sl = cg, sg
    for i in range(L):
        p = f"model.layers.{i}."
        sliding = types[i] == "sliding_attention"
        h = rms(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        if g3:
            q = rms(q, W[p + "self_attn.q_norm.weight"], eps); k = rms(k, W[p + "self_attn.k_norm.weight"], eps)
        c, s = (cl, sl) if sliding else (cg, sg)
        q = apply_rope(q, c, s); k = apply_rope(k, c, s)
        o = np.zeros((T, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)
            S = q[:, hh] @ k[:, kv].T * scale
            if acap: S = np.tanh(S / acap) * acap
            ii, jj = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
            mask = jj <= ii
            if sliding: mask &= jj > ii - win
            S = np.where(mask, S, -np.inf)
            S = np.exp(S - S.max(-1, keepdims=True)); S /= S.sum(-1, keepdims=True)
            o[:, hh] = S @ v[:, kv]
        a = o.reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = x + rms(a, W[p + "post_attention_layernorm.weight"], eps)
        h = rms(x, W[p + "pre_feedforward_layernorm.weight"], eps)
        m = (gelu_tanh(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        x = x + rms(m, W[p + "post_feedforward_layernorm.weight"], eps)
    x = rms(x, W["model.norm.weight"], eps)
    logits = x @ W["model.embed_tokens.weight"].T
    if fcap: logits = np.tanh(logits / fcap) * fcap
    os.makedirs(out, exist_ok=True)
    write_st(os.path.join(out, "model.safetensors"), W)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    json.dump({"input_ids": ids.tolist(), "logits": logits.tolist(), "note": "numpy float64 reference"},
              open(os.path.join(out, "reference_logits.json"), "w"))
    print(name, "ok", np.abs(logits).max())

base = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            tie_word_embeddings=True, rms_norm_eps=1e-6, torch_dtype="float32")
g2 = dict(base, architectures=["Gemma2ForCausalLM"], model_type="gemma2", head_dim=16, query_pre_attn_scalar=24,
          sliding_window=8, attn_logit_softcapping=5.0, final_logit_softcapping=3.0, rope_theta=10000.0,
          hidden_activation="gelu_pytorch_tanh", layer_types=["sliding_attention", "full_attention"])
g3 = dict(base, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", num_hidden_layers=3, head_dim=32,
          query_pre_attn_scalar=32, sliding_window=8, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
          rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
          attn_logit_softcapping=None, final_logit_softcapping=None, hidden_activation="gelu_pytorch_tanh")
out = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
build("gemma2", g2, os.path.join(out, "gemma2"), 1)
build("gemma3", g3, os.path.join(out, "gemma3"), 2)
