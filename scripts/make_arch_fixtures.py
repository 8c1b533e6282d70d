#!/usr/bin/env python3
"""Builds small random-weight Hugging Face models, one per architecture variant qcal supports, and
records transformers' F32 logits for a fixed input. The outputs are test fixtures for qcal's forward
pass (tests/data/arch/<name>/). Needs torch + transformers (run it where they are installed; the
files it writes are committed, so the tests themselves need neither).

usage: make_arch_fixtures.py OUTDIR [NAME ...]   (default: every variant; each variant's weights depend only on
                                                  its own seed, so one can be made alone)
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 256
T = 40

BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)

VARIANTS = {
    "llama-bias-untied": ("llama", dict(attention_bias=True, mlp_bias=True, tie_word_embeddings=False)),
    "llama3-rope": ("llama", dict(tie_word_embeddings=True, rope_theta=500000.0,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "llama-linear-rope": ("llama", dict(tie_word_embeddings=True,
                                        rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "mistral-swa": ("mistral", dict(sliding_window=8, tie_word_embeddings=False)),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True, use_sliding_window=False)),
    "qwen3": ("qwen3", dict(head_dim=32, tie_word_embeddings=False, use_sliding_window=False)),
    # fused qkv_proj / gate_up_proj, a sliding window; pad_token_id inside the toy vocabulary
    "phi3": ("phi3", dict(sliding_window=8, tie_word_embeddings=False, pad_token_id=0)),
    # Gemma-2: (1 + w) norms, pre/post norms, GeGLU, scaled embeddings, attention and final logit soft-capping
    # (caps low enough to bend these logits), sliding window on alternate layers, query_pre_attn_scalar != head_dim
    "gemma2": ("gemma2", dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=5.0,
                              final_logit_softcapping=3.0, rms_norm_eps=1e-6, pad_token_id=0,
                              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)),
    # Gemma-3 text: q/k (1 + w) norms, local/global rope bases, linear rope scaling on global layers
    "gemma3": ("gemma3_text", dict(num_hidden_layers=3, head_dim=32, query_pre_attn_scalar=32, sliding_window=8,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                   rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                   rope_scaling={"rope_type": "linear", "factor": 8.0}, rms_norm_eps=1e-6,
                                   pad_token_id=0, tie_word_embeddings=True)),
}


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    ids = torch.randint(3, VOCAB, (1, T))
    ids[0, 0] = 1
    only = sys.argv[2:]
    for name, (mt, extra) in VARIANTS.items():
        if only and name not in only:
            continue
        kw = dict(BASE)
        kw.update(extra)
        cfg = AutoConfig.for_model(mt, **kw)
        cfg._attn_implementation = "eager"
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.15 * torch.randn_like(p))
        model.eval()
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        d = os.path.join(out, name)
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "reference_logits.json"), "w") as f:
            json.dump({"input_ids": ids[0].tolist(), "logits": [[round(v, 6) for v in row] for row in logits.tolist()],
                       "transformers": transformers.__version__, "torch": torch.__version__,
                       "note": "transformers eager attention, F32 on CPU"}, f)
        print(name, "ok", list(logits.shape))


if __name__ == "__main__":
    main()
