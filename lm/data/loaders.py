"""The data layout and typed loaders for every dataset the book uses.

One layout serves the embedded toy data (`data/` in this repository), the real data
(`../shared/data`) and the download cache, so `--data-dir` swaps them without code changes:

    brown/brown.txt                 one sentence per line (count n-gram LM, 2.5)
    news/train.txt, valid.txt       one sentence per line (RNN / transformer LMs, 3-4); test.txt optional
    emotion/train.jsonl, valid.jsonl  {"text", "label"} (5.3); test.jsonl optional
    instruct/instruct.jsonl         {"instruction", "solution"} (5.3.3)
    gsm8k/train.jsonl               {"question", "answer": "... #### 42"} (GRPO); test.jsonl optional
    arxiv/abstracts.jsonl           {"id", "title", "abstract"} (document labelling)
    iptc/mediatopic.tsv             qcode level path definition is_leaf (the label taxonomy)

Every loader reads the file through the one line reader (`numbered_lines`), checks it and returns
typed records. A bad file raises one `DataError` that names the file, the line and the problem.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence, TypeVar

from lm.errors import DataError
from lm.utils import no_duplicate_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DIR = REPO_ROOT / "data"

EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")

# Relative paths of the layout; `optional` files are used when present.
LAYOUT = {
    "brown": ["brown/brown.txt"],
    "news": ["news/train.txt", "news/valid.txt"],
    "emotion": ["emotion/train.jsonl", "emotion/valid.jsonl"],
    "instruct": ["instruct/instruct.jsonl"],
    "gsm8k": ["gsm8k/train.jsonl"],
    "arxiv": ["arxiv/abstracts.jsonl"],
    "iptc": ["iptc/mediatopic.tsv"],
}
OPTIONAL = ["emotion/test.jsonl", "gsm8k/test.jsonl", "news/test.txt"]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data dir: the argument, else $LM_DATA_DIR, else the embedded `data/`.

    Raises DataError if the folder does not exist.
    """
    chosen = data_dir or os.environ.get("LM_DATA_DIR") or EMBEDDED_DIR
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(path, "data dir does not exist (give --data-dir or LM_DATA_DIR a folder "
                              "laid out like data/: brown/, news/, emotion/, ...)")
    return path


def data_file(data_dir: str | os.PathLike, rel: str) -> Path:
    """Path of `rel` in `data_dir`, or DataError naming it if the file is missing."""
    path = Path(data_dir) / rel
    if not path.is_file():
        raise DataError(path, f"missing file (expected {rel} in the data dir)")
    return path


def optional_file(data_dir: str | os.PathLike, rel: str) -> Path | None:
    """Path of `rel` in `data_dir` if the file exists, else None (for the optional test splits)."""
    path = Path(data_dir) / rel
    return path if path.is_file() else None


def eval_split(data_dir: str | os.PathLike, dataset: str) -> tuple[str, Path]:
    """Which split a reported metric is on: ("test", its path) when the data dir has `test.jsonl`,
    else ("valid", ...). Every emotion stage trains on train.jsonl, selects nothing on the test
    split, and reports on this one (and on valid.jsonl always, as `accuracy_valid`).

    >>> eval_split(EMBEDDED_DIR, "emotion")[0]
    'test'
    """
    test = optional_file(data_dir, f"{dataset}/test.jsonl")
    if test is not None:
        return "test", test
    return "valid", data_file(data_dir, f"{dataset}/valid.jsonl")


# --------------------------------------------------------------------------------------------
# Reading text safely
# --------------------------------------------------------------------------------------------

def open_bytes(path: str | os.PathLike) -> BinaryIO:
    """`open(path, "rb")`, or a DataError naming the file if it is missing or unreadable."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(path, "missing file") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None


def _read_text(path: Path) -> str:
    with open_bytes(path) as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(path, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})", line) from None


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """The one line reader: (line number, line without its newline) for every line of a UTF-8 file.

    Streams one line at a time, so a corpus larger than memory is fine. A missing, unreadable or
    non-UTF-8 file raises DataError naming the file (and the line, for bad bytes).
    """
    path = Path(path)
    with open_bytes(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\n").rstrip("\r")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
                                lineno) from None


def iter_lines(path: str | os.PathLike, preprocess: Callable[[str], str] | None = None,
               max_lines: int | None = None) -> Iterator[str]:
    """The non-empty lines of a text file, stripped, optionally preprocessed; at most `max_lines`.

    Used for the one-sentence-per-line corpora (`brown/brown.txt`, `news/*.txt`).
    """
    if max_lines is not None and max_lines <= 0:
        return
    n = 0
    for _, line in numbered_lines(path):
        line = line.strip()
        if not line:
            continue
        yield preprocess(line) if preprocess else line
        n += 1
        if max_lines is not None and n >= max_lines:
            return


def read_lines(path: str | os.PathLike, max_lines: int | None = None) -> list[str]:
    """`iter_lines` as a list; an empty file is a DataError."""
    lines = list(iter_lines(path, max_lines=max_lines))
    if not lines:
        raise DataError(path, "file is empty")
    return lines


def read_text(path: str | os.PathLike) -> str:
    """The whole UTF-8 text of a file; DataError if empty or not UTF-8."""
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_jsonl(path: str | os.PathLike, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Records of a JSONL file; each must be an object with string values for `fields`."""
    path = Path(path)
    records = []
    for i, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg} at column {e.colno})", i) from None
        except ValueError as e:   # a key given twice
            raise DataError(path, f"malformed JSON ({e})", i) from None
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", i)
        for f in fields:
            if f not in obj:
                raise DataError(path, f"missing field {f!r} (has {sorted(obj)})", i)
            if not isinstance(obj[f], str):
                raise DataError(path, f"field {f!r} must be a string, got {type(obj[f]).__name__}", i)
        obj["_line"] = i
        records.append(obj)
    if not records:
        raise DataError(path, "file is empty")
    return records


