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

static bool sliding(const qc_model_config *c, int i) { return qc_layer_window(c, i) > 0; }

static void test_gemma2(void **state) {
    (void)state;
    qc_model_config c;
    /* google/gemma-2-9b's config.json */
    QC_CHECK_OK(parse("{\"architectures\": [\"Gemma2ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0, "
                      "\"attn_logit_softcapping\": 50.0, \"bos_token_id\": 2, \"cache_implementation\": \"hybrid\", "
                      "\"eos_token_id\": 1, \"final_logit_softcapping\": 30.0, \"head_dim\": 256, \"hidden_act\": "
                      "\"gelu_pytorch_tanh\", \"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 3584, "
                      "\"initializer_range\": 0.02, \"intermediate_size\": 14336, \"max_position_embeddings\": 8192, "
                      "\"model_type\": \"gemma2\", \"num_attention_heads\": 16, \"num_hidden_layers\": 42, "
                      "\"num_key_value_heads\": 8, \"pad_token_id\": 0, \"query_pre_attn_scalar\": 256, "
                      "\"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, \"sliding_window\": 4096, "
                      "\"sliding_window_size\": 4096, \"torch_dtype\": \"float32\", \"use_cache\": true, "
                      "\"vocab_size\": 256000}", &c));
    assert_int_equal(c.arch, QC_ARCH_GEMMA2);
    assert_int_equal(c.act, QC_ACT_GELU_TANH);
    assert_int_equal(c.head_dim, 256);
    assert_true(c.tie_word_embeddings); /* Gemma2Config default */
    assert_false(c.qk_norm);
    QC_CHECK_NEAR(c.attn_scalar, 256.0, 0);
    QC_CHECK_NEAR(c.attn_softcap, 50.0, 0);
    QC_CHECK_NEAR(c.final_softcap, 30.0, 0);
    QC_CHECK_NEAR(c.rope_local_theta, 0.0, 0);
    for (int i = 0; i < 42; i++) { /* even layers slide (layer_types absent) */
        assert_int_equal(qc_layer_window(&c, i), i % 2 == 0 ? 4096 : 0);
        assert_false(qc_layer_rope_local(&c, i));
    }
    /* defaults: softcaps 50/30 when absent, null turns them off; layer_types wins over the alternation */
    QC_CHECK_OK(parse("{\"model_type\": \"gemma2\", " BASE ", \"head_dim\": 16}", &c));
    QC_CHECK_NEAR(c.attn_softcap, 50.0, 0);
    QC_CHECK_NEAR(c.final_softcap, 30.0, 0);
    assert_int_equal(c.sliding_window, 4096);
    QC_CHECK_OK(parse("{\"model_type\": \"gemma2\", " BASE ", \"attn_logit_softcapping\": null, "
                      "\"final_logit_softcapping\": null, \"layer_types\": [\"full_attention\", \"sliding_attention\"], "
                      "\"sliding_window\": 8}", &c));
    QC_CHECK_NEAR(c.attn_softcap, 0.0, 0);
    QC_CHECK_NEAR(c.final_softcap, 0.0, 0);
    assert_false(sliding(&c, 0));
    assert_int_equal(qc_layer_window(&c, 1), 8);
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma2\", " BASE ", \"layer_types\": [\"full_attention\"]}", &c),
                   QC_ERR_FORMAT, "num_hidden_layers (2)");
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma2\", " BASE ", \"layer_types\": [\"full_attention\", \"chunked\"]}", &c),
                   QC_ERR_UNSUPPORTED, "layer_types[1] \"chunked\"");
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma2\", " BASE ", \"hidden_activation\": \"gelu\"}", &c),
                   QC_ERR_UNSUPPORTED, "hidden_activation \"gelu\"");
    QC_CHECK_OK(parse("{\"model_type\": \"gemma2\", " BASE ", \"hidden_act\": \"gelu_pytorch_tanh\"}", &c));
    /* Mistral keeps one window for every layer */
    QC_CHECK_OK(parse("{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": 4096}", &c));
    assert_int_equal(qc_layer_window(&c, 0), 4096);
    assert_int_equal(qc_layer_window(&c, 1), 4096);
}

