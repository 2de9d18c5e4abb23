"""GPT-2's pre-tokenizer, written out literally with the standard library's `re` (no `regex` package).

GPT-2 cuts text into pieces before BPE with this pattern (written for the `regex` package):

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

`\\p{L}` = any letter, `\\p{N}` = any number (decimal digits, Roman numerals, `²`, `½`, ...),
`\\s` = Unicode White_Space. BPE merges never cross a piece boundary, so "Hello world" is
tokenized as "Hello" + " world"; a space sticks to the next word, and a run of spaces gives all
but its last space a piece of their own (the look-ahead `\\s+(?!\\S)`).

Stdlib `re` has no `\\p{...}`, so `reference_pattern()` spells the three classes out: explicit
character classes listing every letter, number and White_Space code point of Python's Unicode
database. It is the readable, exact transcription. The tokenizer uses the faster equivalent in
`lm/tokenizers/pretokenize_fast.py`, tested equal to this one on random strings from all of
Unicode. "Equal to GPT-2's pattern" means for the Unicode version of the running Python
(`unicodedata.unidata_version`).

    >>> pretokenize_reference("Hello world, it's 2²!")
    ['Hello', ' world', ',', ' it', "'s", ' 2²', '!']
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Unicode White_Space (stable since Unicode 6.3): what GPT-2's `\s` matches in the `regex` package.
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
               + "\u2028\u2029\u202f\u205f\u3000")


def all_chars() -> str:
    """Every Unicode code point, as one string."""
    return "".join(map(chr, range(0x110000)))


def char_class(chars) -> str:
    """A `[...]` class body for a set of characters or code points, as compact ranges."""
    cps = sorted(c if isinstance(c, int) else ord(c) for c in chars)
    out, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        a, b = re.escape(chr(cps[i])), re.escape(chr(cps[j]))
        out.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "".join(out)


@lru_cache(maxsize=1)
def unicode_classes() -> tuple[str, str, str]:
    """\\p{L}, \\p{N} and \\s spelt out as the insides of regex character classes: (L, N, S)."""
    chars = all_chars()
    L = char_class(filter(str.isalpha, chars))              # str.isalpha == category L*
    N = char_class(c for c in chars if unicodedata.category(c)[0] == "N")
    return L, N, char_class(WHITE_SPACE)


@lru_cache(maxsize=1)
def reference_pattern() -> re.Pattern:
    """GPT-2's pattern with \\p{L}, \\p{N} and \\s spelt out as explicit classes (slow, exact)."""
    L, N, S = unicode_classes()
    return re.compile(rf"""'(?:[sdmt]|ll|ve|re)| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+""")


def pretokenize_reference(text: str) -> list[str]:
    """The same pieces as `pretokenize`, from the literal transcription of GPT-2's pattern."""
    return reference_pattern().findall(text)
