/* gptq_write.c - writing GPTQ part files and whole checkpoint directories (contract in gptq_format.h,
 * spec A.5-A.7): the GPTQ tensors, their checks and quantization_config. Sharding, the index, config.json,
 * side files and the atomic temp-dir-and-rename are ckpt_write.c's, shared with the AWQ writer. */
#include "ckpt_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gs_eff(int group_size, int K) { return group_size == -1 ? K : group_size; }

/* ---- part files ---- */

static bool gptq_layout(const qc_qlinear *q, qc_part_tensor *t, const char **why) {
    if (!qc_gptq_shape_ok(q->N, q->K, q->bits, q->group_size, why)) return false;
    const int64_t N = q->N, K = q->K, G = q->n_groups, b = q->bits;
    t[0] = (qc_part_tensor){"qweight", QC_DTYPE_I32, 2, {K * b / 32, N}};
    t[1] = (qc_part_tensor){"qzeros", QC_DTYPE_I32, 2, {G, N * b / 32}};
    t[2] = (qc_part_tensor){"scales", QC_DTYPE_F16, 2, {G, N}};
    t[3] = (qc_part_tensor){"g_idx", QC_DTYPE_I32, 1, {K, 0}};
    return true;
}

static qc_status gptq_pack_bufs(const qc_qlinear *q, const void *user, void *const *bufs) {
    qc_status st = qc_gptq_pack(q, *(const bool *)user, bufs[0], bufs[1], bufs[2]);
    if (st == QC_OK) memcpy(bufs[3], q->g_idx, (size_t)q->K * sizeof *q->g_idx);
    return st;
}

qc_status qc_gptq_write_part(const char *path, const qc_qlinear *const *layers, const char *const *prefixes, int n,
                             bool v2) {
    const qc_part_format fmt = {"gptq", 4, gptq_layout, gptq_pack_bufs, &v2};
    return qc_ckpt_write_part(path, layers, prefixes, n, &fmt);
}

/* ---- checks on the parts ---- */

static uint32_t rd_u32(const void *base, size_t i) {
    uint32_t v;
    memcpy(&v, (const char *)base + 4 * i, 4);
    return v;
}

/* A quantized module P (P.qweight present): every tensor's dtype/shape and the content invariants that
 * loaders rely on (A.3, A.4, C.4.3). */
static qc_status check_qmodule(const qc_ckpt *c, const char *P, const qc_tensor *tw, const void *user) {
    const qc_gptq_config *cfg = user;
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
    const qc_tensor *tz = qc_ckpt_find(c, P, "qzeros"), *ts = qc_ckpt_find(c, P, "scales");
    const qc_tensor *tg = qc_ckpt_find(c, P, "g_idx"), *tb = qc_ckpt_find(c, P, "bias");
    const qc_tensor *twt = qc_ckpt_find(c, P, "weight");
    if (!tz || !ts || !tg)
        return qc_fail(QC_ERR_ARG, "%s: module '%s' has a qweight but no %s in the parts", tw->file, P,
                       !tz ? "qzeros" : !ts ? "scales" : "g_idx");
    if (twt) return qc_fail(QC_ERR_ARG, "%s: module '%s' has both 'weight' and 'qweight'", twt->file, P);
    if (tz->dtype != QC_DTYPE_I32 || !qc_tensor_shape_is(tz, 2, G, (int64_t)N * b / 32))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be I32 [%d, %d]", tz->file, tz->name, G, N * b / 32);
    if (!qc_is_float_dtype(ts->dtype) || !qc_tensor_shape_is(ts, 2, G, N))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d, %d]", ts->file, ts->name, G, N);
    if (tg->dtype != QC_DTYPE_I32 || !qc_tensor_shape_is(tg, 1, K, 0))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be I32 [%d]", tg->file, tg->name, K);
    if (tb && (!qc_is_float_dtype(tb->dtype) || !qc_tensor_shape_is(tb, 1, N, 0)))
        return qc_fail(QC_ERR_ARG, "%s: tensor '%s' must be floating [%d]", tb->file, tb->name, N);

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

