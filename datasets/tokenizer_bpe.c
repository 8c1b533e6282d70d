/*
 * tokenizer_bpe.c - the BPE model of Hugging Face `tokenizers` (models/bpe): vocab and merges from
 * tokenizer.json, and the per-word merge loop.
 *
 * A word starts as one symbol per character (or per byte through <0xNN> byte fallback, or an unk
 * run). Merges are applied lowest rank first, ties to the leftmost position, through a binary heap
 * whose stale entries are dropped when popped: O(n log n) per word, which matters because the
 * SentencePiece-style tokenizers (no pre-tokenizer) hand the whole text over as one word.
 *
 * Chunking: a word is cut between two characters x|y, both single-character vocab tokens, when no
 * vocab token contains "xy". No merge can cross such a cut (its result would contain "xy" and is a
 * vocab token), and merges on either side never see the other side, so merging the chunks apart
 * gives exactly the ids of merging the whole word. For Llama-2 the cuts fall before nearly every
 * "▁", which turns a 1.3 MB word into cacheable words. Off with continuing_subword_prefix or
 * end_of_word_suffix (their symbols depend on the position in the word).
 */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t tk_pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static size_t tk_pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

static const tk_merge_slot *tk_merge_get(const tk_bpe *m, int32_t a, int32_t b) {
    if (!m->merges_cap) return NULL;
    uint64_t key = tk_pair_key(a, b);
    for (size_t j = tk_pair_hash(key) & (m->merges_cap - 1);; j = (j + 1) & (m->merges_cap - 1)) {
        const tk_merge_slot *s = &m->merges[j];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

/* Later duplicates overwrite earlier ones, as HF's HashMap collect does. */
static void tk_merge_put(tk_bpe *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    uint64_t key = tk_pair_key(a, b);
    for (size_t j = tk_pair_hash(key) & (m->merges_cap - 1);; j = (j + 1) & (m->merges_cap - 1)) {
        tk_merge_slot *s = &m->merges[j];
        if (s->key == key || s->key == UINT64_MAX) {
            if (s->key == UINT64_MAX) m->n_merges++;
            *s = (tk_merge_slot){key, rank, new_id};
            return;
        }
    }
}

int32_t tk_bpe_token_id(const tk_bpe *m, const char *s, size_t n) {
    uint64_t v;
    return tk_strmap_get(&m->vocab, s, n, &v) ? (int32_t)v : -1;
}

static bool tk_bigram_has(const tk_bpe *m, uint64_t key) {
    for (size_t j = tk_pair_hash(key) & (m->bigrams_cap - 1);; j = (j + 1) & (m->bigrams_cap - 1)) {
        if (m->bigrams[j] == key) return true;
        if (m->bigrams[j] == UINT64_MAX) return false;
    }
}

static bool tk_bigram_add(tk_bpe *m, uint64_t key) {
    if ((m->n_bigrams + 1) * 2 > m->bigrams_cap) {
        size_t cap = m->bigrams_cap ? m->bigrams_cap * 2 : 4096;
        uint64_t *nb = malloc(cap * sizeof *nb);
        if (!nb) return false;
        for (size_t i = 0; i < cap; i++) nb[i] = UINT64_MAX;
        for (size_t i = 0; i < m->bigrams_cap; i++) {
            uint64_t k = m->bigrams[i];
            if (k == UINT64_MAX) continue;
            size_t j = tk_pair_hash(k) & (cap - 1);
            while (nb[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
            nb[j] = k;
        }
        free(m->bigrams);
        m->bigrams = nb;
        m->bigrams_cap = cap;
    }
    size_t j = tk_pair_hash(key) & (m->bigrams_cap - 1);
    while (m->bigrams[j] != UINT64_MAX) {
        if (m->bigrams[j] == key) return true;
        j = (j + 1) & (m->bigrams_cap - 1);
    }
    m->bigrams[j] = key;
    m->n_bigrams++;
    return true;
}

static uint64_t tk_bigram_key(uint32_t a, uint32_t b) { return (uint64_t)a << 21 | b; }

/* Id of the single character s[0..cl) (code point cp) when the model has no prefix/suffix. A non-ASCII
 * byte with cl 1 is tk_bpe_chunk's fallback for invalid UTF-8 (a normalizer or pattern from the file can
 * make some): it is looked up as it is, as with a prefix/suffix. */
static inline int32_t tk_char_id(const tk_bpe *m, const char *s, int cl, uint32_t cp) {
    if (cl == 1) return (unsigned char)s[0] < 0x80 ? m->ascii_ids[(unsigned char)s[0]] : tk_bpe_token_id(m, s, 1);
    if (cp < 0x10000) return m->bmp_ids[cp];
    return tk_bpe_token_id(m, s, (size_t)cl);
}

/* Fills bmp_ids and the bigram set; leaves chunkable false when a token is not valid UTF-8. */
static qc_status tk_bpe_chunk_tables(tk_bpe *m, const char *path) {
    if (m->cont_prefix || m->eow_suffix) return QC_OK;
    m->bmp_ids = malloc(0x10000 * sizeof *m->bmp_ids);
    if (!m->bmp_ids) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < 0x10000; i++) m->bmp_ids[i] = -1;
    for (int32_t id = 0; id < m->n_ids; id++) {
        const unsigned char *s = (const unsigned char *)m->tok[id];
        if (!s) continue;
        size_t n = m->tok_len[id];
        uint32_t cp, prev = 0;
        for (size_t i = 0; i < n;) {
            int l = tk_utf8_next(s + i, n - i, &cp);
            if (l <= 0) return QC_OK; /* cannot reason about characters: no chunking */
            if (i > 0 && !tk_bigram_add(m, tk_bigram_key(prev, cp))) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
            prev = cp;
            i += (size_t)l;
        }
    }
    /* single-character tokens, resolved through the vocab so duplicates behave as lookups do */
    for (int32_t id = 0; id < m->n_ids; id++) {
        const unsigned char *s = (const unsigned char *)m->tok[id];
        uint32_t cp;
        if (s && m->tok_len[id] > 1 && tk_utf8_next(s, m->tok_len[id], &cp) == (int)m->tok_len[id] && cp < 0x10000)
            m->bmp_ids[cp] = tk_bpe_token_id(m, (const char *)s, m->tok_len[id]);
    }
    m->chunkable = m->bigrams_cap > 0;
    return QC_OK;
}

static const char *tk_json_str_or_null(const cJSON *o, const char *key, bool *bad) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return NULL;
    if (!cJSON_IsString(j)) {
        *bad = true;
        return NULL;
    }
    return j->valuestring;
}

static bool tk_json_bool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : dflt;
}

static qc_status tk_bpe_load_vocab(const cJSON *vocab, const char *path, tk_bpe *m) {
    if (!cJSON_IsObject(vocab)) return qc_fail(QC_ERR_FORMAT, "%s: model.vocab must be an object", path);
    size_t count = 0, bytes = 0;
    int32_t max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        double d = e->valuedouble;
        if (!cJSON_IsNumber(e) || !(d >= 0 && d < TK_MAX_VOCAB) || d != (double)(int32_t)d)
            return qc_fail(QC_ERR_FORMAT, "%s: model.vocab[\"%s\"]: id must be an integer in [0, %d)", path,
                           e->string ? e->string : "", TK_MAX_VOCAB);
        if ((int32_t)d > max_id) max_id = (int32_t)d;
        count++;
        bytes += strlen(e->string) + 1;
    }
    m->n_ids = max_id + 1;
    m->tok = calloc((size_t)m->n_ids + 1, sizeof *m->tok);
    m->tok_len = calloc((size_t)m->n_ids + 1, sizeof *m->tok_len);
    char *pool = malloc(bytes + 1);
    if (!m->tok || !m->tok_len || !pool || !tk_strmap_init(&m->vocab, count)) {
        free(pool);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory for a vocab of %zu tokens", path, count);
    }
    /* The pool is owned through tok[] entries; remember its start in slot n_ids for freeing. */
    m->tok[m->n_ids] = pool;
    size_t off = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        size_t l = strlen(e->string);
        char *s = pool + off;
        memcpy(s, e->string, l + 1);
        off += l + 1;
        int32_t id = (int32_t)e->valuedouble;
        m->tok[id] = s;
        m->tok_len[id] = (uint32_t)l;
        if (!tk_strmap_put(&m->vocab, s, l, (uint64_t)id))
            return qc_fail(QC_ERR_NOMEM, "%s: out of memory building the vocab", path);
    }
    return QC_OK;
}

