/*
 * qc_par.h - qcal's own CPU thread pool, so that results do not depend on the thread count.
 *
 * OpenBLAS gives different bits for the same product with another thread count (sgemm, ssyrk,
 * spotrf, spotri split their work by threads), and even single-threaded an element's value depends on
 * the call's shape (its row count, its column split, its row's position in the call). So every BLAS and
 * LAPACK call in qcal runs single-threaded (the pool's first use calls openblas_set_num_threads(1)),
 * with a shape that depends only on the model and the recipe, and parallelism comes from here: a
 * FIXED partition of the work into tasks (boundaries that depend on the shapes, never on the thread
 * count), each task doing its own single-threaded BLAS calls on its own output, and any reduction
 * summed in task order afterwards.
 *
 *   static void rows_task(void *user, int task) { ... rows [task * 64, task * 64 + 64) ... }
 *   qc_par_for((n + 63) / 64, rows_task, &ctx);      // returns when every task has run
 *
 * Tasks run on the pool's workers and on the calling thread, in any order, each exactly once. A
 * qc_par_for from inside a task (or from a second thread while the pool is busy) runs its tasks inline,
 * in order, on the calling thread. Tasks must not call qc_fail (its message is per thread): record a
 * status in the user data and fail after qc_par_for returns.
 *
 * Calling cblas_* and LAPACKE_* concurrently from several threads with OpenBLAS set to one thread is
 * safe (OpenBLAS 0.3.21, pthread build: tests/test_par.c checks it bit for bit).
 */
#ifndef QC_PAR_H
#define QC_PAR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QC_PAR_MAX_THREADS 1024

/* n threads (the caller included) from now on; n < 1: the CPUs this process may run on. Call it
 * while no qc_par_for is running. Also sets OpenBLAS to one thread. */
void qc_par_set_threads(int n);
/* The thread count qc_par_for uses (initializes the pool on first use). */
int  qc_par_threads(void);

typedef void (*qc_par_fn)(void *user, int task);
/* Runs fn(user, 0) .. fn(user, n_tasks - 1), each once, on the pool; returns when all are done. */
void qc_par_for(int n_tasks, qc_par_fn fn, void *user);
/* qc_par_for, or the same tasks in order on the calling thread when the whole job is smaller than
 * QC_PAR_MIN_WORK (in flops or element operations): waking threads costs more than small work. The
 * partition, hence every bit of the result, is the same either way. */
#define QC_PAR_MIN_WORK 2e6
void qc_par_for_work(int n_tasks, qc_par_fn fn, void *user, double work);
/* The calling thread's slot in the pool, in [0, qc_par_threads()): 0 for the thread that called
 * qc_par_for (and any thread outside the pool), i for worker i. For per-thread scratch buffers. */
int  qc_par_worker(void);

/* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64 (core Haswell); AMD EPYC;
 * 2 threads": the BLAS library and its build, the CPU model, the thread count, for the provenance
 * (results are only bit-identical between runs with the same BLAS kernels). */
void qc_par_describe(char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* QC_PAR_H */
