/* awq_format.c - AutoAWQ GEMM packing, unpacking, part files, checkpoint writing and reading (layout and
 * contracts in awq_format.h, spec B, C.3). The directory mechanics are ckpt_write.c's, shared with GPTQ. */
#include "awq_format.h"

#include "ckpt_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* B.2: nibble slot -> column offset, and column offset -> slot. */
static const int k_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
static const int k_inverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};

bool qc_awq_shape_ok(int N, int K, int bits, int group_size, const char **why) {
    const char *w = NULL;
    if (bits != 4) w = "AWQ GEMM stores 4-bit codes only";
    else if (N < 1 || K < 1) w = "N and K must be positive";
    else if (group_size < 1) w = "group_size must be positive (AWQ GEMM: never -1)";
    else if (K % group_size != 0) w = "in_features (K) must be a multiple of group_size";
    else if (N % 8 != 0) w = "out_features (N) must be a multiple of 8";
    if (why) *why = w;
    return w == NULL;
}

/* ---- pack / unpack ----
 * Fast versions build or split a whole word at a time with the shifts written out (8 codes of one k, from 8
 * consecutive rows of `codes`); the plain twins place one nibble at a time through k_inverse. */

static void pack_words_fast(const uint8_t *codes, int N, int K, uint32_t *qweight) {
    const size_t N8 = (size_t)N / 8;
    for (size_t c = 0; c < N8; c++) {
        const uint8_t *r0 = codes + 8 * c * (size_t)K, *r1 = r0 + K, *r2 = r1 + K, *r3 = r2 + K;
        const uint8_t *r4 = r3 + K, *r5 = r4 + K, *r6 = r5 + K, *r7 = r6 + K;
        for (size_t k = 0; k < (size_t)K; k++)
            qweight[k * N8 + c] = (uint32_t)r0[k] | (uint32_t)r2[k] << 4 | (uint32_t)r4[k] << 8 |
                                  (uint32_t)r6[k] << 12 | (uint32_t)r1[k] << 16 | (uint32_t)r3[k] << 20 |
                                  (uint32_t)r5[k] << 24 | (uint32_t)r7[k] << 28;
    }
}

static uint32_t pack8(const int32_t *z) {
    return (uint32_t)z[0] | (uint32_t)z[2] << 4 | (uint32_t)z[4] << 8 | (uint32_t)z[6] << 12 | (uint32_t)z[1] << 16 |
           (uint32_t)z[3] << 20 | (uint32_t)z[5] << 24 | (uint32_t)z[7] << 28;
}

static void pack_zeros_fast(const int32_t *zeros, int N, int G, uint32_t *qzeros) {
    for (size_t i = 0; i < (size_t)G * (size_t)N / 8; i++) qzeros[i] = pack8(zeros + 8 * i);
}

/* Plain twins, generic over where value (n, r) lives: src[n*sn + r*sr], uint8 codes (r = k) or int32 zero
 * points (r = g). Its word is out[r][n / 8], its nibble INVERSE[n % 8]. */
static void pack_ref(const void *src, bool bytes, size_t sn, size_t sr, int N, int R, uint32_t *out) {
    const size_t N8 = (size_t)N / 8;
    memset(out, 0, (size_t)R * N8 * 4);
    for (size_t n = 0; n < (size_t)N; n++)
        for (size_t r = 0; r < (size_t)R; r++) {
            const size_t i = n * sn + r * sr;
            const uint32_t v = bytes ? ((const uint8_t *)src)[i] : (uint32_t)((const int32_t *)src)[i];
            out[r * N8 + n / 8] |= v << (4 * k_inverse[n % 8]);
        }
}

static void pack_words_ref(const uint8_t *codes, int N, int K, uint32_t *qweight) {
    pack_ref(codes, true, (size_t)K, 1, N, K, qweight);
}

static void pack_zeros_ref(const int32_t *zeros, int N, int G, uint32_t *qzeros) {
    pack_ref(zeros, false, 1, (size_t)N, N, G, qzeros);
}

