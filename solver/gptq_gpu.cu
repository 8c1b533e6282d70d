/* gptq_gpu.cu - GPTQ, RTN and AWQ quantization, packing and the quadratic form on a CUDA device
 * (quant_gpu.h). Semantics are gptq.c's, awq.c's, gptq_format.c's and awq_format.c's; comments here only
 * say where the GPU path differs in how, never in what. */
#include "awq_format.h"
#include "qc_gpu_internal.h"
#include "quant_gpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#define ROWS 64      /* rows per thread block of the block kernel */
#define MAXB 128     /* largest lazy-batch width: the block's Hinv tile must fit in shared memory */
#define PARTS 256    /* partial sums of the reductions */

enum { MODE_ROW = 0, MODE_STATIC = 1, MODE_GROUP = 2 };

struct qc_gpu_solver {
    qc_gpu  *g;
    int      max_N, max_K;
    size_t   max_NK;     /* largest N * K (the weight-sized buffers) */
    float   *Hbak;       /* [K, K] permuted, undamped H: the source of every damping retry */
    float   *Wp;         /* [N, K] W in processing order (act-order); staging for pack and quad_form */
    float   *Err;        /* [MAXB, N] the block's scaled errors */
    uint8_t *codes;      /* [N, K] codes of the last linear, original column order */
    float   *scales, *zf;/* [G, N] group params (zf: zero points as floats, as the solver uses them) */
    size_t   gcap;       /* elements of scales / zf */
    int     *perm, *dead;/* [K] */
    float   *ws;         /* cuSOLVER workspace */
    int      ws_len;
    int     *info;       /* [0] cuSOLVER devInfo (or the trtri check); [1] pack check; [2] the trtri leaves' */
    double  *acc;        /* [PARTS + 1]: partial sums, then the loss at [PARTS] */
    double  *rowloss;    /* [N] each row's share of the GPTQ loss (a fixed-order sum: no atomics) */
    int      last_N, last_K, last_bits;
    int      full_N, row0; /* the last solve's rows; the window [row0, row0 + last_N) (qc_gpu_solver_rows) */
    bool     have_codes;
    bool     have_hbak;  /* Hbak holds the last GPTQ linear's (permuted, undamped) H */
    int      last_dead;  /* its dead columns (in s->dead) */
    int     *perm_h;     /* [max_K] host copy of perm */
    void    *hws;        /* cuSOLVER's host workspace (trtri) */
    size_t   hws_len;
    bool     plain_factor; /* potrf/potri/potrf instead of potrf/trtri (the twins the tests compare) */
    float   *split;       /* [3 MAXB (max_K + max_N)]: the trailing update's operands split for 3xTF32 */
    bool     lazy_fp32;    /* the trailing update in strict fp32 SGEMM (the plain twin), not 3xTF32 */
    int      sweep;        /* the sweep kernel: -1 k_gptq_block (a row per thread, the plain twin), 0 by N
                            * (pick_sweep), i > 0 k_sweeps[i - 1] (qc_gpu_solver_sweep) */
    /* The last factorisation, for qc_gptq_quantize_gpu_again: U lives in the caller's H buffer. */
    const float  *U;
    int           u_K;
    bool          u_rform;  /* U holds the R form (inverse_factor), not U itself */
    qc_gptq_opts  u_opts;
    qc_gptq_stats u_stats;
    double        u_add;    /* the damping added to its diagonal (damp_used * mean) */
    bool          have_loss; /* rowloss is the last solve's (a GPTQ sweep; RTN and AWQ clear it) */
    cudaEvent_t ev[4];   /* factor start and end, sweep start and end: the stats' device times */
};

/* ---- sizes (create and qc_gpu_solver_bytes share them) ---- */

static size_t group_cap(int max_N, size_t max_NK) { return std::max((size_t)max_N, max_NK / 32); }
/* cuSOLVER's potrf/potri/trtri workspace for max_K: reserved up front so qc_gpu_solver_bytes is exact; create
 * takes more if cuSOLVER asks for more (it asks for far less). */
static size_t ws_bound(int max_K) { return (size_t)max_K * 256 + 65536; }

static size_t split_floats(int max_N, int max_K) { return (size_t)3 * MAXB * ((size_t)max_K + max_N); }

extern "C" size_t qc_gpu_solver_bytes_nk(int max_N, int max_K, size_t max_NK) {
    size_t N = (size_t)max_N, K = (size_t)max_K;
    return 4 * K * K + 4 * max_NK + 4 * (size_t)MAXB * N + max_NK + 2 * 4 * group_cap(max_N, max_NK) + 2 * 4 * K +
           4 * ws_bound(max_K) + 3 * sizeof(int) + (PARTS + 1) * sizeof(double) + N * sizeof(double) +
           4 * split_floats(max_N, max_K);
}

extern "C" size_t qc_gpu_solver_bytes(int max_N, int max_K) {
    return qc_gpu_solver_bytes_nk(max_N, max_K, (size_t)max_N * max_K);
}

extern "C" void qc_gpu_solver_free(qc_gpu_solver *s) {
    if (!s) return;
    void *bufs[] = {s->Hbak, s->Wp, s->Err, s->codes, s->scales, s->zf, s->perm, s->dead, s->ws, s->info, s->acc,
                    s->rowloss, s->split};
    for (void *p : bufs) qc_gpu_free(s->g, p);
    for (cudaEvent_t e : s->ev)
        if (e) cudaEventDestroy(e);
    free(s->perm_h);
    free(s->hws);
    free(s);
}

/* ---- kernels ---- */

/* quant.h qc_quant_params from the slice's min(0, min x) and max(0, max x): the same fp32 operations in
 * the same order, with the roundings spelled out so the compiler cannot contract them. */
static __device__ __forceinline__ void gptq_params(float xmin, float xmax, int maxq, bool sym, float *s, float *z) {
    if (sym) {
        float a = fabsf(xmin);
        xmax = a > xmax ? a : xmax;
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    float sc = __fdiv_rn(__fsub_rn(xmax, xmin), (float)maxq);
    *s = sc;
    *z = sym ? (float)((maxq + 1) / 2) : rintf(__fdiv_rn(-xmin, sc));
}

/* awq.h qc_awq_quant_params from the slice's min and max. */
static __device__ __forceinline__ void awq_params(float mn, float mx, int maxq, float *s, float *z) {
    float range = __fsub_rn(mx, mn);
    float sc = __fdiv_rn(range > 1e-5f ? range : 1e-5f, (float)maxq);
    float zz = -rintf(__fdiv_rn(mn, sc));
    *s = sc;
    *z = zz < 0.0f ? 0.0f : zz > (float)maxq ? (float)maxq : zz;
}

/* qc_quant_code (the AWQ code is the same formula). */
static __device__ __forceinline__ int quant_code(float w, float s, float z, int maxq) {
    float q = __fadd_rn(rintf(__fdiv_rn(w, s)), z);
    return q < 0.0f ? 0 : q > (float)maxq ? maxq : (int)q;
}

/* One warp per (row n, group g) of W [N, K]: the group's scale and zero (GPTQ or AWQ quantizer) into
 * scales/zf [G, N]; with `quant`, its codes (original order) and W <- W_hat as well. */
static __global__ void k_groups(float *W, int N, int K, int gs, int maxq, bool sym, bool awq, bool quant,
                                float *scales, float *zf, uint8_t *codes) {
    const int lane = threadIdx.x & 31;
    const size_t G = (size_t)(K / gs), total = (size_t)N * G;
    const size_t nwarps = (size_t)gridDim.x * blockDim.x / 32;
    for (size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; w < total; w += nwarps) {
        const size_t n = w / G, g = w % G;
        float *x = W + n * (size_t)K + g * (size_t)gs;
        float lo = awq ? x[0] : 0.0f, hi = lo;
        for (int k = lane; k < gs; k += 32) {
            float v = x[k];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        for (int o = 16; o > 0; o >>= 1) {
            float a = __shfl_xor_sync(0xffffffffu, lo, o), b = __shfl_xor_sync(0xffffffffu, hi, o);
            lo = a < lo ? a : lo;
            hi = b > hi ? b : hi;
        }
        float s, z;
        if (awq) awq_params(lo, hi, maxq, &s, &z);
        else gptq_params(lo, hi, maxq, sym, &s, &z);
        if (lane == 0) {
            scales[g * N + n] = s;
            zf[g * N + n] = z;
        }
        if (!quant) continue;
        uint8_t *c = codes + n * (size_t)K + g * (size_t)gs;
        for (int k = lane; k < gs; k += 32) {
            int code = quant_code(x[k], s, z, maxq);
            c[k] = (uint8_t)code;
            x[k] = __fmul_rn(s, (float)code - z);
        }
    }
}

/* Dead columns (spec D.3 step 2): H[k][k] = 1, W[:, k] = 0 (either may be NULL; N = 1 for H alone). */
static __global__ void k_dead(float *H, float *W, int N, int K, const int *dead, int nd) {
    size_t total = (size_t)nd * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int k = dead[i / N];
        size_t n = i % N;
        if (W) W[n * K + k] = 0.0f;
        if (H && n == 0) H[(size_t)k * K + k] = 1.0f;
    }
}

/* dst[i][j] = src[perm[i]][perm[j]] */
static __global__ void k_perm_h(float *dst, const float *src, const int *perm, int K) {
    size_t total = (size_t)K * K;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / K, c = i % K;
        dst[i] = src[(size_t)perm[r] * K + perm[c]];
    }
}

/* fwd: Wp[n][j] = W[n][perm[j]]; else W[n][perm[j]] = Wp[n][j] */
static __global__ void k_perm_w(float *Wp, float *W, const int *perm, int N, int K, bool fwd) {
    size_t total = (size_t)N * K;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / K, j = i % K, o = n * K + perm[j];
        if (fwd) Wp[i] = W[o];
        else W[o] = Wp[i];
    }
}

/* H = Hbak with damp * mean added to the diagonal, in double as gptq.c does. */
static __global__ void k_damp(float *H, const float *Hbak, int K, double add) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x) {
        size_t d = (size_t)k * K + k;
        H[d] = (float)__dadd_rn((double)Hbak[d], add);
    }
}

