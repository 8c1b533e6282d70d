/* ckpt_check.c - the deploy lint of a quantized checkpoint (rules and levels in ckpt_check.h). Each rule
 * restates a loader's behaviour; the comment above it names the loader code it follows. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "ckpt_check.h"

#include "awq_format.h"
#include "ckpt_write.h"
#include "gptq_format.h"
#include "safetensors.h"

#include <dirent.h>
#include <inttypes.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

enum { M_NONE, M_GPTQ, M_AWQ };

static const int k_tp[QC_CHECK_N_TP] = {1, 2, 4, 8};

/* A `dynamic` rule: "-:regex" skips, "+:regex" or "regex" overrides (GPTQModel config.py
 * _resolve_dynamic_override, vLLM gptq_utils.get_dynamic_override: re.match, the first match decides). */
typedef struct {
    const char  *key;
    bool         negative;
    char        *literal;   /* the one name an anchored literal pattern "^...$" matches, else NULL */
    pcre2_code  *re;        /* other patterns; NULL when one does not compile (reported once) */
    const cJSON *over;      /* the rule's object (overrides for positive rules) */
} dyn_rule;

typedef struct {
    const char *name;
    size_t      rule;       /* the first rule whose literal it is */
} dyn_lit;

typedef struct {
    char       *name;       /* module path, "model.layers.0.mlp.down_proj" */
    const char *rel;        /* block-relative part of name ("mlp.down_proj"), NULL outside blocks */
    bool        quantized;  /* holds name.qweight */
    bool        ok;         /* shapes consistent (N, K known): content and TP checks ran */
    int         N, K;       /* out and in features (0 when unknown) */
    int         bits, gs;   /* effective: the config's, or a positive `dynamic` rule's */
    bool        sym, desc_act;
    int         dyn;        /* index of the first matching `dynamic` rule, -1 for none */
} module;

typedef struct {
    const char      *dir;
    qc_check_report *r;
    bool             oom;
    size_t           cap;
    cJSON           *config, *side;   /* config.json; quantize_config.json or quant_config.json */
    const cJSON     *qc;              /* the quantization_config in use */
    int              method;
    int              bits, gs;
    bool             desc_act, sym, sym_set, v2, static_groups, lm_head_q, zero_point;
    bool             mib_present, mtnc_present;
    const char     **mib, **mtnc;     /* borrowed from qc */
    size_t           n_mib, n_mtnc;
    dyn_rule        *dyn;
    size_t           n_dyn;
    dyn_lit         *lit;             /* the literal rules, sorted by name */
    size_t           n_lit;
    pcre2_match_data *md;
    int              hidden, inter, heads, kv_heads, head_dim;
    bool             tie, tie_set;
    qc_weights      *w;
    module          *mods;
    size_t           n_mods;
} chk;

/* ---- findings ---- */

const char *qc_check_level_name(qc_check_level l) {
    return l == QC_CHECK_ERROR ? "error" : l == QC_CHECK_WARNING ? "warning" : "note";
}

static char *vfmt(const char *fmt, va_list ap) {
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

static void add(chk *c, const char *rule, qc_check_level lvl, const char *subject, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void add(chk *c, const char *rule, qc_check_level lvl, const char *subject, const char *fmt, ...) {
    qc_check_report *r = c->r;
    if (r->n_findings == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 32;
        qc_check_finding *f = realloc(r->findings, cap * sizeof *f);
        if (!f) {
            c->oom = true;
            return;
        }
        r->findings = f;
        c->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = vfmt(fmt, ap);
    va_end(ap);
    char *subj = qc_strdup(subject ? subject : "");
    if (!msg || !subj) {
        free(msg);
        free(subj);
        c->oom = true;
        return;
    }
    r->findings[r->n_findings++] = (qc_check_finding){rule, lvl, subj, msg};
    if (lvl == QC_CHECK_ERROR) r->n_errors++;
    else if (lvl == QC_CHECK_WARNING) r->n_warnings++;
    else r->n_notes++;
}

void qc_check_report_free(qc_check_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_findings; i++) {
        free(r->findings[i].subject);
        free(r->findings[i].message);
    }
    free(r->findings);
    memset(r, 0, sizeof *r);
}

/* ---- small helpers ---- */

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static const char *last_comp(const char *name) {
    const char *d = strrchr(name, '.');
    return d ? d + 1 : name;
}

static bool is_one_of(const char *s, const char *const *list) {
    for (; *list; list++)
        if (strcmp(s, *list) == 0) return true;
    return false;
}

static const char *const k_column[] = {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "w1", "w3", NULL};
static const char *const k_row[] = {"o_proj", "down_proj", "w2", NULL};
static const char *const k_router[] = {"gate", "router", NULL};

/* The pack factor's numerator as vLLM's gptq create_weights uses it (Fraction(32, bits).numerator). */
static int pf_num(int b) { return b == 2 ? 16 : b == 3 ? 32 : b == 4 ? 8 : b == 8 ? 4 : 1; }

static bool gptq_bits_ok(int b) { return b == 2 || b == 3 || b == 4 || b == 8; }

static bool marlin_group_ok(int gs) { return gs == -1 || gs == 32 || gs == 64 || gs == 128; }

/* A JSON object's integer field: false when absent or not an integer in range. */
static bool json_int(const cJSON *o, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT32_MIN && v->valuedouble <= INT32_MAX) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return false;
    *out = (int)v->valuedouble;
    return true;
}

static const qc_tensor *find2(const chk *c, const char *prefix, const char *suffix) {
    char name[1024];
    if ((size_t)snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= sizeof name) return NULL;
    return qc_weights_find(c->w, name);
}

static bool is_float(qc_dtype d) { return qc_is_float_dtype(d); }

/* Whether any string of list occurs in s (Python `any(x in s for x in list)`). */
static bool any_substr(const char *const *list, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strstr(s, list[i])) return true;
    return false;
}

/* ---- `dynamic` ---- */

static int cmp_lit(const void *a, const void *b) {
    const dyn_lit *x = a, *y = b;
    int r = strcmp(x->name, y->name);
    return r ? r : (x->rule > y->rule) - (x->rule < y->rule);
}

/* The first rule matching `name` (-1: none). Rules of the form "^<escaped literal>$" are looked up by name,
 * the others tried in order up to the literal's index: GPTQModel's own fast path
 * (_extract_literal_regex_pattern), same result as re.match over the rules in order. */
static int dyn_match(chk *c, const char *name) {
    size_t best = c->n_dyn;
    if (c->n_lit) {
        dyn_lit key = {name, 0};
        size_t lo = 0, hi = c->n_lit;
        while (lo < hi) {   /* the first entry >= (name, 0) */
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_lit(&c->lit[mid], &key) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < c->n_lit && strcmp(c->lit[lo].name, name) == 0) best = c->lit[lo].rule;
    }
    for (size_t i = 0; i < best; i++) {
        if (!c->dyn[i].re) continue;
        int rc = pcre2_match(c->dyn[i].re, (PCRE2_SPTR)name, strlen(name), 0, PCRE2_ANCHORED, c->md, NULL);
        if (rc >= 0) return (int)i;
    }
    return best < c->n_dyn ? (int)best : -1;
}

/* The name an anchored pattern matches when it is a literal: "^a\\.b$" -> "a.b"; NULL otherwise (Python's
 * escapes: a backslash before a non-alphanumeric character makes it literal). */
static char *literal_of(const char *pat) {
    size_t n = strlen(pat);
    if (n < 2 || pat[0] != '^' || pat[n - 1] != '$') return NULL;
    char *out = qc_malloc(n), *o = out;
    if (!out) return NULL;
    for (size_t i = 1; i + 1 < n; i++) {
        char ch = pat[i];
        if (ch == '\\') {
            char nx = i + 2 < n ? pat[i + 1] : '\0';
            if (!nx || (nx >= '0' && nx <= '9') || (nx >= 'a' && nx <= 'z') || (nx >= 'A' && nx <= 'Z')) goto no;
            *o++ = nx;
            i++;
        } else if (strchr(".^$*+?{}[]()|", ch)) {
            goto no;
        } else {
            *o++ = ch;
        }
    }
    *o = '\0';
    return out;
no:
    free(out);
    return NULL;
}

static bool dyn_skips(chk *c, const char *name) {
    int i = dyn_match(c, name);
    return i >= 0 && c->dyn[i].negative;
}

static void dyn_compile(chk *c, const cJSON *dyn) {
    size_t n = 0;
    for (const cJSON *e = dyn->child; e; e = e->next) n++;
    c->dyn = qc_calloc(n ? n : 1, sizeof *c->dyn);
    c->lit = qc_calloc(n ? n : 1, sizeof *c->lit);
    c->md = pcre2_match_data_create(1, NULL);
    if (!c->dyn || !c->lit || !c->md) {
        c->oom = true;
        return;
    }
    for (const cJSON *e = dyn->child; e; e = e->next) {
        dyn_rule *d = &c->dyn[c->n_dyn++];
        d->key = e->string;
        d->over = e;
        d->negative = strncmp(e->string, "-:", 2) == 0;
        const char *pat = e->string + ((d->negative || strncmp(e->string, "+:", 2) == 0) ? 2 : 0);
        if (!cJSON_IsObject(e))
            add(c, "config", QC_CHECK_ERROR, e->string, "`dynamic` rule value is not an object (GPTQModel and vLLM "
                "read each rule as a dict of overrides)");
        if ((d->literal = literal_of(pat))) {
            c->lit[c->n_lit++] = (dyn_lit){d->literal, c->n_dyn - 1};
            continue;
        }
        int err;
        PCRE2_SIZE off;
        d->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
        if (!d->re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            add(c, "config", QC_CHECK_ERROR, e->string, "`dynamic` pattern does not compile (%s at offset %zu): "
                "GPTQModel raises ValueError when it loads the config", (const char *)msg, (size_t)off);
        } else {
            (void)pcre2_jit_compile(d->re, PCRE2_JIT_COMPLETE);   /* the interpreter runs when JIT is absent */
        }
    }
    qsort(c->lit, c->n_lit, sizeof *c->lit, cmp_lit);
}

