/* qcal eval: perplexity of a model on a text, with the GPTQ/AWQ papers' protocol. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "run_setup.h"
#include "eval.h"
#include "qc_par.h"
#include "tokenizer.h"

#define MAX_TEXT_BYTES ((size_t)4 << 30)

static int run(int argc, char **argv);

const qc_cmd qc_cmd_eval = {
    .name = "eval",
    .summary = "measure perplexity on a text (GPTQ paper protocol)",
    .usage = "qcal eval --model DIR|hf://ORG/NAME --text FILE [--seqlen N] [--max-windows N] [--json]",
    .description =
        "Tokenizes the whole text with the model's tokenizer.json (BOS once at the start when the\n"
        "tokenizer adds one), cuts it into non-overlapping windows of --seqlen tokens (the tail is\n"
        "dropped) and reports exp(mean over windows of the mean next-token NLL), as IST-DASLab's\n"
        "llama_eval does. The last line printed is 'perplexity: <value>'. With --json a JSON object\n"
        "with every figure is printed on the line before it.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "model", .kind = QC_OPT_STR, .metavar = "DIR|hf://ORG/NAME", .help = "model directory (config.json, *.safetensors, tokenizer.json; GPTQ checkpoints too) or hub reference"},
    {.name = "text", .kind = QC_OPT_STR, .metavar = "FILE", .help = "UTF-8 text to evaluate on, used as is"},
    {.name = "seqlen", .kind = QC_OPT_INT, .metavar = "N", .help = "tokens per window (default 2048)"},
    {.name = "max-windows", .kind = QC_OPT_INT, .metavar = "N", .help = "evaluate only the first N windows (default: all)"},
    {.name = "json", .kind = QC_OPT_FLAG, .help = "also print the results as one JSON object"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "BLAS threads (default: all cores)"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "no progress bar or informational lines"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_eval;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 0, &npos);
    if (rc >= 0) return rc;
    qc_opt *o_model = qc_cli_opt(k_opts, "model"), *o_text = qc_cli_opt(k_opts, "text");
    qc_opt *o_seq = qc_cli_opt(k_opts, "seqlen"), *o_maxw = qc_cli_opt(k_opts, "max-windows");
    qc_opt *o_thr = qc_cli_opt(k_opts, "threads");
    bool quiet = qc_cli_opt(k_opts, "quiet")->set, json = qc_cli_opt(k_opts, "json")->set;
    if (!o_model->set) return qc_cli_usage_error(cmd, "--model DIR is required");
    if (!o_text->set) return qc_cli_usage_error(cmd, "--text FILE is required");
    long long seqlen = o_seq->set ? o_seq->i : 2048;
    if (seqlen < 2 || seqlen > (1 << 20)) return qc_cli_usage_error(cmd, "--seqlen must be in [2, 1048576]");
    if (o_maxw->set && o_maxw->i < 1) return qc_cli_usage_error(cmd, "--max-windows must be at least 1");
    if (o_thr->set) {
        if (o_thr->i < 1 || o_thr->i > 1024) return qc_cli_usage_error(cmd, "--threads must be in [1, 1024]");
        qc_par_set_threads((int)o_thr->i);
    }
    if (quiet) qc_log_set_level(QC_LOG_WARN);

    qc_model *m = NULL;
    qc_tokenizer *tok = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t text_len = 0, n_ids = 0;
    char *model_dir = NULL;
    qc_status st = qc_run_resolve_model(o_model->str, &model_dir);
    if (st == QC_OK) st = qc_model_open(model_dir, &m);
    if (st == QC_OK) st = qc_tokenizer_load(model_dir, &tok);
    if (st == QC_OK) st = qc_read_file(o_text->str, MAX_TEXT_BYTES, &text, &text_len);
    if (st != QC_OK) goto out;
    if (m->cfg.max_position_embeddings < seqlen)
        QC_LOGW("--seqlen %lld exceeds the model's max_position_embeddings (%d)", seqlen,
                m->cfg.max_position_embeddings);

    double t0 = qc_time_now();
    st = qc_tokenizer_encode(tok, text, text_len, true, &ids, &n_ids);
    if (st != QC_OK) {
        qc_error_prefix("%s", o_text->str);
        goto out;
    }
    double t_tok = qc_time_now() - t0;
    QC_LOGI("model %s: %s, %d layers, hidden %d, vocab %d", o_model->str, m->cfg.arch_name, m->cfg.n_layers,
            m->cfg.hidden_size, m->cfg.vocab_size);
    QC_LOGI("text %s: %zu bytes -> %zu tokens in %.2f s", o_text->str, text_len, n_ids, t_tok);

    qc_progress_bar bar;
    qc_progress_bar_init(&bar, "eval");
    qc_eval_opts eo = {.seqlen = (int)seqlen, .max_windows = o_maxw->set ? (int)o_maxw->i : 0,
                       .progress = quiet ? NULL : qc_progress_bar_cb, .user = &bar};
    qc_eval_result r;
    st = qc_eval_perplexity(m, ids, n_ids, &eo, &r);
    if (!quiet) qc_progress_bar_done(&bar);
    if (st != QC_OK) goto out;
    QC_LOGI("%d windows x %lld tokens, %.1f s, %.0f tokens/s, peak RSS %.1f MiB", r.windows, seqlen, r.seconds,
            r.tokens_per_s, (double)qc_peak_rss() / (1024.0 * 1024.0));
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o_model->str);
        cJSON_AddStringToObject(j, "text", o_text->str);
        cJSON_AddNumberToObject(j, "seqlen", (double)seqlen);
        cJSON_AddNumberToObject(j, "windows", r.windows);
        cJSON_AddNumberToObject(j, "text_tokens", (double)r.text_tokens);
        cJSON_AddNumberToObject(j, "predicted", (double)r.predicted);
        cJSON_AddNumberToObject(j, "ppl", r.ppl);
        cJSON_AddNumberToObject(j, "ppl_tokens", r.ppl_tokens);
        cJSON_AddNumberToObject(j, "top1", r.top1);
        cJSON_AddNumberToObject(j, "seconds", r.seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", r.tokens_per_s);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)qc_peak_rss());
        char *s = cJSON_PrintUnformatted(j);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    }
    printf("perplexity: %.6f\n", r.ppl);
out:
    free(model_dir);
    free(ids);
    free(text);
    qc_tokenizer_free(tok);
    qc_model_free(m);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
