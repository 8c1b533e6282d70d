/*
 * qc_common.h - statuses, error messages, logging, assertions and small helpers shared by every
 * module of qcal.
 *
 * Errors travel on two channels that are never mixed:
 *   - anything a file, a user, the network, the disk or a device can cause returns a qc_status;
 *     the function that detects it records a message naming the file/tensor/field at fault with
 *     qc_fail(), which the caller reads back with qc_last_error() (thread-local, like errno).
 *   - our own bugs go through QC_ASSERT, which is always on, logs file:line and aborts.
 *
 *   qc_status st = qc_safetensors_open(path, &st_file);
 *   if (st != QC_OK) { fprintf(stderr, "qcal: %s\n", qc_last_error()); return 1; }
 *
 * Logging goes through one sink (qc_log_set), stderr by default.
 */
#ifndef QC_COMMON_H
#define QC_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QC_VERSION "0.1.0"

/* Values reach reports and exit paths: append only, explicit values. */
typedef enum qc_status {
    QC_OK              = 0,
    QC_ERR_IO          = 1,  /* open/read/write/mmap/rename failed */
    QC_ERR_FORMAT      = 2,  /* malformed or inconsistent input file */
    QC_ERR_UNSUPPORTED = 3,  /* valid input qcal does not handle (architecture, dtype, ...) */
    QC_ERR_NOMEM       = 4,  /* allocation failed */
    QC_ERR_ARG         = 5,  /* bad argument from the user (flag value, missing file name) */
    QC_ERR_NUMERIC     = 6,  /* non-finite values, failed factorisation */
    QC_ERR_CANCELLED   = 7,  /* a progress callback asked to stop */
    QC_ERR_NET         = 8,  /* network failure */
    QC_ERR_DEVICE      = 9,  /* GPU runtime failure */
} qc_status;

const char *qc_status_str(qc_status st);

/* Records a formatted message for the current thread and returns st, so that
 *   return qc_fail(QC_ERR_FORMAT, "%s: tensor '%s': offsets out of bounds", path, name);
 * reports and propagates in one statement. */
qc_status qc_fail(qc_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context to the current message: "loading layer 3: <old message>". */
void qc_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message recorded on this thread ("" if none). Valid until the next qc_fail. */
const char *qc_last_error(void);
void qc_error_clear(void);

/* ---- logging ---- */
typedef enum qc_log_level { QC_LOG_DEBUG = 0, QC_LOG_INFO = 1, QC_LOG_WARN = 2, QC_LOG_ERROR = 3 } qc_log_level;
typedef void (*qc_log_fn)(qc_log_level level, const char *msg, void *user);
/* fn == NULL restores the default sink (stderr, level >= min_level). */
void qc_log_set(qc_log_fn fn, void *user);
void qc_log_set_level(qc_log_level min_level);
void qc_log(qc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define QC_LOGI(...) qc_log(QC_LOG_INFO, __VA_ARGS__)
#define QC_LOGW(...) qc_log(QC_LOG_WARN, __VA_ARGS__)
#define QC_LOGD(...) qc_log(QC_LOG_DEBUG, __VA_ARGS__)

/* ---- progress ----
 * Long work reports progress through a callback; returning false asks the work to stop, which then
 * returns QC_ERR_CANCELLED. `what` describes the current item (may be NULL). */
typedef bool (*qc_progress_fn)(void *user, int64_t done, int64_t total, const char *what);

/* ---- assertions for our own invariants (never for file data) ---- */
#ifdef __cplusplus
[[noreturn]] void qc_assert_fail(const char *file, int line, const char *expr);
#else
_Noreturn void qc_assert_fail(const char *file, int line, const char *expr);
#endif
#define QC_ASSERT(x) do { if (!(x)) qc_assert_fail(__FILE__, __LINE__, #x); } while (0)

/* ---- memory: NULL on failure (callers turn that into QC_ERR_NOMEM) ---- */
void *qc_malloc(size_t n);                 /* n == 0 returns a valid 1-byte block */
void *qc_calloc(size_t count, size_t size); /* overflow-checked */
void *qc_aligned_alloc(size_t n);          /* 64-byte aligned; free with qc_aligned_free */
void qc_aligned_free(void *p);
char *qc_strdup(const char *s);
char *qc_strndup(const char *s, size_t n);
/* a*b without overflow: false if it would overflow size_t. */
static inline bool qc_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}

/* ---- half precision ---- */
float    qc_fp16_to_f32(uint16_t h);
uint16_t qc_f32_to_fp16(float f);   /* round to nearest even, overflow to inf, like torch .half() */
float    qc_bf16_to_f32(uint16_t h);
uint16_t qc_f32_to_bf16(float f);   /* round to nearest even, like torch .bfloat16() */

/* ---- growing strings ---- */
/* A string built by appending: start from {0}; after an allocation failure oom is set and further appends
 * are no-ops. p (NUL-terminated when n > 0) is the caller's to free. */
typedef struct qc_sbuf { char *p; size_t n, cap; bool oom; } qc_sbuf;
void qc_sbuf_printf(qc_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- files ---- */
/* Reads a whole file; *buf is NUL-terminated (not counted in *len); caller frees with free().
 * max_len caps the size accepted (0 = no cap). */
qc_status qc_read_file(const char *path, size_t max_len, char **buf, size_t *len);
/* dir + "/" + name in a new string (caller frees). */
char *qc_path_join(const char *dir, const char *name);
bool qc_file_exists(const char *path);
bool qc_dir_exists(const char *path);
/* Removes path and, if it is a directory, everything under it, never following symbolic links; an entry
 * already gone is not an error. Only for trees this process created: callers check ownership first.
 * false with errno set when something could not be removed. */
bool qc_rm_tree(const char *path);
/* Writes buf to path atomically: path.tmp, fsync, rename. */
qc_status qc_write_file_atomic(const char *path, const void *buf, size_t len);

/* ---- JSON (cJSON) allocation accounting ----
 * qc_json_hooks_install() routes cJSON's allocations through qcal's counter, so that a parse that failed
 * for want of memory is reported as out of memory, not as invalid JSON:
 *   size_t mark = qc_json_oom_count();  root = cJSON_Parse(...);
 *   if (!root && qc_json_oom_count() != mark) return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing", path);
 * QCAL_TEST_JSON_ALLOC_FAIL=N in the environment makes every cJSON allocation after the N-th fail (tests). */
void   qc_json_hooks_install(void);
size_t qc_json_oom_count(void);

/* ---- time ---- */
double qc_time_now(void); /* monotonic seconds */
/* Peak resident set size of this process in bytes (0 if unknown). */
size_t qc_peak_rss(void);

#ifdef __cplusplus
}
#endif
#endif /* QC_COMMON_H */
