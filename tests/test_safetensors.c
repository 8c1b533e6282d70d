/* test_safetensors.c - the safetensors reader against handcrafted corrupt files (one test per check),
 * sharded-index checks, writer round trips and failure modes, and the real models in ../shared/data. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "safetensors.h"

/* Named tolerances for real F16/BF16 files against their F32 original (round to nearest: 2^-11, 2^-8). */
#define F16_REL_TOL  1e-3
#define F16_ABS_TOL  1e-7  /* below 2^-14 F16 is subnormal: absolute spacing 2^-24 ~ 6e-8 */
#define BF16_REL_TOL 1e-2
#define BF16_ABS_TOL 1e-30 /* BF16 has F32's exponent range */

/* ---- helpers ---- */

/* A path under the test's temporary directory; a few rotating buffers so that calls can be combined. */
static const char *tpath(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", qc_test_tmpdir(), name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (n && fwrite(p, 1, n, f) != n) fail_msg("cannot write %s", path);
    if (fclose(f) != 0) fail_msg("cannot close %s", path);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* 8-byte length `hlen`, then header_n header bytes, then data_n data bytes (copied from data, or a
 * byte pattern when data is NULL). */
static void write_st_raw(const char *path, uint64_t hlen, const char *header, size_t header_n, const void *data,
                         size_t data_n) {
    size_t n = 8 + header_n + data_n;
    unsigned char *b = malloc(n);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, header, header_n);
    for (size_t i = 0; i < data_n; i++)
        b[8 + header_n + i] = data ? ((const unsigned char *)data)[i] : (unsigned char)(i * 7 + 1);
    write_bytes(path, b, n);
    free(b);
}

static void write_st(const char *path, const char *header, const void *data, size_t data_n) {
    write_st_raw(path, strlen(header), header, strlen(header), data, data_n);
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* The message names the file or tensor: QC_CHECK_FAILS checks one needle, this one more. */
static void check_msg_has(const char *needle) {
    if (!strstr(qc_last_error(), needle)) fail_msg("message '%s' lacks '%s'", qc_last_error(), needle);
}

/* A file `name` holding `header` and data_n pattern bytes must fail to open with `want`, the message
 * naming the file and `needle`; the parser alone (no file) must fail the same way. */
static void expect_corrupt(const char *name, const char *header, size_t data_n, qc_status want, const char *needle) {
    const char *path = tpath(name);
    write_st(path, header, NULL, data_n);
    qc_safetensors *f = (qc_safetensors *)1;
    QC_CHECK_FAILS(qc_safetensors_open(path, &f), want, needle);
    assert_null(f);
    check_msg_has(path);

    f = (qc_safetensors *)1;
    QC_CHECK_FAILS(qc_safetensors_parse(header, strlen(header), data_n, "in-memory-header", &f), want, needle);
    assert_null(f);
    check_msg_has("in-memory-header");
}

/* A model directory under tmp, holding single-tensor-per-name F32 [2] shards. */
static const char *make_dir(const char *name) {
    const char *p = tpath(name);
    if (mkdir(p, 0755) != 0) fail_msg("mkdir %s failed", p);
    return p;
}

static void write_shard(const char *dir, const char *file, const char *const *names, size_t n) {
    char *path = qc_path_join(dir, file);
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    for (size_t i = 0; i < n; i++) QC_CHECK_OK(qc_st_writer_add(w, names[i], QC_DTYPE_F32, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    for (size_t i = 0; i < n; i++) {
        float v[2] = {(float)i, (float)i + 0.5f};
        QC_CHECK_OK(qc_st_writer_write(w, v, sizeof v));
    }
    QC_CHECK_OK(qc_st_writer_finish(w));
    free(path);
}

/* dir with a.safetensors {t.a1, t.a2} and b.safetensors {t.b1}, and the given index text. */
static const char *make_sharded(const char *name, const char *index_json) {
    const char *dir = make_dir(name);
    write_shard(dir, "a.safetensors", (const char *[]){"t.a1", "t.a2"}, 2);
    write_shard(dir, "b.safetensors", (const char *[]){"t.b1"}, 1);
    char *idx = qc_path_join(dir, "model.safetensors.index.json");
    write_text(idx, index_json);
    free(idx);
    return dir;
}

static void expect_weights_fail(const char *dir, qc_status want, const char *needle, const char *needle2) {
    qc_weights *w = (qc_weights *)1;
    QC_CHECK_FAILS(qc_weights_open(dir, &w), want, needle);
    assert_null(w);
    if (needle2) check_msg_has(needle2);
}

#define GOOD_MAP "\"t.a1\": \"a.safetensors\", \"t.a2\": \"a.safetensors\", \"t.b1\": \"b.safetensors\""

/* ---- corrupt single files: one test per check ---- */

static void test_truncated(void **state) {
    (void)state;
    const char *p = tpath("short.safetensors");
    write_bytes(p, "\x05\0\0\0\0", 5);
    qc_safetensors *f;
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "too short");
    check_msg_has(p);
    p = tpath("empty.safetensors");
    write_bytes(p, "", 0);
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "too short");
    check_msg_has(p);
    QC_CHECK_FAILS(qc_safetensors_open(tpath("does-not-exist.safetensors"), &f), QC_ERR_IO, "does-not-exist");
}

static void test_header_over_cap(void **state) {
    (void)state;
    const char *p = tpath("cap.safetensors");
    write_st_raw(p, (uint64_t)QC_ST_MAX_HEADER + 1, "{}", 2, NULL, 0);
    qc_safetensors *f;
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "cap");
    check_msg_has(p);
    write_st_raw(p, UINT64_MAX, "{}", 2, NULL, 0); /* wraps 8 + N if added carelessly */
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "cap");
}

static void test_header_past_eof(void **state) {
    (void)state;
    const char *p = tpath("past.safetensors");
    write_st_raw(p, 100, "{}", 2, NULL, 10);
    qc_safetensors *f;
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "past the end");
    check_msg_has(p);
}