static qc_status tk_bpe_load_merges(const cJSON *merges, const char *path, tk_bpe *m) {
    if (!cJSON_IsArray(merges)) return qc_fail(QC_ERR_FORMAT, "%s: model.merges must be an array", path);
    size_t n = (size_t)cJSON_GetArraySize(merges), cap = 16;
    while (cap < 2 * n + 2) cap *= 2;
    m->merges = malloc(cap * sizeof *m->merges);
    if (!m->merges) return qc_fail(QC_ERR_NOMEM, "%s: out of memory for %zu merges", path, n);
    for (size_t i = 0; i < cap; i++) m->merges[i].key = UINT64_MAX;
    m->merges_cap = cap;
    size_t prefix_len = m->cont_prefix ? strlen(m->cont_prefix) : 0;
    tk_buf joined = {0};
    uint32_t rank = 0;
    size_t idx = 0;
    qc_status st = QC_OK;
    for (const cJSON *e = merges->child; e; e = e->next, idx++) {
        const char *a, *b;
        size_t la, lb;
        char *space = NULL;
        if (cJSON_IsString(e)) { /* legacy "a b" form: exactly one space */
            const char *s = e->valuestring;
            if (strncmp(s, "#version", 8) == 0) continue;
            space = strchr(s, ' ');
            if (!space || strchr(space + 1, ' ')) {
                st = qc_fail(QC_ERR_FORMAT, "%s: model.merges[%zu] \"%s\": expected two tokens separated by one "
                             "space", path, idx, s);
                break;
            }
            a = s;
            la = (size_t)(space - s);
            b = space + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            la = strlen(a);
            b = e->child->next->valuestring;
            lb = strlen(b);
        } else {
            st = qc_fail(QC_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", path, idx);
            break;
        }
        int32_t ia = tk_bpe_token_id(m, a, la), ib = tk_bpe_token_id(m, b, lb);
        if (ia < 0 || ib < 0) {
            st = qc_fail(QC_ERR_FORMAT, "%s: model.merges[%zu]: token \"%.*s\" is not in the vocab", path, idx,
                         (int)(ia < 0 ? la : lb), ia < 0 ? a : b);
            break;
        }
        if (lb < prefix_len) {
            st = qc_fail(QC_ERR_FORMAT, "%s: model.merges[%zu]: \"%.*s\" is shorter than the "
                         "continuing_subword_prefix", path, idx, (int)lb, b);
            break;
        }
        joined.n = 0;
        if (!tk_buf_put(&joined, a, la) || !tk_buf_put(&joined, b + prefix_len, lb - prefix_len)) {
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        int32_t inew = tk_bpe_token_id(m, joined.p, joined.n);
        if (inew < 0) {
            st = qc_fail(QC_ERR_FORMAT, "%s: model.merges[%zu]: merged token \"%s\" is not in the vocab", path,
                         idx, joined.p);
            break;
        }
        tk_merge_put(m, ia, ib, rank++, inew);
    }
    tk_buf_free(&joined);
    return st;
}

qc_status tk_bpe_load(const cJSON *model, const char *path, tk_bpe *m) {
    memset(m, 0, sizeof *m);
    m->unk_id = -1;
    if (!cJSON_IsObject(model)) return qc_fail(QC_ERR_FORMAT, "%s: \"model\" must be an object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", path,
                       cJSON_IsString(type) ? type->valuestring : "?");
    if (!type && !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: model without \"type\" and without merges is not BPE", path);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: model.dropout %g: BPE dropout is random, not supported", path,
                       dropout->valuedouble);
    bool bad = false;
    const char *unk = tk_json_str_or_null(model, "unk_token", &bad);
    const char *pre = tk_json_str_or_null(model, "continuing_subword_prefix", &bad);
    const char *suf = tk_json_str_or_null(model, "end_of_word_suffix", &bad);
    if (bad) return qc_fail(QC_ERR_FORMAT, "%s: model: unk_token/continuing_subword_prefix/end_of_word_suffix "
                            "must be strings or null", path);
    m->fuse_unk = tk_json_bool(model, "fuse_unk", false);
    m->byte_fallback = tk_json_bool(model, "byte_fallback", false);
    m->ignore_merges = tk_json_bool(model, "ignore_merges", false);
    if ((unk && !(m->unk_token = qc_strdup(unk))) || (pre && !(m->cont_prefix = qc_strdup(pre))) ||
        (suf && !(m->eow_suffix = qc_strdup(suf))))
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    qc_status st = tk_bpe_load_vocab(cJSON_GetObjectItemCaseSensitive(model, "vocab"), path, m);
    if (st != QC_OK) return st;
    st = tk_bpe_load_merges(cJSON_GetObjectItemCaseSensitive(model, "merges"), path, m);
    if (st != QC_OK) return st;
    if (m->unk_token) m->unk_id = tk_bpe_token_id(m, m->unk_token, strlen(m->unk_token));
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tk_bpe_token_id(m, name, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        m->ascii_ids[c] = (m->cont_prefix || m->eow_suffix) ? -1 : tk_bpe_token_id(m, &ch, 1);
    }
    return tk_bpe_chunk_tables(m, path);
}

void tk_bpe_free(tk_bpe *m) {
    if (m->tok) free(m->tok[m->n_ids]); /* the string pool */
    free(m->tok);
    free(m->tok_len);
    tk_strmap_free(&m->vocab);
    free(m->merges);
    free(m->unk_token);
    free(m->cont_prefix);
    free(m->eow_suffix);
    free(m->bmp_ids);
    free(m->bigrams);
    memset(m, 0, sizeof *m);
}

/* ---- the merge loop ---- */
static inline bool tk_ent_less(const tk_merge_ent *a, const tk_merge_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void tk_heap_down(tk_merge_ent *h, size_t n, size_t i) {
    tk_merge_ent x = h[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = (l + 1 < n && tk_ent_less(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!tk_ent_less(&h[m], &x)) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = x;
}

static void tk_heap_push(tk_merge_ent *h, size_t *n, tk_merge_ent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!tk_ent_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static void tk_merge_all(const tk_bpe *m, tk_sym *sym, size_t nsym, tk_merge_ent *heap) {
    size_t nh = 0;
    for (size_t i = 0; i + 1 < nsym; i++) {
        const tk_merge_slot *ms = tk_merge_get(m, sym[i].c, sym[i + 1].c);
        if (ms) heap[nh++] = (tk_merge_ent){ms->rank, (uint32_t)i, ms->new_id};
    }
    for (size_t i = nh / 2; i-- > 0;) tk_heap_down(heap, nh, i);
    while (nh > 0) {
        tk_merge_ent top = heap[0];
        heap[0] = heap[--nh];
        if (nh) tk_heap_down(heap, nh, 0);
        tk_sym *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int32_t next_pos = cur->next;
        tk_sym right = sym[next_pos];
        /* Stale entry: the pair at this position changed since it was queued. */
        const tk_merge_slot *ms = tk_merge_get(m, cur->c, right.c);
        if (!ms || ms->new_id != top.new_id) continue;
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        sym[next_pos].len = 0;
        if (right.next > -1 && (size_t)right.next < nsym) sym[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            ms = tk_merge_get(m, sym[cur->prev].c, cur->c);
            if (ms) tk_heap_push(heap, &nh, (tk_merge_ent){ms->rank, (uint32_t)cur->prev, ms->new_id});
        }
        if (cur->next > -1 && (size_t)cur->next < nsym) {
            ms = tk_merge_get(m, cur->c, sym[cur->next].c);
            if (ms) tk_heap_push(heap, &nh, (tk_merge_ent){ms->rank, top.pos, ms->new_id});
        }
    }
}

static inline void tk_sym_add(tk_sym *sym, size_t *n, int32_t c, uint32_t len) {
    size_t i = (*n)++;
    if (i > 0) sym[i - 1].next = (int32_t)i;
    sym[i] = (tk_sym){c, (int32_t)i - 1, -1, len};
}

/* HF BPE::merge_word + word_to_tokens on one chunk (the whole word when chunking is off). */
static qc_status tk_bpe_chunk(const tk_bpe *m, tk_ctx *c, const char *w, size_t n, tk_ids *out) {
    /* At most one symbol per byte; the heap holds the initial pairs plus two per merge. */
    if (c->syms_cap < n) {
        free(c->syms);
        c->syms = malloc(n * sizeof *c->syms);
        c->syms_cap = c->syms ? n : 0;
    }
    if (c->heap_cap < 3 * n) {
        free(c->heap);
        c->heap = malloc(3 * n * sizeof *c->heap);
        c->heap_cap = c->heap ? 3 * n : 0;
    }
    if (!c->syms || !c->heap) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory for a word of %zu bytes", n);
    tk_sym *sym = c->syms;
    size_t nsym = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    bool has_unk = false;
    bool affix = m->cont_prefix || m->eow_suffix;
    tk_buf tmp = {0};
    qc_status st = QC_OK;
    const unsigned char *u = (const unsigned char *)w;
    for (size_t i = 0; i < n;) {
        uint32_t cp = u[i];
        int cl = u[i] < 0x80 ? 1 : tk_utf8_next(u + i, n - i, &cp);
        if (cl <= 0) cl = 1, cp = 0xFFFF; /* callers pass valid UTF-8; stay safe anyway (0xFFFF: no token) */
        const char *s = w + i;
        size_t sl = (size_t)cl;
        int32_t id;
        if (!affix) {
            id = tk_char_id(m, s, cl, cp);
        } else {
            if (affix) {
                tmp.n = 0;
                bool ok = true;
                if (i > 0 && m->cont_prefix) ok = tk_buf_put(&tmp, m->cont_prefix, strlen(m->cont_prefix));
                ok = ok && tk_buf_put(&tmp, s, sl);
                if (i + sl == n && m->eow_suffix) ok = ok && tk_buf_put(&tmp, m->eow_suffix, strlen(m->eow_suffix));
                if (!ok) {
                    st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
                    break;
                }
                s = tmp.p;
                sl = tmp.n;
            }
            id = tk_bpe_token_id(m, s, sl);
        }
        if (id >= 0) {
            if (has_unk) {
                tk_sym_add(sym, &nsym, unk_id, unk_len);
                has_unk = false;
            }
            tk_sym_add(sym, &nsym, id, (uint32_t)cl);
        } else {
            bool done = false;
            if (m->byte_fallback) {
                bool all = true;
                for (size_t k = 0; k < sl; k++) all = all && m->byte_ids[(unsigned char)s[k]] >= 0;
                if (all) {
                    /* HF adds these without flushing a pending unk first; keep that order. A prefix/suffix
                     * can make this more symbols than bytes of w: grow the arrays then, keeping room for the
                     * pending unk and one symbol per byte still to come (what the other paths rely on). */
                    if (nsym + sl + 1 + (n - i) > c->syms_cap) {
                        size_t cap = c->syms_cap + sl + n;
                        tk_sym *ns = realloc(c->syms, cap * sizeof *ns);
                        tk_merge_ent *nh = realloc(c->heap, 3 * cap * sizeof *nh);
                        if (ns) c->syms = ns;
                        if (nh) c->heap = nh;
                        if (!ns || !nh) {
                            st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
                            break;
                        }
                        c->syms_cap = cap;
                        c->heap_cap = 3 * cap;
                        sym = c->syms;
                    }
                    for (size_t k = 0; k < sl; k++) tk_sym_add(sym, &nsym, m->byte_ids[(unsigned char)s[k]], 1);
                    done = true;
                }
            }
            if (!done && m->unk_token) {
                if (m->unk_id < 0) {
                    st = qc_fail(QC_ERR_FORMAT, "tokenizer: unk token \"%s\" is not in the vocab", m->unk_token);
                    break;
                }
                if (has_unk && m->fuse_unk) {
                    unk_len += (uint32_t)cl;
                } else {
                    if (has_unk) tk_sym_add(sym, &nsym, unk_id, unk_len);
                    unk_id = m->unk_id;
                    unk_len = (uint32_t)cl;
                    has_unk = true;
                }
            }
            /* no byte fallback and no unk token: the character is dropped, as HF does */
        }
        i += (size_t)cl;
    }
    tk_buf_free(&tmp);
    if (st != QC_OK) return st;
    if (has_unk) tk_sym_add(sym, &nsym, unk_id, unk_len);
    if (nsym > 1 && m->n_merges) tk_merge_all(m, sym, nsym, c->heap);
    for (size_t i = 0; i < nsym; i++)
        if (sym[i].len != 0 && !tk_ids_push(out, sym[i].c)) return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    return QC_OK;
}

static qc_status tk_bpe_chunk_cached(const tk_bpe *m, tk_ctx *c, const char *w, size_t n, tk_ids *out) {
    uint64_t hit;
    bool cacheable = n < TK_CACHE_MAX_WORD;
    if (cacheable && tk_strmap_get(&c->cache, w, n, &hit))
        return tk_ids_append_self(out, (size_t)(hit >> 32), (size_t)(hit & 0xffffffffu))
                   ? QC_OK : qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    size_t start = out->n;
    qc_status st = tk_bpe_chunk(m, c, w, n, out);
    if (st == QC_OK && cacheable && start <= UINT32_MAX && out->n - start <= UINT32_MAX &&
        !tk_strmap_put(&c->cache, w, n, (uint64_t)start << 32 | (out->n - start)))
        return qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    return st;
}

/* End of the chunk that starts at w[start] (see the top of this file). */
static size_t tk_chunk_end(const tk_bpe *m, const char *w, size_t n, size_t start) {
    const unsigned char *u = (const unsigned char *)w;
    uint32_t prev = 0;
    bool prev_plain = false;
    for (size_t i = start; i < n;) {
        uint32_t cp = u[i];
        int cl = u[i] < 0x80 ? 1 : tk_utf8_next(u + i, n - i, &cp);
        if (cl <= 0) return n;
        bool plain = tk_char_id(m, w + i, cl, cp) >= 0;
        if (i > start && prev_plain && plain && !tk_bigram_has(m, tk_bigram_key(prev, cp))) return i;
        prev = cp;
        prev_plain = plain;
        i += (size_t)cl;
    }
    return n;
}

qc_status tk_bpe_word(const tk_bpe *m, tk_ctx *c, const char *w, size_t n, tk_ids *out) {
    if (n == 0) return QC_OK;
    if (n >= (size_t)INT32_MAX / 4) return qc_fail(QC_ERR_ARG, "tokenizer: word of %zu bytes is too long", n);
    if (m->ignore_merges) { /* HF: a word that is a token is taken whole, before any merging */
        int32_t id = tk_bpe_token_id(m, w, n);
        if (id >= 0) return tk_ids_push(out, id) ? QC_OK : qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (!m->chunkable) return tk_bpe_chunk_cached(m, c, w, n, out);
    for (size_t s = 0; s < n;) {
        size_t e = tk_chunk_end(m, w, n, s);
        qc_status st = tk_bpe_chunk_cached(m, c, w + s, e - s, out);
        if (st != QC_OK) return st;
        s = e;
    }
    return QC_OK;
}
