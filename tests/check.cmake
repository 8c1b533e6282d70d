# qcal check, the deploy lint: the library on checkpoints written by the test itself (API contracts, an FP16
# model, a clean MoE checkpoint and its undeclared router), then one broken checkpoint per rule (config,
# shapes, declarations, routers, fused precision, Marlin, tensor parallelism, finiteness, shards) and the
# good ones qcal quantize writes (it runs the check itself).
qc_test(test_check test_check.c LABELS unit)
qc_script_test(test_check_cli test_check.sh LABELS model TIMEOUT 300)
