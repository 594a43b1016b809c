"""`gpt2cli batch --score`: records are scored together in padded passes (grouped by length), each
line what `score --json` prints for the text to rounding; bad records, empty texts and texts past the
context get error lines; -b 1 and --stride score one record at a time; an interrupted run resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpt2cli.engine.model import GPT2Model
from gpt2cli.decoding.scores import score_record
from gpt2cli.session import Session
from tests.support.cli import kill_9_once_written, run, run_quick
from tests.support.records import assert_same_record

# Characters the tiny tokenizer never merges: a text of n of them is n tokens.
PLAIN = "bcdfgjkmpqvxz"
LENGTHS = [1, 2, 3, 5, 8, 13, 20, 23, 30, 31, 45, 64, 80, 100, 127, 128]  # the tiny model's context: 128


def text_of(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(PLAIN), size=n))


def score_records() -> list[dict]:
    records = [{"id": f"len{n}", "text": text_of(n, n)} for n in LENGTHS]
    records.insert(3, {"id": "empty", "text": ""})
    records.insert(9, {"id": "too-long", "text": text_of(200, 1)})
    records.insert(12, {"text": "no id: its line number is its id"})
    return records


def input_of(records: list[dict], bad_at: int = 6) -> str:
    lines = [json.dumps(r) for r in records]
    lines.insert(bad_at, "not json")
    return "".join(line + "\n" for line in lines)


def by_id(text: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in text.splitlines() if line]
    found = {json.dumps(line["id"]): line for line in lines}
    assert len(found) == len(lines), "an id appears twice"
    return found


@pytest.fixture(scope="module")
def single_lines(tiny_model) -> dict[str, dict]:
    """id -> the line `score --json` prints for each valid record's text (Session.score, in process)."""
    session = Session.open(tiny_model)
    lines = {}
    for line, record in enumerate(score_records(), start=1):
        rid = record.get("id", line + (line >= 7))  # the bad line is line 7
        ids = session.tokenizer.encode(record["text"])
        if 1 <= len(ids) <= session.config.n_positions:
            lines[json.dumps(rid)] = {"id": rid, **score_record(session.score(ids))}
    assert [len(line["tokens"]) for key, line in lines.items() if key.startswith('"len')] == LENGTHS
    return lines


def test_score_many_in_small_lm_head_products_equals_score(tiny_model, monkeypatch):
    """Errors where score raises them, in place; every other text's Scored as score's, to rounding,
    with the LM head run over at most LOGIT_ROWS positions at a time (here 7: chunks cut across texts)."""
    from gpt2cli.batch import scoring

    session = Session.open(tiny_model)
    texts = [session.tokenizer.encode(text_of(n, n)) for n in (9, 1, 0, 17, 129, 4, 30, 3)]
    rows = []
    logits = GPT2Model.logits
    monkeypatch.setattr(scoring, "LOGIT_ROWS", 7)
    monkeypatch.setattr(GPT2Model, "logits", lambda self, h: rows.append(len(h)) or logits(self, h))
    results = dict(scoring.score_many(session, texts))
    assert sorted(results) == list(range(len(texts))) and max(rows) == 7 and sum(rows) == 9 + 1 + 17 + 4 + 30 + 3
    for i, ids in enumerate(texts):
        if i in (2, 4):
            with pytest.raises(type(results[i]), match=str(results[i])):
                session.score(ids)
            continue
        got, single = results[i], session.score(ids)
        assert got.tokens == ids and got.logprobs.dtype == np.float32
        assert_same_record(score_record(got), score_record(single), label=i)


def test_batch_size_1_scores_each_record_exactly_as_score_does(tiny_model, single_lines):
    r = run("batch", "--score", "-", "-m", tiny_model, "-b", "1", stdin=input_of(score_records()))
    assert r.code == 6 and "3 of 20 records failed" in r.err, r.err
    got = by_id(r.stdout)
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()][:8] == ["len1", "len2", "len3", "empty", "len5", "len8", 7, "len13"]
    for key, line in single_lines.items():
        assert got[key] == line, key
    assert got['"empty"'] == {"id": "empty", "error": "nothing to score: the text is empty; give a text of at least one character"}
    assert "200 tokens" in got['"too-long"']["error"] and "128" in got['"too-long"']["error"]
    assert "not JSON" in got["7"]["error"]
    one = json.loads(run("score", "--json", "-m", tiny_model, text_of(20, 20)).out)
    assert got['"len20"'] == {"id": "len20", **one}


