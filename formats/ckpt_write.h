/*
 * ckpt_write.h - internal to formats/: the format-neutral half of the quantized-checkpoint writers
 * (gptq_write.c, awq_format.c). Not a public API: qc_gptq_write_checkpoint and qc_awq_write_checkpoint are.
 *
 * Part files. A format says how it stores one qc_qlinear (the tensors P.<suffix>, their shapes, and a
 * packer filling them); qc_ckpt_write_part streams any number of layers into one safetensors file through
 * qc_st_writer (atomic), adding P.bias (F16) when the layer has one.
 *
 * Checkpoint directories, in two steps so the format can build its quantization_config from what the
 * parts hold:
 *   qc_ckpt *c;
 *   st = qc_ckpt_open(&c, &spec, out_dir, model_dir, parts, n_parts, unq, n_unq, max_shard, overwrite,
 *                     meta_json);                  // checks, opens, sorts, validates, plans the shards
 *   ... build qcfg from qc_ckpt_modules_of(c) and qc_ckpt_extra_meta(c) ...
 *   if (st == QC_OK) st = qc_ckpt_commit(c, qcfg, side_files, n_side, shard_meta, n_meta);
 *   qc_ckpt_close(c);                              // removes the temporary directory if it is still there
 * open does, in order (each a status naming the file/tensor at fault):
 *   - out_dir: trailing slashes dropped; an existing one needs `overwrite`, must be a directory and must
 *     not be model_dir itself; meta_json must parse to an object; model_dir/config.json is read
 *     (tie_word_embeddings true drops lm_head.weight);
 *   - the parts are opened; their tensors are sorted by name; a name in two parts, or a tensor named
 *     gptq_bits/gptq_groupsize (TGI would take the checkpoint for its own format), is QC_ERR_ARG;
 *     floating tensors are planned as F16 (converted while streaming, overflow/NaN is QC_ERR_NUMERIC),
 *     integer ones copied verbatim; shards of at most max_shard_bytes (a bigger tensor gets one alone;
 *     commit may instead take the parts as the shards, below);
 *   - every P.qweight is a quantized module: lm_head is QC_ERR_UNSUPPORTED, the others go to the spec's
 *     check_module; a P.qzeros or P.g_idx without P.qweight is QC_ERR_ARG; a 2-D floating P.weight inside
 *     a decoder block with no P.qweight is a Linear left unquantized; each declared unquantized module
 *     must be inside a block, hold P.weight and no P.qweight; no P.qweight at all is QC_ERR_ARG.
 * commit writes into out_dir.tmp-XXXXXX: the shards (__metadata__ format "pt" then the format's pairs,
 * shard_meta), each re-read with the validating reader and compared with the plan;
 * model.safetensors.index.json when there are several; config.json (model's, with quantization_config = qcfg, torch_dtype float16, and dtype
 * float16 when present); the side files given; the tokenizer/generation files copied from model_dir. Then
 * it renames the directory to out_dir (an existing one is exchanged atomically where the file system can,
 * and removed).
 *
 *
 * Part shards. When the parts can serve as the shards as they are, commit does not copy them: part p becomes
 * shard model-<p+1>-of-<n_parts>.safetensors by link(2) in parts order (the pipeline's: base part first, then
 * the layers), the index maps each tensor to its part's shard, and verify_shards compares each with its
 * part's tensors. This takes all of: the output's tensor bytes exceed max_shard_bytes (a checkpoint that
 * fits one shard stays one model.safetensors); no part's exceed it; every tensor is already in its output
 * dtype (F16 or integer: nothing to convert) and none is dropped (the tied lm_head); no part is empty; and
 * every part's __metadata__ is exactly {"format": "pt"} plus shard_meta's pairs, no other key (the pipeline
 * writes its parts with them, qc_pipeline_opts.part_meta; parts of an older build carry only "format" and
 * take the copy). Otherwise the tensors are sorted and copied as above, byte for byte as before. Where the
 * file system refuses the link (EXDEV, EPERM, EMLINK, ENOTSUP: the parts on another one) that part is
 * copied (then fsynced) instead; any other failure is QC_ERR_IO naming both files. The output shares the
 * parts' inodes: safe because parts are only ever replaced by rename, never written in place.
 *
 * Ownership: qc_ckpt borrows spec, parts and the strings given to open until close; the module lists and
 * the tensors qc_ckpt_find returns live until close. commit borrows qcfg and the side files.
 */