/* One column's quantize step (D.3 step 7), shared by both sweep kernels so that their bits agree: w's code
 * under (cs, cz), its dequantized value qv, diff = w - qv and the scaled error e = diff / d (explicitly
 * rounded operations: no contraction can change them). */
typedef struct {
    int   code;
    float qv, diff, e;
} col_step;

static __device__ __forceinline__ col_step gptq_col_step(float w, float d, float cs, float cz, int maxq) {
    col_step s;
    s.code = quant_code(w, cs, cz, maxq);
    s.qv = __fmul_rn(cs, (float)s.code - cz);
    s.diff = __fsub_rn(w, s.qv);
    s.e = __fdiv_rn(s.diff, d);
    return s;
}

/* A group's params from its range, the scale rounded to fp16 when the format stores it so. */
static __device__ __forceinline__ void group_params(float lo, float hi, int maxq, bool sym, bool fp16, float *cs,
                                                    float *cz) {
    gptq_params(lo, hi, maxq, sym, cs, cz);
    if (fp16) *cs = __half2float(__float2half_rn(*cs));
}

/* The sweep's two forms (sweep_w). U form (GF NULL): Ww holds W as updated so far, the block's start
 * values. R form: Ww keeps W0 until the block ends; a block's start value is W0 + T, with T = G_c U_cc read
 * from Err ([N, nb] here, row by row: coalesced; tadd: every block but the first), written to GF for the
 * group reads. */
static __device__ __forceinline__ float block_start(const float *Ww, float *GF, const float *Err, bool tadd, int nb,
                                                    int K, int n, int c, int j) {
    const size_t p = (size_t)n * K + c;
    float v = Ww[p];
    if (GF) {
        if (tadd) v = __fadd_rn(v, Err[(size_t)n * nb + j]);
        GF[p] = v;
    }
    return v;
}

/* Column c of row n is done with Q = qv: Ww <- Q; R form: GF <- F = W0 - Q (Ww still held W0). */
static __device__ __forceinline__ void block_end(float *Ww, float *GF, int K, int n, int c, float qv) {
    const size_t p = (size_t)n * K + c;
    if (GF) GF[p] = __fsub_rn(Ww[p], qv);
    Ww[p] = qv;
}

/* One lazy batch [i1, i1 + nb) of GPTQ for ROWS rows per thread block, one row per thread: the columns
 * in order, each quantized (group params computed where a group starts, from W as of the block start
 * when `quirk`, else from the current values), its error e = (w - q) / d spread over the block's later
 * columns with the block's U tile (shared memory, read as broadcasts), the row tile in shared memory
 * column-major with a padded stride (conflict-free). Writes Q into Ww, e into Err [nb, N] (U form; the R
 * form writes F into GF instead: block_start, block_end), codes in original column order, and new group
 * params into scales/zf. */
