"""Generating text: the one generation path of every neural LM here (chapters 3, 4, 5 and later).

A language model predicts one token at a time. Without a cache, step n re-runs the whole
sequence of length T+n through the model: quadratic work. With a cache, step n feeds only the
newest token: an attention model keeps the keys and values of earlier positions (a KV cache), an
RNN keeps its hidden state. Either way, one pass over the weights per token.

Every model implements one small protocol, which is all this module knows of it:
`GenerationModel` (lm/inference/protocol.py, where each argument is described):

    model.new_cache(batch, max_len) -> an empty cache (`cache.length == 0`)
    model(input_ids, attention_mask=None, position_ids=None, cache=None, last_only=False)
        -> logits (B, T, V), or (B, 1, V) with last_only (generation passes True and reads
           logits[:, -1]); the call advances `cache.length` by T
    model.config.vocab_size; optional: n_positions (a length limit), pad/eos_token_id

Batches: prompts of different lengths are padded on the *left*, so every row's next token goes
into the same column. The attention mask hides the padding and position ids count only real
tokens, so each row computes what it would alone (tests: batched == one by one).

    >>> out = generate(model, [[5, 17, 300], [42]], max_new_tokens=20)                # doctest: +SKIP
    >>> out = generate(model, ids, 50, sampling=SamplingConfig(temperature=0.8, top_p=0.9),
    ...                stop_strings=["\\n"], decode=tok.decode)                           # doctest: +SKIP

Returns the prompts (left-padded) followed by the new tokens, shape (B, prompt_len + steps);
rows that stopped early are filled with `pad_token_id` after their stop token.

Streaming (a chat, a server) walks the same loop one step at a time: `generate_steps` yields each
step's (B,) ids, `stream_ids` the ids of one prompt; stopping the iteration stops the work.

    >>> for t in stream_ids(model, tok.encode("Once upon"), 50):                         # doctest: +SKIP
    ...     print(tok.decode([t]), end="", flush=True)
"""
from __future__ import annotations

from typing import Callable, Generator, Iterator, Sequence

import torch

from lm.inference.protocol import Cache, GenerationModel
from lm.inference.sampling import SamplingConfig, sample_next, token_counts
from lm.inference.stops import decode_new
from lm.errors import ConfigError

__all__ = ["Cache", "GenerationModel", "generate", "generate_steps", "generate_text", "left_pad", "stream_ids"]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged prompts -> (ids, attention_mask), both (B, T_max), padded on the left."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token")
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, T - len(p):] = 1
    return ids, mask


