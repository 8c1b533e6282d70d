/* test_docs.c - the document readers: text splits, JSON lines, JSON arrays, gzip/zstd streams and Parquet.
 *
 * Handcrafted inputs first (corrupt files, one check each; Parquet files built here by a small writer with
 * its own Thrift compact encoder, so every page layout, encoding and codec is covered), then the real data
 * in ../shared/data/text: c4.utf8 rewritten as jsonl / jsonl.gz / jsonl.zst / JSON array (+ gz) must give
 * the same 118 documents; tiny.utf8 by paragraph; docs-domain-train.jsonl.gz against an independent
 * zlib + cJSON read; and every Parquet file of parquet/EXPECTED.json (row count and sha256 of the rows
 * joined by "\n"). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "docs.h"
#include "parquet.h"
#include "sha256.h"
#include "testutil.h"

/* ---- helpers ---- */

static const char *tpath(const char *name) {
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", qc_test_tmpdir(), name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (n && fwrite(p, 1, n, f) != n) fail_msg("cannot write %s", path);
    if (fclose(f) != 0) fail_msg("cannot close %s", path);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void check_msg_has(const char *needle) {
    if (!strstr(qc_last_error(), needle)) fail_msg("message '%s' lacks '%s'", qc_last_error(), needle);
}

/* A growable byte buffer. */
typedef struct tbuf {
    uint8_t *p;
    size_t   n, cap;
} tbuf;

static void put(tbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n) c *= 2;
        b->p = realloc(b->p, c);
        assert_non_null(b->p);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u8(tbuf *b, uint8_t v) { put(b, &v, 1); }
static void put_str(tbuf *b, const char *s) { put(b, s, strlen(s)); }
static void put_u32le(tbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

/* All documents of a reader, copied; fails the test on any error. */
typedef struct docset {
    char  **d;
    size_t *len;
    size_t  n;
} docset;

static void docset_add(docset *s, const char *d, size_t n) {
    s->d = realloc(s->d, (s->n + 1) * sizeof *s->d);
    s->len = realloc(s->len, (s->n + 1) * sizeof *s->len);
    assert_non_null(s->d);
    assert_non_null(s->len);
    s->d[s->n] = qc_strndup(d, n);
    s->len[s->n] = n;
    s->n++;
}

static void docset_free(docset *s) {
    for (size_t i = 0; i < s->n; i++) free(s->d[i]);
    free(s->d);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static docset read_all_r(qc_docs *r) {
    docset s = {0};
    for (;;) {
        const char *d;
        size_t n;
        QC_CHECK_OK(qc_docs_next(r, &d, &n));
        if (!d) break;
        docset_add(&s, d, n);
        assert_int_equal(qc_docs_index(r), (int64_t)s.n);
    }
    /* the end is sticky */
    const char *d = (const char *)1;
    size_t n = 1;
    QC_CHECK_OK(qc_docs_next(r, &d, &n));
    assert_null(d);
    assert_int_equal(n, 0);
    return s;
}

static docset read_all(const char *path, qc_docs_format fmt, const char *field, const char *split) {
    qc_docs_opts o = {.format = fmt, .field = field, .split = split};
    qc_docs *r;
    QC_CHECK_OK(qc_docs_open(path, &o, &r));
    docset s = read_all_r(r);
    qc_docs_free(r);
    return s;
}

static void expect_same(const docset *a, const docset *b, const char *what) {
    if (a->n != b->n) fail_msg("%s: %zu documents, expected %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->d[i], b->d[i], a->len[i]) != 0)
            fail_msg("%s: document %zu differs (%zu bytes '%.40s...', expected %zu bytes '%.40s...')", what, i,
                     a->len[i], a->d[i], b->len[i], b->d[i]);
}

/* Opens path and reads until the first error, which must be `want` with `needle` in the message (and the
 * file name). Returns the documents read before the error. */
static size_t expect_read_fails(const char *path, const qc_docs_opts *o, qc_status want, const char *needle) {
    qc_docs *r;
    qc_error_clear();
    qc_status st = qc_docs_open(path, o, &r);
    size_t ok = 0;
    if (st == QC_OK) {
        for (;;) {
            const char *d;
            size_t n;
            st = qc_docs_next(r, &d, &n);
            if (st != QC_OK || !d) break;
            ok++;
        }
        if (st != QC_OK) { /* errors are sticky */
            const char *d;
            size_t n;
            char first[2048];
            snprintf(first, sizeof first, "%s", qc_last_error());
            assert_int_equal(qc_docs_next(r, &d, &n), st);
            assert_null(d);
            assert_string_equal(qc_last_error(), first);
        }
        qc_docs_free(r);
    }
    if (st != want)
        fail_msg("%s: got %s (%s), expected %s", path, qc_status_str(st), qc_last_error(), qc_status_str(want));
    check_msg_has(needle);
    check_msg_has(path);
    return ok;
}

/* gzip of [p, p+n) as one member, appended to out. */
static void gzip_member(tbuf *out, const void *p, size_t n, int level) {
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t bound = deflateBound(&z, (uLong)n);
    uint8_t *tmp = malloc(bound);
    assert_non_null(tmp);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = tmp;
    z.avail_out = (uInt)bound;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    put(out, tmp, z.total_out);
    deflateEnd(&z);
    free(tmp);
}

static void zstd_frame(tbuf *out, const void *p, size_t n) {
    size_t bound = ZSTD_compressBound(n);
    uint8_t *tmp = malloc(bound);
    assert_non_null(tmp);
    size_t got = ZSTD_compress(tmp, bound, p, n, 3);
    assert_false(ZSTD_isError(got));
    put(out, tmp, got);
    free(tmp);
}

/* A JSON string literal for s: escapes as JSON requires; with `ascii`, every non-ASCII character becomes
 * \uXXXX (surrogate pairs above U+FFFF), so the reader must decode escapes back to the same UTF-8. */
static void put_json_string(tbuf *b, const char *s, size_t n, bool ascii) {
    put_u8(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[16];
        if (c == '"' || c == '\\') {
            put_u8(b, '\\');
            put_u8(b, c);
        } else if (c == '\n') {
            put_str(b, "\\n");
        } else if (c == '\t') {
            put_str(b, "\\t");
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put_str(b, esc);
        } else if (c >= 0x80 && ascii) {
            uint32_t cp;
            size_t k;
            if (c >= 0xf0) { cp = c & 0x07; k = 3; }
            else if (c >= 0xe0) { cp = c & 0x0f; k = 2; }
            else { cp = c & 0x1f; k = 1; }
            assert_true(i + k < n);
            for (size_t j = 1; j <= k; j++) cp = cp << 6 | ((unsigned char)s[i + j] & 0x3f);
            i += k;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(esc, sizeof esc, "\\ud%03x\\ud%03x", 0x800 | (cp >> 10), 0xc00 | (cp & 0x3ff));
            } else {
                snprintf(esc, sizeof esc, "\\u%04X", cp);
            }
            put_str(b, esc);
        } else {
            put_u8(b, c);
        }
    }
    put_u8(b, '"');
}

/* ---------------------------------------------------------------------------------------------------- */
/* A minimal Parquet writer (its own Thrift compact encoder) for handcrafted files.                      */

typedef struct tc_w {
    tbuf   *b;
    int16_t last[16]; /* last field id per struct level */
    int     level;
} tc_w;

static void put_varint(tbuf *b, uint64_t v) {
    while (v >= 0x80) {
        put_u8(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_u8(b, (uint8_t)v);
}
static void put_zz(tbuf *b, int64_t v) { put_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)); }

static void w_field(tc_w *w, int16_t id, int type) {
    int16_t d = (int16_t)(id - w->last[w->level]);
    if (d > 0 && d <= 15) {
        put_u8(w->b, (uint8_t)(d << 4 | type));
    } else {
        put_u8(w->b, (uint8_t)type);
        put_zz(w->b, id);
    }
    w->last[w->level] = id;
}
static void w_i32(tc_w *w, int16_t id, int64_t v) { w_field(w, id, 5); put_zz(w->b, v); }
static void w_i64(tc_w *w, int16_t id, int64_t v) { w_field(w, id, 6); put_zz(w->b, v); }
static void w_bool(tc_w *w, int16_t id, bool v) { w_field(w, id, v ? 1 : 2); }
static void w_bin(tc_w *w, int16_t id, const void *d, size_t n) {
    w_field(w, id, 8);
    put_varint(w->b, n);
    put(w->b, d, n);
}
static void w_list(tc_w *w, int16_t id, int elem_type, size_t n) {
    w_field(w, id, 9);
    if (n < 15) {
        put_u8(w->b, (uint8_t)(n << 4 | (size_t)elem_type));
    } else {
        put_u8(w->b, (uint8_t)(0xf0 | elem_type));
        put_varint(w->b, n);
    }
}
static void w_struct_field(tc_w *w, int16_t id) { w_field(w, id, 12); w->last[++w->level] = 0; }
static void w_struct_elem(tc_w *w) { w->last[++w->level] = 0; } /* a struct element of a list */
static void w_end(tc_w *w) {
    put_u8(w->b, 0);
    if (w->level > 0) w->level--;
}

typedef struct pq_spec {
    const char **vals;        /* NULL entries are nulls (needs optional) */
    size_t       n;
    bool         optional;
    bool         dict;        /* dictionary page + RLE_DICTIONARY data pages */
    int          page_v;      /* 1 or 2 */
    int          codec;       /* 0 none, 1 snappy, 2 gzip, 6 zstd */
    size_t       rows_per_page, rows_per_group;
    bool         v2_uncompressed; /* DATA_PAGE_V2 with is_compressed = false */
    /* corruptions */
    int64_t      csize_override;  /* first data page's compressed_page_size, if non-zero */
    bool         bad_dict_index;  /* the first index points past the dictionary */
    int64_t      footer_rows_delta;
    bool         truncate_plain;  /* the first PLAIN page's last value claims too many bytes */
    bool         def_level_2;     /* a definition level of 2 in an OPTIONAL column */
    bool         corrupt_data;    /* flips bytes inside the first data page's compressed data */
    bool         cut_data;        /* drops the last 8 bytes of the first data page's compressed data */
    const char  *column;          /* NULL: "text" */
} pq_spec;

static void compress_into(tbuf *out, int codec, const uint8_t *p, size_t n) {
    if (codec == 0) {
        put(out, p, n);
    } else if (codec == 1) {
        size_t cap = snappy_max_compressed_length(n);
        char *tmp = malloc(cap);
        assert_non_null(tmp);
        assert_int_equal(snappy_compress((const char *)p, n, tmp, &cap), SNAPPY_OK);
        put(out, tmp, cap);
        free(tmp);
    } else if (codec == 2) {
        gzip_member(out, p, n, 6);
    } else {
        zstd_frame(out, p, n);
    }
}

/* RLE/bit-packed hybrid: a run of 8 or more equal values as one RLE run, otherwise one bit-packed group of
 * the next 8 values (zero-padded at the end). */
static void put_hybrid(tbuf *b, const uint32_t *v, size_t n, int width) {
    size_t i = 0;
    while (i < n) {
        size_t run = 1;
        while (i + run < n && v[i + run] == v[i]) run++;
        if (run >= 8) {
            put_varint(b, (uint64_t)run << 1);
            for (int k = 0; k < (width + 7) / 8; k++) put_u8(b, (uint8_t)(v[i] >> (8 * k)));
            i += run;
            continue;
        }
        put_varint(b, 1 << 1 | 1);
        uint64_t acc = 0;
        int bits = 0;
        for (size_t k = 0; k < 8; k++) {
            uint64_t x = i + k < n ? v[i + k] : 0;
            acc |= x << bits;
            bits += width;
            while (bits >= 8) {
                put_u8(b, (uint8_t)acc);
                acc >>= 8;
                bits -= 8;
            }
        }
        i += 8;
    }
}

static int width_of(uint32_t v) {
    int w = 0;
    while (v) {
        w++;
        v >>= 1;
    }
    return w;
}

typedef struct chunk_meta {
    int64_t data_off, dict_off, total_c, total_u;
    size_t  nvals;
} chunk_meta;

/* Writes the "text" column chunk for rows [r0, r1) at the end of f. */
static chunk_meta write_text_chunk(tbuf *f, const pq_spec *s, size_t r0, size_t r1, bool *first_data_page) {
    chunk_meta m = {.dict_off = -1, .nvals = r1 - r0};
    size_t start = f->n;
    /* dictionary: distinct non-null values in order of appearance */
    const char **dict = NULL;
    size_t nd = 0;
    uint32_t *idx = calloc(r1 - r0 + 1, sizeof *idx);
    assert_non_null(idx);
    if (s->dict) {
        dict = calloc(r1 - r0 + 1, sizeof *dict);
        for (size_t r = r0; r < r1; r++) {
            if (!s->vals[r]) continue;
            size_t k = 0;
            while (k < nd && strcmp(dict[k], s->vals[r]) != 0) k++;
            if (k == nd) dict[nd++] = s->vals[r];
            idx[r - r0] = (uint32_t)k;
        }
        tbuf body = {0};
        for (size_t k = 0; k < nd; k++) {
            put_u32le(&body, (uint32_t)strlen(dict[k]));
            put_str(&body, dict[k]);
        }
        tbuf comp = {0};
        compress_into(&comp, s->codec, body.p, body.n);
        tbuf hdr = {0};
        tc_w w = {.b = &hdr};
        w_i32(&w, 1, 2); /* DICTIONARY_PAGE */
        w_i32(&w, 2, (int64_t)body.n);
        w_i32(&w, 3, (int64_t)comp.n);
        w_struct_field(&w, 7);
        w_i32(&w, 1, (int64_t)nd);
        w_i32(&w, 2, 0); /* PLAIN */
        w_end(&w);
        w_end(&w);
        m.dict_off = (int64_t)f->n;
        put(f, hdr.p, hdr.n);
        put(f, comp.p, comp.n);
        m.total_u += (int64_t)(hdr.n + body.n);
        free(body.p);
        free(comp.p);
        free(hdr.p);
    }
    m.data_off = (int64_t)f->n;
    for (size_t p0 = r0; p0 < r1; p0 += s->rows_per_page) {
        size_t p1 = p0 + s->rows_per_page < r1 ? p0 + s->rows_per_page : r1;
        size_t nv = p1 - p0, nulls = 0;
        tbuf levels = {0}, values = {0};
        if (s->optional) {
            uint32_t *def = calloc(nv, sizeof *def);
            for (size_t r = p0; r < p1; r++) {
                def[r - p0] = s->vals[r] ? 1 : 0;
                nulls += !s->vals[r];
            }
            if (s->def_level_2 && *first_data_page)
                for (size_t k = 0; k < 10 && k < nv; k++) def[k] = 2; /* an RLE run holding 2 */
            put_hybrid(&levels, def, nv, 1);
            free(def);
        }
        if (s->dict) {
            uint32_t *ix = calloc(nv + 1, sizeof *ix);
            size_t k = 0;
            for (size_t r = p0; r < p1; r++)
                if (s->vals[r]) ix[k++] = idx[r - r0];
            if (s->bad_dict_index && *first_data_page && k > 0) ix[0] = (uint32_t)nd;
            int wdt = width_of(nd);
            put_u8(&values, (uint8_t)wdt);
            put_hybrid(&values, ix, k, wdt);
            free(ix);
        } else {
            for (size_t r = p0; r < p1; r++) {
                if (!s->vals[r]) continue;
                uint32_t l = (uint32_t)strlen(s->vals[r]);
                if (s->truncate_plain && *first_data_page && r + 1 == p1) l += 1000;
                put_u32le(&values, l);
                put_str(&values, s->vals[r]);
            }
        }
        tbuf hdr = {0}, comp = {0};
        tc_w w = {.b = &hdr};
        size_t usize;
        if (s->page_v == 1) {
            tbuf body = {0};
            if (s->optional) {
                put_u32le(&body, (uint32_t)levels.n);
                put(&body, levels.p, levels.n);
            }
            put(&body, values.p, values.n);
            compress_into(&comp, s->codec, body.p, body.n);
            if (s->corrupt_data && *first_data_page)
                for (size_t k = 12; k + 4 < comp.n; k += 3) comp.p[k] ^= 0x5a;
            if (s->cut_data && *first_data_page) comp.n -= 8;
            usize = body.n;
            free(body.p);
            w_i32(&w, 1, 0); /* DATA_PAGE */
            w_i32(&w, 2, (int64_t)usize);
            w_i32(&w, 3, *first_data_page && s->csize_override ? s->csize_override : (int64_t)comp.n);
            w_struct_field(&w, 5);
            w_i32(&w, 1, (int64_t)nv);
            w_i32(&w, 2, s->dict ? 8 : 0);
            w_i32(&w, 3, 3);
            w_i32(&w, 4, 3);
            w_end(&w);
            w_end(&w);
        } else {
            put(&comp, levels.p, levels.n);
            if (s->v2_uncompressed) put(&comp, values.p, values.n);
            else compress_into(&comp, s->codec, values.p, values.n);
            usize = levels.n + values.n;
            w_i32(&w, 1, 3); /* DATA_PAGE_V2 */
            w_i32(&w, 2, (int64_t)usize);
            w_i32(&w, 3, *first_data_page && s->csize_override ? s->csize_override : (int64_t)comp.n);
            w_struct_field(&w, 8);
            w_i32(&w, 1, (int64_t)nv);
            w_i32(&w, 2, (int64_t)nulls);
            w_i32(&w, 3, (int64_t)nv);
            w_i32(&w, 4, s->dict ? 8 : 0);
            w_i32(&w, 5, (int64_t)levels.n);
            w_i32(&w, 6, 0);
            if (s->v2_uncompressed) w_bool(&w, 7, false);
            w_end(&w);
            w_end(&w);
        }
        put(f, hdr.p, hdr.n);
        put(f, comp.p, comp.n);
        m.total_u += (int64_t)(hdr.n + usize);
        *first_data_page = false;
        free(hdr.p);
        free(comp.p);
        free(levels.p);
        free(values.p);
    }
    m.total_c = (int64_t)(f->n - start);
    free(dict);
    free(idx);
    return m;
}

/* An INT64 "id" column (never read by the reader, present so that it must pick the right chunk). */
static chunk_meta write_id_chunk(tbuf *f, size_t r0, size_t r1) {
    chunk_meta m = {.dict_off = -1, .nvals = r1 - r0, .data_off = (int64_t)f->n};
    tbuf body = {0}, hdr = {0};
    for (size_t r = r0; r < r1; r++) {
        uint64_t v = r;
        put(&body, &v, 8); /* little-endian host (x86/arm) */
    }
    tc_w w = {.b = &hdr};
    w_i32(&w, 1, 0);
    w_i32(&w, 2, (int64_t)body.n);
    w_i32(&w, 3, (int64_t)body.n);
    w_struct_field(&w, 5);
    w_i32(&w, 1, (int64_t)(r1 - r0));
    w_i32(&w, 2, 0);
    w_i32(&w, 3, 3);
    w_i32(&w, 4, 3);
    w_end(&w);
    w_end(&w);
    put(f, hdr.p, hdr.n);
    put(f, body.p, body.n);
    m.total_c = m.total_u = (int64_t)(hdr.n + body.n);
    free(body.p);
    free(hdr.p);
    return m;
}

static void w_column_chunk(tc_w *w, const chunk_meta *m, int type, const char *name, int codec, bool dict) {
    w_struct_elem(w);
    w_i64(w, 2, m->data_off);
    w_struct_field(w, 3);
    w_i32(w, 1, type);
    w_list(w, 2, 5, dict ? 2 : 1);
    put_zz(w->b, dict ? 8 : 0);
    if (dict) put_zz(w->b, 3);
    w_list(w, 3, 8, 1);
    put_varint(w->b, strlen(name));
    put_str(w->b, name);
    w_i32(w, 4, codec);
    w_i64(w, 5, (int64_t)m->nvals);
    w_i64(w, 6, m->total_u);
    w_i64(w, 7, m->total_c);
    w_i64(w, 9, m->data_off);
    if (m->dict_off >= 0) w_i64(w, 11, m->dict_off);
    w_end(w); /* ColumnMetaData */
    w_end(w); /* ColumnChunk */
}

/* The whole file: "PAR1", per row group the id chunk then the text chunk, FileMetaData, length, "PAR1".
 * Returns the footer's offset in *footer_at. */
static tbuf build_parquet(const pq_spec *s, size_t *footer_at) {
    tbuf f = {0};
    put_str(&f, "PAR1");
    size_t rpg = s->rows_per_group ? s->rows_per_group : (s->n ? s->n : 1);
    size_t ngroups = s->n ? (s->n + rpg - 1) / rpg : 0;
    chunk_meta *ids = calloc(ngroups + 1, sizeof *ids), *txt = calloc(ngroups + 1, sizeof *txt);
    bool first = true;
    for (size_t g = 0; g < ngroups; g++) {
        size_t r0 = g * rpg, r1 = r0 + rpg < s->n ? r0 + rpg : s->n;
        ids[g] = write_id_chunk(&f, r0, r1);
        txt[g] = write_text_chunk(&f, s, r0, r1, &first);
    }
    size_t fstart = f.n;
    tc_w w = {.b = &f};
    w_i32(&w, 1, 1);
    w_list(&w, 2, 12, 3);
    const char *col = s->column ? s->column : "text";
    w_struct_elem(&w); /* root */
    w_bin(&w, 4, "schema", 6);
    w_i32(&w, 5, 2);
    w_end(&w);
    w_struct_elem(&w);
    w_i32(&w, 1, 2); /* INT64 */
    w_i32(&w, 3, 0);
    w_bin(&w, 4, "id", 2);
    w_end(&w);
    w_struct_elem(&w);
    w_i32(&w, 1, 6); /* BYTE_ARRAY */
    w_i32(&w, 3, s->optional ? 1 : 0);
    w_bin(&w, 4, col, strlen(col));
    w_i32(&w, 6, 0); /* converted_type UTF8 */
    w_end(&w);
    w_i64(&w, 3, (int64_t)s->n + s->footer_rows_delta);
    w_list(&w, 4, 12, ngroups);
    for (size_t g = 0; g < ngroups; g++) {
        w_struct_elem(&w);
        w_list(&w, 1, 12, 2);
        w_column_chunk(&w, &ids[g], 2, "id", 0, false);
        w_column_chunk(&w, &txt[g], 6, col, s->codec, s->dict);
        w_i64(&w, 2, txt[g].total_u + ids[g].total_u);
        w_i64(&w, 3, (int64_t)txt[g].nvals);
        w_end(&w);
    }
    w_bin(&w, 6, "qcal test writer", 16);
    w_end(&w);
    put_u32le(&f, (uint32_t)(f.n - fstart));
    put_str(&f, "PAR1");
    free(ids);
    free(txt);
    if (footer_at) *footer_at = fstart;
    return f;
}

/* Values for handcrafted Parquet files: repeats (for the dictionary), empty strings, UTF-8, nulls every
 * 7th row when `nulls`. */
static const char **make_values(size_t n, bool nulls) {
    static const char *pool[] = {"alpha", "", "beta \xce\xb2", "gamma\nwith newline", "alpha", "delta \xf0\x9f\x98\x80"};
    const char **v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        if (nulls && i % 7 == 3) v[i] = NULL;
        else if (i % 5 == 4) {
            char *s = malloc(32);
            snprintf(s, 32, "row %zu", i);
            v[i] = s;
        } else v[i] = pool[i % 6];
    }
    return v;
}

static void free_values(const char **v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (i % 5 == 4 && v[i]) free((void *)v[i]);
    free(v);
}

/* Reads a handcrafted file through qc_docs (file and buffer) and qc_parquet and compares with the spec. */
static void check_parquet_round_trip(const pq_spec *s, const char *name) {
    tbuf f = build_parquet(s, NULL);
    const char *path = tpath(name);
    write_bytes(path, f.p, f.n);
    docset want = {0};
    size_t nulls = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->vals[i]) docset_add(&want, s->vals[i], strlen(s->vals[i]));
        else nulls++;
    }
    docset got = read_all(path, QC_DOCS_AUTO, NULL, NULL);
    expect_same(&got, &want, name);
    docset_free(&got);

    qc_docs_opts o = {.format = QC_DOCS_PARQUET};
    qc_docs *r;
    QC_CHECK_OK(qc_docs_open_mem(f.p, f.n, name, &o, &r));
    assert_int_equal(qc_docs_format_of(r), QC_DOCS_PARQUET);
    got = read_all_r(r);
    expect_same(&got, &want, name);
    assert_int_equal(qc_docs_skipped(r), (int64_t)nulls);
    uint64_t in = 0, out = 0;
    qc_docs_bytes(r, &in, &out);
    assert_true(in > 0 && in <= f.n);
    qc_docs_free(r);
    docset_free(&got);

    qc_parquet *pq;
    QC_CHECK_OK(qc_parquet_open(path, "text", &pq));
    assert_int_equal(qc_parquet_rows(pq), (int64_t)s->n);
    size_t rpg = s->rows_per_group ? s->rows_per_group : s->n;
    assert_int_equal(qc_parquet_row_groups(pq), s->n ? (int)((s->n + rpg - 1) / rpg) : 0);
    qc_parquet_free(pq);
    docset_free(&want);
    free(f.p);
}

