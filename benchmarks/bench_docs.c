/* bench_docs.c - streaming throughput and memory of the document readers (datasets/docs.h).
 *
 *   bench_docs                      generate ~1 GB (uncompressed) of JSON lines, gzip level 1, in a temp
 *                                   dir from the real C4 documents of $QCAL_DATA/text/c4.utf8 (each copy
 *                                   numbered so no two documents are equal), read it, delete it
 *   bench_docs --mb 256             generate that many MB instead
 *   bench_docs FILE [--field F]     read an existing file (any format qc_docs reads)
 *   bench_docs --generate OUT       only write the generated file to OUT (used by bench_sampler.sh)
 *
 * Prints decoded MB/s (after decompression), compressed MB/s (file bytes), documents/s, and the peak RSS
 * of the process (the target is < 100 MB whatever the file size: the reader holds one document plus its
 * buffers). As a reference it also times zlib alone (gzread) over a generated file.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "docs.h"

#ifndef QCAL_DEFAULT_DATA
#define QCAL_DEFAULT_DATA "../shared/data"
#endif

#define MB (1024.0 * 1024.0)

/* s escaped for a JSON string (no quotes) at out; returns the bytes written (at most 6 * n). */
static size_t json_escape(char *out, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, 7, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    return k;
}

/* Writes ~target bytes of JSON lines (before compression) to path as gzip level 1; returns the number of
 * documents, or -1. */
static int64_t generate(const char *path, const char *c4_path, double target) {
    char *c4;
    size_t c4_len;
    if (qc_read_file(c4_path, 0, &c4, &c4_len) != QC_OK) {
        fprintf(stderr, "bench_docs: %s\n", qc_last_error());
        return -1;
    }
    /* the documents: one per line */
    size_t n_docs = 0, cap = 256;
    const char **doc = malloc(cap * sizeof *doc);
    size_t *len = malloc(cap * sizeof *len);
    size_t longest = 0;
    for (size_t i = 0; i < c4_len;) {
        size_t j = i;
        while (j < c4_len && c4[j] != '\n') j++;
        if (j > i) {
            if (n_docs == cap) {
                cap *= 2;
                doc = realloc(doc, cap * sizeof *doc);
                len = realloc(len, cap * sizeof *len);
            }
            doc[n_docs] = c4 + i;
            len[n_docs] = j - i;
            if (j - i > longest) longest = j - i;
            n_docs++;
        }
        i = j + 1;
    }
    if (n_docs == 0) {
        fprintf(stderr, "bench_docs: no documents in %s\n", c4_path);
        return -1;
    }
    gzFile gz = gzopen(path, "wb1");
    if (!gz) {
        fprintf(stderr, "bench_docs: cannot create %s\n", path);
        return -1;
    }
    gzbuffer(gz, 1 << 20);
    char *line = malloc(longest * 6 + 512);
    double written = 0;
    int64_t count = 0;
    while (written < target) {
        size_t i = (size_t)(count % (int64_t)n_docs);
        /* {"id": N, "url": "...", "text": "copy N: <document>"} */
        size_t k = (size_t)snprintf(line, 200, "{\"id\": %" PRId64 ", \"url\": \"https://example.com/c4/%zu\", "
                                    "\"text\": \"copy %" PRId64 ": ", count, i, count);
        k += json_escape(line + k, doc[i], len[i]);
        memcpy(line + k, "\"}\n", 3);
        k += 3;
        if (gzwrite(gz, line, (unsigned)k) != (int)k) {
            fprintf(stderr, "bench_docs: write failed on %s\n", path);
            gzclose(gz);
            return -1;
        }
        written += (double)k;
        count++;
    }
    if (gzclose(gz) != Z_OK) {
        fprintf(stderr, "bench_docs: close failed on %s\n", path);
        return -1;
    }
    free(line);
    free(doc);
    free(len);
    free(c4);
    return count;
}

/* zlib alone over the file: the floor any gzip reader pays. */
static double zlib_alone(const char *path, double *bytes) {
    gzFile gz = gzopen(path, "rb");
    if (!gz) return 0;
    gzbuffer(gz, 128 << 10);
    static char buf[256 << 10];
    double t0 = qc_time_now(), total = 0;
    int n;
    while ((n = gzread(gz, buf, sizeof buf)) > 0) total += n;
    gzclose(gz);
    *bytes = total;
    return qc_time_now() - t0;
}

