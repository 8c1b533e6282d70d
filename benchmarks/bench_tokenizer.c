/*
 * bench_tokenizer.c - encode speed of qc_tokenizer on the WikiText-2 evaluation string.
 *
 *   bench_tokenizer [-n RUNS] [-d DATA_DIR]      (DATA_DIR defaults to $QCAL_DATA or ../shared/data)
 *
 * For each tokenizer (llama2-32k: SentencePiece-style, the whole text is one word; the byte-level
 * GPT-2 and Llama-3 layouts) it loads tokenizer.json, encodes the file RUNS times and prints the
 * best and mean wall time per encode, MB/s and tokens/s, then decodes once. Peak RSS at the end.
 */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int runs = 5;
    const char *data = getenv("QCAL_DATA");
    if (!data || !*data) data = "../shared/data";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) data = argv[++i];
        else {
            fprintf(stderr, "usage: %s [-n RUNS] [-d DATA_DIR]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1) runs = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/text/wikitext2_test_gptq_eval.txt", data);
    char *text;
    size_t len;
    if (qc_read_file(path, 0, &text, &len) != QC_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", qc_last_error());
        return 1;
    }
    printf("text: %s (%.2f MB), %d runs per tokenizer\n", path, (double)len / 1e6, runs);
    printf("%-22s %8s %10s %10s %10s %9s %12s %9s\n", "tokenizer", "load_s", "best_s", "mean_s", "tokens",
           "MB/s", "tokens/s", "decode_s");
    const char *names[] = {"tokenizers/llama2-32k", "tokenizers/bytelevel-gpt2-4k", "tokenizers/bytelevel-llama3-4k"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        snprintf(path, sizeof path, "%s/%s", data, names[k]);
        qc_tokenizer *tok;
        double t0 = qc_time_now();
        if (qc_tokenizer_load(path, &tok) != QC_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", qc_last_error());
            free(text);
            return 1;
        }
        double load_s = qc_time_now() - t0, best = 1e30, sum = 0;
        size_t n = 0;
        int32_t *ids = NULL;
        for (int r = 0; r < runs; r++) {
            free(ids);
            t0 = qc_time_now();
            if (qc_tokenizer_encode(tok, text, len, true, &ids, &n) != QC_OK) {
                fprintf(stderr, "bench_tokenizer: %s\n", qc_last_error());
                return 1;
            }
            double dt = qc_time_now() - t0;
            sum += dt;
            if (dt < best) best = dt;
        }
        char *back;
        size_t bl;
        t0 = qc_time_now();
        if (qc_tokenizer_decode(tok, ids, n, true, &back, &bl) != QC_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", qc_last_error());
            return 1;
        }
        double dec_s = qc_time_now() - t0;
        printf("%-22s %8.3f %10.4f %10.4f %10zu %9.1f %12.0f %9.4f\n", names[k] + 11, load_s, best, sum / runs, n,
               (double)len / 1e6 / best, (double)n / best, dec_s);
        free(back);
        free(ids);
        qc_tokenizer_free(tok);
    }
    printf("peak RSS: %.1f MB\n", (double)qc_peak_rss() / 1e6);
    free(text);
    return 0;
}
