/* gptq_write.c - writing GPTQ part files and whole checkpoint directories (contract in gptq_format.h,
 * spec A.5-A.7). The directory is assembled in <out>.tmp-XXXXXX next to <out> and renamed into place only
 * when every file is written, fsynced and re-read. */
#include "gptq_format.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gptq_write.c writes host integers as safetensors data, which is little-endian"
#endif

static int gs_eff(int group_size, int K) { return group_size == -1 ? K : group_size; }

static bool is_float_dtype(qc_dtype dt) {
    return dt == QC_DTYPE_F16 || dt == QC_DTYPE_BF16 || dt == QC_DTYPE_F32 || dt == QC_DTYPE_F64;
}

/* ---- part files ---- */

static qc_status declare_linear(qc_st_writer *w, const char *prefix, const qc_qlinear *q) {
    char name[1024];
    const int64_t N = q->N, K = q->K, G = q->n_groups, b = q->bits;
    struct { const char *sfx; qc_dtype dt; int nd; int64_t shape[2]; } t[5] = {
        {"qweight", QC_DTYPE_I32, 2, {K * b / 32, N}},
        {"qzeros", QC_DTYPE_I32, 2, {G, N * b / 32}},
        {"scales", QC_DTYPE_F16, 2, {G, N}},
        {"g_idx", QC_DTYPE_I32, 1, {K, 0}},
        {"bias", QC_DTYPE_F16, 1, {N, 0}},
    };
    for (int i = 0; i < (q->bias ? 5 : 4); i++) {
        if ((size_t)snprintf(name, sizeof name, "%s.%s", prefix, t[i].sfx) >= sizeof name)
            return qc_fail(QC_ERR_ARG, "module name '%s' is too long", prefix);
        qc_status st = qc_st_writer_add(w, name, t[i].dt, t[i].nd, t[i].shape);
        if (st != QC_OK) return st;
    }
    return QC_OK;
}

static qc_status write_linear(qc_st_writer *w, const char *path, const char *prefix, const qc_qlinear *q, bool v2) {
    const size_t N = (size_t)q->N, K = (size_t)q->K, G = (size_t)q->n_groups, b = (size_t)q->bits;
    int32_t *qweight = qc_malloc(K * b / 32 * N * 4), *qzeros = qc_malloc(G * (N * b / 32) * 4);
    uint16_t *scales16 = qc_malloc(G * N * 2), *bias16 = q->bias ? qc_malloc(N * 2) : NULL;
    qc_status st = QC_OK;
    if (!qweight || !qzeros || !scales16 || (q->bias && !bias16)) {
        st = qc_fail(QC_ERR_NOMEM, "%s: out of memory packing '%s'", path, prefix);
        goto done;
    }
    if ((st = qc_gptq_pack(q, v2, qweight, qzeros, scales16)) != QC_OK) {
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
    if ((st = qc_st_writer_write(w, qweight, K * b / 32 * N * 4)) ||
        (st = qc_st_writer_write(w, qzeros, G * (N * b / 32) * 4)) || (st = qc_st_writer_write(w, scales16, G * N * 2)) ||
        (st = qc_st_writer_write(w, q->g_idx, K * 4)))
        goto done;
    if (q->bias) st = qc_st_writer_write(w, bias16, N * 2);
done:
    free(qweight);
    free(qzeros);
    free(scales16);
    free(bias16);
    return st;
}

qc_status qc_gptq_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n,
                             bool v2) {
    if (!path || n < 0 || (n > 0 && (!layers || !prefixes)))
        return qc_fail(QC_ERR_ARG, "qc_gptq_write_part: bad arguments");
    for (int i = 0; i < n; i++) {
        const char *why;
        const qc_qlinear *q = layers[i];
        if (!q || !prefixes[i]) return qc_fail(QC_ERR_ARG, "%s: layer %d is NULL", path, i);
        if (!qc_gptq_shape_ok(q->N, q->K, q->bits, q->group_size, &why))
            return qc_fail(QC_ERR_ARG, "%s: module '%s' (N = %d, K = %d, bits = %d, group_size = %d): %s", path,
                           prefixes[i], q->N, q->K, q->bits, q->group_size, why);
    }
    qc_st_writer *w;
    qc_status st = qc_st_writer_create(path, &w);
    if (st != QC_OK) return st;
    for (int i = 0; i < n && st == QC_OK; i++) st = declare_linear(w, prefixes[i], layers[i]);
    if (st == QC_OK) st = qc_st_writer_begin(w);
    for (int i = 0; i < n && st == QC_OK; i++) st = write_linear(w, path, prefixes[i], layers[i], v2);
    if (st != QC_OK) {
        qc_st_writer_abort(w);
        return st;
    }
    return qc_st_writer_finish(w);
}

