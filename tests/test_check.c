/* qcal check's library (formats/ckpt_check.h) on checkpoints written here, no data files needed: the API's
 * contracts, a directory that is not a checkpoint, an FP16 model with a NaN, and a small MoE GPTQ checkpoint
 * (two experts quantized, the router kept in F16 and declared) that must pass, and fail once the router's
 * declaration is gone. The rule-by-rule tests on real quantize outputs are in test_check.sh. */
#include "testutil.h"

#include "ckpt_check.h"
#include "gptq_format.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char *join(const char *dir, const char *name) {
    char *p = qc_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = join(dir, name);
    QC_CHECK_OK(qc_write_file_atomic(p, text, strlen(text)));
    free(p);
}

static char *fresh_dir(const char *name) {
    char *d = join(qc_test_tmpdir(), name);
    assert_int_equal(mkdir(d, 0755), 0);
    return d;
}

/* One named tensor to write: dtype, shape, bytes. */
typedef struct {
    char     name[96];
    qc_dtype dt;
    int      ndim;
    int64_t  shape[2];
    void    *data;
    size_t   n;
} tens;

static void write_st(const char *dir, tens *t, int n) {
    char *p = join(dir, "model.safetensors");
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(p, &w));
    for (int i = 0; i < n; i++) QC_CHECK_OK(qc_st_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape));
    QC_CHECK_OK(qc_st_writer_begin(w));
    for (int i = 0; i < n; i++) QC_CHECK_OK(qc_st_writer_write(w, t[i].data, t[i].n));
    QC_CHECK_OK(qc_st_writer_finish(w));
    for (int i = 0; i < n; i++) free(t[i].data);
    free(p);
}

static tens f16(const char *name, int64_t r, int64_t c, float v) {
    tens t = {.dt = QC_DTYPE_F16, .ndim = c ? 2 : 1, .shape = {r, c}};
    snprintf(t.name, sizeof t.name, "%s", name);
    t.n = (size_t)(r * (c ? c : 1)) * 2;
    uint16_t *d = malloc(t.n), h = qc_f32_to_fp16(v);
    assert_non_null(d);
    for (size_t i = 0; i < t.n / 2; i++) d[i] = (uint16_t)(h ^ (i & 1));   /* not all equal */
    t.data = d;
    return t;
}

static const qc_check_finding *find(const qc_check_report *r, const char *rule, qc_check_level lvl, const char *subj) {
    for (size_t i = 0; i < r->n_findings; i++)
        if (strcmp(r->findings[i].rule, rule) == 0 && r->findings[i].level == lvl &&
            (!subj || strstr(r->findings[i].subject, subj)))
            return &r->findings[i];
    return NULL;
}

#define EXPECT_FINDING(rep, rule_, lvl_, subj_) do { \
        if (!find((rep), (rule_), (lvl_), (subj_))) { \
            for (size_t i__ = 0; i__ < (rep)->n_findings; i__++) \
                print_message("  %s %s %s: %s\n", (rep)->findings[i__].rule, \
                              qc_check_level_name((rep)->findings[i__].level), (rep)->findings[i__].subject, \
                              (rep)->findings[i__].message); \
            fail_msg("no %s %s about %s", (rule_), qc_check_level_name(lvl_), (subj_) ? (subj_) : "anything"); \
        } \
    } while (0)

/* errors, then warnings, then notes; the counts match the list */
static void check_order(const qc_check_report *r) {
    int n[3] = {0};
    for (size_t i = 0; i < r->n_findings; i++) {
        n[r->findings[i].level]++;
        if (i) assert_true(r->findings[i - 1].level >= r->findings[i].level);
    }
    assert_int_equal(n[QC_CHECK_ERROR], r->n_errors);
    assert_int_equal(n[QC_CHECK_WARNING], r->n_warnings);
    assert_int_equal(n[QC_CHECK_NOTE], r->n_notes);
}

static void test_api(void **state) {
    (void)state;
    qc_check_report r;
    memset(&r, 0x55, sizeof r);
    QC_CHECK_FAILS(qc_check_dir(NULL, &r), QC_ERR_ARG, "not a directory");
    assert_int_equal(r.n_findings, 0);
    char *nodir = join(qc_test_tmpdir(), "does-not-exist");
    QC_CHECK_FAILS(qc_check_dir(nodir, &r), QC_ERR_ARG, "not a directory");
    free(nodir);
    QC_CHECK_FAILS(qc_check_dir(qc_test_tmpdir(), NULL), QC_ERR_ARG, "report");
    qc_check_report_free(&r);   /* zeroed by the failed call: harmless */
    qc_check_report_free(NULL);
    assert_string_equal(qc_check_level_name(QC_CHECK_ERROR), "error");
    assert_string_equal(qc_check_level_name(QC_CHECK_WARNING), "warning");
    assert_string_equal(qc_check_level_name(QC_CHECK_NOTE), "note");
}