# --------------------------------------------------------------------------------------------
# Typed records and loaders
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmotionExample:
    text: str   # the sentence or tweet
    label: str  # one of EMOTION_LABELS


@dataclass(frozen=True)
class InstructExample:
    instruction: str  # what the user asks
    solution: str     # the reference answer


@dataclass(frozen=True)
class GSM8KExample:
    question: str  # the word problem
    answer: str    # worked solution ending in "#### <number>"

    @property
    def final(self) -> str:
        """The number after '####' (commas removed), e.g. '72'."""
        return self.answer.rsplit("####", 1)[-1].strip().replace(",", "")


@dataclass(frozen=True)
class Abstract:
    id: str        # paper id
    title: str     # paper title
    abstract: str  # cleaned abstract text


@dataclass(frozen=True)
class Topic:
    qcode: str       # e.g. "medtop:01000000"
    level: int       # depth in the taxonomy, 1 = top
    path: tuple      # names from the top level down to this topic
    definition: str  # one-sentence definition
    is_leaf: bool    # True if no topic lies below this one

    @property
    def name(self) -> str:
        return self.path[-1]


def load_emotion(path: str | os.PathLike) -> list[EmotionExample]:
    """Emotion JSONL -> examples; an unknown label or an empty text is a DataError naming the line."""
    out = []
    for r in read_jsonl(path, ("text", "label")):
        if not r["text"].strip():
            raise DataError(path, "empty text", r["_line"])
        if r["label"] not in EMOTION_LABELS:
            raise DataError(path, f"unknown emotion label {r['label']!r} (known: {', '.join(EMOTION_LABELS)})", r["_line"])
        out.append(EmotionExample(r["text"], r["label"]))
    return out


def load_instruct(path: str | os.PathLike) -> list[InstructExample]:
    return [InstructExample(r["instruction"], r["solution"]) for r in read_jsonl(path, ("instruction", "solution"))]


def load_gsm8k(path: str | os.PathLike) -> list[GSM8KExample]:
    """GSM8K JSONL -> examples; an answer without '#### <number>' is a DataError."""
    out = []
    for r in read_jsonl(path, ("question", "answer")):
        ex = GSM8KExample(r["question"], r["answer"])
        if "####" not in r["answer"] or not _is_number(ex.final):
            raise DataError(path, "answer does not end in '#### <number>'", r["_line"])
        out.append(ex)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_abstracts(path: str | os.PathLike) -> list[Abstract]:
    return [Abstract(r["id"], r["title"], r["abstract"]) for r in read_jsonl(path, ("id", "title", "abstract"))]


IPTC_COLUMNS = ["qcode", "level", "path", "definition", "is_leaf"]


def load_iptc(path: str | os.PathLike) -> list[Topic]:
    """The taxonomy TSV (header `qcode level path definition is_leaf`) -> topics."""
    path = Path(path)
    lines = numbered_lines(path)
    first = next(lines, (1, ""))[1]
    if not first.strip():
        raise DataError(path, "file is empty")
    header = first.split("\t")
    if header != IPTC_COLUMNS:
        raise DataError(path, f"header must be {' '.join(IPTC_COLUMNS)} (tab-separated), got {header}", 1)
    topics = []
    for i, line in lines:
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 5:
            raise DataError(path, f"expected 5 tab-separated columns, got {len(cols)}", i)
        qcode, level, tpath, definition, leaf = cols
        if not level.isdigit() or leaf not in ("0", "1"):
            raise DataError(path, f"level must be an integer and is_leaf 0 or 1, got {level!r}, {leaf!r}", i)
        topics.append(Topic(qcode, int(level), tuple(tpath.split(" > ")), definition, leaf == "1"))
    if not topics:
        raise DataError(path, "file has a header but no topics")
    return topics


# Convenience: load by dataset name from a data dir -------------------------------------------

def load_split(data_dir: str | os.PathLike, dataset: str, split: str):
    """Load `dataset`'s `split` from `data_dir`, e.g. load_split(d, "emotion", "train").

    text datasets (brown, news) return lists of lines; the others typed records.
    """
    ext = {"brown": "txt", "news": "txt", "emotion": "jsonl", "instruct": "jsonl", "gsm8k": "jsonl",
           "arxiv": "jsonl", "iptc": "tsv"}
    names = {"brown": "brown", "instruct": "instruct", "arxiv": "abstracts", "iptc": "mediatopic"}
    if dataset not in ext:
        raise DataError(data_dir, f"unknown dataset {dataset!r} (known: {', '.join(ext)})")
    stem = names.get(dataset, split)
    path = data_file(data_dir, f"{dataset}/{stem}.{ext[dataset]}")
    loader = {"brown": read_lines, "news": read_lines, "emotion": load_emotion, "instruct": load_instruct,
              "gsm8k": load_gsm8k, "arxiv": load_abstracts, "iptc": load_iptc}[dataset]
    return loader(path)


# --------------------------------------------------------------------------------------------
# The book's protocol helpers
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


def book_shuffle(items: Sequence[T], seed: int = 42) -> list[T]:
    """A copy of `items` shuffled exactly as the book does: `random.seed(42); random.shuffle(x)`.

    Uses a private `random.Random(seed)`, whose sequence is identical to seeding the global one,
    so global random state is left alone.
    """
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def book_split(items: Sequence[T], train_frac: float = 0.9) -> tuple[list[T], list[T]]:
    """The book's split: the first `int(len * 0.9)` items train, the rest test."""
    k = int(len(items) * train_frac)
    return list(items[:k]), list(items[k:])
