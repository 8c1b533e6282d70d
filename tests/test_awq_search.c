/* The AWQ scale search on real models (calib/pipeline.c, spec E.3), read from the per-linear reports:
 *   - awq_scale best against each formula alone: per group the lower of the two losses, exactly, with
 *     the formula and ratio of the winner (ties to AutoAWQ's); each layer's search sees the same inputs
 *     in every run, because AWQ feeds the next layer the FP outputs;
 *   - the one-linear groups' X^T X loss (qc_awq_quad_loss) against its plain twin, the forwards
 *     (awq_plain_search): the same choices, losses within GRAM_REL;
 *   - the search windows: all (0) and a count >= nsamples are the same search; a smaller count runs.
 * Every search runs on the original weights of its layer, so each group's search is independent of
 * the other groups' choices.
 * Token windows are fixed pseudo-random ids: the search only needs activations, not meaning. */
#include <stdio.h>
#include <stdlib.h>

#include "pipeline.h"
#include "testutil.h"

#define GRAM_REL 1e-4

typedef struct {
    qc_awq_scale_mode mode;
    bool plain;
    int search;
} variant;

static qc_pipeline_result run(const char *dir, int nsamples, int T, int gs, qc_pack_format fmt, variant v) {
    static int n_run;
    qc_model *m = NULL;
    QC_CHECK_OK(qc_model_open(dir, &m));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)nsamples * T);
    uint64_t x = 0x243F6A8885A308D3ull;
    for (int i = 0; i < nsamples * T; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)m->cfg.vocab_size);
    }
    char work[4096];
    snprintf(work, sizeof work, "%s/run-%d", qc_test_tmpdir(), n_run++);
    qc_pipeline_opts o = {.method = QC_METHOD_AWQ, .q = qc_gptq_default_opts(), .format = fmt, .awq_scale = v.mode,
                          .awq_search_samples = v.search, .awq_plain_search = v.plain, .awq_clip = true,
                          .work_dir = work, .device = -1, .save_every = -1};
    o.q.bits = 4;
    o.q.group_size = gs;
    o.q.sym = false;
    qc_pipeline_result res;
    QC_CHECK_OK(qc_pipeline_run(m, ids, nsamples, T, &o, &res));
    free(ids);
    qc_model_free(m);
    return res;
}

/* best == min(autoawq, llm-awq) per group, exactly; returns how many groups each formula won. */
static void check_best(const char *dir, int nsamples, int T, int gs, qc_pack_format fmt) {
    qc_pipeline_result duo = run(dir, nsamples, T, gs, fmt, (variant){QC_AWQ_SCALE_AUTOAWQ, false, 0});
    qc_pipeline_result xr = run(dir, nsamples, T, gs, fmt, (variant){QC_AWQ_SCALE_LLM_AWQ, false, 0});
    qc_pipeline_result best = run(dir, nsamples, T, gs, fmt, (variant){QC_AWQ_SCALE_BEST, false, 0});
    int searched = 0, won[3] = {0};
    for (int i = 0; i < best.n_lin; i++) {
        const qc_linear_report *b = &best.lin[i], *d = &duo.lin[i], *x = &xr.lin[i];
        if (b->awq_ratio < 0) {
            assert_true(d->awq_ratio < 0 && x->awq_ratio < 0);
            assert_int_equal(b->awq_formula, QC_AWQ_F_NONE);
            continue;
        }
        searched++;
        assert_int_equal(d->awq_formula, QC_AWQ_F_DUO);
        assert_int_equal(x->awq_formula, QC_AWQ_F_X);
        const qc_linear_report *w = x->awq_loss < d->awq_loss ? x : d;
        if (b->awq_loss != w->awq_loss || b->awq_formula != w->awq_formula || b->awq_ratio != w->awq_ratio)
            fail_msg("%s: best chose %s %.2f loss %.9g; duo %.2f loss %.9g, x %.2f loss %.9g", b->name,
                     qc_awq_formula_name(b->awq_formula), b->awq_ratio, b->awq_loss, d->awq_ratio, d->awq_loss,
                     x->awq_ratio, x->awq_loss);
        assert_true(b->awq_loss <= d->awq_loss && b->awq_loss <= x->awq_loss);
        if (b->lin == QC_LIN_Q || b->lin == QC_LIN_O || b->lin == QC_LIN_GATE || b->lin == QC_LIN_DOWN)
            won[b->awq_formula]++;
    }
    printf("%s: %d linears searched; groups won: duo %d, x %d\n", dir, searched, won[1], won[2]);
    assert_true(searched > 0);
    qc_pipeline_result_free(&duo);
    qc_pipeline_result_free(&xr);
    qc_pipeline_result_free(&best);
}

