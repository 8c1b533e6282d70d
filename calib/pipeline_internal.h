/*
 * pipeline_internal.h - pieces shared by the CPU pipeline (pipeline.c) and the CUDA pipeline
 * (pipeline_gpu.c): the buffered tensors of one layer part file and the base part.
 * Not part of qcal's API.
 */
#ifndef QC_PIPELINE_INTERNAL_H
#define QC_PIPELINE_INTERNAL_H

#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor of a part file; data is owned by the list unless borrowed (then it lives in a buffer the
 * caller owns and keeps until the part is written or freed: pipeline_gpu.c's pinned pack arenas). */
typedef struct {
    char     name[200];
    qc_dtype dtype;
    int      ndim;
    int64_t  shape[2];
    void    *data;
    size_t   nbytes;
    bool     borrowed;
} qc_pl_tensor;

typedef struct {
    qc_pl_tensor *t;
    int n, cap;
} qc_pl_parts;

/* Takes ownership of data (freed on failure too). ndim 1 ignores d1. */
qc_status qc_pl_part_add(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, void *data,
                         size_t nbytes);
/* Like qc_pl_part_add, but data stays the caller's (never freed here; it must outlive the part's write). */
qc_status qc_pl_part_add_borrowed(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1,
                                  void *data, size_t nbytes);
/* F32 -> F16 with the run's guard: a non-finite value, or one beyond the F16 range (unless the run clamps),
 * is QC_ERR_NUMERIC naming `name` and the element. */
qc_status qc_pl_to_f16(const char *name, const float *x, size_t n, uint16_t *h);
/* Whether every value of the layer's weights, biases and norms is finite; QC_ERR_NUMERIC naming the tensor
 * and the element otherwise. */
qc_status qc_pl_check_layer(const qc_model_config *cfg, const qc_layer *layer, int li);
/* F32 values -> a new F16 tensor (d1 == 0: 1-D), guarded as qc_pl_to_f16. */
qc_status qc_pl_part_add_f16(qc_pl_parts *p, const char *name, const float *x, int64_t d0, int64_t d1);
/* Writes the buffered tensors as one safetensors file (atomically), its __metadata__ "format": "pt" plus
 * o->part_meta's pairs (so that it can become a checkpoint shard as it is). */
qc_status qc_pl_part_write(qc_pl_parts *p, const char *path, const qc_pipeline_opts *o);
void      qc_pl_part_free(qc_pl_parts *p);
/* Joins the tensors of linears stored fused (arch.h: Phi-3's qkv_proj, gate_up_proj) into the fused tensors
 * of layer li, as the checkpoint stores them: packed tensors along N, F16 weights and biases along rows, one
 * g_idx (identical across slices). The slices' tensors leave the part. */
qc_status qc_pl_part_fuse(qc_pl_parts *p, const qc_model_config *cfg, int li);
/* Declares linear l of layer li unquantized in res: its stored module's name, once per fused tensor. */
qc_status qc_pl_push_module(qc_pipeline_result *res, const qc_model_config *cfg, int li, qc_linear_id l);
/* The embedding, final norm and (untied) head as F16, to path (written as qc_pl_part_write does). */
qc_status qc_pl_write_base_part(const qc_model *m, const char *path, const qc_pipeline_opts *o);
qc_status qc_pl_push_str(char ***arr, int *n, const char *s);
/* The capture points, groups and folds of each architecture: arch.h (qc_linear_input, qc_arch_awq_groups,
 * qc_arch_desc's seq). */

/* Whether any linear of g will be quantized (a group kept whole in F16 is not searched: nothing to
 * protect, and AutoAWQ would not run on such shapes at all). */
bool qc_pl_awq_group_quantized(const qc_pipeline_opts *o, const int *out_features, const int *in_features,
                               const qc_arch_awq *g);

/* QC_ERR_NUMERIC naming the layer and capture point when the Hessian H [K, K] is not finite. */
qc_status qc_pl_check_hessian(const qc_model_config *cfg, const float *H, int K, int li, qc_linear_id cap);
/* Sets the F16 guard of qc_pl_to_f16 for the run in progress. */
void qc_pl_set_clamp_f16(bool clamp);

/* ---- the layer driver (pipeline_driver.c) ----
 * One schedule for both backends (the CPU in pipeline.c, CUDA in pipeline_gpu.c), read from the
 * architecture's description (arch.h): which linears are quantized or kept in F16 (qc_pl_packable), the
 * true-sequential groups and the capture points each needs, the Hessian passes, solves, reports and
 * progress callbacks; for AWQ the capture pass, the scale groups, their searches and folds, the error
 * report's Hessians and each linear's clipping and quantization, in that order. A backend keeps its own
 * copy of the current layer (host FP32 or device FP16) and does the arithmetic on it. */

/* An AWQ group's search result. */
typedef struct qc_pl_awq_choice {
    double ratio, loss;         /* ratio -1: not searched (the group is kept in F16) */
    qc_awq_formula formula;
    bool gram;                  /* CPU: the search left the unscaled X^T X of the group's input in its Hessian */
} qc_pl_awq_choice;

