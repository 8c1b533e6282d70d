/* parquet.c - streaming reader for one flat BYTE_ARRAY column of a Parquet file (see parquet.h). */
#include "parquet.h"
#include "parquet_thrift.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

/* Thrift enum values of parquet.thrift (append-only upstream). */
enum { PQ_BOOLEAN = 0, PQ_INT32, PQ_INT64, PQ_INT96, PQ_FLOAT, PQ_DOUBLE, PQ_BYTE_ARRAY, PQ_FIXED_LEN };
enum { PQ_REQUIRED = 0, PQ_OPTIONAL = 1, PQ_REPEATED = 2 };
enum { PQ_PAGE_DATA = 0, PQ_PAGE_INDEX = 1, PQ_PAGE_DICT = 2, PQ_PAGE_DATA_V2 = 3 };
enum { PQ_ENC_PLAIN = 0, PQ_ENC_PLAIN_DICT = 2, PQ_ENC_RLE = 3, PQ_ENC_BIT_PACKED = 4, PQ_ENC_RLE_DICT = 8 };
enum { PQ_CODEC_NONE = 0, PQ_CODEC_SNAPPY = 1, PQ_CODEC_GZIP = 2, PQ_CODEC_ZSTD = 6 };

static const char *type_name(int t) {
    static const char *n[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                              "FIXED_LEN_BYTE_ARRAY"};
    return t >= 0 && t < 8 ? n[t] : "unknown";
}

static const char *codec_name(int c) {
    static const char *n[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
    return c >= 0 && c < 8 ? n[c] : "unknown";
}

static const char *encoding_name(int e) {
    static const char *n[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED",
                              "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
                              "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
    return e >= 0 && e < 10 ? n[e] : "unknown";
}

typedef struct pq_chunk {
    int64_t start, end;      /* [start, end): the column chunk's bytes in the file */
    int64_t num_values;      /* level entries (= rows for a flat column) */
    int     codec;
} pq_chunk;

/* RLE/bit-packed hybrid decoder over [p, end). */
typedef struct pq_hybrid {
    const uint8_t *p, *end;
    int            width;     /* bits per value, 0..32 */
    uint64_t       left;      /* values left in the current run */
    bool           packed;
    uint32_t       value;     /* RLE run value */
    const uint8_t *bits;      /* bit-packed run data */
    uint64_t       bit;       /* next bit offset in it */
} pq_hybrid;

struct qc_parquet {
    char          *name;
    int            fd;        /* -1 for a buffer */
    const uint8_t *mem;
    uint64_t       size;
    uint64_t       bytes_read;

    char          *column;
    int            max_def;   /* 0 (REQUIRED) or 1 (OPTIONAL) */
    pq_chunk      *chunks;    /* one per row group */
    int            n_chunks;
    int64_t        rows, nulls, values_out;

    int            rg;        /* current row group (n_chunks: done) */
    int            page;      /* the current page of the chunk (-1 before the first) */
    int            data_pages;
    int64_t        pos;       /* next page header */
    int64_t        chunk_values;

    uint8_t       *dict_buf;  /* the dictionary page, decompressed; dict_off/len index it */
    size_t         dict_cap;
    uint32_t      *dict_off, *dict_len;
    size_t         dict_n;
    bool           has_dict;

    uint8_t       *hdr, *raw, *page_buf; /* page header window, compressed page, decompressed page */
    size_t         hdr_cap, raw_cap, page_cap;
    int64_t        page_left; /* level entries left in the current page */
    bool           page_is_dict;
    pq_hybrid      def, idx;
    const uint8_t *vp, *vend; /* PLAIN values */

    z_stream       z;
    bool           z_init;
    ZSTD_DCtx     *zd;
};

/* ---- I/O ---- */

static qc_status pq_read(qc_parquet *pq, uint64_t off, void *dst, size_t n) {
    if (off > pq->size || n > pq->size - off)
        return qc_fail(QC_ERR_FORMAT, "%s: read of %zu bytes at offset %" PRIu64 " past the end (%" PRIu64 " bytes)",
                       pq->name, n, off, pq->size);
    if (pq->mem) {
        memcpy(dst, pq->mem + off, n);
        return QC_OK;
    }
    uint8_t *d = dst;
    while (n > 0) {
        ssize_t r = pread(pq->fd, d, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return qc_fail(QC_ERR_IO, "%s: read failed at offset %" PRIu64 ": %s", pq->name, off, strerror(errno));
        }
        if (r == 0) return qc_fail(QC_ERR_IO, "%s: file shrank while reading (offset %" PRIu64 ")", pq->name, off);
        d += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return QC_OK;
}

/* Buffers grow to exactly what a page needs (no rounding), so that sanitizers see any read past a page. */
static bool grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    uint8_t *b = realloc(*buf, need);
    if (!b) return false;
    *buf = b;
    *cap = need;
    return true;
}

/* ---- footer ---- */

typedef struct pq_schema_el {
    int            type, rep, num_children; /* -1 when absent */
    const uint8_t *name;
    size_t         name_len;
} pq_schema_el;

/* The metadata decoder's context: which column we want and what we found. */
typedef struct pq_meta {
    qc_parquet   *pq;
    qc_tc         c;
    pq_schema_el *schema;
    size_t        n_schema;
    int64_t       num_rows;
    const uint8_t *schema_at, *rg_at;  /* positions of the list values in the footer */
    int           leaf;                /* leaf index of the column, -1 if not found */
    int           n_leaves;
} pq_meta;

static void parse_schema_el(qc_tc *c, pq_schema_el *e) {
    *e = (pq_schema_el){.type = -1, .rep = -1, .num_children = -1};
    bool has_name = false;
    qc_tc_struct_begin(c);
    int16_t id = 0;
    int t;
    while (qc_tc_field(c, &id, &t)) {
        if (id == 1 && t == QC_TC_I32) e->type = qc_tc_i32(c);
        else if (id == 3 && t == QC_TC_I32) e->rep = qc_tc_i32(c);
        else if (id == 4 && t == QC_TC_BINARY) {
            qc_tc_binary(c, &e->name, &e->name_len);
            has_name = true;
        } else if (id == 5 && t == QC_TC_I32) e->num_children = qc_tc_i32(c);
        else qc_tc_skip(c, t);
    }
    qc_tc_struct_end(c);
    if (!c->err && !has_name) qc_tc_fail(c, "schema element without a name");
    if (!c->err && e->num_children < -1) qc_tc_fail(c, "negative num_children");
}

/* Counts the leaves of the subtree at schema[*i], advancing *i past it. */
static bool count_leaves(pq_meta *m, size_t *i, int depth, int *leaves) {
    if (*i >= m->n_schema || depth > QC_TC_MAX_DEPTH) return false;
    const pq_schema_el *e = &m->schema[(*i)++];
    if (e->num_children <= 0) {
        (*leaves)++;
        return true;
    }
    for (int k = 0; k < e->num_children; k++)
        if (!count_leaves(m, i, depth + 1, leaves)) return false;
    return true;
}

static qc_status find_column(pq_meta *m, const char *column) {
    qc_parquet *pq = m->pq;
    if (m->n_schema == 0 || m->schema[0].num_children < 0)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: schema has no root element", pq->name);
    char names[1024] = "";
    size_t nl = 0;
    size_t i = 1;
    int leaves = 0;
    m->leaf = -1;
    const pq_schema_el *found = NULL;
    for (int k = 0; k < m->schema[0].num_children; k++) {
        if (i >= m->n_schema) break;
        const pq_schema_el *e = &m->schema[i];
        int before = leaves;
        if (!count_leaves(m, &i, 1, &leaves))
            return qc_fail(QC_ERR_FORMAT, "%s: footer: schema tree is inconsistent (num_children past the "
                           "%zu elements, or nested too deeply)", pq->name, m->n_schema);
        if (nl + e->name_len + 16 < sizeof names) {
            nl += (size_t)snprintf(names + nl, sizeof names - nl, "%s%.*s%s", nl ? ", " : "", (int)e->name_len,
                                   (const char *)e->name, e->num_children > 0 ? " (group)" : "");
        } else if (nl + 6 < sizeof names && !strstr(names, ", ...")) {
            nl += (size_t)snprintf(names + nl, sizeof names - nl, ", ...");
        }
        if (!found && e->name_len == strlen(column) && memcmp(e->name, column, e->name_len) == 0) {
            found = e;
            m->leaf = before;
        }
    }
    if (i != m->n_schema)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: schema has %zu elements but its tree covers %zu", pq->name,
                       m->n_schema, i);
    m->n_leaves = leaves;
    if (!found) return qc_fail(QC_ERR_ARG, "%s: no column '%s'; columns: %s", pq->name, column, names);
    if (found->num_children > 0)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: column '%s' is a nested group, not a string column", pq->name, column);
    if (found->type != PQ_BYTE_ARRAY)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: column '%s' has physical type %s (%d), not BYTE_ARRAY", pq->name,
                       column, type_name(found->type), found->type);
    if (found->rep == PQ_REPEATED)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: column '%s' is REPEATED (a list); only flat columns are read",
                       pq->name, column);
    if (found->rep != -1 && found->rep != PQ_REQUIRED && found->rep != PQ_OPTIONAL)
        return qc_fail(QC_ERR_FORMAT, "%s: column '%s': repetition type %d is not a valid value", pq->name,
                       column, found->rep);
    pq->max_def = found->rep == PQ_OPTIONAL;
    return QC_OK;
}

