"""The answer store: every labeller's answer on disk as soon as it arrives, so a run can resume.

Labelling 20,000 documents with five hosted models takes hours and costs money (the book: about
$100); a crash, a closed laptop or a Ctrl-C must not lose what was paid for. Each answer is one
JSON line, appended and flushed at once:

    {"doc": "1152.0001", "labeller": "lm_score", "answer": "toytop:01010100", "candidates": "3f2a9c1d"}

`answer` is null when the labeller gave no valid ID (that is an answer too: it is not asked
again). `candidates` is a short hash of the candidate list the labeller chose from; if the
candidates change (another k or embedder), the old answer no longer applies and is asked again.
The file holds nothing else: no prompt, no reply, no key.

A crash while writing leaves at most one torn last line; `AnswerCache` drops it when it opens the
file (that one answer is asked again). A malformed line anywhere else is a DataError: the file
was edited or is not ours.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Sequence

from lm.errors import DataError
from lm.utils import no_duplicate_keys

FIELDS = ("doc", "labeller", "answer", "candidates")


def candidates_hash(candidates: Sequence[str]) -> str:
    """8 hex digits identifying an ordered candidate list."""
    return hashlib.sha1("\n".join(candidates).encode("utf-8")).hexdigest()[:8]


class AnswerCache:
    """{(labeller, doc): answer} backed by an append-only JSONL file (None path: memory only)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.answers: dict[tuple[str, str], tuple[str | None, str]] = {}   # -> (answer, candidates hash)
        self.torn = False                # a torn last line was dropped on opening
        self.lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self._load()

    @staticmethod
    def _record(line: bytes) -> dict:
        rec = json.loads(line.decode("utf-8"), object_pairs_hook=no_duplicate_keys)   # ValueError if bad
        if not isinstance(rec, dict) or any(f not in rec for f in FIELDS):
            raise ValueError(f"expected an object with {', '.join(FIELDS)}")
        if not all(isinstance(rec[f], str) for f in ("doc", "labeller", "candidates")) or \
                not (rec["answer"] is None or isinstance(rec["answer"], str)):
            raise ValueError("doc, labeller and candidates must be strings, answer a string or null")
        return rec

    def _load(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        *lines, tail = raw.split(b"\n")           # `tail`: what follows the last newline
        records = []
        for i, line in enumerate(lines):
            if line.strip():
                try:
                    records.append(self._record(line))
                except ValueError as e:            # JSONDecodeError and UnicodeDecodeError included
                    raise DataError(self.path, f"malformed answer record ({e})", i + 1) from None
        if tail.strip():                           # an interrupted write: keep it only if whole
            try:
                records.append(self._record(tail))
                fixed = raw + b"\n"
            except ValueError:
                self.torn = True
                fixed = raw[: len(raw) - len(tail)]
            with open(self.path, "r+b") as f:      # so the next append starts on a line of its own
                f.truncate(0)
                f.write(fixed)
        for rec in records:
            self.answers[(rec["labeller"], rec["doc"])] = (rec["answer"], rec["candidates"])

    def get(self, labeller: str, doc: str, candidates: Sequence[str]) -> tuple[bool, str | None]:
        """(found, answer): found only if this labeller answered this doc for these candidates."""
        hit = self.answers.get((labeller, doc))
        if hit is None or hit[1] != candidates_hash(candidates):
            return False, None
        return True, hit[0]

    def put(self, labeller: str, doc: str, candidates: Sequence[str], answer: str | None) -> None:
        """Remember an answer and append it to the file at once (flushed)."""
        h = candidates_hash(candidates)
        with self.lock:
            self.answers[(labeller, doc)] = (answer, h)
            if self.path is None:
                return
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            rec = {"doc": doc, "labeller": labeller, "answer": answer, "candidates": h}
            self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
