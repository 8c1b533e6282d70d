qc_script_test(test_opt test_opt.sh LABELS model TIMEOUT 600)
