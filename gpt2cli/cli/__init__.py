"""The command line: app.py declares the commands, process.py runs them (signals, exit codes,
errors as one line), render.py draws every table and JSON record, output.py writes stdout.

run() is the console entry point. It makes Ctrl-C quiet from the very first instant and only then
imports the rest: importing typer and numpy takes a moment, and a Ctrl-C in it would otherwise print
a KeyboardInterrupt traceback before main() has installed its own handlers.
"""

import signal
import sys


def _exit_quietly(signum, frame):
    sys.exit(128 + signum)


def run() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_quietly)
    from gpt2cli.cli.process import main

    sys.exit(main())
