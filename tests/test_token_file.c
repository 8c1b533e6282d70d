/* The QCALTOK1 token file (datasets/token_file.h): round trip, the exact byte layout, and handcrafted
 * corrupt inputs (each refused with QC_ERR_FORMAT naming the file). */
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"
#include "token_file.h"

enum { W = 3, T = 5 };

static void make_set(qc_calib_set *s, int32_t *ids) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < W * T; i++) ids[i] = i * 7919 % 32000;
    s->ids = ids;
    s->nsamples = W;
    s->seqlen = T;
    qc_tokens_sha256(ids, W * T, s->sha256);
}

/* The bytes of a valid file, in a buffer the caller frees. */
static uint8_t *valid_file(size_t *len) {
    int32_t ids[W * T];
    qc_calib_set s;
    make_set(&s, ids);
    char *p = qc_path_join(qc_test_tmpdir(), "v.bin");
    qc_token_file_info info = {.sampling = QC_SAMPLING_GPTQ, .nsamples = W, .seed = 0x100000007ull};
    QC_CHECK_OK(qc_token_file_write(p, &s, &info));
    char *buf;
    QC_CHECK_OK(qc_read_file(p, 0, &buf, len));
    free(p);
    return (uint8_t *)buf;
}

static void test_round_trip(void **state) {
    (void)state;
    int32_t ids[W * T];
    qc_calib_set s, in;
    make_set(&s, ids);
    char *p = qc_path_join(qc_test_tmpdir(), "rt.bin");
    qc_token_file_info info = {.sampling = QC_SAMPLING_AWQ, .nsamples = 8, .seed = 42}, got;
    memset(info.origin, 'a', 64);
    QC_CHECK_OK(qc_token_file_write(p, &s, &info));
    QC_CHECK_OK(qc_token_file_read(p, &in, &got));
    assert_int_equal(in.nsamples, W);
    assert_int_equal(in.seqlen, T);
    assert_string_equal(in.sha256, s.sha256);
    assert_memory_equal(in.ids, ids, sizeof ids);
    assert_int_equal(got.sampling, QC_SAMPLING_AWQ);
    assert_int_equal(got.nsamples, 8);
    assert_int_equal(got.seed, 42);
    assert_string_equal(got.origin, info.origin);
    qc_calib_set_free(&in);
    char sha[65];
    QC_CHECK_OK(qc_token_file_peek(p, &got, sha));
    assert_string_equal(sha, s.sha256);
    free(p);
}

/* The layout the header documents, byte by byte. */
static void test_layout(void **state) {
    (void)state;
    size_t len;
    uint8_t *b = valid_file(&len);
    assert_int_equal(len, QC_TOKEN_FILE_HEADER + 4 * W * T);
    assert_memory_equal(b, "QCALTOK1", 8);
    const uint8_t hdr[] = {0, 0, 0, 0, W, 0, 0, 0, W, 0, 0, 0, T, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0};
    assert_memory_equal(b + 8, hdr, sizeof hdr);
    int32_t ids[W * T];
    qc_calib_set s;
    make_set(&s, ids);
    assert_memory_equal(b + 32, s.sha256, 64);
    for (int i = 96; i < 160; i++) assert_int_equal(b[i], '0');
    const uint8_t id1[4] = {(uint8_t)(7919 & 0xff), (uint8_t)(7919 >> 8), 0, 0}; /* ids[1] = 7919, LE */
    assert_memory_equal(b + QC_TOKEN_FILE_HEADER + 4, id1, 4);
    free(b);
}

typedef struct { const char *what; size_t off; uint8_t val; long dlen; const char *needle; } corruption;

static void test_corrupt(void **state) {
    (void)state;
    const corruption cases[] = {
        {"magic", 7, '2', 0, "QCALTOK1"},
        {"sampling", 8, 9, 0, "sampling protocol 9"},
        {"nsamples 0", 12, 0, 0, "out of range"},
        {"windows > nsamples", 16, W + 1, 0, "out of range"},
        {"gptq: fewer windows than asked", 12, W + 1, 0, "not the 4 asked for"},
        {"seqlen 0", 20, 0, 0, "seqlen 0"},
        {"seqlen huge", 23, 0x40, 0, "out of range"},
        {"sha not hex", 40, 'Z', 0, "not hex"},
        {"origin not hex", 100, 'A', 0, "not hex"},
        {"id flipped", QC_TOKEN_FILE_HEADER + 9, 0x5a, 0, "the file is corrupt"},
        {"negative id", QC_TOKEN_FILE_HEADER + 7, 0x80, 0, "negative id"},
        {"truncated", 0, 0, -1, "truncated"},
        {"padded", 0, 0, 4, "truncated or padded"},
        {"header only", 0, 0, -4 * W * T, "expected"},
        {"short header", 0, 0, -(4 * W * T + 1), "no QCALTOK1"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t len;
        uint8_t *b = valid_file(&len);
        b = realloc(b, len + 8);
        memset(b + len, 0, 8);
        if (cases[c].dlen == 0) b[cases[c].off] = cases[c].val;
        len = (size_t)((long)len + cases[c].dlen);
        qc_calib_set out;
        qc_error_clear();
        qc_status st = qc_token_file_parse(b, len, "bad.bin", &out, NULL);
        if (st != QC_ERR_FORMAT || !strstr(qc_last_error(), cases[c].needle) || !strstr(qc_last_error(), "bad.bin"))
            fail_msg("%s: %s '%s', expected FORMAT with '%s'", cases[c].what, qc_status_str(st), qc_last_error(),
                     cases[c].needle);
        assert_null(out.ids);
        free(b);
    }
}

static void test_missing(void **state) {
    (void)state;
    qc_calib_set out;
    char *p = qc_path_join(qc_test_tmpdir(), "nope.bin");
    QC_CHECK_FAILS(qc_token_file_read(p, &out, NULL), QC_ERR_IO, "nope.bin");
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