static void unpack_words_fast(const uint32_t *qweight, int N, int K, uint8_t *codes) {
    const size_t N8 = (size_t)N / 8;
    for (size_t c = 0; c < N8; c++) {
        uint8_t *r0 = codes + 8 * c * (size_t)K, *r1 = r0 + K, *r2 = r1 + K, *r3 = r2 + K;
        uint8_t *r4 = r3 + K, *r5 = r4 + K, *r6 = r5 + K, *r7 = r6 + K;
        for (size_t k = 0; k < (size_t)K; k++) {
            uint32_t w = qweight[k * N8 + c];
            r0[k] = w & 15u;
            r2[k] = w >> 4 & 15u;
            r4[k] = w >> 8 & 15u;
            r6[k] = w >> 12 & 15u;
            r1[k] = w >> 16 & 15u;
            r3[k] = w >> 20 & 15u;
            r5[k] = w >> 24 & 15u;
            r7[k] = w >> 28;
        }
    }
}

static void unpack_zeros_fast(const uint32_t *qzeros, int N, int G, int32_t *zeros) {
    for (size_t i = 0; i < (size_t)G * (size_t)N / 8; i++) {
        uint32_t w = qzeros[i];
        int32_t *z = zeros + 8 * i;
        for (int s = 0; s < 8; s++) z[k_order[s]] = (int32_t)(w >> 4 * s & 15u);
    }
}

/* C.3 as written: value(n, r) = (in[r][n / 8] >> 4*INVERSE[n % 8]) & 0xF, stored at dst[n*sn + r*sr]. */
static void unpack_ref(const uint32_t *in, int N, int R, void *dst, bool bytes, size_t sn, size_t sr) {
    const size_t N8 = (size_t)N / 8;
    for (size_t n = 0; n < (size_t)N; n++)
        for (size_t r = 0; r < (size_t)R; r++) {
            const size_t i = n * sn + r * sr;
            const uint32_t v = in[r * N8 + n / 8] >> (4 * k_inverse[n % 8]) & 15u;
            if (bytes) ((uint8_t *)dst)[i] = (uint8_t)v;
            else ((int32_t *)dst)[i] = (int32_t)v;
        }
}

static void unpack_words_ref(const uint32_t *qweight, int N, int K, uint8_t *codes) {
    unpack_ref(qweight, N, K, codes, true, (size_t)K, 1);
}

static void unpack_zeros_ref(const uint32_t *qzeros, int N, int G, int32_t *zeros) {
    unpack_ref(qzeros, N, G, zeros, false, 1, (size_t)N);
}

typedef struct {
    void (*words)(const uint8_t *, int, int, uint32_t *);
    void (*zeros)(const int32_t *, int, int, uint32_t *);
} packer;

typedef struct {
    void (*words)(const uint32_t *, int, int, uint8_t *);
    void (*zeros)(const uint32_t *, int, int, int32_t *);
} unpacker;

static qc_status check_pack_params(const qc_qlinear *q) {
    const char *why;
    if (!qc_awq_shape_ok(q->N, q->K, q->bits, q->group_size, &why))
        return qc_fail(QC_ERR_ARG, "awq pack: N = %d, K = %d, bits = %d, group_size = %d: %s", q->N, q->K, q->bits,
                       q->group_size, why);
    const int N = q->N, K = q->K, gs = q->group_size, G = K / gs;
    if (q->n_groups != G)
        return qc_fail(QC_ERR_ARG, "awq pack: n_groups = %d, but K = %d and group_size = %d make %d", q->n_groups, K,
                       gs, G);
    for (int k = 0; q->g_idx && k < K; k++)
        if (q->g_idx[k] != k / gs)
            return qc_fail(QC_ERR_ARG, "awq pack: g_idx[%d] = %d, not k / group_size = %d: AWQ stores no g_idx, so "
                           "act-order layers cannot be written as AWQ", k, q->g_idx[k], k / gs);
    for (size_t i = 0; i < (size_t)G * (size_t)N; i++)
        if (q->zeros[i] < 0 || q->zeros[i] > 15)
            return qc_fail(QC_ERR_ARG, "awq pack: zero[%zu][%zu] = %d outside [0, 15]", i / (size_t)N, i % (size_t)N,
                           q->zeros[i]);
    return QC_OK;
}

