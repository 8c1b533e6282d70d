/* fuzz_docs.c - libFuzzer entry for the JSON document readers of datasets/docs.c, through qc_docs_open_mem:
 * the JSON-lines reader (fuzz.jsonl: one object per line) and the JSON array reader (fuzz.json: a scanner
 * that finds each element's extent, then cJSON on that element); every document is read to the end. Both
 * go through the byte-order-mark skip and, when the input starts with the gzip or zstd magic, the
 * streaming decompressors. The formats are given, not sniffed, so an input starting "PAR1" is not handed
 * to the Parquet reader (fuzz_parquet has that).
 *
 * Which reader: an input whose first byte after blanks (and a BOM) is '[' is read as a JSON array, any
 * other as JSON lines, and a compressed one both ways. Opening a reader costs two large buffers (384 KiB,
 * which under ASan means an mmap and its shadow), far more than the parse of a small input, and the
 * reader the input is not for stops at its first byte ("not a JSON array") or first line ("record is a
 * JSON array"), so reading each input once doubles the executions for what that skip loses.
 *
 * The input is copied into an exact-size buffer, so AddressSanitizer sees any read past its end. A
 * document must be readable to its last byte and be valid UTF-8; an error must carry a message naming the
 * file and be repeated by the next call (errors are sticky); the end must stay the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "docs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Documents read per pass at most: each costs at least a byte of input, so this only bounds inputs that
 * decompress to a great many. */
#define MAX_DOCS (1 << 16)

static volatile unsigned g_sink;

static bool utf8_ok(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 4;
        if (k == 4 || n - i <= k) return k == 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return false;
        i += k + 1;
    }
    return true;
}

static void read_all(const uint8_t *buf, size_t size, const char *name, qc_docs_format fmt) {
    qc_docs_opts o = {.format = fmt, .field = "text"};
    qc_docs *r = (qc_docs *)&size; /* must be overwritten */
    qc_error_clear();
    if (qc_docs_open_mem(buf, size, name, &o, &r) != QC_OK) {
        QC_ASSERT(r == NULL);
        QC_ASSERT(strstr(qc_last_error(), name) != NULL);
        return;
    }
    QC_ASSERT(r != NULL);
    QC_ASSERT(qc_docs_format_of(r) == fmt);
    unsigned sum = 0;
    int64_t n = 0;
    for (; n < MAX_DOCS; n++) {
        const char *doc = "x";
        size_t len = 1;
        qc_error_clear();
        qc_status st = qc_docs_next(r, &doc, &len);
        if (st != QC_OK) {
            QC_ASSERT(doc == NULL && len == 0);
            QC_ASSERT(strstr(qc_last_error(), name) != NULL);
            QC_ASSERT(qc_docs_next(r, &doc, &len) == st && doc == NULL); /* sticky */
            break;
        }
        if (!doc) {
            QC_ASSERT(len == 0);
            QC_ASSERT(qc_docs_next(r, &doc, &len) == QC_OK && doc == NULL); /* the end stays the end */
            break;
        }
        QC_ASSERT(len <= QC_DOCS_MAX_DOC);
        for (size_t i = 0; i < len; i++) sum += (unsigned char)doc[i]; /* ASan: the whole document */
        QC_ASSERT(utf8_ok((const uint8_t *)doc, len));
        QC_ASSERT(qc_docs_index(r) == n + 1);
    }
    uint64_t in = 0, out = 0;
    qc_docs_bytes(r, &in, &out);
    QC_ASSERT(in <= size);
    qc_docs_free(r);
    g_sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    bool zst = size >= 4 && data[0] == 0x28 && data[1] == 0xb5 && data[2] == 0x2f && data[3] == 0xfd;
    size_t i = size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    bool array = i < size && data[i] == '[';
    if (gz || zst || !array) read_all(copy, size, "fuzz.jsonl", QC_DOCS_JSONL);
    if (gz || zst || array) read_all(copy, size, "fuzz.json", QC_DOCS_JSON);
    free(copy);
    return 0;
}
