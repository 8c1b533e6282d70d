/* Forward pass against the reference outputs in ../shared/data:
 *  - stories260K F32 logits of a 16-token input (numpy fp64 reference): max |diff| <= 1e-4
 *  - greedy 200-token continuation of BOS == llama2.c's golden output, from F32 and F16 weights
 *  - qcal-llama-25m logits (transformers, fp16 weights upcast to F32) and next-token NLLs
 *  - running sequences as a batch == running them one by one */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "testutil.h"

#define LOGIT_TOL 1e-4   /* the bound for stories260K F32 */
#define LOGIT_TOL_25M 1e-4 /* transformers on CUDA (TF32 off) vs our CPU sgemm; seen: 1e-5 */

static cJSON *load_json(const char *path) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!j) fail_msg("%s: invalid JSON", path);
    return j;
}

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n));
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return ids;
}

static void test_stories_logits(void **state) {
    (void)state;
    char *dir = qc_test_require("stories260K");
    cJSON *ref = load_json(qc_test_data("stories260K/reference_logits.json"));
    int T;
    int32_t *ids = json_ids(cJSON_GetObjectItem(ref, "input_ids"), &T);
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    QC_CHECK_OK(qc_model_logits(m, ids, T, logits));
    const cJSON *rows = cJSON_GetObjectItem(ref, "logits");
    assert_int_equal(cJSON_GetArraySize(rows), T);
    double maxd = 0.0;
    int at_t = 0, at_v = 0;
    for (int t = 0; t < T; t++) {
        const cJSON *row = cJSON_GetArrayItem(rows, t);
        assert_int_equal(cJSON_GetArraySize(row), V);
        for (int v = 0; v < V; v++) {
            double d = fabs(cJSON_GetArrayItem(row, v)->valuedouble - logits[(size_t)t * V + v]);
            if (d > maxd) { maxd = d; at_t = t; at_v = v; }
        }
    }
    printf("stories260K F32 logits: max |diff| = %.3g at [%d][%d] (tolerance %.0e)\n", maxd, at_t, at_v, LOGIT_TOL);
    if (maxd > LOGIT_TOL) fail_msg("max |diff| %.3g > %.0e", maxd, LOGIT_TOL);
    free(logits);
    free(ids);
    qc_model_free(m);
    cJSON_Delete(ref);
    free(dir);
}

/* Greedy decoding with full recomputation (no KV cache): the plain twin of any faster decoder. */
static void greedy(const char *dir, const int32_t *golden, int n_golden) {
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    int V = m->cfg.vocab_size;
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)n_golden);
    float *logits = malloc(sizeof(float) * (size_t)n_golden * V);
    seq[0] = golden[0];
    for (int t = 1; t < n_golden; t++) {
        QC_CHECK_OK(qc_model_logits(m, seq, t, logits));
        const float *l = logits + (size_t)(t - 1) * V;
        int am = 0;
        for (int v = 1; v < V; v++)
            if (l[v] > l[am]) am = v;
        seq[t] = am;
        if (seq[t] != golden[t]) fail_msg("%s: greedy token %d is %d, golden %d", dir, t, seq[t], golden[t]);
    }
    printf("%s: %d greedy tokens match the golden output\n", dir, n_golden - 1);
    free(seq);
    free(logits);
    qc_model_free(m);
}

static void test_stories_greedy(void **state) {
    (void)state;
    char *f16 = qc_test_require("stories260K-fp16"); /* first: a skip must not leave f32 allocated */
    char *f32 = qc_test_require("stories260K");
    cJSON *g = load_json(qc_test_data("stories260K/golden_greedy_200.json"));
    int n;
    int32_t *golden = json_ids(cJSON_GetObjectItem(g, "greedy_ids_bos_plus_200"), &n);
    assert_int_equal(n, 201);
    greedy(f32, golden, n);
    greedy(f16, golden, n);
    free(f32);
    free(f16);
    free(golden);
    cJSON_Delete(g);
}

