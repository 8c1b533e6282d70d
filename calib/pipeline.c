#include "pipeline.h"
#include "pipeline_internal.h"

#include "awq.h"
#include "awq_format.h"
#include "hessian.h"
#include "qc_signal.h"
#include "resume.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *qc_method_name(qc_method m) {
    switch (m) {
    case QC_METHOD_RTN:  return "rtn";
    case QC_METHOD_GPTQ: return "gptq";
    case QC_METHOD_AWQ:  return "awq";
    }
    return "?";
}

static qc_status part_add(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, void *data,
                          size_t nbytes, bool borrowed) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 32;
        qc_pl_tensor *t = realloc(p->t, sizeof *t * (size_t)cap);
        if (!t) {
            if (!borrowed) free(data);
            return qc_fail(QC_ERR_NOMEM, "out of memory");
        }
        p->t = t;
        p->cap = cap;
    }
    qc_pl_tensor *t = &p->t[p->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = nbytes;
    t->borrowed = borrowed;
    return QC_OK;
}

qc_status qc_pl_part_add(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, void *data,
                         size_t nbytes) {
    return part_add(p, name, dt, ndim, d0, d1, data, nbytes, false);
}

qc_status qc_pl_part_add_borrowed(qc_pl_parts *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1,
                                  void *data, size_t nbytes) {
    return part_add(p, name, dt, ndim, d0, d1, data, nbytes, true);
}

/* Set by qc_pipeline_run for the run in progress (one run per process at a time). */
static bool g_clamp_f16;

void qc_pl_set_clamp_f16(bool clamp) { g_clamp_f16 = clamp; }

static qc_status to_f16_at(const char *name, const float *x, size_t n, uint16_t *h, size_t base) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v || v - v != 0.0f) /* NaN or +-inf */
            return qc_fail(QC_ERR_NUMERIC, "%s: element %zu is %g (not finite); the input model or the arithmetic "
                           "produced it", name, base + i, (double)v);
        h[i] = qc_f32_to_fp16(v);
        if ((h[i] & 0x7c00u) == 0x7c00u) { /* rounds beyond the F16 range */
            if (!g_clamp_f16)
                return qc_fail(QC_ERR_NUMERIC, "%s: element %zu = %g is beyond the F16 range (+-65504) the checkpoint "
                               "stores; pass --clamp-f16 to clamp such values", name, base + i, (double)v);
            h[i] = v > 0 ? 0x7bffu : 0xfbffu;
        }
    }
    return QC_OK;
}

qc_status qc_pl_to_f16(const char *name, const float *x, size_t n, uint16_t *h) { return to_f16_at(name, x, n, h, 0); }

/* fmt: "%s.%d.%s.weight" with the layers' path, the layer and the tensor's path in it */
static qc_status check_finite_named(const float *x, size_t n, int cols, const char *fmt, const char *layers, int li,
                                    const char *what) {
    for (size_t i = 0; x && i < n; i++)
        if (x[i] != x[i] || x[i] - x[i] != 0.0f) {
            char nm[192];
            snprintf(nm, sizeof nm, fmt, layers, li, what);
            if (cols > 0)
                return qc_fail(QC_ERR_NUMERIC, "input model: tensor %s: element [%zu, %zu] is %g (not finite); qcal "
                               "quantizes only finite weights", nm, i / (size_t)cols, i % (size_t)cols, (double)x[i]);
            return qc_fail(QC_ERR_NUMERIC, "input model: tensor %s: element %zu is %g (not finite); qcal quantizes "
                           "only finite weights", nm, i, (double)x[i]);
        }
    return QC_OK;
}

qc_status qc_pl_check_layer(const qc_model_config *cfg, const qc_layer *layer, int li) {
    const qc_arch_desc *a = qc_arch_desc_of(cfg->arch);
    qc_status st = QC_OK;
    char path[128];
    for (int l = 0; st == QC_OK && l < qc_arch_n_lin(cfg); l++) {
        if (!layer->w[l]) continue;
        int N = layer->out_features[l], K = layer->in_features[l];
        qc_linear_path(cfg, (qc_linear_id)l, path, sizeof path);
        st = check_finite_named(layer->w[l], (size_t)N * K, K, "%s.%d.%s.weight", qc_layers_path(cfg), li, path);
        if (st == QC_OK) st = check_finite_named(layer->b[l], (size_t)N, 0, "%s.%d.%s.bias", qc_layers_path(cfg), li, path);
    }
    if (st == QC_OK && layer->router)
        st = check_finite_named(layer->router, (size_t)cfg->n_experts * cfg->hidden_size, cfg->hidden_size,
                                "%s.%d.%s.weight", qc_layers_path(cfg), li, a->moe->router);
    if (st == QC_OK && layer->shared_gate)
        st = check_finite_named(layer->shared_gate, (size_t)cfg->hidden_size, 0, "%s.%d.%s.weight", qc_layers_path(cfg),
                                li, a->moe->shared_gate);
    for (int k = 0; st == QC_OK && k < QC_NORM_COUNT; k++) {
        const float *nw = *qc_layer_norm((qc_layer *)layer, (qc_norm_id)k);
        if (nw)
            st = check_finite_named(nw, (size_t)qc_norm_dim(cfg, (qc_norm_id)k), 0, "%s.%d.%s.weight", qc_layers_path(cfg),
                                    li, a->norm[k].name);
        const float *nb = layer->norm_bias[k];
        if (st == QC_OK && nb)
            st = check_finite_named(nb, (size_t)qc_norm_dim(cfg, (qc_norm_id)k), 0, "%s.%d.%s.bias", qc_layers_path(cfg),
                                    li, a->norm[k].name);
    }
    return st;
}

/* F32 values -> a new F16 buffer added under `name`. */
qc_status qc_pl_part_add_f16(qc_pl_parts *p, const char *name, const float *x, int64_t d0, int64_t d1) {
    size_t n = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    uint16_t *h = malloc(n * sizeof(uint16_t) + 1);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory for %s", name);
    qc_status st = qc_pl_to_f16(name, x, n, h);
    if (st) {
        free(h);
        return st;
    }
    return qc_pl_part_add(p, name, QC_DTYPE_F16, d1 > 0 ? 2 : 1, d0, d1, h, n * sizeof(uint16_t));
}

qc_status qc_pl_part_write(qc_pl_parts *p, const char *path, const qc_pipeline_opts *o) {
    for (int i = 0; i < p->n; i++) { /* the last guard: no inf/NaN reaches a checkpoint */
        if (p->t[i].dtype != QC_DTYPE_F16) continue;
        const uint16_t *h = p->t[i].data;
        for (size_t k = 0; k < p->t[i].nbytes / 2; k++)
            if ((h[k] & 0x7c00u) == 0x7c00u)
                return qc_fail(QC_ERR_NUMERIC, "%s: element %zu is not finite in F16 (%s)", p->t[i].name, k,
                               (h[k] & 0x3ffu) ? "NaN" : "beyond the F16 range");
    }
    qc_st_writer *w;
    qc_status st = qc_st_writer_create(path, &w);
    for (int i = 0; st == QC_OK && i < o->n_part_meta; i++) st = qc_st_writer_set_meta(w, o->part_meta[i][0], o->part_meta[i][1]);
    for (int i = 0; st == QC_OK && i < p->n; i++)
        st = qc_st_writer_add(w, p->t[i].name, p->t[i].dtype, p->t[i].ndim, p->t[i].shape);
    if (st == QC_OK) st = qc_st_writer_begin(w);
    for (int i = 0; st == QC_OK && i < p->n; i++) st = qc_st_writer_write(w, p->t[i].data, p->t[i].nbytes);
    if (st == QC_OK) return qc_st_writer_finish(w);
    if (w) qc_st_writer_abort(w);
    return st;
}

static int part_find(const qc_pl_parts *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->t[i].name, name) == 0) return i;
    return -1;
}

/* Concatenates the slices' tensors src[0..n) (same dtype and rank; 1-D along dim 0, 2-D along `axis`) into
 * a new tensor of the part named `name`. */
