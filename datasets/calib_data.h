/*
 * calib_data.h - calibration token windows from one or more document sources.
 *
 * Two protocols:
 *   QC_SAMPLING_GPTQ (IST-DASLab get_c4): random.seed(seed); for each sample: draw a document index
 *     i = randint(0, ndocs-1) until the document has more than seqlen tokens (BOS included, as the
 *     reference tokenizer adds it), then start = randint(0, len-seqlen-1) and take tokens
 *     [start, start+seqlen). The generator is CPython's (pyrandom.h), so given the same documents in
 *     the same order and the same token ids, the windows are the reference's. (The reference's
 *     `len >= seqlen` test would crash on len == seqlen; like the spec's [DECISION] we require >.)
 *   QC_SAMPLING_AWQ (AutoAWQ/llm-awq pile-val): documents in a seeded random order (CPython
 *     random.shuffle of the indices), each stripped of surrounding whitespace and encoded with BOS;
 *     empty ones and those longer than seqlen are skipped; after nsamples accepted documents the
 *     tokens are concatenated and cut into floor(total/seqlen) blocks -- usually fewer than nsamples.
 *     (AutoAWQ shuffles with HF datasets' numpy permutation with seed 42; that exact order is not
 *     reproduced.)
 * Mixtures: each source gets round(nsamples * weight / sum of weights) of the samples (largest
 * remainder), and draws with its own generator seeded with seed + source index; windows are stored
 * source by source. The SHA-256 of all window tokens (int32 little-endian, in order) identifies the
 * data a run saw.
 *
 * Memory stays flat whatever the source size: pass 1 streams the documents and keeps one int32 per
 * document (its token count, or -1 when its byte length already proves it too short), pass 2 streams
 * them again and copies out only the chosen windows.
 */
#ifndef QC_CALIB_DATA_H
#define QC_CALIB_DATA_H

#include "docs.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qc_sampling { QC_SAMPLING_GPTQ = 0, QC_SAMPLING_AWQ = 1 } qc_sampling;

typedef struct qc_calib_src {
    const char  *path;      /* local file (hf:// references are resolved by the caller) */
    qc_docs_opts docs;      /* format, field, split */
    double       weight;    /* > 0 */
} qc_calib_src;

typedef struct qc_calib_src_stats {
    int64_t docs;           /* documents in the source */
    int64_t eligible;       /* documents long enough (GPTQ) / accepted (AWQ) */
    int     samples;        /* windows taken from it */
    int64_t tokens;         /* tokens in those windows */
} qc_calib_src_stats;

typedef struct qc_calib_set {
    int32_t *ids;           /* [nsamples, seqlen] row-major; owned (qc_calib_set_free) */
    int      nsamples;      /* windows produced (AWQ: may be fewer than asked) */
    int      seqlen;
    char     sha256[65];    /* of ids as int32 little-endian */
    int      n_src;
    qc_calib_src_stats *src;/* [n_src], owned */
} qc_calib_set;

typedef struct qc_calib_opts {
    qc_sampling    sampling;
    int            nsamples;
    int            seqlen;
    uint64_t       seed;
    qc_progress_fn progress; /* documents scanned; may be NULL */
    void          *user;
} qc_calib_opts;

qc_status qc_calib_sample(const qc_calib_src *src, int n_src, const qc_tokenizer *tok, const qc_calib_opts *opts,
                          qc_calib_set *out);
void      qc_calib_set_free(qc_calib_set *s);
/* SHA-256 of n int32 token ids as little-endian bytes. */
void      qc_tokens_sha256(const int32_t *ids, size_t n, char out[65]);

#ifdef __cplusplus
}
#endif
#endif /* QC_CALIB_DATA_H */
