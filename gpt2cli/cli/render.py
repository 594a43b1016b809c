"""Every table and JSON record the commands print: pure functions from results to text or dicts.

Tables are for terminals (wrapped to a width, control characters neutralised); records are what
--json prints, one object per line.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpt2cli.decoding.text import Completion
    from gpt2cli.decoding.scores import Scored
    from gpt2cli.session import Compared, Decoded
    from gpt2cli.store.hub import ModelEntry
    from gpt2cli.store.remove import Plan
    from gpt2cli.store.tokenizer import Tokenizer


# --- generate ---


def completion_record(row: "Completion", prompt_tokens: int, prompt: str | None = None) -> dict:
    """generate --json's object for one sample (its text and rest flushed: the row has ended)."""
    from gpt2cli.session import completion_record as record

    return {**({"prompt": prompt} if prompt is not None else {}), **record(row, prompt_tokens)}


def sample_separator(i: int, n: int) -> str:
    """The line before sample i (0-based) of n, when several are printed one after another."""
    return f"\n\n--- sample {i + 1} of {n} ---\n"


# --- beam ---


def decoded_record(d: "Decoded") -> dict:
    """One decoding in the beam command's JSON shape."""
    return {"text": d.text, "tokens": d.tokens, "score": d.score, "logprob": d.logprob, "finish_reason": d.finish_reason}


