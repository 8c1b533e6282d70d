qc_test(test_gptq test_gptq.c LABELS unit)
