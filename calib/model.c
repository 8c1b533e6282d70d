#include "model.h"

#include "qc_par.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Query rows are processed in blocks so the score matrix is [ATTN_BLOCK, T], not [T, T], and keys
 * past the block's last row are never computed. */
#define ATTN_BLOCK 256
/* The work split of a linear, fixed by shapes so that no bit depends on the batch or the thread
 * count: rows in sequences of `period` rows (the last may be shorter), each cut into blocks of
 * LIN_ROWS rows from its first row; output features in blocks of LIN_COLS. One block is one task and
 * one single-threaded sgemm whose shape depends only on (period, out, in) (OpenBLAS's bits depend on
 * the call's shape and on a row's position in it). */
#define LIN_ROWS 256
#define LIN_COLS 256
/* qc_linear_apply is not told the sequence length: its rows are cut into blocks of APPLY_ROWS from
 * the call's first row, so callers that pass whole sequences of a multiple of this length get the
 * same bits however they batch them. */
#define APPLY_ROWS 64
/* Rows per task of the row-wise operations (norms, rotary, gating, residual adds). */
#define EW_ROWS 64

static bool is_float_dtype(qc_dtype dt) {
    return dt == QC_DTYPE_F32 || dt == QC_DTYPE_F16 || dt == QC_DTYPE_BF16 || dt == QC_DTYPE_F64;
}

/* Finds `name` and checks it is a floating tensor of shape [d0] (d1 < 0) or [d0, d1]. */
static qc_status need_tensor(const qc_model *m, const char *name, int64_t d0, int64_t d1, const qc_tensor **out) {
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing from the model's safetensors", m->dir, name);
    if (!is_float_dtype(t->dtype))
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a floating dtype (F32/F16/BF16)",
                       m->dir, name, qc_dtype_name(t->dtype));
    bool ok = d1 < 0 ? (t->ndim == 1 && t->shape[0] == d0)
                     : (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1);
    if (!ok) {
        char got[96] = "[", *p = got + 1;
        for (int i = 0; i < t->ndim && p < got + 80; i++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        snprintf(p, (size_t)(got + sizeof got - p), "]");
        if (d1 < 0)
            return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies [%lld]", m->dir, name,
                           got, (long long)d0);
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has shape %s, config.json implies [%lld, %lld]", m->dir,
                       name, got, (long long)d0, (long long)d1);
    }
    if (out) *out = t;
    return QC_OK;
}

/* "<layers>.i.<rel>.<suffix>" under the description's name, else under its alternative (transformers 5's
 * names for Mixtral) when the model has that one: name receives the one to read. */
static void moe_name(const qc_model *m, int i, const char *rel, const char *alt, const char *suffix, char *name,
                     size_t size) {
    snprintf(name, size, "%s.%d.%s.%s", qc_layers_path(&m->cfg), i, rel, suffix);
    if (alt && !qc_weights_find(m->weights, name)) {
        char a[256];
        snprintf(a, sizeof a, "%s.%d.%s.%s", qc_layers_path(&m->cfg), i, alt, suffix);
        if (qc_weights_find(m->weights, a)) snprintf(name, size, "%s", a);
    }
}

/* The fused 3-D experts tensor `<experts>.<what>` of layer i, checked to be [E, d1, d2]; NULL when absent. */
static qc_status fused_experts(const qc_model *m, int i, int which, const qc_tensor **out) {
    const qc_model_config *c = &m->cfg;
    const qc_arch_moe *moe = qc_arch_desc_of(c->arch)->moe;
    char name[256];
    moe_name(m, i, moe->experts, moe->alt_experts, moe->fused[which], name, sizeof name);
    *out = NULL;
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (!t) return QC_OK;
    int64_t d1 = which == 0 ? 2 * (int64_t)c->moe_intermediate_size : c->hidden_size;
    int64_t d2 = which == 0 ? c->hidden_size : c->moe_intermediate_size;
    if (!is_float_dtype(t->dtype) || t->ndim != 3 || t->shape[0] != c->n_experts || t->shape[1] != d1 ||
        t->shape[2] != d2)
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' must be a floating [%d, %lld, %lld] (the experts fused as "
                       "transformers 5 stores them)", m->dir, name, c->n_experts, (long long)d1, (long long)d2);
    *out = t;
    return QC_OK;
}

/* An MoE layer's router, shared-expert gate and experts (per expert, packed or plain, or fused 3-D). */
static qc_status check_moe(const qc_model *m, int i) {
    const qc_model_config *c = &m->cfg;
    const qc_arch_moe *moe = qc_arch_desc_of(c->arch)->moe;
    char name[256], path[192];
    int d = c->hidden_size;
    moe_name(m, i, moe->router, moe->alt_router, "weight", name, sizeof name);
    qc_status st = need_tensor(m, name, c->n_experts, d, NULL);
    if (st == QC_OK && moe->shared_gate) {
        snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, moe->shared_gate);
        st = need_tensor(m, name, 1, d, NULL);
    }
    const qc_tensor *fz[2] = {NULL, NULL};
    for (int k = 0; k < 2 && st == QC_OK; k++) st = fused_experts(m, i, k, &fz[k]);
    for (int e = 0; e < c->n_experts && st == QC_OK; e++)
        for (int j = 0; j < 3 && st == QC_OK; j++) {
            qc_linear_id l = QC_LIN_EXPERT(e, j);
            int no, ni;
            qc_linear_shape(c, l, &no, &ni);
            qc_linear_path(c, l, path, sizeof path);
            snprintf(name, sizeof name, "%s.%d.%s.qweight", qc_layers_path(&m->cfg), i, path);
            if ((m->is_gptq || m->is_awq) && qc_weights_find(m->weights, name)) continue;
            snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, path);
            if (!qc_weights_find(m->weights, name) && fz[j == 2 ? 1 : 0]) continue;
            st = need_tensor(m, name, no, ni, NULL);
        }
    return st;
}

qc_status qc_model_open(const char *dir, qc_model **out) {
    *out = NULL;
    qc_model *m = calloc(1, sizeof *m);
    if (!m) return qc_fail(QC_ERR_NOMEM, "out of memory");
    m->dir = qc_strdup(dir);
    qc_status st = m->dir ? qc_model_config_load(dir, &m->cfg) : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) st = qc_gptq_detect(dir, &m->is_gptq, &m->gptq);
    if (st == QC_OK && !m->is_gptq) st = qc_awq_detect(dir, &m->is_awq, &m->awq);
    if (st == QC_OK) st = qc_weights_open(dir, &m->weights);
    if (st != QC_OK) {
        qc_model_free(m);
        return st;
    }
    const qc_model_config *c = &m->cfg;
    int d = c->hidden_size;
    char name[256];
    const qc_arch_desc *a = qc_arch_desc_of(c->arch);
    st = need_tensor(m, a->embed, c->vocab_size, d, &m->embed);
    if (st == QC_OK) st = need_tensor(m, a->final_norm, d, -1, &m->final_norm);
    if (st == QC_OK && a->final_norm_bias) st = need_tensor(m, a->final_norm_bias, d, -1, &m->final_norm_bias);
    if (st == QC_OK && a->pos_embed)
        st = need_tensor(m, a->pos_embed, (int64_t)c->max_position_embeddings + a->pos_offset, d, &m->pos_embed);
    if (st == QC_OK) {
        const qc_tensor *lm = qc_weights_find(m->weights, a->lm_head);
        if (c->tie_word_embeddings) {
            m->lm_head = m->embed; /* a stray lm_head.weight in a tied model is ignored, as transformers does */
        } else if (!lm) {
            st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing and tie_word_embeddings is false", dir, a->lm_head);
        } else {
            st = need_tensor(m, a->lm_head, c->vocab_size, d, &m->lm_head);
        }
    }
    for (int i = 0; st == QC_OK && i < c->n_layers; i++) {
        for (int k = 0; st == QC_OK && k < QC_NORM_COUNT; k++) {
            if (!qc_norm_present(c, (qc_norm_id)k)) continue;
            snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, a->norm[k].name);
            st = need_tensor(m, name, qc_norm_dim(c, (qc_norm_id)k), -1, NULL);
            if (st == QC_OK && qc_norm_has_bias(c)) {
                snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(&m->cfg), i, a->norm[k].name);
                st = need_tensor(m, name, qc_norm_dim(c, (qc_norm_id)k), -1, NULL);
            }
        }
        if (st) break;
        for (int l = 0; st == QC_OK && l < QC_LIN_COUNT; l++) { /* each stored tensor once (fused: all rows) */
            if (!qc_linear_present(c, i, (qc_linear_id)l) || !qc_linear_first_of_tensor(c, (qc_linear_id)l)) continue;
            int no, ni, row0;
            const char *tensor;
            qc_linear_shape(c, (qc_linear_id)l, &no, &ni);
            qc_linear_storage(c, (qc_linear_id)l, &tensor, &row0, &no);
            snprintf(name, sizeof name, "%s.%d.%s.qweight", qc_layers_path(&m->cfg), i, tensor);
            if ((m->is_gptq || m->is_awq) && qc_weights_find(m->weights, name)) continue; /* checked when loaded */
            snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, tensor);
            st = need_tensor(m, name, no, ni, NULL);
            if (st == QC_OK && qc_linear_has_bias(c, (qc_linear_id)l)) {
                snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(&m->cfg), i, tensor);
                st = need_tensor(m, name, no, -1, NULL);
            }
        }
        if (st == QC_OK && qc_layer_is_moe(c, i)) st = check_moe(m, i);
    }
    if (st != QC_OK) {
        qc_model_free(m);
        return st;
    }
    *out = m;
    return QC_OK;
}

