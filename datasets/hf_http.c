/* hf_http.c - libcurl requests for hf_hub.c: retries, the hub's headers, resumable downloads. */
#include "hf_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define HF_MAX_REDIRECTS 10
#define HF_ERRBODY_MAX   512

struct qc_hf_http {
    CURL  *curl;
    char  *endpoint;
    char  *auth;            /* "Authorization: Bearer <token>", or NULL */
    int    max_retries;
    double backoff_s;
    long   connect_timeout_s;
    long   read_timeout_s;
    char   errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode       g_curl_init_rc = CURLE_FAILED_INIT;
static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

void qc_hf_reply_clear(qc_hf_reply *r) {
    free(r->location);
    free(r->repo_commit);
    free(r->etag);
    free(r->error_code);
    free(r->error_message);
    free(r->url);
    memset(r, 0, sizeof *r);
    r->size = -1;
}

/* huggingface_hub's HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT, in seconds (default 10). */
static long env_seconds(const char *name, long dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= 1 && d <= 86400)) return dflt;
    return (long)d;
}

qc_status qc_hf_http_create(const char *endpoint, const char *token, int max_retries, double backoff_s,
                            qc_hf_http **out) {
    *out = NULL;
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return qc_fail(QC_ERR_NET, "libcurl initialisation failed: %s", curl_easy_strerror(g_curl_init_rc));
    qc_hf_http *h = calloc(1, sizeof *h);
    if (!h) return qc_fail(QC_ERR_NOMEM, "out of memory");
    h->curl = curl_easy_init();
    h->endpoint = qc_strdup(endpoint);
    if (token && *token) {
        size_t n = strlen(token) + sizeof "Authorization: Bearer ";
        h->auth = malloc(n);
        if (h->auth) snprintf(h->auth, n, "Authorization: Bearer %s", token);
    }
    if (!h->curl || !h->endpoint || (token && *token && !h->auth)) {
        qc_hf_http_free(h);
        return qc_fail(QC_ERR_NOMEM, "cannot create a libcurl handle");
    }
    h->max_retries = max_retries;
    h->backoff_s = backoff_s;
    h->connect_timeout_s = env_seconds("HF_HUB_ETAG_TIMEOUT", 10);
    h->read_timeout_s = env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10);
    *out = h;
    return QC_OK;
}

void qc_hf_http_free(qc_hf_http *h) {
    if (!h) return;
    if (h->curl) curl_easy_cleanup(h->curl);
    free(h->endpoint);
    free(h->auth);
    free(h);
}

/* Length of "scheme://host[:port]" at the start of url (0 if url has no scheme). */
static size_t origin_len(const char *url) {
    const char *p = strstr(url, "://");
    if (!p) return 0;
    p += 3;
    return (size_t)(p - url) + strcspn(p, "/?#");
}

bool qc_hf_same_origin(const char *a, const char *b) {
    size_t na = origin_len(a), nb = origin_len(b);
    return na > 0 && na == nb && strncasecmp(a, b, na) == 0;
}

/* ---- one request ---- */

typedef struct req_state {
    qc_hf_reply *rep;
    /* headers of the current response (reset at each status line: redirects, 100 Continue) */
    int64_t content_length, linked_size, range_start, range_total;
    char   *plain_etag, *linked_etag;
    double  retry_after;
    /* body: into a sink (download), into memory, or dropped */
    qc_hf_sink *sink;
    bool    want_mem;
    char   *mem;
    size_t  mem_len, mem_cap, mem_max;
    bool    mem_over;
    bool    body_started, bad_range, overflow, cancelled;
    int     write_errno;
} req_state;

static char *dup_trim(const char *v, size_t n) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    return qc_strndup(v, n);
}

