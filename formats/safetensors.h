/*
 * safetensors.h - read and write Hugging Face safetensors files.
 *
 * Byte layout of a file (all integers little-endian):
 *   [0, 8)          u64 N: length of the JSON header
 *   [8, 8+N)        UTF-8 JSON object: { "__metadata__": {str: str, ...}?,
 *                     "<name>": {"dtype": "F16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ... }
 *                   (writers pad the header with spaces so the data section starts 8-byte aligned)
 *   [8+N, EOF)      data section; tensor bytes at [8+N+begin, 8+N+end), row-major (C order).
 * A valid file's tensors tile the data section exactly: sorted by begin they are contiguous from 0 to
 * the end of the file, non-overlapping, and end-begin == prod(shape) * dtype_size.
 *
 * The reader treats files as untrusted (header length cap QC_ST_MAX_HEADER, valid JSON, known dtypes,
 * shape x dtype size == byte span, offsets in bounds, contiguous, no overlap, no duplicate names) and
 * reports each violation as QC_ERR_FORMAT with a message naming the file and tensor. The header must be
 * UTF-8 without raw control characters, and nothing but whitespace may follow the JSON object. Dtypes
 * the safetensors spec defines but qcal does not handle (U16, U32, U64, F8_*, F6_*, F4, C64) are
 * QC_ERR_UNSUPPORTED; shapes with more than QC_ST_MAX_DIMS dimensions are QC_ERR_FORMAT. Keys of a
 * tensor entry other than dtype/shape/data_offsets are ignored (as the reference reader does); integers
 * in the header must be below 2^53 (the range a JSON double holds exactly).
 *
 * Usage (reading a model directory, single-file or sharded):
 *   qc_weights *w;
 *   if (qc_weights_open("models/llama", &w) != QC_OK) die(qc_last_error());
 *   const qc_tensor *t = qc_weights_find(w, "model.embed_tokens.weight");
 *   float *row = malloc(t->shape[1] * sizeof(float));
 *   qc_tensor_read_f32(t, 5 * t->shape[1], t->shape[1], row);   // row 5, converted from F16/BF16/F32
 *   qc_weights_free(w);
 *
 * Ownership: qc_weights owns its mmaps and every qc_tensor it hands out; pointers stay valid until
 * qc_weights_free. Tensor data pointers point into read-only mmapped memory.
 */
#ifndef QC_SAFETENSORS_H
#define QC_SAFETENSORS_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QC_ST_MAX_HEADER  (100u * 1024u * 1024u) /* 100 MB, the limit the Rust safetensors crate uses */
#define QC_ST_MAX_DIMS    8

/* Values may be written into reports: append only. */
typedef enum qc_dtype {
    QC_DTYPE_F32  = 0,
    QC_DTYPE_F16  = 1,
    QC_DTYPE_BF16 = 2,
    QC_DTYPE_I32  = 3,
    QC_DTYPE_I64  = 4,
    QC_DTYPE_I8   = 5,
    QC_DTYPE_U8   = 6,
    QC_DTYPE_F64  = 7,
    QC_DTYPE_I16  = 8,
    QC_DTYPE_BOOL = 9,
    QC_DTYPE_COUNT
} qc_dtype;

size_t      qc_dtype_size(qc_dtype dt);         /* bytes per element */
const char *qc_dtype_name(qc_dtype dt);         /* "F16", ... as spelled in the header */
/* Parses a safetensors dtype string; false for unknown ones. */
bool        qc_dtype_from_name(const char *name, qc_dtype *out);

typedef struct qc_tensor {
    const char *name;
    qc_dtype    dtype;
    int         ndim;                    /* 0..QC_ST_MAX_DIMS; 0 = scalar */
    int64_t     shape[QC_ST_MAX_DIMS];
    int64_t     numel;                   /* prod(shape); 1 for scalars */
    uint64_t    nbytes;                  /* numel * dtype size */
    const void *data;                    /* into the mmap (NULL for parse-only headers). NOT aligned for
                                            the dtype in general (it depends on the header length):
                                            load through memcpy or qc_tensor_read_f32, never cast */
    uint64_t    offset;                  /* data_offsets[0], relative to the data section */
    const char *file;                    /* path of the file holding it */
} qc_tensor;

/* ---- one file ---- */
typedef struct qc_safetensors qc_safetensors;

/* Parses and validates a header. `json` is the header text (json_len bytes, not NUL-terminated),
 * data_len the size of the data section that follows it, `what` names the file in messages.
 * This is the one parser all readers use, and the fuzz entry point. */
qc_status qc_safetensors_parse(const char *json, size_t json_len, uint64_t data_len, const char *what,
                               qc_safetensors **out);
