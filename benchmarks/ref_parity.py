#!/usr/bin/env python3
"""Layer-by-layer reference values from the reference implementations' own code, for qcal's parity tests.

The GPTQ solver is IST-DASLab's `GPTQ.fasterquant` with its `Quantizer` (gptq.py, quant.py); AWQ is
AutoAWQ's `AwqQuantizer._search_best_scale` / `_search_best_clip` / `pseudo_quantize_tensor` with its
`apply_scale` / `apply_clip` (awq/quantize/quantizer.py, scale.py) and its `get_layers_for_scaling`
groups (awq/models/<arch>.py), and llm-awq's `auto_scale_block` / `apply_scale` / `auto_clip_block` /
`apply_clip` / `pseudo_quantize_tensor`. Their source is read from the folder benchmarks/fetch_refs.sh
fills (git-ignored, never part of the repository) and executed as it stands: this script only defines
the names their modules import (their package imports pull in calibration downloads and kernels that
are not needed here) and drives them layer by layer the way their own drivers do (IST llama.py
`llama_sequential`; AutoAWQ `AwqQuantizer.quantize`; llm-awq `run_awq`):

  * every window goes through the model once; decoder layer 0's call (hidden states, position
    embeddings, mask) is caught and replayed for every layer, as each reference's Catcher does;
  * GPTQ: true-sequential groups [k, v, q], [o], [up, gate], [down]; one Hessian per linear from the
    windows one at a time (add_batch); fasterquant; the quantized layer's output feeds the next layer;
  * AWQ: the layer's linear inputs are caught on all windows as one batch, the next layer's input is the
    original layer's output; scale search per group, apply_scale (inputs divided too), clip search,
    apply_clip, then the final quantizer on each linear.

Everything runs in float32 with TF32 off, so that qcal's fp32 CPU path can be held to the same numbers.
Output, per configuration NAME: NAME.json (settings, reference commits, every group's searched ratio and
loss history) and NAME.safetensors.gz, per quantized linear `model.layers.L.<lin>.{codes,scales,zeros}`
(codes U8 [N, K], input order; scales and zeros F32 [N, G]; with --rows only the first rows), `.g_idx` I32 [K] (GPTQ), `.clip` F32 [N, G]
(AWQ's searched clipping max). Where out_features is not a multiple of 64 the references' clip search
asserts (it takes rows 64 at a time); those weights are padded with zero rows for it (pad_rows), and the
JSON lists them under clip_padded.

  python3 benchmarks/ref_parity.py --refs .refs --model DIR --tokens FILE --out DIR \
      --config gptq_w4:gptq:4:32 --config awq_w4:autoawq:4:32 ... [--layers N]

--config NAME:ALGO:BITS:GROUP[:FLAGS] (FLAGS: act, nts = not true-sequential, joined by +) with ALGO gptq (symmetric, as qcal's --format gptq), autoawq or
llm-awq. --tokens is a qcal token file (`qcal calib --save-tokens`, header of 160 bytes, int32 ids).
`--make-tokens FILE --vocab V --windows W --seqlen S --seed N` writes such a file from a seeded
generator instead (no torch needed): the fixtures' calibration windows.
"""
import argparse
import ast
import gzip
import hashlib
import json
import os
import struct
import time
import sys
import types

HEADER = 160


# ---- token files (datasets/token_file.h) ----

def write_tokens(path, ids, windows, seqlen, seed):
    raw = struct.pack("<%di" % len(ids), *ids)
    sha = hashlib.sha256(raw).hexdigest().encode()
    hdr = b"QCALTOK1" + struct.pack("<IIIIQ", 0, windows, windows, seqlen, seed) + sha + b"0" * 64
    assert len(hdr) == HEADER
    with open(path, "wb") as f:
        f.write(hdr + raw)