qc_status qc_awq_pack_prepare(const qc_qlinear *q, uint16_t *scales16) {
    qc_status st = check_pack_params(q);
    if (st != QC_OK) return st;
    const size_t gn = (size_t)q->n_groups * (size_t)q->N;
    for (size_t i = 0; i < gn; i++) {
        scales16[i] = qc_f32_to_fp16(q->scales[i]);
        if ((scales16[i] & 0x7c00u) == 0x7c00u)
            return qc_fail(QC_ERR_NUMERIC, "awq pack: scale[%zu][%zu] = %g is not finite in fp16", i / (size_t)q->N,
                           i % (size_t)q->N, (double)q->scales[i]);
    }
    return QC_OK;
}

static qc_status pack_with(const qc_qlinear *q, int32_t *qweight, int32_t *qzeros, uint16_t *scales16, packer p) {
    QC_ASSERT(q && qweight && qzeros && scales16);
    qc_status st = qc_awq_pack_prepare(q, scales16);
    if (st != QC_OK) return st;
    for (size_t i = 0; i < (size_t)q->N * (size_t)q->K; i++)
        if (q->codes[i] > 15)
            return qc_fail(QC_ERR_ARG, "awq pack: code[%zu][%zu] = %u exceeds 15", i / (size_t)q->K, i % (size_t)q->K,
                           q->codes[i]);
    p.words(q->codes, q->N, q->K, (uint32_t *)qweight);
    p.zeros(q->zeros, q->N, q->n_groups, (uint32_t *)qzeros);
    return QC_OK;
}

qc_status qc_awq_pack(const qc_qlinear *q, int32_t *qweight, int32_t *qzeros, uint16_t *scales16) {
    return pack_with(q, qweight, qzeros, scales16, (packer){pack_words_fast, pack_zeros_fast});
}

qc_status qc_awq_pack_ref(const qc_qlinear *q, int32_t *qweight, int32_t *qzeros, uint16_t *scales16) {
    return pack_with(q, qweight, qzeros, scales16, (packer){pack_words_ref, pack_zeros_ref});
}

static qc_status unpack_with(int N, int K, int group_size, const int32_t *qweight, const int32_t *qzeros,
                             const uint16_t *scales16, uint8_t *codes, int32_t *zeros, float *scales, unpacker u) {
    const char *why;
    if (!qc_awq_shape_ok(N, K, 4, group_size, &why))
        return qc_fail(QC_ERR_ARG, "awq unpack: N = %d, K = %d, group_size = %d: %s", N, K, group_size, why);
    QC_ASSERT(!qweight == !codes && !qzeros == !zeros && !scales16 == !scales);
    const int G = K / group_size;
    if (qweight) u.words((const uint32_t *)qweight, N, K, codes);
    if (qzeros) u.zeros((const uint32_t *)qzeros, N, G, zeros);
    if (scales16)
        for (size_t i = 0; i < (size_t)G * (size_t)N; i++) scales[i] = qc_fp16_to_f32(scales16[i]);
    return QC_OK;
}

qc_status qc_awq_unpack(int N, int K, int group_size, const int32_t *qweight, const int32_t *qzeros,
                        const uint16_t *scales16, uint8_t *codes, int32_t *zeros, float *scales) {
    return unpack_with(N, K, group_size, qweight, qzeros, scales16, codes, zeros, scales,
                       (unpacker){unpack_words_fast, unpack_zeros_fast});
}

qc_status qc_awq_unpack_ref(int N, int K, int group_size, const int32_t *qweight, const int32_t *qzeros,
                            const uint16_t *scales16, uint8_t *codes, int32_t *zeros, float *scales) {
    return unpack_with(N, K, group_size, qweight, qzeros, scales16, codes, zeros, scales,
                       (unpacker){unpack_words_ref, unpack_zeros_ref});
}

/* ---- part files ---- */