void qc_model_free(qc_model *m) {
    if (!m) return;
    qc_weights_free(m->weights);
    free(m->dir);
    free(m);
}

/* Allocates and converts a whole floating tensor. */
static qc_status load_f32(const qc_model *m, const char *name, float **out) {
    *out = NULL;
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing", m->dir, name);
    size_t bytes;
    if (!qc_mul_ok((size_t)t->numel, sizeof(float), &bytes)) return qc_fail(QC_ERR_NOMEM, "%s: too large", name);
    float *p = qc_aligned_alloc(bytes);
    if (!p) return qc_fail(QC_ERR_NOMEM, "%s: cannot allocate %zu bytes", name, bytes);
    qc_status st = qc_tensor_read_f32(t, 0, t->numel, p);
    if (st != QC_OK) {
        qc_aligned_free(p);
        return st;
    }
    *out = p;
    return QC_OK;
}

float **qc_layer_norm(qc_layer *L, qc_norm_id n) {
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

float **qc_layer_norm_bias(qc_layer *L, qc_norm_id n) {
    QC_ASSERT(n >= 0 && n < QC_NORM_COUNT);
    return &L->norm_bias[n];
}

/* One expert linear of layer i: packed (GPTQ/AWQ checkpoint), per-expert 2-D, or its slice of the fused
 * 3-D tensor. */
static qc_status load_expert(const qc_model *m, int i, qc_linear_id l, float **out) {
    const qc_model_config *c = &m->cfg;
    char name[256], path[192];
    int N, K;
    qc_linear_shape(c, l, &N, &K);
    qc_linear_path(c, l, path, sizeof path);
    snprintf(name, sizeof name, "%s.%d.%s.qweight", qc_layers_path(&m->cfg), i, path);
    if ((m->is_gptq || m->is_awq) && qc_weights_find(m->weights, name)) {
        bool has_bias = false;
        float *w = qc_aligned_alloc(sizeof(float) * (size_t)N * K), *b = qc_aligned_alloc(sizeof(float) * (size_t)N);
        qc_status st = (!w || !b) ? qc_fail(QC_ERR_NOMEM, "out of memory") : QC_OK;
        snprintf(name, sizeof name, "%s.%d.%s", qc_layers_path(&m->cfg), i, path);
        if (st == QC_OK)
            st = m->is_gptq ? qc_gptq_load_linear(m->weights, name, &m->gptq, N, K, w, b, &has_bias)
                            : qc_awq_load_linear(m->weights, name, &m->awq, N, K, w, b, &has_bias);
        if (st == QC_OK && has_bias) st = qc_fail(QC_ERR_FORMAT, "%s: '%s' has a bias; experts have none", m->dir, name);
        qc_aligned_free(b);
        if (st) {
            qc_aligned_free(w);
            return st;
        }
        *out = w;
        return QC_OK;
    }
    const qc_tensor *t;
    int64_t el0;
    qc_status st = qc_model_expert_tensor(m, i, l, &t, &el0);
    if (st) return st;
    float *w = qc_aligned_alloc(sizeof(float) * (size_t)N * K);
    if (!w) return qc_fail(QC_ERR_NOMEM, "out of memory");
    st = qc_tensor_read_f32(t, el0, (int64_t)N * K, w);
    if (st) {
        qc_aligned_free(w);
        return st;
    }
    *out = w;
    return QC_OK;
}

qc_status qc_model_expert_tensor(const qc_model *m, int i, qc_linear_id l, const qc_tensor **out, int64_t *el0) {
    const qc_model_config *c = &m->cfg;
    char name[256], path[192];
    int N, K, e, j;
    *out = NULL;
    *el0 = 0;
    if (!qc_linear_expert(l, &e, &j)) return qc_fail(QC_ERR_ARG, "slot %d is not an expert's", (int)l);
    qc_linear_shape(c, l, &N, &K);
    qc_linear_path(c, l, path, sizeof path);
    snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(c), i, path);
    const qc_tensor *t = qc_weights_find(m->weights, name);
    if (t) {
        if (!is_float_dtype(t->dtype) || t->numel != (int64_t)N * K || !t->data)
            return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' must be a floating [%d, %d]", m->dir, name, N, K);
        *out = t;
        return QC_OK;
    }
    const qc_tensor *f;
    qc_status st = fused_experts(m, i, j == 2 ? 1 : 0, &f);
    if (st) return st;
    if (!f) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is missing (and no fused experts tensor holds it)", m->dir, name);
    /* fused: gate_up [E, 2 * ff, d] (gate rows, then up rows), down [E, d, ff] */
    *el0 = (int64_t)e * f->shape[1] * f->shape[2] + (j == 1 ? (int64_t)N * K : 0);
    *out = f;
    return QC_OK;
}

void qc_model_moe_name(const qc_model *m, int i, bool shared, char *name, size_t size) {
    const qc_arch_moe *moe = qc_arch_desc_of(m->cfg.arch)->moe;
    if (shared) snprintf(name, size, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, moe->shared_gate);
    else moe_name(m, i, moe->router, moe->alt_router, "weight", name, size);
}

static qc_status load_moe(const qc_model *m, int i, qc_layer *L) {
    const qc_model_config *c = &m->cfg;
    const qc_arch_moe *moe = qc_arch_desc_of(c->arch)->moe;
    char name[256];
    moe_name(m, i, moe->router, moe->alt_router, "weight", name, sizeof name);
    qc_status st = load_f32(m, name, &L->router);
    if (st == QC_OK && moe->shared_gate) {
        snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, moe->shared_gate);
        st = load_f32(m, name, &L->shared_gate);
    }
    const qc_tensor *fz[2] = {NULL, NULL};
    for (int k = 0; k < 2 && st == QC_OK; k++) st = fused_experts(m, i, k, &fz[k]);
    for (int l = QC_LIN_COUNT; l < qc_arch_n_lin(c) && st == QC_OK; l++) {
        qc_linear_shape(c, (qc_linear_id)l, &L->out_features[l], &L->in_features[l]);
        st = load_expert(m, i, (qc_linear_id)l, &L->w[l]);
    }
    for (int k = 0; k < 2; k++)
        if (fz[k]) qc_tensor_drop_pages(fz[k]);
    return st;
}

