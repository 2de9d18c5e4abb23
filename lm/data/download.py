"""Download the book's data (and GPT-2 from the Hugging Face hub) into a cache laid out like data/.

For machines that are online. Everything else in `lm` runs offline on the embedded `data/` or on a
local copy given with `--data-dir` (e.g. `../shared/data`); this module only fills a cache folder
with the same layout from the original places:

    python -m lm.data.download all                 # every dataset -> ~/.cache/lm
    python -m lm.data.download brown emotion --cache /tmp/lm
    python -m lm.data.download --gpt2 gpt2         # weights + tokenizer -> ~/.cache/lm/gpt2/gpt2/
    python -m lm.data.download --model Qwen/Qwen2.5-0.5B-Instruct   # -> ~/.cache/lm/models/Qwen/...
    python run_all.py --data-dir ~/.cache/lm       # what the command prints at the end

How a file travels (streamed, sha256-checked, atomic; archives read member by member and refused
if any member could escape) is `lm.data.fetch`; this module knows the datasets: where each lives
and how its downloads become files of the layout.

Nothing here runs at import time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lm.errors import LMError, ConfigError, DataError
from lm.data.fetch import (DEFAULT_TIMEOUT, default_cache_dir, extract_members, fetch_file, removing_new_dirs,
                           with_base, write_text_file)
from lm.data.loaders import EMOTION_LABELS, book_shuffle, book_split, load_gsm8k, load_instruct, read_jsonl
from lm.utils import atomic_open, atomic_path, say


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
    with atomic_path(valid) as tmp:
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


def download_dataset(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
                  force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download dataset `name` into the cache in the data/ layout; return the cache (a data dir).

    Does nothing if the dataset's files are already there (unless `force`). `base_url` (else
    $LM_DATA_BASE_URL) replaces the host of every URL, e.g. a mirror or a test server.
    Raw downloads live in <cache>/.downloads/ only while they are turned into layout files.

    >>> download_dataset("brown")           # doctest: +SKIP
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
    # offline or failed: no empty cache folder left behind (removed after the raw files below)
    with removing_new_dirs(staging, *{(root / rel).parent for rel in source.outputs}):
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


def download_all(cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
              force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Every dataset of SOURCES (arxiv and iptc have no download: copy them from a data dir)."""
    root = None
    for name in SOURCES:
        root = download_dataset(name, cache_dir, base_url, force, timeout)
    return root


# --------------------------------------------------------------------------------------------
# GPT-2 from the Hugging Face hub
# --------------------------------------------------------------------------------------------

HUB = "https://huggingface.co"
# The hub's repository names (openai-community/<name>), not model families: which family a folder
# is comes from its config.json (lm.models.auto.FAMILIES), read after the download.
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
GPT2_ADVICE = ("use a local copy of the model instead: run_all.py --gpt2 FOLDER, a folder holding "
               + ", ".join(GPT2_FILES) + " (or leave --gpt2 out: run_all.py then trains a small GPT-2 itself)")
