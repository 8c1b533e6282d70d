/*
 * tokenizer.c - qc_tokenizer: loading tokenizer.json (+ tokenizer_config.json), added tokens,
 * post-processing, and the encode/decode drivers. The stages live in tokenizer_pipeline.c, the BPE
 * model in tokenizer_bpe.c, shared helpers in tokenizer_util.c.
 */
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>

/* An entry of tokenizer.json "added_tokens". */
typedef struct {
    char *content; size_t len;
    char *pattern; size_t plen;  /* what is searched for: content, or its normalized form */
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Leftmost-longest matcher over a few added tokens: candidates grouped by first byte, longest first. */
typedef struct {
    uint32_t *order; size_t n;
    uint32_t start[257];
} tk_matcher;

struct qc_tokenizer {
    char *path;
    tk_bpe bpe;
    tk_added *added; size_t n_added;
    tk_strmap added_map;         /* content -> index in added[] of its latest entry */
    tk_matcher raw, norm;        /* added tokens matched before / after normalization */
    tk_norm *normalizer;         /* NULL: none */
    tk_pretok *pretok;           /* NULL: none (each piece is one word) */
    tk_dec *decoder;             /* NULL: tokens joined with ' ' */
    tk_ids prefix, suffix;       /* ids the post-processor puts around a single sequence */
    int32_t vocab_size;          /* max id + 1 over the model and the added tokens */
    const char **tok;            /* id -> token string for decode (borrowed from bpe/added), NULL if none */
    uint32_t *tok_len;
    uint8_t *special;            /* id -> the token string is a special added token */
    int32_t bos_id, eos_id;
};

/* ---- small JSON helpers ---- */
static bool tk_jbool(const cJSON *o, const char *k, bool dflt) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : dflt;
}

/* A token given as "text" or as {"content": "text", ...} (tokenizer_config.json's AddedToken form). */
static const char *tk_jtoken(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsString(j)) return j->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static int32_t tk_lookup(const qc_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    uint64_t k;
    if (tk_strmap_get(&t->added_map, s, n, &k)) return t->added[k].id;
    return tk_bpe_token_id(&t->bpe, s, n);
}

static qc_status tk_read_json(const char *path, cJSON **out) {
    char *buf;
    size_t len;
    qc_status st = qc_read_file(path, (size_t)1 << 30, &buf, &len);
    if (st != QC_OK) return st;
    size_t oom = qc_json_oom_count();
    *out = cJSON_ParseWithLength(buf, len);
    if (!*out && qc_json_oom_count() != oom) {
        free(buf);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing it (%zu bytes of JSON)", path, len);
    }
    if (!*out) {
        const char *e = cJSON_GetErrorPtr();
        size_t off = (e && e >= buf && e <= buf + len) ? (size_t)(e - buf) : 0;
        free(buf);
        return qc_fail(QC_ERR_FORMAT, "%s: invalid JSON near byte %zu", path, off);
    }
    free(buf);
    return QC_OK;
}

