/*
 * model.h - the FP32 forward pass of a Llama-family, Gemma or OPT decoder on the CPU, one decoder layer at a time.
 *
 * Weights stay mmapped in their stored dtype (F32/F16/BF16); qc_layer_load converts one decoder
 * layer to FP32 when it is needed and qc_layer_release gives the memory back, so at most a layer's
 * worth of FP32 weights is alive at once. All compute is FP32: single-threaded OpenBLAS sgemm
 * calls on blocks of a split fixed by the shapes, run as tasks on the qc_par pool (bits independent of
 * the thread count).
 *
 * The calibration pipeline drives layers one at a time over a batch of sequences:
 *
 *   qc_model *m;      qc_model_open("models/llama", &m);
 *   qc_fwd *f;        qc_fwd_create(&m->cfg, nseq, T, &f);
 *   float *x = ...;   // [nseq * T, d] row-major: sequence s, position t at row s*T + t
 *   qc_model_embed(m, ids, nseq * T, T, x);
 *   for (int i = 0; i < m->cfg.n_layers; i++) {
 *       qc_layer L;
 *       qc_layer_load(m, i, &L);
 *       qc_layer_forward(f, &L, x, nseq, T, capture_fn, user);  // x <- layer_i(x)
 *       qc_layer_release(&L);
 *   }
 *   qc_model_final_norm(m, x, nseq * T);      // then logits via qc_model_logits_rows
 *
 * Ownership: qc_model owns its weights (mmaps); a qc_layer owns its FP32 arrays until released;
 * qc_fwd owns its scratch buffers. Nothing here is thread-safe on the same object.
 */
#ifndef QC_MODEL_H
#define QC_MODEL_H

#include "arch.h"
#include "awq_format.h"
#include "gptq_format.h"
#include "model_config.h"
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The linears (qc_linear_id), their names, shapes and biases, the norms, capture points and groups of
 * each architecture: arch.h. */

typedef struct qc_model {
    qc_model_config  cfg;
    qc_weights      *weights;   /* owned */
    char            *dir;       /* owned copy of the model directory */
    const qc_tensor *embed;     /* [vocab, d] */
    const qc_tensor *final_norm;/* [d] */
    const qc_tensor *final_norm_bias; /* [d] the final LayerNorm's bias (OPT), else NULL */
    const qc_tensor *pos_embed; /* [max_position_embeddings + offset, d] learned positions (OPT), else NULL */
    const qc_tensor *lm_head;   /* [vocab, d]; == embed when embeddings are tied */
    bool             is_gptq;   /* a GPTQ checkpoint: quantized linears are dequantized on load */
    qc_gptq_config   gptq;      /* its quantization_config when is_gptq */
    bool             is_awq;    /* an AWQ (GEMM) checkpoint */
    qc_awq_config    awq;       /* its quantization_config when is_awq */
    bool             round_f16; /* round embeddings, final norm and head to F16 as they are read
                                   (what a checkpoint with F16 non-quantized tensors holds) */
} qc_model;

/* Opens dir (config.json + safetensors), checks that every tensor the architecture needs is present
 * with the right shape and a floating dtype. A GPTQ checkpoint (quantization_config.quant_method
 * "gptq") or AWQ checkpoint ("awq", version gemm) is read too: each linear is either packed
 * (P.qweight, ...) or a plain F16 P.weight. */
qc_status qc_model_open(const char *dir, qc_model **out);
void      qc_model_free(qc_model *m);

