/*
 * recipe.h - one YAML file that describes a whole qcal run: model, output, method and its settings,
 * calibration sources and sampling, export format, evaluation texts. Users keep, diff and rerun it.
 *
 * Keys are the long command-line flag names with '_' for '-'; command-line flags override the file
 * (qc_recipe_set with the flag's name and text). Parsing is strict: an unknown key, a wrong type or
 * a value outside its allowed set is QC_ERR_FORMAT with "<file>:<line>:<col>: " and what is allowed.
 * `qcal recipe --example` (qc_recipe_example()) prints every key with its default and meaning.
 *
 *   qc_recipe r;
 *   qc_recipe_init(&r);                                  // every default
 *   if (qc_recipe_load(&r, "run.yaml")) die(qc_last_error());
 *   if (qc_recipe_set(&r, "bits", "3", "--bits")) die(qc_last_error());   // a flag overrides
 *   if (qc_recipe_validate(&r)) die(qc_last_error());    // cross-field checks (awq format is 4-bit, ...)
 *   char hash[65]; qc_recipe_hash(&r, hash);
 *   qc_recipe_free(&r);
 *
 * The YAML accepted: one document whose top level is a mapping (an empty file is an empty recipe).
 * Anchors, aliases, tags and duplicate keys are errors; files are at most QC_RECIPE_MAX_BYTES.
 * Integers and booleans must be plain scalars ("4" in quotes is a string, not a number); booleans
 * are true/false (YAML 1.2), not yes/no. String values may be plain or quoted.
 *
 * Paths: relative paths inside a recipe file (model, out, calib paths, eval texts) are relative to
 * the directory of the file; paths given to qc_recipe_set (flags) and in qc_recipe_load_string text
 * are relative to the current directory. Every local path is stored absolute, with "." and repeated
 * '/' removed (".." is kept: it is not resolved lexically because of symbolic links). hf://
 * references are stored as written. '~' is not expanded (a leading '~' is an error).
 *
 * Method-dependent defaults, settled by qc_recipe_validate for keys not set explicitly (set_mask):
 *   sym       true; false for method awq (AWQ keeps zero points)
 *   sampling  "gptq"; "awq" for method awq (documents concatenated and cut into blocks, as AutoAWQ)
 *   seqlen    2048 (GPTQ paper); 512 for method awq (AutoAWQ's max_calib_seq_len)
 *   format    "gptq" when sym; else "awq" for method awq at 4 bits with groups (and no act-order
 *             without static groups), else "gptq_v2" (asymmetric results of any method, any width)
 *   nsamples  128 for every method (AutoAWQ's max_calib_samples is 128 too)
 * The calibration source defaults to the C4 shard of the GPTQ paper for every method; AutoAWQ's
 * pile-val must be named explicitly. A field assigned directly (not through qc_recipe_set or a file)
 * must also get its bit in set_mask, or validate may replace sym/sampling/seqlen/format.
 *
 * Canonical form and hash: qc_recipe_canonical() is compact JSON with keys sorted (bytewise) at every
 * level, holding every resolved value plus "qcal_recipe": QC_RECIPE_VERSION; integers are exact
 * (the seed too), reals print as the shortest of %.15g/%.17g that reads back to the same double.
 * The hash (qc_recipe_hash) is SHA-256 of qc_recipe_hash_text(): the same JSON WITHOUT "out",
 * "device" and "eval", which do not change the quantized weights (where they go, what computes them,
 * what is measured afterwards). Paths are hashed as resolved (absolute), so the same recipe with a
 * relative local model path hashes differently in another directory; hf:// references do not.
 *
 * A calibration source's "holdout" enters the canonical JSON (and so the hash) only when it is set
 * (>= 2), so recipes written before the key existed keep their hashes.
 *
 * Ownership: the recipe owns every string in it (qc_recipe_free releases them). Enumerated values
 * (method, sampling, format, device "cpu"/"cuda", calib format/split) and the defaults point to the
 * library's constant strings; change values with qc_recipe_set rather than by assignment. A recipe
 * is not copied by value (two copies would free the same strings).
 */
#ifndef QC_RECIPE_H
#define QC_RECIPE_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QC_RECIPE_MAX_SOURCES 64
#define QC_RECIPE_MAX_EVALS   16
#define QC_RECIPE_MAX_BYTES   ((size_t)1 << 20)  /* a recipe file larger than this is refused */
#define QC_RECIPE_VERSION     1                  /* "qcal_recipe" in the canonical JSON */
#define QC_RECIPE_AWQ_SEARCH_SAMPLES 12           /* awq_search_samples' default (0: every window) */

