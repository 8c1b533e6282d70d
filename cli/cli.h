/*
 * cli.h - the qcal command-line front end: option tables, parsing, help and exit codes.
 *
 * Exit statuses: 0 success, 1 user or input error (message on stderr), 2 usage error.
 * Each subcommand declares a table of options; qc_cli_parse fills the `value` fields and prints
 * help generated from the table on --help.
 */
#ifndef QC_CLI_H
#define QC_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "qc_common.h"

enum { QC_EXIT_OK = 0, QC_EXIT_ERROR = 1, QC_EXIT_USAGE = 2 };

typedef enum { QC_OPT_STR, QC_OPT_INT, QC_OPT_FLOAT, QC_OPT_FLAG } qc_opt_kind;

typedef struct qc_opt {
    const char *name;      /* long name without dashes: "seqlen" */
    qc_opt_kind kind;
    const char *metavar;   /* "N", "DIR", ... (NULL for flags) */
    const char *help;
    /* filled by the parser */
    bool        set;
    const char *str;       /* QC_OPT_STR, and the raw text of INT/FLOAT */
    long long   i;
    double      f;
} qc_opt;

typedef struct qc_cmd {
    const char *name;
    const char *summary;   /* one line for `qcal --help` */
    const char *usage;     /* "qcal eval --model DIR --text FILE [options]" */
    const char *description;
    int (*run)(int argc, char **argv);
} qc_cmd;

/* Parses argv[1..] (argv[0] is the subcommand name) against opts (terminated by name == NULL).
 * Positional arguments are collected into pos (up to max_pos). Returns -1 on success, or the exit
 * status to return (0 after --help, 2 after a usage error, which it has printed). */
int qc_cli_parse(const qc_cmd *cmd, qc_opt *opts, int argc, char **argv, const char **pos, int max_pos,
                 int *n_pos);
void qc_cli_help(const qc_cmd *cmd, const qc_opt *opts, FILE *out);
qc_opt *qc_cli_opt(qc_opt *opts, const char *name);
/* Prints "qcal <cmd>: <message>" to stderr and returns QC_EXIT_USAGE. */
int qc_cli_usage_error(const qc_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "qcal <cmd>: <qc_last_error()>" and returns QC_EXIT_ERROR (or QC_EXIT_USAGE for QC_ERR_ARG
 * raised by argument checks, when usage_on_arg is true). */
int qc_cli_fail(const qc_cmd *cmd, qc_status st);

/* A progress bar with ETA on stderr when it is a terminal, silent otherwise. */
typedef struct qc_progress_bar {
    const char *label;
    double      t0;
    bool        tty;
    double      last_draw;
} qc_progress_bar;
void qc_progress_bar_init(qc_progress_bar *b, const char *label);
bool qc_progress_bar_cb(void *user, int64_t done, int64_t total, const char *what);
void qc_progress_bar_done(qc_progress_bar *b);

extern const qc_cmd qc_cmd_quantize, qc_cmd_calib, qc_cmd_eval, qc_cmd_inspect, qc_cmd_tokenize, qc_cmd_recipe;
extern const qc_cmd qc_cmd_synth; /* cmd_synth.c: synthetic models for timing */
extern const qc_cmd qc_cmd_check; /* cmd_check.c: the deploy lint of a checkpoint */
extern const qc_cmd qc_cmd_experiment; /* cmd_experiment.c: grids of runs, result tables */

#endif
