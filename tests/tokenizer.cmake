# Tokenizer parity with Hugging Face `tokenizers` (datasets/tokenizer*.c).
qc_test(test_tokenizer test_tokenizer.c LABELS unit)
# Every reference text x every tokenizer against reference_eval.json token_counts (a few seconds).
qc_test(test_tokenizer_counts test_tokenizer.c LABELS model ARGS --counts)
