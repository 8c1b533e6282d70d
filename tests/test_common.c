/* common/: half-precision conversions against a plain nearest-value search, error messages, files. */
#include <stdio.h>
#include <stdlib.h>

#include "sha256.h"
#include "testutil.h"

/* Plain twin of qc_f32_to_fp16: binary search over all finite non-negative fp16 values (ascending
 * by bit pattern), nearest wins, ties go to the even bit pattern, beyond 65504 + half an ulp is inf. */
static uint16_t ref_f32_to_fp16(float f) {
    if (isnan(f)) return 0x7e00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; /* largest finite */
    while (lo < hi) {        /* first pattern with value >= a */
        int mid = (lo + hi) / 2;
        if ((double)qc_fp16_to_f32((uint16_t)mid) < a) lo = mid + 1;
        else hi = mid;
    }
    int up = lo, dn = lo > 0 ? lo - 1 : 0;
    double du = (double)qc_fp16_to_f32((uint16_t)up) - a, dd = a - (double)qc_fp16_to_f32((uint16_t)dn);
    int pick = du < dd ? up : dd < du ? dn : ((up & 1) ? dn : up);
    return sign | (uint16_t)pick;
}

static void test_fp16_known(void **state) {
    (void)state;
    assert_int_equal(qc_f32_to_fp16(1.0f), 0x3c00);
    assert_int_equal(qc_f32_to_fp16(-2.0f), 0xc000);
    assert_int_equal(qc_f32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(qc_f32_to_fp16(65520.0f), 0x7c00);             /* rounds up to inf */
    assert_int_equal(qc_f32_to_fp16(65519.99f), 0x7bff);
    assert_int_equal(qc_f32_to_fp16(1.0f + 0x1p-11f), 0x3c00);      /* tie -> even */
    assert_int_equal(qc_f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);  /* tie -> even */
    assert_int_equal(qc_f32_to_fp16(0x1p-24f), 0x0001);             /* smallest subnormal */
    assert_int_equal(qc_f32_to_fp16(0x1p-25f), 0x0000);             /* tie -> even (0) */
    assert_int_equal(qc_f32_to_fp16(3 * 0x1p-25f), 0x0002);         /* tie -> even */
    assert_int_equal(qc_f32_to_fp16(INFINITY), 0x7c00);
    assert_true((qc_f32_to_fp16(NAN) & 0x7c00) == 0x7c00 && (qc_f32_to_fp16(NAN) & 0x3ff));
    QC_CHECK_NEAR(qc_fp16_to_f32(0x0001), 0x1p-24, 0);
    QC_CHECK_NEAR(qc_fp16_to_f32(0x3555), 0.333251953125, 0);
    assert_int_equal(qc_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(qc_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);       /* tie -> even */
    assert_int_equal(qc_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
    QC_CHECK_NEAR(qc_bf16_to_f32(0x4049), 3.140625, 0);
}

static void test_fp16_exhaustive(void **state) {
    (void)state;
    /* every fp16 bit pattern survives fp16 -> f32 -> fp16 (NaNs stay NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qc_fp16_to_f32((uint16_t)h);
        uint16_t back = qc_f32_to_fp16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        } else if (back != h) {
            fail_msg("fp16 0x%04x -> %g -> 0x%04x", h, f, back);
        }
    }
    /* random floats over the whole fp16 range, and every midpoint between neighbours */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        float f = ldexpf((float)(s >> 40) / (float)(1 << 24), (int)(s % 44) - 30) * ((s >> 20) & 1 ? -1.f : 1.f);
        uint16_t got = qc_f32_to_fp16(f), want = ref_f32_to_fp16(f);
        if (got != want) fail_msg("f32 %.9g -> 0x%04x, nearest-even is 0x%04x", f, got, want);
    }
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (float)(((double)qc_fp16_to_f32((uint16_t)h) + (double)qc_fp16_to_f32((uint16_t)(h + 1))) / 2);
        uint16_t got = qc_f32_to_fp16(mid), want = ref_f32_to_fp16(mid);
        if (got != want) fail_msg("midpoint %.9g after 0x%04x -> 0x%04x, want 0x%04x", mid, h, got, want);
    }
}

static void test_errors_and_files(void **state) {
    (void)state;
    assert_int_equal(qc_fail(QC_ERR_FORMAT, "bad %s", "thing"), QC_ERR_FORMAT);
    qc_error_prefix("layer %d", 3);
    assert_string_equal(qc_last_error(), "layer 3: bad thing");
    char *path = qc_path_join(qc_test_tmpdir(), "f.txt");
    QC_CHECK_OK(qc_write_file_atomic(path, "hello", 5));
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    QC_CHECK_FAILS(qc_read_file(path, 4, &buf, &len), QC_ERR_FORMAT, "larger than");
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(qc_file_exists(tmp));
    QC_CHECK_FAILS(qc_write_file_atomic("/nonexistent-dir/x", "a", 1), QC_ERR_IO, "/nonexistent-dir/x.tmp");
    free(path);
}

/* FIPS 180-2 vectors, a million 'a's, and every split of a message across updates. */
static void test_sha256(void **state) {
    (void)state;
    char hex[65];
    qc_sha256_buf("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    qc_sha256_buf("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    qc_sha256_buf(m, strlen(m), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    qc_sha256 h;
    qc_sha256_init(&h);
    char a[1000];
    memset(a, 'a', sizeof a);
    for (int i = 0; i < 1000; i++) qc_sha256_update(&h, a, sizeof a);
    qc_sha256_hex(&h, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    char want[65];
    qc_sha256_buf(m, strlen(m), want);
    for (size_t cut = 0; cut <= strlen(m); cut++) {
        qc_sha256_init(&h);
        qc_sha256_update(&h, m, cut);
        qc_sha256_update(&h, m + cut, strlen(m) - cut);
        qc_sha256_hex(&h, hex);
        assert_string_equal(hex, want);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known),
        cmocka_unit_test(test_fp16_exhaustive),
        cmocka_unit_test(test_errors_and_files),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
