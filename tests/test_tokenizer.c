/*
 * test_tokenizer.c - parity of qc_tokenizer with Hugging Face `tokenizers` on the reference data
 * (test vectors and reference_eval.json, computed with tokenizers itself), the heap merge loop
 * against a plain O(n^2) twin, and handcrafted tokenizer.json files for corner cases and errors.
 *
 * `test_tokenizer` runs the fast checks; `test_tokenizer --counts` (CTest: test_tokenizer_counts,
 * label model) encodes every reference text with every tokenizer and compares the token counts.
 */
#include "testutil.h"
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */
static cJSON *load_json(const char *path) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!j) fail_msg("%s: invalid JSON", path);
    return j;
}

static qc_tokenizer *load_tok(const char *dir) {
    char *path = qc_test_require(dir);
    qc_tokenizer *t = NULL;
    QC_CHECK_OK(qc_tokenizer_load(path, &t));
    free(path);
    return t;
}

static void print_ids(const qc_tokenizer *t, const char *label, const int32_t *v, size_t n, size_t at) {
    size_t a = at > 4 ? at - 4 : 0, b = at + 5 < n ? at + 5 : n;
    fprintf(stderr, "  %s[%zu..%zu):", label, a, b);
    for (size_t i = a; i < b; i++) {
        const char *s = qc_tokenizer_token(t, v[i]);
        fprintf(stderr, " %s%d '%s'", i == at ? "*" : "", (int)v[i], s ? s : "?");
    }
    fprintf(stderr, "\n");
}

/* Compares id lists; on mismatch prints the first differing index with context and returns false. */
static bool same_ids(const qc_tokenizer *t, const char *what, const int32_t *want, size_t nw, const int32_t *got,
                     size_t ng) {
    size_t i = 0;
    while (i < nw && i < ng && want[i] == got[i]) i++;
    if (i == nw && i == ng) return true;
    fprintf(stderr, "MISMATCH %s: %zu expected ids, %zu got; first difference at index %zu\n", what, nw, ng, i);
    print_ids(t, "expected", want, nw, i);
    print_ids(t, "got     ", got, ng, i);
    return false;
}

static int32_t *json_ids(const cJSON *arr, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *v = calloc(*n + 1, sizeof *v);
    size_t i = 0;
    for (const cJSON *e = arr ? arr->child : NULL; e; e = e->next) v[i++] = (int32_t)e->valuedouble;
    return v;
}

/* Checks one case: encode(text, add_special) == ids, and decode(ids, skip_special) == decoded. */
static int check_case(const qc_tokenizer *t, const char *name, const char *text, const cJSON *ids_j,
                      const char *decoded) {
    size_t nw;
    int32_t *want = json_ids(ids_j, &nw);
    int32_t *got;
    size_t ng;
    int bad = 0;
    char what[512];
    snprintf(what, sizeof what, "%s encode(\"%.60s\")", name, text);
    QC_CHECK_OK(qc_tokenizer_encode(t, text, strlen(text), true, &got, &ng));
    if (!same_ids(t, what, want, nw, got, ng)) bad++;
    if (decoded) {
        char *s;
        size_t sl;
        QC_CHECK_OK(qc_tokenizer_decode(t, want, nw, true, &s, &sl));
        if (sl != strlen(decoded) || strcmp(s, decoded) != 0) {
            fprintf(stderr, "MISMATCH %s decode: expected \"%s\", got \"%s\"\n", name, decoded, s);
            bad++;
        }
        free(s);
    }
    free(want);
    free(got);
    return bad;
}

/* ---- reference vectors ---- */
static void run_vector_file(const char *tok_dir, const char *vec_file, const char *ids_key, bool has_decoded) {
    qc_tokenizer *t = load_tok(tok_dir);
    char *vp = qc_test_require(vec_file);
    cJSON *j = load_json(vp);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(j, "cases");
    assert_true(cJSON_GetArraySize(cases) > 0);
    int bad = 0, n = 0;
    for (const cJSON *c = cases->child; c; c = c->next, n++) {
        const cJSON *dec = has_decoded ? cJSON_GetObjectItemCaseSensitive(c, "decoded") : NULL;
        bad += check_case(t, tok_dir, cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring,
                          cJSON_GetObjectItemCaseSensitive(c, ids_key), dec ? dec->valuestring : NULL);
    }
    fprintf(stderr, "%s: %d cases, %d mismatches\n", vec_file, n, bad);
    cJSON_Delete(j);
    free(vp);
    qc_tokenizer_free(t);
    assert_int_equal(bad, 0);
}

