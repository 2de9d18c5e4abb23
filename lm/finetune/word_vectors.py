"""Pretrained word vectors in word2vec's file formats, read by our own parser (book 5.3.1, the CNN).

The book's CNN classifier embeds words with 300-d word2vec vectors (`vectors.dat`, the GoogleNews
vectors: 3 million words, gzipped binary). That file is not downloadable here, so the CNN learns its
embeddings by default; a user who has such a file hands it to `load_word_vectors`.

Both formats start with a header line `V D` (number of words, dimension):

    binary (word2vec -binary 1):   b"3 2\\n" + for each word: b"word " + D little-endian float32 + b"\\n"
    text   (word2vec -binary 0):   "3 2\\n" + for each word: "word 0.1 -0.25\\n"

A text file without the header (GloVe's layout) is read too, its dimension taken from line 1.
A gzipped file (the book's download) is recognised by its first two bytes. `keep` restricts the
table to the words one will look up, so a 3-million-word file costs the memory of those only.

A malformed file raises one `DataError` naming the file, the line (text) or entry (binary) and
the problem: a bad header, a short or unparsable vector, a word that is not UTF-8, a truncated
or corrupt file, values that are not finite. (In a text file read with `keep`, the lines of
words not kept are only counted, not parsed: that keeps a 3-million-line file fast.)

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "v.txt")
    >>> _ = open(p, "w").write("2 3\\nhappy 1 0 0\\nsad 0 1 0\\n")
    >>> wv = load_word_vectors(p)
    >>> wv.words, wv.dim, wv.lookup("Happy").tolist()
    (['happy', 'sad'], 3, [1.0, 0.0, 0.0])
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from lm.data.loaders import open_bytes
from lm.errors import DataError


@dataclass
class WordVectors:
    words: list[str]     # the words kept, in file order
    vectors: np.ndarray  # (len(words), dim) float32, row i = vector of words[i]
    path: str = ""       # the file they came from
    index: dict = field(default_factory=dict, repr=False)  # word -> row

    def __post_init__(self):
        if not self.index:
            self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, word: str) -> np.ndarray | None:
        """The book's lookup: the exact word, else its lowercase form, else None (a zero vector)."""
        i = self.index.get(word)
        if i is None:
            i = self.index.get(word.lower())
        return None if i is None else self.vectors[i]


