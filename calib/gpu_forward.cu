/* gpu_forward.cu - the decoder layer on the GPU and layer streaming (see gpu_forward.h).
 *
 * Attention runs in one fused kernel (gpu_attn.cu) where head_dim allows; its plain twin, and the path
 * for other head sizes, runs per sequence as two cuBLAS strided-batched GEMMs around a masked softmax kernel:
 * S = scale * Q K^T (fp32) over a chunk of kv heads, P = softmax(S) (fp16), O = P V. For grouped-query
 * heads the batch runs over kv heads for one group member r at a time (query head kvh * g + r), so
 * each batch has uniform strides. The score chunk is bounded by SCORES_BUDGET. */
#include "gpu_forward.h"
#include "gpu_attn.h"
#include "qc_gpu_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Device bytes for scores (fp32) + probabilities (fp16) of one head chunk; at least one head. */
#define SCORES_BUDGET ((size_t)256 << 20)
#define ALIGN 256

static size_t align_up(size_t x) { return (x + (ALIGN - 1)) & ~(size_t)(ALIGN - 1); }

/* ---- kernels ---- */

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Every thread of the block gets the result; sh holds 32 floats. */
static __device__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = (int)threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
    if (w == 0) v = warp_sum(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}
static __device__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = (int)threadIdx.x < nw ? sh[threadIdx.x] : -INFINITY;
    if (w == 0) v = warp_max(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

/* One block per row: y = (off + w) * (x * rsqrt(mean(x^2) + eps)), as model.c's rmsnorm (off 0, or 1 for
 * Gemma's (1 + w) norms). */
/* 1 / sqrt(mean(r^2) + eps) of one row r [dim], for every thread of the block. */
static __device__ float row_inv_rms(const float *r, int dim, float eps, float *sh) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += r[i] * r[i];
    ss = block_sum(ss, sh);
    return 1.0f / sqrtf(ss / (float)dim + eps);
}

static __global__ void k_rmsnorm(const float *x, const float *w, float off, int dim, float eps, __half *y) {
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    __half *yr = y + (size_t)blockIdx.x * dim;
    float inv = row_inv_rms(xr, dim, eps, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = __float2half_rn((off == 0.0f ? w[i] : off + w[i]) * (xr[i] * inv));
}

/* One block per row: y = (x - mean) * rsqrt(var + eps) * w + b (OPT's LayerNorm; fp32 math, fp16 out), as
 * model.c's layernorm_rows (two passes over the row). */
static __global__ void k_layernorm(const float *x, const float *w, const float *b, int dim, float eps, __half *y) {
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    __half *yr = y + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, sh) / (float)dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (xr[i] - mean) * (xr[i] - mean);
    ss = block_sum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = __float2half_rn((xr[i] - mean) * inv * w[i] + b[i]);
}

/* One block per row, Gemma's post-block norm and residual: x += (off + w) * (y * rsqrt(mean(y^2) + eps)), fp32. */
static __global__ void k_rmsnorm_add(float *x, const float *y, const float *w, float off, int dim, float eps) {
    __shared__ float sh[32];
    const float *yr = y + (size_t)blockIdx.x * dim;
    float *xr = x + (size_t)blockIdx.x * dim;
    float inv = row_inv_rms(yr, dim, eps, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) xr[i] += (off + w[i]) * (yr[i] * inv);
}

/* One warp per (row, head) of x [rows, nh * hd] fp16, in place, in model.c's order: + bias, per-head
 * RMSNorm (normw, Qwen3), rotary embedding (rotate_half; position row % T). Each lane reads and writes
 * only its own elements. */
static __global__ void k_head_post(__half *x, int rows, int nh, int hd, int T, const float *bias, const float *normw,
                                   float noff, float eps, const float *cos_t, const float *sin_t, int rope) {
    int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    size_t total = (size_t)rows * nh;
    /* grid-stride over items, warp-uniform, so the shuffles below see whole warps */
    for (size_t item = (size_t)blockIdx.x * wpb + (threadIdx.x >> 5); item < total; item += (size_t)gridDim.x * wpb) {
        size_t row = item / nh;
        int h = (int)(item % nh);
        __half *v = x + row * (size_t)nh * hd + (size_t)h * hd;
        const float *b = bias ? bias + (size_t)h * hd : NULL;
        float inv = 1.0f;
        if (normw) {
            float ss = 0.0f;
            for (int i = lane; i < hd; i += 32) {
                float a = __half2float(v[i]) + (b ? b[i] : 0.0f);
                ss += a * a;
            }
            ss = warp_sum(ss);
            inv = 1.0f / sqrtf(ss / (float)hd + eps);
        }
        if (!rope) {
            for (int i = lane; i < hd; i += 32) {
                float a = __half2float(v[i]) + (b ? b[i] : 0.0f);
                if (normw) a = (noff + normw[i]) * (a * inv);
                v[i] = __float2half_rn(a);
            }
            continue;
        }
        int half = hd / 2;
        const float *cs = cos_t + (row % (size_t)T) * half, *sn = sin_t + (row % (size_t)T) * half;
        for (int i = lane; i < half; i += 32) {
            float a = __half2float(v[i]) + (b ? b[i] : 0.0f);
            float c = __half2float(v[i + half]) + (b ? b[i + half] : 0.0f);
            if (normw) {
                a = (noff + normw[i]) * (a * inv);
                c = (noff + normw[i + half]) * (c * inv);
            }
            v[i] = __float2half_rn(a * cs[i] - c * sn[i]);
            v[i + half] = __float2half_rn(c * cs[i] + a * sn[i]);
        }
    }
}

/* One block per (query row i, head chunk member): P[i, :] = softmax of S[i, lo..i], zero elsewhere,
 * with lo = i - window + 1 (clamped at 0) under a sliding window, else 0; cap > 0 soft-caps the scores
 * first (tanh(s / cap) * cap, Gemma-2). S and P are [nb, T, T]. */
static __device__ __forceinline__ float softcap(float s, float cap) { return cap > 0.0f ? tanhf(s / cap) * cap : s; }

static __global__ void k_softmax_causal(const float *S, __half *P, int T, int win, float cap) {
    __shared__ float sh[32];
    int i = blockIdx.x;
    size_t off = ((size_t)blockIdx.y * T + i) * (size_t)T;
    const float *s = S + off;
    __half *p = P + off;
    int lo = win > 0 && i - win + 1 > 0 ? i - win + 1 : 0;
    float mx = -INFINITY;
    for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, softcap(s[j], cap));
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) sum += expf(softcap(s[j], cap) - mx);
    sum = block_sum(sum, sh);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        p[j] = __float2half_rn(j >= lo && j <= i ? expf(softcap(s[j], cap) - mx) * inv : 0.0f);
}

/* gate <- act(gate + bg) * (up + bu), fp32 math, fp16 storage; biases [ff] may be NULL; act SiLU, or
 * GELU with the tanh approximation when gelu (Gemma). */
static __global__ void k_act_mul(__half *gate, const __half *up, const float *bg, const float *bu, size_t n, int ff,
                                 int gelu) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = __half2float(gate[i]), u = __half2float(up[i]);
        if (bg) g += bg[i % ff];
        if (bu) u += bu[i % ff];
        float a = gelu ? 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)))
                       : g / (1.0f + expf(-g));
        gate[i] = __float2half_rn(a * u);
    }
}

/* h <- relu(h + b) in place, fp32 math, fp16 storage; b [ff] may be NULL (OPT's fc1 output). */
static __global__ void k_bias_relu(__half *h, const float *b, size_t n, int ff) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = __half2float(h[i]) + (b ? b[i % ff] : 0.0f);
        h[i] = __float2half_rn(v > 0.0f ? v : 0.0f);
    }
}

static __global__ void k_bias_add(float *y, const float *b, size_t n, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % N];
}

/* ---- layer layout: one device block, w[Q] first (so it is the block's base) ----
 * Every linear any layer of the model has (an MoE model's layers may differ: Qwen3-MoE's mlp_only_layers are
 * dense), the router and the shared expert's gate; a layer binds only its own (qc_linear_present). */

typedef struct layer_layout {
    int    n_lin;                            /* qc_arch_n_lin */
    int    out[QC_LIN_MAX], in[QC_LIN_MAX];  /* out 0: no layer has this linear */
    size_t w[QC_LIN_MAX], b[QC_LIN_MAX];     /* offsets; SIZE_MAX when absent */
    size_t norm[QC_NORM_COUNT];              /* offsets (qc_norm_id order); SIZE_MAX when absent */
    size_t norm_b[QC_NORM_COUNT];            /* LayerNorm biases (OPT), after the weights; SIZE_MAX when absent */
    int    norm_len[QC_NORM_COUNT];          /* 0 when absent */
    size_t router, shared_gate;              /* fp16 [E, d] and [1, d]; SIZE_MAX when absent */
    int    n_experts, d;
    size_t total;
} layer_layout;

/* outs[l] 0: linear l absent. norm_bias: the norms have biases (LayerNorms). n_experts 0: no router; shared: a
 * shared-expert gate. */
static void layout_make(int n_lin, const int *outs, const int *ins, const bool *bias, const int norm_len[QC_NORM_COUNT],
                        bool norm_bias, int n_experts, bool shared, int d, layer_layout *lo) {
    size_t off = 0;
    lo->n_lin = n_lin;
    for (int l = 0; l < n_lin; l++) {
        lo->out[l] = outs[l];
        lo->in[l] = outs[l] ? ins[l] : 0;
        lo->w[l] = SIZE_MAX;
        if (!outs[l]) continue;
        lo->w[l] = off;
        off = align_up(off + (size_t)outs[l] * ins[l] * sizeof(uint16_t));
    }
    for (int l = 0; l < n_lin; l++) {
        lo->b[l] = SIZE_MAX;
        if (!outs[l] || !bias[l]) continue;
        lo->b[l] = off;
        off = align_up(off + (size_t)outs[l] * sizeof(float));
    }
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        lo->norm[k] = SIZE_MAX;
        lo->norm_len[k] = norm_len[k];
        if (!norm_len[k]) continue;
        lo->norm[k] = off;
        off = align_up(off + (size_t)norm_len[k] * sizeof(float));
    }
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        lo->norm_b[k] = SIZE_MAX;
        if (!norm_len[k] || !norm_bias) continue;
        lo->norm_b[k] = off;
        off = align_up(off + (size_t)norm_len[k] * sizeof(float));
    }
    lo->n_experts = n_experts;
    lo->d = d;
    lo->router = lo->shared_gate = SIZE_MAX;
    if (n_experts > 0) {
        lo->router = off;
        off = align_up(off + (size_t)n_experts * d * sizeof(uint16_t));
    }
    if (shared) {
        lo->shared_gate = off;
        off = align_up(off + (size_t)d * sizeof(uint16_t));
    }
    lo->total = off;
}

/* The layout of a layer of this config (arch.h: shapes, biases, which norms exist): the union of its layers. */
static void layout_from_cfg(const qc_model_config *c, layer_layout *lo) {
    int n_lin = qc_arch_n_lin(c);
    int *outs = (int *)calloc(QC_LIN_MAX, sizeof(int)), *ins = (int *)calloc(QC_LIN_MAX, sizeof(int));
    bool *bias = (bool *)calloc(QC_LIN_MAX, sizeof(bool));
    int norm_len[QC_NORM_COUNT];
    QC_ASSERT(outs && ins && bias);
    bool moe = false;
    for (int li = 0; li < c->n_layers; li++) moe |= qc_layer_is_moe(c, li);
    for (int l = 0; l < n_lin; l++) {
        bool any = false;
        for (int li = 0; li < c->n_layers && !any; li++) any = qc_linear_present(c, li, (qc_linear_id)l);
        if (!any) continue;
        qc_linear_shape(c, (qc_linear_id)l, &outs[l], &ins[l]);
        bias[l] = qc_linear_has_bias(c, (qc_linear_id)l);
    }
    for (int k = 0; k < QC_NORM_COUNT; k++)
        norm_len[k] = qc_norm_present(c, (qc_norm_id)k) ? qc_norm_dim(c, (qc_norm_id)k) : 0;
    const qc_arch_moe *mo = qc_arch_desc_of(c->arch)->moe;
    layout_make(n_lin, outs, ins, bias, norm_len, qc_norm_has_bias(c), moe ? c->n_experts : 0,
                moe && mo && mo->shared_gate, c->hidden_size, lo);
    free(outs);
    free(ins);
    free(bias);
}

