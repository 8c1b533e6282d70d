qc_script_test(test_gemma test_gemma.sh LABELS model TIMEOUT 300)