typedef struct qc_layer {
    int    index;
    float *attn_norm;                  /* [d] input_layernorm */
    float *mlp_norm;                   /* [d] post_attention_layernorm (Gemma: pre_feedforward_layernorm) */
    float *q_norm, *k_norm;            /* [head_dim] (Qwen3, Gemma-3), else NULL */
    float *attn_post_norm;             /* [d] Gemma's post_attention_layernorm (on the attention output), else NULL */
    float *mlp_post_norm;              /* [d] Gemma's post_feedforward_layernorm, else NULL */
    float *norm_bias[QC_NORM_COUNT];   /* LayerNorm biases by qc_norm_id (OPT: [d] self_attn_layer_norm.bias and
                                          final_layer_norm.bias at QC_NORM_ATTN, QC_NORM_MLP), else NULL */
    /* by slot (arch.h: QC_LIN_Q .. QC_LIN_DOWN, then the experts' QC_LIN_EXPERT(e, j)); an absent slot
     * (qc_linear_present false) has w NULL */
    float *w[QC_LIN_MAX];              /* (rows = out_features, cols = in_features), row-major */
    float *b[QC_LIN_MAX];              /* [out_features], or NULL when the linear has no bias */
    int    out_features[QC_LIN_MAX];
    int    in_features[QC_LIN_MAX];
    float *router;                     /* MoE layer: [n_experts, d] router weight (kept F32/F16, never quantized) */
    float *shared_gate;                /* Qwen2-MoE: [d] the shared expert's gate, else NULL */
} qc_layer;

/* The field holding norm n (&L->attn_norm, ...): how code driven by the architecture's description
 * (arch.h, qc_norm_id) reaches a norm. */
float **qc_layer_norm(qc_layer *L, qc_norm_id n);
/* The field holding norm n's bias (LayerNorm architectures; NULL otherwise). */
float **qc_layer_norm_bias(qc_layer *L, qc_norm_id n);

/* Converts layer i's weights to FP32 (owned by *L until qc_layer_release). */
qc_status qc_layer_load(const qc_model *m, int i, qc_layer *L);
void      qc_layer_release(qc_layer *L);

/* MoE layer i of an unquantized checkpoint: where expert linear l (slot >= QC_LIN_COUNT) is stored: *t is
 * its per-expert 2-D tensor (*el0 0) or the fused 3-D tensor holding it, *el0 its first element there
 * (gate_up [E, 2 * ff, d]: gate rows, then up rows; down [E, d, ff]). The tensor belongs to m. */
qc_status qc_model_expert_tensor(const qc_model *m, int i, qc_linear_id l, const qc_tensor **t, int64_t *el0);
/* The name layer i's router (shared 0) or shared-expert gate (shared 1) is read from: the description's,
 * or its alternative (transformers 5's Mixtral names) when the checkpoint has that one. */
void qc_model_moe_name(const qc_model *m, int i, bool shared, char *name, size_t size);

/* Rotary tables as transformers computes them (float32 angles, rope scaling included):
 * cos/sin [seqlen, head_dim / 2], position p at row p. head_dim <= 1024. */
void qc_rope_tables(const qc_model_config *cfg, int seqlen, float *cos_t, float *sin_t);
/* The same for the layers qc_layer_rope_local names (Gemma-3's sliding layers): base rope_local_theta, no
 * scaling. cfg->rope_local_theta must be > 0. */
void qc_rope_tables_local(const qc_model_config *cfg, int seqlen, float *cos_t, float *sin_t);

/* Scratch space and rotary tables for running layers on up to max_seqs sequences of up to
 * seqlen tokens each (positions 0..seqlen-1). */
typedef struct qc_fwd qc_fwd;
qc_status qc_fwd_create(const qc_model_config *cfg, int max_seqs, int seqlen, qc_fwd **out);
void      qc_fwd_free(qc_fwd *f);

/* Called with the input of a linear layer: x is [n, in] row-major, valid during the call.
 * Called once per capture point in the order of qc_arch_caps: QC_LIN_Q (the input shared by q, k and v),
 * QC_LIN_O, QC_LIN_GATE (shared by gate and up; OPT: QC_LIN_UP, fc1's) and QC_LIN_DOWN; in an MoE layer each expert's
 * QC_LIN_EXPERT(e, 0) gets the rows the router sent to expert e (in row order) and QC_LIN_EXPERT(e, 2)
 * their activations, after the shared expert's (or nothing, n = 0, for an expert no row chose). Returning false stops the layer there: qc_layer_forward
 * then returns QC_OK and leaves x unspecified (callers that stop early run on a copy). */
