/* gptq_format.c - GPTQ packing, unpacking, dequantization and reading (layout in gptq_format.h). The
 * checkpoint writer lives in gptq_write.c. */
#include "gptq_format.h"

#include "ckpt_write.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static bool bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }

static int gs_eff(int group_size, int K) { return group_size == -1 ? K : group_size; }

/* ---- the in-memory layer ---- */

qc_status qc_qlinear_alloc(qc_qlinear *q, int N, int K, int bits, int group_size, bool sym, bool has_bias) {
    QC_ASSERT(q);
    memset(q, 0, sizeof *q);
    if (!bits_ok(bits)) return qc_fail(QC_ERR_ARG, "qlinear: bits = %d (GPTQ supports 2, 3, 4, 8)", bits);
    if (N < 1 || K < 1) return qc_fail(QC_ERR_ARG, "qlinear: shape N = %d, K = %d", N, K);
    if (group_size != -1 && group_size < 1)
        return qc_fail(QC_ERR_ARG, "qlinear: group_size = %d (-1 or positive)", group_size);
    int gs = gs_eff(group_size, K);
    if (K % gs != 0) return qc_fail(QC_ERR_ARG, "qlinear: K = %d is not a multiple of group_size %d", K, gs);
    int G = K / gs;
    size_t nk;
    if (!qc_mul_ok((size_t)N, (size_t)K, &nk)) return qc_fail(QC_ERR_ARG, "qlinear: N*K overflows");
    q->N = N;
    q->K = K;
    q->bits = bits;
    q->group_size = group_size;
    q->n_groups = G;
    q->sym = sym;
    q->codes = qc_calloc(nk, 1);
    q->scales = qc_calloc((size_t)G * (size_t)N, sizeof *q->scales);
    q->zeros = qc_calloc((size_t)G * (size_t)N, sizeof *q->zeros);
    q->g_idx = qc_calloc((size_t)K, sizeof *q->g_idx);
    q->bias = has_bias ? qc_calloc((size_t)N, sizeof *q->bias) : NULL;
    if (!q->codes || !q->scales || !q->zeros || !q->g_idx || (has_bias && !q->bias)) {
        qc_qlinear_free(q);
        return qc_fail(QC_ERR_NOMEM, "qlinear: cannot allocate a %d x %d layer", N, K);
    }
    for (int k = 0; k < K; k++) q->g_idx[k] = k / gs;
    if (sym)
        for (size_t i = 0; i < (size_t)G * (size_t)N; i++) q->zeros[i] = 1 << (bits - 1);
    return QC_OK;
}

void qc_qlinear_free(qc_qlinear *q) {
    if (!q) return;
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    free(q->g_idx);
    free(q->bias);
    memset(q, 0, sizeof *q);
}

void qc_qlinear_dequant(const qc_qlinear *q, float *W) {
    const int N = q->N, K = q->K, G = q->n_groups;
    for (int n = 0; n < N; n++) {
        const uint8_t *c = q->codes + (size_t)n * K;
        float *w = W + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            int g = q->g_idx[k];
            QC_ASSERT(g >= 0 && g < G);
            size_t gi = (size_t)g * N + n;
            w[k] = q->scales[gi] * (float)((int32_t)c[k] - q->zeros[gi]);
        }
    }
}

bool qc_gptq_shape_ok(int N, int K, int bits, int group_size, const char **why) {
    const char *w = NULL;
    if (!bits_ok(bits)) w = "bits must be 2, 3, 4 or 8";
    else if (N < 1 || K < 1) w = "N and K must be positive";
    else if (K % 32 != 0) w = "in_features (K) must be a multiple of 32";
    else if (N % 32 != 0) w = "out_features (N) must be a multiple of 32";
    else if (group_size != -1 && group_size < 1) w = "group_size must be -1 or positive";
    else if (K % gs_eff(group_size, K) != 0) w = "in_features (K) must be a multiple of group_size";
    if (why) *why = w;
    return w == NULL;
}

