/* experiment.c - `qcal experiment`: the file (parse, validate, expand), the runs (spawned quantizations,
 * in-process evaluations, reuse), the result tables and their comparison. The contract is experiment.h. */
#include "experiment.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "docs.h"
#include "eval.h"
#include "qc_par.h"
#include "qc_signal.h"
#include "run_guard.h"
#include "run_setup.h"
#include "sha256.h"
#include "token_file.h"
#include "tokenizer.h"

#define MAX_TEXT_BYTES ((size_t)4 << 30)
#define EXP_MAX_BYTES  ((size_t)1 << 20)

/* ---- small helpers ---- */
static qc_status node_fail(const qc_experiment *e, const qc_ynode *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static qc_status node_fail(const qc_experiment *e, const qc_ynode *n, const char *fmt, ...) {
    char where[2048], msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qc_fail(QC_ERR_FORMAT, "%s: %s", qc_ynode_where(n, e->path, where, sizeof where), msg);
}

static bool scalar_is(const qc_ynode *n, const char *s) {
    return qc_ynode_kind(n) == QC_YAML_SCALAR && strcmp(qc_ynode_str(n, NULL), s) == 0;
}

/* A plain integer scalar in [lo, hi]. */
static qc_status node_int(const qc_experiment *e, const qc_ynode *n, const char *name, long long lo, long long hi,
                          int *out) {
    bool plain;
    const char *s = qc_ynode_kind(n) == QC_YAML_SCALAR ? qc_ynode_str(n, &plain) : NULL;
    char *end = NULL;
    errno = 0;
    long long v = s && plain && *s ? strtoll(s, &end, 10) : 0;
    if (!s || !plain || !*s || *end || errno || v < lo || v > hi)
        return node_fail(e, n, "%s: expected an integer in [%lld, %lld], got %s", name, lo, hi,
                         s ? s : "a list or mapping");
    *out = (int)v;
    return QC_OK;
}

static qc_status node_string(const qc_experiment *e, const qc_ynode *n, const char *name, char **out) {
    const char *s = qc_ynode_kind(n) == QC_YAML_SCALAR && !qc_ynode_null(n) ? qc_ynode_str(n, NULL) : NULL;
    if (!s || !*s) return node_fail(e, n, "%s: expected a non-empty string", name);
    free(*out);
    *out = qc_strdup(s);
    return *out ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
}

static bool name_ok(const char *s, const char *extra) {
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-' || (extra && strchr(extra, *p))))
            return false;
    return true;
}

/* Shortest of %.15g / %.17g that reads back exactly. */
static void real_text(double x, char *buf, size_t n) {
    snprintf(buf, n, "%.15g", x);
    if (strtod(buf, NULL) != x) snprintf(buf, n, "%.17g", x);
}

/* Checks the keys of a mapping against names; values[i] = the value of names[i] or NULL. */
static qc_status map_check(const qc_experiment *e, const qc_ynode *map, const char *scope, const char *const *names,
                           const qc_ynode **values) {
    int nk = 0;
    while (names[nk]) nk++;
    for (int i = 0; i < nk; i++) values[i] = NULL;
    for (size_t i = 0; i < qc_ynode_count(map); i++) {
        const qc_ynode *k = qc_ynode_item(map, i);
        if (qc_ynode_kind(k) != QC_YAML_SCALAR) return node_fail(e, k, "%s: a key must be a name", scope);
        int f = -1;
        for (int j = 0; j < nk; j++)
            if (scalar_is(k, names[j])) f = j;
        if (f < 0) {
            char allowed[256] = "";
            for (int j = 0; j < nk; j++) snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s", j ? ", " : "", names[j]);
            return node_fail(e, k, "unknown %s key '%s'; allowed: %s", scope, qc_ynode_str(k, NULL), allowed);
        }
        if (values[f]) return node_fail(e, k, "%s: duplicate key '%s'", scope, names[f]);
        values[f] = qc_ynode_value(map, i);
    }
    return QC_OK;
}

/* ---- the file ---- */
static const char *const k_top[] = {"base", "grid", "eval", NULL};
enum { EV_NAME, EV_TEXT, EV_SEQLEN, EV_MAXW, EV_HOLDOUT, EV_FORMAT, EV_FIELD, EV_SPLIT, EV_COUNT };
static const char *const k_ev[EV_COUNT + 1] = {"name", "text", "seqlen", "max_windows", "holdout", "format", "field", "split", NULL};

static qc_status abs_path(const qc_experiment *e, const char *p, char **out) {
    *out = p[0] == '/' ? qc_strdup(p) : qc_path_join(e->base_dir, p);
    return *out ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
}

static qc_status parse_eval(qc_experiment *e, const qc_ynode *list) {
    if (qc_ynode_kind(list) != QC_YAML_SEQ || qc_ynode_count(list) == 0)
        return node_fail(e, list, "eval: expected a non-empty list of {name, text, seqlen, max_windows, holdout}");
    if (qc_ynode_count(list) > QC_EXP_MAX_EVALS) return node_fail(e, list, "eval: at most %d texts", QC_EXP_MAX_EVALS);
    for (size_t i = 0; i < qc_ynode_count(list); i++) {
        const qc_ynode *item = qc_ynode_item(list, i), *v[EV_COUNT];
        char scope[32];
        snprintf(scope, sizeof scope, "eval[%zu]", i);
        if (qc_ynode_kind(item) != QC_YAML_MAP) return node_fail(e, item, "%s: expected a mapping {name, text, ...}", scope);
        qc_status st = map_check(e, item, scope, k_ev, v);
        if (st) return st;
        qc_exp_eval *ev = &e->evals[e->n_evals++];
        ev->seqlen = 2048;
        if (!v[EV_NAME] || !v[EV_TEXT]) return node_fail(e, item, "%s: 'name' and 'text' are required", scope);
        if ((st = node_string(e, v[EV_NAME], "name", &ev->name))) return st;
        if (!name_ok(ev->name, NULL))
            return node_fail(e, v[EV_NAME], "%s.name: '%s' is not [A-Za-z0-9_-]+ (it names the column ppl_<name>)", scope, ev->name);
        for (int j = 0; j + 1 < e->n_evals; j++)
            if (strcmp(e->evals[j].name, ev->name) == 0)
                return node_fail(e, v[EV_NAME], "%s.name: duplicate eval name '%s' (eval[%d])", scope, ev->name, j);
        char *t = NULL;
        if ((st = node_string(e, v[EV_TEXT], "text", &t))) return st;
        if (strncmp(t, "hf://", 5) == 0) {
            free(t);
            return node_fail(e, v[EV_TEXT], "%s.text: a local file is needed (download it first)", scope);
        }
        st = abs_path(e, t, &ev->text);
        free(t);
        if (st) return st;
        if (access(ev->text, R_OK) != 0)
            return node_fail(e, v[EV_TEXT], "%s.text: %s: %s", scope, ev->text, strerror(errno));
        if (v[EV_SEQLEN] && (st = node_int(e, v[EV_SEQLEN], "seqlen", 2, 1 << 20, &ev->seqlen))) return st;
        if (v[EV_MAXW] && (st = node_int(e, v[EV_MAXW], "max_windows", 0, INT32_MAX, &ev->max_windows))) return st;
        if (v[EV_HOLDOUT] && (st = node_int(e, v[EV_HOLDOUT], "holdout", 0, 1 << 20, &ev->holdout))) return st;
        if (ev->holdout == 1) return node_fail(e, v[EV_HOLDOUT], "%s.holdout: 1 would hold out every document; use 0 or N >= 2", scope);
        for (int k = EV_FORMAT; k <= EV_SPLIT; k++) {
            if (!v[k]) continue;
            if (!ev->holdout)
                return node_fail(e, v[k], "%s.%s: applies with holdout only (without it the file is used byte for byte)", scope, k_ev[k]);
            char **dst = k == EV_FORMAT ? &ev->format : k == EV_FIELD ? &ev->field : &ev->split;
            if ((st = node_string(e, v[k], k_ev[k], dst))) return st;
        }
        qc_docs_format f;
        if (ev->format && !qc_docs_format_parse(ev->format, &f))
            return node_fail(e, v[EV_FORMAT], "%s.format: '%s' is not one of: auto, text, jsonl, json, parquet", scope, ev->format);
        if (ev->split && strcmp(ev->split, "line") && strcmp(ev->split, "paragraph") && strcmp(ev->split, "file"))
            return node_fail(e, v[EV_SPLIT], "%s.split: '%s' is not one of: line, paragraph, file", scope, ev->split);
    }
    return QC_OK;
}

/* The label of a calib value: basename of its first path without extensions. */
static char *auto_label(const qc_recipe *r) {
    const char *p = r->calib[0].path, *slash = strrchr(p, '/');
    char *s = qc_strdup(slash ? slash + 1 : p);
    if (!s) return NULL;
    for (char *dot; (dot = strrchr(s, '.')) && dot != s;) {
        bool comp = !strcmp(dot, ".gz") || !strcmp(dot, ".zst") || !strcmp(dot, ".zstd");
        *dot = '\0';
        if (!comp) break;
    }
    for (char *q = s; *q; q++)
        if (!name_ok((char[]){*q, 0}, ".")) *q = '_';
    return s;
}

/* Renders key rk of a recipe where it was set: the id text and the JSON-typed value. */
static void render(int rk, const qc_recipe *r, char *text, size_t tn, char *json, size_t jn) {
    const char *s = NULL;
    switch (rk) {
    case QC_RK_METHOD: s = r->method; break;
    case QC_RK_SAMPLING: s = r->sampling; break;
    case QC_RK_FORMAT: s = r->format; break;
    case QC_RK_AWQ_SCALE: s = r->awq_scale; break;
    case QC_RK_BITS: snprintf(text, tn, "%d", r->bits); break;
    case QC_RK_GROUP_SIZE: snprintf(text, tn, "%d", r->group_size); break;
    case QC_RK_NSAMPLES: snprintf(text, tn, "%d", r->nsamples); break;
    case QC_RK_SEQLEN: snprintf(text, tn, "%d", r->seqlen); break;
    case QC_RK_SEED: snprintf(text, tn, "%" PRIu64, r->seed); break;
    case QC_RK_DAMP: real_text(r->damp, text, tn); break;
    case QC_RK_SYM: snprintf(text, tn, "%s", r->sym ? "true" : "false"); break;
    case QC_RK_ACT_ORDER: snprintf(text, tn, "%s", r->act_order ? "true" : "false"); break;
    case QC_RK_STATIC_GROUPS: snprintf(text, tn, "%s", r->static_groups ? "true" : "false"); break;
    case QC_RK_TRUE_SEQUENTIAL: snprintf(text, tn, "%s", r->true_sequential ? "true" : "false"); break;
    case QC_RK_AWQ_CLIP: snprintf(text, tn, "%s", r->awq_clip ? "true" : "false"); break;
    case QC_RK_AWQ_SEARCH_SAMPLES: snprintf(text, tn, "%d", r->awq_search_samples); break;
    case QC_RK_MSE: snprintf(text, tn, "%s", r->mse ? "true" : "false"); break;
    default: QC_ASSERT(!"not a grid key");
    }
    if (s) {
        snprintf(text, tn, "%s", s);
        snprintf(json, jn, "\"%s\"", s); /* enumerated values: no escaping needed */
    } else {
        snprintf(json, jn, "%s", text);
    }
}

/* The grid key's name: a recipe key, or "variant". */
static const char *key_name(int rk) { return rk == QC_EXP_VARIANT ? "variant" : qc_recipe_key_name(rk); }

/* Applies a variant (a map: label plus recipe keys) to r. With check, refuses keys that cannot vary. */
static qc_status apply_variant(qc_experiment *e, qc_recipe *r, const qc_ynode *v, bool check) {
    for (size_t j = 0; j < qc_ynode_count(v); j++) {
        const qc_ynode *kn = qc_ynode_item(v, j), *vn = qc_ynode_value(v, j);
        const char *name = qc_ynode_str(kn, NULL);
        if (name && strcmp(name, "label") == 0) continue;
        int rk = name ? qc_recipe_key_find(name) : -1;
        if (check && rk < 0) return node_fail(e, kn, "grid.variant: '%s' is not a recipe key", name ? name : "?");
        if (check && (rk == QC_RK_MODEL || rk == QC_RK_OUT || rk == QC_RK_DEVICE || rk == QC_RK_EVAL ||
                      rk == QC_RK_SEED))
            return node_fail(e, kn, "grid.variant: '%s' cannot vary inside a variant", name);
        qc_status st = qc_recipe_apply_yaml_key(r, rk, vn, e->path, e->base_dir);
        if (st) return st;
    }
    return QC_OK;
}

static qc_status parse_grid_key(qc_experiment *e, const qc_ynode *kn, const qc_ynode *vals) {
    const char *name = qc_ynode_str(kn, NULL);
    int rk = name && strcmp(name, "variant") == 0 ? QC_EXP_VARIANT : qc_recipe_key_find(name);
    if (rk < 0 && rk != QC_EXP_VARIANT) {
        char allowed[512] = "";
        for (int k = 0; k < QC_RK_COUNT; k++)
            if (k != QC_RK_MODEL && k != QC_RK_OUT && k != QC_RK_DEVICE && k != QC_RK_EVAL)
                snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s", *allowed ? ", " : "",
                         qc_recipe_key_name(k));
        return node_fail(e, kn, "grid: '%s' is not a recipe key; allowed: %s, variant", name, allowed);
    }
    if (rk == QC_RK_MODEL || rk == QC_RK_OUT || rk == QC_RK_DEVICE || rk == QC_RK_EVAL)
        return node_fail(e, kn, "grid: '%s' cannot vary (%s)", name,
                         rk == QC_RK_MODEL ? "one model and one FP16 baseline per experiment"
                         : rk == QC_RK_EVAL ? "the experiment's eval list measures every run"
                                            : "the runner chooses it");
    for (int i = 0; i < e->n_keys; i++)
        if (e->keys[i].rk == rk) return node_fail(e, kn, "grid: duplicate key '%s'", name);
    if (qc_ynode_kind(vals) != QC_YAML_SEQ) return node_fail(e, vals, "grid.%s: expected a list of values", name);
    size_t n = qc_ynode_count(vals);
    if (n == 0) return node_fail(e, vals, "grid.%s: an empty list (give at least one value)", name);
    if (n > QC_EXP_MAX_VALUES) return node_fail(e, vals, "grid.%s: at most %d values", name, QC_EXP_MAX_VALUES);
    qc_exp_key *k = &e->keys[e->n_keys++];
    k->rk = rk;
    k->node = calloc(n, sizeof *k->node);
    k->text = calloc(n, sizeof *k->text);
    k->json = calloc(n, sizeof *k->json);
    if (!k->node || !k->text || !k->json) return qc_fail(QC_ERR_NOMEM, "out of memory");
    k->n = (int)n;
    for (size_t i = 0; i < n; i++) {
        const qc_ynode *v = qc_ynode_item(vals, i), *src = v;
        char text[256], json[300];
        qc_recipe r;
        qc_recipe_init(&r);
        qc_status st;
        if (rk == QC_EXP_VARIANT) {
            const qc_ynode *label = NULL;
            if (qc_ynode_kind(v) != QC_YAML_MAP)
                return qc_recipe_free(&r), node_fail(e, v, "grid.variant: expected a mapping {label: NAME, <recipe keys>}");
            for (size_t j = 0; j < qc_ynode_count(v); j++)
                if (scalar_is(qc_ynode_item(v, j), "label")) label = qc_ynode_value(v, j);
            if (!label) return qc_recipe_free(&r), node_fail(e, v, "grid.variant: 'label' is required");
            char *l = NULL;
            st = apply_variant(e, &r, v, true);
            if (st == QC_OK) st = node_string(e, label, "label", &l);
            if (st == QC_OK && !name_ok(l, ".-"))
                st = node_fail(e, label, "grid.variant: label '%s' is not [A-Za-z0-9_.-]+", l);
            if (st == QC_OK) {
                snprintf(text, sizeof text, "%s", l);
                snprintf(json, sizeof json, "\"%s\"", l);
            }
            free(l);
        } else if (rk == QC_RK_CALIB) {
            const qc_ynode *label = NULL, *sources = NULL;
            bool labelled = false;
            if (qc_ynode_kind(v) == QC_YAML_MAP)
                for (size_t j = 0; j < qc_ynode_count(v); j++)
                    labelled |= scalar_is(qc_ynode_item(v, j), "label") || scalar_is(qc_ynode_item(v, j), "sources");
            if (labelled) {
                static const char *const lk[] = {"label", "sources", NULL};
                const qc_ynode *lv[2];
                if ((st = map_check(e, v, "grid.calib[]", lk, lv))) return qc_recipe_free(&r), st;
                label = lv[0];
                sources = lv[1];
                if (!sources) return qc_recipe_free(&r), node_fail(e, v, "grid.calib: 'sources' is required beside 'label'");
                src = sources;
            }
            st = qc_recipe_apply_yaml_key(&r, QC_RK_CALIB, src, e->path, e->base_dir);
            char *l = NULL;
            if (st == QC_OK && label) {
                st = node_string(e, label, "label", &l);
                if (st == QC_OK && !name_ok(l, "."))
                    st = node_fail(e, label, "grid.calib: label '%s' is not [A-Za-z0-9_.-]+", l);
            } else if (st == QC_OK && !(l = auto_label(&r))) {
                st = qc_fail(QC_ERR_NOMEM, "out of memory");
            }
            if (st == QC_OK) {
                snprintf(text, sizeof text, "%s", l);
                snprintf(json, sizeof json, "\"%s\"", l);
            }
            free(l);
        } else {
            st = qc_recipe_apply_yaml_key(&r, rk, v, e->path, e->base_dir);
            if (st == QC_OK) render(rk, &r, text, sizeof text, json, sizeof json);
        }
        qc_recipe_free(&r);
        if (st) return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp(k->text[j], text) == 0)
                return node_fail(e, v, "grid.%s: duplicate value %s (value %zu is the same%s)", name, text, j + 1,
                                 rk == QC_RK_CALIB ? "; give each calib value a distinct label" : "");
        k->node[i] = src;
        if (!(k->text[i] = qc_strdup(text)) || !(k->json[i] = qc_strdup(json))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    return QC_OK;
}

static qc_status expand(qc_experiment *e, const char *device) {
    size_t n = 1;
    for (int i = 0; i < e->n_keys; i++) {
        n *= (size_t)e->keys[i].n;
        if (n > QC_EXP_MAX_RUNS) return qc_fail(QC_ERR_FORMAT, "%s: the grid has more than %d runs", e->path, QC_EXP_MAX_RUNS);
    }
    e->runs = calloc(n, sizeof *e->runs);
    if (!e->runs) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int digit[QC_EXP_MAX_KEYS] = {0};
    for (size_t r = 0; r < n; r++) {
        qc_exp_spec *run = &e->runs[e->n_runs++];
        qc_recipe_init(&run->recipe);
        qc_status st = qc_recipe_apply_yaml(&run->recipe, e->base, e->path, e->base_dir);
        qc_sbuf cell = {0};
        for (int k = 0; st == QC_OK && k < e->n_keys; k++) {
            const qc_exp_key *key = &e->keys[k];
            run->value[k] = digit[k];
            st = key->rk == QC_EXP_VARIANT
                     ? apply_variant(e, &run->recipe, key->node[digit[k]], false)
                     : qc_recipe_apply_yaml_key(&run->recipe, key->rk, key->node[digit[k]], e->path, e->base_dir);
            if (key->rk != QC_RK_SEED)
                qc_sbuf_printf(&cell, "%s%s=%s", cell.n ? "," : "", key_name(key->rk), key->text[digit[k]]);
        }
        if (st == QC_OK && device) st = qc_recipe_set(&run->recipe, "device", device, "--device");
        if (st == QC_OK && !cell.n) qc_sbuf_printf(&cell, "base");
        if (st == QC_OK && cell.oom) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        if (st == QC_OK) {
            run->cell = cell.p;
            cell.p = NULL;
            run->seed = run->recipe.seed;
            qc_sbuf id = {0};
            qc_sbuf_printf(&id, "%s%sseed=%" PRIu64, strcmp(run->cell, "base") ? run->cell : "",
                      strcmp(run->cell, "base") ? "," : "", run->seed);
            run->id = id.p;
            run->dirname = qc_strdup(id.p ? id.p : "");
            if (!run->id || !run->dirname) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        }
        free(cell.p);
        if (st == QC_OK && (st = qc_recipe_validate(&run->recipe))) qc_error_prefix("%s: run %s", e->path, run->id);
        if (st) return st;
        for (char *p = run->dirname; *p; p++)
            if (!name_ok((char[]){*p, 0}, ".=,+")) *p = '_';
        if (strlen(run->dirname) > 200) return qc_fail(QC_ERR_FORMAT, "%s: run id %s is too long for a directory name", e->path, run->id);
        for (int j = 0; j + 1 < e->n_runs; j++)
            if (strcmp(e->runs[j].dirname, run->dirname) == 0)
                return qc_fail(QC_ERR_FORMAT, "%s: runs %s and %s share the directory name %s", e->path, e->runs[j].id,
                               run->id, run->dirname);
        qc_recipe_hash(&run->recipe, run->recipe_sha256);
        for (int k = e->n_keys - 1; k >= 0; k--) { /* the last key fastest */
            if (++digit[k] < e->keys[k].n) break;
            digit[k] = 0;
        }
    }
    return QC_OK;
}

static qc_status plan_hash(qc_experiment *e) {
    qc_sbuf b = {0};
    qc_sbuf_printf(&b, "qcal-experiment-1\nmodel %s\n", e->model);
    for (int i = 0; i < e->n_evals; i++) {
        const qc_exp_eval *v = &e->evals[i];
        qc_sbuf_printf(&b, "eval %s %s %d %d %d %s %s %s\n", v->name, v->text, v->seqlen, v->max_windows, v->holdout,
                  v->format ? v->format : "-", v->field ? v->field : "-", v->split ? v->split : "-");
    }
    for (int i = 0; i < e->n_runs; i++) qc_sbuf_printf(&b, "run %s %s\n", e->runs[i].id, e->runs[i].recipe_sha256);
    if (b.oom) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_sha256_buf(b.p, b.n, e->plan_sha256);
    free(b.p);
    return QC_OK;
}

qc_status qc_exp_load(const char *path, const char *device, qc_experiment **out) {
    *out = NULL;
    qc_experiment *e = calloc(1, sizeof *e);
    if (!e || !(e->path = qc_strdup(path))) {
        free(e);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    char *buf = NULL;
    size_t len;
    qc_status st = qc_read_file(path, EXP_MAX_BYTES, &buf, &len);
    if (st == QC_OK) {
        char *cwd = getcwd(NULL, 0), *dir = NULL;
        const char *slash = strrchr(path, '/');
        if (!slash) dir = qc_strdup(cwd ? cwd : ".");
        else if (path[0] == '/') dir = qc_strndup(path, slash == path ? 1 : (size_t)(slash - path));
        else {
            char *rel = qc_strndup(path, (size_t)(slash - path));
            dir = rel && cwd ? qc_path_join(cwd, rel) : NULL;
            free(rel);
        }
        free(cwd);
        e->base_dir = dir;
        if (!dir) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    if (st == QC_OK) st = qc_yaml_parse(buf, len, path, &e->tree);
    free(buf);
    const qc_ynode *v[3] = {NULL, NULL, NULL};
    if (st == QC_OK && (!e->tree || qc_ynode_kind(e->tree) != QC_YAML_MAP))
        st = qc_fail(QC_ERR_FORMAT, "%s:1:1: an experiment is a mapping with base, grid and eval", path);
    if (st == QC_OK) st = map_check(e, e->tree, "top-level", k_top, v);
    if (st == QC_OK && !v[0]) st = qc_fail(QC_ERR_FORMAT, "%s:1:1: 'base' (a recipe) is required", path);
    if (st == QC_OK && !v[2]) st = qc_fail(QC_ERR_FORMAT, "%s:1:1: 'eval' (a list of texts) is required", path);
    if (st == QC_OK) {
        e->base = v[0];
        if (qc_ynode_kind(e->base) != QC_YAML_MAP) st = node_fail(e, e->base, "base: expected a recipe (a mapping of recipe keys)");
        for (size_t i = 0; st == QC_OK && i < qc_ynode_count(e->base); i++) {
            const qc_ynode *k = qc_ynode_item(e->base, i);
            if (scalar_is(k, "out")) st = node_fail(e, k, "base.out: not allowed: runs are written under the experiment's --out DIR/runs");
            else if (scalar_is(k, "eval")) st = node_fail(e, k, "base.eval: not allowed: use the experiment's top-level eval list");
        }
    }
    if (st == QC_OK) { /* the base alone: its own errors first, located in the file */
        qc_recipe r;
        qc_recipe_init(&r);
        st = qc_recipe_apply_yaml(&r, e->base, path, e->base_dir);
        if (st == QC_OK && !r.model) st = node_fail(e, e->base, "base.model: required (the model every run quantizes)");
        if (st == QC_OK && !(e->model = qc_strdup(r.model))) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        if (st == QC_OK && !(e->device = qc_strdup(device ? device : r.device))) st = qc_fail(QC_ERR_NOMEM, "out of memory");
        qc_recipe_free(&r);
    }
    if (st == QC_OK && v[1] && !qc_ynode_null(v[1])) {
        if (qc_ynode_kind(v[1]) != QC_YAML_MAP) st = node_fail(e, v[1], "grid: expected a mapping of recipe keys to lists of values");
        const qc_ynode *seed_k = NULL, *seed_v = NULL;
        for (size_t i = 0; st == QC_OK && i < qc_ynode_count(v[1]); i++) {
            const qc_ynode *k = qc_ynode_item(v[1], i);
            if (qc_ynode_kind(k) != QC_YAML_SCALAR) st = node_fail(e, k, "grid: a key must be a recipe key name");
            else if (scalar_is(k, "seed") && !seed_k) seed_k = k, seed_v = qc_ynode_value(v[1], i);
            else st = parse_grid_key(e, k, qc_ynode_value(v[1], i));
        }
        if (st == QC_OK && seed_k) { /* repetitions: innermost, whatever the file's order */
            st = parse_grid_key(e, seed_k, seed_v);
            e->seed_in_grid = true;
        }
    }
    if (st == QC_OK) st = parse_eval(e, v[2]);
    if (st == QC_OK) st = expand(e, device);
    if (st == QC_OK) st = plan_hash(e);
    if (st) {
        qc_exp_free(e);
        return st;
    }
    *out = e;
    return QC_OK;
}

void qc_exp_free(qc_experiment *e) {
    if (!e) return;
    for (int i = 0; i < e->n_keys; i++) {
        for (int j = 0; j < e->keys[i].n; j++) {
            if (e->keys[i].text) free(e->keys[i].text[j]);
            if (e->keys[i].json) free(e->keys[i].json[j]);
        }
        free(e->keys[i].node);
        free(e->keys[i].text);
        free(e->keys[i].json);
    }
    for (int i = 0; i < e->n_evals; i++) {
        qc_exp_eval *v = &e->evals[i];
        free(v->name), free(v->text), free(v->format), free(v->field), free(v->split);
    }
    for (int i = 0; i < e->n_runs; i++) {
        qc_exp_spec *r = &e->runs[i];
        free(r->id), free(r->cell), free(r->dirname);
        qc_recipe_free(&r->recipe);
    }
    free(e->runs);
    qc_yaml_free(e->tree);
    free(e->path), free(e->base_dir), free(e->model), free(e->device);
    free(e);
}

void qc_exp_print_plan(const qc_experiment *e, FILE *out) {
    fprintf(out, "experiment %s: %d runs (%d grid keys), model %s, device %s, plan-sha256 %s\n", e->path, e->n_runs,
            e->n_keys, e->model, e->device, e->plan_sha256);
    for (int i = 0; i < e->n_evals; i++) {
        const qc_exp_eval *v = &e->evals[i];
        char w[32] = "all", h[64] = "";
        if (v->max_windows) snprintf(w, sizeof w, "at most %d", v->max_windows);
        if (v->holdout) snprintf(h, sizeof h, ", the held-out documents i %% %d == %d", v->holdout, v->holdout - 1);
        fprintf(out, "eval %s: %s (seqlen %d, %s windows%s)\n", v->name, v->text, v->seqlen, w, h);
    }
    for (int i = 0; i < e->n_runs; i++)
        fprintf(out, "[%*d/%d] %-60s recipe-sha256 %s\n", e->n_runs >= 100 ? 3 : e->n_runs >= 10 ? 2 : 1, i + 1,
                e->n_runs, e->runs[i].id, e->runs[i].recipe_sha256);
}

/* ---- running ---- */
/* A token group: the runs whose windows are the same (tokenizer, resolved sources, sampling, nsamples,
 * seqlen, seed); sampled once into DIR/tokens/<token-sha256>.bin and passed to each child quantize. */
typedef struct tok_group {
    char  origin[65];  /* hash of what is sampled: the token file's origin field */
    char *path;        /* the token file, once sampled or found */
    int   todo;        /* its runs not reused from an earlier invocation */
} tok_group;

typedef struct exp_ctx {
    qc_experiment     *e;
    const qc_exp_opts *o;
    char              *dir, *runs;      /* DIR and DIR/runs */
    char              *model_dir;
    qc_model          *base;
    qc_tokenizer      *tok;
    int32_t           *ids[QC_EXP_MAX_EVALS];
    size_t             n_ids[QC_EXP_MAX_EVALS];
    char              *model_ident;     /* qc_guard_model_identity, JSON text */
    char               eval_spec[65];   /* of every eval's settings and text bytes */
    cJSON            **rows;            /* [1 + n_runs]: the baseline, then the runs; NULL until known */
    bool              *reused;          /* [1 + n_runs] */
    char             **failed;          /* [n_runs]: why a run failed, NULL otherwise */
    char              *tokens;          /* DIR/tokens */
    tok_group         *groups;          /* [n_groups]: runs that sample the same windows */
    int               *group;           /* [n_runs]: each run's group */
    int                n_groups;
} exp_ctx;

static char *path2(const char *a, const char *b, const char *suffix) {
    size_t n = strlen(a) + strlen(b) + strlen(suffix) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s%s", a, b, suffix);
    return p;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* SHA-256 over dir's *.safetensors, in name order. */
static qc_status files_sha256(const char *dir, char out[65]) {
    DIR *d = opendir(dir);
    if (!d) return qc_fail(QC_ERR_IO, "%s: %s", dir, strerror(errno));
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096) {
        size_t l = strlen(de->d_name);
        if (l > 12 && strcmp(de->d_name + l - 12, ".safetensors") == 0 && !(names[n++] = qc_strdup(de->d_name))) n--;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    qc_sha256 h;
    qc_sha256_init(&h);
    qc_status st = n ? QC_OK : qc_fail(QC_ERR_FORMAT, "%s: no .safetensors files", dir);
    static uint8_t buf[1 << 20];
    for (int i = 0; i < n; i++) {
        char *p = qc_path_join(dir, names[i]);
        FILE *f = p ? fopen(p, "rb") : NULL;
        if (!f && st == QC_OK) st = qc_fail(QC_ERR_IO, "%s: %s", p ? p : names[i], strerror(errno));
        size_t k;
        while (f && (k = fread(buf, 1, sizeof buf, f)) > 0) qc_sha256_update(&h, buf, k);
        if (f && ferror(f) && st == QC_OK) st = qc_fail(QC_ERR_IO, "%s: read error", p);
        if (f) fclose(f);
        free(p);
        free(names[i]);
    }
    qc_sha256_hex(&h, out);
    return st;
}

static cJSON *json_file(const char *path) {
    char *buf;
    size_t len;
    if (qc_read_file(path, (size_t)64 << 20, &buf, &len) != QC_OK) {
        qc_error_clear();
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    return j;
}

static qc_status json_write(const char *path, const cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    if (!s) return qc_fail(QC_ERR_NOMEM, "out of memory");
    size_t n = strlen(s);
    s[n] = '\n'; /* replaces the NUL: written as n + 1 bytes */
    qc_status st = qc_write_file_atomic(path, s, n + 1);
    free(s);
    return st;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* The text an eval measures: the file, or its held-out documents joined with "\n\n". */
static qc_status eval_text(const qc_exp_eval *v, char **text, size_t *len) {
    if (!v->holdout) return qc_read_file(v->text, MAX_TEXT_BYTES, text, len);
    qc_docs_opts o = {.format = QC_DOCS_AUTO, .field = v->field, .split = v->split, .holdout = v->holdout, .heldout = true};
    if (v->format) qc_docs_format_parse(v->format, &o.format);
    qc_docs *r;
    qc_status st = qc_docs_open(v->text, &o, &r);
    if (st) return st;
    qc_sbuf b = {0};
    const char *d;
    size_t n;
    while ((st = qc_docs_next(r, &d, &n)) == QC_OK && d) {
        if (b.n) qc_sbuf_printf(&b, "\n\n");
        qc_sbuf_printf(&b, "%.*s", (int)n, d);
    }
    qc_docs_free(r);
    if (st == QC_OK && b.oom) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK && !b.n) st = qc_fail(QC_ERR_FORMAT, "%s: no held-out documents (holdout %d)", v->text, v->holdout);
    if (st) {
        free(b.p);
        return st;
    }
    *text = b.p;
    *len = b.n;
    return QC_OK;
}

/* Loads the FP16 model, its tokenizer and every eval text (tokenized once, shared by all runs). */
static qc_status ctx_open(exp_ctx *x) {
    qc_experiment *e = x->e;
    qc_status st = qc_run_resolve_model(e->model, &x->model_dir);
    if (st == QC_OK) st = qc_model_open(x->model_dir, &x->base);
    if (st == QC_OK) st = qc_tokenizer_load(x->model_dir, &x->tok);
    if (st) return st;
    cJSON *ident = qc_guard_model_identity(x->model_dir);
    if (!ident) return qc_last_error()[0] ? QC_ERR_IO : qc_fail(QC_ERR_NOMEM, "out of memory");
    x->model_ident = cJSON_PrintUnformatted(ident);
    cJSON_Delete(ident);
    qc_sha256 h;
    qc_sha256_init(&h);
    char *evals = path2(x->dir, "evals", "");
    for (int i = 0; st == QC_OK && i < e->n_evals; i++) {
        const qc_exp_eval *v = &e->evals[i];
        char *text = NULL, line[256], sha[65];
        size_t len = 0;
        if ((st = eval_text(v, &text, &len))) break;
        qc_sha256_buf(text, len, sha);
        snprintf(line, sizeof line, "%s %d %d %s\n", v->name, v->seqlen, v->max_windows, sha);
        qc_sha256_update(&h, line, strlen(line));
        if (v->holdout) { /* what `qcal eval --text` needs to measure the same */
            char *p = path2(evals, v->name, ".txt");
            if (mkdir(evals, 0755) != 0 && errno != EEXIST) st = qc_fail(QC_ERR_IO, "%s: %s", evals, strerror(errno));
            if (st == QC_OK) st = p ? qc_write_file_atomic(p, text, len) : qc_fail(QC_ERR_NOMEM, "out of memory");
            free(p);
        }
        if (st == QC_OK && (st = qc_tokenizer_encode(x->tok, text, len, true, &x->ids[i], &x->n_ids[i])))
            qc_error_prefix("eval %s (%s)", v->name, v->text);
        if (st == QC_OK && x->n_ids[i] < (size_t)v->seqlen)
            st = qc_fail(QC_ERR_ARG, "eval %s: %s holds %zu tokens, fewer than one window of %d", v->name, v->text,
                         x->n_ids[i], v->seqlen);
        free(text);
    }
    free(evals);
    qc_sha256_hex(&h, x->eval_spec);
    return st;
}

/* What a checkpoint was made from: the recipe hash, qcal, the model files, the calibration files. */
static void quantize_fp(const exp_ctx *x, const qc_exp_spec *r, char out[65]) {
    qc_sbuf b = {0};
    qc_sbuf_printf(&b, "qcal %s\nrecipe %s\nmodel %s\ndevice %s\n", QC_VERSION, r->recipe_sha256, x->model_ident, r->recipe.device);
    for (int i = 0; i < r->recipe.n_calib; i++) {
        struct stat sb;
        const char *p = r->recipe.calib[i].path;
        if (strncmp(p, "hf://", 5) != 0 && stat(p, &sb) == 0)
            qc_sbuf_printf(&b, "calib %s %lld %lld.%09ld\n", p, (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
        else
            qc_sbuf_printf(&b, "calib %s\n", p);
    }
    qc_sha256_buf(b.p ? b.p : "", b.n, out);
    free(b.p);
}

static void full_fp(const exp_ctx *x, const char *qfp, char out[65]) {
    char buf[200];
    snprintf(buf, sizeof buf, "%s\n%s\n", qfp, x->eval_spec);
    qc_sha256_buf(buf, strlen(buf), out);
}

/* Perplexity on every text; on the first, KL and top-1 agreement against the FP16 model. */
static qc_status evaluate(exp_ctx *x, const qc_model *m, bool baseline, cJSON *ppl, double *kl, double *top1) {
    *kl = 0;
    *top1 = 1;
    for (int i = 0; i < x->e->n_evals; i++) {
        const qc_exp_eval *v = &x->e->evals[i];
        qc_eval_opts eo = {.seqlen = v->seqlen, .max_windows = v->max_windows};
        qc_eval_cmp_result c;
        memset(&c, 0, sizeof c);
        qc_status st = i == 0 && !baseline ? qc_eval_compare(m, x->base, x->ids[i], x->n_ids[i], &eo, &c)
                                           : qc_eval_perplexity(m, x->ids[i], x->n_ids[i], &eo, &c.model);
        if (st) {
            qc_error_prefix("eval %s", v->name);
            return st;
        }
        if (i == 0 && !baseline) *kl = c.kl, *top1 = c.top1_agreement;
        cJSON_AddNumberToObject(ppl, v->name, c.model.ppl);
    }
    return QC_OK;
}

static cJSON *row_new(const char *run, bool baseline, cJSON *grid, const char *cell, const char *seed) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "run", run);
    cJSON_AddBoolToObject(r, "baseline", baseline);
    cJSON_AddItemToObject(r, "grid", grid);
    cJSON_AddStringToObject(r, "cell", cell);
    cJSON_AddItemToObject(r, "seed", seed ? cJSON_CreateRaw(seed) : cJSON_CreateNull());
    return r;
}

static void add_str_or_null(cJSON *o, const char *k, const char *s) {
    if (s) cJSON_AddStringToObject(o, k, s);
    else cJSON_AddNullToObject(o, k);
}

/* layers {n, quantized, rel_err_mean, rel_err_max, rel_err_by_type} and linears [{name, rel_err}]. */
static void add_layers(cJSON *row, const cJSON *report) {
    cJSON *layers = cJSON_AddObjectToObject(row, "layers"), *lins = cJSON_CreateArray();
    cJSON *by = cJSON_CreateObject(), *cnt = cJSON_CreateObject();
    int n = 0, q = 0;
    double sum = 0, mx = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(report, "linears")) {
        n++;
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "quantized"))) continue;
        const char *name = jstr(l, "name");
        double e = jnum(l, "rel_err", NAN);
        q++;
        sum += e;
        if (e > mx) mx = e;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name ? name : "");
        cJSON_AddNumberToObject(o, "rel_err", e);
        cJSON_AddItemToArray(lins, o);
        const char *type = name && strrchr(name, '.') ? strrchr(name, '.') + 1 : "?";
        cJSON *s = cJSON_GetObjectItemCaseSensitive(by, type);
        if (!s) {
            cJSON_AddNumberToObject(by, type, 0);
            cJSON_AddNumberToObject(cnt, type, 0);
            s = cJSON_GetObjectItemCaseSensitive(by, type);
        }
        cJSON *c = cJSON_GetObjectItemCaseSensitive(cnt, type);
        cJSON_SetNumberValue(s, s->valuedouble + e);
        cJSON_SetNumberValue(c, c->valuedouble + 1);
    }
    cJSON *s, *c = cnt->child;
    cJSON_ArrayForEach(s, by) {
        cJSON_SetNumberValue(s, s->valuedouble / c->valuedouble);
        c = c->next;
    }
    cJSON_Delete(cnt);
    cJSON_AddNumberToObject(layers, "n", n);
    cJSON_AddNumberToObject(layers, "quantized", q);
    if (q) {
        cJSON_AddNumberToObject(layers, "rel_err_mean", sum / q);
        cJSON_AddNumberToObject(layers, "rel_err_max", mx);
    } else {
        cJSON_AddNullToObject(layers, "rel_err_mean");
        cJSON_AddNullToObject(layers, "rel_err_max");
    }
    cJSON_AddItemToObject(layers, "rel_err_by_type", by);
    cJSON_AddItemToObject(row, "linears", lins);
}

