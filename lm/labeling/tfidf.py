"""TF-IDF vectors: the baseline embedding for picking candidate labels (no sklearn, no scipy).

A text becomes a vector with one entry per word of the vocabulary:

    tfidf(w, text) = count(w in text) * idf(w),     idf(w) = ln((1 + n) / (1 + df(w))) + 1

where n is the number of texts the vectoriser was fitted on and df(w) the number of them that
contain w (sklearn's "smooth" idf). Rows are scaled to unit length, so the dot product of two rows
is their cosine. Words are runs of `[a-z0-9]` after lowercasing.

Most entries are zero, so rows are stored sparsely, in CSR form (`SparseRows`): `indptr[i]:indptr[i+1]`
slices `indices` (word ids) and `data` (weights) of row i. `cosine(A, B)` multiplies only the
columns that occur in B (a word no label contains adds nothing to any score), as one
sparse @ dense product in torch.

    >>> vec = TfidfVectorizer().fit(["rye and barley", "bees and honey"])
    >>> rows = vec.transform(["barley barley rye", "honey"])
    >>> cosine(rows, vec.transform(["rye and barley", "bees and honey"])).round(2)
    array([[0.85, 0.  ],
           [0.  , 0.63]], dtype=float32)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lm.errors import ConfigError

WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercased runs of letters and digits: "Rye, in 1131!" -> ["rye", "in", "1131"]."""
    return WORD.findall(text.lower())


@dataclass
class SparseRows:
    """A (rows, n_cols) float32 matrix in CSR form."""
    indptr: np.ndarray    # (rows + 1,) int64: row i is indices/data[indptr[i]:indptr[i + 1]]
    indices: np.ndarray   # (nnz,) int64 column ids, sorted within each row
    data: np.ndarray      # (nnz,) float32 values
    n_cols: int           # number of columns (the vocabulary size)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row_ids(self) -> np.ndarray:
        """(nnz,) the row of every stored entry."""
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.n_cols), dtype=np.float32)   # (rows, n_cols)
        out[self.row_ids(), self.indices] = self.data
        return out

    def select(self, rows: Sequence[int] | np.ndarray) -> "SparseRows":
        """The given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        take = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return SparseRows(indptr, self.indices[take], self.data[take], self.n_cols)


def from_triples(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> SparseRows:
    """Count (row, col) pairs into a CSR matrix of counts (repeated pairs add up)."""
    keys, counts = np.unique(rows.astype(np.int64) * n_cols + cols, return_counts=True)   # sorted by row, col
    r, c = np.divmod(keys, n_cols)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return SparseRows(indptr, c.astype(np.int64), counts.astype(np.float32), n_cols)


class TfidfVectorizer:
    """Fit a vocabulary and idf weights on some texts; turn texts into unit-length TF-IDF rows."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.idf = np.zeros(0, dtype=np.float32)   # (V,)

    def counts(self, texts: Sequence[str], grow: bool = False) -> SparseRows:
        """Word counts per text; unknown words are dropped (or added, with `grow`)."""
        rows, cols = [], []
        for i, text in enumerate(texts):
            for w in words(text):
                j = self.vocab.get(w)
                if j is None and grow:
                    j = self.vocab[w] = len(self.vocab)
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        return from_triples(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), len(texts), len(self.vocab))

    def fit(self, texts: Sequence[str]) -> "TfidfVectorizer":
        if not texts:
            raise ConfigError("TfidfVectorizer.fit needs at least one text")
        self.vocab = {}
        c = self.counts(texts, grow=True)
        c.n_cols = len(self.vocab)
        df = np.bincount(c.indices, minlength=c.n_cols)                                 # (V,)
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)         # (V,)
        return self

    def transform(self, texts: Sequence[str]) -> SparseRows:
        if not self.vocab:
            raise ConfigError("TfidfVectorizer: call fit() before transform()")
        m = self.counts(texts)
        m.data = m.data * self.idf[m.indices]
        norms = np.sqrt(np.bincount(m.row_ids(), weights=m.data.astype(np.float64) ** 2, minlength=len(m)))
        m.data = (m.data / np.maximum(norms, 1e-12)[m.row_ids()]).astype(np.float32)   # unit rows
        return m

    # the embedder interface shared with lm.labeling.embeddings.GPT2Embedder
    def embed(self, texts: Sequence[str]) -> SparseRows:
        return self.transform(texts)

    @staticmethod
    def cosine(a: SparseRows, b: SparseRows) -> np.ndarray:
        return cosine(a, b)


def cosine(a: SparseRows, b: SparseRows) -> np.ndarray:
    """(len(a), len(b)) dot products of unit rows = cosines. Only b's columns are kept from a."""
    cols = np.unique(b.indices)                                                  # words some b row has
    remap = np.full(max(a.n_cols, b.n_cols), -1, dtype=np.int64)
    remap[cols] = np.arange(len(cols))
    keep = remap[a.indices] >= 0
    where = torch.from_numpy(np.stack([a.row_ids()[keep], remap[a.indices[keep]]]))     # (2, nnz kept)
    a_small = torch.sparse_coo_tensor(where, torch.from_numpy(a.data[keep]), (len(a), len(cols)),
                                     check_invariants=True)
    b_dense = torch.zeros(len(cols), len(b))                                     # (V_b, len(b))
    b_dense[torch.from_numpy(remap[b.indices]), torch.from_numpy(b.row_ids())] = torch.from_numpy(b.data)
    return torch.sparse.mm(a_small, b_dense).numpy()                             # (len(a), len(b))
