#!/usr/bin/env python3
"""The report of a `qcal experiment`: DIR/results.jsonl -> DIR/report.md and DIR/plots/*.{png,svg}.

Usage:  experiment_report.py DIR [--reference-calib LABEL] [--no-plots]

`qcal experiment EXP.yaml --out DIR` runs a grid of quantizations (method x bits x group size x
calibration set x seeds) and calls this program at the end. It reads

  DIR/results.jsonl    one JSON object per run, the FP16 baseline first (baseline: true):
                         run, baseline, grid {every grid key, JSON-typed}, cell (run id less the seed),
                         seed, ppl {eval name: perplexity}, kl, top1, layers {n, quantized, rel_err_mean,
                         rel_err_max, rel_err_by_type {q_proj: ..}}, linears [{name, rel_err}], seconds
                         {quantize, eval}, reused, qcal_version, device, checkpoint, *_sha256
  DIR/experiment.json  optional: the experiment's hash and file name, for the provenance section

and writes

  DIR/report.md        the papers' layout: one row per cell (every grid key but the seed), one column
                       per eval text, then KL and top-1; each cell is `mean ± sd (Δ% vs FP16)` over
                       seeds; then per-layer error, the calibration comparison (when a grid key `calib`
                       takes two or more values), provenance and every run
  DIR/plots/           ppl_vs_bits, layer_error, calib_compare (the last only with a calib key), each
                       as PNG and SVG, drawn with matplotlib (Debian: python3-matplotlib)

Statistics: sd is the sample standard deviation over seeds (n - 1 denominator); a single seed has none.
Δ% is (mean / FP16 - 1) x 100. Two calibration sets differ when the difference of their mean Δ% exceeds
twice its combined standard error sqrt(sd1²/n1 + sd2²/n2).

Output is deterministic: the same results.jsonl gives a byte-identical report.md, and (with the same
matplotlib) byte-identical plots: SVGs carry no date and a fixed id salt, PNGs no date. Every file is
written to NAME.tmp, flushed and renamed into place.

Exit status: 0 done, 1 bad input (the message names the file, line and field), 2 usage,
3 matplotlib missing (report.md is still written, without plots, and says so).

Only the standard library and matplotlib; importable (`import experiment_report`) for tests.
"""
import argparse
import io
import json
import math
import os
import re
import sys

MPL_HINT = "install python3-matplotlib (Debian/Ubuntu: apt-get install python3-matplotlib)"
TYPE_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SVG_SALT = "qcal-experiment-report"


class InputError(Exception):
    pass


# ---------------------------------------------------------------------------------------------- statistics

def mean_sd(xs):
    """(mean, sample sd with n - 1 denominator) of a list of numbers; sd is None for fewer than 2."""
    n = len(xs)
    if n == 0:
        return None, None
    m = math.fsum(xs) / n
    if n < 2:
        return m, None
    if not all(math.isfinite(x) for x in xs):
        return m, float("nan")
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


def delta_pct(value, ref):
    if value is None or ref is None or ref == 0:
        return None
    return (value / ref - 1.0) * 100.0


def compare(m1, s1, n1, m2, s2, n2):
    """Difference m2 - m1 with its combined standard error sqrt(s1²/n1 + s2²/n2) and whether it exceeds
    twice that. s is None (n = 1): the spread is unknown, significant is None."""
    d = m2 - m1
    if s1 is None or s2 is None:
        return d, None, None
    se = math.sqrt(s1 * s1 / n1 + s2 * s2 / n2)
    return d, se, abs(d) > 2.0 * se


# ---------------------------------------------------------------------------------------------- formatting

def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_val(x, decimals):
    if x is None:
        return "—"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return "%.*f" % (decimals, x)


def _decimals_for(sd, base):
    """base decimals, more when the sd would round to zero (one significant digit of sd, at most 4)."""
    if sd is None or not math.isfinite(sd) or sd <= 0:
        return base
    d = base
    while d < 4 and round(sd, d) == 0:
        d += 1
    return d


def fmt_pm(m, sd, base=2):
    if m is None:
        return "—"
    if sd is not None and math.isfinite(sd) and abs(sd) <= 1e-9 * max(1.0, abs(m)):
        sd = 0.0  # identical values whose mean rounds differently (e.g. RTN, which no seed changes)
    d = _decimals_for(sd, base)
    s = fmt_val(m, d)
    if sd is not None:
        s += " ± " + fmt_val(sd, d)
    return s


def fmt_delta(d):
    if d is None:
        return ""
    if not math.isfinite(d):
        return " (%s)" % fmt_val(d, 1)
    return " (%+.*f%%)" % (1 if abs(d) >= 1 else 2, d)


def fmt_sci(x):
    if x is None:
        return "—"
    if not math.isfinite(x):
        return fmt_val(x, 0)
    return "%.2e" % x


def fmt_small(m, sd):
    """KL: 4 decimals, scientific below 1e-3."""
    if m is None:
        return "—"
    if math.isfinite(m) and 0 < abs(m) < 1e-3:
        return fmt_sci(m) + ("" if sd is None else " ± " + fmt_sci(sd))
    return fmt_pm(m, sd, 4)


