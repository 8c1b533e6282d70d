/* Synthetic model directories (see synth.h). */
#include "synth.h"

#include "arch.h"

#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define SHARD_DEFAULT  5000000000ull        /* transformers' max_shard_size "5GB" */
#define CHUNK_ELEMS    ((int64_t)8 << 20)   /* elements generated per write: 16 MiB in BF16 */
#define MAX_THREADS    256
#define STD_WEIGHT     0.02f                /* initializer_range */
#define STD_NORM       0.02f                /* norms: 1 + STD_NORM z */
#define STD_BIAS       0.01f

/* ---- presets: values from each model's config.json on the Hugging Face hub ---- */

#define LLAMA3_ROPE .rope_llama3 = true, .rope_factor = 8.0, .rope_low_freq_factor = 1.0, \
                    .rope_high_freq_factor = 4.0, .rope_original_max_pos = 8192
#define LLAMA3_TOK  .bos_token_id = 128000, .eos_token_id = 128001, .bos_token = "<|begin_of_text|>", \
                    .eos_token = "<|end_of_text|>", .add_bos = true, .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL
#define SPM_TOK     .bos_token_id = 1, .eos_token_id = 2, .bos_token = "<s>", .eos_token = "</s>", .add_bos = true, \
                    .vocab_layout = QC_SYNTH_VOCAB_SPM

/* Gemma: <pad> 0, <eos> 1, <bos> 2 (the synthetic SentencePiece layout keeps <unk> at 0) */
#define GEMMA_TOK   .bos_token_id = 2, .eos_token_id = 1, .bos_token = "<bos>", .eos_token = "<eos>", .add_bos = true, \
                    .vocab_layout = QC_SYNTH_VOCAB_SPM

static const qc_synth_spec k_presets[] = {
    {.name = "llama-3.1-8b", .hf_id = "meta-llama/Llama-3.1-8B", .architecture = "LlamaForCausalLM",
     .model_type = "llama", .hidden_size = 4096, .intermediate_size = 14336, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 8, .head_dim = 128, .vocab_size = 128256, .max_position_embeddings = 131072,
     .rope_theta = 500000.0, LLAMA3_ROPE, .rms_norm_eps = 1e-5, LLAMA3_TOK, .torch_dtype = "bfloat16"},
    {.name = "llama-3.1-70b", .hf_id = "meta-llama/Llama-3.1-70B", .architecture = "LlamaForCausalLM",
     .model_type = "llama", .hidden_size = 8192, .intermediate_size = 28672, .n_layers = 80, .n_heads = 64,
     .n_kv_heads = 8, .head_dim = 128, .vocab_size = 128256, .max_position_embeddings = 131072,
     .rope_theta = 500000.0, LLAMA3_ROPE, .rms_norm_eps = 1e-5, LLAMA3_TOK, .torch_dtype = "bfloat16"},
    {.name = "llama-2-7b", .hf_id = "meta-llama/Llama-2-7b-hf", .architecture = "LlamaForCausalLM",
     .model_type = "llama", .hidden_size = 4096, .intermediate_size = 11008, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 32, .head_dim = 128, .vocab_size = 32000, .max_position_embeddings = 4096,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5, SPM_TOK, .torch_dtype = "float16"},
    {.name = "llama-2-13b", .hf_id = "meta-llama/Llama-2-13b-hf", .architecture = "LlamaForCausalLM",
     .model_type = "llama", .hidden_size = 5120, .intermediate_size = 13824, .n_layers = 40, .n_heads = 40,
     .n_kv_heads = 40, .head_dim = 128, .vocab_size = 32000, .max_position_embeddings = 4096,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5, SPM_TOK, .torch_dtype = "float16"},
    {.name = "llama-2-70b", .hf_id = "meta-llama/Llama-2-70b-hf", .architecture = "LlamaForCausalLM",
     .model_type = "llama", .hidden_size = 8192, .intermediate_size = 28672, .n_layers = 80, .n_heads = 64,
     .n_kv_heads = 8, .head_dim = 128, .vocab_size = 32000, .max_position_embeddings = 4096,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5, SPM_TOK, .torch_dtype = "float16"},
    {.name = "mistral-7b", .hf_id = "mistralai/Mistral-7B-v0.1", .architecture = "MistralForCausalLM",
     .model_type = "mistral", .hidden_size = 4096, .intermediate_size = 14336, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 8, .head_dim = 128, .vocab_size = 32000, .max_position_embeddings = 32768,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5, .sliding_window = 4096, SPM_TOK, .torch_dtype = "bfloat16"},
    {.name = "qwen2.5-7b", .hf_id = "Qwen/Qwen2.5-7B", .architecture = "Qwen2ForCausalLM", .model_type = "qwen2",
     .hidden_size = 3584, .intermediate_size = 18944, .n_layers = 28, .n_heads = 28, .n_kv_heads = 4,
     .head_dim = 128, .vocab_size = 152064, .max_position_embeddings = 131072, .rope_theta = 1000000.0,
     .rms_norm_eps = 1e-6, .qkv_bias = true, .sliding_window = 131072, .max_window_layers = 28,
     .bos_token_id = 151643, .eos_token_id = 151643, .bos_token = "<|endoftext|>", .eos_token = "<|endoftext|>",
     .add_bos = false, .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL, .torch_dtype = "bfloat16"},
    {.name = "qwen3-8b", .hf_id = "Qwen/Qwen3-8B", .architecture = "Qwen3ForCausalLM", .model_type = "qwen3",
     .hidden_size = 4096, .intermediate_size = 12288, .n_layers = 36, .n_heads = 32, .n_kv_heads = 8,
     .head_dim = 128, .vocab_size = 151936, .max_position_embeddings = 40960, .rope_theta = 1000000.0,
     .rms_norm_eps = 1e-6, .qk_norm = true, .max_window_layers = 36, .bos_token_id = 151643,
     .eos_token_id = 151645, .bos_token = "<|endoftext|>", .eos_token = "<|im_end|>", .add_bos = false,
     .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL, .torch_dtype = "bfloat16"},
    {.name = "phi-3-mini", .hf_id = "microsoft/Phi-3-mini-4k-instruct", .architecture = "Phi3ForCausalLM",
     .model_type = "phi3", .hidden_size = 3072, .intermediate_size = 8192, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 32, .head_dim = 96, .vocab_size = 32064, .max_position_embeddings = 4096,
     .rope_theta = 10000.0, .rms_norm_eps = 1e-5, .sliding_window = 2047,
     SPM_TOK, /* the real config's eos_token_id is 32000 (<|endoftext|>, an added token); the synthetic
               * SentencePiece-layout tokenizer keeps </s> at 2 */
     .torch_dtype = "bfloat16"},
    {.name = "mixtral-8x7b", .hf_id = "mistralai/Mixtral-8x7B-v0.1", .architecture = "MixtralForCausalLM",
     .model_type = "mixtral", .hidden_size = 4096, .intermediate_size = 14336, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 8, .head_dim = 128, .vocab_size = 32000, .max_position_embeddings = 32768,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-5, SPM_TOK, .torch_dtype = "bfloat16", .n_experts = 8,
     .n_experts_per_tok = 2},
    {.name = "qwen3-30b-a3b", .hf_id = "Qwen/Qwen3-30B-A3B", .architecture = "Qwen3MoeForCausalLM",
     .model_type = "qwen3_moe", .hidden_size = 2048, .intermediate_size = 6144, .n_layers = 48, .n_heads = 32,
     .n_kv_heads = 4, .head_dim = 128, .vocab_size = 151936, .max_position_embeddings = 40960,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qk_norm = true, .max_window_layers = 48,
     .bos_token_id = 151643, .eos_token_id = 151645, .bos_token = "<|endoftext|>", .eos_token = "<|im_end|>",
     .add_bos = false, .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL, .torch_dtype = "bfloat16", .n_experts = 128,
     .n_experts_per_tok = 8, .moe_intermediate_size = 768, .norm_topk_prob = true},
    {.name = "qwen2-57b-a14b", .hf_id = "Qwen/Qwen2-57B-A14B", .architecture = "Qwen2MoeForCausalLM",
     .model_type = "qwen2_moe", .hidden_size = 3584, .intermediate_size = 18944, .n_layers = 28, .n_heads = 28,
     .n_kv_heads = 4, .head_dim = 128, .vocab_size = 151936, .max_position_embeddings = 131072,
     .rope_theta = 1000000.0, .rms_norm_eps = 1e-6, .qkv_bias = true, .sliding_window = 131072,
     .max_window_layers = 28, .bos_token_id = 151643, .eos_token_id = 151643, .bos_token = "<|endoftext|>",
     .eos_token = "<|endoftext|>", .add_bos = false, .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL,
     .torch_dtype = "bfloat16", .n_experts = 64, .n_experts_per_tok = 8, .moe_intermediate_size = 2560,
     .shared_expert_intermediate_size = 20480, .norm_topk_prob = false},
    {.name = "gemma-2-9b", .hf_id = "google/gemma-2-9b", .architecture = "Gemma2ForCausalLM", .model_type = "gemma2",
     .hidden_size = 3584, .intermediate_size = 14336, .n_layers = 42, .n_heads = 16, .n_kv_heads = 8, .head_dim = 256,
     .vocab_size = 256000, .max_position_embeddings = 8192, .rope_theta = 10000.0, .rms_norm_eps = 1e-6,
     .tie_word_embeddings = true, .sliding_window = 4096, .query_pre_attn_scalar = 256, .attn_softcap = 50.0,
     .final_softcap = 30.0, GEMMA_TOK, .torch_dtype = "float32"},
    {.name = "gemma-3-12b", .hf_id = "google/gemma-3-12b-pt", .architecture = "Gemma3ForCausalLM",
     .model_type = "gemma3_text", .hidden_size = 3840, .intermediate_size = 15360, .n_layers = 48, .n_heads = 16,
     .n_kv_heads = 8, .head_dim = 256, .vocab_size = 262208, .max_position_embeddings = 131072,
     .rope_theta = 1000000.0, .rope_linear = true, .rope_factor = 8.0, .rms_norm_eps = 1e-6,
     .tie_word_embeddings = true, .qk_norm = true, .sliding_window = 1024, .query_pre_attn_scalar = 256,
     .sliding_window_pattern = 6, .rope_local_base_freq = 10000.0, GEMMA_TOK, .torch_dtype = "bfloat16"},
    /* OPT: LayerNorms (eps 1e-5) with biases, learned positions (2048 + 2 rows), ReLU fc1/fc2, biases on every
     * linear; its GPT-2 tokenizer's </s> (2) is both BOS (prepended) and EOS, kept at 2 by the SentencePiece
     * layout (<unk> 0, bytes 3..258) */
    {.name = "opt-6.7b", .hf_id = "facebook/opt-6.7b", .architecture = "OPTForCausalLM", .model_type = "opt",
     .hidden_size = 4096, .intermediate_size = 16384, .n_layers = 32, .n_heads = 32, .n_kv_heads = 32,
     .head_dim = 128, .vocab_size = 50272, .max_position_embeddings = 2048, .rms_norm_eps = 1e-5,
     .tie_word_embeddings = true, .qkv_bias = true, .bos_token_id = 2, .eos_token_id = 2, .bos_token = "</s>",
     .eos_token = "</s>", .add_bos = true, .vocab_layout = QC_SYNTH_VOCAB_SPM, .torch_dtype = "float16"},
};
#define N_PRESETS ((int)(sizeof k_presets / sizeof k_presets[0]))

