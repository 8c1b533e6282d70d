/* Path checks, the output lock, the stamped work directory and the run fingerprint (run_guard.h). */
#include "run_guard.h"
#include "qc_signal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

char *qc_guard_abspath(const char *p) {
    char buf[PATH_MAX];
    if (realpath(p, buf)) return qc_strdup(buf);
    if (errno != ENOENT) {
        qc_fail(QC_ERR_IO, "%s: %s", p, strerror(errno));
        return NULL;
    }
    /* not there yet: the parent's real path + the last component */
    char *copy = qc_strdup(p);
    if (!copy) return NULL;
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy;
    const char *parent = slash ? (slash == copy ? "/" : copy) : ".";
    if (slash && slash != copy) *slash = '\0';
    char *res = NULL;
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || !*base) {
        qc_fail(QC_ERR_ARG, "%s: not a usable path", p);
    } else if (!realpath(parent, buf)) {
        qc_fail(QC_ERR_IO, "%s: its directory %s does not exist: %s", p, parent, strerror(errno));
    } else if ((res = malloc(strlen(buf) + strlen(base) + 2))) {
        sprintf(res, "%s%s%s", buf, strcmp(buf, "/") == 0 ? "" : "/", base);
    }
    free(copy);
    return res;
}

static bool under(const char *a, const char *dir) { /* a lies strictly inside dir */
    size_t n = strlen(dir);
    if (strcmp(dir, "/") == 0) return strcmp(a, "/") != 0;
    return strncmp(a, dir, n) == 0 && a[n] == '/';
}

bool qc_guard_overlap(const char *a, const char *b) { return strcmp(a, b) == 0 || under(a, b) || under(b, a); }

static qc_status check_pair(const char *what, const char *p, const char *other_what, const char *q) {
    if (strcmp(p, q) == 0) return qc_fail(QC_ERR_ARG, "%s %s is the %s; refusing (choose another %s)", what, p, other_what, what);
    if (under(q, p))
        return qc_fail(QC_ERR_ARG, "%s %s contains the %s %s; refusing (choose another %s)", what, p, other_what, q, what);
    if (under(p, q))
        return qc_fail(QC_ERR_ARG, "%s %s lies inside the %s %s; refusing (choose another %s)", what, p, other_what, q, what);
    return QC_OK;
}

qc_status qc_guard_paths(const char *out, const char *work, const char *model_dir, const char *const *inputs,
                         int n_inputs) {
    char *o = qc_guard_abspath(out), *w = o ? qc_guard_abspath(work) : NULL, *m = w ? qc_guard_abspath(model_dir) : NULL;
    qc_status st = m ? QC_OK : QC_ERR_ARG;
    if (st == QC_OK) st = check_pair("--out", o, "model directory", m);
    if (st == QC_OK) st = check_pair("--work-dir", w, "model directory", m);
    if (st == QC_OK) st = check_pair("--work-dir", w, "output directory (--out)", o);
    for (int i = 0; st == QC_OK && i < n_inputs; i++) {
        if (!inputs[i]) continue;
        char *in = qc_guard_abspath(inputs[i]);
        if (!in) {
            st = QC_ERR_ARG;
            break;
        }
        st = check_pair("--out", o, "input", in);
        if (st == QC_OK) st = check_pair("--work-dir", w, "input", in);
        free(in);
    }
    free(o);
    free(w);
    free(m);
    return st;
}

qc_status qc_guard_replaceable(const char *out) {
    struct stat sb;
    if (lstat(out, &sb) != 0) return QC_OK;
    if (!S_ISDIR(sb.st_mode))
        return qc_fail(QC_ERR_ARG, "%s exists and is not a directory; --overwrite replaces only a checkpoint qcal "
                       "wrote", out);
    char *rp = qc_path_join(out, "qcal_report.json");
    char *text = NULL;
    size_t len = 0;
    bool ours = false;
    if (rp && qc_read_file(rp, 64u << 20, &text, &len) == QC_OK) {
        cJSON *j = cJSON_ParseWithLength(text, len);
        ours = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "qcal"));
        cJSON_Delete(j);
    }
    free(text);
    free(rp);
    qc_error_clear();
    if (!ours)
        return qc_fail(QC_ERR_ARG, "%s exists and was not written by qcal (no qcal_report.json of a qcal run); "
                       "--overwrite replaces only a checkpoint qcal wrote: choose another --out", out);
    return QC_OK;
}