# Digests known here (../shared/data/SOURCES.md) for the 124M model's tokenizer files. The larger
# models share the tokenizer, but we have not checked their files byte for byte: recorded on first use.
GPT2_SHA256 = {
    ("gpt2", "vocab.json"): "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ("gpt2", "merges.txt"): "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def gpt2_url(name: str, filename: str) -> str:
    return f"{HUB}/openai-community/{name}/resolve/main/{filename}"


def download_gpt2(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
               force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """config.json, model.safetensors, vocab.json, merges.txt of hub repo openai-community/<name>
    -> <cache>/gpt2/<name>/ (files already there are kept); returns that folder.

    `base_url` (else $LM_HUB_BASE_URL, else $HF_ENDPOINT) replaces https://huggingface.co.
    Offline, the error says to use `--gpt2 FOLDER` with a local copy, and no empty folder is left.
    """
    if name not in GPT2_NAMES:
        raise ConfigError(f"unknown GPT-2 model {name!r} (known: {', '.join(GPT2_NAMES)}; "
                          f"or give a folder holding config.json and model.safetensors)")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    base_url = base_url or os.environ.get("LM_HUB_BASE_URL") or os.environ.get("HF_ENDPOINT") or None
    folder = root / "gpt2" / name
    with removing_new_dirs(folder):   # offline: no empty cache folder left behind
        for filename in GPT2_FILES:   # config.json first: small, so an offline machine fails fast
            dest = folder / filename
            if dest.is_file() and not force:
                continue
            fetch_file(gpt2_url(name, filename), dest, root, GPT2_SHA256.get((name, filename)), base_url, timeout,
                       advice=GPT2_ADVICE)
    say(f"{name}: {', '.join(GPT2_FILES)} in {folder}")
    return folder


def gpt2_folder(name_or_path: str, cache_dir: str | os.PathLike | None = None,
                base_url: str | None = None) -> Path:
    """What `--gpt2` means: an existing folder as is, else a hub name fetched into the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    return download_gpt2(name_or_path, cache_dir, base_url)


# --------------------------------------------------------------------------------------------
# Qwen2.5 (the book's GRPO models) from the Hugging Face hub
# --------------------------------------------------------------------------------------------

# Hub repo -> files of its main branch that a model folder needs. Both hold one model.safetensors
# (bf16: 0.99 GB and 3.09 GB). Digests are recorded in manifest.json at the first download.
MODEL_FILES = {
    "Qwen/Qwen2.5-0.5B-Instruct": ("config.json", "generation_config.json", "tokenizer_config.json",
                                   "tokenizer.json", "vocab.json", "merges.txt", "model.safetensors"),
    "Qwen/Qwen2.5-1.5B-Instruct": ("config.json", "generation_config.json", "tokenizer_config.json",
                                   "tokenizer.json", "vocab.json", "merges.txt", "model.safetensors"),
}


def hub_url(repo: str, filename: str) -> str:
    return f"{HUB}/{repo}/resolve/main/{filename}"


MODEL_ADVICE = ("use a local copy of the model instead: run_all.py --model FOLDER, a Hugging Face folder holding "
                "config.json, the weights and the tokenizer files")


def download_model(name: str, cache_dir: str | os.PathLike | None = None, base_url: str | None = None,
                   force: bool = False, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """The files of hub repo `name` (a key of MODEL_FILES, e.g. "Qwen/Qwen2.5-0.5B-Instruct")
    -> <cache>/models/<name>/ (files already there are kept); returns that folder.

    GPT-2 names ("gpt2", ...) go to `download_gpt2`. `base_url` (else $LM_HUB_BASE_URL, else
    $HF_ENDPOINT) replaces https://huggingface.co. sha256 is trusted on first use (manifest.json).
    Offline, the error says to use `--model FOLDER` with a local copy, and no empty folder is left.
    """
    if name in GPT2_NAMES:
        return download_gpt2(name, cache_dir, base_url, force, timeout)
    if name not in MODEL_FILES:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join([*MODEL_FILES, *GPT2_NAMES])}; "
                          "or give a folder holding config.json and the weights)")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    base_url = base_url or os.environ.get("LM_HUB_BASE_URL") or os.environ.get("HF_ENDPOINT") or None
    folder = root / "models" / name
    with removing_new_dirs(folder):      # offline: no empty cache folder left behind
        for filename in MODEL_FILES[name]:   # config.json first: small, so an offline machine fails fast
            dest = folder / filename
            if dest.is_file() and not force:
                continue
            fetch_file(hub_url(name, filename), dest, root, None, base_url, timeout, advice=MODEL_ADVICE)
    say(f"{name}: {', '.join(MODEL_FILES[name])} in {folder}")
    return folder


def model_folder(name_or_path: str, cache_dir: str | os.PathLike | None = None,
                 base_url: str | None = None) -> Path:
    """What `--model` means: an existing folder as is, else a hub name (Qwen2.5 or GPT-2) fetched
    into the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    return download_model(name_or_path, cache_dir, base_url)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {n:9s} {s.note}" for n, s in SOURCES.items())
    p = argparse.ArgumentParser(
        prog="python -m lm.data.download", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the book's datasets (and GPT-2) into a cache laid out like data/.\n"
                    "Needs a machine that is online; offline, use --data-dir (and --gpt2 FOLDER) with a local copy.",
        epilog=f"datasets:\n{lines}\n\narxiv and iptc have no download; copy them from a data dir.")
    p.add_argument("datasets", nargs="*", metavar="DATASET",
                   help=f"datasets to fetch: {', '.join(SOURCES)} or all (default: all, unless --gpt2 is given)")
    p.add_argument("--gpt2", metavar="NAME", choices=GPT2_NAMES,
                   help=f"also fetch GPT-2 weights and tokenizer from the hub: {', '.join(GPT2_NAMES)}")
    p.add_argument("--model", metavar="NAME", choices=list(MODEL_FILES),
                   help=f"also fetch a model for --model from the hub: {', '.join(MODEL_FILES)}")
    p.add_argument("--cache", metavar="DIR", help="cache folder (default: $LM_CACHE_DIR or ~/.cache/lm)")
    p.add_argument("--base-url", metavar="URL",
                   help="replace the host of every URL (a mirror serving the same paths), e.g. http://127.0.0.1:8000")
    p.add_argument("--force", action="store_true", help="download again even if the files are already there")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds a connection may stay silent before giving up (default {DEFAULT_TIMEOUT:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(args.datasets) or ([] if args.gpt2 or args.model else ["all"])
    if "all" in names:
        names = list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        build_parser().error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}, all")
    cache = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    try:
        for name in names:
            download_dataset(name, cache, args.base_url, args.force, args.timeout)
        folder = download_gpt2(args.gpt2, cache, args.base_url, args.force, args.timeout) if args.gpt2 else None
        model = download_model(args.model, cache, args.base_url, args.force, args.timeout) if args.model else None
    except (LMError, KeyboardInterrupt) as e:
        print(f"error: {e}" if isinstance(e, LMError) else "interrupted; no partial file was kept", file=sys.stderr)
        return 1
    if names:
        print(f"data dir: {cache}\n  use it with: python run_all.py --data-dir {cache}")
    if folder:
        print(f"GPT-2 folder: {folder}\n  use it with: python run_all.py --gpt2 {folder}")
    if model:
        print(f"model folder: {model}\n  use it with: python run_all.py --model {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
