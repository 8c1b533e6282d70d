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
#include <string.h>
#include <sys/stat.h>

#include "gptq_format.h"
#include "safetensors.h"
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

/* ---- part shards (ckpt_write.h) ---- */

/* Rewrites the part src as dst the way the pipeline writes its parts: floating tensors as F16 (unless
 * keep_float), __metadata__ "format": "pt" plus pairs[0..n) and, with extra, one key more. */
static void write_pipeline_part(const char *src, const char *dst, const qc_meta_pair *pairs, int n, bool keep_float,
                                bool extra) {
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(src, &f));
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(dst, &w));
    for (int i = 0; i < n; i++) QC_CHECK_OK(qc_st_writer_set_meta(w, pairs[i][0], pairs[i][1]));
    if (extra) QC_CHECK_OK(qc_st_writer_set_meta(w, "qcal_layer", "7"));
    const size_t nt = qc_safetensors_count(f);
    for (size_t i = 0; i < nt; i++) {
        const qc_tensor *t = qc_safetensors_get(f, i);
        bool conv = !keep_float && (t->dtype == QC_DTYPE_F32 || t->dtype == QC_DTYPE_BF16);
        QC_CHECK_OK(qc_st_writer_add(w, t->name, conv ? QC_DTYPE_F16 : t->dtype, t->ndim, t->shape));
    }
    QC_CHECK_OK(qc_st_writer_begin(w));
    for (size_t i = 0; i < nt; i++) {
        const qc_tensor *t = qc_safetensors_get(f, i);
        if (keep_float || (t->dtype != QC_DTYPE_F32 && t->dtype != QC_DTYPE_BF16)) {
            QC_CHECK_OK(qc_st_writer_write(w, t->data, (size_t)t->nbytes));
            continue;
        }
        float *x = malloc((size_t)t->numel * sizeof *x);
        uint16_t *h = malloc((size_t)t->numel * sizeof *h);
        assert_true(x && h);
        QC_CHECK_OK(qc_tensor_read_f32(t, 0, t->numel, x));
        for (int64_t k = 0; k < t->numel; k++) h[k] = qc_f32_to_fp16(x[k]);
        QC_CHECK_OK(qc_st_writer_write(w, h, (size_t)t->numel * 2));
        free(x);
        free(h);
    }
    QC_CHECK_OK(qc_st_writer_finish(w));
    qc_safetensors_free(f);
}

/* Tensor bytes of a safetensors file. */
static uint64_t st_data_bytes(const char *path) {
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(path, &f));
    uint64_t b = 0;
    for (size_t i = 0; i < qc_safetensors_count(f); i++) b += qc_safetensors_get(f, i)->nbytes;
    qc_safetensors_free(f);
    return b;
}

static bool same_inode(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static bool same_bytes(const char *a, const char *b) {
    char *x, *y;
    size_t lx, ly;
    QC_CHECK_OK(qc_read_file(a, 0, &x, &lx));
    QC_CHECK_OK(qc_read_file(b, 0, &y, &ly));
    bool same = lx == ly && memcmp(x, y, lx) == 0;
    free(x);
    free(y);
    return same;
}

/* The checkpoint out was written from the n parts as part shards: shard i is parts[i] (the same inode, or
 * with `copied` the same bytes in another inode), the index maps each part's tensors to its shard and
 * nothing else, every shard opens with the validating reader. */
static void check_part_shards(const char *out, char *const *parts, int n, bool copied) {
    char *p = join(out, "model.safetensors");
    assert_false(path_exists(p));
    free(p);
    assert_int_equal(count_prefixed(out, "model-"), n);
    p = join(out, "model.safetensors.index.json");
    cJSON *idx = read_json(p);
    free(p);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    int entries = 0;
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i + 1, n);
        char *s = join(out, name);
        if (copied) {
            if (same_inode(s, parts[i])) fail_msg("%s: linked to %s, expected a copy", s, parts[i]);
            if (!same_bytes(s, parts[i])) fail_msg("%s: not byte-identical to %s", s, parts[i]);
        } else if (!same_inode(s, parts[i])) {
            fail_msg("%s: not a hard link of %s", s, parts[i]);
        }
        qc_safetensors *f, *g;
        QC_CHECK_OK(qc_safetensors_open(s, &f));
        QC_CHECK_OK(qc_safetensors_open(parts[i], &g));
        assert_int_equal(qc_safetensors_count(f), qc_safetensors_count(g));
        for (size_t t = 0; t < qc_safetensors_count(g); t++) {
            const char *nm = qc_safetensors_get(g, t)->name;
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(map, nm);
            if (!cJSON_IsString(m) || strcmp(m->valuestring, name) != 0)
                fail_msg("index: '%s' -> %s, expected %s", nm, cJSON_IsString(m) ? m->valuestring : "(none)", name);
            assert_non_null(qc_safetensors_find(f, nm));
            entries++;
        }
        qc_safetensors_free(f);
        qc_safetensors_free(g);
        free(s);
    }
    assert_int_equal(cJSON_GetArraySize(map), entries);
    cJSON_Delete(idx);
}

/* The copy layout: the shards' tensors, read in shard then header order, are sorted by name, and no shard
 * shares an inode with a part. */
static void check_copy_layout(const char *out, char *const *parts, int n) {
    int n_shards = count_prefixed(out, "model-");
    char *single = join(out, "model.safetensors");
    bool one = path_exists(single);
    assert_true(one != (n_shards > 0));
    char prev[256] = "";
    for (int i = 0; i < (one ? 1 : n_shards); i++) {
        char name[64];
        if (one) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i + 1, n_shards);
        char *s = join(out, name);
        for (int k = 0; k < n; k++)
            if (same_inode(s, parts[k])) fail_msg("%s: a hard link of %s in the copy layout", s, parts[k]);
        qc_safetensors *f;
        QC_CHECK_OK(qc_safetensors_open(s, &f));
        for (size_t t = 0; t < qc_safetensors_count(f); t++) {
            const char *nm = qc_safetensors_get(f, t)->name;
            if (strcmp(prev, nm) >= 0) fail_msg("%s: '%s' after '%s': not the sorted copy layout", s, nm, prev);
            snprintf(prev, sizeof prev, "%s", nm);
        }
        qc_safetensors_free(f);
        free(s);
    }
    free(single);
}

#endif
