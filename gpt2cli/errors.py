"""The exception types a user can see, each with the exit code the CLI returns for it."""

from __future__ import annotations


class GPT2CLIError(Exception):
    """An error caused by input, files or the environment; its message says what to do."""

    exit_code = 1


class UsageError(GPT2CLIError):
    """A bad option value or argument combination."""

    exit_code = 2


class ModelNotFoundError(GPT2CLIError):
    """No model under that name, path or repo; or a folder lacking the model's files."""

    exit_code = 2


class ContextOverflowError(UsageError):
    """The prompt does not fit the model's context and --on-overflow error was asked for."""


class CheckpointError(GPT2CLIError):
    """A checkpoint or tokenizer file that exists but is unreadable, inconsistent or unsafe."""

    exit_code = 3


class DownloadError(GPT2CLIError):
    """The Hub could not be reached, or refused or interrupted a download."""

    exit_code = 4
