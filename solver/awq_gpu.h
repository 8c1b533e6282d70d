/*
 * awq_gpu.h - the arithmetic of AWQ on a CUDA device: the GPU twins of awq.h's functions used by the
 * pipeline's scale search, scale folding and clipping search (spec E.3-E.5). Device pointers
 * throughout; fp16 weights/activations are uint16_t bit patterns. All async on the main stream
 * unless a host output is returned (then the call waits).
 */
#ifndef QC_AWQ_GPU_H
#define QC_AWQ_GPU_H

#include "qc_gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x_mean[c] (host, K floats) = mean over rows of |X[t][c]|, X fp16 [T, K]; as qc_awq_x_mean. */
qc_status qc_gpu_awq_x_mean(qc_gpu *g, const uint16_t *X, int64_t T, int K, float *x_mean_host);
/* w_mean (host, K floats) over nw fp16 weights W[i] [N[i], K], as qc_awq_w_mean. */
qc_status qc_gpu_awq_w_mean(qc_gpu *g, const uint16_t *const *W, const int *N, int nw, int K, int gs,
                            float *w_mean_host);
/* out[N, K] (fp16) = Qdq(W * s) / s with groups of gs along K (AWQ pseudo-quantizer, spec B.3);
 * W fp16 [N, K], s fp32 [K] device. */
qc_status qc_gpu_awq_scaled_qdq(qc_gpu *g, const uint16_t *W, const float *s, int N, int K, int bits, int gs,
                                uint16_t *out);
/* sum (a - b)^2 over n fp32 elements, returned on the host (double accumulation). */
qc_status qc_gpu_sqdiff_sum(qc_gpu *g, const float *a, const float *b, size_t n, double *out_host);
/* The same sum in two steps, with nothing waited for: qc_gpu_sqdiff_parts queues the partial sums into
 * part (device, qc_gpu_sqdiff_parts_count(n) <= QC_GPU_SQDIFF_PARTS_MAX doubles); once they are downloaded,
 * qc_gpu_sqdiff_parts_total adds them up in qc_gpu_sqdiff_sum's order (so the totals are the same bits). */
#define QC_GPU_SQDIFF_PARTS_MAX 1024
unsigned  qc_gpu_sqdiff_parts_count(size_t n);
qc_status qc_gpu_sqdiff_parts(qc_gpu *g, const float *a, const float *b, size_t n, double *part);
double    qc_gpu_sqdiff_parts_total(const double *part_host, size_t n);

/* Folding: W[:, k] *= s[k] (cols), W[n, :] /= s[n - row0] for rows row0..row0+len-1 (rows),
 * v[k] /= s[k] (fp32 vectors: norms, biases), X[t, k] /= s[k] for fp16 X [T, K]. */
qc_status qc_gpu_scale_cols_f16(qc_gpu *g, uint16_t *W, int N, int K, const float *s);
qc_status qc_gpu_div_rows_f16(qc_gpu *g, uint16_t *W, int N, int K, int row0, int len, const float *s);
qc_status qc_gpu_div_vec_f32(qc_gpu *g, float *v, int n, const float *s);
/* v[k] = (off + v[k]) / s[k] - off: a (1 + w) norm (Gemma, off 1) divided by s; off 0 is qc_gpu_div_vec_f32. */
qc_status qc_gpu_div_vec_offset_f32(qc_gpu *g, float *v, int n, const float *s, float off);
qc_status qc_gpu_div_cols_act_f16(qc_gpu *g, uint16_t *X, int64_t T, int K, const float *s);

/* The clipping search (qc_awq_clip): W fp32 [N, K] clamped in place to the best max |w| per
 * (row, group); X fp16 [T, K] the linear's (scaled) input; tokens sampled with stride
 * max(1, T / n_tokens); candidates max|w| * (1 - i / n_grid) for i < max_shrink * n_grid. */
qc_status qc_gpu_awq_clip(qc_gpu *g, float *W, int N, int K, const uint16_t *X, int64_t T, int bits, int gs,
                          int n_tokens, int n_grid, double max_shrink);
/* The same search summing over the sampled tokens one by one (the plain twin; groups over 128 always
 * take it): qc_gpu_awq_clip uses each group's Gram matrix of the sampled tokens instead, gs^2 work per
 * row and candidate in place of tokens * gs. The two errors are the same sums in another order, so a
 * near-tie between candidates can go either way. */
qc_status qc_gpu_awq_clip_tokens(qc_gpu *g, float *W, int N, int K, const uint16_t *X, int64_t T, int bits, int gs,
                                 int n_tokens, int n_grid, double max_shrink);

#ifdef __cplusplus
}
#endif
#endif /* QC_AWQ_GPU_H */
