/* The preflight plan (calib/plan.h): its arithmetic on a small synthetic model, term by term against
 * numbers worked out by hand from the drivers' allocations; the check's refusals; the RAM and cgroup
 * readers; status.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "plan.h"
#include "synth.h"
#include "testutil.h"
#ifdef QCAL_HAVE_CUDA
#include "gpu_forward.h"
#include "quant_gpu.h"
#endif

/* d 256, q 4 x 64, kv 2 x 64, MLP 768, vocab 1024, 2 layers, untied head, BF16: every linear packs at
 * w4 g128, and every figure below fits on a page. */
static const qc_synth_spec k_tiny = {
    .name = "plan-tiny", .hf_id = "qcal/plan-tiny", .architecture = "LlamaForCausalLM", .model_type = "llama",
    .hidden_size = 256, .intermediate_size = 768, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
    .vocab_size = 1024, .max_position_embeddings = 2048, .rope_theta = 10000.0, .rms_norm_eps = 1e-5,
    .tie_word_embeddings = false, .bos_token_id = 256, .eos_token_id = 257, .bos_token = "<s>", .eos_token = "</s>",
    .add_bos = true, .vocab_layout = QC_SYNTH_VOCAB_BYTELEVEL, .torch_dtype = "bfloat16",
};

static qc_model *g_model;
static char g_dir[512];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/tiny", qc_test_tmpdir());
    qc_synth_opts o;
    qc_synth_opts_init(&o);
    o.n_threads = 1;
    QC_CHECK_OK(qc_synth_write(&k_tiny, &o, g_dir, NULL));
    QC_CHECK_OK(qc_model_open(g_dir, &g_model));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    qc_model_free(g_model);
    return 0;
}

static qc_plan_in tiny_in(int device) {
    static char out[600], work[620];
    snprintf(out, sizeof out, "%s/q", qc_test_tmpdir());
    snprintf(work, sizeof work, "%s/q.qcal-work", qc_test_tmpdir());
    qc_plan_in in = {.m = g_model, .method = QC_METHOD_GPTQ, .bits = 4, .group_size = 128, .format = QC_PACK_GPTQ,
                     .true_sequential = true, .nsamples = 8, .seqlen = 128, .device = device, .threads = 2,
                     .out = out, .work_dir = work, .offline = true, .cpu_gflops = 10};
    return in;
}

static uint64_t item(const qc_plan_item *it, int n, const char *prefix) {
    for (int i = 0; i < n; i++)
        if (strncmp(it[i].what, prefix, strlen(prefix)) == 0) return it[i].bytes;
    fail_msg("no item '%s'", prefix);
    return 0;
}

static uint64_t file_bytes(const char *name) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    struct stat sb;
    return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Worked out from pipeline.c, model.c and gptq.c for 8 x 128 tokens (one batch of 8 sequences). */