static void row_finish(cJSON *row, double t_quant, double t_eval, const char *device, const char *ckpt) {
    cJSON *sec = cJSON_AddObjectToObject(row, "seconds");
    cJSON_AddNumberToObject(sec, "quantize", t_quant);
    cJSON_AddNumberToObject(sec, "eval", t_eval);
    cJSON_AddBoolToObject(row, "reused", false);
    cJSON_AddStringToObject(row, "qcal_version", QC_VERSION);
    cJSON_AddStringToObject(row, "device", device);
    cJSON_AddStringToObject(row, "checkpoint", ckpt);
}

static qc_status baseline(exp_ctx *x) {
    char fp[65], buf[256], ckpt_sha[65];
    snprintf(buf, sizeof buf, "baseline %s\n", QC_VERSION);
    qc_sbuf b = {0};
    qc_sbuf_printf(&b, "%s%s\n%s\n", buf, x->model_ident, x->eval_spec);
    qc_sha256_buf(b.p ? b.p : "", b.n, fp);
    free(b.p);
    char *path = path2(x->runs, "fp16", ".result.json");
    if (!path) return qc_fail(QC_ERR_NOMEM, "out of memory");
    cJSON *old = json_file(path);
    const char *ofp = jstr(old, "fingerprint");
    cJSON *row = cJSON_DetachItemFromObjectCaseSensitive(old, "row");
    qc_status st = QC_OK;
    if (ofp && strcmp(ofp, fp) == 0 && cJSON_IsObject(row)) {
        x->rows[0] = row;
        x->reused[0] = true;
        fprintf(stderr, "[fp16] the FP16 model: reused (evaluated earlier)\n");
    } else {
        cJSON_Delete(row);
        double t0 = qc_time_now(), kl, top1;
        row = row_new("fp16", true, cJSON_CreateObject(), "fp16", NULL);
        add_str_or_null(row, "recipe_sha256", NULL);
        add_str_or_null(row, "tokens_sha256", NULL);
        st = files_sha256(x->model_dir, ckpt_sha);
        cJSON_AddStringToObject(row, "checkpoint_sha256", ckpt_sha);
        cJSON *ppl = cJSON_AddObjectToObject(row, "ppl");
        if (st == QC_OK) st = evaluate(x, x->base, true, ppl, &kl, &top1);
        cJSON_AddNumberToObject(row, "kl", 0);
        cJSON_AddNumberToObject(row, "top1", 1);
        cJSON *layers = cJSON_AddObjectToObject(row, "layers");
        cJSON_AddNumberToObject(layers, "n", 0);
        cJSON_AddNumberToObject(layers, "quantized", 0);
        cJSON_AddNullToObject(layers, "rel_err_mean");
        cJSON_AddNullToObject(layers, "rel_err_max");
        cJSON_AddObjectToObject(layers, "rel_err_by_type");
        cJSON_AddArrayToObject(row, "linears");
        char dev[600], desc[512];
        qc_par_describe(desc, sizeof desc);
        snprintf(dev, sizeof dev, "cpu (evaluation); %s", desc);
        row_finish(row, 0, qc_time_now() - t0, dev, x->e->model);
        if (st == QC_OK) {
            cJSON *res = cJSON_CreateObject();
            cJSON_AddStringToObject(res, "fingerprint", fp);
            cJSON_AddItemReferenceToObject(res, "row", row);
            st = json_write(path, res);
            cJSON_Delete(res);
            x->rows[0] = row;
            const cJSON *p0 = cJSON_GetArrayItem(ppl, 0);
            fprintf(stderr, "[fp16] the FP16 model: eval %.1f s, ppl_%s %.4f\n", qc_time_now() - t0, x->e->evals[0].name,
                    p0 ? p0->valuedouble : NAN);
        } else {
            cJSON_Delete(row);
        }
    }
    cJSON_Delete(old);
    free(path);
    return st;
}

