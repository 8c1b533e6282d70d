qc_test(test_awq test_awq.c LABELS unit)
qc_test(test_awq_search test_awq_search.c LABELS model TIMEOUT 600)