extern "C" float **qc_gpu_layer_norm(qc_gpu_layer *L, qc_norm_id n) {
    switch (n) {
    case QC_NORM_ATTN: return &L->attn_norm;
    case QC_NORM_MLP:  return &L->mlp_norm;
    case QC_NORM_Q:    return &L->q_norm;
    case QC_NORM_K:    return &L->k_norm;
    case QC_NORM_ATTN_POST: return &L->attn_post_norm;
    case QC_NORM_MLP_POST:  return &L->mlp_post_norm;
    default: QC_ASSERT(0); return NULL;
    }
}

/* Points L into base for layer index (cfg NULL or index < 0: every linear of the layout; else only those the
 * layer has, and the router only in an MoE layer). */
static void layout_bind(const layer_layout *lo, char *base, const qc_model_config *cfg, int index, qc_gpu_layer *L) {
    memset(L, 0, sizeof *L);
    L->index = index;
    bool per_layer = cfg && index >= 0;
    for (int l = 0; l < lo->n_lin; l++) {
        if (lo->w[l] == SIZE_MAX || (per_layer && !qc_linear_present(cfg, index, (qc_linear_id)l))) continue;
        L->w[l] = (uint16_t *)(base + lo->w[l]);
        L->b[l] = lo->b[l] == SIZE_MAX ? NULL : (float *)(base + lo->b[l]);
        L->out_features[l] = lo->out[l];
        L->in_features[l] = lo->in[l];
    }
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        *qc_gpu_layer_norm(L, (qc_norm_id)k) = lo->norm[k] == SIZE_MAX ? NULL : (float *)(base + lo->norm[k]);
        L->norm_bias[k] = lo->norm_b[k] == SIZE_MAX ? NULL : (float *)(base + lo->norm_b[k]);
    }
    if (lo->router != SIZE_MAX && (!per_layer || qc_layer_is_moe(cfg, index))) {
        L->router = (uint16_t *)(base + lo->router);
        if (lo->shared_gate != SIZE_MAX) L->shared_gate = (uint16_t *)(base + lo->shared_gate);
    }
}

/* ---- forward scratch ---- */

struct qc_gpu_fwd {
    qc_gpu         *g;
    qc_model_config cfg;
    int             max_rows, seqlen, head_chunk;
    uint16_t       *xn;      /* [rows, d] */
    uint16_t       *work;    /* attention: q [rows, qd], k, v [rows, kvd], att [rows, qd];
                                MLP: gate, up [rows, ff] (act written over gate) */
    float          *scores;  /* [head_chunk, seqlen, seqlen] */
    uint16_t       *probs;   /* [head_chunk, seqlen, seqlen] */
    float          *cos_t, *sin_t; /* [seqlen, head_dim / 2] */
    float          *cos_l, *sin_l; /* [seqlen, head_dim / 2] local tables (rope_local_theta > 0), else NULL */
    float          *post;    /* [rows, d] fp32: a block's output before its post norm (Gemma), else NULL */
    float           norm_off, attn_scale;
    bool            attn_fused;  /* gpu_attn.h's kernel, else the plain cuBLAS + softmax path */
    bool            layer_norm;  /* LayerNorms with biases (OPT), else RMSNorms */
    int             rope;        /* 1: rotate q and k; 0: learned positions (OPT) */
    int             ff_max;  /* the widest MLP (dense, expert or shared expert): work's gate/up stride */
    /* MoE (the config has experts), else NULL */
    float          *logits;  /* [rows, E] router logits */
    int            *top;     /* [rows, k] each row's chosen experts */
    float          *topw;    /* [rows, k] their weights */
    int            *gidx;    /* [rows * k] the rows grouped by expert (off_h), row order within an expert */
    float          *gw;      /* [rows * k] their weights, as gidx */
    uint16_t       *xg;      /* [rows, d] one expert's gathered input rows */
    float          *yg;      /* [rows, d] one expert's output rows */
    float          *moe_out; /* [rows, d] the block's output; the shared expert's output in post */
    float          *sgz;     /* [rows] the shared expert's gate logits */
    int            *top_h, *gidx_h; /* host [rows * k] */
    float          *topw_h, *gw_h;  /* host [rows * k] */
    int            *off_h;   /* host [E + 1]: expert e's rows are gidx[off_h[e] .. off_h[e + 1]) */
    const bool     *moe_all; /* qc_gpu_fwd_moe_all_rows */
};

typedef struct fwd_sizes {
    size_t xn, work, scores, probs, rope, rope_local, post;
    size_t logits, route, xg, yg;  /* MoE: logits; top/topw/gidx/gw each; xg; yg, moe_out each */
    int    head_chunk, ff_max;
} fwd_sizes;

static void fwd_sizes_make(const qc_model_config *c, int max_seqs, int seqlen, fwd_sizes *s) {
    size_t rows = (size_t)max_seqs * (size_t)seqlen, T = (size_t)seqlen;
    size_t d = (size_t)c->hidden_size, qd = (size_t)c->n_heads * c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->intermediate_size;
    bool moe = c->n_experts > 0;
    if (moe && (size_t)c->moe_intermediate_size > ff) ff = (size_t)c->moe_intermediate_size;
    if (moe && (size_t)c->shared_expert_intermediate_size > ff) ff = (size_t)c->shared_expert_intermediate_size;
    s->ff_max = (int)ff;
    size_t attn = 2 * qd + 2 * kvd, mlp = 2 * ff;
    s->xn = rows * d * sizeof(uint16_t);
    s->work = rows * (attn > mlp ? attn : mlp) * sizeof(uint16_t);
    size_t per_head = T * T * (sizeof(float) + sizeof(uint16_t));
    size_t hc = SCORES_BUDGET / per_head;
    if (hc < 1) hc = 1;
    if (hc > (size_t)c->n_kv_heads) hc = (size_t)c->n_kv_heads;
    s->head_chunk = (int)hc;
    s->scores = hc * T * T * sizeof(float);
    s->probs = hc * T * T * sizeof(uint16_t);
    s->rope = T * (size_t)(c->head_dim / 2) * sizeof(float);
    s->rope_local = c->rope_local_theta > 0.0 ? s->rope : 0;
    s->post = qc_norm_present(c, QC_NORM_ATTN_POST) || (moe && c->shared_expert_intermediate_size > 0)
                  ? rows * d * sizeof(float) : 0;
    size_t k = moe ? (size_t)c->n_experts_per_tok : 0;
    s->logits = moe ? rows * (size_t)c->n_experts * sizeof(float) : 0;
    s->route = rows * k * sizeof(int32_t); /* int and float alike */
    s->xg = moe ? rows * d * sizeof(uint16_t) : 0;
    s->yg = moe ? rows * d * sizeof(float) : 0;
}

static qc_status check_cfg(const qc_model_config *c) {
    if (c->hidden_size < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 2 || c->intermediate_size < 1)
        return qc_fail(QC_ERR_ARG, "GPU forward: bad model dimensions");
    if (c->n_heads % c->n_kv_heads)
        return qc_fail(QC_ERR_ARG, "GPU forward: %d heads are not a multiple of %d kv heads", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 || c->head_dim > 1024)
        return qc_fail(QC_ERR_UNSUPPORTED, "GPU forward: head_dim %d (must be even and <= 1024)", c->head_dim);
    return QC_OK;
}

