/*
 * tokenizer_util.c - buffers, hash map, UTF-8, the GPT-2 byte map and regex patterns for the tokenizer.
 */
#include "tokenizer_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- buffers ---- */
bool tk_buf_reserve(tk_buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) return false;
    size_t need = b->n + extra;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (!tk_buf_reserve(b, n + 1)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0'; /* always NUL-terminated for the callers that hand strings out */
    return true;
}

void tk_buf_free(tk_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

bool tk_ids_append(tk_ids *a, const int32_t *v, size_t n) {
    if (n > (SIZE_MAX / sizeof(int32_t)) / 2 - a->n) return false;
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap < a->n + n) cap *= 2;
        int32_t *p = realloc(a->v, cap * sizeof *p);
        if (!p) return false;
        a->v = p;
        a->cap = cap;
    }
    if (n) memcpy(a->v + a->n, v, n * sizeof *v);
    a->n += n;
    return true;
}

bool tk_ids_push(tk_ids *a, int32_t id) { return tk_ids_append(a, &id, 1); }

bool tk_ids_append_self(tk_ids *a, size_t start, size_t count) {
    /* reserve first so the source cannot move under the copy */
    if (count > (SIZE_MAX / sizeof(int32_t)) / 2 - a->n) return false;
    if (a->n + count > a->cap) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap < a->n + count) cap *= 2;
        int32_t *p = realloc(a->v, cap * sizeof *p);
        if (!p) return false;
        a->v = p;
        a->cap = cap;
    }
    if (count) memcpy(a->v + a->n, a->v + start, count * sizeof *a->v);
    a->n += count;
    return true;
}

bool tk_pieces_add(tk_pieces *p, size_t off, size_t len, int32_t id, bool first) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        tk_piece *v = realloc(p->v, cap * sizeof *v);
        if (!v) return false;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (tk_piece){off, len, id, first};
    return true;
}

bool tk_pieces_add_text(tk_pieces *p, const char *s, size_t len, bool first) {
    size_t off = p->text.n;
    return tk_buf_put(&p->text, s, len) && tk_pieces_add(p, off, len, -1, first);
}

void tk_pieces_reset(tk_pieces *p) {
    p->n = 0;
    p->text.n = 0;
}

void tk_pieces_free(tk_pieces *p) {
    free(p->v);
    tk_buf_free(&p->text);
    memset(p, 0, sizeof *p);
}

/* ---- string hash map ---- */
static uint32_t tk_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, folded */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

bool tk_strmap_init(tk_strmap *m, size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 2) {
        if (cap > SIZE_MAX / 4 / sizeof(tk_sm_slot)) return false;
        cap *= 2;
    }
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = m->slots ? cap : 0;
    m->count = 0;
    return m->slots != NULL;
}

static bool tk_strmap_grow(tk_strmap *m) {
    tk_strmap g;
    if (!tk_strmap_init(&g, m->cap)) return false;
    for (size_t i = 0; i < m->cap; i++) {
        tk_sm_slot *s = &m->slots[i];
        if (!s->key) continue;
        size_t j = s->hash & (g.cap - 1);
        while (g.slots[j].key) j = (j + 1) & (g.cap - 1);
        g.slots[j] = *s;
        g.count++;
    }
    free(m->slots);
    *m = g;
    return true;
}

bool tk_strmap_put(tk_strmap *m, const char *key, size_t len, uint64_t val) {
    if (len > UINT32_MAX) return false;
    if ((m->count + 1) * 2 > m->cap && !tk_strmap_grow(m)) return false;
    uint32_t h = tk_hash(key, len);
    size_t j = h & (m->cap - 1);
    for (;; j = (j + 1) & (m->cap - 1)) {
        tk_sm_slot *s = &m->slots[j];
        if (!s->key) {
            *s = (tk_sm_slot){key, (uint32_t)len, h, val};
            m->count++;
            return true;
        }
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) {
            s->val = val;
            return true;
        }
    }
}

bool tk_strmap_get(const tk_strmap *m, const char *key, size_t len, uint64_t *val) {
    if (!m->cap || len > UINT32_MAX) return false;
    uint32_t h = tk_hash(key, len);
    for (size_t j = h & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        const tk_sm_slot *s = &m->slots[j];
        if (!s->key) return false;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) {
            *val = s->val;
            return true;
        }
    }
}

void tk_strmap_free(tk_strmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- UTF-8 ---- */
int tk_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte (Unicode table 3-7) */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if ((size_t)len > n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 0x3F);
    *cp = v;
    return len;
}

