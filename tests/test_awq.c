/* AWQ arithmetic (spec B.3, E.3-E.5): quantizer, pseudo-quantization vs codes, scale formula, clipping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "awq.h"
#include "testutil.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void test_quantizer(void **state) {
    (void)state;
    float s, z;
    const float a[4] = {-0.5f, 0.25f, 1.0f, 0.1f}; /* range [-0.5, 1]: s = 0.1, z = 5 */
    qc_awq_quant_params(a, 4, 4, &s, &z);
    QC_CHECK_NEAR(s, 0.1, 1e-7);
    QC_CHECK_NEAR(z, 5, 0);
    const float pos[2] = {0.2f, 0.6f}; /* not forced through 0: s = 0.4/15, z = clamp(-round(7.5)) = 0 */
    qc_awq_quant_params(pos, 2, 4, &s, &z);
    QC_CHECK_NEAR(s, 0.4 / 15.0, 1e-7);
    QC_CHECK_NEAR(z, 0, 0);
    const float flat[3] = {0.3f, 0.3f, 0.3f}; /* range clamped to 1e-5 */
    qc_awq_quant_params(flat, 3, 4, &s, &z);
    QC_CHECK_NEAR(s, 1e-5 / 15.0, 1e-12);
    QC_CHECK_NEAR(z, 0, 0);
}

/* qc_awq_quantize's codes dequantize to exactly what the pseudo-quantizer produces. */
static void test_codes_match_pseudo(void **state) {
    (void)state;
    const int N = 16, K = 256, gs = 64;
    float *W = malloc(sizeof(float) * N * K), *P = malloc(sizeof(float) * N * K), *D = malloc(sizeof(float) * N * K);
    for (int i = 0; i < N * K; i++) W[i] = frand() * (i % 17 == 0 ? 4.0f : 1.0f);
    memcpy(P, W, sizeof(float) * N * K);
    qc_awq_pseudo_quant(P, N, K, 4, gs);
    qc_qlinear q;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, gs, false, false));
    QC_CHECK_OK(qc_awq_quantize(W, N, K, 4, gs, &q));
    qc_qlinear_dequant(&q, D);
    for (int i = 0; i < N * K; i++) {
        QC_CHECK_NEAR(W[i], P[i], 0);
        QC_CHECK_NEAR(D[i], P[i], 1e-6);
        assert_true(q.codes[i] <= 15);
    }
    for (int k = 0; k < K; k++) assert_int_equal(q.g_idx[k], k / gs);
    qc_qlinear_free(&q);
    free(W); free(P); free(D);
}