static qc_status part_concat(qc_pl_parts *p, const char *name, const int *src, int n, int axis) {
    const qc_pl_tensor *t0 = &p->t[src[0]];
    size_t es = t0->nbytes / (size_t)(t0->shape[0] * (t0->ndim == 2 ? t0->shape[1] : 1));
    int64_t d0 = 0, d1 = t0->ndim == 2 ? t0->shape[1] : 0;
    size_t total = 0;
    if (t0->ndim == 2 && axis == 1) {
        d0 = t0->shape[0];
        d1 = 0;
    }
    for (int i = 0; i < n; i++) {
        const qc_pl_tensor *t = &p->t[src[i]];
        bool ok = t->dtype == t0->dtype && t->ndim == t0->ndim &&
                  (t0->ndim == 1 || (axis == 0 ? t->shape[1] == t0->shape[1] : t->shape[0] == t0->shape[0]));
        if (!ok) return qc_fail(QC_ERR_FORMAT, "%s: the slices of a fused tensor disagree in shape", name);
        if (t0->ndim == 1 || axis == 0) d0 += t->shape[0];
        else d1 += t->shape[1];
        total += t->nbytes;
    }
    unsigned char *out = malloc(total + 1);
    if (!out) return qc_fail(QC_ERR_NOMEM, "out of memory fusing %s", name);
    if (t0->ndim == 1 || axis == 0) { /* rows after rows */
        size_t o = 0;
        for (int i = 0; i < n; i++) {
            memcpy(out + o, p->t[src[i]].data, p->t[src[i]].nbytes);
            o += p->t[src[i]].nbytes;
        }
    } else { /* each row: the slices' columns side by side */
        size_t o = 0;
        for (int64_t r = 0; r < d0; r++)
            for (int i = 0; i < n; i++) {
                const qc_pl_tensor *t = &p->t[src[i]];
                size_t rb = (size_t)t->shape[1] * es;
                memcpy(out + o, (const unsigned char *)t->data + (size_t)r * rb, rb);
                o += rb;
            }
    }
    return qc_pl_part_add(p, name, t0->dtype, t0->ndim, d0, t0->ndim == 2 ? d1 : 0, out, total);
}

qc_status qc_pl_part_fuse(qc_pl_parts *p, const qc_model_config *cfg, int li) {
    const qc_arch_desc *a = qc_arch_desc_of(cfg->arch);
    /* packed tensors are per output column (N last): qweight, qzeros, scales join along dim 1; an F16 weight
     * [N, K] and a bias [N] along dim 0; g_idx [K] is the same for every slice (one Hessian) */
    static const struct { const char *suffix; int axis; } parts[] = {
        {"qweight", 1}, {"qzeros", 1}, {"scales", 1}, {"g_idx", -1}, {"weight", 0}, {"bias", 0},
    };
    char nm[sizeof p->t[0].name];
    for (int l0 = 0; l0 < QC_LIN_COUNT; l0++) {
        if (!a->lin[l0].tensor) continue;
        int n = 0, lins[QC_LIN_COUNT];
        for (int l = l0; l < QC_LIN_COUNT && a->lin[l].tensor && strcmp(a->lin[l].tensor, a->lin[l0].tensor) == 0; l++)
            lins[n++] = l;
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
            int src[QC_LIN_COUNT], found = 0;
            for (int i = 0; i < n; i++) {
                snprintf(nm, sizeof nm, "%s.%d.%s.%s", qc_layers_path(cfg), li, a->lin[lins[i]].name, parts[k].suffix);
                if ((src[i] = part_find(p, nm)) >= 0) found++;
            }
            if (found == 0) continue;
            snprintf(nm, sizeof nm, "%s.%d.%s.%s", qc_layers_path(cfg), li, a->lin[l0].tensor, parts[k].suffix);
            if (found != n) return qc_fail(QC_ERR_FORMAT, "%s: only %d of %d slices have it", nm, found, n);
            qc_status st = QC_OK;
            if (parts[k].axis < 0) { /* identical in every slice: keep the first */
                for (int i = 1; i < n && st == QC_OK; i++)
                    if (p->t[src[i]].nbytes != p->t[src[0]].nbytes ||
                        memcmp(p->t[src[i]].data, p->t[src[0]].data, p->t[src[0]].nbytes) != 0)
                        st = qc_fail(QC_ERR_FORMAT, "%s: the slices' g_idx differ", nm);
                if (st == QC_OK) snprintf(p->t[src[0]].name, sizeof p->t[src[0]].name, "%s", nm);
                for (int i = 1; i < n; i++) p->t[src[i]].name[0] = 0; /* dropped below */
            } else {
                st = part_concat(p, nm, src, n, parts[k].axis);
                for (int i = 0; i < n && st == QC_OK; i++) p->t[src[i]].name[0] = 0;
            }
            if (st) return st;
        }
        l0 += n - 1;
    }
    int w = 0; /* drop the slices, keeping the order of the rest */
    for (int i = 0; i < p->n; i++) {
        if (p->t[i].name[0] == 0) {
            if (!p->t[i].borrowed) free(p->t[i].data);
            continue;
        }
        p->t[w++] = p->t[i];
    }
    p->n = w;
    return QC_OK;
}

qc_status qc_pl_push_module(qc_pipeline_result *res, const qc_model_config *cfg, int li, qc_linear_id l) {
    if (!qc_linear_first_of_tensor(cfg, l)) return QC_OK; /* a fused tensor: named once, at its first slice */
    const char *tensor;
    int row0, rows;
    char nm[256], path[128];
    if ((int)l >= QC_LIN_COUNT) tensor = qc_linear_path(cfg, l, path, sizeof path); /* an expert: stored alone */
    else qc_linear_storage(cfg, l, &tensor, &row0, &rows);
    snprintf(nm, sizeof nm, "%s.%d.%s", qc_layers_path(cfg), li, tensor);
    return qc_pl_push_str(&res->unquantized, &res->n_unq, nm);
}

void qc_pl_part_free(qc_pl_parts *p) {
    for (int i = 0; i < p->n; i++)
        if (!p->t[i].borrowed) free(p->t[i].data);
    free(p->t);
    memset(p, 0, sizeof *p);
}

/* ---- Hessian capture ---- */
typedef struct {
    bool   want[QC_LIN_MAX];     /* capture ids wanted in this pass */
    float *H[QC_LIN_MAX];        /* [K, K] upper triangle accumulated */
    int    K[QC_LIN_MAX];
    int64_t rows[QC_LIN_MAX];
    qc_linear_id last;           /* stop after this capture */
    double t_hess;
    int    T;                    /* rows per sample (the Hessian sums samples in order) */
} capture_ctx;

static bool capture(void *user, qc_linear_id which, const float *x, int n, int in) {
    capture_ctx *c = user;
    if (c->want[which]) {
        double t0 = qc_time_now();
        QC_ASSERT(in == c->K[which]);
        qc_hessian_accumulate(c->H[which], in, x, n, c->T);
        c->rows[which] += n;
        c->t_hess += qc_time_now() - t0;
    }
    return which != c->last;
}

/* tr(D H D^T) for D [N, K] and symmetric H [K, K]. */
static double quad_form(const float *D, const float *H, int N, int K, float *tmp /* [N, K] */) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, K, 1.0f, D, K, H, K, 0.0f, tmp, K);
    double s = 0.0;
    for (size_t i = 0; i < (size_t)N * K; i++) s += (double)tmp[i] * D[i];
    return s;
}

/* tr(D H D^T) after a GPTQ solve, D = W0 - W_hat [N, K], in O(N K) from the solver's loss instead of a
 * second quad form. The solver's 2 * loss is exactly tr(D' H' D'^T): H' is H with 1 on the diagonal of
 * the dead columns (H[k][k] == 0: their rows and columns of H are zero) plus lam I, lam = damp_used *
 * mean(diag H'), and D' is D with -W_hat on the dead columns (the solver zeroed W0 there). Hence
 *   tr(D H D^T) = 2 loss - lam sum_all D^2 + sum_{n, dead k} (lam D[n,k]^2 - (1 + lam) W_hat[n,k]^2).
 * Exact in exact arithmetic; in float it tracks the quad form to 1e-7..1e-4 relative (the solver's
 * float factor and feedback, worse for ill-conditioned H), ample for a diagnostic. H is the undamped
 * Hessian the solver was given (the pipeline's copy survives the solve). Serial sums in double in a
 * fixed order: the report does not depend on the thread count. */
