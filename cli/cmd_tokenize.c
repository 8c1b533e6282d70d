/* qcal tokenize: run the tokenizer on a text (debugging and token counts). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_tokenize = {
    .name = "tokenize",
    .summary = "encode a text with a tokenizer.json and print ids or a count",
    .usage = "qcal tokenize --tokenizer PATH (--text FILE | --string S) [--count] [--no-special]",
    .description = "PATH is a tokenizer.json or a model directory holding one.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "tokenizer", .kind = QC_OPT_STR, .metavar = "PATH", .help = "tokenizer.json or model directory"},
    {.name = "text", .kind = QC_OPT_STR, .metavar = "FILE", .help = "encode the contents of FILE"},
    {.name = "string", .kind = QC_OPT_STR, .metavar = "S", .help = "encode the string S"},
    {.name = "count", .kind = QC_OPT_FLAG, .help = "print only 'tokens: <count>'"},
    {.name = "no-special", .kind = QC_OPT_FLAG, .help = "do not add BOS/EOS (add_special_tokens=False)"},
    {.name = "decode", .kind = QC_OPT_FLAG, .help = "also print the decoded text"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_tokenize;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 0, &npos);
    if (rc >= 0) return rc;
    qc_opt *o_tok = qc_cli_opt(k_opts, "tokenizer"), *o_text = qc_cli_opt(k_opts, "text");
    qc_opt *o_str = qc_cli_opt(k_opts, "string");
    if (!o_tok->set) return qc_cli_usage_error(cmd, "--tokenizer PATH is required");
    if (o_text->set == o_str->set) return qc_cli_usage_error(cmd, "give exactly one of --text FILE and --string S");
    qc_tokenizer *tok = NULL;
    char *buf = NULL, *dec = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n = 0, dlen = 0;
    qc_status st = qc_tokenizer_load(o_tok->str, &tok);
    if (st == QC_OK) {
        if (o_text->set) {
            st = qc_read_file(o_text->str, 0, &buf, &len);
        } else {
            buf = qc_strdup(o_str->str);
            len = strlen(o_str->str);
        }
    }
    if (st == QC_OK) st = qc_tokenizer_encode(tok, buf, len, !qc_cli_opt(k_opts, "no-special")->set, &ids, &n);
    if (st == QC_OK) {
        if (qc_cli_opt(k_opts, "count")->set) {
            printf("tokens: %zu\n", n);
        } else {
            for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
            printf("\n");
        }
        if (qc_cli_opt(k_opts, "decode")->set) {
            st = qc_tokenizer_decode(tok, ids, n, true, &dec, &dlen);
            if (st == QC_OK) printf("%s\n", dec);
        }
    }
    free(dec);
    free(ids);
    free(buf);
    qc_tokenizer_free(tok);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
