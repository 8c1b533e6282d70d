/* bench_factor_gpu K [K...]: the GPTQ inverse factor's two steps (Cholesky of the reversed Hessian, then the
 * inverse of the triangular factor) on the device in fp32, each as cuSOLVER does it and as a recursive
 * blocked twin built from cuBLAS level-3 calls, side by side on one random SPD matrix per K:
 *
 *   potrf      cusolverDnSpotrf (lower)              rpotrf  recursive: potrf | trsm | syrk
 *   trtri      cusolverDnXtrtri (lower, non-unit)    rtrtri  recursive: trtri | trmm | trmm
 *
 * Times are device times (cudaEvents), the median of 3; the twins' results are compared with cuSOLVER's
 * (max |a - b| / max |b| over the lower triangle). Speed only: the solver's results are tested in
 * tests/test_gpu_solver.c.
 *
 *   bench_factor_gpu 4096 14336        Llama-3.1-8B's two Hessian widths
 *   bench_factor_gpu 8192 28672        Llama-2-70B's */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        int e_ = (int)(x);                                                                                             \
        if (e_ != 0) {                                                                                                 \
            fprintf(stderr, "bench_factor_gpu: %s failed (%d) at line %d\n", #x, e_, __LINE__);                        \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static cusolverDnHandle_t sol;
static cublasHandle_t blas;
static float *ws;
static size_t ws_bytes;
static void *hws;
static size_t hws_bytes;
static int *info_d;

static void need_ws(size_t dev, size_t host) {
    if (dev > ws_bytes) {
        if (ws) CK(cudaFree(ws));
        CK(cudaMalloc((void **)&ws, dev));
        ws_bytes = dev;
    }
    if (host > hws_bytes) {
        free(hws);
        hws = malloc(host);
        hws_bytes = host;
    }
}

static void potrf(float *A, int n, int lda) {
    int lw = 0;
    CK(cusolverDnSpotrf_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, n, A, lda, &lw));
    need_ws(sizeof(float) * (size_t)lw, 0);
    CK(cusolverDnSpotrf(sol, CUBLAS_FILL_MODE_LOWER, n, A, lda, ws, (int)(ws_bytes / 4), info_d));
}

static void trtri(float *A, int n, int lda) {
    size_t d = 0, h = 0;
    CK(cusolverDnXtrtri_bufferSize(sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, A, lda, &d, &h));
    need_ws(d, h);
    CK(cusolverDnXtrtri(sol, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, A, lda, ws, ws_bytes, hws,
                        hws_bytes, info_d));
}

static int nb_base = 512;

/* [A11 .; A21 A22] of a column-major [n, n] A, split at a multiple of 128 near n / 2 */
typedef struct {
    int n1, n2;
    float *A21, *A22;
} blocks;

static blocks split(float *A, int n, int lda) {
    int n1 = n / 2 / 128 * 128;
    if (n1 < 128) n1 = n / 2;
    return (blocks){n1, n - n1, A + n1, A + (size_t)n1 * lda + n1};
}

/* column-major lower A [n, n] (lda) -> its Cholesky factor: [A11 .; A21 A22] with L11 = chol(A11),
 * L21 = A21 L11^-T, L22 = chol(A22 - L21 L21^T) */
static void rpotrf(float *A, int n, int lda) {
    if (n <= nb_base) {
        potrf(A, n, lda);
        return;
    }
    blocks b = split(A, n, lda);
    int n1 = b.n1, n2 = b.n2;
    float *A11 = A, *A21 = b.A21, *A22 = b.A22;
    const float one = 1.0f, mone = -1.0f;
    rpotrf(A11, n1, lda);
    CK(cublasStrsm(blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, n2, n1, &one,
                   A11, lda, A21, lda));
    CK(cublasSsyrk(blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n2, n1, &mone, A21, lda, &one, A22, lda));
    rpotrf(A22, n2, lda);
}

/* column-major lower L [n, n] -> L^-1: [L11 .; L21 L22]^-1 = [L11^-1 .; -L22^-1 L21 L11^-1, L22^-1] */
static void rtrtri(float *A, int n, int lda) {
    if (n <= nb_base) {
        trtri(A, n, lda);
        return;
    }
    blocks b = split(A, n, lda);
    int n1 = b.n1, n2 = b.n2;
    float *A11 = A, *A21 = b.A21, *A22 = b.A22;
    const float one = 1.0f, mone = -1.0f;
    /* L21 <- L21 L11^-1 needs the original L11; L22^-1 L21 the inverted L22: B first, then the diagonal */
    CK(cublasStrsm(blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n2, n1, &one,
                   A11, lda, A21, lda)); /* A21 <- A21 L11^-1 */
    CK(cublasStrsm(blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n2, n1, &mone,
                   A22, lda, A21, lda)); /* A21 <- -L22^-1 A21 */
    rtrtri(A11, n1, lda);
    rtrtri(A22, n2, lda);
}

/* the trmm form: invert the diagonal blocks first, then two triangular products in place */
static void rtrtri_mm(float *A, int n, int lda) {
    if (n <= nb_base) {
        trtri(A, n, lda);
        return;
    }
    blocks b = split(A, n, lda);
    int n1 = b.n1, n2 = b.n2;
    float *A11 = A, *A21 = b.A21, *A22 = b.A22;
    const float one = 1.0f, mone = -1.0f;
    rtrtri_mm(A11, n1, lda);
    rtrtri_mm(A22, n2, lda);
    CK(cublasStrmm(blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n2, n1, &one,
                   A11, lda, A21, lda, A21, lda));
    CK(cublasStrmm(blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n2, n1, &mone,
                   A22, lda, A21, lda, A21, lda));
}

static double maxdiff(const float *a, const float *b, int n) {
    double d = 0, m = 0;
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++) {
            double x = a[(size_t)j * n + i], y = b[(size_t)j * n + i];
            if (fabs(x - y) > d) d = fabs(x - y);
            if (fabs(y) > m) m = fabs(y);
        }
    return m > 0 ? d / m : d;
}