/* ColumnMetaData of our column. */
static void parse_column_meta(pq_meta *m, pq_chunk *ch, int64_t *dict_off, int64_t *data_off, int64_t *total,
                              int *type, bool *path_ok) {
    qc_tc *c = &m->c;
    qc_tc_struct_begin(c);
    int16_t id = 0;
    int t;
    *path_ok = true;
    while (qc_tc_field(c, &id, &t)) {
        if (id == 1 && t == QC_TC_I32) *type = qc_tc_i32(c);
        else if (id == 3 && t == QC_TC_LIST) {
            int et;
            size_t n;
            qc_tc_list(c, &et, &n);
            if (!c->err && et != QC_TC_BINARY) qc_tc_fail(c, "path_in_schema is not a list of strings");
            for (size_t k = 0; k < n && !c->err; k++) {
                const uint8_t *s;
                size_t len;
                qc_tc_binary(c, &s, &len);
                if (n != 1 || len != strlen(m->pq->column) || memcmp(s, m->pq->column, len) != 0) *path_ok = false;
            }
        } else if (id == 4 && t == QC_TC_I32) ch->codec = qc_tc_i32(c);
        else if (id == 5 && t == QC_TC_I64) ch->num_values = qc_tc_i64(c);
        else if (id == 7 && t == QC_TC_I64) *total = qc_tc_i64(c);
        else if (id == 9 && t == QC_TC_I64) *data_off = qc_tc_i64(c);
        else if (id == 11 && t == QC_TC_I64) *dict_off = qc_tc_i64(c);
        else qc_tc_skip(c, t);
    }
    qc_tc_struct_end(c);
}

