/* The thread pool and the bit-for-bit promises built on it: every task runs once whatever the thread
 * count; OpenBLAS called from several pool threads gives the bits it gives serially; the Hessian does
 * not depend on how samples are batched; qc_linear_apply's rows do not depend on how whole blocks are
 * batched; GPTQ and the AWQ clipping search give the same bits with 1, 2 or 3 threads. */
#include <cblas.h>
#include <lapacke.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "awq.h"
#include "hessian.h"
#include "model.h"
#include "qc_par.h"
#include "quant.h"
#include "testutil.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform [-1, 1) */
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *rand_array(size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = scale * frand();
    return p;
}

static const int k_threads[] = {1, 2, 3, 8};
#define N_THREADS (int)(sizeof k_threads / sizeof k_threads[0])

/* Index of the first differing float, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return (long)i;
    return -1;
}
#define CHECK_SAME_BITS(a, b, n, what) do { \
        long d__ = first_diff((a), (b), (n)); \
        if (d__ >= 0) fail_msg("%s: element %ld differs: %.9g vs %.9g", (what), d__, (double)(a)[d__], \
                               (double)(b)[d__]); \
    } while (0)

/* ---- the pool ---- */
typedef struct {
    atomic_int count[1000];
    atomic_int nested;
} count_ctx;

static void nested_task(void *user, int t) {
    count_ctx *c = user;
    atomic_fetch_add(&c->nested, t + 1);
}
static void count_task(void *user, int t) {
    count_ctx *c = user;
    atomic_fetch_add(&c->count[t], 1);
    assert_true(qc_par_worker() >= 0 && qc_par_worker() < qc_par_threads());
    if (t % 100 == 0) qc_par_for(4, nested_task, c); /* runs inline */
}

static void test_every_task_once(void **state) {
    (void)state;
    for (int ti = 0; ti < N_THREADS; ti++) {
        qc_par_set_threads(k_threads[ti]);
        assert_int_equal(qc_par_threads(), k_threads[ti]);
        for (int n = 0; n <= 1000; n += 333) {
            for (int rep = 0; rep < 20; rep++) {
                count_ctx *c = calloc(1, sizeof *c);
                qc_par_for(n, count_task, c);
                for (int t = 0; t < n; t++)
                    if (atomic_load(&c->count[t]) != 1)
                        fail_msg("threads %d, %d tasks: task %d ran %d times", k_threads[ti], n, t,
                                 atomic_load(&c->count[t]));
                int want_nested = 10 * ((n + 99) / 100);
                assert_int_equal(atomic_load(&c->nested), want_nested);
                free(c);
            }
        }
    }
    qc_par_set_threads(0);
    assert_true(qc_par_threads() >= 1);
    char desc[512];
    qc_par_describe(desc, sizeof desc);
    printf("%s\n", desc);
    assert_non_null(strstr(desc, "OpenBLAS"));
    assert_non_null(strstr(desc, "thread"));
}

/* ---- OpenBLAS from several threads at once ---- */
#define BLAS_JOBS 24
#define BLAS_REPS 4
#define BLAS_K 96
typedef struct {
    float *in[BLAS_JOBS], *out[BLAS_JOBS * BLAS_REPS]; /* task t: job t % BLAS_JOBS, into out[t] */
    int    info[BLAS_JOBS * BLAS_REPS];
} blas_ctx;

static size_t blas_out_size(int j) { return (size_t)(40 + 5 * j) * (60 + 3 * j) + BLAS_K * BLAS_K; }

static void blas_job(void *user, int task) {
    blas_ctx *c = user;
    int j = task % BLAS_JOBS, M = 40 + 5 * j, N = 60 + 3 * j;
    const float *A = c->in[j];
    float *C = c->out[task], *S = C + (size_t)M * N;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, BLAS_K, 1.0f, A, BLAS_K, A + (size_t)M * BLAS_K, BLAS_K,
                0.0f, C, N);
    memset(S, 0, sizeof(float) * BLAS_K * BLAS_K);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, BLAS_K, M, 1.0f, A, BLAS_K, 0.0f, S, BLAS_K);
    for (int i = 0; i < BLAS_K; i++) S[(size_t)i * BLAS_K + i] += 1.0f;
    int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', BLAS_K, S, BLAS_K);
    if (info == 0) info = LAPACKE_spotri(LAPACK_COL_MAJOR, 'U', BLAS_K, S, BLAS_K);
    c->info[task] = info;
}

