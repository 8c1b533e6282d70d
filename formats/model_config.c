#include "model_config.h"

#include "arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QC_CONFIG_MAX_BYTES (16u * 1024u * 1024u)

const char *qc_arch_name(qc_arch arch) {
    const qc_arch_desc *a = qc_arch_desc_of(arch);
    return a ? a->model_type : "unknown";
}

/* Reads an integer field. Absent or null: *out = def and OK when `required` is false. */
static qc_status get_int(const cJSON *root, const char *key, bool required, int def, int lo, int hi,
                         const char *what, int *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) return qc_fail(QC_ERR_FORMAT, "%s: required field \"%s\" is missing", what, key);
        *out = def;
        return QC_OK;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi)
        return qc_fail(QC_ERR_FORMAT, "%s: field \"%s\" must be an integer in [%d, %d]", what, key, lo, hi);
    *out = (int)it->valuedouble;
    return QC_OK;
}

static qc_status get_num(const cJSON *root, const char *key, double def, double lo, double hi,
                         const char *what, double *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return QC_OK;
    }
    if (!cJSON_IsNumber(it) || !(it->valuedouble >= lo && it->valuedouble <= hi))
        return qc_fail(QC_ERR_FORMAT, "%s: field \"%s\" must be a number in [%g, %g]", what, key, lo, hi);
    *out = it->valuedouble;
    return QC_OK;
}

static qc_status get_bool(const cJSON *root, const char *key, bool def, const char *what, bool *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return QC_OK;
    }
    if (!cJSON_IsBool(it)) return qc_fail(QC_ERR_FORMAT, "%s: field \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(it);
    return QC_OK;
}

/* bos/eos ids may be an int or a list of ints (take the first), or null. */
static qc_status get_token_id(const cJSON *root, const char *key, const char *what, int *out) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = -1;
    if (!it || cJSON_IsNull(it)) return QC_OK;
    if (cJSON_IsArray(it)) it = cJSON_GetArrayItem(it, 0);
    if (!it) return QC_OK;
    if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e9)
        return qc_fail(QC_ERR_FORMAT, "%s: field \"%s\" must be a token id", what, key);
    *out = (int)it->valuedouble;
    return QC_OK;
}

/* The scaling of one rope object (v4 rope_scaling, v5 rope_parameters or one of its per-layer-type entries):
 * sets rope_type and its factors; rope_theta is read by the caller. */
static qc_status parse_rope_scaling(const cJSON *rs, const char *what, qc_model_config *c) {
    c->rope_type = QC_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    if (!rs || cJSON_IsNull(rs)) return QC_OK;
    if (!cJSON_IsObject(rs)) return qc_fail(QC_ERR_FORMAT, "%s: \"rope_scaling\" must be an object or null", what);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *t = cJSON_IsString(ty) ? ty->valuestring : "default";
    if (strcmp(t, "default") == 0) return QC_OK;
    qc_status st;
    if ((st = get_num(rs, "factor", 1.0, 1e-6, 1e6, what, &c->rope_factor))) return st;
    if (strcmp(t, "linear") == 0) {
        c->rope_type = QC_ROPE_LINEAR;
        return QC_OK;
    }
    if (strcmp(t, "llama3") == 0) {
        c->rope_type = QC_ROPE_LLAMA3;
        if ((st = get_num(rs, "low_freq_factor", 1.0, 1e-6, 1e6, what, &c->rope_low_freq_factor))) return st;
        if ((st = get_num(rs, "high_freq_factor", 4.0, 1e-6, 1e6, what, &c->rope_high_freq_factor))) return st;
        if ((st = get_int(rs, "original_max_position_embeddings", true, 0, 1, 1 << 30, what,
                          &c->rope_original_max_pos)))
            return st;
        if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
            return qc_fail(QC_ERR_FORMAT, "%s: llama3 rope_scaling needs high_freq_factor > low_freq_factor", what);
        return QC_OK;
    }
    return qc_fail(QC_ERR_UNSUPPORTED, "%s: rope_scaling type \"%s\" is not supported (supported: none, "
                   "default, linear, llama3)", what, t);
}

bool qc_layer_is_moe(const qc_model_config *c, int i) {
    if (c->n_experts <= 0 || i < 0 || i >= QC_MAX_LAYERS) return false;
    if (c->dense_layer[i / 8] & (1u << (i % 8))) return false;
    return c->decoder_sparse_step <= 1 || (i + 1) % c->decoder_sparse_step == 0;
}