static void test_vectors_stories260k(void **state) {
    (void)state;
    run_vector_file("stories260K", "stories260K/tokenizer_test_vectors.json", "ids_with_bos", false);
}

static void test_vectors_llama2(void **state) {
    (void)state;
    run_vector_file("tokenizers/llama2-32k", "tokenizers/llama2-32k/tokenizer_test_vectors.json", "ids_with_bos", false);
}

static void test_vectors_gpt2(void **state) {
    (void)state;
    run_vector_file("tokenizers/bytelevel-gpt2-4k", "tokenizers/bytelevel-gpt2-4k/tokenizer_test_vectors.json", "ids",
                    true);
}

static void test_vectors_llama3(void **state) {
    (void)state;
    run_vector_file("tokenizers/bytelevel-llama3-4k", "tokenizers/bytelevel-llama3-4k/tokenizer_test_vectors.json",
                    "ids", true);
}

static const char *tok_dir_of(const char *name) {
    static char buf[256];
    if (strcmp(name, "stories260K") == 0) return "stories260K";
    snprintf(buf, sizeof buf, "tokenizers/%s", name);
    return buf;
}

static void test_reference_eval_vectors(void **state) {
    (void)state;
    char *rp = qc_test_require("reference_eval.json");
    cJSON *j = load_json(rp);
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(j, "tokenizer_vectors");
    assert_non_null(tv);
    int bad = 0, n = 0, ntok = 0;
    for (const cJSON *tk = tv->child; tk; tk = tk->next, ntok++) {
        qc_tokenizer *t = load_tok(tok_dir_of(tk->string));
        for (const cJSON *c = tk->child; c; c = c->next, n++)
            bad += check_case(t, tk->string, cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring,
                              cJSON_GetObjectItemCaseSensitive(c, "ids"),
                              cJSON_GetObjectItemCaseSensitive(c, "decoded")->valuestring);
        qc_tokenizer_free(t);
    }
    fprintf(stderr, "reference_eval tokenizer_vectors: %d tokenizers, %d cases, %d mismatches\n", ntok, n, bad);
    assert_int_equal(ntok, 4);
    cJSON_Delete(j);
    free(rp);
    assert_int_equal(bad, 0);
}

/* ---- token counts over whole texts (label model) ---- */
/* GPTQ's PTB string: ' '.join of the file split at '\n'. The file ends with a newline, so the last
 * "line" is empty and the string ends with the join's space (stories260K's count depends on it). */
static char *ptb_join(const char *path, size_t *len) {
    char *raw;
    size_t n;
    QC_CHECK_OK(qc_read_file(path, 0, &raw, &n));
    for (size_t i = 0; i < n; i++)
        if (raw[i] == '\n') raw[i] = ' ';
    *len = n;
    return raw;
}

static char *load_text(const char *key, size_t *len) {
    if (strcmp(key, "ptb.test") == 0) {
        char *p = qc_test_require("text/ptb.test.txt");
        char *s = ptb_join(p, len);
        free(p);
        return s;
    }
    char rel[256];
    snprintf(rel, sizeof rel, "text/%s%s", key, strcmp(key, "wikitext2_test_gptq_eval") == 0 ? ".txt" : "");
    char *p = qc_test_require(rel), *s;
    QC_CHECK_OK(qc_read_file(p, 0, &s, len));
    free(p);
    return s;
}

