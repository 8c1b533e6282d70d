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
import re
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
    # OPT: LayerNorm with biases, learned positions (offset 2), ReLU, biases everywhere, no GQA
    "opt": ("opt", dict(ffn_dim=96, num_key_value_heads=None, word_embed_proj_dim=64, do_layer_norm_before=True,
                        enable_bias=True, activation_function="relu", pad_token_id=0, tie_word_embeddings=True)),
    # MoE: top-2 of 4 experts
    "mixtral": ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                                tie_word_embeddings=False)),
    # shared expert with its sigmoid gate, q/k/v biases, top-k weights not renormalized
    "qwen2-moe": ("qwen2_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                    shared_expert_intermediate_size=96, decoder_sparse_step=1, mlp_only_layers=[],
                                    norm_topk_prob=False, use_sliding_window=False, tie_word_embeddings=False)),
    # 8 experts, top-2 renormalized, q/k norms; layer 1 dense (mlp_only_layers)
    "qwen3-moe": ("qwen3_moe", dict(head_dim=32, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64,
                                    decoder_sparse_step=1, mlp_only_layers=[1], norm_topk_prob=True,
                                    use_sliding_window=False, tie_word_embeddings=False)),
}

NO_KV = {"opt"}


def expert_layouts(d):
    """Writes the other expert layout beside the one save_pretrained wrote: d + "-split" (per-expert 2-D
    experts.E.{gate,up,down}_proj.weight, as on the Hub) when it wrote fused 3-D tensors, d + "-fused"
    (experts.gate_up_proj [E, 2 * ff, d], experts.down_proj [E, d, ff]) when it wrote per-expert ones."""
    from safetensors.torch import load_file, save_file
    import shutil
    t = load_file(os.path.join(d, "model.safetensors"))
    names = sorted(t)
    fused = [n for n in names if n.endswith("experts.gate_up_proj")]
    split = [n for n in names if re.search(r"experts\.\d+\.gate_proj\.weight$", n)]
    out = {}
    if fused:
        for n, v in t.items():
            if n.endswith("experts.gate_up_proj"):
                pre = n[: -len("gate_up_proj")]
                ff = v.shape[1] // 2
                for e in range(v.shape[0]):
                    out[f"{pre}{e}.gate_proj.weight"] = v[e, :ff].contiguous()
                    out[f"{pre}{e}.up_proj.weight"] = v[e, ff:].contiguous()
            elif n.endswith("experts.down_proj"):
                pre = n[: -len("down_proj")]
                for e in range(v.shape[0]):
                    out[f"{pre}{e}.down_proj.weight"] = v[e].contiguous()
            else:
                out[n] = v
        od = d + "-split"
    elif split:
        pres = sorted({re.sub(r"\d+\.gate_proj\.weight$", "", n) for n in split})
        for n, v in t.items():
            if not re.search(r"experts\.\d+\.", n):
                out[n] = v
        for pre in pres:
            E = len([n for n in split if n.startswith(pre)])
            out[pre + "gate_up_proj"] = torch.stack(
                [torch.cat([t[f"{pre}{e}.gate_proj.weight"], t[f"{pre}{e}.up_proj.weight"]], 0) for e in range(E)])
            out[pre + "down_proj"] = torch.stack([t[f"{pre}{e}.down_proj.weight"] for e in range(E)])
        od = d + "-fused"
    else:
        return
    os.makedirs(od, exist_ok=True)
    save_file(out, os.path.join(od, "model.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(d):
        if f != "model.safetensors":
            shutil.copy(os.path.join(d, f), od)
    print(os.path.basename(od), "ok (other expert layout)")


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
        kw = {k: v for k, v in kw.items() if v is not None or k not in ("num_key_value_heads",)}
        if name in NO_KV:
            kw.pop("num_key_value_heads", None)
            kw.pop("rms_norm_eps", None)
            kw.pop("rope_theta", None)
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
        with open(os.path.join(d, "tensors.txt"), "w") as f:
            for pname, p in model.state_dict().items():
                f.write(f"{pname} {list(p.shape)}\n")
        if "moe" in mt or mt == "mixtral":
            expert_layouts(d)


if __name__ == "__main__":
    main()
