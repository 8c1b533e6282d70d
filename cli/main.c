/* qcal: post-training quantization for large language models. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "qc_signal.h"

static const qc_cmd *const k_cmds[] = {&qc_cmd_quantize, &qc_cmd_calib, &qc_cmd_eval, &qc_cmd_inspect, &qc_cmd_check, &qc_cmd_tokenize, &qc_cmd_recipe, &qc_cmd_synth, &qc_cmd_experiment};
#define N_CMDS (sizeof k_cmds / sizeof k_cmds[0])

static void usage(FILE *out) {
    fprintf(out,
            "usage: qcal <command> [options]\n\n"
            "qcal %s - post-training quantization (GPTQ, AWQ, RTN) for Hugging Face decoder models.\n\n"
            "commands:\n", QC_VERSION);
    for (size_t i = 0; i < N_CMDS; i++) fprintf(out, "  %-10s %s\n", k_cmds[i]->name, k_cmds[i]->summary);
    fprintf(out, "\nRun 'qcal <command> --help' for a command's options.\n"
                 "Exit status: 0 success, 1 input or runtime error, 2 usage error.\n");
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN); /* a closed pipe is a write error, not a signal */
    qc_signals_install();
    qc_json_hooks_install();  /* a JSON parse that ran out of memory says so */     /* stop requests unwind at safe points; SIGBUS names the file */
    if (argc < 2) {
        usage(stderr);
        return QC_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return QC_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("qcal %s\n", QC_VERSION);
        return QC_EXIT_OK;
    }
    for (size_t i = 0; i < N_CMDS; i++)
        if (strcmp(argv[1], k_cmds[i]->name) == 0) {
            int rc = k_cmds[i]->run(argc - 1, argv + 1);
            if (fflush(stdout) != 0 && rc == QC_EXIT_OK) {
                fprintf(stderr, "qcal %s: cannot write to standard output\n", argv[1]);
                rc = QC_EXIT_ERROR;
            }
            return rc;
        }
    fprintf(stderr, "qcal: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return QC_EXIT_USAGE;
}