qc_status qc_layer_load(const qc_model *m, int i, qc_layer *L) {
    memset(L, 0, sizeof *L);
    L->index = i;
    const qc_model_config *c = &m->cfg;
    if (i < 0 || i >= c->n_layers) return qc_fail(QC_ERR_ARG, "layer %d out of range [0, %d)", i, c->n_layers);
    char name[256];
    qc_status st;
    float *full_w = NULL, *full_b = NULL;
    const qc_arch_desc *a = qc_arch_desc_of(c->arch);
    for (int k = 0; k < QC_NORM_COUNT; k++) {
        if (!qc_norm_present(c, (qc_norm_id)k)) continue;
        snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, a->norm[k].name);
        if ((st = load_f32(m, name, qc_layer_norm(L, (qc_norm_id)k)))) goto fail;
        if (!qc_norm_has_bias(c)) continue;
        snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(&m->cfg), i, a->norm[k].name);
        if ((st = load_f32(m, name, qc_layer_norm_bias(L, (qc_norm_id)k)))) goto fail;
    }
    /* each stored tensor is read once: a fused one whole (into full_w/full_b), then sliced */
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        qc_linear_shape(c, (qc_linear_id)l, &L->out_features[l], &L->in_features[l]);
        if (!qc_linear_present(c, i, (qc_linear_id)l)) continue;
        const char *tensor;
        int row0, rows, N = L->out_features[l], K = L->in_features[l];
        qc_linear_storage(c, (qc_linear_id)l, &tensor, &row0, &rows);
        bool fused = rows != N;
        if (fused && row0 == 0) {
            qc_aligned_free(full_w);
            qc_aligned_free(full_b);
            full_w = full_b = NULL;
        }
        if (!fused || row0 == 0) {
            float *w = NULL, *b = NULL;
            snprintf(name, sizeof name, "%s.%d.%s.qweight", qc_layers_path(&m->cfg), i, tensor);
            if ((m->is_gptq || m->is_awq) && qc_weights_find(m->weights, name)) {
                bool has_bias = false;
                w = qc_aligned_alloc(sizeof(float) * (size_t)rows * K);
                b = qc_aligned_alloc(sizeof(float) * (size_t)rows);
                if (!w || !b) {
                    qc_aligned_free(w);
                    qc_aligned_free(b);
                    st = qc_fail(QC_ERR_NOMEM, "out of memory");
                    goto fail;
                }
                snprintf(name, sizeof name, "%s.%d.%s", qc_layers_path(&m->cfg), i, tensor);
                st = m->is_gptq ? qc_gptq_load_linear(m->weights, name, &m->gptq, rows, K, w, b, &has_bias)
                                : qc_awq_load_linear(m->weights, name, &m->awq, rows, K, w, b, &has_bias);
                if (st == QC_OK && has_bias != qc_linear_has_bias(c, (qc_linear_id)l))
                    st = qc_fail(QC_ERR_FORMAT, "%s: '%s' %s a bias but config.json says it %s", m->dir, name,
                                 has_bias ? "has" : "lacks", has_bias ? "has none" : "has one");
                if (st == QC_OK && !has_bias) {
                    qc_aligned_free(b);
                    b = NULL;
                }
            } else {
                snprintf(name, sizeof name, "%s.%d.%s.weight", qc_layers_path(&m->cfg), i, tensor);
                st = load_f32(m, name, &w);
                if (st == QC_OK && qc_linear_has_bias(c, (qc_linear_id)l)) {
                    snprintf(name, sizeof name, "%s.%d.%s.bias", qc_layers_path(&m->cfg), i, tensor);
                    st = load_f32(m, name, &b);
                }
            }
            if (st) {
                qc_aligned_free(w);
                qc_aligned_free(b);
                goto fail;
            }
            if (!fused) {
                L->w[l] = w;
                L->b[l] = b;
                continue;
            }
            full_w = w;
            full_b = b;
        }
        /* a slice: rows [row0, row0 + N) of the fused tensor */
        L->w[l] = qc_aligned_alloc(sizeof(float) * (size_t)N * K);
        if (full_b) L->b[l] = qc_aligned_alloc(sizeof(float) * (size_t)N);
        if (!L->w[l] || (full_b && !L->b[l])) {
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(L->w[l], full_w + (size_t)row0 * K, sizeof(float) * (size_t)N * K);
        if (full_b) memcpy(L->b[l], full_b + row0, sizeof(float) * (size_t)N);
    }
    qc_aligned_free(full_w);
    qc_aligned_free(full_b);
    full_w = full_b = NULL;
    if (qc_layer_is_moe(c, i) && (st = load_moe(m, i, L))) goto fail;
    return QC_OK;
fail:
    qc_aligned_free(full_w);
    qc_aligned_free(full_b);
    qc_layer_release(L);
    return st;
}

void qc_layer_release(qc_layer *L) {
    qc_aligned_free(L->attn_norm);
    qc_aligned_free(L->mlp_norm);
    qc_aligned_free(L->q_norm);
    qc_aligned_free(L->k_norm);
    qc_aligned_free(L->attn_post_norm);
    qc_aligned_free(L->mlp_post_norm);
    for (int k = 0; k < QC_NORM_COUNT; k++) qc_aligned_free(L->norm_bias[k]);
    for (int l = 0; l < QC_LIN_MAX; l++) {
        qc_aligned_free(L->w[l]);
        qc_aligned_free(L->b[l]);
    }
    qc_aligned_free(L->router);
    qc_aligned_free(L->shared_gate);
    memset(L, 0, sizeof *L);
}

/* ---- forward ---- */

struct qc_fwd {
    qc_model_config cfg;
    int max_rows, seqlen;
    float *xn;      /* [rows, d] normed input */
    float *q;       /* [rows, n_heads * hd] */
    float *k, *v;   /* [rows, n_kv * hd] */
    float *att;     /* [rows, n_heads * hd] attention output (input of o_proj) */
    float *h1, *h2; /* [rows, ff] gate and up */
    float *tmp;     /* [rows, d] */
    /* MoE layers (NULL for dense models) */
    float *xg, *yg; /* [rows, d] one expert's gathered rows, its output */
    float *logits;  /* [rows, n_experts] router logits */
    int   *top;     /* [rows, k] chosen experts */
    float *topw;    /* [rows, k] their routing weights */
    int   *gidx;    /* [rows] the rows gathered for one expert */
    float *gw;      /* [rows] and their weights */
    const bool *moe_all; /* [n_experts] or NULL: experts whose down capture gets every row (qc_fwd_moe_all_rows) */
    float **scores; /* [n_scores][ATTN_BLOCK, seqlen]: one score block per pool thread */
    int    n_scores;
    float *cos, *sin; /* [seqlen, hd/2] */
    float *cos_l, *sin_l; /* [seqlen, hd/2] the local tables (rope_local_theta > 0), else NULL */
    float  norm_off;  /* RMSNorm weight offset: 1 for (1 + w) norms (Gemma), else 0 */
    float  attn_scale;
    bool   layer_norm; /* LayerNorms with biases (OPT), else RMSNorms */
    bool   rope;       /* rotary positions (false: learned ones, added to the embeddings) */
};

/* Inverse frequencies exactly as transformers computes them (float32), including rope scaling. */
static void rope_inv_freq(const qc_model_config *c, float *inv, int half) {
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)c->head_dim;
        inv[i] = 1.0f / powf((float)c->rope_theta, expo);
    }
    if (c->rope_type == QC_ROPE_LINEAR) {
        for (int i = 0; i < half; i++) inv[i] = (float)(inv[i] / c->rope_factor);
    } else if (c->rope_type == QC_ROPE_LLAMA3) {
        double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
        double old_ctx = c->rope_original_max_pos;
        double low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
        for (int i = 0; i < half; i++) {
            double f = inv[i], wavelen = 2.0 * M_PI / f;
            double scaled = wavelen > low_wavelen ? f / factor : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                double smooth = (old_ctx / wavelen - lo) / (hi - lo);
                scaled = (1.0 - smooth) * scaled / factor + smooth * scaled;
            }
            inv[i] = (float)scaled;
        }
    }
}