/* ---- bit streams (A.2) ----
 * A stream of `count` b-bit values (count % 32 == 0) occupies count*b/32 words, word i at words[i*stride].
 * Fast versions move 32 values <-> b words through a 64-bit accumulator; the plain twins go bit by bit. */

static void stream_pack_fast(const uint32_t *v, size_t vstride, size_t count, int b, uint32_t *words,
                             size_t wstride) {
    for (size_t c = 0; c < count; c += 32) {
        uint64_t acc = 0;
        int nb = 0;
        uint32_t *out = words + (c / 32) * (size_t)b * wstride;
        for (int i = 0; i < 32; i++) {
            acc |= (uint64_t)v[(c + i) * vstride] << nb;
            nb += b;
            if (nb >= 32) {
                *out = (uint32_t)acc;
                out += wstride;
                acc >>= 32;
                nb -= 32;
            }
        }
    }
}

static void stream_unpack_fast(const uint32_t *words, size_t wstride, size_t count, int b, uint32_t *v,
                               size_t vstride) {
    const uint32_t mask = (1u << b) - 1;
    for (size_t c = 0; c < count; c += 32) {
        const uint32_t *in = words + (c / 32) * (size_t)b * wstride;
        uint64_t acc = 0;
        int nb = 0;
        for (int i = 0; i < 32; i++) {
            if (nb < b) {
                acc |= (uint64_t)*in << nb;
                in += wstride;
                nb += 32;
            }
            v[(c + i) * vstride] = (uint32_t)acc & mask;
            acc >>= b;
            nb -= b;
        }
    }
}

static void stream_pack_ref(const uint32_t *v, size_t vstride, size_t count, int b, uint32_t *words,
                            size_t wstride) {
    for (size_t w = 0; w < count * (size_t)b / 32; w++) words[w * wstride] = 0;
    for (size_t i = 0; i < count; i++)
        for (int j = 0; j < b; j++) {
            size_t bit = i * (size_t)b + (size_t)j;
            words[(bit / 32) * wstride] |= ((v[i * vstride] >> j) & 1u) << (bit % 32);
        }
}

static void stream_unpack_ref(const uint32_t *words, size_t wstride, size_t count, int b, uint32_t *v,
                              size_t vstride) {
    for (size_t i = 0; i < count; i++) {
        uint32_t x = 0;
        for (int j = 0; j < b; j++) {
            size_t bit = i * (size_t)b + (size_t)j;
            x |= ((words[(bit / 32) * wstride] >> (bit % 32)) & 1u) << j;
        }
        v[i * vstride] = x;
    }
}

typedef void (*pack_fn)(const uint32_t *, size_t, size_t, int, uint32_t *, size_t);
typedef void (*unpack_fn)(const uint32_t *, size_t, size_t, int, uint32_t *, size_t);

/* ---- pack / unpack ---- */

