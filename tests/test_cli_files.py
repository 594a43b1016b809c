"""Files: the commands write nothing outside the weights folder (not the working directory, the
home folder or the temporary folder), and never change a model's files."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.cli import assert_one_error_line, run


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_commands_write_nothing_outside_the_weights_folder(tiny_model, tmp_path):
    cwd, home, tmp, weights = (tmp_path / name for name in ("cwd", "home", "tmp", "weights"))
    for d in (cwd, home, tmp):
        d.mkdir()
    env = {"HOME": home, "TMPDIR": tmp}
    for var in ("XDG_CACHE_HOME", "HF_HOME", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "HF_HUB_CACHE"):
        env[var] = None  # unset
    model_before = _snapshot(tiny_model)
    runs = [
        (0, ["generate", "-m", tiny_model, "-n", "3", "hi"]),
        (0, ["generate", "-m", tiny_model, "-n", "3", "-N", "2", "--json", "hi"]),
        (0, ["beam", "-m", tiny_model, "-n", "3", "-b", "2", "hi"]),
        (0, ["score", "-m", tiny_model, "hello"]),
        (0, ["tokenize", "-m", tiny_model, "hello"]),
        (0, ["models", "--weights-dir", weights]),
        (2, ["generate", "-m", tiny_model, "-p", "7", "hi"]),
        (2, ["download", "gpt2", "--weights-dir", weights]),  # offline: refused before any write
    ]
    for code, args in runs:
        r = run(*args, env=env, cwd=cwd)
        assert r.code == code, (args, r.err)
    assert not weights.exists(), "listing models or an offline refusal created the weights folder"
    # a download that cannot reach the Hub writes only into the weights folder
    proxies = {k: None for k in os.environ if k.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    online = {**env, **proxies, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = run("download", "gpt2", "--weights-dir", weights, env=online, cwd=cwd)
    assert r.code == 4, r.err
    assert_one_error_line(r, code=4)
    assert sorted(os.listdir(cwd)) == [] and sorted(os.listdir(home)) == [] and sorted(os.listdir(tmp)) == []
    assert _snapshot(tiny_model) == model_before
