#include "qc_par.h"

#include "qc_common.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* One job at a time, on the stack of the thread that runs qc_par_for. Workers wait on `wake`; a worker
 * that wakes while a job is published takes a reference to it (under mu), takes tasks from `next`
 * until none are left, and drops the reference. The caller takes tasks too, then waits only for the
 * references still held (workers that woke too late find no job and go back to sleep), so a busy
 * machine that does not schedule a worker does not hold the caller up. */
typedef struct {
    qc_par_fn  fn;
    void      *user;
    int        n_tasks;
    atomic_int next;
    int        refs;      /* workers inside the job; under mu */
    int        max_refs;  /* workers allowed in (threads - 1) */
} par_job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t  wake, done;
    pthread_mutex_t busy;        /* held by the thread whose job the pool runs */
    int             threads;     /* 0 until initialized */
    int             n_spawned;   /* workers 1..n_spawned exist */
    unsigned long   gen;         /* bumped for each job */
    par_job        *job;         /* the published job, or NULL */
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER,
       .busy = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int  tls_worker;
static _Thread_local bool tls_in_task;

static int cpus_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int clamp_threads(int n) {
    if (n < 1) n = cpus_available();
    return n > QC_PAR_MAX_THREADS ? QC_PAR_MAX_THREADS : n;
}

static void init_once(void) {
    openblas_set_num_threads(1);
    pthread_mutex_lock(&P.mu);
    if (P.threads == 0) P.threads = clamp_threads(0);
    pthread_mutex_unlock(&P.mu);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

void qc_par_set_threads(int n) {
    pthread_once(&g_once, init_once);
    openblas_set_num_threads(1);
    pthread_mutex_lock(&P.mu);
    P.threads = clamp_threads(n);
    pthread_mutex_unlock(&P.mu);
}

int qc_par_threads(void) {
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&P.mu);
    int n = P.threads;
    pthread_mutex_unlock(&P.mu);
    return n;
}

int qc_par_worker(void) { return tls_worker; }

static void run_tasks(par_job *j) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (t >= j->n_tasks) return;
        j->fn(j->user, t);
    }
}

static void *worker_main(void *arg) {
    tls_worker = (int)(intptr_t)arg;
    tls_in_task = true; /* a qc_par_for inside a task runs inline */
    pthread_mutex_lock(&P.mu);
    unsigned long seen = 0;
    for (;;) {
        while (P.gen == seen || !P.job || P.job->refs >= P.job->max_refs) {
            seen = P.gen;
            pthread_cond_wait(&P.wake, &P.mu);
        }
        seen = P.gen;
        par_job *j = P.job;
        j->refs++;
        pthread_mutex_unlock(&P.mu);
        run_tasks(j);
        pthread_mutex_lock(&P.mu);
        if (--j->refs == 0) pthread_cond_signal(&P.done);
    }
    return NULL;
}

/* Starts workers until `want` exist (as many as the system allows). Under mu. */
static void spawn_workers(int want) {
    while (P.n_spawned < want) {
        pthread_attr_t attr;
        pthread_t tid;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&tid, &attr, worker_main, (void *)(intptr_t)(P.n_spawned + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            QC_LOGW("qc_par: cannot start worker thread %d (%s); running with %d", P.n_spawned + 1, strerror(rc),
                    P.n_spawned + 1);
            P.threads = P.n_spawned + 1;
            return;
        }
        P.n_spawned++;
    }
}

static void run_inline(int n_tasks, qc_par_fn fn, void *user) {
    bool was = tls_in_task;
    tls_in_task = true;
    for (int t = 0; t < n_tasks; t++) fn(user, t);
    tls_in_task = was;
}

void qc_par_for(int n_tasks, qc_par_fn fn, void *user) {
    if (n_tasks <= 0) return;
    int threads = qc_par_threads();
    int want = (threads < n_tasks ? threads : n_tasks) - 1;
    if (want <= 0 || tls_in_task || pthread_mutex_trylock(&P.busy) != 0) {
        run_inline(n_tasks, fn, user);
        return;
    }
    par_job j = {.fn = fn, .user = user, .n_tasks = n_tasks};
    atomic_init(&j.next, 0);
    pthread_mutex_lock(&P.mu);
    spawn_workers(want);
    j.max_refs = want < P.n_spawned ? want : P.n_spawned;
    P.job = &j;
    P.gen++;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);

    tls_in_task = true;
    run_tasks(&j);
    tls_in_task = false;

    pthread_mutex_lock(&P.mu);
    P.job = NULL; /* workers that wake from now on find nothing */
    while (j.refs > 0) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.busy);
}

void qc_par_for_work(int n_tasks, qc_par_fn fn, void *user, double work) {
    if (work < QC_PAR_MIN_WORK) run_inline(n_tasks, fn, user);
    else qc_par_for(n_tasks, fn, user);
}

static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0 && strncmp(line, "Model", 5) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        size_t len = strcspn(v, "\n");
        if (len == 0) continue;
        snprintf(buf, n, "%.*s", (int)len, v);
        break;
    }
    fclose(f);
}

void qc_par_describe(char *buf, size_t n) {
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    const char *cfg = openblas_get_config();
    const char *core = openblas_get_corename();
    int threads = qc_par_threads();
    snprintf(buf, n, "%s (core %s); %s; %d thread%s", cfg ? cfg : "OpenBLAS", core ? core : "?", cpu, threads,
             threads == 1 ? "" : "s");
}
