/* The run recipe: defaults, every key, flags over the file, list forms, relative paths, method
 * defaults, canonical hash, every error class with its line:col, conflicts, example round trip. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recipe.h"
#include "sha256.h"

static const char k_defaults_json[] =
    "{\"act_order\":false,\"awq_clip\":true,\"awq_scale\":\"best\",\"awq_search_samples\":12,\"bits\":4,\"calib\":[{\"field\":\"text\",\"format\":\"jsonl\","
    "\"path\":\"hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz\",\"split\":\"line\",\"weight\":1}],"
    "\"damp\":0.01,\"device\":\"cpu\",\"eval\":[],\"format\":\"gptq\",\"group_size\":128,\"method\":\"gptq\","
    "\"model\":null,\"nsamples\":128,\"out\":null,\"qcal_recipe\":1,\"sampling\":\"gptq\",\"seed\":0,"
    "\"seqlen\":2048,\"static_groups\":false,\"sym\":true,\"true_sequential\":true}";
static const char k_defaults_hashed[] =
    "{\"act_order\":false,\"awq_clip\":true,\"awq_scale\":\"best\",\"awq_search_samples\":12,\"bits\":4,\"calib\":[{\"field\":\"text\",\"format\":\"jsonl\","
    "\"path\":\"hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz\",\"split\":\"line\",\"weight\":1}],"
    "\"damp\":0.01,\"format\":\"gptq\",\"group_size\":128,\"method\":\"gptq\",\"model\":null,\"nsamples\":128,"
    "\"qcal_recipe\":1,\"sampling\":\"gptq\",\"seed\":0,\"seqlen\":2048,\"static_groups\":false,\"sym\":true,"
    "\"true_sequential\":true}";

static qc_status load_str(qc_recipe *r, const char *y) { return qc_recipe_load_string(r, y, strlen(y), "t.yaml"); }

/* init + load + validate; fails the test on any error */
static void must_load(qc_recipe *r, const char *y) {
    qc_recipe_init(r);
    QC_CHECK_OK(load_str(r, y));
    QC_CHECK_OK(qc_recipe_validate(r));
}

static char *canon_of(const char *y) {
    qc_recipe r;
    must_load(&r, y);
    char *c = qc_recipe_canonical(&r);
    assert_non_null(c);
    qc_recipe_free(&r);
    return c;
}

static void hash_of(const char *y, char out[65]) {
    qc_recipe r;
    must_load(&r, y);
    qc_recipe_hash(&r, out);
    assert_int_equal(strlen(out), 64);
    qc_recipe_free(&r);
}

/* Loading (then validating) y must fail with `want`, the message containing every needle. */
static void expect_fail(const char *y, qc_status want, const char *n1, const char *n2) {
    qc_recipe r;
    qc_recipe_init(&r);
    qc_error_clear();
    qc_status st = load_str(&r, y);
    if (st == QC_OK) st = qc_recipe_validate(&r);
    qc_recipe_free(&r);
    const char *msg = qc_last_error();
    if (st != want)
        fail_msg("recipe:\n%s\n-> %s (%s), expected %s", y, qc_status_str(st), msg, qc_status_str(want));
    if (n1 && !strstr(msg, n1)) fail_msg("recipe:\n%s\nmessage '%s' lacks '%s'", y, msg, n1);
    if (n2 && !strstr(msg, n2)) fail_msg("recipe:\n%s\nmessage '%s' lacks '%s'", y, msg, n2);
}

static char *cwd_path(const char *rel) {
    char *cwd = getcwd(NULL, 0);
    assert_non_null(cwd);
    char *p = qc_path_join(cwd, rel);
    free(cwd);
    return p;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* ---- defaults ---- */
static void test_defaults(void **state) {
    (void)state;
    qc_recipe r;
    qc_recipe_init(&r);
    assert_null(r.model);
    assert_null(r.out);
    assert_string_equal(r.method, "gptq");
    assert_int_equal(r.bits, 4);
    assert_int_equal(r.group_size, 128);
    assert_true(r.sym);
    assert_false(r.act_order);
    assert_false(r.static_groups);
    assert_true(r.true_sequential);
    QC_CHECK_NEAR(r.damp, 0.01, 0);
    assert_int_equal(r.n_calib, 1);
    assert_string_equal(r.calib[0].path, "hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz");
    assert_string_equal(r.calib[0].format, "jsonl");
    assert_string_equal(r.calib[0].field, "text");
    assert_string_equal(r.calib[0].split, "line");
    QC_CHECK_NEAR(r.calib[0].weight, 1.0, 0);
    assert_string_equal(r.sampling, "gptq");
    assert_int_equal(r.nsamples, 128);
    assert_int_equal(r.seqlen, 2048);
    assert_true(r.seed == 0);
    assert_string_equal(r.format, "gptq");
    assert_string_equal(r.device, "cpu");
    assert_int_equal(r.n_eval, 0);
    assert_true(r.set_mask == 0);
    for (int k = 0; k < QC_RK_COUNT; k++) assert_null(r.where[k]);
    QC_CHECK_OK(qc_recipe_validate(&r));
    char *c = qc_recipe_canonical(&r), *h = qc_recipe_hash_text(&r);
    assert_string_equal(c, k_defaults_json);
    assert_string_equal(h, k_defaults_hashed);
    char hash[65], want[65];
    qc_recipe_hash(&r, hash);
    qc_sha256_buf(h, strlen(h), want);
    assert_string_equal(hash, want);
    free(c);
    free(h);
    qc_recipe_free(&r);
    /* nothing, comments only, an empty document, an explicit null document: all the defaults */
    const char *empties[] = {"", "# only a comment\n\n", "---\n", "--- ~\n...\n", "{}\n"};
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        c = canon_of(empties[i]);
        assert_string_equal(c, k_defaults_json);
        free(c);
    }
}

/* ---- every key ---- */
static const char k_every[] =
    "model: m\n"
    "out: /abs/out\n"
    "method: gptq\n"
    "bits: 3\n"
    "group_size: 64\n"
    "sym: false\n"
    "act_order: true\n"
    "static_groups: true\n"
    "true_sequential: false\n"
    "damp: 0.05\n"
    "calib:\n"
    "  - path: data/a.jsonl\n"
    "    format: jsonl\n"
    "    field: content\n"
    "    split: paragraph\n"
    "    weight: 2.5\n"
    "  - hf://datasets/org/ds/x.parquet\n"
    "sampling: awq\n"
    "nsamples: 32\n"
    "seqlen: 512\n"
    "seed: 18446744073709551615\n"
    "format: gptq_v2\n"
    "device: cuda:1\n"
    "eval:\n"
    "  - text: wiki.txt\n"
    "    seqlen: 1024\n"
    "  - c4.txt\n"
    "awq_scale: llm-awq\n"
    "awq_clip: false\n"
    "awq_search_samples: all\n"
    "mse: true\n"
    "moe_min_tokens: 512\n"
    "moe_low_coverage: rtn\n";

