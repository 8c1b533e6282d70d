# Document readers (datasets/docs.c, datasets/parquet.c): text splits, JSON lines, JSON arrays, gzip/zstd
# streams and Parquet; handcrafted corrupt inputs, a handcrafted Parquet writer covering every supported
# page layout/encoding/codec, and the real samples in ../shared/data/text (c4, tiny, docs-domain, parquet/).
qc_test(test_docs test_docs.c LABELS unit)