/* ---- added tokens ---- */
static qc_status tk_added_load(qc_tokenizer *t, const cJSON *arr) {
    if (!arr || cJSON_IsNull(arr)) return QC_OK;
    if (!cJSON_IsArray(arr)) return qc_fail(QC_ERR_FORMAT, "%s: \"added_tokens\" must be an array", t->path);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || !tk_strmap_init(&t->added_map, n)) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    size_t idx = 0;
    int32_t max_added = -1;
    for (const cJSON *e = arr->child; e; e = e->next, idx++) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        const cJSON *jid = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsString(content))
            return qc_fail(QC_ERR_FORMAT, "%s: added_tokens[%zu]: \"content\" must be a string", t->path, idx);
        if (jid && !(cJSON_IsNumber(jid) && jid->valuedouble >= 0 && jid->valuedouble < TK_MAX_VOCAB &&
                     jid->valuedouble == (double)(int32_t)jid->valuedouble))
            return qc_fail(QC_ERR_FORMAT, "%s: added_tokens[%zu]: \"id\" must be an integer in [0, %d)", t->path,
                           idx, TK_MAX_VOCAB);
        size_t len = strlen(content->valuestring);
        if (len == 0) continue; /* HF ignores empty added tokens */
        bool special = tk_jbool(e, "special", false);
        tk_added a = {
            .len = len, .special = special, .lstrip = tk_jbool(e, "lstrip", false),
            .rstrip = tk_jbool(e, "rstrip", false), .single_word = tk_jbool(e, "single_word", false),
            .normalized = tk_jbool(e, "normalized", !special),
        };
        /* HF re-derives the id: an existing token keeps its id, a new one goes after the vocab. */
        int32_t id = tk_lookup(t, content->valuestring);
        if (id < 0) {
            int32_t vsz = (int32_t)t->bpe.vocab.count;
            id = max_added < 0 ? vsz : (max_added >= vsz || vsz == 0) ? max_added + 1 : vsz;
        }
        if (jid && (int32_t)jid->valuedouble != id)
            QC_LOGW("%s: added token \"%s\" has id %d in the file but %d by the rules of tokenizers; using %d",
                    t->path, content->valuestring, (int)jid->valuedouble, (int)id, (int)id);
        if (id >= TK_MAX_VOCAB) return qc_fail(QC_ERR_FORMAT, "%s: too many added tokens", t->path);
        a.id = id;
        if (id > max_added) max_added = id;
        uint64_t prev;
        if (tk_strmap_get(&t->added_map, content->valuestring, len, &prev)) {
            bool dup = false; /* the same token (content and flags) listed twice is ignored */
            for (size_t k = 0; k < t->n_added; k++) {
                const tk_added *o = &t->added[k];
                dup = dup || (o->len == len && memcmp(o->content, content->valuestring, len) == 0 &&
                              o->special == a.special && o->lstrip == a.lstrip && o->rstrip == a.rstrip &&
                              o->single_word == a.single_word && o->normalized == a.normalized);
            }
            if (dup) continue;
        }
        a.content = qc_strdup(content->valuestring);
        if (!a.content) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
        t->added[t->n_added] = a;
        if (!tk_strmap_put(&t->added_map, a.content, len, t->n_added))
            return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
        t->n_added++;
    }
    return QC_OK;
}

typedef struct { unsigned first; size_t len; uint32_t rank, idx; } tk_msort;

