"""The decoder-only transformer language model (book, chapter 4).

    ids (B, T) -> embedding (B, T, C) -> num_blocks x DecoderBlock -> x @ output (B, T, V)

    DecoderBlock:  x = x + attention(RMSNorm(x));  x = x + MLP(RMSNorm(x))      (pre-norm residual)

Pieces, in the book's order:
- `RMSNorm`: x / sqrt(mean(x^2) + eps) * scale.
- `rope`: rotary position embedding on interleaved pairs (x0, x1), (x2, x3), ... of each query and
  key; the pair i at position m turns by the angle m * 10000^(-2i/d), so q.k depends only on the
  distance between the two positions.
- Causal multi-head attention, two ways:
  `ReferenceMultiHeadAttention` is the book's literal code (one `AttentionHead` module per head,
  each with its own W_Q, W_K, W_V; concatenate; W_O): readable, slow;
  `MultiHeadAttention` is the fast one (one fused (C, 3C) projection, all heads in one tensor,
  `scaled_dot_product_attention`). Given the same weights they agree to float rounding
  (`MultiHeadAttention.from_reference`).
- `MLP`: C -> 4C -> ReLU -> C, with biases.
- An output matrix of its own (untied from the embedding), as in the book.

Weights are stored in the book's `x @ W` orientation: W has shape (in, out).

Generation (lm/inference/generate.py) drives every model through one protocol, written once as
`lm.inference.protocol.GenerationModel` (`forward(input_ids, attention_mask, position_ids, cache,
last_only)` and `new_cache(batch, max_len)`). For this model the cache is a `KVCache`
(lm/models/cache.py): the keys (with RoPE already applied at their absolute positions) and values
of every block, so a step feeds only the newest token. The mask and position helpers are in
lm/models/masks.py; both modules serve GPT-2 and Qwen2 too (and are still importable from here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.models.cache import KVCache
from lm.models.masks import causal_mask, check_mask_and_positions, last_token_index, positions_from_mask

__all__ = [  # chapter 4's model, then the cache and mask helpers it used to hold (cache.py, masks.py)
    "DecoderConfig", "RMSNorm", "rope", "AttentionHead", "ReferenceMultiHeadAttention", "MultiHeadAttention", "MLP",
    "DecoderBlock", "DecoderLanguageModel", "initialize_weights",
    "KVCache", "causal_mask", "check_mask_and_positions", "last_token_index", "positions_from_mask"]


@dataclass
class DecoderConfig:
    vocab_size: int                 # tokens in the vocabulary (rows of the embedding, columns of the output)
    emb_dim: int = 128              # model width C (the book: 128)
    num_heads: int = 8              # attention heads; head width d_h = emb_dim / num_heads must be even (RoPE)
    num_blocks: int = 2             # decoder blocks (the book: 2)
    attention: str = "fast"         # "fast" (fused, sdpa) or "reference" (the book's per-head modules)
    pad_idx: int | None = None      # embedding row kept at zero, or None
    rope_base: float = 10000.0      # RoPE: pair i turns by position * rope_base^(-2i/d_h)
    norm_eps: float = 1e-8          # RMSNorm epsilon, inside the square root

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.num_blocks < 1:
            raise ConfigError(f"vocab_size and num_blocks must be >= 1, got {self.vocab_size}, {self.num_blocks}")
        _check_heads(self.emb_dim, self.num_heads)
        if self.attention not in ("fast", "reference"):
            raise ConfigError(f"attention must be 'fast' or 'reference', got {self.attention!r}")


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned per-feature scale (no mean subtraction)."""

    def __init__(self, emb_dim: int, eps: float = 1e-8):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + self.eps)   # (..., 1)
        return x / rms * self.scale


_ROPE_CACHE: dict = {}


