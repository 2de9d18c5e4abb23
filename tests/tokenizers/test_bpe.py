"""The book's word-level BPE: hand-checked merges, fast == reference, encoding, files."""
from __future__ import annotations

import json
import random

import pytest
from conftest import SHARED_DATA, needs_shared

from lm.errors import ConfigError, TokenizerFileError
from lm.tokenizers.bpe import UNK_TOKEN, BPETokenizer, reference_merges
from lm.tokenizers.bpe_fast import fast_merges


def test_hand_checked_aaabdaaabac():
    # "_aaabdaaabac": (a,a) occurs 4 times -> "aa"; then (aa,a) and (a,b) both occur twice and
    # the tie goes to the smaller pair ("a" < "aa") -> "ab"; then (aa,ab) twice -> "aaab".
    tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=8)
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.tokenize("aaabdaaabac") == ["_", "aaab", "d", "aaab", "a", "c"]
    assert BPETokenizer.train_reference(["aaabdaaabac"], vocab_size=8).merges == tok.merges
    # 5 characters (_ a b c d) + 3 merged tokens = 8, plus <UNK>
    assert tok.vocab_size == 9 and tok.unk_id == 0


def test_word_counts_weight_pairs():
    # "_ab" x3 vs "_cd" x2: (_,a), (a,b) count 3 and win over (_,c), (c,d) count 2; ties by string
    tok = BPETokenizer.train(["ab", "cd", "ab", "cd", "ab"], vocab_size=7)
    assert tok.merges == [("_", "a"), ("_a", "b")]
    tok = BPETokenizer.train(["ab", "cd", "ab", "cd", "ab"], vocab_size=9)
    assert tok.merges == [("_", "a"), ("_a", "b"), ("_", "c"), ("_c", "d")]


def test_overlapping_pairs_counted_like_the_book():
    # "_aaaa": (a,a) counts 3 (overlapping) and wins; merging left to right gives "_ aa aa",
    # where (_,aa) and (aa,aa) tie at 1 and "_" < "aa"
    tok = BPETokenizer.train(["aaaa"], vocab_size=4)
    assert tok.merges == [("a", "a"), ("_", "aa")]
    assert tok.tokenize("aaaa") == ["_aa", "aa"]
    assert tok.tokenize("aaaaa") == ["_aa", "aa", "a"]
    assert BPETokenizer.train(["aaaa"], vocab_size=5).merges == [("a", "a"), ("_", "aa"), ("_aa", "aa")]


def random_corpus(rng: random.Random, n_words: int, alphabet: str, max_len: int) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len))) for _ in range(n_words)]


@pytest.mark.parametrize("seed,alphabet,vocab_size", [
    (0, "ab", 30), (1, "abc", 60), (2, "abcdefgh", 120), (3, "aab", 500),  # 500: runs out of pairs
    (4, "xyzé中", 80), (5, "ab_", 40),
])
def test_fast_equals_reference_on_random_corpora(seed, alphabet, vocab_size):
    rng = random.Random(seed)
    words = random_corpus(rng, 400, alphabet, 9)
    fast = BPETokenizer.train(words, vocab_size)
    ref = BPETokenizer.train_reference(words, vocab_size)
    assert fast.merges == ref.merges
    assert fast.vocab == ref.vocab


def test_fast_equals_reference_on_many_tiny_corpora():
    # tiny corpora over 2-3 letters: many ties and overlapping pairs ("aaa"); every stopping size
    rng = random.Random(1)
    for _ in range(150):
        counts = {}
        for _ in range(rng.randint(1, 5)):
            counts["".join(rng.choice("aab_") for _ in range(rng.randint(1, 8)))] = rng.randint(1, 5)
        for size in range(2, 25, 3):
            assert fast_merges(counts, size) == reference_merges(counts, size), (counts, size)


