/*
 * tokenizer_pipeline.c - normalizers, pre-tokenizers and decoders of Hugging Face `tokenizers`,
 * parsed from tokenizer.json and applied to tk_pieces.
 *
 * Supported: normalizers Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, ByteLevel;
 * pre-tokenizers Sequence, Split, ByteLevel, Metaspace, Digits; decoders Sequence, Replace,
 * ByteFallback, Fuse, Strip, Metaspace, ByteLevel. Anything else is QC_ERR_UNSUPPORTED.
 */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* GPT-2's pre-tokenizer regex, as HF's ByteLevel pre-tokenizer uses it when use_regex is true. */
static const char TK_GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { TK_N_SEQ, TK_N_PREPEND, TK_N_REPLACE, TK_N_NFC, TK_N_NFD, TK_N_NFKC, TK_N_NFKD, TK_N_LOWER, TK_N_STRIP,
       TK_N_BYTELEVEL };
enum { TK_P_SEQ, TK_P_SPLIT, TK_P_BYTELEVEL, TK_P_METASPACE, TK_P_DIGITS };
enum { TK_D_SEQ, TK_D_REPLACE, TK_D_BYTEFALLBACK, TK_D_FUSE, TK_D_STRIP, TK_D_METASPACE, TK_D_BYTELEVEL };
/* SplitDelimiterBehavior */
enum { TK_B_REMOVED, TK_B_ISOLATED, TK_B_MERGED_PREV, TK_B_MERGED_NEXT, TK_B_CONTIGUOUS };
/* Metaspace PrependScheme */
enum { TK_PS_ALWAYS, TK_PS_FIRST, TK_PS_NEVER };

struct tk_norm {
    int kind;
    tk_norm **kids; size_t n_kids;
    char *str; size_t str_len;  /* Prepend text, Replace content */
    tk_pattern pat;             /* Replace */
    bool left, right;           /* Strip */
};

struct tk_pretok {
    int kind;
    tk_pretok **kids; size_t n_kids;
    tk_pattern pat;             /* Split; ByteLevel with use_regex */
    int behavior;
    bool invert;
    bool add_prefix_space, use_regex;        /* ByteLevel */
    char repl[4]; int repl_len; uint32_t repl_cp; int scheme; bool split; /* Metaspace */
    bool individual;            /* Digits */
};

struct tk_dec {
    int kind;
    tk_dec **kids; size_t n_kids;
    tk_pattern pat; char *str; size_t str_len; /* Replace */
    uint32_t strip_cp; size_t start, stop;     /* Strip */
    uint32_t repl_cp; int scheme;               /* Metaspace */
};

/* ---- JSON helpers ---- */
static const char *tk_type(const cJSON *j) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static bool tk_jbool(const cJSON *o, const char *k, bool dflt) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : dflt;
}

/* A JSON string holding exactly one character (Rust `char`). */
static qc_status tk_jchar(const cJSON *o, const char *k, const char *where, uint32_t dflt, uint32_t *cp) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!j) {
        *cp = dflt;
        return QC_OK;
    }
    if (cJSON_IsString(j)) {
        size_t l = strlen(j->valuestring);
        int n = tk_utf8_next((const unsigned char *)j->valuestring, l, cp);
        if (n > 0 && (size_t)n == l) return QC_OK;
    }
    return qc_fail(QC_ERR_FORMAT, "%s: \"%s\" must be a string of one character", where, k);
}

static qc_status tk_jsize(const cJSON *o, const char *k, const char *where, size_t *v) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    *v = 0;
    if (!j) return QC_OK;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble < 1e9))
        return qc_fail(QC_ERR_FORMAT, "%s: \"%s\" must be a non-negative integer", where, k);
    *v = (size_t)j->valuedouble;
    return QC_OK;
}

static qc_status tk_jstrdup(const cJSON *o, const char *k, const char *where, char **s, size_t *len) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(j)) return qc_fail(QC_ERR_FORMAT, "%s: \"%s\" must be a string", where, k);
    *s = qc_strdup(j->valuestring);
    if (!*s) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
    *len = strlen(*s);
    return QC_OK;
}