static qc_status parse_row_group(pq_meta *m, int g, uint64_t data_end) {
    qc_parquet *pq = m->pq;
    qc_tc *c = &m->c;
    pq_chunk *ch = &pq->chunks[g];
    *ch = (pq_chunk){.num_values = -1, .codec = -1};
    int64_t dict_off = -1, data_off = -1, total = -1, rg_rows = -1;
    int type = -1;
    bool have_chunk = false, path_ok = true, external = false;
    size_t n_cols = 0;
    qc_tc_struct_begin(c);
    int16_t id = 0;
    int t;
    while (qc_tc_field(c, &id, &t)) {
        if (id == 1 && t == QC_TC_LIST) {
            int et;
            qc_tc_list(c, &et, &n_cols);
            if (!c->err && et != QC_TC_STRUCT) qc_tc_fail(c, "RowGroup.columns is not a list of structs");
            for (size_t k = 0; k < n_cols && !c->err; k++) {
                if ((int)k != m->leaf) {
                    qc_tc_skip(c, QC_TC_STRUCT);
                    continue;
                }
                qc_tc_struct_begin(c);
                int16_t cid = 0;
                int ct;
                while (qc_tc_field(c, &cid, &ct)) {
                    if (cid == 1 && ct == QC_TC_BINARY) {
                        external = true;
                        qc_tc_skip(c, ct);
                    } else if (cid == 3 && ct == QC_TC_STRUCT) {
                        parse_column_meta(m, ch, &dict_off, &data_off, &total, &type, &path_ok);
                        have_chunk = true;
                    } else {
                        qc_tc_skip(c, ct);
                    }
                }
                qc_tc_struct_end(c);
            }
        } else if (id == 3 && t == QC_TC_I64) {
            rg_rows = qc_tc_i64(c);
        } else {
            qc_tc_skip(c, t);
        }
    }
    qc_tc_struct_end(c);
    if (c->err) return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: %s", pq->name, g, c->why);

    const char *col = pq->column;
    if (n_cols != (size_t)m->n_leaves)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d has %zu column chunks, the schema %d columns",
                       pq->name, g, n_cols, m->n_leaves);
    if (external)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: row group %d: column '%s' lives in another file (file_path set)",
                       pq->name, g, col);
    if (!have_chunk)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: column '%s' has no ColumnMetaData", pq->name, g, col);
    if (!path_ok)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: chunk %d's path_in_schema is not '%s'", pq->name,
                       g, m->leaf, col);
    if (type != PQ_BYTE_ARRAY)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: column '%s' chunk has type %s, schema BYTE_ARRAY",
                       pq->name, g, col, type_name(type));
    if (ch->codec != PQ_CODEC_NONE && ch->codec != PQ_CODEC_SNAPPY && ch->codec != PQ_CODEC_GZIP &&
        ch->codec != PQ_CODEC_ZSTD)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: row group %d: column '%s' uses codec %s (%d); supported: "
                       "UNCOMPRESSED, SNAPPY, GZIP, ZSTD", pq->name, g, col, codec_name(ch->codec), ch->codec);
    if (rg_rows < 0 || ch->num_values < 0)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: missing or negative num_rows/num_values", pq->name, g);
    /* a flat column has exactly one level entry (value or null) per row */
    if (ch->num_values != rg_rows)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d has %" PRId64 " rows but column '%s' %" PRId64
                       " values", pq->name, g, rg_rows, col, ch->num_values);
    int64_t start = dict_off > 0 && dict_off < data_off ? dict_off : data_off;
    if (ch->num_values == 0) {
        ch->start = ch->end = 0;
        return QC_OK;
    }
    if (start < 4 || total <= 0 || (uint64_t)start > data_end || (uint64_t)total > data_end - (uint64_t)start)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: row group %d: column chunk [%" PRId64 ", +%" PRId64
                       ") is outside the data section [4, %" PRIu64 ")", pq->name, g, start, total, data_end);
    ch->start = start;
    ch->end = start + total;
    return QC_OK;
}

static qc_status parse_footer(qc_parquet *pq, const uint8_t *buf, size_t len, uint64_t data_end, const char *column) {
    pq_meta m = {.pq = pq, .c = qc_tc_init(buf, len), .num_rows = -1, .leaf = -1};
    qc_tc *c = &m.c;
    /* pass 1: find the schema and row group lists, whatever their order */
    int16_t id = 0;
    int t;
    while (qc_tc_field(c, &id, &t)) {
        if (id == 2 && t == QC_TC_LIST) m.schema_at = c->p;
        else if (id == 3 && t == QC_TC_I64) {
            m.num_rows = qc_tc_i64(c);
            continue;
        } else if (id == 4 && t == QC_TC_LIST) m.rg_at = c->p;
        qc_tc_skip(c, t);
    }
    if (c->err) return qc_fail(QC_ERR_FORMAT, "%s: footer (FileMetaData, %zu bytes): %s at byte %td", pq->name, len,
                               c->why, c->p - c->begin);
    if (!m.schema_at || !m.rg_at || m.num_rows < 0)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: FileMetaData lacks %s", pq->name,
                       !m.schema_at ? "the schema" : !m.rg_at ? "row_groups" : "a valid num_rows");

    /* schema */
    c->p = m.schema_at;
    int et;
    qc_tc_list(c, &et, &m.n_schema);
    if (!c->err && et != QC_TC_STRUCT) qc_tc_fail(c, "schema is not a list of structs");
    if (c->err) return qc_fail(QC_ERR_FORMAT, "%s: footer: schema: %s", pq->name, c->why);
    m.schema = qc_calloc(m.n_schema ? m.n_schema : 1, sizeof *m.schema);
    if (!m.schema) return qc_fail(QC_ERR_NOMEM, "%s: footer: out of memory for %zu schema elements", pq->name, m.n_schema);
    for (size_t k = 0; k < m.n_schema && !c->err; k++) parse_schema_el(c, &m.schema[k]);
    if (c->err) {
        free(m.schema);
        return qc_fail(QC_ERR_FORMAT, "%s: footer: schema: %s", pq->name, c->why);
    }
    qc_status st = find_column(&m, column);
    free(m.schema);
    if (st != QC_OK) return st;

    /* row groups */
    c->p = m.rg_at;
    size_t n_rg;
    qc_tc_list(c, &et, &n_rg);
    if (!c->err && et != QC_TC_STRUCT) qc_tc_fail(c, "row_groups is not a list of structs");
    if (c->err) return qc_fail(QC_ERR_FORMAT, "%s: footer: row_groups: %s", pq->name, c->why);
    if (n_rg > INT32_MAX) return qc_fail(QC_ERR_FORMAT, "%s: footer: %zu row groups", pq->name, n_rg);
    pq->chunks = qc_calloc(n_rg ? n_rg : 1, sizeof *pq->chunks);
    if (!pq->chunks) return qc_fail(QC_ERR_NOMEM, "%s: out of memory for %zu row groups", pq->name, n_rg);
    pq->n_chunks = (int)n_rg;
    int64_t sum = 0;
    for (size_t g = 0; g < n_rg; g++) {
        st = parse_row_group(&m, (int)g, data_end);
        if (st != QC_OK) return st;
        if (pq->chunks[g].num_values > INT64_MAX - sum)
            return qc_fail(QC_ERR_FORMAT, "%s: footer: row counts overflow", pq->name);
        sum += pq->chunks[g].num_values;
    }
    if (sum != m.num_rows)
        return qc_fail(QC_ERR_FORMAT, "%s: footer: num_rows is %" PRId64 " but the row groups hold %" PRId64,
                       pq->name, m.num_rows, sum);
    pq->rows = m.num_rows;
    return QC_OK;
}

