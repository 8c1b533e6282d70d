/* test_awq_format.c - the AutoAWQ GEMM layout: the spec's interleave vectors (B.2), the word-at-a-time
 * packers against their nibble-at-a-time twins, dequantization against C.3 with fp16 scales, and whole
 * checkpoints written from hand-made parts and read back through qc_weights/qc_awq_load_linear: sharding,
 * config.json/quant_config.json, modules_to_not_convert and its substring hazard, and the failure modes
 * (nothing left behind). */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#define FMT_TEST_SEED 0x2545f4914f6cdd1dull
#include "fmt_testutil.h"
#include "awq_format.h"
#include "safetensors.h"

/* ---- helpers ---- */

static const cJSON *jget(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("key '%s' missing", k);
    return v;
}

/* Records warnings so tests can check one was given. */
static char g_warn[4096];
static void warn_sink(qc_log_level level, const char *msg, void *user) {
    (void)user;
    if (level >= QC_LOG_WARN) snprintf(g_warn + strlen(g_warn), sizeof g_warn - strlen(g_warn), "%s\n", msg);
}

/* Random codes, zero points in [0, 15], scales, optional bias. */
static void fill_layer(qc_qlinear *q) {
    const int N = q->N, K = q->K, G = q->n_groups;
    for (size_t i = 0; i < (size_t)N * K; i++) q->codes[i] = (uint8_t)(rnd() % 16);
    for (size_t i = 0; i < (size_t)G * N; i++) {
        q->scales[i] = 1e-3f + 1e-2f * rnd_unit();
        q->zeros[i] = (int32_t)(rnd() % 16);
    }
    if (q->bias)
        for (int n = 0; n < N; n++) q->bias[n] = rnd_unit() - 0.5f;
}

typedef struct {
    int32_t *qw, *qz;
    uint16_t *s16;
} packed;

static void packed_free(packed *p) {
    free(p->qw);
    free(p->qz);
    free(p->s16);
}

/* Packs q both ways, checks the two agree word for word, returns the fast version's buffers. */
static packed pack_both(const qc_qlinear *q) {
    const size_t nw = (size_t)q->K * (q->N / 8), nz = (size_t)q->n_groups * (q->N / 8), ns = (size_t)q->n_groups * q->N;
    packed p = {calloc(nw, 4), calloc(nz, 4), calloc(ns, 2)}, r = {calloc(nw, 4), calloc(nz, 4), calloc(ns, 2)};
    assert_true(p.qw && p.qz && p.s16 && r.qw && r.qz && r.s16);
    QC_CHECK_OK(qc_awq_pack(q, p.qw, p.qz, p.s16));
    QC_CHECK_OK(qc_awq_pack_ref(q, r.qw, r.qz, r.s16));
    for (size_t i = 0; i < nw; i++)
        if (p.qw[i] != r.qw[i]) fail_msg("N=%d K=%d qweight word %zu: fast 0x%08x, plain 0x%08x", q->N, q->K, i,
                                         (uint32_t)p.qw[i], (uint32_t)r.qw[i]);
    for (size_t i = 0; i < nz; i++)
        if (p.qz[i] != r.qz[i]) fail_msg("N=%d K=%d qzeros word %zu: fast 0x%08x, plain 0x%08x", q->N, q->K, i,
                                         (uint32_t)p.qz[i], (uint32_t)r.qz[i]);
    assert_memory_equal(p.s16, r.s16, ns * 2);
    packed_free(&r);
    return p;
}

/* ---- constant vectors (B.2) ---- */

static void test_vector_interleave(void **state) {
    (void)state;
    qc_qlinear q;
    const int N = 24, K = 8;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, 4, false, false));
    /* word column c = 1 (columns 8..15): codes 0..7 at every k; column c = 2: codes 8..15 (sign bit set) */
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < K; k++) {
            q.codes[(8 + j) * K + k] = (uint8_t)j;
            q.codes[(16 + j) * K + k] = (uint8_t)(8 + j);
        }
    for (int j = 0; j < 8; j++) q.zeros[1 * N + 8 + j] = j; /* group 1, columns 8..15 */
    for (int i = 0; i < 2 * N; i++) q.scales[i] = 1.0f;
    packed p = pack_both(&q);
    for (int k = 0; k < K; k++) {
        assert_int_equal((uint32_t)p.qw[k * 3 + 0], 0u);
        assert_int_equal((uint32_t)p.qw[k * 3 + 1], 0x75316420u);
        assert_int_equal((uint32_t)p.qw[k * 3 + 2], 0xFDB9ECA8u);
    }
    assert_int_equal((uint32_t)p.qz[0 * 3 + 1], 0u);
    assert_int_equal((uint32_t)p.qz[1 * 3 + 1], 0x75316420u);
    /* reading back one column with C.3's formula: INVERSE = {0, 4, 1, 5, 2, 6, 3, 7} */
    static const int inverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (int n = 8; n < 16; n++) assert_int_equal(((uint32_t)p.qw[1] >> (4 * inverse[n % 8])) & 0xF, n - 8);
    uint8_t codes[24 * 8];
    int32_t zeros[2 * 24];
    QC_CHECK_OK(qc_awq_unpack(N, K, 4, p.qw, p.qz, NULL, codes, zeros, NULL));
    assert_memory_equal(codes, q.codes, sizeof codes);
    assert_memory_equal(zeros, q.zeros, sizeof zeros);
    packed_free(&p);
    qc_qlinear_free(&q);
}

/* ---- random round trips and twins ---- */

static void test_roundtrip_random(void **state) {
    (void)state;
    static const int gss[] = {8, 16, 32, 64, 128};
    for (int iter = 0; iter < 60; iter++) {
        const int gs = gss[iter % 5];
        const int N = 8 * (1 + (int)(rnd() % 16)), K = gs * (1 + (int)(rnd() % 4));
        qc_qlinear q;
        QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, gs, false, iter % 2));
        fill_layer(&q);
        packed p = pack_both(&q);
        const int G = q.n_groups;
        uint8_t *c1 = malloc((size_t)N * K), *c2 = malloc((size_t)N * K);
        int32_t *z1 = malloc((size_t)G * N * 4), *z2 = malloc((size_t)G * N * 4);
        float *s1 = malloc((size_t)G * N * 4), *s2 = malloc((size_t)G * N * 4);
        assert_true(c1 && c2 && z1 && z2 && s1 && s2);
        QC_CHECK_OK(qc_awq_unpack(N, K, gs, p.qw, p.qz, p.s16, c1, z1, s1));
        QC_CHECK_OK(qc_awq_unpack_ref(N, K, gs, p.qw, p.qz, p.s16, c2, z2, s2));
        assert_memory_equal(c1, q.codes, (size_t)N * K);
        assert_memory_equal(c2, q.codes, (size_t)N * K);
        assert_memory_equal(z1, q.zeros, (size_t)G * N * 4);
        assert_memory_equal(z2, q.zeros, (size_t)G * N * 4);
        for (int i = 0; i < G * N; i++) {
            assert_true(s1[i] == fp16_round(q.scales[i]));
            assert_true(s2[i] == s1[i]);
        }
        free(c1), free(c2), free(z1), free(z2), free(s1), free(s2);
        packed_free(&p);
        qc_qlinear_free(&q);
    }
}