def _check_left_padded(mask: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ConfigError(f"attention_mask must be (batch, length), got shape {tuple(mask.shape)}")
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ConfigError("attention_mask must be left-padded (0s then 1s in every row) for generation")
    if not mask[:, -1].all():
        raise ConfigError("every row of attention_mask needs at least one real token")


@torch.no_grad()
def generate(model: torch.nn.Module, input_ids: torch.Tensor | Sequence[Sequence[int]], max_new_tokens: int, *,
             attention_mask: torch.Tensor | None = None, sampling: SamplingConfig | None = None,
             stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
             decode: Callable[[list[int]], str] | None = None, pad_token_id: int | None = None,
             on_token: Callable[[torch.Tensor], None] | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, vocab_limit: int | None = None) -> torch.Tensor:
    """Continue each prompt by up to `max_new_tokens` tokens.

    input_ids:       (B, T) tensor (with `attention_mask` if left-padded) or a list of token lists
    sampling:        None = greedy (argmax); a SamplingConfig = sample with its processors
    stop_token_ids:  a row stops after emitting one of these (it is kept in the output)
    stop_strings:    a row stops once its decoded new text contains one of these (needs `decode`)
    pad_token_id:    fills padding; default: the model's pad, else eos, else 0 (the first in the vocabulary)
    on_token:        streaming callback, called after every step with the (B,) new ids
                     (`pad_token_id` for rows that had already stopped)
    use_cache:       False re-runs the whole sequence each step (the slow reference)
    generator:       a torch.Generator for reproducible sampling
    vocab_limit:     ids >= this are never produced (a tokenizer smaller than the model's embedding,
                     e.g. Qwen2 pads 151,665 tokens to 151,936 rows)
    """
    steps = generate_steps(model, input_ids, max_new_tokens, attention_mask=attention_mask, sampling=sampling,
                           stop_token_ids=stop_token_ids, stop_strings=stop_strings, decode=decode,
                           pad_token_id=pad_token_id, use_cache=use_cache, generator=generator,
                           vocab_limit=vocab_limit)
    while True:
        try:
            next_ids = next(steps)
        except StopIteration as done:
            return done.value
        if on_token is not None:
            on_token(next_ids)


@torch.no_grad()
def generate_steps(model: torch.nn.Module, input_ids: torch.Tensor | Sequence[Sequence[int]], max_new_tokens: int,
                   *, attention_mask: torch.Tensor | None = None, sampling: SamplingConfig | None = None,
                   stop_token_ids: Sequence[int] = (), stop_strings: Sequence[str] = (),
                   decode: Callable[[list[int]], str] | None = None, pad_token_id: int | None = None,
                   use_cache: bool = True, generator: torch.Generator | None = None,
                   vocab_limit: int | None = None) -> Generator[torch.Tensor, None, torch.Tensor]:
    """`generate` as an iterator: yields the (B,) new ids of every step, as they are made.

    The arguments are `generate`'s (checked at the first `next`). The consumer may stop at any
    step (`break`, or an exception such as Ctrl-C's KeyboardInterrupt): nothing more is computed.
    Run to the end, the generator returns `generate`'s output (as `StopIteration.value`).
    `generate` is this loop plus its `on_token` callback, so there is one sampling loop.
    """
    cfg = getattr(model, "config", None)
    vocab_size = getattr(cfg, "vocab_size", None) or 2**62
    if pad_token_id is None:   # padding goes through the embedding too, so it must be a valid id
        pad_token_id = next((t for t in (getattr(cfg, "pad_token_id", None), getattr(cfg, "eos_token_id", None))
                             if t is not None and 0 <= t < vocab_size), 0)
    if not 0 <= pad_token_id < vocab_size:
        raise ConfigError(f"pad_token_id {pad_token_id} is outside the vocabulary of {vocab_size}")
    if stop_strings and decode is None:
        raise ConfigError("stop_strings need a `decode` function (token ids -> text)")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if sampling is not None:
        sampling.validate()
    device = next(model.parameters()).device

    if not isinstance(input_ids, torch.Tensor):
        input_ids, attention_mask = left_pad(input_ids, pad_token_id)
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ConfigError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    total = T + max_new_tokens
    n_positions = getattr(cfg, "n_positions", None)   # None: no limit (RNN, RoPE decoder)
    if n_positions is not None and total > n_positions:
        raise ConfigError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the model's "
                          f"n_positions={n_positions}")

    # Output buffer and mask, preallocated for the longest possible result.
    out = torch.full((B, total), pad_token_id, dtype=torch.long, device=device)   # (B, T + N)
    out[:, :T] = input_ids.to(device)
    mask = torch.ones((B, total), dtype=torch.long, device=device)               # (B, T + N)
    if attention_mask is not None:
        _check_left_padded(attention_mask)
        mask[:, :T] = attention_mask.to(device)
    padded = not bool(mask[:, :T].all())
    stop_ids = torch.tensor(sorted(set(stop_token_ids)), dtype=torch.long, device=device)
    penalties = sampling is not None and (sampling.repetition_penalty != 1.0 or sampling.presence_penalty
                                          or sampling.frequency_penalty)
    counts = token_counts(out[:, :T], cfg.vocab_size, mask[:, :T]) if penalties else None  # (B, V)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    cache = model.new_cache(B, total) if use_cache else None

    cur = T
    for step in range(max_new_tokens):
        if cache is not None:   # feed only what the cache has not seen yet: the prompt, then one token
            new = out[:, cache.length:cur]                                        # (B, T) then (B, 1)
            logits = model(new, attention_mask=mask[:, :cur] if padded else None,
                           cache=cache, last_only=True)                        # (B, 1, V)
        else:
            logits = model(out[:, :cur], attention_mask=mask[:, :cur] if padded else None,
                           last_only=True)                                         # (B, 1, V)
        last = logits[:, -1]                                                      # (B, V)
        if vocab_limit is not None and vocab_limit < last.shape[-1]:
            last = last.clone()
            last[:, vocab_limit:] = float("-inf")
        next_ids = sample_next(last, sampling, counts, generator)                 # (B,)
        next_ids = torch.where(finished, torch.full_like(next_ids, pad_token_id), next_ids)
        out[:, cur] = next_ids
        cur += 1
        if counts is not None:
            counts.scatter_add_(1, next_ids[:, None], (~finished).to(counts.dtype)[:, None])
        yield next_ids
        if stop_ids.numel():
            finished |= torch.isin(next_ids, stop_ids)
        if stop_strings:
            for i in range(B):
                if not finished[i] and any(s in decode(out[i, T:cur].tolist()) for s in stop_strings):
                    finished[i] = True
        if bool(finished.all()):
            break
    return out[:, :cur]


def stream_ids(model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int, **kwargs) -> Iterator[int]:
    """The new token ids of one prompt, one at a time as they are generated (`generate_steps` with
    a batch of one; `kwargs` are generate's). A stop token is yielded, then the stream ends."""
    for next_ids in generate_steps(model, [list(prompt)], max_new_tokens, **kwargs):
        yield int(next_ids[0])


def generate_text(model: torch.nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  **kwargs) -> list[str]:
    """Convenience wrapper: encode text prompts, generate (`kwargs` are generate's), and return each
    one's new text up to and including the token that stopped it (`stops.decode_new`, cut="after").

    `tokenizer` needs `encode(str) -> list[int]` and `decode(list[int]) -> str`. For batches,
    eval mode and the other cuts, see `lm.inference.complete` (which builds on this module, so this
    wrapper takes only its cut, from lm/inference/stops.py).
    """
    ids = [tokenizer.encode(p) for p in prompts]
    kwargs.setdefault("decode", tokenizer.decode)
    out = generate(model, ids, max_new_tokens, **kwargs)                         # (B, T + new)
    return decode_new(tokenizer, out[:, max(len(i) for i in ids):].tolist(), kwargs.get("stop_token_ids", ()),
                      kwargs.get("stop_strings", ()), cut="after")
