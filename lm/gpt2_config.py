"""The configuration of a GPT-2 model: the fields of a Hugging Face `config.json`.

`GPT2Config.from_json(folder / "config.json")` reads the file a checkpoint folder carries (unknown
keys are kept in `extra` and written back by `to_dict`), checks every field a model needs, and
refuses what this model does not implement (cross-attention, unknown activations) by name.

    >>> cfg = GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4)
    >>> cfg.head_dim
    16
    >>> GPT2Config.from_dict({"n_embd": 64, "n_head": 3})
    Traceback (most recent call last):
    ...
    lm.checkpoint.CheckpointError: config: n_embd 64 is not divisible by n_head 3
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch.nn.functional as F

from lm.checkpoint import CheckpointError
from lm.utils import ConfigError

ACTIVATIONS = {  # config.json "activation_function" -> our function
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


@dataclass
class GPT2Config:
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

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self, source: str = "GPT2Config") -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "num_labels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{source}: {name} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"{source}: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"{source}: n_inner must be a positive integer or null, got {self.n_inner!r}")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(f"{source}: activation_function {self.activation_function!r} is not supported "
                              f"(known: {', '.join(ACTIVATIONS)})")
        if self.extra.get("add_cross_attention"):
            raise ConfigError(f"{source}: add_cross_attention=true (encoder-decoder GPT-2) is not supported")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GPT2Config":
        """Build from a Hugging Face config dict; unknown keys are kept in `extra`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "num_labels" not in kwargs and isinstance(d.get("id2label"), dict) and d["id2label"]:
            kwargs["num_labels"] = len(d["id2label"])
        extra = {k: v for k, v in d.items() if k not in known}
        try:
            cfg = cls(**kwargs, extra=extra)
        except ConfigError as e:
            raise CheckpointError(source, str(e).split(": ", 1)[-1]) from None
        except TypeError as e:
            raise CheckpointError(source, f"bad config: {e}") from None
        return cfg

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "GPT2Config":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(path, "config.json is missing") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(path, f"cannot read config: {e}") from None
        if not isinstance(d, dict):
            raise CheckpointError(path, "config is not a JSON object")
        if d.get("model_type", "gpt2") != "gpt2":
            raise CheckpointError(path, f"model_type is {d['model_type']!r}, not 'gpt2'")
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({k: v for k, v in asdict(self).items() if k != "extra"})
        d["model_type"] = "gpt2"
        return d
