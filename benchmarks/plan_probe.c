/* plan_probe: the preflight plan (calib/plan.h) of a `qcal quantize` run, without running it: a developer's
 * stand-in for `qcal quantize --plan` until the command has the flag. Opens the model (config and tensor
 * headers only), prints qc_plan_print's table, then one JSON line with the figures benchmarks/bench_plan.sh
 * compares with a real run, and exits 1 when qc_plan_check refuses the run (its message on stderr).
 *
 *   plan_probe --model DIR --out DIR [--method gptq|awq|rtn] [--bits N] [--group-size N] [--format F]
 *              [--asym] [--act-order] [--no-true-sequential] [--nsamples N] [--seqlen N] [--batch-tokens N]
 *              [--device cpu|cuda[:N]] [--eval FILE] [--eval-seqlen N] [--eval-max-windows N] [--threads N]
 *              [--save-every S] [--work-dir DIR] [--max-shard-size MB]
 * Defaults follow qcal quantize's: seqlen 2048 (512 for awq), format gptq (awq for 4-bit asymmetric awq). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static int usage(const char *why) {
    fprintf(stderr, "plan_probe: %s\nusage: plan_probe --model DIR --out DIR [qcal quantize flags]\n", why);
    return 2;
}

int main(int argc, char **argv) {
    const char *model = NULL, *method = "gptq", *format = NULL, *device = "cpu";
    qc_plan_in in = {.bits = 4, .group_size = 128, .true_sequential = true, .nsamples = 128, .seqlen = 0};
    bool asym = false;
    int eval_seqlen = 0;
    long long shard_mb = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (++i, true))
        if (ARG("--model")) model = v;
        else if (ARG("--out")) in.out = v;
        else if (ARG("--work-dir")) in.work_dir = v;
        else if (ARG("--method")) method = v;
        else if (ARG("--bits")) in.bits = atoi(v);
        else if (ARG("--group-size")) in.group_size = atoi(v);
        else if (ARG("--format")) format = v;
        else if (ARG("--nsamples")) in.nsamples = atoi(v);
        else if (ARG("--seqlen")) in.seqlen = atoi(v);
        else if (ARG("--batch-tokens")) in.batch_tokens = atoi(v);
        else if (ARG("--device")) device = v;
        else if (ARG("--eval")) in.eval_text = v;
        else if (ARG("--eval-seqlen")) eval_seqlen = atoi(v);
        else if (ARG("--eval-max-windows")) in.eval_max_windows = atoi(v);
        else if (ARG("--threads")) in.threads = atoi(v);
        else if (ARG("--save-every")) in.save_every = atof(v);
        else if (ARG("--max-shard-size")) shard_mb = atoll(v);
        else if (strcmp(a, "--asym") == 0) asym = true;
        else if (strcmp(a, "--sym") == 0) asym = false;
        else if (strcmp(a, "--act-order") == 0) in.act_order = true;
        else if (strcmp(a, "--no-true-sequential") == 0) in.true_sequential = false;
        else return usage(a);
#undef ARG
    }
    if (!model || !in.out) return usage("--model and --out are required");
    in.method = strcmp(method, "awq") == 0 ? QC_METHOD_AWQ : strcmp(method, "rtn") == 0 ? QC_METHOD_RTN : QC_METHOD_GPTQ;
    bool awq = in.method == QC_METHOD_AWQ;
    if (awq) asym = true; /* awq's default */
    if (!in.seqlen) in.seqlen = awq ? 512 : 2048;
    if (!format) format = !asym ? "gptq" : awq && in.bits == 4 && in.group_size != -1 ? "awq" : "gptq_v2";
    in.format = strcmp(format, "awq") == 0 ? QC_PACK_AWQ : strcmp(format, "gptq_v2") == 0 ? QC_PACK_GPTQ_V2 : QC_PACK_GPTQ;
    in.device = strcmp(device, "cpu") == 0 ? -1 : strncmp(device, "cuda:", 5) == 0 ? atoi(device + 5) : 0;
    if (in.eval_text) {
        in.keep_fake = true;
        in.eval_seqlen = eval_seqlen > 0 ? eval_seqlen : in.seqlen;
    }
    in.max_shard_bytes = (uint64_t)shard_mb << 20;
    if (in.threads > 0) openblas_set_num_threads(in.threads);

    qc_model *m = NULL;
    if (qc_model_open(model, &m)) {
        fprintf(stderr, "plan_probe: %s\n", qc_last_error());
        return 1;
    }
    in.m = m;
    qc_plan p;
    qc_status st = qc_plan_compute(&in, &p);
    if (st) {
        fprintf(stderr, "plan_probe: %s\n", qc_last_error());
        qc_model_free(m);
        return 1;
    }
    qc_plan_print(&p, stdout);
    printf("{\"host_peak\": %llu, \"host_required\": %llu, \"host_phase\": \"%s\", \"gpu_peak\": %llu, \"gpu_own\": %llu, "
           "\"work_disk\": %llu, \"work_disk_final\": %llu, \"out_disk\": %llu, \"batch_seqs\": %d, \"eta_total\": %.1f, "
           "\"eta\": [%.1f, %.1f, %.1f, %.1f, %.1f, %.1f]}\n",
           (unsigned long long)p.host_peak, (unsigned long long)p.host_required, p.host_phase,
           (unsigned long long)p.gpu_peak, (unsigned long long)p.gpu_own, (unsigned long long)p.work_disk,
           (unsigned long long)p.work_disk_final, (unsigned long long)p.out_disk, p.batch_seqs, p.eta_total, p.eta_embed,
           p.eta_forward, p.eta_hessian, p.eta_solve, p.eta_write, p.eta_eval);
    st = qc_plan_check(&p);
    if (st) fprintf(stderr, "plan_probe: %s\n", qc_last_error());
    qc_model_free(m);
    return st ? 1 : 0;
}