/* ---------------------------------------------------------------------------------------------------- */
/* handcrafted tests                                                                                     */

static void test_format_names(void **state) {
    (void)state;
    qc_docs_format f;
    const char *names[] = {"auto", "text", "jsonl", "json", "parquet"};
    for (int i = 0; i < 5; i++) {
        assert_true(qc_docs_format_parse(names[i], &f));
        assert_int_equal((int)f, i);
        assert_string_equal(qc_docs_format_name(f), names[i]);
    }
    assert_false(qc_docs_format_parse("csv", &f));
    assert_false(qc_docs_format_parse("JSON", &f));
    assert_false(qc_docs_format_parse(NULL, &f));
}

static void test_bad_args(void **state) {
    (void)state;
    qc_docs *r = (qc_docs *)1;
    const char *p = tpath("args.txt");
    write_text(p, "a\n");
    QC_CHECK_FAILS(qc_docs_open(p, &(qc_docs_opts){.split = "sentence"}, &r), QC_ERR_ARG, "sentence");
    assert_null(r);
    QC_CHECK_FAILS(qc_docs_open(p, &(qc_docs_opts){.format = (qc_docs_format)9}, &r), QC_ERR_ARG, "format");
    QC_CHECK_FAILS(qc_docs_open(p, &(qc_docs_opts){.field = ""}, &r), QC_ERR_ARG, "field");
    QC_CHECK_FAILS(qc_docs_open(tpath("missing.txt"), NULL, &r), QC_ERR_IO, "missing.txt");
    QC_CHECK_FAILS(qc_docs_open(qc_test_tmpdir(), NULL, &r), QC_ERR_IO, "not a readable file");
    assert_null(r);
}

