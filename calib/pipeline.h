/*
 * pipeline.h - quantize a model one decoder layer at a time (spec D.1, D.2).
 *
 * The schedule below is written once (pipeline_driver.c) from the architecture's description (arch.h: the
 * groups, capture points and folds named here are Llama's) and runs on a CPU backend (pipeline.c, FP32) or a
 * CUDA one (pipeline_gpu.c, --device cuda), which do the arithmetic.
 *
 * The calibration windows are embedded once into X [nsamples * seqlen, d] (FP32). For each layer:
 * its weights are converted from the mmapped files; for each group of the schedule
 * (true-sequential: {q,k,v}, {o}, {gate,up}, {down}; otherwise all seven at once) the layer runs on X
 * batch by batch with the already-quantized groups in place, the group's input Hessian
 * H = 2/n X^T X is accumulated (FP32, hessian.h: fixed tiles, sample order), and each linear is
 * solved (GPTQ or RTN); then the fully quantized layer runs once more and its output becomes X for the
 * next layer (GPTQ propagates quantized outputs). Memory: X, one layer's FP32 weights, the largest
 * Hessian (K x K, plus a working copy), and one batch's activations.
 *
 * AWQ (spec E.1): the layer runs once with its original weights, capturing every linear's input
 * (kept whole: [rows, K] per capture point) and producing the next layer's input (FP outputs feed the
 * next layer, unlike GPTQ); then the scale search (grid of 20 on the original weights, per formula),
 * scale folding into the previous operation, the clipping search and the final quantization. The
 * search's loss is the module's mean squared output error: attention and MLP by forwards over the
 * windows awq_search_samples selects; a module that is one linear (o_proj, down_proj) on every
 * window, exactly from its inputs' X^T X (qc_awq_quad_loss) without forwards when there are at least
 * as many rows as inputs (cheaper), else by forwards. The final quantization rounds to nearest, or
 * with awq_gptq runs the GPTQ solver on the Hessians of the scaled inputs.
 *
 * Each finished layer is written to <work_dir>/layer-NNNNN.safetensors holding exactly the tensors the
 * checkpoint will carry for it (packed GPTQ tensors, F16 norms and unquantized linears); the
 * non-layer tensors go to <work_dir>/base.safetensors, each with the checkpoint's shard metadata
 * (part_meta). Those files, with X, are the state a resumed run needs. qc_gptq_write_checkpoint then
 * assembles the checkpoint from them, hard-linking them into place as its shards when they fit.
 */
#ifndef QC_PIPELINE_H
#define QC_PIPELINE_H

#include "awq.h"
#include "model.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qc_method { QC_METHOD_RTN = 0, QC_METHOD_GPTQ = 1, QC_METHOD_AWQ = 2 } qc_method;
const char *qc_method_name(qc_method m);

typedef enum qc_pack_format {
    QC_PACK_GPTQ = 0,     /* gptq v1 (sym) */
    QC_PACK_GPTQ_V2 = 1,  /* gptq_v2: raw zero points, any symmetry */
    QC_PACK_AWQ = 2,      /* AutoAWQ GEMM, 4-bit */
} qc_pack_format;

typedef struct qc_linear_report {
    int    layer;
    qc_linear_id lin;
    char   name[128];        /* "model.layers.3.self_attn.q_proj" */
    int    N, K;
    bool   quantized;        /* false: kept in F16 (reason says why) */
    char   reason[160];
    double rel_err;          /* ||W X - W_hat X||^2 / ||W X||^2 on the calibration inputs */
    double damp;             /* damping used (GPTQ) */
    int    retries;          /* Cholesky retries */
    int    dead_cols;
    double seconds;          /* solve time */
    double awq_ratio;        /* AWQ: chosen grid point of the scale group this linear belongs to (-1: none) */
    qc_awq_formula awq_formula; /* AWQ: the scale formula of that grid point (QC_AWQ_F_NONE: none) */
    double awq_loss;         /* AWQ: the group's search loss at that point, mean squared module-output error */
    int64_t tokens;          /* calibration rows its Hessian saw under the real routing (an expert: the rows
                                routed to it; any other linear: every row); -1: not recorded */
    char   coverage[16];     /* MoE experts: "routed", "all-tokens" (too few routed rows: the Hessian of
                                every row through it) or "rtn" (too few: rounded to nearest); else "" */
} qc_linear_report;

/* What a mixture-of-experts run does with an expert whose routed calibration rows are fewer than
 * moe_min_tokens. */
typedef enum qc_moe_low {
    QC_MOE_LOW_ALL_TOKENS = 0, /* its Hessian from every calibration row sent through it (the layer's output
                                  keeps the real routing) */
    QC_MOE_LOW_RTN = 1,        /* round to nearest */
} qc_moe_low;

