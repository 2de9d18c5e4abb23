"""Compact n-gram counts (book, section 2.5): the book's tokenizer and every count in NumPy arrays.

`NGramCounts.build(tokens, n)` counts every n-gram of orders 1..n of a training token stream.
Tokens become integer ids; for each order k >= 2 the n-grams are one sorted array of packed keys
`prefix_index * (V + 1) + word`, where `prefix_index` is the position of the (k-1)-gram in the
order below (a trie in flat arrays), so lookups are `np.searchsorted` and whole test sets are
scored at once (`lm.ngram.backoff.CountLM`, `lm.ngram.kneser_ney`). Saved as an `.npz` of plain arrays and a
JSON header, read back without pickle and checked (`NGramFileError` names the file and problem).

>>> c = NGramCounts.build(tokenize("The cat sat. The cat ran."), n=2)
>>> c.n, len(c.vocab)
(2, 5)
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lm.errors import LMError, ConfigError, NGramFileError
from lm.utils import atomic_open, no_duplicate_keys

TOKEN_RE = re.compile(r"\b[a-zA-Z0-9]+\b|[.]")
FORMAT, VERSION = "lm.ngram_counts", 1


def tokenize(text: str) -> list[str]:
    """The book's tokenizer: lower-cased runs of letters/digits between word boundaries, and periods.

    >>> tokenize("Mr. Smith's 2 cats!")
    ['mr', '.', 'smith', 's', '2', 'cats']
    """
    return TOKEN_RE.findall(text.lower())



@dataclass
class NGramCounts:
    """All n-gram counts of a training token stream for orders 1..n, in flat NumPy arrays.

    Order 1 is indexed by token id. For order k >= 2, n-gram i is `keys[k][i] = p * B + w`
    (B = V + 1, so id V can stand for an unknown token) where p indexes the (k-1)-gram prefix in
    order k-1 and w is the last token; keys are sorted, so each context's followers are one slice
    `ptr[k][p]:ptr[k][p + 1]`.
    """
    vocab: list[str]                # id -> token, ids in order of first appearance in training
    counts: list[np.ndarray]        # counts[k]: int32 count of each order-k n-gram (counts[1][id] for unigrams)
    keys: list[np.ndarray]          # keys[k], k >= 2: sorted int64 packed (prefix index, word); keys[0], keys[1] unused
    best: list[np.ndarray]          # best[k]: per context (a (k-1)-gram), the book's most frequent follower or -1
    index: dict[str, int] = field(init=False, repr=False)   # token -> id
    ptr: list[np.ndarray] = field(init=False, repr=False)   # ptr[k]: CSR offsets of each context's followers
    ctx_total: list[np.ndarray] = field(init=False, repr=False)  # ctx_total[k][p]: sum of followers' counts

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.ptr, self.ctx_total = [None, None], [None, None]
        for k in range(2, self.n + 1):
            ptr = np.searchsorted(self.keys[k], np.arange(self.size(k - 1) + 1, dtype=np.int64) * self.base)
            csum = np.concatenate([[0], np.cumsum(self.counts[k], dtype=np.int64)])
            self.ptr.append(ptr)
            self.ctx_total.append(csum[ptr[1:]] - csum[ptr[:-1]])      # (n_{k-1},)
        self._suffix: dict[int, np.ndarray] = {}

    # sizes ------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.counts) - 1

    @property
    def V(self) -> int:
        return len(self.vocab)

    @property
    def base(self) -> int:
        return len(self.vocab) + 1

    @property
    def total(self) -> int:
        """T, the number of training tokens."""
        return int(self.counts[1].sum())

    def size(self, k: int) -> int:
        """Number of distinct n-grams of order k."""
        return self.V if k == 1 else len(self.keys[k])

    # building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, tokens: Sequence[str], n: int) -> "NGramCounts":
        """Count every n-gram of orders 1..n in `tokens` (one pass of `np.unique` per order)."""
        if n < 1:
            raise ConfigError(f"n-gram order n must be >= 1, got {n}")
        if len(tokens) == 0:
            raise LMError("cannot count n-grams of an empty token list")
        index = {w: i for i, w in enumerate(dict.fromkeys(tokens))}   # ids in order of first appearance
        ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        V, B = len(index), len(index) + 1
        unigram = np.bincount(ids, minlength=V).astype(np.int32)
        counts, keys = [None, unigram], [None, None]
        best = [None, np.array([int(np.argmax(unigram))], dtype=np.int32)]  # argmax: first max = seen first
        at = ids                                    # index of the order-k n-gram starting at each position
        for k in range(2, n + 1):
            m = len(ids) - k + 1
            q = at[:max(m, 0)] * B + ids[k - 1:]    # (m,) packed keys of every position
            uniq, first, at, cnt = np.unique(q, return_index=True, return_inverse=True, return_counts=True)
            counts.append(cnt.astype(np.int32))
            keys.append(uniq.astype(np.int64))
            best.append(_best_followers(uniq, cnt, first, B, len(counts[k - 1])))
            at = at.reshape(-1)
        return cls(list(index), counts, keys, best)

    # lookups ----------------------------------------------------------------------------------
    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids; an unknown token gets id V."""
        return np.array([self.index.get(w, self.V) for w in tokens], dtype=np.int64)

    def find(self, k: int, prefix: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Index of the order-k n-grams (prefix (k-1)-gram index, word id), or -1 where unseen."""
        prefix, word = np.asarray(prefix, dtype=np.int64), np.asarray(word, dtype=np.int64)
        if k == 1:
            return np.where(word < self.V, word, -1)
        keys = self.keys[k]
        if len(keys) == 0:
            return np.full(np.broadcast(prefix, word).shape, -1, dtype=np.int64)
        q = prefix * self.base + word
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where((keys[pos] == q) & (prefix >= 0), pos, -1)

    def index_table(self, ids: np.ndarray, n: int | None = None) -> list[np.ndarray]:
        """table[k][s]: index of the order-k n-gram ids[s:s+k] (or -1), for k = 1..n, all s at once."""
        n = self.n if n is None else n
        table = [None, self.find(1, 0, ids)]
        for k in range(2, n + 1):
            m = max(len(ids) - k + 1, 0)
            table.append(self.find(k, table[k - 1][:m], ids[k - 1:]))      # (m,)
        return table

    def context_index(self, ids: Sequence[int]) -> int:
        """Index of the (len(ids))-gram `ids` in its order, -1 if unseen; 0 for the empty context."""
        if len(ids) == 0:
            return 0
        t = self.index_table(np.asarray(ids, dtype=np.int64), len(ids))
        return int(t[len(ids)][0])

    def followers(self, k: int, context: int) -> tuple[np.ndarray, np.ndarray]:
        """(word ids, counts) seen after context `context` (a (k-1)-gram index) at order k."""
        if k == 1:
            return np.arange(self.V), self.counts[1]
        lo, hi = self.ptr[k][context], self.ptr[k][context + 1]
        return self.keys[k][lo:hi] % self.base, self.counts[k][lo:hi]

    def suffix(self, k: int) -> np.ndarray:
        """suffix(k)[i]: index in order k-1 of the n-gram i of order k without its first token."""
        if k not in self._suffix:
            prefix, word = np.divmod(self.keys[k], self.base)
            inner = np.zeros_like(prefix) if k == 2 else self.suffix(k - 1)[prefix]
            self._suffix[k] = self.find(k - 1, inner, word)
        return self._suffix[k]

    # saving -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a versioned `.npz` (no pickle): header JSON, vocab JSON, and the arrays per order."""
        header = {"format": FORMAT, "version": VERSION, "n": self.n, "vocab_size": self.V, "total": self.total}
        arrays = {"header": _json_bytes(header), "vocab": _json_bytes(self.vocab),
                  "counts_1": self.counts[1], "best_1": self.best[1]}
        for k in range(2, self.n + 1):
            arrays.update({f"keys_{k}": self.keys[k], f"counts_{k}": self.counts[k], f"best_{k}": self.best[k]})
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NGramCounts":
        """Read a file written by `save`, checking every array; NGramFileError says what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise NGramFileError(path, "no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise NGramFileError(path, f"not a readable .npz n-gram model ({type(e).__name__}: {e})") from None
        return _from_arrays(path, arrays)


def _best_followers(uniq, cnt, first, B, n_contexts) -> np.ndarray:
    """Per context, the follower with the largest count; ties go to the one seen first (the book's
    `max` over a dict iterates in insertion order). `uniq` is sorted, so contexts are contiguous."""
    best = np.full(n_contexts, -1, dtype=np.int32)
    if len(uniq) == 0:
        return best
    ctx, word = np.divmod(uniq, B)
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])          # first n-gram of each context
    score = cnt.astype(np.int64) * (int(first.max()) + 1) - first      # count first, then earliest
    top = np.maximum.reduceat(score, starts)                            # (contexts,) best score
    won = score == np.repeat(top, np.diff(np.r_[starts, len(score)]))   # exactly one per context
    best[ctx[won]] = word[won]
    return best


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _from_arrays(path: Path, a: dict[str, np.ndarray]) -> NGramCounts:
    def need(name, kind="iu"):
        if name not in a:
            raise NGramFileError(path, f"missing array {name!r}")
        x = a[name]
        if x.ndim != 1 or x.dtype.kind not in kind:
            raise NGramFileError(path, f"array {name!r} must be 1-D integers, got {x.dtype} of shape {x.shape}")
        return x

    try:
        header = json.loads(need("header", "u").tobytes().decode("utf-8"), object_pairs_hook=no_duplicate_keys)
        vocab = json.loads(need("vocab", "u").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise NGramFileError(path, f"header or vocab is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NGramFileError(path, f"not an n-gram model file (format {header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("version") != VERSION:
        raise NGramFileError(path, f"file version {header.get('version')!r} is not supported (this code reads version {VERSION})")
    n, V = header.get("n"), header.get("vocab_size")
    if not isinstance(n, int) or n < 1 or not isinstance(vocab, list) or V != len(vocab):
        raise NGramFileError(path, f"header n={n!r} / vocab_size={V!r} do not match the vocab of {len(vocab)} entries")
    if not all(isinstance(w, str) for w in vocab) or len(set(vocab)) != V:
        raise NGramFileError(path, "vocab must be a list of distinct strings")
    counts, keys, best = [None, need("counts_1")], [None, None], [None, need("best_1")]
    if len(counts[1]) != V or (counts[1] < 1).any() or len(best[1]) != 1:
        raise NGramFileError(path, f"counts_1 must hold {V} positive counts and best_1 one id")
    T, B = int(counts[1].sum()), V + 1
    for k in range(2, n + 1):
        key, cnt, bst = need(f"keys_{k}").astype(np.int64), need(f"counts_{k}"), need(f"best_{k}")
        size_below = V if k == 2 else len(keys[k - 1])
        if len(cnt) != len(key) or len(bst) != size_below:
            raise NGramFileError(path, f"order {k}: keys/counts/best lengths {len(key)}/{len(cnt)}/{len(bst)} are inconsistent")
        if len(key) and ((np.diff(key) <= 0).any() or key[0] < 0 or key[-1] >= size_below * B or (key % B == V).any()):
            raise NGramFileError(path, f"order {k}: keys must be strictly increasing packed (prefix, word) pairs")
        if (cnt < 1).any() or int(cnt.sum()) != max(T - k + 1, 0):
            raise NGramFileError(path, f"order {k}: counts must be positive and sum to T-{k - 1} = {max(T - k + 1, 0)}")
        if ((bst < -1) | (bst >= V)).any():
            raise NGramFileError(path, f"order {k}: best follower ids out of range")
        keys.append(key); counts.append(cnt.astype(np.int32)); best.append(bst.astype(np.int32))
    model = NGramCounts(vocab, counts, keys, best)
    for k in range(3, n + 1):   # every suffix of a counted n-gram must be counted too
        if (model.suffix(k) < 0).any():
            raise NGramFileError(path, f"order {k}: some n-grams have suffixes missing from order {k - 1}")
    return model
