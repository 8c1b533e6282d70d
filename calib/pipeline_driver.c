/*
 * pipeline_driver.c - the schedule of one decoder layer's quantization, shared by the CPU and CUDA
 * backends (pipeline_internal.h: qc_pl_backend_ops). Everything architecture-specific comes from arch.h.
 */
#include "pipeline_internal.h"

#include "qc_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qc_linear_report *qc_pl_row(qc_pl_driver *d, int li, qc_linear_id l) {
    QC_ASSERT((int)l < d->res->lin_stride);
    return &d->res->lin[(size_t)li * d->res->lin_stride + l];
}

int64_t qc_pipeline_moe_min_rows(const qc_pipeline_opts *o, const qc_model_config *cfg) {
    int64_t thr = o->moe_min_tokens >= 0 ? o->moe_min_tokens : cfg->hidden_size;
    return thr > 1 ? thr : 1;
}

int qc_pl_count_linears(const qc_model_config *cfg, int n_layers) {
    int n = 0;
    for (int li = 0; li < n_layers; li++)
        for (int l = 0; l < qc_arch_n_lin(cfg); l++) n += qc_linear_present(cfg, li, (qc_linear_id)l);
    return n;
}

static void name_row(qc_pl_driver *d, int li, qc_linear_id l) {
    const qc_model_config *cfg = &d->m->cfg;
    qc_linear_report *r = qc_pl_row(d, li, l);
    r->layer = li;
    r->lin = l;
    qc_linear_shape(cfg, l, &r->N, &r->K);
    r->awq_ratio = -1.0;
    r->awq_formula = QC_AWQ_F_NONE;
    r->awq_loss = 0.0;
    r->tokens = -1;
    char path[128];
    snprintf(r->name, sizeof r->name, "%s.%d.%s", qc_layers_path(cfg), li, qc_linear_path(cfg, l, path, sizeof path));
}

static qc_status report(qc_pl_driver *d, int li, qc_linear_id l) {
    d->done++;
    if (d->o->on_linear && !d->o->on_linear(d->o->user, qc_pl_row(d, li, l), d->done, d->total))
        return qc_fail(QC_ERR_CANCELLED, "quantize: cancelled");
    return QC_OK;
}

/* Whether linear l goes into the checkpoint packed: its shape fits the format and, stored fused, so do all
 * its tensor's other slices (a fused tensor is packed whole or kept whole). */
static bool packable(qc_pl_driver *d, qc_linear_id l, const char **why) {
    const qc_model_config *cfg = &d->m->cfg;
    const char *t, *tm;
    int r0, rows, N, K;
    if ((int)l >= QC_LIN_COUNT) { /* an expert: stored alone */
        qc_linear_shape(cfg, l, &N, &K);
        return qc_pl_packable(d->o, N, K, why);
    }
    qc_linear_storage(cfg, l, &t, &r0, &rows);
    for (int m = 0; m < QC_LIN_COUNT; m++) {
        if (!qc_arch_desc_of(cfg->arch)->lin[m].name) continue; /* absent (OPT's gate) */
        qc_linear_storage(cfg, (qc_linear_id)m, &tm, &r0, &rows);
        if (m != (int)l && strcmp(tm, t) != 0) continue;
        qc_linear_shape(cfg, (qc_linear_id)m, &N, &K);
        if (!qc_pl_packable(d->o, N, K, why)) return false;
    }
    return true;
}

static void phase(qc_pl_driver *d, int li, const char *what) {
    if (d->o->on_phase) d->o->on_phase(d->o->user, li, d->m->cfg.n_layers, what);
}

/* The wanted Hessians of group gi. In an MoE layer each expert's come from the rows routed to it; an expert with
 * fewer than qc_pipeline_moe_min_rows of them gets, under moe_low all-tokens, the Hessians of every row sent
 * through it (gate/up: the block's input, the layer's QC_LIN_GATE capture; down: a second pass that runs every
 * row through that expert for its capture only, the layer's output keeping the real routing), under rtn none
 * (it is rounded: moe_low says so to solve). */
