# The preflight plan (calib/plan.h): arithmetic on a synthetic model, the check, status.json.
qc_test(test_plan test_plan.c LABELS unit)
