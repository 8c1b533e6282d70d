# fuzz_st_index: libFuzzer on model.safetensors.index.json as qc_weights_open reads it (see fuzz_st_index.c:
# the input becomes the index of a temporary directory holding a few small shards the target writes).
# Seeds in corpus/fuzz_st_index: indexes of those shards, right and wrong, and qcal-llama-25m's real index.
# A longer hunt: build-fuzz/tests/fuzz/fuzz_st_index -max_total_time=600 CORPUS_DIR <seeds>
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_st_index not built")
  return()
endif()

add_executable(fuzz_st_index fuzz_st_index.c)
target_link_libraries(fuzz_st_index PRIVATE qcal_core)
target_link_options(fuzz_st_index PRIVATE -fsanitize=fuzzer)

file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/st_index.dict [=[
"\"weight_map\""
"\"metadata\""
"\"total_size\""
"\"model-00001-of-00002.safetensors\""
"\"model-00002-of-00002.safetensors\""
"\"empty.safetensors\""
"\"broken.safetensors\""
"\"dir.safetensors\""
".safetensors"
"\"a\""
"\"b\""
"\"c\""
"\"d\""
".."
"/"
"\\\\"
"\\u00"
"{}"
]=])

set(QC_FUZZ_IDX_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_st_index)
file(MAKE_DIRECTORY ${QC_FUZZ_IDX_CORPUS})
add_test(NAME fuzz_st_index
  COMMAND fuzz_st_index -runs=20000 -seed=1 -max_len=8192 -dict=${CMAKE_CURRENT_BINARY_DIR}/st_index.dict
          ${QC_FUZZ_IDX_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/fuzz_st_index)
set_tests_properties(fuzz_st_index PROPERTIES LABELS fuzz TIMEOUT 300)
