"""The decodings `compare` puts side by side: their names, settings and defaults, a SPEC parser
("top-p:p=0.92,temperature=0.7"), and the numbers that say which one repeats and which one wanders.

Pure: strings and token lists in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2cli.decoding.sampling import Penalties, SamplingOptions
from gpt2cli.errors import InvalidValue, OptionError

# Settings every strategy takes, with their "off" values.
COMMON = {"repetition_penalty": 1.0, "no_repeat_ngram": 0}
# name -> (what it is, its own settings with defaults)
STRATEGIES: dict[str, tuple[str, dict[str, float | int | str]]] = {
    "greedy": ("the most likely token at every step", {}),
    "beam": ("beam search, the best beam", {"beams": 5, "length_penalty": 1.0, "early_stopping": "false"}),
    "diverse-beam": (
        "group beam search with a Hamming diversity penalty, the best beam",
        {"beams": 4, "groups": 2, "penalty": 0.5, "length_penalty": 1.0, "early_stopping": "false"},
    ),
    "sample": ("pure sampling from the model's distribution", {"temperature": 1.0}),
    "top-k": ("sampling among the k most likely tokens", {"k": 50, "temperature": 1.0}),
    "top-p": ("nucleus sampling: the most likely tokens up to mass p", {"p": 0.92, "temperature": 1.0, "k": 0}),
    "typical": ("typical sampling: the most typical tokens up to mass p", {"p": 0.95, "temperature": 1.0}),
    "min-p": ("sampling among tokens at least p times as likely as the top one", {"p": 0.05, "temperature": 1.0}),
    "contrastive": ("contrastive search: likely, and unlike what came before", {"alpha": 0.6, "k": 4}),
}
# The library's names of the settings, as a SPEC writes them (its error messages name the SPEC's keys).
_SETTING_NAMES = {
    "num_beams": "beams", "num_groups": "groups", "diversity_penalty": "penalty", "penalty_alpha": "alpha",
    "top_k": "k", "top_p": "p", "typical_p": "p", "min_p": "p", "no_repeat_ngram_size": "no_repeat_ngram",
}  # fmt: skip
DEFAULT_SET = (
    "greedy",
    "beam:beams=5,no_repeat_ngram=2",
    "top-k:k=50",
    "top-p:p=0.92",
    "typical:p=0.95",
    "min-p:p=0.05",
    "contrastive:alpha=0.6,k=4",
    "diverse-beam:beams=4,groups=2,penalty=0.5",
    "greedy:repetition_penalty=1.2",
)


@dataclass(frozen=True)
class Strategy:
    name: str
    given: tuple[tuple[str, float | int | str], ...]  # the settings as written in the SPEC, in order

    @property
    def settings(self) -> dict[str, float | int | str]:
        """Every setting of the strategy: the defaults, overridden by the given ones."""
        return {**COMMON, **STRATEGIES[self.name][1], **dict(self.given)}

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.given)

    @property
    def deterministic(self) -> bool:
        return self.name in ("greedy", "beam", "diverse-beam", "contrastive")

    def penalties(self) -> Penalties:
        s = self.settings
        return Penalties(s["repetition_penalty"], s["no_repeat_ngram"])

    def sampling(self) -> SamplingOptions:
        """The sampler's options of greedy and the sampling strategies."""
        s, name = self.settings, self.name
        p = s.get("p", 1.0)
        return SamplingOptions(
            0.0 if name == "greedy" else s["temperature"], s.get("k", 0), p if name == "top-p" else 1.0,
            p if name == "min-p" else 0.0, p if name == "typical" else 1.0,
        )  # fmt: skip

    def beam_options(self) -> dict:
        """beam_search's keyword arguments for beam and diverse-beam (max_new_tokens aside)."""
        s = self.settings
        options = dict(
            num_beams=s["beams"], num_return=1, length_penalty=s["length_penalty"],
            early_stopping={"true": True, "false": False}.get(str(s["early_stopping"]), s["early_stopping"]),
            no_repeat_ngram_size=s["no_repeat_ngram"], repetition_penalty=s["repetition_penalty"],
        )  # fmt: skip
        if self.name == "diverse-beam":
            options |= dict(num_groups=s["groups"], diversity_penalty=s["penalty"])
        return options

    def check(self) -> "Strategy":
        """Raises InvalidValue (as a --strategy error naming the setting) for a value out of range."""
        from gpt2cli.decoding import contrastive
        from gpt2cli.decoding.beam import validate_options
        from gpt2cli.decoding.group_beam import validate_group_options

        s = self.settings
        try:
            self.penalties().validate()
            if self.name in ("beam", "diverse-beam"):
                options = self.beam_options()
                groups = {k: options.pop(k) for k in ("num_groups", "diversity_penalty") if k in options}
                validate_options(max_new_tokens=1, **options)
                if groups:
                    validate_group_options(num_beams=options["num_beams"], **groups)
            elif self.name == "contrastive":
                contrastive.check_options(s["alpha"], s["k"])
            else:
                self.sampling().validate()
        except InvalidValue as e:
            raise OptionError(f"{{strategy}} {self.name}:{self.label}: {e.render(_SETTING_NAMES)}", "strategy") from None
        return self


def parse(spec: str) -> Strategy:
    """NAME or NAME:key=value,key=value -> Strategy; values take their default's type."""
    name, _, rest = spec.strip().partition(":")
    if name not in STRATEGIES:
        raise InvalidValue("strategy", f"must be one of {', '.join(STRATEGIES)} (with :key=value settings)", spec)
    defaults = {**COMMON, **STRATEGIES[name][1]}
    given = []
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in defaults:
            raise InvalidValue("strategy", f"setting {key!r} of {name} must be one of {', '.join(defaults)} as key=value", spec)
        if any(key == seen for seen, _ in given):  # k=5,k=6: which did the user mean?
            raise InvalidValue("strategy", f"gives setting {key!r} twice; give it once", spec)
        given.append((key, _typed(raw.strip(), defaults[key], spec)))
    return Strategy(name, tuple(given))


def _typed(raw: str, default: float | int | str, spec: str) -> float | int | str:
    try:
        if isinstance(default, str):
            return raw.lower()
        if isinstance(default, int):
            return int(raw)
        return float(raw)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise InvalidValue("strategy", f"has {raw!r} where {kind} is wanted", spec) from None


# --- metrics of a continuation ---


def rep_n(tokens: list[int], n: int) -> float | None:
    """Share of the continuation's n-grams that repeat an earlier one: 1 - unique / total (Su et al.'s
    rep-n, as a fraction); None when it has fewer than n tokens."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return None if not grams else 1.0 - len(set(grams)) / len(grams)


def distinct_n(tokens: list[int], n: int) -> float | None:
    """Unique n-grams / all n-grams of the continuation; None when it has fewer than n tokens."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return None if not grams else len(set(grams)) / len(grams)
