"""The prompt from stdin and the argument: invalid UTF-8, empty or whitespace-only text,
<|endoftext|> typed as text, a closed stdin."""

from __future__ import annotations

import os

from gpt2cli.store.tokenizer import Tokenizer
from tests.support.cli import assert_one_error_line, run


def test_invalid_utf8_stdin_becomes_replacement_characters_with_one_note(tiny_model):
    r = run("tokenize", "-m", tiny_model, "--json", stdin=b"\xff\xfehi")
    assert r.code == 0, r.err
    assert r.err_lines == ["gpt2cli: stdin is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert r.json["ids"] == Tokenizer.from_folder(tiny_model).encode("\ufffd\ufffdhi")


def test_invalid_utf8_prompt_argument_becomes_replacement_characters_with_one_note(tiny_model):
    r = run("tokenize", "-m", tiny_model, "--json", b"caf\xe9")
    assert r.code == 0, r.err
    assert r.err_lines == ["gpt2cli: the PROMPT argument is not valid UTF-8: invalid bytes were replaced with U+FFFD"]
    assert r.json["ids"] == Tokenizer.from_folder(tiny_model).encode("caf\ufffd")


def test_empty_stdin_generates_unconditionally_from_endoftext(tiny_model):
    empty = run("generate", "-m", tiny_model, "-n", "5", "-t", "0", "--ignore-eos", "--json", stdin=b"")
    assert empty.code == 0 and empty.err == "", empty.err
    assert empty.json["prompt_tokens"] == 1 and empty.json["completion_tokens"] == 5
    # the same as giving <|endoftext|> itself as the special token
    eot = run("generate", "-m", tiny_model, "-n", "5", "-t", "0", "--ignore-eos", "--json", "--allow-special", "<|endoftext|>")
    assert eot.code == 0 and eot.json["tokens"] == empty.json["tokens"]


def test_endoftext_in_the_text_is_plain_text_unless_allow_special(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "2", "--json", stdin=b"<|endoftext|>")
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == len(Tokenizer.from_folder(tiny_model).encode("<|endoftext|>")) > 1


def test_whitespace_only_prompt_is_a_prompt_like_any_other(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "3", "--ignore-eos", "--json", stdin=b" \n\t  \n")
    assert r.code == 0 and r.err == "", r.err
    # one trailing newline of stdin is dropped, the rest is the prompt
    assert r.json["prompt_tokens"] == len(Tokenizer.from_folder(tiny_model).encode(" \n\t  "))
    assert r.json["completion_tokens"] == 3


def test_scoring_empty_text_is_a_usage_error(tiny_model):
    line = assert_one_error_line(run("score", "-m", tiny_model, stdin=b""))
    assert "empty" in line


def test_closed_stdin_is_an_empty_prompt(tiny_model):
    r = run("generate", "-m", tiny_model, "-n", "2", "--json", stdin=None, preexec_fn=lambda: os.close(0))
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == 1
