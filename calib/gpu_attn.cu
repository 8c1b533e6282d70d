/* gpu_attn.cu - causal attention in one kernel (see gpu_attn.h): no score matrix in device memory.
 *
 * One block of 4 warps per (64 query rows, head, sequence); each warp owns 16 query rows. The block walks
 * the key tiles its rows can see (64 keys each, from the sliding window's first to the diagonal), double
 * buffered through shared memory with cp.async. Per tile a warp computes S = Q K^T on the tensor cores
 * (mma.sync m16n8k16, fp16 in, fp32 accumulators), scales (and soft-caps) it, masks it, and folds it into a
 * running softmax (the row max m and sum l in fp32): the rows' accumulators O are rescaled by
 * exp(m_old - m_new), P = exp(S - m_new) is rounded to fp16 straight from the S registers into the A
 * operand of P V (V's fragments come through ldmatrix.trans). At the end O / l is rounded to fp16.
 *
 * Against the plain path (gpu_forward.cu: cuBLAS S in fp32, a softmax kernel writing normalized fp16
 * P, cuBLAS P V) the arithmetic differs in where the rounding to fp16 happens (unnormalized
 * probabilities, in tiles) and in the exponential (exp2 of a log2-scaled score): outputs agree to the
 * fp16 rounding of the probabilities, about 1e-3 relative (test_gpu_forward checks both against the CPU
 * and against each other). Each output element is summed in one fixed order, so runs repeat bit for bit.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 with .f16 inputs): with lane = 4 * g + t,
 *   A (16 x 16, row-major): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..];
 *   B (16 x 8, "col"):      b0 = B[2t, 2t+1][g],  b1 = B[2t+8, 2t+9][g];
 *   C (16 x 8, fp32):       c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1].
 * So S's accumulators for keys 16j..16j+15 are exactly P's A fragment for the j-th k-step of P V. */
#include "gpu_attn.h"
#include "qc_gpu_internal.h"

#include <math.h>
#include <stdint.h>