/* ---- config ---- */

static cJSON *read_json(chk *c, const char *name, bool *exists) {
    *exists = false;
    char *path = qc_path_join(c->dir, name);
    if (!path) {
        c->oom = true;
        return NULL;
    }
    cJSON *root = NULL;
    *exists = qc_file_exists(path);
    if (*exists) {
        qc_status st = qc_json_read_object(path, &root);
        if (st == QC_ERR_NOMEM) c->oom = true;
        else if (st != QC_OK) add(c, "config", QC_CHECK_ERROR, name, "%s", qc_last_error());
    }
    free(path);
    return root;
}

/* modules_in_block_to_quantize: a list of lists (optimum, vLLM flattens it) or of strings. */
static void read_mib(chk *c, const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return;
    size_t n = 0;
    bool ok = cJSON_IsArray(v);
    for (const cJSON *e = ok ? v->child : NULL; e && ok; e = e->next) {
        if (cJSON_IsString(e)) n++;
        else if (cJSON_IsArray(e))
            for (const cJSON *s = e->child; s && ok; s = s->next) ok = cJSON_IsString(s), n++;
        else ok = false;
    }
    if (!ok) {
        add(c, "config", QC_CHECK_ERROR, "modules_in_block_to_quantize", "must be a list of lists of module names "
            "(optimum iterates it; vLLM flattens it)");
        return;
    }
    if (!(c->mib = qc_calloc(n ? n : 1, sizeof *c->mib))) {
        c->oom = true;
        return;
    }
    for (const cJSON *e = v->child; e; e = e->next) {
        if (cJSON_IsString(e)) c->mib[c->n_mib++] = e->valuestring;
        else
            for (const cJSON *s = e->child; s; s = s->next) c->mib[c->n_mib++] = s->valuestring;
    }
    c->mib_present = c->n_mib > 0;
}

static void read_mtnc(chk *c, const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return;
    size_t n = 0;
    bool ok = cJSON_IsArray(v);
    for (const cJSON *e = ok ? v->child : NULL; e && ok; e = e->next) ok = cJSON_IsString(e), n++;
    if (!ok) {
        add(c, "config", QC_CHECK_ERROR, "modules_to_not_convert", "must be null or a list of module names");
        return;
    }
    if (!(c->mtnc = qc_calloc(n ? n : 1, sizeof *c->mtnc))) {
        c->oom = true;
        return;
    }
    for (const cJSON *e = v->child; e; e = e->next) c->mtnc[c->n_mtnc++] = e->valuestring;
    c->mtnc_present = true;
}

/* An int field with a synonym: reports a wrongly typed one; false when absent (or bad). */
static bool get_int(chk *c, const cJSON *o, const char *key, const char *alt, const char *what, int *out) {
    bool found = false;
    qc_status st = qc_json_get_int(o, key, alt, what, &found, out);
    if (st != QC_OK) {
        add(c, "config", QC_CHECK_ERROR, key, "%s", qc_last_error());
        return false;
    }
    return found;
}

static bool get_bool(chk *c, const cJSON *o, const char *key, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return false;
    if (!cJSON_IsBool(v)) {
        add(c, "config", QC_CHECK_ERROR, key, "is not a boolean (loaders read it as one)");
        return false;
    }
    *out = cJSON_IsTrue(v);
    return true;
}

static void parse_gptq(chk *c, const char *what) {
    const cJSON *q = c->qc;
    if (!get_int(c, q, "bits", "w_bit", what, &c->bits))
        add(c, "config", QC_CHECK_ERROR, "bits", "quantization_config has no bits (vLLM's get_from_keys raises)");
    else if (!gptq_bits_ok(c->bits))
        add(c, "config-bits", QC_CHECK_ERROR, "bits", "bits = %d: GPTQ loaders (transformers, optimum, vLLM) accept 2, 3, "
            "4 or 8", c->bits);
    if (!get_int(c, q, "group_size", "q_group_size", what, &c->gs))
        add(c, "config", QC_CHECK_ERROR, "group_size", "quantization_config has no group_size (vLLM's get_from_keys "
            "raises)");
    else if (c->gs != -1 && c->gs < 1)
        add(c, "config-group", QC_CHECK_ERROR, "group_size", "group_size = %d (must be -1 or positive)", c->gs);
    if (!cJSON_GetObjectItemCaseSensitive(q, "desc_act"))
        add(c, "config", QC_CHECK_ERROR, "desc_act", "quantization_config has no desc_act (vLLM's get_from_keys raises)");
    get_bool(c, q, "desc_act", &c->desc_act);
    c->sym = true;
    c->sym_set = get_bool(c, q, "sym", &c->sym);
    const cJSON *sy = cJSON_GetObjectItemCaseSensitive(q, "sym");
    if (!sy || cJSON_IsNull(sy))
        add(c, "config", QC_CHECK_WARNING, "sym", "quantization_config has no sym: AutoGPTQ assumes true, vLLM's "
            "gptq_marlin does not take the checkpoint");
    get_bool(c, q, "static_groups", &c->static_groups);
    get_bool(c, q, "lm_head", &c->lm_head_q);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(q, "checkpoint_format");
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f) || (strcmp(f->valuestring, "gptq") != 0 && strcmp(f->valuestring, "gptq_v2") != 0))
            add(c, "config-format", QC_CHECK_ERROR, "checkpoint_format", "checkpoint_format %s%s%s: vLLM reads anything "
                "but \"gptq_v2\" as v1 zero points, GPTQModel may not; write \"gptq\" or \"gptq_v2\"",
                cJSON_IsString(f) ? "\"" : "", cJSON_IsString(f) ? f->valuestring : "(not a string)",
                cJSON_IsString(f) ? "\"" : "");
        else
            c->v2 = strcmp(f->valuestring, "gptq_v2") == 0;
    }
    if (!c->v2 && c->sym_set && !c->sym)
        add(c, "config-format", QC_CHECK_ERROR, "checkpoint_format", "sym=false in checkpoint_format \"gptq\" (v1): v1 "
            "stores z-1, a zero point of 0 becomes -1 which the exllama/vLLM kernels read as 2^bits and GPTQModel's "
            "v1->v2 conversion carries into the next field; GPTQModel refuses it (spec A.3): use gptq_v2 or awq");
    if (c->v2)
        add(c, "config-format", QC_CHECK_WARNING, "checkpoint_format", "gptq_v2 zero points are read correctly only by "
            "GPTQModel (and optimum/transformers through it) and vLLM with PR #26092; AutoGPTQ, TGI and older vLLM "
            "read them as v1 (every zero point off by one)");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(q, "damp_percent");
    if (d && !cJSON_IsNull(d) && (!cJSON_IsNumber(d) || !(d->valuedouble > 0 && d->valuedouble < 1)))
        add(c, "config", QC_CHECK_ERROR, "damp_percent", "damp_percent must be a number in (0, 1): transformers and "
            "optimum refuse the config otherwise");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "model_file_base_name");
    if (cJSON_IsString(b)) {
        char n1[512], n2[512];
        snprintf(n1, sizeof n1, "%s.safetensors", b->valuestring);
        snprintf(n2, sizeof n2, "%s.safetensors.index.json", b->valuestring);
        char *p1 = qc_path_join(c->dir, n1), *p2 = qc_path_join(c->dir, n2);
        if (!p1 || !p2) c->oom = true;
        else if (!qc_file_exists(p1) && !qc_file_exists(p2))
            add(c, "config", QC_CHECK_ERROR, "model_file_base_name", "\"%s\" names no weights in the directory (no %s "
                "or %s): AutoGPTQ does not find them", b->valuestring, n1, n2);
        free(p1);
        free(p2);
    }
    read_mib(c, cJSON_GetObjectItemCaseSensitive(q, "modules_in_block_to_quantize"));
}

static void parse_awq(chk *c, const char *what) {
    const cJSON *q = c->qc;
    if (!get_int(c, q, "bits", "w_bit", what, &c->bits))
        add(c, "config", QC_CHECK_ERROR, "bits", "quantization_config has no bits / w_bit (vLLM's get_from_keys raises)");
    else if (c->bits != 4)
        add(c, "config-bits", QC_CHECK_ERROR, "bits", "bits = %d: the AWQ GEMM layout holds 4-bit codes only (AutoAWQ "
            "asserts, vLLM's AWQConfig raises)", c->bits);
    if (!get_int(c, q, "group_size", "q_group_size", what, &c->gs))
        add(c, "config", QC_CHECK_ERROR, "group_size", "quantization_config has no group_size / q_group_size (vLLM's "
            "get_from_keys raises)");
    else if (c->gs < 1)
        add(c, "config-group", QC_CHECK_ERROR, "group_size", "group_size = %d: vLLM's awq needs a positive group size "
            "dividing in_features (spec B.1: never -1)", c->gs);
    bool zp = true;
    c->zero_point = false;
    if (!cJSON_GetObjectItemCaseSensitive(q, "zero_point"))
        add(c, "config", QC_CHECK_ERROR, "zero_point", "quantization_config has no zero_point (vLLM's get_from_keys "
            "raises)");
    else if (get_bool(c, q, "zero_point", &zp) && !zp)
        add(c, "config-format", QC_CHECK_ERROR, "zero_point", "zero_point false: symmetric AWQ has no GEMM layout "
            "(AutoAWQ asserts zeros, vLLM has no kernel for it)");
    else
        c->zero_point = zp;
    static const char *const keys[] = {"version", "format", "backend"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(q, keys[i]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsString(v)) add(c, "config", QC_CHECK_ERROR, keys[i], "is not a string");
        else if (i < 2 ? !qc_str_ieq(v->valuestring, "gemm") : qc_str_ieq(v->valuestring, "llm-awq"))
            add(c, "config-format", QC_CHECK_ERROR, keys[i], "%s \"%s\": the tensors are in AutoAWQ's GEMM layout, "
                "which loaders read only when the version says gemm", keys[i], v->valuestring);
    }
    read_mtnc(c, cJSON_GetObjectItemCaseSensitive(q, "modules_to_not_convert"));
}

