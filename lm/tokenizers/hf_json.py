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
    added_tokens    matched whole in the raw text, before normalisation; no lstrip/rstrip/single_word;
                    each new one numbered as the `tokenizers` library numbers it (the next free id)

In a folder, tokenizer_config.json is read too, as transformers reads it: its `added_tokens_decoder`
adds the tokens tokenizer.json lacks (each with the next free id), and the tokens it names
(`eos_token`, `pad_token`, `bos_token`, `unk_token`, `additional_special_tokens`) must be in the
vocabulary (transformers would add a missing one as a new token the model has no embedding for).
For vocab.json + merges.txt, `tokenizer_class` picks the pre-tokenizer; without one, config.json's
`model_type` picks it, as transformers' AutoTokenizer does. Every field is checked for its type
before use: a malformed file is one TokenizerFileError naming the file, the field and the value.

    >>> tok = tokenizer_from_dir("../shared/fixtures/qwen2_tokenizer")          # doctest: +SKIP
    >>> tok.encode("<|im_start|>user\\n12", allowed_special="all")              # doctest: +SKIP
    [751, 322, 263, 198, 16, 17]
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import re

from lm.errors import TokenizerFileError
from lm.tokenizers.gpt2 import FILE_NAMES, GPT2Tokenizer, check_ids, check_vocabulary, read_vocab_merges
from lm.tokenizers.pretokenize_qwen2 import QWEN2_PATTERN
from lm.utils import atomic_write_json, no_duplicate_keys, show

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
SPLIT_PATTERNS = {GPT2_PATTERN: "gpt2", QWEN2_PATTERN: "qwen2"}       # regex -> our pre-tokenizer
TOKENIZER_CLASSES = {"GPT2Tokenizer": ("gpt2", None), "GPT2TokenizerFast": ("gpt2", None),
                     "Qwen2Tokenizer": ("qwen2", "NFC"), "Qwen2TokenizerFast": ("qwen2", "NFC")}
# config.json model_type -> the tokenizer class transformers' AutoTokenizer picks when
# tokenizer_config.json names none
MODEL_TYPE_TOKENIZERS = {"gpt2": "GPT2Tokenizer", "qwen2": "Qwen2Tokenizer"}
SPECIAL_TOKEN_FIELDS = ("bos_token", "eos_token", "unk_token", "pad_token")   # tokenizer_config.json
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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TokenizerFileError(path, f"not valid UTF-8 JSON: {str(e)[:200]}") from None


# --------------------------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------------------------

def _byte_level(part: dict, where: str, path: Path, use_regex: bool) -> None:
    for key in ("add_prefix_space", "trim_offsets", "use_regex"):
        if key in part and not isinstance(part[key], bool):
            raise TokenizerFileError(path, f"{where}: {key} must be true or false, got {show(part[key])}")
    if part.get("add_prefix_space", False):
        raise TokenizerFileError(path, f"{where}: add_prefix_space=true is not implemented")
    if part.get("use_regex", True) != use_regex:
        raise TokenizerFileError(path, f"{where}: use_regex={part.get('use_regex', True)} is not implemented here")


def _normalizer(part: object, path: Path) -> str | None:
    if part is None:
        return None
    if isinstance(part, dict) and part.get("type") == "Sequence":
        steps = part.get("normalizers")
        if not isinstance(steps, list):
            raise TokenizerFileError(path, f"normalizer Sequence: normalizers must be a list, got {show(steps)}")
        if not steps:
            return None                                   # an empty sequence changes nothing
        if len(steps) == 1:
            part = steps[0]
    if isinstance(part, dict) and part.get("type") == "NFC":
        return "NFC"
    kind = part.get("type") if isinstance(part, dict) else part
    if isinstance(part, dict) and kind == "Sequence":
        kind = [s.get("type") if isinstance(s, dict) else s for s in part["normalizers"]]
    raise TokenizerFileError(path, f"normalizer {show(kind)} is not implemented (only null or NFC)")


