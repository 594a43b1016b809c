"""`gpt2cli batch --ray`: on a local Ray (2 CPUs), the same result lines as the local batch, resumed
from an output that already holds some, for generation and scoring; and a one-line message when Ray
is not installed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.cli import REPO, run, user_env
from tests.support.records import assert_same_lines

RECORDS = [
    {"id": "greedy", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 10},
    {"id": 7, "prompt": "Hello there", "seed": 3, "top_k": 5},
    {"prompt": "The weather", "top_p": 0.8},  # id 3: a seed derived from --seed and the id
    {"id": "bad", "prompt": "x", "top_p": 7},
    {"id": "stop", "prompt": "and then", "temperature": 0, "stop": ["e"]},
    {"id": "contrastive", "prompt": "Once", "penalty_alpha": 0.6, "top_k": 3},
]


def lines_by_id(text: str) -> dict:
    lines = [line for line in text.splitlines() if line]
    by_id = {json.dumps(json.loads(line)["id"]): line for line in lines}
    assert len(by_id) == len(lines), "an id appears twice"
    return by_id


@pytest.fixture(scope="module")
def ray_installed():
    pytest.importorskip("ray", reason='Ray is not installed (pip install "gpt2cli[ray]"); .ci/run installs it')


def test_ray_gives_the_local_lines_and_resumes(ray_installed, tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    local = run("batch", source, "-m", tiny_model, "-n", "8", "--seed", "5")
    assert local.code == 6, local.err  # the bad record
    expected = lines_by_id(local.stdout)
    out = tmp_path / "out.jsonl"
    done_before = [expected['"greedy"'], expected["7"]]  # a resumed run (the bad record is left to fail again)
    out.write_text("".join(line + "\n" for line in done_before), encoding="utf-8")
    r = run("batch", source, "-m", tiny_model, "-n", "8", "--seed", "5", "--ray", "-o", out, timeout=300)
    assert r.code == 6, r.err
    assert "2 records already in" in r.err and "Traceback" not in r.err
    assert_same_lines(lines_by_id(out.read_text(encoding="utf-8")), expected)


def test_ray_scores_as_the_local_path_does(ray_installed, tiny_model, tmp_path):
    texts = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(["Hello world", "the cat sat", "x"]))
    local = run("batch", "--score", "-", "-m", tiny_model, stdin=texts)
    assert local.code == 0, local.err
    r = run("batch", "--score", "-", "-m", tiny_model, "--ray", "--ray-actors", "2", stdin=texts, timeout=300)
    assert r.code == 0, r.err
    # texts scored together: their numbers depend, to rounding, on which texts shared a pass
    assert_same_lines(lines_by_id(r.stdout), lines_by_id(local.stdout))


def test_without_ray_the_message_says_how_to_install_it(tiny_model):
    code = "import sys; sys.modules['ray'] = None; from gpt2cli.cli import run; sys.argv[0] = 'gpt2cli'; run()"
    p = subprocess.run(
        [sys.executable, "-c", code, "batch", "-", "-m", str(tiny_model), "--ray"],
        input=b'{"prompt": "x"}\n', capture_output=True, env=user_env(), cwd=REPO, timeout=60,
    )  # fmt: skip
    err = p.stderr.decode()
    assert p.returncode == 2 and p.stdout == b"" and err.count("\n") == 1
    assert 'pip install "gpt2cli[ray]"' in err and "Traceback" not in err


def test_ray_options_without_ray_are_a_usage_error(tiny_model):
    r = run("batch", "-", "-m", tiny_model, "--ray-actors", "2", stdin='{"prompt": "x"}\n')
    assert r.code == 2 and "--ray" in r.err and r.err.count("\n") == 1


def test_a_local_rays_actors_are_counted_in_the_memory_check_each_with_its_slots_and_copies(ray_installed, tiny_model, tmp_path, monkeypatch):
    from gpt2cli.batch import engine
    from gpt2cli.engine.cache import kv_cache_bytes
    from gpt2cli.engine.model import layout_copy_bytes
    from gpt2cli.session import Session
    from tests.support.cli import run_in_process

    config = Session.open(tiny_model).config
    kv, copies = kv_cache_bytes(config, 8, config.n_positions), layout_copy_bytes(config)
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "x"}\n', encoding="utf-8")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(engine, "available_memory", lambda: 2 * (kv + copies) - 1)  # one actor fits, two do not
    r, _ = run_in_process(["batch", source, "-m", tiny_model, "--ray", "--ray-actors", "2", "-b", "8"])
    assert r.code == 2 and r.out == b"" and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert "2 actors x 8 rows" in r.err and "lower --batch-size or --ray-actors" in r.err
    monkeypatch.setattr(engine, "available_memory", lambda: 2 * copies - 1)  # two actors' weight copies alone do not fit
    r, _ = run_in_process(["batch", source, "-m", tiny_model, "--ray", "--ray-actors", "2", "-b", "8"])
    assert r.code == 2 and "2 actors on this machine" in r.err and "lower --ray-actors" in r.err, r.err
    monkeypatch.setattr(engine, "available_memory", lambda: copies - 1)  # not even one actor's: no option helps
    r, _ = run_in_process(["batch", source, "-m", tiny_model, "--ray", "--ray-actors", "2", "-b", "8"])
    assert r.code == 2 and "free memory or use a smaller model" in r.err, r.err
    monkeypatch.setattr(engine, "available_memory", lambda: 2 * (kv + copies))
    assert engine.check_slots(config, 8, 2) == 2 * kv  # exactly two actors' worth fits
    # the default batch size halves until each of the actors' slots fit in half of what their copies leave
    per_slot = kv_cache_bytes(config, 1, config.n_positions)
    monkeypatch.setattr(engine, "available_memory", lambda: 2 * copies + 2 * 64 * per_slot)
    assert engine.default_batch_size(config, engines=2) == 32 and engine.default_batch_size(config, engines=3) == 16


def test_only_a_local_ray_puts_all_its_actors_on_this_machine(monkeypatch):
    import os

    from gpt2cli.cli.batch_command import _actors_here

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _actors_here(None, 3) == 3
    assert _actors_here(None, None) == (os.cpu_count() or 1)  # one per CPU, as a local Ray counts them
    assert _actors_here("auto", 3) == 1  # a cluster: its nodes hold the actors, one like this node checked
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert _actors_here(None, 3) == 1