static int tk_msort_cmp(const void *pa, const void *pb) {
    const tk_msort *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static qc_status tk_matcher_build(qc_tokenizer *t, tk_matcher *m, bool normalized) {
    m->order = calloc(t->n_added ? t->n_added : 1, sizeof *m->order);
    tk_msort *tmp = calloc(t->n_added ? t->n_added : 1, sizeof *tmp);
    if (!m->order || !tmp) {
        free(tmp);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    }
    /* Grouped by first byte, longest first, ties in HF's order (special tokens first, then the
     * others, each in file order), which is what leftmost-longest matching picks. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < t->n_added; i++) {
            const tk_added *a = &t->added[i];
            if (a->normalized != normalized || a->special != (pass == 0) || a->plen == 0) continue;
            tmp[m->n] = (tk_msort){(unsigned char)a->pattern[0], a->plen, (uint32_t)m->n, (uint32_t)i};
            m->n++;
        }
    qsort(tmp, m->n, sizeof *tmp, tk_msort_cmp);
    for (size_t i = 0; i < m->n; i++) m->order[i] = tmp[i].idx;
    free(tmp);
    size_t k = 0;
    for (unsigned b = 0; b < 256; b++) {
        m->start[b] = (uint32_t)k;
        while (k < m->n && (unsigned char)t->added[m->order[k]].pattern[0] == b) k++;
    }
    m->start[256] = (uint32_t)k;
    return QC_OK;
}

static bool tk_last_is_word(const char *s, size_t n) {
    if (n == 0) return false;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    return tk_utf8_next((const unsigned char *)s + k, n - k, &cp) > 0 && tk_is_word_char(cp);
}

static bool tk_first_is_word(const char *s, size_t n) {
    uint32_t cp;
    return n > 0 && tk_utf8_next((const unsigned char *)s, n, &cp) > 0 && tk_is_word_char(cp);
}

/* HF AddedVocabulary::find_matches + split_with_indices: pieces of s for the added tokens of m and
 * the text between them (empty text dropped). `first`: s starts at offset 0 of the input. */
static bool tk_split_added(const qc_tokenizer *t, const tk_matcher *m, const char *s, size_t n, bool first,
                           tk_pieces *out) {
    size_t start_offset = 0, i = 0;
    while (m->n && i < n) {
        unsigned b = (unsigned char)s[i];
        uint32_t lo = m->start[b], hi = m->start[b + 1];
        const tk_added *hit = NULL;
        for (uint32_t k = lo; k < hi; k++) {
            const tk_added *a = &t->added[m->order[k]];
            if (a->plen <= n - i && memcmp(s + i, a->pattern, a->plen) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->plen;
        i = stop; /* the search resumes after the raw match, whatever happens to it below */
        if (hit->single_word && !((start == 0 || !tk_last_is_word(s, start)) &&
                                  (stop == n || !tk_first_is_word(s + stop, n - stop))))
            continue;
        if (hit->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t k = ns - 1;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                uint32_t cp;
                if (tk_utf8_next((const unsigned char *)s + k, ns - k, &cp) <= 0 || !tk_is_white_space(cp)) break;
                ns = k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            uint32_t cp;
            int l;
            while (stop < n && (l = tk_utf8_next((const unsigned char *)s + stop, n - stop, &cp)) > 0 &&
                   tk_is_white_space(cp))
                stop += (size_t)l;
        }
        if (start_offset < start && !tk_pieces_add_text(out, s + start_offset, start - start_offset,
                                                         first && start_offset == 0))
            return false;
        if (!tk_pieces_add(out, 0, 0, hit->id, first && start == 0)) return false;
        start_offset = stop;
    }
    if (start_offset < n && !tk_pieces_add_text(out, s + start_offset, n - start_offset, first && start_offset == 0))
        return false;
    return true;
}

/* ---- post-processor ---- */
static qc_status tk_special_ids(const qc_tokenizer *t, const cJSON *specials, const char *name, tk_ids *dst) {
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(specials, name);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(sp, "ids");
    if (!cJSON_IsArray(ids))
        return qc_fail(QC_ERR_FORMAT, "%s: post_processor: special token \"%s\" has no \"ids\"", t->path, name);
    for (const cJSON *e = ids->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0 && e->valuedouble < TK_MAX_VOCAB))
            return qc_fail(QC_ERR_FORMAT, "%s: post_processor: special token \"%s\": bad id", t->path, name);
        if (!tk_ids_push(dst, (int32_t)e->valuedouble)) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    }
    return QC_OK;
}

/* Wraps the current prefix/suffix: processors of a Sequence apply one after the other. */
static qc_status tk_wrap(qc_tokenizer *t, const tk_ids *pre, const tk_ids *suf) {
    tk_ids np = {0};
    if (!tk_ids_append(&np, pre->v, pre->n) || !tk_ids_append(&np, t->prefix.v, t->prefix.n) ||
        !tk_ids_append(&t->suffix, suf->v, suf->n)) {
        free(np.v);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    }
    free(t->prefix.v);
    t->prefix = np;
    return QC_OK;
}

static qc_status tk_post_parse(qc_tokenizer *t, const cJSON *j, int depth) {
    if (!j || cJSON_IsNull(j)) return QC_OK;
    if (depth > TK_MAX_DEPTH) return qc_fail(QC_ERR_FORMAT, "%s: post_processor nesting too deep", t->path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "";
    if (strcmp(ty, "ByteLevel") == 0) return QC_OK; /* only trims offsets */
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) return qc_fail(QC_ERR_FORMAT, "%s: post_processor Sequence: no \"processors\"", t->path);
        for (const cJSON *e = arr->child; e; e = e->next) {
            qc_status st = tk_post_parse(t, e, depth + 1);
            if (st != QC_OK) return st;
        }
        return QC_OK;
    }
    tk_ids pre = {0}, suf = {0};
    qc_status st = QC_OK;
    if (strcmp(ty, "TemplateProcessing") == 0) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        bool seen_a = false;
        if (cJSON_IsArray(single)) {
            for (const cJSON *e = single->child; e && st == QC_OK; e = e->next) {
                const cJSON *seq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
                const cJSON *spt = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
                const cJSON *sid = cJSON_GetObjectItemCaseSensitive(spt ? spt : seq, "id");
                if (seq && cJSON_IsString(sid) && strcmp(sid->valuestring, "A") == 0 && !seen_a) seen_a = true;
                else if (spt && cJSON_IsString(sid)) st = tk_special_ids(t, specials, sid->valuestring, seen_a ? &suf : &pre);
                else st = qc_fail(QC_ERR_UNSUPPORTED, "%s: post_processor TemplateProcessing: unsupported piece in "
                                  "\"single\"", t->path);
            }
        } else if (cJSON_IsString(single)) { /* "<s> $A </s>" form; ":N" type ids are irrelevant here */
            char *s = qc_strdup(single->valuestring), *save = NULL;
            if (!s) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
            for (char *w = s ? strtok_r(s, " ", &save) : NULL; w && st == QC_OK; w = strtok_r(NULL, " ", &save)) {
                char *colon = strrchr(w, ':');
                if (colon && colon != w) *colon = '\0';
                if (w[0] == '$' && (!w[1] || strcmp(w + 1, "A") == 0 || strcmp(w + 1, "0") == 0) && !seen_a) seen_a = true;
                else if (w[0] == '$') st = qc_fail(QC_ERR_UNSUPPORTED, "%s: post_processor: '%s' in single template", t->path, w);
                else st = tk_special_ids(t, specials, w, seen_a ? &suf : &pre);
            }
            free(s);
        }
        if (st == QC_OK && !seen_a)
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: post_processor TemplateProcessing: \"single\" without $A", t->path);
    } else if (strcmp(ty, "RobertaProcessing") == 0 || strcmp(ty, "BertProcessing") == 0) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "cls"), *sep = cJSON_GetObjectItemCaseSensitive(j, "sep");
        const cJSON *c1 = cJSON_GetArrayItem(cls, 1), *s1 = cJSON_GetArrayItem(sep, 1);
        if (!cJSON_IsNumber(c1) || !cJSON_IsNumber(s1) || c1->valuedouble < 0 || s1->valuedouble < 0 ||
            c1->valuedouble >= TK_MAX_VOCAB || s1->valuedouble >= TK_MAX_VOCAB)
            st = qc_fail(QC_ERR_FORMAT, "%s: post_processor %s: \"cls\"/\"sep\" must be [token, id]", t->path, ty);
        else if (!tk_ids_push(&pre, (int32_t)c1->valuedouble) || !tk_ids_push(&suf, (int32_t)s1->valuedouble))
            st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    } else {
        st = qc_fail(QC_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported", t->path, ty);
    }
    if (st == QC_OK) st = tk_wrap(t, &pre, &suf);
    free(pre.v);
    free(suf.v);
    return st;
}

