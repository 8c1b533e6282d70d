/*
 * quant_gpu.h - GPTQ, RTN and packing on a CUDA device: the GPU twins of quant.h and the packers of
 * gptq_format.h / awq_format.h, giving the same results (up to fp32 rounding-order ties).
 *
 * GPTQ (spec D.3), as qc_gptq_quantize: dead columns, damping (with the same retry on a failed
 * Cholesky: damp += damp_step), act-order, static groups, the reference's group quirk, lazy batches:
 *   - the upper Cholesky factor of the inverse through cuSOLVER: potrf of the reversed H, then trtri
 *     (half the flops of potrf, potri, potrf, the plain twin kept for the tests);
 *   - each 128-column block quantized by ONE fused kernel (columns sequential inside the kernel, rows
 *     across thread groups, 4 to 16 threads sharing a row's later columns: qc_gpu_solver_sweep, the
 *     block's Hinv tile in shared memory), not one launch per column;
 *   - the lazy trailing update W[:, j2:] -= Err . Hinv[j1:j2, j2:] with one cuBLAS SGEMM (fp32; the R
 *     form's may run as 3xTF32 instead, qc_gpu_solver_lazy_fp32).
 *
 *   qc_gpu_solver *s;  qc_gpu_solver_create(g, max_N, max_K, &s);
 *   qc_qlinear q;      qc_qlinear_alloc(&q, N, K, 4, 128, true, false);       // host
 *   qc_gptq_quantize_gpu(s, W_dev, H_dev, N, K, &opts, &q, want_codes, &stats);
 *   // W_dev is now W_hat (fp32); q.scales/zeros/g_idx are filled on the host; the codes stay in s
 *   qc_gpu_pack(s, &q, QC_GPU_PACK_GPTQ_V2, qweight, qzeros, scales16);     // host outputs
 *
 * Ownership: the solver owns its device workspace (sized for max_N x max_K and max_K x max_K) and
 * the device codes of the last linear it solved; W_dev/H_dev belong to the caller.
 */
#ifndef QC_QUANT_GPU_H
#define QC_QUANT_GPU_H

#include "gptq_format.h"
#include "qc_gpu.h"
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_gpu_solver qc_gpu_solver;
qc_status qc_gpu_solver_create(qc_gpu *g, int max_N, int max_K, qc_gpu_solver **out);
void      qc_gpu_solver_free(qc_gpu_solver *s);
/* Device bytes qc_gpu_solver_create would take. */
size_t    qc_gpu_solver_bytes(int max_N, int max_K);
/* The same with the weight-sized buffers bounded by max_NK elements (<= max_N * max_K): a model's
 * largest linear, rather than its largest N times its largest K. */
qc_status qc_gpu_solver_create_nk(qc_gpu *g, int max_N, int max_K, size_t max_NK, qc_gpu_solver **out);
size_t    qc_gpu_solver_bytes_nk(int max_N, int max_K, size_t max_NK);

/* W: device fp32 [N, K] -> W_hat; H: device fp32 [K, K] (full symmetric), overwritten by its factor
 * (which qc_gptq_quantize_gpu_again uses; the solver keeps a pointer, never frees it). q: host,
 * allocated by the caller with qc_qlinear_alloc(N, K, bits, group_size, sym, ...): scales, zeros and
 * g_idx are written; q->codes too when want_codes (else the codes stay on the device for qc_gpu_pack).
 * Failure after the last damping retry: QC_ERR_NUMERIC, as on the CPU. */
qc_status qc_gptq_quantize_gpu(qc_gpu_solver *s, float *W, float *H, int N, int K, const qc_gptq_opts *o,
                               qc_qlinear *q, bool want_codes, qc_gptq_stats *st);
/* GPTQ of another linear with the same H (q/k/v, gate/up): the factor that the last qc_gptq_quantize_gpu
 * left in its H buffer, which the caller has left untouched since, is used again (no factorisation);
 * options as that call's (damping, act-order; for the R form the blocksize, and a group size that keeps
 * it; QC_ERR_ARG otherwise). Results equal a fresh call's on a
 * copy of the same H, bit for bit; st's damping, retries and dead columns are the factorisation's. */
qc_status qc_gptq_quantize_gpu_again(qc_gpu_solver *s, float *W, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                                     bool want_codes, qc_gptq_stats *st);
/* The plain twins of two fast paths, for the tests and benchmarks that compare them: factor as gptq.c does
 * (potrf, potri, potrf, and the reference's U sweep; not the R form of one potrf, gptq_gpu.cu
 * inverse_factor, nor potrf + trtri; the same result to fp32 rounding) and sweep a row per thread (not
 * the default kernel's several, same bits). Switching the factor drops the one kept for qc_gptq_quantize_gpu_again. */
