/* qcal experiment: a grid of quantizations of one model, each evaluated, in one reproducible table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "experiment.h"
#include "qc_signal.h"

static int run(int argc, char **argv);

/* report.md and the plots: scripts/experiment_report.py (QCAL_REPORT_SCRIPT, else the one of the source tree
 * qcal was built from) under Debian's python3 (python3-matplotlib), else python3 on PATH. A missing script or
 * Python is a warning: results.csv/jsonl are the experiment's output, the report is drawn from them. */
static void write_report(const char *dir, bool quiet) {
    const char *script = getenv("QCAL_REPORT_SCRIPT");
    if (!script || !*script) script = QC_SOURCE_DIR "/scripts/experiment_report.py";
    if (access(script, R_OK) != 0) {
        QC_LOGW("%s not found: report.md and the plots are not drawn (set QCAL_REPORT_SCRIPT)", script);
        return;
    }
    const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    pid_t pid = fork();
    if (pid < 0) {
        QC_LOGW("fork: report.md not drawn");
        return;
    }
    if (pid == 0) {
        if (quiet && !freopen("/dev/null", "w", stdout)) _exit(127);
        execlp(py, py, script, dir, (char *)NULL);
        _exit(127);
    }
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0) {}
    int rc = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128;
    if (rc == 0) QC_LOGI("report: %s/report.md", dir);
    else QC_LOGW("%s %s %s: exit %d%s (run it again by hand; results.csv/jsonl are complete)", py, script, dir, rc,
                 rc == 3 ? ": install python3-matplotlib for the plots" : rc == 127 ? ": no python3" : "");
}

