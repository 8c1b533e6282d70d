/* awq_gpu.cu - AWQ's arithmetic on the device (see awq_gpu.h); the CPU twins are in awq.c.
 *
 * Bit-exactness: the quantizer uses the same fp32 operations as qc_awq_quant_params and awq_code,
 * spelled with the _rn intrinsics so that nvcc cannot contract them into FMAs, and rintf (half to
 * even). Column means accumulate in double like the CPU; only the summation order differs.
 *
 * The clipping search: one block per (group, 128 rows), one thread per row. For a candidate max m
 * a thread holds d = Qdq(clamp(w, m)) - w for its row in registers (gs <= 128) and walks the
 * sampled tokens, tiled through shared memory in fp32, accumulating (d . x_t)^2 in double. That is
 * out_t - ref_t of the CPU, which computes the two products separately in fp32 and subtracts: the
 * errors agree to fp32 rounding, so a near-tie between candidates can go the other way (rare). */
#include "awq_gpu.h"
#include "qc_gpu_internal.h"

#include <math.h>
#include <stdlib.h>

namespace {

constexpr int kThreads = 256;
constexpr int kClipRows = 128; /* rows (threads) per clip block */
constexpr int kClipTile = 64;  /* sampled tokens per shared-memory tile (gs <= 128 paths) */

__device__ __forceinline__ void quant_params(float mx, float mn, int maxq, float *s, float *z) {
    float range = __fsub_rn(mx, mn);
    float sc = __fdiv_rn(range > 1e-5f ? range : 1e-5f, (float)maxq);
    float zz = -rintf(__fdiv_rn(mn, sc));
    *s = sc;
    *z = zz < 0.0f ? 0.0f : zz > (float)maxq ? (float)maxq : zz;
}

__device__ __forceinline__ float qdq(float w, float s, float z, int maxq) {
    float q = __fadd_rn(rintf(__fdiv_rn(w, s)), z);
    int c = q < 0.0f ? 0 : q > (float)maxq ? maxq : (int)q;
    return __fmul_rn(__fsub_rn((float)c, z), s);
}

__device__ __forceinline__ float clampm(float w, float m) { return w < -m ? -m : w > m ? m : w; }

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* part[chunk][c] = sum over the chunk's rows of |X[t][c]| (double). */
__global__ void k_colsum_abs_f16(const __half *X, int64_t T, int K, int64_t rows_per_chunk, double *part) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= K) return;
    int64_t t0 = (int64_t)blockIdx.y * rows_per_chunk, t1 = t0 + rows_per_chunk < T ? t0 + rows_per_chunk : T;
    double acc = 0.0;
    for (int64_t t = t0; t < t1; t++) acc += fabsf(__half2float(X[t * K + c]));
    part[(size_t)blockIdx.y * K + c] = acc;
}

/* inv[n * G + g] = 1 / (max |w| of the group + 1e-6): one warp per (row, group). */
__global__ void k_group_inv(const __half *W, int N, int K, int gs, float *inv) {
    int G = K / gs;
    int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (wid >= (int64_t)N * G) return;
    int n = (int)(wid / G), g = (int)(wid % G);
    const __half *w = W + (size_t)n * K + (size_t)g * gs;
    float mx = 0.0f;
    for (int k = lane; k < gs; k += 32) mx = fmaxf(mx, fabsf(__half2float(w[k])));
    mx = warp_max(mx);
    if (lane == 0) inv[wid] = __fdiv_rn(1.0f, __fadd_rn(mx, 1e-6f));
}

/* part[chunk][c] (+)= sum over the chunk's rows of |w[n][c]| * inv[n][c / gs]. */
__global__ void k_colsum_wnorm(const __half *W, int N, int K, int gs, const float *inv, int rows_per_chunk,
                               bool add, double *part) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= K) return;
    int n0 = blockIdx.y * rows_per_chunk, n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
    int G = K / gs, g = c / gs;
    double acc = 0.0;
    for (int n = n0; n < n1; n++) acc += __fmul_rn(fabsf(__half2float(W[(size_t)n * K + c])), inv[(size_t)n * G + g]);
    size_t o = (size_t)blockIdx.y * K + c;
    part[o] = add ? part[o] + acc : acc;
}

