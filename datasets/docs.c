/* docs.c - streaming document readers: text, JSON lines, JSON arrays (each optionally gzip/zstd) and
 * Parquet (see docs.h). Bytes flow file -> decompressor -> window -> reader; the window only ever holds
 * the document being cut out plus one read chunk. */
#include "docs.h"
#include "parquet.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>
#include <zstd.h>

#define IN_CHUNK     (128u << 10) /* compressed bytes per read */
#define WINDOW_START (256u << 10) /* initial decoded window */

enum { SPLIT_LINE, SPLIT_PARAGRAPH, SPLIT_FILE };
enum { COMP_NONE, COMP_GZIP, COMP_ZSTD };
enum { JSON_START, JSON_FIRST, JSON_AFTER_COMMA, JSON_AFTER_ELEM, JSON_DONE };

struct qc_docs {
    char          *name;
    qc_docs_format fmt;
    int            split;
    char          *field;
    int64_t        index;      /* documents returned */
    int64_t        raw;        /* documents read, before the holdout filter */
    int            holdout;    /* qc_docs_opts.holdout, heldout */
    bool           heldout;
    int64_t        line;       /* lines consumed (text/jsonl) */
    qc_status      sticky;     /* an error is repeated by every later call */
    char          *sticky_msg;
    bool           done;

    /* byte source */
    int            fd;         /* -1 for a buffer */
    const uint8_t *mem;
    size_t         mem_len, mem_pos;
    int            comp;
    uint8_t       *in;         /* compressed input (COMP_GZIP/ZSTD), or the sniffed head (COMP_NONE) */
    size_t         in_pos, in_len;
    bool           in_eof;
    z_stream       z;
    bool           z_init, z_member_end;
    ZSTD_DStream  *zd;
    size_t         zret;       /* last ZSTD_decompressStream result: 0 = at a frame boundary */
    uint64_t       bytes_in, bytes_out;

    /* decoded window: [beg, end) unconsumed */
    char          *buf;
    size_t         cap, beg, end;
    bool           eof;
    uint64_t       base;       /* decoded offset of buf[0] */

    cJSON         *json;       /* the record behind the current document */
    int            jstate;

    qc_parquet    *pq;
};

/* ---------------------------------------------------------------------------------------------------- */
/* byte source                                                                                           */

static qc_status raw_read(qc_docs *r, uint8_t *dst, size_t cap, size_t *got) {
    *got = 0;
    if (r->mem) {
        size_t n = r->mem_len - r->mem_pos;
        if (n > cap) n = cap;
        memcpy(dst, r->mem + r->mem_pos, n);
        r->mem_pos += n;
        *got = n;
    } else {
        for (;;) {
            ssize_t n = read(r->fd, dst, cap);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return qc_fail(QC_ERR_IO, "%s: read failed: %s", r->name, strerror(errno));
            *got = (size_t)n;
            break;
        }
    }
    r->bytes_in += *got;
    return QC_OK;
}

/* Makes at least `need` compressed bytes available at in[in_pos] unless the file ends first. */
static qc_status in_fill(qc_docs *r, size_t need) {
    while (r->in_len - r->in_pos < need && !r->in_eof) {
        if (r->in_pos > 0) {
            memmove(r->in, r->in + r->in_pos, r->in_len - r->in_pos);
            r->in_len -= r->in_pos;
            r->in_pos = 0;
        }
        size_t got;
        qc_status st = raw_read(r, r->in + r->in_len, IN_CHUNK - r->in_len, &got);
        if (st != QC_OK) return st;
        if (got == 0) r->in_eof = true;
        r->in_len += got;
    }
    return QC_OK;
}