static void test_every_key(void **state) {
    (void)state;
    qc_recipe r;
    must_load(&r, k_every);
    char *m = cwd_path("m"), *a = cwd_path("data/a.jsonl"), *w = cwd_path("wiki.txt"), *c4 = cwd_path("c4.txt");
    assert_string_equal(r.model, m);
    assert_string_equal(r.out, "/abs/out");
    assert_string_equal(r.method, "gptq");
    assert_int_equal(r.bits, 3);
    assert_int_equal(r.group_size, 64);
    assert_false(r.sym);
    assert_true(r.act_order);
    assert_true(r.static_groups);
    assert_false(r.true_sequential);
    QC_CHECK_NEAR(r.damp, 0.05, 0);
    assert_string_equal(r.awq_scale, "llm-awq");
    assert_false(r.awq_clip);
    assert_int_equal(r.awq_search_samples, 0);
    assert_true(r.mse);
    assert_int_equal(r.moe_min_tokens, 512);
    assert_string_equal(r.moe_low_coverage, "rtn");
    assert_int_equal(r.n_calib, 2);
    assert_string_equal(r.calib[0].path, a);
    assert_string_equal(r.calib[0].format, "jsonl");
    assert_string_equal(r.calib[0].field, "content");
    assert_string_equal(r.calib[0].split, "paragraph");
    QC_CHECK_NEAR(r.calib[0].weight, 2.5, 0);
    assert_string_equal(r.calib[1].path, "hf://datasets/org/ds/x.parquet");
    assert_string_equal(r.calib[1].format, "auto");
    assert_string_equal(r.calib[1].field, "text");
    assert_string_equal(r.calib[1].split, "line");
    QC_CHECK_NEAR(r.calib[1].weight, 1.0, 0);
    assert_string_equal(r.sampling, "awq");
    assert_int_equal(r.nsamples, 32);
    assert_int_equal(r.seqlen, 512);
    assert_true(r.seed == UINT64_MAX);
    assert_string_equal(r.format, "gptq_v2");
    assert_string_equal(r.device, "cuda:1");
    assert_int_equal(r.n_eval, 2);
    assert_string_equal(r.eval[0].text, w);
    assert_int_equal(r.eval[0].seqlen, 1024);
    assert_string_equal(r.eval[1].text, c4);
    assert_int_equal(r.eval[1].seqlen, 0);
    assert_true(r.set_mask == (QC_RK_BIT(QC_RK_COUNT) - 1));
    assert_string_equal(r.where[QC_RK_BITS], "t.yaml:4:7");
    assert_string_equal(r.where[QC_RK_CALIB], "t.yaml:12:3");
    char *c = qc_recipe_canonical(&r);
    assert_non_null(strstr(c, "\"seed\":18446744073709551615,")); /* exact, not a rounded double */
    assert_non_null(strstr(c, "{\"seqlen\":512,\"text\":\"")); /* eval seqlen 0 shown resolved */
    assert_non_null(strstr(c, "\"device\":\"cuda:1\""));
    assert_non_null(strstr(c, "\"moe_min_tokens\":512,")); /* set: in the hash */
    assert_non_null(strstr(c, "\"moe_low_coverage\":\"rtn\""));
    free(c);
    qc_recipe_free(&r);
    free(m), free(a), free(w), free(c4);
    /* other spellings of the same values */
    must_load(&r, "device: cuda:07\nsym: False\nact_order: TRUE\ndamp: 5e-2\nseed: +12\nbits: 8\ngroup_size: -1\n");
    assert_string_equal(r.device, "cuda:7");
    assert_false(r.sym);
    assert_true(r.act_order);
    QC_CHECK_NEAR(r.damp, 0.05, 0);
    assert_true(r.seed == 12);
    assert_int_equal(r.group_size, -1);
    assert_string_equal(r.format, "gptq_v2"); /* asym: never v1 */
    qc_recipe_free(&r);
    must_load(&r, "device: cuda\nmodel: hf://meta-llama/Llama-2-7b-hf@main\nout: null\n");
    assert_string_equal(r.device, "cuda");
    assert_string_equal(r.model, "hf://meta-llama/Llama-2-7b-hf@main");
    assert_null(r.out);
    assert_true(r.set_mask & QC_RK_BIT(QC_RK_OUT));
    qc_recipe_free(&r);
}

