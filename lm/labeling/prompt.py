"""The book's labelling prompt, and how an answer is turned into a label ID.

The prompt (the notebook's, word for word, its typos "irrelevat" and "notthing" kept) lists the
document and its candidate categories, one per line as `ID: {qcode}, PATH: {label text}`, and asks
for the ID of the best one. The example line is the book's `medtop:20000842` (relay run) when the
taxonomy has that leaf, else the taxonomy's first leaf in the same format (the toy `toytop:`
taxonomy has no relay run, and an example ID a model may copy must be a real one).

The answer: `extract_id` takes the **last** match of the ID pattern in the stripped reply (a model
that thinks aloud names rejected IDs first), and `parse_answer` accepts it only if it is one of
this document's candidates; anything else is no answer (None), which the labellers retry.

    >>> import re
    >>> pat = re.compile(r"medtop:[0-9A-Za-z]+")
    >>> extract_id("Not medtop:1, the answer is medtop:20000842.", pat)
    'medtop:20000842'
    >>> parse_answer("medtop:999", pat, ["medtop:20000842"]) is None    # not a candidate
    True
"""
from __future__ import annotations

import re
from typing import Sequence

from lm.data.loaders import Abstract
from lm.labeling.taxonomy import Leaf, Taxonomy

BOOK_EXAMPLE = Leaf("medtop:20000842", ("sport", "competition discipline", "track and field", "relay run"),
                    "A team of athletes run a relay over identical distances")

BOOK_PROMPT = """You are a document classification assistant. Your task is to classify the given document into the most appropriate category from the provided list of categories. The document consists of a title and an abstract. The categories are provided with their IDs and full hierarchical paths and definitions in the following format:

ID: [ID], PATH: Level 1 > Level 2 > ... > Level 6 (definition)

For example:

ID: {example_id}, PATH: {example_path}

Here is the document to classify:

Title: {title}

Abstract: {abstract}

Here are the possible categories:

{category_list}

Select the most appropriate category for this document from the list above. Provide only the ID of the selected category (e.g., {example_id}). Do not invent a new category; choose only from the provided options. Do not mention any of the irrelevat options in your output. Your output must only contain the most appropriate category and notthing else."""


def example_leaf(taxonomy: Taxonomy) -> Leaf:
    """The leaf the prompt shows as its example: the book's relay run, else the first leaf."""
    return taxonomy.leaf(BOOK_EXAMPLE.qcode) if BOOK_EXAMPLE.qcode in taxonomy else taxonomy.leaves[0]


def category_line(leaf: Leaf) -> str:
    return f"ID: {leaf.qcode}, PATH: {leaf.text}"


def build_prompt(doc: Abstract, candidates: Sequence[str], taxonomy: Taxonomy) -> str:
    """The book's prompt for one document and its candidate qcodes (in the order given)."""
    ex = example_leaf(taxonomy)
    return BOOK_PROMPT.format(
        example_id=ex.qcode, example_path=ex.text, title=doc.title, abstract=doc.abstract,
        category_list="\n".join(category_line(taxonomy.leaf(q)) for q in candidates))


def extract_id(text: str | None, pattern: re.Pattern) -> str | None:
    """The book's rule: the last match of the ID pattern in the stripped text, or None."""
    if not text:
        return None
    matches = pattern.findall(text.strip())
    return matches[-1] if matches else None


def parse_answer(text: str | None, pattern: re.Pattern, candidates: Sequence[str]) -> str | None:
    """The extracted ID if it is one of the candidates, else None (invalid or missing)."""
    found = extract_id(text, pattern)
    return found if found is not None and found in set(candidates) else None
