/*
 * gpu_forward.h - the decoder layer's forward pass on a CUDA device, and layer streaming.
 *
 * The GPU twin of model.h's qc_layer_forward / qc_attn_forward / qc_mlp_forward, with the same
 * semantics and the same capture points, so the pipeline drives both the same way:
 *   - weights fp16 on the device (bf16/f32 checkpoints are converted on the device after the copy);
 *   - activations: the residual stream x is fp32 [nseq * T, d]; the inputs of the linears (normed
 *     rows, attention output, SiLU(gate) * up) are fp16, as in an fp16 model;
 *   - MoE layers (Mixtral, Qwen2-MoE, Qwen3-MoE): the router's logits (fp32) -> softmax and top-k per row
 *     on the device as model.c's moe_route (ties to the lower id, renormalized per the config); the rows
 *     are grouped by expert on the host (row order), each expert runs on its gathered rows and its
 *     weighted output is added back per row, experts in id order, then the shared expert (sigmoid-gated):
 *     no atomics, so the sums come out the same on every run;
 *   - GEMMs through cuBLAS (fp16 operands, fp32 accumulation, tensor cores); own kernels for RMSNorm
 *     (w or Gemma's 1 + w), LayerNorm with bias (OPT), rotary embeddings (none for OPT's learned
 *     positions; none/linear/llama3, from model.c's tables; Gemma-3's local
 *     tables on its sliding layers), q/k norms (Qwen3, Gemma-3), causal attention with grouped-query
 *     heads, an optional sliding window (Mistral; Gemma: per layer) and score soft-capping (Gemma-2),
 *     SiLU or GELU-tanh gating, OPT's ungated ReLU MLP, Gemma's post-block norms (fp32, before the
 *     residual add), bias and residual adds.
 * Everything runs on the context's main stream; functions return when the work is queued (errors of
 * queued work surface at the next qc_gpu_sync).
 *
 *   qc_gpu_loader *ld;  qc_gpu_loader_create(g, m, &ld);
 *   qc_gpu_fwd *f;      qc_gpu_fwd_create(g, &m->cfg, max_seqs, T, &f);
 *   qc_gpu_loader_prefetch(ld, 0);
 *   for (i = 0; i < L; i++) {
 *       qc_gpu_layer *layer;
 *       qc_gpu_loader_get(ld, i, &layer);          // waits for layer i
 *       if (i + 1 < L) qc_gpu_loader_prefetch(ld, i + 1);   // overlaps with the work on layer i
 *       qc_gpu_layer_forward(f, layer, x_dev, nseq, T, capture, user);
 *   }
 *
 * Ownership: the loader owns two layer slots (device weights) and the pinned staging buffer; the
 * qc_gpu_layer returned by qc_gpu_loader_get stays valid, and may be modified in place (the
 * pipeline writes fake-quantized weights into w[]), until qc_gpu_loader_prefetch(ld, i + 2).
 * qc_gpu_fwd owns its scratch.
 */
#ifndef QC_GPU_FORWARD_H
#define QC_GPU_FORWARD_H

#include "model.h"
#include "qc_gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_gpu_layer {
    int       index;
    uint16_t *w[QC_LIN_MAX];            /* device fp16 [out_features, in_features] row-major; NULL for a linear
                                           this layer lacks (arch.h qc_linear_present: OPT's gate; slots >=
                                           QC_LIN_COUNT are an MoE layer's experts) */
    float    *b[QC_LIN_MAX];            /* device fp32 [out_features], or NULL */
    float    *attn_norm, *mlp_norm;     /* device fp32 [d] */
    float    *q_norm, *k_norm;          /* device fp32 [head_dim] (Qwen3, Gemma-3), else NULL */
    float    *attn_post_norm, *mlp_post_norm; /* device fp32 [d] (Gemma's post-block norms), else NULL */
    float    *norm_bias[QC_NORM_COUNT]; /* device fp32 LayerNorm biases by qc_norm_id (OPT), else NULL */
    uint16_t *router;                   /* MoE layer: device fp16 [n_experts, d], never quantized; else NULL */
    uint16_t *shared_gate;              /* Qwen2-MoE: device fp16 [1, d] the shared expert's gate, else NULL */
    int       out_features[QC_LIN_MAX];
    int       in_features[QC_LIN_MAX];
} qc_gpu_layer;

/* The field holding norm n (qc_layer_norm's twin). */
float **qc_gpu_layer_norm(qc_gpu_layer *L, qc_norm_id n);

/* Bytes of device memory one layer slot takes (fp16 weights + fp32 biases and norms). */
size_t qc_gpu_layer_bytes(const qc_model_config *cfg);

