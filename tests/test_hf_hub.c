/* datasets/hf_hub: downloads from a fake hub (tests/hf_server.py on 127.0.0.1) into the huggingface_hub
 * cache layout; resume, verification, retries, auth, errors, offline mode, model snapshots, references.
 * Nothing here touches the real ~/.cache or any host but 127.0.0.1. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hf_hub.h"
#include "model.h"
#include "safetensors.h"
#include "sha256.h"
#include "testutil.h"

#define DS_COMMIT    "0123456789abcdef0123456789abcdef01234567"
#define MODEL_COMMIT "abcdefabcdefabcdefabcdefabcdefabcdefabcd"
#define README_SHA1  "ce013625030ba8dba906f756967f9e9ca394464a" /* git hash-object of "hello\n" */
#define TRAIN_SIZE   5000
#define BIG_SIZE     200000
#define TOKEN        "hf_test_token_123"

static char g_root[512]; /* the fake hub's repos */
static char g_src[512];  /* $QCAL_SRC */
static int  g_seq;

/* ---- files ---- */

static void write_bytes(const char *path, const void *data, size_t n) {
    char *dir = qc_strdup(path);
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    free(dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) fail_msg("cannot write %s: %s", path, strerror(errno));
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

/* deterministic content: a byte pattern that differs per seed */
static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *b = malloc(n);
    uint32_t x = 2463534242u ^ seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    return b;
}

static void sha_of(const void *d, size_t n, char hex[65]) { qc_sha256_buf(d, n, hex); }

static void file_sha(const char *path, char hex[65]) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &buf, &len));
    sha_of(buf, len, hex);
    free(buf);
}

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Splits a safetensors file into two shards (tensors alternate) plus model.safetensors.index.json. */
static void split_safetensors(const char *src, const char *dir) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(src, 0, &buf, &len));
    assert_true(len >= 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | (unsigned char)buf[i];
    assert_true(hl <= len - 8);
    cJSON *hdr = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    assert_non_null(hdr);
    const char *data = buf + 8 + hl;
    cJSON *shard_hdr[2] = {cJSON_CreateObject(), cJSON_CreateObject()};
    char *shard_data[2] = {malloc(len), malloc(len)};
    size_t shard_len[2] = {0, 0};
    cJSON *index = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(index, "weight_map");
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(index, "metadata"), "total_size", (double)(len - 8 - hl));
    static const char *names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    int k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, hdr) {
        if (!strcmp(t->string, "__metadata__")) continue;
        const cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
        size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble, b = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        int s = k++ % 2;
        cJSON *e = cJSON_Duplicate(t, true);
        cJSON *no = cJSON_CreateArray();
        cJSON_AddItemToArray(no, cJSON_CreateNumber((double)shard_len[s]));
        cJSON_AddItemToArray(no, cJSON_CreateNumber((double)(shard_len[s] + b - a)));
        cJSON_ReplaceItemInObject(e, "data_offsets", no);
        cJSON_AddItemToObject(shard_hdr[s], t->string, e);
        memcpy(shard_data[s] + shard_len[s], data + a, b - a);
        shard_len[s] += b - a;
        cJSON_AddStringToObject(map, t->string, names[s]);
    }
    assert_true(k >= 2);
    for (int s = 0; s < 2; s++) {
        char *h = cJSON_PrintUnformatted(shard_hdr[s]);
        size_t n = strlen(h), padded = (n + 7) / 8 * 8;
        size_t total = 8 + padded + shard_len[s];
        char *out = malloc(total);
        for (int i = 0; i < 8; i++) out[i] = (char)((uint64_t)padded >> (8 * i));
        memcpy(out + 8, h, n);
        memset(out + 8 + n, ' ', padded - n);
        memcpy(out + 8 + padded, shard_data[s], shard_len[s]);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[s]);
        write_bytes(path, out, total);
        free(out);
        free(h);
        free(shard_data[s]);
        cJSON_Delete(shard_hdr[s]);
    }
    char *ix = cJSON_Print(index), path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_text(path, ix);
    free(ix);
    cJSON_Delete(index);
    cJSON_Delete(hdr);
    free(buf);
}

static void copy_file(const char *from, const char *to) {
    char *buf;
    size_t len;
    QC_CHECK_OK(qc_read_file(from, 0, &buf, &len));
    write_bytes(to, buf, len);
    free(buf);
}

/* ---- the fake hub ---- */

typedef struct server {
    pid_t pid;
    int   port;
    char  log[600];
    char  endpoint[64];
} server;

