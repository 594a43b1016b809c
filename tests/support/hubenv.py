"""The loopback Hub as a pytest fixture, for test files other than test_hub.py: import `fake_hub` into
a test module (`from tests.support.hubenv import fake_hub  # noqa: F401`) and use it as usual."""

from __future__ import annotations

import sys

import pytest

from tests.support.hubserver import FakeHub


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running loopback Hub that huggingface_hub talks to, with HF_HOME in a temporary folder."""
    import huggingface_hub.constants as constants

    with FakeHub() as server:
        hf_home = tmp_path / "hf-home"
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for var in ("HF_HUB_OFFLINE", "GPT2CLI_WEIGHTS", "HF_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        for name, module in list(sys.modules.items()):
            if not name.startswith("huggingface_hub"):
                continue
            for attr, value in (("ENDPOINT", server.url), ("HUGGINGFACE_CO_URL_TEMPLATE", template)):
                if isinstance(getattr(module, attr, None), str):
                    monkeypatch.setattr(module, attr, value)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"), raising=False)
        yield server


def cli_runner(weights):
    """gpt2cli run in a subprocess against the fake Hub (HF_ENDPOINT inherited), online, with `weights`."""
    from tests.support.cli import run

    def gpt2cli(*args, stdin: bytes = b"", **env):
        return run(*args, stdin=stdin, env={"HF_HUB_OFFLINE": "", "GPT2CLI_WEIGHTS": str(weights), **env}, cwd=weights.parent)

    return gpt2cli
