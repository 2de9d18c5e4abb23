"""GPT-2 (chapter 5): the decoder of chapter 4 with the details OpenAI's checkpoints need.

Differences from chapter 4's decoder (`lm/models/transformer.py`), all dictated by the released weights:
learned position embeddings (`wpe`), LayerNorm *before* attention and MLP (pre-LN) plus one final
LayerNorm (`ln_f`), GELU with the tanh approximation ("gelu_new"), one fused q/k/v projection
(`c_attn`), and an output layer that reuses the token embedding matrix (tied LM head).

Module names match the Hugging Face layout (`transformer.h.0.attn.c_attn.weight`, ...), so a
checkpoint maps onto this model by name; the only conversion is that Hugging Face stores the four
projections as `Conv1D` weights of shape (in, out), the transpose of `nn.Linear`'s (out, in).

    >>> model = GPT2.from_pretrained("../shared/fixtures/gpt2_lm_safetensors")   # doctest: +SKIP
    >>> logits = model(torch.tensor([[5, 17, 300]]))                           # doctest: +SKIP
    >>> model.save_pretrained("runs/my_gpt2")                                   # doctest: +SKIP

Classes: `GPT2` (language model, tied head), `GPT2ForSequenceClassification` (a `score` head read
at the last real token, for 5.6), `GPT2Base` (hidden states only); all share `from_pretrained` /
`save_pretrained`. The configuration (`GPT2Config`, the fields of `config.json`) comes first; the
linear layers are `lm.models.fast_linear.Linear` (an `nn.Linear` with a faster CPU inference
kernel). Generation goes through `lm/inference/generate.py` with the protocol every model here
implements (`lm.inference.protocol.GenerationModel`: `forward(input_ids, attention_mask,
position_ids, cache, last_only)` and `new_cache(batch, max_len)`); the KV cache
(`lm/models/cache.py`), the mask builder and the position ids (`lm/models/masks.py`) are the ones
chapter 4's decoder and Qwen2 use. Loading, saving and the cache's shape come from the shared
base `lm.models.pretrained.PretrainedModel`; this file states only what is GPT-2's.

    >>> cfg = GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4)
    >>> cfg.head_dim
    16
    >>> GPT2Config.from_dict({"n_embd": 64, "n_head": 3})
    Traceback (most recent call last):
    ...
    lm.errors.CheckpointError: config: n_embd 64 is not divisible by n_head 3
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.checkpoints.checks import check_bool, check_int, check_label_maps, check_number, check_token_id
from lm.checkpoints.hf import gpt2_from_hf, gpt2_to_hf
from lm.errors import ConfigError
from lm.models.cache import KVCache
from lm.models.fast_linear import Linear
from lm.models.masks import causal_mask, check_mask_and_positions
from lm.models.pretrained import CausalLM, HFConfig, PretrainedModel, SequenceClassifier
from lm.utils import show

ACTIVATIONS = {  # config.json "activation_function" -> our function
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


@dataclass
class GPT2Config(HFConfig):
    model_type = "gpt2"              # config.json's model_type (a class attribute, not a field)

    vocab_size: int = 50257          # tokens in the vocabulary (GPT-2: 50,257 byte-level BPE tokens)
    n_positions: int = 1024          # longest sequence (rows of the position embedding)
    n_embd: int = 768                # model width C
    n_layer: int = 12                # transformer blocks
    n_head: int = 12                 # attention heads; head size = n_embd / n_head
    n_inner: int | None = None       # MLP hidden width; None: 4 * n_embd
    activation_function: str = "gelu_new"   # MLP nonlinearity (see ACTIVATIONS)
    layer_norm_epsilon: float = 1e-5         # LayerNorm eps
    embd_pdrop: float = 0.1          # dropout on token + position embeddings (training only)
    attn_pdrop: float = 0.1          # dropout on attention weights
    resid_pdrop: float = 0.1         # dropout on each block's residual branch
    initializer_range: float = 0.02  # std of the normal init for a model trained from scratch
    scale_attn_weights: bool = True  # divide q.k by sqrt(head size)
    scale_attn_by_inverse_layer_idx: bool = False  # also divide by (layer index + 1)
    tie_word_embeddings: bool = True  # LM head reuses the token embedding matrix
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None  # the classifier head reads the last token that is not this one
    num_labels: int = 2              # classifier head outputs (from id2label when present)
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept for saving

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self, source: str = "GPT2Config") -> None:
        """Each field's type and range (a ConfigError naming the field and the value)."""
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "num_labels"):
            check_int(source, name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ConfigError(f"{source}: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        check_int(source, "n_inner", self.n_inner, none_ok=True)
        if not isinstance(self.activation_function, str) or self.activation_function not in ACTIVATIONS:
            raise ConfigError(f"{source}: activation_function {show(self.activation_function)} is not supported "
                              f"(known: {', '.join(ACTIVATIONS)})")
        check_number(source, "layer_norm_epsilon", self.layer_norm_epsilon, low=0.0, low_open=True)
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            check_number(source, name, getattr(self, name), high=1.0)
        check_number(source, "initializer_range", self.initializer_range)
        for name in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "tie_word_embeddings"):
            check_bool(source, name, getattr(self, name))
        check_token_id(source, "bos_token_id", self.bos_token_id)     # may lie outside a small vocabulary
        check_token_id(source, "eos_token_id", self.eos_token_id)
        check_token_id(source, "pad_token_id", self.pad_token_id, self.vocab_size)   # embedded, so in the vocabulary
        check_label_maps(source, self.extra, self.num_labels)
        if self.extra.get("add_cross_attention"):
            raise ConfigError(f"{source}: add_cross_attention=true (encoder-decoder GPT-2) is not supported")

    def num_parameters(self, head: str = "lm") -> int:
        """The parameter count of the model this config describes, from the shapes alone (exact
        Python integers: nothing is built). `head`: "lm" (the output layer, none when tied),
        "classifier" (a score layer of num_labels rows) or "none" (the bare GPT2Model)."""
        C, L, inner = self.n_embd, self.n_layer, self.n_inner or 4 * self.n_embd
        block = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * inner + inner) + (inner * C + C)
        out = {"lm": 0 if self.tie_word_embeddings else self.vocab_size * C,
               "classifier": self.num_labels * C, "none": 0}[head]
        return (self.vocab_size + self.n_positions) * C + L * block + 2 * C + out

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GPT2Config":
        """Build from a Hugging Face config dict; unknown keys are kept in `extra`."""
        return cls._from_known_keys(d, source)



# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.n_head, self.layer_idx = cfg.n_head, layer_idx
        self.c_attn = Linear(cfg.n_embd, 3 * cfg.n_embd)         # lm.models.fast_linear: nn.Linear, faster CPU inference
        self.c_proj = Linear(cfg.n_embd, cfg.n_embd)
        self.attn_pdrop = cfg.attn_pdrop
        self.resid_drop = nn.Dropout(cfg.resid_pdrop)
        scale = 1.0 / math.sqrt(cfg.head_dim) if cfg.scale_attn_weights else 1.0
        self.scale = scale / (layer_idx + 1) if cfg.scale_attn_by_inverse_layer_idx else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                     # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)           # (B, H, T, D)
        k = k.view(B, T, self.n_head, -1).transpose(1, 2)           # (B, H, T, D)
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)           # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                # (B, H, L+T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
            dropout_p=self.attn_pdrop if self.training else 0.0, scale=self.scale)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)                      # (B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        inner = cfg.n_inner or 4 * cfg.n_embd
        self.c_fc = Linear(cfg.n_embd, inner)
        self.c_proj = Linear(inner, cfg.n_embd)
        self.act = ACTIVATIONS[cfg.activation_function]
        self.drop = nn.Dropout(cfg.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))      # (B, T, C)


class Block(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.attn = Attention(cfg, layer_idx)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, mask, cache):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class Embedding(nn.Embedding):
    """nn.Embedding that skips its random init on the meta device (`from_pretrained` builds the
    model there to learn its shapes): torch's `normal_` on a meta tensor sets nothing and costs
    seconds the first time (it imports a decomposition)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class GPT2Model(nn.Module):
    """Embeddings + blocks + final LayerNorm: returns hidden states (B, T, C)."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.config = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """`attention_mask` (B, past+T): 1 for real tokens, 0 for (left) padding, covering cached
        positions too. `position_ids` (B, T) default to counting real tokens from the mask."""
        T = input_ids.shape[-1]
        past = cache.length if cache is not None else 0
        if past + T > self.config.n_positions:
            raise ConfigError(f"sequence of {past + T} tokens is longer than n_positions={self.config.n_positions}")
        attention_mask, position_ids = check_mask_and_positions(input_ids, attention_mask, position_ids, past)
        mask = causal_mask(attention_mask, past, T, input_ids.device)   # (B or 1, 1, T, past+T) or None
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        for block in self.h:
            x = block(x, mask, cache)                                # (B, T, C); the last advances cache
        return self.ln_f(x)                                          # (B, T, C)


class _Pretrained(PretrainedModel):
    """GPT-2's part of loading and saving (the rest is `PretrainedModel`'s): the body is
    `self.transformer`, a GPT2Model; the classes below add a head."""

    config_class = GPT2Config
    _architecture = "GPT2Model"          # written into config.json "architectures"
    _dtype_key = "dtype"                 # config.json's key for the weights' dtype (transformers 5)
    _layers_key = "h"                    # checkpoint names of the blocks: transformer.h.0., ...
    _body, _body_class, _embedding = "transformer", GPT2Model, "transformer.wte"   # the body; the token embedding
    _prefix = "transformer."             # key prefix of the base model in checkpoint files
    _from_hf = staticmethod(gpt2_from_hf)  # either layout (with or without the prefix), Conv1D transposed

    config: GPT2Config
    transformer: GPT2Model

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_f") or ".ln_f." in name:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    @staticmethod
    def _attention_shape(config: GPT2Config) -> tuple[int, int, int]:
        """(layers, key/value heads, head width): every head has its own keys and values."""
        return config.n_layer, config.n_head, config.head_dim

    def _to_file_keys(self) -> dict[str, torch.Tensor]:
        """Our state dict in the Hugging Face layout: Conv1D weights transposed, tied head dropped
        (and no `transformer.` prefix for the bare GPT2Base)."""
        return gpt2_to_hf(self.state_dict(), keep_prefix=bool(self._prefix))


class GPT2(CausalLM, _Pretrained):
    """GPT-2 language model: hidden states -> logits over the vocabulary (tied to `wte` by default;
    `forward`, `hidden_states`, `output_weight`: lm.models.pretrained.CausalLM)."""

    _architecture = "GPT2LMHeadModel"


class GPT2ForSequenceClassification(SequenceClassifier, _Pretrained):
    """GPT-2 as a classifier (5.6): a linear `score` head (no bias) read at the last real token.

    The last real token is the rightmost one that is not `pad_token_id` (or, given an attention
    mask, the rightmost position with mask 1) -- the Hugging Face convention
    (lm.models.pretrained.SequenceClassifier).
    """

    _architecture = "GPT2ForSequenceClassification"
    _other_heads = ("lm_head.",)


class GPT2Base(_Pretrained):
    """The bare GPT2Model, loadable with from_pretrained (checkpoint keys without `transformer.`)."""

    _prefix = ""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self._init_unless_meta()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None):
        """Last hidden states (B, T, C), after the final LayerNorm."""
        return self.transformer(input_ids, attention_mask, position_ids, cache)
