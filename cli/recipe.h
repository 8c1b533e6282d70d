/*
 * recipe.h - one YAML file that describes a whole qcal run: model, output, method and its settings,
 * calibration sources and sampling, export format, evaluation texts. Users keep, diff and rerun it.
 *
 * Keys are the long command-line flag names with '_' for '-'; command-line flags override the file
 * (qc_recipe_set with the flag's name and text). Parsing is strict: an unknown key, a wrong type or
 * a value outside its allowed set is QC_ERR_FORMAT with "<file>:<line>:<col>: " and what is allowed.
 *
 *   qc_recipe r;
 *   qc_recipe_init(&r);                                  // every default
 *   if (qc_recipe_load(&r, "run.yaml")) die(qc_last_error());
 *   if (qc_recipe_set(&r, "bits", "3", "--bits")) die(qc_last_error());   // a flag overrides
 *   if (qc_recipe_validate(&r)) die(qc_last_error());    // cross-field checks (awq format is 4-bit, ...)
 *   char hash[65]; qc_recipe_hash(&r, hash);
 *   qc_recipe_free(&r);
 *
 * Ownership: the recipe owns every string in it (qc_recipe_free releases them).
 */
#ifndef QC_RECIPE_H
#define QC_RECIPE_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QC_RECIPE_MAX_SOURCES 64
#define QC_RECIPE_MAX_EVALS   16

typedef struct qc_calib_source {
    char  *path;     /* local file or hf://datasets/... reference */
    char  *format;   /* "auto" (default), "text", "jsonl", "json", "parquet" */
    char  *field;    /* JSON key / Parquet column, default "text" */
    char  *split;    /* text files: "line" (default), "paragraph", "file" */
    double weight;   /* relative share of the samples in a mixture, > 0, default 1 */
} qc_calib_source;

typedef struct qc_eval_text {
    char *text;      /* file to measure perplexity on */
    int   seqlen;    /* 0 = the recipe's seqlen */
} qc_eval_text;

typedef struct qc_recipe {
    char  *model;            /* directory or hf://org/name (required to quantize) */
    char  *out;              /* output directory (required to quantize) */
    char  *method;           /* "gptq" (default), "awq", "rtn" */
    int    bits;             /* 2, 3, 4 (default), 8 */
    int    group_size;       /* 32, 64, 128 (default), -1 (one group per row); any positive multiple of 8 too */
    bool   sym;              /* default true (GPTQ); qc_recipe_validate makes AWQ asym */
    bool   act_order;        /* default false */
    bool   static_groups;    /* default false */
    bool   true_sequential;  /* default true */
    double damp;             /* fraction of the mean Hessian diagonal, (0, 1), default 0.01 */
    qc_calib_source calib[QC_RECIPE_MAX_SOURCES];
    int    n_calib;          /* default: one source, the C4 shard of the GPTQ paper */
    char  *sampling;         /* "gptq" (random windows of random long documents; default) or "awq"
                                (documents concatenated and cut into blocks) */
    int    nsamples;         /* default 128 */
    int    seqlen;           /* default 2048 */
    uint64_t seed;           /* default 0 */
    char  *format;           /* "gptq" (default), "gptq_v2", "awq" */
    char  *device;           /* "cpu" (default), "cuda", "cuda:N" */
    qc_eval_text eval[QC_RECIPE_MAX_EVALS];
    int    n_eval;
    uint64_t set_mask;       /* bit per key (QC_RK_*) given explicitly, by file or flag */
} qc_recipe;

/* Fills every default (the C4 shard as the one calibration source). */
void      qc_recipe_init(qc_recipe *r);
void      qc_recipe_free(qc_recipe *r);
/* Reads a YAML file over the current values (keys absent from the file keep theirs). */
qc_status qc_recipe_load(qc_recipe *r, const char *path);
qc_status qc_recipe_load_string(qc_recipe *r, const char *yaml, size_t len, const char *what);
/* Sets one scalar key from text, as a command-line flag does: key is the recipe spelling
 * ("group_size") or the flag spelling ("group-size"). "calib" replaces all sources with one path;
 * "eval" appends a text. `origin` names the flag in messages. */
qc_status qc_recipe_set(qc_recipe *r, const char *key, const char *value, const char *origin);
/* Cross-field checks; also settles method-dependent defaults (AWQ: asym, format awq at 4 bits). */
qc_status qc_recipe_validate(qc_recipe *r);
/* Canonical form: JSON with sorted keys and every value resolved (caller frees). Two recipes with
 * the same meaning have the same canonical text, however the YAML was written. */
char     *qc_recipe_canonical(const qc_recipe *r);
/* SHA-256 of the canonical form, 64 hex digits. */
void      qc_recipe_hash(const qc_recipe *r, char out[65]);
/* A commented YAML recipe listing every key with its default. */
const char *qc_recipe_example(void);

#ifdef __cplusplus
}
#endif
#endif /* QC_RECIPE_H */
