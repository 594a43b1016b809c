"""Fixtures several test files share: tiny random GPT-2 folders in the Hub's layouts, the real
tokenizer's location, and a loopback Hub serving tiny repos with an empty weights folder beside it."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tests.support import models as modelfactory
from tests.support.hubserver import FakeHub


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random GPT-2 with the tiny BPE: the default model of fast tests."""
    return modelfactory.write_model(tmp_path_factory.mktemp("models") / "tiny", n_layer=2, seed=1)


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Path:
    if not (modelfactory.SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip(f"the real GPT-2 tokenizer files are not at {modelfactory.SHARED_TOKENIZER}")
    return modelfactory.SHARED_TOKENIZER


@pytest.fixture(scope="session")
def real_model(tmp_path_factory, real_tokenizer_dir):
    """A random 2-layer GPT-2 with the real GPT-2 tokenizer, so prompts are real English tokens."""
    return modelfactory.write_model(tmp_path_factory.mktemp("models") / "real", tokenizer="real", n_embd=64, seed=5)


@pytest.fixture(scope="session")
def beam_folders(tmp_path_factory) -> dict[str, Path]:
    """name -> model folder: a plain random model, one that likes <|endoftext|>, and one whose
    vocabulary (4096) is wide enough that beam steps pick candidates by groups (beam.top_k)."""
    root = tmp_path_factory.mktemp("beam")
    folders = {
        name: modelfactory.write_model(root / name, seed=3, eos_bias=eos_bias)
        for name, eos_bias in (("plain", 0.0), ("eos-biased", 4.0))
    }
    folders["wide-vocab"] = modelfactory.write_model(root / "wide-vocab", seed=5, vocab_size=4096)
    return folders


# ---------------------------------------------------------------------------------------------
# The loopback Hub: source repos on disk, a running fake Hub, an empty weights folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> types.SimpleNamespace:
    """Folders the fake Hub serves as repos: tiny models in the Hub's layouts, and broken ones."""
    root = tmp_path_factory.mktemp("hub-sources")
    tiny = modelfactory.write_model(root / "tiny", seed=1)
    tiny_v2 = modelfactory.write_model(root / "tiny-v2", seed=2)
    sharded = modelfactory.write_model(root / "sharded", seed=3, shards=3)
    pickle_only = modelfactory.write_model(root / "pickle-only", seed=4)
    (pickle_only / "model.safetensors").unlink()
    (pickle_only / "pytorch_model.bin").write_bytes(b"\x80\x04 not a real pickle, never to be read")
    no_merges = modelfactory.write_model(root / "no-merges", seed=5)
    (no_merges / "merges.txt").unlink()
    llama = modelfactory.write_model(root / "llama", seed=6, extra_config={"model_type": "llama"})
    return types.SimpleNamespace(
        tiny=tiny, tiny_v2=tiny_v2, sharded=sharded, pickle_only=pickle_only, no_merges=no_merges, llama=llama
    )


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
        # huggingface_hub read these at import time (some modules keep copies): point them at the fake
        # Hub, so that nothing, not even its agent-registry lookup, goes to the real one.
        _point_huggingface_hub_at(server.url, monkeypatch)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / ".agent_harnesses.json"), raising=False)
        yield server


def _point_huggingface_hub_at(url: str, monkeypatch) -> None:
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("huggingface_hub")]
    for module in modules:
        for attr, value in (("ENDPOINT", url), ("HUGGINGFACE_CO_URL_TEMPLATE", template)):
            if isinstance(getattr(module, attr, None), str):
                monkeypatch.setattr(module, attr, value)


@pytest.fixture
def weights(tmp_path) -> Path:
    return tmp_path / "weights"


@pytest.fixture
def cli(fake_hub, weights):
    """Runs the installed gpt2cli against the fake Hub, online, with `weights` as the weights folder."""
    from tests.support.cli import run

    def gpt2cli(*args, stdin: bytes | str = b"", **env):
        return run(*args, stdin=stdin, env={"HF_HUB_OFFLINE": "", "GPT2CLI_WEIGHTS": str(weights), **env}, cwd=weights.parent)

    return gpt2cli
