/*
 * run_setup.h - what `qcal quantize` and `qcal calib` share: building a recipe from a file plus
 * command-line flags, and turning its calibration sources into token windows.
 */
#ifndef QC_RUN_SETUP_H
#define QC_RUN_SETUP_H

#include "calib_data.h"
#include "cli.h"
#include "recipe.h"

/* Recipe flags every run command accepts (terminated by {0}); copy into a command's table. */
#define QC_RECIPE_FLAGS                                                                                          \
    {.name = "model", .kind = QC_OPT_STR, .metavar = "DIR|hf://ORG/NAME", .help = "model to quantize"},          \
    {.name = "out", .kind = QC_OPT_STR, .metavar = "DIR", .help = "output checkpoint directory"},               \
    {.name = "method", .kind = QC_OPT_STR, .metavar = "M", .help = "gptq (default), awq, rtn or awq+gptq (AWQ's scales and clipping, then GPTQ on the scaled inputs' Hessians instead of rounding; as in AWQ the next layer's input is the FP layer's output)"}, \
    {.name = "bits", .kind = QC_OPT_STR, .metavar = "N", .help = "2, 3, 4 (default) or 8"},                      \
    {.name = "group-size", .kind = QC_OPT_STR, .metavar = "N", .help = "32, 64, 128 (default) or -1"},          \
    {.name = "sym", .kind = QC_OPT_FLAG, .help = "symmetric quantization (default for gptq)"},                  \
    {.name = "asym", .kind = QC_OPT_FLAG, .help = "asymmetric quantization with zero points (needs --format gptq_v2)"}, \
    {.name = "act-order", .kind = QC_OPT_FLAG, .help = "GPTQ: quantize columns in decreasing Hessian-diagonal order (desc_act)"}, \
    {.name = "static-groups", .kind = QC_OPT_FLAG, .help = "GPTQ: fix group parameters before the sweep"},    \
    {.name = "no-true-sequential", .kind = QC_OPT_FLAG, .help = "GPTQ: statistics of all linears from the unquantized layer"}, \
    {.name = "damp", .kind = QC_OPT_STR, .metavar = "X", .help = "GPTQ damping, fraction of mean diag(H) (default 0.01)"}, \
    {.name = "awq-scale", .kind = QC_OPT_STR, .metavar = "F", .help = "AWQ scale formula: best (default: both formulas tried, per scale group the lower loss; on the GPU too), autoawq (duo, x^r/w^(1-r)) or llm-awq (x^r)"}, \
    {.name = "awq-search-samples", .kind = QC_OPT_STR, .metavar = "N", .help = "AWQ: run the scale search's attention/MLP forwards on N evenly strided calibration windows (default 12; x_mean, o_proj and down_proj use all; AutoAWQ's clip search subsamples likewise); 0 or all: every window"}, \
    {.name = "no-awq-clip", .kind = QC_OPT_FLAG, .help = "AWQ: skip the clipping search"}, \
    {.name = "moe-min-tokens", .kind = QC_OPT_STR, .metavar = "N", .help = "MoE: experts routed fewer calibration tokens than N are handled per --moe-low-coverage (default auto: the model's hidden_size); each expert's count is in qcal_report.json"}, \
    {.name = "moe-low-coverage", .kind = QC_OPT_STR, .metavar = "P", .help = "MoE, for such experts: all-tokens (default: Hessians from every calibration token sent through the expert; the layer output keeps the real routing) or rtn (round to nearest)"}, \
    {.name = "mse", .kind = QC_OPT_FLAG, .help = "GPTQ, awq+gptq, RTN: group params by the GPTQ reference's MSE grid search (norm 2.4, 100 steps, shrink to 0.2; CPU only)"}, \
    {.name = "calib", .kind = QC_OPT_STR, .metavar = "FILE|hf://...", .help = "calibration source (replaces the recipe's)"}, \
    {.name = "sampling", .kind = QC_OPT_STR, .metavar = "P", .help = "gptq (random windows, default) or awq (concatenated blocks)"}, \
    {.name = "nsamples", .kind = QC_OPT_STR, .metavar = "N", .help = "calibration windows (default 128)"},      \
    {.name = "seqlen", .kind = QC_OPT_STR, .metavar = "N", .help = "tokens per window (default 2048)"},         \
    {.name = "seed", .kind = QC_OPT_STR, .metavar = "N", .help = "sampling seed (default 0)"},                  \
    {.name = "format", .kind = QC_OPT_STR, .metavar = "F", .help = "gptq (default), gptq_v2 or awq"},          \
    {.name = "device", .kind = QC_OPT_STR, .metavar = "D", .help = "cpu (default) or cuda[:N]: the whole pipeline on GPU N (a -DQCAL_CUDA=ON build)"}

/* Parses argv against opts (one optional positional: the recipe file) and builds the recipe: defaults,
 * then the file, then every flag that is set, then validation. Returns -1 with *r filled, or the exit
 * status to return (help shown, usage or input error printed; *r is then freed). */
int qc_run_recipe(const qc_cmd *cmd, qc_opt *opts, int argc, char **argv, qc_recipe *r);

/* Samples the recipe's calibration sources with tok; prints per-source counts to stderr. */
qc_status qc_run_calib(const qc_recipe *r, const qc_tokenizer *tok, bool quiet, qc_calib_set *set);

/* Reads the windows of `--calib-tokens FILE` (token_file.h) in place of sampling, and checks that they
 * are the recipe's: the same sampling protocol, nsamples, seqlen and seed (the sources are the caller's
 * word: the experiment runner writes the file from the same resolved recipe). The SHA-256 is verified by
 * the reader; ids against the vocabulary are the caller's check (qc_run_calib_check_vocab). */
qc_status qc_run_calib_load(const qc_recipe *r, const char *path, bool quiet, qc_calib_set *set);
/* Every id of set below vocab; the error names what (path) the windows came from. */
qc_status qc_run_calib_check_vocab(const qc_calib_set *set, int vocab, const char *what);

/* Resolves a model reference (hf:// or a directory) to a local directory (caller frees). */
qc_status qc_run_resolve_model(const char *ref, char **dir);

#endif
