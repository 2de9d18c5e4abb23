"""GPT-2's byte-level BPE: byte table, pre-tokenizer == GPT-2's pattern, real ids, specials, files."""
from __future__ import annotations

import json
import random

import pytest
from conftest import SHARED_GPT2, needs_gpt2_files

from lm.errors import ConfigError, TokenizerFileError, SpecialTokenError
from lm.tokenizers.bpe import reference_merges
from lm.tokenizers.gpt2 import EOT, GPT2Tokenizer, bytes_to_unicode, to_byte_chars
from lm.tokenizers.pretokenize import pretokenize_reference
from lm.tokenizers.pretokenize_fast import pretokenize


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer.from_dir(SHARED_GPT2)


def random_unicode(rng: random.Random, n: int) -> str:
    """n code points: ASCII, BMP or any plane (no lone surrogates, which UTF-8 cannot hold)."""
    out = []
    for _ in range(n):
        cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0, 0x2FFF), rng.randint(0, 0xFFFF),
                         rng.randint(0, 0x10FFFF)])
        out.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "?")
    return "".join(out)


TRICKY = " \t\n\n'sdmtlvreSa_Z09²½Ⅻé\u0301\x1c\x1f\u3000\xa0\u2028!,.😀🎉中文" + "   "


def tricky_string(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(TRICKY) for _ in range(n))


# -------------------------------------------------------------------------------- bytes

def test_bytes_to_unicode_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[ord("~")] == "~" and table[0xE9] == "é"
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert to_byte_chars("é ") == "Ã©Ġ"


# -------------------------------------------------------------------------------- pre-tokenizer

@pytest.mark.parametrize("text,pieces", [
    ("Hello world", ["Hello", " world"]),
    ("it's we're I'll you've he'd I'm don't", ["it", "'s", " we", "'re", " I", "'ll", " you", "'ve",
                                                " he", "'d", " I", "'m", " don", "'t"]),
    ("'S 's", ["'", "S", " '", "s"]),                          # contractions are lower case only
    ("a  b   c", ["a", " ", " b", "  ", " c"]),               # \s+(?!\S): one space left for the word
    ("a \n\nb  ", ["a", " \n", "\n", "b", "  "]),
    ("x_y __init__", ["x", "_", "y", " __", "init", "__"]),    # _ is punctuation for GPT-2
    ("2² ½ Ⅻ", ["2²", " ½", " Ⅻ"]),                           # all of \p{N}, not only digits
    ("e\u0301t", ["e", "\u0301", "t"]),                       # a combining mark is not a letter
    ("中文 😀😀!", ["中文", " 😀😀!"]),
    ("a\x1cb\u3000c", ["a", "\x1c", "b", "\u3000", "c"]),     # U+001C is not White_Space
])
def test_pretokenize_hand_cases(text, pieces):
    assert pretokenize(text) == pieces
    assert pretokenize_reference(text) == pieces


def test_pretokenize_equals_reference_on_random_unicode():
    rng = random.Random(0)
    for i in range(4000):
        s = random_unicode(rng, rng.randint(0, 30)) if i % 2 else tricky_string(rng, rng.randint(0, 40))
        pieces = pretokenize(s)
        assert pieces == pretokenize_reference(s), repr(s)
        assert "".join(pieces) == s


def test_pretokenize_long_text_with_rare_characters_in_windows():
    # rare characters far apart in a long text: the windowed path must equal the reference
    rng = random.Random(1)
    lines = [tricky_string(rng, 30) if i % 50 == 7 else "Plain news line, 42 words." for i in range(400)]
    text = "\n".join(lines)
    assert pretokenize(text) == pretokenize_reference(text)


# -------------------------------------------------------------------------------- real GPT-2

