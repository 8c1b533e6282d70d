/* plan.c - the preflight plan (see plan.h). Every term below names the allocation it stands for in the
 * driver that makes it; when a driver changes what it allocates, the matching term changes here. */
#include "plan.h"
#include "qc_par.h"

#include "pipeline_internal.h"
#include "qc_gpu.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- host constants, measured with benchmarks/bench_plan.sh (benchmarks/results/plan.md) ---- */
/* qcal's own resident memory before any model data: the binary, the shared libraries' touched pages,
 * libc's arenas and the stacks (12.3 MiB: `qcal quantize` before its tokenizer is loaded). */
#define PROCESS_BASE      ((uint64_t)12 << 20)
/* OpenBLAS's per-thread GEMM buffers: the part a large sgemm touches (3.1 MiB at 1 thread, 3.5 at 2). */
#define BLAS_PER_THREAD   ((uint64_t)2 << 20)
/* The loaded tokenizer (vocabulary, merges, their hash tables) per byte of tokenizer.json: 14.9 MB for
 * the 1.84 MB Llama-2 tokenizer.json. */
#define TOKENIZER_FACTOR  8
/* Host memory of the CUDA runtime, driver and libraries (cudart, cuBLAS/cuBLASLt, cuSOLVER images and
 * the driver's pinned bookkeeping) once a context exists. */
#define CUDA_HOST         ((uint64_t)420 << 20)

/* ---- time constants ---- */
/* Fractions of the measured sgemm rate the CPU phases reach (qcal-llama-25m on 2 Haswell cores). */
#define CPU_EFF_FORWARD   0.45
#define CPU_EFF_SYRK      0.55
#define CPU_EFF_SOLVE     0.40
#define CPU_SCALAR_GFLOPS 1.5      /* GPTQ's in-block column sweep, per BLAS thread */
#define DISK_BYTES_PER_S  1.0e9    /* sequential write + fsync */
#define FSYNC_SECONDS     0.01     /* per file written and fsynced */
/* GPU: one H100, GPTQ w4g128 and AWQ w4g128 on Llama-3.1-8B shapes (benchmarks/results/gpu_h100.md,
 * 2026-12-07, third session: the fused attention kernel, the Gram-form clip search). GPTQ's forward assumes
 * the stash is taken (each part of a layer once; where the card has no room for it the forward takes about
 * 1.7x this); the Hessian rate is per full X^T X product, of which the lower tiles compute about half. */
#define H100_FWD_TFLOPS       486.0  /* GPTQ's schedule, each part once */
#define H100_AWQ_FWD_TFLOPS   405.0
#define H100_HESS_TFLOPS      1020.0
#define H100_SOLVE_S_8B       0.240  /* per 8B layer: GPTQ + error report, 7 linears */
#define H100_AWQ_SOLVE_S_8B   0.41   /* per 8B layer: scale search + clip + quantize, 23 x 512 tokens */
#define H100_PACK_S_8B        0.016  /* per 8B layer */
#define H100_EMBED_S_8B       0.12

/* ---- the model's shapes ---- */
typedef struct {
    int      L, d, qd, kvd, ff, hd, vocab, T, n, Kmax, Nmax, batch, G[QC_LIN_COUNT];
    uint64_t rows, brows;                 /* calibration rows; rows per forward batch */
    int      N[QC_LIN_COUNT], K[QC_LIN_COUNT];
    bool     bias[QC_LIN_COUNT], quant[QC_LIN_COUNT], cap_used[QC_LIN_COUNT];
    bool     tied;
    bool     no_clip[QC_LIN_COUNT];       /* AWQ's clip search skips it */
    bool     first[QC_LIN_COUNT];         /* the first (or only) linear of its stored tensor */
    int      srows[QC_LIN_COUNT];         /* its stored tensor's rows (fused: all slices') */
    const char *tensor[QC_LIN_COUNT];     /* its stored tensor's path below <layers>.N. */
    const char *layers;                   /* the layers' module path (qc_layers_path) */
    bool     norm_bias;                   /* LayerNorms: each norm has a bias beside its weight (OPT) */
    int      n_caps, capw[QC_LIN_COUNT];  /* capture points k_caps[0 .. n_caps - 1]; width by capture id */
    qc_linear_id k_caps[QC_LIN_COUNT];
    int      norm_len[QC_NORM_COUNT];     /* 0: absent */
    bool     rope_local;                  /* a second pair of rotary tables (Gemma-3's local rope) */
    const qc_arch_desc *arch;
    uint64_t nkmax, nk_sum;
    uint64_t layer_f32;                   /* one decoder layer in FP32: weights, biases, norms */
    uint64_t stored_sum, pinned_max, raw_max, tensor_max; /* decoder layers as stored */
    uint64_t embed_bytes, head_bytes;     /* as stored; head 0 when tied */
    uint64_t part_data, part_file;        /* one layer part: tensor bytes, file bytes */
    uint64_t base_data, base_file;        /* base.safetensors */
    int      part_tensors;
    /* mixture of experts (E 0: dense) */
    const qc_model_config *cfg;          /* NULL for llama8b_shapes */
    int      E, topk, mff, L_moe;         /* experts, top-k, an expert's width, sparse layers */
    bool     mquant[3];                   /* an expert's gate, up, down packable */
    uint64_t moe_f32;                     /* a sparse layer's experts, router and shared gate in FP32 */
    int      stride;                      /* linear slots per layer (report rows) */
} shapes;

/* The capture points and their widths come from the architecture's description (arch.h); the shapes
 * struct keeps them so that llama8b_shapes (the H100 timing reference) can fill them without a config. */
static int cap_width(const shapes *s, qc_linear_id cap) { return s->capw[cap]; }

static size_t dtype_size(qc_dtype dt) {
    return dt == QC_DTYPE_F32 || dt == QC_DTYPE_I32 ? 4 : dt == QC_DTYPE_F16 || dt == QC_DTYPE_BF16 ? 2 : 1;
}

static uint64_t align256(uint64_t x) { return (x + 255) & ~(uint64_t)255; }

/* Bytes of a stored tensor; fallback numel * the config's dtype when it is absent (a checkpoint whose
 * linears are packed, which the drivers do not quantize anyway). */
static uint64_t tensor_bytes(const qc_model *m, const char *name, uint64_t numel, qc_dtype *dt) {
    const qc_tensor *t = m->weights ? qc_weights_find(m->weights, name) : NULL;
    if (t) {
        if (dt) *dt = t->dtype;
        return t->nbytes;
    }
    qc_dtype d = strcmp(m->cfg.torch_dtype, "float32") == 0 ? QC_DTYPE_F32
                 : strcmp(m->cfg.torch_dtype, "float16") == 0 ? QC_DTYPE_F16 : QC_DTYPE_BF16;
    if (dt) *dt = d;
    return numel * dtype_size(d);
}

/* The files of a tensor list as qc_st_writer writes them (a compact JSON header padded to 8, then the
 * data), split into shards at whole tensors as ckpt_write.c's plan() does when max_shard is set. */
typedef struct {
    uint64_t json, data;       /* the file being filled */
    int      n;
    uint64_t meta;             /* length of the __metadata__ members */
    uint64_t max_shard;        /* 0: one file */
    uint64_t closed;           /* bytes of the files already complete */
    uint64_t all_data, index;  /* every tensor's bytes; the shard index's entries */
    int      all_n, shards;
} st_hdr;

/* The __metadata__ members of the checkpoint's shards and of the work directory's parts, which carry the same
 * (format, the gptq_* or awq settings, the quantizer): an estimate from above. */
#define SHARD_META 230

/* 8-byte length + {"__metadata__":{META},...tensors...} padded to 8, + the data. */
static uint64_t hdr_file(const st_hdr *h) {
    uint64_t j = 17 + h->meta + 1 + h->json + 1;
    while ((8 + j) % 8) j++;
    return 8 + j + h->data;
}

static void hdr_add(st_hdr *h, const char *name, const char *dt, int ndim, int64_t d0, int64_t d1, uint64_t nbytes) {
    if (h->max_shard && h->data > 0 && h->data + nbytes > h->max_shard) {
        h->closed += hdr_file(h);
        h->json = h->data = 0;
        h->n = 0;
        h->shards++;
    }
    char shape[48];
    if (ndim == 2) snprintf(shape, sizeof shape, "%" PRId64 ",%" PRId64, d0, d1);
    else snprintf(shape, sizeof shape, "%" PRId64, d0);
    int k = snprintf(NULL, 0, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", name,
                     dt, shape, h->data, h->data + nbytes);
    h->json += (uint64_t)k;
    h->data += nbytes;
    h->n++;
    h->all_data += nbytes;
    h->all_n++;
    h->index += strlen(name) + 43; /* \t\t"name":\t"model-0000i-of-0000n.safetensors",\n */
}

/* Every file's bytes (the last one included). */
static uint64_t hdr_total(const st_hdr *h) { return h->closed + hdr_file(h); }

/* A linear's tensors under `base` (<layers>.N.<path>): packed (N x K, G groups) or F16, and its bias. */
static void module_tensors(const qc_plan_in *in, const char *base, bool quant, bool bias, int N, int K, int G,
                           st_hdr *h) {
    char nm[256];
    int b = in->bits;
    bool awq = in->format == QC_PACK_AWQ;
    if (quant) {
        snprintf(nm, sizeof nm, "%s.qweight", base);
        if (awq) hdr_add(h, nm, "I32", 2, K, N / 8, (uint64_t)K * (N / 8) * 4);
        else hdr_add(h, nm, "I32", 2, (int64_t)K * b / 32, N, (uint64_t)K * b / 32 * N * 4);
        snprintf(nm, sizeof nm, "%s.qzeros", base);
        if (awq) hdr_add(h, nm, "I32", 2, G, N / 8, (uint64_t)G * (N / 8) * 4);
        else hdr_add(h, nm, "I32", 2, G, (int64_t)N * b / 32, (uint64_t)G * ((uint64_t)N * b / 32) * 4);
        snprintf(nm, sizeof nm, "%s.scales", base);
        hdr_add(h, nm, "F16", 2, G, N, (uint64_t)G * N * 2);
        if (!awq) {
            snprintf(nm, sizeof nm, "%s.g_idx", base);
            hdr_add(h, nm, "I32", 1, K, 0, (uint64_t)K * 4);
        }
    } else {
        snprintf(nm, sizeof nm, "%s.weight", base);
        hdr_add(h, nm, "F16", 2, N, K, (uint64_t)N * K * 2);
    }
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", base);
        hdr_add(h, nm, "F16", 1, N, 0, (uint64_t)N * 2);
    }
}

