/*
 * tokenizer_internal.h - pieces shared by tokenizer.c and tokenizer_*.c; not part of the public API.
 *
 * The tokenizer mirrors the stages of Hugging Face `tokenizers`:
 *   added-token split (raw) -> normalizer -> added-token split (normalized) -> pre-tokenizer
 *   -> BPE model per word -> post-processor;   decode: ids -> token strings -> decoder chain.
 * Text moves between stages as a tk_pieces list: one byte buffer and (offset, length) slices of it.
 *
 * Ownership: every struct here owns what its pointers point to unless the field says "borrowed";
 * each *_free releases it. Nothing here is thread-local: per-call state lives in tk_ctx.
 */
#ifndef QC_TOKENIZER_INTERNAL_H
#define QC_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "qc_common.h"

/* Caps on what a tokenizer.json may ask for (real files are far below them). */
#define TK_MAX_VOCAB  (1 << 24)          /* ids are 0 .. TK_MAX_VOCAB-1 */
#define TK_MAX_TEXT   ((size_t)1 << 31)  /* bytes of text per encode call */
#define TK_MAX_DEPTH  16                 /* nesting of Sequence components */
#define TK_CACHE_MAX_WORD 256            /* words at least this long are not cached (as in HF) */

/* ---- growable byte buffer ---- */
typedef struct { char *p; size_t n, cap; } tk_buf;
bool tk_buf_reserve(tk_buf *b, size_t extra);
bool tk_buf_put(tk_buf *b, const void *s, size_t n);
static inline bool tk_buf_putc(tk_buf *b, char c) { return tk_buf_put(b, &c, 1); }
void tk_buf_free(tk_buf *b);

/* ---- growable id array ---- */
typedef struct { int32_t *v; size_t n, cap; } tk_ids;
bool tk_ids_push(tk_ids *a, int32_t id);
bool tk_ids_append(tk_ids *a, const int32_t *v, size_t n);
/* Appends a->v[start .. start+count) to a itself. */
bool tk_ids_append_self(tk_ids *a, size_t start, size_t count);

/* ---- a list of text slices (or resolved tokens) over one buffer ---- */
typedef struct {
    size_t off, len;   /* slice of tk_pieces.text */
    int32_t id;        /* >= 0: an added token already resolved (no text processing); -1: text */
    bool first;        /* the slice starts at offset 0 of the original input (Metaspace "first") */
} tk_piece;
typedef struct { tk_piece *v; size_t n, cap; tk_buf text; } tk_pieces;
bool tk_pieces_add(tk_pieces *p, size_t off, size_t len, int32_t id, bool first);
/* Appends bytes to the text buffer and a piece for them. */
bool tk_pieces_add_text(tk_pieces *p, const char *s, size_t len, bool first);
void tk_pieces_reset(tk_pieces *p); /* keeps the memory */
void tk_pieces_free(tk_pieces *p);

/* ---- open-addressing hash map: byte string -> uint64 (keys are borrowed) ---- */
typedef struct { const char *key; uint32_t len; uint32_t hash; uint64_t val; } tk_sm_slot;
typedef struct { tk_sm_slot *slots; size_t cap, count; } tk_strmap;
bool tk_strmap_init(tk_strmap *m, size_t expected);
bool tk_strmap_put(tk_strmap *m, const char *key, size_t len, uint64_t val); /* overwrites */
bool tk_strmap_get(const tk_strmap *m, const char *key, size_t len, uint64_t *val);
void tk_strmap_free(tk_strmap *m);

/* ---- UTF-8 ---- */
/* Length of the valid UTF-8 sequence at s[0..n) (1..4), 0 if invalid; *cp receives the code point. */
int tk_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
size_t tk_utf8_validate(const char *s, size_t n);
/* Appends s decoded as Rust's String::from_utf8_lossy does (one U+FFFD per maximal invalid part). */
bool tk_utf8_lossy(tk_buf *out, const char *s, size_t n);
int tk_utf8_encode(uint32_t cp, char out[4]);
bool tk_is_white_space(uint32_t cp);   /* Unicode White_Space (Rust char::is_whitespace) */
bool tk_is_numeric(uint32_t cp);       /* general category N* (Rust char::is_numeric) */
bool tk_is_word_char(uint32_t cp);     /* Rust regex \w: alphabetic, marks, Nd, Pc, Join_Control */

/* ---- GPT-2 byte <-> unicode map ---- */
typedef struct {
    char enc[256][3];  /* UTF-8 of the code point standing for each byte */
    uint8_t enc_len[256];
    int16_t dec[324];  /* code point (< 324) -> byte, -1 if not in the map */
} tk_bytemap;
extern const tk_bytemap *tk_bytemap_get(void);

