"""GPT-2's byte-level BPE: a tiktoken Encoding built offline from a folder's vocab.json + merges.txt."""

from __future__ import annotations

import itertools
import json
import re
import stat
from pathlib import Path
from typing import Callable

from gpt2cli.errors import CheckpointError, ModelNotFoundError
from gpt2cli.store.layout import TOKENIZER_FILES, check_readable, read_small_text, remedy

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenizer split pattern (tiktoken's r50k/gpt2 pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The pattern's \s: Unicode White_Space, exactly (tiktoken's regex engine uses that definition).
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Whitespace runs at least this long are cut out of the text before tiktoken's regex sees it: its
# backtracking on `\s+(?!\S)` overflows the stack on a run of ~1M characters (a Rust panic, not an
# exception). Texts shorter than this take tiktoken's path untouched. Tests lower it.
LONG_RUN = 4096


def _byte_decoder() -> dict[str, int]:
    """GPT-2's map from the printable stand-in characters of vocab.json/merges.txt back to bytes."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {chr(b): b for b in printable}
    n = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + n)] = b
            n += 1
    return table


def read_bpe_files(folder: Path) -> tuple[dict[bytes, int], int]:
    """Mergeable ranks (token bytes -> id) and the <|endoftext|> id from a folder's BPE files.

    Does what tiktoken.load.data_gym_to_mergeable_bpe_ranks does, reading local files directly
    (that function caches copies in a temp folder) and failing with a message instead of an assert.
    """
    folder = Path(folder)
    check_readable(folder)
    fix = remedy(folder)
    vocab_path, merges_path = (folder / name for name in TOKENIZER_FILES)
    for path in (vocab_path, merges_path):
        if not _is_file(path):
            raise ModelNotFoundError(
                f"{path}: tokenizer file is missing; a GPT-2 model folder needs vocab.json and merges.txt: "
                f"{fix}"
            )
    try:
        # A byte order mark and CRLF line ends (a file saved by a Windows editor, or checked out with
        # git's autocrlf) are not part of any token: Hugging Face's readers pass over them too.
        vocab = json.loads(read_small_text(vocab_path).removeprefix("\ufeff"))
        merge_lines = read_small_text(merges_path).removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = getattr(e, "strerror", None) or str(e)[:80]
        where = getattr(e, "filename", None) or vocab_path.parent
        raise CheckpointError(f"{where}: cannot read the tokenizer files ({reason}); {fix}") from None
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{vocab_path}: not a JSON object of token -> id; {fix}")
    decoder = _byte_decoder()
    eot = vocab.get(ENDOFTEXT)
    if isinstance(eot, bool) or not isinstance(eot, int) or not 0 <= eot < 2**31:  # tiktoken's ids are 32-bit
        raise CheckpointError(f"{vocab_path}: has no {ENDOFTEXT} token with a valid id, so it is not a GPT-2 vocabulary; {fix}")
    # GPT-2's ids are BPE ranks: the 256 byte tokens in alphabet order, then one per merge, in order.
    # This runs at every start, so it checks and converts all ~50k tokens in a few whole-list
    # operations (~0.1 s less than token by token); a file that fails is diagnosed line by line.
    lines = [line for line in (merge_lines[1:] if merge_lines[:1] and merge_lines[0].startswith("#") else merge_lines) if line]
    bad = next((line for line in lines if line.count(" ") != 1 or line[0] == " " or line[-1] == " "), None)
    if bad is not None:  # a merge is two tokens and one space between them
        raise CheckpointError(f"{merges_path}: malformed merge line {bad[:80]!r}; {fix}")
    order = [*decoder, *(line.replace(" ", "", 1) for line in lines)]  # the tokens, by id
    expected = dict(zip(order, itertools.count()))  # a token merged twice keeps its later id, as a dict does
    tokens = {t: i for t, i in vocab.items() if t not in (ENDOFTEXT, "<|startoftext|>")}
    if tokens != expected:
        wrong = next((t for t in tokens if expected.get(t) != tokens[t]), None)
        detail = (
            f"token {wrong!r} has id {tokens[wrong]} but merges.txt ranks it {expected.get(wrong)}"
            if wrong is not None
            else f"{len(tokens)} tokens but merges.txt builds {len(expected)}"
        )
        raise CheckpointError(f"{vocab_path}: {detail}; the two files do not belong together: {fix}")
    if eot in expected.values():  # one id for two tokens: decoding it, and stopping at it, would be wrong
        raise CheckpointError(
            f"{vocab_path}: {ENDOFTEXT} has id {eot}, which token {order[eot]!r} has already; {fix}"
        )
    # str.translate + latin-1 turn stand-in strings into bytes at C speed, one character per byte, so
    # the tokens are translated joined and cut apart again at their lengths.
    table = str.maketrans({ch: chr(b) for ch, b in decoder.items()})
    try:
        joined = "".join(order).translate(table).encode("latin-1")
    except UnicodeEncodeError:
        bad = next(t for t in order if max(map(ord, t.translate(table))) > 255)
        raise CheckpointError(f"{vocab_path}: token {bad!r} is not in GPT-2's byte alphabet; {fix}") from None
    ends = list(itertools.accumulate(map(len, order)))
    ranks = dict(zip(map(joined.__getitem__, map(slice, [0, *ends[:-1]], ends)), itertools.count()))
    return ranks, eot


def _is_file(path: Path) -> bool:
    """Path.is_file, except that a folder we may not read is an error that says so (not "missing")."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror}); fix the folder's permissions") from None


class Tokenizer:
    """Text <-> GPT-2 token ids, via tiktoken."""

    def __init__(self, ranks: dict[bytes, int], eot: int, name: str = "gpt2"):
        import tiktoken

        self.eot = eot
        self.encoding = tiktoken.Encoding(
            name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: eot}
        )
        self.n_vocab = self.encoding.n_vocab

    @classmethod
    def from_folder(cls, folder: Path) -> "Tokenizer":
        ranks, eot = read_bpe_files(folder)
        return cls(ranks, eot, name=f"gpt2:{Path(folder).name}")

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Ids of text; <|endoftext|> in it is plain text unless allow_special makes it the special token."""
        if allow_special:
            encode = lambda part: self.encoding.encode(part, allowed_special={ENDOFTEXT})  # noqa: E731
            return _encode_long(text, encode, self.encoding, special=True)
        return _encode_long(text, self.encoding.encode_ordinary, self.encoding, special=False)

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token (empty for ids beyond the vocabulary, which a model may still emit)."""
        try:
            return self.encoding.decode_single_token_bytes(token)
        except KeyError:
            return b""

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return b"".join(self.token_bytes(t) for t in tokens)

    def decode(self, tokens: list[int]) -> str:
        return self.decode_bytes(tokens).decode("utf-8", errors="replace")