static qc_status pq_open_common(qc_parquet *pq, const char *column) {
    pq->column = qc_strdup(column ? column : "text");
    if (!pq->column) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", pq->name);
    if (pq->size < 12)
        return qc_fail(QC_ERR_FORMAT, "%s: %" PRIu64 " bytes is too short for a Parquet file (magic + footer)",
                       pq->name, pq->size);
    uint8_t head[4], tail[8];
    qc_status st = pq_read(pq, 0, head, 4);
    if (st == QC_OK) st = pq_read(pq, pq->size - 8, tail, 8);
    if (st != QC_OK) return st;
    if (memcmp(tail + 4, "PARE", 4) == 0)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: encrypted Parquet footer (PARE) is not supported", pq->name);
    if (memcmp(head, "PAR1", 4) != 0 || memcmp(tail + 4, "PAR1", 4) != 0)
        return qc_fail(QC_ERR_FORMAT, "%s: bad magic: not a Parquet file (expected PAR1 at both ends)", pq->name);
    uint32_t flen = (uint32_t)tail[0] | (uint32_t)tail[1] << 8 | (uint32_t)tail[2] << 16 | (uint32_t)tail[3] << 24;
    if (flen == 0 || flen > pq->size - 12)
        return qc_fail(QC_ERR_FORMAT, "%s: footer length %u does not fit in the %" PRIu64 "-byte file (truncated?)",
                       pq->name, flen, pq->size);
    if (flen > QC_PARQUET_MAX_FOOTER)
        return qc_fail(QC_ERR_UNSUPPORTED, "%s: footer of %u bytes exceeds the %u accepted", pq->name, flen,
                       QC_PARQUET_MAX_FOOTER);
    uint64_t data_end = pq->size - 8 - flen;
    uint8_t *footer = malloc(flen);
    if (!footer) return qc_fail(QC_ERR_NOMEM, "%s: out of memory for a %u-byte footer", pq->name, flen);
    st = pq_read(pq, data_end, footer, flen);
    if (st == QC_OK) st = parse_footer(pq, footer, flen, data_end, pq->column);
    free(footer);
    if (st != QC_OK) return st;
    pq->rg = 0;
    pq->page = -1;
    pq->pos = pq->n_chunks ? pq->chunks[0].start : 0;
    pq->bytes_read = 12 + (uint64_t)flen; /* magic, footer, length, magic */
    return QC_OK;
}

qc_status qc_parquet_open(const char *path, const char *column, qc_parquet **out) {
    *out = NULL;
    qc_parquet *pq = calloc(1, sizeof *pq);
    if (!pq) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
    pq->name = qc_strdup(path);
    pq->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!pq->name || pq->fd < 0) {
        qc_status st = pq->name ? qc_fail(QC_ERR_IO, "%s: cannot open: %s", path, strerror(errno))
                                : qc_fail(QC_ERR_NOMEM, "%s: out of memory", path);
        qc_parquet_free(pq);
        return st;
    }
    struct stat sb;
    if (fstat(pq->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        qc_parquet_free(pq);
        return qc_fail(QC_ERR_IO, "%s: not a regular file", path);
    }
    pq->size = (uint64_t)sb.st_size;
    qc_status st = pq_open_common(pq, column);
    if (st != QC_OK) {
        qc_parquet_free(pq);
        return st;
    }
    *out = pq;
    return QC_OK;
}

qc_status qc_parquet_open_mem(const void *buf, size_t len, const char *name, const char *column, qc_parquet **out) {
    *out = NULL;
    if (!name) name = "<buffer>";
    qc_parquet *pq = calloc(1, sizeof *pq);
    if (!pq) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
    pq->fd = -1;
    pq->mem = buf ? buf : (const uint8_t *)"";
    pq->size = buf ? len : 0;
    pq->name = qc_strdup(name);
    qc_status st = pq->name ? pq_open_common(pq, column) : qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
    if (st != QC_OK) {
        qc_parquet_free(pq);
        return st;
    }
    *out = pq;
    return QC_OK;
}

void qc_parquet_free(qc_parquet *pq) {
    if (!pq) return;
    if (pq->fd >= 0 && !pq->mem) close(pq->fd);
    if (pq->z_init) inflateEnd(&pq->z);
    ZSTD_freeDCtx(pq->zd);
    free(pq->name);
    free(pq->column);
    free(pq->chunks);
    free(pq->dict_buf);
    free(pq->dict_off);
    free(pq->dict_len);
    free(pq->hdr);
    free(pq->raw);
    free(pq->page_buf);
    free(pq);
}

int64_t qc_parquet_rows(const qc_parquet *pq) { return pq->rows; }
int64_t qc_parquet_nulls(const qc_parquet *pq) { return pq->nulls; }
int     qc_parquet_row_groups(const qc_parquet *pq) { return pq->n_chunks; }
uint64_t qc_parquet_bytes_read(const qc_parquet *pq) { return pq->bytes_read; }

void qc_parquet_where(const qc_parquet *pq, char *buf, size_t cap) {
    if (pq->rg >= pq->n_chunks) snprintf(buf, cap, "end of file");
    else snprintf(buf, cap, "row group %d, page %d", pq->rg, pq->page < 0 ? 0 : pq->page);
}

/* ---- pages ---- */

/* Errors while reading a page: "file: row group G, page P: ..." */
#define PAGE_FAIL(st, ...) page_fail(pq, st, __VA_ARGS__)
__attribute__((format(printf, 3, 4))) static qc_status page_fail(qc_parquet *pq, qc_status st, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qc_fail(st, "%s: row group %d, page %d: %s", pq->name, pq->rg, pq->page, msg);
}

static void hyb_init(pq_hybrid *h, const uint8_t *p, const uint8_t *end, int width) {
    *h = (pq_hybrid){.p = p, .end = end, .width = width};
}

