#include "resume.h"
#include "pipeline_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define X_MAGIC "QCALX001"

typedef struct {
    char     magic[8];
    uint32_t boundary, d;
    uint64_t rows;
    uint8_t  pad[40];
} x_header; /* 64 bytes */

static char *path_in(const char *dir, const char *fmt, int i) {
    char name[64];
    snprintf(name, sizeof name, fmt, i);
    return qc_path_join(dir, name);
}

static qc_status write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return qc_fail(QC_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return QC_OK;
}

qc_status qc_resume_save_x(const char *dir, int boundary, const float *X, size_t rows, int d) {
    char *path = qc_path_join(dir, "x.bin"), *tmp = qc_path_join(dir, "x.bin.tmp");
    qc_status st = QC_OK;
    int fd = path && tmp ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (!path || !tmp) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    else if (fd < 0) st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    if (st == QC_OK) {
        x_header h;
        memset(&h, 0, sizeof h);
        memcpy(h.magic, X_MAGIC, 8);
        h.boundary = (uint32_t)boundary;
        h.d = (uint32_t)d;
        h.rows = rows;
        st = write_all(fd, &h, sizeof h, tmp);
        if (st == QC_OK && X) st = write_all(fd, X, rows * (size_t)d * sizeof(float), tmp);
        if (st == QC_OK && fsync(fd) != 0) st = qc_fail(QC_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    }
    if (fd >= 0 && close(fd) != 0 && st == QC_OK) st = qc_fail(QC_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == QC_OK && rename(tmp, path) != 0)
        st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
    if (st != QC_OK && tmp) unlink(tmp);
    if (st == QC_OK) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    free(path);
    free(tmp);
    return st;
}

static qc_status read_header(const char *path, int fd, x_header *h) {
    if (pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h || memcmp(h->magic, X_MAGIC, 8) != 0)
        return qc_fail(QC_ERR_FORMAT, "%s: not a qcal activation snapshot", path);
    return QC_OK;
}

qc_status qc_resume_peek(const char *dir, int *boundary) {
    *boundary = 0;
    char *path = qc_path_join(dir, "x.bin");
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    qc_status st = QC_OK;
    if (fd >= 0) {
        x_header h;
        if ((st = read_header(path, fd, &h)) == QC_OK) *boundary = (int)h.boundary;
        close(fd);
    }
    free(path);
    return st;
}

static qc_status load_layer_json(const char *dir, int li, qc_pipeline_result *res) {
    char *path = path_in(dir, "layer-%05d.json", li), *text = NULL;
    size_t len;
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = qc_read_file(path, 16u << 20, &text, &len);
    cJSON *j = st == QC_OK ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "linears");
    int n_rows = cJSON_GetArraySize(rows);
    if (st == QC_OK && (!cJSON_IsArray(rows) || n_rows > res->lin_stride))
        st = qc_fail(QC_ERR_FORMAT, "%s: not a layer report of qcal", path);
    for (int i = 0; st == QC_OK && i < n_rows; i++) {
        const cJSON *o = cJSON_GetArrayItem(rows, i);
        const cJSON *slot = cJSON_GetObjectItemCaseSensitive(o, "slot"); /* absent in 7-row reports: the row index */
        int l = cJSON_IsNumber(slot) ? slot->valueint : i;
        if (l < 0 || l >= res->lin_stride) {
            st = qc_fail(QC_ERR_FORMAT, "%s: row %d names slot %d, outside the model's %d", path, i, l, res->lin_stride);
            break;
        }
        qc_linear_report *r = &res->lin[(size_t)li * res->lin_stride + l];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name"), *why = cJSON_GetObjectItemCaseSensitive(o, "reason");
        if (!cJSON_IsString(nm)) {
            st = qc_fail(QC_ERR_FORMAT, "%s: linear %d has no name", path, l);
            break;
        }
#define NUM(key) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, key))
        r->layer = li;
        r->lin = (qc_linear_id)l;
        snprintf(r->name, sizeof r->name, "%s", nm->valuestring);
        snprintf(r->reason, sizeof r->reason, "%s", cJSON_IsString(why) ? why->valuestring : "");
        r->N = (int)NUM("N");
        r->K = (int)NUM("K");
        r->quantized = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "quantized"));
        r->rel_err = NUM("rel_err");
        r->damp = NUM("damp");
        r->retries = (int)NUM("retries");
        r->dead_cols = (int)NUM("dead_cols");
        r->seconds = NUM("seconds");
        r->awq_ratio = NUM("awq_ratio");
        double f = NUM("awq_formula"); /* absent (a state written before formulas were recorded): none */
        r->awq_formula = f == QC_AWQ_F_DUO ? QC_AWQ_F_DUO : f == QC_AWQ_F_X ? QC_AWQ_F_X : QC_AWQ_F_NONE;
        r->awq_loss = isfinite(NUM("awq_loss")) ? NUM("awq_loss") : 0.0;
        r->tokens = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "tokens")) ? (int64_t)NUM("tokens") : -1;
        const cJSON *cov = cJSON_GetObjectItemCaseSensitive(o, "coverage");
        snprintf(r->coverage, sizeof r->coverage, "%s", cJSON_IsString(cov) ? cov->valuestring : "");
