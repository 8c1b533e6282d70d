/*
 * parquet.h - a streaming reader for one string column of an Apache Parquet file, written from the
 * format specification (no Arrow). qc_docs uses it for QC_DOCS_PARQUET; the fuzz target and tests call
 * it directly.
 *
 *   qc_parquet *pq;
 *   if (qc_parquet_open("train.parquet", "text", &pq)) die(qc_last_error());
 *   const uint8_t *v; size_t n; bool more;
 *   while (qc_parquet_next(pq, &v, &n, &more) == QC_OK && more) use(v, n);
 *   qc_parquet_free(pq);
 *
 * File layout (all integers little-endian):
 *   "PAR1" | column chunks ... | FileMetaData (Thrift compact) | u32 footer length | "PAR1"
 * FileMetaData: 2 schema (list<SchemaElement>, depth-first; [0] is the root), 3 num_rows,
 *   4 row_groups (list<RowGroup>: 1 columns list<ColumnChunk>, 3 num_rows). ColumnChunk: 1 file_path
 *   (must be absent: external chunks are not supported), 3 meta_data ColumnMetaData: 1 type, 3
 *   path_in_schema, 4 codec, 5 num_values, 7 total_compressed_size, 9 data_page_offset,
 *   11 dictionary_page_offset. A chunk is a run of pages, each a PageHeader (Thrift compact: 1 type,
 *   2 uncompressed_page_size, 3 compressed_page_size, 5 DataPageHeader, 7 DictionaryPageHeader,
 *   8 DataPageHeaderV2) followed by compressed_page_size bytes.
 *   DICTIONARY_PAGE  PLAIN values (u32 length + bytes each); at most one, before the data pages.
 *   DATA_PAGE (v1)   whole page compressed; inside: repetition levels, then definition levels (each,
 *                    when present, RLE/bit-packed hybrid behind a u32 byte length), then the values.
 *   DATA_PAGE_V2     repetition then definition levels first, never compressed and not length-prefixed
 *                    (their byte lengths are in the header), then the values, compressed only when
 *                    is_compressed (default true).
 *   values           PLAIN: u32 length + bytes each. PLAIN_DICTIONARY / RLE_DICTIONARY: one byte bit
 *                    width, then RLE/bit-packed hybrid dictionary indices to the end of the page.
 *   hybrid           runs until the data ends: varint header h; h & 1 == 0: RLE run of h >> 1 copies of
 *                    a value in ceil(width / 8) bytes; h & 1 == 1: (h >> 1) groups of 8 values bit-packed
 *                    LSB first.
 * Supported: a top-level BYTE_ARRAY column, REQUIRED or OPTIONAL (a flat column; REPEATED and nested
 * columns are refused), codecs UNCOMPRESSED, SNAPPY, GZIP and ZSTD. Other codecs/encodings are
 * QC_ERR_UNSUPPORTED naming the codec or encoding.
 *
 * Rows and nulls: every non-null value is returned, empty strings included, so the number of values
 * plus qc_parquet_nulls() equals the file's row count. Null values are skipped and counted.
 *
 * Memory: the footer while opening, then one page (compressed + uncompressed) and the column chunk's
 * dictionary. Every length and offset read from the file is checked against the chunk and file bounds;
 * corrupt input is QC_ERR_FORMAT naming the file and the row group/page, never a crash.
 * Ownership: values point into the reader's page or dictionary buffer and stay valid until the next
 * call of qc_parquet_next.
 */
#ifndef QC_PARQUET_H
#define QC_PARQUET_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Caps on sizes read from the file (not limits of the format). */
#define QC_PARQUET_MAX_FOOTER    (256u << 20) /* FileMetaData bytes */
#define QC_PARQUET_MAX_PAGE      (1u << 30)   /* one page, compressed or uncompressed */
#define QC_PARQUET_MAX_HEADER    (16u << 20)  /* one PageHeader (statistics can hold long strings) */

typedef struct qc_parquet qc_parquet;

/* Opens `path` and prepares to read the column named `column` (NULL: "text"). An unknown column is
 * QC_ERR_ARG with a message listing the file's columns. */
qc_status qc_parquet_open(const char *path, const char *column, qc_parquet **out);
/* The same over a buffer that must outlive the reader; `name` labels messages. */
qc_status qc_parquet_open_mem(const void *buf, size_t len, const char *name, const char *column,
                              qc_parquet **out);
/* The next non-null value: *more = false (and *val = NULL) at the end. */
qc_status qc_parquet_next(qc_parquet *pq, const uint8_t **val, size_t *len, bool *more);
/* Rows in the file (FileMetaData.num_rows), null values skipped so far, row groups. */
int64_t   qc_parquet_rows(const qc_parquet *pq);
int64_t   qc_parquet_nulls(const qc_parquet *pq);
int       qc_parquet_row_groups(const qc_parquet *pq);
/* Bytes read from the file so far (footer, headers and pages). */
uint64_t  qc_parquet_bytes_read(const qc_parquet *pq);
/* Where the reader is, for messages: "row group 2, page 5". */
void      qc_parquet_where(const qc_parquet *pq, char *buf, size_t cap);
void      qc_parquet_free(qc_parquet *pq);

#ifdef __cplusplus
}
#endif
#endif /* QC_PARQUET_H */