int main(int argc, char **argv) {
    const char *file = NULL, *field = NULL, *gen_only = NULL;
    double mb = 1024;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc) mb = atof(argv[++i]);
        else if (strcmp(argv[i], "--generate") == 0 && i + 1 < argc) gen_only = argv[++i];
        else if (strcmp(argv[i], "--field") == 0 && i + 1 < argc) field = argv[++i];
        else if (argv[i][0] != '-') file = argv[i];
        else {
            fprintf(stderr, "usage: %s [FILE] [--field NAME] [--mb MB_TO_GENERATE] [--generate OUT.jsonl.gz]\n", argv[0]);
            return 2;
        }
    }
    char dir[512] = "", gen[600] = "";
    int64_t expect_docs = -1;
    if (!file) {
        const char *root = getenv("QCAL_DATA");
        if (!root || !*root) root = QCAL_DEFAULT_DATA;
        char c4[1024];
        snprintf(c4, sizeof c4, "%s/text/c4.utf8", root);
        if (!qc_file_exists(c4)) {
            fprintf(stderr, "bench_docs: %s not found (set QCAL_DATA, or give a file)\n", c4);
            return 77;
        }
        if (gen_only) { /* only write the file (for other benchmarks, e.g. the sampler's) */
            double t0 = qc_time_now();
            int64_t nd = generate(gen_only, c4, mb * MB);
            if (nd < 0) return 1;
            printf("generated %s: %" PRId64 " documents, %.0f MB of JSON lines, in %.1f s\n", gen_only, nd, mb,
                   qc_time_now() - t0);
            return 0;
        }
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/qcal-bench-docs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
        snprintf(gen, sizeof gen, "%s/c4-bench.jsonl.gz", dir);
        printf("generating %.0f MB of JSON lines (gzip level 1) from %s ...\n", mb, c4);
        fflush(stdout);
        double t0 = qc_time_now();
        expect_docs = generate(gen, c4, mb * MB);
        if (expect_docs < 0) return 1;
        printf("  %" PRId64 " documents in %.1f s\n", expect_docs, qc_time_now() - t0);
        file = gen;
    }

    qc_docs_opts o = {.format = QC_DOCS_AUTO, .field = field};
    qc_docs *r;
    double t0 = qc_time_now();
    if (qc_docs_open(file, &o, &r) != QC_OK) {
        fprintf(stderr, "bench_docs: %s\n", qc_last_error());
        return 1;
    }
    int64_t docs = 0;
    double text_bytes = 0;
    size_t longest = 0;
    const char *d;
    size_t n;
    qc_status st;
    while ((st = qc_docs_next(r, &d, &n)) == QC_OK && d) {
        docs++;
        text_bytes += (double)n;
        if (n > longest) longest = n;
    }
    double dt = qc_time_now() - t0;
    if (st != QC_OK) {
        fprintf(stderr, "bench_docs: %s\n", qc_last_error());
        qc_docs_free(r);
        return 1;
    }
    uint64_t in, out;
    qc_docs_bytes(r, &in, &out);
    qc_docs_format fmt = qc_docs_format_of(r);
    qc_docs_free(r);
    size_t rss = qc_peak_rss();

    printf("read %s (%s)\n", file, qc_docs_format_name(fmt));
    printf("  documents        %" PRId64 " (longest %zu bytes), %.1f MB of document text\n", docs, longest,
           text_bytes / MB);
    printf("  time             %.2f s\n", dt);
    printf("  decoded          %.1f MB  -> %.1f MB/s\n", (double)out / MB, (double)out / MB / dt);
    printf("  compressed       %.1f MB  -> %.1f MB/s\n", (double)in / MB, (double)in / MB / dt);
    printf("  documents/s      %.0f\n", (double)docs / dt);
    printf("  peak RSS         %.1f MB (target < 100 MB)\n", (double)rss / MB);
    int rc = 0;
    if (expect_docs >= 0 && docs != expect_docs) {
        fprintf(stderr, "bench_docs: read %" PRId64 " documents, generated %" PRId64 "\n", docs, expect_docs);
        rc = 1;
    }
    if (gen[0]) {
        double zb = 0, zt = zlib_alone(gen, &zb);
        if (zt > 0) printf("  zlib alone       %.1f MB decoded in %.2f s -> %.1f MB/s (reference)\n", zb / MB, zt, zb / MB / zt);
        unlink(gen);
        rmdir(dir);
    }
    if (rss > (size_t)(100 * MB)) {
        fprintf(stderr, "bench_docs: peak RSS %.1f MB is over the 100 MB target\n", (double)rss / MB);
        rc = 1;
    }
    return rc;
}
