# bench_docs: streaming throughput (MB/s decoded and compressed, documents/s) and peak RSS of the document
# readers over a generated ~1 GB C4-style jsonl.gz, or over a file given on the command line:
#   build/benchmarks/bench_docs [FILE] [--field NAME] [--mb MB_TO_GENERATE]
get_filename_component(QC_BENCH_DOCS_DATA "${CMAKE_SOURCE_DIR}/../shared/data" ABSOLUTE)
add_executable(bench_docs bench_docs.c)
target_link_libraries(bench_docs PRIVATE qcal_core)
target_compile_definitions(bench_docs PRIVATE QCAL_DEFAULT_DATA="${QC_BENCH_DOCS_DATA}")