/* Word-at-a-time unpack against the nibble-at-a-time twin on arbitrary words (every bit pattern). */
static void test_unpack_fast_vs_plain(void **state) {
    (void)state;
    enum { N = 40, K = 96, GS = 32, G = K / GS };
    int32_t qw[K * N / 8], qz[G * N / 8];
    uint16_t s16[G * N];
    for (int iter = 0; iter < 8; iter++) {
        for (size_t i = 0; i < sizeof qw / 4; i++) qw[i] = (int32_t)(rnd() ^ rnd() << 16);
        for (size_t i = 0; i < sizeof qz / 4; i++) qz[i] = (int32_t)(rnd() ^ rnd() << 16);
        for (int i = 0; i < G * N; i++) s16[i] = (uint16_t)(rnd() & 0x7bff);
        uint8_t c1[N * K], c2[N * K];
        int32_t z1[G * N], z2[G * N];
        float f1[G * N], f2[G * N];
        QC_CHECK_OK(qc_awq_unpack(N, K, GS, qw, qz, s16, c1, z1, f1));
        QC_CHECK_OK(qc_awq_unpack_ref(N, K, GS, qw, qz, s16, c2, z2, f2));
        assert_memory_equal(c1, c2, sizeof c1);
        assert_memory_equal(z1, z2, sizeof z1);
        assert_memory_equal(f1, f2, sizeof f1);
        for (int i = 0; i < G * N; i++) assert_true(z1[i] >= 0 && z1[i] <= 15);
    }
}

/* ---- dequantization (C.3) ---- */

static void test_dequant_formula(void **state) {
    (void)state;
    const int N = 48, K = 128, gs = 32;
    qc_qlinear q;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, gs, false, false));
    fill_layer(&q);
    packed p = pack_both(&q);
    /* what a loader computes from the stored words, written out from C.3 */
    float *W = malloc((size_t)N * K * 4), *Wq = malloc((size_t)N * K * 4);
    assert_true(W && Wq);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            static const int inverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};
            const int g = k / gs, sh = 4 * inverse[n % 8];
            const int code = (int)(((uint32_t)p.qw[k * (N / 8) + n / 8] >> sh) & 0xF);
            const int z = (int)(((uint32_t)p.qz[g * (N / 8) + n / 8] >> sh) & 0xF);
            W[n * K + k] = qc_fp16_to_f32(p.s16[g * N + n]) * (float)(code - z);
            /* the fp32 product of an fp16 scale and a small integer is exact */
            assert_true((double)W[n * K + k] == (double)qc_fp16_to_f32(p.s16[g * N + n]) * (code - z));
        }
    /* equals the fake-quantized weight with fp16-rounded scales, bit for bit */
    for (int i = 0; i < q.n_groups * N; i++) q.scales[i] = fp16_round(q.scales[i]);
    qc_qlinear_dequant(&q, Wq);
    check_float_equal(W, Wq, (size_t)N * K, "C.3 from the words vs fake-quant (fp16 scales)");
    free(W);
    free(Wq);
    packed_free(&p);
    qc_qlinear_free(&q);
}

static void test_pack_rejects(void **state) {
    (void)state;
    qc_qlinear q;
    int32_t qw[64 * 64 / 8], qz[2 * 64 / 8];
    uint16_t s16[2 * 64];
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, 32, false, false));
    fill_layer(&q);
    QC_CHECK_OK(qc_awq_pack(&q, qw, qz, s16));
    q.codes[70] = 16;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "code[1][6] = 16");
    QC_CHECK_FAILS(qc_awq_pack_ref(&q, qw, qz, s16), QC_ERR_ARG, "exceeds 15");
    q.codes[70] = 15;
    q.zeros[65] = 16;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "zero[1][1] = 16");
    q.zeros[65] = -1;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "zero[1][1] = -1");
    q.zeros[65] = 0;
    q.scales[3] = 1e6f;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_NUMERIC, "scale[0][3]");
    q.scales[3] = NAN;
    QC_CHECK_FAILS(qc_awq_pack_ref(&q, qw, qz, s16), QC_ERR_NUMERIC, "fp16");
    q.scales[3] = 0.01f;
    q.g_idx[5] = 1; /* act-order: AWQ cannot store it */
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "g_idx[5]");
    q.g_idx[5] = 0;
    q.n_groups = 1;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "n_groups");
    q.n_groups = 2;
    q.bits = 3;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "4-bit");
    q.bits = 4;
    QC_CHECK_OK(qc_awq_pack(&q, qw, qz, s16));
    qc_qlinear_free(&q);
    /* group_size -1 (one group), N % 8, K % gs */
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, -1, false, false));
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "never -1");
    qc_qlinear_free(&q);
    QC_CHECK_OK(qc_qlinear_alloc(&q, 12, 64, 4, 32, false, false));
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "multiple of 8");
    qc_qlinear_free(&q);
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, 32, false, false));
    q.group_size = 48;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "multiple of group_size");
    q.group_size = 0;
    QC_CHECK_FAILS(qc_awq_pack(&q, qw, qz, s16), QC_ERR_ARG, "positive");
    qc_qlinear_free(&q);
    uint8_t codes[64 * 64];
    QC_CHECK_FAILS(qc_awq_unpack(60, 64, 32, qw, NULL, NULL, codes, NULL, NULL), QC_ERR_ARG, "multiple of 8");
    QC_CHECK_FAILS(qc_awq_unpack_ref(64, 64, 0, qw, NULL, NULL, codes, NULL, NULL), QC_ERR_ARG, "group_size");
    const char *why = NULL;
    assert_false(qc_awq_shape_ok(64, 64, 8, 32, &why));
    assert_non_null(strstr(why, "4-bit"));
    assert_true(qc_awq_shape_ok(8, 32, 4, 32, &why));
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
    char *parts[8];
    int n_parts;
    qc_qlinear q[NQ];
    float embed[V * D], lm_head[V * D], norm[D], ln[2][D], gate[8 * D];
    qc_awq_config cfg;
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

