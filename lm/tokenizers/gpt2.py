"""GPT-2's byte-level BPE tokenizer: load the real files, encode, decode, and train one.

Byte-level BPE works on the UTF-8 bytes of a text, so every string can be encoded with no
unknown token. To make byte sequences look like text (the BPE files are text), GPT-2 maps each
of the 256 byte values to one printable character (`bytes_to_unicode`): printable bytes map to
themselves and the rest to code points from 256 up; a space becomes `Ġ`, a newline `Ċ`.

Encoding a text:
1. pre-tokenize with GPT-2's pattern (`lm.tokenizers.pretokenize_fast`): "Hello world" -> "Hello", " world";
2. map each piece's UTF-8 bytes to the byte characters;
3. inside the piece, repeatedly merge the adjacent pair with the lowest rank (line number in
   `merges.txt`) until no pair has a rank;
4. look the tokens up in `vocab.json`.
Step 2-4 depend only on the piece, so they are cached per piece: on real text almost every
piece is a cache hit, and encoding is one regex pass plus one dict lookup per piece.

The same machinery serves Qwen2 (lm/tokenizers/hf_json.py reads its tokenizer.json): the
vocabulary and merges differ, and two options change steps 1-2: `pretokenizer="qwen2"`
(`lm.tokenizers.pretokenize_qwen2`: digits one at a time) and `normalizer="NFC"` (the text is put
in Unicode normal form C before it is split; special tokens are matched before that, in the raw text).

Special tokens (`<|endoftext|>` = 50256, and any added with `add_special_tokens`) follow
tiktoken's rules: `encode(text)` raises if the text contains one (it is usually a mistake to
let user text inject an end-of-text); pass `allowed_special={"<|endoftext|>"}` or "all" to
encode them as their ids, or `disallowed_special=()` to encode them as ordinary text.

    >>> tok = GPT2Tokenizer.from_dir("../shared/gpt2")        # doctest: +SKIP
    >>> tok.encode("Hello world")                              # doctest: +SKIP
    [15496, 995]
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Collection, Iterable, Literal

from lm.errors import ConfigError, TokenizerFileError, SpecialTokenError
from lm.tokenizers.bpe import merge_by_rank
from lm.tokenizers.bpe_fast import fast_merges
from lm.tokenizers.pretokenize_fast import pretokenize
from lm.tokenizers.pretokenize_qwen2 import pretokenize_qwen2
from lm.utils import atomic_write_json, atomic_write_text, no_duplicate_keys, show

EOT = "<|endoftext|>"
FILE_NAMES = [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]   # HF names, OpenAI names
CACHE_LIMIT = 500_000          # pieces kept in the encode cache before it is cleared
PRETOKENIZERS = {"gpt2": pretokenize, "qwen2": pretokenize_qwen2}   # name -> split function
NORMALIZERS = (None, "NFC")    # unicodedata forms applied before splitting (None: the text as is)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte value -> one printable character.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
    themselves; the other 68 (control bytes, space, 0x7F-0xA0, 0xAD) get the code points 256,
    257, ... in byte order. So b" " -> 'Ġ' (256 + 32), b"\\n" -> 'Ċ' (256 + 10).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {ch: b for b, ch in BYTE_ENCODER.items()}
# str.translate table: a latin-1 decoded byte string -> the byte characters
_BYTE_TRANSLATE = {b: ch for b, ch in BYTE_ENCODER.items()}
# GPT-2's id order for the 256 byte tokens (ids 0..255 of the real vocab)
BYTE_ORDER = sorted(BYTE_ENCODER.values(), key=ord)


def to_byte_chars(text: str) -> str:
    """The byte characters of `text`'s UTF-8 bytes: "hé " -> "hÃ©Ġ"."""
    return text.encode("utf-8").decode("latin-1").translate(_BYTE_TRANSLATE)


class _PieceCache(dict):
    """piece -> tuple of ids; a miss runs BPE on the piece (dict.__missing__)."""

    def __init__(self, tokenizer: "GPT2Tokenizer"):
        super().__init__()
        self.tokenizer = tokenizer

    def __missing__(self, piece: str) -> tuple[int, ...]:
        tok = self.tokenizer
        try:
            chars = to_byte_chars(piece)
        except UnicodeEncodeError as e:
            raise ConfigError(f"encode: the text holds {piece[e.start]!r} (a lone surrogate), "
                              "which UTF-8 cannot encode") from None
        ids = tuple(tok.encoder[t] for t in tok.bpe(chars))
        self[piece] = ids
        return ids