/* out[c] = (sum over chunks of part[chunk][c]) / denom, chunks in order. */
__global__ void k_colsum_finish(const double *part, int nchunk, int K, double denom, float *out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= K) return;
    double s = 0.0;
    for (int i = 0; i < nchunk; i++) s += part[(size_t)i * K + c];
    out[c] = (float)(s / denom);
}

/* out = Qdq(W * s) / s, one warp per (row, group). */
__global__ void k_scaled_qdq(const __half *W, const float *s, int N, int K, int maxq, int gs, __half *out) {
    int G = K / gs;
    int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (wid >= (int64_t)N * G) return;
    int n = (int)(wid / G), g = (int)(wid % G);
    size_t base = (size_t)n * K + (size_t)g * gs;
    const float *sg = s + (size_t)g * gs;
    float mx = -INFINITY, mn = INFINITY;
    for (int k = lane; k < gs; k += 32) {
        float v = __fmul_rn(__half2float(W[base + k]), sg[k]);
        mx = fmaxf(mx, v);
        mn = fminf(mn, v);
    }
    mx = warp_max(mx);
    mn = warp_min(mn);
    float sc, z;
    quant_params(mx, mn, maxq, &sc, &z);
    for (int k = lane; k < gs; k += 32) {
        float v = __fmul_rn(__half2float(W[base + k]), sg[k]);
        out[base + k] = __float2half_rn(__fdiv_rn(qdq(v, sc, z, maxq), sg[k]));
    }
}

/* part[block] = sum of (a - b)^2 over the block's grid-stride share, in double. */
__global__ void k_sqdiff(const float *a, const float *b, size_t n, double *part) {
    __shared__ double red[kThreads / 32];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double d = (double)a[i] - (double)b[i];
        acc += d * d;
    }
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) s += red[w];
        part[blockIdx.x] = s;
    }
}

__global__ void k_scale_cols_f16(__half *W, size_t n, int K, const float *s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        W[i] = __float2half_rn(__fmul_rn(__half2float(W[i]), s[i % K]));
}

__global__ void k_div_cols_f16(__half *X, size_t n, int K, const float *s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        X[i] = __float2half_rn(__fdiv_rn(__half2float(X[i]), s[i % K]));
}

/* W [len rows starting at W, K]: row r /= s[r]. */
__global__ void k_div_rows_f16(__half *W, size_t n, int K, const float *s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        W[i] = __float2half_rn(__fdiv_rn(__half2float(W[i]), s[i / K]));
}

__global__ void k_div_vec_f32(float *v, int n, const float *s) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = __fdiv_rn(v[i], s[i]);
}

__global__ void k_div_vec_offset_f32(float *v, int n, const float *s, float off) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        v[i] = __fsub_rn(__fdiv_rn(__fadd_rn(off, v[i]), s[i]), off);
}

/* The clip kernels' shared steps: a (row, group)'s max |w|, max and min; candidate i's max m and its
 * quantizer params; the strict tie rule; the final clamp to the chosen max. */
__device__ __forceinline__ void group_range(const float *w, int gs, float *m0, float *mx0, float *mn0) {
    float m = 0.0f, mx = w[0], mn = w[0];
    for (int k = 0; k < gs; k++) {
        float a = w[k];
        m = fabsf(a) > m ? fabsf(a) : m;
        mx = a > mx ? a : mx;
        mn = a < mn ? a : mn;
    }
    *m0 = m;
    *mx0 = mx;
    *mn0 = mn;
}

__device__ __forceinline__ float clip_candidate(float m0, int i, int n_grid, float mx0, float mn0, int maxq, float *sc,
                                                float *z) {
    float m = __fmul_rn(m0, __fsub_rn(1.0f, __fdiv_rn((float)i, (float)n_grid)));
    /* clamp is monotone, so the clamped group's max/min are the clamped max/min */
    quant_params(clampm(mx0, m), clampm(mn0, m), maxq, sc, z);
    return m;
}

/* d = Qdq(clamp(w, m)) - w for one weight, and for a group's gs (<= GSM; zeros past gs) */
__device__ __forceinline__ float clip_diff(float a, float m, float sc, float z, int maxq) {
    return __fsub_rn(qdq(clampm(a, m), sc, z, maxq), a);
}

template <int GSM>
__device__ __forceinline__ void clip_diffs(const float *w, int gs, float m, float sc, float z, int maxq, float (&d)[GSM]) {
#pragma unroll
    for (int k = 0; k < GSM; k++) d[k] = k < gs ? clip_diff(w[k], m, sc, z, maxq) : 0.0f;
}