@needs_gpt2_files
def test_known_gpt2_ids(gpt2):
    vocab = json.loads((SHARED_GPT2 / "vocab.json").read_text(encoding="utf-8"))
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.encode("Hello world") == [15496, 995]
    # whole words of the vocab: the id is the vocab.json entry of the piece's byte characters
    tokens = ["Let", "'s", "Ġproceed", "Ġto", "Ġthe", "Ġlanguage", "Ġmodeling", "Ġpart", "."]
    assert gpt2.encode("Let's proceed to the language modeling part.") == [vocab[t] for t in tokens]
    assert gpt2.encode("\n") == [vocab["Ċ"]] == [198]
    # "é" is two bytes (Ã ©); merges.txt has the line "Ã ©", so it is one token
    assert "Ã ©" in (SHARED_GPT2 / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert gpt2.encode("é") == [vocab["Ã©"]]
    # two spaces before a word: the first space is a piece of its own (id of "Ġ" is 220)
    assert gpt2.encode("a  b") == [vocab["a"], 220, vocab["Ġb"]]


@needs_gpt2_files
def test_bpe_follows_merge_ranks(gpt2):
    # for a piece, the merges applied are the lowest-ranked pair present, repeatedly
    ranks = gpt2.ranks
    for word in ["Ġtokenization", "Ġunbelievably", "Ġxylophonist"]:
        tokens = gpt2.bpe(word)
        assert "".join(tokens) == word
        for a, b in zip(tokens, tokens[1:]):               # no pair of the result is a merge
            assert (a, b) not in ranks


@needs_gpt2_files
def test_gpt2_round_trip_random_unicode(gpt2):
    rng = random.Random(2)
    for i in range(3000):
        s = random_unicode(rng, rng.randint(0, 25)) if i % 2 else tricky_string(rng, rng.randint(0, 30))
        ids = gpt2.encode(s, disallowed_special=())
        assert gpt2.decode(ids) == s, repr(s)


@needs_gpt2_files
def test_cached_equals_uncached(gpt2):
    text = "The cache maps each piece to its ids. The cache maps each piece again!"
    first = gpt2.encode(text)
    assert gpt2.encode(text) == first
    fresh = GPT2Tokenizer.from_dir(SHARED_GPT2)
    assert fresh.encode(text) == first
    direct = [gpt2.encoder[t] for p in pretokenize(text) for t in gpt2.bpe(to_byte_chars(p))]
    assert direct == first
    assert gpt2.encode_batch([text, "Hello world"]) == [first, [15496, 995]]


@needs_gpt2_files
def test_special_tokens(gpt2):
    text = "a<|endoftext|>b"
    with pytest.raises(SpecialTokenError, match="endoftext"):
        gpt2.encode(text)
    assert gpt2.encode(text, allowed_special="all") == [64, 50256, 65]
    assert gpt2.encode(text, allowed_special={EOT}) == [64, 50256, 65]
    as_text = gpt2.encode(text, disallowed_special=())
    assert as_text == gpt2.encode_ordinary(text) and 50256 not in as_text
    assert gpt2.decode(as_text) == text == gpt2.decode([64, 50256, 65])
    with pytest.raises(ConfigError, match="not a special token"):
        gpt2.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ConfigError, match="must be 'all' or a set"):
        gpt2.encode("x", allowed_special=EOT)

    tok = GPT2Tokenizer.from_dir(SHARED_GPT2)               # a copy: adding tokens changes it
    assert tok.add_special_tokens(["<|im_start|>", "<|im_end|>"]) == [50257, 50258]
    assert tok.add_special_tokens(["<|im_end|>", EOT]) == [50258, 50256]
    assert tok.vocab_size == 50259
    chat = "<|im_start|>user\nhi<|im_end|>"
    ids = tok.encode(chat, allowed_special={"<|im_start|>", "<|im_end|>"})
    assert ids[0] == 50257 and ids[-1] == 50258 and tok.decode(ids) == chat
    with pytest.raises(SpecialTokenError, match="im_start"):
        tok.encode(chat, allowed_special={"<|im_end|>"})
    with pytest.raises(ConfigError, match="ordinary token"):
        tok.add_special_tokens(["hello"])


@needs_gpt2_files
def test_lone_surrogate_is_refused(gpt2):
    with pytest.raises(ConfigError, match="lone surrogate"):
        gpt2.encode("ab \ud800 x")


@needs_gpt2_files
def test_decode_bad_id(gpt2):
    with pytest.raises(ConfigError, match="id 50257"):
        gpt2.decode([1, 50257])
    assert gpt2.decode([gpt2.encoder["Ã"]]) == "\ufffd"       # half of "é": replaced, not an error


# -------------------------------------------------------------------------------- trainer

CORPUS = [
    "The cat sat on the mat. The cat ate the rat!",
    "It's 2024; the rats' café served 3½ crêpes to 12 cats.",
    "Über-cats don't sit; they   perch\n\non mats, naïvely.",
] * 5