/* ---- flags ---- */
static void test_flags_override(void **state) {
    (void)state;
    qc_recipe r;
    qc_recipe_init(&r);
    QC_CHECK_OK(load_str(&r, k_every));
    QC_CHECK_OK(qc_recipe_set(&r, "bits", "8", "--bits"));
    QC_CHECK_OK(qc_recipe_set(&r, "group-size", "128", "--group-size"));
    QC_CHECK_OK(qc_recipe_set(&r, "true_sequential", "true", "--true-sequential"));
    QC_CHECK_OK(qc_recipe_set(&r, "sym", "true", "--sym"));
    QC_CHECK_OK(qc_recipe_set(&r, "act-order", "false", "--no-act-order"));
    QC_CHECK_OK(qc_recipe_set(&r, "static_groups", "false", NULL));
    QC_CHECK_OK(qc_recipe_set(&r, "damp", "0.1", "--damp"));
    QC_CHECK_OK(qc_recipe_set(&r, "method", "rtn", "--method"));
    QC_CHECK_OK(qc_recipe_set(&r, "sampling", "gptq", "--sampling"));
    QC_CHECK_OK(qc_recipe_set(&r, "nsamples", "7", "--nsamples"));
    QC_CHECK_OK(qc_recipe_set(&r, "seqlen", "64", "--seqlen"));
    QC_CHECK_OK(qc_recipe_set(&r, "seed", "42", "--seed"));
    QC_CHECK_OK(qc_recipe_set(&r, "format", "gptq", "--format"));
    QC_CHECK_OK(qc_recipe_set(&r, "device", "cpu", "--device"));
    QC_CHECK_OK(qc_recipe_set(&r, "model", "hf://org/model", "--model"));
    QC_CHECK_OK(qc_recipe_set(&r, "out", "o", "--out"));
    QC_CHECK_OK(qc_recipe_set(&r, "calib", "c.txt", "--calib"));
    QC_CHECK_OK(qc_recipe_set(&r, "eval", "e.txt", "--eval"));
    QC_CHECK_OK(qc_recipe_validate(&r));
    char *o = cwd_path("o"), *c = cwd_path("c.txt"), *e = cwd_path("e.txt");
    assert_int_equal(r.bits, 8);
    assert_int_equal(r.group_size, 128);
    assert_true(r.true_sequential);
    assert_true(r.sym);
    assert_false(r.act_order);
    assert_false(r.static_groups);
    QC_CHECK_NEAR(r.damp, 0.1, 0);
    assert_string_equal(r.method, "rtn");
    assert_string_equal(r.sampling, "gptq");
    assert_int_equal(r.nsamples, 7);
    assert_int_equal(r.seqlen, 64);
    assert_true(r.seed == 42);
    assert_string_equal(r.format, "gptq");
    assert_string_equal(r.device, "cpu");
    assert_string_equal(r.model, "hf://org/model");
    assert_string_equal(r.out, o);
    assert_int_equal(r.n_calib, 1); /* --calib replaces the file's two sources */
    assert_string_equal(r.calib[0].path, c);
    assert_string_equal(r.calib[0].format, "auto");
    assert_int_equal(r.n_eval, 3); /* --eval appends */
    assert_string_equal(r.eval[2].text, e);
    assert_string_equal(r.where[QC_RK_BITS], "--bits");
    assert_string_equal(r.where[QC_RK_STATIC_GROUPS], "static_groups");
    free(o), free(c), free(e);

    /* bad flag values are usage errors (QC_ERR_ARG) naming the flag */
    QC_CHECK_FAILS(qc_recipe_set(&r, "bits", "5", "--bits"), QC_ERR_ARG, "--bits: 5 is not one of 2, 3, 4, 8");
    QC_CHECK_FAILS(qc_recipe_set(&r, "bits", "four", "--bits"), QC_ERR_ARG, "--bits: expected an integer, got 'four'");
    QC_CHECK_FAILS(qc_recipe_set(&r, "seed", "-1", "--seed"), QC_ERR_ARG, "--seed: expected a non-negative integer");
    QC_CHECK_FAILS(qc_recipe_set(&r, "sym", "yes", "--sym"), QC_ERR_ARG, "expected true or false, got 'yes'");
    QC_CHECK_FAILS(qc_recipe_set(&r, "method", "gptx", "--method"), QC_ERR_ARG,
                   "--method: 'gptx' is not one of: gptq, awq, rtn");
    QC_CHECK_FAILS(qc_recipe_set(&r, "damp", "1", NULL), QC_ERR_ARG, "damp: '1' is not in (0, 1)");
    QC_CHECK_FAILS(qc_recipe_set(&r, "model", "", "--model"), QC_ERR_ARG, "--model: must not be empty");
    QC_CHECK_FAILS(qc_recipe_set(&r, "out", "hf://org/x", "--out"), QC_ERR_ARG, "not an hf:// reference");
    QC_CHECK_FAILS(qc_recipe_set(&r, "model", "\xff\xfe", "--model"), QC_ERR_ARG, "not valid UTF-8");
    QC_CHECK_FAILS(qc_recipe_set(&r, "frob", "1", "--frob"), QC_ERR_ARG,
                   "unknown recipe key 'frob'; allowed: model, out, method, bits, group_size");
    /* a failed flag leaves the value alone */
    assert_int_equal(r.bits, 8);
    /* "null" from a flag is a file name, not YAML's null */
    QC_CHECK_OK(qc_recipe_set(&r, "model", "null", "--model"));
    char *n = cwd_path("null");
    assert_string_equal(r.model, n);
    free(n);
    for (int i = 0; i < QC_RECIPE_MAX_EVALS - 3; i++) QC_CHECK_OK(qc_recipe_set(&r, "eval", "x.txt", "--eval"));
    QC_CHECK_FAILS(qc_recipe_set(&r, "eval", "x.txt", "--eval"), QC_ERR_ARG, "at most 16 evaluation texts");
    qc_recipe_free(&r);
}

/* ---- list forms ---- */
static void test_list_forms(void **state) {
    (void)state;
    qc_recipe r;
    char *a = cwd_path("a.txt"), *b = cwd_path("b.txt");
    must_load(&r, "calib: a.txt\neval: b.txt\n"); /* one bare string on its own */
    assert_int_equal(r.n_calib, 1);
    assert_string_equal(r.calib[0].path, a);
    assert_string_equal(r.calib[0].format, "auto");
    assert_int_equal(r.n_eval, 1);
    assert_string_equal(r.eval[0].text, b);
    qc_recipe_free(&r);
    must_load(&r, "calib: [a.txt, {path: b.txt, weight: 3, split: file}]\neval: [a.txt, {text: b.txt, seqlen: 16}]\n");
    assert_int_equal(r.n_calib, 2);
    assert_string_equal(r.calib[0].path, a);
    assert_string_equal(r.calib[1].path, b);
    QC_CHECK_NEAR(r.calib[1].weight, 3.0, 0);
    assert_string_equal(r.calib[1].split, "file");
    assert_int_equal(r.n_eval, 2);
    assert_int_equal(r.eval[1].seqlen, 16);
    qc_recipe_free(&r);
    must_load(&r, "calib: {path: a.txt, format: text}\neval: {text: b.txt}\n"); /* one mapping on its own */
    assert_int_equal(r.n_calib, 1);
    assert_string_equal(r.calib[0].format, "text");
    assert_int_equal(r.n_eval, 1);
    qc_recipe_free(&r);
    must_load(&r, "eval: []\n");
    assert_int_equal(r.n_eval, 0);
    qc_recipe_free(&r);
    must_load(&r, "eval:\n");
    assert_int_equal(r.n_eval, 0);
    qc_recipe_free(&r);
    /* a list in the file replaces the current one */
    qc_recipe_init(&r);
    QC_CHECK_OK(load_str(&r, "calib: [a.txt, b.txt]\neval: [a.txt, b.txt]\n"));
    QC_CHECK_OK(load_str(&r, "calib: [b.txt]\neval: [a.txt]\n"));
    assert_int_equal(r.n_calib, 1);
    assert_string_equal(r.calib[0].path, b);
    assert_int_equal(r.n_eval, 1);
    qc_recipe_free(&r);
    /* 64 sources are fine, 65 are not (error at the 65th) */
    char *big = malloc(65 * 16 + 16);
    size_t o = (size_t)sprintf(big, "calib:\n");
    for (int i = 0; i < 64; i++) o += (size_t)sprintf(big + o, "  - s%d.txt\n", i);
    must_load(&r, big);
    assert_int_equal(r.n_calib, 64);
    qc_recipe_free(&r);
    sprintf(big + o, "  - s64.txt\n");
    expect_fail(big, QC_ERR_FORMAT, "t.yaml:66:5: calib: at most 64 sources", NULL);
    free(big);
    free(a), free(b);
}

