# qc_cmp_codes: counts differing packed codes between two checkpoints (parity test, benchmarks).
add_executable(qc_cmp_codes cmp_codes.c)
target_link_libraries(qc_cmp_codes PRIVATE qcal_core)
if(QCAL_CUDA)
  qc_script_test(test_gpu_quantize test_gpu_quantize.sh LABELS gpu TIMEOUT 1800)
  set_property(TEST test_gpu_quantize APPEND PROPERTY ENVIRONMENT "QCAL_CMP_CODES=$<TARGET_FILE:qc_cmp_codes>")
endif()
