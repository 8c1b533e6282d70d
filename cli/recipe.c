/* recipe.c - the run recipe: libyaml events -> a small node tree -> typed fields; flags; cross-field
 * validation; canonical JSON and its hash. The contract and the decisions are in recipe.h. */
#include "recipe.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "sha256.h"

#define MAX_DEPTH   8         /* a recipe needs 3 (top mapping -> calib list -> source mapping) */
#define MAX_INT     (1 << 20) /* cap for group_size, nsamples, seqlen */
#define MAX_CUDA    255

/* ---- constant values: enumerated strings and defaults point here and are never freed ---- */
static const char *const k_methods[] = {"gptq", "awq", "rtn", "awq+gptq", NULL};
static const char *const k_samplings[] = {"gptq", "awq", NULL};
static const char *const k_awq_scales[] = {"autoawq", "llm-awq", "best", NULL};
static const char *const k_moe_lows[] = {"all-tokens", "rtn", NULL};
static const char *const k_formats[] = {"gptq", "gptq_v2", "awq", NULL};
static const char *const k_src_formats[] = {"auto", "text", "jsonl", "json", "parquet", NULL};
static const char *const k_splits[] = {"line", "paragraph", "file", NULL};
static const char *const k_devices[] = {"cpu", "cuda", NULL};
static const char k_c4[] = "hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz";
static const char k_text[] = "text";

static bool is_const(const char *s) {
    if (s == k_c4 || s == k_text) return true;
    const char *const *tabs[] = {k_methods, k_samplings, k_formats, k_src_formats, k_splits, k_devices};
    for (size_t t = 0; t < sizeof tabs / sizeof tabs[0]; t++)
        for (const char *const *p = tabs[t]; *p; p++)
            if (s == *p) return true;
    return false;
}

static void str_free(char **s) {
    if (*s && !is_const(*s)) free(*s);
    *s = NULL;
}

static void str_set(char **dst, char *v) {
    str_free(dst);
    *dst = v;
}

static int enum_index(const char *const *values, const char *s) {
    for (int i = 0; s && values[i]; i++)
        if (strcmp(values[i], s) == 0) return i;
    return -1;
}

/* "a, b, c" */
static const char *name_list(const char *const *names, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
    return buf;
}

/* ---- keys ---- */
typedef enum { T_PATH, T_ENUM, T_INT, T_REAL, T_BOOL, T_SEED, T_DEVICE, T_CALIB, T_EVAL } ktype;

static const struct keydef {
    const char *name;
    ktype type;
    const char *const *values; /* T_ENUM */
} k_keys[QC_RK_COUNT] = {
    [QC_RK_MODEL] = {"model", T_PATH, NULL},
    [QC_RK_OUT] = {"out", T_PATH, NULL},
    [QC_RK_METHOD] = {"method", T_ENUM, k_methods},
    [QC_RK_BITS] = {"bits", T_INT, NULL},
    [QC_RK_GROUP_SIZE] = {"group_size", T_INT, NULL},
    [QC_RK_SYM] = {"sym", T_BOOL, NULL},
    [QC_RK_ACT_ORDER] = {"act_order", T_BOOL, NULL},
    [QC_RK_STATIC_GROUPS] = {"static_groups", T_BOOL, NULL},
    [QC_RK_TRUE_SEQUENTIAL] = {"true_sequential", T_BOOL, NULL},
    [QC_RK_DAMP] = {"damp", T_REAL, NULL},
    [QC_RK_CALIB] = {"calib", T_CALIB, NULL},
    [QC_RK_SAMPLING] = {"sampling", T_ENUM, k_samplings},
    [QC_RK_NSAMPLES] = {"nsamples", T_INT, NULL},
    [QC_RK_SEQLEN] = {"seqlen", T_INT, NULL},
    [QC_RK_SEED] = {"seed", T_SEED, NULL},
    [QC_RK_FORMAT] = {"format", T_ENUM, k_formats},
    [QC_RK_DEVICE] = {"device", T_DEVICE, NULL},
    [QC_RK_EVAL] = {"eval", T_EVAL, NULL},
    [QC_RK_AWQ_SCALE] = {"awq_scale", T_ENUM, k_awq_scales},
    [QC_RK_AWQ_CLIP] = {"awq_clip", T_BOOL, NULL},
    [QC_RK_AWQ_SEARCH_SAMPLES] = {"awq_search_samples", T_INT, NULL},
    [QC_RK_MSE] = {"mse", T_BOOL, NULL},
    [QC_RK_MOE_MIN_TOKENS] = {"moe_min_tokens", T_INT, NULL},
    [QC_RK_MOE_LOW_COVERAGE] = {"moe_low_coverage", T_ENUM, k_moe_lows},
};
static const char *const k_top_keys[QC_RK_COUNT + 1] = {
    "model", "out", "method", "bits", "group_size", "sym", "act_order", "static_groups", "true_sequential",
    "damp", "calib", "sampling", "nsamples", "seqlen", "seed", "format", "device", "eval", "awq_scale", "awq_clip",
    "awq_search_samples", "mse", "moe_min_tokens", "moe_low_coverage", NULL,
};

enum { SK_PATH, SK_FORMAT, SK_FIELD, SK_SPLIT, SK_WEIGHT, SK_HOLDOUT, SK_COUNT };
static const char *const k_src_keys[SK_COUNT + 1] = {"path", "format", "field", "split", "weight", "holdout", NULL};
enum { EK_TEXT, EK_SEQLEN, EK_COUNT };
static const char *const k_eval_keys[EK_COUNT + 1] = {"text", "seqlen", NULL};

static int key_find(const char *const *names, const char *s, size_t len) {
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) return i;
    return -1;
}

/* Levenshtein distance, for "did you mean" (short strings only). */
static size_t edit_distance(const char *a, size_t na, const char *b) {
    size_t nb = strlen(b);
    if (na > 40 || nb > 40) return 99;
    size_t row[41];
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

/* A value quoted for a message: control characters as '?', long ones cut. */
static const char *show(const char *s, size_t len, char *buf, size_t n) {
    QC_ASSERT(n >= 16);
    size_t o = 0, max = n - 6;
    buf[o++] = '\'';
    size_t i = 0;
    for (; i < len && o < max; i++) buf[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (i < len) buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

/* ---- strings and paths ---- */
static bool utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef) k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4) k = 3, cp = c & 0x07;
        else return false;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* Absolute path without "." components or repeated '/' (".." kept). */
static char *path_clean(const char *p) {
    size_t n = strlen(p);
    char *out = qc_malloc(n + 2);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && p[i] == '/') i++;
        size_t j = i;
        while (j < n && p[j] != '/') j++;
        if (j > i && !(j - i == 1 && p[i] == '.')) {
            out[o++] = '/';
            memcpy(out + o, p + i, j - i);
            o += j - i;
        }
        i = j;
    }
    if (o == 0) out[o++] = '/';
    out[o] = '\0';
    return out;
}

static qc_status cwd_dup(char **out) {
    *out = getcwd(NULL, 0);
    if (!*out) return qc_fail(errno == ENOMEM ? QC_ERR_NOMEM : QC_ERR_IO, "cannot get the current directory: %s",
                              strerror(errno));
    return QC_OK;
}

/* ---- one scalar value with where it came from ---- */
typedef struct val {
    const char *s;     /* NUL-terminated at len */
    size_t      len;
    bool        plain; /* YAML plain scalar (flags: always) */
    bool        flag;  /* from qc_recipe_set: no null, no quoting rules, QC_ERR_ARG */
    const char *loc;   /* "file:L:C" or the flag ("--bits") */
    const char *name;  /* "bits", "calib[1].weight" */
} val;

static qc_status vfail(const val *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static qc_status vfail(const val *v, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (v->flag) return qc_fail(QC_ERR_ARG, "%s: %s", v->loc, msg);
    return qc_fail(QC_ERR_FORMAT, "%s: %s: %s", v->loc, v->name, msg);
}

static bool is_null(const val *v) {
    if (v->flag || !v->plain) return false;
    return v->len == 0 || strcmp(v->s, "~") == 0 || strcmp(v->s, "null") == 0 || strcmp(v->s, "Null") == 0 ||
           strcmp(v->s, "NULL") == 0;
}

/* "'four'", "the quoted string '4'", "nothing (null)" */
static const char *describe(const val *v, char *buf, size_t n) {
    char shown[80];
    if (is_null(v)) snprintf(buf, n, "nothing (null)");
    else if (!v->plain) snprintf(buf, n, "the quoted string %s", show(v->s, v->len, shown, sizeof shown));
    else snprintf(buf, n, "%s", show(v->s, v->len, shown, sizeof shown));
    return buf;
}

static qc_status get_string(const val *v, char **out) {
    *out = NULL;
    char d[128];
    if (is_null(v)) return vfail(v, "expected a string, got %s", describe(v, d, sizeof d));
    if (v->len == 0) return vfail(v, "must not be empty");
    if (memchr(v->s, '\0', v->len)) return vfail(v, "contains a NUL character");
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->s[i] < 0x20 || v->s[i] == 0x7f) return vfail(v, "contains a control character");
    if (!utf8_valid((const unsigned char *)v->s, v->len)) return vfail(v, "is not valid UTF-8");
    *out = qc_strndup(v->s, v->len);
    return *out ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
}

