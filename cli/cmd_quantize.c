/* qcal quantize: calibrate layer by layer, solve (GPTQ/RTN), write a GPTQ checkpoint, evaluate. */
#define _XOPEN_SOURCE 700
#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "awq_format.h"
#include "ckpt_check.h"
#include "hf_hub.h"
#include "qc_gpu.h"
#include "eval.h"
#include "gpu_attn.h"
#include "pipeline.h"
#include "plan.h"
#include "qc_par.h"
#include "qc_signal.h"
#include "resume.h"
#include "run_guard.h"
#include "run_setup.h"
#include "sha256.h"
#include "tokenizer.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_quantize = {
    .name = "quantize",
    .summary = "quantize a model (GPTQ, AWQ, RTN) and write a checkpoint loaders accept",
    .usage = "qcal quantize [RECIPE.yaml] --model DIR|hf://ORG/NAME --out DIR [options]",
    .description =
        "Samples calibration windows (C4 by default), runs the model one decoder layer at a time and\n"
        "quantizes each linear: GPTQ (input Hessians, error-compensating solver; the quantized layer's\n"
        "output feeds the next layer), AWQ (activation-aware scale search, scale folding, clipping; the\n"
        "FP layer's output feeds the next), RTN, or awq+gptq (AWQ's scales and clipping, then each linear by\n"
        "the GPTQ solver on its scaled inputs' Hessian; the FP layer's output feeds the next, as in AWQ).\n"
        "--mse: group params by the GPTQ reference's MSE grid search (gptq, awq+gptq, rtn; CPU only).\n"
        "Writes a safetensors checkpoint (--format gptq: v1,\n"
        "symmetric; gptq_v2: any symmetry and method; awq: AutoAWQ GEMM, 4-bit) with config.json and\n"
        "a per-layer report (qcal_report.json). Recipe keys are the long flag names with '_' for '-'; flags override\n"
        "the recipe. Linears whose shapes the format cannot hold stay in F16 and are declared so.\n"
        "With --eval (or eval texts in the recipe) the fake-quantized model and the reloaded\n"
        "checkpoint are both measured; their perplexities must agree.\n\n"
        "Unattended runs: one run per output (OUT.qcal-lock); the state lives in a stamped work directory\n"
        "(OUT.qcal-work) and a run that was killed or interrupted continues at its last saved layer when\n"
        "started again with the same command ('resuming at layer N of M'), giving the same bytes as an\n"
        "uninterrupted run; --restart starts over. SIGINT/SIGTERM/SIGHUP stop at a safe point and exit\n"
        "130/143/129. OUT and the work directory may not overlap the model or any input; --overwrite\n"
        "replaces only a checkpoint qcal wrote.\n\n"
        "--calib-tokens FILE takes the windows from a token file (`qcal calib --save-tokens`; the experiment\n"
        "runner's DIR/tokens/) instead of sampling them: the recipe hash, token-sha256 and checkpoint bytes\n"
        "are those of the sampled run.",
    .run = run,
};

static qc_opt k_opts[] = {
    QC_RECIPE_FLAGS,
    {.name = "eval", .kind = QC_OPT_STR, .metavar = "FILE", .help = "measure perplexity on FILE after quantizing (keeps the fake-quantized model in RAM: 4 bytes/parameter)"},
    {.name = "eval-seqlen", .kind = QC_OPT_INT, .metavar = "N", .help = "window for --eval (default: --seqlen)"},
    {.name = "eval-max-windows", .kind = QC_OPT_INT, .metavar = "N", .help = "evaluate at most N windows"},
    {.name = "work-dir", .kind = QC_OPT_STR, .metavar = "DIR", .help = "per-layer state for resuming (default OUT.qcal-work); created fresh and stamped: an existing directory qcal did not create is refused"},
    {.name = "keep-work", .kind = QC_OPT_FLAG, .help = "keep the work directory after success"},
    {.name = "restart", .kind = QC_OPT_FLAG, .help = "discard the saved state of an earlier run of this output instead of resuming it"},
    {.name = "save-every", .kind = QC_OPT_STR, .metavar = "SECONDS", .help = "save the activations for resuming at a layer boundary at most this often (default: every layer on the CPU, 60 on the GPU; 0: every layer; -1: never)"},
    {.name = "overwrite", .kind = QC_OPT_FLAG, .help = "replace an existing output directory (only one a qcal run wrote)"},
    {.name = "plan", .kind = QC_OPT_FLAG, .help = "print the preflight plan (peak RAM, GPU memory, disk, time per phase) and whether it fits, then stop"},
    {.name = "clamp-f16", .kind = QC_OPT_FLAG, .help = "clamp values beyond the F16 range (+-65504) instead of failing"},
    {.name = "max-shard-size", .kind = QC_OPT_INT, .metavar = "MB", .help = "largest safetensors shard (default 4096)"},
    {.name = "batch-tokens", .kind = QC_OPT_INT, .metavar = "N", .help = "calibration rows per forward batch (default 8192)"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "worker threads (default: all cores); the checkpoint is the same for any count"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "only warnings and the summary"},
    {.name = "calib-tokens", .kind = QC_OPT_STR, .metavar = "FILE", .help = "read the calibration windows from FILE (`qcal calib --save-tokens`) instead of sampling; they must be the recipe's (nsamples, seqlen, seed, sampling are checked, the hash verified): the checkpoint is the one sampling would give"},
    {0},
};