static __global__ void __launch_bounds__(ROWS) k_gptq_block(float *__restrict__ Ww, int N, int K, int i1, int nb,
                                                            const float *__restrict__ U, float *__restrict__ Err,
                                                            uint8_t *__restrict__ codes, const int *__restrict__ perm,
                                                            float *scales, float *zf, int gs, int maxq, int mode,
                                                            bool sym, bool quirk, bool fp16, double *rowloss,
                                                            float *__restrict__ GF, bool tadd) {
    extern __shared__ float sm[];
    float *Ut = sm;           /* [nb][nb]: U[i1 + a][i1 + b] */
    float *Wt = sm + nb * nb; /* column j of the tile at Wt[j * ld + r] */
    const int t = threadIdx.x, n0 = blockIdx.x * ROWS, n = n0 + t, ld = ROWS + 1, i2 = i1 + nb;
    for (int idx = t; idx < nb * nb; idx += ROWS) {
        int a = idx / nb, b = idx - a * nb;
        Ut[idx] = U[(size_t)(i1 + a) * K + i1 + b];
    }
    for (int idx = t; idx < ROWS * nb; idx += ROWS) {
        int r = idx / nb, j = idx - r * nb;
        if (n0 + r < N) Wt[j * ld + r] = block_start(Ww, GF, Err, tadd, nb, K, n0 + r, i1 + j, j);
    }
    __syncthreads();
    double lacc = 0.0;
    if (n < N) {
        const float *row = (GF ? GF : Ww) + (size_t)n * K; /* not written before the end: the block-start values */
        float cs = 0.0f, cz = 0.0f;
        if (mode == MODE_ROW) {
            cs = scales[n];
            cz = zf[n];
        } else if (mode == MODE_GROUP && i1 % gs != 0) { /* group opened in an earlier block */
            size_t gi = (size_t)(i1 / gs) * N + n;
            cs = scales[gi];
            cz = zf[gi];
        }
        for (int i = 0; i < nb; i++) {
            const int c = i1 + i;
            if (mode == MODE_STATIC) {
                size_t gi = (size_t)(perm[c] / gs) * N + n;
                cs = scales[gi];
                cz = zf[gi];
            } else if (mode == MODE_GROUP && c % gs == 0) {
                float lo = 0.0f, hi = 0.0f;
                for (int k = 0; k < gs; k++) {
                    int col = c + k;
                    float v = (col < i2 && !quirk) ? Wt[(col - i1) * ld + t] : row[col];
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
                group_params(lo, hi, maxq, sym, fp16, &cs, &cz);
                size_t gi = (size_t)(c / gs) * N + n;
                scales[gi] = cs;
                zf[gi] = cz;
            }
            const float d = Ut[i * nb + i];
            const col_step x = gptq_col_step(Wt[i * ld + t], d, cs, cz, maxq);
            const float e = x.e;
            lacc += (double)x.diff * x.diff / ((double)d * d) / 2.0;
            Wt[i * ld + t] = x.qv;
            if (!GF) Err[(size_t)i * N + n] = e;
            codes[(size_t)n * K + perm[c]] = (uint8_t)x.code;
            const float *urow = Ut + i * nb;
#pragma unroll 4
            for (int j = i + 1; j < nb; j++) Wt[j * ld + t] = fmaf(-urow[j], e, Wt[j * ld + t]);
        }
    }
    __syncthreads();
    for (int idx = t; idx < ROWS * nb; idx += ROWS) {
        int r = idx / nb, j = idx - r * nb;
        if (n0 + r < N) block_end(Ww, GF, K, n0 + r, i1 + j, Wt[j * ld + r]);
    }
    if (n < N) rowloss[n] += lacc; /* the row's own slot: launches run in order, so no race and no atomics */
}

/* k_gptq_block's work with TPR threads per row (R2 rows per thread block): the same arithmetic on every
 * element in the same order, so the same bits, with TPR times the threads in flight. Each column's code
 * and error are computed by all TPR threads of its row alike (the same fp32 operations); the later
 * columns' updates are split among them (column j by thread j % TPR, so each element sees its updates
 * in column order, as before); thread 0 of the row writes the outputs. The threads of a row are adjacent
 * lanes of one warp: __syncwarp orders their shared-memory reads and writes. A group's params read the
 * tile when it holds the values the plain kernel reads (the block's first column starts the group and
 * the group ends inside the block); codes go through a shared tile and out row by row (coalesced). */
/* The tile's stride: a warp holds RPW = 32 / TPR rows of TPR lanes each, and in the update loop lane (r, q)
 * touches column j0 + q of row r; a stride of RPW modulo 32 puts those 32 words in 32 banks. */
template <int R2, int TPR> struct tile_shape {
    static constexpr int RPW = 32 / TPR;
    static constexpr int LD = R2 + ((RPW - R2 % 32) % 32 + 32) % 32;
};
template <int R2, int TPR> static size_t smem4(int nb) {
    return sizeof(float) * ((size_t)nb * nb + (size_t)nb * tile_shape<R2, TPR>::LD) + (size_t)nb * R2;
}
template <int R2, int TPR>
static __global__ void __launch_bounds__(R2 *TPR) k_gptq_block4(float *__restrict__ Ww, int N, int K, int i1, int nb,
                                                                   const float *__restrict__ U, float *__restrict__ Err,
                                                                   uint8_t *__restrict__ codes,
                                                                   const int *__restrict__ perm, float *scales, float *zf,
                                                                   int gs, int maxq, int mode, bool sym, bool quirk,
                                                                   bool fp16, double *rowloss, float *__restrict__ GF,
                                                                   bool tadd) {
    extern __shared__ float sm[];
    const int ld = tile_shape<R2, TPR>::LD;
    float *Ut = sm;                                  /* [nb][nb] */
    float *Wt = sm + nb * nb;                        /* [nb][ld] */
    uint8_t *Ct = (uint8_t *)(Wt + (size_t)nb * ld); /* [nb][R2] codes */
    const int t = threadIdx.x, r = t / TPR, q = t % TPR, n0 = blockIdx.x * R2, n = n0 + r, i2 = i1 + nb;
    const unsigned mask = 0xffffffffu;
    for (int idx = t; idx < nb * nb; idx += R2 * TPR) {
        int a = idx / nb, b = idx - a * nb;
        Ut[idx] = U[(size_t)(i1 + a) * K + i1 + b];
    }
    for (int idx = t; idx < R2 * nb; idx += R2 * TPR) {
        int rr = idx / nb, j = idx - rr * nb;
        if (n0 + rr < N) Wt[j * ld + rr] = block_start(Ww, GF, Err, tadd, nb, K, n0 + rr, i1 + j, j);
    }
    __syncthreads();
    double lacc = 0.0;
    /* rows past N run along on row N - 1's params and a garbage tile (every lane of the warp must reach
     * each __syncwarp and shuffle), writing nothing */
    const bool live = n < N;
    const int nr = live ? n : N - 1;
    const float *row = (GF ? GF : Ww) + (size_t)nr * K; /* not written before the end: the block-start values */
    float cs = 0.0f, cz = 0.0f;
    if (mode == MODE_ROW) {
        cs = scales[nr];
        cz = zf[nr];
    } else if (mode == MODE_GROUP && i1 % gs != 0) {
        size_t gi = (size_t)(i1 / gs) * N + nr;
        cs = scales[gi];
        cz = zf[gi];
    }
    for (int i = 0; i < nb; i++) {
        const int c = i1 + i;
        __syncwarp(mask); /* column i's updates by its owner are visible */
        if (mode == MODE_STATIC) {
            size_t gi = (size_t)(perm[c] / gs) * N + nr;
            cs = scales[gi];
            cz = zf[gi];
        } else if (mode == MODE_GROUP && c % gs == 0) {
            /* min and max are exact, so splitting the range among the row's threads changes nothing */
            float lo = 0.0f, hi = 0.0f;
            const bool tile_ok = !quirk || (i == 0 && c + gs <= i2);
            for (int k = q; k < gs; k += TPR) {
                int col = c + k;
                float v = (col < i2 && tile_ok) ? Wt[(col - i1) * ld + r] : row[col];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            for (int o = 1; o < TPR; o <<= 1) {
                float a = __shfl_xor_sync(mask, lo, o), b = __shfl_xor_sync(mask, hi, o);
                lo = a < lo ? a : lo;
                hi = b > hi ? b : hi;
            }
            group_params(lo, hi, maxq, sym, fp16, &cs, &cz);
            if (live && q == 0) {
                size_t gi = (size_t)(c / gs) * N + n;
                scales[gi] = cs;
                zf[gi] = cz;
            }
        }
        const float d = Ut[i * nb + i];
        const col_step x = gptq_col_step(Wt[i * ld + r], d, cs, cz, maxq);
        const float e = x.e;
        __syncwarp(mask); /* every lane has read w before it is replaced */
        if (q == 0) {
            lacc += (double)x.diff * x.diff / ((double)d * d) / 2.0;
            Wt[i * ld + r] = x.qv;
            Ct[i * R2 + r] = (uint8_t)x.code;
            if (live && !GF) Err[(size_t)i * N + n] = e;
        }
        const float *urow = Ut + i * nb;
        int j = i + 1 + ((q - (i + 1) % TPR + TPR) % TPR); /* this lane's first column after i */
#pragma unroll 4
        for (; j < nb; j += TPR) Wt[j * ld + r] = fmaf(-urow[j], e, Wt[j * ld + r]);
    }
    __syncthreads();
    for (int idx = t; idx < R2 * nb; idx += R2 * TPR) {
        int rr = idx / nb, j = idx - rr * nb;
        if (n0 + rr < N) {
            block_end(Ww, GF, K, n0 + rr, i1 + j, Wt[j * ld + rr]);
            codes[(size_t)(n0 + rr) * K + perm[i1 + j]] = Ct[j * R2 + rr];
        }
    }
    if (live && q == 0) rowloss[n] += lacc;
}

typedef void (*block4_fn)(float *, int, int, int, int, const float *, float *, uint8_t *, const int *, float *, float *,
                          int, int, int, bool, bool, bool, double *, float *, bool);
/* The sweep kernels on offer (qc_gpu_solver_sweep): rows per thread block, threads per row. */
static const struct {
    int rows, tpr;
    block4_fn fn;
    size_t (*smem)(int);
} k_sweeps[] = {
    {32, 4, k_gptq_block4<32, 4>, smem4<32, 4>},   {32, 8, k_gptq_block4<32, 8>, smem4<32, 8>},
    {32, 16, k_gptq_block4<32, 16>, smem4<32, 16>}, {16, 16, k_gptq_block4<16, 16>, smem4<16, 16>},
    {64, 8, k_gptq_block4<64, 8>, smem4<64, 8>},   {64, 4, k_gptq_block4<64, 4>, smem4<64, 4>},
};
#define N_SWEEPS ((int)(sizeof k_sweeps / sizeof k_sweeps[0]))

/* The default sweep kernel for N rows (an index into k_sweeps, -1 the one-row kernel): as before the other
 * shapes existed (wide layers fill the device with a row per thread already: gate/up of 8B, 224 blocks of 64
 * threads in one wave); the others await bench_solver_gpu's side-by-side figures on a GPU. */
static int pick_sweep(int N) { return N > 8192 ? -1 : 0; }

/* R form: the diagonal blocks of row-major upper R [K, K] (blocks of B from column 0, the last one shorter)
 * replaced by their inverses U_cc, zeros below their diagonals. One thread block of B threads per diagonal
 * block: thread j solves R_cc x = e_j by back substitution, all threads on the same row at a time (R's row
 * read as broadcasts, x's column-interleaved in double), so sums and stored x are double; 192 KiB of shared
 * memory at B = 128. */
static __global__ void __launch_bounds__(MAXB) k_diag_inv(float *R, int K, int B) {
    extern __shared__ double smd[];
    const int i1 = blockIdx.x * B, nb = min(B, K - i1), j = threadIdx.x;
    double *X = smd;                     /* [nb][nb]: X[a * nb + j] = U_cc[a][j] */
    float *Rt = (float *)(smd + nb * nb); /* [nb][nb] */
    for (int idx = j; idx < nb * nb; idx += blockDim.x) {
        int a = idx / nb, b = idx - a * nb;
        Rt[idx] = R[(size_t)(i1 + a) * K + i1 + b];
    }
    __syncthreads();
    for (int i = nb - 1; i >= 0; i--) {
        if (j >= nb || j < i) continue;
        double acc = i == j ? 1.0 : 0.0;
        for (int k = i + 1; k <= j; k++) acc -= (double)Rt[i * nb + k] * X[k * nb + j];
        X[i * nb + j] = acc / (double)Rt[i * nb + i];
    }
    __syncthreads();
    for (int idx = j; idx < nb * nb; idx += blockDim.x) {
        int a = idx / nb, b = idx - a * nb;
        R[(size_t)(i1 + a) * K + i1 + b] = b >= a ? (float)X[idx] : 0.0f;
    }
}

static size_t smem_diag_inv(int nb) { return (size_t)nb * nb * (sizeof(double) + sizeof(float)); }

/* GPTQ qweight [K*b/32, N]: word r of column n holds stream bits [32r, 32r + 32) of the codes of row n. */
static __global__ void k_pack_gptq_w(const uint8_t *codes, int N, int K, int b, uint32_t *qw) {
    size_t total = (size_t)K * b / 32 * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / N, n = i % N;
        long bit0 = (long)r * 32;
        long k0 = bit0 / b, k1 = (bit0 + 31) / b;
        const uint8_t *c = codes + n * (size_t)K;
        uint32_t word = 0;
        for (long k = k0; k <= k1; k++) {
            long sh = k * b - bit0;
            uint32_t v = c[k];
            word |= sh >= 0 ? v << sh : v >> -sh;
        }
        qw[i] = word;
    }
}

/* GPTQ qzeros [G, N*b/32]: row g is the stream of its N stored zero points (v1: z - 1). */
static __global__ void k_pack_gptq_z(const int32_t *zeros, int N, int G, int b, bool v2, uint32_t *qz) {
    const size_t zw = (size_t)N * b / 32, total = (size_t)G * zw;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t g = i / zw, w = i % zw;
        long bit0 = (long)w * 32;
        long k0 = bit0 / b, k1 = (bit0 + 31) / b;
        const int32_t *z = zeros + g * (size_t)N;
        uint32_t word = 0;
        for (long k = k0; k <= k1; k++) {
            long sh = k * b - bit0;
            uint32_t v = (uint32_t)(v2 ? z[k] : z[k] - 1);
            word |= sh >= 0 ? v << sh : v >> -sh;
        }
        qz[i] = word;
    }
}

/* AWQ: word [k][c] holds column 8c + j in nibble slot INVERSE[j] = {0, 4, 1, 5, 2, 6, 3, 7}. */
static __global__ void k_pack_awq(const uint8_t *codes, const int32_t *zeros, int N, int K, int G, uint32_t *qw,
                                  uint32_t *qz) {
    const int inv[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    const size_t N8 = (size_t)N / 8, tw = (size_t)K * N8, total = tw + (size_t)G * N8;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t word = 0;
        if (i < tw) {
            size_t k = i / N8, c = i % N8;
            for (int j = 0; j < 8; j++) word |= (uint32_t)codes[(8 * c + j) * (size_t)K + k] << (4 * inv[j]);
            qw[i] = word;
        } else {
            size_t w = i - tw;
            for (int j = 0; j < 8; j++) word |= (uint32_t)zeros[8 * w + j] << (4 * inv[j]);
            qz[w] = word;
        }
    }
}

static __global__ void k_max_code(const uint8_t *codes, size_t n, int *out) {
    int m = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        m = codes[i] > m ? codes[i] : m;
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0 && m) atomicMax(out, m);
}

/* part[b] = sum over this block's share of a[i] * b[i] (products in fp32, sums in double). */
static __global__ void k_dot_parts(const float *a, const float *b, size_t n, double *part) {
    __shared__ double red[256 / 32];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc += (double)(a[i] * b[i]);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < (int)(blockDim.x / 32); w++) s += red[w];
        part[blockIdx.x] = s;
    }
}

/* *out = the sum of the 256 threads' acc by a fixed tree (one block of 256 threads, all arriving). */
static __device__ void block_sum_fixed(double acc, double *out) {
    __shared__ double red[256];
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int h = 128; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = red[0];
}

/* *out = sum of x[0, n) in an order fixed by n alone (strided partial sums, then a fixed tree); one block
 * of 256 threads. */
static __global__ void k_sum_fixed(const double *x, int n, double *out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += 256) acc += x[i];
    block_sum_fixed(acc, out);
}

static __global__ void k_sum_parts(double *part, int n) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += part[i];
        part[n] = s;
    }
}

/* *out = sum over rows n < N and the nd dead columns k of add D[n, k]^2 - (1 + add) What[n, k]^2, in a fixed
 * order (one block of 256 threads, strided, then a fixed tree): qc_gpu_solver_error's dead-column term. */
