/*
 * ckpt_check.h - the deploy lint of a quantized checkpoint directory (`qcal check DIR`): will it load,
 * and compute the values it was written with, in GPTQModel, AutoAWQ, optimum/transformers and vLLM?
 * Reads config.json (+ quantize_config.json / quant_config.json) and the safetensors headers, streams
 * through the tensor data once (mmapped, I/O bound), and returns a list of findings. It never writes.
 * Spec: ../shared/docs/FORMATS_AND_ALGORITHMS.md A (GPTQ), B (AWQ), F (sharp edges); the loaders'
 * rules as ../shared/tools/loader_check.py restates them (vllm_restated, GPTQModel `dynamic`, AutoAWQ
 * exclude_layers_to_not_quantize).
 *
 * Levels. An ERROR is what makes a loader refuse the checkpoint or compute wrong values (the config
 * contradicting the tensors, an undeclared F16 linear, a non-finite tensor, a broken index). A WARNING only
 * costs speed or limits where it can be deployed (no Marlin kernel, a tensor-parallel size that does not
 * split, a file some loader needs). A NOTE is information (Marlin's compute capability, KV heads replicated).
 *
 * Rules (the `rule` string of a finding; the level each can have in brackets):
 *   config         [E W] config.json present and a JSON object; quantization_config present (a directory
 *                        without one -- an FP16 model -- is one ERROR "not a quantized checkpoint", and only
 *                        shards/finite/tokenizer run); quant_method gptq or awq; the keys vLLM requires
 *                        (gptq: bits, group_size, desc_act; awq: bits, group_size, zero_point); typed fields;
 *                        damp_percent in (0, 1); model_file_base_name naming existing weights; `dynamic`
 *                        patterns that compile; quantize_config.json missing (AutoGPTQ reads only it) [W]
 *   config-mirror  [E]   quantize_config.json (GPTQ) / quant_config.json (AWQ) agreeing with config.json
 *                        on every key a loader reads
 *   config-bits    [E]   bits in {2,3,4,8} (GPTQ) or 4 (AWQ); the bits the tensors hold (qweight rows,
 *                        qzeros columns, g_idx length) equal to the configured (or `dynamic`-overridden) ones
 *   config-group   [E]   group_size -1 or positive (AWQ: positive); scales/qzeros rows = K / group_size
 *   config-format  [E W] checkpoint_format gptq or gptq_v2; v1 with sym=false [E] (loaders corrupt z = 0);
 *                        AWQ zero_point true and version gemm [E]; gptq_v2 readable by few loaders [W]
 *   shapes         [E]   dtypes and shapes of qweight/qzeros/scales/g_idx/bias against each other, vLLM's
 *                        create_weights rules at TP 1 (N % pack factor, K % group_size), in/out features of
 *                        q/k/v/o/gate/up/down against config.json's sizes; scales not F16 [W]
 *   tensors        [E]   qzeros/scales/g_idx without a qweight, weight beside qweight, a quantized module
 *                        outside the blocks (other than lm_head), g_idx in an AWQ checkpoint, tensors named
 *                        gptq_bits/gptq_groupsize (TGI takes the checkpoint for its own format)
 *   gidx-desc-act  [E W N] desc_act=false with a g_idx other than k / group_size [E] (vLLM drops it,
 *                        ExLlamaV2 uses it); g_idx out of range or act-order groups not all group_size [E];
 *                        desc_act=true with g_idx missing [E]; desc_act=false with g_idx missing [W];
 *                        desc_act=true with a trivial g_idx, or with group_size -1 [N]
 *   sym-zeros      [E]   sym=true: every zero point 2^(b-1) (stored 2^(b-1)-1 in v1); Marlin ignores qzeros
 *   declared-f16   [E W] kept (F16) in-block linears declared exactly as the loaders need: GPTQ
 *                        modules_in_block_to_quantize (substring rule, optimum/vLLM) and a `dynamic` "-:"
 *                        rule per kept module (GPTQModel: re.match, the first matching rule decides; vLLM
 *                        also asks it about the fused qkv_proj/gate_up_proj); AWQ modules_to_not_convert
 *                        (AutoAWQ: substring of the block-relative name; vLLM: substring of the full path)
 *                        and the same `dynamic` rules (GPTQModel loads AWQ too). Quantized modules must not
 *                        be matched by any of them. [W] an AWQ q/k/v or gate/up group kept whole whose fused
 *                        name (mlp.gate_up_proj) no entry matches: older vLLM and SGLang test that name.
 *   router         [E]   MoE router gates (mlp.gate, block_sparse_moe.gate, *.router) not quantized
 *   fused-bits     [E]   q/k/v, gate/up, w1/w3 and the experts of one layer all quantized or all F16, with
 *                        equal bits and group size (vLLM refuses mixed precision inside a fused layer)
 *   marlin         [W N] vLLM gptq_marlin (sym, 4/8 bits, group -1/32/64/128) / awq_marlin (4 bits, zero
 *                        point, same groups) eligibility, and its shape rules per layer (N % 64, K % 128)
 *                        at TP 1; a NOTE that Marlin needs compute capability >= 8.0 when eligible
 *   tp-split       [W N] TP 2/4/8: heads and KV heads (replication is a NOTE), column-parallel layers
 *                        (q/k/v/gate/up/w1/w3) split N, row-parallel ones (o/down/w2) split K, each rank
 *                        keeping vLLM's alignment (pack factor, group size); Marlin per rank; act-order
 *                        row-parallel layers [N]. Also summarised in qc_check_report.tp.
 *   lm-head        [E]   tie_word_embeddings=true with an lm_head.weight (SGLang KeyError), untied without
 *                        one, lm_head quantized without "lm_head": true or the reverse
 *   finite         [E]   every floating tensor finite: names the tensor and the first bad element
 *   shards         [E]   the weights open (index weight_map naming every tensor once, shards existing,
 *                        plain names, holding exactly their tensors: qc_weights_open's rules), no
 *                        *.safetensors file the index (or model.safetensors) leaves out (vLLM globs them
 *                        when there is no index), __metadata__.format "pt" (transformers)
 *   tokenizer      [W]   tokenizer.json, tokenizer.model or vocab.json present
 *
 * Usage:
 *   qc_check_report r;
 *   if (qc_check_dir("out/llama-gptq", &r) != QC_OK) die(qc_last_error());   // could not run at all
 *   qc_check_print(&r, stdout);               // table, TP table, "check: N error(s), ..." line
 *   int rc = r.n_errors ? 1 : 0;
 *   qc_check_report_free(&r);
 *
 * Ownership: the report owns its findings and their strings; qc_check_report_free releases them (it is
 * safe on a zeroed report). qc_check_json returns a malloc'ed string the caller frees.
 */
