# fuzz_recipe (recipe YAML) and fuzz_hf_ref (hf:// references). Seeds in corpus/<target>: `qcal recipe
# --example` and a mixed-source AWQ recipe; dataset and model references with and without revisions.
foreach(t fuzz_recipe fuzz_hf_ref)
  add_executable(${t} ${t}.c)
  target_link_libraries(${t} PRIVATE qcal_core -fsanitize=fuzzer)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/corpus_${t})
  add_test(NAME ${t} COMMAND ${t} -runs=20000 -max_len=4096
           ${CMAKE_CURRENT_BINARY_DIR}/corpus_${t} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/${t})
  set_tests_properties(${t} PROPERTIES LABELS fuzz TIMEOUT 300)
endforeach()