static void test_llama25m_logits(void **state) {
    (void)state;
    char *dir = qc_test_require("qcal-llama-25m");
    cJSON *ref = load_json(qc_test_data("qcal-llama-25m/reference_logits.json"));
    int T;
    int32_t *ids = json_ids(cJSON_GetObjectItem(ref, "input_ids"), &T);
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    QC_CHECK_OK(qc_model_logits(m, ids, T, logits));
    const cJSON *rows = cJSON_GetObjectItem(ref, "logits_fp32_first8x16");
    double maxd = 0.0;
    for (int t = 0; t < cJSON_GetArraySize(rows); t++) {
        const cJSON *row = cJSON_GetArrayItem(rows, t);
        for (int v = 0; v < cJSON_GetArraySize(row); v++)
            maxd = fmax(maxd, fabs(cJSON_GetArrayItem(row, v)->valuedouble - logits[(size_t)t * V + v]));
    }
    const cJSON *am = cJSON_GetObjectItem(ref, "argmax_fp32"), *nll = cJSON_GetObjectItem(ref, "nll_next_fp32");
    double maxn = 0.0;
    for (int t = 0; t < T; t++) {
        const float *l = logits + (size_t)t * V;
        int a = 0;
        double mx = l[0], s = 0.0;
        for (int v = 1; v < V; v++)
            if (l[v] > l[a]) a = v;
        mx = l[a];
        for (int v = 0; v < V; v++) s += exp(l[v] - mx);
        assert_int_equal(a, (int)cJSON_GetArrayItem(am, t)->valuedouble);
        if (t + 1 < T) {
            double n_ = log(s) + mx - l[ids[t + 1]];
            maxn = fmax(maxn, fabs(n_ - cJSON_GetArrayItem(nll, t)->valuedouble));
        }
    }
    printf("qcal-llama-25m: logits max |diff| %.3g, next-token NLL max |diff| %.3g (tolerance %.0e)\n", maxd, maxn,
           LOGIT_TOL_25M);
    if (maxd > LOGIT_TOL_25M || maxn > LOGIT_TOL_25M) fail_msg("difference above tolerance");
    free(logits);
    free(ids);
    qc_model_free(m);
    cJSON_Delete(ref);
    free(dir);
}

/* Small random-weight models of each supported variant (tests/data/arch, made by
 * scripts/make_arch_fixtures.py with transformers' eager attention in F32). */
#define ARCH_TOL 1e-4
static void test_arch_fixtures(void **state) {
    (void)state;
    static const char *const names[] = {"llama-bias-untied", "llama3-rope", "llama-linear-rope",
                                        "mistral-swa", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "mixtral",
                                        "qwen2-moe", "qwen3-moe", "opt"};
    const char *src = getenv("QCAL_SRC");
    if (!src) fail_msg("QCAL_SRC is not set (run through ctest)");
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char dir[1024], path[1100];
        snprintf(dir, sizeof dir, "%s/tests/data/arch/%s", src, names[k]);
        snprintf(path, sizeof path, "%s/reference_logits.json", dir);
        cJSON *ref = load_json(path);
        int T;
        int32_t *ids = json_ids(cJSON_GetObjectItem(ref, "input_ids"), &T);
        qc_model *m;
        QC_CHECK_OK(qc_model_open(dir, &m));
        int V = m->cfg.vocab_size;
        float *logits = malloc(sizeof(float) * (size_t)T * V);
        QC_CHECK_OK(qc_model_logits(m, ids, T, logits));
        const cJSON *rows = cJSON_GetObjectItem(ref, "logits");
        double maxd = 0.0, maxabs = 0.0;
        for (int t = 0; t < T; t++)
            for (int v = 0; v < V; v++) {
                double r = cJSON_GetArrayItem(cJSON_GetArrayItem(rows, t), v)->valuedouble;
                maxd = fmax(maxd, fabs(r - logits[(size_t)t * V + v]));
                maxabs = fmax(maxabs, fabs(r));
            }
        printf("%-18s %-18s logits max |diff| %.3g (max |logit| %.3g, tolerance %.0e)\n", names[k], m->cfg.arch_name,
               maxd, maxabs, ARCH_TOL);
        if (maxd > ARCH_TOL) fail_msg("%s: max |diff| %.3g > %.0e", names[k], maxd, ARCH_TOL);
        free(logits);
        free(ids);
        qc_model_free(m);
        cJSON_Delete(ref);
    }
}