static char *add_part_path(ckpt *c, const char *name) {
    assert_true(c->n_parts < 8);
    return c->parts[c->n_parts++] = join(c->root, name);
}

/* A quantized Linear `name` [N, K] in its own part, packed by hand and written with qc_st_writer. */
static void add_quantized_part(ckpt *c, const char *file, const char *name, int N, int K) {
    qc_qlinear q;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, c->cfg.group_size, false, false));
    fill_layer(&q);
    packed p = pack_both(&q);
    char a[256], b[256], s[256];
    snprintf(a, sizeof a, "%s.qweight", name);
    snprintf(b, sizeof b, "%s.qzeros", name);
    snprintf(s, sizeof s, "%s.scales", name);
    const int64_t G = q.n_groups;
    write_st(add_part_path(c, file), (tdesc[]){{a, QC_DTYPE_I32, 2, {K, N / 8}, p.qw},
                                               {b, QC_DTYPE_I32, 2, {G, N / 8}, p.qz},
                                               {s, QC_DTYPE_F16, 2, {G, N}, p.s16}}, 3);
    packed_free(&p);
    qc_qlinear_free(&q);
}

static void add_float_part(ckpt *c, const char *file, const char *name, int rows, int cols) {
    float *x = malloc((size_t)rows * cols * 4);
    assert_non_null(x);
    for (int i = 0; i < rows * cols; i++) x[i] = rnd_unit() - 0.5f;
    write_st(add_part_path(c, file), (tdesc[]){{name, QC_DTYPE_F32, 2, {rows, cols}, x}}, 1);
    free(x);
}

typedef struct {
    int group_size;
    bool tied, with_gate, lm_head_in_parts;
} ckpt_opts;

/* A model dir (config.json, tokenizer.json, generation_config.json) and its parts: layer 0 through
 * qc_awq_write_part, layer 1 packed by hand and written with qc_st_writer (with a bias beside it), and one
 * part with the float tensors in mixed dtypes (F32, BF16, F16). */
static void ckpt_make(ckpt *c, const ckpt_opts *o) {
    memset(c, 0, sizeof *c);
    c->root = new_dir("ckpt");
    c->model = join(c->root, "model");
    c->out = join(c->root, "out");
    c->cfg = (qc_awq_config){.bits = 4, .group_size = o->group_size, .quantizer = "qcal:test",
                             .meta_json = "{\"recipe_sha256\": \"abc123\", \"awq_duo_scaling\": false}"};
    if (mkdir(c->model, 0755) != 0) fail_msg("mkdir %s", c->model);
    char cfgtext[1024];
    snprintf(cfgtext, sizeof cfgtext,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d,\n"
             " \"intermediate_size\": %d, \"vocab_size\": %d, \"num_hidden_layers\": 2,\n"
             " \"tie_word_embeddings\": %s, \"torch_dtype\": \"bfloat16\", \"dtype\": \"bfloat16\",\n"
             " \"rope_scaling\": null}\n", D, I, V, o->tied ? "true" : "false");
    char *p = join(c->model, "config.json");
    write_text(p, cfgtext);
    free(p);
    write_text(p = join(c->model, "tokenizer.json"), "{\"model\": {\"type\": \"BPE\"}, \"x\": \"\\u00e9\"}");
    free(p);
    write_text(p = join(c->model, "generation_config.json"), "{\"bos_token_id\": 1}");
    free(p);

    const int shapes[NQ][2] = {{D, I}, {D, D}, {D, I}, {D, D}}; /* N, K */
    for (int i = 0; i < NQ; i++) {
        QC_CHECK_OK(qc_qlinear_alloc(&c->q[i], shapes[i][0], shapes[i][1], 4, o->group_size, false, i % 2));
        fill_layer(&c->q[i]);
    }
    const qc_qlinear *l0[2] = {&c->q[0], &c->q[1]};
    QC_CHECK_OK(qc_awq_write_part(add_part_path(c, "layer0.safetensors"), l0, k_mod, 2));
    /* layer 1 by hand: pack, then the raw tensors */
    packed pk[2];
    uint16_t bias16[D];
    tdesc t1[7];
    char names[7][128];
    int nt1 = 0;
    for (int j = 0; j < 2; j++) {
        const qc_qlinear *q = &c->q[2 + j];
        pk[j] = pack_both(q);
        const char *sfx[3] = {"qweight", "qzeros", "scales"};
        const int64_t sh[3][2] = {{q->K, q->N / 8}, {q->n_groups, q->N / 8}, {q->n_groups, q->N}};
        const void *data[3] = {pk[j].qw, pk[j].qz, pk[j].s16};
        for (int s = 0; s < 3; s++) {
            snprintf(names[nt1], sizeof names[0], "%s.%s", k_mod[2 + j], sfx[s]);
            t1[nt1] = (tdesc){names[nt1], s < 2 ? QC_DTYPE_I32 : QC_DTYPE_F16, 2, {sh[s][0], sh[s][1]}, data[s]};
            nt1++;
        }
        if (q->bias) {
            for (int n = 0; n < q->N; n++) bias16[n] = qc_f32_to_fp16(q->bias[n]);
            snprintf(names[nt1], sizeof names[0], "%s.bias", k_mod[2 + j]);
            t1[nt1] = (tdesc){names[nt1], QC_DTYPE_F16, 1, {q->N, 0}, bias16};
            nt1++;
        }
    }
    write_st(add_part_path(c, "layer1.safetensors"), t1, nt1);
    packed_free(&pk[0]);
    packed_free(&pk[1]);

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
    write_st(add_part_path(c, "rest.safetensors"), t, nt);
}

static void ckpt_free(ckpt *c) {
    for (int i = 0; i < NQ; i++) qc_qlinear_free(&c->q[i]);
    for (int i = 0; i < c->n_parts; i++) free(c->parts[i]);
    free((char *)c->model);
    free((char *)c->out);
}

static qc_status ckpt_write_unq(ckpt *c, const char *const *unq, int n_unq, uint64_t max_shard, bool overwrite) {
    return qc_awq_write_checkpoint(c->out, c->model, (const char *const *)c->parts, c->n_parts, &c->cfg, unq, n_unq,
                                   max_shard, overwrite);
}

static qc_status ckpt_write(ckpt *c, uint64_t max_shard, bool overwrite) {
    return ckpt_write_unq(c, NULL, 0, max_shard, overwrite);
}

