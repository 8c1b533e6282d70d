#!/usr/bin/env python3
"""Writes the results.jsonl fixtures of tests/test_experiment_report.sh (committed; rerun only to change them).

  domain/  gptq and awq x 3 and 4 bits x calib c4, code, mix x seeds 0-2 on a 4-layer model, eval texts
           wikitext2, c4, code: code calibration lowers the code-text loss clearly (about 6% -> 3.6% over
           FP16 at 4 bits, seed sd ~0.3 points). One cell is set by hand for the test to check:
           gptq w4 g128 calib=c4, wikitext2 ppl 12.40, 12.46, 12.43 (mean 12.43, sd 0.03, +3.6% over 12.00).
  flat/    gptq w4 g128 x calib c4, code (3 seeds) and tiny (1 seed), eval texts wikitext2, code: the code
           calibration's effect (0.1 points) is far inside the seed spread (sd ~0.5 points).
The numbers are made up but shaped like real runs (ppl increase 3-6% at 4 bits, 15-30% at 3 bits, later
layers and down_proj with larger error).
"""
import hashlib
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = [("self_attn", "q_proj", 0.004), ("self_attn", "k_proj", 0.005), ("self_attn", "v_proj", 0.002),
         ("self_attn", "o_proj", 0.003), ("mlp", "gate_proj", 0.006), ("mlp", "up_proj", 0.005),
         ("mlp", "down_proj", 0.009)]
NLAYERS = 4


def sha(*parts):
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def linears(rng, method, bits, calib):
    f = (1.0 if bits == 4 else 4.2) * (1.3 if method == "awq" else 1.0) * (1.1 if calib == "code" else 1.0)
    out = []
    for li in range(NLAYERS):
        for blk, t, base in TYPES:
            v = base * (1 + 0.4 * li) * f * (1 + rng.uniform(-0.05, 0.05))
            out.append({"name": "model.layers.%d.%s.%s" % (li, blk, t), "rel_err": float("%.4g" % v)})
    return out


def layers_summary(lin):
    by = {}
    for x in lin:
        by.setdefault(x["name"].rsplit(".", 1)[1], []).append(x["rel_err"])
    errs = [x["rel_err"] for x in lin]
    return {"n": len(lin), "quantized": len(lin), "rel_err_mean": float("%.4g" % (sum(errs) / len(errs))),
            "rel_err_max": max(errs),
            "rel_err_by_type": {t: float("%.4g" % (sum(v) / len(v))) for t, v in by.items()}}


def baseline(ppl):
    return {"run": "fp16", "baseline": True, "grid": {}, "cell": "fp16", "seed": None,
            "recipe_sha256": None, "tokens_sha256": None, "checkpoint_sha256": sha("fp16"),
            "ppl": ppl, "kl": 0.0, "top1": 1.0,
            "layers": {"n": 0, "quantized": 0, "rel_err_mean": 0.0, "rel_err_max": 0.0, "rel_err_by_type": {}},
            "linears": [], "seconds": {"quantize": 0.0, "eval": 41.2}, "reused": False,
            "qcal_version": "0.9.0", "device": "cuda:0 NVIDIA H100 80GB HBM3", "checkpoint": "runs/fp16"}


def run(rng, grid, ppl, kl, top1, calib, reused=False):
    keys = [k for k in grid if k != "seed"]
    cell = ",".join("%s=%s" % (k, json.dumps(grid[k]).strip('"')) for k in keys)
    rid = cell + ",seed=%d" % grid["seed"]
    lin = linears(rng, grid["method"], grid["bits"], calib)
    return {"run": rid, "baseline": False, "grid": grid, "cell": cell, "seed": grid["seed"],
            "recipe_sha256": sha("recipe", rid), "tokens_sha256": sha("tokens", calib, grid["seed"]),
            "checkpoint_sha256": sha("ckpt", rid), "ppl": ppl, "kl": kl, "top1": top1,
            "layers": layers_summary(lin), "linears": lin,
            "seconds": {"quantize": round(rng.uniform(80, 140) * (1.4 if grid["method"] == "awq" else 1), 1),
                        "eval": round(rng.uniform(38, 45), 1)},
            "reused": reused, "qcal_version": "0.9.0", "device": "cuda:0 NVIDIA H100 80GB HBM3",
            "checkpoint": "runs/%s" % rid.replace(",", "_").replace("=", "-")}


