/* AWQ arithmetic on the GPU (awq_gpu.h) against its CPU twins in awq.c, on fresh random inputs shaped
 * like real ones: activations with a few outlier channels, weights ~N(0, 0.02), stored as fp16.
 *
 * Tolerances (why):
 *   x_mean, w_mean   rel 1e-5: both sum in double, only the order differs; the fp32 results agree
 *                    to an ulp or two.
 *   scaled_qdq       the same fp32 operations in the same order per element: bit-identical fp16
 *                    except where an fp32 op rounds differently (none expected); bound 1e-3.
 *   sqdiff           rel 1e-10: double accumulation in another order.
 *   folding ops      exact (one fp32 op, then round to fp16).
 *   clip             the GPU sums (Qdq(w) - w) . x in fp32 where the CPU subtracts two fp32 sgemm
 *                    outputs (token by token, qc_gpu_awq_clip_tokens; or as d^T Gram d, qc_gpu_awq_clip),
 *                    so a near-tie between shrink candidates can go the other way: at most 1% of the
 *                    (row, group) choices may differ from the CPU's, and between the two GPU forms.
 * Set QCAL_GPU_QUICK=1 (e.g. under compute-sanitizer) to skip the large cases and the timing line. */
#include <stdio.h>
#include <stdlib.h>

#include "awq.h"
#include "awq_gpu.h"
#include "testutil.h"

static qc_gpu *G;
static bool quick;

static uint64_t g_rng = 0xC0FFEE1234567ull;
static double urand(void) { /* (0, 1) */
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }

static float h2f(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}
static uint16_t f2h(float f) { /* round to nearest even */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);
    if (x >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {                      /* below 2^-14: subnormal, v * 2^24 is exact in fp32 */
        float v;
        memcpy(&v, &x, 4);
        return sign | (uint16_t)rintf(v * 16777216.0f);
    }
    uint32_t mant = x & 0x7fffffu, rem = mant & 0x1fffu;
    uint16_t h = (uint16_t)((((x >> 23) - 112) << 10) | (mant >> 13));
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return sign | h;
}

/* X fp16 [T, K]: per-channel scale 0.5..1.5, every 97th channel (from 3) an outlier x25, a shared
 * per-token factor. */
static uint16_t *make_x(int64_t T, int K) {
    uint16_t *X = malloc(sizeof(uint16_t) * (size_t)T * K);
    float *cs = malloc(sizeof(float) * K);
    QC_ASSERT(X && cs);
    for (int k = 0; k < K; k++) cs[k] = (float)(0.5 + urand()) * (k % 97 == 3 ? 25.0f : 1.0f);
    for (int64_t t = 0; t < T; t++) {
        float f = (float)(0.5 + urand());
        for (int k = 0; k < K; k++) X[(size_t)t * K + k] = f2h(gauss() * cs[k] * f);
    }
    free(cs);
    return X;
}
static uint16_t *make_w(int N, int K) {
    uint16_t *W = malloc(sizeof(uint16_t) * (size_t)N * K);
    QC_ASSERT(W);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = f2h(0.02f * gauss());
    return W;
}
static float *to_f32(const uint16_t *h, size_t n) {
    float *f = malloc(sizeof(float) * n);
    QC_ASSERT(f);
    for (size_t i = 0; i < n; i++) f[i] = h2f(h[i]);
    return f;
}
static void *dev_put(const void *host, size_t bytes) {
    void *p;
    QC_CHECK_OK(qc_gpu_alloc(G, &p, bytes, "test buffer"));
    QC_CHECK_OK(qc_gpu_upload(G, p, host, bytes));
    return p;
}
static void *dev_poisoned(size_t bytes) { /* 0xFF: NaN as fp16 and fp32 */
    void *p;
    QC_CHECK_OK(qc_gpu_alloc(G, &p, bytes, "test output"));
    QC_CHECK_OK(qc_gpu_memset(G, p, 0xFF, bytes));
    return p;
}
static void poison_host(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}
/* largest |a - b| / |b| (NaN in a counts as infinite) */
static double max_rel(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) {
        double r = fabs((double)a[i] - b[i]) / (fabs(b[i]) > 1e-30 ? fabs(b[i]) : 1e-30);
        if (!(r <= m)) m = isnan(r) ? INFINITY : r;
    }
    return m;
}
/* Realistic AWQ scales for X and W: qc_awq_scales at r = 0.5, duo, from the CPU means. */
static float *make_scales(const float *Xf, int64_t T, const float *Wf, int N, int K, int gs) {
    float *xm = malloc(sizeof(float) * K), *wm = malloc(sizeof(float) * K), *s = malloc(sizeof(float) * K);
    QC_ASSERT(xm && wm && s);
    qc_awq_x_mean(Xf, T, K, xm);
    const float *ws[1] = {Wf};
    qc_awq_w_mean(ws, &N, 1, K, gs, wm);
    qc_awq_scales(xm, wm, K, 0.5, true, s);
    free(xm);
    free(wm);
    return s;
}