#ifndef QC_CKPT_CHECK_H
#define QC_CKPT_CHECK_H

#include <stdio.h>

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values appear in --json output: append only. */
typedef enum qc_check_level {
    QC_CHECK_NOTE    = 0,
    QC_CHECK_WARNING = 1,
    QC_CHECK_ERROR   = 2,
} qc_check_level;

const char *qc_check_level_name(qc_check_level l);   /* "note", "warning", "error" */

typedef struct qc_check_finding {
    const char    *rule;      /* static string: "declared-f16" */
    qc_check_level level;
    char          *subject;   /* what it is about: a module, tensor, file, key or "tp=2" */
    char          *message;   /* what is wrong and which loader it bites */
} qc_check_finding;

/* One tensor-parallel size as vLLM would shard the checkpoint. */
typedef struct qc_check_tp {
    int  tp;                  /* 1, 2, 4, 8 */
    int  n_fail;              /* layers (and head counts) that do not split as vLLM needs: it refuses the model */
    int  n_marlin_fail;       /* quantized layers Marlin cannot take at this size; -1: not Marlin-eligible */
    char first[200];          /* the first failure, "" if none */
} qc_check_tp;

#define QC_CHECK_N_TP 4

typedef struct qc_check_report {
    char   format[16];        /* "gptq", "gptq_v2", "awq", or "" when not a readable quantized checkpoint */
    int    bits, group_size;  /* as configured (0 when unknown) */
    int    n_quantized;       /* modules holding qweight */
    int    n_kept;            /* in-block 2-D float linears left unquantized */
    size_t n_tensors;
    uint64_t bytes_scanned;   /* floating tensor bytes checked by `finite` */
    qc_check_tp tp[QC_CHECK_N_TP];   /* tp = 1, 2, 4, 8; all zero when the weights did not open */
    qc_check_finding *findings;      /* errors first, then warnings, then notes; within a level in check order */
    size_t n_findings;
    int    n_errors, n_warnings, n_notes;
} qc_check_report;

/* Runs every rule on `dir`. QC_OK means the checks ran (the verdict is in out->n_errors); QC_ERR_ARG when
 * dir is NULL or not a directory, QC_ERR_NOMEM when out of memory (then *out is freed and zeroed). Problems
 * with the checkpoint's files are findings, never statuses. */
qc_status qc_check_dir(const char *dir, qc_check_report *out);
void      qc_check_report_free(qc_check_report *r);

/* The table `rule | level | subject | finding` (at most QC_CHECK_PRINT_PER_RULE rows per rule, then a row
 * saying how many more --json lists), the TP table, and the summary line
 * "check: N error(s), M warning(s), K note(s)". */
#define QC_CHECK_PRINT_PER_RULE 8
void      qc_check_print(const qc_check_report *r, FILE *f);
void      qc_check_print_summary(const qc_check_report *r, FILE *f);  /* the summary line alone */
/* {"dir":..., "format":..., "bits":..., "group_size":..., "errors":N, "warnings":M, "notes":K,
 *  "findings":[{"rule","level","subject","message"}...], "tp":[{"tp","n_fail","n_marlin_fail","first"}...]};
 * NULL when out of memory. */
char     *qc_check_json(const qc_check_report *r, const char *dir);

/* For `qcal quantize`: checks dir, prints the table (when there are warnings or errors) and the summary
 * line to f, and sets *n_errors. A status only when the check could not run. */
qc_status qc_check_after_write(const char *dir, FILE *f, int *n_errors);

#ifdef __cplusplus
}
#endif
#endif /* QC_CKPT_CHECK_H */