def _encode_long(text: str, encode: Callable[[str], list[int]], encoding, *, special: bool) -> list[int]:
    r"""encode(text), with every whitespace run of LONG_RUN or more characters encoded apart, exactly.

    The pattern has no lookbehind, and a match that starts at a non-space never holds a space, so a
    maximal whitespace run [s, e) starts a piece, and the text before it pre-tokenizes alone as it
    does in the whole. The run itself is one piece when it ends the text; before a non-space it is
    the piece run[:-1] (`\s+(?!\S)` gives the run's last character back), and the text from e-1
    on pre-tokenizes alone as in the whole. So the ids are those pieces' BPE in order: tiktoken's
    own per-piece BPE (no regex) for the run's piece, encode() for the text between runs.
    special: <|endoftext|> is the special token, which tiktoken cuts out before its regex runs, so a
    run just before one ends its stretch of text as the text's end would (no token spans a run).
    """
    if len(text) < LONG_RUN:
        return encode(text)
    ids: list[int] = []
    start = 0
    for run in re.finditer(f"[{_WHITE_SPACE}]{{{LONG_RUN},}}", text):
        # The run is maximal as the pattern sees it: finditer's greedy match begins at the first
        # White_Space character past the last run, so neither neighbour is White_Space, which is
        # exactly the pattern's \s. (A neighbour Python alone calls space, \x1c-\x1f, once sent the
        # run whole to encode(), whose regex overflowed on it: a Rust panic and a traceback.)
        s, e = run.span()
        ends = e == len(text) or (special and text.startswith(ENDOFTEXT, e))
        stop = e if ends else e - 1
        ids += encode(text[start:s])
        ids += encoding._encode_single_piece(text[s:stop])  # BPE of one piece, as encode() does it
        start = stop
    return ids + encode(text[start:])