static void test_empty_dir(void **state) {
    (void)state;
    char *d = fresh_dir("empty");
    qc_check_report r;
    QC_CHECK_OK(qc_check_dir(d, &r));
    EXPECT_FINDING(&r, "config", QC_CHECK_ERROR, "config.json");
    EXPECT_FINDING(&r, "shards", QC_CHECK_ERROR, "weights");
    EXPECT_FINDING(&r, "tokenizer", QC_CHECK_WARNING, NULL);
    assert_string_equal(r.format, "");
    assert_int_equal(r.tp[0].tp, 0);   /* no weights, no TP table */
    check_order(&r);
    qc_check_report_free(&r);
    free(d);
}

/* An FP16 model: "not a quantized checkpoint", and the tensors are still scanned. */
static void test_fp16_model(void **state) {
    (void)state;
    char *d = fresh_dir("fp16");
    write_text(d, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}");
    write_text(d, "tokenizer.json", "{}");
    tens t[2] = {f16("model.embed_tokens.weight", 8, 64, 0.5f), f16("model.norm.weight", 64, 0, 1.0f)};
    ((uint16_t *)t[0].data)[3 * 64 + 9] = 0x7e00;   /* NaN at [3][9] */
    write_st(d, t, 2);
    qc_check_report r;
    QC_CHECK_OK(qc_check_dir(d, &r));
    const qc_check_finding *f = find(&r, "config", QC_CHECK_ERROR, "quantization_config");
    assert_non_null(f);
    assert_non_null(strstr(f->message, "not a quantized checkpoint"));
    EXPECT_FINDING(&r, "finite", QC_CHECK_ERROR, "model.embed_tokens.weight");
    assert_non_null(strstr(find(&r, "finite", QC_CHECK_ERROR, NULL)->message, "[3][9] is NaN"));
    assert_int_equal(r.n_errors, 2);
    assert_int_equal(r.bytes_scanned, (8 * 64 + 64) * 2);
    check_order(&r);

    /* the JSON carries every finding and the counts */
    char *js = qc_check_json(&r, d);
    assert_non_null(js);
    cJSON *o = cJSON_Parse(js);
    assert_non_null(o);
    assert_int_equal(cJSON_GetObjectItem(o, "errors")->valueint, 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "findings")), (int)r.n_findings);
    assert_string_equal(cJSON_GetObjectItem(o, "dir")->valuestring, d);
    cJSON_Delete(o);
    free(js);
    qc_check_report_free(&r);
    free(d);
}

/* A one-block MoE: experts 0 and 1 (gate/up/down, 64 x 64) quantized w4 g32 sym v1, the router mlp.gate
 * [2, 64] kept in F16 and declared by a `dynamic` "-:" rule unless `declare_router` is false. */
