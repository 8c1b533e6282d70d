/* safetensors.c - reader (one validating parser behind mmap and the fuzzer) and streamed writer.
 * The byte layout and the rules a file must follow are in safetensors.h. */
#include "safetensors.h"
#include "qc_signal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format is little-endian; loads below copy bytes straight into host integers and floats. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_INT   ((UINT64_C(1) << 53) - 1) /* JSON numbers are doubles: larger integers are not exact */
#define ST_SUFFIX    ".safetensors"
#define ST_INDEX     "model.safetensors.index.json"
#define ST_SINGLE    "model.safetensors"
#define ST_WBUF      (1u << 20)

/* ---- dtypes ---- */

static const struct { const char *name; size_t size; } g_dtypes[QC_DTYPE_COUNT] = {
    [QC_DTYPE_F32] = {"F32", 4}, [QC_DTYPE_F16] = {"F16", 2}, [QC_DTYPE_BF16] = {"BF16", 2},
    [QC_DTYPE_I32] = {"I32", 4}, [QC_DTYPE_I64] = {"I64", 8}, [QC_DTYPE_I8] = {"I8", 1},
    [QC_DTYPE_U8] = {"U8", 1},   [QC_DTYPE_F64] = {"F64", 8}, [QC_DTYPE_I16] = {"I16", 2},
    [QC_DTYPE_BOOL] = {"BOOL", 1},
};

/* In the safetensors spec, but not (yet) handled by qcal: QC_ERR_UNSUPPORTED rather than QC_ERR_FORMAT. */
static const char *const g_dtypes_unsupported[] = {
    "U16", "U32", "U64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

size_t qc_dtype_size(qc_dtype dt) { return (unsigned)dt < QC_DTYPE_COUNT ? g_dtypes[dt].size : 0; }

const char *qc_dtype_name(qc_dtype dt) { return (unsigned)dt < QC_DTYPE_COUNT ? g_dtypes[dt].name : "?"; }

bool qc_dtype_from_name(const char *name, qc_dtype *out) {
    if (!name) return false;
    for (int i = 0; i < QC_DTYPE_COUNT; i++) {
        if (strcmp(name, g_dtypes[i].name) == 0) {
            *out = (qc_dtype)i;
            return true;
        }
    }
    return false;
}

static bool dtype_in_spec(const char *name) {
    for (size_t i = 0; i < sizeof g_dtypes_unsupported / sizeof g_dtypes_unsupported[0]; i++)
        if (strcmp(name, g_dtypes_unsupported[i]) == 0) return true;
    return false;
}

/* ---- JSON text ---- */

/* Offset of the first byte that cannot appear in JSON text (invalid UTF-8: overlong, surrogate, past
 * U+10FFFF, truncated; or a raw control character other than tab/LF/CR), len if there is none. cJSON
 * checks neither, and it would silently treat control bytes as whitespace and NUL as the end. */
static size_t text_bad_byte(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return i;
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)      { n = 1; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (len - i <= n) return i;
        for (size_t k = 1; k <= n; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return i;
            cp = cp << 6 | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += n + 1;
    }
    return len;
}

/* Parses exactly one JSON value from text[0, len) followed by nothing but whitespace. `what` and `part`
 * name the file and the piece ("header", "index") in messages. */
static qc_status json_parse(const char *text, size_t len, const char *what, const char *part, cJSON **out) {
    *out = NULL;
    size_t bad = text_bad_byte((const unsigned char *)text, len);
    if (bad < len)
        return qc_fail(QC_ERR_FORMAT, "%s: %s is not JSON text: byte 0x%02x at offset %zu is a control "
                       "character or invalid UTF-8", what, part, (unsigned char)text[bad], bad);
    /* cJSON gets its own NUL-terminated copy so that no bug of its can read past the header. */
    char *buf = qc_malloc(len + 1);
    if (!buf) return qc_fail(QC_ERR_NOMEM, "%s: cannot allocate %zu bytes for the %s", what, len + 1, part);
    if (len) memcpy(buf, text, len);
    buf[len] = '\0';
    const char *end = NULL;
    size_t oom = qc_json_oom_count();
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    size_t pos = (end && end >= buf && end <= buf + len) ? (size_t)(end - buf) : len;
    if (!root) {
        free(buf);
        if (qc_json_oom_count() != oom) return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing the %s", what, part);
        return qc_fail(QC_ERR_FORMAT, "%s: %s is not valid JSON (error at byte %zu of %zu)", what, part, pos, len);
    }
    while (pos < len && (buf[pos] == ' ' || buf[pos] == '\t' || buf[pos] == '\n' || buf[pos] == '\r')) pos++;
    free(buf);
    if (pos != len) {
        cJSON_Delete(root);
        return qc_fail(QC_ERR_FORMAT, "%s: %s has trailing bytes after the JSON value (at byte %zu of %zu)",
                       what, part, pos, len);
    }
    *out = root;
    return QC_OK;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > (double)ST_MAX_INT) return false;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return false;
    *out = u;
    return true;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* numel and nbytes of a shape, false on overflow of int64 (numel) or uint64 (bytes). */
static bool shape_size(const int64_t *shape, int ndim, size_t esize, int64_t *numel, uint64_t *nbytes) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return false;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return false;
        n *= shape[i];
    }
    if ((uint64_t)n > UINT64_MAX / esize) return false;
    *numel = n;
    *nbytes = (uint64_t)n * esize;
    return true;
}

/* ---- one file ---- */

typedef struct st_meta { const char *key, *value; } st_meta;