static void test_x_mean(void **state) {
    (void)state;
    const struct { int64_t T; int K; } cases[] = {{2048, 2048}, {3001, 520}, {65, 4096}, {2048, 1000}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t T = cases[c].T;
        int K = cases[c].K;
        uint16_t *X = make_x(T, K);
        float *Xf = to_f32(X, (size_t)T * K), *cpu = malloc(sizeof(float) * K), *gpu = malloc(sizeof(float) * K);
        qc_awq_x_mean(Xf, T, K, cpu);
        poison_host(gpu, K);
        void *dX = dev_put(X, sizeof(uint16_t) * (size_t)T * K);
        QC_CHECK_OK(qc_gpu_awq_x_mean(G, dX, T, K, gpu));
        double r = max_rel(gpu, cpu, K);
        printf("x_mean T %lld K %d: max rel diff %.3e\n", (long long)T, K, r);
        if (!(r <= 1e-5)) fail_msg("x_mean differs by %.3e > 1e-5", r);
        qc_gpu_free(G, dX);
        free(X); free(Xf); free(cpu); free(gpu);
    }
}

static void test_w_mean(void **state) {
    (void)state;
    const struct { int nw, N[3], K, gs; } cases[] = {{3, {256, 512, 384}, 1024, 128}, {1, {1024, 0, 0}, 2048, 64},
                                                     {2, {300, 77, 0}, 512, 32}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int K = cases[c].K, nw = cases[c].nw;
        uint16_t *Wh[3];
        float *Wf[3];
        void *dW[3];
        for (int i = 0; i < nw; i++) {
            Wh[i] = make_w(cases[c].N[i], K);
            Wf[i] = to_f32(Wh[i], (size_t)cases[c].N[i] * K);
            dW[i] = dev_put(Wh[i], sizeof(uint16_t) * (size_t)cases[c].N[i] * K);
        }
        float *cpu = malloc(sizeof(float) * K), *gpu = malloc(sizeof(float) * K);
        qc_awq_w_mean((const float *const *)Wf, cases[c].N, nw, K, cases[c].gs, cpu);
        poison_host(gpu, K);
        QC_CHECK_OK(qc_gpu_awq_w_mean(G, (const uint16_t *const *)dW, cases[c].N, nw, K, cases[c].gs, gpu));
        double r = max_rel(gpu, cpu, K);
        printf("w_mean %d weights K %d g%d: max rel diff %.3e\n", nw, K, cases[c].gs, r);
        if (!(r <= 1e-5)) fail_msg("w_mean differs by %.3e > 1e-5", r);
        for (int i = 0; i < nw; i++) {
            qc_gpu_free(G, dW[i]);
            free(Wh[i]);
            free(Wf[i]);
        }
        free(cpu); free(gpu);
    }
}

