/*
 * awq_format.h - the AutoAWQ "GEMM" safetensors layout (4-bit only): packing, unpacking, dequantizing
 * as loaders do, writing a checkpoint directory and reading one back. Spec:
 * ../shared/docs/FORMATS_AND_ALGORITHMS.md B.1-B.5, C.3, C.4.
 *
 * Per quantized Linear P (N = out_features, K = in_features, G = K / gs):
 *   P.qweight  I32 [K, N/8]   codes packed along N: nibble slot i of word [k][c] holds column 8c + ORDER[i],
 *                              ORDER = {0, 2, 4, 6, 1, 3, 5, 7} (codes 0..7 in columns 8c..8c+7 -> 0x75316420)
 *   P.qzeros   I32 [G, N/8]   raw zero points z in [0, 15], same interleave, no offset
 *   P.scales   F16 [G, N]
 *   P.bias     F16 [N]        when the Linear has a bias
 * No g_idx. Dequantization (C.3): W[n][k] = scales[k/gs][n] * (code(k,n) - z(k/gs,n)).
 * Reading column n: code = (word >> 4*INVERSE[n % 8]) & 0xF, INVERSE = {0, 4, 1, 5, 2, 6, 3, 7}. Words are
 * uint32 bit patterns stored as two's-complement int32.
 *
 * The in-memory layer is a qc_qlinear (gptq_format.h) with bits 4, trivial g_idx (k / gs), zero points in
 * [0, 15] (asymmetric; a symmetric layer's z = 8 is stored like any other).
 *
 * Usage (the pipeline: one part file per layer, then the checkpoint):
 *   qc_qlinear q;
 *   qc_qlinear_alloc(&q, N, K, 4, 128, false, false);   // the AWQ solver fills codes/scales/zeros
 *   qc_awq_write_part("work/layer07.safetensors", (const qc_qlinear *[]){&q},
 *                     (const char *[]){"model.layers.7.mlp.down_proj"}, 1);
 *   ...   // plus a part with the float tensors (embeddings, the scale-folded norms, lm_head)
 *   qc_awq_config cfg = {.bits = 4, .group_size = 128, .quantizer = "qcal:" QC_VERSION};
 *   qc_awq_write_checkpoint("out/llama-awq", "models/llama", parts, n_parts, &cfg, NULL, 0, 0, false);
 * Reading back:
 *   qc_awq_detect("out/llama-awq", &is_awq, &cfg);
 *   qc_weights_open("out/llama-awq", &w);
 *   qc_awq_load_linear(w, "model.layers.7.mlp.down_proj", &cfg, N, K, W, bias, &has_bias);
 *
 * Ownership: every function borrows its pointers for the duration of the call; qc_awq_config's strings
 * are borrowed too, and qc_awq_detect leaves them NULL.
 */
#ifndef QC_AWQ_FORMAT_H
#define QC_AWQ_FORMAT_H

#include "gptq_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Whether the AWQ GEMM layout can hold the layer: bits 4, gs > 0 dividing K, N % 8 == 0 (N, K >= 1).
 * On false, *why says which condition fails. */
bool      qc_awq_shape_ok(int N, int K, int bits, int group_size, const char **why);
/* Packs q into qweight [K, N/8], qzeros [G, N/8] and scales16 [G, N] (fp16 bit patterns, round to nearest
 * even), all row-major. QC_ERR_ARG unless qc_awq_shape_ok, n_groups == K / gs, g_idx trivial (AWQ stores
 * none), codes and zero points in [0, 15]; a scale that is not finite in fp16 is QC_ERR_NUMERIC. Nothing is
 * guaranteed about the outputs on error. */
qc_status qc_awq_pack(const qc_qlinear *q, int32_t *qweight, int32_t *qzeros, uint16_t *scales16);
/* The reverse, for readers and tests: codes [N, K], zeros [G, N], scales [G, N] (from fp16). Each
 * input/output pair may be NULL together (qweight/codes, qzeros/zeros, scales16/scales) to skip it.
 * QC_ERR_ARG when N, K, group_size fail qc_awq_shape_ok. */
/* Every check qc_awq_pack makes except the per-code range, and the fp16 scales it stores: for a packer
 * that holds the codes elsewhere (the GPU's) and checks them itself. */
qc_status qc_awq_pack_prepare(const qc_qlinear *q, uint16_t *scales16);
qc_status qc_awq_unpack(int N, int K, int group_size, const int32_t *qweight, const int32_t *qzeros,
                        const uint16_t *scales16, uint8_t *codes, int32_t *zeros, float *scales);
/* Plain twins of the two above: same contracts, one nibble at a time through the ORDER/INVERSE tables
 * (the reference the tests compare the word-at-a-time versions against). */
qc_status qc_awq_pack_ref(const qc_qlinear *q, int32_t *qweight, int32_t *qzeros, uint16_t *scales16);
qc_status qc_awq_unpack_ref(int N, int K, int group_size, const int32_t *qweight, const int32_t *qzeros,
                            const uint16_t *scales16, uint8_t *codes, int32_t *zeros, float *scales);