static int64_t parse_i64(const char *s) {
    if (!s || !*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* ETag: W/"abc" or "abc" -> abc (huggingface_hub strips the quotes; the hub never sends W/). */
static char *normalize_etag(char *e) {
    if (!e) return NULL;
    char *p = e;
    if (p[0] == 'W' && p[1] == '/') p += 2;
    size_t n = strlen(p);
    while (n && p[n - 1] == '"') n--;
    while (n && *p == '"') p++, n--;
    memmove(e, p, n);
    e[n] = '\0';
    return e;
}

static void reset_headers(req_state *s) {
    qc_hf_reply *r = s->rep;
    free(r->location);
    free(r->repo_commit);
    free(r->error_code);
    free(r->error_message);
    r->location = r->repo_commit = r->error_code = r->error_message = NULL;
    free(s->plain_etag);
    free(s->linked_etag);
    s->plain_etag = s->linked_etag = NULL;
    s->content_length = s->linked_size = s->range_start = s->range_total = -1;
    s->retry_after = 0;
}

static void set_str(char **dst, char *v) {
    free(*dst);
    *dst = v;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud) {
    req_state *s = ud;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        reset_headers(s);
        const char *sp = memchr(buf, ' ', len);
        long code = 0;
        if (sp)
            for (sp++; sp < buf + len && *sp >= '0' && *sp <= '9' && code < 1000; sp++) code = code * 10 + (*sp - '0');
        s->rep->status = code;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t nl = (size_t)(colon - buf);
    char *v = dup_trim(colon + 1, len - nl - 1);
    if (!v) return 0;
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(buf, name, nl) == 0)
    if (IS("Location")) set_str(&s->rep->location, v);
    else if (IS("X-Repo-Commit")) set_str(&s->rep->repo_commit, v);
    else if (IS("ETag")) set_str(&s->plain_etag, normalize_etag(v));
    else if (IS("X-Linked-Etag")) set_str(&s->linked_etag, normalize_etag(v));
    else if (IS("X-Error-Code")) set_str(&s->rep->error_code, v);
    else if (IS("X-Error-Message")) set_str(&s->rep->error_message, v);
    else {
        if (IS("Content-Length")) s->content_length = parse_i64(v);
        else if (IS("X-Linked-Size")) s->linked_size = parse_i64(v);
        else if (IS("Retry-After")) s->retry_after = (double)parse_i64(v);
        else if (IS("Content-Range")) { /* bytes a-b/total, or bytes *\/total on a 416 */
            long long a, b, t;
            if (sscanf(v, "bytes %lld-%lld/%lld", &a, &b, &t) == 3 && a >= 0 && b >= a && t > b) {
                s->range_start = a;
                s->range_total = t;
            } else if (sscanf(v, "bytes */%lld", &t) == 1 && t >= 0) {
                s->range_total = t;
            }
        }
        free(v);
    }
#undef IS
    return len;
}

static size_t sink_write(req_state *s, const char *data, size_t len) {
    qc_hf_sink *k = s->sink;
    if (!s->body_started) {
        s->body_started = true;
        if (s->rep->status == 206) {
            if (s->range_start != k->offset) {
                s->bad_range = true;
                return 0;
            }
            if (k->expected < 0 && s->range_total >= 0) k->expected = s->range_total;
        } else { /* 200: the whole file, whatever we asked for: start over */
            if (k->offset > 0) {
                if (ftruncate(k->fd, 0) != 0) {
                    s->write_errno = errno;
                    return 0;
                }
                k->offset = 0;
                qc_sha256_init(k->sha);
            }
            if (k->expected < 0 && s->content_length >= 0) k->expected = s->content_length;
        }
    }
    if (k->expected >= 0 && (int64_t)len > k->expected - k->offset) {
        s->overflow = true;
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(k->fd, data + done, len - done, (off_t)(k->offset + (int64_t)done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s->write_errno = w < 0 ? errno : EIO;
            break;
        }
        done += (size_t)w;
    }
    qc_sha256_update(k->sha, data, done);
    k->offset += (int64_t)done;
    if (done < len) return 0;
    if (k->progress && !k->progress(k->user, k->offset, k->expected, k->what)) {
        s->cancelled = true;
        return 0;
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    req_state *s = ud;
    size_t len = size * nmemb;
    long st = s->rep->status;
    if (st < 200 || st >= 300) return len; /* an error page: the headers say what went wrong */
    if (s->sink) return sink_write(s, data, len);
    if (!s->want_mem) return len;
    if (len > s->mem_max - s->mem_len) {
        s->mem_over = true;
        return 0;
    }
    if (s->mem_len + len + 1 > s->mem_cap) {
        size_t cap = s->mem_cap ? s->mem_cap : 4096;
        while (cap < s->mem_len + len + 1) cap *= 2;
        char *m = realloc(s->mem, cap);
        if (!m) return 0;
        s->mem = m;
        s->mem_cap = cap;
    }
    memcpy(s->mem + s->mem_len, data, len);
    s->mem_len += len;
    s->mem[s->mem_len] = '\0';
    return len;
}

static CURLcode attempt(qc_hf_http *h, const char *url, bool head, bool follow, bool send_auth,
                        const char *range, req_state *s) {
    CURL *c = h->curl;
    curl_easy_reset(c); /* keeps live connections */
    h->errbuf[0] = '\0';
    qc_hf_reply_clear(s->rep);
    reset_headers(s);
    s->body_started = false;

    struct curl_slist *hdrs = NULL, *t;
#define ADD(x) do { if ((t = curl_slist_append(hdrs, (x))) == NULL) goto nomem; hdrs = t; } while (0)
    if (send_auth && h->auth) ADD(h->auth);
    if (head) ADD("Accept-Encoding: identity");
    if (range) ADD(range);
#undef ADD
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "qcal/" QC_VERSION);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, h->connect_timeout_s);
    /* a stalled transfer (under 1 byte/s for the read timeout) is a timeout, retried and resumed */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, h->read_timeout_s);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)HF_MAX_REDIRECTS);
    if (head) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);

    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);

    qc_hf_reply *r = s->rep;
    if (s->linked_etag) {
        r->etag = s->linked_etag;
        s->linked_etag = NULL;
    } else {
        r->etag = s->plain_etag;
        s->plain_etag = NULL;
    }
    free(s->plain_etag);
    free(s->linked_etag);
    s->plain_etag = s->linked_etag = NULL;
    r->size = s->linked_size >= 0 ? s->linked_size : s->content_length;
    return rc;