static void test_scaled_qdq(void **state) {
    (void)state;
    const struct { int N, K, bits, gs; } cases[] = {{256, 512, 4, 128}, {512, 2048, 3, 128}, {1024, 1024, 4, 64},
                                                    {300, 768, 3, 64},  {1024, 2048, 4, 128}, {64, 480, 4, 96}};
    const int64_t T = 2048;
    size_t tot = 0, tot_diff = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int N = cases[c].N, K = cases[c].K, bits = cases[c].bits, gs = cases[c].gs;
        size_t nk = (size_t)N * K;
        uint16_t *X = make_x(T, K), *W = make_w(N, K), *gpu = malloc(sizeof(uint16_t) * nk);
        float *Xf = to_f32(X, (size_t)T * K), *Wf = to_f32(W, nk);
        float *s = make_scales(Xf, T, Wf, N, K, gs);
        /* CPU: scale, pseudo-quantize, unscale in fp32 (as awq_search), then round to fp16 */
        for (size_t i = 0; i < nk; i++) Wf[i] *= s[i % K];
        qc_awq_pseudo_quant(Wf, N, K, bits, gs);
        for (size_t i = 0; i < nk; i++) Wf[i] /= s[i % K];
        void *dW = dev_put(W, sizeof(uint16_t) * nk), *ds = dev_put(s, sizeof(float) * K), *dout = dev_poisoned(sizeof(uint16_t) * nk);
        QC_CHECK_OK(qc_gpu_awq_scaled_qdq(G, dW, ds, N, K, bits, gs, dout));
        QC_CHECK_OK(qc_gpu_download(G, gpu, dout, sizeof(uint16_t) * nk));
        size_t diff = 0;
        double maxd = 0;
        for (size_t i = 0; i < nk; i++) {
            uint16_t want = f2h(Wf[i]);
            if (gpu[i] != want) {
                diff++;
                double d = fabs((double)h2f(gpu[i]) - h2f(want));
                if (!(d <= maxd)) maxd = isnan(d) ? INFINITY : d;
            }
        }
        printf("scaled_qdq %dx%d w%d g%d: %zu / %zu fp16 values differ (%.2e), max |diff| %.3g\n", N, K, bits, gs, diff,
               nk, (double)diff / nk, maxd);
        if ((double)diff > 1e-3 * nk) fail_msg("scaled_qdq: %zu of %zu differ (> 1e-3)", diff, nk);
        tot += nk;
        tot_diff += diff;
        qc_gpu_free(G, dW); qc_gpu_free(G, ds); qc_gpu_free(G, dout);
        free(X); free(W); free(gpu); free(Xf); free(Wf); free(s);
    }
    printf("scaled_qdq total: %zu / %zu differ (%.2e)\n", tot_diff, tot, (double)tot_diff / tot);
}

static void test_sqdiff(void **state) {
    (void)state;
    const size_t sizes[] = {1, 1000, 3000001};
    for (size_t c = 0; c < 3; c++) {
        size_t n = sizes[c];
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) {
            a[i] = gauss();
            b[i] = a[i] + 0.01f * gauss();
        }
        double cpu = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)a[i] - b[i];
            cpu += d * d;
        }
        void *da = dev_put(a, sizeof(float) * n), *db = dev_put(b, sizeof(float) * n);
        double gpu = NAN;
        QC_CHECK_OK(qc_gpu_sqdiff_sum(G, da, db, n, &gpu));
        printf("sqdiff n %zu: cpu %.12e gpu %.12e\n", n, cpu, gpu);
        QC_CHECK_NEAR(gpu, cpu, 1e-10 * cpu);
        qc_gpu_free(G, da); qc_gpu_free(G, db);
        free(a); free(b);
    }
}

static float *rand_scales(int n) {
    float *s = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) s[i] = (float)exp(1.2 * gauss());
    return s;
}

