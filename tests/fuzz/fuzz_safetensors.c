/* fuzz_safetensors.c - libFuzzer entry for qc_safetensors_parse, the one safetensors header parser.
 *
 * Input is laid out like a file: bytes [0, 8) are the little-endian header length N, the next N bytes the
 * JSON header, the rest the data section (the parser only sees its length). N is clamped to the bytes
 * present, so inputs without a plausible length still reach the JSON parser rather than being thrown away.
 *
 * A rejected input must come back with no object and a message; an accepted one must describe a valid
 * file. The invariants are checked here independently of the parser, and a violation aborts (a finding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct span { uint64_t begin, end; } span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void check_valid(const qc_safetensors *f, uint64_t data_len) {
    size_t n = qc_safetensors_count(f);
    QC_ASSERT(qc_safetensors_get(f, n) == NULL);
    span *s = malloc((n ? n : 1) * sizeof *s);
    QC_ASSERT(s);
    for (size_t i = 0; i < n; i++) {
        const qc_tensor *t = qc_safetensors_get(f, i);
        QC_ASSERT(t && t->name && t->file && strcmp(t->file, "fuzz") == 0 && t->data == NULL);
        QC_ASSERT(strcmp(t->name, "__metadata__") != 0);
        QC_ASSERT(qc_safetensors_find(f, t->name) == t); /* unique names, working lookup */
        QC_ASSERT((unsigned)t->dtype < QC_DTYPE_COUNT);
        QC_ASSERT(t->ndim >= 0 && t->ndim <= QC_ST_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            QC_ASSERT(t->shape[d] >= 0);
            QC_ASSERT(t->shape[d] == 0 || numel <= INT64_MAX / t->shape[d]);
            numel *= t->shape[d];
        }
        QC_ASSERT(t->numel == numel);
        QC_ASSERT(t->nbytes / qc_dtype_size(t->dtype) == (uint64_t)numel &&
                  t->nbytes % qc_dtype_size(t->dtype) == 0);
        QC_ASSERT(t->offset <= data_len && t->nbytes <= data_len - t->offset);
        s[i] = (span){t->offset, t->offset + t->nbytes};
    }
    qsort(s, n, sizeof *s, cmp_span);
    uint64_t cursor = 0;
    for (size_t i = 0; i < n; i++) {
        QC_ASSERT(s[i].begin == cursor);
        cursor = s[i].end;
    }
    QC_ASSERT(cursor == data_len);
    free(s);
    (void)qc_safetensors_meta(f, "format");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | data[i];
    size_t rest = size - 8;
    if (n > rest) n = rest;
    /* an exact-size copy, so ASan sees any read past the header */
    char *json = malloc(n ? (size_t)n : 1);
    if (!json) return 0;
    memcpy(json, data + 8, (size_t)n);
    qc_safetensors *f = (qc_safetensors *)&n; /* must be overwritten */
    qc_error_clear();
    qc_status st = qc_safetensors_parse(json, (size_t)n, rest - n, "fuzz", &f);
    free(json); /* the result must not point into the input */
    if (st != QC_OK) {
        QC_ASSERT(f == NULL);
        QC_ASSERT(qc_last_error()[0] != '\0');
        return 0;
    }
    QC_ASSERT(f != NULL);
    check_valid(f, rest - n);
    qc_safetensors_free(f);
    return 0;
}