static void test_invalid_json(void **state) {
    (void)state;
    expect_corrupt("json1.safetensors", "{\"w\": {\"dtype\": \"F32\",", 0, QC_ERR_FORMAT, "not valid JSON");
    expect_corrupt("json2.safetensors", "", 0, QC_ERR_FORMAT, "not valid JSON");
    expect_corrupt("json3.safetensors", "{\"a\" 1}", 0, QC_ERR_FORMAT, "not valid JSON");
    expect_corrupt("json4.safetensors", "{} x", 0, QC_ERR_FORMAT, "trailing");
    expect_corrupt("json5.safetensors", "{}{}", 0, QC_ERR_FORMAT, "trailing");
    /* bytes JSON text cannot hold: cJSON alone would take them as whitespace or the end */
    expect_corrupt("json6.safetensors", "{}\x01", 0, QC_ERR_FORMAT, "offset 2");
    expect_corrupt("json7.safetensors", "{\"w\xff\": 1}", 0, QC_ERR_FORMAT, "invalid UTF-8");
    expect_corrupt("json8.safetensors", "{\"\xc0\xaf\": 1}", 0, QC_ERR_FORMAT, "invalid UTF-8"); /* overlong '/' */
    expect_corrupt("json9.safetensors", "{\"\xed\xa0\x80\": 1}", 0, QC_ERR_FORMAT, "invalid UTF-8"); /* surrogate */
    /* a NUL inside the header (strlen would stop at it: write it by hand) */
    const char hdr[] = "{}\0 {\"x\":1}";
    const char *p = tpath("nul.safetensors");
    write_st_raw(p, sizeof hdr - 1, hdr, sizeof hdr - 1, NULL, 0);
    qc_safetensors *f;
    QC_CHECK_FAILS(qc_safetensors_open(p, &f), QC_ERR_FORMAT, "offset 2");
    check_msg_has(p);
}

static void test_not_object(void **state) {
    (void)state;
    expect_corrupt("arr.safetensors", "[1, 2]", 0, QC_ERR_FORMAT, "not a JSON object");
    expect_corrupt("str.safetensors", "\"tensors\"", 0, QC_ERR_FORMAT, "not a JSON object");
    expect_corrupt("num.safetensors", "42", 0, QC_ERR_FORMAT, "not a JSON object");
    expect_corrupt("null.safetensors", "null", 0, QC_ERR_FORMAT, "not a JSON object");
    expect_corrupt("entry.safetensors", "{\"w.entry\": [1]}", 0, QC_ERR_FORMAT, "'w.entry': entry is not");
}

