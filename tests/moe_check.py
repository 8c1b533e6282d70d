#!/usr/bin/env python3
"""Mixture-of-experts checkpoints of qcal (arch.h: experts after the seven linears), stdlib only.

  moe_check.py fuse SRC DST [v5]   writes DST: the model SRC with its per-expert 2-D experts stored in
                                   transformers 5's fused 3-D layout (<experts>.gate_up_proj [E, 2 ff, d],
                                   gate rows first; <experts>.down_proj [E, d, ff]); the same function; v5:
                                   also transformers 5's module names (Mixtral: mlp.gate, mlp.experts)
  moe_check.py report OUT MODEL NSAMPLES SEQLEN COVERAGE
                                   qcal_report.json of a run on MODEL: every expert of every sparse layer
                                   has a row per linear with its routed token count and COVERAGE ("routed",
                                   "all-tokens", "rtn", or "any"); per layer the counts sum to
                                   NSAMPLES * SEQLEN * top-k (each token goes to top-k experts)
  moe_check.py routers OUT MODEL [scaled]
                                   the checkpoint keeps every router (and shared-expert gate) as F16 equal to
                                   the model's weight rounded to F16 (scaled, for AWQ: different from it, its
                                   columns times the block's scales), and declares it unquantized in each
                                   loader's terms (GPTQ `dynamic` "-:" rule, not in modules_in_block_to_quantize;
                                   AWQ: in modules_to_not_convert)
  moe_check.py same-experts A B    the experts' packed tensors of two checkpoints are byte-identical
  moe_check.py differ-experts A B  ... and differ (at least one tensor)
Prints one line; exit 1 on the first failure.
"""
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fused_check import read, write  # noqa: E402  (the stdlib safetensors reader and writer)


def tensors_of(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            out.update(read(os.path.join(d, f)))
    return out


def moe_names(cfg):
    """(router, shared gate or None, experts module, (gate, up, down) names) of the config's architecture."""
    a = cfg["architectures"][0]
    if a == "MixtralForCausalLM":
        return "block_sparse_moe.gate", None, "block_sparse_moe.experts", ("w1", "w3", "w2")
    if a == "Qwen2MoeForCausalLM":
        return "mlp.gate", "mlp.shared_expert_gate", "mlp.experts", ("gate_proj", "up_proj", "down_proj")
    if a == "Qwen3MoeForCausalLM":
        return "mlp.gate", None, "mlp.experts", ("gate_proj", "up_proj", "down_proj")
    sys.exit("not an MoE config: %s" % a)


def sparse_layers(cfg):
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    step = cfg.get("decoder_sparse_step", 1) or 1
    only = set(cfg.get("mlp_only_layers") or [])
    return E, [i for i in range(cfg["num_hidden_layers"]) if i not in only and (i + 1) % step == 0]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def cmd_fuse(src, dst, v5=False):
    import shutil
    cfg = json.load(open(os.path.join(src, "config.json")))
    router, _, ex, names = moe_names(cfg)
    E, layers = sparse_layers(cfg)
    t = tensors_of(src)
    for i in layers:
        pre = "model.layers.%d.%s." % (i, ex)
        parts = [[t.pop("%s%d.%s.weight" % (pre, e, n)) for n in names] for e in range(E)]
        dt = parts[0][0][0]
        gu = b"".join(p[0][2] + p[1][2] for p in parts)   # per expert: gate rows, then up rows
        dn = b"".join(p[2][2] for p in parts)
        ff, d = parts[0][0][1]
        if v5:   # transformers 5's module names (Mixtral: block_sparse_moe -> mlp)
            pre = "model.layers.%d.mlp.experts." % i
            t["model.layers.%d.mlp.gate.weight" % i] = t.pop("model.layers.%d.%s.weight" % (i, router))
        t[pre + "gate_up_proj"] = (dt, [E, 2 * ff, d], gu)
        t[pre + "down_proj"] = (dt, [E, d, ff], dn)
    os.makedirs(dst, exist_ok=True)
    write(os.path.join(dst, "model.safetensors"), t)
    for f in os.listdir(src):
        if not f.endswith(".safetensors") and os.path.isfile(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), dst)
    print("fused: %d sparse layers, %d experts each" % (len(layers), E))