/* tokenizer_config.json beside tokenizer.json: used for BOS/EOS when the file has no post-processor
 * (transformers' LlamaTokenizerFast builds its template from add_bos_token/add_eos_token). */
static qc_status tk_config_load(qc_tokenizer *t, const char *json_path, bool have_post) {
    char *dup = qc_strdup(json_path);
    if (!dup) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", json_path);
    char *cfg_path = qc_path_join(dirname(dup), "tokenizer_config.json");
    free(dup);
    if (!cfg_path) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", json_path);
    if (!qc_file_exists(cfg_path)) {
        free(cfg_path);
        return QC_OK;
    }
    cJSON *cfg;
    qc_status st = tk_read_json(cfg_path, &cfg);
    if (st != QC_OK) {
        free(cfg_path);
        return st;
    }
    const char *bos = tk_jtoken(cfg, "bos_token"), *eos = tk_jtoken(cfg, "eos_token");
    if (bos) t->bos_id = tk_lookup(t, bos);
    if (eos) t->eos_id = tk_lookup(t, eos);
    if (!have_post) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
        bool llama = cJSON_IsString(cls) && (strncmp(cls->valuestring, "LlamaTokenizer", 14) == 0 ||
                                             strncmp(cls->valuestring, "CodeLlamaTokenizer", 18) == 0);
        bool add_bos = tk_jbool(cfg, "add_bos_token", llama), add_eos = tk_jbool(cfg, "add_eos_token", false);
        if ((add_bos && t->bos_id < 0) || (add_eos && t->eos_id < 0)) {
            st = qc_fail(QC_ERR_FORMAT, "%s: add_%s_token is set but %s_token is missing or not in the vocab",
                         cfg_path, add_bos && t->bos_id < 0 ? "bos" : "eos", add_bos && t->bos_id < 0 ? "bos" : "eos");
        } else {
            if (add_bos && !tk_ids_push(&t->prefix, t->bos_id)) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", cfg_path);
            if (add_eos && !tk_ids_push(&t->suffix, t->eos_id)) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", cfg_path);
        }
    }
    cJSON_Delete(cfg);
    free(cfg_path);
    return st;
}