static void test_blas_concurrent(void **state) {
    (void)state;
    blas_ctx ser, par;
    for (int j = 0; j < BLAS_JOBS; j++) {
        size_t n_in = (size_t)(40 + 5 * j + 60 + 3 * j) * BLAS_K;
        ser.in[j] = par.in[j] = rand_array(n_in, 1.0f);
        ser.out[j] = calloc(blas_out_size(j), sizeof(float));
        for (int r = 0; r < BLAS_REPS; r++) par.out[r * BLAS_JOBS + j] = calloc(blas_out_size(j), sizeof(float));
    }
    qc_par_set_threads(1);
    qc_par_for(BLAS_JOBS, blas_job, &ser);
    qc_par_set_threads(4);
    for (int rep = 0; rep < 5; rep++) {
        qc_par_for(BLAS_JOBS * BLAS_REPS, blas_job, &par); /* each job several times, on whichever thread */
        for (int t = 0; t < BLAS_JOBS * BLAS_REPS; t++) {
            int j = t % BLAS_JOBS;
            assert_int_equal(ser.info[j], 0);
            assert_int_equal(par.info[t], 0);
            CHECK_SAME_BITS(ser.out[j], par.out[t], blas_out_size(j), "concurrent sgemm/ssyrk/spotrf/spotri");
        }
    }
    for (int j = 0; j < BLAS_JOBS; j++) {
        free(ser.in[j]);
        free(ser.out[j]);
    }
    for (int t = 0; t < BLAS_JOBS * BLAS_REPS; t++) free(par.out[t]);
}

/* ---- the Hessian: same bits for any batching of whole samples and any thread count ---- */
static void test_hessian_batching(void **state) {
    (void)state;
    const int K = 300, T = 37, S = 7; /* K: two full tiles and a tail; T: not a multiple of anything */
    float *X = rand_array((size_t)S * T * K, 2.0f);
    float *H0 = calloc((size_t)K * K, sizeof(float)), *H = calloc((size_t)K * K, sizeof(float));
    qc_par_set_threads(1);
    qc_hessian_accumulate(H0, K, X, (int64_t)S * T, T);
    /* against a double-precision sum */
    for (int i = 0; i < K; i += 7)
        for (int j = i; j < K; j += 5) {
            double s = 0;
            for (int r = 0; r < S * T; r++) s += (double)X[(size_t)r * K + i] * X[(size_t)r * K + j];
            QC_CHECK_NEAR(H0[(size_t)i * K + j], s, 1e-4 * (fabs(s) + 10.0));
        }
    const int batches[] = {1, 2, 3, 7};
    for (int ti = 0; ti < N_THREADS; ti++) {
        qc_par_set_threads(k_threads[ti]);
        for (int bi = 0; bi < 4; bi++) {
            memset(H, 0, sizeof(float) * K * K);
            for (int s0 = 0; s0 < S; s0 += batches[bi]) {
                int nb = S - s0 < batches[bi] ? S - s0 : batches[bi];
                qc_hessian_accumulate(H, K, X + (size_t)s0 * T * K, (int64_t)nb * T, T);
            }
            for (int i = 0; i < K; i++) /* the upper triangle; the lower one is the caller's */
                for (int j = i; j < K; j++)
                    if (memcmp(&H[(size_t)i * K + j], &H0[(size_t)i * K + j], sizeof(float)) != 0)
                        fail_msg("threads %d, batches of %d samples: H[%d][%d] = %.9g, unbatched %.9g", k_threads[ti],
                                 batches[bi], i, j, (double)H[(size_t)i * K + j], (double)H0[(size_t)i * K + j]);
        }
    }
    free(X); free(H0); free(H);
}

/* ---- qc_linear_apply: the bits of a row do not depend on how 64-row blocks are batched ---- */
static void test_linear_apply_batching(void **state) {
    (void)state;
    const int rows = 64 * 9, out = 300, in = 200;
    float *x = rand_array((size_t)rows * in, 1.0f), *w = rand_array((size_t)out * in, 0.1f);
    float *b = rand_array((size_t)out, 0.1f);
    float *y0 = malloc(sizeof(float) * rows * out), *y = malloc(sizeof(float) * rows * out);
    qc_par_set_threads(1);
    qc_linear_apply(y0, x, w, b, rows, out, in);
    for (int ti = 0; ti < N_THREADS; ti++) {
        qc_par_set_threads(k_threads[ti]);
        for (int blk = 1; blk <= 4; blk++) { /* calls of blk * 64 rows */
            for (int r0 = 0; r0 < rows; r0 += blk * 64) {
                int n = rows - r0 < blk * 64 ? rows - r0 : blk * 64;
                qc_linear_apply(y + (size_t)r0 * out, x + (size_t)r0 * in, w, b, n, out, in);
            }
            CHECK_SAME_BITS(y0, y, (size_t)rows * out, "qc_linear_apply batched");
        }
    }
    free(x); free(w); free(b); free(y0); free(y);
}

