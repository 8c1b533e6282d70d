# qcal check, the deploy lint: the library on checkpoints written by the test itself (API contracts, an FP16
# model, a clean MoE checkpoint and its undeclared router)
qc_test(test_check test_check.c LABELS unit)