__device__ __forceinline__ void clip_keep(double e, float m, double *best_err, float *best) {
    if (e < *best_err) { /* strictly smaller: the first of equal candidates wins, as on the CPU */
        *best_err = e;
        *best = m;
    }
}

__device__ __forceinline__ void clip_apply(float *w, int gs, float best, bool live) {
    if (live)
        for (int k = 0; k < gs; k++) w[k] = clampm(w[k], best);
}

/* The clipping search. GSM > 0: gs <= GSM, d in registers (padded with zeros, the tile too).
 * GSM == 0: any gs, d in the global scratch D [K][Npad] (column per thread, coalesced), tile of
 * `tile` tokens. Blocks: x = group, y = chunk of kClipRows rows. Shared: xs [tile][gsp] fp32. */
template <int GSM>
__global__ void __launch_bounds__(kClipRows) k_awq_clip(float *W, int N, int K, const __half *X, int64_t step, int Ts,
                                                         int gs, int maxq, int n_grid, int steps, int tile, float *D,
                                                         int Npad) {
    extern __shared__ float4 xs4[];
    float *xs = reinterpret_cast<float *>(xs4);
    const int g = blockIdx.x, tid = threadIdx.x;
    const int row = blockIdx.y * kClipRows + tid;
    const bool live = row < N;
    const int gsp = GSM ? GSM : ((gs + 3) & ~3);
    float *w = W + (size_t)(live ? row : N - 1) * K + (size_t)g * gs;

    float m0, mx0, mn0;
    group_range(w, gs, &m0, &mx0, &mn0);
    float best = m0;
    double best_err = 1e9;
    float d[GSM ? GSM : 1];
    float *dcol = D ? D + (size_t)g * gs * Npad + blockIdx.y * kClipRows + tid : NULL;

    for (int i = 0; i < steps; i++) {
        float sc, z;
        float m = clip_candidate(m0, i, n_grid, mx0, mn0, maxq, &sc, &z);
        if constexpr (GSM > 0) {
            clip_diffs<GSM>(w, gs, m, sc, z, maxq, d);
        } else {
            for (int k = 0; k < gs; k++) dcol[(size_t)k * Npad] = clip_diff(w[k], m, sc, z, maxq);
        }
        double e = 0.0;
        for (int t0 = 0; t0 < Ts; t0 += tile) {
            int nt = Ts - t0 < tile ? Ts - t0 : tile;
            __syncthreads();
            for (int idx = tid; idx < tile * gsp; idx += kClipRows) {
                int tt = idx / gsp, k = idx - tt * gsp;
                float v = 0.0f;
                if (tt < nt && k < gs) v = __half2float(X[(size_t)((int64_t)(t0 + tt) * step) * K + (size_t)g * gs + k]);
                xs[idx] = v;
            }
            __syncthreads();
            int nt4 = (nt + 3) & ~3; /* tokens nt..nt4-1 of the tile are zeros: they add 0 */
            for (int tt = 0; tt < nt4; tt += 4) {
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
                if constexpr (GSM > 0) {
                    const float4 *x0 = xs4 + (size_t)tt * (GSM / 4);
#pragma unroll
                    for (int k4 = 0; k4 < GSM / 4; k4++) {
                        float4 p = x0[k4], q = x0[k4 + GSM / 4], r = x0[k4 + 2 * (GSM / 4)], u = x0[k4 + 3 * (GSM / 4)];
                        a0 = fmaf(d[4 * k4], p.x, a0); a0 = fmaf(d[4 * k4 + 1], p.y, a0);
                        a0 = fmaf(d[4 * k4 + 2], p.z, a0); a0 = fmaf(d[4 * k4 + 3], p.w, a0);
                        a1 = fmaf(d[4 * k4], q.x, a1); a1 = fmaf(d[4 * k4 + 1], q.y, a1);
                        a1 = fmaf(d[4 * k4 + 2], q.z, a1); a1 = fmaf(d[4 * k4 + 3], q.w, a1);
                        a2 = fmaf(d[4 * k4], r.x, a2); a2 = fmaf(d[4 * k4 + 1], r.y, a2);
                        a2 = fmaf(d[4 * k4 + 2], r.z, a2); a2 = fmaf(d[4 * k4 + 3], r.w, a2);
                        a3 = fmaf(d[4 * k4], u.x, a3); a3 = fmaf(d[4 * k4 + 1], u.y, a3);
                        a3 = fmaf(d[4 * k4 + 2], u.z, a3); a3 = fmaf(d[4 * k4 + 3], u.w, a3);
                    }
                } else {
                    const float *x0 = xs + (size_t)tt * gsp;
                    for (int k = 0; k < gs; k++) {
                        float dk = dcol[(size_t)k * Npad];
                        a0 = fmaf(dk, x0[k], a0);
                        a1 = fmaf(dk, x0[k + gsp], a1);
                        a2 = fmaf(dk, x0[k + 2 * gsp], a2);
                        a3 = fmaf(dk, x0[k + 3 * gsp], a3);
                    }
                }
                e += (double)a0 * a0;
                e += (double)a1 * a1;
                e += (double)a2 * a2;
                e += (double)a3 * a3;
            }
        }
        e /= Ts;
        clip_keep(e, m, &best_err, &best);
    }
    clip_apply(w, gs, best, live);
}