static cJSON *make_qconfig(const qc_gptq_config *cfg, const qc_ckpt_modules *m, const qc_strset *qrel,
                           bool need_list, const cJSON *extra_meta) {
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
    if (m->unquantized.n) ADD(qc_json_set(q, "dynamic", qc_ckpt_skip_rules(m))); /* GPTQModel reads only this */
    cJSON *qz = cJSON_AddArrayToObject(meta, "quantizer"), *qs;
    ADD(qz && (qs = cJSON_CreateString(cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION)));
    ADD(cJSON_AddItemToArray(qz, qs));
    ADD(cJSON_AddNumberToObject(meta, "damp_percent", cfg->damp_percent));
    ADD(cJSON_AddBoolToObject(meta, "static_groups", cfg->static_groups));
    ADD(cJSON_AddBoolToObject(meta, "true_sequential", cfg->true_sequential));
    ADD(qc_json_merge(meta, extra_meta));
    ADD(cJSON_AddItemToObject(q, "meta", meta));
#undef ADD
    return q;
oom:
    if (q && meta && cJSON_GetObjectItemCaseSensitive(q, "meta") == meta) meta = NULL;
    cJSON_Delete(q);
    cJSON_Delete(meta);
    return NULL;
}

void qc_gptq_shard_meta(const qc_gptq_config *cfg, qc_shard_meta *out) {
    snprintf(out->num[0], sizeof out->num[0], "%d", cfg->bits);
    snprintf(out->num[1], sizeof out->num[1], "%d", cfg->group_size);
    snprintf(out->num[2], sizeof out->num[2], "%g", cfg->damp_percent);
    /* AutoGPTQ's informational metadata strings (A.7); never tensors of these names. */
    const char *kv[][2] = {
        {"gptq_quant_method", "gptq"}, {"gptq_bits", out->num[0]}, {"gptq_group_size", out->num[1]},
        {"gptq_desc_act", cfg->desc_act ? "True" : "False"}, {"gptq_damp_percent", out->num[2]},
        {"gptq_checkpoint_format", cfg->v2 ? "gptq_v2" : "gptq"},
        {"quantizer", cfg->quantizer ? cfg->quantizer : "qcal:" QC_VERSION},
    };
    _Static_assert(sizeof kv / sizeof *kv <= QC_SHARD_META_MAX, "qc_shard_meta too small");
    memcpy(out->kv, kv, sizeof kv);
    out->n = (int)(sizeof kv / sizeof *kv);
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

    const qc_ckpt_spec spec = {"gptq checkpoint", "GPTQ", check_qmodule, cfg};
    qc_ckpt *c;
    if ((st = qc_ckpt_open(&c, &spec, out_dir, model_dir, parts, n_parts, unquantized_modules, n_unq,
                           max_shard_bytes, overwrite, cfg->meta_json)) != QC_OK)
        return st;
    const qc_ckpt_modules *m = qc_ckpt_modules_of(c);
    qc_strset qrel = {0};
    cJSON *qcfg = NULL;
    if ((st = qc_ckpt_block_lists(m, &qrel, NULL)) == QC_OK &&
        !(qcfg = make_qconfig(cfg, m, &qrel, m->declared || m->unquantized.n > 0, qc_ckpt_extra_meta(c))))
        st = qc_fail(QC_ERR_NOMEM, "quantization_config: out of memory");
    if (st == QC_OK) {
        qc_shard_meta sm;
        qc_gptq_shard_meta(cfg, &sm);
        cJSON *rep = cfg->report_json ? cJSON_Parse(cfg->report_json) : NULL;
        const qc_ckpt_file side[] = {{"quantize_config.json", qcfg}, {"qcal_report.json", rep}};
        if (cfg->report_json && !cJSON_IsObject(rep)) st = qc_fail(QC_ERR_ARG, "gptq checkpoint: the report is not a JSON object");
        else st = qc_ckpt_commit(c, qcfg, side, rep ? 2 : 1, qc_shard_meta_pairs(&sm), sm.n);
        cJSON_Delete(rep);
    }
    qc_strset_free(&qrel);
    cJSON_Delete(qcfg);
    qc_ckpt_close(c);
    return st;
}
