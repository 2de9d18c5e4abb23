"""Hugging Face tokenizer files -> our byte-level BPE (`GPT2Tokenizer`), for GPT-2 and Qwen2.

A model folder carries its tokenizer in one of two forms:

    tokenizer.json                          everything in one file (the `tokenizers` library's format)
    vocab.json + merges.txt                 GPT-2's pair; tokenizer_config.json beside it says which
      (+ tokenizer_config.json)             tokenizer class (GPT2Tokenizer / Qwen2Tokenizer) and adds
                                            the special tokens (`added_tokens_decoder`)

`tokenizer_from_dir(folder)` takes tokenizer.json when present, else the pair.

tokenizer.json describes a pipeline: normalizer -> pre_tokenizer -> model -> decoder. We implement
exactly the byte-level BPE pipelines of GPT-2 and Qwen2 and refuse anything else by name:

    normalizer      null, or NFC (Qwen2)
    pre_tokenizer   ByteLevel with GPT-2's regex (GPT-2), or Sequence[Split(pattern, "Isolated"),
                    ByteLevel(use_regex=false)] with GPT-2's or Qwen2's pattern
    model           BPE with vocab and merges ("a b" strings, as the hub's files, or ["a", "b"]
                    pairs, as `tokenizers` writes them now); no unk token, byte fallback, dropout,
                    subword prefix/suffix or ignore_merges
    decoder         ByteLevel (bytes -> UTF-8, broken sequences -> U+FFFD) or null
    post_processor  ByteLevel or null (nothing is added around the ids)
    added_tokens    matched whole in the raw text, before normalisation; no lstrip/rstrip/single_word

    >>> tok = tokenizer_from_dir("../shared/fixtures/qwen2_tokenizer")          # doctest: +SKIP
    >>> tok.encode("<|im_start|>user\\n12", allowed_special="all")              # doctest: +SKIP
    [751, 322, 263, 198, 16, 17]
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lm.errors import TokenizerFileError
from lm.tokenizers.gpt2 import GPT2Tokenizer, check_vocabulary
from lm.tokenizers.pretokenize_qwen2 import QWEN2_PATTERN
from lm.utils import atomic_write_json, no_duplicate_keys

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
SPLIT_PATTERNS = {GPT2_PATTERN: "gpt2", QWEN2_PATTERN: "qwen2"}       # regex -> our pre-tokenizer
TOKENIZER_CLASSES = {"GPT2Tokenizer": ("gpt2", None), "GPT2TokenizerFast": ("gpt2", None),
                     "Qwen2Tokenizer": ("qwen2", "NFC"), "Qwen2TokenizerFast": ("qwen2", "NFC")}
# BPE model options that must have these values (or be absent): what our BPE does.
BPE_DEFAULTS = {"dropout": (None,), "unk_token": (None,), "continuing_subword_prefix": (None, ""),
                "end_of_word_suffix": (None, ""), "byte_fallback": (False,), "ignore_merges": (False,)}


def read_json(path: str | os.PathLike) -> object:
    """A JSON file, duplicate keys refused; TokenizerFileError naming the file if unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except FileNotFoundError:
        raise TokenizerFileError(path, "file is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TokenizerFileError(path, f"not valid UTF-8 JSON: {e}") from None


# --------------------------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------------------------

def _byte_level(part: dict, where: str, path: Path, use_regex: bool) -> None:
    if part.get("add_prefix_space", False):
        raise TokenizerFileError(path, f"{where}: add_prefix_space=true is not implemented")
    if part.get("use_regex", True) != use_regex:
        raise TokenizerFileError(path, f"{where}: use_regex={part.get('use_regex', True)} is not implemented here")


def _normalizer(part: object, path: Path) -> str | None:
    if part is None:
        return None
    if isinstance(part, dict) and part.get("type") == "Sequence" and len(part.get("normalizers", [])) == 1:
        part = part["normalizers"][0]
    if isinstance(part, dict) and part.get("type") == "NFC":
        return "NFC"
    kind = part.get("type") if isinstance(part, dict) else part
    raise TokenizerFileError(path, f"normalizer {kind!r} is not implemented (only null or NFC)")


def _pre_tokenizer(part: object, path: Path) -> str:
    """The name of our pre-tokenizer (PRETOKENIZERS in gpt2.py) for this pre_tokenizer section."""
    if isinstance(part, dict) and part.get("type") == "ByteLevel":
        _byte_level(part, "pre_tokenizer ByteLevel", path, use_regex=True)
        return "gpt2"
    steps = part.get("pretokenizers") if isinstance(part, dict) and part.get("type") == "Sequence" else None
    if (isinstance(steps, list) and len(steps) == 2 and all(isinstance(s, dict) for s in steps)
            and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"):
        split = steps[0]
        pattern = split.get("pattern", {}).get("Regex") if isinstance(split.get("pattern"), dict) else None
        if pattern not in SPLIT_PATTERNS:
            raise TokenizerFileError(path, f"pre_tokenizer Split pattern {pattern!r} is not implemented "
                                           "(only GPT-2's and Qwen2's)")
        if split.get("behavior") != "Isolated" or split.get("invert", False):
            raise TokenizerFileError(path, f"pre_tokenizer Split behavior {split.get('behavior')!r} / invert="
                                           f"{split.get('invert')} is not implemented (only Isolated, not inverted)")
        _byte_level(steps[1], "pre_tokenizer ByteLevel", path, use_regex=False)
        return SPLIT_PATTERNS[pattern]
    kinds = [s.get("type") for s in steps if isinstance(s, dict)] if isinstance(steps, list) else None
    kind = kinds if kinds is not None else (part.get("type") if isinstance(part, dict) else part)
    raise TokenizerFileError(path, f"pre_tokenizer {kind!r} is not implemented (only ByteLevel, or "
                                   "Sequence[Split, ByteLevel])")


def _merges(merges: object, vocab: dict, path: Path) -> list[tuple[str, str]]:
    if not isinstance(merges, list):
        raise TokenizerFileError(path, "model.merges must be a list")
    out = []
    for n, m in enumerate(merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) and t for t in pair)):
            raise TokenizerFileError(path, f"model.merges[{n}] = {m!r}: expected \"a b\" or [\"a\", \"b\"]")
        for t in (*pair, pair[0] + pair[1]):
            if t not in vocab:
                raise TokenizerFileError(path, f"model.merges[{n}] = {m!r} uses token {t!r}, which is not "
                                               "in model.vocab")
        out.append((pair[0], pair[1]))
    return out


