/*
 * pipeline_gpu.c - qc_pipeline_run on a CUDA device (--device cuda[:N]).
 *
 * The same schedule as the CPU pipeline (pipeline.c), with the data on the device:
 *   - X, the calibration activations [rows, d], is fp32 on the device; each layer's weights arrive
 *     through the loader (calib/gpu_forward.h), which reads layer i+1 from the mmapped files and
 *     uploads it while layer i is being solved, so only two layers are resident;
 *   - GPTQ/RTN: per true-sequential group the layer runs batch by batch with the already-quantized
 *     groups in place; H += x^T x (fp16 operands, fp32 accumulation) at the capture points; each
 *     linear is solved on the device (solver/quant_gpu.h: cuSOLVER + fused block kernel), its W_hat is
 *     written back into the layer's fp16 weights, its codes are packed on the device; then the
 *     quantized layer's output becomes X;
 *   - AWQ: the original layer runs once capturing every linear's input (fp16, device) and producing
 *     X for the next layer; the scale search, folding, clipping and quantization run on the device
 *     (solver/awq_gpu.h).
 * The layer parts written to work_dir are the same files the CPU pipeline writes, and so is the resume
 * state (resume.h): a host thread writes layer i's part, then its report rows, then, at a save boundary,
 * x.bin with X downloaded after layer i, while the GPU works on layer i + 1; the next layer's epilogue
 * waits for it. A resumed run uploads X from x.bin and starts the loader at its boundary.
 * Host memory: the loader's pinned staging (one layer in its stored dtype), one part file's tensors,
 * an embedding chunk, and (resume state on) a host copy of X; with keep_fake, the FP32 fake-quantized
 * layers as on the CPU.
 */
#include "awq.h"
#include "awq_gpu.h"
#include "gpu_attn.h"
#include "gpu_forward.h"
#include "pipeline_internal.h"
#include "qc_signal.h"
#include "quant_gpu.h"
#include "resume.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Host work on its own thread while the GPU computes: fn(arg)'s status and message are kept for the join;
 * seconds add up over the job's runs. */
typedef struct {
    pthread_t  th;
    bool       running;
    qc_status (*fn)(void *arg);
    void      *arg;
    qc_status  st;
    char       err[512];
    double     seconds;
} host_job;

static void *host_job_main(void *p) {
    host_job *j = p;
    double t0 = qc_time_now();
    j->st = j->fn(j->arg);
    if (j->st) snprintf(j->err, sizeof j->err, "%s", qc_last_error());
    j->seconds += qc_time_now() - t0;
    return NULL;
}

static qc_status host_job_start(host_job *j, qc_status (*fn)(void *), void *arg) {
    QC_ASSERT(!j->running);
    j->fn = fn;
    j->arg = arg;
    if (pthread_create(&j->th, NULL, host_job_main, j) != 0) return qc_fail(QC_ERR_IO, "cannot start a host thread");
    j->running = true;
    return QC_OK;
}

/* Waits for the job (if one runs); its failure becomes this thread's status. */
static qc_status host_job_join(host_job *j) {
    if (!j->running) return QC_OK;
    pthread_join(j->th, NULL);
    j->running = false;
    return j->st ? qc_fail(j->st, "%s", j->err) : QC_OK;
}

typedef struct {
    qc_gpu                 *g;
    const qc_model         *m;
    const qc_pipeline_opts *o;
    qc_pipeline_result     *res;
    int                     d, T, nsamples, batch, Kmax, Nmax;
    size_t                  NKmax;           /* the widest linear's N * K (W32, Wo, the solver) */
    size_t                  rows;
    float                  *X;               /* [rows, d] the current layer's input */
    float                  *xs;              /* [batch * T, d] scratch copy */
    float                  *Hs[QC_LIN_MAX];  /* Hessians per capture point [K, K] (an MoE layer's experts' too) */
    float                  *Hw;              /* [d, d] a Hessian copy for the linears sharing one (q/k, gate) */
    size_t                  Hw_elems;
    int                     hw_cap;          /* the capture point whose GPTQ factor Hw holds; -1: none */
    bool                    stack_logged;    /* a stacked solve (gpu_solve_run) has been announced */
    /* o_proj's or down_proj's input for every row, as their Hessian pass saw it, so that the in-place pass
     * after them applies only that linear (qc_gpu_layer_finish_half); taken when it fits */
    uint16_t               *stash;           /* [rows, stash_cols] */
    int                     stash_cols;
    int                     stash_half;      /* the half whose input stash holds now; 0: none */
    float                  *W32, *Wo;        /* [NKmax] */
    uint16_t               *A[QC_LIN_COUNT]; /* AWQ: inputs per capture point [rows, K], fp16 */
    float                  *ref, *out;       /* AWQ: module outputs [rows, d] */
    uint16_t               *trial[3];        /* AWQ: trial weights [NKmax] fp16 */
    float                  *sdev;            /* AWQ: scales [n_cand][Kmax]: the search's candidates, a fold's one */
    double                 *parts;           /* AWQ: the search's loss partial sums [n_cand][QC_GPU_SQDIFF_PARTS_MAX] */
    int                     n_cand;          /* AWQ: qc_awq_n_candidates for the run's scale mode */
    qc_gpu_fwd             *f;
    qc_gpu_loader          *ld;
    qc_gpu_solver          *sv;
    qc_qlinear              ql;
    qc_pl_parts             part;
    qc_gpu_layer           *layer;           /* the layer being quantized (device, modified in place) */
    qc_pl_driver            drv;             /* the shared schedule (pipeline_driver.c) */
    float                  *xh;              /* host copy of X for x.bin [rows, d]; NULL: no resume state */
    bool                    xh_pinned;
    double                  last_save;
    /* The previous layer's state is written (and fsynced) by a host thread while the GPU works: its part
     * file, then its report rows, then at a save boundary x.bin from xh, in that order, since x.bin is
     * the commit point for the layers before it. The job reads only what it owns: wr_parts, xh (not
     * written again before the job is joined), and wr_res, a snapshot of the layer's report rows and of
     * the F16 module names (the strings belong to res and live as long as it). */
    host_job                wr;
    qc_pl_parts             wr_parts;
    char                    wr_path[4096];
    int                     wr_layer;
    bool                    wr_save_x;
    qc_pipeline_result      wr_res;          /* lin [L * lin_stride], unquantized (pointers only) */
    int                     wr_unq_cap;
    host_job               *base;            /* the base part's writer: finished before the first x.bin */
    /* Host buffers the packed tensors are downloaded into and the part borrows, reused layer after layer
     * (pinned: full-speed copies, no page faults): ar[ar_cur] for the layer being built, the other for the
     * part the writer thread holds. A layer that does not fit takes malloc'd buffers and the arenas grow to
     * its need at the next hand-over. */
    struct pack_arena {
        unsigned char *p;
        size_t cap, used;
        bool pinned;
    } ar[2];
    int                     ar_cur;
    size_t                  ar_need;         /* the most one layer's packed tensors took */
} gctx;

typedef struct pack_arena pack_arena;

/* n bytes (256-aligned) of the current arena, or NULL when it has no room (the caller mallocs). */
static void *arena_take(gctx *c, size_t n) {
    pack_arena *a = &c->ar[c->ar_cur];
    size_t off = (a->used + 255) & ~(size_t)255;
    a->used = off + n;
    if (a->used > c->ar_need) c->ar_need = a->used;
    return a->p && a->used <= a->cap ? a->p + off : NULL;
}

static void arena_release(pack_arena *a) {
    if (a->pinned) qc_gpu_host_free(a->p);
    else free(a->p);
    memset(a, 0, sizeof *a);
}

/* After the current arena's part went to the writer: the other one (its job joined) becomes current,
 * emptied, grown to the largest layer's need. A failed pinned allocation falls back to malloc. */
static qc_status arena_next(gctx *c) {
    c->ar_cur ^= 1;
    pack_arena *a = &c->ar[c->ar_cur];
    a->used = 0;
    if (a->cap >= c->ar_need) return QC_OK;
    arena_release(a);
    size_t n = c->ar_need + (c->ar_need >> 4);
    if (qc_gpu_host_alloc((void **)&a->p, n, "the packed tensors' staging") == QC_OK) {
        a->pinned = true;
    } else {
        qc_error_clear();
        if (!(a->p = malloc(n))) return qc_fail(QC_ERR_NOMEM, "out of memory for the packed tensors (%.1f MiB)", n / 1048576.0);
    }
    a->cap = n;
    return QC_OK;
}

/* A packed tensor's host buffer: from the arena (borrowed by the part) or malloc'd (owned by it). */
typedef struct {
    void *p;
    bool  borrowed;
} pack_buf;

static pack_buf pack_alloc(gctx *c, size_t n) {
    void *p = arena_take(c, n);
    return p ? (pack_buf){p, true} : (pack_buf){malloc(n + 1), false};
}

static void pack_buf_free(pack_buf *b) {
    if (!b->borrowed) free(b->p);
    b->p = NULL;
}