static qc_status gz_read(qc_docs *r, uint8_t *dst, size_t cap, size_t *got) {
    *got = 0;
    while (*got == 0) {
        if (r->z_member_end) {
            /* another gzip member may follow (multi-member files, e.g. from pigz or cat a.gz b.gz) */
            qc_status st = in_fill(r, 2);
            if (st != QC_OK) return st;
            size_t avail = r->in_len - r->in_pos;
            if (avail == 0) return QC_OK; /* clean end */
            if (avail < 2 || r->in[r->in_pos] != 0x1f || r->in[r->in_pos + 1] != 0x8b)
                return qc_fail(QC_ERR_FORMAT, "%s: trailing data after a gzip member (compressed offset %" PRIu64 ")",
                               r->name, r->bytes_in - avail);
            if (inflateReset(&r->z) != Z_OK) return qc_fail(QC_ERR_FORMAT, "%s: zlib reset failed", r->name);
            r->z_member_end = false;
        }
        if (r->in_pos == r->in_len) {
            qc_status st = in_fill(r, 1);
            if (st != QC_OK) return st;
        }
        size_t avail = r->in_len - r->in_pos;
        r->z.next_in = r->in + r->in_pos;
        r->z.avail_in = (uInt)avail;
        r->z.next_out = dst + *got;
        r->z.avail_out = (uInt)(cap - *got);
        int ret = inflate(&r->z, Z_NO_FLUSH);
        r->in_pos += avail - r->z.avail_in;
        *got = cap - r->z.avail_out;
        if (ret == Z_STREAM_END) {
            r->z_member_end = true;
        } else if (ret == Z_BUF_ERROR) {
            if (avail == 0 && *got == 0)
                return qc_fail(QC_ERR_FORMAT, "%s: truncated gzip stream: the file ends inside a member "
                               "(after %" PRIu64 " compressed bytes)", r->name, r->bytes_in);
        } else if (ret != Z_OK) {
            return qc_fail(QC_ERR_FORMAT, "%s: corrupt gzip data near compressed offset %" PRIu64 ": %s", r->name,
                           r->bytes_in - (r->in_len - r->in_pos), r->z.msg ? r->z.msg : "inflate failed");
        }
    }
    return QC_OK;
}

static qc_status zst_read(qc_docs *r, uint8_t *dst, size_t cap, size_t *got) {
    *got = 0;
    while (*got == 0) {
        if (r->in_pos == r->in_len) {
            qc_status st = in_fill(r, 1);
            if (st != QC_OK) return st;
        }
        bool no_input = r->in_pos == r->in_len;
        if (no_input && r->zret == 0) return QC_OK; /* clean end at a frame boundary */
        ZSTD_inBuffer ib = {r->in, r->in_len, r->in_pos};
        ZSTD_outBuffer ob = {dst, cap, 0};
        size_t ret = ZSTD_decompressStream(r->zd, &ob, &ib);
        if (ZSTD_isError(ret))
            return qc_fail(QC_ERR_FORMAT, "%s: corrupt zstd data near compressed offset %" PRIu64 ": %s", r->name,
                           r->bytes_in - (r->in_len - r->in_pos), ZSTD_getErrorName(ret));
        r->in_pos = ib.pos;
        r->zret = ret;
        *got = ob.pos;
        if (no_input && ob.pos == 0)
            return qc_fail(QC_ERR_FORMAT, "%s: truncated zstd stream: the file ends inside a frame (after %" PRIu64
                           " compressed bytes)", r->name, r->bytes_in);
    }
    return QC_OK;
}

/* Decoded bytes into dst; *got == 0 only at the end of the data. */
static qc_status src_read(qc_docs *r, uint8_t *dst, size_t cap, size_t *got) {
    qc_status st;
    if (r->comp == COMP_GZIP) {
        st = gz_read(r, dst, cap > UINT32_MAX ? UINT32_MAX : cap, got);
    } else if (r->comp == COMP_ZSTD) {
        st = zst_read(r, dst, cap, got);
    } else if (r->in_pos < r->in_len) { /* the sniffed head first */
        size_t n = r->in_len - r->in_pos;
        if (n > cap) n = cap;
        memcpy(dst, r->in + r->in_pos, n);
        r->in_pos += n;
        *got = n;
        st = QC_OK;
    } else {
        st = raw_read(r, dst, cap, got);
    }
    if (st == QC_OK) r->bytes_out += *got;
    return st;
}

