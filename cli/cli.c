#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

qc_opt *qc_cli_opt(qc_opt *opts, const char *name) {
    for (qc_opt *o = opts; o->name; o++)
        if (strcmp(o->name, name) == 0) return o;
    QC_ASSERT(!"unknown option name");
    return NULL;
}

void qc_cli_help(const qc_cmd *cmd, const qc_opt *opts, FILE *out) {
    fprintf(out, "usage: %s\n\n%s\n", cmd->usage, cmd->summary);
    if (cmd->description) fprintf(out, "\n%s\n", cmd->description);
    fprintf(out, "\noptions:\n");
    for (const qc_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(out, "  %-24s %s\n", left, o->help);
    }
    fprintf(out, "  %-24s %s\n", "-h, --help", "show this help");
}

int qc_cli_usage_error(const qc_cmd *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "qcal %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'qcal %s --help')\n", cmd->name);
    va_end(ap);
    return QC_EXIT_USAGE;
}

int qc_cli_fail(const qc_cmd *cmd, qc_status st) {
    const char *msg = qc_last_error();
    fprintf(stderr, "qcal %s: %s\n", cmd->name, *msg ? msg : qc_status_str(st));
    return QC_EXIT_ERROR;
}

static int set_value(const qc_cmd *cmd, qc_opt *o, const char *v) {
    o->set = true;
    o->str = v;
    char *end;
    if (o->kind == QC_OPT_INT) {
        errno = 0;
        o->i = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return qc_cli_usage_error(cmd, "--%s expects an integer, got '%s'", o->name, v);
    } else if (o->kind == QC_OPT_FLOAT) {
        errno = 0;
        o->f = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(o->f))
            return qc_cli_usage_error(cmd, "--%s expects a number, got '%s'", o->name, v);
    }
    return -1;
}

int qc_cli_parse(const qc_cmd *cmd, qc_opt *opts, int argc, char **argv, const char **pos, int max_pos,
                 int *n_pos) {
    *n_pos = 0;
    bool only_pos = false;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (only_pos || arg[0] != '-' || arg[1] == '\0') {
            if (*n_pos >= max_pos) return qc_cli_usage_error(cmd, "unexpected argument '%s'", arg);
            pos[(*n_pos)++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            qc_cli_help(cmd, opts, stdout);
            return QC_EXIT_OK;
        }
        if (arg[1] != '-') return qc_cli_usage_error(cmd, "unknown option '%s'", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        qc_opt *o = NULL;
        for (qc_opt *p = opts; p->name; p++)
            if (strlen(p->name) == nlen && strncmp(p->name, name, nlen) == 0) o = p;
        if (!o) return qc_cli_usage_error(cmd, "unknown option '--%.*s'", (int)nlen, name);
        if (o->kind == QC_OPT_FLAG) {
            if (eq) return qc_cli_usage_error(cmd, "--%s takes no value", o->name);
            o->set = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!v) return qc_cli_usage_error(cmd, "--%s needs a value (%s)", o->name, o->metavar ? o->metavar : "");
        int rc = set_value(cmd, o, v);
        if (rc >= 0) return rc;
    }
    return -1;
}

/* ---- progress bar ---- */
void qc_progress_bar_init(qc_progress_bar *b, const char *label) {
    b->label = label;
    b->t0 = qc_time_now();
    b->tty = isatty(STDERR_FILENO) != 0;
    b->last_draw = 0.0;
}

static void fmt_dur(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "--");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

bool qc_progress_bar_cb(void *user, int64_t done, int64_t total, const char *what) {
    qc_progress_bar *b = user;
    if (!b->tty) return true;
    double now = qc_time_now();
    if (done < total && now - b->last_draw < 0.1) return true;
    b->last_draw = now;
    double el = now - b->t0, frac = total > 0 ? (double)done / (double)total : 0.0;
    char eta[32], elapsed[32];
    fmt_dur(eta, sizeof eta, done > 0 ? el / (double)done * (double)(total - done) : -1);
    fmt_dur(elapsed, sizeof elapsed, el);
    int width = 30, fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %lld/%lld  %s elapsed  ETA %s %s\033[K", b->label, bar, (long long)done,
            (long long)total, elapsed, eta, what ? what : "");
    fflush(stderr);
    return true;
}

void qc_progress_bar_done(qc_progress_bar *b) {
    if (b->tty) fprintf(stderr, "\n");
}