typedef bool (*qc_capture_fn)(void *user, qc_linear_id which, const float *x, int n, int in);

/* x: [nseq * T, d] residual stream, updated in place to the layer's output. Sequences attend only
 * to themselves (causal, from position 0). capture may be NULL. */
qc_status qc_layer_forward(qc_fwd *f, const qc_layer *L, float *x, int nseq, int T,
                           qc_capture_fn capture, void *user);

/* MoE calibration: while experts is not NULL, expert e with experts[e] set gets its QC_LIN_EXPERT(e, 2)
 * capture over every row of the batch (each row run through it), not only the rows routed to it; the
 * layer's output keeps the real routing. The array must outlive its use; NULL turns it off. */
void      qc_fwd_moe_all_rows(qc_fwd *f, const bool *experts);

/* The two halves of a layer without their residual connections, on normed inputs (AWQ runs them as
 * the modules whose outputs its scale search compares):
 *   out[nseq*T, d] = o_proj(attention(q_proj(xn), k_proj(xn), v_proj(xn)))
 *   out[n, d]      = down_proj(act(gate_proj(xn)) * up_proj(xn))        (act: SiLU, Gemma's GELU-tanh)
 *   out[n, d]      = fc2(relu(fc1(xn)))                                 (OPT: no gate)
 * (Gemma's post norms are not part of them: AWQ compares self_attn's and mlp's outputs, as AutoAWQ does.)
 * xn and out must not be the qc_fwd's own buffers. */
qc_status qc_attn_forward(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int nseq, int T);
qc_status qc_mlp_forward(qc_fwd *f, const qc_layer *L, const float *xn, float *out, int n);
/* y[n, out] = x[n, in] . W^T + b (b may be NULL); W (rows = out, cols = in) row-major. */
void      qc_linear_apply(float *y, const float *x, const float *w, const float *b, int n, int out, int in);

/* Runs every decoder layer over x [nseq * T, d] in place: layers[i] when layers is not NULL (e.g. a
 * run's fake-quantized layers), else each layer loaded from the model and released after use. */
qc_status qc_model_run_layers(const qc_model *m, qc_fwd *f, const qc_layer *layers, float *x, int nseq, int T);

/* x[n, d] <- embedding rows of ids (ids checked against the vocabulary), times sqrt(d) (in FP32) where the
 * architecture scales its embeddings (Gemma), plus the learned position row (t % T) + 2 of row t where the
 * architecture has learned positions (OPT; rows are sequences of T tokens, T <= max_position_embeddings). */
qc_status qc_model_embed(const qc_model *m, const int32_t *ids, int n, int T, float *x);
/* x[n, d] <- RMSNorm(x) with the final norm weight ((1 + w) for Gemma); OPT: LayerNorm with its bias. */
qc_status qc_model_final_norm(const qc_model *m, float *x, int n);

/* The output head, converted to FP32 once and reused across calls. */
typedef struct qc_head qc_head;
qc_status qc_head_load(const qc_model *m, qc_head **out);
void      qc_head_free(qc_head *h);
/* logits[n, vocab] = x[n, d] . lm_head^T for final-normed rows x, soft-capped (tanh(l / cap) * cap) when the
 * config has final_logit_softcapping (Gemma-2). */
void      qc_head_logits(const qc_head *h, const float *x, int n, float *logits);
int       qc_head_vocab(const qc_head *h);

/* The softmax's exp for x <= 0 (vectorizable; relative error < 3e-7 against exp; 0 below -87). */
float     qc_exp_nonpos(float x);

/* Convenience for tests and generation: logits[T, vocab] of one sequence (positions 0..T-1). */
qc_status qc_model_logits(const qc_model *m, const int32_t *ids, int T, float *logits);

#ifdef __cplusplus
}
#endif
#endif /* QC_MODEL_H */
