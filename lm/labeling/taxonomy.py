"""The label set: the leaves of a topic taxonomy (IPTC Media Topics in the book), flattened.

The book keeps only the *leaves* of the IPTC tree, so that every class sits at the bottom of its
branch, and shows each one to the labellers as its full path with the leaf's definition:

    "sport > competition discipline > track and field > relay run (A team of athletes run a relay ...)"

`iptc/mediatopic.tsv` (parsed by `lm.data.loaders.load_iptc`) already carries the path and an
`is_leaf` column. The book finds leaves with a path stack over the spreadsheet's depth-first rows
(a row is a leaf if the next row's level is not deeper); our file is not in that order, so the
column is the source and `check_taxonomy` verifies it against the tree: a leaf is the parent of
no topic, every other topic is the parent of one.

IDs: the book extracts answers with the regex `medtop:\\d+`. We generalise it to the taxonomy's
own prefix (`toytop:` on the embedded data) and allow letters after the colon, because the real
file has one leaf, `medtop:2000118x` (r&b), that `\\d+` would cut short.

    >>> leaf = Leaf("toytop:01030000", ("farming and food", "beekeeping"), "Keeping bees for honey and wax")
    >>> leaf.text
    'farming and food > beekeeping (Keeping bees for honey and wax)'
    >>> id_regex("toytop").findall("I pick toytop:01010100, no: toytop:01030000.")
    ['toytop:01010100', 'toytop:01030000']
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lm.data.loaders import Topic, load_iptc
from lm.errors import DataError

QCODE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):([0-9A-Za-z]+)")   # prefix ":" code, e.g. medtop:20000842


@dataclass(frozen=True)
class Leaf:
    qcode: str        # e.g. "medtop:20000842"
    path: tuple       # names from the top level down to the leaf
    definition: str   # the leaf's one-sentence definition

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def text(self) -> str:
        """The book's label text: "name1 > name2 > ... > leaf (definition)"."""
        return f"{' > '.join(self.path)} ({self.definition})"


def id_regex(prefix: str) -> re.Pattern:
    """The book's `medtop:\\d+` for any prefix: the prefix, a colon, then digits and letters."""
    return re.compile(re.escape(prefix) + r":[0-9A-Za-z]+")


def check_taxonomy(topics: Sequence[Topic], path: str | os.PathLike = "taxonomy") -> str:
    """Check what the leaves depend on; return the qcode prefix shared by every topic.

    Raises DataError naming the file and the topic for: a qcode that is not `prefix:code`, two
    prefixes in one file, a repeated qcode or path, a level that differs from the path's length,
    a topic whose parent is missing, an `is_leaf` that contradicts the tree, or a leaf without a
    definition.
    """
    prefixes = set()
    for t in topics:
        m = QCODE.fullmatch(t.qcode)
        if m is None:
            raise DataError(path, f"topic {t.qcode!r}: a qcode must look like prefix:digits (e.g. medtop:20000842)")
        prefixes.add(m.group(1))
    if len(prefixes) > 1:
        raise DataError(path, f"qcodes mix prefixes {sorted(prefixes)}; one taxonomy has one prefix")
    for what, key in (("qcode", lambda t: t.qcode), ("path", lambda t: t.path)):
        dup = [k for k, n in Counter(key(t) for t in topics).items() if n > 1]
        if dup:
            raise DataError(path, f"{what} {dup[0]!r} appears more than once")
    paths = {t.path for t in topics}
    parents = {t.path[:i] for t in topics for i in range(1, len(t.path))}
    for t in topics:
        if any(not name.strip() for name in t.path) or t.level != len(t.path):
            raise DataError(path, f"topic {t.qcode!r}: level {t.level} but path {' > '.join(t.path)!r} "
                                  f"has {len(t.path)} names")
        if len(t.path) > 1 and t.path[:-1] not in paths:
            raise DataError(path, f"topic {t.qcode!r}: its parent {' > '.join(t.path[:-1])!r} is not in the file")
        if t.is_leaf == (t.path in parents):
            has = "has" if t.path in parents else "has no"
            raise DataError(path, f"topic {t.qcode!r}: is_leaf={int(t.is_leaf)} but it {has} topics below it")
        if t.is_leaf and not t.definition.strip():
            raise DataError(path, f"leaf {t.qcode!r} has no definition (the labellers read it)")
    return prefixes.pop()


@dataclass(frozen=True)
class Taxonomy:
    leaves: tuple      # the Leaf objects, in file order
    prefix: str        # qcode prefix shared by every topic ("medtop", "toytop")

    def __post_init__(self):
        object.__setattr__(self, "_index", {leaf.qcode: i for i, leaf in enumerate(self.leaves)})

    def __len__(self) -> int:
        return len(self.leaves)

    @property
    def qcodes(self) -> list[str]:
        return [leaf.qcode for leaf in self.leaves]

    @property
    def texts(self) -> list[str]:
        return [leaf.text for leaf in self.leaves]

    def index(self, qcode: str) -> int:
        """Position of a leaf's qcode; KeyError for anything else."""
        return self._index[qcode]   # type: ignore[attr-defined]

    def __contains__(self, qcode: object) -> bool:
        return qcode in self._index  # type: ignore[attr-defined]

    def leaf(self, qcode: str) -> Leaf:
        return self.leaves[self.index(qcode)]

    @property
    def id_pattern(self) -> re.Pattern:
        return id_regex(self.prefix)


def taxonomy_from_topics(topics: Sequence[Topic], path: str | os.PathLike = "taxonomy") -> Taxonomy:
    """Check the topics and keep the leaves (with their paths and definitions)."""
    prefix = check_taxonomy(topics, path)
    leaves = tuple(Leaf(t.qcode, t.path, t.definition.strip()) for t in topics if t.is_leaf)
    if not leaves:
        raise DataError(path, "the taxonomy has no leaves")
    return Taxonomy(leaves, prefix)


def load_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """`iptc/mediatopic.tsv` -> its leaves. The real file: 875 leaves, prefix "medtop"."""
    return taxonomy_from_topics(load_iptc(path), Path(path))