struct qc_safetensors {
    char       *path;
    qc_tensor  *tensors;  /* header order */
    size_t      n;
    qc_tensor **by_name;  /* sorted by name */
    st_meta    *meta;     /* sorted by key */
    size_t      n_meta;
    char       *strings;  /* arena: tensor names, metadata keys and values */
    void       *map;      /* whole file, NULL for parse-only */
    size_t      map_len;
};

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const qc_tensor *const *)a)->name, (*(const qc_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const qc_tensor *x = *(const qc_tensor *const *)a, *y = *(const qc_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static char *arena_put(char **cursor, const char *s) {
    char *d = *cursor;
    size_t n = strlen(s) + 1;
    memcpy(d, s, n);
    *cursor += n;
    return d;
}

static qc_status parse_metadata(qc_safetensors *f, const cJSON *m, char **cursor) {
    const char *what = f->path;
    if (!cJSON_IsObject(m))
        return qc_fail(QC_ERR_FORMAT, "%s: __metadata__ is not a JSON object of strings", what);
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !c->valuestring)
            return qc_fail(QC_ERR_FORMAT, "%s: __metadata__ value of key '%s' is not a string", what, c->string);
        f->meta[f->n_meta].key = arena_put(cursor, c->string);
        f->meta[f->n_meta].value = arena_put(cursor, c->valuestring);
        f->n_meta++;
    }
    qsort(f->meta, f->n_meta, sizeof *f->meta, cmp_meta);
    for (size_t i = 1; i < f->n_meta; i++)
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
            return qc_fail(QC_ERR_FORMAT, "%s: __metadata__ has key '%s' twice", what, f->meta[i].key);
    return QC_OK;
}

static qc_status parse_tensor(const cJSON *e, const char *what, uint64_t data_len, qc_tensor *t) {
    const char *name = t->name;
    if (!cJSON_IsObject(e))
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", what, name);
    const cJSON *jd = NULL, *js = NULL, *jo = NULL;
    for (const cJSON *c = e->child; c; c = c->next) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0 ? &jd
                           : strcmp(c->string, "shape") == 0 ? &js
                           : strcmp(c->string, "data_offsets") == 0 ? &jo : NULL;
        if (!slot) continue;
        if (*slot) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': key '%s' appears twice", what, name, c->string);
        *slot = c;
    }

    if (!jd) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': no dtype", what, name);
    if (!cJSON_IsString(jd) || !jd->valuestring)
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", what, name);
    if (!qc_dtype_from_name(jd->valuestring, &t->dtype)) {
        if (dtype_in_spec(jd->valuestring))
            return qc_fail(QC_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not supported by qcal", what, name,
                           jd->valuestring);
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", what, name, jd->valuestring);
    }

    if (!js) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': no shape", what, name);
    if (!cJSON_IsArray(js)) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': shape is not an array", what, name);
    int nd = 0;
    for (const cJSON *c = js->child; c; c = c->next) {
        if (nd == QC_ST_MAX_DIMS)
            return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': shape has more than %d dimensions", what, name,
                           QC_ST_MAX_DIMS);
        uint64_t d;
        if (!json_uint(c, &d))
            return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer below 2^53",
                           what, name, nd);
        t->shape[nd++] = (int64_t)d;
    }
    t->ndim = nd;
    char sbuf[256];
    if (!shape_size(t->shape, nd, qc_dtype_size(t->dtype), &t->numel, &t->nbytes)) {
        shape_str(t->shape, nd, sbuf, sizeof sbuf);
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': shape %s x %zu bytes overflows", what, name, sbuf,
                       qc_dtype_size(t->dtype));
    }

    if (!jo) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': no data_offsets", what, name);
    uint64_t off[2];
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &off[0]) ||
        !json_uint(jo->child->next, &off[1]))
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                       what, name);
    if (off[0] > off[1])
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they "
                       "begin", what, name, off[0], off[1]);
    if (off[1] - off[0] != t->nbytes) {
        shape_str(t->shape, nd, sbuf, sizeof sbuf);
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                       " bytes but %s %s needs %" PRIu64, what, name, off[0], off[1], off[1] - off[0],
                       qc_dtype_name(t->dtype), sbuf, t->nbytes);
    }
    if (off[1] > data_len)
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] out of bounds "
                       "(the data section is %" PRIu64 " bytes)", what, name, off[0], off[1], data_len);
    t->offset = off[0];
    return QC_OK;
}

/* Sorted by begin, the tensors must tile [0, data_len) exactly. */
static qc_status check_tiling(qc_safetensors *f, uint64_t data_len) {
    qc_tensor **by_off = malloc((f->n ? f->n : 1) * sizeof *by_off);
    if (!by_off) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n; i++) by_off[i] = &f->tensors[i];
    qsort(by_off, f->n, sizeof *by_off, cmp_tensor_offset);
    uint64_t cursor = 0;
    const qc_tensor *prev = NULL; /* the tensor ending at cursor */
    qc_status st = QC_OK;
    for (size_t i = 0; i < f->n && st == QC_OK; i++) {
        const qc_tensor *t = by_off[i];
        if (t->offset > cursor)
            st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': gap of %" PRIu64 " bytes before it (data_offsets begin "
                         "at %" PRIu64 ", the previous tensor ends at %" PRIu64 ")", f->path, t->name,
                         t->offset - cursor, t->offset, cursor);
        else if (t->offset < cursor)
            st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor "
                         "'%s'", f->path, t->name, t->offset, t->offset + t->nbytes, prev ? prev->name : "?");
        cursor = t->offset + t->nbytes;
        if (t->nbytes) prev = t;
    }
    if (st == QC_OK && cursor != data_len)
        st = qc_fail(QC_ERR_FORMAT, "%s: %" PRIu64 " bytes of the data section after %s%s%s belong to no tensor",
                     f->path, data_len - cursor, prev ? "tensor '" : "the header", prev ? prev->name : "",
                     prev ? "'" : "");
    free(by_off);
    return st;
}

