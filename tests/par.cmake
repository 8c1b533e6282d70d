qc_test(test_par test_par.c LABELS unit)
