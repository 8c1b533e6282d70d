/* parquet_thrift.c - Thrift compact protocol decoder (see parquet_thrift.h for the wire format). */
#include "parquet_thrift.h"

void qc_tc_fail(qc_tc *c, const char *why) {
    if (!c->err) {
        c->err = true;
        c->why = why;
    }
    c->p = c->end;
}

static void tc_short(qc_tc *c) {
    if (!c->err) c->truncated = true;
    qc_tc_fail(c, "input ends inside a Thrift value");
}

static uint8_t tc_byte(qc_tc *c) {
    if (c->err) return 0;
    if (c->p >= c->end) {
        tc_short(c);
        return 0;
    }
    return *c->p++;
}

static uint64_t tc_varint(qc_tc *c) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        uint8_t b = tc_byte(c);
        if (c->err) return 0;
        if (shift == 63 && (b & 0x7e)) {
            qc_tc_fail(c, "varint overflows 64 bits");
            return 0;
        }
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    qc_tc_fail(c, "varint longer than 10 bytes");
    return 0;
}

static int64_t tc_zigzag(qc_tc *c) {
    uint64_t u = tc_varint(c);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

bool qc_tc_field(qc_tc *c, int16_t *id, int *type) {
    uint8_t b = tc_byte(c);
    if (c->err) return false;
    *type = b & 0x0f;
    if (*type == QC_TC_STOP) {
        if (b != 0) qc_tc_fail(c, "STOP field header with a non-zero delta");
        return false;
    }
    if (*type > QC_TC_UUID) {
        qc_tc_fail(c, "unknown field type");
        return false;
    }
    int delta = b >> 4;
    if (delta) {
        int next = *id + delta;
        if (next > INT16_MAX) {
            qc_tc_fail(c, "field id overflows");
            return false;
        }
        *id = (int16_t)next;
    } else {
        int64_t v = tc_zigzag(c);
        if (c->err) return false;
        if (v < INT16_MIN || v > INT16_MAX) {
            qc_tc_fail(c, "field id out of range");
            return false;
        }
        *id = (int16_t)v;
    }
    return true;
}

int64_t qc_tc_i64(qc_tc *c) { return tc_zigzag(c); }

int32_t qc_tc_i32(qc_tc *c) {
    int64_t v = tc_zigzag(c);
    if (v < INT32_MIN || v > INT32_MAX) {
        qc_tc_fail(c, "i32 value out of range");
        return 0;
    }
    return (int32_t)v;
}

int64_t qc_tc_int(qc_tc *c, int type) {
    switch (type) {
    case QC_TC_I8: return (int8_t)tc_byte(c);
    case QC_TC_I16:
    case QC_TC_I32:
    case QC_TC_I64: {
        int64_t v = tc_zigzag(c);
        if ((type == QC_TC_I16 && (v < INT16_MIN || v > INT16_MAX)) ||
            (type == QC_TC_I32 && (v < INT32_MIN || v > INT32_MAX))) {
            qc_tc_fail(c, "integer out of range for its type");
            return 0;
        }
        return v;
    }
    default: qc_tc_fail(c, "expected an integer field"); return 0;
    }
}

bool qc_tc_bool_field(qc_tc *c, int type) {
    if (type != QC_TC_TRUE && type != QC_TC_FALSE) {
        qc_tc_fail(c, "expected a boolean field");
        return false;
    }
    return type == QC_TC_TRUE;
}

void qc_tc_binary(qc_tc *c, const uint8_t **data, size_t *len) {
    *data = c->p;
    *len = 0;
    uint64_t n = tc_varint(c);
    if (c->err) return;
    if (n > (uint64_t)(c->end - c->p)) {
        tc_short(c);
        return;
    }
    *data = c->p;
    *len = (size_t)n;
    c->p += n;
}

void qc_tc_list(qc_tc *c, int *elem_type, size_t *n) {
    *elem_type = 0;
    *n = 0;
    uint8_t b = tc_byte(c);
    if (c->err) return;
    uint64_t size = b >> 4;
    if (size == 15) size = tc_varint(c);
    if (c->err) return;
    int t = b & 0x0f;
    if (t == QC_TC_STOP || t > QC_TC_UUID) {
        qc_tc_fail(c, "unknown list element type");
        return;
    }
    /* every element takes at least one byte (in lists, booleans are one byte each) */
    if (size > (uint64_t)(c->end - c->p)) {
        tc_short(c);
        return;
    }
    *elem_type = t;
    *n = (size_t)size;
}

void qc_tc_struct_begin(qc_tc *c) {
    if (++c->depth > QC_TC_MAX_DEPTH) qc_tc_fail(c, "structs nested too deeply");
}

void qc_tc_struct_end(qc_tc *c) {
    if (c->depth > 0) c->depth--;
}

void qc_tc_skip(qc_tc *c, int type) {
    if (c->err) return;
    switch (type) {
    case QC_TC_TRUE:
    case QC_TC_FALSE: return; /* a field's value is in its header */
    case QC_TC_I8: (void)tc_byte(c); return;
    case QC_TC_I16:
    case QC_TC_I32:
    case QC_TC_I64: (void)tc_varint(c); return;
    case QC_TC_DOUBLE:
        if (c->end - c->p < 8) tc_short(c);
        else c->p += 8;
        return;
    case QC_TC_UUID:
        if (c->end - c->p < 16) tc_short(c);
        else c->p += 16;
        return;
    case QC_TC_BINARY: {
        const uint8_t *d;
        size_t n;
        qc_tc_binary(c, &d, &n);
        return;
    }
    case QC_TC_LIST:
    case QC_TC_SET: {
        int et;
        size_t n;
        qc_tc_list(c, &et, &n);
        qc_tc_struct_begin(c); /* containers count towards the depth cap too */
        for (size_t i = 0; i < n && !c->err; i++) {
            if (et == QC_TC_TRUE || et == QC_TC_FALSE) (void)tc_byte(c); /* one byte per element */
            else qc_tc_skip(c, et);
        }
        qc_tc_struct_end(c);
        return;
    }
    case QC_TC_MAP: {
        uint64_t n = tc_varint(c);
        if (c->err || n == 0) return;
        uint8_t kv = tc_byte(c);
        int kt = kv >> 4, vt = kv & 0x0f;
        if (kt == QC_TC_STOP || kt > QC_TC_UUID || vt == QC_TC_STOP || vt > QC_TC_UUID) {
            qc_tc_fail(c, "unknown map key/value type");
            return;
        }
        if (n > (uint64_t)(c->end - c->p)) {
            tc_short(c);
            return;
        }
        qc_tc_struct_begin(c);
        for (uint64_t i = 0; i < n && !c->err; i++) {
            if (kt == QC_TC_TRUE || kt == QC_TC_FALSE) (void)tc_byte(c);
            else qc_tc_skip(c, kt);
            if (vt == QC_TC_TRUE || vt == QC_TC_FALSE) (void)tc_byte(c);
            else qc_tc_skip(c, vt);
        }
        qc_tc_struct_end(c);
        return;
    }
    case QC_TC_STRUCT: {
        qc_tc_struct_begin(c);
        int16_t id = 0;
        int t;
        while (qc_tc_field(c, &id, &t)) qc_tc_skip(c, t);
        qc_tc_struct_end(c);
        return;
    }
    default: qc_tc_fail(c, "unknown type"); return;
    }
}