/* ---- the output lock ---- */

static long read_pid(int fd) {
    char b[32] = {0};
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    return n > 0 ? strtol(b, NULL, 10) : 0;
}

qc_status qc_guard_lock_take(const char *out, qc_guard_lock *lk) {
    lk->fd = -1;
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') n--;
    if (!(lk->path = malloc(n + 12))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    memcpy(lk->path, out, n);
    memcpy(lk->path + n, ".qcal-lock", 11);
    for (int tries = 0; tries < 100; tries++) {
        int fd = open(lk->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            qc_status st = qc_fail(QC_ERR_IO, "%s: cannot create the lock file: %s", lk->path, strerror(errno));
            free(lk->path);
            lk->path = NULL;
            return st;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            long pid = read_pid(fd);
            close(fd);
            qc_status st = qc_fail(QC_ERR_ARG, "another qcal run (pid %ld) is writing %.*s (it holds %s); wait for it "
                                   "to finish or stop it", pid, (int)n, out, lk->path);
            free(lk->path);
            lk->path = NULL;
            return st;
        }
        /* the holder before us may have unlinked it after we opened it: lock the file the name points at */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lk->path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            char pid[32];
            int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
            if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) { /* the lock holds anyway */ }
            lk->fd = fd;
            return QC_OK;
        }
        close(fd);
    }
    qc_status st = qc_fail(QC_ERR_IO, "%s: could not take the lock", lk->path);
    free(lk->path);
    lk->path = NULL;
    return st;
}

void qc_guard_lock_release(qc_guard_lock *lk) {
    if (lk->fd >= 0) {
        unlink(lk->path);
        close(lk->fd);
    }
    lk->fd = -1;
    free(lk->path);
    lk->path = NULL;
}

/* ---- removing what we wrote ---- */

static bool has_file(const char *dir, const char *name) {
    char *p = qc_path_join(dir, name);
    bool ok = p && qc_file_exists(p);
    free(p);
    return ok;
}

void qc_guard_clean_leftovers(const char *out) {
    char *abs = qc_guard_abspath(out);
    if (!abs) {
        qc_error_clear();
        return;
    }
    char *slash = strrchr(abs, '/');
    const char *base = slash + 1;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%.*s", slash == abs ? 1 : (int)(slash - abs), abs);
    size_t bn = strlen(base);
    DIR *d = opendir(parent);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bn) != 0) continue;
        bool tmp = strncmp(nm + bn, ".tmp-", 5) == 0, old = strncmp(nm + bn, ".old-", 5) == 0;
        if ((!tmp && !old) || strlen(nm + bn) != 11) continue;
        char path[PATH_MAX + 260];
        snprintf(path, sizeof path, "%s/%s", parent, nm);
        if (!qc_dir_exists(path)) continue;
        if (has_file(path, QC_TMP_STAMP) || (old && has_file(path, "qcal_report.json")) ||
            (tmp && has_file(path, QC_WORK_STAMP))) {
            QC_LOGI("removing %s, left by an interrupted qcal run", path);
            if (!qc_rm_tree(path)) QC_LOGW("%s: could not remove it all", path);
        } else {
            QC_LOGW("%s looks like a temporary directory but carries no qcal stamp; leaving it", path);
        }
    }
    if (d) closedir(d);
    free(abs);
}

/* ---- the work directory ---- */

static bool digits(const char *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

bool qc_workdir_is_ours(const char *name) {
    char nm[256];
    snprintf(nm, sizeof nm, "%s", name);
    size_t n = strlen(nm);
    if (n > 4 && strcmp(nm + n - 4, ".tmp") == 0) nm[n -= 4] = '\0'; /* a temporary file of ours */
    if (strcmp(nm, QC_WORK_STAMP) == 0 || strcmp(nm, "base.safetensors") == 0 || strcmp(nm, "x.bin") == 0 ||
        strcmp(nm, "status.json") == 0)
        return true;
    if (n == 23 && strncmp(nm, "layer-", 6) == 0 && digits(nm + 6, 5) && strcmp(nm + 11, ".safetensors") == 0) return true;
    if (n == 16 && strncmp(nm, "layer-", 6) == 0 && digits(nm + 6, 5) && strcmp(nm + 11, ".json") == 0) return true;
    return false;
}

static void clear_dir(const char *path, bool keep_stamp, bool warn) {
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (!qc_workdir_is_ours(e->d_name)) {
            if (warn) QC_LOGW("%s/%s was not written by qcal; leaving it", path, e->d_name);
            continue;
        }
        if (keep_stamp && strcmp(e->d_name, QC_WORK_STAMP) == 0) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT)
            QC_LOGW("%s/%s: cannot remove: %s", path, e->d_name, strerror(errno));
    }
    if (d) closedir(d);
}