qc_status qc_safetensors_parse(const char *json, size_t json_len, uint64_t data_len, const char *what,
                               qc_safetensors **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_safetensors_parse: out is NULL");
    *out = NULL;
    if (!what) what = "<safetensors header>";
    if (!json && json_len) return qc_fail(QC_ERR_ARG, "%s: header is NULL", what);
    if (json_len > QC_ST_MAX_HEADER)
        return qc_fail(QC_ERR_FORMAT, "%s: header is %zu bytes, over the %u-byte cap", what, json_len,
                       QC_ST_MAX_HEADER);

    cJSON *root;
    qc_status st = json_parse(json ? json : "", json_len, what, "header", &root);
    if (st != QC_OK) return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return qc_fail(QC_ERR_FORMAT, "%s: header is not a JSON object", what);
    }

    /* Sizes first, so names and metadata go into one arena. */
    size_t n_tensors = 0, n_meta = 0, n_chars = 0;
    const cJSON *meta = NULL;
    st = QC_OK;
    for (const cJSON *c = root->child; c; c = c->next) {
        n_chars += strlen(c->string) + 1;
        if (strcmp(c->string, "__metadata__") != 0) {
            n_tensors++;
            continue;
        }
        if (meta) {
            st = qc_fail(QC_ERR_FORMAT, "%s: header has __metadata__ twice", what);
            break;
        }
        meta = c;
        for (const cJSON *m = cJSON_IsObject(c) ? c->child : NULL; m; m = m->next) {
            n_meta++;
            n_chars += strlen(m->string) + 1 + (cJSON_IsString(m) && m->valuestring ? strlen(m->valuestring) : 0) + 1;
        }
    }
    qc_safetensors *f = NULL;
    if (st == QC_OK) {
        f = calloc(1, sizeof *f);
        if (f) {
            f->path = qc_strdup(what);
            f->tensors = qc_calloc(n_tensors, sizeof *f->tensors);
            f->by_name = qc_calloc(n_tensors, sizeof *f->by_name);
            f->meta = qc_calloc(n_meta, sizeof *f->meta);
            f->strings = qc_malloc(n_chars);
        }
        if (!f || !f->path || !f->tensors || !f->by_name || !f->meta || !f->strings)
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory for %zu tensors", what, n_tensors);
    }
    char *cursor = f ? f->strings : NULL;
    if (st == QC_OK && meta) st = parse_metadata(f, meta, &cursor);
    for (const cJSON *c = root->child; c && st == QC_OK; c = c->next) {
        if (c == meta) continue;
        qc_tensor *t = &f->tensors[f->n];
        t->name = arena_put(&cursor, c->string);
        t->file = f->path;
        st = parse_tensor(c, f->path, data_len, t);
        f->by_name[f->n] = t;
        f->n++;
    }
    cJSON_Delete(root);
    if (st == QC_OK) {
        qsort(f->by_name, f->n, sizeof *f->by_name, cmp_tensor_name);
        for (size_t i = 1; i < f->n && st == QC_OK; i++)
            if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
                st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", what, f->by_name[i]->name);
    }
    if (st == QC_OK) st = check_tiling(f, data_len);
    if (st != QC_OK) {
        qc_safetensors_free(f);
        return st;
    }
    *out = f;
    return QC_OK;
}