/* The expert counts and routing of a mixture-of-experts config. */
static qc_status parse_moe(const cJSON *root, const char *what, qc_model_config *c) {
    qc_status st;
    bool qwen = c->arch != QC_ARCH_MIXTRAL;
    /* the Qwen MoEs' num_experts; transformers 5 writes num_local_experts for every MoE */
    const char *key = qwen && cJSON_GetObjectItemCaseSensitive(root, "num_experts") ? "num_experts" : "num_local_experts";
    if ((st = get_int(root, key, true, 0, 1, QC_EXPERTS_MAX, what, &c->n_experts))) return st;
    if ((st = get_int(root, "num_experts_per_tok", true, 0, 1, c->n_experts, what, &c->n_experts_per_tok))) return st;
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = true;
    c->decoder_sparse_step = 1;
    if (!qwen) return QC_OK;
    if ((st = get_int(root, "moe_intermediate_size", true, 0, 1, 1 << 24, what, &c->moe_intermediate_size))) return st;
    if ((st = get_bool(root, "norm_topk_prob", false, what, &c->norm_topk_prob))) return st;
    if ((st = get_int(root, "decoder_sparse_step", false, 1, 1, 1 << 20, what, &c->decoder_sparse_step))) return st;
    const cJSON *mol = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
    if (mol && !cJSON_IsNull(mol)) {
        if (!cJSON_IsArray(mol)) return qc_fail(QC_ERR_FORMAT, "%s: \"mlp_only_layers\" must be a list", what);
        const cJSON *e;
        cJSON_ArrayForEach(e, mol) {
            if (!cJSON_IsNumber(e) || e->valuedouble != (int)e->valuedouble || e->valueint < 0 ||
                e->valueint >= c->n_layers)
                return qc_fail(QC_ERR_FORMAT, "%s: \"mlp_only_layers\" lists %s, not a layer index below %d", what,
                               cJSON_IsNumber(e) ? "a number" : "a non-number", c->n_layers);
            c->dense_layer[e->valueint / 8] |= (uint8_t)(1u << (e->valueint % 8));
        }
    }
    if (c->arch == QC_ARCH_QWEN2_MOE) {
        if ((st = get_int(root, "shared_expert_intermediate_size", true, 0, 1, 1 << 24, what,
                          &c->shared_expert_intermediate_size)))
            return st;
        for (int i = 0; i < c->n_layers; i++) /* slots 4..6 are the shared expert: a dense layer has no room */
            if (!qc_layer_is_moe(c, i))
                return qc_fail(QC_ERR_UNSUPPORTED, "%s: Qwen2-MoE with dense layers (mlp_only_layers or "
                               "decoder_sparse_step > 1; layer %d) is not supported", what, i);
    }
    return QC_OK;
}

static qc_status parse_rope(const cJSON *root, const char *what, qc_model_config *c) {
    /* transformers v5 writes rope_parameters (holding rope_theta too); v4 writes rope_scaling. */
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const bool gemma3 = c->arch == QC_ARCH_GEMMA3;
    qc_status st = get_num(root, "rope_theta", gemma3 ? 1e6 : 10000.0, 1.0, 1e12, what, &c->rope_theta);
    if (st) return st;
    double local = 0.0;
    if (gemma3 && (st = get_num(root, "rope_local_base_freq", 10000.0, 1.0, 1e12, what, &local))) return st;
    const cJSON *full = cJSON_IsObject(rp) ? cJSON_GetObjectItemCaseSensitive(rp, "full_attention") : NULL;
    const cJSON *slid = cJSON_IsObject(rp) ? cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention") : NULL;
    if (full || slid) { /* v5, per layer type (Gemma): {"full_attention": {...}, "sliding_attention": {...}} */
        if (!gemma3 && c->arch != QC_ARCH_GEMMA2)
            return qc_fail(QC_ERR_UNSUPPORTED, "%s: rope_parameters per layer type (full_attention/sliding_attention) "
                           "are supported for Gemma-2 and Gemma-3 only", what);
        if (!gemma3) local = c->rope_theta; /* Gemma-2: one rope unless the sliding entry says otherwise */
        if ((full && !cJSON_IsObject(full)) || (slid && !cJSON_IsObject(slid)))
            return qc_fail(QC_ERR_FORMAT, "%s: rope_parameters.full_attention and .sliding_attention must be objects",
                           what);
        if (full && (st = get_num(full, "rope_theta", c->rope_theta, 1.0, 1e12, what, &c->rope_theta))) return st;
        if ((st = parse_rope_scaling(full, what, c))) return st;
        if (slid) {
            if ((st = get_num(slid, "rope_theta", local, 1.0, 1e12, what, &local))) return st;
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(slid, "rope_type");
            if (!ty) ty = cJSON_GetObjectItemCaseSensitive(slid, "type");
            if (cJSON_IsString(ty) && strcmp(ty->valuestring, "default") != 0)
                return qc_fail(QC_ERR_UNSUPPORTED, "%s: rope_parameters.sliding_attention type \"%s\" is not "
                               "supported (supported: default)", what, ty->valuestring);
        }
        /* the local tables only where they differ from the global ones (Gemma-3 always has its own base) */
        c->rope_local_theta = gemma3 || local != c->rope_theta || c->rope_type != QC_ROPE_DEFAULT ? local : 0.0;
        return QC_OK;
    }
    if (rp && cJSON_IsObject(rp)) {
        if ((st = get_num(rp, "rope_theta", c->rope_theta, 1.0, 1e12, what, &c->rope_theta))) return st;
        if (!rs || cJSON_IsNull(rs)) rs = rp;
    }
    c->rope_local_theta = local;
    return parse_rope_scaling(rs, what, c);
}

