#include "eval.h"

#include "qc_par.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of logits alive at once per model. The head runs on chunks of this many rows from row 0 of the
 * window (the bits perplexity had before eval.c computed KL too). */
#define EVAL_CHUNK 64

/* One model run over the windows, with its running sums. */
typedef struct {
    const qc_model *m;
    const qc_layer *layers;   /* NULL: load each layer from the model's files */
    qc_fwd         *f;
    qc_head        *h;
    float          *x;        /* [T, d] the window's final-normed hidden states, row-major */
    float          *logits;   /* [EVAL_CHUNK, vocab] rows r0.. of the current chunk, row-major */
    float           mx[EVAL_CHUNK];
    int             argmax[EVAL_CHUNK];
    double          nll[EVAL_CHUNK];
    double          sum_win_mean, sum_nll;
    int64_t         correct;
} eval_side;

/* The per-row work of one chunk: NLL and argmax of every side, and with two sides KL(side 0 || side 1). */
typedef struct {
    eval_side     *s;
    int            nside;
    int            vocab;
    const int32_t *targets;   /* the chunk's */
    double         kl[EVAL_CHUNK];
} rows_ctx;

/* -log softmax(l)[target]: exp of non-positive floats summed in float lanes
 * of 8, then in double; argmax ties go to the lowest index. */
static double row_nll(const float *l, int vocab, int target, float *mx_out, int *argmax) {
    float mx = l[0];
    int am = 0;
    for (int j = 1; j < vocab; j++)
        if (l[j] > mx) { mx = l[j]; am = j; }
    float lane[8] = {0};
    int j = 0;
    for (; j + 8 <= vocab; j += 8)
        for (int k = 0; k < 8; k++) lane[k] += expf(l[j + k] - mx);
    double sum = 0.0;
    for (int k = 0; k < 8; k++) sum += lane[k];
    for (; j < vocab; j++) sum += expf(l[j] - mx);
    *mx_out = mx;
    *argmax = am;
    return log(sum) - (double)(l[target] - mx);
}

/* KL(p || q) of two rows of logits, all in double: with a = lp - max lp, b = lq - max lq,
 * log p = a - log Zp, log q = b - log Zq, so KL = sum_v e^a (a - b) / Zp - log Zp + log Zq.
 * Identical rows give exactly 0. */
static double row_kl(const float *lp, float mp, const float *lq, float mq, int vocab) {
    double zp = 0.0, zq = 0.0, s = 0.0;
    for (int v = 0; v < vocab; v++) {
        double a = (double)lp[v] - mp, b = (double)lq[v] - mq, e = exp(a);
        zp += e;
        zq += exp(b);
        s += e * (a - b);
    }
    return s / zp - log(zp) + log(zq);
}

static void rows_task(void *user, int i) {
    rows_ctx *c = user;
    for (int k = 0; k < c->nside; k++) {
        eval_side *s = &c->s[k];
        s->nll[i] = row_nll(s->logits + (size_t)i * c->vocab, c->vocab, c->targets[i], &s->mx[i], &s->argmax[i]);
    }
    if (c->nside == 2)
        c->kl[i] = row_kl(c->s[0].logits + (size_t)i * c->vocab, c->s[0].mx[i], c->s[1].logits + (size_t)i * c->vocab,
                          c->s[1].mx[i], c->vocab);
}

static void side_free(eval_side *s) {
    qc_head_free(s->h);
    qc_fwd_free(s->f);
    qc_aligned_free(s->x);
    qc_aligned_free(s->logits);
}

static qc_status side_init(eval_side *s, const qc_model *m, const qc_layer *layers, int T) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->layers = layers;
    const qc_model_config *c = &m->cfg;
    s->x = qc_aligned_alloc((size_t)T * c->hidden_size * sizeof(float));
    s->logits = qc_aligned_alloc((size_t)EVAL_CHUNK * c->vocab_size * sizeof(float));
    if (!s->x || !s->logits) return qc_fail(QC_ERR_NOMEM, "eval: out of memory for %s", m->dir);
    qc_status st = qc_fwd_create(c, 1, T, &s->f);
    if (st == QC_OK) st = qc_head_load(m, &s->h);
    return st;
}

