qc_test(test_calib_data test_calib_data.c LABELS unit)