def _pre_tokenizer(part: object, path: Path) -> str:
    """The name of our pre-tokenizer (PRETOKENIZERS in gpt2.py) for this pre_tokenizer section."""
    if isinstance(part, dict) and part.get("type") == "ByteLevel":
        _byte_level(part, "pre_tokenizer ByteLevel", path, use_regex=True)
        return "gpt2"
    steps = part.get("pretokenizers") if isinstance(part, dict) and part.get("type") == "Sequence" else None
    if (isinstance(steps, list) and len(steps) == 2 and all(isinstance(s, dict) for s in steps)
            and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"):
        split = steps[0]
        pattern = split["pattern"].get("Regex") if isinstance(split.get("pattern"), dict) else split.get("pattern")
        if not isinstance(pattern, str) or pattern not in SPLIT_PATTERNS:
            raise TokenizerFileError(path, f"pre_tokenizer Split pattern {show(pattern)} is not implemented "
                                           "(only GPT-2's and Qwen2's, as {\"Regex\": ...})")
        if split.get("behavior") != "Isolated" or split.get("invert", False):
            raise TokenizerFileError(path, f"pre_tokenizer Split behavior {split.get('behavior')!r} / invert="
                                           f"{split.get('invert')} is not implemented (only Isolated, not inverted)")
        _byte_level(steps[1], "pre_tokenizer ByteLevel", path, use_regex=False)
        return SPLIT_PATTERNS[pattern]
    kinds = [s.get("type") if isinstance(s, dict) else s for s in steps] if isinstance(steps, list) else None
    kind = kinds if kinds is not None else (part.get("type") if isinstance(part, dict) else part)
    raise TokenizerFileError(path, f"pre_tokenizer {show(kind)} is not implemented (only ByteLevel, or "
                                   "Sequence[Split, ByteLevel])")


def _merges(merges: object, vocab: dict, path: Path) -> list[tuple[str, str]]:
    if not isinstance(merges, list):
        raise TokenizerFileError(path, "model.merges must be a list")
    out = []
    for n, m in enumerate(merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) and t for t in pair)):
            raise TokenizerFileError(path, f"model.merges[{n}] = {show(m)}: expected \"a b\" or [\"a\", \"b\"]")
        for t in (*pair, pair[0] + pair[1]):
            if t not in vocab:
                raise TokenizerFileError(path, f"model.merges[{n}] = {show(m)} uses token {show(t)}, which is not "
                                               "in model.vocab")
        out.append((pair[0], pair[1]))
    return out


def _added_tokens(added: object, encoder: dict[str, int], n_model: int, normalizer: str | None, path: Path,
                  where: str = "added_tokens") -> list[str]:
    """Put the added tokens into `encoder` (in place); return their strings.

    Their ids are the `tokenizers` library's (AddedVocabulary): a token already in the vocabulary
    keeps its id; a new one gets the next free id, max(n_model, largest added id + 1), where
    n_model is the number of tokens of the BPE vocabulary. That library renumbers a token whose
    file id differs (with only a warning); we refuse it: the file does not say what it means.
    """
    if not isinstance(added, list):
        raise TokenizerFileError(path, f"{where} must be a list, got {show(added)}")
    by_id = {i: t for t, i in encoder.items()}
    top = max((i for i in by_id if i >= n_model), default=None)          # largest added id so far
    out = []
    for a in added:
        if not (isinstance(a, dict) and isinstance(a.get("content"), str) and a["content"]
                and type(a.get("id")) is int and a["id"] >= 0):
            raise TokenizerFileError(path, f"{where}: token {show(a)}: needs a non-empty 'content' and an 'id' >= 0")
        t, i = a["content"], a["id"]
        for flag in ("lstrip", "rstrip", "single_word", "normalized", "special"):
            if flag in a and not isinstance(a[flag], bool):
                raise TokenizerFileError(path, f"{where}: token {show(t)}: {flag} must be true or false, "
                                               f"got {show(a[flag])}")
            if flag in ("lstrip", "rstrip", "single_word") and a.get(flag):
                raise TokenizerFileError(path, f"{where}: token {show(t)}: {flag}=true is not implemented")
        if a.get("normalized") and normalizer is not None:
            raise TokenizerFileError(path, f"{where}: token {show(t)}: normalized=true (matched after {normalizer}) "
                                           "is not implemented; we match added tokens in the raw text")
        if encoder.get(t, i) != i or by_id.get(i, t) != t:
            raise TokenizerFileError(path, f"{where}: token {show(t)} with id {i} clashes with the vocabulary "
                                           f"({show(t)} -> {encoder.get(t)}, id {i} -> {show(by_id.get(i))})")
        if t not in encoder:
            expected = n_model if top is None else max(n_model, top + 1)
            if i != expected:
                raise TokenizerFileError(path, f"{where}: token {show(t)} has id {i:,}, but the next free id is "
                                               f"{expected:,}, which the reference library would give it")
            top = i
        encoder[t], by_id[i] = i, t
        out.append(t)
    return out