static qc_status tk_prepend_scheme(const cJSON *j, const char *where, int *scheme) {
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
    if (cJSON_IsString(ps)) {
        if (strcmp(ps->valuestring, "always") == 0) *scheme = TK_PS_ALWAYS;
        else if (strcmp(ps->valuestring, "first") == 0) *scheme = TK_PS_FIRST;
        else if (strcmp(ps->valuestring, "never") == 0) *scheme = TK_PS_NEVER;
        else return qc_fail(QC_ERR_FORMAT, "%s: unknown prepend_scheme '%s'", where, ps->valuestring);
    } else {
        *scheme = TK_PS_ALWAYS;
    }
    /* Older files: add_prefix_space false means "never". */
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
    if (cJSON_IsFalse(aps)) *scheme = TK_PS_NEVER;
    return QC_OK;
}

/* ---- normalizers ---- */
void tk_norm_free(tk_norm *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_kids; i++) tk_norm_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    tk_pattern_free(&n->pat);
    free(n);
}

qc_status tk_norm_parse(const cJSON *j, const char *path, int depth, tk_norm **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return QC_OK;
    if (depth > TK_MAX_DEPTH) return qc_fail(QC_ERR_FORMAT, "%s: normalizer nesting too deep", path);
    const char *t = tk_type(j);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: normalizer without \"type\"", path);
    tk_norm *n = calloc(1, sizeof *n);
    if (!n) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    qc_status st = QC_OK;
    char where[256];
    snprintf(where, sizeof where, "%s: normalizer %s", path, t);
    if (strcmp(t, "Sequence") == 0) {
        n->kind = TK_N_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(arr)) st = qc_fail(QC_ERR_FORMAT, "%s: \"normalizers\" must be an array", where);
        size_t cnt = st == QC_OK ? (size_t)cJSON_GetArraySize(arr) : 0;
        if (cnt && !(n->kids = calloc(cnt, sizeof *n->kids))) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
        for (const cJSON *e = st == QC_OK ? arr->child : NULL; e && st == QC_OK; e = e->next) {
            st = tk_norm_parse(e, path, depth + 1, &n->kids[n->n_kids]);
            if (st == QC_OK && n->kids[n->n_kids]) n->n_kids++;
        }
    } else if (strcmp(t, "Prepend") == 0) {
        n->kind = TK_N_PREPEND;
        st = tk_jstrdup(j, "prepend", where, &n->str, &n->str_len);
    } else if (strcmp(t, "Replace") == 0) {
        n->kind = TK_N_REPLACE;
        st = tk_pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), where, &n->pat);
        if (st == QC_OK) st = tk_jstrdup(j, "content", where, &n->str, &n->str_len);
    } else if (strcmp(t, "NFC") == 0) n->kind = TK_N_NFC;
    else if (strcmp(t, "NFD") == 0) n->kind = TK_N_NFD;
    else if (strcmp(t, "NFKC") == 0) n->kind = TK_N_NFKC;
    else if (strcmp(t, "NFKD") == 0) n->kind = TK_N_NFKD;
    else if (strcmp(t, "Lowercase") == 0) n->kind = TK_N_LOWER;
    else if (strcmp(t, "ByteLevel") == 0) n->kind = TK_N_BYTELEVEL;
    else if (strcmp(t, "Strip") == 0) {
        n->kind = TK_N_STRIP;
        n->left = tk_jbool(j, "strip_left", true);
        n->right = tk_jbool(j, "strip_right", true);
    } else {
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", path, t);
    }
    if (st != QC_OK) {
        tk_norm_free(n);
        return st;
    }
    *out = n;
    return QC_OK;
}

typedef struct { tk_buf *out; const char *s; const char *rep; size_t rep_len; } tk_repl_state;

static bool tk_repl_span(void *user, size_t a, size_t b, bool is_match) {
    tk_repl_state *r = user;
    return is_match ? tk_buf_put(r->out, r->rep, r->rep_len) : tk_buf_put(r->out, r->s + a, b - a);
}

/* Replaces every match of pat in s by rep (HF NormalizedString::replace and the Replace decoder). */
static qc_status tk_replace(const tk_pattern *pat, tk_ctx *c, const char *s, size_t n, const char *rep,
                            size_t rep_len, tk_buf *out) {
    tk_repl_state r = {out, s, rep, rep_len};
    return tk_pattern_spans(pat, c, s, n, tk_repl_span, &r);
}

