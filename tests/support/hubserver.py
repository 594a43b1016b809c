"""A loopback Hugging Face Hub for tests: serves model repos from local folders on 127.0.0.1.

It answers the HTTP calls huggingface_hub 2.x makes for `model_info` and `snapshot_download`:

    GET  /api/models/{repo}                     repo info at the default branch (id, sha, siblings, config)
    GET  /api/models/{repo}/revision/{rev}      the same at a branch, tag or commit (?blobs=true adds sizes)
    GET  /api/models/{repo}/tree/{rev}[/path]   the recursive file listing (one page)
    HEAD /{repo}/resolve/{rev}/{file}           X-Repo-Commit, ETag / X-Linked-Etag, Content-Length
    GET  /{repo}/resolve/{rev}/{file}           the bytes, with Range support for resumed downloads

Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the client
raises its usual exceptions. No Xet headers are ever sent, so downloads stay on plain HTTP.
Faults for tests: `cut` a file's transfer after N bytes, `stall` a transfer until released. Every
request is recorded, so a test can assert that a run made none.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files the Hub stores in LFS (their ETag is the sha256 and the HEAD answer carries X-Linked-*).
_LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ckpt", ".pt")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # URL path, percent-decoded, without the query
    range: str | None = None


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    refs: dict[str, _Commit] = field(default_factory=dict)  # branch or tag -> commit
    default: str = "main"

    def find(self, revision: str) -> _Commit | None:
        if revision in self.refs:
            return self.refs[revision]
        return next((c for c in self.refs.values() if c.sha == revision), None)


@dataclass
class _Cut:
    after: int
    times: int


class FakeHub:
    """The server and its repos; use as a context manager, or start() / stop()."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._cuts: dict[tuple[str, str], _Cut] = {}
        self._stalls: dict[tuple[str, str], tuple[threading.Event, threading.Event]] = {}
        self._connections: set[socket.socket] = set()
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        # A short poll interval: shutdown() waits up to one interval, and tests stop many servers.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening and drops open keep-alive connections, so the port refuses connections."""
        if self._thread is None:
            return
        for _, release in self._stalls.values():
            release.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in list(self._connections):
                _hard_close(conn)
        self._thread = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content --------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, folder: Path, *, revision: str = "main", tags: tuple[str, ...] = ()) -> str:
        """Serves the files of `folder` as `revision` (and `tags`) of `repo_id`; returns the commit sha."""
        folder = Path(folder)
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }
        digest = hashlib.sha1(repo_id.encode() + revision.encode())
        for name, data in files.items():
            digest.update(name.encode() + hashlib.sha1(data).digest())
        commit = _Commit(sha=digest.hexdigest(), files=files)
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            for ref in (revision, *tags):
                repo.refs[ref] = commit
        return commit.sha

    # -- faults and request log -------------------------------------------------------------------

    def cut(self, repo_id: str, filename: str, *, after: int, times: int = 1) -> None:
        """The next `times` downloads of the file stop at byte `after` of the file: the connection closes."""
        with self._lock:
            self._cuts[(repo_id, filename)] = _Cut(after, times)

    def stall(self, repo_id: str, filename: str) -> tuple[threading.Event, threading.Event]:
        """The next download of the file sends a few bytes, sets `stalled`, then waits for `release`."""
        events = (threading.Event(), threading.Event())
        with self._lock:
            self._stalls[(repo_id, filename)] = events
        return events

    def clear_faults(self) -> None:
        with self._lock:
            self._cuts.clear()
            for _, release in self._stalls.values():
                release.set()
            self._stalls.clear()

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str | None = None, path_contains: str = "") -> int:
        with self._lock:
            return sum(
                1 for r in self.requests if (method is None or r.method == method) and path_contains in r.path
            )

    # -- used by the handler ----------------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_cut(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            cut = self._cuts.get(key)
            if cut is None or cut.times <= 0:
                return None
            cut.times -= 1
            return cut.after

    def _take_stall(self, key: tuple[str, str]) -> tuple[threading.Event, threading.Event] | None:
        with self._lock:
            return self._stalls.pop(key, None)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


def _hard_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(name: str) -> bool:
    return name.endswith(_LFS_SUFFIXES)


