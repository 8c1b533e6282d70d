if(QCAL_CUDA)
  add_executable(bench_gemm bench_gemm.c)
  target_link_libraries(bench_gemm PRIVATE qcal_core)
endif()