static void test_folding(void **state) {
    (void)state;
    /* W[:, k] *= s[k] */
    {
        const int N = 384, K = 1024;
        uint16_t *W = make_w(N, K), *got = malloc(sizeof(uint16_t) * N * K);
        float *s = rand_scales(K);
        void *dW = dev_put(W, sizeof(uint16_t) * N * K), *ds = dev_put(s, sizeof(float) * K);
        QC_CHECK_OK(qc_gpu_scale_cols_f16(G, dW, N, K, ds));
        QC_CHECK_OK(qc_gpu_download(G, got, dW, sizeof(uint16_t) * N * K));
        for (int i = 0; i < N * K; i++) {
            uint16_t want = f2h(h2f(W[i]) * s[i % K]);
            if (got[i] != want) fail_msg("scale_cols [%d]: 0x%04x, want 0x%04x", i, got[i], want);
        }
        qc_gpu_free(G, dW); qc_gpu_free(G, ds);
        free(W); free(got); free(s);
    }
    /* W[n, :] /= s[n - row0] for the last 512 rows of a [1536, 512] weight (v_proj -> o_proj) */
    {
        const int N = 1536, K = 512, row0 = 1024, len = 512;
        uint16_t *W = make_w(N, K), *got = malloc(sizeof(uint16_t) * N * K);
        float *s = rand_scales(len);
        void *dW = dev_put(W, sizeof(uint16_t) * N * K), *ds = dev_put(s, sizeof(float) * len);
        QC_CHECK_OK(qc_gpu_div_rows_f16(G, dW, N, K, row0, len, ds));
        QC_CHECK_OK(qc_gpu_download(G, got, dW, sizeof(uint16_t) * N * K));
        for (int i = 0; i < N * K; i++) {
            int n = i / K;
            uint16_t want = n >= row0 && n < row0 + len ? f2h(h2f(W[i]) / s[n - row0]) : W[i];
            if (got[i] != want) fail_msg("div_rows [%d, %d]: 0x%04x, want 0x%04x", n, i % K, got[i], want);
        }
        qc_gpu_free(G, dW); qc_gpu_free(G, ds);
        free(W); free(got); free(s);
    }
    /* v[k] /= s[k] (fp32) */
    {
        const int n = 4099;
        float *v = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n), *s = rand_scales(n);
        for (int i = 0; i < n; i++) v[i] = 1.0f + 0.1f * gauss();
        void *dv = dev_put(v, sizeof(float) * n), *ds = dev_put(s, sizeof(float) * n);
        QC_CHECK_OK(qc_gpu_div_vec_f32(G, dv, n, ds));
        QC_CHECK_OK(qc_gpu_download(G, got, dv, sizeof(float) * n));
        for (int i = 0; i < n; i++) {
            float want = v[i] / s[i];
            if (memcmp(&got[i], &want, 4)) fail_msg("div_vec [%d]: %.9g, want %.9g", i, got[i], want);
        }
        qc_gpu_free(G, dv); qc_gpu_free(G, ds);
        free(v); free(got); free(s);
    }
    /* a (1 + w) norm (Gemma): v[k] = (1 + v[k]) / s[k] - 1, as the CPU fold computes it */
    {
        const int n = 4099;
        float *v = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n), *s = rand_scales(n);
        for (int i = 0; i < n; i++) v[i] = 0.1f * gauss();
        void *dv = dev_put(v, sizeof(float) * n), *ds = dev_put(s, sizeof(float) * n);
        QC_CHECK_OK(qc_gpu_div_vec_offset_f32(G, dv, n, ds, 1.0f));
        QC_CHECK_OK(qc_gpu_download(G, got, dv, sizeof(float) * n));
        for (int i = 0; i < n; i++) {
            float want = (1.0f + v[i]) / s[i] - 1.0f;
            if (memcmp(&got[i], &want, 4)) fail_msg("div_vec_offset [%d]: %.9g, want %.9g", i, got[i], want);
        }
        qc_gpu_free(G, dv); qc_gpu_free(G, ds);
        free(v); free(got); free(s);
    }
    /* X[t, k] /= s[k] (fp16 activations) */
    {
        const int64_t T = 2048;
        const int K = 1024;
        uint16_t *X = make_x(T, K), *got = malloc(sizeof(uint16_t) * T * K);
        float *s = rand_scales(K);
        void *dX = dev_put(X, sizeof(uint16_t) * T * K), *ds = dev_put(s, sizeof(float) * K);
        QC_CHECK_OK(qc_gpu_div_cols_act_f16(G, dX, T, K, ds));
        QC_CHECK_OK(qc_gpu_download(G, got, dX, sizeof(uint16_t) * T * K));
        for (int64_t i = 0; i < T * K; i++) {
            uint16_t want = f2h(h2f(X[i]) / s[i % K]);
            if (got[i] != want) fail_msg("div_cols_act [%lld]: 0x%04x, want 0x%04x", (long long)i, got[i], want);
        }
        qc_gpu_free(G, dX); qc_gpu_free(G, ds);
        free(X); free(got); free(s);
    }
    printf("folding: scale_cols, div_rows, div_vec, div_cols_act bit-exact\n");
}

