/* test_gptq_format.c - GPTQ packing against the spec's constant vectors (A.2, A.3), the word-wise packers
 * against their bit-by-bit twins, dequantization against the formula (C.1/C.2), and whole checkpoints:
 * written from hand-made parts, read back through qc_weights/qc_gptq_load_linear, sharded, with their
 * config files, and the failure modes (nothing left behind). */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#define FMT_TEST_SEED 0x9e3779b97f4a7c15ull
#include "fmt_testutil.h"
#include "gptq_format.h"
#include "quant.h"
#include "safetensors.h"

static const int k_bits[] = {2, 3, 4, 8};

/* ---- helpers ---- */

/* Fills a layer: random codes/scales/bias, zeros sym (2^(b-1)) or random, g_idx trivial or act-order. */
static void fill_layer(qc_qlinear *q, bool act_order) {
    const int N = q->N, K = q->K, G = q->n_groups, maxq = (1 << q->bits) - 1;
    const int gs = q->group_size == -1 ? K : q->group_size;
    for (size_t i = 0; i < (size_t)N * K; i++) q->codes[i] = (uint8_t)(rnd() % (uint32_t)(maxq + 1));
    for (size_t i = 0; i < (size_t)G * N; i++) {
        q->scales[i] = 1e-3f + 1e-2f * rnd_unit();
        q->zeros[i] = q->sym ? 1 << (q->bits - 1) : (int32_t)(rnd() % (uint32_t)(maxq + 1));
    }
    if (act_order) {
        /* perm = a random processing order; g_idx[perm[j]] = j / gs */
        int *perm = malloc((size_t)K * sizeof *perm);
        assert_non_null(perm);
        for (int k = 0; k < K; k++) perm[k] = k;
        for (int k = K - 1; k > 0; k--) {
            int j = (int)(rnd() % (uint32_t)(k + 1)), t = perm[k];
            perm[k] = perm[j];
            perm[j] = t;
        }
        for (int j = 0; j < K; j++) q->g_idx[perm[j]] = j / gs;
        free(perm);
    }
    if (q->bias)
        for (int n = 0; n < N; n++) q->bias[n] = rnd_unit() - 0.5f;
}

/* Packs q both ways, checks the two agree, returns the fast version's buffers (caller frees). */
static void pack_both(const qc_qlinear *q, bool v2, int32_t **qw, int32_t **qz, uint16_t **s16) {
    size_t nw = (size_t)q->K * q->bits / 32 * q->N, nz = (size_t)q->n_groups * q->N * q->bits / 32;
    size_t ns = (size_t)q->n_groups * q->N;
    *qw = calloc(nw, 4);
    *qz = calloc(nz, 4);
    *s16 = calloc(ns, 2);
    int32_t *rw = calloc(nw, 4), *rz = calloc(nz, 4);
    uint16_t *rs = calloc(ns, 2);
    assert_true(*qw && *qz && *s16 && rw && rz && rs);
    QC_CHECK_OK(qc_gptq_pack(q, v2, *qw, *qz, *s16));
    QC_CHECK_OK(qc_gptq_pack_ref(q, v2, rw, rz, rs));
    for (size_t i = 0; i < nw; i++)
        if ((*qw)[i] != rw[i]) fail_msg("b=%d qweight word %zu: fast 0x%08x, plain 0x%08x", q->bits, i,
                                        (uint32_t)(*qw)[i], (uint32_t)rw[i]);
    for (size_t i = 0; i < nz; i++)
        if ((*qz)[i] != rz[i]) fail_msg("b=%d qzeros word %zu: fast 0x%08x, plain 0x%08x", q->bits, i,
                                        (uint32_t)(*qz)[i], (uint32_t)rz[i]);
    assert_memory_equal(*s16, rs, ns * 2);
    free(rw);
    free(rz);
    free(rs);
}

/* ---- constant vectors ---- */

/* A.2: 4-bit codes 0..7 down a column give 0x76543210. */
static void test_vector_4bit_word(void **state) {
    (void)state;
    qc_qlinear q;
    QC_CHECK_OK(qc_qlinear_alloc(&q, 32, 32, 4, -1, true, false));
    for (int k = 0; k < 32; k++) q.codes[5 * 32 + k] = (uint8_t)(k % 8); /* column n = 5 */
    for (int k = 0; k < 32; k++) q.scales[k] = 1.0f;
    int32_t *qw, *qz;
    uint16_t *s16;
    pack_both(&q, false, &qw, &qz, &s16);
    for (int r = 0; r < 4; r++) {
        assert_int_equal((uint32_t)qw[r * 32 + 5], 0x76543210u);
        assert_int_equal((uint32_t)qw[r * 32 + 4], 0u);
    }
    free(qw);
    free(qz);
    free(s16);
    qc_qlinear_free(&q);
}

/* A.3 table: sym qzeros words, v1 stores 2^(b-1)-1, v2 stores 2^(b-1). */
static void test_vector_sym_qzeros(void **state) {
    (void)state;
    static const uint32_t v1[4][3] = {{0x55555555u}, {0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du}, {0x77777777u},
                                      {0x7F7F7F7Fu}};
    static const uint32_t v2[4][3] = {{0xAAAAAAAAu}, {0x24924924u, 0x49249249u, 0x92492492u}, {0x88888888u},
                                      {0x80808080u}};
    for (int i = 0; i < 4; i++) {
        const int b = k_bits[i];
        for (int pass = 0; pass < 2; pass++) {
            qc_qlinear q;
            QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, b, 32, true, false));
            for (int j = 0; j < 2 * 64; j++) q.scales[j] = 0.5f;
            int32_t *qw, *qz;
            uint16_t *s16;
            pack_both(&q, pass == 1, &qw, &qz, &s16);
            const int words = 64 * b / 32; /* per qzeros row; the table pattern repeats */
            const uint32_t *want = pass ? v2[i] : v1[i];
            const int period = b == 3 ? 3 : 1;
            for (int g = 0; g < 2; g++)
                for (int w = 0; w < words; w++)
                    if ((uint32_t)qz[g * words + w] != want[w % period])
                        fail_msg("b=%d %s qzeros[%d][%d] = 0x%08x, spec 0x%08x", b, pass ? "v2" : "v1", g, w,
                                 (uint32_t)qz[g * words + w], want[w % period]);
            int32_t z[2 * 64];
            QC_CHECK_OK(qc_gptq_unpack(64, 64, b, 2, pass == 1, NULL, qz, NULL, NULL, z, NULL));
            for (int j = 0; j < 2 * 64; j++) assert_int_equal(z[j], 1 << (b - 1));
            free(qw);
            free(qz);
            free(s16);
            qc_qlinear_free(&q);
        }
    }
}

/* A.2's 3-bit table, written out per code: where each code's bits land in w0, w1, w2. */
static void expected_3bit(int j, uint32_t v, uint32_t w[3]) {
    w[0] = w[1] = w[2] = 0;
    if (j < 10) w[0] = v << (3 * j);
    else if (j == 10) { w[0] = (v & 3u) << 30; w[1] = (v >> 2) & 1u; }
    else if (j < 21) w[1] = v << (3 * (j - 11) + 1);
    else if (j == 21) { w[1] = (v & 1u) << 31; w[2] = (v >> 1) & 3u; }
    else w[2] = v << (3 * (j - 22) + 2);
}

static void test_vector_3bit_layout(void **state) {
    (void)state;
    for (uint32_t v = 1; v <= 7; v++)
        for (int j = 0; j < 32; j++) {
            qc_qlinear q;
            QC_CHECK_OK(qc_qlinear_alloc(&q, 32, 64, 3, -1, true, false));
            q.codes[0 * 64 + 32 + j] = (uint8_t)v; /* column 0, second chunk of 32: words 3..5 */
            for (int n = 0; n < 32; n++) q.scales[n] = 1.0f;
            int32_t *qw, *qz;
            uint16_t *s16;
            pack_both(&q, true, &qw, &qz, &s16);
            uint32_t want[3];
            expected_3bit(j, v, want);
            for (int r = 0; r < 6; r++) {
                uint32_t exp = r < 3 ? 0 : want[r - 3];
                if ((uint32_t)qw[r * 32] != exp)
                    fail_msg("3-bit code %d = %u: word %d is 0x%08x, table says 0x%08x", j, v, r, (uint32_t)qw[r * 32],
                             exp);
            }
            uint8_t codes[32 * 64];
            QC_CHECK_OK(qc_gptq_unpack(32, 64, 3, 1, true, qw, NULL, NULL, codes, NULL, NULL));
            assert_memory_equal(codes, q.codes, sizeof codes);
            free(qw);
            free(qz);
            free(s16);
            qc_qlinear_free(&q);
        }
}

