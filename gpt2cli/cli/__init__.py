"""The command line: app.py declares the commands, process.py runs them (signals, exit codes,
errors as one line), render.py draws every table and JSON record, output.py writes stdout.

run() is the console entry point. When this process is the gpt2cli command, the first lines below
make SIGINT and SIGTERM only record themselves, before anything else is imported: importing typer
and numpy takes a moment, and a signal in it would otherwise print a KeyboardInterrupt traceback from
deep inside an import. main() then takes over the handlers and exits 130/143 at once for a signal
recorded meanwhile. (A signal before Python has even started our code, while it reads its own site
packages, is the interpreter's to report.)
"""

import _signal
import sys

_early: list = []


def _record(signum, frame):
    _early.append(signum)


def _hold_signals() -> None:
    for signum in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(signum) is not _signal.SIG_IGN:  # a signal ignored by the parent stays ignored
            _signal.signal(signum, _record)


if sys.argv and sys.argv[0].rsplit("/", 1)[-1] == "gpt2cli":  # the console script, about to call run()
    _hold_signals()


def run() -> None:
    _hold_signals()
    from gpt2cli.cli.process import main, route_warnings

    route_warnings()
    code = main(early_signal=lambda: _early[0] if _early else None)
    # The exit code is decided. Python's shutdown would put the default handlers back (a late Ctrl-C
    # would then kill the process mid-exit); ignored signals stay ignored through it.
    for signum in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(signum) is _record:
            _signal.signal(signum, _signal.SIG_IGN)
    sys.exit(code)