def read_tokens(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"QCALTOK1":
        sys.exit(f"{path}: not a qcal token file")
    _, _, windows, seqlen, seed = struct.unpack("<IIIIQ", data[8:32])
    ids = struct.unpack("<%di" % (windows * seqlen), data[HEADER:HEADER + 4 * windows * seqlen])
    return ids, windows, seqlen, seed, hashlib.sha256(data[HEADER:]).hexdigest()


def make_tokens(a):
    # xorshift64*: fixed, documented, independent of any library
    x = (a.seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) & (2**64 - 1) or 1
    ids = []
    for _ in range(a.windows * a.seqlen):
        x ^= x >> 12
        x ^= (x << 25) & (2**64 - 1)
        x ^= x >> 27
        ids.append((((x * 0x2545F4914F6CDD1D) & (2**64 - 1)) >> 33) % a.vocab)
    write_tokens(a.make_tokens, ids, a.windows, a.seqlen, a.seed)
    print(f"{a.make_tokens}: {a.windows} x {a.seqlen} ids below {a.vocab}")


# ---- running the references' own source ----

def strip_annotations(tree):
    """Annotations name the references' own imports (OldLlamaDecoderLayer, ...); they carry no behaviour."""
    for n in ast.walk(tree):
        if isinstance(n, ast.arguments):
            for arg in n.posonlyargs + n.args + n.kwonlyargs + [n.vararg, n.kwarg]:
                if arg is not None:
                    arg.annotation = None
        if isinstance(n, ast.FunctionDef):
            n.returns = None
    return tree


def exec_defs(path, names, ns):
    """Executes the top-level classes/functions `names` of the reference file `path` in namespace ns."""
    with open(path) as f:
        src = f.read()
    tree = strip_annotations(ast.parse(src, path))
    body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = set(names) - {n.name for n in body}
    if missing:
        sys.exit(f"{path}: no {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return ns


def method_source(path, cls, meth):
    """A method of a class in a reference file, as a plain function (decorators dropped)."""
    with open(path) as f:
        tree = strip_annotations(ast.parse(f.read(), path))
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and n.name == cls:
            for m in n.body:
                if isinstance(m, ast.FunctionDef) and m.name == meth:
                    m.decorator_list = []
                    return ast.Module(body=[m], type_ignores=[])
    sys.exit(f"{path}: no {cls}.{meth}")


class Locals:
    """Captures chosen locals of named functions when they return (the references keep their search
    history in locals)."""

    def __init__(self, want):
        self.want = want  # func name -> tuple of local names
        self.got = []

    def __enter__(self):
        def prof(frame, event, arg):
            if event == "return" and frame.f_code.co_name in self.want:
                loc = frame.f_locals
                self.got.append((frame.f_code.co_name, {k: loc.get(k) for k in self.want[frame.f_code.co_name]}))
        sys.setprofile(prof)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".refs"))
    ap.add_argument("--model")
    ap.add_argument("--tokens")
    ap.add_argument("--out")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--layers", type=int, default=0, help="record only the first N layers (0: all)")
    ap.add_argument("--tensor-layers", type=int, default=0,
                    help="store codes/scales/zeros/clip only for the first N layers (0: every layer run)")
    ap.add_argument("--rows", type=int, default=0,
                    help="store only the first N rows (output features) of each linear (0: all); rows are independent")
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--local-model", action="store_true",
                    help="build the model with benchmarks/ref_model.py instead of transformers")
    ap.add_argument("--save-model", help="also write each configuration's fake-quantized model (F32) to DIR/NAME")
    ap.add_argument("--make-tokens")
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--windows", type=int)
    ap.add_argument("--seqlen", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", action="store_true",
                    help="gptq configurations: run the reference as its own driver does, nothing recorded, and time "
                         "it (seconds in NAME.json: forward, hessian (add_batch), solve (fasterquant), total)")
    a = ap.parse_args()
    if a.make_tokens:
        return make_tokens(a)
    if not (a.model and a.tokens and a.out and a.config):
        ap.error("--model, --tokens, --out and --config are required")
    run(a)


