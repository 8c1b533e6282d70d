/*
 * hf_hub.h - resolve hf:// references to local files through the Hugging Face hub (libcurl),
 * with the hub's standard cache layout, so files downloaded by qcal and by huggingface_hub are shared.
 *
 * References:
 *   hf://datasets/<org>/<name>/<path/in/repo>[@<revision>]   one file of a dataset repo
 *   hf://<org>/<model>[@<revision>]                          a model snapshot directory: config.json,
 *        tokenizer files, generation_config.json, *.safetensors (+ index) as listed by the hub's API
 * (revision defaults to "main"; the @rev suffix may sit after the repo name too: hf://org/model@v1.0).
 *
 * Cache (huggingface_hub layout) under $HF_HOME/hub (default ~/.cache/huggingface/hub), or
 * $HF_HUB_CACHE when set:
 *   <kind>s--<org>--<name>/blobs/<etag>                  file contents (etag without quotes)
 *   <kind>s--<org>--<name>/snapshots/<commit>/<path>     symlink to ../../blobs/<etag> (relative)
 *   <kind>s--<org>--<name>/refs/<revision>               the commit hash the revision resolved to
 * Downloads go to blobs/<etag>.incomplete and resume with an HTTP Range request after an interrupted
 * transfer; a finished file is verified (size = Content-Length / X-Linked-Size, and sha256 = etag when
 * the etag is a 64-hex-digit LFS hash) before it is renamed into place.
 *
 * Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (sent as
 * "Authorization: Bearer <token>"), HF_HUB_OFFLINE=1 (no network: the cache only, error if missing),
 * HF_HOME / HF_HUB_CACHE. Transient failures (connection errors, 429, 5xx) are retried with
 * exponential backoff. Errors say what happened: 401/403 (gated or private: set HF_TOKEN), 404 (no such
 * repo/file/revision), no network, disk full.
 *
 *   char *path;
 *   if (qc_hf_resolve("hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz", NULL, &path)) die(...);
 *   ... open path ...; free(path);
 */
#ifndef QC_HF_HUB_H
#define QC_HF_HUB_H

#include "qc_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qc_hf_opts {
    const char    *endpoint;    /* NULL: $HF_ENDPOINT or https://huggingface.co */
    const char    *token;       /* NULL: $HF_TOKEN */
    const char    *cache_dir;   /* NULL: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub */
    int            offline;     /* -1: from $HF_HUB_OFFLINE; 0/1 explicit */
    int            max_retries; /* 0: default 5 */
    double         backoff_s;   /* first retry delay; 0: default 1.0 s (tests use small values) */
    qc_progress_fn progress;    /* bytes done/total per file; may be NULL */
    void          *user;
} qc_hf_opts;

/* True if s starts with "hf://". */
bool      qc_hf_is_ref(const char *s);
/* Resolves a reference to a local path (caller frees): a file for dataset files, the snapshot
 * directory for models. opts may be NULL (all defaults). */
qc_status qc_hf_resolve(const char *ref, const qc_hf_opts *opts, char **local_path);

#ifdef __cplusplus
}
#endif
#endif /* QC_HF_HUB_H */
