qc_script_test(test_quantize test_quantize.sh LABELS model TIMEOUT 900)