/* The side file must agree with config.json on what loaders read: AutoGPTQ reads quantize_config.json first,
 * vLLM and TGI fall back to it (GPTQ); vLLM and TGI fall back to quant_config.json (AWQ). */
static void check_mirror(chk *c, const char *file) {
    const cJSON *a = c->qc, *b = c->side;
    static const char *const ints[][2] = {{"bits", "w_bit"}, {"group_size", "q_group_size"}};
    for (int i = 0; i < 2; i++) {
        int va = 0, vb = 0;
        bool fa = false, fb = false;
        if (qc_json_get_int(a, ints[i][0], ints[i][1], file, &fa, &va) != QC_OK ||
            qc_json_get_int(b, ints[i][0], ints[i][1], file, &fb, &vb) != QC_OK)
            continue;
        if (fb && (!fa || va != vb))
            add(c, "config-mirror", QC_CHECK_ERROR, file, "%s = %d, config.json's quantization_config says %s%d: "
                "loaders reading %s see another checkpoint", ints[i][0], vb, fa ? "" : "nothing about it ", va, file);
        else if (!fb && fa && c->method == M_GPTQ)
            add(c, "config-mirror", QC_CHECK_ERROR, file, "has no %s (config.json says %d): AutoGPTQ reads %s first",
                ints[i][0], va, file);
    }
    /* what a loader reads (quant_method and static_groups are informational, AutoGPTQ omits the first) */
    static const char *const gptq_keys[] = {"desc_act", "sym", "lm_head", "checkpoint_format",
                                            "modules_in_block_to_quantize", "dynamic", NULL};
    static const char *const awq_keys[] = {"zero_point", "modules_to_not_convert", NULL};
    for (const char *const *k = c->method == M_GPTQ ? gptq_keys : awq_keys; *k; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, *k), *y = cJSON_GetObjectItemCaseSensitive(b, *k);
        if (x && cJSON_IsNull(x)) x = NULL;
        if (y && cJSON_IsNull(y)) y = NULL;
        if (!x && !y) continue;
        if (!x || !y || !cJSON_Compare(x, y, true))
            add(c, "config-mirror", QC_CHECK_ERROR, file, "%s differs from config.json's quantization_config%s", *k,
                !y ? " (absent here)" : !x ? " (absent there)" : "");
    }
    if (c->method == M_AWQ) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, "version"), *y = cJSON_GetObjectItemCaseSensitive(b, "version");
        if (cJSON_IsString(x) && cJSON_IsString(y) && !qc_str_ieq(x->valuestring, y->valuestring))
            add(c, "config-mirror", QC_CHECK_ERROR, file, "version \"%s\" differs from config.json's \"%s\"",
                y->valuestring, x->valuestring);
    }
}

static void read_arch(chk *c) {
    const cJSON *a = c->config;
    if (!a) return;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(a, "text_config");
    if (!cJSON_GetObjectItemCaseSensitive(a, "hidden_size") && cJSON_IsObject(t)) a = t;
    json_int(a, "hidden_size", &c->hidden);
    json_int(a, "intermediate_size", &c->inter);
    json_int(a, "num_attention_heads", &c->heads);
    if (!json_int(a, "num_key_value_heads", &c->kv_heads)) c->kv_heads = c->heads;
    if (!json_int(a, "head_dim", &c->head_dim) && c->heads > 0 && c->hidden % c->heads == 0)
        c->head_dim = c->hidden / c->heads;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(a, "tie_word_embeddings");
    c->tie = cJSON_IsTrue(tie);
    c->tie_set = cJSON_IsBool(tie);   /* absent: the architecture's default, which differs between them */
}

static void load_config(chk *c) {
    bool have_cfg = false, have_side = false;
    c->config = read_json(c, "config.json", &have_cfg);
    if (!have_cfg)
        add(c, "config", QC_CHECK_ERROR, "config.json", "missing: transformers and vLLM need it to build the model");
    read_arch(c);
    const cJSON *q = c->config ? cJSON_GetObjectItemCaseSensitive(c->config, "quantization_config") : NULL;
    if (q && cJSON_IsNull(q)) q = NULL;
    if (q && !cJSON_IsObject(q)) {
        add(c, "config", QC_CHECK_ERROR, "quantization_config", "is not an object");
        q = NULL;
    }
    int side_method = M_GPTQ;
    const char *side_name = "quantize_config.json";
    c->side = read_json(c, side_name, &have_side);
    if (!have_side) {
        side_name = "quant_config.json";
        side_method = M_AWQ;
        c->side = read_json(c, side_name, &have_side);
    }
    const char *what = "config.json";
    if (q) {
        c->qc = q;
    } else if (c->side) {
        c->qc = c->side;
        what = side_name;
        if (have_cfg)
            add(c, "config", QC_CHECK_ERROR, "quantization_config", "config.json has none, only %s: transformers and "
                "optimum load the directory as an unquantized model (vLLM, TGI and AutoGPTQ fall back to %s)",
                side_name, side_name);
    } else {
        add(c, "config", QC_CHECK_ERROR, "quantization_config", "not a quantized checkpoint: config.json has no "
            "quantization_config (and there is no quantize_config.json or quant_config.json)");
        return;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c->qc, "quant_method");
    if (cJSON_IsString(m) && qc_str_ieq(m->valuestring, "gptq")) c->method = M_GPTQ;
    else if (cJSON_IsString(m) && qc_str_ieq(m->valuestring, "awq")) c->method = M_AWQ;
    else if (!m && c->qc == c->side) c->method = side_method;   /* AutoGPTQ/AutoAWQ side files may omit it */
    else {
        add(c, "config", QC_CHECK_ERROR, "quant_method", "%s%s%s: qcal check reads gptq and awq checkpoints%s",
            m ? "quant_method " : "quantization_config has no quant_method", cJSON_IsString(m) ? m->valuestring : "",
            m && !cJSON_IsString(m) ? "(not a string)" : "", m ? "" : " (transformers cannot pick a quantizer)");
        return;
    }
    if (c->method == M_GPTQ) parse_gptq(c, what);
    else parse_awq(c, what);
    snprintf(c->r->format, sizeof c->r->format, "%s", c->method == M_AWQ ? "awq" : c->v2 ? "gptq_v2" : "gptq");
    c->r->bits = c->bits;
    c->r->group_size = c->gs;
    const cJSON *dyn = cJSON_GetObjectItemCaseSensitive(c->qc, "dynamic");
    if (dyn && !cJSON_IsNull(dyn)) {
        if (!cJSON_IsObject(dyn)) add(c, "config", QC_CHECK_ERROR, "dynamic", "is not an object of rules");
        else dyn_compile(c, dyn);
    }
    if (c->qc != c->side && c->side) {
        if ((side_method == M_GPTQ) != (c->method == M_GPTQ))
            add(c, "config-mirror", QC_CHECK_ERROR, side_name, "belongs to the other format (%s checkpoint)",
                c->method == M_GPTQ ? "GPTQ" : "AWQ");
        else
            check_mirror(c, side_name);
    } else if (c->method == M_GPTQ && !c->side) {
        add(c, "config", QC_CHECK_WARNING, "quantize_config.json", "missing: AutoGPTQ reads only quantize_config.json "
            "(transformers, GPTQModel and vLLM read config.json)");
    }
}

/* ---- shards ---- */

static void check_shards(chk *c) {
    qc_status st = qc_weights_open(c->dir, &c->w);
    if (st == QC_ERR_NOMEM) {
        c->oom = true;
        return;
    }
    if (st != QC_OK) {
        add(c, "shards", QC_CHECK_ERROR, "weights", "%s (tensor checks skipped)", qc_last_error());
        c->w = NULL;
        return;
    }
    c->r->n_tensors = qc_weights_count(c->w);
    /* the files the weights came from: every other *.safetensors is an orphan (vLLM loads all of them when
     * there is no index, and a shard the index forgot holds tensors no loader reads) */
    qc_strset used = {0};
    char *index = qc_path_join(c->dir, "model.safetensors.index.json");
    const bool sharded = index && qc_file_exists(index);
    if (!index) c->oom = true;
    free(index);
    for (size_t i = 0; i < qc_weights_count(c->w); i++) {
        const char *f = qc_weights_get(c->w, i)->file, *base = strrchr(f, '/');
        if (!qc_strset_add(&used, base ? base + 1 : f)) c->oom = true;
    }
    DIR *d = opendir(c->dir);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors") || qc_strset_has(&used, de->d_name))
            continue;
        add(c, "shards", QC_CHECK_ERROR, de->d_name, "not part of the checkpoint's weights (%s): loaders that glob "
            "*.safetensors load it as well, the others ignore its tensors; remove it or list it in the index",
            sharded ? "the index does not name it" : "model.safetensors is the weights file");
    }
    if (d) closedir(d);
    for (size_t i = 0; i < used.n; i++) {
        char *p = qc_path_join(c->dir, used.v[i]);
        qc_safetensors *f = NULL;
        if (!p) c->oom = true;
        else if (qc_safetensors_open(p, &f) == QC_OK) {
            const char *fmt = qc_safetensors_meta(f, "format");
            if (!fmt || strcmp(fmt, "pt") != 0)
                add(c, "shards", QC_CHECK_ERROR, used.v[i], "__metadata__.format is %s%s%s, not \"pt\": transformers "
                    "refuses the file", fmt ? "\"" : "", fmt ? fmt : "absent", fmt ? "\"" : "");
        }
        qc_safetensors_free(f);
        free(p);
    }
    qc_strset_free(&used);
}

