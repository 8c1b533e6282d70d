/* fuzz_tokenizer.c - libFuzzer entry for the tokenizer.json loader (qc_tokenizer_load: BPE vocab and
 * merges, added tokens, normalizer / pre-tokenizer / post-processor / decoder trees, Oniguruma patterns
 * translated to PCRE2, tokenizer_config.json) and, when a file loads, for encode and decode with it.
 *
 * qc_tokenizer_load only takes a path, so the input is written into a private temporary directory (made
 * once per process, removed at exit). Bytes before the first NUL are tokenizer.json; bytes after it, if
 * there is a NUL, are tokenizer_config.json beside it (a NUL cannot occur in JSON text, so no input that
 * means something as tokenizer.json is lost to the split).
 *
 * A rejected file must come back with no tokenizer and a message (not always naming the file: a regex that
 * fails while added tokens are normalized says only "tokenizer: regex match failed"). A loaded one encodes
 * a fixed text; every id it returns must be below the vocab size, and the ids decode again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64], g_json[128], g_cfg[128];

static void quiet(qc_log_level level, const char *msg, void *user) { (void)level, (void)msg, (void)user; }

static void cleanup(void) {
    unlink(g_json);
    unlink(g_cfg);
    rmdir(g_dir);
}

static void setup(void) {
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/qcal-fuzz-tok-XXXXXX", tmp);
    QC_ASSERT(mkdtemp(g_dir) != NULL);
    snprintf(g_json, sizeof g_json, "%s/tokenizer.json", g_dir);
    snprintf(g_cfg, sizeof g_cfg, "%s/tokenizer_config.json", g_dir);
    atexit(cleanup);
    qc_log_set(quiet, NULL); /* warnings are formatted, not printed */
}

static void put(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    QC_ASSERT(f != NULL);
    QC_ASSERT(fwrite(p, 1, n, f) == n || n == 0);
    QC_ASSERT(fclose(f) == 0);
}

/* One short text that reaches every stage: spaces, tabs and newlines, digits, punctuation and contractions,
 * spellings of common special tokens, multi-byte UTF-8 (a combining mark, a fullwidth letter, CJK, an
 * emoji, U+2581). It is encoded once with and once without the post-processor: each call sets up its own
 * scratch (a word cache among it), which costs more than the encoding, so one text rather than several. */
static const char g_text[] =
    "Hello world, the cat sat.  two  spaces\tand\nnew\r\nlines 12345 x=y+z; it's I'LL we've "
    "<s>a</s> <unk> [CLS] <|endoftext|> <mask> hello world "
    "\xc3\xbcnic\xcc\x88ode \xef\xbc\xa1 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xe2\x96\x81x  ";

static volatile unsigned g_sink;

static void exercise(const qc_tokenizer *tok) {
    int32_t vs = qc_tokenizer_vocab_size(tok);
    QC_ASSERT(vs >= 0);
    int32_t bos = qc_tokenizer_bos_id(tok), eos = qc_tokenizer_eos_id(tok);
    QC_ASSERT(bos >= -1 && bos < vs && eos >= -1 && eos < vs);
    QC_ASSERT(qc_tokenizer_token(tok, -1) == NULL && qc_tokenizer_token(tok, vs) == NULL);
    unsigned sum = 0;
    for (int32_t i = 0; i < vs && i < 64; i++) {
        const char *s = qc_tokenizer_token(tok, i);
        if (s) sum += (unsigned)strlen(s);
    }
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        qc_error_clear();
        if (qc_tokenizer_encode(tok, g_text, sizeof g_text - 1, special, &ids, &n) != QC_OK) {
            QC_ASSERT(qc_last_error()[0] != '\0');
            continue;
        }
        QC_ASSERT(ids != NULL || n == 0);
        for (size_t i = 0; i < n; i++) QC_ASSERT(ids[i] >= 0 && ids[i] < vs);
        char *text = NULL;
        size_t len = 0;
        if (qc_tokenizer_decode(tok, ids, n, special, &text, &len) == QC_OK) {
            QC_ASSERT(text != NULL && text[len] == '\0');
            for (size_t i = 0; i < len; i++) sum += (unsigned char)text[i];
        }
        free(text);
        free(ids);
    }
    g_sink = sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    put(g_json, data, json_len);
    if (nul) put(g_cfg, nul + 1, size - json_len - 1);
    else unlink(g_cfg);

    qc_tokenizer *tok = (qc_tokenizer *)&size; /* must be overwritten */
    qc_error_clear();
    if (qc_tokenizer_load(g_dir, &tok) != QC_OK) {
        QC_ASSERT(tok == NULL);
        QC_ASSERT(qc_last_error()[0] != '\0');
        return 0;
    }
    QC_ASSERT(tok != NULL);
    exercise(tok);
    qc_tokenizer_free(tok);
    return 0;
}
