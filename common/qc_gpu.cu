/* qc_gpu.cu - the CUDA device context (see qc_gpu.h). */
#include "qc_gpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {

bool qc_gpu_built(void) { return true; }

int qc_gpu_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

const char *qc_cublas_status_str(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed (out of GPU memory)";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR: return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown cuBLAS status";
    }
}

const char *qc_cusolver_status_str(cusolverStatus_t s) {
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "allocation failed (out of GPU memory)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
    default: return "unknown cuSOLVER status";
    }
}

void qc_gpu_sample_mem(qc_gpu *g) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        if (tot - fr > g->peak_device) g->peak_device = tot - fr;
    } else {
        cudaGetLastError();
    }
}

qc_status qc_gpu_open(int device, qc_gpu **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return qc_fail(QC_ERR_DEVICE, "cuda:%d: no usable CUDA device (%s); use --device cpu", device,
                       e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
    }
    if (device < 0 || device >= n)
        return qc_fail(QC_ERR_ARG, "cuda:%d: no such device (this machine has %d CUDA device%s: cuda:0%s)", device, n,
                       n == 1 ? "" : "s", n == 1 ? "" : " .. cuda:N-1");
    qc_gpu *g = (qc_gpu *)calloc(1, sizeof *g);
    if (!g) return qc_fail(QC_ERR_NOMEM, "out of memory");
    g->device = device;
    qc_status st = QC_OK;
#define OPEN_CHECK(call, what)                                                                   \
    if (st == QC_OK) {                                                                           \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "cuda:%d: %s: %s", device, what, cudaGetErrorString(e_)); \
    }
    OPEN_CHECK(cudaSetDevice(device), "cannot select the device");
    OPEN_CHECK(cudaGetDeviceProperties(&g->prop, device), "cannot read the device properties");
    OPEN_CHECK(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking), "cannot create a stream");
    OPEN_CHECK(cudaStreamCreateWithFlags(&g->copy_stream, cudaStreamNonBlocking), "cannot create a stream");
#undef OPEN_CHECK
    if (st == QC_OK) {
        cublasStatus_t bs = cublasCreate(&g->blas);
        if (bs != CUBLAS_STATUS_SUCCESS) st = qc_fail(QC_ERR_DEVICE, "cuda:%d: cuBLAS: %s", device, qc_cublas_status_str(bs));
        else cublasSetStream(g->blas, g->stream);
    }
    if (st == QC_OK) {
        cusolverStatus_t ss = cusolverDnCreate(&g->solver);
        if (ss != CUSOLVER_STATUS_SUCCESS)
            st = qc_fail(QC_ERR_DEVICE, "cuda:%d: cuSOLVER: %s", device, qc_cusolver_status_str(ss));
        else cusolverDnSetStream(g->solver, g->stream);
    }
    if (st != QC_OK) {
        qc_gpu_close(g);
        return st;
    }
    size_t fr = 0;
    cudaMemGetInfo(&fr, &g->total);
    snprintf(g->desc, sizeof g->desc, "%s (cuda:%d, sm_%d%d, %.1f GiB)", g->prop.name, device, g->prop.major,
             g->prop.minor, (double)g->total / (1 << 30));
    qc_gpu_sample_mem(g);
    *out = g;
    return QC_OK;
}

void qc_gpu_close(qc_gpu *g) {
    if (!g) return;
    cudaSetDevice(g->device);
    if (g->stream) cudaStreamSynchronize(g->stream);
    for (int i = 0; i < g->n_recs; i++) cudaFree(g->recs[i].p);
    free(g->recs);
    if (g->solver) cusolverDnDestroy(g->solver);
    if (g->blas) cublasDestroy(g->blas);
    if (g->copy_stream) cudaStreamDestroy(g->copy_stream);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}

const char *qc_gpu_describe(const qc_gpu *g) { return g->desc; }
int qc_gpu_device(const qc_gpu *g) { return g->device; }

qc_status qc_gpu_alloc(qc_gpu *g, void **p, size_t bytes, const char *what) {
    *p = NULL;
    if (bytes == 0) bytes = 1;
    if (g->n_recs == g->cap_recs) {
        int cap = g->cap_recs ? g->cap_recs * 2 : 64;
        qc_gpu_alloc_rec *r = (qc_gpu_alloc_rec *)realloc(g->recs, sizeof *r * (size_t)cap);
        if (!r) return qc_fail(QC_ERR_NOMEM, "out of host memory");
        g->recs = r;
        g->cap_recs = cap;
    }
    /* QCAL_GPU_MEM_LIMIT_MB caps qcal's own allocations, as if the device were that small (tests of
     * the out-of-memory path, planning for a smaller card). */
    const char *lim = getenv("QCAL_GPU_MEM_LIMIT_MB");
    bool over = lim && *lim && g->in_use + bytes > (size_t)strtoull(lim, NULL, 10) << 20;
    cudaError_t e = over ? cudaErrorMemoryAllocation : cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        *p = NULL;
        return qc_fail(QC_ERR_NOMEM,
                       "cuda:%d: out of GPU memory: %s needs %.1f MiB, %.1f MiB free of %.1f MiB%s "
                       "(qcal holds %.1f MiB); use fewer calibration samples or a smaller seqlen, or --device cpu",
                       g->device, what ? what : "a buffer", bytes / 1048576.0,
                       over ? (double)(((size_t)strtoull(lim, NULL, 10) << 20) - g->in_use) / 1048576.0 : fr / 1048576.0,
                       over ? (double)strtoull(lim, NULL, 10) : tot / 1048576.0,
                       over ? " under QCAL_GPU_MEM_LIMIT_MB" : "", g->in_use / 1048576.0);
    }
    g->recs[g->n_recs++] = (qc_gpu_alloc_rec){*p, bytes};
    g->in_use += bytes;
    if (g->in_use > g->peak) g->peak = g->in_use;
    qc_gpu_sample_mem(g);
    return QC_OK;
}