def test_trainer_matches_reference_and_round_trips(tmp_path):
    tok = GPT2Tokenizer.train(CORPUS, vocab_size=320)
    assert tok.vocab_size == 320 and tok.eot_id == 319
    assert [tok.decoder[i] for i in range(3)] == ["!", '"', "#"]      # GPT-2's byte order
    # the merges are those of the book's algorithm on the byte-level pieces
    words: dict[str, int] = {}
    for text in CORPUS:
        for p in pretokenize(text):
            words[to_byte_chars(p)] = words.get(to_byte_chars(p), 0) + 1
    present = {ch for w in words for ch in w}
    assert tok.merges == reference_merges(words, len(present) + 320 - 257)
    rng = random.Random(4)
    for _ in range(500):
        s = random_unicode(rng, rng.randint(0, 20))
        assert tok.decode(tok.encode(s, disallowed_special=())) == s
    tok.save(tmp_path / "t")
    back = GPT2Tokenizer.from_dir(tmp_path / "t")
    assert back.encoder == tok.encoder and back.merges == tok.merges and back.eot_id == 319
    text = "The cat's café<|endoftext|>"
    assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert tok.encode(text, allowed_special="all")[-1] == 319


def test_trainer_min_frequency_caps_the_vocabulary_below_vocab_size():
    # "ab" 5 times, "xyz" once: with min_frequency 2 only a+b is merged, so 258 ids instead of 260
    texts = ["ab"] * 5 + ["xyz"]
    assert len(GPT2Tokenizer.train(texts, vocab_size=400).merges) == 3          # ab, xy, xyz
    tok = GPT2Tokenizer.train(texts, vocab_size=400, min_frequency=2)
    assert tok.merges == [("a", "b")] and tok.vocab_size == 258 and tok.eot_id == 257
    assert tok.decode(tok.encode("xyz ab")) == "xyz ab"                         # rare words fall back to bytes


def test_trainer_cuts_out_special_tokens_and_checks_size():
    tok = GPT2Tokenizer.train(["ab<|endoftext|>ab"] * 10, vocab_size=260)
    assert all("<" not in a + b for a, b in tok.merges)
    with pytest.raises(ConfigError, match="too small"):
        GPT2Tokenizer.train(["ab"], vocab_size=256)


# -------------------------------------------------------------------------------- files

def _write_toy(folder, vocab: dict, merges: list[str], names=("vocab.json", "merges.txt")):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / names[0]).write_text(json.dumps(vocab), encoding="utf-8")
    (folder / names[1]).write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _toy_vocab() -> dict:
    vocab = {ch: i for i, ch in enumerate(sorted(bytes_to_unicode().values(), key=ord))}
    for t in ("Ġc", "at", "Ġcat"):
        vocab[t] = len(vocab)
    vocab[EOT] = len(vocab)
    return vocab


def test_toy_files_by_hand(tmp_path):
    # merges: "Ġ c" (rank 0), "a t" (rank 1), "Ġc at" (rank 2)
    _write_toy(tmp_path / "a", _toy_vocab(), ["Ġ c", "a t", "Ġc at"], ("encoder.json", "vocab.bpe"))
    tok = GPT2Tokenizer.from_dir(tmp_path / "a")
    assert tok.vocab_size == 260 and tok.eot_id == 259
    v = tok.encoder
    assert tok.encode(" cat") == [258]
    assert tok.encode("cat cats") == [v["c"], 257, 258, v["s"]]
    assert tok.encode(" ca") == [256, v["a"]]


@pytest.mark.parametrize("vocab_edit,merges,message", [
    (None, ["Ġ c", "a t", "Ġc at", "Ġ q"], "uses token 'Ġq'"),
    (None, ["Ġ c", "a  t"], "two tokens separated by one space"),
    (lambda v: v.update({"at": 0}), ["Ġ c"], "duplicate id 0"),
    (lambda v: v.pop("a"), ["Ġ c"], "byte token 'a' is missing"),
    (lambda v: v.update({"x": -1}), ["Ġ c"], "ids >= 0"),
])
def test_malformed_files(tmp_path, vocab_edit, merges, message):
    vocab = _toy_vocab()
    if vocab_edit:
        vocab_edit(vocab)
    _write_toy(tmp_path, vocab, merges)
    with pytest.raises(TokenizerFileError, match=message):
        GPT2Tokenizer.from_dir(tmp_path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(TokenizerFileError, match="not a folder"):
        GPT2Tokenizer.from_dir(tmp_path / "nope")
    with pytest.raises(TokenizerFileError, match="no tokenizer files"):
        GPT2Tokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text("{oops", encoding="utf-8")
    (tmp_path / "merges.txt").write_text("", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid UTF-8 JSON"):
        GPT2Tokenizer.from_dir(tmp_path)
