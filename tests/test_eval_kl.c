/* qcal eval --base: KL(base || model) and top-1 agreement against a direct computation.
 *
 * stories260K (the copy in examples/ when the reference data is absent) is quantized (RTN w4 g32, gptq_v2,
 * calibrated on tiny-calib.utf8) with the qcal binary; then `qcal eval --model Q --base FP --json` on
 * tiny-eval.utf8 is compared with figures computed here from scratch: full-sequence logits of every window
 * from qc_model_logits for both models, log-softmax in double, KL and argmax per predicted position (rows
 * 0..seqlen-2 of each window, the positions whose NLL enters the perplexity). Also: qc_eval_compare gives
 * the CLI's bits, its model and base figures are qc_eval_perplexity's bits, a model against itself gives
 * KL 0 and agreement 1 exactly, and different vocabularies are refused. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval.h"
#include "tokenizer.h"
#include "testutil.h"

#define KL_RTOL  1e-6   /* the bound: CLI vs direct (the head runs in 64-row chunks there, whole
                           windows here, so logits may differ in the last bits) */
#define PPL_RTOL 1e-6   /* qcal sums the softmax's exps in float lanes, here in double */
#define JSON_RTOL 3e-16 /* cJSON prints 15 digits when they read back within DBL_EPSILON, else 17 */
#define SEQLEN   256
#define WINDOWS  6

static const char *g_bin;
static char *g_fp, *g_calib, *g_text, g_q[512];

static int setup(void **state) {
    (void)state;
    g_fp = qc_test_require_all("stories260K");
    g_calib = qc_test_require_all("text/tiny-calib.utf8");
    g_text = qc_test_require_all("text/tiny-eval.utf8");
    g_bin = getenv("QCAL_BIN");
    if (!g_bin || !*g_bin) {
        fprintf(stderr, "SKIP: QCAL_BIN (the qcal binary) not set\n");
        exit(77);
    }
    snprintf(g_q, sizeof g_q, "%s/q", qc_test_tmpdir());
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "'%s' quantize --model '%s' --method rtn --bits 4 --group-size 32 --format gptq_v2 --calib '%s' "
             "--nsamples 16 --seqlen 128 --out '%s' --quiet >/dev/null 2>&1", g_bin, g_fp, g_calib, g_q);
    if (system(cmd) != 0) {
        fprintf(stderr, "quantize failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(g_fp);
    free(g_calib);
    free(g_text);
    return 0;
}

/* Runs `qcal eval ...` and returns its stdout (caller frees); *rc gets the exit status. */
static char *run_eval(const char *args, int *rc) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' eval %s --quiet 2>/dev/null", g_bin, args);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen %s", cmd);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t k;
    while ((k = fread(out + n, 1, cap - 1 - n, p)) > 0) n += k;
    out[n] = 0;
    int st = pclose(p);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* The last line of s and the line before it (the JSON object with --json). */
static void last_lines(char *s, char **json, char **last) {
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n') s[--n] = 0;
    char *nl = strrchr(s, '\n');
    if (!nl) fail_msg("expected two lines at least: '%s'", s);
    *last = nl + 1;
    *nl = 0;
    char *prev = strrchr(s, '\n');
    *json = prev ? prev + 1 : s;
}

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("JSON lacks the number '%s'", key);
    return v->valuedouble;
}

static void check_rel(const char *what, double got, double want, double rtol) {
    double d = fabs(got - want), scale = fabs(want) > 1e-300 ? fabs(want) : 1.0;
    printf("  %-30s %.12g vs %.12g  rel diff %.2e\n", what, got, want, d / scale);
    if (!(d <= rtol * scale)) fail_msg("%s: %.12g vs %.12g, rel diff %.3g > %.0e", what, got, want, d / scale, rtol);
}

static int32_t *encode(const char *model_dir, size_t *n) {
    qc_tokenizer *tok;
    char *text;
    size_t len;
    int32_t *ids;
    QC_CHECK_OK(qc_tokenizer_load(model_dir, &tok));
    QC_CHECK_OK(qc_read_file(g_text, 0, &text, &len));
    QC_CHECK_OK(qc_tokenizer_encode(tok, text, len, true, &ids, n));
    free(text);
    qc_tokenizer_free(tok);
    return ids;
}

