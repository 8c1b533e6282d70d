/* qcal eval: perplexity of a model on a text, with the GPTQ/AWQ papers' protocol; with --base, the KL
 * divergence and top-1 agreement against a base model as llama.cpp's users compare quantizations. */
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
    .summary = "measure perplexity on a text (GPTQ paper protocol); with --base, KL divergence against it",
    .usage = "qcal eval --model DIR|hf://ORG/NAME [--base DIR|hf://ORG/NAME] --text FILE [--seqlen N]\n"
             "          [--max-windows N] [--json]",
    .description =
        "Tokenizes the whole text with the model's tokenizer.json (BOS once at the start when the\n"
        "tokenizer adds one), cuts it into non-overlapping windows of --seqlen tokens (the tail is\n"
        "dropped) and reports exp(mean over windows of the mean next-token NLL), as IST-DASLab's\n"
        "llama_eval does. The last line printed is 'perplexity: <value>'. With --json a JSON object\n"
        "with every figure is printed on the line before it.\n"
        "\n"
        "With --base (e.g. the FP16 model a quantized --model was made from) the same windows also run\n"
        "through the base, one layer of one model at a time, and these lines come before the JSON and\n"
        "the perplexity line (which stays the --model's, the same number as without --base):\n"
        "  base-perplexity: <value>    the base's perplexity on the same windows\n"
        "  kl-divergence: <value>      mean KL(base || model) in nats per token, computed in double\n"
        "                              from both log-softmaxes\n"
        "  top1-agreement: <value>     fraction of tokens where both models' most likely next token\n"
        "                              is the same (ties: the lowest id)\n"
        "taken over exactly the positions whose NLL enters the perplexity (each window's seqlen-1\n"
        "predictions), as llama.cpp's --kl-divergence does. --json adds kl_max and kl_p99 (the largest\n"
        "and the 99th-percentile per-token KL). Both models must share the tokenizer: qcal refuses when\n"
        "their tokenizer.json files encode the text differently or their vocabularies differ.\n"
        "--base equal to --model gives kl-divergence 0 and top1-agreement 1.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "model", .kind = QC_OPT_STR, .metavar = "DIR|hf://ORG/NAME", .help = "model directory (config.json, *.safetensors, tokenizer.json; GPTQ checkpoints too) or hub reference"},
    {.name = "base", .kind = QC_OPT_STR, .metavar = "DIR|hf://ORG/NAME", .help = "reference model (e.g. the FP16 original) to compare --model against: KL divergence and top-1 agreement"},
    {.name = "text", .kind = QC_OPT_STR, .metavar = "FILE", .help = "UTF-8 text to evaluate on, used as is"},
    {.name = "seqlen", .kind = QC_OPT_INT, .metavar = "N", .help = "tokens per window (default 2048)"},
    {.name = "max-windows", .kind = QC_OPT_INT, .metavar = "N", .help = "evaluate only the first N windows (default: all)"},
    {.name = "json", .kind = QC_OPT_FLAG, .help = "also print the results as one JSON object"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "BLAS threads (default: all cores)"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "no progress bar or informational lines"},
    {0},
};

/* Opens a model given as DIR or hf:// and its tokenizer; errors name the flag and the path. */
static qc_status open_model(const char *flag, const char *ref, char **dir, qc_model **m, qc_tokenizer **tok) {
    qc_status st = qc_run_resolve_model(ref, dir);
    if (st == QC_OK) st = qc_model_open(*dir, m);
    if (st == QC_OK) st = qc_tokenizer_load(*dir, tok);
    if (st != QC_OK) qc_error_prefix("--%s", flag);
    return st;
}