const qc_synth_spec *qc_synth_presets(int *count) {
    *count = N_PRESETS;
    return k_presets;
}

const qc_synth_spec *qc_synth_find(const char *name) {
    for (int i = 0; name && i < N_PRESETS; i++)
        if (strcmp(k_presets[i].name, name) == 0) return &k_presets[i];
    return NULL;
}

void qc_synth_opts_init(qc_synth_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = QC_DTYPE_BF16;
}

/* ---- the generator ---- */

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t tensor_key(uint64_t seed, uint64_t t) {
    return splitmix64(splitmix64(seed) ^ (t * 0xD1B54A32D192ED03ull));
}

/* Sum of four 16-bit uniform lanes, centred and scaled to variance 1 (Irwin-Hall n = 4: |z| <= 3.46). */
static inline float lanes_to_normal(uint64_t h) {
    const float inv_sd = 1.0f / 37837.23f;            /* sqrt(4 * (65536^2 - 1) / 12) */
    uint32_t s = (uint32_t)(h & 0xFFFF) + (uint32_t)((h >> 16) & 0xFFFF) + (uint32_t)((h >> 32) & 0xFFFF) +
                 (uint32_t)(h >> 48);
    return ((float)s - 131070.0f) * inv_sd;
}

float qc_synth_normal(uint64_t seed, uint64_t t, uint64_t i) {
    return lanes_to_normal(splitmix64(tensor_key(seed, t) + i));
}

/* ---- the plan: every tensor in module order ---- */

typedef enum { K_WEIGHT, K_NORM, K_BIAS, K_NORM_UNIT } tensor_kind; /* K_NORM_UNIT: a (1 + w) norm's w */

typedef struct plan_tensor {
    char        name[80];
    int         ndim;
    int64_t     shape[2];
    int64_t     numel;
    tensor_kind kind;
    int         shard;
} plan_tensor;

typedef struct plan {
    plan_tensor *t;
    int          n, cap;
    uint64_t     bytes, params;
    int          n_shards;
    const char  *layers;     /* the layers' module path (arch.h) */
} plan;

/* Adds <layers>.<layer>.<what> (p->layers: model.layers, OPT's model.decoder.layers), or <what> when layer < 0;
 * cols 0 for a vector. */
static bool plan_add(plan *p, tensor_kind kind, int64_t rows, int64_t cols, int layer, const char *what) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        plan_tensor *t = realloc(p->t, sizeof *t * (size_t)cap);
        if (!t) return false;
        p->t = t;
        p->cap = cap;
    }
    plan_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    if (layer < 0) snprintf(t->name, sizeof t->name, "%s", what);
    else snprintf(t->name, sizeof t->name, "%s.%d.%s", p->layers, layer, what);
    t->kind = kind;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = cols ? rows * cols : rows;
    return true;
}