static qc_status gemm16(qc_gpu *g, const uint16_t *x, const uint16_t *W, uint16_t *y, int n, int N, int K) {
    const float one = 1.0f, zero = 0.0f;
    QC_CUBLAS(cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, W, CUDA_R_16F, K, x, CUDA_R_16F, K, &zero,
                           y, CUDA_R_16F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return QC_OK;
}

static qc_status check_rows(const qc_gpu_fwd *f, int nseq, int T) {
    if (nseq < 0 || T < 1 || T > f->seqlen || (size_t)nseq * (size_t)T > (size_t)f->max_rows)
        return qc_fail(QC_ERR_ARG, "GPU forward: %d x %d tokens exceed the %d-token buffers (seqlen %d)", nseq, T,
                       f->max_rows, f->seqlen);
    return QC_OK;
}

/* softmax(scale * q k^T) v per sequence and head into att (gpu_attn.h's shapes), for layer `layer` (its window):
 * the fused kernel when f->attn_fused, else two cuBLAS GEMMs around the softmax kernel (the plain twin). */
static qc_status attn_sdpa(qc_gpu_fwd *f, int layer, const __half *q, const __half *k, const __half *v, __half *att,
                           int nseq, int T) {
    qc_gpu *g = f->g;
    const qc_model_config *c = &f->cfg;
    int hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd, grp = nh / nkv;
    if (f->attn_fused)
        return qc_gpu_flash_attn(g, (const uint16_t *)q, (const uint16_t *)k, (const uint16_t *)v, (uint16_t *)att, nseq,
                                 T, nh, nkv, hd, f->attn_scale, qc_layer_window(c, layer), c->attn_softcap);
    const float scale = f->attn_scale, one = 1.0f, zero = 0.0f;
    const int win = qc_layer_window(c, layer);
    long long TT = (long long)T * T;
    unsigned sm_threads = T >= 512 ? 256 : 128;
    for (int s = 0; s < nseq; s++) {
        const __half *qs = q + (size_t)s * T * qd, *ks = k + (size_t)s * T * kvd, *vs = v + (size_t)s * T * kvd;
        __half *os = att + (size_t)s * T * qd;
        for (int r = 0; r < grp; r++) {
            for (int kv0 = 0; kv0 < nkv; kv0 += f->head_chunk) {
                int nb = nkv - kv0 < f->head_chunk ? nkv - kv0 : f->head_chunk;
                /* row-major S[T_q, T_k] = Q K^T is column-major S^T = K^T-op(T) . Q^T */
                QC_CUBLAS(cublasGemmStridedBatchedEx(
                    g->blas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, &scale, ks + (size_t)kv0 * hd, CUDA_R_16F, kvd,
                    (long long)hd, qs + ((size_t)kv0 * grp + r) * hd, CUDA_R_16F, qd, (long long)grp * hd, &zero,
                    f->scores, CUDA_R_32F, T, TT, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
                k_softmax_causal<<<dim3((unsigned)T, (unsigned)nb), sm_threads, 0, g->stream>>>(
                    f->scores, (__half *)f->probs, T, win, c->attn_softcap);
                QC_CU_LAUNCH("softmax_causal");
                /* row-major O[T_q, hd] = P V is column-major O^T = V^T . P^T */
                QC_CUBLAS(cublasGemmStridedBatchedEx(
                    g->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, &one, vs + (size_t)kv0 * hd, CUDA_R_16F, kvd,
                    (long long)hd, f->probs, CUDA_R_16F, T, TT, &zero, os + ((size_t)kv0 * grp + r) * hd, CUDA_R_16F,
                    qd, (long long)grp * hd, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            }
        }
    }
    return QC_OK;
}

/* q, k, v projections, their post-processing, and attention into att [n, qd] (all in f->work). */
static qc_status attn_core(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, int nseq, int T) {
    qc_gpu *g = f->g;
    const qc_model_config *c = &f->cfg;
    int n = nseq * T, d = c->hidden_size, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd;
    size_t rows = (size_t)f->max_rows;
    __half *q = (__half *)f->work, *k = q + rows * qd, *v = k + rows * kvd, *att = v + rows * kvd;
    qc_status st;
    if ((st = gemm16(g, xn, L->w[QC_LIN_Q], (uint16_t *)q, n, qd, d))) return st;
    if ((st = gemm16(g, xn, L->w[QC_LIN_K], (uint16_t *)k, n, kvd, d))) return st;
    if ((st = gemm16(g, xn, L->w[QC_LIN_V], (uint16_t *)v, n, kvd, d))) return st;
    const unsigned wpb = 4; /* warps per block */
    float eps = c->rms_norm_eps;
    const bool local = qc_layer_rope_local(c, L->index);
    const float *cos_t = local ? f->cos_l : f->cos_t, *sin_t = local ? f->sin_l : f->sin_t;
    const float noff = f->norm_off;
    k_head_post<<<qc_grid((size_t)n * nh, wpb), wpb * 32, 0, g->stream>>>(q, n, nh, hd, T, L->b[QC_LIN_Q], L->q_norm,
                                                                           noff, eps, cos_t, sin_t, f->rope);
    QC_CU_LAUNCH("head_post(q)");
    k_head_post<<<qc_grid((size_t)n * nkv, wpb), wpb * 32, 0, g->stream>>>(k, n, nkv, hd, T, L->b[QC_LIN_K], L->k_norm,
                                                                            noff, eps, cos_t, sin_t, f->rope);
    QC_CU_LAUNCH("head_post(k)");
    if (L->b[QC_LIN_V]) {
        k_head_post<<<qc_grid((size_t)n * nkv, wpb), wpb * 32, 0, g->stream>>>(v, n, nkv, hd, T, L->b[QC_LIN_V], NULL,
                                                                                noff, eps, cos_t, sin_t, 0);
        QC_CU_LAUNCH("head_post(v)");
    }

    return attn_sdpa(f, L->index, q, k, v, att, nseq, T);
}

/* gate/up projections (slots g, g + 1, on n rows of xn) and act = act(gate) * up, written over gate (f->work,
 * [n, ff]); up is at f->work + max_rows * ff_max. Experts' act is SiLU, as model.c's. */
static qc_status gated_core(qc_gpu_fwd *f, const qc_gpu_layer *L, int g0, const uint16_t *xn, int n) {
    qc_gpu *g = f->g;
    int ff = L->out_features[g0], d = L->in_features[g0];
    uint16_t *gate = f->work, *up = gate + (size_t)f->max_rows * f->ff_max;
    qc_status st;
    if ((st = gemm16(g, xn, L->w[g0], gate, n, ff, d))) return st;
    if ((st = gemm16(g, xn, L->w[g0 + 1], up, n, ff, d))) return st;
    size_t cnt = (size_t)n * ff;
    if (cnt) {
        k_act_mul<<<qc_grid(cnt, 256), 256, 0, g->stream>>>((__half *)gate, (const __half *)up, L->b[g0], L->b[g0 + 1],
                                                             cnt, ff, g0 == QC_LIN_GATE && f->cfg.act == QC_ACT_GELU_TANH);
        QC_CU_LAUNCH("act_mul");
    }
    return QC_OK;
}

/* The dense MLP's input side into f->work: gated_core, or OPT's relu(fc1(xn) + b) where the act goes. */
static qc_status mlp_core(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, int n) {
    if (L->w[QC_LIN_GATE]) return gated_core(f, L, QC_LIN_GATE, xn, n);
    int ff = L->out_features[QC_LIN_UP];
    qc_status st = gemm16(f->g, xn, L->w[QC_LIN_UP], f->work, n, ff, L->in_features[QC_LIN_UP]);
    size_t cnt = (size_t)n * ff;
    if (st || !cnt) return st;
    k_bias_relu<<<qc_grid(cnt, 256), 256, 0, f->g->stream>>>((__half *)f->work, L->b[QC_LIN_UP], cnt, ff);
    QC_CU_LAUNCH("bias_relu");
    return QC_OK;
}

/* ---- mixture of experts ---- */

/* One thread per row: model.c's moe_route (softmax in fp32 over all experts, the top k by logit with ties to
 * the lower id, renormalized over the k when renorm). */
static __global__ void k_moe_route(const float *logits, int n, int E, int k, int renorm, int *top, float *topw) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float *lg = logits + (size_t)r * E;
    float mx = lg[0], sum = 0.0f;
    for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
    for (int e = 0; e < E; e++) sum += expf(lg[e] - mx);
    int *t = top + (size_t)r * k;
    float *w = topw + (size_t)r * k, wsum = 0.0f;
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int j = 0; j < i; j++) taken |= t[j] == e;
            if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
        }
        t[i] = best;
        w[i] = best >= 0 ? expf(lg[best] - mx) / sum : 0.0f;
        wsum += w[i];
    }
    if (renorm)
        for (int i = 0; i < k; i++) w[i] /= wsum;
}

/* dst[i, :] = src[idx[i], :] for fp16 rows of width w. */
static __global__ void k_gather_rows(const __half *src, const int *idx, int ne, int w, __half *dst) {
    size_t total = (size_t)ne * w;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[(size_t)idx[i / w] * w + i % w];
}

/* out[idx[i], :] += wt[i] * y[i, :] (the rows of one expert are distinct: no two threads share an element). */
static __global__ void k_scatter_add(float *out, const float *y, const int *idx, const float *wt, int ne, int d) {
    size_t total = (size_t)ne * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d;
        float v = wt[r] * y[i];
        out[(size_t)idx[r] * d + i % d] += v;
    }
}

/* out[r, :] += sigmoid(z[r]) * sh[r, :] (the shared expert, gated), then x += out when x is not NULL. */
static __global__ void k_shared_add(float *out, const float *sh, const float *z, size_t n, int d) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gt = 1.0f / (1.0f + expf(-z[i / d]));
        float v = gt * sh[i];
        out[i] += v;
    }
}

static __global__ void k_add(float *x, const float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] += y[i];
}

/* Routes n rows of xn: f->off_h, and gidx/gw on the device (expert by expert, rows in order, as model.c's
 * moe_gather). Waits for the device (the grouping is done on the host). */
static qc_status moe_route(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, int n) {
    qc_gpu *g = f->g;
    const qc_model_config *c = &f->cfg;
    int E = c->n_experts, k = c->n_experts_per_tok, d = c->hidden_size;
    qc_status st = qc_gpu_linear(g, xn, L->router, NULL, f->logits, n, E, d, 0.0f);
    if (st) return st;
    bool renorm = c->norm_topk_prob || qc_arch_desc_of(c->arch)->moe->always_renorm;
    k_moe_route<<<(unsigned)((n + 127) / 128), 128, 0, g->stream>>>(f->logits, n, E, k, renorm, f->top, f->topw);
    QC_CU_LAUNCH("moe_route");
    size_t nk = (size_t)n * k;
    if ((st = qc_gpu_download(g, f->top_h, f->top, nk * sizeof(int)))) return st;
    if ((st = qc_gpu_download(g, f->topw_h, f->topw, nk * sizeof(float)))) return st;
    int *off = f->off_h;
    memset(off, 0, sizeof(int) * ((size_t)E + 1));
    for (size_t i = 0; i < nk; i++) {
        int e = f->top_h[i];
        if (e < 0 || e >= E)
            return qc_fail(QC_ERR_NUMERIC, "layer %d: the router's logits for row %zu are not finite", L->index, i / k);
        off[e + 1]++;
    }
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    int cur[QC_EXPERTS_MAX]; /* each expert's next free slot */
    for (int e = 0; e < E; e++) cur[e] = off[e];
    for (int r = 0; r < n; r++)
        for (int i = 0; i < k; i++) {
            int e = f->top_h[(size_t)r * k + i], p = cur[e]++;
            f->gidx_h[p] = r;
            f->gw_h[p] = f->topw_h[(size_t)r * k + i];
        }
    if ((st = qc_gpu_upload(g, f->gidx, f->gidx_h, nk * sizeof(int)))) return st;
    return qc_gpu_upload(g, f->gw, f->gw_h, nk * sizeof(float));
}

/* The rows of expert e gathered from src (fp16, width w) into dst. */
static qc_status moe_gather(qc_gpu_fwd *f, int e, const uint16_t *src, int w, uint16_t *dst) {
    int ne = f->off_h[e + 1] - f->off_h[e];
    size_t cnt = (size_t)ne * w;
    if (!cnt) return QC_OK;
    k_gather_rows<<<qc_grid(cnt, 256), 256, 0, f->g->stream>>>((const __half *)src, f->gidx + f->off_h[e], ne, w,
                                                               (__half *)dst);
    QC_CU_LAUNCH("gather_rows");
    return QC_OK;
}

/* out += expert e's down projection of act [ne, mff] (its routed rows), weighted, into their rows. */
static qc_status moe_down_add(qc_gpu_fwd *f, const qc_gpu_layer *L, int e, const uint16_t *act, float *out) {
    int ne = f->off_h[e + 1] - f->off_h[e], d = f->cfg.hidden_size;
    qc_linear_id dn = QC_LIN_EXPERT(e, 2);
    qc_status st = qc_gpu_linear(f->g, act, L->w[dn], NULL, f->yg, ne, d, L->in_features[dn], 0.0f);
    size_t cnt = (size_t)ne * d;
    if (st || !cnt) return st;
    k_scatter_add<<<qc_grid(cnt, 256), 256, 0, f->g->stream>>>(out, f->yg, f->gidx + f->off_h[e], f->gw + f->off_h[e],
                                                               ne, d);
    QC_CU_LAUNCH("scatter_add");
    return QC_OK;
}

/* model.c's moe_block on the device: out [n, d] fp32 = the routed experts' weighted outputs (experts in id
 * order) + sigmoid(shared_gate . xn) * shared_expert(xn); captures in qc_arch_caps order. *stopped: a capture
 * returned false. */