def _rope_table(n: int, d: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles m * theta_i for positions m < n: two (n, d/2) tables."""
    key = (n, d, base, device, dtype)
    if key not in _ROPE_CACHE:
        theta = base ** (-torch.arange(0, d, 2, device=device, dtype=torch.float64) / d)    # (d/2,)
        angles = torch.arange(n, device=device, dtype=torch.float64)[:, None] * theta      # (n, d/2)
        _ROPE_CACHE[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
    return _ROPE_CACHE[key]


def rope(x: torch.Tensor, positions: torch.Tensor | None = None, base: float = 10000.0) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim of x (..., T, d) by position-dependent angles.

    Pair i = (x[2i], x[2i+1]) at position m turns by m * theta_i, theta_i = base^(-2i/d).
    `positions`: None for 0..T-1, else (B, T) absolute positions (x's first dim is B), as a
    cached step or a left-padded row needs. Both read the same table, so they agree exactly.
    """
    T, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ConfigError(f"RoPE needs an even head width, got {d}")
    if positions is None:
        cos, sin = _rope_table(T, d, base, x.device, x.dtype)                  # (T, d/2)
    else:
        cos, sin = _rope_table(int(positions.max()) + 1, d, base, x.device, x.dtype)
        B = positions.shape[0]
        view = (B,) + (1,) * (x.dim() - 3) + (T, d // 2)
        cos, sin = cos[positions].view(view), sin[positions].view(view)       # (B, [1,] T, d/2)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                                 # (..., T, d/2)
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)  # (..., T, d/2, 2)
    return rotated.flatten(-2)                                                 # (..., T, d)


class AttentionHead(nn.Module):
    """One head, the book's way: its own W_Q, W_K, W_V of shape (C, d_h)."""

    def __init__(self, emb_dim: int, d_h: int, rope_base: float = 10000.0):
        super().__init__()
        self.W_Q = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.W_K = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.W_V = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.d_h, self.rope_base = d_h, rope_base

    def forward(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        Q = rope(x @ self.W_Q, positions, self.rope_base)                      # (B, T, d_h)
        K = rope(x @ self.W_K, positions, self.rope_base)                      # (B, T, d_h)
        V = x @ self.W_V                                                       # (B, T, d_h)
        scores = Q @ K.transpose(-2, -1) / math.sqrt(self.d_h)                 # (B, T, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ V                               # (B, T, d_h)


def _check_heads(emb_dim: int, num_heads: int) -> int:
    if num_heads < 1 or emb_dim % num_heads:
        raise ConfigError(f"num_heads={num_heads} must divide emb_dim={emb_dim}")
    d_h = emb_dim // num_heads
    if d_h % 2:
        raise ConfigError(f"head width emb_dim/num_heads = {emb_dim}/{num_heads} = {d_h} is odd; RoPE rotates pairs")
    return d_h


class ReferenceMultiHeadAttention(nn.Module):
    """The book's literal multi-head attention: a list of heads, concatenated, then W_O.

    No KV cache: it is the readable reference the fast module is tested against.
    """

    def __init__(self, emb_dim: int, num_heads: int, rope_base: float = 10000.0):
        super().__init__()
        d_h = _check_heads(emb_dim, num_heads)
        self.heads = nn.ModuleList([AttentionHead(emb_dim, d_h, rope_base) for _ in range(num_heads)])
        self.W_O = nn.Parameter(torch.zeros(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        if cache is not None:
            raise ConfigError("the reference attention has no KV cache; convert the model to 'fast' to use one")
        T = x.shape[1]
        mask = causal_mask(attention_mask, 0, T, x.device)
        mask = (torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[None] if mask is None
                else mask[:, 0])                                               # (B or 1, T, T)
        return torch.cat([h(x, mask, positions) for h in self.heads], dim=-1) @ self.W_O  # (B, T, C)


class MultiHeadAttention(nn.Module):
    """Fast causal multi-head attention: fused QKV, all heads at once, scaled_dot_product_attention.

    W_QKV columns are [Q of head 0..H-1 | K of head 0..H-1 | V of head 0..H-1], each head d_h wide.
    """

    def __init__(self, emb_dim: int, num_heads: int, rope_base: float = 10000.0):
        super().__init__()
        self.d_h = _check_heads(emb_dim, num_heads)
        self.num_heads, self.rope_base = num_heads, rope_base
        self.W_QKV = nn.Parameter(torch.zeros(emb_dim, 3 * emb_dim))
        self.W_O = nn.Parameter(torch.zeros(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, T, C); attention_mask (B, past+T) covers cached and new positions; positions (B, T)."""
        B, T, C = x.shape
        qkv = (x @ self.W_QKV).view(B, T, 3, self.num_heads, self.d_h)        # (B, T, 3, H, d_h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                         # 3 x (B, H, T, d_h)
        q, k = rope(q, positions, self.rope_base), rope(k, positions, self.rope_base)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)                                   # (B, H, past+T, d_h)
        mask = causal_mask(attention_mask, past, T, x.device)                  # (B or 1, 1, T, past+T)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)       # (B, H, T, d_h)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(B, T, C) @ self.W_O                   # (B, T, C)

    @torch.no_grad()
    def load_reference(self, ref: ReferenceMultiHeadAttention) -> "MultiHeadAttention":
        """Copy a reference module's weights into the fused layout."""
        for part, name in enumerate(("W_Q", "W_K", "W_V")):
            block = torch.cat([getattr(h, name) for h in ref.heads], dim=1)    # (C, C)
            C = block.shape[0]
            self.W_QKV[:, part * C:(part + 1) * C] = block
        self.W_O.copy_(ref.W_O)
        return self


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> ReLU -> C."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.W_1 = nn.Parameter(torch.zeros(emb_dim, 4 * emb_dim))
        self.B_1 = nn.Parameter(torch.zeros(4 * emb_dim))
        self.W_2 = nn.Parameter(torch.zeros(4 * emb_dim, emb_dim))
        self.B_2 = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_1 + self.B_1) @ self.W_2 + self.B_2       # (B, T, C)


class DecoderBlock(nn.Module):
    """Pre-norm residual block: attention then MLP, each on an RMS-normalised input."""

    def __init__(self, cfg: DecoderConfig, layer: int = 0):
        super().__init__()
        self.layer = layer
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        attention = MultiHeadAttention if cfg.attention == "fast" else ReferenceMultiHeadAttention
        self.attn = attention(cfg.emb_dim, cfg.num_heads, cfg.rope_base)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.mlp = MLP(cfg.emb_dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attention_mask, positions, cache, self.layer)  # (B, T, C)
        return x + self.mlp(self.norm2(x))                                     # (B, T, C)


class DecoderLanguageModel(nn.Module):
    """The book's decoder LM: embedding, `num_blocks` decoder blocks, an untied output matrix.

    >>> m = DecoderLanguageModel(DecoderConfig(vocab_size=100, emb_dim=32, num_heads=4, num_blocks=2))
    >>> m(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 100])
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.emb_dim, padding_idx=config.pad_idx)
        self.layers = nn.ModuleList([DecoderBlock(config, i) for i in range(config.num_blocks)])
        self.output = nn.Parameter(torch.zeros(config.emb_dim, config.vocab_size))
        initialize_weights(self)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for `batch` rows of up to `max_len` positions (the generation protocol)."""
        c, p = self.config, self.output
        return KVCache(c.num_blocks, batch, c.num_heads, max_len, c.emb_dim // c.num_heads, p.dtype, p.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V) ((B, 1, V) with `last_only`): the generation
        protocol's forward (`lm.inference.protocol.GenerationModel`); `cache` advances by T.

        attention_mask (B, past+T): 1 = token, 0 = padding, covering cached positions too.
        position_ids (B, T): default 0.. counted from the mask's real tokens (or past..past+T-1).
        """
        past = cache.length if cache is not None else 0
        attention_mask, position_ids = check_mask_and_positions(input_ids, attention_mask, position_ids, past)
        x = self.embedding(input_ids)                                          # (B, T, C)
        for layer in self.layers:
            x = layer(x, attention_mask, position_ids, cache)                  # (B, T, C); the last advances cache
        if last_only:
            x = x[:, -1:]                                                      # (B, 1, C)
        return x @ self.output                                                 # (B, T, V)

    def converted(self, attention: str) -> "DecoderLanguageModel":
        """A copy of this model using the other attention formulation, with the same weights."""
        cfg = DecoderConfig(**{**self.config.__dict__, "attention": attention})
        new = DecoderLanguageModel(cfg)
        new.to(self.output.device)
        if attention == self.config.attention:
            new.load_state_dict(self.state_dict())
            return new
        if attention == "reference":
            raise ConfigError("conversion fast -> reference is not needed here; build the reference and convert it")
        with torch.no_grad():
            new.embedding.weight.copy_(self.embedding.weight)
            new.output.copy_(self.output)
            for a, b in zip(self.layers, new.layers):
                for part in ("norm1", "norm2", "mlp"):
                    getattr(b, part).load_state_dict(getattr(a, part).state_dict())
                b.attn.load_reference(a.attn)
        return new


@torch.no_grad()
def initialize_weights(model: nn.Module) -> None:
    """As the book: Xavier-uniform matrices (each head's W_Q/W_K/W_V as its own (C, d_h) matrix,
    also inside the fused W_QKV), zero biases, unit RMSNorm scales."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            d = module.d_h
            for j in range(0, module.W_QKV.shape[1], d):
                nn.init.xavier_uniform_(module.W_QKV[:, j:j + d])
            nn.init.xavier_uniform_(module.W_O)
            continue
        for name, p in module.named_parameters(recurse=False):
            if name == "scale":
                nn.init.ones_(p)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