/* The preset's shapes as the config the written config.json describes (what arch.h needs). */
static qc_status spec_config(const qc_synth_spec *s, qc_model_config *c) {
    memset(c, 0, sizeof *c);
    int n;
    const qc_arch_desc *a = qc_arch_descs(&n);
    int found = -1;
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].class_name, s->architecture) == 0) found = i;
    if (found < 0) return qc_fail(QC_ERR_UNSUPPORTED, "synth: %s: architecture %s is not supported", s->name, s->architecture);
    c->arch = a[found].id;
    c->hidden_size = s->hidden_size;
    c->intermediate_size = s->intermediate_size;
    c->n_heads = s->n_heads;
    c->n_kv_heads = s->n_kv_heads;
    c->head_dim = s->head_dim;
    c->vocab_size = s->vocab_size;
    c->qkv_bias = s->qkv_bias;
    c->qk_norm = s->qk_norm;
    c->tie_word_embeddings = s->tie_word_embeddings;
    c->n_layers = s->n_layers;
    c->o_bias = c->mlp_bias = a[found].id == QC_ARCH_OPT && s->qkv_bias; /* OPT's enable_bias: every linear */
    if (a[found].moe) {
        c->n_experts = s->n_experts;
        c->n_experts_per_tok = s->n_experts_per_tok;
        c->moe_intermediate_size = s->moe_intermediate_size > 0 ? s->moe_intermediate_size : s->intermediate_size;
        c->shared_expert_intermediate_size = s->shared_expert_intermediate_size;
        c->norm_topk_prob = s->norm_topk_prob;
        c->decoder_sparse_step = 1;
    }
    return QC_OK;
}

/* The tensors in the order transformers registers them (arch.h's linears in order, each with its bias; a
 * norm right after the last linear of its module, e.g. self_attn.q_norm after o_proj; the layer norms
 * last), so that tensor t's values (seeded by its index) do not depend on how the description is laid out. */
static qc_status make_plan(const qc_synth_spec *s, int n_layers, plan *p) {
    qc_model_config c;
    qc_status st = spec_config(s, &c);
    if (st) return st;
    const qc_arch_desc *a = qc_arch_desc_of(c.arch);
    const int64_t d = s->hidden_size;
    const tensor_kind norm_kind = a->norm_unit_offset ? K_NORM_UNIT : K_NORM; /* (1 + w) norms: w ~ 0 */
    char what[48]; /* plan_tensor's name holds "<layers>.N." and this */
    p->layers = a->layers;
    bool ok = plan_add(p, K_WEIGHT, s->vocab_size, d, -1, a->embed);
    if (ok && a->pos_embed) ok = plan_add(p, K_WEIGHT, (int64_t)s->max_position_embeddings + a->pos_offset, d, -1, a->pos_embed);
    for (int i = 0; ok && i < n_layers; i++) {
        bool norm_done[QC_NORM_COUNT] = {0};
        for (int l = 0; ok && l < QC_LIN_COUNT; l++) {
            int N, K, row0;
            if (l == QC_LIN_GATE && qc_layer_is_moe(&c, i)) { /* the router, then each expert (w1, w2, w3 order) */
                const qc_arch_moe *moe = a->moe;
                snprintf(what, sizeof what, "%s.weight", moe->router);
                ok = plan_add(p, K_WEIGHT, c.n_experts, d, i, what);
                for (int e = 0; ok && e < c.n_experts; e++)
                    for (int j = 0; ok && j < 3; j++) {
                        int jj = strcmp(moe->lin[0], "w1") == 0 ? (int[]){0, 2, 1}[j] : j; /* Mixtral: w1, w2, w3 */
                        char path[64];
                        qc_linear_shape(&c, QC_LIN_EXPERT(e, jj), &N, &K);
                        snprintf(what, sizeof what, "%s.weight",
                                 qc_linear_path(&c, QC_LIN_EXPERT(e, jj), path, sizeof path));
                        ok = plan_add(p, K_WEIGHT, N, K, i, what);
                    }
            }
            if (!qc_linear_present(&c, i, (qc_linear_id)l)) continue;
            const char *tensor;
            qc_linear_shape(&c, (qc_linear_id)l, &N, &K);
            qc_linear_storage(&c, (qc_linear_id)l, &tensor, &row0, &N); /* a fused tensor once, whole */
            if (row0 == 0) {
                snprintf(what, sizeof what, "%s.weight", tensor);
                ok = plan_add(p, K_WEIGHT, N, K, i, what);
                if (ok && qc_linear_has_bias(&c, (qc_linear_id)l)) {
                    snprintf(what, sizeof what, "%s.bias", tensor);
                    ok = plan_add(p, K_BIAS, N, 0, i, what);
                }
            }
            const char *dot = strchr(a->lin[l].name, '.');
            size_t mod = dot ? (size_t)(dot - a->lin[l].name) : 0;
            bool last_of_module = mod > 0 && (l + 1 == QC_LIN_COUNT || !a->lin[l + 1].name ||
                                              strncmp(a->lin[l + 1].name, a->lin[l].name, mod + 1) != 0);
            for (int k = 0; ok && last_of_module && k < QC_NORM_COUNT; k++) {
                if (!qc_norm_present(&c, (qc_norm_id)k) || strncmp(a->norm[k].name, a->lin[l].name, mod + 1) != 0) continue;
                snprintf(what, sizeof what, "%s.weight", a->norm[k].name);
                ok = plan_add(p, norm_kind, qc_norm_dim(&c, (qc_norm_id)k), 0, i, what);
                norm_done[k] = true;
            }
            if (ok && l == QC_LIN_DOWN && a->moe && a->moe->shared_gate && qc_layer_is_moe(&c, i)) {
                snprintf(what, sizeof what, "%s.weight", a->moe->shared_gate);
                ok = plan_add(p, K_WEIGHT, 1, d, i, what);
            }
        }
        for (int k = 0; ok && k < QC_NORM_COUNT; k++) {
            if (norm_done[k] || !qc_norm_present(&c, (qc_norm_id)k)) continue;
            snprintf(what, sizeof what, "%s.weight", a->norm[k].name);
            ok = plan_add(p, norm_kind, qc_norm_dim(&c, (qc_norm_id)k), 0, i, what);
            if (!ok || !a->layer_norm) continue; /* OPT's LayerNorm biases */
            snprintf(what, sizeof what, "%s.bias", a->norm[k].name);
            ok = plan_add(p, K_BIAS, qc_norm_dim(&c, (qc_norm_id)k), 0, i, what);
        }
    }
    ok = ok && plan_add(p, norm_kind, d, 0, -1, a->final_norm);
    if (ok && a->final_norm_bias) ok = plan_add(p, K_BIAS, d, 0, -1, a->final_norm_bias);
    if (ok && !s->tie_word_embeddings) ok = plan_add(p, K_WEIGHT, s->vocab_size, d, -1, a->lm_head);
    if (!ok) return qc_fail(QC_ERR_NOMEM, "synth: out of memory");
    return QC_OK;
}

/* Shards in order: a new one starts when the next tensor would push the current one past max. */
static void plan_shards(plan *p, size_t esize, uint64_t max) {
    uint64_t cur = 0;
    int shard = 0;
    for (int i = 0; i < p->n; i++) {
        uint64_t b = (uint64_t)p->t[i].numel * esize;
        if (cur > 0 && cur + b > max) {
            shard++;
            cur = 0;
        }
        p->t[i].shard = shard;
        cur += b;
        p->bytes += b;
        p->params += (uint64_t)p->t[i].numel;
    }
    p->n_shards = shard + 1;
}

