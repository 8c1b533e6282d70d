/* qc_gpu_nogpu.c - the CPU-only build's GPU context: every entry point that could be reached without
 * an open context says that this build has no CUDA backend. */
#include "qc_gpu.h"

bool qc_gpu_built(void) { return false; }
int  qc_gpu_count(void) { return 0; }

qc_status qc_gpu_open(int device, qc_gpu **out) {
    *out = NULL;
    return qc_fail(QC_ERR_UNSUPPORTED,
                   "cuda:%d: this build of qcal has no CUDA backend (rebuild with -DQCAL_CUDA=ON), or use --device cpu",
                   device);
}

void qc_gpu_close(qc_gpu *g) { (void)g; }

qc_status qc_gpu_host_alloc(void **p, size_t bytes, const char *what) {
    (void)bytes;
    (void)what;
    *p = NULL;
    return qc_fail(QC_ERR_UNSUPPORTED, "this build of qcal has no CUDA backend");
}

void qc_gpu_host_free(void *p) { (void)p; }
