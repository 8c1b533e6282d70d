/* Calibration sampling: CPython-compatible generator, GPTQ and AWQ protocols, mixtures, determinism. */
#include <stdio.h>
#include <stdlib.h>

#include "calib_data.h"
#include "pyrandom.h"
#include "testutil.h"

/* Values printed by CPython 3.11 (the generator has not changed since 3.2):
 *   random.seed(0); [random.randint(0, 356317) for _ in range(5)], [random.randint(0, 10) for _ in range(5)]
 *   random.seed(0); [random.getrandbits(32) for _ in range(3)]
 *   random.seed(12345678901234); [random.randint(0, 2**40) for _ in range(3)], random.random()
 *   random.seed(1); [random.randint(5, 5) for _ in range(2)], random.randint(0, 1), random.getrandbits(33) */
static void test_pyrandom(void **state) {
    (void)state;
    qc_pyrandom r;
    qc_pyrandom_seed(&r, 0);
    const int64_t a[5] = {201979, 220500, 21225, 135746, 268055}, b[5] = {7, 6, 4, 7, 5};
    for (int i = 0; i < 5; i++) assert_int_equal(qc_pyrandom_randint(&r, 0, 356317), a[i]);
    for (int i = 0; i < 5; i++) assert_int_equal(qc_pyrandom_randint(&r, 0, 10), b[i]);
    qc_pyrandom_seed(&r, 0);
    assert_int_equal(qc_pyrandom_getrandbits(&r, 32), 3626764237u);
    assert_int_equal(qc_pyrandom_getrandbits(&r, 32), 1654615998u);
    assert_int_equal(qc_pyrandom_getrandbits(&r, 32), 3255389356u);
    qc_pyrandom_seed(&r, 12345678901234ull);
    assert_int_equal(qc_pyrandom_randint(&r, 0, 1ll << 40), 1085416877699ll);
    assert_int_equal(qc_pyrandom_randint(&r, 0, 1ll << 40), 944766522164ll);
    assert_int_equal(qc_pyrandom_randint(&r, 0, 1ll << 40), 322969175377ll);
    QC_CHECK_NEAR(qc_pyrandom_random(&r), 0.764757300683524, 1e-15);
    qc_pyrandom_seed(&r, 1);
    assert_int_equal(qc_pyrandom_randint(&r, 5, 5), 5);
    assert_int_equal(qc_pyrandom_randint(&r, 5, 5), 5);
    assert_int_equal(qc_pyrandom_randint(&r, 0, 1), 1);
    assert_int_equal(qc_pyrandom_getrandbits(&r, 33), 506456969ull);
}

static qc_tokenizer *g_tok;
static qc_calib_src g_c4;

static int setup(void **state) {
    (void)state;
    char *tok = qc_test_require_all("stories260K/tokenizer.json");
    qc_status st = qc_tokenizer_load(tok, &g_tok);
    free(tok);
    if (st != QC_OK) {
        fprintf(stderr, "%s\n", qc_last_error());
        return -1;
    }
    g_c4.path = qc_test_require_all("text/c4.utf8");
    g_c4.docs.format = QC_DOCS_TEXT;
    g_c4.weight = 1.0;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    qc_tokenizer_free(g_tok);
    free((char *)g_c4.path);
    return 0;
}

/* every window is a contiguous run of some document's tokens (BOS included) */
static void check_windows_in_docs(const qc_calib_set *s, const qc_calib_src *src) {
    qc_docs *r;
    QC_CHECK_OK(qc_docs_open(src->path, &src->docs, &r));
    int32_t *docs[4096];
    size_t lens[4096], nd = 0;
    const char *doc;
    size_t len;
    while (qc_docs_next(r, &doc, &len) == QC_OK && doc && nd < 4096) {
        QC_CHECK_OK(qc_tokenizer_encode(g_tok, doc, len, true, &docs[nd], &lens[nd]));
        nd++;
    }
    qc_docs_free(r);
    for (int w = 0; w < s->nsamples; w++) {
        const int32_t *win = s->ids + (size_t)w * s->seqlen;
        bool found = false;
        for (size_t d = 0; d < nd && !found; d++)
            for (size_t st = 0; !found && st + (size_t)s->seqlen <= lens[d]; st++)
                found = memcmp(docs[d] + st, win, sizeof(int32_t) * (size_t)s->seqlen) == 0;
        if (!found) fail_msg("window %d is not a run of any document", w);
    }
    for (size_t d = 0; d < nd; d++) free(docs[d]);
}

