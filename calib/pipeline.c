#include "pipeline.h"

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

/* ---- the tensors of one part file, buffered until the layer is done ---- */
typedef struct {
    char    name[200];
    qc_dtype dtype;
    int     ndim;
    int64_t shape[2];
    void   *data;
    size_t  nbytes;
} part_tensor;

typedef struct {
    part_tensor *t;
    int n, cap;
} part_list;

static qc_status part_add(part_list *p, const char *name, qc_dtype dt, int ndim, int64_t d0, int64_t d1, void *data,
                          size_t nbytes) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 32;
        part_tensor *t = realloc(p->t, sizeof *t * (size_t)cap);
        if (!t) {
            free(data);
            return qc_fail(QC_ERR_NOMEM, "out of memory");
        }
        p->t = t;
        p->cap = cap;
    }
    part_tensor *t = &p->t[p->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = nbytes;
    return QC_OK;
}

/* F32 values -> a new F16 buffer added under `name`. */
static qc_status part_add_f16(part_list *p, const char *name, const float *x, int64_t d0, int64_t d1) {
    size_t n = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    uint16_t *h = malloc(n * sizeof(uint16_t) + 1);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory for %s", name);
    for (size_t i = 0; i < n; i++) h[i] = qc_f32_to_fp16(x[i]);
    return part_add(p, name, QC_DTYPE_F16, d1 > 0 ? 2 : 1, d0, d1, h, n * sizeof(uint16_t));
}

static qc_status part_write(part_list *p, const char *path) {
    qc_st_writer *w;
    qc_status st = qc_st_writer_create(path, &w);
    for (int i = 0; st == QC_OK && i < p->n; i++)
        st = qc_st_writer_add(w, p->t[i].name, p->t[i].dtype, p->t[i].ndim, p->t[i].shape);
    if (st == QC_OK) st = qc_st_writer_begin(w);
    for (int i = 0; st == QC_OK && i < p->n; i++) st = qc_st_writer_write(w, p->t[i].data, p->t[i].nbytes);
    if (st == QC_OK) return qc_st_writer_finish(w);
    if (w) qc_st_writer_abort(w);
    return st;
}

static void part_free(part_list *p) {
    for (int i = 0; i < p->n; i++) free(p->t[i].data);
    free(p->t);
    memset(p, 0, sizeof *p);
}

/* ---- Hessian capture ---- */
typedef struct {
    bool   want[QC_LIN_COUNT];   /* capture ids wanted in this pass */
    float *H[QC_LIN_COUNT];      /* [K, K] upper triangle accumulated */
    int    K[QC_LIN_COUNT];
    int64_t rows[QC_LIN_COUNT];
    qc_linear_id last;           /* stop after this capture */
    double t_hess;
} capture_ctx;

static bool capture(void *user, qc_linear_id which, const float *x, int n, int in) {
    capture_ctx *c = user;
    if (c->want[which]) {
        double t0 = qc_time_now();
        QC_ASSERT(in == c->K[which]);
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, in, n, 1.0f, x, in, 1.0f, c->H[which], in);
        c->rows[which] += n;
        c->t_hess += qc_time_now() - t0;
    }
    return which != c->last;
}

/* The capture point whose input a linear consumes. */
static qc_linear_id input_of(qc_linear_id l) {
    switch (l) {
    case QC_LIN_Q: case QC_LIN_K: case QC_LIN_V: return QC_LIN_Q;
    case QC_LIN_O: return QC_LIN_O;
    case QC_LIN_GATE: case QC_LIN_UP: return QC_LIN_GATE;
    default: return QC_LIN_DOWN;
    }
}

/* tr(D H D^T) for D [N, K] and symmetric H [K, K]. */
static double quad_form(const float *D, const float *H, int N, int K, float *tmp /* [N, K] */) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, K, K, 1.0f, D, K, H, K, 0.0f, tmp, K);
    double s = 0.0;
    for (size_t i = 0; i < (size_t)N * K; i++) s += (double)tmp[i] * D[i];
    return s;
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