/* Next value; false when the data ends (or a run header is malformed). */
static bool hyb_next(pq_hybrid *h, uint32_t *v) {
    while (h->left == 0) {
        if (h->p >= h->end) return false;
        uint64_t hdr = 0;
        int shift = 0;
        for (;;) {
            if (h->p >= h->end || shift > 28) return false;
            uint8_t b = *h->p++;
            hdr |= (uint64_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80)) break;
        }
        if (hdr & 1) {
            uint64_t groups = hdr >> 1, bytes = groups * (uint64_t)h->width;
            uint64_t avail = (uint64_t)(h->end - h->p);
            h->packed = true;
            h->bits = h->p;
            h->bit = 0;
            if (h->width == 0) {
                h->left = groups * 8;
            } else {
                /* a final run cut short by the writer still yields the values that are present */
                if (bytes > avail) bytes = avail;
                h->left = groups * 8;
                if (h->left > bytes * 8 / (uint64_t)h->width) h->left = bytes * 8 / (uint64_t)h->width;
            }
            h->p += bytes;
        } else {
            size_t nb = ((size_t)h->width + 7) / 8;
            if ((size_t)(h->end - h->p) < nb) return false;
            uint32_t val = 0;
            for (size_t k = 0; k < nb; k++) val |= (uint32_t)h->p[k] << (8 * k);
            h->p += nb;
            h->packed = false;
            h->value = val;
            h->left = hdr >> 1;
        }
    }
    h->left--;
    if (!h->packed) {
        *v = h->value;
        return true;
    }
    if (h->width == 0) {
        *v = 0;
        return true;
    }
    /* the run's byte count bounds h->bit + width, checked when the run was opened */
    uint64_t byte = h->bit >> 3;
    unsigned sh = (unsigned)(h->bit & 7);
    unsigned nbytes = (sh + (unsigned)h->width + 7) / 8;
    uint64_t acc = 0;
    for (unsigned k = 0; k < nbytes; k++) acc |= (uint64_t)h->bits[byte + k] << (8 * k);
    *v = (uint32_t)((acc >> sh) & ((h->width == 32) ? 0xffffffffu : ((1u << h->width) - 1)));
    h->bit += (uint64_t)h->width;
    return true;
}

/* Decompresses n bytes at src into the page buffer; exactly `expected` bytes must come out. The result
 * is *out (src itself when uncompressed). */
static qc_status decompress(qc_parquet *pq, int codec, const uint8_t *src, size_t n, size_t expected,
                            const uint8_t **out) {
    if (codec == PQ_CODEC_NONE) {
        if (n != expected)
            return PAGE_FAIL(QC_ERR_FORMAT, "uncompressed page holds %zu bytes but declares %zu", n, expected);
        *out = src;
        return QC_OK;
    }
    if (codec == PQ_CODEC_SNAPPY) {
        size_t ulen;
        if (snappy_uncompressed_length((const char *)src, n, &ulen) != SNAPPY_OK)
            return PAGE_FAIL(QC_ERR_FORMAT, "corrupt snappy data (bad length preamble)");
        if (ulen != expected)
            return PAGE_FAIL(QC_ERR_FORMAT, "snappy data holds %zu bytes, the page header says %zu", ulen, expected);
        /* snappy expands at most ~22x (a 3-byte copy makes 64 bytes): refuse to allocate for a lying preamble */
        if (ulen / 32 > n)
            return PAGE_FAIL(QC_ERR_FORMAT, "snappy data of %zu bytes cannot hold %zu bytes", n, ulen);
        if (!grow(&pq->page_buf, &pq->page_cap, expected ? expected : 1))
            return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a %zu-byte page", expected);
        size_t got = pq->page_cap;
        if (snappy_uncompress((const char *)src, n, (char *)pq->page_buf, &got) != SNAPPY_OK || got != expected)
            return PAGE_FAIL(QC_ERR_FORMAT, "corrupt snappy data");
        *out = pq->page_buf;
        return QC_OK;
    }
    if (codec == PQ_CODEC_ZSTD) {
        unsigned long long fcs = ZSTD_getFrameContentSize(src, n);
        if (fcs == ZSTD_CONTENTSIZE_ERROR) return PAGE_FAIL(QC_ERR_FORMAT, "corrupt zstd frame header");
        if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != expected && ZSTD_findFrameCompressedSize(src, n) == n)
            return PAGE_FAIL(QC_ERR_FORMAT, "zstd frame holds %llu bytes, the page header says %zu", fcs, expected);
        if (!pq->zd && !(pq->zd = ZSTD_createDCtx())) return PAGE_FAIL(QC_ERR_NOMEM, "out of memory (zstd context)");
        if (!grow(&pq->page_buf, &pq->page_cap, expected ? expected : 1))
            return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a %zu-byte page", expected);
        size_t got = ZSTD_decompressDCtx(pq->zd, pq->page_buf, expected, src, n);
        if (ZSTD_isError(got)) return PAGE_FAIL(QC_ERR_FORMAT, "corrupt zstd data: %s", ZSTD_getErrorName(got));
        if (got != expected)
            return PAGE_FAIL(QC_ERR_FORMAT, "zstd data holds %zu bytes, the page header says %zu", got, expected);
        *out = pq->page_buf;
        return QC_OK;
    }
    QC_ASSERT(codec == PQ_CODEC_GZIP); /* checked when the footer was read */
    if (!pq->z_init) {
        memset(&pq->z, 0, sizeof pq->z);
        if (inflateInit2(&pq->z, 15 + 32) != Z_OK) return PAGE_FAIL(QC_ERR_NOMEM, "cannot initialise zlib");
        pq->z_init = true;
    } else if (inflateReset(&pq->z) != Z_OK) {
        return PAGE_FAIL(QC_ERR_FORMAT, "cannot reset zlib");
    }
    /* Grow the output as it arrives (one byte past `expected` detects overlong data), so a lying header
     * cannot make us allocate more than the data really holds. */
    size_t limit = expected + 1, have = 0, cap = n * 4 + 4096 < limit ? n * 4 + 4096 : limit;
    if (!grow(&pq->page_buf, &pq->page_cap, cap)) return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a page");
    pq->z.next_in = (Bytef *)(uintptr_t)src;
    size_t in_left = n;
    for (;;) {
        if (have == cap) {
            if (cap == limit) return PAGE_FAIL(QC_ERR_FORMAT, "gzip data holds more than the %zu bytes declared", expected);
            cap = cap > limit / 2 ? limit : cap * 2;
            if (!grow(&pq->page_buf, &pq->page_cap, cap)) return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a page");
        }
        uInt in_chunk = in_left > UINT32_MAX ? UINT32_MAX : (uInt)in_left;
        uInt out_chunk = cap - have > UINT32_MAX ? UINT32_MAX : (uInt)(cap - have);
        pq->z.avail_in = in_chunk;
        pq->z.next_out = pq->page_buf + have;
        pq->z.avail_out = out_chunk;
        int ret = inflate(&pq->z, Z_NO_FLUSH);
        in_left -= in_chunk - pq->z.avail_in;
        have += out_chunk - pq->z.avail_out;
        if (ret == Z_STREAM_END) {
            if (in_left == 0) break;
            if (inflateReset(&pq->z) != Z_OK) return PAGE_FAIL(QC_ERR_FORMAT, "cannot reset zlib");
            continue;
        }
        if (ret == Z_BUF_ERROR && pq->z.avail_out != 0)
            return PAGE_FAIL(QC_ERR_FORMAT, "gzip data is truncated");
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            return PAGE_FAIL(QC_ERR_FORMAT, "corrupt gzip data: %s", pq->z.msg ? pq->z.msg : "inflate failed");
    }
    if (have != expected)
        return PAGE_FAIL(QC_ERR_FORMAT, "gzip data holds %zu bytes, the page header says %zu", have, expected);
    *out = pq->page_buf;
    return QC_OK;
}