/* ---- small file-system helpers ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) != 0 && errno != ENOENT ? -1 : 0;
}

/* Removes a tree we created (never follows symlinks). */
static bool rm_rf(const char *path) { return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0; }

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

static qc_status read_json(const char *path, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    qc_status st = qc_read_file(path, 64u << 20, &text, &len);
    if (st != QC_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return qc_fail(QC_ERR_FORMAT, "%s: not a valid JSON object", path);
    }
    *out = root;
    return QC_OK;
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

/* ---- the checkpoint ---- */

typedef struct {
    const qc_tensor *t;
    qc_dtype  out_dt;
    uint64_t  out_bytes;
    int       shard;
    bool      drop;
} entry;

typedef struct {
    const char *out;          /* out_dir without trailing slashes */
    const qc_gptq_config *cfg;
    qc_safetensors **parts;
    int n_parts;
    entry *e;                 /* sorted by name */
    size_t n;
    int n_shards;
    char *tmp;                /* the temporary directory, NULL until created */
} wctx;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->t->name, ((const entry *)b)->t->name);
}

static entry *find_entry(const wctx *c, const char *name) {
    entry key;
    qc_tensor t = {.name = name};
    key.t = &t;
    return bsearch(&key, c->e, c->n, sizeof *c->e, cmp_entry);
}

static entry *find_entry2(const wctx *c, const char *prefix, const char *suffix) {
    char name[1024];
    if ((size_t)snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= sizeof name) return NULL;
    return find_entry(c, name);
}

static bool ends_with(const char *s, const char *sfx) {
    size_t a = strlen(s), b = strlen(sfx);
    return a >= b && strcmp(s + a - b, sfx) == 0;
}

/* The part of a module path after its block index ("model.layers.7.mlp.up_proj" -> "mlp.up_proj"): the
 * first dot-separated component made of digits marks the block. NULL outside blocks. */
static const char *block_rel(const char *module) {
    for (const char *p = strchr(module, '.'); p; p = strchr(p + 1, '.')) {
        const char *d = p + 1;
        while (*d >= '0' && *d <= '9') d++;
        if (d > p + 1 && *d == '.') return d + 1;
    }
    return NULL;
}

static bool shape_is(const qc_tensor *t, int nd, int64_t d0, int64_t d1) {
    return t->ndim == nd && t->shape[0] == d0 && (nd < 2 || t->shape[1] == d1);
}

static uint32_t rd_u32(const void *base, size_t i) {
    uint32_t v;
    memcpy(&v, (const char *)base + 4 * i, 4);
    return v;
}

/* A quantized module P (P.qweight present): every tensor's dtype/shape and the content invariants that
 * loaders rely on (A.3, A.4, C.4.3). */