static qc_status tk_norm_one(const tk_norm *nm, tk_ctx *c, const char *s, size_t n, tk_buf *out) {
    out->n = 0;
    bool ok = tk_buf_put(out, "", 0);
    switch (nm->kind) {
    case TK_N_PREPEND:
        if (n > 0) ok = ok && tk_buf_put(out, nm->str, nm->str_len);
        ok = ok && tk_buf_put(out, s, n);
        break;
    case TK_N_REPLACE: {
        qc_status st = tk_replace(&nm->pat, c, s, n, nm->str, nm->str_len, out);
        if (st != QC_OK) return st;
        break;
    }
    case TK_N_NFC: case TK_N_NFD: case TK_N_NFKC: case TK_N_NFKD: {
        if (n == 0) break;
        int opt = UTF8PROC_STABLE;
        if (nm->kind == TK_N_NFC || nm->kind == TK_N_NFKC) opt |= UTF8PROC_COMPOSE;
        else opt |= UTF8PROC_DECOMPOSE;
        if (nm->kind == TK_N_NFKC || nm->kind == TK_N_NFKD) opt |= UTF8PROC_COMPAT;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                          (utf8proc_option_t)opt);
        if (r < 0) return qc_fail(QC_ERR_FORMAT, "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(r));
        ok = ok && tk_buf_put(out, dst, (size_t)r);
        free(dst);
        break;
    }
    case TK_N_LOWER:
        for (size_t i = 0; i < n && ok;) {
            uint32_t cp;
            int l = tk_utf8_next((const unsigned char *)s + i, n - i, &cp);
            if (l <= 0) return qc_fail(QC_ERR_FORMAT, "tokenizer: invalid UTF-8 in normalizer input");
            char e[8];
            if (cp == 0x130) { /* the one unconditional multi-char lowercase mapping (SpecialCasing) */
                ok = tk_buf_put(out, "i\xCC\x87", 3);
            } else {
                int el = tk_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), e);
                ok = tk_buf_put(out, e, (size_t)el);
            }
            i += (size_t)l;
        }
        break;
    case TK_N_STRIP: {
        size_t a = 0, b = n;
        uint32_t cp;
        while (nm->left && a < b) {
            int l = tk_utf8_next((const unsigned char *)s + a, b - a, &cp);
            if (l <= 0 || !tk_is_white_space(cp)) break;
            a += (size_t)l;
        }
        while (nm->right && b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            int l = tk_utf8_next((const unsigned char *)s + k, b - k, &cp);
            if (l <= 0 || !tk_is_white_space(cp)) break;
            b = k;
        }
        ok = ok && tk_buf_put(out, s + a, b - a);
        break;
    }
    case TK_N_BYTELEVEL: {
        const tk_bytemap *bm = tk_bytemap_get();
        for (size_t i = 0; i < n && ok; i++)
            ok = tk_buf_put(out, bm->enc[(unsigned char)s[i]], bm->enc_len[(unsigned char)s[i]]);
        break;
    }
    default:
        QC_ASSERT(!"unexpected normalizer kind");
    }
    return ok ? QC_OK : qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory while normalizing");
}

qc_status tk_norm_apply(const tk_norm *nm, tk_ctx *c, const char *s, size_t n, tk_buf *out) {
    if (nm->kind != TK_N_SEQ) return tk_norm_one(nm, c, s, n, out);
    out->n = 0;
    if (!tk_buf_put(out, s, n)) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory while normalizing");
    tk_buf tmp = {0};
    for (size_t i = 0; i < nm->n_kids; i++) {
        qc_status st = tk_norm_apply(nm->kids[i], c, out->p, out->n, &tmp);
        if (st != QC_OK) {
            tk_buf_free(&tmp);
            return st;
        }
        tk_buf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    tk_buf_free(&tmp);
    return QC_OK;
}

/* ---- pre-tokenizers ---- */
void tk_pretok_free(tk_pretok *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_kids; i++) tk_pretok_free(p->kids[i]);
    free(p->kids);
    tk_pattern_free(&p->pat);
    free(p);
}