static void test_text_splits(void **state) {
    (void)state;
    const char *p = tpath("splits.txt");
    write_text(p, "\n\none\r\ntwo  \n\n \t\nthree a\nthree b\r\n\n\n\nfour");
    docset s = read_all(p, QC_DOCS_AUTO, NULL, NULL);
    const char *lines[] = {"one", "two  ", " \t", "three a", "three b", "four"};
    assert_int_equal(s.n, 6);
    for (size_t i = 0; i < 6; i++) assert_string_equal(s.d[i], lines[i]);
    docset_free(&s);

    s = read_all(p, QC_DOCS_TEXT, NULL, "paragraph");
    const char *paras[] = {"one\r\ntwo  ", "three a\nthree b", "four"};
    assert_int_equal(s.n, 3);
    for (size_t i = 0; i < 3; i++) assert_string_equal(s.d[i], paras[i]);
    docset_free(&s);

    s = read_all(p, QC_DOCS_TEXT, NULL, "file");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.d[0], "\n\none\r\ntwo  \n\n \t\nthree a\nthree b\r\n\n\n\nfour");
    docset_free(&s);

    const char *e = tpath("empty.txt");
    write_text(e, "");
    for (int k = 0; k < 3; k++) {
        s = read_all(e, QC_DOCS_TEXT, NULL, (const char *[]){"line", "paragraph", "file"}[k]);
        assert_int_equal(s.n, 0);
        docset_free(&s);
    }
    /* a byte order mark is dropped, in every format */
    write_text(e, "\xef\xbb\xbf" "bom line\nsecond\n");
    s = read_all(e, QC_DOCS_TEXT, NULL, NULL);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.d[0], "bom line");
    docset_free(&s);
    const char *bj = tpath("bom.json");
    write_text(bj, "\xef\xbb\xbf[{\"text\": \"x\"}]");
    s = read_all(bj, QC_DOCS_AUTO, NULL, NULL);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.d[0], "x");
    docset_free(&s);
    write_text(bj, "\xef\xbb\xbf{\"text\": \"y\"}\n");
    s = read_all(bj, QC_DOCS_JSONL, NULL, NULL);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.d[0], "y");
    docset_free(&s);
    write_text(e, "\n\n  \n");
    s = read_all(e, QC_DOCS_TEXT, NULL, "paragraph");
    assert_int_equal(s.n, 0);
    docset_free(&s);
}