static void expect_no_output(const ckpt *c) {
    if (path_exists(c->out)) fail_msg("%s exists after a failed write", c->out);
    assert_int_equal(count_prefixed(c->root, "out.tmp-"), 0);
    assert_int_equal(count_prefixed(c->root, "out.old-"), 0);
}

/* Reads the checkpoint back: every quantized module through qc_awq_load_linear must equal the fake-quant
 * weight with fp16-rounded scales, bit for bit; float tensors must be the F16 of the input. */
static void ckpt_check_readback(ckpt *c, bool lm_head_expected) {
    bool is_awq = false;
    qc_awq_config got;
    QC_CHECK_OK(qc_awq_detect(c->out, &is_awq, &got));
    assert_true(is_awq);
    assert_int_equal(got.bits, 4);
    assert_int_equal(got.group_size, c->cfg.group_size);

    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(c->out, &w));
    for (size_t i = 0; i < qc_weights_count(w); i++) {
        const qc_tensor *t = qc_weights_get(w, i);
        assert_null(strstr(t->name, "proj.weight")); /* no float copy of a quantized Linear */
        assert_null(strstr(t->name, "g_idx"));
        assert_true(t->dtype == QC_DTYPE_F16 || t->dtype == QC_DTYPE_I32);
    }
    for (int i = 0; i < NQ; i++) {
        qc_qlinear *q = &c->q[i];
        qc_qlinear e;
        QC_CHECK_OK(qc_qlinear_alloc(&e, q->N, q->K, 4, q->group_size, false, false));
        memcpy(e.codes, q->codes, (size_t)q->N * q->K);
        memcpy(e.zeros, q->zeros, (size_t)q->n_groups * q->N * 4);
        for (int j = 0; j < q->n_groups * q->N; j++) e.scales[j] = fp16_round(q->scales[j]);
        float *want = malloc((size_t)q->N * q->K * 4), *W = malloc((size_t)q->N * q->K * 4), bias[D];
        assert_true(want && W);
        qc_qlinear_dequant(&e, want);
        bool has_bias = !q->bias;
        QC_CHECK_OK(qc_awq_load_linear(w, k_mod[i], &got, q->N, q->K, W, bias, &has_bias));
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

static void test_ckpt_roundtrip(void **state) {
    (void)state;
    static const int gss[] = {32, 64, 16, 8}; /* K is 64 or 128 */
    for (int i = 0; i < 4; i++) {
        ckpt c;
        ckpt_make(&c, &(ckpt_opts){.group_size = gss[i], .lm_head_in_parts = i % 2 == 0});
        QC_CHECK_OK(ckpt_write(&c, 0, false));
        ckpt_check_readback(&c, i % 2 == 0);
        ckpt_free(&c);
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
    assert_string_equal(jget(md, "format")->valuestring, "pt");
    assert_string_equal(jget(md, "quantizer")->valuestring, "qcal:test");
    for (cJSON *it = md->child; it; it = it->next) assert_true(cJSON_IsString(it));
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

/* Part shards (ckpt_write.h): parts carrying qc_awq_shard_meta's pairs become the shards by hard links; the
 * GPTQ test covers every rule, this one that AWQ's metadata (just the quantizer) is what the writer expects. */
static void test_ckpt_part_shards(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.group_size = 32, .lm_head_in_parts = true});
    qc_shard_meta sm;
    qc_awq_shard_meta(&c.cfg, &sm);
    assert_int_equal(sm.n, 1);
    assert_string_equal(sm.kv[0][0], "quantizer");
    assert_string_equal(sm.kv[0][1], "qcal:test");
    const int order[3] = {2, 0, 1};
    char *pp[3], *bare[3];
    uint64_t largest = 0;
    for (int k = 0; k < 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "pp-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], pp[k] = join(c.root, name), qc_shard_meta_pairs(&sm), sm.n, false, false);
        snprintf(name, sizeof name, "bare-%d.safetensors", k);
        write_pipeline_part(c.parts[order[k]], bare[k] = join(c.root, name), NULL, 0, false, false);
        if (st_data_bytes(pp[k]) > largest) largest = st_data_bytes(pp[k]);
    }
    QC_CHECK_OK(qc_awq_write_checkpoint(c.out, c.model, (const char *const *)pp, 3, &c.cfg, NULL, 0, largest, false));
    check_part_shards(c.out, pp, 3, false);
    ckpt_check_readback(&c, true);
    QC_CHECK_OK(qc_awq_write_checkpoint(c.out, c.model, (const char *const *)bare, 3, &c.cfg, NULL, 0, largest, true));
    check_copy_layout(c.out, bare, 3);
    ckpt_check_readback(&c, true);
    for (int k = 0; k < 3; k++) {
        unlink(bare[k]);
        free(pp[k]);
        free(bare[k]);
    }
    ckpt_free(&c);
}

static void test_ckpt_sharded(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.group_size = 32, .lm_head_in_parts = true});
    QC_CHECK_OK(ckpt_write(&c, 8192, false));
    char *single = join(c.out, "model.safetensors");
    assert_false(path_exists(single));
    free(single);
    char *ip = join(c.out, "model.safetensors.index.json");
    cJSON *idx = read_json(ip);
    free(ip);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    double total = jget(jget(idx, "metadata"), "total_size")->valuedouble;
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

