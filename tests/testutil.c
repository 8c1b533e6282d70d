#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256];

static void rm_tmp(void) {
    if (g_tmp[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
    }
}

/* The reference data root (QCAL_DATA, default ../shared/data) first, then the repository's examples/, which
 * holds an identical copy of part of it (stories260K), so those tests also run in a bare clone. */
const char *qc_test_data(const char *rel) {
    static char buf[4096];
    struct stat sb;
    const char *root = getenv("QCAL_DATA"), *src = getenv("QCAL_SRC");
    if (!root || !*root) root = "../shared/data";
    if (src && *src) {
        snprintf(buf, sizeof buf, "%s/%s", root, rel);
        if (stat(buf, &sb) == 0) return buf;
        snprintf(buf, sizeof buf, "%s/examples/%s", src, rel);
        if (stat(buf, &sb) == 0) return buf;
    }
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

static char *require(const char *rel, bool whole) {
    const char *p = qc_test_data(rel);
    struct stat sb;
    if (stat(p, &sb) != 0) {
        fprintf(stderr, "SKIP: test data %s not found (set QCAL_DATA to the shared/data directory)\n", p);
        fflush(stderr);
        if (whole) exit(77);
        skip(); /* cmocka: this case is reported skipped, the next one runs */
    }
    return qc_strdup(p);
}

char *qc_test_require(const char *rel) { return require(rel, false); }
char *qc_test_require_all(const char *rel) { return require(rel, true); }

const char *qc_test_tmpdir(void) {
    if (!g_tmp[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmp, sizeof g_tmp, "%s/qcal-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmp)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(rm_tmp);
    }
    return g_tmp;
}
