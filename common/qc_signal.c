#include "qc_signal.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_MAPS = 4096, MAX_TMP = 64, PATH_CAP = 512 };

typedef struct {
    volatile sig_atomic_t used;
    uintptr_t lo, hi;
    char path[PATH_CAP];
} map_slot;

static map_slot g_maps[MAX_MAPS];
static char g_tmp[MAX_TMP][PATH_CAP];
static volatile sig_atomic_t g_tmp_used[MAX_TMP];
static volatile sig_atomic_t g_stop;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int qc_cancel_requested(void) { return (int)g_stop; }
void qc_cancel_request(int sig) { g_stop = sig; }

static void put(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void unlink_tmp(void) {
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp_used[i] && unlink(g_tmp[i]) != 0) (void)rmdir(g_tmp[i]);
}

static void on_stop(int sig) {
    if (g_stop) { /* second request: stop now */
        unlink_tmp();
        put("qcal: stopped at once (second signal); the state saved so far is kept\n");
        _exit(128 + sig);
    }
    g_stop = sig;
}

static void on_bus(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    const char *path = NULL;
    for (int i = 0; i < MAX_MAPS && !path; i++)
        if (g_maps[i].used && a >= g_maps[i].lo && a < g_maps[i].hi) path = g_maps[i].path;
    unlink_tmp();
    if (path) {
        put("qcal: error: ");
        put(path);
        put(" changed while it was being read (truncated or rewritten by another program); the run's saved "
            "state is kept: restore the file and run the same command again\n");
        _exit(1);
    }
    /* not a mapped input file: our own bug; die with the signal as before */
    signal(sig, SIG_DFL);
    raise(sig);
}

void qc_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

static void copy_path(char *dst, const char *src) {
    size_t n = strlen(src);
    if (n >= PATH_CAP) n = PATH_CAP - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int qc_mmap_register(const void *addr, size_t len, const char *path) {
    int ok = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_MAPS; i++)
        if (!g_maps[i].used) {
            g_maps[i].lo = (uintptr_t)addr;
            g_maps[i].hi = (uintptr_t)addr + len;
            copy_path(g_maps[i].path, path);
            g_maps[i].used = 1;
            ok = 1;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    return ok;
}

void qc_mmap_unregister(const void *addr) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_MAPS; i++)
        if (g_maps[i].used && g_maps[i].lo == (uintptr_t)addr) {
            g_maps[i].used = 0;
            break;
        }
    pthread_mutex_unlock(&g_lock);
}

int qc_tmp_register(const char *path) {
    int ok = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_TMP; i++)
        if (!g_tmp_used[i]) {
            copy_path(g_tmp[i], path);
            g_tmp_used[i] = 1;
            ok = 1;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    return ok;
}

void qc_tmp_unregister(const char *path) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_TMP; i++)
        if (g_tmp_used[i] && strcmp(g_tmp[i], path) == 0) {
            g_tmp_used[i] = 0;
            break;
        }
    pthread_mutex_unlock(&g_lock);
}

void qc_test_point(const char *name) {
    static const char *spec;
    static int init, count;
    if (!init) {
        spec = getenv("QCAL_TEST_KILL");
        init = 1;
    }
    if (!spec) return;
    const char *colon = strrchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (strlen(name) != n || strncmp(name, spec, n) != 0) return;
    if (++count != (colon ? atoi(colon + 1) : 1)) return;
    const char *sig = getenv("QCAL_TEST_SIGNAL");
    kill(getpid(), sig ? atoi(sig) : SIGKILL);
}
