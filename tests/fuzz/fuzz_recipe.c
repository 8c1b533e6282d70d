/* libFuzzer entry point for the recipe parser (YAML through libyaml, then strict validation). */
#include <stddef.h>
#include <stdint.h>

#include "recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qc_recipe r;
    qc_recipe_init(&r);
    if (qc_recipe_load_string(&r, (const char *)data, size, "fuzz.yaml") == QC_OK && qc_recipe_validate(&r) == QC_OK) {
        char hash[65];
        qc_recipe_hash(&r, hash);
    }
    qc_recipe_free(&r);
    return 0;
}