/* Makes the buffer holding [p, ...) the dictionary buffer (swapping it with dict_buf). */
static void keep_as_dict(qc_parquet *pq, const uint8_t *p) {
    uint8_t **owner = p == pq->raw ? &pq->raw : &pq->page_buf;
    size_t *cap = p == pq->raw ? &pq->raw_cap : &pq->page_cap;
    uint8_t *b = pq->dict_buf;
    size_t c = pq->dict_cap;
    pq->dict_buf = *owner;
    pq->dict_cap = *cap;
    *owner = b;
    *cap = c;
}

static qc_status load_dictionary(qc_parquet *pq, const uint8_t *data, size_t len, int64_t n, int enc) {
    if (pq->has_dict) return PAGE_FAIL(QC_ERR_FORMAT, "a second dictionary page");
    if (pq->data_pages > 0) return PAGE_FAIL(QC_ERR_FORMAT, "dictionary page after data pages");
    if (enc != PQ_ENC_PLAIN && enc != PQ_ENC_PLAIN_DICT)
        return PAGE_FAIL(QC_ERR_UNSUPPORTED, "dictionary page encoding %s (%d)", encoding_name(enc), enc);
    if (n < 0 || (uint64_t)n > len / 4)
        return PAGE_FAIL(QC_ERR_FORMAT, "dictionary claims %" PRId64 " entries in %zu bytes", n, len);
    uint32_t *off = realloc(pq->dict_off, (size_t)(n ? n : 1) * sizeof *off);
    if (off) pq->dict_off = off;
    uint32_t *ln = off ? realloc(pq->dict_len, (size_t)(n ? n : 1) * sizeof *ln) : NULL;
    if (ln) pq->dict_len = ln;
    if (!off || !ln) return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for %" PRId64 " dictionary entries", n);
    size_t p = 0;
    for (int64_t k = 0; k < n; k++) {
        if (len - p < 4) return PAGE_FAIL(QC_ERR_FORMAT, "dictionary entry %" PRId64 " runs past the page", k);
        uint32_t l = (uint32_t)data[p] | (uint32_t)data[p + 1] << 8 | (uint32_t)data[p + 2] << 16 |
                     (uint32_t)data[p + 3] << 24;
        p += 4;
        if (l > len - p)
            return PAGE_FAIL(QC_ERR_FORMAT, "dictionary entry %" PRId64 " (%u bytes) runs past the page", k, l);
        off[k] = (uint32_t)p;
        ln[k] = l;
        p += l;
    }
    keep_as_dict(pq, data);
    pq->dict_n = (size_t)n;
    pq->has_dict = true;
    return QC_OK;
}

static int bit_width(uint32_t v) {
    int w = 0;
    while (v) {
        w++;
        v >>= 1;
    }
    return w;
}

/* Sets up the value decoder for the values section [p, end) of a data page. */
static qc_status start_values(qc_parquet *pq, int enc, const uint8_t *p, const uint8_t *end) {
    if (enc == PQ_ENC_PLAIN) {
        pq->page_is_dict = false;
        pq->vp = p;
        pq->vend = end;
        return QC_OK;
    }
    if (enc == PQ_ENC_PLAIN_DICT || enc == PQ_ENC_RLE_DICT) {
        if (!pq->has_dict) return PAGE_FAIL(QC_ERR_FORMAT, "dictionary-encoded page but no dictionary page");
        if (p == end) {
            /* only nulls: no bit width byte needed */
            pq->page_is_dict = true;
            hyb_init(&pq->idx, p, end, 0);
            return QC_OK;
        }
        int w = *p;
        if (w > 32) return PAGE_FAIL(QC_ERR_FORMAT, "dictionary index bit width %d > 32", w);
        pq->page_is_dict = true;
        hyb_init(&pq->idx, p + 1, end, w);
        return QC_OK;
    }
    return PAGE_FAIL(QC_ERR_UNSUPPORTED, "value encoding %s (%d); supported: PLAIN, PLAIN_DICTIONARY, RLE_DICTIONARY",
                     encoding_name(enc), enc);
}

typedef struct pq_page_header {
    int     type;
    int64_t usize, csize;
    bool    has_v1, has_v2, has_dict;
    int64_t num_values, num_nulls, num_rows;
    int     enc, def_enc, rep_enc;
    int64_t def_len, rep_len;
    bool    is_compressed;
    int64_t dict_n;
    int     dict_enc;
} pq_page_header;