/* ---- random round trips and twins ---- */

static void test_roundtrip_random(void **state) {
    (void)state;
    for (int iter = 0; iter < 48; iter++) {
        const int b = k_bits[iter % 4];
        const bool v2 = (iter / 4) % 2, sym = !v2 || (iter / 8) % 2, act = (iter / 16) % 2;
        const int N = 32 * (1 + (int)(rnd() % 4)), K = 32 * (1 + (int)(rnd() % 6));
        const int gs_pick[3] = {-1, 32, K};
        const int gs = gs_pick[rnd() % 3];
        qc_qlinear q;
        QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, b, gs, sym, false));
        fill_layer(&q, act);
        int32_t *qw, *qz;
        uint16_t *s16;
        pack_both(&q, v2, &qw, &qz, &s16);
        const int G = q.n_groups;
        uint8_t *codes = malloc((size_t)N * K), *codes_ref = malloc((size_t)N * K);
        int32_t *z = malloc((size_t)G * N * 4), *z_ref = malloc((size_t)G * N * 4);
        float *s = malloc((size_t)G * N * 4), *s_ref = malloc((size_t)G * N * 4);
        assert_true(codes && codes_ref && z && z_ref && s && s_ref);
        QC_CHECK_OK(qc_gptq_unpack(N, K, b, G, v2, qw, qz, s16, codes, z, s));
        QC_CHECK_OK(qc_gptq_unpack_ref(N, K, b, G, v2, qw, qz, s16, codes_ref, z_ref, s_ref));
        assert_memory_equal(codes, q.codes, (size_t)N * K);
        assert_memory_equal(codes_ref, q.codes, (size_t)N * K);
        assert_memory_equal(z, q.zeros, (size_t)G * N * 4);
        assert_memory_equal(z_ref, q.zeros, (size_t)G * N * 4);
        for (int i = 0; i < G * N; i++) {
            assert_true(s[i] == fp16_round(q.scales[i]));
            assert_true(s_ref[i] == s[i]);
        }
        free(codes);
        free(codes_ref);
        free(z);
        free(z_ref);
        free(s);
        free(s_ref);
        free(qw);
        free(qz);
        free(s16);
        qc_qlinear_free(&q);
    }
}

/* Word-wise unpack against the bit-by-bit twin on arbitrary words (every bit pattern, both zero
 * conventions, v1 fields at maxq included). */
static void test_unpack_fast_vs_plain(void **state) {
    (void)state;
    for (int iter = 0; iter < 16; iter++) {
        const int b = k_bits[iter % 4], N = 96, K = 160, G = 5;
        const bool v2 = iter % 8 >= 4;
        size_t nw = (size_t)K * b / 32 * N, nz = (size_t)G * N * b / 32;
        int32_t *qw = malloc(nw * 4), *qz = malloc(nz * 4);
        uint16_t *s16 = malloc((size_t)G * N * 2);
        assert_true(qw && qz && s16);
        for (size_t i = 0; i < nw; i++) qw[i] = (int32_t)rnd() ^ (int32_t)(rnd() << 16);
        for (size_t i = 0; i < nz; i++) qz[i] = (int32_t)rnd() ^ (int32_t)(rnd() << 16);
        for (int i = 0; i < G * N; i++) s16[i] = (uint16_t)(rnd() & 0x7bff);
        uint8_t c1[96 * 160], c2[96 * 160];
        int32_t z1[5 * 96], z2[5 * 96];
        float s1[5 * 96], s2[5 * 96];
        QC_CHECK_OK(qc_gptq_unpack(N, K, b, G, v2, qw, qz, s16, c1, z1, s1));
        QC_CHECK_OK(qc_gptq_unpack_ref(N, K, b, G, v2, qw, qz, s16, c2, z2, s2));
        assert_memory_equal(c1, c2, sizeof c1);
        assert_memory_equal(z1, z2, sizeof z1);
        assert_memory_equal(s1, s2, sizeof s1);
        for (size_t i = 0; i < sizeof c1; i++) assert_true(c1[i] < (1u << b));
        for (int i = 0; i < G * N; i++) assert_true(z1[i] >= (v2 ? 0 : 1) && z1[i] <= (1 << b) - (v2 ? 1 : 0));
        free(qw);
        free(qz);
        free(s16);
    }
}

/* ---- dequantization ---- */

static void test_dequant_formula(void **state) {
    (void)state;
    qc_qlinear q;
    const int N = 64, K = 128;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 3, 32, false, false));
    fill_layer(&q, true);
    float *W = malloc((size_t)N * K * 4);
    assert_non_null(W);
    qc_qlinear_dequant(&q, W);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int g = q.g_idx[k];
            float want = q.scales[g * N + n] * (float)((int)q.codes[n * K + k] - q.zeros[g * N + n]);
            if (W[n * K + k] != want) fail_msg("W[%d][%d] = %.9g, formula %.9g", n, k, (double)W[n * K + k],
                                               (double)want);
        }
    /* C.4.2: what a loader computes from our tensors equals the fake-quant weight with fp16 scales */
    int32_t *qw, *qz;
    uint16_t *s16;
    pack_both(&q, true, &qw, &qz, &s16);
    qc_qlinear u;
    QC_CHECK_OK(qc_qlinear_alloc(&u, N, K, 3, 32, false, false));
    QC_CHECK_OK(qc_gptq_unpack(N, K, 3, q.n_groups, true, qw, qz, s16, u.codes, u.zeros, u.scales));
    memcpy(u.g_idx, q.g_idx, (size_t)K * 4);
    for (int i = 0; i < q.n_groups * N; i++) q.scales[i] = fp16_round(q.scales[i]);
    float *W1 = malloc((size_t)N * K * 4), *W2 = malloc((size_t)N * K * 4);
    assert_true(W1 && W2);
    qc_qlinear_dequant(&q, W1);
    qc_qlinear_dequant(&u, W2);
    check_float_equal(W1, W2, (size_t)N * K, "loader dequant vs fake-quant (fp16 scales)");
    /* and fp16(W) is the fp16 product the torch fallback computes: the fp32 product is exact */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int g = q.g_idx[k];
            double exact = (double)q.scales[g * N + n] * ((int)q.codes[n * K + k] - q.zeros[g * N + n]);
            assert_true((double)W1[n * K + k] == exact);
        }
    free(W);
    free(W1);
    free(W2);
    free(qw);
    free(qz);
    free(s16);
    qc_qlinear_free(&q);
    qc_qlinear_free(&u);
}

