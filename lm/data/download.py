"""Download the book's data (and GPT-2 from the Hugging Face hub) into a cache laid out like data/.

For machines that are online. Everything else in `lm` runs offline on the embedded `data/` or on a
local copy given with `--data-dir` (e.g. `../shared/data`); this module only fills a cache folder
with the same layout from the original places:

    python -m lm.data.download all                 # every dataset -> ~/.cache/lm
    python -m lm.data.download brown emotion --cache /tmp/lm
    python -m lm.data.download --gpt2 gpt2         # weights + tokenizer -> ~/.cache/lm/gpt2/gpt2/
    python run_all.py --data-dir ~/.cache/lm       # what the command prints at the end

How a file travels (standard library only, `urllib.request`):
  1. `download()` streams the response into a temporary file beside the destination, hashing
     (sha256) while it writes, and checks the byte count against Content-Length;
  2. the digest is checked against the one in the table below if known, else against the one
     `manifest.json` in the cache recorded at the first download (trust on first use);
  3. only then is the file renamed into place (atomic). Any error, Ctrl-C included, removes the
     temporary file: no partial file ever survives.
Archives are opened with `tarfile` but never `extract()`ed: we read the few members we need and
write them to paths of our own choosing, and refuse the whole archive if any member is an
absolute path, has a `..` component, is a link leading outside it, or is a device file.

Nothing here runs at import time.
"""
from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from lm.data.loaders import (
    EMOTION_LABELS, DataError, book_shuffle, book_split, load_gsm8k, load_instruct, read_jsonl,
)
from lm.utils import ConfigError, LMError, Progress, atomic_open, atomic_write_json, say

CHUNK = 1 << 20          # bytes read per step while streaming
DEFAULT_TIMEOUT = 60.0   # seconds a socket may stay silent before we give up
USER_AGENT = "lm-study-code (python urllib)"


