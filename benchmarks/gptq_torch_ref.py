#!/usr/bin/env python3
"""A plain PyTorch GPTQ, as IST-DASLab's reference does it, timed per phase: the baseline for qcal's GPU path.

Re-implements, in their straightforward form and without importing them, the reference repository's
(github.com/IST-DASLab/gptq) llama.py `llama_sequential`, gptq.py `GPTQ.add_batch` / `fasterquant` and
quant.py `Quantizer` (min-max, per channel, sym or asym): the model is loaded in float16 on the CPU;
the embedding and decoder layer 0 move to CUDA to catch layer 0's inputs; then each layer in turn moves
to CUDA and, with true-sequential groups [k, v, q], [o], [up, gate], [down], forward hooks accumulate
H = 2/n X^T X in fp32 while all samples run through the layer (one forward pass per group), fasterquant
quantizes each linear of the group (block 128, damping percdamp * mean diag(H), Cholesky inverse, a
Python loop over the columns), and a last pass with the quantized weights gives the next layer's inputs.

transformers 5 decoder layers need position_embeddings (cos, sin) and their mask arguments: the call
that LlamaModel.forward makes into layer 0 is caught (args and kwargs) and replayed for every layer, so
whatever the installed version passes, the layers get.

  python3 benchmarks/gptq_torch_ref.py --model DIR --nsamples 128 --seqlen 2048 --wbits 4 --groupsize 128 \
      [--act-order] [--tokens FILE.i32] [--seed 0] [--json OUT.json]

--tokens: raw int32 little-endian token ids, at least nsamples * seqlen (e.g. `qcal calib --save`);
otherwise random ids below the vocabulary size, from --seed. Phases (each bracketed by
torch.cuda.synchronize()): read (from_pretrained), catch (embedding and layer-0 inputs), transfer
(layers to and from the GPU), forward (layer passes including hooks, minus the Hessian time), hessian
(add_batch), solve (fasterquant), total (wall clock). The relative output error
||WX - QX||^2 / ||WX||^2 = tr(D H D^T) / tr(W H W^T) of every linear is computed outside the timed
phases, like qcal's report.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import transformers
from transformers import AutoModelForCausalLM


# ---- quant.py ----

def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


class Quantizer(nn.Module):
    def __init__(self, shape=1):
        super().__init__()
        self.register_buffer("maxq", torch.tensor(0))
        self.register_buffer("scale", torch.zeros(shape))
        self.register_buffer("zero", torch.zeros(shape))

    def configure(self, bits, perchannel=False, sym=True):
        self.maxq = torch.tensor(2 ** bits - 1)
        self.perchannel = perchannel
        self.sym = sym

    def find_params(self, x, weight=False):
        dev = x.device
        self.maxq = self.maxq.to(dev)
        shape = x.shape
        if self.perchannel:
            if weight:
                x = x.flatten(1)
            else:
                raise NotImplementedError("activation quantization is not part of this benchmark")
        else:
            x = x.flatten().unsqueeze(0)
        tmp = torch.zeros(x.shape[0], device=dev)
        xmin = torch.minimum(x.min(1)[0], tmp)
        xmax = torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            tmp = xmin < 0
            if torch.any(tmp):
                xmin[tmp] = -xmax[tmp]
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = (xmax - xmin) / self.maxq
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin / self.scale)
        if not self.perchannel:
            tmp = shape[0] if weight else shape[-1]
            self.scale = self.scale.repeat(tmp)
            self.zero = self.zero.repeat(tmp)
        if weight:
            shape = [-1] + [1] * (len(shape) - 1)
            self.scale = self.scale.reshape(shape)
            self.zero = self.zero.reshape(shape)

    def ready(self):
        return torch.all(self.scale != 0)


# ---- gptq.py ----

class GPTQ:
    def __init__(self, layer, timers):
        self.layer = layer
        self.dev = layer.weight.device
        W = layer.weight.data
        self.rows, self.columns = W.shape[0], W.shape[1]
        self.H = torch.zeros((self.columns, self.columns), device=self.dev)
        self.nsamples = 0
        self.timers = timers

    def add_batch(self, inp, out):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())
        torch.cuda.synchronize()
        self.timers["hessian"] += time.perf_counter() - t0

    def fasterquant(self, blocksize=128, percdamp=.01, groupsize=-1, actorder=False):
        W = self.layer.weight.data.clone()
        W = W.float()
        if not self.quantizer.ready():
            self.quantizer.find_params(W, weight=True)

        H = self.H
        del self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0

        if actorder:
            perm = torch.argsort(torch.diag(H), descending=True)
            W = W[:, perm]
            H = H[perm][:, perm]

        Losses = torch.zeros_like(W)
        Q = torch.zeros_like(W)

        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns, device=self.dev)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        H = torch.linalg.cholesky(H, upper=True)
        Hinv = H

        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1

            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Losses1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]

            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]

                if groupsize != -1:
                    if (i1 + i) % groupsize == 0:
                        self.quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)], weight=True)

                q = quantize(w.unsqueeze(1), self.quantizer.scale, self.quantizer.zero, self.quantizer.maxq).flatten()
                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d ** 2

                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1

            Q[:, i1:i2] = Q1
            Losses[:, i1:i2] = Losses1 / 2

            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

        torch.cuda.synchronize()
        if actorder:
            invperm = torch.argsort(perm)
            Q = Q[:, invperm]
        self.layer.weight.data = Q.reshape(self.layer.weight.shape).to(self.layer.weight.data.dtype)
        return torch.sum(Losses).item()


# ---- llama.py, with the layer call of the installed transformers ----

class CaughtInput(Exception):
    pass


class Catcher(nn.Module):
    """Stands in for decoder layer 0: records the call LlamaModel.forward makes, then stops the forward."""

    def __init__(self, module, store):
        super().__init__()
        self.module = module
        self.store = store

    def __getattr__(self, name):  # the model may read attributes of its layers (attention_type, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    def forward(self, *args, **kwargs):
        hs = args[0] if args else kwargs.pop("hidden_states")
        self.store["inps"].append(hs.detach())
        if self.store.get("args") is None:
            self.store["args"] = args[1:]
            self.store["kwargs"] = kwargs
        raise CaughtInput


def find_linears(module):
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Linear)}


def run_layer(layer, x, args, kwargs):
    out = layer(x, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def sync():
    torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--wbits", type=int, default=4)
    ap.add_argument("--groupsize", type=int, default=128)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--asym", action="store_true", help="asymmetric (the reference's default is asym; qcal's GPTQ default is sym)")
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--tokens", help="int32 little-endian token ids (nsamples * seqlen)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=0, help="quantize only the first N layers (0: all)")
    ap.add_argument("--attn", default=None, help="attn_implementation (default: transformers' choice)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gptq_torch_ref.py: no CUDA device")
    dev = torch.device("cuda:0")
    timers = {k: 0.0 for k in ("read", "catch", "transfer", "forward", "hessian", "solve", "error")}
    t_start = time.perf_counter()

    # read
    t0 = time.perf_counter()
    kw = {}
    if args.attn:
        kw["attn_implementation"] = args.attn
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float16, **kw)
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float16, **kw)
    model.eval()
    model.config.use_cache = False
    timers["read"] = time.perf_counter() - t0
    cfg = model.config
    n_layers = len(model.model.layers) if args.layers <= 0 else min(args.layers, len(model.model.layers))

    # calibration ids
    n = args.nsamples * args.seqlen
    if args.tokens:
        ids = np.fromfile(args.tokens, dtype="<i4")
        if ids.size < n:
            sys.exit(f"{args.tokens}: {ids.size} token ids, need nsamples * seqlen = {n}")
        ids = torch.from_numpy(ids[:n].astype(np.int64)).reshape(args.nsamples, args.seqlen)
        if int(ids.max()) >= cfg.vocab_size or int(ids.min()) < 0:
            sys.exit(f"{args.tokens}: token ids outside [0, {cfg.vocab_size})")
    else:
        g = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, cfg.vocab_size, (args.nsamples, args.seqlen), generator=g)

    with torch.no_grad():
        # catch layer 0's inputs (the reference's Catcher), with the installed version's layer call
        sync()
        t0 = time.perf_counter()
        inner = model.model
        layers = inner.layers
        inner.embed_tokens.to(dev)
        inner.norm.to(dev)
        if getattr(inner, "rotary_emb", None) is not None:
            inner.rotary_emb.to(dev)
        layers[0] = layers[0].to(dev)
        store = {"inps": [], "args": None, "kwargs": None}
        layers[0] = Catcher(layers[0], store)
        for j in range(args.nsamples):
            try:
                inner(input_ids=ids[j:j + 1].to(dev), use_cache=False)
            except CaughtInput:
                pass
        layers[0] = layers[0].module
        layers[0] = layers[0].cpu()
        inner.embed_tokens.cpu()
        inner.norm.cpu()
        torch.cuda.empty_cache()
        inps = torch.cat(store["inps"], 0)  # [nsamples, seqlen, d] fp16
        outs = torch.zeros_like(inps)
        largs = store["args"]
        lkw = {k: v for k, v in store["kwargs"].items() if k not in ("past_key_value", "past_key_values", "use_cache")}
        lkw["use_cache"] = False
        sync()
        timers["catch"] = time.perf_counter() - t0
        caught = sorted(k for k, v in store["kwargs"].items() if v is not None)

        sequential = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
                      ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]
        errs = {}
        for i in range(n_layers):
            sync()
            t0 = time.perf_counter()
            layer = layers[i].to(dev)
            sync()
            timers["transfer"] += time.perf_counter() - t0
            full = find_linears(layer)
            for names in sequential:
                subset = {nm: full[nm] for nm in names}
                gptq = {}
                for nm in subset:
                    gptq[nm] = GPTQ(subset[nm], timers)
                    gptq[nm].quantizer = Quantizer()
                    gptq[nm].quantizer.configure(args.wbits, perchannel=True, sym=not args.asym)

                def add_batch(nm):
                    def tmp(_, inp, out):
                        gptq[nm].add_batch(inp[0].data, out.data)
                    return tmp

                handles = [subset[nm].register_forward_hook(add_batch(nm)) for nm in subset]
                h_before = timers["hessian"]
                sync()
                t0 = time.perf_counter()
                for j in range(args.nsamples):
                    outs[j] = run_layer(layer, inps[j].unsqueeze(0), largs, lkw)[0]
                sync()
                timers["forward"] += time.perf_counter() - t0 - (timers["hessian"] - h_before)
                for h in handles:
                    h.remove()
                for nm in subset:
                    # a copy of H for the error figure, taken outside the timed solve
                    sync()
                    t0 = time.perf_counter()
                    H = gptq[nm].H.clone()
                    W = subset[nm].weight.data.float().clone()
                    sync()
                    timers["error"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    gptq[nm].fasterquant(percdamp=args.percdamp, groupsize=args.groupsize, actorder=args.act_order)
                    sync()
                    timers["solve"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    D = W - subset[nm].weight.data.float()
                    num = torch.sum((D @ H) * D).item()
                    den = torch.sum((W @ H) * W).item()
                    errs[f"model.layers.{i}.{nm}"] = num / den if den > 0 else float("nan")
                    del H, W, D
                    sync()
                    timers["error"] += time.perf_counter() - t0
                del gptq
            sync()
            t0 = time.perf_counter()
            for j in range(args.nsamples):
                outs[j] = run_layer(layer, inps[j].unsqueeze(0), largs, lkw)[0]
            sync()
            timers["forward"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            layers[i] = layer.cpu()
            del layer
            torch.cuda.empty_cache()
            sync()
            timers["transfer"] += time.perf_counter() - t0
            inps, outs = outs, inps
            e = [v for k, v in errs.items() if k.startswith(f"model.layers.{i}.")]
            print(f"[{i + 1:3d}/{n_layers}] layer {i}: rel err mean {sum(e) / len(e):.3e}  "
                  f"(forward {timers['forward']:.1f} s, hessian {timers['hessian']:.1f} s, solve {timers['solve']:.1f} s "
                  f"so far)", flush=True)
        finite = bool(torch.isfinite(inps).all().item())

    sync()
    total = time.perf_counter() - t_start
    peak_gpu = torch.cuda.max_memory_allocated()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = {
        "tool": "gptq_torch_ref.py (IST-DASLab reference GPTQ, plain PyTorch)",
        "model": args.model, "layers_quantized": n_layers, "layers_total": len(layers),
        "nsamples": args.nsamples, "seqlen": args.seqlen, "wbits": args.wbits, "groupsize": args.groupsize,
        "act_order": args.act_order, "sym": not args.asym, "percdamp": args.percdamp,
        "tokens": args.tokens or f"random ids, seed {args.seed}",
        "seconds": {k: round(v, 4) for k, v in timers.items()} | {"total": round(total, 4)},
        "peak_gpu_bytes": peak_gpu, "peak_rss_bytes": rss,
        "rel_err": errs, "final_hidden_finite": finite, "layer_kwargs": caught,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0), "attn_implementation": getattr(cfg, "_attn_implementation", None),
    }
    print(f"\nreference GPTQ (PyTorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{res['device']}): {n_layers}/{len(layers)} layers, {args.nsamples} x {args.seqlen} tokens, "
          f"w{args.wbits} g{args.groupsize}{' act-order' if args.act_order else ''}")
    print(f"layer call kwargs caught: {', '.join(caught)}")
    print(f"{'phase':<10} {'seconds':>10}")
    for k in ("read", "catch", "transfer", "forward", "hessian", "solve"):
        print(f"{k:<10} {timers[k]:>10.3f}")
    print(f"{'total':<10} {total:>10.3f}   (includes {timers['error']:.3f} s of error measurement)")
    print(f"peak GPU memory {peak_gpu / 2**30:.2f} GiB, peak host RSS {rss / 2**30:.2f} GiB")
    if "model.layers.0.self_attn.q_proj" in errs:
        print(f"layer 0 q_proj rel err {errs['model.layers.0.self_attn.q_proj']:.4e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
