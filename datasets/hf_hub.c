/* hf_hub.c - hf:// references, the huggingface_hub cache layout, and the download policy (when to go to
 * the network, what to verify, where files land). The HTTP side is in hf_http.c. */
#include "hf_hub.h"

#include "hf_http.h"
#include "sha256.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HF_DEFAULT_ENDPOINT "https://huggingface.co"
#define HF_API_MAX          (64u << 20) /* a repo listing or an index file */
#define HF_REPO_ID_MAX      96          /* huggingface_hub's validate_repo_id */

static const char k_forms[] =
    "accepted forms: hf://datasets/<org>/<name>/<path/in/repo>[@<revision>], "
    "hf://datasets/<org>/<name>@<revision>/<path/in/repo>, hf://<org>/<model>[@<revision>]";

static char *strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static bool starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* ---- options ---- */

qc_hf_opts qc_hf_opts_default(void) {
    qc_hf_opts o;
    memset(&o, 0, sizeof o);
    o.offline = -1;
    return o;
}

typedef struct hf_ctx {
    char          *endpoint; /* no trailing '/' */
    char          *token;    /* NULL: none */
    char          *cache;
    bool           offline;
    int            max_retries;
    double         backoff_s;
    qc_progress_fn progress;
    void          *user;
    qc_hf_http    *http;     /* created on first use */
} hf_ctx;

/* huggingface_hub's _is_true */
static bool env_true(const char *name) {
    const char *v = getenv(name);
    return v && (!strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true"));
}

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* "~" or "~/x" -> $HOME/x */
static char *expand_home(const char *p) {
    if (p[0] == '~' && (p[1] == '/' || p[1] == '\0')) {
        const char *home = env_nonempty("HOME");
        if (!home) return NULL;
        return strfmt("%s%s", home, p + 1);
    }
    return qc_strdup(p);
}

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface */
static char *hf_home(void) {
    const char *v = env_nonempty("HF_HOME");
    if (v) return expand_home(v);
    v = env_nonempty("XDG_CACHE_HOME");
    if (v) return strfmt("%s/huggingface", v);
    return expand_home("~/.cache/huggingface");
}

static char *trim_dup(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    return qc_strndup(s, n);
}

/* opts->token, $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, then the file `huggingface-cli login` writes
 * ($HF_TOKEN_PATH or $HF_HOME/token), as huggingface_hub does. */
static qc_status find_token(const qc_hf_opts *o, char **out) {
    *out = NULL;
    const char *t = o && o->token ? o->token : env_nonempty("HF_TOKEN");
    if (!t) t = env_nonempty("HUGGING_FACE_HUB_TOKEN");
    char *tok = NULL;
    if (t) {
        tok = trim_dup(t);
    } else {
        char *file = env_nonempty("HF_TOKEN_PATH") ? expand_home(getenv("HF_TOKEN_PATH")) : NULL;
        if (!file) {
            char *home = hf_home();
            file = home ? qc_path_join(home, "token") : NULL;
            free(home);
        }
        char *buf = NULL;
        size_t len;
        if (file && qc_file_exists(file) && qc_read_file(file, 4096, &buf, &len) == QC_OK) tok = trim_dup(buf);
        qc_error_clear();
        free(buf);
        free(file);
        if (!tok) return QC_OK;
    }
    if (!tok) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (const char *p = tok; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            free(tok);
            return qc_fail(QC_ERR_ARG, "HF_TOKEN holds a control character (a stray newline?)");
        }
    if (!*tok) {
        free(tok);
        tok = NULL;
    }
    *out = tok;
    return QC_OK;
}

static qc_status find_cache(const qc_hf_opts *o, char **out) {
    const char *v = o && o->cache_dir ? o->cache_dir : env_nonempty("HF_HUB_CACHE");
    if (!v) v = env_nonempty("HUGGINGFACE_HUB_CACHE");
    char *c;
    if (v) {
        c = expand_home(v);
    } else {
        char *home = hf_home();
        c = home ? qc_path_join(home, "hub") : NULL;
        free(home);
    }
    if (!c) return qc_fail(QC_ERR_ARG, "cannot locate the hub cache: set HF_HOME or HF_HUB_CACHE");
    *out = c;
    return QC_OK;
}

static void ctx_free(hf_ctx *c) {
    free(c->endpoint);
    free(c->token);
    free(c->cache);
    qc_hf_http_free(c->http);
    memset(c, 0, sizeof *c);
}

static qc_status ctx_init(hf_ctx *c, const qc_hf_opts *o) {
    memset(c, 0, sizeof *c);
    const char *ep = o && o->endpoint ? o->endpoint : env_nonempty("HF_ENDPOINT");
    if (!ep) ep = HF_DEFAULT_ENDPOINT;
    if (!starts_with(ep, "http://") && !starts_with(ep, "https://"))
        return qc_fail(QC_ERR_ARG, "hub endpoint '%s' (HF_ENDPOINT) is not an http:// or https:// URL", ep);
    size_t n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/') n--;
    c->endpoint = qc_strndup(ep, n);
    if (!c->endpoint) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = find_token(o, &c->token);
    if (st == QC_OK) st = find_cache(o, &c->cache);
    if (st) {
        ctx_free(c);
        return st;
    }
    int off = o ? o->offline : -1;
    c->offline = off < 0 ? (env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE")) : off != 0;
    c->max_retries = !o || o->max_retries == 0 ? 5 : o->max_retries < 0 ? 0 : o->max_retries;
    c->backoff_s = o && o->backoff_s > 0 ? o->backoff_s : 1.0;
    c->progress = o ? o->progress : NULL;
    c->user = o ? o->user : NULL;
    return QC_OK;
}

static qc_status ctx_http(hf_ctx *c, qc_hf_http **h) {
    if (!c->http) {
        qc_status st = qc_hf_http_create(c->endpoint, c->token, c->max_retries, c->backoff_s, &c->http);
        if (st) return st;
    }
    *h = c->http;
    return QC_OK;
}

/* ---- names ---- */

/* One half of a repo id: huggingface_hub's validate_repo_id ([\w.-], starting and ending with a word
 * character, no "--" or ".."). */
static bool valid_repo_part(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool word = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
        if (!word && ch != '-' && ch != '.') return false;
        if ((i == 0 || i == n - 1) && !word) return false;
        if (i > 0 && (ch == '-' || ch == '.') && s[i - 1] == ch) return false;
    }
    return true;
}

static bool valid_repo_id(const char *id) {
    const char *slash = strchr(id, '/');
    size_t n = strlen(id);
    if (!slash || n > HF_REPO_ID_MAX || strchr(slash + 1, '/')) return false;
    if (n >= 4 && strcmp(id + n - 4, ".git") == 0) return false;
    return valid_repo_part(id, (size_t)(slash - id)) && valid_repo_part(slash + 1, strlen(slash + 1));
}

/* '/'-separated, relative, no empty / "." / ".." component, no control characters. */
static bool valid_rel_path(const char *p, size_t maxlen) {
    size_t n = strlen(p);
    if (n == 0 || n > maxlen || p[0] == '/') return false;
    for (const char *c = p;;) {
        size_t k = strcspn(c, "/");
        if (k == 0 || (k == 1 && c[0] == '.') || (k == 2 && c[0] == '.' && c[1] == '.')) return false;
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f) return false;
        if (!c[k]) return true;
        c += k + 1;
    }
}

