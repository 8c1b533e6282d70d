#include "qc_common.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *qc_status_str(qc_status st) {
    switch (st) {
    case QC_OK:              return "ok";
    case QC_ERR_IO:          return "I/O error";
    case QC_ERR_FORMAT:      return "malformed input";
    case QC_ERR_UNSUPPORTED: return "unsupported";
    case QC_ERR_NOMEM:       return "out of memory";
    case QC_ERR_ARG:         return "invalid argument";
    case QC_ERR_NUMERIC:     return "numerical failure";
    case QC_ERR_CANCELLED:   return "cancelled";
    case QC_ERR_NET:         return "network error";
    case QC_ERR_DEVICE:      return "device error";
    }
    return "unknown status";
}

static _Thread_local char g_err[2048];

qc_status qc_fail(qc_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return st;
}

void qc_error_prefix(const char *fmt, ...) {
    char pre[512], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof g_err - 3) n = sizeof g_err - 3;
    memcpy(g_err, pre, n);
    memcpy(g_err + n, ": ", 2);
    size_t rest = sizeof g_err - n - 3;
    size_t ol = strlen(old);
    if (ol > rest) ol = rest;
    memcpy(g_err + n + 2, old, ol);
    g_err[n + 2 + ol] = '\0';
}

const char *qc_last_error(void) { return g_err; }
void qc_error_clear(void) { g_err[0] = '\0'; }

/* ---- logging ---- */
static qc_log_fn g_log_fn;
static void *g_log_user;
static qc_log_level g_log_min = QC_LOG_INFO;

void qc_log_set(qc_log_fn fn, void *user) { g_log_fn = fn; g_log_user = user; }
void qc_log_set_level(qc_log_level min_level) { g_log_min = min_level; }

void qc_log(qc_log_level level, const char *fmt, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_log_fn) {
        g_log_fn(level, msg, g_log_user);
        return;
    }
    if (level < g_log_min) return;
    static const char *tag[] = {"debug", "info", "warning", "error"};
    if (level == QC_LOG_INFO) fprintf(stderr, "%s\n", msg);
    else fprintf(stderr, "qcal: %s: %s\n", tag[level], msg);
}

_Noreturn void qc_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "qcal: internal error at %s:%d: assertion failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

/* ---- memory ---- */
void *qc_malloc(size_t n) { return malloc(n ? n : 1); }

void *qc_calloc(size_t count, size_t size) {
    size_t n;
    if (!qc_mul_ok(count, size, &n)) return NULL;
    return calloc(n ? count : 1, n ? size : 1);
}

void *qc_aligned_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

void qc_aligned_free(void *p) { free(p); }

char *qc_strdup(const char *s) { return s ? qc_strndup(s, strlen(s)) : NULL; }

char *qc_strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- half precision ---- */
float qc_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qc_f32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* result is subnormal or zero: exact rounding via float add */
        float a;
        memcpy(&a, &absx, 4);
        a += 0.5f; /* 2^-1: aligns so the low mantissa bits are fp16 subnormal units (2^-24) */
        uint32_t ab;
        memcpy(&ab, &a, 4);
        return (uint16_t)(sign | (ab - 0x3f000000u));
    }
    uint32_t mant_odd = (absx >> 13) & 1;
    absx += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round half to even */
    return (uint16_t)(sign | (absx >> 13));
}

float qc_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qc_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- files ---- */
qc_status qc_read_file(const char *path, size_t max_len, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return qc_fail(QC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return qc_fail(QC_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    if (max_len && n > max_len) {
        fclose(f);
        return qc_fail(QC_ERR_FORMAT, "%s: file is %zu bytes, larger than the %zu accepted", path, n, max_len);
    }
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return qc_fail(QC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(b);
        return qc_fail(QC_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return QC_OK;
}

char *qc_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    bool slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

bool qc_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

bool qc_dir_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

void qc_sbuf_printf(qc_sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = true; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = b->cap ? b->cap : 256;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) != 0 && errno != ENOENT ? -1 : 0;
}

bool qc_rm_tree(const char *path) { return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT; }

qc_status qc_write_file_atomic(const char *path, const void *buf, size_t len) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        qc_status st = qc_fail(QC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            qc_status st = qc_fail(QC_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return st;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        qc_status st = qc_fail(QC_ERR_IO, "%s: fsync/close failed: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        qc_status st = qc_fail(QC_ERR_IO, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return QC_OK;
}

static _Atomic size_t g_json_oom, g_json_allocs;
static long g_json_fail_after = -1;

static void *json_malloc(size_t n) {
    size_t k = ++g_json_allocs;
    void *p = (g_json_fail_after >= 0 && k > (size_t)g_json_fail_after) ? NULL : malloc(n);
    if (!p) g_json_oom++;
    return p;
}

void qc_json_hooks_install(void) {
    const char *e = getenv("QCAL_TEST_JSON_ALLOC_FAIL");
    if (e) g_json_fail_after = strtol(e, NULL, 10);
    cJSON_Hooks h = {json_malloc, free};
    cJSON_InitHooks(&h);
}

size_t qc_json_oom_count(void) { return g_json_oom; }

double qc_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t qc_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}