static void test_unknown_dtype(void **state) {
    (void)state;
    expect_corrupt("dt1.safetensors", "{\"w.q7\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.q7': unknown dtype 'Q7'");
    expect_corrupt("dt2.safetensors", "{\"w.lower\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.lower': unknown dtype 'f32'");
    expect_corrupt("dt3.safetensors", "{\"w.num\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.num': dtype is not a string");
    expect_corrupt("dt4.safetensors", "{\"w.none\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, QC_ERR_FORMAT,
                   "'w.none': no dtype");
    /* in the safetensors spec, not handled by qcal */
    expect_corrupt("dt5.safetensors", "{\"w.fp8\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_UNSUPPORTED, "'w.fp8': dtype F8_E4M3 is not supported");
}

static void test_bad_shape(void **state) {
    (void)state;
    expect_corrupt("sh1.safetensors", "{\"w.neg\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.neg': shape[0] is not a non-negative integer");
    expect_corrupt("sh2.safetensors", "{\"w.frac\":{\"dtype\":\"F32\",\"shape\":[2, 1.5],\"data_offsets\":[0,12]}}",
                   12, QC_ERR_FORMAT, "'w.frac': shape[1] is not a non-negative integer");
    expect_corrupt("sh3.safetensors", "{\"w.str\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.str': shape[0] is not");
    expect_corrupt("sh4.safetensors",
                   "{\"w.dims\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.dims': shape has more than 8 dimensions");
    expect_corrupt("sh5.safetensors", "{\"w.obj\":{\"dtype\":\"F32\",\"shape\":{\"a\":1},\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.obj': shape is not an array");
    expect_corrupt("sh6.safetensors", "{\"w.noshape\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, QC_ERR_FORMAT,
                   "'w.noshape': no shape");
    expect_corrupt("sh7.safetensors",
                   "{\"w.big\":{\"dtype\":\"U8\",\"shape\":[9007199254740992],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.big': shape[0] is not a non-negative integer below 2^53");
    expect_corrupt("sh8.safetensors", "{\"w.dup\":{\"dtype\":\"F32\",\"shape\":[1],\"shape\":[2],"
                   "\"data_offsets\":[0,4]}}", 4, QC_ERR_FORMAT, "'w.dup': key 'shape' appears twice");
}

static void test_shape_overflow(void **state) {
    (void)state;
    /* numel overflows int64 */
    expect_corrupt("ov1.safetensors", "{\"w.ov\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                   "\"data_offsets\":[0,0]}}", 0, QC_ERR_FORMAT, "'w.ov': shape [4294967296, 4294967296, 4294967296]");
    check_msg_has("overflows");
    /* numel = 2^62 fits, x 8 bytes does not */
    expect_corrupt("ov2.safetensors", "{\"w.ov8\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],"
                   "\"data_offsets\":[0,0]}}", 0, QC_ERR_FORMAT, "'w.ov8': shape");
    check_msg_has("overflows");
    /* a zero dimension makes the product 0 whatever follows */
    qc_safetensors *f;
    const char *h = "{\"w.zero\":{\"dtype\":\"F64\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}}";
    QC_CHECK_OK(qc_safetensors_parse(h, strlen(h), 0, "zero", &f));
    assert_int_equal(qc_safetensors_get(f, 0)->numel, 0);
    qc_safetensors_free(f);
}

static void test_span_mismatch(void **state) {
    (void)state;
    expect_corrupt("span1.safetensors", "{\"w.span\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
                   QC_ERR_FORMAT, "'w.span': data_offsets [0, 20] span 20 bytes but F32 [2, 3] needs 24");
    expect_corrupt("span2.safetensors", "{\"w.scalar\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
                   QC_ERR_FORMAT, "'w.scalar': data_offsets [0, 4] span 4 bytes but BF16 [] needs 2");
}

static void test_offsets_out_of_bounds(void **state) {
    (void)state;
    expect_corrupt("oob1.safetensors", "{\"w.oob\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                   QC_ERR_FORMAT, "'w.oob': data_offsets [0, 8] out of bounds");
    expect_corrupt("oob2.safetensors", "{\"w.rev\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                   QC_ERR_FORMAT, "'w.rev': data_offsets [8, 0] end before they begin");
    expect_corrupt("oob3.safetensors", "{\"w.far\":{\"dtype\":\"U8\",\"shape\":[1],"
                   "\"data_offsets\":[9007199254740990,9007199254740991]}}", 4, QC_ERR_FORMAT, "'w.far': data_offsets");
    check_msg_has("out of bounds");
    expect_corrupt("oob4.safetensors", "{\"w.three\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
                   QC_ERR_FORMAT, "'w.three': data_offsets is not [begin, end]");
    expect_corrupt("oob5.safetensors", "{\"w.negoff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                   QC_ERR_FORMAT, "'w.negoff': data_offsets is not [begin, end]");
    expect_corrupt("oob6.safetensors", "{\"w.nooff\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, QC_ERR_FORMAT,
                   "'w.nooff': no data_offsets");
}

static void test_gap(void **state) {
    (void)state;
    expect_corrupt("gap1.safetensors", "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, QC_ERR_FORMAT,
                   "'w.b': gap of 4 bytes");
    expect_corrupt("gap2.safetensors", "{\"w.late\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                   QC_ERR_FORMAT, "'w.late': gap of 4 bytes");
    /* bytes after the last tensor */
    expect_corrupt("gap3.safetensors", "{\"w.last\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
                   QC_ERR_FORMAT, "4 bytes of the data section after tensor 'w.last' belong to no tensor");
    expect_corrupt("gap4.safetensors", "{}", 3, QC_ERR_FORMAT, "3 bytes of the data section after the header");
}

static void test_overlap(void **state) {
    (void)state;
    expect_corrupt("ovl1.safetensors", "{\"w.first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"w.second\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, QC_ERR_FORMAT,
                   "'w.second': data_offsets [4, 12] overlap tensor 'w.first'");
    /* same span twice */
    expect_corrupt("ovl2.safetensors", "{\"w.x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"w.y\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, QC_ERR_FORMAT, "overlap");
    /* an empty tensor placed inside another one */
    expect_corrupt("ovl3.safetensors", "{\"w.big\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"w.empty\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, QC_ERR_FORMAT,
                   "'w.empty': data_offsets [4, 4] overlap tensor 'w.big'");
}

static void test_duplicate_names(void **state) {
    (void)state;
    expect_corrupt("dup.safetensors", "{\"w.dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"w.ok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                   "\"w.dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, QC_ERR_FORMAT,
                   "tensor 'w.dup' appears twice");
}

static void test_bad_metadata(void **state) {
    (void)state;
    expect_corrupt("meta1.safetensors", "{\"__metadata__\":\"pt\"}", 0, QC_ERR_FORMAT, "__metadata__ is not a JSON object");
    expect_corrupt("meta2.safetensors", "{\"__metadata__\":[\"pt\"]}", 0, QC_ERR_FORMAT, "__metadata__ is not");
    expect_corrupt("meta3.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"step\":7}}", 0, QC_ERR_FORMAT,
                   "__metadata__ value of key 'step' is not a string");
    expect_corrupt("meta4.safetensors", "{\"__metadata__\":{\"k\":{\"nested\":\"x\"}}}", 0, QC_ERR_FORMAT,
                   "key 'k' is not a string");
    expect_corrupt("meta5.safetensors", "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"tf\"}}", 0, QC_ERR_FORMAT,
                   "__metadata__ has key 'format' twice");
    expect_corrupt("meta6.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, QC_ERR_FORMAT,
                   "__metadata__ twice");
}

/* ---- valid handcrafted files ---- */

static void test_parse_valid(void **state) {
    (void)state;
    const char *h = "  {\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\" \\u00e9\"},"
                    "\"z.last\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8],\"extra\":[1]},"
                    "\"a.first\":{\"data_offsets\":[8,8],\"dtype\":\"I64\",\"shape\":[3,0]},"
                    "\"m.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}   \n";
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_parse(h, strlen(h), 12, "mem", &f));
    assert_int_equal(qc_safetensors_count(f), 3);
    /* header order */
    assert_string_equal(qc_safetensors_get(f, 0)->name, "z.last");
    assert_string_equal(qc_safetensors_get(f, 1)->name, "a.first");
    assert_string_equal(qc_safetensors_get(f, 2)->name, "m.scalar");
    assert_null(qc_safetensors_get(f, 3));
    const qc_tensor *t = qc_safetensors_find(f, "z.last");
    assert_non_null(t);
    assert_int_equal(t->dtype, QC_DTYPE_F16);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->numel, 4);
    assert_int_equal(t->nbytes, 8);
    assert_int_equal(t->offset, 0);
    assert_null(t->data);
    assert_string_equal(t->file, "mem");
    t = qc_safetensors_find(f, "a.first");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->nbytes, 0);
    t = qc_safetensors_find(f, "m.scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(t->nbytes, 4);
    assert_null(qc_safetensors_find(f, "nope"));
    assert_null(qc_safetensors_find(f, "__metadata__"));
    assert_string_equal(qc_safetensors_meta(f, "format"), "pt");
    assert_string_equal(qc_safetensors_meta(f, "note"), "a \"quoted\" \xc3\xa9");
    assert_null(qc_safetensors_meta(f, "absent"));
    float x;
    QC_CHECK_FAILS(qc_tensor_read_f32(qc_safetensors_find(f, "m.scalar"), 0, 1, &x), QC_ERR_ARG, "no data");
    qc_safetensors_free(f);

    QC_CHECK_OK(qc_safetensors_parse("{}", 2, 0, "empty", &f));
    assert_int_equal(qc_safetensors_count(f), 0);
    assert_null(qc_safetensors_meta(f, "format"));
    qc_safetensors_free(f);
}

/* Data that starts at an odd address: every load must go through memcpy (UBSan checks). */
static void test_unaligned_read(void **state) {
    (void)state;
    const float f32[3] = {1.5f, -2.25f, 3e-5f};
    const uint16_t f16[3] = {0x3c00, 0xc000, 0x0001}; /* 1, -2, smallest subnormal 2^-24 */
    const uint16_t bf16[3] = {0x3f80, 0xc000, 0x3f00}; /* 1, -2, 0.5 */
    const double f64[2] = {0.1, -1e10};
    const int32_t i32[1] = {7};
    unsigned char data[44];
    memcpy(data, f32, 12);
    memcpy(data + 12, f16, 6);
    memcpy(data + 18, bf16, 6);
    memcpy(data + 24, f64, 16);
    memcpy(data + 40, i32, 4);
    char h[512];
    int n = snprintf(h, sizeof h, "{\"f32\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
                     "\"f16\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[12,18]},"
                     "\"bf16\":{\"dtype\":\"BF16\",\"shape\":[1,3],\"data_offsets\":[18,24]},"
                     "\"f64\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[24,40]},"
                     "\"i32\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[40,44]}}");
    while ((8 + n) % 8 != 3) h[n++] = ' ';
    h[n] = '\0';
    const char *p = tpath("unaligned.safetensors");
    write_st(p, h, data, sizeof data);
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(p, &f));
    const qc_tensor *t = qc_safetensors_find(f, "f32");
    assert_int_equal((uintptr_t)t->data % 4, 3);
    float out[3] = {0};
    QC_CHECK_OK(qc_tensor_read_f32(t, 0, 3, out));
    assert_memory_equal(out, f32, sizeof out);
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "f16"), 0, 3, out));
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1.0f, -24));
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "bf16"), 1, 2, out));
    assert_true(out[0] == -2.0f && out[1] == 0.5f);
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "f64"), 0, 2, out));
    assert_true(out[0] == 0.1f && out[1] == -1e10f);
    assert_memory_equal(qc_safetensors_find(f, "i32")->data, i32, 4);

    t = qc_safetensors_find(f, "f16");
    QC_CHECK_OK(qc_tensor_read_f32(t, 3, 0, NULL)); /* empty range at the end */
    QC_CHECK_FAILS(qc_tensor_read_f32(t, 2, 2, out), QC_ERR_ARG, "'f16': elements [2, 2 + 2)");
    QC_CHECK_FAILS(qc_tensor_read_f32(t, -1, 1, out), QC_ERR_ARG, "outside");
    QC_CHECK_FAILS(qc_tensor_read_f32(t, 0, INT64_MAX, out), QC_ERR_ARG, "outside");
    QC_CHECK_FAILS(qc_tensor_read_f32(qc_safetensors_find(f, "i32"), 0, 1, out), QC_ERR_UNSUPPORTED,
                   "'i32': dtype I32 is not a floating type");
    qc_safetensors_free(f);
}