static bool is_hf(const char *s) { return strncmp(s, "hf://", 5) == 0; }

/* base: absolute directory for relative paths (NULL: the current directory). */
static qc_status get_path(const val *v, const char *base, char **out) {
    *out = NULL;
    char *s;
    qc_status st = get_string(v, &s);
    if (st != QC_OK) return st;
    char d[128];
    if (is_hf(s)) {
        if (s[5] == '\0' || s[5] == '/') {
            free(s);
            return vfail(v, "%s: an hf:// reference needs a repository (hf://org/name or hf://datasets/org/name/file)",
                         describe(v, d, sizeof d));
        }
        *out = s;
        return QC_OK;
    }
    size_t scheme = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
    if (scheme > 0 && strncmp(s + scheme, "://", 3) == 0) {
        free(s);
        return vfail(v, "%s: only local paths and hf:// references are supported", describe(v, d, sizeof d));
    }
    if (s[0] == '~') {
        free(s);
        return vfail(v, "%s: '~' is not expanded; write the path out", describe(v, d, sizeof d));
    }
    char *cwd = NULL, *joined = NULL;
    if (s[0] != '/') {
        if (!base) {
            st = cwd_dup(&cwd);
            if (st != QC_OK) {
                free(s);
                return st;
            }
            base = cwd;
        }
        joined = qc_path_join(base, s);
    }
    *out = path_clean(joined ? joined : s);
    bool oom = (s[0] != '/' && !joined) || !*out;
    free(joined);
    free(cwd);
    free(s);
    if (oom) {
        free(*out);
        *out = NULL;
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    return QC_OK;
}

static qc_status get_enum(const val *v, const char *const *values, const char **out) {
    char list[256], d[128];
    name_list(values, list, sizeof list);
    if (is_null(v)) return vfail(v, "expected one of: %s; got %s", list, describe(v, d, sizeof d));
    for (int i = 0; values[i]; i++)
        if (strlen(values[i]) == v->len && memcmp(values[i], v->s, v->len) == 0) {
            *out = values[i];
            return QC_OK;
        }
    return vfail(v, "%s is not one of: %s", describe(v, d, sizeof d), list);
}

static qc_status get_int(const val *v, long long *out) {
    char d[128];
    size_t i = (v->len > 0 && (v->s[0] == '-' || v->s[0] == '+')) ? 1 : 0;
    bool ok = v->plain && !is_null(v) && i < v->len;
    for (size_t j = i; ok && j < v->len; j++) ok = v->s[j] >= '0' && v->s[j] <= '9';
    if (ok) {
        errno = 0;
        char *end;
        *out = strtoll(v->s, &end, 10);
        ok = errno == 0 && end == v->s + v->len;
    }
    return ok ? QC_OK : vfail(v, "expected an integer, got %s", describe(v, d, sizeof d));
}

static qc_status get_real(const val *v, double *out) {
    char d[128];
    size_t i = 0, n = v->len, digits = 0;
    const char *s = v->s;
    bool ok = v->plain && !is_null(v);
    if (ok) { /* YAML 1.2 core float/int syntax, decimal only */
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
        if (i < n && s[i] == '.') {
            i++;
            while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
        }
        ok = digits > 0;
        if (ok && i < n && (s[i] == 'e' || s[i] == 'E')) {
            i++;
            if (i < n && (s[i] == '-' || s[i] == '+')) i++;
            size_t e = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9') i++, e++;
            ok = e > 0;
        }
        ok = ok && i == n;
    }
    if (!ok) {
        const char *low = s;
        if (v->plain && (strstr(low, "inf") || strstr(low, "Inf") || strstr(low, "INF") || strstr(low, "nan") ||
                         strstr(low, "NaN") || strstr(low, "NAN")))
            return vfail(v, "expected a finite number, got %s", describe(v, d, sizeof d));
        return vfail(v, "expected a number, got %s", describe(v, d, sizeof d));
    }
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (end != s + n) return vfail(v, "expected a number, got %s", describe(v, d, sizeof d));
    if (!isfinite(*out)) return vfail(v, "%s is too large (not a finite double)", describe(v, d, sizeof d));
    return QC_OK;
}

static qc_status get_bool(const val *v, bool *out) {
    char d[128];
    if (v->plain && !is_null(v)) {
        if (!strcmp(v->s, "true") || !strcmp(v->s, "True") || !strcmp(v->s, "TRUE")) return *out = true, QC_OK;
        if (!strcmp(v->s, "false") || !strcmp(v->s, "False") || !strcmp(v->s, "FALSE")) return *out = false, QC_OK;
    }
    return vfail(v, "expected true or false, got %s", describe(v, d, sizeof d));
}

static qc_status get_seed(const val *v, uint64_t *out) {
    char d[128];
    size_t i = (v->len > 0 && v->s[0] == '+') ? 1 : 0;
    bool ok = v->plain && !is_null(v) && i < v->len;
    for (size_t j = i; ok && j < v->len; j++) ok = v->s[j] >= '0' && v->s[j] <= '9';
    if (ok) {
        errno = 0;
        char *end;
        unsigned long long x = strtoull(v->s, &end, 10);
        ok = errno == 0 && end == v->s + v->len;
        *out = (uint64_t)x;
    }
    return ok ? QC_OK
              : vfail(v, "expected a non-negative integer below 2^64 (0 .. 18446744073709551615), got %s",
                      describe(v, d, sizeof d));
}

static qc_status get_device(const val *v, char **out) {
    char d[128];
    static const char allowed[] = "cpu, cuda, cuda:N (N = 0 .. 255)";
    if (is_null(v)) return vfail(v, "expected one of: %s; got %s", allowed, describe(v, d, sizeof d));
    int i = enum_index(k_devices, v->s);
    if (i >= 0 && strlen(v->s) == v->len) {
        *out = (char *)k_devices[i];
        return QC_OK;
    }
    if (v->len > 5 && v->len <= 8 && memcmp(v->s, "cuda:", 5) == 0) {
        bool digits = true;
        for (size_t j = 5; j < v->len; j++) digits = digits && v->s[j] >= '0' && v->s[j] <= '9';
        long n = digits ? strtol(v->s + 5, NULL, 10) : -1;
        if (digits && n <= MAX_CUDA) {
            char buf[32];
            snprintf(buf, sizeof buf, "cuda:%ld", n);
            *out = qc_strdup(buf);
            return *out ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
        }
    }
    return vfail(v, "%s is not one of: %s", describe(v, d, sizeof d), allowed);
}

/* ---- range checks, shared by parsing and qc_recipe_validate: NULL when fine ---- */
static const char *bad_bits(long long b) { return (b == 2 || b == 3 || b == 4 || b == 8) ? NULL : "is not one of 2, 3, 4, 8"; }
static const char *bad_group(long long g) {
    return (g == -1 || (g > 0 && g % 8 == 0 && g <= MAX_INT))
               ? NULL
               : "is not -1 (one group per row) or a positive multiple of 8 up to 1048576 (such as 32, 64, 128)";
}
static const char *bad_nsamples(long long n) { return (n >= 1 && n <= MAX_INT) ? NULL : "is outside [1, 1048576]"; }
static const char *bad_search_samples(long long n) {
    return (n >= 0 && n <= MAX_INT) ? NULL : "is outside [0, 1048576] (0 or all: every window)";
}
static const char *bad_moe_min_tokens(long long n) {
    return (n >= 0 && n <= (1LL << 40)) ? NULL : "is not a token count >= 0 (or auto: the model's hidden_size)";
}
static const char *bad_seqlen(long long n) { return (n >= 2 && n <= MAX_INT) ? NULL : "is outside [2, 1048576]"; }
static const char *bad_eval_seqlen(long long n) {
    return (n == 0 || (n >= 2 && n <= MAX_INT)) ? NULL : "is not 0 (the recipe's seqlen) or in [2, 1048576]";
}
static const char *bad_damp(double x) { return (x > 0 && x < 1) ? NULL : "is not in (0, 1) (both ends excluded)"; }
static const char *bad_weight(double x) { return (isfinite(x) && x > 0) ? NULL : "is not a finite number > 0"; }
static const char *bad_holdout(long long n) {
    return (n == 0 || (n >= 2 && n <= MAX_INT)) ? NULL : "is not 0 (no holdout) or in [2, 1048576] (every N-th document held out)";
}

static qc_status get_checked_int(const val *v, const char *(*bad)(long long), int *out) {
    long long x = 0;
    qc_status st = get_int(v, &x);
    if (st != QC_OK) return st;
    const char *why = bad(x);
    if (why) return vfail(v, "%lld %s", x, why);
    *out = (int)x;
    return QC_OK;
}

static qc_status get_checked_real(const val *v, const char *(*bad)(double), double *out) {
    double x = 0;
    qc_status st = get_real(v, &x);
    if (st != QC_OK) return st;
    const char *why = bad(x);
    char d[128];
    if (why) return vfail(v, "%s %s", describe(v, d, sizeof d), why);
    *out = x;
    return QC_OK;
}

static void source_free(qc_calib_source *c) {
    str_free(&c->path);
    str_free(&c->format);
    str_free(&c->field);
    str_free(&c->split);
}

static void source_default(qc_calib_source *c, char *path) {
    c->path = path;
    c->format = (char *)k_src_formats[0]; /* auto */
    c->field = (char *)k_text;
    c->split = (char *)k_splits[0];       /* line */
    c->weight = 1.0;
    c->holdout = 0;
}

static void sources_replace(qc_recipe *r, qc_calib_source *src, int n) {
    for (int i = 0; i < r->n_calib; i++) source_free(&r->calib[i]);
    memcpy(r->calib, src, (size_t)n * sizeof *src);
    r->n_calib = n;
}

static void evals_replace(qc_recipe *r, qc_eval_text *ev, int n) {
    for (int i = 0; i < r->n_eval; i++) str_free(&r->eval[i].text);
    if (n) memcpy(r->eval, ev, (size_t)n * sizeof *ev);
    r->n_eval = n;
}

static qc_status mark(qc_recipe *r, qc_recipe_key k, const char *loc) {
    r->set_mask |= QC_RK_BIT(k);
    free(r->where[k]);
    r->where[k] = qc_strdup(loc);
    return r->where[k] ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
}

/* A scalar value for a key (from YAML or a flag). */
static qc_status apply_value(qc_recipe *r, qc_recipe_key k, const val *v, const char *base) {
    qc_status st = QC_OK;
    const char *e;
    char *s = NULL;
    switch (k) {
    case QC_RK_MODEL:
    case QC_RK_OUT: {
        char **dst = k == QC_RK_MODEL ? &r->model : &r->out;
        if (is_null(v)) {
            str_free(dst);
            break;
        }
        if ((st = get_path(v, base, &s)) != QC_OK) return st;
        if (k == QC_RK_OUT && is_hf(s)) {
            free(s);
            return vfail(v, "the output must be a local directory, not an hf:// reference");
        }
        str_set(dst, s);
        break;
    }
    case QC_RK_METHOD:
    case QC_RK_SAMPLING:
    case QC_RK_FORMAT:
    case QC_RK_AWQ_SCALE:
    case QC_RK_MOE_LOW_COVERAGE:
        if ((st = get_enum(v, k_keys[k].values, &e)) != QC_OK) return st;
        *(k == QC_RK_METHOD     ? &r->method
          : k == QC_RK_SAMPLING ? &r->sampling
          : k == QC_RK_AWQ_SCALE ? &r->awq_scale
          : k == QC_RK_MOE_LOW_COVERAGE ? &r->moe_low_coverage
                                 : &r->format) = (char *)e;
        break;
    case QC_RK_BITS: st = get_checked_int(v, bad_bits, &r->bits); break;
    case QC_RK_GROUP_SIZE: st = get_checked_int(v, bad_group, &r->group_size); break;
    case QC_RK_NSAMPLES: st = get_checked_int(v, bad_nsamples, &r->nsamples); break;
    case QC_RK_SEQLEN: st = get_checked_int(v, bad_seqlen, &r->seqlen); break;
    case QC_RK_SYM: st = get_bool(v, &r->sym); break;
    case QC_RK_ACT_ORDER: st = get_bool(v, &r->act_order); break;
    case QC_RK_STATIC_GROUPS: st = get_bool(v, &r->static_groups); break;
    case QC_RK_TRUE_SEQUENTIAL: st = get_bool(v, &r->true_sequential); break;
    case QC_RK_AWQ_CLIP: st = get_bool(v, &r->awq_clip); break;
    case QC_RK_AWQ_SEARCH_SAMPLES: /* a count, or all (0) */
        if (v->plain && v->len == 3 && memcmp(v->s, "all", 3) == 0) r->awq_search_samples = 0;
        else st = get_checked_int(v, bad_search_samples, &r->awq_search_samples);
        break;
    case QC_RK_MSE: st = get_bool(v, &r->mse); break;
    case QC_RK_MOE_MIN_TOKENS: /* a count, or auto (-1) */
        if (v->plain && v->len == 4 && memcmp(v->s, "auto", 4) == 0) r->moe_min_tokens = -1;
        else st = get_checked_int(v, bad_moe_min_tokens, &r->moe_min_tokens);
        break;
    case QC_RK_DAMP: st = get_checked_real(v, bad_damp, &r->damp); break;
    case QC_RK_SEED: st = get_seed(v, &r->seed); break;
    case QC_RK_DEVICE:
        if ((st = get_device(v, &s)) != QC_OK) return st;
        str_set(&r->device, s);
        break;
    case QC_RK_CALIB: { /* a flag: one path replaces every source */
        if ((st = get_path(v, base, &s)) != QC_OK) return st;
        qc_calib_source c;
        source_default(&c, s);
        sources_replace(r, &c, 1);
        break;
    }
    case QC_RK_EVAL: /* a flag: one more text */
        if (r->n_eval >= QC_RECIPE_MAX_EVALS) return vfail(v, "at most %d evaluation texts", QC_RECIPE_MAX_EVALS);
        if ((st = get_path(v, base, &s)) != QC_OK) return st;
        r->eval[r->n_eval].text = s;
        r->eval[r->n_eval].seqlen = 0;
        r->n_eval++;
        break;
    case QC_RK_COUNT: QC_ASSERT(!"bad key");
    }
    if (st != QC_OK) return st;
    return mark(r, k, v->loc);
}

/* ---- YAML: events -> node tree (anchors, aliases, tags refused; depth capped) ---- */
typedef enum { YN_SCALAR, YN_SEQ, YN_MAP } yn_kind;

typedef struct qc_ynode {
    yn_kind      kind;
    yaml_mark_t  mark;
    char        *s;     /* scalar text, NUL-terminated at len */
    size_t       len;
    bool         plain;
    struct qc_ynode **kid; /* SEQ: items; MAP: key, value, key, value, ... */
    size_t       n, cap;
} ynode;

static void yn_free(ynode *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) yn_free(n->kid[i]);
    free(n->kid);
    free(n->s);
    free(n);
}

