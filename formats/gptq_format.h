/*
 * gptq_format.h - the GPTQ safetensors layout (AutoGPTQ/GPTQModel "gptq" = v1, and "gptq_v2"): packing
 * integer codes into qweight/qzeros, unpacking, dequantizing exactly as loaders do, writing a whole
 * checkpoint directory, and reading one back. Spec: ../shared/docs/FORMATS_AND_ALGORITHMS.md A.1-A.7,
 * C.1, C.2, C.4.
 *
 * Per quantized Linear with module path P (e.g. "model.layers.7.self_attn.q_proj"), N = out_features,
 * K = in_features, b = bits, G = number of groups:
 *   P.qweight  I32 [K*b/32, N]   codes packed along K: code k of column n at stream bit k*b of column n
 *   P.qzeros   I32 [G, N*b/32]   zero points packed along N, stored as z-1 (v1) or z (v2)
 *   P.scales   F16 [G, N]
 *   P.g_idx    I32 [K]           group of every input channel
 *   P.bias     F16 [N]           only when the Linear has a bias
 * Dequantization (C.1/C.2): W[n][k] = scales[g][n] * (code(k,n) - z(g,n)), g = g_idx[k].
 *
 * Bit stream (A.2): the values of one qweight column (or one qzeros row) form one little-endian bit
 * stream, value i at stream bits [i*b, i*b+b), cut into 32-bit words. Every 32 values fill exactly b
 * words, which is why K and N must be multiples of 32. For b = 4 the codes 0..7 give 0x76543210; for
 * b = 3 code 10 straddles words 0/1 (bits 30..31 | bit 0) and code 21 words 1/2 (bit 31 | bits 0..1).
 * Words are uint32 bit patterns stored as two's-complement int32 (0x88888888 is a normal value).
 *
 * Usage (the pipeline: one part file per layer, then the checkpoint):
 *   qc_qlinear q;
 *   qc_qlinear_alloc(&q, N, K, 4, 128, true, false);    // solver fills codes/scales/zeros/g_idx
 *   qc_gptq_write_part("work/layer07.safetensors", (const qc_qlinear *[]){&q},
 *                      (const char *[]){"model.layers.7.self_attn.q_proj"}, 1, false);
 *   ...
 *   qc_gptq_config cfg = {.bits = 4, .group_size = 128, .sym = true, .true_sequential = true,
 *                         .damp_percent = 0.01, .quantizer = "qcal:" QC_VERSION};
 *   qc_gptq_write_checkpoint("out/llama-gptq", "models/llama", parts, n_parts, &cfg, NULL, 0, 0, false);
 * Reading back:
 *   qc_gptq_detect("out/llama-gptq", &is_gptq, &cfg);
 *   qc_weights_open("out/llama-gptq", &w);
 *   qc_gptq_load_linear(w, "model.layers.7.self_attn.q_proj", &cfg, N, K, W, bias, &has_bias);
 *
 * Ownership: qc_qlinear arrays belong to whoever allocated them (qc_qlinear_alloc/free pair). Every
 * other function borrows its pointers for the duration of the call. qc_gptq_config's strings are
 * borrowed too; qc_gptq_detect leaves them NULL.
 */
#ifndef QC_GPTQ_FORMAT_H
#define QC_GPTQ_FORMAT_H

#include "qc_common.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One quantized Linear, format-independent, codes in original column order. */
typedef struct qc_qlinear {
    int      N, K;         /* out_features, in_features */
    int      bits;         /* 2, 3, 4, 8 */
    int      group_size;   /* as configured: 32/64/128/..., or -1 (one group) */
    int      n_groups;     /* G = K / gs_eff (gs_eff = K when group_size == -1) */
    bool     sym;
    uint8_t *codes;        /* [N, K] row-major, each in [0, 2^bits - 1] */
    float   *scales;       /* [G, N]: scale of group g, output channel n (fp32; stored as fp16) */
    int32_t *zeros;        /* [G, N]: integer zero point z in [0, 2^bits - 1] (sym: 2^(bits-1)) */
    int32_t *g_idx;        /* [K]: group of input channel k (act-order: invperm[k] / gs) */
    float   *bias;         /* [N] or NULL */
} qc_qlinear;

