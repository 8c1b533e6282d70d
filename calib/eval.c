#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

qc_status qc_eval_perplexity(const qc_model *m, const int32_t *ids, size_t n_ids, const qc_eval_opts *o,
                             qc_eval_result *res) {
    memset(res, 0, sizeof *res);
    const qc_model_config *c = &m->cfg;
    int T = o->seqlen;
    if (T < 2) return qc_fail(QC_ERR_ARG, "eval: seqlen must be at least 2 (got %d)", T);
    size_t nwin = n_ids / (size_t)T;
    if (nwin == 0)
        return qc_fail(QC_ERR_ARG, "eval: the text has %zu tokens, fewer than one window of %d", n_ids, T);
    if (o->max_windows > 0 && nwin > (size_t)o->max_windows) nwin = (size_t)o->max_windows;
    if (nwin > INT32_MAX) nwin = INT32_MAX;
    res->text_tokens = (int64_t)n_ids;

    qc_fwd *f = NULL;
    qc_head *h = NULL;
    float *x = qc_aligned_alloc((size_t)T * c->hidden_size * sizeof(float));
    if (!x) return qc_fail(QC_ERR_NOMEM, "eval: out of memory");
    qc_status st = qc_fwd_create(c, 1, T, &f);
    if (st == QC_OK) st = qc_head_load(m, &h);

    double t0 = qc_time_now(), sum_win_mean = 0.0, sum_nll = 0.0;
    int64_t correct = 0;
    for (size_t w = 0; st == QC_OK && w < nwin; w++) {
        const int32_t *win = ids + w * (size_t)T;
        st = qc_model_embed(m, win, T, x);
        if (st == QC_OK) st = qc_model_run_layers(m, f, o->layers, x, 1, T);
        if (st == QC_OK) st = qc_model_final_norm(m, x, T);
        double nll = 0.0;
        int ok = 0;
        if (st == QC_OK) st = qc_head_nll(h, x, win + 1, T - 1, &nll, &ok); /* rows 0..T-2 predict 1..T-1 */
        if (st != QC_OK) {
            qc_error_prefix("eval window %zu", w);
            break;
        }
        sum_win_mean += nll / (double)(T - 1);
        sum_nll += nll;
        correct += ok;
        res->windows = (int)(w + 1);
        if (o->progress && !o->progress(o->user, (int64_t)(w + 1), (int64_t)nwin, NULL))
            st = qc_fail(QC_ERR_CANCELLED, "eval: cancelled after %zu of %zu windows", w + 1, nwin);
    }
    res->seconds = qc_time_now() - t0;
    if (st == QC_OK) {
        res->predicted = (int64_t)res->windows * (T - 1);
        res->ppl = exp(sum_win_mean / res->windows);
        res->ppl_tokens = exp(sum_nll / (double)res->predicted);
        res->top1 = (double)correct / (double)res->predicted;
        res->tokens_per_s = res->seconds > 0 ? (double)res->windows * T / res->seconds : 0.0;
    }
    qc_head_free(h);
    qc_fwd_free(f);
    qc_aligned_free(x);
    return st;
}
