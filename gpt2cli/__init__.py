"""gpt2cli: run GPT-2 checkpoints from the command line with a pure-NumPy engine."""

__version__ = "0.1.0"