static double gptq_quad_err(const float *D, const float *What, const float *H, int N, int K,
                            const qc_gptq_stats *gs) {
    double mean = 0.0;
    for (int k = 0; k < K; k++) {
        float h = H[(size_t)k * K + k];
        mean += h == 0.0f ? 1.0 : (double)h;
    }
    double lam = gs->damp_used * (mean / K), s2 = 0.0, dead = 0.0;
    for (size_t i = 0; i < (size_t)N * K; i++) s2 += (double)D[i] * D[i];
    for (int k = 0; gs->dead_cols > 0 && k < K; k++) {
        if (H[(size_t)k * K + k] != 0.0f) continue;
        for (int n = 0; n < N; n++) {
            double d = D[(size_t)n * K + k], w = What[(size_t)n * K + k];
            dead += lam * d * d - (1.0 + lam) * w * w;
        }
    }
    return 2.0 * gs->loss - lam * s2 + dead;
}

void qc_pipeline_result_free(qc_pipeline_result *r) {
    free(r->lin);
    for (int i = 0; i < r->n_parts; i++) free(r->parts[i]);
    free(r->parts);
    for (int i = 0; i < r->n_unq; i++) free(r->unquantized[i]);
    free(r->unquantized);
    if (r->fake)
        for (int i = 0; i < r->n_layers; i++) qc_layer_release(&r->fake[i]);
    free(r->fake);
    memset(r, 0, sizeof *r);
}

qc_status qc_pl_push_str(char ***arr, int *n, const char *s) {
    char **a = realloc(*arr, sizeof(char *) * (size_t)(*n + 1));
    if (!a) return qc_fail(QC_ERR_NOMEM, "out of memory");
    *arr = a;
    if (!(a[*n] = qc_strdup(s))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    (*n)++;
    return QC_OK;
}

/* A model tensor as a new F16 buffer, converted in chunks (an 8B model's embedding is 2 GiB in F32). */
static qc_status read_tensor_f16(const qc_model *m, const char *name, uint16_t **out, const qc_tensor **info) {
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    enum { CHUNK = 1 << 16 };
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)t->numel + 1);
    float *f = malloc(sizeof(float) * CHUNK);
    qc_status st = (!h || !f) ? qc_fail(QC_ERR_NOMEM, "out of memory for %s", name) : QC_OK;
    for (int64_t i0 = 0; st == QC_OK && i0 < t->numel; i0 += CHUNK) {
        int64_t n = t->numel - i0 < CHUNK ? t->numel - i0 : CHUNK;
        st = qc_tensor_read_f32(t, i0, n, f);
        if (st == QC_OK && (st = to_f16_at(name, f, (size_t)n, h + i0, (size_t)i0)) != QC_OK)
            qc_error_prefix("input model %s", m->dir);
    }
    free(f);
    qc_tensor_drop_pages(t);
    if (st) {
        free(h);
        return st;
    }
    *out = h;
    *info = t;
    return QC_OK;
}

qc_status qc_pl_write_base_part(const qc_model *m, const char *path, const qc_pipeline_opts *o) {
    qc_pl_parts p = {0};
    const qc_arch_desc *a = qc_arch_desc_of(m->cfg.arch);
    const char *names[5] = {a->embed, a->pos_embed, a->final_norm, a->final_norm_bias,
                            m->cfg.tie_word_embeddings ? NULL : a->lm_head};
    qc_status st = QC_OK;
    for (int i = 0; st == QC_OK && i < 5; i++) {
        if (!names[i]) continue;
        uint16_t *h = NULL;
        const qc_tensor *t = NULL;
        if ((st = read_tensor_f16(m, names[i], &h, &t))) break;
        int64_t d0 = t->shape[0], d1 = t->ndim == 2 ? t->shape[1] : 0;
        st = qc_pl_part_add(&p, names[i], QC_DTYPE_F16, d1 > 0 ? 2 : 1, d0, d1, h, sizeof(uint16_t) * (size_t)t->numel);
    }
    if (st == QC_OK) st = qc_pl_part_write(&p, path, o);
    qc_pl_part_free(&p);
    return st;
}

/* Adds one quantized linear's packed tensors to the layer's part, in the run's format. */
static qc_status add_packed(qc_pl_parts *p, const char *prefix, const qc_qlinear *q, qc_pack_format fmt) {
    int N = q->N, K = q->K, b = q->bits, G = q->n_groups;
    bool awq = fmt == QC_PACK_AWQ;
    size_t qw = awq ? (size_t)K * (N / 8) : (size_t)K * b / 32 * N;
    size_t qz = awq ? (size_t)G * (N / 8) : (size_t)G * ((size_t)N * b / 32);
    int32_t *qweight = malloc(qw * 4), *qzeros = malloc(qz * 4), *gidx = awq ? NULL : malloc((size_t)K * 4);
    uint16_t *sc = malloc((size_t)G * N * 2);
    qc_status st = QC_OK;
    if (!qweight || !qzeros || (!awq && !gidx) || !sc) st = qc_fail(QC_ERR_NOMEM, "out of memory packing %s", prefix);
    if (st == QC_OK)
        st = awq ? qc_awq_pack(q, qweight, qzeros, sc) : qc_gptq_pack(q, fmt == QC_PACK_GPTQ_V2, qweight, qzeros, sc);
    if (st) {
        free(qweight); free(qzeros); free(gidx); free(sc);
        return st;
    }
    char name[192];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    st = qc_pl_part_add(p, name, QC_DTYPE_I32, 2, awq ? K : (int64_t)K * b / 32, awq ? N / 8 : N, qweight, qw * 4);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if (st == QC_OK) st = qc_pl_part_add(p, name, QC_DTYPE_I32, 2, G, awq ? N / 8 : (int64_t)N * b / 32, qzeros, qz * 4);
    else free(qzeros);
    snprintf(name, sizeof name, "%s.scales", prefix);
    if (st == QC_OK) st = qc_pl_part_add(p, name, QC_DTYPE_F16, 2, G, N, sc, (size_t)G * N * 2);
    else free(sc);
    if (awq) return st;
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    if (st == QC_OK) {
        memcpy(gidx, q->g_idx, (size_t)K * 4);
        return qc_pl_part_add(p, name, QC_DTYPE_I32, 1, K, 0, gidx, (size_t)K * 4);
    }
    free(gidx);
    return st;
}

/* ---- the run ---- */
typedef struct {
    const qc_model *m;
    const qc_pipeline_opts *o;
    qc_pipeline_result *res;
    int d, T, nsamples, batch, Kmax;
    size_t rows;
    float *X;                    /* [rows, d] the current layer's input */
    float *xs;                   /* [batch * T, d] scratch copy */
    float *Hs[QC_LIN_MAX];       /* Hessians per capture point [K, K] */
    float *Hw, *Wo, *tmp;        /* [Kmax, Kmax], [Kmax, Kmax], [Kmax, Kmax] */
    float *A[QC_LIN_MAX];        /* AWQ: whole inputs per capture point [Arows, K] */
    size_t Arows[QC_LIN_MAX];    /* rows held: c->rows, or an expert's routed rows (grown as they arrive) */
    size_t Acap[QC_LIN_MAX];     /* an expert's buffer capacity in rows */
    qc_fwd *f;
    qc_qlinear ql;
    qc_pl_parts part;
    qc_layer *layer;             /* the layer being quantized (FP32, modified in place) */
    qc_pl_driver drv;            /* the shared schedule (pipeline_driver.c) */
} run_ctx;

bool qc_pl_packable(const qc_pipeline_opts *o, int N, int K, const char **why) {
    if (o->format == QC_PACK_AWQ) return qc_awq_shape_ok(N, K, o->q.bits, o->q.group_size, why);
    return qc_gptq_shape_ok(N, K, o->q.bits, o->q.group_size, why);
}

/* After a solver left W_hat in layer->w[l] and the codes in c->ql: the output error against Wref
 * under H, packing, the bias, and the loader-exact fake weight. gs: the stats of a GPTQ solve of
 * c->Wo under H (its error then comes from the loss, gptq_quad_err), else NULL. */