static qc_status check_qmodule(const wctx *c, const char *P, const qc_tensor *tw) {
    const qc_gptq_config *cfg = c->cfg;
    const int b = cfg->bits;
    if (tw->dtype != QC_DTYPE_I32 || tw->ndim != 2)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be a 2-D I32 tensor (it is %s, %d-D)", tw->file, tw->name,
                       qc_dtype_name(tw->dtype), tw->ndim);
    if (tw->shape[0] > INT32_MAX / 32 || tw->shape[1] > INT32_MAX || (tw->shape[0] * 32) % b != 0)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s': %" PRId64 " rows do not hold a whole number of %d-bit codes",
                       tw->file, tw->name, tw->shape[0], b);
    const int K = (int)(tw->shape[0] * 32 / b), N = (int)tw->shape[1];
    const char *why;
    if (!qc_gptq_shape_ok(N, K, b, cfg->group_size, &why))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' (N = %d, K = %d at %d bits, group_size %d): %s", tw->file, tw->name,
                       N, K, b, cfg->group_size, why);
    const int gs = gs_eff(cfg->group_size, K), G = K / gs;
    const entry *ez = find_entry2(c, P, "qzeros"), *es = find_entry2(c, P, "scales"), *eg = find_entry2(c, P, "g_idx");
    const entry *eb = find_entry2(c, P, "bias"), *ew = find_entry2(c, P, "weight");
    if (!ez || !es || !eg)
        return qc_fail(QC_ERR_ARG, "%s: module '%s' has a qweight but no %s in the parts", tw->file, P,
                       !ez ? "qzeros" : !es ? "scales" : "g_idx");
    if (ew) return qc_fail(QC_ERR_ARG, "%s: module '%s' has both 'weight' and 'qweight'", ew->t->file, P);
    const qc_tensor *tz = ez->t, *ts = es->t, *tg = eg->t;
    if (tz->dtype != QC_DTYPE_I32 || !shape_is(tz, 2, G, (int64_t)N * b / 32))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be I32 [%d, %d]", tz->file, tz->name, G, N * b / 32);
    if (!is_float_dtype(ts->dtype) || !shape_is(ts, 2, G, N))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d, %d]", ts->file, ts->name, G, N);
    if (tg->dtype != QC_DTYPE_I32 || !shape_is(tg, 1, K, 0))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be I32 [%d]", tg->file, tg->name, K);
    if (eb && (!is_float_dtype(eb->t->dtype) || !shape_is(eb->t, 1, N, 0)))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d]", eb->t->file, eb->t->name, N);

    /* g_idx: vLLM drops it unless desc_act, so it must then be trivial; act-order without static groups is a
     * grouping of the processing order, each group exactly gs channels. */
    const bool act_order = cfg->desc_act && !cfg->static_groups;
    int *count = act_order ? qc_calloc((size_t)G, sizeof *count) : NULL;
    if (act_order && !count) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    for (int k = 0; k < K && st == QC_OK; k++) {
        int32_t g = (int32_t)rd_u32(tg->data, (size_t)k);
        if (g < 0 || g >= G)
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s': g_idx[%d] = %d outside [0, %d)", tg->file, tg->name, k, g, G);
        else if (!act_order && g != k / gs)
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s': g_idx[%d] = %d, not k / group_size = %d; with desc_act=%s%s "
                         "loaders ignore g_idx (vLLM), so it must be trivial", tg->file, tg->name, k, g, k / gs,
                         cfg->desc_act ? "true" : "false", cfg->desc_act ? " and static_groups" : "");
        else if (act_order)
            count[g]++;
    }
    for (int g = 0; act_order && st == QC_OK && g < G; g++)
        if (count[g] != gs)
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s': group %d holds %d input channels, not group_size %d", tg->file,
                         tg->name, g, count[g], gs);
    free(count);
    if (st != QC_OK || !cfg->sym) return st;

    /* sym: Marlin uses uint4b8/uint8b128 and never reads qzeros, so every field must be 2^(b-1) (stored
     * 2^(b-1)-1 in v1). */
    int32_t *words = qc_malloc((size_t)tz->nbytes), *z = qc_malloc((size_t)G * (size_t)N * sizeof *z);
    if (!words || !z) {
        free(words);
        free(z);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    memcpy(words, tz->data, (size_t)tz->nbytes);
    st = qc_gptq_unpack(N, K, b, G, cfg->v2, NULL, words, NULL, NULL, z, NULL);
    for (size_t i = 0; st == QC_OK && i < (size_t)G * (size_t)N; i++)
        if (z[i] != 1 << (b - 1))
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s': zero point [%zu][%zu] is %d, but sym=true needs %d (stored "
                         "as %d in %s)", tz->file, tz->name, i / (size_t)N, i % (size_t)N, z[i], 1 << (b - 1),
                         (1 << (b - 1)) - (cfg->v2 ? 0 : 1), cfg->v2 ? "gptq_v2" : "gptq");
    free(words);
    free(z);
    return st;
}