/* Layers on a batch of 3 sequences == each sequence alone (attention must not cross sequences). */
static void test_batch_equals_single(void **state) {
    (void)state;
    char *dir = qc_test_require("stories260K");
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    const int S = 3, T = 37, d = m->cfg.hidden_size;
    int32_t ids[3 * 37];
    for (int i = 0; i < S * T; i++) ids[i] = (int32_t)((i * 7919 + 13) % m->cfg.vocab_size);
    float *xb = malloc(sizeof(float) * (size_t)S * T * d), *xs = malloc(sizeof(float) * (size_t)T * d);
    qc_fwd *fb, *fs;
    QC_CHECK_OK(qc_fwd_create(&m->cfg, S, T, &fb));
    QC_CHECK_OK(qc_fwd_create(&m->cfg, 1, T, &fs));
    QC_CHECK_OK(qc_model_embed(m, ids, S * T, T, xb));
    for (int i = 0; i < m->cfg.n_layers; i++) {
        qc_layer L;
        QC_CHECK_OK(qc_layer_load(m, i, &L));
        QC_CHECK_OK(qc_layer_forward(fb, &L, xb, S, T, NULL, NULL));
        qc_layer_release(&L);
    }
    for (int s = 0; s < S; s++) {
        QC_CHECK_OK(qc_model_embed(m, ids + s * T, T, T, xs));
        for (int i = 0; i < m->cfg.n_layers; i++) {
            qc_layer L;
            QC_CHECK_OK(qc_layer_load(m, i, &L));
            QC_CHECK_OK(qc_layer_forward(fs, &L, xs, 1, T, NULL, NULL));
            qc_layer_release(&L);
        }
        for (int k = 0; k < T * d; k++) QC_CHECK_NEAR(xb[(size_t)s * T * d + k], xs[k], 1e-4);
    }
    qc_fwd_free(fb);
    qc_fwd_free(fs);
    free(xb);
    free(xs);
    qc_model_free(m);
    free(dir);
}

/* The vectorizable exp of the softmax against libm over [-87, 0]. */
static void test_exp(void **state) {
    (void)state;
    double worst = 0.0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f * (float)i / 2000000.0f;
        double want = exp((double)x), got = qc_exp_nonpos(x);
        double rel = fabs(got - want) / want;
        if (rel > worst) worst = rel;
    }
    printf("exp_nonpos: worst relative error %.2e over [-87, 0]\n", worst);
    if (worst > 3e-7) fail_msg("relative error %.3g > 3e-7 (about 2 ulp)", worst);
    QC_CHECK_NEAR(qc_exp_nonpos(0.0f), 1.0, 0);
    QC_CHECK_NEAR(qc_exp_nonpos(-1000.0f), 0.0, 1e-37);
}

/* Bad ids and a model with a missing tensor fail with statuses, not crashes. */
static void test_errors(void **state) {
    (void)state;
    char *dir = qc_test_require("stories260K");
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    float x[64 * 2];
    int32_t bad[2] = {1, 512};
    QC_CHECK_FAILS(qc_model_embed(m, bad, 2, 2, x), QC_ERR_ARG, "outside the vocabulary");
    qc_model_free(m);
    QC_CHECK_FAILS(qc_model_open("/nonexistent-qcal-model", &m), QC_ERR_IO, "nonexistent-qcal-model");
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_logits),
        cmocka_unit_test(test_stories_greedy),
        cmocka_unit_test(test_arch_fixtures),
        cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_llama25m_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