static qc_status finish_linear(run_ctx *c, int li, qc_linear_id l, qc_layer *layer, const float *H,
                               const qc_gptq_stats *gs) {
    qc_linear_report *r = qc_pl_row(&c->drv, li, l);
    int N = layer->out_features[l], K = layer->in_features[l];
    double ref = quad_form(c->Wo, H, N, K, c->tmp);
    for (size_t i = 0; i < (size_t)N * K; i++) c->Wo[i] -= layer->w[l][i];
    double err = gs ? gptq_quad_err(c->Wo, layer->w[l], H, N, K, gs) : quad_form(c->Wo, H, N, K, c->tmp);
    r->rel_err = ref > 0 ? err / ref : 0.0;
    r->quantized = true;
    double tw = qc_time_now();
    qc_status st = add_packed(&c->part, r->name, &c->ql, c->o->format);
    if (st == QC_OK && layer->b[l]) {
        char bn[192];
        snprintf(bn, sizeof bn, "%s.bias", r->name);
        st = qc_pl_part_add_f16(&c->part, bn, layer->b[l], N, 0);
    }
    if (st == QC_OK && c->o->keep_fake) { /* what a loader reconstructs: fp16 scales */
        for (size_t i = 0; i < (size_t)c->ql.n_groups * N; i++)
            c->ql.scales[i] = qc_fp16_to_f32(qc_f32_to_fp16(c->ql.scales[i]));
        float *copy = qc_aligned_alloc(sizeof(float) * (size_t)N * K);
        if (!copy) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        else qc_qlinear_dequant(&c->ql, copy);
        if (copy) c->res->fake[li].w[l] = copy;
    }
    c->res->t_write += qc_time_now() - tw;
    qc_qlinear_free(&c->ql);
    return st;
}

/* A linear the format cannot hold: its (possibly scaled) weight goes out as F16, declared. */
static qc_status keep_unquantized(run_ctx *c, int li, qc_linear_id l, const qc_layer *layer, const char *why) {
    qc_linear_report *r = qc_pl_row(&c->drv, li, l);
    snprintf(r->reason, sizeof r->reason, "kept in F16: %s", why ? why : "shape not supported");
    char nm[192];
    snprintf(nm, sizeof nm, "%s.weight", r->name);
    qc_status st = qc_pl_part_add_f16(&c->part, nm, layer->w[l], r->N, r->K);
    if (st == QC_OK && layer->b[l]) {
        snprintf(nm, sizeof nm, "%s.bias", r->name);
        st = qc_pl_part_add_f16(&c->part, nm, layer->b[l], r->N, 0);
    }
    if (st == QC_OK) st = qc_pl_push_module(c->res, &c->m->cfg, li, l);
    return st;
}

/* H <- 2/rows * H, mirrored from the upper triangle ssyrk filled. */
static void finish_hessian(float *H, int K, int64_t rows) {
    float scale = 2.0f / (float)rows;
    for (int i = 0; i < K; i++)
        for (int j = i; j < K; j++) {
            float v = H[(size_t)i * K + j] * scale;
            H[(size_t)i * K + j] = v;
            H[(size_t)j * K + i] = v;
        }
}

/* The linear whose inputs capture point cap holds (its path below <layers>.N.). */
static const char *cap_name(const qc_model_config *cfg, qc_linear_id cap) {
    static _Thread_local char buf[128];
    return qc_linear_path(cfg, cap, buf, sizeof buf);
}

qc_status qc_pl_check_hessian(const qc_model_config *cfg, const float *H, int K, int li, qc_linear_id cap) {
    for (int i = 0; i < K; i++) /* a non-finite input row makes its whole row and column of H non-finite */
        if (!isfinite(H[(size_t)i * K + i]))
            return qc_fail(QC_ERR_NUMERIC, "%s.%d: the calibration activations entering %s are not finite "
                           "(Hessian diagonal %d is %g): the model overflows on this calibration text in FP32 or "
                           "its weights are broken", qc_layers_path(cfg), li, cap_name(cfg, cap), i, (double)H[(size_t)i * K + i]);
    return QC_OK;
}

/* Each capture point has one input width (q/gate: d, o: heads * head_dim, down: intermediate). */
static float *hessian_buf(run_ctx *c, qc_linear_id cap, int K) {
    if (!c->Hs[cap]) c->Hs[cap] = malloc(sizeof(float) * (size_t)K * K);
    if (c->Hs[cap]) memset(c->Hs[cap], 0, sizeof(float) * (size_t)K * K);
    return c->Hs[cap];
}

/* ---- GPTQ and RTN (the driver's schedule: pipeline_driver.c) ---- */

/* The layer (already-quantized groups in place) on every sample, accumulating the wanted Hessians; stops
 * after the last wanted capture point. */
/* One pass of the layer over every sample accumulating the Hessians of the capture points in want
 * (stopping after the last wanted one in forward order); all_rows: experts whose down input is every row
 * sent through them (NULL: the routed rows). Leaves each 2/rows X^T X in c->Hs and the rows in rows_out. */
static qc_status hessian_pass(run_ctx *c, int li, const bool *want, const bool *all_rows, int64_t *rows_out) {
    const qc_model_config *cfg = &c->m->cfg;
    capture_ctx *cc = calloc(1, sizeof *cc);
    qc_linear_id *caps = malloc(sizeof(qc_linear_id) * QC_LIN_MAX);
    qc_status st = cc && caps ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st) {
        free(cc), free(caps);
        return st;
    }
    cc->last = QC_LIN_Q;
    cc->T = c->T;
    int n_caps = qc_arch_caps(cfg, li, caps);
    for (int k = 0; k < n_caps && st == QC_OK; k++) { /* in forward order: the last wanted one stops it */
        qc_linear_id cap = caps[k];
        if (!want[cap]) continue;
        cc->want[cap] = true;
        cc->K[cap] = qc_capture_width(cfg, cap);
        cc->last = cap;
        if (!(cc->H[cap] = hessian_buf(c, cap, cc->K[cap]))) st = qc_fail(QC_ERR_NOMEM, "out of memory for a Hessian");
    }
    qc_fwd_moe_all_rows(c->f, all_rows);
    double tf = qc_time_now();
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        memcpy(c->xs, c->X + (size_t)s0 * c->T * c->d, sizeof(float) * (size_t)nb * c->T * c->d);
        st = qc_layer_forward(c->f, c->layer, c->xs, nb, c->T, capture, cc);
    }
    qc_fwd_moe_all_rows(c->f, NULL);
    c->res->t_forward += qc_time_now() - tf - cc->t_hess;
    c->res->t_hessian += cc->t_hess;
    for (int k = 0; k < n_caps && st == QC_OK; k++) {
        qc_linear_id cap = caps[k];
        if (!cc->want[cap]) continue;
        rows_out[cap] = cc->rows[cap];
        if (cc->rows[cap] == 0) continue; /* an expert no row reached: handled by the caller */
        finish_hessian(cc->H[cap], cc->K[cap], cc->rows[cap]);
        st = qc_pl_check_hessian(cfg, cc->H[cap], cc->K[cap], li, cap);
    }
    free(cc);
    free(caps);
    return st;
}


/* The layer (already-quantized groups in place) on every sample: hessian_pass (the CPU runs the whole layer:
 * gi and n_groups only matter to the GPU's halves). */
static qc_status cpu_hessians(void *be, int li, int gi, int n_groups, const bool *want, const bool *all_rows,
                              int64_t *rows_out) {
    (void)gi, (void)n_groups;
    return hessian_pass(be, li, want, all_rows, rows_out);
}

static qc_status cpu_copy_hessian(void *be, qc_linear_id dst, qc_linear_id src, int K) {
    run_ctx *c = be;
    if (!hessian_buf(c, dst, K)) return qc_fail(QC_ERR_NOMEM, "out of memory for a Hessian");
    memcpy(c->Hs[dst], c->Hs[src], sizeof(float) * (size_t)K * K);
    return QC_OK;
}

static qc_status cpu_solve(void *be, int li, qc_linear_id l, bool last_user, bool rtn_expert) {
    (void)last_user; /* the solver works on a copy of H */
    run_ctx *c = be;
    const qc_pipeline_opts *o = c->o;
    qc_layer *layer = c->layer;
    qc_linear_report *r = qc_pl_row(&c->drv, li, l);
    int N = layer->out_features[l], K = layer->in_features[l];
    const float *H = c->Hs[qc_linear_input(&c->m->cfg, l)];
    double ts = qc_time_now();
    bool rtn = o->method != QC_METHOD_GPTQ || rtn_expert;
    memcpy(c->Wo, layer->w[l], sizeof(float) * (size_t)N * K);
    qc_status st = qc_qlinear_alloc(&c->ql, N, K, o->q.bits, o->q.group_size, o->q.sym, false);
    if (st) return st;
    memcpy(c->Hw, H, sizeof(float) * (size_t)K * K);
    qc_gptq_stats gs;
    if (!rtn) {
        st = qc_gptq_quantize(layer->w[l], c->Hw, N, K, &o->q, &c->ql, &gs);
        r->damp = gs.damp_used;
        r->retries = gs.retries;
        r->dead_cols = gs.dead_cols;
    } else {
        st = qc_rtn_quantize_opts(layer->w[l], N, K, &o->q, &c->ql);
    }
    if (st) {
        qc_error_prefix("%s", r->name);
        return st;
    }
    r->seconds = qc_time_now() - ts;
    c->res->t_solve += r->seconds;
    return finish_linear(c, li, l, layer, H, rtn ? NULL : &gs);
}

