# fuzz_tokenizer: libFuzzer on tokenizer.json (and tokenizer_config.json after a NUL) through qc_tokenizer_load,
# then encode/decode with what loads (see fuzz_tokenizer.c). Seeds in corpus/fuzz_tokenizer: stories260K's
# tokenizer (with and without its config), the byte-level GPT-2 and Llama-3 test tokenizers of the shared
# data cut to their first 330 ids, and small handmade files that use the other components.
# A longer hunt: build-fuzz/tests/fuzz/fuzz_tokenizer -max_total_time=600 -max_len=16384 CORPUS_DIR <seeds>
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "QCAL_FUZZ needs clang (CC=clang): fuzz_tokenizer not built")
  return()
endif()

add_executable(fuzz_tokenizer fuzz_tokenizer.c)
target_link_libraries(fuzz_tokenizer PRIVATE qcal_core)
target_link_options(fuzz_tokenizer PRIVATE -fsanitize=fuzzer)

# Keys and component names of tokenizer.json, and pattern pieces the Oniguruma translation rewrites.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/tokenizer.dict [=[
"\"type\""
"\"model\""
"\"BPE\""
"\"vocab\""
"\"merges\""
"\"unk_token\""
"\"fuse_unk\""
"\"byte_fallback\""
"\"ignore_merges\""
"\"continuing_subword_prefix\""
"\"end_of_word_suffix\""
"\"dropout\""
"\"added_tokens\""
"\"content\""
"\"id\""
"\"ids\""
"\"special\""
"\"lstrip\""
"\"rstrip\""
"\"single_word\""
"\"normalized\""
"\"normalizer\""
"\"normalizers\""
"\"pre_tokenizer\""
"\"pretokenizers\""
"\"post_processor\""
"\"processors\""
"\"decoder\""
"\"decoders\""
"\"Sequence\""
"\"Prepend\""
"\"prepend\""
"\"Replace\""
"\"pattern\""
"\"String\""
"\"Regex\""
"\"NFC\""
"\"NFKC\""
"\"NFD\""
"\"NFKD\""
"\"Lowercase\""
"\"Strip\""
"\"strip_left\""
"\"start\""
"\"stop\""
"\"ByteLevel\""
"\"add_prefix_space\""
"\"use_regex\""
"\"Split\""
"\"behavior\""
"\"Isolated\""
"\"Removed\""
"\"MergedWithPrevious\""
"\"MergedWithNext\""
"\"Contiguous\""
"\"invert\""
"\"Metaspace\""
"\"replacement\""
"\"prepend_scheme\""
"\"first\""
"\"split\""
"\"Digits\""
"\"individual_digits\""
"\"TemplateProcessing\""
"\"single\""
"\"SpecialToken\""
"\"special_tokens\""
"\"RobertaProcessing\""
"\"BertProcessing\""
"\"cls\""
"\"sep\""
"\"ByteFallback\""
"\"Fuse\""
"\"bos_token\""
"\"eos_token\""
"\"add_bos_token\""
"\"add_eos_token\""
"\"tokenizer_class\""
"\"LlamaTokenizer\""
"\"<s>\""
"\"</s>\""
"\"<unk>\""
"\"<0x41>\""
"\"\\u2581\""
"\"$A\""
"\x00"
"\\s"
"\\w"
"\\p{L}"
"\\p{N}"
"(?i:"
"(?!"
"[^"
"{1,3}"
"+"
"*"
]=])

# 5000 runs, not the 20000 of the other targets: loading a tokenizer (regexes compiled, tables built) and
# encoding with it is slow enough that the test would otherwise dominate `ctest -L fuzz`.
set(QC_FUZZ_TOK_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/corpus_tokenizer)
file(MAKE_DIRECTORY ${QC_FUZZ_TOK_CORPUS})
add_test(NAME fuzz_tokenizer
  COMMAND fuzz_tokenizer -runs=5000 -seed=1 -max_len=16384 -rss_limit_mb=2048
          -dict=${CMAKE_CURRENT_BINARY_DIR}/tokenizer.dict
          ${QC_FUZZ_TOK_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/corpus/fuzz_tokenizer)
set_tests_properties(fuzz_tokenizer PROPERTIES LABELS fuzz TIMEOUT 300)