static bool awq_layout(const qc_qlinear *q, qc_part_tensor *t, const char **why) {
    if (!qc_awq_shape_ok(q->N, q->K, q->bits, q->group_size, why)) return false;
    const int64_t N = q->N, K = q->K, G = q->n_groups;
    t[0] = (qc_part_tensor){"qweight", QC_DTYPE_I32, 2, {K, N / 8}};
    t[1] = (qc_part_tensor){"qzeros", QC_DTYPE_I32, 2, {G, N / 8}};
    t[2] = (qc_part_tensor){"scales", QC_DTYPE_F16, 2, {G, N}};
    return true;
}

static qc_status awq_pack_bufs(const qc_qlinear *q, const void *user, void *const *bufs) {
    (void)user;
    return qc_awq_pack(q, bufs[0], bufs[1], bufs[2]);
}

qc_status qc_awq_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n) {
    const qc_part_format fmt = {"awq", 3, awq_layout, awq_pack_bufs, NULL};
    return qc_ckpt_write_part(path, layers, prefixes, n, &fmt);
}

/* ---- the checkpoint ---- */

/* A quantized module P (P.qweight present) in the GEMM layout (B.1). */
static qc_status check_qmodule(const qc_ckpt *c, const char *P, const qc_tensor *tw, const void *user) {
    const qc_awq_config *cfg = user;
    if (tw->dtype != QC_DTYPE_I32 || tw->ndim != 2)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be a 2-D I32 tensor (it is %s, %d-D)", tw->file, tw->name,
                       qc_dtype_name(tw->dtype), tw->ndim);
    if (tw->shape[0] > INT32_MAX || tw->shape[1] > INT32_MAX / 8)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' is too large", tw->file, tw->name);
    const int K = (int)tw->shape[0], N = (int)tw->shape[1] * 8;
    const char *why;
    if (!qc_awq_shape_ok(N, K, 4, cfg->group_size, &why))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' (N = %d, K = %d, group_size %d): %s", tw->file, tw->name, N, K,
                       cfg->group_size, why);
    const int G = K / cfg->group_size;
    const qc_tensor *tz = qc_ckpt_find(c, P, "qzeros"), *ts = qc_ckpt_find(c, P, "scales");
    const qc_tensor *tg = qc_ckpt_find(c, P, "g_idx"), *tb = qc_ckpt_find(c, P, "bias");
    const qc_tensor *twt = qc_ckpt_find(c, P, "weight");
    if (!tz || !ts)
        return qc_fail(QC_ERR_ARG, "%s: module '%s' has a qweight but no %s in the parts", tw->file, P,
                       !tz ? "qzeros" : "scales");
    if (twt) return qc_fail(QC_ERR_ARG, "%s: module '%s' has both 'weight' and 'qweight'", twt->file, P);
    if (tg)
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s': the AWQ GEMM layout has no g_idx (is this a GPTQ part?)",
                       tg->file, tg->name);
    if (tz->dtype != QC_DTYPE_I32 || !qc_tensor_shape_is(tz, 2, G, N / 8))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be I32 [%d, %d]", tz->file, tz->name, G, N / 8);
    if (!qc_is_float_dtype(ts->dtype) || !qc_tensor_shape_is(ts, 2, G, N))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d, %d]", ts->file, ts->name, G, N);
    if (tb && (!qc_is_float_dtype(tb->dtype) || !qc_tensor_shape_is(tb, 1, N, 0)))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d]", tb->file, tb->name, N);
    return QC_OK;
}

/* Whether `pat` occurs anywhere in `s`, a '.' in pat matching any character: a superset of the substring
 * test vLLM and AutoAWQ apply and of transformers' re.match/endswith, where the dots are regex wildcards. */
static bool loader_match(const char *pat, const char *s) {
    size_t lp = strlen(pat), ls = strlen(s);
    for (size_t i = 0; i + lp <= ls; i++) {
        size_t j = 0;
        while (j < lp && (pat[j] == '.' || pat[j] == s[i + j])) j++;
        if (j == lp) return true;
    }
    return false;
}