static void parse_data_header(qc_tc *c, pq_page_header *h, bool v2) {
    qc_tc_struct_begin(c);
    int16_t id = 0;
    int t;
    while (qc_tc_field(c, &id, &t)) {
        bool isint = t == QC_TC_I32;
        if (id == 1 && isint) h->num_values = qc_tc_i32(c);
        else if (!v2 && id == 2 && isint) h->enc = qc_tc_i32(c);
        else if (!v2 && id == 3 && isint) h->def_enc = qc_tc_i32(c);
        else if (!v2 && id == 4 && isint) h->rep_enc = qc_tc_i32(c);
        else if (v2 && id == 2 && isint) h->num_nulls = qc_tc_i32(c);
        else if (v2 && id == 3 && isint) h->num_rows = qc_tc_i32(c);
        else if (v2 && id == 4 && isint) h->enc = qc_tc_i32(c);
        else if (v2 && id == 5 && isint) h->def_len = qc_tc_i32(c);
        else if (v2 && id == 6 && isint) h->rep_len = qc_tc_i32(c);
        else if (v2 && id == 7 && (t == QC_TC_TRUE || t == QC_TC_FALSE)) h->is_compressed = qc_tc_bool_field(c, t);
        else qc_tc_skip(c, t);
    }
    qc_tc_struct_end(c);
}

static void parse_page_header(qc_tc *c, pq_page_header *h) {
    *h = (pq_page_header){.type = -1, .usize = -1, .csize = -1, .num_values = -1, .enc = -1, .def_enc = -1,
                          .rep_enc = -1, .def_len = -1, .rep_len = -1, .is_compressed = true, .dict_n = -1,
                          .dict_enc = -1};
    int16_t id = 0;
    int t;
    while (qc_tc_field(c, &id, &t)) {
        if (id == 1 && t == QC_TC_I32) h->type = qc_tc_i32(c);
        else if (id == 2 && t == QC_TC_I32) h->usize = qc_tc_i32(c);
        else if (id == 3 && t == QC_TC_I32) h->csize = qc_tc_i32(c);
        else if (id == 5 && t == QC_TC_STRUCT) {
            h->has_v1 = true;
            parse_data_header(c, h, false);
        } else if (id == 7 && t == QC_TC_STRUCT) {
            h->has_dict = true;
            qc_tc_struct_begin(c);
            int16_t did = 0;
            int dt;
            while (qc_tc_field(c, &did, &dt)) {
                if (did == 1 && dt == QC_TC_I32) h->dict_n = qc_tc_i32(c);
                else if (did == 2 && dt == QC_TC_I32) h->dict_enc = qc_tc_i32(c);
                else qc_tc_skip(c, dt);
            }
            qc_tc_struct_end(c);
        } else if (id == 8 && t == QC_TC_STRUCT) {
            h->has_v2 = true;
            parse_data_header(c, h, true);
        } else {
            qc_tc_skip(c, t);
        }
    }
}

/* Reads the page header at pq->pos; on return pq->pos is the page data's offset. */
static qc_status read_page_header(qc_parquet *pq, const pq_chunk *ch, pq_page_header *h) {
    uint64_t left = (uint64_t)(ch->end - pq->pos);
    size_t window = left < 512 ? (size_t)left : 512;
    for (;;) {
        if (!grow(&pq->hdr, &pq->hdr_cap, window)) return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a page header");
        qc_status st = pq_read(pq, (uint64_t)pq->pos, pq->hdr, window);
        if (st != QC_OK) return st;
        qc_tc c = qc_tc_init(pq->hdr, window);
        parse_page_header(&c, h);
        if (!c.err) {
            pq->pos += c.p - c.begin;
            pq->bytes_read += (uint64_t)(c.p - c.begin);
            return QC_OK;
        }
        if (!c.truncated || window == left || window >= QC_PARQUET_MAX_HEADER)
            return PAGE_FAIL(QC_ERR_FORMAT, "corrupt page header at offset %" PRId64 ": %s%s", pq->pos, c.why,
                             c.truncated && window == left ? " (the column chunk ends inside it)" : "");
        window = window > left / 4 ? (size_t)left : window * 4;
        if (window > QC_PARQUET_MAX_HEADER) window = QC_PARQUET_MAX_HEADER;
    }
}

