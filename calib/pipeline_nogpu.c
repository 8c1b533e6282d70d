/* pipeline_nogpu.c - a CPU-only build's answer to --device cuda. */
#include "pipeline_internal.h"

#include <string.h>

qc_status qc_pipeline_run_gpu(const qc_model *m, const int32_t *ids, int nsamples, int seqlen,
                              const qc_pipeline_opts *o, qc_pipeline_result *res) {
    (void)m; (void)ids; (void)nsamples; (void)seqlen;
    memset(res, 0, sizeof *res);
    return qc_fail(QC_ERR_UNSUPPORTED,
                   "cuda:%d: this build of qcal has no CUDA backend (rebuild with -DQCAL_CUDA=ON), or use --device cpu",
                   o->device);
}
