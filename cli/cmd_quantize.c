/* qcal quantize: calibrate layer by layer, solve (GPTQ/RTN), write a GPTQ checkpoint, evaluate. */
#define _XOPEN_SOURCE 700
#include <cblas.h>
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "awq_format.h"
#include "qc_gpu.h"
#include "eval.h"
#include "pipeline.h"
#include "run_setup.h"
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
        "FP layer's output feeds the next) or RTN. Writes a safetensors checkpoint (--format gptq: v1,\n"
        "symmetric; gptq_v2: any symmetry and method; awq: AutoAWQ GEMM, 4-bit) with config.json and\n"
        "a per-layer report (qcal_report.json). Recipe keys are the long flag names with '_' for '-'; flags override\n"
        "the recipe. Linears whose shapes the format cannot hold stay in F16 and are declared so.\n"
        "With --eval (or eval texts in the recipe) the fake-quantized model and the reloaded\n"
        "checkpoint are both measured; their perplexities must agree.",
    .run = run,
};

static qc_opt k_opts[] = {
    QC_RECIPE_FLAGS,
    {.name = "eval", .kind = QC_OPT_STR, .metavar = "FILE", .help = "measure perplexity on FILE after quantizing (keeps the fake-quantized model in RAM: 4 bytes/parameter)"},
    {.name = "eval-seqlen", .kind = QC_OPT_INT, .metavar = "N", .help = "window for --eval (default: --seqlen)"},
    {.name = "eval-max-windows", .kind = QC_OPT_INT, .metavar = "N", .help = "evaluate at most N windows"},
    {.name = "work-dir", .kind = QC_OPT_STR, .metavar = "DIR", .help = "per-layer state (default OUT.qcal-work)"},
    {.name = "keep-work", .kind = QC_OPT_FLAG, .help = "keep the work directory after success"},
    {.name = "overwrite", .kind = QC_OPT_FLAG, .help = "replace an existing output directory"},
    {.name = "max-shard-size", .kind = QC_OPT_INT, .metavar = "MB", .help = "largest safetensors shard (default 4096)"},
    {.name = "batch-tokens", .kind = QC_OPT_INT, .metavar = "N", .help = "calibration rows per forward batch (default 8192)"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "BLAS threads (default: all cores)"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "only warnings and the summary"},
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
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  ratio %.2f  %.2f s\n", done, total, r->name,
                c->method, c->bits, c->gs, r->rel_err, r->awq_ratio, r->seconds);
    else if (r->quantized && strcmp(c->method, "gptq") == 0)
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  damp %.3f%s  %.2f s\n", done, total, r->name,
                c->method, c->bits, c->gs, r->rel_err, r->damp, r->retries ? " (raised)" : "", r->seconds);
    else if (r->quantized)
        fprintf(stderr, "[%3d/%3d] %-40s %s w%d g%-4d err %.2e  %.2f s\n", done, total, r->name, c->method,
                c->bits, c->gs, r->rel_err, r->seconds);
    else
        fprintf(stderr, "[%3d/%3d] %-40s %s\n", done, total, r->name, r->reason);
    return true;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
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

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_quantize;
    qc_recipe r;
    int rc = qc_run_recipe(cmd, k_opts, argc, argv, &r);
    if (rc >= 0) return rc;
    bool quiet = qc_cli_opt(k_opts, "quiet")->set;
    qc_opt *o_thr = qc_cli_opt(k_opts, "threads");
    if (o_thr->set) {
        if (o_thr->i < 1 || o_thr->i > 1024) {
            qc_recipe_free(&r);
            return qc_cli_usage_error(cmd, "--threads must be in [1, 1024]");
        }
        openblas_set_num_threads((int)o_thr->i);
    }
    if (!r.model || !r.out) {
        qc_recipe_free(&r);
        return qc_cli_usage_error(cmd, "--model and --out are required (or model/out in the recipe)");
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
    qc_method method = strcmp(r.method, "rtn") == 0 ? QC_METHOD_RTN
                       : strcmp(r.method, "awq") == 0 ? QC_METHOD_AWQ : QC_METHOD_GPTQ;
    bool overwrite = qc_cli_opt(k_opts, "overwrite")->set;
    if (!overwrite && (qc_dir_exists(r.out) || qc_file_exists(r.out))) {
        fprintf(stderr, "qcal quantize: %s already exists (use --overwrite to replace it)\n", r.out);
        qc_recipe_free(&r);
        return QC_EXIT_ERROR;
    }
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

    char hash[65];
    qc_recipe_hash(&r, hash);
    char *model_dir = NULL, *meta = NULL, *work = NULL;
    qc_model *m = NULL, *qm = NULL;
    qc_tokenizer *tok = NULL;
    qc_calib_set set;
    memset(&set, 0, sizeof set);
    qc_pipeline_result pr;
    memset(&pr, 0, sizeof pr);
    double t_start = qc_time_now();
    qc_status st = qc_run_resolve_model(r.model, &model_dir);
    if (st == QC_OK) st = qc_model_open(model_dir, &m);
    if (st == QC_OK) st = qc_tokenizer_load(model_dir, &tok);
    if (st != QC_OK) goto out;
    if (!quiet)
        QC_LOGI("qcal %s: %s %s, %d layers, hidden %d -> %s (%s w%d g%d %s%s, format %s), recipe-sha256 %s", QC_VERSION,
                model_dir, m->cfg.arch_name, m->cfg.n_layers, m->cfg.hidden_size, r.out, r.method, r.bits, r.group_size,
                r.sym ? "sym" : "asym", r.act_order ? " act-order" : "", r.format, hash);
    if ((st = qc_run_calib(&r, tok, quiet, &set))) goto out;
    printf("token-sha256: %s\n", set.sha256);

    qc_opt *o_work = qc_cli_opt(k_opts, "work-dir");
    if (o_work->set) {
        work = qc_strdup(o_work->str);
    } else {
        work = malloc(strlen(r.out) + 16);
        if (work) sprintf(work, "%s.qcal-work", r.out);
    }
    if (!work) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    line_ctx lc = {.quiet = quiet, .method = r.method, .bits = r.bits, .gs = r.group_size};
    qc_pipeline_opts po = {.method = method, .q = qc_gptq_default_opts(), .true_sequential = r.true_sequential,
                           .format = strcmp(r.format, "awq") == 0       ? QC_PACK_AWQ
                                     : strcmp(r.format, "gptq_v2") == 0 ? QC_PACK_GPTQ_V2 : QC_PACK_GPTQ,
                           .awq_duo = strcmp(r.awq_scale, "llm-awq") != 0, .awq_clip = r.awq_clip, .work_dir = work, .keep_fake = n_eval > 0,
                           .device = device, .on_linear = on_linear, .user = &lc};
    po.q.bits = r.bits;
    po.q.group_size = r.group_size;
    po.q.sym = r.sym;
    po.q.act_order = r.act_order;
    po.q.static_groups = r.static_groups;
    po.q.damp = r.damp;
    if (qc_cli_opt(k_opts, "batch-tokens")->set) po.batch_tokens = (int)qc_cli_opt(k_opts, "batch-tokens")->i;
    if ((st = qc_pipeline_run(m, set.ids, set.nsamples, set.seqlen, &po, &pr))) goto out;

    double tw = qc_time_now();
    meta = build_meta(&r, &set, hash);
    char quantizer[32];
    snprintf(quantizer, sizeof quantizer, "qcal:%s", QC_VERSION);
    /* static groups make the layout identical to a non-act-order one (spec A.4 DECISION) */
    qc_gptq_config gc = {.bits = r.bits, .group_size = r.group_size, .sym = r.sym,
                         .desc_act = r.act_order && !r.static_groups, .static_groups = r.static_groups,
                         .true_sequential = r.true_sequential, .v2 = po.format == QC_PACK_GPTQ_V2, .damp_percent = r.damp,
                         .quantizer = quantizer, .meta_json = meta};
    long long shard_mb = qc_cli_opt(k_opts, "max-shard-size")->set ? qc_cli_opt(k_opts, "max-shard-size")->i : 4096;
    if (shard_mb < 1) {
        st = qc_fail(QC_ERR_ARG, "--max-shard-size must be at least 1 MB");
        goto out;
    }
    if (po.format == QC_PACK_AWQ) {
        qc_awq_config ac = {.bits = r.bits, .group_size = r.group_size, .quantizer = quantizer, .meta_json = meta};
        st = qc_awq_write_checkpoint(r.out, model_dir, (const char *const *)pr.parts, pr.n_parts, &ac,
                                     (const char *const *)pr.unquantized, pr.n_unq, (uint64_t)shard_mb << 20, overwrite);
    } else {
        st = qc_gptq_write_checkpoint(r.out, model_dir, (const char *const *)pr.parts, pr.n_parts, &gc,
                                      (const char *const *)pr.unquantized, pr.n_unq, (uint64_t)shard_mb << 20,
                                      overwrite);
    }
    if (st) goto out;
    double t_write = pr.t_write + (qc_time_now() - tw);

    /* evaluation: the fake-quantized model in memory, then the checkpoint as a loader reads it */
    cJSON *rep = cJSON_CreateObject(), *evals = cJSON_CreateArray();
    for (int i = 0; i < n_eval && st == QC_OK; i++) {
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
    /* the report, next to the weights */
    cJSON_AddStringToObject(rep, "qcal", QC_VERSION);
    cJSON_AddStringToObject(rep, "recipe_sha256", hash);
    cJSON_AddStringToObject(rep, "tokens_sha256", set.sha256);
    cJSON *ph = cJSON_AddObjectToObject(rep, "seconds");
    cJSON_AddNumberToObject(ph, "embed", pr.t_embed);
    cJSON_AddNumberToObject(ph, "forward", pr.t_forward);
    cJSON_AddNumberToObject(ph, "hessian", pr.t_hessian);
    cJSON_AddNumberToObject(ph, "solve", pr.t_solve);
    cJSON_AddNumberToObject(ph, "pack_write", t_write);
    cJSON_AddNumberToObject(ph, "total", qc_time_now() - t_start);
    cJSON_AddStringToObject(rep, "device", pr.device_desc);
    if (device >= 0) {
        cJSON_AddNumberToObject(ph, "read", pr.t_read);
        cJSON_AddNumberToObject(ph, "read_wait", pr.t_read_wait);
        cJSON_AddNumberToObject(ph, "pack", pr.t_pack);
        cJSON_AddNumberToObject(rep, "gpu_peak_bytes", (double)pr.gpu_peak_bytes);
        cJSON_AddNumberToObject(rep, "gpu_peak_device_bytes", (double)pr.gpu_peak_device);
    }
    cJSON_AddNumberToObject(rep, "peak_rss_bytes", (double)qc_peak_rss());
    cJSON *lins = cJSON_AddArrayToObject(rep, "linears");
    int n_q = 0, n_raised = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < pr.n_lin; i++) {
        const qc_linear_report *l = &pr.lin[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", l->name);
        cJSON_AddNumberToObject(o, "out_features", l->N);
        cJSON_AddNumberToObject(o, "in_features", l->K);
        cJSON_AddBoolToObject(o, "quantized", l->quantized);
        if (l->quantized) {
            cJSON_AddNumberToObject(o, "rel_err", l->rel_err);
            cJSON_AddNumberToObject(o, "damp", l->damp);
            cJSON_AddNumberToObject(o, "damp_retries", l->retries);
            cJSON_AddNumberToObject(o, "dead_columns", l->dead_cols);
            cJSON_AddNumberToObject(o, "seconds", l->seconds);
            if (l->awq_ratio >= 0) cJSON_AddNumberToObject(o, "awq_ratio", l->awq_ratio);
            n_q++;
            n_raised += l->retries > 0;
            if (l->rel_err > worst) { worst = l->rel_err; worst_name = l->name; }
        } else {
            cJSON_AddStringToObject(o, "reason", l->reason);
        }
        cJSON_AddItemToArray(lins, o);
    }
    cJSON_AddItemToObject(rep, "eval", evals);
    char *js = cJSON_Print(rep);
    cJSON_Delete(rep);
    char *rp = qc_path_join(r.out, "qcal_report.json");
    qc_status st2 = (js && rp) ? qc_write_file_atomic(rp, js, strlen(js)) : qc_fail(QC_ERR_NOMEM, "out of memory");
    free(js);
    free(rp);
    if (st == QC_OK) st = st2;
    fprintf(stderr, "summary: %d linears quantized, %d kept in F16, %d with raised damping; worst rel err %.2e (%s)\n",
            n_q, pr.n_lin - n_q, n_raised, worst, worst_name);
    fprintf(stderr, "time: calibration forward %.1f s, Hessians %.1f s, solve %.1f s, pack/write %.1f s, total %.1f s; "
                    "peak RSS %.0f MiB\n", pr.t_forward, pr.t_hessian, pr.t_solve, t_write, qc_time_now() - t_start,
            (double)qc_peak_rss() / 1048576.0);
    if (device >= 0)
        fprintf(stderr, "gpu: %s; layer reads %.1f s (overlapped; waited %.1f s), device packing %.1f s; peak GPU memory "
                        "%.0f MiB (qcal's buffers %.0f MiB)\n", pr.device_desc, pr.t_read, pr.t_read_wait, pr.t_pack,
                (double)pr.gpu_peak_device / 1048576.0, (double)pr.gpu_peak_bytes / 1048576.0);
    if (st == QC_OK) {
        fprintf(stderr, "wrote %s\n", r.out);
        if (!qc_cli_opt(k_opts, "keep-work")->set) nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
out:
    qc_pipeline_result_free(&pr);
    qc_calib_set_free(&set);
    qc_tokenizer_free(tok);
    qc_model_free(qm);
    qc_model_free(m);
    free(model_dir);
    free(meta);
    free(work);
    qc_recipe_free(&r);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