void qc_workdir_clear(const qc_workdir *w, bool keep_stamp) { clear_dir(w->path, keep_stamp, true); }

/* dir/QC_WORK_STAMP <- stamp, atomically. */
static qc_status write_stamp_in(const char *dir, const cJSON *stamp) {
    char *p = qc_path_join(dir, QC_WORK_STAMP), *s = cJSON_Print(stamp);
    qc_status st = p && s ? qc_write_file_atomic(p, s, strlen(s)) : qc_fail(QC_ERR_NOMEM, "out of memory");
    free(p);
    free(s);
    return st;
}

static qc_status write_stamp(qc_workdir *w) { return write_stamp_in(w->path, w->stamp); }

static cJSON *new_stamp(const cJSON *fp) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "qcal_work_dir", QC_VERSION);
    cJSON_AddItemToObject(s, "fingerprint", cJSON_Duplicate(fp, true));
    return s;
}

/* The keys of want whose values differ from have's (present in both, or absent from have). */
static void diff_keys(const cJSON *want, const cJSON *have, char *buf, size_t cap) {
    buf[0] = '\0';
    const cJSON *k;
    cJSON_ArrayForEach(k, want) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, k->string);
        if (h && cJSON_Compare(k, h, true)) continue;
        size_t n = strlen(buf);
        char *a = cJSON_PrintUnformatted(k), *b = h ? cJSON_PrintUnformatted(h) : NULL;
        snprintf(buf + n, cap - n, "%s%s (was %.60s, now %.60s)", n ? ", " : "", k->string, b ? b : "absent",
                 a ? a : "?");
        free(a);
        free(b);
    }
}

/* w->path made with its stamp in one step: <path>.tmp-XXXXXX made and stamped, then renamed into place, so
 * that an interrupted creation leaves either nothing at path or a stamped directory (plus, at worst, a stamped
 * temporary, which qc_guard_clean_leftovers(path) removes at the next start). *raced: path appeared meanwhile
 * (another run's); nothing of ours is left then. */
static qc_status create_stamped(qc_workdir *w, const cJSON *fp, bool *raced) {
    *raced = false;
    size_t len = strlen(w->path), n = len + 16;
    while (len > 1 && w->path[len - 1] == '/') len--; /* "dir/": the temporary is dir.tmp-XXXXXX, beside it */
    char *tmp = malloc(n), *dst = malloc(n);
    if (!tmp || !dst) {
        free(tmp);
        free(dst);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    snprintf(dst, n, "%.*s", (int)len, w->path);
    snprintf(tmp, n, "%s.tmp-XXXXXX", dst);
    qc_guard_clean_leftovers(dst);
    if (!mkdtemp(tmp)) {
        qc_status e = qc_fail(QC_ERR_IO, "%s: cannot create the work directory: %s", w->path, strerror(errno));
        free(tmp);
        free(dst);
        return e;
    }
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmp, 0755 & ~mask); /* as mkdir(path, 0755) would (mkdtemp makes it 0700) */
    w->stamp = new_stamp(fp);
    qc_status st = write_stamp_in(tmp, w->stamp);
    if (st == QC_OK && rename(tmp, dst) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) *raced = true;
        else st = qc_fail(QC_ERR_IO, "%s: cannot create the work directory: %s", w->path, strerror(errno));
    }
    if (st || *raced) {
        char *sp = qc_path_join(tmp, QC_WORK_STAMP);
        if (sp) unlink(sp);
        free(sp);
        rmdir(tmp);
        cJSON_Delete(w->stamp);
        w->stamp = NULL;
    }
    free(tmp);
    free(dst);
    return st;
}

