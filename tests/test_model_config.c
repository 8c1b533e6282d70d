/* config.json parsing: every supported architecture, defaults, rope variants and clear errors. */
#include <stdlib.h>
#include <string.h>

#include "model_config.h"
#include "testutil.h"

#define BASE "\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, " \
             "\"intermediate_size\": 96, \"vocab_size\": 256"

static qc_status parse(const char *json, qc_model_config *c) {
    return qc_model_config_parse(json, strlen(json), "config.json", c);
}

static void test_llama_defaults(void **state) {
    (void)state;
    qc_model_config c;
    QC_CHECK_OK(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE "}", &c));
    assert_int_equal(c.arch, QC_ARCH_LLAMA);
    assert_int_equal(c.n_kv_heads, 4);   /* defaults to num_attention_heads */
    assert_int_equal(c.head_dim, 16);    /* hidden / heads */
    assert_false(c.tie_word_embeddings); /* LlamaConfig default */
    assert_false(c.qkv_bias);
    assert_int_equal(c.rope_type, QC_ROPE_DEFAULT);
    QC_CHECK_NEAR(c.rope_theta, 10000.0, 0);
    QC_CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
    assert_int_equal(c.bos_token_id, -1);
}

static void test_architectures(void **state) {
    (void)state;
    qc_model_config c;
    QC_CHECK_OK(parse("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"num_key_value_heads\": 2}", &c));
    assert_int_equal(c.arch, QC_ARCH_QWEN2);
    assert_true(c.qkv_bias);
    assert_false(c.o_bias);
    QC_CHECK_OK(parse("{\"architectures\": [\"Qwen3ForCausalLM\"], " BASE "}", &c));
    assert_true(c.qk_norm);
    assert_int_equal(c.head_dim, 128); /* Qwen3Config default */
    QC_CHECK_OK(parse("{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": 4096}", &c));
    assert_int_equal(c.sliding_window, 4096);
    QC_CHECK_OK(parse("{\"model_type\": \"mistral\", " BASE ", \"sliding_window\": null}", &c));
    assert_int_equal(c.arch, QC_ARCH_MISTRAL);
    assert_int_equal(c.sliding_window, 0);
    QC_CHECK_OK(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"eos_token_id\": [128001, 128009]}", &c));
    assert_int_equal(c.eos_token_id, 128001);
}

static void test_rope(void **state) {
    (void)state;
    qc_model_config c;
    QC_CHECK_OK(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_theta\": 500000.0, "
                      "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                      "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}", &c));
    assert_int_equal(c.rope_type, QC_ROPE_LLAMA3);
    QC_CHECK_NEAR(c.rope_factor, 8.0, 0);
    assert_int_equal(c.rope_original_max_pos, 8192);
    QC_CHECK_NEAR(c.rope_theta, 500000.0, 0);
    QC_CHECK_OK(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                      "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", &c));
    assert_int_equal(c.rope_type, QC_ROPE_LINEAR);
    /* transformers v5 form */
    QC_CHECK_OK(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                      "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}}", &c));
    assert_int_equal(c.rope_type, QC_ROPE_DEFAULT);
    QC_CHECK_NEAR(c.rope_theta, 1e6, 0);
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                         "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}", &c),
                   QC_ERR_UNSUPPORTED, "\"yarn\" is not supported");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                         "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}", &c),
                   QC_ERR_FORMAT, "original_max_position_embeddings");
}

static void test_phi3(void **state) {
    (void)state;
    qc_model_config c;
    QC_CHECK_OK(parse("{\"architectures\": [\"Phi3ForCausalLM\"], " BASE ", \"sliding_window\": 2047, "
                      "\"rope_scaling\": null, \"pad_token_id\": 32000, \"original_max_position_embeddings\": 4096}", &c));
    assert_int_equal(c.arch, QC_ARCH_PHI3);
    assert_int_equal(c.sliding_window, 2047); /* every layer, as transformers' Phi3 */
    assert_false(c.qkv_bias);
    assert_false(c.qk_norm);
    assert_int_equal(c.head_dim, 16);
    QC_CHECK_FAILS(parse("{\"model_type\": \"phi3\", " BASE ", \"partial_rotary_factor\": 0.5}", &c),
                   QC_ERR_UNSUPPORTED, "partial_rotary_factor");
    QC_CHECK_FAILS(parse("{\"model_type\": \"phi3\", " BASE ", \"rope_parameters\": {\"rope_type\": \"default\", "
                         "\"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.75}}", &c),
                   QC_ERR_UNSUPPORTED, "partial_rotary_factor");
    QC_CHECK_FAILS(parse("{\"model_type\": \"phi3\", " BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
                         "\"short_factor\": [1.0], \"long_factor\": [1.0]}}", &c),
                   QC_ERR_UNSUPPORTED, "longrope");
}

static void test_errors(void **state) {
    (void)state;
    qc_model_config c;
    QC_CHECK_FAILS(parse("{\"architectures\": [\"GPT2LMHeadModel\"], " BASE "}", &c), QC_ERR_UNSUPPORTED,
                   "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"]}", &c), QC_ERR_FORMAT, "\"hidden_size\"");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"num_key_value_heads\": 3}", &c),
                   QC_ERR_FORMAT, "not a multiple of num_key_value_heads");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"hidden_act\": \"gelu\"}", &c),
                   QC_ERR_UNSUPPORTED, "hidden_act \"gelu\"");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": -4}", &c), QC_ERR_FORMAT,
                   "\"hidden_size\" must be an integer");
    QC_CHECK_FAILS(parse("[1, 2]", &c), QC_ERR_FORMAT, "JSON object");
    QC_CHECK_FAILS(parse("{\"architectures\": ", &c), QC_ERR_FORMAT, "not valid JSON");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"tie_word_embeddings\": 1}", &c),
                   QC_ERR_FORMAT, "tie_word_embeddings");
    QC_CHECK_FAILS(qc_model_config_load("/nonexistent-qcal", &c), QC_ERR_IO, "/nonexistent-qcal/config.json");
}

static void test_real_configs(void **state) {
    (void)state;
    qc_model_config c;
    char *d = qc_test_require("stories260K");
    QC_CHECK_OK(qc_model_config_load(d, &c));
    assert_int_equal(c.intermediate_size, 172);
    assert_int_equal(c.head_dim, 8);
    free(d);
    d = qc_test_require("qcal-llama-25m");
    QC_CHECK_OK(qc_model_config_load(d, &c));
    assert_int_equal(c.hidden_size, 384);
    assert_int_equal(c.n_layers, 8);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.tie_word_embeddings);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_defaults), cmocka_unit_test(test_architectures), cmocka_unit_test(test_rope), cmocka_unit_test(test_phi3),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_real_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
