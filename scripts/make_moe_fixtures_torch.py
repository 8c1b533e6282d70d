#!/usr/bin/env python3
"""Stand-in MoE fixtures: small random-weight Mixtral, Qwen2-MoE (shared expert) and Qwen3-MoE (a dense
layer) models in the Hugging Face layout, with logits from a plain PyTorch transcription of transformers'
MoE forward (router softmax in FP32, top-k, renormalized per norm_topk_prob / always for Mixtral, experts added
in id order, the shared expert after them, gated by a sigmoid). Used where transformers itself is not
installed; scripts/make_arch_fixtures.py (transformers) is the reference. Needs torch (any version).

usage: make_moe_fixtures_torch.py OUTDIR   (writes OUTDIR/{mixtral,qwen2-moe,qwen3-moe})
"""
import json, os, struct, sys
import numpy as np, torch
torch.manual_seed(1)
V, D, FF, L, H, KV, T = 256, 64, 96, 2, 4, 2, 40

def save_st(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.detach().float().numpy().astype('<f4').tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)

def rms(x, w, eps=1e-5):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

def rope(x, pos, hd, theta=10000.0):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    f = torch.outer(pos.float(), inv); emb = torch.cat([f, f], -1)
    c, s = emb.cos(), emb.sin()
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    return x * c + torch.cat([-x2, x1], -1) * s

def make(kind):
    E, k = (4, 2) if kind != 'qwen3_moe' else (8, 2)
    hd = 32 if kind == 'qwen3_moe' else D // H
    mff = FF if kind == 'mixtral' else 64
    sff = 96
    W = {}
    r = lambda *s: 0.15 * torch.randn(*s)
    n = lambda *s: 1.0 + 0.2 * torch.randn(*s)
    W['model.embed_tokens.weight'] = r(V, D)
    mlp_only = [1] if kind == 'qwen3_moe' else []
    for i in range(L):
        p = f'model.layers.{i}.'
        W[p+'input_layernorm.weight'] = n(D); W[p+'post_attention_layernorm.weight'] = n(D)
        W[p+'self_attn.q_proj.weight'] = r(H*hd, D); W[p+'self_attn.k_proj.weight'] = r(KV*hd, D)
        W[p+'self_attn.v_proj.weight'] = r(KV*hd, D); W[p+'self_attn.o_proj.weight'] = r(D, H*hd)
        if kind == 'qwen2_moe':
            for x in 'qkv': W[p+f'self_attn.{x}_proj.bias'] = r(W[p+f'self_attn.{x}_proj.weight'].shape[0])
        if kind == 'qwen3_moe':
            W[p+'self_attn.q_norm.weight'] = n(hd); W[p+'self_attn.k_norm.weight'] = n(hd)
        if i in mlp_only:
            W[p+'mlp.gate_proj.weight'] = r(FF, D); W[p+'mlp.up_proj.weight'] = r(FF, D); W[p+'mlp.down_proj.weight'] = r(D, FF)
            continue
        mp, names = ('block_sparse_moe.', ('w1','w3','w2')) if kind == 'mixtral' else ('mlp.', ('gate_proj','up_proj','down_proj'))
        W[p+mp+'gate.weight'] = r(E, D)
        for e in range(E):
            W[p+mp+f'experts.{e}.{names[0]}.weight'] = r(mff, D); W[p+mp+f'experts.{e}.{names[1]}.weight'] = r(mff, D)
            W[p+mp+f'experts.{e}.{names[2]}.weight'] = r(D, mff)
        if kind == 'qwen2_moe':
            W[p+'mlp.shared_expert.gate_proj.weight'] = r(sff, D); W[p+'mlp.shared_expert.up_proj.weight'] = r(sff, D)
            W[p+'mlp.shared_expert.down_proj.weight'] = r(D, sff); W[p+'mlp.shared_expert_gate.weight'] = r(1, D)
    W['model.norm.weight'] = n(D); W['lm_head.weight'] = r(V, D)
    cfg = dict(architectures=[{'mixtral':'MixtralForCausalLM','qwen2_moe':'Qwen2MoeForCausalLM','qwen3_moe':'Qwen3MoeForCausalLM'}[kind]],
               model_type=kind, vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
               num_key_value_heads=KV, head_dim=hd, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
               hidden_act='silu', tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, num_experts_per_tok=k)
    if kind == 'mixtral': cfg.update(num_local_experts=E, sliding_window=None)
    else: cfg.update(num_experts=E, moe_intermediate_size=mff, decoder_sparse_step=1, mlp_only_layers=mlp_only,
                     norm_topk_prob=(kind == 'qwen3_moe'), use_sliding_window=False)
    if kind == 'qwen2_moe': cfg.update(shared_expert_intermediate_size=sff)
    return W, cfg