void qc_rope_tables_local(const qc_model_config *c, int seqlen, float *cos_t, float *sin_t) {
    QC_ASSERT(c->rope_local_theta > 0.0);
    qc_model_config lc = *c;
    lc.rope_theta = c->rope_local_theta;
    lc.rope_type = QC_ROPE_DEFAULT;
    lc.rope_factor = 1.0;
    qc_rope_tables(&lc, seqlen, cos_t, sin_t);
}

void qc_rope_tables(const qc_model_config *c, int seqlen, float *cos_t, float *sin_t) {
    size_t half = (size_t)c->head_dim / 2;
    float inv[512];
    QC_ASSERT(half <= 512);
    rope_inv_freq(c, inv, (int)half);
    for (int p = 0; p < seqlen; p++) {
        for (size_t i = 0; i < half; i++) {
            float ang = (float)p * inv[i]; /* float32 product, as transformers does */
            cos_t[(size_t)p * half + i] = (float)cos((double)ang);
            sin_t[(size_t)p * half + i] = (float)sin((double)ang);
        }
    }
}

qc_status qc_fwd_create(const qc_model_config *c, int max_seqs, int seqlen, qc_fwd **out) {
    *out = NULL;
    if (max_seqs < 1 || seqlen < 1) return qc_fail(QC_ERR_ARG, "forward: need at least one sequence and token");
    size_t rows = (size_t)max_seqs * (size_t)seqlen;
    if (rows > (size_t)INT32_MAX) return qc_fail(QC_ERR_ARG, "forward: %zu rows is too many", rows);
    qc_fwd *f = calloc(1, sizeof *f);
    if (!f) return qc_fail(QC_ERR_NOMEM, "out of memory");
    f->cfg = *c;
    f->max_rows = (int)rows;
    f->seqlen = seqlen;
    size_t d = (size_t)c->hidden_size, qd = (size_t)c->n_heads * c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->intermediate_size;
    if ((size_t)c->moe_intermediate_size > ff) ff = (size_t)c->moe_intermediate_size;
    if ((size_t)c->shared_expert_intermediate_size > ff) ff = (size_t)c->shared_expert_intermediate_size;
    size_t half = (size_t)c->head_dim / 2;
    if (c->n_experts > 0) {
        size_t E = (size_t)c->n_experts, k = (size_t)c->n_experts_per_tok;
        f->xg = qc_aligned_alloc(rows * d * sizeof(float));
        f->yg = qc_aligned_alloc(rows * d * sizeof(float));
        f->logits = qc_aligned_alloc(rows * E * sizeof(float));
        f->top = malloc(rows * k * sizeof(int));
        f->topw = malloc(rows * k * sizeof(float));
        f->gidx = malloc(rows * sizeof(int));
        f->gw = malloc(rows * sizeof(float));
        if (!f->xg || !f->yg || !f->logits || !f->top || !f->topw || !f->gidx || !f->gw) {
            qc_fwd_free(f);
            return qc_fail(QC_ERR_NOMEM, "forward: cannot allocate the MoE buffers for %d x %d tokens", max_seqs,
                           seqlen);
        }
    }
    f->xn = qc_aligned_alloc(rows * d * sizeof(float));
    f->q = qc_aligned_alloc(rows * qd * sizeof(float));
    f->k = qc_aligned_alloc(rows * kvd * sizeof(float));
    f->v = qc_aligned_alloc(rows * kvd * sizeof(float));
    f->att = qc_aligned_alloc(rows * qd * sizeof(float));
    f->h1 = qc_aligned_alloc(rows * ff * sizeof(float));
    f->h2 = qc_aligned_alloc(rows * ff * sizeof(float));
    f->tmp = qc_aligned_alloc(rows * d * sizeof(float));
    f->cos = qc_aligned_alloc((size_t)seqlen * half * sizeof(float));
    f->sin = qc_aligned_alloc((size_t)seqlen * half * sizeof(float));
    bool local = c->rope_local_theta > 0.0;
    if (local) {
        f->cos_l = qc_aligned_alloc((size_t)seqlen * half * sizeof(float));
        f->sin_l = qc_aligned_alloc((size_t)seqlen * half * sizeof(float));
    }
    if (!f->xn || !f->q || !f->k || !f->v || !f->att || !f->h1 || !f->h2 || !f->tmp || !f->cos || !f->sin ||
        (local && (!f->cos_l || !f->sin_l))) {
        qc_fwd_free(f);
        return qc_fail(QC_ERR_NOMEM, "forward: cannot allocate buffers for %d x %d tokens", max_seqs, seqlen);
    }
    qc_rope_tables(c, seqlen, f->cos, f->sin);
    if (local) qc_rope_tables_local(c, seqlen, f->cos_l, f->sin_l);
    f->norm_off = qc_norm_offset(c);
    f->layer_norm = qc_norm_has_bias(c);
    f->rope = qc_arch_has_rope(c);
    /* Llama: 1 / sqrtf(head_dim), as before; Gemma: query_pre_attn_scalar ** -0.5 as Python computes it */
    f->attn_scale = c->attn_scalar > 0.0 ? (float)pow(c->attn_scalar, -0.5) : 1.0f / sqrtf((float)c->head_dim);
    *out = f;
    return QC_OK;
}

void qc_fwd_moe_all_rows(qc_fwd *f, const bool *experts) { f->moe_all = experts; }

void qc_fwd_free(qc_fwd *f) {
    if (!f) return;
    qc_aligned_free(f->xn);
    qc_aligned_free(f->q);
    qc_aligned_free(f->k);
    qc_aligned_free(f->v);
    qc_aligned_free(f->att);
    qc_aligned_free(f->h1);
    qc_aligned_free(f->h2);
    qc_aligned_free(f->tmp);
    qc_aligned_free(f->xg);
    qc_aligned_free(f->yg);
    qc_aligned_free(f->logits);
    free(f->top);
    free(f->topw);
    free(f->gidx);
    free(f->gw);
    for (int i = 0; i < f->n_scores; i++) qc_aligned_free(f->scores[i]);
    free(f->scores);
    qc_aligned_free(f->cos);
    qc_aligned_free(f->sin);
    qc_aligned_free(f->cos_l);
    qc_aligned_free(f->sin_l);
    free(f);
}

/* ---- row-wise operations, on the pool in blocks of EW_ROWS rows (each row's bits are its own) ---- */
typedef enum { EW_RMSNORM, EW_LAYERNORM, EW_ROPE, EW_SILU_MUL, EW_GELU_TANH_MUL, EW_RELU, EW_ADD } ew_op;
typedef struct {
    ew_op        op;
    const qc_fwd *f;
    float       *y;
    const float *x, *w, *b;  /* b: EW_LAYERNORM's bias */
    const float *cos, *sin;  /* EW_ROPE: the tables */
    int          n, dim, T, nh;
    float        eps, off;   /* EW_RMSNORM: weight offset (0, or 1 for (1 + w) norms) */
} ew_ctx;

static void rmsnorm_rows(float *y, const float *x, const float *w, float off, int r0, int r1, int dim, float eps) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        if (off == 0.0f)
            for (int i = 0; i < dim; i++) yr[i] = w[i] * (xr[i] * inv);
        else /* Gemma: (x * inv) * (1 + w), the product in float32 as Gemma2RMSNorm */
            for (int i = 0; i < dim; i++) yr[i] = (off + w[i]) * (xr[i] * inv);
    }
}

