/* Synthetic models: the preset table against the real configs, tiny models of every preset's kind that
 * load and run, reproducible weights with the documented statistics, shards + index, the tokenizer,
 * and the failure modes (nothing half-written is left). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "model.h"
#include "sha256.h"
#include "synth.h"
#include "testutil.h"
#include "tokenizer.h"

/* A tiny model with a preset's architecture flags, tokenizer and vocabulary (so BOS/EOS keep their
 * real ids) but small layers: hidden 32, 4 heads of 8 (GQA kept when the preset has it), ffn 48. */
static qc_synth_spec tiny_of(const qc_synth_spec *p) {
    qc_synth_spec s = *p;
    s.hidden_size = 32;
    s.intermediate_size = 48;
    s.n_heads = 4;
    s.n_kv_heads = p->n_kv_heads < p->n_heads ? 2 : 4;
    s.head_dim = 8;
    s.n_layers = 2;
    if (p->n_experts > 0) { /* 4 experts of 32, top-2; a shared expert of 64 where the preset has one */
        s.n_experts = 4;
        s.n_experts_per_tok = 2;
        s.moe_intermediate_size = p->moe_intermediate_size > 0 ? 32 : 0;
        s.shared_expert_intermediate_size = p->shared_expert_intermediate_size > 0 ? 64 : 0;
    }
    return s;
}

static char *out_path(const char *name) {
    static int counter;
    char leaf[128];
    snprintf(leaf, sizeof leaf, "%s-%d", name, counter++);
    return qc_path_join(qc_test_tmpdir(), leaf);
}

/* Entries of the temp directory whose name starts with prefix (a leftover .tmp-XXXXXX shows up). */
static int count_prefixed(const char *prefix) {
    DIR *d = opendir(qc_test_tmpdir());
    assert_non_null(d);
    int n = 0;
    size_t len = strlen(prefix);
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, prefix, len) == 0) n++;
    closedir(d);
    return n;
}

static void tensor_sha(const char *dir, const char *name, char hex[65]) {
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    const qc_tensor *t = qc_weights_find(w, name);
    assert_non_null(t);
    qc_sha256_buf(t->data, t->nbytes, hex);
    qc_weights_free(w);
}