/* KL divergence needs one token stream read by both models: the same vocabulary, the same ids. */
static qc_status check_same_tokens(const char *model_dir, const qc_model *m, const int32_t *ids, size_t n_ids,
                                   const char *base_dir, const qc_model *base, const qc_tokenizer *base_tok,
                                   const char *text_path, const char *text, size_t text_len) {
    if (m->cfg.vocab_size != base->cfg.vocab_size)
        return qc_fail(QC_ERR_FORMAT,
                       "the vocabularies differ: %s/config.json has vocab_size %d, the base's %s/config.json %d; "
                       "KL divergence needs one vocabulary",
                       model_dir, m->cfg.vocab_size, base_dir, base->cfg.vocab_size);
    int32_t *bids = NULL;
    size_t bn = 0;
    qc_status st = qc_tokenizer_encode(base_tok, text, text_len, true, &bids, &bn);
    if (st != QC_OK) {
        qc_error_prefix("--base %s/tokenizer.json on %s", base_dir, text_path);
        return st;
    }
    size_t i = 0;
    while (i < n_ids && i < bn && ids[i] == bids[i]) i++;
    if (i < n_ids || i < bn)
        st = qc_fail(QC_ERR_FORMAT,
                     "the tokenizers differ: %s/tokenizer.json and the base's %s/tokenizer.json encode %s "
                     "differently (%zu and %zu tokens, first difference at token %zu: %d vs %d); "
                     "KL divergence needs the same tokens",
                     model_dir, base_dir, text_path, n_ids, bn, i, i < n_ids ? ids[i] : -1, i < bn ? bids[i] : -1);
    free(bids);
    return st;
}

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_eval;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 0, &npos);
    if (rc >= 0) return rc;
    qc_opt *o_model = qc_cli_opt(k_opts, "model"), *o_text = qc_cli_opt(k_opts, "text");
    qc_opt *o_base = qc_cli_opt(k_opts, "base");
    qc_opt *o_seq = qc_cli_opt(k_opts, "seqlen"), *o_maxw = qc_cli_opt(k_opts, "max-windows");
    qc_opt *o_thr = qc_cli_opt(k_opts, "threads");
    bool quiet = qc_cli_opt(k_opts, "quiet")->set, json = qc_cli_opt(k_opts, "json")->set;
    if (!o_model->set) return qc_cli_usage_error(cmd, "--model DIR is required");
    if (!o_text->set) return qc_cli_usage_error(cmd, "--text FILE is required");
    if (o_base->set && !*o_base->str)
        return qc_cli_usage_error(cmd, "--base needs a model directory or hf:// reference");
    long long seqlen = o_seq->set ? o_seq->i : 2048;
    if (seqlen < 2 || seqlen > (1 << 20)) return qc_cli_usage_error(cmd, "--seqlen must be in [2, 1048576]");
    if (o_maxw->set && o_maxw->i < 1) return qc_cli_usage_error(cmd, "--max-windows must be at least 1");
    if (o_thr->set) {
        if (o_thr->i < 1 || o_thr->i > 1024) return qc_cli_usage_error(cmd, "--threads must be in [1, 1024]");
        qc_par_set_threads((int)o_thr->i);
    }
    if (quiet) qc_log_set_level(QC_LOG_WARN);

    qc_model *m = NULL, *base = NULL;
    qc_tokenizer *tok = NULL, *base_tok = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t text_len = 0, n_ids = 0;
    char *model_dir = NULL, *base_dir = NULL;
    qc_status st = open_model("model", o_model->str, &model_dir, &m, &tok);
    if (st == QC_OK && o_base->set) st = open_model("base", o_base->str, &base_dir, &base, &base_tok);
    if (st == QC_OK) st = qc_read_file(o_text->str, MAX_TEXT_BYTES, &text, &text_len);
    if (st != QC_OK) goto out;
    for (const qc_model *x = m; x; x = x == m ? base : NULL)
        if (x->cfg.max_position_embeddings < seqlen)
            QC_LOGW("--seqlen %lld exceeds %s's max_position_embeddings (%d)", seqlen, x->dir,
                    x->cfg.max_position_embeddings);

    double t0 = qc_time_now();
    st = qc_tokenizer_encode(tok, text, text_len, true, &ids, &n_ids);
    if (st != QC_OK) {
        qc_error_prefix("%s", o_text->str);
        goto out;
    }
    double t_tok = qc_time_now() - t0;
    QC_LOGI("model %s: %s, %d layers, hidden %d, vocab %d", o_model->str, m->cfg.arch_name, m->cfg.n_layers,
            m->cfg.hidden_size, m->cfg.vocab_size);
    if (base)
        QC_LOGI("base %s: %s, %d layers, hidden %d, vocab %d", o_base->str, base->cfg.arch_name,
                base->cfg.n_layers, base->cfg.hidden_size, base->cfg.vocab_size);
    QC_LOGI("text %s: %zu bytes -> %zu tokens in %.2f s", o_text->str, text_len, n_ids, t_tok);
    if (base) {
        st = check_same_tokens(model_dir, m, ids, n_ids, base_dir, base, base_tok, o_text->str, text, text_len);
        if (st != QC_OK) goto out;
    }

    qc_progress_bar bar;
    qc_progress_bar_init(&bar, "eval");
    qc_eval_opts eo = {.seqlen = (int)seqlen, .max_windows = o_maxw->set ? (int)o_maxw->i : 0,
                       .progress = quiet ? NULL : qc_progress_bar_cb, .user = &bar};
    qc_eval_cmp_result c = {0};
    qc_eval_result *r = &c.model;
    st = base ? qc_eval_compare(m, base, ids, n_ids, &eo, &c) : qc_eval_perplexity(m, ids, n_ids, &eo, r);
    if (!quiet) qc_progress_bar_done(&bar);
    if (st != QC_OK) goto out;
    QC_LOGI("%d windows x %lld tokens%s, %.1f s, %.0f tokens/s, peak RSS %.1f MiB", r->windows, seqlen,
            base ? " through both models" : "", r->seconds, r->tokens_per_s,
            (double)qc_peak_rss() / (1024.0 * 1024.0));
    if (base) {
        QC_LOGI("KL(base || model) over %lld tokens: mean %.6g, p99 %.6g, max %.6g nats", (long long)r->predicted,
                c.kl, c.kl_p99, c.kl_max);
        printf("base-perplexity: %.6f\n", c.base.ppl);
        printf("kl-divergence: %.6g\n", c.kl);
        printf("top1-agreement: %.6f\n", c.top1_agreement);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o_model->str);
        if (base) cJSON_AddStringToObject(j, "base", o_base->str);
        cJSON_AddStringToObject(j, "text", o_text->str);
        cJSON_AddNumberToObject(j, "seqlen", (double)seqlen);
        cJSON_AddNumberToObject(j, "windows", r->windows);
        cJSON_AddNumberToObject(j, "text_tokens", (double)r->text_tokens);
        cJSON_AddNumberToObject(j, "predicted", (double)r->predicted);
        cJSON_AddNumberToObject(j, "ppl", r->ppl);
        cJSON_AddNumberToObject(j, "ppl_tokens", r->ppl_tokens);
        cJSON_AddNumberToObject(j, "top1", r->top1);
        if (base) {
            cJSON_AddNumberToObject(j, "base_ppl", c.base.ppl);
            cJSON_AddNumberToObject(j, "base_ppl_tokens", c.base.ppl_tokens);
            cJSON_AddNumberToObject(j, "base_top1", c.base.top1);
            cJSON_AddNumberToObject(j, "kl_divergence", c.kl);
            cJSON_AddNumberToObject(j, "kl_max", c.kl_max);
            cJSON_AddNumberToObject(j, "kl_p99", c.kl_p99);
            cJSON_AddNumberToObject(j, "top1_agreement", c.top1_agreement);
        }
        cJSON_AddNumberToObject(j, "seconds", r->seconds);
        cJSON_AddNumberToObject(j, "tokens_per_s", r->tokens_per_s);
        cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)qc_peak_rss());
        char *s = cJSON_PrintUnformatted(j);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    }
    printf("perplexity: %.6f\n", r->ppl);
out:
    free(model_dir);
    free(base_dir);
    free(ids);
    free(text);
    qc_tokenizer_free(tok);
    qc_tokenizer_free(base_tok);
    qc_model_free(m);
    qc_model_free(base);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