const qc_cmd qc_cmd_experiment = {
    .name = "experiment",
    .summary = "run a grid of quantizations with evaluations into results.csv/jsonl; compare two result sets",
    .usage = "qcal experiment EXP.yaml --out DIR [--device cpu|cuda[:N]] [--restart] [--dry-run]\n"
             "       qcal experiment --compare A B [--fail-on-diff]",
    .description =
        "EXP.yaml holds a base recipe, a grid of recipe keys with lists of values (every combination is a\n"
        "cell; `seed` gives each cell's repetitions) and the texts every run is evaluated on:\n"
        "\n"
        "  base:                          # a recipe: the keys and checks of `qcal recipe` (no out, no eval)\n"
        "    model: stories260K           # paths are relative to EXP.yaml\n"
        "    bits: 4\n"
        "    group_size: 32\n"
        "    nsamples: 8\n"
        "    seqlen: 128\n"
        "    calib: [{path: text/tiny-calib.utf8, split: paragraph, holdout: 10}]\n"
        "  grid:                          # key order = table order, the last key varies fastest\n"
        "    method: [rtn, gptq]\n"
        "    calib:                       # a calib value, or {label: L, sources: <calib value>}; plain values\n"
        "      - {label: tiny, sources: [{path: text/tiny-calib.utf8, split: paragraph}]}   # are labelled by\n"
        "    seed: [0, 1]                 # their first file's name; seed is always innermost\n"
        "  eval:                          # each run and the FP16 model (once, the baseline row)\n"
        "    - name: tiny                 # [A-Za-z0-9_-]+: the column ppl_<name>\n"
        "      text: text/tiny-eval.utf8  # byte for byte (README: perplexity protocol), or with holdout N\n"
        "      seqlen: 256                # the documents i % N == N-1 of the file joined with blank lines,\n"
        "      max_windows: 4             # which a calib source with `holdout: N` never samples\n"
        "\n"
        "The first eval text also gives the KL divergence from the FP16 model and the top-1 agreement\n"
        "(as `qcal eval --base`). Each run is a `qcal quantize` child on its resolved recipe (checkpoint,\n"
        "report, fingerprint, resume); DIR gets experiment.json (the plan), runs/<run id>/ (checkpoints),\n"
        "runs/<run id>.result.json (a finished run: reused when its recipe hash, model, calibration\n"
        "files, eval texts and qcal version still match), results.csv and results.jsonl (one row per run,\n"
        "the FP16 baseline first; rewritten after every run). An interrupted experiment continues where\n"
        "it stopped when started again, the interrupted run from its last saved layer. A rerun reproduces\n"
        "results.csv byte for byte except the seconds_* and reused columns. Progress is one line per run\n"
        "with the ETA of the whole experiment; a table of cells (mean ± sd over seeds) ends the run.\n"
        "\n"
        "--compare A B (experiment directories or results.jsonl files) prints per cell and metric the\n"
        "means, their difference and a '*' where it exceeds 2 standard deviations of the seeds (with one\n"
        "seed: 'identical' or 'differs', at 1e-9): regressions between qcal versions. Exit 0, or 1 with\n"
        "--fail-on-diff when anything is flagged. Validation errors name EXP.yaml:line:col and exit 1.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "out", .kind = QC_OPT_STR, .metavar = "DIR", .help = "the experiment directory (new, empty, or one this experiment made)"},
    {.name = "device", .kind = QC_OPT_STR, .metavar = "D", .help = "quantize every run on cpu or cuda[:N] (default: the base recipe's); evaluations run on the CPU"},
    {.name = "restart", .kind = QC_OPT_FLAG, .help = "continue into a DIR planned from another file (finished runs that still match are reused) and discard mismatching saved layer states"},
    {.name = "dry-run", .kind = QC_OPT_FLAG, .help = "print the expanded grid (run ids, recipe hashes) and stop"},
    {.name = "compare", .kind = QC_OPT_FLAG, .help = "compare two result sets A B (directories or results.jsonl) cell by cell"},
    {.name = "fail-on-diff", .kind = QC_OPT_FLAG, .help = "with --compare: exit 1 when a difference is flagged"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "threads for quantizing and evaluating (default: all cores)"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "fewer informational lines"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_experiment;
    const char *pos[2];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 2, &npos);
    if (rc >= 0) return rc;
    if (qc_cli_opt(k_opts, "compare")->set) {
        if (npos != 2) return qc_cli_usage_error(cmd, "--compare needs two result sets: A B");
        int flagged = 0;
        qc_status st = qc_exp_compare(pos[0], pos[1], stdout, &flagged);
        if (st) return qc_cli_fail(cmd, st);
        return flagged && qc_cli_opt(k_opts, "fail-on-diff")->set ? QC_EXIT_ERROR : QC_EXIT_OK;
    }
    if (npos != 1) return qc_cli_usage_error(cmd, "one experiment file is needed (EXP.yaml)");
    qc_opt *o_out = qc_cli_opt(k_opts, "out"), *o_thr = qc_cli_opt(k_opts, "threads"), *o_dev = qc_cli_opt(k_opts, "device");
    bool dry = qc_cli_opt(k_opts, "dry-run")->set;
    if (!dry && !o_out->set) return qc_cli_usage_error(cmd, "--out DIR is required");
    if (o_thr->set && (o_thr->i < 1 || o_thr->i > 1024)) return qc_cli_usage_error(cmd, "--threads must be in [1, 1024]");
    if (qc_cli_opt(k_opts, "quiet")->set) qc_log_set_level(QC_LOG_WARN);
    qc_experiment *e;
    qc_status st = qc_exp_load(pos[0], o_dev->set ? o_dev->str : NULL, &e);
    if (st) return qc_cli_fail(cmd, st);
    if (dry) {
        qc_exp_print_plan(e, stdout);
        qc_exp_free(e);
        return QC_EXIT_OK;
    }
    qc_exp_opts o = {.dir = o_out->str, .restart = qc_cli_opt(k_opts, "restart")->set,
                     .threads = o_thr->set ? (int)o_thr->i : 0, .quiet = qc_cli_opt(k_opts, "quiet")->set};
    st = qc_exp_run(e, &o);
    qc_exp_free(e);
    if (st == QC_OK) write_report(o_out->str, o.quiet);
    int sig = qc_cancel_requested();
    if (st == QC_ERR_CANCELLED && sig) {
        fprintf(stderr, "qcal experiment: interrupted by signal %d; the finished runs are kept, run the same command "
                        "again to continue\n", sig);
        return 128 + sig;
    }
    return st ? qc_cli_fail(cmd, st) : QC_EXIT_OK;
}
