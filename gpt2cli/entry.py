"""Console entry point: makes Ctrl-C quiet from the very first instant, then runs the CLI.

Importing the CLI (typer, numpy) takes a moment; a Ctrl-C in it would otherwise print a
KeyboardInterrupt traceback before main() has installed its own handlers.
"""

import signal
import sys


def _exit_quietly(signum, frame):
    sys.exit(128 + signum)


def run() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_quietly)
    from gpt2cli.cli import main

    sys.exit(main())
