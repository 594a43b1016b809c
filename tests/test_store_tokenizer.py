"""The tokenizer (store/tokenizer.py, decoding/text.py): ids identical to transformers' GPT-2
tokenizer; streaming never breaks a character."""

from __future__ import annotations

import pytest

from gpt2cli.decoding.text import Detokenizer
from gpt2cli.errors import CheckpointError, ModelNotFoundError
from gpt2cli.store.tokenizer import ENDOFTEXT, Tokenizer
from tests.support import models as modelfactory

CORPUS = [
    "Hello world",
    "The meaning of life is",
    "  leading spaces, trailing spaces   ",
    "multiple   spaces\n\n\ttabs\r\nand CRLF\n",
    "I'm sure they'll say we've done what you'd do, can't they? It's O'Neil's.",
    "日本語のテキストと中文文本와 한국어",
    "emoji 🎉🔥 family 👨‍👩‍👧 flags 🇫🇷 skin 👍🏽",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # comment\n",
    "ünïcödé Ελληνικά русский עברית العربية",
    "numbers 1234567 3.14159 -42 1e-10 0xFF",
    "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.de",
    "    \n\n\n    ",
    "Ａｌｌ　ｆｕｌｌｗｉｄｔｈ　and zero\u200bwidth and combining e\u0301",
    '{"json": [1, 2, {"x": null}], "s": "\\u00e9"}',
]


@pytest.fixture(scope="module")
def real(real_tokenizer_dir):
    return Tokenizer.from_folder(real_tokenizer_dir)


@pytest.fixture(scope="module")
def reference(real_tokenizer_dir):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    return transformers.GPT2Tokenizer.from_pretrained(str(real_tokenizer_dir))


@pytest.mark.parametrize("text", CORPUS)
def test_ids_match_transformers_gpt2_tokenizer(real, reference, text):
    ids = real.encode(text)
    assert ids == reference.encode(text)
    assert real.decode(ids) == text


def test_known_ids_of_the_real_vocabulary(real):
    assert real.encode("Hello world") == [15496, 995]
    assert real.eot == 50256
    assert real.n_vocab == 50257


def test_endoftext_in_user_text_is_plain_text_unless_allowed(real, reference):
    text = "a<|endoftext|>b"
    plain = real.encode(text)
    assert 50256 not in plain
    assert real.decode(plain) == text
    special = real.encode(text, allow_special=True)
    assert special == [64, 50256, 65]
    assert special == reference.encode(text)


def test_tiny_bpe_round_trips_bytes(tmp_path):
    modelfactory.write_tiny_tokenizer(tmp_path)
    tok = Tokenizer.from_folder(tmp_path)
    text = "the world and on it 🎉"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges applied
    assert tok.encode(ENDOFTEXT, allow_special=True) == [tok.eot]


def test_streaming_split_multibyte_characters_prints_exactly_the_full_decode(real):
    text = "日本語 🎉🔥👨‍👩‍👧 é"
    ids = real.encode(text)
    # GPT-2 splits these characters over several tokens: at least one token is not valid UTF-8 alone.
    assert any(_invalid_alone(real.token_bytes(i)) for i in ids)
    detok = Detokenizer(real.token_bytes)
    pieces = [detok.feed(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_streaming_bytes_that_never_complete_match_the_full_decode(tmp_path):
    modelfactory.write_tiny_tokenizer(tmp_path)
    tok = Tokenizer.from_folder(tmp_path)
    ids = tok.encode("é🎉x")
    broken = [ids[0], ids[2], ids[1], ids[5], ids[3]]  # shuffled bytes: some sequences stay incomplete
    detok = Detokenizer(tok.token_bytes)
    assert "".join(detok.feed(i) for i in broken) + detok.flush() == tok.decode(broken)


def _invalid_alone(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_missing_tokenizer_file_names_the_file(tmp_path):
    modelfactory.write_tiny_tokenizer(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(ModelNotFoundError, match="merges.txt"):
        Tokenizer.from_folder(tmp_path)


def test_vocab_and_merges_that_disagree_are_refused(tmp_path):
    modelfactory.write_tiny_tokenizer(tmp_path)
    lines = (tmp_path / "merges.txt").read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    (tmp_path / "merges.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="do not belong together"):
        Tokenizer.from_folder(tmp_path)


@pytest.mark.parametrize("line", ["ab", " a b", "a b ", "a b c", "a  b"])
def test_a_malformed_merge_line_is_named(tmp_path, line):
    modelfactory.write_tiny_tokenizer(tmp_path)
    lines = (tmp_path / "merges.txt").read_text().splitlines()
    lines.insert(2, line)
    (tmp_path / "merges.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match=f"merges.txt: malformed merge line {line!r}"):
        Tokenizer.from_folder(tmp_path)


def test_a_token_outside_gpt2s_byte_alphabet_is_named(tmp_path):
    import json

    modelfactory.write_tiny_tokenizer(tmp_path, merges=[("h", "e"), ("he", "世")])  # a character no byte stands for
    with pytest.raises(CheckpointError, match="vocab.json: token 'he世' is not in GPT-2's byte alphabet"):
        Tokenizer.from_folder(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["he世"] == 257  # it was the files' agreement, not a mismatch, that got this far


def test_tiny_ranks_are_each_tokens_bytes_at_its_id(tmp_path):
    from gpt2cli.store.tokenizer import read_bpe_files

    size = modelfactory.write_tiny_tokenizer(tmp_path, merges=[("h", "e"), ("Ġ", "t"), ("he", "Ġt"), ("Ċ", "Ċ")])
    ranks, eot = read_bpe_files(tmp_path)
    assert eot == size - 1 and len(ranks) == size - 1
    assert [ranks[b"he"], ranks[b" t"], ranks[b"he t"], ranks[b"\n\n"]] == [256, 257, 258, 259]
    assert sorted(ranks[bytes([b])] for b in range(256)) == list(range(256))


def test_ranks_equal_tiktokens_own_data_gym_conversion(real_tokenizer_dir, tmp_path, monkeypatch):
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from gpt2cli.store.tokenizer import read_bpe_files

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # tiktoken caches copies; keep them here
    theirs = data_gym_to_mergeable_bpe_ranks(
        str(real_tokenizer_dir / "merges.txt"), str(real_tokenizer_dir / "vocab.json")
    )
    ours, eot = read_bpe_files(real_tokenizer_dir)
    assert ours == theirs and eot == 50256
