"""What a demanding new user ran into in session 12: each test is one defect found, fixed."""

from __future__ import annotations

import json

from tests.support.cli import REPO, assert_one_error_line, run, run_in_terminal


def test_a_source_checkout_downloads_into_its_own_weights_folder():
    """README: run from a source checkout, gpt2cli keeps downloads in the checkout's weights/ folder.
    Since store/hub.py moved a folder down, it looked for pyproject.toml beside gpt2cli/store, never
    found it, and every checkout downloaded into ~/.cache/gpt2cli instead."""
    from gpt2cli.store import hub

    assert hub._checkout_weights() == REPO / "weights"
    r = run("models", "--json", env={"XDG_CACHE_HOME": REPO / "not-here"})
    assert r.code == 0, r.err
    folders = {json.loads(line)["folder"] for line in r.stdout.splitlines()}
    assert str(REPO / "weights" / "openai-community--gpt2") in folders, folders


def test_compare_caps_beams_as_the_beam_command_does(tiny_model):
    """`beam -b` stops at 256, but `compare -s beam:beams=100000` was let through and died with exit 1
    (a bug, per README) "out of memory; try ... fewer --num-samples or --beams": options compare has not."""
    for spec in ("beam:beams=100000", "diverse-beam:beams=258,groups=2"):
        line = assert_one_error_line(run("compare", "-m", tiny_model, "-n", "2", "-s", spec, "hi"))
        assert line.startswith(f"gpt2cli: error: --strategy {spec}: beams must be at most 256 (as beam's --beams), got "), line
    r = run("compare", "-m", tiny_model, "-n", "2", "-s", "beam:beams=256", "--json", "hi")
    assert r.code == 0 and r.json["rows"][0]["n_tokens"] == 2, r.err


def test_a_resumed_batch_still_exits_6_for_records_that_failed_before(tiny_model, tmp_path):
    """A run with a bad record exits 6; rerun with the same -o (to resume after an interruption, as
    README says to) it skipped the record's error line as done and exited 0, so a script checking
    the status of `until gpt2cli batch ... -o FILE; ...` never learned that a record had failed."""
    source, results = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": "ok", "prompt": "a"}\n{"id": "bad", "prompt": "a", "top_k": -1}\n', encoding="utf-8")
    first = run("batch", source, "-o", results, "-m", tiny_model, "-n", "2")
    assert first.code == 6, first.err
    again = run("batch", source, "-o", results, "-m", tiny_model, "-n", "2")
    assert again.code == 6, again.err
    assert again.err_lines == [
        f"gpt2cli: 2 records already in {results}: skipped",
        f"gpt2cli: 1 of them failed in an earlier run: it has an \"error\" line in {results} (delete that line to run it again)",
    ], again.err
    assert results.read_text().count("\n") == 2
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(line for line in lines if '"bad"' not in line))  # delete it: it runs again
    assert run("batch", source, "-o", results, "-m", tiny_model, "-n", "2").code == 6


def _shown_lines(screen: str) -> list[str]:
    """The lines a terminal shows, each as left after its last erase (progress lines redraw in place)."""
    return [line.rsplit("\x1b[K", 1)[-1].rsplit("\r", 1)[-1] for line in screen.splitlines()]


def test_compare_and_beam_tables_fit_a_narrow_terminal(tiny_model):
    """On a 40-column terminal (or with --width 40) compare's texts wrapped to 40 columns, but the
    header and every row's cells stayed 90 columns wide (the name column alone is 41: "diverse-beam
    beams=4,groups=2,penalty=0.5"), so the terminal broke each of them over three lines; beam's
    table, 34 columns of cells, did the same under --width 20 to 33."""
    from gpt2cli.cli.render import display_width

    runs = {
        "compare, 40 columns": run_in_terminal("compare", "-m", tiny_model, "-n", "12", "hi", columns=40),
        "compare --width 40": run_in_terminal("compare", "-m", tiny_model, "-n", "12", "--width", "40", "hi", columns=120),
        "beam --width 24": run_in_terminal("beam", "-m", tiny_model, "-n", "12", "--width", "24", "hi", columns=120),
    }
    for what, (screen, code) in runs.items():
        assert code == 0, screen
        shown = _shown_lines(screen)
        assert max(map(display_width, shown)) <= (24 if "beam" in what else 40), (what, screen)
        assert any(line.startswith("greedy") for line in shown), (what, screen)  # each row still named
    shown = _shown_lines(runs["compare, 40 columns"][0])
    row = shown.index("contrastive alpha=0.6,k=4")  # the name on its own line, its numbers below
    assert shown[row + 1].startswith("  avg lp ") and "rep-2 " in shown[row + 1] + shown[row + 2], screen


