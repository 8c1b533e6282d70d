#include "arch.h"

#include <stdio.h>
#include <string.h>

/* The Llama layer, which Mistral, Qwen2 and Qwen3 share: pre-norm attention (q/k/v from the normed input,
 * o_proj from the heads) and a gated SiLU MLP; biases per the config's flags; Qwen3's per-head q/k norms
 * exist when the config says qk_norm. */
#define LLAMA_LINEARS                                                                   \
    {                                                                                   \
        {"self_attn.q_proj", QC_DIM_Q, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},     \
        {"self_attn.k_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},    \
        {"self_attn.v_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q},          \
        {"self_attn.o_proj", QC_DIM_HIDDEN, QC_DIM_Q, QC_BIAS_O, QC_LIN_O},             \
        {"mlp.gate_proj", QC_DIM_FF, QC_DIM_HIDDEN, QC_BIAS_MLP, QC_LIN_GATE},          \
        {"mlp.up_proj", QC_DIM_FF, QC_DIM_HIDDEN, QC_BIAS_MLP, QC_LIN_GATE},            \
        {"mlp.down_proj", QC_DIM_HIDDEN, QC_DIM_FF, QC_BIAS_MLP, QC_LIN_DOWN},          \
    }
#define LLAMA_NORMS                                                                     \
    {                                                                                   \
        {"input_layernorm", QC_DIM_HIDDEN, false},                                      \
        {"post_attention_layernorm", QC_DIM_HIDDEN, false},                             \
        {"self_attn.q_norm", QC_DIM_HEAD, true},                                        \
        {"self_attn.k_norm", QC_DIM_HEAD, true},                                        \
    }
/* everything but the linears */
#define LLAMA_COMMON .norm = LLAMA_NORMS, LLAMA_LAYOUT
/* everything but the linears and norms */
#define LLAMA_LAYOUT                                                                    \
    .caps = {QC_LIN_Q, QC_LIN_O, QC_LIN_GATE, QC_LIN_DOWN}, .n_caps = 4,                \
    .seq = {{{QC_LIN_Q, QC_LIN_K, QC_LIN_V}, 3, QC_BLOCK_ATTN}, {{QC_LIN_O}, 1, QC_BLOCK_ATTN},    \
            {{QC_LIN_GATE, QC_LIN_UP}, 2, QC_BLOCK_MLP}, {{QC_LIN_DOWN}, 1, QC_BLOCK_MLP}},                 \
    .n_seq = 4,                                                                         \
    .awq = {{QC_LIN_Q, QC_AWQ_MOD_ATTN, {QC_LIN_Q, QC_LIN_K, QC_LIN_V}, 3, QC_NORM_ATTN, -1, false}, \
            {QC_LIN_O, QC_AWQ_MOD_LINEAR, {QC_LIN_O}, 1, -1, QC_LIN_V, true},           \
            {QC_LIN_GATE, QC_AWQ_MOD_MLP, {QC_LIN_GATE, QC_LIN_UP}, 2, QC_NORM_MLP, -1, false}, \
            {QC_LIN_DOWN, QC_AWQ_MOD_LINEAR, {QC_LIN_DOWN}, 1, -1, QC_LIN_UP, false}},  \
    .n_awq = 4,                                                                         \
    .layers = "model.layers", .embed = "model.embed_tokens.weight", .final_norm = "model.norm.weight",        \
    .lm_head = "lm_head.weight"

/* Phi-3: the Llama layer with q/k/v stored as one qkv_proj and gate/up as one gate_up_proj (gate rows
 * first, as Phi3MLP chunks them); no biases, no q/k norms. AWQ's clip search runs on the whole qkv_proj
 * as AutoAWQ's does for Phi-3 (its name matches none of AutoAWQ's exemptions). */
#define PHI3_LINEARS                                                                                    \
    {                                                                                                   \
        {"self_attn.qkv_proj[q]", QC_DIM_Q, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_Q, false, "self_attn.qkv_proj"}, \
        {"self_attn.qkv_proj[k]", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_Q, false, "self_attn.qkv_proj"}, \
        {"self_attn.qkv_proj[v]", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_Q, false, "self_attn.qkv_proj"}, \
        {"self_attn.o_proj", QC_DIM_HIDDEN, QC_DIM_Q, QC_BIAS_NONE, QC_LIN_O, false, NULL},                \
        {"mlp.gate_up_proj[gate]", QC_DIM_FF, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_GATE, false, "mlp.gate_up_proj"}, \
        {"mlp.gate_up_proj[up]", QC_DIM_FF, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_GATE, false, "mlp.gate_up_proj"}, \
        {"mlp.down_proj", QC_DIM_HIDDEN, QC_DIM_FF, QC_BIAS_NONE, QC_LIN_DOWN, false, NULL},               \
    }