def fmt_grid_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "—"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def short_label(key, v):
    """A compact series label part: gptq, g128, act-order, asym, calib=c4."""
    if key == "method":
        return str(v)
    if key == "bits":
        return "w%s" % v
    if key == "group_size":
        return "per-channel" if v in (-1, 0) else "g%s" % v
    if key in ("act_order", "sym", "static_groups", "true_sequential") and isinstance(v, bool):
        name = key.replace("_", "-")
        if key == "sym":
            return "sym" if v else "asym"
        return name if v else "no " + name
    if key == "calib":
        return "calib=%s" % v
    return "%s=%s" % (key, fmt_grid_value(v))


def md_escape(s):
    return str(s).replace("|", "\\|")


def md_table(header, align, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return out


# ---------------------------------------------------------------------------------------------- input

def load_results(path):
    """The runs of results.jsonl, validated: (baseline or None, [runs]) in file order."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise InputError("%s: cannot read: %s" % (path, e.strerror or e))
    baseline, runs = None, []
    seen = set()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = "%s:%d" % (path, i)
        try:
            r = json.loads(line)
        except ValueError as e:
            raise InputError("%s: not JSON: %s" % (where, e))
        if not isinstance(r, dict):
            raise InputError("%s: a run must be a JSON object" % where)
        run_id = r.get("run")
        if not isinstance(run_id, str) or not run_id:
            raise InputError("%s: field 'run' missing or not a string" % where)
        if run_id in seen:
            raise InputError("%s: run '%s' appears twice" % (where, run_id))
        seen.add(run_id)
        ppl = r.get("ppl")
        if not isinstance(ppl, dict):
            raise InputError("%s: run '%s': field 'ppl' missing or not an object" % (where, run_id))
        for k, v in ppl.items():
            if v is not None and not _num(v):
                raise InputError("%s: run '%s': ppl.%s is not a number" % (where, run_id, k))
        for k in ("kl", "top1"):
            if r.get(k) is not None and not _num(r[k]):
                raise InputError("%s: run '%s': field '%s' is not a number" % (where, run_id, k))
        if r.get("baseline") is True:
            if baseline is not None:
                raise InputError("%s: a second baseline run '%s' (the first is '%s')"
                                 % (where, run_id, baseline["run"]))
            baseline = r
            continue
        grid = r.get("grid")
        if not isinstance(grid, dict):
            raise InputError("%s: run '%s': field 'grid' missing or not an object" % (where, run_id))
        for k in ("layers", "seconds"):
            if r.get(k) is not None and not isinstance(r[k], dict):
                raise InputError("%s: run '%s': field '%s' is not an object" % (where, run_id, k))
        lin = r.get("linears")
        if lin is not None:
            if not isinstance(lin, list) or not all(
                    isinstance(x, dict) and isinstance(x.get("name"), str) and
                    (x.get("rel_err") is None or _num(x.get("rel_err"))) for x in lin):
                raise InputError("%s: run '%s': field 'linears' must be a list of {name, rel_err}"
                                 % (where, run_id))
        r["_line"] = i
        runs.append(r)
    if not runs and baseline is None:
        raise InputError("%s: no runs" % path)
    return baseline, runs


def load_experiment(path):
    if not os.path.exists(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            e = json.load(f)
    except (OSError, ValueError) as ex:
        raise InputError("%s: %s" % (path, ex))
    return e if isinstance(e, dict) else None


class Cell:
    def __init__(self, cid, grid):
        self.id = cid
        self.grid = {k: v for k, v in grid.items() if k != "seed"}
        self.runs = []

    def values(self, getter):
        out = []
        for r in self.runs:
            v = getter(r)
            if _num(v):
                out.append(float(v))
        return out

    def stat(self, getter):
        """(mean, sd, n) over the seeds with a finite value (a diverged run is counted apart)."""
        xs = [x for x in self.values(getter) if math.isfinite(x)]
        m, sd = mean_sd(xs)
        return m, sd, len(xs)


def group_cells(runs):
    cells, order = {}, []
    for r in runs:
        cid = r.get("cell")
        if not isinstance(cid, str) or not cid:
            cid = ",".join("%s=%s" % (k, fmt_grid_value(v)) for k, v in r["grid"].items() if k != "seed")
        if cid not in cells:
            cells[cid] = Cell(cid, r["grid"])
            order.append(cid)
        cells[cid].runs.append(r)
    return [cells[c] for c in order]


def grid_keys(cells):
    """(all keys in order of first appearance, keys whose value differs between cells)."""
    keys = []
    for c in cells:
        for k in c.grid:
            if k not in keys:
                keys.append(k)
    varying = []
    for k in keys:
        vals = {json.dumps(c.grid.get(k, "\0missing"), sort_keys=True) for c in cells}
        if len(vals) > 1:
            varying.append(k)
    return keys, varying


def eval_names(baseline, runs):
    names = []
    for r in ([baseline] if baseline else []) + runs:
        for k in r["ppl"]:
            if k not in names:
                names.append(k)
    return names


def layer_index(name):
    m = re.search(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def per_layer_errors(run):
    """{layer index: mean rel_err over that decoder layer's linears} of one run."""
    acc = {}
    for x in run.get("linears") or []:
        li = layer_index(x["name"])
        v = x.get("rel_err")
        if li is None or not _num(v):
            continue
        acc.setdefault(li, []).append(float(v))
    return {k: math.fsum(v) / len(v) for k, v in acc.items()}


# ---------------------------------------------------------------------------------------------- analysis

class Analysis:
    def __init__(self, baseline, runs, experiment=None, reference_calib=None):
        self.baseline = baseline
        self.runs = runs
        self.experiment = experiment
        self.cells = group_cells(runs)
        self.keys, self.varying = grid_keys(self.cells)
        self.evals = eval_names(baseline, runs)
        self.fp16 = {e: (float(baseline["ppl"][e]) if baseline and _num(baseline["ppl"].get(e)) else None)
                     for e in self.evals}
        # columns that tell the cells apart; with a single cell, every key
        self.row_keys = self.varying if self.varying else self.keys
        self.fixed = [k for k in self.keys if k not in self.row_keys]
        self.calib_labels = []
        if "calib" in self.keys:
            for c in self.cells:
                lab = fmt_grid_value(c.grid.get("calib"))
                if lab not in self.calib_labels:
                    self.calib_labels.append(lab)
        self.reference_calib = None
        if len(self.calib_labels) >= 2:
            if reference_calib is not None:
                if reference_calib not in self.calib_labels:
                    raise InputError("--reference-calib %s: not a calib label of the grid (%s)"
                                     % (reference_calib, ", ".join(self.calib_labels)))
                self.reference_calib = reference_calib
            else:
                c4 = [l for l in self.calib_labels if l.lower() == "c4"]
                self.reference_calib = c4[0] if c4 else self.calib_labels[0]

    def ppl_stat(self, cell, e):
        return cell.stat(lambda r: r["ppl"].get(e))

    def delta_stat(self, cell, e):
        """Δ% vs FP16 over seeds (mean, sd, n); FP16 is one number, so sd scales the ppl sd."""
        ref = self.fp16.get(e)
        if ref is None:
            return None, None, 0
        return cell.stat(lambda r: delta_pct(r["ppl"].get(e), ref) if _num(r["ppl"].get(e)) else None)

    def cell_label(self, cell, drop=()):
        parts = [short_label(k, cell.grid.get(k)) for k in self.row_keys if k not in drop and k in cell.grid]
        if not parts:  # the dropped keys were all that varied: name the cell by its fixed keys
            parts = [short_label(k, cell.grid.get(k)) for k in self.keys if k not in drop and k in cell.grid]
        return " ".join(parts) if parts else "all"

    def series(self, drop):
        """Cells grouped by their grid less the keys in drop: [(label, [cells])] in file order."""
        out, index = [], {}
        for c in self.cells:
            key = json.dumps({k: v for k, v in c.grid.items() if k not in drop}, sort_keys=True)
            if key not in index:
                index[key] = len(out)
                out.append((self.cell_label(c, drop), []))
            out[index[key]][1].append(c)
        return out

    def calib_groups(self):
        """Cells that differ only by calib: [(label of the rest, {calib label: cell})] with >= 2 labels."""
        out = []
        for label, cells in self.series(("calib",)):
            by = {}
            for c in cells:
                by.setdefault(fmt_grid_value(c.grid.get("calib")), c)
            if len(by) >= 2:
                out.append((label, by))
        return out


# ---------------------------------------------------------------------------------------------- report

def section_results(a):
    L = ["## Results", ""]
    if a.fixed:
        L.append("Fixed across the grid: " + ", ".join(
            "`%s` = %s" % (k, md_escape(fmt_grid_value(a.cells[0].grid.get(k)))) for k in a.fixed) + ".")
        L.append("")
    L.append("Perplexity per eval text: mean ± sd over seeds (Δ%% vs FP16); KL divergence to FP16 and top-1 "
             "agreement are on the first eval text (`%s`)." % md_escape(a.evals[0]) if a.evals else
             "No eval texts.")
    L.append("")
    label_cols = a.row_keys or ["cell"]
    header = [md_escape(k) for k in label_cols] + ["n"] + ["ppl `%s`" % md_escape(e) for e in a.evals] + \
             ["KL", "top-1"]
    align = ["l"] * len(label_cols) + ["r"] * (1 + len(a.evals) + 2)
    rows = []
    if a.baseline is not None:
        b = a.baseline
        row = ["**FP16**"] + [""] * (len(label_cols) - 1)
        row.append("1")
        for e in a.evals:
            row.append(fmt_val(a.fp16[e], 2) if a.fp16[e] is not None else "—")
        kl, t1 = b.get("kl"), b.get("top1")
        row.append(fmt_small(float(kl), None) if _num(kl) else "0")
        row.append(fmt_pm(float(t1), None, 3) if _num(t1) else "1")
        rows.append(row)
    for c in a.cells:
        row = [md_escape(fmt_grid_value(c.grid.get(k))) for k in a.row_keys] if a.row_keys else [md_escape(c.id)]
        row.append(str(len(c.runs)))
        for e in a.evals:
            xs = c.values(lambda r: r["ppl"].get(e))
            fin = [x for x in xs if math.isfinite(x)]
            m, sd = mean_sd(fin)
            txt = fmt_pm(m, sd)
            if m is not None:
                txt += fmt_delta(delta_pct(m, a.fp16[e]))
            if m is not None and len(fin) != len(c.runs):
                txt += " [n=%d]" % len(fin)
            if len(fin) != len(xs):  # a diverged run: say so rather than average an infinity
                txt = ("" if m is None else txt + " ") + "[%d of %d seeds non-finite]" % (len(xs) - len(fin), len(c.runs))
            row.append(txt)
        m, sd, _ = c.stat(lambda r: r.get("kl"))
        row.append(fmt_small(m, sd))
        m, sd, _ = c.stat(lambda r: r.get("top1"))
        row.append(fmt_pm(m, sd, 3))
        rows.append(row)
    L += md_table(header, align, rows)
    L.append("")
    ns = sorted({len(c.runs) for c in a.cells})
    if ns == [1]:
        L.append("Every cell has a single seed (n=1): no ± part, the seed spread is unknown.")
    else:
        L.append("sd is the sample standard deviation over seeds (n − 1 denominator); a cell with n=1 has "
                 "no ± part. Δ% = (mean / FP16 − 1) × 100.")
    if a.baseline is None:
        L.append("")
        L.append("No FP16 baseline row in results.jsonl: no Δ%.")
    L.append("")
    return L


def section_layers(a):
    if not a.cells:
        return ["## Per-layer error", "", "No quantized runs.", ""]
    L = ["## Per-layer error", "",
         "Relative output error ‖WX − ŴX‖² / ‖WX‖² of each quantized linear on the calibration inputs, "
         "mean over seeds: the mean and the largest over the model's linears, the mean per linear type, "
         "and the linear with the largest error.", ""]
    types = []
    for c in a.cells:
        for r in c.runs:
            for t in ((r.get("layers") or {}).get("rel_err_by_type") or {}):
                if t not in types:
                    types.append(t)
    types = [t for t in TYPE_ORDER if t in types] + sorted(t for t in types if t not in TYPE_ORDER)
    header = [md_escape(k) for k in a.row_keys] + ["quantized", "rel_err mean", "rel_err max"] + \
             [md_escape(t.replace("_proj", "")) for t in types] + ["largest"]
    align = ["l"] * len(a.row_keys) + ["r"] * (3 + len(types)) + ["l"]
    rows = []
    for c in a.cells:
        row = [md_escape(fmt_grid_value(c.grid.get(k))) for k in a.row_keys]
        lay = [r.get("layers") or {} for r in c.runs]
        q = sorted({(l.get("quantized"), l.get("n")) for l in lay if _num(l.get("n"))})
        row.append(", ".join("%s/%s" % (qq if qq is not None else "?", nn) for qq, nn in q) or "—")
        row.append(fmt_sci(mean_sd([float(l["rel_err_mean"]) for l in lay if _num(l.get("rel_err_mean"))])[0]))
        row.append(fmt_sci(mean_sd([float(l["rel_err_max"]) for l in lay if _num(l.get("rel_err_max"))])[0]))
        for t in types:
            xs = [(l.get("rel_err_by_type") or {}).get(t) for l in lay]
            row.append(fmt_sci(mean_sd([float(x) for x in xs if _num(x)])[0]))
        per = {}
        for r in c.runs:
            for x in r.get("linears") or []:
                if _num(x.get("rel_err")):
                    per.setdefault(x["name"], []).append(float(x["rel_err"]))
        if per:
            name = max(per, key=lambda k: (math.fsum(per[k]) / len(per[k]), k))
            row.append("`%s` %s" % (md_escape(name), fmt_sci(math.fsum(per[name]) / len(per[name]))))
        else:
            row.append("—")
        rows.append(row)
    L += md_table(header, align, rows)
    L.append("")
    return L


def _pm_signed(m, sd):
    d = _decimals_for(sd, 2)
    s = "%+.*f" % (d, m)
    if sd is not None:
        s += " ± " + fmt_val(sd, d)
    return s


def _own_text(label, e):
    """Whether eval text e is the calibration set label's own domain (same name, or contains it)."""
    l, e = label.lower(), e.lower()
    return l == e or (len(l) >= 2 and l in e)


class Comparison:
    """Calibration set `other` against `ref` on eval text e, within one group of cells: the perplexity
    increase over FP16 in % (or the perplexity itself without a baseline), mean/sd/n of each, the difference
    other - ref, its combined standard error and whether it exceeds twice that (None: a single seed)."""

    def __init__(self, a, by, ref, other, e):
        self.use_delta = all(a.fp16[x] is not None for x in a.evals)
        get = a.delta_stat if self.use_delta else a.ppl_stat
        self.ref, self.other, self.e = ref, other, e
        self.m1, self.s1, self.n1 = get(by[ref], e)
        self.m2, self.s2, self.n2 = get(by[other], e)
        self.ok = self.m1 is not None and self.m2 is not None
        if self.ok:
            self.d, self.se, self.sig = compare(self.m1, self.s1, self.n1, self.m2, self.s2, self.n2)

    def val(self, m):
        return "%+.2f%%" % m if self.use_delta else fmt_val(m, 2)

    @property
    def unit(self):
        return "points" if self.use_delta else "ppl"

    @property
    def over(self):
        return " over FP16" if self.use_delta else ""

    def diff(self):
        if self.se is None:
            return "%+.2f %s" % (self.d, self.unit)
        return "%+.2f ± %.2f %s" % (self.d, self.se, self.unit)

    def verdict(self):
        """One plain sentence (no leading capital: it follows a label)."""
        what = "`%s` calibration" % md_escape(self.other)
        e = md_escape(self.e)
        if self.sig is None:
            return ("%s vs `%s` on `%s`: %s → %s%s (difference %s); a single seed, so the seed spread is unknown "
                    "and no verdict is given" % (what, md_escape(self.ref), e, self.val(self.m1),
                                                 self.val(self.m2), self.over, self.diff()))
        if self.sig:
            return ("**%s %s the `%s`-text loss from %s to %s%s** (difference %s, %.1f× its standard error, "
                    "vs `%s`)" % (what, "reduced" if self.d < 0 else "increased", e, self.val(self.m1),
                                  self.val(self.m2), self.over, self.diff(),
                                  abs(self.d) / self.se if self.se > 0 else float("inf"), md_escape(self.ref)))
        return ("%s vs `%s` on `%s`: %s → %s%s: no difference beyond the seed spread (difference %s)"
                % (what, md_escape(self.ref), e, self.val(self.m1), self.val(self.m2), self.over, self.diff()))

    def short(self):
        tag = "n=1, no verdict" if self.sig is None else \
            ("within the seed spread" if not self.sig else ("reduced" if self.d < 0 else "increased"))
        return "%s (%s)" % (self.diff(), tag)


def section_calib(a):
    """The per-group comparison tables and verdicts: (lines, [Comparison])."""
    groups = a.calib_groups()
    ref = a.reference_calib
    L = ["## Calibration data", "",
         "Cells that differ only in the calibration set (`calib`), compared on every eval text. Each value is "
         "the perplexity increase over FP16 in %%, mean ± sd over seeds (n − 1). Each set is compared with `%s` "
         "(the reference): the difference of the means ± its combined standard error "
         "sqrt(sd₁²/n₁ + sd₂²/n₂), in percentage points; a difference larger than twice that is reported as "
         "real, a smaller one as within the seed spread." % md_escape(ref), ""]
    if not groups:
        L.append("No two cells differ only in `calib`: nothing to compare.")
        L.append("")
        return L, []
    comps = []
    for label, by in groups:
        labels = [l for l in a.calib_labels if l in by]
        L.append("### %s" % md_escape(label))
        L.append("")
        header = ["eval text"] + ["`%s`" % md_escape(l) for l in labels]
        rows = []
        for e in a.evals:
            row = ["`%s`" % md_escape(e)]
            for l in labels:
                m, sd, n = a.ppl_stat(by[l], e)
                dm, dsd, _ = a.delta_stat(by[l], e)
                if m is None:
                    row.append("—")
                elif dm is not None:
                    row.append("%s%% (ppl %s, n=%d)" % (_pm_signed(dm, dsd), fmt_pm(m, sd), n))
                else:
                    row.append("ppl %s (n=%d)" % (fmt_pm(m, sd), n))
            rows.append(row)
        L += md_table(header, ["l"] + ["r"] * len(labels), rows)
        L.append("")
        if ref not in by:
            L.append("The reference `%s` is not in this group: no comparison." % md_escape(ref))
            L.append("")
            continue
        for l in labels:
            if l == ref:
                continue
            for e in a.evals:
                c = Comparison(a, by, ref, l, e)
                if not c.ok:
                    continue
                own = " (its own domain)" if _own_text(l, e) else ""
                L.append("- `%s`%s: %s." % (md_escape(e), own, c.verdict()))
                comps.append((label, c))
        L.append("")
    return L, comps


def section_summary(a):
    """The headline of a domain experiment: on each eval text named after a calibration set, every set's
    increase over FP16 side by side, its difference to the reference, and one plain sentence per group."""
    ref = a.reference_calib
    others = [l for l in a.calib_labels if l != ref]
    domain_evals = [e for e in a.evals if any(_own_text(l, e) for l in others)]
    if not domain_evals:
        return []
    L = ["## Does domain calibration reduce the domain loss?", ""]
    use_delta = all(a.fp16[x] is not None for x in a.evals)
    L.append("On each eval text named after a calibration set: the perplexity %s, mean ± sd over seeds, per "
             "calibration set, and each set's difference to `%s` calibration ± its combined standard error "
             "(details, the other eval texts and the test in [Calibration data](#calibration-data))."
             % ("increase over FP16 in %" if use_delta else "", md_escape(ref)) if use_delta else
             "On each eval text named after a calibration set: perplexity (no FP16 baseline), mean ± sd over "
             "seeds, and each set's difference to `%s` calibration ± its combined standard error." % md_escape(ref))
    L.append("")
    groups = a.calib_groups()
    for e in domain_evals:
        L.append("**`%s` text**" % md_escape(e))
        L.append("")
        header = ["cell"] + ["`%s`" % md_escape(l) for l in a.calib_labels] + \
                 ["`%s` − `%s`" % (md_escape(l), md_escape(ref)) for l in others]
        rows, sentences = [], []
        for label, by in groups:
            row = [md_escape(label)]
            for l in a.calib_labels:
                if l not in by:
                    row.append("—")
                    continue
                m, sd, n = (a.delta_stat if use_delta else a.ppl_stat)(by[l], e)
                row.append("—" if m is None else
                           "%s%s (n=%d)" % (_pm_signed(m, sd) if use_delta else fmt_pm(m, sd),
                                            "%" if use_delta else "", n))
            for l in others:
                c = Comparison(a, by, ref, l, e) if (l in by and ref in by) else None
                row.append(c.short() if c is not None and c.ok else "—")
                if c is not None and c.ok and _own_text(l, e):
                    sentences.append("- %s: %s." % (md_escape(label), c.verdict()))
            rows.append(row)
        L += md_table(header, ["l"] + ["r"] * (len(header) - 1), rows)
        L.append("")
        L += sentences
        L.append("")
    return L


def section_provenance(a, dir_arg):
    L = ["## Provenance", ""]
    allr = ([a.baseline] if a.baseline else []) + a.runs

    def uniq(key):
        vs = []
        for r in allr:
            v = r.get(key)
            if v is not None and str(v) not in vs:
                vs.append(str(v))
        return vs
    vers, devs = uniq("qcal_version"), uniq("device")
    L.append("- qcal version: %s" % (", ".join("`%s`" % v for v in vers) or "—"))
    L.append("- device: %s" % (", ".join("`%s`" % v for v in devs) or "—"))
    seeds = []
    for r in a.runs:
        s = r.get("seed", (r.get("grid") or {}).get("seed"))
        if s is not None and s not in seeds:
            seeds.append(s)
    reused = sum(1 for r in a.runs if r.get("reused") is True)
    L.append("- runs: %d quantized (%d cells, seeds %s)%s; %d reused from an earlier invocation" %
             (len(a.runs), len(a.cells), ", ".join(str(s) for s in sorted(seeds, key=str)) or "—",
              " + the FP16 baseline" if a.baseline else "", reused))
    tq = math.fsum(float((r.get("seconds") or {}).get("quantize")) for r in a.runs
                   if _num((r.get("seconds") or {}).get("quantize")))
    te = math.fsum(float((r.get("seconds") or {}).get("eval")) for r in allr
                   if _num((r.get("seconds") or {}).get("eval")))
    L.append("- time recorded: %.0f s quantizing, %.0f s evaluating" % (tq, te))
    for key, what in (("recipe_sha256", "recipes"), ("tokens_sha256", "calibration token streams")):
        n = len({r.get(key) for r in a.runs if r.get(key)})
        L.append("- %d distinct %s (`%s`)" % (n, what, key))
    if a.baseline and a.baseline.get("checkpoint_sha256"):
        L.append("- FP16 checkpoint sha256: `%s`" % a.baseline["checkpoint_sha256"])
    # experiment.json, as `qcal experiment` writes it: experiment (the YAML's path), plan_sha256, model,
    # device, grid_keys, eval [{name, text, seqlen, max_windows, holdout}], runs [{run, cell, dir, ...}]
    exp = a.experiment or {}
    if isinstance(exp.get("model"), str):
        L.append("- model: `%s`" % md_escape(exp["model"]))
    if isinstance(exp.get("plan_sha256"), str):
        L.append("- experiment plan sha256: `%s`" % exp["plan_sha256"])
    planned = exp.get("runs")
    if isinstance(planned, list):
        done = {r["run"] for r in a.runs}
        ids = [p.get("run") for p in planned if isinstance(p, dict) and isinstance(p.get("run"), str)]
        missing = [i for i in ids if i not in done]
        L.append("- %d of %d planned runs in results.jsonl%s" % (len(ids) - len(missing), len(ids),
                 "; missing: " + ", ".join("`%s`" % md_escape(i) for i in missing[:10]) +
                 (" and %d more" % (len(missing) - 10) if len(missing) > 10 else "") if missing else ""))
    evs = [e for e in exp.get("eval") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)]
    if evs:
        L.append("- eval texts: " + "; ".join(
            "`%s` = `%s`%s" % (md_escape(e["name"]), md_escape(e.get("text", "?")),
                               "".join(", %s %s" % (k, e[k]) for k in ("seqlen", "max_windows", "holdout")
                                       if _num(e.get(k)))) for e in evs))
    src = exp.get("experiment") if isinstance(exp.get("experiment"), str) else None
    out = dir_arg
    L.append("")
    L.append("Reproduce (runs already in results.jsonl with the same hashes are reused):")
    L.append("")
    L.append("```sh")
    L.append("qcal experiment %s --out %s" % (src or "EXP.yaml", out))
    L.append("python3 scripts/experiment_report.py %s   # this report and its plots" % out)
    L.append("```")
    L.append("")
    return L


def section_runs(a):
    L = ["## Runs", ""]
    e0 = a.evals[0] if a.evals else None
    header = ["run", "ppl `%s`" % md_escape(e0) if e0 else "ppl", "KL", "quantize s", "eval s", "reused",
              "checkpoint sha256"]
    rows = []
    for r in ([a.baseline] if a.baseline else []) + a.runs:
        sec = r.get("seconds") or {}
        v = r["ppl"].get(e0) if e0 else None
        sha = r.get("checkpoint_sha256")
        rows.append(["`%s`" % md_escape(r["run"]),
                     fmt_val(float(v), 3) if _num(v) else "—",
                     fmt_small(float(r["kl"]), None) if _num(r.get("kl")) else "—",
                     fmt_val(float(sec["quantize"]), 1) if _num(sec.get("quantize")) else "—",
                     fmt_val(float(sec["eval"]), 1) if _num(sec.get("eval")) else "—",
                     "yes" if r.get("reused") is True else "no",
                     "`%s…`" % sha[:12] if isinstance(sha, str) and sha else "—"])
    L += md_table(header, ["l", "r", "r", "r", "r", "l", "l"], rows)
    L.append("")
    return L


def build_report(a, dir_arg, plots):
    """report.md as a string. plots: list of written plot names, or a string saying why there are none."""
    exp = a.experiment or {}
    name = exp.get("name") if isinstance(exp.get("name"), str) else \
        (os.path.basename(exp["experiment"]) if isinstance(exp.get("experiment"), str) else None)
    L = ["# qcal experiment%s" % (": " + md_escape(name) if name else ""), ""]
    pl = lambda n, w: "%d %s%s" % (n, w, "" if n == 1 else "s")  # noqa: E731
    L.append("%s (grid points without the seed), %s%s, %s (%s)." %
             (pl(len(a.cells), "cell"), pl(len(a.runs), "quantized run"),
              " and an FP16 baseline" if a.baseline else "", pl(len(a.evals), "eval text"),
              ", ".join("`%s`" % md_escape(e) for e in a.evals)))
    L.append("")
    L += section_results(a)
    calib_lines = []
    if len(a.calib_labels) >= 2:
        calib_lines, _ = section_calib(a)
        L += section_summary(a)
    L += section_layers(a)
    L += calib_lines
    L.append("## Plots")
    L.append("")
    if isinstance(plots, str):
        L.append("Plots skipped: %s." % plots)
    else:
        for p, title, why in plots:
            L.append("### %s" % title)
            L.append("")
            if why:
                L.append("Not drawn: %s." % why)
            else:
                L.append("![%s](plots/%s.png) ([SVG](plots/%s.svg))" % (title, p, p))
            L.append("")
    L += section_provenance(a, dir_arg)
    L += section_runs(a)
    while L and L[-1] == "":
        L.pop()
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------- plots

def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def import_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
LINESTYLES = ["-", "--", "-.", ":"]


def _style(plt):
    plt.rcdefaults()
    plt.rcParams.update({
        "svg.hashsalt": SVG_SALT,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
        "savefig.dpi": 110,
        "path.simplify": False,
    })


def _save(plt, fig, plotdir, name):
    for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=meta, bbox_inches="tight")
        write_atomic(os.path.join(plotdir, "%s.%s" % (name, fmt)), buf.getvalue())
    plt.close(fig)


