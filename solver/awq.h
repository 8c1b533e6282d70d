/*
 * awq.h - the arithmetic of AWQ (spec B.3, E.3-E.5; AutoAWQ quantizer.py, llm-awq auto_scale/auto_clip).
 * The driver that runs modules for the scale search lives in calib/awq_pipeline.c; everything here is
 * pure math on weights [N, K] (rows = out_features, cols = in_features, row-major) and inputs
 * [T, K] row-major.
 *
 * Quantizer (per row, per group of gs consecutive inputs; not forced through 0, unlike GPTQ's):
 *   s = max(max - min, 1e-5) / maxq,  z = clamp(-round(min / s), 0, maxq)
 *   code = clamp(round(w / s) + z, 0, maxq),  w_hat = (code - z) * s      (round: half to even)
 */
#ifndef QC_AWQ_H
#define QC_AWQ_H

#include "gptq_format.h"

#ifdef __cplusplus
extern "C" {
#endif

void qc_awq_quant_params(const float *x, int n, int bits, float *scale, float *zero);
/* W[N, K] <- Qdq(W) with groups of gs along K (the search's pseudo-quantizer). */
void qc_awq_pseudo_quant(float *W, int N, int K, int bits, int gs);
/* Codes, scales and zeros of W into q (allocated with qc_qlinear_alloc, asym); W <- W_hat. */
qc_status qc_awq_quantize(float *W, int N, int K, int bits, int gs, qc_qlinear *q);

/* x_mean[c] = mean over rows of |X[t][c]|, accumulated in double. */
void qc_awq_x_mean(const float *X, int64_t T, int K, float *x_mean);
/* w_mean[c] = mean over the rows of all nw weights of |w| / (max |w| of its group + 1e-6). */
void qc_awq_w_mean(const float *const *W, const int *N, int nw, int K, int gs, float *w_mean);
/* Candidate scales for grid point ratio r (E.3): duo: x^r / (w^(1-r) + 1e-4), else x^r; clamped to
 * >= 1e-4, normalised by sqrt(max * min); inf/nan -> 1. */
void qc_awq_scales(const float *x_mean, const float *w_mean, int K, double r, bool duo, float *s);

/* The clipping search (E.5) for W [N, K] and its inputs X [T, K]: tokens sampled with stride
 * max(1, T / n_tokens); per (row, group) the max |w| shrunk by (1 - i/n_grid), i < max_shrink*n_grid,
 * keeping the one with the smallest mean squared output error; W is clamped to it (symmetric). */
qc_status qc_awq_clip(float *W, int N, int K, const float *X, int64_t T, int bits, int gs, int n_tokens, int n_grid,
                      double max_shrink);

#ifdef __cplusplus
}
#endif
#endif /* QC_AWQ_H */
