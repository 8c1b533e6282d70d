qc_script_test(test_fused test_fused.sh LABELS model TIMEOUT 300)