static void write_moe(const char *d, bool declare_router) {
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 64, "
             "\"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"tie_word_embeddings\": true, "
             "\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 32, \"desc_act\": false, "
             "\"sym\": true, \"checkpoint_format\": \"gptq\", \"lm_head\": false, "
             "\"modules_in_block_to_quantize\": [[\"mlp.experts.0.down_proj\", \"mlp.experts.0.gate_proj\", "
             "\"mlp.experts.0.up_proj\", \"mlp.experts.1.down_proj\", \"mlp.experts.1.gate_proj\", "
             "\"mlp.experts.1.up_proj\"]], \"dynamic\": {%s}}}",
             declare_router ? "\"-:^model\\\\.layers\\\\.0\\\\.mlp\\\\.gate$\": {}" : "");
    write_text(d, "config.json", cfg);
    /* quantize_config.json mirrors the quantization_config */
    cJSON *c = cJSON_Parse(cfg);
    assert_non_null(c);
    char *q = cJSON_Print(cJSON_GetObjectItem(c, "quantization_config"));
    write_text(d, "quantize_config.json", q);
    free(q);
    cJSON_Delete(c);
    write_text(d, "tokenizer.json", "{}");

    tens t[32];
    int n = 0;
    t[n++] = f16("model.embed_tokens.weight", 16, 64, 0.25f);
    t[n++] = f16("model.layers.0.input_layernorm.weight", 64, 0, 1.0f);
    t[n++] = f16("model.layers.0.mlp.gate.weight", 2, 64, 0.125f);
    static const char *const lin[] = {"down_proj", "gate_proj", "up_proj"};
    for (int e = 0; e < 2; e++)
        for (int l = 0; l < 3; l++) {
            qc_qlinear ql;
            QC_CHECK_OK(qc_qlinear_alloc(&ql, 64, 64, 4, 32, true, false));
            for (size_t i = 0; i < 64 * 64; i++) ql.codes[i] = (uint8_t)((i * 7 + (size_t)e) % 16);
            for (size_t i = 0; i < 2 * 64; i++) ql.scales[i] = 0.01f;
            char P[80];
            snprintf(P, sizeof P, "model.layers.0.mlp.experts.%d.%s", e, lin[l]);
            static const char *const suf[] = {"g_idx", "qweight", "qzeros", "scales"};
            const qc_dtype dt[] = {QC_DTYPE_I32, QC_DTYPE_I32, QC_DTYPE_I32, QC_DTYPE_F16};
            const int64_t sh[][2] = {{64, 0}, {64 * 4 / 32, 64}, {2, 64 * 4 / 32}, {2, 64}};
            void *buf[4];
            for (int k = 0; k < 4; k++) {
                tens *x = &t[n + k];
                snprintf(x->name, sizeof x->name, "%s.%s", P, suf[k]);
                x->dt = dt[k];
                x->ndim = sh[k][1] ? 2 : 1;
                x->shape[0] = sh[k][0];
                x->shape[1] = sh[k][1];
                x->n = (size_t)(sh[k][0] * (sh[k][1] ? sh[k][1] : 1)) * (k == 3 ? 2 : 4);
                assert_non_null(buf[k] = x->data = malloc(x->n));
            }
            QC_CHECK_OK(qc_gptq_pack(&ql, false, buf[1], buf[2], buf[3]));
            memcpy(buf[0], ql.g_idx, 64 * 4);
            qc_qlinear_free(&ql);
            n += 4;
        }
    t[n++] = f16("model.norm.weight", 64, 0, 1.0f);
    /* the writer wants names in a stable order; sorted keeps the header readable */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(t[j].name, t[i].name) < 0) {
                tens x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    write_st(d, t, n);
}

static void test_moe(void **state) {
    (void)state;
    char *d = fresh_dir("moe");
    write_moe(d, true);
    qc_check_report r;
    QC_CHECK_OK(qc_check_dir(d, &r));
    for (size_t i = 0; i < r.n_findings; i++)
        if (r.findings[i].level == QC_CHECK_ERROR)
            fail_msg("unexpected error: %s %s: %s", r.findings[i].rule, r.findings[i].subject, r.findings[i].message);
    assert_string_equal(r.format, "gptq");
    assert_int_equal(r.n_quantized, 6);
    assert_int_equal(r.n_kept, 1);   /* the router */
    /* 4 heads cannot split over 8 ranks; down_proj's K/4 = 16 is below the group size */
    assert_int_equal(r.tp[1].n_fail, 0);
    assert_true(r.tp[2].n_fail > 0 && r.tp[3].n_fail > 0);
    EXPECT_FINDING(&r, "tp-split", QC_CHECK_WARNING, "tp=8");
    EXPECT_FINDING(&r, "marlin", QC_CHECK_WARNING, "tp=1");   /* K = 64 < 128 */
    check_order(&r);
    qc_check_report_free(&r);

    /* qcal quantize's hook prints the table (there are warnings) and the summary */
    char *log = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&log, &len);
    assert_non_null(f);
    int n_err = -1;
    QC_CHECK_OK(qc_check_after_write(d, f, &n_err));
    fclose(f);
    assert_int_equal(n_err, 0);
    assert_non_null(strstr(log, "rule           | level   | subject"));
    assert_non_null(strstr(log, "check: 0 error(s), "));
    free(log);
    free(d);

    /* without the router's "-:" rule GPTQModel would build it as a quantized module */
    d = fresh_dir("moe-undeclared");
    write_moe(d, false);
    QC_CHECK_OK(qc_check_dir(d, &r));
    EXPECT_FINDING(&r, "declared-f16", QC_CHECK_ERROR, "model.layers.0.mlp.gate");
    assert_int_equal(r.n_errors, 1);
    qc_check_report_free(&r);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api),
        cmocka_unit_test(test_empty_dir),
        cmocka_unit_test(test_fp16_model),
        cmocka_unit_test(test_moe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
