"""GPT-2's pre-tokenizer with the standard library's `re` only (no `regex` package).

GPT-2 cuts text into pieces before BPE with this pattern (written for the `regex` package):

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

`\\p{L}` = any letter, `\\p{N}` = any number (decimal digits, Roman numerals, `²`, `½`, ...),
`\\s` = Unicode White_Space. BPE merges never cross a piece boundary, so "Hello world" is
tokenized as "Hello" + " world"; a space sticks to the next word, and a run of spaces gives all
but its last space a piece of their own (the look-ahead `\\s+(?!\\S)`).

Stdlib `re` has no `\\p{...}`. Two equivalent ways are built here:

- `reference_pattern()`: the pattern with explicit character classes listing every letter,
  number and White_Space code point of Python's Unicode database (a literal transcription;
  correct but slower because `re` checks big classes range by range beyond the BMP).
- `pretokenize(text)` (fast): Python's own classes on a same-length *shadow* of the text:
  in Python `[^\\W_]` is exactly L | N and `\\d` exactly Nd; `\\s` is White_Space plus the four
  separators U+001C-U+001F. So the shadow replaces every number that is not Nd (`²`, `Ⅻ`) by
  `0`, and `_` and U+001C-U+001F (punctuation-like for GPT-2) by `!`. Then letters are
  `[^\\W\\d]`, numbers `\\d`, others `[^\\s\\w]`, and the match spans on the shadow are the pieces
  of the original. When a text contains none of those rare characters, shadow == text.

Both give pieces that join back to the input (every character is in exactly one class), and a
test checks them equal on random strings from all of Unicode. "Equal to GPT-2's pattern" means for
the Unicode version of the running Python (`unicodedata.unidata_version`).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import accumulate

# Unicode White_Space (stable since Unicode 6.3): what GPT-2's `\s` matches in the `regex` package.
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
               + "\u2028\u2029\u202f\u205f\u3000")

_FAST = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def _all_chars() -> str:
    return "".join(map(chr, range(0x110000)))


@lru_cache(maxsize=1)
def _shadow_table() -> tuple[dict[int, str], re.Pattern]:
    """(str.translate table, a pattern that finds every character the table changes)."""
    other_numbers = [c for c in filter(str.isnumeric, _all_chars())
                     if unicodedata.category(c) in ("Nl", "No")]
    table = {ord(c): "0" for c in other_numbers}
    for c in "_\x1c\x1d\x1e\x1f":
        table[ord(c)] = "!"
    # The finder also stops at every character beyond the BMP (one cheap range test): `re`
    # checks BMP classes with a table but classes beyond it range by range, which is slow.
    bmp = [cp for cp in table if cp <= 0xFFFF]
    finder = re.compile(f"[{_char_class(bmp)}\U00010000-\U0010ffff]")
    return table, finder


def _char_class(chars) -> str:
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


def pretokenize(text: str) -> list[str]:
    """GPT-2's pieces of `text`; `"".join(pretokenize(t)) == t` always.

    >>> pretokenize("Hello world, it's 2²!")
    ['Hello', ' world', ',', ' it', "'s", ' 2²', '!']

    The shadow is needed only around the rare characters, so the text is cut into windows at
    safe boundaries: a newline right after a non-space character always starts a new piece, and
    the pieces before it do not depend on what follows (no match or look-ahead crosses it).
    """
    table, finder = _shadow_table()
    m = finder.search(text)
    if m is None:
        return _FAST.findall(text)
    pieces: list[str] = []
    start = 0
    while m is not None:
        lo = _boundary_before(text, m.start(), start)
        hi = _boundary_after(text, m.end())
        pieces += _FAST.findall(text[start:lo])
        window = text[lo:hi]
        ends = list(accumulate(map(len, _FAST.findall(window.translate(table)))))
        pieces += map(window.__getitem__, map(slice, [0] + ends[:-1], ends))
        start = hi
        m = finder.search(text, hi)
    pieces += _FAST.findall(text[start:])
    return pieces


def _is_boundary(text: str, p: int) -> bool:
    """True if p is 0, len(text), or a newline that follows a non-space character."""
    return p == 0 or p == len(text) or (text[p] == "\n" and text[p - 1] not in WHITE_SPACE)


def _boundary_before(text: str, q: int, start: int) -> int:
    """The last safe boundary in [start, q] (start is one)."""
    p = q
    while p > start and not _is_boundary(text, p):
        p = text.rfind("\n", start, p)
        if p < start:
            return start
    return max(p, start)


def _boundary_after(text: str, q: int) -> int:
    """The first safe boundary at or after q."""
    p = q
    while not _is_boundary(text, p):
        p = text.find("\n", p + 1 if text[p] == "\n" else p)
        if p < 0:
            return len(text)
    return p


@lru_cache(maxsize=1)
def reference_pattern() -> re.Pattern:
    """GPT-2's pattern with \\p{L}, \\p{N} and \\s spelt out as explicit classes (slow, exact)."""
    chars = _all_chars()
    L = _char_class(filter(str.isalpha, chars))              # str.isalpha == category L*
    N = _char_class(c for c in chars if unicodedata.category(c)[0] == "N")
    S = _char_class(WHITE_SPACE)
    return re.compile(rf"""'(?:[sdmt]|ll|ve|re)| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+""")


def pretokenize_reference(text: str) -> list[str]:
    """The same pieces as `pretokenize`, from the literal transcription of GPT-2's pattern."""
    return reference_pattern().findall(text)