qc_status qc_workdir_open(const char *path, const cJSON *fp, bool restart, qc_workdir *w) {
    memset(w, 0, sizeof *w);
    w->dirfd = -1;
    if (!(w->path = qc_strdup(path))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = QC_OK;
    struct stat sb;
    bool raced = false;
    if (lstat(path, &sb) != 0) {
        if ((st = create_stamped(w, fp, &raced))) return st;
        w->created = !raced;
        if (raced && lstat(path, &sb) != 0) /* another run's, made meanwhile */
            return qc_fail(QC_ERR_IO, "%s: cannot read the work directory: %s", path, strerror(errno));
    }
    if (!w->created && !S_ISDIR(sb.st_mode))
        return qc_fail(QC_ERR_ARG, "work directory %s exists and is not a directory; refusing", path);
    w->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) return qc_fail(QC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (flock(w->dirfd, LOCK_EX | LOCK_NB) != 0)
        return qc_fail(QC_ERR_ARG, "work directory %s is in use by another qcal run; wait for it or choose another "
                       "--work-dir", path);
    if (w->created) return QC_OK; /* stamped as it was made */
    char *sp = qc_path_join(path, QC_WORK_STAMP), *text = NULL;
    size_t len;
    cJSON *old = NULL;
    if (sp && qc_read_file(sp, 1u << 20, &text, &len) == QC_OK) old = cJSON_ParseWithLength(text, len);
    free(sp);
    free(text);
    qc_error_clear();
    const cJSON *ofp = cJSON_GetObjectItemCaseSensitive(old, "fingerprint");
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(old, "qcal_work_dir")) || !cJSON_IsObject(ofp)) {
        cJSON_Delete(old);
        return qc_fail(QC_ERR_ARG, "work directory %s exists and carries no qcal stamp (%s): qcal uses only a work "
                       "directory it created; choose another --work-dir (a new one is created)", path, QC_WORK_STAMP);
    }
    char why[2048];
    diff_keys(fp, ofp, why, sizeof why);
    if (why[0] && !restart) {
        st = qc_fail(QC_ERR_ARG, "work directory %s holds the state of a different run: %s; run with --restart to "
                     "discard that state and start over", path, why);
        cJSON_Delete(old);
        return st;
    }
    if (why[0]) { /* --restart */
        QC_LOGI("--restart: discarding the state in %s (%s)", path, why);
        clear_dir(path, false, true);
        cJSON_Delete(old);
        w->stamp = new_stamp(fp);
        return write_stamp(w);
    }
    /* ours and matching: keep its keys (e.g. the token hash) and drop stale temporaries */
    w->stamp = old;
    w->resumable = true;
    if (restart) {
        QC_LOGI("--restart: discarding the state in %s", path);
        clear_dir(path, true, true);
        w->resumable = false;
        cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(w->stamp, "fingerprint"), "tokens_sha256");
        return write_stamp(w);
    }
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0 && qc_workdir_is_ours(e->d_name)) unlinkat(dirfd(d), e->d_name, 0);
    }
    if (d) closedir(d);
    return QC_OK;
}

qc_status qc_workdir_confirm(qc_workdir *w, const char *key, const char *value, bool restart) {
    cJSON *fp = cJSON_GetObjectItemCaseSensitive(w->stamp, "fingerprint");
    const cJSON *have = cJSON_GetObjectItemCaseSensitive(fp, key);
    if (cJSON_IsString(have) && strcmp(have->valuestring, value) == 0) return QC_OK;
    if (have) {
        if (!restart)
            return qc_fail(QC_ERR_ARG, "work directory %s holds the state of a different run: %s was %s, now %s; run "
                           "with --restart to discard that state", w->path, key, cJSON_IsString(have) ? have->valuestring : "?", value);
        QC_LOGI("--restart: discarding the state in %s (%s changed)", w->path, key);
        clear_dir(w->path, true, true);
        w->resumable = false;
        cJSON_DeleteItemFromObjectCaseSensitive(fp, key);
    }
    cJSON_AddStringToObject(fp, key, value);
    return write_stamp(w);
}

