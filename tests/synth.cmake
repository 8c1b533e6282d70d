# Synthetic models (qcal synth): the library on tiny specs, and the command line.
qc_test(test_synth test_synth.c LABELS unit)
qc_script_test(test_synth_cli test_synth_cli.sh LABELS unit TIMEOUT 300)
