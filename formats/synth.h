/*
 * synth.h - SYNTHETIC model directories: the real shapes and config.json of a known model with random
 * weights, for timing qcal (and other tools) at full scale without downloading anything.
 *
 * The weights are noise: such a model has no language ability, and every perplexity measured on it is
 * meaningless. Its config.json says so ("qcal_synthetic": true and a "qcal_synthetic_note" naming the
 * model whose shapes were copied, the real layer count, the seed and the dtype).
 *
 * What a directory holds (the Hugging Face layout, loadable by transformers and by qcal):
 *   config.json                      the preset's real config (num_hidden_layers = the layers asked for)
 *   model.safetensors                one file when everything fits in max_shard_bytes, else
 *   model-0000i-of-0000n.safetensors shards of at most max_shard_bytes (a bigger tensor gets one alone)
 *   model.safetensors.index.json     {"metadata": {"total_parameters", "total_size"}, "weight_map": {...}}
 *   tokenizer.json, tokenizer_config.json, generation_config.json
 * Tensors are declared in module order (embed, then each layer's q,k,v,o[,q_norm,k_norm],gate,up,down,
 * input_layernorm, post_attention_layernorm, then model.norm, lm_head unless tied), as transformers
 * saves them.
 *
 * Weights: element i of tensor number t (its position in that order) is a function of (seed, t, i)
 * alone: splitmix64 of a counter, whose four 16-bit lanes are summed (Irwin-Hall, n = 4) and scaled to
 * unit variance. So the output does not depend on the thread count or chunking, and any element can be
 * recomputed (qc_synth_normal). Linear weights and embeddings: std 0.02 (transformers'
 * initializer_range); RMSNorm weights 1 + 0.02 z; biases 0.01 z. Stored BF16 (F16 or F32 when asked).
 *
 * Tokenizer (default): a byte-level BPE tokenizer.json with the 256 bytes as tokens (GPT-2's
 * byte-to-unicode map) and no merges, so any text encodes to one token per byte, plus the preset's
 * BOS/EOS as added special tokens at their real ids. Byte-level presets (Llama-3, Qwen) put the bytes
 * at ids 0..255; SentencePiece-family presets (Llama-2, Mistral) put <unk> at 0, <s> 1, </s> 2 and the
 * bytes at 3..258. With opts.tokenizer_dir, tokenizer.json and tokenizer_config.json are copied from
 * there instead, after checking that every id fits the vocabulary.
 *
 * Usage:
 *   const qc_synth_spec *s = qc_synth_find("llama-3.1-8b");
 *   qc_synth_opts o;
 *   qc_synth_opts_init(&o);
 *   o.n_layers = 2;
 *   qc_synth_result r;
 *   if (qc_synth_write(s, &o, "/tmp/llama8b-2l", &r) != QC_OK) die(qc_last_error());
 *
 * Output is assembled in out_dir.tmp-XXXXXX and renamed into place when complete; on failure nothing
 * is left behind; free space is checked first. Memory stays bounded whatever the model size: two chunks of
 * 8 Mi elements (32 MiB in BF16), one generated on all threads while the other is written.
 *
 * Ownership: presets are static; the caller owns specs it builds (strings borrowed during the call).
 */
#ifndef QC_SYNTH_H
#define QC_SYNTH_H

#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the synthetic tokenizer lays out its ids (see above). */
typedef enum qc_synth_vocab {
    QC_SYNTH_VOCAB_BYTELEVEL = 0,  /* bytes 0..255; BOS/EOS at their ids */
    QC_SYNTH_VOCAB_SPM       = 1,  /* <unk> 0, BOS 1, EOS 2 (Gemma: EOS 1, BOS 2), bytes 3..258 */
} qc_synth_vocab;

