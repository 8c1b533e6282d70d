#include "awq.h"

#include "qc_par.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void qc_awq_quant_params(const float *x, int n, int bits, float *scale, float *zero) {
    int maxq = (1 << bits) - 1;
    float mx = x[0], mn = x[0];
    for (int i = 1; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
        mn = x[i] < mn ? x[i] : mn;
    }
    float range = mx - mn;
    float s = (range > 1e-5f ? range : 1e-5f) / (float)maxq;
    float z = -rintf(mn / s);
    *scale = s;
    *zero = z < 0.0f ? 0.0f : z > (float)maxq ? (float)maxq : z;
}

static inline int awq_code(float w, float s, float z, int maxq) {
    float q = rintf(w / s) + z;
    return q < 0.0f ? 0 : q > (float)maxq ? maxq : (int)q;
}

/* Rows per task of the row-wise quantizers (each row's bits are its own). */
#define QUANT_ROWS 32

typedef struct {
    float      *W;
    qc_qlinear *q;   /* NULL: pseudo-quantize only */
    int         N, K, bits, gs;
} quant_ctx;

static void quant_task(void *user, int task) {
    const quant_ctx *c = user;
    int maxq = (1 << c->bits) - 1, K = c->K, gs = c->gs, N = c->N;
    int n1 = N - task * QUANT_ROWS < QUANT_ROWS ? N : (task + 1) * QUANT_ROWS;
    for (int n = task * QUANT_ROWS; n < n1; n++)
        for (int g = 0; g < K / gs; g++) {
            float *w = c->W + (size_t)n * K + (size_t)g * gs, s, z;
            qc_awq_quant_params(w, gs, c->bits, &s, &z);
            if (!c->q) {
                for (int k = 0; k < gs; k++) w[k] = ((float)awq_code(w[k], s, z, maxq) - z) * s;
                continue;
            }
            c->q->scales[(size_t)g * N + n] = s;
            c->q->zeros[(size_t)g * N + n] = (int32_t)z;
            for (int k = 0; k < gs; k++) {
                int code = awq_code(w[k], s, z, maxq);
                c->q->codes[(size_t)n * K + (size_t)g * gs + k] = (uint8_t)code;
                w[k] = ((float)code - z) * s;
            }
        }
}

static void quant_rows(quant_ctx *c) {
    qc_par_for_work((c->N + QUANT_ROWS - 1) / QUANT_ROWS, quant_task, c, 8.0 * c->N * (double)c->K);
}

void qc_awq_pseudo_quant(float *W, int N, int K, int bits, int gs) {
    quant_rows(&(quant_ctx){.W = W, .N = N, .K = K, .bits = bits, .gs = gs});
}

qc_status qc_awq_quantize(float *W, int N, int K, int bits, int gs, qc_qlinear *q) {
    if (gs <= 0 || K % gs != 0) return qc_fail(QC_ERR_ARG, "awq: group size %d does not divide %d", gs, K);
    if (q->N != N || q->K != K || q->bits != bits || q->n_groups != K / gs || q->sym)
        return qc_fail(QC_ERR_ARG, "awq: output layer does not match %dx%d w%d g%d asym", N, K, bits, gs);
    quant_rows(&(quant_ctx){.W = W, .q = q, .N = N, .K = K, .bits = bits, .gs = gs});
    for (int k = 0; k < K; k++) q->g_idx[k] = k / gs;
    return QC_OK;
}

void qc_awq_x_mean(const float *X, int64_t T, int K, float *x_mean) {
    double *acc = calloc((size_t)K, sizeof(double));
    QC_ASSERT(acc);
    for (int64_t t = 0; t < T; t++) {
        const float *x = X + (size_t)t * K;
        for (int c = 0; c < K; c++) acc[c] += fabsf(x[c]);
    }
    for (int c = 0; c < K; c++) x_mean[c] = (float)(acc[c] / (double)T);
    free(acc);
}

void qc_awq_w_mean(const float *const *W, const int *N, int nw, int K, int gs, float *w_mean) {
    double *acc = calloc((size_t)K, sizeof(double));
    QC_ASSERT(acc);
    long rows = 0;
    for (int i = 0; i < nw; i++) {
        for (int n = 0; n < N[i]; n++) {
            const float *w = W[i] + (size_t)n * K;
            for (int g = 0; g < K / gs; g++) {
                float mx = 0.0f;
                for (int k = 0; k < gs; k++) mx = fabsf(w[g * gs + k]) > mx ? fabsf(w[g * gs + k]) : mx;
                float inv = 1.0f / (mx + 1e-6f);
                for (int k = 0; k < gs; k++) acc[g * gs + k] += fabsf(w[g * gs + k]) * inv;
            }
        }
        rows += N[i];
    }
    for (int c = 0; c < K; c++) w_mean[c] = (float)(acc[c] / (double)rows);
    free(acc);
}