static void test_best_stories260k(void **state) {
    (void)state;
    char *dir = qc_test_require("stories260K");
    check_best(dir, 12, 128, 32, QC_PACK_GPTQ_V2);
    free(dir);
}

static void test_best_llama25m(void **state) {
    (void)state;
    char *dir = qc_test_require("qcal-llama-25m");
    check_best(dir, 4, 128, 128, QC_PACK_AWQ);
    free(dir);
}

/* The X^T X loss of the one-linear groups (down_proj here; o_proj only without GQA) against the forwards;
 * 8 x 128 rows: X^T X is used from K = 1024 rows on. */
static void test_gram_twin(void **state) {
    (void)state;
    char *dir = qc_test_require("qcal-llama-25m");
    qc_pipeline_result fast = run(dir, 8, 128, 128, QC_PACK_AWQ, (variant){QC_AWQ_SCALE_BEST, false, 0});
    qc_pipeline_result plain = run(dir, 8, 128, 128, QC_PACK_AWQ, (variant){QC_AWQ_SCALE_BEST, true, 0});
    int n_one = 0;
    double worst = 0;
    for (int i = 0; i < fast.n_lin; i++) {
        const qc_linear_report *f = &fast.lin[i], *p = &plain.lin[i];
        if (f->awq_ratio < 0) continue;
        bool one = f->lin == QC_LIN_O || f->lin == QC_LIN_DOWN;
        double rel = fabs(f->awq_loss - p->awq_loss) / p->awq_loss;
        worst = one && rel > worst ? rel : worst;
        n_one += one;
        if (f->awq_ratio != p->awq_ratio || f->awq_formula != p->awq_formula || rel > (one ? GRAM_REL : 0.0))
            fail_msg("%s: X^T X chose %s %.2f loss %.9g, the forwards %s %.2f loss %.9g", f->name,
                     qc_awq_formula_name(f->awq_formula), f->awq_ratio, f->awq_loss,
                     qc_awq_formula_name(p->awq_formula), p->awq_ratio, p->awq_loss);
    }
    printf("X^T X vs forwards: %d one-linear groups, the same choices, worst loss difference %.2e\n", n_one, worst);
    assert_true(n_one > 0);
    qc_pipeline_result_free(&fast);
    qc_pipeline_result_free(&plain);
    free(dir);
}

/* Search windows: a count >= nsamples is all of them; fewer change only the attention/MLP groups'
 * losses (the one-linear groups always use every window). */
static void test_search_windows(void **state) {
    (void)state;
    char *dir = qc_test_require("qcal-llama-25m");
    qc_pipeline_result all = run(dir, 4, 128, 128, QC_PACK_AWQ, (variant){QC_AWQ_SCALE_BEST, false, 0});
    qc_pipeline_result many = run(dir, 4, 128, 128, QC_PACK_AWQ, (variant){QC_AWQ_SCALE_BEST, false, 9});
    qc_pipeline_result two = run(dir, 4, 128, 128, QC_PACK_AWQ, (variant){QC_AWQ_SCALE_BEST, false, 2});
    int differ = 0;
    for (int i = 0; i < all.n_lin; i++) {
        const qc_linear_report *a = &all.lin[i], *s = &many.lin[i], *t = &two.lin[i];
        assert_true(a->awq_loss == s->awq_loss && a->awq_ratio == s->awq_ratio && a->awq_formula == s->awq_formula);
        if (a->awq_ratio < 0) continue;
        if (a->lin == QC_LIN_DOWN || a->lin == QC_LIN_O) /* every window, original weights: the same search */
            assert_true(a->awq_loss == t->awq_loss && a->awq_ratio == t->awq_ratio && a->awq_formula == t->awq_formula);
        else
            assert_true(a->awq_loss != t->awq_loss); /* other windows: another loss */
        differ += a->awq_ratio != t->awq_ratio || a->awq_formula != t->awq_formula;
    }
    printf("2 of 4 windows: %d linears chose another grid point than all windows\n", differ);
    qc_pipeline_result_free(&all);
    qc_pipeline_result_free(&many);
    qc_pipeline_result_free(&two);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_best_stories260k),
        cmocka_unit_test(test_best_llama25m),
        cmocka_unit_test(test_gram_twin),
        cmocka_unit_test(test_search_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
