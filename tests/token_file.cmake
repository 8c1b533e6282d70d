# Calibration windows shared between runs: the QCALTOK1 file (datasets/token_file.h) behind
# `qcal calib --save-tokens` and `qcal quantize --calib-tokens` (the CLI side is in test_experiment.sh).
qc_test(test_token_file test_token_file.c LABELS unit)
