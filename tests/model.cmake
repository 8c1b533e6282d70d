qc_test(test_model test_model.c LABELS model)
qc_test(test_model_config test_model_config.c LABELS unit)