typedef void (*step_fn)(float *, int, int);

/* median device time (ms) of 3 runs of f on a copy of src, the last result left in dst */
static double timeit(step_fn f, const float *src, float *dst, int n) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    double t[3];
    for (int r = 0; r < 3; r++) {
        CK(cudaMemcpy(dst, src, sizeof(float) * (size_t)n * n, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(a, 0));
        f(dst, n, n);
        CK(cudaEventRecord(b, 0));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t[r] = ms;
        int info = 0;
        CK(cudaMemcpy(&info, info_d, sizeof info, cudaMemcpyDeviceToHost));
        if (info != 0) {
            fprintf(stderr, "bench_factor_gpu: info %d\n", info);
            exit(1);
        }
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    double lo = fmin(t[0], fmin(t[1], t[2])), hi = fmax(t[0], fmax(t[1], t[2]));
    return t[0] + t[1] + t[2] - lo - hi;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_factor_gpu K [K...]   (env NB: the recursion's base size, default 512)\n");
        return 2;
    }
    if (getenv("NB")) nb_base = atoi(getenv("NB"));
    CK(cusolverDnCreate(&sol));
    CK(cublasCreate(&blas));
    CK(cudaMalloc((void **)&info_d, sizeof(int)));
    printf("%6s %9s %9s %9s %9s %9s %9s %10s %10s\n", "K", "potrf", "rpotrf", "trtri", "rtrtri", "rtrtri_mm",
           "TF/s best", "rpotrf d", "rtrtri d");
    for (int ai = 1; ai < argc; ai++) {
        int n = atoi(argv[ai]);
        size_t nn = (size_t)n * n;
        float *h = malloc(sizeof(float) * nn), *r1 = malloc(sizeof(float) * nn), *r2 = malloc(sizeof(float) * nn);
        uint64_t s = 88172645463325252ull;
        for (size_t i = 0; i < nn; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            h[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        }
        float *X, *H, *F, *T;
        CK(cudaMalloc((void **)&X, sizeof(float) * nn));
        CK(cudaMalloc((void **)&H, sizeof(float) * nn));
        CK(cudaMalloc((void **)&F, sizeof(float) * nn));
        CK(cudaMalloc((void **)&T, sizeof(float) * nn));
        CK(cudaMemcpy(X, h, sizeof(float) * nn, cudaMemcpyHostToDevice));
        const float al = 1.0f / n, be = 0.0f;
        CK(cublasSsyrk(blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, n, &al, X, n, &be, H, n));
        CK(cudaMemcpy(h, H, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) h[(size_t)i * n + i] += 0.01f;
        CK(cudaMemcpy(H, h, sizeof(float) * nn, cudaMemcpyHostToDevice));
        double tp = timeit(potrf, H, F, n);
        CK(cudaMemcpy(r1, F, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        double trp = timeit(rpotrf, H, T, n);
        CK(cudaMemcpy(r2, T, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        double dp = maxdiff(r2, r1, n);
        double tt = timeit(trtri, F, T, n);
        CK(cudaMemcpy(r1, T, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        double trt = timeit(rtrtri, F, T, n);
        CK(cudaMemcpy(r2, T, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        double dt = maxdiff(r2, r1, n);
        double trm = timeit(rtrtri_mm, F, T, n);
        CK(cudaMemcpy(r2, T, sizeof(float) * nn, cudaMemcpyDeviceToHost));
        double dm = maxdiff(r2, r1, n);
        double fl = (double)n * n * n / 3.0, best = fmin(fmin(tp, trp), 1e30) + fmin(tt, fmin(trt, trm));
        printf("%6d %8.2fms %8.2fms %8.2fms %8.2fms %8.2fms %9.1f %10.1e %10.1e (mm %.1e)\n", n, tp, trp, tt, trt, trm,
               2 * fl / (best * 1e-3) / 1e12, dp, dt, dm);
        CK(cudaFree(X));
        CK(cudaFree(H));
        CK(cudaFree(F));
        CK(cudaFree(T));
        free(h);
        free(r1);
        free(r2);
    }
    return 0;
}