/* The converter's fast paths against the reference conversions, for every 16-bit pattern (NaNs by bits). */
static void test_read_f32_exhaustive(void **state) {
    (void)state;
    const char *path = tpath("all16.safetensors");
    uint16_t *all = malloc(2 << 16);
    float *got = malloc(4 << 16);
    assert_true(all && got);
    for (uint32_t i = 0; i < (1u << 16); i++) all[i] = (uint16_t)i;
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "u8.pad", QC_DTYPE_U8, 1, (int64_t[]){1})); /* odd offsets after it */
    QC_CHECK_OK(qc_st_writer_add(w, "f16", QC_DTYPE_F16, 2, (int64_t[]){256, 256}));
    QC_CHECK_OK(qc_st_writer_add(w, "bf16", QC_DTYPE_BF16, 1, (int64_t[]){1 << 16}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    QC_CHECK_OK(qc_st_writer_write(w, "p", 1));
    QC_CHECK_OK(qc_st_writer_write(w, all, 2 << 16));
    QC_CHECK_OK(qc_st_writer_write(w, all, 2 << 16));
    QC_CHECK_OK(qc_st_writer_finish(w));
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(path, &f));
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "f16"), 0, 1 << 16, got));
    for (uint32_t i = 0; i < (1u << 16); i++) {
        float want = qc_fp16_to_f32((uint16_t)i);
        if (memcmp(&want, &got[i], 4) != 0) fail_msg("F16 0x%04x: got %g, reference %g", i, got[i], want);
    }
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "bf16"), 0, 1 << 16, got));
    for (uint32_t i = 0; i < (1u << 16); i++) {
        float want = qc_bf16_to_f32((uint16_t)i);
        if (memcmp(&want, &got[i], 4) != 0) fail_msg("BF16 0x%04x: got %g, reference %g", i, got[i], want);
    }
    qc_safetensors_free(f);
    free(all);
    free(got);
}

static void test_dtype_table(void **state) {
    (void)state;
    for (int i = 0; i < QC_DTYPE_COUNT; i++) {
        qc_dtype d;
        assert_true(qc_dtype_from_name(qc_dtype_name((qc_dtype)i), &d));
        assert_int_equal(d, i);
        assert_true(qc_dtype_size((qc_dtype)i) >= 1);
    }
    assert_int_equal(qc_dtype_size(QC_DTYPE_BF16), 2);
    assert_int_equal(qc_dtype_size(QC_DTYPE_I64), 8);
    assert_int_equal(qc_dtype_size(QC_DTYPE_BOOL), 1);
    assert_int_equal(qc_dtype_size(QC_DTYPE_COUNT), 0);
    qc_dtype d;
    assert_false(qc_dtype_from_name("bf16", &d));
    assert_false(qc_dtype_from_name("", &d));
    assert_false(qc_dtype_from_name(NULL, &d));
}

/* ---- sharded index ---- */

static void test_sharded_valid(void **state) {
    (void)state;
    const char *dir = make_sharded("m_good", "{\"metadata\":{\"total_size\":24},\"weight_map\":{" GOOD_MAP "}}");
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_count(w), 3);
    assert_string_equal(qc_weights_get(w, 0)->name, "t.a1");
    assert_string_equal(qc_weights_get(w, 1)->name, "t.a2");
    assert_string_equal(qc_weights_get(w, 2)->name, "t.b1");
    assert_null(qc_weights_get(w, 3));
    assert_int_equal(qc_weights_total_bytes(w), 24);
    const qc_tensor *t = qc_weights_find(w, "t.b1");
    assert_non_null(t);
    assert_non_null(strstr(t->file, "m_good/b.safetensors"));
    float v[2];
    QC_CHECK_OK(qc_tensor_read_f32(qc_weights_find(w, "t.a2"), 0, 2, v));
    assert_true(v[0] == 1.0f && v[1] == 1.5f);
    assert_null(qc_weights_find(w, "t.c"));
    qc_weights_free(w);
}

static void test_sharded_escape(void **state) {
    (void)state;
    /* real files wherever the names point, so only the name check can stop them */
    write_shard(qc_test_tmpdir(), "outside.safetensors", (const char *[]){"t.b1"}, 1);
    char idx[2048];

    snprintf(idx, sizeof idx, "{\"weight_map\":{\"t.a1\":\"a.safetensors\",\"t.a2\":\"a.safetensors\","
             "\"t.b1\":\"../outside.safetensors\"}}");
    expect_weights_fail(make_sharded("m_dotdot", idx), QC_ERR_FORMAT, "'../outside.safetensors' for tensor 't.b1'",
                        "model.safetensors.index.json");

    snprintf(idx, sizeof idx, "{\"weight_map\":{\"t.a1\":\"a.safetensors\",\"t.a2\":\"a.safetensors\","
             "\"t.b1\":\"sub/b.safetensors\"}}");
    const char *dir = make_sharded("m_slash", idx);
    char *sub = qc_path_join(dir, "sub");
    assert_int_equal(mkdir(sub, 0755), 0);
    write_shard(sub, "b.safetensors", (const char *[]){"t.b1"}, 1);
    free(sub);
    expect_weights_fail(dir, QC_ERR_FORMAT, "'sub/b.safetensors' for tensor 't.b1' contains a path separator", NULL);

    snprintf(idx, sizeof idx, "{\"weight_map\":{\"t.a1\":\"a.safetensors\",\"t.a2\":\"a.safetensors\","
             "\"t.b1\":\"%s\"}}", tpath("outside.safetensors"));
    expect_weights_fail(make_sharded("m_abs", idx), QC_ERR_FORMAT, "is an absolute path", "'t.b1'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\"x\\\\b.safetensors\"}}");
    expect_weights_fail(make_sharded("m_bslash", idx), QC_ERR_FORMAT, "contains a path separator", "'t.c'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\"\"}}");
    expect_weights_fail(make_sharded("m_emptyname", idx), QC_ERR_FORMAT, "is empty", "'t.c'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\"model.bin\"}}");
    expect_weights_fail(make_sharded("m_suffix", idx), QC_ERR_FORMAT, "does not end in .safetensors", "'t.c'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\".safetensors\"}}");
    expect_weights_fail(make_sharded("m_bare", idx), QC_ERR_FORMAT, "does not end in .safetensors", "'t.c'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\"..safetensors\"}}");
    expect_weights_fail(make_sharded("m_dots", idx), QC_ERR_FORMAT, "contains \"..\"", "'t.c'");

    snprintf(idx, sizeof idx, "{\"weight_map\":{" GOOD_MAP ",\"t.c\":7}}");
    expect_weights_fail(make_sharded("m_notstr", idx), QC_ERR_FORMAT, "'t.c' is not a file name", NULL);
}