static pid_t g_live = 0; /* the server of the running test, stopped by the teardown if a check fails */

static void server_start(server *s, const char *const *extra) {
    snprintf(s->log, sizeof s->log, "%s/server-%d.log", qc_test_tmpdir(), ++g_seq);
    char script[700];
    snprintf(script, sizeof script, "%s/tests/hf_server.py", g_src);
    const char *argv[32] = {"python3", script, "--root", g_root, "--log", s->log, "--timeout", "120"};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 31; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a crashed test leaves no server behind */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    g_live = s->pid;
    FILE *f = fdopen(fds[0], "r");
    char line[64] = "";
    bool got = f && fgets(line, sizeof line, f);
    if (f) fclose(f);
    s->port = got ? atoi(line) : 0;
    if (s->port <= 0) fail_msg("the fake hub did not start (python3 %s)", script);
    snprintf(s->endpoint, sizeof s->endpoint, "http://127.0.0.1:%d", s->port);
    setenv("HF_ENDPOINT", s->endpoint, 1);
}

static void server_stop(server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
        g_live = 0;
    }
}

static int teardown(void **state) {
    (void)state;
    if (g_live > 0) {
        kill(g_live, SIGTERM);
        waitpid(g_live, NULL, 0);
        g_live = 0;
    }
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("HF_TOKEN");
    return 0;
}

/* Log lines of this method whose text contains every needle (NULL-terminated list). */
static int log_count(const server *s, const char *method, ...) {
    char *buf;
    size_t len;
    if (!qc_file_exists(s->log)) return 0;
    QC_CHECK_OK(qc_read_file(s->log, 0, &buf, &len));
    char want[64];
    snprintf(want, sizeof want, "\"method\": \"%s\"", method);
    int count = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strstr(line, want)) continue;
        bool all = true;
        va_list ap;
        va_start(ap, method);
        for (const char *n; (n = va_arg(ap, const char *));)
            if (!strstr(line, n)) all = false;
        va_end(ap);
        count += all;
    }
    free(buf);
    return count;
}

static int log_total(const server *s) {
    char *buf;
    size_t len;
    if (!qc_file_exists(s->log)) return 0;
    QC_CHECK_OK(qc_read_file(s->log, 0, &buf, &len));
    int n = 0;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    free(buf);
    return n;
}

/* A fresh, empty cache for one test (through $HF_HUB_CACHE); returns its path (static buffer). */
static const char *fresh_cache(void) {
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/cache-%d", qc_test_tmpdir(), ++g_seq);
    setenv("HF_HUB_CACHE", dir, 1);
    return dir;
}

static qc_hf_opts fast_opts(void) {
    qc_hf_opts o = qc_hf_opts_default();
    o.backoff_s = 0.01;
    o.max_retries = 3;
    return o;
}