static bool yn_add(ynode *parent, ynode *child) {
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        ynode **k = realloc(parent->kid, cap * sizeof *k);
        if (!k) return false;
        parent->kid = k;
        parent->cap = cap;
    }
    parent->kid[parent->n++] = child;
    return true;
}

static const char *kind_name(const ynode *n) {
    return n->kind == YN_SEQ ? "a list" : n->kind == YN_MAP ? "a mapping" : "a scalar";
}

static bool node_null(const ynode *n) {
    val v = {.s = n->s, .len = n->len, .plain = n->plain};
    return n->kind == YN_SCALAR && is_null(&v);
}

static qc_status fail_at(const char *what, yaml_mark_t m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static qc_status fail_at(const char *what, yaml_mark_t m, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qc_fail(QC_ERR_FORMAT, "%s:%zu:%zu: %s", what, m.line + 1, m.column + 1, msg);
}

static qc_status parser_error(const yaml_parser_t *p, const char *buf, size_t len, const char *what) {
    if (p->error == YAML_MEMORY_ERROR) return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing YAML", what);
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) { /* the reader reports a byte offset, not a mark */
        yaml_mark_t m = {0, 0, 0};
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (buf[i] == '\n') m.line++, m.column = 0;
            else if (((unsigned char)buf[i] & 0xc0) != 0x80) m.column++;
        }
        return fail_at(what, m, "malformed YAML: %s (byte offset %zu)", problem, p->problem_offset);
    }
    if (p->context)
        return fail_at(what, p->problem_mark, "malformed YAML: %s (%s at %zu:%zu)", problem, p->context,
                       p->context_mark.line + 1, p->context_mark.column + 1);
    return fail_at(what, p->problem_mark, "malformed YAML: %s", problem);
}