static qc_status check_pack_params(const qc_qlinear *q, bool v2) {
    const char *why;
    if (!qc_gptq_shape_ok(q->N, q->K, q->bits, q->group_size, &why))
        return qc_fail(QC_ERR_ARG, "gptq pack: N = %d, K = %d, bits = %d, group_size = %d: %s", q->N, q->K, q->bits,
                       q->group_size, why);
    if (q->n_groups != q->K / gs_eff(q->group_size, q->K))
        return qc_fail(QC_ERR_ARG, "gptq pack: n_groups = %d, but K = %d and group_size = %d make %d", q->n_groups,
                       q->K, q->group_size, q->K / gs_eff(q->group_size, q->K));
    if (!v2 && !q->sym)
        return qc_fail(QC_ERR_ARG, "gptq pack: asymmetric quantization cannot be stored in checkpoint_format "
                       "\"gptq\" (v1 stores z-1; a zero point of 0 becomes -1, which loaders corrupt or read as "
                       "2^bits): use gptq_v2 or awq for asym");
    const int N = q->N, K = q->K, G = q->n_groups, maxq = (1 << q->bits) - 1;
    for (int k = 0; k < K; k++)
        if (q->g_idx[k] < 0 || q->g_idx[k] >= G)
            return qc_fail(QC_ERR_ARG, "gptq pack: g_idx[%d] = %d outside [0, %d)", k, q->g_idx[k], G);
    const int32_t zsym = 1 << (q->bits - 1), lo = v2 ? 0 : 1, hi = v2 ? maxq : maxq + 1;
    for (size_t i = 0; i < (size_t)G * (size_t)N; i++) {
        int32_t z = q->zeros[i];
        if (q->sym && z != zsym)
            return qc_fail(QC_ERR_ARG, "gptq pack: sym layer with zero[%zu][%zu] = %d, not 2^(bits-1) = %d (Marlin "
                           "ignores qzeros for sym)", i / (size_t)N, i % (size_t)N, z, zsym);
        if (z < lo || z > hi)
            return qc_fail(QC_ERR_ARG, "gptq pack: zero[%zu][%zu] = %d cannot be stored in %s (range [%d, %d])",
                           i / (size_t)N, i % (size_t)N, z, v2 ? "gptq_v2" : "gptq", lo, hi);
    }
    return QC_OK;
}

static qc_status scales_to_fp16(const qc_qlinear *q, uint16_t *scales16) {
    size_t gn = (size_t)q->n_groups * (size_t)q->N;
    for (size_t i = 0; i < gn; i++) {
        uint16_t h = qc_f32_to_fp16(q->scales[i]);
        if ((h & 0x7c00u) == 0x7c00u)
            return qc_fail(QC_ERR_NUMERIC, "gptq pack: scale[%zu][%zu] = %g is not finite in fp16", i / (size_t)q->N,
                           i % (size_t)q->N, (double)q->scales[i]);
        scales16[i] = h;
    }
    return QC_OK;
}

qc_status qc_gptq_pack_prepare(const qc_qlinear *q, bool v2, uint16_t *scales16) {
    qc_status st = check_pack_params(q, v2);
    return st != QC_OK ? st : scales_to_fp16(q, scales16);
}

static qc_status pack_with(const qc_qlinear *q, bool v2, int32_t *qweight, int32_t *qzeros, uint16_t *scales16,
                           pack_fn pack) {
    QC_ASSERT(q && qweight && qzeros && scales16);
    qc_status st = qc_gptq_pack_prepare(q, v2, scales16);
    if (st != QC_OK) return st;
    const int maxq = (1 << q->bits) - 1;
    for (size_t i = 0; i < (size_t)q->N * (size_t)q->K; i++)
        if (q->codes[i] > maxq)
            return qc_fail(QC_ERR_ARG, "gptq pack: code[%zu][%zu] = %u exceeds maxq %d", i / (size_t)q->K,
                           i % (size_t)q->K, q->codes[i], maxq);
    const int N = q->N, K = q->K, G = q->n_groups, b = q->bits;
    size_t wide = (size_t)(K > N ? K : N);
    uint32_t *tmp = qc_malloc(wide * sizeof *tmp);
    if (!tmp) return qc_fail(QC_ERR_NOMEM, "gptq pack: out of memory");
    /* qweight column n: the K codes of row n of `codes`, words strided by N. */
    for (int n = 0; n < N; n++) {
        const uint8_t *c = q->codes + (size_t)n * K;
        for (int k = 0; k < K; k++) tmp[k] = c[k];
        pack(tmp, 1, (size_t)K, b, (uint32_t *)qweight + n, (size_t)N);
    }
    /* qzeros row g: the N stored zero points, contiguous words. */
    const size_t zw = (size_t)N * b / 32;
    for (int g = 0; g < G; g++) {
        const int32_t *z = q->zeros + (size_t)g * N;
        for (int n = 0; n < N; n++) tmp[n] = (uint32_t)(v2 ? z[n] : z[n] - 1);
        pack(tmp, 1, (size_t)N, b, (uint32_t *)qzeros + (size_t)g * zw, 1);
    }
    free(tmp);
    return QC_OK;
}