static qc_status hessians(qc_pl_driver *d, int li, int gi, int n_groups, const bool *want) {
    const qc_model_config *cfg = &d->m->cfg;
    const qc_pipeline_opts *o = d->o;
    bool moe = qc_layer_is_moe(cfg, li);
    bool *w = malloc(QC_LIN_MAX * sizeof(bool)), *again = calloc(QC_LIN_MAX, sizeof(bool));
    bool *all = calloc(QC_EXPERTS_MAX, sizeof(bool));
    int64_t *rows = calloc(QC_LIN_MAX, sizeof(int64_t));
    qc_status st = w && again && all && rows ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) {
        memcpy(w, want, QC_LIN_MAX * sizeof(bool));
        for (int e = 0; moe && e < cfg->n_experts; e++) /* every-row gate/up Hessians ride on the block's input */
            if (w[QC_LIN_EXPERT(e, 0)] && o->moe_low == QC_MOE_LOW_ALL_TOKENS) w[QC_LIN_GATE] = true;
        st = d->ops->hessians(d->be, li, gi, n_groups, w, NULL, rows);
    }
    bool redo = false;
    for (int e = 0; st == QC_OK && moe && e < cfg->n_experts; e++) {
        qc_linear_id g = QC_LIN_EXPERT(e, 0), dn = QC_LIN_EXPERT(e, 2);
        if (w[g] || w[dn]) d->moe_rows[e] = w[g] ? rows[g] : rows[dn];
        d->moe_low[e] = d->moe_rows[e] < qc_pipeline_moe_min_rows(o, cfg);
        if (!d->moe_low[e] || o->moe_low != QC_MOE_LOW_ALL_TOKENS) continue;
        if (w[g]) st = d->ops->copy_hessian(d->be, g, QC_LIN_GATE, cfg->hidden_size); /* every row */
        if (w[dn]) again[dn] = all[e] = redo = true;
    }
    if (st == QC_OK && redo) st = d->ops->hessians(d->be, li, gi, n_groups, again, all, rows);
    free(w), free(again), free(all), free(rows);
    return st;
}

/* A linear's report row before its solve: the tokens its Hessian saw and, for an expert, its coverage; whether
 * it is rounded instead (an under-covered expert under moe_low rtn). */
static bool solve_row(qc_pl_driver *d, int li, qc_linear_id l) {
    qc_linear_report *r = qc_pl_row(d, li, l);
    int e, j;
    r->tokens = d->rows;
    if (!qc_linear_expert(l, &e, &j)) return false;
    bool low = d->moe_low[e], rtn = low && d->o->moe_low == QC_MOE_LOW_RTN;
    r->tokens = d->moe_rows[e];
    snprintf(r->coverage, sizeof r->coverage, "%s", !low ? "routed" : rtn ? "rtn" : "all-tokens");
    return rtn;
}

/* GPTQ and RTN: per group (true-sequential) or all at once, the Hessians from the partly quantized layer,
 * the solves; then the quantized layer's output is the next layer's input (GPTQ propagates quantized
 * outputs). */