qc_status tk_pretok_parse(const cJSON *j, const char *path, int depth, tk_pretok **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return QC_OK;
    if (depth > TK_MAX_DEPTH) return qc_fail(QC_ERR_FORMAT, "%s: pre_tokenizer nesting too deep", path);
    const char *t = tk_type(j);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: pre_tokenizer without \"type\"", path);
    tk_pretok *p = calloc(1, sizeof *p);
    if (!p) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    qc_status st = QC_OK;
    char where[256];
    snprintf(where, sizeof where, "%s: pre_tokenizer %s", path, t);
    if (strcmp(t, "Sequence") == 0) {
        p->kind = TK_P_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) st = qc_fail(QC_ERR_FORMAT, "%s: \"pretokenizers\" must be an array", where);
        size_t cnt = st == QC_OK ? (size_t)cJSON_GetArraySize(arr) : 0;
        if (cnt && !(p->kids = calloc(cnt, sizeof *p->kids))) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
        for (const cJSON *e = st == QC_OK ? arr->child : NULL; e && st == QC_OK; e = e->next) {
            st = tk_pretok_parse(e, path, depth + 1, &p->kids[p->n_kids]);
            if (st == QC_OK && p->kids[p->n_kids]) p->n_kids++;
        }
    } else if (strcmp(t, "Split") == 0) {
        p->kind = TK_P_SPLIT;
        st = tk_pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), where, &p->pat);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "behavior");
        const char *bs = cJSON_IsString(b) ? b->valuestring : "";
        if (strcmp(bs, "Removed") == 0) p->behavior = TK_B_REMOVED;
        else if (strcmp(bs, "Isolated") == 0) p->behavior = TK_B_ISOLATED;
        else if (strcmp(bs, "MergedWithPrevious") == 0) p->behavior = TK_B_MERGED_PREV;
        else if (strcmp(bs, "MergedWithNext") == 0) p->behavior = TK_B_MERGED_NEXT;
        else if (strcmp(bs, "Contiguous") == 0) p->behavior = TK_B_CONTIGUOUS;
        else if (st == QC_OK) st = qc_fail(QC_ERR_FORMAT, "%s: unknown behavior '%s'", where, bs);
        p->invert = tk_jbool(j, "invert", false);
    } else if (strcmp(t, "ByteLevel") == 0) {
        p->kind = TK_P_BYTELEVEL;
        p->add_prefix_space = tk_jbool(j, "add_prefix_space", true);
        p->use_regex = tk_jbool(j, "use_regex", true);
        if (p->use_regex) st = tk_pattern_regex(TK_GPT2_REGEX, where, &p->pat);
    } else if (strcmp(t, "Metaspace") == 0) {
        p->kind = TK_P_METASPACE;
        st = tk_jchar(j, "replacement", where, 0x2581, &p->repl_cp);
        if (st == QC_OK) st = tk_prepend_scheme(j, where, &p->scheme);
        p->repl_len = tk_utf8_encode(p->repl_cp, p->repl);
        p->split = tk_jbool(j, "split", true);
    } else if (strcmp(t, "Digits") == 0) {
        p->kind = TK_P_DIGITS;
        p->individual = tk_jbool(j, "individual_digits", false);
    } else {
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", path, t);
    }
    if (st != QC_OK) {
        tk_pretok_free(p);
        return st;
    }
    *out = p;
    return QC_OK;
}

/* Spans (start, end, is_match) of one piece, before the split behavior is applied. */
typedef struct { size_t a, b; bool m; } tk_span;
typedef struct { tk_span *v; size_t n, cap; bool invert; } tk_spans;

static bool tk_spans_add(void *user, size_t a, size_t b, bool m) {
    tk_spans *s = user;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        tk_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (tk_span){a, b, s->invert ? !m : m};
    return true;
}

