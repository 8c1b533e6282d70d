qc_test(test_awq test_awq.c LABELS unit)