static void test_gemma3(void **state) {
    (void)state;
    qc_model_config c;
    /* google/gemma-3-1b-pt's config.json (transformers 4.50) */
    QC_CHECK_OK(parse("{\"architectures\": [\"Gemma3ForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0, "
                      "\"attn_logit_softcapping\": null, \"bos_token_id\": 2, \"cache_implementation\": \"hybrid\", "
                      "\"eos_token_id\": 1, \"final_logit_softcapping\": null, \"head_dim\": 256, \"hidden_activation\": "
                      "\"gelu_pytorch_tanh\", \"hidden_size\": 1152, \"initializer_range\": 0.02, \"intermediate_size\": 6912, "
                      "\"max_position_embeddings\": 32768, \"model_type\": \"gemma3_text\", \"num_attention_heads\": 4, "
                      "\"num_hidden_layers\": 26, \"num_key_value_heads\": 1, \"pad_token_id\": 0, "
                      "\"query_pre_attn_scalar\": 256, \"rms_norm_eps\": 1e-06, \"rope_local_base_freq\": 10000, "
                      "\"rope_scaling\": null, \"rope_theta\": 1000000, \"sliding_window\": 512, "
                      "\"sliding_window_pattern\": 6, \"torch_dtype\": \"bfloat16\", \"use_cache\": true, "
                      "\"vocab_size\": 262144}", &c));
    assert_int_equal(c.arch, QC_ARCH_GEMMA3);
    assert_true(c.qk_norm);
    assert_true(c.tie_word_embeddings);
    QC_CHECK_NEAR(c.attn_softcap, 0.0, 0);
    QC_CHECK_NEAR(c.final_softcap, 0.0, 0);
    QC_CHECK_NEAR(c.rope_theta, 1e6, 0);
    QC_CHECK_NEAR(c.rope_local_theta, 1e4, 0);
    assert_int_equal(c.rope_type, QC_ROPE_DEFAULT);
    for (int i = 0; i < 26; i++) { /* 5 local : 1 global */
        bool sl = (i + 1) % 6 != 0;
        assert_int_equal(qc_layer_window(&c, i), sl ? 512 : 0);
        assert_int_equal(qc_layer_rope_local(&c, i), sl);
    }
    /* v4: rope_scaling applies to the global layers */
    QC_CHECK_OK(parse("{\"architectures\": [\"Gemma3ForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": "
                      "\"linear\", \"factor\": 8.0}, \"layer_types\": [\"sliding_attention\", \"full_attention\"]}", &c));
    assert_int_equal(c.rope_type, QC_ROPE_LINEAR);
    QC_CHECK_NEAR(c.rope_factor, 8.0, 0);
    assert_true(qc_layer_rope_local(&c, 0));
    assert_false(qc_layer_rope_local(&c, 1));
    /* v5: rope_parameters keyed by layer type */
    QC_CHECK_OK(parse("{\"model_type\": \"gemma3_text\", " BASE ", \"rope_parameters\": {\"full_attention\": "
                      "{\"rope_type\": \"linear\", \"factor\": 8.0, \"rope_theta\": 1000000.0}, \"sliding_attention\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 20000.0}}}", &c));
    assert_int_equal(c.arch, QC_ARCH_GEMMA3);
    assert_int_equal(c.rope_type, QC_ROPE_LINEAR);
    QC_CHECK_NEAR(c.rope_theta, 1e6, 0);
    QC_CHECK_NEAR(c.rope_local_theta, 20000.0, 0);
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma3_text\", " BASE ", \"rope_parameters\": {\"sliding_attention\": "
                         "{\"rope_type\": \"linear\", \"factor\": 2.0}}}", &c),
                   QC_ERR_UNSUPPORTED, "sliding_attention type \"linear\"");
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma3_text\", " BASE ", \"rope_parameters\": {\"full_attention\": "
                         "{\"rope_type\": \"yarn\", \"factor\": 2.0}}}", &c),
                   QC_ERR_UNSUPPORTED, "\"yarn\" is not supported");
    QC_CHECK_FAILS(parse("{\"model_type\": \"llama\", " BASE ", \"rope_parameters\": {\"full_attention\": {}}}", &c),
                   QC_ERR_UNSUPPORTED, "Gemma-2 and Gemma-3 only");
    /* Gemma-2 written per layer type with one rope: no local tables; a different sliding base gets them */
    QC_CHECK_OK(parse("{\"model_type\": \"gemma2\", " BASE ", \"rope_parameters\": {\"full_attention\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}, \"sliding_attention\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}}}", &c));
    QC_CHECK_NEAR(c.rope_local_theta, 0.0, 0);
    QC_CHECK_OK(parse("{\"model_type\": \"gemma2\", " BASE ", \"rope_parameters\": {\"full_attention\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}, \"sliding_attention\": "
                      "{\"rope_type\": \"default\", \"rope_theta\": 500.0}}}", &c));
    QC_CHECK_NEAR(c.rope_local_theta, 500.0, 0);
    assert_true(qc_layer_rope_local(&c, 0));
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma3_text\", " BASE ", \"use_bidirectional_attention\": true}", &c),
                   QC_ERR_UNSUPPORTED, "use_bidirectional_attention");
    QC_CHECK_OK(parse("{\"model_type\": \"gemma3_text\", " BASE ", \"use_bidirectional_attention\": null}", &c));
    /* the multimodal model */
    QC_CHECK_FAILS(parse("{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"model_type\": \"gemma3\", "
                         "\"text_config\": {" BASE "}}", &c),
                   QC_ERR_UNSUPPORTED, "Gemma3ForCausalLM (model_type gemma3_text)");
    QC_CHECK_FAILS(parse("{\"model_type\": \"gemma3\", \"text_config\": {" BASE "}}", &c), QC_ERR_UNSUPPORTED,
                   "multimodal Gemma-3");
}

