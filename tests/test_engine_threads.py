"""The engine's threads (engine/threads.py): split() really runs parts at once, BLAS is held to one
thread meanwhile, and a prompt's forward pass gives the same numbers split as on one thread."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from gpt2cli.engine import model as engine
from gpt2cli.engine import threads
from gpt2cli.session import load_model
from tests.support import models as modelfactory


@pytest.fixture(autouse=True)
def default_workers():
    yield
    threads.set_workers(None)


def numpy_uses_openblas() -> bool:
    config = getattr(np, "__config__", None)
    blas = getattr(config, "CONFIG", {}).get("Build Dependencies", {}).get("blas", {})
    return "openblas" in str(blas.get("name", "")).lower()


def test_split_covers_every_item_once_with_parts_running_at_once():
    threads.set_workers(2)
    seen: list[tuple[int, int, int]] = []
    both_inside = threading.Barrier(2, timeout=5)  # fails unless two parts are inside at the same time

    def part(start: int, stop: int) -> None:
        both_inside.wait()
        seen.append((start, stop, threading.get_ident()))

    threads.split(part, 11)
    assert sorted((a, b) for a, b, _ in seen) == [(0, 5), (5, 11)]
    assert len({ident for _, _, ident in seen}) == 2
    assert threading.get_ident() in {ident for _, _, ident in seen}  # the caller runs a part itself


def test_one_worker_runs_everything_on_the_caller():
    threads.set_workers(1)
    calls = []
    threads.split(lambda a, b: calls.append((a, b, threading.get_ident())), 7)
    assert calls == [(0, 7, threading.get_ident())]


@pytest.mark.parametrize("failing_part", [0, 1])
def test_an_exception_in_any_part_reaches_the_caller_after_every_part_ended(failing_part):
    threads.set_workers(2)
    finished = []

    def part(start: int, stop: int) -> None:
        if (start == 0) == (failing_part == 0):
            raise ValueError(f"part {failing_part} failed")
        time.sleep(0.05)
        finished.append(start)

    with pytest.raises(ValueError, match=f"part {failing_part} failed"):
        threads.split(part, 2)
    assert len(finished) == 1  # the other part was waited for, not abandoned mid-write
    out = []
    threads.split(lambda a, b: out.append(b - a), 4)  # and the pool still works
    assert sorted(out) == [2, 2]


@pytest.mark.skipif(not numpy_uses_openblas(), reason="numpy is not built with OpenBLAS here")
def test_openblas_is_held_to_one_thread_inside_and_restored_after():
    assert threads.can_pin_blas(), "numpy's OpenBLAS has no openblas_set_num_threads_local (needs >= 0.3.27)"
    before = threads.blas_threads()
    inside = []
    threads.set_workers(2)
    threads.split(lambda a, b: inside.append(threads.blas_threads()), 2, calls_blas=True)
    assert inside == [1, 1]
    assert threads.blas_threads() == before
    with threads.one_blas_thread():
        assert threads.blas_threads() == 1
        assert threads.workers() == 2  # the parts still follow the count OpenBLAS had
    assert threads.blas_threads() == before


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    return load_model(modelfactory.write_model(tmp_path_factory.mktemp("m") / "m", n_layer=3, n_head=4, n_embd=64, seed=3))


@pytest.mark.skipif(not numpy_uses_openblas(), reason="the split pass needs OpenBLAS's thread control")
def test_a_prompt_split_over_threads_gives_the_one_thread_numbers(wide_model, monkeypatch):
    ids = np.random.default_rng(0).integers(0, wide_model.config.vocab_size, (2, 50))
    threads.set_workers(1)
    serial_cache = wide_model.new_cache(2)
    serial = wide_model.forward(ids, serial_cache, all_logits=True)

    threads.set_workers(2)
    used = []
    real_split = threads.split
    monkeypatch.setattr(threads, "split", lambda fn, n, **kw: (used.append(kw.get("calls_blas", False)), real_split(fn, n, **kw)))
    split_cache = wide_model.new_cache(2)
    split = wide_model.forward(ids, split_cache, all_logits=True)
    assert used.count(True) == 1 + 2 * 3 and False in used  # attention and row parts per layer, and the final norm, were split
    assert split.dtype == np.float32 and split_cache.k.dtype == np.float32
    np.testing.assert_allclose(split, serial, atol=1e-5)
    np.testing.assert_allclose(split_cache.k[:, :, :, :50], serial_cache.k[:, :, :, :50], atol=1e-5)
    np.testing.assert_allclose(split_cache.v[:, :, :, :50], serial_cache.v[:, :, :, :50], atol=1e-5)


def test_short_inputs_and_decoding_never_split(wide_model, monkeypatch):
    threads.set_workers(2)
    monkeypatch.setattr(threads, "split", lambda *a, **k: pytest.fail("split for a short input"))
    cache = wide_model.new_cache(1)
    wide_model.forward(np.arange(engine._SPLIT_ROWS - 1)[None], cache)
    wide_model.forward(np.array([[3]]), cache)


@pytest.mark.parametrize("workers", [1, 2])
def test_last_position_prefill_equals_the_full_one_and_fills_the_same_cache(wide_model, workers):
    threads.set_workers(workers)
    ids = np.random.default_rng(1).integers(0, wide_model.config.vocab_size, (3, 40))
    full_cache, last_cache = wide_model.new_cache(3), wide_model.new_cache(3)
    full = wide_model.forward(ids, full_cache, all_logits=True)  # [3, 40, V]
    last = wide_model.forward(ids, last_cache)  # [3, V]
    np.testing.assert_allclose(last, full[:, -1], atol=1e-5)
    assert last_cache.length == full_cache.length == 40
    np.testing.assert_allclose(last_cache.k, full_cache.k, atol=1e-5)
    np.testing.assert_allclose(last_cache.v, full_cache.v, atol=1e-5)
    h = wide_model.hidden_states(ids[:, :5], wide_model.new_cache(3), last_only=True)
    assert h.shape == (3, 1, wide_model.config.n_embd) and h.dtype == np.float32


def test_more_parts_add_workers_instead_of_starting_a_new_pool():
    def engine_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("gpt2cli-engine-")]

    threads.set_workers(2)
    threads.split(lambda a, b: None, 4)
    threads.set_workers(3)
    threads.split(lambda a, b: None, 4)
    running = engine_threads()
    threads.split(lambda a, b: None, 4)
    assert engine_threads() == running and len(running) == 2  # 3 parts: the caller and 2 workers


@pytest.mark.skipif(not numpy_uses_openblas(), reason="the split pass needs OpenBLAS's thread control")
@pytest.mark.parametrize("workers", [2, 3])
def test_a_split_pass_runs_each_layer_as_two_fork_joins_and_its_row_parts_split_the_rows_unevenly(wide_model, workers, monkeypatch):
    """Attention by heads, then one row part per thread for the rest of the layer (and the next layer's
    products): 1 + 2 per layer fork-joins that call BLAS, whatever the row count; 37 rows split 3 ways
    gives parts of different sizes, and every row's numbers are still the one-thread pass's."""
    ids = np.random.default_rng(5).integers(0, wide_model.config.vocab_size, (1, 37))
    threads.set_workers(1)
    serial_cache = wide_model.new_cache(1)
    serial = wide_model.hidden_states(ids, serial_cache)
    threads.set_workers(workers)
    monkeypatch.setattr(engine, "_SPLIT_ROWS", 8)
    calls = []
    real_split = threads.split
    monkeypatch.setattr(threads, "split", lambda fn, n, **kw: (calls.append((n, kw.get("calls_blas", False))), real_split(fn, n, **kw)))
    split_cache = wide_model.new_cache(1)
    split = wide_model.hidden_states(ids, split_cache)
    n_layer, n_head = wide_model.config.n_layer, wide_model.config.n_head
    assert [c for c in calls if c[1]] == [(37, True)] + [(n_head, True), (37, True)] * n_layer
    assert split.dtype == np.float32
    np.testing.assert_allclose(split, serial, atol=1e-5)
    np.testing.assert_allclose(split_cache.k[:, :, :, :37], serial_cache.k[:, :, :, :37], atol=1e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_both_prefills_of_compare_equal_their_own_passes_when_split(wide_model, workers, monkeypatch):
    """prefill_two_ways reuses the split pass's products for the last layer: both results and caches are
    the single passes' (the last-position shortcut and the full pass), bit for bit."""
    threads.set_workers(workers)
    monkeypatch.setattr(engine, "_SPLIT_ROWS", 8)
    ids = np.random.default_rng(6).integers(0, wide_model.config.vocab_size, (1, 45))
    last, every = wide_model.new_cache(1), wide_model.new_cache(1)
    h_last, h_every = wide_model.prefill_two_ways(ids, last, every)
    one_last, one_every = wide_model.new_cache(1), wide_model.new_cache(1)
    np.testing.assert_array_equal(h_last, wide_model.hidden_states(ids, one_last, last_only=True))
    np.testing.assert_array_equal(h_every, wide_model.hidden_states(ids, one_every))
    for mine, theirs in ((last, one_last), (every, one_every)):
        assert mine.length == theirs.length == 45
        np.testing.assert_array_equal(mine.k, theirs.k)
        np.testing.assert_array_equal(mine.v, theirs.v)

@pytest.mark.skipif(threads._current_cpu is None or len(os.sched_getaffinity(0)) < 2, reason="needs sched_getcpu and two usable CPUs")
def test_a_worker_that_wakes_on_its_callers_cpu_moves_to_another_and_keeps_its_affinity():
    seen: dict[str, object] = {}

    def worker() -> None:
        before = os.sched_getaffinity(0)
        here = threads._current_cpu()
        threads._step_aside(here)  # as if the caller ran on this CPU
        seen.update(before=before, here=here, after=threads._current_cpu(), allowed=os.sched_getaffinity(0))
        threads._step_aside(None)  # no caller CPU known: nothing moves
        threads._step_aside(-1)  # a caller elsewhere: nothing moves

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["after"] != seen["here"]
    assert seen["allowed"] == seen["before"]  # moved, not confined