/* ---- the module inventory ---- */

static void add_module(chk *c, const char *prefix, bool quantized) {
    if (c->n_mods % 64 == 0) {
        module *m = realloc(c->mods, (c->n_mods + 64) * sizeof *m);
        if (!m) {
            c->oom = true;
            return;
        }
        c->mods = m;
    }
    module *m = &c->mods[c->n_mods];
    memset(m, 0, sizeof *m);
    if (!(m->name = qc_strdup(prefix))) {
        c->oom = true;
        return;
    }
    m->rel = qc_ckpt_block_rel(m->name);
    m->quantized = quantized;
    m->bits = c->bits;
    m->gs = c->gs;
    m->sym = c->sym;
    m->desc_act = c->desc_act;
    m->dyn = dyn_match(c, m->name);
    /* a positive rule's overrides (GPTQModel dynamic, vLLM override_config: bits, group_size, desc_act, sym) */
    if (c->method == M_GPTQ && m->dyn >= 0 && !c->dyn[m->dyn].negative && cJSON_IsObject(c->dyn[m->dyn].over)) {
        const cJSON *o = c->dyn[m->dyn].over;
        json_int(o, "bits", &m->bits);
        json_int(o, "group_size", &m->gs);
        const cJSON *v;
        if (cJSON_IsBool(v = cJSON_GetObjectItemCaseSensitive(o, "sym"))) m->sym = cJSON_IsTrue(v);
        if (cJSON_IsBool(v = cJSON_GetObjectItemCaseSensitive(o, "desc_act"))) m->desc_act = cJSON_IsTrue(v);
    }
    c->n_mods++;
}

static void inventory(chk *c) {
    char prefix[1024];
    for (size_t i = 0; i < qc_weights_count(c->w); i++) {
        const qc_tensor *t = qc_weights_get(c->w, i);
        const char *dot = strrchr(t->name, '.'), *suf = dot ? dot + 1 : t->name;
        size_t plen = dot ? (size_t)(dot - t->name) : 0;
        if (strcmp(t->name, "gptq_bits") == 0 || strcmp(t->name, "gptq_groupsize") == 0) {
            add(c, "tensors", QC_CHECK_ERROR, t->name, "a tensor of this name makes TGI take the checkpoint for its own "
                "quantizer's output (it then forces desc_act=false and reads sym from a gptq_sym tensor)");
            continue;
        }
        if (!dot || plen >= sizeof prefix) continue;
        memcpy(prefix, t->name, plen);
        prefix[plen] = '\0';
        if (strcmp(suf, "qweight") == 0) {
            add_module(c, prefix, true);
        } else if (strcmp(suf, "qzeros") == 0 || strcmp(suf, "scales") == 0 || strcmp(suf, "g_idx") == 0) {
            if (!find2(c, prefix, "qweight"))
                add(c, "tensors", QC_CHECK_ERROR, t->name, "no %s.qweight beside it: a quantized module's tensors come "
                    "together (loaders would report it unexpected or build a module without codes)", prefix);
        } else if (strcmp(suf, "weight") == 0 && t->ndim == 2 && is_float(t->dtype) && qc_ckpt_block_rel(prefix) &&
                   !find2(c, prefix, "qweight")) {
            add_module(c, prefix, false);
            module *m = &c->mods[c->n_mods - 1];
            if (!c->oom && t->shape[0] <= INT32_MAX && t->shape[1] <= INT32_MAX) {
                m->N = (int)t->shape[0];
                m->K = (int)t->shape[1];
                m->ok = true;
            }
        }
        if (c->oom) return;
    }
    for (size_t i = 0; i < c->n_mods; i++) {
        if (c->mods[i].quantized) c->r->n_quantized++;
        else c->r->n_kept++;
    }
}

/* ---- per quantized module: config vs tensors ---- */

static bool shape2(const qc_tensor *t, qc_dtype dt, bool any_float) {
    return t->ndim == 2 && (any_float ? is_float(t->dtype) : t->dtype == dt);
}

static void read_i32(const qc_tensor *t, size_t i, int32_t *v) { memcpy(v, (const char *)t->data + 4 * i, 4); }

/* g_idx (spec A.4): vLLM drops it unless desc_act (then the groups are k / group_size), ExLlamaV2 follows it
 * whenever it is not all zero, so it must be trivial unless desc_act; act-order groups hold group_size
 * channels each (vLLM's exllama shuffle and Marlin's act-order sort assume it). */
static void check_gidx(chk *c, module *m, const qc_tensor *tg, int G, int gs_eff, int *n_trivial_act) {
    int *count = qc_calloc((size_t)G, sizeof *count);
    if (!count) {
        c->oom = true;
        return;
    }
    bool trivial = true;
    for (int k = 0; k < m->K; k++) {
        int32_t g;
        read_i32(tg, (size_t)k, &g);
        if (g < 0 || g >= G) {
            add(c, "gidx-desc-act", QC_CHECK_ERROR, tg->name, "g_idx[%d] = %d is outside [0, %d): loaders index scales "
                "out of bounds", k, g, G);
            free(count);
            return;
        }
        count[g]++;
        if (trivial && g != k / gs_eff) {
            trivial = false;
            if (!m->desc_act)
                add(c, "gidx-desc-act", QC_CHECK_ERROR, tg->name, "desc_act=false but g_idx[%d] = %d, not k / "
                    "group_size = %d: vLLM ignores g_idx then (groups k / %d) while ExLlamaV2 and GPTQModel follow it, "
                    "so they compute different weights", k, g, k / gs_eff, gs_eff);
        }
    }
    if (m->desc_act && trivial) (*n_trivial_act)++;
    for (int g = 0; m->desc_act && g < G; g++)
        if (count[g] != gs_eff) {
            add(c, "gidx-desc-act", QC_CHECK_ERROR, tg->name, "act-order group %d holds %d input channels, not "
                "group_size %d (vLLM's exllama shuffle and Marlin's act-order path assume equal groups)", g, count[g],
                gs_eff);
            break;
        }
    free(count);
}

/* sym=true: vLLM's Marlin types uint4b8/uint8b128 have no zero points, so every one must be 2^(b-1). */
static void check_sym_zeros(chk *c, module *m, const qc_tensor *tz, int G) {
    const int b = m->bits;
    if (m->N % 32 != 0 || m->K % 32 != 0) return;   /* qc_gptq_unpack's stream layout needs whole words */
    int32_t *words = qc_tensor_dup(tz), *z = qc_calloc((size_t)G * (size_t)m->N, sizeof *z);
    if (!words || !z) c->oom = true;
    else if (qc_gptq_unpack(m->N, m->K, b, G, c->v2, NULL, words, NULL, NULL, z, NULL) == QC_OK) {
        for (size_t i = 0; i < (size_t)G * (size_t)m->N; i++)
            if (z[i] != 1 << (b - 1)) {
                add(c, "sym-zeros", QC_CHECK_ERROR, tz->name, "sym=true but zero point [%zu][%zu] is %d (stored %d), "
                    "not 2^(bits-1) = %d (stored %d in %s): Marlin ignores qzeros for sym checkpoints and the exllama "
                    "kernel does not, so they compute different weights", i / (size_t)m->N, i % (size_t)m->N, z[i],
                    z[i] - (c->v2 ? 0 : 1), 1 << (b - 1), (1 << (b - 1)) - (c->v2 ? 0 : 1), c->v2 ? "gptq_v2" : "gptq");
                break;
            }
    }
    free(words);
    free(z);
}

static void check_bias(chk *c, module *m) {
    const qc_tensor *tb = find2(c, m->name, "bias");
    if (tb && (!is_float(tb->dtype) || tb->ndim != 1 || tb->shape[0] != m->N))
        add(c, "shapes", QC_CHECK_ERROR, tb->name, "must be a floating [%d] tensor (it is %s, %d-D)", m->N,
            qc_dtype_name(tb->dtype), tb->ndim);
}

