/* ckpt_write.c - the format-neutral checkpoint writer shared by GPTQ and AWQ (contract in ckpt_write.h,
 * spec A.5-A.7, B.5). The directory is assembled in <out>.tmp-XXXXXX next to <out> and renamed into place
 * only when every file is written, fsynced and re-read. */
#include "ckpt_write.h"
#include "qc_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ckpt_write.c writes host integers as safetensors data, which is little-endian"
#endif

/* ---- part files ---- */

static qc_status part_layout(const char *path, const char *prefix, const qc_qlinear *q, const qc_part_format *fmt,
                             qc_part_tensor *t, size_t *nbytes) {
    const char *why = NULL;
    if (!fmt->layout(q, t, &why))
        return qc_fail(QC_ERR_ARG, "%s: module '%s' (N = %d, K = %d, bits = %d, group_size = %d): %s", path, prefix,
                       q->N, q->K, q->bits, q->group_size, why ? why : "not storable");
    for (int i = 0; i < fmt->n_tensors; i++) {
        size_t n = qc_dtype_size(t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            if (t[i].shape[d] < 1 || !qc_mul_ok(n, (size_t)t[i].shape[d], &n))
                return qc_fail(QC_ERR_ARG, "%s: tensor '%s.%s' is too large", path, prefix, t[i].suffix);
        nbytes[i] = n;
    }
    return QC_OK;
}

static qc_status declare_linear(qc_st_writer *w, const char *path, const char *prefix, const qc_qlinear *q,
                                const qc_part_format *fmt) {
    char name[1024];
    qc_part_tensor t[QC_PART_MAX_TENSORS + 1];
    size_t nbytes[QC_PART_MAX_TENSORS];
    qc_status st = part_layout(path, prefix, q, fmt, t, nbytes);
    if (st != QC_OK) return st;
    int n = fmt->n_tensors;
    if (q->bias) t[n++] = (qc_part_tensor){"bias", QC_DTYPE_F16, 1, {q->N, 0}};
    for (int i = 0; i < n; i++) {
        if ((size_t)snprintf(name, sizeof name, "%s.%s", prefix, t[i].suffix) >= sizeof name)
            return qc_fail(QC_ERR_ARG, "module name '%s' is too long", prefix);
        if ((st = qc_st_writer_add(w, name, t[i].dtype, t[i].ndim, t[i].shape)) != QC_OK) return st;
    }
    return QC_OK;
}

static qc_status write_linear(qc_st_writer *w, const char *path, const char *prefix, const qc_qlinear *q,
                              const qc_part_format *fmt) {
    qc_part_tensor t[QC_PART_MAX_TENSORS];
    size_t nbytes[QC_PART_MAX_TENSORS];
    void *bufs[QC_PART_MAX_TENSORS] = {0};
    const size_t N = (size_t)q->N;
    uint16_t *bias16 = NULL;
    qc_status st = part_layout(path, prefix, q, fmt, t, nbytes);
    if (st != QC_OK) return st;
    bool ok = !q->bias || (bias16 = qc_malloc(N * 2));
    for (int i = 0; i < fmt->n_tensors; i++) ok &= (bufs[i] = qc_malloc(nbytes[i])) != NULL;
    if (!ok) {
        st = qc_fail(QC_ERR_NOMEM, "%s: out of memory packing '%s'", path, prefix);
        goto done;
    }
    if ((st = fmt->pack(q, fmt->user, bufs)) != QC_OK) {
        qc_error_prefix("%s: module '%s'", path, prefix);
        goto done;
    }
    for (size_t n = 0; q->bias && n < N; n++) {
        bias16[n] = qc_f32_to_fp16(q->bias[n]);
        if ((bias16[n] & 0x7c00u) == 0x7c00u) {
            st = qc_fail(QC_ERR_NUMERIC, "%s: tensor '%s.bias': bias[%zu] = %g is not finite in fp16", path, prefix, n,
                         (double)q->bias[n]);
            goto done;
        }
    }
    for (int i = 0; i < fmt->n_tensors && st == QC_OK; i++) st = qc_st_writer_write(w, bufs[i], nbytes[i]);
    if (st == QC_OK && q->bias) st = qc_st_writer_write(w, bias16, N * 2);
done:
    for (int i = 0; i < fmt->n_tensors; i++) free(bufs[i]);
    free(bias16);
    return st;
}

qc_status qc_ckpt_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n,
                             const qc_part_format *fmt) {
    QC_ASSERT(fmt && fmt->n_tensors >= 1 && fmt->n_tensors <= QC_PART_MAX_TENSORS);
    if (!path || n < 0 || (n > 0 && (!layers || !prefixes)))
        return qc_fail(QC_ERR_ARG, "qc_%s_write_part: bad arguments", fmt->name);
    qc_part_tensor t[QC_PART_MAX_TENSORS];
    size_t nbytes[QC_PART_MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        if (!layers[i] || !prefixes[i]) return qc_fail(QC_ERR_ARG, "%s: layer %d is NULL", path, i);
        qc_status st = part_layout(path, prefixes[i], layers[i], fmt, t, nbytes);
        if (st != QC_OK) return st;
    }
    qc_st_writer *w;
    qc_status st = qc_st_writer_create(path, &w);
    if (st != QC_OK) return st;
    for (int i = 0; i < n && st == QC_OK; i++) st = declare_linear(w, path, prefixes[i], layers[i], fmt);
    if (st == QC_OK) st = qc_st_writer_begin(w);
    for (int i = 0; i < n && st == QC_OK; i++) st = write_linear(w, path, prefixes[i], layers[i], fmt);
    if (st != QC_OK) {
        qc_st_writer_abort(w);
        return st;
    }
    return qc_st_writer_finish(w);
}