static void test_cpu_gptq(void **state) {
    (void)state;
    qc_plan_in in = tiny_in(-1);
    qc_plan p;
    QC_CHECK_OK(qc_plan_compute(&in, &p));
    assert_int_equal(p.batch_seqs, 8);
    assert_string_equal(p.host_phase, "layer 2 of 2");
    const uint64_t reports = 2 * 7 * sizeof(qc_linear_report);
    /* one layer's part: q 32768 + 256 + 1024 + 1024, k and v 16384 + 128 + 512 + 1024, o as q,
     * gate and up 98304 + 768 + 3072 + 1024, down 98304 + 768 + 3072 + 3072, two F16 norms 1024 */
    const uint64_t part = 2 * 35072 + 2 * 18048 + 2 * 103168 + 105216 + 1024;
    struct {
        const char *what;
        uint64_t    bytes;
    } want[] = {
        {"qcal process", (12 << 20) + 2 * (2 << 20)},
        {"tokenizer", 8 * file_bytes("tokenizer.json")},
        {"calibration tokens", 8 * 128 * 4},
        {"activations X", 1024 * 256 * 4},
        {"batch copy of X", 1024 * 256 * 4},
        {"forward scratch", 4 * 1024 * (2 * 256 + 2 * 256 + 2 * 128 + 2 * 768) + 4 * 128 * 128 + 2 * 4 * 128 * 32},
        {"input Hessians", 4 * (3 * 256 * 256 + 768 * 768)},
        {"solver copies", 4 * 768 * 768 + 2 * 4 * 768 * 256},
        {"the layer in FP32", 4 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256) + 8 * 256},
        /* down_proj: Hbak 768^2, Wt, Err + Orig 2 x 128 x 256, zf 6 x 256, perm/d/rowbuf; its codes,
         * scales, zeros and g_idx; the part being built */
        {"GPTQ working set", 4 * 768 * 768 + 4 * 768 * 256 + 2 * 128 * 256 * 4 + 6 * 256 * 4 + 3 * 768 * 4 +
                                 (768 * 256 + 2 * 6 * 256 * 4 + 768 * 4) + part + reports},
        {"decoder layers", 2 * (2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256) + 2 * 256 * 2)},
    };
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        uint64_t got = item(p.host, p.n_host, want[i].what);
        if (got != want[i].bytes) fail_msg("%s: %llu, worked out %llu", want[i].what, (unsigned long long)got,
                                           (unsigned long long)want[i].bytes);
        sum += want[i].bytes;
    }
    assert_int_equal(p.n_host, (int)(sizeof want / sizeof *want));
    assert_int_equal(p.host_peak, sum);
    assert_int_equal(p.host_required, sum - item(p.host, p.n_host, "decoder layers"));
    assert_int_equal(p.gpu_peak, 0);

    /* disk: tensor data exactly; the safetensors headers (compact JSON) a few KiB */
    const uint64_t x = 64 + 1024 * 256 * 4, base = 2 * 1024 * 256 * 2 + 256 * 2;
    uint64_t work_hdr = p.work_disk_final - (base + 2 * part + 2 * (7 * 267 + 3) + 1200 + x);
    if (work_hdr < 24 || work_hdr > 3 * 8192) fail_msg("work dir headers: %llu bytes", (unsigned long long)work_hdr);
    assert_int_equal(p.work_disk, p.work_disk_final + x); /* x.bin.tmp beside x.bin */
    uint64_t side = file_bytes("tokenizer.json") + file_bytes("tokenizer_config.json") + file_bytes("generation_config.json");
    uint64_t cfgs = file_bytes("config.json") + 1520 + 1480 + 1000 + 246 * 14;
    uint64_t out_hdr = p.out_disk - (base + 2 * part + side + cfgs);
    if (out_hdr < 24 || out_hdr > 8192) fail_msg("checkpoint headers: %llu bytes", (unsigned long long)out_hdr);
    assert_int_equal(p.n_shards, 1);

    /* GPTQ's times at 10 GFLOP/s: per layer 4 q/k/v + 4 attention + 3 o + 2 gate/up + 1 down passes */
    double R = 1024, fwd = 4 * 2 * R * 256 * 512 + 4 * 2 * R * 128 * 256 + 3 * 2 * R * 256 * 256 + 2 * 4 * R * 256 * 768 +
                           2 * R * 768 * 256;
    QC_CHECK_NEAR(p.eta_forward, 2 * fwd / (10e9 * 0.45), 1e-9);
    QC_CHECK_NEAR(p.eta_hessian, 2 * R * (3 * 256.0 * 256 + 768.0 * 768) / (10e9 * 0.55), 1e-9);
    assert_true(p.eta_solve > 0 && p.eta_write > 0 && p.eta_eval == 0);
    QC_CHECK_NEAR(p.eta_total, p.eta_embed + p.eta_forward + p.eta_hessian + p.eta_solve + p.eta_write, 1e-9);

    /* no snapshot: one X less in the work dir, none while it is replaced */
    in.save_every = -1;
    qc_plan q;
    QC_CHECK_OK(qc_plan_compute(&in, &q));
    assert_int_equal(q.work_disk, q.work_disk_final);
    assert_int_equal(q.work_disk, p.work_disk_final - x);

    /* shards of at most 700 KB: the base tensors and each layer start new ones, and an index appears */
    in.max_shard_bytes = 700000;
    QC_CHECK_OK(qc_plan_compute(&in, &q));
    assert_true(q.n_shards >= 3);
    item(q.outd, q.n_out, "model.safetensors.index.json");

    /* part shards (ckpt_write.h): the data exceed the limit, the base part and each layer's fit it, so the
     * parts become the shards: offline the file systems are unknown and they count as copies of the parts;
     * with the work dir beside the checkpoint they are hard links and need no new blocks */
    in.max_shard_bytes = base;
    QC_CHECK_OK(qc_plan_compute(&in, &q));
    assert_int_equal(q.n_shards, 3);
    const uint64_t parts = item(q.work, q.n_work, "base.safetensors") + item(q.work, q.n_work, "2 layer parts");
    assert_int_equal(item(q.outd, q.n_out, "3 shards: the part files, copied"), parts);
    item(q.outd, q.n_out, "model.safetensors.index.json");
    const uint64_t copied = q.out_disk;
    in.offline = false;
    QC_CHECK_OK(qc_plan_compute(&in, &q));
    assert_true(q.same_fs);
    assert_int_equal(q.n_shards, 3);
    assert_int_equal(q.out_disk, copied - parts); /* the links: no item of their own */
    for (int i = 0; i < q.n_out; i++) assert_null(strstr(q.outd[i].what, "shard"));
    in.offline = true;
    in.max_shard_bytes = base - 1; /* the base part does not fit: the sorted copy */
    QC_CHECK_OK(qc_plan_compute(&in, &q));
    assert_true(q.n_shards >= 3);
    assert_true(item(q.outd, q.n_out, "") > 0);
    assert_true(strstr(q.outd[0].what, "tensors (packed linears") != NULL);
}