static qc_status part_add_packed(gctx *c, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, pack_buf *b,
                                 size_t nbytes) {
    void *p = b->p;
    b->p = NULL;
    return b->borrowed ? qc_pl_part_add_borrowed(&c->part, name, dt, ndim, d0, d1, p, nbytes)
                       : qc_pl_part_add(&c->part, name, dt, ndim, d0, d1, p, nbytes);
}

static qc_status write_part_job(void *arg) {
    gctx *c = arg;
    qc_status st = qc_pl_part_write(&c->wr_parts, c->wr_path, c->o);
    qc_pl_part_free(&c->wr_parts);
    if (st == QC_OK) st = qc_resume_save_layer(c->o->work_dir, c->wr_layer, &c->wr_res);
    if (st == QC_OK && c->wr_save_x) {
        /* a resumed run takes base.safetensors as written: it must be, before x.bin says so. Only this
         * thread joins the base job while a writer job runs; the main thread joins it after this one. */
        st = host_job_join(c->base);
        if (st == QC_OK)
            st = qc_resume_save_x(c->o->work_dir, c->wr_layer + 1, c->wr_layer + 1 == c->m->cfg.n_layers ? NULL : c->xh,
                                  c->rows, c->d);
    }
    return st;
}

/* Hands c->part, layer li's report rows and (save_x: X is in xh) the boundary li + 1 to the writer thread.
 * The caller has joined the previous job. */
static qc_status part_writer_start(gctx *c, const char *path, int li, bool save_x) {
    QC_ASSERT(!c->wr.running);
    qc_pipeline_result *r = c->res, *w = &c->wr_res;
    size_t st_ = (size_t)r->lin_stride;
    memcpy(w->lin + (size_t)li * st_, r->lin + (size_t)li * st_, sizeof *r->lin * st_);
    if (r->n_unq > c->wr_unq_cap) {
        char **u = realloc(w->unquantized, sizeof *u * (size_t)r->n_unq);
        if (!u) return qc_fail(QC_ERR_NOMEM, "out of memory");
        w->unquantized = u;
        c->wr_unq_cap = r->n_unq;
    }
    if (r->n_unq > 0) memcpy(w->unquantized, r->unquantized, sizeof *r->unquantized * (size_t)r->n_unq);
    w->n_unq = r->n_unq;
    c->wr_parts = c->part;
    memset(&c->part, 0, sizeof c->part);
    snprintf(c->wr_path, sizeof c->wr_path, "%s", path);
    c->wr_layer = li;
    c->wr_save_x = save_x;
    qc_status st = host_job_start(&c->wr, write_part_job, c);
    if (st) qc_pl_part_free(&c->wr_parts);
    return st ? st : arena_next(c);
}

static qc_linear_report *rep_of(gctx *c, int li, qc_linear_id l) { return qc_pl_row(&c->drv, li, l); }

/* A device fp32 vector -> host floats (malloc'd). */
static qc_status download_f32(gctx *c, const float *dev, size_t n, float **out) {
    *out = NULL;
    float *h = malloc(sizeof(float) * n + 1);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_gpu_download(c->g, h, dev, sizeof(float) * n);
    if (st) {
        free(h);
        return st;
    }
    *out = h;
    return QC_OK;
}

/* A device fp32 vector into the part as F16 (biases, norms). */
static qc_status part_add_dev_f32(gctx *c, const char *name, const float *dev, int n) {
    float *h = NULL;
    qc_status st = download_f32(c, dev, (size_t)n, &h);
    if (st) return st;
    st = qc_pl_part_add_f16(&c->part, name, h, n, 0);
    free(h);
    return st;
}

/* Host copy of a device fp32 vector rounded to fp16 (the fake layer's norms and biases). */
static qc_status fake_vec(gctx *c, const float *dev, int n, float **out) {
    *out = NULL;
    if (!dev) return QC_OK;
    qc_status st = download_f32(c, dev, (size_t)n, out);
    if (st == QC_OK)
        for (int i = 0; i < n; i++) (*out)[i] = qc_fp16_to_f32(qc_f32_to_fp16((*out)[i]));
    return st;
}

/* Host floats of a device fp16 array (the router and shared-expert gate: fake layer and part). */
static qc_status f16_to_host(gctx *c, const uint16_t *dev, size_t n, float **out) {
    *out = NULL;
    uint16_t *h = malloc(n * 2 + 1);
    float *f = qc_aligned_alloc(n * sizeof(float) + 4);
    qc_status st = h && f ? qc_gpu_download(c->g, h, dev, n * 2) : qc_fail(QC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == QC_OK && i < n; i++) f[i] = qc_fp16_to_f32(h[i]);
    free(h);
    if (st) {
        qc_aligned_free(f);
        return st;
    }
    *out = f;
    return QC_OK;
}

/* A linear the format cannot hold: its fp16 weight goes out as is, declared unquantized. */
static qc_status keep_unquantized(gctx *c, int li, qc_linear_id l, const qc_gpu_layer *layer, const char *why) {
    qc_linear_report *r = rep_of(c, li, l);
    snprintf(r->reason, sizeof r->reason, "kept in F16: %s", why ? why : "shape not supported");
    size_t n = (size_t)r->N * r->K;
    uint16_t *h = malloc(n * 2 + 1);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory for %s", r->name);
    qc_status st = qc_gpu_download(c->g, h, layer->w[l], n * 2);
    char nm[192];
    snprintf(nm, sizeof nm, "%s.weight", r->name);
    if (st == QC_OK && c->o->keep_fake) {
        float *w = qc_aligned_alloc(n * sizeof(float));
        if (!w) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        else for (size_t i = 0; i < n; i++) w[i] = qc_fp16_to_f32(h[i]);
        c->res->fake[li].w[l] = w;
    }
    if (st == QC_OK) st = qc_pl_part_add(&c->part, nm, QC_DTYPE_F16, 2, r->N, r->K, h, n * 2);
    else free(h);
    if (st == QC_OK && layer->b[l]) {
        snprintf(nm, sizeof nm, "%s.bias", r->name);
        st = part_add_dev_f32(c, nm, layer->b[l], r->N);
    }
    if (st == QC_OK) st = qc_pl_push_module(c->res, &c->m->cfg, li, l);
    return st;
}

/* After a solver left W_hat in c->W32 (the original in c->Wo) and the codes in the solver/c->ql: the
 * output error under H, W_hat into the layer's fp16 weight, device packing, bias, fake weight. off: the
 * linear's first row in W32/Wo (a stacked solve, gpu_solve_run; the solver's window is on its rows). */
static qc_status finish_linear(gctx *c, int li, qc_linear_id l, qc_gpu_layer *layer, const float *H, double ref,
                               size_t off) {
    qc_linear_report *r = rep_of(c, li, l);
    int N = r->N, K = r->K, b = c->ql.bits, G = c->ql.n_groups;
    size_t nk = (size_t)N * K;
    float *Wo = c->Wo + off * K, *W32 = c->W32 + off * K;
    qc_status st = qc_gpu_sub(c->g, Wo, W32, Wo, nk);
    double err = 0;
    if (st == QC_OK) /* H == NULL: the solver consumed the caller's H and keeps its own copy */
        st = H ? qc_gpu_quad_form(c->sv, Wo, H, N, K, &err) : qc_gpu_solver_quad_form_saved(c->sv, Wo, N, K, &err);
    if (st == QC_OK) st = qc_gpu_f32_to_f16(c->g, W32, layer->w[l], nk);
    if (st) return st;
    r->rel_err = ref > 0 ? err / ref : 0.0;
    r->quantized = true;
    /* pack on the device, download into the arena */
    double tp = qc_time_now();
    bool awq = c->o->format == QC_PACK_AWQ;
    size_t qw = awq ? (size_t)K * (N / 8) : (size_t)K * b / 32 * N;
    size_t qz = awq ? (size_t)G * (N / 8) : (size_t)G * ((size_t)N * b / 32);
    pack_buf qweight = pack_alloc(c, qw * 4), qzeros = pack_alloc(c, qz * 4), sc = pack_alloc(c, (size_t)G * N * 2),
             gidx = awq ? (pack_buf){0} : pack_alloc(c, (size_t)K * 4);
    if (!qweight.p || !qzeros.p || (!awq && !gidx.p) || !sc.p) st = qc_fail(QC_ERR_NOMEM, "out of memory packing %s", r->name);
    if (st == QC_OK)
        st = qc_gpu_pack(c->sv, &c->ql,
                         awq ? QC_GPU_PACK_AWQ : c->o->format == QC_PACK_GPTQ_V2 ? QC_GPU_PACK_GPTQ_V2 : QC_GPU_PACK_GPTQ,
                         qweight.p, qzeros.p, sc.p);
    c->res->t_pack += qc_time_now() - tp;
    double tw = qc_time_now();
    char name[192];
    snprintf(name, sizeof name, "%s.qweight", r->name);
    if (st == QC_OK)
        st = part_add_packed(c, name, QC_DTYPE_I32, 2, awq ? K : (int64_t)K * b / 32, awq ? N / 8 : N, &qweight, qw * 4);
    snprintf(name, sizeof name, "%s.qzeros", r->name);
    if (st == QC_OK) st = part_add_packed(c, name, QC_DTYPE_I32, 2, G, awq ? N / 8 : (int64_t)N * b / 32, &qzeros, qz * 4);
    snprintf(name, sizeof name, "%s.scales", r->name);
    if (st == QC_OK) st = part_add_packed(c, name, QC_DTYPE_F16, 2, G, N, &sc, (size_t)G * N * 2);
    if (!awq && st == QC_OK) {
        snprintf(name, sizeof name, "%s.g_idx", r->name);
        memcpy(gidx.p, c->ql.g_idx, (size_t)K * 4);
        st = part_add_packed(c, name, QC_DTYPE_I32, 1, K, 0, &gidx, (size_t)K * 4);
    }
    pack_buf_free(&qweight);
    pack_buf_free(&qzeros);
    pack_buf_free(&sc);
    pack_buf_free(&gidx);
    if (st == QC_OK && layer->b[l]) {
        snprintf(name, sizeof name, "%s.bias", r->name);
        st = part_add_dev_f32(c, name, layer->b[l], N);
    }
    if (st == QC_OK && c->o->keep_fake) { /* what a loader reconstructs: fp16 scales */
        for (size_t i = 0; i < (size_t)G * N; i++) c->ql.scales[i] = qc_fp16_to_f32(qc_f32_to_fp16(c->ql.scales[i]));
        float *w = qc_aligned_alloc(sizeof(float) * nk);
        if (!w) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        else qc_qlinear_dequant(&c->ql, w);
        c->res->fake[li].w[l] = w;
    }
    c->res->t_write += qc_time_now() - tw;
    qc_qlinear_free(&c->ql);
    return st;
}