static void test_ckpt_config_files(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.group_size = 64});
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    char *p = join(c.out, "config.json");
    cJSON *cfg = read_json(p);
    free(p);
    assert_string_equal(jget(cfg, "torch_dtype")->valuestring, "float16");
    assert_string_equal(jget(cfg, "dtype")->valuestring, "float16");
    assert_int_equal(jget(cfg, "hidden_size")->valueint, D);
    assert_true(cJSON_IsNull(jget(cfg, "rope_scaling")));
    /* B.5 exactly, in AutoAWQ's order, then meta */
    const cJSON *q = jget(cfg, "quantization_config");
    static const char *const keys[] = {"quant_method", "zero_point", "group_size", "bits", "version",
                                       "modules_to_not_convert", "meta"};
    int nk = 0;
    for (const cJSON *it = q->child; it; it = it->next, nk++) {
        assert_true(nk < 7);
        assert_string_equal(it->string, keys[nk]);
    }
    assert_int_equal(nk, 7);
    assert_string_equal(jget(q, "quant_method")->valuestring, "awq");
    assert_true(cJSON_IsTrue(jget(q, "zero_point")));
    assert_true(jget(q, "group_size")->valuedouble == 64);
    assert_true(jget(q, "bits")->valuedouble == 4);
    assert_string_equal(jget(q, "version")->valuestring, "gemm");
    assert_true(cJSON_IsNull(jget(q, "modules_to_not_convert")));
    const cJSON *meta = jget(q, "meta");
    assert_int_equal(cJSON_GetArraySize(jget(meta, "quantizer")), 1);
    assert_string_equal(cJSON_GetArrayItem(jget(meta, "quantizer"), 0)->valuestring, "qcal:test");
    assert_string_equal(jget(meta, "recipe_sha256")->valuestring, "abc123");
    assert_true(cJSON_IsFalse(jget(meta, "awq_duo_scaling")));
    cJSON_Delete(cfg);
    /* the legacy file: exactly AutoAWQ's four keys */
    p = join(c.out, "quant_config.json");
    cJSON *legacy = read_json(p);
    free(p);
    cJSON *want = cJSON_Parse("{\"zero_point\": true, \"q_group_size\": 64, \"w_bit\": 4, \"version\": \"GEMM\"}");
    assert_true(cJSON_Compare(legacy, want, true));
    cJSON_Delete(want);
    cJSON_Delete(legacy);
    /* no GPTQ file, no index for one shard, side files byte for byte, absent ones not invented */
    const char *absent[] = {"quantize_config.json", "model.safetensors.index.json", "tokenizer.model"};
    for (int i = 0; i < 3; i++) {
        p = join(c.out, absent[i]);
        assert_false(path_exists(p));
        free(p);
    }
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
    p = join(c.out, "model.safetensors");
    uint64_t bytes = 0;
    check_shard_header(p, NULL, NULL, &bytes);
    free(p);
    /* meta_json keys replace ours on a clash; rewriting over the checkpoint needs overwrite */
    c.cfg.meta_json = "{\"quantizer\": \"other\"}";
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "exists");
    QC_CHECK_OK(ckpt_write(&c, 0, true));
    p = join(c.out, "config.json");
    cfg = read_json(p);
    free(p);
    assert_string_equal(jget(jget(jget(cfg, "quantization_config"), "meta"), "quantizer")->valuestring, "other");
    cJSON_Delete(cfg);
    ckpt_free(&c);
}

static void expect_not_convert(const ckpt *c, const char *const *want, int n) {
    const char *files[2] = {"config.json", "quant_config.json"};
    for (int f = 0; f < 2; f++) {
        char *p = join(c->out, files[f]);
        cJSON *j = read_json(p);
        free(p);
        const cJSON *o = f == 0 ? jget(j, "quantization_config") : j;
        const cJSON *l = jget(o, "modules_to_not_convert");
        assert_int_equal(cJSON_GetArraySize(l), n);
        for (int i = 0; i < n; i++) assert_string_equal(cJSON_GetArrayItem(l, i)->valuestring, want[i]);
        cJSON_Delete(j);
    }
}

/* B.5: Linears kept in float are listed by block-relative name ("mlp.gate"), found or declared: AutoAWQ
 * matches the entries against each block's block-relative names, vLLM and transformers against full paths.
 * Names that loaders would also match against a quantized module are refused. */
static void test_ckpt_modules_to_not_convert(void **state) {
    (void)state;
    const char *gate[] = {"model.layers.0.mlp.gate"}, *gate_rel[] = {"mlp.gate"};
    for (int pass = 0; pass < 2; pass++) {
        ckpt c;
        ckpt_make(&c, &(ckpt_opts){.group_size = 32, .with_gate = true});
        QC_CHECK_OK(ckpt_write_unq(&c, pass ? gate : NULL, pass ? 1 : 0, 0, false));
        expect_not_convert(&c, gate_rel, 1);
        qc_weights *w;
        QC_CHECK_OK(qc_weights_open(c.out, &w));
        const qc_tensor *t = qc_weights_find(w, "model.layers.0.mlp.gate.weight");
        assert_non_null(t);
        assert_int_equal(t->dtype, QC_DTYPE_F16);
        qc_weights_free(w);
        ckpt_check_readback(&c, false);
        ckpt_free(&c);
    }
    ckpt c;
    /* a router "mlp.gate" beside a quantized "mlp.gate_proj": the name would match both */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_quantized_part(&c, "gp.safetensors", "model.layers.1.mlp.gate_proj", I, D);
    add_float_part(&c, "router.safetensors", "model.layers.1.mlp.gate.weight", 8, D);
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_UNSUPPORTED, "model.layers.1.mlp.gate_proj");
    expect_no_output(&c);
    ckpt_free(&c);
    /* the same with only up_proj quantized: vLLM's fused gate_up_proj would match */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_quantized_part(&c, "up.safetensors", "model.layers.1.mlp.up_proj", I, D);
    add_float_part(&c, "router.safetensors", "model.layers.1.mlp.gate.weight", 8, D);
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_UNSUPPORTED, "model.layers.1.mlp.gate_up_proj");
    expect_no_output(&c);
    ckpt_free(&c);
    /* layer 1's router next to layer 10's gate_proj: AutoAWQ compares block-relative names, where "mlp.gate"
     * is inside "mlp.gate_proj", so no declaration can keep one and quantize the other */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_quantized_part(&c, "gp10.safetensors", "model.layers.10.mlp.gate_proj", I, D);
    add_float_part(&c, "router.safetensors", "model.layers.1.mlp.gate.weight", 8, D);
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_UNSUPPORTED, "model.layers.10.mlp.gate_proj");
    expect_no_output(&c);
    ckpt_free(&c);
    /* a float k_proj next to a quantized q_proj loads in transformers but gets a warning about vLLM's fused
     * qkv_proj */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_float_part(&c, "kproj.safetensors", "model.layers.0.self_attn.k_proj.weight", 16, D);
    g_warn[0] = '\0';
    qc_log_set(warn_sink, NULL);
    qc_status st = ckpt_write(&c, 0, false);
    qc_log_set(NULL, NULL);
    QC_CHECK_OK(st);
    if (!strstr(g_warn, "model.layers.0.self_attn.qkv_proj")) fail_msg("no fused-layer warning in '%s'", g_warn);
    const char *kp[] = {"self_attn.k_proj"};
    expect_not_convert(&c, kp, 1);
    ckpt_free(&c);
    /* gate_proj and up_proj kept together: older vLLM and SGLang ask about the fused gate_up_proj only */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_float_part(&c, "gate.safetensors", "model.layers.0.mlp.gate_proj.weight", I, D);
    add_float_part(&c, "up.safetensors", "model.layers.0.mlp.up_proj.weight", I, D);
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    const char *gu[] = {"mlp.gate_proj", "mlp.gate_up_proj", "mlp.up_proj"};
    expect_not_convert(&c, gu, 3);
    ckpt_free(&c);
    /* kept in one block and quantized in another: AutoAWQ's per-block names cannot say that */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    add_float_part(&c, "qproj.safetensors", "model.layers.2.self_attn.q_proj.weight", D, D);
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_UNSUPPORTED, "self_attn.q_proj");
    expect_no_output(&c);
    ckpt_free(&c);
    /* declarations that do not hold */
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    const char *bad1[] = {"model.layers.1.self_attn.q_proj"}, *bad2[] = {"model.layers.1.mlp.gate"},
               *bad3[] = {"lm_head"};
    QC_CHECK_FAILS(ckpt_write_unq(&c, bad1, 1, 0, false), QC_ERR_ARG, "qweight");
    QC_CHECK_FAILS(ckpt_write_unq(&c, bad2, 1, 0, false), QC_ERR_ARG, "model.layers.1.mlp.gate.weight");
    QC_CHECK_FAILS(ckpt_write_unq(&c, bad3, 1, 0, false), QC_ERR_ARG, "decoder block");
    expect_no_output(&c);
    ckpt_free(&c);
}