def from_tokenizer_json(path: str | os.PathLike) -> GPT2Tokenizer:
    """Read a `tokenizer.json` into our byte-level BPE, refusing by name what we do not implement."""
    parts = _tokenizer_json(Path(path))
    parts.pop("n_model")
    return GPT2Tokenizer(**parts)


def _tokenizer_json(path: Path) -> dict:
    """The checked contents of a tokenizer.json: GPT2Tokenizer's arguments, and `n_model`, the
    number of tokens of its BPE vocabulary (the `tokenizers` library numbers added tokens after it)."""
    d = read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise TokenizerFileError(path, "not a tokenizer.json: no 'model' object")
    if d.get("version", "1.0") != "1.0":
        raise TokenizerFileError(path, f"version {show(d.get('version'))} is not known (only \"1.0\")")
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
                raise TokenizerFileError(path, f"{key} {show(kind)} is not implemented (only ByteLevel or null)")
            if key == "decoder" or part.get("add_prefix_space"):
                _byte_level(part, f"{key} ByteLevel", path, use_regex=part.get("use_regex", True))
    model = d["model"]
    if model.get("type", "BPE") != "BPE":
        raise TokenizerFileError(path, f"model type {show(model.get('type'))} is not implemented (only BPE)")
    for key, allowed in BPE_DEFAULTS.items():
        if not any(model.get(key) is v or (type(model.get(key)) is type(v) and model.get(key) == v) for v in allowed):
            raise TokenizerFileError(path, f"model.{key} = {show(model.get(key))} is not implemented "
                                           f"(must be {' or '.join(map(repr, allowed))})")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(t, str) and type(i) is int and i >= 0
                                              for t, i in vocab.items()):
        raise TokenizerFileError(path, "model.vocab must be an object mapping token strings to ids >= 0")
    check_ids(vocab, path)
    merges = _merges(model.get("merges"), vocab, path)
    encoder = dict(vocab)
    # no added_tokens at all: none, as the `tokenizers` library reads it (a folder's
    # tokenizer_config.json may add them: tokenizer_from_dir)
    specials = _added_tokens(d.get("added_tokens", []), encoder, len(vocab), normalizer, path)
    check_vocabulary(encoder, merges, path, specials)
    return dict(encoder=encoder, merges=merges, special_tokens=specials, pretokenizer=pretokenizer,
                normalizer=normalizer, n_model=len(vocab))


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
    """tokenizer_config.json of `folder` as a dict ({} when there is none), each field we use
    checked for its type: `tokenizer_class` (a string), `added_tokens_decoder` (`added_tokens_decoder`),
    the special tokens (`special_token_names`)."""
    path = Path(folder) / TOKENIZER_CONFIG
    if not path.is_file():
        return {}
    d = read_json(path)
    if not isinstance(d, dict):
        raise TokenizerFileError(path, "not a JSON object")
    cls = d.get("tokenizer_class")
    if cls is not None and not isinstance(cls, str):
        raise TokenizerFileError(path, f"tokenizer_class must be a string, got {show(cls)}")
    added_tokens_decoder(d, path)
    special_token_names(d, path)
    return d