/* ---- GPTQ / RTN ---- */

/* The input width of a capture point (arch.h). */
static int cap_width(const gctx *c, qc_linear_id cap) { return qc_capture_width(&c->m->cfg, cap); }

/* The linear whose input capture point cap is (an expert's path below model.layers.N. for its slots). */
static const char *cap_name(const gctx *c, qc_linear_id cap, char *buf, size_t size) {
    return qc_linear_path(&c->m->cfg, cap, buf, size);
}

/* qc_pl_check_hessian for a device Hessian: its diagonal (K floats) is enough, since a non-finite input
 * row makes its whole row and column of H non-finite. */
static qc_status check_hessian(gctx *c, qc_linear_id cap, int li) {
    int K = cap_width(c, cap);
    char nm[160];
    float *dg = malloc(sizeof(float) * (size_t)K + 1);
    if (!dg) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_gpu_hessian_diag(c->g, c->Hs[cap], K, dg);
    for (int i = 0; st == QC_OK && i < K; i++)
        if (!isfinite(dg[i]))
            st = qc_fail(QC_ERR_NUMERIC, "%s.%d: the calibration activations entering %s are not finite "
                         "(Hessian diagonal %d is %g): the model overflows on this calibration text (the GPU feeds "
                         "the linears F16 inputs, as an F16 model does; --device cpu computes in FP32) or its "
                         "weights are broken", qc_layers_path(&c->m->cfg), li, cap_name(c, cap, nm, sizeof nm), i,
                         (double)dg[i]);
    free(dg);
    return st;
}
typedef struct {
    gctx        *c;
    bool         want[QC_LIN_MAX];
    int64_t      rows[QC_LIN_MAX];
    qc_linear_id last;
    qc_status    st;
    double       t_hess;
    int          stash_in;   /* > 0: the last capture's input goes to c->stash too (this many columns) */
    size_t       row0;       /* the batch's first row */
} hcap;

static bool hessian_capture(void *user, qc_linear_id which, const uint16_t *x, int n, int in) {
    hcap *h = user;
    if (h->want[which] && h->st == QC_OK) {
        gctx *c = h->c;
        h->st = qc_gpu_sync(c->g); /* the forward so far is the forward's time */
        double t1 = qc_time_now();
        if (h->st == QC_OK) h->st = qc_gpu_hessian_add(c->g, x, n, in, c->Hs[which]);
        if (h->st == QC_OK) h->st = qc_gpu_sync(c->g);
        h->t_hess += qc_time_now() - t1;
        h->rows[which] += n;
        if (h->st == QC_OK && which == h->last && h->stash_in > 0)
            h->st = qc_gpu_copy(c->g, c->stash + h->row0 * (size_t)h->stash_in, x, sizeof(uint16_t) * (size_t)n * in);
    }
    return which != h->last && h->st == QC_OK;
}

static qc_status hessian_buf(gctx *c, qc_linear_id cap, int K) {
    if (!c->Hs[cap]) {
        char what[256], nm[160];
        snprintf(what, sizeof what, "the Hessian of %s inputs (%d x %d)", cap_name(c, cap, nm, sizeof nm), K, K);
        qc_status st = qc_gpu_alloc(c->g, (void **)&c->Hs[cap], sizeof(float) * (size_t)K * K, what);
        if (st) return st;
    }
    return qc_gpu_memset(c->g, c->Hs[cap], 0, sizeof(float) * (size_t)K * K);
}

/* Linear l's fp16 weight [N, K] into W32 from row off on, a copy into Wo (the original, for the error), and
 * *ref = tr(W H W^T), the error's scale. */
static qc_status load_weight(gctx *c, const qc_gpu_layer *layer, qc_linear_id l, int N, int K, size_t off,
                             const float *H, double *ref) {
    const size_t nk = (size_t)N * K;
    float *W32 = c->W32 + off * K, *Wo = c->Wo + off * K;
    qc_status st = qc_gpu_f16_to_f32(c->g, layer->w[l], W32, nk);
    if (st == QC_OK) st = qc_gpu_copy(c->g, Wo, W32, nk * sizeof(float));
    return st ? st : qc_gpu_quad_form(c->sv, Wo, H, N, K, ref);
}

/* last_user: no later linear of this group needs this H, so GPTQ may consume it (no copy). */
static qc_status solve_linear(gctx *c, int li, qc_linear_id l, qc_gpu_layer *layer, bool last_user, bool rtn) {
    const qc_pipeline_opts *o = c->o;
    qc_linear_report *r = rep_of(c, li, l);
    int N = r->N, K = r->K;
    const qc_linear_id cap = qc_linear_input(&c->m->cfg, l);
    const float *H = c->Hs[cap];
    double ts = qc_time_now(), ref = 0;
    qc_status st = load_weight(c, layer, l, N, K, 0, H, &ref);
    bool gptq = o->method == QC_METHOD_GPTQ && !rtn;
    /* the linears sharing an H (adjacent) share its factor: the first factors a copy in Hw, the others
     * sweep with that factor again */
    bool again = gptq && c->hw_cap == (int)cap;
    bool copy = gptq && !again && !last_user;
    if (!again) c->hw_cap = -1;
    if (copy && (size_t)K * K > c->Hw_elems) st = qc_fail(QC_ERR_ARG, "%s: no room for a Hessian copy", r->name);
    if (st == QC_OK && copy) st = qc_gpu_copy(c->g, c->Hw, H, (size_t)K * K * sizeof(float));
    if (st == QC_OK) st = qc_qlinear_alloc(&c->ql, N, K, o->q.bits, o->q.group_size, o->q.sym, false);
    if (st == QC_OK) {
        if (gptq) {
            qc_gptq_stats gs;
            memset(&gs, 0, sizeof gs);
            if (again) {
                st = qc_gptq_quantize_gpu_again(c->sv, c->W32, N, K, &o->q, &c->ql, o->keep_fake, &gs);
            } else {
                st = qc_gptq_quantize_gpu(c->sv, c->W32, copy ? c->Hw : (float *)H, N, K, &o->q, &c->ql, o->keep_fake, &gs);
                if (st == QC_OK && copy) c->hw_cap = (int)cap;
            }
            if (last_user) c->hw_cap = -1;
            r->damp = gs.damp_used;
            r->retries = gs.retries;
            r->dead_cols = gs.dead_cols;
        } else {
            st = qc_rtn_quantize_gpu(c->sv, c->W32, N, K, o->q.bits, o->q.group_size, o->q.sym, &c->ql, o->keep_fake);
        }
    }
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    if (st) {
        qc_error_prefix("%s", r->name);
        return st;
    }
    r->seconds = qc_time_now() - ts;
    c->res->t_solve += r->seconds;
    return finish_linear(c, li, l, layer, gptq ? NULL : H, ref, 0);
}

/* The driver's solve_run: GPTQ of n linears sharing an input (q/k/v) as one problem, their weights stacked
 * along N in W32 (GPTQ treats rows independently: each row's codes are what its own solve gives, up to the
 * GEMMs' rounding at another N), one factorisation and one sweep over all rows, which fills the device
 * where k and v alone (N = 1024 on 8B) leave most of it idle. Taken when the stack fits the buffers sized
 * for the widest linear (so no memory is added) and qc_gpu_solve_stacked() allows it. Each linear's report
 * seconds are the run's split by rows. */