def test_min_frequency_stops_where_the_best_pair_becomes_too_rare():
    # "ab" x3 and "cd" x1: the merge a+b (count 3) is made at min_frequency 2 and 3, c+d (count 1) is not
    counts = {"ab": 3, "cd": 1}
    assert reference_merges(counts, 10) == [("a", "b"), ("c", "d")]
    assert reference_merges(counts, 10, min_frequency=2) == [("a", "b")]
    assert reference_merges(counts, 10, min_frequency=4) == []
    # the fast trainer cuts at the same place, over many small corpora and thresholds
    rng = random.Random(7)
    for _ in range(100):
        counts = {"".join(rng.choice("aab_") for _ in range(rng.randint(1, 8))): rng.randint(1, 6)
                  for _ in range(rng.randint(1, 6))}
        for m in (1, 2, 3, 5):
            assert fast_merges(counts, 30, m) == reference_merges(counts, 30, m), (counts, m)


@needs_shared
def test_fast_equals_reference_on_news():
    words = (SHARED_DATA / "news" / "train.txt").read_text(encoding="utf-8").split()[:4000]
    for size in (150, 400):
        assert BPETokenizer.train(words, size).merges == BPETokenizer.train_reference(words, size).merges


def test_vocab_size_counts_characters_and_merged_tokens():
    words = random_corpus(random.Random(7), 300, "abcdef", 8)
    tok = BPETokenizer.train(words, 50)
    assert len(tok.chars) + len({a + b for a, b in tok.merges}) == 50
    assert tok.vocab_size == 51 and sorted(tok.vocab.values()) == list(range(51))


def test_rank_encoding_equals_applying_the_merge_list():
    rng = random.Random(11)
    words = random_corpus(rng, 500, "abcd", 10)
    tok = BPETokenizer.train(words, 60)
    for w in words[:200] + random_corpus(rng, 200, "abcde", 12):
        assert list(tok.tokenize_word(w)) == tok.tokenize_word_by_merge_list(w)


def test_unknown_characters_become_unk():
    tok = BPETokenizer.train(["ab"], 5)               # chars _ a b, merges (_,a), (_a,b)
    assert tok.tokenize("abz ba") == ["_ab", UNK_TOKEN, "_", "b", "a"]
    ids = tok.encode("zz ab")
    assert ids == [tok.vocab["_"], tok.unk_id, tok.unk_id, tok.vocab["_ab"]]
    assert tok.decode(ids) == f"{UNK_TOKEN}{UNK_TOKEN} ab"


def test_round_trip_random_strings():
    # every known character, no marker: decode(encode(s)) == s with whitespace runs made single
    alphabet = "abcdeé中😀.,'-0123"
    rng = random.Random(3)
    tok = BPETokenizer.train(random_corpus(rng, 2000, alphabet, 8), 120)
    for _ in range(3000):
        s = "".join(rng.choice(alphabet + " \t\n") for _ in range(rng.randint(0, 25)))
        assert tok.decode(tok.encode(s)) == " ".join(s.split())


def test_cached_equals_uncached():
    words = random_corpus(random.Random(5), 300, "abcde", 9)
    tok = BPETokenizer.train(words, 70)
    text = " ".join(words)
    first = tok.encode(text)
    assert tok._cache                               # the per-word cache was filled
    assert tok.encode(text) == first
    tok._cache.clear()
    assert tok.encode(text) == first


def test_train_rejects_a_string():
    with pytest.raises(ConfigError):
        BPETokenizer.train("just a string", 10)


def test_decode_bad_id():
    tok = BPETokenizer.train(["ab"], 4)
    with pytest.raises(ConfigError, match="id 99"):
        tok.decode([1, 99])


# -------------------------------------------------------------------------------- files

def test_save_load_round_trip(tmp_path):
    words = random_corpus(random.Random(9), 300, "abcdé", 8)
    tok = BPETokenizer.train(words, 60)
    tok.save(tmp_path / "tok.json")
    back = BPETokenizer.load(tmp_path / "tok.json")
    assert back.merges == tok.merges and back.vocab == tok.vocab
    text = " ".join(words[:50])
    assert back.encode(text) == tok.encode(text)


