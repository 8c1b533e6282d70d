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
    int            holdout; /* 0 or 1: every document; N >= 2: document i (0-based, in the reader's order)
                               is held out when i % N == N - 1, e.g. for evaluation text never calibrated on */
    bool           heldout; /* with holdout >= 2: false = skip the held-out documents (calibration),
                               true = return only them (evaluation) */
} qc_docs_opts;

typedef struct qc_docs qc_docs;

qc_status qc_docs_open(const char *path, const qc_docs_opts *opts, qc_docs **out);
/* Next document, or *doc = NULL at the end. */
qc_status qc_docs_next(qc_docs *r, const char **doc, size_t *len);
/* Documents returned so far (after the holdout filter). */
int64_t   qc_docs_index(const qc_docs *r);
void      qc_docs_free(qc_docs *r);
/* "text", "jsonl", ... for messages; parses the recipe spelling ("auto" too). */
const char *qc_docs_format_name(qc_docs_format f);
bool        qc_docs_format_parse(const char *s, qc_docs_format *out);

/* ---- additions (not part of the original contract) ----
 *
 * Details of each format:
 *   text     "line": a trailing '\r' (CRLF files) is dropped; empty lines are skipped.
 *            "paragraph": a blank line is empty or holds only spaces/tabs/'\r'; a document keeps its
 *            inner newlines and drops the newline (and '\r') after its last line.
 *            "file": the bytes of the file exactly; an empty file yields no document.
 *   jsonl    lines holding only whitespace are skipped; every other line must be one JSON object with
 *            the string `field` (QC_ERR_FORMAT naming file:line and the field otherwise).
 *   json     one top-level array, streamed: each element's extent is found by a small scanner, then
 *            only that element is parsed; errors name the record index (0-based).
 *   parquet  see parquet.h; null values are skipped (not documents) and counted by qc_docs_skipped().
 * Records of jsonl/json/parquet map 1:1 to documents, so an empty string is returned as an empty
 * document (len 0); text never returns empty documents. The auto format picks by extension after
 * stripping .gz/.zst/.zstd: .parquet, .jsonl/.ndjson, .json (then '[' as the first character means a
 * JSON array, anything else JSON lines), anything else text, except that a file starting with the
 * Parquet magic "PAR1" is read as Parquet whatever its name. Compression is found by magic bytes
 * (gzip 1f 8b, multi-member too; zstd 28 b5 2f fd, multi-frame too), never by the name. A UTF-8 byte
 * order mark at the start of the (decompressed) text is dropped.
 * JSON strings are decoded by cJSON, whose strings end at NUL: a "\u0000" escape ends the document.
 */

/* Opens a buffer (which must outlive the reader) as if it were a file called `name` (NULL: "<buffer>");
 * the name also drives the auto format. */
qc_status qc_docs_open_mem(const void *buf, size_t len, const char *name, const qc_docs_opts *opts,
                           qc_docs **out);
/* Records present in the file but not returned as documents: Parquet nulls (0 for other formats). */
int64_t   qc_docs_skipped(const qc_docs *r);
/* Bytes read so far: *in from the file (compressed), *out after decompression (text/jsonl/json; for
 * Parquet the bytes of the documents returned). Either pointer may be NULL. */
void      qc_docs_bytes(const qc_docs *r, uint64_t *in, uint64_t *out);
/* The resolved format (never QC_DOCS_AUTO after a successful open). */
qc_docs_format qc_docs_format_of(const qc_docs *r);
/* Caps on what one document may hold (not limits of any format). */
#define QC_DOCS_MAX_DOC ((size_t)1 << 30)

#ifdef __cplusplus
}
#endif
#endif /* QC_DOCS_H */