def cmd_report(out, model, nsamples, seqlen, coverage):
    cfg = json.load(open(os.path.join(model, "config.json")))
    _, _, ex, names = moe_names(cfg)
    E, layers = sparse_layers(cfg)
    k = cfg["num_experts_per_tok"]
    rows = {r["name"]: r for r in json.load(open(os.path.join(out, "qcal_report.json")))["linears"]}
    for i in layers:
        total = 0
        for e in range(E):
            toks = None
            for n in names:
                nm = "model.layers.%d.%s.%d.%s" % (i, ex, e, n)
                r = rows.get(nm)
                if r is None:
                    fail("%s: no report row" % nm)
                if "tokens" not in r or "coverage" not in r:
                    fail("%s: no tokens/coverage in its row" % nm)
                if coverage != "any" and r["coverage"] != coverage:
                    fail("%s: coverage %r, expected %r" % (nm, r["coverage"], coverage))
                if toks is not None and r["tokens"] != toks:
                    fail("%s: tokens %r differ from its expert's other linears (%r)" % (nm, r["tokens"], toks))
                toks = r["tokens"]
            total += toks
        if total != nsamples * seqlen * k:
            fail("layer %d: experts' routed tokens sum to %d, expected %d x %d x %d" % (i, total, nsamples, seqlen, k))
    for nm, r in rows.items():   # dense layers and attention: no coverage
        if ".experts." not in nm and "coverage" in r:
            fail("%s: a coverage entry on a non-expert linear" % nm)
    print("report: %d sparse layers x %d experts, each with its routed tokens (coverage %s)" % (len(layers), E, coverage))


def f32_to_f16_bytes(b):
    vals = struct.unpack("<%df" % (len(b) // 4), b)
    return struct.pack("<%de" % len(vals), *vals)


def cmd_routers(out, model, scaled=False):
    cfg = json.load(open(os.path.join(model, "config.json")))
    router, sgate, _, _ = moe_names(cfg)
    _, layers = sparse_layers(cfg)
    src, ck = tensors_of(model), tensors_of(out)
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    dyn = qc.get("dynamic") or {}
    mib = [x for sub in (qc.get("modules_in_block_to_quantize") or []) for x in (sub if isinstance(sub, list) else [sub])]
    n = 0
    for i in layers:
        for g in [router] + ([sgate] if sgate else []):
            mod = "model.layers.%d.%s" % (i, g)
            if mod + ".qweight" in ck:
                fail("%s is quantized" % mod)
            dt, sh, b = ck.get(mod + ".weight", (None, None, None))
            if dt != "F16":
                fail("%s.weight: dtype %r, expected F16" % (mod, dt))
            sdt, ssh, sb = src[mod + ".weight"]
            if sh != ssh:
                fail("%s.weight: shape %r, the model's %r" % (mod, sh, ssh))
            want = f32_to_f16_bytes(sb) if sdt == "F32" else sb
            if not scaled and b != want:
                fail("%s.weight: not the model's weight in F16" % mod)
            if scaled and b == want:   # AWQ multiplies its columns by the block's scales
                fail("%s.weight: AWQ left it unscaled (the folded norm would change the routing)" % mod)
            if not any(p.startswith("-:") and re.match(p[2:], mod) for p in dyn):
                fail("%s: no dynamic \"-:\" rule skips it (GPTQModel would build it quantized)" % mod)
            if any(m == g for m in mib):
                fail("%s: listed in modules_in_block_to_quantize" % mod)
            if qc.get("quant_method") == "awq" and g not in (qc.get("modules_to_not_convert") or []):
                fail("%s: not in modules_to_not_convert (AutoAWQ would build it quantized)" % mod)
            n += 1
    print("routers: %d router/shared gates F16, equal to the model's, declared unquantized" % n)


def expert_tensors(d):
    return {k: v for k, v in tensors_of(d).items() if ".experts." in k}


def cmd_same(a, b, want_same):
    ta, tb = expert_tensors(a), expert_tensors(b)
    if not ta or set(ta) != set(tb):
        fail("expert tensor names differ (or none): %d vs %d" % (len(ta), len(tb)))
    diff = [k for k in sorted(ta) if ta[k] != tb[k]]
    if want_same and diff:
        fail("%d expert tensors differ, e.g. %s" % (len(diff), diff[0]))
    if not want_same and not diff:
        fail("all %d expert tensors are identical" % len(ta))
    print("experts: %d tensors, %d differ" % (len(ta), len(diff)))


def main():
    a = sys.argv[1:]
    if a[:1] == ["fuse"] and len(a) in (3, 4):
        cmd_fuse(a[1], a[2], len(a) == 4 and a[3] == "v5")
    elif a[:1] == ["report"] and len(a) == 6:
        cmd_report(a[1], a[2], int(a[3]), int(a[4]), a[5])
    elif a[:1] == ["routers"] and len(a) in (3, 4):
        cmd_routers(a[1], a[2], len(a) == 4 and a[3] == "scaled")
    elif a[:1] == ["same-experts"] and len(a) == 3:
        cmd_same(a[1], a[2], True)
    elif a[:1] == ["differ-experts"] and len(a) == 3:
        cmd_same(a[1], a[2], False)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