/* A git revision: a path-like ref name ("main", "v1.0", "refs/pr/1") or a commit hash. */
static bool valid_revision(const char *r) {
    if (!valid_rel_path(r, 255)) return false;
    for (const char *c = r; *c; c++)
        if (strchr(" ~^:?*[\\", *c)) return false;
    return true;
}

/* A single file name made of the characters commits and etags use (hex for the hub). */
static bool valid_token(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255 || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("._-+=", ch)))
            return false;
    }
    return true;
}

static bool is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

static bool is_commit_hash(const char *s) {
    if (!is_hex(s, 40)) return false;
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F') return false; /* huggingface_hub: ^[0-9a-f]{40}$ */
    return true;
}

/* ---- references ---- */

bool qc_hf_is_ref(const char *s) { return s && strncmp(s, "hf://", 5) == 0; }

void qc_hf_ref_free(qc_hf_ref *r) {
    if (!r) return;
    free(r->repo_id);
    free(r->revision);
    free(r->path);
    memset(r, 0, sizeof *r);
}

static qc_status bad_ref(const char *ref, const char *why) {
    return qc_fail(QC_ERR_ARG, "malformed reference '%s': %s; %s", ref, why, k_forms);
}

/* End of a revision that follows "name@" and precedes "/path": the next '/', or the third one for
 * refs/pr/<n> and refs/convert/<x> (as huggingface_hub's HfFileSystem reads them). */
static const char *revision_end(const char *rev) {
    int skip = starts_with(rev, "refs/pr/") || starts_with(rev, "refs/convert/") ? 2 : 0;
    const char *p = rev;
    for (;;) {
        p += strcspn(p, "/");
        if (!*p || skip-- == 0) return p;
        p++;
    }
}

