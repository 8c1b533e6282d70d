/*
 * quant.h - the min/max uniform quantizer of the GPTQ reference (IST-DASLab quant.py, copied into
 * AutoGPTQ and GPTQModel), GPTQ's error-compensating solver, and round-to-nearest (RTN).
 *
 * Quantizer for one group slice x of a row (spec A.3):
 *   xmin = min(0, min x), xmax = max(0, max x); sym: xmax = max(|xmin|, xmax), xmin = -xmax if xmin < 0
 *   both 0 -> [-1, +1];  s = (xmax - xmin) / maxq;  z = sym ? (maxq+1)/2 : round(-xmin / s)
 *   code = clamp(round(w / s) + z, 0, maxq),  w_hat = s * (code - z)
 * round is half to even (rintf), all in fp32 as torch does.
 *
 * GPTQ (spec D.3): W [N, K] row-major fp32 and H [K, K] (H = 2/n X^T X of the layer's inputs) give
 * integer codes, per-group scales/zeros and g_idx in a qc_qlinear (allocated by the caller with
 * qc_qlinear_alloc), and W is overwritten with the fake-quantized weight W_hat.
 *
 *   qc_qlinear q; qc_qlinear_alloc(&q, N, K, 4, 128, true, false);
 *   qc_gptq_opts o = qc_gptq_default_opts();     // 4 bits, g128, sym, damp 0.01
 *   qc_gptq_stats s;
 *   if (qc_gptq_quantize(W, H, N, K, &o, &q, &s)) ...   // H is destroyed
 */
#ifndef QC_QUANT_H
#define QC_QUANT_H

#include "gptq_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scale and zero of x[0], x[stride], ..., x[(n-1)*stride]. */
void qc_quant_params(const float *x, int n, int stride, int bits, bool sym, float *scale, float *zero);

/* The reference's optional MSE search (quant.py Quantizer.configure(mse=True, norm=2.4, grid=100,
 * maxshrink=0.8), find_params): starting from the min/max range above, the range [p*xmin, p*xmax]
 * for p = 1 - i/100, i = 0..79, is tried (sym: the zero stays (maxq+1)/2; asym: z = round(-p*xmin/s))
 * and the params with the strictly smallest sum |Q(x) - x|^2.4 over the slice are kept. fp32 like
 * torch, except that the error sum is accumulated in double (only a near-tie can tell the difference).
 * About 80 times the cost of qc_quant_params. */
void qc_quant_params_mse(const float *x, int n, int stride, int bits, bool sym, float *scale, float *zero);
#define QC_MSE_NORM      2.4
#define QC_MSE_GRID      100
#define QC_MSE_MAXSHRINK 80   /* int(maxshrink * grid) = int(0.8 * 100) grid points */

static inline int qc_quant_code(float w, float scale, float zero, int maxq) {
    float q = __builtin_rintf(w / scale) + zero;
    return q < 0.0f ? 0 : q > (float)maxq ? maxq : (int)q;
}

typedef struct qc_gptq_opts {
    int    bits;           /* 2, 3, 4, 8 */
    int    group_size;     /* > 0 dividing K, or -1 */
    bool   sym;
    bool   act_order;      /* desc_act: columns in decreasing diag(H) order */
    bool   static_groups;  /* group params fixed up front from the original contiguous groups */
    double damp;           /* fraction of mean(diag H) added to the diagonal, (0, 1) */
    double damp_step;      /* added to damp on each failed Cholesky, until damp >= 1 (GPTQModel) */
    int    blocksize;      /* lazy-batch width, 128 */
    bool   ref_group_quirk;/* reference: a group starting inside a block takes its params from W
                              without that block's earlier updates (spec D.3 step 7). Default true. */
    bool   fp16_scales;    /* round scales to fp16 before quantizing with them (spec D.3 deviation;
                              default false = reference behaviour) */
    bool   mse;            /* group (and row) params by qc_quant_params_mse instead of min/max; also read
                              by qc_rtn_quantize_opts. Default false. CPU only. */
} qc_gptq_opts;

typedef struct qc_gptq_stats {
    double damp_used;      /* final damping fraction */
    int    retries;        /* Cholesky failures before success */
    int    dead_cols;      /* columns with diag(H) == 0 */
    double loss;           /* sum (w - q)^2 / d^2 / 2, the reference's diagnostic */
    double seconds;
    double t_factor;       /* of seconds: damping, Cholesky and inverse factor (GPU: device time) */
    double t_sweep;        /* of seconds: the blocked column sweep and its lazy updates (GPU: device time) */
} qc_gptq_stats;

qc_gptq_opts qc_gptq_default_opts(void);

/* QC_ERR_ARG unless o and q describe a valid N x K GPTQ problem (bits, group size dividing K, damping,
 * blocksize, q allocated for that shape); shared by the CPU and GPU solvers. */
qc_status qc_gptq_check_args(int N, int K, const qc_gptq_opts *o, const qc_qlinear *q);

/* The blocked solver (LAPACKE Cholesky, OpenBLAS GEMM for the lazy batch updates). */
qc_status qc_gptq_quantize(float *W, float *H, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                           qc_gptq_stats *st);
/* Its plain twin: scalar Cholesky and inverse, no blocking, every update applied at once. Same results
 * as qc_gptq_quantize when ref_group_quirk is false or every group starts at a block boundary. */
qc_status qc_gptq_quantize_ref(float *W, float *H, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                               qc_gptq_stats *st);

/* Round-to-nearest with the same quantizer and groups (g_idx = k / gs); W becomes W_hat. */
qc_status qc_rtn_quantize(float *W, int N, int K, int bits, int group_size, bool sym, qc_qlinear *q);
/* The same with the bits, group size, symmetry and mse of o (the rest of o is ignored). */
qc_status qc_rtn_quantize_opts(float *W, int N, int K, const qc_gptq_opts *o, qc_qlinear *q);

#ifdef __cplusplus
}
#endif
#endif /* QC_QUANT_H */