typedef struct qc_pipeline_opts {
    qc_method    method;
    qc_gptq_opts q;              /* bits, group_size, sym, act_order, static_groups, damp (RTN: bits/gs/sym) */
    bool         true_sequential;
    qc_pack_format format;       /* how the layer parts are packed */
    qc_awq_scale_mode awq_scale; /* AWQ: the scale formulas the grid search tries (AutoAWQ's duo, llm-awq's x^r,
                                  * or best: both, per group the lower loss) */
    /* AWQ: the windows the search's attention and MLP module forwards run on: this many, evenly strided
     * (window i * nsamples / n), 0 or >= nsamples: all. x_mean always uses every window, and the groups
     * whose module is one linear (o_proj, down_proj) are scored on every window through X^T X. */
    int          awq_search_samples;
    bool         awq_plain_search; /* AWQ: score the one-linear groups by forwards always (the X^T X path's
                                    * plain twin, for tests) */
    bool         awq_clip;       /* AWQ clipping search (default on) */
    bool         awq_gptq;       /* AWQ ("awq+gptq"): after scaling and clipping, each linear is quantized by the
                                    GPTQ solver (q: act_order, damp, mse, ...) with the Hessian of its scaled
                                    inputs instead of round-to-nearest; the next layer's input stays the FP
                                    layer's output. CPU only. */
    int          batch_tokens;   /* rows per forward batch (0: 8192) */
    /* MoE: an expert with fewer routed calibration rows than moe_min_tokens (< 0: its gate's in_features)
     * is handled per moe_low; router and shared-expert gates are never quantized. */
    int          moe_min_tokens;
    qc_moe_low   moe_low;
    const char  *work_dir;       /* created if missing */
    bool         keep_fake;      /* keep the fake-quantized layers (loader-exact: fp16 scales) for evaluation */
    int          device;         /* -1: the CPU; N >= 0: CUDA device N (pipeline_gpu.c) */
    /* Resume (resume.h): the activations are saved to work_dir at a layer boundary once save_every
     * seconds have passed since the last save (0: at every boundary; < 0: never), and always after the
     * last layer. A work_dir holding a snapshot is resumed from it (the caller has checked that the
     * directory belongs to this run). */
    double       save_every;
    bool         clamp_f16;      /* F32 values beyond the F16 range are clamped to +-65504 (else an error) */
    /* The __metadata__ pairs every part file carries after "format": "pt": the checkpoint's shard metadata
     * (qc_gptq_shard_meta, qc_awq_shard_meta), so that the checkpoint writer can take the parts as its shards
     * without copying them (ckpt_write.h: part shards). Borrowed for the run; NULL with 0: none (the writer
     * then copies). */
    const char *const (*part_meta)[2];
    int          n_part_meta;
    /* Called when a phase starts ("embed", "forward", "solve", "save", ...) for layer (-1: none); may be NULL. */
    void       (*on_phase)(void *user, int layer, int n_layers, const char *phase);
    /* Called after each linear is solved (for the progress line); may be NULL. Return false to cancel. */
    bool       (*on_linear)(void *user, const qc_linear_report *r, int done, int total);
    void        *user;
} qc_pipeline_opts;

typedef struct qc_pipeline_result {
    qc_linear_report *lin;       /* [n_lin]: n_layers rows of lin_stride slots (arch.h); rows of absent slots
                                    (an MoE layer's dense MLP, say) have an empty name */
    int     n_lin;
    int     lin_stride;
    double  t_embed, t_forward, t_hessian, t_solve, t_write;
    double  t_read;              /* GPU: seconds reading layers from the files (overlapped, in the loader thread) */
    double  t_read_wait;         /* GPU: seconds the pipeline waited for a layer to arrive */
    double  t_pack;              /* GPU: seconds packing on the device (part of t_write on the CPU) */
    size_t  gpu_peak_bytes;      /* GPU: peak of qcal's device allocations */
    size_t  gpu_peak_device;     /* GPU: peak device memory in use (incl. CUDA context, library workspaces) */
    size_t  gpu_stash_bytes;     /* GPU: o_proj/down_proj inputs kept between passes (0: recomputed) */
    const char *gpu_attention;   /* GPU: "fused" or "plain", the attention kernel (gpu_forward.h); static */
    char    device_desc[192];    /* "cpu" or the GPU's description */
    char  **parts;               /* part files in work_dir, [n_parts] */
    int     n_parts;
    char  **unquantized;         /* module paths kept in F16, [n_unq] */
    int     n_unq;
    int     resumed_at;          /* the layer this run started at (> 0: layers before it came from work_dir) */
    qc_layer *fake;              /* [n_layers] when keep_fake, else NULL (and NULL entries for resumed layers) */
    int     n_layers;
} qc_pipeline_result;

/* Whether the run's format can hold an N x K linear (else it stays F16; *why says why). */
bool qc_pl_packable(const qc_pipeline_opts *o, int N, int K, const char **why);

/* The routed rows below which an expert counts as under-covered: o->moe_min_tokens, or the hidden size when
 * it is < 0; at least 1 (an expert no row reached is always under-covered). */
int64_t qc_pipeline_moe_min_rows(const qc_pipeline_opts *o, const qc_model_config *cfg);

qc_status qc_pipeline_run(const qc_model *m, const int32_t *ids, int nsamples, int seqlen, const qc_pipeline_opts *o,
                          qc_pipeline_result *res);
void      qc_pipeline_result_free(qc_pipeline_result *res);

#ifdef __cplusplus
}
#endif
#endif /* QC_PIPELINE_H */
