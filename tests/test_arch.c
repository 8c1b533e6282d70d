/* Architecture descriptions (formats/arch.h): every description is self-consistent (the invariants the
 * forwards, the layer driver and the plan rely on), and the config-dependent answers (shapes, biases,
 * norms, AWQ groups under GQA) are right for each supported architecture. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "testutil.h"

/* A config of this architecture with distinct widths, so a wrong dimension cannot pass by accident. */
static qc_model_config config_of(qc_arch arch, int kv_heads) {
    qc_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.hidden_size = 64;
    c.n_heads = 4;
    c.n_kv_heads = kv_heads;
    c.head_dim = 24;  /* q width 96 != hidden 64 (as Qwen3 allows) */
    c.intermediate_size = 160;
    c.vocab_size = 256;
    if (qc_arch_desc_of(arch)->moe) {
        c.n_experts = 3;
        c.n_experts_per_tok = 2;
        c.moe_intermediate_size = 40;
        c.shared_expert_intermediate_size = arch == QC_ARCH_QWEN2_MOE ? 80 : 0;
        c.decoder_sparse_step = 1;
    }
    return c;
}

static bool is_capture(const qc_arch_desc *a, qc_linear_id id) {
    for (int k = 0; k < a->n_caps; k++)
        if (a->caps[k] == id) return true;
    return false;
}

static void test_descriptions_consistent(void **state) {
    (void)state;
    int n;
    const qc_arch_desc *all = qc_arch_descs(&n);
    assert_true(n >= 4);
    for (int i = 0; i < n; i++) {
        const qc_arch_desc *a = &all[i];
        assert_ptr_equal(qc_arch_desc_of(a->id), a);
        assert_non_null(a->class_name);
        assert_non_null(a->model_type);
        assert_non_null(a->embed);
        assert_non_null(a->final_norm);
        assert_non_null(a->lm_head);
        for (int j = 0; j < i; j++) {
            assert_int_not_equal(all[j].id, a->id);
            assert_string_not_equal(all[j].class_name, a->class_name);
        }
        qc_model_config c = config_of(a->id, 2);
        assert_non_null(a->layers);
        assert_true((a->final_norm_bias != NULL) == a->layer_norm);
        /* linears: named uniquely, fed by a listed capture point whose width is their in_features; an unnamed
         * slot is absent (OPT's gate: no shape, in no group) */
        for (int l = 0; l < QC_LIN_COUNT; l++) {
            if (!a->lin[l].name) {
                int N, K;
                qc_linear_shape(&c, (qc_linear_id)l, &N, &K);
                assert_int_equal(N, 0);
                assert_false(qc_linear_present(&c, 0, (qc_linear_id)l));
                assert_false(qc_linear_has_bias(&c, (qc_linear_id)l));
                continue;
            }
            for (int m = 0; m < l; m++)
                if (a->lin[m].name) assert_string_not_equal(a->lin[m].name, a->lin[l].name);
            assert_true(is_capture(a, a->lin[l].input));
            assert_int_equal(a->lin[a->lin[l].input].input, a->lin[l].input); /* a capture is named by its own consumer */
            int N, K;
            qc_linear_shape(&c, (qc_linear_id)l, &N, &K);
            assert_true(N > 0 && K > 0);
            assert_int_equal(qc_capture_width(&c, a->lin[l].input), K);
        }
        /* the slices of a fused tensor are consecutive and share their input */
        for (int l = 1; l < QC_LIN_COUNT; l++) {
            if (!a->lin[l].tensor) continue;
            for (int m = 0; m + 1 < l; m++)
                if (a->lin[m].tensor && strcmp(a->lin[m].tensor, a->lin[l].tensor) == 0) {
                    assert_non_null(a->lin[l - 1].tensor);
                    assert_string_equal(a->lin[l - 1].tensor, a->lin[l].tensor);
                    assert_int_equal(a->lin[m].input, a->lin[l].input);
                }
        }
        /* capture points in forward order, each listed once */
        for (int k = 0; k < a->n_caps; k++)
            for (int m = 0; m < k; m++) assert_int_not_equal(a->caps[m], a->caps[k]);
        /* true-sequential groups: every linear exactly once; a group's block is attention or MLP, and blocks
         * do not interleave (a block, once left, is final) */
        int seen[QC_LIN_COUNT] = {0};
        for (int g = 0; g < a->n_seq; g++) {
            assert_true(a->seq[g].n > 0);
            assert_true(a->seq[g].block == QC_BLOCK_ATTN || a->seq[g].block == QC_BLOCK_MLP);
            if (g > 0) assert_true(a->seq[g].block >= a->seq[g - 1].block);
            for (int k = 0; k < a->seq[g].n; k++) seen[a->seq[g].lin[k]]++;
        }
        for (int l = 0; l < QC_LIN_COUNT; l++) assert_int_equal(seen[l], a->lin[l].name ? 1 : 0);
        /* AWQ groups: members share the group's input; a fold target is a norm or a linear, never both; a
         * linear fold target's output rows can absorb the scales (its out_features >= the group's K) */
        for (int g = 0; g < a->n_awq; g++) {
            const qc_arch_awq *w = &a->awq[g];
            assert_true(w->n >= 1 && w->n <= 3);
            assert_true(is_capture(a, w->input));
            for (int k = 0; k < w->n; k++) assert_int_equal(a->lin[w->lin[k]].input, w->input);
            assert_true((w->prev_norm >= 0) != (w->prev_lin >= 0));
            if (w->module == QC_AWQ_MOD_LINEAR) assert_int_equal(w->n, 1);
            if (w->prev_lin >= 0) {
                int pn, pk, gn, gk;
                qc_linear_shape(&c, (qc_linear_id)w->prev_lin, &pn, &pk);
                qc_linear_shape(&c, w->lin[0], &gn, &gk);
                if (!w->if_square) assert_true(pn >= gk);
            } else {
                assert_true(w->prev_norm < QC_NORM_COUNT);
                assert_non_null(a->norm[w->prev_norm].name);
            }
        }
        /* the attention and MLP layer norms always exist; q/k norms only with the config's flag */
        assert_true(qc_norm_present(&c, QC_NORM_ATTN));
        assert_true(qc_norm_present(&c, QC_NORM_MLP));
        assert_int_equal(qc_norm_dim(&c, QC_NORM_ATTN), c.hidden_size);
        /* norms are named uniquely; the post norms, where they exist, have the hidden width */
        for (int k = 0; k < QC_NORM_COUNT; k++) {
            if (!a->norm[k].name) continue;
            for (int m = 0; m < k; m++)
                if (a->norm[m].name) assert_string_not_equal(a->norm[m].name, a->norm[k].name);
        }
        assert_int_equal(qc_norm_present(&c, QC_NORM_ATTN_POST), qc_norm_present(&c, QC_NORM_MLP_POST));
        if (qc_norm_present(&c, QC_NORM_ATTN_POST)) assert_int_equal(qc_norm_dim(&c, QC_NORM_MLP_POST), c.hidden_size);
    }
}