typedef struct {
    bool quiet;
    const char *method;
    int bits, gs;
} line_ctx;

static bool on_linear(void *user, const qc_linear_report *r, int done, int total) {
    line_ctx *c = user;
    if (c->quiet) return true;
    if (r->quantized && r->awq_ratio >= 0)
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  ratio %.2f %-3s  %.2f s\n", done, total, r->name,
                c->method, c->bits, c->gs, r->rel_err, r->awq_ratio, qc_awq_formula_name(r->awq_formula), r->seconds);
    else if (r->quantized && strstr(c->method, "gptq"))
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  damp %.3f%s  %.2f s\n", done, total, r->name,
                c->method, c->bits, c->gs, r->rel_err, r->damp, r->retries ? " (raised)" : "", r->seconds);
    else if (r->quantized)
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  %.2f s\n", done, total, r->name, c->method,
                c->bits, c->gs, r->rel_err, r->seconds);
    else
        fprintf(stderr, "[%3d/%3d] %-40s %s\n", done, total, r->name, r->reason);
    return true;
}

static char *build_meta(const qc_recipe *r, const qc_calib_set *set, const char *recipe_hash) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "method", r->method);
    cJSON_AddStringToObject(m, "recipe_sha256", recipe_hash);
    cJSON_AddStringToObject(m, "tokens_sha256", set->sha256);
    cJSON_AddNumberToObject(m, "seed", (double)r->seed);
    cJSON_AddNumberToObject(m, "nsamples", set->nsamples);
    cJSON_AddNumberToObject(m, "seqlen", set->seqlen);
    cJSON_AddStringToObject(m, "sampling", r->sampling);
    cJSON_AddBoolToObject(m, "act_order", r->act_order);
    cJSON *src = cJSON_AddArrayToObject(m, "calibration");
    for (int i = 0; i < r->n_calib; i++) cJSON_AddItemToArray(src, cJSON_CreateString(r->calib[i].path));
    char *canon = qc_recipe_canonical(r);
    cJSON *rc = canon ? cJSON_Parse(canon) : NULL;
    if (rc) cJSON_AddItemToObject(m, "recipe", rc);
    free(canon);
    char *s = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    return s;
}

static qc_status eval_text(const qc_model *m, const qc_tokenizer *tok, const char *path, int seqlen, int maxw,
                           const qc_layer *layers, qc_eval_result *res) {
    char *text;
    size_t len, n;
    int32_t *ids;
    qc_status st = qc_read_file(path, 0, &text, &len);
    if (st) return st;
    st = qc_tokenizer_encode(tok, text, len, true, &ids, &n);
    free(text);
    if (st) return st;
    qc_eval_opts eo = {.seqlen = seqlen, .max_windows = maxw, .layers = layers};
    st = qc_eval_perplexity(m, ids, n, &eo, res);
    free(ids);
    return st;
}

typedef struct {
    const char *work;
    double t0;              /* the run's start */
    double eta_total;       /* the plan's estimate of the whole run */
    int    first_layer;     /* the first layer this process works on (> 0 when resuming) */
    double t_first;         /* when it started on it */
} phase_ctx;

/* status.json in the work directory, for people watching a long run from another terminal; the ETA is
 * the plan's until a layer is done, then the measured pace of this run's layers */
static void on_phase(void *user, int layer, int n_layers, const char *phase) {
    phase_ctx *p = user;
    char point[80];
    snprintf(point, sizeof point, "phase:%s", phase);
    qc_test_point(point);
    double now = qc_time_now(), eta = p->eta_total > 0 ? p->eta_total - (now - p->t0) : -1;
    if (layer >= 0 && p->first_layer < 0) {
        p->first_layer = layer;
        p->t_first = now;
    }
    if (layer > p->first_layer && p->first_layer >= 0)
        eta = (now - p->t_first) / (layer - p->first_layer) * (n_layers - layer);
    if (eta < 0 && p->eta_total > 0) eta = 0;
    if (qc_status_file_write(p->work, layer, n_layers, phase, eta) != QC_OK) qc_error_clear();
}

typedef struct {
    line_ctx lc;
    phase_ctx pc;
} run_user;

static bool on_linear_u(void *user, const qc_linear_report *r, int done, int total) {
    run_user *u = user;
    on_linear(&u->lc, r, done, total);
    return !qc_cancel_requested();
}

static void on_phase_u(void *user, int layer, int n_layers, const char *phase) {
    on_phase(&((run_user *)user)->pc, layer, n_layers, phase);
}

/* What can change the checkpoint's bytes besides the recipe and the tokens: the CPU arithmetic. */
static void cpu_platform(char *buf, size_t n) {
    char model[160] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c += 1 + (c[1] == ' ');
                c[strcspn(c, "\n")] = '\0';
                snprintf(model, sizeof model, "%s", c);
            }
            break;
        }
    if (f) fclose(f);
    snprintf(buf, n, "%s; %s", openblas_get_config(), model);
}