static void check_gptq_module(chk *c, module *m, int *n_trivial_act) {
    const qc_tensor *tw = find2(c, m->name, "qweight"), *tz = find2(c, m->name, "qzeros");
    const qc_tensor *ts = find2(c, m->name, "scales"), *tg = find2(c, m->name, "g_idx");
    const int b = m->bits;
    if (!gptq_bits_ok(b)) {
        if (b != c->bits) add(c, "config-bits", QC_CHECK_ERROR, m->name, "`dynamic` gives bits = %d (2, 3, 4 or 8)", b);
        return;
    }
    if (!shape2(tw, QC_DTYPE_I32, false) || tw->shape[0] > INT32_MAX / 32 || tw->shape[1] > INT32_MAX) {
        add(c, "shapes", QC_CHECK_ERROR, tw->name, "must be a 2-D I32 tensor [K*bits/32, N] (it is %s, %d-D)",
            qc_dtype_name(tw->dtype), tw->ndim);
        return;
    }
    if (!tz || !ts) {
        add(c, "shapes", QC_CHECK_ERROR, m->name, "has a qweight but no %s: loaders leave it at zero or refuse",
            !tz ? "qzeros" : "scales");
        return;
    }
    const int R = (int)tw->shape[0];
    m->N = (int)tw->shape[1];
    if (!shape2(tz, QC_DTYPE_I32, false) || !shape2(ts, 0, true)) {
        add(c, "shapes", QC_CHECK_ERROR, m->name, "qzeros must be 2-D I32 and scales 2-D floating (they are %s %d-D, "
            "%s %d-D)", qc_dtype_name(tz->dtype), tz->ndim, qc_dtype_name(ts->dtype), ts->ndim);
        return;
    }
    /* the bits the tensors hold: qzeros packs N fields of b bits per row */
    if (tz->shape[1] * 32 != (int64_t)m->N * b) {
        int64_t zb = m->N > 0 && (tz->shape[1] * 32) % m->N == 0 ? tz->shape[1] * 32 / m->N : 0;
        char held[48] = "no whole number of fields";
        if (zb) snprintf(held, sizeof held, "%" PRId64 "-bit fields", zb);
        add(c, "config-bits", QC_CHECK_ERROR, tz->name, "[%" PRId64 ", %" PRId64 "] packs %s for N = %d, but the "
            "config says bits = %d (%" PRId64 " columns)", tz->shape[0], tz->shape[1], held, m->N, b,
            (int64_t)m->N * b / 32);
        return;
    }
    if (((int64_t)R * 32) % b != 0) {
        add(c, "config-bits", QC_CHECK_ERROR, tw->name, "%d rows do not hold a whole number of %d-bit codes", R, b);
        return;
    }
    m->K = (int)((int64_t)R * 32 / b);
    if (tg && (tg->dtype != QC_DTYPE_I32 || tg->ndim != 1)) {
        add(c, "shapes", QC_CHECK_ERROR, tg->name, "must be a 1-D I32 tensor [K] (it is %s, %d-D)",
            qc_dtype_name(tg->dtype), tg->ndim);
        return;
    }
    if (tg && tg->shape[0] != m->K) {
        int64_t kb = tg->shape[0] > 0 && ((int64_t)R * 32) % tg->shape[0] == 0 ? (int64_t)R * 32 / tg->shape[0] : 0;
        char fits[48] = "";
        if (kb) snprintf(fits, sizeof fits, " (they fit %" PRId64 "-bit codes)", kb);
        add(c, "config-bits", QC_CHECK_ERROR, m->name, "g_idx has %" PRId64 " entries but qweight's %d rows hold %d "
            "codes of %d bits per column%s", tg->shape[0], R, m->K, b, fits);
        return;
    }
    if (ts->shape[1] != m->N || tz->shape[0] != ts->shape[0]) {
        add(c, "shapes", QC_CHECK_ERROR, ts->name, "[%" PRId64 ", %" PRId64 "] does not fit qweight's N = %d and "
            "qzeros' %" PRId64 " groups", ts->shape[0], ts->shape[1], m->N, tz->shape[0]);
        return;
    }
    if (ts->dtype != QC_DTYPE_F16)
        add(c, "shapes", QC_CHECK_WARNING, ts->name, "is %s: loaders register F16 scales and convert (vLLM's gptq "
            "kernels run in fp16)", qc_dtype_name(ts->dtype));
    const int64_t G64 = ts->shape[0];
    const int gs_eff = m->gs == -1 ? m->K : m->gs;
    if (gs_eff < 1) return;
    if (m->K % gs_eff != 0 || G64 != m->K / gs_eff) {
        char fits[48] = " (no group size fits)";
        if (G64 > 0 && m->K % G64 == 0) snprintf(fits, sizeof fits, " (group size %" PRId64 ")", m->K / G64);
        add(c, "config-group", QC_CHECK_ERROR, m->name, "scales has %" PRId64 " group row(s) for K = %d%s, but the "
            "config says group_size = %d%s", G64, m->K, fits, m->gs,
            m->K % gs_eff ? " (K is not a multiple of it: vLLM's create_weights raises)" : "");
        return;
    }
    const int G = (int)G64;
    if (m->N % pf_num(b) != 0) {
        add(c, "shapes", QC_CHECK_ERROR, m->name, "out_features N = %d is not a multiple of %d (vLLM's gptq "
            "create_weights raises for %d-bit)", m->N, pf_num(b), b);
        return;
    }
    if (find2(c, m->name, "weight"))
        add(c, "tensors", QC_CHECK_ERROR, m->name, "has both weight and qweight: loaders report one of them unexpected");
    check_bias(c, m);
    m->ok = true;
    if (tg) check_gidx(c, m, tg, G, gs_eff, n_trivial_act);
    else if (m->desc_act)
        add(c, "gidx-desc-act", QC_CHECK_ERROR, m->name, "desc_act=true but no g_idx: loaders cannot place the "
            "act-order groups");
    else
        add(c, "gidx-desc-act", QC_CHECK_WARNING, m->name, "no g_idx: GPTQModel and vLLM register one (it stays at "
            "its initial value); AutoGPTQ warns");
    if (m->sym && c->sym_set) check_sym_zeros(c, m, tz, G);
}

static void check_awq_module(chk *c, module *m) {
    const qc_tensor *tw = find2(c, m->name, "qweight"), *tz = find2(c, m->name, "qzeros");
    const qc_tensor *ts = find2(c, m->name, "scales"), *tg = find2(c, m->name, "g_idx");
    if (!shape2(tw, QC_DTYPE_I32, false) || tw->shape[0] > INT32_MAX || tw->shape[1] > INT32_MAX / 8) {
        add(c, "shapes", QC_CHECK_ERROR, tw->name, "must be a 2-D I32 tensor [K, N/8] (it is %s, %d-D)",
            qc_dtype_name(tw->dtype), tw->ndim);
        return;
    }
    if (tg)
        add(c, "tensors", QC_CHECK_ERROR, tg->name, "the AWQ GEMM layout has no g_idx (AutoAWQ's strict load reports "
            "it unexpected; is this a GPTQ module?)");
    if (!tz || !ts) {
        add(c, "shapes", QC_CHECK_ERROR, m->name, "has a qweight but no %s", !tz ? "qzeros" : "scales");
        return;
    }
    m->K = (int)tw->shape[0];
    m->N = (int)tw->shape[1] * 8;
    if (!shape2(ts, 0, true) || !shape2(tz, QC_DTYPE_I32, false)) {
        add(c, "shapes", QC_CHECK_ERROR, m->name, "qzeros must be 2-D I32 and scales 2-D floating");
        return;
    }
    if (ts->shape[1] != m->N) {
        add(c, "config-bits", QC_CHECK_ERROR, ts->name, "has %" PRId64 " columns but qweight packs %d (8 4-bit codes "
            "per word along N): the tensors do not hold 4-bit AWQ GEMM codes", ts->shape[1], m->N);
        return;
    }
    if (tz->shape[1] * 8 != m->N || tz->shape[0] != ts->shape[0]) {
        add(c, "shapes", QC_CHECK_ERROR, tz->name, "must be I32 [%" PRId64 ", %d] (it is [%" PRId64 ", %" PRId64 "])",
            ts->shape[0], m->N / 8, tz->shape[0], tz->shape[1]);
        return;
    }
    if (ts->dtype != QC_DTYPE_F16)
        add(c, "shapes", QC_CHECK_WARNING, ts->name, "is %s: AWQ kernels run in fp16 (loaders convert)",
            qc_dtype_name(ts->dtype));
    const int64_t G = ts->shape[0];
    if (m->gs < 1) return;
    if (m->K % m->gs != 0 || G != m->K / m->gs) {
        add(c, "config-group", QC_CHECK_ERROR, m->name, "scales has %" PRId64 " group row(s) for K = %d, but the "
            "config says group_size = %d%s", G, m->K, m->gs, m->K % m->gs ? " (K is not a multiple of it)" : "");
        return;
    }
    if (find2(c, m->name, "weight"))
        add(c, "tensors", QC_CHECK_ERROR, m->name, "has both weight and qweight: loaders report one of them unexpected");
    check_bias(c, m);
    m->ok = true;
}

/* q/k/v/o and gate/up/down of a Llama-family block against config.json's sizes (what the loaders allocate). */
static void check_dims(chk *c, const module *m) {
    if (!m->ok || !m->rel || c->hidden <= 0) return;
    const int64_t d = c->hidden, qd = (int64_t)c->heads * c->head_dim, kvd = (int64_t)c->kv_heads * c->head_dim;
    const int64_t ff = c->inter;
    static const char *const rels[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    const int64_t N[] = {qd, kvd, kvd, d, ff, ff, d}, K[] = {d, d, d, qd, d, d, ff};
    for (int i = 0; i < 7; i++)
        if (strcmp(m->rel, rels[i]) == 0 && N[i] > 0 && K[i] > 0 && (m->N != N[i] || m->K != K[i]))
            add(c, "shapes", QC_CHECK_ERROR, m->name, "holds a [%d out, %d in] linear%s, config.json makes it [%" PRId64
                ", %" PRId64 "]: "
                "the loader's shapes do not match", m->N, m->K, m->quantized ? " (from qweight and the bits)" : "", N[i],
                K[i]);
}

/* ---- declarations of kept linears ---- */

/* GPTQ. optimum (convert_model) and vLLM (is_layer_gptq_quantized) quantize a module when any
 * modules_in_block_to_quantize entry is a substring of its name; GPTQModel ignores that list and builds
 * every linear of its module tree as quantized unless a `dynamic` "-:" rule matches (loader_check.py). */
static void declare_gptq(chk *c) {
    size_t undeclared = 0;
    const char *first = NULL;
    for (size_t i = 0; i < c->n_mods; i++) {
        module *m = &c->mods[i];
        if (!m->rel) continue;
        const bool gm_skip = m->dyn >= 0 && c->dyn[m->dyn].negative;
        const bool listed = any_substr(c->mib, c->n_mib, m->name);
        if (m->quantized) {
            if (gm_skip)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "holds qweight but the `dynamic` rule \"%s\" skips it: "
                    "GPTQModel and vLLM build a float Linear and do not read its codes", c->dyn[m->dyn].key);
            if (c->mib_present && !listed)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "holds qweight but no modules_in_block_to_quantize "
                    "entry is a substring of its name: optimum and vLLM build it as a float Linear");
        } else {
            if (!gm_skip)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "kept in F16 but %s: GPTQModel would build it as a "
                    "quantized module with zero buffers (it ignores modules_in_block_to_quantize); declare it with "
                    "\"-:^<escaped path>$\": {}", m->dyn >= 0 ? "the first matching `dynamic` rule is not \"-:\""
                                                              : "no `dynamic` \"-:\" rule matches it");
            if (c->mib_present && listed)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "kept in F16 but a modules_in_block_to_quantize entry "
                    "matches it (substring): optimum and vLLM would build it as a quantized module with no tensors");
            if (!c->mib_present && !undeclared++) first = m->name;
        }
    }
    if (undeclared)
        add(c, "declared-f16", QC_CHECK_ERROR, "modules_in_block_to_quantize", "absent, but %zu in-block linear(s) are "
            "kept in F16 (e.g. %s): optimum wraps every linear of a block as quantized unless the list leaves it out",
            undeclared, first);
}

