/*
 * testutil.h - helpers shared by the test executables (cmocka underneath).
 *
 * Data: tests find ../shared/data through $QCAL_DATA (set by CTest), then the repository's examples/
 * (a copy of part of it). A test case that needs a file that is not there calls qc_test_require(), which
 * prints "SKIP: <what is missing>" and skips that case (cmocka), so the cases whose data is there still
 * run; a group setup that every case depends on calls qc_test_require_all(), which exits 77 (CTest:
 * "Skipped"). scripts/test.sh lists every SKIP line.
 */
#ifndef QC_TESTUTIL_H
#define QC_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <string.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "qc_common.h"

/* $QCAL_DATA/rel in a static buffer (valid until the next call). */
const char *qc_test_data(const char *rel);
/* The path of rel (a fresh copy the caller frees). If it does not exist (file or directory): prints a SKIP
 * line and skips the running cmocka case (qc_test_require; only inside a case) or exits 77
 * (qc_test_require_all; for group setups and main). A skip leaves the case at once: require the data most
 * likely to be missing before allocating anything else. */
char *qc_test_require(const char *rel);
char *qc_test_require_all(const char *rel);
/* A fresh empty temporary directory (removed at exit). */
const char *qc_test_tmpdir(void);
/* Asserts st == QC_OK, printing qc_last_error() otherwise. */
#define QC_CHECK_OK(expr) do { \
        qc_status st__ = (expr); \
        if (st__ != QC_OK) fail_msg("%s -> %s: %s", #expr, qc_status_str(st__), qc_last_error()); \
    } while (0)
/* Asserts that expr fails with status `want` and that the message contains `needle`. */
#define QC_CHECK_FAILS(expr, want, needle) do { \
        qc_error_clear(); \
        qc_status st__ = (expr); \
        if (st__ != (want)) fail_msg("%s -> %s (%s), expected %s", #expr, qc_status_str(st__), \
                                     qc_last_error(), qc_status_str(want)); \
        if (!strstr(qc_last_error(), (needle))) fail_msg("%s: message '%s' lacks '%s'", #expr, \
                                                          qc_last_error(), (needle)); \
    } while (0)
/* |a-b| <= tol, printing both. */
#define QC_CHECK_NEAR(a, b, tol) do { \
        double a__ = (a), b__ = (b); \
        if (!(fabs(a__ - b__) <= (tol))) fail_msg("%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", #a, a__, #b, \
                                                  b__, fabs(a__ - b__), (double)(tol)); \
    } while (0)

#endif