/* Allocates every array (bias only when has_bias); g_idx starts trivial (k / gs_eff), zeros at 2^(bits-1)
 * when sym (else 0), codes/scales/bias at 0. QC_ERR_ARG for bits outside {2,3,4,8}, N or K < 1,
 * group_size not -1 or positive, or K % group_size != 0. On failure *q is zeroed (free is harmless). */
qc_status qc_qlinear_alloc(qc_qlinear *q, int N, int K, int bits, int group_size, bool sym, bool has_bias);
void      qc_qlinear_free(qc_qlinear *q);
/* W[N, K] (row-major) = scales[g][n] * (codes[n][k] - zeros[g][n]) with g = g_idx[k], computed in fp32
 * (one rounding, the product): the in-memory fake-quantized weight. g_idx values must lie in [0, G). */
void      qc_qlinear_dequant(const qc_qlinear *q, float *W);

/* Whether the format can hold a layer of this shape (spec A.1 DECISION: K % 32 == 0, N % 32 == 0,
 * K % gs == 0). On false, *why says which condition fails. */
bool      qc_gptq_shape_ok(int N, int K, int bits, int group_size, const char **why);

/* Packs codes/zeros into the stored tensors (v2: store z; v1: store z-1, sym only -- asym v1 is
 * QC_ERR_ARG, see spec A.3). scales16 gets fp16 bit patterns (round to nearest even).
 *   qweight  [K*b/32, N], qzeros [G, N*b/32], scales16 [G, N], all row-major.
 * Checked (QC_ERR_ARG unless noted): qc_gptq_shape_ok, codes <= maxq, g_idx in [0, G), stored zero fields
 * in [0, maxq], and when q->sym every z == 2^(b-1) (vLLM's Marlin path assumes it and ignores qzeros);
 * a scale that is not finite in fp16 is QC_ERR_NUMERIC. Nothing is guaranteed about the outputs on error. */
qc_status qc_gptq_pack(const qc_qlinear *q, bool v2, int32_t *qweight, int32_t *qzeros, uint16_t *scales16);
/* The reverse, for readers and tests: codes [N, K], zeros [G, N] (as z: v2 z = stored, v1 z = stored + 1
 * with no mask, as the exllama/vLLM kernels compute, so a v1 field holding maxq gives 2^b), scales [G, N]
 * (from fp16). Each input/output pair may be NULL together (qweight/codes, qzeros/zeros,
 * scales16/scales) to skip it. QC_ERR_ARG when the shape fails qc_gptq_shape_ok's K/N conditions. */
/* Every check qc_gptq_pack makes except the per-code range (shape, groups, v1 with asym, g_idx, stored
 * zero points), and the fp16 scales it stores (QC_ERR_NUMERIC when one is not finite in fp16): for a
 * packer that holds the codes elsewhere (the GPU's) and checks them itself. */
qc_status qc_gptq_pack_prepare(const qc_qlinear *q, bool v2, uint16_t *scales16);
qc_status qc_gptq_unpack(int N, int K, int bits, int n_groups, bool v2, const int32_t *qweight,
                         const int32_t *qzeros, const uint16_t *scales16, uint8_t *codes, int32_t *zeros,
                         float *scales);
/* Plain twins of the two above: same contracts, one bit at a time (the reference the tests compare the
 * word-wise versions against). */
qc_status qc_gptq_pack_ref(const qc_qlinear *q, bool v2, int32_t *qweight, int32_t *qzeros, uint16_t *scales16);
qc_status qc_gptq_unpack_ref(int N, int K, int bits, int n_groups, bool v2, const int32_t *qweight,
                             const int32_t *qzeros, const uint16_t *scales16, uint8_t *codes, int32_t *zeros,
                             float *scales);