/* The one window loop: runs every window through each side (side 0 first, one layer at a time), then
 * the head and the per-row figures in chunks. With two sides, kl_tok receives KL(side 0 || side 1) of
 * every predicted position in order and *agree the positions whose argmaxes agree. */
static qc_status run_windows(eval_side *sides, int nside, const int32_t *ids, size_t nwin, const qc_eval_opts *o,
                             int *windows, double *kl_tok, int64_t *agree) {
    int T = o->seqlen, vocab = sides[0].m->cfg.vocab_size;
    rows_ctx rc = {.s = sides, .nside = nside, .vocab = vocab};
    qc_status st = QC_OK;
    for (size_t w = 0; st == QC_OK && w < nwin; w++) {
        const int32_t *win = ids + w * (size_t)T;
        for (int k = 0; st == QC_OK && k < nside; k++) {
            eval_side *s = &sides[k];
            st = qc_model_embed(s->m, win, T, T, s->x);
            if (st == QC_OK) st = qc_model_run_layers(s->m, s->f, s->layers, s->x, 1, T);
            if (st == QC_OK) st = qc_model_final_norm(s->m, s->x, T);
            if (st != QC_OK && nside > 1) qc_error_prefix("%s", s->m->dir);
        }
        double win_nll[2] = {0.0, 0.0};
        /* rows 0..T-2 predict tokens 1..T-1 (qc_model_embed has checked every id of the window) */
        for (int r0 = 0; st == QC_OK && r0 < T - 1; r0 += EVAL_CHUNK) {
            int nr = T - 1 - r0 < EVAL_CHUNK ? T - 1 - r0 : EVAL_CHUNK;
            for (int k = 0; k < nside; k++)
                qc_head_logits(sides[k].h, sides[k].x + (size_t)r0 * sides[k].m->cfg.hidden_size, nr, sides[k].logits);
            rc.targets = win + 1 + r0;
            qc_par_for_work(nr, rows_task, &rc, (nside == 2 ? 40.0 : 8.0) * nr * (double)vocab);
            for (int i = 0; i < nr && st == QC_OK; i++) {
                for (int k = 0; k < nside; k++) {
                    eval_side *s = &sides[k];
                    if (!isfinite(s->nll[i])) {
                        st = qc_fail(QC_ERR_NUMERIC, "non-finite loss at row %d%s%s", r0 + i, nside > 1 ? " of " : "",
                                     nside > 1 ? s->m->dir : "");
                        break;
                    }
                    win_nll[k] += s->nll[i];
                    s->correct += s->argmax[i] == rc.targets[i];
                }
                if (st == QC_OK && nside == 2) {
                    if (!isfinite(rc.kl[i]))
                        st = qc_fail(QC_ERR_NUMERIC, "non-finite KL divergence at row %d", r0 + i);
                    kl_tok[w * (size_t)(T - 1) + (size_t)(r0 + i)] = rc.kl[i];
                    *agree += sides[0].argmax[i] == sides[1].argmax[i];
                }
            }
        }
        if (st != QC_OK) {
            qc_error_prefix("eval window %zu", w);
            break;
        }
        for (int k = 0; k < nside; k++) {
            sides[k].sum_win_mean += win_nll[k] / (double)(T - 1);
            sides[k].sum_nll += win_nll[k];
        }
        *windows = (int)(w + 1);
        if (o->progress && !o->progress(o->user, (int64_t)(w + 1), (int64_t)nwin, NULL))
            st = qc_fail(QC_ERR_CANCELLED, "eval: cancelled after %zu of %zu windows", w + 1, nwin);
    }
    return st;
}

static qc_status count_windows(size_t n_ids, const qc_eval_opts *o, size_t *nwin) {
    int T = o->seqlen;
    if (T < 2) return qc_fail(QC_ERR_ARG, "eval: seqlen must be at least 2 (got %d)", T);
    *nwin = n_ids / (size_t)T;
    if (*nwin == 0)
        return qc_fail(QC_ERR_ARG, "eval: the text has %zu tokens, fewer than one window of %d", n_ids, T);
    if (o->max_windows > 0 && *nwin > (size_t)o->max_windows) *nwin = (size_t)o->max_windows;
    if (*nwin > INT32_MAX) *nwin = INT32_MAX;
    return QC_OK;
}