static void test_ckpt_tied_drops_lm_head(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.group_size = 64, .tied = true, .lm_head_in_parts = true});
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    ckpt_check_readback(&c, false);
    ckpt_free(&c);
}

/* Parts that are not a valid AWQ checkpoint, and config errors: refused, nothing left behind. */
static void test_ckpt_failures_leave_nothing(void **state) {
    (void)state;
    ckpt c;
    ckpt_make(&c, &(ckpt_opts){.group_size = 32});
    char *saved = c.parts[1];
    c.parts[1] = join(c.root, "missing.safetensors");
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_IO, "missing.safetensors");
    expect_no_output(&c);
    free(c.parts[1]);
    c.parts[1] = c.parts[0];
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "two parts");
    expect_no_output(&c);
    c.parts[1] = saved;
    /* config: bits, group_size -1, a group size that disagrees with the tensors, bad meta_json */
    c.cfg.bits = 8;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "bits = 8");
    c.cfg.bits = 4;
    c.cfg.group_size = -1;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "never -1");
    c.cfg.group_size = 64;
    QC_CHECK_FAILS(ckpt_write(&c, 0, false), QC_ERR_ARG, "qzeros");
    expect_no_output(&c);
    c.cfg.group_size = 32;
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
    /* extra parts that break the layout, one at a time */
    int32_t i32[64 * 8] = {0}, gidx[64] = {0};
    uint16_t f16[64 * 8] = {0};
    float f32[64 * 64] = {0}, big[32 * 32];
    for (int i = 0; i < 32 * 32; i++) big[i] = i == 77 ? 1e6f : 0.5f;
    const struct { tdesc t[4]; int n; qc_status st; const char *needle; } bad[] = {
        /* a GPTQ-style g_idx beside an AWQ module */
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {64, 8}, i32},
          {"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_I32, 2, {2, 8}, i32},
          {"model.layers.1.mlp.up_proj.scales", QC_DTYPE_F16, 2, {2, 64}, f16},
          {"model.layers.1.mlp.up_proj.g_idx", QC_DTYPE_I32, 1, {64, 0}, gidx}}, 4, QC_ERR_ARG, "up_proj.g_idx"},
        /* a float weight beside the qweight */
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {64, 8}, i32},
          {"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_I32, 2, {2, 8}, i32},
          {"model.layers.1.mlp.up_proj.scales", QC_DTYPE_F16, 2, {2, 64}, f16},
          {"model.layers.1.mlp.up_proj.weight", QC_DTYPE_F32, 2, {64, 64}, f32}}, 4, QC_ERR_ARG, "both"},
        /* scales missing; scales of the wrong shape; qzeros of the wrong dtype; N not a multiple of 8 */
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {64, 8}, i32},
          {"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_I32, 2, {2, 8}, i32}}, 2, QC_ERR_ARG, "no scales"},
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {64, 8}, i32},
          {"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_I32, 2, {2, 8}, i32},
          {"model.layers.1.mlp.up_proj.scales", QC_DTYPE_F16, 2, {1, 64}, f16}}, 3, QC_ERR_ARG, "up_proj.scales"},
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {64, 8}, i32},
          {"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_F16, 2, {2, 8}, f16},
          {"model.layers.1.mlp.up_proj.scales", QC_DTYPE_F16, 2, {2, 64}, f16}}, 3, QC_ERR_ARG, "up_proj.qzeros"},
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_F16, 2, {64, 8}, f16}}, 1, QC_ERR_ARG, "2-D I32"},
        {{{"model.layers.1.mlp.up_proj.qweight", QC_DTYPE_I32, 2, {60, 8}, i32}}, 1, QC_ERR_ARG, "group_size"},
        /* an orphan qzeros, a quantized lm_head, a float that overflows fp16 while streaming */
        {{{"model.layers.1.mlp.up_proj.qzeros", QC_DTYPE_I32, 2, {2, 8}, i32}}, 1, QC_ERR_ARG, "no quantized module"},
        {{{"lm_head.qweight", QC_DTYPE_I32, 2, {64, 8}, i32}}, 1, QC_ERR_UNSUPPORTED, "lm_head"},
        {{{"model.zz.weight", QC_DTYPE_F32, 2, {32, 32}, big}}, 1, QC_ERR_NUMERIC, "model.zz.weight"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *p = add_part_path(&c, "zz-bad.safetensors");
        write_st(p, bad[i].t, bad[i].n);
        QC_CHECK_FAILS(ckpt_write(&c, 4096, false), bad[i].st, bad[i].needle);
        expect_no_output(&c);
        free(p);
        c.n_parts--;
    }
    /* only float parts: nothing quantized */
    char *const only_rest = c.parts[c.n_parts - 1];
    QC_CHECK_FAILS(qc_awq_write_checkpoint(c.out, c.model, (const char *const *)&only_rest, 1, &c.cfg, NULL, 0, 0,
                                           false), QC_ERR_ARG, "qweight");
    expect_no_output(&c);
    /* and the same inputs now succeed */
    QC_CHECK_OK(ckpt_write(&c, 0, false));
    ckpt_check_readback(&c, false);
    /* never the source model */
    const char *keep = c.out;
    c.out = c.model;
    QC_CHECK_FAILS(ckpt_write(&c, 0, true), QC_ERR_ARG, "source model");
    c.out = keep;
    ckpt_free(&c);
}

/* ---- detect and load ---- */