static qc_status gpu_solve_run(void *be, int li, const qc_linear_id *ls, int n, bool last_user, bool *taken) {
    gctx *c = be;
    const qc_pipeline_opts *o = c->o;
    *taken = false;
    if (o->method != QC_METHOD_GPTQ || n > QC_LIN_COUNT || !qc_gpu_solve_stacked()) return QC_OK;
    const int K = rep_of(c, li, ls[0])->K;
    int Nt = 0, Ns[QC_LIN_COUNT];
    for (int i = 0; i < n; i++) {
        const qc_linear_report *r = rep_of(c, li, ls[i]);
        if (r->K != K) return QC_OK;
        Ns[i] = r->N;
        Nt += r->N;
    }
    if (Nt > c->Nmax || (size_t)Nt * K > c->NKmax) return QC_OK;
    *taken = true;
    const qc_linear_id cap = qc_linear_input(&c->m->cfg, ls[0]);
    float *H = c->Hs[cap];
    double ts = qc_time_now(), ref[QC_LIN_COUNT];
    qc_status st = QC_OK;
    for (int i = 0, row0 = 0; i < n && st == QC_OK; row0 += Ns[i], i++)
        st = load_weight(c, c->layer, ls[i], Ns[i], K, (size_t)row0, H, &ref[i]);
    /* as solve_linear: a later linear of the group on the same H sweeps with this factor again */
    const bool copy = !last_user;
    c->hw_cap = -1;
    if (st == QC_OK && copy) st = qc_gpu_copy(c->g, c->Hw, H, (size_t)K * K * sizeof(float));
    qc_qlinear qt = {0};
    qc_gptq_stats gs;
    memset(&gs, 0, sizeof gs);
    if (st == QC_OK) st = qc_qlinear_alloc(&qt, Nt, K, o->q.bits, o->q.group_size, o->q.sym, false);
    if (st == QC_OK) st = qc_gptq_quantize_gpu(c->sv, c->W32, copy ? c->Hw : H, Nt, K, &o->q, &qt, o->keep_fake, &gs);
    if (st == QC_OK && copy) c->hw_cap = (int)cap;
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    if (st) {
        qc_error_prefix("%s (solved with the linears after it on the same input)", rep_of(c, li, ls[0])->name);
        qc_qlinear_free(&qt);
        return st;
    }
    const double dt = qc_time_now() - ts;
    if (!c->stack_logged) /* once a run: the tests look for it */
        QC_LOGI("quantize: linears sharing an input solved stacked (layer %d: %d linears as one %d x %d problem)", li, n,
                Nt, K);
    c->stack_logged = true;
    int row0 = 0;
    for (int i = 0; i < n && st == QC_OK; row0 += Ns[i], i++) {
        qc_linear_report *r = rep_of(c, li, ls[i]);
        const int N = Ns[i], G = qt.n_groups;
        r->damp = gs.damp_used;
        r->retries = gs.retries;
        r->dead_cols = gs.dead_cols;
        r->seconds = dt * N / Nt;
        c->res->t_solve += r->seconds;
        st = qc_qlinear_alloc(&c->ql, N, K, o->q.bits, o->q.group_size, o->q.sym, false);
        if (st == QC_OK) { /* the linear's columns of the run's [G, Nt] params, its rows of the codes */
            for (int g = 0; g < G; g++) {
                memcpy(c->ql.scales + (size_t)g * N, qt.scales + (size_t)g * Nt + row0, sizeof(float) * N);
                memcpy(c->ql.zeros + (size_t)g * N, qt.zeros + (size_t)g * Nt + row0, sizeof(int32_t) * N);
            }
            memcpy(c->ql.g_idx, qt.g_idx, sizeof(int32_t) * K);
            if (o->keep_fake) memcpy(c->ql.codes, qt.codes + (size_t)row0 * K, (size_t)N * K);
            st = qc_gpu_solver_rows(c->sv, row0, N);
        }
        if (st == QC_OK) st = finish_linear(c, li, ls[i], c->layer, NULL, ref[i], (size_t)row0);
        else qc_qlinear_free(&c->ql);
        if (st) qc_error_prefix("%s", r->name);
    }
    qc_qlinear_free(&qt);
    return st;
}

/* X <- the given halves of the layer applied to X (all samples, in place); from the stash when it holds
 * this half's last input (the same result, bit for bit). */
static qc_status run_in_place(gctx *c, const qc_gpu_layer *layer, int halves) {
    double tf = qc_time_now();
    qc_status st = QC_OK;
    const bool stashed = c->stash_half == halves;
    const int in = !stashed ? 0 : halves == QC_GPU_ATTN_HALF ? cap_width(c, QC_LIN_O) : cap_width(c, QC_LIN_DOWN);
    c->stash_half = 0;
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        float *x = c->X + (size_t)s0 * c->T * c->d;
        if (stashed)
            st = qc_gpu_layer_finish_half(c->f, layer, x, nb, c->T, halves, c->stash + (size_t)s0 * c->T * (size_t)in);
        else
            st = qc_gpu_layer_forward_half(c->f, layer, x, nb, c->T, halves, NULL, NULL);
    }
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    c->res->t_forward += qc_time_now() - tf;
    return st;
}

/* One pass of the given halves of the layer over every sample, from X (the blocks before them already applied
 * for good), accumulating the Hessians of the capture points in want (stopping after the last wanted one in
 * forward order); all_rows: experts whose down capture gets every row sent through them (NULL: the routed
 * rows). Leaves each 2/rows X^T X in c->Hs (a capture no row reached keeps its zero matrix) and the rows in
 * rows_out. */
static qc_status hessian_pass(gctx *c, int li, int halves, const bool *want, const bool *all_rows, int64_t *rows_out) {
    const qc_model_config *cfg = &c->m->cfg;
    hcap *hc = calloc(1, sizeof *hc);
    qc_linear_id *caps = malloc(sizeof(qc_linear_id) * QC_LIN_MAX);
    qc_status st = hc && caps ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    int n_caps = st ? 0 : qc_arch_caps(cfg, li, caps);
    if (hc) {
        hc->c = c;
        hc->last = QC_LIN_Q;
    }
    for (int k = 0; k < n_caps && st == QC_OK; k++) { /* in forward order: the last wanted one stops it */
        qc_linear_id cap = caps[k];
        if (!want[cap]) continue;
        hc->want[cap] = true;
        hc->last = cap;
        st = hessian_buf(c, cap, cap_width(c, cap));
    }
    /* the stash: one half's pass whose last capture is that half's last linear, which the in-place pass
     * applies next (o_proj; down_proj of a dense MLP) */
    c->stash_half = 0;
    if (st == QC_OK && c->stash && hc && halves != QC_GPU_BOTH_HALVES && !all_rows &&
        ((halves == QC_GPU_ATTN_HALF && hc->last == QC_LIN_O) ||
         (halves == QC_GPU_MLP_HALF && hc->last == QC_LIN_DOWN && !c->layer->router)) &&
        cap_width(c, hc->last) <= c->stash_cols)
        hc->stash_in = cap_width(c, hc->last);
    qc_gpu_fwd_moe_all_rows(c->f, all_rows);
    double tf = qc_time_now();
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        hc->row0 = (size_t)s0 * c->T;
        st = qc_gpu_copy(c->g, c->xs, c->X + (size_t)s0 * c->T * c->d, sizeof(float) * (size_t)nb * c->T * c->d);
        if (st == QC_OK) st = qc_gpu_layer_forward_half(c->f, c->layer, c->xs, nb, c->T, halves, hessian_capture, hc);
        if (st == QC_OK) st = hc->st;
    }
    qc_gpu_fwd_moe_all_rows(c->f, NULL);
    for (int k = 0; k < n_caps && st == QC_OK; k++) {
        qc_linear_id cap = caps[k];
        if (!hc->want[cap]) continue;
        rows_out[cap] = hc->rows[cap];
        if (hc->rows[cap] == 0) continue; /* an expert no row reached: handled by the caller */
        size_t K = (size_t)cap_width(c, cap);
        st = qc_gpu_hessian_finish(c->g, c->Hs[cap], (int)K, 2.0f / (float)hc->rows[cap]);
    }
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    if (hc) {
        c->res->t_forward += qc_time_now() - tf - hc->t_hess;
        c->res->t_hessian += hc->t_hess;
    }
    for (int k = 0; k < n_caps && st == QC_OK; k++)
        if (hc->want[caps[k]] && hc->rows[caps[k]] > 0) st = check_hessian(c, caps[k], li);
    if (st == QC_OK && hc->stash_in > 0) c->stash_half = halves;
    free(hc);
    free(caps);
    return st;
}

