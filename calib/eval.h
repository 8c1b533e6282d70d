/*
 * eval.h - perplexity the way the GPTQ and AWQ papers measure it (IST-DASLab llama_eval), and the
 * comparison of a quantized model with its base the way llama.cpp's users compare quantizations
 * (llama-perplexity --kl-divergence: mean KL divergence and top-1 agreement per token).
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
 *
 * qc_eval_compare runs the same windows through a base model too (the base first, then the model,
 * each one layer at a time) and compares the two next-token distributions at exactly the positions
 * whose NLL enters the perplexity (rows 0..seqlen-2 of each window, predicting tokens 1..seqlen-1):
 *
 *   KL_t   = sum_v p_base(v) (log p_base(v) - log p_model(v))      in double, from both log-softmaxes
 *   kl     = mean of KL_t over all those positions of all windows    (nats per token)
 *   top1_agreement = fraction of them where argmax(base) == argmax(model) (ties: the lowest token id)
 *
 *   qc_eval_cmp_result c;
 *   if (qc_eval_compare(quantized, fp16, ids, n_ids, &o, &c) == QC_OK)
 *       printf("%.6f %.6f %.4f\n", c.kl, c.top1_agreement, c.model.ppl);
 *
 * The model's figures in c.model are the bits qc_eval_perplexity gives for it. Alive at once: the two
 * output heads in FP32, one decoder layer, each model's final hidden states of one window
 * ([seqlen, hidden] floats each) and 64 rows of logits of each model. Every figure is the same for any
 * thread count (per-position values are reduced in position order).
 *
 * Ownership: the caller owns the models, the ids and the results (plain values).
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
                                    fake-quantized ones of a quantization run); NULL: load from files.
                                    In qc_eval_compare they replace the model's, never the base's. */
} qc_eval_opts;

typedef struct qc_eval_result {
    int     windows;            /* windows evaluated */
    int64_t text_tokens;        /* tokens in the whole text (incl. BOS) */
    int64_t predicted;          /* windows * (seqlen - 1) */
    double  ppl;                /* exp(mean of per-window mean NLL): the papers' number */
    double  ppl_tokens;         /* exp(total NLL / predicted) */
    double  top1;               /* fraction of predictions whose argmax is the next token */
    double  seconds;            /* wall time of the forward passes (in a comparison: of both models) */
    double  tokens_per_s;       /* windows * seqlen / seconds */
} qc_eval_result;

typedef struct qc_eval_cmp_result {
    qc_eval_result model;       /* the evaluated (e.g. quantized) model, as qc_eval_perplexity gives it */
    qc_eval_result base;        /* the base on the same windows */
    double  kl;                 /* mean KL(base || model) per predicted position, nats */
    double  kl_max;             /* largest per-position KL */
    double  kl_p99;             /* 99th percentile of per-position KL (nearest rank) */
    double  top1_agreement;     /* fraction of predicted positions where the two argmaxes agree */
} qc_eval_cmp_result;

qc_status qc_eval_perplexity(const qc_model *m, const int32_t *ids, size_t n_ids, const qc_eval_opts *opts,
                             qc_eval_result *res);

/* m and base must have the same vocabulary size (QC_ERR_ARG otherwise); ids come from the tokenizer they
 * share (the caller checks that both tokenizers encode the text alike). base may be m (kl is then 0 and
 * top1_agreement 1 exactly, when opts->layers is NULL). */
qc_status qc_eval_compare(const qc_model *m, const qc_model *base, const int32_t *ids, size_t n_ids,
                          const qc_eval_opts *opts, qc_eval_cmp_result *res);

#ifdef __cplusplus
}
#endif
#endif /* QC_EVAL_H */