/* One linear's tensors in a part (and the checkpoint). */
static void linear_tensors(const qc_plan_in *in, const shapes *s, int li, qc_linear_id l, st_hdr *h) {
    if (!s->first[l]) return; /* a fused tensor: written once, with every slice's rows */
    char base[192];
    snprintf(base, sizeof base, "%s.%d.%s", s->layers, li, s->tensor[l]);
    module_tensors(in, base, s->quant[l], s->bias[l], s->srows[l], s->K[l], s->G[l], h);
}

/* A sparse layer's experts (each as stored alone) and its router and shared-expert gate (F16). */
static void moe_tensors(const qc_plan_in *in, const shapes *s, int li, st_hdr *h) {
    char nm[256], path[128];
    int gs = in->group_size;
    for (int e = 0; e < s->E; e++)
        for (int j = 0; j < 3; j++) {
            int N = j == 2 ? s->d : s->mff, K = j == 2 ? s->mff : s->d;
            char base[192];
            snprintf(base, sizeof base, "%s.%d.%s", s->layers, li, qc_linear_path(s->cfg, QC_LIN_EXPERT(e, j), path, sizeof path));
            module_tensors(in, base, s->mquant[j], false, N, K, gs > 0 ? K / gs : 1, h);
        }
    const qc_arch_moe *moe = s->arch->moe;
    snprintf(nm, sizeof nm, "%s.%d.%s.weight", s->layers, li, moe->router);
    hdr_add(h, nm, "F16", 2, s->E, s->d, (uint64_t)s->E * s->d * 2);
    if (moe->shared_gate) {
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", s->layers, li, moe->shared_gate);
        hdr_add(h, nm, "F16", 2, 1, s->d, (uint64_t)s->d * 2);
    }
}

static void layer_tensors(const qc_plan_in *in, const shapes *s, int li, st_hdr *h) {
    for (int l = 0; l < QC_LIN_COUNT; l++)
        if (!s->cfg || qc_linear_present(s->cfg, li, (qc_linear_id)l)) linear_tensors(in, s, li, (qc_linear_id)l, h);
    if (s->cfg && qc_layer_is_moe(s->cfg, li)) moe_tensors(in, s, li, h);
    char nm[192];
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        if (!s->norm_len[k]) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", s->layers, li, s->arch->norm[k].name);
        hdr_add(h, nm, "F16", 1, s->norm_len[k], 0, (uint64_t)s->norm_len[k] * 2);
        if (!s->norm_bias) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.bias", s->layers, li, s->arch->norm[k].name);
        hdr_add(h, nm, "F16", 1, s->norm_len[k], 0, (uint64_t)s->norm_len[k] * 2);
    }
}

static void base_tensors(const shapes *s, st_hdr *h) {
    hdr_add(h, s->arch->embed, "F16", 2, s->vocab, s->d, (uint64_t)s->vocab * s->d * 2);
    if (s->arch->pos_embed) {
        int64_t np = (int64_t)s->cfg->max_position_embeddings + s->arch->pos_offset;
        hdr_add(h, s->arch->pos_embed, "F16", 2, np, s->d, (uint64_t)np * s->d * 2);
    }
    hdr_add(h, s->arch->final_norm, "F16", 1, s->d, 0, (uint64_t)s->d * 2);
    if (s->arch->final_norm_bias) hdr_add(h, s->arch->final_norm_bias, "F16", 1, s->d, 0, (uint64_t)s->d * 2);
    if (!s->tied) hdr_add(h, s->arch->lm_head, "F16", 2, s->vocab, s->d, (uint64_t)s->vocab * s->d * 2);
}

/* The GPU driver's default batch (pipeline_gpu.c): 16384 tokens at d = 4096, fewer for wider models. */
static int gpu_default_tokens(int d) {
    long long bt = 16384LL * 4096 * 4096 / ((long long)d * d);
    return (int)(bt > 16384 ? 16384 : bt < 1 ? 1 : bt);
}

/* qc_gpu_fwd_bytes (gpu_forward.cu), the scratch of the GPU forward for `seqs` sequences. */
static uint64_t gpu_fwd_bytes(const shapes *s, int seqs) {
    uint64_t rows = (uint64_t)seqs * s->T, T = (uint64_t)s->T;
    uint64_t attn = 2 * (uint64_t)s->qd + 2 * (uint64_t)s->kvd, mlp = 2 * (uint64_t)s->ff;
    uint64_t per_head = T * T * 6, hc = ((uint64_t)256 << 20) / per_head;
    if (hc < 1) hc = 1;
    if (hc > (uint64_t)(s->kvd / s->hd)) hc = (uint64_t)(s->kvd / s->hd);
    uint64_t rope = 2 * T * (uint64_t)(s->hd / 2) * 4;
    bool shared = s->cfg && s->L_moe > 0 && s->cfg->shared_expert_intermediate_size > 0;
    /* Gemma: block outputs before the post norms; Qwen2-MoE: the shared expert's output */
    uint64_t post = s->norm_len[QC_NORM_ATTN_POST] || shared ? rows * s->d * 4 : 0;
    uint64_t moe = 0;
    if (s->L_moe > 0) /* logits, routing (4 arrays), gathered rows fp16, expert and block outputs f32, gate logits */
        moe = rows * (uint64_t)s->E * 4 + 4 * rows * (uint64_t)s->topk * 4 + rows * s->d * 2 + 2 * rows * s->d * 4 +
              rows * 4;
    return rows * s->d * 2 + rows * (attn > mlp ? attn : mlp) * 2 + hc * T * T * 6 + rope * (s->rope_local ? 2 : 1) +
           post + moe;
}

/* qc_gpu_solver_bytes_nk (gptq_gpu.cu): Hbak, Wp, Err, codes, scales/zf, perm/dead, cuSOLVER workspace,
 * info, reduction partials, the loss per row. */
static uint64_t gpu_solver_bytes(const shapes *s) {
    uint64_t N = (uint64_t)s->Nmax, K = (uint64_t)s->Kmax, nk = s->nkmax;
    uint64_t gcap = N > nk / 32 ? N : nk / 32, ws = K * 256 + 65536;
    return 4 * K * K + 4 * nk + 4 * 128 * N + nk + 2 * 4 * gcap + 2 * 4 * K + 4 * ws + 2 * sizeof(int) +
           257 * sizeof(double) + N * sizeof(double);
}

/* qc_gpu_layer_bytes: one layer slot, fp16 weights + fp32 biases and norms, each 256-aligned. */
static uint64_t gpu_slot_bytes(const shapes *s) {
    uint64_t off = 0;
    bool in_any[QC_LIN_COUNT]; /* the slot holds the linears some layer has (an MoE model may have no dense MLP) */
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        in_any[l] = !s->cfg;
        for (int i = 0; s->cfg && i < s->L && !in_any[l]; i++) in_any[l] = qc_linear_present(s->cfg, i, (qc_linear_id)l);
    }
    for (int l = 0; l < QC_LIN_COUNT; l++)
        if (in_any[l]) off = align256(off + (uint64_t)s->N[l] * s->K[l] * 2);
    for (int e = 0; s->L_moe > 0 && e < 3 * s->E; e++) off = align256(off + (uint64_t)s->mff * s->d * 2);
    for (int l = 0; l < QC_LIN_COUNT; l++)
        if (in_any[l] && s->bias[l]) off = align256(off + (uint64_t)s->N[l] * 4);
    for (int k = 0; k < QC_NORM_COUNT; k++)
        if (s->norm_len[k]) off = align256(off + (uint64_t)s->norm_len[k] * 4);
    for (int k = 0; k < QC_NORM_COUNT && s->norm_bias; k++) /* LayerNorm biases, after the weights */
        if (s->norm_len[k]) off = align256(off + (uint64_t)s->norm_len[k] * 4);
    if (s->L_moe > 0) { /* the router and the shared expert's gate, fp16 */
        off = align256(off + (uint64_t)s->E * s->d * 2);
        if (s->arch->moe->shared_gate) off = align256(off + (uint64_t)s->d * 2);
    }
    return off;
}

