/*
 * resume.h - the state a killed quantization resumes from, kept in the run's work directory.
 *
 * After layer i is finished its part (layer-0000i.safetensors) is on disk; then
 *   qc_resume_save_layer(dir, i, res)      writes layer-0000i.json: the layer's report rows (atomic);
 *   qc_resume_save_x(dir, i + 1, X, ...)   at a layer boundary chosen by the driver, writes x.bin: the next
 *                                          layer's input activations [rows, d] F32 with a header naming the
 *                                          boundary (atomic: x.bin.tmp, fsync, rename; the old x.bin stays
 *                                          until the new one is complete, so the disk peak is two boundaries);
 *                                          X NULL at the last boundary (n_layers), where no layer needs it:
 *                                          the header alone.
 * x.bin is the commit point: a run started again finds boundary b in it, takes the parts and reports of
 * layers 0..b-1 from the directory and continues at layer b with X read back, computing exactly what an
 * uninterrupted run computes (the drivers' arithmetic depends only on X and the layer).
 * Whether the directory belongs to this run (its fingerprint) is checked before, by the caller.
 */
#ifndef QC_RESUME_H
#define QC_RESUME_H

#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Looks for x.bin in dir. Without one, *start = 0 and nothing is read. With one for [rows, d]: reads X,
 * fills res->lin rows, res->unquantized and res->parts (base part first) for layers 0..b-1, *start = b.
 * A malformed or mismatching state is QC_ERR_FORMAT naming the file (the caller suggests --restart). */
qc_status qc_resume_load(const char *dir, int n_layers, size_t rows, int d, float *X, qc_pipeline_result *res,
                         int *start);
/* Reads only x.bin's header: *boundary (0 when there is no x.bin). */
qc_status qc_resume_peek(const char *dir, int *boundary);
qc_status qc_resume_save_layer(const char *dir, int layer, const qc_pipeline_result *res);
qc_status qc_resume_save_x(const char *dir, int boundary, const float *X, size_t rows, int d);

#ifdef __cplusplus
}
#endif
#endif /* QC_RESUME_H */