static qc_status gptq_layer(qc_pl_driver *d, int li) {
    const qc_pipeline_opts *o = d->o;
    const qc_model_config *cfg = &d->m->cfg;
    qc_status st = QC_OK;
    qc_seq_group *seq = malloc(sizeof(qc_seq_group) * 4);
    bool *quant = calloc(QC_LIN_MAX, sizeof(bool)), *want = calloc(QC_LIN_MAX, sizeof(bool));
    const char **why = calloc(QC_LIN_MAX, sizeof(char *));
    if (!seq || !quant || !want || !why) {
        free(seq), free(quant), free(want), free(why);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    int n_seq = qc_arch_seq_groups(cfg, li, seq);
    int n_groups = o->true_sequential ? n_seq : 1;
    if (!o->true_sequential) { /* one group of every present linear */
        seq[0].n = 0;
        for (int l = 0; l < qc_arch_n_lin(cfg); l++)
            if (qc_linear_present(cfg, li, (qc_linear_id)l)) seq[0].lin[seq[0].n++] = (qc_linear_id)l;
    }
    for (int gi = 0; gi < n_groups && st == QC_OK; gi++) {
        const qc_linear_id *members = seq[gi].lin;
        int nm = seq[gi].n;
        memset(want, 0, QC_LIN_MAX * sizeof(bool));
        bool any = false;
        for (int k = 0; k < nm; k++) {
            qc_linear_id l = members[k];
            name_row(d, li, l);
            why[l] = NULL;
            quant[l] = packable(d, l, &why[l]);
            if (quant[l]) want[qc_linear_input(cfg, l)] = any = true;
        }
        if (any) {
            phase(d, li, "forward");
            st = hessians(d, li, gi, n_groups, want);
        }
        if (st == QC_OK) phase(d, li, "solve");
        for (int k = 0; k < nm && st == QC_OK; k++) {
            qc_linear_id l = members[k];
            if (!quant[l]) {
                if ((st = d->ops->keep_f16(d->be, li, l, why[l])) == QC_OK) st = report(d, li, l);
                continue;
            }
            const qc_linear_id in = qc_linear_input(cfg, l);
            bool rtn = solve_row(d, li, l);
            /* the run of GPTQ linears from k on that share l's input (members sharing an input are adjacent,
             * arch.c), offered to the backend as one problem */
            int n = 1;
            while (!rtn && d->ops->solve_run && o->method == QC_METHOD_GPTQ && k + n < nm && quant[members[k + n]] &&
                   qc_linear_input(cfg, members[k + n]) == in && !solve_row(d, li, members[k + n]))
                n++;
            bool last = true;
            for (int k2 = k + n; k2 < nm && k2 <= k + QC_LIN_COUNT; k2++)
                if (quant[members[k2]] && qc_linear_input(cfg, members[k2]) == in) last = false;
            bool taken = false;
            if (n >= 2 && (st = d->ops->solve_run(d->be, li, members + k, n, last, &taken))) break;
            if (taken) {
                for (int j = 0; j < n && st == QC_OK; j++) st = report(d, li, members[k + j]);
                k += n - 1;
                continue;
            }
            if (n >= 2) last = false; /* not taken: the run's later members still read l's Hessian */
            if ((st = d->ops->solve(d->be, li, l, last, rtn)) == QC_OK) st = report(d, li, l);
        }
        if (st == QC_OK && d->ops->group_done) st = d->ops->group_done(d->be, li, gi, n_groups, want);
    }
    free(seq), free(quant), free(want), free(why);
    if (st == QC_OK) st = d->ops->propagate(d->be, li, n_groups);
    return st;
}

/* AWQ (spec E.1): the capture pass on the original layer, the scale searches (all on the original
 * weights), the folds, the scaled inputs' Hessians, then clipping and quantization linear by linear. */
static qc_status awq_layer(qc_pl_driver *d, int li) {
    const qc_pipeline_opts *o = d->o;
    const qc_model_config *cfg = &d->m->cfg;
    int n_lin = qc_arch_n_lin(cfg), max_g = qc_arch_awq_max_groups(cfg);
    int *out_f = calloc((size_t)n_lin, sizeof(int)), *in_f = calloc((size_t)n_lin, sizeof(int));
    qc_arch_awq *groups = malloc(sizeof *groups * (size_t)max_g);
    float **scales = calloc((size_t)max_g, sizeof(float *));
    qc_pl_awq_choice *choice = calloc((size_t)max_g, sizeof *choice);
    qc_status st = out_f && in_f && groups && scales && choice ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    int ng = 0;
    for (int l = 0; l < n_lin && st == QC_OK; l++) {
        if (!qc_linear_present(cfg, li, (qc_linear_id)l)) continue;
        name_row(d, li, (qc_linear_id)l);
        out_f[l] = qc_pl_row(d, li, (qc_linear_id)l)->N;
        in_f[l] = qc_pl_row(d, li, (qc_linear_id)l)->K;
    }
    if (st == QC_OK) st = d->ops->awq_capture(d->be, li);
    if (st == QC_OK) phase(d, li, "awq-search");
    if (st == QC_OK) ng = qc_arch_awq_groups(cfg, li, groups);
    double t_search = qc_time_now();
    for (int gi = 0; gi < ng && st == QC_OK; gi++) {
        int K = in_f[groups[gi].lin[0]];
        choice[gi] = (qc_pl_awq_choice){.ratio = -1.0, .loss = 0.0, .formula = QC_AWQ_F_NONE, .gram = false};
        if (!(scales[gi] = malloc(sizeof(float) * (size_t)K))) {
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
        } else if (!qc_pl_awq_group_quantized(o, out_f, in_f, &groups[gi])) { /* nothing of it is quantized: nothing to protect */
            for (int k = 0; k < K; k++) scales[gi][k] = 1.0f;
        } else {
            st = d->ops->awq_search(d->be, li, &groups[gi], scales[gi], &choice[gi]);
        }
        if (st) qc_error_prefix("%s.%d awq scale search", qc_layers_path(cfg), li);
    }
    for (int gi = 0; gi < ng && st == QC_OK; gi++) {
        st = d->ops->awq_fold(d->be, li, &groups[gi], scales[gi]);
        for (int i = 0; i < groups[gi].n; i++) {
            qc_linear_report *r = qc_pl_row(d, li, groups[gi].lin[i]);
            r->awq_ratio = choice[gi].ratio;
            r->awq_formula = choice[gi].formula;
            r->awq_loss = choice[gi].loss;
        }
    }
    d->res->t_solve += qc_time_now() - t_search; /* the scale search is AWQ's solve */
    if (st == QC_OK) st = d->ops->awq_hessians(d->be, li, groups, ng, scales, choice);
    for (int gi = 0; gi < ng; gi++) free(scales[gi]);
    if (st == QC_OK) phase(d, li, "awq-quantize");
    for (int l = 0; l < n_lin && st == QC_OK; l++) {
        const char *why = NULL;
        if (!qc_linear_present(cfg, li, (qc_linear_id)l)) continue;
        if (!packable(d, (qc_linear_id)l, &why)) st = d->ops->keep_f16(d->be, li, (qc_linear_id)l, why);
        else st = d->ops->awq_quantize(d->be, li, (qc_linear_id)l);
        if (st == QC_OK) st = report(d, li, (qc_linear_id)l);
    }
    free(out_f), free(in_f), free(groups), free(scales), free(choice);
    return st;
}

qc_status qc_pl_layer(qc_pl_driver *d, int li) {
    for (int e = 0; e < QC_EXPERTS_MAX; e++) d->moe_rows[e] = -1, d->moe_low[e] = false;
    return d->o->method == QC_METHOD_AWQ ? awq_layer(d, li) : gptq_layer(d, li);
}
