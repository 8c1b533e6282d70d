/* attn_choice.c - which attention kernel a GPU run uses (gpu_attn.h), in every build: the preflight and the
 * work directory's fingerprint name it before the run, the forward acts on it. */
#include <stdlib.h>
#include <string.h>

#include "gpu_attn.h"

bool qc_gpu_flash_attn_supported(int head_dim) {
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}

const char *qc_gpu_attn_kernel(int head_dim) {
    const char *ak = getenv("QCAL_GPU_ATTN");
    bool plain = ak && strcmp(ak, "plain") == 0;
    return !plain && qc_gpu_flash_attn_supported(head_dim) ? "fused" : "plain";
}