qc_status qc_hf_parse_ref(const char *ref, qc_hf_ref *out) {
    memset(out, 0, sizeof *out);
    if (!ref) return qc_fail(QC_ERR_ARG, "no reference given; %s", k_forms);
    if (!qc_hf_is_ref(ref)) return bad_ref(ref, "it does not start with hf://");
    const char *r = ref + 5;
    const char *org = r, *org_end, *name, *name_end, *rev = NULL, *rev_end = NULL, *path = NULL, *path_end = NULL;
    if (starts_with(r, "datasets/")) {
        out->type = QC_HF_DATASET;
        org = r + 9;
        org_end = strchr(org, '/');
        if (!org_end) return bad_ref(ref, "no dataset name after the organisation");
        name = org_end + 1;
        name_end = name + strcspn(name, "/@");
        if (*name_end == '@') {
            rev = name_end + 1;
            rev_end = revision_end(rev);
            if (*rev_end != '/') return bad_ref(ref, "no file path after the revision");
            path = rev_end + 1;
            path_end = path + strlen(path);
        } else if (*name_end == '/') {
            path = name_end + 1;
            path_end = strrchr(path, '@');
            if (path_end) {
                rev = path_end + 1;
                rev_end = rev + strlen(rev);
            } else {
                path_end = path + strlen(path);
            }
        } else {
            return bad_ref(ref, "a dataset reference names a file inside the repo");
        }
    } else if (starts_with(r, "spaces/")) {
        return bad_ref(ref, "Spaces are not supported");
    } else {
        out->type = QC_HF_MODEL;
        org_end = strchr(org, '/');
        if (!org_end) return bad_ref(ref, "no model name after the organisation");
        name = org_end + 1;
        name_end = name + strcspn(name, "/@");
        if (*name_end == '/') return bad_ref(ref, "a model reference names a whole repo, not a file inside it");
        if (*name_end == '@') {
            rev = name_end + 1;
            rev_end = rev + strlen(rev);
        }
    }
    if (!valid_repo_part(org, (size_t)(org_end - org)) || !valid_repo_part(name, (size_t)(name_end - name)) ||
        (size_t)(name_end - org) > HF_REPO_ID_MAX)
        return bad_ref(ref, "the repo id must be <org>/<name> made of letters, digits, '-', '_' and '.' "
                            "(no '--' or '..', at most 96 characters)");
    if (name_end - name >= 4 && strncmp(name_end - 4, ".git", 4) == 0)
        return bad_ref(ref, "the repo name must not end in .git");
    out->repo_id = qc_strndup(org, (size_t)(name_end - org));
    out->revision = rev ? qc_strndup(rev, (size_t)(rev_end - rev)) : qc_strdup("main");
    out->path = path ? qc_strndup(path, (size_t)(path_end - path)) : NULL;
    if (!out->repo_id || !out->revision || (path && !out->path)) {
        qc_hf_ref_free(out);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    const char *why = NULL;
    if (rev && !valid_revision(out->revision))
        why = "the revision after '@' is empty or not a valid git revision";
    else if (path && !valid_rel_path(out->path, 4096))
        why = "the file path must be relative, without empty, '.' or '..' components";
    if (why) {
        qc_hf_ref_free(out);
        return bad_ref(ref, why);
    }
    return QC_OK;
}

/* ---- cache layout ---- */

/* "datasets--<org>--<name>" / "models--<org>--<name>" (repo_id already validated: one '/') */
static char *repo_folder(qc_hf_repo_type t, const char *repo_id) {
    const char *slash = strchr(repo_id, '/');
    QC_ASSERT(slash);
    return strfmt("%s--%.*s--%s", t == QC_HF_DATASET ? "datasets" : "models", (int)(slash - repo_id), repo_id,
                  slash + 1);
}

static const char *kind_name(qc_hf_repo_type t) { return t == QC_HF_DATASET ? "dataset" : "model"; }

/* mkdir -p of path (only_parent: of its directory) */
static qc_status mkdirs(const char *path, bool only_parent) {
    char *p = qc_strdup(path);
    if (!p) return qc_fail(QC_ERR_NOMEM, "out of memory");
    if (only_parent) {
        char *slash = strrchr(p, '/');
        if (!slash) {
            free(p);
            return QC_OK;
        }
        *slash = '\0';
    }
    for (char *s = p + 1;; s++) {
        char ch = *s;
        if (ch == '/' || ch == '\0') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                qc_status st = qc_fail(QC_ERR_IO, "cannot create directory %s: %s", p, strerror(errno));
                free(p);
                return st;
            }
            *s = ch;
            if (!ch) break;
        }
    }
    if (!qc_dir_exists(p)) {
        qc_status st = qc_fail(QC_ERR_IO, "%s exists and is not a directory", p);
        free(p);
        return st;
    }
    free(p);
    return QC_OK;
}

/* Cache probes run while a message may be waiting to be reported: they keep it. */
typedef struct saved_error {
    char msg[2048];
} saved_error;

static void error_save(saved_error *e) { snprintf(e->msg, sizeof e->msg, "%s", qc_last_error()); }
static void error_restore(const saved_error *e) {
    if (e->msg[0]) (void)qc_fail(QC_OK, "%s", e->msg);
    else qc_error_clear();
}

/* The commit a revision points to in the cache (refs/<revision>), or the revision itself if it is a
 * commit hash; NULL if unknown. */
static char *cached_commit(const char *storage, const char *revision) {
    if (is_commit_hash(revision)) return qc_strdup(revision);
    saved_error se;
    error_save(&se);
    char *ref = strfmt("%s/refs/%s", storage, revision);
    char *buf = NULL, *commit = NULL;
    size_t len;
    if (ref && qc_file_exists(ref) && qc_read_file(ref, 256, &buf, &len) == QC_OK) {
        commit = trim_dup(buf);
        if (commit && !valid_token(commit)) {
            free(commit);
            commit = NULL;
        }
    }
    error_restore(&se);
    free(buf);
    free(ref);
    return commit;
}

