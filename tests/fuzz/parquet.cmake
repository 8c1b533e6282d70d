# fuzz_parquet: libFuzzer on the Parquet reader (see fuzz_parquet.c). Seeds are small valid files written
# at build time by fuzz_parquet_seeds (the same source without libFuzzer), one per page layout and codec.
# A longer hunt: build-fuzz/tests/fuzz/fuzz_parquet -max_total_time=600 CORPUS_DIR SEED_DIR
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_parquet not built")
  return()
endif()

add_executable(fuzz_parquet fuzz_parquet.c)
target_link_libraries(fuzz_parquet PRIVATE qcal_core)
target_link_options(fuzz_parquet PRIVATE -fsanitize=fuzzer)

add_executable(fuzz_parquet_seeds fuzz_parquet.c)
target_compile_definitions(fuzz_parquet_seeds PRIVATE QC_FUZZ_WRITE_SEEDS)
target_link_libraries(fuzz_parquet_seeds PRIVATE qcal_core)

set(QC_FUZZ_PQ_SEEDS ${CMAKE_CURRENT_BINARY_DIR}/seeds_parquet)
add_custom_command(OUTPUT ${QC_FUZZ_PQ_SEEDS}/v1_plain.parquet
  COMMAND ${CMAKE_COMMAND} -E make_directory ${QC_FUZZ_PQ_SEEDS}
  COMMAND fuzz_parquet_seeds ${QC_FUZZ_PQ_SEEDS}
  DEPENDS fuzz_parquet_seeds
  COMMENT "Writing Parquet fuzz seeds")
add_custom_target(fuzz_parquet_seed_files DEPENDS ${QC_FUZZ_PQ_SEEDS}/v1_plain.parquet)
add_dependencies(fuzz_parquet fuzz_parquet_seed_files)

# Tokens of the format: magic, Thrift field headers of the structs read (type nibbles 5 = i32, 6 = i64,
# 8 = binary, 9 = list, 12 = struct), and page/encoding/codec values.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/parquet.dict [=[
"PAR1"
"PARE"
"\x15\x00"
"\x15\x04"
"\x15\x06"
"\x15\x10"
"\x16\x00"
"\x19\x1c"
"\x19\x2c"
"\x19\x3c"
"\x1c"
"\x2c"
"\x4c"
"\x18\x04text"
"\x48\x04text"
"\x00"
"\xff\xff\xff\x7f"
"\x01\x00\x00\x00"
]=])

set(QC_FUZZ_PQ_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_parquet)
file(MAKE_DIRECTORY ${QC_FUZZ_PQ_CORPUS})
add_test(NAME fuzz_parquet
  COMMAND fuzz_parquet -runs=20000 -seed=1 -max_len=8192 -rss_limit_mb=2048
          -dict=${CMAKE_CURRENT_BINARY_DIR}/parquet.dict ${QC_FUZZ_PQ_CORPUS} ${QC_FUZZ_PQ_SEEDS})
set_tests_properties(fuzz_parquet PROPERTIES LABELS fuzz TIMEOUT 300)
