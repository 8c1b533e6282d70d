# Tokenizer encode speed on WikiText-2 (bench_tokenizer [-n RUNS] [-d DATA_DIR]).
add_executable(bench_tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/bench_tokenizer.c)
target_link_libraries(bench_tokenizer PRIVATE qcal_core)
