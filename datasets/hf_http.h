/*
 * hf_http.h - the HTTP side of hf_hub.c (internal): libcurl requests to the Hugging Face hub with
 * retries and exponential backoff, the hub's response headers, and a resumable download into a file.
 *
 * Every request function returns QC_OK once it has a final HTTP answer, whatever its status (the
 * caller turns 401/404/... into messages that name the repo and file), and QC_ERR_NET when no answer
 * came after the retries ("cannot reach <endpoint>: ..."). Retried: connection errors, timeouts,
 * dropped transfers, 408, 429 and 5xx. Never retried: other 4xx.
 *
 * Ownership: a qc_hf_http owns its curl handle (reused between requests, so connections are kept
 * alive); a qc_hf_reply owns its strings (qc_hf_reply_clear).
 */
#ifndef QC_HF_HTTP_H
#define QC_HF_HTTP_H

#include "qc_common.h"
#include "sha256.h"

typedef struct qc_hf_http qc_hf_http;

typedef struct qc_hf_reply {
    long    status;        /* HTTP status of the last response; 0 if none */
    char   *location;      /* Location */
    char   *repo_commit;   /* X-Repo-Commit */
    char   *etag;          /* X-Linked-Etag, else ETag; quotes and W/ removed */
    int64_t size;          /* X-Linked-Size, else Content-Length; -1 if absent */
    char   *error_code;    /* X-Error-Code (RepoNotFound, EntryNotFound, RevisionNotFound, GatedRepo) */
    char   *error_message; /* X-Error-Message */
    char   *url;           /* the URL that answered (after relative redirects) */
} qc_hf_reply;

void qc_hf_reply_clear(qc_hf_reply *r);

/* endpoint: for messages and to decide where the token may go; token may be NULL. */
qc_status qc_hf_http_create(const char *endpoint, const char *token, int max_retries, double backoff_s,
                            qc_hf_http **out);
void      qc_hf_http_free(qc_hf_http *h);

/* HEAD without following redirects to other hosts (relative ones are followed), with
 * Accept-Encoding: identity, as huggingface_hub does: a 302 to the CDN carries the commit, the LFS
 * etag and size, and its Location is where the bytes are. */
qc_status qc_hf_http_head(qc_hf_http *h, const char *url, qc_hf_reply *rep);

/* GET into memory, following redirects; *body (NUL-terminated, caller frees) holds at most max_len
 * bytes (more is QC_ERR_FORMAT). *body is set only for a 2xx answer. */
qc_status qc_hf_http_get(qc_hf_http *h, const char *url, size_t max_len, char **body, size_t *len,
                         qc_hf_reply *rep);

/* Where a download goes. The file at fd already holds `offset` bytes whose hash is in *sha; the
 * transfer asks for the rest with "Range: bytes=<offset>-", restarts from 0 when the server answers
 * 200 or 416 instead of 206, resumes after a dropped connection, and keeps fd, offset and sha in step.
 * On QC_OK with a 2xx status the file holds the whole body (expected bytes when expected >= 0). */
typedef struct qc_hf_sink {
    int            fd;
    const char    *path;      /* the .incomplete file, for messages */
    int64_t        offset;    /* in/out: bytes in the file */
    int64_t        expected;  /* in/out: total size, -1 if unknown (then taken from the reply) */
    qc_sha256     *sha;
    qc_progress_fn progress;  /* may be NULL; returning false cancels (QC_ERR_CANCELLED) */
    void          *user;
    const char    *what;      /* passed to progress */
    bool           discard;   /* out: the partial data is known to be bad (delete it) */
} qc_hf_sink;

/* send_auth: false when url is on another host than the endpoint (a CDN must not get the token). */
qc_status qc_hf_http_get_file(qc_hf_http *h, const char *url, bool send_auth, qc_hf_sink *sink,
                              qc_hf_reply *rep);

/* True if a and b have the same scheme://host:port. */
bool qc_hf_same_origin(const char *a, const char *b);

#endif /* QC_HF_HTTP_H */
