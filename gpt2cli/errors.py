"""The exception types a user can see, each with the exit code the CLI returns for it."""

from __future__ import annotations

from typing import Mapping


class GPT2CLIError(Exception):
    """An error caused by input, files or the environment; its message says what to do."""

    exit_code = 1


class UsageError(GPT2CLIError):
    """A bad option value or argument combination."""

    exit_code = 2


class OptionError(UsageError):
    """A usage error about parameters, which its message names as `{param}`.

    The library says them under their own names (`max_new_tokens`); the CLI, which knows which
    option sets each, renders the same message with the option's name (`--max-tokens`).
    """

    def __init__(self, template: str, *params: str):
        self.template, self.params = template, params
        super().__init__(self.render({}))

    def render(self, names: Mapping[str, str]) -> str:
        text = self.template
        for param in self.params:
            text = text.replace("{" + param + "}", names.get(param, param))
        return text


class InvalidValue(OptionError):
    """One parameter outside its range: `{param} <requirement>, got <value>[; <remedy>]`.

    The requirement says what to do when one parameter alone decides it; a remedy is given when
    others take part (`lower {num_return} or raise {num_beams}`).
    """

    def __init__(self, param: str, requirement: str, value: object, *others: str, remedy: str = ""):
        self.param, self.value = param, value
        tail = f"; {remedy}" if remedy else ""
        super().__init__(f"{{{param}}} {requirement}, got {value!r}{tail}", param, *others)


class ModelNotFoundError(GPT2CLIError):
    """No model under that name, path or repo; or a folder lacking the model's files."""

    exit_code = 2


class ContextOverflowError(OptionError):
    """The prompt does not fit the model's context and the overflow policy is `error`."""


class CheckpointError(GPT2CLIError):
    """A checkpoint or tokenizer file that exists but is unreadable, inconsistent or unsafe."""

    exit_code = 3


class OutputFullError(GPT2CLIError):
    """The disk the output goes to is full (or the file may grow no more)."""

    exit_code = 5


class DownloadError(GPT2CLIError):
    """The Hub could not be reached, or refused or interrupted a download."""

    exit_code = 4
