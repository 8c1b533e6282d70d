#include "arch.h"

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
    .embed = "model.embed_tokens.weight", .final_norm = "model.norm.weight", .lm_head = "lm_head.weight"

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

static const qc_arch_desc k_descs[] = {
    {.id = QC_ARCH_LLAMA, .class_name = "LlamaForCausalLM", .model_type = "llama", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_MISTRAL, .class_name = "MistralForCausalLM", .model_type = "mistral", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_QWEN2, .class_name = "Qwen2ForCausalLM", .model_type = "qwen2", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_QWEN3, .class_name = "Qwen3ForCausalLM", .model_type = "qwen3", .lin = LLAMA_LINEARS, LLAMA_COMMON},
    {.id = QC_ARCH_PHI3, .class_name = "Phi3ForCausalLM", .model_type = "phi3", .lin = PHI3_LINEARS, LLAMA_COMMON},
    GEMMA_DESC(QC_ARCH_GEMMA2, "Gemma2ForCausalLM", "gemma2"),
    GEMMA_DESC(QC_ARCH_GEMMA3, "Gemma3ForCausalLM", "gemma3_text"),
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
    }
    QC_ASSERT(0);
    return 0;
}

const char *qc_linear_name(qc_linear_id l) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    return k_descs[0].lin[l].name;
}

void qc_linear_shape(const qc_model_config *c, qc_linear_id l, int *out, int *in) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    const qc_arch_linear *d = &desc(c)->lin[l];
    *out = qc_arch_dim_value(c, d->out);
    *in = qc_arch_dim_value(c, d->in);
}

bool qc_linear_has_bias(const qc_model_config *c, qc_linear_id l) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    switch (desc(c)->lin[l].bias) {
    case QC_BIAS_NONE: return false;
    case QC_BIAS_QKV:  return c->qkv_bias;
    case QC_BIAS_O:    return c->o_bias;
    case QC_BIAS_MLP:  return c->mlp_bias;
    }
    return false;
}

void qc_linear_storage(const qc_model_config *c, qc_linear_id l, const char **tensor, int *row0, int *rows) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    const qc_arch_desc *a = desc(c);
    int out, in;
    qc_linear_shape(c, l, &out, &in);
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
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    const char *t;
    int row0, rows;
    qc_linear_storage(c, l, &t, &row0, &rows);
    return row0 == 0;
}

qc_linear_id qc_linear_input(const qc_model_config *c, qc_linear_id l) {
    QC_ASSERT(l >= 0 && l < QC_LIN_COUNT);
    return desc(c)->lin[l].input;
}

int qc_capture_width(const qc_model_config *c, qc_linear_id cap) {
    const qc_arch_desc *a = desc(c);
    for (int l = 0; l < QC_LIN_COUNT; l++)
        if (a->lin[l].input == cap) return qc_arch_dim_value(c, a->lin[l].in);
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

int qc_arch_awq_groups(const qc_model_config *c, qc_arch_awq g[4]) {
    const qc_arch_desc *a = desc(c);
    int ng = 0;
    for (int i = 0; i < a->n_awq; i++) {
        const qc_arch_awq *w = &a->awq[i];
        if (w->if_square) { /* v_proj -> o_proj only when v's output is o's input and o is square (no GQA) */
            int pn, pk, n, k;
            qc_linear_shape(c, (qc_linear_id)w->prev_lin, &pn, &pk);
            qc_linear_shape(c, w->lin[0], &n, &k);
            if (!(pn == n && pk == k)) continue;
        }
        g[ng++] = *w;
    }
    return ng;
}
