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

/* One tensor of a part file; data is owned by the list. */
typedef struct {
    char     name[200];
    qc_dtype dtype;
    int      ndim;
    int64_t  shape[2];
    void    *data;
    size_t   nbytes;
} qc_pl_tensor;

typedef struct {
    qc_pl_tensor *t;
    int n, cap;
} qc_pl_parts;

/* Takes ownership of data (freed on failure too). ndim 1 ignores d1. */
qc_status qc_pl_part_add(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, void *data,
                         size_t nbytes);
/* F32 -> F16 with the run's guard: a non-finite value, or one beyond the F16 range (unless the run clamps),
 * is QC_ERR_NUMERIC naming `name` and the element. */
qc_status qc_pl_to_f16(const char *name, const float *x, size_t n, uint16_t *h);
/* Whether every value of the layer's weights, biases and norms is finite; QC_ERR_NUMERIC naming the tensor
 * and the element otherwise. */
qc_status qc_pl_check_layer(const qc_model_config *cfg, const qc_layer *layer, int li);
/* F32 values -> a new F16 tensor (d1 == 0: 1-D), guarded as qc_pl_to_f16. */
qc_status qc_pl_part_add_f16(qc_pl_parts *p, const char *name, const float *x, int64_t d0, int64_t d1);
/* Writes the buffered tensors as one safetensors file (atomically). */
qc_status qc_pl_part_write(qc_pl_parts *p, const char *path);
void      qc_pl_part_free(qc_pl_parts *p);
/* The embedding, final norm and (untied) head as F16, to path. */
qc_status qc_pl_write_base_part(const qc_model *m, const char *path);
qc_status qc_pl_push_str(char ***arr, int *n, const char *s);
/* The capture points, groups and folds of each architecture: arch.h (qc_linear_input, qc_arch_awq_groups,
 * qc_arch_desc's seq). */

/* Whether any linear of g will be quantized (a group kept whole in F16 is not searched: nothing to
 * protect, and AutoAWQ would not run on such shapes at all). */
bool qc_pl_awq_group_quantized(const qc_pipeline_opts *o, const int *out_features, const int *in_features,
                               const qc_arch_awq *g);

/* QC_ERR_NUMERIC naming the layer and capture point when the Hessian H [K, K] is not finite. */
qc_status qc_pl_check_hessian(const float *H, int K, int li, qc_linear_id cap);
/* Sets the F16 guard of qc_pl_to_f16 for the run in progress. */
void qc_pl_set_clamp_f16(bool clamp);

/* The CUDA pipeline (pipeline_gpu.c; pipeline_nogpu.c in a CPU-only build says there is no backend). */
qc_status qc_pipeline_run_gpu(const qc_model *m, const int32_t *ids, int nsamples, int seqlen,
                              const qc_pipeline_opts *o, qc_pipeline_result *res);

#ifdef __cplusplus
}
#endif
#endif /* QC_PIPELINE_INTERNAL_H */