static qc_status moe_block(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, float *out, int n,
                           qc_gpu_capture_fn capture, void *user, bool *stopped) {
    qc_gpu *g = f->g;
    const qc_model_config *c = &f->cfg;
    int d = c->hidden_size, E = c->n_experts;
    *stopped = false;
    qc_status st = moe_route(f, L, xn, n);
    if (st) return st;
    if (capture) {
        if (!capture(user, QC_LIN_GATE, xn, n, d)) goto stop;
        for (int e = 0; e < E; e++) {
            if ((st = moe_gather(f, e, xn, d, f->xg))) return st;
            if (!capture(user, QC_LIN_EXPERT(e, 0), f->xg, f->off_h[e + 1] - f->off_h[e], d)) goto stop;
        }
    }
    QC_CU(cudaMemsetAsync(out, 0, sizeof(float) * (size_t)n * d, g->stream));
    if (L->w[QC_LIN_GATE]) { /* the shared expert: its output waits in f->post until the experts are added */
        int sff = L->in_features[QC_LIN_DOWN];
        if ((st = gated_core(f, L, QC_LIN_GATE, xn, n))) return st;
        if (capture && !capture(user, QC_LIN_DOWN, f->work, n, sff)) goto stop;
        if ((st = qc_gpu_linear(g, f->work, L->w[QC_LIN_DOWN], L->b[QC_LIN_DOWN], f->post, n, d, sff, 0.0f))) return st;
        if ((st = qc_gpu_linear(g, xn, L->shared_gate, NULL, f->sgz, n, 1, d, 0.0f))) return st;
    }
    for (int e = 0; e < E; e++) {
        qc_linear_id g0 = QC_LIN_EXPERT(e, 0);
        int ne = f->off_h[e + 1] - f->off_h[e], mff = L->out_features[g0];
        uint16_t *act = f->work, *spare = f->work + (size_t)f->max_rows * f->ff_max;
        if (capture && f->moe_all && f->moe_all[e]) { /* its down input over every row, for the capture only */
            if ((st = gated_core(f, L, g0, xn, n))) return st;
            if (!capture(user, QC_LIN_EXPERT(e, 2), act, n, mff)) goto stop;
            if (ne == 0) continue;
            if ((st = moe_gather(f, e, act, mff, spare))) return st; /* the routed rows' activations */
            if ((st = moe_down_add(f, L, e, spare, out))) return st;
            continue;
        }
        if (ne == 0) {
            if (capture && !capture(user, QC_LIN_EXPERT(e, 2), act, 0, mff)) goto stop;
            continue;
        }
        if ((st = moe_gather(f, e, xn, d, f->xg))) return st;
        if ((st = gated_core(f, L, g0, f->xg, ne))) return st;
        if (capture && !capture(user, QC_LIN_EXPERT(e, 2), act, ne, mff)) goto stop;
        if ((st = moe_down_add(f, L, e, act, out))) return st;
    }
    if (L->w[QC_LIN_GATE]) {
        size_t cnt = (size_t)n * d;
        k_shared_add<<<qc_grid(cnt, 256), 256, 0, g->stream>>>(out, f->post, f->sgz, cnt, d);
        QC_CU_LAUNCH("shared_add");
    }
    return QC_OK;
stop:
    *stopped = true;
    return QC_OK;
}

static uint16_t *att_ptr(const qc_gpu_fwd *f) {
    size_t rows = (size_t)f->max_rows, qd = (size_t)f->cfg.n_heads * f->cfg.head_dim;
    size_t kvd = (size_t)f->cfg.n_kv_heads * f->cfg.head_dim;
    return f->work + rows * (qd + 2 * kvd);
}

extern "C" {

size_t qc_gpu_layer_bytes(const qc_model_config *cfg) {
    layer_layout lo;
    layout_from_cfg(cfg, &lo);
    return lo.total;
}

size_t qc_gpu_fwd_bytes(const qc_model_config *cfg, int max_seqs, int seqlen) {
    if (max_seqs < 1 || seqlen < 1) return 0;
    fwd_sizes s;
    fwd_sizes_make(cfg, max_seqs, seqlen, &s);
    return s.xn + s.work + s.scores + s.probs + 2 * s.rope + 2 * s.rope_local + s.post + s.logits + 4 * s.route + s.xg +
           2 * s.yg + (s.logits ? (size_t)max_seqs * seqlen * sizeof(float) : 0);
}

qc_status qc_gpu_fwd_create(qc_gpu *g, const qc_model_config *cfg, int max_seqs, int seqlen, qc_gpu_fwd **out) {
    *out = NULL;
    qc_status st = check_cfg(cfg);
    if (st) return st;
    if (max_seqs < 1 || seqlen < 1) return qc_fail(QC_ERR_ARG, "GPU forward: need at least one sequence and token");
    size_t rows = (size_t)max_seqs * (size_t)seqlen;
    if (rows > (size_t)INT32_MAX) return qc_fail(QC_ERR_ARG, "GPU forward: %zu rows is too many", rows);
    qc_gpu_fwd *f = (qc_gpu_fwd *)calloc(1, sizeof *f);
    if (!f) return qc_fail(QC_ERR_NOMEM, "out of memory");
    f->g = g;
    f->cfg = *cfg;
    f->max_rows = (int)rows;
    f->seqlen = seqlen;
    fwd_sizes s;
    fwd_sizes_make(cfg, max_seqs, seqlen, &s);
    f->head_chunk = s.head_chunk;
    f->norm_off = qc_norm_offset(cfg);
    f->layer_norm = qc_norm_has_bias(cfg);
    f->rope = qc_arch_has_rope(cfg) ? 1 : 0;
    f->attn_scale = cfg->attn_scalar > 0.0 ? (float)pow(cfg->attn_scalar, -0.5) : 1.0f / sqrtf((float)cfg->head_dim);
    f->attn_fused = strcmp(qc_gpu_attn_kernel(cfg->head_dim), "fused") == 0;
    float *cos_h = (float *)malloc(s.rope), *sin_h = (float *)malloc(s.rope);
    if (!cos_h || !sin_h) st = qc_fail(QC_ERR_NOMEM, "out of memory for rotary tables");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->xn, s.xn, "normed activations (fp16)");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->work, s.work, "q/k/v/attention and MLP activations (fp16)");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->scores, s.scores, "attention scores");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->probs, s.probs, "attention probabilities");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->cos_t, s.rope, "rotary cos table");
    if (!st) st = qc_gpu_alloc(g, (void **)&f->sin_t, s.rope, "rotary sin table");
    if (!st && s.rope_local) st = qc_gpu_alloc(g, (void **)&f->cos_l, s.rope_local, "local rotary cos table");
    if (!st && s.rope_local) st = qc_gpu_alloc(g, (void **)&f->sin_l, s.rope_local, "local rotary sin table");
    if (!st && s.post) st = qc_gpu_alloc(g, (void **)&f->post, s.post, "block outputs before the post norms (fp32)");
    f->ff_max = s.ff_max;
    if (!st && s.logits) {
        size_t k = (size_t)cfg->n_experts_per_tok;
        st = qc_gpu_alloc(g, (void **)&f->logits, s.logits, "MoE router logits");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->top, s.route, "MoE routing");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->topw, s.route, "MoE routing weights");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->gidx, s.route, "MoE rows by expert");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->gw, s.route, "MoE weights by expert");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->xg, s.xg, "an expert's input rows (fp16)");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->yg, s.yg, "an expert's output rows");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->moe_out, s.yg, "the MoE block's output");
        if (!st) st = qc_gpu_alloc(g, (void **)&f->sgz, rows * sizeof(float), "the shared expert's gate");
        f->top_h = (int *)malloc(rows * k * sizeof(int));
        f->gidx_h = (int *)malloc(rows * k * sizeof(int));
        f->topw_h = (float *)malloc(rows * k * sizeof(float));
        f->gw_h = (float *)malloc(rows * k * sizeof(float));
        f->off_h = (int *)malloc(((size_t)cfg->n_experts + 1) * sizeof(int));
        if (!st && (!f->top_h || !f->gidx_h || !f->topw_h || !f->gw_h || !f->off_h))
            st = qc_fail(QC_ERR_NOMEM, "out of memory for the MoE routing");
    }
    if (!st) {
        qc_rope_tables(cfg, seqlen, cos_h, sin_h);
        st = qc_gpu_upload(g, f->cos_t, cos_h, s.rope);
        if (!st) st = qc_gpu_upload(g, f->sin_t, sin_h, s.rope);
    }
    if (!st && s.rope_local) {
        qc_rope_tables_local(cfg, seqlen, cos_h, sin_h);
        st = qc_gpu_upload(g, f->cos_l, cos_h, s.rope_local);
        if (!st) st = qc_gpu_upload(g, f->sin_l, sin_h, s.rope_local);
    }
    if (!st && s.post) st = qc_gpu_memset(g, f->post, 0xFF, s.post);
    /* NaN-fill the scratch so that anything read before it is written shows up in the outputs */
    if (!st) st = qc_gpu_memset(g, f->xn, 0xFF, s.xn);
    if (!st) st = qc_gpu_memset(g, f->work, 0xFF, s.work);
    if (!st) st = qc_gpu_memset(g, f->scores, 0xFF, s.scores);
    if (!st) st = qc_gpu_memset(g, f->probs, 0xFF, s.probs);
    free(cos_h);
    free(sin_h);
    if (st) {
        qc_gpu_fwd_free(f);
        return st;
    }
    *out = f;
    return QC_OK;
}

void qc_gpu_fwd_free(qc_gpu_fwd *f) {
    if (!f) return;
    qc_gpu *g = f->g;
    cudaStreamSynchronize(g->stream);
    qc_gpu_free(g, f->xn);
    qc_gpu_free(g, f->work);
    qc_gpu_free(g, f->scores);
    qc_gpu_free(g, f->probs);
    qc_gpu_free(g, f->cos_t);
    qc_gpu_free(g, f->sin_t);
    qc_gpu_free(g, f->cos_l);
    qc_gpu_free(g, f->sin_l);
    qc_gpu_free(g, f->post);
    qc_gpu_free(g, f->logits);
    qc_gpu_free(g, f->top);
    qc_gpu_free(g, f->topw);
    qc_gpu_free(g, f->gidx);
    qc_gpu_free(g, f->gw);
    qc_gpu_free(g, f->xg);
    qc_gpu_free(g, f->yg);
    qc_gpu_free(g, f->moe_out);
    qc_gpu_free(g, f->sgz);
    free(f->top_h);
    free(f->gidx_h);
    free(f->topw_h);
    free(f->gw_h);
    free(f->off_h);
    free(f);
}

qc_status qc_gpu_rmsnorm(qc_gpu_fwd *f, const float *x, const float *w, int n, uint16_t *xn16) {
    if (n <= 0) return QC_OK;
    int d = f->cfg.hidden_size;
    k_rmsnorm<<<(unsigned)n, d >= 1024 ? 512 : 128, 0, f->g->stream>>>(x, w, f->norm_off, d, f->cfg.rms_norm_eps,
                                                                        (__half *)xn16);
    QC_CU_LAUNCH("rmsnorm");
    return QC_OK;
}

/* A layer's pre-norm into xn16: LayerNorm with its bias (OPT), else RMSNorm. */
static qc_status norm_in(qc_gpu_fwd *f, const float *x, const float *w, const float *b, int n, uint16_t *xn16) {
    if (!f->layer_norm) return qc_gpu_rmsnorm(f, x, w, n, xn16);
    if (n <= 0) return QC_OK;
    QC_ASSERT(b != NULL);
    int d = f->cfg.hidden_size;
    k_layernorm<<<(unsigned)n, d >= 1024 ? 512 : 128, 0, f->g->stream>>>(x, w, b, d, f->cfg.rms_norm_eps, (__half *)xn16);
    QC_CU_LAUNCH("layernorm");
    return QC_OK;
}

/* x[n, d] += y projected by W (fp16 input a [n, K]), through the post norm pw when there is one (Gemma:
 * y -> f->post in fp32, then x += norm(y) * (1 + pw)), else accumulated into x directly. */
static qc_status linear_residual(qc_gpu_fwd *f, const uint16_t *a, const uint16_t *W, const float *b, const float *pw,
                                 float *x, int n, int K) {
    int d = f->cfg.hidden_size;
    if (!pw) return qc_gpu_linear(f->g, a, W, b, x, n, d, K, 1.0f);
    QC_ASSERT(f->post != NULL);
    qc_status st = qc_gpu_linear(f->g, a, W, b, f->post, n, d, K, 0.0f);
    if (st || n <= 0) return st;
    k_rmsnorm_add<<<(unsigned)n, d >= 1024 ? 512 : 128, 0, f->g->stream>>>(x, f->post, pw, f->norm_off, d,
                                                                            f->cfg.rms_norm_eps);
    QC_CU_LAUNCH("rmsnorm_add");
    return QC_OK;
}