def added_tokens_decoder(config: dict, path: Path) -> dict[int, dict]:
    """tokenizer_config.json's `added_tokens_decoder` {"id": {"content": ..., ...}} as {id: entry},
    in id order ({} when absent or null). Keys must be plain decimal ids ("750", not "0750" or
    "²"), values objects with a non-empty string `content`."""
    decoder = config.get("added_tokens_decoder")
    if decoder is None:
        return {}
    if not isinstance(decoder, dict):
        raise TokenizerFileError(path, f"added_tokens_decoder must be an object {{id: {{content, ...}}}}, "
                                       f"got {show(decoder)}")
    out = {}
    for key, entry in decoder.items():
        if not (re.fullmatch(r"0|[1-9][0-9]{0,18}", key) and isinstance(entry, dict)
                and isinstance(entry.get("content"), str) and entry["content"]):
            raise TokenizerFileError(path, f"added_tokens_decoder entry {show(key)}: {show(entry)}: expected a decimal "
                                           "id -> {\"content\": non-empty string, ...}")
        out[int(key)] = entry
    return dict(sorted(out.items()))


def special_token_names(config: dict, path: Path) -> dict[str, str]:
    """The tokens tokenizer_config.json names as bos/eos/unk/pad and additional special tokens:
    {field: token}. Each is null, a string, or an AddedToken object {"content": string, ...}."""
    def name(field: str, value: object) -> str | None:
        if isinstance(value, dict):
            value = value.get("content")
            if not isinstance(value, str):
                raise TokenizerFileError(path, f"{field}: an AddedToken object needs a string 'content'")
        if value is not None and not (isinstance(value, str) and value):
            raise TokenizerFileError(path, f"{field} must be null, a token string or {{\"content\": token}}, "
                                           f"got {show(value)}")
        return value
    out = {f: name(f, config.get(f)) for f in SPECIAL_TOKEN_FIELDS}
    extra = config.get("additional_special_tokens")
    if extra is not None:
        if not isinstance(extra, list):
            raise TokenizerFileError(path, f"additional_special_tokens must be a list, got {show(extra)}")
        out.update({f"additional_special_tokens[{n}]": name(f"additional_special_tokens[{n}]", v)
                    for n, v in enumerate(extra)})
    return {f: t for f, t in out.items() if t is not None}


def _tokenizer_class(folder: Path, config: dict) -> tuple[str, Path]:
    """The tokenizer class of a vocab.json + merges.txt folder, and the file that says so:
    tokenizer_config.json's `tokenizer_class`, else (as transformers' AutoTokenizer) config.json's
    `model_type`. A folder with neither file holds GPT-2's own files: GPT2Tokenizer. A
    tokenizer_config.json naming no class beside no config.json is refused (transformers cannot
    load it either) rather than silently read with GPT-2's pre-tokenizer."""
    path = folder / TOKENIZER_CONFIG
    if config.get("tokenizer_class") is not None:
        cls = config["tokenizer_class"]
    elif (folder / "config.json").is_file():
        path = folder / "config.json"
        d = read_json(path)
        kind = d.get("model_type") if isinstance(d, dict) else None
        if not isinstance(kind, str) or kind not in MODEL_TYPE_TOKENIZERS:
            raise TokenizerFileError(path, f"model_type {show(kind)} does not say which tokenizer vocab.json + "
                                           f"merges.txt are for (known: {', '.join(MODEL_TYPE_TOKENIZERS)}); "
                                           f"name it in {TOKENIZER_CONFIG}'s tokenizer_class")
        cls = MODEL_TYPE_TOKENIZERS[kind]
    elif path.is_file():
        raise TokenizerFileError(path, "tokenizer_class is missing and there is no config.json whose model_type "
                                       f"would say which tokenizer this is (known: {', '.join(TOKENIZER_CLASSES)})")
    else:
        cls = "GPT2Tokenizer"
    if cls not in TOKENIZER_CLASSES:
        raise TokenizerFileError(path, f"tokenizer_class {show(cls)} is not implemented "
                                       f"(known: {', '.join(TOKENIZER_CLASSES)})")
    return cls, path