static void test_pack_rejects(void **state) {
    (void)state;
    qc_qlinear q;
    int32_t qw[64 * 64 * 4 / 32], qz[2 * 64 * 4 / 32];
    uint16_t s16[128];
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, 32, false, false));
    fill_layer(&q, false);
    QC_CHECK_FAILS(qc_gptq_pack(&q, false, qw, qz, s16), QC_ERR_ARG, "gptq_v2");
    QC_CHECK_FAILS(qc_gptq_pack_ref(&q, false, qw, qz, s16), QC_ERR_ARG, "awq");
    QC_CHECK_OK(qc_gptq_pack(&q, true, qw, qz, s16));
    q.codes[7] = 16;
    QC_CHECK_FAILS(qc_gptq_pack(&q, true, qw, qz, s16), QC_ERR_ARG, "maxq");
    q.codes[7] = 15;
    q.scales[3] = 1e6f;
    QC_CHECK_FAILS(qc_gptq_pack(&q, true, qw, qz, s16), QC_ERR_NUMERIC, "fp16");
    q.scales[3] = 0.01f;
    q.g_idx[5] = 2;
    QC_CHECK_FAILS(qc_gptq_pack(&q, true, qw, qz, s16), QC_ERR_ARG, "g_idx[5]");
    q.g_idx[5] = 0;
    q.sym = true; /* zeros are random: not 2^(b-1) */
    QC_CHECK_FAILS(qc_gptq_pack(&q, true, qw, qz, s16), QC_ERR_ARG, "sym");
    qc_qlinear_free(&q);

    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 48, 4, 16, true, false));
    QC_CHECK_FAILS(qc_gptq_pack(&q, false, qw, qz, s16), QC_ERR_ARG, "multiple of 32");
    qc_qlinear_free(&q);
    QC_CHECK_FAILS(qc_qlinear_alloc(&q, 64, 64, 4, 48, true, false), QC_ERR_ARG, "group_size");
    QC_CHECK_FAILS(qc_qlinear_alloc(&q, 64, 64, 5, 32, true, false), QC_ERR_ARG, "bits");
    const char *why = NULL;
    assert_false(qc_gptq_shape_ok(40, 64, 4, 32, &why));
    assert_non_null(strstr(why, "out_features"));
    assert_true(qc_gptq_shape_ok(32, 64, 3, -1, &why));
    assert_null(why);
}

/* ---- checkpoints ---- */

#define D 64   /* hidden size */
#define I 128  /* intermediate size */
#define V 96   /* vocabulary */
#define NQ 4

static const char *const k_mod[NQ] = {
    "model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj",
    "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj",
};

typedef struct {
    const char *root, *model, *out;
    char *parts[4];
    int n_parts;
    qc_qlinear q[NQ];
    float embed[V * D], lm_head[V * D], norm[D], ln[2][D], gate[8 * D];
    qc_gptq_config cfg;
} ckpt;

typedef struct { const char *name; qc_dtype dt; int nd; int64_t shape[2]; const void *data; } tdesc;

static void write_st(const char *path, const tdesc *t, int n) {
    qc_st_writer *w;
    QC_CHECK_OK(qc_st_writer_create(path, &w));
    for (int i = 0; i < n; i++) QC_CHECK_OK(qc_st_writer_add(w, t[i].name, t[i].dt, t[i].nd, t[i].shape));
    QC_CHECK_OK(qc_st_writer_begin(w));
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)t[i].shape[0] * (t[i].nd == 2 ? (size_t)t[i].shape[1] : 1);
        QC_CHECK_OK(qc_st_writer_write(w, t[i].data, numel * qc_dtype_size(t[i].dt)));
    }
    QC_CHECK_OK(qc_st_writer_finish(w));
}

typedef struct {
    int bits, group_size;
    bool sym, v2, desc_act, tied, with_gate, lm_head_in_parts;
} ckpt_opts;

/* A model dir (config.json, tokenizer.json, generation_config.json) and its parts: one per layer from
 * qc_gptq_write_part, and one with the float tensors in mixed dtypes (F32, BF16, F16). */
static void ckpt_make(ckpt *c, const ckpt_opts *o) {
    memset(c, 0, sizeof *c);
    c->root = new_dir("ckpt");
    char *m = join(c->root, "model");
    char *out = join(c->root, "out");
    c->model = m;
    c->out = out;
    if (mkdir(m, 0755) != 0) fail_msg("mkdir %s", m);
    char cfgtext[1024];
    snprintf(cfgtext, sizeof cfgtext,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d,\n"
             " \"intermediate_size\": %d, \"vocab_size\": %d, \"num_hidden_layers\": 2,\n"
             " \"tie_word_embeddings\": %s, \"torch_dtype\": \"bfloat16\", \"dtype\": \"bfloat16\",\n"
             " \"rope_scaling\": null}\n", D, I, V, o->tied ? "true" : "false");
    char *p = join(m, "config.json");
    write_text(p, cfgtext);
    free(p);
    write_text(p = join(m, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}, \"x\": \"\\u00e9\"}");
    free(p);
    write_text(p = join(m, "generation_config.json"), "{\"bos_token_id\": 1}");
    free(p);

    const int shapes[NQ][2] = {{D, I}, {D, D}, {D, I}, {D, D}}; /* N, K */
    for (int i = 0; i < NQ; i++) {
        QC_CHECK_OK(qc_qlinear_alloc(&c->q[i], shapes[i][0], shapes[i][1], o->bits, o->group_size, o->sym, i % 2));
        fill_layer(&c->q[i], o->desc_act);
    }
    for (int L = 0; L < 2; L++) {
        char name[64];
        snprintf(name, sizeof name, "layer%d.safetensors", L);
        c->parts[c->n_parts] = join(c->root, name);
        const qc_qlinear *ls[2] = {&c->q[2 * L], &c->q[2 * L + 1]};
        QC_CHECK_OK(qc_gptq_write_part(c->parts[c->n_parts], ls, &k_mod[2 * L], 2, o->v2));
        c->n_parts++;
    }
    for (int i = 0; i < V * D; i++) {
        c->embed[i] = rnd_unit() - 0.5f;
        c->lm_head[i] = rnd_unit() - 0.5f;
    }
    uint16_t norm_bf16[D], ln16[2][D], lm16[V * D];
    for (int i = 0; i < D; i++) {
        norm_bf16[i] = qc_f32_to_bf16(1.0f + rnd_unit());
        c->norm[i] = qc_bf16_to_f32(norm_bf16[i]);
        for (int L = 0; L < 2; L++) {
            ln16[L][i] = qc_f32_to_fp16(1.0f + rnd_unit());
            c->ln[L][i] = qc_fp16_to_f32(ln16[L][i]);
        }
    }
    for (int i = 0; i < V * D; i++) lm16[i] = qc_f32_to_fp16(c->lm_head[i]);
    for (int i = 0; i < 8 * D; i++) c->gate[i] = rnd_unit() - 0.5f;
    tdesc t[6] = {
        {"model.embed_tokens.weight", QC_DTYPE_F32, 2, {V, D}, c->embed},
        {"model.norm.weight", QC_DTYPE_BF16, 1, {D, 0}, norm_bf16},
        {"model.layers.0.input_layernorm.weight", QC_DTYPE_F16, 1, {D, 0}, ln16[0]},
        {"model.layers.1.input_layernorm.weight", QC_DTYPE_F16, 1, {D, 0}, ln16[1]},
    };
    int nt = 4;
    if (o->lm_head_in_parts) t[nt++] = (tdesc){"lm_head.weight", QC_DTYPE_F16, 2, {V, D}, lm16};
    if (o->with_gate) t[nt++] = (tdesc){"model.layers.0.mlp.gate.weight", QC_DTYPE_F32, 2, {8, D}, c->gate};
    c->parts[c->n_parts] = join(c->root, "rest.safetensors");
    write_st(c->parts[c->n_parts++], t, nt);

    c->cfg = (qc_gptq_config){.bits = o->bits, .group_size = o->group_size, .sym = o->sym, .desc_act = o->desc_act,
                              .v2 = o->v2, .true_sequential = true, .damp_percent = 0.01,
                              .quantizer = "qcal:test", .meta_json = "{\"recipe_sha256\": \"abc123\"}"};
}

static void ckpt_free(ckpt *c) {
    for (int i = 0; i < NQ; i++) qc_qlinear_free(&c->q[i]);
    for (int i = 0; i < c->n_parts; i++) free(c->parts[i]);
    free((char *)c->model);
    free((char *)c->out);
}

static qc_status ckpt_write(ckpt *c, uint64_t max_shard, bool overwrite) {
    return qc_gptq_write_checkpoint(c->out, c->model, (const char *const *)c->parts, c->n_parts, &c->cfg, NULL, 0,
                                    max_shard, overwrite);
}