static int group_setup(void **state) {
    (void)state;
    const char *src = getenv("QCAL_SRC");
    snprintf(g_src, sizeof g_src, "%s", src && *src ? src : ".");
    char probe[700];
    snprintf(probe, sizeof probe, "%s/tests/hf_server.py", g_src);
    if (!qc_file_exists(probe)) {
        fprintf(stderr, "SKIP: %s not found (set QCAL_SRC to the source tree)\n", probe);
        exit(77);
    }
    if (system("python3 -c 'import http.server' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: python3 is needed for the fake hub\n");
        exit(77);
    }
    /* the environment of a developer's shell must not leak in */
    const char *clear[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                           "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "http_proxy", "HTTP_PROXY",
                           "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof clear / sizeof *clear; i++) unsetenv(clear[i]);
    setenv("no_proxy", "*", 1);
    char home[600];
    snprintf(home, sizeof home, "%s/hfhome", qc_test_tmpdir());
    setenv("HF_HOME", home, 1);
    setenv("HOME", home, 1); /* even a bug that falls back to ~/.cache stays in the tmpdir */

    snprintf(g_root, sizeof g_root, "%s/hub", qc_test_tmpdir());
    char p[1024];
    /* dataset */
    snprintf(p, sizeof p, "%s/datasets/testorg/textset/.commit", g_root);
    write_text(p, DS_COMMIT "\n");
    snprintf(p, sizeof p, "%s/datasets/testorg/textset/README.md", g_root);
    write_text(p, "hello\n");
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    snprintf(p, sizeof p, "%s/datasets/testorg/textset/data/train.jsonl", g_root);
    write_bytes(p, b, TRAIN_SIZE);
    free(b);
    b = pattern(BIG_SIZE, 2);
    snprintf(p, sizeof p, "%s/datasets/testorg/textset/data/big.bin", g_root);
    write_bytes(p, b, BIG_SIZE);
    free(b);
    snprintf(p, sizeof p, "%s/datasets/testorg/textset/dir with space/a#b.txt", g_root);
    write_text(p, "quoted\n");
    /* a gated dataset */
    snprintf(p, sizeof p, "%s/datasets/testorg/private/secret.txt", g_root);
    write_text(p, "classified\n");
    /* a model: qwen3 fixture, sharded, with tokenizer files and things qcal must not fetch */
    char fixdir[700];
    snprintf(fixdir, sizeof fixdir, "%s/tests/data/arch/qwen3", g_src);
    char mdir[700], q[1024];
    snprintf(mdir, sizeof mdir, "%s/models/testorg/tiny", g_root);
    snprintf(p, sizeof p, "%s/.commit", mdir);
    write_text(p, MODEL_COMMIT);
    const char *copy[] = {"config.json", "generation_config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", fixdir, copy[i]);
        snprintf(q, sizeof q, "%s/%s", mdir, copy[i]);
        copy_file(p, q);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", fixdir);
    split_safetensors(p, mdir);
    const char *small[][2] = {
        {"tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}"},
        {"tokenizer_config.json", "{\"model_max_length\": 512}"},
        {"special_tokens_map.json", "{\"eos_token\": \"<eos>\"}"},
        {"README.md", "# tiny\n"},
        {"pytorch_model.bin", "not a checkpoint"},
        {"original/consolidated.safetensors", "not fetched"},
    };
    for (size_t i = 0; i < sizeof small / sizeof *small; i++) {
        snprintf(p, sizeof p, "%s/%s", mdir, small[i][0]);
        write_text(p, small[i][1]);
    }
    return 0;
}

/* ---- tests ---- */

static void test_dataset_layout(void **state) {
    (void)state;
    const char *cache = fresh_cache();
    server s;
    server_start(&s, NULL);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    char want[1024], blob_sha[65], p[1024], link[1024];
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    sha_of(b, TRAIN_SIZE, blob_sha);
    free(b);
    snprintf(want, sizeof want, "%s/datasets--testorg--textset/snapshots/" DS_COMMIT "/data/train.jsonl", cache);
    assert_string_equal(path, want);
    /* the symlink: relative, one ../ per directory level */
    ssize_t n = readlink(path, link, sizeof link - 1);
    assert_true(n > 0);
    link[n] = '\0';
    snprintf(want, sizeof want, "../../../blobs/%s", blob_sha);
    assert_string_equal(link, want);
    char got_sha[65];
    file_sha(path, got_sha);
    assert_string_equal(got_sha, blob_sha);
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/blobs/%s", cache, blob_sha);
    assert_true(qc_file_exists(p));
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/blobs/%s.incomplete", cache, blob_sha);
    assert_false(exists(p));
    /* refs/main = commit, exactly (no newline, as huggingface_hub writes it) */
    char *ref;
    size_t len;
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/refs/main", cache);
    QC_CHECK_OK(qc_read_file(p, 0, &ref, &len));
    assert_string_equal(ref, DS_COMMIT);
    free(ref);
    free(path);

    /* a small (non-LFS) file at the top: etag = git sha1, link ../../blobs/<sha1> */
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path));
    n = readlink(path, link, sizeof link - 1);
    assert_true(n > 0);
    link[n] = '\0';
    assert_string_equal(link, "../../blobs/" README_SHA1);
    char *text;
    QC_CHECK_OK(qc_read_file(path, 0, &text, &len));
    assert_string_equal(text, "hello\n");
    free(text);
    free(path);

    /* a name that needs URL quoting, fetched by the v1.0 tag (refs/v1.0 written too) */
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset@v1.0/dir with space/a#b.txt", &o, &path));
    QC_CHECK_OK(qc_read_file(path, 0, &text, &len));
    assert_string_equal(text, "quoted\n");
    free(text);
    free(path);
    assert_int_equal(log_count(&s, "HEAD", "/datasets/testorg/textset/resolve/v1.0/dir%20with%20space/a%23b.txt", NULL), 1);
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/refs/v1.0", cache);
    assert_true(qc_file_exists(p));

    /* the second resolve: a HEAD to learn the commit, no GET */
    int gets = log_count(&s, "GET", NULL);
    assert_int_equal(gets, 3);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    free(path);
    assert_int_equal(log_count(&s, "GET", NULL), gets);
    assert_int_equal(log_count(&s, "HEAD", "resolve/main/data/train.jsonl", NULL), 2);

    /* the same blob under another revision name: linked, not downloaded again */
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl@" DS_COMMIT, &o, &path));
    free(path);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl@v1.0", &o, &path));
    free(path);
    assert_int_equal(log_count(&s, "GET", NULL), gets);
    /* the link gone but the blob kept: relinked after a HEAD, not downloaded again */
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/snapshots/" DS_COMMIT "/data/train.jsonl", cache);
    assert_int_equal(unlink(p), 0);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    assert_string_equal(path, p);
    assert_true(qc_file_exists(path));
    free(path);
    assert_int_equal(log_count(&s, "GET", NULL), gets);
    /* a pinned commit already in the cache: no request at all */
    int total = log_total(&s);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset@" DS_COMMIT "/README.md", &o, &path));
    free(path);
    assert_int_equal(log_total(&s), total);
    server_stop(&s);
}

