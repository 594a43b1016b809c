"""What a demanding new user ran into in session 11 (round 2): each test is one defect found, fixed."""

from __future__ import annotations

import json

from tests.support.cli import assert_one_error_line, run, run_in_terminal

_NOT_UTF8_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_batch_reads_stdin_as_utf8_in_a_locale_that_is_not(tiny_model, tmp_path):
    """A file INPUT is read as UTF-8, but `batch -` read stdin in the locale's encoding: under LANG=C
    (no UTF-8 mode) or a Latin-1 locale, an emoji or accented prompt became another prompt, silently."""
    records = '{"id": "e", "prompt": "caf\u00e9 \U0001f389"}\n'
    source = tmp_path / "in.jsonl"
    source.write_text(records, encoding="utf-8")
    from_file = run("batch", source, "-m", tiny_model, "-n", "3", "-t", "0", env=_NOT_UTF8_LOCALE)
    from_stdin = run("batch", "-", "-m", tiny_model, "-n", "3", "-t", "0", stdin=records.encode(), env=_NOT_UTF8_LOCALE)
    assert from_file.code == 0 and from_stdin.code == 0, (from_file.err, from_stdin.err)
    assert from_file.json["prompt_tokens"] == len("caf\u00e9 \U0001f389".encode())  # the tiny BPE: a token a byte, here
    assert from_stdin.json == from_file.json


def test_a_record_without_its_text_says_what_to_write(tiny_model):
    """Every record lacking a usable prompt got "record has no 'prompt' string": even one with a
    prompt that is a number, and a --score record (with `text`) run without --score, where the fix is
    one flag away."""
    records = '{"id": 1, "text": "a"}\n{"id": 2, "prompt": 5}\n{"id": 3}\n'
    r = run("batch", "-", "-m", tiny_model, "-n", "2", stdin=records)
    assert r.code == 6, r.err
    errors = {line["id"]: line["error"] for line in map(json.loads, r.stdout.splitlines())}
    assert errors == {
        1: "record has 'text' but no 'prompt': add --score to score it, or rename 'text' to 'prompt'",
        2: "'prompt' must be a string, got 5",
        3: "record has no 'prompt'; give it a 'prompt' string",
    }
    r = run("batch", "-", "--score", "-m", tiny_model, stdin='{"id": "p", "prompt": "a"}\n')
    assert r.code == 6, r.err
    assert r.json["error"] == "record has 'prompt' but no 'text' (--score scores a 'text'): rename 'prompt' to 'text', or drop --score to generate"


def test_batch_input_that_is_not_utf8_gets_the_note_a_prompt_gets(tiny_model, tmp_path):
    """A prompt's bytes that are not UTF-8 become U+FFFD with a note on stderr (README); a batch INPUT's
    (a Latin-1 file, say) became U+FFFD in the prompts without a word."""
    source = tmp_path / "latin1.txt"
    source.write_bytes(b"caf\xe9\nna\xefve\n")
    for args, stdin, where in ((["--lines", source], b"", f"INPUT {source}"), (["-"], b'{"prompt": "caf\xe9"}\n', "stdin")):
        r = run("batch", *args, "-m", tiny_model, "-n", "2", "-t", "0", stdin=stdin)
        assert r.code == 0, r.err
        assert r.err_lines == [f"gpt2cli: {where} is not valid UTF-8: invalid bytes were replaced with U+FFFD (save it as UTF-8)"]
        assert {line["prompt_tokens"] for line in map(json.loads, r.stdout.splitlines())} == {len("caf\ufffd".encode())} | (
            {len("na\ufffdve".encode())} if stdin == b"" else set()
        )


