"""Long inputs tokenize exactly as tiktoken would, without tiktoken's regex overflowing its stack.

A whitespace run of ~1M characters makes tiktoken's pre-tokenizer panic (StackOverflow); the
tokenizer encodes such runs apart. These tests prove the cut never changes the ids (property tests
against tiktoken's own encode, with the cut forced on short runs) and that multi-megabyte inputs
reach every command as a result or a clean usage error, never a traceback.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2cli.store import tokenizer as tokmod
from gpt2cli.store.tokenizer import ENDOFTEXT, Tokenizer
from tests.support import models
from tests.support.cli import assert_one_error_line, run

# Characters that exercise every branch of GPT-2's pattern: letters, digits, punctuation, the
# contraction apostrophe, ASCII and Unicode whitespace (\x85, \xa0, \u3000), and \x1c, which Python
# calls whitespace but the pattern does not.
ALPHABET = "aZé9٣.!'sdtlvr \t\n\r\x0b\x0c\x85\xa0\u3000\x1c😀"
texts = st.lists(
    st.one_of(st.text(alphabet=ALPHABET, max_size=12), st.sampled_from([" " * 7, "\n" * 6, "\t" * 5, " \n" * 4, ENDOFTEXT])),
    max_size=12,
).map("".join)


@pytest.fixture(scope="module")
def real_tok(real_tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_folder(real_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    models.write_tiny_tokenizer(folder)
    return Tokenizer.from_folder(folder)


def _same_ids(tok: Tokenizer, text: str, monkeypatch) -> None:
    monkeypatch.setattr(tokmod, "LONG_RUN", 2)  # the cut on every run of two or more spaces
    assert tok.encode(text) == tok.encoding.encode_ordinary(text)
    assert tok.encode(text, allow_special=True) == tok.encoding.encode(text, allowed_special={ENDOFTEXT})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_cut_runs_give_tiktokens_ids_real_bpe(real_tok, text, monkeypatch):
    _same_ids(real_tok, text, monkeypatch)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_cut_runs_give_tiktokens_ids_tiny_bpe(tiny_tok, text, monkeypatch):
    _same_ids(tiny_tok, text, monkeypatch)


@pytest.mark.parametrize(
    "text",
    ["a" + " " * 9 + "b", " " * 9, "x\n\n\n\n\ny", "\t" * 6 + "!", "a" + " " * 5 + "\x1c" + " " * 5 + "b", "  's", "'" + " " * 5 + "ll"],
)
def test_cut_runs_at_the_edges_of_the_pattern(real_tok, text, monkeypatch):
    _same_ids(real_tok, text, monkeypatch)


def test_short_texts_never_scan_for_runs(tiny_tok, monkeypatch):
    """The fast path: below LONG_RUN characters the text goes to tiktoken as it is."""
    monkeypatch.setattr(tokmod.re, "finditer", lambda *a: pytest.fail("scanned a short text"))
    assert tiny_tok.encode("x" + " " * (tokmod.LONG_RUN - 2)) == tiny_tok.encoding.encode_ordinary("x" + " " * (tokmod.LONG_RUN - 2))


@pytest.mark.parametrize("char", [" ", "\n", "\t"])
def test_a_million_whitespace_characters_tokenize(real_tok, char):
    text = "Hello" + char * 1_000_000 + "world" + char * 1_000_000
    ids = real_tok.encode(text)
    assert real_tok.decode(ids) == text
    assert ids[:1] == real_tok.encoding.encode_ordinary("Hello")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return models.write_model(tmp_path_factory.mktemp("long") / "m", n_layer=1, n_positions=64, seed=3)


BIG = {
    "spaces": " " * 2_000_000,
    "newlines": "\n" * 2_000_000,
    "tabs": "\t" * 2_000_000 + "end",
    "digits": "1234567890" * 200_000,
    "no-spaces": "Thequickbrownfoxjumpsoverthelazydog." * 60_000,
}


@pytest.mark.parametrize("name", sorted(BIG))
def test_multi_megabyte_inputs_through_every_command(model, name):
    text = BIG[name]
    r = run("tokenize", "-m", model, stdin=text, timeout=300)
    assert r.code == 0 and "Traceback" not in r.err, r.err[-2000:]
    assert len(r.stdout.split()) > 0
    r = run("generate", "-m", model, "-n", "1", "--seed", "1", stdin=text, timeout=300)
    assert r.code == 0 and "Traceback" not in r.err, r.err[-2000:]
    r = run("score", "-m", model, stdin=text, timeout=300)
    assert "context" in assert_one_error_line(r, 2)
    r = run("beam", "-m", model, "-n", "1", "-b", "2", stdin=text, timeout=300)
    assert "context" in assert_one_error_line(r, 2)