void qc_awq_scales(const float *x_mean, const float *w_mean, int K, double r, bool duo, float *s) {
    float mx = 0.0f, mn = INFINITY;
    for (int c = 0; c < K; c++) {
        float v = powf(x_mean[c], (float)r);
        if (duo) v = v / (powf(w_mean[c], (float)(1.0 - r)) + 1e-4f);
        v = v < 1e-4f ? 1e-4f : v;
        s[c] = v;
        mx = v > mx ? v : mx;
        mn = v < mn ? v : mn;
    }
    float norm = sqrtf(mx * mn);
    for (int c = 0; c < K; c++) {
        s[c] /= norm;
        if (!isfinite(s[c])) s[c] = 1.0f;
    }
}

const char *qc_awq_formula_name(qc_awq_formula f) {
    return f == QC_AWQ_F_DUO ? "duo" : f == QC_AWQ_F_X ? "x" : "none";
}

int qc_awq_n_candidates(qc_awq_scale_mode mode, int n_grid) { return mode == QC_AWQ_SCALE_BEST ? 2 * n_grid : n_grid; }

void qc_awq_candidate(qc_awq_scale_mode mode, int n_grid, int i, qc_awq_formula *f, double *r) {
    QC_ASSERT(n_grid > 0 && i >= 0 && i < qc_awq_n_candidates(mode, n_grid));
    *f = mode == QC_AWQ_SCALE_LLM_AWQ || (mode == QC_AWQ_SCALE_BEST && i >= n_grid) ? QC_AWQ_F_X : QC_AWQ_F_DUO;
    *r = (double)(i % n_grid) / n_grid;
}

bool qc_awq_candidate_scales(qc_awq_scale_mode mode, int n_grid, int i, const float *x_mean, const float *w_mean,
                             int K, qc_awq_formula *f, double *r, float *s, float *tmp) {
    qc_awq_candidate(mode, n_grid, i, f, r);
    qc_awq_scales(x_mean, w_mean, K, *r, *f == QC_AWQ_F_DUO, s);
    if (mode != QC_AWQ_SCALE_BEST || *f != QC_AWQ_F_X) return true;
    qc_awq_scales(x_mean, w_mean, K, *r, true, tmp); /* the same scales as duo's at this r: its loss, no win */
    return memcmp(s, tmp, sizeof(float) * (size_t)K) != 0;
}

/* Rows of D per task of the quadratic form (a shape: it fixes the bits). */
#define QUAD_ROWS 32

typedef struct {
    const float *D, *G;
    float       *tmp;
    double      *row;  /* [N] */
    int          N, K;
} quad_ctx;

static void quad_task(void *user, int task) {
    const quad_ctx *c = user;
    int n0 = task * QUAD_ROWS, nr = c->N - n0 < QUAD_ROWS ? c->N - n0 : QUAD_ROWS, K = c->K;
    float *t = c->tmp + (size_t)n0 * K;
    const float *d = c->D + (size_t)n0 * K;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, K, K, 1.0f, d, K, c->G, K, 0.0f, t, K);
    for (int n = 0; n < nr; n++) {
        double s = 0.0;
        for (int k = 0; k < K; k++) s += (double)t[(size_t)n * K + k] * d[(size_t)n * K + k];
        c->row[n0 + n] = s;
    }
}

double qc_awq_quad_loss(const float *D, const float *G, int N, int K, float *tmp) {
    double *row = malloc(sizeof(double) * (size_t)(N > 0 ? N : 1));
    QC_ASSERT(row);
    quad_ctx c = {.D = D, .G = G, .tmp = tmp, .row = row, .N = N, .K = K};
    qc_par_for_work((N + QUAD_ROWS - 1) / QUAD_ROWS, quad_task, &c, 2.0 * N * (double)K * K);
    double s = 0.0;
    for (int n = 0; n < N; n++) s += row[n];
    free(row);
    return s;
}

/* One task per group of gs input columns: the search only reads and clamps that group's columns of W,
 * with its own scratch and sgemm shapes set by (Ts, N, gs), so the bits do not depend on the thread
 * count. */
typedef struct {
    float       *W;
    const float *X;
    int          N, K, bits, gs, Ts, n_grid, steps;
    int64_t      step;
    int         *failed;  /* [K / gs]: scratch allocation failed */
} clip_ctx;