/* Runs `qcal quantize` on the run's recipe in a child of its own process group (a terminal's ^C
 * reaches only us; we forward one stop request, so the child saves its state and exits cleanly); the
 * child dies with us (PR_SET_PDEATHSIG). Returns the wait status in *status. */
static qc_status spawn(char *const *argv, const char *log, int *status) {
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) return qc_fail(QC_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv("/proc/self/exe", argv);
        fprintf(stderr, "qcal experiment: cannot run /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    bool forwarded = false;
    for (;;) {
        int sig = qc_cancel_requested();
        if (sig && !forwarded) {
            kill(pid, sig);
            forwarded = true;
        }
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) return QC_OK;
        if (w < 0 && errno != EINTR) return qc_fail(QC_ERR_IO, "waitpid: %s", strerror(errno));
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void log_tail(const char *log) {
    char *buf;
    size_t len;
    if (qc_read_file(log, (size_t)64 << 20, &buf, &len) != QC_OK) {
        qc_error_clear();
        return;
    }
    size_t from = len, lines = 0;
    while (from > 0 && lines < 6) lines += buf[--from] == '\n';
    fprintf(stderr, "    %s:\n%.*s", log, (int)(len - from), buf + from);
    free(buf);
}

/* The token group key: what decides the windows (the tokenizer through the model's files; local sources
 * by size and mtime, so an edited calibration file is sampled again). */
static void tokens_key(const exp_ctx *x, const qc_recipe *r, char out[65]) {
    qc_sbuf b = {0};
    qc_sbuf_printf(&b, "qcal-tokens-v1\nmodel %s\nsampling %s\nnsamples %d\nseqlen %d\nseed %" PRIu64 "\n", x->model_ident,
              r->sampling, r->nsamples, r->seqlen, r->seed);
    for (int i = 0; i < r->n_calib; i++) {
        const qc_calib_source *c = &r->calib[i];
        struct stat sb;
        qc_sbuf_printf(&b, "calib %s", c->path);
        if (strncmp(c->path, "hf://", 5) != 0 && stat(c->path, &sb) == 0)
            qc_sbuf_printf(&b, " %lld %lld.%09ld", (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
        qc_sbuf_printf(&b, " format %s field %s split %s holdout %d weight %.17g\n", c->format ? c->format : "-",
                  c->field ? c->field : "-", c->split ? c->split : "-", c->holdout, c->weight);
    }
    qc_sha256_buf(b.p ? b.p : "", b.n, out);
    free(b.p);
}

/* A valid token file in DIR/tokens made for origin (named by its own hash), or NULL. */
static char *tokens_find(const exp_ctx *x, const char *origin) {
    DIR *d = opendir(x->tokens);
    if (!d) return NULL;
    char *found = NULL;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l != 68 || strcmp(de->d_name + 64, ".bin") != 0) continue;
        char *p = path2(x->tokens, de->d_name, "");
        qc_token_file_info info;
        char sha[65];
        qc_calib_set set;
        if (p && qc_token_file_peek(p, &info, sha) == QC_OK && strcmp(info.origin, origin) == 0 &&
            strncmp(de->d_name, sha, 64) == 0 && qc_token_file_read(p, &set, NULL) == QC_OK) {
            qc_calib_set_free(&set);
            found = p;
            p = NULL;
        }
        qc_error_clear(); /* a file that is not ours, or corrupt: sampled again */
        free(p);
    }
    closedir(d);
    return found;
}

/* The token file of run i's group: found (an earlier invocation sampled it) or sampled now, lazily,
 * right before the group's first run that quantizes. */
static qc_status tokens_ensure(exp_ctx *x, int i, const char **path) {
    tok_group *g = &x->groups[x->group[i]];
    if (g->path) {
        *path = g->path;
        return QC_OK;
    }
    if ((g->path = tokens_find(x, g->origin))) {
        const char *base = strrchr(g->path, '/') + 1;
        fprintf(stderr, "tokens %.12s: reused for %d run%s\n", base, g->todo, g->todo == 1 ? "" : "s");
        *path = g->path;
        return QC_OK;
    }
    const qc_recipe *r = &x->e->runs[i].recipe;
    qc_calib_set set;
    memset(&set, 0, sizeof set);
    double t0 = qc_time_now();
    qc_status st = qc_run_calib(r, x->tok, true, &set);
    if (st == QC_OK && mkdir(x->tokens, 0755) != 0 && errno != EEXIST)
        st = qc_fail(QC_ERR_IO, "%s: %s", x->tokens, strerror(errno));
    char *p = st == QC_OK ? path2(x->tokens, set.sha256, ".bin") : NULL;
    if (st == QC_OK && !p) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) {
        qc_token_file_info info = {.sampling = strcmp(r->sampling, "awq") == 0 ? QC_SAMPLING_AWQ : QC_SAMPLING_GPTQ,
                                   .nsamples = r->nsamples, .seed = r->seed};
        memcpy(info.origin, g->origin, sizeof info.origin);
        st = qc_token_file_write(p, &set, &info); /* p.tmp, fsync, rename */
    }
    if (st == QC_OK) {
        fprintf(stderr, "tokens %.12s: sampled for %d run%s (%d x %d tokens, %.1f s)\n", set.sha256, g->todo,
                g->todo == 1 ? "" : "s", set.nsamples, set.seqlen, qc_time_now() - t0);
        g->path = p;
        *path = p;
    } else {
        qc_error_prefix("run %s: sampling the calibration windows", x->e->runs[i].id);
        free(p);
    }
    qc_calib_set_free(&set);
    return st;
}

/* Groups the runs by tokens_key; todo counts the runs of each group this invocation may quantize. */
static qc_status tokens_plan(exp_ctx *x) {
    qc_experiment *e = x->e;
    x->tokens = path2(x->dir, "tokens", "");
    x->group = calloc((size_t)e->n_runs + 1, sizeof *x->group);
    x->groups = calloc((size_t)e->n_runs + 1, sizeof *x->groups);
    if (!x->tokens || !x->group || !x->groups) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < e->n_runs; i++) {
        char key[65];
        tokens_key(x, &e->runs[i].recipe, key);
        int g = 0;
        while (g < x->n_groups && strcmp(x->groups[g].origin, key) != 0) g++;
        if (g == x->n_groups) {
            memcpy(x->groups[g].origin, key, sizeof key);
            x->n_groups++;
        }
        x->group[i] = g;
        x->groups[g].todo += !x->reused[1 + i];
    }
    return QC_OK;
}

