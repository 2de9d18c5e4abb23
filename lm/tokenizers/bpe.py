"""Byte-pair encoding as in the book (section 2.3): a word-level BPE tokenizer.

Training starts from single characters and repeatedly merges the most frequent pair of adjacent
tokens into a new token, until the vocabulary holds `vocab_size` tokens. As in the book, a corpus
is split on whitespace and every word gets a word-start marker `_`, so "the cat" is learned as the
words `_the` and `_cat`, and a token like `_the` can only begin a word.

    >>> tok = BPETokenizer.train("low lower lowest low".split(), vocab_size=12)
    >>> tok.merges            # 8 characters (_ e l o r s t w) + 4 merged tokens = 12
    [('_', 'l'), ('_l', 'o'), ('_lo', 'w'), ('_low', 'e')]
    >>> tok.tokenize("lowest slow")
    ['_lowe', 's', 't', '_', 's', 'l', 'o', 'w']

Two trainers produce the same merge list:

- `train_reference` is the book's algorithm, kept as the readable reference: every step recounts
  every adjacent pair in every word and rewrites every word. Cost per merge ~ size of the corpus.
- `train` (fast, in `lm/tokenizers/bpe_fast.py`) keeps the pair counts up to date incrementally: a merge only
  visits the words that contain the pair (a pair -> words index) and changes only the counts next
  to each merge site; the best pair comes from a lazy max-heap (stale entries are fixed when they
  reach the top). Cost per merge ~ number of places the pair occurs: ~300x faster than the
  reference on 50k words (bench/tokenizers.py), and the gap grows with the corpus.

Tie rule (both trainers): the pair with the highest count wins; among pairs with equal counts,
the one whose (left token, right token) sorts first in Python string order. (The book takes
whichever pair `max` meets first in dict order, which depends on the corpus order; we make the
choice explicit so that the two trainers, and any two runs, agree exactly.)

Vocabulary size is counted as the book counts it: distinct characters + distinct merged tokens
(a merge that re-creates an existing token string, e.g. "a"+"bc" after "ab"+"c", adds nothing).
The tokenizer adds one more id, `<UNK>` (id 0), for characters never seen in training, so
`tok.vocab_size == vocab_size + 1` after a full training run.

Encoding applies merges by rank (lowest rank = learned first) inside each word, with a per-word
cache. Decoding joins the tokens and turns each `_` into a space: like the book, an underscore
inside a word therefore decodes as a space, and runs of whitespace come back as single spaces.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from lm.errors import ConfigError, TokenizerFileError
from lm.tokenizers.bpe_fast import Pair, fast_merges, gc_paused
from lm.utils import atomic_write_json, no_duplicate_keys

WORD_MARKER = "_"          # the book's word-start marker
UNK_TOKEN = "<UNK>"        # the token for characters never seen in training
FORMAT_NAME = "lm.bpe"     # the "format" field of our JSON files
FORMAT_VERSION = 1         # bump when the JSON layout changes; load() refuses unknown versions


# --------------------------------------------------------------------------------------------
# The book's trainer (reference)
# --------------------------------------------------------------------------------------------

def _merge_word(word: Sequence[str], pair: Pair, new: str) -> tuple[str, ...]:
    """Replace every occurrence of `pair` in `word` (left to right, no overlaps) by `new`."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def merge_by_rank(symbols: Sequence[str], ranks: Mapping[Pair, int]) -> list[str]:
    """Encode one word: repeatedly merge the adjacent pair learned earliest (lowest rank).

    Gives the same tokens as applying every merge in training order, but only looks at the pairs
    present in the word. Shared by this tokenizer and GPT-2's byte-level one.

    >>> merge_by_rank(list("_aab"), {("a", "a"): 0, ("_", "aa"): 1})
    ['_aa', 'b']
    """
    word = list(symbols)
    while len(word) > 1:
        best, best_rank = None, None
        for pair in zip(word, word[1:]):
            r = ranks.get(pair)
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = pair, r
        if best is None:
            break
        word = list(_merge_word(word, best, best[0] + best[1]))
    return word


