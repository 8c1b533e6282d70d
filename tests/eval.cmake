# Perplexity against transformers (../shared/data/reference_eval.json), within 0.1%.
foreach(m stories260K stories260K-fp16 stories260K-bf16 qcal-llama-25m)
  add_test(NAME eval_reference_${m}
           COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/eval_reference.py --models ${m}
                   --qcal $<TARGET_FILE:qcal> --data ${QCAL_DATA_DIR})
  set_tests_properties(eval_reference_${m} PROPERTIES LABELS "model" TIMEOUT 2400 SKIP_RETURN_CODE 77)
endforeach()
qc_script_test(test_cli test_cli.sh LABELS unit)
