"""The same batch on Ray, when one machine is not enough: the driver reads the records and skips the
ids the output already holds, Ray Data hands the rest to a pool of actors that each load the model
once and run the local path (batch.local.results_of: continuous batching, texts scored in padded
passes, or one record at a time), and the driver writes each result through the same
resumable Output as it comes back. Ray is imported only here, and only when --ray is asked for.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

from gpt2cli.batch.local import Sink, Tally, results_of, unseen
from gpt2cli.batch.records import BadRecord, Output, Record
from gpt2cli.errors import UsageError
from gpt2cli.request import Request

INSTALL = 'pip install "gpt2cli[ray]"'
# An actor gets this many records per slot of its continuous batch at a time, so that its slots
# stay full for most of each Ray batch (they drain only at its end).
_RECORDS_PER_SLOT = 4


@dataclass(frozen=True)
class ModelSpec:
    """How each actor finds the model: a folder every node can read, or a Hub name it resolves itself."""

    name: str
    revision: str | None = None
    weights_dir: str | None = None
    offline: bool = False


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--ray needs Ray with Ray Data, which is not installed: {INSTALL}") from None
    return ray


class _RecordWorker:
    """A Ray actor: loads the model once, then turns batches of records into result lines."""

    def __init__(
        self, spec: ModelSpec, defaults: Request, seed: int, score: bool, stride: int | None, allow_special: bool, batch_size: int
    ):
        from pathlib import Path

        from gpt2cli.session import Session
        from gpt2cli.store.resolve import resolve_model

        folder = resolve_model(
            spec.name, revision=spec.revision, weights_dir=Path(spec.weights_dir) if spec.weights_dir else None,
            offline=spec.offline,
        )  # fmt: skip
        self.session = Session.open(folder)
        self.options = (defaults, seed, score, stride, allow_special, batch_size)

    def __call__(self, batch: dict) -> dict:
        import pickle

        items = [pickle.loads(blob) for blob in batch["item"]]
        done = list(results_of(self.session, items, *self.options))
        return {
            "index": [int(batch["index"][i]) for i, _ in done],  # each result's place in the input
            "result": [json.dumps(result, ensure_ascii=False) for _, result in done],
        }


def run_records_on_ray(
    spec: ModelSpec,
    records: Iterable[Record | BadRecord],
    output: Output,
    *,
    defaults: Request,
    seed: int,
    score: bool = False,
    stride: int | None = None,
    allow_special: bool = False,
    batch_size: int = 1,
    ordered: bool = False,
    address: str | None = None,
    actors: int | None = None,
    show_progress: bool = False,
    on_record: Callable[[Tally], None] = lambda tally: None,
) -> Tally:
    """Runs every record not yet in output on the Ray cluster at `address` (or RAY_ADDRESS; else a
    local Ray started for the run); results are written as they arrive (in input order if ordered)."""
    import pickle

    ray = import_ray()
    tally = Tally()
    todo = list(unseen(records, output, tally))
    if not todo:
        return tally
    for name in ("ray", "ray.data"):  # Ray's progress notes and logs stay off stdout and out of pipes
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # Ray's notes to itself (deprecations inside Ray Data)

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or None, logging_level=logging.ERROR, log_to_driver=False,
            include_dashboard=False, configure_logging=True,
        )  # fmt: skip
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress
        context.execution_options.preserve_order = False
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        dataset = ray.data.from_items([{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(todo)])
        # Each actor computes on one core. Ray Data restarts an actor that dies and retries its records
        # (its actor pools default to unlimited restarts and task retries).
        results = dataset.map_batches(
            _RecordWorker, batch_size=batch_size * _RECORDS_PER_SLOT, compute=ray.data.ActorPoolStrategy(size=min(pool, len(todo))), num_cpus=1,
            fn_constructor_kwargs=dict(
                spec=spec, defaults=defaults, seed=seed, score=score, stride=stride, allow_special=allow_special,
                batch_size=batch_size,
            ),
            runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}},
        )  # fmt: skip
        sink = Sink(output, tally, on_record, ordered)
        for row in results.iter_rows():
            sink.put(int(row["index"]), json.loads(row["result"]))
    finally:
        if started_here:
            ray.shutdown()
    return tally