/* OPT: OPT's names under model.decoder.layers, no gate (fc1/fc2 in the up/down slots, fc1 its own capture
 * point), LayerNorms with biases, learned positions, GPTQ's and AutoAWQ's groups (opt.py). */
static void test_opt_layout(void **state) {
    (void)state;
    const char *js = "{\"architectures\": [\"OPTForCausalLM\"], \"model_type\": \"opt\", \"hidden_size\": 64, "
                     "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"ffn_dim\": 96, \"vocab_size\": 256, "
                     "\"max_position_embeddings\": 256, \"activation_function\": \"relu\", \"do_layer_norm_before\": true, "
                     "\"enable_bias\": true, \"word_embed_proj_dim\": 64}";
    qc_model_config c;
    QC_CHECK_OK(qc_model_config_parse(js, strlen(js), "config.json", &c));
    const qc_arch_desc *a = qc_arch_desc_of(c.arch);
    assert_int_equal(c.arch, QC_ARCH_OPT);
    assert_string_equal(qc_layers_path(&c), "model.decoder.layers");
    assert_true(qc_norm_has_bias(&c));
    assert_false(qc_arch_has_rope(&c));
    assert_string_equal(a->pos_embed, "model.decoder.embed_positions.weight");
    assert_int_equal(a->pos_offset, 2);
    const char *names[QC_LIN_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                                       NULL, "fc1", "fc2"};
    for (int l = 0; l < QC_LIN_COUNT; l++) {
        assert_int_equal(qc_linear_present(&c, 0, (qc_linear_id)l), names[l] != NULL);
        if (!names[l]) continue;
        char path[64];
        assert_string_equal(qc_linear_path(&c, (qc_linear_id)l, path, sizeof path), names[l]);
        assert_true(qc_linear_has_bias(&c, (qc_linear_id)l));
    }
    int N, K;
    qc_linear_shape(&c, QC_LIN_UP, &N, &K);
    assert_true(N == 96 && K == 64);
    qc_linear_shape(&c, QC_LIN_DOWN, &N, &K);
    assert_true(N == 64 && K == 96);
    assert_int_equal(qc_linear_input(&c, QC_LIN_UP), QC_LIN_UP);
    assert_int_equal(qc_capture_width(&c, QC_LIN_UP), 64);
    qc_linear_id caps[QC_LIN_MAX];
    assert_int_equal(qc_arch_caps(&c, 0, caps), 4);
    assert_true(caps[0] == QC_LIN_Q && caps[1] == QC_LIN_O && caps[2] == QC_LIN_UP && caps[3] == QC_LIN_DOWN);
    qc_seq_group g[4];
    assert_int_equal(qc_arch_seq_groups(&c, 0, g), 4);
    assert_true(g[0].n == 3 && g[1].n == 1 && g[2].n == 1 && g[3].n == 1);
    assert_true(g[2].lin[0] == QC_LIN_UP && g[3].lin[0] == QC_LIN_DOWN);
    qc_arch_awq w[8];
    assert_int_equal(qc_arch_awq_groups(&c, 0, w), 4);
    assert_true(w[0].prev_norm == QC_NORM_ATTN && w[0].n == 3);
    assert_true(w[1].prev_lin == QC_LIN_V && w[1].lin[0] == QC_LIN_O);
    assert_true(w[2].prev_norm == QC_NORM_MLP && w[2].n == 1 && w[2].lin[0] == QC_LIN_UP && w[2].input == QC_LIN_UP);
    assert_true(w[3].prev_lin == QC_LIN_UP && w[3].lin[0] == QC_LIN_DOWN);
    assert_string_equal(a->norm[QC_NORM_ATTN].name, "self_attn_layer_norm");
    assert_string_equal(a->norm[QC_NORM_MLP].name, "final_layer_norm");
    assert_false(qc_norm_present(&c, QC_NORM_Q));
    assert_int_equal(c.act, QC_ACT_RELU);
    assert_true(c.tie_word_embeddings);
    assert_float_equal(c.rms_norm_eps, 1e-5f, 0.0f);
}