typedef struct { char **v; size_t n, cap; } strset;

static bool set_add(strset *s, const char *x) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) return true;
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

static void set_free(strset *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Checks every quantized module and the unquantized declarations; fills `qrel` with the block-relative
 * names of the quantized modules and tells whether modules_in_block_to_quantize is needed (A.5). */
static qc_status check_modules(wctx *c, const char *const *unq, int n_unq, strset *qrel, bool *need_list,
                               size_t *n_quant) {
    strset urel = {0};
    qc_status st = QC_OK;
    char P[1024];
    *need_list = false;
    *n_quant = 0;
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
            const char *rel = block_rel(P);
            if (rel && t->ndim == 2 && is_float_dtype(t->dtype) && !find_entry2(c, P, "qweight")) {
                if (!set_add(&urel, rel)) st = qc_fail(QC_ERR_NOMEM, "out of memory");
                *need_list = true;
            }
        } else if (strcmp(sfx, ".qweight") == 0) {
            if (strcmp(P, "lm_head") == 0) {
                st = qc_fail(QC_ERR_UNSUPPORTED, "%s: 'lm_head.qweight': a quantized lm_head is not supported (the "
                             "config declares lm_head false)", t->file);
            } else if ((st = check_qmodule(c, P, t)) == QC_OK) {
                const char *rel = block_rel(P);
                (*n_quant)++;
                if (!set_add(qrel, rel ? rel : P)) st = qc_fail(QC_ERR_NOMEM, "out of memory");
            }
        } else if (!find_entry2(c, P, "qweight")) {
            st = qc_fail(QC_ERR_ARG, "%s: tensor '%s' belongs to no quantized module (no '%s.qweight')", t->file,
                         t->name, P);
        }
    }
    for (int i = 0; i < n_unq && st == QC_OK; i++) {
        const char *U = unq[i], *rel = U ? block_rel(U) : NULL;
        if (!rel) st = qc_fail(QC_ERR_ARG, "unquantized module '%s' is not inside a decoder block", U ? U : "(null)");
        else if (find_entry2(c, U, "qweight"))
            st = qc_fail(QC_ERR_ARG, "module '%s' is declared unquantized but the parts hold '%s.qweight'", U, U);
        else if (!find_entry2(c, U, "weight"))
            st = qc_fail(QC_ERR_ARG, "module '%s' is declared unquantized but no part holds '%s.weight'", U, U);
        else if (!set_add(&urel, rel))
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
        *need_list = true;
    }
    for (size_t i = 0; i < urel.n && st == QC_OK; i++)
        for (size_t j = 0; j < qrel->n; j++)
            if (strcmp(urel.v[i], qrel->v[j]) == 0) {
                st = qc_fail(QC_ERR_UNSUPPORTED, "module '%s' is quantized in some blocks and not in others, which "
                             "modules_in_block_to_quantize cannot express", urel.v[i]);
                break;
            }
    set_free(&urel);
    if (qrel->n) qsort(qrel->v, qrel->n, sizeof *qrel->v, cmp_str);
    return st;
}

static bool set_item(cJSON *o, const char *key, cJSON *v);