/* The clipping search by Gram matrices: sum over tokens of (d . x_t)^2 = d^T Gm d with Gm = sum_t x_t x_t^T over
 * the sampled tokens, one gs x gs matrix per group shared by every row and candidate, so a candidate costs
 * gs^2 multiply-adds a row instead of Ts * gs (4x fewer at 512 tokens and g128). Same candidates, the same
 * strict tie rule; the error is the same sum in another order (k_awq_clip's twin: test_gpu_awq compares
 * both with the CPU and with each other).
 *
 * k_awq_gram: gram[g][i][j] for i, j < GSM (zeros past gs): products of fp16 inputs are exact in fp32,
 * summed in double, stored fp32. Block per (group, 16 rows of the matrix), 256 threads: thread (i, j0)
 * sums columns j0 + 16c. */
constexpr int kGramTile = 64;
template <int GSM>
__global__ void __launch_bounds__(256) k_awq_gram(const __half *X, int K, int64_t step, int Ts, int gs, float *gram) {
    __shared__ float xs[kGramTile][GSM];
    constexpr int NC = GSM / 16;
    const int g = blockIdx.x, tid = threadIdx.x, i = blockIdx.y * 16 + tid / 16, j0 = tid % 16;
    double acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0;
    for (int t0 = 0; t0 < Ts; t0 += kGramTile) {
        int nt = Ts - t0 < kGramTile ? Ts - t0 : kGramTile;
        __syncthreads();
        for (int idx = tid; idx < kGramTile * GSM; idx += 256) {
            int tt = idx / GSM, k = idx - tt * GSM;
            float v = 0.0f;
            if (tt < nt && k < gs) v = __half2float(X[(size_t)((int64_t)(t0 + tt) * step) * K + (size_t)g * gs + k]);
            xs[tt][k] = v;
        }
        __syncthreads();
        for (int tt = 0; tt < nt; tt++) {
            float xi = xs[tt][i];
#pragma unroll
            for (int c = 0; c < NC; c++) acc[c] += (double)__fmul_rn(xi, xs[tt][j0 + 16 * c]);
        }
    }
#pragma unroll
    for (int c = 0; c < NC; c++) gram[((size_t)g * GSM + i) * GSM + j0 + 16 * c] = (float)acc[c];
}