/* Writes one part file for qc_awq_write_checkpoint: for each i, prefixes[i].qweight/.qzeros/.scales (and
 * .bias, F16, when layers[i]->bias) in the layout above, streamed through qc_st_writer (atomic). Errors
 * name the file and module. */
qc_status qc_awq_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n);

typedef struct qc_awq_config {
    int         bits;          /* 4 */
    int         group_size;    /* > 0 (detect also accepts -1: one group of K) */
    const char *quantizer;     /* "qcal:<version>" (NULL: "qcal:" QC_VERSION) */
    const char *meta_json;     /* provenance object merged into quantization_config.meta, its keys replacing
                                  ours on a clash (may be NULL; not an object: QC_ERR_ARG) */
    const char *report_json;   /* written into the checkpoint as qcal_report.json before it is renamed into
                                  place (NULL: none; not a JSON object: QC_ERR_ARG) */
} qc_awq_config;

#define QC_AWQ_DEFAULT_SHARD_BYTES 5000000000ull /* AutoAWQ's and transformers' "5GB" */

/* The __metadata__ pairs of an AWQ checkpoint's shards after "format": "pt" (just "quantizer"); the
 * pipeline's part files carry them too (see qc_shard_meta in gptq_format.h). */
void qc_awq_shard_meta(const qc_awq_config *cfg, qc_shard_meta *out);

/* Like qc_gptq_write_checkpoint (same parts, sharding, index, side files, tied lm_head, F16 conversion,
 * temp dir + rename, overwrite rules; shards default to QC_AWQ_DEFAULT_SHARD_BYTES), with:
 *   quantization_config {"quant_method": "awq", "zero_point": true, "group_size": gs, "bits": 4,
 *     "version": "gemm", "modules_to_not_convert": [...] or null, "meta": {"quantizer": [...], meta_json}}
 *     (spec B.5; transformers' AwqConfig takes **kwargs and vLLM reads only the keys it knows, so "meta"
 *     is ignored by both);
 *   quant_config.json {"zero_point": true, "q_group_size": gs, "w_bit": 4, "version": "GEMM"} (AutoAWQ's
 *     legacy file, plus its modules_to_not_convert when that is not empty);
 *   safetensors __metadata__ {"format": "pt", "quantizer": ...} (qc_awq_shard_meta); the parts become the
 *     shards by hard links when they can, as for GPTQ (ckpt_write.h: part shards).
 * modules_to_not_convert lists the full paths of the Linears kept in F16: unquantized_modules (each inside
 * a decoder block, holding P.weight and no P.qweight) and any other 2-D float P.weight inside a block.
 * Loaders match these names as substrings (transformers, vLLM, AutoAWQ), so a name that would also match a
 * quantized module, or vLLM's fused qkv_proj/gate_up_proj of one, is QC_ERR_UNSUPPORTED.
 * Refused with QC_ERR_ARG up front: bits != 4, group_size <= 0 (spec B.1: never -1).
 * Every quantized module (P.qweight) is checked: qweight I32 [K, N/8] with qc_awq_shape_ok, qzeros I32
 * [G, N/8], scales floating [G, N] (written F16), bias floating [N], no P.g_idx, no P.weight; a quantized
 * lm_head is QC_ERR_UNSUPPORTED; parts without any P.qweight are QC_ERR_ARG. */
qc_status qc_awq_write_checkpoint(const char *out_dir, const char *model_dir, const char *const *parts, int n_parts,
                                  const qc_awq_config *cfg, const char *const *unquantized_modules, int n_unq,
                                  uint64_t max_shard_bytes, bool overwrite);

/* Reads config.json's quantization_config (quant_method "awq"), or AutoAWQ's quant_config.json when
 * config.json has none (there a missing quant_method counts as awq): false if the model is not AWQ.
 * Accepts AutoAWQ's synonyms w_bit/q_group_size; absent fields take transformers' AwqConfig defaults
 * (bits 4, group_size 128, zero_point true, version gemm). bits other than 4, zero_point false, a version
 * (or transformers 5's "format") other than gemm, or backend "llm-awq" (its own packing) is
 * QC_ERR_UNSUPPORTED; a bad group_size or wrongly typed field is QC_ERR_FORMAT. */
qc_status qc_awq_detect(const char *model_dir, bool *is_awq, qc_awq_config *cfg);
/* Dequantizes module `prefix` of an AWQ checkpoint into W[N, K] fp32 (row-major) and bias[N] when present
 * and bias != NULL, per C.3, validating every tensor's dtype and shape (errors name the tensor). W is exact:
 * the fp16 scale times the integer (q - z). group_size -1 means one group of K. */
qc_status qc_awq_load_linear(const qc_weights *w, const char *prefix, const qc_awq_config *cfg, int N, int K,
                             float *W, float *bias, bool *has_bias);

#ifdef __cplusplus
}
#endif
#endif /* QC_AWQ_FORMAT_H */