/* ---- the solvers: same bits with any thread count ---- */
static void test_gptq_threads(void **state) {
    (void)state;
    const int N = 300, K = 256, n = 512; /* N: two full row blocks and a tail */
    float *X = rand_array((size_t)n * K, 1.0f), *W0 = rand_array((size_t)N * K, 0.05f);
    float *H0 = calloc((size_t)K * K, sizeof(float));
    for (int r = 0; r < n; r++) /* correlate the columns a little */
        for (int k = 1; k < K; k++) X[(size_t)r * K + k] += 0.5f * X[(size_t)r * K + k - 1];
    qc_hessian_accumulate(H0, K, X, n, 64);
    for (int i = 0; i < K; i++)
        for (int j = i; j < K; j++) H0[(size_t)j * K + i] = H0[(size_t)i * K + j] *= 2.0f / n;
    float *W = malloc(sizeof(float) * N * K), *H = malloc(sizeof(float) * K * K), *Wref = malloc(sizeof(float) * N * K);
    qc_gptq_opts o = qc_gptq_default_opts();
    o.act_order = true;
    qc_qlinear qref;
    double loss_ref = 0;
    for (int ti = 0; ti < N_THREADS; ti++) {
        qc_par_set_threads(k_threads[ti]);
        memcpy(W, W0, sizeof(float) * N * K);
        memcpy(H, H0, sizeof(float) * K * K);
        qc_qlinear q;
        qc_gptq_stats st;
        QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, o.bits, o.group_size, o.sym, false));
        QC_CHECK_OK(qc_gptq_quantize(W, H, N, K, &o, &q, &st));
        if (ti == 0) {
            memcpy(Wref, W, sizeof(float) * N * K);
            qref = q;
            loss_ref = st.loss;
            continue;
        }
        CHECK_SAME_BITS(Wref, W, (size_t)N * K, "gptq W_hat");
        CHECK_SAME_BITS(qref.scales, q.scales, (size_t)q.n_groups * N, "gptq scales");
        assert_memory_equal(qref.codes, q.codes, (size_t)N * K);
        assert_true(st.loss == loss_ref);
        qc_qlinear_free(&q);
    }
    qc_qlinear_free(&qref);
    free(X); free(W0); free(H0); free(W); free(H); free(Wref);
}

static void test_gptq_non_finite(void **state) {
    (void)state;
    const int N = 8, K = 32;
    float *W = rand_array((size_t)N * K, 0.1f), *H = calloc((size_t)K * K, sizeof(float));
    for (int k = 0; k < K; k++) H[(size_t)k * K + k] = 1.0f;
    H[3 * K + 5] = NAN;
    qc_gptq_opts o = qc_gptq_default_opts();
    o.group_size = 16;
    qc_qlinear q;
    qc_gptq_stats st;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, o.bits, o.group_size, o.sym, false));
    QC_CHECK_FAILS(qc_gptq_quantize(W, H, N, K, &o, &q, &st), QC_ERR_NUMERIC, "non-finite Hessian");
    H[3 * K + 5] = 0.0f;
    W[7] = INFINITY;
    QC_CHECK_FAILS(qc_gptq_quantize(W, H, N, K, &o, &q, &st), QC_ERR_NUMERIC, "non-finite weight");
    qc_qlinear_free(&q);
    free(W); free(H);
}

static void test_awq_clip_threads(void **state) {
    (void)state;
    const int N = 96, K = 256, T = 1000;
    float *X = rand_array((size_t)T * K, 1.0f), *W0 = rand_array((size_t)N * K, 0.1f);
    float *W = malloc(sizeof(float) * N * K), *Wref = malloc(sizeof(float) * N * K);
    for (int ti = 0; ti < N_THREADS; ti++) {
        qc_par_set_threads(k_threads[ti]);
        memcpy(W, W0, sizeof(float) * N * K);
        QC_CHECK_OK(qc_awq_clip(W, N, K, X, T, 4, 64, 128, 20, 0.5));
        if (ti == 0) memcpy(Wref, W, sizeof(float) * N * K);
        else CHECK_SAME_BITS(Wref, W, (size_t)N * K, "awq clip");
    }
    assert_true(first_diff(W0, Wref, (size_t)N * K) >= 0); /* it clipped something */
    free(X); free(W0); free(W); free(Wref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_once),
        cmocka_unit_test(test_blas_concurrent),
        cmocka_unit_test(test_hessian_batching),
        cmocka_unit_test(test_linear_apply_batching),
        cmocka_unit_test(test_gptq_threads),
        cmocka_unit_test(test_gptq_non_finite),
        cmocka_unit_test(test_awq_clip_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