/* ---- relative paths ---- */
static void test_relative_paths(void **state) {
    (void)state;
    char *old = getcwd(NULL, 0);
    assert_non_null(old);
    assert_int_equal(chdir(qc_test_tmpdir()), 0);
    char *tmp = getcwd(NULL, 0); /* the physical path */
    assert_int_equal(mkdir("sub", 0755), 0);
    write_file("sub/r.yaml", "model: m\nout: ../o\ncalib: [d/c.jsonl, /abs//x.txt, hf://datasets/a/b/c.json, ./e//./f.txt]\n"
                             "eval: [t.txt]\n");
    char want[4096];
    qc_recipe r;
    for (int pass = 0; pass < 2; pass++) { /* relative to the current directory, then absolute */
        qc_recipe_init(&r);
        snprintf(want, sizeof want, "%s/sub/r.yaml", tmp);
        QC_CHECK_OK(qc_recipe_load(&r, pass ? want : "sub/r.yaml"));
        QC_CHECK_OK(qc_recipe_validate(&r));
        snprintf(want, sizeof want, "%s/sub/m", tmp);
        assert_string_equal(r.model, want);
        snprintf(want, sizeof want, "%s/sub/../o", tmp);
        assert_string_equal(r.out, want);
        snprintf(want, sizeof want, "%s/sub/d/c.jsonl", tmp);
        assert_string_equal(r.calib[0].path, want);
        assert_string_equal(r.calib[1].path, "/abs/x.txt");
        assert_string_equal(r.calib[2].path, "hf://datasets/a/b/c.json");
        snprintf(want, sizeof want, "%s/sub/e/f.txt", tmp);
        assert_string_equal(r.calib[3].path, want);
        snprintf(want, sizeof want, "%s/sub/t.txt", tmp);
        assert_string_equal(r.eval[0].text, want);
        snprintf(want, sizeof want, "sub/r.yaml:1:8");
        if (!pass) assert_string_equal(r.where[QC_RK_MODEL], want);
        /* a flag's path is relative to the current directory */
        QC_CHECK_OK(qc_recipe_set(&r, "model", "x", "--model"));
        snprintf(want, sizeof want, "%s/x", tmp);
        assert_string_equal(r.model, want);
        qc_recipe_free(&r);
    }
    /* a recipe in the current directory, and the hash follows the resolved paths */
    write_file("r.yaml", "model: sub/m\n");
    qc_recipe_init(&r);
    QC_CHECK_OK(qc_recipe_load(&r, "r.yaml"));
    snprintf(want, sizeof want, "%s/sub/m", tmp);
    assert_string_equal(r.model, want);
    qc_recipe_free(&r);
    assert_int_equal(chdir(old), 0);
    /* what paths are refused */
    expect_fail("model: ~/m\n", QC_ERR_FORMAT, "t.yaml:1:8: model: '~/m': '~' is not expanded", NULL);
    expect_fail("calib: https://x.org/c.json\n", QC_ERR_FORMAT, "t.yaml:1:8: calib[0]:",
                "only local paths and hf:// references");
    expect_fail("model: hf://\n", QC_ERR_FORMAT, "t.yaml:1:8: model: 'hf://': an hf:// reference needs a repository", NULL);
    expect_fail("out: hf://org/x\n", QC_ERR_FORMAT, "t.yaml:1:6: out: the output must be a local directory", NULL);
    expect_fail("model: ''\n", QC_ERR_FORMAT, "t.yaml:1:8: model: must not be empty", NULL);
    expect_fail("model: \"a\\0b\"\n", QC_ERR_FORMAT, "t.yaml:1:8: model: contains a NUL character", NULL);
    expect_fail("model: \"a\\tb\"\n", QC_ERR_FORMAT, "t.yaml:1:8: model: contains a control character", NULL);
    /* missing and oversized files */
    qc_recipe_init(&r);
    QC_CHECK_FAILS(qc_recipe_load(&r, "/nonexistent/dir/r.yaml"), QC_ERR_IO, "/nonexistent/dir/r.yaml");
    char big[4096];
    snprintf(big, sizeof big, "%s/big.yaml", qc_test_tmpdir());
    FILE *f = fopen(big, "wb");
    assert_non_null(f);
    for (size_t i = 0; i <= QC_RECIPE_MAX_BYTES / 8; i++) fputs("# xxxxx\n", f);
    fclose(f);
    QC_CHECK_FAILS(qc_recipe_load(&r, big), QC_ERR_FORMAT, "larger than the 1048576 accepted");
    char *huge = calloc(QC_RECIPE_MAX_BYTES + 2, 1);
    memset(huge, '#', QC_RECIPE_MAX_BYTES + 1);
    QC_CHECK_FAILS(qc_recipe_load_string(&r, huge, QC_RECIPE_MAX_BYTES + 1, "h.yaml"), QC_ERR_FORMAT,
                   "h.yaml: recipe is 1048577 bytes");
    free(huge);
    qc_recipe_free(&r);
    free(tmp);
    free(old);
}

/* ---- method-dependent defaults ---- */
static void test_method_defaults(void **state) {
    (void)state;
    qc_recipe r;
    must_load(&r, "method: awq\n");
    assert_false(r.sym);
    assert_string_equal(r.sampling, "awq");
    assert_int_equal(r.seqlen, 512);
    assert_int_equal(r.nsamples, 128);
    assert_string_equal(r.format, "awq");
    qc_recipe_free(&r);
    must_load(&r, "method: awq\nbits: 3\n"); /* asym at 3 bits: gptq_v2 */
    assert_string_equal(r.format, "gptq_v2");
    qc_recipe_free(&r);
    must_load(&r, "method: awq\ngroup_size: -1\n");
    assert_string_equal(r.format, "gptq_v2");
    qc_recipe_free(&r);
    must_load(&r, "method: awq\nformat: gptq_v2\n");
    assert_string_equal(r.format, "gptq_v2");
    qc_recipe_free(&r);
    must_load(&r, "method: awq\nseqlen: 2048\nnsamples: 64\nsampling: gptq\nsym: true\n"); /* explicit values stay */
    assert_true(r.sym);
    assert_string_equal(r.sampling, "gptq");
    assert_int_equal(r.seqlen, 2048);
    assert_int_equal(r.nsamples, 64);
    assert_string_equal(r.format, "gptq");
    qc_recipe_free(&r);
    must_load(&r, "sym: false\n");
    assert_string_equal(r.format, "gptq_v2");
    qc_recipe_free(&r);
    must_load(&r, "method: rtn\n");
    assert_true(r.sym);
    assert_string_equal(r.format, "gptq");
    assert_int_equal(r.seqlen, 2048);
    assert_string_equal(r.sampling, "gptq");
    qc_recipe_free(&r);
    /* validate is idempotent and follows a method changed afterwards */
    must_load(&r, "method: awq\neval: [x.txt]\n");
    char *c1 = qc_recipe_canonical(&r);
    assert_non_null(strstr(c1, "\"seqlen\":512,\"text\"")); /* eval seqlen 0 is the recipe's seqlen */
    assert_int_equal(r.eval[0].seqlen, 0);
    QC_CHECK_OK(qc_recipe_validate(&r));
    char *c2 = qc_recipe_canonical(&r);
    assert_string_equal(c1, c2);
    QC_CHECK_OK(qc_recipe_set(&r, "method", "gptq", "--method"));
    QC_CHECK_OK(qc_recipe_validate(&r));
    assert_true(r.sym);
    assert_int_equal(r.seqlen, 2048);
    assert_string_equal(r.format, "gptq");
    assert_string_equal(r.sampling, "gptq");
    free(c1), free(c2);
    qc_recipe_free(&r);
}

