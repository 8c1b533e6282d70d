# fuzz_docs: libFuzzer on the JSON-lines and JSON-array document readers (qc_docs_open_mem, see fuzz_docs.c),
# gzip/zstd included. Seeds in corpus/fuzz_docs: small .jsonl/.json files, plain and compressed.
# A longer hunt: build-fuzz/tests/fuzz/fuzz_docs -max_total_time=600 CORPUS_DIR <seeds>
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_docs not built")
  return()
endif()

add_executable(fuzz_docs fuzz_docs.c)
target_link_libraries(fuzz_docs PRIVATE qcal_core)
target_link_options(fuzz_docs PRIVATE -fsanitize=fuzzer)

file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/docs.dict [=[
"\"text\""
"{\"text\":\""
"\"}"
"\\\""
"\\\\"
"\\u0000"
"\\ud83d\\ude00"
"\xef\xbb\xbf"
"\x1f\x8b\x08\x00"
"\x28\xb5\x2f\xfd"
"\x0d\x0a"
"[{"
"},{"
"}]"
"null"
"true"
]=])

# 4000 runs, not the 20000 of the other targets: opening a reader costs two large buffers, so this target
# runs about a tenth as fast and the test would otherwise dominate `ctest -L fuzz`.
set(QC_FUZZ_DOCS_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_docs)
file(MAKE_DIRECTORY ${QC_FUZZ_DOCS_CORPUS})
add_test(NAME fuzz_docs
  COMMAND fuzz_docs -runs=4000 -seed=1 -max_len=4096 -rss_limit_mb=2048 -dict=${CMAKE_CURRENT_BINARY_DIR}/docs.dict
          ${QC_FUZZ_DOCS_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/fuzz_docs)
set_tests_properties(fuzz_docs PROPERTIES LABELS fuzz TIMEOUT 300)
