"""The KV cache: the keys and values of every attention layer, kept between generation steps.

Without a cache, generating token n re-runs all n earlier positions through the model. Their keys
and values never change (a position only attends to the left), so an attention model stores them
once and a step feeds only the newest token. Chapter 4's decoder, GPT-2 and Qwen2 all use this one
cache (`new_cache(batch, max_len)` of the generation protocol, `lm.inference.protocol`).

The cache advances itself: a forward pass over T new tokens calls `update(layer, k, v)` once per
layer, in order, and the last layer's call moves `length` on by T. Every layer of that pass
therefore sees the same `length` (the positions cached before it), and no model writes it.

    >>> cache = KVCache(n_layer=2, batch=1, n_heads=1, max_len=8, head_dim=4, dtype=torch.float32, device="cpu")
    >>> k = v = torch.ones(1, 1, 3, 4)                                  # (B, H, T=3, D)
    >>> [tuple(cache.update(layer, k, v)[0].shape) for layer in (0, 1)], cache.length
    ([(1, 1, 3, 4), (1, 1, 3, 4)], 3)
"""
from __future__ import annotations

import torch

from lm.errors import ConfigError


class KVCache:
    """Preallocated keys and values of every layer: (n_layer, B, n_heads, max_len, head_dim) each.

    A forward pass with T new tokens writes their k, v at positions [length, length + T) and attends
    over [0, length + T); the last layer's `update` then advances `length`. Nothing is reallocated
    while generating. `n_heads` is the number of key/value heads (fewer than query heads with
    grouped-query attention).
    """

    def __init__(self, n_layer: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (n_layer, batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.n_layer = n_layer
        self.max_len = max_len
        self.length = 0                                             # positions cached so far

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new k, v (B, H, T, D) of `layer`; return all keys and values so far (B, H, L+T, D).

        The last layer's call advances `length` by T: the pass has then cached its T positions.
        """
        L, T = self.length, k.size(2)
        if L + T > self.max_len:
            raise ConfigError(f"KV cache holds {self.max_len} positions; cannot add {T} after {L}")
        self.k[layer, :, :, L:L + T] = k
        self.v[layer, :, :, L:L + T] = v
        if layer == self.n_layer - 1:
            self.length = L + T
        return self.k[layer, :, :, :L + T], self.v[layer, :, :, :L + T]