void qc_gpu_free(qc_gpu *g, void *p) {
    if (!p) return;
    for (int i = 0; i < g->n_recs; i++)
        if (g->recs[i].p == p) {
            g->in_use -= g->recs[i].bytes;
            g->recs[i] = g->recs[--g->n_recs];
            cudaFree(p);
            return;
        }
    QC_ASSERT(!"qc_gpu_free: pointer not allocated by qc_gpu_alloc");
}

size_t qc_gpu_bytes_in_use(const qc_gpu *g) { return g->in_use; }
size_t qc_gpu_bytes_peak(const qc_gpu *g) { return g->peak; }
size_t qc_gpu_bytes_peak_device(const qc_gpu *g) { return g->peak_device; }

qc_status qc_gpu_mem_info(qc_gpu *g, size_t *free_bytes, size_t *total_bytes) {
    (void)g;
    QC_CU(cudaMemGetInfo(free_bytes, total_bytes));
    return QC_OK;
}

qc_status qc_gpu_mem_room(qc_gpu *g, size_t *room) {
    size_t fr = 0, tot = 0;
    QC_CU(cudaMemGetInfo(&fr, &tot));
    const char *lim = getenv("QCAL_GPU_MEM_LIMIT_MB"); /* as qc_gpu_alloc applies it */
    if (lim && *lim) {
        size_t cap = (size_t)strtoull(lim, NULL, 10) << 20, left = cap > g->in_use ? cap - g->in_use : 0;
        if (fr > left) fr = left;
    }
    *room = fr;
    return QC_OK;
}

qc_status qc_gpu_host_alloc(void **p, size_t bytes, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return qc_fail(QC_ERR_NOMEM, "cannot allocate %.1f MiB of pinned host memory for %s: %s", bytes / 1048576.0,
                       what ? what : "a buffer", cudaGetErrorString(e));
    }
    return QC_OK;
}

void qc_gpu_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

qc_status qc_gpu_upload(qc_gpu *g, void *dst, const void *src, size_t bytes) {
    QC_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream));
    QC_CU(cudaStreamSynchronize(g->stream));
    return QC_OK;
}

qc_status qc_gpu_download(qc_gpu *g, void *dst, const void *src, size_t bytes) {
    QC_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream));
    QC_CU(cudaStreamSynchronize(g->stream));
    return QC_OK;
}

qc_status qc_gpu_copy(qc_gpu *g, void *dst, const void *src, size_t bytes) {
    QC_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g->stream));
    return QC_OK;
}

qc_status qc_gpu_memset(qc_gpu *g, void *dst, int byte, size_t bytes) {
    QC_CU(cudaMemsetAsync(dst, byte, bytes, g->stream));
    return QC_OK;
}

qc_status qc_gpu_sync(qc_gpu *g) {
    QC_CU(cudaStreamSynchronize(g->stream));
    QC_CU(cudaGetLastError());
    qc_gpu_sample_mem(g);
    return QC_OK;
}

} /* extern "C" */

/* ---- conversions ---- */
static __device__ __forceinline__ float cvt_in(float x) { return x; }
static __device__ __forceinline__ float cvt_in(__half x) { return __half2float(x); }
static __device__ __forceinline__ float cvt_in(__nv_bfloat16 x) { return __bfloat162float(x); }
static __device__ __forceinline__ void cvt_out(float v, float *y) { *y = v; }
static __device__ __forceinline__ void cvt_out(float v, __half *y) { *y = __float2half_rn(v); }

/* y[i] = x[i] converted through float (x == y allowed when the sizes match: each thread reads, then writes,
 * its own element). */
template <typename S, typename D> static __global__ void k_cvt(const S *x, D *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        cvt_out(cvt_in(x[i]), &y[i]);
}
static __global__ void k_round_f16(float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __half2float(__float2half_rn(x[i]));
}
static __global__ void k_scale_f32(float *x, size_t n, float a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}
static __global__ void k_fill_random_f16(__half *x, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
        x[i] = __float2half_rn(((float)(h & 0xffffff) / 16777216.0f - 0.5f));
    }
}