def test_a_strategy_setting_out_of_range_is_named_as_the_spec_writes_it(tiny_model):
    """compare -s beam:beams=0 said "num_beams must be ...", contrastive:alpha=2 "penalty_alpha must
    be ...": names the user never wrote and --list does not show."""
    cases = {
        "beam:beams=0": "--strategy beam:beams=0: beams must be an integer >= 1, got 0",
        "diverse-beam:groups=3": "--strategy diverse-beam:groups=3: groups must divide beams (4) into equal groups, got 3",
        "contrastive:alpha=2": "--strategy contrastive:alpha=2.0: alpha must be a number from 0 to 1, got 2.0",
        "top-p:p=0": "--strategy top-p:p=0.0: p must be in (0, 1] (1 = off), got 0.0",
        "greedy:no_repeat_ngram=-1": "--strategy greedy:no_repeat_ngram=-1: no_repeat_ngram must be an integer >= 0 (0 = off), got -1",
    }
    for spec, message in cases.items():
        assert assert_one_error_line(run("compare", "-m", tiny_model, "-n", "2", "-s", spec, "hi")) == "gpt2cli: error: " + message


def test_a_strategy_setting_given_twice_is_refused_not_silently_the_last(tiny_model):
    """-s top-k:k=5,k=50 ran k=50 and labelled the row "k=5,k=50"."""
    line = assert_one_error_line(run("compare", "-m", tiny_model, "-n", "2", "-s", "top-k:k=5,k=50", "hi"))
    assert line == "gpt2cli: error: --strategy gives setting 'k' twice; give it once, got 'top-k:k=5,k=50'", line


def test_progress_on_a_dumb_terminal_has_no_escape_sequences(tiny_model, tmp_path):
    """TERM=dumb (Emacs' shell, some CI consoles) shows escapes as text: compare's and batch's progress
    lines were erased with "\\x1b[K", left on screen as "^[[K" before every update."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n")
    for args in (["compare", "-s", "greedy", "-s", "top-k", "hi"], ["batch", "--lines", prompts]):
        shown, code = run_in_terminal(*args, "-m", tiny_model, "-n", "2", env={"TERM": "dumb"}, columns=80)
        assert code == 0, shown
        assert ("comparing" if args[0] == "compare" else "batch: 3 done") in shown, shown
        assert "\x1b" not in shown, repr(shown)
    shown, code = run_in_terminal("compare", "-s", "greedy", "-m", tiny_model, "-n", "2", "hi", env={"TERM": "xterm"}, columns=80)
    assert code == 0 and "\r\x1b[K" in shown, repr(shown)  # a terminal that has the escape still gets it


def test_a_one_token_prompt_is_not_called_1_tokens(tiny_model):
    """The context-overflow errors said "the prompt (1 tokens)"."""
    line = assert_one_error_line(run("generate", "-m", tiny_model, "-n", "200", "--on-overflow", "error", "a"))
    assert line.startswith("gpt2cli: error: the prompt (1 token) plus --max-tokens (200)"), line
    line = assert_one_error_line(run("beam", "-m", tiny_model, "-n", "200", "a"))
    assert line.startswith("gpt2cli: error: prompt (1 token) + --max-tokens (200) = 201 tokens"), line


def test_beam_refuses_sample_options_that_no_compare_makes_do_nothing(tiny_model):
    """-t, -k and --seed shape only beam's comparison sample; with --no-compare they were silently
    ignored, letting a user believe `beam -t 0.3 --no-compare` searched at a lower temperature."""
    line = assert_one_error_line(run("beam", "-m", tiny_model, "-n", "2", "-t", "0.3", "--no-compare", "hi"))
    assert line == "gpt2cli: error: --temperature sets the comparison sample, which --no-compare drops (beam search does not sample); drop it, or drop --no-compare"
    line = assert_one_error_line(run("beam", "-m", tiny_model, "-n", "2", "-k", "3", "--seed", "1", "--no-compare", "hi"))
    assert "--top-k, --seed set the comparison sample" in line and "drop them" in line, line
    assert run("beam", "-m", tiny_model, "-n", "2", "--no-compare", "hi").code == 0
    assert run("beam", "-m", tiny_model, "-n", "2", "-t", "0.3", "hi").code == 0


def test_an_unquoted_prompt_is_told_to_take_quotes(tiny_model):
    """`gpt2cli generate Hello world`, the first thing a new user types, got "Got unexpected extra
    argument(s) (world); see 'gpt2cli generate --help'": the remedy is quotes, and now it says so."""
    for command, name in (("generate", "PROMPT"), ("score", "TEXT"), ("tokenize", "TEXT"), ("beam", "PROMPT")):
        line = assert_one_error_line(run(command, "-m", tiny_model, "Hello", "world"))
        assert line == (
            f"gpt2cli: error: Got unexpected extra argument(s) (world); {name} is one argument: put text with spaces "
            f'in quotes, as gpt2cli {command} "Hello world"'
        ), line


