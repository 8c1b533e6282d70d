/*
 * model_config.h - a Hugging Face config.json turned into the description of a decoder model.
 *
 * Supported architectures (config "architectures"[0], or "model_type" when that is absent; their layer
 * layouts are described in arch.h, which also lists the names this parser accepts):
 *   LlamaForCausalLM    model_type llama    (attention_bias/mlp_bias optional)
 *   MistralForCausalLM  model_type mistral  (sliding_window)
 *   Qwen2ForCausalLM    model_type qwen2    (q/k/v biases; use_sliding_window)
 *   Qwen3ForCausalLM    model_type qwen3    (per-head q/k RMSNorm, explicit head_dim)
 *   Phi3ForCausalLM     model_type phi3     (fused qkv_proj and gate_up_proj; sliding_window; rope_scaling
 *                                            longrope/su is not supported, partial_rotary_factor must be 1)
 *   MixtralForCausalLM  model_type mixtral  (num_local_experts, num_experts_per_tok; sliding_window)
 *   Qwen2MoeForCausalLM model_type qwen2_moe (shared expert with a sigmoid gate, q/k/v biases,
 *                                            norm_topk_prob; every layer sparse)
 *   Qwen3MoeForCausalLM model_type qwen3_moe (q/k norms, norm_topk_prob, decoder_sparse_step,
 *                                            mlp_only_layers: dense layers)
 * hidden_act must be "silu"; rope_scaling may be null, "default", "linear" or "llama3"
 * (transformers v5 spells it "rope_parameters"). Anything else is QC_ERR_UNSUPPORTED with a message
 * listing what is supported.
 *
 *   qc_model_config cfg;
 *   if (qc_model_config_load("models/llama", &cfg) != QC_OK) die(qc_last_error());
 *
 * The struct is plain data (no pointers): copy it freely.
 */
#ifndef QC_MODEL_CONFIG_H
#define QC_MODEL_CONFIG_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Append only: values are recorded in reports. */
typedef enum qc_arch {
    QC_ARCH_LLAMA   = 0,
    QC_ARCH_MISTRAL = 1,
    QC_ARCH_QWEN2   = 2,
    QC_ARCH_QWEN3   = 3,
    QC_ARCH_PHI3    = 4,
    /* 5-7: dense architectures in progress (Gemma-2/3, OPT) */
    QC_ARCH_MIXTRAL   = 8,
    QC_ARCH_QWEN2_MOE = 9,
    QC_ARCH_QWEN3_MOE = 10,
} qc_arch;

/* The most layers whose MoE/dense choice a config can spell out (mlp_only_layers). */
#define QC_MAX_LAYERS 4096

typedef enum qc_rope_type {
    QC_ROPE_DEFAULT = 0,
    QC_ROPE_LINEAR  = 1,
    QC_ROPE_LLAMA3  = 2,
} qc_rope_type;

typedef struct qc_model_config {
    qc_arch arch;
    char    arch_name[64];        /* as written in config.json, e.g. "LlamaForCausalLM" */
    int     hidden_size;          /* d */
    int     n_layers;
    int     n_heads;
    int     n_kv_heads;           /* n_heads % n_kv_heads == 0 (grouped-query attention) */
    int     head_dim;             /* may differ from d / n_heads (Qwen3) */
    int     intermediate_size;    /* MLP width */
    int     vocab_size;
    int     max_position_embeddings;
    float   rms_norm_eps;
    double  rope_theta;
    qc_rope_type rope_type;
    double  rope_factor;            /* linear, llama3 */
    double  rope_low_freq_factor;   /* llama3 */
    double  rope_high_freq_factor;  /* llama3 */
    int     rope_original_max_pos;  /* llama3: original_max_position_embeddings */
    bool    tie_word_embeddings;
    bool    qkv_bias;             /* q/k/v projections carry a bias (Qwen2; Llama attention_bias) */
    bool    o_bias;               /* o_proj carries a bias (Llama attention_bias) */
    bool    mlp_bias;             /* gate/up/down carry biases (Llama mlp_bias) */
    bool    qk_norm;              /* per-head RMSNorm on q and k before RoPE (Qwen3) */
    int     sliding_window;       /* 0 = full causal attention; else token i sees j > i - window */
    int     bos_token_id;         /* -1 if absent */
    int     eos_token_id;         /* -1 if absent (first one when config lists several) */
    char    torch_dtype[16];      /* "float16", "bfloat16", "float32" or "" */
    /* mixture of experts (n_experts 0: a dense model) */
    int     n_experts;            /* num_local_experts (Mixtral), num_experts (Qwen MoE) */
    int     n_experts_per_tok;    /* top-k */
    int     moe_intermediate_size;/* an expert's MLP width (Mixtral: intermediate_size) */
    int     shared_expert_intermediate_size; /* Qwen2-MoE's shared expert; 0: none */
    bool    norm_topk_prob;       /* renormalize the top-k routing weights to sum 1 (Mixtral: always) */
    int     decoder_sparse_step;  /* layer i is sparse when (i + 1) % step == 0 and i is not dense_layer */
    uint8_t dense_layer[QC_MAX_LAYERS / 8]; /* bit i: layer i in mlp_only_layers (a dense MLP) */
} qc_model_config;

/* Whether decoder layer i has a mixture-of-experts block (false for every layer of a dense model). */
bool qc_layer_is_moe(const qc_model_config *cfg, int i);

/* Parses config.json text; `what` names the file in messages. */
qc_status qc_model_config_parse(const char *json, size_t len, const char *what, qc_model_config *cfg);
/* Reads dir/config.json. */
qc_status qc_model_config_load(const char *dir, qc_model_config *cfg);
const char *qc_arch_name(qc_arch arch);

#ifdef __cplusplus
}
#endif
#endif /* QC_MODEL_CONFIG_H */