extern "C" {

qc_status qc_gpu_convert(qc_gpu *g, cudaStream_t stream, qc_dtype from, qc_dtype to, const void *x, void *y,
                         size_t n) {
    (void)g;
    if (!n) return QC_OK;
    unsigned grid = qc_grid(n, 256);
    if (to == QC_DTYPE_F16 && from == QC_DTYPE_F32)
        k_cvt<<<grid, 256, 0, stream>>>((const float *)x, (__half *)y, n);
    else if (to == QC_DTYPE_F16 && from == QC_DTYPE_BF16)
        k_cvt<<<grid, 256, 0, stream>>>((const __nv_bfloat16 *)x, (__half *)y, n);
    else if (to == QC_DTYPE_F32 && from == QC_DTYPE_F16)
        k_cvt<<<grid, 256, 0, stream>>>((const __half *)x, (float *)y, n);
    else if (to == QC_DTYPE_F32 && from == QC_DTYPE_BF16)
        k_cvt<<<grid, 256, 0, stream>>>((const __nv_bfloat16 *)x, (float *)y, n);
    else
        return qc_fail(QC_ERR_UNSUPPORTED, "gpu conversion from %s to %s", qc_dtype_name(from), qc_dtype_name(to));
    QC_CU_LAUNCH("conversion");
    return QC_OK;
}

qc_status qc_gpu_f32_to_f16(qc_gpu *g, const float *x, uint16_t *y, size_t n) {
    return qc_gpu_convert(g, g->stream, QC_DTYPE_F32, QC_DTYPE_F16, x, y, n);
}
qc_status qc_gpu_f16_to_f32(qc_gpu *g, const uint16_t *x, float *y, size_t n) {
    return qc_gpu_convert(g, g->stream, QC_DTYPE_F16, QC_DTYPE_F32, x, y, n);
}
qc_status qc_gpu_bf16_to_f16(qc_gpu *g, const uint16_t *x, uint16_t *y, size_t n) {
    return qc_gpu_convert(g, g->stream, QC_DTYPE_BF16, QC_DTYPE_F16, x, y, n);
}
qc_status qc_gpu_scale_f32(qc_gpu *g, float *x, size_t n, float a) {
    if (!n) return QC_OK;
    k_scale_f32<<<qc_grid(n, 256), 256, 0, g->stream>>>(x, n, a);
    QC_CU_LAUNCH("scale_f32");
    return QC_OK;
}
qc_status qc_gpu_round_f16(qc_gpu *g, float *x, size_t n) {
    if (!n) return QC_OK;
    k_round_f16<<<qc_grid(n, 256), 256, 0, g->stream>>>(x, n);
    QC_CU_LAUNCH("round_f16");
    return QC_OK;
}

qc_status qc_gpu_gemm_tflops(qc_gpu *g, int n, int reps, double *tflops) {
    *tflops = 0;
    size_t nn = (size_t)n * n;
    void *a = NULL, *b = NULL, *c = NULL;
    qc_status st = qc_gpu_alloc(g, &a, nn * 2, "GEMM benchmark A");
    if (st == QC_OK) st = qc_gpu_alloc(g, &b, nn * 2, "GEMM benchmark B");
    if (st == QC_OK) st = qc_gpu_alloc(g, &c, nn * 4, "GEMM benchmark C");
    cudaEvent_t e0 = NULL, e1 = NULL;
    std::vector<float> ms;
    if (st == QC_OK) {
        k_fill_random_f16<<<qc_grid(nn, 256), 256, 0, g->stream>>>((__half *)a, nn, 1u);
        k_fill_random_f16<<<qc_grid(nn, 256), 256, 0, g->stream>>>((__half *)b, nn, 2u);
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        const float one = 1.0f, zero = 0.0f;
        for (int r = -2; r < reps && st == QC_OK; r++) {
            cudaEventRecord(e0, g->stream);
            cublasStatus_t s = cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16F, n, b,
                                            CUDA_R_16F, n, &zero, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                            CUBLAS_GEMM_DEFAULT);
            cudaEventRecord(e1, g->stream);
            if (s != CUBLAS_STATUS_SUCCESS) st = qc_fail(QC_ERR_DEVICE, "GEMM benchmark: %s", qc_cublas_status_str(s));
            else if (cudaEventSynchronize(e1) != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "GEMM benchmark failed");
            float t = 0;
            cudaEventElapsedTime(&t, e0, e1);
            if (r >= 0) ms.push_back(t);
        }
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    qc_gpu_free(g, a);
    qc_gpu_free(g, b);
    qc_gpu_free(g, c);
    if (st == QC_OK && !ms.empty()) {
        std::sort(ms.begin(), ms.end());
        double med = ms[ms.size() / 2] * 1e-3;
        *tflops = 2.0 * n * (double)n * n / med / 1e12;
    }
    return st;
}

void *qc_gpu_stream(const qc_gpu *g) { return (void *)g->stream; }
void *qc_gpu_copy_stream(const qc_gpu *g) { return (void *)g->copy_stream; }
void *qc_gpu_cublas(const qc_gpu *g) { return (void *)g->blas; }
void *qc_gpu_cusolver(const qc_gpu *g) { return (void *)g->solver; }

} /* extern "C" */