static qc_status shapes_make(const qc_plan_in *in, shapes *s) {
    const qc_model *m = in->m;
    const qc_model_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    s->L = c->n_layers;
    s->d = c->hidden_size;
    s->hd = c->head_dim;
    s->qd = c->n_heads * c->head_dim;
    s->kvd = c->n_kv_heads * c->head_dim;
    s->ff = c->intermediate_size;
    s->vocab = c->vocab_size;
    s->T = in->seqlen;
    s->n = in->nsamples;
    s->rows = (uint64_t)in->nsamples * (uint64_t)in->seqlen;
    s->tied = c->tie_word_embeddings;
    s->arch = qc_arch_desc_of(c->arch);
    s->cfg = c;
    s->layers = qc_layers_path(c);
    s->norm_bias = qc_norm_has_bias(c);
    s->stride = qc_arch_n_lin(c);
    if (s->arch->moe) {
        s->E = c->n_experts;
        s->topk = c->n_experts_per_tok;
        s->mff = c->moe_intermediate_size;
        for (int i = 0; i < s->L; i++) s->L_moe += qc_layer_is_moe(c, i);
        if (s->mff > s->ff) s->ff = s->mff; /* the forward's MLP buffers */
        if (c->shared_expert_intermediate_size > s->ff) s->ff = c->shared_expert_intermediate_size;
        s->moe_f32 = (uint64_t)s->E * 3 * s->mff * s->d * 4 + (uint64_t)(s->E + 1) * s->d * 4;
    }
    int N[QC_LIN_COUNT], K[QC_LIN_COUNT];
    bool bias[QC_LIN_COUNT];
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        qc_linear_shape(c, (qc_linear_id)l, &N[l], &K[l]);
        bias[l] = qc_linear_has_bias(c, (qc_linear_id)l);
        s->no_clip[l] = s->arch->lin[l].awq_no_clip;
        int row0;
        qc_linear_storage(c, (qc_linear_id)l, &s->tensor[l], &row0, &s->srows[l]);
        s->first[l] = row0 == 0;
    }
    s->n_caps = s->arch->n_caps;
    for (int k = 0; k < s->n_caps; k++) {
        s->k_caps[k] = s->arch->caps[k];
        s->capw[s->k_caps[k]] = qc_capture_width(c, s->k_caps[k]);
    }
    for (int k = 0; k < QC_NORM_COUNT; k++)
        s->norm_len[k] = qc_norm_present(c, (qc_norm_id)k) ? qc_norm_dim(c, (qc_norm_id)k) : 0;
    s->rope_local = c->rope_local_theta > 0.0;
    qc_pipeline_opts po = {.method = in->method, .format = in->format};
    po.q.bits = in->bits;
    po.q.group_size = in->group_size;
    s->Kmax = s->ff > s->d ? s->ff : s->d;
    if (s->qd > s->Kmax) s->Kmax = s->qd;
    s->Nmax = s->Kmax;
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        s->N[l] = N[l];
        s->K[l] = K[l];
        s->bias[l] = bias[l];
        s->G[l] = in->group_size > 0 ? K[l] / in->group_size : 1;
        const char *why = NULL;
        if (!qc_linear_present(c, 0, (qc_linear_id)l)) continue; /* OPT's gate */
        s->quant[l] = qc_pl_packable(&po, N[l], K[l], &why);
        if (s->quant[l] || in->method == QC_METHOD_AWQ) s->cap_used[qc_linear_input(c, (qc_linear_id)l)] = true;
        uint64_t nk = (uint64_t)N[l] * K[l];
        s->nk_sum += nk;
        if (nk > s->nkmax) s->nkmax = nk;
        s->layer_f32 += 4 * nk + (bias[l] ? 4 * (uint64_t)N[l] : 0);
    }
    for (int k = 0; k < QC_NORM_COUNT; k++) s->layer_f32 += (s->norm_bias ? 8 : 4) * (uint64_t)s->norm_len[k];
    s->layer_f32 += s->moe_f32; /* an upper bound: the seven slots and the experts */
    for (int j = 0; j < 3 && s->E; j++) {
        const char *why = NULL;
        s->mquant[j] = qc_pl_packable(&po, j == 2 ? s->d : s->mff, j == 2 ? s->mff : s->d, &why);
        uint64_t nk = (uint64_t)s->mff * s->d;
        if (nk > s->nkmax) s->nkmax = nk;
    }
    /* the decoder layers as stored: what the CPU driver leaves resident, the GPU loader's staging */
    char name[256];
    for (int i = 0; i < s->L; i++) {
        uint64_t sum = 0, pin = 0;
        if (qc_layer_is_moe(c, i)) { /* experts (per expert, or fused 3-D: the same bytes), router, shared gate */
            char path[128];
            for (int e = 0; e < s->E; e++)
                for (int j = 0; j < 3; j++) {
                    snprintf(name, sizeof name, "%s.%d.%s.weight", s->layers, i,
                             qc_linear_path(c, QC_LIN_EXPERT(e, j), path, sizeof path));
                    uint64_t b = tensor_bytes(m, name, (uint64_t)s->mff * s->d, NULL);
                    sum += b;
                    pin = align256(pin + b);
                }
            sum += tensor_bytes(m, "", (uint64_t)(s->E + 1) * s->d, NULL);
        }
        for (int l = 0; l < QC_LIN_COUNT; l++) {
            qc_dtype dt;
            if (!qc_linear_present(c, i, (qc_linear_id)l)) continue;
            if (!s->first[l]) continue; /* a fused tensor is stored (and staged) once */
            snprintf(name, sizeof name, "%s.%d.%s.weight", s->layers, i, s->tensor[l]);
            uint64_t b = tensor_bytes(m, name, (uint64_t)s->srows[l] * K[l], &dt);
            sum += b;
            pin = align256(pin + b);
            if (b > s->tensor_max) s->tensor_max = b;
            if (dt == QC_DTYPE_F32 && b > s->raw_max) s->raw_max = b; /* F32 -> F16 through the staging buffer */
            if (bias[l]) {
                snprintf(name, sizeof name, "%s.%d.%s.bias", s->layers, i, s->tensor[l]);
                b = tensor_bytes(m, name, (uint64_t)s->srows[l], &dt);
                sum += b;
                pin = align256(pin + b);
                if (dt != QC_DTYPE_F32 && b > s->raw_max) s->raw_max = b;
            }
        }
        for (int k = 0; k < QC_NORM_COUNT; k++) {
            if (!s->norm_len[k]) continue;
            qc_dtype dt;
            snprintf(name, sizeof name, "%s.%d.%s.weight", s->layers, i, s->arch->norm[k].name);
            uint64_t b = tensor_bytes(m, name, (uint64_t)s->norm_len[k], &dt);
            sum += b;
            pin = align256(pin + b);
            if (dt != QC_DTYPE_F32 && b > s->raw_max) s->raw_max = b;
            if (!s->norm_bias) continue;
            snprintf(name, sizeof name, "%s.%d.%s.bias", s->layers, i, s->arch->norm[k].name);
            b = tensor_bytes(m, name, (uint64_t)s->norm_len[k], &dt);
            sum += b;
            pin = align256(pin + b);
            if (dt != QC_DTYPE_F32 && b > s->raw_max) s->raw_max = b;
        }
        s->stored_sum += sum;
        if (pin > s->pinned_max) s->pinned_max = pin;
    }
    s->embed_bytes = m->embed ? m->embed->nbytes : (uint64_t)s->vocab * s->d * 2;
    s->head_bytes = s->tied ? 0 : m->lm_head ? m->lm_head->nbytes : (uint64_t)s->vocab * s->d * 2;
    st_hdr h = {.meta = SHARD_META};
    layer_tensors(in, s, s->L > 0 ? s->L - 1 : 0, &h);
    s->part_data = h.data;
    s->part_file = hdr_file(&h);
    s->part_tensors = h.n;
    st_hdr hb = {.meta = SHARD_META};
    base_tensors(s, &hb);
    s->base_data = hb.data;
    s->base_file = hdr_file(&hb);
    return QC_OK;
}

/* ---- item lists ---- */
typedef struct {
    qc_plan_item it[QC_PLAN_MAX_ITEMS];
    int          n;
    uint64_t     total, file;
    char         phase[48];
} items;

static void add(items *l, qc_plan_kind kind, uint64_t bytes, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void add(items *l, qc_plan_kind kind, uint64_t bytes, const char *fmt, ...) {
    if (bytes == 0) return;
    l->total += bytes;
    if (kind == QC_PLAN_FILE) l->file += bytes;
    QC_ASSERT(l->n < QC_PLAN_MAX_ITEMS);
    qc_plan_item *it = &l->it[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->what, sizeof it->what, fmt, ap);
    va_end(ap);
    it->bytes = bytes;
    it->kind = kind;
}

static void copy_items(const items *l, qc_plan_item *dst, int *n) {
    memcpy(dst, l->it, sizeof *dst * (size_t)l->n);
    *n = l->n;
}

/* ---- host memory ---- */

/* In every phase: the process, the tokenizer, the calibration tokens, the CUDA runtime. */
static void host_common(const qc_plan_in *in, const shapes *s, int threads, items *l) {
    add(l, QC_PLAN_FIXED, PROCESS_BASE + BLAS_PER_THREAD * (uint64_t)threads,
        "qcal process (binary, libraries, %d BLAS thread buffers)", threads);
    struct stat sb;
    char *tp = qc_path_join(in->m->dir, "tokenizer.json");
    if (tp && stat(tp, &sb) == 0)
        add(l, QC_PLAN_FIXED, (uint64_t)sb.st_size * TOKENIZER_FACTOR, "tokenizer (%.1f MiB json)", sb.st_size / 1048576.0);
    free(tp);
    add(l, QC_PLAN_ROWS, s->rows * 4, "calibration tokens [%d, %d] i32", s->n, s->T);
    if (in->device >= 0) add(l, QC_PLAN_FIXED, CUDA_HOST, "CUDA runtime and libraries (host side)");
}

/* --eval: the fake-quantized layers (loader-exact weights in FP32, F16-rounded norms and biases). */
static void add_fake(items *l, const shapes *s) {
    add(l, QC_PLAN_EVAL, (uint64_t)s->L * s->layer_f32, "fake-quantized layers, %d x %.1f MiB FP32", s->L,
        s->layer_f32 / 1048576.0);
}

/* The GPU driver's host copy of X, the source of x.bin (pinned; only with the resume state on). */
static void add_xh(items *l, const qc_plan_in *in, const shapes *s) {
    if (in->save_every >= 0)
        add(l, QC_PLAN_SNAP, s->rows * s->d * 4, "host copy of X for x.bin [%" PRIu64 ", %d] f32 (pinned)", s->rows, s->d);
}

/* qc_fwd_create's scratch for `seqs` sequences of T tokens (model.c). */
static uint64_t cpu_fwd_bytes(const shapes *s, int seqs, int T) {
    uint64_t rows = (uint64_t)seqs * T, blk = (uint64_t)(T < 256 ? T : 256);
    return 4 * rows * (2 * (uint64_t)s->d + 2 * (uint64_t)s->qd + 2 * (uint64_t)s->kvd + 2 * (uint64_t)s->ff) +
           4 * blk * T + 2 * 4 * (uint64_t)T * (uint64_t)(s->hd / 2) * (s->rope_local ? 2 : 1);
}

/* The quantized linears' largest working sets (pipeline.c, gptq.c, awq.c). */
typedef struct {
    uint64_t hw, wo, solver, qlin, clip, awq_search_w;
} linear_ws;

static void linear_ws_make(const qc_plan_in *in, const shapes *s, linear_ws *w) {
    memset(w, 0, sizeof *w);
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        if (!s->quant[l]) continue;
        uint64_t N = (uint64_t)s->N[l], K = (uint64_t)s->K[l], G = (uint64_t)s->G[l];
        bool gptq = in->method == QC_METHOD_GPTQ || (in->method == QC_METHOD_AWQ && in->awq_gptq);
        if ((in->method != QC_METHOD_AWQ || gptq) && K * K * 4 > w->hw) w->hw = K * K * 4; /* memcpy(Hw, H) */
        if (N * K * 4 > w->wo) w->wo = N * K * 4;                               /* Wo, and tmp in quad_form */
        uint64_t sv = gptq ? K * K * 4 + N * K * 4 + 2 * 128 * N * 4 + G * N * 4 + 3 * K * 4
                                                   : G * N * 4;                 /* Hbak, Wt, Err, Orig, zf */
        if (sv > w->solver) w->solver = sv;
        uint64_t q = N * K + 2 * G * N * 4 + K * 4;                              /* codes, scales, zeros, g_idx */
        if (q > w->qlin) w->qlin = q;
        if (in->method == QC_METHOD_AWQ && !s->no_clip[l]) {
            uint64_t ts = s->rows < 512 ? s->rows : 512, gs = in->group_size > 0 ? (uint64_t)in->group_size : K;
            uint64_t cl = ts * gs * 4 + 2 * ts * N * 4 + 2 * N * gs * 4 + 4 * N * 4;
            if (cl > w->clip) w->clip = cl;
        }
    }
    if (in->method == QC_METHOD_AWQ) { /* the search's scaled copies of a group's weights (Wc) */
        uint64_t qkv = (uint64_t)(s->qd + 2 * s->kvd) * s->d * 4, gu = 2 * (uint64_t)s->ff * s->d * 4;
        uint64_t dn = (uint64_t)s->d * s->ff * 4;
        w->awq_search_w = qkv > gu ? qkv : gu;
        if (dn > w->awq_search_w) w->awq_search_w = dn;
    }
}