typedef enum { RUN_DONE, RUN_FAILED, RUN_STOP } run_outcome;

/* Quantizes (unless a matching checkpoint exists) and evaluates run i. */
static qc_status do_run(exp_ctx *x, int i, const char *qfp, const char *fp, double *t_q, double *t_e, run_outcome *oc) {
    qc_experiment *e = x->e;
    qc_exp_spec *r = &e->runs[i];
    *oc = RUN_FAILED;
    *t_q = *t_e = 0;
    char *ckpt = path2(x->runs, r->dirname, ""), *qpath = path2(x->runs, r->dirname, ".quantized.json");
    char *rpath = path2(x->runs, r->dirname, ".recipe.yaml"), *log = path2(x->runs, r->dirname, ".log");
    char *res = path2(x->runs, r->dirname, ".result.json"), *rep_path = NULL;
    cJSON *q = NULL, *report = NULL, *row = NULL;
    qc_model *m = NULL;
    qc_status st = ckpt && qpath && rpath && log && res ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st) goto out;
    q = json_file(qpath);
    bool have = qc_dir_exists(ckpt) && jstr(q, "quantize_fingerprint") && strcmp(jstr(q, "quantize_fingerprint"), qfp) == 0;
    if (!have) {
        unlink(qpath);
        if ((st = qc_recipe_set(&r->recipe, "out", ckpt, "experiment"))) goto out;
        char *yaml = qc_recipe_to_yaml(&r->recipe);
        qc_sbuf y = {0};
        qc_sbuf_printf(&y, "# qcal experiment %s: run %s (resolved; quantized by the experiment runner)\n%s", e->path, r->id,
                  yaml ? yaml : "");
        free(yaml);
        st = y.oom || !y.p ? qc_fail(QC_ERR_NOMEM, "out of memory") : qc_write_file_atomic(rpath, y.p, y.n);
        free(y.p);
        if (st) goto out;
        const char *tokens;
        if ((st = tokens_ensure(x, i, &tokens))) goto out;
        char threads[32];
        char *argv[12];
        int a = 0;
        argv[a++] = "qcal";
        argv[a++] = "quantize";
        argv[a++] = rpath;
        argv[a++] = "--quiet";
        argv[a++] = "--calib-tokens";
        argv[a++] = (char *)tokens;
        if (qc_dir_exists(ckpt)) argv[a++] = "--overwrite"; /* a checkpoint of an earlier, other recipe */
        if (x->o->restart) argv[a++] = "--restart";
        if (x->o->threads > 0) {
            snprintf(threads, sizeof threads, "%d", x->o->threads);
            argv[a++] = "--threads";
            argv[a++] = threads;
        }
        argv[a] = NULL;
        double t0 = qc_time_now();
        int ws = 0;
        if ((st = spawn(argv, log, &ws))) goto out;
        *t_q = qc_time_now() - t0;
        int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        if (code != 0) {
            if (qc_cancel_requested()) {
                st = qc_fail(QC_ERR_CANCELLED, "interrupted during run %s", r->id);
                *oc = RUN_STOP;
            } else if (code >= 128) { /* killed: the machine is in trouble (OOM killer?) or someone stopped it */
                st = qc_fail(QC_ERR_IO, "run %s: quantize was stopped by signal %d (%s); its saved state is kept in "
                             "%s.qcal-work: run the same command again to resume it", r->id, code - 128,
                             strsignal(code - 128), ckpt);
                *oc = RUN_STOP;
            } else {
                st = qc_fail(QC_ERR_IO, "run %s: quantize exited with status %d (see %s)", r->id, code, log);
            }
            if (*oc != RUN_STOP) log_tail(log);
            goto out;
        }
        cJSON_Delete(q);
        q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "quantize_fingerprint", qfp);
        cJSON_AddStringToObject(q, "recipe_sha256", r->recipe_sha256);
        if ((st = json_write(qpath, q))) goto out;
    }
    rep_path = path2(ckpt, "qcal_report.json", "");
    report = rep_path ? json_file(rep_path) : NULL;
    if (!report || !jstr(report, "recipe_sha256") || strcmp(jstr(report, "recipe_sha256"), r->recipe_sha256) != 0) {
        st = qc_fail(QC_ERR_FORMAT, "run %s: %s does not hold this run's recipe hash %s", r->id,
                     rep_path ? rep_path : "qcal_report.json", r->recipe_sha256);
        goto out;
    }
    double t0 = qc_time_now(), kl, top1;
    cJSON *grid = cJSON_CreateObject();
    for (int k = 0; k < e->n_keys; k++) {
        const qc_exp_key *key = &e->keys[k];
        cJSON *v = key->rk == QC_RK_SEED ? cJSON_CreateRaw(key->json[r->value[k]]) : cJSON_Parse(key->json[r->value[k]]);
        cJSON_AddItemToObject(grid, key_name(key->rk), v);
    }
    char seed[32], ckpt_sha[65], rel[300], dev[1024];
    snprintf(seed, sizeof seed, "%" PRIu64, r->seed);
    row = row_new(r->id, false, grid, r->cell, seed);
    cJSON_AddStringToObject(row, "recipe_sha256", r->recipe_sha256);
    add_str_or_null(row, "tokens_sha256", jstr(report, "tokens_sha256"));
    if ((st = files_sha256(ckpt, ckpt_sha))) goto out;
    cJSON_AddStringToObject(row, "checkpoint_sha256", ckpt_sha);
    cJSON *ppl = cJSON_AddObjectToObject(row, "ppl");
    if ((st = qc_model_open(ckpt, &m))) goto out;
    if ((st = evaluate(x, m, false, ppl, &kl, &top1))) goto out;
    cJSON_AddNumberToObject(row, "kl", kl);
    cJSON_AddNumberToObject(row, "top1", top1);
    add_layers(row, report);
    *t_e = qc_time_now() - t0;
    snprintf(rel, sizeof rel, "runs/%s", r->dirname);
    snprintf(dev, sizeof dev, "%s; %s", jstr(report, "device") ? jstr(report, "device") : r->recipe.device,
             jstr(report, "platform") ? jstr(report, "platform") : "");
    const cJSON *old_q = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(report, "seconds"), "total");
    row_finish(row, *t_q > 0 ? *t_q : cJSON_IsNumber(old_q) ? old_q->valuedouble : 0, *t_e, dev, rel);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "fingerprint", fp);
    cJSON_AddStringToObject(out, "quantize_fingerprint", qfp);
    cJSON_AddItemReferenceToObject(out, "row", row);
    st = json_write(res, out);
    cJSON_Delete(out);
    if (st == QC_OK) {
        x->rows[1 + i] = row;
        row = NULL;
        *oc = RUN_DONE;
    }
