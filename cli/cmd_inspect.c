/* qcal inspect: what a model directory holds. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "arch.h"
#include "model_config.h"
#include "safetensors.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_inspect = {
    .name = "inspect",
    .summary = "describe a model directory (config, tensors, dtypes, sizes)",
    .usage = "qcal inspect DIR [--tensors]",
    .description = "Validates config.json and every safetensors header in DIR and prints a summary.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "tensors", .kind = QC_OPT_FLAG, .help = "list every tensor (name, dtype, shape, file)"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_inspect;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 1, &npos);
    if (rc >= 0) return rc;
    if (npos != 1) return qc_cli_usage_error(cmd, "expected one model directory");
    const char *dir = pos[0];
    if (!qc_dir_exists(dir)) {
        fprintf(stderr, "qcal inspect: %s: not a directory\n", dir);
        return QC_EXIT_ERROR;
    }
    qc_model_config c;
    qc_status st = qc_model_config_load(dir, &c);
    if (st != QC_OK) return qc_cli_fail(cmd, st);
    qc_weights *w;
    st = qc_weights_open(dir, &w);
    if (st != QC_OK) return qc_cli_fail(cmd, st);

    printf("model:        %s\n", dir);
    printf("architecture: %s (%s)\n", c.arch_name, qc_arch_name(c.arch));
    printf("layers:       %d\n", c.n_layers);
    printf("hidden:       %d, intermediate %d, vocab %d\n", c.hidden_size, c.intermediate_size, c.vocab_size);
    printf("attention:    %d heads, %d kv heads, head_dim %d%s%s\n", c.n_heads, c.n_kv_heads, c.head_dim,
           c.qkv_bias ? ", qkv bias" : "", c.qk_norm ? ", q/k norm" : "");
    if (c.n_experts > 0) {
        int sparse = 0;
        for (int i = 0; i < c.n_layers; i++) sparse += qc_layer_is_moe(&c, i);
        printf("experts:      %d per sparse layer (%d of %d layers), top-%d%s, width %d", c.n_experts, sparse,
               c.n_layers, c.n_experts_per_tok, c.norm_topk_prob ? " renormalized" : "", c.moe_intermediate_size);
        if (c.shared_expert_intermediate_size > 0) printf(", a shared expert of width %d", c.shared_expert_intermediate_size);
        printf("\n");
    }
    static const char *rope[] = {"default", "linear", "llama3"};
    const qc_arch_desc *a = qc_arch_desc_of(c.arch);
    printf("layers path:  %s.N (e.g. %s.0.%s)\n", qc_layers_path(&c), qc_layers_path(&c), a->lin[QC_LIN_Q].name);
    if (!qc_arch_has_rope(&c)) /* OPT: learned positions, LayerNorms, ReLU MLP */
        printf("positions:    learned, %s rows p + %d (max_position_embeddings %d)\nnorms:        LayerNorm "
               "with bias, eps %g\nmlp:          %s(%s(%s(x))), biases %s", a->pos_embed, a->pos_offset,
               c.max_position_embeddings, (double)c.rms_norm_eps, a->lin[QC_LIN_DOWN].name, "relu",
               a->lin[QC_LIN_UP].name, c.mlp_bias ? "on every linear" : "off");
    else
        printf("rope:         theta %g, %s", c.rope_theta, rope[c.rope_type]);
    if (c.rope_type != QC_ROPE_DEFAULT) printf(" (factor %g)", c.rope_factor);
    if (c.rope_local_theta > 0) printf("; sliding layers theta %g, unscaled", c.rope_local_theta);
    if (c.window_per_layer) { /* Gemma: the window's layers, the soft-caps, the activation */
        printf("\nwindow:       %d tokens on layers ", c.sliding_window);
        int shown = 0, total = 0;
        for (int i = 0; i < c.n_layers; i++) {
            if (!qc_layer_window(&c, i)) continue;
            if (shown < 12) printf("%s%d", shown ? ", " : "", i), shown++;
            total++;
        }
        if (total > shown) printf(", ... (%d of %d)", total, c.n_layers);
        if (!total) printf("(none)");
        printf("\nsoft-capping: attention %g, final logits %g (0: off)", c.attn_softcap, c.final_softcap);
        printf("\nmlp:          %s, (1 + w) norms before and after each block", c.act == QC_ACT_GELU_TANH ? "gelu_pytorch_tanh" : "silu");
    }
    printf("\nembeddings:   %s\n", c.tie_word_embeddings ? "tied" : "separate lm_head");
    uint64_t params = 0;
    size_t counts[QC_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < qc_weights_count(w); i++) {
        const qc_tensor *t = qc_weights_get(w, i);
        params += (uint64_t)t->numel;
        counts[t->dtype]++;
    }
    printf("tensors:      %zu (", qc_weights_count(w));
    bool first = true;
    for (int d = 0; d < QC_DTYPE_COUNT; d++)
        if (counts[d]) {
            printf("%s%zu %s", first ? "" : ", ", counts[d], qc_dtype_name((qc_dtype)d));
            first = false;
        }
    printf(")\nparameters:   %llu (%.2f M), %.1f MiB of tensor data\n", (unsigned long long)params, (double)params / 1e6,
           (double)qc_weights_total_bytes(w) / (1024.0 * 1024.0));
    if (qc_cli_opt(k_opts, "tensors")->set) {
        for (size_t i = 0; i < qc_weights_count(w); i++) {
            const qc_tensor *t = qc_weights_get(w, i);
            char shape[128] = "[";
            size_t off = 1;
            for (int k = 0; k < t->ndim && off < sizeof shape - 24; k++)
                off += (size_t)snprintf(shape + off, sizeof shape - off, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
            snprintf(shape + off, sizeof shape - off, "]");
            const char *base = strrchr(t->file, '/');
            printf("  %-56s %-5s %-16s %s\n", t->name, qc_dtype_name(t->dtype), shape, base ? base + 1 : t->file);
        }
    }
    qc_weights_free(w);
    return QC_EXIT_OK;
}