qc_status qc_gptq_pack(const qc_qlinear *q, bool v2, int32_t *qweight, int32_t *qzeros, uint16_t *scales16) {
    return pack_with(q, v2, qweight, qzeros, scales16, stream_pack_fast);
}

qc_status qc_gptq_pack_ref(const qc_qlinear *q, bool v2, int32_t *qweight, int32_t *qzeros, uint16_t *scales16) {
    return pack_with(q, v2, qweight, qzeros, scales16, stream_pack_ref);
}

static qc_status unpack_with(int N, int K, int bits, int n_groups, bool v2, const int32_t *qweight,
                             const int32_t *qzeros, const uint16_t *scales16, uint8_t *codes, int32_t *zeros,
                             float *scales, unpack_fn unpack) {
    if (!bits_ok(bits) || N < 1 || K < 1 || K % 32 != 0 || N % 32 != 0 || n_groups < 1 || n_groups > K)
        return qc_fail(QC_ERR_ARG, "gptq unpack: N = %d, K = %d, bits = %d, groups = %d (need bits in {2,3,4,8}, "
                       "N and K multiples of 32, 1 <= groups <= K)", N, K, bits, n_groups);
    QC_ASSERT(!qweight == !codes && !qzeros == !zeros && !scales16 == !scales);
    const int G = n_groups, b = bits;
    size_t wide = (size_t)(K > N ? K : N);
    uint32_t *tmp = qc_malloc(wide * sizeof *tmp);
    if (!tmp) return qc_fail(QC_ERR_NOMEM, "gptq unpack: out of memory");
    if (qweight) {
        for (int n = 0; n < N; n++) {
            unpack((const uint32_t *)qweight + n, (size_t)N, (size_t)K, b, tmp, 1);
            uint8_t *c = codes + (size_t)n * K;
            for (int k = 0; k < K; k++) c[k] = (uint8_t)tmp[k];
        }
    }
    if (qzeros) {
        const size_t zw = (size_t)N * b / 32;
        for (int g = 0; g < G; g++) {
            unpack((const uint32_t *)qzeros + (size_t)g * zw, 1, (size_t)N, b, tmp, 1);
            int32_t *z = zeros + (size_t)g * N;
            for (int n = 0; n < N; n++) z[n] = (int32_t)tmp[n] + (v2 ? 0 : 1);
        }
    }
    if (scales16)
        for (size_t i = 0; i < (size_t)G * (size_t)N; i++) scales[i] = qc_fp16_to_f32(scales16[i]);
    free(tmp);
    return QC_OK;
}

qc_status qc_gptq_unpack(int N, int K, int bits, int n_groups, bool v2, const int32_t *qweight,
                         const int32_t *qzeros, const uint16_t *scales16, uint8_t *codes, int32_t *zeros,
                         float *scales) {
    return unpack_with(N, K, bits, n_groups, v2, qweight, qzeros, scales16, codes, zeros, scales, stream_unpack_fast);
}

qc_status qc_gptq_unpack_ref(int N, int K, int bits, int n_groups, bool v2, const int32_t *qweight,
                             const int32_t *qzeros, const uint16_t *scales16, uint8_t *codes, int32_t *zeros,
                             float *scales) {
    return unpack_with(N, K, bits, n_groups, v2, qweight, qzeros, scales16, codes, zeros, scales, stream_unpack_ref);
}

/* ---- detect ---- */

