/* test_holdout.c - held-out documents: the docs.h filter (every N-th document, i % N == N - 1, skipped for
 * calibration or returned alone for evaluation) in each format, and the recipe key calib[].holdout (parsed,
 * validated, in the hash only when set, written back by qc_recipe_to_yaml). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docs.h"
#include "recipe.h"
#include "testutil.h"

/* The documents of buf through the filter, joined with '|'. */
static void read_all(const char *buf, const char *name, int holdout, bool heldout, char *out, size_t cap) {
    qc_docs_opts o = {.format = QC_DOCS_AUTO, .holdout = holdout, .heldout = heldout};
    qc_docs *r;
    QC_CHECK_OK(qc_docs_open_mem(buf, strlen(buf), name, &o, &r));
    const char *d;
    size_t n, used = 0;
    out[0] = '\0';
    int64_t k = 0;
    while (qc_docs_next(r, &d, &n) == QC_OK && d) {
        used += (size_t)snprintf(out + used, cap - used, "%s%.*s", used ? "|" : "", (int)n, d);
        k++;
    }
    assert_int_equal(qc_docs_index(r), k);
    qc_docs_free(r);
}

static void test_docs_filter(void **state) {
    (void)state;
    char got[512];
    const char *lines = "d0\nd1\nd2\n\nd3\nd4\nd5\nd6\n";
    read_all(lines, "a.txt", 0, false, got, sizeof got);
    assert_string_equal(got, "d0|d1|d2|d3|d4|d5|d6");
    read_all(lines, "a.txt", 3, false, got, sizeof got);   /* 2 and 5 held out (empty lines are no documents) */
    assert_string_equal(got, "d0|d1|d3|d4|d6");
    read_all(lines, "a.txt", 3, true, got, sizeof got);
    assert_string_equal(got, "d2|d5");
    read_all(lines, "a.txt", 1, false, got, sizeof got);   /* 1: no filter, as 0 */
    assert_string_equal(got, "d0|d1|d2|d3|d4|d5|d6");
    const char *jl = "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"\"}\n{\"text\":\"d\"}\n";
    read_all(jl, "a.jsonl", 2, false, got, sizeof got);    /* records 1 and 3 held out; empty record 2 counts */
    assert_string_equal(got, "a|");
    read_all(jl, "a.jsonl", 2, true, got, sizeof got);
    assert_string_equal(got, "b|d");
    qc_docs_opts bad = {.holdout = -1};
    qc_docs *r = NULL;
    QC_CHECK_FAILS(qc_docs_open_mem("x", 1, "a.txt", &bad, &r), QC_ERR_ARG, "holdout -1");
}

static void test_recipe_key(void **state) {
    (void)state;
    qc_recipe a, b;
    char ha[65], hb[65];
    qc_recipe_init(&a);
    QC_CHECK_OK(qc_recipe_load_string(&a, "calib:\n  - path: /x/c.txt\n", 26, "a.yaml"));
    QC_CHECK_OK(qc_recipe_validate(&a));
    qc_recipe_hash(&a, ha);
    char *t = qc_recipe_hash_text(&a);
    assert_null(strstr(t, "holdout")); /* unset: absent, so older hashes stay */
    free(t);
    qc_recipe_init(&b);
    const char *y = "calib:\n  - path: /x/c.txt\n    holdout: 10\n";
    QC_CHECK_OK(qc_recipe_load_string(&b, y, strlen(y), "b.yaml"));
    QC_CHECK_OK(qc_recipe_validate(&b));
    assert_int_equal(b.calib[0].holdout, 10);
    qc_recipe_hash(&b, hb);
    assert_string_not_equal(ha, hb);
    char *yaml = qc_recipe_to_yaml(&b); /* round trip keeps it */
    qc_recipe c;
    qc_recipe_init(&c);
    QC_CHECK_OK(qc_recipe_load_string(&c, yaml, strlen(yaml), "c.yaml"));
    QC_CHECK_OK(qc_recipe_validate(&c));
    char hc[65];
    qc_recipe_hash(&c, hc);
    assert_string_equal(hb, hc);
    free(yaml);
    qc_recipe_free(&a);
    qc_recipe_free(&b);
    qc_recipe_free(&c);
    const char *bad = "calib:\n  - path: /x/c.txt\n    holdout: 1\n";
    qc_recipe_init(&a);
    QC_CHECK_FAILS(qc_recipe_load_string(&a, bad, strlen(bad), "bad.yaml"), QC_ERR_FORMAT, "bad.yaml:3:14: calib[0].holdout: 1 is not 0");
    qc_recipe_free(&a);
}

int main(void) {
    const struct CMUnitTest t[] = {
        cmocka_unit_test(test_docs_filter),
        cmocka_unit_test(test_recipe_key),
    };
    return cmocka_run_group_tests(t, NULL, NULL);
}