qc_status qc_safetensors_open(const char *path, qc_safetensors **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_safetensors_open: out is NULL");
    *out = NULL;
    if (!path) return qc_fail(QC_ERR_ARG, "qc_safetensors_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qc_fail(QC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return qc_fail(QC_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return qc_fail(QC_ERR_FORMAT, "%s: file is %" PRIu64 " bytes, too short for the 8-byte header length",
                       path, size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return qc_fail(QC_ERR_IO, "%s: %" PRIu64 " bytes do not fit in the address space", path, size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return qc_fail(QC_ERR_IO, "%s: mmap of %" PRIu64 " bytes failed: %s", path, size, strerror(err));

    uint64_t hlen;
    memcpy(&hlen, map, 8);
    qc_status st;
    qc_safetensors *f = NULL;
    if (hlen > QC_ST_MAX_HEADER)
        st = qc_fail(QC_ERR_FORMAT, "%s: header length %" PRIu64 " is over the %u-byte cap", path, hlen,
                     QC_ST_MAX_HEADER);
    else if (hlen > size - 8)
        st = qc_fail(QC_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%" PRIu64
                     " bytes)", path, hlen, size);
    else
        st = qc_safetensors_parse((const char *)map + 8, (size_t)hlen, size - 8 - hlen, path, &f);
    if (st != QC_OK) {
        munmap(map, (size_t)size);
        return st;
    }
    f->map = map;
    f->map_len = (size_t)size;
    qc_mmap_register(map, (size_t)size, path); /* a SIGBUS in it is reported naming the file */
    const char *data = (const char *)map + 8 + hlen;
    for (size_t i = 0; i < f->n; i++) f->tensors[i].data = data + f->tensors[i].offset;
    *out = f;
    return QC_OK;
}

void qc_safetensors_free(qc_safetensors *f) {
    if (!f) return;
    if (f->map) {
        qc_mmap_unregister(f->map);
        munmap(f->map, f->map_len);
    }
    free(f->path);
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f);
}

size_t qc_safetensors_count(const qc_safetensors *f) { return f ? f->n : 0; }

const qc_tensor *qc_safetensors_get(const qc_safetensors *f, size_t i) {
    return f && i < f->n ? &f->tensors[i] : NULL;
}

static const qc_tensor *find_sorted(qc_tensor *const *v, size_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid]->name, name);
        if (c == 0) return v[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const qc_tensor *qc_safetensors_find(const qc_safetensors *f, const char *name) {
    return f && name ? find_sorted(f->by_name, f->n, name) : NULL;
}

const char *qc_safetensors_meta(const qc_safetensors *f, const char *key) {
    if (!f || !key) return NULL;
    st_meta k = {key, NULL};
    const st_meta *m = bsearch(&k, f->meta, f->n_meta, sizeof *f->meta, cmp_meta);
    return m ? m->value : NULL;
}

size_t qc_safetensors_meta_count(const qc_safetensors *f) { return f ? f->n_meta : 0; }

/* ---- a model directory ---- */

struct qc_weights {
    qc_safetensors **files;
    size_t           n_files;
    qc_tensor      **sorted; /* every tensor of every file, by name */
    size_t           n;
    uint64_t         total;
};

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Why a weight_map file name could leave the model directory or is not a shard, NULL if it is fine. */
static const char *shard_name_problem(const char *s) {
    if (!*s) return "is empty";
    if (s[0] == '/') return "is an absolute path";
    if (strchr(s, '/') || strchr(s, '\\')) return "contains a path separator";
    if (strstr(s, "..")) return "contains \"..\"";
    if (strlen(s) <= strlen(ST_SUFFIX) || !ends_with(s, ST_SUFFIX)) return "does not end in " ST_SUFFIX;
    return NULL;
}

static qc_status weights_add_file(qc_weights *w, const char *path) {
    qc_safetensors **v = realloc(w->files, (w->n_files + 1) * sizeof *v);
    if (!v) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    w->files = v;
    qc_status st = qc_safetensors_open(path, &w->files[w->n_files]);
    if (st == QC_OK) w->n_files++;
    return st;
}

typedef struct map_entry {
    const char *tensor;
    const char *shard;
    size_t      shard_idx;
    bool        found;
} map_entry;

static int cmp_map_entry(const void *a, const void *b) {
    return strcmp(((const map_entry *)a)->tensor, ((const map_entry *)b)->tensor);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static qc_status weights_open_sharded(qc_weights *w, const char *dir, const char *index) {
    char *text = NULL;
    size_t len = 0;
    qc_status st = qc_read_file(index, QC_ST_MAX_HEADER, &text, &len);
    if (st != QC_OK) return st;
    cJSON *root = NULL;
    st = json_parse(text, len, index, "index", &root);
    free(text);
    if (st != QC_OK) return st;

    map_entry *e = NULL;
    const char **shards = NULL;
    size_t n = 0, n_shards = 0;
    const cJSON *wm = NULL;
    if (!cJSON_IsObject(root)) {
        st = qc_fail(QC_ERR_FORMAT, "%s: index is not a JSON object", index);
        goto done;
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "weight_map") != 0) continue;
        if (wm) {
            st = qc_fail(QC_ERR_FORMAT, "%s: weight_map appears twice", index);
            goto done;
        }
        wm = c;
    }
    if (!wm || !cJSON_IsObject(wm)) {
        st = qc_fail(QC_ERR_FORMAT, "%s: no weight_map object", index);
        goto done;
    }
    for (const cJSON *c = wm->child; c; c = c->next) n++;
    if (n == 0) {
        st = qc_fail(QC_ERR_FORMAT, "%s: weight_map lists no tensors", index);
        goto done;
    }
    e = calloc(n, sizeof *e);
    shards = calloc(n, sizeof *shards);
    if (!e || !shards) {
        st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", index);
        goto done;
    }
    size_t i = 0;
    for (const cJSON *c = wm->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c) || !c->valuestring) {
            st = qc_fail(QC_ERR_FORMAT, "%s: weight_map entry for tensor '%s' is not a file name", index, c->string);
            goto done;
        }
        const char *why = shard_name_problem(c->valuestring);
        if (why) {
            st = qc_fail(QC_ERR_FORMAT, "%s: weight_map file '%s' for tensor '%s' %s (shards must be plain file "
                         "names in %s)", index, c->valuestring, c->string, why, dir);
            goto done;
        }
        e[i].tensor = c->string;
        e[i].shard = c->valuestring;
        shards[i] = c->valuestring;
    }
    qsort(e, n, sizeof *e, cmp_map_entry);
    for (i = 1; i < n; i++) {
        if (strcmp(e[i - 1].tensor, e[i].tensor) == 0) {
            st = qc_fail(QC_ERR_FORMAT, "%s: weight_map lists tensor '%s' twice", index, e[i].tensor);
            goto done;
        }
    }
    qsort(shards, n, sizeof *shards, cmp_str);
    for (i = 0; i < n; i++)
        if (n_shards == 0 || strcmp(shards[n_shards - 1], shards[i]) != 0) shards[n_shards++] = shards[i];
    for (i = 0; i < n; i++) {
        const char **s = bsearch(&e[i].shard, shards, n_shards, sizeof *shards, cmp_str);
        QC_ASSERT(s);
        e[i].shard_idx = (size_t)(s - shards);
    }

    for (size_t k = 0; k < n_shards; k++) {
        char *path = qc_path_join(dir, shards[k]);
        if (!path) {
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", index);
            goto done;
        }
        if (!qc_file_exists(path)) {
            const char *example = "?";
            for (i = 0; i < n; i++)
                if (e[i].shard_idx == k) { example = e[i].tensor; break; }
            st = qc_fail(QC_ERR_FORMAT, "%s: shard '%s' (for tensor '%s') is not a file in %s",
                         index, shards[k], example, dir);
        } else {
            st = weights_add_file(w, path);
        }
        free(path);
        if (st != QC_OK) goto done;
        const qc_safetensors *f = w->files[w->n_files - 1];
        for (size_t t = 0; t < f->n; t++) {
            map_entry key = {.tensor = f->tensors[t].name};
            map_entry *m = bsearch(&key, e, n, sizeof *e, cmp_map_entry);
            if (!m) {
                st = qc_fail(QC_ERR_FORMAT, "%s: shard '%s' holds tensor '%s', which the weight_map does not list",
                             index, shards[k], key.tensor);
                goto done;
            }
            if (m->shard_idx != k) {
                st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is in shard '%s' but the weight_map assigns it to '%s'",
                             index, key.tensor, shards[k], m->shard);
                goto done;
            }
            m->found = true;
        }
    }
    for (i = 0; i < n; i++) {
        if (!e[i].found) {
            st = qc_fail(QC_ERR_FORMAT, "%s: weight_map assigns tensor '%s' to shard '%s', which does not hold it",
                         index, e[i].tensor, e[i].shard);
            goto done;
        }
    }
