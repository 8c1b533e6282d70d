/*
 * arch.h - one description per decoder architecture: everything qcal knows about a layer's layout.
 *
 * A description names a decoder layer's linears (tensor path, shape in config terms, which config flag
 * gives it a bias, the capture point whose rows it consumes), its norms, the capture points in forward
 * order, the true-sequential groups, and AWQ's scale groups with the operation each folds 1/s into.
 * The CPU forward (calib/model.c), the GPU forward and loader (calib/gpu_forward.cu), the layer driver
 * (calib/pipeline_driver.c) and its CPU and CUDA backends (calib/pipeline.c, calib/pipeline_gpu.c), the
 * preflight plan (calib/plan.c), `qcal quantize`'s checks and `qcal synth` read it, so adding an
 * architecture means adding its description here (plus its config.json fields in model_config.c and any
 * new kernel), not editing each of them.
 *
 *   for (int l = 0; l < qc_arch_n_lin(&cfg); l++) {   // the seven, then an MoE model's experts' (3 each)
 *       if (!qc_linear_present(&cfg, li, l)) continue;   // OPT has no gate; dense vs sparse MoE layers
 *       int out, in;
 *       char path[128];
 *       qc_linear_shape(&cfg, l, &out, &in);            // rows = out_features, cols = in_features
 *       printf("%s.%d.%s\n", qc_layers_path(&cfg), li, qc_linear_path(&cfg, l, path, sizeof path));
 *       // stored fused (Phi-3's qkv_proj)? qc_linear_storage gives the tensor and the rows [row0, row0 + out)
 *   }
 *   qc_seq_group g[4];                                  // true-sequential groups of layer li
 *   for (int k = 0, n = qc_arch_seq_groups(&cfg, li, g); k < n; k++) ...   // g[k].lin[0 .. g[k].n - 1]
 *
 * Descriptions are static constant data: never freed, safe from any thread.
 */
#ifndef QC_ARCH_H
#define QC_ARCH_H

#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The seven linear layers of a decoder layer. Append only: values index reports and resume state. */
typedef enum qc_linear_id {
    QC_LIN_Q = 0, QC_LIN_K = 1, QC_LIN_V = 2, QC_LIN_O = 3,
    QC_LIN_GATE = 4, QC_LIN_UP = 5, QC_LIN_DOWN = 6,
    QC_LIN_COUNT = 7
} qc_linear_id;

/* Mixture-of-experts layers add three linears per expert after the seven: expert e's gate, up and down
 * are slots QC_LIN_EXPERT(e, 0 .. 2). A model's layers have qc_arch_n_lin(cfg) slots; which exist in
 * a given layer: qc_linear_present (a sparse layer has no dense MLP, unless slots 4..6 hold a shared
 * expert; a dense layer of an MoE model has no experts). */
#define QC_EXPERTS_MAX 512
#define QC_LIN_MAX     (QC_LIN_COUNT + 3 * QC_EXPERTS_MAX)
#define QC_LIN_EXPERT(e, j) ((qc_linear_id)(QC_LIN_COUNT + 3 * (e) + (j)))

/* A width in config terms. */
typedef enum qc_arch_dim {
    QC_DIM_HIDDEN = 0,  /* hidden_size */
    QC_DIM_Q,           /* n_heads * head_dim */
    QC_DIM_KV,          /* n_kv_heads * head_dim */
    QC_DIM_FF,          /* intermediate_size */
    QC_DIM_HEAD,        /* head_dim */
    QC_DIM_MOE_FF,      /* an expert's MLP width (moe_intermediate_size; Mixtral: intermediate_size) */
    QC_DIM_SHARED_FF,   /* shared_expert_intermediate_size (Qwen2-MoE) */
} qc_arch_dim;

/* Which config flag gives a linear a bias. */
typedef enum qc_arch_bias {
    QC_BIAS_NONE = 0,   /* never */
    QC_BIAS_QKV,        /* qkv_bias (Qwen2; Llama attention_bias) */
    QC_BIAS_O,          /* o_bias (Llama attention_bias) */
    QC_BIAS_MLP,        /* mlp_bias */
} qc_arch_bias;