static qc_status gpu_hessians(void *be, int li, int gi, int n_groups, const bool *want, const bool *all_rows,
                              int64_t *rows_out) {
    gctx *c = be;
    const qc_arch_desc *arch = qc_arch_desc_of(c->m->cfg.arch);
    c->hw_cap = -1; /* new Hessians: no factor in Hw is theirs */
    return hessian_pass(c, li, n_groups > 1 ? arch->seq[gi].block : QC_GPU_BOTH_HALVES, want, all_rows, rows_out);
}

static qc_status gpu_copy_hessian(void *be, qc_linear_id dst, qc_linear_id src, int K) {
    gctx *c = be;
    c->hw_cap = -1;
    return qc_gpu_copy(c->g, c->Hs[dst], c->Hs[src], sizeof(float) * (size_t)K * K);
}

static qc_status gpu_solve(void *be, int li, qc_linear_id l, bool last_user, bool rtn) {
    gctx *c = be;
    return solve_linear(c, li, l, c->layer, last_user, rtn);
}

static qc_status gpu_keep_f16(void *be, int li, qc_linear_id l, const char *why) {
    gctx *c = be;
    return keep_unquantized(c, li, l, c->layer, why);
}

/* True-sequential: the group's Hessians are consumed (their memory goes back for the next group's), and
 * once a block's groups are all final the block is applied to X for good (X becomes the residual after
 * it), so the next block's groups run only their own block: nothing is recomputed. */
static qc_status gpu_group_done(void *be, int li, int gi, int n_groups, const bool *want) {
    (void)li;
    gctx *c = be;
    if (n_groups == 1) return QC_OK;
    const qc_arch_desc *arch = qc_arch_desc_of(c->m->cfg.arch);
    for (int k = 0; k < QC_LIN_MAX; k++)
        if (want[k]) {
            qc_gpu_free(c->g, c->Hs[k]);
            c->Hs[k] = NULL;
        }
    if (gi + 1 < n_groups && arch->seq[gi + 1].block != arch->seq[gi].block)
        return run_in_place(c, c->layer, arch->seq[gi].block);
    return QC_OK;
}

static qc_status gpu_propagate(void *be, int li, int n_groups) {
    (void)li;
    gctx *c = be;
    const qc_arch_desc *arch = qc_arch_desc_of(c->m->cfg.arch);
    return run_in_place(c, c->layer, n_groups > 1 ? arch->seq[n_groups - 1].block : QC_GPU_BOTH_HALVES);
}

/* ---- AWQ ---- */
typedef struct {
    gctx     *c;
    size_t    row0;
    qc_status st;
} acap;

static bool awq_capture(void *user, qc_linear_id which, const uint16_t *x, int n, int in) {
    acap *a = user;
    if (a->st == QC_OK)
        a->st = qc_gpu_copy(a->c->g, a->c->A[which] + a->row0 * in, x, sizeof(uint16_t) * (size_t)n * in);
    return a->st == QC_OK;
}

/* The output of the module g's search compares (arch.h qc_awq_module).
 * A: [nsamp * T, K] fp16 on the device (the capture, or the search's windows gathered). */
static qc_status awq_module(gctx *c, const qc_gpu_layer *L, const qc_arch_awq *g, const uint16_t *A, int nsamp,
                            float *out) {
    qc_linear_id which = g->lin[0];
    int K = cap_width(c, g->input);
    qc_status st = QC_OK;
    for (int s0 = 0; s0 < nsamp && st == QC_OK; s0 += c->batch) {
        int nb = nsamp - s0 < c->batch ? nsamp - s0 : c->batch;
        size_t r0 = (size_t)s0 * c->T;
        const uint16_t *a = A + r0 * K;
        float *y = out + r0 * c->d;
        switch (g->module) {
        case QC_AWQ_MOD_ATTN: st = qc_gpu_attn_forward(c->f, L, a, y, nb, c->T); break;
        case QC_AWQ_MOD_MLP: st = qc_gpu_mlp_forward(c->f, L, a, y, nb * c->T); break;
        case QC_AWQ_MOD_LINEAR: st = qc_gpu_linear(c->g, a, L->w[which], L->b[which], y, nb * c->T, c->d, K, 0.0f); break;
        case QC_AWQ_MOD_MOE: /* MoE layers are refused before the run (qc_pipeline_run_gpu) */
            st = qc_fail(QC_ERR_UNSUPPORTED, "awq: the MoE block has no CUDA forward");
            break;
        }
    }
    return st;
}

typedef qc_arch_awq awq_group;

/* pipeline.c's awq_search on the device: the same candidates in the same order, the same tie rule and
 * the same windows (awq_search_samples for attention and MLP, every window for the one-linear
 * groups), every candidate by forwards (no X^T X path). */
static qc_status awq_search(gctx *c, const qc_gpu_layer *layer, const awq_group *gr, float *s, qc_pl_awq_choice *best) {
    int K = layer->in_features[gr->lin[0]], gs = c->o->q.group_size, bits = c->o->q.bits, T = c->T;
    int n = c->o->awq_search_samples;
    int nw = gr->module == QC_AWQ_MOD_LINEAR || n <= 0 || n >= c->nsamples ? c->nsamples : n;
    size_t out_n = (size_t)nw * T * (size_t)c->d;
    const uint16_t *A = c->A[gr->input];
    uint16_t *Asub = NULL;
    float *xm = malloc(sizeof(float) * K), *wm = malloc(sizeof(float) * K);
    float *other = malloc(sizeof(float) * K);
    qc_status st = (!xm || !wm || !other) ? qc_fail(QC_ERR_NOMEM, "awq: out of memory") : QC_OK;
    if (st == QC_OK && nw < c->nsamples) { /* the search's windows, gathered: window i * nsamples / nw */
        st = qc_gpu_alloc(c->g, (void **)&Asub, sizeof(uint16_t) * (size_t)nw * T * K, "AWQ's search windows");
        for (int i = 0; st == QC_OK && i < nw; i++)
            st = qc_gpu_copy(c->g, Asub + (size_t)i * T * K, A + (size_t)((int64_t)i * c->nsamples / nw) * T * K,
                             sizeof(uint16_t) * (size_t)T * K);
        if (Asub) A = Asub;
    }
    if (st == QC_OK) st = qc_gpu_awq_x_mean(c->g, c->A[gr->input], (int64_t)c->rows, K, xm); /* every window */
    if (st == QC_OK) {
        const uint16_t *ws[3];
        int ns[3];
        for (int i = 0; i < gr->n; i++) {
            ws[i] = layer->w[gr->lin[i]];
            ns[i] = layer->out_features[gr->lin[i]];
        }
        st = qc_gpu_awq_w_mean(c->g, ws, ns, gr->n, K, gs, wm);
    }
    if (st == QC_OK) st = awq_module(c, layer, gr, A, nw, c->ref);
    /* every candidate queued back to back (the scales uploaded at once, the losses' partial sums left on the
     * device), then one download: no wait between candidates. The same kernels on the same inputs as one at a
     * time, and the totals summed in qc_gpu_sqdiff_sum's order, so the same losses and the same choice. */
    qc_gpu_layer trial = *layer;
    const int n_grid = 20;
    qc_awq_scale_mode mode = c->o->awq_scale;
    const int nc = qc_awq_n_candidates(mode, n_grid);
    float *cands = malloc(sizeof(float) * K * (size_t)nc);
    const size_t pmax = QC_GPU_SQDIFF_PARTS_MAX;
    double *parts = malloc(sizeof(double) * pmax * (size_t)nc);
    qc_awq_formula *fs = malloc(sizeof *fs * (size_t)nc);
    double *rs = malloc(sizeof(double) * (size_t)nc);
    bool *ok = calloc((size_t)nc, sizeof(bool));
    if (st == QC_OK && (!cands || !parts || !fs || !rs || !ok)) st = qc_fail(QC_ERR_NOMEM, "awq: out of memory");
    if (st == QC_OK && nc > c->n_cand) st = qc_fail(QC_ERR_ARG, "awq: %d candidates for %d slots", nc, c->n_cand);
    for (int j = 0; j < nc && st == QC_OK; j++)
        ok[j] = qc_awq_candidate_scales(mode, n_grid, j, xm, wm, K, &fs[j], &rs[j], cands + (size_t)j * K, other);
    if (st == QC_OK) st = qc_gpu_upload(c->g, c->sdev, cands, sizeof(float) * K * (size_t)nc);
    for (int j = 0; j < nc && st == QC_OK; j++) {
        if (!ok[j]) continue;
        for (int i = 0; i < gr->n && st == QC_OK; i++) {
            qc_linear_id l = gr->lin[i];
            st = qc_gpu_awq_scaled_qdq(c->g, layer->w[l], c->sdev + (size_t)j * K, layer->out_features[l], K, bits, gs,
                                       c->trial[i]);
            trial.w[l] = c->trial[i];
        }
        if (st == QC_OK) st = awq_module(c, &trial, gr, A, nw, c->out);
        if (st == QC_OK) st = qc_gpu_sqdiff_parts(c->g, c->ref, c->out, out_n, c->parts + (size_t)j * pmax);
    }
    if (st == QC_OK) st = qc_gpu_download(c->g, parts, c->parts, sizeof(double) * pmax * (size_t)nc);
    best->loss = INFINITY;
    for (int j = 0; j < nc && st == QC_OK; j++) {
        if (!ok[j]) continue;
        double loss = qc_gpu_sqdiff_parts_total(parts + (size_t)j * pmax, out_n) / (double)out_n;
        if (loss < best->loss) { /* strictly smaller, as the reference */
            best->loss = loss;
            best->ratio = rs[j];
            best->formula = fs[j];
            memcpy(s, cands + (size_t)j * K, sizeof(float) * K);
        }
    }
    free(cands);
    free(parts);
    free(fs);
    free(rs);
    free(ok);
    if (st == QC_OK && !isfinite(best->loss))
        st = qc_fail(QC_ERR_NUMERIC, "awq: the scale search found no finite loss (non-finite activations?)");
    if (Asub) { /* the copies are asynchronous: done before the buffer goes */
        qc_status st2 = qc_gpu_sync(c->g);
        if (st == QC_OK) st = st2;
        qc_gpu_free(c->g, Asub);
    }
    free(xm);
    free(wm);
    free(other);
    return st;
}