/* AWQ keeps every linear's input and two output buffers; --eval keeps the fake-quantized layers. */
static void test_cpu_awq_eval(void **state) {
    (void)state;
    qc_plan_in in = tiny_in(-1);
    in.method = QC_METHOD_AWQ;
    in.format = QC_PACK_AWQ;
    in.keep_fake = true;
    in.eval_seqlen = 128;
    qc_plan p;
    QC_CHECK_OK(qc_plan_compute(&in, &p));
    const uint64_t R = 1024;
    assert_int_equal(item(p.host, p.n_host, "AWQ: every linear's input"), R * (2 * 256 + 256 + 768) * 4);
    assert_int_equal(item(p.host, p.n_host, "AWQ: reference and trial"), 2 * R * 256 * 4);
    assert_int_equal(item(p.host, p.n_host, "fake-quantized layers"), 2 * (4 * 786432 + 8 * 256));
    assert_int_equal(item(p.host, p.n_host, "input Hessians"), 4 * (3 * 256 * 256 + 768 * 768)); /* all four, always */
    assert_int_equal(item(p.host, p.n_host, "solver copies"), 2 * 4 * 768 * 256);                 /* no Hw copy */
}

/* Worked out from pipeline_gpu.c, gpu_forward.cu and gptq_gpu.cu for the same run on a GPU. */
static void test_gpu_gptq(void **state) {
    (void)state;
    qc_plan_in in = tiny_in(0);
    qc_plan p;
    QC_CHECK_OK(qc_plan_compute(&in, &p));
    /* the default batch is 16384 tokens at d 4096, clamped to 16384 for narrower models: all 8 sequences */
    assert_int_equal(p.batch_seqs, 8);
    const uint64_t slot = 2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 768 * 256) + 2 * 1024;
    const uint64_t solver = 4 * 768 * 768 + 4 * 196608 + 4 * 128 * 768 + 196608 + 2 * 4 * 6144 + 2 * 4 * 768 +
                            4 * (768 * 256 + 65536) + 8 + 257 * 8 + 768 * 8;
    const uint64_t fwd = 1024 * 256 * 2 + 1024 * 1536 * 2 + 2 * 128 * 128 * 6 + 2 * 128 * 32 * 4;
    uint64_t own = 2 * slot + 512 /* BF16 norms -> F32 through the staging buffer */ + 1024 * 256 * 4 + solver +
                   4 * 256 * 256 + 2 * 4 * 196608 + 1024 * 256 * 4 + fwd + 4 * 768 * 768 /* down_proj's Hessian */;
    assert_int_equal(item(p.gpu, p.n_gpu, "two layer slots"), 2 * slot);
    assert_int_equal(item(p.gpu, p.n_gpu, "GPTQ solver"), solver);
    assert_int_equal(item(p.gpu, p.n_gpu, "forward scratch"), fwd);
    assert_int_equal(p.gpu_own, own);
    assert_int_equal(p.gpu_peak, own + QC_PLAN_CUDA_CONTEXT + QC_PLAN_CUDA_WORKSPACES);
    assert_string_equal(p.gpu_phase, "Hessians of a layer");
    /* host: the pinned staging holds one layer as stored (BF16, each tensor 256-aligned) */
    assert_int_equal(item(p.host, p.n_host, "pinned staging"), 2 * 786432 + 2 * 512);
    assert_int_equal(item(p.host, p.n_host, "host copy of X"), 1024 * 256 * 4); /* x.bin's source (resume state) */
    item(p.host, p.n_host, "CUDA runtime");
#ifdef QCAL_HAVE_CUDA /* the same sizes from the GPU code itself */
    assert_int_equal(qc_gpu_layer_bytes(&g_model->cfg), slot);
    assert_int_equal(qc_gpu_fwd_bytes(&g_model->cfg, 8, 128), fwd);
    assert_int_equal(qc_gpu_solver_bytes_nk(768, 768, 196608), solver);
#endif
}