static void test_hf_home_and_redirect(void **state) {
    (void)state;
    unsetenv("HF_HUB_CACHE");
    char home[600], p[1024];
    snprintf(home, sizeof home, "%s/home-%d", qc_test_tmpdir(), ++g_seq);
    setenv("HF_HOME", home, 1);
    server s;
    const char *args[] = {"--redirect", NULL};
    server_start(&s, args);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    snprintf(p, sizeof p, "%s/hub/datasets--testorg--textset/snapshots/" DS_COMMIT "/data/train.jsonl", home);
    assert_string_equal(path, p);
    char got[65], want[65];
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    sha_of(b, TRAIN_SIZE, want);
    free(b);
    file_sha(path, got);
    assert_string_equal(got, want);
    /* the blob name is X-Linked-Etag (sha256), not the 302's own ETag; the bytes came from the CDN URL */
    snprintf(p, sizeof p, "%s/hub/datasets--testorg--textset/blobs/%s", home, want);
    assert_true(qc_file_exists(p));
    assert_int_equal(log_count(&s, "GET", "/__blobs/", want, NULL), 1);
    assert_int_equal(log_count(&s, "GET", "/resolve/", NULL), 0);
    free(path);
    server_stop(&s);
    snprintf(home, sizeof home, "%s/hfhome", qc_test_tmpdir());
    setenv("HF_HOME", home, 1);
}

static void test_resume_after_drop(void **state) {
    (void)state;
    const char *cache = fresh_cache();
    server s;
    const char *args[] = {"--drop", "data/big.bin:70000", NULL};
    server_start(&s, args);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/big.bin", &o, &path));
    assert_int_equal(log_count(&s, "GET", "data/big.bin", "\"range\": null", NULL), 1);
    assert_int_equal(log_count(&s, "GET", "data/big.bin", "bytes=70000-", NULL), 1);
    char got[65], want[65];
    unsigned char *b = pattern(BIG_SIZE, 2);
    sha_of(b, BIG_SIZE, want);
    free(b);
    file_sha(path, got);
    assert_string_equal(got, want);
    free(path);
    (void)cache;
    server_stop(&s);
}

typedef struct prog {
    int64_t cancel_after, last_done, last_total;
    int     calls;
} prog;

static bool on_progress(void *user, int64_t done, int64_t total, const char *what) {
    prog *p = user;
    assert_non_null(what);
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return !(p->cancel_after > 0 && done >= p->cancel_after);
}

/* A run stopped half-way leaves blobs/<etag>.incomplete; the next run asks only for the rest. */
static void test_cancel_then_resume(void **state) {
    (void)state;
    const char *cache = fresh_cache();
    server s;
    server_start(&s, NULL);
    char want[65], inc[1024];
    unsigned char *b = pattern(BIG_SIZE, 2);
    sha_of(b, BIG_SIZE, want);
    free(b);
    prog pr = {.cancel_after = 1};
    qc_hf_opts o = fast_opts();
    o.progress = on_progress;
    o.user = &pr;
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/data/big.bin", &o, &path), QC_ERR_CANCELLED, "cancelled");
    assert_null(path);
    snprintf(inc, sizeof inc, "%s/datasets--testorg--textset/blobs/%s.incomplete", cache, want);
    struct stat sb;
    assert_int_equal(stat(inc, &sb), 0);
    assert_true(sb.st_size > 0 && sb.st_size < BIG_SIZE);
    char rng[64];
    snprintf(rng, sizeof rng, "bytes=%lld-", (long long)sb.st_size);
    pr = (prog){0};
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/big.bin", &o, &path));
    assert_int_equal(log_count(&s, "GET", "data/big.bin", rng, NULL), 1);
    assert_int_equal(pr.last_done, BIG_SIZE);
    assert_int_equal(pr.last_total, BIG_SIZE);
    char got[65];
    file_sha(path, got);
    assert_string_equal(got, want);
    assert_false(exists(inc));
    free(path);
    server_stop(&s);
}