done:
    free(e);
    free(shards);
    cJSON_Delete(root);
    return st;
}

/* Neither an index nor model.safetensors: the only *.safetensors file in dir. */
static qc_status weights_open_lone(qc_weights *w, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return qc_fail(QC_ERR_IO, "%s: cannot list directory: %s", dir, strerror(errno));
    char *found = NULL;
    size_t count = 0;
    qc_status st = QC_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ST_SUFFIX)) continue;
        char *path = qc_path_join(dir, de->d_name);
        if (!path) {
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        if (!qc_file_exists(path)) {
            free(path);
            continue;
        }
        if (++count == 1) found = path;
        else free(path);
    }
    closedir(d);
    if (st == QC_OK && count == 0)
        st = qc_fail(QC_ERR_IO, "%s: no " ST_INDEX ", " ST_SINGLE " or other *" ST_SUFFIX " file", dir);
    else if (st == QC_OK && count > 1)
        st = qc_fail(QC_ERR_FORMAT, "%s: %zu *" ST_SUFFIX " files but no " ST_INDEX " to say how they fit together",
                     dir, count);
    if (st == QC_OK) st = weights_add_file(w, found);
    free(found);
    return st;
}

qc_status qc_weights_open(const char *dir, qc_weights **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_weights_open: out is NULL");
    *out = NULL;
    if (!dir || !*dir) return qc_fail(QC_ERR_ARG, "qc_weights_open: no model directory given");
    qc_weights *w = calloc(1, sizeof *w);
    if (!w) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", dir);
    qc_status st;
    if (qc_file_exists(dir)) {
        st = weights_add_file(w, dir);
    } else if (!qc_dir_exists(dir)) {
        st = qc_fail(QC_ERR_IO, "%s: no such file or directory", dir);
    } else {
        char *index = qc_path_join(dir, ST_INDEX), *single = qc_path_join(dir, ST_SINGLE);
        if (!index || !single) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", dir);
        else if (qc_file_exists(index)) st = weights_open_sharded(w, dir, index);
        else if (qc_file_exists(single)) st = weights_add_file(w, single);
        else st = weights_open_lone(w, dir);
        free(index);
        free(single);
    }

    if (st == QC_OK) {
        for (size_t i = 0; i < w->n_files; i++) w->n += w->files[i]->n;
        w->sorted = qc_calloc(w->n, sizeof *w->sorted);
        if (!w->sorted) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory for %zu tensors", dir, w->n);
    }
    if (st == QC_OK) {
        size_t k = 0;
        for (size_t i = 0; i < w->n_files; i++)
            for (size_t j = 0; j < w->files[i]->n; j++) {
                w->sorted[k++] = &w->files[i]->tensors[j];
                w->total += w->files[i]->tensors[j].nbytes;
            }
        qsort(w->sorted, w->n, sizeof *w->sorted, cmp_tensor_name);
        /* Within a file the parser rules duplicates out, across shards the index check does: a bug if hit,
         * but cheap to report rather than assert. */
        for (size_t i = 1; i < w->n && st == QC_OK; i++)
            if (strcmp(w->sorted[i - 1]->name, w->sorted[i]->name) == 0)
                st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s", dir, w->sorted[i]->name,
                             w->sorted[i - 1]->file, w->sorted[i]->file);
    }
    if (st != QC_OK) {
        qc_weights_free(w);
        return st;
    }
    *out = w;
    return QC_OK;
}

void qc_weights_free(qc_weights *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_files; i++) qc_safetensors_free(w->files[i]);
    free(w->files);
    free(w->sorted);
    free(w);
}

size_t qc_weights_count(const qc_weights *w) { return w ? w->n : 0; }

const qc_tensor *qc_weights_get(const qc_weights *w, size_t i) { return w && i < w->n ? w->sorted[i] : NULL; }

const qc_tensor *qc_weights_find(const qc_weights *w, const char *name) {
    return w && name ? find_sorted(w->sorted, w->n, name) : NULL;
}

uint64_t qc_weights_total_bytes(const qc_weights *w) { return w ? w->total : 0; }

/* ---- conversion ---- */