qc_status qc_gpu_linear(qc_gpu *g, const uint16_t *x, const uint16_t *W, const float *b, float *y, int n, int N,
                        int K, float beta) {
    if (n <= 0 || N <= 0) return QC_OK;
    const float one = 1.0f;
    QC_CUBLAS(cublasGemmEx(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, n, K, &one, W, CUDA_R_16F, K, x, CUDA_R_16F, K, &beta,
                           y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (b) {
        size_t cnt = (size_t)n * N;
        k_bias_add<<<qc_grid(cnt, 256), 256, 0, g->stream>>>(y, b, cnt, N);
        QC_CU_LAUNCH("bias_add");
    }
    return QC_OK;
}

/* Tiles of the Hessian's lower triangle: a K that is a multiple of HESS_TILE, at least two tiles, gets only
 * the tiles on and below the diagonal (B (B + 1) / 2 of B^2: 56% of the flops at K = 4096, 52% at 14336). */
#define HESS_TILE 512
static bool hess_tiled(int K) { return K >= 2 * HESS_TILE && K % HESS_TILE == 0; }

qc_status qc_gpu_hessian_add(qc_gpu *g, const uint16_t *x, int n, int K, float *H) {
    if (n <= 0 || K <= 0) return QC_OK;
    const float one = 1.0f;
    /* row-major x [n, K] is column-major X^T [K, n]; H = X^T X = (X^T)(X^T)^T */
    if (!hess_tiled(K)) {
        QC_CUBLAS(cublasGemmEx(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, K, K, n, &one, x, CUDA_R_16F, K, x, CUDA_R_16F, K,
                               &one, H, CUDA_R_32F, K, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return QC_OK;
    }
    /* column-major tile (i, i + t) = rows i*kb.. of X^T times rows (i + t)*kb.. transposed, at H + i*kb +
     * (i + t)*kb*K: one strided batch per diagonal t. Column-major (r, c) with r's tile <= c's is row-major
     * (c, r): the row-major lower triangle of tiles. */
    const int kb = HESS_TILE, B = K / kb;
    for (int t = 0; t < B; t++)
        QC_CUBLAS(cublasGemmStridedBatchedEx(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, kb, kb, n, &one, x, CUDA_R_16F, K,
                                             (long long)kb, x + (size_t)t * kb, CUDA_R_16F, K, (long long)kb, &one,
                                             H + (size_t)t * kb * K, CUDA_R_32F, K, (long long)kb * (K + 1), B - t,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return QC_OK;
}

/* One thread per pair: the row-major lower element (r >= c) scaled, written to both places. */
static __global__ void k_hess_finish(float *H, int K, float a) {
    const size_t KK = (size_t)K * K;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < KK; p += (size_t)gridDim.x * blockDim.x) {
        size_t r = p / K, c = p % K;
        if (r < c) continue;
        float v = H[p] * a;
        H[p] = v;
        if (r != c) H[c * K + r] = v;
    }
}

qc_status qc_gpu_hessian_finish(qc_gpu *g, float *H, int K, float scale) {
    if (K <= 0) return QC_OK;
    k_hess_finish<<<qc_grid((size_t)K * K, 256), 256, 0, g->stream>>>(H, K, scale);
    QC_CU_LAUNCH("hessian finish");
    return QC_OK;
}

qc_status qc_gpu_hessian_diag(qc_gpu *g, const float *H, int K, float *diag_host) {
    if (K <= 0) return QC_OK;
    /* one float every K + 1 */
    QC_CU(cudaMemcpy2DAsync(diag_host, sizeof(float), H, sizeof(float) * ((size_t)K + 1), sizeof(float), (size_t)K,
                            cudaMemcpyDeviceToHost, g->stream));
    QC_CU(cudaStreamSynchronize(g->stream));
    return QC_OK;
}

bool qc_gpu_fwd_set_fused_attn(qc_gpu_fwd *f, bool fused) {
    if (fused && !qc_gpu_flash_attn_supported(f->cfg.head_dim)) return false;
    f->attn_fused = fused;
    return true;
}

bool qc_gpu_fwd_fused_attn(const qc_gpu_fwd *f) { return f->attn_fused; }

qc_status qc_gpu_attn_core(qc_gpu_fwd *f, int layer, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                           uint16_t *att, int nseq, int T) {
    qc_status st = check_rows(f, nseq, T);
    if (st) return st;
    return attn_sdpa(f, layer, (const __half *)q, (const __half *)k, (const __half *)v, (__half *)att, nseq, T);
}

qc_status qc_gpu_attn_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, float *out, int nseq, int T) {
    qc_status st = check_rows(f, nseq, T);
    if (st || nseq == 0) return st;
    const qc_model_config *c = &f->cfg;
    int n = nseq * T, qd = c->n_heads * c->head_dim;
    if ((st = attn_core(f, L, xn, nseq, T))) return st;
    return qc_gpu_linear(f->g, att_ptr(f), L->w[QC_LIN_O], L->b[QC_LIN_O], out, n, c->hidden_size, qd, 0.0f);
}

qc_status qc_gpu_mlp_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, float *out, int n) {
    if (n < 0 || n > f->max_rows)
        return qc_fail(QC_ERR_ARG, "GPU forward: %d rows exceed the %d-row buffers", n, f->max_rows);
    if (n == 0) return QC_OK;
    if (L->router) {
        bool stopped;
        return moe_block(f, L, xn, out, n, NULL, NULL, &stopped);
    }
    qc_status st = mlp_core(f, L, xn, n);
    if (st) return st;
    return qc_gpu_linear(f->g, f->work, L->w[QC_LIN_DOWN], L->b[QC_LIN_DOWN], out, n, f->cfg.hidden_size,
                         L->in_features[QC_LIN_DOWN], 0.0f);
}

void qc_gpu_fwd_moe_all_rows(qc_gpu_fwd *f, const bool *experts) { f->moe_all = experts; }

qc_status qc_gpu_layer_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x, int nseq, int T,
                               qc_gpu_capture_fn capture, void *user) {
    return qc_gpu_layer_forward_half(f, L, x, nseq, T, QC_GPU_BOTH_HALVES, capture, user);
}

qc_status qc_gpu_layer_forward_half(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x, int nseq, int T, int halves,
                                    qc_gpu_capture_fn capture, void *user) {
    qc_status st = check_rows(f, nseq, T);
    if (st || nseq == 0) return st;
    const qc_model_config *c = &f->cfg;
    int n = nseq * T, d = c->hidden_size, qd = c->n_heads * c->head_dim;
    if (halves & QC_GPU_ATTN_HALF) {
        if ((st = norm_in(f, x, L->attn_norm, L->norm_bias[QC_NORM_ATTN], n, f->xn))) return st;
        if (capture && !capture(user, QC_LIN_Q, f->xn, n, d)) return QC_OK;
        if ((st = attn_core(f, L, f->xn, nseq, T))) return st;
        uint16_t *att = att_ptr(f);
        if (capture && !capture(user, QC_LIN_O, att, n, qd)) return QC_OK;
        if ((st = linear_residual(f, att, L->w[QC_LIN_O], L->b[QC_LIN_O], L->attn_post_norm, x, n, qd))) return st;
    }
    if (!(halves & QC_GPU_MLP_HALF)) return QC_OK;
    if ((st = norm_in(f, x, L->mlp_norm, L->norm_bias[QC_NORM_MLP], n, f->xn))) return st;
    if (L->router) { /* no MoE architecture has post norms */
        bool stopped;
        if ((st = moe_block(f, L, f->xn, f->moe_out, n, capture, user, &stopped)) || stopped) return st;
        size_t cnt = (size_t)n * d;
        k_add<<<qc_grid(cnt, 256), 256, 0, f->g->stream>>>(x, f->moe_out, cnt);
        QC_CU_LAUNCH("add");
        return QC_OK;
    }
    int ff = L->in_features[QC_LIN_DOWN];
    /* the MLP's input: QC_LIN_GATE (gate and up), OPT's QC_LIN_UP (fc1) */
    if (capture && !capture(user, qc_linear_input(c, QC_LIN_UP), f->xn, n, d)) return QC_OK;
    if ((st = mlp_core(f, L, f->xn, n))) return st;
    if (capture && !capture(user, QC_LIN_DOWN, f->work, n, ff)) return QC_OK;
    return linear_residual(f, f->work, L->w[QC_LIN_DOWN], L->b[QC_LIN_DOWN], L->mlp_post_norm, x, n, ff);
}

qc_status qc_gpu_layer_finish_half(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x, int nseq, int T, int half,
                                   const uint16_t *in) {
    qc_status st = check_rows(f, nseq, T);
    if (st || nseq == 0) return st;
    const qc_model_config *c = &f->cfg;
    int n = nseq * T;
    if (half == QC_GPU_ATTN_HALF)
        return linear_residual(f, in, L->w[QC_LIN_O], L->b[QC_LIN_O], L->attn_post_norm, x, n, c->n_heads * c->head_dim);
    if (half != QC_GPU_MLP_HALF || L->router)
        return qc_fail(QC_ERR_ARG, "gpu forward: no stored-input end for half %d%s", half, L->router ? " of an MoE layer" : "");
    return linear_residual(f, in, L->w[QC_LIN_DOWN], L->b[QC_LIN_DOWN], L->mlp_post_norm, x, n, L->in_features[QC_LIN_DOWN]);
}

/* ---- upload of an FP32 host layer ---- */

static qc_status upload_with_layout(qc_gpu *g, const layer_layout *lo, const qc_model_config *cfg, const qc_layer *L,
                                    qc_gpu_layer *out) {
    memset(out, 0, sizeof *out);
    char nm[160];
#define LIN_NAME(l) (cfg ? qc_linear_path(cfg, (qc_linear_id)(l), nm, sizeof nm) : qc_linear_name((qc_linear_id)(l)))
    for (int l = 0; l < lo->n_lin; l++) {
        bool want = lo->w[l] != SIZE_MAX && (!cfg || qc_linear_present(cfg, L->index, (qc_linear_id)l));
        if (!want) {
            if (L->w[l])
                return qc_fail(QC_ERR_ARG, "layer %d: %s is not in this layer's description", L->index,
                               LIN_NAME(l));
            continue;
        }
        if (!L->w[l] || L->out_features[l] != lo->out[l] || L->in_features[l] != lo->in[l])
            return qc_fail(QC_ERR_ARG, "layer %d: %s is [%d, %d], expected [%d, %d]", L->index,
                           LIN_NAME(l), L->out_features[l], L->in_features[l], lo->out[l],
                           lo->in[l]);
        if ((L->b[l] != NULL) != (lo->b[l] != SIZE_MAX))
            return qc_fail(QC_ERR_ARG, "layer %d: %s %s a bias but the config says it %s", L->index,
                           LIN_NAME(l), L->b[l] ? "has" : "lacks",
                           L->b[l] ? "has none" : "has one");
    }
    qc_layer *Lm = (qc_layer *)L; /* qc_layer_norm only locates the fields */
    for (int k = 0; k < QC_NORM_COUNT; k++)
        if ((*qc_layer_norm(Lm, (qc_norm_id)k) != NULL) != (lo->norm_len[k] > 0) ||
            (L->norm_bias[k] != NULL) != (lo->norm_b[k] != SIZE_MAX))
            return qc_fail(QC_ERR_ARG, "layer %d: norm weights or biases do not match the config", L->index);
    char *base = NULL;
    char what[64];
    snprintf(what, sizeof what, "layer %d weights (fp16)", L->index);
    qc_status st = qc_gpu_alloc(g, (void **)&base, lo->total, what);
    if (st) return st;
    qc_gpu_layer D;
    layout_bind(lo, base, cfg, L->index, &D);
    if ((L->router != NULL) != (D.router != NULL) || (L->shared_gate != NULL) != (D.shared_gate != NULL))
        st = qc_fail(QC_ERR_ARG, "layer %d: the router or shared-expert gate does not match the config", L->index);
    size_t maxw = (size_t)lo->n_experts * lo->d;
    for (int l = 0; l < lo->n_lin; l++) {
        size_t e = (size_t)lo->out[l] * lo->in[l];
        if (e > maxw) maxw = e;
    }
    size_t chunk = maxw < ((size_t)4 << 20) ? maxw : ((size_t)4 << 20);
    float *tmp = NULL;
    if (!st) st = qc_gpu_alloc(g, (void **)&tmp, chunk * sizeof(float), "weight conversion buffer");
    /* host F32 -> device fp16, through tmp */
#define UP16(dst, src, count)                                                                                    \
    for (size_t o = 0; !st && o < (size_t)(count); o += chunk) {                                                 \
        size_t cnt = (size_t)(count) - o < chunk ? (size_t)(count) - o : chunk;                                  \
        st = qc_gpu_upload(g, tmp, (src) + o, cnt * sizeof(float)); /* synchronous: tmp is free again */         \
        if (!st) st = qc_gpu_convert(g, g->stream, QC_DTYPE_F32, QC_DTYPE_F16, tmp, (__half *)(dst) + o, cnt);   \
    }
    for (int l = 0; !st && l < lo->n_lin; l++) {
        if (!D.w[l]) continue;
        UP16(D.w[l], L->w[l], (size_t)lo->out[l] * lo->in[l]);
        if (!st && L->b[l]) st = qc_gpu_upload(g, D.b[l], L->b[l], (size_t)lo->out[l] * sizeof(float));
    }
    if (D.router) UP16(D.router, L->router, (size_t)lo->n_experts * lo->d);
    if (D.shared_gate) UP16(D.shared_gate, L->shared_gate, (size_t)lo->d);
#undef UP16
#undef LIN_NAME
    for (int k = 0; !st && k < QC_NORM_COUNT; k++)
        if (lo->norm_len[k])
            st = qc_gpu_upload(g, *qc_gpu_layer_norm(&D, (qc_norm_id)k), *qc_layer_norm(Lm, (qc_norm_id)k),
                               (size_t)lo->norm_len[k] * sizeof(float));
    for (int k = 0; !st && k < QC_NORM_COUNT; k++)
        if (D.norm_bias[k]) st = qc_gpu_upload(g, D.norm_bias[k], L->norm_bias[k], (size_t)lo->norm_len[k] * sizeof(float));
    if (!st) st = qc_gpu_sync(g);
    qc_gpu_free(g, tmp);
    if (st) {
        qc_gpu_free(g, base);
        return st;
    }
    *out = D;
    return QC_OK;
}

qc_status qc_gpu_layer_upload(qc_gpu *g, const qc_layer *L, qc_gpu_layer *out) {
    memset(out, 0, sizeof *out);
    if (L->q_norm || L->k_norm)
        return qc_fail(QC_ERR_ARG, "layer %d has q/k norms, whose length (head_dim) only the config knows: "
                       "use qc_gpu_layer_upload_cfg", L->index);
    if (L->router)
        return qc_fail(QC_ERR_ARG, "layer %d is an MoE layer, which only the config describes: use "
                       "qc_gpu_layer_upload_cfg", L->index);
    bool bias[QC_LIN_COUNT];
    for (int l = 0; l < QC_LIN_COUNT; l++) bias[l] = L->b[l] != NULL;
    /* without the config: the two layer norms have the hidden width, q_proj's input */
    if (L->attn_post_norm || L->mlp_post_norm || L->norm_bias[QC_NORM_ATTN])
        return qc_fail(QC_ERR_ARG, "layer %d has post norms (Gemma) or LayerNorm biases (OPT), which only the config "
                       "describes: use qc_gpu_layer_upload_cfg", L->index);
    const int norm_len[QC_NORM_COUNT] = {L->in_features[QC_LIN_Q], L->in_features[QC_LIN_Q], 0, 0, 0, 0};
    layer_layout *lo = (layer_layout *)malloc(sizeof *lo);
    if (!lo) return qc_fail(QC_ERR_NOMEM, "out of memory");
    layout_make(QC_LIN_COUNT, L->out_features, L->in_features, bias, norm_len, false, 0, false, L->in_features[QC_LIN_Q],
                lo);
    qc_status st = upload_with_layout(g, lo, NULL, L, out);
    free(lo);
    return st;
}

qc_status qc_gpu_layer_upload_cfg(qc_gpu *g, const qc_model_config *cfg, const qc_layer *L, qc_gpu_layer *out) {
    memset(out, 0, sizeof *out);
    layer_layout *lo = (layer_layout *)malloc(sizeof *lo);
    if (!lo) return qc_fail(QC_ERR_NOMEM, "out of memory");
    layout_from_cfg(cfg, lo);
    qc_status st = upload_with_layout(g, lo, cfg, L, out);
    free(lo);
    return st;
}

void qc_gpu_layer_free(qc_gpu *g, qc_gpu_layer *L) {
    if (!L) return;
    if (L->w[QC_LIN_Q]) {
        cudaStreamSynchronize(g->stream);
        qc_gpu_free(g, L->w[QC_LIN_Q]);
    }
    memset(L, 0, sizeof *L);
}

} /* extern "C" */

/* ---- layer streaming ---- */

enum { DST_F16 = 0, DST_F32 = 1 };

typedef struct load_item {
    const qc_tensor *t;
    const void      *src;       /* the bytes read: the tensor, or a fused tensor's rows for one linear */
    size_t           nbytes, numel;
    size_t           dst_off;   /* in the slot */
    int              dst_kind;  /* DST_F16 (weights) or DST_F32 (biases, norms) */
    size_t           pin_off;   /* in the pinned buffer */
} load_item;

/* The most tensors (slices) one layer reads: weight and bias of each linear, the norms, router, shared gate. */
#define MAX_ITEMS (2 * QC_LIN_MAX + 2 * QC_NORM_COUNT + 2)
/* Tensors qc_gpu_loader_check_finite looks at per kernel launch (a chunk of the layer's). */
#define CHECK_T 32

typedef struct {
    const void        *p[CHECK_T];   /* NULL: absent */
    unsigned long long n[CHECK_T];
    unsigned           f16;          /* bit t: tensor t is fp16, else fp32 */
} finite_spans;

/* first[t] = the least index of a non-finite element of tensor t (blockIdx.y); min is order-free, so
 * the result does not depend on the threads' timing. */
static __global__ void k_first_nonfinite(finite_spans s, unsigned long long *first) {
    const int t = blockIdx.y;
    const unsigned long long n = s.n[t];
    const bool h = (s.f16 >> t) & 1u;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        bool bad = h ? (((const uint16_t *)s.p[t])[i] & 0x7c00u) == 0x7c00u
                     : (((const uint32_t *)s.p[t])[i] & 0x7f800000u) == 0x7f800000u;
        if (bad) {
            atomicMin(&first[t], i);
            return; /* this thread's later elements come after it */
        }
    }
}