def _open(path: Path) -> IO[bytes]:
    """The file, unzipped on the fly when it starts with gzip's magic bytes."""
    f = open_bytes(path)
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.open(f, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


CHUNK = 1 << 20  # bytes read at a time


class _Bytes:
    """A buffered byte reader with `until(sep)` and `take(n)` (the binary records have no fixed length)."""

    def __init__(self, f: IO[bytes], path: Path):
        self.f, self.path, self.chunk = f, path, CHUNK
        self.buf, self.pos, self.consumed = b"", 0, 0

    def _more(self) -> bool:
        try:
            data = self.f.read(self.chunk)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(self.path, f"cannot read (corrupt or truncated gzip?): {e}") from None
        if not data:
            return False
        self.consumed += self.pos
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return True

    def until(self, sep: bytes) -> bytes | None:
        """Bytes up to (not including) `sep`, which is consumed; the rest at the end; None when empty."""
        while True:
            j = self.buf.find(sep, self.pos)
            if j >= 0:
                out, self.pos = self.buf[self.pos:j], j + 1
                return out
            if not self._more():
                if self.pos < len(self.buf):
                    out, self.pos = self.buf[self.pos:], len(self.buf)
                    return out
                return None

    def peek(self, n: int) -> bytes:
        """The next `n` bytes (fewer at the end), not consumed."""
        while len(self.buf) - self.pos < n and self._more():
            pass
        return self.buf[self.pos:self.pos + n]

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n and self._more():
            pass
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def skip_newlines(self) -> None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in b"\n\r":
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return


def _parse_header(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _looks_like_text(first_record: bytes) -> bool:
    """A text record is a printable UTF-8 line of fields; a binary one has raw float bytes after the word."""
    try:
        line = first_record.decode("utf-8").rstrip("\r").replace("\t", " ")
    except UnicodeDecodeError:
        return False
    return line.isprintable() and len(line.split()) >= 2


def load_word_vectors(path: str | os.PathLike, keep: Iterable[str] | None = None,
                      binary: bool | None = None) -> WordVectors:
    """Read a word2vec file (binary or text, gzipped or not; None = detect) into a `WordVectors`.

    keep: only these words are kept (None: all). A word listed twice keeps its first vector.
    """
    path = Path(path)
    wanted = set(keep) if keep is not None else None
    with _open(path) as f:
        r = _Bytes(f, path)
        first = r.until(b"\n")
        if first is None or not first.strip():
            raise DataError(path, "empty word-vector file")
        header = _parse_header(first)
        if header is not None and (header[0] < 1 or header[1] < 1):
            raise DataError(path, f"header says {header[0]} words of dimension {header[1]}; both must be >= 1", 1)
        if binary is None:
            if header is None:
                binary = False
            else:
                peek = r.peek(header[1] * 4 + 4096)
                binary = not _looks_like_text(peek.split(b"\n", 1)[0])
        if binary:
            if header is None:
                raise DataError(path, "a binary word2vec file must start with the header 'V D', "
                                      f"got {first[:60]!r}", 1)
            words, rows = _read_binary(r, path, *header, wanted)
        else:
            words, rows = _read_text(r, path, first, header, wanted)
    dim = header[1] if header else len(first.split()) - 1
    vectors = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
    return WordVectors(words=words, vectors=vectors, path=str(path))


def _read_binary(r: _Bytes, path: Path, count: int, dim: int, wanted: set | None):
    words, rows, seen = [], [], set()
    nbytes = 4 * dim
    for entry in range(1, count + 1):
        r.skip_newlines()
        raw = r.until(b" ")
        if raw is None:
            raise DataError(path, f"truncated: the header promises {count} words, the file ends after {entry - 1}")
        try:
            word = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(path, f"entry {entry}: word {raw[:40]!r} is not valid UTF-8") from None
        if not word.strip():
            raise DataError(path, f"entry {entry}: no word before the vector "
                                  "(is the header's dimension right?)")
        data = r.take(nbytes)
        if len(data) < nbytes:
            raise DataError(path, f"truncated: entry {entry} ({word!r}) has {len(data)} of {nbytes} vector bytes")
        if (wanted is None or word in wanted) and word not in seen:
            vec = np.frombuffer(data, dtype="<f4")
            if not np.isfinite(vec).all():
                raise DataError(path, f"entry {entry} ({word!r}): the vector has non-finite values")
            words.append(word), rows.append(vec.copy()), seen.add(word)
    r.skip_newlines()
    if r.take(1):
        raise DataError(path, f"more data after the {count} words the header promises")
    return words, rows


def _read_text(r: _Bytes, path: Path, first: bytes, header: tuple[int, int] | None, wanted: set | None):
    """Lines `word v1 ... vD`; a line whose word is not wanted is counted, not parsed (fast on big files)."""
    words, rows, seen = [], [], set()
    dim = header[1] if header else len(first.split()) - 1
    if dim < 1:
        raise DataError(path, f"expected a header 'V D' or a line 'word v1 v2 ...', got {first[:60]!r}", 1)
    line, lineno, n = (r.until(b"\n"), 2, 0) if header else (first, 1, 0)
    while line is not None:
        parts = line.split(None, 1)
        if parts:
            n += 1
            if header is not None and n > header[0]:
                raise DataError(path, f"more words than the header's {header[0]}", lineno)
            try:
                word = parts[0].decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, f"word {parts[0][:40]!r} is not valid UTF-8", lineno) from None
            if (wanted is None or word in wanted) and word not in seen:
                values = parts[1].split() if len(parts) > 1 else []
                if len(values) != dim:
                    raise DataError(path, f"expected {word!r} and {dim} numbers, got {len(values)} numbers", lineno)
                try:
                    vec = np.array([float(v) for v in values], dtype=np.float32)
                except ValueError as e:
                    raise DataError(path, f"not a number in the vector of {word!r}: {e}", lineno) from None
                if not np.isfinite(vec).all():
                    raise DataError(path, f"the vector of {word!r} has non-finite values", lineno)
                words.append(word), rows.append(vec), seen.add(word)
        line, lineno = r.until(b"\n"), lineno + 1
    if header is not None and n < header[0]:
        raise DataError(path, f"truncated: the header promises {header[0]} words, the file has {n}")
    return words, rows