/* AWQ. AutoAWQ (_load_quantized_modules -> exclude_layers_to_not_quantize) skips a block's linear when any
 * modules_to_not_convert entry is a substring of its block-relative name; vLLM (is_layer_skipped, substring
 * of the full path, per shard of a fused layer); GPTQModel reads `dynamic` "-:" rules. */
static void declare_awq(chk *c) {
    for (size_t i = 0; i < c->n_mods; i++) {
        module *m = &c->mods[i];
        if (!m->rel) continue;
        const bool aw = c->mtnc_present && any_substr(c->mtnc, c->n_mtnc, m->rel);
        const bool vl = any_substr(c->mtnc, c->n_mtnc, m->name);
        const bool gm = m->dyn >= 0 && c->dyn[m->dyn].negative;
        if (m->quantized && (aw || vl || gm))
            add(c, "declared-f16", QC_CHECK_ERROR, m->name, "holds qweight but %s skip%s it: %s build%s a float Linear "
                "and do%s not read its codes",
                aw && vl ? "modules_to_not_convert entries" : aw || vl ? "a modules_to_not_convert entry" : "a `dynamic` "
                "\"-:\" rule", aw && vl ? "" : "s",
                aw && vl ? "AutoAWQ and vLLM" : aw ? "AutoAWQ (block-relative substring)" : vl ? "vLLM (substring of the "
                "path)" : "GPTQModel", (aw && vl) ? "" : "s", (aw && vl) ? "" : "es");
        if (!m->quantized) {
            if (!aw)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "kept in F16 but no modules_to_not_convert entry is a "
                    "substring of its block-relative name \"%s\": AutoAWQ would build it as a WQLinear_GEMM with zero "
                    "buffers", m->rel);
            if (!vl)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "kept in F16 but no modules_to_not_convert entry is a "
                    "substring of its path: vLLM would build it as an AWQ layer with no tensors");
            if (!gm)
                add(c, "declared-f16", QC_CHECK_ERROR, m->name, "kept in F16 but no `dynamic` \"-:\" rule matches it "
                    "first: GPTQModel (which newer transformers use for AWQ) would build it as a quantized module with "
                    "zero buffers");
        }
    }
}

/* ---- fused groups, routers ---- */

typedef struct {
    char   key[512];   /* vLLM's fused name (…qkv_proj, …gate_up_proj, …w13) or the experts' parent (…experts) */
    bool   experts;
    size_t mod;
} group_ent;

static int cmp_group(const void *a, const void *b) {
    int r = strcmp(((const group_ent *)a)->key, ((const group_ent *)b)->key);
    return r ? r : (((const group_ent *)a)->mod > ((const group_ent *)b)->mod) - (((const group_ent *)a)->mod < ((const group_ent *)b)->mod);
}

static bool group_key(const module *m, group_ent *g) {
    const char *e = strstr(m->name, ".experts.");
    if (e) {
        const char *d = e + 9;
        while (*d >= '0' && *d <= '9') d++;
        if (d > e + 9 && *d == '.') {
            g->experts = true;
            return (size_t)snprintf(g->key, sizeof g->key, "%.*s", (int)(e + 8 - m->name), m->name) < sizeof g->key;
        }
    }
    static const char *const qkv[] = {"q_proj", "k_proj", "v_proj", NULL}, *const gu[] = {"gate_proj", "up_proj", NULL};
    static const char *const w13[] = {"w1", "w3", NULL};
    const char *last = last_comp(m->name), *fused = is_one_of(last, qkv) ? "qkv_proj" : is_one_of(last, gu) ?
                       "gate_up_proj" : is_one_of(last, w13) ? "w13" : NULL;
    if (!fused) return false;
    g->experts = false;
    return (size_t)snprintf(g->key, sizeof g->key, "%.*s%s", (int)(last - m->name), m->name, fused) < sizeof g->key;
}

static void check_groups(chk *c) {
    group_ent *g = qc_calloc(c->n_mods ? c->n_mods : 1, sizeof *g);
    if (!g) {
        c->oom = true;
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->n_mods; i++) {
        const module *m = &c->mods[i];
        if (m->quantized && m->rel && is_one_of(last_comp(m->name), k_router))
            add(c, "router", QC_CHECK_ERROR, m->name, "a MoE router gate is quantized: loaders build routers as plain "
                "(or replicated) float linears and cannot read qweight for them (vLLM #22017); keep it in F16");
        if (m->rel && group_key(m, &g[n])) g[n++].mod = i;
    }
    qsort(g, n, sizeof *g, cmp_group);
    for (size_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && strcmp(g[a].key, g[b].key) == 0; b++) {}
        const module *m0 = &c->mods[g[a].mod];
        for (size_t i = a + 1; i < b; i++) {
            const module *m = &c->mods[g[i].mod];
            if (m->quantized != m0->quantized)
                add(c, "fused-bits", QC_CHECK_ERROR, g[a].key, "%s is %s but %s is %s: vLLM loads %s as one layer and "
                    "refuses mixed precision inside it (\"Detected some but not all shards ... are quantized\")",
                    m0->name, m0->quantized ? "quantized" : "F16", m->name, m->quantized ? "quantized" : "F16",
                    g[a].experts ? "the experts of a layer" : "them");
            else if (m->quantized && (m->bits != m0->bits || m->gs != m0->gs))
                add(c, "fused-bits", QC_CHECK_ERROR, g[a].key, "%s has w%d g%d but %s has w%d g%d: vLLM loads them as "
                    "one layer with one quantization", m0->name, m0->bits, m0->gs, m->name, m->bits, m->gs);
            else
                continue;
            break;
        }
        /* vLLM and SGLang versions whose AWQ skip test is is_layer_skipped_awq (a substring of the fused
         * prefix, not of each shard) need the fused name itself for a group kept in F16 */
        if (c->method == M_AWQ && !g[a].experts && !m0->quantized && strcmp(last_comp(g[a].key), "w13") != 0) {
            bool all_kept = true;
            for (size_t i = a; i < b; i++) all_kept &= !c->mods[g[i].mod].quantized;
            if (all_kept && !any_substr(c->mtnc, c->n_mtnc, g[a].key))
                add(c, "declared-f16", QC_CHECK_WARNING, g[a].key, "kept in F16 but no modules_to_not_convert entry "
                    "is a substring of this fused name: vLLM versions that match it per shard skip the layer, older "
                    "vLLM and SGLang (is_layer_skipped_awq on the fused prefix) build it as an AWQ layer with no "
                    "tensors; adding \"%s\" to the list is harmless for AutoAWQ and transformers",
                    qc_ckpt_block_rel(g[a].key) ? qc_ckpt_block_rel(g[a].key) : g[a].key);
        }
        /* vLLM asks `dynamic` about the fused name of a quantized q/k/v or gate/up group */
        if (c->method == M_GPTQ && !g[a].experts && m0->quantized && dyn_skips(c, g[a].key))
            add(c, "declared-f16", QC_CHECK_ERROR, g[a].key, "the shards are quantized but a `dynamic` \"-:\" rule "
                "matches vLLM's fused name: vLLM builds it as a float layer");
    }
    free(g);
}

/* ---- vLLM kernels and tensor parallelism ---- */

/* vLLM gptq_marlin.is_gptq_marlin_compatible (TYPE_MAP {(4,True),(8,True)}, MARLIN_SUPPORTED_GROUP_SIZES) and
 * awq_marlin.is_awq_marlin_compatible (uint4 with zero points); per layer verify_marlin_supports_shape. */
static bool marlin_config_ok(const chk *c, const module *m) {
    if (c->method == M_GPTQ) return (m->bits == 4 || m->bits == 8) && m->sym && c->sym_set && marlin_group_ok(m->gs);
    return m->bits == 4 && c->zero_point && marlin_group_ok(m->gs);
}

typedef struct {
    int  n;
    char first[200];
} tally;

static void note_fail(tally *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_fail(tally *t, const char *fmt, ...) {
    if (t->n++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->first, sizeof t->first, fmt, ap);
        va_end(ap);
    }
}

