"""Candidate labels: for each document, the k leaves whose label text is closest by cosine.

Showing a labeller all 1,136 IPTC leaves would be long, costly and confusing, so the book first
embeds every document ("Title: ...\\nAbstract: ...") and every label text ("path (definition)"),
and keeps the top 100 labels per document by cosine similarity; the labellers then choose among
those. The same here, with two embedders behind one interface (`fit`, `embed`, `cosine`):

    TF-IDF (`lm.labeling.tfidf.TfidfVectorizer`)       words shared with the label text
    GPT-2  (`lm.labeling.embeddings.GPT2Embedder`)     mean-pooled hidden states of our model

A candidate list that misses the true label caps every labeller, so the quality of this step is
the *recall at k*: the share of documents whose true label is among their k candidates (measured
on the toy data, which knows the truth).

    >>> scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.7]])
    >>> top_k(scores, 2).tolist()          # best first; ties go to the earlier label
    [[1, 2], [0, 2]]
    >>> recall_at_k(top_k(scores, 2), np.array([2, 1]))
    0.5
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.labeling.documents import document_text
from lm.labeling.taxonomy import Taxonomy


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, L) scores -> (N, min(k, L)) column indices, highest score first (stable on ties)."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")     # (N, L)
    return order[:, :k]                                     # (N, k)


def recall_at_k(top: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows whose true column (`truth`, (N,)) is among their `top` (N, k) columns."""
    if len(top) == 0:
        return float("nan")
    return float((top == truth[:, None]).any(axis=1).mean())


def label_cosines(embedder, docs: Sequence[Abstract], taxonomy: Taxonomy, fit: bool = True) -> np.ndarray:
    """(N, L) cosine of each document with each leaf's label text.

    `fit`: first fit the embedder on the documents and label texts (TF-IDF's vocabulary and idf,
    the GPT-2 embedder's centering mean); a fitted embedder can be reused with fit=False.
    """
    doc_texts = [document_text(d) for d in docs]
    if fit:
        embedder.fit(doc_texts + taxonomy.texts)
    return embedder.cosine(embedder.embed(doc_texts), embedder.embed(taxonomy.texts))


def candidate_lists(scores: np.ndarray, taxonomy: Taxonomy, k: int) -> list[list[str]]:
    """The k best leaves' qcodes per document, best first."""
    qcodes = taxonomy.qcodes
    return [[qcodes[j] for j in row] for row in top_k(scores, k).tolist()]


def recall_report(scores: np.ndarray, taxonomy: Taxonomy, docs: Sequence[Abstract], truth: dict[str, str],
                  ks: Sequence[int]) -> dict[str, float]:
    """{"recall@1": ..., "recall@5": ...} of the true leaf among each document's top k."""
    true_idx = np.array([taxonomy.index(truth[d.id]) for d in docs])
    return {f"recall@{k}": round(recall_at_k(top_k(scores, k), true_idx), 4) for k in ks}
