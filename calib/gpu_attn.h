/*
 * gpu_attn.h - causal attention in one kernel (flash-style) for gpu_forward.cu.
 *
 *   q   [nseq * T, n_heads * head_dim]    fp16 on the device, after rope and norms; row s * T + i
 *   k,v [nseq * T, n_kv_heads * head_dim] fp16 on the device
 *   att [nseq * T, n_heads * head_dim]    fp16 on the device, written: att = softmax(scale * q k^T) v
 *                                         per sequence and head, query head h reading kv head
 *                                         h / (n_heads / n_kv_heads)
 * Row i sees keys j <= i, and with window > 0 only j > i - window; softcap > 0 replaces a score s by
 * tanh(s / softcap) * softcap before the mask (Gemma-2). Queued on g's main stream; no scratch memory.
 * head_dim must be one qc_gpu_flash_attn_supported accepts (else QC_ERR_UNSUPPORTED).
 */
#ifndef QC_GPU_ATTN_H
#define QC_GPU_ATTN_H

#include <stdbool.h>
#include <stdint.h>

#include "qc_gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Head sizes the fused kernel takes (attn_choice.c, in every build). */
bool      qc_gpu_flash_attn_supported(int head_dim);
/* "fused" or "plain": the kernel a forward created now uses for this head size (plain where the fused one
 * does not take it, or where the environment has QCAL_GPU_ATTN=plain). A static string. */
const char *qc_gpu_attn_kernel(int head_dim);
/* Whether a GPU run solves the GPTQ linears sharing an input as one stacked problem (pipeline_gpu.c
 * gpu_solve_run; attn_choice.c, in every build): yes unless the environment has QCAL_GPU_NO_STACK=1. The
 * GEMMs round differently at another N, so the work directory's fingerprint records it. */
bool      qc_gpu_solve_stacked(void);
qc_status qc_gpu_flash_attn(qc_gpu *g, const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *att,
                            int nseq, int T, int n_heads, int n_kv_heads, int head_dim, float scale, int window,
                            float softcap);

#ifdef __cplusplus
}
#endif

#endif
