#!/usr/bin/env python3
"""qcal against the reference implementations' own code, on the same calibration windows, for N seeds.

For every model, seed and configuration: `qcal calib --save-tokens` samples the windows once; qcal quantizes
from them (`--calib-tokens`, on each --device); benchmarks/ref_parity.py runs the reference (IST-DASLab GPTQ,
AutoAWQ, llm-awq) on the same windows and writes its fake-quantized model; `qcal eval` measures every model
with the same evaluator (perplexity of --eval-text at --eval-seqlen, --max-windows). The table gives mean ± sd
over the seeds, and qcal's difference to the reference of the same algorithm in percent of the mean.

  python3 benchmarks/ref_compare.py --qcal build/qcal --model DIR [--model DIR2] --calib c4.utf8 \
      --eval-text wikitext2.txt --seeds 0 1 2 --nsamples 128 --seqlen 512 --devices cpu cuda \
      --out OUT [--local-model] [--configs gptq_w4 awq_w4 ...]

Configurations (group 128; a model whose widths group 128 does not divide uses --group-size):
  gptq_w4, gptq_w4_act, gptq_w3, gptq_w3_act  IST fasterquant (sym) vs qcal gptq --sym --format gptq
  awq_w4, awq_w3        AutoAWQ (duo scales) vs qcal awq --awq-scale autoawq; and qcal's default (best)
  llmawq_w4, llmawq_w3  llm-awq (x^r scales) vs qcal awq --awq-scale llm-awq
Writes OUT/results.jsonl (one line per run) and OUT/table.md.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "gptq_w4": ("gptq", 4, False), "gptq_w4_act": ("gptq", 4, True), "gptq_w3": ("gptq", 3, False),
    "gptq_w3_act": ("gptq", 3, True), "awq_w4": ("autoawq", 4, False), "awq_w3": ("autoawq", 3, False),
    "llmawq_w4": ("llm-awq", 4, False), "llmawq_w3": ("llm-awq", 3, False),
}


def sh(cmd, log):
    t = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n" + r.stdout + f"[rc {r.returncode}, {time.time() - t:.1f} s]\n")
    if r.returncode:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}")
    return r.stdout


def ppl(a, mdir, log):
    out = sh([a.qcal, "eval", "--model", mdir, "--text", a.eval_text, "--seqlen", str(a.eval_seqlen),
              "--max-windows", str(a.max_windows)], log)
    return float(re.findall(r"perplexity: ([0-9.eE+-]+)", out)[-1])


def qcal_args(algo, bits, act, scale):
    if algo == "gptq":
        return ["--method", "gptq", "--sym", "--format", "gptq"] + (["--act-order"] if act else [])
    # one formula: the reference's search, on every window; best: qcal's defaults
    return ["--method", "awq", "--asym", "--format", "awq" if bits == 4 else "gptq_v2"] + \
        (["--awq-scale", scale] + (["--awq-search-samples", "all"] if scale != "best" else []) if scale else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qcal", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval-text", required=True)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--max-windows", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--best", action="store_true", help="also qcal's default AWQ scale formula for the awq rows")
    ap.add_argument("--local-model", action="store_true", help="reference on benchmarks/ref_model.py (no transformers)")
    ap.add_argument("--no-ref", action="store_true", help="run only qcal (the references' results come from OUT/results.jsonl)")
    ap.add_argument("--tag", default="", help="suffix for qcal's implementation names (another machine's CPU: --tag @epyc)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", required=True)
    ap.add_argument("--table-only", action="store_true", help="only redraw OUT/table.md from OUT/results.jsonl")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    log = os.path.join(a.out, "log.txt")
    res_path = os.path.join(a.out, "results.jsonl")
    done = {}
    if os.path.exists(res_path):  # resume: runs already measured are kept
        for l in open(res_path):
            r = json.loads(l)
            done[(r["model"], r["seed"], r["config"], r["impl"])] = r
    if a.table_only:
        return table(done, a)
    res = open(res_path, "a")

    def record(**r):
        done[(r["model"], r["seed"], r["config"], r["impl"])] = r
        res.write(json.dumps(r) + "\n")
        res.flush()
        print(json.dumps(r), flush=True)

    for mdir in a.model:
        mname = os.path.basename(mdir.rstrip("/"))
        gs = a.group_size
        for seed in a.seeds:
            tok = os.path.join(a.out, f"{mname}-tokens-{seed}.bin")
            if not os.path.exists(tok):
                sh([a.qcal, "calib", "--model", mdir, "--calib", a.calib, "--nsamples", str(a.nsamples),
                    "--seqlen", str(a.seqlen), "--seed", str(seed), "--save-tokens", tok], log)
            if (mname, seed, "fp16", "-") not in done and seed == a.seeds[0]:
                record(model=mname, seed=seed, config="fp16", impl="-", ppl=ppl(a, mdir, log))
            for cfg in a.configs:
                algo, bits, act = CONFIGS[cfg]
                impls = [(d, algo if algo != "gptq" else None) for d in a.devices]
                if a.best and algo == "autoawq":
                    impls += [(d + "-best", "best") for d in a.devices]
                for dev, scale in impls:
                    key = (mname, seed, cfg, "qcal-" + dev + a.tag)
                    if key in done:
                        continue
                    out = os.path.join(a.out, "ckpt")
                    subprocess.run(["rm", "-rf", out])
                    t = time.time()
                    sh([a.qcal, "quantize", "--model", mdir, "--out", out, "--calib-tokens", tok, "--sampling", "gptq",
                        "--nsamples", str(a.nsamples), "--seqlen", str(a.seqlen), "--seed", str(seed),
                        "--bits", str(bits), "--group-size", str(gs), "--device", dev.split("-")[0]]
                       + qcal_args(algo, bits, act, scale), log)
                    record(model=mname, seed=seed, config=cfg, impl="qcal-" + dev + a.tag, seconds=round(time.time() - t, 1),
                           ppl=ppl(a, out, log))
            todo = [c for c in a.configs if (mname, seed, c, CONFIGS[c][0]) not in done]
            if todo and not a.no_ref:  # the reference: one process per seed for every configuration left
                rdir = os.path.join(a.out, "ref")
                subprocess.run(["rm", "-rf", rdir])
                t = time.time()
                specs = []
                for c in todo:
                    algo, bits, act = CONFIGS[c]
                    specs += ["--config", f"{c}:{algo}:{bits}:{gs}" + (":act" if act else "")]
                sh([a.python, os.path.join(HERE, "ref_parity.py"), "--model", mdir, "--tokens", tok, "--out", rdir,
                    "--save-model", rdir] + specs + (["--local-model", "--device", "cpu"] if a.local_model else []), log)
                secs = round((time.time() - t) / len(todo), 1)
                for c in todo:
                    record(model=mname, seed=seed, config=c, impl=CONFIGS[c][0], seconds=secs,
                           ppl=ppl(a, os.path.join(rdir, c), log))
                subprocess.run(["rm", "-rf", rdir])
    res.close()
    table(done, a)


def ms(v):
    if not v:
        return "-", None
    m = statistics.mean(v)
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}", m


def best_table(done):
    """qcal's default AWQ (awq_scale best, impl qcal-*-best) against the better of the two references' means,
    on the seeds all three have (issue 12: best <= min(AutoAWQ, llm-awq))."""
    out = []
    for mname in sorted({k[0] for k in done}):
        for bits in (4, 3):
            auto = {k[1]: r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == f"awq_w{bits}" and k[3] == "autoawq"}
            llm = {k[1]: r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == f"llmawq_w{bits}" and k[3] == "llm-awq"}
            for impl in sorted({k[3] for k in done if k[3].startswith("qcal-") and "-best" in k[3]}):
                b = {k[1]: r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == f"awq_w{bits}" and k[3] == impl}
                seeds = sorted(set(b) & set(auto) & set(llm))
                if not seeds:
                    continue
                if not out:
                    out += ["", "awq_scale best (qcal's default) against the better reference, on the seeds all three ran:", "",
                            "| model | bits | qcal best | AutoAWQ | llm-awq | min(refs) | Δ vs min | seeds |", "|---" * 8 + "|"]
                m = [statistics.mean(d[x] for x in seeds) for d in (b, auto, llm)]
                lo = min(m[1], m[2])
                out.append(f"| {mname} | w{bits} ({impl}) | {ms([b[x] for x in seeds])[0]} | {ms([auto[x] for x in seeds])[0]} | "
                           f"{ms([llm[x] for x in seeds])[0]} | {lo:.2f} | {100 * (m[0] - lo) / lo:+.2f}% | {' '.join(map(str, seeds))} |")
    return out


def table(done, a):
    lines = [f"calibration {a.nsamples} x {a.seqlen} ({os.path.basename(a.calib)}), seeds {' '.join(map(str, a.seeds))}; "
             f"perplexity of {os.path.basename(a.eval_text)} at {a.eval_seqlen}, {a.max_windows} windows; "
             f"mean ± sd over seeds (n of them); Δ = qcal vs the reference of the same algorithm, "
             f"on the seeds both ran", ""]
    impls = sorted({k[3] for k in done if k[3].startswith("qcal-")})
    lines.append("| model | config | reference | " + " | ".join(impls) + " | " + " | ".join("Δ " + i for i in impls) + " |")
    lines.append("|---" * (3 + 2 * len(impls)) + "|")
    for mname in sorted({k[0] for k in done}):
        fp = [r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == "fp16"]
        if fp:
            lines.append(f"| {mname} | original | {fp[0]:.2f} |" + " |" * (2 * len(impls)))
        for cfg in CONFIGS:
            algo = CONFIGS[cfg][0]
            ref = {k[1]: r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == cfg and k[3] == algo}
            if not ref:
                continue
            rs, _ = ms(list(ref.values()))
            cells, deltas = [], []
            for i in impls:
                v = {k[1]: r["ppl"] for k, r in done.items() if k[0] == mname and k[2] == cfg and k[3] == i}
                s, _ = ms(list(v.values()))
                cells.append(f"{s} (n={len(v)})" if v else s)
                both = sorted(set(v) & set(ref))  # Δ on the seeds both have (paired)
                if both:
                    qm = statistics.mean(v[x] for x in both)
                    rm = statistics.mean(ref[x] for x in both)
                    deltas.append(f"{100 * (qm - rm) / rm:+.2f}% (n={len(both)})")
                else:
                    deltas.append("-")
            lines.append(f"| {mname} | {cfg} | {algo} {rs} (n={len(ref)}) | " + " | ".join(cells) + " | "
                         + " | ".join(deltas) + " |")
    lines += best_table(done)
    t = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "table.md"), "w").write(t)
    print(t)


if __name__ == "__main__":
    main()