/* ---- canonical form and hash ---- */
static void test_hash_stability(void **state) {
    (void)state;
    const char *a = "method: gptq\nbits: 3\ngroup_size: 64\ncalib:\n  - path: hf://datasets/x/y/z.jsonl\n"
                    "    weight: 2\n    field: body\ndamp: 0.01\nseed: 7\n";
    const char *same[] = {
        /* reordered, comments, quoting, flow style, other spellings of the same numbers */
        "# a comment\nseed: 7   # trailing\ndamp: 1e-2\ncalib: [{field: 'body', weight: 2.0, path: \"hf://datasets/x/y/z.jsonl\"}]\n"
        "group_size: +64\nbits: 3\nmethod: 'gptq'\n",
        "{bits: 3, group_size: 64, seed: 7, calib: {path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}}\n",
        /* explicit defaults are the same as implicit ones */
        "bits: 3\ngroup_size: 64\nseed: 7\nsym: true\nformat: gptq\nnsamples: 128\nseqlen: 2048\nsampling: gptq\n"
        "calib:\n  - {path: hf://datasets/x/y/z.jsonl, weight: 2, field: body, format: auto, split: line}\n",
        /* out, device and eval are not hashed */
        "bits: 3\ngroup_size: 64\nseed: 7\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n"
        "out: /elsewhere\ndevice: cuda:3\neval: [w.txt]\n",
    };
    const char *different[] = {
        "bits: 4\ngroup_size: 64\nseed: 7\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n",
        "bits: 3\ngroup_size: 64\nseed: 8\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n",
        "bits: 3\ngroup_size: 64\nseed: 7\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2.5, field: body}]\n",
        "bits: 3\ngroup_size: 64\nseed: 7\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: text}]\n",
        "bits: 3\ngroup_size: 64\nseed: 7\ndamp: 0.011\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n",
        "bits: 3\ngroup_size: 64\nseed: 7\nact_order: true\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n",
        "bits: 3\ngroup_size: 64\nseed: 7\nmodel: hf://o/m\ncalib: [{path: hf://datasets/x/y/z.jsonl, weight: 2, field: body}]\n",
    };
    char ha[65], h[65];
    hash_of(a, ha);
    char *ca = canon_of(a);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        hash_of(same[i], h);
        if (strcmp(h, ha)) fail_msg("hash of variant %zu differs:\n%s", i, same[i]);
        char *c = canon_of(same[i]);
        if (i < 3) assert_string_equal(c, ca);
        else assert_string_not_equal(c, ca); /* the canonical text shows out/device/eval */
        free(c);
    }
    for (size_t i = 0; i < sizeof different / sizeof different[0]; i++) {
        hash_of(different[i], h);
        if (!strcmp(h, ha)) fail_msg("hash of change %zu did not change:\n%s", i, different[i]);
    }
    /* seeds that one double cannot tell apart still hash apart */
    hash_of("seed: 9007199254740993\n", ha);
    hash_of("seed: 9007199254740992\n", h);
    assert_string_not_equal(ha, h);
    free(ca);
}