def forward(W, cfg, ids):
    kind = cfg['model_type']; hd = cfg['head_dim']; E = cfg.get('num_experts', cfg.get('num_local_experts')); k = cfg['num_experts_per_tok']
    x = W['model.embed_tokens.weight'][ids]; pos = torch.arange(len(ids))
    for i in range(L):
        p = f'model.layers.{i}.'
        h = rms(x, W[p+'input_layernorm.weight'])
        lin = lambda n, a: a @ W[p+n+'.weight'].T + (W[p+n+'.bias'] if p+n+'.bias' in W else 0)
        q = lin('self_attn.q_proj', h).view(-1, H, hd); kk = lin('self_attn.k_proj', h).view(-1, KV, hd); v = lin('self_attn.v_proj', h).view(-1, KV, hd)
        if kind == 'qwen3_moe': q = rms(q, W[p+'self_attn.q_norm.weight'], 1e-5); kk = rms(kk, W[p+'self_attn.k_norm.weight'], 1e-5)
        q = rope(q.transpose(0,1), pos, hd); kk = rope(kk.transpose(0,1), pos, hd); v = v.transpose(0,1)
        kk = kk.repeat_interleave(H // KV, 0); v = v.repeat_interleave(H // KV, 0)
        s = q @ kk.transpose(1,2) / hd**0.5 + torch.triu(torch.full((len(ids),len(ids)), -1e30), 1)
        a = (torch.softmax(s, -1) @ v).transpose(0,1).reshape(len(ids), H*hd)
        x = x + lin('self_attn.o_proj', a)
        h = rms(x, W[p+'post_attention_layernorm.weight'])
        if p+'mlp.gate_proj.weight' in W:
            x = x + lin('mlp.down_proj', torch.nn.functional.silu(lin('mlp.gate_proj', h)) * lin('mlp.up_proj', h)); continue
        mp, names = ('block_sparse_moe.', ('w1','w3','w2')) if kind == 'mixtral' else ('mlp.', ('gate_proj','up_proj','down_proj'))
        logits = lin(mp+'gate', h); prob = torch.softmax(logits.float(), -1)
        tw, ti = torch.topk(prob, k, -1)
        if kind == 'mixtral' or cfg.get('norm_topk_prob'): tw = tw / tw.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e in range(E):
            rows, slot = torch.where(ti == e)
            if len(rows) == 0: continue
            xe = h[rows]; y = lin(mp+f'experts.{e}.{names[2]}', torch.nn.functional.silu(lin(mp+f'experts.{e}.{names[0]}', xe)) * lin(mp+f'experts.{e}.{names[1]}', xe))
            out.index_add_(0, rows, y * tw[rows, slot, None])
        if kind == 'qwen2_moe':
            sh = lin('mlp.shared_expert.down_proj', torch.nn.functional.silu(lin('mlp.shared_expert.gate_proj', h)) * lin('mlp.shared_expert.up_proj', h))
            out = out + torch.sigmoid(lin('mlp.shared_expert_gate', h)) * sh
        x = x + out
    x = rms(x, W['model.norm.weight'])
    return x @ W['lm_head.weight'].T

for kind in ['mixtral', 'qwen2_moe', 'qwen3_moe']:
    W, cfg = make(kind)
    d = os.path.join(sys.argv[1], kind.replace('_moe', '-moe')); os.makedirs(d, exist_ok=True)
    save_st(d + '/model.safetensors', W)
    json.dump(cfg, open(d + '/config.json', 'w'))
    torch.manual_seed(0); ids = torch.randint(3, V, (T,)); ids[0] = 1
    with torch.no_grad(): lg = forward(W, cfg, ids)
    json.dump({'input_ids': ids.tolist(), 'logits': lg.tolist(), 'note': 'local torch stand-in'}, open(d + '/reference_logits.json', 'w'))
    print(kind, 'ok')