static cJSON *report_json(const qc_recipe *r, const char *hash, const qc_calib_set *set, const qc_pipeline_result *pr,
                          double t_write, double t_start, int device, const char *platform, int threads) {
    cJSON *rep = cJSON_CreateObject();
    cJSON_AddStringToObject(rep, "qcal", QC_VERSION);
    cJSON_AddStringToObject(rep, "recipe_sha256", hash);
    cJSON_AddStringToObject(rep, "tokens_sha256", set->sha256);
    cJSON *ph = cJSON_AddObjectToObject(rep, "seconds");
    cJSON_AddNumberToObject(ph, "embed", pr->t_embed);
    cJSON_AddNumberToObject(ph, "forward", pr->t_forward);
    cJSON_AddNumberToObject(ph, "hessian", pr->t_hessian);
    cJSON_AddNumberToObject(ph, "solve", pr->t_solve);
    cJSON_AddNumberToObject(ph, "pack_write", t_write);
    cJSON_AddNumberToObject(ph, "total", qc_time_now() - t_start);
    cJSON_AddStringToObject(rep, "device", pr->device_desc);
    cJSON_AddStringToObject(rep, "platform", platform);
    cJSON_AddNumberToObject(rep, "threads", threads);
    cJSON_AddNumberToObject(rep, "resumed_at_layer", pr->resumed_at);
    if (device >= 0) {
        cJSON_AddNumberToObject(ph, "read", pr->t_read);
        cJSON_AddNumberToObject(ph, "read_wait", pr->t_read_wait);
        cJSON_AddNumberToObject(ph, "pack", pr->t_pack);
        cJSON_AddNumberToObject(rep, "gpu_peak_bytes", (double)pr->gpu_peak_bytes);
        cJSON_AddNumberToObject(rep, "gpu_peak_device_bytes", (double)pr->gpu_peak_device);
        cJSON_AddNumberToObject(rep, "gpu_stash_bytes", (double)pr->gpu_stash_bytes);
        if (pr->gpu_attention) cJSON_AddStringToObject(rep, "gpu_attention", pr->gpu_attention);
    }
    cJSON_AddNumberToObject(rep, "peak_rss_bytes", (double)qc_peak_rss());
    cJSON *lins = cJSON_AddArrayToObject(rep, "linears");
    for (int i = 0; i < pr->n_lin; i++) {
        const qc_linear_report *l = &pr->lin[i];
        if (!l->name[0]) continue; /* a slot this layer does not have (an MoE layer's dense MLP) */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", l->name);
        cJSON_AddNumberToObject(o, "out_features", l->N);
        cJSON_AddNumberToObject(o, "in_features", l->K);
        cJSON_AddBoolToObject(o, "quantized", l->quantized);
        if (l->coverage[0]) { /* an expert: how well calibration covered it */
            cJSON_AddNumberToObject(o, "tokens", (double)l->tokens);
            cJSON_AddStringToObject(o, "coverage", l->coverage);
        }
        if (l->quantized) {
            cJSON_AddNumberToObject(o, "rel_err", l->rel_err);
            cJSON_AddNumberToObject(o, "damp", l->damp);
            cJSON_AddNumberToObject(o, "damp_retries", l->retries);
            cJSON_AddNumberToObject(o, "dead_columns", l->dead_cols);
            cJSON_AddNumberToObject(o, "seconds", l->seconds);
            if (l->awq_ratio >= 0) {
                cJSON_AddNumberToObject(o, "awq_ratio", l->awq_ratio);
                cJSON_AddStringToObject(o, "awq_formula", qc_awq_formula_name(l->awq_formula));
                cJSON_AddNumberToObject(o, "awq_loss", l->awq_loss);
            }
        } else {
            cJSON_AddStringToObject(o, "reason", l->reason);
        }
        cJSON_AddItemToArray(lins, o);
    }
    cJSON_AddItemToObject(rep, "eval", cJSON_CreateArray());
    return rep;
}

/* Checks that need no model data: every one of them before anything is read or written. */
static qc_status early_checks(const qc_recipe *r, const char *const *eval_files, int n_eval, long long shard_mb) {
    if (shard_mb < 1) return qc_fail(QC_ERR_ARG, "--max-shard-size must be at least 1 MB");
    for (int i = 0; i < n_eval; i++)
        if (access(eval_files[i], R_OK) != 0)
            return qc_fail(QC_ERR_ARG, "evaluation text %s: %s", eval_files[i], strerror(errno));
    for (int i = 0; i < r->n_calib; i++)
        if (!qc_hf_is_ref(r->calib[i].path) && access(r->calib[i].path, R_OK) != 0)
            return qc_fail(QC_ERR_ARG, "calibration source %s: %s", r->calib[i].path, strerror(errno));
    return QC_OK;
}

/* AWQ's modules_to_not_convert names modules by substring: a router (or shared-expert gate) name inside a
 * quantized linear's (Qwen3-MoE's "mlp.gate" in a dense layer's "mlp.gate_proj") cannot be declared. Found
 * before the run rather than at assembly. */
static qc_status check_awq_names(const qc_model *m, const qc_pipeline_opts *po) {
    const qc_model_config *c = &m->cfg;
    const qc_arch_moe *moe = qc_arch_desc_of(c->arch)->moe;
    if (po->format != QC_PACK_AWQ || !moe) return QC_OK;
    const char *kept[2] = {moe->router, moe->shared_gate};
    char path[128];
    for (int li = 0; li < c->n_layers; li++)
        for (int l = 0; l < qc_arch_n_lin(c); l++) {
            if (!qc_linear_present(c, li, (qc_linear_id)l)) continue;
            qc_linear_path(c, (qc_linear_id)l, path, sizeof path);
            for (int k = 0; k < 2; k++)
                if (kept[k] && strstr(path, kept[k]))
                    return qc_fail(QC_ERR_ARG, "--format awq cannot declare '%s' (kept in F16) without also matching "
                                   "'%s.%d.%s' (AutoAWQ and vLLM match modules_to_not_convert as "
                                   "substrings); use --format gptq_v2", kept[k], qc_layers_path(c), li, path);
        }
    return QC_OK;
}