static void test_sharded_missing_shard(void **state) {
    (void)state;
    expect_weights_fail(make_sharded("m_missing", "{\"weight_map\":{" GOOD_MAP ",\"t.c\":\"c.safetensors\"}}"),
                        QC_ERR_FORMAT, "shard 'c.safetensors' (for tensor 't.c') is not a file", NULL);
}

static void test_sharded_tensor_missing_in_shard(void **state) {
    (void)state;
    expect_weights_fail(make_sharded("m_notinshard", "{\"weight_map\":{" GOOD_MAP ",\"t.a3\":\"a.safetensors\"}}"),
                        QC_ERR_FORMAT, "assigns tensor 't.a3' to shard 'a.safetensors', which does not hold it", NULL);
}

static void test_sharded_tensor_not_in_map(void **state) {
    (void)state;
    expect_weights_fail(make_sharded("m_notinmap", "{\"weight_map\":{\"t.a1\":\"a.safetensors\","
                                     "\"t.b1\":\"b.safetensors\"}}"),
                        QC_ERR_FORMAT, "shard 'a.safetensors' holds tensor 't.a2', which the weight_map does not list",
                        NULL);
}

static void test_sharded_tensor_in_two_shards(void **state) {
    (void)state;
    const char *dir = make_sharded("m_twice", "{\"weight_map\":{" GOOD_MAP "}}");
    write_shard(dir, "b.safetensors", (const char *[]){"t.b1", "t.a1"}, 2); /* b also holds t.a1 */
    expect_weights_fail(dir, QC_ERR_FORMAT, "tensor 't.a1' is in shard 'b.safetensors' but the weight_map assigns "
                        "it to 'a.safetensors'", NULL);
}

static void test_sharded_bad_index(void **state) {
    (void)state;
    expect_weights_fail(make_sharded("m_idx1", "{\"weight_map\":{" GOOD_MAP "}"), QC_ERR_FORMAT, "not valid JSON",
                        "model.safetensors.index.json");
    expect_weights_fail(make_sharded("m_idx2", "[]"), QC_ERR_FORMAT, "index is not a JSON object", NULL);
    expect_weights_fail(make_sharded("m_idx3", "{\"metadata\":{}}"), QC_ERR_FORMAT, "no weight_map", NULL);
    expect_weights_fail(make_sharded("m_idx4", "{\"weight_map\":[\"a.safetensors\"]}"), QC_ERR_FORMAT, "no weight_map",
                        NULL);
    expect_weights_fail(make_sharded("m_idx5", "{\"weight_map\":{}}"), QC_ERR_FORMAT, "lists no tensors", NULL);
    expect_weights_fail(make_sharded("m_idx6", "{\"weight_map\":{" GOOD_MAP ",\"t.a1\":\"a.safetensors\"}}"),
                        QC_ERR_FORMAT, "lists tensor 't.a1' twice", NULL);
    expect_weights_fail(make_sharded("m_idx7", "{\"weight_map\":{" GOOD_MAP "},\"weight_map\":{}}"), QC_ERR_FORMAT,
                        "weight_map appears twice", NULL);
    /* a corrupt shard: its own message, naming the shard file */
    const char *dir = make_sharded("m_idx8", "{\"weight_map\":{" GOOD_MAP "}}");
    char *p = qc_path_join(dir, "b.safetensors");
    write_bytes(p, "garbage", 7);
    expect_weights_fail(dir, QC_ERR_FORMAT, "too short", "m_idx8/b.safetensors");
    free(p);
}

static void test_dir_fallbacks(void **state) {
    (void)state;
    qc_weights *w;
    /* the only *.safetensors file */
    const char *dir = make_dir("d_lone");
    write_shard(dir, "weights.safetensors", (const char *[]){"x", "y"}, 2);
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_count(w), 2);
    qc_weights_free(w);
    /* a file path */
    char *p = qc_path_join(dir, "weights.safetensors");
    QC_CHECK_OK(qc_weights_open(p, &w));
    assert_int_equal(qc_weights_count(w), 2);
    qc_weights_free(w);
    free(p);
    /* model.safetensors wins over others */
    write_shard(dir, "model.safetensors", (const char *[]){"z"}, 1);
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_count(w), 1);
    assert_non_null(qc_weights_find(w, "z"));
    qc_weights_free(w);
    /* two candidates and no index */
    dir = make_dir("d_two");
    write_shard(dir, "a.safetensors", (const char *[]){"x"}, 1);
    write_shard(dir, "b.safetensors", (const char *[]){"y"}, 1);
    expect_weights_fail(dir, QC_ERR_FORMAT, "2 *.safetensors files but no model.safetensors.index.json", "d_two");
    /* nothing */
    expect_weights_fail(make_dir("d_empty"), QC_ERR_IO, "no model.safetensors.index.json", "d_empty");
    expect_weights_fail(tpath("d_absent"), QC_ERR_IO, "no such file or directory", "d_absent");
}

/* ---- writer ---- */