/* Block per (group, kClipRows rows), thread per row; the group's Gram matrix in shared memory. */
template <int GSM>
__global__ void __launch_bounds__(kClipRows) k_awq_clip_gram(float *W, int N, int K, const float *gram, int Ts, int gs,
                                                              int maxq, int n_grid, int steps) {
    extern __shared__ float4 gm4[];
    const int g = blockIdx.x, tid = threadIdx.x;
    const int row = blockIdx.y * kClipRows + tid;
    const bool live = row < N;
    const float4 *src = reinterpret_cast<const float4 *>(gram + (size_t)g * GSM * GSM);
    for (int idx = tid; idx < GSM * GSM / 4; idx += kClipRows) gm4[idx] = src[idx];
    __syncthreads();
    float *w = W + (size_t)(live ? row : N - 1) * K + (size_t)g * gs;
    float m0, mx0, mn0;
    group_range(w, gs, &m0, &mx0, &mn0);
    float best = m0;
    double best_err = 1e9;
    float d[GSM];
    for (int i = 0; i < steps; i++) {
        float sc, z;
        float m = clip_candidate(m0, i, n_grid, mx0, mn0, maxq, &sc, &z);
        clip_diffs<GSM>(w, gs, m, sc, z, maxq, d);
        double e = 0.0;
        for (int r = 0; r < gs; r++) {
            const float4 *gr = gm4 + (size_t)r * (GSM / 4);
            float u0 = 0.0f, u1 = 0.0f, u2 = 0.0f, u3 = 0.0f;
#pragma unroll
            for (int k4 = 0; k4 < GSM / 4; k4++) {
                float4 p = gr[k4];
                u0 = fmaf(d[4 * k4], p.x, u0);
                u1 = fmaf(d[4 * k4 + 1], p.y, u1);
                u2 = fmaf(d[4 * k4 + 2], p.z, u2);
                u3 = fmaf(d[4 * k4 + 3], p.w, u3);
            }
            float dr = clip_diff(w[r], m, sc, z, maxq); /* d[r], recomputed: r is not a constant */
            e += (double)dr * (double)((u0 + u1) + (u2 + u3));
        }
        e /= Ts;
        clip_keep(e, m, &best_err, &best);
    }
    clip_apply(w, gs, best, live);
}

template <int GSM>
qc_status launch_clip_gram(qc_gpu *g, dim3 grid, float *W, int N, int K, const __half *X, int64_t step, int Ts, int gs,
                           int maxq, int n_grid, int steps) {
    float *gram = NULL;
    qc_status st = qc_gpu_alloc(g, (void **)&gram, sizeof(float) * (size_t)grid.x * GSM * GSM, "awq clip Gram matrices");
    if (st) return st;
    k_awq_gram<GSM><<<dim3(grid.x, GSM / 16), 256, 0, g->stream>>>(X, K, step, Ts, gs, gram);
    cudaError_t e = cudaGetLastError();
    size_t smem = sizeof(float) * GSM * GSM;
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(k_awq_clip_gram<GSM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) {
        k_awq_clip_gram<GSM><<<grid, kClipRows, smem, g->stream>>>(W, N, K, gram, Ts, gs, maxq, n_grid, steps);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "awq clip (Gram): %s", cudaGetErrorString(e));
    if (st == QC_OK) st = qc_gpu_sync(g);
    qc_gpu_free(g, gram);
    return st;
}

qc_status check_gs(const char *what, int K, int gs) {
    if (gs <= 0 || K <= 0 || K % gs != 0)
        return qc_fail(QC_ERR_ARG, "%s: group size %d does not divide %d", what, gs, K);
    return QC_OK;
}

qc_status check_bits(const char *what, int bits) {
    if (bits < 1 || bits > 8) return qc_fail(QC_ERR_ARG, "%s: bits must be 1..8, not %d", what, bits);
    return QC_OK;
}