static qc_status parse_qcfg(const cJSON *qc, const char *what, bool missing_method_is_gptq, bool *is_gptq,
                            qc_gptq_config *cfg) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    if (m && !cJSON_IsNull(m)) {
        if (!cJSON_IsString(m)) return qc_fail(QC_ERR_FORMAT, "%s: quant_method is not a string", what);
        if (!qc_str_ieq(m->valuestring, "gptq")) return QC_OK; /* awq, fp8, ...: not ours */
    } else if (!missing_method_is_gptq) {
        return QC_OK;
    }
    qc_gptq_config c = {0};
    bool found;
    qc_status st = qc_json_get_int(qc, "bits", "w_bit", what, &found, &c.bits);
    if (st != QC_OK) return st;
    if (!found) return qc_fail(QC_ERR_FORMAT, "%s: quantization_config has no 'bits'", what);
    if (!bits_ok(c.bits))
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: bits = %d (GPTQ supports 2, 3, 4, 8)", what, c.bits);
    if ((st = qc_json_get_int(qc, "group_size", "q_group_size", what, &found, &c.group_size)) != QC_OK) return st;
    if (!found) c.group_size = -1;
    if (c.group_size != -1 && c.group_size < 1)
        return qc_fail(QC_ERR_FORMAT, "%s: group_size = %d (-1 or positive)", what, c.group_size);
    if ((st = qc_json_get_bool(qc, "sym", what, true, &c.sym)) != QC_OK) return st;
    if ((st = qc_json_get_bool(qc, "desc_act", what, false, &c.desc_act)) != QC_OK) return st;
    if ((st = qc_json_get_bool(qc, "static_groups", what, false, &c.static_groups)) != QC_OK) return st;
    if ((st = qc_json_get_bool(qc, "true_sequential", what, true, &c.true_sequential)) != QC_OK) return st;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(qc, "checkpoint_format");
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f)) return qc_fail(QC_ERR_FORMAT, "%s: checkpoint_format is not a string", what);
        if (qc_str_ieq(f->valuestring, "gptq_v2")) c.v2 = true;
        else if (!qc_str_ieq(f->valuestring, "gptq"))
            return qc_fail(QC_ERR_UNSUPPORTED, "%s: checkpoint_format \"%s\" (qcal reads \"gptq\" and \"gptq_v2\")",
                           what, f->valuestring);
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(qc, "damp_percent");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(qc, "meta");
    if ((!d || cJSON_IsNull(d)) && cJSON_IsObject(meta)) d = cJSON_GetObjectItemCaseSensitive(meta, "damp_percent");
    if (d && !cJSON_IsNull(d)) {
        if (!cJSON_IsNumber(d)) return qc_fail(QC_ERR_FORMAT, "%s: damp_percent is not a number", what);
        c.damp_percent = d->valuedouble;
    }
    *cfg = c;
    *is_gptq = true;
    return QC_OK;
}