/* ---- string sets ---- */

bool qc_strset_has(const qc_strset *s, const char *x) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) return true;
    return false;
}

bool qc_strset_add(qc_strset *s, const char *x) {
    if (qc_strset_has(s, x)) return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = qc_strdup(x))) return false;
    s->n++;
    return true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void qc_strset_sort(qc_strset *s) {
    if (s->n) qsort(s->v, s->n, sizeof *s->v, cmp_str);
}

void qc_strset_free(qc_strset *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

const char *qc_ckpt_block_rel(const char *module) {
    for (const char *p = strchr(module, '.'); p; p = strchr(p + 1, '.')) {
        const char *d = p + 1;
        while (*d >= '0' && *d <= '9') d++;
        if (d > p + 1 && *d == '.') return d + 1;
    }
    return NULL;
}

qc_status qc_ckpt_block_lists(const qc_ckpt_modules *m, qc_strset *qrel, qc_strset *urel) {
    qc_strset own = {0}, *u = urel ? urel : &own;
    qc_status st = QC_OK;
    for (size_t i = 0; i < m->quantized.n && st == QC_OK; i++) {
        const char *rel = qc_ckpt_block_rel(m->quantized.v[i]);
        if (!qc_strset_add(qrel, rel ? rel : m->quantized.v[i])) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < m->unquantized.n && st == QC_OK; i++)
        if (!qc_strset_add(u, qc_ckpt_block_rel(m->unquantized.v[i]))) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < u->n && st == QC_OK; i++)
        if (qc_strset_has(qrel, u->v[i]))
            st = qc_fail(QC_ERR_UNSUPPORTED, "module '%s' is quantized in some blocks and not in others, which the "
                         "loaders' per-block declarations (modules_in_block_to_quantize, modules_to_not_convert) "
                         "cannot express", u->v[i]);
    qc_strset_free(&own);
    qc_strset_sort(qrel);
    if (urel) qc_strset_sort(urel);
    return st;
}

/* Appends the GPTQModel/vLLM `dynamic` rule "-:^<module>$" (the name as a Python regex, anchored) that tells
 * GPTQModel not to build `module` as a quantized layer: it ignores modules_in_block_to_quantize. */
static bool add_skip_rule(cJSON *dyn, const char *module) {
    char pat[1024];
    size_t n = 0;
    n += (size_t)snprintf(pat, sizeof pat, "-:^");
    for (const char *s = module; *s && n + 4 < sizeof pat; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            pat[n++] = '\\';
        pat[n++] = *s;
    }
    if (n + 2 >= sizeof pat) return false;
    pat[n++] = '$';
    pat[n] = 0;
    return cJSON_GetObjectItemCaseSensitive(dyn, pat) || cJSON_AddObjectToObject(dyn, pat);
}

/* vLLM builds q/k/v_proj as one qkv_proj and gate/up_proj as gate_up_proj and asks `dynamic` about the fused
 * name; when every shard of such a group present in a block is kept, the fused name gets a rule too. */
static bool add_fused_skip_rules(cJSON *dyn, const qc_ckpt_modules *m) {
    static const char *const groups[][4] = {{"qkv_proj", "q_proj", "k_proj", "v_proj"},
                                            {"gate_up_proj", "gate_proj", "up_proj", NULL}};
    char name[1024];
    for (size_t u = 0; u < m->unquantized.n; u++) {
        const char *U = m->unquantized.v[u], *dot = strrchr(U, '.');
        if (!dot) continue;
        size_t base = (size_t)(dot + 1 - U);
        for (size_t g = 0; g < sizeof groups / sizeof *groups; g++) {
            bool member = false, any_quantized = false;
            for (int k = 1; k < 4 && groups[g][k]; k++) {
                member |= strcmp(dot + 1, groups[g][k]) == 0;
                if ((size_t)snprintf(name, sizeof name, "%.*s%s", (int)base, U, groups[g][k]) < sizeof name)
                    any_quantized |= qc_strset_has(&m->quantized, name);
            }
            if (member && !any_quantized &&
                ((size_t)snprintf(name, sizeof name, "%.*s%s", (int)base, U, groups[g][0]) >= sizeof name ||
                 !add_skip_rule(dyn, name)))
                return false;
        }
    }
    return true;
}

cJSON *qc_ckpt_skip_rules(const qc_ckpt_modules *m) {
    cJSON *dyn = cJSON_CreateObject();
    bool ok = dyn != NULL;
    for (size_t i = 0; ok && i < m->unquantized.n; i++) ok = add_skip_rule(dyn, m->unquantized.v[i]);
    if (!(ok && add_fused_skip_rules(dyn, m))) {
        cJSON_Delete(dyn);
        return NULL;
    }
    return dyn;
}

/* ---- JSON ---- */

bool qc_json_set(cJSON *o, const char *key, cJSON *v) {
    if (!v) return false;
    bool ok = cJSON_HasObjectItem(o, key) ? cJSON_ReplaceItemInObjectCaseSensitive(o, key, v)
                                          : cJSON_AddItemToObject(o, key, v);
    if (!ok) cJSON_Delete(v);
    return ok;
}