/* The original layer on all samples: every linear's input, and the next layer's input. */
static qc_status gpu_awq_capture(void *be, int li) {
    (void)li;
    gctx *c = be;
    qc_status st = QC_OK;
    acap ac = {.c = c};
    double tf = qc_time_now();
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        ac.row0 = (size_t)s0 * c->T;
        st = qc_gpu_layer_forward(c->f, c->layer, c->X + ac.row0 * c->d, nb, c->T, awq_capture, &ac);
        if (st == QC_OK) st = ac.st;
    }
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    c->res->t_forward += qc_time_now() - tf;
    return st;
}

static qc_status gpu_awq_search(void *be, int li, const qc_arch_awq *g, float *s, qc_pl_awq_choice *best) {
    (void)li;
    gctx *c = be;
    return awq_search(c, c->layer, g, s, best);
}

/* previous op /= s, the scaled linears' columns *= s, their cached inputs /= s */
static qc_status gpu_awq_fold(void *be, int li, const qc_arch_awq *gr, const float *s) {
    (void)li;
    gctx *c = be;
    qc_gpu_layer *layer = c->layer;
    int K = layer->in_features[gr->lin[0]];
    qc_status st = qc_gpu_upload(c->g, c->sdev, s, sizeof(float) * K);
    if (st) return st;
    if (gr->prev_norm >= 0) {
        st = qc_gpu_div_vec_offset_f32(c->g, *qc_gpu_layer_norm(layer, (qc_norm_id)gr->prev_norm), K, c->sdev,
                                       qc_norm_offset(&c->m->cfg));
        float *nb = layer->norm_bias[gr->prev_norm]; /* a LayerNorm (OPT): w * xhat + b, both divided */
        if (st == QC_OK && nb) st = qc_gpu_div_vec_f32(c->g, nb, K, c->sdev);
    } else {
        qc_linear_id p = (qc_linear_id)gr->prev_lin;
        int Np = layer->out_features[p], Kp = layer->in_features[p];
        st = qc_gpu_div_rows_f16(c->g, layer->w[p], Np, Kp, Np - K, K, c->sdev);
        if (st == QC_OK && layer->b[p]) st = qc_gpu_div_vec_f32(c->g, layer->b[p] + (Np - K), K, c->sdev);
    }
    for (int i = 0; i < gr->n && st == QC_OK; i++) {
        qc_linear_id l = gr->lin[i];
        st = qc_gpu_scale_cols_f16(c->g, layer->w[l], layer->out_features[l], K, c->sdev);
    }
    if (st == QC_OK) st = qc_gpu_div_cols_act_f16(c->g, c->A[gr->input], (int64_t)c->rows, K, c->sdev);
    if (st == QC_OK) st = qc_gpu_sync(c->g); /* c->sdev is reused by the next fold */
    return st;
}

/* Hessians of the scaled inputs, for the error report */
static qc_status gpu_awq_hessians(void *be, int li, const qc_arch_awq *groups, int ng, float *const *scales,
                                  const qc_pl_awq_choice *choice) {
    (void)li, (void)groups, (void)ng, (void)scales, (void)choice;
    gctx *c = be;
    const qc_arch_desc *arch = qc_arch_desc_of(c->m->cfg.arch);
    const qc_linear_id *caps = arch->caps;
    qc_status st = QC_OK;
    double th = qc_time_now();
    for (int k = 0; k < arch->n_caps && st == QC_OK; k++) {
        int K = cap_width(c, caps[k]);
        st = hessian_buf(c, caps[k], K);
        for (size_t r0 = 0; r0 < c->rows && st == QC_OK; r0 += (size_t)c->batch * c->T) {
            size_t n = c->rows - r0 < (size_t)c->batch * c->T ? c->rows - r0 : (size_t)c->batch * c->T;
            st = qc_gpu_hessian_add(c->g, c->A[caps[k]] + r0 * K, (int)n, K, c->Hs[caps[k]]);
        }
        if (st == QC_OK) st = qc_gpu_hessian_finish(c->g, c->Hs[caps[k]], K, 2.0f / (float)c->rows);
    }
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    c->res->t_hessian += qc_time_now() - th;
    return st;
}

/* clipping (unless exempt), then round-to-nearest */
static qc_status gpu_awq_quantize(void *be, int li, qc_linear_id l) {
    gctx *c = be;
    const qc_pipeline_opts *o = c->o;
    qc_gpu_layer *layer = c->layer;
    qc_linear_report *r = rep_of(c, li, l);
    int N = r->N, K = r->K;
    double t0 = qc_time_now(), ref = 0;
    qc_linear_id cap = qc_linear_input(&c->m->cfg, l);
    const float *H = c->Hs[cap];
    qc_status st = load_weight(c, layer, l, N, K, 0, H, &ref); /* the scaled weight */
    if (st == QC_OK && o->awq_clip && !qc_arch_desc_of(c->m->cfg.arch)->lin[l].awq_no_clip)
        st = qc_gpu_awq_clip(c->g, c->W32, N, K, c->A[cap], (int64_t)c->rows, o->q.bits, o->q.group_size, 512, 20, 0.5);
    if (st == QC_OK) st = qc_qlinear_alloc(&c->ql, N, K, o->q.bits, o->q.group_size, false, false);
    if (st == QC_OK) st = qc_awq_quantize_gpu(c->sv, c->W32, N, K, o->q.bits, o->q.group_size, &c->ql, o->keep_fake);
    if (st == QC_OK) st = qc_gpu_sync(c->g);
    if (st) {
        qc_error_prefix("%s", r->name);
        return st;
    }
    r->seconds = qc_time_now() - t0;
    c->res->t_solve += r->seconds;
    return finish_linear(c, li, l, layer, H, ref, 0);
}

static const qc_pl_backend_ops k_gpu_ops = {
    .hessians = gpu_hessians,
    .copy_hessian = gpu_copy_hessian,
    .solve = gpu_solve,
    .solve_run = gpu_solve_run,
    .keep_f16 = gpu_keep_f16,
    .group_done = gpu_group_done,
    .propagate = gpu_propagate,
    .awq_capture = gpu_awq_capture,
    .awq_search = gpu_awq_search,
    .awq_fold = gpu_awq_fold,
    .awq_hessians = gpu_awq_hessians,
    .awq_quantize = gpu_awq_quantize,
};

/* Norms into the part; the part, the report rows and (at a save boundary) X to the writer thread; the fake
 * layer's norms and biases. */
static int d_of(const gctx *c) { return c->m->cfg.hidden_size; }

