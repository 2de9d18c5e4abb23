"""What a labeller is, and the simplest one: the nearest label by embedding.

Every labeller, local or hosted, answers one question,

    label(document, candidates) -> the qcode of one candidate, or None (no valid answer)

and may answer many at once (`label_many`, which yields `(index, answer)` as answers arrive, so
the caller can cache each at once). Local models override `label_many` to batch documents
through the network; network-bound labellers set `threads` and `ask_all` calls `label` from
that many threads (`lm.labeling.ask_all`). `name` identifies the labeller in the answer cache
and in the reports, so two differently configured labellers need two names.

`NearestLabel` needs no language model: it picks the candidate whose label text is closest to
the document in an embedding space (TF-IDF or GPT-2, `lm.labeling.candidates`). With the space
that chose the candidates it simply returns the first one.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from lm.data.loaders import Abstract
from lm.labeling.documents import document_text
from lm.labeling.taxonomy import Taxonomy


class Labeller:
    """The interface. Subclasses set `name` and implement `label` (and may batch `label_many`)."""

    name: str = "labeller"
    threads: int = 0   # > 0: blocking on I/O; `ask_all` runs `label` in this many threads

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        raise NotImplementedError

    def label_many(self, documents: Sequence[Abstract], candidates: Sequence[Sequence[str]]
                   ) -> Iterator[tuple[int, str | None]]:
        """(index, answer) for every document, in any order, each as soon as it is known."""
        for i, (doc, cands) in enumerate(zip(documents, candidates)):
            yield i, self.label(doc, cands)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class NearestLabel(Labeller):
    """The candidate with the highest cosine to the document in a fitted embedder's space."""

    def __init__(self, embedder, taxonomy: Taxonomy, name: str, batch_size: int = 64):
        self.embedder = embedder          # fitted: TfidfVectorizer or GPT2Embedder
        self.taxonomy = taxonomy
        self.name = name
        self.batch_size = batch_size      # documents embedded together
        self._labels = None               # label-text embeddings, computed on first use

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        return next(self.label_many([document], [candidates]))[1]

    def label_many(self, documents, candidates):
        if self._labels is None:
            self._labels = self.embedder.embed(self.taxonomy.texts)
        for start in range(0, len(documents), self.batch_size):
            docs = documents[start:start + self.batch_size]
            scores = self.embedder.cosine(self.embedder.embed([document_text(d) for d in docs]), self._labels)  # (B, L)
            for r, cands in enumerate(candidates[start:start + self.batch_size]):
                if not cands:
                    yield start + r, None
                    continue
                cols = [self.taxonomy.index(q) for q in cands]
                yield start + r, cands[int(np.argmax(scores[r, cols]))]   # first on ties