static void test_scales(void **state) {
    (void)state;
    const int K = 8;
    float xm[8] = {1, 2, 4, 8, 0.5f, 0.25f, 3, 1}, wm[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, s[8];
    qc_awq_scales(xm, wm, K, 0.0, false, s); /* llm-awq at r = 0: all ones */
    for (int c = 0; c < K; c++) QC_CHECK_NEAR(s[c], 1.0, 1e-6);
    qc_awq_scales(xm, wm, K, 0.5, false, s); /* sqrt(x), normalised so max * min = 1 */
    float mx = 0, mn = 1e9f;
    for (int c = 0; c < K; c++) {
        mx = s[c] > mx ? s[c] : mx;
        mn = s[c] < mn ? s[c] : mn;
    }
    QC_CHECK_NEAR(mx * mn, 1.0, 1e-5);
    QC_CHECK_NEAR(s[3] / s[0], sqrt(8.0), 1e-5);
    qc_awq_scales(xm, wm, K, 0.5, true, s); /* duo: x^r / (w^(1-r) + 1e-4): w constant, same ratios */
    QC_CHECK_NEAR(s[3] / s[0], sqrt(8.0), 1e-4);
    /* x_mean and w_mean */
    const float X[6] = {1, -2, -3, 4, 5, -6}; /* T = 3, K = 2 */
    float xmean[2];
    qc_awq_x_mean(X, 3, 2, xmean);
    QC_CHECK_NEAR(xmean[0], 3.0, 1e-6);
    QC_CHECK_NEAR(xmean[1], 4.0, 1e-6);
    const float W1[4] = {1, -2, 4, 4}; /* N = 2, K = 2, gs = 2: |w| / (max + 1e-6) */
    const float *ws[1] = {W1};
    int ns[1] = {2};
    float wmean[2];
    qc_awq_w_mean(ws, ns, 1, 2, 2, wmean);
    QC_CHECK_NEAR(wmean[0], (0.5 + 1.0) / 2, 1e-5);
    QC_CHECK_NEAR(wmean[1], (1.0 + 1.0) / 2, 1e-5);
}

/* An outlier weight on an input channel that is almost never active: clipping it lowers the output
 * error of the group, and the search never makes it worse than no clipping. */
static void test_clip(void **state) {
    (void)state;
    const int N = 8, K = 128, gs = 128, T = 1024;
    float *W = malloc(sizeof(float) * N * K), *W0 = malloc(sizeof(float) * N * K), *X = malloc(sizeof(float) * T * K);
    for (int i = 0; i < N * K; i++) W[i] = 0.1f * frand();
    for (int n = 0; n < N; n++) W[n * K + 5] = 3.0f; /* outlier weight */
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) X[t * K + k] = k == 5 ? 0.001f * frand() : frand();
    memcpy(W0, W, sizeof(float) * N * K);
    QC_CHECK_OK(qc_awq_clip(W, N, K, X, T, 4, gs, 512, 20, 0.5));
    /* error of quantizing the clipped vs the original weights */
    float *Q0 = malloc(sizeof(float) * N * K), *Q1 = malloc(sizeof(float) * N * K);
    memcpy(Q0, W0, sizeof(float) * N * K);
    memcpy(Q1, W, sizeof(float) * N * K);
    qc_awq_pseudo_quant(Q0, N, K, 4, gs);
    qc_awq_pseudo_quant(Q1, N, K, 4, gs);
    double e0 = 0, e1 = 0;
    for (int t = 0; t < T; t += 2)
        for (int n = 0; n < N; n++) {
            double r = 0, a = 0, b = 0;
            for (int k = 0; k < K; k++) {
                r += (double)X[t * K + k] * W0[n * K + k];
                a += (double)X[t * K + k] * Q0[n * K + k];
                b += (double)X[t * K + k] * Q1[n * K + k];
            }
            e0 += (a - r) * (a - r);
            e1 += (b - r) * (b - r);
        }
    float mx = 0;
    for (int n = 0; n < N; n++) mx = W[n * K + 5] > mx ? W[n * K + 5] : mx;
    printf("clip: outlier 3.0 -> %.3f, output error %.4g -> %.4g\n", mx, e0, e1);
    assert_true(mx < 3.0f && mx >= 1.5f); /* shrunk, at most by half */
    assert_true(e1 < 0.5 * e0);
    free(W); free(W0); free(X); free(Q0); free(Q1);
}

/* The candidates' order: AutoAWQ's 20 ratios, then (best) llm-awq's. */
static void test_candidates(void **state) {
    (void)state;
    assert_int_equal(qc_awq_n_candidates(QC_AWQ_SCALE_AUTOAWQ, 20), 20);
    assert_int_equal(qc_awq_n_candidates(QC_AWQ_SCALE_LLM_AWQ, 20), 20);
    assert_int_equal(qc_awq_n_candidates(QC_AWQ_SCALE_BEST, 20), 40);
    qc_awq_formula f;
    double r;
    qc_awq_candidate(QC_AWQ_SCALE_BEST, 20, 0, &f, &r);
    assert_int_equal(f, QC_AWQ_F_DUO);
    QC_CHECK_NEAR(r, 0.0, 0);
    qc_awq_candidate(QC_AWQ_SCALE_BEST, 20, 19, &f, &r);
    assert_int_equal(f, QC_AWQ_F_DUO);
    QC_CHECK_NEAR(r, 0.95, 1e-15);
    qc_awq_candidate(QC_AWQ_SCALE_BEST, 20, 27, &f, &r);
    assert_int_equal(f, QC_AWQ_F_X);
    QC_CHECK_NEAR(r, 0.35, 1e-15);
    qc_awq_candidate(QC_AWQ_SCALE_LLM_AWQ, 20, 3, &f, &r);
    assert_int_equal(f, QC_AWQ_F_X);
    qc_awq_candidate(QC_AWQ_SCALE_AUTOAWQ, 20, 3, &f, &r);
    assert_int_equal(f, QC_AWQ_F_DUO);
    assert_string_equal(qc_awq_formula_name(QC_AWQ_F_DUO), "duo");
    assert_string_equal(qc_awq_formula_name(QC_AWQ_F_X), "x");
    assert_string_equal(qc_awq_formula_name(QC_AWQ_F_NONE), "none");
}