def _saved(tmp_path) -> tuple[dict, object]:
    tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=8)
    return tok.to_dict(), tmp_path / "t.json"


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(version=2), "unknown version 2"),
    (lambda d: d.update(format="other"), "not an lm.bpe tokenizer"),
    (lambda d: d["merges"].append(["a", "zz"]), "unknown token 'zz'"),
    (lambda d: d["merges"].insert(0, ["aa", "ab"]), "unknown token 'aa'"),
    (lambda d: d["merges"].append(["a"]), "must be a \\[left, right\\] pair"),
    (lambda d: d["vocab"].update({"aa": 1}), "duplicate id 1"),
    (lambda d: d["vocab"].update({"aaab": 42}), "id 8 is missing"),
    (lambda d: d["vocab"].pop(UNK_TOKEN), "no '<UNK>' token"),
    (lambda d: d["vocab"].update({"q": "3"}), "integer ids"),
])
def test_load_rejects_malformed_files(tmp_path, mutate, message):
    d, path = _saved(tmp_path)
    d = json.loads(json.dumps(d))
    mutate(d)
    _write(path, d)
    with pytest.raises(TokenizerFileError, match=message):
        BPETokenizer.load(path)


def test_load_rejects_bad_json_and_duplicate_keys(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        BPETokenizer.load(path)
    path.write_text('{"format": "lm.bpe", "format": "lm.bpe"}', encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="duplicate key 'format'"):
        BPETokenizer.load(path)
    with pytest.raises(TokenizerFileError, match="no such tokenizer file"):
        BPETokenizer.load(tmp_path / "missing.json")


# -------------------------------------------------------------------------------- stage

def test_bpe_stage_on_a_tiny_corpus(tmp_path, monkeypatch):
    from lm.stages import RunConfig, run_stage
    from lm.stages import bpe as stage
    rng = random.Random(0)
    news = tmp_path / "data" / "news"
    news.mkdir(parents=True)
    lines = [" ".join(random_corpus(rng, 12, "abcdefghij", 7)) for _ in range(300)]
    (news / "train.txt").write_text("\n".join(lines[:250]) + "\n", encoding="utf-8")
    (news / "valid.txt").write_text("\n".join(lines[250:]) + "\n", encoding="utf-8")
    small = stage.Settings(max_words=None, vocab_size=80, bytelevel_lines=None, bytelevel_vocab_size=300)
    monkeypatch.setattr(stage, "Settings", lambda: small)
    m = run_stage("bpe", RunConfig(quiet=True), tmp_path / "data", tmp_path / "out")
    tok = BPETokenizer.load(tmp_path / "out" / "bpe.json")
    valid = "\n".join(lines[250:])
    assert m["vocab_size"] == tok.vocab_size == 81 and m["train_words"] == 250 * 12
    assert m["chars_per_token"] == round(len(valid) / len(tok.encode(valid)), 4)
    assert m["book_sentence_tokens"] == tok.tokenize(stage.BOOK_SENTENCE)
    assert m["bytelevel_vocab_size"] == 300 and m["bytelevel_round_trip"] is True


def test_fast_equals_reference_with_many_and_astral_characters():
    # > 256 distinct characters (the initial pair sort cannot use 16-bit codes) incl. emoji and U+10FFFF
    rng = random.Random(11)
    alphabet = [chr(c) for c in list(range(0x61, 0x7b)) + list(range(0x4E00, 0x4E00 + 300)) + [0x1F600, 0x10FFFF]]
    words = ["".join(rng.choice(alphabet[:30] if rng.random() < 0.8 else alphabet) for _ in range(rng.randint(1, 6)))
             for _ in range(2000)]
    fast, ref = BPETokenizer.train(words, 500), BPETokenizer.train_reference(words, 500)
    assert len(fast.chars) > 256
    assert fast.merges == ref.merges and len(fast.merges) > 100
