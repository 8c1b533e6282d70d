# GPU solver (solver/gptq_gpu.cu) against the CPU reference: GPTQ (every option), RTN, AWQ, packing,
# the quadratic form. Needs a CUDA device; exits 77 (skipped) without one.
if(QCAL_CUDA)
  qc_test(test_gpu_solver test_gpu_solver.c LABELS gpu TIMEOUT 900)
endif()
