/*
 * tokenizer.h - byte-pair encoding exactly as Hugging Face `tokenizers` does it, from tokenizer.json.
 *
 * Two families are supported:
 *   - SentencePiece style (Llama-2, Mistral, TinyLlama): normalizer Prepend("▁") + Replace(" ", "▁")
 *     (or a Metaspace pre-tokenizer), BPE merges by rank, byte fallback to <0xNN> tokens,
 *     decoder Replace/ByteFallback/Fuse/Strip.
 *   - byte-level style (GPT-2, Llama-3, Qwen2): Split pre-tokenizer with a regex (PCRE2) and
 *     ByteLevel byte->unicode map, BPE merges by rank, ByteLevel decoder.
 * Added/special tokens are matched before the model runs (longest match, honouring lstrip/rstrip/
 * normalized flags). BOS/EOS come from the post-processor template (TemplateProcessing) or from
 * tokenizer_config.json's add_bos_token/add_eos_token when that file sits beside tokenizer.json.
 *
 * Usage:
 *   qc_tokenizer *tok;
 *   if (qc_tokenizer_load("models/llama/tokenizer.json", &tok) != QC_OK) die(qc_last_error());
 *   int32_t *ids; size_t n;
 *   qc_tokenizer_encode(tok, text, strlen(text), true, &ids, &n);   // true: add BOS/EOS per config
 *   char *s; size_t len;
 *   qc_tokenizer_decode(tok, ids, n, true, &s, &len);               // true: skip special tokens
 *   free(ids); free(s); qc_tokenizer_free(tok);
 *
 * Ownership: arrays returned by encode/decode belong to the caller (free()). A qc_tokenizer is
 * immutable after load and may be used from several threads at once.
 *
 * What is read from tokenizer.json (anything else fails to load with QC_ERR_UNSUPPORTED naming it):
 *   model           BPE (vocab; merges as "a b" or ["a", "b"]; unk_token, fuse_unk, byte_fallback,
 *                   ignore_merges, continuing_subword_prefix, end_of_word_suffix; dropout must be 0/null)
 *   normalizer      Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, ByteLevel
 *   pre_tokenizer   Sequence, Split (String/Regex, all behaviors, invert), ByteLevel, Metaspace, Digits
 *   post_processor  TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence
 *   decoder         Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel (none: join with ' ')
 *   truncation/padding are ignored (qcal encodes whole texts), with a warning.
 * Regexes are Oniguruma patterns in HF; they run on PCRE2 with \s and \w rewritten to Oniguruma's
 * Unicode classes.
 *
 * Behaviour notes:
 *   - encode(add_special=false) applies no post-processor; text that spells an added token (e.g. a
 *     literal "<unk>" in PTB) becomes that token, as in HF.
 *   - decode skips ids that are out of range or unassigned, as HF does.
 *   - tokenizer_config.json's add_bos_token/add_eos_token apply only when tokenizer.json has no
 *     post_processor (as Tokenizer.from_file(...).encode does otherwise); add_bos_token defaults to
 *     true for tokenizer_class LlamaTokenizer*, CodeLlamaTokenizer*.
 *   - bos/eos ids: tokenizer_config.json's bos_token/eos_token when present, else the first/last
 *     token the post-processor adds, else the first of <s> / <|begin_of_text|> / <|startoftext|> /
 *     <bos> (resp. </s> / <|endoftext|> / <|end_of_text|> / <eos>) that exists, else -1.
 */
#ifndef QC_TOKENIZER_H
#define QC_TOKENIZER_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_tokenizer qc_tokenizer;

/* `path` is a tokenizer.json file or a directory holding one (tokenizer_config.json beside it is
 * read when present). Unsupported components fail with QC_ERR_UNSUPPORTED naming the component. */
qc_status qc_tokenizer_load(const char *path, qc_tokenizer **out);
void      qc_tokenizer_free(qc_tokenizer *tok);

/* Encodes `len` bytes of UTF-8 text (invalid UTF-8 is an error naming the byte offset).
 * add_special: apply the post-processor (BOS etc.) as `encode(text, add_special_tokens=True)`. */
qc_status qc_tokenizer_encode(const qc_tokenizer *tok, const char *text, size_t len, bool add_special,
                              int32_t **ids, size_t *n_ids);
/* Decodes ids to UTF-8 as `decode(ids, skip_special_tokens=skip_special)`. NUL-terminated. */
qc_status qc_tokenizer_decode(const qc_tokenizer *tok, const int32_t *ids, size_t n_ids, bool skip_special,
                              char **text, size_t *len);

int32_t     qc_tokenizer_vocab_size(const qc_tokenizer *tok);  /* including added tokens: max id + 1 */
int32_t     qc_tokenizer_bos_id(const qc_tokenizer *tok);      /* -1 if none */
int32_t     qc_tokenizer_eos_id(const qc_tokenizer *tok);      /* -1 if none */
/* Whether encode(add_special=true) prepends BOS. */
bool        qc_tokenizer_adds_bos(const qc_tokenizer *tok);
const char *qc_tokenizer_token(const qc_tokenizer *tok, int32_t id); /* NULL if out of range */

#ifdef __cplusplus
}
#endif
#endif /* QC_TOKENIZER_H */