def test_download_and_rm_of_an_empty_model_name_the_argument_they_take(tmp_path):
    """`gpt2cli download ""` and `gpt2cli rm -y ""` said "--model must not be empty": neither command
    has a --model option; what was empty is their MODEL argument."""
    for args in (["download", ""], ["rm", "-y", " "]):
        line = assert_one_error_line(run(*args, "--weights-dir", tmp_path))
        assert line == "gpt2cli: error: MODEL must not be empty: give a model name or an owner/name Hub repo", line


def test_score_table_with_a_stride_of_the_context_shows_unscored_tokens_as_such(tiny_model):
    """With --stride equal to the context, the first token of every window after the first is not
    scored (README; null in --json). The table printed "nan" for it, and its last line said "over 300
    tokens" beside a perplexity computed over the 298 scored ones."""
    text = "x" * 300  # the tiny BPE: 300 tokens; windows of 128 from 0, 128, 256 leave 2 tokens unscored
    as_json = run("score", "-m", tiny_model, "--stride", "128", "--json", text)
    assert as_json.code == 0, as_json.err
    assert as_json.json["logprobs"].count(None) == 2
    table = run("score", "-m", tiny_model, "--stride", "128", text)
    assert table.code == 0, table.err
    assert "nan" not in table.stdout
    rows = table.stdout.splitlines()[1:-1]
    assert [row.split()[1] for row in rows].count("-") == 2
    total = f"{as_json.json['total_logprob']:.4f}"
    assert table.stdout.splitlines()[-1] == (
        f"total logprob {total} over 298 of 300 tokens (2 with no history are not scored), "
        f"perplexity {as_json.json['perplexity']:.3f}"
    )


def test_download_and_rm_errors_speak_of_what_those_commands_take(tmp_path):
    """download and rm take a model name or an owner/name Hub repo, and have no --model option, yet a
    path-like MODEL said "pass --model PATH to a GPT-2 model folder", and `download` offline said to
    "run `gpt2cli download gpt2` while online, or pass --model PATH": the very command that failed."""
    for args in (["download", "someone/"], ["rm", "-y", "a/b/c"], ["download", "GPT2"]):
        line = assert_one_error_line(run(*args, "--weights-dir", tmp_path))
        assert line == (
            "gpt2cli: error: MODEL must be a model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) "
            f"or an owner/name Hub repo, got {args[-1]!r}"
        ), line
    line = assert_one_error_line(run("download", "gpt2", "--weights-dir", tmp_path))  # run() is offline
    assert line == "gpt2cli: error: cannot download gpt2: offline mode is on (HF_HUB_OFFLINE); unset HF_HUB_OFFLINE to download it", line


def test_an_error_after_a_progress_line_starts_on_a_line_of_its_own(tiny_model, real_model):
    """With stderr on a terminal, compare draws "comparing: decoding 0/9" there; an error meanwhile
    (here stdout on a full disk) was written right after it: "comparing: decoding 0/9gpt2cli: error:
    cannot write the output ..." on one line. Ctrl-C left the progress line for the shell's prompt
    to follow on (stdout not a terminal, so no line was ended)."""
    import os
    import pty
    import signal
    import subprocess

    from tests.support.cli import command, user_env

    def stderr_seen(args, stdout, interrupt_on=None):
        leader, follower = pty.openpty()
        child = subprocess.Popen(
            [*command(), *map(str, args)], stdin=subprocess.DEVNULL, stdout=stdout, stderr=follower, env=user_env()
        )  # fmt: skip
        os.close(follower)
        seen = b""
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
            if interrupt_on is not None and interrupt_on in seen:
                child.send_signal(signal.SIGINT)
                interrupt_on = None
        os.close(leader)
        return seen.decode(), child.wait(timeout=60)

    with open("/dev/full", "wb") as full:
        seen, code = stderr_seen(["compare", "-m", tiny_model, "-n", "5", "hi"], full)
    assert code == 5, seen
    assert "\r\x1b[Kgpt2cli: error: cannot write the output" in seen, repr(seen)
    seen, code = stderr_seen(["compare", "-m", real_model, "-n", "60", "hi"], subprocess.DEVNULL, interrupt_on=b"decoding 1/9")
    assert code == 130, seen
    assert "comparing: decoding" in seen and seen.endswith("\r\x1b[K"), repr(seen)
