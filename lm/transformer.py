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
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.utils import ConfigError


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


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim of x (..., T, d) by position-dependent angles.

    Pair i = (x[2i], x[2i+1]) at position m turns by m * theta_i, theta_i = base^(-2i/d).
    """
    T, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ConfigError(f"RoPE needs an even head width, got {d}")
    key = (T, d, base, x.device, x.dtype)
    if key not in _ROPE_CACHE:
        theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float64) / d)    # (d/2,)
        angles = torch.arange(T, device=x.device, dtype=torch.float64)[:, None] * theta      # (T, d/2)
        _ROPE_CACHE[key] = (angles.cos().to(x.dtype), angles.sin().to(x.dtype))
    cos, sin = _ROPE_CACHE[key]
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                                 # (..., T, d/2)
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)  # (..., T, d/2, 2)
    return rotated.flatten(-2)                                                 # (..., T, d)


def attention_mask_matrix(T: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """Boolean (B or 1, 1, T, T) matrix, True where a query may look at a key.

    Causal (key <= query) and, with a padding mask (B, T; 1 = real token), never a padded key.
    A query always sees itself, so a padded query never has an empty softmax row.
    """
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()          # (T, T)
    if attention_mask is None:
        return causal[None, None]                                              # (1, 1, T, T)
    keys = attention_mask.to(torch.bool)[:, None, None, :]                     # (B, 1, 1, T)
    eye = torch.eye(T, dtype=torch.bool, device=device)
    return (causal & keys) | eye                                               # (B, 1, T, T)


class AttentionHead(nn.Module):
    """One head, the book's way: its own W_Q, W_K, W_V of shape (C, d_h)."""

    def __init__(self, emb_dim: int, d_h: int):
        super().__init__()
        self.W_Q = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.W_K = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.W_V = nn.Parameter(torch.zeros(emb_dim, d_h))
        self.d_h = d_h

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        Q, K, V = rope(x @ self.W_Q), rope(x @ self.W_K), x @ self.W_V         # (B, T, d_h)
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
    """The book's literal multi-head attention: a list of heads, concatenated, then W_O."""

    def __init__(self, emb_dim: int, num_heads: int):
        super().__init__()
        d_h = _check_heads(emb_dim, num_heads)
        self.heads = nn.ModuleList([AttentionHead(emb_dim, d_h) for _ in range(num_heads)])
        self.W_O = nn.Parameter(torch.zeros(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask_matrix(x.shape[1], attention_mask, x.device)[:, 0]  # (B or 1, T, T)
        return torch.cat([h(x, mask) for h in self.heads], dim=-1) @ self.W_O  # (B, T, C)


class MultiHeadAttention(nn.Module):
    """Fast causal multi-head attention: fused QKV, all heads at once, scaled_dot_product_attention.

    W_QKV columns are [Q of head 0..H-1 | K of head 0..H-1 | V of head 0..H-1], each head d_h wide.
    """

    def __init__(self, emb_dim: int, num_heads: int):
        super().__init__()
        self.d_h = _check_heads(emb_dim, num_heads)
        self.num_heads = num_heads
        self.W_QKV = nn.Parameter(torch.zeros(emb_dim, 3 * emb_dim))
        self.W_O = nn.Parameter(torch.zeros(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        qkv = (x @ self.W_QKV).view(B, T, 3, self.num_heads, self.d_h)        # (B, T, 3, H, d_h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                         # 3 x (B, H, T, d_h)
        q, k = rope(q), rope(k)
        if attention_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)        # (B, H, T, d_h)
        else:
            mask = attention_mask_matrix(T, attention_mask, x.device)          # (B, 1, T, T)
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

    def __init__(self, emb_dim: int, num_heads: int, attention: str = "fast"):
        super().__init__()
        self.norm1 = RMSNorm(emb_dim)
        if attention == "fast":
            self.attn = MultiHeadAttention(emb_dim, num_heads)
        elif attention == "reference":
            self.attn = ReferenceMultiHeadAttention(emb_dim, num_heads)
        else:
            raise ConfigError(f"attention must be 'fast' or 'reference', got {attention!r}")
        self.norm2 = RMSNorm(emb_dim)
        self.mlp = MLP(emb_dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attention_mask)                       # (B, T, C)
        return x + self.mlp(self.norm2(x))                                     # (B, T, C)


class DecoderLanguageModel(nn.Module):
    """The book's decoder LM: embedding, `num_blocks` decoder blocks, an untied output matrix.

    >>> m = DecoderLanguageModel(vocab_size=100, emb_dim=32, num_heads=4, num_blocks=2)
    >>> m(torch.zeros(2, 5, dtype=torch.long)).shape
    torch.Size([2, 5, 100])
    """

    def __init__(self, vocab_size: int, emb_dim: int = 128, num_heads: int = 8, num_blocks: int = 2,
                 attention: str = "fast", pad_idx: int | None = None):
        super().__init__()
        if vocab_size < 1 or num_blocks < 1:
            raise ConfigError(f"vocab_size and num_blocks must be >= 1, got {vocab_size}, {num_blocks}")
        _check_heads(emb_dim, num_heads)
        self.vocab_size, self.emb_dim, self.num_heads, self.num_blocks = vocab_size, emb_dim, num_heads, num_blocks
        self.attention = attention
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        self.layers = nn.ModuleList([DecoderBlock(emb_dim, num_heads, attention) for _ in range(num_blocks)])
        self.output = nn.Parameter(torch.zeros(emb_dim, vocab_size))
        initialize_weights(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V); attention_mask (B, T), 1 = token, 0 = padding."""
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must have shape (batch, time), got {tuple(input_ids.shape)}")
        x = self.embedding(input_ids)                                          # (B, T, C)
        for layer in self.layers:
            x = layer(x, attention_mask)                                       # (B, T, C)
        return x @ self.output                                                 # (B, T, V)

    def converted(self, attention: str) -> "DecoderLanguageModel":
        """A copy of this model using the other attention formulation, with the same weights."""
        new = DecoderLanguageModel(self.vocab_size, self.emb_dim, self.num_heads, self.num_blocks, attention)
        new.to(self.output.device)
        if attention == self.attention:
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