static cJSON *make_qconfig(const qc_gptq_config *cfg, const strset *qrel, bool need_list, const cJSON *extra_meta) {
    cJSON *q = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *inner;
#define ADD(x) do { if (!(x)) goto oom; } while (0)
    ADD(q && meta);
    ADD(cJSON_AddStringToObject(q, "quant_method", "gptq"));
    ADD(cJSON_AddNumberToObject(q, "bits", cfg->bits));
    ADD(cJSON_AddNumberToObject(q, "group_size", cfg->group_size));
    ADD(cJSON_AddBoolToObject(q, "desc_act", cfg->desc_act));
    ADD(cJSON_AddBoolToObject(q, "sym", cfg->sym));
    ADD(cJSON_AddStringToObject(q, "checkpoint_format", cfg->v2 ? "gptq_v2" : "gptq"));
    ADD(cJSON_AddNumberToObject(q, "damp_percent", cfg->damp_percent));
    ADD(cJSON_AddBoolToObject(q, "true_sequential", cfg->true_sequential));
    ADD(cJSON_AddBoolToObject(q, "static_groups", cfg->static_groups));
    ADD(cJSON_AddBoolToObject(q, "lm_head", false));
    ADD(cJSON_AddNullToObject(q, "model_name_or_path"));
    ADD(cJSON_AddStringToObject(q, "model_file_base_name", "model"));
    ADD(cJSON_AddStringToObject(q, "pack_dtype", "int32"));
    if (need_list) {
        /* optimum and vLLM read a list of lists (vLLM flattens it); one inner list of block-relative names */
        cJSON *outer = cJSON_AddArrayToObject(q, "modules_in_block_to_quantize");
        ADD(outer && (inner = cJSON_CreateArray()));
        ADD(cJSON_AddItemToArray(outer, inner));
        for (size_t i = 0; i < qrel->n; i++) {
            cJSON *sv = cJSON_CreateString(qrel->v[i]);
            ADD(sv);
            ADD(cJSON_AddItemToArray(inner, sv));
        }
    }
    cJSON *qz = cJSON_AddArrayToObject(meta, "quantizer"), *qs;
    ADD(qz && (qs = cJSON_CreateString(cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION)));
    ADD(cJSON_AddItemToArray(qz, qs));
    ADD(cJSON_AddNumberToObject(meta, "damp_percent", cfg->damp_percent));
    ADD(cJSON_AddBoolToObject(meta, "static_groups", cfg->static_groups));
    ADD(cJSON_AddBoolToObject(meta, "true_sequential", cfg->true_sequential));
    for (const cJSON *it = extra_meta ? extra_meta->child : NULL; it; it = it->next)
        ADD(set_item(meta, it->string, cJSON_Duplicate(it, true)));
    ADD(cJSON_AddItemToObject(q, "meta", meta));
#undef ADD
    return q;
oom:
    if (q && meta && cJSON_GetObjectItemCaseSensitive(q, "meta") == meta) meta = NULL;
    cJSON_Delete(q);
    cJSON_Delete(meta);
    return NULL;
}

/* Sets o[key] = v (taking v), replacing in place to keep the key order; false on allocation failure. */
static bool set_item(cJSON *o, const char *key, cJSON *v) {
    if (!v) return false;
    bool ok = cJSON_HasObjectItem(o, key) ? cJSON_ReplaceItemInObjectCaseSensitive(o, key, v)
                                          : cJSON_AddItemToObject(o, key, v);
    if (!ok) cJSON_Delete(v);
    return ok;
}

static qc_status write_configs(const wctx *c, cJSON *config, const cJSON *qcfg) {
    if (!set_item(config, "quantization_config", cJSON_Duplicate(qcfg, true)) ||
        !set_item(config, "torch_dtype", cJSON_CreateString("float16")) ||
        (cJSON_HasObjectItem(config, "dtype") && !set_item(config, "dtype", cJSON_CreateString("float16"))))
        return qc_fail(QC_ERR_NOMEM, "config.json: out of memory");
    qc_status st = write_json(c->tmp, "config.json", config);
    if (st == QC_OK) st = write_json(c->tmp, "quantize_config.json", qcfg);
    return st;
}

static const char *const g_copied[] = {
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
    "chat_template.json",
};