static void shard_name(const plan *p, int i, char *buf, size_t n) {
    if (p->n_shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", i + 1, p->n_shards);
}

/* ---- parallel chunk generation ---- */

typedef struct gen_job {
    uint64_t    key;
    int64_t     first, count;     /* element range of the tensor */
    tensor_kind kind;
    qc_dtype    dtype;
    void       *dst;              /* element `first` goes to dst[0] */
} gen_job;

static void *gen_run(void *arg) {
    const gen_job *j = arg;
    const float scale = j->kind == K_WEIGHT ? STD_WEIGHT : j->kind == K_BIAS ? STD_BIAS : STD_NORM;
    const float shift = j->kind == K_NORM ? 1.0f : 0.0f;
    for (int64_t e = 0; e < j->count; e++) {
        float v = shift + scale * lanes_to_normal(splitmix64(j->key + (uint64_t)(j->first + e)));
        if (j->dtype == QC_DTYPE_BF16) ((uint16_t *)j->dst)[e] = qc_f32_to_bf16(v);
        else if (j->dtype == QC_DTYPE_F16) ((uint16_t *)j->dst)[e] = qc_f32_to_fp16(v);
        else ((float *)j->dst)[e] = v;
    }
    return NULL;
}

/* Fills buf with elements [first, first + count) of a tensor, split over n_threads (the calling thread
 * takes the first part; a thread that cannot be started has its part done inline). */
static void gen_chunk(uint64_t key, tensor_kind kind, qc_dtype dt, int64_t first, int64_t count, void *buf,
                      int n_threads) {
    gen_job jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    bool running[MAX_THREADS] = {false};
    const size_t es = qc_dtype_size(dt);
    int nt = count < 65536 ? 1 : n_threads;
    int64_t per = (count + nt - 1) / nt;
    for (int k = 0; k < nt; k++) {
        int64_t lo = k * per, hi = lo + per < count ? lo + per : count;
        if (lo >= hi) break;
        jobs[k] = (gen_job){.key = key, .first = first + lo, .count = hi - lo, .kind = kind, .dtype = dt,
                            .dst = (char *)buf + (size_t)lo * es};
        if (k > 0 && pthread_create(&th[k], NULL, gen_run, &jobs[k]) == 0) running[k] = true;
        else if (k > 0) gen_run(&jobs[k]);
    }
    gen_run(&jobs[0]);
    for (int k = 1; k < nt; k++)
        if (running[k]) pthread_join(th[k], NULL);
}

/* ---- small file helpers ---- */

static void rm_rf(const char *path) {
    if (!qc_rm_tree(path))
        QC_LOGW("%s: could not remove: %s", path, strerror(errno));
}

static qc_status write_json(const char *dir, const char *name, const cJSON *j) {
    char *path = qc_path_join(dir, name);
    char *text = cJSON_Print(j);
    qc_status st;
    if (!path || !text) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
    else {
        size_t n = strlen(text);
        char *t2 = realloc(text, n + 2);
        if (!t2) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
        else {
            text = t2;
            text[n] = '\n';
            text[n + 1] = '\0';
            st = qc_write_file_atomic(path, text, n + 1);
        }
    }
    free(text);
    free(path);
    return st;
}

static qc_status copy_file(const char *src_dir, const char *dst_dir, const char *name, bool required) {
    char *src = qc_path_join(src_dir, name), *dst = qc_path_join(dst_dir, name);
    qc_status st = QC_OK;
    if (!src || !dst) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    else if (!qc_file_exists(src)) {
        if (required) st = qc_fail(QC_ERR_ARG, "%s: not found", src);
    } else {
        char *buf;
        size_t len;
        st = qc_read_file(src, (size_t)1 << 30, &buf, &len);
        if (st == QC_OK) {
            st = qc_write_file_atomic(dst, buf, len);
            free(buf);
        }
    }
    free(src);
    free(dst);
    return st;
}

/* ---- config files ---- */

static const char *dtype_torch(qc_dtype dt) {
    return dt == QC_DTYPE_BF16 ? "bfloat16" : dt == QC_DTYPE_F16 ? "float16" : "float32";
}

/* The SYNTHETIC note every config.json carries. */
static void add_note(cJSON *c, const qc_synth_spec *s, const qc_synth_opts *o, int n_layers) {
    cJSON_AddBoolToObject(c, "qcal_synthetic", true);
    char note[512];
    snprintf(note, sizeof note,
             "SYNTHETIC: random weights (seed %llu, std 0.02, %s) in the shapes of %s (%s, %d layers; this "
             "file has %d, real torch_dtype %s), written by qcal %s synth for timing. It has no language "
             "ability: do not evaluate or publish it as a model.",
             (unsigned long long)o->seed, dtype_torch(o->dtype), s->name, s->hf_id ? s->hf_id : "custom",
             s->n_layers, n_layers, s->torch_dtype ? s->torch_dtype : "unknown", QC_VERSION);
    cJSON_AddStringToObject(c, "qcal_synthetic_note", note);
}

/* OPTConfig's fields, as facebook/opt-6.7b's config.json writes them. */
static cJSON *make_config_opt(const qc_synth_spec *s, const qc_synth_opts *o, int n_layers) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return NULL;
    cJSON_AddBoolToObject(c, "_remove_final_layer_norm", false);
    cJSON_AddNumberToObject(c, "activation_dropout", 0.0);
    cJSON_AddStringToObject(c, "activation_function", "relu");
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString(s->architecture));
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(c, "bos_token_id", s->bos_token_id);
    cJSON_AddBoolToObject(c, "do_layer_norm_before", true);
    cJSON_AddNumberToObject(c, "dropout", 0.1);
    cJSON_AddBoolToObject(c, "enable_bias", s->qkv_bias);
    cJSON_AddNumberToObject(c, "eos_token_id", s->eos_token_id);
    cJSON_AddNumberToObject(c, "ffn_dim", s->intermediate_size);
    cJSON_AddNumberToObject(c, "hidden_size", s->hidden_size);
    cJSON_AddNumberToObject(c, "init_std", 0.02);
    cJSON_AddBoolToObject(c, "layer_norm_elementwise_affine", true);
    cJSON_AddNumberToObject(c, "layerdrop", 0.0);
    cJSON_AddNumberToObject(c, "max_position_embeddings", s->max_position_embeddings);
    cJSON_AddStringToObject(c, "model_type", s->model_type);
    cJSON_AddNumberToObject(c, "num_attention_heads", s->n_heads);
    cJSON_AddNumberToObject(c, "num_hidden_layers", n_layers);
    cJSON_AddNumberToObject(c, "pad_token_id", 1);
    cJSON_AddStringToObject(c, "prefix", "</s>");
    add_note(c, s, o, n_layers);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tie_word_embeddings);
    cJSON_AddStringToObject(c, "torch_dtype", dtype_torch(o->dtype));
    cJSON_AddBoolToObject(c, "use_cache", true);
    cJSON_AddNumberToObject(c, "vocab_size", s->vocab_size);
    cJSON_AddNumberToObject(c, "word_embed_proj_dim", s->hidden_size);
    return c;
}