static qc_status tk_tables_build(qc_tokenizer *t) {
    int32_t vs = t->bpe.n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > vs) vs = t->added[i].id + 1;
    for (size_t i = 0; i < t->prefix.n; i++)
        if (t->prefix.v[i] >= vs) return qc_fail(QC_ERR_FORMAT, "%s: post_processor id %d is outside the vocab",
                                                 t->path, (int)t->prefix.v[i]);
    for (size_t i = 0; i < t->suffix.n; i++)
        if (t->suffix.v[i] >= vs) return qc_fail(QC_ERR_FORMAT, "%s: post_processor id %d is outside the vocab",
                                                 t->path, (int)t->suffix.v[i]);
    t->vocab_size = vs;
    t->tok = calloc((size_t)vs + 1, sizeof *t->tok);
    t->tok_len = calloc((size_t)vs + 1, sizeof *t->tok_len);
    t->special = calloc((size_t)vs + 1, 1);
    if (!t->tok || !t->tok_len || !t->special) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
    for (int32_t i = 0; i < t->bpe.n_ids; i++) {
        t->tok[i] = t->bpe.tok[i];
        t->tok_len[i] = t->bpe.tok_len[i];
    }
    for (size_t i = 0; i < t->n_added; i++) { /* added tokens take precedence; a later entry wins */
        t->tok[t->added[i].id] = t->added[i].content;
        t->tok_len[t->added[i].id] = (uint32_t)t->added[i].len;
    }
    /* skip_special compares token strings, as HF does: an id is special when its string is the
     * content of a special added token (only that token's id and the model's id for it can be) */
    for (size_t k = 0; k < t->n_added; k++) {
        const tk_added *a = &t->added[k];
        if (!a->special) continue;
        int32_t cand[2] = {a->id, tk_bpe_token_id(&t->bpe, a->content, a->len)};
        for (int c = 0; c < 2; c++) {
            int32_t i = cand[c];
            if (i >= 0 && t->tok[i] && t->tok_len[i] == a->len && memcmp(t->tok[i], a->content, a->len) == 0)
                t->special[i] = 1;
        }
    }
    return QC_OK;
}

