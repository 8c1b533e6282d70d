# awq+gptq against awq, --mse end to end (issue 12 item 4: beyond the references)
qc_script_test(test_awq_gptq test_awq_gptq.sh LABELS model TIMEOUT 900)