/* The evaluation after the run (cmd_quantize.c: the fake-quantized model, then the reloaded checkpoint,
 * both on the CPU through eval.c). */
static void host_eval(const qc_plan_in *in, const shapes *s, int threads, bool cpu_pages, uint64_t out_layers,
                      items *l) {
    snprintf(l->phase, sizeof l->phase, "evaluation of the checkpoint");
    host_common(in, s, threads, l);
    int Te = in->eval_seqlen;
    add_fake(l, s);
    if (cpu_pages) add(l, QC_PLAN_FILE, s->stored_sum, "model's decoder layers (mmapped file pages)");
    add(l, QC_PLAN_FILE, s->embed_bytes + s->head_bytes, "model's embedding%s (mmapped file pages)",
        s->tied ? "" : " and head");
    struct stat sb;
    if (in->eval_text && stat(in->eval_text, &sb) == 0)
        add(l, QC_PLAN_EVAL, 2 * (uint64_t)sb.st_size, "evaluation text and its tokens (%.1f MiB)", sb.st_size / 1048576.0);
    add(l, QC_PLAN_EVAL, (uint64_t)s->vocab * s->d * 4 + 64ull * s->vocab * 4, "output head FP32 [%d, %d] + logits chunk",
        s->vocab, s->d);
    add(l, QC_PLAN_EVAL, cpu_fwd_bytes(s, 1, Te) + (uint64_t)Te * s->d * 4, "forward scratch, one window of %d", Te);
    add(l, QC_PLAN_EVAL, s->layer_f32, "a checkpoint layer dequantized to FP32");
    add(l, QC_PLAN_FILE, out_layers + (uint64_t)s->vocab * s->d * 2 * (s->tied ? 1 : 2),
        "checkpoint's tensors (mmapped file pages)");
}

static void host_phases(const qc_plan_in *in, const shapes *s, int threads, uint64_t out_layers, qc_plan *p) {
    items ph[5];
    int np = 0;
    memset(ph, 0, sizeof ph);
    linear_ws w;
    linear_ws_make(in, s, &w);
    bool gpu = in->device >= 0, awq = in->method == QC_METHOD_AWQ;
    uint64_t reports = (uint64_t)s->L * (s->stride ? s->stride : QC_LIN_COUNT) * sizeof(qc_linear_report);
    uint64_t f16_base = (uint64_t)s->vocab * s->d * 2 * (s->tied ? 1 : 2);
    uint64_t page_max = s->embed_bytes > s->head_bytes ? s->embed_bytes : s->head_bytes;
    if (!gpu) {
        /* pipeline.c: X, xs, the forward scratch; base.safetensors built from F16 copies of embed/head */
        items *e = &ph[np++];
        snprintf(e->phase, sizeof e->phase, "embedding + base part");
        host_common(in, s, threads, e);
        /* the batch copy, the forward scratch and the solver copies are allocated but not touched yet */
        add(e, QC_PLAN_ROWS, s->rows * s->d * 4, "activations X [%" PRIu64 ", %d] f32", s->rows, s->d);
        add(e, QC_PLAN_FIXED, f16_base + reports + (256u << 10), "base part: embedding%s as F16", s->tied ? "" : " + head");
        add(e, QC_PLAN_FILE, s->tied ? s->embed_bytes : s->head_bytes, "%s (mmapped file pages, dropped after)",
            s->tied ? "embedding" : "head");

        items *t = &ph[np++];
        snprintf(t->phase, sizeof t->phase, "layer %d of %d", s->L, s->L);
        host_common(in, s, threads, t);
        add(t, QC_PLAN_ROWS, s->rows * s->d * 4, "activations X [%" PRIu64 ", %d] f32", s->rows, s->d);
        if (!awq) add(t, QC_PLAN_BATCH, s->brows * s->d * 4, "batch copy of X [%" PRIu64 ", %d] f32", s->brows, s->d);
        add(t, QC_PLAN_BATCH, cpu_fwd_bytes(s, s->batch, s->T), "forward scratch, %d x %d tokens", s->batch, s->T);
        uint64_t hs = 0;
        for (int k = 0; k < s->n_caps; k++)
            if (s->cap_used[s->k_caps[k]]) hs += 4 * (uint64_t)cap_width(s, s->k_caps[k]) * cap_width(s, s->k_caps[k]);
        add(t, QC_PLAN_FIXED, hs, "input Hessians, one per capture point");
        if (s->L_moe > 0) {
            add(t, QC_PLAN_FIXED, 4 * (uint64_t)s->E * ((uint64_t)s->d * s->d + (uint64_t)s->mff * s->mff) +
                                      4 * (uint64_t)s->d * s->d,
                "MoE: %d experts' input Hessians and the block input's", s->E);
            add(t, QC_PLAN_BATCH, 4 * s->brows * (2 * (uint64_t)s->d + s->E + 2 * (uint64_t)s->topk + 2),
                "MoE: gathered rows, expert outputs, routing [%" PRIu64 " rows]", s->brows);
        }
        add(t, QC_PLAN_FIXED, w.hw + 2 * w.wo, "solver copies (Hw %.0f MiB, Wo, tmp)", w.hw / 1048576.0);
        add(t, QC_PLAN_FIXED, s->layer_f32, "the layer in FP32");
        add(t, QC_PLAN_FIXED, w.solver + w.qlin + w.clip + s->part_data + reports,
            "%s working set, codes, the layer's part", awq ? "AWQ clip" : in->method == QC_METHOD_GPTQ ? "GPTQ" : "RTN");
        if (awq) {
            add(t, QC_PLAN_ROWS, s->rows * (2 * (uint64_t)s->d + s->qd + s->ff) * 4,
                "AWQ: every linear's input [%" PRIu64 ", 2d+q+f] f32", s->rows);
            add(t, QC_PLAN_ROWS, 2 * s->rows * s->d * 4, "AWQ: reference and trial outputs [%" PRIu64 ", %d] f32 x 2",
                s->rows, s->d);
            add(t, QC_PLAN_FIXED, w.awq_search_w, "AWQ: a group's scaled weights");
            if (s->L_moe > 0) {
                add(t, QC_PLAN_ROWS, s->rows * (uint64_t)s->topk * (s->d + (uint64_t)s->mff) * 4 * 2,
                    "AWQ: the experts' routed inputs (grown by doubling) [%" PRIu64 " x %d rows]", s->rows, s->topk);
                add(t, QC_PLAN_FIXED, (uint64_t)s->E * 2 * s->mff * s->d * 4, "AWQ: the MoE group's scaled weights");
            }
        }
        if (in->keep_fake)
            add_fake(t, s);
        add(t, QC_PLAN_FILE, s->stored_sum, "decoder layers (mmapped file pages, never dropped)");
    } else {
        /* pipeline_gpu.c: the loader's pinned staging; the base part on a host thread beside the first layers */
        items *e = &ph[np++];
        snprintf(e->phase, sizeof e->phase, "base part beside the first layers");
        host_common(in, s, threads, e);
        add(e, QC_PLAN_FIXED, s->pinned_max, "pinned staging: one layer as stored");
        add_xh(e, in, s);
        add(e, QC_PLAN_FIXED, f16_base, "base part: embedding%s as F16", s->tied ? "" : " + head");
        add(e, QC_PLAN_FILE, page_max, "%s (mmapped file pages, dropped after)", s->tied ? "embedding" : "head");
        add(e, QC_PLAN_FIXED, 2 * s->part_data + reports, "two layer parts (built, being written)");
        add(e, QC_PLAN_FILE, s->tensor_max, "a layer tensor being staged (file pages)");
        if (in->keep_fake) add(e, QC_PLAN_EVAL, s->layer_f32, "a fake-quantized layer");

        items *t = &ph[np++];
        snprintf(t->phase, sizeof t->phase, "layer %d of %d", s->L, s->L);
        host_common(in, s, threads, t);
        add(t, QC_PLAN_FIXED, s->pinned_max, "pinned staging: one layer as stored");
        add_xh(t, in, s);
        add(t, QC_PLAN_FIXED, 2 * s->part_data + w.qlin + reports, "two layer parts, a linear's codes");
        add(t, QC_PLAN_FILE, s->tensor_max, "a layer tensor being staged (file pages)");
        if (in->keep_fake)
            add_fake(t, s);
    }
    /* checkpoint assembly: parts mmapped and streamed one tensor at a time (ckpt_write.c) */
    items *a = &ph[np++];
    snprintf(a->phase, sizeof a->phase, "checkpoint assembly");
    host_common(in, s, threads, a);
    if (in->keep_fake)
        add_fake(a, s);
    if (!gpu) add(a, QC_PLAN_FILE, s->stored_sum, "decoder layers (mmapped file pages)");
    add(a, QC_PLAN_FILE, (uint64_t)s->vocab * s->d * 2, "the embedding being copied (file pages, the largest tensor)");
    if (in->keep_fake && in->eval_seqlen > 0) host_eval(in, s, threads, !gpu, out_layers, &ph[np++]);
    int best = 0;
    for (int i = 1; i < np; i++)
        if (ph[i].total > ph[best].total) best = i;
    p->host_peak = ph[best].total;
    p->host_required = ph[best].total - ph[best].file;
    for (int i = 0; i < np; i++) /* the RAM that must fit: the largest phase without its file pages */
        if (ph[i].total - ph[i].file > p->host_required) p->host_required = ph[i].total - ph[i].file;
    snprintf(p->host_phase, sizeof p->host_phase, "%s", ph[best].phase);
    copy_items(&ph[best], p->host, &p->n_host);
}