bool qc_json_merge(cJSON *meta, const cJSON *extra) {
    for (const cJSON *it = extra ? extra->child : NULL; it; it = it->next)
        if (!qc_json_set(meta, it->string, cJSON_Duplicate(it, true))) return false;
    return true;
}

qc_status qc_json_read_object(const char *path, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    qc_status st = qc_read_file(path, 64u << 20, &text, &len);
    if (st != QC_OK) return st;
    const char *end = NULL;
    size_t oom = qc_json_oom_count();
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root && qc_json_oom_count() != oom) {
        free(text);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing it", path);
    }
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        return qc_fail(QC_ERR_FORMAT, "%s: invalid JSON near byte %zu", path, at);
    }
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return qc_fail(QC_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    *out = root;
    return QC_OK;
}

qc_status qc_json_get_int(const cJSON *o, const char *key, const char *alt, const char *what, bool *found, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v && alt) v = cJSON_GetObjectItemCaseSensitive(o, alt);
    *found = v && !cJSON_IsNull(v);
    if (!*found) return QC_OK;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
        return qc_fail(QC_ERR_FORMAT, "%s: quantization field '%s' is not an integer", what, v->string);
    *out = (int)d;
    return QC_OK;
}

qc_status qc_json_get_bool(const cJSON *o, const char *key, const char *what, bool dflt, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return QC_OK;
    if (!cJSON_IsBool(v)) return qc_fail(QC_ERR_FORMAT, "%s: quantization field '%s' is not a boolean", what, key);
    *out = cJSON_IsTrue(v);
    return QC_OK;
}

bool qc_str_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
        char y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
        if (x != y) return false;
    }
    return *a == *b;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t a = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && a < cap; i++)
        a += (size_t)snprintf(buf + a, cap - a, "%s%" PRId64, i ? ", " : "", shape[i]);
}

qc_status qc_weights_find_checked(const qc_weights *w, const char *fmt, const char *prefix, const char *suffix,
                                  qc_dtype dt, int ndim, const int64_t *shape, bool required,
                                  const qc_tensor **out) {
    char name[1024];
    *out = NULL;
    if ((size_t)snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= sizeof name)
        return qc_fail(QC_ERR_ARG, "module name '%s' is too long", prefix);
    const qc_tensor *t = qc_weights_find(w, name);
    if (!t) return required ? qc_fail(QC_ERR_FORMAT, "%s checkpoint has no tensor '%s'", fmt, name) : QC_OK;
    if (t->dtype != dt)
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", t->file, name,
                       qc_dtype_name(t->dtype), qc_dtype_name(dt));
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[160], want[160];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%s]", t->file, name, got, want);
    }
    if (!t->data) return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' has no data", t->file, name);
    *out = t;
    return QC_OK;
}

void *qc_tensor_dup(const qc_tensor *t) {
    void *p = qc_malloc((size_t)t->nbytes);
    if (p) memcpy(p, t->data, (size_t)t->nbytes);
    return p;
}

static qc_status write_json(const char *dir, const char *name, const cJSON *j) {
    char *text = cJSON_Print(j), *path = qc_path_join(dir, name);
    qc_status st;
    if (!text || !path) {
        st = qc_fail(QC_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    } else {
        size_t n = strlen(text);
        char *t2 = realloc(text, n + 2);
        if (!t2) {
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
        } else {
            text = t2;
            text[n] = '\n';
            st = qc_write_file_atomic(path, text, n + 1);
        }
    }
    free(text);
    free(path);
    return st;
}

/* ---- small file-system helpers ---- */


static void fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: not every file system supports it on directories */
        close(fd);
    }
}

static char *parent_dir(const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) return qc_strdup(".");
    return s == path ? qc_strdup("/") : qc_strndup(path, (size_t)(s - path));
}

/* ---- the checkpoint ---- */

typedef struct {
    const qc_tensor *t;
    qc_dtype  out_dt;
    uint64_t  out_bytes;
    int       part;           /* index into parts */
    int       shard;
    bool      drop;
} entry;

struct qc_ckpt {
    const qc_ckpt_spec *spec;
    char *out;                /* out_dir without trailing slashes */
    const char *model_dir;
    bool exists;              /* out exists and is to be replaced */
    cJSON *config;            /* the model's config.json */
    cJSON *extra_meta;
    const char *const *part_paths;
    qc_safetensors **parts;
    int n_parts;
    uint64_t max_shard;
    bool part_shards;         /* commit links each part into place as one shard (parts_are_shards) */
    entry *e;                 /* sorted by name */
    size_t n;
    int n_shards;
    qc_ckpt_modules mods;
    char *tmp;                /* the temporary directory, NULL until created */
};

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->t->name, ((const entry *)b)->t->name);
}

static entry *find_entry(const qc_ckpt *c, const char *name) {
    entry key;
    qc_tensor t = {.name = name};
    key.t = &t;
    return bsearch(&key, c->e, c->n, sizeof *c->e, cmp_entry);
}

const qc_tensor *qc_ckpt_find(const qc_ckpt *c, const char *module, const char *suffix) {
    char name[1024];
    if ((size_t)snprintf(name, sizeof name, "%s.%s", module, suffix) >= sizeof name) return NULL;
    const entry *e = find_entry(c, name);
    return e ? e->t : NULL;
}

const qc_ckpt_modules *qc_ckpt_modules_of(const qc_ckpt *c) { return &c->mods; }
const cJSON *qc_ckpt_extra_meta(const qc_ckpt *c) { return c->extra_meta; }

