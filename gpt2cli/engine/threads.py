"""The engine's CPU threads: a fork-join over a few worker threads, and numpy's OpenBLAS thread count.

numpy's elementwise operations run on one core, so attention's softmax, GELU and layer norms of a
long prompt leave the other cores idle. split() runs work in parts on the caller and on worker
threads: numpy releases the GIL inside its loops and BLAS calls, so the parts really run at once.
Where parts call BLAS (a prompt's products, attention's small ones), OpenBLAS must use one thread
per caller, or its thread pools fight over the cores (a prefill's attention measured 1.3x slower
instead of 1.5x faster). OpenBLAS's thread count is one
setting for the whole process (openblas_set_num_threads_local() sets it too and returns the old
value), so split() sets it to 1 while its parts run and puts it back when they are all done; the
engine is the only user of BLAS in the process. The entry point is found through ctypes in the
library numpy loaded (OpenBLAS >= 0.3.27). With another BLAS, such work runs on the caller alone.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

# OpenBLAS's entry points under the names of the builds numpy ships or links (scipy-openblas's
# symbols carry a prefix and suffix; its openblas_set_num_threads_local does not).
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_", "openblas_get_num_threads")
_SET_LOCAL_NAMES = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local64_")


class _Blas:
    """numpy's OpenBLAS through ctypes, or nothing (another BLAS, no /proc, an old OpenBLAS)."""

    def __init__(self) -> None:
        self.get_threads: Callable[[], int] | None = None
        self.set_local: Callable[[int], int] | None = None
        path = self._library_path()
        if path is None:
            return
        try:  # RTLD_NOLOAD: the handle of the copy numpy loaded, never a second copy
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        except OSError:
            return
        for name in _GET_NAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = ctypes.c_int, []
                self.get_threads = fn
                break
        for name in _SET_LOCAL_NAMES:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
                self.set_local = fn
                break

    @staticmethod
    def _library_path() -> str | None:
        """The OpenBLAS shared library numpy has loaded into this process (Linux: /proc/self/maps)."""
        import numpy  # noqa: F401  (numpy's BLAS must be loaded before we look for it)

        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                paths = {line.split(None, 5)[-1].strip() for line in maps if "openblas" in line.lower()}
        except OSError:
            return None
        libs = sorted(p for p in paths if p.startswith("/") and ".so" in os.path.basename(p))
        return libs[0] if libs else None


_blas: _Blas | None = None


def _get_blas() -> _Blas:
    global _blas
    if _blas is None:
        _blas = _Blas()
    return _blas


def blas_threads() -> int | None:
    """OpenBLAS's thread count for this process (None if numpy's BLAS is not a recognised OpenBLAS)."""
    get = _get_blas().get_threads
    return int(get()) if get is not None else None


def can_pin_blas() -> bool:
    """Whether parts that call BLAS can each run it on one thread (see the module docstring)."""
    return _get_blas().set_local is not None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within this block, BLAS calls use one thread each (no-op without the control)."""
    global _pinned_from
    set_local = _get_blas().set_local
    if set_local is None or _pinned_from is not None:  # no control, or already held to one
        yield
        return
    before = set_local(1)
    _pinned_from = before
    try:
        yield
    finally:
        _pinned_from = None
        set_local(before)


_pinned_from: int | None = None  # OpenBLAS's thread count while one_blas_thread() holds it at 1


def _cpu_reader() -> Callable[[], int] | None:
    """libc's sched_getcpu(): the CPU the calling thread runs on (None where there is none)."""
    try:
        fn = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError, TypeError):  # no libc by that name, no such call (macOS), Windows
        return None
    fn.restype, fn.argtypes = ctypes.c_int, []
    return fn if fn() >= 0 else None


_current_cpu = _cpu_reader()


def _step_aside(caller_cpu: int | None) -> None:
    """Moves this worker off the CPU its caller runs on, if it woke up there.

    The kernel often wakes a worker on the CPU of the thread that woke it, and then the two halves of a
    fork-join share one core until its load balancer separates them: on a 2-core VM, 9 % of a prompt's
    fork-joins started so and took 1.4-1.9x as long (benchmarks/README.md). Narrowing this thread's
    affinity to the other CPUs moves it at once; widening it again right after leaves it where it is.
    """
    if caller_cpu is None or _current_cpu is None or _current_cpu() != caller_cpu:
        return
    try:
        allowed = os.sched_getaffinity(0)
        others = allowed - {caller_cpu}
        if others:
            os.sched_setaffinity(0, others)
            os.sched_setaffinity(0, allowed)
    except (OSError, AttributeError):  # no affinity control here (a container, another OS): the part runs where it is
        pass


class _Pool:
    """Daemon worker threads, each taking one task at a time from its own queue."""

    def __init__(self) -> None:
        self.inboxes: list[queue.SimpleQueue] = []

    def grow(self, n: int) -> None:
        """At least n workers (the ones already running are kept)."""
        while len(self.inboxes) < n:
            inbox: queue.SimpleQueue = queue.SimpleQueue()
            name = f"gpt2cli-engine-{len(self.inboxes)}"
            threading.Thread(target=self._work, args=(inbox,), name=name, daemon=True).start()
            self.inboxes.append(inbox)

    @staticmethod
    def _work(inbox: queue.SimpleQueue) -> None:
        while True:
            task, done, caller_cpu = inbox.get()
            try:
                _step_aside(caller_cpu)
                task()
                done.put(None)
            except BaseException as exc:  # handed to the caller, which re-raises it
                done.put(exc)


_pool = _Pool()
_pool_lock = threading.Lock()
_workers_override: int | None = None


def workers() -> int:
    """How many parts split() makes: OpenBLAS's thread count (else the usable cores), at most 8."""
    if _workers_override is not None:
        return _workers_override
    n = _pinned_from if _pinned_from is not None else blas_threads()
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, n))


def set_workers(n: int | None) -> None:
    """Fixes the number of parts (1 = everything on the caller); None goes back to the default."""
    global _workers_override
    _workers_override = None if n is None else max(1, int(n))


def split(fn: Callable[[int, int], None], n_items: int, *, calls_blas: bool = False) -> None:
    """Runs fn(start, stop) over contiguous parts of range(n_items) at once, and returns when all are done.

    The caller runs the first part itself. calls_blas: the parts call BLAS, so they run at once only
    where OpenBLAS can be held to one thread per part (otherwise fn(0, n_items) runs alone).
    """
    parts = min(workers(), n_items)
    if calls_blas and not can_pin_blas():
        parts = 1
    if parts <= 1:
        fn(0, n_items)
        return
    bounds = [n_items * i // parts for i in range(parts + 1)]
    with _pool_lock:
        _pool.grow(parts - 1)
    with one_blas_thread() if calls_blas else nullcontext():
        done: queue.SimpleQueue = queue.SimpleQueue()
        cpu = _current_cpu() if _current_cpu is not None else None
        for inbox, start, stop in zip(_pool.inboxes, bounds[1:-1], bounds[2:]):
            inbox.put((lambda start=start, stop=stop: fn(start, stop), done, cpu))
        error: BaseException | None = None
        try:
            fn(bounds[0], bounds[1])
        except BaseException as exc:
            error = exc
        for _ in range(parts - 1):  # always wait: the parts write into the caller's arrays
            result = done.get()
            if error is None and result is not None:
                error = result
    if error is not None:
        raise error