/* One bit per key in qc_recipe.set_mask (QC_RK_BIT(QC_RK_BITS)); also indexes qc_recipe.where. */
typedef enum qc_recipe_key {
    QC_RK_MODEL = 0, QC_RK_OUT = 1, QC_RK_METHOD = 2, QC_RK_BITS = 3, QC_RK_GROUP_SIZE = 4, QC_RK_SYM = 5,
    QC_RK_ACT_ORDER = 6, QC_RK_STATIC_GROUPS = 7, QC_RK_TRUE_SEQUENTIAL = 8, QC_RK_DAMP = 9,
    QC_RK_CALIB = 10, QC_RK_SAMPLING = 11, QC_RK_NSAMPLES = 12, QC_RK_SEQLEN = 13, QC_RK_SEED = 14,
    QC_RK_FORMAT = 15, QC_RK_DEVICE = 16, QC_RK_EVAL = 17, QC_RK_AWQ_SCALE = 18, QC_RK_AWQ_CLIP = 19,
    QC_RK_AWQ_SEARCH_SAMPLES = 20,
    QC_RK_MSE = 21,
    QC_RK_MOE_MIN_TOKENS = 22, QC_RK_MOE_LOW_COVERAGE = 23,
    QC_RK_COUNT
} qc_recipe_key;
#define QC_RK_BIT(k) ((uint64_t)1 << (k))

typedef struct qc_calib_source {
    char  *path;     /* local file or hf://datasets/... reference */
    char  *format;   /* "auto" (default), "text", "jsonl", "json", "parquet" */
    char  *field;    /* JSON key / Parquet column, default "text" */
    char  *split;    /* text files: "line" (default), "paragraph", "file" */
    double weight;   /* relative share of the samples in a mixture, > 0, default 1 */
    int    holdout;  /* 0 (default): every document; N >= 2: documents i % N == N - 1 are never sampled
                        (kept for evaluation, see docs.h); in the hash only when set */
} qc_calib_source;

typedef struct qc_eval_text {
    char *text;      /* file to measure perplexity on */
    int   seqlen;    /* 0 = the recipe's seqlen (shown resolved in the canonical JSON and YAML);
                        note that the recipe's seqlen is 512 for AWQ, the papers evaluate at 2048 */
} qc_eval_text;

typedef struct qc_recipe {
    char  *model;            /* directory or hf://org/name (required to quantize) */
    char  *out;              /* output directory (required to quantize) */
    char  *method;           /* "gptq" (default), "awq", "rtn", "awq+gptq" (AWQ scales, then the GPTQ solver) */
    int    bits;             /* 2, 3, 4 (default), 8 */
    int    group_size;       /* 32, 64, 128 (default), -1 (one group per row); any positive multiple of 8 too */
    bool   sym;              /* default true (GPTQ); qc_recipe_validate makes AWQ asym */
    bool   act_order;        /* default false */
    bool   static_groups;    /* default false */
    bool   true_sequential;  /* default true */
    char  *awq_scale;        /* awq scale formula: "best" (default: per group the lower loss of the two),
                                "autoawq" (x^r / w^(1-r)) or "llm-awq" (x^r) */
    int    awq_search_samples; /* awq: windows the scale search's attention/MLP forwards run on, evenly
                                strided; 0 (also written "all"): every window. Default
                                QC_RECIPE_AWQ_SEARCH_SAMPLES */
    bool   awq_clip;         /* awq clipping search, default true */
    bool   mse;              /* gptq, awq+gptq, rtn: group params by the reference's MSE grid search (quant.py
                                mse=True), default false; in the hash only when true */
    double damp;             /* fraction of the mean Hessian diagonal, (0, 1), default 0.01 */
    int    moe_min_tokens;   /* MoE: an expert with fewer routed calibration tokens is handled per
                                moe_low_coverage; -1 (written "auto", default): the model's hidden_size */
    char  *moe_low_coverage; /* "all-tokens" (default: its Hessians from every calibration token sent
                                through it) or "rtn" (round to nearest) */
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
    char  *source;           /* the recipe file it was loaded from (NULL: none); not part of the hash */
    uint64_t set_mask;       /* bit per key (QC_RK_*) given explicitly, by file or flag */
    char  *where[QC_RK_COUNT]; /* where each explicit value came from, for messages:
                                  "<file>:<line>:<col>" or the flag ("--bits"); NULL for defaults */
} qc_recipe;

