# qcal eval --base: KL divergence and top-1 agreement against a direct computation (stories260K), and the
# command's rules (same tokenizer, --base == --model, last line, exit codes)
qc_test(test_eval_kl test_eval_kl.c LABELS model TIMEOUT 300)
qc_script_test(test_eval_kl_cli test_eval_kl.sh LABELS model TIMEOUT 300)