static __global__ void k_dead_term(const float *D, const float *What, int N, int K, const int *dead, int nd,
                                   double add, double *out) {
    double acc = 0.0;
    for (size_t i = threadIdx.x; i < (size_t)nd * N; i += 256) {
        const size_t n = i / nd, p = n * K + dead[i % nd];
        const double d = D[p], w = What[p];
        acc += add * d * d - (1.0 + add) * w * w;
    }
    block_sum_fixed(acc, out);
}

static __global__ void k_sub(const float *A, const float *B, float *D, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        D[i] = A[i] - B[i];
}

/* ---- host ---- */

extern "C" {

qc_status qc_gpu_solver_create(qc_gpu *g, int max_N, int max_K, qc_gpu_solver **out) {
    return qc_gpu_solver_create_nk(g, max_N, max_K, (size_t)max_N * max_K, out);
}

qc_status qc_gpu_solver_create_nk(qc_gpu *g, int max_N, int max_K, size_t max_NK, qc_gpu_solver **out) {
    *out = NULL;
    if (max_N < 1 || max_K < 1 || max_NK < 1 || max_NK > (size_t)max_N * max_K)
        return qc_fail(QC_ERR_ARG, "gpu solver: shape %d x %d (%zu elements)", max_N, max_K, max_NK);
    qc_gpu_solver *s = (qc_gpu_solver *)calloc(1, sizeof *s);
    if (!s) return qc_fail(QC_ERR_NOMEM, "out of memory");
    s->g = g;
    s->lazy_fp32 = true; /* 3xTF32 only when asked, until measured on a GPU (qc_gpu_solver_lazy_fp32) */
    s->max_N = max_N;
    s->max_K = max_K;
    s->max_NK = max_NK;
    s->gcap = group_cap(max_N, max_NK);
    size_t N = (size_t)max_N, K = (size_t)max_K;
    qc_status st;
    int l1 = 0, l2 = 0;
    if (!(s->perm_h = (int *)malloc(sizeof(int) * K))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = qc_gpu_alloc(g, (void **)&s->Hbak, 4 * K * K, "the GPTQ Hessian copy")) ||
        (st = qc_gpu_alloc(g, (void **)&s->Wp, 4 * max_NK, "the GPTQ weight workspace")) ||
        (st = qc_gpu_alloc(g, (void **)&s->Err, 4 * (size_t)MAXB * N, "the GPTQ error block")) ||
        (st = qc_gpu_alloc(g, (void **)&s->codes, max_NK, "the GPTQ codes")) ||
        (st = qc_gpu_alloc(g, (void **)&s->scales, 4 * s->gcap, "the GPTQ scales")) ||
        (st = qc_gpu_alloc(g, (void **)&s->zf, 4 * s->gcap, "the GPTQ zero points")) ||
        (st = qc_gpu_alloc(g, (void **)&s->perm, 4 * K, "the GPTQ permutation")) ||
        (st = qc_gpu_alloc(g, (void **)&s->dead, 4 * K, "the GPTQ dead columns")) ||
        (st = qc_gpu_alloc(g, (void **)&s->info, 3 * sizeof(int), "cuSOLVER info")) ||
        (st = qc_gpu_alloc(g, (void **)&s->acc, (PARTS + 1) * sizeof(double), "reduction partials")) ||
        (st = qc_gpu_alloc(g, (void **)&s->rowloss, N * sizeof(double), "the GPTQ loss per row")) ||
        (st = qc_gpu_alloc(g, (void **)&s->split, 4 * split_floats(max_N, max_K), "the GPTQ split operands")))
        goto fail;
    {
        cusolverStatus_t a = cusolverDnSpotrf_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, max_K, s->Hbak, max_K, &l1);
        cusolverStatus_t b = cusolverDnSpotri_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, max_K, s->Hbak, max_K, &l2);
        if (a != CUSOLVER_STATUS_SUCCESS || b != CUSOLVER_STATUS_SUCCESS) {
            st = qc_fail(QC_ERR_DEVICE, "cuSOLVER workspace query for K = %d: %s", max_K,
                         qc_cusolver_status_str(a != CUSOLVER_STATUS_SUCCESS ? a : b));
            goto fail;
        }
        size_t tb = 0, th = 0;
        cusolverStatus_t c = cusolverDnXtrtri_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, max_K,
                                                         CUDA_R_32F, s->Hbak, max_K, &tb, &th);
        if (c != CUSOLVER_STATUS_SUCCESS) {
            st = qc_fail(QC_ERR_DEVICE, "cuSOLVER trtri workspace query for K = %d: %s", max_K, qc_cusolver_status_str(c));
            goto fail;
        }
        if (th && !(s->hws = malloc(th))) {
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        s->hws_len = th;
        size_t want = std::max(std::max(ws_bound(max_K), (size_t)std::max(l1, l2)), (tb + 3) / 4);
        if (want > ws_bound(max_K)) QC_LOGW("gpu solver: cuSOLVER asks for %zu floats of workspace (reserved %zu)", want,
                                            ws_bound(max_K));
        if ((st = qc_gpu_alloc(g, (void **)&s->ws, 4 * want, "the cuSOLVER workspace"))) goto fail;
        s->ws_len = (int)want;
    }
    for (cudaEvent_t &ev : s->ev)
        if (cudaEventCreate(&ev) != cudaSuccess) {
            ev = NULL;
            st = qc_fail(QC_ERR_DEVICE, "gpu solver: cannot create a CUDA event");
            goto fail;
        }
    {
        cudaError_t e = cudaFuncSetAttribute(k_gptq_block, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (MAXB * MAXB + MAXB * (ROWS + 1)) * (int)sizeof(float));
        if (e == cudaSuccess)
            for (int i = 0; i < N_SWEEPS && e == cudaSuccess; i++)
                e = cudaFuncSetAttribute(k_sweeps[i].fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)k_sweeps[i].smem(MAXB));
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(k_diag_inv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_diag_inv(MAXB));
        if (e != cudaSuccess) {
            st = qc_fail(QC_ERR_DEVICE, "gpu solver: cannot enable %d bytes of shared memory: %s",
                         (MAXB * MAXB + MAXB * (ROWS + 1)) * (int)sizeof(float), cudaGetErrorString(e));
            goto fail;
        }
    }
    *out = s;
    return QC_OK;
fail:
    qc_gpu_solver_free(s);
    return st;
}

qc_status qc_gpu_sub(qc_gpu *g, const float *A, const float *B, float *D, size_t n) {
    if (!n) return QC_OK;
    k_sub<<<qc_grid(n, 256), 256, 0, g->stream>>>(A, B, D, n);
    QC_CU_LAUNCH("sub");
    return QC_OK;
}

} /* extern "C" */

/* cublasSgemm in strict fp32 (CUBLAS_DEFAULT_MATH, no TF32), whatever mode the shared handle is in. */
static qc_status sgemm(qc_gpu *g, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cublasMath_t mode;
    QC_CUBLAS(cublasGetMathMode(g->blas, &mode));
    QC_CUBLAS(cublasSetMathMode(g->blas, CUBLAS_DEFAULT_MATH));
    cublasStatus_t e = cublasSgemm(g->blas, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
    cublasSetMathMode(g->blas, mode);
    QC_CUBLAS(e);
    return QC_OK;
}

/* x = hi + lo: hi on the TF32 grid (10 mantissa bits, rounded to nearest), lo = x - hi exactly. */
static __device__ __forceinline__ float tf32_hi(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
}

/* A [m, k] column-major (lda) -> A3 [m, 3k] (ld m) = [hi | hi | lo];
 * B [k, n] column-major (ldb) -> B3 [3k, n] (ld 3k) = [hi; lo; hi]. */
static __global__ void k_split3(const float *__restrict__ A, int lda, int m, int k, float *__restrict__ A3,
                                const float *__restrict__ B, int ldb, int n, float *__restrict__ B3) {
    const size_t na = (size_t)m * k, nb = (size_t)k * n;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < na + nb; idx += (size_t)gridDim.x * blockDim.x) {
        if (idx < na) {
            const size_t i = idx % m, j = idx / m;
            const float x = A[j * lda + i], h = tf32_hi(x);
            A3[j * m + i] = h;
            A3[(j + k) * m + i] = h;
            A3[(j + 2 * k) * m + i] = __fsub_rn(x, h);
        } else {
            const size_t r = (idx - na) % k, c = (idx - na) / k, ld3 = 3 * (size_t)k;
            const float x = B[c * ldb + r], h = tf32_hi(x);
            B3[c * ld3 + r] = h;
            B3[c * ld3 + k + r] = __fsub_rn(x, h);
            B3[c * ld3 + 2 * k + r] = h;
        }
    }
}

/* C = A B + beta C (column-major, no transposes, k <= MAXB) on the matrix units with fp32-level accuracy:
 * A B ~ Ah Bh + Ah Bl + Al Bh as one TF32 GEMM of inner size 3k. Ah and Bh lie on the TF32 grid, so their
 * products are exact; the lo terms carry their own TF32 rounding, 2^-11 of a part 2^-11 of the whole, and
 * Al Bl (2^-22) is dropped; products summed in fp32. So the result is within a few fp32 ulps of an SGEMM
 * (another summation order), at the TF32 rate: 3x the flops, but C is read and written once. */
