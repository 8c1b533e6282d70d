# AWQ GEMM layout: the interleave vectors, fast packers against their nibble-at-a-time twins, dequantization
# against the formula, and whole checkpoints written from hand-made parts and read back.
qc_test(test_awq_format test_awq_format.c LABELS unit)