static void check_tp(chk *c) {
    bool any_q = false, cfg_marlin = true, row_act = false;
    for (size_t i = 0; i < c->n_mods; i++) {
        const module *m = &c->mods[i];
        if (!m->quantized || !m->ok) continue;
        any_q = true;
        cfg_marlin &= marlin_config_ok(c, m);
        row_act |= m->desc_act && m->gs != -1 && is_one_of(last_comp(m->name), k_row);
    }
    const char *kern = c->method == M_AWQ ? "awq_marlin" : "gptq_marlin";
    if (any_q && !cfg_marlin) {
        if (c->method == M_GPTQ)
            add(c, "marlin", QC_CHECK_WARNING, "quantization_config", "not %s-eligible (it needs sym=true, bits 4 or 8, "
                "group_size -1/32/64/128; this is w%d g%d %s): vLLM runs the slower gptq (exllama) kernel", kern,
                c->bits, c->gs, !c->sym_set ? "sym unset" : c->sym ? "sym" : "asym");
        else
            add(c, "marlin", QC_CHECK_WARNING, "quantization_config", "not %s-eligible (it needs bits 4, zero_point and "
                "group_size -1/32/64/128; this is w%d g%d): vLLM runs the slower awq kernel", kern, c->bits, c->gs);
    } else if (any_q) {
        add(c, "marlin", QC_CHECK_NOTE, "quantization_config", "%s-eligible: vLLM picks it on GPUs of compute "
            "capability >= 8.0 (Ampere and newer); older GPUs run the %s kernel", kern,
            c->method == M_AWQ ? "awq" : "gptq");
    }
    tally marlin_tp1 = {0};
    char more[160] = "";
    size_t more_n = 0;
    for (int ti = 0; ti < QC_CHECK_N_TP; ti++) {
        const int tp = k_tp[ti];
        tally f = {0}, mf = {0};
        if (c->heads > 0 && c->heads % tp)
            note_fail(&f, "num_attention_heads %d is not divisible by %d", c->heads, tp);
        if (c->kv_heads > 0 && (c->kv_heads >= tp ? c->kv_heads % tp : tp % c->kv_heads))
            note_fail(&f, "num_key_value_heads %d does not split over %d ranks", c->kv_heads, tp);
        for (size_t i = 0; i < c->n_mods; i++) {
            const module *m = &c->mods[i];
            if (!m->ok) continue;
            const char *last = last_comp(m->name);
            const bool col = is_one_of(last, k_column), row = is_one_of(last, k_row);
            if (!col && !row) continue;   /* routers and others are replicated */
            const int whole = col ? m->N : m->K;
            if (whole % tp) {
                note_fail(&f, "%s: %s = %d %% %d != 0", m->name, col ? "N" : "K", whole, tp);
                continue;
            }
            if (!m->quantized) continue;
            const int Nr = col ? m->N / tp : m->N, Kr = row ? m->K / tp : m->K;
            if (c->method == M_GPTQ) {   /* gptq.py create_weights: N_rank % pack_factor.numerator, K_rank % gs */
                if (col && Nr % pf_num(m->bits))
                    note_fail(&f, "%s: N/%d = %d is not a multiple of %d", m->name, tp, Nr, pf_num(m->bits));
                else if (row && m->gs > 0 && Kr % m->gs)
                    note_fail(&f, "%s: K/%d = %d is not a multiple of group_size %d", m->name, tp, Kr, m->gs);
                else if (row && Kr % pf_num(m->bits))   /* qweight rows pack pf_num codes into whole words */
                    note_fail(&f, "%s: K/%d = %d is not a multiple of %d (qweight rows)", m->name, tp, Kr,
                              pf_num(m->bits));
            } else {                     /* awq.py create_weights: N_rank % 8, K_rank % gs */
                if (col && Nr % 8) note_fail(&f, "%s: N/%d = %d is not a multiple of 8", m->name, tp, Nr);
                else if (row && m->gs > 0 && Kr % m->gs)
                    note_fail(&f, "%s: K/%d = %d is not a multiple of group_size %d", m->name, tp, Kr, m->gs);
            }
            if (cfg_marlin && (Nr % 64 || Kr % 128))
                note_fail(&mf, "%s: %s = %d is not a multiple of %d", m->name, Nr % 64 ? "N per rank" : "K per rank",
                          Nr % 64 ? Nr : Kr, Nr % 64 ? 64 : 128);
        }
        qc_check_tp *t = &c->r->tp[ti];
        t->tp = tp;
        t->n_fail = f.n;
        t->n_marlin_fail = cfg_marlin && any_q ? mf.n : -1;
        snprintf(t->first, sizeof t->first, "%s", f.n ? f.first : mf.first);
        char subj[16];
        snprintf(subj, sizeof subj, "tp=%d", tp);
        if (tp > 1 && f.n)
            add(c, "tp-split", QC_CHECK_WARNING, subj, "%d layer(s) or head count(s) do not split as vLLM needs (e.g. "
                "%s): --tensor-parallel-size %d is refused", f.n, f.first, tp);
        if (tp == 1) marlin_tp1 = mf;
        else if (mf.n > marlin_tp1.n && f.n == 0) {
            size_t l = strlen(more);
            snprintf(more + l, sizeof more - l, "%s tp=%d: %d", more_n++ ? "," : "", tp, mf.n);
        }
        if (tp > 1 && c->kv_heads > 0 && tp > c->kv_heads && tp % c->kv_heads == 0)
            add(c, "tp-split", QC_CHECK_NOTE, subj, "%d KV heads over %d ranks: vLLM replicates each KV head on %d "
                "ranks (more KV-cache memory per token)", c->kv_heads, tp, tp / c->kv_heads);
    }
    if (marlin_tp1.n)
        add(c, "marlin", QC_CHECK_WARNING, "tp=1", "%d quantized layer(s) do not fit Marlin's shape rules (N %% 64, "
            "K %% 128; e.g. %s): vLLM runs them on another kernel (older vLLM refuses the model; --quantization %s "
            "then loads it)", marlin_tp1.n, marlin_tp1.first, c->method == M_AWQ ? "awq" : "gptq");
    if (more_n)
        add(c, "marlin", QC_CHECK_WARNING, "tp>1", "more layers miss Marlin's per-rank shape rules under tensor "
            "parallelism (%s), and run on a slower kernel there", more);
    if (row_act)
        add(c, "tp-split", QC_CHECK_NOTE, "tp>1", "act-order (desc_act) with groups: row-parallel layers (o_proj, "
            "down_proj) need the whole g_idx on every rank; vLLM's gptq kernel loses its exllama fast path there, "
            "TGI drops g_idx for tp > 1 (spec F.4)");
}

/* ---- lm_head, tokenizer ---- */

static void check_lm_head(chk *c) {
    const bool w = qc_weights_find(c->w, "lm_head.weight"), q = qc_weights_find(c->w, "lm_head.qweight");
    if (c->config && c->tie && (w || q))
        add(c, "lm-head", QC_CHECK_ERROR, w ? "lm_head.weight" : "lm_head.qweight", "tie_word_embeddings is true but "
            "the checkpoint stores lm_head: SGLang fails (KeyError, #2935) and transformers drops or mis-ties it");
    if (c->config && c->tie_set && !c->tie && !w && !q)
        add(c, "lm-head", QC_CHECK_ERROR, "lm_head.weight", "tie_word_embeddings is false but there is no lm_head: "
            "loaders fail or leave it random");
    if (q && (c->method != M_GPTQ || !c->lm_head_q))
        add(c, "lm-head", QC_CHECK_ERROR, "lm_head.qweight", "lm_head is quantized but the config does not say "
            "\"lm_head\": true%s: loaders build a float lm_head and find no weight", c->method == M_AWQ ? " (and AWQ "
            "loaders never quantize it)" : "");
    if (!q && c->method == M_GPTQ && c->lm_head_q)
        add(c, "lm-head", QC_CHECK_ERROR, "lm_head", "the config says \"lm_head\": true but lm_head is not quantized: "
            "vLLM and GPTQModel build a quantized lm_head and find no qweight");
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].quantized && !c->mods[i].rel && strcmp(c->mods[i].name, "lm_head") != 0)
            add(c, "tensors", QC_CHECK_ERROR, c->mods[i].name, "quantized outside the decoder blocks: loaders quantize "
                "only block linears (and lm_head when declared), so they read it as a float module");
}

static void check_tokenizer(chk *c) {
    static const char *const files[] = {"tokenizer.json", "tokenizer.model", "vocab.json", NULL};
    for (const char *const *f = files; *f; f++) {
        char *p = qc_path_join(c->dir, *f);
        bool ok = p && qc_file_exists(p);
        if (!p) c->oom = true;
        free(p);
        if (ok) return;
    }
    add(c, "tokenizer", QC_CHECK_WARNING, "tokenizer.json", "no tokenizer (tokenizer.json, tokenizer.model or "
        "vocab.json): serving needs one, copy it from the original model");
}

/* ---- finite ---- */

/* Index of the first of the n elements at p (dtype dt) whose exponent bits are all ones (inf or NaN), -1 when
 * none; *nan says which. Chunks are reduced without branches so the common all-finite case streams at memory
 * speed. */
static int64_t first_nonfinite(const unsigned char *p, size_t n, qc_dtype dt, bool *nan) {
    const size_t es = qc_dtype_size(dt), chunk = 4096;
    const uint64_t e = dt == QC_DTYPE_F16 ? 0x7c00u : dt == QC_DTYPE_BF16 ? 0x7f80u : es == 4 ? 0x7f800000u
                                                                                          : 0x7ff0000000000000ull;
    for (size_t base = 0; base < n; base += chunk) {
        const size_t end = base + chunk < n ? base + chunk : n;
        unsigned bad = 0;
        if (es == 2) {
            const uint16_t m = (uint16_t)e;
            for (size_t i = base; i < end; i++) {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                bad |= (h & m) == m;
            }
        } else if (es == 4) {
            for (size_t i = base; i < end; i++) {
                uint32_t u;
                memcpy(&u, p + 4 * i, 4);
                bad |= (u & 0x7f800000u) == 0x7f800000u;
            }
        } else {
            for (size_t i = base; i < end; i++) {
                uint64_t u;
                memcpy(&u, p + 8 * i, 8);
                bad |= (u & e) == e;
            }
        }
        if (!bad) continue;
        for (size_t i = base; i < end; i++) {
            uint64_t u = 0;
            memcpy(&u, p + es * i, es);   /* little-endian host: the low bytes */
            if ((u & e) == e) {
                *nan = (u & ((e | (e - 1)) & ~e)) != 0;   /* mantissa bits: the ones below the exponent */
                return (int64_t)i;
            }
        }
    }
    return -1;
}