/* Documents far longer than the reader's first window (256 KiB), in every format: the window must grow and
 * documents must survive refills. */
static void test_long_documents(void **state) {
    (void)state;
    size_t big = (3u << 20) / 2 + 17;
    char *doc = malloc(big + 1);
    assert_non_null(doc);
    for (size_t i = 0; i < big; i++) doc[i] = (char)('a' + i % 26);
    memcpy(doc + 1000, "\"q\\{}[]", 7); /* JSON specials inside the string */
    doc[big] = '\0';
    const char *shorts[] = {"short one", "short two"};
    tbuf txt = {0}, jl = {0}, ja = {0};
    for (int i = 0; i < 3; i++) {
        const char *d = i == 1 ? doc : shorts[i / 2];
        size_t n = strlen(d);
        put(&txt, d, n);
        put_u8(&txt, '\n');
        put_str(&jl, "{\"text\": ");
        put_json_string(&jl, d, n, false);
        put_str(&jl, "}\n");
        put_str(&ja, i ? ",\n  {\"meta\": {\"a\": [1, {\"b\": \"}\"}]}, \"text\": " : "[\n  {\"text\": ");
        put_json_string(&ja, d, n, false);
        put_str(&ja, "}");
    }
    put_str(&ja, "\n]\n");
    tbuf gz = {0}, zs = {0};
    gzip_member(&gz, ja.p, ja.n, 1);
    zstd_frame(&zs, jl.p, jl.n);
    write_bytes(tpath("long.txt"), txt.p, txt.n);
    write_bytes(tpath("long.jsonl"), jl.p, jl.n);
    write_bytes(tpath("long.json"), ja.p, ja.n);
    write_bytes(tpath("long.json.gz"), gz.p, gz.n);
    write_bytes(tpath("long.jsonl.zst"), zs.p, zs.n);
    const char *files[] = {"long.txt", "long.jsonl", "long.json", "long.json.gz", "long.jsonl.zst"};
    for (int k = 0; k < 5; k++) {
        docset s = read_all(tpath(files[k]), QC_DOCS_AUTO, NULL, NULL);
        if (s.n != 3) fail_msg("%s: %zu documents", files[k], s.n);
        assert_string_equal(s.d[0], "short one");
        assert_int_equal(s.len[1], big);
        assert_memory_equal(s.d[1], doc, big);
        assert_string_equal(s.d[2], "short two");
        docset_free(&s);
    }
    /* the whole file as one document */
    docset s = read_all(tpath("long.txt"), QC_DOCS_TEXT, NULL, "file");
    assert_int_equal(s.n, 1);
    assert_int_equal(s.len[0], txt.n);
    assert_memory_equal(s.d[0], txt.p, txt.n);
    docset_free(&s);
    free(doc);
    free(txt.p);
    free(jl.p);
    free(ja.p);
    free(gz.p);
    free(zs.p);
}