static uint64_t read_u64le(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static void test_writer_round_trip(void **state) {
    (void)state;
    enum { NT = 11 };
    static const struct { const char *name; qc_dtype dt; int ndim; int64_t shape[3]; } decl[NT] = {
        {"layer.0.weight", QC_DTYPE_F32, 2, {3, 5}},
        {"layer.0.scales", QC_DTYPE_F16, 1, {7}},
        {"layer.0.bf", QC_DTYPE_BF16, 3, {2, 3, 4}},
        {"layer.0.qweight", QC_DTYPE_I32, 2, {4, 4}},
        {"scalar", QC_DTYPE_F32, 0, {0}},
        {"empty", QC_DTYPE_F32, 2, {0, 16}},
        {"i64", QC_DTYPE_I64, 1, {3}},
        {"a \"quoted\\ name\" \xc3\xa9", QC_DTYPE_U8, 1, {5}},
        {"f64", QC_DTYPE_F64, 1, {3}},
        {"i8.i16", QC_DTYPE_I16, 2, {1, 3}},
        {"mask", QC_DTYPE_BOOL, 1, {9}},
    };
    const char *path = tpath("round.safetensors");
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    assert_true(exists(tmp));
    for (int i = 0; i < NT; i++) QC_CHECK_OK(qc_st_writer_add(w, decl[i].name, decl[i].dt, decl[i].ndim, decl[i].shape));
    QC_CHECK_OK(qc_st_writer_set_meta(w, "qcal.recipe", "w4g128"));
    QC_CHECK_OK(qc_st_writer_set_meta(w, "qcal.seed", "1"));
    QC_CHECK_OK(qc_st_writer_set_meta(w, "qcal.seed", "42")); /* replaces */
    QC_CHECK_OK(qc_st_writer_begin(w));

    /* the bytes of every tensor, one buffer; floating ones hold real values so they can be read back */
    size_t nbytes[NT], total = 0;
    for (int i = 0; i < NT; i++) {
        size_t n = qc_dtype_size(decl[i].dt);
        for (int d = 0; d < decl[i].ndim; d++) n *= (size_t)decl[i].shape[d];
        nbytes[i] = n;
        total += n;
    }
    unsigned char *all = malloc(total);
    assert_non_null(all);
    for (size_t i = 0; i < total; i++) all[i] = (unsigned char)(i * 131 + 7);
    unsigned char *f32 = all, *f16 = all + nbytes[0], *bf = f16 + nbytes[1];
    for (int i = 0; i < 15; i++) { float v = 0.25f * (float)i - 1.0f; memcpy(f32 + 4 * i, &v, 4); }
    for (int i = 0; i < 7; i++) { uint16_t h = qc_f32_to_fp16(0.1f * (float)i); memcpy(f16 + 2 * i, &h, 2); }
    for (int i = 0; i < 24; i++) { uint16_t h = qc_f32_to_bf16(-3.0f * (float)i); memcpy(bf + 2 * i, &h, 2); }
    size_t f64_at = 0;
    for (int i = 0; i < 8; i++) f64_at += nbytes[i];
    for (int i = 0; i < 3; i++) { double v = 1e-3 * (double)(i + 1); memcpy(all + f64_at + 8 * i, &v, 8); }

    /* in odd chunks that straddle tensors */
    for (size_t at = 0, k = 1; at < total; k++) {
        size_t n = k % 13 + 1;
        if (n > total - at) n = total - at;
        QC_CHECK_OK(qc_st_writer_write(w, all + at, n));
        at += n;
    }
    QC_CHECK_OK(qc_st_writer_finish(w));
    assert_false(exists(tmp));

    /* the raw layout */
    char *raw;
    size_t raw_len;
    QC_CHECK_OK(qc_read_file(path, 0, &raw, &raw_len));
    uint64_t hlen = read_u64le((const unsigned char *)raw);
    assert_int_equal((8 + hlen) % 8, 0);
    assert_int_equal(raw_len, 8 + hlen + total);
    assert_true(strncmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\",", 31) == 0);
    assert_memory_equal(raw + 8 + hlen, all, total);
    size_t end = 8 + hlen; /* padding: spaces after the closing brace, fewer than 8 */
    while (raw[end - 1] == ' ') end--;
    assert_int_equal(raw[end - 1], '}');
    assert_true(8 + hlen - end < 8);
    free(raw);

    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(path, &f));
    assert_int_equal((uintptr_t)qc_safetensors_get(f, 0)->data % 8, 0); /* mmap is page-aligned, 8 + N is 8k */
    assert_string_equal(qc_safetensors_meta(f, "format"), "pt");
    assert_string_equal(qc_safetensors_meta(f, "qcal.recipe"), "w4g128");
    assert_string_equal(qc_safetensors_meta(f, "qcal.seed"), "42");
    assert_int_equal(qc_safetensors_count(f), NT);
    uint64_t off = 0;
    for (int i = 0; i < NT; i++) {
        const qc_tensor *t = qc_safetensors_get(f, (size_t)i);
        assert_string_equal(t->name, decl[i].name);
        assert_ptr_equal(qc_safetensors_find(f, decl[i].name), t);
        assert_int_equal(t->dtype, decl[i].dt);
        assert_int_equal(t->ndim, decl[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], decl[i].shape[d]);
        assert_int_equal(t->nbytes, nbytes[i]);
        assert_int_equal(t->offset, off);
        assert_memory_equal(t->data, all + off, nbytes[i]);
        off += nbytes[i];
    }
    assert_int_equal(qc_safetensors_find(f, "scalar")->numel, 1);
    assert_int_equal(qc_safetensors_find(f, "empty")->numel, 0);
    float v[24];
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_get(f, 1), 0, 7, v));
    for (int i = 0; i < 7; i++) QC_CHECK_NEAR(v[i], 0.1f * (float)i, 1e-3);
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_get(f, 2), 0, 24, v));
    for (int i = 0; i < 24; i++) assert_true(v[i] == -3.0f * (float)i); /* small integers: exact in BF16 */
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "f64"), 0, 3, v));
    for (int i = 0; i < 3; i++) assert_true(v[i] == (float)(1e-3 * (double)(i + 1)));
    QC_CHECK_OK(qc_tensor_read_f32(qc_safetensors_find(f, "empty"), 0, 0, v));
    qc_safetensors_free(f);
    free(all);
}

/* More than the writer's buffer, in chunks smaller and larger than it. */
static void test_writer_large(void **state) {
    (void)state;
    const int64_t rows = 1000, cols = 700; /* 2.8 MB of F32 */
    size_t n = (size_t)(rows * cols);
    float *a = malloc(n * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++) a[i] = (float)i * 0.5f;
    const char *path = tpath("large.safetensors");
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "big", QC_DTYPE_F32, 2, (int64_t[]){rows, cols}));
    QC_CHECK_OK(qc_st_writer_add(w, "tail", QC_DTYPE_U8, 1, (int64_t[]){3}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    const unsigned char *b = (const unsigned char *)a;
    size_t chunks[] = {100, 1u << 20, 5, (3u << 19) + 1, n * 4 - 100 - (1u << 20) - 5 - (3u << 19) - 1};
    for (size_t i = 0, at = 0; i < 5; at += chunks[i], i++) QC_CHECK_OK(qc_st_writer_write(w, b + at, chunks[i]));
    QC_CHECK_OK(qc_st_writer_write(w, "xyz", 3));
    QC_CHECK_OK(qc_st_writer_finish(w));
    qc_weights *ws;
    QC_CHECK_OK(qc_weights_open(path, &ws));
    const qc_tensor *t = qc_weights_find(ws, "big");
    float *back = malloc(n * sizeof *back);
    assert_non_null(back);
    QC_CHECK_OK(qc_tensor_read_f32(t, 0, (int64_t)n, back));
    assert_memory_equal(back, a, n * sizeof *a);
    assert_memory_equal(qc_weights_find(ws, "tail")->data, "xyz", 3);
    assert_int_equal(qc_weights_total_bytes(ws), n * 4 + 3);
    qc_weights_free(ws);
    free(back);
    free(a);
}

static void test_writer_empty(void **state) {
    (void)state;
    const char *path = tpath("nothing.safetensors");
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_finish(w)); /* begin is implied */
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(path, &f));
    assert_int_equal(qc_safetensors_count(f), 0);
    assert_string_equal(qc_safetensors_meta(f, "format"), "pt");
    qc_safetensors_free(f);
}

