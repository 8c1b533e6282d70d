/* qcal recipe: check a run recipe, print its resolved values and hash; print the commented example. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "recipe.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_recipe = {
    .name = "recipe",
    .summary = "check a run recipe (YAML) and print its resolved values and hash",
    .usage = "qcal recipe FILE [--json | --hash-text] [overrides]  |  qcal recipe --example",
    .description =
        "Loads FILE, applies the override flags (they win over the file), checks every value and the\n"
        "combinations (format gptq is symmetric only, awq is 4-bit only, ...), settles the method's\n"
        "defaults and prints the resolved recipe as YAML, then 'recipe-sha256: <hex>' as the last line.\n"
        "--json prints the canonical JSON (sorted keys) instead of the YAML. The hash is SHA-256 of the\n"
        "canonical JSON without out, device and eval (--hash-text prints exactly the hashed text).\n"
        "Relative paths in FILE are relative to FILE's directory; paths in flags to the current one.\n"
        "--example prints a commented recipe with every key and its default.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "example", .kind = QC_OPT_FLAG, .help = "print a commented recipe with every default, and exit"},
    {.name = "json", .kind = QC_OPT_FLAG, .help = "print the canonical JSON instead of the resolved YAML"},
    {.name = "hash-text", .kind = QC_OPT_FLAG, .help = "print the exact text that is hashed instead"},
    {.name = "model", .kind = QC_OPT_STR, .metavar = "DIR", .help = "model directory or hf://org/name"},
    {.name = "out", .kind = QC_OPT_STR, .metavar = "DIR", .help = "output directory"},
    {.name = "method", .kind = QC_OPT_STR, .metavar = "NAME", .help = "gptq, awq, rtn or awq+gptq"},
    {.name = "bits", .kind = QC_OPT_STR, .metavar = "N", .help = "2, 3, 4 or 8"},
    {.name = "group-size", .kind = QC_OPT_STR, .metavar = "N", .help = "-1 or a positive multiple of 8"},
    {.name = "sym", .kind = QC_OPT_FLAG, .help = "symmetric quantization"},
    {.name = "asym", .kind = QC_OPT_FLAG, .help = "asymmetric quantization (zero points)"},
    {.name = "act-order", .kind = QC_OPT_FLAG, .help = "gptq: columns by decreasing Hessian diagonal"},
    {.name = "no-act-order", .kind = QC_OPT_FLAG, .help = "gptq: columns in order"},
    {.name = "static-groups", .kind = QC_OPT_FLAG, .help = "gptq: group parameters fixed before the sweep"},
    {.name = "no-static-groups", .kind = QC_OPT_FLAG, .help = "gptq: group parameters from updated weights"},
    {.name = "true-sequential", .kind = QC_OPT_FLAG, .help = "gptq: sub-layers one after another"},
    {.name = "no-true-sequential", .kind = QC_OPT_FLAG, .help = "gptq: all sub-layers of a block at once"},
    {.name = "damp", .kind = QC_OPT_STR, .metavar = "X", .help = "gptq dampening in (0, 1)"},
    {.name = "awq-scale", .kind = QC_OPT_STR, .metavar = "F", .help = "awq scale formula: autoawq or llm-awq"},
    {.name = "awq-clip", .kind = QC_OPT_FLAG, .help = "awq: search a clipping range per group"},
    {.name = "no-awq-clip", .kind = QC_OPT_FLAG, .help = "awq: no clipping search"},
    {.name = "mse", .kind = QC_OPT_FLAG, .help = "gptq, awq+gptq, rtn: group params by an MSE grid search"},
    {.name = "no-mse", .kind = QC_OPT_FLAG, .help = "group params from min/max (default)"},
    {.name = "calib", .kind = QC_OPT_STR, .metavar = "PATH", .help = "one calibration source (replaces the recipe's)"},
    {.name = "sampling", .kind = QC_OPT_STR, .metavar = "NAME", .help = "gptq or awq"},
    {.name = "nsamples", .kind = QC_OPT_STR, .metavar = "N", .help = "calibration samples"},
    {.name = "seqlen", .kind = QC_OPT_STR, .metavar = "N", .help = "tokens per calibration sample"},
    {.name = "seed", .kind = QC_OPT_STR, .metavar = "N", .help = "sampling seed (0 .. 2^64-1)"},
    {.name = "format", .kind = QC_OPT_STR, .metavar = "NAME", .help = "gptq, gptq_v2 or awq"},
    {.name = "device", .kind = QC_OPT_STR, .metavar = "DEV", .help = "cpu, cuda or cuda:N"},
    {.name = "eval", .kind = QC_OPT_STR, .metavar = "PATH", .help = "one more text to evaluate perplexity on"},
    {0},
};

/* Flags with a value, then on/off pairs: recipe key, the flag that sets true, the one that sets false. */
static const char *const k_value_flags[] = {"model", "out", "method", "bits", "group-size", "damp", "calib",
                                            "sampling", "nsamples", "seqlen", "seed", "format", "device", "eval",
                                            "awq-scale", NULL};