/* Reads the first bytes and sets up decompression by magic. */
static qc_status src_start(qc_docs *r) {
    r->in = malloc(IN_CHUNK);
    r->buf = malloc(WINDOW_START);
    if (!r->in || !r->buf) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", r->name);
    r->cap = WINDOW_START;
    qc_status st = in_fill(r, 4);
    if (st != QC_OK) return st;
    const uint8_t *h = r->in;
    size_t n = r->in_len;
    if (n >= 2 && h[0] == 0x1f && h[1] == 0x8b) {
        r->comp = COMP_GZIP;
        if (inflateInit2(&r->z, 15 + 16) != Z_OK) return qc_fail(QC_ERR_NOMEM, "%s: cannot initialise zlib", r->name);
        r->z_init = true;
    } else if (n >= 4 && h[0] == 0x28 && h[1] == 0xb5 && h[2] == 0x2f && h[3] == 0xfd) {
        r->comp = COMP_ZSTD;
        r->zd = ZSTD_createDStream();
        if (!r->zd) return qc_fail(QC_ERR_NOMEM, "%s: cannot create a zstd stream", r->name);
        r->zret = 1; /* a frame is expected */
    } else {
        r->comp = COMP_NONE;
    }
    return QC_OK;
}

/* ---------------------------------------------------------------------------------------------------- */
/* decoded window                                                                                        */

/* Reads more decoded bytes, keeping [beg, end). Returns with r->eof set when nothing more comes. */
static qc_status win_more(qc_docs *r) {
    if (r->eof) return QC_OK;
    if (r->end == r->cap && r->beg > 0) {
        memmove(r->buf, r->buf + r->beg, r->end - r->beg);
        r->base += r->beg;
        r->end -= r->beg;
        r->beg = 0;
    }
    if (r->end == r->cap) {
        if (r->end - r->beg >= QC_DOCS_MAX_DOC)
            return qc_fail(QC_ERR_FORMAT, "%s: a document near decoded offset %" PRIu64 " is longer than %zu bytes",
                           r->name, r->base + r->beg, (size_t)QC_DOCS_MAX_DOC);
        size_t nc = r->cap ? r->cap * 2 : WINDOW_START;
        char *b = realloc(r->buf, nc);
        if (!b) return qc_fail(QC_ERR_NOMEM, "%s: out of memory for a %zu-byte document window", r->name, nc);
        r->buf = b;
        r->cap = nc;
    }
    size_t got;
    qc_status st = src_read(r, (uint8_t *)r->buf + r->end, r->cap - r->end, &got);
    if (st != QC_OK) return st;
    if (got == 0) r->eof = true;
    r->end += got;
    return QC_OK;
}

/* The next line: buf[*start, *start + *len) without its '\n'; *found false at the end. beg moves past the
 * line (the bytes stay in the window until the next win_more). A last line without '\n' counts. */