/* ---- GPU memory (pipeline_gpu.c in its allocation order, gpu_forward.cu, gptq_gpu.cu) ---- */
static void gpu_memory(const qc_plan_in *in, shapes *s, uint64_t dev_free, qc_plan *p) {
    items fx = {0};
    bool awq = in->method == QC_METHOD_AWQ;
    uint64_t slot = gpu_slot_bytes(s);
    add(&fx, QC_PLAN_FIXED, 2 * slot, "two layer slots (fp16), %.0f MiB each", slot / 1048576.0);
    add(&fx, QC_PLAN_FIXED, s->raw_max, "upload staging for converted tensors");
    add(&fx, QC_PLAN_ROWS, s->rows * s->d * 4, "activations X [%" PRIu64 ", %d] f32", s->rows, s->d);
    add(&fx, QC_PLAN_FIXED, gpu_solver_bytes(s), "GPTQ solver (Hessian copy %d^2, weight, codes, workspace)", s->Kmax);
    if (in->method == QC_METHOD_GPTQ)
        add(&fx, QC_PLAN_FIXED, 4 * (uint64_t)s->d * s->d, "a Hessian copy for q/k/v and gate/up [%d, %d]", s->d, s->d);
    add(&fx, QC_PLAN_FIXED, 2 * 4 * s->nkmax, "a weight in fp32 and its copy [%" PRIu64 "] x 2", s->nkmax);
    if (awq) {
        add(&fx, QC_PLAN_ROWS, s->rows * (2 * (uint64_t)s->d + s->qd + s->ff) * 2, "AWQ: every linear's input, fp16");
        add(&fx, QC_PLAN_ROWS, 2 * s->rows * s->d * 4, "AWQ: reference and trial outputs f32");
        add(&fx, QC_PLAN_FIXED, 3 * s->nkmax * 2 + (uint64_t)s->Kmax * 4, "AWQ: trial weights, scales");
    }
    /* the batch: the default, halved while its scratch does not fit what is left (pipeline_gpu.c) */
    int bt = in->batch_tokens > 0 ? in->batch_tokens : gpu_default_tokens(s->d);
    int batch = bt / s->T < 1 ? 1 : bt / s->T;
    if (batch > s->n) batch = s->n;
    if (dev_free > 0) {
        uint64_t ctx = QC_PLAN_CUDA_CONTEXT + QC_PLAN_CUDA_WORKSPACES; /* in dev_free's "used" already */
        uint64_t fr = dev_free + ctx > fx.total + ctx ? dev_free - fx.total : 0;
        uint64_t reserve = 4 * ((uint64_t)s->Kmax * s->Kmax + 3 * (uint64_t)s->d * s->d) + ((uint64_t)1 << 30);
        uint64_t budget = fr > reserve ? fr - reserve : 0;
        while (batch > 1 && gpu_fwd_bytes(s, batch) + (uint64_t)batch * s->T * s->d * 4 > budget) batch /= 2;
    }
    s->batch = batch;
    s->brows = (uint64_t)batch * s->T;
    add(&fx, QC_PLAN_BATCH, s->brows * s->d * 4, "batch of activations [%" PRIu64 ", %d] f32", s->brows, s->d);
    add(&fx, QC_PLAN_BATCH, gpu_fwd_bytes(s, batch), "forward scratch, %d x %d tokens", batch, s->T);
    /* what comes and goes: the embedding table while X is gathered, the Hessians while a group is solved */
    uint64_t emb = s->embed_bytes + s->rows * 4, hess = 0, hess_max = 0;
    for (int k = 0; k < s->n_caps; k++) {
        if (!s->cap_used[s->k_caps[k]]) continue;
        uint64_t h = 4 * (uint64_t)cap_width(s, s->k_caps[k]) * cap_width(s, s->k_caps[k]);
        hess += h;
        if (h > hess_max) hess_max = h;
    }
    if (!awq && s->L_moe > 0) { /* the experts' (gate/up with the block input's, down) */
        uint64_t gu = 4 * ((uint64_t)s->E + 1) * s->d * s->d, dn = 4 * (uint64_t)s->E * s->mff * s->mff;
        hess += gu + dn;
        hess_max = gu > hess_max ? gu : hess_max;
        hess_max = dn > hess_max ? dn : hess_max;
    }
    if (!awq && in->true_sequential) hess = hess_max; /* freed after each group */
    items peak = fx;
    if (emb >= hess) {
        add(&peak, QC_PLAN_FIXED, s->embed_bytes, "embedding table (while X is gathered)");
        add(&peak, QC_PLAN_ROWS, s->rows * 4, "calibration token ids");
        snprintf(p->gpu_phase, sizeof p->gpu_phase, "embedding");
    } else {
        add(&peak, QC_PLAN_FIXED, hess, "%s", !awq && in->true_sequential ? "the largest group's input Hessian"
                                                                          : "input Hessians, every capture point");
        snprintf(p->gpu_phase, sizeof p->gpu_phase, "Hessians of a layer");
    }
    p->gpu_own = peak.total;
    add(&peak, QC_PLAN_FIXED, QC_PLAN_CUDA_CONTEXT, "CUDA context");
    add(&peak, QC_PLAN_FIXED, QC_PLAN_CUDA_WORKSPACES, "cuBLAS/cuSOLVER workspaces, allocation granularity");
    p->gpu_peak = peak.total;
    copy_items(&peak, p->gpu, &p->n_gpu);
}

/* ---- disk ---- */
static const char *const k_side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json",
};

static uint64_t file_size(const char *dir, const char *name) {
    char *pth = qc_path_join(dir, name);
    struct stat sb;
    uint64_t n = pth && stat(pth, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    free(pth);
    return n;
}

static void disk(const qc_plan_in *in, const shapes *s, qc_plan *p, uint64_t *out_layers) {
    items w = {0}, o = {0};
    uint64_t x = 64 + s->rows * s->d * 4;
    add(&w, QC_PLAN_FIXED, s->base_file, "base.safetensors (embedding%s F16)", s->tied ? "" : ", head");
    add(&w, QC_PLAN_FIXED, (uint64_t)s->L * s->part_file, "%d layer parts, %.2f MiB each", s->L, s->part_file / 1048576.0);
    add(&w, QC_PLAN_FIXED, (uint64_t)s->L * ((s->stride ? s->stride : QC_LIN_COUNT) * 300 + 3) + 1200,
        "per-layer reports, fingerprint, status (JSON)");
    p->snapshot = in->save_every >= 0;
    if (p->snapshot) add(&w, QC_PLAN_SNAP, x, "activation snapshot x.bin [%" PRIu64 ", %d] f32", s->rows, s->d);
    p->work_disk_final = w.total;
    if (p->snapshot) add(&w, QC_PLAN_SNAP, x, "x.bin.tmp while the next snapshot replaces it");
    p->work_disk = w.total;
    copy_items(&w, p->work, &p->n_work);

    /* the checkpoint: the base and every part's tensors in shards (the metadata: format, the gptq_* or awq
     * settings, the quantizer), the configs, the copied side files */
    st_hdr ck = {.meta = SHARD_META, .max_shard = in->max_shard_bytes ? in->max_shard_bytes : (uint64_t)4096 << 20};
    base_tensors(s, &ck);
    for (int li = 0; li < s->L; li++) layer_tensors(in, s, li, &ck);
    *out_layers = ck.all_data - s->base_data;
    /* part shards (ckpt_write.h): the data exceed one shard and every part fits one, so the parts become the
     * shards, hard-linked (no new blocks) where the work dir is on the checkpoint's file system and copied
     * elsewhere (counted as copies when that is unknown). The parts of an older build resumed take the copy
     * the plan then does not count; a resume across builds is refused unless the version is the same. */
    bool part_shards = ck.all_data > ck.max_shard && s->base_data <= ck.max_shard && s->L + 1 <= 99999;
    uint64_t parts_file = s->base_file;
    for (int li = 0; part_shards && li < s->L; li++) {
        st_hdr h = {.meta = SHARD_META};
        layer_tensors(in, s, li, &h);
        part_shards = h.data <= ck.max_shard;
        parts_file += hdr_file(&h);
    }
    if (part_shards) {
        p->n_shards = s->L + 1;
        add(&o, QC_PLAN_FIXED, p->same_fs ? 0 : parts_file, "%d shards: the part files, %s", p->n_shards,
            p->same_fs ? "hard-linked (no new blocks)" : "copied from the work dir's file system");
    } else {
        p->n_shards = ck.shards + 1;
        add(&o, QC_PLAN_FIXED, hdr_total(&ck), "%d shard%s: %d tensors (packed linears, F16 rest)", p->n_shards,
            p->n_shards == 1 ? "" : "s", ck.all_n);
    }
    if (p->n_shards > 1) add(&o, QC_PLAN_FIXED, ck.index + 64, "model.safetensors.index.json");
    uint64_t side = 0;
    for (size_t i = 0; i < sizeof k_side_files / sizeof *k_side_files; i++) side += file_size(in->m->dir, k_side_files[i]);
    add(&o, QC_PLAN_FIXED, side, "tokenizer and generation files (copied)");
    add(&o, QC_PLAN_FIXED, file_size(in->m->dir, "config.json") + 1520 + 1480 + 1000 + 290 * (uint64_t)s->L * (s->stride ? s->stride : QC_LIN_COUNT) +
                               (in->eval_seqlen > 0 ? 200 : 0),
        "config.json, quantize_config.json, qcal_report.json");
    p->out_disk = o.total;
    copy_items(&o, p->outd, &p->n_out);
}

/* ---- time ---- */
static double cpu_sgemm_gflops(void) {
    enum { NN = 512 };
    float *a = malloc(sizeof(float) * NN * NN), *b = malloc(sizeof(float) * NN * NN), *c = malloc(sizeof(float) * NN * NN);
    double best = 0;
    if (a && b && c) {
        for (int i = 0; i < NN * NN; i++) {
            a[i] = (float)(i % 7) * 0.1f;
            b[i] = (float)(i % 5) * 0.1f;
            c[i] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NN, NN, NN, 1.0f, a, NN, b, NN, 0.0f, c, NN); /* warm-up */
        double t_end = qc_time_now() + 0.15;
        do {
            double t0 = qc_time_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NN, NN, NN, 1.0f, a, NN, b, NN, 0.0f, c, NN);
            double dt = qc_time_now() - t0;
            if (dt > 0 && 2.0 * NN * NN * NN / dt / 1e9 > best) best = 2.0 * NN * NN * NN / dt / 1e9;
        } while (qc_time_now() < t_end);
    }
    free(a);
    free(b);
    free(c);
    return best > 0 ? best : 50.0;
}

