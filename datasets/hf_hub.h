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
 * As in huggingface_hub: a pinned commit already in the cache needs no network; when the hub cannot be
 * reached (connection error, 5xx, 429, 401/403) a file or complete snapshot already cached for the
 * revision is used with a warning; a blob already present under its etag is linked, not fetched again;
 * downloads of one blob are serialised with <cache>/.locks/<repo folder>/<etag>.lock (flock, the lock
 * huggingface_hub takes). The token also comes from $HUGGING_FACE_HUB_TOKEN or the file
 * `huggingface-cli login` writes ($HF_TOKEN_PATH, else $HF_HOME/token); it is sent only to the endpoint,
 * never to a CDN on another host. max_retries < 0 means no retries. Timeouts: HF_HUB_ETAG_TIMEOUT
 * (connect) and HF_HUB_DOWNLOAD_TIMEOUT (a stalled transfer), 10 s each by default.
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

/* Defaults for every field (offline = -1: from $HF_HUB_OFFLINE). A zero-initialised struct means
 * offline = 0, i.e. online whatever the environment says; start from this instead. */
qc_hf_opts qc_hf_opts_default(void);

/* True if s starts with "hf://". */
bool      qc_hf_is_ref(const char *s);
/* Resolves a reference to a local path (caller frees): a file for dataset files, the snapshot
 * directory for models. opts may be NULL (all defaults). */
qc_status qc_hf_resolve(const char *ref, const qc_hf_opts *opts, char **local_path);

/* ---- the pieces qc_hf_resolve is made of ---- */

/* Append only: the value picks the cache folder prefix ("models--", "datasets--"). */
typedef enum qc_hf_repo_type { QC_HF_MODEL = 0, QC_HF_DATASET = 1 } qc_hf_repo_type;

/* A parsed reference; all strings owned (qc_hf_ref_free). path is NULL for a model snapshot. */
typedef struct qc_hf_ref {
    qc_hf_repo_type type;
    char           *repo_id;  /* "<org>/<name>" */
    char           *revision; /* "main" unless given; may hold '/' ("refs/pr/1") */
    char           *path;     /* path inside the repo, '/'-separated, no "..", not absolute */
} qc_hf_ref;

/* Splits and validates a reference (QC_ERR_ARG with the accepted forms on a malformed one):
 *   hf://datasets/<org>/<name>/<path>[@<rev>]   hf://datasets/<org>/<name>@<rev>/<path>
 *   hf://<org>/<model>[@<rev>]
 * After the repo name the revision ends at the next '/', except refs/pr/<n> and refs/convert/<x>;
 * at the end of a path it is everything after the last '@'. */
qc_status qc_hf_parse_ref(const char *ref, qc_hf_ref *out);
void      qc_hf_ref_free(qc_hf_ref *ref);

/* One file of a repo into the cache; *local_path (caller frees) is the snapshot path
 * <cache>/<kind>s--<org>--<name>/snapshots/<commit>/<path>, a symlink into blobs/. */
qc_status qc_hf_download_file(qc_hf_repo_type type, const char *repo_id, const char *revision,
                              const char *path, const qc_hf_opts *opts, char **local_path);
/* The files qcal needs from a model repo (listed by GET <endpoint>/api/models/<repo>/revision/<rev>):
 * config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, tokenizer.model (those listed), and the weights: the shards named by
 * model.safetensors.index.json (+ the index), else model.safetensors, else every top-level
 * *.safetensors. *snapshot_dir (caller frees) is <cache>/models--<org>--<name>/snapshots/<commit>.
 * refs/<revision> is written once every file is in place, so offline use never sees half a model. */
qc_status qc_hf_download_model(const char *repo_id, const char *revision, const qc_hf_opts *opts,
                               char **snapshot_dir);

#ifdef __cplusplus
}
#endif
#endif /* QC_HF_HUB_H */