static void test_token_counts(void **state) {
    (void)state;
    char *rp = qc_test_require("reference_eval.json");
    cJSON *j = load_json(rp);
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "token_counts");
    assert_non_null(tc);
    int bad = 0, n = 0;
    for (const cJSON *tk = tc->child; tk; tk = tk->next) {
        qc_tokenizer *t = load_tok(tok_dir_of(tk->string));
        for (const cJSON *c = tk->child; c; c = c->next, n++) {
            size_t len;
            char *text = load_text(c->string, &len);
            int32_t *ids;
            size_t nid;
            double t0 = qc_time_now();
            QC_CHECK_OK(qc_tokenizer_encode(t, text, len, true, &ids, &nid));
            double dt = qc_time_now() - t0;
            size_t want = (size_t)c->valuedouble;
            fprintf(stderr, "%-20s %-26s expected %7zu got %7zu %s (%.3f s)\n", tk->string, c->string, want, nid,
                    want == nid ? "ok" : "MISMATCH", dt);
            bad += want != nid;
            /* Round trip: lossless for byte-level tokenizers when specials are kept; for the others only
             * on texts without added-token strings (PTB's literal "<unk>" is the special <unk>). */
            bool bytelevel = strncmp(tk->string, "bytelevel", 9) == 0;
            bool has_added = strstr(text, "<unk>") || strstr(text, "<s>") || strstr(text, "</s>") ||
                             strstr(text, "<|endoftext|>") || strstr(text, "<|begin_of_text|>");
            char *back = NULL;
            size_t bl;
            if (bytelevel || !has_added) {
                QC_CHECK_OK(qc_tokenizer_decode(t, ids, nid, !bytelevel, &back, &bl));
                if (bl != len || memcmp(back, text, len) != 0) {
                    size_t k = 0;
                    while (k < bl && k < len && back[k] == text[k]) k++;
                    fprintf(stderr, "  decode(encode(text)) differs from the text at byte %zu (%zu vs %zu bytes)\n",
                            k, bl, len);
                    bad++;
                }
            }
            free(back);
            free(ids);
            free(text);
        }
        qc_tokenizer_free(t);
    }
    fprintf(stderr, "token_counts: %d tokenizer x text pairs, %d mismatches\n", n, bad);
    assert_int_equal(n, 20);
    cJSON_Delete(j);
    free(rp);
    assert_int_equal(bad, 0);
}

/* ---- the heap merge loop against a plain twin ---- */
/* The plain twin of HF's BPE for the SentencePiece-style files: normalize (Prepend + Replace), one
 * symbol per char (or <0xNN> bytes), then repeatedly merge the lowest-rank adjacent pair, leftmost
 * first, in O(n^2), reading vocab and merges straight from tokenizer.json. */
typedef struct { const char *s; int32_t v; } kv;

static int kv_cmp(const void *a, const void *b) { return strcmp(((const kv *)a)->s, ((const kv *)b)->s); }

static int32_t kv_find(const kv *arr, size_t n, const char *s) {
    kv key = {s, 0};
    const kv *r = bsearch(&key, arr, n, sizeof *arr, kv_cmp);
    return r ? r->v : -1;
}

typedef struct {
    cJSON *root;
    kv *vocab; size_t nv;    /* token -> id, sorted */
    kv *merges; size_t nm;   /* "a b" -> rank, sorted */
    const char **tok; size_t ntok;
} plain_bpe;