/* log-softmax of one row in double */
static void log_softmax(const float *l, int V, double *out) {
    double mx = l[0];
    for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)l[v] - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++) out[v] = (double)l[v] - lse;
}

static int argmax(const float *l, int V) {
    int a = 0;
    for (int v = 1; v < V; v++)
        if (l[v] > l[a]) a = v;
    return a;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_kl_direct(void **state) {
    (void)state;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --base '%s' --text '%s' --seqlen %d --max-windows %d --json", g_q, g_fp,
             g_text, SEQLEN, WINDOWS);
    int rc;
    char *out = run_eval(args, &rc);
    assert_int_equal(rc, 0);
    char *jline, *last;
    last_lines(out, &jline, &last);
    cJSON *j = cJSON_Parse(jline);
    if (!j) fail_msg("not JSON: '%s'", jline);
    assert_non_null(strstr(out, "kl-divergence: "));
    assert_non_null(strstr(out, "top1-agreement: "));
    assert_true(strstr(out, "kl-divergence: ") < strstr(out, "top1-agreement: "));

    /* direct */
    qc_model *q, *fp;
    QC_CHECK_OK(qc_model_open(g_q, &q));
    QC_CHECK_OK(qc_model_open(g_fp, &fp));
    size_t n_ids;
    int32_t *ids = encode(g_fp, &n_ids);
    assert_true(n_ids >= (size_t)SEQLEN * WINDOWS);
    int V = fp->cfg.vocab_size, T = SEQLEN, npos = WINDOWS * (T - 1);
    float *lq = malloc(sizeof(float) * (size_t)T * V), *lb = malloc(sizeof(float) * (size_t)T * V);
    double *pq = malloc(sizeof(double) * V), *pb = malloc(sizeof(double) * V), *kl = malloc(sizeof(double) * npos);
    double kl_sum = 0.0, win_nll_q = 0.0, win_nll_b = 0.0;
    int agree = 0;
    for (int w = 0; w < WINDOWS; w++) {
        const int32_t *win = ids + (size_t)w * T;
        QC_CHECK_OK(qc_model_logits(q, win, T, lq));
        QC_CHECK_OK(qc_model_logits(fp, win, T, lb));
        double nq = 0.0, nb = 0.0;
        for (int t = 0; t < T - 1; t++) {
            const float *rq = lq + (size_t)t * V, *rb = lb + (size_t)t * V;
            log_softmax(rq, V, pq);
            log_softmax(rb, V, pb);
            double k = 0.0;
            for (int v = 0; v < V; v++) k += exp(pb[v]) * (pb[v] - pq[v]);
            kl[w * (T - 1) + t] = k;
            kl_sum += k;
            agree += argmax(rq, V) == argmax(rb, V);
            nq -= pq[win[t + 1]];
            nb -= pb[win[t + 1]];
        }
        win_nll_q += nq / (T - 1);
        win_nll_b += nb / (T - 1);
    }
    qsort(kl, npos, sizeof(double), cmp_double);
    printf("stories260K RTN w4 g32 vs F32, %d windows x %d on tiny-eval.utf8:\n", WINDOWS, T);
    assert_int_equal((int)jnum(j, "predicted"), npos);
    check_rel("CLI vs direct: kl_divergence", jnum(j, "kl_divergence"), kl_sum / npos, KL_RTOL);
    check_rel("CLI vs direct: kl_max", jnum(j, "kl_max"), kl[npos - 1], KL_RTOL);
    check_rel("CLI vs direct: kl_p99", jnum(j, "kl_p99"), kl[(npos * 99 + 99) / 100 - 1], KL_RTOL);
    /* one near-tie may flip with the last bits of a logit */
    check_rel("CLI vs direct: top1_agreement", jnum(j, "top1_agreement"), (double)agree / npos, 1.0 / agree);
    check_rel("CLI vs direct: ppl", jnum(j, "ppl"), exp(win_nll_q / WINDOWS), PPL_RTOL);
    check_rel("CLI vs direct: base_ppl", jnum(j, "base_ppl"), exp(win_nll_b / WINDOWS), PPL_RTOL);
    assert_true(jnum(j, "kl_divergence") > 1e-4); /* a real quantization, not a no-op */

    /* the API gives the CLI's figures (to the JSON's last digit); its figures of each model are
     * qc_eval_perplexity's bits */
    qc_eval_opts o = {.seqlen = T, .max_windows = WINDOWS};
    qc_eval_cmp_result c;
    qc_eval_result rq, rb;
    QC_CHECK_OK(qc_eval_compare(q, fp, ids, n_ids, &o, &c));
    QC_CHECK_OK(qc_eval_perplexity(q, ids, n_ids, &o, &rq));
    QC_CHECK_OK(qc_eval_perplexity(fp, ids, n_ids, &o, &rb));
    check_rel("API vs CLI: kl", c.kl, jnum(j, "kl_divergence"), JSON_RTOL);
    check_rel("API vs CLI: kl_max", c.kl_max, jnum(j, "kl_max"), JSON_RTOL);
    check_rel("API vs CLI: kl_p99", c.kl_p99, jnum(j, "kl_p99"), JSON_RTOL);
    check_rel("API vs CLI: top1_agreement", c.top1_agreement, jnum(j, "top1_agreement"), JSON_RTOL);
    assert_true(c.model.ppl == rq.ppl && c.model.ppl_tokens == rq.ppl_tokens && c.model.top1 == rq.top1);
    assert_true(c.base.ppl == rb.ppl && c.base.ppl_tokens == rb.ppl_tokens && c.base.top1 == rb.top1);
    assert_int_equal(c.model.windows, WINDOWS);
    assert_int_equal(c.model.predicted, npos);
    char want_last[64];
    snprintf(want_last, sizeof want_last, "perplexity: %.6f", rq.ppl);
    assert_string_equal(last, want_last);

    /* a model against itself */
    QC_CHECK_OK(qc_eval_compare(q, q, ids, n_ids, &o, &c));
    assert_true(c.kl == 0.0 && c.kl_max == 0.0 && c.kl_p99 == 0.0 && c.top1_agreement == 1.0);
    assert_true(c.model.ppl == rq.ppl && c.base.ppl == rq.ppl);

    free(kl);
    free(pq);
    free(pb);
    free(lq);
    free(lb);
    free(ids);
    cJSON_Delete(j);
    free(out);
    qc_model_free(q);
    qc_model_free(fp);
}