def _added_tokens(added: object, encoder: dict[str, int], normalizer: str | None, path: Path) -> list[str]:
    """Put the added tokens into `encoder` (in place); return their strings."""
    if not isinstance(added, list):
        raise TokenizerFileError(path, "added_tokens must be a list")
    by_id = {i: t for t, i in encoder.items()}
    out = []
    for a in added:
        if not (isinstance(a, dict) and isinstance(a.get("content"), str) and a["content"]
                and type(a.get("id")) is int and a["id"] >= 0):
            raise TokenizerFileError(path, f"added token {a!r}: needs a non-empty 'content' and an 'id' >= 0")
        t, i = a["content"], a["id"]
        for flag in ("lstrip", "rstrip", "single_word"):
            if a.get(flag):
                raise TokenizerFileError(path, f"added token {t!r}: {flag}=true is not implemented")
        if a.get("normalized") and normalizer is not None:
            raise TokenizerFileError(path, f"added token {t!r}: normalized=true (matched after {normalizer}) "
                                           "is not implemented; we match added tokens in the raw text")
        if encoder.get(t, i) != i or by_id.get(i, t) != t:
            raise TokenizerFileError(path, f"added token {t!r} with id {i} clashes with the vocabulary "
                                           f"({t!r} -> {encoder.get(t)}, id {i} -> {by_id.get(i)!r})")
        encoder[t], by_id[i] = i, t
        out.append(t)
    return out