static bool ends_with(const char *s, const char *sfx) {
    size_t a = strlen(s), b = strlen(sfx);
    return a >= b && strcmp(s + a - b, sfx) == 0;
}

/* Sorts the quantized modules out from the rest and checks the unquantized declarations. */
static qc_status check_modules(qc_ckpt *c, const char *const *unq, int n_unq) {
    qc_ckpt_modules *m = &c->mods;
    qc_status st = QC_OK;
    char P[1024];
    m->declared = n_unq > 0;
    for (size_t i = 0; i < c->n && st == QC_OK; i++) {
        const qc_tensor *t = c->e[i].t;
        const char *sfx = ends_with(t->name, ".qweight") ? ".qweight" : ends_with(t->name, ".qzeros") ? ".qzeros"
                          : ends_with(t->name, ".g_idx") ? ".g_idx" : ends_with(t->name, ".weight") ? ".weight" : NULL;
        if (!sfx) continue;
        size_t plen = strlen(t->name) - strlen(sfx);
        if (plen >= sizeof P) {
            st = qc_fail(QC_ERR_ARG, "%s: tensor name '%.64s...' is too long", t->file, t->name);
            break;
        }
        memcpy(P, t->name, plen);
        P[plen] = '\0';
        if (strcmp(sfx, ".weight") == 0) {
            /* a Linear left in float inside a block must be declared */
            if (qc_ckpt_block_rel(P) && t->ndim == 2 && qc_is_float_dtype(t->dtype) && !qc_ckpt_find(c, P, "qweight") &&
                !qc_strset_add(&m->unquantized, P))
                st = qc_fail(QC_ERR_NOMEM, "out of memory");
        } else if (strcmp(sfx, ".qweight") == 0) {
            if (strcmp(P, "lm_head") == 0)
                st = qc_fail(QC_ERR_UNSUPPORTED, "%s: 'lm_head.qweight': a quantized lm_head is not supported (the "
                             "config declares lm_head false)", t->file);
            else if ((st = c->spec->check_module(c, P, t, c->spec->user)) == QC_OK && !qc_strset_add(&m->quantized, P))
                st = qc_fail(QC_ERR_NOMEM, "out of memory");
        } else if (!qc_ckpt_find(c, P, "qweight")) {
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s' belongs to no quantized module (no '%s.qweight')", t->file,
                         t->name, P);
        }
    }
    for (int i = 0; i < n_unq && st == QC_OK; i++) {
        const char *U = unq[i];
        if (!U || !qc_ckpt_block_rel(U))
            st = qc_fail(QC_ERR_ARG, "unquantized module '%s' is not inside a decoder block", U ? U : "(null)");
        else if (qc_ckpt_find(c, U, "qweight"))
            st = qc_fail(QC_ERR_ARG, "module '%s' is declared unquantized but the parts hold '%s.qweight'", U, U);
        else if (!qc_ckpt_find(c, U, "weight"))
            st = qc_fail(QC_ERR_ARG, "module '%s' is declared unquantized but no part holds '%s.weight'", U, U);
        else if (!qc_strset_add(&m->unquantized, U))
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    qc_strset_sort(&m->quantized);
    qc_strset_sort(&m->unquantized);
    if (st == QC_OK && m->quantized.n == 0)
        st = qc_fail(QC_ERR_ARG, "%s: no part holds a quantized module (no '*.qweight' tensor)", c->spec->what);
    return st;
}

