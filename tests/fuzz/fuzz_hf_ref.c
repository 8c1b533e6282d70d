/* libFuzzer entry point for the hf:// reference parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hf_hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    qc_hf_ref ref;
    if (qc_hf_parse_ref(s, &ref) == QC_OK) qc_hf_ref_free(&ref);
    free(s);
    return 0;
}