/* F16 -> F32 through a table of all 65536 values, filled once from qc_fp16_to_f32 (the reference), so it
 * is exact by construction; about 5x faster than a call per element. 256 KiB, built on first use. */
static float g_f16_table[1 << 16];
static pthread_once_t g_f16_once = PTHREAD_ONCE_INIT;

static void f16_table_init(void) {
    for (uint32_t i = 0; i < (1u << 16); i++) g_f16_table[i] = qc_fp16_to_f32((uint16_t)i);
}

qc_status qc_tensor_read_f32(const qc_tensor *t, int64_t first, int64_t count, float *dst) {
    if (!t) return qc_fail(QC_ERR_ARG, "qc_tensor_read_f32: no tensor");
    if (first < 0 || count < 0 || first > t->numel || count > t->numel - first)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s': elements [%" PRId64 ", %" PRId64 " + %" PRId64 ") are outside "
                       "its %" PRId64, t->file, t->name, first, first, count, t->numel);
    switch (t->dtype) {
    case QC_DTYPE_F32: case QC_DTYPE_F16: case QC_DTYPE_BF16: case QC_DTYPE_F64: break;
    default:
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not a floating type", t->file, t->name,
                       qc_dtype_name(t->dtype));
    }
    if (count == 0) return QC_OK;
    if (!dst) return qc_fail(QC_ERR_ARG, "%s: tensor '%s': no destination", t->file, t->name);
    if (!t->data) return qc_fail(QC_ERR_ARG, "%s: tensor '%s' has no data (header only)", t->file, t->name);

    /* The source may be unaligned for its dtype: every load is a memcpy (compiled to a plain load). */
    const unsigned char *src = (const unsigned char *)t->data + (size_t)first * qc_dtype_size(t->dtype);
    size_t n = (size_t)count;
    switch (t->dtype) {
    case QC_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case QC_DTYPE_F16:
        pthread_once(&g_f16_once, f16_table_init);
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = g_f16_table[h];
        }
        break;
    case QC_DTYPE_BF16: /* qc_bf16_to_f32 inlined: the high half of an F32 (the tests compare all 65536) */
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        break;
    case QC_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    default:
        QC_ASSERT(0);
    }
    return QC_OK;
}

/* ---- writer ---- */

typedef struct st_wentry {
    char    *name;
    qc_dtype dtype;
    int      ndim;
    int64_t  shape[QC_ST_MAX_DIMS];
    uint64_t nbytes;
} st_wentry;

enum { W_DECLARE, W_WRITING, W_FAILED };

struct qc_st_writer {
    char      *path, *tmp;
    int        fd;        /* -1 once closed */
    bool       created;   /* tmp was created by us: ours to remove */
    int        state;
    qc_status  failed_st; /* why it failed, repeated by later calls */
    st_wentry *e;
    size_t     n, cap;
    size_t    *hash;      /* open addressing over e: index + 1, 0 = empty; hash_cap a power of two */
    size_t     hash_cap;
    char     **meta;      /* key, value, key, value, ... in insertion order */
    size_t     n_meta;
    uint64_t   total;     /* declared data bytes */
    uint64_t   written;   /* data bytes received */
    uint64_t   file_size; /* predicted: 8 + header + total */
    unsigned char *buf;
    size_t     buf_len;
};

/* Puts the writer into the failed state (message already recorded): temp file closed and removed. */
static qc_status w_fail(qc_st_writer *w, qc_status st) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->created) unlink(w->tmp);
    w->created = false;
    w->state = W_FAILED;
    w->failed_st = st;
    return st;
}

static qc_status w_dead(const qc_st_writer *w) {
    return qc_fail(w->failed_st, "%s: an earlier error stopped this writer", w->path);
}

static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Slot of `name` in the hash table: its entry, or the empty slot where it would go. */
static size_t *hash_slot(const qc_st_writer *w, const char *name) {
    size_t mask = w->hash_cap - 1, i = (size_t)str_hash(name) & mask;
    while (w->hash[i] && strcmp(w->e[w->hash[i] - 1].name, name) != 0) i = (i + 1) & mask;
    return &w->hash[i];
}

static bool hash_grow(qc_st_writer *w) {
    size_t cap = w->hash_cap ? w->hash_cap * 2 : 64;
    size_t *h = calloc(cap, sizeof *h);
    if (!h) return false;
    free(w->hash);
    w->hash = h;
    w->hash_cap = cap;
    for (size_t i = 0; i < w->n; i++) *hash_slot(w, w->e[i].name) = i + 1;
    return true;
}

/* Names and metadata go into the header verbatim (only '"' and '\\' escaped), so they must be text. */
static bool w_text_ok(const char *s) { return text_bad_byte((const unsigned char *)s, strlen(s)) == strlen(s); }

static qc_status w_raw(qc_st_writer *w, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(w->fd, c, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return w_fail(w, qc_fail(QC_ERR_IO, "%s: write failed: %s", w->tmp, strerror(errno)));
        }
        c += k;
        n -= (size_t)k;
    }
    return QC_OK;
}

static qc_status w_flush(qc_st_writer *w) {
    qc_status st = w_raw(w, w->buf, w->buf_len);
    w->buf_len = 0;
    return st;
}

static qc_status w_put(qc_st_writer *w, const void *p, size_t n) {
    if (w->buf_len + n <= ST_WBUF) {
        memcpy(w->buf + w->buf_len, p, n);
        w->buf_len += n;
        return QC_OK;
    }
    qc_status st = w_flush(w);
    if (st != QC_OK) return st;
    if (n >= ST_WBUF) return w_raw(w, p, n);
    memcpy(w->buf, p, n);
    w->buf_len = n;
    return QC_OK;
}