static void plain_load(plain_bpe *p, const char *path) {
    p->root = load_json(path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(p->root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    p->nv = (size_t)cJSON_GetArraySize(vocab);
    p->nm = (size_t)cJSON_GetArraySize(merges);
    p->vocab = calloc(p->nv, sizeof *p->vocab);
    p->merges = calloc(p->nm, sizeof *p->merges);
    p->ntok = p->nv;
    p->tok = calloc(p->ntok, sizeof *p->tok);
    size_t i = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, i++) {
        p->vocab[i] = (kv){e->string, (int32_t)e->valuedouble};
        assert_true((size_t)e->valuedouble < p->ntok);
        p->tok[(size_t)e->valuedouble] = e->string;
    }
    i = 0;
    for (const cJSON *e = merges->child; e; e = e->next, i++) p->merges[i] = (kv){e->valuestring, (int32_t)i};
    qsort(p->vocab, p->nv, sizeof *p->vocab, kv_cmp);
    qsort(p->merges, p->nm, sizeof *p->merges, kv_cmp); /* no duplicate merges in these files */
}

static void plain_free(plain_bpe *p) {
    free(p->vocab);
    free(p->merges);
    free(p->tok);
    cJSON_Delete(p->root);
}

static void plain_encode(const plain_bpe *p, const char *text, int32_t **out, size_t *nout) {
    size_t n = strlen(text), m = 3;
    char *norm = malloc(3 * n + 4);
    memcpy(norm, "\xE2\x96\x81", 3); /* Prepend("▁"), Replace(" ", "▁") */
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') {
            memcpy(norm + m, "\xE2\x96\x81", 3);
            m += 3;
        } else {
            norm[m++] = text[i];
        }
    }
    int32_t *sym = malloc((m + 1) * sizeof *sym);
    size_t ns = 0;
    for (size_t i = 0; i < m;) {
        unsigned char c = (unsigned char)norm[i];
        size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        char ch[8] = {0};
        memcpy(ch, norm + i, l);
        int32_t id = kv_find(p->vocab, p->nv, ch);
        if (id >= 0) {
            sym[ns++] = id;
        } else {
            for (size_t k = 0; k < l; k++) {
                char name[8];
                snprintf(name, sizeof name, "<0x%02X>", (unsigned char)norm[i + k]);
                sym[ns++] = kv_find(p->vocab, p->nv, name);
            }
        }
        i += l;
    }
    char buf[1024];
    for (;;) {
        int32_t best_rank = INT32_MAX;
        size_t best = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            snprintf(buf, sizeof buf, "%s %s", p->tok[sym[i]], p->tok[sym[i + 1]]);
            int32_t r = kv_find(p->merges, p->nm, buf);
            if (r >= 0 && r < best_rank) {
                best_rank = r;
                best = i;
            }
        }
        if (best_rank == INT32_MAX) break;
        snprintf(buf, sizeof buf, "%s%s", p->tok[sym[best]], p->tok[sym[best + 1]]);
        sym[best] = kv_find(p->vocab, p->nv, buf);
        assert_true(sym[best] >= 0);
        memmove(sym + best + 1, sym + best + 2, (ns - best - 2) * sizeof *sym);
        ns--;
    }
    free(norm);
    *out = sym;
    *nout = ns;
}

static void test_merge_loop_vs_plain_twin(void **state) {
    (void)state;
    qc_tokenizer *t = load_tok("tokenizers/llama2-32k");
    char *jp = qc_test_require("tokenizers/llama2-32k/tokenizer.json");
    plain_bpe p;
    plain_load(&p, jp);
    /* Slices of WikiText-2 (long single words: this tokenizer has no pre-tokenizer) and strings
     * that force byte fallback. */
    char *wp = qc_test_require("text/wiki.test.raw"), *wiki;
    size_t wl;
    QC_CHECK_OK(qc_read_file(wp, 0, &wiki, &wl));
    const char *extra[] = {"naïve café — 東京 🙂 \xF0\x9F\xA7\xAA", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                           "  leading and trailing  ", "\t\n\r mixed\x01 control \x7F chars"};
    int cases = 0, bad = 0;
    for (int k = 0; k < 12; k++) {
        char buf[600];
        const char *text;
        if (k < 8) {
            size_t off = (size_t)k * (wl / 8), l = 500;
            while (off < wl && ((unsigned char)wiki[off] & 0xC0) == 0x80) off++;
            while (l > 0 && ((unsigned char)wiki[off + l] & 0xC0) == 0x80) l--;
            memcpy(buf, wiki + off, l);
            buf[l] = '\0';
            text = buf;
        } else {
            text = extra[k - 8];
        }
        int32_t *want, *got;
        size_t nw, ng;
        plain_encode(&p, text, &want, &nw);
        QC_CHECK_OK(qc_tokenizer_encode(t, text, strlen(text), false, &got, &ng));
        if (!same_ids(t, "heap merge vs plain twin", want, nw, got, ng)) bad++;
        cases++;
        free(want);
        free(got);
    }
    fprintf(stderr, "merge loop vs plain twin: %d texts, %d mismatches\n", cases, bad);
    free(wiki);
    free(wp);
    plain_free(&p);
    free(jp);
    qc_tokenizer_free(t);
    assert_int_equal(bad, 0);
}

