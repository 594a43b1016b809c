"""Runs the installed gpt2cli command in a subprocess, as users do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def gpt2cli_command() -> list[str]:
    """The console script installed beside this Python (falls back to `python -m gpt2cli`)."""
    script = Path(sys.executable).with_name("gpt2cli")
    if script.exists():
        return [str(script)]
    found = shutil.which("gpt2cli")
    return [found] if found else [sys.executable, "-m", "gpt2cli"]


def run(*args, stdin: bytes | str | None = None, env: dict | None = None, cwd=None, timeout: float = 120):
    """Runs gpt2cli with args; returns CompletedProcess with stdout/stderr as text (UTF-8)."""
    full_env = {k: v for k, v in os.environ.items() if k != "GPT2CLI_DEBUG"}
    full_env.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        gpt2cli_command() + [str(a) for a in args],
        input=data if data is not None else b"",
        capture_output=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    result.stdout = result.stdout.decode("utf-8")
    result.stderr = result.stderr.decode("utf-8")
    return result
