"""Shared utilities: seeding, device choice, a progress bar, a JSONL metrics log, atomic writes, JSON.

Everything here is small on purpose; every other module may import it, and it imports only the
standard library, numpy and torch.
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np
import torch

from lm.errors import ConfigError


# --------------------------------------------------------------------------------------------
# Seeding and devices
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def choose_device(name: str | None = None) -> torch.device:
    """Pick a torch device: `name` if given ("cpu", "cuda", "cuda:1", "mps"), else cuda > mps > cpu.

    >>> choose_device("cpu")
    device(type='cpu')
    """
    if name and name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError as e:
            raise ConfigError(f"--device {name!r} is not a device torch knows: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {name!r}: CUDA is not available on this machine")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name!r}: MPS is not available on this machine")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to `n` inside the block (None: unchanged), restored after.

    For work made of many small operations (L-BFGS on a sparse matrix, a narrow CNN): a second
    thread gains little there, and on a busy machine threads waiting on each other cost 20-80x.
    """
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------

@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (`.NAME.XXXX.part`); renamed over `path` when the block
    succeeds, with the usual permissions (not mkstemp's 0600), and removed if it raises.

    For writers that need a file name rather than an open file (links, other libraries).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync and rename it over `path`.

    If the block raises, the temporary file is removed and `path` is untouched, so a reader never
    sees a half-written file.

    >>> with atomic_open("out.json") as f:   # doctest: +SKIP
    ...     f.write("{}")
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + rename)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


SUMMARY_NAME = "summary.json"


def write_summary(out_dir: str | os.PathLike, summary: dict) -> Path:
    """Write `out_dir/summary.json` atomically: the one place a summary is written.

    run_all.py calls it for the run (all stages) and for each stage's folder; command lines
    (`python -m lm.pretraining`, ...) call it for theirs. Returns the path.
    """
    path = Path(out_dir) / SUMMARY_NAME
    atomic_write_json(path, summary)
    return path


def show(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for error messages about values read from a file
    (a corrupted file may hold a 10 MB string where a number belongs).

    >>> show("x" * 100, limit=10)
    "'xxxxxx..."
    """
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """`json.loads(..., object_pairs_hook=no_duplicate_keys)`: a key given twice is an error
    (ValueError), not "the last one wins". Every JSON file a user may hand us is read with it.

    >>> json.loads('{"a": 1, "a": 2}', object_pairs_hook=no_duplicate_keys)
    Traceback (most recent call last):
    ...
    ValueError: duplicate key 'a'
    """
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Metrics log
# --------------------------------------------------------------------------------------------

class MetricsLogger:
    """Append one JSON object per line to `path` (JSONL), flushed after each record.

    >>> log = MetricsLogger("runs/x/metrics.jsonl")   # doctest: +SKIP
    >>> log.log(step=10, loss=2.3)                    # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **record: Any) -> None:
        if self.path is None:
            return
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read(self) -> list[dict]:
        """All records written so far (empty if none)."""
        if self.path is None or not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------
# Progress bar
# --------------------------------------------------------------------------------------------

QUIET = False  # set by run_all.py --quiet; Progress objects created afterwards stay silent


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) every progress bar and `say` line created from now on."""
    global QUIET
    QUIET = quiet


def say(*parts: Any) -> None:
    """print() unless --quiet was given."""
    if not QUIET:
        print(*parts, flush=True)


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """A small progress bar: count, rate and ETA; redraws in place on a TTY, plain lines otherwise.

    >>> for x in Progress(range(1000), desc="train", unit="step"):   # doctest: +SKIP
    ...     pass
    Use `update(n, **postfix)` when iterating by hand; `postfix` shows values such as the loss.
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", quiet: bool | None = None, stream: IO | None = None,
                 min_interval: float | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.quiet = QUIET if quiet is None else quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = min_interval if min_interval is not None else (0.1 if self.tty else 10.0)
        self.n = 0
        self.start = time.perf_counter()
        self.last_print = -1e9
        self.postfix: dict[str, Any] = {}

    def __iter__(self):
        assert self.iterable is not None, "Progress(iterable=...) is needed to iterate"
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def format(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            frac = min(self.n / self.total, 1.0)
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
            s = f"{head}[{bar}] {self.n}/{self.total} {rate:,.1f} {self.unit}/s elapsed {_fmt_seconds(elapsed)} eta {_fmt_seconds(eta)}"
        else:
            s = f"{head}{self.n} {self.unit} {rate:,.1f} {self.unit}/s elapsed {_fmt_seconds(elapsed)}"
        if self.postfix:
            s += " " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.postfix.items())
        return s

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        self.postfix.update(postfix)
        if self.quiet:
            return
        now = time.perf_counter()
        if now - self.last_print >= self.min_interval or (self.total and self.n >= self.total):
            self.last_print = now
            self._draw()

    def _draw(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.format()[:160].ljust(100))
        else:
            self.stream.write(self.format() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.quiet or self.last_print == -2e9:
            return
        if self.tty:
            self._draw()
            self.stream.write("\n")
        elif self.total is None or self.n < (self.total or 0):
            self._draw()
        self.stream.flush()
        self.last_print = -2e9  # closed: never draw twice


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def saved_tensor_bytes(model: torch.nn.Module, fn) -> tuple[int, Any]:
    """(bytes of every tensor autograd saves while `fn()` runs, shared storage once and the model's
    weights left out; fn's result): what a forward keeps for its backward, measured."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return sum(seen.values()), result