static qc_status load_page(qc_parquet *pq) {
    const pq_chunk *ch = &pq->chunks[pq->rg];
    pq->page++;
    if (pq->pos >= ch->end)
        return PAGE_FAIL(QC_ERR_FORMAT, "column chunk ends after %" PRId64 " of its %" PRId64 " values",
                         pq->chunk_values, ch->num_values);
    pq_page_header h;
    qc_status st = read_page_header(pq, ch, &h);
    if (st != QC_OK) return st;
    int64_t left = ch->end - pq->pos;
    if (h.csize < 0 || h.csize > left || (uint64_t)h.csize > QC_PARQUET_MAX_PAGE)
        return PAGE_FAIL(QC_ERR_FORMAT, "compressed page size %" PRId64 " out of range (%" PRId64
                         " bytes left in the column chunk)", h.csize, left);
    if (h.usize < 0 || (uint64_t)h.usize > QC_PARQUET_MAX_PAGE)
        return PAGE_FAIL(QC_ERR_FORMAT, "uncompressed page size %" PRId64 " out of range", h.usize);
    int64_t data_at = pq->pos;
    pq->pos += h.csize; /* the next header, whatever happens to this page */

    if (h.type != PQ_PAGE_DATA && h.type != PQ_PAGE_DATA_V2 && h.type != PQ_PAGE_DICT) {
        if (h.type != PQ_PAGE_INDEX) QC_LOGD("%s: row group %d, page %d: skipping page type %d", pq->name, pq->rg,
                                              pq->page, h.type);
        return QC_OK;
    }
    if ((h.type == PQ_PAGE_DATA && !h.has_v1) || (h.type == PQ_PAGE_DATA_V2 && !h.has_v2) ||
        (h.type == PQ_PAGE_DICT && !h.has_dict))
        return PAGE_FAIL(QC_ERR_FORMAT, "page of type %d lacks its type-specific header", h.type);
    if (!grow(&pq->raw, &pq->raw_cap, (size_t)h.csize ? (size_t)h.csize : 1))
        return PAGE_FAIL(QC_ERR_NOMEM, "out of memory for a %" PRId64 "-byte page", h.csize);
    st = pq_read(pq, (uint64_t)data_at, pq->raw, (size_t)h.csize);
    if (st != QC_OK) return st;
    pq->bytes_read += (uint64_t)h.csize;

    if (h.type == PQ_PAGE_DICT) {
        const uint8_t *d;
        st = decompress(pq, ch->codec, pq->raw, (size_t)h.csize, (size_t)h.usize, &d);
        if (st == QC_OK) st = load_dictionary(pq, d, (size_t)h.usize, h.dict_n, h.dict_enc);
        return st;
    }

    int64_t remaining = ch->num_values - pq->chunk_values;
    if (h.num_values < 0 || h.num_values > remaining)
        return PAGE_FAIL(QC_ERR_FORMAT, "page holds %" PRId64 " values but only %" PRId64
                         " remain in the column chunk", h.num_values, remaining);
    const uint8_t *vals, *vend;
    if (h.type == PQ_PAGE_DATA) {
        const uint8_t *d;
        st = decompress(pq, ch->codec, pq->raw, (size_t)h.csize, (size_t)h.usize, &d);
        if (st != QC_OK) return st;
        const uint8_t *p = d, *end = d + h.usize;
        if (pq->max_def > 0) {
            if (h.def_enc != PQ_ENC_RLE)
                return PAGE_FAIL(QC_ERR_UNSUPPORTED, "definition level encoding %s (%d); supported: RLE",
                                 encoding_name(h.def_enc), h.def_enc);
            if (end - p < 4) return PAGE_FAIL(QC_ERR_FORMAT, "definition levels' length runs past the page");
            uint32_t l = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            p += 4;
            if (l > (uint64_t)(end - p))
                return PAGE_FAIL(QC_ERR_FORMAT, "definition levels (%u bytes) run past the page", l);
            hyb_init(&pq->def, p, p + l, bit_width((uint32_t)pq->max_def));
            p += l;
        }
        vals = p;
        vend = end;
    } else {
        if (h.def_len < 0 || h.rep_len < 0 || h.def_len > h.csize - h.rep_len || h.def_len > h.usize - h.rep_len)
            return PAGE_FAIL(QC_ERR_FORMAT, "level lengths (repetition %" PRId64 ", definition %" PRId64
                             ") do not fit in the page", h.rep_len, h.def_len);
        if (h.rep_len != 0) return PAGE_FAIL(QC_ERR_FORMAT, "repetition levels in a flat column");
        const uint8_t *lv = pq->raw + h.rep_len;
        if (pq->max_def > 0) hyb_init(&pq->def, lv, lv + h.def_len, bit_width((uint32_t)pq->max_def));
        int64_t lvl = h.rep_len + h.def_len;
        const uint8_t *d;
        if (h.is_compressed) {
            st = decompress(pq, ch->codec, pq->raw + lvl, (size_t)(h.csize - lvl), (size_t)(h.usize - lvl), &d);
        } else {
            st = decompress(pq, PQ_CODEC_NONE, pq->raw + lvl, (size_t)(h.csize - lvl), (size_t)(h.usize - lvl), &d);
        }
        if (st != QC_OK) return st;
        vals = d;
        vend = d + (h.usize - lvl);
    }
    st = start_values(pq, h.enc, vals, vend);
    if (st != QC_OK) return st;
    pq->page_left = h.num_values;
    pq->chunk_values += h.num_values;
    pq->data_pages++;
    return QC_OK;
}

qc_status qc_parquet_next(qc_parquet *pq, const uint8_t **val, size_t *len, bool *more) {
    *val = NULL;
    *len = 0;
    *more = false;
    for (;;) {
        if (pq->page_left > 0) {
            if (pq->max_def > 0) {
                uint32_t d;
                if (!hyb_next(&pq->def, &d))
                    return PAGE_FAIL(QC_ERR_FORMAT, "definition levels end %" PRId64 " values early", pq->page_left);
                if (d > (uint32_t)pq->max_def)
                    return PAGE_FAIL(QC_ERR_FORMAT, "definition level %u > maximum %d", d, pq->max_def);
                pq->page_left--;
                if (d < (uint32_t)pq->max_def) {
                    pq->nulls++;
                    if (!pq->def.packed && pq->def.left > 0) { /* skip the rest of a run of nulls at once */
                        uint64_t k = pq->def.left < (uint64_t)pq->page_left ? pq->def.left : (uint64_t)pq->page_left;
                        pq->def.left -= k;
                        pq->page_left -= (int64_t)k;
                        pq->nulls += (int64_t)k;
                    }
                    continue;
                }
            } else {
                pq->page_left--;
            }
            if (pq->page_is_dict) {
                uint32_t i;
                if (!hyb_next(&pq->idx, &i))
                    return PAGE_FAIL(QC_ERR_FORMAT, "dictionary indices end %" PRId64 " values early", pq->page_left + 1);
                if (i >= pq->dict_n)
                    return PAGE_FAIL(QC_ERR_FORMAT, "dictionary index %u out of range (%zu entries)", i, pq->dict_n);
                *val = pq->dict_buf + pq->dict_off[i];
                *len = pq->dict_len[i];
            } else {
                if (pq->vend - pq->vp < 4) return PAGE_FAIL(QC_ERR_FORMAT, "PLAIN values end early");
                const uint8_t *p = pq->vp;
                uint32_t l = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
                if (l > (uint64_t)(pq->vend - p - 4))
                    return PAGE_FAIL(QC_ERR_FORMAT, "PLAIN value of %u bytes runs past the page", l);
                *val = p + 4;
                *len = l;
                pq->vp = p + 4 + l;
            }
            pq->values_out++;
            *more = true;
            return QC_OK;
        }
        if (pq->rg >= pq->n_chunks) {
            if (pq->values_out + pq->nulls != pq->rows)
                return qc_fail(QC_ERR_FORMAT, "%s: read %" PRId64 " values and %" PRId64 " nulls, the footer says %"
                               PRId64 " rows", pq->name, pq->values_out, pq->nulls, pq->rows);
            return QC_OK;
        }
        if (pq->chunk_values >= pq->chunks[pq->rg].num_values) {
            pq->rg++;
            pq->page = -1;
            pq->data_pages = 0;
            pq->chunk_values = 0;
            pq->has_dict = false;
            pq->dict_n = 0;
            if (pq->rg < pq->n_chunks) pq->pos = pq->chunks[pq->rg].start;
            continue;
        }
        qc_status st = load_page(pq);
        if (st != QC_OK) return st;
    }
}
