"""Qwen2's pre-tokenizer with the standard library's `re`: GPT-2's idea, digits one at a time.

Qwen2 (and Qwen2.5) cut text into pieces before byte-level BPE with this pattern, written for
the `regex` package (it is the `Split` step of their tokenizer.json):

    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+

How it differs from GPT-2's (`lm/tokenizers/pretokenize.py`):
- `\\p{N}` matches ONE number character: "12345" is five pieces (GPT-2: one), so the model sees
  every digit as its own token, which helps arithmetic;
- a word may start with any one character that is not a letter, number, CR or LF (GPT-2: only a
  space): "(x" and "\\tseparated" are pieces; contractions are case-insensitive ("DON'T");
- punctuation takes the newlines after it ("!!!\\n\\n"), and a run of whitespace ending in newlines
  is one piece ("  \\n").

`\\p{L}` = letters (general category L*), `\\p{N}` = numbers (N*: `²`, `½`, `٣`, `Ⅻ` too), `\\s` =
Unicode White_Space. Python's own classes differ just enough to matter (U+001C-U+001F are `\\s` in
Python but not White_Space; `五` is `isnumeric()` but a letter), so, as for GPT-2, two versions:
`reference_pattern()` spells the classes out from Python's Unicode database (readable, exact,
slow to build); `pretokenize_qwen2` runs a pattern of Python's built-in classes on a same-length
"shadow" of the text (the trick of `lm/tokenizers/pretokenize_fast.py`: numbers that are not
decimal digits become `0`, `_` and U+001C-U+001F become `!`), and takes the pieces at the same
spans of the original. tests/tokenizers/test_qwen2_tokenizer.py checks the two equal on random strings
from all of Unicode, and both against the reference library's pieces.

    >>> pretokenize_qwen2("In 2024, it's 7.5%!")
    ['In', ' ', '2', '0', '2', '4', ',', ' it', "'s", ' ', '7', '.', '5', '%!']
"""
from __future__ import annotations

import re
from functools import lru_cache
from itertools import accumulate

from lm.tokenizers.pretokenize import unicode_classes
from lm.tokenizers.pretokenize_fast import _shadow_table

# The pattern exactly as Qwen2's tokenizer.json spells it (how a file is recognised).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# On the shadow: `\w` is exactly L | N, `[^\W\d]` letters, `\d` numbers, `\s` White_Space.
_FAST = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\w]?[^\W\d]+|\d| ?[^\s\w]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@lru_cache(maxsize=1)
def reference_pattern() -> re.Pattern:
    """Qwen2's pattern with \\p{L}, \\p{N} and \\s spelt out as explicit classes (slow, exact)."""
    L, N, S = unicode_classes()
    return re.compile(rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}]+|[{N}]| ?[^{S}{L}{N}]+[\r\n]*"
                      rf"|[{S}]*[\r\n]+|[{S}]+(?![^{S}])|[{S}]+")


def pretokenize_qwen2_reference(text: str) -> list[str]:
    """The same pieces as `pretokenize_qwen2`, from the literal transcription of the pattern."""
    return reference_pattern().findall(text)


def pretokenize_qwen2(text: str) -> list[str]:
    """Qwen2's pieces of `text`; `"".join(pretokenize_qwen2(t)) == t` always.

    A text without rare characters (numbers that are not decimal digits, `_`, U+001C-U+001F,
    anything beyond the BMP) is its own shadow; otherwise the whole text is translated once.
    """
    table, finder = _shadow_table()
    if finder.search(text) is None:
        return _FAST.findall(text)
    ends = list(accumulate(map(len, _FAST.findall(text.translate(table)))))
    return list(map(text.__getitem__, map(slice, [0] + ends[:-1], ends)))