#ifndef QC_CKPT_WRITE_H
#define QC_CKPT_WRITE_H

#include "gptq_format.h"

#include <cjson/cJSON.h>

/* ---- part files ---- */

#define QC_PART_MAX_TENSORS 4

typedef struct qc_part_tensor {
    const char *suffix;    /* "qweight": stored as <prefix>.qweight */
    qc_dtype    dtype;
    int         ndim;      /* 1 or 2 */
    int64_t     shape[2];
} qc_part_tensor;

typedef struct qc_part_format {
    const char *name;      /* "gptq": "qc_gptq_write_part: ..." in messages */
    int         n_tensors; /* per layer, bias not counted (<= QC_PART_MAX_TENSORS) */
    /* The stored tensors of q in write order; false with *why when the format cannot hold q. */
    bool      (*layout)(const qc_qlinear *q, qc_part_tensor *t, const char **why);
    /* Fills bufs[i] (sized from layout's t[i]) with q's packed data. */
    qc_status (*pack)(const qc_qlinear *q, const void *user, void *const *bufs);
    const void *user;
} qc_part_format;

qc_status qc_ckpt_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n,
                             const qc_part_format *fmt);

/* ---- small string sets (sorted on demand) ---- */

typedef struct qc_strset { char **v; size_t n, cap; } qc_strset;
bool qc_strset_add(qc_strset *s, const char *x);        /* no-op if present; false on allocation failure */
bool qc_strset_has(const qc_strset *s, const char *x);
void qc_strset_sort(qc_strset *s);
void qc_strset_free(qc_strset *s);

/* The part of a module path after its block index ("model.layers.7.mlp.up_proj" -> "mlp.up_proj"): the
 * first dot-separated component made of digits marks the block. NULL outside blocks. */
const char *qc_ckpt_block_rel(const char *module);

/* ---- checkpoint directories ---- */

typedef struct qc_ckpt qc_ckpt;

typedef struct qc_ckpt_spec {
    const char *what;      /* "gptq checkpoint": starts the messages that name no file */
    const char *format;    /* "GPTQ": the final log line */
    /* Validates the quantized module `module` whose qweight is `qweight` (other tensors via qc_ckpt_find);
     * QC_ERR_ARG naming the tensor when the parts do not hold what the format stores. */
    qc_status (*check_module)(const qc_ckpt *c, const char *module, const qc_tensor *qweight, const void *user);
    const void *user;
} qc_ckpt_spec;

typedef struct qc_ckpt_modules {
    qc_strset quantized;   /* module paths holding P.qweight, sorted */
    qc_strset unquantized; /* float Linears inside blocks (declared or found), full paths, sorted */
    bool      declared;    /* the caller declared unquantized modules */
} qc_ckpt_modules;

typedef struct qc_ckpt_file {
    const char  *name;     /* "quantize_config.json" */
    const cJSON *json;
} qc_ckpt_file;

qc_status qc_ckpt_open(qc_ckpt **out, const qc_ckpt_spec *spec, const char *out_dir, const char *model_dir,
                       const char *const *parts, int n_parts, const char *const *unquantized, int n_unq,
                       uint64_t max_shard_bytes, bool overwrite, const char *meta_json);
const qc_ckpt_modules *qc_ckpt_modules_of(const qc_ckpt *c);
/* The block-relative names ("mlp.down_proj") of m's quantized modules into *qrel and of its unquantized ones
 * into *urel (may be NULL), both sorted; the caller frees them. Loaders declare kept modules per block
 * (modules_in_block_to_quantize, AutoAWQ's modules_to_not_convert), so a name quantized in one block and kept
 * in another is QC_ERR_UNSUPPORTED. */
