/*
 * run_guard.h - what keeps an unattended `qcal quantize` from losing data: path checks, the output
 * lock, the stamped work directory and the run's fingerprint.
 *
 *   char *out_abs = qc_guard_abspath(out);                   // real path, also for paths not yet made
 *   qc_guard_paths(out, work, model_dir, inputs, n_inputs);  // none may be, hold or lie in another
 *   qc_guard_lock lk;  qc_guard_lock_take(out, &lk);         // <out>.qcal-lock, flock; names the holder
 *   qc_guard_clean_leftovers(out);                           // stamped <out>.tmp-* of killed runs
 *   qc_workdir w;      qc_workdir_open(work, fp, restart, &w);  // fresh + stamped, or ours and matching
 *   ... run, the pipeline writes only the names qc_workdir_is_ours() accepts ...
 *   qc_workdir_remove(&w);                                   // only our files, then rmdir
 *   qc_workdir_close(&w); qc_guard_lock_release(&lk);
 *
 * The fingerprint is a JSON object (cJSON) of everything that decides the checkpoint's bytes: recipe
 * hash, token hash (added once sampled), model file sizes and header hashes, qcal version, device
 * kind and the arithmetic's partition layout. A work directory whose stamp holds another fingerprint
 * is refused with the keys that differ; `restart` discards its state instead.
 */
#ifndef QC_RUN_GUARD_H
#define QC_RUN_GUARD_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "qc_common.h"

#define QC_WORK_STAMP   "qcal-work.json"   /* the work directory's stamp */
#define QC_TMP_STAMP    ".qcal-tmp"        /* marks <out>.tmp-XXXXXX while qcal assembles it */

/* Real path of p; when p does not exist, the real path of its parent joined with its last component.
 * NULL (with qc_fail) when neither resolves. Caller frees. */
char *qc_guard_abspath(const char *p);
/* Whether real paths a and b are the same, or one lies inside the other. */
bool qc_guard_overlap(const char *a, const char *b);
/* out and work may not be, contain or lie inside model_dir, each other, or any input path (files or
 * directories). QC_ERR_ARG naming both paths. */
qc_status qc_guard_paths(const char *out, const char *work, const char *model_dir, const char *const *inputs,
                         int n_inputs);
/* out may be replaced only when it is a directory a qcal run wrote (holds qcal_report.json from qcal). */
qc_status qc_guard_replaceable(const char *out);

typedef struct qc_guard_lock {
    int   fd;          /* -1 when not held */
    char *path;        /* <out>.qcal-lock */
} qc_guard_lock;
/* Takes <out>.qcal-lock exclusively (flock, non-blocking); QC_ERR_ARG naming the pid that holds it. */
qc_status qc_guard_lock_take(const char *out, qc_guard_lock *lk);
void      qc_guard_lock_release(qc_guard_lock *lk);   /* unlinks the lock file, then unlocks */

/* Removes <out>.tmp-XXXXXX and <out>.old-XXXXXX directories that carry QC_TMP_STAMP (left by killed
 * runs); others are left alone and named in a warning. Call with the lock held. */
void qc_guard_clean_leftovers(const char *out);

typedef struct qc_workdir {
    char  *path;
    int    dirfd;       /* open, flock'ed */
    bool   created;     /* made by this run */
    bool   resumable;   /* it holds a matching stamp from an earlier run */
    cJSON *stamp;       /* the stamp as written */
} qc_workdir;

/* Creates path fresh and stamps it with fp, or (when it exists) requires our stamp: a directory without
 * it is refused; another fingerprint is refused with the differing keys, unless restart, which removes
 * our files and stamps it anew. Keys absent from fp (the token hash before sampling) are not compared.
 * Locks it. Stale temporary files of ours in it are removed. Borrows fp (copied). */
qc_status qc_workdir_open(const char *path, const cJSON *fp, bool restart, qc_workdir *w);
/* Adds key = value to the stamp (e.g. the token hash once sampled); refuses a different earlier value
 * (unless restart: then the state is discarded and the stamp rewritten). */
qc_status qc_workdir_confirm(qc_workdir *w, const char *key, const char *value, bool restart);
/* Whether name is a file qcal writes into a work directory (stamp, parts, layer reports, X, status). */
bool      qc_workdir_is_ours(const char *name);
/* Removes our files from it (all but the stamp when keep_stamp), warning about others. */
void      qc_workdir_clear(const qc_workdir *w, bool keep_stamp);
/* Removes our files and the directory (left, with a warning, when it holds files not ours). The stamp
 * goes last, so an interrupted removal leaves a directory qcal still recognises. */
void      qc_workdir_remove(qc_workdir *w);
/* Sets the stamp's top-level key "finishing" to recipe_hash: written just before the checkpoint is, so that
 * a run stopped between the checkpoint's rename and the work directory's removal can be recognised. */
qc_status qc_workdir_mark_finishing(qc_workdir *w, const char *recipe_hash);
/* Whether the work directory at path is ours, marked finishing with recipe_hash, and out holds a checkpoint
 * whose qcal_report.json names the same recipe_sha256: the run already wrote its checkpoint and was stopped
 * while cleaning up. Then the directory is removed (our files only, stamp last) and true returned. */
bool      qc_workdir_finish_interrupted(const char *path, const char *out, const char *recipe_hash);
void      qc_workdir_close(qc_workdir *w);

/* Sizes and header hashes of model_dir's *.safetensors and the hash of its config.json, as a JSON
 * object; NULL with qc_fail on error. */
cJSON *qc_guard_model_identity(const char *model_dir);

#endif /* QC_RUN_GUARD_H */
