/*
 * sha256.h - SHA-256 (FIPS 180-4), streaming. Used for the token-stream hash, recipe hashes and
 * download verification.
 *
 *   qc_sha256 h; qc_sha256_init(&h);
 *   qc_sha256_update(&h, buf, n);      // any number of times
 *   char hex[65]; qc_sha256_hex(&h, hex);
 */
#ifndef QC_SHA256_H
#define QC_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct qc_sha256 {
    uint32_t state[8];
    uint64_t nbytes;
    uint8_t  buf[64];
    size_t   nbuf;
} qc_sha256;

void qc_sha256_init(qc_sha256 *h);
void qc_sha256_update(qc_sha256 *h, const void *data, size_t n);
void qc_sha256_final(qc_sha256 *h, uint8_t out[32]);
/* Finalizes and writes 64 lowercase hex digits + NUL. */
void qc_sha256_hex(qc_sha256 *h, char out[65]);
/* One-shot convenience. */
void qc_sha256_buf(const void *data, size_t n, char out[65]);

#endif
