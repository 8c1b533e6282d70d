qc_script_test(test_quantize test_quantize.sh LABELS model TIMEOUT 900)
# kill -9 / SIGTERM at many instants, resume, byte-identical checkpoints (issue: unattended runs)
qc_script_test(test_resume test_resume.sh LABELS model TIMEOUT 1200)
# never lose a user's data: work dir, overlaps, --overwrite, lock, leftovers, numerical guards, early checks
qc_script_test(test_guard test_guard.sh LABELS model TIMEOUT 600)