/* ---- patterns: a literal string or a PCRE2 regex (Oniguruma semantics translated) ---- */
typedef struct {
    char *literal; size_t literal_len; /* literal pattern when re == NULL */
    pcre2_code *re;
} tk_pattern;
/* Parses {"String": "..."} or {"Regex": "..."}; `where` names the JSON field for messages. */
qc_status tk_pattern_parse(const cJSON *j, const char *where, tk_pattern *out);
qc_status tk_pattern_regex(const char *onig_pattern, const char *where, tk_pattern *out);
void tk_pattern_free(tk_pattern *p);

/* Per-call scratch: regex match data, BPE work arrays and the word cache. One per encode/decode call. */
typedef struct tk_sym { int32_t c, prev, next; uint32_t len; } tk_sym;
typedef struct tk_merge_ent { uint32_t rank, pos; int32_t new_id; } tk_merge_ent;
typedef struct {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    tk_sym *syms; size_t syms_cap;
    tk_merge_ent *heap; size_t heap_cap;
    /* word -> (start << 32 | count) of its ids in the one output array of this call; keys are
     * borrowed from the caller's text, which must outlive the call */
    tk_strmap cache;
} tk_ctx;
qc_status tk_ctx_init(tk_ctx *c);
void tk_ctx_free(tk_ctx *c);

/* Match sequence of a pattern over s[0..n) the way HF's find_matches walks it: (start, end, is_match)
 * spans covering the whole string in order. Callback returns false to stop with QC_ERR_NOMEM. */
typedef bool (*tk_span_fn)(void *user, size_t start, size_t end, bool is_match);
qc_status tk_pattern_spans(const tk_pattern *p, tk_ctx *c, const char *s, size_t n, tk_span_fn fn, void *user);

/* ---- BPE model ---- */
typedef struct { uint64_t key; uint32_t rank; int32_t new_id; } tk_merge_slot;
typedef struct {
    tk_strmap vocab;            /* token -> id (keys point into tok[]) */
    char **tok; uint32_t *tok_len; int32_t n_ids; /* id -> token (NULL for holes), n_ids = max id + 1 */
    tk_merge_slot *merges; size_t merges_cap, n_merges;
    int32_t unk_id;             /* -1: no unk token configured */
    char *unk_token;            /* configured but maybe absent from the vocab (HF fails only when needed) */
    bool fuse_unk, byte_fallback, ignore_merges;
    char *cont_prefix, *eow_suffix; /* continuing_subword_prefix, end_of_word_suffix (NULL if none) */
    int32_t byte_ids[256];      /* <0xNN> tokens, -1 where absent */
    int32_t ascii_ids[128];     /* single ASCII char tokens (when no prefix/suffix), -1 where absent */
    int32_t *bmp_ids;           /* single-char tokens for code points < 0x10000 (when no prefix/suffix) */
    /* Chunking (see tk_bpe_word): every adjacent code-point pair occurring inside a vocab token. */
    uint64_t *bigrams; size_t bigrams_cap, n_bigrams;
    bool chunkable;
} tk_bpe;
qc_status tk_bpe_load(const cJSON *model, const char *path, tk_bpe *out);
void tk_bpe_free(tk_bpe *m);
int32_t tk_bpe_token_id(const tk_bpe *m, const char *s, size_t n); /* -1 if absent */
/* Appends the ids of one pre-tokenized word (HF BPE::tokenize without dropout) to out. Every call
 * of one tk_ctx must append to the same `out` (the cache points into it), and w must stay valid
 * until the ctx is freed. */
qc_status tk_bpe_word(const tk_bpe *m, tk_ctx *c, const char *w, size_t n, tk_ids *out);

/* ---- normalizers, pre-tokenizers, decoders (tokenizer_pipeline.c) ---- */
typedef struct tk_norm tk_norm;
typedef struct tk_pretok tk_pretok;
typedef struct tk_dec tk_dec;
/* JSON null -> *out = NULL. Unknown types fail with QC_ERR_UNSUPPORTED naming the type. */
qc_status tk_norm_parse(const cJSON *j, const char *path, int depth, tk_norm **out);
qc_status tk_pretok_parse(const cJSON *j, const char *path, int depth, tk_pretok **out);
qc_status tk_dec_parse(const cJSON *j, const char *path, int depth, tk_dec **out);
void tk_norm_free(tk_norm *n);
void tk_pretok_free(tk_pretok *p);
void tk_dec_free(tk_dec *d);
/* Normalizes s[0..n) into *out (cleared first). */
qc_status tk_norm_apply(const tk_norm *n, tk_ctx *c, const char *s, size_t len, tk_buf *out);
/* Pre-tokenizes every text piece of *in into *out (resolved pieces pass through); *in is consumed
 * as scratch. */
qc_status tk_pretok_apply(const tk_pretok *p, tk_ctx *c, tk_pieces *in, tk_pieces *out);
/* Runs the decoder chain over the token strings in *toks (consumed) and appends the joined text. */
qc_status tk_dec_apply(const tk_dec *d, tk_ctx *c, tk_pieces *toks, tk_buf *out);

#endif /* QC_TOKENIZER_INTERNAL_H */
