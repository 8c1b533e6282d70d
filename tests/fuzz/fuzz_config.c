/* libFuzzer entry point for the config.json parser. */
#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qc_model_config c;
    (void)qc_model_config_parse((const char *)data, size, "fuzz", &c);
    return 0;
}