qc_status qc_st_writer_create(const char *path, qc_st_writer **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_st_writer_create: out is NULL");
    *out = NULL;
    if (!path || !*path) return qc_fail(QC_ERR_ARG, "qc_st_writer_create: no output path");
    qc_st_writer *w = calloc(1, sizeof *w);
    if (!w) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    w->fd = -1;
    w->path = qc_strdup(path);
    size_t n = strlen(path);
    w->tmp = malloc(n + 5);
    w->buf = malloc(ST_WBUF);
    w->meta = malloc(2 * sizeof *w->meta);
    if (!w->path || !w->tmp || !w->buf || !w->meta || !hash_grow(w)) {
        qc_st_writer_abort(w);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp", 5);
    w->meta[0] = qc_strdup("format");
    w->meta[1] = qc_strdup("pt");
    w->n_meta = 1;
    if (!w->meta[0] || !w->meta[1]) {
        qc_st_writer_abort(w);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        qc_status st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        qc_st_writer_abort(w);
        return st;
    }
    w->created = true;
    *out = w;
    return QC_OK;
}

qc_status qc_st_writer_add(qc_st_writer *w, const char *name, qc_dtype dtype, int ndim, const int64_t *shape) {
    if (!w) return qc_fail(QC_ERR_ARG, "qc_st_writer_add: no writer");
    if (w->state == W_FAILED) return w_dead(w);
    if (w->state != W_DECLARE)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s' added after begin", w->path, name ? name : "?"));
    if (!name || !*name || !w_text_ok(name))
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor name '%s' is empty or not UTF-8 text", w->path,
                                 name ? name : "(null)"));
    if (strcmp(name, "__metadata__") == 0)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: '__metadata__' is reserved, not a tensor name", w->path));
    if ((unsigned)dtype >= QC_DTYPE_COUNT)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s': bad dtype %d", w->path, name, (int)dtype));
    if (ndim < 0 || ndim > QC_ST_MAX_DIMS)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s': %d dimensions (0 to %d allowed)", w->path, name, ndim,
                                 QC_ST_MAX_DIMS));
    if (ndim > 0 && !shape)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s': shape is NULL", w->path, name));
    st_wentry e = {.dtype = dtype, .ndim = ndim};
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > ST_MAX_INT)
            return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s': shape[%d] = %" PRId64 " is out of range", w->path,
                                     name, i, shape[i]));
        e.shape[i] = shape[i];
    }
    int64_t numel;
    if (!shape_size(e.shape, ndim, qc_dtype_size(dtype), &numel, &e.nbytes) || e.nbytes > ST_MAX_INT - w->total)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s': size overflows", w->path, name));
    if (*hash_slot(w, name))
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: tensor '%s' added twice", w->path, name));
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_wentry *v = realloc(w->e, cap * sizeof *v);
        if (!v) return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory", w->path));
        w->e = v;
        w->cap = cap;
    }
    if (!(e.name = qc_strdup(name))) return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory", w->path));
    w->e[w->n++] = e;
    if (2 * w->n > w->hash_cap) {
        if (!hash_grow(w)) return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory", w->path));
    } else {
        *hash_slot(w, name) = w->n;
    }
    w->total += e.nbytes;
    return QC_OK;
}

qc_status qc_st_writer_set_meta(qc_st_writer *w, const char *key, const char *value) {
    if (!w) return qc_fail(QC_ERR_ARG, "qc_st_writer_set_meta: no writer");
    if (w->state == W_FAILED) return w_dead(w);
    if (w->state != W_DECLARE)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: metadata '%s' set after begin", w->path, key ? key : "?"));
    if (!key || !value || !w_text_ok(key) || !w_text_ok(value))
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: metadata key '%s' or its value is missing or not UTF-8 text",
                                 w->path, key ? key : "(null)"));
    char *v = qc_strdup(value);
    if (!v) return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory", w->path));
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[2 * i], key) == 0) {
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return QC_OK;
        }
    }
    char **m = realloc(w->meta, 2 * (w->n_meta + 1) * sizeof *m);
    char *k = qc_strdup(key);
    if (m) w->meta = m;
    if (!m || !k) {
        free(v);
        free(k);
        return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory", w->path));
    }
    w->meta[2 * w->n_meta] = k;
    w->meta[2 * w->n_meta + 1] = v;
    w->n_meta++;
    return QC_OK;
}

/* Growable header text. */
typedef struct sbuf { char *p; size_t len, cap; bool oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    sb_put(b, t, (size_t)snprintf(t, sizeof t, "%" PRIu64, v));
}

/* A JSON string; the text was checked to hold no control characters. */
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const char *r = s; *r; ) {
        size_t k = strcspn(r, "\"\\");
        sb_put(b, r, k);
        r += k;
        if (*r) {
            char esc[2] = {'\\', *r++};
            sb_put(b, esc, 2);
        }
    }
    sb_put(b, "\"", 1);
}