static qc_status build_tree(const char *buf, size_t len, const char *what, ynode **root_out) {
    *root_out = NULL;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", what);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    ynode *stack[MAX_DEPTH], *root = NULL;
    int depth = 0, docs = 0;
    bool done = false;
    qc_status st = QC_OK;
    while (!done && st == QC_OK) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            st = parser_error(&p, buf, len, what);
            break;
        }
        const yaml_char_t *anchor = NULL, *tag = NULL;
        yn_kind kind = YN_SCALAR;
        switch (e.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) st = fail_at(what, e.start_mark, "a recipe is one YAML document; found a second one");
            break;
        case YAML_ALIAS_EVENT:
            st = fail_at(what, e.start_mark, "aliases (*%s) are not supported in recipes; write the value out",
                         (const char *)e.data.alias.anchor);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            QC_ASSERT(depth > 0);
            depth--;
            break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (e.type == YAML_SCALAR_EVENT) anchor = e.data.scalar.anchor, tag = e.data.scalar.tag;
            else if (e.type == YAML_SEQUENCE_START_EVENT)
                kind = YN_SEQ, anchor = e.data.sequence_start.anchor, tag = e.data.sequence_start.tag;
            else kind = YN_MAP, anchor = e.data.mapping_start.anchor, tag = e.data.mapping_start.tag;
            if (anchor) {
                st = fail_at(what, e.start_mark, "anchors (&%s) are not supported in recipes", (const char *)anchor);
                break;
            }
            if (tag) {
                st = fail_at(what, e.start_mark, "tags (%s) are not supported in recipes", (const char *)tag);
                break;
            }
            if (kind != YN_SCALAR && depth >= MAX_DEPTH) {
                st = fail_at(what, e.start_mark, "nested too deeply (more than %d levels)", MAX_DEPTH);
                break;
            }
            ynode *n = calloc(1, sizeof *n);
            if (!n) {
                st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", what);
                break;
            }
            n->kind = kind;
            n->mark = e.start_mark;
            if (kind == YN_SCALAR) {
                n->len = e.data.scalar.length;
                n->s = qc_malloc(n->len + 1);
                n->plain = e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                if (n->s) {
                    memcpy(n->s, e.data.scalar.value, n->len);
                    n->s[n->len] = '\0';
                }
            }
            bool ok = kind != YN_SCALAR || n->s;
            if (ok && depth == 0) {
                QC_ASSERT(!root); /* one document, one root */
                root = n;
            } else if (ok) {
                ok = yn_add(stack[depth - 1], n);
            }
            if (!ok) {
                yn_free(n);
                st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", what);
                break;
            }
            if (kind != YN_SCALAR) stack[depth++] = n;
            break;
        default: break;
        }
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&p);
    if (st != QC_OK) {
        yn_free(root);
        return st;
    }
    *root_out = root;
    return QC_OK;
}

/* ---- YAML tree -> recipe ---- */
typedef struct ctx {
    qc_recipe  *r;
    const char *what;
    const char *base;  /* absolute directory for relative paths */
} ctx;

static void loc_of(const ctx *c, const ynode *n, char *buf, size_t size) {
    snprintf(buf, size, "%s:%zu:%zu", c->what, n->mark.line + 1, n->mark.column + 1);
}

static val val_of(const ynode *n, const char *loc, const char *name) {
    val v = {.s = n->s, .len = n->len, .plain = n->plain, .flag = false, .loc = loc, .name = name};
    return v;
}

static qc_status unknown_key(const ctx *c, const ynode *key, const char *const *names, const char *scope) {
    char shown[80], allowed[512], hint[96] = "";
    size_t best = 3;
    for (int i = 0; names[i]; i++) {
        size_t d = edit_distance(key->s, key->len, names[i]);
        if (d < best) {
            best = d;
            snprintf(hint, sizeof hint, " (did you mean '%s'?)", names[i]);
        }
    }
    return fail_at(c->what, key->mark, "unknown %s %s%s; allowed: %s", scope, show(key->s, key->len, shown, sizeof shown),
                   hint, name_list(names, allowed, sizeof allowed));
}

/* Walks a mapping's keys against `names`: unknown, non-scalar and duplicate keys are errors.
 * values[i] receives the value node of names[i] (NULL when absent). */
static qc_status map_keys(const ctx *c, const ynode *map, const char *const *names, const char *scope,
                          const ynode **values, const ynode **keys) {
    int nk = 0;
    while (names[nk]) nk++;
    for (int i = 0; i < nk; i++) values[i] = NULL, keys[i] = NULL;
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const ynode *key = map->kid[i];
        if (key->kind != YN_SCALAR) return fail_at(c->what, key->mark, "a key must be a name, not %s", kind_name(key));
        int k = key_find(names, key->s, key->len);
        if (k < 0) return unknown_key(c, key, names, scope);
        if (keys[k])
            return fail_at(c->what, key->mark, "duplicate key '%s' (first at %zu:%zu)", names[k], keys[k]->mark.line + 1,
                           keys[k]->mark.column + 1);
        keys[k] = key;
        values[k] = map->kid[i + 1];
    }
    return QC_OK;
}

static qc_status parse_source(const ctx *c, const ynode *item, int idx, qc_calib_source *out) {
    char loc[2048], name[64];
    source_default(out, NULL);
    snprintf(name, sizeof name, "calib[%d]", idx);
    loc_of(c, item, loc, sizeof loc);
    if (item->kind == YN_SCALAR) {
        val v = val_of(item, loc, name);
        if (is_null(&v)) return vfail(&v, "expected a path or a mapping {path, format, field, split, weight}, got nothing (null)");
        return get_path(&v, c->base, &out->path);
    }
    if (item->kind != YN_MAP)
        return fail_at(c->what, item->mark, "%s: expected a path or a mapping {path, format, field, split, weight}, got %s",
                       name, kind_name(item));
    const ynode *vals[SK_COUNT], *keys[SK_COUNT];
    qc_status st = map_keys(c, item, k_src_keys, "calibration source key", vals, keys);
    if (st != QC_OK) return st;
    if (!vals[SK_PATH]) return fail_at(c->what, item->mark, "%s: 'path' is required (a file or hf://datasets/... reference)", name);
    for (int k = 0; k < SK_COUNT; k++) {
        const ynode *n = vals[k];
        if (!n) continue;
        snprintf(name, sizeof name, "calib[%d].%s", idx, k_src_keys[k]);
        loc_of(c, n, loc, sizeof loc);
        if (n->kind != YN_SCALAR) {
            static const char *const want[SK_COUNT] = {"a path", "one of: auto, text, jsonl, json, parquet", "a string",
                                                       "one of: line, paragraph, file", "a number > 0",
                                                       "an integer (0 or >= 2)"};
            return fail_at(c->what, n->mark, "%s: expected %s, got %s", name, want[k], kind_name(n));
        }
        val v = val_of(n, loc, name);
        const char *e;
        char *s;
        switch (k) {
        case SK_PATH: st = get_path(&v, c->base, &out->path); break;
        case SK_FORMAT:
            if ((st = get_enum(&v, k_src_formats, &e)) == QC_OK) out->format = (char *)e;
            break;
        case SK_SPLIT:
            if ((st = get_enum(&v, k_splits, &e)) == QC_OK) out->split = (char *)e;
            break;
        case SK_FIELD:
            if ((st = get_string(&v, &s)) == QC_OK) out->field = s;
            break;
        case SK_WEIGHT: st = get_checked_real(&v, bad_weight, &out->weight); break;
        case SK_HOLDOUT: st = get_checked_int(&v, bad_holdout, &out->holdout); break;
        }
        if (st != QC_OK) return st;
    }
    return QC_OK;
}

/* The list forms of calib and eval: a list, or one item on its own. */
static void list_items(const ynode *node, ynode *const **items, size_t *n, ynode *const *single) {
    if (node->kind == YN_SEQ) *items = node->kid, *n = node->n;
    else *items = single, *n = 1;
}

static qc_status apply_calib(const ctx *c, const ynode *node) {
    static const char form[] = "a list of sources (paths, or mappings {path, format, field, split, weight})";
    ynode *const single[1] = {(ynode *)node};
    ynode *const *items;
    size_t n;
    list_items(node, &items, &n, single);
    if (node_null(node) || n == 0) return fail_at(c->what, node->mark, "calib: needs at least one source: %s", form);
    if (n > QC_RECIPE_MAX_SOURCES)
        return fail_at(c->what, items[QC_RECIPE_MAX_SOURCES]->mark, "calib: at most %d sources", QC_RECIPE_MAX_SOURCES);
    qc_calib_source *tmp = qc_calloc(n, sizeof *tmp);
    if (!tmp) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    size_t got = 0;
    for (; got < n && st == QC_OK; got++) st = parse_source(c, items[got], (int)got, &tmp[got]);
    if (st != QC_OK) {
        for (size_t i = 0; i < got; i++) source_free(&tmp[i]);
    } else {
        sources_replace(c->r, tmp, (int)n);
        char loc[2048];
        loc_of(c, node, loc, sizeof loc);
        st = mark(c->r, QC_RK_CALIB, loc);
    }
    free(tmp);
    return st;
}