template <int GSM>
qc_status launch_clip(qc_gpu *g, dim3 grid, size_t smem, float *W, int N, int K, const __half *X, int64_t step,
                      int Ts, int gs, int maxq, int n_grid, int steps, int tile, float *D, int Npad) {
    QC_CU(cudaFuncSetAttribute(k_awq_clip<GSM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    k_awq_clip<GSM><<<grid, kClipRows, smem, g->stream>>>(W, N, K, X, step, Ts, gs, maxq, n_grid, steps, tile, D, Npad);
    QC_CU_LAUNCH("k_awq_clip");
    return QC_OK;
}

/* part [nchunk][K] (double) -> host out[K] = column sums / denom. */
qc_status finish_colsum(qc_gpu *g, const double *part, int nchunk, int K, double denom, float *out_host) {
    float *out = NULL;
    qc_status st = qc_gpu_alloc(g, (void **)&out, sizeof(float) * (size_t)K, "awq column means");
    if (st) return st;
    k_colsum_finish<<<qc_grid((size_t)K, kThreads), kThreads, 0, g->stream>>>(part, nchunk, K, denom, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "CUDA kernel k_colsum_finish failed to launch: %s", cudaGetErrorString(e));
    if (st == QC_OK) st = qc_gpu_download(g, out_host, out, sizeof(float) * (size_t)K);
    qc_gpu_free(g, out);
    return st;
}

} /* namespace */

extern "C" {

qc_status qc_gpu_awq_x_mean(qc_gpu *g, const uint16_t *X, int64_t T, int K, float *x_mean_host) {
    if (T <= 0 || K <= 0) return qc_fail(QC_ERR_ARG, "awq x_mean: empty input [%lld, %d]", (long long)T, K);
    int col_blocks = (K + kThreads - 1) / kThreads;
    int64_t nchunk = (8 * g->prop.multiProcessorCount + col_blocks - 1) / col_blocks;
    if (nchunk > T) nchunk = T;
    if (nchunk > 65535) nchunk = 65535;
    int64_t rpc = (T + nchunk - 1) / nchunk;
    nchunk = (T + rpc - 1) / rpc;
    double *part = NULL;
    qc_status st = qc_gpu_alloc(g, (void **)&part, sizeof(double) * (size_t)nchunk * K, "awq x_mean partial sums");
    if (st) return st;
    k_colsum_abs_f16<<<dim3(col_blocks, (unsigned)nchunk), kThreads, 0, g->stream>>>((const __half *)X, T, K, rpc, part);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "CUDA kernel k_colsum_abs_f16 failed to launch: %s", cudaGetErrorString(e));
    if (st == QC_OK) st = finish_colsum(g, part, (int)nchunk, K, (double)T, x_mean_host);
    qc_gpu_free(g, part);
    return st;
}

qc_status qc_gpu_awq_w_mean(qc_gpu *g, const uint16_t *const *W, const int *N, int nw, int K, int gs,
                            float *w_mean_host) {
    qc_status st = check_gs("awq w_mean", K, gs);
    if (st) return st;
    int max_n = 0;
    long rows = 0;
    for (int i = 0; i < nw; i++) {
        if (N[i] < 0) return qc_fail(QC_ERR_ARG, "awq w_mean: weight %d has %d rows", i, N[i]);
        max_n = N[i] > max_n ? N[i] : max_n;
        rows += N[i];
    }
    if (rows == 0) return qc_fail(QC_ERR_ARG, "awq w_mean: no weight rows");
    int G = K / gs, col_blocks = (K + kThreads - 1) / kThreads;
    int nchunk = (4 * g->prop.multiProcessorCount + col_blocks - 1) / col_blocks;
    if (nchunk > max_n) nchunk = max_n;
    float *inv = NULL;
    double *part = NULL;
    st = qc_gpu_alloc(g, (void **)&inv, sizeof(float) * (size_t)max_n * G, "awq w_mean group maxima");
    if (st == QC_OK) st = qc_gpu_alloc(g, (void **)&part, sizeof(double) * (size_t)nchunk * K, "awq w_mean partial sums");
    if (st == QC_OK) st = qc_gpu_memset(g, part, 0, sizeof(double) * (size_t)nchunk * K);
    for (int i = 0; i < nw && st == QC_OK; i++) {
        if (N[i] == 0) continue;
        size_t warps = (size_t)N[i] * G;
        k_group_inv<<<(unsigned)((warps * 32 + kThreads - 1) / kThreads), kThreads, 0, g->stream>>>(
            (const __half *)W[i], N[i], K, gs, inv);
        int rpc = (N[i] + nchunk - 1) / nchunk;
        k_colsum_wnorm<<<dim3(col_blocks, nchunk), kThreads, 0, g->stream>>>((const __half *)W[i], N[i], K, gs, inv,
                                                                             rpc, true, part);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "CUDA kernel awq w_mean failed to launch: %s", cudaGetErrorString(e));
    }
    if (st == QC_OK) st = finish_colsum(g, part, nchunk, K, (double)rows, w_mean_host);
    qc_gpu_free(g, inv);
    qc_gpu_free(g, part);
    return st;
}

qc_status qc_gpu_awq_scaled_qdq(qc_gpu *g, const uint16_t *W, const float *s, int N, int K, int bits, int gs,
                                uint16_t *out) {
    qc_status st = check_gs("awq scaled qdq", K, gs);
    if (st == QC_OK) st = check_bits("awq scaled qdq", bits);
    if (st) return st;
    if (N <= 0) return QC_OK;
    size_t warps = (size_t)N * (K / gs);
    k_scaled_qdq<<<(unsigned)((warps * 32 + kThreads - 1) / kThreads), kThreads, 0, g->stream>>>(
        (const __half *)W, s, N, K, (1 << bits) - 1, gs, (__half *)out);
    QC_CU_LAUNCH("k_scaled_qdq");
    return QC_OK;
}

