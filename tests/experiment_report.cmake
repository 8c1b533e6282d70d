# scripts/experiment_report.py: report.md and plots of `qcal experiment` from handcrafted results.jsonl fixtures
qc_script_test(test_experiment_report test_experiment_report.sh LABELS unit TIMEOUT 120)