/* snapshots/<commit>/<path> for revision if the cache has it (the blob behind the link included). */
static char *cached_file(const char *storage, const char *revision, const char *path) {
    char *commit = cached_commit(storage, revision);
    if (!commit) return NULL;
    char *p = strfmt("%s/snapshots/%s/%s", storage, commit, path);
    free(commit);
    if (p && !qc_file_exists(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

static qc_status write_ref(const char *storage, const char *revision, const char *commit) {
    char *ref = strfmt("%s/refs/%s", storage, revision);
    if (!ref) return qc_fail(QC_ERR_NOMEM, "out of memory");
    char *old = cached_commit(storage, revision);
    qc_status st = QC_OK;
    if (!old || strcmp(old, commit) != 0) {
        st = mkdirs(ref, true);
        if (st == QC_OK) st = qc_write_file_atomic(ref, commit, strlen(commit));
    }
    free(old);
    free(ref);
    return st;
}

/* snapshots/<commit>/<path> -> ../../blobs/<etag> (one more ../ per directory in path), made under a
 * temporary name and renamed over whatever was there. */
static qc_status link_pointer(const char *storage, const char *commit, const char *path, const char *etag,
                              char **pointer_out) {
    *pointer_out = NULL;
    char *pointer = strfmt("%s/snapshots/%s/%s", storage, commit, path);
    if (!pointer) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_status st = mkdirs(pointer, true);
    if (st) {
        free(pointer);
        return st;
    }
    size_t depth = 0;
    for (const char *c = path; *c; c++) depth += *c == '/';
    size_t tn = 6 + 3 * depth + 6 + strlen(etag) + 1;
    char *target = malloc(tn);
    char *tmp = strfmt("%s.qcal-link-%ld.tmp", pointer, (long)getpid());
    if (!target || !tmp) {
        free(pointer);
        free(target);
        free(tmp);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    char *t = target;
    memcpy(t, "../../", 6);
    t += 6;
    for (size_t i = 0; i < depth; i++, t += 3) memcpy(t, "../", 3);
    snprintf(t, tn - (size_t)(t - target), "blobs/%s", etag);

    char cur[4096];
    ssize_t cl = readlink(pointer, cur, sizeof cur - 1);
    if (cl >= 0) cur[cl] = '\0';
    if (cl < 0 || strcmp(cur, target) != 0) {
        unlink(tmp);
        if (symlink(target, tmp) != 0) st = qc_fail(QC_ERR_IO, "cannot create symlink %s: %s", tmp, strerror(errno));
        else if (rename(tmp, pointer) != 0) {
            st = qc_fail(QC_ERR_IO, "cannot rename %s to %s: %s", tmp, pointer, strerror(errno));
            unlink(tmp);
        }
    }
    free(target);
    free(tmp);
    if (st == QC_OK && !qc_file_exists(pointer))
        st = qc_fail(QC_ERR_IO, "%s: the symlink does not lead to its blob", pointer);
    if (st) free(pointer);
    else *pointer_out = pointer;
    return st;
}

/* ---- URLs ---- */

/* Python's urllib.parse.quote: keeps letters, digits, "_.-~" (and '/' when keep_slash). */
static char *quote(const char *s, bool keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    char *o = malloc(3 * strlen(s) + 1), *p = o;
    if (!o) return NULL;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("_.-~", *c) ||
            (keep_slash && *c == '/')) {
            *p++ = (char)*c;
        } else {
            *p++ = '%';
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 15];
        }
    }
    *p = '\0';
    return o;
}

/* {endpoint}/{datasets/}{repo_id}/resolve/{quote(revision, safe="")}/{quote(path)} */
static char *resolve_url(const hf_ctx *c, qc_hf_repo_type t, const char *repo_id, const char *revision,
                         const char *path) {
    char *qr = quote(revision, false), *qp = quote(path, true), *u = NULL;
    if (qr && qp) u = strfmt("%s/%s%s/resolve/%s/%s", c->endpoint, t == QC_HF_DATASET ? "datasets/" : "", repo_id, qr, qp);
    free(qr);
    free(qp);
    return u;
}

/* The hub's answer as a message that names the repo, file and revision. path may be NULL. */
static qc_status http_error(const hf_ctx *c, const qc_hf_reply *rep, qc_hf_repo_type t, const char *repo_id,
                            const char *revision, const char *path) {
    const char *kind = kind_name(t), *code = rep->error_code ? rep->error_code : "";
    const char *msg = rep->error_message ? rep->error_message : "";
    const char *sep = *msg ? ": " : "";
    long st = rep->status;
    char what[1024];
    if (path) snprintf(what, sizeof what, "'%s' in %s %s at revision '%s'", path, kind, repo_id, revision);
    else snprintf(what, sizeof what, "%s %s at revision '%s'", kind, repo_id, revision);
    if (st == 401 || st == 403)
        return qc_fail(QC_ERR_NET, "access denied to %s (HTTP %ld%s%s): set HF_TOKEN (gated or private repo)%s", what,
                       st, sep, msg, c->token ? "; the token sent was refused or has no access to this repo" : "");
    if (st == 404) {
        if (!strcmp(code, "RevisionNotFound"))
            return qc_fail(QC_ERR_NET, "not found: revision '%s' of %s %s (HTTP 404%s%s)", revision, kind, repo_id, sep, msg);
        if (!strcmp(code, "RepoNotFound"))
            return qc_fail(QC_ERR_NET, "not found: %s %s (HTTP 404%s%s); a private repo also needs HF_TOKEN", kind,
                           repo_id, sep, msg);
        return qc_fail(QC_ERR_NET, "not found: %s (HTTP 404%s%s)", what, sep, msg);
    }
    return qc_fail(QC_ERR_NET, "%s: HTTP %ld from %s%s%s", what, st, rep->url ? rep->url : c->endpoint, sep, msg);
}

/* Answers after which huggingface_hub still serves a cached copy: the hub is down or refuses us.
 * A 404 is an answer about the repo and is reported. */
static bool fallback_status(long st) { return st == 401 || st == 403 || st == 408 || st == 429 || st >= 500; }

/* ---- one file ---- */

static qc_status hash_prefix(int fd, int64_t n, qc_sha256 *sha) {
    char buf[1 << 16];
    int64_t off = 0;
    while (off < n) {
        size_t want = (size_t)(n - off < (int64_t)sizeof buf ? n - off : (int64_t)sizeof buf);
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return QC_ERR_IO;
        qc_sha256_update(sha, buf, (size_t)r);
        off += r;
    }
    return QC_OK;
}

/* Downloads url into blob (via blob.incomplete, resumed if present), verifies size and LFS sha256. */
static qc_status fetch_blob(hf_ctx *c, const char *url, const char *blob, const char *etag, int64_t size,
                            const char *what) {
    qc_hf_http *h;
    qc_status st = ctx_http(c, &h);
    if (st) return st;
    char *inc = strfmt("%s.incomplete", blob);
    if (!inc) return qc_fail(QC_ERR_NOMEM, "out of memory");
    int fd = open(inc, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = qc_fail(QC_ERR_IO, "cannot create %s: %s", inc, strerror(errno));
        free(inc);
        return st;
    }
    struct stat sb;
    int64_t have = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : 0;
    qc_sha256 sha;
    qc_sha256_init(&sha);
    if (have > 0 && ((size >= 0 && have > size) || hash_prefix(fd, have, &sha) != QC_OK)) {
        if (ftruncate(fd, 0) != 0) {
            st = qc_fail(QC_ERR_IO, "%s: cannot truncate: %s", inc, strerror(errno));
            goto done;
        }
        have = 0;
        qc_sha256_init(&sha);
    }
    if (have > 0) QC_LOGI("%s: resuming at byte %lld of %lld", what, (long long)have, (long long)size);
    qc_hf_sink k = {.fd = fd, .path = inc, .offset = have, .expected = size, .sha = &sha,
                    .progress = c->progress, .user = c->user, .what = what};
    if (k.progress && !k.progress(k.user, have, size, what)) {
        st = qc_fail(QC_ERR_CANCELLED, "%s: download cancelled", what);
        goto done;
    }
    if (!(have > 0 && have == size)) {
        qc_hf_reply rep = {0};
        st = qc_hf_http_get_file(h, url, qc_hf_same_origin(url, c->endpoint), &k, &rep);
        if (st == QC_OK && (rep.status < 200 || rep.status >= 300))
            st = qc_fail(QC_ERR_NET, "%s: HTTP %ld while downloading from %s%s%s", what, rep.status, url,
                         rep.error_message ? ": " : "", rep.error_message ? rep.error_message : "");
        qc_hf_reply_clear(&rep);
        if (st) {
            if (k.discard) unlink(inc);
            goto done;
        }
    }
    if (size >= 0 && k.offset != size) {
        unlink(inc);
        st = qc_fail(QC_ERR_NET, "%s: downloaded %lld bytes, expected %lld; the partial file was removed, run again",
                     what, (long long)k.offset, (long long)size);
        goto done;
    }
    char hex[65];
    qc_sha256_hex(&sha, hex);
    if (is_hex(etag, 64) && strcasecmp(hex, etag) != 0) {
        unlink(inc);
        st = qc_fail(QC_ERR_NET, "%s: downloaded data fails verification: sha256 %s, expected %s (the LFS etag; %lld "
                     "bytes from %s); the partial file was removed, run again to download it afresh",
                     what, hex, etag, (long long)k.offset, url);
        goto done;
    }
    if (fsync(fd) != 0) {
        st = qc_fail(QC_ERR_IO, "%s: fsync failed: %s", inc, strerror(errno));
        goto done;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0) st = qc_fail(QC_ERR_IO, "%s: close failed: %s", inc, strerror(errno));
    else if (rename(inc, blob) != 0) st = qc_fail(QC_ERR_IO, "cannot rename %s to %s: %s", inc, blob, strerror(errno));
done:
    if (fd >= 0) close(fd);
    free(inc);
    return st;
}

/* Serialises downloads of one blob with other qcal and huggingface_hub processes: the same lock file
 * (<cache>/.locks/<repo folder>/<etag>.lock, flock) that huggingface_hub's filelock takes. */
static int lock_blob(const hf_ctx *c, const char *folder, const char *etag) {
    char *lp = strfmt("%s/.locks/%s/%s.lock", c->cache, folder, etag);
    int fd = -1;
    if (lp && mkdirs(lp, true) == QC_OK) {
        fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        while (fd >= 0 && flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
    }
    qc_error_clear();
    free(lp);
    return fd; /* -1: go on without the lock (read-only .locks, ...) */
}

typedef struct file_job {
    qc_hf_repo_type type;
    const char     *repo_id, *revision, *path;
    char           *storage, *folder;
} file_job;

static qc_status download_one(hf_ctx *c, const file_job *j, char **local) {
    *local = NULL;
    const char *kind = kind_name(j->type);
    /* a pinned commit that is already here needs no network (as in huggingface_hub) */
    if (is_commit_hash(j->revision) && (*local = cached_file(j->storage, j->revision, j->path))) return QC_OK;
    if (c->offline) {
        if ((*local = cached_file(j->storage, j->revision, j->path))) return QC_OK;
        return qc_fail(QC_ERR_NET, "'%s' of %s %s at revision '%s' is not in the cache (%s) and offline mode is on "
                       "(HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to download it", j->path, kind, j->repo_id,
                       j->revision, j->storage);
    }
    qc_hf_http *h;
    qc_status st = ctx_http(c, &h);
    if (st) return st;
    char *url = resolve_url(c, j->type, j->repo_id, j->revision, j->path);
    if (!url) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_hf_reply rep = {0};
    char *blob = NULL, *pointer = NULL;
    st = qc_hf_http_head(h, url, &rep);
    if (st == QC_OK && rep.status != 200 && !(rep.status >= 300 && rep.status < 400))
        st = http_error(c, &rep, j->type, j->repo_id, j->revision, j->path);
    if (st != QC_OK && (rep.status == 0 || fallback_status(rep.status)) && st != QC_ERR_NOMEM) {
        char *p = cached_file(j->storage, j->revision, j->path);
        if (p) {
            qc_log(QC_LOG_WARN, "%s; using the cached copy %s", qc_last_error(), p);
            qc_error_clear();
            *local = p;
            st = QC_OK;
            goto done;
        }
    }
    if (st) goto done;
    const char *commit = rep.repo_commit, *etag = rep.etag;
    if (!commit || !etag) {
        st = qc_fail(QC_ERR_NET, "%s: the answer has no %s header; is %s a Hugging Face hub? (check HF_ENDPOINT and "
                     "proxy settings)", url, commit ? "ETag" : "X-Repo-Commit", c->endpoint);
        goto done;
    }
    if (!valid_token(commit) || !valid_token(etag)) {
        st = qc_fail(QC_ERR_NET, "%s: unusable X-Repo-Commit '%s' or ETag '%s'", url, commit, etag);
        goto done;
    }
    if (rep.status >= 300 && !rep.location) {
        st = qc_fail(QC_ERR_NET, "%s: HTTP %ld redirect without a Location", url, rep.status);
        goto done;
    }
    if (strcmp(j->revision, commit) != 0 && (st = write_ref(j->storage, j->revision, commit))) goto done;
    pointer = strfmt("%s/snapshots/%s/%s", j->storage, commit, j->path);
    blob = strfmt("%s/blobs/%s", j->storage, etag);
    if (!pointer || !blob) {
        st = qc_fail(QC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (qc_file_exists(pointer)) {
        *local = pointer;
        pointer = NULL;
        goto done;
    }
    if (!qc_file_exists(blob)) {
        if ((st = mkdirs(blob, true))) goto done;
        int lock = lock_blob(c, j->folder, etag);
        if (!qc_file_exists(blob)) /* another process may have finished it while we waited */
            st = fetch_blob(c, rep.status >= 300 ? rep.location : rep.url, blob, etag, rep.size, j->path);
        if (lock >= 0) close(lock);
        if (st) goto done;
    }
    st = link_pointer(j->storage, commit, j->path, etag, local);
done:
    qc_hf_reply_clear(&rep);
    free(url);
    free(blob);
    free(pointer);
    return st;
}

static qc_status job_init(const hf_ctx *c, file_job *j, qc_hf_repo_type type, const char *repo_id,
                          const char *revision, const char *path) {
    memset(j, 0, sizeof *j);
    if (!repo_id || !valid_repo_id(repo_id))
        return qc_fail(QC_ERR_ARG, "invalid repo id '%s': expected <org>/<name> made of letters, digits, '-', '_' "
                       "and '.'", repo_id ? repo_id : "(null)");
    if (!revision) revision = "main";
    if (!valid_revision(revision)) return qc_fail(QC_ERR_ARG, "invalid revision '%s' for %s", revision, repo_id);
    if (path && !valid_rel_path(path, 4096))
        return qc_fail(QC_ERR_ARG, "invalid path '%s' in %s: it must be relative, without empty, '.' or '..' "
                       "components", path, repo_id);
    j->type = type;
    j->repo_id = repo_id;
    j->revision = revision;
    j->path = path;
    j->folder = repo_folder(type, repo_id);
    j->storage = j->folder ? qc_path_join(c->cache, j->folder) : NULL;
    if (!j->storage) {
        free(j->folder);
        return qc_fail(QC_ERR_NOMEM, "out of memory");
    }
    return QC_OK;
}

static void job_free(file_job *j) {
    free(j->storage);
    free(j->folder);
}

qc_status qc_hf_download_file(qc_hf_repo_type type, const char *repo_id, const char *revision, const char *path,
                              const qc_hf_opts *opts, char **local_path) {
    *local_path = NULL;
    if (!path) return qc_fail(QC_ERR_ARG, "qc_hf_download_file: no path given");
    hf_ctx c;
    qc_status st = ctx_init(&c, opts);
    if (st) return st;
    file_job j;
    st = job_init(&c, &j, type, repo_id, revision, path);
    if (st == QC_OK) {
        st = download_one(&c, &j, local_path);
        job_free(&j);
    }
    ctx_free(&c);
    return st;
}

/* ---- models ---- */

static const char *const k_model_extras[] = {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                             "special_tokens_map.json", "tokenizer.model"};
#define INDEX_NAME "model.safetensors.index.json"

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

typedef struct name_list {
    char  **v;
    size_t  n, cap;
} name_list;

static bool list_has(const name_list *l, const char *s) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return true;
    return false;
}

static qc_status list_add(name_list *l, const char *s) {
    if (list_has(l, s)) return QC_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return qc_fail(QC_ERR_NOMEM, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = qc_strdup(s))) return qc_fail(QC_ERR_NOMEM, "out of memory");
    l->n++;
    return QC_OK;
}

static void list_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* The distinct shard file names of an index's weight_map, each a plain file name. */
static qc_status index_shards(const char *index_path, name_list *shards) {
    char *buf;
    size_t len;
    qc_status st = qc_read_file(index_path, HF_API_MAX, &buf, &len);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return qc_fail(QC_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        const char *f = cJSON_GetStringValue(e);
        if (!f || !valid_rel_path(f, 255) || strchr(f, '/')) {
            st = qc_fail(QC_ERR_FORMAT, "%s: tensor '%s' maps to '%s', not a plain file name", index_path,
                         e->string ? e->string : "?", f ? f : "(not a string)");
            break;
        }
        if ((st = list_add(shards, f))) break;
    }
    cJSON_Delete(root);
    return st;
}

/* A snapshot directory that holds config.json and a full set of weights. */
static bool snapshot_complete(const char *dir) {
    saved_error se;
    error_save(&se);
    char *p = qc_path_join(dir, "config.json");
    bool ok = p && qc_file_exists(p);
    free(p);
    if (!ok) return false;
    p = qc_path_join(dir, INDEX_NAME);
    if (p && qc_file_exists(p)) {
        name_list shards = {0};
        ok = index_shards(p, &shards) == QC_OK && shards.n > 0;
        for (size_t i = 0; ok && i < shards.n; i++) {
            char *s = qc_path_join(dir, shards.v[i]);
            ok = s && qc_file_exists(s);
            free(s);
        }
        list_free(&shards);
        free(p);
        error_restore(&se);
        return ok;
    }
    free(p);
    ok = false;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && !ok && (e = readdir(d));) {
        if (!has_suffix(e->d_name, ".safetensors")) continue;
        char *s = qc_path_join(dir, e->d_name);
        ok = s && qc_file_exists(s);
        free(s);
    }
    if (d) closedir(d);
    return ok;
}

static char *cached_snapshot(const char *storage, const char *revision) {
    char *commit = cached_commit(storage, revision);
    char *dir = commit ? strfmt("%s/snapshots/%s", storage, commit) : NULL;
    free(commit);
    if (dir && !snapshot_complete(dir)) {
        free(dir);
        dir = NULL;
    }
    return dir;
}

/* The files to fetch from the repo listing (the index is fetched first, to learn its shards). */
static qc_status pick_files(hf_ctx *c, const file_job *base, const char *commit, const name_list *listed,
                            name_list *want) {
    if (!list_has(listed, "config.json"))
        return qc_fail(QC_ERR_UNSUPPORTED, "model %s at revision '%s' has no config.json", base->repo_id, base->revision);
    qc_status st = list_add(want, "config.json");
    for (size_t i = 0; st == QC_OK && i < sizeof k_model_extras / sizeof *k_model_extras; i++)
        if (list_has(listed, k_model_extras[i])) st = list_add(want, k_model_extras[i]);
    if (st) return st;
    if (list_has(listed, INDEX_NAME)) {
        file_job j = *base;
        j.revision = commit;
        j.path = INDEX_NAME;
        char *local;
        if ((st = download_one(c, &j, &local))) return st;
        name_list shards = {0};
        st = index_shards(local, &shards);
        free(local);
        for (size_t i = 0; st == QC_OK && i < shards.n; i++) {
            if (!list_has(listed, shards.v[i]))
                st = qc_fail(QC_ERR_FORMAT, "model %s: %s names shard '%s', which the repo does not have",
                             base->repo_id, INDEX_NAME, shards.v[i]);
            else st = list_add(want, shards.v[i]);
        }
        list_free(&shards);
        return st ? st : list_add(want, INDEX_NAME);
    }
    if (list_has(listed, "model.safetensors")) return list_add(want, "model.safetensors");
    size_t before = want->n;
    for (size_t i = 0; st == QC_OK && i < listed->n; i++)
        if (!strchr(listed->v[i], '/') && has_suffix(listed->v[i], ".safetensors")) st = list_add(want, listed->v[i]);
    if (st == QC_OK && want->n == before)
        st = qc_fail(QC_ERR_UNSUPPORTED, "model %s at revision '%s' has no *.safetensors weights (qcal reads "
                     "safetensors only; convert .bin checkpoints first)", base->repo_id, base->revision);
    return st;
}

static qc_status download_model(hf_ctx *c, const file_job *j, char **out) {
    *out = NULL;
    if (c->offline) {
        if ((*out = cached_snapshot(j->storage, j->revision))) return QC_OK;
        return qc_fail(QC_ERR_NET, "model %s at revision '%s' is not in the cache (%s) and offline mode is on "
                       "(HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to download it", j->repo_id, j->revision, j->storage);
    }
    qc_hf_http *h;
    qc_status st = ctx_http(c, &h);
    if (st) return st;
    char *qr = quote(j->revision, false);
    char *url = qr ? strfmt("%s/api/models/%s/revision/%s", c->endpoint, j->repo_id, qr) : NULL;
    free(qr);
    if (!url) return qc_fail(QC_ERR_NOMEM, "out of memory");
    qc_hf_reply rep = {0};
    char *body = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    name_list listed = {0}, want = {0};
    st = qc_hf_http_get(h, url, HF_API_MAX, &body, &len, &rep);
    if (st == QC_OK && rep.status != 200) st = http_error(c, &rep, QC_HF_MODEL, j->repo_id, j->revision, NULL);
    if (st != QC_OK && (rep.status == 0 || fallback_status(rep.status)) && st != QC_ERR_NOMEM) {
        char *dir = cached_snapshot(j->storage, j->revision);
        if (dir) {
            qc_log(QC_LOG_WARN, "%s; using the cached snapshot %s", qc_last_error(), dir);
            qc_error_clear();
            *out = dir;
            st = QC_OK;
            goto done;
        }
    }
    if (st) goto done;
    root = cJSON_ParseWithLength(body, len);
    const char *commit = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "sha"));
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(root, "siblings");
    if (!commit || !valid_token(commit) || !cJSON_IsArray(sib)) {
        st = qc_fail(QC_ERR_FORMAT, "%s: the answer is not a model listing (no \"sha\" or \"siblings\")", url);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, sib) {
        const char *f = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "rfilename"));
        if (!f) {
            st = qc_fail(QC_ERR_FORMAT, "%s: a sibling without \"rfilename\"", url);
            goto done;
        }
        if (valid_rel_path(f, 4096) && (st = list_add(&listed, f))) goto done;
    }
    if ((st = pick_files(c, j, commit, &listed, &want))) goto done;
    for (size_t i = 0; i < want.n; i++) {
        file_job f = *j;
        f.revision = commit;
        f.path = want.v[i];
        char *local;
        if ((st = download_one(c, &f, &local))) goto done;
        free(local);
    }
    if (strcmp(j->revision, commit) != 0 && (st = write_ref(j->storage, j->revision, commit))) goto done;
    if (!(*out = strfmt("%s/snapshots/%s", j->storage, commit))) st = qc_fail(QC_ERR_NOMEM, "out of memory");
