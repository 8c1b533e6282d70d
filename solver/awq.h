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

/* The scale formulas of the search (E.3). Values are stable: they reach the report (by name) and the
 * resume state (by value). */
typedef enum qc_awq_formula {
    QC_AWQ_F_NONE = 0,  /* no search ran (nothing of the group is quantized) */
    QC_AWQ_F_DUO = 1,   /* AutoAWQ duo scaling: x^r / (w^(1-r) + 1e-4) */
    QC_AWQ_F_X = 2,     /* llm-awq: x^r */
} qc_awq_formula;
/* "duo", "x", "none" */
const char *qc_awq_formula_name(qc_awq_formula f);

/* Which formulas the grid search tries. best: both, per group the one with the lower loss. */
typedef enum qc_awq_scale_mode {
    QC_AWQ_SCALE_AUTOAWQ = 0,
    QC_AWQ_SCALE_LLM_AWQ = 1,
    QC_AWQ_SCALE_BEST = 2,
} qc_awq_scale_mode;

/* The search's candidates in evaluation order: the ratios j / n_grid (j < n_grid) of AutoAWQ's formula,
 * then (best) those of llm-awq's. Candidate i of qc_awq_n_candidates(mode, n_grid): its formula and r.
 * The search keeps the first candidate with the strictly smallest loss, so on a tie AutoAWQ's wins; a
 * candidate whose scales equal the other formula's at the same r (duo with a constant w_mean) need not
 * be evaluated at all. */
int  qc_awq_n_candidates(qc_awq_scale_mode mode, int n_grid);
void qc_awq_candidate(qc_awq_scale_mode mode, int n_grid, int i, qc_awq_formula *f, double *r);
/* Candidate i's formula, r and scales s[K] (qc_awq_scales of x_mean, w_mean); false when it need not be
 * evaluated: under best, an x^r candidate whose scales equal duo's at the same r (tmp[K]: scratch). */
bool qc_awq_candidate_scales(qc_awq_scale_mode mode, int n_grid, int i, const float *x_mean, const float *w_mean,
                             int K, qc_awq_formula *f, double *r, float *s, float *tmp);

/* The output error of a single linear from the Gram matrix of its inputs: for D = W - W_hat [N, K]
 * (row-major) and G = X^T X [K, K] (full, symmetric, row-major) returns tr(D G D^T) = sum over tokens
 * of ||D x_t||^2, i.e. T * N times the search's loss mean((W X^T - W_hat X^T)^2). O(N K^2) instead of
 * the forward's O(T N K). tmp: [N, K] scratch. Rows in fixed blocks on the qc_par pool, each row's
 * d G d^T summed in double, the blocks summed in order: the bits do not depend on the thread count.
 * The plain twin is the forward itself (the pipeline's awq_plain_search; tests/test_awq*.c). */
double qc_awq_quad_loss(const float *D, const float *G, int N, int K, float *tmp);

/* The clipping search (E.5) for W [N, K] and its inputs X [T, K]: tokens sampled with stride
 * max(1, T / n_tokens); per (row, group) the max |w| shrunk by (1 - i/n_grid), i < max_shrink*n_grid,
 * keeping the one with the smallest mean squared output error; W is clamped to it (symmetric). */
qc_status qc_awq_clip(float *W, int N, int K, const float *X, int64_t T, int bits, int gs, int n_tokens, int n_grid,
                      double max_shrink);

#ifdef __cplusplus
}
#endif
#endif /* QC_AWQ_H */
