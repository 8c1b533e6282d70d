/*
 * eval.h - perplexity the way the GPTQ and AWQ papers measure it (IST-DASLab llama_eval).
 *
 * The whole text is tokenized once (BOS once at the start when the tokenizer adds one), cut into
 * n = len(ids) / seqlen non-overlapping windows (the tail is dropped), each window is run from
 * position 0 with no extra BOS, and window i contributes the mean cross-entropy of its seqlen-1
 * predictions. ppl = exp(mean over windows); ppl_tokens = exp(total nll / total predictions).
 * Only one window's activations are alive at a time; layers are converted to FP32 as they run.
 *
 *   qc_eval_opts o = { .seqlen = 2048 };
 *   qc_eval_result r;
 *   if (qc_eval_perplexity(model, ids, n_ids, &o, &r) == QC_OK) printf("%.4f\n", r.ppl);
 */
#ifndef QC_EVAL_H
#define QC_EVAL_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_eval_opts {
    int            seqlen;       /* tokens per window (>= 2) */
    int            max_windows;  /* 0 = all */
    qc_progress_fn progress;     /* may be NULL; called after each window */
    void          *user;
    const qc_layer *layers;      /* [n_layers] in-memory layers to use instead of the model's (e.g. the
                                    fake-quantized ones of a quantization run); NULL: load from files */
} qc_eval_opts;

typedef struct qc_eval_result {
    int     windows;            /* windows evaluated */
    int64_t text_tokens;        /* tokens in the whole text (incl. BOS) */
    int64_t predicted;          /* windows * (seqlen - 1) */
    double  ppl;                /* exp(mean of per-window mean NLL): the papers' number */
    double  ppl_tokens;         /* exp(total NLL / predicted) */
    double  top1;               /* fraction of predictions whose argmax is the next token */
    double  seconds;            /* wall time of the forward passes */
    double  tokens_per_s;       /* windows * seqlen / seconds */
} qc_eval_result;

qc_status qc_eval_perplexity(const qc_model *m, const int32_t *ids, size_t n_ids, const qc_eval_opts *opts,
                             qc_eval_result *res);

#ifdef __cplusplus
}
#endif
#endif /* QC_EVAL_H */