out:
    if (st && *oc == RUN_FAILED && qc_cancel_requested()) *oc = RUN_STOP;
    qc_model_free(m);
    cJSON_Delete(row);
    cJSON_Delete(report);
    cJSON_Delete(q);
    free(ckpt), free(qpath), free(rpath), free(log), free(res), free(rep_path);
    return st;
}

/* ---- tables ---- */
static void csv_field(qc_sbuf *b, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        qc_sbuf_printf(b, "%s", s);
        return;
    }
    qc_sbuf_printf(b, "\"");
    for (const char *p = s; *p; p++) qc_sbuf_printf(b, *p == '"' ? "\"\"" : "%c", *p);
    qc_sbuf_printf(b, "\"");
}

static void csv_num(qc_sbuf *b, const cJSON *v, const char *fmt) {
    qc_sbuf_printf(b, ",");
    if (cJSON_IsNumber(v)) qc_sbuf_printf(b, fmt, v->valuedouble);
}

static void csv_str(qc_sbuf *b, const char *s) {
    qc_sbuf_printf(b, ",");
    if (s) csv_field(b, s);
}

static qc_status write_results(exp_ctx *x) {
    qc_experiment *e = x->e;
    qc_sbuf csv = {0}, jl = {0};
    qc_sbuf_printf(&csv, "run,cell,seed");
    for (int k = 0; k < e->n_keys; k++)
        if (e->keys[k].rk != QC_RK_SEED) qc_sbuf_printf(&csv, ",%s", key_name(e->keys[k].rk));
    for (int i = 0; i < e->n_evals; i++) qc_sbuf_printf(&csv, ",ppl_%s", e->evals[i].name);
    qc_sbuf_printf(&csv, ",kl,top1,rel_err_mean,rel_err_max,recipe_sha256,tokens_sha256,checkpoint_sha256,qcal_version,"
                    "device,seconds_quantize,seconds_eval,reused\n");
    for (int i = 0; i <= e->n_runs; i++) {
        cJSON *row = x->rows[i];
        if (!row) continue;
        cJSON_ReplaceItemInObjectCaseSensitive(row, "reused", cJSON_CreateBool(x->reused[i]));
        char *s = cJSON_PrintUnformatted(row);
        if (!s) {
            free(csv.p), free(jl.p);
            return qc_fail(QC_ERR_NOMEM, "out of memory");
        }
        qc_sbuf_printf(&jl, "%s\n", s);
        free(s);
        const qc_exp_spec *r = i ? &e->runs[i - 1] : NULL;
        csv_field(&csv, jstr(row, "run"));
        csv_str(&csv, jstr(row, "cell"));
        qc_sbuf_printf(&csv, ",");
        if (r) qc_sbuf_printf(&csv, "%" PRIu64, r->seed);
        for (int k = 0; k < e->n_keys; k++)
            if (e->keys[k].rk != QC_RK_SEED) csv_str(&csv, r ? e->keys[k].text[r->value[k]] : NULL);
        const cJSON *ppl = cJSON_GetObjectItemCaseSensitive(row, "ppl");
        for (int k = 0; k < e->n_evals; k++) csv_num(&csv, cJSON_GetObjectItemCaseSensitive(ppl, e->evals[k].name), "%.6f");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(row, "kl"), "%.8f");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(row, "top1"), "%.6f");
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(row, "layers");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(layers, "rel_err_mean"), "%.6e");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(layers, "rel_err_max"), "%.6e");
        csv_str(&csv, jstr(row, "recipe_sha256"));
        csv_str(&csv, jstr(row, "tokens_sha256"));
        csv_str(&csv, jstr(row, "checkpoint_sha256"));
        csv_str(&csv, jstr(row, "qcal_version"));
        csv_str(&csv, jstr(row, "device"));
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(row, "seconds");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(sec, "quantize"), "%.3f");
        csv_num(&csv, cJSON_GetObjectItemCaseSensitive(sec, "eval"), "%.3f");
        qc_sbuf_printf(&csv, ",%s\n", x->reused[i] ? "true" : "false");
    }
    qc_status st = csv.oom || jl.oom ? qc_fail(QC_ERR_NOMEM, "out of memory") : QC_OK;
    char *pc = path2(x->dir, "results.csv", ""), *pj = path2(x->dir, "results.jsonl", "");
    if (st == QC_OK) st = pc && pj ? qc_write_file_atomic(pc, csv.p, csv.n) : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) st = qc_write_file_atomic(pj, jl.p ? jl.p : "", jl.n);
    free(pc), free(pj), free(csv.p), free(jl.p);
    return st;
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