/* A partial file with wrong bytes and a server that ignores Range (200) or refuses it (416): the
 * download starts over and the result verifies. */
static void range_refused(const char *flag) {
    const char *cache = fresh_cache();
    server s;
    const char *args[] = {flag, NULL};
    server_start(&s, args);
    char want[65], inc[1024];
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    sha_of(b, TRAIN_SIZE, want);
    free(b);
    snprintf(inc, sizeof inc, "%s/datasets--testorg--textset/blobs/%s.incomplete", cache, want);
    write_text(inc, "garbage that is not the start of the file");
    qc_hf_opts o = fast_opts();
    char *path, got[65];
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    assert_int_equal(log_count(&s, "GET", "data/train.jsonl", "bytes=41-", NULL), 1);
    if (!strcmp(flag, "--range416")) /* then once more from the start, without Range */
        assert_int_equal(log_count(&s, "GET", "data/train.jsonl", "\"range\": null", NULL), 1);
    file_sha(path, got);
    assert_string_equal(got, want);
    free(path);
    server_stop(&s);
}

static void test_range_ignored_restarts(void **state) {
    (void)state;
    range_refused("--no-range");
}

static void test_range_416_restarts(void **state) {
    (void)state;
    range_refused("--range416");
}

static void test_corrupt_transfer(void **state) {
    (void)state;
    const char *cache = fresh_cache();
    server s;
    const char *args[] = {"--corrupt", "data/train.jsonl", NULL};
    server_start(&s, args);
    qc_hf_opts o = fast_opts();
    char *path, want[65], p[1024];
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    sha_of(b, TRAIN_SIZE, want);
    free(b);
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path), QC_ERR_NET, "sha256");
    assert_non_null(strstr(qc_last_error(), want));
    assert_null(path);
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/blobs/%s", cache, want);
    assert_false(exists(p));
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/blobs/%s.incomplete", cache, want);
    assert_false(exists(p));
    snprintf(p, sizeof p, "%s/datasets--testorg--textset/snapshots/" DS_COMMIT "/data/train.jsonl", cache);
    assert_false(exists(p));
    server_stop(&s);
}

static void test_retry_500(void **state) {
    (void)state;
    fresh_cache();
    server s;
    const char *args[] = {"--fail500", "3", NULL};
    server_start(&s, args);
    qc_hf_opts o = fast_opts(); /* 3 retries: the 4th attempt gets through */
    char *path;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path));
    free(path);
    assert_int_equal(log_count(&s, "HEAD", "README.md", NULL), 4);
    server_stop(&s);

    fresh_cache();
    const char *args2[] = {"--fail500", "100", NULL};
    server_start(&s, args2);
    o.max_retries = 2;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path), QC_ERR_NET, "HTTP 500");
    assert_int_equal(log_count(&s, "HEAD", "README.md", NULL), 3);
    server_stop(&s);
}

static void test_auth(void **state) {
    (void)state;
    fresh_cache();
    server s;
    const char *args[] = {"--token", "datasets/testorg/private:" TOKEN, NULL};
    server_start(&s, args);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/private/secret.txt", &o, &path), QC_ERR_NET, "access denied");
    assert_non_null(strstr(qc_last_error(), "set HF_TOKEN"));
    assert_non_null(strstr(qc_last_error(), "gated or private"));
    assert_int_equal(log_count(&s, "HEAD", "secret.txt", NULL), 1); /* 401 is not retried */
    setenv("HF_TOKEN", "wrong", 1);
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/private/secret.txt", &o, &path), QC_ERR_NET, "token sent was refused");
    setenv("HF_TOKEN", TOKEN, 1);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/private/secret.txt", &o, &path));
    char *text;
    size_t len;
    QC_CHECK_OK(qc_read_file(path, 0, &text, &len));
    assert_string_equal(text, "classified\n");
    free(text);
    free(path);
    assert_int_equal(log_count(&s, "HEAD", "secret.txt", "\"auth\": \"Bearer " TOKEN "\"", NULL), 1);
    assert_int_equal(log_count(&s, "GET", "secret.txt", "\"auth\": \"Bearer " TOKEN "\"", NULL), 1);
    unsetenv("HF_TOKEN");
    /* the token `huggingface-cli login` leaves in $HF_HOME/token is used too */
    fresh_cache();
    char tok[700];
    snprintf(tok, sizeof tok, "%s/token", getenv("HF_HOME"));
    write_text(tok, TOKEN "\n");
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/private/secret.txt", &o, &path));
    free(path);
    unlink(tok);
    server_stop(&s);
}