/* facebook/opt-6.7b's config.json; what OPT variants qcal refuses, with the field named. */
static void test_opt(void **state) {
    (void)state;
    qc_model_config c;
#define OPT67 "\"_name_or_path\": \"facebook/opt-6.7b\", \"activation_dropout\": 0.0, \"architectures\": " \
    "[\"OPTForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 2, \"dropout\": 0.1, \"eos_token_id\": 2, "  \
    "\"ffn_dim\": 16384, \"hidden_size\": 4096, \"init_std\": 0.02, \"layerdrop\": 0.0, "                          \
    "\"max_position_embeddings\": 2048, \"model_type\": \"opt\", \"num_attention_heads\": 32, "                    \
    "\"num_hidden_layers\": 32, \"pad_token_id\": 1, \"prefix\": \"</s>\", \"torch_dtype\": \"float16\", "           \
    "\"transformers_version\": \"4.21.0.dev0\", \"use_cache\": true, \"vocab_size\": 50272"
    QC_CHECK_OK(parse("{" OPT67 ", \"_remove_final_layer_norm\": false, \"activation_function\": \"relu\", "
                      "\"do_layer_norm_before\": true, \"word_embed_proj_dim\": 4096}", &c));
    assert_int_equal(c.arch, QC_ARCH_OPT);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 16384);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.vocab_size, 50272);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.act, QC_ACT_RELU);
    assert_true(c.tie_word_embeddings && c.qkv_bias && c.o_bias && c.mlp_bias);
    assert_int_equal(c.bos_token_id, 2);
    assert_int_equal(c.eos_token_id, 2);
    assert_string_equal(c.torch_dtype, "float16");
    assert_float_equal(c.rms_norm_eps, 1e-5f, 0.0f);
    assert_int_equal(c.sliding_window, 0);
    QC_CHECK_OK(parse("{" OPT67 ", \"enable_bias\": false}", &c));
    assert_false(c.qkv_bias || c.o_bias || c.mlp_bias);
    QC_CHECK_FAILS(parse("{" OPT67 ", \"do_layer_norm_before\": false}", &c), QC_ERR_UNSUPPORTED, "do_layer_norm_before");
    QC_CHECK_FAILS(parse("{" OPT67 ", \"word_embed_proj_dim\": 512}", &c), QC_ERR_UNSUPPORTED, "word_embed_proj_dim");
    QC_CHECK_FAILS(parse("{" OPT67 ", \"activation_function\": \"gelu\"}", &c), QC_ERR_UNSUPPORTED, "activation_function");
    QC_CHECK_FAILS(parse("{" OPT67 ", \"layer_norm_elementwise_affine\": false}", &c), QC_ERR_UNSUPPORTED,
                   "layer_norm_elementwise_affine");
    QC_CHECK_FAILS(parse("{" OPT67 ", \"_remove_final_layer_norm\": true}", &c), QC_ERR_UNSUPPORTED,
                   "_remove_final_layer_norm");
    QC_CHECK_FAILS(parse("{\"architectures\": [\"OPTForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                         "\"num_attention_heads\": 4, \"intermediate_size\": 96, \"vocab_size\": 256}", &c),
                   QC_ERR_FORMAT, "ffn_dim");
#undef OPT67
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
        cmocka_unit_test(test_gemma2), cmocka_unit_test(test_gemma3), cmocka_unit_test(test_opt),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_real_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