/* ---- errors, each with its position ---- */
static void test_errors(void **state) {
    (void)state;
    const qc_status F = QC_ERR_FORMAT;
    /* unknown keys, with the allowed list and a suggestion */
    expect_fail("bits: 4\nbitz: 3\n", F, "t.yaml:2:1: unknown key 'bitz' (did you mean 'bits'?); allowed: model, out, "
                "method, bits, group_size, sym, act_order, static_groups, true_sequential, damp, calib, sampling, "
                "nsamples, seqlen, seed, format, device, eval", NULL);
    expect_fail("group-size: 64\n", F, "t.yaml:1:1: unknown key 'group-size' (did you mean 'group_size'?)", NULL);
    expect_fail("quantum: 1\n", F, "t.yaml:1:1: unknown key 'quantum'; allowed: model,", NULL);
    expect_fail("calib:\n  - path: a\n    wieght: 2\n", F,
                "t.yaml:3:5: unknown calibration source key 'wieght' (did you mean 'weight'?); allowed: path, format, "
                "field, split, weight", NULL);
    expect_fail("eval: [{text: a, seqlne: 5}]\n", F, "t.yaml:1:18: unknown evaluation key 'seqlne'", "allowed: text, seqlen");
    /* wrong types */
    expect_fail("bits: [4]\n", F, "t.yaml:1:7: bits: expected an integer, got a list", NULL);
    expect_fail("bits: \"4\"\n", F, "t.yaml:1:7: bits: expected an integer, got the quoted string '4'", NULL);
    expect_fail("bits: 4.0\n", F, "t.yaml:1:7: bits: expected an integer, got '4.0'", NULL);
    expect_fail("bits:\n", F, "t.yaml:1:6: bits: expected an integer, got nothing (null)", NULL);
    expect_fail("seqlen: 99999999999999999999\n", F, "t.yaml:1:9: seqlen: expected an integer", NULL);
    expect_fail("sym: yes\n", F, "t.yaml:1:6: sym: expected true or false, got 'yes'", NULL);
    expect_fail("sym: 'true'\n", F, "t.yaml:1:6: sym: expected true or false, got the quoted string 'true'", NULL);
    expect_fail("damp: abc\n", F, "t.yaml:1:7: damp: expected a number, got 'abc'", NULL);
    expect_fail("damp: .nan\n", F, "t.yaml:1:7: damp: expected a finite number", NULL);
    expect_fail("method: {a: 1}\n", F, "t.yaml:1:9: method: expected one of: gptq, awq, rtn, awq+gptq, got a mapping", NULL);
    expect_fail("model: {a: 1}\n", F, "t.yaml:1:8: model: expected a path or hf:// reference, got a mapping", NULL);
    expect_fail("calib: [[a]]\n", F, "t.yaml:1:9: calib[0]: expected a path or a mapping {path, format, field, split, "
                "weight}, got a list", NULL);
    expect_fail("calib: [{path: [a]}]\n", F, "t.yaml:1:16: calib[0].path: expected a path, got a list", NULL);
    expect_fail("calib: [~]\n", F, "t.yaml:1:9: calib[0]: expected a path or a mapping", NULL);
    expect_fail("eval: [[a]]\n", F, "t.yaml:1:8: eval[0]: expected a path or a mapping {text, seqlen}, got a list", NULL);
    expect_fail("calib:\n  - format: text\n", F, "t.yaml:2:5: calib[0]: 'path' is required", NULL);
    expect_fail("eval: [{seqlen: 5}]\n", F, "t.yaml:1:8: eval[0]: 'text' is required", NULL);
    expect_fail("calib: []\n", F, "t.yaml:1:8: calib: needs at least one source", NULL);
    expect_fail("calib:\n", F, "t.yaml:1:7: calib: needs at least one source", NULL);
    expect_fail("calib: [{path: a, field: ''}]\n", F, "t.yaml:1:26: calib[0].field: must not be empty", NULL);
    /* out of range */
    expect_fail("bits: 5\n", F, "t.yaml:1:7: bits: 5 is not one of 2, 3, 4, 8", NULL);
    expect_fail("group_size: 12\n", F, "t.yaml:1:13: group_size: 12 is not -1 (one group per row) or a positive "
                "multiple of 8", NULL);
    expect_fail("group_size: 0\n", F, "t.yaml:1:13: group_size: 0 is not -1", NULL);
    expect_fail("group_size: 2097152\n", F, "t.yaml:1:13: group_size: 2097152 is not", NULL);
    expect_fail("damp: 1\n", F, "t.yaml:1:7: damp: '1' is not in (0, 1)", NULL);
    expect_fail("damp: 0\n", F, "t.yaml:1:7: damp: '0' is not in (0, 1)", NULL);
    expect_fail("damp: -0.1\n", F, "t.yaml:1:7: damp: '-0.1' is not in (0, 1)", NULL);
    expect_fail("damp: 1e999\n", F, "t.yaml:1:7: damp: '1e999' is too large", NULL);
    expect_fail("nsamples: 0\n", F, "t.yaml:1:11: nsamples: 0 is outside [1, 1048576]", NULL);
    expect_fail("seqlen: 1\n", F, "t.yaml:1:9: seqlen: 1 is outside [2, 1048576]", NULL);
    expect_fail("seed: -1\n", F, "t.yaml:1:7: seed: expected a non-negative integer below 2^64", "got '-1'");
    expect_fail("seed: 18446744073709551616\n", F, "t.yaml:1:7: seed: expected a non-negative integer below 2^64", NULL);
    expect_fail("calib:\n  - path: a\n    weight: 0\n", F, "t.yaml:3:13: calib[0].weight: '0' is not a finite number > 0",
                NULL);
    expect_fail("calib: [{path: a, weight: .inf}]\n", F, "t.yaml:1:27: calib[0].weight: expected a finite number", NULL);
    expect_fail("calib: [{path: a, weight: -2}]\n", F, "calib[0].weight: '-2' is not a finite number > 0", NULL);
    expect_fail("eval:\n  - text: a\n    seqlen: 1\n", F, "t.yaml:3:13: eval[0].seqlen: 1 is not 0", NULL);
    /* bad enumerated values list what is allowed */
    expect_fail("method: gptx\n", F, "t.yaml:1:9: method: 'gptx' is not one of: gptq, awq, rtn", NULL);
    expect_fail("method: GPTQ\n", F, "t.yaml:1:9: method: 'GPTQ' is not one of: gptq, awq, rtn", NULL);
    expect_fail("format: gptq_v3\n", F, "t.yaml:1:9: format: 'gptq_v3' is not one of: gptq, gptq_v2, awq", NULL);
    expect_fail("sampling: random\n", F, "t.yaml:1:11: sampling: 'random' is not one of: gptq, awq", NULL);
    expect_fail("method: ~\n", F, "t.yaml:1:9: method: expected one of: gptq, awq, rtn, awq+gptq; got nothing (null)", NULL);
    expect_fail("device: gpu\n", F, "t.yaml:1:9: device: 'gpu' is not one of: cpu, cuda, cuda:N (N = 0 .. 255)", NULL);
    expect_fail("device: cuda:256\n", F, "t.yaml:1:9: device: 'cuda:256' is not one of", NULL);
    expect_fail("device: 'cuda:'\n", F, "t.yaml:1:9: device: the quoted string 'cuda:' is not one of", NULL);
    expect_fail("calib: [{path: a, format: csv}]\n", F,
                "t.yaml:1:27: calib[0].format: 'csv' is not one of: auto, text, jsonl, json, parquet", NULL);
    expect_fail("calib: [{path: a, split: word}]\n", F,
                "t.yaml:1:26: calib[0].split: 'word' is not one of: line, paragraph, file", NULL);
    /* duplicate keys */
    expect_fail("bits: 4\nseed: 1\nbits: 3\n", F, "t.yaml:3:1: duplicate key 'bits' (first at 1:1)", NULL);
    expect_fail("calib:\n  - path: a\n    path: b\n", F, "t.yaml:3:5: duplicate key 'path' (first at 2:5)", NULL);
    /* malformed YAML, with libyaml's position */
    expect_fail("bits: [4\n", F, "t.yaml:2:1: malformed YAML: did not find expected ',' or ']'",
                "while parsing a flow sequence at 1:7");
    expect_fail("bits: 4\n  seed: 1\n", F, "t.yaml:2:7: malformed YAML: mapping values are not allowed in this context",
                NULL);
    expect_fail("model: \"abc\n", F, "t.yaml:2:1: malformed YAML: found unexpected end of stream", NULL);
    expect_fail("bits: 4\nmodel: \xff\n", F, "t.yaml:2:8: malformed YAML: invalid leading UTF-8 octet", NULL);
    expect_fail("bits:\t4\n\tseed: 1\n", F, "t.yaml:2:1: malformed YAML:", NULL);
    /* anchors, aliases and tags are refused; so are deep nesting and other shapes */
    expect_fail("bits: &b 4\nnsamples: *b\n", F, "t.yaml:1:7: anchors (&b) are not supported", NULL);
    expect_fail("nsamples: *b\n", F, "t.yaml:1:11: aliases (*b) are not supported", NULL);
    expect_fail("bits: !!int 4\n", F, "t.yaml:1:7: tags (tag:yaml.org,2002:int) are not supported", NULL);
    expect_fail("calib: !custom [a]\n", F, "t.yaml:1:8: tags (!custom) are not supported", NULL);
    expect_fail("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", F, "t.yaml:1:4: anchors (&a)", NULL);
    expect_fail("eval: [[[[[[[[[[1]]]]]]]]]]\n", F, "nested too deeply (more than 8 levels)", NULL);
    expect_fail("- a\n- b\n", F, "t.yaml:1:1: a recipe is a mapping of keys (model, out,", "got a list");
    expect_fail("just text\n", F, "t.yaml:1:1: a recipe is a mapping of keys", "got a scalar");
    expect_fail("bits: 4\n---\nbits: 3\n", F, "t.yaml:2:1: a recipe is one YAML document", NULL);
    expect_fail("? [a]\n: 1\n", F, "t.yaml:1:3: a key must be a name, not a list", NULL);
}