/* cells x metrics, mean ± sd over the seeds of each cell (runs of a cell are consecutive) */
static void summary(const exp_ctx *x, FILE *f) {
    const qc_experiment *e = x->e;
    int cw = 4;
    for (int i = 0; i < e->n_runs; i++) if ((int)strlen(e->runs[i].cell) > cw) cw = (int)strlen(e->runs[i].cell);
    fprintf(f, "\n%-*s %5s", cw, "cell", "seeds");
    for (int k = 0; k < e->n_evals; k++) {
        char h[80];
        snprintf(h, sizeof h, "ppl_%s", e->evals[k].name);
        fprintf(f, "  %-22s", h);
    }
    fprintf(f, "  %-24s  %-20s\n", "kl", "top1");
    double *v = calloc((size_t)e->n_runs + 1, sizeof *v);
    if (!v) return;
    for (int i = -1; i < e->n_runs;) { /* -1: the baseline; else runs [i, j) share a cell */
        int j = i < 0 ? 0 : i + 1;
        const char *cell = i < 0 ? "fp16" : e->runs[i].cell;
        if (i >= 0) while (j < e->n_runs && strcmp(e->runs[j].cell, cell) == 0) j++;
        int lo = i < 0 ? 0 : 1 + i, hi = i < 0 ? 1 : 1 + j; /* row indices */
        int n = 0;
        for (int r = lo; r < hi; r++) n += x->rows[r] != NULL;
        fprintf(f, "%-*s %5d", cw, cell, n);
        for (int m = 0; m < e->n_evals + 2; m++) {
            int c = 0;
            for (int r = lo; r < hi; r++) {
                if (!x->rows[r]) continue;
                const cJSON *val = m < e->n_evals ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(x->rows[r], "ppl"), e->evals[m].name)
                                                  : cJSON_GetObjectItemCaseSensitive(x->rows[r], m == e->n_evals ? "kl" : "top1");
                if (cJSON_IsNumber(val)) v[c++] = val->valuedouble;
            }
            double mean, sd;
            mean_sd(v, c, &mean, &sd);
            char cellbuf[64];
            if (!c) snprintf(cellbuf, sizeof cellbuf, "-");
            else if (m == e->n_evals) snprintf(cellbuf, sizeof cellbuf, "%.6f ± %.6f", mean, sd);
            else snprintf(cellbuf, sizeof cellbuf, "%.4f ± %.4f", mean, sd);
            fprintf(f, "  %-*s", m == e->n_evals ? 25 : m > e->n_evals ? 20 : 23, cellbuf); /* ± is 2 bytes */
        }
        fprintf(f, "\n");
        i = j;
    }
    free(v);
}