static void test_gzip_zstd_corrupt(void **state) {
    (void)state;
    tbuf plain = {0};
    for (int i = 0; i < 2000; i++) {
        char line[128];
        snprintf(line, sizeof line, "{\"text\": \"document number %d with some words to compress\"}\n", i);
        put_str(&plain, line);
    }
    tbuf gz = {0}, zs = {0};
    gzip_member(&gz, plain.p, plain.n, 6);
    zstd_frame(&zs, plain.p, plain.n);
    qc_docs_opts o = {0};

    /* truncated: the documents before the cut come out, then a clear error */
    const char *p = tpath("trunc.jsonl.gz");
    write_bytes(p, gz.p, gz.n / 2);
    size_t ok = expect_read_fails(p, &o, QC_ERR_FORMAT, "truncated gzip");
    assert_true(ok > 0 && ok < 2000);
    write_bytes(p, gz.p, gz.n - 4); /* only the trailer's length field missing */
    expect_read_fails(p, &o, QC_ERR_FORMAT, "truncated gzip");
    write_bytes(p, gz.p, 2); /* just the magic */
    expect_read_fails(p, &o, QC_ERR_FORMAT, "truncated gzip");

    p = tpath("trunc.jsonl.zst");
    write_bytes(p, zs.p, zs.n / 2);
    expect_read_fails(p, &o, QC_ERR_FORMAT, "truncated zstd");
    write_bytes(p, zs.p, zs.n - 1);
    expect_read_fails(p, &o, QC_ERR_FORMAT, "truncated zstd");

    /* a flipped byte in the deflate data or the CRC */
    p = tpath("flip.jsonl.gz");
    gz.p[gz.n - 6] ^= 0x55; /* CRC32 */
    write_bytes(p, gz.p, gz.n);
    expect_read_fails(p, &o, QC_ERR_FORMAT, "corrupt gzip");
    gz.p[gz.n - 6] ^= 0x55;

    /* trailing garbage after a complete member */
    tbuf tg = {0};
    put(&tg, gz.p, gz.n);
    put_str(&tg, "garbage");
    p = tpath("trailing.jsonl.gz");
    write_bytes(p, tg.p, tg.n);
    assert_int_equal(expect_read_fails(p, &o, QC_ERR_FORMAT, "trailing data after a gzip member"), 2000);

    /* zstd: a corrupt frame */
    tbuf zc = {0};
    put(&zc, zs.p, zs.n);
    for (size_t i = 20; i < zc.n; i += 7) zc.p[i] ^= 0xa5;
    p = tpath("corrupt.jsonl.zst");
    write_bytes(p, zc.p, zc.n);
    expect_read_fails(p, &o, QC_ERR_FORMAT, "zstd");

    /* multi-member gzip and multi-frame zstd, with an empty member/frame in between */
    tbuf mm = {0}, mz = {0};
    size_t half = plain.n / 2;
    while (plain.p[half - 1] != '\n') half++;
    gzip_member(&mm, plain.p, 1000, 6);
    gzip_member(&mm, plain.p + 1000, half - 1000, 1);
    gzip_member(&mm, "", 0, 6);
    gzip_member(&mm, plain.p + half, plain.n - half, 9);
    zstd_frame(&mz, plain.p, half);
    zstd_frame(&mz, "", 0);
    zstd_frame(&mz, plain.p + half, plain.n - half);
    write_bytes(tpath("multi.jsonl.gz"), mm.p, mm.n);
    write_bytes(tpath("multi.jsonl.zst"), mz.p, mz.n);
    write_bytes(tpath("multi.jsonl"), plain.p, plain.n);
    docset a = read_all(tpath("multi.jsonl"), QC_DOCS_AUTO, NULL, NULL);
    docset b = read_all(tpath("multi.jsonl.gz"), QC_DOCS_AUTO, NULL, NULL);
    docset c = read_all(tpath("multi.jsonl.zst"), QC_DOCS_AUTO, NULL, NULL);
    assert_int_equal(a.n, 2000);
    assert_string_equal(a.d[1999], "document number 1999 with some words to compress");
    expect_same(&b, &a, "multi-member gzip");
    expect_same(&c, &a, "multi-frame zstd");
    docset_free(&a);
    docset_free(&b);
    docset_free(&c);

    /* byte counters: the compressed file in, the plain text out */
    qc_docs *r;
    QC_CHECK_OK(qc_docs_open(tpath("multi.jsonl.gz"), NULL, &r));
    a = read_all_r(r);
    uint64_t in, out;
    qc_docs_bytes(r, &in, &out);
    assert_int_equal(in, mm.n);
    assert_int_equal(out, plain.n);
    qc_docs_free(r);
    docset_free(&a);

    free(plain.p);
    free(gz.p);
    free(zs.p);
    free(tg.p);
    free(zc.p);
    free(mm.p);
    free(mz.p);
}

static void test_jsonl_errors(void **state) {
    (void)state;
    qc_docs_opts o = {.format = QC_DOCS_JSONL};
    const char *p = tpath("nofield.jsonl");
    write_text(p, "{\"text\": \"a\"}\n\n   \n{\"body\": \"b\"}\n");
    assert_int_equal(expect_read_fails(p, &o, QC_ERR_FORMAT, ":4: record has no field \"text\""), 1);

    p = tpath("number.jsonl");
    write_text(p, "{\"text\": 5}\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, ":1: field \"text\" is a number, not a string");
    p = tpath("null.jsonl");
    write_text(p, "{\"text\": \"ok\"}\n{\"text\": null}\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, ":2: field \"text\" is a null");
    p = tpath("array.jsonl");
    write_text(p, "[\"text\", \"a\"]\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, ":1: record is a JSON array, not an object");
    p = tpath("broken.jsonl");
    write_text(p, "{\"text\": \"a\"}\n{\"text\": \"b\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, ":2: invalid JSON");
    p = tpath("two.jsonl");
    write_text(p, "{\"text\": \"a\"} {\"text\": \"b\"}\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, ":1: unexpected characters");

    /* another field name; CRLF line ends; case-sensitive keys */
    p = tpath("custom.jsonl");
    write_text(p, "{\"Body\": \"x\", \"body\": \"first\"}\r\n{\"body\": \"second\\u00e9\"}\r\n");
    docset s = read_all(p, QC_DOCS_JSONL, "body", NULL);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.d[0], "first");
    assert_string_equal(s.d[1], "second\xc3\xa9");
    docset_free(&s);
    /* an empty string is a document */
    write_text(p, "{\"text\": \"\"}\n{\"text\": \"x\"}\n");
    s = read_all(p, QC_DOCS_JSONL, NULL, NULL);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.len[0], 0);
    docset_free(&s);
}

static void test_utf8(void **state) {
    (void)state;
    qc_docs_opts o = {0};
    static const struct { const char *bytes, *what; } bad[] = {
        {"\xff", "ff"}, {"\xc0\xaf", "overlong"}, {"\xe0\x80\xaf", "overlong 3"}, {"\xed\xa0\x80", "surrogate"},
        {"\xf4\x90\x80\x80", "above U+10FFFF"}, {"\xe2\x82", "truncated"}, {"ab\x80", "lone continuation"},
        {"\xf8\x88\x80\x80\x80", "5-byte"}, {"0123456789\xc3", "cut at the end"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "valid line\ncaf\xc3\xa9 \xf0\x9f\x98\x80\n%s\n", bad[i].bytes);
        const char *p = tpath("bad-utf8.txt");
        write_text(p, text);
        qc_error_clear();
        size_t ok = expect_read_fails(p, &o, QC_ERR_FORMAT, "document 2 (line 3) is not valid UTF-8");
        if (ok != 2) fail_msg("%s: %zu documents before the error", bad[i].what, ok);
    }
    /* in JSON: raw bytes in a string, the error names the record */
    const char *p = tpath("bad-utf8.jsonl");
    write_text(p, "{\"text\": \"ok\"}\n{\"text\": \"bad \xc3\x28\"}\n");
    expect_read_fails(p, &o, QC_ERR_FORMAT, "document 1 (line 2) is not valid UTF-8");
    p = tpath("bad-utf8.json");
    write_text(p, "[{\"text\": \"ok\"}, {\"text\": \"bad \xe0\xa0\"}]");
    expect_read_fails(p, &o, QC_ERR_FORMAT, "document 1 is not valid UTF-8");
    /* a lone surrogate escape is rejected by the JSON decoder */
    write_text(p, "[{\"text\": \"\\ud800\"}]");
    expect_read_fails(p, &o, QC_ERR_FORMAT, "record 0: invalid JSON");
}

static void test_json_array(void **state) {
    (void)state;
    const char *p = tpath("ok.json");
    write_text(p, " \n[ {\"text\": \"a \\\"}\\\" ]\", \"x\": [1, {\"y\": \"]}\"}]} ,{\"n\": {}, \"text\": \"b\"},\n"
                  "{\"text\":\"\\u00e9\\ud83d\\ude00\"}\n ]\n\n");
    docset s = read_all(p, QC_DOCS_AUTO, NULL, NULL);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.d[0], "a \"}\" ]");
    assert_string_equal(s.d[1], "b");
    assert_string_equal(s.d[2], "\xc3\xa9\xf0\x9f\x98\x80");
    docset_free(&s);
    write_text(p, "[]");
    s = read_all(p, QC_DOCS_JSON, NULL, NULL);
    assert_int_equal(s.n, 0);
    docset_free(&s);

    qc_docs_opts o = {.format = QC_DOCS_JSON};
    static const struct { const char *text, *needle; size_t ok; } bad[] = {
        {"[{\"text\": \"a\"},]", "trailing ','", 1},
        {"[{\"text\": \"a\"}, {\"text\": \"b\"}", "not closed after record 1", 2},
        {"[{\"text\": \"a\"}, {\"text\": \"b", "record 1 is not closed", 1},
        {"{\"text\": \"a\"}", "not a JSON array (starts with '{')", 0},
        {"", "not a JSON array (no data)", 0},
        {"[{\"text\": \"a\"} {\"text\": \"b\"}]", "expected ',' or ']' after record 0", 1},
        {"[\"a\"]", "record 0 is not a JSON object", 0},
        {"[{\"text\": \"a\"}, 5]", "record 1 is not a JSON object", 1},
        {"[{\"text\": \"a\"}] x", "data after the closing ']'", 1},
        {"[{\"text\": \"a\"}, {\"body\": \"b\"}]", "record 1: record has no field \"text\"", 1},
        {"[{\"text\": [\"a\"]}]", "record 0: field \"text\" is a array", 0},
        {"[{\"text\": \"a\", }]", "record 0: invalid JSON", 0},
        {"[{\"text\": \"a\"]}]", "record 0: invalid JSON", 0},
        {"[{\"text\": \"a\"},", "ends before record 1", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(p, bad[i].text);
        size_t ok = expect_read_fails(p, &o, QC_ERR_FORMAT, bad[i].needle);
        if (ok != bad[i].ok) fail_msg("'%s': %zu documents before the error, expected %zu", bad[i].text, ok, bad[i].ok);
    }
    /* auto: .json holding JSON lines (after blank lines: errors still name the right line) */
    write_text(p, "\n\n{\"text\": \"l1\"}\n{\"text\": \"l2\"}\n");
    s = read_all(p, QC_DOCS_AUTO, NULL, NULL);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.d[1], "l2");
    docset_free(&s);
    write_text(p, "\n\n{\"text\": \"l1\"}\n{\"txt\": \"l2\"}\n");
    expect_read_fails(p, &(qc_docs_opts){0}, QC_ERR_FORMAT, ".json:4: record has no field \"text\"");
}

