"""The one error family: every error a user can cause is an `LMError`.

    LMError                      catch this to tell a user's mistake from a bug in the code
    +-- ConfigError              a bad flag, config value or argument; the message names it
    +-- FileFormatError          a file is missing, unreadable or malformed: (path, problem, line)
        +-- DataError            ... a dataset file (lm/data)
        +-- CheckpointError      ... a model checkpoint or config.json (lm/checkpoints, lm/models)
        +-- TokenizerFileError   ... a tokenizer or n-gram model file (lm/tokenizers, lm/ngram)

The subclasses add nothing but a name, so `except FileFormatError` catches every bad file and a
message always reads `PATH, line N: PROBLEM` (or `PATH: PROBLEM`).

    >>> str(DataError("data/emotion/train.jsonl", "unknown label 'happy'", line=3))
    "data/emotion/train.jsonl, line 3: unknown label 'happy'"
"""
from __future__ import annotations

import os


class LMError(Exception):
    """Base class of every error a user can cause (bad file, bad flag, bad config)."""


class ConfigError(LMError, ValueError):
    """A configuration value, argument or command-line flag is invalid; the message names it."""


class FileFormatError(LMError):
    """A file is missing, unreadable or malformed. `str(e)` names the file, the line and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path, self.problem, self.line = str(path), problem, line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class DataError(FileFormatError):
    """A dataset file is missing or malformed."""


class CheckpointError(FileFormatError):
    """A checkpoint or config.json is missing, malformed, or does not fit the model."""


class TokenizerFileError(FileFormatError):
    """A tokenizer or n-gram model file is missing or malformed."""


class NGramFileError(FileFormatError):
    """A saved n-gram model file is missing, not ours, of another version, or inconsistent."""


class DownloadError(FileFormatError):
    """A download (or what we made of it) failed; `path` is the URL or file."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


class UnsafeArchiveError(DownloadError):
    """A tar archive holds a member we refuse to touch (absolute path, '..', escaping link, device)."""


class SamplingError(ConfigError):
    """Sampling parameters or logits that cannot be sampled from (the book's input checks)."""


class SpecialTokenError(ConfigError):
    """The text contains a special token that the caller did not allow."""