@pytest.mark.parametrize("batch_size", ["3", "32"])
def test_records_scored_together_equal_score_to_rounding(tiny_model, single_lines, batch_size):
    records = score_records()
    alone = by_id(run("batch", "--score", "-", "-m", tiny_model, "-b", "1", stdin=input_of(records)).stdout)
    r = run("batch", "--score", "-", "-m", tiny_model, "-b", batch_size, stdin=input_of(records))
    assert r.code == 6 and "3 of 20 records failed" in r.err and "Traceback" not in r.err, r.err
    got = by_id(r.stdout)
    assert set(got) == set(alone)
    for key, line in alone.items():  # the errors exactly as one at a time, the scores as `score`'s
        assert_same_record(got[key], single_lines.get(key, line), label=key)


def test_ordered_writes_scores_in_input_order(tiny_model):
    records = score_records()
    r = run("batch", "--score", "-", "-m", tiny_model, "-b", "4", "--ordered", stdin=input_of(records))
    ids = [json.loads(line)["id"] for line in r.stdout.splitlines()]
    expected = [r.get("id", 14) for r in records]
    assert ids == expected[:6] + [7] + expected[6:]


def count_passes(monkeypatch) -> dict:
    """Counts forward passes (every pass runs hidden_states) and the caches' (batch, capacity)."""
    seen = {"passes": 0, "caches": []}
    hidden_states, new_cache = GPT2Model.hidden_states, GPT2Model.new_cache

    def counted(self, *args, **kwargs):
        seen["passes"] += 1
        return hidden_states(self, *args, **kwargs)

    def recorded(self, batch=1, capacity=None):
        seen["caches"].append((batch, capacity or self.config.n_positions))
        return new_cache(self, batch, capacity)

    monkeypatch.setattr(GPT2Model, "hidden_states", counted)
    monkeypatch.setattr(GPT2Model, "new_cache", recorded)
    return seen


def test_short_texts_share_passes_over_caches_no_longer_than_their_texts(tiny_model, monkeypatch):
    """30 texts of 1 to 30 tokens at -b 8 (read 32 at a time): a few padded passes, not 30; each cache
    holds its group's rows for its longest text only."""
    texts = "".join(json.dumps({"id": n, "text": text_of(n, n)}) + "\n" for n in range(1, 31))
    seen = count_passes(monkeypatch)
    r = run_quick("batch", "--score", "-", "-m", tiny_model, "-b", "8", stdin=texts)
    assert r.code == 0, r.err
    assert sorted(json.loads(line)["id"] for line in r.stdout.splitlines()) == list(range(1, 31))
    assert seen["passes"] <= 10, seen
    assert all(capacity <= 30 and batch * capacity <= 2048 for batch, capacity in seen["caches"]), seen
    assert sum(batch for batch, _ in seen["caches"]) == 30


@pytest.mark.parametrize("extra", [["-b", "1"], ["-b", "8", "--stride", "16"]])
def test_batch_size_1_and_stride_still_score_one_record_at_a_time(tiny_model, monkeypatch, extra):
    texts = "".join(json.dumps({"id": n, "text": text_of(n, n)}) + "\n" for n in range(1, 11))
    seen = count_passes(monkeypatch)
    r = run_quick("batch", "--score", "-", "-m", tiny_model, *extra, stdin=texts)
    assert r.code == 0, r.err
    assert seen["passes"] == 10 and {batch for batch, _ in seen["caches"]} == {1}


def test_records_are_read_a_few_batches_ahead_not_all_at_once(tiny_model):
    """The first results come out after at most 4 x batch_size records are read, so a long input
    streams and memory stays bounded."""
    from gpt2cli.batch.local import results_of
    from gpt2cli.batch.records import Record
    from gpt2cli.request import Request

    session = Session.open(tiny_model)
    pulled = []

    def records():
        for n in range(1, 41):
            pulled.append(n)
            yield Record(n, text_of(n % 9 + 1, n), {}, n)

    results = results_of(session, records(), Request(), 0, True, None, False, 2)
    first = next(results)
    assert len(pulled) <= 8 and 0 <= first[0] < 8
    assert sorted([first[0]] + [index for index, _ in results]) == list(range(40))