static void test_clip(void **state) {
    (void)state;
    const struct { int N, K, gs, bits; int64_t T; bool big; } cases[] = {
        {256, 512, 128, 4, 2048, false},  {512, 1024, 64, 3, 2048, false}, {1024, 2048, 128, 3, 2048, true},
        {768, 1536, 64, 4, 2048, true},   {300, 512, 64, 4, 1000, false},  {128, 256, 32, 4, 2048, false},
        {130, 512, 256, 3, 2048, false},  {96, 480, 96, 4, 777, false},    {1024, 2048, 128, 4, 2048, true},
    };
    size_t tot = 0, tot_diff = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (quick && cases[c].big) continue;
        int N = cases[c].N, K = cases[c].K, gs = cases[c].gs, bits = cases[c].bits, G_ = K / gs;
        int64_t T = cases[c].T;
        size_t nk = (size_t)N * K;
        /* the scaled weight and its scaled input, as the pipeline clips them */
        uint16_t *X = make_x(T, K), *Wh = make_w(N, K);
        float *Xf = to_f32(X, (size_t)T * K), *W = to_f32(Wh, nk);
        float *s = make_scales(Xf, T, W, N, K, gs);
        for (size_t i = 0; i < nk; i++) W[i] *= s[i % K];
        for (size_t i = 0; i < (size_t)T * K; i++) {
            X[i] = f2h(Xf[i] / s[i % K]);
            Xf[i] = h2f(X[i]);
        }
        float *cpu = malloc(sizeof(float) * nk), *gpu = malloc(sizeof(float) * nk), *tok = malloc(sizeof(float) * nk);
        memcpy(cpu, W, sizeof(float) * nk);
        double t0 = qc_time_now();
        QC_CHECK_OK(qc_awq_clip(cpu, N, K, Xf, T, bits, gs, 512, 20, 0.5));
        double tc = qc_time_now() - t0;
        void *dW = dev_put(W, sizeof(float) * nk), *dX = dev_put(X, sizeof(uint16_t) * (size_t)T * K);
        /* the plain twin (token by token) first, then the Gram form on a fresh copy */
        QC_CHECK_OK(qc_gpu_awq_clip_tokens(G, dW, N, K, dX, T, bits, gs, 512, 20, 0.5));
        poison_host(tok, nk);
        QC_CHECK_OK(qc_gpu_download(G, tok, dW, sizeof(float) * nk));
        QC_CHECK_OK(qc_gpu_upload(G, dW, W, sizeof(float) * nk));
        t0 = qc_time_now();
        QC_CHECK_OK(qc_gpu_awq_clip(G, dW, N, K, dX, T, bits, gs, 512, 20, 0.5));
        QC_CHECK_OK(qc_gpu_sync(G));
        double tg = qc_time_now() - t0;
        poison_host(gpu, nk);
        QC_CHECK_OK(qc_gpu_download(G, gpu, dW, sizeof(float) * nk));
        size_t twin = 0; /* (row, group) choices where the two GPU forms differ */
        for (size_t o = 0; o < nk; o += gs) twin += memcmp(&gpu[o], &tok[o], sizeof(float) * gs) != 0;
        /* the chosen max of a (row, group) is the clamped group's max |w| */
        size_t diff = 0, clipped = 0, bad_same = 0;
        double num = 0, den = 0;
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G_; g++) {
                float m0 = 0, mc = 0, mg = 0;
                size_t o = (size_t)n * K + (size_t)g * gs;
                for (int k = 0; k < gs; k++) {
                    m0 = fmaxf(m0, fabsf(W[o + k]));
                    mc = fmaxf(mc, fabsf(cpu[o + k]));
                    mg = fabsf(gpu[o + k]) > mg || isnan(gpu[o + k]) ? fabsf(gpu[o + k]) : mg;
                }
                clipped += mc < m0;
                if (mg != mc) diff++;
                else
                    for (int k = 0; k < gs; k++) bad_same += memcmp(&gpu[o + k], &cpu[o + k], 4) != 0;
            }
        for (size_t i = 0; i < nk; i++) {
            double d = (double)gpu[i] - cpu[i];
            num += d * d;
            den += (double)cpu[i] * cpu[i];
        }
        double rel = sqrt(num / den);
        size_t ng = (size_t)N * G_;
        printf("clip %dx%d w%d g%d T %lld: %zu / %zu choices differ (%.2e), %.1f%% of groups clipped, "
               "W rel diff %.2e; Gram vs token sums: %zu differ; cpu %.3f s gpu %.4f s\n", N, K, bits, gs, (long long)T,
               diff, ng, (double)diff / ng, 100.0 * clipped / ng, rel, twin, tc, tg);
        if (bad_same) fail_msg("clip: %zu weights differ in groups with the same choice", bad_same);
        if (clipped == 0) fail_msg("clip: no group was clipped: the case tests nothing");
        if ((double)diff > 0.01 * ng) fail_msg("clip: %zu of %zu choices differ (> 1%%)", diff, ng);
        if ((double)twin > 0.01 * ng) fail_msg("clip: the Gram and token forms differ in %zu of %zu choices (> 1%%)", twin, ng);
        tot += ng;
        tot_diff += diff;
        qc_gpu_free(G, dW); qc_gpu_free(G, dX);
        free(X); free(Wh); free(Xf); free(W); free(s); free(cpu); free(gpu); free(tok);
    }
    printf("clip total: %zu / %zu choices differ (%.2e)\n", tot_diff, tot, (double)tot_diff / tot);
}

