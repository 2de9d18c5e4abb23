"""The generation protocol: what a model offers so that `generate` can drive it, written once.

Every language model here (chapter 3's RNN, chapter 4's decoder, GPT-2, Qwen2) implements it, and
`lm/inference/generate.py` knows nothing else of a model. It is a `typing.Protocol`: a model does
not inherit from it, it only has these members (`isinstance(model, GenerationModel)` checks that
they are there, not their signatures; tests/inference/test_protocol.py checks those too).

    model.new_cache(batch, max_len) -> cache        empty, `cache.length == 0`
    model(input_ids, attention_mask=None, position_ids=None, cache=None, last_only=False) -> logits

- input_ids (B, T): the tokens the cache has not seen yet (the whole prompt, then one per step);
- attention_mask (B, past+T): 1 = real token, 0 = (left) padding, covering the cached positions
  too; None = no padding;
- position_ids (B, T): None counts each row's real tokens from the mask (past.. without one);
  a model without positions (the RNN) ignores them;
- cache: None (every position computed afresh) or the model's cache, advanced by the call: its
  `length` grows by T (the model's cache does it itself, e.g. `lm.models.cache.KVCache`);
- last_only: False gives logits (B, T, V); True lets the model compute the last position's only,
  (B, 1, V), all a step of generation reads. Callers read `logits[:, -1]`, so both are correct
  answers to last_only=True.

A model is also an `nn.Module` (its `parameters()` tell the device) with a `config` holding
`vocab_size`, and optionally `n_positions` (a length limit), `pad_token_id` and `eos_token_id`.
"""
from __future__ import annotations

from typing import Any, Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class Cache(Protocol):
    """What generation reads of a cache: how many positions it holds (a forward pass advances it
    as it writes, lm/models/cache.py)."""

    length: int


@runtime_checkable
class GenerationModel(Protocol):
    """A language model `generate` can drive (see the module docstring for each argument)."""

    config: Any

    def new_cache(self, batch: int, max_len: int) -> Cache:
        """An empty cache for `batch` rows of up to `max_len` positions."""
        ...

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V), or (B, 1, V) with `last_only`; `cache.length` advances by T."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """The weights (the first one's device is where generation runs)."""
        ...