/* ---- layer streaming ----
 * A host thread reads layer i's tensors in their stored dtype straight from the mmapped files into a
 * pinned staging buffer (and then tells the kernel it may drop those file pages from the process,
 * so host RSS stays at about one layer even for models larger than RAM), the copy stream uploads
 * them, and conversion kernels produce the fp16/fp32 slot. The model must be a plain F16/BF16/F32
 * checkpoint (GPTQ/AWQ checkpoints are refused with a message). */
typedef struct qc_gpu_loader qc_gpu_loader;
qc_status qc_gpu_loader_create(qc_gpu *g, const qc_model *m, qc_gpu_loader **out);
void      qc_gpu_loader_free(qc_gpu_loader *ld);
/* Starts loading layer i into the slot not holding layer i - 1; returns at once. */
qc_status qc_gpu_loader_prefetch(qc_gpu_loader *ld, int i);
/* Waits until layer i (prefetched, or loaded now if it was not) is on the device; the main stream is
 * ordered after its upload. *out points into the loader. */
qc_status qc_gpu_loader_get(qc_gpu_loader *ld, int i, qc_gpu_layer **out);
/* Seconds the host spent reading from the files (in the loader thread) and seconds get() waited. */
void      qc_gpu_loader_times(const qc_gpu_loader *ld, double *read_s, double *wait_s);
/* Pinned staging bytes (host) the loader holds. */
size_t    qc_gpu_loader_host_bytes(const qc_gpu_loader *ld);
/* Whether every weight, bias and norm of the loaded layer L (from qc_gpu_loader_get, not yet modified) is
 * finite as the device holds it: qc_pl_check_layer's twin for a layer that never exists as FP32 on the
 * host (the loader converts on the device). QC_ERR_NUMERIC naming
 * model.layers.N.<tensor> and the element otherwise, as the CPU does; a BF16/F32 value that is finite in
 * the file but beyond the F16 range the device computes in is named as such. One pass over the layer on
 * the main stream and one small download (waits for the main stream). */
qc_status qc_gpu_loader_check_finite(qc_gpu_loader *ld, const qc_gpu_layer *L);

/* Uploads an FP32 host layer (qc_layer_load's result) into a new device layer: for tests, and for
 * models the loader refuses. Free with qc_gpu_layer_free. */
qc_status qc_gpu_layer_upload(qc_gpu *g, const qc_layer *L, qc_gpu_layer *out);
/* The same with the config, which is needed for layers with q/k norms (their length, head_dim, is not
 * in qc_layer; qc_gpu_layer_upload refuses such layers); also checks the shapes against the config. */
qc_status qc_gpu_layer_upload_cfg(qc_gpu *g, const qc_model_config *cfg, const qc_layer *L, qc_gpu_layer *out);
void      qc_gpu_layer_free(qc_gpu *g, qc_gpu_layer *L);

/* x[n, d] (device fp32) <- the embedding rows of ids (host, checked against the vocabulary), times
 * sqrt(d) for Gemma, plus the learned position row (r % T) + 2 of row r for OPT (as qc_model_embed): the
 * tables are uploaded once (as stored) and gathered on the device. */
qc_status qc_gpu_embed(qc_gpu *g, const qc_model *m, const int32_t *ids, size_t n, int T, float *x);

/* ---- forward ---- */
typedef struct qc_gpu_fwd qc_gpu_fwd;
/* Scratch for up to max_seqs sequences of seqlen tokens (positions 0..seqlen-1). */
qc_status qc_gpu_fwd_create(qc_gpu *g, const qc_model_config *cfg, int max_seqs, int seqlen, qc_gpu_fwd **out);
void      qc_gpu_fwd_free(qc_gpu_fwd *f);
/* Device bytes qc_gpu_fwd_create would take (for choosing the batch). */
size_t    qc_gpu_fwd_bytes(const qc_model_config *cfg, int max_seqs, int seqlen);

/* Called with the fp16 device input of a linear, x [n, in] row-major, valid during the call; for
 * QC_LIN_Q (shared by q, k, v), QC_LIN_O, QC_LIN_GATE (shared by gate, up; OPT: QC_LIN_UP, fc1's) and
 * QC_LIN_DOWN, in that order; an MoE layer's in qc_arch_caps order, each expert's with the rows routed to it (n may be 0), as
 * model.h's qc_layer_forward. Returning false stops the layer there (x is then unspecified). */
typedef bool (*qc_gpu_capture_fn)(void *user, qc_linear_id which, const uint16_t *x_dev, int n, int in);