/* Qwen2-MoE: the Llama layer with every MLP a mixture of experts plus a shared expert in slots 4..6 (its
 * output scaled by sigmoid(shared_expert_gate(x))); q/k/v biases. */
#define QWEN2_MOE_LINEARS                                                                          \
    {                                                                                              \
        {"self_attn.q_proj", QC_DIM_Q, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},                \
        {"self_attn.k_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},               \
        {"self_attn.v_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q},                     \
        {"self_attn.o_proj", QC_DIM_HIDDEN, QC_DIM_Q, QC_BIAS_NONE, QC_LIN_O},                     \
        {"mlp.shared_expert.gate_proj", QC_DIM_SHARED_FF, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_GATE}, \
        {"mlp.shared_expert.up_proj", QC_DIM_SHARED_FF, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_GATE},   \
        {"mlp.shared_expert.down_proj", QC_DIM_HIDDEN, QC_DIM_SHARED_FF, QC_BIAS_NONE, QC_LIN_DOWN}, \
    }

/* The experts as the Hub stores them: Mixtral's w1 (gate), w3 (up), w2 (down); the Qwen MoEs' gate/up/down
 * projections. The fused 3-D names are transformers 5's. */
static const qc_arch_moe k_moe_mixtral = {
    .router = "block_sparse_moe.gate", .experts = "block_sparse_moe.experts", .lin = {"w1", "w3", "w2"},
    .fused = {"gate_up_proj", "down_proj"}, .always_renorm = true, .alt_router = "mlp.gate",
    .alt_experts = "mlp.experts",
};
static const qc_arch_moe k_moe_qwen2 = {
    .router = "mlp.gate", .experts = "mlp.experts", .lin = {"gate_proj", "up_proj", "down_proj"},
    .fused = {"gate_up_proj", "down_proj"}, .shared_gate = "mlp.shared_expert_gate", .shared = true,
};
static const qc_arch_moe k_moe_qwen3 = {
    .router = "mlp.gate", .experts = "mlp.experts", .lin = {"gate_proj", "up_proj", "down_proj"},
    .fused = {"gate_up_proj", "down_proj"},
};
/* Gemma-2 and Gemma-3: the Llama linears without biases; four layer norms, pre and post each block, all
 * (1 + w) RMSNorms; Gemma-3 adds per-head q/k norms (qk_norm). The pre-norms take the ids AWQ folds into
 * (q/k/v scale into input_layernorm, gate/up into pre_feedforward_layernorm, as AutoAWQ's Gemma models). */
#define GEMMA_NORMS                                                                     \
    {                                                                                   \
        {"input_layernorm", QC_DIM_HIDDEN, false},                                      \
        {"pre_feedforward_layernorm", QC_DIM_HIDDEN, false},                            \
        {"self_attn.q_norm", QC_DIM_HEAD, true},                                        \
        {"self_attn.k_norm", QC_DIM_HEAD, true},                                        \
        {"post_attention_layernorm", QC_DIM_HIDDEN, false},                             \
        {"post_feedforward_layernorm", QC_DIM_HIDDEN, false},                           \
    }
#define GEMMA_DESC(ID, CLASS, TYPE)                                                     \
    {.id = ID, .class_name = CLASS, .model_type = TYPE, .lin = LLAMA_LINEARS, .norm = GEMMA_NORMS, LLAMA_LAYOUT, \
     .norm_unit_offset = true, .embed_scaled = true}