def _from_vocab_merges(folder: Path, config: dict) -> GPT2Tokenizer:
    """vocab.json + merges.txt, with the class and added tokens of tokenizer_config.json.

    Without tokenizer_config.json the files alone say it all (GPT2Tokenizer.from_dir: GPT-2's
    unmarked `<|endoftext|>`). With it, the special tokens are those it lists or names; every
    other token of vocab.json must be made of byte characters."""
    if not config:
        tok = GPT2Tokenizer.from_dir(folder)
        cls, _ = _tokenizer_class(folder, config)
        pretokenizer, normalizer = TOKENIZER_CLASSES[cls]
        return GPT2Tokenizer(tok.encoder, tok.merges, tok.special_tokens, pretokenizer=pretokenizer,
                             normalizer=normalizer)
    path = folder / TOKENIZER_CONFIG
    cls, _ = _tokenizer_class(folder, config)
    pretokenizer, normalizer = TOKENIZER_CLASSES[cls]
    names = next(((folder / v, folder / m) for v, m in FILE_NAMES if (folder / v).is_file() and (folder / m).is_file()),
                 None)
    if names is None:
        raise TokenizerFileError(folder, "no tokenizer files: expected tokenizer.json, or vocab.json + merges.txt")
    encoder, merges = read_vocab_merges(*names)
    # the slow tokenizer matches added tokens in the raw text: normalized is irrelevant here
    added = [{**a, "id": i, "normalized": False} for i, a in added_tokens_decoder(config, path).items()]
    specials = _added_tokens(added, encoder, len(encoder), None, path, "added_tokens_decoder")
    specials += special_token_names(config, path).values()
    if cls.startswith("GPT2"):
        specials.append("<|endoftext|>")                       # GPT2Tokenizer's default bos/eos/unk
    specials = [t for t in dict.fromkeys(specials) if t in encoder]     # once each, in order
    check_vocabulary(encoder, merges, names[0], specials)
    return GPT2Tokenizer(encoder, merges, specials, pretokenizer=pretokenizer, normalizer=normalizer)


def _with_config_tokens(parts: dict, config: dict, path: Path) -> GPT2Tokenizer:
    """tokenizer.json's tokenizer (`_tokenizer_json` parts) plus what tokenizer_config.json adds, as
    transformers' PreTrainedTokenizerFast does: the tokens of `added_tokens_decoder` that
    tokenizer.json lacks (each with the next free id; one it has must have the same id there), and
    the named special tokens as special."""
    encoder, specials = dict(parts["encoder"]), list(parts["special_tokens"])
    decoder = [{**a, "id": i} for i, a in added_tokens_decoder(config, path).items()]
    specials += _added_tokens(decoder, encoder, parts["n_model"], parts["normalizer"], path, "added_tokens_decoder")
    specials += special_token_names(config, path).values()
    specials = [t for t in dict.fromkeys(specials) if t in encoder]     # once each, in order
    return GPT2Tokenizer(encoder, parts["merges"], specials, pretokenizer=parts["pretokenizer"],
                         normalizer=parts["normalizer"])


def tokenizer_from_dir(folder: str | os.PathLike) -> GPT2Tokenizer:
    """The tokenizer of a model folder: tokenizer.json when present, else vocab.json + merges.txt;
    with tokenizer_config.json's added tokens. Every token tokenizer_config.json names (eos, pad,
    bos, unk, additional special tokens) must be in the vocabulary."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerFileError(folder, "not a folder")
    config = read_tokenizer_config(folder)
    path = folder / TOKENIZER_CONFIG
    if (folder / TOKENIZER_JSON).is_file():
        tok = _with_config_tokens(_tokenizer_json(folder / TOKENIZER_JSON), config, path)
    else:
        tok = _from_vocab_merges(folder, config)
    for field, token in special_token_names(config, path).items():
        if token not in tok.encoder:
            raise TokenizerFileError(path, f"{field} {show(token)} is not a token of this tokenizer (transformers "
                                           "would add it with a new id that the model has no embedding for)")
    return tok