static qc_status gemm_3xtf32(qc_gpu_solver *s, int m, int n, int k, const float *A, int lda, const float *B, int ldb,
                             float beta, float *C, int ldc) {
    qc_gpu *g = s->g;
    float *A3 = s->split, *B3 = s->split + (size_t)3 * MAXB * s->max_K;
    const size_t work = (size_t)m * k + (size_t)k * n;
    k_split3<<<(unsigned)std::min<size_t>(qc_grid(work, 256), 4096), 256, 0, g->stream>>>(A, lda, m, k, A3, B, ldb, n, B3);
    QC_CU_LAUNCH("split for 3xTF32");
    const float one = 1.0f;
    QC_CUBLAS(cublasGemmEx(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 3 * k, &one, A3, CUDA_R_32F, m, B3, CUDA_R_32F,
                           3 * k, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    return QC_OK;
}

/* The solver's workspace holds an N x K linear. */
static qc_status check_capacity(const qc_gpu_solver *s, int N, int K) {
    if (N > s->max_N || K > s->max_K || (size_t)N * K > s->max_NK)
        return qc_fail(QC_ERR_ARG, "gpu solver: a %dx%d layer exceeds the workspace (%dx%d, %zu elements)", N, K,
                       s->max_N, s->max_K, s->max_NK);
    return QC_OK;
}

/* scales / zf hold [G, N]; grown past the create-time capacity only for groups smaller than 32. */
static qc_status ensure_groups(qc_gpu_solver *s, int G, int N) {
    size_t need = (size_t)G * N;
    if (need <= s->gcap) return QC_OK;
    qc_gpu_free(s->g, s->scales);
    qc_gpu_free(s->g, s->zf);
    s->scales = s->zf = NULL;
    s->gcap = 0;
    qc_status st;
    if ((st = qc_gpu_alloc(s->g, (void **)&s->scales, 4 * need, "the GPTQ scales")) ||
        (st = qc_gpu_alloc(s->g, (void **)&s->zf, 4 * need, "the GPTQ zero points")))
        return st;
    s->gcap = need;
    return QC_OK;
}

/* The device codes are now an N x K linear's, all rows in the window (qc_gpu_pack, qc_gpu_solver_rows). */
static void hold_codes(qc_gpu_solver *s, int N, int K, int bits) {
    s->last_N = s->full_N = N;
    s->row0 = 0;
    s->last_K = K;
    s->last_bits = bits;
    s->have_codes = true;
}

/* Group params into q: scales as they are, zero points from the solver's floats. */
static qc_status download_params(qc_gpu_solver *s, qc_qlinear *q) {
    size_t gn = (size_t)q->n_groups * q->N;
    qc_status st;
    if ((st = qc_gpu_download(s->g, q->scales, s->scales, 4 * gn))) return st;
    if ((st = qc_gpu_download(s->g, q->zeros, s->zf, 4 * gn))) return st;
    for (size_t i = 0; i < gn; i++) {
        float f;
        memcpy(&f, &q->zeros[i], 4);
        q->zeros[i] = (int32_t)f;
    }
    return QC_OK;
}

static qc_status launch_groups(qc_gpu_solver *s, float *W, int N, int K, int gs, int bits, bool sym, bool awq,
                               bool quant) {
    size_t warps = (size_t)N * (K / gs);
    k_groups<<<qc_grid(warps * 32, 256), 256, 0, s->g->stream>>>(W, N, K, gs, (1 << bits) - 1, sym, awq, quant,
                                                                 s->scales, s->zf, s->codes);
    QC_CU_LAUNCH("groups");
    return QC_OK;
}

/* Hd = Hbak + add on the diagonal, rotated by 180 degrees: H[p] = Hd[K*K - 1 - p] (the reversal J Hd J). */
static __global__ void k_rot_damp(float *H, const float *Hbak, int K, double add) {
    const size_t KK = (size_t)K * K;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < KK; p += (size_t)gridDim.x * blockDim.x) {
        size_t q = KK - 1 - p;
        float v = Hbak[q];
        if (p / K == p % K) v = (float)__dadd_rn((double)v, add);
        H[p] = v;
    }
}

/* In place: A[i][j] <- A[K-1-j][K-1-i] (row-major), the transpose across the anti-diagonal, an involution
 * done as swaps of pairs. */
static __global__ void k_antitranspose(float *A, int K) {
    const size_t KK = (size_t)K * K;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < KK; p += (size_t)gridDim.x * blockDim.x) {
        size_t i = p / K, j = p % K, q = (size_t)(K - 1 - j) * K + (K - 1 - i);
        if (p < q) {
            float t = A[p];
            A[p] = A[q];
            A[q] = t;
        }
    }
}

/* info[0] <- 1 + the first i whose L[i][i] (column-major [K, K]) is not finite and positive, else unchanged:
 * the triangular inverse's own check (its diagonal is 1 / the factor's). */
static __global__ void k_check_diag(const float *L, int K, int *info) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < K; i += gridDim.x * blockDim.x) {
        float v = L[(size_t)i * K + i];
        if (!(v > 0.0f && v <= 3.4e38f)) atomicMin(info, i + 1);
    }
}

/* The cuSOLVER workspace: at least `floats` device floats and `host_bytes` host bytes. */
static qc_status ensure_ws(qc_gpu_solver *s, size_t floats, size_t host_bytes) {
    if (floats > (size_t)s->ws_len) {
        qc_gpu_free(s->g, s->ws);
        s->ws = NULL;
        s->ws_len = 0;
        qc_status e = qc_gpu_alloc(s->g, (void **)&s->ws, 4 * floats, "the cuSOLVER workspace");
        if (e) return e;
        s->ws_len = (int)floats;
    }
    if (host_bytes > s->hws_len) {
        void *p = realloc(s->hws, host_bytes);
        if (!p) return qc_fail(QC_ERR_NOMEM, "out of memory");
        s->hws = p;
        s->hws_len = host_bytes;
    }
    return QC_OK;
}

/* Below this order the triangular inverse is cuSOLVER's trtri; above it, the recursion below. */
#define TRTRI_BASE 256

/* Column-major lower L [n, n] (leading dimension ld) <- L^-1 in place, recursively:
 * [L11 .; L21 L22]^-1 = [L11^-1 .; -L22^-1 L21 L11^-1, L22^-1], the diagonal blocks inverted first, then
 * two in-place triangular products (cuBLAS trmm, strict fp32). Splits at multiples of 128. n^3/3 flops as
 * trtri's, at 2.7x its rate on an H100 at n = 14336 (benchmarks/bench_factor_gpu.c: 41 vs 111 ms). The
 * leaves' own info is not read: the caller checks the result's diagonal. */
static qc_status trtri_rec(qc_gpu_solver *s, float *A, int n, int ld) {
    qc_gpu *g = s->g;
    if (n <= TRTRI_BASE) {
        size_t dev_b = 0, host_b = 0;
        QC_CUSOLVER(cusolverDnXtrtri_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F,
                                                A, ld, &dev_b, &host_b));
        qc_status e = ensure_ws(s, (dev_b + 3) / 4, host_b);
        if (e) return e;
        QC_CUSOLVER(cusolverDnXtrtri(g->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, A, ld,
                                     s->ws, 4 * (size_t)s->ws_len, s->hws, s->hws_len, s->info + 2));
        return QC_OK;
    }
    int n1 = n / 2 / 128 * 128;
    if (n1 < 128) n1 = n / 2;
    const int n2 = n - n1;
    float *A11 = A, *A21 = A + n1, *A22 = A + (size_t)n1 * ld + n1;
    qc_status e = trtri_rec(s, A11, n1, ld);
    if (e == QC_OK) e = trtri_rec(s, A22, n2, ld);
    if (e) return e;
    const float one = 1.0f, mone = -1.0f;
    cublasMath_t mode;
    QC_CUBLAS(cublasGetMathMode(g->blas, &mode));
    QC_CUBLAS(cublasSetMathMode(g->blas, CUBLAS_DEFAULT_MATH));
    /* A21 <- A21 L11^-1, then A21 <- -L22^-1 A21 (cuBLAS trmm writes C; C = B is its in-place form) */
    cublasStatus_t b1 = cublasStrmm(g->blas, CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                    CUBLAS_DIAG_NON_UNIT, n2, n1, &one, A11, ld, A21, ld, A21, ld);
    cublasStatus_t b2 = b1 != CUBLAS_STATUS_SUCCESS ? b1
                        : cublasStrmm(g->blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N,
                                      CUBLAS_DIAG_NON_UNIT, n2, n1, &mone, A22, ld, A21, ld, A21, ld);
    cublasSetMathMode(g->blas, mode);
    QC_CUBLAS(b2);
    return QC_OK;
}

/* The sweep can run on the R form when no group reads a column of a later lazy batch (whose start values
 * the R form does not hold): per-row params, static groups, or groups that tile the batches. */
static bool use_rform(const qc_gpu_solver *s, const qc_gptq_opts *o) {
    return !s->plain_factor && (o->group_size == -1 || o->static_groups || o->blocksize % o->group_size == 0);
}

/* Steps 5-6 of D.3 on the device: H <- U (row-major upper, (Hbak + damp mean I)^-1 = U^T U), damping
 * raised by damp_step after each failed factorisation, as gptq.c inverse_factor.
 *
 * Fast path (default): with J the reversal, J Hd J = L L^T (potrf), so Hd = R R^T with R = J L J upper,
 * and Hd^-1 = R^-T R^-1: U = R^-1 = J L^-1 J (trtri_rec), the upper Cholesky factor of the inverse, in one
 * factorisation and one triangular inverse (2K^3/3 flops), whose diagonal is then checked (finite,
 * positive) as potrf's info checks the factor's. cuSOLVER is column-major; a symmetric matrix
 * reads the same either way, L^-1 column-major lower sits at [c * K + r], so U[i][j] = L^-1(K-1-i, K-1-j)
 * at [(K-1-j) * K + K-1-i]: one anti-transpose in place.
 * R form (rform, use_rform): no triangular inverse at all. H <- R row-major upper (Hd = R R^T, U = R^-1), with
 * its diagonal blocks of the sweep's blocksize replaced by U's own (U_cc = R_cc^-1, k_diag_inv): K^3/3 flops.
 * sweep_w runs on that directly (see there).
 * Plain twin (qc_gpu_solver_plain): potrf, potri, potrf as gptq.c and the reference do (4K^3/3;
 * a row-major lower triangle is cuSOLVER's column-major upper one, so LOWER twice gives the row-major
 * upper factor). The two agree to fp32 rounding (tests/test_gpu_solver.c). */