static qc_status win_line(qc_docs *r, size_t *start, size_t *len, bool *found) {
    size_t scanned = 0; /* bytes after beg already known to hold no '\n' */
    *found = false;
    for (;;) {
        char *nl = memchr(r->buf + r->beg + scanned, '\n', r->end - r->beg - scanned);
        if (nl) {
            *start = r->beg;
            *len = (size_t)(nl - (r->buf + r->beg));
            r->beg += *len + 1;
            break;
        }
        scanned = r->end - r->beg;
        if (r->eof) {
            if (scanned == 0) return QC_OK;
            *start = r->beg;
            *len = scanned;
            r->beg = r->end;
            break;
        }
        qc_status st = win_more(r);
        if (st != QC_OK) return st;
    }
    r->line++;
    *found = true;
    return QC_OK;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* ---------------------------------------------------------------------------------------------------- */
/* UTF-8                                                                                                 */

/* Offset of the first byte that is not part of valid UTF-8 (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), or n. */
static size_t utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (!(x & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c == 0xe0) { k = 2; lo = 0xa0; }
        else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) k = 2;
        else if (c == 0xed) { k = 2; hi = 0x9f; }
        else if (c == 0xf0) { k = 3; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) k = 3;
        else if (c == 0xf4) { k = 3; hi = 0x8f; }
        else return i;
        if (n - i <= k) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return i;
        i += k + 1;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------------- */
/* readers: each sets *doc and *len, or *doc = NULL at the end                                              */

static qc_status text_next(qc_docs *r, const char **doc, size_t *len) {
    qc_status st;
    size_t s, n;
    bool found;
    if (r->split == SPLIT_FILE) {
        if (r->done) return QC_OK;
        while (!r->eof)
            if ((st = win_more(r)) != QC_OK) return st;
        r->done = true;
        if (r->end == r->beg) return QC_OK;
        *doc = r->buf + r->beg;
        *len = r->end - r->beg;
        r->beg = r->end;
        return QC_OK;
    }
    if (r->split == SPLIT_LINE) {
        for (;;) {
            if ((st = win_line(r, &s, &n, &found)) != QC_OK) return st;
            if (!found) return QC_OK;
            if (n > 0 && r->buf[s + n - 1] == '\r') n--;
            if (n == 0) continue;
            *doc = r->buf + s;
            *len = n;
            return QC_OK;
        }
    }
    /* paragraph: skip blank lines, then extend over non-blank lines. Offsets below are relative to beg,
     * which stays at the paragraph's first line (compaction in win_more moves beg, not the offsets). */
    for (;;) {
        if ((st = win_line(r, &s, &n, &found)) != QC_OK) return st;
        if (!found) return QC_OK;
        if (!blank(r->buf + s, n)) break;
    }
    size_t cur = r->beg - s; /* relative to the paragraph start: the next line */
    size_t doc_len = n;
    r->beg = s;              /* rewind: the window keeps the paragraph from its first line on */
    for (;;) {
        size_t scanned = 0;
        char *nl;
        for (;;) {
            nl = memchr(r->buf + r->beg + cur + scanned, '\n', r->end - r->beg - cur - scanned);
            if (nl || r->eof) break;
            scanned = r->end - r->beg - cur;
            if ((st = win_more(r)) != QC_OK) return st;
        }
        size_t ln = nl ? (size_t)(nl - (r->buf + r->beg + cur)) : r->end - r->beg - cur;
        if (!nl && ln == 0) break; /* end of data */
        r->line++;
        size_t next = cur + ln + (nl ? 1 : 0);
        bool is_blank = blank(r->buf + r->beg + cur, ln);
        if (!is_blank) doc_len = cur + ln;
        cur = next;
        if (is_blank || !nl) break;
    }
    *doc = r->buf + r->beg;
    if (doc_len > 0 && (*doc)[doc_len - 1] == '\r') doc_len--;
    *len = doc_len;
    r->beg += cur;
    return QC_OK;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid value";
}

/* Parses one record [s, s+n) that must be an object with the string field; `where` names it. */
static qc_status parse_record(qc_docs *r, const char *s, size_t n, const char *where, const char **doc, size_t *len) {
    cJSON_Delete(r->json);
    const char *endp = NULL;
    size_t oom = qc_json_oom_count();
    r->json = cJSON_ParseWithLengthOpts(s, n, &endp, false);
    if (!r->json && qc_json_oom_count() != oom) return qc_fail(QC_ERR_NOMEM, "%s: out of memory parsing the record", where);
    if (!r->json) {
        size_t at = endp && endp >= s && endp <= s + n ? (size_t)(endp - s) : 0;
        return qc_fail(QC_ERR_FORMAT, "%s: invalid JSON near byte %zu of the record", where, at);
    }
    if (endp && endp >= s && endp < s + n && !blank(endp, (size_t)(s + n - endp)))
        return qc_fail(QC_ERR_FORMAT, "%s: unexpected characters after the JSON value (byte %td)", where, endp - s);
    if (!cJSON_IsObject(r->json))
        return qc_fail(QC_ERR_FORMAT, "%s: record is a JSON %s, not an object with field \"%s\"", where,
                       json_type_name(r->json), r->field);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->json, r->field);
    if (!v) return qc_fail(QC_ERR_FORMAT, "%s: record has no field \"%s\"", where, r->field);
    if (!cJSON_IsString(v) || !v->valuestring)
        return qc_fail(QC_ERR_FORMAT, "%s: field \"%s\" is a %s, not a string", where, r->field, json_type_name(v));
    *doc = v->valuestring;
    *len = strlen(v->valuestring);
    return QC_OK;
}

