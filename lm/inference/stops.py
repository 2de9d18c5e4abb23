"""Where a generated answer ends: reading `generate`'s output back as each prompt's answer.

`generate` (lm/inference/generate.py) returns the left-padded prompts, then the new tokens, with
padding after the rows that stopped early (at a stop token, or once their text held a stop
string). A caller that wants answers cuts each row's new tokens where the row stopped and decodes
them. Where exactly the answer ends is the caller's choice, `cut`:

    "before"  before the first stop token and before the first stop string: neither is part of
              the answer (SFT's exact match, GRPO, the warm-up, the book's samples)
    "tokens"  before the first stop token; a stop string ends generation but stays in the text,
              with whatever its token holds after it (the labeller reads the last ID in the reply)
    "after"   after the token that stopped the row: a stop token is kept, and so is the whole
              token that completed a stop string (`generate_text`: what the model wrote, verbatim)

    >>> decode_new(tok, out[:, T:].tolist(), stop_token_ids=[tok.eot_id])               # doctest: +SKIP

`lm.inference.complete` batches prompts through `generate` and reads them back with these; the
streaming engine of the chat and the server (`lm.inference.engine`) cuts its text with `first_stop`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from lm.errors import ConfigError

CUTS = ("before", "tokens", "after")


def check_cut(cut: str) -> None:
    """ConfigError unless `cut` is one of CUTS."""
    if cut not in CUTS:
        raise ConfigError(f"cut must be one of {CUTS}, got {cut!r}")


def first_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the earliest stop string begins in text[start:] (an index into text), or None.

    >>> first_stop("ab\\n<|im_end|>", ["\\n<|im_end|>", "<|im_end|>"])
    2
    """
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def cut_ids(row: Sequence[int], stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
            decode: Callable[[list[int]], str] | None = None, cut: str = "before") -> list[int]:
    """A row's new token ids up to where it stopped (`cut` as in the module docstring); the
    padding after a stop goes too. Stop strings matter here only with cut="after" (the token that
    completed one is the last kept); "before" cuts them from the text (`cut_text`).

    >>> cut_ids([5, 9, 0, 0], stop_token_ids=[9]), cut_ids([5, 9, 0, 0], stop_token_ids=[9], cut="after")
    ([5], [5, 9])
    """
    check_cut(cut)
    row, stops = list(row), set(stop_token_ids)
    end = next((k for k, t in enumerate(row) if t in stops), len(row))     # the first stop token
    if cut != "after":
        return row[:end]
    end = min(end + 1, len(row))                                            # ... kept
    if stop_strings:   # the first prefix whose text holds a stop string ends with the token that completed it
        if decode is None:
            raise ConfigError("stop_strings need a `decode` function (token ids -> text)")
        end = next((k for k in range(1, end + 1) if any(s in decode(row[:k]) for s in stop_strings)), end)
    return row[:end]


def cut_text(text: str, stop_strings: Sequence[str] = (), cut: str = "before") -> str:
    """With cut="before", `text` up to its first stop string (not included); else `text` itself.

    >>> cut_text("4<|im_end|>junk", ["<|im_end|>"]), cut_text("4\\n", ["\\n"], cut="tokens")
    ('4', '4\\n')
    """
    check_cut(cut)
    i = first_stop(text, stop_strings) if cut == "before" else None
    return text if i is None else text[:i]


def decode_new(tokenizer, rows: Sequence[Sequence[int]], stop_token_ids: Sequence[int] = (),
               stop_strings: Sequence[str] = (), cut: str = "before") -> list[str]:
    """The answer text of each row of new tokens (generate's output after the prompts): `cut_ids`,
    `tokenizer.decode`, `cut_text`."""
    return [cut_text(tokenizer.decode(cut_ids(r, stop_token_ids, stop_strings, tokenizer.decode, cut)),
                     stop_strings, cut) for r in rows]