static const char *model_with(const char *config, const char *quant_config) {
    const char *d = new_dir("det");
    char *p = join(d, "config.json");
    if (config) write_text(p, config);
    free(p);
    p = join(d, "quant_config.json");
    if (quant_config) write_text(p, quant_config);
    free(p);
    return d;
}

static void test_detect(void **state) {
    (void)state;
    bool is;
    qc_awq_config cfg;
    QC_CHECK_OK(qc_awq_detect(model_with("{\"model_type\": \"llama\"}", NULL), &is, &cfg));
    assert_false(is);
    QC_CHECK_OK(qc_awq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}",
                                         "{\"w_bit\": 4}"), &is, &cfg));
    assert_false(is); /* config.json decides; quant_config.json only when it has no quantization_config */
    QC_CHECK_OK(qc_awq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"AWQ\", \"bits\": 4, "
                                         "\"group_size\": 64, \"zero_point\": true, \"version\": \"GEMM\", "
                                         "\"modules_to_not_convert\": null, \"meta\": {\"x\": 1}, "
                                         "\"backend\": \"auto\", \"format\": \"gemm\"}}", NULL), &is, &cfg));
    assert_true(is);
    assert_int_equal(cfg.bits, 4);
    assert_int_equal(cfg.group_size, 64);
    assert_null(cfg.quantizer);
    /* transformers' defaults for absent fields */
    QC_CHECK_OK(qc_awq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"awq\"}}", NULL), &is, &cfg));
    assert_true(is);
    assert_int_equal(cfg.bits, 4);
    assert_int_equal(cfg.group_size, 128);
    /* AutoAWQ's legacy file, no quant_method there */
    QC_CHECK_OK(qc_awq_detect(model_with("{\"model_type\": \"llama\"}", "{\"zero_point\": true, \"q_group_size\": 32, "
                                         "\"w_bit\": 4, \"version\": \"GEMM\"}"), &is, &cfg));
    assert_true(is);
    assert_int_equal(cfg.group_size, 32);
    QC_CHECK_OK(qc_awq_detect(model_with("{\"quantization_config\": {\"quant_method\": \"awq\", \"group_size\": -1}}",
                                         NULL), &is, &cfg));
    assert_int_equal(cfg.group_size, -1);
    static const struct { const char *qc; qc_status st; const char *needle; } bad[] = {
        {"{\"quant_method\": \"awq\", \"bits\": 8}", QC_ERR_UNSUPPORTED, "bits = 8"},
        {"{\"quant_method\": \"awq\", \"zero_point\": false}", QC_ERR_UNSUPPORTED, "zero_point"},
        {"{\"quant_method\": \"awq\", \"version\": \"gemv\"}", QC_ERR_UNSUPPORTED, "gemv"},
        {"{\"quant_method\": \"awq\", \"backend\": \"llm-awq\"}", QC_ERR_UNSUPPORTED, "llm-awq"},
        {"{\"quant_method\": \"awq\", \"format\": \"gemv_fast\"}", QC_ERR_UNSUPPORTED, "gemv_fast"},
        {"{\"quant_method\": \"awq\", \"group_size\": 0}", QC_ERR_FORMAT, "group_size"},
        {"{\"quant_method\": \"awq\", \"group_size\": 12.5}", QC_ERR_FORMAT, "group_size"},
        {"{\"quant_method\": \"awq\", \"zero_point\": \"yes\"}", QC_ERR_FORMAT, "zero_point"},
        {"{\"quant_method\": \"awq\", \"version\": 2}", QC_ERR_FORMAT, "version"},
        {"{\"quant_method\": 7}", QC_ERR_FORMAT, "quant_method"},
        {"[1]", QC_ERR_FORMAT, "not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[256];
        snprintf(text, sizeof text, "{\"quantization_config\": %s}", bad[i].qc);
        QC_CHECK_FAILS(qc_awq_detect(model_with(text, NULL), &is, &cfg), bad[i].st, bad[i].needle);
    }
    QC_CHECK_FAILS(qc_awq_detect(model_with("{\"model_type\": \"llama\"}", "{\"w_bit\": 3}"), &is, &cfg),
                   QC_ERR_UNSUPPORTED, "quant_config.json");
    QC_CHECK_FAILS(qc_awq_detect(model_with("{\"quantization_config\": ", NULL), &is, &cfg), QC_ERR_FORMAT,
                   "config.json");
    QC_CHECK_FAILS(qc_awq_detect(model_with(NULL, NULL), &is, &cfg), QC_ERR_IO, "config.json");
}

/* A one-module safetensors file (N = 64, K = 64, gs 32) with one tensor dropped or changed. */
typedef struct {
    int32_t qw[64 * 8], qz[2 * 8];
    uint16_t s[2 * 64], bias[64];
} rawmod;