def from_tokenizer_json(path: str | os.PathLike) -> GPT2Tokenizer:
    """Read a `tokenizer.json` into our byte-level BPE, refusing by name what we do not implement."""
    path = Path(path)
    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise TokenizerFileError(path, "not a tokenizer.json: no 'model' object")
    for key in ("truncation", "padding"):
        if d.get(key) is not None:
            raise TokenizerFileError(path, f"{key} is set; truncation and padding inside the tokenizer are "
                                           "not implemented (pad and cut the ids yourself)")
    normalizer = _normalizer(d.get("normalizer"), path)
    pretokenizer = _pre_tokenizer(d.get("pre_tokenizer"), path)
    for key in ("decoder", "post_processor"):
        part = d.get(key)
        if part is not None:
            if not (isinstance(part, dict) and part.get("type") == "ByteLevel"):
                kind = part.get("type") if isinstance(part, dict) else part
                raise TokenizerFileError(path, f"{key} {kind!r} is not implemented (only ByteLevel or null)")
            if key == "decoder" or part.get("add_prefix_space"):
                _byte_level(part, f"{key} ByteLevel", path, use_regex=part.get("use_regex", True))
    model = d["model"]
    if model.get("type", "BPE") != "BPE":
        raise TokenizerFileError(path, f"model type {model.get('type')!r} is not implemented (only BPE)")
    for key, allowed in BPE_DEFAULTS.items():
        if model.get(key) not in allowed:
            raise TokenizerFileError(path, f"model.{key} = {model.get(key)!r} is not implemented "
                                           f"(must be {' or '.join(map(repr, allowed))})")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(t, str) and type(i) is int and i >= 0
                                              for t, i in vocab.items()):
        raise TokenizerFileError(path, "model.vocab must be an object mapping token strings to ids >= 0")
    seen: dict[int, str] = {}
    for t, i in vocab.items():
        if i in seen:
            raise TokenizerFileError(path, f"model.vocab: duplicate id {i}: tokens {seen[i]!r} and {t!r}")
        seen[i] = t
    merges = _merges(model.get("merges"), vocab, path)
    encoder = dict(vocab)
    specials = _added_tokens(d.get("added_tokens", []), encoder, normalizer, path)
    check_vocabulary(encoder, merges, path, specials)
    return GPT2Tokenizer(encoder, merges, specials, pretokenizer=pretokenizer, normalizer=normalizer)


def save_tokenizer_json(tok: GPT2Tokenizer, path: str | os.PathLike) -> None:
    """Write `tok` as a tokenizer.json that `from_tokenizer_json` and the `tokenizers` library read."""
    pattern = {v: k for k, v in SPLIT_PATTERNS.items()}[tok.pretokenizer]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    specials = tok.special_tokens
    atomic_write_json(path, {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in sorted(specials.items(), key=lambda x: x[1])],
        "normalizer": {"type": tok.normalizer} if tok.normalizer else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}, byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for t, i in tok.encoder.items() if t not in specials},
                  "merges": [[a, b] for a, b in tok.merges]},
    }, indent=None)


# --------------------------------------------------------------------------------------------
# A folder: tokenizer.json, or vocab.json + merges.txt with tokenizer_config.json
# --------------------------------------------------------------------------------------------

def read_tokenizer_config(folder: str | os.PathLike) -> dict:
    """tokenizer_config.json of `folder` as a dict ({} when there is none)."""
    path = Path(folder) / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    d = read_json(path)
    if not isinstance(d, dict):
        raise TokenizerFileError(path, "not a JSON object")
    return d


def _from_vocab_merges(folder: Path) -> GPT2Tokenizer:
    """vocab.json + merges.txt, with the class and added tokens of tokenizer_config.json."""
    tok = GPT2Tokenizer.from_dir(folder)
    config = read_tokenizer_config(folder)
    path = folder / TOKENIZER_CONFIG
    cls = config.get("tokenizer_class") or "GPT2Tokenizer"
    if cls not in TOKENIZER_CLASSES:
        raise TokenizerFileError(path, f"tokenizer_class {cls!r} is not implemented "
                                       f"(known: {', '.join(TOKENIZER_CLASSES)})")
    pretokenizer, normalizer = TOKENIZER_CLASSES[cls]
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise TokenizerFileError(path, "added_tokens_decoder must be an object {id: {content, ...}}")
    added = []
    for i, a in decoder.items():
        if not (isinstance(i, str) and i.isdigit() and isinstance(a, dict)):
            raise TokenizerFileError(path, f"added_tokens_decoder entry {i!r}: expected an id -> token object")
        added.append({**a, "id": int(i), "normalized": False})   # the slow tokenizer matches them raw
    encoder = dict(tok.encoder)
    specials = list(tok.special_tokens) + [t for t in _added_tokens(added, encoder, None, path)
                                           if t not in tok.special_tokens]
    return GPT2Tokenizer(encoder, tok.merges, specials, pretokenizer=pretokenizer, normalizer=normalizer)


def tokenizer_from_dir(folder: str | os.PathLike) -> GPT2Tokenizer:
    """The tokenizer of a model folder: tokenizer.json when present, else vocab.json + merges.txt."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerFileError(folder, "not a folder")
    if (folder / TOKENIZER_JSON).is_file():
        return from_tokenizer_json(folder / TOKENIZER_JSON)
    return _from_vocab_merges(folder)