def test_a_torn_last_line_is_repaired_and_the_rerun_scores_the_rest(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text_of(i % 40 + 1, i)}) + "\n" for i in range(50)), encoding="utf-8")
    whole = tmp_path / "whole.jsonl"
    assert run("batch", "--score", source, "-m", tiny_model, "-b", "4", "-o", whole).code == 0
    expected = whole.read_text(encoding="utf-8").splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(line + "\n" for line in expected[:9]) + expected[9][:30], encoding="utf-8")
    r = run("batch", "--score", source, "-m", tiny_model, "-b", "4", "-o", torn)
    assert r.code == 0 and "9 records already in" in r.err, r.err
    got = by_id(torn.read_text(encoding="utf-8"))
    assert set(got) == {str(i) for i in range(50)}
    for key, line in by_id("\n".join(expected)).items():
        assert_same_record(got[key], line, label=key)


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_scores(tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    n = 600
    source.write_text("".join(json.dumps({"id": i, "text": text_of(i % 120 + 1, i)}) + "\n" for i in range(n)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    written = kill_9_once_written(out, "batch", "--score", source, "-m", tiny_model, "-b", "4", "-o", out)
    assert 3 <= written < n
    r = run("batch", "--score", source, "-m", tiny_model, "-b", "4", "-o", out, timeout=300)
    assert r.code == 0 and f"{written} records already in" in r.err, r.err
    whole = tmp_path / "whole.jsonl"
    assert run("batch", "--score", source, "-m", tiny_model, "-b", "4", "-o", whole, timeout=300).code == 0
    got, expected = by_id(out.read_text(encoding="utf-8")), by_id(whole.read_text(encoding="utf-8"))
    assert set(got) == set(expected)
    for key, line in expected.items():
        assert_same_record(got[key], line, label=key)


def test_nan_weights_stop_the_batch_with_one_line_naming_the_folder(tmp_path):
    """A broken checkpoint is no record's error: the run stops (exit 3), as `score` does, nothing on stdout."""
    from safetensors.numpy import load_file, save_file

    from tests.support import models
    from tests.support.cli import assert_one_error_line

    folder = models.write_model(tmp_path / "nan", n_layer=1, seed=6)
    tensors = dict(load_file(str(folder / "model.safetensors")))
    tensors["h.0.mlp.c_proj.bias"] = np.full_like(tensors["h.0.mlp.c_proj.bias"], np.nan)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    texts = "".join(json.dumps({"id": n, "text": text_of(n, n)}) + "\n" for n in range(1, 9))
    r = run_quick("batch", "--score", "-", "-m", folder, "-b", "4", stdin=texts)
    line = assert_one_error_line(r, 3)
    assert str(folder) in line and "NaN or infinite" in line and r.out == b"", line


def test_decoding_options_and_settings_are_refused_with_score_not_silently_ignored(tiny_model):
    from tests.support.cli import assert_one_error_line, run_quick

    texts = '{"id": 1, "text": "Hello world"}\n'
    line = assert_one_error_line(run_quick("batch", "--score", "-", "-m", tiny_model, "-n", "5", "-t", "0", stdin=texts), 2)
    assert "--max-tokens, --temperature say how text is generated, and --score generates none; drop them" in line
    line = assert_one_error_line(run_quick("batch", "--score", "-", "-m", tiny_model, "--seed", "0", stdin=texts), 2)
    assert "--seed says how text is generated" in line and "drop it" in line  # given, even at its default value
    r = run_quick("batch", "--score", "-", "-m", tiny_model, "-b", "2", "--ordered", stdin=texts)  # options that do apply
    assert r.code == 0, r.err
    mixed = texts + '{"id": 2, "text": "Hello", "temperature": 0.5}\n{"id": 3, "text": "x", "seed": null}\n'
    r = run_quick("batch", "--score", "-", "-m", tiny_model, "--ordered", stdin=mixed)
    assert r.code == 6, r.err
    first, second, third = (json.loads(line) for line in r.stdout.splitlines())
    assert "perplexity" in first and "perplexity" in third  # null: not given, as everywhere in a record
    assert second == {"id": 2, "error": "setting 'temperature' does not apply to --score (texts are scored, nothing is generated); drop it"}