/* Whether the run's format can hold at least one linear of the model (else nothing would be quantized). */
static qc_status check_some_packable(const qc_model *m, const qc_pipeline_opts *po) {
    const char *why = NULL, *first = NULL;
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        int N, K;
        if (!qc_linear_present(&m->cfg, 0, (qc_linear_id)l)) continue;
        qc_linear_shape(&m->cfg, (qc_linear_id)l, &N, &K);
        if (qc_pl_packable(po, N, K, &why)) return QC_OK;
        if (!first) first = why;
    }
    return qc_fail(QC_ERR_ARG, "with bits %d and group size %d the %s format can hold none of this model's linears "
                   "(%s); choose another --group-size", po->q.bits, po->q.group_size,
                   po->format == QC_PACK_AWQ ? "awq" : "gptq", first ? first : "shape");
}

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_quantize;
    qc_recipe r;
    int rc = qc_run_recipe(cmd, k_opts, argc, argv, &r);
    if (rc >= 0) return rc;
    bool quiet = qc_cli_opt(k_opts, "quiet")->set;
    qc_opt *o_thr = qc_cli_opt(k_opts, "threads");
    int threads = 0;
    if (o_thr->set) {
        if (o_thr->i < 1 || o_thr->i > 1024) {
            qc_recipe_free(&r);
            return qc_cli_usage_error(cmd, "--threads must be in [1, 1024]");
        }
        qc_par_set_threads((int)o_thr->i);
        threads = (int)o_thr->i;
    }
    if (!threads) threads = qc_par_threads();
    if (!r.model || !r.out) {
        qc_recipe_free(&r);
        return qc_cli_usage_error(cmd, "--model and --out are required (or model/out in the recipe)");
    }
    double save_every = 0;
    qc_opt *o_save = qc_cli_opt(k_opts, "save-every");
    if (o_save->set) {
        char *end;
        save_every = strtod(o_save->str, &end);
        if (*end || end == o_save->str || (save_every < 0 && save_every != -1)) {
            qc_recipe_free(&r);
            return qc_cli_usage_error(cmd, "--save-every takes seconds >= 0, or -1");
        }
    }
    int device = -1; /* cpu */
    if (strcmp(r.device, "cpu") != 0) {
        device = strncmp(r.device, "cuda:", 5) == 0 ? atoi(r.device + 5) : 0;
        if (!qc_gpu_built()) {
            fprintf(stderr, "qcal quantize: device '%s': this build has no CUDA backend (rebuild with -DQCAL_CUDA=ON, "
                            "or use --device cpu)\n", r.device);
            qc_recipe_free(&r);
            return QC_EXIT_ERROR;
        }
    }
    /* on the GPU a layer takes a second or two and X is gigabytes: save at most once a minute by default */
    if (!o_save->set && device >= 0) save_every = 60;
    qc_method method = strcmp(r.method, "rtn") == 0 ? QC_METHOD_RTN
                       : strncmp(r.method, "awq", 3) == 0 ? QC_METHOD_AWQ : QC_METHOD_GPTQ; /* awq, awq+gptq */
    bool overwrite = qc_cli_opt(k_opts, "overwrite")->set, restart = qc_cli_opt(k_opts, "restart")->set;
    qc_opt *o_eval = qc_cli_opt(k_opts, "eval");
    const char *eval_files[QC_RECIPE_MAX_EVALS + 1];
    int eval_seq[QC_RECIPE_MAX_EVALS + 1], n_eval = 0;
    for (int i = 0; i < r.n_eval; i++) {
        eval_files[n_eval] = r.eval[i].text;
        eval_seq[n_eval++] = r.eval[i].seqlen > 0 ? r.eval[i].seqlen : r.seqlen;
    }
    if (o_eval->set) {
        eval_files[n_eval] = o_eval->str;
        eval_seq[n_eval++] = qc_cli_opt(k_opts, "eval-seqlen")->set ? (int)qc_cli_opt(k_opts, "eval-seqlen")->i
                                                                       : r.seqlen;
    }
    int eval_maxw = qc_cli_opt(k_opts, "eval-max-windows")->set ? (int)qc_cli_opt(k_opts, "eval-max-windows")->i : 0;
    long long shard_mb = qc_cli_opt(k_opts, "max-shard-size")->set ? qc_cli_opt(k_opts, "max-shard-size")->i : 4096;

    char hash[65], platform[512];
    qc_recipe_hash(&r, hash);
    cpu_platform(platform, sizeof platform);
    char *model_dir = NULL, *meta = NULL, *work = NULL, *rep_text = NULL;
    qc_model *m = NULL, *qm = NULL;
    qc_tokenizer *tok = NULL;
    qc_calib_set set;
    memset(&set, 0, sizeof set);
    qc_pipeline_result pr;
    memset(&pr, 0, sizeof pr);
    qc_guard_lock lock = {.fd = -1};
    qc_workdir wd = {.dirfd = -1};
    cJSON *fp = NULL, *rep = NULL;
    bool work_open = false;
    int n_check_err = 0;   /* errors qcal check found in the written checkpoint */
    double t_start = qc_time_now();
    qc_status st = early_checks(&r, eval_files, n_eval, shard_mb);
    /* shared windows (the experiment runner samples once per token group): read and checked up front */
    qc_opt *o_tokens = qc_cli_opt(k_opts, "calib-tokens");
    if (st == QC_OK && o_tokens->set) st = qc_run_calib_load(&r, o_tokens->str, true, &set);
    if (st == QC_OK) st = qc_run_resolve_model(r.model, &model_dir);
    if (st != QC_OK) goto out;

    /* ---- the paths: checked, locked and cleaned before the model is read ---- */
    qc_opt *o_work = qc_cli_opt(k_opts, "work-dir");
    if (o_work->set) {
        work = qc_strdup(o_work->str);
    } else {
        size_t n = strlen(r.out);
        while (n > 1 && r.out[n - 1] == '/') n--;
        if ((work = malloc(n + 16))) snprintf(work, n + 16, "%.*s.qcal-work", (int)n, r.out);
    }
    if (!work) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    {
        const char *inputs[QC_RECIPE_MAX_SOURCES + QC_RECIPE_MAX_EVALS + 3];
        int n_in = 0;
        for (int i = 0; i < r.n_calib; i++)
            if (!qc_hf_is_ref(r.calib[i].path)) inputs[n_in++] = r.calib[i].path;
        for (int i = 0; i < n_eval; i++) inputs[n_in++] = eval_files[i];
        if (r.source) inputs[n_in++] = r.source;
        if (o_tokens->set) inputs[n_in++] = o_tokens->str;
        if ((st = qc_guard_paths(r.out, work, model_dir, inputs, n_in))) goto out;
    }
    if ((st = qc_guard_lock_take(r.out, &lock))) goto out;
    if (qc_dir_exists(r.out) || qc_file_exists(r.out)) {
        if (!overwrite && qc_dir_exists(work) && qc_workdir_finish_interrupted(work, r.out, hash)) {
            fprintf(stderr, "qcal quantize: %s was already written by this recipe; the run that wrote it stopped while "
                            "removing its work directory, which is now removed\nwrote %s\n", r.out, r.out);
            goto out;
        }
        if (!overwrite) {
            st = qc_fail(QC_ERR_ARG, "%s already exists (use --overwrite to replace a checkpoint qcal wrote)", r.out);
            goto out;
        }
        if ((st = qc_guard_replaceable(r.out))) goto out;
    }
    qc_guard_clean_leftovers(r.out);
    if ((st = qc_model_open(model_dir, &m))) goto out;

    line_ctx lc = {.quiet = quiet, .method = r.method, .bits = r.bits, .gs = r.group_size};
    run_user ru = {.lc = lc, .pc = {.work = work, .t0 = t_start, .first_layer = -1}};
    qc_pipeline_opts po = {.method = method, .q = qc_gptq_default_opts(), .true_sequential = r.true_sequential,
                           .format = strcmp(r.format, "awq") == 0       ? QC_PACK_AWQ
                                     : strcmp(r.format, "gptq_v2") == 0 ? QC_PACK_GPTQ_V2 : QC_PACK_GPTQ,
                           .awq_scale = strcmp(r.awq_scale, "llm-awq") == 0   ? QC_AWQ_SCALE_LLM_AWQ
                                        : strcmp(r.awq_scale, "autoawq") == 0 ? QC_AWQ_SCALE_AUTOAWQ : QC_AWQ_SCALE_BEST,
                           .awq_search_samples = r.awq_search_samples, .awq_clip = r.awq_clip, .work_dir = work, .keep_fake = n_eval > 0,
                           .device = device, .on_linear = on_linear_u, .user = &ru, .save_every = save_every,
                           .clamp_f16 = qc_cli_opt(k_opts, "clamp-f16")->set, .on_phase = on_phase_u};
    po.q.bits = r.bits;
    po.q.group_size = r.group_size;
    po.q.sym = r.sym;
    po.q.act_order = r.act_order;
    po.q.static_groups = r.static_groups;
    po.q.damp = r.damp;
    po.q.mse = r.mse;
    po.awq_gptq = strcmp(r.method, "awq+gptq") == 0;
    po.moe_min_tokens = r.moe_min_tokens;
    po.moe_low = strcmp(r.moe_low_coverage, "rtn") == 0 ? QC_MOE_LOW_RTN : QC_MOE_LOW_ALL_TOKENS;
    if (qc_cli_opt(k_opts, "batch-tokens")->set) po.batch_tokens = (int)qc_cli_opt(k_opts, "batch-tokens")->i;
    if ((st = check_some_packable(m, &po)) || (st = check_awq_names(m, &po))) goto out;
    if (device >= 0 && method == QC_METHOD_AWQ && qc_arch_n_lin(&m->cfg) != QC_LIN_COUNT) { /* before calibration
                                                                                              (the pipeline checks too) */
        st = qc_fail(QC_ERR_UNSUPPORTED, "quantize: AWQ of mixture-of-experts models (%s) runs on the CPU only in "
                     "this version (--device cpu; GPTQ and RTN run on the GPU)", m->cfg.arch_name);
        goto out;
    }

    /* ---- the preflight plan: what the run needs, refused before calibration when it cannot fit ---- */
    {
        qc_plan_in pi = {.m = m, .method = method, .awq_gptq = po.awq_gptq, .bits = r.bits, .group_size = r.group_size, .format = po.format,
                         .act_order = r.act_order, .true_sequential = r.true_sequential, .nsamples = r.nsamples,
                         .seqlen = r.seqlen, .batch_tokens = po.batch_tokens,
                         .awq_candidates = qc_awq_n_candidates(po.awq_scale, 20), .awq_search_samples = r.awq_search_samples, .device = device, .keep_fake = n_eval > 0,
                         .eval_seqlen = n_eval > 0 ? eval_seq[n_eval - 1] : 0, .eval_text = n_eval > 0 ? eval_files[n_eval - 1] : NULL,
                         .eval_max_windows = eval_maxw, .threads = threads, .save_every = save_every, .out = r.out,
                         .work_dir = work, .max_shard_bytes = (uint64_t)shard_mb << 20};
        qc_plan plan;
        if ((st = qc_plan_compute(&pi, &plan))) goto out;
        bool plan_only = qc_cli_opt(k_opts, "plan")->set;
        if (plan_only || !quiet) qc_plan_print(&plan, plan_only ? stdout : stderr);
        if (plan_only) {
            st = qc_plan_check(&plan);
            if (st == QC_OK) printf("plan: the run fits\n");
            goto out;
        }
        if ((st = qc_plan_check(&plan))) goto out;
        ru.pc.eta_total = plan.eta_total;
    }

    /* ---- the work directory: fresh and stamped, or this run's own state to resume ---- */
    if (!(fp = cJSON_CreateObject())) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    {
        char *out_abs = qc_guard_abspath(r.out);
        cJSON *ident = qc_guard_model_identity(model_dir);
        if (!out_abs || !ident) {
            free(out_abs);
            cJSON_Delete(ident);
            st = QC_ERR_IO;
            goto out;
        }
        cJSON_AddStringToObject(fp, "qcal", QC_VERSION);
        cJSON_AddStringToObject(fp, "recipe_sha256", hash);
        cJSON_AddStringToObject(fp, "out", out_abs);
        cJSON_AddItemToObject(fp, "model_files", ident);
        cJSON_AddStringToObject(fp, "device", device < 0 ? platform : r.device);
        if (device >= 0) { /* the two attention kernels, and stacked solves, round differently: a resume must
                            * not mix them */
            cJSON_AddStringToObject(fp, "gpu_attention", qc_gpu_attn_kernel(m->cfg.head_dim));
            cJSON_AddStringToObject(fp, "gpu_solves", qc_gpu_solve_stacked() ? "stacked" : "one-by-one");
        }
        /* the arithmetic's partition of the work: fixed chunks, whatever --threads and --batch-tokens are */
        cJSON_AddStringToObject(fp, "partition", "fixed-chunks-v1");
        free(out_abs);
    }
    if ((st = qc_workdir_open(work, fp, restart, &wd))) goto out;
    work_open = true;

    if (!quiet)
        QC_LOGI("qcal %s: %s %s, %d layers, hidden %d -> %s (%s w%d g%d %s%s, format %s), recipe-sha256 %s", QC_VERSION,
                model_dir, m->cfg.arch_name, m->cfg.n_layers, m->cfg.hidden_size, r.out, r.method, r.bits, r.group_size,
                r.sym ? "sym" : "asym", r.act_order ? " act-order" : "", r.format, hash);
    /* read windows need no tokenizer (a model may ship none); sampling and --eval do */
    if ((!o_tokens->set || n_eval > 0) && (st = qc_tokenizer_load(model_dir, &tok))) goto out;
    on_phase(&ru.pc, -1, m->cfg.n_layers, "sampling");
    if (o_tokens->set) {
        if ((st = qc_run_calib_check_vocab(&set, m->cfg.vocab_size, o_tokens->str))) goto out;
        if (!quiet)
            QC_LOGI("calibration: %d x %d tokens read from %s (%s sampling, seed %llu)", set.nsamples, set.seqlen,
                    o_tokens->str, r.sampling, (unsigned long long)r.seed);
    } else if ((st = qc_run_calib(&r, tok, quiet, &set))) {
        goto out;
    }
    printf("token-sha256: %s\n", set.sha256);
    if ((st = qc_workdir_confirm(&wd, "tokens_sha256", set.sha256, restart))) goto out;
    if (qc_cancel_requested()) {
        st = qc_fail(QC_ERR_CANCELLED, "quantize: interrupted after sampling");
        goto out;
    }

    /* static groups make the layout identical to a non-act-order one (spec A.4 DECISION) */
    char quantizer[32];
    snprintf(quantizer, sizeof quantizer, "qcal:%s", QC_VERSION);
    qc_gptq_config gc = {.bits = r.bits, .group_size = r.group_size, .sym = r.sym,
                         .desc_act = r.act_order && !r.static_groups, .static_groups = r.static_groups,
                         .true_sequential = r.true_sequential, .v2 = po.format == QC_PACK_GPTQ_V2, .damp_percent = r.damp,
                         .quantizer = quantizer};
    qc_awq_config ac = {.bits = r.bits, .group_size = r.group_size, .quantizer = quantizer};
    /* the parts carry the shards' metadata, from the configs the checkpoint is written with below: then the
     * writer can take them as its shards without copying (ckpt_write.h: part shards) */
    qc_shard_meta sm;
    if (po.format == QC_PACK_AWQ) qc_awq_shard_meta(&ac, &sm);
    else qc_gptq_shard_meta(&gc, &sm);
    po.part_meta = qc_shard_meta_pairs(&sm);
    po.n_part_meta = sm.n;
    if ((st = qc_pipeline_run(m, set.ids, set.nsamples, set.seqlen, &po, &pr))) goto out;

    on_phase(&ru.pc, -1, m->cfg.n_layers, "assembly");
    double tw = qc_time_now();
    meta = build_meta(&r, &set, hash);
    {   /* what can make another machine's bytes differ (README: reproducibility) */
        cJSON *mj = cJSON_Parse(meta);
        cJSON_AddStringToObject(mj, "platform", device < 0 ? platform : pr.device_desc);
        free(meta);
        meta = cJSON_PrintUnformatted(mj);
        cJSON_Delete(mj);
    }
    rep = report_json(&r, hash, &set, &pr, pr.t_write, t_start, device, platform, threads);
    rep_text = rep ? cJSON_Print(rep) : NULL;
    if (!meta || !rep_text) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    gc.meta_json = ac.meta_json = meta;
    gc.report_json = ac.report_json = rep_text;
    /* from here a stop can leave the checkpoint written and the work directory not yet removed: say so
     * (not with --keep-work, whose directory is meant to stay) */
    if (!qc_cli_opt(k_opts, "keep-work")->set && (st = qc_workdir_mark_finishing(&wd, hash))) goto out;
    if (po.format == QC_PACK_AWQ) {
        st = qc_awq_write_checkpoint(r.out, model_dir, (const char *const *)pr.parts, pr.n_parts, &ac,
                                     (const char *const *)pr.unquantized, pr.n_unq, (uint64_t)shard_mb << 20, overwrite);
    } else {
        st = qc_gptq_write_checkpoint(r.out, model_dir, (const char *const *)pr.parts, pr.n_parts, &gc,
                                      (const char *const *)pr.unquantized, pr.n_unq, (uint64_t)shard_mb << 20,
                                      overwrite);
    }
    if (st) goto out;
    double t_write = pr.t_write + (qc_time_now() - tw);
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "seconds"), "pack_write"), t_write);

    /* evaluation: the fake-quantized model in memory, then the checkpoint as a loader reads it */
    cJSON *evals = cJSON_GetObjectItemCaseSensitive(rep, "eval");
    if (n_eval > 0 && pr.resumed_at > 0) { /* the layers done before the restart: loader-exact, from the checkpoint */
        st = qc_model_open(r.out, &qm);
        for (int li = 0; st == QC_OK && li < pr.resumed_at; li++) st = qc_layer_load(qm, li, &pr.fake[li]);
        if (st == QC_OK && !quiet)
            QC_LOGI("eval: the fake-quantized layers 0-%d (done before the restart) are read back from %s", pr.resumed_at - 1, r.out);
    }
    for (int i = 0; i < n_eval && st == QC_OK; i++) {
        on_phase(&ru.pc, -1, m->cfg.n_layers, "eval");
        qc_eval_result a, b;
        m->round_f16 = true;
        st = eval_text(m, tok, eval_files[i], eval_seq[i], eval_maxw, pr.fake, &a);
        m->round_f16 = false;
        if (st == QC_OK && !qm) st = qc_model_open(r.out, &qm);
        if (st == QC_OK) st = eval_text(qm, tok, eval_files[i], eval_seq[i], eval_maxw, NULL, &b);
        if (st) break;
        double rel = fabs(a.ppl - b.ppl) / b.ppl;
        printf("eval %s (seqlen %d, %d windows): fake-quant ppl %.4f, reloaded checkpoint ppl %.4f (rel diff %.1e)\n",
               eval_files[i], eval_seq[i], b.windows, a.ppl, b.ppl, rel);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "text", eval_files[i]);
        cJSON_AddNumberToObject(e, "seqlen", eval_seq[i]);
        cJSON_AddNumberToObject(e, "windows", b.windows);
        cJSON_AddNumberToObject(e, "ppl_fake_quant", a.ppl);
        cJSON_AddNumberToObject(e, "ppl_checkpoint", b.ppl);
        cJSON_AddItemToArray(evals, e);
        if (rel > 1e-4) {
            st = qc_fail(QC_ERR_NUMERIC, "the reloaded checkpoint (ppl %.6f) disagrees with the fake-quantized model "
                         "(ppl %.6f): packing or reading is wrong", b.ppl, a.ppl);
        } else if (i == n_eval - 1) {
            printf("perplexity: %.6f\n", b.ppl);
        }
    }
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rep, "seconds"), "total"),
                         qc_time_now() - t_start);
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(rep, "peak_rss_bytes"), (double)qc_peak_rss());
    {   /* the report again, with the evaluations and the final times */
        char *js = cJSON_Print(rep), *rp = qc_path_join(r.out, "qcal_report.json");
        qc_status st2 = (js && rp) ? qc_write_file_atomic(rp, js, strlen(js)) : qc_fail(QC_ERR_NOMEM, "out of memory");
        free(js);
        free(rp);
        if (st == QC_OK) st = st2;
    }
    int n_q = 0, n_raised = 0, n_all = 0, n_low = 0, n_experts = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < pr.n_lin; i++) {
        const qc_linear_report *l = &pr.lin[i];
        if (!l->name[0]) continue;
        n_all++;
        if (l->coverage[0] && strstr(l->name, "down") == NULL && strstr(l->name, ".w2") == NULL) continue;
        n_experts += l->coverage[0] != 0; /* counted once per expert, at its down projection */
        n_low += l->coverage[0] && strcmp(l->coverage, "routed") != 0;
    }
    for (int i = 0; i < pr.n_lin; i++) {
        const qc_linear_report *l = &pr.lin[i];
        if (!l->name[0] || !l->quantized) continue;
        n_q++;
        n_raised += l->retries > 0;
        if (l->rel_err > worst) { worst = l->rel_err; worst_name = l->name; }
    }
    fprintf(stderr, "summary: %d linears quantized, %d kept in F16, %d with raised damping; worst rel err %.2e (%s)\n",
            n_q, n_all - n_q, n_raised, worst, worst_name);
    if (n_experts > 0)
        fprintf(stderr, "experts: %d of %d (over all layers) had fewer than %d routed calibration tokens: %s\n", n_low,
                n_experts, (int)qc_pipeline_moe_min_rows(&po, &m->cfg),
                po.moe_low == QC_MOE_LOW_RTN ? "rounded to nearest" : "Hessians from every token sent through them");
    if (method == QC_METHOD_AWQ) { /* a group's choice is on each of its linears: count it at its first */
        int won[3] = {0};
        qc_arch_awq *groups = malloc(sizeof *groups * (size_t)qc_arch_awq_max_groups(&m->cfg));
        for (int li = 0; groups && li < m->cfg.n_layers; li++) {
            int ng = qc_arch_awq_groups(&m->cfg, li, groups);
            for (int g = 0; g < ng; g++) {
                const qc_linear_report *l = &pr.lin[(size_t)li * pr.lin_stride + groups[g].lin[0]];
                if (l->name[0] && l->awq_formula >= QC_AWQ_F_NONE && l->awq_formula <= QC_AWQ_F_X) won[l->awq_formula]++;
            }
        }
        free(groups);
        char sw[80] = "";
        if (r.awq_search_samples > 0 && r.awq_search_samples < r.nsamples)
            snprintf(sw, sizeof sw, "; attention/MLP forwards on %d of %d windows", r.awq_search_samples, r.nsamples);
        fprintf(stderr, "awq: %d scale groups searched (awq_scale %s%s): the duo formula (AutoAWQ) chosen for %d, "
                        "x^r (llm-awq) for %d\n", won[1] + won[2], r.awq_scale, sw, won[1], won[2]);
    }
    fprintf(stderr, "time: calibration forward %.1f s, Hessians %.1f s, solve %.1f s, pack/write %.1f s, total %.1f s; "
                    "peak RSS %.0f MiB%s\n", pr.t_forward, pr.t_hessian, pr.t_solve, t_write, qc_time_now() - t_start,
            (double)qc_peak_rss() / 1048576.0, pr.resumed_at > 0 ? " (this run only: it resumed)" : "");
    if (device >= 0)
        fprintf(stderr, "gpu: %s; layer reads %.1f s (overlapped; waited %.1f s), device packing %.1f s; peak GPU memory "
                        "%.0f MiB (qcal's buffers %.0f MiB)\n", pr.device_desc, pr.t_read, pr.t_read_wait, pr.t_pack,
                (double)pr.gpu_peak_device / 1048576.0, (double)pr.gpu_peak_bytes / 1048576.0);
    if (st == QC_OK) {
        fprintf(stderr, "wrote %s\n", r.out);
        qc_test_point("cleanup");
        if (!qc_cli_opt(k_opts, "keep-work")->set) qc_workdir_remove(&wd);
        /* qcal check on what was written: an error fails the run, the checkpoint stays for inspection */
        if ((st = qc_check_after_write(r.out, stderr, &n_check_err)) == QC_OK && n_check_err)
            fprintf(stderr, "qcal quantize: qcal check found %d error(s) in %s (above); the checkpoint stays there\n",
                    n_check_err, r.out);
    }