static cJSON *make_config(const qc_synth_spec *s, const qc_synth_opts *o, int n_layers) {
    if (strcmp(s->model_type, "opt") == 0) return make_config_opt(s, o, n_layers);
    cJSON *c = cJSON_CreateObject();
    if (!c) return NULL;
    bool llama = strcmp(s->model_type, "llama") == 0, qwen = strncmp(s->model_type, "qwen", 4) == 0;
    bool gemma = strncmp(s->model_type, "gemma", 5) == 0;
    cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
    if (arch) cJSON_AddItemToArray(arch, cJSON_CreateString(s->architecture));
    if (llama || gemma || strcmp(s->model_type, "qwen3") == 0) cJSON_AddBoolToObject(c, "attention_bias", false);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(c, "bos_token_id", s->bos_token_id);
    cJSON_AddNumberToObject(c, "eos_token_id", s->eos_token_id);
    cJSON_AddNumberToObject(c, "head_dim", s->head_dim);
    if (gemma) {
        if (s->attn_softcap > 0) cJSON_AddNumberToObject(c, "attn_logit_softcapping", s->attn_softcap);
        else cJSON_AddNullToObject(c, "attn_logit_softcapping");
        if (s->final_softcap > 0) cJSON_AddNumberToObject(c, "final_logit_softcapping", s->final_softcap);
        else cJSON_AddNullToObject(c, "final_logit_softcapping");
    }
    cJSON_AddStringToObject(c, "hidden_act", gemma ? "gelu_pytorch_tanh" : "silu");
    if (gemma) cJSON_AddStringToObject(c, "hidden_activation", "gelu_pytorch_tanh");
    cJSON_AddNumberToObject(c, "hidden_size", s->hidden_size);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", s->intermediate_size);
    cJSON_AddNumberToObject(c, "max_position_embeddings", s->max_position_embeddings);
    if (s->max_window_layers > 0) cJSON_AddNumberToObject(c, "max_window_layers", s->max_window_layers);
    if (llama) cJSON_AddBoolToObject(c, "mlp_bias", false);
    cJSON_AddStringToObject(c, "model_type", s->model_type);
    cJSON_AddNumberToObject(c, "num_attention_heads", s->n_heads);
    cJSON_AddNumberToObject(c, "num_hidden_layers", n_layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", s->n_kv_heads);
    if (gemma) cJSON_AddNumberToObject(c, "pad_token_id", 0);
    if (llama) cJSON_AddNumberToObject(c, "pretraining_tp", 1);
    add_note(c, s, o, n_layers);
    if (s->query_pre_attn_scalar > 0) cJSON_AddNumberToObject(c, "query_pre_attn_scalar", s->query_pre_attn_scalar);
    cJSON_AddNumberToObject(c, "rms_norm_eps", s->rms_norm_eps);
    if (s->rope_llama3) {
        cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
        if (r) {
            cJSON_AddNumberToObject(r, "factor", s->rope_factor);
            cJSON_AddNumberToObject(r, "high_freq_factor", s->rope_high_freq_factor);
            cJSON_AddNumberToObject(r, "low_freq_factor", s->rope_low_freq_factor);
            cJSON_AddNumberToObject(r, "original_max_position_embeddings", s->rope_original_max_pos);
            cJSON_AddStringToObject(r, "rope_type", "llama3");
        }
    } else if (s->rope_linear) {
        cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
        if (r) {
            cJSON_AddNumberToObject(r, "factor", s->rope_factor);
            cJSON_AddStringToObject(r, "rope_type", "linear");
        }
    } else {
        cJSON_AddNullToObject(c, "rope_scaling");
    }
    if (s->rope_local_base_freq > 0) cJSON_AddNumberToObject(c, "rope_local_base_freq", s->rope_local_base_freq);
    cJSON_AddNumberToObject(c, "rope_theta", s->rope_theta);
    if (s->sliding_window > 0) cJSON_AddNumberToObject(c, "sliding_window", s->sliding_window);
    else if (!llama) cJSON_AddNullToObject(c, "sliding_window");
    if (s->sliding_window_pattern > 0) cJSON_AddNumberToObject(c, "sliding_window_pattern", s->sliding_window_pattern);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", s->tie_word_embeddings);
    cJSON_AddStringToObject(c, "torch_dtype", dtype_torch(o->dtype));
    cJSON_AddBoolToObject(c, "use_cache", true);
    if (qwen) cJSON_AddBoolToObject(c, "use_sliding_window", false);
    if (s->n_experts > 0) {
        bool mixtral = strcmp(s->model_type, "mixtral") == 0;
        cJSON_AddNumberToObject(c, mixtral ? "num_local_experts" : "num_experts", s->n_experts);
        cJSON_AddNumberToObject(c, "num_experts_per_tok", s->n_experts_per_tok);
        if (mixtral) {
            cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.02);
        } else {
            cJSON_AddNumberToObject(c, "moe_intermediate_size", s->moe_intermediate_size);
            if (s->shared_expert_intermediate_size > 0)
                cJSON_AddNumberToObject(c, "shared_expert_intermediate_size", s->shared_expert_intermediate_size);
            cJSON_AddBoolToObject(c, "norm_topk_prob", s->norm_topk_prob);
            cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
            cJSON_AddArrayToObject(c, "mlp_only_layers");
            cJSON_AddBoolToObject(c, "output_router_logits", false);
        }
    }
    cJSON_AddNumberToObject(c, "vocab_size", s->vocab_size);
    return c;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards. */
static void byte_to_utf8(int b, char out[4]) {
    int cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) cp = b;
    else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = '\0';
    }
}

static cJSON *added_token(int id, const char *content) {
    cJSON *t = cJSON_CreateObject();
    if (!t) return NULL;
    cJSON_AddNumberToObject(t, "id", id);
    cJSON_AddStringToObject(t, "content", content);
    cJSON_AddBoolToObject(t, "single_word", false);
    cJSON_AddBoolToObject(t, "lstrip", false);
    cJSON_AddBoolToObject(t, "rstrip", false);
    cJSON_AddBoolToObject(t, "normalized", false);
    cJSON_AddBoolToObject(t, "special", true);
    return t;
}

static cJSON *byte_level_obj(bool prefix_space) {
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    cJSON_AddStringToObject(b, "type", "ByteLevel");
    cJSON_AddBoolToObject(b, "add_prefix_space", prefix_space);
    cJSON_AddBoolToObject(b, "trim_offsets", true);
    cJSON_AddBoolToObject(b, "use_regex", true);
    return b;
}