def write(name, rows, experiment=None):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "results.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    if experiment is not None:
        with open(os.path.join(d, "experiment.json"), "w") as f:
            json.dump(experiment, f, indent=1, sort_keys=True)
            f.write("\n")


def domain():
    rng = random.Random(11)
    fp = {"wikitext2": 12.00, "c4": 14.50, "code": 4.00}
    base = {("gptq", 4): {"wikitext2": 3.6, "c4": 3.0, "code": 6.0},
            ("gptq", 3): {"wikitext2": 18.0, "c4": 15.0, "code": 30.0},
            ("awq", 4): {"wikitext2": 3.2, "c4": 2.8, "code": 5.5},
            ("awq", 3): {"wikitext2": 14.0, "c4": 12.0, "code": 25.0}}
    calib_f = {"c4": {"wikitext2": 1.0, "c4": 1.0, "code": 1.0},
               "code": {"wikitext2": 1.15, "c4": 1.2, "code": 0.6},
               "mix": {"wikitext2": 1.05, "c4": 1.05, "code": 0.8}}
    rows = [baseline(fp)]
    for method in ("gptq", "awq"):
        for bits in (4, 3):
            for calib in ("c4", "code", "mix"):
                for seed in (0, 1, 2):
                    grid = {"method": method, "bits": bits, "group_size": 128, "calib": calib, "seed": seed}
                    noise = 0.3 if bits == 4 else 1.2
                    ppl = {}
                    for e, ref in fp.items():
                        d = base[(method, bits)][e] * calib_f[calib][e] + rng.gauss(0, noise)
                        ppl[e] = round(ref * (1 + d / 100), 4)
                    if (method, bits, calib) == ("gptq", 4, "c4"):
                        ppl["wikitext2"] = [12.40, 12.46, 12.43][seed]
                    kl = round((0.012 if bits == 4 else 0.065) * (1.2 if method == "awq" else 1) *
                               (1 + rng.uniform(-0.05, 0.05)), 5)
                    top1 = round((0.93 if bits == 4 else 0.84) + rng.uniform(-0.004, 0.004), 4)
                    rows.append(run(rng, grid, ppl, kl, top1, calib, reused=(seed == 0 and method == "gptq")))
    # experiment.json as cli/experiment.c writes it
    write("domain", rows, {
        "experiment": "experiments/domain.yaml", "plan_sha256": sha("experiment", "domain"),
        "qcal_version": "0.9.0", "model": "models/llama-3.1-8b", "device": "cuda:0",
        "grid_keys": ["method", "bits", "group_size", "calib", "seed"],
        "eval": [{"name": e, "text": "data/%s-test.txt" % e, "seqlen": 2048, "max_windows": 0, "holdout": 0}
                 for e in fp],
        "runs": [{"run": r["run"], "cell": r["cell"], "dir": r["checkpoint"], "recipe_sha256": r["recipe_sha256"]}
                 for r in rows[1:]]})


def flat():
    rng = random.Random(12)
    fp = {"wikitext2": 12.00, "code": 4.00}
    rows = [baseline(fp)]
    for calib, seeds in (("c4", (0, 1, 2)), ("code", (0, 1, 2)), ("tiny", (0,))):
        for seed in seeds:
            grid = {"method": "gptq", "bits": 4, "group_size": 128, "calib": calib, "seed": seed}
            ppl = {}
            for e, ref in fp.items():
                d = {"wikitext2": 3.6, "code": 6.0}[e] - (0.1 if calib == "code" and e == "code" else 0) + \
                    rng.gauss(0, 0.5)
                ppl[e] = round(ref * (1 + d / 100), 4)
            rows.append(run(rng, grid, ppl, round(0.012 + rng.uniform(-0.001, 0.001), 5),
                            round(0.93 + rng.uniform(-0.004, 0.004), 4), calib))
    write("flat", rows)


if __name__ == "__main__":
    domain()
    flat()
