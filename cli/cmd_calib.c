/* qcal calib: resolve and sample a recipe's calibration data without touching the model's weights. */
#include <stdlib.h>
#include <string.h>

#include "run_setup.h"
#include "token_file.h"
#include "tokenizer.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_calib = {
    .name = "calib",
    .summary = "sample a recipe's calibration data and print its token hash",
    .usage = "qcal calib [RECIPE.yaml] [--tokenizer PATH] [recipe flags]",
    .description =
        "Resolves the calibration sources (local files or hf:// references), samples token windows the\n"
        "way `qcal quantize` will, and prints per-source counts, a preview and 'token-sha256: <hex>',\n"
        "so two runs can prove they saw the same data. The tokenizer comes from the recipe's model\n"
        "directory (tokenizer.json) unless --tokenizer is given; no weights are read. --save-tokens FILE\n"
        "keeps the windows for `qcal quantize --calib-tokens FILE` (the same recipe, sampled once).",
    .run = run,
};

static qc_opt k_opts[] = {
    QC_RECIPE_FLAGS,
    {.name = "tokenizer", .kind = QC_OPT_STR, .metavar = "PATH", .help = "tokenizer.json or a directory holding one"},
    {.name = "preview", .kind = QC_OPT_INT, .metavar = "N", .help = "characters of each previewed window (default 160)"},
    {.name = "save", .kind = QC_OPT_STR, .metavar = "FILE", .help = "also write the windows as int32 little-endian token ids"},
    {.name = "save-tokens", .kind = QC_OPT_STR, .metavar = "FILE", .help = "also write the windows as a token file (datasets/token_file.h) for `qcal quantize --calib-tokens`"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_calib;
    qc_recipe r;
    int rc = qc_run_recipe(cmd, k_opts, argc, argv, &r);
    if (rc >= 0) return rc;
    qc_opt *o_tok = qc_cli_opt(k_opts, "tokenizer");
    if (!o_tok->set && !r.model) {
        qc_recipe_free(&r);
        return qc_cli_usage_error(cmd, "no tokenizer: give --tokenizer PATH or a model in the recipe/--model");
    }
    double t_start = qc_time_now();
    qc_tokenizer *tok = NULL;
    qc_calib_set set;
    memset(&set, 0, sizeof set);
    char *dir = NULL, *dec = NULL;
    qc_status st = QC_OK;
    if (o_tok->set) {
        st = qc_tokenizer_load(o_tok->str, &tok);
    } else {
        st = qc_run_resolve_model(r.model, &dir);
        if (st == QC_OK) st = qc_tokenizer_load(dir, &tok);
    }
    if (st == QC_OK) st = qc_run_calib(&r, tok, false, &set);
    if (st == QC_OK) {
        char hash[65];
        qc_recipe_hash(&r, hash);
        printf("recipe-sha256: %s\n", hash);
        for (int i = 0; i < set.n_src; i++)
            printf("source %d: %s: %lld documents, %lld eligible, %d windows, %lld tokens\n", i + 1, r.calib[i].path,
                   (long long)set.src[i].docs, (long long)set.src[i].eligible, set.src[i].samples,
                   (long long)set.src[i].tokens);
        printf("windows: %d x %d = %lld tokens (%s sampling, seed %llu)\n", set.nsamples, set.seqlen,
               (long long)set.nsamples * set.seqlen, r.sampling, (unsigned long long)r.seed);
        int plen = qc_cli_opt(k_opts, "preview")->set ? (int)qc_cli_opt(k_opts, "preview")->i : 160;
        for (int w = 0; w < set.nsamples && w < 3 && plen > 0; w++) {
            size_t len;
            int n = set.seqlen < 64 ? set.seqlen : 64;
            if (qc_tokenizer_decode(tok, set.ids + (size_t)w * set.seqlen, (size_t)n, false, &dec, &len) == QC_OK) {
                for (size_t i = 0; i < len; i++)
                    if (dec[i] == '\n' || dec[i] == '\r' || dec[i] == '\t') dec[i] = ' ';
                printf("preview %d: %.*s\n", w, plen, dec);
                free(dec);
                dec = NULL;
            }
        }
        qc_opt *o_save = qc_cli_opt(k_opts, "save");
        if (o_save->set) {
            size_t n = (size_t)set.nsamples * set.seqlen;
            uint8_t *b = malloc(n * 4 + 1);
            if (!b) st = qc_fail(QC_ERR_NOMEM, "out of memory");
            for (size_t i = 0; b && i < n; i++) {
                uint32_t v = (uint32_t)set.ids[i];
                b[4 * i] = (uint8_t)v; b[4 * i + 1] = (uint8_t)(v >> 8);
                b[4 * i + 2] = (uint8_t)(v >> 16); b[4 * i + 3] = (uint8_t)(v >> 24);
            }
            if (b) st = qc_write_file_atomic(o_save->str, b, n * 4);
            free(b);
        }
        qc_opt *o_tokens = qc_cli_opt(k_opts, "save-tokens");
        if (st == QC_OK && o_tokens->set) {
            qc_token_file_info info = {.sampling = strcmp(r.sampling, "awq") == 0 ? QC_SAMPLING_AWQ : QC_SAMPLING_GPTQ,
                                       .nsamples = r.nsamples, .seed = r.seed};
            st = qc_token_file_write(o_tokens->str, &set, &info);
        }
        fprintf(stderr, "calib: %.1f s, peak RSS %.1f MiB\n", qc_time_now() - t_start,
                (double)qc_peak_rss() / 1048576.0);
        if (st == QC_OK) printf("token-sha256: %s\n", set.sha256);
    }
    qc_calib_set_free(&set);
    qc_tokenizer_free(tok);
    free(dir);
    qc_recipe_free(&r);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