/* vLLM loads q/k/v_proj as one qkv_proj and gate/up_proj as gate_up_proj, and matches the fused name. */
static const char *const k_fused[][2] = {
    {"q_proj", "qkv_proj"}, {"k_proj", "qkv_proj"}, {"v_proj", "qkv_proj"},
    {"gate_proj", "gate_up_proj"}, {"up_proj", "gate_up_proj"},
};

static const char *fused_of(const char *module, size_t *base_len) {
    const char *dot = strrchr(module, '.'), *last = dot ? dot + 1 : module;
    *base_len = (size_t)(last - module);
    for (size_t f = 0; f < sizeof k_fused / sizeof *k_fused; f++)
        if (strcmp(last, k_fused[f][0]) == 0) return k_fused[f][1];
    return NULL;
}

/* Every modules_to_not_convert entry (block-relative, `entries`) must leave every quantized module and its
 * fused vLLM name alone; a kept module whose fused partners are quantized is loadable by transformers only. */
static qc_status check_not_convert(const qc_ckpt_modules *m, const qc_strset *entries) {
    char alias[1024];
    for (size_t e = 0; e < entries->n; e++)
        for (size_t i = 0; i < m->quantized.n; i++) {
            const char *E = entries->v[e], *Q = m->quantized.v[i];
            size_t qb;
            const char *qf = fused_of(Q, &qb);
            const char *hit = loader_match(E, Q) ? Q : NULL;
            if (!hit && qf && (size_t)snprintf(alias, sizeof alias, "%.*s%s", (int)qb, Q, qf) < sizeof alias &&
                loader_match(E, alias))
                hit = alias;
            if (hit)
                return qc_fail(QC_ERR_UNSUPPORTED, "modules_to_not_convert entry '%s' would also match the quantized "
                               "module '%s' (loaders match these names as substrings), which would then be loaded "
                               "as a float Linear; write --format gptq_v2 instead (its skip rules are anchored)", E, hit);
        }
    for (size_t u = 0; u < m->unquantized.n; u++) {
        const char *U = m->unquantized.v[u];
        size_t ub;
        const char *uf = fused_of(U, &ub);
        bool mixed = false;
        for (size_t i = 0; uf && i < m->quantized.n; i++) {
            const char *Q = m->quantized.v[i];
            size_t qb;
            const char *qf = fused_of(Q, &qb);
            mixed |= qf && ub == qb && strncmp(U, Q, ub) == 0 && strcmp(uf, qf) == 0;
        }
        if (mixed)
            QC_LOGW("%s is kept in float16 while the rest of its fused %.*s%s is quantized: transformers loads this, "
                    "vLLM refuses mixed precision inside a fused layer", U, (int)ub, U, uf);
    }
    return QC_OK;
}

/* Older vLLM and SGLang test modules_to_not_convert against the fused name (mlp.gate_up_proj,
 * self_attn.qkv_proj) only, so a fused group kept whole is also listed by that name; AutoAWQ and newer vLLM,
 * which test each shard, are not affected. urel and qrel hold block-relative names. */
