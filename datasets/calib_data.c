#include "calib_data.h"
#include "qc_signal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pyrandom.h"
#include "sha256.h"

/* Upper bound on the tokens of a document of b bytes: every byte becomes at most one token, plus a
 * SentencePiece prefix and the special tokens a post-processor adds. */
#define TOKEN_BOUND(b) ((int64_t)(b) + 4)

typedef struct { int32_t *v; size_t n, cap; } i32vec;

static bool i32_push(i32vec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4096;
        int32_t *p = realloc(a->v, cap * sizeof *p);
        if (!p) return false;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return true;
}

void qc_tokens_sha256(const int32_t *ids, size_t n, char out[65]) {
    qc_sha256 h;
    qc_sha256_init(&h);
    uint8_t buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        buf[k++] = (uint8_t)v;
        buf[k++] = (uint8_t)(v >> 8);
        buf[k++] = (uint8_t)(v >> 16);
        buf[k++] = (uint8_t)(v >> 24);
        if (k == sizeof buf) {
            qc_sha256_update(&h, buf, k);
            k = 0;
        }
    }
    qc_sha256_update(&h, buf, k);
    qc_sha256_hex(&h, out);
}

/* AutoAWQ strips each document (Python str.strip(): ASCII and Unicode whitespace; ASCII suffices
 * for the common case and is what we implement). */
static void strip_ws(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) { (*s)++; (*n)--; }
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

typedef struct {
    const qc_calib_src *src;
    const qc_tokenizer *tok;
    const qc_calib_opts *o;
    int64_t *scanned;        /* shared progress counter */
} pass_ctx;

static qc_status progress(const pass_ctx *c) {
    (*c->scanned)++;
    if (c->o->progress && (*c->scanned % 1000) == 0 && !c->o->progress(c->o->user, *c->scanned, -1, c->src->path))
        return qc_fail(QC_ERR_CANCELLED, "calibration sampling cancelled");
    return QC_OK;
}

/* Pass 1: lengths[i] = token count of document i, or -1 when it is provably irrelevant (GPTQ: too
 * short to hold a window; AWQ: empty). AWQ marks short non-empty documents 0: accepted, read later. */
static qc_status pass1(const pass_ctx *c, i32vec *lengths) {
    qc_docs *r;
    qc_status st = qc_docs_open(c->src->path, &c->src->docs, &r);
    if (st) return st;
    const char *doc;
    size_t len;
    bool awq = c->o->sampling == QC_SAMPLING_AWQ;
    while ((st = qc_docs_next(r, &doc, &len)) == QC_OK && doc) {
        if (qc_cancel_requested()) {
            st = qc_fail(QC_ERR_CANCELLED, "calibration sampling: interrupted");
            break;
        }
        int32_t L = -1;
        if (awq) strip_ws(&doc, &len);
        bool need = awq ? TOKEN_BOUND(len) > c->o->seqlen || len == 0 : TOKEN_BOUND(len) > c->o->seqlen;
        if (need) {
            int32_t *ids;
            size_t n;
            st = qc_tokenizer_encode(c->tok, doc, len, true, &ids, &n);
            if (st) {
                qc_error_prefix("%s: document %lld", c->src->path, (long long)qc_docs_index(r) - 1);
                break;
            }
            free(ids);
            L = n > INT32_MAX ? INT32_MAX : (int32_t)n;
            if (awq && n == 0) L = -1; /* AutoAWQ skips numel() == 0 */
        } else if (awq) {
            L = 0; /* short and not empty: accepted; its tokens are read in pass 2 */
        }
        if (!i32_push(lengths, L)) {
            st = qc_fail(QC_ERR_NOMEM, "out of memory");
            break;
        }
        if ((st = progress(c))) break;
    }
    qc_docs_free(r);
    return st;
}

typedef struct { int64_t doc; int64_t start; int slot; } pick;

static int cmp_pick(const void *a, const void *b) {
    const pick *x = a, *y = b;
    if (x->doc != y->doc) return x->doc < y->doc ? -1 : 1;
    return x->slot - y->slot;
}