static void test_presets_match_real_configs(void **state) {
    (void)state;
    int n;
    assert_non_null(qc_synth_presets(&n));
    assert_int_equal(n, 15);
    /* name, hidden, ffn, layers, heads, kv, vocab, max_pos, theta, eps, bos, eos (from the hub's config.json; Phi-3's
     * eos is the synthetic tokenizer's </s>, the real config says 32000), head_dim */
    static const struct { const char *name; int d, ff, L, h, kv, V, maxpos; double theta, eps; int bos, eos, hd; } want[] = {
        {"llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256, 131072, 500000, 1e-5, 128000, 128001, 128},
        {"llama-3.1-70b", 8192, 28672, 80, 64, 8, 128256, 131072, 500000, 1e-5, 128000, 128001, 128},
        {"llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000, 1e-5, 1, 2, 128},
        {"llama-2-13b", 5120, 13824, 40, 40, 40, 32000, 4096, 10000, 1e-5, 1, 2, 128},
        {"llama-2-70b", 8192, 28672, 80, 64, 8, 32000, 4096, 10000, 1e-5, 1, 2, 128},
        {"mistral-7b", 4096, 14336, 32, 32, 8, 32000, 32768, 10000, 1e-5, 1, 2, 128},
        {"qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, 131072, 1e6, 1e-6, 151643, 151643, 128},
        {"qwen3-8b", 4096, 12288, 36, 32, 8, 151936, 40960, 1e6, 1e-6, 151643, 151645, 128},
        {"phi-3-mini", 3072, 8192, 32, 32, 32, 32064, 4096, 10000, 1e-5, 1, 2, 96},
        {"mixtral-8x7b", 4096, 14336, 32, 32, 8, 32000, 32768, 1e6, 1e-5, 1, 2, 128},
        {"qwen3-30b-a3b", 2048, 6144, 48, 32, 4, 151936, 40960, 1e6, 1e-6, 151643, 151645, 128},
        {"qwen2-57b-a14b", 3584, 18944, 28, 28, 4, 151936, 131072, 1e6, 1e-6, 151643, 151643, 128},
        {"gemma-2-9b", 3584, 14336, 42, 16, 8, 256000, 8192, 10000, 1e-6, 2, 1, 256},
        {"gemma-3-12b", 3840, 15360, 48, 16, 8, 262208, 131072, 1e6, 1e-6, 2, 1, 256},
        {"opt-6.7b", 4096, 16384, 32, 32, 32, 50272, 2048, 0, 1e-5, 2, 2, 128},
    };
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        const qc_synth_spec *s = qc_synth_find(want[i].name);
        assert_non_null(s);
        assert_int_equal(s->hidden_size, want[i].d);
        assert_int_equal(s->intermediate_size, want[i].ff);
        assert_int_equal(s->n_layers, want[i].L);
        assert_int_equal(s->n_heads, want[i].h);
        assert_int_equal(s->n_kv_heads, want[i].kv);
        assert_int_equal(s->head_dim, want[i].hd);
        assert_int_equal(s->vocab_size, want[i].V);
        assert_int_equal(s->max_position_embeddings, want[i].maxpos);
        QC_CHECK_NEAR(s->rope_theta, want[i].theta, 0);
        QC_CHECK_NEAR(s->rms_norm_eps, want[i].eps, 0);
        assert_int_equal(s->bos_token_id, want[i].bos);
        assert_int_equal(s->eos_token_id, want[i].eos);
        assert_int_equal(s->tie_word_embeddings, strncmp(s->name, "gemma", 5) == 0 || strncmp(s->name, "opt", 3) == 0);
    }
    const qc_synth_spec *g2 = qc_synth_find("gemma-2-9b"), *g3 = qc_synth_find("gemma-3-12b");
    QC_CHECK_NEAR(g2->query_pre_attn_scalar, 256, 0);
    assert_int_equal(g2->sliding_window, 4096);
    QC_CHECK_NEAR(g2->attn_softcap, 50, 0);
    QC_CHECK_NEAR(g2->final_softcap, 30, 0);
    QC_CHECK_NEAR(g3->query_pre_attn_scalar, 256, 0);
    assert_int_equal(g3->sliding_window, 1024);
    assert_int_equal(g3->sliding_window_pattern, 6);
    QC_CHECK_NEAR(g3->rope_local_base_freq, 1e4, 0);
    assert_true(g3->rope_linear);
    QC_CHECK_NEAR(g3->rope_factor, 8, 0);
    QC_CHECK_NEAR(g3->attn_softcap, 0, 0);
    assert_true(g3->qk_norm);
    const qc_synth_spec *l3 = qc_synth_find("llama-3.1-8b");
    assert_true(l3->rope_llama3);
    QC_CHECK_NEAR(l3->rope_factor, 8, 0);
    QC_CHECK_NEAR(l3->rope_low_freq_factor, 1, 0);
    QC_CHECK_NEAR(l3->rope_high_freq_factor, 4, 0);
    assert_int_equal(l3->rope_original_max_pos, 8192);
    assert_int_equal(qc_synth_find("mistral-7b")->sliding_window, 4096);
    assert_true(qc_synth_find("qwen2.5-7b")->qkv_bias);
    assert_true(qc_synth_find("qwen3-8b")->qk_norm);
    assert_false(qc_synth_find("llama-2-7b")->rope_llama3);
    /* experts: count, top-k, widths (Mixtral's are intermediate_size wide) */
    const qc_synth_spec *mx = qc_synth_find("mixtral-8x7b"), *q3 = qc_synth_find("qwen3-30b-a3b"),
                        *q2 = qc_synth_find("qwen2-57b-a14b");
    assert_true(mx->n_experts == 8 && mx->n_experts_per_tok == 2 && mx->moe_intermediate_size == 0);
    assert_true(q3->n_experts == 128 && q3->n_experts_per_tok == 8 && q3->moe_intermediate_size == 768 &&
                q3->norm_topk_prob && q3->qk_norm);
    assert_true(q2->n_experts == 64 && q2->n_experts_per_tok == 8 && q2->moe_intermediate_size == 2560 &&
                q2->shared_expert_intermediate_size == 20480 && !q2->norm_topk_prob && q2->qkv_bias);
    assert_null(qc_synth_find("llama-4"));
}

/* Every preset's kind, tiny: config parses to the right architecture, the model opens, a forward pass
 * gives finite logits, the tokenizer round-trips with BOS at its real id and every id < vocab. */
static void test_tiny_models_load_and_run(void **state) {
    (void)state;
    int n;
    const qc_synth_spec *p = qc_synth_presets(&n);
    for (int i = 0; i < n; i++) {
        qc_synth_spec s = tiny_of(&p[i]);
        if (s.vocab_size > 200000) s.vocab_size = 32000; /* Gemma's 256k rows: the ids that matter are < 259 */
        qc_synth_opts o;
        qc_synth_opts_init(&o);
        o.n_layers = 1;
        char *dir = out_path(s.name);
        qc_synth_result r;
        QC_CHECK_OK(qc_synth_write(&s, &o, dir, &r));
        assert_int_equal(r.n_shards, 1);
        qc_model *m;
        QC_CHECK_OK(qc_model_open(dir, &m));
        assert_int_equal(m->cfg.n_layers, 1);
        assert_int_equal(m->cfg.vocab_size, s.vocab_size);
        assert_int_equal(m->cfg.qk_norm, s.qk_norm);
        assert_int_equal(m->cfg.qkv_bias, s.qkv_bias);
        assert_int_equal(m->cfg.n_experts, s.n_experts);
        assert_int_equal(m->cfg.n_experts_per_tok, s.n_experts_per_tok);
        assert_int_equal(m->cfg.shared_expert_intermediate_size, s.shared_expert_intermediate_size);
        assert_int_equal(m->cfg.rope_type, s.rope_llama3 ? QC_ROPE_LLAMA3 : s.rope_linear ? QC_ROPE_LINEAR : QC_ROPE_DEFAULT);
        assert_int_equal(m->cfg.sliding_window, strcmp(s.model_type, "mistral") == 0  ? 4096
                                                : strcmp(s.model_type, "phi3") == 0   ? 2047
                                                : strcmp(s.model_type, "gemma2") == 0 ? 4096
                                                : strcmp(s.model_type, "gemma3_text") == 0 ? 1024 : 0);
        /* Gemma: what the preset's config.json says arrives in the parsed config */
        QC_CHECK_NEAR(m->cfg.attn_scalar, s.query_pre_attn_scalar, 0);
        QC_CHECK_NEAR(m->cfg.attn_softcap, s.attn_softcap, 0);
        QC_CHECK_NEAR(m->cfg.final_softcap, s.final_softcap, 0);
        QC_CHECK_NEAR(m->cfg.rope_local_theta, s.rope_local_base_freq, 0);
        if (strncmp(s.model_type, "gemma", 5) == 0) assert_int_equal(qc_layer_window(&m->cfg, 0), s.sliding_window);
        assert_string_equal(m->cfg.torch_dtype, "bfloat16");

        qc_tokenizer *tok;
        QC_CHECK_OK(qc_tokenizer_load(dir, &tok));
        const char *text = "Synthetic, not real: ñ ✓ 42\n";
        int32_t *ids;
        size_t n_ids;
        QC_CHECK_OK(qc_tokenizer_encode(tok, text, strlen(text), true, &ids, &n_ids));
        size_t bos = s.add_bos ? 1 : 0;
        assert_int_equal(n_ids, strlen(text) + bos); /* one token per byte */
        if (s.add_bos) assert_int_equal(ids[0], s.bos_token_id);
        for (size_t k = 0; k < n_ids; k++) assert_true(ids[k] >= 0 && ids[k] < s.vocab_size);
        assert_int_equal(qc_tokenizer_eos_id(tok), s.eos_token_id);
        char *back;
        size_t blen;
        QC_CHECK_OK(qc_tokenizer_decode(tok, ids, n_ids, true, &back, &blen));
        assert_string_equal(back, text);

        float *logits = malloc(sizeof(float) * 8 * (size_t)s.vocab_size);
        QC_CHECK_OK(qc_model_logits(m, ids, 8, logits));
        double sum = 0;
        for (size_t k = 0; k < 8 * (size_t)s.vocab_size; k++) {
            if (!isfinite(logits[k])) fail_msg("%s: logit %zu is %g", s.name, k, logits[k]);
            sum += fabs(logits[k]);
        }
        assert_true(sum > 0);
        free(logits);
        free(back);
        free(ids);
        qc_tokenizer_free(tok);
        qc_model_free(m);

        /* config.json declares itself synthetic and keeps the real layer count in the note */
        char *cfg_path = qc_path_join(dir, "config.json"), *cfg;
        size_t len;
        QC_CHECK_OK(qc_read_file(cfg_path, 0, &cfg, &len));
        assert_non_null(strstr(cfg, "\"qcal_synthetic\":\ttrue"));
        assert_non_null(strstr(cfg, "SYNTHETIC"));
        assert_non_null(strstr(cfg, "2 layers; this file has 1"));
        free(cfg);
        free(cfg_path);
        free(dir);
    }
}

/* A spec big enough for statistics: 256 x 512 linears (131072 elements each). */
static qc_synth_spec stats_spec(void) {
    qc_synth_spec s = tiny_of(qc_synth_find("qwen2.5-7b"));
    s.name = "stats";
    s.hidden_size = 256;
    s.intermediate_size = 512;
    s.n_heads = 8;
    s.n_kv_heads = 2;
    s.head_dim = 32;
    s.vocab_size = 151700;
    return s;
}

static void moments(const qc_tensor *t, double *mean, double *sd) {
    float *v = malloc(sizeof(float) * (size_t)t->numel);
    QC_CHECK_OK(qc_tensor_read_f32(t, 0, t->numel, v));
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t->numel; i++) s += v[i];
    *mean = s / (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = sqrt(s2 / (double)t->numel);
    free(v);
}

static void test_weight_statistics(void **state) {
    (void)state;
    qc_synth_spec s = stats_spec();
    qc_synth_opts o;
    qc_synth_opts_init(&o);
    o.seed = 7;
    char *dir = out_path("stats");
    QC_CHECK_OK(qc_synth_write(&s, &o, dir, NULL));
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    /* std 0.02 within 5% (the sampling error on 131072 values is ~0.2%; BF16 rounding adds < 0.1%) */
    const char *lin[] = {"model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                         "model.embed_tokens.weight", "lm_head.weight"};
    for (int i = 0; i < 4; i++) {
        const qc_tensor *t = qc_weights_find(w, lin[i]);
        assert_non_null(t);
        assert_int_equal(t->dtype, QC_DTYPE_BF16);
        double mean, sd;
        moments(t, &mean, &sd);
        QC_CHECK_NEAR(sd, 0.02, 0.05 * 0.02);
        QC_CHECK_NEAR(mean, 0, 0.02 * 0.02);
    }
    double mean, sd;
    moments(qc_weights_find(w, "model.layers.0.input_layernorm.weight"), &mean, &sd);
    QC_CHECK_NEAR(mean, 1.0, 0.01);
    QC_CHECK_NEAR(sd, 0.02, 0.005); /* 256 values: a looser bound */
    moments(qc_weights_find(w, "model.layers.0.self_attn.q_proj.bias"), &mean, &sd);
    QC_CHECK_NEAR(sd, 0.01, 0.003);
    /* the documented generator: element i of tensor t is qc_synth_normal(seed, t, i) scaled, in BF16;
     * the embedding is tensor 0 */
    const qc_tensor *emb = qc_weights_find(w, "model.embed_tokens.weight");
    float v[5];
    QC_CHECK_OK(qc_tensor_read_f32(emb, 1000, 5, v));
    for (int i = 0; i < 5; i++)
        QC_CHECK_NEAR(v[i], qc_bf16_to_f32(qc_f32_to_bf16(0.02f * qc_synth_normal(7, 0, 1000 + (uint64_t)i))), 0);
    /* the unit-variance generator itself, over 1e6 draws */
    double m1 = 0, m2 = 0;
    for (int i = 0; i < 1000000; i++) {
        double z = qc_synth_normal(3, 1, (uint64_t)i);
        m1 += z;
        m2 += z * z;
    }
    QC_CHECK_NEAR(m1 / 1e6, 0, 0.005);
    QC_CHECK_NEAR(m2 / 1e6, 1, 0.01);
    qc_weights_free(w);
    free(dir);
}

static void test_determinism(void **state) {
    (void)state;
    qc_synth_spec s = stats_spec();
    qc_synth_opts o;
    qc_synth_opts_init(&o);
    o.seed = 11;
    o.n_layers = 1;
    o.n_threads = 1;
    char *a = out_path("det"), *b = out_path("det"), *c = out_path("det");
    QC_CHECK_OK(qc_synth_write(&s, &o, a, NULL));
    o.n_threads = 3; /* thread count must not matter */
    QC_CHECK_OK(qc_synth_write(&s, &o, b, NULL));
    o.seed = 12;
    QC_CHECK_OK(qc_synth_write(&s, &o, c, NULL));
    const char *names[] = {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
                           "model.layers.0.self_attn.k_proj.bias"};
    for (int i = 0; i < 3; i++) {
        char ha[65], hb[65], hc[65];
        tensor_sha(a, names[i], ha);
        tensor_sha(b, names[i], hb);
        tensor_sha(c, names[i], hc);
        assert_string_equal(ha, hb);
        if (strcmp(ha, hc) == 0) fail_msg("%s: seeds 11 and 12 give the same bytes", names[i]);
    }
    /* gate and up of one layer differ (each tensor has its own stream) */
    char hg[65], hu[65];
    tensor_sha(a, "model.layers.0.mlp.gate_proj.weight", hg);
    tensor_sha(a, "model.layers.0.mlp.up_proj.weight", hu);
    assert_string_not_equal(hg, hu);
    free(a);
    free(b);
    free(c);
}

/* Small shards: several files + index, loadable by the sharded reader and the model; F16 storage. */
static void test_shards_and_f16(void **state) {
    (void)state;
    qc_synth_spec s = tiny_of(qc_synth_find("llama-3.1-8b"));
    s.vocab_size = 128256;
    qc_synth_opts o;
    qc_synth_opts_init(&o);
    o.dtype = QC_DTYPE_F16;
    o.max_shard_bytes = 4u << 20; /* the 8 MB embedding and head get a shard each */
    char *dir = out_path("shards");
    qc_synth_result r;
    QC_CHECK_OK(qc_synth_write(&s, &o, dir, &r));
    assert_true(r.n_shards >= 3);
    char *idx = qc_path_join(dir, "model.safetensors.index.json"), *one = qc_path_join(dir, "model.safetensors");
    assert_true(qc_file_exists(idx));
    assert_false(qc_file_exists(one));
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(dir, &w));
    assert_int_equal(qc_weights_total_bytes(w), r.bytes);
    assert_int_equal((int)qc_weights_count(w), r.n_tensors);
    assert_int_equal(qc_weights_find(w, "lm_head.weight")->dtype, QC_DTYPE_F16);
    qc_weights_free(w);
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    assert_string_equal(m->cfg.torch_dtype, "float16");
    qc_model_free(m);
    free(idx);
    free(one);
    free(dir);
}

static bool cancel_at_half(void *user, int64_t done, int64_t total, const char *what) {
    (void)what;
    ++*(int *)user;
    return done * 2 < total;
}

static void test_failures_leave_nothing(void **state) {
    (void)state;
    qc_synth_spec s = tiny_of(qc_synth_find("llama-2-7b"));
    qc_synth_opts o;
    qc_synth_opts_init(&o);
    char *dir = out_path("fail");
    const char *leaf = strrchr(dir, '/') + 1;

    o.n_layers = 3; /* more than the spec's 2 */
    QC_CHECK_FAILS(qc_synth_write(&s, &o, dir, NULL), QC_ERR_ARG, "layers must be in [1, 2]");
    o.n_layers = 0;
    o.dtype = QC_DTYPE_I32;
    QC_CHECK_FAILS(qc_synth_write(&s, &o, dir, NULL), QC_ERR_ARG, "dtype");
    o.dtype = QC_DTYPE_BF16;
    qc_synth_spec bad = s;
    bad.n_kv_heads = 3;
    QC_CHECK_FAILS(qc_synth_write(&bad, &o, dir, NULL), QC_ERR_ARG, "inconsistent shapes");
    bad = s;
    bad.vocab_size = 100; /* cannot hold 256 bytes */
    QC_CHECK_FAILS(qc_synth_write(&bad, &o, dir, NULL), QC_ERR_ARG, "vocabulary");

    /* cancelled half way: no output, no temporary directory */
    int calls = 0;
    o.progress = cancel_at_half;
    o.user = &calls;
    o.max_shard_bytes = 1u << 20;
    QC_CHECK_FAILS(qc_synth_write(&s, &o, dir, NULL), QC_ERR_CANCELLED, "cancelled");
    assert_true(calls > 0);
    assert_false(qc_dir_exists(dir));
    assert_int_equal(count_prefixed(leaf), 0);
    o.progress = NULL;

    /* an unwritable place: a path under a regular file */
    char *file = qc_path_join(qc_test_tmpdir(), "plainfile");
    QC_CHECK_OK(qc_write_file_atomic(file, "x", 1));
    char *under = qc_path_join(file, "model");
    QC_CHECK_FAILS(qc_synth_write(&s, &o, under, NULL), QC_ERR_IO, "cannot create");

    /* existing directory: refused without overwrite, replaced with it */
    QC_CHECK_OK(qc_synth_write(&s, &o, dir, NULL));
    char h1[65], h2[65];
    tensor_sha(dir, "lm_head.weight", h1);
    QC_CHECK_FAILS(qc_synth_write(&s, &o, dir, NULL), QC_ERR_ARG, "already exists");
    o.overwrite = true;
    o.seed = 5;
    QC_CHECK_OK(qc_synth_write(&s, &o, dir, NULL));
    tensor_sha(dir, "lm_head.weight", h2);
    assert_string_not_equal(h1, h2);
    assert_int_equal(count_prefixed(leaf), 1); /* only dir itself: no .tmp-/.old- leftovers */

    /* --tokenizer: copied when its ids fit, refused when they do not */
    o.overwrite = false;
    o.tokenizer_dir = dir;
    char *copy = out_path("tokcopy");
    QC_CHECK_OK(qc_synth_write(&s, &o, copy, NULL));
    qc_tokenizer *tok;
    QC_CHECK_OK(qc_tokenizer_load(copy, &tok));
    assert_int_equal(qc_tokenizer_bos_id(tok), 1);
    qc_tokenizer_free(tok);
    qc_synth_spec small = tiny_of(qc_synth_find("llama-2-7b"));
    small.vocab_size = 200; /* the copied tokenizer has ids up to 258 */
    char *copy2 = out_path("tokcopy");
    QC_CHECK_FAILS(qc_synth_write(&small, &o, copy2, NULL), QC_ERR_ARG, "beyond the vocabulary");
    assert_false(qc_dir_exists(copy2));
    free(copy);
    free(copy2);
    free(under);
    free(file);
    free(dir);
}

int main(void) {
    qc_log_set_level(QC_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_match_real_configs),
        cmocka_unit_test(test_tiny_models_load_and_run),
        cmocka_unit_test(test_weight_statistics),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_shards_and_f16),
        cmocka_unit_test(test_failures_leave_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