static void side_result(const eval_side *s, int windows, int T, size_t n_ids, double seconds, qc_eval_result *res) {
    res->windows = windows;
    res->text_tokens = (int64_t)n_ids;
    res->predicted = (int64_t)windows * (T - 1);
    res->ppl = exp(s->sum_win_mean / windows);
    res->ppl_tokens = exp(s->sum_nll / (double)res->predicted);
    res->top1 = (double)s->correct / (double)res->predicted;
    res->seconds = seconds;
    res->tokens_per_s = seconds > 0 ? (double)windows * T / seconds : 0.0;
}

qc_status qc_eval_perplexity(const qc_model *m, const int32_t *ids, size_t n_ids, const qc_eval_opts *o,
                             qc_eval_result *res) {
    memset(res, 0, sizeof *res);
    res->text_tokens = (int64_t)n_ids;
    size_t nwin = 0;
    qc_status st = count_windows(n_ids, o, &nwin);
    if (st != QC_OK) return st;
    eval_side s;
    st = side_init(&s, m, o->layers, o->seqlen); /* fills s before it can fail */
    int windows = 0;
    double t0 = qc_time_now();
    if (st == QC_OK) st = run_windows(&s, 1, ids, nwin, o, &windows, NULL, NULL);
    double seconds = qc_time_now() - t0;
    if (st == QC_OK) side_result(&s, windows, o->seqlen, n_ids, seconds, res);
    else res->windows = windows;
    side_free(&s);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

qc_status qc_eval_compare(const qc_model *m, const qc_model *base, const int32_t *ids, size_t n_ids,
                          const qc_eval_opts *o, qc_eval_cmp_result *res) {
    memset(res, 0, sizeof *res);
    res->model.text_tokens = res->base.text_tokens = (int64_t)n_ids;
    if (m->cfg.vocab_size != base->cfg.vocab_size)
        return qc_fail(QC_ERR_ARG, "eval: %s has %d tokens in its vocabulary, the base %s has %d: KL needs the same",
                       m->dir, m->cfg.vocab_size, base->dir, base->cfg.vocab_size);
    size_t nwin = 0;
    qc_status st = count_windows(n_ids, o, &nwin);
    if (st != QC_OK) return st;
    int T = o->seqlen;
    if (nwin > SIZE_MAX / sizeof(double) / (size_t)(T - 1))
        return qc_fail(QC_ERR_NOMEM, "eval: %zu windows of %d tokens are too many", nwin, T);
    size_t n_pos = nwin * (size_t)(T - 1);
    double *kl_tok = malloc(n_pos * sizeof(double));
    if (!kl_tok) return qc_fail(QC_ERR_NOMEM, "eval: out of memory for %zu per-token KL values", n_pos);

    eval_side sides[2]; /* the base first: KL(base || model) */
    memset(sides, 0, sizeof sides);
    st = side_init(&sides[0], base, NULL, T);
    if (st == QC_OK) st = side_init(&sides[1], m, o->layers, T);
    int windows = 0;
    int64_t agree = 0;
    double t0 = qc_time_now();
    if (st == QC_OK) st = run_windows(sides, 2, ids, nwin, o, &windows, kl_tok, &agree);
    double seconds = qc_time_now() - t0;
    res->model.windows = res->base.windows = windows;
    if (st == QC_OK) {
        side_result(&sides[1], windows, T, n_ids, seconds, &res->model);
        side_result(&sides[0], windows, T, n_ids, seconds, &res->base);
        size_t n = (size_t)windows * (size_t)(T - 1);
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) sum += kl_tok[i]; /* position order: the same bits for any thread count */
        res->kl = sum / (double)n;
        res->top1_agreement = (double)agree / (double)n;
        qsort(kl_tok, n, sizeof(double), cmp_double);
        res->kl_max = kl_tok[n - 1];
        res->kl_p99 = kl_tok[(n * 99 + 99) / 100 - 1]; /* nearest rank: the ceil(0.99 n)-th smallest */
    }
    side_free(&sides[0]);
    side_free(&sides[1]);
    free(kl_tok);
    return st;
}
