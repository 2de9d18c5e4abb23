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
  (tests/test_qwen2.py checks `rope_half` against `transformer.rope`), base 1,000,000;
- a final RMSNorm, and an output layer tied to the embedding (0.5B, 1.5B) or a separate `lm_head`.

Module names follow the Hugging Face layout (`model.layers.0.self_attn.q_proj.weight`, ...), so a
checkpoint maps onto the model by name; only RMSNorm's `weight` is our `scale`
(lm/checkpoints/hf.py: `qwen2_from_hf`).

    >>> model = Qwen2.from_pretrained("../shared/fixtures/qwen2_lm_tied")      # doctest: +SKIP
    >>> model(torch.tensor([[45, 271, 284]])).shape                            # doctest: +SKIP
    torch.Size([1, 3, 768])

Classes: `Qwen2` (causal LM), `Qwen2ForSequenceClassification` (a `score` head read at each row's
last real token, as GPT-2's); both load and save Hugging Face folders.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lm.checkpoints.checks import check_bool, check_int, check_label_maps, check_number, check_token_id
from lm.checkpoints.hf import qwen2_from_hf, qwen2_to_hf, read_config
from lm.errors import CheckpointError, ConfigError
from lm.models.cache import KVCache
from lm.models.fast_linear import Linear
from lm.models import lean_ops
from lm.models.lean_ops import rms_norm, swiglu_down
from lm.models.masks import causal_mask, check_mask_and_positions
from lm.models.pretrained import CausalLM, PretrainedModel, SequenceClassifier
from lm.models.transformer import RMSNorm
from lm.utils import show

ROPE_KEYS = ("rope_theta", "rope_type", "type")   # what rope_parameters / rope_scaling may hold
# What transformers' Qwen2Config (v5, a @strict dataclass) takes for a key config.json leaves out;
# a config.json is read with these, not with our dataclass defaults (Qwen2.5-0.5B's shapes), so a
# folder loads as transformers loads it: no tie_word_embeddings means an untied `lm_head`, no
# num_key_value_heads means 32 (null: as many as num_attention_heads), no bos/eos ids.
TRANSFORMERS_DEFAULTS = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768,
                             rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False, attention_dropout=0.0,
                             initializer_range=0.02, bos_token_id=None, eos_token_id=None, pad_token_id=None)