static void clip_task(void *user, int g) {
    const clip_ctx *c = user;
    int N = c->N, K = c->K, gs = c->gs, Ts = c->Ts;
    float *Xg = malloc(sizeof(float) * (size_t)Ts * gs);
    float *ref = malloc(sizeof(float) * (size_t)Ts * N), *out = malloc(sizeof(float) * (size_t)Ts * N);
    float *Wg = malloc(sizeof(float) * (size_t)N * gs), *Qg = malloc(sizeof(float) * (size_t)N * gs);
    float *best = malloc(sizeof(float) * (size_t)N), *m0 = malloc(sizeof(float) * (size_t)N);
    double *best_err = malloc(sizeof(double) * (size_t)N), *err = malloc(sizeof(double) * (size_t)N);
    if (!Xg || !ref || !out || !Wg || !Qg || !best || !m0 || !best_err || !err) {
        c->failed[g] = 1;
        goto out;
    }
    if (N < 1 || Ts < 1) goto out;
    for (int t = 0; t < Ts; t++)
        memcpy(Xg + (size_t)t * gs, c->X + (size_t)(t * c->step) * K + (size_t)g * gs, sizeof(float) * gs);
    for (int n = 0; n < N; n++) {
        memcpy(Wg + (size_t)n * gs, c->W + (size_t)n * K + (size_t)g * gs, sizeof(float) * gs);
        float mx = 0.0f;
        for (int k = 0; k < gs; k++) mx = fabsf(Wg[(size_t)n * gs + k]) > mx ? fabsf(Wg[(size_t)n * gs + k]) : mx;
        m0[n] = mx;
        best[n] = mx;
        best_err[n] = 1e9;
    }
    /* ref[t][n] = sum_k x[t][k] w[n][k] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ts, N, gs, 1.0f, Xg, gs, Wg, gs, 0.0f, ref, N);
    for (int i = 0; i < c->steps; i++) {
        for (int n = 0; n < N; n++) {
            float m = m0[n] * (1.0f - (float)i / (float)c->n_grid);
            float *q = Qg + (size_t)n * gs;
            const float *w = Wg + (size_t)n * gs;
            for (int k = 0; k < gs; k++) q[k] = w[k] < -m ? -m : w[k] > m ? m : w[k];
        }
        qc_awq_pseudo_quant(Qg, N, gs, c->bits, gs);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ts, N, gs, 1.0f, Xg, gs, Qg, gs, 0.0f, out, N);
        /* per row n, the squared errors summed over t in order (row-wise pass: out is [Ts, N]) */
        for (int n = 0; n < N; n++) err[n] = 0.0;
        for (int t = 0; t < Ts; t++) {
            const float *o = out + (size_t)t * N, *r = ref + (size_t)t * N;
            for (int n = 0; n < N; n++) {
                double d = (double)o[n] - r[n];
                err[n] += d * d;
            }
        }
        for (int n = 0; n < N; n++) {
            double e = err[n] / Ts;
            if (e < best_err[n]) {
                best_err[n] = e;
                best[n] = m0[n] * (1.0f - (float)i / (float)c->n_grid);
            }
        }
    }
    for (int n = 0; n < N; n++) {
        float *w = c->W + (size_t)n * K + (size_t)g * gs, m = best[n];
        for (int k = 0; k < gs; k++) w[k] = w[k] < -m ? -m : w[k] > m ? m : w[k];
    }
out:
    free(Xg); free(ref); free(out); free(Wg); free(Qg); free(best); free(m0); free(best_err); free(err);
}

qc_status qc_awq_clip(float *W, int N, int K, const float *X, int64_t T, int bits, int gs, int n_tokens, int n_grid,
                      double max_shrink) {
    if (gs <= 0 || K % gs != 0) return qc_fail(QC_ERR_ARG, "awq clip: group size %d does not divide %d", gs, K);
    int64_t step = T / n_tokens > 1 ? T / n_tokens : 1;
    int G = K / gs;
    int *failed = calloc((size_t)G, sizeof(int));
    if (!failed) return qc_fail(QC_ERR_NOMEM, "awq clip: out of memory");
    clip_ctx c = {.W = W, .X = X, .N = N, .K = K, .bits = bits, .gs = gs, .Ts = (int)((T + step - 1) / step),
                  .n_grid = n_grid, .steps = (int)(max_shrink * n_grid), .step = step, .failed = failed};
    qc_par_for_work(G, clip_task, &c, 2.0 * c.steps * c.Ts * (double)N * K);
    int bad = 0;
    for (int g = 0; g < G; g++) bad |= failed[g];
    free(failed);
    if (bad) return qc_fail(QC_ERR_NOMEM, "awq clip: out of memory for a %dx%d search over %d tokens", N, gs, c.Ts);
    return QC_OK;
}