static qc_status layer_epilogue(gctx *c, int li, const qc_gpu_layer *layer) {
    const qc_model_config *cfg = &c->m->cfg;
    double tw = qc_time_now();
    char nm[192], path[4096];
    const qc_arch_desc *arch = qc_arch_desc_of(cfg->arch);
    qc_status st = QC_OK;
    for (int k = 0; k < QC_NORM_COUNT && st == QC_OK; k++) {
        const float *nw = *qc_gpu_layer_norm((qc_gpu_layer *)layer, (qc_norm_id)k);
        if (!nw) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->norm[k].name);
        st = part_add_dev_f32(c, nm, nw, qc_norm_dim(cfg, (qc_norm_id)k));
        if (st || !layer->norm_bias[k]) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.bias", qc_layers_path(cfg), li, arch->norm[k].name);
        st = part_add_dev_f32(c, nm, layer->norm_bias[k], qc_norm_dim(cfg, (qc_norm_id)k));
    }
    /* the router and shared-expert gate stay F16, never quantized (kept for the fake layer too) */
    float *gates[2] = {NULL, NULL};
    if (st == QC_OK && layer->router && (st = f16_to_host(c, layer->router, (size_t)cfg->n_experts * d_of(c), &gates[0])) == QC_OK) {
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->moe->router);
        st = qc_pl_part_add_f16(&c->part, nm, gates[0], cfg->n_experts, cfg->hidden_size);
    }
    if (st == QC_OK && layer->shared_gate && (st = f16_to_host(c, layer->shared_gate, (size_t)d_of(c), &gates[1])) == QC_OK) {
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->moe->shared_gate);
        st = qc_pl_part_add_f16(&c->part, nm, gates[1], 1, cfg->hidden_size);
    }
    if (st == QC_OK) st = qc_pl_part_fuse(&c->part, cfg, li);
    snprintf(path, sizeof path, "%s/layer-%05d.safetensors", c->o->work_dir, li);
    /* the previous layer's part and state are on disk (and xh is free) once its job is joined */
    qc_status js = host_job_join(&c->wr);
    if (st == QC_OK) st = js;
    const qc_pipeline_opts *o = c->o;
    int L = c->m->cfg.n_layers;
    bool save = st == QC_OK && c->xh && o->save_every >= 0 &&
                (li + 1 == L || o->save_every == 0 || qc_time_now() - c->last_save >= o->save_every);
    if (save) { /* X is the next layer's input now: the layer's work ended with a sync (none after the last) */
        if (o->on_phase) o->on_phase(o->user, li, L, "save");
        if (li + 1 < L) st = qc_gpu_download(c->g, c->xh, c->X, c->rows * (size_t)c->d * sizeof(float));
        c->last_save = qc_time_now();
    }
    if (st == QC_OK) st = part_writer_start(c, path, li, save);
    if (st == QC_OK) st = qc_pl_push_str(&c->res->parts, &c->res->n_parts, path);
    qc_pl_part_free(&c->part);
    if (st == QC_OK && c->o->keep_fake) {
        qc_layer *fk = &c->res->fake[li];
        fk->index = li;
        fk->router = gates[0];
        fk->shared_gate = gates[1];
        gates[0] = gates[1] = NULL;
        for (int l = 0; l < qc_arch_n_lin(cfg) && st == QC_OK; l++) {
            if (!layer->w[l]) continue; /* absent in this layer */
            fk->out_features[l] = layer->out_features[l];
            fk->in_features[l] = layer->in_features[l];
            st = fake_vec(c, layer->b[l], layer->out_features[l], &fk->b[l]);
        }
        for (int k = 0; k < QC_NORM_COUNT && st == QC_OK; k++) {
            st = fake_vec(c, *qc_gpu_layer_norm((qc_gpu_layer *)layer, (qc_norm_id)k), qc_norm_dim(cfg, (qc_norm_id)k),
                          qc_layer_norm(fk, (qc_norm_id)k));
            if (st == QC_OK)
                st = fake_vec(c, layer->norm_bias[k], qc_norm_dim(cfg, (qc_norm_id)k), qc_layer_norm_bias(fk, (qc_norm_id)k));
        }
    }
    qc_aligned_free(gates[0]);
    qc_aligned_free(gates[1]);
    c->res->t_write += qc_time_now() - tw;
    return st;
}

/* The base part (embedding, final norm, head) is written by a host thread while the GPU works. */
typedef struct {
    const qc_model *m;
    const qc_pipeline_opts *o;
    char            path[4096];
} base_args;

static qc_status write_base_job(void *arg) {
    base_args *b = arg;
    return qc_pl_write_base_part(b->m, b->path, b->o);
}