out:;
    int sig = qc_cancel_requested();
    if (work_open && st != QC_OK) {
        int b = 0;
        if (qc_resume_peek(work, &b) != QC_OK) b = 0;
        if (b == 0 && wd.created) {
            qc_workdir_remove(&wd); /* nothing saved yet: nothing to resume, nothing to leave behind */
        } else if (b > 0) {
            fprintf(stderr, "qcal quantize: the state up to layer %d is saved in %s; run the same command again to "
                            "resume (or add --restart to start over)\n", b, work);
        }
    }
    if (work_open) qc_workdir_close(&wd);
    qc_guard_lock_release(&lock);
    qc_pipeline_result_free(&pr);
    qc_calib_set_free(&set);
    qc_tokenizer_free(tok);
    qc_model_free(qm);
    qc_model_free(m);
    cJSON_Delete(fp);
    cJSON_Delete(rep);
    free(rep_text);
    free(model_dir);
    free(meta);
    free(work);
    qc_recipe_free(&r);
    if (st == QC_OK) return n_check_err ? QC_EXIT_ERROR : QC_EXIT_OK;
    if (sig && st == QC_ERR_CANCELLED) {
        fprintf(stderr, "qcal quantize: interrupted by signal %d (%s)\n", sig, strsignal(sig));
        return 128 + sig;
    }
    return qc_cli_fail(cmd, st);
}