/* DIR: created, or an experiment directory (our experiment.json), or refused. */
static qc_status dir_prepare(exp_ctx *x) {
    const qc_experiment *e = x->e;
    char *plan = path2(x->dir, "experiment.json", "");
    if (!plan) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    if (qc_dir_exists(x->dir)) {
        cJSON *old = json_file(plan);
        if (!old) {
            DIR *d = opendir(x->dir);
            struct dirent *de;
            int n = 0;
            while (d && (de = readdir(d)))
                n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
            if (d) closedir(d);
            if (n) st = qc_fail(QC_ERR_ARG, "%s is not empty and not an experiment directory (no experiment.json); "
                                "give a new or empty --out", x->dir);
        } else if (!jstr(old, "plan_sha256") || strcmp(jstr(old, "plan_sha256"), e->plan_sha256) != 0) {
            if (!x->o->restart)
                st = qc_fail(QC_ERR_ARG, "%s holds another experiment (from %s, plan-sha256 %s; this one is %s); use another "
                             "--out, or --restart to continue there with this plan (finished runs that still match are "
                             "reused)", x->dir, jstr(old, "experiment") ? jstr(old, "experiment") : "?",
                             jstr(old, "plan_sha256") ? jstr(old, "plan_sha256") : "?", e->plan_sha256);
        }
        cJSON_Delete(old);
    } else if (mkdir(x->dir, 0755) != 0) {
        st = qc_fail(QC_ERR_IO, "cannot create %s: %s", x->dir, strerror(errno));
    }
    if (st == QC_OK && mkdir(x->runs, 0755) != 0 && errno != EEXIST)
        st = qc_fail(QC_ERR_IO, "cannot create %s: %s", x->runs, strerror(errno));
    if (st == QC_OK) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "experiment", e->path);
        cJSON_AddStringToObject(j, "plan_sha256", e->plan_sha256);
        cJSON_AddStringToObject(j, "qcal_version", QC_VERSION);
        cJSON_AddStringToObject(j, "model", e->model);
        cJSON_AddStringToObject(j, "device", e->device);
        cJSON *keys = cJSON_AddArrayToObject(j, "grid_keys");
        for (int k = 0; k < e->n_keys; k++) cJSON_AddItemToArray(keys, cJSON_CreateString(key_name(e->keys[k].rk)));
        cJSON *ev = cJSON_AddArrayToObject(j, "eval");
        for (int i = 0; i < e->n_evals; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", e->evals[i].name);
            cJSON_AddStringToObject(o, "text", e->evals[i].text);
            cJSON_AddNumberToObject(o, "seqlen", e->evals[i].seqlen);
            cJSON_AddNumberToObject(o, "max_windows", e->evals[i].max_windows);
            cJSON_AddNumberToObject(o, "holdout", e->evals[i].holdout);
            cJSON_AddItemToArray(ev, o);
        }
        cJSON *runs = cJSON_AddArrayToObject(j, "runs");
        for (int i = 0; i < e->n_runs; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "run", e->runs[i].id);
            cJSON_AddStringToObject(o, "cell", e->runs[i].cell);
            cJSON_AddStringToObject(o, "dir", e->runs[i].dirname);
            cJSON_AddStringToObject(o, "recipe_sha256", e->runs[i].recipe_sha256);
            cJSON_AddItemToArray(runs, o);
        }
        char *s = cJSON_Print(j);
        st = s ? qc_write_file_atomic(plan, s, strlen(s)) : qc_fail(QC_ERR_NOMEM, "out of memory");
        free(s);
        cJSON_Delete(j);
    }
    free(plan);
    return st;
}

static void fmt_eta(double secs, char *buf, size_t n) {
    time_t end = time(NULL) + (time_t)secs;
    struct tm tm;
    localtime_r(&end, &tm);
    char hm[16];
    strftime(hm, sizeof hm, "%H:%M", &tm);
    if (secs < 90) snprintf(buf, n, "ETA %s (%.0f s)", hm, secs);
    else if (secs < 5400) snprintf(buf, n, "ETA %s (%.0f min)", hm, secs / 60);
    else snprintf(buf, n, "ETA %s (%.1f h)", hm, secs / 3600);
}