static qc_status jsonl_next(qc_docs *r, const char **doc, size_t *len) {
    for (;;) {
        size_t s, n;
        bool found;
        qc_status st = win_line(r, &s, &n, &found);
        if (st != QC_OK) return st;
        if (!found) return QC_OK;
        if (blank(r->buf + s, n)) continue;
        char where[512];
        snprintf(where, sizeof where, "%s:%" PRId64, r->name, r->line);
        return parse_record(r, r->buf + s, n, where, doc, len);
    }
}

/* Skips JSON whitespace; *c = the next byte, or -1 at the end of the data. */
static qc_status json_peek(qc_docs *r, int *c) {
    for (;;) {
        while (r->beg < r->end) {
            char ch = r->buf[r->beg];
            if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
                *c = (unsigned char)ch;
                return QC_OK;
            }
            r->beg++;
        }
        if (r->eof) {
            *c = -1;
            return QC_OK;
        }
        qc_status st = win_more(r);
        if (st != QC_OK) return st;
    }
}

/* The first non-whitespace byte (-1: none), without consuming anything (line numbers stay right). */
static qc_status json_sniff(qc_docs *r, int *c) {
    size_t i = 0; /* relative to beg */
    for (;;) {
        for (; r->beg + i < r->end; i++) {
            char ch = r->buf[r->beg + i];
            if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
                *c = (unsigned char)ch;
                return QC_OK;
            }
        }
        if (r->eof) {
            *c = -1;
            return QC_OK;
        }
        qc_status st = win_more(r);
        if (st != QC_OK) return st;
    }
}

static qc_status json_next(qc_docs *r, const char **doc, size_t *len) {
    qc_status st;
    int c;
    if (r->jstate == JSON_DONE) return QC_OK;
    if ((st = json_peek(r, &c)) != QC_OK) return st;
    if (r->jstate == JSON_START) {
        if (c < 0) return qc_fail(QC_ERR_FORMAT, "%s: not a JSON array (no data)", r->name);
        if (c != '[') return qc_fail(QC_ERR_FORMAT, "%s: not a JSON array (starts with '%c')", r->name, c);
        r->beg++;
        r->jstate = JSON_FIRST;
        if ((st = json_peek(r, &c)) != QC_OK) return st;
    }
    if (r->jstate == JSON_AFTER_ELEM) {
        if (c == ',') {
            r->beg++;
            r->jstate = JSON_AFTER_COMMA;
            if ((st = json_peek(r, &c)) != QC_OK) return st;
        } else if (c != ']') {
            if (c < 0)
                return qc_fail(QC_ERR_FORMAT, "%s: the JSON array is not closed after record %" PRId64 " (truncated?)",
                               r->name, r->index - 1);
            return qc_fail(QC_ERR_FORMAT, "%s: expected ',' or ']' after record %" PRId64 " at byte %" PRIu64 ", found '%c'",
                           r->name, r->index - 1, r->base + r->beg, c);
        }
    }
    if (c == ']') {
        if (r->jstate == JSON_AFTER_COMMA)
            return qc_fail(QC_ERR_FORMAT, "%s: trailing ',' before ']' after record %" PRId64, r->name, r->index - 1);
        r->beg++;
        r->jstate = JSON_DONE;
        if ((st = json_peek(r, &c)) != QC_OK) return st;
        if (c >= 0)
            return qc_fail(QC_ERR_FORMAT, "%s: data after the closing ']' of the JSON array (byte %" PRIu64 ")", r->name,
                           r->base + r->beg);
        return QC_OK;
    }
    if (c < 0)
        return qc_fail(QC_ERR_FORMAT, "%s: the JSON array ends before record %" PRId64 " (truncated?)", r->name, r->index);
    if (c != '{')
        return qc_fail(QC_ERR_FORMAT, "%s: record %" PRId64 " is not a JSON object (starts with '%c')", r->name, r->index, c);

    /* the element's extent: track nesting and strings (with escapes) until the object closes */
    size_t i = 0;          /* relative to beg */
    int64_t depth = 0;
    bool in_str = false, esc = false;
    for (;;) {
        if (r->beg + i == r->end) {
            if (r->eof)
                return qc_fail(QC_ERR_FORMAT, "%s: record %" PRId64 " is not closed before the end of the data (truncated?)",
                               r->name, r->index);
            if ((st = win_more(r)) != QC_OK) return st;
            continue;
        }
        char ch = r->buf[r->beg + i++];
        if (in_str) {
            if (esc) esc = false;
            else if (ch == '\\') esc = true;
            else if (ch == '"') in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0) break;
        }
    }
    char where[512];
    snprintf(where, sizeof where, "%s: record %" PRId64, r->name, r->index);
    const char *s = r->buf + r->beg;
    r->beg += i;
    r->jstate = JSON_AFTER_ELEM;
    return parse_record(r, s, i, where, doc, len);
}