def test_batch_score_does_not_resume_from_a_file_of_generation_results(tiny_model, tmp_path):
    """`batch --score -o out.jsonl` onto a file of generation results took their ids for scored and
    skipped those texts ("1 record already in out.jsonl: skipped"): the file ended mixed, scores lost.
    Either kind onto the other is refused, the file left as it was."""
    generated, scored = tmp_path / "generated.jsonl", tmp_path / "scored.jsonl"
    assert run("batch", "-", "-m", tiny_model, "-n", "2", "-o", generated, stdin='{"id": "a", "prompt": "hi"}\n').code == 0
    assert run("batch", "-", "--score", "-m", tiny_model, "-o", scored, stdin='{"id": "a", "text": "hi"}\n').code == 0
    before = generated.read_bytes(), scored.read_bytes()
    line = assert_one_error_line(run("batch", "-", "--score", "-m", tiny_model, "-o", generated, stdin='{"id": "a", "text": "hi"}\n'))
    assert line == (
        f"gpt2cli: error: {generated} holds generation results and this run scores texts: its ids would be taken for done; "
        "give -o another file, or drop --score to resume that run"
    ), line
    line = assert_one_error_line(run("batch", "-", "-m", tiny_model, "-n", "2", "-o", scored, stdin='{"id": "a", "prompt": "hi"}\n'))
    assert f"{scored} holds score results and this run generates" in line and "add --score" in line, line
    assert (generated.read_bytes(), scored.read_bytes()) == before
    r = run("batch", "-", "-m", tiny_model, "-n", "2", "-o", generated, stdin='{"id": "a", "prompt": "hi"}\n')
    assert r.code == 0 and "1 record already in" in r.err, r.err  # the same kind still resumes


def test_a_mistyped_command_gets_its_suggestion_without_a_stray_semicolon():
    """`gpt2cli generat` said "Did you mean 'generate'?; see 'gpt2cli --help'"."""
    line = assert_one_error_line(run("generat", "hi"))
    assert line == "gpt2cli: error: No such command 'generat'. Did you mean 'generate'? (see 'gpt2cli --help')", line


def test_batch_lines_ids_are_the_line_numbers_even_with_a_carriage_return_inside_a_line(tiny_model, tmp_path):
    """A lone "\\r" inside a line (text pasted from a terminal's progress output, say) split it into two
    records, so every later id was one more than the line number wc, sed and editors give (and more
    records ran than the progress line counted). Only "\\n" ends a line; a "\\r\\n" still ends as one."""
    source = tmp_path / "prompts.txt"
    source.write_bytes(b"first\rsecond\nthird\r\n")
    for args, stdin in ((["--lines", source], b""), (["--lines", "-"], source.read_bytes())):
        r = run("batch", *args, "-m", tiny_model, "-n", "1", "-t", "0", "--ordered", stdin=stdin)
        assert r.code == 0, r.err
        results = [json.loads(line) for line in r.stdout.splitlines()]
        assert [line["id"] for line in results] == [1, 2], results
        for result, text in zip(results, ("first\rsecond", "third")):
            assert result["prompt_tokens"] == len(run("tokenize", "-m", tiny_model, text).stdout.split()), (result, text)
