"""Finishing prompts: batch them, generate, cut each answer where it stops, decode (one helper for all callers).

Every caller that wants *answers* from the one generation path does the same four things, so
they are written here once:

    batch     the prompts go through `generate` `batch_size` at a time (all at once by default;
              longest first on request, so a batch holds similar lengths: less padding); the
              answers come back in the prompts' order
    generate  greedy or sampled, stopping at a stop token or a stop string (`generate`'s rules)
    cut       each row's new tokens end where the row stopped: "before", "tokens" or "after" the
              stop (lm/inference/stops.py says which caller wants which)
    decode    token ids -> text

with the model in eval mode (dropout off) while it writes, and put back as it was afterwards
(`eval_mode`). Callers: SFT evaluation (`lm.finetune.sft.generate_completions`), the GRPO
warm-up's evaluation (`lm.rl.warmup.greedy_completions`), the book's samples of the pretrained
LMs (`book_samples`) and the labeller that asks for an ID (`lm.labeling.lm_generate`); GRPO's
rollouts and `generate.generate_text` keep `generate`'s output and read it with `stops.decode_new`.

    >>> answers = complete(model, tok, [tok.encode("2+2=")], 8, stop_token_ids=[tok.eot_id])   # doctest: +SKIP
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from lm.errors import ConfigError
from lm.inference.generate import generate
from lm.inference.stops import check_cut, cut_ids, cut_text


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`with eval_mode(model):` dropout off inside; the model's train/eval mode restored after,
    also when the body raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def batches(n: int, batch_size: int | None = None, lengths: Sequence[int] | None = None) -> list[list[int]]:
    """The indices 0..n-1 in groups of `batch_size` (one group when None); with `lengths`, longest
    first (a stable sort: equal lengths keep their order).

    >>> batches(5, 2), batches(3, lengths=[1, 3, 1])
    ([[0, 1], [2, 3], [4]], [[1, 0, 2]])
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(n), key=lambda i: -lengths[i]) if lengths is not None else list(range(n))
    size = batch_size or max(n, 1)
    return [order[i:i + size] for i in range(0, n, size)]


def complete_ids(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                 stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
                 decode: Callable[[list[int]], str] | None = None, cut: str = "before",
                 batch_size: int | None = None, longest_first: bool = False, **generate_kwargs) -> list[list[int]]:
    """The new token ids of every prompt, cut where it stopped, in the prompts' order.

    prompts:         token id lists (ragged; `generate` pads each batch on the left)
    stop_*, decode:  `generate`'s stop rules; `decode` (token ids -> text) is needed with stop strings
    cut:             "before" / "tokens" / "after" (lm/inference/stops.py)
    batch_size:      prompts per `generate` call (None: all at once)
    longest_first:   batch the prompts by decreasing length (less padding per batch)
    generate_kwargs: the rest of `generate`'s arguments (sampling, generator, pad_token_id, vocab_limit, ...)
    """
    check_cut(cut)
    answers: list[list[int]] = [[] for _ in prompts]
    with eval_mode(model):
        for batch in batches(len(prompts), batch_size, [len(p) for p in prompts] if longest_first else None):
            rows = [prompts[i] for i in batch]
            out = generate(model, rows, max_new_tokens, stop_token_ids=stop_token_ids, stop_strings=stop_strings,
                           decode=decode, **generate_kwargs)                    # (b, T + new)
            T = max(len(r) for r in rows)
            for i, row in zip(batch, out[:, T:].tolist()):
                answers[i] = cut_ids(row, stop_token_ids, stop_strings, decode, cut)
    return answers


def complete(model: torch.nn.Module, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (), cut: str = "before",
             **kwargs) -> list[str]:
    """The answer text of every prompt: `complete_ids` (with `tokenizer.decode` for the stop
    strings), decoded, and cut at the first stop string when cut="before" (`stops.cut_text`).
    The other arguments are `complete_ids`'."""
    ids = complete_ids(model, prompts, max_new_tokens, stop_token_ids=stop_token_ids, stop_strings=stop_strings,
                       decode=tokenizer.decode, cut=cut, **kwargs)
    return [cut_text(tokenizer.decode(r), stop_strings, cut) for r in ids]