size_t tk_utf8_validate(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int l = tk_utf8_next(u + i, n - i, &cp);
        if (!l) return i;
        i += (size_t)l;
    }
    return n;
}

bool tk_utf8_lossy(tk_buf *out, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    while (i < n) {
        uint32_t cp;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int l = tk_utf8_next(u + i, n - i, &cp);
        if (l) {
            i += (size_t)l;
            continue;
        }
        /* Invalid: the maximal prefix of a well-formed sequence becomes one U+FFFD. */
        if (!tk_buf_put(out, s + run, i - run)) return false;
        size_t bad = 1;
        unsigned c = u[i];
        int want = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
        if (want > 1 && i + 1 < n) {
            unsigned lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
            if (u[i + 1] >= lo && u[i + 1] <= hi) {
                bad = 2;
                while ((int)bad < want && i + bad < n && (u[i + bad] & 0xC0) == 0x80) bad++;
            }
        }
        if (!tk_buf_put(out, "\xEF\xBF\xBD", 3)) return false;
        i += bad;
        run = i;
    }
    return tk_buf_put(out, s + run, n - run);
}

int tk_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool tk_is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

bool tk_is_numeric(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool tk_is_word_char(uint32_t c) {
    if (c == 0x200C || c == 0x200D) return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* ---- GPT-2 bytes_to_unicode ---- */
static tk_bytemap g_bytemap;
static pthread_once_t g_bytemap_once = PTHREAD_ONCE_INIT;

static void tk_bytemap_build(void) {
    /* Printable Latin-1 bytes stand for themselves; the other 68 take code points 256, 257, ... */
    int extra = 0;
    for (int i = 0; i < 324; i++) g_bytemap.dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)extra++;
        g_bytemap.enc_len[b] = (uint8_t)tk_utf8_encode(cp, g_bytemap.enc[b]);
        g_bytemap.dec[cp] = (int16_t)b;
    }
}

const tk_bytemap *tk_bytemap_get(void) {
    pthread_once(&g_bytemap_once, tk_bytemap_build);
    return &g_bytemap;
}

/* ---- patterns ---- */
/* Oniguruma (what HF's SysRegex uses) and PCRE2 disagree on a few shorthands under Unicode:
 * Onig's \s is exactly White_Space (PCRE2 adds U+180E, via \h), Onig's \w is L|M|Nd|Pc
 * (PCRE2 10.42: L|N|_). Rewrite them to explicit classes so PCRE2 matches what HF matches. */
#define TK_RE_WS "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}" \
                 "\\x{202f}\\x{205f}\\x{3000}"
#define TK_RE_WORD "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

static bool tk_translate_onig(const char *p, tk_buf *out) {
    bool in_class = false;
    size_t n = strlen(p);
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\\' && i + 1 < n) {
            char e = p[i + 1];
            const char *rep = NULL;
            if (e == 's') rep = in_class ? TK_RE_WS : "[" TK_RE_WS "]";
            else if (e == 'S' && !in_class) rep = "[^" TK_RE_WS "]";
            else if (e == 'w') rep = in_class ? TK_RE_WORD : "[" TK_RE_WORD "]";
            else if (e == 'W' && !in_class) rep = "[^" TK_RE_WORD "]";
            if (rep) {
                if (!tk_buf_put(out, rep, strlen(rep))) return false;
            } else if (!tk_buf_put(out, p + i, 2)) {
                return false;
            }
            i++;
            continue;
        }
        if (!in_class && ch == '[') {
            in_class = true;
            size_t j = i + 1;
            if (j < n && p[j] == '^') j++;
            if (j < n && p[j] == ']') j++; /* a leading ']' is literal */
            if (!tk_buf_put(out, p + i, j - i)) return false;
            i = j - 1;
            continue;
        }
        if (in_class && ch == '[' && i + 1 < n && p[i + 1] == ':') { /* POSIX [:name:] */
            const char *end = strstr(p + i + 2, ":]");
            if (end) {
                size_t l = (size_t)(end + 2 - (p + i));
                if (!tk_buf_put(out, p + i, l)) return false;
                i += l - 1;
                continue;
            }
        }
        if (in_class && ch == ']') in_class = false;
        if (!tk_buf_putc(out, ch)) return false;
    }
    return tk_buf_put(out, "", 0);
}