static void test_bad_args(void **state) {
    (void)state;
    float out[64];
    void *d;
    QC_CHECK_OK(qc_gpu_alloc(G, &d, 1 << 16, "test"));
    QC_CHECK_FAILS(qc_gpu_awq_clip(G, d, 4, 96, d, 8, 4, 64, 512, 20, 0.5), QC_ERR_ARG, "does not divide");
    QC_CHECK_FAILS(qc_gpu_awq_clip(G, d, 4, 64, d, 8, 4, 64, 0, 20, 0.5), QC_ERR_ARG, "n_tokens");
    QC_CHECK_FAILS(qc_gpu_awq_scaled_qdq(G, d, d, 4, 64, 9, 64, d), QC_ERR_ARG, "bits");
    QC_CHECK_FAILS(qc_gpu_div_rows_f16(G, d, 8, 8, 4, 5, d), QC_ERR_ARG, "outside");
    const uint16_t *ws[1] = {d};
    int n = 2;
    QC_CHECK_FAILS(qc_gpu_awq_w_mean(G, ws, &n, 1, 64, 0, out), QC_ERR_ARG, "does not divide");
    qc_gpu_free(G, d);
}

/* Information only: the clip search on a down_proj-sized weight. Only the sampled rows of X are
 * filled (the search reads nothing else). */
