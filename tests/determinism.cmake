qc_script_test(test_determinism test_determinism.sh LABELS model TIMEOUT 900)