/* Gemma's attention kinds per layer: config layer_types ("sliding_attention"/"full_attention"), else Gemma-2's
 * alternation (even layers sliding) or Gemma-3's sliding_window_pattern N (layer i sliding unless
 * (i + 1) % N == 0). */
static qc_status parse_layer_types(const cJSON *root, const char *what, qc_model_config *c) {
    c->window_per_layer = true;
    memset(c->sliding_layers, 0, sizeof c->sliding_layers);
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers)
            return qc_fail(QC_ERR_FORMAT, "%s: \"layer_types\" must be a list of num_hidden_layers (%d) strings", what,
                           c->n_layers);
        for (int i = 0; i < c->n_layers; i++) {
            const cJSON *it = cJSON_GetArrayItem(lt, i);
            const char *t = cJSON_IsString(it) ? it->valuestring : "";
            if (strcmp(t, "sliding_attention") == 0) c->sliding_layers[i / 8] |= (uint8_t)(1u << (i % 8));
            else if (strcmp(t, "full_attention") != 0)
                return qc_fail(QC_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported (supported: "
                               "sliding_attention, full_attention)", what, i, t);
        }
        return QC_OK;
    }
    int pattern = 2;
    qc_status st;
    if (c->arch == QC_ARCH_GEMMA3 &&
        (st = get_int(root, "sliding_window_pattern", false, 6, 1, 1 << 30, what, &pattern)))
        return st;
    for (int i = 0; i < c->n_layers; i++)
        if ((i + 1) % pattern != 0) c->sliding_layers[i / 8] |= (uint8_t)(1u << (i % 8));
    return QC_OK;
}

int qc_layer_window(const qc_model_config *c, int i) {
    if (c->sliding_window <= 0 || !c->window_per_layer) return c->sliding_window > 0 ? c->sliding_window : 0;
    QC_ASSERT(i >= 0 && i < QC_MAX_LAYERS);
    return (c->sliding_layers[i / 8] >> (i % 8)) & 1u ? c->sliding_window : 0;
}

bool qc_layer_rope_local(const qc_model_config *c, int i) {
    if (c->rope_local_theta <= 0.0 || !c->window_per_layer) return false;
    QC_ASSERT(i >= 0 && i < QC_MAX_LAYERS);
    return (c->sliding_layers[i / 8] >> (i % 8)) & 1u;
}

