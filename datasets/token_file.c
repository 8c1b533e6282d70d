/* token_file.c - the QCALTOK1 file of calibration windows; the layout and the checks are token_file.h. */
#include "token_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool hex64(const uint8_t *p) {
    for (int i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return false;
    return true;
}

qc_status qc_token_file_write(const char *path, const qc_calib_set *set, const qc_token_file_info *info) {
    QC_ASSERT(set->nsamples >= 0 && set->seqlen > 0 && set->nsamples <= info->nsamples);
    if (info->nsamples > QC_TOKEN_FILE_MAX_WINDOWS || set->seqlen > QC_TOKEN_FILE_MAX_SEQLEN)
        return qc_fail(QC_ERR_ARG, "%s: %d x %d windows exceed the token file's limits", path, info->nsamples, set->seqlen);
    size_t n = (size_t)set->nsamples * (size_t)set->seqlen, size = QC_TOKEN_FILE_HEADER + 4 * n;
    uint8_t *b = calloc(1, size);
    if (!b) return qc_fail(QC_ERR_NOMEM, "out of memory");
    memcpy(b, QC_TOKEN_FILE_MAGIC, 8);
    put32(b + 8, (uint32_t)info->sampling);
    put32(b + 12, (uint32_t)info->nsamples);
    put32(b + 16, (uint32_t)set->nsamples);
    put32(b + 20, (uint32_t)set->seqlen);
    put32(b + 24, (uint32_t)info->seed);
    put32(b + 28, (uint32_t)(info->seed >> 32));
    memcpy(b + 32, set->sha256, 64);
    if (info->origin[0]) memcpy(b + 96, info->origin, 64);
    else memset(b + 96, '0', 64);
    for (size_t i = 0; i < n; i++) put32(b + QC_TOKEN_FILE_HEADER + 4 * i, (uint32_t)set->ids[i]);
    qc_status st = qc_write_file_atomic(path, b, size);
    free(b);
    return st;
}

static qc_status parse_header(const uint8_t *b, size_t len, const char *name, qc_token_file_info *info, int *windows,
                              int *seqlen, char sha[65]) {
    if (len < QC_TOKEN_FILE_HEADER || memcmp(b, QC_TOKEN_FILE_MAGIC, 8) != 0)
        return qc_fail(QC_ERR_FORMAT, "%s: not a qcal token file (no QCALTOK1 header)", name);
    uint32_t sampling = get32(b + 8), nsamples = get32(b + 12), w = get32(b + 16), T = get32(b + 20);
    if (sampling > QC_SAMPLING_AWQ) return qc_fail(QC_ERR_FORMAT, "%s: unknown sampling protocol %u", name, sampling);
    if (nsamples < 1 || nsamples > QC_TOKEN_FILE_MAX_WINDOWS || w < 1 || w > nsamples)
        return qc_fail(QC_ERR_FORMAT, "%s: %u windows of %u asked for: out of range", name, w, nsamples);
    if (sampling == QC_SAMPLING_GPTQ && w != nsamples)
        return qc_fail(QC_ERR_FORMAT, "%s: gptq sampling holds %u windows, not the %u asked for", name, w, nsamples);
    if (T < 1 || T > QC_TOKEN_FILE_MAX_SEQLEN) return qc_fail(QC_ERR_FORMAT, "%s: seqlen %u out of range", name, T);
    if (!hex64(b + 32) || !hex64(b + 96)) return qc_fail(QC_ERR_FORMAT, "%s: the header's hashes are not hex", name);
    if (info) {
        info->sampling = (qc_sampling)sampling;
        info->nsamples = (int)nsamples;
        info->seed = (uint64_t)get32(b + 24) | (uint64_t)get32(b + 28) << 32;
        memcpy(info->origin, b + 96, 64);
        info->origin[64] = '\0';
    }
    *windows = (int)w;
    *seqlen = (int)T;
    memcpy(sha, b + 32, 64);
    sha[64] = '\0';
    return QC_OK;
}

qc_status qc_token_file_parse(const void *buf, size_t len, const char *name, qc_calib_set *out, qc_token_file_info *info) {
    memset(out, 0, sizeof *out);
    const uint8_t *b = buf;
    int w, T;
    char sha[65];
    qc_status st = parse_header(b, len, name, info, &w, &T, sha);
    if (st) return st;
    size_t n = (size_t)w * (size_t)T; /* both <= 2^20: no overflow in 64 bits */
    if (len - QC_TOKEN_FILE_HEADER != 4 * n)
        return qc_fail(QC_ERR_FORMAT, "%s: %zu bytes of ids, expected %d x %d x 4 = %zu (truncated or padded)", name,
                       len - QC_TOKEN_FILE_HEADER, w, T, 4 * n);
    int32_t *ids = malloc(4 * n);
    if (!ids) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        uint32_t v = get32(b + QC_TOKEN_FILE_HEADER + 4 * i);
        if (v > INT32_MAX) {
            free(ids);
            return qc_fail(QC_ERR_FORMAT, "%s: window %zu, token %zu: negative id", name, i / (size_t)T, i % (size_t)T);
        }
        ids[i] = (int32_t)v;
    }
    qc_tokens_sha256(ids, n, out->sha256);
    if (strcmp(out->sha256, sha) != 0) {
        free(ids);
        st = qc_fail(QC_ERR_FORMAT, "%s: the ids' sha256 is %s, the header says %s (the file is corrupt)", name,
                     out->sha256, sha);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->ids = ids;
    out->nsamples = w;
    out->seqlen = T;
    return QC_OK;
}

qc_status qc_token_file_read(const char *path, qc_calib_set *out, qc_token_file_info *info) {
    memset(out, 0, sizeof *out);
    char *buf;
    size_t len;
    size_t cap = QC_TOKEN_FILE_HEADER + (size_t)4 * QC_TOKEN_FILE_MAX_WINDOWS * 4096; /* 16 GiB */
    qc_status st = qc_read_file(path, cap, &buf, &len);
    if (st) return st;
    st = qc_token_file_parse(buf, len, path, out, info);
    free(buf);
    return st;
}

qc_status qc_token_file_peek(const char *path, qc_token_file_info *info, char sha256[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return qc_fail(QC_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t b[QC_TOKEN_FILE_HEADER];
    size_t k = fread(b, 1, sizeof b, f);
    fclose(f);
    int w, T;
    return parse_header(b, k, path, info, &w, &T, sha256);
}