/* ---- cross-field conflicts, naming both fields and where each was set ---- */
static void test_conflicts(void **state) {
    (void)state;
    const qc_status F = QC_ERR_FORMAT;
    expect_fail("format: gptq\nsym: false\n", F,
                "t.yaml:1:9: format 'gptq' (GPTQ v1) stores symmetric results only, but sym is false (t.yaml:2:6); "
                "use format gptq_v2",
                NULL);
    expect_fail("method: awq\nformat: gptq\n", F, "t.yaml:2:9: format 'gptq' (GPTQ v1) stores symmetric results only",
                "but sym is false (default for method awq)");
    expect_fail("format: awq\nbits: 3\n", F, "t.yaml:1:9: format 'awq' stores 4-bit results only, but bits is 3 "
                "(t.yaml:2:7); use format gptq_v2", NULL);
    expect_fail("format: awq\ngroup_size: -1\n", F, "format 'awq' needs groups", "but group_size is -1 (t.yaml:2:13)");
    expect_fail("format: awq\nact_order: true\n", F, "format 'awq' has no g_idx",
                "but act_order is true without static_groups (t.yaml:2:12)");
    expect_fail("method: rtn\nact_order: true\n", F,
                "t.yaml:2:12: act_order: true applies to methods gptq and awq+gptq only, but method is 'rtn' (t.yaml:1:9)", NULL);
    expect_fail("method: awq\nstatic_groups: true\n", F,
                "t.yaml:2:16: static_groups: true applies to methods gptq and awq+gptq only, but method is 'awq' (t.yaml:1:9)", NULL);
    qc_recipe r;
    must_load(&r, "format: awq\nact_order: true\nstatic_groups: true\nsym: false\n"); /* static groups: contiguous */
    qc_recipe_free(&r);
    must_load(&r, "format: awq\n"); /* sym results can sit in AWQ's zero points */
    qc_recipe_free(&r);
    must_load(&r, "method: awq\nbits: 3\nformat: gptq_v2\n"); /* AWQ at 3 bits goes to gptq_v2 */
    qc_recipe_free(&r);
    /* a flag in the conflict is named as such */
    qc_recipe_init(&r);
    QC_CHECK_OK(load_str(&r, "format: awq\n"));
    QC_CHECK_OK(qc_recipe_set(&r, "bits", "3", "--bits"));
    QC_CHECK_FAILS(qc_recipe_validate(&r), QC_ERR_FORMAT, "t.yaml:1:9: format 'awq' stores 4-bit results only, but "
                                                          "bits is 3 (--bits)");
    qc_recipe_free(&r);
    qc_recipe_init(&r);
    QC_CHECK_OK(qc_recipe_set(&r, "format", "gptq", "--format"));
    QC_CHECK_OK(qc_recipe_set(&r, "sym", "false", "--asym"));
    QC_CHECK_FAILS(qc_recipe_validate(&r), QC_ERR_FORMAT, "--format: format 'gptq' (GPTQ v1) stores symmetric results "
                                                          "only, but sym is false (--asym)");
    qc_recipe_free(&r);
    /* values assigned directly are checked too */
    qc_recipe_init(&r);
    r.bits = 7;
    QC_CHECK_FAILS(qc_recipe_validate(&r), QC_ERR_FORMAT, "bits: 7 is not one of 2, 3, 4, 8 (default)");
    qc_recipe_free(&r);
}

/* ---- the example ---- */
static char *replace_line(const char *text, const char *from, const char *to) {
    const char *p = strstr(text, from);
    assert_non_null(p);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*s%s%s", (int)(p - text), text, to, p + strlen(from));
    return out;
}

static void test_example(void **state) {
    (void)state;
    const char *ex = qc_recipe_example();
    char *c = canon_of(ex);
    assert_string_equal(c, k_defaults_json);
    free(c);
    /* every key is in it, with its meaning */
    for (int k = 0; k < QC_RK_COUNT; k++) {
        static const char *const names[] = {"model", "out", "method", "bits", "group_size", "sym", "act_order",
                                            "static_groups", "true_sequential", "damp", "calib", "sampling",
                                            "nsamples", "seqlen", "seed", "format", "device", "eval",
                                            "awq_scale", "awq_clip", "awq_search_samples",
                                            "mse", "moe_min_tokens", "moe_low_coverage"};
        char key[40];
        snprintf(key, sizeof key, "\n%s:", names[k]);
        char hashed[44];
        snprintf(hashed, sizeof hashed, "\n# %s:", names[k]);
        if (!strstr(ex, key) && !strstr(ex, hashed)) fail_msg("the example lacks '%s'", names[k]);
    }
    for (int k = 0; k < 5; k++) {
        static const char *const src[] = {"path:", "format:", "field:", "split:", "weight:"};
        assert_non_null(strstr(ex, src[k]));
    }
    assert_non_null(strstr(ex, "relative to the\n# directory of this file"));
    /* the commented, method-dependent lines hold the right defaults: uncommented they change nothing */
    const char *commented[][2] = {{"# sym: true  ", "sym: true    "}, {"# sampling: gptq  ", "sampling: gptq    "},
                                  {"# seqlen: 2048  ", "seqlen: 2048    "}, {"# format: gptq  ", "format: gptq    "}};
    for (size_t i = 0; i < 4; i++) {
        char *e = replace_line(ex, commented[i][0], commented[i][1]);
        c = canon_of(e);
        if (strcmp(c, k_defaults_json)) fail_msg("uncommenting '%s' changed the recipe:\n%s", commented[i][1], c);
        qc_recipe r;
        must_load(&r, e);
        assert_true(r.set_mask & QC_RK_BIT(i == 0 ? QC_RK_SYM : i == 1 ? QC_RK_SAMPLING : i == 2 ? QC_RK_SEQLEN : QC_RK_FORMAT));
        qc_recipe_free(&r);
        free(c);
        free(e);
    }
    /* switching the example to awq gives awq's defaults (the method-dependent keys are commented out) */
    char *e = replace_line(ex, "method: gptq ", "method: awq  ");
    char *c1 = canon_of(e), *c2 = canon_of("method: awq\n");
    assert_string_equal(c1, c2);
    free(c1), free(c2), free(e);
    /* and from a file */
    char path[4096];
    snprintf(path, sizeof path, "%s/example.yaml", qc_test_tmpdir());
    write_file(path, ex);
    qc_recipe r;
    qc_recipe_init(&r);
    QC_CHECK_OK(qc_recipe_load(&r, path));
    QC_CHECK_OK(qc_recipe_validate(&r));
    c = qc_recipe_canonical(&r);
    assert_string_equal(c, k_defaults_json);
    free(c);
    qc_recipe_free(&r);
}