static void test_not_found(void **state) {
    (void)state;
    fresh_cache();
    server s;
    server_start(&s, NULL);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/nope.txt", &o, &path), QC_ERR_NET, "not found");
    assert_non_null(strstr(qc_last_error(), "'nope.txt' in dataset testorg/textset at revision 'main'"));
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/README.md@nobranch", &o, &path), QC_ERR_NET,
                   "not found: revision 'nobranch'");
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/missing/README.md", &o, &path), QC_ERR_NET,
                   "not found: dataset testorg/missing");
    QC_CHECK_FAILS(qc_hf_resolve("hf://testorg/nomodel", &o, &path), QC_ERR_NET, "not found: model testorg/nomodel");
    assert_int_equal(log_count(&s, "HEAD", "nope.txt", NULL), 1); /* 404 is not retried */
    server_stop(&s);
}

static void test_offline(void **state) {
    (void)state;
    fresh_cache();
    server s;
    server_start(&s, NULL);
    qc_hf_opts o = fast_opts();
    char *path, *again;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path));
    int total = log_total(&s);
    setenv("HF_HUB_OFFLINE", "1", 1);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &again));
    assert_string_equal(again, path);
    free(again);
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &again), QC_ERR_NET, "not in the cache");
    assert_non_null(strstr(qc_last_error(), "offline mode is on"));
    QC_CHECK_FAILS(qc_hf_resolve("hf://testorg/tiny", &o, &again), QC_ERR_NET, "not in the cache");
    assert_int_equal(log_total(&s), total); /* not one request */
    /* an explicit opts.offline = 0 wins over the environment */
    o.offline = 0;
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &again));
    free(again);
    unsetenv("HF_HUB_OFFLINE");
    o.offline = 1;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/data/big.bin", &o, &again), QC_ERR_NET, "HF_HUB_OFFLINE=1");
    free(path);
    server_stop(&s);
}

static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

static void test_unreachable(void **state) {
    (void)state;
    fresh_cache();
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", closed_port());
    setenv("HF_ENDPOINT", ep, 1);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path), QC_ERR_NET, "cannot reach");
    assert_non_null(strstr(qc_last_error(), ep));
    assert_non_null(strstr(qc_last_error(), "set HF_HUB_OFFLINE=1"));
    QC_CHECK_FAILS(qc_hf_resolve("hf://testorg/tiny", &o, &path), QC_ERR_NET, "cannot reach");

    /* a file already cached is served from the cache when the hub cannot be reached */
    server s;
    server_start(&s, NULL);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path));
    free(path);
    server_stop(&s);
    setenv("HF_ENDPOINT", ep, 1);
    QC_CHECK_OK(qc_hf_resolve("hf://datasets/testorg/textset/README.md", &o, &path));
    free(path);
}

/* The partial download goes to /dev/full: ENOSPC is reported as a full disk and nothing is renamed. */
static void test_disk_full(void **state) {
    (void)state;
    if (!exists("/dev/full")) {
        fprintf(stderr, "note: /dev/full missing, disk-full case not run\n");
        return;
    }
    const char *cache = fresh_cache();
    server s;
    server_start(&s, NULL);
    char want[65], inc[1100], blob[1024];
    unsigned char *b = pattern(TRAIN_SIZE, 1);
    sha_of(b, TRAIN_SIZE, want);
    free(b);
    snprintf(blob, sizeof blob, "%s/datasets--testorg--textset/blobs/%s", cache, want);
    snprintf(inc, sizeof inc, "%s.incomplete", blob);
    write_text(inc, "");
    unlink(inc);
    assert_int_equal(symlink("/dev/full", inc), 0);
    qc_hf_opts o = fast_opts();
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/testorg/textset/data/train.jsonl", &o, &path), QC_ERR_IO, "disk full");
    assert_non_null(strstr(qc_last_error(), "resumes on the next run"));
    assert_false(exists(blob));
    assert_int_equal(log_count(&s, "GET", "train.jsonl", NULL), 1); /* a full disk is not retried */
    server_stop(&s);
}