/* Fills every default (the C4 shard as the one calibration source). */
void      qc_recipe_init(qc_recipe *r);
void      qc_recipe_free(qc_recipe *r);
/* Reads a YAML file over the current values (keys absent from the file keep theirs; a calib or eval
 * list in the file replaces the current one). On error the recipe holds a mix of old and new values
 * and must only be freed. */
qc_status qc_recipe_load(qc_recipe *r, const char *path);
qc_status qc_recipe_load_string(qc_recipe *r, const char *yaml, size_t len, const char *what);
/* Sets one scalar key from text, as a command-line flag does: key is the recipe spelling
 * ("group_size") or the flag spelling ("group-size"). "calib" replaces all sources with one path;
 * "eval" appends a text. `origin` names the flag in messages (NULL: the key). Bad values are
 * QC_ERR_ARG (a usage error on the command line). Booleans take "true"/"false". */
qc_status qc_recipe_set(qc_recipe *r, const char *key, const char *value, const char *origin);
/* Cross-field checks; also settles method-dependent defaults (AWQ: asym, format awq at 4 bits).
 * Idempotent. Conflicts are QC_ERR_FORMAT naming both fields and where each was set. */
qc_status qc_recipe_validate(qc_recipe *r);
/* Canonical form: JSON with sorted keys and every value resolved (caller frees; NULL when out of
 * memory). Two recipes with the same meaning have the same canonical text, however the YAML was
 * written. Call after qc_recipe_validate. */
char     *qc_recipe_canonical(const qc_recipe *r);
/* The text that is hashed: the canonical JSON without "out", "device" and "eval" (caller frees). */
char     *qc_recipe_hash_text(const qc_recipe *r);
/* SHA-256 of qc_recipe_hash_text(), 64 hex digits ("" when out of memory). */
void      qc_recipe_hash(const qc_recipe *r, char out[65]);
/* The resolved recipe as YAML (every key, absolute paths, strings double-quoted) that loads back to
 * the same canonical form from any directory (caller frees; NULL when out of memory). */
char     *qc_recipe_to_yaml(const qc_recipe *r);
/* A commented YAML recipe listing every key with its default. */
const char *qc_recipe_example(void);

/* ---- the YAML reader, for files that embed recipes (`qcal experiment`) ----
 * The same strict reader as recipes: one document, no anchors, aliases, tags; a tree of scalars, lists
 * and mappings (duplicate keys are the embedding parser's to refuse). Errors and every message about a
 * node carry "<what>:<line>:<col>: " of the node. The tree owns its strings; qc_yaml_free frees it. */
typedef struct qc_ynode qc_ynode;
typedef enum { QC_YAML_SCALAR = 0, QC_YAML_SEQ = 1, QC_YAML_MAP = 2 } qc_yaml_kind;
qc_status       qc_yaml_parse(const char *buf, size_t len, const char *what, qc_ynode **root); /* NULL root: empty */
void            qc_yaml_free(qc_ynode *root);
qc_yaml_kind    qc_ynode_kind(const qc_ynode *n);
size_t          qc_ynode_count(const qc_ynode *n);               /* SEQ: items; MAP: pairs; SCALAR: 0 */
const qc_ynode *qc_ynode_item(const qc_ynode *n, size_t i);      /* SEQ item i; MAP: key i */
const qc_ynode *qc_ynode_value(const qc_ynode *n, size_t i);     /* MAP: value of pair i */
const char     *qc_ynode_str(const qc_ynode *n, bool *plain);    /* SCALAR text (NUL-terminated) */
bool            qc_ynode_null(const qc_ynode *n);                /* a plain null scalar (~, null, empty) */
/* "<what>:<line>:<col>" of the node into buf. */
const char     *qc_ynode_where(const qc_ynode *n, const char *what, char *buf, size_t size);
/* Recipe key index (QC_RK_*) of a name in the recipe spelling, -1 when not a key. */
int             qc_recipe_key_find(const char *name);
const char     *qc_recipe_key_name(int key);
/* Applies a recipe mapping (as a recipe file's top level) or one key's value node to r, exactly as
 * qc_recipe_load would: the same checks and messages, located in `what`; relative paths are relative to
 * base_dir (absolute). The calib and eval values replace the current lists. */
qc_status qc_recipe_apply_yaml(qc_recipe *r, const qc_ynode *map, const char *what, const char *base_dir);
qc_status qc_recipe_apply_yaml_key(qc_recipe *r, int key, const qc_ynode *value, const char *what,
                                   const char *base_dir);

#ifdef __cplusplus
}
#endif
#endif /* QC_RECIPE_H */