static cJSON *make_tokenizer(const qc_synth_spec *s) {
    const bool spm = s->vocab_layout == QC_SYNTH_VOCAB_SPM;
    const int base = spm ? 3 : 0;
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "version", "1.0");
    cJSON_AddNullToObject(j, "truncation");
    cJSON_AddNullToObject(j, "padding");
    cJSON *added = cJSON_AddArrayToObject(j, "added_tokens");
    if (added) {
        if (spm) cJSON_AddItemToArray(added, added_token(0, "<unk>"));
        if (spm && s->bos_token_id == 2 && s->eos_token_id == 2) /* OPT: <pad> 1 fills the layout's id 1 */
            cJSON_AddItemToArray(added, added_token(1, "<pad>"));
        cJSON_AddItemToArray(added, added_token(s->bos_token_id, s->bos_token));
        if (s->eos_token_id != s->bos_token_id) cJSON_AddItemToArray(added, added_token(s->eos_token_id, s->eos_token));
    }
    cJSON_AddNullToObject(j, "normalizer");
    cJSON_AddItemToObject(j, "pre_tokenizer", byte_level_obj(false));
    if (s->add_bos) {
        cJSON *pp = cJSON_AddObjectToObject(j, "post_processor");
        if (pp) {
            cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
            const char *names[2] = {"single", "pair"};
            for (int k = 0; k < 2; k++) {
                cJSON *arr = cJSON_AddArrayToObject(pp, names[k]);
                for (int piece = 0; arr && piece < 2 + 2 * k; piece++) {
                    /* single: BOS $A; pair: BOS $A BOS $B (type ids 0 then 1), as Llama-3's */
                    cJSON *e = cJSON_CreateObject(), *in = cJSON_CreateObject();
                    if (!e || !in) {
                        cJSON_Delete(e);
                        cJSON_Delete(in);
                        break;
                    }
                    bool special = piece % 2 == 0;
                    cJSON_AddStringToObject(in, "id", special ? s->bos_token : piece < 2 ? "A" : "B");
                    cJSON_AddNumberToObject(in, "type_id", piece < 2 ? 0 : 1);
                    cJSON_AddItemToObject(e, special ? "SpecialToken" : "Sequence", in);
                    cJSON_AddItemToArray(arr, e);
                }
            }
            cJSON *sp = cJSON_AddObjectToObject(pp, "special_tokens");
            cJSON *b = sp ? cJSON_AddObjectToObject(sp, s->bos_token) : NULL;
            if (b) {
                cJSON_AddStringToObject(b, "id", s->bos_token);
                cJSON_AddItemToObject(b, "ids", cJSON_CreateIntArray(&s->bos_token_id, 1));
                cJSON_AddItemToObject(b, "tokens", cJSON_CreateStringArray(&s->bos_token, 1));
            }
        }
    } else {
        cJSON_AddNullToObject(j, "post_processor");
    }
    cJSON_AddItemToObject(j, "decoder", byte_level_obj(true));
    cJSON *m = cJSON_AddObjectToObject(j, "model");
    if (m) {
        cJSON_AddStringToObject(m, "type", "BPE");
        cJSON_AddNullToObject(m, "dropout");
        if (spm) cJSON_AddStringToObject(m, "unk_token", "<unk>");
        else cJSON_AddNullToObject(m, "unk_token");
        cJSON_AddNullToObject(m, "continuing_subword_prefix");
        cJSON_AddNullToObject(m, "end_of_word_suffix");
        cJSON_AddBoolToObject(m, "fuse_unk", false);
        cJSON_AddBoolToObject(m, "byte_fallback", false);
        cJSON_AddBoolToObject(m, "ignore_merges", false);
        /* The special tokens are in the model's vocabulary too: tokenizers gives an added token that is
         * not the id len(vocab) + k, which would move BOS/EOS away from their real ids. */
        cJSON *v = cJSON_AddObjectToObject(m, "vocab");
        if (v && spm) cJSON_AddNumberToObject(v, "<unk>", 0);
        if (v && spm && s->bos_token_id == s->eos_token_id) cJSON_AddNumberToObject(v, "<pad>", 1); /* OPT */
        if (v && spm) cJSON_AddNumberToObject(v, s->bos_token, s->bos_token_id);
        if (v && spm && s->eos_token_id != s->bos_token_id) cJSON_AddNumberToObject(v, s->eos_token, s->eos_token_id);
        for (int b = 0; v && b < 256; b++) {
            char u[4];
            byte_to_utf8(b, u);
            cJSON_AddNumberToObject(v, u, base + b);
        }
        if (v && !spm) cJSON_AddNumberToObject(v, s->bos_token, s->bos_token_id);
        if (v && !spm && s->eos_token_id != s->bos_token_id) cJSON_AddNumberToObject(v, s->eos_token, s->eos_token_id);
        cJSON_AddArrayToObject(m, "merges");
    }
    return j;
}

static cJSON *make_tokenizer_config(const qc_synth_spec *s) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return NULL;
    cJSON_AddBoolToObject(c, "add_bos_token", s->add_bos);
    cJSON_AddBoolToObject(c, "add_eos_token", false);
    if (s->add_bos) cJSON_AddStringToObject(c, "bos_token", s->bos_token);
    else cJSON_AddNullToObject(c, "bos_token");
    cJSON_AddBoolToObject(c, "clean_up_tokenization_spaces", false);
    cJSON_AddStringToObject(c, "eos_token", s->eos_token);
    cJSON_AddNumberToObject(c, "model_max_length", s->max_position_embeddings);
    cJSON_AddBoolToObject(c, "qcal_synthetic", true);
    cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast");
    if (s->vocab_layout == QC_SYNTH_VOCAB_SPM) cJSON_AddStringToObject(c, "unk_token", "<unk>");
    return c;
}

static cJSON *make_generation_config(const qc_synth_spec *s) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return NULL;
    cJSON_AddBoolToObject(c, "_from_model_config", true);
    cJSON_AddNumberToObject(c, "bos_token_id", s->bos_token_id);
    cJSON_AddNumberToObject(c, "eos_token_id", s->eos_token_id);
    return c;
}

static qc_status write_side_files(const qc_synth_spec *s, const qc_synth_opts *o, int n_layers, const char *dir) {
    cJSON *cfg = make_config(s, o, n_layers), *gen = make_generation_config(s);
    qc_status st = cfg && gen ? write_json(dir, "config.json", cfg) : qc_fail(QC_ERR_NOMEM, "synth: out of memory");
    if (st == QC_OK) st = write_json(dir, "generation_config.json", gen);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    if (st != QC_OK) return st;
    if (o->tokenizer_dir) {
        if ((st = copy_file(o->tokenizer_dir, dir, "tokenizer.json", true))) return st;
        return copy_file(o->tokenizer_dir, dir, "tokenizer_config.json", false);
    }
    cJSON *tok = make_tokenizer(s), *tc = make_tokenizer_config(s);
    st = tok && tc ? write_json(dir, "tokenizer.json", tok) : qc_fail(QC_ERR_NOMEM, "synth: out of memory");
    if (st == QC_OK) st = write_json(dir, "tokenizer_config.json", tc);
    cJSON_Delete(tok);
    cJSON_Delete(tc);
    return st;
}

