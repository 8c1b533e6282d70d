/* qcal check: the deploy lint of a quantized checkpoint (rules in formats/ckpt_check.h). */
#include <stdlib.h>

#include "ckpt_check.h"
#include "cli.h"

static int run(int argc, char **argv);

const qc_cmd qc_cmd_check = {
    .name = "check",
    .summary = "tell whether a quantized checkpoint will load and run (loaders, vLLM kernels, TP)",
    .usage = "qcal check DIR [--json]",
    .description =
        "Checks a GPTQ (v1/v2) or AWQ GEMM checkpoint directory against what GPTQModel, AutoAWQ,\n"
        "optimum/transformers and vLLM do with it: config against tensors (bits, group size, format,\n"
        "desc_act/g_idx, sym zero points), declarations of linears kept in F16, routers, equal precision\n"
        "inside fused layers, every tensor finite, shards and index; then vLLM's Marlin eligibility and\n"
        "tensor-parallel splits for TP 1, 2, 4, 8. Prints a table `rule | level | subject | finding`.\n"
        "An error is what makes a loader refuse the checkpoint or compute wrong values; a warning only\n"
        "costs speed or limits deployment. A directory without quantization_config (an FP16 model) is\n"
        "reported as an error: not a quantized checkpoint.\n"
        "Exit status: 0 no errors (warnings allowed), 1 errors (or DIR unreadable), 2 usage error.",
    .run = run,
};

static qc_opt k_opts[] = {
    {.name = "json", .kind = QC_OPT_FLAG, .help = "print the findings and the TP table as JSON (every finding)"},
    {0},
};

static int run(int argc, char **argv) {
    const qc_cmd *cmd = &qc_cmd_check;
    const char *pos[1];
    int npos;
    int rc = qc_cli_parse(cmd, k_opts, argc, argv, pos, 1, &npos);
    if (rc >= 0) return rc;
    if (npos != 1) return qc_cli_usage_error(cmd, "expected one checkpoint directory");
    qc_check_report r;
    qc_status st = qc_check_dir(pos[0], &r);
    if (st != QC_OK) return qc_cli_fail(cmd, st);
    if (qc_cli_opt(k_opts, "json")->set) {
        char *js = qc_check_json(&r, pos[0]);
        if (!js) {
            qc_check_report_free(&r);
            return qc_cli_fail(cmd, qc_fail(QC_ERR_NOMEM, "out of memory"));
        }
        printf("%s\n", js);
        free(js);
    } else {
        qc_check_print(&r, stdout);
    }
    rc = r.n_errors ? QC_EXIT_ERROR : QC_EXIT_OK;
    qc_check_report_free(&r);
    return rc;
}