static qc_status inverse_factor(qc_gpu_solver *s, float *H, int K, double mean, const qc_gptq_opts *o, bool rform,
                                qc_gptq_stats *st) {
    qc_gpu *g = s->g;
    int l1 = 0, l2 = 0;
    size_t dev_b = 0, host_b = 0;
    QC_CUSOLVER(cusolverDnSpotrf_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, K, H, K, &l1));
    if (s->plain_factor)
        QC_CUSOLVER(cusolverDnSpotri_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, K, H, K, &l2));
    else
        QC_CUSOLVER(cusolverDnXtrtri_bufferSize(g->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, K, CUDA_R_32F,
                                                H, K, &dev_b, &host_b));
    qc_status e = ensure_ws(s, std::max((size_t)std::max(l1, l2), (dev_b + 3) / 4), host_b);
    if (e) return e;
    const size_t KK = (size_t)K * K;
    double damp = o->damp;
    for (;;) {
        if (s->plain_factor) {
            QC_CU(cudaMemcpyAsync(H, s->Hbak, sizeof(float) * KK, cudaMemcpyDeviceToDevice, g->stream));
            k_damp<<<qc_grid((size_t)K, 256), 256, 0, g->stream>>>(H, s->Hbak, K, damp * mean);
            QC_CU_LAUNCH("damp");
        } else {
            k_rot_damp<<<qc_grid(KK, 256), 256, 0, g->stream>>>(H, s->Hbak, K, damp * mean);
            QC_CU_LAUNCH("damp");
        }
        int info = 0;
        const char *step = "potrf";
        QC_CUSOLVER(cusolverDnSpotrf(g->solver, CUBLAS_FILL_MODE_LOWER, K, H, K, s->ws, s->ws_len, s->info));
        if ((e = qc_gpu_download(g, &info, s->info, sizeof info))) return e;
        if (info == 0 && s->plain_factor) {
            step = "potri";
            QC_CUSOLVER(cusolverDnSpotri(g->solver, CUBLAS_FILL_MODE_LOWER, K, H, K, s->ws, s->ws_len, s->info));
            if ((e = qc_gpu_download(g, &info, s->info, sizeof info))) return e;
            if (info == 0) {
                step = "potrf of the inverse";
                QC_CUSOLVER(cusolverDnSpotrf(g->solver, CUBLAS_FILL_MODE_LOWER, K, H, K, s->ws, s->ws_len, s->info));
                if ((e = qc_gpu_download(g, &info, s->info, sizeof info))) return e;
            }
        } else if (info == 0 && rform) {
            /* R form: R = J L J row-major (the anti-transpose of potrf's column-major L), its diagonal blocks
             * then replaced by U's (potrf's info has checked R's diagonal) */
            k_antitranspose<<<qc_grid(KK, 256), 256, 0, g->stream>>>(H, K);
            QC_CU_LAUNCH("anti-transpose");
            const int B = o->blocksize, nblk = (K + B - 1) / B;
            k_diag_inv<<<nblk, B, smem_diag_inv(std::min(B, K)), g->stream>>>(H, K, B);
            QC_CU_LAUNCH("diagonal-block inverses");
        } else if (info == 0) {
            step = "trtri";
            if ((e = trtri_rec(s, H, K, K))) return e;
            QC_CU(cudaMemsetAsync(s->info, 0x7f, sizeof(int), g->stream)); /* INT_MAX-ish: none bad */
            k_check_diag<<<qc_grid((size_t)K, 256), 256, 0, g->stream>>>(H, K, s->info);
            QC_CU_LAUNCH("trtri check");
            if ((e = qc_gpu_download(g, &info, s->info, sizeof info))) return e;
            if (info == 0x7f7f7f7f) info = 0;
            if (info == 0) {
                k_antitranspose<<<qc_grid(KK, 256), 256, 0, g->stream>>>(H, K);
                QC_CU_LAUNCH("anti-transpose");
            }
        }
        if (info == 0) {
            st->damp_used = damp;
            return QC_OK;
        }
        if (info < 0) return qc_fail(QC_ERR_NUMERIC, "gptq: cuSOLVER %s rejected argument %d", step, -info);
        st->retries++;
        double next = damp + (o->damp_step > 0 ? o->damp_step : 0.01);
        if (next >= 1.0)
            return qc_fail(QC_ERR_NUMERIC, "gptq: Cholesky failed at every damping up to %.3f (Hessian not positive "
                           "definite: too few or degenerate calibration inputs?)", damp);
        QC_LOGW("gptq: Cholesky failed (leading minor %d) at damp %.4f; retrying with %.4f", info, damp, next);
        damp = next;
    }
}

/* Steps 2 (on H), 4 and 5-6: dead columns from H's diagonal (kept in s->dead, host perm in s->perm_h),
 * the act-order permutation, Hbak = the permuted undamped H, H <- U. Remembers the factor (s->U = H) and
 * the options it depends on, for qc_gptq_quantize_gpu_again. */
static qc_status factor_h(qc_gpu_solver *s, float *H, int K, const qc_gptq_opts *o, qc_gptq_stats *st) {
    qc_gpu *g = s->g;
    qc_status e;
    s->U = NULL;
    s->have_hbak = s->have_loss = false;
    std::vector<float> diag((size_t)K);
    QC_CU(cudaMemcpy2DAsync(diag.data(), sizeof(float), H, sizeof(float) * ((size_t)K + 1), sizeof(float), (size_t)K,
                            cudaMemcpyDeviceToHost, g->stream));
    QC_CU(cudaStreamSynchronize(g->stream));
    std::vector<int> dead;
    for (int k = 0; k < K; k++)
        if (diag[k] == 0.0f) {
            diag[k] = 1.0f;
            dead.push_back(k);
        }
    st->dead_cols = (int)dead.size();
    s->last_dead = (int)dead.size();
    if (!dead.empty()) {
        if ((e = qc_gpu_upload(g, s->dead, dead.data(), sizeof(int) * dead.size()))) return e;
        k_dead<<<qc_grid(dead.size(), 256), 256, 0, g->stream>>>(H, NULL, 1, K, s->dead, (int)dead.size());
        QC_CU_LAUNCH("dead columns");
    }
    int *perm = s->perm_h;
    for (int k = 0; k < K; k++) perm[k] = k;
    if (o->act_order) std::stable_sort(perm, perm + K, [&](int a, int b) { return diag[a] > diag[b]; });
    if ((e = qc_gpu_upload(g, s->perm, perm, sizeof(int) * (size_t)K))) return e;
    if (o->act_order) {
        k_perm_h<<<qc_grid((size_t)K * K, 256), 256, 0, g->stream>>>(s->Hbak, H, s->perm, K);
        QC_CU_LAUNCH("permute H");
    } else {
        QC_CU(cudaMemcpyAsync(s->Hbak, H, sizeof(float) * (size_t)K * K, cudaMemcpyDeviceToDevice, g->stream));
    }
    s->have_hbak = true;
    double mean = 0.0;
    for (int k = 0; k < K; k++) mean += diag[perm[k]];
    mean /= K;
    const bool rform = use_rform(s, o);
    QC_CU(cudaEventRecord(s->ev[0], g->stream));
    if ((e = inverse_factor(s, H, K, mean, o, rform, st))) return e;
    QC_CU(cudaEventRecord(s->ev[1], g->stream));
    s->U = H;
    s->u_rform = rform;
    s->u_K = K;
    s->u_opts = *o;
    s->u_stats = *st;
    s->u_add = st->damp_used * mean;
    return QC_OK;
}