static qc_status cpu_keep_f16(void *be, int li, qc_linear_id l, const char *why) {
    run_ctx *c = be;
    return keep_unquantized(c, li, l, c->layer, why);
}

/* the quantized layer's output is the next layer's input */
static qc_status cpu_propagate(void *be, int li, int n_groups) {
    (void)li, (void)n_groups;
    run_ctx *c = be;
    qc_status st = QC_OK;
    double tf = qc_time_now();
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        st = qc_layer_forward(c->f, c->layer, c->X + (size_t)s0 * c->T * c->d, nb, c->T, NULL, NULL);
    }
    c->res->t_forward += qc_time_now() - tf;
    return st;
}

/* ---- AWQ ---- */
typedef struct {
    run_ctx *c;
    size_t   row0;
    bool     nomem;
} awq_capture_ctx;

/* A capture point's rows: at the batch's place for the layer-wide points, appended for an expert's (its
 * routed rows, in batch and row order). */
static bool awq_capture(void *user, qc_linear_id which, const float *x, int n, int in) {
    awq_capture_ctx *a = user;
    run_ctx *c = a->c;
    if ((int)which < QC_LIN_COUNT) {
        memcpy(c->A[which] + a->row0 * in, x, sizeof(float) * (size_t)n * in);
        return true;
    }
    if (c->Arows[which] + (size_t)n > c->Acap[which]) {
        size_t cap = c->Acap[which] ? c->Acap[which] : 256;
        while (cap < c->Arows[which] + (size_t)n) cap *= 2;
        float *p = realloc(c->A[which], sizeof(float) * cap * (size_t)in);
        if (!p) {
            a->nomem = true;
            return false;
        }
        c->A[which] = p;
        c->Acap[which] = cap;
    }
    memcpy(c->A[which] + c->Arows[which] * in, x, sizeof(float) * (size_t)n * in);
    c->Arows[which] += (size_t)n;
    return true;
}

/* The output of the module g's search compares (arch.h qc_awq_module): input A [rows, K] (g's capture; whole
 * windows of T rows except for a linear module), output out [rows, d]. */
static qc_status awq_module(run_ctx *c, const qc_layer *L, const qc_arch_awq *g, const float *A, size_t rows, float *out) {
    qc_linear_id which = g->lin[0];
    int K = qc_capture_width(&c->m->cfg, g->input), T = c->T, d = c->d;
    qc_status st = QC_OK;
    if (g->module == QC_AWQ_MOD_LINEAR) { /* T rows at a time, so the rows' blocks never depend on the batch */
        int N = L->out_features[which];
        for (size_t r0 = 0; r0 < rows; r0 += (size_t)T) {
            int n = rows - r0 < (size_t)T ? (int)(rows - r0) : T;
            qc_linear_apply(out + r0 * N, A + r0 * K, L->w[which], L->b[which], n, N, K);
        }
        return st;
    }
    int nsamp = (int)(rows / (size_t)T);
    for (int s0 = 0; s0 < nsamp && st == QC_OK; s0 += c->batch) {
        int nb = nsamp - s0 < c->batch ? nsamp - s0 : c->batch;
        size_t r0 = (size_t)s0 * T;
        const float *a = A + r0 * K;
        float *y = out + r0 * d;
        switch (g->module) {
        case QC_AWQ_MOD_ATTN: st = qc_attn_forward(c->f, L, a, y, nb, T); break;
        case QC_AWQ_MOD_MLP:
        case QC_AWQ_MOD_MOE: st = qc_mlp_forward(c->f, L, a, y, nb * T); break; /* the MoE block when L has a router */
        case QC_AWQ_MOD_LINEAR: break;
        }
    }
    return st;
}

/* An expert whose routed calibration rows fall below moe_min_tokens (AWQ: its down projection's search and
 * its clipping are skipped: it is rounded to nearest, scaled only as its block's input group). */
static bool expert_low(const run_ctx *c, qc_linear_id l) {
    int e, j;
    if (!qc_linear_expert(l, &e, &j)) return false;
    return (int64_t)c->Arows[QC_LIN_EXPERT(e, 0)] < qc_pipeline_moe_min_rows(c->o, &c->m->cfg);
}

typedef qc_arch_awq awq_group;

bool qc_pl_awq_group_quantized(const qc_pipeline_opts *o, const int *out_f, const int *in_f, const qc_arch_awq *g) {
    for (int i = 0; i < g->n; i++) {
        const char *why = NULL;
        if (qc_pl_packable(o, out_f[g->lin[i]], in_f[g->lin[i]], &why)) return true;
    }
    return false;
}

/* The windows the search's module forwards run on (awq_search_samples; 0 or too many: all). */
static int search_windows(const run_ctx *c) {
    int n = c->o->awq_search_samples;
    return n <= 0 || n >= c->nsamples ? c->nsamples : n;
}

/* Grid search of E.3 for one group on the original weights (per formula, qc_awq_candidate's order);
 * writes the best scales to s. A group whose module is one linear (o_proj, down_proj) is scored on
 * every window, through G = X^T X (qc_awq_quad_loss) when there are at least K rows, else (or with
 * awq_plain_search) by forwards; the attention and MLP groups by forwards over search_windows()
 * evenly strided windows. */
