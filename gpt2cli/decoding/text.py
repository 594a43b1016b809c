"""Tokens -> text as it streams: an incremental detokenizer that never yields half a UTF-8
character, stop strings held back and cut, and several samples shown one after another.

Pure: token ids and bytes in, strings out. Nothing here prints.
"""

from __future__ import annotations

import bisect
import codecs
import functools
from dataclasses import dataclass, field
from typing import Callable


class Detokenizer:
    """Turns a stream of token ids into text, holding back the bytes of an unfinished character.

    token_bytes(id) gives a token's bytes (the tokenizer's). Feeding every token then calling
    flush() yields exactly the tokenizer's decode of all of them.
    """

    def __init__(self, token_bytes: Callable[[int], bytes]):
        self.token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._decoder.decode(self.token_bytes(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopStrings:
    """Stop strings prepared so that finding them costs the same for 10 of them or 10,000.

    A stop ending at a position is found by looking up the text's suffix of each distinct stop
    length in a set (at most as many lookups as the longest stop has characters); the longest end
    of the text that could still grow into a stop is found by bisecting the sorted stops.
    """

    def __init__(self, stops: tuple[str, ...]):
        self.sorted = sorted(set(s for s in stops if s))
        self.by_length: dict[int, set[str]] = {}
        for stop in self.sorted:
            self.by_length.setdefault(len(stop), set()).add(stop)
        self.lengths = sorted(self.by_length)
        self.longest = self.lengths[-1] if self.lengths else 0

    def first_start(self, text: str, new_from: int) -> int:
        """Where the earliest stop in text begins, among those ending after new_from; -1 if none."""
        first = -1
        for end in range(max(new_from + 1, 1), len(text) + 1):
            for n in self.lengths:
                if n > end:
                    break
                if (first < 0 or end - n < first) and text[end - n : end] in self.by_length[n]:
                    first = end - n
        return first

    def held_suffix(self, text: str) -> int:
        """Length of the longest end of text that is the start (not the whole) of a stop string."""
        for n in range(min(self.longest - 1, len(text)), 0, -1):
            tail = text[-n:]
            i = bisect.bisect_left(self.sorted, tail)
            if i < len(self.sorted) and self.sorted[i].startswith(tail):
                return n
        return 0


@functools.lru_cache(maxsize=8)
def _prepared(stops: tuple[str, ...]) -> StopStrings:
    return StopStrings(stops)  # shared by the rows of one generate call, prepared once


class SampleText:
    """One sample's text as it streams, with stop strings: add() decoded pieces, take() what is safe
    to show (a possible start of a stop string is held back); once a stop string appears, the text
    ends before it and `stopped` is set.
    """

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = _prepared(tuple(stops))
        self.text = ""  # everything decoded so far (cut at the stop once found)
        self.emitted = 0  # how much of text take() has handed out
        self.stopped = False
        self.token_starts: list[int] = []  # character offset at which each token's text began

    def add(self, piece: str, *, new_token: bool = True) -> None:
        if self.stopped:
            return
        if new_token:
            self.token_starts.append(len(self.text))
        searched = len(self.text)  # the text so far held no stop: only ends in the new piece can
        self.text += piece
        if self.stops.longest:
            start = self.stops.first_start(self.text, searched)
            if start >= 0:
                self.text = self.text[:start]
                self.stopped = True

    def take(self) -> str:
        """New text that can be shown now."""
        held = 0 if self.stopped else self._held_suffix()
        return self._emit(len(self.text) - held)

    def finish(self) -> str:
        """All text not yet shown (the sample has ended)."""
        return self._emit(len(self.text))

    def kept_tokens(self) -> int:
        """How many tokens contributed text before the stop (all, when no stop was hit)."""
        if not self.stopped:
            return len(self.token_starts)
        return sum(1 for start in self.token_starts if start < len(self.text))

    def _held_suffix(self) -> int:
        """Length of the longest end of the text that could still grow into a stop string."""
        return self.stops.held_suffix(self.text[-self.stops.longest :]) if self.stops.longest else 0

    def _emit(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out


@dataclass
class Completion:
    """One generated row as it grows: its tokens, their log-probabilities, its text and how it ended."""

    text: SampleText
    detok: Detokenizer
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None  # "eos", "stop" or "length" once it has ended

    @classmethod
    def start(cls, token_bytes: Callable[[int], bytes], stops: tuple[str, ...] = ()) -> "Completion":
        return cls(SampleText(stops), Detokenizer(token_bytes))

    def add(self, token: int, logprob: float | None = None) -> None:
        self.tokens.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)
        self.text.add(self.detok.feed(token))
        if self.text.stopped:
            self.finish_reason = "stop"

    def flush(self) -> str:
        """The rest of a finished row's text: held-back bytes of an unfinished character included."""
        if not self.text.stopped:
            self.text.add(self.detok.flush(), new_token=False)
        return self.text.finish()

    def kept(self) -> int:
        """How many of the tokens made the text (those after a stop string's start are cut)."""
        return self.text.kept_tokens() if self.finish_reason == "stop" else len(self.tokens)


class InOrder:
    """Several rows shown one after another while they decode together: the first streams, the
    others wait for their turn; separator(i) goes before row i (i >= 1)."""

    def __init__(self, rows: list[Completion], separator: Callable[[int], str]):
        self.rows, self.separator, self.shown = rows, separator, 0

    def take(self) -> str:
        """What can be shown now: the current row's new text and every row that has finished since."""
        out = []
        while self.shown < len(self.rows):
            row = self.rows[self.shown]
            out.append(row.text.take())
            if not row.finish_reason:
                break
            out.append(self._next())
        return "".join(out)

    def rest(self) -> str:
        """Everything not shown yet (every row has ended)."""
        out = []
        while self.shown < len(self.rows):
            out.append(self._next())
        return "".join(out)

    def _next(self) -> str:
        text = self.rows[self.shown].flush()
        self.shown += 1
        return text + (self.separator(self.shown) if self.shown < len(self.rows) else "")
