"""Records read ahead by a thread, for input that comes slowly (a pipe from a program still writing).

The batch must not wait on the input while it has rows to decode or results to write: it asks
ready() and takes only the records that have come, and waits only when nothing else is left to do.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()
_NOTHING = object()

# Records held ahead at most: enough to fill any batch's free slots at once, few enough that memory
# stays bounded while the batch is busy.
AHEAD = 256
# The most their text may weigh together (characters): 256 records of up to 64 MB each (records.MAX_LINE)
# would otherwise be 16 GB read ahead of a batch still busy with the first.
AHEAD_CHARS = 64 << 20


class ReadAhead(Iterator[T]):
    """The items of an iterable, read by a daemon thread into a bounded queue; ready() says whether
    next() would return (or end) at once. An exception the items raise is raised by next() in turn."""

    def __init__(self, items: Iterable[T], ahead: int = AHEAD, *, weigh: Callable[[T], int] = lambda item: 0, budget: int = AHEAD_CHARS):
        """weigh(item): its size (characters); the items held ahead weigh at most budget together (any
        one item is taken however much it weighs, once none is held)."""
        self._queue: queue.Queue = queue.Queue(ahead)
        self._held: object = _NOTHING
        self._weigh, self._budget = weigh, budget
        self._room = threading.Condition()
        self._weight = 0  # of the items in the queue and held
        threading.Thread(target=self._read, args=(items,), name="gpt2cli-input", daemon=True).start()

    def _read(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                weight = self._weigh(item)
                with self._room:
                    while self._weight and self._weight + weight > self._budget:
                        self._room.wait()
                    self._weight += weight
                self._queue.put((item, None, weight))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put((_END, e, 0))
        else:
            self._queue.put((_END, None, 0))

    def ready(self) -> bool:
        """True when next() would not wait: an item, the end or an error has come."""
        if self._held is _NOTHING:
            try:
                self._held = self._queue.get_nowait()
            except queue.Empty:
                return False
        return True

    def __next__(self) -> T:
        if self._held is _NOTHING:
            self._held = self._queue.get()
        item, error, weight = self._held
        if item is _END:  # held, so that every later next() ends (or raises) the same way
            if error is not None:
                raise error
            raise StopIteration
        self._held = _NOTHING
        if weight:
            with self._room:
                self._weight -= weight
                self._room.notify()
        return item