static qc_status awq_search(run_ctx *c, const qc_layer *layer, const awq_group *g, float *s, qc_pl_awq_choice *best) {
    int K = layer->in_features[g->lin[0]], gs = c->o->q.group_size, bits = c->o->q.bits, T = c->T;
    size_t in_rows = c->Arows[g->input];
    best->ratio = -1.0;
    best->formula = QC_AWQ_F_NONE;
    best->loss = 0.0;
    best->gram = false;
    if (in_rows == 0 || expert_low(c, g->lin[0])) { /* an under-covered expert: no scales to search */
        for (int k = 0; k < K; k++) s[k] = 1.0f;
        return QC_OK;
    }
    /* X^T X costs O(N K^2) a candidate, the forward O(rows N K): the cheaper one (a choice by shapes only) */
    bool one = g->module == QC_AWQ_MOD_LINEAR;
    bool gram = one && !c->o->awq_plain_search && in_rows >= (size_t)K;
    int nw = one ? c->nsamples : search_windows(c);
    size_t rows_s = one ? in_rows : (size_t)nw * T, out_sz = rows_s * (size_t)c->d;
    const float *A = c->A[g->input];
    float *ref = NULL, *out = NULL, *Asub = NULL, *G = NULL;
    float *xm = malloc(sizeof(float) * K), *wm = malloc(sizeof(float) * K), *cand = malloc(sizeof(float) * K);
    float *other = malloc(sizeof(float) * K), **Wc = calloc((size_t)g->n, sizeof(float *));
    const float **ws = calloc((size_t)g->n, sizeof(float *));
    int *ns = calloc((size_t)g->n, sizeof(int));
    qc_status st = QC_OK;
    if (!xm || !wm || !cand || !other || !Wc || !ws || !ns) st = qc_fail(QC_ERR_NOMEM, "awq: out of memory for the scale search");
    if (st == QC_OK && !gram && (!(ref = malloc(sizeof(float) * out_sz)) || !(out = malloc(sizeof(float) * out_sz))))
        st = qc_fail(QC_ERR_NOMEM, "awq: out of memory for the scale search's outputs [%zu, %d]", rows_s, c->d);
    if (st == QC_OK && !one && nw < c->nsamples) { /* the search's windows, gathered: window i * nsamples / nw */
        if (!(Asub = qc_aligned_alloc(sizeof(float) * rows_s * K)))
            st = qc_fail(QC_ERR_NOMEM, "awq: out of memory for the search's %d windows", nw);
        for (int i = 0; st == QC_OK && i < nw; i++)
            memcpy(Asub + (size_t)i * T * K, A + (size_t)((int64_t)i * c->nsamples / nw) * T * K,
                   sizeof(float) * (size_t)T * K);
    }
    for (int i = 0; i < g->n && st == QC_OK; i++) {
        qc_linear_id l = g->lin[i];
        if (!(Wc[i] = malloc(sizeof(float) * (size_t)layer->out_features[l] * K))) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    if (st == QC_OK && gram && !(G = hessian_buf(c, g->input, K))) /* the report's Hessian buffer, free until then */
        st = qc_fail(QC_ERR_NOMEM, "awq: out of memory for X^T X [%d, %d]", K, K);
    if (st == QC_OK) {
        qc_awq_x_mean(A, (int64_t)in_rows, K, xm);
        for (int i = 0; i < g->n; i++) {
            ws[i] = layer->w[g->lin[i]];
            ns[i] = layer->out_features[g->lin[i]];
        }
        qc_awq_w_mean(ws, ns, g->n, K, gs, wm);
        if (gram) {
            qc_hessian_accumulate(G, K, A, (int64_t)in_rows, T);
            for (int i = 0; i < K; i++)
                for (int j = i + 1; j < K; j++) G[(size_t)j * K + i] = G[(size_t)i * K + j];
        } else {
            st = awq_module(c, layer, g, Asub ? Asub : A, rows_s, ref);
        }
    }
    qc_layer trial = *layer;
    const int n_grid = 20;
    qc_awq_scale_mode mode = c->o->awq_scale;
    best->loss = INFINITY;
    for (int j = 0; j < qc_awq_n_candidates(mode, n_grid) && st == QC_OK; j++) {
        qc_awq_formula f;
        double r;
        if (!qc_awq_candidate_scales(mode, n_grid, j, xm, wm, K, &f, &r, cand, other)) continue;
        for (int i = 0; i < g->n; i++) {
            qc_linear_id l = g->lin[i];
            int N = layer->out_features[l];
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++) Wc[i][(size_t)n * K + k] = layer->w[l][(size_t)n * K + k] * cand[k];
            qc_awq_pseudo_quant(Wc[i], N, K, bits, gs);
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++) Wc[i][(size_t)n * K + k] /= cand[k];
            trial.w[l] = Wc[i];
        }
        double loss = 0.0;
        if (gram) { /* D = W - W_hat; loss = tr(D G D^T) / (rows * N) */
            int N = layer->out_features[g->lin[0]];
            const float *W = layer->w[g->lin[0]];
            for (size_t i = 0; i < (size_t)N * K; i++) Wc[0][i] = W[i] - Wc[0][i];
            loss = qc_awq_quad_loss(Wc[0], G, N, K, c->tmp) / ((double)in_rows * N);
        } else {
            if ((st = awq_module(c, &trial, g, Asub ? Asub : A, rows_s, out))) break;
            for (size_t i = 0; i < out_sz; i++) {
                double dlt = (double)ref[i] - out[i];
                loss += dlt * dlt;
            }
            loss /= (double)out_sz;
        }
        if (loss < best->loss) { /* strictly smaller, as the reference */
            best->loss = loss;
            best->ratio = r;
            best->formula = f;
            memcpy(s, cand, sizeof(float) * K);
        }
    }
    if (st == QC_OK && !isfinite(best->loss))
        st = qc_fail(QC_ERR_NUMERIC, "awq: the scale search found no finite loss (non-finite activations?)");
    best->gram = gram;
    free(ref); free(out); free(xm); free(wm); free(cand); free(other);
    qc_aligned_free(Asub);
    for (int i = 0; Wc && i < g->n; i++) free(Wc[i]);
    free(Wc), free(ws), free(ns);
    return st;
}

/* The original layer on all samples: every linear's input, and the next layer's input. */
static qc_status cpu_awq_capture(void *be, int li) {
    (void)li;
    run_ctx *c = be;
    qc_status st = QC_OK;
    awq_capture_ctx ac = {.c = c};
    for (int k = QC_LIN_COUNT; k < QC_LIN_MAX; k++) c->Arows[k] = 0; /* experts' rows arrive per batch */
    double tf = qc_time_now();
    for (int s0 = 0; s0 < c->nsamples && st == QC_OK; s0 += c->batch) {
        int nb = c->nsamples - s0 < c->batch ? c->nsamples - s0 : c->batch;
        ac.row0 = (size_t)s0 * c->T;
        st = qc_layer_forward(c->f, c->layer, c->X + ac.row0 * c->d, nb, c->T, awq_capture, &ac);
        if (st == QC_OK && ac.nomem) st = qc_fail(QC_ERR_NOMEM, "awq: out of memory for the experts' inputs");
    }
    c->res->t_forward += qc_time_now() - tf;
    return st;
}

static qc_status cpu_awq_search(void *be, int li, const qc_arch_awq *g, float *s, qc_pl_awq_choice *best) {
    (void)li;
    run_ctx *c = be;
    return awq_search(c, c->layer, g, s, best);
}

/* previous op /= s, scaled linears' columns *= s, their cached inputs /= s */
static qc_status cpu_awq_fold(void *be, int li, const qc_arch_awq *g, const float *s) {
    (void)li;
    run_ctx *c = be;
    qc_layer *layer = c->layer;
    int K = layer->in_features[g->lin[0]];
    if (g->prev_norm >= 0) {
        float *nw = *qc_layer_norm(layer, (qc_norm_id)g->prev_norm), *nb = layer->norm_bias[g->prev_norm];
        const float off = qc_norm_offset(&c->m->cfg); /* (1 + w) norms: (1 + w') = (1 + w) / s */
        if (off == 0.0f)
            for (int k = 0; k < K; k++) nw[k] /= s[k];
        else
            for (int k = 0; k < K; k++) nw[k] = (off + nw[k]) / s[k] - off;
        if (nb) /* a LayerNorm's output is w * xhat + b: both divided (AutoAWQ's scale_ln_fcs) */
            for (int k = 0; k < K; k++) nb[k] /= s[k];
    } else {
        qc_linear_id p = (qc_linear_id)g->prev_lin;
        int Np = layer->out_features[p], Kp = layer->in_features[p];
        for (int n = Np - K; n < Np; n++) {
            float inv = s[n - (Np - K)];
            for (int k = 0; k < Kp; k++) layer->w[p][(size_t)n * Kp + k] /= inv;
            if (layer->b[p]) layer->b[p][n] /= inv;
        }
    }
    bool *seen = calloc(QC_LIN_MAX, sizeof(bool));
    if (!seen) return qc_fail(QC_ERR_NOMEM, "out of memory");
    seen[g->input] = true;
    for (int i = 0; i < g->n; i++) {
        qc_linear_id l = g->lin[i];
        int N = layer->out_features[l];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) layer->w[l][(size_t)n * K + k] *= s[k];
        seen[qc_linear_input(&c->m->cfg, l)] = true;
    }
    if (g->module == QC_AWQ_MOD_MOE) { /* the router and the shared expert's gate read the block's input too:
                                          their columns * s keep the routing (AutoAWQ leaves them unscaled) */
        int E = c->m->cfg.n_experts;
        for (int e = 0; layer->router && e < E; e++)
            for (int k = 0; k < K; k++) layer->router[(size_t)e * K + k] *= s[k];
        for (int k = 0; layer->shared_gate && k < K; k++) layer->shared_gate[k] *= s[k];
    }
    for (int cap = 0; cap < QC_LIN_MAX; cap++) { /* every kept input of the scaled linears (an MoE group: the
                                                   block's and each expert's rows of it) */
        if (!seen[cap] || !c->A[cap]) continue;
        float *A = c->A[cap];
        for (size_t r = 0; r < c->Arows[cap]; r++)
            for (int k = 0; k < K; k++) A[r * K + k] /= s[k];
    }
    free(seen);
    return QC_OK;
}

/* Hessians of the scaled inputs, for the error report (and awq+gptq); where the search left X^T X of the
 * unscaled inputs, 2/rows diag(1/s) X^T X diag(1/s) from it */
