/*
 * token_file.h - calibration token windows saved once and read back by the runs that share them
 * (`qcal calib --save-tokens FILE`, the experiment runner's DIR/tokens/<token-sha256>.bin), so that a
 * run given `qcal quantize --calib-tokens FILE` sees exactly the windows it would have sampled itself.
 *
 * Byte layout (every integer little-endian; the file is exactly 160 + windows * seqlen * 4 bytes):
 *   off  size
 *     0     8  magic "QCALTOK1"
 *     8     4  u32 sampling        qc_sampling (0 gptq, 1 awq)
 *    12     4  u32 nsamples        the windows asked for (the recipe's nsamples)
 *    16     4  u32 windows         the windows held: == nsamples for gptq sampling, <= for awq
 *    20     4  u32 seqlen          tokens per window
 *    24     8  u64 seed            the sampling seed
 *    32    64  token sha256        lowercase hex of the ids as int32 little-endian (qc_tokens_sha256)
 *    96    64  origin              lowercase hex chosen by the writer to recognise what it sampled (the
 *                                  experiment runner: a hash of tokenizer, sources, settings); all '0'
 *                                  when none. Readers other than the writer ignore it.
 *   160  4*W*S int32 ids           [windows, seqlen] row-major, each in [0, 2^31)
 * The reader checks the magic, the header's ranges (windows <= nsamples <= QC_TOKEN_FILE_MAX_WINDOWS,
 * seqlen <= QC_TOKEN_FILE_MAX_SEQLEN, hex digits), the exact file size, non-negative ids and that the
 * SHA-256 of the ids equals the stored one; errors are QC_ERR_FORMAT (QC_ERR_IO for an unreadable file)
 * and name the file. Whether the windows fit a recipe and a vocabulary is the caller's check.
 *
 *   qc_calib_set set;                       // from qc_calib_sample
 *   qc_token_file_info info = {.sampling = QC_SAMPLING_GPTQ, .nsamples = 128, .seed = 0};
 *   qc_token_file_write("tokens.bin", &set, &info);
 *   ...
 *   qc_calib_set in;  qc_token_file_info got;
 *   if (qc_token_file_read("tokens.bin", &in, &got)) die(qc_last_error());
 *   qc_calib_set_free(&in);
 *
 * Ownership: a read set's ids are owned by it (qc_calib_set_free); it has no per-source stats (n_src 0).
 */
#ifndef QC_TOKEN_FILE_H
#define QC_TOKEN_FILE_H

#include "calib_data.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QC_TOKEN_FILE_MAGIC       "QCALTOK1"
#define QC_TOKEN_FILE_HEADER      160
#define QC_TOKEN_FILE_MAX_WINDOWS (1 << 20)
#define QC_TOKEN_FILE_MAX_SEQLEN  (1 << 20)

typedef struct qc_token_file_info {
    qc_sampling sampling;
    int         nsamples;    /* asked for; the set's nsamples is the windows held */
    uint64_t    seed;
    char        origin[65];  /* hex, or "" (written as zeros) */
} qc_token_file_info;

/* Writes set (its ids, nsamples = windows, seqlen, sha256) atomically: path.tmp, fsync, rename. */
qc_status qc_token_file_write(const char *path, const qc_calib_set *set, const qc_token_file_info *info);

/* Parses a whole file held in buf[len]; name is what errors call it. */
qc_status qc_token_file_parse(const void *buf, size_t len, const char *name, qc_calib_set *out, qc_token_file_info *info);
/* Reads and parses path. info may be NULL. */
qc_status qc_token_file_read(const char *path, qc_calib_set *out, qc_token_file_info *info);
/* Reads only the header (no size or hash check): for finding a file by its origin. */
qc_status qc_token_file_peek(const char *path, qc_token_file_info *info, char sha256[65]);

#ifdef __cplusplus
}
#endif
#endif /* QC_TOKEN_FILE_H */
