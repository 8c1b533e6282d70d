#!/usr/bin/env python3
"""Runs `qcal eval --json` for every entry of ../shared/data/reference_eval.json whose model matches
--models, and checks the perplexity against the transformers value (relative tolerance 0.1%, the
issue's bound). Prints one line per entry with both values; exits 1 on any mismatch, 77 (skip) when
the data is absent.

usage: eval_reference.py --models stories260K,stories260K-fp16 [--qcal BIN] [--data DIR] [--max N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REL_TOL = 1e-3


def text_file(data, name, tmp):
    if name == "ptb.test":
        # GPTQ's PTB string: ' '.join of the test sentences (one per line in ptb.test.txt).
        path = os.path.join(tmp, "ptb.test.joined.txt")
        if not os.path.exists(path):
            # ' '.join of the lines as split on '\n': the file's final newline leaves a trailing space,
            # which the reference token counts include.
            with open(os.path.join(data, "text", "ptb.test.txt"), encoding="utf-8") as f:
                lines = f.read().split("\n")
            with open(path, "w", encoding="utf-8") as f:
                f.write(" ".join(lines))
        return path
    for cand in (name, name + ".txt"):
        p = os.path.join(data, "text", cand)
        if os.path.exists(p):
            return p
    raise SystemExit(f"unknown text {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--qcal", default=os.environ.get("QCAL_BIN", "qcal"))
    ap.add_argument("--data", default=os.environ.get("QCAL_DATA", "../shared/data"))
    ap.add_argument("--max", type=int, default=0, help="check at most N entries")
    a = ap.parse_args()
    ref_path = os.path.join(a.data, "reference_eval.json")
    if not os.path.exists(ref_path):
        print(f"SKIP: {ref_path} not found (set QCAL_DATA)")
        sys.exit(77)
    ref = json.load(open(ref_path))
    models = a.models.split(",")
    entries = [e for e in ref["perplexity"] if e["model"] in models]
    if a.max:
        entries = entries[: a.max]
    if not entries:
        print(f"no reference entries for {models}")
        sys.exit(1)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries:
            mdir = os.path.join(a.data, e["model"])
            if not os.path.isdir(mdir):
                print(f"SKIP: model {mdir} not found")
                sys.exit(77)
            cmd = [a.qcal, "eval", "--model", mdir, "--text", text_file(a.data, e["text"], tmp),
                   "--seqlen", str(e["seqlen"]), "--json", "--quiet"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            lines = p.stdout.strip().split("\n")
            if p.returncode != 0 or not lines[-1].startswith("perplexity: "):
                print(f"FAIL {e['model']} {e['text']} {e['seqlen']}: exit {p.returncode}\n{p.stderr}")
                failed += 1
                continue
            got = json.loads(lines[-2])
            rel = abs(got["ppl"] - e["ppl"]) / e["ppl"]
            ok = rel <= REL_TOL and got["windows"] == e["windows"] and got["text_tokens"] == e["tokens"]
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {e['model']:18s} {e['text']:26s} seqlen {e['seqlen']:5d} "
                  f"windows {got['windows']:5d}/{e['windows']:5d} tokens {got['text_tokens']}/{e['tokens']} "
                  f"ppl {got['ppl']:.4f} ref {e['ppl']:.4f} rel diff {rel:.2e} "
                  f"({got['tokens_per_s']:.0f} tok/s)", flush=True)
    print(f"{len(entries) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
