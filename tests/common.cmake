qc_test(test_common test_common.c LABELS unit)