static qc_status parquet_next(qc_docs *r, const char **doc, size_t *len) {
    const uint8_t *v;
    bool more;
    qc_status st = qc_parquet_next(r->pq, &v, len, &more);
    if (st != QC_OK) return st;
    if (more) {
        *doc = (const char *)v;
        r->bytes_out += *len;
    }
    return QC_OK;
}

/* ---------------------------------------------------------------------------------------------------- */
/* API                                                                                                   */

const char *qc_docs_format_name(qc_docs_format f) {
    switch (f) {
    case QC_DOCS_AUTO: return "auto";
    case QC_DOCS_TEXT: return "text";
    case QC_DOCS_JSONL: return "jsonl";
    case QC_DOCS_JSON: return "json";
    case QC_DOCS_PARQUET: return "parquet";
    }
    return "unknown";
}

bool qc_docs_format_parse(const char *s, qc_docs_format *out) {
    static const qc_docs_format all[] = {QC_DOCS_AUTO, QC_DOCS_TEXT, QC_DOCS_JSONL, QC_DOCS_JSON, QC_DOCS_PARQUET};
    if (!s) return false;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(s, qc_docs_format_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    }
    return false;
}

/* The extension of `name` after stripping compression suffixes, e.g. "json" for "a.json.gz". */
static void name_ext(const char *name, char *ext, size_t cap) {
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t n = strlen(base);
    static const char *comp[] = {".gz", ".zst", ".zstd"};
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(comp[i]);
        if (n > k && strcasecmp(base + n - k, comp[i]) == 0) {
            n -= k;
            break;
        }
    }
    ext[0] = '\0';
    for (size_t i = n; i > 0; i--) {
        if (base[i - 1] == '.') {
            size_t len = n - i;
            if (len >= cap) len = cap - 1;
            memcpy(ext, base + i, len);
            ext[len] = '\0';
            for (size_t j = 0; j < len; j++)
                if (ext[j] >= 'A' && ext[j] <= 'Z') ext[j] = (char)(ext[j] - 'A' + 'a');
            return;
        }
    }
}

void qc_docs_free(qc_docs *r) {
    if (!r) return;
    if (r->fd >= 0 && !r->mem) close(r->fd);
    if (r->z_init) inflateEnd(&r->z);
    ZSTD_freeDStream(r->zd);
    cJSON_Delete(r->json);
    qc_parquet_free(r->pq);
    free(r->in);
    free(r->buf);
    free(r->name);
    free(r->field);
    free(r->sticky_msg);
    free(r);
}