#undef NUM
    }
    const cJSON *u;
    cJSON_ArrayForEach(u, cJSON_GetObjectItemCaseSensitive(j, "unquantized")) {
        if (st == QC_OK && cJSON_IsString(u)) st = qc_pl_push_str(&res->unquantized, &res->n_unq, u->valuestring);
    }
    cJSON_Delete(j);
    free(text);
    free(path);
    return st;
}

/* The decoder layer of a module path ("model.layers.7.mlp.up_proj", OPT "model.decoder.layers.7.fc1"): its first
 * dot-separated component made of digits; -1 if none. */
static int block_index(const char *path) {
    for (const char *p = path; *p;) {
        const char *e = strchr(p, '.');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        bool digits = n > 0 && n < 10;
        for (size_t k = 0; k < n && digits; k++) digits = p[k] >= '0' && p[k] <= '9';
        if (digits) return atoi(p);
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

qc_status qc_resume_save_layer(const char *dir, int li, const qc_pipeline_result *res) {
    cJSON *j = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(j, "linears");
    cJSON *unq = cJSON_AddArrayToObject(j, "unquantized");
    for (int l = 0; l < res->lin_stride; l++) {
        const qc_linear_report *r = &res->lin[(size_t)li * res->lin_stride + l];
        if (!r->name[0]) continue; /* a slot this layer does not have */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->name);
        cJSON_AddNumberToObject(o, "slot", l);
        cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
        cJSON_AddStringToObject(o, "coverage", r->coverage);
        cJSON_AddNumberToObject(o, "N", r->N);
        cJSON_AddNumberToObject(o, "K", r->K);
        cJSON_AddBoolToObject(o, "quantized", r->quantized);
        cJSON_AddStringToObject(o, "reason", r->reason);
        cJSON_AddNumberToObject(o, "rel_err", r->rel_err);
        cJSON_AddNumberToObject(o, "damp", r->damp);
        cJSON_AddNumberToObject(o, "retries", r->retries);
        cJSON_AddNumberToObject(o, "dead_cols", r->dead_cols);
        cJSON_AddNumberToObject(o, "seconds", r->seconds);
        cJSON_AddNumberToObject(o, "awq_ratio", r->awq_ratio);
        cJSON_AddNumberToObject(o, "awq_formula", r->awq_formula);
        cJSON_AddNumberToObject(o, "awq_loss", r->awq_loss);
        cJSON_AddItemToArray(rows, o);
    }
    /* the layer's kept-in-F16 modules, in the order the driver declared them */
    for (int i = 0; i < res->n_unq; i++)
        if (block_index(res->unquantized[i]) == li) cJSON_AddItemToArray(unq, cJSON_CreateString(res->unquantized[i]));
    char *s = cJSON_Print(j), *path = path_in(dir, "layer-%05d.json", li);
    cJSON_Delete(j);
    qc_status st = s && path ? qc_write_file_atomic(path, s, strlen(s)) : qc_fail(QC_ERR_NOMEM, "out of memory");
    free(s);
    free(path);
    return st;
}

qc_status qc_resume_load(const char *dir, int n_layers, size_t rows, int d, float *X, qc_pipeline_result *res,
                         int *start) {
    *start = 0;
    char *path = qc_path_join(dir, "x.bin");
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        free(path);
        return QC_OK; /* nothing to resume */
    }
    x_header h;
    qc_status st = read_header(path, fd, &h);
    if (st == QC_OK && (h.rows != rows || (int)h.d != d || h.boundary < 1 || (int)h.boundary > n_layers))
        st = qc_fail(QC_ERR_FORMAT, "%s: snapshot of [%llu, %u] at layer %u does not fit this run ([%zu, %d], %d layers)",
                     path, (unsigned long long)h.rows, h.d, h.boundary, rows, d, n_layers);
    /* after the last layer no layer needs X: the snapshot there is the header alone (qc_resume_save_x) */
    size_t bytes = st == QC_OK && (int)h.boundary == n_layers ? 0 : rows * (size_t)d * sizeof(float), got = 0;
    while (st == QC_OK && got < bytes) {
        ssize_t r = pread(fd, (char *)X + got, bytes - got > (1u << 30) ? (1u << 30) : bytes - got, (off_t)(sizeof h + got));
        if (r <= 0) st = qc_fail(QC_ERR_FORMAT, "%s: truncated activation snapshot", path);
        else got += (size_t)r;
    }
    close(fd);
    char *bp = qc_path_join(dir, "base.safetensors");
    if (st == QC_OK && (!bp || !qc_file_exists(bp))) st = qc_fail(QC_ERR_FORMAT, "%s: missing (the state is incomplete)", bp ? bp : dir);
    if (st == QC_OK) st = qc_pl_push_str(&res->parts, &res->n_parts, bp);
    free(bp);
    for (int li = 0; st == QC_OK && li < (int)h.boundary; li++) {
        char *pp = path_in(dir, "layer-%05d.safetensors", li);
        if (!pp || !qc_file_exists(pp)) st = qc_fail(QC_ERR_FORMAT, "%s: missing (the state is incomplete)", pp ? pp : dir);
        if (st == QC_OK) st = qc_pl_push_str(&res->parts, &res->n_parts, pp);
        if (st == QC_OK) st = load_layer_json(dir, li, res);
        free(pp);
    }
    if (st == QC_OK) *start = (int)h.boundary;
    free(path);
    return st;
}