static void test_parquet_layouts(void **state) {
    (void)state;
    static const int codecs[] = {0, 1, 2, 6};
    size_t n = 300;
    for (int opt = 0; opt < 2; opt++) {
        const char **v = make_values(n, opt == 1);
        for (int dict = 0; dict < 2; dict++)
            for (int pv = 1; pv <= 2; pv++)
                for (int c = 0; c < 4; c++) {
                    pq_spec s = {.vals = v, .n = n, .optional = opt, .dict = dict, .page_v = pv, .codec = codecs[c],
                                 .rows_per_page = 37, .rows_per_group = 120};
                    char name[96];
                    snprintf(name, sizeof name, "t-%s-%s-v%d-c%d.parquet", opt ? "opt" : "req", dict ? "dict" : "plain",
                             pv, codecs[c]);
                    check_parquet_round_trip(&s, name);
                }
        pq_spec s = {.vals = v, .n = n, .optional = opt, .page_v = 2, .codec = 6, .rows_per_page = 1000,
                     .v2_uncompressed = true};
        check_parquet_round_trip(&s, opt ? "v2-uncompressed-opt.parquet" : "v2-uncompressed.parquet");
        free_values(v, n);
    }
    /* all nulls; no rows at all; one page with a long run of nulls (RLE) */
    const char **v = calloc(5000, sizeof *v);
    pq_spec s = {.vals = v, .n = 5000, .optional = true, .dict = true, .page_v = 1, .codec = 1, .rows_per_page = 5000};
    check_parquet_round_trip(&s, "all-null.parquet");
    s.dict = false;
    s.page_v = 2;
    check_parquet_round_trip(&s, "all-null-v2.parquet");
    v[4000] = "only value";
    check_parquet_round_trip(&s, "one-value.parquet");
    s.n = 0;
    check_parquet_round_trip(&s, "no-rows.parquet");
    free(v);
}

/* One handcrafted corruption: the file must fail (at open or while reading) with `want` and `needle`. */
static void expect_parquet_fails(const char *name, const void *bytes, size_t n, qc_status want, const char *needle) {
    const char *path = tpath(name);
    write_bytes(path, bytes, n);
    qc_docs_opts o = {0};
    expect_read_fails(path, &o, want, needle);
    /* the same through the buffer API */
    qc_docs *r;
    qc_error_clear();
    qc_status st = qc_docs_open_mem(bytes, n, name, &(qc_docs_opts){.format = QC_DOCS_PARQUET}, &r);
    if (st == QC_OK) {
        const char *d;
        size_t len;
        do st = qc_docs_next(r, &d, &len);
        while (st == QC_OK && d);
        qc_docs_free(r);
    }
    if (st != want) fail_msg("%s (buffer): %s (%s)", name, qc_status_str(st), qc_last_error());
    check_msg_has(needle);
}