qc_status tk_pattern_regex(const char *onig_pattern, const char *where, tk_pattern *out) {
    memset(out, 0, sizeof *out);
    tk_buf t = {0};
    if (!tk_translate_onig(onig_pattern, &t)) {
        tk_buf_free(&t);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
    }
    int err;
    PCRE2_SIZE erroff;
    /* Ruby syntax (Oniguruma's default in HF): ^ and $ are line anchors. */
    out->re = pcre2_compile((PCRE2_SPTR)t.p, t.n, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &erroff, NULL);
    tk_buf_free(&t);
    if (!out->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: regex '%s' not supported by PCRE2: %s (at offset %zu)", where,
                       onig_pattern, (const char *)msg, (size_t)erroff);
    }
    (void)pcre2_jit_compile(out->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is absent */
    return QC_OK;
}

qc_status tk_pattern_parse(const cJSON *j, const char *where, tk_pattern *out) {
    memset(out, 0, sizeof *out);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    if (cJSON_IsString(s)) {
        out->literal = qc_strdup(s->valuestring);
        if (!out->literal) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", where);
        out->literal_len = strlen(out->literal);
        return QC_OK;
    }
    if (cJSON_IsString(r)) return tk_pattern_regex(r->valuestring, where, out);
    return qc_fail(QC_ERR_FORMAT, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", where);
}

void tk_pattern_free(tk_pattern *p) {
    free(p->literal);
    if (p->re) pcre2_code_free(p->re);
    memset(p, 0, sizeof *p);
}

qc_status tk_ctx_init(tk_ctx *c) {
    memset(c, 0, sizeof *c);
    c->md = pcre2_match_data_create(1, NULL);
    c->mctx = pcre2_match_context_create(NULL);
    c->jit = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!c->md || !c->mctx || !tk_strmap_init(&c->cache, 1024)) {
        tk_ctx_free(c);
        return qc_fail(QC_ERR_NOMEM, "tokenizer: cannot allocate regex match data");
    }
    if (c->jit) pcre2_jit_stack_assign(c->mctx, NULL, c->jit);
    return QC_OK;
}

void tk_ctx_free(tk_ctx *c) {
    if (c->md) pcre2_match_data_free(c->md);
    if (c->mctx) pcre2_match_context_free(c->mctx);
    if (c->jit) pcre2_jit_stack_free(c->jit);
    free(c->syms);
    free(c->heap);
    tk_strmap_free(&c->cache);
    memset(c, 0, sizeof *c);
}

/* Next match at or after `from` (HF: onig FindMatches) into [*ms, *me); *found false when none. */
static qc_status tk_regex_find(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, size_t from, size_t *ms,
                               size_t *me, bool *found) {
    int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) {
        *found = false;
        return QC_OK;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return qc_fail(QC_ERR_UNSUPPORTED, "tokenizer: regex match failed at byte %zu: %s", from,
                       (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    *ms = ov[0];
    *me = ov[1];
    *found = true;
    return QC_OK;
}

qc_status tk_pattern_spans(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, tk_span_fn fn, void *user) {
    if (n == 0) return fn(user, 0, 0, false) ? QC_OK : qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    size_t prev = 0;
#define TK_EMIT(a, b, m) do { if (!fn(user, (a), (b), (m))) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory"); } while (0)
    if (!p->re) {
        if (p->literal_len == 0) {
            TK_EMIT(0, n, false);
            return QC_OK;
        }
        size_t i = 0;
        while (i + p->literal_len <= n) {
            const char *hit = memmem(s + i, n - i, p->literal, p->literal_len);
            if (!hit) break;
            size_t a = (size_t)(hit - s);
            if (prev != a) TK_EMIT(prev, a, false);
            TK_EMIT(a, a + p->literal_len, true);
            prev = i = a + p->literal_len;
        }
    } else {
        size_t last_end = 0;
        bool have_last = false;
        size_t last_match_end = 0;
        while (last_end <= n) {
            size_t a, b;
            bool found;
            qc_status st = tk_regex_find(p, c, s, n, last_end, &a, &b, &found);
            if (st != QC_OK) return st;
            if (!found) break;
            if (a == b && have_last && last_match_end == b) {
                /* an empty match right after the previous one: retry one character later */
                uint32_t cp;
                int l = last_end < n ? tk_utf8_next((const unsigned char *)s + last_end, n - last_end, &cp) : 1;
                last_end += l > 0 ? (size_t)l : 1;
                continue;
            }
            last_end = b;
            have_last = true;
            last_match_end = b;
            if (prev != a) TK_EMIT(prev, a, false);
            TK_EMIT(a, b, true);
            prev = b;
        }
    }
    if (prev != n) TK_EMIT(prev, n, false);
#undef TK_EMIT
    return QC_OK;
}
