/* qc_cmp_codes A B: how many packed integer codes differ between two quantized checkpoints of the
 * same model and layout (GPTQ or AWQ, 2/4/8 bits: fields of `bits` bits in each int32 word of every
 * *.qweight tensor). Prints "codes: D of T differ (F)" and the worst tensor; exit 1 on a layout
 * mismatch. Used by the GPU-vs-CPU parity test and benchmark. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: qc_cmp_codes BITS CHECKPOINT_A CHECKPOINT_B\n");
        return 2;
    }
    int bits = atoi(argv[1]);
    if (bits != 2 && bits != 4 && bits != 8) {
        fprintf(stderr, "qc_cmp_codes: bits must be 2, 4 or 8\n");
        return 2;
    }
    qc_weights *a = NULL, *b = NULL;
    if (qc_weights_open(argv[2], &a) || qc_weights_open(argv[3], &b)) {
        fprintf(stderr, "qc_cmp_codes: %s\n", qc_last_error());
        return 1;
    }
    unsigned long long diff = 0, total = 0;
    double worst = -1;
    char worst_name[256] = "";
    int n_t = 0;
    for (size_t i = 0; i < qc_weights_count(a); i++) {
        const qc_tensor *ta = qc_weights_get(a, i);
        size_t L = strlen(ta->name);
        if (L < 8 || strcmp(ta->name + L - 8, ".qweight") != 0) continue;
        const qc_tensor *tb = qc_weights_find(b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != QC_DTYPE_I32) {
            fprintf(stderr, "qc_cmp_codes: %s: missing or different shape in %s\n", ta->name, argv[3]);
            return 1;
        }
        unsigned long long d = 0, n = 0;
        uint32_t mask = bits == 8 ? 0xffu : bits == 4 ? 0xfu : 0x3u;
        for (int64_t k = 0; k < ta->numel; k++) {
            uint32_t wa, wb;
            memcpy(&wa, (const char *)ta->data + 4 * k, 4);
            memcpy(&wb, (const char *)tb->data + 4 * k, 4);
            uint32_t x = wa ^ wb;
            for (int s = 0; s < 32; s += bits) d += ((x >> s) & mask) != 0;
            n += 32 / bits;
        }
        double f = n ? (double)d / n : 0;
        if (f > worst) {
            worst = f;
            snprintf(worst_name, sizeof worst_name, "%s", ta->name);
        }
        diff += d;
        total += n;
        n_t++;
    }
    if (!n_t) {
        fprintf(stderr, "qc_cmp_codes: no .qweight tensors in %s\n", argv[2]);
        return 1;
    }
    printf("codes: %llu of %llu differ (%.6f) over %d tensors; worst %s (%.6f)\n", diff, total,
           (double)diff / (double)total, n_t, worst_name, worst);
    qc_weights_free(a);
    qc_weights_free(b);
    return 0;
}