/* FLOPs of one pass of each part of a layer over R rows of T-token sequences. */
typedef struct {
    double qkv, att, o, gu, dn;
} layer_flops;

static layer_flops flops_of(const shapes *s, double R, double T) {
    layer_flops f;
    f.qkv = 2 * R * s->d * (double)(s->qd + 2 * s->kvd);
    f.att = 2 * R * T * s->qd; /* QK^T and PV, causal half each */
    f.o = 2 * R * s->qd * (double)s->d;
    f.gu = 4 * R * s->d * (double)s->ff;
    f.dn = 2 * R * s->ff * (double)s->d;
    if (s->L_moe > 0) { /* sparse layers: each row through top-k experts (+ the router), averaged over layers */
        double part = (double)s->L_moe / s->L, ff_moe = (double)s->topk * s->mff;
        f.gu = (1 - part) * f.gu + part * (4 * R * s->d * ff_moe + 2 * R * s->d * (double)s->E);
        f.dn = (1 - part) * f.dn + part * 2 * R * ff_moe * s->d;
    }
    return f;
}

/* GPTQ's solve per layer: lazy updates N K^2, the error report's two quadratic forms 4 N K^2, the factors
 * 4/3 K^3; the in-block sweep N K B is scalar code (returned apart). */
static double solve_flops(const shapes *s, bool gptq, double *scalar) {
    double fl = 0, sc = 0;
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        if (!s->quant[l]) continue;
        double N = s->N[l], K = s->K[l];
        fl += 4 * N * K * K;
        if (gptq) {
            fl += N * K * K + 4.0 / 3.0 * K * K * K;
            sc += N * K * 128;
        }
    }
    for (int j = 0; j < 3 && s->L_moe > 0; j++) { /* the experts, averaged over layers */
        if (!s->mquant[j]) continue;
        double N = j == 2 ? s->d : s->mff, K = j == 2 ? s->mff : s->d, e = (double)s->E * s->L_moe / s->L;
        fl += e * 4 * N * K * K;
        if (gptq) {
            fl += e * (N * K * K + 4.0 / 3.0 * K * K * K);
            sc += e * N * K * 128;
        }
    }
    if (scalar) *scalar = sc;
    return fl;
}

static shapes llama8b_shapes(void) {
    shapes s;
    memset(&s, 0, sizeof s);
    s.L = 32;
    s.d = 4096;
    s.qd = 4096;
    s.kvd = 1024;
    s.ff = 14336;
    s.hd = 128;
    const int N[QC_LIN_COUNT] = {4096, 1024, 1024, 4096, 14336, 14336, 4096};
    const int K[QC_LIN_COUNT] = {4096, 4096, 4096, 4096, 4096, 4096, 14336};
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        s.N[l] = N[l];
        s.K[l] = K[l];
        s.quant[l] = true;
        s.nk_sum += (uint64_t)N[l] * K[l];
    }
    const qc_arch_desc *a = qc_arch_desc_of(QC_ARCH_LLAMA);
    s.arch = a;
    s.layers = a->layers;
    s.n_caps = a->n_caps;
    for (int k = 0; k < a->n_caps; k++) s.k_caps[k] = a->caps[k];
    s.capw[QC_LIN_Q] = s.capw[QC_LIN_GATE] = s.d;
    s.capw[QC_LIN_O] = s.qd;
    s.capw[QC_LIN_DOWN] = s.ff;
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        s.no_clip[l] = a->lin[l].awq_no_clip;
        s.first[l] = true;
        s.srows[l] = N[l];
        s.tensor[l] = a->lin[l].name;
    }
    s.norm_len[QC_NORM_ATTN] = s.norm_len[QC_NORM_MLP] = s.d;
    return s;
}

static void eta(const qc_plan_in *in, const shapes *s, double gflops, qc_plan *p) {
    bool gpu = in->device >= 0, awq = in->method == QC_METHOD_AWQ, gptq = in->method == QC_METHOD_GPTQ;
    double R = (double)s->rows, T = s->T, L = s->L;
    layer_flops f = flops_of(s, R, T);
    double hess = 0;
    for (int k = 0; k < s->n_caps; k++)
        if (s->cap_used[s->k_caps[k]]) hess += R * (double)cap_width(s, s->k_caps[k]) * cap_width(s, s->k_caps[k]);
    /* The AWQ search runs the attention and MLP modules once for the reference and once per grid point
     * over its windows; a one-linear module (down_proj, o_proj without GQA) over every window, on the
     * CPU from X^T X when there are at least K rows (pipeline.c: awq_search). */
    double nc = in->awq_candidates > 0 ? in->awq_candidates : 20;
    double sw = in->awq_search_samples > 0 && in->awq_search_samples < in->nsamples
                    ? (double)in->awq_search_samples / in->nsamples : 1.0;
    double search = (nc + 1) * sw * (f.qkv + f.att + f.o + f.gu + f.dn);
    for (int k = 0; k < 2; k++) {
        if (k == 0 && s->qd != s->kvd) continue; /* GQA: no v_proj -> o_proj group */
        double N = s->d, K = k == 0 ? s->qd : s->ff, one = k == 0 ? f.o : f.dn;
        search += !gpu && R >= K ? R * K * K + nc * 2 * N * K * K : (nc + 1) * one;
    }
    double clip = 0;
    for (int l = 0; l < QC_LIN_COUNT && awq; l++)
        if (s->quant[l] && !s->no_clip[l]) clip += 2.0 * s->N[l] * s->K[l] * (R < 512 ? R : 512) * 10;
    double scalar = 0, sol = solve_flops(s, gptq, &scalar);
    double written = (double)p->work_disk_final + (double)p->out_disk;
    /* the snapshots written: every layer with save_every 0 (the CLI's default), about one otherwise (both
     * drivers; the GPU's writer thread overlaps them with the next layer, counted here as if it did not) */
    int n_snap = !p->snapshot ? 0 : in->save_every == 0 ? s->L : 1;
    if (p->snapshot) written += ((double)n_snap - 1) * (64 + R * s->d * 4);
    double files = 2.0 * s->L + 8 + n_snap;
    if (!gpu) {
        double g = gflops * 1e9;
        double fwd = awq ? f.qkv + f.att + f.o + f.gu + f.dn
                         : in->true_sequential ? 4 * f.qkv + 4 * f.att + 3 * f.o + 2 * f.gu + f.dn
                                               : 2 * f.qkv + 2 * f.att + 2 * f.o + 2 * f.gu + f.dn;
        p->eta_embed = R * s->d * 4 / 2e9 + (double)s->vocab * s->d * (s->tied ? 1 : 2) / 3e8;
        p->eta_forward = L * fwd / (g * CPU_EFF_FORWARD);
        p->eta_hessian = L * hess / (g * CPU_EFF_SYRK);
        p->eta_solve = L * (sol + (awq ? search + clip : 0)) / (g * CPU_EFF_SOLVE) +
                       L * scalar / (CPU_SCALAR_GFLOPS * 1e9 * (p->threads > 0 ? p->threads : 1));
        p->eta_write = written / DISK_BYTES_PER_S + files * FSYNC_SECONDS;
    } else {
        shapes b = llama8b_shapes();
        /* true-sequential with the stash: each part of the layer once; without true-sequential the in-place
         * pass after the layer applies it whole again */
        double once = f.qkv + f.att + f.o + f.gu + f.dn;
        double sched = in->true_sequential ? once : 2 * once;
        double fwd = awq ? once / (H100_AWQ_FWD_TFLOPS * 1e12) : sched / (H100_FWD_TFLOPS * 1e12);
        p->eta_embed = H100_EMBED_S_8B * (double)s->embed_bytes / (128256.0 * 4096 * 2);
        p->eta_forward = L * fwd;
        p->eta_hessian = L * 2 * hess / (H100_HESS_TFLOPS * 1e12);
        if (awq) {
            shapes b2 = b;
            b2.rows = 23 * 512;
            b2.T = 512;
            layer_flops fb = flops_of(&b2, 23.0 * 512, 512);
            double sb = 21 * (fb.qkv + fb.att + fb.o + fb.gu + fb.dn + fb.dn); /* as measured: 20 points, all windows */
            p->eta_solve = L * H100_AWQ_SOLVE_S_8B * search / sb;
        } else {
            p->eta_solve = L * H100_SOLVE_S_8B * sol / solve_flops(&b, true, NULL);
        }
        /* the writer thread overlaps the parts and snapshots with the next layers' work: only what the disk
         * cannot take meanwhile shows */
        double busy = p->eta_forward + p->eta_hessian + p->eta_solve, disk = written / DISK_BYTES_PER_S;
        p->eta_write = L * H100_PACK_S_8B * (double)s->nk_sum / (double)b.nk_sum + (disk > busy ? disk - busy : 0) +
                       files * FSYNC_SECONDS;
    }
    if (in->keep_fake && in->eval_seqlen > 1) {
        double Te = in->eval_seqlen, tokens = 0;
        struct stat sb;
        if (in->eval_text && stat(in->eval_text, &sb) == 0) tokens = (double)sb.st_size / 4.0; /* ~4 bytes a token */
        double windows = floor(tokens / Te);
        if (in->eval_max_windows > 0 && windows > in->eval_max_windows) windows = in->eval_max_windows;
        layer_flops fe = flops_of(s, windows * Te, Te);
        double per = L * (fe.qkv + fe.att + fe.o + fe.gu + fe.dn) + 2 * windows * Te * s->vocab * (double)s->d;
        p->eta_eval = 2 * per / (gflops * 1e9 * CPU_EFF_FORWARD); /* the fake model, then the checkpoint */
    }
    p->eta_total = p->eta_embed + p->eta_forward + p->eta_hessian + p->eta_solve + p->eta_write + p->eta_eval;
}