/* Pass 2: streams the documents again and hands each picked one (tokenized) to `take`. */
typedef qc_status (*take_fn)(void *user, int64_t doc, const int32_t *ids, size_t n);

static qc_status pass2(const pass_ctx *c, const int64_t *docs_sorted, size_t n_docs, take_fn take, void *user) {
    if (n_docs == 0) return QC_OK;
    qc_docs *r;
    qc_status st = qc_docs_open(c->src->path, &c->src->docs, &r);
    if (st) return st;
    const char *doc;
    size_t len, k = 0;
    int64_t idx = 0;
    bool awq = c->o->sampling == QC_SAMPLING_AWQ;
    while (k < n_docs && (st = qc_docs_next(r, &doc, &len)) == QC_OK && doc) {
        if (qc_cancel_requested()) {
            st = qc_fail(QC_ERR_CANCELLED, "calibration sampling: interrupted");
            break;
        }
        if (idx == docs_sorted[k]) {
            if (awq) strip_ws(&doc, &len);
            int32_t *ids;
            size_t n;
            if ((st = qc_tokenizer_encode(c->tok, doc, len, true, &ids, &n))) break;
            st = take(user, idx, ids, n);
            free(ids);
            if (st) break;
            while (k < n_docs && docs_sorted[k] == idx) k++;
        }
        idx++;
    }
    qc_docs_free(r);
    if (st == QC_OK && k < n_docs)
        st = qc_fail(QC_ERR_FORMAT, "%s: changed between the two reading passes (document %lld is gone)",
                     c->src->path, (long long)docs_sorted[k]);
    return st;
}

typedef struct {
    pick *picks;
    size_t n, next;
    int32_t *out;    /* the whole set's [nsamples, seqlen] */
    int seqlen;
    const char *path;
} gptq_take_ctx;

static qc_status gptq_take(void *user, int64_t doc, const int32_t *ids, size_t n) {
    gptq_take_ctx *g = user;
    for (; g->next < g->n && g->picks[g->next].doc == doc; g->next++) {
        const pick *p = &g->picks[g->next];
        if ((size_t)p->start + (size_t)g->seqlen > n)
            return qc_fail(QC_ERR_FORMAT, "%s: document %lld tokenized differently between passes", g->path,
                           (long long)doc);
        memcpy(g->out + (size_t)p->slot * g->seqlen, ids + p->start, (size_t)g->seqlen * sizeof(int32_t));
    }
    return QC_OK;
}