/* Collects, sorts and checks the part tensors, and plans the shards. */
static qc_status plan(qc_ckpt *c, bool tied, uint64_t max_shard) {
    size_t n = 0;
    for (int p = 0; p < c->n_parts; p++) n += qc_safetensors_count(c->parts[p]);
    if (!(c->e = qc_calloc(n ? n : 1, sizeof *c->e))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (int p = 0; p < c->n_parts; p++)
        for (size_t i = 0; i < qc_safetensors_count(c->parts[p]); i++) {
            c->e[c->n].part = p;
            c->e[c->n++].t = qc_safetensors_get(c->parts[p], i);
        }
    qsort(c->e, c->n, sizeof *c->e, cmp_entry);
    for (size_t i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        const char *nm = e->t->name;
        if (i + 1 < c->n && strcmp(nm, c->e[i + 1].t->name) == 0)
            return qc_fail(QC_ERR_ARG, "tensor '%s' is in two parts: %s and %s", nm, e->t->file, c->e[i + 1].t->file);
        if (strcmp(nm, "gptq_bits") == 0 || strcmp(nm, "gptq_groupsize") == 0)
            return qc_fail(QC_ERR_ARG, "%s: a tensor named '%s' would make TGI treat the checkpoint as its own "
                           "format", e->t->file, nm);
        e->out_dt = qc_is_float_dtype(e->t->dtype) ? QC_DTYPE_F16 : e->t->dtype;
        e->out_bytes = (uint64_t)e->t->numel * qc_dtype_size(e->out_dt);
        if (tied && strcmp(nm, "lm_head.weight") == 0) {
            QC_LOGI("%s: dropping lm_head.weight: tie_word_embeddings is true", e->t->file);
            e->drop = true;
        }
    }
    if (c->n == 0) return qc_fail(QC_ERR_ARG, "%s: the %d part file(s) hold no tensors", c->spec->what, c->n_parts);
    int shard = 0;
    uint64_t cur = 0;
    bool any = false;
    for (size_t i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        if (e->drop) continue;
        if (any && cur + e->out_bytes > max_shard) {
            shard++;
            cur = 0;
        }
        e->shard = shard;
        cur += e->out_bytes;
        any = true;
    }
    c->n_shards = shard + 1;
    if (c->n_shards > 99999) return qc_fail(QC_ERR_ARG, "%d shards: more than 5-digit names allow", c->n_shards);
    return QC_OK;
}

qc_status qc_ckpt_open(qc_ckpt **out, const qc_ckpt_spec *spec, const char *out_dir, const char *model_dir,
                       const char *const *parts, int n_parts, const char *const *unquantized, int n_unq,
                       uint64_t max_shard_bytes, bool overwrite, const char *meta_json) {
    QC_ASSERT(out && spec && spec->check_module && out_dir && model_dir && parts && n_parts >= 1 && n_unq >= 0 &&
              max_shard_bytes > 0);
    *out = NULL;
    qc_ckpt *c = qc_calloc(1, sizeof *c);
    if (!c || !(c->out = qc_strdup(out_dir))) {
        free(c);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    c->spec = spec;
    c->model_dir = model_dir;
    c->n_parts = n_parts;
    c->part_paths = parts;
    c->max_shard = max_shard_bytes;
    for (size_t n = strlen(c->out); n > 1 && c->out[n - 1] == '/'; n--) c->out[n - 1] = '\0';

    qc_status st = QC_OK;
    char *cfg_path = NULL;
    struct stat so, sm;
    if (lstat(c->out, &so) == 0) {
        c->exists = true;
        if (!overwrite) st = qc_fail(QC_ERR_ARG, "%s already exists (pass overwrite to replace it)", c->out);
        else if (!S_ISDIR(so.st_mode))
            st = qc_fail(QC_ERR_ARG, "%s exists and is not a directory; not replacing it", c->out);
        else if (stat(model_dir, &sm) == 0 && sm.st_dev == so.st_dev && sm.st_ino == so.st_ino)
            st = qc_fail(QC_ERR_ARG, "%s is the source model directory; refusing to replace it", c->out);
        if (st != QC_OK) goto done;
    }
    if (meta_json) {
        c->extra_meta = cJSON_Parse(meta_json);
        if (!cJSON_IsObject(c->extra_meta)) {
            st = qc_fail(QC_ERR_ARG, "%s: meta_json is not a JSON object: %.80s", spec->what, meta_json);
            goto done;
        }
    }
    if (!(cfg_path = qc_path_join(model_dir, "config.json"))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = qc_json_read_object(cfg_path, &c->config)) != QC_OK) goto done;
    /* absent: false, as transformers' Llama/Qwen2/Mistral configs default */
    bool tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c->config, "tie_word_embeddings"));

    if (!(c->parts = qc_calloc((size_t)n_parts, sizeof *c->parts))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int p = 0; p < n_parts && st == QC_OK; p++) {
        if (!parts[p]) st = qc_fail(QC_ERR_ARG, "%s: part %d is NULL", spec->what, p);
        else if ((st = qc_safetensors_open(parts[p], &c->parts[p])) != QC_OK)
            qc_error_prefix("%s part %d", spec->what, p);
    }
    if (st == QC_OK && (st = plan(c, tied, max_shard_bytes)) == QC_OK) st = check_modules(c, unquantized, n_unq);
done:
    free(cfg_path);
    if (st != QC_OK) qc_ckpt_close(c);
    else *out = c;
    return st;
}

static const char *const g_copied[] = {
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json",
};

static qc_status copy_side_files(const qc_ckpt *c) {
    qc_status st = QC_OK;
    for (size_t i = 0; i < sizeof g_copied / sizeof *g_copied && st == QC_OK; i++) {
        char *src = qc_path_join(c->model_dir, g_copied[i]), *dst = qc_path_join(c->tmp, g_copied[i]);
        if (!src || !dst) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        else if (qc_file_exists(src)) {
            char *buf;
            size_t len;
            if ((st = qc_read_file(src, (size_t)1 << 30, &buf, &len)) == QC_OK) {
                st = qc_write_file_atomic(dst, buf, len);
                free(buf);
            }
        }
        free(src);
        free(dst);
    }
    return st;
}

static qc_status write_configs(const qc_ckpt *c, const cJSON *qcfg, const qc_ckpt_file *side, int n_side) {
    if (!qc_json_set(c->config, "quantization_config", cJSON_Duplicate(qcfg, true)) ||
        !qc_json_set(c->config, "torch_dtype", cJSON_CreateString("float16")) ||
        (cJSON_HasObjectItem(c->config, "dtype") && !qc_json_set(c->config, "dtype", cJSON_CreateString("float16"))))
        return qc_fail(QC_ERR_NOMEM, "config.json: out of memory");
    qc_status st = write_json(c->tmp, "config.json", c->config);
    for (int i = 0; i < n_side && st == QC_OK; i++) st = write_json(c->tmp, side[i].name, side[i].json);
    return st;
}

