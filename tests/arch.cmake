qc_test(test_arch test_arch.c LABELS unit)