/* OPT's nn.LayerNorm in FP32: y = (x - mean) / sqrt(var + eps) * w + b, var the biased variance (two passes). */
static void layernorm_rows(float *y, const float *x, const float *w, const float *b, int r0, int r1, int dim,
                           float eps) {
    for (int r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        float sum = 0.0f, ss = 0.0f;
        for (int i = 0; i < dim; i++) sum += xr[i];
        float mean = sum / (float)dim;
        for (int i = 0; i < dim; i++) ss += (xr[i] - mean) * (xr[i] - mean);
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
    }
}

/* Rotates every head of rows r0..r1-1 of x[rows, nh * hd] in place; row r has position r % T.
 * rotate_half convention. */
static void rope_rows(const qc_fwd *f, const float *cos_t, const float *sin_t, float *x, int r0, int r1, int T,
                      int nh) {
    int hd = f->cfg.head_dim, half = hd / 2;
    for (int r = r0; r < r1; r++) {
        const float *cs = cos_t + (size_t)(r % T) * half, *sn = sin_t + (size_t)(r % T) * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + (size_t)r * nh * hd + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

static void ew_task(void *user, int task) {
    const ew_ctx *c = user;
    int r0 = task * EW_ROWS, r1 = c->n - r0 < EW_ROWS ? c->n : r0 + EW_ROWS;
    size_t i0 = (size_t)r0 * c->dim, i1 = (size_t)r1 * c->dim;
    switch (c->op) {
    case EW_RMSNORM: rmsnorm_rows(c->y, c->x, c->w, c->off, r0, r1, c->dim, c->eps); break;
    case EW_LAYERNORM: layernorm_rows(c->y, c->x, c->w, c->b, r0, r1, c->dim, c->eps); break;
    case EW_ROPE:    rope_rows(c->f, c->cos, c->sin, c->y, r0, r1, c->T, c->nh); break;
    case EW_SILU_MUL: /* y <- silu(y) * x */
        for (size_t i = i0; i < i1; i++) {
            float g = c->y[i];
            c->y[i] = g / (1.0f + expf(-g)) * c->x[i];
        }
        break;
    case EW_GELU_TANH_MUL: /* y <- gelu_tanh(y) * x (torch's gelu(approximate="tanh")) */
        for (size_t i = i0; i < i1; i++) {
            float g = c->y[i];
            float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
            c->y[i] = 0.5f * g * (1.0f + tanhf(inner)) * c->x[i];
        }
        break;
    case EW_RELU: /* y <- max(y, 0) (OPT's ungated MLP) */
        for (size_t i = i0; i < i1; i++) c->y[i] = c->y[i] > 0.0f ? c->y[i] : 0.0f;
        break;
    case EW_ADD:
        for (size_t i = i0; i < i1; i++) c->y[i] += c->x[i];
        break;
    }
}

static void ew_run(ew_ctx *c) {
    qc_par_for_work((c->n + EW_ROWS - 1) / EW_ROWS, ew_task, c, 4.0 * c->n * (double)c->dim);
}

/* y[n, dim] = x[n, dim] * rsqrt(mean(x^2) + eps) * (off + w), as transformers' LlamaRMSNorm (off 0) and
 * Gemma2RMSNorm (off 1) (fp32). */
static void rmsnorm(float *y, const float *x, const float *w, float off, int n, int dim, float eps) {
    ew_run(&(ew_ctx){.op = EW_RMSNORM, .y = y, .x = x, .w = w, .off = off, .n = n, .dim = dim, .eps = eps});
}

/* A layer's or the final norm: LayerNorm with bias b (OPT), else RMSNorm scaling by (off + w). */
static void norm_apply(float *y, const float *x, const float *w, const float *b, bool layer_norm, float off, int n,
                       int dim, float eps) {
    if (layer_norm) {
        QC_ASSERT(b != NULL);
        ew_run(&(ew_ctx){.op = EW_LAYERNORM, .y = y, .x = x, .w = w, .b = b, .n = n, .dim = dim, .eps = eps});
        return;
    }
    rmsnorm(y, x, w, off, n, dim, eps);
}

/* Rotates with the global tables, or the local ones when local (Gemma-3's sliding layers). */
static void rope_apply(const qc_fwd *f, bool local, float *x, int rows, int T, int nh) {
    ew_run(&(ew_ctx){.op = EW_ROPE, .f = f, .y = x, .cos = local ? f->cos_l : f->cos, .sin = local ? f->sin_l : f->sin,
                     .n = rows, .dim = nh * f->cfg.head_dim, .T = T, .nh = nh});
}

/* ---- linears ---- */
typedef struct {
    float       *y;
    const float *x, *w, *b;
    int          n, period, out, in;
    int          rb_seq, cb;   /* row blocks per full sequence, column blocks */
} lin_ctx;

static void lin_task(void *user, int task) {
    const lin_ctx *c = user;
    int rb = task / c->cb, cbi = task % c->cb;
    int seq = rb / c->rb_seq;
    int r0 = seq * c->period + (rb % c->rb_seq) * LIN_ROWS;
    int64_t end = (int64_t)(seq + 1) * c->period < c->n ? (int64_t)(seq + 1) * c->period : c->n;
    int nr = end - r0 < LIN_ROWS ? (int)(end - r0) : LIN_ROWS;
    int c0 = cbi * LIN_COLS, nc = c->out - c0 < LIN_COLS ? c->out - c0 : LIN_COLS;
    float *y = c->y + (size_t)r0 * c->out + c0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, c->in, 1.0f, c->x + (size_t)r0 * c->in, c->in,
                c->w + (size_t)c0 * c->in, c->in, 0.0f, y, c->out);
    if (c->b)
        for (int r = 0; r < nr; r++)
            for (int i = 0; i < nc; i++) y[(size_t)r * c->out + i] += c->b[c0 + i];
}

/* y[n, out] = x[n, in] . W^T + b, W (rows = out, cols = in) row-major; rows in sequences of `period`. */
static void linear(float *y, const float *x, const float *w, const float *b, int n, int period, int out, int in) {
    if (n <= 0) return;
    if (period < 1 || period > n) period = n;
    lin_ctx c = {.y = y, .x = x, .w = w, .b = b, .n = n, .period = period, .out = out, .in = in,
                 .rb_seq = (period + LIN_ROWS - 1) / LIN_ROWS, .cb = (out + LIN_COLS - 1) / LIN_COLS};
    int tail = n % period;
    int row_blocks = n / period * c.rb_seq + (tail + LIN_ROWS - 1) / LIN_ROWS;
    qc_par_for_work(row_blocks * c.cb, lin_task, &c, 2.0 * n * (double)out * in);
}

/* exp(x) for x <= 0 written so the compiler vectorizes loops over it: x = n ln2 + r with the
 * two-constant Cody-Waite split, |r| <= ln2/2, exp(r) by its degree-6 Taylor polynomial (relative
 * error < 3e-7, about 2 ulp, against libm; tested), 2^n put into the exponent bits; x < -87 gives 0. */
static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_rintf(x * 1.44269504f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f + r * (8.3333338e-3f +
              r * 1.3888889e-3f)))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

float qc_exp_nonpos(float x) { return exp_nonpos(x); }

/* s[0..n) <- exp(s - max s); returns their sum. Max and sum run in 8 explicit lanes so the loops
 * vectorize without reassociating (the order of the adds is fixed, hence reproducible). */
static float softmax_unnormalized(float *s, int n) {
    float m8[8], a8[8] = {0};
    for (int k = 0; k < 8; k++) m8[k] = -INFINITY;
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) m8[k] = s[j + k] > m8[k] ? s[j + k] : m8[k];
    float mx = -INFINITY;
    for (int k = 0; k < 8; k++) mx = m8[k] > mx ? m8[k] : mx;
    for (; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    for (j = 0; j < n; j++) s[j] = exp_nonpos(s[j] - mx);
    for (j = 0; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) a8[k] += s[j + k];
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) sum += a8[k];
    for (; j < n; j++) sum += s[j];
    return sum;
}