@dataclass
class Qwen2Config:
    """Defaults are Qwen2.5-0.5B's shapes (the book's GRPO model); 1.5B: hidden 1536, 28 layers,
    12 heads, intermediate 8960."""
    vocab_size: int = 151936             # rows of the embedding (151,665 tokens padded to 151,936)
    hidden_size: int = 896               # model width C
    intermediate_size: int = 4864        # MLP width (gate and up projections)
    num_hidden_layers: int = 24          # decoder blocks
    num_attention_heads: int = 14        # query heads
    num_key_value_heads: int = 2         # key/value heads, each shared by heads/kv_heads query heads
    head_dim: int | None = None          # width of one head; None: hidden_size / num_attention_heads
    max_position_embeddings: int = 32768  # context the model was trained for (not enforced: RoPE has no table)
    rope_theta: float = 1_000_000.0      # RoPE base: dimension pair i turns by position * theta^(-2i/d)
    rms_norm_eps: float = 1e-6           # RMSNorm epsilon, inside the square root
    hidden_act: str = "silu"             # MLP gate nonlinearity (only silu is implemented)
    tie_word_embeddings: bool = True     # output layer = the embedding matrix (0.5B, 1.5B: yes)
    attention_dropout: float = 0.0       # dropout on attention weights (training only)
    initializer_range: float = 0.02      # std of the normal init for a model trained from scratch
    bos_token_id: int | None = 151643    # <|endoftext|>
    eos_token_id: int | None = 151645    # <|im_end|> for the Instruct models (a list in config.json: the first)
    pad_token_id: int | None = None      # the classifier head reads the last token that is not this one
    num_labels: int = 2                  # classifier head outputs (from id2label when present)
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept for saving

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def validate(self, source: str = "Qwen2Config") -> None:
        """Each field's type and range (a ConfigError naming the field and the value)."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings", "num_labels"):
            check_int(source, name, getattr(self, name))
        check_int(source, "head_dim", self.head_dim, none_ok=True)
        check_number(source, "rope_theta", self.rope_theta, low=0.0, low_open=True)
        check_number(source, "rms_norm_eps", self.rms_norm_eps, low=0.0, low_open=True)   # -1: NaN logits
        check_number(source, "attention_dropout", self.attention_dropout, high=1.0)
        check_number(source, "initializer_range", self.initializer_range)
        check_bool(source, "tie_word_embeddings", self.tie_word_embeddings)
        check_token_id(source, "bos_token_id", self.bos_token_id)
        check_token_id(source, "eos_token_id", self.eos_token_id)
        check_token_id(source, "pad_token_id", self.pad_token_id, self.vocab_size)   # embedded, so in the vocabulary
        check_label_maps(source, self.extra, self.num_labels)
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{source}: hidden_size {self.hidden_size} is not divisible by "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"{source}: num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_size % 2 or self.head_size <= 0:
            raise ConfigError(f"{source}: head width {self.head_size} must be even (RoPE rotates pairs)")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ("silu", "swish"):
            raise ConfigError(f"{source}: hidden_act {show(self.hidden_act)} is not supported (only silu)")

    def num_parameters(self, head: str = "lm") -> int:
        """The parameter count of the model this config describes, from the shapes alone (exact
        Python integers: nothing is built). `head`: "lm" (the output layer, none when tied),
        "classifier" (a score layer of num_labels rows) or "none" (the bare Qwen2Model)."""
        C, D, L = self.hidden_size, self.head_size, self.num_hidden_layers
        H, KV, inner = self.num_attention_heads, self.num_key_value_heads, self.intermediate_size
        attention = C * H * D + H * D + 2 * (C * KV * D + KV * D) + H * D * C   # q (+bias), k, v (+bias), o
        block = attention + 3 * C * inner + 2 * C                               # + SwiGLU + two norms
        out = {"lm": 0 if self.tie_word_embeddings else self.vocab_size * C,
               "classifier": self.num_labels * C, "none": 0}[head]
        return self.vocab_size * C + L * block + C + out

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Qwen2Config":
        """Build from a Hugging Face config dict, either layout: `rope_theta` / `torch_dtype` at the top
        (the hub's files) or `rope_parameters` / `dtype` (transformers 5). Refuses, naming the key,
        what this model does not implement: sliding-window attention in use, rope scaling, other
        activations, multimodal RoPE, quantized weights. A key the dict lacks takes transformers'
        default (TRANSFORMERS_DEFAULTS), not this dataclass's."""
        d = {**TRANSFORMERS_DEFAULTS, **d}
        if d["num_key_value_heads"] is None:                    # transformers: null -> one per query head
            d["num_key_value_heads"] = d["num_attention_heads"]
        for key, value, why in (("use_sliding_window", True, "sliding-window attention"),
                                ("use_mrope", True, "multimodal RoPE (Qwen2-VL)")):
            if key in d and not isinstance(d[key], bool):
                raise CheckpointError(source, f"{key} must be true or false, got {show(d[key])}")
            if d.get(key) == value:
                raise CheckpointError(source, f"{key}={value}: {why} is not implemented")
        if "quantization_config" in d:
            raise CheckpointError(source, "quantization_config: quantized weights are not supported")
        layer_types = d.get("layer_types")
        if layer_types is not None:
            if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
                raise CheckpointError(source, f"layer_types must be null or a list of strings, got {show(layer_types)}")
            if any(t != "full_attention" for t in layer_types):
                raise CheckpointError(source, f"layer_types {show(sorted(set(layer_types)))}: only full_attention "
                                              "is implemented (no sliding-window layers)")
            if len(layer_types) != d["num_hidden_layers"]:
                raise CheckpointError(source, f"layer_types lists {len(layer_types)} layers but num_hidden_layers "
                                              f"is {show(d['num_hidden_layers'])}")
        d["rope_theta"] = _rope_theta(d, source)
        for key in ("rope_parameters", "rope_scaling", "dtype", "torch_dtype"):
            d.pop(key, None)                                    # read above / rewritten when saving
        if isinstance(d.get("eos_token_id"), list):             # [im_end, endoftext]: the first one stops
            for n, i in enumerate(d["eos_token_id"]):
                try:
                    check_token_id(source, f"eos_token_id[{n}]", i)
                except ConfigError as e:
                    raise CheckpointError(source, str(e).split(": ", 1)[-1]) from None
            d["eos_token_id"] = d["eos_token_id"][0] if d["eos_token_id"] else None
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "num_labels" not in kwargs and isinstance(d.get("id2label"), dict) and d["id2label"]:
            kwargs["num_labels"] = len(d["id2label"])
        extra = {k: v for k, v in d.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except ConfigError as e:
            raise CheckpointError(source, str(e).split(": ", 1)[-1]) from None
        except TypeError as e:
            raise CheckpointError(source, f"bad config: {e}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Qwen2Config":
        """Read a Hugging Face `config.json` (CheckpointError naming the file if it is not Qwen2's)."""
        return cls.from_dict(read_config(path, "qwen2"), str(path))

    def to_dict(self) -> dict:
        """The hub's layout (top-level rope_theta), which transformers 4 and 5 both read."""
        d = dict(self.extra)
        d.update({k: v for k, v in asdict(self).items() if k != "extra" and not (k == "head_dim" and v is None)})
        d["model_type"] = "qwen2"
        d["rope_scaling"] = None
        return d


def _rope_theta(d: dict, source: str) -> float:
    """rope_theta from either layout; any rope type but the default one is refused. Absent from
    both: transformers' default 10000; given as null: refused (it is no base)."""
    theta = d.get("rope_theta")
    if "rope_theta" in d and theta is None:
        raise CheckpointError(source, "rope_theta must be a positive number, got None")
    for key in ("rope_parameters", "rope_scaling"):
        params = d.get(key)
        if params is None:
            continue
        if not isinstance(params, dict):
            raise CheckpointError(source, f"{key} must be an object or null, got {show(params)}")
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise CheckpointError(source, f"{key}: rope_type {show(kind)} is not implemented (only 'default', "
                                          "plain RoPE without scaling)")
        unknown = sorted(set(params) - set(ROPE_KEYS))
        if unknown:
            raise CheckpointError(source, f"{key}: {', '.join(unknown)} not implemented")
        if "rope_theta" in params:
            if params["rope_theta"] is None:
                raise CheckpointError(source, f"{key}.rope_theta must be a positive number, got None")
            if theta is not None and theta != params["rope_theta"]:
                raise CheckpointError(source, f"rope_theta {show(theta)} and {key}.rope_theta "
                                              f"{show(params['rope_theta'])} disagree")
            theta = params["rope_theta"]
    return 10000.0 if theta is None else theta           # transformers' default when absent


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
    _body, _embedding = "model", "model.embed_tokens"     # the body set in __init__; the token embedding

    config: Qwen2Config
    model: Qwen2Model

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config)

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

    def _to_file_keys(self) -> dict[str, torch.Tensor]:
        """Our state dict in the Hugging Face layout (RMSNorm's `scale` is the file's `weight`)."""
        return qwen2_to_hf(self.state_dict())

    @classmethod
    def _from_file_keys(cls, tensors: dict[str, torch.Tensor], path: Path,
                        expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        """The file's keys (with or without `model.`) renamed to ours, checked against `expected`."""
        return qwen2_from_hf(tensors, path, expected, cls._other_heads)


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
