"""Options shared by several commands, declared once, and the option that sets each library parameter.

Values are checked once, where the library receives them (errors.InvalidValue names the parameter);
FLAGS lets the CLI say the same message with the option's name. Choices are Enums, so typer lists
and checks them.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpt2cli.decoding.generate import Overflow

# library parameter -> the option that sets it, for messages (errors.OptionError.render)
FLAGS = {
    "max_new_tokens": "--max-tokens",
    "num_samples": "--num-samples",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "on_overflow": "--on-overflow",
    "num_beams": "--beams",
    "num_return": "--num-return",
    "no_repeat_ngram_size": "--no-repeat-ngram",
    "early_stopping": "--early-stopping",
    "length_penalty": "--length-penalty",
    "repetition_penalty": "--repetition-penalty",
    "min_p": "--min-p",
    "typical_p": "--typical-p",
    "penalty_alpha": "--penalty-alpha",
    "strategy": "--strategy",
    "seed": "--seed",
    "stride": "--stride",
    "num_groups": "--groups",
    "diversity_penalty": "--diversity-penalty",
    "batch_size": "--batch-size",
    "ray_actors": "--ray-actors",
}


def choice(enum: type[Enum], choices: str):
    """A typer parser for an Enum option: case-insensitive, and the error lists the choices."""

    def parse(value: str | Enum) -> Enum:
        if isinstance(value, enum):
            return value
        try:
            return enum(str(value).strip().lower())
        except ValueError:
            raise typer.BadParameter(f"must be {choices}, got {value!r}") from None

    return parse


class EarlyStopping(str, Enum):
    """--early-stopping's choices, as transformers names them."""

    TRUE = "true"
    FALSE = "false"
    NEVER = "never"

    @property
    def value_for_search(self) -> bool | str:
        """beam_search's early_stopping: True, False or "never"."""
        return {"true": True, "false": False}.get(self.value, self.value)


ModelOpt = Annotated[
    str,
    typer.Option(
        "-m", "--model", envvar="GPT2CLI_MODEL", show_envvar=True, metavar="MODEL",
        help="Model: a folder with config.json, model.safetensors, vocab.json, merges.txt; "
        "or a name (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2) or Hub repo owner/name.",
    ),
]  # fmt: skip
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", metavar="REV", help="Hub branch, tag or commit to use.")]


def _weights_dir(value: str | Path) -> Path:
    """An empty --weights-dir would silently mean the current folder (and litter it with .locks/)."""
    if isinstance(value, str) and not value.strip():
        raise typer.BadParameter("must not be empty: give a folder, or leave the option out")
    return Path(value)


WeightsDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--weights-dir", envvar="GPT2CLI_WEIGHTS", parser=_weights_dir, metavar="DIR", help="Folder holding downloaded models."
    ),
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never touch the network (as HF_HUB_OFFLINE=1).")]
PromptArg = Annotated[
    Optional[str],
    typer.Argument(metavar="PROMPT", show_default=False, help="Prompt text; omit it or pass - to read stdin (piped stdin also comes before PROMPT)."),
]
TextArg = Annotated[Optional[str], typer.Argument(metavar="TEXT", show_default=False, help="The text; omit it or pass - to read stdin.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
AllowSpecialOpt = Annotated[
    bool, typer.Option("--allow-special", help="Treat <|endoftext|> in the text as the special token, not as text.")
]
MaxTokensOpt = Annotated[int, typer.Option("-n", "--max-tokens", metavar="N", help="How many new tokens, at most.")]
TemperatureOpt = Annotated[float, typer.Option("-t", "--temperature", metavar="T", help="Sampling temperature; 0 = greedy.")]
TopKOpt = Annotated[int, typer.Option("-k", "--top-k", metavar="K", help="Sample among the k most likely tokens; 0 = off.")]
TopPOpt = Annotated[float, typer.Option("-p", "--top-p", metavar="P", help="Nucleus sampling mass in (0, 1]; 1 = off.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", min=0, metavar="SEED", help="Random seed: the same seed and options give the same text.")]
RepetitionPenaltyOpt = Annotated[
    float,
    typer.Option(
        "--repetition-penalty", metavar="F",
        help="Scores of tokens already in the text (prompt included) divided by this (multiplied if negative); 1 = off.",
    ),
]  # fmt: skip
NoRepeatNgramOpt = Annotated[
    int, typer.Option("--no-repeat-ngram", metavar="N", help="No n-gram of this size appears twice (prompt included); 0 = off.")
]


def _overflow_option(metavar: str, help: str):
    """--on-overflow: generate's (every mode) or compare's (no slide: its rows see one context)."""
    return Annotated[Overflow, typer.Option("--on-overflow", parser=choice(Overflow, "one of slide, truncate, error"), metavar=metavar, help=help)]


OverflowOpt = _overflow_option(
    "[slide|truncate|error]",
    "When prompt + new tokens exceed the context: slide (keep going on the most recent window), "
    "truncate (drop the prompt's start), error (exit 2).",
)
# compare's rows all see one context and beams never slide, so a prompt that does not fit is cut
# (slide, generate's default, is taken as truncate here).
CompareOverflowOpt = _overflow_option(
    "[truncate|error]",
    "When prompt + new tokens exceed the context: truncate (drop the prompt's start, so every row "
    "sees the same context; slide does the same here) or error (exit 2).",
)
EarlyStoppingOpt = Annotated[
    EarlyStopping,
    typer.Option(
        "--early-stopping",
        parser=choice(EarlyStopping, "true, false or never"),
        metavar="[true|false|never]",
        help="When beam search ends (transformers' meanings): true = once --beams hypotheses have finished; "
        "false = also once no running beam can beat the finished ones at its current length; "
        "never = judge that at --max-tokens when --length-penalty > 0.",
    ),
]

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def stop_strings(values: Optional[list[str]]) -> tuple[str, ...]:
    """--stop's values with \\n, \\t and \\\\ understood (so `--stop "\\n\\n"` means a blank line, as
    users type it); any other backslash stays as it is. An empty stop string is a usage error: it
    would end every output before its first character."""
    stops = []
    for value in values or ():
        text = re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], value)
        if not text:
            raise typer.BadParameter("must not be empty (it would stop before the first character)", param_hint="'--stop'")
        stops.append(text)
    return tuple(stops)


# generate's and batch's decoding options (None: the default the help names)
SamplingTemperatureOpt = Annotated[
    Optional[float], typer.Option("-t", "--temperature", metavar="T", help="Sampling temperature; 0 = greedy (default 1.0).")
]
SamplingTopKOpt = Annotated[
    Optional[int],
    typer.Option(
        "-k", "--top-k", metavar="K",
        help="Sample among the k most likely tokens, 0 = off (default 50); with --penalty-alpha, the "
        "candidates contrastive search compares (default 4).",
    ),
]
MinPOpt = Annotated[
    float, typer.Option("--min-p", metavar="P", help="Drop tokens less likely than this times the top token; 0 = off.")
]
TypicalPOpt = Annotated[
    float, typer.Option("--typical-p", metavar="P", help="Typical sampling: keep the most typical tokens up to this mass; 1 = off.")
]
PenaltyAlphaOpt = Annotated[
    Optional[float],
    typer.Option(
        "--penalty-alpha", metavar="A",
        help="Contrastive search (deterministic): each step picks among the -k most likely tokens by "
        "(1 - A) * probability - A * similarity to the text so far.",
    ),
]
StopOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--stop", metavar="TEXT",
        help="End the output before this text (repeatable). \\n, \\t and \\\\ are read as newline, tab and "
        "backslash: --stop '\\n\\n' ends at a blank line; write a literal backslash-n as '\\\\n'.",
    ),
]
IgnoreEosOpt = Annotated[bool, typer.Option("--ignore-eos", help="Keep going past <|endoftext|>.")]