static void test_model_snapshot(void **state) {
    (void)state;
    const char *cache = fresh_cache();
    server s;
    server_start(&s, NULL);
    qc_hf_opts o = fast_opts();
    char *dir, want[1024];
    QC_CHECK_OK(qc_hf_resolve("hf://testorg/tiny", &o, &dir));
    snprintf(want, sizeof want, "%s/models--testorg--tiny/snapshots/" MODEL_COMMIT, cache);
    assert_string_equal(dir, want);
    assert_int_equal(log_count(&s, "GET", "/api/models/testorg/tiny/revision/main", NULL), 1);
    const char *fetched[] = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json", "model.safetensors.index.json",
                             "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (size_t i = 0; i < sizeof fetched / sizeof *fetched; i++) {
        char p[1200], needle[200];
        snprintf(p, sizeof p, "%s/%s", dir, fetched[i]);
        if (!qc_file_exists(p)) fail_msg("%s missing from the snapshot", fetched[i]);
        snprintf(needle, sizeof needle, "/testorg/tiny/resolve/" MODEL_COMMIT "/%s\"", fetched[i]);
        if (log_count(&s, "GET", needle, NULL) != 1) fail_msg("%s: expected one GET", fetched[i]);
    }
    assert_int_equal(log_count(&s, "HEAD", "pytorch_model.bin", NULL) + log_count(&s, "HEAD", "README.md", NULL) +
                         log_count(&s, "HEAD", "consolidated", NULL), 0);
    char p[1200];
    snprintf(p, sizeof p, "%s/models--testorg--tiny/refs/main", cache);
    char *ref;
    size_t len;
    QC_CHECK_OK(qc_read_file(p, 0, &ref, &len));
    assert_string_equal(ref, MODEL_COMMIT);
    free(ref);

    /* qcal opens it: the sharded weights hold every tensor of the original file, byte for byte */
    qc_model *m;
    QC_CHECK_OK(qc_model_open(dir, &m));
    assert_int_equal(m->cfg.n_layers, 2);
    qc_weights *orig;
    char fixdir[700];
    snprintf(fixdir, sizeof fixdir, "%s/tests/data/arch/qwen3", g_src);
    QC_CHECK_OK(qc_weights_open(fixdir, &orig));
    assert_int_equal(qc_weights_count(m->weights), qc_weights_count(orig));
    for (size_t i = 0; i < qc_weights_count(orig); i++) {
        const qc_tensor *a = qc_weights_get(orig, i), *b = qc_weights_find(m->weights, a->name);
        assert_non_null(b);
        assert_int_equal(a->nbytes, b->nbytes);
        if (memcmp(a->data, b->data, a->nbytes) != 0) fail_msg("tensor %s differs", a->name);
    }
    qc_weights_free(orig);
    qc_model_free(m);

    /* again: one listing request, every file found by the pinned commit without a HEAD */
    int total = log_total(&s);
    char *dir2;
    QC_CHECK_OK(qc_hf_resolve("hf://testorg/tiny@main", &o, &dir2));
    assert_string_equal(dir2, dir);
    free(dir2);
    assert_int_equal(log_total(&s), total + 1);
    /* offline: the complete snapshot is found through refs/main */
    setenv("HF_HUB_OFFLINE", "1", 1);
    QC_CHECK_OK(qc_hf_resolve("hf://testorg/tiny", &o, &dir2));
    assert_string_equal(dir2, dir);
    free(dir2);
    unsetenv("HF_HUB_OFFLINE");
    assert_int_equal(log_total(&s), total + 1);
    server_stop(&s);
    /* online but the hub is gone: the complete cached snapshot is used */
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", closed_port());
    setenv("HF_ENDPOINT", ep, 1);
    o.max_retries = -1; /* no retries */
    QC_CHECK_OK(qc_hf_resolve("hf://testorg/tiny", &o, &dir2));
    assert_string_equal(dir2, dir);
    free(dir2);
    free(dir);
}

