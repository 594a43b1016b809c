"""transformers 4.55.4, the last release with contrastive search and group (diverse) beam search in
its core (5.x moved them to Hub code that cannot be reached offline), run in its own virtual
environment: GPT2CLI_REFERENCE_455 names that environment's python (.ci/run makes it).
Tests that need it skip, with this reason, where it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch, transformers
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
models = {}
answers = []
for request in json.load(sys.stdin):
    folder = request["folder"]
    if folder not in models:
        models[folder] = transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    results = []
    for prompt in request["prompts"]:
        with torch.no_grad():
            out = models[folder].generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                return_dict_in_generate=True, output_scores=True, **request["kwargs"],
            )
        scores = getattr(out, "sequences_scores", None)
        results.append({
            "sequences": out.sequences[:, len(prompt):].tolist(),
            "scores": None if scores is None else scores.tolist(),
        })
    answers.append(results)
json.dump({"version": transformers.__version__, "answers": answers}, sys.stdout)
"""


def python_455() -> str:
    """The python of the transformers 4.55.4 environment, or a skip saying how to get one."""
    python = os.environ.get("GPT2CLI_REFERENCE_455", "")
    if not python or not Path(python).is_file():
        pytest.skip(
            "transformers 4.55.4 (contrastive and group beam search) is not installed: make a venv with "
            "`pip install torch==2.13.0 transformers==4.55.4` and set GPT2CLI_REFERENCE_455 to its python (.ci/run does)"
        )
    return python


def generate_455_many(requests: list[tuple[Path, list[list[int]], dict]]) -> list[list[dict]]:
    """transformers 4.55.4's generate(**kwargs) on each prompt of each (folder, prompts, kwargs): per
    request, per prompt {"sequences": new tokens per returned sequence (padding included), "scores":
    sequences_scores or None}. All in one process of the 4.55.4 environment
    (each folder's model loaded once): starting that process and importing torch is most of a
    small request's time."""
    payload = json.dumps([{"folder": str(folder), "prompts": prompts, "kwargs": kwargs} for folder, prompts, kwargs in requests])
    done = subprocess.run(
        [python_455(), "-c", _SCRIPT], input=payload, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["version"] == "4.55.4", answer["version"]
    assert len(answer["answers"]) == len(requests)
    return answer["answers"]


def until_eos(row: list[int], eos: int) -> list[int]:
    """A returned sequence up to and with its first eos: finished hypotheses are padded with
    pad_token_id, which is eos in these tests."""
    return row[: row.index(eos) + 1] if eos in row else row