/* Steps 1, 2 (on W), 3, 7-10 with the factor s->U: the blocked sweep of W, then params, g_idx, codes, loss. */
static qc_status sweep_w(qc_gpu_solver *s, float *W, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                         bool want_codes, qc_gptq_stats *st) {
    qc_gpu *g = s->g;
    qc_status e;
    const int gs = o->group_size, B = o->blocksize, maxq = (1 << o->bits) - 1, G = q->n_groups;
    const float *U = s->U;
    const int *perm = s->perm_h;
    if ((e = ensure_groups(s, G, N))) return e;
    s->have_loss = false;
    QC_CU(cudaMemsetAsync(s->rowloss, 0, sizeof(double) * (size_t)N, g->stream));
    /* 1: row params before the dead-column fix */
    if (gs == -1 && (e = launch_groups(s, W, N, K, K, o->bits, o->sym, false, false))) return e;
    /* 2: dead columns of W */
    if (s->last_dead) {
        k_dead<<<qc_grid((size_t)s->last_dead * N, 256), 256, 0, g->stream>>>(NULL, W, N, K, s->dead, s->last_dead);
        QC_CU_LAUNCH("dead columns");
    }
    /* 3: static groups from the original contiguous groups */
    if (o->static_groups && gs > 0 && (e = launch_groups(s, W, N, K, gs, o->bits, o->sym, false, false))) return e;
    /* 4: W in processing order */
    float *Ww = W;
    if (o->act_order) {
        k_perm_w<<<qc_grid((size_t)N * K, 256), 256, 0, g->stream>>>(s->Wp, W, s->perm, N, K, true);
        QC_CU_LAUNCH("permute W");
        Ww = s->Wp;
    }
    /* 7: the blocked sweep. U form (the reference's): each block's errors E_c update the later columns of Ww,
     * W[:, >c] -= E_c U[c, >c]. R form (s->u_rform): W0 - Q = E U and U R = I give batch c's start values as
     * W0_c + G_c U_cc, G_c = sum over b < c of F_b R[b, c], F = W0 - Q; so Ww keeps W0 until each block ends,
     * and GF (the weight-sized buffer W0 leaves free) holds G for the columns to come and F for those done:
     * per block one small GEMM T = G_c U_cc (into Err, [N, nb]), the block kernel (start W0 + T, F at the end), then
     * the trailing GEMM G[:, >c] += F_c R[c, >c] with the U form's shape. */
    const int mode = gs == -1 ? MODE_ROW : o->static_groups ? MODE_STATIC : MODE_GROUP;
    const int gsk = gs == -1 ? K : gs;
    const bool rform = s->u_rform;
    const int sweep = s->sweep < 0 ? -1 : s->sweep > 0 ? s->sweep - 1 : pick_sweep(N);
    float *GF = !rform ? NULL : o->act_order ? W : s->Wp;
    QC_CU(cudaEventRecord(s->ev[2], g->stream));
    for (int i1 = 0; i1 < K; i1 += B) {
        const int nb = std::min(B, K - i1), i2 = i1 + nb;
        const bool tadd = rform && i1 > 0;
        /* T [N, nb] row-major is column-major T^T = U_cc^T G_c^T: both operands as they lie */
        if (tadd && (e = sgemm(g, CUBLAS_OP_N, CUBLAS_OP_N, nb, N, nb, 1.0f, U + (size_t)i1 * K + i1, K, GF + i1, K,
                               0.0f, s->Err, nb)))
            return e;
        const size_t smem = sizeof(float) * ((size_t)nb * nb + (size_t)nb * (ROWS + 1));
        if (sweep < 0)
            k_gptq_block<<<(N + ROWS - 1) / ROWS, ROWS, smem, g->stream>>>(Ww, N, K, i1, nb, U, s->Err, s->codes, s->perm,
                                                                           s->scales, s->zf, gsk, maxq, mode, o->sym,
                                                                           o->ref_group_quirk, o->fp16_scales, s->rowloss,
                                                                           GF, tadd);
        else {
            const int rows = k_sweeps[sweep].rows, tpr = k_sweeps[sweep].tpr;
            k_sweeps[sweep].fn<<<(N + rows - 1) / rows, rows * tpr, k_sweeps[sweep].smem(nb), g->stream>>>(
                Ww, N, K, i1, nb, U, s->Err, s->codes, s->perm, s->scales, s->zf, gsk, maxq, mode, o->sym,
                o->ref_group_quirk, o->fp16_scales, s->rowloss, GF, tadd);
        }
        QC_CU_LAUNCH("gptq block");
        if (i2 < K && rform) {
            e = s->lazy_fp32 ? sgemm(g, CUBLAS_OP_N, CUBLAS_OP_N, K - i2, N, nb, 1.0f, U + (size_t)i1 * K + i2, K,
                                     GF + i1, K, i1 > 0 ? 1.0f : 0.0f, GF + i2, K)
                             : gemm_3xtf32(s, K - i2, N, nb, U + (size_t)i1 * K + i2, K, GF + i1, K,
                                           i1 > 0 ? 1.0f : 0.0f, GF + i2, K);
            if (e) return e;
        }
        if (i2 < K && !rform &&
            (e = sgemm(g, CUBLAS_OP_N, CUBLAS_OP_T, K - i2, N, nb, -1.0f, U + (size_t)i1 * K + i2, K, s->Err, N, 1.0f,
                       Ww + i2, K)))
            return e;
    }
    QC_CU(cudaEventRecord(s->ev[3], g->stream));
    /* 8-10 */
    if (o->act_order) {
        k_perm_w<<<qc_grid((size_t)N * K, 256), 256, 0, g->stream>>>(s->Wp, W, s->perm, N, K, false);
        QC_CU_LAUNCH("unpermute W");
    }
    if ((e = download_params(s, q))) return e;
    for (int j = 0; j < K; j++) {
        if (gs == -1) q->g_idx[j] = 0;
        else if (o->act_order && !o->static_groups) q->g_idx[perm[j]] = j / gs;
        else q->g_idx[j] = j / gs;
    }
    if (want_codes && (e = qc_gpu_download(g, q->codes, s->codes, (size_t)N * K))) return e;
    k_sum_fixed<<<1, 256, 0, g->stream>>>(s->rowloss, N, s->acc + PARTS);
    QC_CU_LAUNCH("loss sum");
    if ((e = qc_gpu_download(g, &st->loss, s->acc + PARTS, sizeof(double)))) return e;
    if ((e = qc_gpu_sync(g))) return e;
    float ms = 0;
    QC_CU(cudaEventElapsedTime(&ms, s->ev[2], s->ev[3]));
    st->t_sweep = ms / 1e3;
    hold_codes(s, N, K, o->bits);
    s->have_loss = true;
    return QC_OK;
}

static qc_status gptq_args(qc_gpu_solver *s, int N, int K, const qc_gptq_opts *o, const qc_qlinear *q) {
    qc_status e;
    if ((e = qc_gptq_check_args(N, K, o, q)) || (e = check_capacity(s, N, K))) return e;
    if (o->blocksize > MAXB)
        return qc_fail(QC_ERR_ARG, "gptq (gpu): blocksize %d exceeds the GPU solver's %d", o->blocksize, MAXB);
    return QC_OK;
}

extern "C" {

qc_status qc_gptq_quantize_gpu(qc_gpu_solver *s, float *W, float *H, int N, int K, const qc_gptq_opts *o,
                               qc_qlinear *q, bool want_codes, qc_gptq_stats *st) {
    double t0 = qc_time_now();
    memset(st, 0, sizeof *st);
    s->have_codes = false;
    qc_status e = gptq_args(s, N, K, o, q);
    if (e == QC_OK) e = factor_h(s, H, K, o, st);
    if (e == QC_OK) e = sweep_w(s, W, N, K, o, q, want_codes, st);
    float ms = 0;
    if (e == QC_OK && cudaEventElapsedTime(&ms, s->ev[0], s->ev[1]) == cudaSuccess) st->t_factor = ms / 1e3;
    st->seconds = qc_time_now() - t0;
    return e;
}

qc_status qc_gptq_quantize_gpu_again(qc_gpu_solver *s, float *W, int N, int K, const qc_gptq_opts *o, qc_qlinear *q,
                                     bool want_codes, qc_gptq_stats *st) {
    double t0 = qc_time_now();
    memset(st, 0, sizeof *st);
    s->have_codes = false;
    qc_status e = gptq_args(s, N, K, o, q);
    if (e) return e;
    if (!s->U || s->u_K != K || s->u_opts.act_order != o->act_order || s->u_opts.damp != o->damp ||
        s->u_opts.damp_step != o->damp_step || s->u_rform != use_rform(s, o) ||
        (s->u_rform && s->u_opts.blocksize != o->blocksize))
        return qc_fail(QC_ERR_ARG, "gptq (gpu): no factor of a %dx%d Hessian with these options to use again", K, K);
    s->have_hbak = true; /* Hbak, perm and dead are the factorisation's, untouched since */
    *st = s->u_stats; /* damping, retries, dead columns: those of the factorisation */
    st->loss = 0;
    st->t_factor = 0;
    e = sweep_w(s, W, N, K, o, q, want_codes, st);
    st->seconds = qc_time_now() - t0;
    return e;
}

void qc_gpu_solver_plain(qc_gpu_solver *s, bool factor, bool sweep) {
    if (factor != s->plain_factor) s->U = NULL;
    s->plain_factor = factor;
    s->sweep = sweep ? -1 : 0;
}

bool qc_gpu_solver_lazy_fp32(qc_gpu_solver *s, bool on) {
    bool was = s->lazy_fp32;
    s->lazy_fp32 = on;
    return was;
}

qc_status qc_gpu_solver_sweep(qc_gpu_solver *s, int rows, int tpr) {
    if (rows == 0 && tpr == 0) {
        s->sweep = 0;
        return QC_OK;
    }
    if (tpr == 1 && (rows == ROWS || rows == 0)) {
        s->sweep = -1;
        return QC_OK;
    }
    for (int i = 0; i < N_SWEEPS; i++)
        if (k_sweeps[i].rows == rows && k_sweeps[i].tpr == tpr) {
            s->sweep = i + 1;
            return QC_OK;
        }
    return qc_fail(QC_ERR_ARG, "gpu solver: no sweep kernel of %d rows x %d threads", rows, tpr);
}

bool qc_gpu_sweep_kernel(int i, int *rows, int *tpr) {
    if (i < 0 || i > N_SWEEPS) return false;
    *rows = i == 0 ? ROWS : k_sweeps[i - 1].rows;
    *tpr = i == 0 ? 1 : k_sweeps[i - 1].tpr;
    return true;
}

/* RTN and AWQ's quantizer: per-(row, group) params and codes in one pass, W <- W_hat; g_idx = k / gs. */
static qc_status quantize_rowwise(qc_gpu_solver *s, float *W, int N, int K, int gs, int bits, bool sym, bool awq,
                                  qc_qlinear *q, bool want_codes) {
    qc_status e;
    if ((e = ensure_groups(s, K / gs, N)) || (e = launch_groups(s, W, N, K, gs, bits, sym, awq, true)) ||
        (e = download_params(s, q)))
        return e;
    if (want_codes && (e = qc_gpu_download(s->g, q->codes, s->codes, (size_t)N * K))) return e;
    for (int k = 0; k < K; k++) q->g_idx[k] = k / gs;
    hold_codes(s, N, K, bits);
    s->have_hbak = s->have_loss = false;
    return QC_OK;
}

qc_status qc_rtn_quantize_gpu(qc_gpu_solver *s, float *W, int N, int K, int bits, int group_size, bool sym,
                              qc_qlinear *q, bool want_codes) {
    s->have_codes = false;
    qc_gptq_opts o = qc_gptq_default_opts();
    o.bits = bits;
    o.group_size = group_size;
    o.sym = sym;
    qc_status e;
    if ((e = qc_gptq_check_args(N, K, &o, q)) || (e = check_capacity(s, N, K))) return e;
    return quantize_rowwise(s, W, N, K, group_size == -1 ? K : group_size, bits, sym, false, q, want_codes);
}

qc_status qc_awq_quantize_gpu(qc_gpu_solver *s, float *W, int N, int K, int bits, int group_size, qc_qlinear *q,
                              bool want_codes) {
    s->have_codes = false;
    int gs = group_size;
    if (gs <= 0 || K % gs != 0) return qc_fail(QC_ERR_ARG, "awq: group size %d does not divide %d", gs, K);
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return qc_fail(QC_ERR_ARG, "awq: bits must be 2, 3, 4 or 8 (got %d)", bits);
    if (q->N != N || q->K != K || q->bits != bits || q->n_groups != K / gs || q->sym)
        return qc_fail(QC_ERR_ARG, "awq: output layer does not match %dx%d w%d g%d asym", N, K, bits, gs);
    qc_status e = check_capacity(s, N, K);
    return e ? e : quantize_rowwise(s, W, N, K, gs, bits, false, true, q, want_codes);
}

/* Host-side checks of gptq_format.c / awq_format.c check_pack_input (the codes are checked on the device)
 * and the fp16 scales, converted on the host with qc_f32_to_fp16 so they are the CPU packer's bits. */
/* The CPU packers' checks and fp16 scales (formats/), all but the code range, which is checked here. */
static qc_status pack_checks(const qc_qlinear *q, qc_gpu_pack_format fmt, uint16_t *scales16) {
    return fmt == QC_GPU_PACK_AWQ ? qc_awq_pack_prepare(q, scales16)
                                  : qc_gptq_pack_prepare(q, fmt == QC_GPU_PACK_GPTQ_V2, scales16);
}

qc_status qc_gpu_pack(qc_gpu_solver *s, const qc_qlinear *q, qc_gpu_pack_format fmt, int32_t *qweight,
                      int32_t *qzeros, uint16_t *scales_f16) {
    if (fmt != QC_GPU_PACK_GPTQ && fmt != QC_GPU_PACK_GPTQ_V2 && fmt != QC_GPU_PACK_AWQ)
        return qc_fail(QC_ERR_ARG, "gpu pack: unknown format %d", (int)fmt);
    if (!s->have_codes || q->N != s->last_N || q->K != s->last_K || q->bits != s->last_bits)
        return qc_fail(QC_ERR_ARG, "gpu pack: the solver holds no codes for a %dx%d w%d layer (last solved: %s%dx%d w%d)",
                       q->N, q->K, q->bits, s->have_codes ? "" : "none, ", s->last_N, s->last_K, s->last_bits);
    qc_status e;
    if ((e = pack_checks(q, fmt, scales_f16))) return e;
    qc_gpu *g = s->g;
    const int N = q->N, K = q->K, G = q->n_groups, b = q->bits, maxq = (1 << b) - 1;
    const bool awq = fmt == QC_GPU_PACK_AWQ;
    const uint8_t *codes = s->codes + (size_t)s->row0 * K; /* the window's rows */
    /* codes <= maxq (gptq_format.c checks them; ours come from the solver, so this only guards misuse) */
    QC_CU(cudaMemsetAsync(s->info + 1, 0, sizeof(int), g->stream));
    k_max_code<<<qc_grid((size_t)N * K, 256), 256, 0, g->stream>>>(codes, (size_t)N * K, s->info + 1);
    QC_CU_LAUNCH("max code");
    int mx = 0;
    if ((e = qc_gpu_download(g, &mx, s->info + 1, sizeof mx))) return e;
    if (mx > maxq)
        return qc_fail(QC_ERR_ARG, "%s: a code = %d exceeds maxq %d", awq ? "awq pack" : "gptq pack", mx, maxq);
    const size_t nw = awq ? (size_t)K * (N / 8) : (size_t)K * b / 32 * N;
    const size_t nz = awq ? (size_t)G * (N / 8) : (size_t)G * ((size_t)N * b / 32);
    const size_t gn = (size_t)G * N, need = 4 * (nw + nz + gn);
    /* staging: the weight workspace, or a temporary buffer when it is too small (tiny groups) */
    void *tmp = NULL;
    char *base = (char *)s->Wp;
    if (need > 4 * s->max_NK) {
        if ((e = qc_gpu_alloc(g, &tmp, need, "gpu pack staging"))) return e;
        base = (char *)tmp;
    }
    uint32_t *dw = (uint32_t *)base, *dz = dw + nw;
    int32_t *dzeros = (int32_t *)(dz + nz);
    e = qc_gpu_upload(g, dzeros, q->zeros, 4 * gn);
    if (e == QC_OK) {
        if (awq) {
            k_pack_awq<<<qc_grid(nw + nz, 256), 256, 0, g->stream>>>(codes, dzeros, N, K, G, dw, dz);
        } else {
            k_pack_gptq_w<<<qc_grid(nw, 256), 256, 0, g->stream>>>(codes, N, K, b, dw);
            k_pack_gptq_z<<<qc_grid(nz, 256), 256, 0, g->stream>>>(dzeros, N, G, b, fmt == QC_GPU_PACK_GPTQ_V2, dz);
        }
        cudaError_t ce = cudaGetLastError();
        if (ce != cudaSuccess) e = qc_fail(QC_ERR_DEVICE, "CUDA kernel pack failed to launch: %s", cudaGetErrorString(ce));
    }
    if (e == QC_OK) e = qc_gpu_download(g, qweight, dw, 4 * nw);
    if (e == QC_OK) e = qc_gpu_download(g, qzeros, dz, 4 * nz);
    if (tmp) {
        cudaStreamSynchronize(g->stream);
        qc_gpu_free(g, tmp);
    }
    return e;
}

/* tr(D H D^T) = sum((D H) .* D) with M = D H written to M ([N, K], not D). A diagnostic (the report's
 * rel_err), so the matrix units' TF32 mode: ~1e-3 relative, 4-8x the rate of strict fp32. */
static qc_status quad_form_into(qc_gpu_solver *s, const float *D, const float *H, float *M, int N, int K, double *out) {
    qc_gpu *g = s->g;
    cublasMath_t mode;
    QC_CUBLAS(cublasGetMathMode(g->blas, &mode));
    QC_CUBLAS(cublasSetMathMode(g->blas, CUBLAS_TF32_TENSOR_OP_MATH));
    const float one = 1.0f, zero = 0.0f;
    /* row-major M = D H is column-major H^T D^T (no symmetry assumed) */
    cublasStatus_t bs = cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, K, N, K, &one, H, K, D, K, &zero, M, K);
    cublasSetMathMode(g->blas, mode);
    QC_CUBLAS(bs);
    k_dot_parts<<<PARTS, 256, 0, g->stream>>>(M, D, (size_t)N * K, s->acc);
    QC_CU_LAUNCH("dot");
    k_sum_parts<<<1, 32, 0, g->stream>>>(s->acc, PARTS);
    QC_CU_LAUNCH("sum");
    return qc_gpu_download(g, out, s->acc + PARTS, sizeof(double));
}

