# fuzz_config: libFuzzer on the config.json parser. Seeds in corpus/fuzz_config: the config.json of every
# architecture fixture in tests/data/arch and of the shared stories260K and qcal-llama-25m models.
add_executable(fuzz_config fuzz_config.c)
target_link_libraries(fuzz_config PRIVATE qcal_core -fsanitize=fuzzer)
set(QC_FUZZ_CFG_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_config)
file(MAKE_DIRECTORY ${QC_FUZZ_CFG_CORPUS})
add_test(NAME fuzz_config COMMAND fuzz_config -runs=20000 -max_len=4096
         ${QC_FUZZ_CFG_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/fuzz_config)
set_tests_properties(fuzz_config PROPERTIES LABELS fuzz TIMEOUT 300)