typedef struct qc_arch_linear {
    const char  *name;       /* tensor path below "<layers>.N." (qc_layers_path), e.g. "self_attn.q_proj";
                                NULL: the architecture has no such linear (OPT's MLP has no gate) */
    qc_arch_dim  out, in;    /* out_features (rows), in_features (columns) */
    qc_arch_bias bias;
    qc_linear_id input;      /* the capture point whose rows it consumes (q, k, v: QC_LIN_Q) */
    bool         awq_no_clip;/* AWQ's clipping search skips it (q/k: their outputs meet in the attention
                                scores, which the per-linear output error does not see) */
    const char  *tensor;     /* NULL: stored as name.weight; else a slice of rows of this fused tensor
                                (e.g. Phi-3's "self_attn.qkv_proj"): the linears sharing it are consecutive,
                                in row order. Loaded as separate linears and written back fused; GPTQ, RTN
                                and AWQ treat output rows independently, so quantizing the slices (one
                                input, one Hessian, one packability decision for all) gives the fused
                                tensor's codes. */
} qc_arch_linear;

/* The norms of a decoder layer (qc_layer's attn_norm, mlp_norm, q_norm, k_norm, attn_post_norm, mlp_post_norm).
 * QC_NORM_ATTN and QC_NORM_MLP are the pre-norms whose outputs feed q/k/v and gate/up (AWQ folds into them):
 * Llama's input_layernorm and post_attention_layernorm, Gemma's input_layernorm and pre_feedforward_layernorm.
 * The post norms (Gemma) normalize a block's output before its residual add:
 *   h = x + attn_post(attn(attn_norm(x))),  out = h + mlp_post(mlp(mlp_norm(h))). */
typedef enum qc_norm_id {
    QC_NORM_ATTN = 0, QC_NORM_MLP = 1, QC_NORM_Q = 2, QC_NORM_K = 3,
    QC_NORM_ATTN_POST = 4, QC_NORM_MLP_POST = 5,
    QC_NORM_COUNT = 6
} qc_norm_id;

typedef struct qc_arch_norm {
    const char  *name;       /* below "<layers>.N.", without ".weight" (LayerNorms: ".bias" too); NULL: the
                                architecture has none */
    qc_arch_dim  dim;
    bool         if_qk_norm; /* present only when the config's qk_norm is set */
} qc_arch_norm;

/* A true-sequential group: linears solved together, from the Hessians of one forward of the layer with
 * the groups before it already quantized. */
typedef struct qc_arch_seq {
    qc_linear_id lin[QC_LIN_COUNT];
    int          n;
    int          block;      /* the residual block its linears are in: QC_BLOCK_ATTN or QC_BLOCK_MLP (once a
                                block's groups are all solved, a driver may apply that block to its
                                activations for good instead of recomputing it for the next groups) */
} qc_arch_seq;

/* A decoder layer's residual blocks, as bits (the GPU forward runs either or both). */
enum { QC_BLOCK_ATTN = 1, QC_BLOCK_MLP = 2, QC_BLOCK_BOTH = 3 };

/* An AWQ scale group (spec E.2): linears sharing one input, scaled by s, and the operation whose output
 * is divided by s so that the layer's function is unchanged. */
/* The module whose output AWQ's scale search compares for a group. */
typedef enum qc_awq_module {
    QC_AWQ_MOD_ATTN = 0,     /* the attention block without its residual (model.h qc_attn_forward) */
    QC_AWQ_MOD_MLP,          /* the MLP block without its residual (qc_mlp_forward) */
    QC_AWQ_MOD_LINEAR,       /* the group's one linear (its loss is exact from X^T X) */
    QC_AWQ_MOD_MOE,          /* an MoE block without its residual: routing, experts, shared expert (qc_mlp_forward) */
} qc_awq_module;

/* The most linears of one AWQ group: an MoE block's gate and up of every expert and of the shared expert. */
#define QC_AWQ_MAX_LIN (2 * QC_EXPERTS_MAX + 2)

typedef struct qc_arch_awq {
    qc_linear_id input;      /* capture point: the scaled linears' shared input (an MoE group: the block's
                                input, QC_LIN_GATE; its experts' own capture points hold rows of it) */
    qc_awq_module module;
    qc_linear_id lin[QC_AWQ_MAX_LIN];
    int          n;
    int          prev_norm;  /* fold into this norm (qc_norm_id), or -1 */
    int          prev_lin;   /* else into the last in_features output rows of this linear (qc_linear_id) */
    bool         if_square;  /* only when prev_lin's output has as many rows as lin[0] has columns and
                                lin[0] is square in that sense (v_proj -> o_proj without GQA) */
} qc_arch_awq;