/* Gemma: the Llama linears, the pre norms AWQ folds into (input_layernorm, pre_feedforward_layernorm), post
 * norms, (1 + w) norms and scaled embeddings; Gemma-3's q/k norms with qk_norm. */
static void test_gemma_layout(void **state) {
    (void)state;
    for (int v = 0; v < 2; v++) {
        qc_arch arch = v ? QC_ARCH_GEMMA3 : QC_ARCH_GEMMA2;
        qc_model_config c = config_of(arch, 2);
        c.qk_norm = v == 1;
        const qc_arch_desc *a = qc_arch_desc_of(arch);
        assert_true(a->norm_unit_offset);
        assert_true(a->embed_scaled);
        QC_CHECK_NEAR(qc_norm_offset(&c), 1.0, 0);
        assert_string_equal(a->norm[QC_NORM_ATTN].name, "input_layernorm");
        assert_string_equal(a->norm[QC_NORM_MLP].name, "pre_feedforward_layernorm");
        assert_string_equal(a->norm[QC_NORM_ATTN_POST].name, "post_attention_layernorm");
        assert_string_equal(a->norm[QC_NORM_MLP_POST].name, "post_feedforward_layernorm");
        assert_true(qc_norm_present(&c, QC_NORM_ATTN_POST));
        assert_int_equal(qc_norm_present(&c, QC_NORM_Q), v == 1);
        for (int l = 0; l < QC_LIN_COUNT; l++) {
            assert_string_equal(a->lin[l].name, qc_linear_name((qc_linear_id)l));
            assert_false(qc_linear_has_bias(&c, (qc_linear_id)l));
        }
        qc_arch_awq g[4];
        int ng = qc_arch_awq_groups(&c, 0, g);
        assert_int_equal(ng, 3); /* GQA: no v -> o group */
        assert_int_equal(g[0].prev_norm, QC_NORM_ATTN);
        assert_int_equal(g[1].prev_norm, QC_NORM_MLP);
    }
    qc_model_config c = config_of(QC_ARCH_LLAMA, 2);
    QC_CHECK_NEAR(qc_norm_offset(&c), 0.0, 0);
    assert_false(qc_norm_present(&c, QC_NORM_ATTN_POST));
    assert_false(qc_arch_desc_of(QC_ARCH_LLAMA)->embed_scaled);
}

