/* attn_choice.c - which attention kernel a GPU run uses and whether it solves linears stacked (gpu_attn.h), in
 * every build: the preflight and the work directory's fingerprint name them before the run, the forward and
 * the solves act on them. */
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

bool qc_gpu_solve_stacked(void) {
    const char *v = getenv("QCAL_GPU_NO_STACK");
    return !(v && strcmp(v, "1") == 0);
}