/* OPT (OPTDecoderLayer, pre-LayerNorm): x += out_proj(attn(self_attn_layer_norm(x))); x += fc2(relu(fc1(
 * final_layer_norm(x)))). Full multi-head attention without rotary (learned positions, row p + 2, added to the
 * embeddings), LayerNorms with biases, biases on every linear (enable_bias). fc1 and fc2 take the up and down
 * slots; there is no gate. q/k/v/out_proj keep OPT's names, under model.decoder.layers.N, in every checkpoint
 * qcal writes (as vLLM's and GPTQModel's OPT loaders read them).
 * True-sequential groups as GPTQ's opt.py: [q, k, v], [out_proj], [fc1], [fc2]. AWQ groups as AutoAWQ's
 * opt.py: q/k/v scaled from self_attn_layer_norm (weight and bias divided), out_proj from v_proj, fc1 from
 * final_layer_norm, fc2 from fc1's rows and bias (ReLU is positively homogeneous: relu(z / s) = relu(z) / s).
 * AutoAWQ scores the fc1 group on fc1's own output; qcal scores it on the MLP's output (fc2(relu(fc1))), as its
 * Llama MLP groups, which keeps every searched module's output at the hidden width the backends size for and
 * also weighs fc1's errors by what fc2 makes of them. q_proj and k_proj skip the clip search (AutoAWQ's
 * "q_"/"k_" exemptions). */