qc_status qc_pipeline_run_gpu(const qc_model *m, const int32_t *ids, int nsamples, int seqlen,
                              const qc_pipeline_opts *o, qc_pipeline_result *res) {
    memset(res, 0, sizeof *res);
    const qc_model_config *cfg = &m->cfg;
    int d = cfg->hidden_size, T = seqlen, L = cfg->n_layers;
    if (nsamples < 1 || T < 1) return qc_fail(QC_ERR_ARG, "quantize: no calibration samples");
    if (o->method == QC_METHOD_AWQ && (o->q.group_size <= 0 || o->format == QC_PACK_GPTQ))
        return qc_fail(QC_ERR_ARG, "quantize: awq needs a positive group size and asymmetric storage (awq or gptq_v2)");
    if (qc_arch_n_lin(cfg) != QC_LIN_COUNT && o->method == QC_METHOD_AWQ)
        return qc_fail(QC_ERR_UNSUPPORTED, "quantize: AWQ of mixture-of-experts models (%s) runs on the CPU only in "
                       "this version (--device cpu; GPTQ and RTN run on the GPU)", cfg->arch_name);
    if (mkdir(o->work_dir, 0755) != 0 && errno != EEXIST)
        return qc_fail(QC_ERR_IO, "%s: cannot create work directory: %s", o->work_dir, strerror(errno));
    qc_pl_set_clamp_f16(o->clamp_f16);
    gctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.o = o;
    c.res = res;
    c.d = d;
    c.T = T;
    c.nsamples = nsamples;
    c.rows = (size_t)nsamples * T;
    int stride = qc_arch_n_lin(cfg);
    c.drv = (qc_pl_driver){.m = m, .o = o, .res = res, .ops = &k_gpu_ops, .be = &c,
                           .total = qc_pl_count_linears(cfg, L), .rows = (int64_t)nsamples * T};
    size_t nkmax = 0;
    int Nmax = 0;
    for (int l = 0; l < stride; l++) { /* the widest linear's shapes (arch.h) */
        int N, K;
        qc_linear_shape(cfg, (qc_linear_id)l, &N, &K);
        nkmax = (size_t)N * K > nkmax ? (size_t)N * K : nkmax;
        Nmax = N > Nmax ? N : Nmax;
        c.Kmax = K > c.Kmax ? K : c.Kmax;
    }
    c.Nmax = Nmax;
    c.NKmax = nkmax;

    base_args ba = {.m = m, .o = o};
    host_job base = {0};
    c.base = &base;
    qc_status st = qc_gpu_open(o->device, &c.g);
    if (st) return st;
    snprintf(res->device_desc, sizeof res->device_desc, "%s", qc_gpu_describe(c.g));
    QC_LOGI("quantize: on %s", qc_gpu_describe(c.g));
    res->lin = calloc((size_t)L * stride, sizeof *res->lin);
    res->lin_stride = stride;
    c.wr_res.lin = calloc((size_t)L * stride, sizeof *c.wr_res.lin);
    c.wr_res.lin_stride = stride;
    if (o->keep_fake) {
        res->fake = calloc((size_t)L, sizeof *res->fake);
        res->n_layers = L;
    }
    if (!res->lin || !c.wr_res.lin || (o->keep_fake && !res->fake)) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* the boundary a saved state resumes at (qc_resume_load checks the state below): the first layer read */
    int boundary = 0, start = 0;
    if ((st = qc_resume_peek(o->work_dir, &boundary))) goto out;
    /* fixed allocations first; the forward scratch takes what fits of the rest */
    if ((st = qc_gpu_loader_create(c.g, m, &c.ld))) goto out;
    if (boundary >= 0 && boundary < L && (st = qc_gpu_loader_prefetch(c.ld, boundary))) goto out;
    if ((st = qc_gpu_alloc(c.g, (void **)&c.X, c.rows * d * sizeof(float), "the calibration activations"))) goto out;
    if ((st = qc_gpu_solver_create_nk(c.g, Nmax, c.Kmax, nkmax, &c.sv))) goto out;
    c.hw_cap = -1;
    c.Hw_elems = (size_t)d * d; /* only q/k/v and gate/up share a Hessian, and their inputs are d wide */
    if (o->method == QC_METHOD_GPTQ &&
        (st = qc_gpu_alloc(c.g, (void **)&c.Hw, sizeof(float) * c.Hw_elems, "a Hessian copy for q/k and gate")))
        goto out;
    if ((st = qc_gpu_alloc(c.g, (void **)&c.W32, sizeof(float) * nkmax, "an fp32 weight"))) goto out;
    if ((st = qc_gpu_alloc(c.g, (void **)&c.Wo, sizeof(float) * nkmax, "an fp32 weight copy"))) goto out;
    if (o->method == QC_METHOD_AWQ) {
        const qc_arch_desc *arch = qc_arch_desc_of(cfg->arch);
        for (int k = 0; k < arch->n_caps && st == QC_OK; k++)
            st = qc_gpu_alloc(c.g, (void **)&c.A[arch->caps[k]], c.rows * cap_width(&c, arch->caps[k]) * sizeof(uint16_t),
                              "AWQ's captured linear inputs");
        if (st == QC_OK) st = qc_gpu_alloc(c.g, (void **)&c.ref, c.rows * d * sizeof(float), "AWQ's reference outputs");
        if (st == QC_OK) st = qc_gpu_alloc(c.g, (void **)&c.out, c.rows * d * sizeof(float), "AWQ's trial outputs");
        for (int i = 0; i < 3 && st == QC_OK; i++)
            st = qc_gpu_alloc(c.g, (void **)&c.trial[i], nkmax * sizeof(uint16_t), "AWQ's trial weights");
        c.n_cand = qc_awq_n_candidates(o->awq_scale, 20);
        if (st == QC_OK)
            st = qc_gpu_alloc(c.g, (void **)&c.sdev, sizeof(float) * c.Kmax * (size_t)c.n_cand, "AWQ candidate scales");
        if (st == QC_OK)
            st = qc_gpu_alloc(c.g, (void **)&c.parts, sizeof(double) * QC_GPU_SQDIFF_PARTS_MAX * (size_t)c.n_cand,
                              "AWQ search losses");
        if (st) goto out;
    }
    {
        /* 16384 tokens per batch for a 4096-wide model, 4096 for an 8192-wide one (the scratch grows
         * with d * ff): GEMMs that still fill the device, scratch of 1-2 GiB */
        long long bt_def = 16384LL * 4096 * 4096 / ((long long)d * d);
        bt_def = bt_def > 16384 ? 16384 : bt_def < 1 ? 1 : bt_def;
        int bt_tokens = o->batch_tokens > 0 ? o->batch_tokens : (int)bt_def;
        c.batch = bt_tokens / T < 1 ? 1 : bt_tokens / T;
        if (c.batch > nsamples) c.batch = nsamples;
        size_t fr = 0, tot = 0;
        if ((st = qc_gpu_mem_info(c.g, &fr, &tot))) goto out;
        /* leave room for the Hessians still to come and the libraries' workspaces */
        size_t reserve = sizeof(float) * ((size_t)c.Kmax * c.Kmax + 3 * (size_t)d * d) + ((size_t)1 << 30);
        size_t budget = fr > reserve ? fr - reserve : 0;
        while (c.batch > 1 && qc_gpu_fwd_bytes(cfg, c.batch, T) + (size_t)c.batch * T * d * sizeof(float) > budget)
            c.batch /= 2;
        if ((st = qc_gpu_alloc(c.g, (void **)&c.xs, (size_t)c.batch * T * d * sizeof(float), "a batch of activations")))
            goto out;
        if ((st = qc_gpu_fwd_create(c.g, cfg, c.batch, T, &c.f))) goto out;
        res->gpu_attention = qc_gpu_fwd_fused_attn(c.f) ? "fused" : "plain";
        QC_LOGI("quantize: %d sequences per batch of the forward pass", c.batch);
        /* the stash (gctx), in the room left beside the same reserve: speed only, the results are the same
         * without it (QCAL_GPU_NO_STASH=1 leaves it out, for the tests and benchmarks that compare) */
        const char *ns = getenv("QCAL_GPU_NO_STASH");
        int cols = cap_width(&c, QC_LIN_O);
        for (int li = 0; li < L; li++) /* a dense MLP's down_proj input, if any layer has one */
            if (!qc_layer_is_moe(cfg, li) && qc_linear_present(cfg, li, QC_LIN_DOWN) && cap_width(&c, QC_LIN_DOWN) > cols)
                cols = cap_width(&c, QC_LIN_DOWN);
        /* beside it, every Hessian of the layer with the most (an MoE layer's experts' all at once) and the
         * libraries' 1 GiB: more than any one group holds at a time */
        size_t sb = c.rows * (size_t)cols * sizeof(uint16_t), room = 0, hs_max = 0;
        qc_linear_id *caps = malloc(sizeof(qc_linear_id) * QC_LIN_MAX);
        for (int li = 0; caps && li < L; li++) {
            size_t hs = 0;
            int n_caps = qc_arch_caps(cfg, li, caps);
            for (int k = 0; k < n_caps; k++) hs += sizeof(float) * (size_t)cap_width(&c, caps[k]) * cap_width(&c, caps[k]);
            hs_max = hs > hs_max ? hs : hs_max;
        }
        size_t keep = hs_max + ((size_t)1 << 30) > reserve ? hs_max + ((size_t)1 << 30) : reserve;
        bool take = caps && o->method != QC_METHOD_AWQ && o->true_sequential && !(ns && *ns && *ns != '0') &&
                    qc_gpu_mem_room(c.g, &room) == QC_OK && room >= sb + keep;
        free(caps);
        if (take) {
            if ((st = qc_gpu_alloc(c.g, (void **)&c.stash, sb, "the o_proj/down_proj inputs kept for the in-place pass")))
                goto out;
            c.stash_cols = cols;
            res->gpu_stash_bytes = sb;
            QC_LOGI("quantize: o_proj/down_proj inputs kept between passes (%.1f GiB)", sb / 1073741824.0);
        }
        qc_error_clear();
    }

    /* X on the host for x.bin: read back from it when resuming, downloaded at each save boundary */
    size_t xbytes = c.rows * (size_t)d * sizeof(float);
    if (o->save_every >= 0 || boundary > 0) {
        if (qc_gpu_host_alloc((void **)&c.xh, xbytes, "the activations' resume snapshot") == QC_OK) {
            c.xh_pinned = true;
        } else { /* pinned memory is a nicety here (faster downloads), not a need */
            qc_error_clear();
            if (!(c.xh = qc_aligned_alloc(xbytes))) {
                st = qc_fail(QC_ERR_NOMEM, "out of memory for the activations' resume snapshot (%.1f MiB)",
                             xbytes / 1048576.0);
                goto out;
            }
        }
        if ((st = qc_resume_load(o->work_dir, L, c.rows, d, c.xh, res, &start))) goto out;
    }
    res->resumed_at = start;

    double t0 = qc_time_now();
    if (start > 0) {
        QC_LOGI("resuming at layer %d of %d: layers 0-%d and their activations come from %s", start, L, start - 1,
                o->work_dir);
        c.drv.done = qc_pl_count_linears(cfg, start);
        if (start < L && (st = qc_gpu_upload(c.g, c.X, c.xh, xbytes))) goto out;
    } else {
        if (o->on_phase) o->on_phase(o->user, -1, L, "embed");
        if ((st = qc_gpu_embed(c.g, m, ids, c.rows, T, c.X))) goto out;
        res->t_embed = qc_time_now() - t0;
        snprintf(ba.path, sizeof ba.path, "%s/base.safetensors", o->work_dir);
        /* listed first, as qc_resume_load lists it; a failed write fails the run at the join */
        if ((st = qc_pl_push_str(&res->parts, &res->n_parts, ba.path))) goto out;
        if ((st = host_job_start(&base, write_base_job, &ba))) goto out;
    }

    c.last_save = qc_time_now();
    for (int li = start; li < L && st == QC_OK; li++) {
        qc_gpu_layer *layer;
        if (qc_cancel_requested()) {
            st = qc_fail(QC_ERR_CANCELLED, "quantize: interrupted before layer %d", li);
            break;
        }
        if (o->on_phase) o->on_phase(o->user, li, L, "load");
        if ((st = qc_gpu_loader_get(c.ld, li, &layer))) break;
        if (li + 1 < L && (st = qc_gpu_loader_prefetch(c.ld, li + 1))) break;
        if ((st = qc_gpu_loader_check_finite(c.ld, layer))) break;
        c.layer = layer;
        st = qc_pl_layer(&c.drv, li);
        c.layer = NULL;
        if (st == QC_OK && o->on_phase) o->on_phase(o->user, li, L, "part");
        if (st == QC_OK) st = layer_epilogue(&c, li, layer);
        qc_pl_part_free(&c.part);
    }
out:
    {   /* the writer first: it may be waiting on the base part (and joins it then) */
        qc_status js = host_job_join(&c.wr);
        if (st == QC_OK) st = js;
        js = host_job_join(&base);
        if (st == QC_OK) st = js;
        QC_LOGI("quantize: layer parts%s written in %.1f s, the base part in %.1f s, overlapped with the GPU",
                c.xh ? " and resume state" : "", c.wr.seconds, base.seconds);
    }
    if (c.ld) qc_gpu_loader_times(c.ld, &res->t_read, &res->t_read_wait);
    if (c.g) {
        res->gpu_peak_bytes = qc_gpu_bytes_peak(c.g);
        res->gpu_peak_device = qc_gpu_bytes_peak_device(c.g);
    }
    qc_qlinear_free(&c.ql);
    qc_pl_part_free(&c.part);
    arena_release(&c.ar[0]); /* the writer is joined: nothing borrows them now */
    arena_release(&c.ar[1]);
    qc_gpu_fwd_free(c.f);
    qc_gpu_loader_free(c.ld);
    qc_gpu_solver_free(c.sv);
    if (c.xh_pinned) qc_gpu_host_free(c.xh);
    else qc_aligned_free(c.xh);
    free(c.wr_res.lin);
    free(c.wr_res.unquantized);
    qc_gpu_close(c.g); /* frees every device buffer */
    res->n_lin = L * stride;
    res->lin_stride = stride;
    if (st != QC_OK) {
        qc_linear_report *keep = res->lin;
        res->lin = NULL;
        qc_pipeline_result_free(res);
        free(keep);
    }
    return st;
}