/* groups: the rows of qzeros; scales_rows: those of scales (the same unless a test breaks them). */
static qc_weights *rawmod_open(const rawmod *r, int skip, int64_t groups, qc_dtype scales_dt, int64_t scales_rows) {
    static int serial;
    char name[64];
    snprintf(name, sizeof name, "raw%d.safetensors", serial++);
    char *p = join(qc_test_tmpdir(), name);
    static float s32[2 * 64];
    for (int i = 0; i < 2 * 64; i++) s32[i] = qc_fp16_to_f32(r->s[i]);
    tdesc t[4] = {
        {"m.qweight", QC_DTYPE_I32, 2, {64, 8}, r->qw}, {"m.qzeros", QC_DTYPE_I32, 2, {groups, 8}, r->qz},
        {"m.scales", scales_dt, 2, {scales_rows, 64}, scales_dt == QC_DTYPE_F32 ? (const void *)s32 : r->s},
        {"m.bias", QC_DTYPE_F16, 1, {64, 0}, r->bias},
    };
    tdesc keep[4];
    int n = 0;
    for (int i = 0; i < 4; i++)
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
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, 32, false, true));
    fill_layer(&q);
    QC_CHECK_OK(qc_awq_pack(&q, r.qw, r.qz, r.s));
    for (int n = 0; n < 64; n++) r.bias[n] = qc_f32_to_fp16(q.bias[n]);
    for (int i = 0; i < 2 * 64; i++) q.scales[i] = fp16_round(q.scales[i]);
    qc_awq_config cfg = {.bits = 4, .group_size = 32};
    float W[64 * 64], want[64 * 64], bias[64];
    bool hb;
    qc_qlinear_dequant(&q, want);
    qc_weights *w = rawmod_open(&r, -1, 2, QC_DTYPE_F16, 2);
    QC_CHECK_OK(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb));
    assert_true(hb);
    check_float_equal(W, want, 64 * 64, "m");
    for (int n = 0; n < 64; n++) assert_true(bias[n] == fp16_round(q.bias[n]));
    QC_CHECK_OK(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, NULL, NULL));
    /* wrong N/K against the tensors; shapes AWQ cannot hold; a missing module */
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 128, W, bias, &hb), QC_ERR_FORMAT, "m.qweight");
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 128, 64, W, bias, &hb), QC_ERR_FORMAT, "[64, 8], expected [64, 16]");
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 60, 64, W, bias, &hb), QC_ERR_UNSUPPORTED, "multiple of 8");
    QC_CHECK_FAILS(qc_awq_load_linear(w, "nope", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "nope.qweight");
    cfg.group_size = 64;
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.qzeros");
    cfg.bits = 8;
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_UNSUPPORTED, "4-bit");
    cfg = (qc_awq_config){.bits = 4, .group_size = 32};
    qc_weights_free(w);
    /* missing qzeros; F32 scales; scales with the wrong group count; no bias */
    w = rawmod_open(&r, 1, 2, QC_DTYPE_F16, 2);
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.qzeros");
    qc_weights_free(w);
    w = rawmod_open(&r, -1, 2, QC_DTYPE_F32, 2);
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "dtype F32");
    qc_weights_free(w);
    w = rawmod_open(&r, -1, 2, QC_DTYPE_F16, 1);
    QC_CHECK_FAILS(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb), QC_ERR_FORMAT, "m.scales");
    qc_weights_free(w);
    w = rawmod_open(&r, 3, 2, QC_DTYPE_F16, 2);
    QC_CHECK_OK(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, bias, &hb));
    assert_false(hb);
    check_float_equal(W, want, 64 * 64, "m without bias");
    qc_weights_free(w);
    qc_qlinear_free(&q);

    /* group_size -1 (one group of K), as detect accepts it */
    QC_CHECK_OK(qc_qlinear_alloc(&q, 64, 64, 4, 64, false, true));
    fill_layer(&q);
    QC_CHECK_OK(qc_awq_pack(&q, r.qw, r.qz, r.s));
    for (int i = 0; i < 64; i++) q.scales[i] = fp16_round(q.scales[i]);
    qc_qlinear_dequant(&q, want);
    w = rawmod_open(&r, -1, 1, QC_DTYPE_F16, 1);
    cfg.group_size = -1;
    QC_CHECK_OK(qc_awq_load_linear(w, "m", &cfg, 64, 64, W, NULL, NULL));
    check_float_equal(W, want, 64 * 64, "m, one group");
    qc_weights_free(w);
    qc_qlinear_free(&q);
}

/* C.4.2 and B.3's DECISION: quantize with the AWQ min/max quantizer (fp16 scales, as AutoAWQ's final pass),
 * write, load. The loader's weight equals the fake-quantized W_hat bit for bit, and the codes AutoAWQ would
 * recompute from W_hat, round((W_hat + z*s16) / s16), are the ones we packed. */
static void test_quantizer_to_checkpoint(void **state) {
    (void)state;
    enum { N = 64, K = 256, GS = 128, G = K / GS };
    static float W0[N * K], What[N * K], L[N * K];
    for (int i = 0; i < N * K; i++) W0[i] = (rnd_unit() - 0.5f) * (1.0f + (float)(i % 7));
    qc_qlinear q;
    QC_CHECK_OK(qc_qlinear_alloc(&q, N, K, 4, GS, false, false));
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            const float *w = W0 + (size_t)n * K + g * GS;
            float mx = w[0], mn = w[0];
            for (int j = 1; j < GS; j++) mx = w[j] > mx ? w[j] : mx, mn = w[j] < mn ? w[j] : mn;
            float s = fp16_round(fmaxf(mx - mn, 1e-5f) / 15.0f);
            float z = fminf(fmaxf(-nearbyintf(mn / s), 0.0f), 15.0f);
            q.scales[g * N + n] = s;
            q.zeros[g * N + n] = (int32_t)z;
            for (int j = 0; j < GS; j++) {
                float c = fminf(fmaxf(nearbyintf(w[j] / s) + z, 0.0f), 15.0f);
                q.codes[(size_t)n * K + g * GS + j] = (uint8_t)c;
                What[(size_t)n * K + g * GS + j] = (c - z) * s;
            }
        }
    const char *root = new_dir("quant");
    char *model = join(root, "model"), *part = join(root, "part.safetensors"), *out = join(root, "out");
    assert_int_equal(mkdir(model, 0755), 0);
    char *p = join(model, "config.json");
    write_text(p, "{\"model_type\": \"llama\", \"torch_dtype\": \"float32\"}");
    free(p);
    const char *name = "model.layers.0.mlp.up_proj";
    const qc_qlinear *l = &q;
    QC_CHECK_OK(qc_awq_write_part(part, &l, &name, 1));
    const qc_awq_config cfg = {.bits = 4, .group_size = GS};
    QC_CHECK_OK(qc_awq_write_checkpoint(out, model, (const char *const *)&part, 1, &cfg, NULL, 0, 0, false));
    qc_weights *w;
    QC_CHECK_OK(qc_weights_open(out, &w));
    QC_CHECK_OK(qc_awq_load_linear(w, name, &cfg, N, K, L, NULL, NULL));
    check_float_equal(L, What, (size_t)N * K, "AWQ min/max quantizer, fp16 scales");
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            const float s = q.scales[(k / GS) * N + n], z = (float)q.zeros[(k / GS) * N + n];
            assert_int_equal((int)nearbyintf((L[n * K + k] + z * s) / s), q.codes[(size_t)n * K + k]);
        }
    qc_weights_free(w);
    qc_qlinear_free(&q);
    free(model);
    free(part);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_interleave),
        cmocka_unit_test(test_roundtrip_random),
        cmocka_unit_test(test_unpack_fast_vs_plain),
        cmocka_unit_test(test_dequant_formula),
        cmocka_unit_test(test_pack_rejects),
        cmocka_unit_test(test_ckpt_roundtrip),
        cmocka_unit_test(test_ckpt_sharded),
        cmocka_unit_test(test_ckpt_part_shards),
        cmocka_unit_test(test_ckpt_config_files),
        cmocka_unit_test(test_ckpt_modules_to_not_convert),
        cmocka_unit_test(test_ckpt_tied_drops_lm_head),
        cmocka_unit_test(test_ckpt_failures_leave_nothing),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_load_linear_checks),
        cmocka_unit_test(test_quantizer_to_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