static qc_status copy_side_files(const wctx *c, const char *model_dir) {
    qc_status st = QC_OK;
    for (size_t i = 0; i < sizeof g_copied / sizeof *g_copied && st == QC_OK; i++) {
        char *src = qc_path_join(model_dir, g_copied[i]), *dst = qc_path_join(c->tmp, g_copied[i]);
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

static void shard_name(char *buf, size_t cap, int i, int n) {
    if (n == 1) snprintf(buf, cap, "model.safetensors");
    else snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Streams one tensor, converting floats to F16 in chunks. */
static qc_status stream_tensor(qc_st_writer *w, const entry *e) {
    const qc_tensor *t = e->t;
    if (e->out_dt == t->dtype) return qc_st_writer_write(w, t->data, (size_t)t->nbytes);
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

static qc_status write_shards(const wctx *c) {
    const qc_gptq_config *cfg = c->cfg;
    char name[64], bits[16], gs[16], damp[32];
    snprintf(bits, sizeof bits, "%d", cfg->bits);
    snprintf(gs, sizeof gs, "%d", cfg->group_size);
    snprintf(damp, sizeof damp, "%g", cfg->damp_percent);
    /* AutoGPTQ's informational metadata strings (A.7); never tensors of these names. */
    const char *meta[][2] = {
        {"format", "pt"}, {"gptq_quant_method", "gptq"}, {"gptq_bits", bits}, {"gptq_group_size", gs},
        {"gptq_desc_act", cfg->desc_act ? "True" : "False"}, {"gptq_damp_percent", damp},
        {"gptq_checkpoint_format", cfg->v2 ? "gptq_v2" : "gptq"},
        {"quantizer", cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION},
    };
    size_t first = 0;
    for (int s = 0; s < c->n_shards; s++) {
        shard_name(name, sizeof name, s, c->n_shards);
        char *path = qc_path_join(c->tmp, name);
        if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
        qc_st_writer *w;
        qc_status st = qc_st_writer_create(path, &w);
        free(path);
        if (st != QC_OK) return st;
        for (size_t m = 0; m < sizeof meta / sizeof *meta && st == QC_OK; m++)
            st = qc_st_writer_set_meta(w, meta[m][0], meta[m][1]);
        size_t end = first;
        for (; end < c->n && (c->e[end].drop || c->e[end].shard == s) && st == QC_OK; end++)
            if (!c->e[end].drop) st = qc_st_writer_add(w, c->e[end].t->name, c->e[end].out_dt, c->e[end].t->ndim,
                                                       c->e[end].t->shape);
        if (st == QC_OK) st = qc_st_writer_begin(w);
        for (size_t i = first; i < end && st == QC_OK; i++)
            if (!c->e[i].drop) st = stream_tensor(w, &c->e[i]);
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
static qc_status verify_shards(const wctx *c) {
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

static qc_status write_index(const wctx *c) {
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

static qc_status check_cfg(const qc_gptq_config *cfg) {
    if (cfg->bits != 2 && cfg->bits != 3 && cfg->bits != 4 && cfg->bits != 8)
        return qc_fail(QC_ERR_ARG, "gptq checkpoint: bits = %d (2, 3, 4 or 8)", cfg->bits);
    if (cfg->group_size != -1 && cfg->group_size < 1)
        return qc_fail(QC_ERR_ARG, "gptq checkpoint: group_size = %d (-1 or positive)", cfg->group_size);
    if (!(cfg->damp_percent > 0 && cfg->damp_percent < 1))
        return qc_fail(QC_ERR_ARG, "gptq checkpoint: damp_percent = %g; transformers/optimum refuse values outside "
                       "(0, 1)", cfg->damp_percent);
    if (!cfg->sym && !cfg->v2)
        return qc_fail(QC_ERR_ARG, "gptq checkpoint: asymmetric quantization cannot be stored in checkpoint_format "
                       "\"gptq\" (v1 stores z-1, and loaders corrupt a zero point of 0): use gptq_v2 or awq for asym");
    return QC_OK;
}

/* Collects, sorts and checks the part tensors, and plans the shards. */
static qc_status plan(wctx *c, int n_parts, bool tied, uint64_t max_shard) {
    size_t n = 0;
    for (int p = 0; p < n_parts; p++) n += qc_safetensors_count(c->parts[p]);
    if (!(c->e = qc_calloc(n ? n : 1, sizeof *c->e))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (int p = 0; p < n_parts; p++)
        for (size_t i = 0; i < qc_safetensors_count(c->parts[p]); i++)
            c->e[c->n++].t = qc_safetensors_get(c->parts[p], i);
    qsort(c->e, c->n, sizeof *c->e, cmp_entry);
    for (size_t i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        const char *nm = e->t->name;
        if (i + 1 < c->n && strcmp(nm, c->e[i + 1].t->name) == 0)
            return qc_fail(QC_ERR_ARG, "tensor '%s' is in two parts: %s and %s", nm, e->t->file, c->e[i + 1].t->file);
        if (strcmp(nm, "gptq_bits") == 0 || strcmp(nm, "gptq_groupsize") == 0)
            return qc_fail(QC_ERR_ARG, "%s: a tensor named '%s' would make TGI treat the checkpoint as its own "
                           "format", e->t->file, nm);
        e->out_dt = is_float_dtype(e->t->dtype) ? QC_DTYPE_F16 : e->t->dtype;
        e->out_bytes = (uint64_t)e->t->numel * qc_dtype_size(e->out_dt);
        if (tied && strcmp(nm, "lm_head.weight") == 0) {
            QC_LOGI("%s: dropping lm_head.weight: tie_word_embeddings is true", e->t->file);
            e->drop = true;
        }
    }
    if (c->n == 0) return qc_fail(QC_ERR_ARG, "gptq checkpoint: the %d part file(s) hold no tensors", n_parts);
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

/* Moves the finished temporary directory to c->out, replacing an existing one when asked. */
static qc_status install(wctx *c, bool exists) {
    fsync_dir(c->tmp);
    char *parent = parent_dir(c->out);
    if (!parent) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    if (!exists) {
        if (rename(c->tmp, c->out) != 0)
            st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", c->tmp, c->out, strerror(errno));
        else {
            free(c->tmp);
            c->tmp = NULL;
        }
    } else if (renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->out, RENAME_EXCHANGE) == 0) {
        /* c->tmp now holds the old checkpoint */
        if (!rm_rf(c->tmp)) QC_LOGW("%s: could not remove the replaced checkpoint: %s", c->tmp, strerror(errno));
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
            if (!rm_rf(old)) QC_LOGW("%s: could not remove the replaced checkpoint: %s", old, strerror(errno));
        }
        free(old);
    }
    if (st == QC_OK) fsync_dir(parent);
    free(parent);
    return st;
}

qc_status qc_gptq_write_checkpoint(const char *out_dir, const char *model_dir, const char *const *parts, int n_parts,
                                   const qc_gptq_config *cfg, const char *const *unquantized_modules, int n_unq,
                                   uint64_t max_shard_bytes, bool overwrite) {
    if (!out_dir || !*out_dir || !model_dir || !cfg || n_parts < 1 || !parts || n_unq < 0 ||
        (n_unq > 0 && !unquantized_modules))
        return qc_fail(QC_ERR_ARG, "qc_gptq_write_checkpoint: missing output directory, model, parts or config");
    qc_status st = check_cfg(cfg);
    if (st != QC_OK) return st;
    if (max_shard_bytes == 0) max_shard_bytes = QC_GPTQ_DEFAULT_SHARD_BYTES;
    if ((cfg->bits != 4 && cfg->bits != 8) || !cfg->sym || (cfg->group_size != -1 && cfg->group_size != 32 &&
                                                            cfg->group_size != 64 && cfg->group_size != 128))
        QC_LOGW("gptq w%d g%d %s: vLLM's Marlin kernels need 4 or 8 bits, sym and group_size -1/32/64/128; this "
                "checkpoint runs on the slower gptq kernel there (spec F.3)", cfg->bits, cfg->group_size,
                cfg->sym ? "sym" : "asym");

    wctx c = {.cfg = cfg, .n_parts = n_parts};
    char *out = qc_strdup(out_dir), *cfg_path = NULL;
    cJSON *config = NULL, *extra_meta = NULL, *qcfg = NULL;
    strset qrel = {0};
    bool need_list = false, exists = false;
    size_t n_quant = 0;
    if (!out) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = '\0';
    c.out = out;

    struct stat so, sm;
    if (lstat(out, &so) == 0) {
        exists = true;
        if (!overwrite) {
            st = qc_fail(QC_ERR_ARG, "%s already exists (pass overwrite to replace it)", out);
            goto done;
        }
        if (!S_ISDIR(so.st_mode)) {
            st = qc_fail(QC_ERR_ARG, "%s exists and is not a directory; not replacing it", out);
            goto done;
        }
        if (stat(model_dir, &sm) == 0 && sm.st_dev == so.st_dev && sm.st_ino == so.st_ino) {
            st = qc_fail(QC_ERR_ARG, "%s is the source model directory; refusing to replace it", out);
            goto done;
        }
    }
    if (cfg->meta_json) {
        extra_meta = cJSON_Parse(cfg->meta_json);
        if (!cJSON_IsObject(extra_meta)) {
            st = qc_fail(QC_ERR_ARG, "gptq checkpoint: meta_json is not a JSON object: %.80s", cfg->meta_json);
            goto done;
        }
    }
    if (!(cfg_path = qc_path_join(model_dir, "config.json"))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = read_json(cfg_path, &config)) != QC_OK) goto done;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(config, "tie_word_embeddings");
    bool tied = cJSON_IsTrue(tie); /* absent: false, as transformers' Llama/Qwen2/Mistral configs default */

    if (!(c.parts = qc_calloc((size_t)n_parts, sizeof *c.parts))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int p = 0; p < n_parts && st == QC_OK; p++) {
        if (!parts[p]) st = qc_fail(QC_ERR_ARG, "gptq checkpoint: part %d is NULL", p);
        else if ((st = qc_safetensors_open(parts[p], &c.parts[p])) != QC_OK)
            qc_error_prefix("gptq checkpoint part %d", p);
    }
    if (st != QC_OK) goto done;
    if ((st = plan(&c, n_parts, tied, max_shard_bytes)) != QC_OK) goto done;
    if ((st = check_modules(&c, unquantized_modules, n_unq, &qrel, &need_list, &n_quant)) != QC_OK) goto done;
    if (n_quant == 0) {
        st = qc_fail(QC_ERR_ARG, "gptq checkpoint: no part holds a quantized module (no '*.qweight' tensor)");
        goto done;
    }
    if (!(qcfg = make_qconfig(cfg, &qrel, need_list, extra_meta))) {
        st = qc_fail(QC_ERR_NOMEM, "quantization_config: out of memory");
        goto done;
    }

    size_t n = strlen(out);
    if (!(c.tmp = qc_malloc(n + 12))) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(c.tmp, out, n);
    memcpy(c.tmp + n, ".tmp-XXXXXX", 12);
    if (!mkdtemp(c.tmp)) {
        st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", c.tmp, strerror(errno));
        free(c.tmp);
        c.tmp = NULL;
        goto done;
    }
    /* mkdtemp makes it private; a checkpoint is meant to be shared like any directory (umask applies) */
    mode_t um = umask(0);
    umask(um);
    if (chmod(c.tmp, 0777 & ~um) != 0) QC_LOGW("%s: chmod failed: %s", c.tmp, strerror(errno));
    if ((st = write_shards(&c)) != QC_OK || (st = verify_shards(&c)) != QC_OK || (st = write_index(&c)) != QC_OK ||
        (st = write_configs(&c, config, qcfg)) != QC_OK || (st = copy_side_files(&c, model_dir)) != QC_OK)
        goto done;
    if ((st = install(&c, exists)) != QC_OK) goto done;
    QC_LOGI("%s: GPTQ checkpoint written (%zu quantized Linears, %d shard%s)", out, n_quant, c.n_shards,
            c.n_shards == 1 ? "" : "s");
done:
    if (c.tmp) {
        if (!rm_rf(c.tmp)) QC_LOGW("%s: could not remove the temporary directory: %s", c.tmp, strerror(errno));
        free(c.tmp);
    }
    for (int p = 0; c.parts && p < n_parts; p++)
        if (c.parts[p]) qc_safetensors_free(c.parts[p]);
    free(c.parts);
    free(c.e);
    set_free(&qrel);
    cJSON_Delete(config);
    cJSON_Delete(extra_meta);
    cJSON_Delete(qcfg);
    free(cfg_path);
    free(out);
    return st;
}