/* Reads the checkpoint back: every quantized module through qc_gptq_load_linear must equal the
 * fake-quant weight with fp16-rounded scales, bit for bit; float tensors must be the F16 of the input. */
static void ckpt_check_readback(ckpt *c, bool lm_head_expected) {
    bool is_gptq = false;
    qc_gptq_config got;
    QC_CHECK_OK(qc_gptq_detect(c->out, &is_gptq, &got));
    assert_true(is_gptq);
    assert_int_equal(got.bits, c->cfg.bits);
    assert_int_equal(got.group_size, c->cfg.group_size);
    assert_int_equal(got.sym, c->cfg.sym);
    assert_int_equal(got.desc_act, c->cfg.desc_act);
    assert_int_equal(got.v2, c->cfg.v2);
    assert_int_equal(got.static_groups, c->cfg.static_groups);
    assert_int_equal(got.true_sequential, c->cfg.true_sequential);
    assert_true(got.damp_percent == c->cfg.damp_percent);

    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(c->out, &w));
    for (size_t i = 0; i < qc_weights_count(w); i++) {
        const char *nm = qc_weights_get(w, i)->name;
        assert_true(strcmp(nm, "gptq_bits") != 0 && strcmp(nm, "gptq_groupsize") != 0);
        assert_null(strstr(nm, "proj.weight")); /* no float copy of a quantized Linear */
    }
    for (int i = 0; i < NQ; i++) {
        qc_qlinear *q = &c->q[i];
        qc_qlinear e;
        QC_CHECK_OK(qc_qlinear_alloc(&e, q->N, q->K, q->bits, q->group_size, q->sym, false));
        memcpy(e.codes, q->codes, (size_t)q->N * q->K);
        memcpy(e.zeros, q->zeros, (size_t)q->n_groups * q->N * 4);
        memcpy(e.g_idx, q->g_idx, (size_t)q->K * 4);
        for (int j = 0; j < q->n_groups * q->N; j++) e.scales[j] = fp16_round(q->scales[j]);
        float *want = malloc((size_t)q->N * q->K * 4), *W = malloc((size_t)q->N * q->K * 4), bias[D];
        assert_true(want && W);
        qc_qlinear_dequant(&e, want);
        bool has_bias = !q->bias;
        QC_CHECK_OK(qc_gptq_load_linear(w, k_mod[i], &got, q->N, q->K, W, bias, &has_bias));
        check_float_equal(W, want, (size_t)q->N * q->K, k_mod[i]);
        assert_int_equal(has_bias, q->bias != NULL);
        for (int n = 0; q->bias && n < q->N; n++) assert_true(bias[n] == fp16_round(q->bias[n]));
        free(want);
        free(W);
        qc_qlinear_free(&e);
    }
    const struct { const char *name; const float *v; int n; } fl[] = {
        {"model.embed_tokens.weight", c->embed, V * D}, {"model.norm.weight", c->norm, D},
        {"model.layers.0.input_layernorm.weight", c->ln[0], D}, {"model.layers.1.input_layernorm.weight", c->ln[1], D},
    };
    static float buf[V * D];
    for (size_t i = 0; i < sizeof fl / sizeof *fl; i++) {
        const qc_tensor *t = qc_weights_find(w, fl[i].name);
        if (!t) fail_msg("%s missing from the checkpoint", fl[i].name);
        assert_int_equal(t->dtype, QC_DTYPE_F16);
        QC_CHECK_OK(qc_tensor_read_f32(t, 0, fl[i].n, buf));
        for (int j = 0; j < fl[i].n; j++)
            if (buf[j] != fp16_round(fl[i].v[j])) fail_msg("%s[%d] = %g, want %g", fl[i].name, j, (double)buf[j],
                                                           (double)fp16_round(fl[i].v[j]));
    }
    const qc_tensor *lm = qc_weights_find(w, "lm_head.weight");
    assert_int_equal(lm != NULL, lm_head_expected);
    if (lm) {
        QC_CHECK_OK(qc_tensor_read_f32(lm, 0, V * D, buf));
        for (int j = 0; j < V * D; j++) assert_true(buf[j] == fp16_round(c->lm_head[j]));
    }
    qc_weights_free(w);
    assert_int_equal(count_prefixed(c->root, "out.tmp-"), 0);
    assert_int_equal(count_prefixed(c->root, "out.old-"), 0);
}

static void ckpt_roundtrip(const ckpt_opts *o) {
    ckpt c;
    ckpt_make(&c, o);
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    ckpt_check_readback(&c, o->lm_head_in_parts && !o->tied);
    ckpt_free(&c);
}

static void test_ckpt_roundtrip_all_bits(void **state) {
    (void)state;
    for (int i = 0; i < 4; i++) {
        const int b = k_bits[i];
        ckpt_roundtrip(&(ckpt_opts){.bits = b, .group_size = 32, .sym = true, .lm_head_in_parts = true});
        ckpt_roundtrip(&(ckpt_opts){.bits = b, .group_size = 32, .sym = true, .desc_act = true});
        ckpt_roundtrip(&(ckpt_opts){.bits = b, .group_size = -1, .sym = false, .v2 = true, .lm_head_in_parts = true});
        ckpt_roundtrip(&(ckpt_opts){.bits = b, .group_size = 64, .sym = false, .v2 = true, .desc_act = true});
    }
}

/* One safetensors file, its header read back independently with cJSON: tiling and __metadata__. */
static void check_shard_header(const char *path, cJSON *weight_map, const char *shard_name, uint64_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | len8[i];
    assert_true(hl < 1u << 20 && (8 + hl) % 8 == 0);
    char *h = malloc(hl + 1);
    assert_non_null(h);
    assert_int_equal(fread(h, 1, hl, f), hl);
    h[hl] = '\0';
    fseek(f, 0, SEEK_END);
    uint64_t fsize = (uint64_t)ftell(f);
    fclose(f);
    cJSON *j = cJSON_Parse(h);
    free(h);
    assert_non_null(j);
    cJSON *md = cJSON_GetObjectItemCaseSensitive(j, "__metadata__");
    assert_true(cJSON_IsObject(md));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(md, "format")->valuestring, "pt");
    for (cJSON *it = md->child; it; it = it->next) assert_true(cJSON_IsString(it));
    /* offsets tile the data section from 0 in header order (the writer keeps declaration order) */
    uint64_t off = 0;
    for (cJSON *it = j->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) continue;
        cJSON *o = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        assert_true((uint64_t)cJSON_GetArrayItem(o, 0)->valuedouble == off);
        off = (uint64_t)cJSON_GetArrayItem(o, 1)->valuedouble;
        if (weight_map) {
            cJSON *m = cJSON_GetObjectItemCaseSensitive(weight_map, it->string);
            if (!m) fail_msg("%s: tensor %s is not in the weight_map", path, it->string);
            assert_string_equal(m->valuestring, shard_name);
        }
    }
    assert_true(8 + hl + off == fsize);
    *bytes += off;
    cJSON_Delete(j);
}

static void test_ckpt_sharded(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true, .lm_head_in_parts = true});
    QC_CHECK_OK(ckpt_write(&c, 8192, false));
    char *single = join(c.out, "model.safetensors");
    assert_false(path_exists(single));
    free(single);
    char *ip = join(c.out, "model.safetensors.index.json");
    cJSON *idx = read_json(ip);
    free(ip);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    double total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(idx, "metadata"),
                                                    "total_size")->valuedouble;
    /* shard names model-0000i-of-0000n, every one referenced, tensors never split */
    int n_files = count_prefixed(c.out, "model-");
    assert_true(n_files >= 3);
    uint64_t bytes = 0;
    int map_entries = cJSON_GetArraySize(map);
    for (int i = 0; i < n_files; i++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i + 1, n_files);
        char *p = join(c.out, name);
        if (!path_exists(p)) fail_msg("%s missing", p);
        check_shard_header(p, map, name, &bytes);
        qc_safetensors *f;
        QC_CHECK_OK(qc_safetensors_open(p, &f));
        /* the 8 KiB limit holds unless a shard is one tensor bigger than it (the 24 KiB embeddings) */
        uint64_t sz = 0;
        for (size_t t = 0; t < qc_safetensors_count(f); t++) sz += qc_safetensors_get(f, t)->nbytes;
        assert_true(sz <= 8192 || qc_safetensors_count(f) == 1);
        map_entries -= (int)qc_safetensors_count(f);
        qc_safetensors_free(f);
        free(p);
    }
    assert_int_equal(map_entries, 0);
    assert_true((double)bytes == total);
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(c.out, &w));
    assert_true((double)qc_weights_total_bytes(w) == total);
    assert_int_equal(qc_weights_count(w), (size_t)cJSON_GetArraySize(map));
    qc_weights_free(w);
    cJSON_Delete(idx);
    ckpt_check_readback(&c, true);
    ckpt_free(&c);
}