qc_status qc_exp_run(qc_experiment *e, const qc_exp_opts *o) {
    exp_ctx x = {.e = e, .o = o};
    qc_guard_lock lock = {.fd = -1};
    if (o->threads > 0) qc_par_set_threads(o->threads);
    x.dir = qc_guard_abspath(o->dir);
    if (!x.dir) return QC_ERR_IO;
    x.runs = path2(x.dir, "runs", "");
    x.rows = calloc((size_t)e->n_runs + 1, sizeof *x.rows);
    x.reused = calloc((size_t)e->n_runs + 1, sizeof *x.reused);
    x.failed = calloc((size_t)e->n_runs + 1, sizeof *x.failed);
    qc_status st = x.runs && x.rows && x.reused && x.failed ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) st = qc_guard_lock_take(x.dir, &lock);
    if (st == QC_OK) st = dir_prepare(&x);
    if (st == QC_OK) st = ctx_open(&x);
    if (st == QC_OK) {
        fprintf(stderr, "qcal experiment: %d runs of %s (%d cells x %d seeds), %d eval texts -> %s\n", e->n_runs,
                e->model, e->seed_in_grid ? e->n_runs / e->keys[e->n_keys - 1].n : e->n_runs,
                e->seed_in_grid ? e->keys[e->n_keys - 1].n : 1, e->n_evals, x.dir);
        st = baseline(&x);
    }
    if (st == QC_OK) st = write_results(&x);
    /* which runs are already finished, for the ETA */
    char (*qfp)[65] = calloc((size_t)e->n_runs + 1, sizeof *qfp), (*fp)[65] = calloc((size_t)e->n_runs + 1, sizeof *fp);
    int todo = 0, done_exec = 0, n_failed = 0;
    double t_exec = 0;
    if (!qfp || !fp) st = st ? st : qc_fail(QC_ERR_NOMEM, "out of memory");
    for (int i = 0; st == QC_OK && i < e->n_runs; i++) {
        quantize_fp(&x, &e->runs[i], qfp[i]);
        full_fp(&x, qfp[i], fp[i]);
        char *res = path2(x.runs, e->runs[i].dirname, ".result.json");
        cJSON *old = res ? json_file(res) : NULL;
        const char *ofp = jstr(old, "fingerprint");
        cJSON *row = cJSON_DetachItemFromObjectCaseSensitive(old, "row");
        if (ofp && strcmp(ofp, fp[i]) == 0 && cJSON_IsObject(row)) {
            x.rows[1 + i] = row;
            x.reused[1 + i] = true;
        } else {
            cJSON_Delete(row);
            todo++;
        }
        cJSON_Delete(old);
        free(res);
    }
    if (st == QC_OK) st = tokens_plan(&x);
    int w = e->n_runs >= 100 ? 3 : e->n_runs >= 10 ? 2 : 1;
    for (int i = 0; st == QC_OK && i < e->n_runs; i++) {
        const qc_exp_spec *r = &e->runs[i];
        if (x.reused[1 + i]) {
            fprintf(stderr, "[%*d/%d] %s  reused (finished earlier)\n", w, i + 1, e->n_runs, r->id);
            continue;
        }
        if (qc_cancel_requested()) {
            st = qc_fail(QC_ERR_CANCELLED, "interrupted before run %s", r->id);
            break;
        }
        qc_test_point("experiment:run");
        double tq, te, t0 = qc_time_now();
        run_outcome oc;
        qc_status rs = do_run(&x, i, qfp[i], fp[i], &tq, &te, &oc);
        done_exec++;
        t_exec += qc_time_now() - t0;
        char eta[64] = "";
        if (todo - done_exec > 0) fmt_eta(t_exec / done_exec * (todo - done_exec), eta, sizeof eta);
        else snprintf(eta, sizeof eta, "done");
        if (oc == RUN_DONE) {
            const cJSON *p0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(x.rows[1 + i], "ppl"), 0);
            fprintf(stderr, "[%*d/%d] %s  %s %.1f s, eval %.1f s, ppl_%s %.4f | %s\n", w, i + 1, e->n_runs, r->id,
                    tq > 0 ? "quantize" : "checkpoint reused, quantize", tq, te, e->evals[0].name,
                    p0 ? p0->valuedouble : NAN, eta);
            st = write_results(&x);
        } else if (oc == RUN_STOP) {
            st = rs;
        } else {
            fprintf(stderr, "[%*d/%d] %s  FAILED: %s | %s\n", w, i + 1, e->n_runs, r->id, qc_last_error(), eta);
            x.failed[i] = qc_strdup(qc_last_error());
            n_failed++;
            qc_error_clear();
        }
    }
    if (st == QC_OK || st == QC_ERR_CANCELLED) {
        qc_status ws = x.rows && x.rows[0] ? write_results(&x) : QC_OK;
        if (st == QC_OK) st = ws;
        if (st == QC_OK) summary(&x, stdout);
        char *pc = path2(x.dir, "results.csv", "");
        fprintf(stderr, "%s: %s\n", st == QC_OK ? "wrote" : "partial results in", pc ? pc : x.dir);
        free(pc);
    }
    if (st == QC_OK && n_failed) {
        for (int i = 0; i < e->n_runs; i++)
            if (x.failed[i]) fprintf(stderr, "failed: %s: %s\n", e->runs[i].id, x.failed[i]);
        st = qc_fail(QC_ERR_IO, "%d of %d runs failed (above); run the same command again to retry them", n_failed, e->n_runs);
    }
    for (int i = 0; i <= e->n_runs && x.rows; i++) cJSON_Delete(x.rows[i]);
    for (int i = 0; i < e->n_evals; i++) free(x.ids[i]);
    for (int i = 0; i <= e->n_runs && x.failed; i++) free(x.failed[i]);
    for (int g = 0; g < x.n_groups; g++) free(x.groups[g].path);
    free(x.groups), free(x.group), free(x.tokens);
    free(qfp), free(fp), free(x.rows), free(x.reused), free(x.failed);
    qc_tokenizer_free(x.tok);
    qc_model_free(x.base);
    qc_guard_lock_release(&lock);
    free(x.model_ident), free(x.model_dir), free(x.runs), free(x.dir);
    return st;
}

/* ---- --compare ---- */
typedef struct cmp_set {
    cJSON **rows;
    int     n;
} cmp_set;

static qc_status cmp_load(const char *p, cmp_set *s) {
    char *path = qc_dir_exists(p) ? path2(p, "results.jsonl", "") : qc_strdup(p), *buf = NULL;
    size_t len;
    qc_status st = path ? qc_read_file(path, (size_t)1 << 30, &buf, &len) : qc_fail(QC_ERR_NOMEM, "out of memory");
    int line = 0;
    for (char *q = buf, *nl; st == QC_OK && q < buf + len; q = nl + 1) {
        nl = memchr(q, '\n', (size_t)(buf + len - q));
        if (!nl) nl = buf + len;
        line++;
        if (nl == q) continue;
        cJSON *j = cJSON_ParseWithLength(q, (size_t)(nl - q));
        if (!cJSON_IsObject(j) || !jstr(j, "cell")) {
            cJSON_Delete(j);
            st = qc_fail(QC_ERR_FORMAT, "%s:%d: not a results.jsonl row (a JSON object with \"cell\")", path, line);
            break;
        }
        cJSON **r = realloc(s->rows, (size_t)(s->n + 1) * sizeof *r);
        if (!r) {
            cJSON_Delete(j);
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
            break;
        }
        s->rows = r;
        s->rows[s->n++] = j;
    }
    free(buf);
    free(path);
    return st;
}

static const cJSON *metric(const cJSON *row, const char *m) {
    if (strncmp(m, "ppl_", 4) == 0) return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(row, "ppl"), m + 4);
    if (strcmp(m, "rel_err_mean") == 0) return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(row, "layers"), m);
    return cJSON_GetObjectItemCaseSensitive(row, m);
}

/* The values of metric m over the rows of cell. */
static int cell_values(const cmp_set *s, const char *cell, const char *m, double *v) {
    int n = 0;
    for (int i = 0; i < s->n; i++)
        if (strcmp(jstr(s->rows[i], "cell"), cell) == 0) {
            const cJSON *x = metric(s->rows[i], m);
            if (cJSON_IsNumber(x)) v[n++] = x->valuedouble;
        }
    return n;
}

qc_status qc_exp_compare(const char *a, const char *b, FILE *out, int *n_flagged) {
    cmp_set A = {0}, B = {0};
    *n_flagged = 0;
    qc_status st = cmp_load(a, &A);
    if (st == QC_OK) st = cmp_load(b, &B);
    /* metrics: ppl_<name> in A's order, then kl, top1, rel_err_mean */
    char *metrics[QC_EXP_MAX_EVALS + 3];
    int nm = 0;
    const cJSON *p;
    if (st == QC_OK && A.n)
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(A.rows[0], "ppl")) {
            if (nm >= QC_EXP_MAX_EVALS) break;
            size_t l = strlen(p->string) + 5;
            if ((metrics[nm] = malloc(l))) snprintf(metrics[nm++], l, "ppl_%s", p->string);
        }
    static const char *const fixed[] = {"kl", "top1", "rel_err_mean"};
    for (int i = 0; i < 3; i++) metrics[nm++] = qc_strdup(fixed[i]);
    double *va = calloc((size_t)A.n + 1, sizeof *va), *vb = calloc((size_t)B.n + 1, sizeof *vb);
    if (st == QC_OK && (!va || !vb)) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    int matched = 0, only_a = 0, only_b = 0;
    if (st == QC_OK) {
        fprintf(out, "compare A = %s\n        B = %s\n", a, b);
        fprintf(out, "%-44s %-14s %-26s %-26s %-14s %s\n", "cell", "metric", "A mean ± sd (n)", "B mean ± sd (n)",
                "B - A", "");
    }
    for (int i = 0; st == QC_OK && i < A.n; i++) {
        const char *cell = jstr(A.rows[i], "cell");
        bool first = true;
        for (int k = 0; k < i; k++) first &= strcmp(jstr(A.rows[k], "cell"), cell) != 0;
        if (!first) continue;
        bool in_b = false;
        for (int k = 0; k < B.n; k++) in_b |= strcmp(jstr(B.rows[k], "cell"), cell) == 0;
        if (!in_b) {
            fprintf(out, "%-44s only in A\n", cell);
            only_a++;
            continue;
        }
        matched++;
        for (int m = 0; m < nm; m++) {
            if (!metrics[m]) continue;
            int na = cell_values(&A, cell, metrics[m], va), nb = cell_values(&B, cell, metrics[m], vb);
            if (!na && !nb) continue;
            double ma, sa, mb, sb;
            mean_sd(va, na, &ma, &sa);
            mean_sd(vb, nb, &mb, &sb);
            char ca[64], cb[64], flag[64] = "";
            snprintf(ca, sizeof ca, "%.6g ± %.2g (%d)", ma, sa, na);
            snprintf(cb, sizeof cb, "%.6g ± %.2g (%d)", mb, sb, nb);
            double d = mb - ma, tol = fmax(2 * fmax(sa, sb), 1e-9);
            bool flagged = !na || !nb || !(fabs(d) <= tol);
            if (na == 1 && nb == 1) snprintf(flag, sizeof flag, flagged ? "* differs" : "identical");
            else if (flagged) snprintf(flag, sizeof flag, "* beyond 2 sd");
            *n_flagged += flagged;
            fprintf(out, "%-44s %-14s %-27s %-27s %+-14.6g %s\n", cell, metrics[m], ca, cb, d, flag);
        }
    }
    for (int i = 0; st == QC_OK && i < B.n; i++) {
        const char *cell = jstr(B.rows[i], "cell");
        bool seen = false;
        for (int k = 0; k < i; k++) seen |= strcmp(jstr(B.rows[k], "cell"), cell) == 0;
        for (int k = 0; k < A.n; k++) seen |= strcmp(jstr(A.rows[k], "cell"), cell) == 0;
        if (!seen) {
            fprintf(out, "%-44s only in B\n", cell);
            only_b++;
        }
    }
    if (st == QC_OK)
        fprintf(out, "%d cells compared, %d differences flagged; %d cells only in A, %d only in B\n", matched,
                *n_flagged, only_a, only_b);
    for (int m = 0; m < nm; m++) free(metrics[m]);
    for (int i = 0; i < A.n; i++) cJSON_Delete(A.rows[i]);
    for (int i = 0; i < B.n; i++) cJSON_Delete(B.rows[i]);
    free(A.rows), free(B.rows), free(va), free(vb);
    return st;
}