static qc_status parse_eval(const ctx *c, const ynode *item, int idx, qc_eval_text *out) {
    char loc[2048], name[64];
    out->text = NULL;
    out->seqlen = 0;
    snprintf(name, sizeof name, "eval[%d]", idx);
    loc_of(c, item, loc, sizeof loc);
    if (item->kind == YN_SCALAR) {
        val v = val_of(item, loc, name);
        if (is_null(&v)) return vfail(&v, "expected a path or a mapping {text, seqlen}, got nothing (null)");
        return get_path(&v, c->base, &out->text);
    }
    if (item->kind != YN_MAP)
        return fail_at(c->what, item->mark, "%s: expected a path or a mapping {text, seqlen}, got %s", name, kind_name(item));
    const ynode *vals[EK_COUNT], *keys[EK_COUNT];
    qc_status st = map_keys(c, item, k_eval_keys, "evaluation key", vals, keys);
    if (st != QC_OK) return st;
    if (!vals[EK_TEXT]) return fail_at(c->what, item->mark, "%s: 'text' is required (the file to measure perplexity on)", name);
    for (int k = 0; k < EK_COUNT; k++) {
        const ynode *n = vals[k];
        if (!n) continue;
        snprintf(name, sizeof name, "eval[%d].%s", idx, k_eval_keys[k]);
        loc_of(c, n, loc, sizeof loc);
        if (n->kind != YN_SCALAR)
            return fail_at(c->what, n->mark, "%s: expected %s, got %s", name, k == EK_TEXT ? "a path" : "an integer",
                           kind_name(n));
        val v = val_of(n, loc, name);
        st = k == EK_TEXT ? get_path(&v, c->base, &out->text) : get_checked_int(&v, bad_eval_seqlen, &out->seqlen);
        if (st != QC_OK) return st;
    }
    return QC_OK;
}

static qc_status apply_eval(const ctx *c, const ynode *node) {
    ynode *const single[1] = {(ynode *)node};
    ynode *const *items;
    size_t n;
    list_items(node, &items, &n, single);
    if (node_null(node)) n = 0;
    if (n > QC_RECIPE_MAX_EVALS)
        return fail_at(c->what, items[QC_RECIPE_MAX_EVALS]->mark, "eval: at most %d texts", QC_RECIPE_MAX_EVALS);
    qc_eval_text tmp[QC_RECIPE_MAX_EVALS];
    qc_status st = QC_OK;
    size_t got = 0;
    for (; got < n && st == QC_OK; got++) st = parse_eval(c, items[got], (int)got, &tmp[got]);
    if (st != QC_OK) {
        for (size_t i = 0; i < got; i++) str_free(&tmp[i].text);
        return st;
    }
    evals_replace(c->r, tmp, (int)n);
    char loc[2048];
    loc_of(c, node, loc, sizeof loc);
    return mark(c->r, QC_RK_EVAL, loc);
}

static const char *expected(qc_recipe_key k, char *buf, size_t n) {
    char list[128];
    switch (k_keys[k].type) {
    case T_PATH: return "a path or hf:// reference";
    case T_ENUM: snprintf(buf, n, "one of: %s", name_list(k_keys[k].values, list, sizeof list)); return buf;
    case T_INT: return "an integer";
    case T_REAL: return "a number";
    case T_BOOL: return "true or false";
    case T_SEED: return "a non-negative integer";
    case T_DEVICE: return "one of: cpu, cuda, cuda:N";
    case T_CALIB: case T_EVAL: break;
    }
    return "a list";
}

static qc_status apply_tree(const ctx *c, const ynode *root) {
    if (!root || node_null(root)) return QC_OK; /* an empty document is an empty recipe */
    if (root->kind != YN_MAP) {
        char allowed[512];
        return fail_at(c->what, root->mark, "a recipe is a mapping of keys (%s), got %s",
                       name_list(k_top_keys, allowed, sizeof allowed), kind_name(root));
    }
    const ynode *vals[QC_RK_COUNT], *keys[QC_RK_COUNT];
    qc_status st = map_keys(c, root, k_top_keys, "key", vals, keys);
    /* keys are checked first (unknown, duplicate), then values in file order */
    for (size_t i = 0; st == QC_OK && i + 1 < root->n; i += 2) {
        const ynode *key = root->kid[i], *n = root->kid[i + 1];
        qc_recipe_key k = (qc_recipe_key)key_find(k_top_keys, key->s, key->len);
        if (k_keys[k].type == T_CALIB) st = apply_calib(c, n);
        else if (k_keys[k].type == T_EVAL) st = apply_eval(c, n);
        else if (n->kind != YN_SCALAR) {
            char buf[160];
            st = fail_at(c->what, n->mark, "%s: expected %s, got %s", k_keys[k].name, expected(k, buf, sizeof buf),
                         kind_name(n));
        } else {
            char loc[2048];
            loc_of(c, n, loc, sizeof loc);
            val v = val_of(n, loc, k_keys[k].name);
            st = apply_value(c->r, k, &v, c->base);
        }
    }
    return st;
}

static qc_status load_buf(qc_recipe *r, const char *buf, size_t len, const char *what, const char *base) {
    ynode *root;
    qc_status st = build_tree(buf, len, what, &root);
    if (st != QC_OK) return st;
    ctx c = {r, what, base};
    st = apply_tree(&c, root);
    yn_free(root);
    return st;
}

/* ---- public: the YAML tree for files that embed recipes ---- */
qc_status qc_yaml_parse(const char *buf, size_t len, const char *what, qc_ynode **root) {
    return build_tree(buf, len, what ? what : "<yaml>", root);
}
void qc_yaml_free(qc_ynode *root) { yn_free(root); }
qc_yaml_kind qc_ynode_kind(const qc_ynode *n) {
    return n->kind == YN_SEQ ? QC_YAML_SEQ : n->kind == YN_MAP ? QC_YAML_MAP : QC_YAML_SCALAR;
}
size_t qc_ynode_count(const qc_ynode *n) { return n->kind == YN_MAP ? n->n / 2 : n->kind == YN_SEQ ? n->n : 0; }
const qc_ynode *qc_ynode_item(const qc_ynode *n, size_t i) {
    QC_ASSERT(i < qc_ynode_count(n));
    return n->kind == YN_MAP ? n->kid[2 * i] : n->kid[i];
}
const qc_ynode *qc_ynode_value(const qc_ynode *n, size_t i) {
    QC_ASSERT(n->kind == YN_MAP && i < qc_ynode_count(n));
    return n->kid[2 * i + 1];
}
const char *qc_ynode_str(const qc_ynode *n, bool *plain) {
    if (plain) *plain = n->plain;
    return n->kind == YN_SCALAR ? n->s : NULL;
}
bool qc_ynode_null(const qc_ynode *n) { return node_null(n); }
const char *qc_ynode_where(const qc_ynode *n, const char *what, char *buf, size_t size) {
    snprintf(buf, size, "%s:%zu:%zu", what, n->mark.line + 1, n->mark.column + 1);
    return buf;
}
int qc_recipe_key_find(const char *name) { return key_find(k_top_keys, name, strlen(name)); }
const char *qc_recipe_key_name(int key) { return key >= 0 && key < QC_RK_COUNT ? k_keys[key].name : NULL; }

qc_status qc_recipe_apply_yaml(qc_recipe *r, const qc_ynode *map, const char *what, const char *base_dir) {
    ctx c = {r, what, base_dir};
    return apply_tree(&c, map);
}

qc_status qc_recipe_apply_yaml_key(qc_recipe *r, int key, const qc_ynode *n, const char *what, const char *base_dir) {
    QC_ASSERT(key >= 0 && key < QC_RK_COUNT);
    ctx c = {r, what, base_dir};
    qc_recipe_key k = (qc_recipe_key)key;
    if (k_keys[k].type == T_CALIB) return apply_calib(&c, n);
    if (k_keys[k].type == T_EVAL) return apply_eval(&c, n);
    if (n->kind != YN_SCALAR) {
        char buf[160];
        return fail_at(what, n->mark, "%s: expected %s, got %s", k_keys[k].name, expected(k, buf, sizeof buf),
                       kind_name(n));
    }
    char loc[2048];
    loc_of(&c, n, loc, sizeof loc);
    val v = val_of(n, loc, k_keys[k].name);
    return apply_value(r, k, &v, base_dir);
}