/* The attention kernel: the fused one (gpu_attn.h: no score matrix in memory) wherever head_dim allows
 * (16, 32, 64, 96, 128), else the plain one (cuBLAS scores, a softmax kernel, cuBLAS P V; also where the
 * environment has QCAL_GPU_ATTN=plain at qc_gpu_fwd_create). The two agree to the fp16 rounding of the
 * probabilities, not bit for bit. set returns false, changing nothing, when fused is asked for and the
 * head_dim has no fused kernel. */
bool      qc_gpu_fwd_set_fused_attn(qc_gpu_fwd *f, bool fused);
bool      qc_gpu_fwd_fused_attn(const qc_gpu_fwd *f);
/* softmax(scale q k^T) v alone on projected, rotated q/k/v (gpu_attn.h's shapes; nseq * T within the
 * buffers) with layer `layer`'s window and the config's soft-cap, by the kernel chosen above. */
qc_status qc_gpu_attn_core(qc_gpu_fwd *f, int layer, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                           uint16_t *att, int nseq, int T);
/* x_dev: fp32 [nseq * T, d], updated in place to the layer's output. */
qc_status qc_gpu_layer_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x_dev, int nseq, int T,
                               qc_gpu_capture_fn capture, void *user);
/* One or both halves of the layer, with their residuals: the attention half x += o(attn(norm1(x)))
 * (captures Q, O) and the MLP half x += down(act(gate(norm2(x))) * up(norm2(x))) (captures GATE,
 * DOWN); with Gemma's post norms x += post(o(...)) and x += post(down(...)). The pipeline runs them separately to avoid recomputing the attention half once q/k/v/o
 * are final. */
enum { QC_GPU_ATTN_HALF = 1, QC_GPU_MLP_HALF = 2, QC_GPU_BOTH_HALVES = 3 };
qc_status qc_gpu_layer_forward_half(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x_dev, int nseq, int T, int halves,
                                    qc_gpu_capture_fn capture, void *user);
/* The end of one half from its last linear's input as a capture saw it (for the same x and weights):
 * x += o(in) for QC_GPU_ATTN_HALF (in: [nseq * T, q width], the attention output), x += down(in) for
 * QC_GPU_MLP_HALF of a dense layer (in: [nseq * T, ff], the activation; QC_ERR_ARG on an MoE layer), post
 * norms and biases as in qc_gpu_layer_forward_half, whose result this equals bit for bit. */
qc_status qc_gpu_layer_finish_half(qc_gpu_fwd *f, const qc_gpu_layer *L, float *x_dev, int nseq, int T, int half,
                                   const uint16_t *in_dev);
/* MoE: experts[e] true makes expert e's down capture see every row sent through it (its routed rows still
 * make the output), as model.h's qc_fwd_moe_all_rows; NULL (the default) for the routed rows only. The
 * array must live while the flag is set. */
void      qc_gpu_fwd_moe_all_rows(qc_gpu_fwd *f, const bool *experts);
/* The halves without residuals, on fp16 normed inputs xn [nseq*T, d]; out fp32 [nseq*T, d]. */
qc_status qc_gpu_attn_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, float *out, int nseq, int T);
qc_status qc_gpu_mlp_forward(qc_gpu_fwd *f, const qc_gpu_layer *L, const uint16_t *xn, float *out, int n);
/* xn16[n, d] <- RMSNorm(x32) * w (fp16 out; (1 + w) for Gemma). OPT's LayerNorms run inside the layer
 * forward (they need the bias). */
qc_status qc_gpu_rmsnorm(qc_gpu_fwd *f, const float *x, const float *w, int n, uint16_t *xn16);
/* y[n, N] (fp32) = x[n, K] . W^T + b (b may be NULL); x and W fp16. beta 1 adds into y. */
qc_status qc_gpu_linear(qc_gpu *g, const uint16_t *x, const uint16_t *W, const float *b, float *y, int n, int N,
                        int K, float beta);
/* H[K, K] (fp32, row-major) += x^T x for fp16 x [n, K], fp32 accumulation: its lower triangle (wide K: only
 * the tiles on and below the diagonal are computed; the rest of H is unspecified until
 * qc_gpu_hessian_finish). Start from zeros; call once per batch, then finish once. */
qc_status qc_gpu_hessian_add(qc_gpu *g, const uint16_t *x, int n, int K, float *H);
/* H <- scale * H, exactly symmetric from its lower triangle: the accumulated Hessian made whole (async). */
qc_status qc_gpu_hessian_finish(qc_gpu *g, float *H, int K, float scale);
/* diag_host[i] = H[i, i] for device H [K, K] (K floats downloaded; waits for the main stream): a
 * non-finite input row makes its whole row and column of H non-finite, so the diagonal tells. */
qc_status qc_gpu_hessian_diag(qc_gpu *g, const float *H, int K, float *diag_host);

#ifdef __cplusplus
}
#endif
#endif /* QC_GPU_FORWARD_H */