typedef struct qc_synth_spec {
    const char *name;              /* "llama-3.1-8b" */
    const char *hf_id;             /* "meta-llama/Llama-3.1-8B": whose config this is */
    const char *architecture;      /* "LlamaForCausalLM" */
    const char *model_type;        /* "llama" */
    int    hidden_size;
    int    intermediate_size;
    int    n_layers;               /* the real model's num_hidden_layers */
    int    n_heads;
    int    n_kv_heads;
    int    head_dim;
    int    vocab_size;
    int    max_position_embeddings;
    double rope_theta;
    bool   rope_llama3;            /* rope_scaling {rope_type llama3, factor, low/high_freq_factor, ...} */
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int    rope_original_max_pos;
    double rms_norm_eps;
    bool   tie_word_embeddings;
    bool   qkv_bias;               /* q/k/v biases (Qwen2) */
    bool   qk_norm;                /* per-head q/k RMSNorm (Qwen3) */
    int    sliding_window;         /* Mistral v0.1: 4096; Qwen: the config's value (unused); 0 = null */
    bool   rope_linear;            /* rope_scaling {rope_type linear, factor rope_factor} (Gemma-3: global layers) */
    double query_pre_attn_scalar;  /* Gemma; 0 = absent */
    double attn_softcap;           /* Gemma-2 attn_logit_softcapping; 0 = null */
    double final_softcap;          /* Gemma-2 final_logit_softcapping; 0 = null */
    int    sliding_window_pattern; /* Gemma-3 (every Nth layer global); 0 = absent */
    double rope_local_base_freq;   /* Gemma-3's sliding layers' rope base; 0 = absent */
    int    max_window_layers;      /* Qwen2/3 (written with use_sliding_window false); 0 = absent */
    int    bos_token_id;
    int    eos_token_id;
    const char *bos_token;         /* "<|begin_of_text|>" */
    const char *eos_token;         /* "<|end_of_text|>" */
    bool   add_bos;                /* the real tokenizer prepends BOS */
    qc_synth_vocab vocab_layout;
    const char *torch_dtype;       /* the real checkpoint's: "bfloat16", "float16" */
    /* mixture of experts (n_experts 0: dense) */
    int    n_experts;              /* num_local_experts (Mixtral) / num_experts (Qwen MoE) */
    int    n_experts_per_tok;
    int    moe_intermediate_size;  /* Qwen MoE (Mixtral's experts are intermediate_size wide) */
    int    shared_expert_intermediate_size; /* Qwen2-MoE */
    bool   norm_topk_prob;         /* Qwen MoE */
} qc_synth_spec;

/* The built-in presets (llama-3.1-8b, llama-3.1-70b, llama-2-7b, llama-2-13b, llama-2-70b, mistral-7b,
 * qwen2.5-7b, qwen3-8b, phi-3-mini, mixtral-8x7b, qwen3-30b-a3b, qwen2-57b-a14b, gemma-2-9b, gemma-3-12b, opt-6.7b), with
 * the values of the real models' config.json (gemma-3-12b: the text_config of google/gemma-3-12b-pt, written as
 * the text-only Gemma3ForCausalLM). MoE layers list the router, then each expert's linears, then a shared
 * expert and its gate (transformers' module order), experts stored per expert as on the Hub. */
const qc_synth_spec *qc_synth_presets(int *count);
/* The preset named `name`, or NULL. */
const qc_synth_spec *qc_synth_find(const char *name);

typedef struct qc_synth_opts {
    int         n_layers;          /* 1..spec->n_layers; 0 = spec->n_layers */
    uint64_t    seed;
    qc_dtype    dtype;             /* QC_DTYPE_BF16 (default), QC_DTYPE_F16 or QC_DTYPE_F32 */
    const char *tokenizer_dir;     /* NULL: the synthetic byte tokenizer; else copy from this directory */
    uint64_t    max_shard_bytes;   /* 0 = 5 GB (5e9 bytes, transformers' default) */
    int         n_threads;         /* 0 = one per online core */
    bool        overwrite;         /* replace an existing out_dir (else it is QC_ERR_ARG) */
    qc_progress_fn progress;       /* bytes done / total, `what` = tensor name; may be NULL */
    void       *user;
} qc_synth_opts;

/* Defaults: all layers, seed 0, BF16, synthetic tokenizer, 5 GB shards, all cores, no overwrite. */
void qc_synth_opts_init(qc_synth_opts *o);

typedef struct qc_synth_result {
    uint64_t bytes;                /* tensor data written */
    uint64_t params;
    int      n_tensors;
    int      n_shards;
    double   seconds;
} qc_synth_result;

/* Writes the synthetic model. Statuses: bad spec or options, existing out_dir without overwrite, a
 * tokenizer_dir whose ids do not fit: QC_ERR_ARG; file system failures QC_ERR_IO; cancelled by the
 * progress callback QC_ERR_CANCELLED. res may be NULL. */
qc_status qc_synth_write(const qc_synth_spec *spec, const qc_synth_opts *opts, const char *out_dir,
                         qc_synth_result *res);

/* The unit-variance value behind element i of tensor t (before scaling by its std and rounding). */
float qc_synth_normal(uint64_t seed, uint64_t t, uint64_t i);

#ifdef __cplusplus
}
#endif
#endif /* QC_SYNTH_H */