@dataclass(frozen=True)
class DecodingRow:
    """One line of the beam table: a decoding's label, its numbers and its text."""

    label: str  # "greedy", "beam 1", "sample"
    score: float  # logprob / n_tokens ** length_penalty
    avg_logprob: float  # logprob / n_tokens
    finish_reason: str  # "eos" or "length"
    text: str


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns text takes (wide East Asian characters count two, combining marks none)."""
    return sum(_char_width(ch) for ch in text)


def terminal_safe(text: str) -> str:
    """Text that cannot move the cursor or restyle the terminal: tabs become spaces, other controls
    (escape sequences, carriage returns) are shown as \\xNN. Newlines stay."""
    out = []
    for ch in text:
        if ch == "\t":
            out.append("    ")
        elif ch != "\n" and unicodedata.category(ch) == "Cc":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def wrap_text(text: str, width: int) -> list[str]:
    """Lines of at most `width` display columns: breaks at spaces, splits longer words, keeps newlines."""
    width = max(width, 1)
    lines: list[str] = []
    for paragraph in terminal_safe(text).split("\n"):
        line, used = "", 0
        for piece in re.findall(r"\s+|\S+", paragraph):
            w = display_width(piece)
            if piece.isspace():
                if line and used + w <= width:
                    line, used = line + piece, used + w
                continue  # spaces at a line break are dropped
            if used + w > width and line:
                lines.append(line.rstrip())
                line, used = "", 0
            # A word wider than the column is split between characters, never inside a \xNN escape.
            for unit in re.findall(r"\\x[0-9a-f]{2}|.", piece):
                uw = display_width(unit)
                if used + uw > width and line:
                    lines.append(line)
                    line, used = "", 0
                line, used = line + unit, used + uw
        lines.append(line.rstrip())
    return lines


def _pad(text: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - display_width(text))
    return gap + text if right else text + gap


def render_beam_table(prompt: str, prompt_tokens: int, rows: list[DecodingRow], width: int) -> str:
    """The prompt once, then one row per decoding with its text wrapped to fit `width` columns."""
    cells = [(r.label, score_text(r.score), score_text(r.avg_logprob), r.finish_reason) for r in rows]
    return decodings_table(
        prompt, prompt_tokens, ("decoding", "score", "avg lp", "end"), list(zip(cells, (r.text for r in rows))), width,
        right=(1, 2),
    )  # fmt: skip


def decodings_table(
    prompt: str, prompt_tokens: int, headers: tuple[str, ...], rows: list[tuple[tuple[str, ...], str]], width: int,
    right: tuple[int, ...] = (),
) -> str:  # fmt: skip
    """The prompt once, then one row per decoding: its cells under headers (columns in `right` aligned
    right), then its text wrapped to fit `width` columns. Where the cells leave the text fewer than 20
    columns, each text goes under its row instead; where the cells alone are wider than `width` (a
    narrow terminal), each row is its first cell on a line, then its other cells as "header value"."""
    widths = [max([display_width(h)] + [display_width(c[i]) for c, _ in rows]) for i, h in enumerate(headers)]
    indent = sum(widths) + 2 * len(widths)  # each column is followed by two spaces
    beside = width - indent >= 20
    text_indent = indent if beside else 4
    text_width = max(width - text_indent, 1)

    label = f"prompt ({count(prompt_tokens, 'token')}): "
    shown = prompt or "(empty: generation starts from <|endoftext|>)"
    if display_width(label) + 20 <= width:
        prompt_lines = wrap_text(shown, width - len(label))
        out = [label + prompt_lines[0]] + [(" " * len(label) + line).rstrip() for line in prompt_lines[1:]]
    else:
        out = [label.rstrip()] + [("    " + line).rstrip() for line in wrap_text(shown, width - 4)]
    out.append("")

    if indent - 2 > width:
        return "\n".join(out + _stacked_rows(headers, rows, width)) + "\n"

    def fields(values: tuple[str, ...]) -> str:
        return "  ".join(_pad(v, w, right=i in right) for i, (v, w) in enumerate(zip(values, widths)))

    rule = "-" * min(text_width, 40)
    out.append(fields(headers) + "  text" if beside else fields(headers).rstrip())
    out.append(fields(tuple("-" * w for w in widths)) + ("  " + rule if beside else ""))
    for cells, text in rows:
        text_lines = wrap_text(text, text_width)
        if beside:
            out.append((fields(cells) + "  " + text_lines[0]).rstrip())
            text_lines = text_lines[1:]
        else:
            out.append(fields(cells).rstrip())
        out.extend((" " * text_indent + line).rstrip() for line in text_lines)
    return "\n".join(out) + "\n"


def _stacked_rows(headers: tuple[str, ...], rows: list[tuple[tuple[str, ...], str]], width: int) -> list[str]:
    """Rows for a table too narrow for its columns: each row's first cell, then "header value" pairs
    indented 2, as many to a line as fit, then its text indented 4; no line wider than `width`."""
    out = []
    for cells, text in rows:
        out.extend(wrap_text(cells[0], width))
        line = ""
        for pair in (f"{h} {v}" for h, v in zip(headers[1:], cells[1:])):
            if line and 2 + display_width(line) + 2 + display_width(pair) > width:
                out.append("  " + line)
                line = ""
            line = f"{line}  {pair}" if line else pair
        if line:
            out.append("  " + line)
        out.extend(("    " + text_line).rstrip() for text_line in wrap_text(text, width - 4))
    return out


# --- compare ---


def _metric(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def compared_record(c: "Compared") -> dict:
    from gpt2cli.decoding.strategies import distinct_n, rep_n

    cont = c.tokens[:-1] if c.finish_reason == "eos" else c.tokens
    return {
        "name": c.strategy.name, "settings": c.strategy.settings, "text": c.text, "tokens": c.tokens,
        "logprobs": c.logprobs, "mean_logprob": c.mean_logprob, "rep_2": rep_n(cont, 2), "rep_4": rep_n(cont, 4),
        "distinct_2": distinct_n(cont, 2), "n_tokens": len(c.tokens), "finish_reason": c.finish_reason,
    }  # fmt: skip


def compare_table(prompt: str, prompt_tokens: int, rows: list["Compared"], width: int) -> str:
    headers = ("decoding", "avg lp", "rep-2", "rep-4", "dist-2", "tokens", "end")
    cells = []
    for c in rows:
        r = compared_record(c)
        name = f"{c.strategy.name} {c.strategy.label}".strip()
        cells.append(((name, _metric(r["mean_logprob"], 3), _metric(r["rep_2"]), _metric(r["rep_4"]),
                       _metric(r["distinct_2"]), str(r["n_tokens"]), c.finish_reason), c.text))  # fmt: skip
    return decodings_table(prompt, prompt_tokens, headers, cells, width, right=(1, 2, 3, 4, 5))


def strategies_list() -> str:
    """compare --list: each decoding, what it is, its settings with their defaults, and the default set."""
    from gpt2cli.decoding.strategies import COMMON, DEFAULT_SET, STRATEGIES

    lines = []
    for name, (what, own) in STRATEGIES.items():
        settings = ",".join(f"{k}={v}" for k, v in {**own, **COMMON}.items())
        lines.append(f"{name:<13} {what}\n{'':<13} settings: {settings}")
    lines.append("\ndefault set (when no --strategy is given):\n  " + "\n  ".join(DEFAULT_SET))
    return "\n".join(lines) + "\n"


def compared_heading(c: "Compared") -> str:
    """The line above a row's text when compare's output is piped."""
    return f"--- {c.strategy.name} {c.strategy.label} ---".replace("  ", " ")


# --- score, tokenize, models ---


def score_record(s: "Scored") -> dict:
    from gpt2cli.decoding.scores import score_record as record

    return record(s)


def score_table(s: "Scored", tokenizer: "Tokenizer") -> str:
    rows = [f"{'id':>8}  {'logprob':>9}  token"]
    unscored = 0  # --stride equal to the context: each later window's first token (NaN; null in JSON)
    for token, lp in zip(s.tokens, s.logprobs):
        unscored += lp != lp
        shown = "-" if lp != lp else f"{lp:.4f}"
        rows.append(f"{token:>8}  {shown:>9}  {quoted_bytes(tokenizer.token_bytes(token))}")
    over = count(len(s.tokens), "token")
    if unscored:
        over = f"{len(s.tokens) - unscored} of {over} ({unscored} with no history {'is' if unscored == 1 else 'are'} not scored)"
    rows.append(f"total logprob {s.total:.4f} over {over}, perplexity {s.perplexity:.3f}")
    return "\n".join(rows) + "\n"


_SHOWN = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quoted_bytes(data: bytes) -> str:
    """A token's bytes in double quotes: the text as it is, with \\n, \\t, \\", \\\\ and \\xNN for control
    characters and for bytes that are only part of a UTF-8 character (each escape written once)."""
    out = []
    for ch in data.decode("utf-8", errors="surrogateescape"):
        if ch in _SHOWN:
            out.append(_SHOWN[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not a whole character on its own
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def count(n: int, noun: str) -> str:
    """'1 token', '2 tokens'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def score_text(x: float) -> str:
    """A score with at least four significant digits (-0.000123, not -0.000), three decimals at least."""
    if not math.isfinite(x) or x == 0:
        return f"{x:.3f}"
    decimals = max(3, 3 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def tokens_record(ids: list[int], tokenizer: "Tokenizer") -> dict:
    return {
        "ids": ids,
        "tokens": [
            {"id": i, "bytes": list(tokenizer.token_bytes(i)), "text": tokenizer.token_bytes(i).decode("utf-8", errors="replace")}
            for i in ids
        ],
    }


def model_record(e: "ModelEntry") -> dict:
    return {
        "name": e.name, "repo_id": e.repo_id, "revision": e.revision, "commit": e.commit,
        "downloaded": e.downloaded, "state": e.state, "size_bytes": e.size_bytes,
        "partial_bytes": e.partial_bytes, "folder": str(e.folder),
    }  # fmt: skip


# Control characters shown escaped: a name a stranger chose (a Hub repo's file names, a folder's, a
# downloaded folder's marker) must not move the cursor, retitle or clear the user's terminal, or add a line.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x09}


def escape_controls(text: str) -> str:
    """text with its control characters (but tab) written as \\xNN."""
    return text.translate(_CONTROLS)


def models_table(entries: list["ModelEntry"]) -> str:
    names = [escape_controls(e.name) for e in entries]  # a marker's repo id is whatever its file says
    width = max(len("NAME"), *(len(n) for n in names))
    rows = [f"{'NAME':<{width}}  {'DOWNLOADED':<10}  {'SIZE':>9}  FOLDER"]
    for e, name in zip(entries, names):
        size = human_size(e.size_bytes) if e.size_bytes else "-"
        state = e.state + ("+partial" if e.partial_bytes and e.state != "partial" else "")
        rows.append(f"{name:<{width}}  {state:<10}  {size:>9}  {escape_controls(str(e.folder))}")
    return "\n".join(rows) + "\n"


def removal_summary(plan: "Plan") -> str:
    """`gpt2cli rm`'s description of what it deletes."""
    parts = []
    if plan.files:
        parts.append(f"{plan.name} in {plan.folder}")
    if plan.staging is not None:
        parts.append(f"the partial download {plan.staging}")
    return " and ".join(parts) + f" ({human_size(plan.size_bytes)})"


def human_size(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as the Hub shows sizes)."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def beam_table(
    prompt: str, prompt_tokens: int, beams: list["Decoded"], width: int, greedy: "Decoded | None" = None, sample: "Decoded | None" = None
) -> str:
    """The beam command's table: greedy (if given), every beam, the sample (if given)."""
    labelled = [(f"beam {i + 1}", d) for i, d in enumerate(beams)]
    if greedy is not None:
        labelled.insert(0, ("greedy", greedy))
    if sample is not None:
        labelled.append(("sample", sample))
    rows = [DecodingRow(label, d.score, d.logprob / len(d.tokens), d.finish_reason, d.text) for label, d in labelled]
    return render_beam_table(prompt, prompt_tokens, rows, width)