/* ---- public: init, free, load, set ---- */
void qc_recipe_init(qc_recipe *r) {
    memset(r, 0, sizeof *r);
    r->method = (char *)k_methods[0];
    r->bits = 4;
    r->group_size = 128;
    r->sym = true;
    r->act_order = false;
    r->static_groups = false;
    r->true_sequential = true;
    r->awq_scale = (char *)k_awq_scales[2]; /* best */
    r->awq_search_samples = QC_RECIPE_AWQ_SEARCH_SAMPLES;
    r->awq_clip = true;
    r->damp = 0.01;
    r->moe_min_tokens = -1;
    r->moe_low_coverage = (char *)k_moe_lows[0];
    source_default(&r->calib[0], (char *)k_c4);
    r->calib[0].format = (char *)k_src_formats[2]; /* jsonl */
    r->n_calib = 1;
    r->sampling = (char *)k_samplings[0];
    r->nsamples = 128;
    r->seqlen = 2048;
    r->seed = 0;
    r->format = (char *)k_formats[0];
    r->device = (char *)k_devices[0];
}

void qc_recipe_free(qc_recipe *r) {
    if (!r) return;
    str_free(&r->model);
    str_free(&r->out);
    str_free(&r->method);
    str_free(&r->sampling);
    str_free(&r->format);
    str_free(&r->device);
    str_free(&r->source);
    for (int i = 0; i < r->n_calib && i < QC_RECIPE_MAX_SOURCES; i++) source_free(&r->calib[i]);
    for (int i = 0; i < r->n_eval && i < QC_RECIPE_MAX_EVALS; i++) str_free(&r->eval[i].text);
    for (int k = 0; k < QC_RK_COUNT; k++) free(r->where[k]);
    memset(r, 0, sizeof *r);
}

qc_status qc_recipe_load_string(qc_recipe *r, const char *yaml, size_t len, const char *what) {
    if (!what) what = "<recipe>";
    if (len > QC_RECIPE_MAX_BYTES)
        return qc_fail(QC_ERR_FORMAT, "%s: recipe is %zu bytes, larger than the %zu accepted", what, len,
                       QC_RECIPE_MAX_BYTES);
    char *base;
    qc_status st = cwd_dup(&base);
    if (st != QC_OK) return st;
    st = load_buf(r, yaml, len, what, base);
    free(base);
    return st;
}

qc_status qc_recipe_load(qc_recipe *r, const char *path) {
    char *buf = NULL, *dir = NULL, *cwd = NULL, *base = NULL;
    size_t len;
    qc_status st = qc_read_file(path, QC_RECIPE_MAX_BYTES, &buf, &len);
    if (st != QC_OK) return st;
    free(r->source);
    if (!(r->source = qc_strdup(path))) {
        free(buf);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    const char *slash = strrchr(path, '/');
    dir = slash ? qc_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : qc_strdup(".");
    if (!dir) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK && dir[0] != '/') {
        st = cwd_dup(&cwd);
        if (st == QC_OK) {
            char *j = qc_path_join(cwd, dir);
            base = j ? path_clean(j) : NULL;
            free(j);
        }
    } else if (st == QC_OK) {
        base = path_clean(dir);
    }
    if (st == QC_OK && !base) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) st = load_buf(r, buf, len, path, base);
    free(base);
    free(cwd);
    free(dir);
    free(buf);
    return st;
}

qc_status qc_recipe_set(qc_recipe *r, const char *key, const char *value, const char *origin) {
    if (!key || !value) return qc_fail(QC_ERR_ARG, "qc_recipe_set: a key and a value are required");
    char name[40];
    size_t n = strlen(key);
    int k = -1;
    if (n < sizeof name) {
        for (size_t i = 0; i <= n; i++) name[i] = key[i] == '-' ? '_' : key[i];
        k = key_find(k_top_keys, name, n);
    }
    if (k < 0) {
        char allowed[512], shown[80];
        return qc_fail(QC_ERR_ARG, "unknown recipe key %s; allowed: %s", show(key, n, shown, sizeof shown),
                       name_list(k_top_keys, allowed, sizeof allowed));
    }
    val v = {.s = value, .len = strlen(value), .plain = true, .flag = true,
             .loc = origin ? origin : k_keys[k].name, .name = k_keys[k].name};
    return apply_value(r, (qc_recipe_key)k, &v, NULL);
}

/* ---- validation ---- */
static bool is_set(const qc_recipe *r, qc_recipe_key k) { return (r->set_mask & QC_RK_BIT(k)) != 0; }

/* "(run.yaml:3:7)", "(--bits)", "(default)", "(default for method awq)" */
static const char *origin(const qc_recipe *r, qc_recipe_key k, char *buf, size_t n) {
    static const bool derived[QC_RK_COUNT] = {[QC_RK_SYM] = true, [QC_RK_SAMPLING] = true, [QC_RK_SEQLEN] = true,
                                              [QC_RK_FORMAT] = true};
    if (r->where[k]) snprintf(buf, n, "(%s)", r->where[k]);
    else if (is_set(r, k)) snprintf(buf, n, "(set)");
    else if (derived[k]) snprintf(buf, n, "(default for method %s)", r->method);
    else snprintf(buf, n, "(default)");
    return buf;
}

/* "<where a, else b>: <a_text> (origin a) <a_claim>, but <b_text> (origin b); <advice>", each origin
 * left out where it is the prefix already. */
static qc_status conflict(const qc_recipe *r, qc_recipe_key a, const char *a_text, const char *a_claim,
                          qc_recipe_key b, const char *b_text, const char *advice) {
    char oa[1100] = "", ob[1100] = "";
    const char *prefix = r->where[a] ? r->where[a] : r->where[b] ? r->where[b] : "recipe";
    if (r->where[a] != prefix) oa[0] = ' ', origin(r, a, oa + 1, sizeof oa - 1);
    if (r->where[b] != prefix) ob[0] = ' ', origin(r, b, ob + 1, sizeof ob - 1);
    return qc_fail(QC_ERR_FORMAT, "%s: %s%s %s, but %s%s; %s", prefix, a_text, oa, a_claim, b_text, ob, advice);
}

static qc_status range_fail(const qc_recipe *r, qc_recipe_key k, const char *value, const char *why) {
    char o[1100];
    return qc_fail(QC_ERR_FORMAT, "%s: %s %s %s", k_keys[k].name, value, why, origin(r, k, o, sizeof o));
}