/* Part shards (ckpt_write.h): parts written as the pipeline writes them (F16, the shard metadata) become the
 * shards by hard links, in parts order, when the data exceed the limit and each part fits; anything else
 * takes the sorted copy. */
static void test_ckpt_part_shards(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true, .lm_head_in_parts = true});
    qc_shard_meta sm;
    qc_gptq_shard_meta(&c.cfg, &sm);
    const int order[3] = {2, 0, 1}; /* the pipeline's: the base part first, then the layers */
    char *pp[3], *bare[3], *f32[3], *extra[3], *other[3];
    qc_gptq_config c2 = c.cfg;
    c2.damp_percent = 0.02;
    qc_shard_meta sm2;
    qc_gptq_shard_meta(&c2, &sm2);
    uint64_t total = 0, largest = 0;
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "pp-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], pp[k] = join(c.root, name), qc_shard_meta_pairs(&sm), sm.n, false, false);
        snprintf(name, sizeof name, "bare-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], bare[k] = join(c.root, name), NULL, 0, false, false);
        snprintf(name, sizeof name, "f32-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], f32[k] = join(c.root, name), qc_shard_meta_pairs(&sm), sm.n, true, false);
        snprintf(name, sizeof name, "extra-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], extra[k] = join(c.root, name), qc_shard_meta_pairs(&sm), sm.n, false, k == 1);
        snprintf(name, sizeof name, "other-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], other[k] = join(c.root, name),
                            qc_shard_meta_pairs(k == 2 ? &sm2 : &sm), sm.n, false, false);
        uint64_t b = st_data_bytes(pp[k]);
        total += b;
        if (b > largest) largest = b;
    }
    assert_true(largest < total);
    const char *const *P = (const char *const *)pp;
#define WRITE(parts, limit) QC_CHECK_OK(qc_gptq_write_checkpoint(c.out, c.model, (const char *const *)(parts), 3, \
                                                                  &c.cfg, NULL, 0, (limit), true))
    /* the parts as the shards, linked; the checkpoint reads back as the copy did */
    WRITE(P, largest);
    check_part_shards(c.out, pp, 3, false);
    ckpt_check_readback(&c, true);
    /* the limit exactly the total: one shard holds it all, the copy as before */
    WRITE(P, total);
    check_copy_layout(c.out, pp, 3);
    assert_int_equal(count_prefixed(c.out, "model-"), 0);
    /* a part over the limit; parts without the metadata, with one key more, or one value different; an F32
     * tensor to convert: the sorted copy, as before */
    WRITE(P, largest - 1);
    check_copy_layout(c.out, pp, 3);
    assert_true(count_prefixed(c.out, "model-") >= 2);
    WRITE(bare, largest);
    check_copy_layout(c.out, bare, 3);
    WRITE(extra, largest);
    check_copy_layout(c.out, extra, 3);
    WRITE(other, largest);
    check_copy_layout(c.out, other, 3);
    WRITE(f32, st_data_bytes(pp[0]));
    check_copy_layout(c.out, f32, 3);
    ckpt_check_readback(&c, true);
    /* the links survive the parts' removal (the work directory goes after a run) */
    WRITE(P, largest);
    for (int k = 0; k < 3; k++) assert_int_equal(unlink(pp[k]), 0);
    ckpt_check_readback(&c, true);

    /* parts on another file system: copied, byte for byte, in the same layout */
    struct stat a, b;
    char shm[] = "/dev/shm/qcal-test-XXXXXX";
    if (stat("/dev/shm", &a) == 0 && stat(c.root, &b) == 0 && a.st_dev != b.st_dev && mkdtemp(shm)) {
        char *sp[3];
        for (int k = 0; k < 3; k++) {
            char name[64];
            snprintf(name, sizeof name, "p%d.safetensors", k);
            write_pipeline_part(c.parts[order[k]], sp[k] = join(shm, name), qc_shard_meta_pairs(&sm), sm.n, false, false);
        }
        WRITE(sp, largest);
        check_part_shards(c.out, sp, 3, true);
        ckpt_check_readback(&c, true);
        for (int k = 0; k < 3; k++) {
            unlink(sp[k]);
            free(sp[k]);
        }
        rmdir(shm);
    } else {
        printf("# part shards across file systems: skipped (/dev/shm is not another file system here)\n");
    }
#undef WRITE
    for (int k = 0; k < 3; k++) {
        unlink(bare[k]), unlink(f32[k]), unlink(extra[k]), unlink(other[k]);
        free(pp[k]), free(bare[k]), free(f32[k]), free(extra[k]), free(other[k]);
    }
    ckpt_free(&c);
}

static const cJSON *jget(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("key '%s' missing", k);
    return v;
}

static void test_ckpt_config_files(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 3, .group_size = 64, .sym = true, .desc_act = true});
    c.cfg.static_groups = false;
    c.cfg.damp_percent = 0.025;
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    char *p = join(c.out, "config.json");
    cJSON *cfg = read_json(p);
    free(p);
    p = join(c.out, "quantize_config.json");
    cJSON *qfile = read_json(p);
    free(p);
    assert_string_equal(jget(cfg, "torch_dtype")->valuestring, "float16");
    assert_string_equal(jget(cfg, "dtype")->valuestring, "float16");
    assert_int_equal(jget(cfg, "hidden_size")->valueint, D);
    assert_true(cJSON_IsNull(jget(cfg, "rope_scaling")));
    const cJSON *q = jget(cfg, "quantization_config");
    assert_true(cJSON_Compare(q, qfile, true));
    assert_string_equal(jget(q, "quant_method")->valuestring, "gptq");
    assert_int_equal(jget(q, "bits")->valueint, 3);
    assert_int_equal(jget(q, "group_size")->valueint, 64);
    assert_true(cJSON_IsTrue(jget(q, "desc_act")));
    assert_true(cJSON_IsTrue(jget(q, "sym")));
    assert_string_equal(jget(q, "checkpoint_format")->valuestring, "gptq");
    assert_true(jget(q, "damp_percent")->valuedouble == 0.025);
    assert_true(cJSON_IsTrue(jget(q, "true_sequential")));
    assert_true(cJSON_IsFalse(jget(q, "static_groups")));
    assert_true(cJSON_IsFalse(jget(q, "lm_head")));
    assert_true(cJSON_IsNull(jget(q, "model_name_or_path")));
    assert_string_equal(jget(q, "model_file_base_name")->valuestring, "model");
    assert_string_equal(jget(q, "pack_dtype")->valuestring, "int32");
    assert_null(cJSON_GetObjectItemCaseSensitive(q, "modules_in_block_to_quantize")); /* all quantized */
    const cJSON *meta = jget(q, "meta");
    assert_string_equal(cJSON_GetArrayItem(jget(meta, "quantizer"), 0)->valuestring, "qcal:test");
    assert_true(jget(meta, "damp_percent")->valuedouble == 0.025);
    assert_true(cJSON_IsFalse(jget(meta, "static_groups")));
    assert_true(cJSON_IsTrue(jget(meta, "true_sequential")));
    assert_string_equal(jget(meta, "recipe_sha256")->valuestring, "abc123");
    cJSON_Delete(cfg);
    cJSON_Delete(qfile);

    /* side files copied byte for byte; absent ones not invented */
    const char *copied[] = {"tokenizer.json", "generation_config.json"};
    for (int i = 0; i < 2; i++) {
        char *a = join(c.model, copied[i]), *b = join(c.out, copied[i]), *x, *y;
        size_t lx, ly;
        QC_CHECK_OK(qc_read_file(a, 0, &x, &lx));
        QC_CHECK_OK(qc_read_file(b, 0, &y, &ly));
        assert_int_equal(lx, ly);
        assert_memory_equal(x, y, lx);
        free(a), free(b), free(x), free(y);
    }
    p = join(c.out, "tokenizer.model");
    assert_false(path_exists(p));
    free(p);
    p = join(c.out, "model.safetensors.index.json");
    assert_false(path_exists(p));
    free(p);
    /* shard metadata: format pt plus the informational strings */
    p = join(c.out, "model.safetensors");
    qc_safetensors *f;
    QC_CHECK_OK(qc_safetensors_open(p, &f));
    assert_string_equal(qc_safetensors_meta(f, "format"), "pt");
    assert_string_equal(qc_safetensors_meta(f, "gptq_bits"), "3");
    assert_string_equal(qc_safetensors_meta(f, "gptq_checkpoint_format"), "gptq");
    uint64_t bytes = 0;
    check_shard_header(p, NULL, NULL, &bytes);
    qc_safetensors_free(f);
    free(p);
    ckpt_free(&c);
}

