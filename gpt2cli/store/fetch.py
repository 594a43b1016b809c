"""One Hub file into a staging folder: resumable across runs, checked against the Hub's checksum,
and stoppable within a fraction of a second (Ctrl-C / SIGTERM).

huggingface_hub's downloader writes to a per-process temporary file that it deletes on failure (so a
killed run restarts from byte 0 and orphans *.incomplete files) and blocks in socket reads or worker
threads the main thread's signal handler cannot reach. So gpt2cli fetches the few files it needs
itself, over huggingface_hub's HTTP session (same headers, token and endpoint):

    <staging>/<name>.part   bytes received so far, written unbuffered: a kill -9 keeps them
    <staging>/<name>        the verified file: its size and its sha256 (LFS) or git blob sha1 match

The transfer runs in a daemon thread; the main thread waits on it with a timeout, so a signal's
exception is raised at once and the process exits without waiting for the network.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpt2cli.errors import DownloadError

_READ_TIMEOUT = 30.0  # seconds without a byte before a stalled transfer is retried
# A transfer that brings fewer than _MIN_RATE bytes/s over _RATE_WINDOW seconds counts as stalled too
# (as curl's --speed-limit/--speed-time): a server trickling a byte at a time never trips the read
# timeout, and would hold the download for days. A real link, even a poor one, is far above this.
_MIN_RATE = 1024
_RATE_WINDOW = 60.0
_ATTEMPTS = 5  # transfers of one file per run (each resumes where the last stopped)
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """A file of one commit as the Hub lists it: what it must be once downloaded."""

    name: str
    size: int | None
    sha256: str | None  # LFS files: the sha256 of the content
    blob_id: str | None  # other files: the git blob sha1


def remote_files(siblings) -> dict[str, Remote]:
    """The Hub's sibling list (model_info(files_metadata=True)) -> Remote by file name."""
    out = {}
    for s in siblings or []:
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        out[s.rfilename] = Remote(s.rfilename, s.size, sha, getattr(s, "blob_id", None))
    return out


class _Hasher:
    """sha256 of the content, or git's blob sha1 (`blob <size>\\0` + content) when the Hub gave that."""

    def __init__(self, remote: Remote):
        self.remote = remote
        if remote.sha256:
            self.h = hashlib.sha256()
        elif remote.blob_id and remote.size is not None:
            self.h = hashlib.sha1(b"blob %d\0" % remote.size)
        else:
            self.h = None

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)

    def matches(self) -> bool:
        if self.h is None:
            return True
        return self.h.hexdigest() == (self.remote.sha256 or self.remote.blob_id)


def is_verified(path: Path, remote: Remote) -> bool:
    """Whether `path` holds exactly the Hub's file (size, then checksum)."""
    try:
        if not path.is_file() or (remote.size is not None and path.stat().st_size != remote.size):
            return False
        hasher = _Hasher(remote)
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                hasher.update(block)
    except OSError:
        return False
    return hasher.matches()


def run_interruptibly(work: Callable[[threading.Event], None]) -> None:
    """Runs work(stop) in a daemon thread and waits for it; a signal in the main thread (Ctrl-C,
    SIGTERM) raises here at once, sets `stop` and leaves the thread to die with the process."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work(stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failure.append(e)

    thread = threading.Thread(target=target, name="gpt2cli-download", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    finally:
        stop.set()
    if failure:
        raise failure[0]


def fetch_file(url: str, headers: dict, remote: Remote, staging: Path, stop: threading.Event, bar=None) -> None:
    """Brings `remote` into `staging`, resuming its .part file; raises DownloadError when the Hub keeps
    breaking the transfer, and retries from byte 0 once when the finished bytes fail the checksum."""
    final, part = staging / remote.name, staging / (remote.name + ".part")
    for path in (final, part):  # a symlink or a special file here is not one we wrote: never follow it
        _remove_unless_regular(path)
    if final.exists():
        if is_verified(final, remote):
            return
        final.unlink()  # provably not the Hub's file (e.g. truncated): fetch it again
    for fresh_start in (False, True):
        if fresh_start:
            part.unlink(missing_ok=True)
        _transfer(url, headers, remote, part, stop, bar)
        if is_verified(part, remote):
            os.replace(part, final)
            return
    part.unlink(missing_ok=True)
    raise DownloadError(
        f"the Hub sent {remote.name} twice with the wrong size or checksum; the file on the Hub or a proxy "
        "in between is broken: try again later, or pass --model PATH to a model folder"
    )


def _remove_unless_regular(path: Path) -> None:
    """Removes path if it is a symlink, a pipe, a device or any other non-regular, non-folder entry."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        os.unlink(path)