def run(a):
    import torch
    import torch.nn as nn
    if a.local_model:  # benchmarks/ref_model.py stands in for transformers (checked against its logits)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import ref_model
        transformers = types.SimpleNamespace(__version__="none (benchmarks/ref_model.py)")
    else:
        import transformers
        from transformers import AutoModelForCausalLM
    if not torch.cuda.is_available():  # llm-awq moves modules with .cuda(): placement only, no arithmetic
        nn.Module.cuda = lambda self, *x, **k: self
        torch.Tensor.cuda = lambda self, *x, **k: self
        torch.cuda.synchronize = lambda *x, **k: None  # IST fasterquant times itself
        # Both AWQ references save the weights with `state_dict()` + `.cpu()` before mutating them in place:
        # a copy on a GPU, an alias on the CPU (AutoAWQ's duo search then evaluates every ratio after the
        # first on weights already scaled). `.cpu()` copies here, as it does from a GPU.
        _cpu = torch.Tensor.cpu
        torch.Tensor.cpu = lambda self, *x, **k: self.clone() if self.device.type == "cpu" else _cpu(self, *x, **k)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device if torch.cuda.is_available() or a.device == "cpu" else "cpu")
    refs = os.path.abspath(a.refs)
    commits = dict(l.split() for l in open(os.path.join(refs, "COMMITS")) if l.strip())
    os.makedirs(a.out, exist_ok=True)

    if a.local_model:
        model = ref_model.LocalModel(a.model)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    model.config.use_cache = False
    inner = model.model
    arch = model.config.model_type
    ids, W, S, seed, tok_sha = read_tokens(a.tokens)
    ids = torch.tensor(ids, dtype=torch.long).reshape(W, S)
    n_layers = len(inner.layers) if a.layers <= 0 else min(a.layers, len(inner.layers))

    # ---- catch layer 0's call (each reference's Catcher), one window at a time ----
    class Caught(Exception):
        pass

    store = {"inps": [], "kwargs": None}

    class Catcher(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.m, name)

        def forward(self, *args, **kwargs):
            hs = args[0] if args else kwargs.pop("hidden_states")
            store["inps"].append(hs.detach())
            if store["kwargs"] is None:
                store["kwargs"] = {k: v for k, v in kwargs.items()
                                   if k not in ("past_key_value", "past_key_values", "use_cache")}
            raise Caught

    model.to(dev)
    with torch.no_grad():
        inner.layers[0] = Catcher(inner.layers[0])
        for j in range(W):
            try:
                inner(input_ids=ids[j:j + 1].to(dev), use_cache=False)
            except Caught:
                pass
        inner.layers[0] = inner.layers[0].m
    inps0 = torch.cat(store["inps"], 0)  # [W, S, d]
    lkw = store["kwargs"]

    def layer_out(layer, x):
        out = layer(x, **lkw)
        return out[0] if isinstance(out, (tuple, list)) else out

    def linears(layer):
        return {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}

    rms = tuple(c for c in (getattr(sys.modules[type(l).__module__], n, None)
                             for l in [inner.layers[0]] for n in dir(sys.modules[type(l).__module__])
                             if n.endswith("RMSNorm")) if isinstance(c, type))
    dec = type(inner.layers[0])

    # ---- the references ----
    def gptq_ns():
        ns = {"torch": torch, "nn": nn, "np": __import__("numpy"), "math": __import__("math"),
              "time": __import__("time"), "transformers": transformers, "DEBUG": False}
        if not hasattr(transformers, "Conv1D"):
            ns["transformers"] = types.SimpleNamespace(Conv1D=type("Conv1D", (), {}))
        exec_defs(os.path.join(refs, "gptq", "quant.py"), ["quantize", "Quantizer"], ns)
        exec_defs(os.path.join(refs, "gptq", "gptq.py"), ["GPTQ"], ns)
        return ns

    def autoawq_ns():
        import functools
        import inspect
        import logging
        from typing import Dict, List, Optional, Tuple
        A = os.path.join(refs, "autoawq", "awq")
        ns = {"torch": torch, "nn": nn, "transformers": transformers, "inspect": inspect, "logging": logging,
              "functools": functools, "Dict": Dict, "List": List, "Optional": Optional, "Tuple": Tuple,
              "clear_memory": lambda weight=None: None,
              "get_best_device": lambda: str(dev),
              "get_op_name": lambda module, op: next(n for n, m in module.named_modules() if m is op),
              "get_op_by_name": lambda module, name: dict(module.named_modules())[name],
              "allowed_norms": [nn.LayerNorm, *rms], "allowed_act_fns": [nn.GELU]}
        exec_defs(os.path.join(A, "quantize", "quantizer.py"), ["AwqQuantizer"], ns)
        exec_defs(os.path.join(A, "quantize", "scale.py"),
                  ["apply_clip", "apply_scale", "scale_ln_fcs", "scale_fc_fc", "scale_fc_fcs"], ns)
        for g in ("GemmaRMSNorm", "Gemma2RMSNorm"):
            ns.setdefault(g, type(g, (), {}))
        fname = {"llama": "llama.py", "mistral": "mistral.py", "qwen2": "qwen2.py", "qwen3": "qwen3.py"}[arch]
        fn = method_source(os.path.join(A, "models", fname),
                           {"llama": "LlamaAWQForCausalLM", "mistral": "MistralAWQForCausalLM",
                            "qwen2": "Qwen2AWQForCausalLM", "qwen3": "Qwen3AWQForCausalLM"}[arch],
                           "get_layers_for_scaling")
        mns = {}
        exec(compile(fn, fname, "exec"), mns)
        ns["get_layers_for_scaling"] = mns["get_layers_for_scaling"]
        return ns

    def llmawq_ns():
        L = os.path.join(refs, "llm-awq", "awq", "quantize")
        pkg = "qcal_ref_llmawq"
        for name in (pkg, pkg + ".quantize", pkg + ".utils"):
            m = types.ModuleType(name)
            m.__path__ = []
            sys.modules[name] = m
        qns = {"torch": torch, "nn": nn}
        exec_defs(os.path.join(L, "quantizer.py"), ["pseudo_quantize_tensor"], qns)
        qmod = types.ModuleType(pkg + ".quantize.quantizer")
        qmod.pseudo_quantize_tensor = qns["pseudo_quantize_tensor"]
        sys.modules[qmod.__name__] = qmod
        umod = types.ModuleType(pkg + ".utils.module")
        umod.get_op_by_name = lambda module, name: dict(module.named_modules())[name]
        sys.modules[umod.__name__] = umod
        dummy = type("NotThisArch", (), {})
        ns = {"torch": torch, "nn": nn, "gc": __import__("gc"), "__package__": pkg + ".quantize",
              "__name__": pkg + ".quantize.auto_scale",
              "LlamaDecoderLayer": (dec,), "Qwen2DecoderLayer": dummy, "OPTDecoderLayer": dummy,
              "BloomBlock": dummy, "BloomGelu": dummy, "GELUActivation": dummy, "ScaledActivation": dummy,
              "LlamaRMSNorm": rms, "Qwen2RMSNorm": dummy,
              "get_op_by_name": umod.get_op_by_name,
              "get_op_name": lambda module, op: next(n for n, m in module.named_modules() if m is op),
              "set_op_by_name": None}
        exec_defs(os.path.join(L, "auto_scale.py"),
                  ["get_act_scale", "get_weight_scale", "scale_ln_fcs", "scale_fc_fc", "scale_gelu_fc",
                   "auto_scale_block", "apply_scale"], ns)
        cns = {"torch": torch, "nn": nn, "gc": __import__("gc"), "__package__": pkg + ".quantize",
               "pseudo_quantize_tensor": qns["pseudo_quantize_tensor"]}
        exec_defs(os.path.join(L, "auto_clip.py"), ["auto_clip_layer", "auto_clip_block", "apply_clip"], cns)
        ns.update({k: cns[k] for k in ("auto_clip_layer", "auto_clip_block", "apply_clip")})
        ns["pseudo_quantize_tensor"] = qns["pseudo_quantize_tensor"]
        return ns

    def pad_rows(w):
        """Both references' clip searches take rows in batches of 64 and assert out_features % 64 == 0;
        rows are independent (each (row, group) keeps its own best shrink), so zero rows pad the weight
        to a whole batch and the real rows' results are read back unchanged."""
        pad = (-w.shape[0]) % 64
        return torch.cat([w, torch.zeros(pad, w.shape[1], dtype=w.dtype, device=w.device)], 0)

    def clip_margin(_, x, gs, maxq, w):
        """This script's own twin of the clip search's error (E.5: 512 sampled tokens, shrinks 1 - i/20,
        i < 10, asymmetric min/max quantizer), for the scaled, unclipped weight w: per (row, group) the
        relative gap between the best and the second-best shrink. A gap near 0 is a tie that rounding can
        flip, so the checker may accept another choice there. The gap is 0 too where either of the two
        best shrinks puts the zero point on a rounding tie, -min/scale = x.5: a clamp that cuts both ends
        of a group makes it exactly +-7.5 at 4 bits, so the last bit of W * s decides the zero point (and
        with it that shrink's error) in any implementation."""
        N, K = w.shape
        x = x.reshape(-1, K)
        x = x[::max(1, x.shape[0] // 512)].reshape(1, -1, K // gs, gs)
        wg = w.reshape(N, 1, K // gs, gs)
        mx0 = wg.abs().amax(dim=-1, keepdim=True)
        ref = (x * wg).sum(-1)
        errs, ties = [], []
        for i in range(10):
            mx = mx0 * (1 - i / 20)
            cw = torch.clamp(wg, -mx, mx).reshape(-1, gs)
            hi, lo = cw.amax(1, keepdim=True), cw.amin(1, keepdim=True)
            sc = (hi - lo).clamp(min=1e-5) / maxq
            z = (-torch.round(lo / sc)).clamp(0, maxq)
            qw = ((torch.clamp(torch.round(cw / sc) + z, 0, maxq) - z) * sc).reshape(wg.shape)
            errs.append((((x * qw).sum(-1) - ref) ** 2).mean(1).reshape(N, K // gs))
            zf = -lo / sc
            ties.append(((zf - torch.floor(zf) - 0.5).abs() < 1e-4).reshape(N, K // gs))
        e, order = torch.stack(errs, -1).double().sort(-1)
        tie = torch.stack(ties, -1).gather(-1, order[..., :2]).any(-1)
        gap = (e[..., 1] - e[..., 0]) / e[..., 0].clamp(min=1e-30)
        return torch.where(tie, torch.zeros_like(gap), gap).float().cpu()

    def codes_of(Wt, scales, zeros, gs, maxq):
        N, K = Wt.shape
        w = Wt.reshape(-1, gs)
        q = torch.clamp(torch.round(w / scales.reshape(-1, 1)) + zeros.reshape(-1, 1), 0, maxq)
        return q.reshape(N, K)

    for spec in a.config:
        parts = spec.split(":")
        name, algo, bits, gs = parts[0], parts[1], int(parts[2]), int(parts[3])
        flags = parts[4].split("+") if len(parts) > 4 else []
        act, nts = "act" in flags, "nts" in flags
        maxq = 2 ** bits - 1
        layers = [l for l in inner.layers]
        orig = {i: {k: v.detach().clone() for k, v in layers[i].state_dict().items()} for i in range(len(layers))}
        tensors, groups_out = {}, []
        secs = {"forward": 0.0, "hessian": 0.0, "solve": 0.0}
        t_start = time.perf_counter()
        x = inps0.clone()
        with torch.no_grad():
            if algo == "gptq":
                ns = gptq_ns()
                seq = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
                       ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]
                if nts:  # llama.py without --true-sequential: every linear's statistics from the unquantized layer
                    seq = [[n for g in seq for n in g]]
                for li in range(n_layers):
                    layer = layers[li]
                    full = linears(layer)
                    for names in seq:
                        g = {}
                        for n in names:
                            g[n] = ns["GPTQ"](full[n])
                            g[n].quantizer = ns["Quantizer"]()
                            g[n].quantizer.configure(bits, perchannel=True, sym=True, mse=False)
                        def add(n, i, o):
                            t0 = time.perf_counter()
                            g[n].add_batch(i[0].data, o.data)
                            secs["hessian"] += time.perf_counter() - t0
                        hs = [full[n].register_forward_hook((lambda n: lambda m, i, o: add(n, i, o))(n)) for n in names]
                        t0 = time.perf_counter()
                        for j in range(W):
                            layer_out(layer, x[j:j + 1])
                        secs["forward"] += time.perf_counter() - t0
                        for h in hs:
                            h.remove()
                        if a.time:  # the reference as its driver runs it: fasterquant, nothing recorded
                            t0 = time.perf_counter()
                            for n in names:
                                g[n].fasterquant(percdamp=a.damp, groupsize=gs, actorder=act)
                            secs["solve"] += time.perf_counter() - t0
                            continue
                        for n in names:
                            calls = []
                            real = ns["quantize"]

                            def rec(xx, scale, zero, mq, real=real, calls=calls):
                                calls.append((scale.flatten().clone(), zero.flatten().clone(),
                                              torch.clamp(torch.round(xx / scale) + zero, 0, mq).flatten()))
                                return real(xx, scale, zero, mq)
                            ns["quantize"] = rec
                            with Locals({"fasterquant": ("perm",)}) as loc:
                                g[n].fasterquant(percdamp=a.damp, groupsize=gs, actorder=act)
                            ns["quantize"] = real
                            K = full[n].in_features
                            perm = loc.got[-1][1]["perm"] if act else None
                            pos = list(range(K)) if perm is None else perm.tolist()
                            codes = torch.zeros(full[n].out_features, K)
                            G = K // gs
                            sc = torch.zeros(full[n].out_features, G)
                            zr = torch.zeros(full[n].out_features, G)
                            gidx = torch.zeros(K, dtype=torch.int32)
                            for j, (s_, z_, c_) in enumerate(calls):
                                k = pos[j]
                                codes[:, k] = c_.cpu()
                                gi = j // gs
                                gidx[k] = gi
                                if j % gs == 0:
                                    sc[:, gi] = s_.cpu()
                                    zr[:, gi] = z_.cpu()
                            p = f"model.layers.{li}.{n}"
                            if a.tensor_layers and li >= a.tensor_layers:
                                continue
                            tensors[p + ".codes"] = codes.to(torch.uint8)
                            tensors[p + ".scales"] = sc
                            tensors[p + ".zeros"] = zr
                            tensors[p + ".g_idx"] = gidx
                    t0 = time.perf_counter()
                    x = torch.cat([layer_out(layer, x[j:j + 1]) for j in range(W)], 0)
                    secs["forward"] += time.perf_counter() - t0
            else:
                ns = autoawq_ns() if algo == "autoawq" else llmawq_ns()
                if algo == "autoawq":
                    q = ns["AwqQuantizer"].__new__(ns["AwqQuantizer"])
                    q.w_bit, q.group_size, q.zero_point, q.version = bits, gs, True, "gemm"
                    q.duo_scaling, q.apply_clip, q.n_parallel_calib_samples = True, True, None
                    q.max_chunk_memory, q.modules_to_not_convert = 1024 ** 3, []
                for li in range(n_layers):
                    layer = layers[li]
                    named = linears(layer)
                    feat = {}
                    hs = [m.register_forward_hook((lambda n: lambda m, i, o: feat.setdefault(n, []).append(
                        i[0].detach()))(n)) for n, m in named.items()]
                    nxt = layer_out(layer, x)
                    for h in hs:
                        h.remove()
                    feat = {k: torch.cat(v, 0) for k, v in feat.items()}
                    if algo == "autoawq":
                        cfgs = ns["get_layers_for_scaling"](layer, feat, dict(lkw))
                        with Locals({"_compute_best_scale": ("history", "best_ratio")}) as loc:
                            scales_list = [q._search_best_scale(layer, **c) for c in cfgs]
                        ns["apply_scale"](layer, scales_list, input_feat_dict=feat)
                        layer.to(dev)
                        orig_w = {n: m.weight.data.clone() for n, m in named.items()}
                        clip_list, noclip = [], []
                        for n, m in named.items():  # _search_best_clip, one linear at a time
                            try:
                                clip_list += q._search_best_clip(layer, {n: m}, feat)
                            except AssertionError:  # out_features not a multiple of its 64-row batches
                                wp = pad_rows(m.weight.data)
                                clip_list.append((n, q._compute_best_clip(wp, feat[n])[:m.out_features]))
                                noclip.append(n)
                            layer.to(dev)
                        ns["apply_clip"](layer, clip_list)
                        layer.to(dev)
                        quant = q.pseudo_quantize_tensor
                    else:
                        qc = {"zero_point": True, "q_group_size": gs}
                        with Locals({"_search_module_scale": ("history", "best_ratio")}) as loc:
                            scales_list = ns["auto_scale_block"](layer, dict(lkw), bits, qc, feat)
                        ns["apply_scale"](layer, scales_list, input_feat_dict=feat)
                        layer.to(dev)
                        orig_w = {n: m.weight.data.clone() for n, m in named.items()}
                        clip_list, noclip = [], []
                        for n in named:
                            if any(t in n for t in ["q_", "k_", "query", "key", "Wqkv"]):
                                continue
                            try:
                                clip_list.append((n, ns["auto_clip_layer"](named[n].weight, feat[n], n_bit=bits,
                                                                           q_config=qc)))
                            except AssertionError:  # out_features not a multiple of its 64-row batches
                                wp = pad_rows(named[n].weight.data)
                                mx = ns["auto_clip_layer"](wp, feat[n], n_bit=bits, q_config=qc)
                                clip_list.append((n, mx[:named[n].out_features]))
                                noclip.append(n)
                        ns["apply_clip"](layer, clip_list)
                        layer.to(dev)
                        quant = lambda w: ns["pseudo_quantize_tensor"](w, n_bit=bits, zero_point=True,
                                                                        q_group_size=gs, get_scale_zp=True)
                    hist = [v for _, v in loc.got]
                    for (prev, names, _), h in zip(scales_list, hist):
                        groups_out.append({"layer": li, "prev": prev, "layers": list(names),
                                           "ratio": h["best_ratio"], "history": list(h["history"])})
                    keep = not a.tensor_layers or li < a.tensor_layers
                    for n, mx in (clip_list if keep else []):
                        tensors[f"model.layers.{li}.{n}.clip"] = mx.reshape(mx.shape[0], -1).float().cpu()
                        tensors[f"model.layers.{li}.{n}.clip_margin"] = clip_margin(named[n].weight.data, feat[n], gs,
                                                                                    maxq, orig_w[n])
                    for n, m in (named.items() if keep else []):
                        _, sc, zr = quant(m.weight.data)
                        sc, zr = sc.reshape(m.out_features, -1), zr.reshape(m.out_features, -1)
                        p = f"model.layers.{li}.{n}"
                        tensors[p + ".codes"] = codes_of(m.weight.data, sc, zr, gs, maxq).to(torch.uint8).cpu()
                        tensors[p + ".scales"] = sc.float().cpu()
                        tensors[p + ".zeros"] = zr.float().cpu()
                    if a.save_model:  # W <- Q(W) on the scaled, clipped weights (the checkpoint's)
                        for n, m in named.items():
                            m.weight.data = quant(m.weight.data)[0].reshape(m.weight.shape)
                    groups_out.append({"layer": li, "clip_padded": noclip})
                    x = nxt
        if a.save_model:  # the fake-quantized model, for `qcal eval` (benchmarks/ref_compare.py)
            save_model(model, a.model, os.path.join(a.save_model, name))
        for i in range(len(layers)):  # the original weights for the next configuration
            layers[i].load_state_dict(orig[i])
        meta = {"config": name, "algo": algo, "bits": bits, "group_size": gs, "act_order": act, "true_sequential": not nts,
                "sym": algo == "gptq", "damp": a.damp, "layers": n_layers, "model": os.path.basename(a.model.rstrip("/")),
                "arch": arch, "tokens_sha256": tok_sha, "windows": W, "seqlen": S,
                "commits": commits, "torch": torch.__version__, "transformers": transformers.__version__,
                "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "dtype": "float32, TF32 off",
                "groups": groups_out}
        if a.time and algo == "gptq":
            secs["forward"] -= secs["hessian"]  # the passes' time includes the hooks'
            secs["total"] = time.perf_counter() - t_start
            meta["seconds"] = secs
            meta["threads"] = torch.get_num_threads()
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
        if a.rows:
            tensors = {k: (v if k.endswith(".g_idx") else v[:a.rows]) for k, v in tensors.items()}
        write_safetensors_gz(os.path.join(a.out, name + ".safetensors.gz"), tensors)
        print(f"{name}: {len(tensors)} tensors, {len(groups_out)} group records", flush=True)


def save_model(model, src, out):
    """model's weights as F32 safetensors in Hugging Face names, with src's config and tokenizer files."""
    import shutil
    import torch
    os.makedirs(out, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
          if not k.endswith("inv_freq") and not (k == "lm_head.weight" and cfg.get("tie_word_embeddings"))}
    hdr, blobs, off = {}, [], 0
    for k in sorted(sd):
        b = sd[k].numpy().tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(sd[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    cfg["dtype"] = cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    for f in os.listdir(src):
        if f.startswith("tokenizer") or f in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(os.path.join(src, f), out)


def write_safetensors_gz(path, tensors):
    import torch
    dt = {torch.uint8: "U8", torch.float32: "F32", torch.int32: "I32"}
    hdr, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        b = t.numpy().tobytes()
        hdr[k] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


if __name__ == "__main__":
    main()