qc_status qc_tokenizer_load(const char *path, qc_tokenizer **out) {
    if (!path || !out) return qc_fail(QC_ERR_ARG, "qc_tokenizer_load: NULL argument");
    *out = NULL;
    qc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    t->bos_id = t->eos_id = -1;
    t->bpe.unk_id = -1;
    t->path = qc_dir_exists(path) ? qc_path_join(path, "tokenizer.json") : qc_strdup(path);
    if (!t->path) {
        free(t);
        return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    }
    cJSON *root = NULL;
    qc_status st = tk_read_json(t->path, &root);
    if (st == QC_OK && !cJSON_IsObject(root)) st = qc_fail(QC_ERR_FORMAT, "%s: not a JSON object", t->path);
    if (st == QC_OK) {
        const cJSON *tr = cJSON_GetObjectItemCaseSensitive(root, "truncation");
        const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "padding");
        if ((tr && !cJSON_IsNull(tr)) || (pad && !cJSON_IsNull(pad)))
            QC_LOGW("%s: truncation/padding settings are ignored (qcal encodes whole texts)", t->path);
    }
    if (st == QC_OK) st = tk_bpe_load(cJSON_GetObjectItemCaseSensitive(root, "model"), t->path, &t->bpe);
    if (st == QC_OK) st = tk_added_load(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
    if (st == QC_OK) st = tk_norm_parse(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), t->path, 0, &t->normalizer);
    if (st == QC_OK)
        st = tk_pretok_parse(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), t->path, 0, &t->pretok);
    if (st == QC_OK) st = tk_dec_parse(cJSON_GetObjectItemCaseSensitive(root, "decoder"), t->path, 0, &t->decoder);
    const cJSON *post = root ? cJSON_GetObjectItemCaseSensitive(root, "post_processor") : NULL;
    bool have_post = post && !cJSON_IsNull(post);
    if (st == QC_OK) st = tk_post_parse(t, post, 0);
    cJSON_Delete(root);
    if (st == QC_OK) st = tk_config_load(t, t->path, have_post);

    /* Match patterns: normalized added tokens are searched for in their normalized form. */
    tk_ctx ctx;
    bool have_ctx = false;
    if (st == QC_OK && (st = tk_ctx_init(&ctx)) == QC_OK) have_ctx = true;
    for (size_t i = 0; st == QC_OK && i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        if (a->normalized && t->normalizer) {
            tk_buf b = {0};
            st = tk_norm_apply(t->normalizer, &ctx, a->content, a->len, &b);
            if (st == QC_OK && !tk_buf_put(&b, "", 0)) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
            a->pattern = b.p;
            a->plen = b.n;
        } else {
            a->pattern = qc_strndup(a->content, a->len);
            a->plen = a->len;
            if (!a->pattern) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", t->path);
        }
    }
    if (have_ctx) tk_ctx_free(&ctx);
    if (st == QC_OK) st = tk_matcher_build(t, &t->raw, false);
    if (st == QC_OK) st = tk_matcher_build(t, &t->norm, true);
    if (st == QC_OK) st = tk_tables_build(t);
    if (st == QC_OK) {
        /* BOS/EOS when tokenizer_config.json did not name them: the template, then common names. */
        static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"};
        static const char *eos_names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"};
        if (t->bos_id < 0 && t->prefix.n) t->bos_id = t->prefix.v[0];
        if (t->eos_id < 0 && t->suffix.n) t->eos_id = t->suffix.v[t->suffix.n - 1];
        for (size_t i = 0; i < 4 && t->bos_id < 0; i++) t->bos_id = tk_lookup(t, bos_names[i]);
        for (size_t i = 0; i < 4 && t->eos_id < 0; i++) t->eos_id = tk_lookup(t, eos_names[i]);
    }
    if (st != QC_OK) {
        qc_tokenizer_free(t);
        return st;
    }
    *out = t;
    return QC_OK;
}

void qc_tokenizer_free(qc_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].pattern);
    }
    free(t->added);
    tk_strmap_free(&t->added_map);
    free(t->raw.order);
    free(t->norm.order);
    tk_bpe_free(&t->bpe);
    tk_norm_free(t->normalizer);
    tk_pretok_free(t->pretok);
    tk_dec_free(t->decoder);
    free(t->prefix.v);
    free(t->suffix.v);
    free(t->tok);
    free(t->tok_len);
    free(t->special);
    free(t->path);
    free(t);
}

