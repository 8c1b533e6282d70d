#include "awq.h"

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

void qc_awq_pseudo_quant(float *W, int N, int K, int bits, int gs) {
    int maxq = (1 << bits) - 1;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < K / gs; g++) {
            float *w = W + (size_t)n * K + (size_t)g * gs, s, z;
            qc_awq_quant_params(w, gs, bits, &s, &z);
            for (int k = 0; k < gs; k++) w[k] = ((float)awq_code(w[k], s, z, maxq) - z) * s;
        }
}

qc_status qc_awq_quantize(float *W, int N, int K, int bits, int gs, qc_qlinear *q) {
    if (gs <= 0 || K % gs != 0) return qc_fail(QC_ERR_ARG, "awq: group size %d does not divide %d", gs, K);
    if (q->N != N || q->K != K || q->bits != bits || q->n_groups != K / gs || q->sym)
        return qc_fail(QC_ERR_ARG, "awq: output layer does not match %dx%d w%d g%d asym", N, K, bits, gs);
    int maxq = (1 << bits) - 1;
    for (int n = 0; n < N; n++)
        for (int g = 0; g < K / gs; g++) {
            float *w = W + (size_t)n * K + (size_t)g * gs, s, z;
            qc_awq_quant_params(w, gs, bits, &s, &z);
            q->scales[(size_t)g * N + n] = s;
            q->zeros[(size_t)g * N + n] = (int32_t)z;
            for (int k = 0; k < gs; k++) {
                int c = awq_code(w[k], s, z, maxq);
                q->codes[(size_t)n * K + (size_t)g * gs + k] = (uint8_t)c;
                w[k] = ((float)c - z) * s;
            }
        }
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

qc_status qc_awq_clip(float *W, int N, int K, const float *X, int64_t T, int bits, int gs, int n_tokens, int n_grid,
                      double max_shrink) {
    if (gs <= 0 || K % gs != 0) return qc_fail(QC_ERR_ARG, "awq clip: group size %d does not divide %d", gs, K);
    int64_t step = T / n_tokens > 1 ? T / n_tokens : 1;
    int Ts = (int)((T + step - 1) / step);
    int steps = (int)(max_shrink * n_grid);
    float *Xg = malloc(sizeof(float) * (size_t)Ts * gs);
    float *ref = malloc(sizeof(float) * (size_t)Ts * N), *out = malloc(sizeof(float) * (size_t)Ts * N);
    float *Wg = malloc(sizeof(float) * (size_t)N * gs), *Qg = malloc(sizeof(float) * (size_t)N * gs);
    float *best = malloc(sizeof(float) * (size_t)N), *m0 = malloc(sizeof(float) * (size_t)N);
    double *best_err = malloc(sizeof(double) * (size_t)N);
    if (!Xg || !ref || !out || !Wg || !Qg || !best || !m0 || !best_err) {
        free(Xg); free(ref); free(out); free(Wg); free(Qg); free(best); free(m0); free(best_err);
        return qc_fail(QC_ERR_NOMEM, "awq clip: out of memory");
    }
    for (int g = 0; g < K / gs; g++) {
        for (int t = 0; t < Ts; t++) memcpy(Xg + (size_t)t * gs, X + (size_t)(t * step) * K + (size_t)g * gs, sizeof(float) * gs);
        for (int n = 0; n < N; n++) {
            memcpy(Wg + (size_t)n * gs, W + (size_t)n * K + (size_t)g * gs, sizeof(float) * gs);
            float mx = 0.0f;
            for (int k = 0; k < gs; k++) mx = fabsf(Wg[(size_t)n * gs + k]) > mx ? fabsf(Wg[(size_t)n * gs + k]) : mx;
            m0[n] = mx;
            best[n] = mx;
            best_err[n] = 1e9;
        }
        /* ref[t][n] = sum_k x[t][k] w[n][k] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ts, N, gs, 1.0f, Xg, gs, Wg, gs, 0.0f, ref, N);
        for (int i = 0; i < steps; i++) {
            for (int n = 0; n < N; n++) {
                float m = m0[n] * (1.0f - (float)i / (float)n_grid);
                float *q = Qg + (size_t)n * gs;
                const float *w = Wg + (size_t)n * gs;
                for (int k = 0; k < gs; k++) q[k] = w[k] < -m ? -m : w[k] > m ? m : w[k];
            }
            qc_awq_pseudo_quant(Qg, N, gs, bits, gs);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ts, N, gs, 1.0f, Xg, gs, Qg, gs, 0.0f, out, N);
            for (int n = 0; n < N; n++) {
                double e = 0.0;
                for (int t = 0; t < Ts; t++) {
                    double d = (double)out[(size_t)t * N + n] - ref[(size_t)t * N + n];
                    e += d * d;
                }
                e /= Ts;
                if (e < best_err[n]) {
                    best_err[n] = e;
                    best[n] = m0[n] * (1.0f - (float)i / (float)n_grid);
                }
            }
        }
        for (int n = 0; n < N; n++) {
            float *w = W + (size_t)n * K + (size_t)g * gs, m = best[n];
            for (int k = 0; k < gs; k++) w[k] = w[k] < -m ? -m : w[k] > m ? m : w[k];
        }
    }
    free(Xg); free(ref); free(out); free(Wg); free(Qg); free(best); free(m0); free(best_err);
    return QC_OK;
}