static qc_status cpu_awq_hessians(void *be, int li, const qc_arch_awq *groups, int ng, float *const *scales,
                                  const qc_pl_awq_choice *choice) {
    (void)li;
    run_ctx *c = be;
    qc_linear_id *caps = malloc(sizeof(qc_linear_id) * QC_LIN_MAX);
    if (!caps) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int n_caps = qc_arch_caps(&c->m->cfg, li, caps);
    qc_status st = QC_OK;
    for (int k = 0; k < n_caps && st == QC_OK; k++) {
        int K = qc_capture_width(&c->m->cfg, caps[k]);
        int64_t rows = (int64_t)c->Arows[caps[k]];
        int gi = 0;
        while (gi < ng && groups[gi].input != caps[k]) gi++;
        if (gi < ng && choice[gi].gram) {
            double th = qc_time_now();
            float *H = c->Hs[caps[k]], scale = 2.0f / (float)rows;
            const float *sc = scales[gi];
            for (int i = 0; i < K; i++)
                for (int j = 0; j < K; j++) H[(size_t)i * K + j] = H[(size_t)i * K + j] / sc[i] / sc[j] * scale;
            c->res->t_hessian += qc_time_now() - th;
            continue;
        }
        float *H = hessian_buf(c, caps[k], K);
        if (!H) {
            st = qc_fail(QC_ERR_NOMEM, "out of memory for a Hessian");
            break;
        }
        double th = qc_time_now();
        if (rows > 0) { /* an expert no row reached keeps a zero Hessian (its error is reported as 0) */
            qc_hessian_accumulate(H, K, c->A[caps[k]], rows, c->T); /* H is zeroed */
            finish_hessian(H, K, rows);
        }
        c->res->t_hessian += qc_time_now() - th;
    }
    free(caps);
    return st;
}

/* clipping (unless exempt), then round-to-nearest, or with awq_gptq the GPTQ solver */
static qc_status cpu_awq_quantize(void *be, int li, qc_linear_id l) {
    run_ctx *c = be;
    const qc_pipeline_opts *o = c->o;
    qc_layer *layer = c->layer;
    qc_linear_report *r = qc_pl_row(&c->drv, li, l);
    int N = layer->out_features[l], K = layer->in_features[l];
    qc_linear_id cap = qc_linear_input(&c->m->cfg, l);
    qc_status st = QC_OK;
    double t0 = qc_time_now();
    memcpy(c->Wo, layer->w[l], sizeof(float) * (size_t)N * K); /* the scaled weight: W X = W_s X_s */
    int e, j;
    bool low = expert_low(c, l), no_clip = (int)l < QC_LIN_COUNT && qc_arch_desc_of(c->m->cfg.arch)->lin[l].awq_no_clip;
    r->tokens = (int64_t)c->rows;
    if (qc_linear_expert(l, &e, &j)) { /* AWQ has one policy for an under-covered expert: round to nearest */
        r->tokens = (int64_t)c->Arows[QC_LIN_EXPERT(e, 0)];
        snprintf(r->coverage, sizeof r->coverage, "%s", low ? "rtn" : "routed");
    }
    if (o->awq_clip && !no_clip && !low && c->Arows[cap] > 0)
        st = qc_awq_clip(layer->w[l], N, K, c->A[cap], (int64_t)c->Arows[cap], o->q.bits, o->q.group_size, 512, 20, 0.5);
    if (st == QC_OK) st = qc_qlinear_alloc(&c->ql, N, K, o->q.bits, o->q.group_size, false, false);
    if (st == QC_OK && o->awq_gptq && !low) { /* GPTQ on the scaled (clipped) weight with its scaled inputs' Hessian */
        qc_gptq_opts go = o->q;
        go.sym = false;
        qc_gptq_stats gs;
        memcpy(c->Hw, c->Hs[cap], sizeof(float) * (size_t)K * K);
        st = qc_gptq_quantize(layer->w[l], c->Hw, N, K, &go, &c->ql, &gs);
        r->damp = gs.damp_used;
        r->retries = gs.retries;
        r->dead_cols = gs.dead_cols;
    } else if (st == QC_OK) {
        st = qc_awq_quantize(layer->w[l], N, K, o->q.bits, o->q.group_size, &c->ql);
    }
    if (st) {
        qc_error_prefix("%s", r->name);
        return st;
    }
    r->seconds = qc_time_now() - t0;
    c->res->t_solve += r->seconds;
    return finish_linear(c, li, l, layer, c->Hs[cap], NULL); /* c->Wo precedes clipping, not the solver input */
}

static const qc_pl_backend_ops k_cpu_ops = {
    .hessians = cpu_hessians,
    .copy_hessian = cpu_copy_hessian,
    .solve = cpu_solve,
    .keep_f16 = cpu_keep_f16,
    .group_done = NULL,
    .propagate = cpu_propagate,
    .awq_capture = cpu_awq_capture,
    .awq_search = cpu_awq_search,
    .awq_fold = cpu_awq_fold,
    .awq_hessians = cpu_awq_hessians,
    .awq_quantize = cpu_awq_quantize,
};

/* Norms into the layer's part, the part to disk, the loader-exact fake layer kept for evaluation. */
static qc_status layer_epilogue(run_ctx *c, int li, qc_layer *layer) {
    const qc_model_config *cfg = &c->m->cfg;
    double tw = qc_time_now();
    char nm[192], path[4096];
    const qc_arch_desc *arch = qc_arch_desc_of(cfg->arch);
    qc_status st = QC_OK;
    for (int k = 0; k < QC_NORM_COUNT && st == QC_OK; k++) {
        const float *nw = *qc_layer_norm(layer, (qc_norm_id)k);
        if (!nw) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->norm[k].name);
        st = qc_pl_part_add_f16(&c->part, nm, nw, qc_norm_dim(cfg, (qc_norm_id)k), 0);
        if (st || !layer->norm_bias[k]) continue;
        snprintf(nm, sizeof nm, "%s.%d.%s.bias", qc_layers_path(cfg), li, arch->norm[k].name);
        st = qc_pl_part_add_f16(&c->part, nm, layer->norm_bias[k], qc_norm_dim(cfg, (qc_norm_id)k), 0);
    }
    if (st == QC_OK && layer->router) { /* the router and shared-expert gate stay F16, never quantized */
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->moe->router);
        st = qc_pl_part_add_f16(&c->part, nm, layer->router, cfg->n_experts, cfg->hidden_size);
    }
    if (st == QC_OK && layer->shared_gate) {
        snprintf(nm, sizeof nm, "%s.%d.%s.weight", qc_layers_path(cfg), li, arch->moe->shared_gate);
        st = qc_pl_part_add_f16(&c->part, nm, layer->shared_gate, 1, cfg->hidden_size);
    }
    if (st == QC_OK) st = qc_pl_part_fuse(&c->part, cfg, li);
    snprintf(path, sizeof path, "%s/layer-%05d.safetensors", c->o->work_dir, li);
    if (st == QC_OK) st = qc_pl_part_write(&c->part, path, c->o);
    if (st == QC_OK) st = qc_pl_push_str(&c->res->parts, &c->res->n_parts, path);
    c->res->t_write += qc_time_now() - tw;
    qc_pl_part_free(&c->part);
    if (st != QC_OK || !c->o->keep_fake) return st;
    /* the fake-quantized layer: loader-exact quantized weights, F16-rounded everything else */
    qc_layer *fk = &c->res->fake[li];
    for (int l = 0; l < qc_arch_n_lin(cfg); l++) {
        if (!layer->w[l]) continue; /* absent in this layer */
        if (fk->w[l]) {
            qc_aligned_free(layer->w[l]);
        } else {
            fk->w[l] = layer->w[l];
            for (size_t i = 0; i < (size_t)layer->out_features[l] * layer->in_features[l]; i++)
                fk->w[l][i] = qc_fp16_to_f32(qc_f32_to_fp16(fk->w[l][i]));
        }
        layer->w[l] = NULL;
        fk->b[l] = layer->b[l];
        layer->b[l] = NULL;
        if (fk->b[l])
            for (int i = 0; i < layer->out_features[l]; i++) fk->b[l][i] = qc_fp16_to_f32(qc_f32_to_fp16(fk->b[l][i]));
        fk->out_features[l] = layer->out_features[l];
        fk->in_features[l] = layer->in_features[l];
    }
    float **gates[2][2] = {{&layer->router, &fk->router}, {&layer->shared_gate, &fk->shared_gate}};
    for (int k = 0; k < 2; k++) {
        float *g = *gates[k][0];
        *gates[k][1] = g;
        *gates[k][0] = NULL;
        for (int i = 0, n = (k ? 1 : cfg->n_experts) * cfg->hidden_size; g && i < n; i++)
            g[i] = qc_fp16_to_f32(qc_f32_to_fp16(g[i]));
    }
    for (int k = 0; k < 2 * QC_NORM_COUNT; k++) { /* weights, then LayerNorm biases */
        qc_norm_id id = (qc_norm_id)(k % QC_NORM_COUNT);
        float **src = k < QC_NORM_COUNT ? qc_layer_norm(layer, id) : qc_layer_norm_bias(layer, id);
        float **dst = k < QC_NORM_COUNT ? qc_layer_norm(fk, id) : qc_layer_norm_bias(fk, id);
        *dst = *src;
        *src = NULL;
        if (*dst)
            for (int i = 0, n = qc_norm_dim(cfg, id); i < n; i++) (*dst)[i] = qc_fp16_to_f32(qc_f32_to_fp16((*dst)[i]));
    }
    fk->index = li;
    return QC_OK;
}

