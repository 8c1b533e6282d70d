# fuzz_token_file: libFuzzer on the calibration token file (`qcal quantize --calib-tokens`, the shared windows
# of `qcal experiment`); see fuzz_token_file.c. Seeds in corpus/fuzz_token_file: a valid file written by
# `qcal calib --save-tokens` on stories260K (2 x 8 windows) and a truncated copy.
# A longer hunt: build-fuzz/tests/fuzz/fuzz_token_file -max_total_time=600 CORPUS_DIR corpus/fuzz_token_file
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_token_file not built")
  return()
endif()

add_executable(fuzz_token_file fuzz_token_file.c)
target_link_libraries(fuzz_token_file PRIVATE qcal_core)
target_link_options(fuzz_token_file PRIVATE -fsanitize=fuzzer)

file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/token_file.dict [=[
"QCALTOK1"
"\x00\x00\x00\x00"
"\x01\x00\x00\x00"
"\x02\x00\x00\x00"
"\xff\xff\xff\xff"
]=])

set(QC_FUZZ_TOK_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_token_file)
file(MAKE_DIRECTORY ${QC_FUZZ_TOK_CORPUS})
add_test(NAME fuzz_token_file
  COMMAND fuzz_token_file -runs=50000 -seed=1 -max_len=1024 -dict=${CMAKE_CURRENT_BINARY_DIR}/token_file.dict
          ${QC_FUZZ_TOK_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/fuzz_token_file)
set_tests_properties(fuzz_token_file PROPERTIES LABELS fuzz TIMEOUT 300)