/* A mixture-of-experts block (spec: the router picks top-k experts per token; the block's output is the
 * routing-weighted sum of their MLPs, plus a gated shared expert where there is one). */
typedef struct qc_arch_moe {
    const char *router;      /* below "<layers>.N.": the router linear [n_experts, d], never quantized */
    const char *experts;     /* the experts' module, e.g. "block_sparse_moe.experts" */
    const char *lin[3];      /* an expert's gate, up, down below "<experts>.<e>." (Hub per-expert 2-D) */
    const char *fused[2];    /* the fused 3-D layout below "<experts>.": gate_up [E, 2 * ff, d] (gate rows
                                first), down [E, d, ff] */
    const char *shared_gate; /* the shared expert's sigmoid gate [1, d] (never quantized), or NULL */
    bool        shared;      /* slots 4..6 of a sparse layer are the shared expert (else absent there) */
    bool        always_renorm; /* top-k weights renormalized whatever the config says (Mixtral) */
    const char *alt_router;  /* read too under these names (transformers 5's own: Mixtral's "mlp.gate" and */
    const char *alt_experts; /* "mlp.experts"); written under router/experts */
} qc_arch_moe;

typedef struct qc_arch_desc {
    qc_arch        id;
    const char    *class_name;   /* config "architectures"[0], e.g. "LlamaForCausalLM" */
    const char    *model_type;   /* config "model_type", e.g. "llama" */
    qc_arch_linear lin[QC_LIN_COUNT];
    qc_arch_norm   norm[QC_NORM_COUNT];
    qc_linear_id   caps[QC_LIN_COUNT]; /* capture points in forward order */
    int            n_caps;
    qc_arch_seq    seq[QC_LIN_COUNT];  /* true-sequential groups in order */
    int            n_seq;
    qc_arch_awq    awq[4];             /* AWQ scale groups in order */
    int            n_awq;
    bool           norm_unit_offset; /* every RMSNorm (layer, q/k and final) scales by (1 + w) instead of w (Gemma):
                                        y = x / rms(x) * (1 + w), in FP32. Folding AWQ's 1/s into such a norm
                                        keeps (1 + w') = (1 + w) / s */
    bool           embed_scaled; /* embeddings are multiplied by sqrt(hidden_size) (Gemma; FP32 here) */
    bool           layer_norm;   /* every norm (layer and final) is a LayerNorm with a bias (OPT), in FP32:
                                    y = (x - mean(x)) / sqrt(var(x) + eps) * w + b; AWQ folds 1/s into w and b.
                                    Else RMSNorm without bias */
    const char    *layers;       /* the decoder layers' module path: layer N's tensors are "<layers>.N.<name>"
                                    ("model.layers"; OPT "model.decoder.layers"): qc_layers_path */
    const char    *embed;        /* "model.embed_tokens.weight" */
    const char    *pos_embed;    /* learned absolute positions [max_position_embeddings + pos_offset, d] added to
                                    the embeddings (OPT: row p + 2 for position p); NULL: rotary positions */
    int            pos_offset;
    const char    *final_norm;   /* "model.norm.weight" */
    const char    *final_norm_bias; /* the final LayerNorm's bias (layer_norm), else NULL */
    const char    *lm_head;      /* "lm_head.weight" (the embedding when tie_word_embeddings) */
    const qc_arch_moe *moe;      /* NULL: a dense architecture */
} qc_arch_desc;

/* The description of arch; NULL for a value that is not a qc_arch. */
const qc_arch_desc *qc_arch_desc_of(qc_arch arch);
/* The descriptions in qc_arch order: *n of them. */
const qc_arch_desc *qc_arch_descs(int *n);

/* The decoder layers' module path ("model.layers", OPT "model.decoder.layers"): layer N's tensors are
 * "<path>.N.<name>", in the input model, the checkpoints qcal writes, reports and messages alike. */
const char  *qc_layers_path(const qc_model_config *cfg);
/* Whether the architecture's norms are LayerNorms with biases (OPT), whose bias tensors sit beside the weights. */
bool         qc_norm_has_bias(const qc_model_config *cfg);
/* Whether the architecture rotates q and k (false: learned positions added to the embeddings, OPT). */
bool         qc_arch_has_rope(const qc_model_config *cfg);