class GPT2Tokenizer:
    """Byte-level BPE with GPT-2's file format (`vocab.json`: token -> id; `merges.txt`).

    `pretokenizer`: "gpt2" or "qwen2" (PRETOKENIZERS); `normalizer`: None or "NFC".
    """

    NAME = "gpt2"   # what command lines call this tokenizer (python -m lm.pretraining --tokenizer gpt2)

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]],
                 special_tokens: Iterable[str] = (), pretokenizer: str = "gpt2",
                 normalizer: str | None = None):
        if pretokenizer not in PRETOKENIZERS:
            raise ConfigError(f"pretokenizer {pretokenizer!r} is not one of {', '.join(PRETOKENIZERS)}")
        if normalizer not in NORMALIZERS:
            raise ConfigError(f"normalizer {normalizer!r} is not one of {NORMALIZERS}")
        self.pretokenizer, self.normalizer = pretokenizer, normalizer
        self._split = PRETOKENIZERS[pretokenizer]
        self.encoder = dict(encoder)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in reversed(list(enumerate(self.merges)))}   # first rank wins
        self.special_tokens: dict[str, int] = {t: self.encoder[t] for t in special_tokens}
        self._rebuild()

    def _rebuild(self) -> None:
        """Derived tables: id -> token, id -> bytes, and a fresh encode cache."""
        n = max(self.encoder.values()) + 1 if self.encoder else 0
        self.decoder: list[str | None] = [None] * n
        for t, i in self.encoder.items():
            self.decoder[i] = t
        self._id_bytes: list[bytes] = [
            b"" if t is None else t.encode("utf-8") if t in self.special_tokens
            else bytes(BYTE_DECODER[ch] for ch in t)
            for t in self.decoder]
        self._cache = _PieceCache(self)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "GPT2Tokenizer":
        """Load `vocab.json` + `merges.txt` (or `encoder.json` + `vocab.bpe`) from a folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise TokenizerFileError(folder, "not a folder with GPT-2 tokenizer files")
        for vocab_name, merges_name in FILE_NAMES:
            if (folder / vocab_name).is_file() and (folder / merges_name).is_file():
                return cls.from_files(folder / vocab_name, folder / merges_name)
        raise TokenizerFileError(folder, "no tokenizer files: expected vocab.json + merges.txt "
                                "(or encoder.json + vocab.bpe)")

    @classmethod
    def from_files(cls, vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> "GPT2Tokenizer":
        """vocab.json + merges.txt alone: a token that is neither a byte nor made by a merge is a
        special token (GPT-2's `<|endoftext|>`), as GPT-2's own files need."""
        encoder, merges = read_vocab_merges(vocab_path, merges_path)
        return cls(encoder, merges, check_vocabulary(encoder, merges, vocab_path))

    def save(self, folder: str | os.PathLike) -> None:
        """Write `vocab.json` and `merges.txt` in GPT-2's format (readable by `from_dir`).

        These files carry no pre-tokenizer or normalizer: a Qwen2 tokenizer is saved whole by
        `lm.tokenizers.hf_json.save_tokenizer_json`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "vocab.json", self.encoder, indent=None)
        atomic_write_text(folder / "merges.txt",
                          "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (EOT,),
              min_frequency: int = 1) -> "GPT2Tokenizer":
        """Train a byte-level BPE on `texts` (the fast trainer of `lm.tokenizers.bpe`, same tie rule).

        Ids: 0..255 the bytes (in GPT-2's order), then merged tokens, then the special tokens;
        `vocab_size` counts them all (at most: merges of pairs seen fewer than `min_frequency` times
        are not made). Special-token strings in the texts are cut out first.
        """
        special_tokens = list(dict.fromkeys(special_tokens))
        if isinstance(texts, str):
            raise ConfigError("GPT2Tokenizer.train expects an iterable of texts, not one string")
        n_new = vocab_size - 256 - len(special_tokens)
        if n_new < 0:
            raise ConfigError(f"vocab_size={vocab_size} is too small: it must hold the 256 bytes "
                              f"and {len(special_tokens)} special tokens")
        splitter = _special_splitter(special_tokens)
        counts: Counter = Counter()
        for text in texts:
            parts = splitter.split(text)[::2] if splitter else [text]   # drop the specials
            for part in parts:
                counts.update(pretokenize(part))
        words = Counter()
        for piece, c in counts.items():
            words[to_byte_chars(piece)] += c
        present = {ch for w in words for ch in w}
        merges = fast_merges(words, len(present) + n_new, min_frequency)
        encoder = {ch: i for i, ch in enumerate(BYTE_ORDER)}
        for a, b in merges:
            encoder.setdefault(a + b, len(encoder))
        for t in special_tokens:
            if t in encoder:
                raise ConfigError(f"special token {t!r} is also an ordinary token of the vocabulary")
            encoder[t] = len(encoder)
        return cls(encoder, merges, special_tokens)

    # ---------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1): 50257 for GPT-2."""
        return len(self.decoder)

    @property
    def eot_id(self) -> int | None:
        """Id of `<|endoftext|>` (50256 for GPT-2), or None if this vocabulary has none."""
        return self.special_tokens.get(EOT)

    def add_special_tokens(self, tokens: Iterable[str]) -> list[int]:
        """Add special tokens (e.g. `<|im_start|>`) with new ids at the end; return their ids.

        A token that is already special keeps its id.
        """
        ids = []
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise ConfigError(f"a special token must be a non-empty string, got {t!r}")
            if t not in self.special_tokens:
                if t in self.encoder:
                    raise ConfigError(f"{t!r} is already an ordinary token (id {self.encoder[t]})")
                self.encoder[t] = self.vocab_size
                self.special_tokens[t] = self.encoder[t]
                self._rebuild()
            ids.append(self.special_tokens[t])
        return ids

    # ---------------------------------------------------------------- BPE
    def bpe(self, chars: str) -> list[str]:
        """Merge the byte characters of one piece by rank: "Ġworld" -> ["Ġworld"]."""
        return merge_by_rank(chars, self.ranks)

    # ---------------------------------------------------------------- encode / decode
    def encode_ordinary(self, text: str) -> list[int]:
        """Encode with no special-token handling at all (special strings are plain text)."""
        if not isinstance(text, str):
            raise ConfigError(f"encode expects a str, got {type(text).__name__}")
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        if self.normalizer is not None:
            text = unicodedata.normalize(self.normalizer, text)
        return list(chain.from_iterable(map(cache.__getitem__, self._split(text))))

    def encode(self, text: str, allowed_special: Literal["all"] | Collection[str] = (),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Token ids of `text`, with tiktoken's special-token rules (see the module docstring).

        >>> tok.encode("a<|endoftext|>", allowed_special="all")    # doctest: +SKIP
        [64, 50256]
        """
        specials = self.special_tokens
        for name, value in (("allowed_special", allowed_special), ("disallowed_special", disallowed_special)):
            if isinstance(value, str) and value != "all":
                raise ConfigError(f"{name} must be 'all' or a set of tokens, e.g. {{{value!r}}}; got {value!r}")
        allowed = set(specials) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(specials)
        if unknown:
            raise ConfigError(f"allowed_special names {sorted(unknown)[0]!r}, which is not a special "
                              f"token of this tokenizer (known: {sorted(specials)})")
        disallowed = set(specials) - allowed if disallowed_special == "all" else set(disallowed_special)
        for t in disallowed:
            if t in text:
                raise SpecialTokenError(
                    f"the text contains the special token {t!r}; pass allowed_special={{{t!r}}} to encode "
                    f"it as id {specials[t]}, or disallowed_special=() to encode it as plain text")
        if not allowed or not any(t in text for t in allowed):
            return self.encode_ordinary(text)
        ids: list[int] = []
        for i, part in enumerate(_special_splitter(allowed).split(text)):
            if i % 2:
                ids.append(specials[part])
            elif part:
                ids += self.encode_ordinary(part)
        return ids

    def encode_batch(self, texts: Iterable[str], **kwargs) -> list[list[int]]:
        """`encode` each text (one thread; the piece cache is shared across the batch)."""
        return [self.encode(t, **kwargs) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        table = self._id_bytes
        if not isinstance(ids, (list, tuple)):
            ids = list(ids)
        try:
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not (isinstance(i, int) and 0 <= i < len(table)))
            raise ConfigError(f"decode: id {bad!r} is not in 0..{len(table) - 1}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        options = "" if self.pretokenizer == "gpt2" and self.normalizer is None else \
            f", pretokenizer={self.pretokenizer!r}, normalizer={self.normalizer!r}"
        return (f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special={sorted(self.special_tokens)}{options})")


def read_vocab_merges(vocab_path: str | os.PathLike, merges_path: str | os.PathLike
                      ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges) of vocab.json + merges.txt; TokenizerFileError naming the file and line
    for anything malformed (bad JSON or UTF-8, ids that are not distinct integers >= 0, a merge line
    that is not two tokens of the vocabulary)."""
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    try:
        encoder = json.loads(vocab_path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as e:   # bad JSON, bad UTF-8 or a key given twice
        raise TokenizerFileError(vocab_path, f"not valid UTF-8 JSON: {e}") from None
    except OSError as e:
        raise TokenizerFileError(vocab_path, f"cannot read: {e.strerror or e}") from None
    if not isinstance(encoder, dict) or not all(isinstance(t, str) and type(i) is int and i >= 0
                                                for t, i in encoder.items()):
        raise TokenizerFileError(vocab_path, "must be a JSON object mapping token strings to ids >= 0")
    check_ids(encoder, vocab_path)
    merges = []
    try:
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise TokenizerFileError(merges_path, f"not UTF-8 ({e})") from None
    except OSError as e:
        raise TokenizerFileError(merges_path, f"cannot read: {e.strerror or e}") from None
    for n, line in enumerate(lines, start=1):
        if (n == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerFileError(merges_path, f"expected two tokens separated by one space, got {show(line)}", n)
        for t in (*parts, parts[0] + parts[1]):
            if t not in encoder:
                raise TokenizerFileError(merges_path, f"merge {show(line)} uses token {show(t)}, which is not in "
                                                      f"{vocab_path.name}", n)
        merges.append((parts[0], parts[1]))
    return encoder, merges


MAX_UNUSED_IDS = 1 << 16    # ids below the largest that no token has (a real vocabulary has none)


def check_ids(encoder: dict[str, int], path: str | os.PathLike) -> None:
    """Token ids must be distinct, and dense enough for the id -> token table: the largest id may
    leave at most MAX_UNUSED_IDS ids unused. (An id of 2**31 in a 750-token file would make that
    table 2**31 entries long: a MemoryError, not a tokenizer.)"""
    seen: dict[int, str] = {}
    for t, i in encoder.items():
        if i in seen:
            raise TokenizerFileError(path, f"duplicate id {i}: tokens {show(seen[i])} and {show(t)}")
        seen[i] = t
    top = max(seen, default=-1)
    if top + 1 - len(seen) > MAX_UNUSED_IDS:
        raise TokenizerFileError(path, f"token {show(seen[top])} has id {top:,} but there are only {len(seen):,} "
                                       f"tokens: ids this sparse (more than {MAX_UNUSED_IDS:,} unused below the "
                                       "largest) are not a vocabulary")


def check_vocabulary(encoder: dict[str, int], merges: list[tuple[str, str]], path: str | os.PathLike,
                     special_tokens: Iterable[str] | None = None) -> list[str]:
    """Check a byte-level vocabulary (every merge's parts already in it); return its special tokens.

    All 256 byte tokens must be present; every other token must be made of byte characters (else
    it could never be decoded to bytes). With `special_tokens` None, a token that is neither a byte
    nor made by a merge counts as special (vocab.json holds them unmarked: GPT-2's `<|endoftext|>`),
    and must be made of byte characters too; given, the special tokens are exempt from that check.
    The ids are checked by `check_ids`.
    """
    check_ids(encoder, path)
    made = {a + b for a, b in merges}
    bytes_set = set(BYTE_ENCODER.values())
    missing = [ch for ch in BYTE_ORDER if ch not in encoder]
    if missing:
        raise TokenizerFileError(path, f"byte token {missing[0]!r} is missing (all 256 are required)")
    # a token that is neither a byte nor made by a merge can only be a special (added) token
    specials = ([t for t in encoder if t not in made and t not in bytes_set] if special_tokens is None
                else list(special_tokens))
    exempt = set(specials) if special_tokens is not None else set()
    bad = [t for t in encoder if t not in exempt and not all(ch in bytes_set for ch in t)]
    if bad:
        raise TokenizerFileError(path, f"token {show(bad[0])} (id {encoder[bad[0]]}) has characters outside the "
                                       "byte alphabet and is not an added (special) token: it cannot be decoded")
    return specials


def _special_splitter(tokens: Iterable[str]) -> re.Pattern | None:
    """A pattern that splits text around the tokens (longest first), keeping them: `(tok1|tok2)`."""
    tokens = sorted(tokens, key=len, reverse=True)
    if not tokens:
        return None
    return re.compile("(" + "|".join(map(re.escape, tokens)) + ")")
