"""main(): runs a command and owns the process around it: SIGINT/SIGTERM, closed pipes, exit codes,
and every failure turned into one line on stderr (the traceback too under GPT2CLI_DEBUG=1).

Exit codes: 0 ok, 1 unexpected error, 2 usage (bad option, unknown model, missing files),
3 broken checkpoint or tokenizer, 4 download failure, 5 stdout or batch -o cannot be written (disk full),
6 some batch records failed, 130 interrupted (Ctrl-C), 141 stdout closed (e.g. `| head`), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Callable, Optional

import typer

from gpt2cli.cli import signals
from gpt2cli.cli.app import app
from gpt2cli.cli.options import FLAGS
from gpt2cli.cli.output import OutputClosed, clear_progress, note
from gpt2cli.cli.signals import Terminated
from gpt2cli.errors import GPT2CLIError, OptionError


def route_warnings() -> None:
    """Python warnings (numpy's, a library's) as at most one gpt2cli note per kind, without file
    paths or source lines; numpy's floating-point warnings not at all: where a non-finite number
    matters (logits, scores, JSON) the code checks for it and says so itself."""
    import warnings

    warnings.filterwarnings("ignore", message=r".* encountered in ", category=RuntimeWarning)
    shown: set = set()

    def show(message, category, filename, lineno, file=None, line=None):
        kind = (category, _one_line(str(message)).split(". ")[0])  # the first sentence names the kind
        if kind not in shown:
            shown.add(kind)
            note(f"warning: {_one_line(str(message))} ({category.__name__})")

    warnings.showwarning = show


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: Optional[list[str]] = None, early_signal: Callable[[], Optional[int]] = lambda: None) -> int:
    """Entry point: runs the app and maps every known failure to one stderr line and an exit code.

    early_signal(): a signal that arrived before main() took over (run() records them while importing).
    """
    exc = _click_exceptions()
    debug = os.environ.get("GPT2CLI_DEBUG") == "1"
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    completing = os.environ.get("_GPT2CLI_COMPLETE")  # the shell asks for completions with no arguments
    if not args and not completing:
        # A usage error like any other (a script that forgot its arguments must not see success): the
        # help goes to stderr, not stdout, and the exit code is 2, as click's own usage errors.
        try:
            with contextlib.redirect_stdout(sys.stderr):
                command.main(args=["--help"], prog_name="gpt2cli", standalone_mode=False)
        except (OSError, ValueError):  # stderr closed: the exit code still says what happened
            pass
        return 2
    previous = signals.catch()
    try:
        try:
            early = early_signal()
            code = 128 + early if early else _run_command(command, args, exc, debug)
            held = signals.exiting()  # inside the try: a signal just before it is still caught below
        except Terminated as e:  # the signal came while an error was being reported
            code, held = e.exit_code, signals.exiting()
        # From here on signals only record themselves: the exit path cannot become a traceback.
        code = _flush_stdout(code)
        return code or (128 + held if held else 0)  # held: came during a write that then failed
    finally:
        signals.restore(previous)


def _quote_hint(e) -> str:
    """For `gpt2cli generate Hello world` (click: "Got unexpected extra argument(s) (world)"): the
    remedy, when the command's one argument is a text, is quotes."""
    if e.ctx is None or not e.format_message().startswith("Got unexpected extra argument"):
        return ""
    for param in e.ctx.command.params:
        if getattr(param, "param_type_name", None) == "argument" and param.name in ("prompt", "text"):
            name = param.name.upper()
            return f"; {name} is one argument: put text with spaces in quotes, as {e.ctx.command_path} \"Hello world\""
    return ""


def _run_command(command, args: list[str], exc, debug: bool) -> int:
    """Runs the command; every exception becomes one stderr line and an exit code (a traceback too
    under GPT2CLI_DEBUG=1, for bug reports, with the same exit code)."""

    def fail(message: str, code: int) -> int:
        if debug:
            import traceback

            traceback.print_exc()
        note(message)
        return code

    try:
        result = command.main(args=args, prog_name="gpt2cli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except exc.UsageError as e:
        where = _quote_hint(e) or (f"; see '{e.ctx.command_path} --help'" if e.ctx else "")
        message = _one_line(e.format_message()).rstrip(".")
        if message.endswith("?") and where.startswith("; "):  # "Did you mean 'generate'?": no "?;"
            where = " (" + where[2:] + ")"
        return fail(f"error: {message}{where}", 2)
    except exc.ClickException as e:
        return fail(f"error: {_one_line(e.format_message())}", e.exit_code)
    except OptionError as e:  # said in the library's terms: name the options instead
        return fail(f"error: {_one_line(e.render(FLAGS))}", e.exit_code)
    except GPT2CLIError as e:
        return fail(f"error: {_one_line(e)}", e.exit_code)
    except (BrokenPipeError, OutputClosed):
        # The reader went away (`| head`): stop quietly, as `yes | head` does.
        _silence_stdout()
        return 141
    except (Terminated, KeyboardInterrupt, typer.Abort) as e:
        # What was printed stays: the Writer only ever wrote whole characters, and bytes still in
        # stdout's buffer go out with the final flush. A terminal gets its line ended.
        _end_line_on_terminal()
        return getattr(e, "exit_code", 130)
    except SystemExit as e:
        # click exits by itself (status 1) when a write it makes (e.g. --help) hits a closed pipe.
        if isinstance(e.__context__, BrokenPipeError):
            _silence_stdout()
            return 141
        raise
    except MemoryError:
        return fail("error: out of memory; try a smaller model, fewer --num-samples or --beams", 1)
    except OSError as e:
        if e.errno in _FULL and e.filename is None:  # a stream write, not a file we opened: stdout
            _silence_stdout()  # what stdout still buffers can never be written: drop it quietly
            return fail(f"error: cannot write the output: {e.strerror}; free some space or send stdout elsewhere", 5)
        return fail(f"error: {_one_line(e)}", 1)
    except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback for users
        return fail(
            f"internal error: {type(e).__name__}: {_one_line(e)}; rerun with GPT2CLI_DEBUG=1 and report the traceback", 1
        )


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # stdout's disk is full (or the file may grow no more)


def _flush_stdout(code: int) -> int:
    """Pushes out what stdout still buffers (signals only record themselves by now; the Writer
    flushed every piece, so this is at most what click or typer printed); a reader gone by now
    still means 141."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return code or 141
    except (ValueError, OSError):
        _silence_stdout()  # so the interpreter's own final flush cannot fail again, into a traceback
    return code


def _click_exceptions():
    """The exception classes of the click that typer runs on (newer typer vendors its own copy)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(devnull)


def _end_line_on_terminal() -> None:
    try:
        clear_progress()  # stderr's progress line, which the shell's prompt would otherwise follow on
        if sys.stdout is not None and sys.stdout.isatty():
            sys.stdout.write("\n")
            sys.stdout.flush()
    except (OSError, ValueError, Terminated):  # Terminated: a second Ctrl-C right after the first
        pass