/* Linear slots per layer: QC_LIN_COUNT, plus 3 per expert for an MoE model. */
int          qc_arch_n_lin(const qc_model_config *cfg);
/* Whether slot l exists in layer li. */
bool         qc_linear_present(const qc_model_config *cfg, int li, qc_linear_id l);
/* Slot l's tensor path below "<layers>.N." (without ".weight"): the description's name, or the
 * expert's "<experts>.<e>.<lin>". */
const char  *qc_linear_path(const qc_model_config *cfg, qc_linear_id l, char *buf, size_t size);
/* For an expert slot: its expert and j (0 gate, 1 up, 2 down); returns false for slots 0..6. */
bool         qc_linear_expert(qc_linear_id l, int *e, int *j);
/* Layer li's capture points in forward order (the order qc_layer_forward calls its capture function):
 * writes them to caps (QC_LIN_MAX), returns how many. An MoE layer: q, o, then QC_LIN_GATE (the block's
 * input, every row: the shared expert's input where there is one), every expert's gate, then the shared
 * expert's down (if any), every expert's down. */
int          qc_arch_caps(const qc_model_config *cfg, int li, qc_linear_id *caps);
/* Layer li's true-sequential groups (the description's, with an MoE layer's gate/up group holding every
 * expert's gate and up and its down group every down): writes up to 4 to g, returns how many. */
typedef struct qc_seq_group {
    qc_linear_id lin[QC_LIN_MAX];
    int          n;
    int          block;
} qc_seq_group;
int          qc_arch_seq_groups(const qc_model_config *cfg, int li, qc_seq_group g[4]);

/* A qc_arch_dim's value for this config. */
int          qc_arch_dim_value(const qc_model_config *cfg, qc_arch_dim dim);
/* "self_attn.q_proj", ... (the Llama names; qc_arch_desc_of(arch)->lin[l].name for a given model). */
const char  *qc_linear_name(qc_linear_id l);
/* A linear's shape and whether it has a bias, for this config (an absent slot: 0 x 0, no bias). */
void         qc_linear_shape(const qc_model_config *cfg, qc_linear_id l, int *out_features, int *in_features);
bool         qc_linear_has_bias(const qc_model_config *cfg, qc_linear_id l);
/* Where linear l is stored: the tensor path below "<layers>.N." (without ".weight"), the first row of
 * l's slice in it and the tensor's rows (row0 0 and rows == out_features unless fused). */
void         qc_linear_storage(const qc_model_config *cfg, qc_linear_id l, const char **tensor, int *row0, int *rows);
/* Whether l is the first (or only) linear stored in its tensor: code that visits stored tensors once
 * visits them at their first linear. */
bool         qc_linear_first_of_tensor(const qc_model_config *cfg, qc_linear_id l);
/* The capture point whose rows linear l consumes. */
qc_linear_id qc_linear_input(const qc_model_config *cfg, qc_linear_id l);
/* The width of a capture point's rows (in_features of the linears it feeds). */
int          qc_capture_width(const qc_model_config *cfg, qc_linear_id cap);
/* The value a norm weight adds to its stored values (1 for norm_unit_offset architectures, else 0): the norm
 * scales by (offset + w). */
float        qc_norm_offset(const qc_model_config *cfg);
/* Whether a norm exists for this config, and its length. */
bool         qc_norm_present(const qc_model_config *cfg, qc_norm_id n);
int          qc_norm_dim(const qc_model_config *cfg, qc_norm_id n);
/* The AWQ scale groups of layer li (if_square checked against the config's shapes): writes them to g (room
 * for qc_arch_awq_max_groups), returns how many. An MoE layer has the attention's groups, then (as AutoAWQ's
 * Mixtral and Qwen MoE definitions) one group of every expert's gate and up (and the shared expert's) on the
 * block's input, folded into the MLP norm and searched on the whole block's output; then each down
 * projection on its own input, folded into its up projection's rows. */
int          qc_arch_awq_groups(const qc_model_config *cfg, int li, qc_arch_awq *g);
int          qc_arch_awq_max_groups(const qc_model_config *cfg);

#ifdef __cplusplus
}
#endif
#endif /* QC_ARCH_H */
