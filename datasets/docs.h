/*
 * docs.h - streaming readers that turn a local file into a sequence of text documents.
 *
 * Formats (QC_DOCS_AUTO picks by extension after stripping .gz/.zst, then by content):
 *   text     .txt (any other extension too): documents split per `split`:
 *              "line"      one document per line (default; c4.utf8 style), empty lines skipped
 *              "paragraph" documents separated by one or more blank lines (tiny.utf8 style)
 *              "file"      the whole file is one document
 *   jsonl    .jsonl/.ndjson/.json lines: one JSON object per line, the string `field` (default "text")
 *   json     .json holding one array of objects, each with the string `field`
 *   parquet  .parquet: the string (BYTE_ARRAY/UTF8) column named `field`, all row groups; plain and
 *            dictionary encodings, v1 and v2 data pages, uncompressed/snappy/gzip/zstd
 * text/jsonl/json may be gzip- or zstd-compressed (detected by magic bytes). Everything is streamed:
 * memory stays bounded by the largest single document (plus one Parquet page), whatever the file size.
 *
 *   qc_docs_opts o = {.format = QC_DOCS_AUTO, .field = "text"};
 *   qc_docs *r;
 *   if (qc_docs_open("c4-train.00000-of-01024.json.gz", &o, &r)) die(qc_last_error());
 *   const char *doc; size_t len;
 *   while (qc_docs_next(r, &doc, &len) == QC_OK && doc) use(doc, len);   // doc == NULL: end
 *   qc_docs_free(r);
 *
 * Errors name the file and the line (text/jsonl), record index (json) or row group/page (parquet).
 * A document that is not valid UTF-8 is an error naming its index.
 * Ownership: `doc` points into the reader's buffer and stays valid until the next call.
 */
#ifndef QC_DOCS_H
#define QC_DOCS_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qc_docs_format {
    QC_DOCS_AUTO = 0, QC_DOCS_TEXT = 1, QC_DOCS_JSONL = 2, QC_DOCS_JSON = 3, QC_DOCS_PARQUET = 4,
} qc_docs_format;

typedef struct qc_docs_opts {
    qc_docs_format format;
    const char    *field;   /* JSON key / Parquet column; NULL = "text" */
    const char    *split;   /* text only: "line" (NULL), "paragraph" or "file" */
} qc_docs_opts;

typedef struct qc_docs qc_docs;

qc_status qc_docs_open(const char *path, const qc_docs_opts *opts, qc_docs **out);
/* Next document, or *doc = NULL at the end. */
qc_status qc_docs_next(qc_docs *r, const char **doc, size_t *len);
/* Documents returned so far. */
int64_t   qc_docs_index(const qc_docs *r);
void      qc_docs_free(qc_docs *r);
/* "text", "jsonl", ... for messages; parses the recipe spelling ("auto" too). */
const char *qc_docs_format_name(qc_docs_format f);
bool        qc_docs_format_parse(const char *s, qc_docs_format *out);

#ifdef __cplusplus
}
#endif
#endif /* QC_DOCS_H */