/* Writes one part file (e.g. a decoder layer's quantized Linears) for qc_gptq_write_checkpoint: for each
 * i, prefixes[i].qweight/.qzeros/.scales/.g_idx (and .bias, F16, when layers[i]->bias) in the layout
 * above, streamed through qc_st_writer (atomic: path.tmp, fsync, rename). Errors name the tensor. */
qc_status qc_gptq_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n,
                             bool v2);

/* ---- checkpoint directory ---- */
typedef struct qc_gptq_config {
    int    bits, group_size;
    bool   sym, desc_act, static_groups, true_sequential;
    bool   v2;                 /* checkpoint_format "gptq_v2" */
    double damp_percent;
    const char *quantizer;     /* "qcal:<version>" (NULL: "qcal:" QC_VERSION) */
    const char *meta_json;     /* extra provenance object merged into quantization_config.meta, its keys
                                  replacing ours on a clash (may be NULL; not an object: QC_ERR_ARG) */
    const char *report_json;   /* written into the checkpoint as qcal_report.json before it is renamed into
                                  place (NULL: none; not a JSON object: QC_ERR_ARG) */
} qc_gptq_config;

#define QC_GPTQ_DEFAULT_SHARD_BYTES 4000000000ull /* GPTQModel's "4GB" */

/* The safetensors __metadata__ pairs a checkpoint's shards carry after "format": "pt", in write order.
 * The checkpoint writers take them from here, and the pipeline writes the same pairs into its part files
 * (qc_pipeline_opts.part_meta), so that a part can become a shard as it is (part shards, below): the two
 * never disagree. kv points into the struct itself and at cfg->quantizer: do not copy a qc_shard_meta,
 * and keep cfg's strings alive while it is used. */
#define QC_SHARD_META_MAX 8
typedef const char *const qc_meta_pair[2];      /* {key, value} */
typedef struct qc_shard_meta {
    const char *kv[QC_SHARD_META_MAX][2];
    int         n;
    char        num[3][32];                     /* the numbers kv[i][1] points at */
} qc_shard_meta;
static inline const qc_meta_pair *qc_shard_meta_pairs(const qc_shard_meta *m) { return (const qc_meta_pair *)m->kv; }
/* AutoGPTQ's informational strings (spec A.7): gptq_quant_method, gptq_bits, gptq_group_size, gptq_desc_act,
 * gptq_damp_percent (%g), gptq_checkpoint_format, quantizer. */
void qc_gptq_shard_meta(const qc_gptq_config *cfg, qc_shard_meta *out);