nomem:
    curl_slist_free_all(hdrs);
    return CURLE_OUT_OF_MEMORY;
}

static bool retriable_curl(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_OPERATION_TIMEDOUT: case CURLE_RECV_ERROR: case CURLE_SEND_ERROR: case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING: case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static bool retriable_status(long st) { return st == 408 || st == 429 || (st >= 500 && st <= 599); }

static const char *curl_msg(const qc_hf_http *h, CURLcode rc) {
    return h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
}

/* Where we tried to go, for "cannot reach ...": the endpoint, or the CDN's origin. */
static void target_name(const qc_hf_http *h, const char *url, char *buf, size_t n) {
    if (strncmp(url, h->endpoint, strlen(h->endpoint)) == 0) snprintf(buf, n, "%s", h->endpoint);
    else snprintf(buf, n, "%.*s", (int)origin_len(url), url);
}

static qc_status fail_unreachable(const qc_hf_http *h, const char *url, CURLcode rc) {
    char where[512];
    target_name(h, url, where, sizeof where);
    return qc_fail(QC_ERR_NET, "cannot reach %s: %s; set HF_HUB_OFFLINE=1 to use the cache only", where,
                   curl_msg(h, rc));
}

/* Sleeps before retry number attempt+1: backoff_s * 2^attempt, capped at max(8 s, backoff_s) like
 * huggingface_hub's http_backoff, and at least what Retry-After asks (up to a minute). */
static void backoff_sleep(const qc_hf_http *h, int attempt, double retry_after, const char *url, const char *why) {
    double w = h->backoff_s, cap = h->backoff_s > 8.0 ? h->backoff_s : 8.0;
    for (int i = 0; i < attempt && w < cap; i++) w *= 2;
    if (w > cap) w = cap;
    if (retry_after > w) w = retry_after < 60.0 ? retry_after : 60.0;
    qc_log(QC_LOG_WARN, "%s: %s; retry %d of %d in %.2f s", url, why, attempt + 1, h->max_retries, w);
    struct timespec ts = {(time_t)w, (long)((w - (double)(time_t)w) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Shared by HEAD and GET-to-memory: true if another attempt should be made (after sleeping). */
static bool retry_after_failure(qc_hf_http *h, int *attempt, CURLcode rc, const req_state *s, const char *url) {
    bool transient = rc != CURLE_OK ? retriable_curl(rc) : retriable_status(s->rep->status);
    if (!transient || *attempt >= h->max_retries) return false;
    char why[CURL_ERROR_SIZE + 32];
    if (rc != CURLE_OK) snprintf(why, sizeof why, "%s", curl_msg(h, rc));
    else snprintf(why, sizeof why, "HTTP %ld", s->rep->status);
    backoff_sleep(h, *attempt, s->retry_after, url, why);
    (*attempt)++;
    return true;
}

static void state_free(req_state *s) {
    free(s->plain_etag);
    free(s->linked_etag);
    free(s->mem);
}

/* "/a/b" against "http://h:1/x/y" -> "http://h:1/a/b"; "c" -> "http://h:1/x/c". */
static char *join_relative(const char *base, const char *loc) {
    size_t keep;
    if (loc[0] == '/') {
        keep = origin_len(base);
    } else {
        const char *q = base + origin_len(base);
        const char *last = q;
        for (const char *p = q; *p && *p != '?' && *p != '#'; p++)
            if (*p == '/') last = p + 1;
        keep = (size_t)(last - base);
    }
    size_t n = keep + strlen(loc) + 2;
    char *u = malloc(n);
    if (u) snprintf(u, n, "%.*s%s%s", (int)keep, base, (loc[0] != '/' && (keep == 0 || base[keep - 1] != '/')) ? "/" : "", loc);
    return u;
}

static bool is_relative_location(const char *loc) {
    if (loc[0] == '/') return loc[1] != '/';
    size_t n = strcspn(loc, "/?#");
    return memchr(loc, ':', n) == NULL;
}

qc_status qc_hf_http_head(qc_hf_http *h, const char *url, qc_hf_reply *rep) {
    char *cur = qc_strdup(url);
    if (!cur) return qc_fail(QC_ERR_NOMEM, "out of memory");
    for (int hop = 0;; hop++) {
        req_state s = {.rep = rep};
        int tries = 0;
        CURLcode rc;
        do {
            rc = attempt(h, cur, true, false, qc_hf_same_origin(cur, h->endpoint), NULL, &s);
        } while ((rc != CURLE_OK || retriable_status(rep->status)) && retry_after_failure(h, &tries, rc, &s, cur));
        state_free(&s);
        if (rc != CURLE_OK) {
            qc_status st = rc == CURLE_OUT_OF_MEMORY ? qc_fail(QC_ERR_NOMEM, "out of memory")
                                                     : fail_unreachable(h, cur, rc);
            free(cur);
            return st;
        }
        if (rep->status >= 300 && rep->status < 400 && rep->location && is_relative_location(rep->location)) {
            if (hop >= HF_MAX_REDIRECTS) {
                qc_status st = qc_fail(QC_ERR_NET, "%s: more than %d redirects", url, HF_MAX_REDIRECTS);
                free(cur);
                return st;
            }
            char *next = join_relative(cur, rep->location);
            free(cur);
            if (!next) return qc_fail(QC_ERR_NOMEM, "out of memory");
            cur = next;
            continue;
        }
        rep->url = cur;
        return QC_OK;
    }
}

qc_status qc_hf_http_get(qc_hf_http *h, const char *url, size_t max_len, char **body, size_t *len,
                         qc_hf_reply *rep) {
    *body = NULL;
    *len = 0;
    req_state s = {.rep = rep, .want_mem = true, .mem_max = max_len};
    int tries = 0;
    CURLcode rc;
    for (;;) {
        free(s.mem);
        s.mem = NULL;
        s.mem_len = s.mem_cap = 0;
        s.mem_over = false;
        rc = attempt(h, url, false, true, true, NULL, &s);
        if (rc == CURLE_OK && !retriable_status(rep->status)) break;
        if (!retry_after_failure(h, &tries, rc, &s, url)) break;
    }
    qc_status st = QC_OK;
    if (s.mem_over) st = qc_fail(QC_ERR_FORMAT, "%s: answer larger than %zu bytes", url, max_len);
    else if (rc == CURLE_OUT_OF_MEMORY || (rc == CURLE_WRITE_ERROR)) st = qc_fail(QC_ERR_NOMEM, "%s: out of memory", url);
    else if (rc != CURLE_OK) st = fail_unreachable(h, url, rc);
    if (st == QC_OK) {
        if (!rep->url) rep->url = qc_strdup(url);
        if (rep->status >= 200 && rep->status < 300) {
            if (!s.mem) s.mem = qc_strdup("");
            *body = s.mem;
            *len = s.mem_len;
            s.mem = NULL;
        }
    }
    state_free(&s);
    return st;
}

static qc_status restart_file(qc_hf_sink *k) {
    if (ftruncate(k->fd, 0) != 0)
        return qc_fail(QC_ERR_IO, "%s: cannot truncate: %s", k->path, strerror(errno));
    k->offset = 0;
    qc_sha256_init(k->sha);
    return QC_OK;
}

qc_status qc_hf_http_get_file(qc_hf_http *h, const char *url, bool send_auth, qc_hf_sink *k, qc_hf_reply *rep) {
    int tries = 0;
    char range[64];
    for (;;) {
        req_state s = {.rep = rep, .sink = k};
        int64_t before = k->offset;
        if (before > 0) snprintf(range, sizeof range, "Range: bytes=%lld-", (long long)before);
        CURLcode rc = attempt(h, url, false, true, send_auth, before > 0 ? range : NULL, &s);
        state_free(&s);
        long st = rep->status;
        if (s.cancelled)
            return qc_fail(QC_ERR_CANCELLED, "%s: download cancelled at %lld of %lld bytes; the partial file is kept "
                           "and the next run resumes it", k->what, (long long)k->offset, (long long)k->expected);
        if (s.write_errno) {
            int e = s.write_errno;
            if (e == ENOSPC || e == EDQUOT)
                return qc_fail(QC_ERR_IO, "%s: disk full (%s) after %lld of %lld bytes of %s; the partial download "
                               "is kept there and resumes on the next run once space is freed", k->path, strerror(e),
                               (long long)k->offset, (long long)k->expected, k->what);
            return qc_fail(QC_ERR_IO, "%s: write failed: %s", k->path, strerror(e));
        }
        if (s.overflow) {
            k->discard = true;
            return qc_fail(QC_ERR_NET, "%s: the server sent more than the %lld bytes it announced for %s", url,
                           (long long)k->expected, k->what);
        }
        if (rc == CURLE_OUT_OF_MEMORY) return qc_fail(QC_ERR_NOMEM, "%s: out of memory", url);
        /* the server does not continue where we are (wrong Content-Range, 416): start over */
        if (s.bad_range || (rc == CURLE_OK && st == 416 && before > 0)) {
            qc_log(QC_LOG_WARN, "%s: server cannot resume at byte %lld (HTTP %ld); downloading from the start", url,
                   (long long)before, st);
            qc_status rs = restart_file(k);
            if (rs) return rs;
            if (tries++ >= h->max_retries)
                return qc_fail(QC_ERR_NET, "%s: the server does not honour byte ranges consistently", url);
            continue;
        }
        if (rc == CURLE_OK && st >= 200 && st < 300) {
            if (st == 200 && !s.body_started && k->offset > 0) { /* an empty 200: the file is empty */
                qc_status rs = restart_file(k);
                if (rs) return rs;
            }
            if (k->expected < 0 || k->offset == k->expected) {
                if (k->progress && !k->progress(k->user, k->offset, k->expected < 0 ? k->offset : k->expected, k->what))
                    return qc_fail(QC_ERR_CANCELLED, "%s: download cancelled", k->what);
                return QC_OK;
            }
            /* a clean end before the announced size: treat like a dropped connection */
            rc = CURLE_PARTIAL_FILE;
            snprintf(h->errbuf, sizeof h->errbuf, "connection closed after %lld of %lld bytes", (long long)k->offset,
                     (long long)k->expected);
        }
        if (rc == CURLE_OK && !retriable_status(st)) return QC_OK; /* an HTTP error for the caller */
        if (rc != CURLE_OK && !retriable_curl(rc)) return fail_unreachable(h, url, rc);
        if (tries >= h->max_retries) {
            if (rc == CURLE_OK) return QC_OK; /* 5xx / 429 after the last retry */
            if (k->offset > 0)
                return qc_fail(QC_ERR_NET, "%s: download interrupted at %lld of %lld bytes after %d retries: %s; the "
                               "partial file %s is kept and the next run resumes it", k->what, (long long)k->offset,
                               (long long)k->expected, h->max_retries, curl_msg(h, rc), k->path);
            return fail_unreachable(h, url, rc);
        }
        char why[CURL_ERROR_SIZE + 64];
        if (rc != CURLE_OK) snprintf(why, sizeof why, "%s (at byte %lld)", curl_msg(h, rc), (long long)k->offset);
        else snprintf(why, sizeof why, "HTTP %ld", st);
        backoff_sleep(h, tries, s.retry_after, url, why);
        tries++;
    }
}