static void remove_dir(const char *path) {
    clear_dir(path, true, true);
    qc_test_point("cleanup-stamp");
    char *sp = qc_path_join(path, QC_WORK_STAMP);
    if (sp && unlink(sp) != 0 && errno != ENOENT) QC_LOGW("%s: cannot remove: %s", sp, strerror(errno));
    free(sp);
    if (rmdir(path) != 0 && errno != ENOENT)
        QC_LOGW("%s: left in place: %s (it holds files qcal did not write)", path, strerror(errno));
}

void qc_workdir_remove(qc_workdir *w) { remove_dir(w->path); }

qc_status qc_workdir_mark_finishing(qc_workdir *w, const char *recipe_hash) {
    cJSON_DeleteItemFromObjectCaseSensitive(w->stamp, "finishing");
    if (!cJSON_AddStringToObject(w->stamp, "finishing", recipe_hash)) return qc_fail(QC_ERR_NOMEM, "out of memory");
    return write_stamp(w);
}

/* the string at key of the JSON file dir/name, or NULL */
static char *json_string_at(const char *dir, const char *name, const char *key) {
    char *p = qc_path_join(dir, name), *text = NULL, *v = NULL;
    size_t len;
    if (p && qc_read_file(p, 64u << 20, &text, &len) == QC_OK) {
        cJSON *j = cJSON_ParseWithLength(text, len);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, key);
        if (cJSON_IsString(s)) v = qc_strdup(s->valuestring);
        cJSON_Delete(j);
    }
    qc_error_clear();
    free(p);
    free(text);
    return v;
}

bool qc_workdir_finish_interrupted(const char *path, const char *out, const char *recipe_hash) {
    char *fin = json_string_at(path, QC_WORK_STAMP, "finishing"), *ver = json_string_at(path, QC_WORK_STAMP, "qcal_work_dir");
    char *rep = json_string_at(out, "qcal_report.json", "recipe_sha256");
    bool done = fin && ver && rep && strcmp(fin, recipe_hash) == 0 && strcmp(rep, recipe_hash) == 0;
    free(fin);
    free(ver);
    free(rep);
    if (done) remove_dir(path);
    return done;
}

void qc_workdir_close(qc_workdir *w) {
    if (w->dirfd >= 0) close(w->dirfd);
    w->dirfd = -1;
    cJSON_Delete(w->stamp);
    w->stamp = NULL;
    free(w->path);
    w->path = NULL;
}

/* ---- the model's identity ---- */

cJSON *qc_guard_model_identity(const char *model_dir) {
    cJSON *o = cJSON_CreateObject();
    DIR *d = opendir(model_dir);
    if (!d || !o) {
        qc_fail(QC_ERR_IO, "%s: cannot list: %s", model_dir, strerror(errno));
        cJSON_Delete(o);
        if (d) closedir(d);
        return NULL;
    }
    /* sorted names: readdir order is the file system's */
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        bool st = l > 12 && strcmp(e->d_name + l - 12, ".safetensors") == 0;
        if (!st && strcmp(e->d_name, "config.json") != 0) continue;
        char **nn = realloc(names, sizeof *names * (n + 1));
        if (!nn) break;
        names = nn;
        names[n++] = qc_strdup(e->d_name);
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        char *p = qc_path_join(model_dir, names[i]);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            qc_fail(QC_ERR_IO, "%s: cannot open: %s", p ? p : names[i], strerror(errno));
            ok = false;
        } else {
            /* a safetensors file: its size and the hash of its header (names, dtypes, shapes, offsets);
             * config.json: the hash of all of it */
            uint64_t hl = 0;
            size_t want = (size_t)sb.st_size;
            if (strcmp(names[i], "config.json") != 0 && pread(fd, &hl, 8, 0) == 8 && hl + 8 <= (uint64_t)sb.st_size)
                want = (size_t)hl + 8;
            if (want > (64u << 20)) want = 64u << 20;
            char *buf = malloc(want + 1), hex[65], val[128];
            if (buf && pread(fd, buf, want, 0) == (ssize_t)want) {
                qc_sha256_buf(buf, want, hex);
                snprintf(val, sizeof val, "%lld:%s", (long long)sb.st_size, hex);
                cJSON_AddStringToObject(o, names[i], val);
            } else {
                qc_fail(QC_ERR_IO, "%s: cannot read", p);
                ok = false;
            }
            free(buf);
        }
        if (fd >= 0) close(fd);
        free(p);
        free(names[i]);
    }
    free(names);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
