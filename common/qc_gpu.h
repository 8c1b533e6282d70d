/*
 * qc_gpu.h - the CUDA device context shared by every GPU module (forward pass, solvers, packing).
 *
 * One qc_gpu per device: its main stream (every kernel and cuBLAS/cuSOLVER call of the pipeline runs
 * on it, in order), a copy stream for layer streaming, the cuBLAS and cuSOLVER handles, and the
 * accounting of qcal's own device allocations (current and peak bytes).
 *
 *   qc_gpu *g;
 *   if (qc_gpu_open(0, &g)) { fprintf(stderr, "%s\n", qc_last_error()); ... }   // "cuda:0: ..."
 *   float *x;
 *   if (qc_gpu_alloc(g, (void **)&x, n * sizeof(float), "activations")) ...    // names size + free
 *   qc_gpu_upload(g, x, host, n * sizeof(float));
 *   ...
 *   qc_gpu_free(g, x);
 *   qc_gpu_close(g);
 *
 * A CPU-only build (QCAL_CUDA=OFF) links qc_gpu_nogpu.c: qc_gpu_built() is false and qc_gpu_open
 * fails with a message saying this build has no CUDA backend. Everything else here is only called
 * on an open context.
 *
 * Device pointers are plain void* / float* / uint16_t* (fp16 bit patterns) in the C API; .cu files
 * include qc_gpu_internal.h for the struct and the CUDA error-check macros.
 * Errors are statuses (QC_ERR_DEVICE, or QC_ERR_NOMEM for an allocation that does not fit, naming
 * how much was needed and how much is free). Not thread-safe: one thread drives a context, except
 * the layer loader, which only uses the copy stream and pinned memory.
 */
#ifndef QC_GPU_H
#define QC_GPU_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_gpu qc_gpu;

/* True when this build has the CUDA backend. */
bool qc_gpu_built(void);
/* Number of CUDA devices visible (0 without the backend, a driver or a device). */
int  qc_gpu_count(void);

/* Opens device `device` (cuda:N). Errors: no CUDA backend in this build, no driver/device, N out of
 * range (the message lists how many devices there are). */
qc_status qc_gpu_open(int device, qc_gpu **out);
void      qc_gpu_close(qc_gpu *g);
/* "NVIDIA H100 80GB HBM3 (cuda:0, sm_90, 79.1 GiB)" */
const char *qc_gpu_describe(const qc_gpu *g);
int       qc_gpu_device(const qc_gpu *g);

/* Device memory. `what` names the buffer in the out-of-memory message. qc_gpu_free(g, NULL) is a no-op. */
qc_status qc_gpu_alloc(qc_gpu *g, void **p, size_t bytes, const char *what);
void      qc_gpu_free(qc_gpu *g, void *p);
size_t    qc_gpu_bytes_in_use(const qc_gpu *g);   /* qcal's own live allocations */
size_t    qc_gpu_bytes_peak(const qc_gpu *g);     /* their high-water mark */
/* Device-wide high-water mark of used memory (total - free, sampled at each qc_gpu_alloc and
 * qc_gpu_sync): includes cuBLAS/cuSOLVER workspaces and the CUDA context. */
size_t    qc_gpu_bytes_peak_device(const qc_gpu *g);
qc_status qc_gpu_mem_info(qc_gpu *g, size_t *free_bytes, size_t *total_bytes);
/* What qc_gpu_alloc could still take: free device memory, within QCAL_GPU_MEM_LIMIT_MB if set. */
qc_status qc_gpu_mem_room(qc_gpu *g, size_t *room);

/* Pinned host memory (for async copies). */
qc_status qc_gpu_host_alloc(void **p, size_t bytes, const char *what);
void      qc_gpu_host_free(void *p);

/* Copies on the main stream; upload/download return when the copy is done. */
qc_status qc_gpu_upload(qc_gpu *g, void *dst_dev, const void *src_host, size_t bytes);
qc_status qc_gpu_download(qc_gpu *g, void *dst_host, const void *src_dev, size_t bytes);
qc_status qc_gpu_copy(qc_gpu *g, void *dst_dev, const void *src_dev, size_t bytes);      /* async */
qc_status qc_gpu_memset(qc_gpu *g, void *dst_dev, int byte, size_t bytes);              /* async */
/* Waits for the main stream; reports any asynchronous error (kernel faults) as QC_ERR_DEVICE. */
qc_status qc_gpu_sync(qc_gpu *g);

/* Element conversions on the main stream (async). fp16/bf16 are raw uint16_t bit patterns. */
qc_status qc_gpu_f32_to_f16(qc_gpu *g, const float *x, uint16_t *y, size_t n);
qc_status qc_gpu_f16_to_f32(qc_gpu *g, const uint16_t *x, float *y, size_t n);
qc_status qc_gpu_bf16_to_f16(qc_gpu *g, const uint16_t *x, uint16_t *y, size_t n);
/* x[i] *= a (fp32, n elements). */
qc_status qc_gpu_scale_f32(qc_gpu *g, float *x, size_t n, float a);
/* y[i] = fp16(x[i]) as float: rounds fp32 values to what fp16 storage keeps. */
qc_status qc_gpu_round_f16(qc_gpu *g, float *x, size_t n);

/* The reference rate of this run: median TFLOP/s of an n x n x n fp16 GEMM with fp32 accumulation
 * (cuBLAS, tensor cores) over `reps` runs after a warm-up, on random data. */
qc_status qc_gpu_gemm_tflops(qc_gpu *g, int n, int reps, double *tflops);

/* Raw handles for .cu/.c modules: cudaStream_t, cublasHandle_t, cusolverDnHandle_t. */
void *qc_gpu_stream(const qc_gpu *g);
void *qc_gpu_copy_stream(const qc_gpu *g);
void *qc_gpu_cublas(const qc_gpu *g);
void *qc_gpu_cusolver(const qc_gpu *g);

#ifdef __cplusplus
}
#endif
#endif /* QC_GPU_H */