static void shard_name(char *buf, size_t cap, int i, int n) {
    if (n == 1) snprintf(buf, cap, "model.safetensors");
    else snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Streams one tensor, converting floats to F16 in chunks. */
static qc_status stream_tensor(qc_st_writer *w, const entry *e) {
    const qc_tensor *t = e->t;
    if (e->out_dt == t->dtype) {
        qc_status st = qc_st_writer_write(w, t->data, (size_t)t->nbytes);
        qc_tensor_drop_pages(t); /* the parts are read once: keep them out of the resident set */
        return st;
    }
    enum { CHUNK = 4096 };
    float f[CHUNK];
    uint16_t h[CHUNK];
    for (int64_t first = 0; first < t->numel; first += CHUNK) {
        int64_t cnt = t->numel - first < CHUNK ? t->numel - first : CHUNK;
        qc_status st = qc_tensor_read_f32(t, first, cnt, f);
        if (st != QC_OK) return st;
        for (int64_t i = 0; i < cnt; i++) {
            h[i] = qc_f32_to_fp16(f[i]);
            if ((h[i] & 0x7c00u) == 0x7c00u)
                return qc_fail(QC_ERR_NUMERIC, "%s: tensor '%s': element %" PRId64 " = %g is not finite in float16",
                               t->file, t->name, first + i, (double)f[i]);
        }
        if ((st = qc_st_writer_write(w, h, (size_t)cnt * 2)) != QC_OK) return st;
    }
    return QC_OK;
}

/* Whether the parts can serve as the shards as they are (ckpt_write.h: part shards): the data do not fit one
 * shard but every part does, no tensor is converted or dropped, no part is empty, and every part's
 * __metadata__ is exactly what write_shards would give its shard. Anything else takes the sorted copy. */
static bool parts_are_shards(const qc_ckpt *c, const char *const (*meta)[2], int n_meta) {
    if (c->n_parts < 2 || c->n_parts > 99999) return false;
    uint64_t *bytes = qc_calloc((size_t)c->n_parts, sizeof *bytes), total = 0;
    if (!bytes) return false; /* the copy needs no more memory than it has */
    bool ok = true;
    for (size_t i = 0; ok && i < c->n; i++) {
        const entry *e = &c->e[i];
        ok = !e->drop && e->out_dt == e->t->dtype;
        bytes[e->part] += e->out_bytes;
        total += e->out_bytes;
    }
    ok = ok && total > c->max_shard;
    for (int p = 0; ok && p < c->n_parts; p++) {
        const qc_safetensors *f = c->parts[p];
        const char *fmt = qc_safetensors_meta(f, "format");
        ok = qc_safetensors_count(f) > 0 && bytes[p] <= c->max_shard && fmt && strcmp(fmt, "pt") == 0 &&
             qc_safetensors_meta_count(f) == (size_t)n_meta + 1;
        for (int m = 0; ok && m < n_meta; m++) {
            const char *v = qc_safetensors_meta(f, meta[m][0]);
            ok = strcmp(meta[m][0], "format") != 0 && v && strcmp(v, meta[m][1]) == 0;
        }
    }
    free(bytes);
    return ok;
}

/* Copies src to dst (dst.tmp, fsync, rename): the fallback where a part cannot be linked. */
static qc_status copy_part(const char *src, const char *dst) {
    size_t n = strlen(dst);
    char *tmp = qc_malloc(n + 5);
    if (!tmp) return qc_fail(QC_ERR_NOMEM, "out of memory");
    memcpy(tmp, dst, n);
    memcpy(tmp + n, ".tmp", 5);
    qc_status st = QC_OK;
    char *buf = NULL;
    struct stat sb;
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
    if (in < 0 || fstat(in, &sb) != 0) {
        st = qc_fail(QC_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
        goto done;
    }
    if ((out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
        st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    uint64_t done_bytes = 0, size = (uint64_t)sb.st_size;
    bool plain = false; /* copy_file_range refused: read/write from where it stopped */
    while (done_bytes < size && st == QC_OK) {
        size_t want = size - done_bytes > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)(size - done_bytes);
        ssize_t k;
        if (!plain) {
            k = copy_file_range(in, NULL, out, NULL, want, 0);
            if (k < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
                plain = true;
                continue;
            }
        } else {
            if (!buf && !(buf = qc_malloc((size_t)1 << 20))) {
                st = qc_fail(QC_ERR_NOMEM, "out of memory");
                break;
            }
            k = read(in, buf, want < ((size_t)1 << 20) ? want : (size_t)1 << 20);
            for (ssize_t w = 0, r; k > 0 && w < k; w += r)
                if ((r = write(out, buf + w, (size_t)(k - w))) < 0) {
                    if (errno == EINTR) r = 0;
                    else {
                        st = qc_fail(QC_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
                        break;
                    }
                }
        }
        if (st != QC_OK) break;
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) st = qc_fail(QC_ERR_IO, "%s -> %s: copy failed: %s", src, tmp, strerror(errno));
        else if (k == 0) st = qc_fail(QC_ERR_IO, "%s: ended after %" PRIu64 " of %" PRIu64 " bytes", src, done_bytes, size);
        else done_bytes += (uint64_t)k;
    }
    if (st == QC_OK && fsync(out) != 0) st = qc_fail(QC_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (out >= 0 && close(out) != 0 && st == QC_OK) st = qc_fail(QC_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    out = -1;
    if (st == QC_OK && rename(tmp, dst) != 0)
        st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", tmp, dst, strerror(errno));
done:
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    if (st != QC_OK) unlink(tmp);
    free(buf);
    free(tmp);
    return st;
}

/* Part shards: each part becomes shard p by a hard link, no data copied; where the file system refuses
 * links (the work directory on another one), a copy. The link shares the part's inode, which is safe
 * because qcal never writes a part in place: parts (and shards) are only ever created whole under a
 * temporary name and renamed, so a kept work directory (--keep-work) or a later run rewriting a part
 * replaces the directory entry and leaves the checkpoint's inode as it was. */
static qc_status link_shards(const qc_ckpt *c) {
    char name[64];
    bool copied = false;
    for (int p = 0; p < c->n_parts; p++) {
        if (qc_cancel_requested()) return qc_fail(QC_ERR_CANCELLED, "%s: interrupted while writing the checkpoint", c->out);
        qc_test_point("tensor");
        shard_name(name, sizeof name, p, c->n_parts);
        char *path = qc_path_join(c->tmp, name);
        if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
        qc_status st = QC_OK;
        if (link(c->part_paths[p], path) != 0) {
            int e = errno;
            if (e == EXDEV || e == EPERM || e == EMLINK || e == ENOTSUP || e == EOPNOTSUPP) {
                if (!copied) QC_LOGI("%s: cannot hard-link the part files into %s (%s): copying them", c->out, c->tmp,
                                     strerror(e));
                copied = true;
                st = copy_part(c->part_paths[p], path);
            } else {
                st = qc_fail(QC_ERR_IO, "%s: cannot link to %s: %s", c->part_paths[p], path, strerror(e));
            }
        }
        free(path);
        if (st != QC_OK) return st;
    }
    return QC_OK;
}

static qc_status write_shards(const qc_ckpt *c, const char *const (*meta)[2], int n_meta) {
    char name[64];
    size_t first = 0;
    for (int s = 0; s < c->n_shards; s++) {
        shard_name(name, sizeof name, s, c->n_shards);
        char *path = qc_path_join(c->tmp, name);
        if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
        qc_st_writer *w;
        qc_status st = qc_st_writer_create(path, &w);
        free(path);
        if (st != QC_OK) return st;
        st = qc_st_writer_set_meta(w, "format", "pt");
        for (int m = 0; m < n_meta && st == QC_OK; m++) st = qc_st_writer_set_meta(w, meta[m][0], meta[m][1]);
        size_t end = first;
        for (; end < c->n && (c->e[end].drop || c->e[end].shard == s) && st == QC_OK; end++)
            if (!c->e[end].drop) st = qc_st_writer_add(w, c->e[end].t->name, c->e[end].out_dt, c->e[end].t->ndim,
                                                       c->e[end].t->shape);
        if (st == QC_OK) st = qc_st_writer_begin(w);
        for (size_t i = first; i < end && st == QC_OK; i++) {
            if (qc_cancel_requested()) st = qc_fail(QC_ERR_CANCELLED, "%s: interrupted while writing the checkpoint", c->out);
            else if (!c->e[i].drop) {
                qc_test_point("tensor");
                st = stream_tensor(w, &c->e[i]);
            }
        }
        if (st != QC_OK) {
            qc_st_writer_abort(w);
            return st;
        }
        if ((st = qc_st_writer_finish(w)) != QC_OK) return st;
        first = end;
    }
    QC_ASSERT(first == c->n);
    return QC_OK;
}

/* Re-reads every shard with the validating reader and compares it with the plan. */
static qc_status verify_shards(const qc_ckpt *c) {
    char name[64];
    for (int s = 0; s < c->n_shards; s++) {
        shard_name(name, sizeof name, s, c->n_shards);
        char *path = qc_path_join(c->tmp, name);
        if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
        qc_safetensors *f = NULL;
        qc_status st = qc_safetensors_open(path, &f);
        size_t planned = 0;
        for (size_t i = 0; st == QC_OK && i < c->n; i++) {
            const entry *e = &c->e[i];
            if (e->drop || e->shard != s) continue;
            planned++;
            const qc_tensor *t = qc_safetensors_find(f, e->t->name);
            bool ok = t && t->dtype == e->out_dt && t->nbytes == e->out_bytes && t->ndim == e->t->ndim;
            for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == e->t->shape[d];
            if (!ok) st = qc_fail(QC_ERR_IO, "%s: tensor '%s' reads back different from what was written", path,
                                  e->t->name);
        }
        if (st == QC_OK && qc_safetensors_count(f) != planned)
            st = qc_fail(QC_ERR_IO, "%s: holds %zu tensors, %zu were written", path, qc_safetensors_count(f), planned);
        const char *fmt = st == QC_OK ? qc_safetensors_meta(f, "format") : "pt";
        if (!fmt || strcmp(fmt, "pt") != 0) st = qc_fail(QC_ERR_IO, "%s: __metadata__.format is not \"pt\"", path);
        if (f) qc_safetensors_free(f);
        free(path);
        if (st != QC_OK) return st;
    }
    return QC_OK;
}

static qc_status write_index(const qc_ckpt *c) {
    if (c->n_shards == 1) return QC_OK;
    uint64_t total = 0;
    char name[64];
    cJSON *root = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(root, "metadata");
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    bool ok = root && md && map;
    for (size_t i = 0; ok && i < c->n; i++) {
        if (c->e[i].drop) continue;
        total += c->e[i].out_bytes;
        shard_name(name, sizeof name, c->e[i].shard, c->n_shards);
        ok = cJSON_AddStringToObject(map, c->e[i].t->name, name) != NULL;
    }
    /* a JSON double holds integers exactly below 2^53 (9 PB) */
    ok = ok && cJSON_AddItemToObject(md, "total_size", cJSON_CreateNumber((double)total));
    qc_status st = ok ? write_json(c->tmp, "model.safetensors.index.json", root)
                      : qc_fail(QC_ERR_NOMEM, "model.safetensors.index.json: out of memory");
    cJSON_Delete(root);
    return st;
}

/* Moves the finished temporary directory to c->out, replacing an existing one when asked. */
static qc_status install(qc_ckpt *c) {
    fsync_dir(c->tmp);
    char *parent = parent_dir(c->out);
    if (!parent) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    if (!c->exists) {
        if (rename(c->tmp, c->out) != 0)
            st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", c->tmp, c->out, strerror(errno));
        else {
            free(c->tmp);
            c->tmp = NULL;
        }
    } else if (renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->out, RENAME_EXCHANGE) == 0) {
        /* c->tmp now holds the old checkpoint */
        if (!qc_rm_tree(c->tmp)) QC_LOGW("%s: could not remove the replaced checkpoint: %s", c->tmp, strerror(errno));
        free(c->tmp);
        c->tmp = NULL;
    } else {
        /* no atomic exchange on this file system: move the old one aside, the new one in, then drop the old */
        size_t n = strlen(c->out);
        char *old = qc_malloc(n + 12);
        if (!old) {
            free(parent);
            return qc_fail(QC_ERR_NOMEM, "out of memory");
        }
        memcpy(old, c->out, n);
        memcpy(old + n, ".old-XXXXXX", 12);
        if (!mkdtemp(old)) st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", old, strerror(errno));
        else if (rename(c->out, old) != 0) {
            st = qc_fail(QC_ERR_IO, "%s: cannot move the old checkpoint aside: %s", c->out, strerror(errno));
            rmdir(old);
        } else if (rename(c->tmp, c->out) != 0) {
            st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", c->tmp, c->out, strerror(errno));
            if (rename(old, c->out) != 0) QC_LOGW("%s: could not restore %s: %s", old, c->out, strerror(errno));
        } else {
            free(c->tmp);
            c->tmp = NULL;
            if (!qc_rm_tree(old)) QC_LOGW("%s: could not remove the replaced checkpoint: %s", old, strerror(errno));
        }
        free(old);
    }
    if (st == QC_OK) fsync_dir(parent);
    free(parent);
    return st;
}

qc_status qc_ckpt_commit(qc_ckpt *c, const cJSON *qcfg, const qc_ckpt_file *side, int n_side,
                         const char *const (*shard_meta)[2], int n_meta) {
    QC_ASSERT(c && qcfg && !c->tmp && n_side >= 0 && n_meta >= 0);
    size_t n = strlen(c->out);
    if (!(c->tmp = qc_malloc(n + 12))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    memcpy(c->tmp, c->out, n);
    memcpy(c->tmp + n, ".tmp-XXXXXX", 12);
    if (!mkdtemp(c->tmp)) {
        qc_status st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", c->tmp, strerror(errno));
        free(c->tmp);
        c->tmp = NULL;
        return st;
    }
    /* mkdtemp makes it private; a checkpoint is meant to be shared like any directory (umask applies) */
    mode_t um = umask(0);
    umask(um);
    if (chmod(c->tmp, 0777 & ~um) != 0) QC_LOGW("%s: chmod failed: %s", c->tmp, strerror(errno));
    /* the stamp that lets a later run remove this directory if we are killed before the rename */
    char *stamp = qc_path_join(c->tmp, ".qcal-tmp");
    qc_status st = stamp ? qc_write_file_atomic(stamp, "qcal\n", 5) : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st != QC_OK) {
        free(stamp);
        return st;
    }
    if ((c->part_shards = parts_are_shards(c, shard_meta, n_meta))) {
        for (size_t i = 0; i < c->n; i++) c->e[i].shard = c->e[i].part; /* verify_shards and the index follow */
        c->n_shards = c->n_parts;
    }
    if ((st = c->part_shards ? link_shards(c) : write_shards(c, shard_meta, n_meta)) != QC_OK ||
        (st = verify_shards(c)) != QC_OK ||
        (st = write_index(c)) != QC_OK || (st = write_configs(c, qcfg, side, n_side)) != QC_OK ||
        (st = copy_side_files(c)) != QC_OK) {
        free(stamp);
        return st;
    }
    if (unlink(stamp) != 0) st = qc_fail(QC_ERR_IO, "%s: cannot remove: %s", stamp, strerror(errno));
    free(stamp);
    if (st != QC_OK || (st = install(c)) != QC_OK) return st;
    QC_LOGI("%s: %s checkpoint written (%zu quantized Linears, %d shard%s%s)", c->out, c->spec->format,
            c->mods.quantized.n, c->n_shards, c->n_shards == 1 ? "" : "s", c->part_shards ? ", the part files" : "");
    return QC_OK;
}

void qc_ckpt_close(qc_ckpt *c) {
    if (!c) return;
    if (c->tmp) {
        if (!qc_rm_tree(c->tmp)) QC_LOGW("%s: could not remove the temporary directory: %s", c->tmp, strerror(errno));
        free(c->tmp);
    }
    for (int p = 0; c->parts && p < c->n_parts; p++)
        if (c->parts[p]) qc_safetensors_free(c->parts[p]);
    free(c->parts);
    free(c->e);
    qc_strset_free(&c->mods.quantized);
    qc_strset_free(&c->mods.unquantized);
    cJSON_Delete(c->config);
    cJSON_Delete(c->extra_meta);
    free(c->out);
    free(c);
}