/* Writes out_dir from:
 *   model_dir: the original model (config.json copied with quantization_config added and torch_dtype
 *              float16, and "dtype" too when present (transformers 5); tokenizer.json, tokenizer_config.json,
 *              tokenizer.model, special_tokens_map.json, generation_config.json, vocab.json, merges.txt,
 *              added_tokens.json, chat_template.jinja/.json copied when present); quantize_config.json
 *              gets the same quantization_config dict
 *   parts:     safetensors files holding the new tensors (per-layer files written by the pipeline,
 *              plus one with the non-quantized tensors), streamed into shards of at most
 *              max_shard_bytes (model.safetensors, or model-0000i-of-0000n.safetensors + index), tensors
 *              sorted by name; or, when the parts can serve as the shards as they are, hard-linked into
 *              place one part per shard with no data copied ("part shards": ckpt_write.h says when --
 *              among others, the data exceed max_shard_bytes, no part does, every tensor is already F16 or
 *              integer, and every part's __metadata__ is exactly format "pt" + qc_gptq_shard_meta(cfg))
 *   unquantized_modules: module paths inside blocks left in F16 (declared per spec A.5), may be NULL
 * Everything goes to out_dir.tmp-XXXX first and is renamed to out_dir only when complete; an existing
 * out_dir is not overwritten (QC_ERR_ARG) unless `overwrite` (then it is swapped out and removed).
 * max_shard_bytes 0 means QC_GPTQ_DEFAULT_SHARD_BYTES; a tensor larger than the limit gets a shard alone.
 * Refused with QC_ERR_ARG up front: bits/group_size invalid, damp_percent outside (0, 1) (transformers
 * rejects it), sym false without v2 (asym v1 is unsafe, spec A.3), out_dir being model_dir itself.
 * What it does beyond copying (each a status naming the file/tensor when it fails):
 *   - parts without any P.qweight are QC_ERR_ARG; a quantized lm_head is QC_ERR_UNSUPPORTED (the
 *     config declares lm_head false);
 *   - tensors are sorted by name (part shards: kept in their parts' order); a name in two parts, or a tensor named gptq_bits/gptq_groupsize, is
 *     QC_ERR_ARG; with tie_word_embeddings true in config.json, lm_head.weight is dropped;
 *   - floating tensors (F32/BF16/F64) are converted to F16 (A.1 DECISION: everything float16); a value
 *     that overflows fp16 or is NaN is QC_ERR_NUMERIC; integer tensors are copied verbatim;
 *   - every quantized module (P.qweight) is checked against cfg: dtypes, shapes of qzeros/scales/g_idx/
 *     bias, g_idx in [0, G) and trivial (k / gs) unless desc_act without static_groups (vLLM ignores g_idx
 *     when desc_act is false), each group used gs times under act-order, sym zero fields equal to
 *     2^(b-1) (minus 1 for v1), no P.weight beside P.qweight;
 *   - modules_in_block_to_quantize is written (one list, the block-relative names of the quantized
 *     modules) when unquantized_modules is not empty or a block holds a 2-D float P.weight; a name that
 *     is quantized in one block and not in another cannot be declared and is QC_ERR_UNSUPPORTED.
 *   - each shard is reopened with the validating reader and compared with the plan before the rename. */
qc_status qc_gptq_write_checkpoint(const char *out_dir, const char *model_dir, const char *const *parts, int n_parts,
                                   const qc_gptq_config *cfg, const char *const *unquantized_modules, int n_unq,
                                   uint64_t max_shard_bytes, bool overwrite);

/* Reads config.json's quantization_config (quant_method "gptq"), or quantize_config.json when config.json has
 * none (there a missing quant_method counts as gptq: older AutoGPTQ did not write it): false if the model
 * is not GPTQ. Accepts AutoGPTQ's synonyms w_bit/q_group_size and GPTQModel's meta.damp_percent. bits
 * outside {2,3,4,8} or a checkpoint_format other than gptq/gptq_v2 (e.g. marlin) is QC_ERR_UNSUPPORTED;
 * a bad group_size or wrongly typed field is QC_ERR_FORMAT. */
qc_status qc_gptq_detect(const char *model_dir, bool *is_gptq, qc_gptq_config *cfg);
/* Dequantizes module `prefix` (e.g. "model.layers.0.self_attn.q_proj") of a GPTQ checkpoint into
 * W[N, K] fp32 (and bias[N] when present and bias != NULL), per spec C.1/C.2, validating every tensor's
 * dtype and shape (errors name the tensor). W is exact: fp16 scale times the integer (q - z).
 * g_idx: with desc_act it is required and used. Without desc_act the group is k / gs_eff, as vLLM
 * computes (it drops g_idx then); g_idx may be absent, and when present it must still be in range, and
 * a non-trivial one is logged as a warning since loaders disagree on it (ExLlamaV2 would use it). */
qc_status qc_gptq_load_linear(const qc_weights *w, const char *prefix, const qc_gptq_config *cfg, int N, int K,
                              float *W, float *bias, bool *has_bias);

#ifdef __cplusplus
}
#endif
#endif /* QC_GPTQ_FORMAT_H */