struct qc_gpu_loader {
    qc_gpu         *g;
    const qc_model *m;
    layer_layout    lo;
    char           *slot_mem[2];
    qc_gpu_layer    slot[2];
    int             slot_layer[2];   /* layer held (upload complete and joined), or -1 */
    cudaEvent_t     loaded[2];       /* on the copy stream: slot upload finished */
    cudaEvent_t     released[2];     /* on the main stream: work queued before the slot was reused */
    unsigned char  *pinned;
    size_t          pinned_bytes;
    void           *raw;             /* device staging for tensors that need a conversion */
    size_t          raw_bytes;
    unsigned long long *nonfinite;   /* [CHECK_T] device: first non-finite element per tensor (check_finite) */
    load_item      *items;           /* [MAX_ITEMS] the job's */
    bool            copy_pending;    /* the pinned buffer may still be read by the copy stream */
    int             prev_slot;       /* slot of the last job (its loaded event guards the pinned buffer) */
    /* the loading thread */
    pthread_t       th;
    bool            th_active;
    int             job_layer;
    qc_status       job_st;
    char            job_msg[1024];
    double          job_read_s;      /* the running job's read time, added at join */
    double          read_s, wait_s;
};

/* Adds elements [el0, el0 + cnt) of tensor t (named name) to the items; numel_expected -1: not checked (a
 * fused experts tensor, checked by qc_model_expert_tensor). */
static qc_status add_item(const qc_model *m, const char *name, const qc_tensor *t, int64_t numel_expected, int64_t el0,
                          int64_t cnt, size_t off, int kind, load_item *items, int *n, size_t *pin) {
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    if (t->dtype != QC_DTYPE_F32 && t->dtype != QC_DTYPE_F16 && t->dtype != QC_DTYPE_BF16)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; the GPU loader reads F32, F16 and BF16",
                       m->dir, name, qc_dtype_name(t->dtype));
    if ((numel_expected >= 0 && t->numel != numel_expected) || !t->data || el0 + cnt > t->numel)
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has %lld elements, expected %lld", m->dir, name,
                       (long long)t->numel, (long long)numel_expected);
    QC_ASSERT(*n < MAX_ITEMS);
    size_t es = (size_t)t->nbytes / (size_t)t->numel;
    load_item *it = &items[(*n)++];
    it->t = t;
    it->src = (const unsigned char *)t->data + (size_t)el0 * es;
    it->numel = (size_t)cnt;
    it->nbytes = (size_t)cnt * es;
    it->dst_off = off;
    it->dst_kind = kind;
    it->pin_off = *pin;
    *pin = align_up(*pin + it->nbytes);
    return QC_OK;
}

/* Layer i's tensors with their slot destinations. */
static qc_status layer_items(const qc_gpu_loader *ld, int i, load_item *items, int *n_items, size_t *pin_total) {
    const qc_model *m = ld->m;
    const qc_model_config *cfg = &m->cfg;
    const layer_layout *lo = &ld->lo;
    char name[256], path[192];
    int n = 0;
    size_t pin = 0;
    qc_status st = QC_OK;
    const qc_arch_desc *a = qc_arch_desc_of(cfg->arch);
    for (int l = 0; l < lo->n_lin && !st; l++) {
        if (!qc_linear_present(cfg, i, (qc_linear_id)l)) continue;
        if (l >= QC_LIN_COUNT) { /* an expert: its 2-D tensor, or its slice of the fused 3-D one */
            const qc_tensor *t;
            int64_t el0;
            snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(cfg), i,
                     qc_linear_path(cfg, (qc_linear_id)l, path, sizeof path));
            if (!(st = qc_model_expert_tensor(m, i, (qc_linear_id)l, &t, &el0)))
                st = add_item(m, name, t, -1, el0, (int64_t)lo->out[l] * lo->in[l], lo->w[l], DST_F16, items, &n, &pin);
            continue;
        }
        const char *tensor; /* a fused tensor (arch.h): each linear reads its rows */
        int row0, rows;
        qc_linear_storage(cfg, (qc_linear_id)l, &tensor, &row0, &rows);
        snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(cfg), i, tensor);
        st = add_item(m, name, qc_weights_find(m->weights, name), (int64_t)rows * lo->in[l], (int64_t)row0 * lo->in[l],
                      (int64_t)lo->out[l] * lo->in[l], lo->w[l], DST_F16, items, &n, &pin);
        if (!st && lo->b[l] != SIZE_MAX) {
            snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(cfg), i, tensor);
            st = add_item(m, name, qc_weights_find(m->weights, name), rows, row0, lo->out[l], lo->b[l], DST_F32, items,
                          &n, &pin);
        }
    }
    for (int k = 0; k < QC_NORM_COUNT && !st; k++) {
        if (!lo->norm_len[k]) continue;
        snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(cfg), i, a->norm[k].name);
        st = add_item(m, name, qc_weights_find(m->weights, name), lo->norm_len[k], 0, lo->norm_len[k], lo->norm[k],
                      DST_F32, items, &n, &pin);
        if (st || lo->norm_b[k] == SIZE_MAX) continue;
        snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(cfg), i, a->norm[k].name);
        st = add_item(m, name, qc_weights_find(m->weights, name), lo->norm_len[k], 0, lo->norm_len[k], lo->norm_b[k],
                      DST_F32, items, &n, &pin);
    }
    if (!st && lo->router != SIZE_MAX && qc_layer_is_moe(cfg, i)) {
        int64_t ed = (int64_t)lo->n_experts * lo->d;
        qc_model_moe_name(m, i, false, name, sizeof name);
        st = add_item(m, name, qc_weights_find(m->weights, name), ed, 0, ed, lo->router, DST_F16, items, &n, &pin);
        if (!st && lo->shared_gate != SIZE_MAX) {
            qc_model_moe_name(m, i, true, name, sizeof name);
            st = add_item(m, name, qc_weights_find(m->weights, name), lo->d, 0, lo->d, lo->shared_gate, DST_F16, items,
                          &n, &pin);
        }
    }
    *n_items = n;
    *pin_total = pin;
    return st;
}