/* The `dynamic` object that GPTQModel (for GPTQ and AWQ checkpoints alike) and vLLM's GPTQ loader read:
 * one negative rule "-:^<module>$" (the full path as an anchored Python regex; they apply re.match and the
 * first matching rule decides) per module of m->unquantized, plus one per fused vLLM name (qkv_proj,
 * gate_up_proj) whose shards in that block are all kept. GPTQModel ignores modules_in_block_to_quantize and
 * modules_to_not_convert, so without these rules it builds kept Linears as quantized modules and leaves
 * them zero. Rule values are empty objects. The caller owns the result; NULL when out of memory. */
cJSON *qc_ckpt_skip_rules(const qc_ckpt_modules *m);
qc_status qc_ckpt_block_lists(const qc_ckpt_modules *m, qc_strset *qrel, qc_strset *urel);
const cJSON           *qc_ckpt_extra_meta(const qc_ckpt *c);   /* meta_json parsed, or NULL */
/* The part tensor named module.suffix, or NULL. */
const qc_tensor       *qc_ckpt_find(const qc_ckpt *c, const char *module, const char *suffix);
qc_status qc_ckpt_commit(qc_ckpt *c, const cJSON *qcfg, const qc_ckpt_file *side, int n_side,
                         const char *const (*shard_meta)[2], int n_meta);
void      qc_ckpt_close(qc_ckpt *c);

/* ---- helpers the format readers share too ---- */

/* Reads path as one JSON object (QC_ERR_FORMAT naming the file when it is not). Caller deletes *out. */
qc_status qc_json_read_object(const char *path, cJSON **out);
/* o[key] (or o[alt] when key is absent; alt may be NULL) as an int32: *found false when absent or null,
 * QC_ERR_FORMAT naming `what` and the key when it is not an integral number in range. */
qc_status qc_json_get_int(const cJSON *o, const char *key, const char *alt, const char *what, bool *found, int *out);
/* o[key] as a bool, dflt when absent or null, QC_ERR_FORMAT when not a boolean. */
qc_status qc_json_get_bool(const cJSON *o, const char *key, const char *what, bool dflt, bool *out);
/* ASCII case-insensitive equality. */
bool qc_str_ieq(const char *a, const char *b);
/* The tensor prefix.suffix of w, checked to have dtype dt and shape[ndim]: QC_ERR_FORMAT naming the file
 * and tensor otherwise; absent is QC_ERR_FORMAT ("<fmt> checkpoint has no tensor ...") when required, else
 * *out = NULL. */
qc_status qc_weights_find_checked(const qc_weights *w, const char *fmt, const char *prefix, const char *suffix,
                                  qc_dtype dt, int ndim, const int64_t *shape, bool required,
                                  const qc_tensor **out);
/* A malloc'ed copy of t's bytes (the mmap gives no alignment); NULL when out of memory. */
void *qc_tensor_dup(const qc_tensor *t);

/* ---- JSON helpers for the writers ---- */

/* Sets o[key] = v (taking v), replacing in place to keep the key order; false on allocation failure
 * (v NULL counts as one). */
bool qc_json_set(cJSON *o, const char *key, cJSON *v);
/* Copies every key of extra (may be NULL) into meta, replacing ours on a clash; false on allocation failure. */
bool qc_json_merge(cJSON *meta, const cJSON *extra);

static inline bool qc_is_float_dtype(qc_dtype dt) {
    return dt == QC_DTYPE_F16 || dt == QC_DTYPE_BF16 || dt == QC_DTYPE_F32 || dt == QC_DTYPE_F64;
}

/* t is nd-D with shape [d0] or [d0, d1]. */
static inline bool qc_tensor_shape_is(const qc_tensor *t, int nd, int64_t d0, int64_t d1) {
    return t->ndim == nd && t->shape[0] == d0 && (nd < 2 || t->shape[1] == d1);
}

#endif /* QC_CKPT_WRITE_H */