static qc_status push_str(char ***arr, int *n, const char *s) {
    char **a = realloc(*arr, sizeof(char *) * (size_t)(*n + 1));
    if (!a) return qc_fail(QC_ERR_NOMEM, "out of memory");
    *arr = a;
    if (!(a[*n] = qc_strdup(s))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    (*n)++;
    return QC_OK;
}

/* Reads a whole model tensor as F32 into a new buffer. */
static qc_status read_tensor(const qc_model *m, const char *name, float **out, const qc_tensor **info) {
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    float *x = malloc(sizeof(float) * (size_t)t->numel + 1);
    if (!x) return qc_fail(QC_ERR_NOMEM, "out of memory for %s", name);
    qc_status st = qc_tensor_read_f32(t, 0, t->numel, x);
    if (st) {
        free(x);
        return st;
    }
    *out = x;
    if (info) *info = t;
    return QC_OK;
}

static qc_status write_base_part(const qc_model *m, const char *path) {
    part_list p = {0};
    const char *names[3] = {"model.embed_tokens.weight", "model.norm.weight",
                            m->cfg.tie_word_embeddings ? NULL : "lm_head.weight"};
    qc_status st = QC_OK;
    for (int i = 0; st == QC_OK && i < 3; i++) {
        if (!names[i]) continue;
        float *x = NULL;
        const qc_tensor *t = NULL;
        if ((st = read_tensor(m, names[i], &x, &t))) break;
        st = part_add_f16(&p, names[i], x, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
        free(x);
    }
    if (st == QC_OK) st = part_write(&p, path);
    part_free(&p);
    return st;
}

/* Adds one quantized linear's packed tensors to the layer's part. */
static qc_status add_packed(part_list *p, const char *prefix, const qc_qlinear *q, bool v2) {
    int N = q->N, K = q->K, b = q->bits, G = q->n_groups;
    size_t qw = (size_t)K * b / 32 * N, qz = (size_t)G * ((size_t)N * b / 32);
    int32_t *qweight = malloc(qw * 4), *qzeros = malloc(qz * 4), *gidx = malloc((size_t)K * 4);
    uint16_t *sc = malloc((size_t)G * N * 2);
    if (!qweight || !qzeros || !gidx || !sc) {
        free(qweight); free(qzeros); free(gidx); free(sc);
        return qc_fail(QC_ERR_NOMEM, "out of memory packing %s", prefix);
    }
    qc_status st = qc_gptq_pack(q, v2, qweight, qzeros, sc);
    if (st) {
        free(qweight); free(qzeros); free(gidx); free(sc);
        return st;
    }
    memcpy(gidx, q->g_idx, (size_t)K * 4);
    char name[192];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if ((st = part_add(p, name, QC_DTYPE_I32, 2, (int64_t)K * b / 32, N, qweight, qw * 4))) goto fail_rest;
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if ((st = part_add(p, name, QC_DTYPE_I32, 2, G, (int64_t)N * b / 32, qzeros, qz * 4))) goto fail_rest2;
    snprintf(name, sizeof name, "%s.scales", prefix);
    if ((st = part_add(p, name, QC_DTYPE_F16, 2, G, N, sc, (size_t)G * N * 2))) goto fail_rest3;
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    return part_add(p, name, QC_DTYPE_I32, 1, K, 0, gidx, (size_t)K * 4);
fail_rest:
    free(qzeros);
fail_rest2:
    free(sc);
fail_rest3:
    free(gidx);
    return st;
}

qc_status qc_pipeline_run(const qc_model *m, const int32_t *ids, int nsamples, int seqlen, const qc_pipeline_opts *o,
                          qc_pipeline_result *res) {
    memset(res, 0, sizeof *res);
    const qc_model_config *c = &m->cfg;
    int d = c->hidden_size, T = seqlen, L = c->n_layers;
    if (nsamples < 1 || T < 1) return qc_fail(QC_ERR_ARG, "quantize: no calibration samples");
    if (o->method == QC_METHOD_AWQ) return qc_fail(QC_ERR_UNSUPPORTED, "quantize: method awq is not implemented yet");
    if (mkdir(o->work_dir, 0755) != 0 && errno != EEXIST)
        return qc_fail(QC_ERR_IO, "%s: cannot create work directory: %s", o->work_dir, strerror(errno));
    int batch = (o->batch_tokens > 0 ? o->batch_tokens : 8192) / T;
    if (batch < 1) batch = 1;
    if (batch > nsamples) batch = nsamples;
    size_t rows = (size_t)nsamples * T;

    qc_status st = QC_OK;
    float *X = NULL, *xs = NULL, *Hs[QC_LIN_COUNT] = {0}, *Hw = NULL, *Wo = NULL, *tmp = NULL;
    qc_fwd *f = NULL;
    qc_qlinear ql;
    memset(&ql, 0, sizeof ql);
    part_list part = {0};
    char path[4096];
    res->lin = calloc((size_t)L * QC_LIN_COUNT, sizeof *res->lin);
    if (o->keep_fake) {
        res->fake = calloc((size_t)L, sizeof *res->fake);
        res->n_layers = L;
    }
    X = qc_aligned_alloc(rows * d * sizeof(float));
    xs = qc_aligned_alloc((size_t)batch * T * d * sizeof(float));
    int Kmax = c->intermediate_size > d ? c->intermediate_size : d;
    if (c->n_heads * c->head_dim > Kmax) Kmax = c->n_heads * c->head_dim;
    int Nmax = Kmax > c->intermediate_size ? Kmax : c->intermediate_size;
    Hw = malloc(sizeof(float) * (size_t)Kmax * Kmax);
    Wo = malloc(sizeof(float) * (size_t)Nmax * Kmax);
    tmp = malloc(sizeof(float) * (size_t)Nmax * Kmax);
    if (!res->lin || (o->keep_fake && !res->fake) || !X || !xs || !Hw || !Wo || !tmp) {
        st = qc_fail(QC_ERR_NOMEM, "quantize: cannot allocate %zu x %d calibration activations and buffers", rows, d);
        goto out;
    }
    if ((st = qc_fwd_create(c, batch, T, &f))) goto out;

    double t0 = qc_time_now();
    if ((st = qc_model_embed(m, ids, (int)rows, X))) goto out;
    snprintf(path, sizeof path, "%s/base.safetensors", o->work_dir);
    if ((st = write_base_part(m, path)) || (st = push_str(&res->parts, &res->n_parts, path))) goto out;
    res->t_embed = qc_time_now() - t0;

    static const qc_linear_id ts_groups[4][3] = {{QC_LIN_Q, QC_LIN_K, QC_LIN_V}, {QC_LIN_O, -1, -1},
                                                 {QC_LIN_GATE, QC_LIN_UP, -1}, {QC_LIN_DOWN, -1, -1}};
    int total = L * QC_LIN_COUNT, done = 0;
    for (int li = 0; li < L && st == QC_OK; li++) {
        qc_layer layer;
        if ((st = qc_layer_load(m, li, &layer))) break;
        int n_groups = o->true_sequential ? 4 : 1;
        for (int gi = 0; gi < n_groups && st == QC_OK; gi++) {
            qc_linear_id members[QC_LIN_COUNT];
            int nm = 0;
            if (o->true_sequential) {
                for (int k = 0; k < 3; k++)
                    if ((int)ts_groups[gi][k] >= 0) members[nm++] = ts_groups[gi][k];
            } else {
                for (int k = 0; k < QC_LIN_COUNT; k++) members[nm++] = (qc_linear_id)k;
            }
            /* which linears of the group are quantizable in this format */
            bool quant[QC_LIN_COUNT] = {0};
            capture_ctx cc;
            memset(&cc, 0, sizeof cc);
            cc.last = QC_LIN_Q;
            for (int k = 0; k < nm; k++) {
                qc_linear_id l = members[k];
                const char *why = NULL;
                quant[l] = qc_gptq_shape_ok(layer.out_features[l], layer.in_features[l], o->q.bits, o->q.group_size, &why);
                qc_linear_report *r = &res->lin[li * QC_LIN_COUNT + l];
                r->layer = li;
                r->lin = l;
                r->N = layer.out_features[l];
                r->K = layer.in_features[l];
                snprintf(r->name, sizeof r->name, "model.layers.%d.%s", li, qc_linear_name(l));
                if (!quant[l]) {
                    snprintf(r->reason, sizeof r->reason, "kept in F16: %s", why ? why : "shape not supported");
                    continue;
                }
                qc_linear_id cap = input_of(l);
                if (!cc.want[cap]) {
                    cc.want[cap] = true;
                    cc.K[cap] = layer.in_features[l];
                    if (!Hs[cap]) Hs[cap] = malloc(sizeof(float) * (size_t)Kmax * Kmax);
                    if (!Hs[cap]) {
                        st = qc_fail(QC_ERR_NOMEM, "out of memory for a Hessian");
                        break;
                    }
                    memset(Hs[cap], 0, sizeof(float) * (size_t)cc.K[cap] * cc.K[cap]);
                    if (cap > cc.last) cc.last = cap;
                }
            }
            bool any = false;
            for (int k = 0; k < QC_LIN_COUNT; k++) any |= cc.want[k];
            if (st || !any) goto report_group;
            for (int k = 0; k < QC_LIN_COUNT; k++) cc.H[k] = Hs[k];
            /* run the layer (already-quantized groups in place) and accumulate the Hessians */
            double tf = qc_time_now();
            for (int s0 = 0; s0 < nsamples && st == QC_OK; s0 += batch) {
                int nb = nsamples - s0 < batch ? nsamples - s0 : batch;
                memcpy(xs, X + (size_t)s0 * T * d, sizeof(float) * (size_t)nb * T * d);
                st = qc_layer_forward(f, &layer, xs, nb, T, capture, &cc);
            }
            res->t_forward += qc_time_now() - tf - cc.t_hess;
            res->t_hessian += cc.t_hess;
            if (st) break;
            for (int k = 0; k < QC_LIN_COUNT; k++) {
                if (!cc.want[k]) continue;
                int K = cc.K[k];
                float scale = 2.0f / (float)cc.rows[k];
                float *H = Hs[k];
                for (int i = 0; i < K; i++)
                    for (int j = i; j < K; j++) {
                        float v = H[(size_t)i * K + j] * scale;
                        H[(size_t)i * K + j] = v;
                        H[(size_t)j * K + i] = v;
                    }
            }
            /* solve each linear of the group */
            for (int k = 0; k < nm && st == QC_OK; k++) {
                qc_linear_id l = members[k];
                if (!quant[l]) continue;
                qc_linear_report *r = &res->lin[li * QC_LIN_COUNT + l];
                int N = layer.out_features[l], K = layer.in_features[l];
                const float *H = Hs[input_of(l)];
                double ts = qc_time_now();
                memcpy(Wo, layer.w[l], sizeof(float) * (size_t)N * K);
                memcpy(Hw, H, sizeof(float) * (size_t)K * K);
                if ((st = qc_qlinear_alloc(&ql, N, K, o->q.bits, o->q.group_size, o->q.sym, layer.b[l] != NULL)))
                    break;
                if (o->method == QC_METHOD_GPTQ) {
                    qc_gptq_stats gs;
                    st = qc_gptq_quantize(layer.w[l], Hw, N, K, &o->q, &ql, &gs);
                    r->damp = gs.damp_used;
                    r->retries = gs.retries;
                    r->dead_cols = gs.dead_cols;
                } else {
                    st = qc_rtn_quantize(layer.w[l], N, K, o->q.bits, o->q.group_size, o->q.sym, &ql);
                }
                if (st) {
                    qc_error_prefix("%s", r->name);
                    break;
                }
                r->seconds = qc_time_now() - ts;
                res->t_solve += r->seconds;
                /* relative output error on the calibration inputs */
                double ref = quad_form(Wo, H, N, K, tmp);
                for (size_t i = 0; i < (size_t)N * K; i++) Wo[i] -= layer.w[l][i];
                r->rel_err = ref > 0 ? quad_form(Wo, H, N, K, tmp) / ref : 0.0;
                r->quantized = true;
                double tw = qc_time_now();
                if (layer.b[l]) memcpy(ql.bias, layer.b[l], sizeof(float) * (size_t)N);
                if ((st = add_packed(&part, r->name, &ql, o->v2))) break;
                if (layer.b[l]) {
                    char bn[192];
                    snprintf(bn, sizeof bn, "%s.bias", r->name);
                    if ((st = part_add_f16(&part, bn, layer.b[l], N, 0))) break;
                }
                if (o->keep_fake) { /* what a loader reconstructs: fp16 scales */
                    for (size_t i = 0; i < (size_t)ql.n_groups * N; i++)
                        ql.scales[i] = qc_fp16_to_f32(qc_f32_to_fp16(ql.scales[i]));
                    qc_qlinear_dequant(&ql, tmp);
                    memcpy(Wo, tmp, sizeof(float) * (size_t)N * K); /* kept aside until the layer is done */
                }
                res->t_write += qc_time_now() - tw;
                qc_qlinear_free(&ql);
                if (o->keep_fake) {
                    /* stash the loader-exact weight in the (now unused) bias-free slot after the final pass */
                    float *copy = qc_aligned_alloc(sizeof(float) * (size_t)N * K);
                    if (!copy) {
                        st = qc_fail(QC_ERR_NOMEM, "out of memory");
                        break;
                    }
                    memcpy(copy, Wo, sizeof(float) * (size_t)N * K);
                    if (!res->fake[li].w[l]) res->fake[li].w[l] = copy;
                }
            }
        report_group:
            for (int k = 0; k < nm && st == QC_OK; k++) {
                qc_linear_id l = members[k];
                qc_linear_report *r = &res->lin[li * QC_LIN_COUNT + l];
                done++;
                if (!quant[l]) {
                    char nm_[192];
                    snprintf(nm_, sizeof nm_, "%s.weight", r->name);
                    if ((st = part_add_f16(&part, nm_, layer.w[l], r->N, r->K))) break;
                    if (layer.b[l]) {
                        snprintf(nm_, sizeof nm_, "%s.bias", r->name);
                        if ((st = part_add_f16(&part, nm_, layer.b[l], r->N, 0))) break;
                    }
                    if ((st = push_str(&res->unquantized, &res->n_unq, r->name))) break;
                }
                if (o->on_linear && !o->on_linear(o->user, r, done, total))
                    st = qc_fail(QC_ERR_CANCELLED, "quantize: cancelled");
            }
        }
        /* the quantized layer's output is the next layer's input */
        double tf = qc_time_now();
        for (int s0 = 0; s0 < nsamples && st == QC_OK; s0 += batch) {
            int nb = nsamples - s0 < batch ? nsamples - s0 : batch;
            st = qc_layer_forward(f, &layer, X + (size_t)s0 * T * d, nb, T, NULL, NULL);
        }
        res->t_forward += qc_time_now() - tf;
        if (st == QC_OK) {
            double tw = qc_time_now();
            char nm_[192];
            snprintf(nm_, sizeof nm_, "model.layers.%d.input_layernorm.weight", li);
            st = part_add_f16(&part, nm_, layer.attn_norm, d, 0);
            snprintf(nm_, sizeof nm_, "model.layers.%d.post_attention_layernorm.weight", li);
            if (st == QC_OK) st = part_add_f16(&part, nm_, layer.mlp_norm, d, 0);
            if (st == QC_OK && layer.q_norm) {
                snprintf(nm_, sizeof nm_, "model.layers.%d.self_attn.q_norm.weight", li);
                st = part_add_f16(&part, nm_, layer.q_norm, c->head_dim, 0);
                snprintf(nm_, sizeof nm_, "model.layers.%d.self_attn.k_norm.weight", li);
                if (st == QC_OK) st = part_add_f16(&part, nm_, layer.k_norm, c->head_dim, 0);
            }
            snprintf(path, sizeof path, "%s/layer-%05d.safetensors", o->work_dir, li);
            if (st == QC_OK) st = part_write(&part, path);
            if (st == QC_OK) st = push_str(&res->parts, &res->n_parts, path);
            res->t_write += qc_time_now() - tw;
        }
        part_free(&part);
        if (st == QC_OK && o->keep_fake) {
            /* the fake-quantized layer: loader-exact quantized weights, F16-rounded everything else */
            qc_layer *fk = &res->fake[li];
            for (int l = 0; l < QC_LIN_COUNT; l++) {
                if (fk->w[l]) {
                    qc_aligned_free(layer.w[l]);
                } else {
                    fk->w[l] = layer.w[l];
                    for (size_t i = 0; i < (size_t)layer.out_features[l] * layer.in_features[l]; i++)
                        fk->w[l][i] = qc_fp16_to_f32(qc_f32_to_fp16(fk->w[l][i]));
                }
                layer.w[l] = NULL;
                fk->b[l] = layer.b[l];
                layer.b[l] = NULL;
                if (fk->b[l])
                    for (int i = 0; i < layer.out_features[l]; i++) fk->b[l][i] = qc_fp16_to_f32(qc_f32_to_fp16(fk->b[l][i]));
                fk->out_features[l] = layer.out_features[l];
                fk->in_features[l] = layer.in_features[l];
            }
            float **norms[4] = {&layer.attn_norm, &layer.mlp_norm, &layer.q_norm, &layer.k_norm};
            float **dst[4] = {&fk->attn_norm, &fk->mlp_norm, &fk->q_norm, &fk->k_norm};
            int len[4] = {d, d, c->head_dim, c->head_dim};
            for (int k = 0; k < 4; k++) {
                *dst[k] = *norms[k];
                *norms[k] = NULL;
                if (*dst[k])
                    for (int i = 0; i < len[k]; i++) (*dst[k])[i] = qc_fp16_to_f32(qc_f32_to_fp16((*dst[k])[i]));
            }
            fk->index = li;
        }
        qc_layer_release(&layer);
    }
out:
    qc_qlinear_free(&ql);
    part_free(&part);
    qc_fwd_free(f);
    qc_aligned_free(X);
    qc_aligned_free(xs);
    for (int k = 0; k < QC_LIN_COUNT; k++) free(Hs[k]);
    free(Hw);
    free(Wo);
    free(tmp);
    res->n_lin = L * QC_LIN_COUNT;
    if (st != QC_OK) {
        qc_linear_report *keep = res->lin;
        res->lin = NULL;
        qc_pipeline_result_free(res);
        free(keep);
    }
    return st;
}
