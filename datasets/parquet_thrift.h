/*
 * parquet_thrift.h - a minimal, defensive decoder for the Thrift compact protocol, the encoding of
 * Parquet's FileMetaData and PageHeader structs. Internal to the Parquet reader.
 *
 * Wire format (all integers little-endian varints; i16/i32/i64 are zigzag-encoded first):
 *   field header  1 byte: high nibble = field-id delta (1..15) from the previous field of the same
 *                 struct, low nibble = type; delta 0 means a zigzag varint i16 field id follows.
 *                 Type 0 is STOP (end of struct).
 *   types         1 BOOL_TRUE, 2 BOOL_FALSE (the value lives in the type of a field header; one byte,
 *                 1 = true, inside lists), 3 I8 (1 byte), 4 I16, 5 I32, 6 I64 (zigzag varints),
 *                 7 DOUBLE (8 bytes), 8 BINARY (varint length + bytes), 9 LIST, 10 SET, 11 MAP,
 *                 12 STRUCT (fields until STOP), 13 UUID (16 bytes)
 *   list/set      1 byte: high nibble = size (15: a varint size follows), low nibble = element type
 *   map           varint size; if non-zero, 1 byte key type << 4 | value type; then the pairs
 *
 * Usage:
 *   qc_tc c = qc_tc_init(buf, len);
 *   int16_t id = 0; int type;
 *   while (qc_tc_field(&c, &id, &type)) {               // id: the field id, relative decoding inside
 *       if (id == 1 && type == QC_TC_I32) v = qc_tc_i32(&c);
 *       else qc_tc_skip(&c, type);
 *   }
 *   if (c.err) ... c.truncated says whether the input ended early (more bytes may help) ...
 *
 * Nothing is allocated. Every read is bounds-checked: on the first error the cursor latches `err`, the
 * reads return zeros and qc_tc_field returns false, so a decoding loop always terminates. `why`
 * describes the first error (static string). Nesting is capped at QC_TC_MAX_DEPTH.
 */
#ifndef QC_PARQUET_THRIFT_H
#define QC_PARQUET_THRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QC_TC_MAX_DEPTH 32

enum {
    QC_TC_STOP = 0, QC_TC_TRUE = 1, QC_TC_FALSE = 2, QC_TC_I8 = 3, QC_TC_I16 = 4, QC_TC_I32 = 5,
    QC_TC_I64 = 6, QC_TC_DOUBLE = 7, QC_TC_BINARY = 8, QC_TC_LIST = 9, QC_TC_SET = 10, QC_TC_MAP = 11,
    QC_TC_STRUCT = 12, QC_TC_UUID = 13,
};

typedef struct qc_tc {
    const uint8_t *p, *end, *begin;
    int         depth;      /* structs entered through qc_tc_skip or qc_tc_struct_begin */
    bool        err;        /* latched on the first error */
    bool        truncated;  /* the error was running out of bytes */
    const char *why;
} qc_tc;

static inline qc_tc qc_tc_init(const void *buf, size_t len) {
    qc_tc c = {0};
    c.p = c.begin = (const uint8_t *)buf;
    c.end = c.p + len;
    return c;
}

/* Reads the next field header of the current struct. Returns false at STOP or on error. *id holds the
 * previous field id on entry (start each struct with 0) and the new one on return. *type is the wire
 * type; for booleans, QC_TC_TRUE/QC_TC_FALSE carry the value (read it with qc_tc_bool_field). */
bool     qc_tc_field(qc_tc *c, int16_t *id, int *type);
int64_t  qc_tc_i64(qc_tc *c);                 /* I8, I16, I32 and I64 fields: call the matching reader */
int32_t  qc_tc_i32(qc_tc *c);                 /* fails if the value does not fit */
/* Reads an integer field of any integer wire type (I8/I16/I32/I64) into an int64; fails otherwise. */
int64_t  qc_tc_int(qc_tc *c, int type);
bool     qc_tc_bool_field(qc_tc *c, int type); /* type from qc_tc_field */
/* A BINARY value: *data points into the buffer (not NUL-terminated). */
void     qc_tc_binary(qc_tc *c, const uint8_t **data, size_t *len);
/* A LIST/SET header. *n is checked against the bytes left (every element takes at least one byte,
 * except booleans in packed form which also take one), so callers may allocate n elements. */
void     qc_tc_list(qc_tc *c, int *elem_type, size_t *n);
/* Enters/leaves a nested struct value (depth accounting). */
void     qc_tc_struct_begin(qc_tc *c);
void     qc_tc_struct_end(qc_tc *c);
/* Skips one value of `type`, recursively (depth-capped). */
void     qc_tc_skip(qc_tc *c, int type);
/* Latches an error (a semantic problem found by the caller). */
void     qc_tc_fail(qc_tc *c, const char *why);

#endif /* QC_PARQUET_THRIFT_H */