unsigned qc_gpu_sqdiff_parts_count(size_t n) {
    if (n == 0) return 0;
    unsigned blocks = qc_grid(n, kThreads);
    return blocks > QC_GPU_SQDIFF_PARTS_MAX ? QC_GPU_SQDIFF_PARTS_MAX : blocks;
}

qc_status qc_gpu_sqdiff_parts(qc_gpu *g, const float *a, const float *b, size_t n, double *part) {
    unsigned blocks = qc_gpu_sqdiff_parts_count(n);
    if (blocks == 0) return QC_OK;
    k_sqdiff<<<blocks, kThreads, 0, g->stream>>>(a, b, n, part);
    QC_CU_LAUNCH("k_sqdiff");
    return QC_OK;
}

double qc_gpu_sqdiff_parts_total(const double *part_host, size_t n) {
    double sum = 0.0;
    for (unsigned i = 0; i < qc_gpu_sqdiff_parts_count(n); i++) sum += part_host[i];
    return sum;
}

qc_status qc_gpu_sqdiff_sum(qc_gpu *g, const float *a, const float *b, size_t n, double *out_host) {
    *out_host = 0.0;
    if (n == 0) return QC_OK;
    unsigned blocks = qc_gpu_sqdiff_parts_count(n);
    double *part = NULL, host[QC_GPU_SQDIFF_PARTS_MAX];
    qc_status st = qc_gpu_alloc(g, (void **)&part, sizeof(double) * blocks, "sqdiff partial sums");
    if (st) return st;
    st = qc_gpu_sqdiff_parts(g, a, b, n, part);
    if (st == QC_OK) st = qc_gpu_download(g, host, part, sizeof(double) * blocks);
    qc_gpu_free(g, part);
    if (st) return st;
    *out_host = qc_gpu_sqdiff_parts_total(host, n);
    return QC_OK;
}

qc_status qc_gpu_scale_cols_f16(qc_gpu *g, uint16_t *W, int N, int K, const float *s) {
    size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(K > 0 ? K : 0);
    if (n == 0) return QC_OK;
    k_scale_cols_f16<<<qc_grid(n, kThreads), kThreads, 0, g->stream>>>((__half *)W, n, K, s);
    QC_CU_LAUNCH("k_scale_cols_f16");
    return QC_OK;
}

qc_status qc_gpu_div_rows_f16(qc_gpu *g, uint16_t *W, int N, int K, int row0, int len, const float *s) {
    if (row0 < 0 || len < 0 || row0 > N - len)
        return qc_fail(QC_ERR_ARG, "awq fold: rows %d..%d outside a weight of %d rows", row0, row0 + len - 1, N);
    size_t n = (size_t)len * (size_t)(K > 0 ? K : 0);
    if (n == 0) return QC_OK;
    k_div_rows_f16<<<qc_grid(n, kThreads), kThreads, 0, g->stream>>>((__half *)W + (size_t)row0 * K, n, K, s);
    QC_CU_LAUNCH("k_div_rows_f16");
    return QC_OK;
}

qc_status qc_gpu_div_vec_f32(qc_gpu *g, float *v, int n, const float *s) {
    if (n <= 0) return QC_OK;
    k_div_vec_f32<<<qc_grid((size_t)n, kThreads), kThreads, 0, g->stream>>>(v, n, s);
    QC_CU_LAUNCH("k_div_vec_f32");
    return QC_OK;
}

qc_status qc_gpu_div_vec_offset_f32(qc_gpu *g, float *v, int n, const float *s, float off) {
    if (off == 0.0f) return qc_gpu_div_vec_f32(g, v, n, s);
    if (n <= 0) return QC_OK;
    k_div_vec_offset_f32<<<qc_grid((size_t)n, kThreads), kThreads, 0, g->stream>>>(v, n, s, off);
    QC_CU_LAUNCH("k_div_vec_offset_f32");
    return QC_OK;
}