/* A.5: a Linear left in float inside a block must be declared through modules_in_block_to_quantize. */
static void test_ckpt_unquantized_modules(void **state) {
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        ckpt c;
        ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true, .with_gate = true});
        const char *unq[] = {"model.layers.0.mlp.gate"};
        QC_CHECK_OK(qc_gptq_write_checkpoint(c.out, c.model, (const char *const *)c.parts, c.n_parts, &c.cfg,
                                             pass ? unq : NULL, pass ? 1 : 0, 0, false));
        char *p = join(c.out, "config.json");
        cJSON *cfg = read_json(p);
        free(p);
        const cJSON *l = jget(jget(cfg, "quantization_config"), "modules_in_block_to_quantize");
        assert_int_equal(cJSON_GetArraySize(l), 1);
        const cJSON *inner = cJSON_GetArrayItem(l, 0);
        assert_int_equal(cJSON_GetArraySize(inner), 2);
        assert_string_equal(cJSON_GetArrayItem(inner, 0)->valuestring, "mlp.down_proj");
        assert_string_equal(cJSON_GetArrayItem(inner, 1)->valuestring, "self_attn.q_proj");
        /* GPTQModel ignores that list: only a `dynamic` "-:" rule (a Python regex, re.match) keeps it from
         * building the router as a quantized module */
        const cJSON *dyn = jget(jget(cfg, "quantization_config"), "dynamic");
        assert_true(cJSON_IsObject(dyn));
        assert_int_equal(cJSON_GetArraySize(dyn), 1);
        assert_string_equal(dyn->child->string, "-:^model\\.layers\\.0\\.mlp\\.gate$");
        assert_true(cJSON_IsObject(dyn->child) && !dyn->child->child);
        cJSON_Delete(cfg);
        qc_weights *w;
        QC_CHECK_OK(qc_weights_open(c.out, &w));
        const qc_tensor *t = qc_weights_find(w, "model.layers.0.mlp.gate.weight");
        assert_non_null(t);
        assert_int_equal(t->dtype, QC_DTYPE_F16);
        qc_weights_free(w);
        ckpt_free(&c);
    }
    /* gate_proj and up_proj both kept: vLLM asks `dynamic` about its fused gate_up_proj, which gets a rule */
    {
        ckpt c;
        ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true});
        float *x = malloc((size_t)D * D * sizeof *x);
        assert_non_null(x);
        for (int i = 0; i < D * D; i++) x[i] = rnd_unit() - 0.5f;
        c.parts[c.n_parts] = join(c.root, "mlp.safetensors");
        write_st(c.parts[c.n_parts++], (tdesc[]){{"model.layers.0.mlp.gate_proj.weight", QC_DTYPE_F32, 2, {D, D}, x},
                                                 {"model.layers.0.mlp.up_proj.weight", QC_DTYPE_F32, 2, {D, D}, x}}, 2);
        free(x);
        QC_CHECK_OK(ckpt_write(&c, 0, false));
        char *p = join(c.out, "config.json");
        cJSON *cfg = read_json(p);
        free(p);
        const cJSON *dyn = jget(jget(cfg, "quantization_config"), "dynamic");
        const char *want[] = {"-:^model\\.layers\\.0\\.mlp\\.gate_proj$", "-:^model\\.layers\\.0\\.mlp\\.up_proj$",
                              "-:^model\\.layers\\.0\\.mlp\\.gate_up_proj$"};
        assert_int_equal(cJSON_GetArraySize(dyn), 3);
        for (int i = 0; i < 3; i++) assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(dyn, want[i])));
        cJSON_Delete(cfg);
        ckpt_free(&c);
    }
    /* declared unquantized but actually quantized, or absent */
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true});
    const char *bad1[] = {"model.layers.1.self_attn.q_proj"}, *bad2[] = {"model.layers.1.mlp.gate"};
    QC_CHECK_FAILS(qc_gptq_write_checkpoint(c.out, c.model, (const char *const *)c.parts, c.n_parts, &c.cfg, bad1, 1, 0,
                                            false), QC_ERR_ARG, "qweight");
    QC_CHECK_FAILS(qc_gptq_write_checkpoint(c.out, c.model, (const char *const *)c.parts, c.n_parts, &c.cfg, bad2, 1, 0,
                                            false), QC_ERR_ARG, "model.layers.1.mlp.gate.weight");
    assert_false(path_exists(c.out));
    assert_int_equal(count_prefixed(c.root, "out.tmp-"), 0);
    ckpt_free(&c);
}

static void test_ckpt_tied_drops_lm_head(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 8, .group_size = 32, .sym = true, .tied = true, .lm_head_in_parts = true});
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    ckpt_check_readback(&c, false);
    ckpt_free(&c);
}

static void expect_no_output(const ckpt *c) {
    if (path_exists(c->out)) fail_msg("%s exists after a failed write", c->out);
    assert_int_equal(count_prefixed(c->root, "out.tmp-"), 0);
    assert_int_equal(count_prefixed(c->root, "out.old-"), 0);
}

static void test_ckpt_failures_leave_nothing(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true});
    /* a part that does not exist */
    char *saved = c.parts[1];
    c.parts[1] = join(c.root, "missing.safetensors");
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_IO, "missing.safetensors");
    expect_no_output(&c);
    free(c.parts[1]);
    /* the same part twice: duplicate tensor names */
    c.parts[1] = c.parts[0];
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "two parts");
    expect_no_output(&c);
    c.parts[1] = saved;
    /* asym in v1 */
    c.cfg.sym = false;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "gptq_v2");
    expect_no_output(&c);
    c.cfg.sym = true;
    /* damp_percent outside (0, 1) */
    c.cfg.damp_percent = 1.5;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "damp_percent");
    c.cfg.damp_percent = 0.01;
    /* config that disagrees with the tensors: 8 bits declared, 4 packed (shapes do not match) */
    c.cfg.bits = 8;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "qzeros");
    expect_no_output(&c);
    c.cfg.bits = 4;
    /* bad meta_json */
    c.cfg.meta_json = "[1, 2]";
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "meta_json");
    c.cfg.meta_json = NULL;
    /* a model dir without config.json */
    char *cj = join(c.model, "config.json"), *cj2 = join(c.root, "config.json.away");
    assert_int_equal(rename(cj, cj2), 0);
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_IO, "config.json");
    expect_no_output(&c);
    assert_int_equal(rename(cj2, cj), 0);
    free(cj);
    free(cj2);
    /* a float tensor that overflows fp16 fails while streaming: the half-written temp dir goes away */
    float big[32 * 32];
    for (int i = 0; i < 32 * 32; i++) big[i] = i == 77 ? 1e6f : 0.5f;
    char *bad = join(c.root, "zz-bad.safetensors");
    write_st(bad, (tdesc[]){{"model.zz.weight", QC_DTYPE_F32, 2, {32, 32}, big}}, 1);
    c.parts[c.n_parts++] = bad;
    QC_CHECK_FAILS(ckpt_write(&c, 4096, false), QC_ERR_NUMERIC, "model.zz.weight");
    expect_no_output(&c);
    free(bad);
    c.n_parts--;
    /* and the same inputs now succeed */
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    ckpt_check_readback(&c, false);
    ckpt_free(&c);
}