static qc_status add_fused_names(qc_strset *urel, const qc_strset *qrel) {
    char name[1024];
    size_t n = urel->n;
    for (size_t u = 0; u < n; u++) {
        size_t base;
        const char *fused = fused_of(urel->v[u], &base);
        bool partner_quantized = false;
        for (size_t f = 0; fused && f < sizeof k_fused / sizeof *k_fused; f++)
            if (strcmp(k_fused[f][1], fused) == 0 &&
                (size_t)snprintf(name, sizeof name, "%.*s%s", (int)base, urel->v[u], k_fused[f][0]) < sizeof name)
                partner_quantized |= qc_strset_has(qrel, name);
        if (!fused || partner_quantized) continue;
        if ((size_t)snprintf(name, sizeof name, "%.*s%s", (int)base, urel->v[u], fused) >= sizeof name ||
            !qc_strset_add(urel, name))
            return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    qc_strset_sort(urel);
    return QC_OK;
}

static cJSON *string_array(const qc_strset *s) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < s->n; i++) {
        cJSON *v = cJSON_CreateString(s->v[i]);
        if (!v || !cJSON_AddItemToArray(a, v)) {
            cJSON_Delete(v);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* quantization_config (B.5) in AutoAWQ's key order, then our meta; and the legacy quant_config.json. */
static bool make_configs(const qc_awq_config *cfg, const qc_ckpt_modules *m, const qc_strset *urel, const cJSON *extra_meta, cJSON **qcfg,
                         cJSON **legacy) {
    cJSON *q = *qcfg = cJSON_CreateObject(), *l = *legacy = cJSON_CreateObject(), *meta, *qz;
    bool ok = q && l && cJSON_AddStringToObject(q, "quant_method", "awq") && cJSON_AddTrueToObject(q, "zero_point") &&
              cJSON_AddNumberToObject(q, "group_size", cfg->group_size) && cJSON_AddNumberToObject(q, "bits", 4) &&
              cJSON_AddStringToObject(q, "version", "gemm") &&
              qc_json_set(q, "modules_to_not_convert", urel->n ? string_array(urel)
                                                                        : cJSON_CreateNull()) &&
              (!m->unquantized.n || qc_json_set(q, "dynamic", qc_ckpt_skip_rules(m))) &&
              (meta = cJSON_AddObjectToObject(q, "meta")) && (qz = cJSON_AddArrayToObject(meta, "quantizer")) &&
              cJSON_AddItemToArray(qz, cJSON_CreateString(cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION)) &&
              qc_json_merge(meta, extra_meta);
    ok = ok && cJSON_AddTrueToObject(l, "zero_point") && cJSON_AddNumberToObject(l, "q_group_size", cfg->group_size) &&
         cJSON_AddNumberToObject(l, "w_bit", 4) && cJSON_AddStringToObject(l, "version", "GEMM") &&
         (!urel->n || qc_json_set(l, "modules_to_not_convert", string_array(urel)));
    if (!ok) {
        cJSON_Delete(q);
        cJSON_Delete(l);
        *qcfg = *legacy = NULL;
    }
    return ok;
}

void qc_awq_shard_meta(const qc_awq_config *cfg, qc_shard_meta *out) {
    memset(out, 0, sizeof *out);
    out->kv[0][0] = "quantizer";
    out->kv[0][1] = cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION;
    out->n = 1;
}

qc_status qc_awq_write_checkpoint(const char *out_dir, const char *model_dir, const char *const *parts, int n_parts,
                                  const qc_awq_config *cfg, const char *const *unquantized_modules, int n_unq,
                                  uint64_t max_shard_bytes, bool overwrite) {
    if (!out_dir || !*out_dir || !model_dir || !cfg || n_parts < 1 || !parts || n_unq < 0 ||
        (n_unq > 0 && !unquantized_modules))
        return qc_fail(QC_ERR_ARG, "qc_awq_write_checkpoint: missing output directory, model, parts or config");
    if (cfg->bits != 4) return qc_fail(QC_ERR_ARG, "awq checkpoint: bits = %d (AWQ GEMM stores 4 bits only)", cfg->bits);
    if (cfg->group_size < 1)
        return qc_fail(QC_ERR_ARG, "awq checkpoint: group_size = %d (must be positive; spec B.1: never -1)",
                       cfg->group_size);
    if (max_shard_bytes == 0) max_shard_bytes = QC_AWQ_DEFAULT_SHARD_BYTES;
    if (cfg->group_size != 32 && cfg->group_size != 64 && cfg->group_size != 128)
        QC_LOGW("awq w4 g%d: vLLM's awq_marlin kernel needs group_size 32/64/128; this checkpoint runs on the slower "
                "awq kernel there (spec F.3)", cfg->group_size);

    const qc_ckpt_spec spec = {"awq checkpoint", "AWQ", check_qmodule, cfg};
    qc_ckpt *c;
    qc_status st = qc_ckpt_open(&c, &spec, out_dir, model_dir, parts, n_parts, unquantized_modules, n_unq,
                                max_shard_bytes, overwrite, cfg->meta_json);
    if (st != QC_OK) return st;
    const qc_ckpt_modules *m = qc_ckpt_modules_of(c);
    cJSON *qcfg = NULL, *legacy = NULL;
    /* modules_to_not_convert holds block-relative names ("mlp.down_proj"): AutoAWQ matches the entries as
     * substrings of the block-relative names of each block's linears, vLLM and transformers of the full
     * paths, so only these names work in all three. */
    qc_strset qrel = {0}, urel = {0};
    if ((st = qc_ckpt_block_lists(m, &qrel, &urel)) == QC_OK && (st = add_fused_names(&urel, &qrel)) == QC_OK &&
        (st = check_not_convert(m, &urel)) == QC_OK &&
        !make_configs(cfg, m, &urel, qc_ckpt_extra_meta(c), &qcfg, &legacy))
        st = qc_fail(QC_ERR_NOMEM, "quantization_config: out of memory");
    qc_strset_free(&qrel);
    if (st == QC_OK) {
        qc_shard_meta sm;
        qc_awq_shard_meta(cfg, &sm);
        cJSON *rep = cfg->report_json ? cJSON_Parse(cfg->report_json) : NULL;
        const qc_ckpt_file side[] = {{"quant_config.json", legacy}, {"qcal_report.json", rep}};
        if (cfg->report_json && !cJSON_IsObject(rep)) st = qc_fail(QC_ERR_ARG, "awq checkpoint: the report is not a JSON object");
        else st = qc_ckpt_commit(c, qcfg, side, rep ? 2 : 1, qc_shard_meta_pairs(&sm), sm.n);
        cJSON_Delete(rep);
    }
    qc_strset_free(&urel);
    cJSON_Delete(qcfg);
    cJSON_Delete(legacy);
    qc_ckpt_close(c);
    return st;
}

/* ---- detect ---- */

static qc_status parse_qcfg(const cJSON *qc, const char *what, bool missing_method_is_awq, bool *is_awq,
                            qc_awq_config *cfg) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    if (m && !cJSON_IsNull(m)) {
        if (!cJSON_IsString(m)) return qc_fail(QC_ERR_FORMAT, "%s: quant_method is not a string", what);
        if (!qc_str_ieq(m->valuestring, "awq")) return QC_OK; /* gptq, fp8, ...: not ours */
    } else if (!missing_method_is_awq) {
        return QC_OK;
    }
    qc_awq_config c = {.bits = 4, .group_size = 128};
    bool found, zero_point;
    qc_status st = qc_json_get_int(qc, "bits", "w_bit", what, &found, &c.bits);
    if (st != QC_OK) return st;
    if (c.bits != 4) return qc_fail(QC_ERR_UNSUPPORTED, "%s: bits = %d (AWQ GEMM stores 4 bits only)", what, c.bits);
    if ((st = qc_json_get_int(qc, "group_size", "q_group_size", what, &found, &c.group_size)) != QC_OK) return st;
    if (!found) c.group_size = 128;
    if (c.group_size != -1 && c.group_size < 1)
        return qc_fail(QC_ERR_FORMAT, "%s: group_size = %d (-1 or positive)", what, c.group_size);
    if ((st = qc_json_get_bool(qc, "zero_point", what, true, &zero_point)) != QC_OK) return st;
    if (!zero_point)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: zero_point false (symmetric AWQ has no GEMM layout)", what);
    /* "version" (AutoAWQ, transformers 4) or "format" (transformers 5) names the layout; a "backend" of
     * "llm-awq" means llm-awq's own packing, whatever the version says */
    static const char *const keys[3] = {"version", "format", "backend"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(qc, keys[i]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsString(v)) return qc_fail(QC_ERR_FORMAT, "%s: %s is not a string", what, keys[i]);
        if (i < 2 ? !qc_str_ieq(v->valuestring, "gemm") : qc_str_ieq(v->valuestring, "llm-awq"))
            return qc_fail(QC_ERR_UNSUPPORTED, "%s: AWQ %s \"%s\" (qcal reads the AutoAWQ GEMM layout only)", what,
                           keys[i], v->valuestring);
    }
    *cfg = c;
    *is_awq = true;
    return QC_OK;
}

qc_status qc_awq_detect(const char *model_dir, bool *is_awq, qc_awq_config *cfg) {
    if (!model_dir || !is_awq || !cfg) return qc_fail(QC_ERR_ARG, "qc_awq_detect: NULL argument");
    *is_awq = false;
    memset(cfg, 0, sizeof *cfg);
    static const char *const files[2] = {"config.json", "quant_config.json"};
    for (int i = 0; i < 2; i++) {
        char *path = qc_path_join(model_dir, files[i]);
        if (!path) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", model_dir);
        if (i == 1 && !qc_file_exists(path)) {
            free(path);
            return QC_OK;
        }
        cJSON *root;
        qc_status st = qc_json_read_object(path, &root);
        const cJSON *qc = i == 0 && st == QC_OK ? cJSON_GetObjectItemCaseSensitive(root, "quantization_config") : root;
        bool done = st != QC_OK || (qc && !cJSON_IsNull(qc));
        if (st == QC_OK && done) {
            /* vLLM and TGI fall back to quant_config.json only when config.json has no quantization_config */
            if (!cJSON_IsObject(qc)) st = qc_fail(QC_ERR_FORMAT, "%s: quantization_config is not an object", path);
            else st = parse_qcfg(qc, path, i == 1, is_awq, cfg);
        }
        cJSON_Delete(root);
        free(path);
        if (done) return st;
    }
    return QC_OK;
}

/* ---- load ---- */

qc_status qc_awq_load_linear(const qc_weights *w, const char *prefix, const qc_awq_config *cfg, int N, int K,
                             float *W, float *bias, bool *has_bias) {
    if (!w || !prefix || !cfg || !W) return qc_fail(QC_ERR_ARG, "qc_awq_load_linear: NULL argument");
    if (has_bias) *has_bias = false;
    const int gs = cfg->group_size == -1 ? K : cfg->group_size;
    const char *why;
    if (!qc_awq_shape_ok(N, K, cfg->bits, gs, &why))
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: N = %d, K = %d, bits = %d, group_size = %d: %s", prefix, N, K,
                       cfg->bits, cfg->group_size, why);
    const int G = K / gs;
    const qc_tensor *tw, *tz, *ts, *tb;
    qc_status st;
    if ((st = qc_weights_find_checked(w, "AWQ", prefix, "qweight", QC_DTYPE_I32, 2, (int64_t[]){K, N / 8}, true,
                                      &tw)) ||
        (st = qc_weights_find_checked(w, "AWQ", prefix, "qzeros", QC_DTYPE_I32, 2, (int64_t[]){G, N / 8}, true,
                                      &tz)) ||
        (st = qc_weights_find_checked(w, "AWQ", prefix, "scales", QC_DTYPE_F16, 2, (int64_t[]){G, N}, true, &ts)) ||
        (st = qc_weights_find_checked(w, "AWQ", prefix, "bias", QC_DTYPE_F16, 1, (int64_t[]){N}, false, &tb)))
        return st;

    qc_qlinear q;
    if ((st = qc_qlinear_alloc(&q, N, K, 4, gs, false, false)) != QC_OK) return st;
    int32_t *qweight = qc_tensor_dup(tw), *qzeros = qc_tensor_dup(tz);
    uint16_t *scales16 = qc_tensor_dup(ts);
    if (!qweight || !qzeros || !scales16) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", prefix);
    else if ((st = qc_awq_unpack(N, K, gs, qweight, qzeros, scales16, q.codes, q.zeros, q.scales)) == QC_OK) {
        qc_qlinear_dequant(&q, W);
        if (tb && has_bias) *has_bias = true;
        if (tb && bias) st = qc_tensor_read_f32(tb, 0, N, bias);
    }
    free(qweight);
    free(qzeros);
    free(scales16);
    qc_qlinear_free(&q);
    return st;
}