def reference_merges(word_counts: Mapping[str, int], vocab_size: int, min_frequency: int = 1) -> list[Pair]:
    """The book's BPE loop on {word: count}; each character of a word is a starting token.

    Each step: count every adjacent pair in every word (weighted by the word's count), take the
    most frequent pair (ties: smallest (left, right)), rewrite every word with the pair merged.
    Stops when the token set reaches `vocab_size`, no pair is left, or the best pair occurs fewer
    than `min_frequency` times (the best count never rises, so this cuts the list where it falls
    below; 2 keeps a small corpus from spending its vocabulary on words seen once).
    """
    words = {tuple(w): c for w, c in word_counts.items() if w}
    tokens = {ch for w in words for ch in w}
    merges: list[Pair] = []
    while len(tokens) < vocab_size:
        pair_counts: dict[Pair, int] = {}
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
        if pair_counts[best] < min_frequency:
            break
        new = best[0] + best[1]
        words = {_merge_word(w, best, new): c for w, c in words.items()}
        merges.append(best)
        tokens.add(new)
    return merges


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------

def _word_counts(words: Iterable[str], marker: str) -> Counter:
    """{marker + word: count} over the non-empty words."""
    if isinstance(words, str):
        raise ConfigError("BPE training expects an iterable of words, not one string: "
                          "pass text.split()")
    counts = Counter(words)                         # count first, then mark the distinct words
    counts.pop("", None)
    return Counter({marker + w: c for w, c in counts.items()})


