# qcal experiment: grids of quantization runs, their evaluations and result tables (cli/experiment.h);
# the held-out documents a shipped experiment evaluates on (datasets/docs.h holdout, calib[].holdout).
qc_test(test_holdout test_holdout.c LABELS unit)
qc_script_test(test_experiment test_experiment.sh LABELS model TIMEOUT 300)