class RateFloor:
    """Whether a stream keeps to _MIN_RATE bytes/s, judged over each _RATE_WINDOW seconds (a file's
    transfer here, the Hub's description of a repo in download.py)."""

    def __init__(self) -> None:
        self._start, self._bytes = time.monotonic(), 0

    @property
    def rate(self) -> int:
        """The floor, bytes/s."""
        return _MIN_RATE

    def stalled(self, received: int) -> bool:
        """Counts `received` more bytes; True when a whole window has passed with too few."""
        self._bytes += received
        if time.monotonic() - self._start < _RATE_WINDOW:
            return False
        if self._bytes < _MIN_RATE * _RATE_WINDOW:
            return True
        self._start, self._bytes = time.monotonic(), 0
        return False


class _TooSlow(ConnectionError):
    """A transfer far below any real link's speed (_MIN_RATE over _RATE_WINDOW): resumed like a broken one."""


def _open_part(part: Path, mode: str):
    """The .part file for writing ("wb" from byte 0, "ab" appending), unbuffered, never through a symlink
    (O_NOFOLLOW: one planted after the check in fetch_file fails here instead of being written through)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    return open(os.open(part, flags, 0o644), mode, buffering=0)


def _transfer(url: str, headers: dict, remote: Remote, part: Path, stop: threading.Event, bar) -> None:
    """Appends the missing bytes to `part`, with a Range request from its current size; a broken
    connection is retried a few times, each resuming where the last one stopped."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    last: Exception | None = None
    for _ in range(_ATTEMPTS):
        have = part.stat().st_size if part.exists() else 0
        if remote.size is not None and have > remote.size:
            part.unlink()  # longer than the file: not a prefix of it
            have = 0
        if remote.size is not None and have == remote.size:
            return
        request_headers = {**headers, **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with get_session().stream(
                "GET", url, headers=request_headers, follow_redirects=True, timeout=(10.0, _READ_TIMEOUT)
            ) as response:
                if response.status_code == 416:  # nothing past what we have: let the checksum judge it
                    return
                hf_raise_for_status(response)
                mode = "ab" if have and response.status_code == 206 else "wb"
                if bar is not None:
                    bar.reset(total=remote.size)
                    bar.update(have if mode == "ab" else 0)
                # Never more than the Hub listed: a server (or proxy) sending without end must not fill the disk.
                left = None if remote.size is None else remote.size - (have if mode == "ab" else 0)
                floor = RateFloor()
                with _open_part(part, mode) as f:  # unbuffered: a killed run keeps every byte received
                    for chunk in response.iter_bytes():
                        if stop.is_set():
                            return
                        if left is not None:
                            chunk = chunk[:left]
                            left -= len(chunk)
                        f.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                        if left == 0:
                            break  # the rest, if any, is not the listed file: the checksum judges what came
                        if floor.stalled(len(chunk)):  # what came is kept: the next try resumes
                            raise _TooSlow(remote.name)
            if remote.size is None or part.stat().st_size >= remote.size:
                return
        except Exception as e:  # noqa: BLE001 - transport errors: resume; HTTP errors: raised below
            if _is_http_error(e):
                raise
            last = e
        if stop.is_set():
            return
    if isinstance(last, _TooSlow):
        raise DownloadError(
            f"the Hub sent {remote.name} at under {_MIN_RATE} bytes/s for {_ATTEMPTS} tries of {_RATE_WINDOW:.0f} s; "
            "the connection is too slow or stalled: run the command again later to resume"
        )
    if last is not None:
        raise last
    raise ConnectionError(f"the transfer of {remote.name} kept stopping early")


def _is_http_error(e: Exception) -> bool:
    """An answer to give up on (HTTP status, disk full), not a broken connection to resume."""
    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        from huggingface_hub.utils import HfHubHTTPError
    if isinstance(e, HfHubHTTPError):
        return True
    return isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.errno is not None