/* Causal attention of head h of one sequence: q [T, nh*hd], k/v [T, nkv*hd] -> out [T, nh*hd] (head h's
 * columns). S: [ATTN_BLOCK, T] scratch. */
static void attention_head(const qc_fwd *f, const float *q, const float *k, const float *v, float *out, int T, int h,
                           int win, float *S) {
    const qc_model_config *c = &f->cfg;
    int hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, grp = nh / nkv;
    int qs = nh * hd, kvs = nkv * hd;
    float scale = f->attn_scale, cap = c->attn_softcap;
    const float *qh = q + (size_t)h * hd;
    const float *kh = k + (size_t)(h / grp) * hd;
    const float *vh = v + (size_t)(h / grp) * hd;
    for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
        int nr = T - r0 < ATTN_BLOCK ? T - r0 : ATTN_BLOCK;
        int nk = r0 + nr; /* keys 0..nk-1 can be seen by this block */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hd, scale, qh + (size_t)r0 * qs, qs, kh,
                    kvs, 0.0f, S, nk);
        for (int i = 0; i < nr; i++) {
            int row = r0 + i;
            int lo = win > 0 && row - win + 1 > 0 ? row - win + 1 : 0;
            float *s = S + (size_t)i * nk;
            if (cap > 0.0f) /* Gemma-2: tanh(s / cap) * cap on the scaled scores, before the mask */
                for (int j = lo; j <= row; j++) s[j] = tanhf(s[j] / cap) * cap;
            float inv = 1.0f / softmax_unnormalized(s + lo, row - lo + 1);
            for (int j = 0; j < lo; j++) s[j] = 0.0f;
            for (int j = lo; j <= row; j++) s[j] *= inv;
            for (int j = row + 1; j < nk; j++) s[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hd, nk, 1.0f, S, nk, vh, kvs, 0.0f,
                    out + (size_t)r0 * qs + (size_t)h * hd, qs);
    }
}

/* One task per (sequence, head); each pool thread has its own score block. */
typedef struct {
    const qc_fwd *f;
    const float  *q, *k, *v;
    float        *out;
    int           T, win;
} attn_ctx;

static void attn_task(void *user, int task) {
    const attn_ctx *a = user;
    const qc_model_config *c = &a->f->cfg;
    int s = task / c->n_heads, h = task % c->n_heads, w = qc_par_worker();
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim, r = (size_t)s * a->T;
    QC_ASSERT(w < a->f->n_scores);
    attention_head(a->f, a->q + r * qd, a->k + r * kvd, a->v + r * kvd, a->out + r * qd, a->T, h, a->win,
                   a->f->scores[w]);
}

/* A score block for each of the pool's threads. */
static qc_status ensure_scores(qc_fwd *f) {
    int want = qc_par_threads();
    if (want <= f->n_scores) return QC_OK;
    float **p = realloc(f->scores, sizeof(float *) * (size_t)want);
    if (!p) return qc_fail(QC_ERR_NOMEM, "forward: out of memory for attention scores");
    f->scores = p;
    size_t blk = (size_t)(f->seqlen < ATTN_BLOCK ? f->seqlen : ATTN_BLOCK);
    for (; f->n_scores < want; f->n_scores++)
        if (!(f->scores[f->n_scores] = qc_aligned_alloc(blk * (size_t)f->seqlen * sizeof(float))))
            return qc_fail(QC_ERR_NOMEM, "forward: out of memory for attention scores (%d threads)", want);
    return QC_OK;
}

static qc_status check_finite(const float *x, size_t n, int layer, const char *where) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return qc_fail(QC_ERR_NUMERIC, "layer %d: non-finite value in %s (element %zu)", layer, where, i);
    return QC_OK;
}

static qc_status check_rows(const qc_fwd *f, int nseq, int T) {
    if (T > f->seqlen || (size_t)nseq * (size_t)T > (size_t)f->max_rows)
        return qc_fail(QC_ERR_ARG, "forward: %d x %d tokens exceed the %d-token buffers", nseq, T, f->max_rows);
    return QC_OK;
}

void qc_linear_apply(float *y, const float *x, const float *w, const float *b, int n, int out, int in) {
    linear(y, x, w, b, n, APPLY_ROWS, out, in);
}

/* Attention without the residual: out = o_proj(attn(q, k, v)) of normed xn. Returns false from a
 * capture callback as `stopped`. */
static qc_status attn_block(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int nseq, int T,
                            qc_capture_fn capture, void *user, bool *stopped) {
    const qc_model_config *c = &f->cfg;
    int n = nseq * T, d = c->hidden_size, hd = c->head_dim;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    qc_status st = ensure_scores(f);
    if (st) return st;
    linear(f->q, xn, L->w[QC_LIN_Q], L->b[QC_LIN_Q], n, T, qd, d);
    linear(f->k, xn, L->w[QC_LIN_K], L->b[QC_LIN_K], n, T, kvd, d);
    linear(f->v, xn, L->w[QC_LIN_V], L->b[QC_LIN_V], n, T, kvd, d);
    if (L->q_norm) rmsnorm(f->q, f->q, L->q_norm, f->norm_off, n * c->n_heads, hd, c->rms_norm_eps);
    if (L->k_norm) rmsnorm(f->k, f->k, L->k_norm, f->norm_off, n * c->n_kv_heads, hd, c->rms_norm_eps);
    bool local = qc_layer_rope_local(c, L->index);
    if (f->rope) {
        rope_apply(f, local, f->q, n, T, c->n_heads);
        rope_apply(f, local, f->k, n, T, c->n_kv_heads);
    }
    attn_ctx a = {.f = f, .q = f->q, .k = f->k, .v = f->v, .out = f->att, .T = T, .win = qc_layer_window(c, L->index)};
    qc_par_for_work(nseq * c->n_heads, attn_task, &a, 2.0 * n * (double)T * qd);
    if (capture && !capture(user, QC_LIN_O, f->att, n, qd)) {
        *stopped = true;
        return QC_OK;
    }
    linear(out, f->att, L->w[QC_LIN_O], L->b[QC_LIN_O], n, T, d, qd);
    return QC_OK;
}

/* A gated MLP without the residual: out = down(act(gate(xn)) * up(xn)) with the linears in slots g, g + 1,
 * g + 2 (gate, up, down) and width ff; rows in sequences of T. The activations go to capture as `down`.
 * Without a gate (OPT): out = down(relu(up(xn))). */
static qc_status gated_mlp(qc_fwd *f, const qc_layer *L, int g, qc_linear_id down, const float *xn, float *out, int n,
                           int T, qc_capture_fn capture, void *user, bool *stopped) {
    int d = f->cfg.hidden_size, ff = L->out_features[g + 1];
    if (!L->w[g]) {
        QC_ASSERT(f->cfg.act == QC_ACT_RELU);
        linear(f->h1, xn, L->w[g + 1], L->b[g + 1], n, T, ff, d);
        ew_run(&(ew_ctx){.op = EW_RELU, .y = f->h1, .n = n, .dim = ff});
    } else {
        linear(f->h1, xn, L->w[g], L->b[g], n, T, ff, d);
        linear(f->h2, xn, L->w[g + 1], L->b[g + 1], n, T, ff, d);
        ew_run(&(ew_ctx){.op = f->cfg.act == QC_ACT_GELU_TANH ? EW_GELU_TANH_MUL : EW_SILU_MUL, .y = f->h1, .x = f->h2,
                         .n = n, .dim = ff});
    }
    if (capture && !capture(user, down, f->h1, n, ff)) {
        *stopped = true;
        return QC_OK;
    }
    linear(out, f->h1, L->w[g + 2], L->b[g + 2], n, T, d, ff);
    return QC_OK;
}