static void test_parquet_corrupt(void **state) {
    (void)state;
    size_t n = 100;
    const char **v = make_values(n, true);
    pq_spec base = {.vals = v, .n = n, .optional = true, .dict = true, .page_v = 1, .codec = 0, .rows_per_page = 30};
    size_t fat;
    tbuf f = build_parquet(&base, &fat);
    uint32_t flen = (uint32_t)(f.n - 8 - fat);

    /* bad magic at either end */
    tbuf b = {0};
    put(&b, f.p, f.n);
    memcpy(b.p, "PAR2", 4);
    expect_parquet_fails("magic-head.parquet", b.p, b.n, QC_ERR_FORMAT, "bad magic");
    memcpy(b.p, "PAR1", 4);
    memcpy(b.p + b.n - 4, "PARX", 4);
    expect_parquet_fails("magic-tail.parquet", b.p, b.n, QC_ERR_FORMAT, "bad magic");
    memcpy(b.p + b.n - 4, "PARE", 4);
    expect_parquet_fails("encrypted.parquet", b.p, b.n, QC_ERR_UNSUPPORTED, "encrypted");
    memcpy(b.p + b.n - 4, "PAR1", 4);
    expect_parquet_fails("tiny.parquet", "PAR1PAR1", 8, QC_ERR_FORMAT, "too short");

    /* footer length past the start of the file; zero */
    uint32_t big = (uint32_t)f.n;
    memcpy(b.p + b.n - 8, &big, 4);
    expect_parquet_fails("footer-len.parquet", b.p, b.n, QC_ERR_FORMAT, "footer length");
    memset(b.p + b.n - 8, 0, 4);
    expect_parquet_fails("footer-zero.parquet", b.p, b.n, QC_ERR_FORMAT, "footer length");

    /* truncated footer: the first half of FileMetaData, with the length saying so */
    tbuf t = {0};
    put(&t, f.p, fat + flen / 2);
    put_u32le(&t, flen / 2);
    put_str(&t, "PAR1");
    expect_parquet_fails("footer-trunc.parquet", t.p, t.n, QC_ERR_FORMAT, "footer");
    /* the file cut anywhere must fail cleanly */
    for (size_t cut = 1; cut < f.n; cut += f.n / 37 + 1) {
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.parquet", cut);
        const char *path = tpath(name);
        write_bytes(path, f.p, cut);
        qc_docs *r;
        qc_status st = qc_docs_open(path, &(qc_docs_opts){.format = QC_DOCS_PARQUET}, &r);
        if (st == QC_OK) fail_msg("%s: a file cut at %zu of %zu bytes opened", name, cut, f.n);
    }

    /* footer: the row count disagrees with the row groups */
    pq_spec s = base;
    s.footer_rows_delta = 1;
    tbuf g = build_parquet(&s, NULL);
    expect_parquet_fails("rows.parquet", g.p, g.n, QC_ERR_FORMAT, "num_rows is 101 but the row groups hold 100");
    free(g.p);

    /* page sizes out of range */
    s = base;
    s.csize_override = 1 << 30;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("csize.parquet", g.p, g.n, QC_ERR_FORMAT, "row group 0, page 1: compressed page size 1073741824 out of range");
    free(g.p);
    s.csize_override = -5;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("csize-neg.parquet", g.p, g.n, QC_ERR_FORMAT, "compressed page size -5 out of range");
    free(g.p);

    /* dictionary index past the dictionary */
    s = base;
    s.bad_dict_index = true;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("dict-index.parquet", g.p, g.n, QC_ERR_FORMAT, "dictionary index");
    free(g.p);

    /* a PLAIN value longer than its page */
    s = base;
    s.dict = false;
    s.truncate_plain = true;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("plain-len.parquet", g.p, g.n, QC_ERR_FORMAT, "row group 0, page 0: PLAIN value of");
    free(g.p);

    /* a definition level above the column's maximum */
    s = base;
    s.def_level_2 = true;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("def-level.parquet", g.p, g.n, QC_ERR_FORMAT, "definition level 2 > maximum 1");
    free(g.p);

    /* gzip page data cut short: corrupt the compressed bytes of a real gzip page */
    s = base;
    s.codec = 2;
    s.dict = false;
    s.corrupt_data = true;
    g = build_parquet(&s, NULL);
    expect_parquet_fails("gzip-page.parquet", g.p, g.n, QC_ERR_FORMAT, "row group 0, page 0");
    free(g.p);
    /* page data cut short, with sizes that agree: each codec notices */
    static const struct { int codec; const char *needle; } cuts[] = {
        {2, "row group 0, page 0: gzip data is truncated"}, {6, "row group 0, page 0: corrupt zstd data"},
        {1, "row group 0, page 0: corrupt snappy data"}, {0, "row group 0, page 0: uncompressed page holds"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        s = base;
        s.dict = false;
        s.codec = cuts[i].codec;
        s.cut_data = true;
        g = build_parquet(&s, NULL);
        char name[64];
        snprintf(name, sizeof name, "cut-page-%d.parquet", cuts[i].codec);
        expect_parquet_fails(name, g.p, g.n, QC_ERR_FORMAT, cuts[i].needle);
        free(g.p);
    }

    /* the column does not exist: the message lists the columns */
    s = base;
    s.column = "content";
    g = build_parquet(&s, NULL);
    expect_parquet_fails("column.parquet", g.p, g.n, QC_ERR_ARG, "no column 'text'; columns: id, content");
    free(g.p);
    /* the column has the wrong type */
    const char *path = tpath("type.parquet");
    write_bytes(path, f.p, f.n);
    qc_docs *r;
    QC_CHECK_FAILS(qc_docs_open(path, &(qc_docs_opts){.field = "id"}, &r), QC_ERR_UNSUPPORTED, "physical type INT64");

    /* Thrift nesting bomb in the footer: an unknown field holding structs 100 deep */
    tbuf bomb = {0};
    put_str(&bomb, "PAR1");
    size_t at = bomb.n;
    put_u8(&bomb, 0x0c); /* field delta 0, STRUCT, then the field id */
    put_zz(&bomb, 90);
    for (int i = 0; i < 100; i++) put_u8(&bomb, 0x1c); /* field 1: STRUCT */
    for (int i = 0; i < 101; i++) put_u8(&bomb, 0);
    put_u8(&bomb, 0);
    put_u32le(&bomb, (uint32_t)(bomb.n - at));
    put_str(&bomb, "PAR1");
    expect_parquet_fails("bomb.parquet", bomb.p, bomb.n, QC_ERR_FORMAT, "nested too deeply");
    free(bomb.p);

    free(t.p);
    free(b.p);
    free(f.p);
    free_values(v, n);
}

/* ---------------------------------------------------------------------------------------------------- */
/* real data                                                                                             */

/* Lines of a text file (without '\n'; empty lines dropped). */
static docset file_lines(const char *path) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    docset s = {0};
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        if (j > i) docset_add(&s, buf + i, j - i);
        i = j + 1;
    }
    free(buf);
    return s;
}

static void test_c4_all_formats(void **state) {
    (void)state;
    char *c4 = qc_test_require("text/c4.utf8");
    docset want = file_lines(c4);
    assert_int_equal(want.n, 118);
    docset got = read_all(c4, QC_DOCS_AUTO, NULL, NULL);
    expect_same(&got, &want, "c4.utf8 (line)");
    docset_free(&got);

    /* the same documents rewritten in every format, with extra fields and a record counter */
    tbuf jl = {0}, ja = {0}, txt = {0};
    put_str(&ja, "[\n");
    for (size_t i = 0; i < want.n; i++) {
        char pre[96];
        snprintf(pre, sizeof pre, "{\"n\": %zu, \"url\": \"https://example.com/%zu\", \"text\": ", i, i);
        put_str(&jl, pre);
        put_json_string(&jl, want.d[i], want.len[i], false);
        put_str(&jl, ", \"meta\": {\"tags\": [\"a\", \"b]\"]}}\n");
        put_str(&ja, i ? ",\n  " : "  ");
        put_str(&ja, pre);
        put_json_string(&ja, want.d[i], want.len[i], true);
        put_str(&ja, "}");
        put(&txt, want.d[i], want.len[i]);
        put_u8(&txt, '\n');
    }
    put_str(&ja, "\n]\n");
    tbuf jl_gz = {0}, jl_zst = {0}, ja_gz = {0}, txt_gz = {0};
    gzip_member(&jl_gz, jl.p, jl.n, 6);
    zstd_frame(&jl_zst, jl.p, jl.n);
    gzip_member(&ja_gz, ja.p, ja.n, 9);
    gzip_member(&txt_gz, txt.p, txt.n, 1);
    struct { const char *name; tbuf *b; qc_docs_format expect; } files[] = {
        {"c4.jsonl", &jl, QC_DOCS_JSONL},       {"c4.jsonl.gz", &jl_gz, QC_DOCS_JSONL},
        {"c4.jsonl.zst", &jl_zst, QC_DOCS_JSONL}, {"c4.json", &ja, QC_DOCS_JSON},
        {"c4-array.json.gz", &ja_gz, QC_DOCS_JSON}, {"c4.txt.gz", &txt_gz, QC_DOCS_TEXT},
        {"c4-lines.json.gz", &jl_gz, QC_DOCS_JSONL}, /* C4's own naming: .json.gz holding JSON lines */
        {"c4-noext", &jl_zst, QC_DOCS_TEXT},      /* unknown extension: text (of the decompressed bytes) */
    };
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        const char *path = tpath(files[k].name);
        write_bytes(path, files[k].b->p, files[k].b->n);
        qc_docs *r;
        QC_CHECK_OK(qc_docs_open(path, NULL, &r));
        if (qc_docs_format_of(r) != files[k].expect)
            fail_msg("%s: read as %s, expected %s", files[k].name, qc_docs_format_name(qc_docs_format_of(r)),
                     qc_docs_format_name(files[k].expect));
        got = read_all_r(r);
        qc_docs_free(r);
        if (files[k].expect == QC_DOCS_TEXT && strcmp(files[k].name, "c4-noext") == 0) {
            /* the JSON lines themselves, one per document */
            assert_int_equal(got.n, 118);
            assert_memory_equal(got.d[0], jl.p, got.len[0]);
        } else {
            expect_same(&got, &want, files[k].name);
        }
        docset_free(&got);
        /* the buffer API agrees */
        qc_docs_opts o = {.format = files[k].expect};
        QC_CHECK_OK(qc_docs_open_mem(files[k].b->p, files[k].b->n, files[k].name, &o, &r));
        got = read_all_r(r);
        qc_docs_free(r);
        if (files[k].expect != QC_DOCS_TEXT || strcmp(files[k].name, "c4-noext") != 0)
            expect_same(&got, &want, files[k].name);
        docset_free(&got);
    }
    /* the url field instead of text */
    got = read_all(tpath("c4.jsonl.zst"), QC_DOCS_AUTO, "url", NULL);
    assert_int_equal(got.n, 118);
    assert_string_equal(got.d[117], "https://example.com/117");
    docset_free(&got);

    free(jl.p);
    free(ja.p);
    free(txt.p);
    free(jl_gz.p);
    free(jl_zst.p);
    free(ja_gz.p);
    free(txt_gz.p);
    docset_free(&want);
    free(c4);
}

