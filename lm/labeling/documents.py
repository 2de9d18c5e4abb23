"""The documents to label: arXiv titles and abstracts, and (on the toy data) their true topics.

`arxiv/abstracts.jsonl` holds `{"id", "title", "abstract"}` (cleaned as the book does; loaded by
`lm.data.loaders.load_abstracts`). The embedded toy data also has `arxiv/labels.jsonl`,
`{"id", "qcode"}`: the leaf each toy abstract was written about, so every labelling method can be
scored against the truth. The real data has no such file: there, only agreement can be measured.

The book embeds and prompts with the same two fields; `document_text` is its embedding input:

    >>> from lm.data.loaders import Abstract
    >>> document_text(Abstract("1", "Rye in Quillmere", "We study rye."))
    'Title: Rye in Quillmere\\nAbstract: We study rye.'
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

from lm.data.loaders import Abstract, data_file, load_abstracts, optional_file, read_jsonl
from lm.errors import DataError
from lm.labeling.taxonomy import Taxonomy, load_taxonomy

ABSTRACTS = "arxiv/abstracts.jsonl"
TRUTH = "arxiv/labels.jsonl"          # toy data only: the true leaf of each abstract
TAXONOMY = "iptc/mediatopic.tsv"


def document_text(doc: Abstract) -> str:
    """The book's text of a document for embedding: "Title: {title}\\nAbstract: {abstract}"."""
    return f"Title: {doc.title}\nAbstract: {doc.abstract}"


def load_documents(path: str | os.PathLike) -> list[Abstract]:
    """The abstracts; a repeated id is a DataError (answers are cached by id)."""
    docs = load_abstracts(path)
    seen: set[str] = set()
    for d in docs:
        if d.id in seen:
            raise DataError(path, f"document id {d.id!r} appears more than once")
        seen.add(d.id)
    return docs


def load_truth(path: str | os.PathLike, docs: Sequence[Abstract], taxonomy: Taxonomy) -> dict[str, str]:
    """`{"id", "qcode"}` lines -> {document id: true leaf}; ids must be documents, qcodes leaves."""
    ids = {d.id for d in docs}
    truth: dict[str, str] = {}
    for r in read_jsonl(path, ("id", "qcode")):
        if r["id"] not in ids:
            raise DataError(path, f"id {r['id']!r} is not a document of {ABSTRACTS}", r["_line"])
        if r["qcode"] not in taxonomy:
            raise DataError(path, f"qcode {r['qcode']!r} is not a leaf of the taxonomy", r["_line"])
        if r["id"] in truth:
            raise DataError(path, f"id {r['id']!r} is labelled twice", r["_line"])
        truth[r["id"]] = r["qcode"]
    return truth


def load_corpus(data_dir: str | os.PathLike, limit: int | None = None, seed: int = 42
                ) -> tuple[list[Abstract], Taxonomy, dict[str, str] | None]:
    """Documents, taxonomy and (when `arxiv/labels.jsonl` exists) the true topics of a data dir.

    `limit`: keep a random sample of that many documents (the book: `random.seed(42)` then
    `random.sample`), in a fixed order; None keeps all in file order.
    """
    all_docs = load_documents(data_file(data_dir, ABSTRACTS))
    taxonomy = load_taxonomy(data_file(data_dir, TAXONOMY))
    truth_path = optional_file(data_dir, TRUTH)
    truth = load_truth(truth_path, all_docs, taxonomy) if truth_path else None
    docs = all_docs
    if limit is not None and limit < len(docs):
        docs = random.Random(seed).sample(all_docs, limit)
    if truth is not None:
        missing = [d.id for d in docs if d.id not in truth]
        if missing:
            raise DataError(Path(data_dir) / TRUTH, f"no true topic for document {missing[0]!r}")
    return docs, taxonomy, truth