static void check_finite(chk *c) {
    const size_t span = (size_t)32 << 20;   /* bytes scanned before their pages are dropped */
    for (size_t i = 0; i < qc_weights_count(c->w); i++) {
        const qc_tensor *t = qc_weights_get(c->w, i);
        if (!is_float(t->dtype) || !t->data) continue;
        const size_t es = qc_dtype_size(t->dtype), per = span / es, n = (size_t)t->numel;
        const unsigned char *p = t->data;
        bool nan = false;
        int64_t at = -1;
        for (size_t first = 0; first < n && at < 0; first += per) {
            const size_t cnt = n - first < per ? n - first : per;
            int64_t j = first_nonfinite(p + first * es, cnt, t->dtype, &nan);
            if (j >= 0) at = (int64_t)first + j;
            qc_mmap_drop_pages(p + first * es, cnt * es);   /* the resident set stays ~span on any model */
        }
        c->r->bytes_scanned += t->nbytes;
        if (at < 0) continue;
        char where[96];
        if (t->ndim == 2)
            snprintf(where, sizeof where, "[%" PRId64 "][%" PRId64 "]", at / t->shape[1], at % t->shape[1]);
        else
            snprintf(where, sizeof where, "%" PRId64, at);
        add(c, "finite", QC_CHECK_ERROR, t->name, "element %s is %s: every output that uses it becomes NaN/inf",
            where, nan ? "NaN" : "infinite");
    }
}

/* ---- driver ---- */

/* Errors first, then warnings, then notes, each in check order. */
static bool order_findings(qc_check_report *r) {
    qc_check_finding *s = qc_malloc(r->n_findings * sizeof *s);
    if (!s) return false;
    size_t k = 0;
    for (int lvl = QC_CHECK_ERROR; lvl >= QC_CHECK_NOTE; lvl--)
        for (size_t i = 0; i < r->n_findings; i++)
            if ((int)r->findings[i].level == lvl) s[k++] = r->findings[i];
    free(r->findings);
    r->findings = s;
    return true;
}

qc_status qc_check_dir(const char *dir, qc_check_report *out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_check_dir: no report");
    memset(out, 0, sizeof *out);
    if (!dir || !qc_dir_exists(dir)) return qc_fail(QC_ERR_ARG, "%s: not a directory", dir ? dir : "(null)");
    chk c = {.dir = dir, .r = out};
    load_config(&c);
    if (!c.oom) check_shards(&c);
    if (c.w && !c.oom) {
        inventory(&c);
        int n_trivial_act = 0;
        for (size_t i = 0; i < c.n_mods && !c.oom && c.method != M_NONE; i++) {
            module *m = &c.mods[i];
            if (m->quantized) {
                if (c.method == M_GPTQ) check_gptq_module(&c, m, &n_trivial_act);
                else check_awq_module(&c, m);
            }
            check_dims(&c, m);
        }
        if (n_trivial_act)
            add(&c, "gidx-desc-act", QC_CHECK_NOTE, "desc_act", "desc_act=true but %d module(s) have the trivial g_idx "
                "k / group_size: loaders take the act-order path for nothing; desc_act=false would keep the fast "
                "kernels (spec A.4, static groups)", n_trivial_act);
        if (c.method == M_GPTQ && c.desc_act && c.gs == -1)
            add(&c, "gidx-desc-act", QC_CHECK_NOTE, "desc_act", "desc_act=true with group_size -1: there is one group, "
                "vLLM's gptq_marlin treats it as desc_act=false");
        if (c.method == M_GPTQ) declare_gptq(&c);
        else if (c.method == M_AWQ) declare_awq(&c);
        if (c.method != M_NONE) {
            check_groups(&c);
            check_tp(&c);
            check_lm_head(&c);
        }
        if (!c.oom) check_finite(&c);
    }
    if (!c.oom) check_tokenizer(&c);
    for (size_t i = 0; i < c.n_mods; i++) free(c.mods[i].name);
    free(c.mods);
    for (size_t i = 0; i < c.n_dyn; i++) {
        pcre2_code_free(c.dyn[i].re);
        free(c.dyn[i].literal);
    }
    free(c.dyn);
    free(c.lit);
    if (c.md) pcre2_match_data_free(c.md);
    free(c.mib);
    free(c.mtnc);
    qc_weights_free(c.w);
    cJSON_Delete(c.config);
    cJSON_Delete(c.side);
    if (c.oom || !order_findings(out)) {
        qc_check_report_free(out);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory while checking", dir);
    }
    return QC_OK;
}

/* ---- output ---- */

void qc_check_print_summary(const qc_check_report *r, FILE *f) {
    fprintf(f, "check: %d error(s), %d warning(s), %d note(s)\n", r->n_errors, r->n_warnings, r->n_notes);
}

void qc_check_print(const qc_check_report *r, FILE *f) {
    int sw = 7;
    for (size_t i = 0; i < r->n_findings; i++) {
        int l = (int)strlen(r->findings[i].subject);
        if (l > sw) sw = l < 48 ? l : 48;
    }
    if (r->format[0])
        fprintf(f, "checkpoint: %s, %d bits, group size %d; %d quantized linear(s), %d kept in F16; %zu tensors, "
                "%.1f MiB of floating data scanned\n", r->format, r->bits, r->group_size, r->n_quantized, r->n_kept,
                r->n_tensors, (double)r->bytes_scanned / 1048576.0);
    if (r->n_findings) {
        fprintf(f, "%-14s | %-7s | %-*s | %s\n", "rule", "level", sw, "subject", "finding");
        fprintf(f, "---------------+---------+-");
        for (int i = 0; i < sw; i++) fputc('-', f);
        fprintf(f, "-+--------\n");
    }
    /* at most QC_CHECK_PRINT_PER_RULE rows per (rule, level); the rules are few */
    enum { MAX_KEYS = 64 };
    typedef struct { const char *rule; qc_check_level level; size_t total, shown; } rule_count;
    rule_count key[MAX_KEYS];
    size_t n_keys = 0;
    for (size_t i = 0; i < r->n_findings; i++) {
        const qc_check_finding *x = &r->findings[i];
        size_t k = 0;
        while (k < n_keys && !(strcmp(key[k].rule, x->rule) == 0 && key[k].level == x->level)) k++;
        if (k == n_keys && n_keys < MAX_KEYS) key[n_keys++] = (rule_count){x->rule, x->level, 0, 0};
        if (k < n_keys) key[k].total++;
    }
    for (size_t i = 0; i < r->n_findings; i++) {
        const qc_check_finding *x = &r->findings[i];
        size_t k = 0;
        while (k < n_keys && !(strcmp(key[k].rule, x->rule) == 0 && key[k].level == x->level)) k++;
        if (k < n_keys && key[k].shown == QC_CHECK_PRINT_PER_RULE) {
            fprintf(f, "%-14s | %-7s | %-*s | ... and %zu more like this (--json lists all)\n", x->rule,
                    qc_check_level_name(x->level), sw, "", key[k].total - key[k].shown);
            key[k].shown++;
        }
        if (k < n_keys && key[k].shown++ >= QC_CHECK_PRINT_PER_RULE) continue;
        fprintf(f, "%-14s | %-7s | %-*s | %s\n", x->rule, qc_check_level_name(x->level), sw, x->subject, x->message);
    }
    if (r->tp[0].tp) {
        fprintf(f, "tensor parallel (vLLM): tp | splits | Marlin | first problem\n");
        for (int i = 0; i < QC_CHECK_N_TP; i++) {
            const qc_check_tp *t = &r->tp[i];
            char sp[32], mr[32];
            snprintf(sp, sizeof sp, t->n_fail ? "%d fail" : "ok", t->n_fail);
            if (t->n_marlin_fail < 0) snprintf(mr, sizeof mr, "n/a");
            else snprintf(mr, sizeof mr, t->n_marlin_fail ? "%d fall back" : "ok", t->n_marlin_fail);
            fprintf(f, "  %d | %-7s | %-11s | %s\n", t->tp, sp, mr, t->first[0] ? t->first : "-");
        }
    }
    qc_check_print_summary(r, f);
}

char *qc_check_json(const qc_check_report *r, const char *dir) {
    cJSON *o = cJSON_CreateObject(), *fs, *tps;
    bool ok = o && cJSON_AddStringToObject(o, "dir", dir ? dir : "") &&
              cJSON_AddStringToObject(o, "format", r->format) && cJSON_AddNumberToObject(o, "bits", r->bits) &&
              cJSON_AddNumberToObject(o, "group_size", r->group_size) &&
              cJSON_AddNumberToObject(o, "quantized", r->n_quantized) && cJSON_AddNumberToObject(o, "kept", r->n_kept) &&
              cJSON_AddNumberToObject(o, "errors", r->n_errors) && cJSON_AddNumberToObject(o, "warnings", r->n_warnings) &&
              cJSON_AddNumberToObject(o, "notes", r->n_notes) && (fs = cJSON_AddArrayToObject(o, "findings")) &&
              (tps = cJSON_AddArrayToObject(o, "tp"));
    for (size_t i = 0; ok && i < r->n_findings; i++) {
        const qc_check_finding *x = &r->findings[i];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(fs, e) && cJSON_AddStringToObject(e, "rule", x->rule) &&
             cJSON_AddStringToObject(e, "level", qc_check_level_name(x->level)) &&
             cJSON_AddStringToObject(e, "subject", x->subject) && cJSON_AddStringToObject(e, "message", x->message);
    }
    for (int i = 0; ok && r->tp[0].tp && i < QC_CHECK_N_TP; i++) {
        const qc_check_tp *t = &r->tp[i];
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(tps, e) && cJSON_AddNumberToObject(e, "tp", t->tp) &&
             cJSON_AddNumberToObject(e, "n_fail", t->n_fail) &&
             cJSON_AddNumberToObject(e, "n_marlin_fail", t->n_marlin_fail) &&
             cJSON_AddStringToObject(e, "first", t->first);
    }
    char *s = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    return s;
}

qc_status qc_check_after_write(const char *dir, FILE *f, int *n_errors) {
    qc_check_report r;
    qc_status st = qc_check_dir(dir, &r);
    if (st != QC_OK) return st;
    if (r.n_errors || r.n_warnings) qc_check_print(&r, f);
    else qc_check_print_summary(&r, f);
    if (n_errors) *n_errors = r.n_errors;
    qc_check_report_free(&r);
    return QC_OK;
}