/* Opens and mmaps `path`, validates the header; tensors get data pointers. */
qc_status qc_safetensors_open(const char *path, qc_safetensors **out);
void      qc_safetensors_free(qc_safetensors *f);
size_t           qc_safetensors_count(const qc_safetensors *f);
const qc_tensor *qc_safetensors_get(const qc_safetensors *f, size_t i);     /* in header order */
const qc_tensor *qc_safetensors_find(const qc_safetensors *f, const char *name);
/* Value of a __metadata__ key, NULL if absent. */
const char      *qc_safetensors_meta(const qc_safetensors *f, const char *key);
/* Number of __metadata__ keys (0 when the header has none). */
size_t           qc_safetensors_meta_count(const qc_safetensors *f);

/* ---- a model directory: model.safetensors, or model.safetensors.index.json + shards ---- */
typedef struct qc_weights qc_weights;

/* Opens `dir`/model.safetensors.index.json if present (every shard it names must exist, be a plain
 * file name inside dir -- no '/', no "..", -- and hold exactly the tensors the weight_map assigns to it),
 * else `dir`/model.safetensors, else the only *.safetensors file in dir. `dir` may also name one
 * .safetensors file. Several *.safetensors files and no index is QC_ERR_FORMAT; none is QC_ERR_IO. */
qc_status qc_weights_open(const char *dir, qc_weights **out);
void      qc_weights_free(qc_weights *w);
size_t           qc_weights_count(const qc_weights *w);
const qc_tensor *qc_weights_get(const qc_weights *w, size_t i);   /* sorted by name */
const qc_tensor *qc_weights_find(const qc_weights *w, const char *name); /* NULL if absent */
/* Total bytes of tensor data. */
uint64_t         qc_weights_total_bytes(const qc_weights *w);

/* Tells the kernel this process is done with the tensor's mmapped file pages (those wholly inside it):
 * they leave the process's resident set and are read again from the file if touched. For streaming
 * passes over models larger than RAM. No-op for parse-only headers. */
void qc_tensor_drop_pages(const qc_tensor *t);
/* The same for any range of a read-only file mapping. */
void qc_mmap_drop_pages(const void *p, size_t n);

/* Converts elements [first, first+count) of a floating tensor (F32/F16/BF16/F64) to float.
 * QC_ERR_UNSUPPORTED for integer dtypes, QC_ERR_ARG if the range is outside the tensor or the tensor has
 * no data (parse-only header). Element indices are flat, row-major. dst needs only float alignment. */
qc_status qc_tensor_read_f32(const qc_tensor *t, int64_t first, int64_t count, float *dst);

/* ---- writer: streamed, to path.tmp, renamed into place by finish ----
 *   qc_st_writer *w;
 *   qc_st_writer_create("out/model.safetensors", &w);
 *   qc_st_writer_add(w, "a.qweight", QC_DTYPE_I32, 2, (int64_t[]){16, 64});   // declare all first
 *   qc_st_writer_add(w, "a.scales", QC_DTYPE_F16, 2, (int64_t[]){1, 64});
 *   qc_st_writer_set_meta(w, "format", "pt");   // written by default; other keys optional
 *   qc_st_writer_begin(w);                      // writes the header
 *   qc_st_writer_write(w, qweight_bytes, 4096); // then tensor bytes in declaration order, in any chunking
 *   qc_st_writer_write(w, scales_bytes, 128);
 *   qc_st_writer_finish(w);                     // checks every byte arrived, fsync, rename; frees w
 * On any error, or qc_st_writer_abort(w), the temp file is removed and nothing appears at path (an older
 * file at path is left untouched). After an error the writer is dead: later calls fail without effect;
 * release it with qc_st_writer_abort. finish frees w whether it succeeds or fails.
 * Statuses: bad names (duplicate, "__metadata__", not UTF-8), dtypes or shapes, calls out of order, writing
 * more bytes than declared, and finishing with bytes missing are QC_ERR_ARG; create/write/fsync/rename
 * failures are QC_ERR_IO. The header holds __metadata__ first ({"format": "pt"} unless set_meta replaces
 * it; set_meta on an existing key replaces its value), then the tensors in declaration order with
 * contiguous offsets. Writes go through a bounded buffer (1 MiB), never the whole file. */
typedef struct qc_st_writer qc_st_writer;
qc_status qc_st_writer_create(const char *path, qc_st_writer **out);
qc_status qc_st_writer_add(qc_st_writer *w, const char *name, qc_dtype dtype, int ndim, const int64_t *shape);
qc_status qc_st_writer_set_meta(qc_st_writer *w, const char *key, const char *value);
qc_status qc_st_writer_begin(qc_st_writer *w);
qc_status qc_st_writer_write(qc_st_writer *w, const void *data, size_t nbytes);
qc_status qc_st_writer_finish(qc_st_writer *w);
void      qc_st_writer_abort(qc_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif /* QC_SAFETENSORS_H */
