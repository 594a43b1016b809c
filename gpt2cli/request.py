"""What one generation asks for, besides its prompt (Request, checked once, wherever it comes from: the
command line or a batch record), and whether a run's keys and values fit in memory."""

from __future__ import annotations

from dataclasses import dataclass

from gpt2cli.decoding.generate import Overflow
from gpt2cli.decoding.sampling import Penalties, SamplingOptions
from gpt2cli.errors import InvalidValue, OptionError, UsageError


def available_memory() -> int | None:
    """Bytes the system can still hand out without swapping (/proc/meminfo's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel counts in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_copies(copies: int, available: int) -> None:
    """Raises a usage error when the engine's weight copies still to be made (engine.model.layout_copy_bytes)
    cannot fit in memory by themselves: no run of this model can, whatever its options."""
    if copies > available:
        raise UsageError(
            f"this model needs ~{_size(copies)} of memory beyond its weights for the engine's copies of its LM "
            f"head and MLP weights, {_size(available)} available; free memory or use a smaller model"
        )


def check_memory(needed: int, rows_param: str, rows: int, prompt_tokens: int, max_new_tokens: int, copies: int = 0) -> None:
    """Raises an error, before anything is allocated, when the run's keys and values (needed bytes) and the
    engine's weight copies it has still to make (copies bytes) cannot fit in memory together: a usage
    error where fewer rows or new tokens would fit."""
    available = available_memory()
    if available is None or needed + copies <= available:
        return
    check_copies(copies, available)
    besides = f" (besides ~{_size(copies)} for the engine's weight copies)" if copies else ""
    raise OptionError(
        f"{{{rows_param}}} {rows} with a {prompt_tokens}-token prompt and {{max_new_tokens}} {max_new_tokens} needs "
        f"~{_size(needed)} for keys and values{besides}, {_size(available - copies)} available for them; "
        f"lower {{{rows_param}}} or {{max_new_tokens}}",
        rows_param, "max_new_tokens",
    )  # fmt: skip


@dataclass(frozen=True)
class Request:
    """Everything that decides one generation besides the prompt: what `generate` and each `batch`
    record ask for. None means the default (temperature 1.0; top_k 50 when sampling, 4 for
    contrastive search)."""

    max_tokens: int = 100
    temperature: float | None = None
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 0
    penalty_alpha: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    num_samples: int = 1
    on_overflow: Overflow = Overflow.SLIDE

    def check(self) -> "Request":
        """Raises InvalidValue/OptionError, in library terms, for values and combinations that cannot run."""
        from gpt2cli.decoding import contrastive
        from gpt2cli.decoding.generate import check_options

        check_options(self.max_tokens, self.num_samples, self.on_overflow)
        if self.seed is not None and self.seed < 0:  # numpy's generators take no negative seed
            raise InvalidValue("seed", "must be an integer >= 0", self.seed)
        self.penalties.validate()
        if self.penalty_alpha is not None:
            given = [
                name for name, on in (
                    ("temperature", self.temperature not in (None, 0.0)), ("top_p", self.top_p != 1.0),
                    ("min_p", self.min_p != 0.0), ("typical_p", self.typical_p != 1.0),
                    ("num_samples", self.num_samples != 1), ("seed", self.seed is not None),
                ) if on
            ]  # fmt: skip
            if given:
                raise OptionError(
                    "{penalty_alpha} (contrastive search) is deterministic and does not combine with "
                    + ", ".join("{" + g + "}" for g in given) + "; drop them, or drop {penalty_alpha} to sample",
                    "penalty_alpha", *given,
                )  # fmt: skip
            contrastive.check_options(*self.contrastive)
        self.sampling.validate()
        return self

    @property
    def penalties(self) -> Penalties:
        return Penalties(self.repetition_penalty, self.no_repeat_ngram)

    @property
    def contrastive(self) -> tuple[float, int] | None:
        return None if self.penalty_alpha is None else (self.penalty_alpha, 4 if self.top_k is None else self.top_k)

    @property
    def sampling(self) -> SamplingOptions:
        temperature = 1.0 if self.temperature is None else self.temperature
        return SamplingOptions(temperature, 50 if self.top_k is None else self.top_k, self.top_p, self.min_p, self.typical_p)