static void test_llama_layout(void **state) {
    (void)state;
    qc_model_config c = config_of(QC_ARCH_LLAMA, 2);
    static const struct { qc_linear_id l; const char *name; int N, K; qc_linear_id in; } want[] = {
        {QC_LIN_Q, "self_attn.q_proj", 96, 64, QC_LIN_Q},   {QC_LIN_K, "self_attn.k_proj", 48, 64, QC_LIN_Q},
        {QC_LIN_V, "self_attn.v_proj", 48, 64, QC_LIN_Q},   {QC_LIN_O, "self_attn.o_proj", 64, 96, QC_LIN_O},
        {QC_LIN_GATE, "mlp.gate_proj", 160, 64, QC_LIN_GATE}, {QC_LIN_UP, "mlp.up_proj", 160, 64, QC_LIN_GATE},
        {QC_LIN_DOWN, "mlp.down_proj", 64, 160, QC_LIN_DOWN},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int N, K;
        qc_linear_shape(&c, want[i].l, &N, &K);
        assert_string_equal(qc_arch_desc_of(QC_ARCH_LLAMA)->lin[want[i].l].name, want[i].name);
        assert_string_equal(qc_linear_name(want[i].l), want[i].name);
        assert_int_equal(N, want[i].N);
        assert_int_equal(K, want[i].K);
        assert_int_equal(qc_linear_input(&c, want[i].l), want[i].in);
        assert_false(qc_linear_has_bias(&c, want[i].l));
    }
    assert_int_equal(qc_capture_width(&c, QC_LIN_O), 96);
    assert_int_equal(qc_capture_width(&c, QC_LIN_DOWN), 160);
    /* biases per the config's flags */
    c.qkv_bias = true;
    assert_true(qc_linear_has_bias(&c, QC_LIN_K));
    assert_false(qc_linear_has_bias(&c, QC_LIN_O));
    c.o_bias = c.mlp_bias = true;
    assert_true(qc_linear_has_bias(&c, QC_LIN_O));
    assert_true(qc_linear_has_bias(&c, QC_LIN_DOWN));
    /* q/k norms: Qwen3's flag */
    assert_false(qc_norm_present(&c, QC_NORM_Q));
    c.qk_norm = true;
    assert_true(qc_norm_present(&c, QC_NORM_K));
    assert_int_equal(qc_norm_dim(&c, QC_NORM_Q), 24);
}

/* AWQ's v_proj -> o_proj group exists only without GQA (spec E.2). */
static void test_awq_groups_gqa(void **state) {
    (void)state;
    qc_arch_awq g[4];
    qc_model_config gqa = config_of(QC_ARCH_QWEN2, 2);
    assert_int_equal(qc_arch_awq_groups(&gqa, 0, g), 3);
    assert_int_equal(g[0].input, QC_LIN_Q);
    assert_int_equal(g[0].prev_norm, QC_NORM_ATTN);
    assert_int_equal(g[1].input, QC_LIN_GATE);
    assert_int_equal(g[2].input, QC_LIN_DOWN);
    assert_int_equal(g[2].prev_lin, QC_LIN_UP);
    qc_model_config mha = config_of(QC_ARCH_LLAMA, 4);
    mha.head_dim = 16; /* q width == hidden: o_proj square, v_proj's output is o_proj's input */
    assert_int_equal(qc_arch_awq_groups(&mha, 0, g), 4);
    assert_int_equal(g[1].input, QC_LIN_O);
    assert_int_equal(g[1].prev_lin, QC_LIN_V);
    assert_int_equal(g[1].module, QC_AWQ_MOD_LINEAR);
}

