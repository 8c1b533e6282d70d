qc_script_test(test_moe test_moe.sh LABELS model TIMEOUT 600)