qc_status qc_gptq_detect(const char *model_dir, bool *is_gptq, qc_gptq_config *cfg) {
    if (!model_dir || !is_gptq || !cfg) return qc_fail(QC_ERR_ARG, "qc_gptq_detect: NULL argument");
    *is_gptq = false;
    memset(cfg, 0, sizeof *cfg);
    char *path = qc_path_join(model_dir, "config.json");
    if (!path) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", model_dir);
    cJSON *root;
    qc_status st = qc_json_read_object(path, &root);
    if (st != QC_OK) {
        free(path);
        return st;
    }
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (qc && !cJSON_IsNull(qc)) {
        if (!cJSON_IsObject(qc)) st = qc_fail(QC_ERR_FORMAT, "%s: quantization_config is not an object", path);
        else st = parse_qcfg(qc, path, false, is_gptq, cfg);
        cJSON_Delete(root);
        free(path);
        return st;
    }
    cJSON_Delete(root);
    free(path);
    /* vLLM and TGI fall back to quantize_config.json; AutoGPTQ reads it first. */
    if (!(path = qc_path_join(model_dir, "quantize_config.json"))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    if (!qc_file_exists(path)) {
        free(path);
        return QC_OK;
    }
    if ((st = qc_json_read_object(path, &root)) == QC_OK) {
        st = parse_qcfg(root, path, true, is_gptq, cfg);
        cJSON_Delete(root);
    }
    free(path);
    return st;
}

/* ---- load ---- */

qc_status qc_gptq_load_linear(const qc_weights *w, const char *prefix, const qc_gptq_config *cfg, int N, int K,
                              float *W, float *bias, bool *has_bias) {
    if (!w || !prefix || !cfg || !W) return qc_fail(QC_ERR_ARG, "qc_gptq_load_linear: NULL argument");
    if (has_bias) *has_bias = false;
    const int b = cfg->bits;
    const char *why;
    if (!qc_gptq_shape_ok(N, K, b, cfg->group_size, &why))
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: N = %d, K = %d, bits = %d, group_size = %d: %s", prefix, N, K, b,
                       cfg->group_size, why);
    const int gs = gs_eff(cfg->group_size, K), G = K / gs;
    const qc_tensor *tw, *tz, *ts, *tg, *tb;
    qc_status st;
    const int64_t sw[2] = {(int64_t)K / 32 * b, N}, sz[2] = {G, (int64_t)N / 32 * b}, ss[2] = {G, N};
    const int64_t sg[1] = {K}, sb[1] = {N};
    if ((st = qc_weights_find_checked(w, "GPTQ", prefix, "qweight", QC_DTYPE_I32, 2, sw, true, &tw)) ||
        (st = qc_weights_find_checked(w, "GPTQ", prefix, "qzeros", QC_DTYPE_I32, 2, sz, true, &tz)) ||
        (st = qc_weights_find_checked(w, "GPTQ", prefix, "scales", QC_DTYPE_F16, 2, ss, true, &ts)) ||
        (st = qc_weights_find_checked(w, "GPTQ", prefix, "g_idx", QC_DTYPE_I32, 1, sg, cfg->desc_act, &tg)) ||
        (st = qc_weights_find_checked(w, "GPTQ", prefix, "bias", QC_DTYPE_F16, 1, sb, false, &tb)))
        return st;

    qc_qlinear q;
    if ((st = qc_qlinear_alloc(&q, N, K, b, cfg->group_size, cfg->sym, false)) != QC_OK) return st;
    int32_t *qweight = qc_tensor_dup(tw), *qzeros = qc_tensor_dup(tz);
    uint16_t *scales16 = qc_tensor_dup(ts);
    if (!qweight || !qzeros || !scales16) {
        st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", prefix);
        goto done;
    }
    if ((st = qc_gptq_unpack(N, K, b, G, cfg->v2, qweight, qzeros, scales16, q.codes, q.zeros, q.scales)) != QC_OK)
        goto done;
    if (tg) {
        bool trivial = true;
        for (int k = 0; k < K; k++) {
            int32_t g;
            memcpy(&g, (const char *)tg->data + 4 * (size_t)k, 4);
            if (g < 0 || g >= G) {
                st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s.g_idx': g_idx[%d] = %d outside [0, %d)", tg->file, prefix,
                             k, g, G);
                goto done;
            }
            trivial &= g == k / gs;
            if (cfg->desc_act) q.g_idx[k] = g;
        }
        if (!cfg->desc_act && !trivial)
            QC_LOGW("%s: '%s.g_idx' is not k / group_size but desc_act is false: dequantizing as vLLM does (g = k / %d);"
                    " ExLlamaV2 would follow g_idx instead", tg->file, prefix, gs);
    }
    qc_qlinear_dequant(&q, W);
    if (tb) {
        if (has_bias) *has_bias = true;
        if (bias && (st = qc_tensor_read_f32(tb, 0, N, bias)) != QC_OK) goto done;
    }
done:
    free(qweight);
    free(qzeros);
    free(scales16);
    qc_qlinear_free(&q);
    return st;
}
