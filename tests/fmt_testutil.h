/*
 * fmt_testutil.h - helpers the checkpoint-format tests share (test_gptq_format.c, test_awq_format.c):
 * a seeded xorshift generator, fresh temp directories, small file and JSON utilities, bitwise float
 * comparison. Include after testutil.h; define FMT_TEST_SEED first to pick the generator's seed.
 */
#ifndef QC_FMT_TESTUTIL_H
#define QC_FMT_TESTUTIL_H

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "testutil.h"

#ifndef FMT_TEST_SEED
#error "define FMT_TEST_SEED before including fmt_testutil.h"
#endif

static uint64_t g_rng = FMT_TEST_SEED;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float rnd_unit(void) { return (float)(rnd() % 1000000) / 1000000.0f; }

static float fp16_round(float x) { return qc_fp16_to_f32(qc_f32_to_fp16(x)); }

/* A fresh directory under the test's temporary directory. */
static const char *new_dir(const char *name) {
    static char buf[8][1024];
    static int k, serial;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s-%d", qc_test_tmpdir(), name, serial++);
    if (mkdir(p, 0755) != 0) fail_msg("mkdir %s failed", p);
    return p;
}

static char *join(const char *a, const char *b) {
    char *p = qc_path_join(a, b);
    assert_non_null(p);
    return p;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fclose(f) != 0) fail_msg("cannot write %s", path);
}

static bool path_exists(const char *p) {
    struct stat sb;
    return lstat(p, &sb) == 0;
}

static cJSON *read_json(const char *path) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!j) fail_msg("%s is not valid JSON", path);
    return j;
}

/* Entries of `dir` whose name starts with `prefix`. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void check_float_equal(const float *a, const float *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu: %.9g != %.9g", what, i, (double)a[i], (double)b[i]);
}

#endif