static void test_vocab_mismatch(void **state) {
    (void)state;
    char *big = qc_test_require("qcal-llama-25m/config.json");
    *strrchr(big, '/') = '\0';
    qc_model *small, *m25;
    QC_CHECK_OK(qc_model_open(g_fp, &small));
    QC_CHECK_OK(qc_model_open(big, &m25));
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    qc_eval_opts o = {.seqlen = 4};
    qc_eval_cmp_result c;
    QC_CHECK_FAILS(qc_eval_compare(small, m25, ids, 8, &o, &c), QC_ERR_ARG, "vocabulary");
    /* the command refuses before running anything, naming both config files */
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --base '%s' --text '%s' --seqlen 64 --max-windows 1", g_fp, big, g_text);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' eval %s --quiet 2>&1 >/dev/null", g_bin, args);
    FILE *p = popen(cmd, "r");
    char err[2048] = {0};
    size_t n = fread(err, 1, sizeof err - 1, p);
    err[n] = 0;
    int st = pclose(p);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    printf("refused: %s", err);
    assert_non_null(strstr(err, "vocab"));
    assert_non_null(strstr(err, "stories260K/config.json"));
    assert_non_null(strstr(err, "qcal-llama-25m/config.json"));
    qc_model_free(small);
    qc_model_free(m25);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_direct),
        cmocka_unit_test(test_vocab_mismatch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