/* ---- what the machine has ---- */
static bool read_u64_file(const char *path, uint64_t *v, bool *unlimited) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char buf[64] = {0};
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok) return false;
    if (unlimited) *unlimited = strncmp(buf, "max", 3) == 0;
    if (unlimited && *unlimited) return true;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (errno || end == buf) return false;
    *v = x;
    return true;
}

static uint64_t stat_key(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    char line[256];
    uint64_t v = 0;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            v = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    if (f) fclose(f);
    return v;
}

/* What a cgroup v2 directory's limit leaves: memory.max - (memory.current - file pages). */
static bool cgroup_left(const char *dir, uint64_t *left) {
    char path[4096];
    uint64_t max = 0, cur = 0;
    bool unlimited = false;
    snprintf(path, sizeof path, "%s/memory.max", dir);
    if (!read_u64_file(path, &max, &unlimited) || unlimited) return false;
    snprintf(path, sizeof path, "%s/memory.current", dir);
    if (!read_u64_file(path, &cur, NULL)) cur = 0;
    snprintf(path, sizeof path, "%s/memory.stat", dir);
    uint64_t file = stat_key(path, "file");
    uint64_t used = cur > file ? cur - file : 0;
    *left = max > used ? max - used : 0;
    return true;
}

uint64_t qc_plan_host_available(const char *meminfo, const char *cgroup_dir, const char **source) {
    uint64_t avail = 0;
    const char *src = "unknown";
    FILE *f = fopen(meminfo ? meminfo : "/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "MemAvailable:", 13) == 0) {
            avail = strtoull(line + 13, NULL, 10) * 1024; /* kB */
            src = "MemAvailable";
            break;
        }
    if (f) fclose(f);
    uint64_t left;
    if (cgroup_dir) {
        if (cgroup_left(cgroup_dir, &left) && (avail == 0 || left < avail)) {
            avail = left;
            src = "cgroup memory.max";
        }
    } else { /* this process's cgroup (v2: "0::/path") and every ancestor: each limit applies */
        char rel[2048] = "";
        FILE *c = fopen("/proc/self/cgroup", "r");
        while (c && fgets(line, sizeof line, c))
            if (strncmp(line, "0::", 3) == 0) {
                snprintf(rel, sizeof rel, "%s", line + 3);
                rel[strcspn(rel, "\n")] = '\0';
                break;
            }
        if (c) fclose(c);
        char dir[4096];
        for (;;) {
            snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", rel);
            if (cgroup_left(dir, &left) && (avail == 0 || left < avail)) {
                avail = left;
                src = "cgroup memory.max";
            }
            char *slash = strrchr(rel, '/');
            if (!slash || rel[0] == '\0') break;
            *slash = '\0';
        }
    }
    if (source) *source = src;
    return avail;
}

/* The directory a path will be created in ("." for a bare name). */
static void parent_of(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path && *path ? path : ".");
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash) snprintf(buf, cap, ".");
    else if (slash == buf) buf[1] = '\0';
    else *slash = '\0';
}