/* The router: logits [n, E] -> per row the top k experts (descending probability; ties to the lower id,
 * as torch.topk on CPU) and their weights: the softmax (FP32) over all experts, renormalized over the k
 * when the config (or the architecture) says so. */
static void moe_route(qc_fwd *f, const float *logits, int n) {
    const qc_model_config *c = &f->cfg;
    int E = c->n_experts, k = c->n_experts_per_tok;
    bool renorm = c->norm_topk_prob || qc_arch_desc_of(c->arch)->moe->always_renorm;
    for (int r = 0; r < n; r++) {
        const float *lg = logits + (size_t)r * E;
        float mx = lg[0], sum = 0.0f;
        for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
        for (int e = 0; e < E; e++) sum += expf(lg[e] - mx);
        int *top = f->top + (size_t)r * k;
        float *w = f->topw + (size_t)r * k, wsum = 0.0f;
        for (int i = 0; i < k; i++) { /* selection: k is small */
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int j = 0; j < i; j++) taken |= top[j] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            top[i] = best;
            w[i] = expf(lg[best] - mx) / sum;
            wsum += w[i];
        }
        if (renorm)
            for (int i = 0; i < k; i++) w[i] /= wsum;
    }
}

/* Gathers the rows routed to expert e into f->xg (row order), their ids and weights; returns how many. */
static int moe_gather(qc_fwd *f, const float *xn, int n, int e) {
    int k = f->cfg.n_experts_per_tok, d = f->cfg.hidden_size, ne = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < k; i++)
            if (f->top[(size_t)r * k + i] == e) {
                memcpy(f->xg + (size_t)ne * d, xn + (size_t)r * d, sizeof(float) * (size_t)d);
                f->gidx[ne] = r;
                f->gw[ne++] = f->topw[(size_t)r * k + i];
            }
    return ne;
}

/* out += expert e's down projection of act [ne, mff] (the rows moe_gather picked, in its order), each row
 * weighted by its routing weight, into its row. */
static void moe_down_add(qc_fwd *f, const qc_layer *L, int e, const float *act, int ne, float *out) {
    int d = f->cfg.hidden_size, mff = f->cfg.moe_intermediate_size;
    linear(f->yg, act, L->w[QC_LIN_EXPERT(e, 2)], NULL, ne, ne, d, mff);
    for (int i = 0; i < ne; i++) {
        float *o = out + (size_t)f->gidx[i] * d, w = f->gw[i];
        const float *y = f->yg + (size_t)i * d;
        for (int j = 0; j < d; j++) o[j] += w * y[j];
    }
}

/* A mixture-of-experts block without the residual: out = sum over each row's top-k experts of weight *
 * expert(xn) (experts in id order, as transformers adds them), plus sigmoid(shared_gate . xn) *
 * shared_expert(xn) where the layer has one. Captures in qc_arch_caps order. */
static qc_status moe_block(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int n, int T,
                           qc_capture_fn capture, void *user, bool *stopped) {
    const qc_model_config *c = &f->cfg;
    int d = c->hidden_size, E = c->n_experts, mff = c->moe_intermediate_size;
    bool shared = L->w[QC_LIN_GATE] != NULL;
    linear(f->logits, xn, L->router, NULL, n, T, E, d);
    moe_route(f, f->logits, n);
    if (capture) {
        if (!capture(user, QC_LIN_GATE, xn, n, d)) goto stop;
        for (int e = 0; e < E; e++) {
            int ne = moe_gather(f, xn, n, e);
            if (!capture(user, QC_LIN_EXPERT(e, 0), f->xg, ne, d)) goto stop;
        }
    }
    memset(out, 0, sizeof(float) * (size_t)n * d);
    float *sh = NULL;
    if (shared) { /* its output waits in yg's rows until the experts are added (transformers' order) */
        qc_status st = gated_mlp(f, L, QC_LIN_GATE, QC_LIN_DOWN, xn, f->yg, n, T, capture, user, stopped);
        if (st || *stopped) return st;
        sh = f->yg;
        float *keep = qc_aligned_alloc(sizeof(float) * (size_t)n * d);
        if (!keep) return qc_fail(QC_ERR_NOMEM, "forward: out of memory for the shared expert");
        for (int r = 0; r < n; r++) {
            float z = 0.0f;
            for (int i = 0; i < d; i++) z += L->shared_gate[i] * xn[(size_t)r * d + i];
            float g = 1.0f / (1.0f + expf(-z));
            for (int i = 0; i < d; i++) keep[(size_t)r * d + i] = g * sh[(size_t)r * d + i];
        }
        sh = keep;
    }
    for (int e = 0; e < E; e++) {
        int ne = moe_gather(f, xn, n, e);
        qc_linear_id g = QC_LIN_EXPERT(e, 0);
        if (capture && f->moe_all && f->moe_all[e]) { /* its down input over every row, for the capture only */
            linear(f->h1, xn, L->w[g], NULL, n, T, mff, d);
            linear(f->h2, xn, L->w[g + 1], NULL, n, T, mff, d);
            ew_run(&(ew_ctx){.op = EW_SILU_MUL, .y = f->h1, .x = f->h2, .n = n, .dim = mff});
            if (!capture(user, QC_LIN_EXPERT(e, 2), f->h1, n, mff)) goto stop_free;
            if (ne == 0) continue;
            for (int i = 0; i < ne; i++) /* the routed rows' activations, gathered */
                memmove(f->h2 + (size_t)i * mff, f->h1 + (size_t)f->gidx[i] * mff, sizeof(float) * (size_t)mff);
            moe_down_add(f, L, e, f->h2, ne, out);
            continue;
        }
        if (ne == 0) {
            if (capture && !capture(user, QC_LIN_EXPERT(e, 2), f->h1, 0, mff)) goto stop_free;
            continue;
        }
        linear(f->h1, f->xg, L->w[g], NULL, ne, ne, mff, d);
        linear(f->h2, f->xg, L->w[g + 1], NULL, ne, ne, mff, d);
        ew_run(&(ew_ctx){.op = EW_SILU_MUL, .y = f->h1, .x = f->h2, .n = ne, .dim = mff});
        if (capture && !capture(user, QC_LIN_EXPERT(e, 2), f->h1, ne, mff)) goto stop_free;
        moe_down_add(f, L, e, f->h1, ne, out);
    }
    if (sh) {
        ew_run(&(ew_ctx){.op = EW_ADD, .y = out, .x = sh, .n = n, .dim = d});
        qc_aligned_free(sh);
    }
    return QC_OK;
stop_free:
    qc_aligned_free(sh);
stop:
    *stopped = true;
    return QC_OK;
}

/* The MLP half of layer L: its MoE block, or its dense MLP. */
static qc_status mlp_block(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int n, int T,
                           qc_capture_fn capture, void *user, bool *stopped) {
    if (L->router) return moe_block(f, L, xn, out, n, T, capture, user, stopped);
    return gated_mlp(f, L, QC_LIN_GATE, QC_LIN_DOWN, xn, out, n, T, capture, user, stopped);
}

qc_status qc_attn_forward(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int nseq, int T) {
    qc_status st = check_rows(f, nseq, T);
    bool stopped = false;
    return st ? st : attn_block(f, L, xn, out, nseq, T, NULL, NULL, &stopped);
}

qc_status qc_mlp_forward(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int n) {
    if (n < 0 || n > f->max_rows) return qc_fail(QC_ERR_ARG, "forward: %d rows exceed the %d-row buffers", n, f->max_rows);
    bool stopped = false; /* rows in sequences of the qc_fwd's seqlen, as the pipeline passes them */
    return mlp_block(f, L, xn, out, n, f->seqlen, NULL, NULL, &stopped);
}