qc_status qc_pipeline_run(const qc_model *m, const int32_t *ids, int nsamples, int seqlen, const qc_pipeline_opts *o,
                          qc_pipeline_result *res) {
    if (o->device >= 0 && (o->q.mse || o->awq_gptq))
        return qc_fail(QC_ERR_ARG, "quantize: %s runs on the CPU only (use --device cpu)",
                       o->awq_gptq ? "method awq+gptq" : "mse");
    if (o->device >= 0) return qc_pipeline_run_gpu(m, ids, nsamples, seqlen, o, res);
    memset(res, 0, sizeof *res);
    snprintf(res->device_desc, sizeof res->device_desc, "cpu");
    const qc_model_config *cfg = &m->cfg;
    int d = cfg->hidden_size, T = seqlen, L = cfg->n_layers;
    if (nsamples < 1 || T < 1) return qc_fail(QC_ERR_ARG, "quantize: no calibration samples");
    if (o->method == QC_METHOD_AWQ && (o->q.group_size <= 0 || o->format == QC_PACK_GPTQ))
        return qc_fail(QC_ERR_ARG, "quantize: awq needs a positive group size and asymmetric storage (awq or gptq_v2)");
    if (mkdir(o->work_dir, 0755) != 0 && errno != EEXIST)
        return qc_fail(QC_ERR_IO, "%s: cannot create work directory: %s", o->work_dir, strerror(errno));
    qc_pl_set_clamp_f16(o->clamp_f16);
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.o = o;
    c.res = res;
    c.d = d;
    c.T = T;
    c.nsamples = nsamples;
    c.rows = (size_t)nsamples * T;
    c.batch = (o->batch_tokens > 0 ? o->batch_tokens : 8192) / T;
    if (c.batch < 1) c.batch = 1;
    if (c.batch > nsamples) c.batch = nsamples;
    int stride = qc_arch_n_lin(cfg);
    c.drv = (qc_pl_driver){.m = m, .o = o, .res = res, .ops = &k_cpu_ops, .be = &c,
                           .total = qc_pl_count_linears(cfg, L), .rows = (int64_t)nsamples * T};
    for (int l = 0; l < stride; l++) { /* bounds every linear's N and K (Wo holds N x K) */
        int N, K;
        qc_linear_shape(cfg, (qc_linear_id)l, &N, &K);
        c.Kmax = N > c.Kmax ? N : c.Kmax;
        c.Kmax = K > c.Kmax ? K : c.Kmax;
    }

    qc_status st = QC_OK;
    res->lin = calloc((size_t)L * stride, sizeof *res->lin);
    res->lin_stride = stride;
    if (o->keep_fake) {
        res->fake = calloc((size_t)L, sizeof *res->fake);
        res->n_layers = L;
    }
    c.X = qc_aligned_alloc(c.rows * d * sizeof(float));
    c.xs = qc_aligned_alloc((size_t)c.batch * T * d * sizeof(float));
    c.Hw = malloc(sizeof(float) * (size_t)c.Kmax * c.Kmax);
    c.Wo = malloc(sizeof(float) * (size_t)c.Kmax * c.Kmax);
    c.tmp = malloc(sizeof(float) * (size_t)c.Kmax * c.Kmax);
    bool ok = res->lin && (!o->keep_fake || res->fake) && c.X && c.xs && c.Hw && c.Wo && c.tmp;
    if (ok && o->method == QC_METHOD_AWQ) { /* the layer-wide capture points; experts' grow as rows arrive */
        const qc_arch_desc *arch = qc_arch_desc_of(cfg->arch);
        for (int k = 0; k < arch->n_caps && ok; k++) {
            ok = (c.A[arch->caps[k]] = qc_aligned_alloc(c.rows * qc_capture_width(cfg, arch->caps[k]) * sizeof(float))) != NULL;
            c.Arows[arch->caps[k]] = c.rows;
        }
    }
    if (!ok) {
        st = qc_fail(QC_ERR_NOMEM, "quantize: cannot allocate the calibration activations for %zu tokens (hidden %d)",
                     c.rows, d);
        goto out;
    }
    if ((st = qc_fwd_create(cfg, c.batch, T, &c.f))) goto out;

    double t0 = qc_time_now();
    char path[4096];
    int start = 0;
    if ((st = qc_resume_load(o->work_dir, L, c.rows, d, c.X, res, &start))) goto out;
    res->resumed_at = start;
    if (start > 0) {
        QC_LOGI("resuming at layer %d of %d: layers 0-%d and their activations come from %s", start, L, start - 1,
                o->work_dir);
        c.drv.done = qc_pl_count_linears(cfg, start);
    } else {
        if (o->on_phase) o->on_phase(o->user, -1, L, "embed");
        if ((st = qc_model_embed(m, ids, (int)c.rows, T, c.X))) goto out;
        snprintf(path, sizeof path, "%s/base.safetensors", o->work_dir);
        if ((st = qc_pl_write_base_part(m, path, o)) || (st = qc_pl_push_str(&res->parts, &res->n_parts, path))) goto out;
        res->t_embed = qc_time_now() - t0;
    }

    double last_save = qc_time_now();
    for (int li = start; li < L && st == QC_OK; li++) {
        qc_layer layer;
        if (qc_cancel_requested()) {
            st = qc_fail(QC_ERR_CANCELLED, "quantize: interrupted before layer %d", li);
            break;
        }
        if (o->on_phase) o->on_phase(o->user, li, L, "load");
        if ((st = qc_layer_load(m, li, &layer))) break;
        st = qc_pl_check_layer(cfg, &layer, li);
        c.layer = &layer;
        if (st == QC_OK) st = qc_pl_layer(&c.drv, li);
        c.layer = NULL;
        if (st == QC_OK && o->on_phase) o->on_phase(o->user, li, L, "part");
        if (st == QC_OK) st = layer_epilogue(&c, li, &layer);
        qc_pl_part_free(&c.part);
        qc_layer_release(&layer);
        /* the layer's state: its report rows, then (the commit point) the next layer's input */
        if (st == QC_OK) st = qc_resume_save_layer(o->work_dir, li, res);
        if (st == QC_OK && o->save_every >= 0 &&
            (li + 1 == L || o->save_every == 0 || qc_time_now() - last_save >= o->save_every)) {
            double ts = qc_time_now();
            if (o->on_phase) o->on_phase(o->user, li, L, "save");
            st = qc_resume_save_x(o->work_dir, li + 1, li + 1 == L ? NULL : c.X, c.rows, d);
            res->t_write += qc_time_now() - ts;
            last_save = qc_time_now();
        }
    }
out:
    qc_qlinear_free(&c.ql);
    qc_pl_part_free(&c.part);
    qc_fwd_free(c.f);
    qc_aligned_free(c.X);
    qc_aligned_free(c.xs);
    for (int k = 0; k < QC_LIN_MAX; k++) free(c.Hs[k]);
    for (int k = 0; k < QC_LIN_COUNT; k++) qc_aligned_free(c.A[k]);
    for (int k = QC_LIN_COUNT; k < QC_LIN_MAX; k++) free(c.A[k]); /* realloc'd */
    free(c.Hw);
    free(c.Wo);
    free(c.tmp);
    res->n_lin = L * stride;
    if (st != QC_OK) {
        qc_linear_report *keep = res->lin;
        res->lin = NULL;
        qc_pipeline_result_free(res);
        free(keep);
    }
    return st;
}