static void test_clip_timing(void **state) {
    (void)state;
    if (quick) {
        printf("clip timing skipped (QCAL_GPU_QUICK)\n");
        return;
    }
    const int N = 4096, K = 14336, n_tokens = 512;
    const int64_t T = 65536, step = T / n_tokens;
    size_t nk = (size_t)N * K;
    float *W = malloc(sizeof(float) * nk);
    uint16_t *Xs = make_x(n_tokens, K);
    for (size_t i = 0; i < nk; i++) W[i] = 0.02f * gauss();
    void *dW = dev_put(W, sizeof(float) * nk), *dX;
    QC_CHECK_OK(qc_gpu_alloc(G, &dX, sizeof(uint16_t) * (size_t)T * K, "X"));
    QC_CHECK_OK(qc_gpu_memset(G, dX, 0, sizeof(uint16_t) * (size_t)T * K));
    for (int t = 0; t < n_tokens; t++)
        QC_CHECK_OK(qc_gpu_upload(G, (uint16_t *)dX + (size_t)(t * step) * K, Xs + (size_t)t * K, sizeof(uint16_t) * K));
    QC_CHECK_OK(qc_gpu_sync(G));
    for (int rep = 0; rep < 4; rep++) { /* token sums, Gram form, token sums, Gram form (the same input each time) */
        QC_CHECK_OK(qc_gpu_upload(G, dW, W, sizeof(float) * nk));
        QC_CHECK_OK(qc_gpu_sync(G));
        double t0 = qc_time_now();
        if (rep % 2) QC_CHECK_OK(qc_gpu_awq_clip(G, dW, N, K, dX, T, 4, 128, n_tokens, 20, 0.5));
        else QC_CHECK_OK(qc_gpu_awq_clip_tokens(G, dW, N, K, dX, T, 4, 128, n_tokens, 20, 0.5));
        QC_CHECK_OK(qc_gpu_sync(G));
        double dt = qc_time_now() - t0;
        double flop = 2.0 * nk * n_tokens * 10;
        printf("timing: qc_gpu_awq_clip%s %dx%d T %lld (512 tokens, 10 candidates, w4 g128): %.1f ms (%.1f TFLOP/s fp32 "
               "of the token form's work)\n", rep % 2 ? "" : "_tokens", N, K, (long long)T, dt * 1e3, flop / dt / 1e12);
    }
    float *xm = malloc(sizeof(float) * K);
    double t0 = qc_time_now();
    QC_CHECK_OK(qc_gpu_awq_x_mean(G, dX, T, K, xm));
    printf("timing: qc_gpu_awq_x_mean [%lld, %d] fp16: %.2f ms\n", (long long)T, K, (qc_time_now() - t0) * 1e3);
    qc_gpu_free(G, dW); qc_gpu_free(G, dX);
    free(W); free(Xs); free(xm);
}

static int setup(void **state) {
    (void)state;
    if (qc_gpu_open(0, &G)) {
        fprintf(stderr, "%s\n", qc_last_error());
        return -1;
    }
    printf("device: %s\n", qc_gpu_describe(G));
    return 0;
}
static int teardown(void **state) {
    (void)state;
    if (G && qc_gpu_bytes_in_use(G) != 0) {
        fprintf(stderr, "leak: %zu device bytes still allocated\n", qc_gpu_bytes_in_use(G));
        qc_gpu_close(G);
        return -1;
    }
    qc_gpu_close(G);
    return 0;
}

int main(void) {
    if (qc_gpu_count() == 0) {
        fprintf(stderr, "\n*** SKIPPED test_gpu_awq: no CUDA device (or no CUDA backend in this build) ***\n\n");
        return 77;
    }
    const char *q = getenv("QCAL_GPU_QUICK");
    quick = q && *q && strcmp(q, "0") != 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_x_mean),     cmocka_unit_test(test_w_mean),  cmocka_unit_test(test_scaled_qdq),
        cmocka_unit_test(test_sqdiff),     cmocka_unit_test(test_folding), cmocka_unit_test(test_clip),
        cmocka_unit_test(test_bad_args),   cmocka_unit_test(test_clip_timing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
