# safetensors reader/writer: handcrafted corrupt files, sharded-index checks, writer round trips, and the
# real stories260K (F32/F16/BF16) and qcal-llama-25m (4 shards) models from ../shared/data.
qc_test(test_safetensors test_safetensors.c LABELS unit)