static bool needs_conversion(const load_item *it) {
    return it->dst_kind == DST_F16 ? it->t->dtype != QC_DTYPE_F16 : it->t->dtype != QC_DTYPE_F32;
}
/* bf16 -> fp16 keeps the size: converted in place in the slot, no staging. */
static bool converts_in_place(const load_item *it) {
    return it->dst_kind == DST_F16 && it->t->dtype == QC_DTYPE_BF16;
}

/* Drops the file pages lying wholly inside [p, p + n) from this process (read-only file mapping:
 * they are read again from the file if touched). */
static void drop_pages(const void *p, size_t n) { qc_mmap_drop_pages(p, n); }
static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static qc_status load_job(qc_gpu_loader *ld, int i) {
    qc_gpu *g = ld->g;
    load_item *items = ld->items;
    int n = 0;
    size_t pin_total = 0;
    qc_status st = layer_items(ld, i, items, &n, &pin_total);
    if (st) return st;
    QC_ASSERT(pin_total <= ld->pinned_bytes);
    QC_CU(cudaSetDevice(g->device));
    for (int k = 0; k < n; k++) { /* start the kernel's readahead of the whole layer */
        uintptr_t p = (uintptr_t)items[k].src, a = p & ~(uintptr_t)(page_size() - 1);
        madvise((void *)a, (size_t)(p - a) + items[k].nbytes, MADV_WILLNEED);
    }
    /* the pinned buffer may still feed the previous layer's copies */
    if (ld->copy_pending) QC_CU(cudaEventSynchronize(ld->loaded[ld->prev_slot]));
    int s = i % 2;
    /* the slot's previous layer may still be in use on the main stream */
    QC_CU(cudaStreamWaitEvent(g->copy_stream, ld->released[s], 0));
    char *slot = ld->slot_mem[s];
    for (int k = 0; k < n; k++) {
        const load_item *it = &items[k];
        size_t nb = it->nbytes, numel = it->numel;
        unsigned char *src = ld->pinned + it->pin_off;
        double t0 = qc_time_now();
        memcpy(src, it->src, nb);
        drop_pages(it->src, nb);
        ld->job_read_s += qc_time_now() - t0;
        if (!needs_conversion(it)) {
            QC_CU(cudaMemcpyAsync(slot + it->dst_off, src, nb, cudaMemcpyHostToDevice, g->copy_stream));
            continue;
        }
        void *dst = slot + it->dst_off;
        qc_dtype to = it->dst_kind == DST_F16 ? QC_DTYPE_F16 : QC_DTYPE_F32;
        const void *from = dst; /* bf16 -> fp16 converts in place in the slot */
        if (converts_in_place(it)) {
            QC_CU(cudaMemcpyAsync(dst, src, nb, cudaMemcpyHostToDevice, g->copy_stream));
        } else {
            QC_ASSERT(nb <= ld->raw_bytes);
            QC_CU(cudaMemcpyAsync(ld->raw, src, nb, cudaMemcpyHostToDevice, g->copy_stream));
            from = ld->raw;
        }
        if ((st = qc_gpu_convert(g, g->copy_stream, it->t->dtype, to, from, dst, numel))) return st;
    }
    QC_CU(cudaEventRecord(ld->loaded[s], g->copy_stream));
    return QC_OK;
}

static void *loader_thread(void *arg) {
    qc_gpu_loader *ld = (qc_gpu_loader *)arg;
    ld->job_st = load_job(ld, ld->job_layer);
    if (ld->job_st) snprintf(ld->job_msg, sizeof ld->job_msg, "%s", qc_last_error());
    return NULL;
}

/* Waits for the running job; on success its slot holds its layer. */
static qc_status loader_join(qc_gpu_loader *ld) {
    if (!ld->th_active) return QC_OK;
    double t0 = qc_time_now();
    pthread_join(ld->th, NULL);
    ld->wait_s += qc_time_now() - t0;
    ld->th_active = false;
    ld->read_s += ld->job_read_s;
    ld->copy_pending = true;
    ld->prev_slot = ld->job_layer % 2;
    if (ld->job_st) {
        ld->copy_pending = false; /* a failed job may not have recorded its event; drain instead */
        cudaStreamSynchronize(ld->g->copy_stream);
        return qc_fail(ld->job_st, "loading layer %d: %s", ld->job_layer, ld->job_msg);
    }
    ld->slot_layer[ld->job_layer % 2] = ld->job_layer;
    return QC_OK;
}

extern "C" {

qc_status qc_gpu_loader_create(qc_gpu *g, const qc_model *m, qc_gpu_loader **out) {
    *out = NULL;
    if (m->is_gptq || m->is_awq)
        return qc_fail(QC_ERR_UNSUPPORTED,
                       "%s: a %s checkpoint: the GPU layer loader reads plain F16/BF16/F32 checkpoints (dequantize "
                       "layers with qc_layer_load and upload them with qc_gpu_layer_upload_cfg)",
                       m->dir, m->is_gptq ? "GPTQ" : "AWQ");
    qc_status st = check_cfg(&m->cfg);
    if (st) return st;
    qc_gpu_loader *ld = (qc_gpu_loader *)calloc(1, sizeof *ld);
    if (!ld) return qc_fail(QC_ERR_NOMEM, "out of memory");
    ld->g = g;
    ld->m = m;
    ld->slot_layer[0] = ld->slot_layer[1] = -1;
    layout_from_cfg(&m->cfg, &ld->lo);
    ld->items = (load_item *)malloc(sizeof(load_item) * MAX_ITEMS);
    if (!ld->items) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    load_item *items = ld->items;
    for (int i = 0; i < m->cfg.n_layers && !st; i++) {
        int n;
        size_t pin;
        if ((st = layer_items(ld, i, items, &n, &pin))) break;
        if (pin > ld->pinned_bytes) ld->pinned_bytes = pin;
        for (int k = 0; k < n; k++)
            if (needs_conversion(&items[k]) && !converts_in_place(&items[k]) && items[k].nbytes > ld->raw_bytes)
                ld->raw_bytes = items[k].nbytes;
    }
    for (int s = 0; !st && s < 2; s++) {
        st = qc_gpu_alloc(g, (void **)&ld->slot_mem[s], ld->lo.total, "layer weights slot (fp16)");
        if (!st) layout_bind(&ld->lo, ld->slot_mem[s], NULL, -1, &ld->slot[s]);
    }
    if (!st && ld->raw_bytes) st = qc_gpu_alloc(g, &ld->raw, ld->raw_bytes, "layer upload staging");
    if (!st) st = qc_gpu_alloc(g, (void **)&ld->nonfinite, sizeof(unsigned long long) * CHECK_T, "the layer check");
    if (!st) st = qc_gpu_host_alloc((void **)&ld->pinned, ld->pinned_bytes, "layer streaming");
    for (int s = 0; !st && s < 2; s++) {
        cudaError_t e = cudaEventCreateWithFlags(&ld->loaded[s], cudaEventDisableTiming);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&ld->released[s], cudaEventDisableTiming);
        if (e == cudaSuccess) e = cudaEventRecord(ld->released[s], g->stream);
        if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "layer loader: cannot create events: %s", cudaGetErrorString(e));
    }
    if (st) {
        qc_gpu_loader_free(ld);
        return st;
    }
    *out = ld;
    return QC_OK;
}

void qc_gpu_loader_free(qc_gpu_loader *ld) {
    if (!ld) return;
    if (ld->th_active) {
        pthread_join(ld->th, NULL);
        ld->th_active = false;
    }
    qc_gpu *g = ld->g;
    cudaStreamSynchronize(g->copy_stream);
    cudaStreamSynchronize(g->stream);
    for (int s = 0; s < 2; s++) {
        if (ld->loaded[s]) cudaEventDestroy(ld->loaded[s]);
        if (ld->released[s]) cudaEventDestroy(ld->released[s]);
        qc_gpu_free(g, ld->slot_mem[s]);
    }
    qc_gpu_free(g, ld->raw);
    qc_gpu_free(g, ld->nonfinite);
    qc_gpu_host_free(ld->pinned);
    free(ld->items);
    free(ld);
}

qc_status qc_gpu_loader_prefetch(qc_gpu_loader *ld, int i) {
    if (i < 0 || i >= ld->m->cfg.n_layers)
        return qc_fail(QC_ERR_ARG, "layer %d out of range [0, %d)", i, ld->m->cfg.n_layers);
    if (ld->th_active) {
        if (ld->job_layer == i) return QC_OK;
        qc_status st = loader_join(ld);
        if (st) return st;
    }
    int s = i % 2;
    ld->slot_layer[s] = -1;
    layout_bind(&ld->lo, ld->slot_mem[s], &ld->m->cfg, i, &ld->slot[s]); /* the linears layer i has */
    QC_CU(cudaEventRecord(ld->released[s], ld->g->stream));
    ld->job_layer = i;
    ld->job_st = QC_OK;
    ld->job_msg[0] = 0;
    ld->job_read_s = 0;
    int e = pthread_create(&ld->th, NULL, loader_thread, ld);
    if (e) return qc_fail(QC_ERR_NOMEM, "layer loader: cannot start a thread: %s", strerror(e));
    ld->th_active = true;
    return QC_OK;
}

qc_status qc_gpu_loader_get(qc_gpu_loader *ld, int i, qc_gpu_layer **out) {
    *out = NULL;
    if (i < 0 || i >= ld->m->cfg.n_layers)
        return qc_fail(QC_ERR_ARG, "layer %d out of range [0, %d)", i, ld->m->cfg.n_layers);
    qc_status st;
    int s = i % 2;
    if (ld->th_active && ld->job_layer == i) {
        if ((st = loader_join(ld))) return st;
    } else if (ld->slot_layer[s] != i) {
        if ((st = qc_gpu_loader_prefetch(ld, i))) return st;
        if ((st = loader_join(ld))) return st;
    }
    QC_CU(cudaStreamWaitEvent(ld->g->stream, ld->loaded[s], 0));
    *out = &ld->slot[s];
    return QC_OK;
}

void qc_gpu_loader_times(const qc_gpu_loader *ld, double *read_s, double *wait_s) {
    if (read_s) *read_s = ld->read_s;
    if (wait_s) *wait_s = ld->wait_s;
}

size_t qc_gpu_loader_host_bytes(const qc_gpu_loader *ld) { return ld->pinned_bytes; }