static const struct { const char *key, *on, *off; } k_bool_flags[] = {
    {"sym", "sym", "asym"},
    {"act_order", "act-order", "no-act-order"},
    {"static_groups", "static-groups", "no-static-groups"},
    {"true_sequential", "true-sequential", "no-true-sequential"},
    {"awq_clip", "awq-clip", "no-awq-clip"},
    {"mse", "mse", "no-mse"},
};
#define N_BOOL_FLAGS (sizeof k_bool_flags / sizeof k_bool_flags[0])

static int set_status(const qc_cmd *cmd, qc_status st) {
    if (st == QC_ERR_ARG) {
        fprintf(stderr, "qcal %s: %s\n(see 'qcal %s --help')\n", cmd->name, qc_last_error(), cmd->name);
        return QC_EXIT_USAGE;
    }
    return qc_cli_fail(cmd, st);
}

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_recipe;
    const char *pos[2];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 2, &npos);
    if (rc >= 0) return rc;
    bool json = qc_cli_opt(k_opts, "json")->set, hash_text = qc_cli_opt(k_opts, "hash-text")->set;
    if (qc_cli_opt(k_opts, "example")->set) {
        for (const qc_opt *o = k_opts; o->name; o++)
            if (o->set && strcmp(o->name, "example") != 0)
                return qc_cli_usage_error(cmd, "--example takes no other option (got --%s)", o->name);
        if (npos) return qc_cli_usage_error(cmd, "--example takes no FILE");
        fputs(qc_recipe_example(), stdout);
        return QC_EXIT_OK;
    }
    if (npos != 1) return qc_cli_usage_error(cmd, npos ? "expected one recipe FILE" : "a recipe FILE is required (or --example)");
    if (json && hash_text) return qc_cli_usage_error(cmd, "--json and --hash-text exclude each other");
    for (size_t i = 0; i < N_BOOL_FLAGS; i++)
        if (qc_cli_opt(k_opts, k_bool_flags[i].on)->set && qc_cli_opt(k_opts, k_bool_flags[i].off)->set)
            return qc_cli_usage_error(cmd, "--%s and --%s exclude each other", k_bool_flags[i].on, k_bool_flags[i].off);

    qc_recipe r;
    qc_recipe_init(&r);
    qc_status st = qc_recipe_load(&r, pos[0]);
    if (st != QC_OK) goto out;
    char origin[64];
    for (const char *const *f = k_value_flags; *f; f++) {
        const qc_opt *o = qc_cli_opt(k_opts, *f);
        if (!o->set) continue;
        snprintf(origin, sizeof origin, "--%s", o->name);
        if ((st = qc_recipe_set(&r, o->name, o->str, origin)) != QC_OK) {
            qc_recipe_free(&r);
            return set_status(cmd, st);
        }
    }
    for (size_t i = 0; i < N_BOOL_FLAGS; i++) {
        bool on = qc_cli_opt(k_opts, k_bool_flags[i].on)->set, off = qc_cli_opt(k_opts, k_bool_flags[i].off)->set;
        if (!on && !off) continue;
        snprintf(origin, sizeof origin, "--%s", on ? k_bool_flags[i].on : k_bool_flags[i].off);
        if ((st = qc_recipe_set(&r, k_bool_flags[i].key, on ? "true" : "false", origin)) != QC_OK) {
            qc_recipe_free(&r);
            return set_status(cmd, st);
        }
    }
    if ((st = qc_recipe_validate(&r)) != QC_OK) goto out;

    char hash[65];
    qc_recipe_hash(&r, hash);
    char *text = json ? qc_recipe_canonical(&r) : hash_text ? qc_recipe_hash_text(&r) : qc_recipe_to_yaml(&r);
    if (!text || !hash[0]) {
        free(text);
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (json || hash_text) printf("%s\n", text);
    else fputs(text, stdout);
    free(text);
    printf("recipe-sha256: %s\n", hash);
out:
    qc_recipe_free(&r);
    return st == QC_OK ? QC_EXIT_OK : qc_cli_fail(cmd, st);
}