/* Spans of single characters that satisfy a predicate (HF's `impl Pattern for Fn(char) -> bool`). */
static bool tk_spans_chars(tk_spans *sp, const char *s, size_t n, bool (*pred)(uint32_t, const void *),
                           const void *arg) {
    if (n == 0) return tk_spans_add(sp, 0, 0, false);
    size_t last = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        int l = tk_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (l <= 0) l = 1, cp = 0xFFFD;
        if (pred(cp, arg)) {
            if (last < i && !tk_spans_add(sp, last, i, false)) return false;
            if (!tk_spans_add(sp, i, i + (size_t)l, true)) return false;
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    return last >= n || tk_spans_add(sp, last, n, false);
}

/* Applies a SplitDelimiterBehavior in place: the result keeps spans to emit (m = "removed"). */
static void tk_spans_behave(tk_spans *sp, int behavior) {
    tk_span *v = sp->v;
    size_t n = sp->n, k = 0;
    switch (behavior) {
    case TK_B_ISOLATED:
        for (size_t i = 0; i < n; i++) v[i].m = false;
        break;
    case TK_B_REMOVED:
        break;
    case TK_B_CONTIGUOUS: {
        bool have = false, prev = false;
        for (size_t i = 0; i < n; i++) {
            bool m = v[i].m;
            if (have && m == prev && k > 0) v[k - 1].b = v[i].b;
            else v[k++] = (tk_span){v[i].a, v[i].b, false};
            have = true;
            prev = m;
        }
        sp->n = k;
        break;
    }
    case TK_B_MERGED_PREV: {
        bool prev = false;
        for (size_t i = 0; i < n; i++) {
            bool m = v[i].m;
            if (m && !prev && k > 0) v[k - 1].b = v[i].b;
            else v[k++] = (tk_span){v[i].a, v[i].b, false};
            prev = m;
        }
        sp->n = k;
        break;
    }
    case TK_B_MERGED_NEXT: { /* HF folds from the right, then reverses */
        bool prev = false;
        size_t w = n; /* build from the end into v[w..n) */
        for (size_t i = n; i-- > 0;) {
            bool m = v[i].m;
            if (m && !prev && w < n) v[w].a = v[i].a;
            else v[--w] = (tk_span){v[i].a, v[i].b, false};
            prev = m;
        }
        memmove(v, v + w, (n - w) * sizeof *v);
        sp->n = n - w;
        break;
    }
    default:
        QC_ASSERT(!"unexpected split behavior");
    }
}

/* Emits the kept, non-empty spans of piece text s as pieces of out, mapped through the byte map
 * when `bytelevel`. */
static bool tk_emit_spans(const tk_spans *sp, const char *s, bool first, bool bytelevel, tk_pieces *out) {
    const tk_bytemap *bm = bytelevel ? tk_bytemap_get() : NULL;
    for (size_t i = 0; i < sp->n; i++) {
        const tk_span *x = &sp->v[i];
        if (x->m || x->b <= x->a) continue;
        if (!bm) {
            if (!tk_pieces_add_text(out, s + x->a, x->b - x->a, first && x->a == 0)) return false;
            continue;
        }
        size_t off = out->text.n;
        if (!tk_buf_reserve(&out->text, 2 * (x->b - x->a) + 1)) return false;
        for (size_t k = x->a; k < x->b; k++) {
            unsigned char ch = (unsigned char)s[k];
            memcpy(out->text.p + out->text.n, bm->enc[ch], bm->enc_len[ch]);
            out->text.n += bm->enc_len[ch];
        }
        out->text.p[out->text.n] = '\0';
        if (!tk_pieces_add(out, off, out->text.n - off, -1, first && x->a == 0)) return false;
    }
    return true;
}

static bool tk_pred_eq(uint32_t cp, const void *arg) { return cp == *(const uint32_t *)arg; }
static bool tk_pred_num(uint32_t cp, const void *arg) { (void)arg; return tk_is_numeric(cp); }

/* One pre-tokenizer (not Sequence) on one text piece. */
static qc_status tk_pretok_piece(const tk_pretok *p, tk_ctx *c, const char *s, size_t n, bool first,
                                 tk_spans *sp, tk_buf *tmp, tk_pieces *out) {
    sp->n = 0;
    sp->invert = false;
    qc_status st = QC_OK;
    bool ok = true, bytelevel = false;
    switch (p->kind) {
    case TK_P_SPLIT:
        sp->invert = p->invert;
        st = tk_pattern_spans(&p->pat, c, s, n, tk_spans_add, sp);
        if (st != QC_OK) return st;
        tk_spans_behave(sp, p->behavior);
        break;
    case TK_P_BYTELEVEL:
        if (p->add_prefix_space && !(n > 0 && s[0] == ' ')) {
            tmp->n = 0;
            if (!tk_buf_putc(tmp, ' ') || !tk_buf_put(tmp, s, n)) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
            s = tmp->p;
            n = tmp->n;
        }
        if (p->use_regex) {
            st = tk_pattern_spans(&p->pat, c, s, n, tk_spans_add, sp);
            if (st != QC_OK) return st;
            tk_spans_behave(sp, TK_B_ISOLATED);
        } else {
            ok = tk_spans_add(sp, 0, n, false);
        }
        bytelevel = true;
        break;
    case TK_P_METASPACE: {
        tmp->n = 0;
        for (size_t i = 0; i < n && ok; i++) ok = s[i] == ' ' ? tk_buf_put(tmp, p->repl, (size_t)p->repl_len)
                                                                : tk_buf_putc(tmp, s[i]);
        bool starts = tmp->n >= (size_t)p->repl_len && memcmp(tmp->p, p->repl, (size_t)p->repl_len) == 0;
        if (ok && !starts && (p->scheme == TK_PS_ALWAYS || (p->scheme == TK_PS_FIRST && first))) {
            ok = tk_buf_reserve(tmp, (size_t)p->repl_len + 1);
            if (ok) {
                memmove(tmp->p + p->repl_len, tmp->p, tmp->n);
                memcpy(tmp->p, p->repl, (size_t)p->repl_len);
                tmp->n += (size_t)p->repl_len;
                tmp->p[tmp->n] = '\0';
            }
        }
        if (!ok) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
        s = tmp->p;
        n = tmp->n;
        if (p->split) {
            ok = tk_spans_chars(sp, s, n, tk_pred_eq, &p->repl_cp);
            tk_spans_behave(sp, TK_B_MERGED_NEXT);
        } else {
            ok = tk_spans_add(sp, 0, n, false);
        }
        break;
    }
    case TK_P_DIGITS:
        ok = tk_spans_chars(sp, s, n, tk_pred_num, NULL);
        tk_spans_behave(sp, p->individual ? TK_B_ISOLATED : TK_B_CONTIGUOUS);
        break;
    default:
        QC_ASSERT(!"unexpected pre-tokenizer kind");
    }
    if (!ok || !tk_emit_spans(sp, s, first, bytelevel, out)) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    return QC_OK;
}

qc_status tk_pretok_apply(const tk_pretok *p, tk_ctx *c, tk_pieces *in, tk_pieces *out) {
    tk_pieces_reset(out);
    if (p->kind == TK_P_SEQ) {
        /* Each stage reads cur and writes nxt; both buffers go back to the caller at the end. */
        tk_pieces cur = *in, nxt = *out;
        qc_status st = QC_OK;
        for (size_t i = 0; i < p->n_kids && st == QC_OK; i++) {
            st = tk_pretok_apply(p->kids[i], c, &cur, &nxt);
            tk_pieces t = cur;
            cur = nxt;
            nxt = t;
        }
        *out = cur;
        *in = nxt;
        return st;
    }
    tk_spans sp = {0};
    tk_buf tmp = {0};
    qc_status st = QC_OK;
    for (size_t i = 0; i < in->n && st == QC_OK; i++) {
        const tk_piece *pc = &in->v[i];
        if (pc->id >= 0) {
            if (!tk_pieces_add(out, 0, 0, pc->id, pc->first)) st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
            continue;
        }
        st = tk_pretok_piece(p, c, in->text.p + pc->off, pc->len, pc->first, &sp, &tmp, out);
    }
    free(sp.v);
    tk_buf_free(&tmp);
    return st;
}

/* ---- decoders ---- */
void tk_dec_free(tk_dec *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_kids; i++) tk_dec_free(d->kids[i]);
    free(d->kids);
    free(d->str);
    tk_pattern_free(&d->pat);
    free(d);
}