qc_status qc_gpu_div_cols_act_f16(qc_gpu *g, uint16_t *X, int64_t T, int K, const float *s) {
    size_t n = (size_t)(T > 0 ? T : 0) * (size_t)(K > 0 ? K : 0);
    if (n == 0) return QC_OK;
    k_div_cols_f16<<<qc_grid(n, kThreads), kThreads, 0, g->stream>>>((__half *)X, n, K, s);
    QC_CU_LAUNCH("k_div_cols_f16");
    return QC_OK;
}

static qc_status awq_clip(qc_gpu *g, float *W, int N, int K, const uint16_t *X, int64_t T, int bits, int gs,
                          int n_tokens, int n_grid, double max_shrink, bool gram) {
    qc_status st = check_gs("awq clip", K, gs);
    if (st == QC_OK) st = check_bits("awq clip", bits);
    if (st) return st;
    if (T <= 0 || n_tokens <= 0 || n_grid <= 0)
        return qc_fail(QC_ERR_ARG, "awq clip: needs tokens (T %lld, n_tokens %d) and a grid (n_grid %d)", (long long)T,
                       n_tokens, n_grid);
    if (N <= 0) return QC_OK;
    int64_t step = T / n_tokens > 1 ? T / n_tokens : 1;
    int64_t Ts64 = (T + step - 1) / step;
    if (Ts64 > INT32_MAX) return qc_fail(QC_ERR_ARG, "awq clip: %lld sampled tokens is too many", (long long)Ts64);
    int Ts = (int)Ts64, steps = (int)(max_shrink * n_grid), maxq = (1 << bits) - 1;
    int G = K / gs, row_blocks = (N + kClipRows - 1) / kClipRows;
    if (G > INT32_MAX || row_blocks > 65535) return qc_fail(QC_ERR_ARG, "awq clip: weight %dx%d too large", N, K);
    dim3 grid((unsigned)G, (unsigned)row_blocks);
    if (gram && gs <= 32) return launch_clip_gram<32>(g, grid, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps);
    if (gram && gs <= 64) return launch_clip_gram<64>(g, grid, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps);
    if (gram && gs <= 128) return launch_clip_gram<128>(g, grid, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps);
    if (gs <= 32) return launch_clip<32>(g, grid, sizeof(float) * kClipTile * 32, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps, kClipTile, NULL, 0);
    if (gs <= 64) return launch_clip<64>(g, grid, sizeof(float) * kClipTile * 64, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps, kClipTile, NULL, 0);
    if (gs <= 128) return launch_clip<128>(g, grid, sizeof(float) * kClipTile * 128, W, N, K, (const __half *)X, step, Ts, gs, maxq, n_grid, steps, kClipTile, NULL, 0);
    /* large groups: differences in global scratch, tile as many tokens (a multiple of 4) as fit 64 KiB */
    int gsp = (gs + 3) & ~3;
    int tile = (int)(65536 / (sizeof(float) * gsp)) & ~3;
    if (tile > kClipTile) tile = kClipTile;
    if (tile < 4) {
        tile = 4;
        if (sizeof(float) * 4 * (size_t)gsp > g->prop.sharedMemPerBlockOptin)
            return qc_fail(QC_ERR_ARG, "awq clip: group size %d is too large for the GPU search", gs);
    }
    int Npad = row_blocks * kClipRows;
    float *D = NULL;
    st = qc_gpu_alloc(g, (void **)&D, sizeof(float) * (size_t)K * Npad, "awq clip scratch");
    if (st) return st;
    st = launch_clip<0>(g, grid, sizeof(float) * (size_t)tile * gsp, W, N, K, (const __half *)X, step, Ts, gs, maxq,
                        n_grid, steps, tile, D, Npad);
    if (st == QC_OK) st = qc_gpu_sync(g);
    qc_gpu_free(g, D);
    return st;
}

qc_status qc_gpu_awq_clip(qc_gpu *g, float *W, int N, int K, const uint16_t *X, int64_t T, int bits, int gs,
                          int n_tokens, int n_grid, double max_shrink) {
    return awq_clip(g, W, N, K, X, T, bits, gs, n_tokens, n_grid, max_shrink, true);
}

qc_status qc_gpu_awq_clip_tokens(qc_gpu *g, float *W, int N, int K, const uint16_t *X, int64_t T, int bits, int gs,
                                 int n_tokens, int n_grid, double max_shrink) {
    return awq_clip(g, W, N, K, X, T, bits, gs, n_tokens, n_grid, max_shrink, false);
}

} /* extern "C" */
