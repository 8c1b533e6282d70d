# GPTQ layout: packing against the spec's constant vectors, fast packers against their bit-by-bit twins,
# dequantization against the formula, and whole checkpoints written from hand-made parts and read back.
qc_test(test_gptq_format test_gptq_format.c LABELS unit)