static void test_tiny_paragraphs(void **state) {
    (void)state;
    char *tiny = qc_test_require("text/tiny.utf8");
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(tiny, 0, &buf, &len));
    docset s = read_all(tiny, QC_DOCS_TEXT, NULL, "paragraph");
    assert_int_equal(s.n, 235);
    /* paragraphs hold no blank line, and joined by one blank line they are the file again */
    tbuf j = {0};
    for (size_t i = 0; i < s.n; i++) {
        assert_true(s.len[i] > 0);
        assert_null(strstr(s.d[i], "\n\n"));
        if (i) put_str(&j, "\n\n");
        put(&j, s.d[i], s.len[i]);
    }
    put_u8(&j, '\n');
    assert_int_equal(j.n, len);
    assert_memory_equal(j.p, buf, len);
    assert_non_null(strstr(s.d[0], "One day, a little girl named Lily found a needle"));
    free(j.p);
    docset_free(&s);
    free(buf);
    free(tiny);
}

static void test_domain_jsonl_gz(void **state) {
    (void)state;
    char *path = qc_test_require("text/docs-domain-train.jsonl.gz");
    /* the plain twin: gzread + cJSON, line by line */
    gzFile gz = gzopen(path, "rb");
    assert_non_null(gz);
    tbuf all = {0};
    char chunk[65536];
    int got;
    while ((got = gzread(gz, chunk, sizeof chunk)) > 0) put(&all, chunk, (size_t)got);
    assert_int_equal(got, 0);
    gzclose(gz);
    docset want_text = {0}, want_src = {0};
    size_t i = 0;
    while (i < all.n) {
        size_t k = i;
        while (k < all.n && all.p[k] != '\n') k++;
        if (k > i) {
            cJSON *o = cJSON_ParseWithLength((const char *)all.p + i, k - i);
            assert_non_null(o);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
            const cJSON *src = cJSON_GetObjectItemCaseSensitive(o, "source");
            assert_true(cJSON_IsString(t) && cJSON_IsString(src));
            docset_add(&want_text, t->valuestring, strlen(t->valuestring));
            docset_add(&want_src, src->valuestring, strlen(src->valuestring));
            cJSON_Delete(o);
        }
        i = k + 1;
    }
    assert_int_equal(want_text.n, 680);
    docset s = read_all(path, QC_DOCS_AUTO, NULL, NULL);
    expect_same(&s, &want_text, "docs-domain-train text");
    docset_free(&s);
    s = read_all(path, QC_DOCS_JSONL, "source", NULL);
    expect_same(&s, &want_src, "docs-domain-train source");
    docset_free(&s);
    qc_docs_opts o = {.field = "title"};
    expect_read_fails(path, &o, QC_ERR_FORMAT, ":1: record has no field \"title\"");
    docset_free(&want_text);
    docset_free(&want_src);
    free(all.p);
    free(path);
}

static void test_parquet_expected(void **state) {
    (void)state;
    char *dir = qc_test_require("text/parquet");
    char *exp_path = qc_path_join(dir, "EXPECTED.json");
    char *js;
    size_t jlen;
    QC_CHECK_OK(qc_read_file(exp_path, 0, &js, &jlen));
    cJSON *exp = cJSON_ParseWithLength(js, jlen);
    assert_non_null(exp);
    int files = 0, hashes = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp) {
        char *path = qc_path_join(dir, e->string);
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(e, "rows");
        const cJSON *col = cJSON_GetObjectItemCaseSensitive(e, "column");
        const cJSON *hash = cJSON_GetObjectItemCaseSensitive(e, "sha256_of_rows_joined_by_newline");
        assert_true(cJSON_IsNumber(rows));
        qc_docs_opts o = {.field = cJSON_IsString(col) ? col->valuestring : NULL};
        qc_docs *r;
        QC_CHECK_OK(qc_docs_open(path, &o, &r));
        assert_int_equal(qc_docs_format_of(r), QC_DOCS_PARQUET);
        qc_sha256 h;
        qc_sha256_init(&h);
        int64_t n = 0;
        for (;;) {
            const char *d;
            size_t len;
            QC_CHECK_OK(qc_docs_next(r, &d, &len));
            if (!d) break;
            if (n) qc_sha256_update(&h, "\n", 1);
            qc_sha256_update(&h, d, len);
            n++;
        }
        int64_t nulls = qc_docs_skipped(r);
        qc_docs_free(r);
        if (n + nulls != (int64_t)rows->valuedouble)
            fail_msg("%s: %" PRId64 " documents + %" PRId64 " nulls, EXPECTED.json says %.0f rows", e->string, n,
                     nulls, rows->valuedouble);
        assert_int_equal(nulls, 0); /* these files hold no nulls: every row is a document */
        if (cJSON_IsString(hash)) {
            char hex[65];
            qc_sha256_hex(&h, hex);
            if (strcmp(hex, hash->valuestring) != 0)
                fail_msg("%s: sha256 of rows joined by newline %s, EXPECTED.json %s", e->string, hex, hash->valuestring);
            hashes++;
        }
        print_message("  %-45s %6" PRId64 " rows, sha256 %s\n", e->string, n, cJSON_IsString(hash) ? "matches" : "not listed");
        /* a missing column is named with the columns that exist */
        QC_CHECK_FAILS(qc_docs_open(path, &(qc_docs_opts){.field = "no_such_column"}, &r), QC_ERR_ARG,
                       "no column 'no_such_column'; columns: ");
        check_msg_has("text");
        free(path);
        files++;
    }
    assert_true(files >= 5);
    assert_int_equal(hashes, files);
    print_message("  %d Parquet files: row counts and %d sha256 values match EXPECTED.json\n", files, hashes);

    /* the C4 sample holds the same 118 documents as c4.utf8 */
    char *c4 = qc_test_require("text/c4.utf8");
    docset want = file_lines(c4);
    char *pq = qc_path_join(dir, "c4-sample-snappy-multigroup.parquet");
    docset got = read_all(pq, QC_DOCS_AUTO, NULL, NULL);
    expect_same(&got, &want, "c4-sample-snappy-multigroup.parquet");
    docset_free(&got);

    /* real files corrupted: bad magic, truncated footer, cut pages */
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(pq, 0, &buf, &len));
    memcpy(buf, "XXXX", 4);
    expect_parquet_fails("real-magic.parquet", buf, len, QC_ERR_FORMAT, "bad magic");
    memcpy(buf, "PAR1", 4);
    uint32_t flen = (uint32_t)(unsigned char)buf[len - 8] | (uint32_t)(unsigned char)buf[len - 7] << 8 |
                    (uint32_t)(unsigned char)buf[len - 6] << 16 | (uint32_t)(unsigned char)buf[len - 5] << 24;
    tbuf t = {0};
    put(&t, buf, len - 8 - flen + flen / 3);
    put_u32le(&t, flen / 3);
    put_str(&t, "PAR1");
    expect_parquet_fails("real-footer.parquet", t.p, t.n, QC_ERR_FORMAT, "footer");
    /* every page byte range zeroed in turn: each read fails cleanly or succeeds, never crashes */
    for (size_t off = 4; off + 64 < len - 8 - flen; off += 4093) {
        tbuf z = {0};
        put(&z, buf, len);
        memset(z.p + off, 0xff, 64);
        qc_docs *r;
        if (qc_docs_open_mem(z.p, z.n, "zeroed", &(qc_docs_opts){.format = QC_DOCS_PARQUET}, &r) == QC_OK) {
            const char *d;
            size_t l;
            while (qc_docs_next(r, &d, &l) == QC_OK && d) {}
            qc_docs_free(r);
        }
        free(z.p);
    }
    free(t.p);
    free(buf);
    docset_free(&want);
    free(pq);
    free(c4);
    cJSON_Delete(exp);
    free(js);
    free(exp_path);
    free(dir);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_text_splits),
        cmocka_unit_test(test_long_documents),
        cmocka_unit_test(test_gzip_zstd_corrupt),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_json_array),
        cmocka_unit_test(test_parquet_layouts),
        cmocka_unit_test(test_parquet_corrupt),
    };
    /* Real files last: if ../shared/data is missing they exit 77 (skip), after the handcrafted tests ran. */
    const struct CMUnitTest data[] = {
        cmocka_unit_test(test_c4_all_formats),
        cmocka_unit_test(test_tiny_paragraphs),
        cmocka_unit_test(test_domain_jsonl_gz),
        cmocka_unit_test(test_parquet_expected),
    };
    int failed = cmocka_run_group_tests_name("docs", unit, NULL, NULL);
    if (failed) return 1;
    return cmocka_run_group_tests_name("docs (shared/data)", data, NULL, NULL) ? 1 : 0;
}
