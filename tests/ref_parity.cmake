# Layer-level parity with IST-DASLab GPTQ, AutoAWQ and llm-awq (their values stored in tests/data/parity by
# benchmarks/ref_parity.py; checked here without torch): codes, group scales, zeros and AWQ ratios.
qc_script_test(test_ref_parity test_ref_parity.sh LABELS model TIMEOUT 900)