static qc_status sample_gptq(const pass_ctx *c, int want, int slot0, int32_t *out, qc_calib_src_stats *stats,
                             uint64_t seed) {
    i32vec len = {0};
    qc_status st = pass1(c, &len);
    if (st) {
        free(len.v);
        return st;
    }
    int T = c->o->seqlen;
    stats->docs = (int64_t)len.n;
    for (size_t i = 0; i < len.n; i++) stats->eligible += len.v[i] > T;
    if (want > 0 && stats->eligible == 0) {
        free(len.v);
        return qc_fail(QC_ERR_ARG, "%s: none of its %zu documents has more than %d tokens (seqlen); use a shorter "
                       "--seqlen or sampling awq", c->src->path, len.n, T);
    }
    pick *picks = calloc((size_t)(want > 0 ? want : 1), sizeof *picks);
    if (!picks) {
        free(len.v);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    qc_pyrandom rng;
    qc_pyrandom_seed(&rng, seed);
    for (int s = 0; s < want; s++) {
        int64_t i;
        do i = qc_pyrandom_randint(&rng, 0, (int64_t)len.n - 1); while (len.v[i] <= T);
        picks[s].doc = i;
        picks[s].start = qc_pyrandom_randint(&rng, 0, (int64_t)len.v[i] - T - 1);
        picks[s].slot = slot0 + s;
    }
    free(len.v);
    qsort(picks, (size_t)want, sizeof *picks, cmp_pick);
    int64_t *docs = malloc(sizeof(int64_t) * (size_t)(want > 0 ? want : 1));
    if (!docs) {
        free(picks);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    for (int s = 0; s < want; s++) docs[s] = picks[s].doc;
    gptq_take_ctx g = {.picks = picks, .n = (size_t)want, .out = out, .seqlen = T, .path = c->src->path};
    st = pass2(c, docs, (size_t)want, gptq_take, &g);
    free(docs);
    free(picks);
    stats->samples = want;
    stats->tokens = (int64_t)want * T;
    return st;
}

typedef struct {
    int64_t *order_docs;  /* accepted docs in shuffled order */
    size_t n;
    int32_t **toks;       /* per accepted position */
    size_t *ntok;
} awq_take_ctx;

static qc_status awq_take(void *user, int64_t doc, const int32_t *ids, size_t n) {
    awq_take_ctx *a = user;
    for (size_t k = 0; k < a->n; k++)
        if (a->order_docs[k] == doc) {
            a->toks[k] = malloc(sizeof(int32_t) * (n ? n : 1));
            if (!a->toks[k]) return qc_fail(QC_ERR_NOMEM, "out of memory");
            memcpy(a->toks[k], ids, n * sizeof(int32_t));
            a->ntok[k] = n;
        }
    return QC_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* AWQ protocol for one source: returns the concatenated accepted tokens in *cat. */
static qc_status sample_awq(const pass_ctx *c, int want, uint64_t seed, i32vec *cat, qc_calib_src_stats *stats) {
    i32vec len = {0};
    qc_status st = pass1(c, &len);
    if (st) {
        free(len.v);
        return st;
    }
    stats->docs = (int64_t)len.n;
    int64_t *perm = malloc(sizeof(int64_t) * (len.n ? len.n : 1));
    if (!perm) {
        free(len.v);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < len.n; i++) perm[i] = (int64_t)i;
    qc_pyrandom rng;
    qc_pyrandom_seed(&rng, seed);
    for (size_t i = len.n; i-- > 1;) { /* random.shuffle */
        int64_t j = qc_pyrandom_randint(&rng, 0, (int64_t)i);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    size_t n_acc = 0;
    for (size_t i = 0; i < len.n && n_acc < (size_t)want; i++) {
        int32_t L = len.v[perm[i]];
        if (L >= 0 && L <= c->o->seqlen) perm[n_acc++] = perm[i];
    }
    free(len.v);
    stats->eligible = (int64_t)n_acc;
    awq_take_ctx a = {.order_docs = perm, .n = n_acc, .toks = calloc(n_acc ? n_acc : 1, sizeof(int32_t *)),
                      .ntok = calloc(n_acc ? n_acc : 1, sizeof(size_t))};
    int64_t *sorted = malloc(sizeof(int64_t) * (n_acc ? n_acc : 1));
    if (!a.toks || !a.ntok || !sorted) st = qc_fail(QC_ERR_NOMEM, "out of memory");
    if (st == QC_OK) {
        memcpy(sorted, perm, n_acc * sizeof(int64_t));
        qsort(sorted, n_acc, sizeof(int64_t), cmp_i64);
        st = pass2(c, sorted, n_acc, awq_take, &a);
    }
    for (size_t k = 0; st == QC_OK && k < n_acc; k++) {
        for (size_t t = 0; t < a.ntok[k]; t++)
            if (!i32_push(cat, a.toks[k][t])) {
                st = qc_fail(QC_ERR_NOMEM, "out of memory");
                break;
            }
    }
    for (size_t k = 0; a.toks && k < n_acc; k++) free(a.toks[k]);
    free(a.toks);
    free(a.ntok);
    free(sorted);
    free(perm);
    return st;
}

void qc_calib_set_free(qc_calib_set *s) {
    free(s->ids);
    free(s->src);
    memset(s, 0, sizeof *s);
}

qc_status qc_calib_sample(const qc_calib_src *src, int n_src, const qc_tokenizer *tok, const qc_calib_opts *o,
                          qc_calib_set *out) {
    memset(out, 0, sizeof *out);
    if (n_src < 1) return qc_fail(QC_ERR_ARG, "calibration: no data source given");
    if (o->nsamples < 1 || o->seqlen < 2)
        return qc_fail(QC_ERR_ARG, "calibration: nsamples must be >= 1 and seqlen >= 2 (got %d, %d)", o->nsamples,
                       o->seqlen);
    double wsum = 0.0;
    for (int s = 0; s < n_src; s++) {
        if (!(src[s].weight > 0.0) || !isfinite(src[s].weight))
            return qc_fail(QC_ERR_ARG, "calibration source %s: weight must be a positive number", src[s].path);
        wsum += src[s].weight;
    }
    /* largest-remainder allocation of the samples to sources */
    int *alloc = calloc((size_t)n_src, sizeof(int));
    double *rem = calloc((size_t)n_src, sizeof(double));
    out->src = calloc((size_t)n_src, sizeof *out->src);
    if (!alloc || !rem || !out->src) {
        free(alloc);
        free(rem);
        qc_calib_set_free(out);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    out->n_src = n_src;
    int given = 0;
    for (int s = 0; s < n_src; s++) {
        double share = o->nsamples * src[s].weight / wsum;
        alloc[s] = (int)floor(share);
        rem[s] = share - alloc[s];
        given += alloc[s];
    }
    while (given < o->nsamples) {
        int best = 0;
        for (int s = 1; s < n_src; s++)
            if (rem[s] > rem[best]) best = s;
        alloc[best]++;
        rem[best] = -1.0;
        given++;
    }
    free(rem);

    int64_t scanned = 0;
    qc_status st = QC_OK;
    int T = o->seqlen;
    if (o->sampling == QC_SAMPLING_GPTQ) {
        out->ids = malloc(sizeof(int32_t) * (size_t)o->nsamples * (size_t)T);
        if (!out->ids) st = qc_fail(QC_ERR_NOMEM, "calibration: cannot hold %d x %d tokens", o->nsamples, T);
        int slot = 0;
        for (int s = 0; st == QC_OK && s < n_src; s++) {
            pass_ctx c = {.src = &src[s], .tok = tok, .o = o, .scanned = &scanned};
            st = sample_gptq(&c, alloc[s], slot, out->ids, &out->src[s], o->seed + (uint64_t)s);
            slot += alloc[s];
        }
        out->nsamples = o->nsamples;
    } else {
        i32vec all = {0};
        for (int s = 0; st == QC_OK && s < n_src; s++) {
            pass_ctx c = {.src = &src[s], .tok = tok, .o = o, .scanned = &scanned};
            i32vec cat = {0};
            st = sample_awq(&c, alloc[s], o->seed + (uint64_t)s, &cat, &out->src[s]);
            /* each source contributes whole blocks, so mixtures keep their proportions */
            size_t blocks = cat.n / (size_t)T;
            for (size_t t = 0; st == QC_OK && t < blocks * (size_t)T; t++)
                if (!i32_push(&all, cat.v[t])) st = qc_fail(QC_ERR_NOMEM, "out of memory");
            out->src[s].samples = (int)blocks;
            out->src[s].tokens = (int64_t)blocks * T;
            free(cat.v);
        }
        out->ids = all.v;
        out->nsamples = (int)(all.n / (size_t)T);
        if (st == QC_OK && out->nsamples == 0)
            st = qc_fail(QC_ERR_ARG, "calibration (awq sampling): the accepted documents hold fewer than %d tokens "
                         "in all (awq sampling accepts only documents of at most seqlen = %d tokens, as AutoAWQ does); use a "
                         "longer --seqlen, more --nsamples or a source with more short documents", T, T);
    }
    free(alloc);
    if (st != QC_OK) {
        qc_calib_set_free(out);
        return st;
    }
    out->seqlen = T;
    qc_tokens_sha256(out->ids, (size_t)out->nsamples * T, out->sha256);
    return QC_OK;
}