static qc_status write_index(const plan *p, const char *dir) {
    if (p->n_shards == 1) return QC_OK;
    cJSON *root = cJSON_CreateObject();
    cJSON *md = root ? cJSON_AddObjectToObject(root, "metadata") : NULL;
    cJSON *map = root ? cJSON_AddObjectToObject(root, "weight_map") : NULL;
    bool ok = md && map && cJSON_AddNumberToObject(md, "total_parameters", (double)p->params) &&
              cJSON_AddNumberToObject(md, "total_size", (double)p->bytes);
    /* sorted by name, as transformers writes it */
    int *order = ok ? malloc(sizeof *order * (size_t)p->n) : NULL;
    ok = ok && order;
    for (int i = 0; ok && i < p->n; i++) {
        int k = i;
        while (k > 0 && strcmp(p->t[order[k - 1]].name, p->t[i].name) > 0) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (int i = 0; ok && i < p->n; i++) {
        char fn[64];
        shard_name(p, p->t[order[i]].shard, fn, sizeof fn);
        ok = cJSON_AddStringToObject(map, p->t[order[i]].name, fn) != NULL;
    }
    free(order);
    qc_status st = ok ? write_json(dir, "model.safetensors.index.json", root)
                      : qc_fail(QC_ERR_NOMEM, "model.safetensors.index.json: out of memory");
    cJSON_Delete(root);
    return st;
}

/* ---- checks ---- */

static qc_status check_spec(const qc_synth_spec *s, const qc_synth_opts *o, int n_layers) {
    const char *n = s->name ? s->name : "(unnamed spec)";
    if (!s->architecture || !s->model_type || !s->bos_token || !s->eos_token)
        return qc_fail(QC_ERR_ARG, "synth %s: architecture, model_type, bos_token and eos_token are required", n);
    if (s->hidden_size < 1 || s->intermediate_size < 1 || s->n_layers < 1 || s->n_heads < 1 || s->n_kv_heads < 1 ||
        s->head_dim < 2 || s->head_dim % 2 || s->n_heads % s->n_kv_heads || s->hidden_size > (1 << 20) ||
        s->intermediate_size > (1 << 22) || s->n_heads > 4096 || s->head_dim > 1024 || s->vocab_size > (1 << 24) ||
        s->max_position_embeddings < 1)
        return qc_fail(QC_ERR_ARG, "synth %s: inconsistent shapes (hidden %d, intermediate %d, heads %d/%d, "
                       "head_dim %d, vocab %d)", n, s->hidden_size, s->intermediate_size, s->n_heads,
                       s->n_kv_heads, s->head_dim, s->vocab_size);
    if (s->n_experts < 0 || s->n_experts > QC_EXPERTS_MAX ||
        (s->n_experts > 0 && (s->n_experts_per_tok < 1 || s->n_experts_per_tok > s->n_experts ||
                              s->moe_intermediate_size < 0 || s->shared_expert_intermediate_size < 0)))
        return qc_fail(QC_ERR_ARG, "synth %s: inconsistent experts (%d, top-%d, width %d)", n, s->n_experts,
                       s->n_experts_per_tok, s->moe_intermediate_size);
    int need = s->vocab_layout == QC_SYNTH_VOCAB_SPM ? 259 : 256;
    if (!o->tokenizer_dir && (s->vocab_size < need || s->bos_token_id >= s->vocab_size ||
                              s->eos_token_id >= s->vocab_size || s->bos_token_id < 0 || s->eos_token_id < 0 ||
                              (s->vocab_layout == QC_SYNTH_VOCAB_SPM
                                   ? !((s->bos_token_id == 1 && s->eos_token_id == 2) ||
                                       (s->bos_token_id == 2 && s->eos_token_id == 1) || /* Gemma: EOS 1, BOS 2 */
                                       (s->bos_token_id == 2 && s->eos_token_id == 2))   /* OPT: </s> both, <pad> 1 */
                                   : s->bos_token_id < 256 || s->eos_token_id < 256)))
        return qc_fail(QC_ERR_ARG, "synth %s: vocabulary %d cannot hold the byte tokens and BOS %d / EOS %d", n,
                       s->vocab_size, s->bos_token_id, s->eos_token_id);
    if (n_layers < 1 || n_layers > s->n_layers)
        return qc_fail(QC_ERR_ARG, "synth %s: layers must be in [1, %d] (the real model has %d), got %d", n,
                       s->n_layers, s->n_layers, n_layers);
    if (o->dtype != QC_DTYPE_BF16 && o->dtype != QC_DTYPE_F16 && o->dtype != QC_DTYPE_F32)
        return qc_fail(QC_ERR_ARG, "synth %s: dtype must be BF16, F16 or F32", n);
    if (o->n_threads < 0 || o->n_threads > MAX_THREADS)
        return qc_fail(QC_ERR_ARG, "synth: threads must be in [0, %d]", MAX_THREADS);
    if (o->tokenizer_dir) {
        qc_tokenizer *tok;
        qc_status st = qc_tokenizer_load(o->tokenizer_dir, &tok);
        if (st != QC_OK) {
            qc_error_prefix("synth: --tokenizer");
            return st == QC_ERR_IO ? QC_ERR_ARG : st;
        }
        int32_t v = qc_tokenizer_vocab_size(tok);
        qc_tokenizer_free(tok);
        if (v > s->vocab_size)
            return qc_fail(QC_ERR_ARG, "synth %s: tokenizer %s has ids up to %d, beyond the vocabulary (%d)", n,
                           o->tokenizer_dir, v - 1, s->vocab_size);
    }
    return QC_OK;
}

/* ---- the writer ---- */

/* One chunk of the stream: elements [first, first + count) of tensor `t`. */
typedef struct chunk {
    int         t;
    int64_t     first, count;
    uint64_t    key;
    tensor_kind kind;
    qc_dtype    dtype;
    void       *buf;
    int         n_threads;
} chunk;

/* The chunk after (*t, *e) within tensors [.., last); false at the end. */
static bool next_chunk(const plan *p, uint64_t seed, int last, int *t, int64_t *e, chunk *c) {
    if (*t >= last) return false;
    const plan_tensor *pt = &p->t[*t];
    c->t = *t;
    c->first = *e;
    c->count = pt->numel - *e < CHUNK_ELEMS ? pt->numel - *e : CHUNK_ELEMS;
    c->key = tensor_key(seed, (uint64_t)*t);
    c->kind = pt->kind;
    *e += c->count;
    if (*e >= pt->numel) {
        (*t)++;
        *e = 0;
    }
    return true;
}

static void *chunk_run(void *arg) {
    const chunk *c = arg;
    gen_chunk(c->key, c->kind, c->dtype, c->first, c->count, c->buf, c->n_threads);
    return NULL;
}

/* Writes every shard; chunk k+1 is generated (on n_threads threads) while chunk k is being written. */
static qc_status write_shards(const qc_synth_opts *o, const plan *p, const char *dir, int n_threads, double t0) {
    const size_t es = qc_dtype_size(o->dtype);
    void *bufs[2] = {qc_aligned_alloc((size_t)CHUNK_ELEMS * es), qc_aligned_alloc((size_t)CHUNK_ELEMS * es)};
    qc_status st = bufs[0] && bufs[1] ? QC_OK : qc_fail(QC_ERR_NOMEM, "synth: out of memory");
    uint64_t done = 0;
    int ti = 0;
    for (int sh = 0; sh < p->n_shards && st == QC_OK; sh++) {
        char fn[64];
        shard_name(p, sh, fn, sizeof fn);
        char *path = qc_path_join(dir, fn);
        if (!path) {
            st = qc_fail(QC_ERR_NOMEM, "synth: out of memory");
            break;
        }
        double ts = qc_time_now();
        qc_st_writer *w = NULL;
        st = qc_st_writer_create(path, &w);
        int first = ti, last = ti;
        while (last < p->n && p->t[last].shard == sh) last++;
        for (int i = first; st == QC_OK && i < last; i++)
            st = qc_st_writer_add(w, p->t[i].name, o->dtype, p->t[i].ndim, p->t[i].shape);
        if (st == QC_OK) st = qc_st_writer_set_meta(w, "format", "pt");
        if (st == QC_OK) st = qc_st_writer_set_meta(w, "qcal_synthetic", "true");
        if (st == QC_OK) st = qc_st_writer_begin(w);
        uint64_t shard_bytes = 0;
        int t = first;
        int64_t e = 0;
        chunk cur = {.dtype = o->dtype, .n_threads = n_threads, .buf = bufs[0]}, nxt = cur;
        bool have = st == QC_OK && next_chunk(p, o->seed, last, &t, &e, &cur);
        if (have) chunk_run(&cur);
        for (int k = 0; have; k ^= 1) {
            nxt.buf = bufs[k ^ 1];
            bool have_next = next_chunk(p, o->seed, last, &t, &e, &nxt);
            pthread_t th;
            bool bg = have_next && pthread_create(&th, NULL, chunk_run, &nxt) == 0;
            st = qc_st_writer_write(w, cur.buf, (size_t)cur.count * es);
            if (bg) pthread_join(th, NULL);
            else if (have_next && st == QC_OK) chunk_run(&nxt);
            done += (uint64_t)cur.count * es;
            shard_bytes += (uint64_t)cur.count * es;
            if (st == QC_OK && o->progress &&
                !o->progress(o->user, (int64_t)done, (int64_t)p->bytes, p->t[cur.t].name))
                st = qc_fail(QC_ERR_CANCELLED, "synth: cancelled");
            if (st != QC_OK) break;
            cur = nxt;
            have = have_next;
        }
        if (st == QC_OK) {
            st = qc_st_writer_finish(w);
            w = NULL;
        }
        if (w) qc_st_writer_abort(w);
        if (st == QC_OK)
            QC_LOGI("[%d/%d] %s  %d tensors  %.2f GB  %.1f s  (%.1f of %.1f GB, %.0f s elapsed)", sh + 1,
                    p->n_shards, fn, last - first, (double)shard_bytes / 1e9, qc_time_now() - ts,
                    (double)done / 1e9, (double)p->bytes / 1e9, qc_time_now() - t0);
        ti = last;
        free(path);
    }
    qc_aligned_free(bufs[0]);
    qc_aligned_free(bufs[1]);
    return st;
}

/* Moves the finished tmp directory to out (exchanging with an existing one when allowed). */
static qc_status install(const char *tmp, const char *out, bool exists) {
    if (!exists) {
        if (rename(tmp, out) != 0) return qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", tmp, out, strerror(errno));
        return QC_OK;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
        rm_rf(tmp); /* now the old directory */
        return QC_OK;
    }
    size_t n = strlen(out);
    char *old = qc_malloc(n + 12);
    if (!old) return qc_fail(QC_ERR_NOMEM, "out of memory");
    memcpy(old, out, n);
    memcpy(old + n, ".old-XXXXXX", 12);
    qc_status st = QC_OK;
    if (!mkdtemp(old)) st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", old, strerror(errno));
    else if (rename(out, old) != 0) {
        st = qc_fail(QC_ERR_IO, "%s: cannot move the old directory aside: %s", out, strerror(errno));
        rmdir(old);
    } else if (rename(tmp, out) != 0) {
        st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", tmp, out, strerror(errno));
        if (rename(old, out) != 0) QC_LOGW("%s: could not restore %s: %s", old, out, strerror(errno));
    } else {
        rm_rf(old);
    }
    free(old);
    return st;
}

qc_status qc_synth_write(const qc_synth_spec *spec, const qc_synth_opts *opts, const char *out_dir,
                         qc_synth_result *res) {
    QC_ASSERT(spec && opts && out_dir);
    double t0 = qc_time_now();
    int n_layers = opts->n_layers ? opts->n_layers : spec->n_layers;
    qc_status st = check_spec(spec, opts, n_layers);
    if (st != QC_OK) return st;

    char *out = qc_strdup(out_dir);
    if (!out) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = '\0';
    struct stat sb;
    bool exists = lstat(out, &sb) == 0;
    if (!*out) st = qc_fail(QC_ERR_ARG, "synth: empty output path");
    else if (exists && !opts->overwrite) st = qc_fail(QC_ERR_ARG, "%s: already exists (not overwriting)", out);
    else if (exists && !S_ISDIR(sb.st_mode)) st = qc_fail(QC_ERR_ARG, "%s: exists and is not a directory", out);
    if (st != QC_OK) {
        free(out);
        return st;
    }

    plan p = {0};
    st = make_plan(spec, n_layers, &p);
    if (st == QC_OK) plan_shards(&p, qc_dtype_size(opts->dtype), opts->max_shard_bytes ? opts->max_shard_bytes : SHARD_DEFAULT);

    size_t n = strlen(out);
    char *tmp = st == QC_OK ? qc_malloc(n + 12) : NULL;
    bool made = false;
    if (st == QC_OK && !tmp) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) {
        memcpy(tmp, out, n);
        memcpy(tmp + n, ".tmp-XXXXXX", 12);
        if (!mkdtemp(tmp)) st = qc_fail(QC_ERR_IO, "%s: cannot create the output (a temporary directory beside it): %s", out, strerror(errno));
        else {
            made = true;
            mode_t um = umask(0);
            umask(um);
            if (chmod(tmp, 0777 & ~um) != 0) QC_LOGW("%s: chmod failed: %s", tmp, strerror(errno));
        }
    }
    if (st == QC_OK) {
        struct statvfs vf;
        if (statvfs(tmp, &vf) == 0 && (uint64_t)vf.f_bavail * vf.f_frsize < p.bytes + (64u << 20))
            st = qc_fail(QC_ERR_IO, "%s: %.2f GB needed, only %.2f GB free on that file system", out,
                         (double)p.bytes / 1e9, (double)vf.f_bavail * (double)vf.f_frsize / 1e9);
    }
    int nt = opts->n_threads;
    if (nt <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nt = c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : (int)c;
    }
    if (st == QC_OK)
        QC_LOGI("synth %s: SYNTHETIC random weights, %d of %d layers, %d tensors, %.2f B parameters, %.2f GB %s "
                "in %d shard%s, %d threads", spec->name ? spec->name : "custom", n_layers, spec->n_layers, p.n,
                (double)p.params / 1e9, (double)p.bytes / 1e9, qc_dtype_name(opts->dtype), p.n_shards,
                p.n_shards == 1 ? "" : "s", nt);
    if (st == QC_OK) st = write_side_files(spec, opts, n_layers, tmp);
    if (st == QC_OK) st = write_shards(opts, &p, tmp, nt, t0);
    if (st == QC_OK) st = write_index(&p, tmp);
    if (st == QC_OK) st = install(tmp, out, exists);
    if (st != QC_OK && made) rm_rf(tmp);
    if (st == QC_OK && res) {
        res->bytes = p.bytes;
        res->params = p.params;
        res->n_tensors = p.n;
        res->n_shards = p.n_shards;
        res->seconds = qc_time_now() - t0;
    }
    free(tmp);
    free(p.t);
    free(out);
    return st;
}
