/*
 * qc_signal.h - how a long run reacts to signals.
 *
 * qc_signals_install() (once, from main):
 *   - SIGINT, SIGTERM, SIGHUP: the first one only records the signal; long loops poll
 *     qc_cancel_requested() at safe points and unwind with QC_ERR_CANCELLED (their error paths remove
 *     temporary files; the state already persisted stays resumable). A second signal of these ends the
 *     process at once (after unlinking the registered temporary paths) with status 128 + signal.
 *   - SIGBUS: an access to a mapped file that shrank or was rewritten under us. The handler looks the
 *     faulting address up in the registry of mapped files (qc_mmap_register), prints an error naming
 *     the file and exits with status 1 (QC_EXIT_ERROR); the run's persisted state stays resumable.
 *
 * Everything the handlers touch is preallocated: registration copies the path into a fixed table.
 */
#ifndef QC_SIGNAL_H
#define QC_SIGNAL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void qc_signals_install(void);
/* The signal that asked the run to stop (SIGINT/SIGTERM/SIGHUP), 0 if none. */
int  qc_cancel_requested(void);
/* Records a stop request as if signal sig had arrived (tests and callers that cancel). */
void qc_cancel_request(int sig);

/* [addr, addr + len) maps path (copied; truncated to 511 bytes). Returns false when the table is full
 * (the mapping then just is not named in a SIGBUS message). */
int  qc_mmap_register(const void *addr, size_t len, const char *path);
void qc_mmap_unregister(const void *addr);

/* A temporary path (file or empty directory) the handler removes when a second signal ends the
 * process at once; unregister once it is renamed or removed. */
int  qc_tmp_register(const char *path);
void qc_tmp_unregister(const char *path);

/* Test hook for the crash tests: when the environment has QCAL_TEST_KILL=NAME:N, the N-th call of
 * qc_test_point(NAME) sends this process the signal QCAL_TEST_SIGNAL (default 9, SIGKILL). Points:
 * "phase:<phase>" (each phase start of quantize), "tensor" (each tensor written into a checkpoint). */
void qc_test_point(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* QC_SIGNAL_H */
