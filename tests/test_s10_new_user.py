"""What a new user ran into following the README: each test is one defect found that way, fixed."""

from __future__ import annotations

import json

from tests.support.cli import run


def test_batch_record_with_a_negative_seed_gets_an_error_line_not_an_internal_error(tiny_model):
    """README: a value out of range gets the record an error line and the run goes on (exit 6);
    a negative seed crashed the whole run with exit 1 (numpy refuses negative seeds)."""
    for batch_size in ("1", "4"):
        r = run(
            "batch", "-", "-m", tiny_model, "-n", "2", "-b", batch_size,
            stdin='{"id": "neg", "prompt": "a", "seed": -1}\n{"id": "ok", "prompt": "b"}\n',
        )  # fmt: skip
        assert r.code == 6, r.err
        lines = {line["id"]: line for line in map(json.loads, r.stdout.splitlines())}
        assert lines["neg"] == {"id": "neg", "error": "seed must be an integer >= 0, got -1"}
        assert lines["ok"]["completion_tokens"] == 2
        assert "internal error" not in r.err and "Traceback" not in r.err
