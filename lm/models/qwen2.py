"""Qwen2 / Qwen2.5 (the book's GRPO models): chapter 4's decoder grown up, loadable from the hub.

    ids (B, T) -> embed_tokens (B, T, C) -> num_hidden_layers x Qwen2Block -> RMSNorm -> lm_head (B, T, V)

    Qwen2Block:  x = x + attention(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))       (pre-norm, as chapter 4)

What is the same as `lm/models/transformer.py` (chapter 4): pre-norm residual blocks, RMSNorm
(`RMSNorm` is reused; Qwen computes it in float32 and rounds back to the model's dtype before the
scale, so bf16 models match the reference library), rotary position embeddings, causal attention
with the shared mask helpers (`lm/models/masks.py`) and KV cache (`lm/models/cache.py`), the
generation protocol (`lm.inference.protocol.GenerationModel`), loading and saving from
`lm.models.pretrained.PretrainedModel`. What differs, all dictated by the released weights:
- grouped-query attention: `num_key_value_heads` (2 for Qwen2.5-0.5B) key/value heads, each shared
  by a group of `num_attention_heads / num_key_value_heads` query heads (14 / 2 = 7). The KV cache
  stores the 2 heads once, not repeated: 7x less cache memory than multi-head attention;
- biases on the q/k/v projections only (none on the output projection or the MLP);
- an MLP with a gate ("SwiGLU"): down(silu(gate(x)) * up(x)), intermediate width 4864 for 0.5B;
- RoPE on rotated *halves* (dimension i turns with i + d/2) instead of chapter 4's interleaved pairs
  (2i, 2i+1): the same rotation after a fixed permutation of each head's dimensions
  (tests/models/test_qwen2.py checks `rope_half` against `transformer.rope`), base 1,000,000;
- a final RMSNorm, and an output layer tied to the embedding (0.5B, 1.5B) or a separate `lm_head`.

Module names follow the Hugging Face layout (`model.layers.0.self_attn.q_proj.weight`, ...), so a
checkpoint maps onto the model by name; only RMSNorm's `weight` is our `scale`
(lm/checkpoints/hf.py: `qwen2_from_hf`).

    >>> model = Qwen2.from_pretrained("../shared/fixtures/qwen2_lm_tied")      # doctest: +SKIP
    >>> model(torch.tensor([[45, 271, 284]])).shape                            # doctest: +SKIP
    torch.Size([1, 3, 768])

Classes: `Qwen2` (causal LM), `Qwen2ForSequenceClassification` (a `score` head read at each row's
last real token, as GPT-2's); both load and save Hugging Face folders. Their configuration,
`Qwen2Config` (config.json read as transformers reads it), is in lm/models/qwen2_config.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lm.checkpoints.hf import qwen2_from_hf, qwen2_to_hf
from lm.models.cache import KVCache
from lm.models.fast_linear import Linear
from lm.models import lean_ops
from lm.models.lean_ops import rms_norm, swiglu_down
from lm.models.masks import causal_mask, check_mask_and_positions
from lm.models.pretrained import CausalLM, PretrainedModel, SequenceClassifier
from lm.models.qwen2_config import ROPE_KEYS, TRANSFORMERS_DEFAULTS, Qwen2Config
from lm.models.transformer import RMSNorm

__all__ = ["ROPE_KEYS", "TRANSFORMERS_DEFAULTS", "Qwen2Config",   # the configuration (qwen2_config.py), then the model
           "Qwen2RMSNorm", "rope_cos_sin", "rope_half", "Qwen2Attention", "Qwen2MLP", "Qwen2Block", "Qwen2Model",
           "Qwen2", "Qwen2ForSequenceClassification", "attention_reference"]

# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------

class Qwen2RMSNorm(RMSNorm):
    """Chapter 4's RMSNorm (x / sqrt(mean(x^2) + eps) * scale), computed in float32 and rounded back
    to the input's dtype *before* the scale, as Qwen's reference code does (it matters in bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if lean_ops.ENABLED and torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad):
            return rms_norm(x, self.scale, self.eps)                           # the same, keeping less (lean_ops)
        h = x.float()                                                          # (..., C)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)        # (..., C)
        return self.scale * h.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, d) for positions (B, T): angle of dimension i (and i + d/2) is
    position * theta^(-2i/d). Computed in float32 as the reference library does, then cast."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))  # (d/2,)
    angles = positions.float()[..., None] * inv_freq                          # (B, T, d/2)
    angles = torch.cat((angles, angles), dim=-1)[:, None]                     # (B, 1, T, d)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + d/2]) of x (B, H, T, d) by the angles in cos/sin (B, 1, T, d)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)              # (B, H, T, d)
    return x * cos + rotated * sin