done:
    list_free(&listed);
    list_free(&want);
    cJSON_Delete(root);
    free(body);
    qc_hf_reply_clear(&rep);
    free(url);
    return st;
}

qc_status qc_hf_download_model(const char *repo_id, const char *revision, const qc_hf_opts *opts,
                               char **snapshot_dir) {
    *snapshot_dir = NULL;
    hf_ctx c;
    qc_status st = ctx_init(&c, opts);
    if (st) return st;
    file_job j;
    st = job_init(&c, &j, QC_HF_MODEL, repo_id, revision, NULL);
    if (st == QC_OK) {
        st = download_model(&c, &j, snapshot_dir);
        job_free(&j);
    }
    ctx_free(&c);
    return st;
}

qc_status qc_hf_resolve(const char *ref, const qc_hf_opts *opts, char **local_path) {
    *local_path = NULL;
    qc_hf_ref r;
    qc_status st = qc_hf_parse_ref(ref, &r);
    if (st) return st;
    if (r.path) st = qc_hf_download_file(r.type, r.repo_id, r.revision, r.path, opts, local_path);
    else st = qc_hf_download_model(r.repo_id, r.revision, opts, local_path);
    if (st && st != QC_ERR_ARG) qc_error_prefix("%s", ref);
    qc_hf_ref_free(&r);
    return st;
}
