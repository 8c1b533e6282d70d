/* qcal synth: a SYNTHETIC model directory (real shapes and config, random weights) for timing. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "synth.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_synth = {
    .name = "synth",
    .summary = "write a SYNTHETIC model (real shapes, random weights) for timing at scale",
    .usage = "qcal synth --like NAME --out DIR [--layers N] [--seed S] [--dtype bf16|f16] [--tokenizer DIR]",
    .description =
        "Writes a Hugging Face model directory with the config.json and tensor shapes of a known model\n"
        "and RANDOM weights (std 0.02, reproducible from --seed), so that qcal can be timed at full\n"
        "scale without downloading anything. The result is SYNTHETIC: it has no language ability and\n"
        "any perplexity measured on it is meaningless. config.json says so (\"qcal_synthetic\": true and\n"
        "\"qcal_synthetic_note\", which also records the real layer count).\n"
        "\n"
        "Presets (--list prints their shapes): llama-3.1-8b, llama-3.1-70b, llama-2-7b, llama-2-13b,\n"
        "llama-2-70b, mistral-7b (v0.1), qwen2.5-7b, qwen3-8b, phi-3-mini, gemma-2-9b, gemma-3-12b (its\n"
        "text decoder, as Gemma3ForCausalLM), opt-6.7b (OPTForCausalLM: LayerNorms, learned positions, ReLU),\n"
        "and the mixtures of experts mixtral-8x7b, qwen3-30b-a3b, qwen2-57b-a14b.\n"
        "Shards of at most 5 GB with model.safetensors.index.json, as transformers writes them. The\n"
        "tokenizer is byte-level (256 byte tokens, no merges) with the model's BOS/EOS at their real ids,\n"
        "unless --tokenizer copies a real one. Everything is written into DIR.tmp-XXXXXX and renamed to\n"
        "DIR when complete.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "like", .kind = QC_OPT_STR, .metavar = "NAME", .help = "the model whose shapes and config to copy (see --list)"},
    {.name = "out", .kind = QC_OPT_STR, .metavar = "DIR", .help = "output directory (must not exist unless --force)"},
    {.name = "layers", .kind = QC_OPT_INT, .metavar = "N", .help = "decoder layers to write (default: the real count)"},
    {.name = "seed", .kind = QC_OPT_INT, .metavar = "S", .help = "random seed for the weights (default 0)"},
    {.name = "dtype", .kind = QC_OPT_STR, .metavar = "bf16|f16", .help = "stored dtype (default bf16)"},
    {.name = "tokenizer", .kind = QC_OPT_STR, .metavar = "DIR", .help = "copy tokenizer.json/tokenizer_config.json from DIR (ids must fit the vocabulary)"},
    {.name = "force", .kind = QC_OPT_FLAG, .help = "replace an existing output directory"},
    {.name = "threads", .kind = QC_OPT_INT, .metavar = "N", .help = "generator threads (default: all cores)"},
    {.name = "list", .kind = QC_OPT_FLAG, .help = "list the presets and exit"},
    {.name = "quiet", .kind = QC_OPT_FLAG, .help = "no progress bar or informational lines"},
    {0},
};

static void list_presets(FILE *out, bool brief) {
    int n;
    const qc_synth_spec *p = qc_synth_presets(&n);
    if (brief) {
        for (int i = 0; i < n; i++) fprintf(out, "%s%s", i ? ", " : "", p[i].name);
        fprintf(out, "\n");
        return;
    }
    fprintf(out, "%-14s %-26s %6s %6s %6s %8s %7s %8s  %s\n", "preset", "shapes of", "layers", "hidden", "ffn",
            "heads/kv", "vocab", "rope", "extra");
    for (int i = 0; i < n; i++) {
        char heads[16];
        snprintf(heads, sizeof heads, "%d/%d", p[i].n_heads, p[i].n_kv_heads);
        char extra[64] = "";
        bool opt = strcmp(p[i].model_type, "opt") == 0;
        if (opt) strcat(extra, "LayerNorm, learned pos, ReLU, biases ");
        else if (p[i].qkv_bias) strcat(extra, "qkv bias ");
        if (p[i].qk_norm) strcat(extra, "q/k norm ");
        if (p[i].sliding_window && strcmp(p[i].model_type, "mistral") == 0) strcat(extra, "sliding window ");
        if (p[i].rope_llama3) strcat(extra, "llama3 rope ");
        if (strncmp(p[i].model_type, "gemma", 5) == 0) strcat(extra, "sliding layers ");
        if (p[i].attn_softcap > 0 || p[i].final_softcap > 0) strcat(extra, "soft-caps ");
        if (p[i].rope_linear) strcat(extra, "linear rope ");
        if (p[i].rope_local_base_freq > 0) strcat(extra, "local rope ");
        fprintf(out, "%-14s %-26s %6d %6d %6d %8s %7d %8g  %s\n", p[i].name, p[i].hf_id, p[i].n_layers,
                p[i].hidden_size, p[i].intermediate_size, heads, p[i].vocab_size, p[i].rope_theta, extra);
    }
}

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_synth;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 0, &npos);
    if (rc >= 0) return rc;
    if (qc_cli_opt(k_opts, "list")->set) {
        list_presets(stdout, false);
        return QC_EXIT_OK;
    }
    qc_opt *o_like = qc_cli_opt(k_opts, "like"), *o_out = qc_cli_opt(k_opts, "out");
    qc_opt *o_layers = qc_cli_opt(k_opts, "layers"), *o_seed = qc_cli_opt(k_opts, "seed");
    qc_opt *o_dtype = qc_cli_opt(k_opts, "dtype"), *o_tok = qc_cli_opt(k_opts, "tokenizer");
    qc_opt *o_thr = qc_cli_opt(k_opts, "threads");
    bool quiet = qc_cli_opt(k_opts, "quiet")->set;
    if (!o_like->set) return qc_cli_usage_error(cmd, "--like NAME is required");
    if (!o_out->set || !*o_out->str) return qc_cli_usage_error(cmd, "--out DIR is required");
    const qc_synth_spec *spec = qc_synth_find(o_like->str);
    if (!spec) {
        fprintf(stderr, "qcal synth: unknown model '%s'; the presets are: ", o_like->str);
        list_presets(stderr, true);
        fprintf(stderr, "(see 'qcal synth --list')\n");
        return QC_EXIT_USAGE;
    }
    qc_synth_opts so;
    qc_synth_opts_init(&so);
    if (o_layers->set) {
        if (o_layers->i < 1 || o_layers->i > spec->n_layers)
            return qc_cli_usage_error(cmd, "--layers must be in [1, %d] for %s", spec->n_layers, spec->name);
        so.n_layers = (int)o_layers->i;
    }
    if (o_seed->set) {
        if (o_seed->i < 0) return qc_cli_usage_error(cmd, "--seed must be >= 0");
        so.seed = (uint64_t)o_seed->i;
    }
    if (o_dtype->set) {
        if (strcasecmp(o_dtype->str, "bf16") == 0 || strcasecmp(o_dtype->str, "bfloat16") == 0) so.dtype = QC_DTYPE_BF16;
        else if (strcasecmp(o_dtype->str, "f16") == 0 || strcasecmp(o_dtype->str, "fp16") == 0 ||
                 strcasecmp(o_dtype->str, "float16") == 0)
            so.dtype = QC_DTYPE_F16;
        else return qc_cli_usage_error(cmd, "--dtype must be bf16 or f16, got '%s'", o_dtype->str);
    }
    if (o_thr->set) {
        if (o_thr->i < 1 || o_thr->i > 256) return qc_cli_usage_error(cmd, "--threads must be in [1, 256]");
        so.n_threads = (int)o_thr->i;
    }
    if (o_tok->set) {
        if (!qc_dir_exists(o_tok->str)) {
            fprintf(stderr, "qcal synth: --tokenizer %s: not a directory\n", o_tok->str);
            return QC_EXIT_ERROR;
        }
        so.tokenizer_dir = o_tok->str;
    }
    so.overwrite = qc_cli_opt(k_opts, "force")->set;
    if (!so.overwrite && (qc_dir_exists(o_out->str) || qc_file_exists(o_out->str))) {
        fprintf(stderr, "qcal synth: %s already exists (use --force to replace it)\n", o_out->str);
        return QC_EXIT_ERROR;
    }
    if (quiet) qc_log_set_level(QC_LOG_WARN);

    qc_progress_bar bar;
    qc_progress_bar_init(&bar, "synth");
    if (!quiet) {
        so.progress = qc_progress_bar_cb;
        so.user = &bar;
    }
    qc_synth_result r;
    qc_status st = qc_synth_write(spec, &so, o_out->str, &r);
    if (!quiet) qc_progress_bar_done(&bar);
    if (st != QC_OK) return qc_cli_fail(cmd, st);
    printf("%s: SYNTHETIC %s (random weights, seed %llu), %d of %d layers, %d tensors, %llu parameters, "
           "%llu bytes in %d shard%s, %.1f s (%.2f GB/s)\n",
           o_out->str, spec->name, (unsigned long long)so.seed, so.n_layers ? so.n_layers : spec->n_layers,
           spec->n_layers, r.n_tensors, (unsigned long long)r.params, (unsigned long long)r.bytes, r.n_shards,
           r.n_shards == 1 ? "" : "s", r.seconds, r.seconds > 0 ? (double)r.bytes / 1e9 / r.seconds : 0.0);
    return QC_EXIT_OK;
}
