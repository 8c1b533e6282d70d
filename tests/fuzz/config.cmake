add_executable(fuzz_config fuzz_config.c)
target_link_libraries(fuzz_config PRIVATE qcal_core -fsanitize=fuzzer)
add_test(NAME fuzz_config COMMAND fuzz_config -runs=20000 -max_len=4096)
set_tests_properties(fuzz_config PROPERTIES LABELS fuzz TIMEOUT 300)
