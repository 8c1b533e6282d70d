/*
 * experiment.h - `qcal experiment`: a grid of quantization runs over one model, each evaluated the same
 * way, collected into one table (results.csv / results.jsonl) that reruns reproduce byte for byte.
 *
 * The file (YAML, the recipe reader's strictness; errors are "EXP.yaml:line:col: ..."):
 *
 *   base:                      # a recipe: the keys and checks of `qcal recipe`, paths relative to EXP.yaml
 *     model: ../stories260K    # required; `out` and `eval` are not allowed here (see below)
 *     bits: 4
 *     group_size: 32
 *     nsamples: 8
 *     seqlen: 128
 *     calib: [{path: text/tiny-calib.utf8, split: paragraph, holdout: 10}]
 *   grid:                      # recipe keys, each with a non-empty list of values; every combination
 *     method: [rtn, gptq]      # is a cell. The key order of the file is the order of the table: the
 *     act_order: [false, true] # last key varies fastest. `seed` lists the repetitions of each cell and
 *     calib:                   # is always innermost. model, out, device and eval cannot vary.
 *       - {label: tiny, sources: [{path: text/tiny-calib.utf8, split: paragraph}]}
 *       - text/c4.utf8         # a plain recipe calib value: labelled by the first file's name
 *     seed: [0, 1]             #   without extensions ("c4"); labels are [A-Za-z0-9_.-]+ and unique
 *     variant:                 # optional: named bundles of recipe keys, for rows that are no product
 *       - {label: rtn, method: rtn}
 *       - {label: gptq-act, method: gptq, act_order: true}
 *   eval:                      # one or more texts; each run and the FP16 model are measured on each
 *     - name: tiny             # [A-Za-z0-9_-]+, unique: the column ppl_<name>
 *       text: text/tiny-eval.utf8   # used byte for byte (the perplexity protocol of README.md), or,
 *       holdout: 10            # with holdout N, only its documents i % N == N-1 joined with "\n\n": the
 *       split: paragraph       # documents a calibration source with the same holdout never samples
 *       seqlen: 256            # (format, field, split: as for calibration sources; only with holdout)
 *       max_windows: 4         # 0 (default): every window; seqlen defaults to 2048
 *
 * The first eval text also gives the KL divergence from the FP16 model and the top-1 agreement
 * (qc_eval_compare); the FP16 model is evaluated once, as the baseline row (kl 0, top1 1).
 *
 * Run ids: "key=value,..." over the grid keys in file order, then "seed=N" (the base seed when the grid
 * has no seed); the cell is the id without the seed part ("base" when nothing else varies). Values print
 * as the resolved recipe holds them (true/false, shortest reals, calib labels).
 *
 * Every run is a normal `qcal quantize`, spawned as a child process of the same binary on the run's
 * resolved recipe (DIR/runs/<id>.recipe.yaml, eval: []), so each run gets quantize's own guards,
 * lock, fingerprint and layer-level resume, a crash or out-of-memory kill takes one run rather than
 * the experiment, and the recipe hash is the one `qcal quantize RECIPE` computes. Evaluations run in
 * this process (calib/eval.h), the FP16 model and the tokenized texts being loaded once.
 *
 * Calibration windows are sampled once per token group: the runs with the same tokenizer (the model's
 * files), resolved calibration sources (path, size and mtime, format, field, split, holdout, weight),
 * sampling, nsamples, seqlen and seed. Right before the first run of a group that quantizes, the runner
 * samples in this process into DIR/tokens/<token-sha256>.bin (datasets/token_file.h; written .tmp then
 * renamed; the group's key is the file's origin field) and prints "tokens <sha12>: sampled for N runs";
 * an earlier invocation's valid file of the same origin is used instead ("reused for N runs"). Each
 * child gets `--calib-tokens FILE`, which is no recipe key: recipe hash, tokens_sha256 and checkpoint
 * bytes are those of a run that samples itself. RTN runs share too (quantize's per-linear errors need
 * the calibration activations).
 *
 * DIR layout:
 *   experiment.json             the expanded plan (run ids, recipe hashes, eval texts) and its hash;
 *                               a DIR planned from another file is refused unless restart
 *   tokens/<token-sha256>.bin   the calibration windows of one token group (above), for its runs
 *   runs/<id>/                  each run's checkpoint (runs/<id>.qcal-work while it is being made)
 *   runs/<id>.recipe.yaml       the resolved recipe the child quantized
 *   runs/<id>.log               the child's output
 *   runs/<id>.quantized.json    written when the checkpoint is complete: what it was made from
 *   runs/<id>.result.json       written when the run and its evaluations are complete: the unit of reuse.
 *                               Present with the same fingerprint (recipe hash, qcal version, model
 *                               files, calibration file sizes/mtimes, eval texts and settings, device) ->
 *                               the run is reused; a complete checkpoint whose quantized.json matches is
 *                               evaluated again without quantizing
 *   runs/fp16.result.json       the baseline, likewise
 *   evals/<name>.txt            the text of a held-out eval (what `qcal eval --text` would need)
 *   results.csv, results.jsonl  rewritten atomically after every run (rows of the runs done so far)
 * Interrupted (SIGINT/SIGTERM/SIGHUP: forwarded once to the running child, which saves its layer state),
 * the finished runs stay and the next invocation continues; the interrupted run resumes from its
 * last layer (quantize's own resume).
 *
 * results.jsonl: one object per line, the baseline first, then the runs in grid order:
 *   run, baseline, grid {key: JSON-typed value}, cell, seed, recipe_sha256, tokens_sha256,
 *   checkpoint_sha256 (SHA-256 over the checkpoint's *.safetensors in name order), ppl {name: value},
 *   kl, top1, layers {n, quantized, rel_err_mean, rel_err_max, rel_err_by_type {q_proj: mean, ...}},
 *   linears [{name, rel_err}] (quantized ones, from qcal_report.json), seconds {quantize, eval}, reused,
 *   qcal_version, device, checkpoint (relative to DIR). The baseline has grid {}, seed, recipe_sha256
 *   and tokens_sha256 null, kl 0, top1 1, empty layers/linears and the model's own checkpoint hash.
 * results.csv: run,cell,seed,<grid keys but seed>,ppl_<name>...,kl,top1,rel_err_mean,rel_err_max,
 *   recipe_sha256,tokens_sha256,checkpoint_sha256,qcal_version,device,seconds_quantize,seconds_eval,reused
 *   with fixed formats (%.6f ppl and top1, %.8f kl, %.6e errors): a rerun gives the same bytes except
 *   the seconds_* and reused columns.
 *
 *   qc_experiment *e;
 *   if (qc_exp_load("exp.yaml", NULL, &e)) die(qc_last_error());   // parse, validate, expand
 *   qc_exp_opts o = {.dir = "out/exp1"};
 *   qc_status st = qc_exp_run(e, &o);
 *   qc_exp_free(e);
 *
 * Ownership: the experiment owns everything in it; qc_exp_free releases it.
 */