void      qc_gpu_solver_plain(qc_gpu_solver *s, bool factor, bool sweep);
/* The sweep kernel by its shape, for the tests and benchmarks that compare them (every one gives the same
 * bits): rows per thread block and threads per row; (0, 0) picks by N (the default), (64, 1) is the plain
 * twin. QC_ERR_ARG for a shape not on offer. */
qc_status qc_gpu_solver_sweep(qc_gpu_solver *s, int rows, int tpr);
/* The R form's trailing update G += F_c R[c, >c] in strict fp32 (cuBLAS SGEMM, on: the default and the plain
 * twin) or as 3xTF32 (off: gptq_gpu.cu gemm_3xtf32, fp32-level accuracy on the matrix units). Returns the
 * setting it replaces. */
bool      qc_gpu_solver_lazy_fp32(qc_gpu_solver *s, bool on);
/* The shapes on offer: i = 0 the plain twin, then each kernel; false past the last. */
bool      qc_gpu_sweep_kernel(int i, int *rows, int *tpr);
/* Round-to-nearest with the GPTQ quantizer (quant.h), same outputs as qc_rtn_quantize. */
qc_status qc_rtn_quantize_gpu(qc_gpu_solver *s, float *W, int N, int K, int bits, int group_size, bool sym,
                              qc_qlinear *q, bool want_codes);
/* AWQ's asymmetric quantizer (awq.h qc_awq_quantize): W device fp32 [N, K] -> W_hat. */
qc_status qc_awq_quantize_gpu(qc_gpu_solver *s, float *W, int N, int K, int bits, int group_size, qc_qlinear *q,
                              bool want_codes);

typedef enum qc_gpu_pack_format { QC_GPU_PACK_GPTQ = 0, QC_GPU_PACK_GPTQ_V2 = 1, QC_GPU_PACK_AWQ = 2 } qc_gpu_pack_format;
/* Packs the device codes of the last linear solved with q's host scales/zeros/g_idx, on the device,
 * into host buffers of exactly the sizes and layouts qc_gptq_pack (v1: zeros - 1, v2: raw) and
 * qc_awq_pack produce (spec A.1-A.3, B.1-B.2). */
qc_status qc_gpu_pack(qc_gpu_solver *s, const qc_qlinear *q, qc_gpu_pack_format fmt, int32_t *qweight,
                      int32_t *qzeros, uint16_t *scales_f16);

/* Narrows "the last linear solved" to its rows [row0, row0 + N), for qc_gpu_pack and
 * qc_gpu_solver_quad_form_saved: several linears sharing an input solved as one (their weights stacked
 * along N, rows being independent in GPTQ) are then packed and reported one by one. The next solve widens
 * it again. QC_ERR_ARG when no codes are held or the rows lie outside the last solve's. */
qc_status qc_gpu_solver_rows(qc_gpu_solver *s, int row0, int N);

/* tr(D H D^T) for device D [N, K], H [K, K] (fp32, accumulated in double at the end). */
qc_status qc_gpu_quad_form(qc_gpu_solver *s, const float *D, const float *H, int N, int K, double *out);
/* tr(D H D^T) with the H of the last GPTQ linear solved, from the solver's own (permuted) copy: lets
 * the caller hand its only copy of H to qc_gptq_quantize_gpu. D is destroyed. */
qc_status qc_gpu_solver_quad_form_saved(qc_gpu_solver *s, float *D, int N, int K, double *out);
/* The same tr(D H D^T) of the last GPTQ solve (rows of its window), D = W0 - What and What [N, K] on the
 * device (original column order), from the sweep's own loss (E U = W0 - Q, so no N K^2 product; see
 * gptq_gpu.cu): equal to the quadratic form up to the sweep's fp32 rounding (1e-7 relative, up to about
 * 1e-4 for an ill-conditioned H, as on the CPU). Neither is changed. Not yet what the pipeline reports. */
qc_status qc_gpu_solver_error(qc_gpu_solver *s, const float *D, const float *What, int N, int K, double *out);
/* D <- A - B elementwise, device fp32, n elements. */
qc_status qc_gpu_sub(qc_gpu *g, const float *A, const float *B, float *D, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* QC_QUANT_GPU_H */