qc_status qc_recipe_validate(qc_recipe *r) {
    char num[64];
    /* single fields again: a caller may have assigned them directly */
    const qc_recipe_key enums[] = {QC_RK_METHOD, QC_RK_SAMPLING, QC_RK_FORMAT};
    for (size_t i = 0; i < sizeof enums / sizeof enums[0]; i++) {
        qc_recipe_key k = enums[i];
        const char *s = k == QC_RK_METHOD ? r->method : k == QC_RK_SAMPLING ? r->sampling : r->format;
        char list[128], why_enum[160];
        snprintf(why_enum, sizeof why_enum, "is not one of: %s", name_list(k_keys[k].values, list, sizeof list));
        if (enum_index(k_keys[k].values, s) < 0) return range_fail(r, k, s ? s : "null", why_enum);
    }
    if (!r->device || !(enum_index(k_devices, r->device) >= 0 || strncmp(r->device, "cuda:", 5) == 0))
        return range_fail(r, QC_RK_DEVICE, r->device ? r->device : "null", "is not cpu, cuda or cuda:N");
    const char *why;
    if ((why = bad_bits(r->bits))) return snprintf(num, sizeof num, "%d", r->bits), range_fail(r, QC_RK_BITS, num, why);
    if ((why = bad_group(r->group_size)))
        return snprintf(num, sizeof num, "%d", r->group_size), range_fail(r, QC_RK_GROUP_SIZE, num, why);
    if ((why = bad_damp(r->damp))) return snprintf(num, sizeof num, "%g", r->damp), range_fail(r, QC_RK_DAMP, num, why);
    if (r->n_calib < 1 || r->n_calib > QC_RECIPE_MAX_SOURCES)
        return qc_fail(QC_ERR_FORMAT, "calib: needs 1 to %d sources, has %d", QC_RECIPE_MAX_SOURCES, r->n_calib);
    for (int i = 0; i < r->n_calib; i++) {
        const qc_calib_source *s = &r->calib[i];
        if (!s->path || !s->field || !*s->field || enum_index(k_src_formats, s->format) < 0 ||
            enum_index(k_splits, s->split) < 0)
            return qc_fail(QC_ERR_FORMAT, "calib[%d]: path, field, format (%s) and split (%s) must be set", i,
                           "auto, text, jsonl, json, parquet", "line, paragraph, file");
        if ((why = bad_weight(s->weight)))
            return qc_fail(QC_ERR_FORMAT, "calib[%d].weight: %g %s", i, s->weight, why);
        if ((why = bad_holdout(s->holdout)))
            return qc_fail(QC_ERR_FORMAT, "calib[%d].holdout: %d %s", i, s->holdout, why);
    }
    if (r->n_eval < 0 || r->n_eval > QC_RECIPE_MAX_EVALS)
        return qc_fail(QC_ERR_FORMAT, "eval: at most %d texts, has %d", QC_RECIPE_MAX_EVALS, r->n_eval);
    for (int i = 0; i < r->n_eval; i++) {
        if (!r->eval[i].text) return qc_fail(QC_ERR_FORMAT, "eval[%d]: text must be set", i);
        if ((why = bad_eval_seqlen(r->eval[i].seqlen)))
            return qc_fail(QC_ERR_FORMAT, "eval[%d].seqlen: %d %s", i, r->eval[i].seqlen, why);
    }

    /* method-dependent defaults, recomputed from scratch so validate is idempotent */
    /* awq+gptq: AWQ's scales, then the GPTQ solver; its defaults are AWQ's, its solver options GPTQ's */
    bool awq_gptq = strcmp(r->method, "awq+gptq") == 0;
    bool awq = strcmp(r->method, "awq") == 0 || awq_gptq, gptq = strcmp(r->method, "gptq") == 0 || awq_gptq;
    if (!is_set(r, QC_RK_SYM)) r->sym = !awq;
    if (!is_set(r, QC_RK_SAMPLING)) r->sampling = (char *)k_samplings[awq ? 1 : 0];
    if (!is_set(r, QC_RK_SEQLEN)) r->seqlen = awq ? 512 : 2048;
    if ((why = bad_search_samples(r->awq_search_samples)))
        return snprintf(num, sizeof num, "%d", r->awq_search_samples), range_fail(r, QC_RK_AWQ_SEARCH_SAMPLES, num, why);
    if (!is_set(r, QC_RK_FORMAT)) {
        bool awq_ok = awq && r->bits == 4 && r->group_size != -1 && (!r->act_order || r->static_groups);
        r->format = (char *)k_formats[r->sym ? 0 : awq_ok ? 2 : 1];
    }
    if ((why = bad_nsamples(r->nsamples)))
        return snprintf(num, sizeof num, "%d", r->nsamples), range_fail(r, QC_RK_NSAMPLES, num, why);
    if ((why = bad_seqlen(r->seqlen))) return snprintf(num, sizeof num, "%d", r->seqlen), range_fail(r, QC_RK_SEQLEN, num, why);

    /* cross-field conflicts */
    char t[160];
    if (!gptq && r->act_order) {
        snprintf(t, sizeof t, "method is '%s'", r->method);
        return conflict(r, QC_RK_ACT_ORDER, "act_order: true", "applies to methods gptq and awq+gptq only",
                        QC_RK_METHOD, t, "remove act_order or use method gptq");
    }
    if (!gptq && r->static_groups) {
        snprintf(t, sizeof t, "method is '%s'", r->method);
        return conflict(r, QC_RK_STATIC_GROUPS, "static_groups: true", "applies to methods gptq and awq+gptq only",
                        QC_RK_METHOD, t, "remove static_groups or use method gptq");
    }
    if (r->mse && strcmp(r->method, "awq") == 0)
        return conflict(r, QC_RK_MSE, "mse: true", "applies to the GPTQ quantizer (methods gptq, awq+gptq, rtn)",
                        QC_RK_METHOD, "method is 'awq'", "remove mse or use method awq+gptq");
    if (strcmp(r->format, "gptq") == 0 && !r->sym)
        return conflict(r, QC_RK_FORMAT, "format 'gptq'", "(GPTQ v1) stores symmetric results only", QC_RK_SYM,
                        "sym is false", "use format gptq_v2 (any method) or awq (4-bit) for asymmetric results, or sym: true");
    if (strcmp(r->format, "awq") == 0) {
        if (r->bits != 4) {
            snprintf(t, sizeof t, "bits is %d", r->bits);
            return conflict(r, QC_RK_FORMAT, "format 'awq'", "stores 4-bit results only", QC_RK_BITS, t,
                            "use format gptq_v2 (asymmetric) or gptq (symmetric) for other widths");
        }
        if (r->group_size == -1)
            return conflict(r, QC_RK_FORMAT, "format 'awq'", "needs groups (AWQ loaders reject group_size -1)",
                            QC_RK_GROUP_SIZE, "group_size is -1", "use group_size 32, 64 or 128, or format gptq_v2");
        if (r->act_order && !r->static_groups)
            return conflict(r, QC_RK_FORMAT, "format 'awq'", "has no g_idx to store act-order groups", QC_RK_ACT_ORDER,
                            "act_order is true without static_groups",
                            "set static_groups: true (groups stay contiguous) or use format gptq/gptq_v2");
    }
    return QC_OK;
}

/* ---- canonical JSON, hash ---- */
static int cmp_items(const void *a, const void *b) {
    return strcmp((*(cJSON *const *)a)->string, (*(cJSON *const *)b)->string);
}

/* Sorts object keys at every level (cJSON keeps insertion order). */
static bool json_sort(cJSON *j) {
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return true;
    size_t n = 0;
    for (cJSON *c = j->child; c; c = c->next) {
        if (!json_sort(c)) return false;
        n++;
    }
    if (!cJSON_IsObject(j) || n < 2) return true;
    cJSON **v = qc_malloc(n * sizeof *v);
    if (!v) return false;
    n = 0;
    for (cJSON *c = j->child; c; c = c->next) v[n++] = c;
    qsort(v, n, sizeof *v, cmp_items);
    for (size_t i = 0; i < n; i++) {
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
        v[i]->prev = i > 0 ? v[i - 1] : v[n - 1]; /* cJSON: the head's prev is the tail */
    }
    j->child = v[0];
    free(v);
    return true;
}

static bool add_str(cJSON *o, const char *k, const char *s) {
    return (s ? cJSON_AddStringToObject(o, k, s) : cJSON_AddNullToObject(o, k)) != NULL;
}

static char *canonical(const qc_recipe *r, bool for_hash) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (ok) {
        char seed[32];
        snprintf(seed, sizeof seed, "%" PRIu64, r->seed);
        cJSON *s = cJSON_CreateRaw(seed); /* exact: a double cannot hold every 64-bit seed */
        ok = s && cJSON_AddItemToObject(o, "seed", s);
        if (!ok) cJSON_Delete(s);
    }
    ok = ok && cJSON_AddNumberToObject(o, "qcal_recipe", QC_RECIPE_VERSION) && add_str(o, "model", r->model) &&
         add_str(o, "method", r->method) && cJSON_AddNumberToObject(o, "bits", r->bits) &&
         cJSON_AddNumberToObject(o, "group_size", r->group_size) && cJSON_AddBoolToObject(o, "sym", r->sym) &&
         cJSON_AddBoolToObject(o, "act_order", r->act_order) &&
         cJSON_AddBoolToObject(o, "static_groups", r->static_groups) &&
         cJSON_AddBoolToObject(o, "true_sequential", r->true_sequential) &&
         add_str(o, "awq_scale", r->awq_scale) && cJSON_AddBoolToObject(o, "awq_clip", r->awq_clip) &&
         cJSON_AddNumberToObject(o, "awq_search_samples", r->awq_search_samples) &&
         (!r->mse || cJSON_AddBoolToObject(o, "mse", true)) && /* absent when false: older hashes stand */
         /* the MoE keys likewise, when they differ from their defaults */
         (r->moe_min_tokens < 0 || cJSON_AddNumberToObject(o, "moe_min_tokens", r->moe_min_tokens)) &&
         (strcmp(r->moe_low_coverage, k_moe_lows[0]) == 0 || add_str(o, "moe_low_coverage", r->moe_low_coverage)) &&
         cJSON_AddNumberToObject(o, "damp", r->damp) && add_str(o, "sampling", r->sampling) &&
         cJSON_AddNumberToObject(o, "nsamples", r->nsamples) && cJSON_AddNumberToObject(o, "seqlen", r->seqlen) &&
         add_str(o, "format", r->format);
    cJSON *cal = ok ? cJSON_AddArrayToObject(o, "calib") : NULL;
    ok = ok && cal;
    for (int i = 0; ok && i < r->n_calib; i++) {
        const qc_calib_source *c = &r->calib[i];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(cal, e);
        if (!ok) cJSON_Delete(e);
        ok = ok && add_str(e, "path", c->path) && add_str(e, "format", c->format) && add_str(e, "field", c->field) &&
             add_str(e, "split", c->split) && cJSON_AddNumberToObject(e, "weight", c->weight);
        if (ok && c->holdout) ok = cJSON_AddNumberToObject(e, "holdout", c->holdout) != NULL;
    }
    if (!for_hash) {
        ok = ok && add_str(o, "out", r->out) && add_str(o, "device", r->device);
        cJSON *ev = ok ? cJSON_AddArrayToObject(o, "eval") : NULL;
        ok = ok && ev;
        for (int i = 0; ok && i < r->n_eval; i++) {
            cJSON *e = cJSON_CreateObject();
            ok = e && cJSON_AddItemToArray(ev, e);
            if (!ok) cJSON_Delete(e);
            ok = ok && add_str(e, "text", r->eval[i].text) &&
                 cJSON_AddNumberToObject(e, "seqlen", r->eval[i].seqlen ? r->eval[i].seqlen : r->seqlen);
        }
    }
    char *text = ok && json_sort(o) ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