static qc_status docs_open(const char *name, const void *mem, size_t mem_len, bool is_mem, const qc_docs_opts *opts,
                           qc_docs **out) {
    qc_docs_opts def = {0};
    if (!opts) opts = &def;
    int split;
    if (!opts->split || strcmp(opts->split, "line") == 0) split = SPLIT_LINE;
    else if (strcmp(opts->split, "paragraph") == 0) split = SPLIT_PARAGRAPH;
    else if (strcmp(opts->split, "file") == 0) split = SPLIT_FILE;
    else return qc_fail(QC_ERR_ARG, "%s: unknown text split '%s' (line, paragraph or file)", name, opts->split);
    qc_docs_format fmt = opts->format;
    if (fmt != QC_DOCS_AUTO && fmt != QC_DOCS_TEXT && fmt != QC_DOCS_JSONL && fmt != QC_DOCS_JSON &&
        fmt != QC_DOCS_PARQUET)
        return qc_fail(QC_ERR_ARG, "%s: unknown document format %d", name, (int)fmt);
    const char *field = opts->field ? opts->field : "text";
    if (!*field) return qc_fail(QC_ERR_ARG, "%s: empty field name", name);
    if (opts->holdout < 0) return qc_fail(QC_ERR_ARG, "%s: holdout %d is negative", name, opts->holdout);

    qc_docs *r = calloc(1, sizeof *r);
    if (!r) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
    r->fd = -1;
    r->split = split;
    r->holdout = opts->holdout;
    r->heldout = opts->heldout;
    r->name = qc_strdup(name);
    r->field = qc_strdup(field);
    qc_status st = QC_OK;
    if (!r->name || !r->field) {
        st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    char ext[16];
    name_ext(name, ext, sizeof ext);
    if (fmt == QC_DOCS_AUTO && strcmp(ext, "parquet") == 0) fmt = QC_DOCS_PARQUET;
    if (fmt != QC_DOCS_PARQUET) {
        if (is_mem) {
            r->mem = mem ? mem : (const uint8_t *)"";
            r->mem_len = mem ? mem_len : 0;
        } else {
            r->fd = open(name, O_RDONLY | O_CLOEXEC);
            struct stat sb;
            if (r->fd < 0) {
                st = qc_fail(QC_ERR_IO, "%s: cannot open: %s", name, strerror(errno));
                goto fail;
            }
            if (fstat(r->fd, &sb) != 0 || S_ISDIR(sb.st_mode)) {
                st = qc_fail(QC_ERR_IO, "%s: not a readable file", name);
                goto fail;
            }
        }
        if ((st = src_start(r)) != QC_OK) goto fail;
        bool par1 = r->comp == COMP_NONE && r->in_len >= 4 && memcmp(r->in, "PAR1", 4) == 0;
        if (fmt == QC_DOCS_AUTO && par1) fmt = QC_DOCS_PARQUET;
    }
    if (fmt == QC_DOCS_PARQUET) {
        if (r->comp != COMP_NONE) {
            st = qc_fail(QC_ERR_UNSUPPORTED, "%s: a compressed Parquet file (Parquet compresses its pages itself)", name);
            goto fail;
        }
        if (r->fd >= 0) {
            close(r->fd);
            r->fd = -1;
        }
        st = is_mem ? qc_parquet_open_mem(mem, mem_len, name, field, &r->pq) : qc_parquet_open(name, field, &r->pq);
        if (st != QC_OK) goto fail;
    } else {
        /* a UTF-8 byte order mark is not text (and cJSON would reject it) */
        while (r->end - r->beg < 3 && !r->eof)
            if ((st = win_more(r)) != QC_OK) goto fail;
        if (r->end - r->beg >= 3 && memcmp(r->buf + r->beg, "\xef\xbb\xbf", 3) == 0) r->beg += 3;
    }
    if (fmt == QC_DOCS_AUTO) {
        if (strcmp(ext, "jsonl") == 0 || strcmp(ext, "ndjson") == 0) {
            fmt = QC_DOCS_JSONL;
        } else if (strcmp(ext, "json") == 0) {
            int c;
            if ((st = json_sniff(r, &c)) != QC_OK) goto fail;
            fmt = c == '[' ? QC_DOCS_JSON : QC_DOCS_JSONL;
        } else {
            fmt = QC_DOCS_TEXT;
        }
    }
    r->fmt = fmt;
    *out = r;
    return QC_OK;
fail:
    qc_docs_free(r);
    return st;
}

qc_status qc_docs_open(const char *path, const qc_docs_opts *opts, qc_docs **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_docs_open: no output pointer");
    *out = NULL;
    if (!path || !*path) return qc_fail(QC_ERR_ARG, "qc_docs_open: no file name");
    return docs_open(path, NULL, 0, false, opts, out);
}

qc_status qc_docs_open_mem(const void *buf, size_t len, const char *name, const qc_docs_opts *opts, qc_docs **out) {
    if (!out) return qc_fail(QC_ERR_ARG, "qc_docs_open_mem: no output pointer");
    *out = NULL;
    return docs_open(name ? name : "<buffer>", buf, len, true, opts, out);
}

static qc_status docs_next(qc_docs *r, const char **doc, size_t *len);

/* The holdout filter: documents are numbered in the reader's order before it (docs.h). */
qc_status qc_docs_next(qc_docs *r, const char **doc, size_t *len) {
    for (;;) {
        qc_status st = docs_next(r, doc, len);
        if (st != QC_OK || !*doc || r->holdout < 2) return st;
        bool held = r->raw++ % r->holdout == r->holdout - 1;
        if (held == r->heldout) return QC_OK;
        r->index--; /* not returned */
    }
}

static qc_status docs_next(qc_docs *r, const char **doc, size_t *len) {
    *doc = NULL;
    *len = 0;
    if (r->sticky != QC_OK) return qc_fail(r->sticky, "%s", r->sticky_msg ? r->sticky_msg : "earlier error");
    const char *d = NULL;
    size_t n = 0;
    qc_status st;
    switch (r->fmt) {
    case QC_DOCS_TEXT: st = text_next(r, &d, &n); break;
    case QC_DOCS_JSONL: st = jsonl_next(r, &d, &n); break;
    case QC_DOCS_JSON: st = json_next(r, &d, &n); break;
    case QC_DOCS_PARQUET: st = parquet_next(r, &d, &n); break;
    default: st = qc_fail(QC_ERR_ARG, "%s: reader has no format", r->name); break;
    }
    if (st == QC_OK && d) {
        size_t bad = utf8_check((const uint8_t *)d, n);
        if (bad != n) {
            char loc[64] = "";
            if (r->fmt == QC_DOCS_TEXT || r->fmt == QC_DOCS_JSONL) snprintf(loc, sizeof loc, " (line %" PRId64 ")", r->line);
            else if (r->fmt == QC_DOCS_PARQUET) {
                char w[48];
                qc_parquet_where(r->pq, w, sizeof w);
                snprintf(loc, sizeof loc, " (%s)", w);
            }
            st = qc_fail(QC_ERR_FORMAT, "%s: document %" PRId64 "%s is not valid UTF-8 (byte %zu of %zu: 0x%02x)",
                         r->name, r->index, loc, bad, n, (unsigned char)d[bad]);
        }
    }
    if (st != QC_OK) {
        r->sticky = st;
        free(r->sticky_msg);
        r->sticky_msg = qc_strdup(qc_last_error());
        return st;
    }
    if (d) {
        r->index++;
        *doc = d;
        *len = n;
    }
    return QC_OK;
}

int64_t qc_docs_index(const qc_docs *r) { return r->index; }
int64_t qc_docs_skipped(const qc_docs *r) { return r->pq ? qc_parquet_nulls(r->pq) : 0; }
qc_docs_format qc_docs_format_of(const qc_docs *r) { return r->fmt; }

void qc_docs_bytes(const qc_docs *r, uint64_t *in, uint64_t *out) {
    if (in) *in = r->pq ? qc_parquet_bytes_read(r->pq) : r->bytes_in;
    if (out) *out = r->bytes_out;
}
