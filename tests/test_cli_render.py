"""What the tables, JSON records and notes say: column names, escapes, plurals, digits, counts."""

from __future__ import annotations

import numpy as np

from gpt2cli.cli import render
from gpt2cli.decoding.scores import Scored
from tests.support import cli


class _Bytes:
    """A tokenizer stand-in: token id -> its bytes."""

    def __init__(self, table: dict[int, bytes]):
        self.table = table

    def token_bytes(self, token: int) -> bytes:
        return self.table[token]


def _scored(tokens: list[int]) -> Scored:
    lps = np.full(len(tokens), -1.5, dtype=np.float32)
    return Scored(tokens, lps, float(lps.sum()), float(np.exp(1.5)))


def test_score_table_heads_ids_as_id_and_shows_token_text():
    table = render.score_table(_scored([7, 8]), _Bytes({7: b" cat", 8: b"\n"}))
    header, first, second, total = table.splitlines()
    assert header.split() == ["id", "logprob", "token"]
    assert first.split() == ["7", "-1.5000", '"', 'cat"'] and first.endswith('" cat"')
    assert second.endswith('"\\n"')


def test_score_table_shows_partial_bytes_escaped_once():
    table = render.score_table(_scored([1, 2, 3]), _Bytes({1: b"\xe7", 2: b'a\\b"', 3: b"\x1b[2J"}))
    lines = table.splitlines()
    assert lines[1].endswith('"\\xe7"'), lines[1]
    assert lines[2].endswith('"a\\\\b\\""'), lines[2]
    assert lines[3].endswith('"\\x1b[2J"'), lines[3]  # no escape sequence reaches the terminal


def test_score_table_counts_in_words():
    assert "over 1 token," in render.score_table(_scored([7]), _Bytes({7: b"a"}))
    assert "over 2 tokens," in render.score_table(_scored([7, 7]), _Bytes({7: b"a"}))


def test_beam_table_shows_small_scores_with_significant_digits():
    rows = [
        render.DecodingRow("beam 1", -0.000123, -0.5, "length", "a"),
        render.DecodingRow("beam 2", -0.004321, -1.25, "eos", "b"),
    ]
    table = render.render_beam_table("Hi", 1, rows, 80)
    assert "-0.0001230" in table and "-0.004321" in table
    assert "-0.000 " not in table
    assert "prompt (1 token)" in table


def test_stats_note_says_1_prompt_token(capsys):
    from gpt2cli.cli.common import show_stats

    show_stats(1, 5, 0.0, None)
    assert "1 prompt token," in capsys.readouterr().err


def test_json_prompt_tokens_are_those_the_model_read_after_truncate(tiny_model):
    prompt = "".join(chr(ord("a") + (i * 7) % 26) + " " for i in range(300))  # far beyond the 128 context
    r = cli.run("generate", "-m", tiny_model, "-n", "10", "--on-overflow", "truncate", "--json", "--seed", "1", prompt)
    assert r.code == 0, r.err
    assert r.json["prompt_tokens"] == 128 - 10
    assert r.json["completion_tokens"] == 10


def test_cannot_reach_the_hub_names_hf_endpoint_and_download(tmp_path):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from gpt2cli.store import hub_errors
    from gpt2cli.store.hub import HubRef

    message = str(hub_errors._convert_error(OfflineModeIsEnabled("no network"), HubRef("gpt2", "openai-community/gpt2"), tmp_path))
    assert "HF_ENDPOINT" in message and "gpt2cli download" in message
    assert "--offline" not in message  # nothing is downloaded: --offline cannot help


def test_ignore_eos_keeps_endoftext_as_text_and_as_a_token(tmp_path):
    from tests.support import models

    if not (models.SHARED_TOKENIZER / "vocab.json").is_file():
        import pytest

        pytest.skip("the real GPT-2 tokenizer files are not available")
    model = models.write_model(tmp_path / "eos", seed=1, tokenizer="real", eos_bias=30.0)
    r = cli.run("generate", "-m", model, "-n", "2", "-t", "0", "--ignore-eos", "--json", "hi")
    assert r.code == 0, r.err
    assert r.json["tokens"] == [50256, 50256] and r.json["text"] == "<|endoftext|>" * 2