qc_status qc_layer_forward(qc_fwd *f, const qc_layer *L, float *x, int nseq, int T, qc_capture_fn capture,
                           void *user) {
    const qc_model_config *c = &f->cfg;
    qc_status st = check_rows(f, nseq, T);
    if (st) return st;
    int n = nseq * T, d = c->hidden_size;
    bool stopped = false;

    norm_apply(f->xn, x, L->attn_norm, L->norm_bias[QC_NORM_ATTN], f->layer_norm, f->norm_off, n, d, c->rms_norm_eps);
    if (capture && !capture(user, QC_LIN_Q, f->xn, n, d)) return QC_OK;
    if ((st = attn_block(f, L, f->xn, f->tmp, nseq, T, capture, user, &stopped)) || stopped) return st;
    if (L->attn_post_norm) rmsnorm(f->tmp, f->tmp, L->attn_post_norm, f->norm_off, n, d, c->rms_norm_eps);
    ew_run(&(ew_ctx){.op = EW_ADD, .y = x, .x = f->tmp, .n = n, .dim = d});

    norm_apply(f->xn, x, L->mlp_norm, L->norm_bias[QC_NORM_MLP], f->layer_norm, f->norm_off, n, d, c->rms_norm_eps);
    /* the MLP's input: QC_LIN_GATE, shared by gate and up (OPT, without a gate: QC_LIN_UP) */
    if (capture && !L->router && !capture(user, qc_linear_input(c, QC_LIN_UP), f->xn, n, d)) return QC_OK;
    if ((st = mlp_block(f, L, f->xn, f->tmp, n, T, capture, user, &stopped)) || stopped) return st;
    if (L->mlp_post_norm) rmsnorm(f->tmp, f->tmp, L->mlp_post_norm, f->norm_off, n, d, c->rms_norm_eps);
    ew_run(&(ew_ctx){.op = EW_ADD, .y = x, .x = f->tmp, .n = n, .dim = d});
    return check_finite(x, (size_t)n * d, L->index, "the layer output");
}

/* Gemma's normalizer: hidden_size ** 0.5 rounded to float32 (transformers: torch.tensor(..., dtype)). */
static float embed_scale(const qc_model_config *c) {
    return qc_arch_desc_of(c->arch)->embed_scaled ? (float)sqrt((double)c->hidden_size) : 1.0f;
}

qc_status qc_model_embed(const qc_model *m, const int32_t *ids, int n, int T, float *x) {
    int d = m->cfg.hidden_size;
    float scale = embed_scale(&m->cfg);
    const qc_arch_desc *a = qc_arch_desc_of(m->cfg.arch);
    if (m->pos_embed && (T < 1 || T > m->cfg.max_position_embeddings))
        return qc_fail(QC_ERR_ARG, "%d-token sequences exceed the model's %d learned positions (max_position_embeddings)",
                       T, m->cfg.max_position_embeddings);
    float *pos = NULL;
    if (m->pos_embed && !(pos = malloc(sizeof(float) * (size_t)d))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    for (int t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size) {
            st = qc_fail(QC_ERR_ARG, "token id %d at position %d is outside the vocabulary [0, %d)", ids[t], t,
                         m->cfg.vocab_size);
            break;
        }
        if ((st = qc_tensor_read_f32(m->embed, (int64_t)ids[t] * d, d, x + (size_t)t * d))) break;
        if (m->round_f16)
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] = qc_fp16_to_f32(qc_f32_to_fp16(x[(size_t)t * d + i]));
        if (scale != 1.0f)
            for (int i = 0; i < d; i++) x[(size_t)t * d + i] *= scale;
        if (!pos) continue;
        /* learned positions (OPT): row (t % T) + offset, added in FP32 (F16-rounded as a checkpoint holds them) */
        if ((st = qc_tensor_read_f32(m->pos_embed, ((int64_t)(t % T) + a->pos_offset) * d, d, pos))) break;
        for (int i = 0; i < d; i++)
            x[(size_t)t * d + i] += m->round_f16 ? qc_fp16_to_f32(qc_f32_to_fp16(pos[i])) : pos[i];
    }
    free(pos);
    return st;
}

qc_status qc_model_final_norm(const qc_model *m, float *x, int n) {
    int d = m->cfg.hidden_size;
    float *w = malloc(2 * (size_t)d * sizeof(float)), *b = w ? w + d : NULL;
    if (!w) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_tensor_read_f32(m->final_norm, 0, d, w);
    if (st == QC_OK && m->final_norm_bias) st = qc_tensor_read_f32(m->final_norm_bias, 0, d, b);
    if (m->round_f16)
        for (int i = 0; i < (m->final_norm_bias ? 2 * d : d); i++) w[i] = qc_fp16_to_f32(qc_f32_to_fp16(w[i]));
    if (st == QC_OK)
        norm_apply(x, x, w, m->final_norm_bias ? b : NULL, m->final_norm_bias != NULL, qc_norm_offset(&m->cfg), n, d,
                   m->cfg.rms_norm_eps);
    free(w);
    return st;
}

struct qc_head {
    int vocab, d;
    float softcap; /* > 0: logits <- tanh(logits / softcap) * softcap (final_logit_softcapping) */
    float *w;      /* (rows = vocab, cols = d), row-major */
};

qc_status qc_head_load(const qc_model *m, qc_head **out) {
    *out = NULL;
    qc_head *h = calloc(1, sizeof *h);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory");
    h->vocab = m->cfg.vocab_size;
    h->d = m->cfg.hidden_size;
    h->softcap = m->cfg.final_softcap;
    qc_status st = load_f32(m, m->lm_head->name, &h->w);
    if (st == QC_OK && m->round_f16)
        for (size_t i = 0; i < (size_t)h->vocab * h->d; i++) h->w[i] = qc_fp16_to_f32(qc_f32_to_fp16(h->w[i]));
    if (st != QC_OK) {
        qc_head_free(h);
        return st;
    }
    *out = h;
    return QC_OK;
}

void qc_head_free(qc_head *h) {
    if (!h) return;
    qc_aligned_free(h->w);
    free(h);
}

int qc_head_vocab(const qc_head *h) { return h->vocab; }

void qc_head_logits(const qc_head *h, const float *x, int n, float *logits) {
    linear(logits, x, h->w, NULL, n, n, h->vocab, h->d);
    if (h->softcap > 0.0f) {
        const float cap = h->softcap;
        for (size_t i = 0; i < (size_t)n * h->vocab; i++) logits[i] = tanhf(logits[i] / cap) * cap;
    }
}

qc_status qc_model_run_layers(const qc_model *m, qc_fwd *f, const qc_layer *layers, float *x, int nseq, int T) {
    qc_status st = QC_OK;
    for (int i = 0; st == QC_OK && i < m->cfg.n_layers; i++) {
        if (layers) {
            st = qc_layer_forward(f, &layers[i], x, nseq, T, NULL, NULL);
            continue;
        }
        qc_layer L;
        if ((st = qc_layer_load(m, i, &L))) break;
        st = qc_layer_forward(f, &L, x, nseq, T, NULL, NULL);
        qc_layer_release(&L);
    }
    return st;
}

qc_status qc_model_logits(const qc_model *m, const int32_t *ids, int T, float *logits) {
    const qc_model_config *c = &m->cfg;
    qc_fwd *f = NULL;
    qc_head *h = NULL;
    float *x = qc_aligned_alloc((size_t)T * c->hidden_size * sizeof(float));
    if (!x) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_fwd_create(c, 1, T, &f);
    if (st == QC_OK) st = qc_model_embed(m, ids, T, T, x);
    if (st == QC_OK) st = qc_model_run_layers(m, f, NULL, x, 1, T);
    if (st == QC_OK) st = qc_model_final_norm(m, x, T);
    if (st == QC_OK) st = qc_head_load(m, &h);
    if (st == QC_OK) qc_head_logits(h, x, T, logits);
    qc_head_free(h);
    qc_fwd_free(f);
    qc_aligned_free(x);
    return st;
}