static void test_gptq_sampling(void **state) {
    (void)state;
    qc_calib_opts o = {.sampling = QC_SAMPLING_GPTQ, .nsamples = 16, .seqlen = 256, .seed = 0};
    qc_calib_set a, b, c;
    QC_CHECK_OK(qc_calib_sample(&g_c4, 1, g_tok, &o, &a));
    assert_int_equal(a.nsamples, 16);
    assert_int_equal(a.src[0].docs, 118);
    assert_true(a.src[0].eligible > 0 && a.src[0].eligible < 118);
    printf("c4.utf8: %lld documents, %lld longer than 256 tokens, token-sha256 %s\n", (long long)a.src[0].docs,
           (long long)a.src[0].eligible, a.sha256);
    check_windows_in_docs(&a, &g_c4);
    QC_CHECK_OK(qc_calib_sample(&g_c4, 1, g_tok, &o, &b));
    assert_string_equal(a.sha256, b.sha256); /* same seed, same data */
    o.seed = 1;
    QC_CHECK_OK(qc_calib_sample(&g_c4, 1, g_tok, &o, &c));
    assert_string_not_equal(a.sha256, c.sha256);
    char h[65];
    qc_tokens_sha256(a.ids, (size_t)a.nsamples * a.seqlen, h);
    assert_string_equal(h, a.sha256);
    qc_calib_set_free(&a);
    qc_calib_set_free(&b);
    qc_calib_set_free(&c);
}

static void test_awq_sampling(void **state) {
    (void)state;
    qc_calib_src tiny = {.path = qc_test_require("text/tiny.utf8"), .docs = {.format = QC_DOCS_TEXT, .split = "paragraph"},
                         .weight = 1.0};
    qc_calib_opts o = {.sampling = QC_SAMPLING_AWQ, .nsamples = 64, .seqlen = 512, .seed = 42};
    qc_calib_set a;
    QC_CHECK_OK(qc_calib_sample(&tiny, 1, g_tok, &o, &a));
    assert_int_equal(a.src[0].eligible, 64);
    assert_true(a.nsamples >= 1);
    assert_int_equal(a.src[0].tokens, (int64_t)a.nsamples * 512);
    /* the blocks are a concatenation of whole documents each starting with BOS (id 1) */
    int bos = 0;
    for (int i = 0; i < a.nsamples * 512; i++) bos += a.ids[i] == 1;
    assert_true(bos >= a.nsamples / 2);
    printf("tiny.utf8 awq: 64 documents -> %d blocks of 512, sha %s\n", a.nsamples, a.sha256);
    qc_calib_set_free(&a);
    free((char *)tiny.path);
}

static void test_mixture(void **state) {
    (void)state;
    qc_calib_src src[2] = {g_c4, g_c4};
    src[0].weight = 3.0;
    src[1].weight = 1.0;
    qc_calib_opts o = {.sampling = QC_SAMPLING_GPTQ, .nsamples = 8, .seqlen = 128, .seed = 0};
    qc_calib_set a;
    QC_CHECK_OK(qc_calib_sample(src, 2, g_tok, &o, &a));
    assert_int_equal(a.src[0].samples, 6);
    assert_int_equal(a.src[1].samples, 2);
    /* source 0 draws with seed 0: its windows equal the first 6 of a single-source run */
    qc_calib_opts o6 = o;
    o6.nsamples = 6;
    qc_calib_set b;
    QC_CHECK_OK(qc_calib_sample(&g_c4, 1, g_tok, &o6, &b));
    assert_memory_equal(a.ids, b.ids, sizeof(int32_t) * 6 * 128);
    qc_calib_set_free(&a);
    qc_calib_set_free(&b);
}

static void test_errors(void **state) {
    (void)state;
    qc_calib_opts o = {.sampling = QC_SAMPLING_GPTQ, .nsamples = 4, .seqlen = 1000000, .seed = 0};
    qc_calib_set a;
    QC_CHECK_FAILS(qc_calib_sample(&g_c4, 1, g_tok, &o, &a), QC_ERR_ARG, "has more than 1000000 tokens");
    qc_calib_src bad = g_c4;
    bad.weight = 0.0;
    o.seqlen = 64;
    QC_CHECK_FAILS(qc_calib_sample(&bad, 1, g_tok, &o, &a), QC_ERR_ARG, "weight must be a positive number");
    bad = g_c4;
    bad.path = "/nonexistent/c4.txt";
    QC_CHECK_FAILS(qc_calib_sample(&bad, 1, g_tok, &o, &a), QC_ERR_IO, "/nonexistent/c4.txt");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyrandom),
        cmocka_unit_test(test_gptq_sampling),
        cmocka_unit_test(test_awq_sampling),
        cmocka_unit_test(test_mixture),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
