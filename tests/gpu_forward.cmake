# The GPU decoder layer and layer loader against the CPU forward (needs a CUDA device; skips without).
if(QCAL_CUDA)
  qc_test(test_gpu_forward test_gpu_forward.c LABELS gpu TIMEOUT 600)
  target_compile_definitions(test_gpu_forward PRIVATE QCAL_SRC_DIR="${CMAKE_SOURCE_DIR}")
endif()