def _etag(name: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if _is_lfs(name) else _git_blob_sha(data)


class _NotFound(Exception):
    def __init__(self, code: str, message: str, commit: str | None = None):
        super().__init__(message)
        self.code, self.message, self.commit = code, message, commit


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub: stop() must drop these connections

        def setup(self) -> None:
            super().setup()
            hub._track(self.connection, True)

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass
            hub._track(self.connection, False)

        def log_message(self, format, *args) -> None:  # noqa: A002 - keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        # -- routing ----------------------------------------------------------------------------

        def _dispatch(self, *, head: bool) -> None:
            url = urlsplit(self.path)
            hub._record(Request(self.command, unquote(url.path), self.headers.get("Range")))
            parts = url.path.strip("/").split("/")
            try:
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    self._api(parts[2:], parse_qs(url.query))
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._resolve(f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:])), head)
                else:
                    self._send_json(404, {"error": "Not Found"})
            except _NotFound as e:
                headers = {"X-Error-Code": e.code, "X-Error-Message": e.message}
                if e.commit:
                    headers["X-Repo-Commit"] = e.commit
                self._send_json(404, {"error": e.message}, headers, head=head)

        def _lookup(self, repo_id: str, revision: str) -> _Commit:
            repo = hub._repos.get(repo_id)
            if repo is None:
                raise _NotFound("RepoNotFound", "Repository not found")
            commit = repo.find(revision or repo.default)
            if commit is None:
                raise _NotFound("RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _api(self, parts: list[str], query: dict) -> None:
            repo_id = f"{parts[0]}/{parts[1]}"
            rest = parts[2:]
            if not rest:
                self._send_json(200, self._info(repo_id, self._lookup(repo_id, ""), query))
            elif rest[0] == "revision" and len(rest) == 2:
                self._send_json(200, self._info(repo_id, self._lookup(repo_id, unquote(rest[1])), query))
            elif rest[0] == "tree" and len(rest) >= 2:
                commit = self._lookup(repo_id, unquote(rest[1]))
                prefix = unquote("/".join(rest[2:]))
                self._send_json(200, self._tree(commit, prefix))
            else:
                self._send_json(404, {"error": "Not Found"})

        def _info(self, repo_id: str, commit: _Commit, query: dict) -> dict:
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for name, data in commit.files.items():
                sibling: dict = {"rfilename": name}
                if blobs:
                    sibling.update(size=len(data), blobId=_git_blob_sha(data))
                    if _is_lfs(name):
                        sibling["lfs"] = {"size": len(data), "sha256": _etag(name, data), "pointerSize": 134}
                siblings.append(sibling)
            info = {"id": repo_id, "modelId": repo_id, "sha": commit.sha, "private": False, "siblings": siblings}
            config = commit.files.get("config.json")
            if config is not None:
                parsed = json.loads(config)
                info["config"] = {k: parsed[k] for k in ("model_type", "architectures") if k in parsed}
            return info

        def _tree(self, commit: _Commit, prefix: str) -> list[dict]:
            entries = []
            for name, data in commit.files.items():
                if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                    continue
                entry = {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": name}
                if _is_lfs(name):
                    entry["lfs"] = {"oid": _etag(name, data), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return entries

        # -- file downloads ----------------------------------------------------------------------

        def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
            commit = self._lookup(repo_id, revision)
            data = commit.files.get(filename)
            if data is None:
                raise _NotFound("EntryNotFound", f"{filename} does not exist", commit.sha)
            start, status = self._range_start(len(data))
            if start is None:
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head=head)
                return
            etag = _etag(filename, data)
            headers = {
                "X-Repo-Commit": commit.sha,
                "ETag": f'"{etag}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if _is_lfs(filename):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if head:
                self._send(status, b"", headers, head=True, length=len(body))
                return
            key = (repo_id, filename)
            cut_at = hub._take_cut(key)
            stall = hub._take_stall(key)
            self._send_headers(status, headers, len(body))
            if cut_at is not None:
                self._write(body[: max(0, cut_at - start)])
                self.close_connection = True
                _hard_close(self.connection)
                return
            if stall is not None:
                stalled, release = stall
                self._write(body[:64])
                stalled.set()
                release.wait(timeout=60)
                body = body[64:]
            self._write(body)

        def _range_start(self, size: int) -> tuple[int | None, int]:
            """(first byte, status) for a `Range: bytes=N-` request; (None, 416) if N is past the end."""
            header = self.headers.get("Range")
            if not header or not header.startswith("bytes="):
                return 0, 200
            first = header[len("bytes="):].split("-", 1)[0]
            start = int(first) if first else 0
            return (start, 206) if start < size else (None, 416)

        # -- writing ------------------------------------------------------------------------------

        def _send_json(self, status: int, payload, headers: dict | None = None, head: bool = False) -> None:
            body = json.dumps(payload).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head=head)

        def _send(
            self, status: int, body: bytes, headers: dict, *, head: bool = False, length: int | None = None
        ) -> None:
            self._send_headers(status, headers, len(body) if length is None else length)
            if not head:
                self._write(body)

        def _send_headers(self, status: int, headers: dict, length: int) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def _write(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:  # the client went away (a killed download): nothing to do
                self.close_connection = True

    return Handler