qc_status qc_model_config_parse(const char *json, size_t len, const char *what, qc_model_config *c) {
    memset(c, 0, sizeof *c);
    size_t oom = qc_json_oom_count();
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root && qc_json_oom_count() != oom) return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing it", what);
    if (!root) return qc_fail(QC_ERR_FORMAT, "%s: not valid JSON", what);
    qc_status st = QC_OK;
    if (!cJSON_IsObject(root)) {
        st = qc_fail(QC_ERR_FORMAT, "%s: top level must be a JSON object", what);
        goto done;
    }

    /* architecture */
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *name = NULL;
    if (cJSON_IsArray(archs) && cJSON_GetArraySize(archs) > 0 && cJSON_IsString(cJSON_GetArrayItem(archs, 0)))
        name = cJSON_GetArrayItem(archs, 0)->valuestring;
    int n_known;
    const qc_arch_desc *known = qc_arch_descs(&n_known);
    int found = -1;
    for (int i = 0; i < n_known; i++) {
        if (name ? strcmp(name, known[i].class_name) == 0
                 : (cJSON_IsString(mt) && strcmp(mt->valuestring, known[i].model_type) == 0))
            found = i;
    }
    if (found < 0 && ((name && strcmp(name, "Gemma3ForConditionalGeneration") == 0) ||
                      (!name && cJSON_IsString(mt) && strcmp(mt->valuestring, "gemma3") == 0))) {
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: the multimodal Gemma-3 (Gemma3ForConditionalGeneration, model_type "
                     "gemma3, with a vision tower) is not supported; qcal reads the text-only decoder "
                     "Gemma3ForCausalLM (model_type gemma3_text)", what);
        goto done;
    }
    if (found < 0) {
        char list[512] = "";
        for (int i = 0, o = 0; i < n_known && o < (int)sizeof list; i++)
            o += snprintf(list + o, sizeof list - (size_t)o, "%s%s", i ? ", " : "", known[i].class_name);
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: architecture \"%s\" is not supported (supported: %s)", what,
                     name ? name : cJSON_IsString(mt) ? mt->valuestring : "(none given)", list);
        goto done;
    }
    c->arch = known[found].id;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", known[found].class_name);

    const bool gemma = c->arch == QC_ARCH_GEMMA2 || c->arch == QC_ARCH_GEMMA3;
    if (gemma) { /* Gemma's MLP reads hidden_activation (default gelu_pytorch_tanh); hidden_act when only it is given */
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_activation");
        if (!cJSON_IsString(act)) act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
        /* gelu_new is the same tanh approximation */
        if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_pytorch_tanh") != 0 &&
            strcmp(act->valuestring, "gelu_new") != 0) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: hidden_activation \"%s\" is not supported for %s (supported: "
                         "gelu_pytorch_tanh)", what, act->valuestring, c->arch_name);
            goto done;
        }
        c->act = QC_ACT_GELU_TANH;
    } else if (c->arch == QC_ARCH_OPT) { /* OPTConfig.activation_function, default relu */
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
        if (cJSON_IsString(act) && strcmp(act->valuestring, "relu") != 0) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: activation_function \"%s\" is not supported for OPT (supported: "
                         "relu)", what, act->valuestring);
            goto done;
        }
        c->act = QC_ACT_RELU;
    } else {
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
        if (cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (supported: silu)", what,
                         act->valuestring);
            goto done;
        }
        c->act = QC_ACT_SILU;
    }

    const int big = 1 << 24;
    if ((st = get_int(root, "hidden_size", true, 0, 1, big, what, &c->hidden_size))) goto done;
    if ((st = get_int(root, "num_hidden_layers", true, 0, 1, QC_MAX_LAYERS, what, &c->n_layers))) goto done;
    if ((st = get_int(root, "num_attention_heads", true, 0, 1, 65536, what, &c->n_heads))) goto done;
    if ((st = get_int(root, "num_key_value_heads", false, c->n_heads, 1, 65536, what, &c->n_kv_heads))) goto done;
    const bool opt = c->arch == QC_ARCH_OPT; /* OPTConfig calls the MLP width ffn_dim */
    if ((st = get_int(root, opt ? "ffn_dim" : "intermediate_size", true, 0, 1, big, what, &c->intermediate_size)))
        goto done;
    if ((st = get_int(root, "vocab_size", true, 0, 1, big, what, &c->vocab_size))) goto done;
    int hd_default = c->arch == QC_ARCH_QWEN3 ? 128 : gemma ? 256 : c->hidden_size / c->n_heads;
    if ((st = get_int(root, "head_dim", false, hd_default, 2, 65536, what, &c->head_dim))) goto done;
    if ((st = get_int(root, "max_position_embeddings", false, 2048, 1, 1 << 30, what,
                      &c->max_position_embeddings)))
        goto done;
    double eps = 1e-6;
    if (opt) eps = 1e-5; /* OPTDecoderLayer's nn.LayerNorm default; OPTConfig has no field for it */
    else if ((st = get_num(root, "rms_norm_eps", 1e-6, 0.0, 1.0, what, &eps))) goto done;
    c->rms_norm_eps = (float)eps;
    if ((st = get_bool(root, "tie_word_embeddings", gemma || opt, what, &c->tie_word_embeddings))) goto done;
    if (!opt && (st = parse_rope(root, what, c))) goto done; /* OPT has learned positions, no rotary */

    if (c->n_heads % c->n_kv_heads != 0) {
        st = qc_fail(QC_ERR_FORMAT, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                     what, c->n_heads, c->n_kv_heads);
        goto done;
    }
    if (!opt && c->head_dim % 2 != 0) {
        st = qc_fail(QC_ERR_FORMAT, "%s: head_dim (%d) must be even for rotary embeddings", what, c->head_dim);
        goto done;
    }

    bool attn_bias = false, use_sw = true;
    switch (c->arch) {
    case QC_ARCH_LLAMA:
        if ((st = get_bool(root, "attention_bias", false, what, &attn_bias))) goto done;
        if ((st = get_bool(root, "mlp_bias", false, what, &c->mlp_bias))) goto done;
        c->qkv_bias = c->o_bias = attn_bias;
        use_sw = false;
        break;
    case QC_ARCH_MISTRAL:
        break;
    case QC_ARCH_OPT: { /* OPTConfig defaults where a field is absent */
        bool pre_ln = true, affine = true, no_final = false, bias = true;
        int proj = c->hidden_size;
        if ((st = get_bool(root, "do_layer_norm_before", true, what, &pre_ln))) goto done;
        if ((st = get_bool(root, "layer_norm_elementwise_affine", true, what, &affine))) goto done;
        if ((st = get_bool(root, "_remove_final_layer_norm", false, what, &no_final))) goto done;
        if ((st = get_bool(root, "enable_bias", true, what, &bias))) goto done;
        if ((st = get_int(root, "word_embed_proj_dim", false, c->hidden_size, 1, big, what, &proj))) goto done;
        if (!pre_ln) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: do_layer_norm_before false (post-LayerNorm OPT, e.g. OPT-350m) is "
                         "not supported; qcal reads pre-LayerNorm OPT models", what);
            goto done;
        }
        if (proj != c->hidden_size) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: word_embed_proj_dim %d != hidden_size %d (OPT's project_in / "
                         "project_out, e.g. OPT-350m) is not supported", what, proj, c->hidden_size);
            goto done;
        }
        if (!affine) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: layer_norm_elementwise_affine false (LayerNorms without weight and "
                         "bias) is not supported", what);
            goto done;
        }
        if (no_final) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: _remove_final_layer_norm true (no final LayerNorm) is not supported",
                         what);
            goto done;
        }
        if (c->hidden_size % c->n_heads != 0 || c->head_dim * c->n_heads != c->hidden_size) {
            st = qc_fail(QC_ERR_FORMAT, "%s: hidden_size (%d) must be num_attention_heads (%d) times the head size for "
                         "OPT", what, c->hidden_size, c->n_heads);
            goto done;
        }
        if (c->n_kv_heads != c->n_heads) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: OPT attention has as many key/value heads as query heads", what);
            goto done;
        }
        c->qkv_bias = c->o_bias = c->mlp_bias = bias;
        use_sw = false;
        break;
    }
    case QC_ARCH_QWEN2:
        c->qkv_bias = true;
        if ((st = get_bool(root, "use_sliding_window", false, what, &use_sw))) goto done;
        break;
    case QC_ARCH_MIXTRAL:
        break;
    case QC_ARCH_QWEN2_MOE:
        c->qkv_bias = true;
        if ((st = get_bool(root, "use_sliding_window", false, what, &use_sw))) goto done;
        break;
    case QC_ARCH_QWEN3:
    case QC_ARCH_QWEN3_MOE:
        if ((st = get_bool(root, "attention_bias", false, what, &attn_bias))) goto done;
        c->qkv_bias = c->o_bias = attn_bias;
        c->qk_norm = true;
        if ((st = get_bool(root, "use_sliding_window", false, what, &use_sw))) goto done;
        break;
    case QC_ARCH_PHI3: { /* Phi3Attention rotates the first partial_rotary_factor of each head only */
        double prf, prf5;
        if ((st = get_num(root, "partial_rotary_factor", 1.0, 0.0, 1.0, what, &prf))) goto done;
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters"); /* transformers v5 */
        if (cJSON_IsObject(rp) && (st = get_num(rp, "partial_rotary_factor", 1.0, 0.0, 1.0, what, &prf5))) goto done;
        if (cJSON_IsObject(rp) && prf5 != 1.0) prf = prf5;
        if (prf != 1.0) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: partial_rotary_factor %g is not supported (only 1.0)", what, prf);
            goto done;
        }
        break; /* the window (Phi-3-mini: 2047) applies to every layer, as Mistral's */
    }
    case QC_ARCH_GEMMA2:
    case QC_ARCH_GEMMA3: {
        /* Gemma2Config / Gemma3TextConfig defaults where a field is absent; null turns a soft-cap off */
        bool g2 = c->arch == QC_ARCH_GEMMA2;
        double cap;
        if ((st = get_bool(root, "attention_bias", false, what, &attn_bias))) goto done;
        if (attn_bias) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: attention_bias true is not supported for %s", what, c->arch_name);
            goto done;
        }
        c->qk_norm = !g2;
        bool bidir = false; /* Gemma-3's embedding variant attends both ways */
        if ((st = get_bool(root, "use_bidirectional_attention", false, what, &bidir))) goto done;
        if (bidir) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: use_bidirectional_attention true is not supported (qcal runs "
                         "causal decoders)", what);
            goto done;
        }
        if ((st = get_num(root, "query_pre_attn_scalar", 256.0, 1e-6, 1e12, what, &c->attn_scalar))) goto done;
        const cJSON *ac = cJSON_GetObjectItemCaseSensitive(root, "attn_logit_softcapping");
        if ((st = get_num(root, "attn_logit_softcapping", !ac && g2 ? 50.0 : 0.0, 0.0, 1e12, what, &cap))) goto done;
        c->attn_softcap = (float)cap;
        const cJSON *fc = cJSON_GetObjectItemCaseSensitive(root, "final_logit_softcapping");
        if ((st = get_num(root, "final_logit_softcapping", !fc && g2 ? 30.0 : 0.0, 0.0, 1e12, what, &cap))) goto done;
        c->final_softcap = (float)cap;
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if ((st = get_int(root, "sliding_window", false, sw ? 0 : 4096, 0, 1 << 30, what, &c->sliding_window))) goto done;
        if ((st = parse_layer_types(root, what, c))) goto done;
        use_sw = false;
        break;
    }
    }
    if (use_sw) {
        if ((st = get_int(root, "sliding_window", false, 0, 0, 1 << 30, what, &c->sliding_window))) goto done;
        if (c->arch == QC_ARCH_QWEN2 || c->arch == QC_ARCH_QWEN3 || c->arch == QC_ARCH_QWEN2_MOE ||
            c->arch == QC_ARCH_QWEN3_MOE) {
            /* Qwen2/3 apply the window only to layers >= max_window_layers; qcal supports the
             * common case where the window never applies. */
            int mwl;
            if ((st = get_int(root, "max_window_layers", false, 0, 0, 1 << 30, what, &mwl))) goto done;
            if (mwl < c->n_layers) {
                st = qc_fail(QC_ERR_UNSUPPORTED, "%s: use_sliding_window with max_window_layers (%d) < "
                             "num_hidden_layers (%d) is not supported", what, mwl, c->n_layers);
                goto done;
            }
            c->sliding_window = 0;
        }
    }

    if (qc_arch_desc_of(c->arch)->moe && (st = parse_moe(root, what, c))) goto done;

    if ((st = get_token_id(root, "bos_token_id", what, &c->bos_token_id))) goto done;
    if ((st = get_token_id(root, "eos_token_id", what, &c->eos_token_id))) goto done;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!cJSON_IsString(dt)) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    if (cJSON_IsString(dt)) snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", dt->valuestring);
done:
    cJSON_Delete(root);
    return st;
}

qc_status qc_model_config_load(const char *dir, qc_model_config *cfg) {
    char *path = qc_path_join(dir, "config.json");
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    char *buf;
    size_t len;
    qc_status st = qc_read_file(path, QC_CONFIG_MAX_BYTES, &buf, &len);
    if (st == QC_OK) {
        st = qc_model_config_parse(buf, len, path, cfg);
        free(buf);
    }
    free(path);
    return st;
}