/* The writer must have left nothing: neither path nor path.tmp. */
static void check_nothing_at(const char *path) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (exists(path)) fail_msg("%s exists after a failed write", path);
    if (exists(tmp)) fail_msg("%s exists after a failed write", tmp);
}

static void test_writer_bad_add(void **state) {
    (void)state;
    const char *path = tpath("badadd.safetensors");
    qc_st_writer *w;
    struct { qc_dtype dt; int ndim; int64_t shape[9]; const char *name, *needle; } cases[] = {
        {QC_DTYPE_COUNT, 1, {1}, "w.dt", "'w.dt': bad dtype"},
        {(qc_dtype)-1, 1, {1}, "w.neg_dt", "'w.neg_dt': bad dtype"},
        {QC_DTYPE_F32, 1, {-3}, "w.negdim", "'w.negdim': shape[0] = -3"},
        {QC_DTYPE_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, "w.nine", "'w.nine': 9 dimensions"},
        {QC_DTYPE_F32, -1, {1}, "w.minus", "'w.minus': -1 dimensions"},
        {QC_DTYPE_F64, 2, {2147483648LL, 2147483648LL}, "w.huge", "'w.huge': size overflows"},
        {QC_DTYPE_F32, 1, {1}, "__metadata__", "reserved"},
        {QC_DTYPE_F32, 1, {1}, "bad\xff", "not UTF-8"},
        {QC_DTYPE_F32, 1, {1}, "", "empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        QC_CHECK_OK(qc_st_writer_create(path, &w));
        QC_CHECK_OK(qc_st_writer_add(w, "ok", QC_DTYPE_F32, 1, (int64_t[]){2}));
        QC_CHECK_FAILS(qc_st_writer_add(w, cases[i].name, cases[i].dt, cases[i].ndim, cases[i].shape), QC_ERR_ARG,
                       cases[i].needle);
        check_nothing_at(path);
        /* dead: everything else fails too */
        QC_CHECK_FAILS(qc_st_writer_add(w, "later", QC_DTYPE_F32, 1, (int64_t[]){1}), QC_ERR_ARG, "earlier error");
        QC_CHECK_FAILS(qc_st_writer_begin(w), QC_ERR_ARG, "earlier error");
        qc_st_writer_abort(w);
        check_nothing_at(path);
    }
    /* duplicate name, also among many (hash table growth) */
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    char name[32];
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "layers.%d.w", i);
        QC_CHECK_OK(qc_st_writer_add(w, name, QC_DTYPE_F16, 0, NULL));
    }
    QC_CHECK_FAILS(qc_st_writer_add(w, "layers.123.w", QC_DTYPE_F32, 1, (int64_t[]){1}), QC_ERR_ARG,
                   "'layers.123.w' added twice");
    QC_CHECK_FAILS(qc_st_writer_finish(w), QC_ERR_ARG, "earlier error"); /* frees w */
    check_nothing_at(path);
}

static void test_writer_short_write(void **state) {
    (void)state;
    const char *path = tpath("short_w.safetensors");
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "first", QC_DTYPE_F32, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_add(w, "second", QC_DTYPE_F32, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_add(w, "third", QC_DTYPE_F32, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    float v[3] = {1, 2, 3};
    QC_CHECK_OK(qc_st_writer_write(w, v, sizeof v));
    QC_CHECK_FAILS(qc_st_writer_finish(w), QC_ERR_ARG, "12 of 24 data bytes written: tensor 'second' and 1 after it");
    check_nothing_at(path);
}

static void test_writer_overrun_and_order(void **state) {
    (void)state;
    const char *path = tpath("overrun.safetensors");
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "only", QC_DTYPE_F16, 1, (int64_t[]){2}));
    QC_CHECK_FAILS(qc_st_writer_write(w, "abcd", 4), QC_ERR_ARG, "write before begin");
    qc_st_writer_abort(w);
    check_nothing_at(path);

    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "only", QC_DTYPE_F16, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    QC_CHECK_FAILS(qc_st_writer_add(w, "late", QC_DTYPE_F16, 1, (int64_t[]){2}), QC_ERR_ARG, "'late' added after begin");
    qc_st_writer_abort(w);

    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "only", QC_DTYPE_F16, 1, (int64_t[]){2}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    QC_CHECK_OK(qc_st_writer_write(w, "ab", 2));
    QC_CHECK_FAILS(qc_st_writer_write(w, "cdef", 4), QC_ERR_ARG, "overruns the declared data by 2 bytes");
    check_nothing_at(path);
    QC_CHECK_FAILS(qc_st_writer_finish(w), QC_ERR_ARG, "earlier error");
    check_nothing_at(path);
}

static void test_writer_abort_keeps_old_file(void **state) {
    (void)state;
    const char *path = tpath("keep.safetensors");
    write_shard(qc_test_tmpdir(), "keep.safetensors", (const char *[]){"old"}, 1);
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    QC_CHECK_OK(qc_st_writer_add(w, "new", QC_DTYPE_F32, 1, (int64_t[]){1000}));
    QC_CHECK_OK(qc_st_writer_begin(w));
    float z[10] = {0};
    QC_CHECK_OK(qc_st_writer_write(w, z, sizeof z));
    qc_st_writer_abort(w);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(exists(tmp));
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(path, &f));
    assert_non_null(qc_safetensors_find(f, "old"));
    assert_null(qc_safetensors_find(f, "new"));
    qc_safetensors_free(f);

    qc_st_writer_abort(NULL);
    QC_CHECK_FAILS(qc_st_writer_create(tpath("no-such-dir/x.safetensors"), &w), QC_ERR_IO, "no-such-dir/x.safetensors.tmp");
}

/* ---- real files (../shared/data) ---- */

static void test_real_stories_f32(void **state) {
    (void)state;
    char *dir = qc_test_require("stories260K/model.safetensors");
    free(dir);
    dir = qc_test_require("stories260K");
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_count(w), 47);
    assert_int_equal(qc_weights_total_bytes(w), 260032 * 4);
    const qc_tensor *t = qc_weights_find(w, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, QC_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 64);
    t = qc_weights_find(w, "model.layers.0.mlp.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 172);
    t = qc_weights_find(w, "model.norm.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 64);
    assert_null(qc_weights_find(w, "lm_head.weight")); /* tied */
    for (size_t i = 1; i < qc_weights_count(w); i++)
        assert_true(strcmp(qc_weights_get(w, i - 1)->name, qc_weights_get(w, i)->name) < 0);
    /* single-file API on the same file */
    char *p = qc_path_join(dir, "model.safetensors");
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(p, &f));
    assert_int_equal(qc_safetensors_count(f), 47);
    assert_string_equal(qc_safetensors_meta(f, "format"), "pt");
    assert_string_equal(qc_safetensors_get(f, 0)->name, "model.embed_tokens.weight");
    qc_safetensors_free(f);
    free(p);
    qc_weights_free(w);
    free(dir);
}

