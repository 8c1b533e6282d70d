/* fuzz_st_index.c - libFuzzer entry for the sharded-checkpoint index, model.safetensors.index.json, as
 * qc_weights_open reads it (weights_open_sharded in formats/safetensors.c): the JSON text check, the
 * weight_map walk, the shard file-name rules, duplicate tensors, and the cross-check of the map against
 * the tensors the shards hold.
 *
 * qc_weights_open only takes a directory, so the input is written as the index file of a private
 * temporary directory, made once per process (removed at exit) with these shards beside it:
 *   model-00001-of-00002.safetensors   a F32 [2], b F16 [3]
 *   model-00002-of-00002.safetensors   c BF16 [2,1], d I32 [1]
 *   empty.safetensors                  no tensors
 *   broken.safetensors                 a header that is not JSON
 *   dir.safetensors/                   a directory, not a file
 * so an index that names the right shards for the right tensors loads, and every way of getting it wrong
 * is reachable. A rejected index must come back with no object and a message; a loaded one must list
 * each tensor once, sorted, findable, inside this directory and readable to its last byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static char g_dir[64];

static void quiet(qc_log_level level, const char *msg, void *user) { (void)level, (void)msg, (void)user; }

static char *in_dir(const char *name) {
    char *p = qc_path_join(g_dir, name);
    QC_ASSERT(p != NULL);
    return p;
}

static void put(const char *name, const void *p, size_t n) {
    char *path = in_dir(name);
    FILE *f = fopen(path, "wb");
    QC_ASSERT(f != NULL);
    QC_ASSERT(n == 0 || fwrite(p, 1, n, f) == n);
    QC_ASSERT(fclose(f) == 0);
    free(path);
}

static void raw_shard(const char *name, const char *header) {
    size_t n = strlen(header);
    uint8_t buf[64];
    QC_ASSERT(8 + n <= sizeof buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, header, n);
    put(name, buf, 8 + n);
}

static void shard(const char *name, const char *t1, qc_dtype d1, int nd1, const int64_t *s1, const char *t2,
                  qc_dtype d2, int nd2, const int64_t *s2) {
    static const uint8_t bytes[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    char *path = in_dir(name);
    qc_st_writer *w;
    QC_ASSERT(qc_st_writer_create(path, &w) == QC_OK);
    QC_ASSERT(qc_st_writer_add(w, t1, d1, nd1, s1) == QC_OK);
    QC_ASSERT(qc_st_writer_add(w, t2, d2, nd2, s2) == QC_OK);
    QC_ASSERT(qc_st_writer_begin(w) == QC_OK);
    int64_t n1 = 1, n2 = 1;
    for (int i = 0; i < nd1; i++) n1 *= s1[i];
    for (int i = 0; i < nd2; i++) n2 *= s2[i];
    QC_ASSERT(qc_st_writer_write(w, bytes, (size_t)n1 * qc_dtype_size(d1)) == QC_OK);
    QC_ASSERT(qc_st_writer_write(w, bytes, (size_t)n2 * qc_dtype_size(d2)) == QC_OK);
    QC_ASSERT(qc_st_writer_finish(w) == QC_OK);
    free(path);
}

static void cleanup(void) {
    static const char *const files[] = {"model.safetensors.index.json", SHARD1, SHARD2, "empty.safetensors",
                                        "broken.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = in_dir(files[i]);
        unlink(p);
        free(p);
    }
    char *d = in_dir("dir.safetensors");
    rmdir(d);
    free(d);
    rmdir(g_dir);
}

static void setup(void) {
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/qcal-fuzz-idx-XXXXXX", tmp);
    QC_ASSERT(mkdtemp(g_dir) != NULL);
    atexit(cleanup);
    qc_log_set(quiet, NULL);
    shard(SHARD1, "a", QC_DTYPE_F32, 1, (int64_t[]){2}, "b", QC_DTYPE_F16, 1, (int64_t[]){3});
    shard(SHARD2, "c", QC_DTYPE_BF16, 2, (int64_t[]){2, 1}, "d", QC_DTYPE_I32, 1, (int64_t[]){1});
    raw_shard("empty.safetensors", "{}");
    raw_shard("broken.safetensors", "{\"a\":");
    char *d = in_dir("dir.safetensors");
    QC_ASSERT(mkdir(d, 0700) == 0);
    free(d);
}

static volatile unsigned g_sink;

static void check_valid(const qc_weights *w) {
    size_t n = qc_weights_count(w), dlen = strlen(g_dir);
    QC_ASSERT(n >= 1 && n <= 4);
    QC_ASSERT(qc_weights_get(w, n) == NULL);
    uint64_t total = 0;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        const qc_tensor *t = qc_weights_get(w, i);
        QC_ASSERT(t && t->name && t->file);
        QC_ASSERT(i == 0 || strcmp(qc_weights_get(w, i - 1)->name, t->name) < 0); /* sorted, unique */
        QC_ASSERT(qc_weights_find(w, t->name) == t);
        QC_ASSERT(strncmp(t->file, g_dir, dlen) == 0 && t->file[dlen] == '/');
        QC_ASSERT(strcmp(t->file + dlen + 1, SHARD1) == 0 || strcmp(t->file + dlen + 1, SHARD2) == 0);
        QC_ASSERT(t->data != NULL || t->nbytes == 0);
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++) sum += p[k]; /* ASan: inside the mapping */
        total += t->nbytes;
    }
    QC_ASSERT(total == qc_weights_total_bytes(w));
    g_sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) setup();
    put("model.safetensors.index.json", data, size);
    qc_weights *w = (qc_weights *)&size; /* must be overwritten */
    qc_error_clear();
    if (qc_weights_open(g_dir, &w) != QC_OK) {
        QC_ASSERT(w == NULL);
        QC_ASSERT(qc_last_error()[0] != '\0');
        return 0;
    }
    QC_ASSERT(w != NULL);
    check_valid(w);
    qc_weights_free(w);
    return 0;
}