class BPETokenizer:
    """Word-level BPE: base characters, an ordered merge list, and a token <-> id table.

    Ids: 0 is `<UNK>`, then the base characters in sorted order, then the merged tokens in the
    order they were first made.
    """

    NAME = "bpe"   # what command lines call this tokenizer (python -m lm.pretraining --tokenizer bpe)

    def __init__(self, merges: Iterable[Pair], chars: Iterable[str], marker: str = WORD_MARKER):
        self.marker = marker
        self.merges: list[Pair] = [tuple(m) for m in merges]
        self.chars = set(chars)
        vocab = {UNK_TOKEN: 0}
        for ch in sorted(self.chars):
            vocab.setdefault(ch, len(vocab))
        for left, right in self.merges:
            vocab.setdefault(left + right, len(vocab))
        self.vocab: dict[str, int] = vocab
        self.id_to_token: list[str] = list(vocab)
        self.ranks: dict[Pair, int] = {}
        for r, m in enumerate(self.merges):
            self.ranks.setdefault(m, r)
        self._cache: dict[str, tuple[str, ...]] = {}

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, words: Iterable[str], vocab_size: int, marker: str = WORD_MARKER) -> "BPETokenizer":
        """The fast trainer. `vocab_size` counts characters + merged tokens, as in the book."""
        with gc_paused():
            counts = _word_counts(words, marker)
            return cls(fast_merges(counts, vocab_size), set("".join(counts)), marker)

    @classmethod
    def train_reference(cls, words: Iterable[str], vocab_size: int,
                        marker: str = WORD_MARKER) -> "BPETokenizer":
        """The book's trainer (slow); gives the same merges as `train`."""
        counts = _word_counts(words, marker)
        return cls(reference_merges(counts, vocab_size), set("".join(counts)), marker)

    # ---------------------------------------------------------------- encoding
    @property
    def vocab_size(self) -> int:
        """Number of ids (including `<UNK>`); ids are 0 .. vocab_size - 1."""
        return len(self.id_to_token)

    @property
    def unk_id(self) -> int:
        return self.vocab[UNK_TOKEN]

    def tokenize_word(self, word: str) -> tuple[str, ...]:
        """Tokens of one word (the marker is added here). Merges apply by rank, cached per word."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        chars = self.chars
        out = tuple(merge_by_rank([ch if ch in chars else UNK_TOKEN for ch in self.marker + word], self.ranks))
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[word] = out
        return out

    def tokenize_word_by_merge_list(self, word: str) -> list[str]:
        """The book's way: apply every merge in training order to the word (slow; for tests)."""
        syms = tuple(ch if ch in self.chars else UNK_TOKEN for ch in self.marker + word)
        for left, right in self.merges:
            syms = _merge_word(syms, (left, right), left + right)
        return list(syms)

    def tokenize(self, text: str) -> list[str]:
        """Split `text` on whitespace and tokenize each word."""
        out: list[str] = []
        for word in text.split():
            out.extend(self.tokenize_word(word))
        return out

    def encode(self, text: str) -> list[int]:
        vocab = self.vocab
        return [vocab[t] for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Join the tokens; each marker becomes a space; the leading space is dropped."""
        try:
            text = "".join([self.id_to_token[i] for i in ids])
        except (IndexError, TypeError):
            bad = [i for i in ids if not (isinstance(i, int) and 0 <= i < self.vocab_size)]
            raise ConfigError(f"decode: id {bad[0]!r} is not in 0..{self.vocab_size - 1}") from None
        text = text.replace(self.marker, " ")
        return text[1:] if text.startswith(" ") else text

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "marker": self.marker,
                "unk_token": UNK_TOKEN, "vocab": self.vocab, "merges": [list(m) for m in self.merges]}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as versioned JSON (atomically)."""
        atomic_write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a file written by `save`, checking it; TokenizerFileError says what is wrong."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenizerFileError(path, "no such tokenizer file") from None
        except UnicodeDecodeError as e:
            raise TokenizerFileError(path, f"not UTF-8 ({e})") from None
        try:
            obj = json.loads(text, object_pairs_hook=no_duplicate_keys)
        except ValueError as e:   # bad JSON or a key given twice
            raise TokenizerFileError(path, f"not valid JSON: {e}") from None
        return cls.from_dict(obj, path)

    @classmethod
    def from_dict(cls, obj: dict, path: str | os.PathLike = "<dict>") -> "BPETokenizer":
        def bad(problem: str):
            return TokenizerFileError(path, problem)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
            raise bad(f"not an {FORMAT_NAME} tokenizer file (field 'format' should be {FORMAT_NAME!r})")
        if obj.get("version") != FORMAT_VERSION:
            raise bad(f"unknown version {obj.get('version')!r} (this code reads version {FORMAT_VERSION})")
        marker, unk, vocab, merges = (obj.get(k) for k in ("marker", "unk_token", "vocab", "merges"))
        if not isinstance(marker, str) or len(marker) != 1:
            raise bad(f"field 'marker' must be one character, got {marker!r}")
        if unk != UNK_TOKEN:
            raise bad(f"field 'unk_token' must be {UNK_TOKEN!r}, got {unk!r}")
        if not isinstance(vocab, dict) or not all(isinstance(t, str) and type(i) is int for t, i in vocab.items()):
            raise bad("field 'vocab' must map token strings to integer ids")
        if UNK_TOKEN not in vocab:
            raise bad(f"vocab has no {UNK_TOKEN!r} token")
        by_id: dict[int, str] = {}
        for t, i in vocab.items():
            if i in by_id:
                raise bad(f"duplicate id {i}: tokens {by_id[i]!r} and {t!r}")
            by_id[i] = t
        missing = sorted(set(range(len(vocab))) - set(by_id))
        if missing:
            raise bad(f"ids must be 0..{len(vocab) - 1}; id {missing[0]} is missing "
                      f"(out of range: {sorted(set(by_id) - set(range(len(vocab))))[:3]})")
        if not isinstance(merges, list):
            raise bad("field 'merges' must be a list of [left, right] pairs")
        chars = {t for t in vocab if len(t) == 1}
        known = set(chars)
        for n, m in enumerate(merges):
            if not (isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m)):
                raise bad(f"merge #{n} must be a [left, right] pair of strings, got {m!r}")
            for side in m:
                if side not in known:
                    raise bad(f"merge #{n} {m!r} uses unknown token {side!r} "
                              f"(not a base character nor made by an earlier merge)")
            if m[0] + m[1] not in vocab:
                raise bad(f"merge #{n} {m!r} makes {m[0] + m[1]!r}, which is not in the vocab")
            known.add(m[0] + m[1])
        extra = set(vocab) - known - {UNK_TOKEN}
        if extra:
            raise bad(f"vocab token {sorted(extra)[0]!r} is neither a character nor made by a merge")
        tok = cls(merges, chars, marker)
        tok.vocab = dict(vocab)                     # keep the file's ids
        tok.id_to_token = [by_id[i] for i in range(len(vocab))]
        return tok

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"