typedef struct qc_pl_backend_ops {
    /* GPTQ/RTN, before solving group gi of n_groups (n_groups 1: every linear at once): run the layer on
     * every sample with the groups before it in place, stopping after the last capture point in want, and
     * leave 2/rows X^T X of each wanted one, checked finite, where solve finds it (a capture no row reached:
     * a zero matrix); rows_out[cap] <- its rows. all_rows (MoE, NULL otherwise): experts whose down capture
     * gets every row sent through them (the layer's output keeps the routed rows). */
    qc_status (*hessians)(void *be, int li, int gi, int n_groups, const bool *want /* [QC_LIN_MAX] */,
                          const bool *all_rows /* [QC_EXPERTS_MAX] */, int64_t *rows_out /* [QC_LIN_MAX] */);
    /* The Hessian of capture point dst <- a copy of src's (both K x K, dst's allocated by hessians). */
    qc_status (*copy_hessian)(void *be, qc_linear_id dst, qc_linear_id src, int K);
    /* Solves linear l from its input's Hessian (GPTQ per the options, or RTN when the method is RTN or rtn
     * says so: an under-covered expert), puts W_hat into the layer, packs it into the layer's part and fills
     * its report row (the driver set its tokens and coverage). last_user: no later linear of this group reads
     * the same Hessian (the solver may consume it). */
    qc_status (*solve)(void *be, int li, qc_linear_id l, bool last_user, bool rtn);
    /* May be NULL. The n >= 2 adjacent GPTQ linears ls of a group that share an input (none rounded
     * instead), solved as one problem if the backend can (*taken <- true; each as solve would leave it)
     * or left to solve one by one (*taken <- false, nothing done). last_user as for solve, for the run. */
    qc_status (*solve_run)(void *be, int li, const qc_linear_id *ls, int n, bool last_user, bool *taken);
    /* Linear l goes into the part as F16 (why: the reason, for its report row), declared unquantized. */
    qc_status (*keep_f16)(void *be, int li, qc_linear_id l, const char *why);
    /* After group gi's solves; may be NULL. */
    qc_status (*group_done)(void *be, int li, int gi, int n_groups, const bool *want /* [QC_LIN_MAX] */);
    /* The activations <- the quantized layer applied to them (n_groups as for hessians). */
    qc_status (*propagate)(void *be, int li, int n_groups);
    /* AWQ: the original layer over every sample keeping every capture point's input; the activations <- its
     * output (the next layer's input is the FP layer's). */
    qc_status (*awq_capture)(void *be, int li);
    /* The grid search of group g on the original weights: s [in_features] <- the chosen scales. */
    qc_status (*awq_search)(void *be, int li, const qc_arch_awq *g, float *s, qc_pl_awq_choice *best);
    /* Folds s: the previous operation's output / s, g's linears' columns * s, the kept inputs / s. */
    qc_status (*awq_fold)(void *be, int li, const qc_arch_awq *g, const float *s);
    /* The Hessians of the scaled inputs at every capture point (for the error report and awq+gptq). */
    qc_status (*awq_hessians)(void *be, int li, const qc_arch_awq *g, int ng, float *const *scales,
                              const qc_pl_awq_choice *choice);
    /* Clips (unless the description exempts l) and quantizes linear l, packs it, fills its report row. */
    qc_status (*awq_quantize)(void *be, int li, qc_linear_id l);
} qc_pl_backend_ops;

typedef struct qc_pl_driver {
    const qc_model          *m;
    const qc_pipeline_opts  *o;
    qc_pipeline_result      *res;     /* res->lin [n_layers * res->lin_stride] allocated by the backend */
    const qc_pl_backend_ops *ops;
    void                    *be;      /* the backend's context, passed to every op */
    int                      done, total; /* linears reported so far / in the run (progress) */
    int64_t                  rows;    /* calibration rows (nsamples * seqlen): a linear's tokens */
    /* MoE, GPTQ/RTN: the current layer's experts' routed rows (-1: not counted) and which fell below
     * qc_pipeline_moe_min_rows (the coverage policy, pipeline_driver.c) */
    int64_t                  moe_rows[QC_EXPERTS_MAX];
    bool                     moe_low[QC_EXPERTS_MAX];
} qc_pl_driver;

/* Quantizes layer li on the backend (method per d->o) and reports each linear. */
qc_status qc_pl_layer(qc_pl_driver *d, int li);
/* Linears present in layers [0, n_layers) (the run's progress total and a resumed run's count). */
int qc_pl_count_linears(const qc_model_config *cfg, int n_layers);
/* Layer li's report row of linear l. */
qc_linear_report *qc_pl_row(qc_pl_driver *d, int li, qc_linear_id l);

/* The CUDA pipeline (pipeline_gpu.c; pipeline_nogpu.c in a CPU-only build says there is no backend). */
qc_status qc_pipeline_run_gpu(const qc_model *m, const int32_t *ids, int nsamples, int seqlen,
                              const qc_pipeline_opts *o, qc_pipeline_result *res);

#ifdef __cplusplus
}
#endif
#endif /* QC_PIPELINE_INTERNAL_H */
