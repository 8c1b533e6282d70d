# fuzz_safetensors: libFuzzer on qc_safetensors_parse (see fuzz_safetensors.c for the input layout).
# The test is a short deterministic run from a few text seeds and a dictionary of the format's tokens;
# a longer hunt: build-fuzz/tests/fuzz/fuzz_safetensors -max_total_time=600 CORPUS_DIR
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_safetensors not built")
  return()
endif()

add_executable(fuzz_safetensors fuzz_safetensors.c)
target_link_libraries(fuzz_safetensors PRIVATE qcal_core)
target_link_options(fuzz_safetensors PRIVATE -fsanitize=fuzzer)

# Seeds: the first 8 bytes "AAAAAAAA" are a length past the end, so the rest is all header.
set(QC_FUZZ_ST_SEEDS ${CMAKE_CURRENT_BINARY_DIR}/seeds_safetensors)
file(MAKE_DIRECTORY ${QC_FUZZ_ST_SEEDS})
file(WRITE ${QC_FUZZ_ST_SEEDS}/one_tensor
  [=[AAAAAAAA{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]}}]=])
file(WRITE ${QC_FUZZ_ST_SEEDS}/two_tensors
  [=[AAAAAAAA{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,0]},"b":{"dtype":"I64","shape":[2,0],"data_offsets":[0,0]}}  ]=])
file(WRITE ${QC_FUZZ_ST_SEEDS}/empty [=[AAAAAAAA{}]=])
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/safetensors.dict [=[
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"format\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"I32\""
"\"I64\""
"\"I8\""
"\"U8\""
"\"F64\""
"\"I16\""
"\"BOOL\""
"\"F8_E4M3\""
"[0,"
"[]"
"{}"
"\\u00"
"4294967296"
"9007199254740991"
"1e3"
"-0"
"\x08\x00\x00\x00\x00\x00\x00\x00"
]=])

# New inputs go to the first directory (the build tree), never to the seeds.
set(QC_FUZZ_ST_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_safetensors)
file(MAKE_DIRECTORY ${QC_FUZZ_ST_CORPUS})
add_test(NAME fuzz_safetensors
  COMMAND fuzz_safetensors -runs=20000 -seed=1 -max_len=4096 -dict=${CMAKE_CURRENT_BINARY_DIR}/safetensors.dict
          ${QC_FUZZ_ST_CORPUS} ${QC_FUZZ_ST_SEEDS})
set_tests_properties(fuzz_safetensors PROPERTIES LABELS fuzz TIMEOUT 300)