/* desc_act=false but a non-trivial g_idx: vLLM would drop g_idx and mis-dequantize, so refuse. */
static void test_ckpt_gidx_needs_desc_act(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 4, .group_size = 32, .sym = true, .desc_act = true});
    c.cfg.desc_act = false;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "g_idx");
    expect_no_output(&c);
    /* static groups with desc_act also demand the trivial g_idx */
    c.cfg.desc_act = true;
    c.cfg.static_groups = true;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "static_groups");
    expect_no_output(&c);
    ckpt_free(&c);
}

static void test_ckpt_existing_out_dir(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.bits = 2, .group_size = 32, .sym = true});
    assert_int_equal(mkdir(c.out, 0755), 0);
    char *marker = join(c.out, "keep-me");
    write_text(marker, "x");
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "exists");
    assert_true(path_exists(marker));
    assert_int_equal(count_prefixed(c.root, "out.tmp-"), 0);
    /* overwrite replaces it whole */
    QC_CHECK_OK(ckpt_write(&c, 0, true));
    assert_false(path_exists(marker));
    ckpt_check_readback(&c, false);
    /* and again over a checkpoint, with shards this time */
    QC_CHECK_OK(ckpt_write(&c, 8192, true));
    ckpt_check_readback(&c, false);
    free(marker);
    /* never the source model */
    const char *saved = c.out;
    c.out = c.model;
    QC_CHECK_FAILS(ckpt_write(&c, 0, true), QC_ERR_ARG, "source model");
    c.out = saved;
    ckpt_free(&c);
}

/* ---- detect and load, on hand-made checkpoints ---- */

static const char *model_with(const char *config, const char *quantize_config) {
    const char *d = new_dir("det");
    char *p = join(d, "config.json");
    if (config) write_text(p, config);
    free(p);
    p = join(d, "quantize_config.json");
    if (quantize_config) write_text(p, quantize_config);
    free(p);
    return d;
}

static void test_detect(void **state) {
    (void)state;
    bool is;
    qc_gptq_config cfg;
    QC_CHECK_OK(qc_gptq_detect(model_with("{\"model_type\": \"llama\"}", NULL), &is, &cfg));
    assert_false(is);
    QC_CHECK_OK(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4}}", NULL),
                               &is, &cfg));
    assert_false(is);
    /* fallback to quantize_config.json (no quant_method there: older AutoGPTQ), GPTQModel's meta damp */
    QC_CHECK_OK(qc_gptq_detect(model_with("{\"model_type\": \"llama\"}",
                                          "{\"bits\": 8, \"group_size\": 128, \"desc_act\": true, \"sym\": true, "
                                          "\"checkpoint_format\": \"gptq_v2\", \"meta\": {\"damp_percent\": 0.05}}"),
                               &is, &cfg));
    assert_true(is);
    assert_int_equal(cfg.bits, 8);
    assert_int_equal(cfg.group_size, 128);
    assert_true(cfg.desc_act && cfg.sym && cfg.v2);
    assert_true(cfg.damp_percent == 0.05);
    /* AutoGPTQ synonyms, missing checkpoint_format = v1 */
    QC_CHECK_OK(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"GPTQ\", \"w_bit\": 3, "
                                          "\"q_group_size\": -1}}", NULL), &is, &cfg));
    assert_true(is);
    assert_int_equal(cfg.bits, 3);
    assert_int_equal(cfg.group_size, -1);
    assert_false(cfg.v2);
    QC_CHECK_FAILS(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 5}}",
                                             NULL), &is, &cfg), QC_ERR_UNSUPPORTED, "bits = 5");
    QC_CHECK_FAILS(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, "
                                             "\"checkpoint_format\": \"marlin\"}}", NULL), &is, &cfg),
                   QC_ERR_UNSUPPORTED, "marlin");
    QC_CHECK_FAILS(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, "
                                             "\"group_size\": 0}}", NULL), &is, &cfg), QC_ERR_FORMAT, "group_size");
    QC_CHECK_FAILS(qc_gptq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, "
                                             "\"desc_act\": \"yes\"}}", NULL), &is, &cfg), QC_ERR_FORMAT, "desc_act");
    QC_CHECK_FAILS(qc_gptq_detect(model_with("{\"quantization_config\": ", NULL), &is, &cfg), QC_ERR_FORMAT,
                   "config.json");
    QC_CHECK_FAILS(qc_gptq_detect(model_with(NULL, NULL), &is, &cfg), QC_ERR_IO, "config.json");
}

/* A one-module safetensors file with the given tensors replaced/removed, for load_linear's checks. */
typedef struct {
    int32_t qw[64 * 4 * 4], qz[2 * 64 * 4 / 32], g[64];
    uint16_t s[2 * 64], bias[64];
} rawmod;

static void rawmod_make(rawmod *r, qc_qlinear *q, bool v2) {
    QC_CHECK_OK(qc_qlinear_alloc(q, 64, 64, 4, 32, true, true));
    fill_layer(q, true);
    QC_CHECK_OK(qc_gptq_pack(q, v2, r->qw, r->qz, r->s));
    memcpy(r->g, q->g_idx, sizeof r->g);
    for (int n = 0; n < 64; n++) r->bias[n] = qc_f32_to_fp16(q->bias[n]);
}

static qc_weights *rawmod_open(const rawmod *r, int skip, qc_dtype scales_dt, int64_t scales_rows) {
    static int serial;
    char name[64];
    snprintf(name, sizeof name, "raw%d.safetensors", serial++);
    char *p = join(qc_test_tmpdir(), name);
    static float s32[2 * 64];
    for (int i = 0; i < 2 * 64; i++) s32[i] = qc_fp16_to_f32(r->s[i]);
    tdesc t[5] = {
        {"m.qweight", QC_DTYPE_I32, 2, {8, 64}, r->qw}, {"m.qzeros", QC_DTYPE_I32, 2, {2, 8}, r->qz},
        {"m.scales", scales_dt, 2, {scales_rows, 64}, scales_dt == QC_DTYPE_F32 ? (const void *)s32 : r->s},
        {"m.g_idx", QC_DTYPE_I32, 1, {64, 0}, r->g}, {"m.bias", QC_DTYPE_F16, 1, {64, 0}, r->bias},
    };
    tdesc keep[5];
    int n = 0;
    for (int i = 0; i < 5; i++)
        if (i != skip) keep[n++] = t[i];
    write_st(p, keep, n);
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(p, &w));
    free(p);
    return w;
}