qc_status qc_st_writer_begin(qc_st_writer *w) {
    if (!w) return qc_fail(QC_ERR_ARG, "qc_st_writer_begin: no writer");
    if (w->state == W_FAILED) return w_dead(w);
    if (w->state != W_DECLARE) return w_fail(w, qc_fail(QC_ERR_ARG, "%s: begin called twice", w->path));

    sbuf b = {0};
    sb_str(&b, "{\"__metadata__\":{");
    for (size_t i = 0; i < w->n_meta; i++) {
        if (i) sb_str(&b, ",");
        sb_json(&b, w->meta[2 * i]);
        sb_str(&b, ":");
        sb_json(&b, w->meta[2 * i + 1]);
    }
    sb_str(&b, "}");
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_wentry *e = &w->e[i];
        sb_str(&b, ",");
        sb_json(&b, e->name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, qc_dtype_name(e->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_str(&b, ",");
            sb_u64(&b, (uint64_t)e->shape[d]);
        }
        sb_str(&b, "],\"data_offsets\":[");
        sb_u64(&b, off);
        sb_str(&b, ",");
        sb_u64(&b, off + e->nbytes);
        sb_str(&b, "]}");
        off += e->nbytes;
    }
    sb_str(&b, "}");
    while (!b.oom && (8 + b.len) % 8 != 0) sb_str(&b, " "); /* the data section starts 8-byte aligned */
    if (b.oom) {
        free(b.p);
        return w_fail(w, qc_fail(QC_ERR_NOMEM, "%s: out of memory for the header", w->path));
    }
    if (b.len > QC_ST_MAX_HEADER) {
        free(b.p);
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: header would be %zu bytes, over the %u-byte cap readers accept",
                                 w->path, b.len, QC_ST_MAX_HEADER));
    }
    QC_ASSERT(off == w->total);
    uint64_t hlen = b.len;
    qc_status st = w_put(w, &hlen, 8);
    if (st == QC_OK) st = w_put(w, b.p, b.len);
    free(b.p);
    if (st != QC_OK) return st;
    w->file_size = 8 + hlen + w->total;
    w->state = W_WRITING;
    return QC_OK;
}

/* The declared tensor the data byte at `pos` belongs to (w->n past the end). */
static size_t w_tensor_at(const qc_st_writer *w, uint64_t pos) {
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (pos < off + w->e[i].nbytes) return i;
        off += w->e[i].nbytes;
    }
    return w->n;
}

qc_status qc_st_writer_write(qc_st_writer *w, const void *data, size_t nbytes) {
    if (!w) return qc_fail(QC_ERR_ARG, "qc_st_writer_write: no writer");
    if (w->state == W_FAILED) return w_dead(w);
    if (w->state != W_WRITING) return w_fail(w, qc_fail(QC_ERR_ARG, "%s: write before begin", w->path));
    if (nbytes == 0) return QC_OK;
    if (!data) return w_fail(w, qc_fail(QC_ERR_ARG, "%s: write of %zu bytes from NULL", w->path, nbytes));
    if (nbytes > w->total - w->written)
        return w_fail(w, qc_fail(QC_ERR_ARG, "%s: writing %zu bytes overruns the declared data by %" PRIu64 " bytes "
                                 "(%zu tensors, %" PRIu64 " bytes)", w->path, nbytes,
                                 (uint64_t)nbytes - (w->total - w->written), w->n, w->total));
    qc_status st = w_put(w, data, nbytes);
    if (st != QC_OK) return st;
    w->written += nbytes;
    return QC_OK;
}

static void fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? qc_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : qc_strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: the rename itself already happened */
        close(fd);
    }
    free(dir);
}

static void w_free(qc_st_writer *w) {
    for (size_t i = 0; i < w->n; i++) free(w->e[i].name);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    free(w->e);
    free(w->hash);
    free(w->buf);
    free(w->path);
    free(w->tmp);
    free(w);
}

qc_status qc_st_writer_finish(qc_st_writer *w) {
    if (!w) return qc_fail(QC_ERR_ARG, "qc_st_writer_finish: no writer");
    qc_status st = QC_OK;
    if (w->state == W_FAILED) st = w_dead(w);
    if (st == QC_OK && w->state == W_DECLARE) st = qc_st_writer_begin(w);
    if (st == QC_OK && w->written != w->total) {
        size_t i = w_tensor_at(w, w->written);
        QC_ASSERT(i < w->n);
        st = w_fail(w, qc_fail(QC_ERR_ARG, "%s: finished with %" PRIu64 " of %" PRIu64 " data bytes written: tensor "
                               "'%s' and %zu after it are incomplete", w->path, w->written, w->total, w->e[i].name,
                               w->n - i - 1));
    }
    if (st == QC_OK) st = w_flush(w);
    if (st == QC_OK) {
        struct stat sb;
        if (fsync(w->fd) != 0)
            st = w_fail(w, qc_fail(QC_ERR_IO, "%s: fsync failed: %s", w->tmp, strerror(errno)));
        else if (fstat(w->fd, &sb) != 0 || (uint64_t)sb.st_size != w->file_size)
            st = w_fail(w, qc_fail(QC_ERR_IO, "%s: file is not the %" PRIu64 " bytes predicted", w->tmp, w->file_size));
    }
    if (st == QC_OK) {
        int rc = close(w->fd);
        w->fd = -1;
        if (rc != 0) st = w_fail(w, qc_fail(QC_ERR_IO, "%s: close failed: %s", w->tmp, strerror(errno)));
    }
    if (st == QC_OK && rename(w->tmp, w->path) != 0)
        st = w_fail(w, qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", w->tmp, w->path, strerror(errno)));
    if (st == QC_OK) fsync_parent_dir(w->path);
    w_free(w);
    return st;
}

void qc_st_writer_abort(qc_st_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->created) unlink(w->tmp);
    w_free(w);
}

void qc_mmap_drop_pages(const void *p, size_t n) {
    static size_t page = 0;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
    if (p && b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

void qc_tensor_drop_pages(const qc_tensor *t) {
    if (t && t->data) qc_mmap_drop_pages(t->data, (size_t)t->nbytes);
}