qc_status tk_dec_parse(const cJSON *j, const char *path, int depth, tk_dec **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return QC_OK;
    if (depth > TK_MAX_DEPTH) return qc_fail(QC_ERR_FORMAT, "%s: decoder nesting too deep", path);
    const char *t = tk_type(j);
    if (!t) return qc_fail(QC_ERR_FORMAT, "%s: decoder without \"type\"", path);
    tk_dec *d = calloc(1, sizeof *d);
    if (!d) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    qc_status st = QC_OK;
    char where[256];
    snprintf(where, sizeof where, "%s: decoder %s", path, t);
    if (strcmp(t, "Sequence") == 0) {
        d->kind = TK_D_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(arr)) st = qc_fail(QC_ERR_FORMAT, "%s: \"decoders\" must be an array", where);
        size_t cnt = st == QC_OK ? (size_t)cJSON_GetArraySize(arr) : 0;
        if (cnt && !(d->kids = calloc(cnt, sizeof *d->kids))) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
        for (const cJSON *e = st == QC_OK ? arr->child : NULL; e && st == QC_OK; e = e->next) {
            st = tk_dec_parse(e, path, depth + 1, &d->kids[d->n_kids]);
            if (st == QC_OK && d->kids[d->n_kids]) d->n_kids++;
        }
    } else if (strcmp(t, "Replace") == 0) {
        d->kind = TK_D_REPLACE;
        st = tk_pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"), where, &d->pat);
        if (st == QC_OK) st = tk_jstrdup(j, "content", where, &d->str, &d->str_len);
    } else if (strcmp(t, "ByteFallback") == 0) d->kind = TK_D_BYTEFALLBACK;
    else if (strcmp(t, "Fuse") == 0) d->kind = TK_D_FUSE;
    else if (strcmp(t, "ByteLevel") == 0) d->kind = TK_D_BYTELEVEL;
    else if (strcmp(t, "Strip") == 0) {
        d->kind = TK_D_STRIP;
        st = tk_jchar(j, "content", where, ' ', &d->strip_cp);
        if (st == QC_OK) st = tk_jsize(j, "start", where, &d->start);
        if (st == QC_OK) st = tk_jsize(j, "stop", where, &d->stop);
    } else if (strcmp(t, "Metaspace") == 0) {
        d->kind = TK_D_METASPACE;
        st = tk_jchar(j, "replacement", where, 0x2581, &d->repl_cp);
        if (st == QC_OK) st = tk_prepend_scheme(j, where, &d->scheme);
    } else {
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", path, t);
    }
    if (st != QC_OK) {
        tk_dec_free(d);
        return st;
    }
    *out = d;
    return QC_OK;
}