/* Phi-3 stores q/k/v and gate/up fused: each linear is a row range of its tensor, read and written once. */
static void test_phi3_storage(void **state) {
    (void)state;
    qc_model_config c = config_of(QC_ARCH_PHI3, 2); /* q 96 rows, k and v 48 each, gate and up 160 */
    static const struct { qc_linear_id l; const char *tensor; int row0, rows; bool first; } want[] = {
        {QC_LIN_Q, "self_attn.qkv_proj", 0, 192, true},     {QC_LIN_K, "self_attn.qkv_proj", 96, 192, false},
        {QC_LIN_V, "self_attn.qkv_proj", 144, 192, false},  {QC_LIN_O, "self_attn.o_proj", 0, 64, true},
        {QC_LIN_GATE, "mlp.gate_up_proj", 0, 320, true},    {QC_LIN_UP, "mlp.gate_up_proj", 160, 320, false},
        {QC_LIN_DOWN, "mlp.down_proj", 0, 64, true},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *t;
        int row0, rows;
        qc_linear_storage(&c, want[i].l, &t, &row0, &rows);
        assert_string_equal(t, want[i].tensor);
        assert_int_equal(row0, want[i].row0);
        assert_int_equal(rows, want[i].rows);
        assert_int_equal(qc_linear_first_of_tensor(&c, want[i].l), want[i].first);
    }
    /* unfused architectures: every linear its own tensor */
    qc_model_config l = config_of(QC_ARCH_LLAMA, 2);
    for (int k = 0; k < QC_LIN_COUNT; k++) {
        const char *t;
        int row0, rows, N, K;
        qc_linear_storage(&l, (qc_linear_id)k, &t, &row0, &rows);
        qc_linear_shape(&l, (qc_linear_id)k, &N, &K);
        assert_string_equal(t, qc_linear_name((qc_linear_id)k));
        assert_int_equal(row0, 0);
        assert_int_equal(rows, N);
    }
}

/* config.json's architecture names are the descriptions'. */
static void test_config_names(void **state) {
    (void)state;
    int n;
    const qc_arch_desc *all = qc_arch_descs(&n);
    for (int i = 0; i < n; i++) {
        char json[512];
        /* MoE keys too (a dense architecture ignores them) */
#define MOE_KEYS "\"num_local_experts\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, " \
                 "\"shared_expert_intermediate_size\": 48, \"ffn_dim\": 96, "
        snprintf(json, sizeof json, "{\"architectures\": [\"%s\"], " MOE_KEYS "\"hidden_size\": 64, \"num_hidden_layers\": 2, "
                 "\"num_attention_heads\": 4, \"intermediate_size\": 96, \"vocab_size\": 256}", all[i].class_name);
        qc_model_config c;
        QC_CHECK_OK(qc_model_config_parse(json, strlen(json), "config.json", &c));
        assert_int_equal(c.arch, all[i].id);
        assert_string_equal(qc_arch_name(c.arch), all[i].model_type);
        snprintf(json, sizeof json, "{\"model_type\": \"%s\", " MOE_KEYS "\"hidden_size\": 64, \"num_hidden_layers\": 2, "
                 "\"num_attention_heads\": 4, \"intermediate_size\": 96, \"vocab_size\": 256}", all[i].model_type);
        QC_CHECK_OK(qc_model_config_parse(json, strlen(json), "config.json", &c));
        assert_int_equal(c.arch, all[i].id);
    }
    qc_model_config c;
    const char *bad = "{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}";
    QC_CHECK_FAILS(qc_model_config_parse(bad, strlen(bad), "config.json", &c), QC_ERR_UNSUPPORTED, "Qwen3ForCausalLM");
}

/* MoE: expert slots after the seven, present per layer (sparse, dense via mlp_only_layers), named as the Hub
 * stores them; capture points and true-sequential groups in the forward's order. */