/* Every tensor of `variant` against the F32 original, within rel*|ref| + abs. */
static void compare_to_f32(const char *variant, qc_dtype dt, double rel, double abs_tol) {
    char *dv = qc_test_require(variant); /* first: a skip must not leave the other path allocated */
    char *d32 = qc_test_require("stories260K");
    qc_weights *w32, *wv;
    QC_CHECK_OK(qc_weights_open(d32, &w32));
    QC_CHECK_OK(qc_weights_open(dv, &wv));
    assert_int_equal(qc_weights_count(wv), 47);
    assert_int_equal(qc_weights_total_bytes(wv), 260032 * 2);
    double worst = 0;
    for (size_t i = 0; i < qc_weights_count(w32); i++) {
        const qc_tensor *a = qc_weights_get(w32, i), *b = qc_weights_get(wv, i);
        assert_string_equal(a->name, b->name);
        assert_int_equal(b->dtype, dt);
        assert_int_equal(a->ndim, b->ndim);
        for (int k = 0; k < a->ndim; k++) assert_int_equal(a->shape[k], b->shape[k]);
        float *x = malloc((size_t)a->numel * sizeof *x), *y = malloc((size_t)a->numel * sizeof *y);
        assert_true(x && y);
        QC_CHECK_OK(qc_tensor_read_f32(a, 0, a->numel, x));
        /* in two ranges, to exercise `first` */
        int64_t half = b->numel / 2;
        QC_CHECK_OK(qc_tensor_read_f32(b, 0, half, y));
        QC_CHECK_OK(qc_tensor_read_f32(b, half, b->numel - half, y + half));
        for (int64_t j = 0; j < a->numel; j++) {
            double err = fabs((double)y[j] - (double)x[j]), tol = rel * fabs((double)x[j]) + abs_tol;
            if (!(err <= tol))
                fail_msg("%s: %s[%" PRId64 "] = %.9g, F32 %.9g: |diff| %.3g > %.3g", variant, a->name, j, y[j], x[j],
                         err, tol);
            if (fabs(x[j]) > 1e-3 && err / fabs(x[j]) > worst) worst = err / fabs(x[j]);
        }
        free(x);
        free(y);
    }
    assert_true(worst > 0); /* the variant really is a different dtype, not a copy */
    qc_weights_free(w32);
    qc_weights_free(wv);
    free(d32);
    free(dv);
}

static void test_real_stories_f16(void **state) {
    (void)state;
    compare_to_f32("stories260K-fp16", QC_DTYPE_F16, F16_REL_TOL, F16_ABS_TOL);
}

static void test_real_stories_bf16(void **state) {
    (void)state;
    compare_to_f32("stories260K-bf16", QC_DTYPE_BF16, BF16_REL_TOL, BF16_ABS_TOL);
}

static void test_real_llama25m_sharded(void **state) {
    (void)state;
    char *dir = qc_test_require("qcal-llama-25m/model.safetensors.index.json");
    free(dir);
    dir = qc_test_require("qcal-llama-25m");
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_count(w), 74); /* embed + 8 layers x 9 + norm, tied head */
    assert_int_equal(qc_weights_total_bytes(w), 49754880); /* the index's metadata.total_size */
    const qc_tensor *t = qc_weights_find(w, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, QC_DTYPE_F16);
    assert_int_equal(t->shape[0], 32000);
    assert_int_equal(t->shape[1], 384);
    assert_non_null(strstr(t->file, "model-00001-of-00004.safetensors"));
    t = qc_weights_find(w, "model.layers.7.mlp.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 384);
    assert_int_equal(t->shape[1], 1024);
    assert_non_null(strstr(t->file, "model-00004-of-00004.safetensors"));
    t = qc_weights_find(w, "model.layers.3.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 128); /* 2 KV heads x 64 */
    assert_int_equal(t->shape[1], 384);
    /* whole embedding through the converter: finite, not all zero */
    float *x = malloc((size_t)qc_weights_find(w, "model.embed_tokens.weight")->numel * sizeof *x);
    assert_non_null(x);
    t = qc_weights_find(w, "model.embed_tokens.weight");
    QC_CHECK_OK(qc_tensor_read_f32(t, 0, t->numel, x));
    double sumsq = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        if (!isfinite(x[i])) fail_msg("embed[%" PRId64 "] = %g", i, x[i]);
        sumsq += (double)x[i] * x[i];
    }
    assert_true(sumsq > 0);
    free(x);
    qc_weights_free(w);
    free(dir);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_over_cap),
        cmocka_unit_test(test_header_past_eof),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_shape_overflow),
        cmocka_unit_test(test_span_mismatch),
        cmocka_unit_test(test_offsets_out_of_bounds),
        cmocka_unit_test(test_gap),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_unaligned_read),
        cmocka_unit_test(test_read_f32_exhaustive),
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_sharded_valid),
        cmocka_unit_test(test_sharded_escape),
        cmocka_unit_test(test_sharded_missing_shard),
        cmocka_unit_test(test_sharded_tensor_missing_in_shard),
        cmocka_unit_test(test_sharded_tensor_not_in_map),
        cmocka_unit_test(test_sharded_tensor_in_two_shards),
        cmocka_unit_test(test_sharded_bad_index),
        cmocka_unit_test(test_dir_fallbacks),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_writer_large),
        cmocka_unit_test(test_writer_empty),
        cmocka_unit_test(test_writer_bad_add),
        cmocka_unit_test(test_writer_short_write),
        cmocka_unit_test(test_writer_overrun_and_order),
        cmocka_unit_test(test_writer_abort_keeps_old_file),
    };
    /* Real files last: if ../shared/data is missing they exit 77 (skip), after the handcrafted tests ran. */
    const struct CMUnitTest data[] = {
        cmocka_unit_test(test_real_stories_f32),
        cmocka_unit_test(test_real_stories_f16),
        cmocka_unit_test(test_real_stories_bf16),
        cmocka_unit_test(test_real_llama25m_sharded),
    };
    int failed = cmocka_run_group_tests_name("safetensors", unit, NULL, NULL);
    if (failed) return 1;
    return cmocka_run_group_tests_name("safetensors (shared/data)", data, NULL, NULL) ? 1 : 0;
}