/* ---- encode ---- */
qc_status qc_tokenizer_encode(const qc_tokenizer *t, const char *text, size_t len, bool add_special,
                              int32_t **ids, size_t *n_ids) {
    if (!t || !ids || !n_ids || (!text && len)) return qc_fail(QC_ERR_ARG, "qc_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (len >= TK_MAX_TEXT) return qc_fail(QC_ERR_ARG, "tokenizer: text of %zu bytes is too long", len);
    size_t bad = tk_utf8_validate(text, len);
    if (bad != len) return qc_fail(QC_ERR_FORMAT, "tokenizer: invalid UTF-8 at byte %zu of the text", bad);
    tk_ctx ctx;
    qc_status st = tk_ctx_init(&ctx);
    if (st != QC_OK) return st;
    tk_pieces a = {0}, b = {0};
    tk_buf nb = {0};
    tk_ids out = {0};
#define TK_OOM() (st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory encoding %zu bytes", len))
    /* 1. added tokens in the raw text; 2. normalize the rest, then added tokens in normalized text */
    if (!tk_split_added(t, &t->raw, text ? text : "", len, true, &a)) TK_OOM();
    for (size_t i = 0; st == QC_OK && i < a.n; i++) {
        const tk_piece *p = &a.v[i];
        if (p->id >= 0) {
            if (!tk_pieces_add(&b, 0, 0, p->id, p->first)) TK_OOM();
            continue;
        }
        const char *s = a.text.p + p->off;
        size_t n = p->len;
        if (t->normalizer) {
            st = tk_norm_apply(t->normalizer, &ctx, s, n, &nb);
            s = nb.p ? nb.p : "";
            n = nb.n;
        }
        if (st == QC_OK && n > 0 && !tk_split_added(t, &t->norm, s, n, p->first, &b)) TK_OOM();
    }
    /* 3. pre-tokenize */
    tk_pieces *words = &b;
    if (st == QC_OK && t->pretok) {
        st = tk_pretok_apply(t->pretok, &ctx, &b, &a);
        words = &a;
    }
    /* 4. the model, word by word (repeated words come from the ctx's cache); 5. post-processing */
    if (st == QC_OK && add_special && !tk_ids_append(&out, t->prefix.v, t->prefix.n)) TK_OOM();
    for (size_t i = 0; st == QC_OK && i < words->n; i++) {
        const tk_piece *p = &words->v[i];
        if (p->id >= 0) {
            if (!tk_ids_push(&out, p->id)) TK_OOM();
            continue;
        }
        st = tk_bpe_word(&t->bpe, &ctx, words->text.p + p->off, p->len, &out);
    }
    if (st == QC_OK && add_special && !tk_ids_append(&out, t->suffix.v, t->suffix.n)) TK_OOM();
    if (st == QC_OK && !out.v && !(out.v = qc_malloc(sizeof *out.v))) TK_OOM();
#undef TK_OOM
    tk_pieces_free(&a);
    tk_pieces_free(&b);
    tk_buf_free(&nb);
    tk_ctx_free(&ctx);
    if (st != QC_OK) {
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n_ids = out.n;
    return QC_OK;
}

/* ---- decode ---- */
qc_status qc_tokenizer_decode(const qc_tokenizer *t, const int32_t *ids, size_t n_ids, bool skip_special,
                              char **text, size_t *len) {
    if (!t || !text || (!ids && n_ids)) return qc_fail(QC_ERR_ARG, "qc_tokenizer_decode: NULL argument");
    *text = NULL;
    if (len) *len = 0;
    tk_pieces toks = {0};
    tk_buf out = {0};
    qc_status st = QC_OK;
    /* Unknown ids are skipped, as HF does. */
    for (size_t i = 0; i < n_ids && st == QC_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size || !t->tok[id] || (skip_special && t->special[id])) continue;
        if (!tk_pieces_add_text(&toks, t->tok[id], t->tok_len[id], false))
            st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory decoding %zu ids", n_ids);
    }
    if (st == QC_OK && t->decoder) {
        tk_ctx ctx;
        st = tk_ctx_init(&ctx);
        if (st == QC_OK) {
            st = tk_dec_apply(t->decoder, &ctx, &toks, &out);
            tk_ctx_free(&ctx);
        }
    } else if (st == QC_OK) {
        for (size_t i = 0; i < toks.n && st == QC_OK; i++)
            if ((i && !tk_buf_putc(&out, ' ')) || !tk_buf_put(&out, toks.text.p + toks.v[i].off, toks.v[i].len))
                st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory decoding %zu ids", n_ids);
    }
    if (st == QC_OK && !tk_buf_put(&out, "", 0)) st = qc_fail(QC_ERR_NOMEM, "tokenizer: out of memory");
    tk_pieces_free(&toks);
    if (st != QC_OK) {
        tk_buf_free(&out);
        return st;
    }
    *text = out.p;
    if (len) *len = out.n;
    return QC_OK;
}

int32_t qc_tokenizer_vocab_size(const qc_tokenizer *t) { return t ? t->vocab_size : 0; }
int32_t qc_tokenizer_bos_id(const qc_tokenizer *t) { return t ? t->bos_id : -1; }
int32_t qc_tokenizer_eos_id(const qc_tokenizer *t) { return t ? t->eos_id : -1; }
bool qc_tokenizer_adds_bos(const qc_tokenizer *t) { return t && t->prefix.n > 0; }

const char *qc_tokenizer_token(const qc_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->vocab_size) return NULL;
    return t->tok[id];
}