/* "<0xNN>" -> byte (Rust u8::from_str_radix on the two characters, which also takes "+N"). */
static int tk_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d;
        if (i == 3 && ch == '+') continue;
        if (ch >= '0' && ch <= '9') d = ch - '0';
        else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return (s[3] == '+' && s[4] == '+') ? -1 : v;
}

static qc_status tk_dec_one(const tk_dec *d, tk_ctx *c, const tk_pieces *in, tk_pieces *out) {
    bool ok = true;
    tk_buf tmp = {0};
    qc_status st = QC_OK;
    switch (d->kind) {
    case TK_D_REPLACE:
        for (size_t i = 0; i < in->n && st == QC_OK; i++) {
            tmp.n = 0;
            st = tk_replace(&d->pat, c, in->text.p + in->v[i].off, in->v[i].len, d->str, d->str_len, &tmp);
            if (st == QC_OK) ok = tk_pieces_add_text(out, tmp.p ? tmp.p : "", tmp.n, false);
            if (!ok) break;
        }
        break;
    case TK_D_BYTEFALLBACK: {
        tk_buf bytes = {0};
        for (size_t i = 0; i <= in->n && ok; i++) {
            const char *s = i < in->n ? in->text.p + in->v[i].off : NULL;
            size_t n = i < in->n ? in->v[i].len : 0;
            int b = s ? tk_byte_token(s, n) : -1;
            if (b >= 0) {
                ok = tk_buf_putc(&bytes, (char)b);
                continue;
            }
            if (bytes.n) { /* flush: valid UTF-8 as one token, else one U+FFFD per byte */
                if (tk_utf8_validate(bytes.p, bytes.n) == bytes.n) {
                    ok = tk_pieces_add_text(out, bytes.p, bytes.n, false);
                } else {
                    for (size_t k = 0; k < bytes.n && ok; k++) ok = tk_pieces_add_text(out, "\xEF\xBF\xBD", 3, false);
                }
                bytes.n = 0;
            }
            if (s && ok) ok = tk_pieces_add_text(out, s, n, false);
        }
        tk_buf_free(&bytes);
        break;
    }
    case TK_D_FUSE:
        for (size_t i = 0; i < in->n && ok; i++) ok = tk_buf_put(&tmp, in->text.p + in->v[i].off, in->v[i].len);
        ok = ok && tk_pieces_add_text(out, tmp.p ? tmp.p : "", tmp.n, false);
        break;
    case TK_D_STRIP:
        for (size_t i = 0; i < in->n && ok; i++) {
            const char *s = in->text.p + in->v[i].off;
            size_t n = in->v[i].len, a = 0, b = n;
            uint32_t cp;
            for (size_t k = 0; k < d->start && a < b; k++) {
                int l = tk_utf8_next((const unsigned char *)s + a, b - a, &cp);
                if (l <= 0 || cp != d->strip_cp) break;
                a += (size_t)l;
            }
            for (size_t k = 0; k < d->stop && b > a; k++) {
                size_t q = b - 1;
                while (q > a && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                int l = tk_utf8_next((const unsigned char *)s + q, b - q, &cp);
                if (l <= 0 || cp != d->strip_cp) break;
                b = q;
            }
            ok = tk_pieces_add_text(out, s + a, b - a, false);
        }
        break;
    case TK_D_METASPACE:
        for (size_t i = 0; i < in->n && ok; i++) {
            const char *s = in->text.p + in->v[i].off;
            size_t n = in->v[i].len;
            tmp.n = 0;
            for (size_t k = 0; k < n && ok;) {
                uint32_t cp;
                int l = tk_utf8_next((const unsigned char *)s + k, n - k, &cp);
                if (l <= 0) l = 1, cp = 0;
                if (l > 0 && cp == d->repl_cp) {
                    /* in the first token every replacement char goes (HF), elsewhere it becomes ' ' */
                    if (!(i == 0 && d->scheme != TK_PS_NEVER)) ok = tk_buf_putc(&tmp, ' ');
                } else {
                    ok = tk_buf_put(&tmp, s + k, (size_t)l);
                }
                k += (size_t)l;
            }
            ok = ok && tk_pieces_add_text(out, tmp.p ? tmp.p : "", tmp.n, false);
        }
        break;
    case TK_D_BYTELEVEL: {
        const tk_bytemap *bm = tk_bytemap_get();
        tk_buf raw = {0};
        for (size_t i = 0; i < in->n && ok; i++) {
            const char *s = in->text.p + in->v[i].off;
            size_t n = in->v[i].len, mark = raw.n;
            bool all = true;
            for (size_t k = 0; k < n && ok;) {
                uint32_t cp;
                int l = tk_utf8_next((const unsigned char *)s + k, n - k, &cp);
                if (l <= 0 || cp >= 324 || bm->dec[cp] < 0) {
                    all = false;
                    break;
                }
                ok = tk_buf_putc(&raw, (char)bm->dec[cp]);
                k += (size_t)l;
            }
            if (ok && !all) { /* a token outside the byte alphabet passes through as its UTF-8 bytes */
                raw.n = mark;
                ok = tk_buf_put(&raw, s, n);
            }
        }
        ok = ok && tk_utf8_lossy(&tmp, raw.p ? raw.p : "", raw.n);
        ok = ok && tk_pieces_add_text(out, tmp.p ? tmp.p : "", tmp.n, false);
        tk_buf_free(&raw);
        break;
    }
    default:
        QC_ASSERT(!"unexpected decoder kind");
    }
    tk_buf_free(&tmp);
    if (st != QC_OK) return st;
    return ok ? QC_OK : qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory while decoding");
}

static qc_status tk_dec_chain(const tk_dec *d, tk_ctx *c, tk_pieces *toks, tk_pieces *spare) {
    /* Result ends in *toks. */
    if (d->kind == TK_D_SEQ) {
        for (size_t i = 0; i < d->n_kids; i++) {
            qc_status st = tk_dec_chain(d->kids[i], c, toks, spare);
            if (st != QC_OK) return st;
        }
        return QC_OK;
    }
    tk_pieces_reset(spare);
    qc_status st = tk_dec_one(d, c, toks, spare);
    if (st != QC_OK) return st;
    tk_pieces t = *toks;
    *toks = *spare;
    *spare = t;
    return QC_OK;
}

qc_status tk_dec_apply(const tk_dec *d, tk_ctx *c, tk_pieces *toks, tk_buf *out) {
    tk_pieces spare = {0};
    qc_status st = tk_dec_chain(d, c, toks, &spare);
    tk_pieces_free(&spare);
    if (st != QC_OK) return st;
    for (size_t i = 0; i < toks->n; i++)
        if (!tk_buf_put(out, toks->text.p + toks->v[i].off, toks->v[i].len))
            return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory while decoding");
    return QC_OK;
}