namespace {

constexpr int kBQ = 64;      /* query rows per block */
constexpr int kBK = 64;      /* keys per tile */
constexpr int kWarps = kBQ / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kPad = 8;      /* halves of padding per shared row: conflict-free fragment loads */
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 b16 matrices, transposed: lanes 8i..8i+7 give the row addresses of matrix i. */
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const __half *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* 16 bytes global -> shared, asynchronously; zero-filled when !valid (nothing is read then). */
__device__ __forceinline__ void cp_async16(__half *dst, const __half *src, bool valid) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ uint32_t half2_bits(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi); /* .x (the low 16 bits) = lo */
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ uint32_t lds32(const __half *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* Rows row0 .. row0 + 63 of a [T, stride] fp16 matrix (columns 0 .. HD-1 of src) into dst [64][HD + kPad];
 * rows at or past T become zeros. */
template <int HD>
__device__ __forceinline__ void load_tile(__half *dst, const __half *src, size_t stride, int row0, int T) {
    constexpr int kChunks = HD / 8; /* 16-byte chunks per row */
    for (int c = threadIdx.x; c < kBK * kChunks; c += kThreads) {
        int r = c / kChunks, cc = c % kChunks;
        bool ok = row0 + r < T;
        cp_async16(dst + r * (HD + kPad) + cc * 8, ok ? src + (size_t)(row0 + r) * stride + cc * 8 : src, ok);
    }
}

template <int HD>
__global__ void __launch_bounds__(kThreads, 2)
k_flash_attn(const __half *__restrict__ Q, const __half *__restrict__ K, const __half *__restrict__ V,
             __half *__restrict__ O, int T, int nh, int nkv, float scale, int win, float cap) {
    constexpr int LD = HD + kPad, KC = HD / 16, NT = HD / 8, ST = kBK / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half *sQ = reinterpret_cast<__half *>(smem_raw); /* [kBQ][LD] */
    __half *sK = sQ + kBQ * LD;                         /* [2][kBK][LD] */
    __half *sV = sK + 2 * kBK * LD;                     /* [2][kBK][LD] */

    const int nqb = (T + kBQ - 1) / kBQ;
    const int qb = nqb - 1 - (int)blockIdx.x; /* the longest rows first */
    const int h = blockIdx.y, s = blockIdx.z, kh = h / (nh / nkv);
    const size_t qd = (size_t)nh * HD, kvd = (size_t)nkv * HD;
    const int q0 = qb * kBQ;
    const __half *Qs = Q + (size_t)s * T * qd + (size_t)h * HD;
    const __half *Ks = K + (size_t)s * T * kvd + (size_t)kh * HD;
    const __half *Vs = V + (size_t)s * T * kvd + (size_t)kh * HD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wr0 = q0 + warp * 16;        /* the warp's first row */
    const int r0 = wr0 + g, r1 = r0 + 8;   /* this thread's two rows */

    const int q_last = (q0 + kBQ < T ? q0 + kBQ : T) - 1;
    const int k_lo = win > 0 && q0 - win + 1 > 0 ? q0 - win + 1 : 0;
    const int kb0 = k_lo / kBK, kb1 = q_last / kBK;

    load_tile<HD>(sQ, Qs, qd, q0, T);
    load_tile<HD>(sK, Ks, kvd, kb0 * kBK, T);
    load_tile<HD>(sV, Vs, kvd, kb0 * kBK, T);
    cp_async_commit();

    float o[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* log2 domain max, partial sums */
    uint32_t qa[KC][4];
    const float sl2 = scale * kLog2e;

    for (int kb = kb0; kb <= kb1; kb++) {
        const int buf = (kb - kb0) & 1;
        if (kb < kb1) {
            load_tile<HD>(sK + (buf ^ 1) * kBK * LD, Ks, kvd, (kb + 1) * kBK, T);
            load_tile<HD>(sV + (buf ^ 1) * kBK * LD, Vs, kvd, (kb + 1) * kBK, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kb == kb0) {
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                const __half *qp = sQ + (warp * 16 + g) * LD + kc * 16 + 2 * t;
                qa[kc][0] = lds32(qp);
                qa[kc][1] = lds32(qp + 8 * LD);
                qa[kc][2] = lds32(qp + 8);
                qa[kc][3] = lds32(qp + 8 * LD + 8);
            }
        }
        const int kbase = kb * kBK;
        /* a tile wholly after the warp's last row, or wholly before its first row's window, adds nothing */
        const bool live = kbase <= wr0 + 15 && !(win > 0 && kbase + kBK - 1 < wr0 - win + 1);
        if (live) {
            const __half *ks = sK + buf * kBK * LD, *vs = sV + buf * kBK * LD;
            float sc[ST][4];
#pragma unroll
            for (int j = 0; j < ST; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < KC; kc++)
#pragma unroll
                for (int j = 0; j < ST; j++) {
                    const __half *kp = ks + (j * 8 + g) * LD + kc * 16 + 2 * t;
                    mma16816(sc[j], qa[kc], lds32(kp), lds32(kp + 8));
                }
            /* scale (soft-cap) into the log2 domain; mask: key c is seen by row r when c < T, c <= r and
             * (no window or c > r - win) */
            const bool edge = kbase + kBK - 1 > wr0 || kbase + kBK > T || (win > 0 && kbase < wr0 + 15 - win + 1);
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int j = 0; j < ST; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = sc[j][e];
                    if (cap > 0.0f) x = tanhf((x * scale) / cap) * cap * kLog2e; /* the plain path's softcap(scale * s) */
                    else x *= sl2;
                    if (edge) {
                        int c = kbase + j * 8 + 2 * t + (e & 1), r = e < 2 ? r0 : r1;
                        if (c >= T || c > r || (win > 0 && c <= r - win)) x = -INFINITY;
                    }
                    sc[j][e] = x;
                }
#pragma unroll
            for (int j = 0; j < ST; j++) {
                mx0 = fmaxf(mx0, fmaxf(sc[j][0], sc[j][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[j][2], sc[j][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* a row with nothing seen yet keeps base 0, so exp2(-inf - 0) = 0 instead of NaN */
            const float b0 = mx0 == -INFINITY ? 0.0f : mx0, b1 = mx1 == -INFINITY ? 0.0f : mx1;
            const float a0 = exp2f(m0 - b0), a1 = exp2f(m1 - b1);
            m0 = mx0;
            m1 = mx1;
            float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
            for (int j = 0; j < ST; j++) {
                sc[j][0] = exp2f(sc[j][0] - b0);
                sc[j][1] = exp2f(sc[j][1] - b0);
                sc[j][2] = exp2f(sc[j][2] - b1);
                sc[j][3] = exp2f(sc[j][3] - b1);
                ps0 += sc[j][0] + sc[j][1];
                ps1 += sc[j][2] + sc[j][3];
            }
            l0 = l0 * a0 + ps0;
            l1 = l1 * a1 + ps1;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                o[i][0] *= a0;
                o[i][1] *= a0;
                o[i][2] *= a1;
                o[i][3] *= a1;
            }
            /* O += P V, 16 keys per step */
#pragma unroll
            for (int kc = 0; kc < kBK / 16; kc++) {
                uint32_t pa[4] = {half2_bits(sc[2 * kc][0], sc[2 * kc][1]), half2_bits(sc[2 * kc][2], sc[2 * kc][3]),
                                  half2_bits(sc[2 * kc + 1][0], sc[2 * kc + 1][1]),
                                  half2_bits(sc[2 * kc + 1][2], sc[2 * kc + 1][3])};
                const __half *vp = vs + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;
#pragma unroll
                for (int i = 0; i < NT / 2; i++) {
                    uint32_t b[4];
                    ldsm_x4_trans(b, vp + i * 16);
                    mma16816(o[2 * i], pa, b[0], b[1]);
                    mma16816(o[2 * i + 1], pa, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the next iteration loads into this buffer */
    }

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    __half *Os = O + (size_t)s * T * qd + (size_t)h * HD;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        int col = i * 8 + 2 * t;
        if (r0 < T) *reinterpret_cast<__half2 *>(Os + (size_t)r0 * qd + col) = __floats2half2_rn(o[i][0] * i0, o[i][1] * i0);
        if (r1 < T) *reinterpret_cast<__half2 *>(Os + (size_t)r1 * qd + col) = __floats2half2_rn(o[i][2] * i1, o[i][3] * i1);
    }
}

template <int HD>
qc_status launch(cudaStream_t stream, const __half *q, const __half *k, const __half *v, __half *att, int nseq, int T,
                 int nh, int nkv, float scale, int win, float cap) {
    size_t smem = (size_t)(kBQ + 4 * kBK) * (HD + kPad) * sizeof(__half);
    QC_CU(cudaFuncSetAttribute(k_flash_attn<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)((T + kBQ - 1) / kBQ), (unsigned)nh, (unsigned)nseq);
    k_flash_attn<HD><<<grid, kThreads, smem, stream>>>(q, k, v, att, T, nh, nkv, scale, win, cap);
    QC_CU_LAUNCH("flash_attn");
    return QC_OK;
}

} // namespace

extern "C" qc_status qc_gpu_flash_attn(qc_gpu *g, const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *att,
                                       int nseq, int T, int n_heads, int n_kv_heads, int head_dim, float scale, int window,
                                       float softcap) {
    if (nseq < 0 || T < 1 || n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads || nseq > 65535 || n_heads > 65535)
        return qc_fail(QC_ERR_ARG, "flash attention: bad shape (%d sequences of %d, %d heads, %d kv heads)", nseq, T,
                       n_heads, n_kv_heads);
    if (nseq == 0) return QC_OK;
    const __half *Q = (const __half *)q, *K = (const __half *)k, *Vv = (const __half *)v;
    __half *A = (__half *)att;
    switch (head_dim) {
    case 16: return launch<16>(g->stream, Q, K, Vv, A, nseq, T, n_heads, n_kv_heads, scale, window, softcap);
    case 32: return launch<32>(g->stream, Q, K, Vv, A, nseq, T, n_heads, n_kv_heads, scale, window, softcap);
    case 64: return launch<64>(g->stream, Q, K, Vv, A, nseq, T, n_heads, n_kv_heads, scale, window, softcap);
    case 96: return launch<96>(g->stream, Q, K, Vv, A, nseq, T, n_heads, n_kv_heads, scale, window, softcap);
    case 128: return launch<128>(g->stream, Q, K, Vv, A, nseq, T, n_heads, n_kv_heads, scale, window, softcap);
    default: return qc_fail(QC_ERR_UNSUPPORTED, "flash attention: head_dim %d (16, 32, 64, 96 or 128)", head_dim);
    }
}
