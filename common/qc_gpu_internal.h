/*
 * qc_gpu_internal.h - for .cu files only: the qc_gpu struct and the error-check macros that turn a
 * CUDA/cuBLAS/cuSOLVER failure into a qc_status with a message naming the call and the place.
 *
 *   QC_CU(cudaMemcpyAsync(...));            // returns QC_ERR_DEVICE from the enclosing function
 *   kernel<<<grid, block, 0, g->stream>>>(...);
 *   QC_CU_LAUNCH("kernel");                 // checks the launch
 *   QC_CUBLAS(cublasGemmEx(...));
 */
#ifndef QC_GPU_INTERNAL_H
#define QC_GPU_INTERNAL_H

#include "qc_gpu.h"
#include "safetensors.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

struct qc_gpu_alloc_rec {
    void  *p;
    size_t bytes;
};

struct qc_gpu {
    int                device;
    cudaDeviceProp     prop;
    cudaStream_t       stream;      /* main stream: all compute, in order */
    cudaStream_t       copy_stream; /* layer streaming */
    cublasHandle_t     blas;        /* bound to stream */
    cusolverDnHandle_t solver;      /* bound to stream */
    qc_gpu_alloc_rec  *recs;
    int                n_recs, cap_recs;
    size_t             in_use, peak, peak_device, total;
    char               desc[192];
};

#ifdef __cplusplus
extern "C" {
#endif
const char *qc_cublas_status_str(cublasStatus_t s);
const char *qc_cusolver_status_str(cusolverStatus_t s);
/* y[i] = x[i] from dtype `from` to `to` on `stream` (async): F32/BF16 -> F16, F16/BF16 -> F32; x == y
 * allowed for BF16 -> F16 (in place). The public qc_gpu_*_to_* are this on the main stream. */
qc_status qc_gpu_convert(qc_gpu *g, cudaStream_t stream, qc_dtype from, qc_dtype to, const void *x, void *y, size_t n);
/* Samples total - free into g->peak_device. */
void qc_gpu_sample_mem(qc_gpu *g);
#ifdef __cplusplus
}
#endif

#define QC_CU(call)                                                                                  \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess)                                                                       \
            return qc_fail(QC_ERR_DEVICE, "CUDA error at %s:%d (%s): %s", __FILE__, __LINE__, #call, \
                           cudaGetErrorString(e_));                                                  \
    } while (0)

#define QC_CU_LAUNCH(name)                                                                           \
    do {                                                                                             \
        cudaError_t e_ = cudaGetLastError();                                                         \
        if (e_ != cudaSuccess)                                                                       \
            return qc_fail(QC_ERR_DEVICE, "CUDA kernel %s failed to launch at %s:%d: %s", name,      \
                           __FILE__, __LINE__, cudaGetErrorString(e_));                              \
    } while (0)

#define QC_CUBLAS(call)                                                                              \
    do {                                                                                             \
        cublasStatus_t s_ = (call);                                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                             \
            return qc_fail(QC_ERR_DEVICE, "cuBLAS error at %s:%d (%s): %s", __FILE__, __LINE__,      \
                           #call, qc_cublas_status_str(s_));                                         \
    } while (0)

#define QC_CUSOLVER(call)                                                                            \
    do {                                                                                             \
        cusolverStatus_t s_ = (call);                                                                \
        if (s_ != CUSOLVER_STATUS_SUCCESS)                                                           \
            return qc_fail(QC_ERR_DEVICE, "cuSOLVER error at %s:%d (%s): %s", __FILE__, __LINE__,    \
                           #call, qc_cusolver_status_str(s_));                                       \
    } while (0)

/* Grid size for n elements with `threads` per block, capped for grid-stride loops. */
static inline unsigned qc_grid(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return b ? (unsigned)b : 1u;
}

#endif /* QC_GPU_INTERNAL_H */