static uint64_t fs_free(const char *dir, dev_t *dev) {
    struct statvfs v;
    struct stat sb;
    if (stat(dir, &sb) != 0 || statvfs(dir, &v) != 0) return 0;
    *dev = sb.st_dev;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

static void machine(const qc_plan_in *in, qc_plan *p) {
    const char *src = NULL;
    p->host_avail = qc_plan_host_available(NULL, NULL, &src);
    snprintf(p->host_avail_src, sizeof p->host_avail_src, "%s", src ? src : "unknown");
    char dir[1024];
    dev_t dw = 0, dout = 0;
    parent_of(p->out, dir, sizeof dir);
    p->out_free = fs_free(dir, &dout);
    parent_of(p->work_dir, dir, sizeof dir);
    p->work_free = fs_free(dir, &dw);
    p->same_fs = p->out_free && p->work_free && dw == dout;
#ifdef QCAL_HAVE_CUDA
    if (in->device >= 0) {
        qc_gpu *g = NULL;
        size_t fr = 0, tot = 0;
        if (qc_gpu_open(in->device, &g) == QC_OK && qc_gpu_mem_info(g, &fr, &tot) == QC_OK) {
            /* free memory with this process's context already in it: the run's own context comes on top */
            p->gpu_avail = (uint64_t)fr + QC_PLAN_CUDA_CONTEXT;
            const char *lim = getenv("QCAL_GPU_MEM_LIMIT_MB"); /* caps qcal's own buffers (qc_gpu.c) */
            if (lim && *lim) {
                uint64_t cap = ((uint64_t)strtoull(lim, NULL, 10) << 20) + QC_PLAN_CUDA_CONTEXT + QC_PLAN_CUDA_WORKSPACES;
                if (cap < p->gpu_avail) p->gpu_avail = cap;
            }
        }
        qc_gpu_close(g);
        qc_error_clear();
    }
#else
    (void)in;
#endif
}

qc_status qc_plan_compute(const qc_plan_in *in, qc_plan *p) {
    memset(p, 0, sizeof *p);
    if (!in || !in->m) return qc_fail(QC_ERR_ARG, "plan: no model");
    if (in->nsamples < 1 || in->seqlen < 1)
        return qc_fail(QC_ERR_ARG, "plan: %d x %d calibration tokens: need at least one sample of one token", in->nsamples,
                       in->seqlen);
    if (in->bits != 2 && in->bits != 3 && in->bits != 4 && in->bits != 8)
        return qc_fail(QC_ERR_ARG, "plan: bits = %d (2, 3, 4 or 8)", in->bits);
    if (in->group_size == 0 || in->group_size < -1) return qc_fail(QC_ERR_ARG, "plan: group size %d", in->group_size);
    shapes s;
    qc_status st = shapes_make(in, &s);
    if (st) return st;
    p->n_layers = s.L;
    p->hidden = s.d;
    p->nsamples = in->nsamples;
    p->seqlen = in->seqlen;
    p->device = in->device;
    p->method = in->method;
    p->bits = in->bits;
    p->group_size = in->group_size;
    p->keep_fake = in->keep_fake;
    p->threads = in->threads > 0 ? in->threads : qc_par_threads();
    snprintf(p->out, sizeof p->out, "%s", in->out ? in->out : "");
    if (in->work_dir) snprintf(p->work_dir, sizeof p->work_dir, "%s", in->work_dir);
    else snprintf(p->work_dir, sizeof p->work_dir, "%.1000s.qcal-work", p->out);
    if (!in->offline) machine(in, p);
    if (in->device >= 0) {
        gpu_memory(in, &s, p->gpu_avail > QC_PLAN_CUDA_CONTEXT ? p->gpu_avail - QC_PLAN_CUDA_CONTEXT : 0, p);
    } else {
        int bt = in->batch_tokens > 0 ? in->batch_tokens : 8192;
        s.batch = bt / s.T < 1 ? 1 : bt / s.T;
        if (s.batch > s.n) s.batch = s.n;
        s.brows = (uint64_t)s.batch * s.T;
    }
    p->batch_seqs = s.batch;
    p->batch_tokens = in->batch_tokens > 0 ? in->batch_tokens : in->device >= 0 ? gpu_default_tokens(s.d) : 8192;
    uint64_t out_layers = 0;
    disk(in, &s, p, &out_layers);
    host_phases(in, &s, p->threads, out_layers, p);
    p->cpu_gflops = in->offline ? (in->cpu_gflops > 0 ? in->cpu_gflops : 50.0) : cpu_sgemm_gflops();
    eta(in, &s, p->cpu_gflops, p);
    return QC_OK;
}

/* ---- printing ---- */
static const char *human(uint64_t b, char *buf, size_t cap) {
    if (b >= ((uint64_t)1 << 30)) snprintf(buf, cap, "%.2f GiB", b / 1073741824.0);
    else if (b >= ((uint64_t)1 << 20)) snprintf(buf, cap, "%.1f MiB", b / 1048576.0);
    else snprintf(buf, cap, "%.1f KiB", b / 1024.0);
    return buf;
}

static const char *dur(double s, char *buf, size_t cap) {
    if (s < 60) snprintf(buf, cap, "%.1f s", s);
    else if (s < 3600) snprintf(buf, cap, "%d min %02d s", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, cap, "%d h %02d min", (int)(s / 3600), (int)fmod(s / 60, 60));
    return buf;
}

static void print_items(FILE *f, const qc_plan_item *it, int n) {
    char b[32];
    for (int i = 0; i < n; i++)
        fprintf(f, "    %10s  %s%s\n", human(it[i].bytes, b, sizeof b), it[i].what,
                it[i].kind == QC_PLAN_FILE ? " [reclaimable]" : "");
}

void qc_plan_print(const qc_plan *p, FILE *f) {
    char a[32], b[32], c[32];
    fprintf(f, "plan: %s w%d g%d, %d x %d calibration tokens, %d layers (hidden %d), %s, batch %d x %d tokens\n",
            qc_method_name(p->method), p->bits, p->group_size, p->nsamples, p->seqlen, p->n_layers, p->hidden,
            p->device < 0 ? "cpu" : "cuda", p->batch_seqs, p->seqlen);
    fprintf(f, "  %-12s %12s %14s\n", "resource", "needs", "available");
    fprintf(f, "  %-12s %12s %14s  peak: %s (resident incl. %s of file pages; must fit: %s)\n", "host RAM",
            human(p->host_peak, a, sizeof a), p->host_avail ? human(p->host_avail, b, sizeof b) : "?", p->host_phase,
            human(p->host_peak - p->host_required > p->host_peak ? 0 : p->host_peak - p->host_required, c, sizeof c),
            human(p->host_required, c + 16, sizeof c - 16));
    if (p->device >= 0)
        fprintf(f, "  %-12s %12s %14s  peak: %s (qcal's buffers %s)\n", "GPU memory", human(p->gpu_peak, a, sizeof a),
                p->gpu_avail ? human(p->gpu_avail, b, sizeof b) : "?", p->gpu_phase, human(p->gpu_own, c, sizeof c));
    fprintf(f, "  %-12s %12s %14s  %s (after the run: %s)\n", "work dir", human(p->work_disk, a, sizeof a),
            p->work_free ? human(p->work_free, b, sizeof b) : "?", p->work_dir, human(p->work_disk_final, c, sizeof c));
    fprintf(f, "  %-12s %12s %14s  %s%s\n", "checkpoint", human(p->out_disk, a, sizeof a),
            p->out_free ? human(p->out_free, b, sizeof b) : "?", p->out,
            p->same_fs ? " (same file system as the work dir)" : "");
    fprintf(f, "  host RAM at its peak:\n");
    print_items(f, p->host, p->n_host);
    if (p->device >= 0) {
        fprintf(f, "  GPU memory at its peak:\n");
        print_items(f, p->gpu, p->n_gpu);
    }
    fprintf(f, "  work dir:\n");
    print_items(f, p->work, p->n_work);
    fprintf(f, "  checkpoint:\n");
    print_items(f, p->outd, p->n_out);
    char t[7][32];
    fprintf(f, "  time (%s): embed %s, forward %s, Hessians %s, solve %s, pack/write %s%s%s; total %s\n",
            p->device < 0 ? "estimate from the sgemm rate" : "estimate from H100 rates", dur(p->eta_embed, t[0], 32),
            dur(p->eta_forward, t[1], 32), dur(p->eta_hessian, t[2], 32), dur(p->eta_solve, t[3], 32),
            dur(p->eta_write, t[4], 32), p->eta_eval > 0 ? ", eval " : "", p->eta_eval > 0 ? dur(p->eta_eval, t[5], 32) : "",
            dur(p->eta_total, t[6], 32));
    if (p->device < 0) fprintf(f, "  (sgemm %.1f GFLOP/s on %d threads)\n", p->cpu_gflops, p->threads);
}

/* ---- the check ---- */
typedef struct {
    char   *buf;
    size_t  len, cap;
} msgbuf;

static void msg(msgbuf *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msg(msgbuf *m, const char *fmt, ...) {
    if (m->len >= m->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(m->buf + m->len, m->cap - m->len, fmt, ap);
    va_end(ap);
    if (k > 0) m->len = m->len + (size_t)k < m->cap ? m->len + (size_t)k : m->cap;
}

static uint64_t sum_kind(const qc_plan_item *it, int n, qc_plan_kind k) {
    uint64_t s = 0;
    for (int i = 0; i < n; i++)
        if (it[i].kind == k) s += it[i].bytes;
    return s;
}

/* What to change so that `excess` bytes of the listed terms go away. */
static void advise_memory(msgbuf *m, const qc_plan *p, const qc_plan_item *it, int n, uint64_t excess, bool gpu) {
    char b[32];
    uint64_t snap = sum_kind(it, n, QC_PLAN_SNAP), rows = sum_kind(it, n, QC_PLAN_ROWS) + snap;
    uint64_t batch = sum_kind(it, n, QC_PLAN_BATCH), ev = sum_kind(it, n, QC_PLAN_EVAL);
    int k = 0;
    if (rows > excess) {
        int fit = (int)floor((double)p->nsamples * (double)(rows - excess) / (double)rows);
        if (fit >= 1) {
            int fit_t = (int)floor((double)p->seqlen * (double)(rows - excess) / (double)rows);
            msg(m, "%s--nsamples %d or fewer (%s of it grows with nsamples x seqlen)", k++ ? "; or " : "use ", fit,
                human(rows, b, sizeof b));
            if (fit_t >= 1) msg(m, " or --seqlen %d", fit_t);
        }
    }
    if (batch > excess) {
        uint64_t keep = batch - excess;
        int fit = (int)floor((double)p->batch_seqs * (double)keep / (double)batch);
        if (fit >= 1) msg(m, "%s--batch-tokens %d (the forward batch takes %s)", k++ ? "; or " : "use ",
                          fit * p->seqlen, human(batch, b, sizeof b));
    }
    if (snap > excess) msg(m, "%s--save-every -1 (no host copy of X for the resume snapshot: %s less, but a killed run "
                           "starts over)", k++ ? "; or " : "use ", human(snap, b, sizeof b));
    if (ev > excess)
        msg(m, "%sdrop --eval (the fake-quantized model kept for it takes %s; run qcal eval on the checkpoint instead)",
            k++ ? "; or " : "", human(ev, b, sizeof b));
    if (gpu) msg(m, "%s--device cpu, or a GPU with more memory", k++ ? "; or " : "use ");
    else if (!k) msg(m, "the model's layers alone need more: use a machine with more RAM");
    else msg(m, "; or a machine with more RAM");
}

qc_status qc_plan_check(const qc_plan *p) {
    char text[2048];
    msgbuf m = {text, 0, sizeof text};
    text[0] = '\0';
    qc_status st = QC_OK;
    char a[32], b[32];
    if (p->host_avail && p->host_required > p->host_avail) {
        msg(&m, "host RAM: the run needs %s at its peak (%s) but %s is available%s%s%s: ",
            human(p->host_required, a, sizeof a), p->host_phase, human(p->host_avail, b, sizeof b),
            p->host_avail_src[0] ? " (" : "", p->host_avail_src, p->host_avail_src[0] ? ")" : "");
        advise_memory(&m, p, p->host, p->n_host, p->host_required - p->host_avail, false);
        st = QC_ERR_NOMEM;
    }
    if (p->device >= 0 && p->gpu_avail && p->gpu_peak > p->gpu_avail) {
        msg(&m, "%sGPU memory: cuda:%d needs %s at its peak (%s) but %s is free: ", m.len ? ". " : "", p->device,
            human(p->gpu_peak, a, sizeof a), p->gpu_phase, human(p->gpu_avail, b, sizeof b));
        advise_memory(&m, p, p->gpu, p->n_gpu, p->gpu_peak - p->gpu_avail, true);
        if (!st) st = QC_ERR_NOMEM;
    }
    uint64_t snap = sum_kind(p->work, p->n_work, QC_PLAN_SNAP);
    if (p->same_fs) {
        if (p->work_free && p->work_disk + p->out_disk > p->work_free) {
            msg(&m, "%sdisk: the work directory (%s) and the checkpoint (%s) share a file system with %s free: use "
                "--work-dir on another file system, or --out elsewhere", m.len ? ". " : "", human(p->work_disk, a, sizeof a),
                human(p->out_disk, b, sizeof b), human(p->work_free, b + 16, sizeof b - 16));
            if (snap && p->work_disk + p->out_disk - snap <= p->work_free)
                msg(&m, ", or --save-every -1 (no activation snapshot: %s less, but a killed run starts over)",
                    human(snap, a, sizeof a));
            if (!st) st = QC_ERR_ARG;
        }
    } else {
        if (p->work_free && p->work_disk > p->work_free) {
            msg(&m, "%sdisk: the work directory %s needs %s but its file system has %s free: use --work-dir on a "
                "file system with more room", m.len ? ". " : "", p->work_dir, human(p->work_disk, a, sizeof a),
                human(p->work_free, b, sizeof b));
            if (snap && p->work_disk - snap <= p->work_free)
                msg(&m, ", or --save-every -1 (no activation snapshot: %s less, but a killed run starts over)",
                    human(snap, a, sizeof a));
            if (!st) st = QC_ERR_ARG;
        }
        if (p->out_free && p->out_disk > p->out_free) {
            msg(&m, "%sdisk: the checkpoint %s needs %s but its file system has %s free: use --out on a file system "
                "with more room", m.len ? ". " : "", p->out, human(p->out_disk, a, sizeof a),
                human(p->out_free, b, sizeof b));
            if (!st) st = QC_ERR_ARG;
        }
    }
    if (st) return qc_fail(st, "quantize: this run does not fit: %s", text);
    return QC_OK;
}

/* ---- status.json ---- */
static double process_elapsed(void) {
    /* field 22 of /proc/self/stat: start time in clock ticks after boot; /proc/uptime: seconds after boot */
    static double first = -1;
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* the command name may hold spaces */
    double up = 0;
    f = fopen("/proc/uptime", "r");
    bool ok = f && fscanf(f, "%lf", &up) == 1;
    if (f) fclose(f);
    if (rp && ok) {
        unsigned long long start = 0;
        int field = 2;
        for (char *s = rp + 1; *s && field < 22; s++)
            if (*s == ' ') {
                field++;
                if (field == 22) start = strtoull(s + 1, NULL, 10);
            }
        long hz = sysconf(_SC_CLK_TCK);
        if (start > 0 && hz > 0) return up - (double)start / (double)hz;
    }
    if (first < 0) first = qc_time_now();
    return qc_time_now() - first;
}

qc_status qc_status_file_write(const char *work_dir, int layer, int n_layers, const char *phase, double eta_s) {
    char esc[128], buf[768], when[32], eta_txt[32];
    size_t k = 0;
    for (const char *c = phase ? phase : ""; *c && k + 7 < sizeof esc; c++) { /* JSON string escape */
        unsigned char ch = (unsigned char)*c;
        if (ch == '"' || ch == '\\') {
            esc[k++] = '\\';
            esc[k++] = (char)ch;
        } else if (ch < 0x20) {
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\u%04x", ch);
        } else {
            esc[k++] = (char)ch;
        }
    }
    esc[k] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (eta_s >= 0 && isfinite(eta_s)) snprintf(eta_txt, sizeof eta_txt, "%.1f", eta_s);
    else snprintf(eta_txt, sizeof eta_txt, "null");
    snprintf(buf, sizeof buf, "{\"pid\": %ld, \"layer\": %d, \"n_layers\": %d, \"phase\": \"%s\", \"elapsed_s\": %.1f, "
             "\"eta_s\": %s, \"updated\": %lld, \"updated_at\": \"%s\"}\n", (long)getpid(), layer, n_layers, esc,
             process_elapsed(), eta_txt, (long long)now, when);
    char *path = qc_path_join(work_dir, "status.json");
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_write_file_atomic(path, buf, strlen(buf));
    free(path);
    return st;
}