char *qc_recipe_canonical(const qc_recipe *r) { return canonical(r, false); }
char *qc_recipe_hash_text(const qc_recipe *r) { return canonical(r, true); }

void qc_recipe_hash(const qc_recipe *r, char out[65]) {
    char *t = canonical(r, true);
    out[0] = '\0';
    if (t) qc_sha256_buf(t, strlen(t), out);
    free(t);
}

/* ---- resolved YAML ---- */
/* A YAML double-quoted scalar (JSON escapes are valid YAML ones), or null. */
static void sb_quoted(qc_sbuf *b, const char *s) {
    if (!s) { qc_sbuf_printf(b, "null"); return; }
    qc_sbuf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') qc_sbuf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) qc_sbuf_printf(b, "\\u%04x", *p);
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) qc_sbuf_printf(b, "\\u%04x", p[1]), p++;
        else qc_sbuf_printf(b, "%c", *p);
    }
    qc_sbuf_printf(b, "\"");
}

/* Shortest of %.15g / %.17g that reads back exactly. */
static void sb_real(qc_sbuf *b, double x) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", x);
    if (strtod(buf, NULL) != x) snprintf(buf, sizeof buf, "%.17g", x);
    qc_sbuf_printf(b, "%s", buf);
}

char *qc_recipe_to_yaml(const qc_recipe *r) {
    qc_sbuf b = {0};
    qc_sbuf_printf(&b, "model: ");
    sb_quoted(&b, r->model);
    qc_sbuf_printf(&b, "\nout: ");
    sb_quoted(&b, r->out);
    qc_sbuf_printf(&b, "\nmethod: %s\nbits: %d\ngroup_size: %d\nsym: %s\nact_order: %s\nstatic_groups: %s\n"
                  "true_sequential: %s\ndamp: ",
              r->method, r->bits, r->group_size, r->sym ? "true" : "false", r->act_order ? "true" : "false",
              r->static_groups ? "true" : "false", r->true_sequential ? "true" : "false");
    sb_real(&b, r->damp);
    qc_sbuf_printf(&b, "\nawq_scale: %s\nawq_clip: %s\nawq_search_samples: %d\nmse: %s", r->awq_scale,
                   r->awq_clip ? "true" : "false", r->awq_search_samples, r->mse ? "true" : "false");
    if (r->moe_min_tokens < 0) qc_sbuf_printf(&b, "\nmoe_min_tokens: auto");
    else qc_sbuf_printf(&b, "\nmoe_min_tokens: %d", r->moe_min_tokens);
    qc_sbuf_printf(&b, "\nmoe_low_coverage: %s", r->moe_low_coverage);
    qc_sbuf_printf(&b, "\ncalib:\n");
    for (int i = 0; i < r->n_calib; i++) {
        const qc_calib_source *c = &r->calib[i];
        qc_sbuf_printf(&b, "  - path: ");
        sb_quoted(&b, c->path);
        qc_sbuf_printf(&b, "\n    format: %s\n    field: ", c->format);
        sb_quoted(&b, c->field);
        qc_sbuf_printf(&b, "\n    split: %s\n    weight: ", c->split);
        sb_real(&b, c->weight);
        qc_sbuf_printf(&b, "\n");
        if (c->holdout) qc_sbuf_printf(&b, "    holdout: %d\n", c->holdout);
    }
    qc_sbuf_printf(&b, "sampling: %s\nnsamples: %d\nseqlen: %d\nseed: %" PRIu64 "\nformat: %s\ndevice: %s\neval:%s\n",
              r->sampling, r->nsamples, r->seqlen, r->seed, r->format, r->device, r->n_eval ? "" : " []");
    for (int i = 0; i < r->n_eval; i++) {
        qc_sbuf_printf(&b, "  - text: ");
        sb_quoted(&b, r->eval[i].text);
        qc_sbuf_printf(&b, "\n    seqlen: %d\n", r->eval[i].seqlen ? r->eval[i].seqlen : r->seqlen);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- the example: every key with its default; it must load back to exactly the defaults ---- */
static const char k_example[] =
    "# qcal recipe: one file describes a whole quantization run.\n"
    "#\n"
    "# Every key is optional; the values written here are the defaults. Command-line flags override\n"
    "# the file (--bits 3, --group-size 64, --sym/--asym, ...). `qcal recipe FILE` checks a recipe and\n"
    "# prints its resolved values and its hash (recipe-sha256).\n"
    "#\n"
    "# Paths: relative paths in this file (model, out, calib paths, eval texts) are relative to the\n"
    "# directory of this file, not to the current directory; paths given as flags are relative to\n"
    "# the current directory. hf:// references are used as written.\n"
    "#\n"
    "# Keys whose default depends on the method (sym, sampling, seqlen, format) are commented out:\n"
    "# uncomment one to fix it for every method.\n"
    "#\n"
    "# The recipe hash covers every resolved value except out, device and eval, which do not change\n"
    "# the quantized weights.\n"
    "\n"
    "# --- what to quantize and where to write it (both required to quantize)\n"
    "model: null            # a model directory, or hf://org/name[@revision]\n"
    "out: null              # the output directory\n"
    "\n"
    "# --- method\n"
    "method: gptq           # gptq | awq | rtn (round to nearest: no calibration)\n"
    "#                      # | awq+gptq (AWQ's scales and clipping, then the GPTQ solver; AWQ's defaults)\n"
    "bits: 4                # 2 | 3 | 4 | 8\n"
    "group_size: 128        # -1 (one group per row) or a positive multiple of 8: 32, 64, 128, ...\n"
    "# sym: true            # default true; false for awq (zero points)\n"
    "act_order: false       # gptq only: columns in order of decreasing Hessian diagonal (desc_act)\n"
    "static_groups: false   # gptq only: group parameters fixed before the sweep (trivial g_idx)\n"
    "true_sequential: true  # gptq: q/k/v, then o, then up/gate, then down, each after the previous\n"
    "damp: 0.01             # gptq: dampening, a fraction of the mean Hessian diagonal, in (0, 1)\n"
    "awq_scale: best        # awq scale formula: best (per group, the lower loss of the two) | autoawq\n"
    "#                      # (x^r / w^(1-r), duo scaling) | llm-awq (x^r)\n"
    "awq_clip: true         # awq: search a clipping range per group (not for q/k)\n"
    "awq_search_samples: 12 # awq: windows the scale search's attention/MLP forwards run on (evenly strided;\n"
    "#                      # x_mean and o/down use all); a count, or all (0)\n"
    "mse: false             # gptq, awq+gptq, rtn: group params by an MSE grid search (GPTQ reference's mse)\n"
    "moe_min_tokens: auto   # MoE: experts routed fewer calibration tokens than this (auto: hidden_size)\n"
    "moe_low_coverage: all-tokens # ... get Hessians from every token sent through them (all-tokens) | rtn\n"
    "\n"
    "# --- calibration data\n"
    "calib:                 # one or more sources mixed by weight; a bare string is {path: STRING}\n"
    "  - path: hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz   # a file or hf://datasets/...\n"
    "    format: jsonl      # auto (by extension, then content) | text | jsonl | json | parquet\n"
    "    field: text        # the JSON key or Parquet column holding the text\n"
    "    split: line        # text files: one document per line | paragraph | file\n"
    "    weight: 1          # relative share of the samples, > 0\n"
    "    # holdout: 10      # never sample documents i % 10 == 9 (0-based): they stay held out for evaluation\n"
    "# sampling: gptq       # gptq: random windows of random long documents (GPTQ paper)\n"
    "#                      # awq: documents concatenated and cut into blocks (default for awq)\n"
    "nsamples: 128          # calibration samples, >= 1\n"
    "# seqlen: 2048         # tokens per sample, >= 2; default 2048, 512 for awq\n"
    "seed: 0                # sampling seed, 0 .. 2^64-1\n"
    "\n"
    "# --- output\n"
    "# format: gptq         # gptq (GPTQ v1, symmetric only) | gptq_v2 (any) | awq (4-bit, with groups)\n"
    "#                      # default: gptq when sym; else awq for method awq at 4 bits, else gptq_v2\n"
    "device: cpu            # cpu | cuda | cuda:N\n"
    "\n"
    "# --- perplexity after quantizing: a list of paths, or of {text: PATH, seqlen: N}\n"
    "eval: []\n"
    "#  - text: wikitext2_test.txt\n"
    "#    seqlen: 2048      # default: the recipe's seqlen (the papers evaluate at 2048)\n";

const char *qc_recipe_example(void) { return k_example; }