def _subplots(plt, n, w=5.6, h=4.0, max_cols=3):
    cols = min(n, max_cols)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(fig, axes, ncol_max=4):
    handles, labels = [], []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    if not handles:
        return
    ncol = min(ncol_max, len(labels))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(labels) + ncol - 1) // ncol)))


def plot_ppl_vs_bits(plt, a, plotdir):
    if "bits" not in a.varying or not a.evals:
        return False
    series = a.series(("bits",))
    fig, axes = _subplots(plt, len(a.evals))
    all_bits = sorted({c.grid.get("bits") for c in a.cells if _num(c.grid.get("bits"))})
    k = len(series)
    # series side by side around each bits value, so error bars do not hide each other
    width = (min(b - a_ for a_, b in zip(all_bits, all_bits[1:])) if len(all_bits) > 1 else 1.0) * 0.12
    for ax, e in zip(axes, a.evals):
        lo, hi = [], []
        for i, (label, cells) in enumerate(series):
            pts = []
            for c in cells:
                b = c.grid.get("bits")
                m, sd, n = a.ppl_stat(c, e)
                if _num(b) and m is not None and math.isfinite(m):
                    pts.append((b, m, sd if sd is not None and math.isfinite(sd) else 0.0))
            if not pts:
                continue
            pts.sort()
            off = (i - (k - 1) / 2.0) * (width / max(k - 1, 1)) if k > 1 else 0.0
            xs = [p[0] + off for p in pts]
            ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], label=label,
                        marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[(i // 10) % len(LINESTYLES)],
                        color="C%d" % (i % 10), capsize=3, markersize=5, linewidth=1.4)
            lo += [p[1] - p[2] for p in pts]
            hi += [p[1] + p[2] for p in pts]
        ref = a.fp16.get(e)
        if ref is not None:
            ax.axhline(ref, color="black", linestyle="--", linewidth=1.0, label="FP16")
            lo.append(ref)
            hi.append(ref)
        if lo and min(lo) > 0 and max(hi) / min(lo) > 4:
            ax.set_yscale("log")
        ax.set_xticks(all_bits)
        ax.set_xticklabels([str(b) for b in all_bits])
        ax.set_xlabel("bits per weight")
        ax.set_ylabel("perplexity")
        ax.set_title("perplexity on %s" % e)
    fig.suptitle("Perplexity vs bits (mean ± sd over seeds)", fontsize=12)
    fig.tight_layout()
    _legend(fig, axes)
    _save(plt, fig, plotdir, "ppl_vs_bits")
    return True


def plot_layer_error(plt, a, plotdir):
    from matplotlib import ticker as _ticker
    have = any(per_layer_errors(r) for r in a.runs)
    if not have:
        return False
    bits_vals = sorted({c.grid.get("bits") for c in a.cells if _num(c.grid.get("bits"))}) \
        if "bits" in a.varying else [None]
    fig, axes = _subplots(plt, len(bits_vals), w=6.0 if len(bits_vals) > 1 else 8.0)
    for ax, bv in zip(axes, bits_vals):
        cells = [c for c in a.cells if bv is None or c.grid.get("bits") == bv]
        drop = ("bits",) if bv is not None else ()
        for i, c in enumerate(cells):
            acc = {}
            for r in c.runs:
                for li, v in per_layer_errors(r).items():
                    acc.setdefault(li, []).append(v)
            if not acc:
                continue
            xs = sorted(acc)
            ys = [math.fsum(acc[x]) / len(acc[x]) for x in xs]
            ax.plot(xs, ys, label=a.cell_label(c, drop), marker=MARKERS[i % len(MARKERS)] if len(xs) <= 24 else None,
                    color="C%d" % (i % 10), linestyle=LINESTYLES[(i // 10) % len(LINESTYLES)],
                    markersize=4, linewidth=1.3)
        ax.set_yscale("log")
        # label the 2..9 ticks too when the axis spans less than a decade (else one label or none)
        ax.yaxis.set_minor_formatter(_ticker.LogFormatterSciNotation(labelOnlyBase=False,
                                                                     minor_thresholds=(1.0, 1.0)))
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("relative error (layer mean)")
        if bv is not None:
            ax.set_title("%s-bit" % bv)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("Per-layer relative error ‖WX − ŴX‖² / ‖WX‖² (mean over the layer's linears and seeds)",
                 fontsize=12)
    fig.tight_layout()
    _legend(fig, axes, ncol_max=3)
    _save(plt, fig, plotdir, "layer_error")
    return True


def plot_calib_compare(plt, a, plotdir):
    groups = a.calib_groups()
    if not groups or not a.evals:
        return False
    use_delta = all(a.fp16[e] is not None for e in a.evals)
    fig, axes = _subplots(plt, len(groups), w=max(4.5, 1.2 + 0.45 * len(a.evals) * len(a.calib_labels)),
                          max_cols=2)
    for ax, (label, by) in zip(axes, groups):
        labels = [l for l in a.calib_labels if l in by]
        k = len(labels)
        w = 0.8 / k
        for j, l in enumerate(labels):
            hs, es, ns = [], [], []
            for e in a.evals:
                m, sd, n = (a.delta_stat if use_delta else a.ppl_stat)(by[l], e)
                hs.append(m if m is not None and math.isfinite(m) else 0.0)
                es.append(sd if sd is not None and math.isfinite(sd) else None)
                ns.append(n)
            xs = [i + (j - (k - 1) / 2.0) * w for i in range(len(a.evals))]
            single = max(ns) <= 1
            # a single seed has no spread: hatched, no error bar, and the legend says n=1
            ax.bar(xs, hs, width=w * 0.95, label="calib: %s%s" % (l, " (n=1)" if single else ""),
                   color="C%d" % (j % 10), edgecolor="black", linewidth=0.5, hatch="//" if single else None)
            eb = [(x, h, e) for x, h, e in zip(xs, hs, es) if e is not None]
            if eb:
                ax.errorbar([p[0] for p in eb], [p[1] for p in eb], yerr=[p[2] for p in eb], fmt="none",
                            ecolor="black", capsize=3, linewidth=1.2)
        ax.set_xticks(list(range(len(a.evals))))
        ax.set_xticklabels(a.evals)
        ax.set_xlabel("eval text")
        ax.set_ylabel("perplexity increase over FP16 (%)" if use_delta else "perplexity")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(label)
        ax.grid(axis="x", visible=False)
    fig.suptitle("Calibration data: perplexity %s (mean ± sd over seeds)" %
                 ("increase over FP16" if use_delta else ""), fontsize=12)
    fig.tight_layout()
    _legend(fig, axes)
    _save(plt, fig, plotdir, "calib_compare")
    return True


def make_plots(plt, a, plotdir):
    os.makedirs(plotdir, exist_ok=True)
    _style(plt)
    """[(name, title, None if drawn else why not)]"""
    done = [("ppl_vs_bits", "Perplexity vs bits",
             None if plot_ppl_vs_bits(plt, a, plotdir) else "`bits` takes a single value in this grid"),
            ("layer_error", "Per-layer relative error",
             None if plot_layer_error(plt, a, plotdir) else "no run lists per-linear errors of numbered layers")]
    if len(a.calib_labels) >= 2:
        done.append(("calib_compare", "Calibration data",
                     None if plot_calib_compare(plt, a, plotdir) else "no two cells differ only in `calib`"))
    return done


# ---------------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="experiment_report.py",
        description="Write DIR/report.md and DIR/plots/ from the results.jsonl of `qcal experiment`.")
    ap.add_argument("dir", metavar="DIR", help="the experiment's output directory (holds results.jsonl)")
    ap.add_argument("--reference-calib", metavar="LABEL",
                    help="the calib label others are compared with (default: 'c4' if present, else the first)")
    ap.add_argument("--no-plots", action="store_true", help="write report.md only")
    args = ap.parse_args(argv)
    d = args.dir
    try:
        baseline, runs = load_results(os.path.join(d, "results.jsonl"))
        exp = load_experiment(os.path.join(d, "experiment.json"))
        a = Analysis(baseline, runs, exp, args.reference_calib)
    except InputError as e:
        print("experiment_report: %s" % e, file=sys.stderr)
        return 1
    rc = 0
    if args.no_plots:
        plots = "--no-plots was given"
    else:
        plt = import_matplotlib()
        if plt is None:
            plots = "matplotlib is not installed; " + MPL_HINT
            rc = 3
        else:
            plots = make_plots(plt, a, os.path.join(d, "plots"))
    dir_arg = os.path.normpath(d)
    write_atomic(os.path.join(d, "report.md"), build_report(a, dir_arg, plots).encode("utf-8"))
    if rc == 3:
        print("experiment_report: matplotlib not found: %s; wrote %s without plots"
              % (MPL_HINT, os.path.join(d, "report.md")), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
