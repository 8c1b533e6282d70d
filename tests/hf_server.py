#!/usr/bin/env python3
"""A fake Hugging Face hub on 127.0.0.1 for tests/test_hf_hub.c (standard library only).

Serves the repos found under --root:
    <root>/models/<org>/<name>/<files...>      <root>/datasets/<org>/<name>/<files...>
with the hub's endpoints and headers:
    HEAD/GET /[datasets/]<org>/<name>/resolve/<rev>/<path>
        X-Repo-Commit, ETag (git blob sha1 for small files; sha256 for "LFS" files, i.e. those of at least
        --lfs-threshold bytes, also as X-Linked-Etag / X-Linked-Size), Content-Length, Range -> 206 with
        Content-Range (416 past the end). With --redirect, LFS files answer 302 to /__blobs/<sha256>, like
        the hub's CDN redirect.
    GET /api/models/<org>/<name>[/revision/<rev>]  {"id", "sha", "siblings": [{"rfilename"}]}
Revisions: "main", "v1.0" and the commit hash (40 hex: <repo>/.commit if present, else derived).
Errors as the hub sends them: 404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound,
401 with X-Error-Code GatedRepo for a --token repo asked without "Authorization: Bearer <token>".

Test modes:
    --drop PATH:N      the first GET of repo file PATH sends the headers and N bytes, then hangs up
    --corrupt PATH     every GET of PATH gets the right size but a flipped byte
    --fail500 K        the first K hub requests answer 500
    --no-range         ignore Range headers (always 200 with the whole file)
    --range416         answer every Range request with 416 (as for a partial file longer than the blob)
    --token REPO:TOK   REPO ("datasets/org/name" or "org/name") needs the bearer token TOK
Control: every request is appended to --log (one JSON object a line: method, path, range, auth),
written before the answer goes out; GET /__log returns the same lines; GET /__shutdown stops the server.
The first line on stdout is the port. The server exits on its own after --timeout seconds.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub:
    def __init__(self, args):
        self.args = args
        self.repos = {}  # "datasets/org/name" or "org/name" -> {"commit", "files": {path: bytes}}
        self.blobs = {}  # sha256 -> (repo key, path)
        self.lock = threading.Lock()
        self.fail_left = args.fail500
        self.dropped = set()
        self.drop = {}
        for spec in args.drop:
            path, _, n = spec.rpartition(":")
            self.drop[path] = int(n)
        self.tokens = {}
        for spec in args.token:
            repo, _, tok = spec.partition(":")
            self.tokens[repo] = tok
        self.log_lines = []
        self.load(args.root)

    def load(self, root):
        for kind in ("models", "datasets"):
            base = os.path.join(root, kind)
            if not os.path.isdir(base):
                continue
            for org in sorted(os.listdir(base)):
                for name in sorted(os.listdir(os.path.join(base, org))):
                    top = os.path.join(base, org, name)
                    files = {}
                    for d, _, fs in os.walk(top):
                        for f in fs:
                            full = os.path.join(d, f)
                            rel = os.path.relpath(full, top).replace(os.sep, "/")
                            if rel == ".commit":
                                continue
                            with open(full, "rb") as fh:
                                files[rel] = fh.read()
                    key = (f"datasets/{org}/{name}" if kind == "datasets" else f"{org}/{name}")
                    cfile = os.path.join(top, ".commit")
                    if os.path.exists(cfile):
                        commit = open(cfile).read().strip()
                    else:
                        h = hashlib.sha1(key.encode())
                        for p in sorted(files):
                            h.update(p.encode() + b"\0" + files[p])
                        commit = h.hexdigest()
                    self.repos[key] = {"commit": commit, "files": files}
                    for p, data in files.items():
                        self.blobs[hashlib.sha256(data).hexdigest()] = (key, p)

    def is_lfs(self, data):
        return len(data) >= self.args.lfs_threshold

    @staticmethod
    def git_sha1(data):
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def log(self, entry):
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            self.log_lines.append(line)
            if self.args.log:
                with open(self.args.log, "a") as f:
                    f.write(line + "\n")
                    f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub = None  # set in main

    def log_message(self, fmt, *a):  # quiet
        pass

    # -- helpers --
    def send(self, code, headers=None, body=b"", head=False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def error(self, code, err_code, msg, head):
        body = json.dumps({"error": msg}).encode()
        self.send(code, {"X-Error-Code": err_code, "X-Error-Message": msg,
                         "Content-Type": "application/json", "Content-Length": str(len(body))}, body, head)

    def authorized(self, key):
        tok = self.hub.tokens.get(key)
        return tok is None or self.headers.get("Authorization") == f"Bearer {tok}"

    def find_repo(self, key, rev, head):
        repo = self.hub.repos.get(key)
        if repo is None:
            self.error(404, "RepoNotFound", "Repository not found", head)
            return None
        if not self.authorized(key):
            self.error(401, "GatedRepo", f"Access to {key} is restricted. You must be authenticated to access it.",
                       head)
            return None
        if rev not in ("main", "v1.0", repo["commit"]):
            self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            return None
        return repo

    def serve_bytes(self, key, path, data, extra, head):
        """200 or 206 with the file body, honouring --drop / --corrupt / --no-range."""
        hub = self.hub
        if path in hub.args.corrupt and not head:
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else data
        start, code = 0, 200
        rng = self.headers.get("Range")
        headers = dict(extra)
        headers["Accept-Ranges"] = "bytes"
        if rng and hub.args.range416:
            return self.send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
        if rng and not hub.args.no_range:
            spec = rng.strip()
            if not spec.startswith("bytes=") or "," in spec:
                return self.send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
            a, _, b = spec[6:].partition("-")
            start = int(a)
            end = int(b) if b else len(data) - 1
            if start >= len(data):
                return self.send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
            end = min(end, len(data) - 1)
            data_out = data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            code = 206
        else:
            data_out = data
        headers["Content-Length"] = str(len(data_out))
        drop_at = None
        if not head:
            with hub.lock:
                if path in hub.drop and (key, path) not in hub.dropped:
                    hub.dropped.add((key, path))
                    drop_at = hub.drop[path]
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if drop_at is not None:
            self.wfile.write(data_out[:drop_at])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        for i in range(0, len(data_out), 16384):
            self.wfile.write(data_out[i:i + 16384])

    # -- routes --
    def handle_any(self, head):
        hub = self.hub
        parsed = urllib.parse.urlsplit(self.path)
        raw = parsed.path
        if raw == "/__shutdown":
            self.send(200, {}, b"bye\n", head)
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return
        if raw == "/__log":
            with hub.lock:
                body = ("\n".join(hub.log_lines) + "\n").encode() if hub.log_lines else b""
            return self.send(200, {"Content-Type": "text/plain"}, body, head)
        hub.log({"method": self.command, "path": raw, "range": self.headers.get("Range"),
                 "auth": self.headers.get("Authorization")})
        with hub.lock:
            if hub.fail_left > 0:
                hub.fail_left -= 1
                fail = True
            else:
                fail = False
        if fail:
            return self.error(500, "InternalError", "Internal Error - We're working hard to fix this as soon as "
                              "possible!", head)
        parts = raw.split("/")[1:]
        if raw.startswith("/__blobs/") and len(parts) == 2:
            ent = hub.blobs.get(parts[1])
            if ent is None:
                return self.send(404, {}, b"no such blob\n", head)
            key, path = ent
            return self.serve_bytes(key, path, hub.repos[key]["files"][path], {"ETag": f'"{parts[1]}"'}, head)
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "models":
            key = f"{parts[2]}/{parts[3]}" if len(parts) >= 4 else ""
            rev = "main"
            if len(parts) == 6 and parts[4] == "revision":
                rev = urllib.parse.unquote(parts[5])
            elif len(parts) != 4:
                return self.send(404, {}, b"not found\n", head)
            repo = self.find_repo(key, rev, head)
            if repo is None:
                return
            body = json.dumps({"id": key, "modelId": key, "sha": repo["commit"], "private": False,
                               "siblings": [{"rfilename": p} for p in sorted(repo["files"])]}).encode()
            return self.send(200, {"Content-Type": "application/json"}, body, head)
        # /[datasets/]<org>/<name>/resolve/<rev>/<path...>
        ds = parts[:1] == ["datasets"]
        p = parts[1:] if ds else parts
        if len(p) < 5 or p[2] != "resolve":
            return self.send(404, {}, b"not found\n", head)
        key = ("datasets/" if ds else "") + f"{p[0]}/{p[1]}"
        rev = urllib.parse.unquote(p[3])
        path = urllib.parse.unquote("/".join(p[4:]))
        repo = self.find_repo(key, rev, head)
        if repo is None:
            return
        data = repo["files"].get(path)
        if data is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"", head)
        common = {"X-Repo-Commit": repo["commit"]}
        if hub.is_lfs(data):
            sha = hashlib.sha256(data).hexdigest()
            common["X-Linked-Etag"] = f'"{sha}"'
            common["X-Linked-Size"] = str(len(data))
            if hub.args.redirect:
                host = self.headers.get("Host", "127.0.0.1")
                common["ETag"] = f'"{hub.git_sha1(data)}"'  # the pointer file's; the client must prefer X-Linked-*
                common["Location"] = f"http://{host}/__blobs/{sha}"
                return self.send(302, common, b"", head)
            common["ETag"] = f'"{sha}"'
        else:
            common["ETag"] = f'"{hub.git_sha1(data)}"'
        return self.serve_bytes(key, path, data, common, head)

    def do_GET(self):
        self.handle_any(False)

    def do_HEAD(self):
        self.handle_any(True)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # clients hang up mid-answer on purpose (cancelled downloads): not worth a traceback
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--log")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--lfs-threshold", type=int, default=1024)
    ap.add_argument("--redirect", action="store_true")
    ap.add_argument("--no-range", action="store_true")
    ap.add_argument("--range416", action="store_true")
    ap.add_argument("--fail500", type=int, default=0)
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--token", action="append", default=[])
    args = ap.parse_args()
    Handler.hub = Hub(args)
    srv = Server(("127.0.0.1", 0), Handler)
    timer = threading.Timer(args.timeout, srv.shutdown)
    timer.daemon = True
    timer.start()
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