#ifndef QC_EXPERIMENT_H
#define QC_EXPERIMENT_H

#include <stdio.h>

#include "recipe.h"

#define QC_EXP_MAX_KEYS   QC_RK_COUNT
#define QC_EXP_MAX_VALUES 256
#define QC_EXP_MAX_RUNS   4096
#define QC_EXP_MAX_EVALS  16

typedef struct qc_exp_eval {
    char *name;
    char *text;          /* absolute path */
    int   seqlen;        /* default 2048 */
    int   max_windows;   /* 0: all */
    int   holdout;       /* 0: the file byte for byte; N >= 2: its held-out documents joined with "\n\n" */
    char *format, *field, *split; /* the document reader's settings (holdout only); NULL: defaults */
} qc_exp_eval;

/* The grid key "variant": named bundles of recipe keys, e.g. {label: gptq-act, method: gptq, act_order: true},
 * for rows that are not a product (act-order exists only for GPTQ). Its value in ids and tables is the label. */
#define QC_EXP_VARIANT (-2)

typedef struct qc_exp_key {
    int    rk;            /* QC_RK_*, or QC_EXP_VARIANT */
    int    n;             /* values */
    const qc_ynode **node;/* [n] each value's node (calib: its sources) in the file's tree */
    char **text;          /* [n] as in run ids and the CSV */
    char **json;          /* [n] JSON-typed: 4, true, "gptq", 0.01 */
} qc_exp_key;

typedef struct qc_exp_spec {
    char     *id, *cell, *dirname;
    int       value[QC_EXP_MAX_KEYS]; /* index of each key's value */
    uint64_t  seed;
    qc_recipe recipe;     /* resolved (validated), without out */
    char      recipe_sha256[65];
} qc_exp_spec;

typedef struct qc_experiment {
    char        *path;     /* the file as given */
    char        *base_dir; /* its directory, absolute */
    qc_ynode    *tree;
    const qc_ynode *base;
    qc_exp_key   keys[QC_EXP_MAX_KEYS]; /* file order, seed moved last */
    int          n_keys;
    bool         seed_in_grid;
    qc_exp_eval  evals[QC_EXP_MAX_EVALS];
    int          n_evals;
    qc_exp_spec  *runs;
    int          n_runs;
    char        *model;    /* the base recipe's model (directory or hf://) */
    char        *device;   /* the runs' device (base recipe, or the override) */
    char         plan_sha256[65]; /* of the expanded plan: comments and spelling do not change it */
} qc_experiment;

/* Parses, validates and expands path. device (NULL: the base recipe's) overrides every run's. Errors
 * are QC_ERR_FORMAT with "<path>:<line>:<col>: " (a missing eval text too). */
qc_status qc_exp_load(const char *path, const char *device, qc_experiment **out);
void      qc_exp_free(qc_experiment *e);
/* The expanded grid: one line per run (index, id, recipe hash). */
void      qc_exp_print_plan(const qc_experiment *e, FILE *out);

typedef struct qc_exp_opts {
    const char *dir;      /* DIR */
    bool        restart;  /* continue into a DIR planned from another file (finished runs that still
                             match are reused); also passed to quantize for a mismatching work dir */
    int         threads;  /* 0: quantize's default */
    bool        quiet;
} qc_exp_opts;

/* Runs (or reuses) the baseline and every run, writing DIR as described above; progress on stderr,
 * the summary table on stdout. QC_ERR_CANCELLED after a stop request (the caller exits 128 + signal);
 * a run whose child failed is reported and the others still run, then QC_ERR_IO names the failures. */
qc_status qc_exp_run(qc_experiment *e, const qc_exp_opts *o);

/* `--compare A B`: A and B are experiment directories or results.jsonl files. Cells are matched by
 * id; for each metric (ppl_<name>, kl, top1, rel_err_mean) the means over seeds, their sample standard
 * deviations and B - A are printed; a difference is flagged when |B - A| > max(2 * max(sd_A, sd_B), 1e-9)
 * (with one seed on both sides: "identical" or "differs"). *n_flagged counts the flagged ones. */
qc_status qc_exp_compare(const char *a, const char *b, FILE *out, int *n_flagged);

#endif /* QC_EXPERIMENT_H */