static void test_moe_layout(void **state) {
    (void)state;
    const char *js = "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 3, "
                     "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 24, \"intermediate_size\": 160, "
                     "\"vocab_size\": 256, \"num_experts\": 3, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 40, "
                     "\"mlp_only_layers\": [1], \"norm_topk_prob\": true}";
    qc_model_config c;
    QC_CHECK_OK(qc_model_config_parse(js, strlen(js), "config.json", &c));
    assert_int_equal(qc_arch_n_lin(&c), QC_LIN_COUNT + 9);
    assert_true(qc_layer_is_moe(&c, 0) && !qc_layer_is_moe(&c, 1) && qc_layer_is_moe(&c, 2));
    char buf[128];
    int N, K, e, j;
    qc_linear_shape(&c, QC_LIN_EXPERT(2, 2), &N, &K);
    assert_int_equal(N, 64);
    assert_int_equal(K, 40);
    qc_linear_shape(&c, QC_LIN_EXPERT(1, 1), &N, &K);
    assert_int_equal(N, 40);
    assert_int_equal(K, 64);
    assert_string_equal(qc_linear_path(&c, QC_LIN_EXPERT(2, 1), buf, sizeof buf), "mlp.experts.2.up_proj");
    assert_true(qc_linear_expert(QC_LIN_EXPERT(2, 1), &e, &j) && e == 2 && j == 1);
    assert_false(qc_linear_expert(QC_LIN_DOWN, &e, &j));
    assert_int_equal(qc_linear_input(&c, QC_LIN_EXPERT(1, 1)), QC_LIN_EXPERT(1, 0));
    assert_int_equal(qc_linear_input(&c, QC_LIN_EXPERT(1, 2)), QC_LIN_EXPERT(1, 2));
    assert_int_equal(qc_capture_width(&c, QC_LIN_EXPERT(1, 2)), 40);
    /* sparse layer 0: no dense MLP; dense layer 1: no experts */
    assert_false(qc_linear_present(&c, 0, QC_LIN_GATE));
    assert_true(qc_linear_present(&c, 0, QC_LIN_EXPERT(0, 0)));
    assert_true(qc_linear_present(&c, 1, QC_LIN_DOWN));
    assert_false(qc_linear_present(&c, 1, QC_LIN_EXPERT(0, 0)));
    qc_linear_id caps[QC_LIN_MAX];
    int n = qc_arch_caps(&c, 0, caps);
    const qc_linear_id want0[] = {QC_LIN_Q, QC_LIN_O, QC_LIN_GATE, QC_LIN_EXPERT(0, 0), QC_LIN_EXPERT(1, 0),
                                  QC_LIN_EXPERT(2, 0), QC_LIN_EXPERT(0, 2), QC_LIN_EXPERT(1, 2), QC_LIN_EXPERT(2, 2)};
    assert_int_equal(n, 9);
    for (int k = 0; k < n; k++) assert_int_equal(caps[k], want0[k]);
    assert_int_equal(qc_arch_caps(&c, 1, caps), 4);
    qc_seq_group *g = malloc(sizeof *g * 4);
    assert_int_equal(qc_arch_seq_groups(&c, 0, g), 4);
    assert_int_equal(g[2].n, 6);
    assert_int_equal(g[2].lin[0], QC_LIN_EXPERT(0, 0));
    assert_int_equal(g[2].lin[1], QC_LIN_EXPERT(0, 1));
    assert_int_equal(g[3].n, 3);
    assert_int_equal(g[3].lin[2], QC_LIN_EXPERT(2, 2));
    qc_arch_seq_groups(&c, 1, g);
    assert_int_equal(g[2].n, 2);
    assert_int_equal(g[3].lin[0], QC_LIN_DOWN);
    free(g);
    /* Qwen2-MoE: slots 4..6 are the shared expert; Mixtral: the Hub's w1/w3/w2 */
    const char *q2 = "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                     "\"num_attention_heads\": 4, \"intermediate_size\": 160, \"vocab_size\": 256, \"num_experts\": 4, "
                     "\"num_experts_per_tok\": 2, \"moe_intermediate_size\": 40, \"shared_expert_intermediate_size\": 80}";
    QC_CHECK_OK(qc_model_config_parse(q2, strlen(q2), "config.json", &c));
    assert_true(qc_linear_present(&c, 0, QC_LIN_GATE));
    qc_linear_shape(&c, QC_LIN_DOWN, &N, &K);
    assert_int_equal(K, 80);
    assert_false(c.norm_topk_prob);
    assert_string_equal(qc_linear_path(&c, QC_LIN_UP, buf, sizeof buf), "mlp.shared_expert.up_proj");
    const char *mx = "{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                     "\"num_attention_heads\": 4, \"intermediate_size\": 160, \"vocab_size\": 256, "
                     "\"num_local_experts\": 8, \"num_experts_per_tok\": 2}";
    QC_CHECK_OK(qc_model_config_parse(mx, strlen(mx), "config.json", &c));
    assert_int_equal(c.moe_intermediate_size, 160);
    assert_string_equal(qc_linear_path(&c, QC_LIN_EXPERT(7, 2), buf, sizeof buf), "block_sparse_moe.experts.7.w2");
    assert_false(qc_linear_present(&c, 1, QC_LIN_GATE));
    /* refused: Qwen2-MoE dense layers (slots 4..6 hold the shared expert), top-k above the experts */
    const char *bad1 = "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"intermediate_size\": 160, \"vocab_size\": 256, \"num_experts\": 4, "
                       "\"num_experts_per_tok\": 2, \"moe_intermediate_size\": 40, \"shared_expert_intermediate_size\": 80, "
                       "\"mlp_only_layers\": [0]}";
    QC_CHECK_FAILS(qc_model_config_parse(bad1, strlen(bad1), "config.json", &c), QC_ERR_UNSUPPORTED, "dense layers");
    const char *bad2 = "{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"intermediate_size\": 160, \"vocab_size\": 256, "
                       "\"num_local_experts\": 2, \"num_experts_per_tok\": 3}";
    QC_CHECK_FAILS(qc_model_config_parse(bad2, strlen(bad2), "config.json", &c), QC_ERR_FORMAT, "num_experts_per_tok");
    /* AWQ groups of an MoE layer (AutoAWQ's Mixtral/Qwen3-MoE): attention, every expert's gate and up on the block's
     * input folded into the MLP norm, then each down projection on its own input folded into its up projection;
     * Qwen2-MoE's shared expert joins the block group and has its own down group */
    QC_CHECK_OK(qc_model_config_parse(q2, strlen(q2), "config.json", &c));
    qc_arch_awq *ag = malloc(sizeof *ag * (size_t)qc_arch_awq_max_groups(&c));
    int ng = qc_arch_awq_groups(&c, 0, ag);
    assert_int_equal(ng, 2 + 1 + 1 + 4); /* qkv, v->o (no GQA), block, shared down, 4 expert downs */
    assert_int_equal(ag[1].input, QC_LIN_O);
    assert_int_equal(ag[2].module, QC_AWQ_MOD_MOE);
    assert_int_equal(ag[2].input, QC_LIN_GATE);
    assert_int_equal(ag[2].prev_norm, QC_NORM_MLP);
    assert_int_equal(ag[2].n, 2 * 4 + 2);
    assert_int_equal(ag[2].lin[0], QC_LIN_EXPERT(0, 0));
    assert_int_equal(ag[2].lin[9], QC_LIN_UP);
    assert_int_equal(ag[3].input, QC_LIN_DOWN);
    assert_int_equal(ag[3].prev_lin, QC_LIN_UP);
    for (int x = 0; x < 4; x++) {
        assert_int_equal(ag[4 + x].input, QC_LIN_EXPERT(x, 2));
        assert_int_equal(ag[4 + x].lin[0], QC_LIN_EXPERT(x, 2));
        assert_int_equal(ag[4 + x].prev_lin, QC_LIN_EXPERT(x, 1));
        assert_int_equal(ag[4 + x].module, QC_AWQ_MOD_LINEAR);
    }
    QC_CHECK_OK(qc_model_config_parse(js, strlen(js), "config.json", &c)); /* Qwen3-MoE: layer 1 dense */
    free(ag);
    ag = malloc(sizeof *ag * (size_t)qc_arch_awq_max_groups(&c));
    assert_int_equal(qc_arch_awq_groups(&c, 0, ag), 1 + 1 + 3);
    assert_int_equal(ag[1].n, 6);
    assert_int_equal(qc_arch_awq_groups(&c, 1, ag), 3); /* qkv, gate/up, down: the Llama MLP */
    assert_int_equal(ag[1].module, QC_AWQ_MOD_MLP);
    free(ag);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptions_consistent), cmocka_unit_test(test_llama_layout),
        cmocka_unit_test(test_awq_groups_gqa), cmocka_unit_test(test_phi3_storage), cmocka_unit_test(test_config_names),
        cmocka_unit_test(test_moe_layout),
        cmocka_unit_test(test_gemma_layout), cmocka_unit_test(test_opt_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