static void test_load_linear_checks(void **state) {
    (void)state;
    rawmod r;
    qc_qlinear q;
    rawmod_make(&r, &q, false);
    qc_gptq_config cfg = {.bits = 4, .group_size = 32, .sym = true, .desc_act = true, .damp_percent = 0.01};
    float W[64 * 64], want[64 * 64], bias[64];
    bool hb;
    qc_weights *w = rawmod_open(&r, -1, QC_DTYPE_F16, 2);
    QC_CHECK_OK(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb));
    assert_true(hb);
    for (int i = 0; i < 2 * 64; i++) q.scales[i] = fp16_round(q.scales[i]);
    qc_qlinear_dequant(&q, want);
    check_float_equal(W, want, 64 * 64, "m");
    /* wrong N/K against the tensors, unsupported shape */
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 128, W, bias, &hb), QC_ERR_FORMAT, "m.qweight");
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 48, 64, W, bias, &hb), QC_ERR_UNSUPPORTED, "out_features");
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "nope", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "nope.qweight");
    qc_weights_free(w);
    /* missing qzeros; F32 scales; scales with the wrong group count */
    w = rawmod_open(&r, 1, QC_DTYPE_F16, 2);
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.qzeros");
    qc_weights_free(w);
    w = rawmod_open(&r, -1, QC_DTYPE_F32, 2);
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "dtype F32");
    qc_weights_free(w);
    w = rawmod_open(&r, -1, QC_DTYPE_F16, 1);
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.scales");
    qc_weights_free(w);
    /* g_idx out of range */
    int32_t g5 = r.g[5];
    r.g[5] = 2;
    w = rawmod_open(&r, -1, QC_DTYPE_F16, 2);
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "g_idx[5] = 2");
    qc_weights_free(w);
    r.g[5] = g5;
    /* act-order needs g_idx; without desc_act g_idx is optional and k / gs is used (vLLM) */
    w = rawmod_open(&r, 3, QC_DTYPE_F16, 2);
    QC_CHECK_FAILS(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.g_idx");
    cfg.desc_act = false;
    QC_CHECK_OK(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, NULL, &hb));
    for (int k = 0; k < 64; k++) q.g_idx[k] = k / 32;
    qc_qlinear_dequant(&q, want);
    check_float_equal(W, want, 64 * 64, "m without g_idx");
    qc_weights_free(w);
    /* the act-order g_idx present but desc_act false: still k / gs (with a warning) */
    w = rawmod_open(&r, -1, QC_DTYPE_F16, 2);
    QC_CHECK_OK(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, NULL, NULL));
    check_float_equal(W, want, 64 * 64, "m, g_idx ignored");
    qc_weights_free(w);
    qc_qlinear_free(&q);
}

/* C.1: v1 reconstructs z = stored + 1 without a mask (the exllama/vLLM kernels): a stored maxq reads as 2^b. */
static void test_load_v1_zero_rule(void **state) {
    (void)state;
    rawmod r;
    qc_qlinear q;
    rawmod_make(&r, &q, false);
    for (int i = 0; i < 16; i++) r.qz[i] = (int32_t)0xFFFFFFFFu; /* every stored field 15 */
    qc_gptq_config cfg = {.bits = 4, .group_size = 32, .sym = false, .desc_act = true, .damp_percent = 0.01};
    float W[64 * 64];
    qc_weights *w = rawmod_open(&r, -1, QC_DTYPE_F16, 2);
    QC_CHECK_OK(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, NULL, NULL));
    for (int n = 0; n < 64; n++)
        for (int k = 0; k < 64; k++) {
            int g = q.g_idx[k];
            float want = fp16_round(q.scales[g * 64 + n]) * (float)((int)q.codes[n * 64 + k] - 16);
            assert_true(W[n * 64 + k] == want);
        }
    /* the same words as v2 mean z = 15 */
    cfg.v2 = true;
    QC_CHECK_OK(qc_gptq_load_linear(w, "m", &cfg, 64, 64, W, NULL, NULL));
    assert_true(W[0] == fp16_round(q.scales[q.g_idx[0] * 64]) * (float)((int)q.codes[0] - 15));
    qc_weights_free(w);
    qc_qlinear_free(&q);
}

/* C.4.2 with the real solvers: the loader's weight equals the algorithm's fake-quantized W_hat, bit for bit
 * when the solver quantized with fp16 scales, else within 2^-10 * |s| * maxq (the fp16 rounding of s). */
static void test_solver_to_checkpoint(void **state) {
    (void)state;
    enum { N = 64, K = 128, S = 256 };
    static float W0[N * K], W[2][N * K], H[K * K], X[S * K];
    for (int i = 0; i < N * K; i++) W0[i] = rnd_unit() - 0.5f;
    for (int i = 0; i < S * K; i++) X[i] = rnd_unit() - 0.5f;
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) {
            double acc = 0;
            for (int t = 0; t < S; t++) acc += (double)X[t * K + a] * X[t * K + b];
            H[a * K + b] = (float)(2.0 * acc / S) * (a == b ? 1.0f + (float)a / K : 1.0f); /* uneven diag */
        }
    qc_qlinear q[2];
    memcpy(W[0], W0, sizeof W0);
    memcpy(W[1], W0, sizeof W0);
    qc_gptq_opts o = qc_gptq_default_opts();
    o.bits = 4;
    o.group_size = 32;
    o.act_order = true;
    o.fp16_scales = true;
    QC_CHECK_OK(qc_qlinear_alloc(&q[0], N, K, 4, 32, true, false));
    qc_gptq_stats st;
    QC_CHECK_OK(qc_gptq_quantize(W[0], H, N, K, &o, &q[0], &st));
    QC_CHECK_OK(qc_qlinear_alloc(&q[1], N, K, 3, 64, false, false));
    QC_CHECK_OK(qc_rtn_quantize(W[1], N, K, 3, 64, false, &q[1]));
    bool trivial = true;
    for (int k = 0; k < K; k++) trivial &= q[0].g_idx[k] == k / 32;
    assert_false(trivial); /* the act-order path is exercised */

    const char *root = new_dir("solver");
    char *model = join(root, "model");
    assert_int_equal(mkdir(model, 0755), 0);
    char *p = join(model, "config.json");
    write_text(p, "{\"model_type\": \"llama\", \"torch_dtype\": \"float32\"}");
    free(p);
    const char *names[2] = {"model.layers.0.self_attn.o_proj", "model.layers.0.mlp.up_proj"};
    const qc_gptq_config cfgs[2] = {
        {.bits = 4, .group_size = 32, .sym = true, .desc_act = true, .damp_percent = 0.01},
        {.bits = 3, .group_size = 64, .sym = false, .v2 = true, .damp_percent = 0.01},
    };
    for (int i = 0; i < 2; i++) {
        char part[64], outn[64];
        snprintf(part, sizeof part, "part%d.safetensors", i);
        snprintf(outn, sizeof outn, "out%d", i);
        char *pp = join(root, part), *out = join(root, outn);
        const qc_qlinear *l = &q[i];
        QC_CHECK_OK(qc_gptq_write_part(pp, &l, &names[i], 1, cfgs[i].v2));
        QC_CHECK_OK(qc_gptq_write_checkpoint(out, model, (const char *const *)&pp, 1, &cfgs[i], NULL, 0, 0, false));
        qc_weights *w;
        QC_CHECK_OK(qc_weights_open(out, &w));
        static float L[N * K];
        QC_CHECK_OK(qc_gptq_load_linear(w, names[i], &cfgs[i], N, K, L, NULL, NULL));
        if (i == 0) {
            check_float_equal(L, W[0], (size_t)N * K, "GPTQ act-order, fp16 scales");
        } else {
            const int maxq = 7;
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++) {
                    float s = q[1].scales[(k / 64) * N + n];
                    QC_CHECK_NEAR(L[n * K + k], W[1][n * K + k], ldexp(fabs(s) * maxq, -10));
                }
        }
        qc_weights_free(w);
        free(pp);
        free(out);
        qc_qlinear_free(&q[i]);
    }
    free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_4bit_word),
        cmocka_unit_test(test_vector_sym_qzeros),
        cmocka_unit_test(test_vector_3bit_layout),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_unpack_fast_vs_plain),
        cmocka_unit_test(test_dequant_formula),
        cmocka_unit_test(test_pack_rejects),
        cmocka_unit_test(test_ckpt_roundtrip_all_bits),
        cmocka_unit_test(test_ckpt_sharded),
        cmocka_unit_test(test_ckpt_part_shards),
        cmocka_unit_test(test_ckpt_config_files),
        cmocka_unit_test(test_ckpt_unquantized_modules),
        cmocka_unit_test(test_ckpt_tied_drops_lm_head),
        cmocka_unit_test(test_ckpt_failures_leave_nothing),
        cmocka_unit_test(test_ckpt_gidx_needs_desc_act),
        cmocka_unit_test(test_ckpt_existing_out_dir),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_load_linear_checks),
        cmocka_unit_test(test_load_v1_zero_rule),
        cmocka_unit_test(test_solver_to_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
