# AWQ arithmetic on the GPU vs the CPU twins (solver/awq_gpu.cu); needs a CUDA device, else skipped.
if(QCAL_CUDA)
  qc_test(test_gpu_awq test_gpu_awq.c LABELS gpu TIMEOUT 600)
endif()