#define OPT_DESC                                                                        \
    {  \
    .id = QC_ARCH_OPT, .class_name = "OPTForCausalLM", .model_type = "opt",                                    \
    .lin = {                                                                                                   \
        {"self_attn.q_proj", QC_DIM_Q, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},                            \
        {"self_attn.k_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q, true},                           \
        {"self_attn.v_proj", QC_DIM_KV, QC_DIM_HIDDEN, QC_BIAS_QKV, QC_LIN_Q},                                 \
        {"self_attn.out_proj", QC_DIM_HIDDEN, QC_DIM_Q, QC_BIAS_O, QC_LIN_O},                                  \
        {NULL, QC_DIM_HIDDEN, QC_DIM_HIDDEN, QC_BIAS_NONE, QC_LIN_GATE}, /* no gate */                         \
        {"fc1", QC_DIM_FF, QC_DIM_HIDDEN, QC_BIAS_MLP, QC_LIN_UP},                                             \
        {"fc2", QC_DIM_HIDDEN, QC_DIM_FF, QC_BIAS_MLP, QC_LIN_DOWN},                                           \
    },                                                                                                         \
    .norm = {{"self_attn_layer_norm", QC_DIM_HIDDEN, false}, {"final_layer_norm", QC_DIM_HIDDEN, false}},      \
    .caps = {QC_LIN_Q, QC_LIN_O, QC_LIN_UP, QC_LIN_DOWN}, .n_caps = 4,                                         \
    .seq = {{{QC_LIN_Q, QC_LIN_K, QC_LIN_V}, 3, QC_BLOCK_ATTN}, {{QC_LIN_O}, 1, QC_BLOCK_ATTN},                \
            {{QC_LIN_UP}, 1, QC_BLOCK_MLP}, {{QC_LIN_DOWN}, 1, QC_BLOCK_MLP}},                                 \
    .n_seq = 4,                                                                                                \
    .awq = {{QC_LIN_Q, QC_AWQ_MOD_ATTN, {QC_LIN_Q, QC_LIN_K, QC_LIN_V}, 3, QC_NORM_ATTN, -1, false},           \
            {QC_LIN_O, QC_AWQ_MOD_LINEAR, {QC_LIN_O}, 1, -1, QC_LIN_V, true},                                  \
            {QC_LIN_UP, QC_AWQ_MOD_MLP, {QC_LIN_UP}, 1, QC_NORM_MLP, -1, false},                               \
            {QC_LIN_DOWN, QC_AWQ_MOD_LINEAR, {QC_LIN_DOWN}, 1, -1, QC_LIN_UP, false}},                         \
    .n_awq = 4,                                                                                                \
    .layer_norm = true,                                                                                        \
    .layers = "model.decoder.layers",                                                                          \
    .embed = "model.decoder.embed_tokens.weight",                                                              \
    .pos_embed = "model.decoder.embed_positions.weight", .pos_offset = 2,                                      \
    .final_norm = "model.decoder.final_layer_norm.weight",                                                     \
    .final_norm_bias = "model.decoder.final_layer_norm.bias",                                                  \
    .lm_head = "lm_head.weight",                                                                               \
    }

static const qc_arch_desc k_descs[] = {
    {.id = QC_ARCH_LLAMA, .class_name = "LlamaForCausalLM", .model_type = "llama", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_MISTRAL, .class_name = "MistralForCausalLM", .model_type = "mistral", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_QWEN2, .class_name = "Qwen2ForCausalLM", .model_type = "qwen2", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_QWEN3, .class_name = "Qwen3ForCausalLM", .model_type = "qwen3", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_PHI3, .class_name = "Phi3ForCausalLM", .model_type = "phi3", .lin = PHI3_LINEARS, LLAMA_COMMON},
    GEMMA_DESC(QC_ARCH_GEMMA2, "Gemma2ForCausalLM", "gemma2"),
    GEMMA_DESC(QC_ARCH_GEMMA3, "Gemma3ForCausalLM", "gemma3_text"),
    OPT_DESC,
    {.id = QC_ARCH_MIXTRAL, .class_name = "MixtralForCausalLM", .model_type = "mixtral", .lin = LLAMA_LINEARS,
     LLAMA_COMMON, .moe = &k_moe_mixtral},
    {.id = QC_ARCH_QWEN2_MOE, .class_name = "Qwen2MoeForCausalLM", .model_type = "qwen2_moe",
     .lin = QWEN2_MOE_LINEARS, LLAMA_COMMON, .moe = &k_moe_qwen2},
    {.id = QC_ARCH_QWEN3_MOE, .class_name = "Qwen3MoeForCausalLM", .model_type = "qwen3_moe", .lin = LLAMA_LINEARS,
     LLAMA_COMMON, .moe = &k_moe_qwen3},
};
#define N_DESCS ((int)(sizeof k_descs / sizeof k_descs[0]))

const qc_arch_desc *qc_arch_descs(int *n) {
    *n = N_DESCS;
    return k_descs;
}

const qc_arch_desc *qc_arch_desc_of(qc_arch arch) {
    for (int i = 0; i < N_DESCS; i++)
        if (k_descs[i].id == arch) return &k_descs[i];
    return NULL;
}

static const qc_arch_desc *desc(const qc_model_config *cfg) {
    const qc_arch_desc *a = qc_arch_desc_of(cfg->arch);
    QC_ASSERT(a != NULL);
    return a;
}

int qc_arch_dim_value(const qc_model_config *c, qc_arch_dim dim) {
    switch (dim) {
    case QC_DIM_HIDDEN: return c->hidden_size;
    case QC_DIM_Q:      return c->n_heads * c->head_dim;
    case QC_DIM_KV:     return c->n_kv_heads * c->head_dim;
    case QC_DIM_FF:     return c->intermediate_size;
    case QC_DIM_HEAD:   return c->head_dim;
    case QC_DIM_MOE_FF: return c->moe_intermediate_size;
    case QC_DIM_SHARED_FF: return c->shared_expert_intermediate_size;
    }
    QC_ASSERT(0);
    return 0;
}

const char *qc_linear_name(qc_linear_id l) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    return k_descs[0].lin[l].name;
}

const char *qc_layers_path(const qc_model_config *c) { return desc(c)->layers; }

bool qc_norm_has_bias(const qc_model_config *c) { return desc(c)->layer_norm; }

bool qc_arch_has_rope(const qc_model_config *c) { return desc(c)->pos_embed == NULL; }

int qc_arch_n_lin(const qc_model_config *c) {
    return QC_LIN_COUNT + (desc(c)->moe ? 3 * c->n_experts : 0);
}

bool qc_linear_expert(qc_linear_id l, int *e, int *j) {
    if ((int)l < QC_LIN_COUNT) return false;
    *e = ((int)l - QC_LIN_COUNT) / 3;
    *j = ((int)l - QC_LIN_COUNT) % 3;
    return true;
}

bool qc_linear_present(const qc_model_config *c, int li, qc_linear_id l) {
    const qc_arch_desc *a = desc(c);
    int e, j;
    if (l < 0 || (int)l >= qc_arch_n_lin(c)) return false;
    if (qc_linear_expert(l, &e, &j)) return qc_layer_is_moe(c, li);
    if (!a->lin[l].name) return false; /* the architecture has no such linear (OPT's gate) */
    if (!a->moe || l < QC_LIN_GATE) return true;
    return qc_layer_is_moe(c, li) ? a->moe->shared : true; /* the shared expert, or a dense layer's MLP */
}

const char *qc_linear_path(const qc_model_config *c, qc_linear_id l, char *buf, size_t size) {
    const qc_arch_desc *a = desc(c);
    int e, j;
    if (qc_linear_expert(l, &e, &j)) snprintf(buf, size, "%s.%d.%s", a->moe->experts, e, a->moe->lin[j]);
    else snprintf(buf, size, "%s", a->lin[l].name);
    return buf;
}

void qc_linear_shape(const qc_model_config *c, qc_linear_id l, int *out, int *in) {
    int e, j;
    if (qc_linear_expert(l, &e, &j)) {
        QC_ASSERT(e < c->n_experts);
        *out = j == 2 ? c->hidden_size : c->moe_intermediate_size;
        *in = j == 2 ? c->moe_intermediate_size : c->hidden_size;
        return;
    }
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    const qc_arch_linear *d = &desc(c)->lin[l];
    if (!d->name) { /* absent */
        *out = *in = 0;
        return;
    }
    *out = qc_arch_dim_value(c, d->out);
    *in = qc_arch_dim_value(c, d->in);
}

bool qc_linear_has_bias(const qc_model_config *c, qc_linear_id l) {
    if ((int)l >= QC_LIN_COUNT) return false; /* no MoE architecture has expert biases */
    QC_ASSERT(l >= 0);
    if (!desc(c)->lin[l].name) return false;
    switch (desc(c)->lin[l].bias) {
    case QC_BIAS_NONE: return false;
    case QC_BIAS_QKV:  return c->qkv_bias;
    case QC_BIAS_O:    return c->o_bias;
    case QC_BIAS_MLP:  return c->mlp_bias;
    }
    return false;
}

void qc_linear_storage(const qc_model_config *c, qc_linear_id l, const char **tensor, int *row0, int *rows) {
    const qc_arch_desc *a = desc(c);
    int out, in;
    qc_linear_shape(c, l, &out, &in);
    if ((int)l >= QC_LIN_COUNT) { /* experts: stored per expert (the fused 3-D layout is read, never written) */
        *tensor = NULL;
        *row0 = 0;
        *rows = out;
        return;
    }
    if (!a->lin[l].tensor) {
        *tensor = a->lin[l].name;
        *row0 = 0;
        *rows = out;
        return;
    }
    *tensor = a->lin[l].tensor;
    *row0 = *rows = 0;
    for (int m = 0; m < QC_LIN_COUNT; m++) {
        if (!a->lin[m].tensor || strcmp(a->lin[m].tensor, a->lin[l].tensor) != 0) continue;
        int o, i;
        qc_linear_shape(c, (qc_linear_id)m, &o, &i);
        if (m < (int)l) *row0 += o;
        *rows += o;
    }
}

bool qc_linear_first_of_tensor(const qc_model_config *c, qc_linear_id l) {
    if ((int)l >= QC_LIN_COUNT) return true;
    const char *t;
    int row0, rows;
    qc_linear_storage(c, l, &t, &row0, &rows);
    return row0 == 0;
}

qc_linear_id qc_linear_input(const qc_model_config *c, qc_linear_id l) {
    int e, j;
    if (qc_linear_expert(l, &e, &j)) return QC_LIN_EXPERT(e, j == 2 ? 2 : 0);
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    return desc(c)->lin[l].input;
}

int qc_capture_width(const qc_model_config *c, qc_linear_id cap) {
    const qc_arch_desc *a = desc(c);
    int e, j;
    if (qc_linear_expert(cap, &e, &j)) return j == 2 ? c->moe_intermediate_size : c->hidden_size;
    for (int l = 0; l < QC_LIN_COUNT; l++)
        if (a->lin[l].name && a->lin[l].input == cap) return qc_arch_dim_value(c, a->lin[l].in);
    QC_ASSERT(0 && "not a capture point");
    return 0;
}

float qc_norm_offset(const qc_model_config *c) { return desc(c)->norm_unit_offset ? 1.0f : 0.0f; }

bool qc_norm_present(const qc_model_config *c, qc_norm_id n) {
    QC_ASSERT(n >= 0 && n < QC_NORM_COUNT);
    const qc_arch_norm *d = &desc(c)->norm[n];
    return d->name && (!d->if_qk_norm || c->qk_norm);
}

int qc_norm_dim(const qc_model_config *c, qc_norm_id n) {
    QC_ASSERT(n >= 0 && n < QC_NORM_COUNT);
    return qc_arch_dim_value(c, desc(c)->norm[n].dim);
}

int qc_arch_awq_max_groups(const qc_model_config *c) {
    return desc(c)->n_awq + (desc(c)->moe ? 2 + c->n_experts : 0);
}

int qc_arch_awq_groups(const qc_model_config *c, int li, qc_arch_awq *g) {
    const qc_arch_desc *a = desc(c);
    bool moe = qc_layer_is_moe(c, li);
    int ng = 0;
    for (int i = 0; i < a->n_awq; i++) {
        const qc_arch_awq *w = &a->awq[i];
        bool mlp = w->input == QC_LIN_GATE || w->input == QC_LIN_DOWN;
        if (mlp && moe) continue; /* below */
        if (w->if_square) { /* v_proj -> o_proj only when v's output is o's input and o is square (no GQA) */
            int pn, pk, n, k;
            qc_linear_shape(c, (qc_linear_id)w->prev_lin, &pn, &pk);
            qc_linear_shape(c, w->lin[0], &n, &k);
            if (!(pn == n && pk == k)) continue;
        }
        g[ng++] = *w;
    }
    if (!moe) return ng;
    qc_arch_awq *in = &g[ng++];
    memset(in, 0, sizeof *in);
    in->input = QC_LIN_GATE;
    in->module = QC_AWQ_MOD_MOE;
    in->prev_norm = QC_NORM_MLP;
    in->prev_lin = -1;
    for (int e = 0; e < c->n_experts; e++) {
        in->lin[in->n++] = QC_LIN_EXPERT(e, 0);
        in->lin[in->n++] = QC_LIN_EXPERT(e, 1);
    }
    if (qc_linear_present(c, li, QC_LIN_GATE)) { /* the shared expert, after the experts as AutoAWQ lists it */
        in->lin[in->n++] = QC_LIN_GATE;
        in->lin[in->n++] = QC_LIN_UP;
        qc_arch_awq *sd = &g[ng++];
        memset(sd, 0, sizeof *sd);
        *sd = (qc_arch_awq){.input = QC_LIN_DOWN, .module = QC_AWQ_MOD_LINEAR, .lin = {QC_LIN_DOWN}, .n = 1,
                            .prev_norm = -1, .prev_lin = QC_LIN_UP};
    }
    for (int e = 0; e < c->n_experts; e++) {
        qc_arch_awq *dn = &g[ng++];
        memset(dn, 0, sizeof *dn);
        dn->input = QC_LIN_EXPERT(e, 2);
        dn->module = QC_AWQ_MOD_LINEAR;
        dn->lin[0] = QC_LIN_EXPERT(e, 2);
        dn->n = 1;
        dn->prev_norm = -1;
        dn->prev_lin = QC_LIN_EXPERT(e, 1);
    }
    return ng;
}

int qc_arch_caps(const qc_model_config *c, int li, qc_linear_id *caps) {
    const qc_arch_desc *a = desc(c);
    int n = 0;
    for (int k = 0; k < a->n_caps; k++) {
        qc_linear_id cap = a->caps[k];
        bool mlp = cap == QC_LIN_GATE || cap == QC_LIN_DOWN;
        /* an MoE block's input (QC_LIN_GATE) is a capture point even without a shared expert */
        if (!mlp || qc_linear_present(c, li, cap) || (cap == QC_LIN_GATE && qc_layer_is_moe(c, li))) caps[n++] = cap;
        if (mlp && qc_layer_is_moe(c, li))
            for (int e = 0; e < c->n_experts; e++) caps[n++] = QC_LIN_EXPERT(e, cap == QC_LIN_GATE ? 0 : 2);
    }
    return n;
}

int qc_arch_seq_groups(const qc_model_config *c, int li, qc_seq_group g[4]) {
    const qc_arch_desc *a = desc(c);
    QC_ASSERT(a->n_seq <= 4);
    for (int gi = 0; gi < a->n_seq; gi++) {
        const qc_arch_seq *s = &a->seq[gi];
        g[gi].n = 0;
        g[gi].block = s->block;
        bool down = false;
        for (int k = 0; k < s->n; k++) {
            if (qc_linear_present(c, li, s->lin[k])) g[gi].lin[g[gi].n++] = s->lin[k];
            down |= s->lin[k] == QC_LIN_DOWN;
        }
        if (s->block != QC_BLOCK_MLP || !qc_layer_is_moe(c, li)) continue;
        for (int e = 0; e < c->n_experts; e++) { /* expert by expert: gate, up (or down) */
            if (down) {
                g[gi].lin[g[gi].n++] = QC_LIN_EXPERT(e, 2);
            } else {
                g[gi].lin[g[gi].n++] = QC_LIN_EXPERT(e, 0);
                g[gi].lin[g[gi].n++] = QC_LIN_EXPERT(e, 1);
            }
        }
    }
    return a->n_seq;
}