class DownloadError(LMError):
    """A download (or what we made of it) failed. `str(e)` names the URL or file and the problem."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{self.source}: {problem}")


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


class UnsafeArchiveError(DownloadError):
    """A tar archive holds a member we refuse to touch (absolute path, '..', escaping link, device)."""


def default_cache_dir() -> Path:
    """$LM_CACHE_DIR if set, else ~/.cache/lm. The cache *is* a data dir (same layout as data/)."""
    env = os.environ.get("LM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lm"


# --------------------------------------------------------------------------------------------
# Streaming one URL to one file
# --------------------------------------------------------------------------------------------

def _offline_hint(url: str, reason: object) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (f"cannot reach {host} ({reason}). This machine looks offline or the host is down: "
            f"use --data-dir with a local copy of the data instead (e.g. --data-dir ../shared/data)")


def download(url: str, dest: str | os.PathLike, sha256: str | None = None,
             timeout: float = DEFAULT_TIMEOUT, desc: str | None = None) -> str:
    """Stream `url` to `dest` and return the sha256 (hex) of its bytes.

    The bytes go to a temporary file in dest's folder, hashed on the way; a short read (fewer
    bytes than Content-Length) or a digest different from `sha256` (when given) is an error.
    Only a complete, verified file is renamed to `dest`; on any error the temporary file is
    removed and `dest` is left as it was.

    >>> download("https://www.thelmbook.com/data/instruct", "/tmp/instruct.jsonl")  # doctest: +SKIP
    '3f1c...'
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:   # a subclass of URLError: test it first
                hint = " (the file is not at this address)" if e.code == 404 else ""
                raise DownloadError(url, f"HTTP {e.code} {e.reason}{hint}") from None
            except urllib.error.URLError as e:
                raise DownloadError(url, _offline_hint(url, e.reason)) from None
            except (OSError, http.client.HTTPException) as e:   # reset or timed out before the headers
                raise DownloadError(url, _offline_hint(url, e or type(e).__name__)) from None
            with response:
                length = response.headers.get("Content-Length")
                expected_len = int(length) if length and length.isdigit() else None
                digest, got = hashlib.sha256(), 0
                kib = Progress(total=(expected_len // 1024) if expected_len else None,
                               desc=desc or dest.name, unit="KiB",
                               quiet=True if expected_len is not None and expected_len < CHUNK else None)
                try:
                    while True:
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        digest.update(chunk)
                        out.write(chunk)
                        kib.update(((got + len(chunk)) >> 10) - (got >> 10))
                        got += len(chunk)
                except http.client.IncompleteRead as e:
                    got += len(e.partial)
                    raise DownloadError(url, f"transfer interrupted after {got} of {expected_len} bytes; "
                                             f"run again to retry") from None
                except OSError as e:   # connection reset, socket timeout in the middle, ...
                    raise DownloadError(url, f"transfer interrupted after {got} bytes ({e}); run again to retry") from None
                finally:
                    kib.close()
            if expected_len is not None and got != expected_len:
                raise DownloadError(url, f"transfer interrupted: got {got} of {expected_len} bytes "
                                         f"(Content-Length); run again to retry")
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256.lower():
                raise ChecksumError(url, f"sha256 mismatch: expected {sha256}, got {actual}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        return actual
    except BaseException:   # KeyboardInterrupt included: never leave a partial file behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The manifest: digests recorded at the first download (trust on first use)
# --------------------------------------------------------------------------------------------

def manifest_path(cache_dir: Path) -> Path:
    return cache_dir / "manifest.json"


def read_manifest(cache_dir: Path) -> dict:
    """{"version": 1, "files": {original_url: {"sha256", "bytes", "downloaded_from", "first_downloaded"}}}."""
    path = manifest_path(cache_dir)
    if not path.is_file():
        return {"version": 1, "files": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"unreadable manifest ({e}); delete it to start afresh") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DataError(path, 'manifest must be a JSON object with a "files" object; delete it to start afresh')
    return manifest


def with_base(url: str, base_url: str | None) -> str:
    """`url` with its scheme and host replaced by `base_url` (the path is kept), for mirrors and tests.

    >>> with_base("https://www.thelmbook.com/data/brown", "http://127.0.0.1:8000")
    'http://127.0.0.1:8000/data/brown'
    """
    if not base_url:
        return url
    parts = urllib.parse.urlsplit(url)
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def fetch_file(url: str, dest: Path, cache_dir: Path, sha256: str | None = None,
               base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download `url` (through `base_url` if given) to `dest`, verified and recorded in the manifest.

    The expected digest is `sha256` (from our tables) if known, else the one the manifest
    recorded the first time this URL was downloaded; with neither, the new digest is recorded.
    """
    source = with_base(url, base_url)
    manifest = read_manifest(cache_dir)
    recorded = manifest["files"].get(url, {}).get("sha256")
    expected = sha256 or recorded
    say(f"downloading {source}")
    try:
        actual = download(source, dest, expected, timeout=timeout, desc=dest.name)
    except ChecksumError as e:
        where = ("the digest this program knows" if sha256 else
                 f"the digest recorded in {manifest_path(cache_dir)} when it was first downloaded")
        raise ChecksumError(source, f"{e.problem}; the file differs from {where}. If the source changed "
                                    f"on purpose, delete its entry from the manifest and run again") from None
    if recorded != actual:
        manifest["files"][url] = {"sha256": actual, "bytes": dest.stat().st_size, "downloaded_from": source,
                                  "first_downloaded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        atomic_write_json(manifest_path(cache_dir), manifest)
    return dest


# --------------------------------------------------------------------------------------------
# Turning downloads into layout files: gzip, UTF-8 checks, safe tar reading
# --------------------------------------------------------------------------------------------

@contextmanager
def _open_maybe_gzip(path: Path) -> Iterator:
    """A binary reader of `path`, decompressed if it starts with the gzip magic bytes 1f 8b."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
        yield f


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds, removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_utf8(src, out, source: str) -> int:
    """Copy a binary stream to `out`, checking on the way that it is non-empty UTF-8; returns bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    total, newlines = 0, 0
    while True:
        try:
            chunk = src.read(CHUNK)
        except (OSError, EOFError, zlib.error) as e:   # corrupt or truncated gzip stream
            raise DataError(source, f"cannot decompress ({e or type(e).__name__})") from None
        if not chunk:
            break
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as e:
            raise DataError(source, f"not valid UTF-8 (byte {total + e.start})",
                            newlines + chunk.count(b"\n", 0, e.start) + 1) from None
        out.write(chunk)
        total += len(chunk)
        newlines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(source, "not valid UTF-8 (the text ends inside a character)") from None
    if total == 0:
        raise DataError(source, "file is empty")
    return total


def write_text_file(src_path: Path, dest: Path, source: str) -> None:
    """`src_path` (gzipped or plain) -> `dest`, checked to be non-empty UTF-8, written atomically."""
    with _open_maybe_gzip(src_path) as src, atomic_open(dest, "wb") as out:
        _copy_utf8(src, out, source)


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why we refuse a tar member, or None if it is harmless."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in parts:
        return "'..' in the path"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or FIFO"
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            return f"link to absolute path {member.linkname!r}"
        # a symlink is relative to its own folder, a hard link to the archive root
        base = list(parts[:-1]) if member.issym() else []
        depth = len([p for p in base if p not in ("", ".")])
        for p in PurePosixPath(target).parts:
            depth += -1 if p == ".." else 0 if p == "." else 1
            if depth < 0:
                return f"link leaving the archive ({member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def extract_members(archive: Path, wanted: dict[str, Path], source: str | None = None) -> None:
    """Copy the regular files named in `wanted` (archive name -> destination) out of a tar archive.

    The whole archive is read once, as a stream (fine for huge gzipped archives). Any member that
    is unsafe (absolute, '..', escaping link, device) makes us refuse the archive; a wanted name
    that is missing, duplicated or not a regular file is an error too. Destinations are ours,
    never paths from the archive, and they appear (atomically) only if everything succeeded.
    """
    source = source or str(archive)
    staged: dict[str, Path] = {}
    try:
        try:
            tar = tarfile.open(archive, mode="r|*")
        except tarfile.TarError as e:
            raise DownloadError(source, f"not a tar archive ({e})") from None
        with tar:
            try:
                for member in tar:
                    reason = _unsafe_reason(member)
                    if reason:
                        raise UnsafeArchiveError(source, f"refusing the archive: member {member.name!r} is unsafe ({reason})")
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if name not in wanted:
                        continue
                    if not member.isfile():
                        raise UnsafeArchiveError(source, f"member {name!r} is not a regular file")
                    if name in staged:
                        raise DownloadError(source, f"member {name!r} appears twice in the archive")
                    dest = wanted[name]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
                    staged[name] = Path(tmp)
                    with os.fdopen(fd, "wb") as out:
                        _copy_utf8(tar.extractfile(member), out, f"{source} member {name}")
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
                raise DownloadError(source, f"corrupt or truncated archive ({e})") from None
        missing = [n for n in wanted if n not in staged]
        if missing:
            raise DownloadError(source, f"archive lacks {', '.join(missing)}")
        for name, tmp in staged.items():
            os.replace(tmp, wanted[name])
    except BaseException:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# The datasets: where each lives and how it becomes layout files
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Remote:
    url: str             # original address (base_url replaces its host)
    filename: str        # name of the raw download in <cache>/.downloads/
    sha256: str | None   # known digest; None: recorded in manifest.json at the first download


@dataclass(frozen=True)
class Source:
    remotes: tuple       # Remote files to download
    outputs: tuple       # layout paths this dataset produces, relative to the cache
    build: Callable      # build(raw_paths: dict[filename, Path], root: Path, urls: dict) -> None
    note: str            # one line for --help and the docs


def _build_brown(raw: dict, root: Path, urls: dict) -> None:
    write_text_file(raw["brown.gz"], root / "brown/brown.txt", urls["brown.gz"])


def _build_news(raw: dict, root: Path, urls: dict) -> None:
    extract_members(raw["news.tar.gz"], {"news/train.txt": root / "news/train.txt",
                                         "news/test.txt": root / "news/test.txt"}, urls["news.tar.gz"])
    # The book validates on test.txt; our layout wants valid.txt, so valid.txt is test.txt.
    test, valid = root / "news/test.txt", root / "news/valid.txt"
    with _staged(valid) as tmp:
        tmp.unlink()
        try:
            os.link(test, tmp)          # same bytes, no second copy on disk
        except OSError:
            shutil.copyfile(test, tmp)


def emotion_label(value: object, source: str, line: int) -> str:
    """A label as a name: names pass, integers 0-5 map to dair-ai's order (sadness joy love anger fear surprise)."""
    if isinstance(value, str) and value in EMOTION_LABELS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(EMOTION_LABELS):
        return EMOTION_LABELS[value]
    raise DataError(source, f"unknown emotion label {value!r} (known: {', '.join(EMOTION_LABELS)} or 0-5)", line)


def _build_emotion(raw: dict, root: Path, urls: dict) -> None:
    """All 20,000 rows -> the book's protocol: shuffle with seed 42, first 90 % train, rest valid.

    The book calls the last 10 % its test set; in our layout it is emotion/valid.jsonl.
    """
    source = urls["emotions.jsonl.gz"]
    plain = _plain_copy(raw["emotions.jsonl.gz"], source)
    try:
        rows = read_jsonl(plain, ("text",))
    except DataError as e:
        raise DataError(source, e.problem, e.line) from None
    finally:
        plain.unlink(missing_ok=True)
    examples = []
    for r in rows:
        if "label" not in r:
            raise DataError(source, f"missing field 'label' (has {sorted(k for k in r if k != '_line')})", r["_line"])
        examples.append({"text": r["text"], "label": emotion_label(r["label"], source, r["_line"])})
    train, valid = book_split(book_shuffle(examples, seed=42), 0.9)
    for rel, part in (("emotion/train.jsonl", train), ("emotion/valid.jsonl", valid)):
        with atomic_open(root / rel) as f:
            f.writelines(json.dumps(ex, ensure_ascii=False) + "\n" for ex in part)


def _plain_copy(raw: Path, source: str) -> Path:
    """`raw` decompressed (if gzipped) into a sibling `.plain` file, checked to be non-empty UTF-8."""
    plain = raw.with_name(raw.name + ".plain")
    write_text_file(raw, plain, source)
    return plain


def _jsonl_builder(key: str, rel: str, loader: Callable) -> Callable:
    """A build step: check the download with the layout's own loader, then move it into place."""
    def build(raw: dict, root: Path, urls: dict) -> None:
        plain = _plain_copy(raw[key], urls[key])
        try:
            loader(plain)
        except DataError as e:
            plain.unlink(missing_ok=True)
            raise DataError(urls[key], e.problem, e.line) from None
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(plain, root / rel)    # same file system: atomic
    return build


def _build_gsm8k(raw: dict, root: Path, urls: dict) -> None:
    _jsonl_builder("gsm8k-train.jsonl", "gsm8k/train.jsonl", load_gsm8k)(raw, root, urls)
    _jsonl_builder("gsm8k-test.jsonl", "gsm8k/test.jsonl", load_gsm8k)(raw, root, urls)


BOOK = "https://www.thelmbook.com/data"
GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"

SOURCES: dict[str, Source] = {
    "brown": Source((Remote(f"{BOOK}/brown", "brown.gz", None),), ("brown/brown.txt",), _build_brown,
                    "the book's Brown corpus (gzipped raw text) -> brown/brown.txt"),
    "news": Source((Remote(f"{BOOK}/news", "news.tar.gz", None),),
                   ("news/train.txt", "news/test.txt", "news/valid.txt"), _build_news,
                   "the book's news.tar.gz -> news/train.txt, news/test.txt; valid.txt = test.txt "
                   "(the book validates on test.txt)"),
    "emotion": Source((Remote(f"{BOOK}/emotions", "emotions.jsonl.gz", None),),
                      ("emotion/train.jsonl", "emotion/valid.jsonl"), _build_emotion,
                      "all 20,000 rows, shuffled with seed 42 and split 90/10 as the book does "
                      "(the book calls the 10 % its test set; here it is valid.jsonl)"),
    "instruct": Source((Remote(f"{BOOK}/instruct", "instruct.jsonl", None),), ("instruct/instruct.jsonl",),
                       _jsonl_builder("instruct.jsonl", "instruct/instruct.jsonl", load_instruct),
                       "the book's instruction/solution pairs -> instruct/instruct.jsonl"),
    "gsm8k": Source((Remote(f"{GSM8K}/train.jsonl", "gsm8k-train.jsonl", None),
                     Remote(f"{GSM8K}/test.jsonl", "gsm8k-test.jsonl", None)),
                    ("gsm8k/train.jsonl", "gsm8k/test.jsonl"), _build_gsm8k,
                    "OpenAI's GSM8K from GitHub -> gsm8k/train.jsonl, gsm8k/test.jsonl"),
}


def fetch_dataset(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
                  force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download dataset `name` into the cache in the data/ layout; return the cache (a data dir).

    Does nothing if the dataset's files are already there (unless `force`). `base_url` (else
    $LM_DATA_BASE_URL) replaces the host of every URL, e.g. a mirror or a test server.
    Raw downloads live in <cache>/.downloads/ only while they are turned into layout files.

    >>> fetch_dataset("brown")           # doctest: +SKIP
    PosixPath('/home/me/.cache/lm')
    """
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(SOURCES)}, or all)")
    source = SOURCES[name]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    base_url = base_url or os.environ.get("LM_DATA_BASE_URL") or None
    if not force and all((root / rel).is_file() for rel in source.outputs):
        say(f"{name}: already in {root}")
        return root
    staging = root / ".downloads"
    raw: dict[str, Path] = {}
    urls = {r.filename: with_base(r.url, base_url) for r in source.remotes}
    try:
        for r in source.remotes:
            raw[r.filename] = fetch_file(r.url, staging / r.filename, root, r.sha256, base_url, timeout)
        source.build(raw, root, urls)
    finally:
        for path in raw.values():
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".plain").unlink(missing_ok=True)
        try:
            staging.rmdir()
        except OSError:
            pass
    say(f"{name}: {', '.join(source.outputs)} in {root}")
    return root


def fetch_all(cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
              force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Every dataset of SOURCES (arxiv and iptc have no download: copy them from a data dir)."""
    root = None
    for name in SOURCES:
        root = fetch_dataset(name, cache_dir, base_url, force, timeout)
    return root


# --------------------------------------------------------------------------------------------
# GPT-2 from the Hugging Face hub
# --------------------------------------------------------------------------------------------

HUB = "https://huggingface.co"
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
# Digests known here (../shared/data/SOURCES.md) for the 124M model's tokenizer files. The larger
# models share the tokenizer, but we have not checked their files byte for byte: recorded on first use.
GPT2_SHA256 = {
    ("gpt2", "vocab.json"): "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ("gpt2", "merges.txt"): "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def gpt2_url(name: str, filename: str) -> str:
    return f"{HUB}/openai-community/{name}/resolve/main/{filename}"


def fetch_gpt2(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
               force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """config.json, model.safetensors, vocab.json, merges.txt of hub repo openai-community/<name>
    -> <cache>/gpt2/<name>/ (files already there are kept); returns that folder.

    `base_url` (else $LM_HUB_BASE_URL, else $HF_ENDPOINT) replaces https://huggingface.co.
    """
    if name not in GPT2_NAMES:
        raise ConfigError(f"unknown GPT-2 model {name!r} (known: {', '.join(GPT2_NAMES)}; "
                          f"or give a folder holding config.json and model.safetensors)")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    base_url = base_url or os.environ.get("LM_HUB_BASE_URL") or os.environ.get("HF_ENDPOINT") or None
    folder = root / "gpt2" / name
    for filename in GPT2_FILES:   # config.json first: small, so an offline machine fails fast
        dest = folder / filename
        if dest.is_file() and not force:
            continue
        fetch_file(gpt2_url(name, filename), dest, root, GPT2_SHA256.get((name, filename)), base_url, timeout)
    say(f"{name}: {', '.join(GPT2_FILES)} in {folder}")
    return folder


def gpt2_folder(name_or_path: str, cache_dir: str | os.PathLike | None = None,
                base_url: str | None = None) -> Path:
    """What `--gpt2` means: an existing folder as is, else a hub name fetched into the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    return fetch_gpt2(name_or_path, cache_dir, base_url)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {n:9s} {s.note}" for n, s in SOURCES.items())
    p = argparse.ArgumentParser(
        prog="python -m lm.data.download", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the book's datasets (and GPT-2) into a cache laid out like data/.\n"
                    "Needs a machine that is online; offline, use --data-dir with a local copy.",
        epilog=f"datasets:\n{lines}\n\narxiv and iptc have no download; copy them from a data dir.")
    p.add_argument("datasets", nargs="*", metavar="DATASET",
                   help=f"datasets to fetch: {', '.join(SOURCES)} or all (default: all, unless --gpt2 is given)")
    p.add_argument("--gpt2", metavar="NAME", choices=GPT2_NAMES,
                   help=f"also fetch GPT-2 weights and tokenizer from the hub: {', '.join(GPT2_NAMES)}")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default: $LM_CACHE_DIR or ~/.cache/lm)")
    p.add_argument("--base-url", metavar="URL",
                   help="replace the host of every URL (a mirror serving the same paths), e.g. http://127.0.0.1:8000")
    p.add_argument("--force", action="store_true", help="download again even if the files are already there")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds a connection may stay silent before giving up (default {DEFAULT_TIMEOUT:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(args.datasets) or ([] if args.gpt2 else ["all"])
    if "all" in names:
        names = list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        build_parser().error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}, all")
    cache = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    try:
        for name in names:
            fetch_dataset(name, cache, args.base_url, args.force, args.timeout)
        folder = fetch_gpt2(args.gpt2, cache, args.base_url, args.force, args.timeout) if args.gpt2 else None
    except (LMError, KeyboardInterrupt) as e:
        print(f"error: {e}" if isinstance(e, LMError) else "interrupted; no partial file was kept", file=sys.stderr)
        return 1
    if names:
        print(f"data dir: {cache}\n  use it with: python run_all.py --data-dir {cache}")
    if folder:
        print(f"GPT-2 folder: {folder}\n  use it with: python run_all.py --gpt2 {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