static void test_parse_refs(void **state) {
    (void)state;
    qc_hf_ref r;
    struct {
        const char *ref;
        qc_hf_repo_type type;
        const char *repo, *rev, *path;
    } good[] = {
        {"hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz", QC_HF_DATASET, "allenai/c4", "main",
         "en/c4-train.00000-of-01024.json.gz"},
        {"hf://datasets/org/name/a/b.txt@v1.0", QC_HF_DATASET, "org/name", "v1.0", "a/b.txt"},
        {"hf://datasets/org/name@v2/a/b@c.txt", QC_HF_DATASET, "org/name", "v2", "a/b@c.txt"},
        {"hf://datasets/org/name@refs/convert/parquet/x/y.parquet", QC_HF_DATASET, "org/name", "refs/convert/parquet",
         "x/y.parquet"},
        {"hf://datasets/org/name/f.txt@refs/pr/1", QC_HF_DATASET, "org/name", "refs/pr/1", "f.txt"},
        {"hf://meta-llama/Llama-3.1-8B", QC_HF_MODEL, "meta-llama/Llama-3.1-8B", "main", NULL},
        {"hf://Qwen/Qwen2.5-0.5B@" MODEL_COMMIT, QC_HF_MODEL, "Qwen/Qwen2.5-0.5B", MODEL_COMMIT, NULL},
        {"hf://org/m_1.x@refs/pr/7", QC_HF_MODEL, "org/m_1.x", "refs/pr/7", NULL},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        QC_CHECK_OK(qc_hf_parse_ref(good[i].ref, &r));
        assert_int_equal(r.type, good[i].type);
        assert_string_equal(r.repo_id, good[i].repo);
        assert_string_equal(r.revision, good[i].rev);
        if (good[i].path) assert_string_equal(r.path, good[i].path);
        else assert_null(r.path);
        qc_hf_ref_free(&r);
    }
    const char *bad[] = {
        "hf:/org/model", "org/model", "hf://", "hf://org", "hf://org/", "hf://org/model/", "hf://org/model/file.json",
        "hf://org/model@", "hf://datasets/org", "hf://datasets/org/name", "hf://datasets/org/name/",
        "hf://datasets/org/name@v1", "hf://datasets/org/name@/x", "hf://datasets/org/name/../x",
        "hf://datasets/org/name/a/../../x", "hf://datasets/org/name//etc/passwd", "hf://datasets/org/name/a//b",
        "hf://datasets/org/name/./x", "hf://datasets/org/name/x@", "hf://datasets/org/name/x@../../y",
        "hf://datasets/or--g/name/x", "hf://datasets/-org/name/x", "hf://datasets/org/na..me/x",
        "hf://datasets/org/na me/x", "hf://org/model@a b", "hf://spaces/org/app", "hf://datasets/org/name/x@v1:2",
        "hf://org/model.git",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qc_error_clear();
        qc_status st = qc_hf_parse_ref(bad[i], &r);
        if (st != QC_ERR_ARG) fail_msg("'%s' -> %s, expected QC_ERR_ARG", bad[i], qc_status_str(st));
        if (!strstr(qc_last_error(), "hf://datasets/<org>/<name>/<path/in/repo>[@<revision>]") ||
            !strstr(qc_last_error(), "hf://<org>/<model>[@<revision>]"))
            fail_msg("'%s': message lacks the accepted forms: %s", bad[i], qc_last_error());
        assert_null(r.repo_id);
    }
    char *path;
    QC_CHECK_FAILS(qc_hf_resolve("hf://datasets/org/name/../x", NULL, &path), QC_ERR_ARG, "malformed reference");
    assert_null(path);
    assert_true(qc_hf_is_ref("hf://x"));
    assert_false(qc_hf_is_ref("/data/hf://x"));
    assert_false(qc_hf_is_ref(NULL));
    /* the lower-level entry points check their arguments too */
    QC_CHECK_FAILS(qc_hf_download_file(QC_HF_DATASET, "org/name", "main", "/etc/passwd", NULL, &path), QC_ERR_ARG,
                   "invalid path");
    QC_CHECK_FAILS(qc_hf_download_file(QC_HF_DATASET, "orgname", "main", "x", NULL, &path), QC_ERR_ARG, "invalid repo id");
    QC_CHECK_FAILS(qc_hf_download_model("org/name", "../x", NULL, &path), QC_ERR_ARG, "invalid revision");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_parse_refs, teardown),
        cmocka_unit_test_teardown(test_dataset_layout, teardown),
        cmocka_unit_test_teardown(test_hf_home_and_redirect, teardown),
        cmocka_unit_test_teardown(test_resume_after_drop, teardown),
        cmocka_unit_test_teardown(test_cancel_then_resume, teardown),
        cmocka_unit_test_teardown(test_range_ignored_restarts, teardown),
        cmocka_unit_test_teardown(test_range_416_restarts, teardown),
        cmocka_unit_test_teardown(test_corrupt_transfer, teardown),
        cmocka_unit_test_teardown(test_retry_500, teardown),
        cmocka_unit_test_teardown(test_auth, teardown),
        cmocka_unit_test_teardown(test_not_found, teardown),
        cmocka_unit_test_teardown(test_offline, teardown),
        cmocka_unit_test_teardown(test_unreachable, teardown),
        cmocka_unit_test_teardown(test_disk_full, teardown),
        cmocka_unit_test_teardown(test_model_snapshot, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