/* ---- handcrafted tokenizer.json files ---- */
static const char *write_tmp(const char *name, const char *content) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", qc_test_tmpdir(), name);
    QC_CHECK_OK(qc_write_file_atomic(path, content, strlen(content)));
    return path;
}

static void expect_ids(const qc_tokenizer *t, const char *text, bool add_special, const int32_t *want, size_t nw) {
    int32_t *got;
    size_t ng;
    QC_CHECK_OK(qc_tokenizer_encode(t, text, strlen(text), add_special, &got, &ng));
    char what[256];
    snprintf(what, sizeof what, "encode(\"%s\")", text);
    bool ok = same_ids(t, what, want, nw, got, ng);
    free(got);
    assert_true(ok);
}

static void expect_decode(const qc_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *want) {
    char *s;
    size_t l;
    QC_CHECK_OK(qc_tokenizer_decode(t, ids, n, skip, &s, &l));
    if (strcmp(s, want) != 0 || l != strlen(want)) fail_msg("decode: expected \"%s\", got \"%s\"", want, s);
    free(s);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

/* Metaspace pre-tokenizer + decoder, merges as pairs, byte fallback, added tokens with lstrip/rstrip. */
static const char META_JSON[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
    "\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":1,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":2,\"content\":\"</s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":12,\"content\":\"<mask>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":false}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"</s>\",\"type_id\":0}}],\"pair\":[],"
    "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]},"
    "\"</s>\":{\"id\":\"</s>\",\"ids\":[2],\"tokens\":[\"</s>\"]}}},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
    "\"prepend_scheme\":\"first\",\"split\":true},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"continuing_subword_prefix\":null,"
    "\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":true,\"ignore_merges\":false,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\\u2581\":3,\"a\":4,\"b\":5,\"\\u2581a\":6,\"ab\":7,"
    "\"\\u2581ab\":8,\"<0xC3>\":9,\"<0xA9>\":10,\"c\":11,\"<mask>\":12},"
    "\"merges\":[[\"a\",\"b\"],[\"\\u2581\",\"a\"],[\"\\u2581\",\"ab\"]]}}";

static void test_metaspace_bytefallback_added(void **state) {
    (void)state;
    qc_tokenizer *t;
    QC_CHECK_OK(qc_tokenizer_load(write_tmp("meta.json", META_JSON), &t));
    assert_int_equal(qc_tokenizer_vocab_size(t), 13);
    assert_int_equal(qc_tokenizer_bos_id(t), 1);
    assert_int_equal(qc_tokenizer_eos_id(t), 2);
    assert_true(qc_tokenizer_adds_bos(t));
    assert_string_equal(qc_tokenizer_token(t, 8), "\xE2\x96\x81" "ab");
    assert_null(qc_tokenizer_token(t, 13));
    assert_null(qc_tokenizer_token(t, -1));
    /* "ab ab": ▁ab ▁ab (merge a+b first, rank 0, then ▁+ab); BOS/EOS from the template */
    expect_ids(t, "ab ab", true, IDS(1, 8, 8, 2));
    expect_ids(t, "ab ab", false, IDS(8, 8));
    /* 'é' is not in the vocab: byte fallback to <0xC3><0xA9>; 'ö' has no byte tokens: one fused unk */
    expect_ids(t, "b\xC3\xA9", false, IDS(3, 5, 9, 10));
    expect_ids(t, "a\xC3\xB6\xC3\xB6", false, IDS(6, 0));
    /* prepend_scheme "first": only the piece at offset 0 of the input gets a ▁; <mask> strips the
     * spaces around it (lstrip/rstrip) */
    expect_ids(t, "ab  <mask>  ab", false, IDS(8, 12, 7));
    expect_ids(t, "<s>ab", false, IDS(1, 7));
    /* decode: the first token loses its ▁, bytes are fused back into UTF-8, specials skipped or kept */
    expect_decode(t, IDS(1, 8, 8, 3, 9, 10, 2), true, "ab ab é");
    expect_decode(t, IDS(1, 8, 2), false, "<s> ab</s>");
    /* lone invalid byte tokens decode to U+FFFD each; unknown ids are skipped */
    expect_decode(t, IDS(6, 9, 9, 99, -5), true, "a\xEF\xBF\xBD\xEF\xBF\xBD");
    qc_tokenizer_free(t);
}

/* Byte-level with the GPT-2 regex, legacy "a b" merges, no post-processor. */
static const char BL_JSON[] =
    "{\"added_tokens\":[{\"id\":7,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"
    "\"use_regex\":true},\"post_processor\":{\"type\":\"ByteLevel\",\"trim_offsets\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":null,\"vocab\":{\"\\u0120\":0,\"h\":1,\"i\":2,\"hi\":3,\"\\u0120hi\":4,"
    "\"!\":5,\"\\u010a\":6,\"<|endoftext|>\":7},\"merges\":[\"h i\",\"\\u0120 hi\"]}}";

static void test_bytelevel_prefix_space(void **state) {
    (void)state;
    qc_tokenizer *t;
    QC_CHECK_OK(qc_tokenizer_load(write_tmp("bl.json", BL_JSON), &t));
    assert_false(qc_tokenizer_adds_bos(t));
    assert_int_equal(qc_tokenizer_eos_id(t), 7);
    /* add_prefix_space: "hi" -> " hi" -> Ġhi; '?' is not in the vocab and there is no unk: dropped */
    expect_ids(t, "hi hi!?\n<|endoftext|>", true, IDS(4, 4, 5, 6, 7));
    expect_decode(t, IDS(4, 4, 5, 6, 7), true, " hi hi!\n");
    expect_decode(t, IDS(4, 7), false, " hi<|endoftext|>");
    qc_tokenizer_free(t);
}

/* continuing_subword_prefix / end_of_word_suffix (no chunking), unk without fusing, a normalizer
 * Sequence (NFKC, Lowercase), pre-tokenizers Digits + Split(Removed), no decoder. */
static const char AFFIX_JSON[] =
    "{\"added_tokens\":[],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Lowercase\"}]},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
    "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Removed\",\"invert\":false}]},"
    "\"post_processor\":null,\"decoder\":null,"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"continuing_subword_prefix\":\"##\","
    "\"end_of_word_suffix\":\"</w>\",\"fuse_unk\":false,\"byte_fallback\":false,"
    "\"vocab\":{\"<unk>\":0,\"a\":1,\"##b\":2,\"##c</w>\":3,\"ab\":4,\"abc</w>\":5,\"c</w>\":6,\"1</w>\":7,"
    "\"2</w>\":8,\"b</w>\":9,\"##b</w>\":10,\"ab</w>\":11},"
    "\"merges\":[\"a ##b\",\"ab ##c</w>\",\"a ##b</w>\"]}}";

static void test_affixes_unk_normalizers(void **state) {
    (void)state;
    qc_tokenizer *t;
    QC_CHECK_OK(qc_tokenizer_load(write_tmp("affix.json", AFFIX_JSON), &t));
    assert_int_equal(qc_tokenizer_bos_id(t), -1);
    assert_int_equal(qc_tokenizer_eos_id(t), -1);
    /* "\uFF21B 12 abc c ad add" -> NFKC+lower "ab 12 abc c ad add" -> words ab 1 2 abc c ad add */
    expect_ids(t, "\xEF\xBC\xA1" "B 12 abc c ad add", true, IDS(11, 7, 8, 5, 6, 1, 0, 1, 0, 0));
    expect_decode(t, IDS(5, 6, 0), true, "abc</w> c</w> <unk>"); /* no decoder: tokens joined by ' ' */
    qc_tokenizer_free(t);
}

static void test_errors(void **state) {
    (void)state;
    qc_tokenizer *t = NULL;
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("uni.json", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}"), &t),
                   QC_ERR_UNSUPPORTED, "Unigram");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("wp.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}"), &t),
                   QC_ERR_UNSUPPORTED, "WordPiece");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("bert.json", "{\"normalizer\":{\"type\":\"BertNormalizer\"},"
                                               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"), &t),
                   QC_ERR_UNSUPPORTED, "BertNormalizer");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("ws.json", "{\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
                                               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"), &t),
                   QC_ERR_UNSUPPORTED, "Whitespace");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("wpd.json", "{\"decoder\":{\"type\":\"WordPiece\"},"
                                               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"), &t),
                   QC_ERR_UNSUPPORTED, "WordPiece");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("bad.json", "{\"model\": {\"type\": \"BPE\", "), &t), QC_ERR_FORMAT,
                   "invalid JSON");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("mg.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                                               "\"merges\":[\"a b\"]}}"), &t),
                   QC_ERR_FORMAT, "merges[0]");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("mg2.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                                               "\"merges\":[\"a a a\"]}}"), &t),
                   QC_ERR_FORMAT, "merges[0]");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("id.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},"
                                               "\"merges\":[]}}"), &t),
                   QC_ERR_FORMAT, "vocab");
    QC_CHECK_FAILS(qc_tokenizer_load(write_tmp("re.json", "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":"
                                               "{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\",\"invert\":false},"
                                               "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"), &t),
                   QC_ERR_UNSUPPORTED, "regex");
    QC_CHECK_FAILS(qc_tokenizer_load("/nonexistent/tokenizer.json", &t), QC_ERR_IO, "/nonexistent");
    assert_null(t);

    QC_CHECK_OK(qc_tokenizer_load(write_tmp("meta.json", META_JSON), &t));
    int32_t *ids = NULL;
    size_t n = 0;
    QC_CHECK_FAILS(qc_tokenizer_encode(t, "ok \xC3\x28 bad", 9, true, &ids, &n), QC_ERR_FORMAT, "byte 3");
    QC_CHECK_FAILS(qc_tokenizer_encode(t, "\xED\xA0\x80", 3, true, &ids, &n), QC_ERR_FORMAT, "byte 0"); /* surrogate */
    QC_CHECK_FAILS(qc_tokenizer_encode(t, NULL, 3, true, &ids, &n), QC_ERR_ARG, "NULL");
    assert_null(ids);
    /* empty text: only the template's specials */
    QC_CHECK_OK(qc_tokenizer_encode(t, "", 0, true, &ids, &n));
    assert_int_equal(n, 2);
    free(ids);
    qc_tokenizer_free(t);
}