/* One tensor of a loaded layer for the check: kind 0 weight, 1 bias (of linear l), 2 norm l, 3 router,
 * 4 shared-expert gate, 5 norm l's bias. */
typedef struct {
    const void        *p;
    unsigned long long n;
    bool               f16;
    int                kind, l;
} check_item;

/* The message for element i of item it, which is not finite on the device. */
static qc_status nonfinite_error(qc_gpu_loader *ld, const qc_gpu_layer *L, const check_item *it, unsigned long long i) {
    qc_gpu *g = ld->g;
    const qc_model *m = ld->m;
    const qc_arch_desc *a = qc_arch_desc_of(m->cfg.arch);
    char name[256], path[192];
    int cols = 0;
    const qc_tensor *ft = NULL;
    int64_t el0 = 0;
    switch (it->kind) {
    case 0:
    case 1:
        if (it->l >= QC_LIN_COUNT) {
            snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), L->index,
                     qc_linear_path(&m->cfg, (qc_linear_id)it->l, path, sizeof path));
            if (qc_model_expert_tensor(m, L->index, (qc_linear_id)it->l, &ft, &el0) != QC_OK) qc_error_clear(), ft = NULL;
        } else {
            snprintf(name, sizeof name, "%s.%d.%s.%s", qc_layers_path(&m->cfg), L->index, a->lin[it->l].name,
                     it->kind ? "bias" : "weight");
        }
        if (it->kind == 0) cols = L->in_features[it->l];
        break;
    case 2:
    case 5:
        snprintf(name, sizeof name, "%s.%d.%s.%s", qc_layers_path(&m->cfg), L->index, a->norm[it->l].name,
                 it->kind == 5 ? "bias" : "weight");
        break;
    default:
        qc_model_moe_name(m, L->index, it->kind == 4, name, sizeof name);
        cols = ld->lo.d;
        break;
    }
    if (!ft) ft = qc_weights_find(m->weights, name);
    /* the device's value, then the file's (the message names what the file holds, as on the CPU) */
    float dev = 0.0f;
    qc_status st;
    if (it->f16) {
        uint16_t h = 0;
        st = qc_gpu_download(g, &h, (const uint16_t *)it->p + i, sizeof h);
        dev = qc_fp16_to_f32(h);
    } else {
        st = qc_gpu_download(g, &dev, (const float *)it->p + i, sizeof dev);
    }
    if (st) return st;
    float v = dev;
    if (ft && qc_tensor_read_f32(ft, el0 + (int64_t)i, 1, &v) != QC_OK) {
        qc_error_clear();
        v = dev;
    }
    char at[64];
    if (cols > 0) snprintf(at, sizeof at, "[%llu, %llu]", i / (unsigned)cols, i % (unsigned)cols);
    else snprintf(at, sizeof at, "%llu", i);
    if (v == v && v - v == 0.0f) /* finite in the file: beyond what fp16 holds */
        return qc_fail(QC_ERR_NUMERIC, "input model: tensor %s: element %s = %g (stored as %s) is beyond the F16 "
                       "range (+-65504) the GPU computes in; quantize this model with --device cpu", name, at,
                       (double)v, ft ? qc_dtype_name(ft->dtype) : "?");
    return qc_fail(QC_ERR_NUMERIC, "input model: tensor %s: element %s is %g (not finite); qcal quantizes only "
                   "finite weights", name, at, (double)v);
}

qc_status qc_gpu_loader_check_finite(qc_gpu_loader *ld, const qc_gpu_layer *L) {
    qc_gpu *g = ld->g;
    const layer_layout *lo = &ld->lo;
    check_item *items = (check_item *)malloc(sizeof(check_item) * MAX_ITEMS);
    if (!items) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int n = 0;
    for (int l = 0; l < lo->n_lin; l++) { /* qc_pl_check_layer's order: weight and bias of each linear, the norms */
        if (!L->w[l]) continue;
        items[n++] = (check_item){L->w[l], (unsigned long long)L->out_features[l] * (unsigned long long)L->in_features[l],
                                  true, 0, l};
        if (L->b[l]) items[n++] = (check_item){L->b[l], (unsigned long long)L->out_features[l], false, 1, l};
    }
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        const float *nw = *qc_gpu_layer_norm((qc_gpu_layer *)L, (qc_norm_id)k);
        if (nw) items[n++] = (check_item){nw, (unsigned long long)lo->norm_len[k], false, 2, k};
    }
    for (int k = 0; k < QC_NORM_COUNT; k++)
        if (L->norm_bias[k]) items[n++] = (check_item){L->norm_bias[k], (unsigned long long)lo->norm_len[k], false, 5, k};
    if (L->router) items[n++] = (check_item){L->router, (unsigned long long)lo->n_experts * lo->d, true, 3, 0};
    if (L->shared_gate) items[n++] = (check_item){L->shared_gate, (unsigned long long)lo->d, true, 4, 0};
    qc_status st = QC_OK;
    for (int c0 = 0; c0 < n && !st; c0 += CHECK_T) {
        int nc = n - c0 < CHECK_T ? n - c0 : CHECK_T;
        finite_spans s;
        memset(&s, 0, sizeof s);
        unsigned long long most = 0;
        for (int t = 0; t < nc; t++) {
            s.p[t] = items[c0 + t].p;
            s.n[t] = items[c0 + t].n;
            if (items[c0 + t].f16) s.f16 |= 1u << t;
            most = s.n[t] > most ? s.n[t] : most;
        }
        unsigned gx = qc_grid((size_t)most, 256);
        if (gx > 1024) gx = 1024; /* grid-stride: enough to stream the layer, few idle blocks for the norms */
        if (gx < 1) gx = 1;
        unsigned long long first[CHECK_T];
        cudaError_t e = cudaMemsetAsync(ld->nonfinite, 0xff, sizeof(unsigned long long) * CHECK_T, g->stream);
        if (e != cudaSuccess) {
            st = qc_fail(QC_ERR_DEVICE, "layer check: %s", cudaGetErrorString(e));
            break;
        }
        k_first_nonfinite<<<dim3(gx, (unsigned)nc), 256, 0, g->stream>>>(s, ld->nonfinite);
        e = cudaGetLastError();
        if (e != cudaSuccess) {
            st = qc_fail(QC_ERR_DEVICE, "layer check: %s", cudaGetErrorString(e));
            break;
        }
        if ((st = qc_gpu_download(g, first, ld->nonfinite, sizeof first))) break;
        for (int t = 0; t < nc; t++)
            if (first[t] != ~0ULL) {
                st = nonfinite_error(ld, L, &items[c0 + t], first[t]);
                break;
            }
    }
    free(items);
    return st;
}

} /* extern "C" */

/* ---- embedding lookup on the device ---- */
static __global__ void k_embed_gather(const void *table, int dtype, const int32_t *ids, size_t n, int d, float *x) {
    size_t total = n * (size_t)d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d, j = i % d, src = (size_t)ids[r] * d + j;
        float v;
        if (dtype == 0) v = ((const float *)table)[src];
        else if (dtype == 1) v = __half2float(((const __half *)table)[src]);
        else v = __bfloat162float(((const __nv_bfloat16 *)table)[src]);
        x[i] = v;
    }
}

/* x[r, j] += pos[(r % T + off) * d + j] (learned positions, OPT), the table as stored, F16-rounded when round. */
static __global__ void k_add_pos(float *x, const void *table, int dtype, size_t n, int T, int off, int d, int round) {
    size_t total = n * (size_t)d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d, j = i % d, src = ((r % (size_t)T) + (size_t)off) * d + j;
        float v;
        if (dtype == 0) v = ((const float *)table)[src];
        else if (dtype == 1) v = __half2float(((const __half *)table)[src]);
        else v = __bfloat162float(((const __nv_bfloat16 *)table)[src]);
        if (round) v = __half2float(__float2half_rn(v));
        x[i] += v;
    }
}

static __global__ void k_scale(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] *= s;
}

extern "C" qc_status qc_gpu_embed(qc_gpu *g, const qc_model *m, const int32_t *ids, size_t n, int T, float *x) {
    const qc_tensor *t = m->embed;
    int d = m->cfg.hidden_size;
    if (m->pos_embed && (T < 1 || T > m->cfg.max_position_embeddings))
        return qc_fail(QC_ERR_ARG, "%d-token sequences exceed the model's %d learned positions (max_position_embeddings)",
                       T, m->cfg.max_position_embeddings);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return qc_fail(QC_ERR_ARG, "token id %d at position %zu is outside the vocabulary [0, %d)", ids[i], i,
                           m->cfg.vocab_size);
    int dt = t->dtype == QC_DTYPE_F32 ? 0 : t->dtype == QC_DTYPE_F16 ? 1 : t->dtype == QC_DTYPE_BF16 ? 2 : -1;
    if (dt < 0 || !t->data) return qc_fail(QC_ERR_UNSUPPORTED, "%s: embedding dtype not supported on the GPU", t->name);
    void *tab = NULL, *idd = NULL;
    qc_status st = qc_gpu_alloc(g, &tab, t->nbytes, "the embedding table");
    if (st == QC_OK) st = qc_gpu_alloc(g, &idd, n * sizeof(int32_t), "the calibration token ids");
    if (st == QC_OK) st = qc_gpu_upload(g, tab, t->data, t->nbytes);
    qc_tensor_drop_pages(t);
    if (st == QC_OK) st = qc_gpu_upload(g, idd, ids, n * sizeof(int32_t));
    if (st == QC_OK) {
        k_embed_gather<<<qc_grid(n * (size_t)d, 256), 256, 0, g->stream>>>(tab, dt, (const int32_t *)idd, n, d, x);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "embedding gather: %s", cudaGetErrorString(e));
    }
    if (st == QC_OK && m->round_f16) st = qc_gpu_round_f16(g, x, n * (size_t)d);
    if (st == QC_OK && qc_arch_desc_of(m->cfg.arch)->embed_scaled) { /* after the rounding, as qc_model_embed */
        k_scale<<<qc_grid(n * (size_t)d, 256), 256, 0, g->stream>>>(x, n * (size_t)d, (float)sqrt((double)d));
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "embedding scale: %s", cudaGetErrorString(e));
    }
    const qc_tensor *pt = m->pos_embed;
    if (st == QC_OK && pt) { /* after the scaling, as qc_model_embed */
        int pdt = pt->dtype == QC_DTYPE_F32 ? 0 : pt->dtype == QC_DTYPE_F16 ? 1 : pt->dtype == QC_DTYPE_BF16 ? 2 : -1;
        void *ptab = NULL;
        if (pdt < 0 || !pt->data) st = qc_fail(QC_ERR_UNSUPPORTED, "%s: position table dtype not supported on the GPU", pt->name);
        if (st == QC_OK) st = qc_gpu_alloc(g, &ptab, pt->nbytes, "the position table");
        if (st == QC_OK) st = qc_gpu_upload(g, ptab, pt->data, pt->nbytes);
        if (st == QC_OK) {
            k_add_pos<<<qc_grid(n * (size_t)d, 256), 256, 0, g->stream>>>(x, ptab, pdt, n, T,
                                                                           qc_arch_desc_of(m->cfg.arch)->pos_offset, d,
                                                                           m->round_f16 ? 1 : 0);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) st = qc_fail(QC_ERR_DEVICE, "position embedding: %s", cudaGetErrorString(e));
        }
        if (st == QC_OK) st = qc_gpu_sync(g);
        qc_gpu_free(g, ptab);
    }
    if (st == QC_OK) st = qc_gpu_sync(g);
    qc_gpu_free(g, tab);
    qc_gpu_free(g, idd);
    return st;
}