/* ---- the resolved YAML loads back to the same recipe ---- */
static void test_yaml_roundtrip(void **state) {
    (void)state;
    const char *srcs[] = {k_every, "", "method: awq\neval: [a.txt, {text: b.txt, seqlen: 99}]\ndamp: 0.123456789012345678\n",
                          "calib: [{path: a, weight: 1e-300}, {path: b, weight: 3.0e+200}]\nseed: 123\n"};
    for (size_t i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        qc_recipe r, back;
        must_load(&r, srcs[i]);
        if (i == 1) QC_CHECK_OK(qc_recipe_set(&r, "model", "we\"ird\\ #: \xc3\xbc 'q' - [x]", "--model"));
        QC_CHECK_OK(qc_recipe_validate(&r));
        char *y = qc_recipe_to_yaml(&r), *c = qc_recipe_canonical(&r);
        assert_non_null(y);
        qc_recipe_init(&back);
        qc_status st = load_str(&back, y);
        if (st != QC_OK) fail_msg("resolved YAML does not load (%s):\n%s", qc_last_error(), y);
        QC_CHECK_OK(qc_recipe_validate(&back));
        char *c2 = qc_recipe_canonical(&back);
        if (strcmp(c, c2)) fail_msg("round trip differs:\n%s\n%s\nYAML:\n%s", c, c2, y);
        free(y), free(c), free(c2);
        qc_recipe_free(&r);
        qc_recipe_free(&back);
    }
}

/* ---- no input crashes it: every prefix and many one-byte changes of a full recipe ---- */
static void test_robustness(void **state) {
    (void)state;
    size_t n = strlen(k_every);
    char *buf = malloc(n + 1);
    static const char repl[] = {'[', ']', '{', ':', '\n', '"', '\'', '&', '*', '!', '\xff', '-', ' ', '\t', '#', '\0'};
    size_t loads = 0, ok = 0;
    for (size_t cut = 0; cut <= n; cut++)
        for (size_t k = 0; k <= sizeof repl; k++) {
            memcpy(buf, k_every, n + 1);
            size_t len = n;
            if (k == sizeof repl) len = cut; /* a prefix */
            else if (cut < n) buf[cut] = repl[k];
            else continue;
            qc_recipe r;
            qc_recipe_init(&r);
            qc_error_clear();
            qc_status st = qc_recipe_load_string(&r, buf, len, "t.yaml");
            if (st == QC_OK) {
                ok++;
                st = qc_recipe_validate(&r);
                if (st == QC_OK) {
                    char *c = qc_recipe_canonical(&r);
                    assert_non_null(c);
                    free(c);
                }
            } else if (st != QC_ERR_FORMAT || strncmp(qc_last_error(), "t.yaml:", 7) != 0) {
                fail_msg("change %zu/%zu -> %s: '%s'", cut, k, qc_status_str(st), qc_last_error());
            }
            qc_recipe_free(&r);
            loads++;
        }
    assert_true(loads > 5000);
    assert_true(ok > 0 && ok < loads);
    free(buf);
}

/* mse (hashed only when true, so older recipes keep their hashes) and method awq+gptq (AWQ's defaults,
 * GPTQ's solver options) */
static void test_mse_and_awq_gptq(void **state) {
    (void)state;
    char h0[65], h1[65], h2[65];
    hash_of("bits: 3\n", h0);
    hash_of("bits: 3\nmse: false\n", h1);
    hash_of("bits: 3\nmse: true\n", h2);
    assert_string_equal(h0, h1);
    assert_string_not_equal(h0, h2);
    char *c = canon_of("bits: 3\nmse: true\n");
    assert_non_null(strstr(c, "\"mse\":true"));
    free(c);
    c = canon_of("bits: 3\n");
    assert_null(strstr(c, "mse"));
    free(c);
    qc_recipe r;
    must_load(&r, "method: rtn\nmse: true\n");
    assert_true(r.mse);
    char *y = qc_recipe_to_yaml(&r);
    assert_non_null(strstr(y, "\nmse: true\n"));
    free(y);
    QC_CHECK_OK(qc_recipe_set(&r, "mse", "false", "--no-mse"));
    assert_false(r.mse);
    qc_recipe_free(&r);
    must_load(&r, "method: awq+gptq\n");
    assert_false(r.sym);
    assert_string_equal(r.sampling, "awq");
    assert_int_equal(r.seqlen, 512);
    assert_string_equal(r.format, "awq");
    qc_recipe_free(&r);
    must_load(&r, "method: awq+gptq\nbits: 3\nact_order: true\nmse: true\n");
    assert_string_equal(r.format, "gptq_v2");
    assert_true(r.act_order && r.mse);
    qc_recipe_free(&r);
    hash_of("method: awq\n", h0);
    hash_of("method: awq+gptq\n", h1);
    assert_string_not_equal(h0, h1);
    expect_fail("method: awq\nmse: true\n", QC_ERR_FORMAT, "t.yaml:2:6: mse: true applies to the GPTQ quantizer",
                "remove mse or use method awq+gptq");
    expect_fail("method: awq+gptq\nformat: awq\nact_order: true\n", QC_ERR_FORMAT, "format 'awq' has no g_idx", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_flags_override),  cmocka_unit_test(test_list_forms),
        cmocka_unit_test(test_relative_paths),  cmocka_unit_test(test_method_defaults),
        cmocka_unit_test(test_hash_stability),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_conflicts),       cmocka_unit_test(test_example),
        cmocka_unit_test(test_yaml_roundtrip),  cmocka_unit_test(test_robustness),
        cmocka_unit_test(test_mse_and_awq_gptq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