class Qwen2Attention(nn.Module):
    """Grouped-query causal attention: H query heads, KV key/value heads (H a multiple of KV)."""

    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        D, self.layer_idx = cfg.head_size, layer_idx
        self.n_head, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.q_proj = Linear(cfg.hidden_size, self.n_head * D, bias=True)
        self.k_proj = Linear(cfg.hidden_size, self.n_kv * D, bias=True)
        self.v_proj = Linear(cfg.hidden_size, self.n_kv * D, bias=True)
        self.o_proj = Linear(self.n_head * D, cfg.hidden_size, bias=False)
        self.dropout = cfg.attention_dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, -1).transpose(1, 2)       # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv, -1).transpose(1, 2)         # (B, KV, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv, -1).transpose(1, 2)         # (B, KV, T, D)
        q, k = rope_half(q, cos, sin), rope_half(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                         # (B, KV, L+T, D), stored once
        # enable_gqa: query head h reads key/value head h // (H / KV), without copying them H/KV times
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv != self.n_head)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))               # (B, T, C)


class Qwen2MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)                          # (B, T, I)
        if (lean_ops.ENABLED and torch.is_grad_enabled() and type(self.down_proj) is Linear
                and self.down_proj.bias is None):
            return swiglu_down(gate, up, self.down_proj.weight)                # the same, keeping less (lean_ops)
        return self.down_proj(F.silu(gate) * up)                               # (B, T, C)


class Qwen2Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Qwen2Attention(cfg, layer_idx)
        self.post_attention_layernorm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Qwen2MLP(cfg)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)  # (B, T, C)
        return x + self.mlp(self.post_attention_layernorm(x))                   # (B, T, C)


class Qwen2Model(nn.Module):
    """Embedding + blocks + final RMSNorm: hidden states (B, T, C).

    `gradient_checkpointing = True`: while training, keep only each block's input and recompute the
    block in the backward pass (about a third more compute for a fraction of the activation
    memory; bench/grpo_memory.py), as the book's 1.5B GRPO run does.
    """

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.gradient_checkpointing = False
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Qwen2Block(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """`attention_mask` (B, past+T): 1 = token, 0 = (left) padding, covering cached positions too.
        `position_ids` (B, T) default to counting real tokens from the mask (past.. with a cache)."""
        T = input_ids.shape[-1]
        past = cache.length if cache is not None else 0
        attention_mask, position_ids = check_mask_and_positions(input_ids, attention_mask, position_ids, past)
        x = self.embed_tokens(input_ids)                                     # (B, T, C)
        cos, sin = rope_cos_sin(position_ids, self.config.head_size, self.config.rope_theta, x.dtype)
        mask = causal_mask(attention_mask, past, T, input_ids.device)      # (B or 1, 1, T, past+T) or None
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, cos, sin, mask, None, use_reentrant=False)  # (B, T, C)
            else:
                x = layer(x, cos, sin, mask, cache)                   # (B, T, C); the last advances cache
        return self.norm(x)                                                  # (B, T, C)


# --------------------------------------------------------------------------------------------
# Loading and saving, shared by the LM and the classifier
# --------------------------------------------------------------------------------------------

class _Qwen2Pretrained(PretrainedModel):
    """Qwen2's part of loading and saving (the rest is `PretrainedModel`'s): the body is
    `self.model`, a Qwen2Model; the classes below add a head."""

    config_class = Qwen2Config
    _architecture = "Qwen2Model"
    _dtype_key = "torch_dtype"                # config.json's key for the weights' dtype (the hub's files)
    _layers_key = "layers"                    # checkpoint names of the blocks: model.layers.0., ...
    _body, _body_class, _embedding = "model", Qwen2Model, "model.embed_tokens"   # the body; the token embedding
    _from_hf, _to_hf = staticmethod(qwen2_from_hf), staticmethod(qwen2_to_hf)   # RMSNorm's `scale` is `weight` there

    config: Qwen2Config
    model: Qwen2Model

    @torch.no_grad()
    def init_weights(self) -> None:
        """The reference library's init: N(0, initializer_range) matrices, zero biases, unit norms."""
        for name, p in self.named_parameters():
            if name.endswith(".scale"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, self.config.initializer_range)

    @staticmethod
    def _attention_shape(config: Qwen2Config) -> tuple[int, int, int]:
        """(layers, key/value heads, head width): the cache holds num_key_value_heads heads per layer."""
        return config.num_hidden_layers, config.num_key_value_heads, config.head_size


class Qwen2(CausalLM, _Qwen2Pretrained):
    """Qwen2 causal language model: hidden states -> logits (tied to `embed_tokens` or `lm_head`;
    `forward`, `hidden_states`, `output_weight`: lm.models.pretrained.CausalLM)."""

    _architecture = "Qwen2ForCausalLM"


class Qwen2ForSequenceClassification(SequenceClassifier, _Qwen2Pretrained):
    """Qwen2 as a classifier: a linear `score` head (no bias) read at each row's last real token
    (the rightmost mask-1 position; without a mask, the rightmost token that is not `pad_token_id`;
    lm.models.pretrained.SequenceClassifier)."""

    _architecture = "Qwen2ForSequenceClassification"


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain causal multi-head attention after repeating each key/value head H/KV times: what
    grouped-query attention means, written out (q (B, H, T, D), k and v (B, KV, T, D))."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, T, D)
    T = q.shape[2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v  # (B, H, T, D)
