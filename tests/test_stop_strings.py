"""Stop strings: found wherever they fall across tokens, held back while they may still begin, and
found in time that does not grow with how many there are."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2cli.decoding.text import SampleText


def _stream(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(what take() showed while streaming + finish(), the final text, stopped)."""
    text = SampleText(stops)
    shown = []
    for piece in pieces:
        text.add(piece)
        shown.append(text.take())
    shown.append(text.finish())
    return "".join(shown), text.text, text.stopped


def _reference(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text cut before the earliest stop, searching after each piece as it arrives."""
    text = ""
    for piece in pieces:
        before = len(text)
        text += piece
        hits = [i for i in (text.find(s, max(0, before - len(s) + 1)) for s in stops if s) if i >= 0]
        if hits:
            return text[: min(hits)], True
    return text, False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ab\nc", max_size=4), max_size=12),
    st.lists(st.text(alphabet="ab\nc", min_size=1, max_size=4), max_size=4).map(tuple),
)
def test_stops_cut_where_a_plain_search_cuts(pieces, stops):
    shown, final, stopped = _stream(pieces, stops)
    assert (final, stopped) == _reference(pieces, stops)
    assert shown == final  # nothing shown that was later cut, nothing lost


def test_a_possible_stop_start_is_held_back_until_it_cannot_be_one():
    text = SampleText(("\n\nEND",))
    text.add("hello\n")
    assert text.take() == "hello"
    text.add("\nEN")
    assert text.take() == ""
    text.add("D more")
    assert text.stopped and text.text == "hello"


def test_many_stop_strings_cost_about_what_a_few_cost():
    """10,000 stops of up to 200 characters, 200 tokens: a linear scan of the stops per token took
    over ten seconds; a lookup per stop length takes a fraction of one."""
    rng = random.Random(1)
    alphabet = "abcdefghij"
    stops = tuple("".join(rng.choices(alphabet, k=rng.randint(150, 200))) for _ in range(10_000))
    pieces = ["".join(rng.choices(alphabet, k=4)) for _ in range(200)]
    started = time.perf_counter()
    shown, final, stopped = _stream(pieces, stops)
    elapsed = time.perf_counter() - started
    assert not stopped and shown == final == "".join(pieces)
    assert elapsed < 3.0, f"{elapsed:.1f} s for 200 tokens with 10,000 stop strings"