static void test_check(void **state) {
    (void)state;
    qc_plan_in in = tiny_in(0);
    qc_plan p;
    QC_CHECK_OK(qc_plan_compute(&in, &p));
    p.host_avail = p.host_required + 1;
    p.gpu_avail = p.gpu_peak;
    p.work_free = p.out_free = (uint64_t)1 << 40;
    QC_CHECK_OK(qc_plan_check(&p));

    /* RAM on the CPU: X, the tokens scale with nsamples; there is room for some of them */
    qc_plan_in cin = tiny_in(-1);
    qc_plan q;
    QC_CHECK_OK(qc_plan_compute(&cin, &q));
    q.host_avail = q.host_required - 1024 * 256 * 4 / 2;
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_NOMEM, "host RAM");
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_NOMEM, "--nsamples");
    q.host_avail = 1 << 20; /* nothing helps but another machine */
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_NOMEM, "machine with more RAM");
    p.host_avail = p.host_required - 1; /* on the GPU the host holds X only for the resume snapshot */
    QC_CHECK_FAILS(qc_plan_check(&p), QC_ERR_NOMEM, "--save-every -1");
    p.host_avail = p.host_required;

    q = p;
    q.gpu_avail = q.gpu_peak - 1;
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_NOMEM, "GPU memory: cuda:0 needs");
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_NOMEM, "--device cpu");

    q = p; /* separate file systems: each is checked alone */
    q.same_fs = false;
    q.work_free = q.work_disk - 1;
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_ARG, "work directory");
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_ARG, "--save-every -1");
    q.work_free = q.work_disk;
    q.out_free = q.out_disk - 1;
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_ARG, "checkpoint");
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_ARG, "--out");

    q = p; /* one file system: the work dir and the checkpoint together */
    q.same_fs = true;
    q.work_free = q.out_free = q.work_disk + q.out_disk - 1;
    QC_CHECK_FAILS(qc_plan_check(&q), QC_ERR_ARG, "share a file system");

    q = p; /* unknown availability is not checked */
    q.host_avail = q.gpu_avail = q.work_free = q.out_free = 0;
    QC_CHECK_OK(qc_plan_check(&q));
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_host_available(void **state) {
    (void)state;
    char dir[600], mi[700], cg[700];
    snprintf(dir, sizeof dir, "%s/mem", qc_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(mi, sizeof mi, "%s/meminfo", dir);
    write_text(mi, "MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:   1000 kB\n");
    snprintf(cg, sizeof cg, "%s/memory.max", dir);
    write_text(cg, "max\n");
    const char *src = NULL;
    assert_int_equal(qc_plan_host_available(mi, dir, &src), 1024000);
    assert_string_equal(src, "MemAvailable");
    /* a limit: 500000 - (400000 in use - 100000 of file pages) */
    write_text(cg, "500000\n");
    snprintf(cg, sizeof cg, "%s/memory.current", dir);
    write_text(cg, "400000\n");
    snprintf(cg, sizeof cg, "%s/memory.stat", dir);
    write_text(cg, "anon 300000\nfile 100000\nkernel 0\n");
    assert_int_equal(qc_plan_host_available(mi, dir, &src), 200000);
    assert_string_equal(src, "cgroup memory.max");
}

static void test_status_file(void **state) {
    (void)state;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/status", qc_test_tmpdir());
    mkdir(dir, 0755);
    QC_CHECK_OK(qc_status_file_write(dir, 3, 32, "forward \"+\" solve", 125.5));
    snprintf(path, sizeof path, "%s/status.json", dir);
    char *text = NULL;
    size_t len = 0;
    QC_CHECK_OK(qc_read_file(path, 0, &text, &len));
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "layer")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(j, "n_layers")->valueint, 32);
    assert_string_equal(cJSON_GetObjectItem(j, "phase")->valuestring, "forward \"+\" solve");
    QC_CHECK_NEAR(cJSON_GetObjectItem(j, "eta_s")->valuedouble, 125.5, 1e-9);
    assert_true(cJSON_GetObjectItem(j, "elapsed_s")->valuedouble >= 0);
    assert_int_equal(cJSON_GetObjectItem(j, "pid")->valueint, (int)getpid());
    assert_non_null(cJSON_GetObjectItem(j, "updated_at"));
    cJSON_Delete(j);
    free(text);
    QC_CHECK_OK(qc_status_file_write(dir, -1, 32, "checkpoint assembly", -1)); /* unknown ETA: null */
    QC_CHECK_OK(qc_read_file(path, 0, &text, &len));
    j = cJSON_Parse(text);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "eta_s")));
    cJSON_Delete(j);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_gptq),  cmocka_unit_test(test_cpu_awq_eval),   cmocka_unit_test(test_gpu_gptq),
        cmocka_unit_test(test_check),     cmocka_unit_test(test_host_available), cmocka_unit_test(test_status_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