/* tokenizer_config.json beside a tokenizer.json without post-processor supplies BOS/EOS. */
static void test_config_bos_eos(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cfgtok", qc_test_tmpdir());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *nopost = strdup(META_JSON);
    char *pp = strstr(nopost, "\"post_processor\":");
    char *dec = strstr(nopost, "\"decoder\":");
    memmove(pp + strlen("\"post_processor\":null,"), dec, strlen(dec) + 1);
    memcpy(pp, "\"post_processor\":null,", strlen("\"post_processor\":null,"));
    QC_CHECK_OK(qc_write_file_atomic(path, nopost, strlen(nopost)));
    free(nopost);
    qc_tokenizer *t;
    QC_CHECK_OK(qc_tokenizer_load(dir, &t)); /* no config: nothing added */
    assert_false(qc_tokenizer_adds_bos(t));
    expect_ids(t, "ab", true, IDS(8));
    qc_tokenizer_free(t);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *cfg = "{\"add_bos_token\":true,\"add_eos_token\":true,\"bos_token\":{\"__type\":\"AddedToken\","
                      "\"content\":\"<s>\"},\"eos_token\":\"</s>\",\"tokenizer_class\":\"LlamaTokenizer\"}";
    QC_CHECK_OK(qc_write_file_atomic(path, cfg, strlen(cfg)));
    QC_CHECK_OK(qc_tokenizer_load(dir, &t));
    assert_true(qc_tokenizer_adds_bos(t));
    expect_ids(t, "ab", true, IDS(1, 8, 2));
    expect_ids(t, "ab", false, IDS(8));
    qc_tokenizer_free(t);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--counts") == 0) {
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_token_counts)};
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metaspace_bytefallback_added),
        cmocka_unit_test(test_bytelevel_prefix_space),
        cmocka_unit_test(test_affixes_unk_normalizers),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_config_bos_eos),
        cmocka_unit_test(test_vectors_stories260k),
        cmocka_unit_test(test_vectors_llama2),
        cmocka_unit_test(test_vectors_gpt2),
        cmocka_unit_test(test_vectors_llama3),
        cmocka_unit_test(test_reference_eval_vectors),
        cmocka_unit_test(test_merge_loop_vs_plain_twin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
