/*
 * hessian.h - the input Hessian X^T X of a linear layer's calibration inputs, accumulated so that its
 * bits depend only on the samples: not on how the pipeline batches them (--batch-tokens), nor on the
 * thread count.
 *
 * A product's rounding depends on how the sum is split, so the split is fixed by the data's shape:
 * H is cut into fixed K-tiles (QC_HESSIAN_TILE square, the last ones narrower), and each tile adds
 * one sample (T rows) at a time, in sample order, with one single-threaded sgemm (ssyrk on the
 * diagonal) of a shape set by K and T only. Tiles are independent tasks on the qc_par pool.
 *
 *   float *H = calloc((size_t)K * K, sizeof(float));
 *   for (each batch of whole samples x [nrows, K], in sample order)
 *       qc_hessian_accumulate(H, K, x, nrows, T);
 *   // H's upper triangle (row-major, i <= j) now holds sum over rows r of x_r^T x_r; the caller
 *   // scales it and mirrors it to the lower triangle, which is left as it was.
 *
 * Ownership: nothing is kept; H and x belong to the caller.
 */
#ifndef QC_HESSIAN_H
#define QC_HESSIAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Width of the Hessian tiles (a shape, fixed: changing it changes the bits of every Hessian). */
#define QC_HESSIAN_TILE 128

/* H [K, K] row-major, upper triangle += x^T x for x [nrows, K] row-major, made of nrows / T samples of
 * T rows each (a trailing partial sample, if any, counts as one sample of nrows % T rows). */
void qc_hessian_accumulate(float *H, int K, const float *x, int64_t nrows, int T);

#ifdef __cplusplus
}
#endif
#endif /* QC_HESSIAN_H */