/* The Gram-matrix loss (qc_awq_quad_loss) against its plain twin, the forward: for every candidate of
 * a realistic search (outlier channels, both formulas) the losses agree to QUAD_REL and the same
 * candidate wins. */
#define QUAD_REL 1e-5
static void test_quad_loss(void **state) {
    (void)state;
    const int N = 72, K = 256, T = 640, gs = 64;
    float *W = malloc(sizeof(float) * N * K), *X = malloc(sizeof(float) * T * K), *G = calloc((size_t)K * K, sizeof(float));
    float *Wq = malloc(sizeof(float) * N * K), *D = malloc(sizeof(float) * N * K), *tmp = malloc(sizeof(float) * N * K);
    float xm[256], wm[256], s[256];
    for (int i = 0; i < N * K; i++) W[i] = 0.05f * frand() * (i % 29 == 0 ? 6.0f : 1.0f);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) X[t * K + k] = frand() * (k % 37 == 0 ? 20.0f : 1.0f) + (k % 5 == 0 ? 0.5f : 0.0f);
    for (int t = 0; t < T; t++) /* G = X^T X, full */
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) G[i * K + j] += X[t * K + i] * X[t * K + j];
    qc_awq_x_mean(X, T, K, xm);
    const float *ws[1] = {W};
    int ns[1] = {N};
    qc_awq_w_mean(ws, ns, 1, K, gs, wm);
    double best_q = INFINITY, best_f = INFINITY, worst_rel = 0;
    int arg_q = -1, arg_f = -1;
    for (int j = 0; j < qc_awq_n_candidates(QC_AWQ_SCALE_BEST, 20); j++) {
        qc_awq_formula f;
        double r;
        qc_awq_candidate(QC_AWQ_SCALE_BEST, 20, j, &f, &r);
        qc_awq_scales(xm, wm, K, r, f == QC_AWQ_F_DUO, s);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) Wq[n * K + k] = W[n * K + k] * s[k];
        qc_awq_pseudo_quant(Wq, N, K, 4, gs);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) Wq[n * K + k] /= s[k];
        for (int i = 0; i < N * K; i++) D[i] = W[i] - Wq[i];
        double lq = qc_awq_quad_loss(D, G, N, K, tmp) / ((double)T * N);
        double lf = 0; /* the forward: mean over tokens and outputs of (W x - W_hat x)^2 */
        for (int t = 0; t < T; t++)
            for (int n = 0; n < N; n++) {
                float a = 0, b = 0;
                for (int k = 0; k < K; k++) {
                    a += W[n * K + k] * X[t * K + k];
                    b += Wq[n * K + k] * X[t * K + k];
                }
                lf += ((double)a - b) * ((double)a - b);
            }
        lf /= (double)T * N;
        double rel = fabs(lq - lf) / lf;
        worst_rel = rel > worst_rel ? rel : worst_rel;
        if (lq < best_q) best_q = lq, arg_q = j;
        if (lf < best_f) best_f = lf, arg_f = j;
    }
    printf("quad loss vs forward: worst relative difference %.2e over 40 candidates; winner %d vs %d\n", worst_rel,
           arg_q, arg_f);
    assert_true(worst_rel < QUAD_REL);
    assert_int_equal(arg_q, arg_f);
    free(W); free(X); free(G); free(Wq); free(D); free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantizer),
        cmocka_unit_test(test_codes_match_pseudo),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_candidates),
        cmocka_unit_test(test_quad_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
