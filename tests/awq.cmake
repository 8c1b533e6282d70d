qc_test(test_awq test_awq.c LABELS unit)
# the AWQ scale search on stories260K and qcal-llama-25m: best vs each formula, X^T X vs forwards, windows
qc_test(test_awq_search test_awq_search.c LABELS model TIMEOUT 900)