qc_status qc_gpu_solver_rows(qc_gpu_solver *s, int row0, int N) {
    if (!s->have_codes || row0 < 0 || N < 1 || row0 > s->full_N - N)
        return qc_fail(QC_ERR_ARG, "gpu solver: rows [%d, %d) of a last solve of %d rows%s", row0, row0 + N, s->full_N,
                       s->have_codes ? "" : " (none held)");
    s->row0 = row0;
    s->last_N = N;
    return QC_OK;
}

qc_status qc_gpu_solver_quad_form_saved(qc_gpu_solver *s, float *D, int N, int K, double *out) {
    if (!s->have_hbak || N != s->last_N || K != s->last_K)
        return qc_fail(QC_ERR_ARG, "gpu quad form: no saved Hessian of a %dx%d GPTQ linear", N, K);
    qc_gpu *g = s->g;
    if (s->last_dead) { /* dead columns: H's rows there are 0 in the original, 1 on Hbak's diagonal */
        k_dead<<<qc_grid((size_t)s->last_dead * N, 256), 256, 0, g->stream>>>(s->Hbak, D, N, K, s->dead, s->last_dead);
        QC_CU_LAUNCH("dead columns");
    }
    k_perm_w<<<qc_grid((size_t)N * K, 256), 256, 0, g->stream>>>(s->Wp, D, s->perm, N, K, true);
    QC_CU_LAUNCH("permute D");
    return quad_form_into(s, s->Wp, s->Hbak, D, N, K, out);
}

/* The sweep's loss is sum(E^2) / 2 with E the scaled errors, and W0' - Q = E U with U^T U = Hd^-1 (Hd the
 * damped H the factor was made from, W0' = W0 with its dead columns zeroed), so
 * tr((W0' - Q) Hd (W0' - Q)^T) = E U Hd U^T E^T = sum(E^2) = 2 loss, to the sweep's fp32 rounding. The
 * damping adds add * ||D'||^2 and a dead column's unit diagonal its What^2, while H has zero rows there:
 * tr(D H D^T) = 2 loss - add sum(D^2) + sum over dead columns (add D^2 - (1 + add) What^2), for the
 * rows of the window (qc_gpu_solver_rows), whose loss shares rowloss keeps. Reductions in fixed orders. */
qc_status qc_gpu_solver_error(qc_gpu_solver *s, const float *D, const float *What, int N, int K, double *out) {
    if (!s->have_loss || !s->U || N != s->last_N || K != s->last_K)
        return qc_fail(QC_ERR_ARG, "gpu solver error: no GPTQ solve of a %dx%d linear held", N, K);
    qc_gpu *g = s->g;
    double *t = s->acc + PARTS - 3; /* t[0] = sum(D^2) (after PARTS - 3 partials), t[1] loss, t[2] dead term */
    k_dot_parts<<<PARTS - 3, 256, 0, g->stream>>>(D, D, (size_t)N * K, s->acc);
    QC_CU_LAUNCH("sum of squares");
    k_sum_parts<<<1, 32, 0, g->stream>>>(s->acc, PARTS - 3);
    QC_CU_LAUNCH("sum");
    k_sum_fixed<<<1, 256, 0, g->stream>>>(s->rowloss + s->row0, N, t + 1);
    QC_CU_LAUNCH("loss sum");
    if (s->last_dead) {
        k_dead_term<<<1, 256, 0, g->stream>>>(D, What, N, K, s->dead, s->last_dead, s->u_add, t + 2);
        QC_CU_LAUNCH("dead columns");
    } else {
        QC_CU(cudaMemsetAsync(t + 2, 0, sizeof(double), g->stream));
    }
    double v[3];
    qc_status e = qc_gpu_download(g, v, t, sizeof v);
    if (e) return e;
    *out = 2.0 * v[1] - s->u_add * v[0] + v[2];
    return QC_OK;
}

qc_status qc_gpu_quad_form(qc_gpu_solver *s, const float *D, const float *H, int N, int K, double *out) {
    if (N < 1 || K < 1 || N > s->max_N || K > s->max_K || (size_t)N * K > s->max_NK)
        return qc_fail(QC_ERR_ARG, "gpu quad form: %dx%d outside the workspace (%dx%d)", N, K, s->max_N, s->max_K);
    return quad_form_into(s, D, H, s->Wp, N, K, out);
}

} /* extern "C" */
