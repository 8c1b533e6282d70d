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
 *   Gemma2ForCausalLM   model_type gemma2   ((1 + w) RMSNorms, post-attention/post-MLP norms, GeGLU
 *                                            (hidden_activation gelu_pytorch_tanh), embeddings * sqrt(hidden),
 *                                            query_pre_attn_scalar, attn/final logit soft-capping, sliding
 *                                            window on the layers layer_types names, else the even ones)
 *   Gemma3ForCausalLM   model_type gemma3_text (Gemma-2's layer plus (1 + w) q/k norms; layer_types or
 *                                            sliding_window_pattern; sliding layers rotate with
 *                                            rope_local_base_freq, unscaled, full ones with rope_theta and
 *                                            rope_scaling; transformers v5's per-layer-type rope_parameters
 *                                            {"full_attention": {...}, "sliding_attention": {...}} too).
 *                                            The multimodal Gemma3ForConditionalGeneration is refused.
 *   OPTForCausalLM      model_type opt      (LayerNorms with bias (eps 1e-5), learned positions (row p + 2),
 *                                            ReLU MLP fc1/fc2 (ffn_dim), biases per enable_bias, no rotary;
 *                                            do_layer_norm_before false (OPT-350m), word_embed_proj_dim !=
 *                                            hidden_size (project_in/out), layer_norm_elementwise_affine false,
 *                                            _remove_final_layer_norm true and activation_function other
 *                                            than relu are refused)
 * hidden_act must be "silu" (Gemma: gelu_pytorch_tanh; OPT: activation_function relu); rope_scaling may be null, "default", "linear" or
 * "llama3" (transformers v5 spells it "rope_parameters"). Anything else is QC_ERR_UNSUPPORTED with a
 * message listing what is supported.
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
    QC_ARCH_GEMMA2  = 5,
    QC_ARCH_GEMMA3  = 6,
    QC_ARCH_OPT     = 7,
    QC_ARCH_MIXTRAL   = 8,
    QC_ARCH_QWEN2_MOE = 9,
    QC_ARCH_QWEN3_MOE = 10,
} qc_arch;

/* The MLP's activation: down(act(gate(x)) * up(x)), or down(act(up(x))) for an MLP without a gate (OPT).
 * Append only. */
typedef enum qc_act {
    QC_ACT_SILU      = 0,   /* x * sigmoid(x) (Llama family) */
    QC_ACT_GELU_TANH = 1,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Gemma: gelu_pytorch_tanh) */
    QC_ACT_RELU      = 2,   /* max(x, 0), ungated: down(relu(up(x))) (OPT's fc2(relu(fc1(x)))) */
} qc_act;

/* Upper bound on num_hidden_layers (the per-layer attention kinds and mlp_only_layers are bitmasks of this many
 * bits). */
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
    float   rms_norm_eps;         /* the norms' eps (OPT's LayerNorms: 1e-5, torch's default) */
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
    int     sliding_window;       /* 0 = full causal attention; else token i sees j > i - window, on every layer
                                     unless window_per_layer (use qc_layer_window) */
    bool    window_per_layer;     /* the window applies only to the layers set in sliding_layers (Gemma) */
    uint8_t sliding_layers[QC_MAX_LAYERS / 8]; /* bit i (byte i / 8, bit i % 8): layer i is a sliding one */
    double  rope_local_theta;     /* > 0: sliding layers rotate with this base and no rope scaling (Gemma-3's
                                     rope_local_base_freq); 0: every layer uses rope_theta and rope_type */
    qc_act  act;                  /* MLP gate activation */
    double  attn_scalar;          /* scores scale = attn_scalar^-1/2 (Gemma's query_pre_attn_scalar); 0: head_dim,
                                     computed as 1 / sqrtf(head_dim) */
    float   attn_softcap;         /* > 0: scores <- tanh(scores / cap) * cap before masking (Gemma-2) */
    float   final_softcap;        /* > 0: logits <- tanh(logits / cap) * cap (Gemma-2) */
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
/* Layer i's sliding window: 0 for full causal attention. */
int  qc_layer_window(const qc_model_config *cfg, int layer);
/* Whether layer i uses the local rotary tables (rope_local_theta set and the layer is a sliding one). */
bool qc_layer_rope_local(const qc_model_config *cfg, int layer);

/* Parses config.json text; `what` names the file in messages. */
qc_status qc_model_config_parse(const char *json, size_t len, const char *what, qc_model_config *cfg);
/* Reads dir/config.json. */
qc_status qc_model_config_load(const char *dir, qc_model_config *cfg);
const char *qc_arch_name(qc_arch arch);

#ifdef __cplusplus
}
#endif
#endif /* QC_MODEL_CONFIG_H */
