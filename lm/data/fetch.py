"""Fetching one file safely: streamed, checksummed, atomic; and reading archives without trusting them.

The transport under `lm.data.download` (which knows the datasets). Standard library only:
  1. `fetch_url()` streams the response into a temporary file beside the destination, hashing
     (sha256) while it writes, and checks the byte count against Content-Length;
  2. `fetch_file()` checks the digest against the one we know, else against the one
     `manifest.json` in the cache recorded at the first download (trust on first use);
  3. only then is the file renamed into place (atomic). Any error, Ctrl-C included, removes the
     temporary file: no partial file ever survives.
Archives are opened with `tarfile` but never `extract()`ed: `extract_members()` reads the few
members we need and writes them to paths of our own choosing, and refuses the whole archive if any
member is an absolute path, has a `..` component, is a link leading outside it, or is a device file.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import json
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterator

from lm.errors import DataError, DownloadError, ChecksumError, UnsafeArchiveError
from lm.utils import Progress, atomic_open, atomic_path, atomic_write_json, no_duplicate_keys, say

CHUNK = 1 << 20          # bytes read per step while streaming
DEFAULT_TIMEOUT = 60.0   # seconds a socket may stay silent before we give up
USER_AGENT = "lm-study-code (python urllib)"


def default_cache_dir() -> Path:
    """$LM_CACHE_DIR if set, else ~/.cache/lm. The cache *is* a data dir (same layout as data/)."""
    env = os.environ.get("LM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lm"


# --------------------------------------------------------------------------------------------
# Streaming one URL to one file
# --------------------------------------------------------------------------------------------

DATA_ADVICE = "use --data-dir with a local copy of the data instead (e.g. --data-dir ../shared/data)"


def _offline_hint(url: str, reason: object, advice: str | None = None) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return f"cannot reach {host} ({reason}). This machine looks offline or the host is down: {advice or DATA_ADVICE}"


@contextmanager
def removing_new_dirs(*folders: str | os.PathLike) -> Iterator[None]:
    """If the block fails, remove again the folders on the way to each of `folders` that did not
    exist before it and are still empty, so a failed download leaves no empty cache folder behind."""
    created: list[Path] = []
    for folder in map(Path, folders):
        p = folder
        while not p.exists() and p.parent != p:
            created.append(p)
            p = p.parent
    try:
        yield
    except BaseException:
        for d in sorted(set(created), key=lambda p: len(p.parts), reverse=True):   # deepest first
            try:
                d.rmdir()
            except OSError:   # not empty (or already gone): keep it
                pass
        raise


def fetch_url(url: str, dest: str | os.PathLike, sha256: str | None = None,
             timeout: float = DEFAULT_TIMEOUT, desc: str | None = None, advice: str | None = None) -> str:
    """Stream `url` to `dest` and return the sha256 (hex) of its bytes.

    The bytes go to a temporary file in dest's folder, hashed on the way; a short read (fewer
    bytes than Content-Length) or a digest different from `sha256` (when given) is an error.
    Only a complete, verified file is renamed to `dest`; on any error the temporary file is
    removed and `dest` is left as it was. `advice`: what an offline user should do instead (default:
    use --data-dir with a local copy).

    >>> fetch_url("https://www.thelmbook.com/data/instruct", "/tmp/instruct.jsonl")  # doctest: +SKIP
    '3f1c...'
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    # atomic_open: any error, KeyboardInterrupt included, removes the temporary file
    with atomic_open(dest, "wb") as out:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:   # a subclass of URLError: test it first
            hint = " (the file is not at this address)" if e.code == 404 else ""
            raise DownloadError(url, f"HTTP {e.code} {e.reason}{hint}") from None
        except urllib.error.URLError as e:
            raise DownloadError(url, _offline_hint(url, e.reason, advice)) from None
        except (OSError, http.client.HTTPException) as e:   # reset or timed out before the headers
            raise DownloadError(url, _offline_hint(url, e or type(e).__name__, advice)) from None
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
    return actual


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
        manifest = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:
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
               base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT, advice: str | None = None) -> Path:
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
        actual = fetch_url(source, dest, expected, timeout=timeout, desc=dest.name, advice=advice)
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
    seen: set[str] = set()
    with ExitStack() as staged:   # every destination is renamed into place only if the block succeeds
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
                    if name in seen:
                        raise DownloadError(source, f"member {name!r} appears twice in the archive")
                    seen.add(name)
                    tmp = staged.enter_context(atomic_path(wanted[name]))
                    with open(tmp, "wb") as out:
                        _copy_utf8(tar.extractfile(member), out, f"{source} member {name}")
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
                raise DownloadError(source, f"corrupt or truncated archive ({e})") from None
        missing = [n for n in wanted if n not in seen]
        if missing:
            raise DownloadError(source, f"archive lacks {', '.join(missing)}")
