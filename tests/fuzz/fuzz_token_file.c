/* fuzz_token_file.c - libFuzzer entry for the calibration token file (datasets/token_file.h) as
 * `qcal quantize --calib-tokens` reads it: magic, header ranges, the exact size, the ids and the stored
 * sha256. A rejected buffer must come back with a message and nothing owned; an accepted one must hold
 * windows x seqlen non-negative ids whose sha256 is the stored one, and write back to the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "token_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet(qc_log_level level, const char *msg, void *user) { (void)level, (void)msg, (void)user; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) {
        qc_log_set(quiet, NULL);
        snprintf(path, sizeof path, "/tmp/qcal-fuzz-tok-%d.bin", (int)getpid());
    }
    qc_calib_set set;
    qc_token_file_info info;
    memset(&set, 0xA5, sizeof set);
    qc_error_clear();
    qc_status st = qc_token_file_parse(data, size, "fuzz", &set, &info);
    if (st != QC_OK) {
        QC_ASSERT(qc_last_error()[0] != '\0');
        return 0;
    }
    QC_ASSERT(set.nsamples >= 0 && set.seqlen >= 1);
    QC_ASSERT(size == QC_TOKEN_FILE_HEADER + (size_t)set.nsamples * (size_t)set.seqlen * 4);
    for (size_t i = 0; i < (size_t)set.nsamples * (size_t)set.seqlen; i++) QC_ASSERT(set.ids[i] >= 0);
    /* an accepted file round-trips byte for byte */
    if (qc_token_file_write(path, &set, &info) == QC_OK) {
        FILE *f = fopen(path, "rb");
        QC_ASSERT(f != NULL);
        uint8_t *back = malloc(size + 1);
        QC_ASSERT(back != NULL);
        size_t n = fread(back, 1, size + 1, f);
        fclose(f);
        QC_ASSERT(n == size && memcmp(back, data, size) == 0);
        free(back);
        unlink(path);
    }
    qc_calib_set_free(&set);
    return 0;
}
