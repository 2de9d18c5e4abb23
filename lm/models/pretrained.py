"""What every model family (GPT-2, Qwen2) shares, written once: its config's base, loading and
saving Hugging Face folders, the KV cache's shape, and the two heads.

- `HFConfig`: the base of a family's config dataclass: checked when built, read from and written
  to `config.json` the same way (other keys kept in `extra`, `num_labels` from `id2label`).
- `PretrainedModel`: the base of a family's model classes. From what the family states (its config
  class, body, block-list name, key layout, cache shape; see the class) it gives

      Model.check_pretrained(folder)   everything from_pretrained checks, from the file headers only
      Model.from_pretrained(folder, dtype=None | "auto" | torch dtype, device="cpu")
      model.save_pretrained(folder, max_shard_bytes=None)
      model.new_cache(batch, max_len)  the generation protocol's KV cache (lm/models/cache.py)
      model.num_parameters()

- `CausalLM` (logits through the tied embedding or `lm_head`) and `SequenceClassifier` (a `score`
  layer read at each row's last real token): a family's classes are the head on the family's
  base, `class GPT2(CausalLM, GPT2's base)`.

Loading is checked before a byte is read: config.json refused by name where we do not implement
it; every weight's name and shape from the file headers; a tokenizer in the folder with more ids
than config.json's vocab_size (`lm.checkpoints.hf.check_tokenizer_fits`: such ids would index past
the embedding matrix); and, before a byte is allocated, a config.json whose weights would not fit
in this machine's memory (`config.num_parameters(...)` x the bytes of the dtype they load in;
`check_fits_memory`). `from_pretrained` also refuses weights holding a NaN or an infinity
(`check_finite`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn as nn

from lm.checkpoints.checks import check_finite, check_fits_memory, check_layer_count
from lm.checkpoints.hf import check_tokenizer_fits, load_folder, read_config, save_weights
from lm.errors import CheckpointError, ConfigError
from lm.models.cache import KVCache
from lm.models.fast_linear import Linear, linear
from lm.models.masks import last_token_index
from lm.utils import atomic_write_json

DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None, state: dict[str, torch.Tensor]) -> torch.dtype:
    """None -> float32; "auto" -> the checkpoint's own dtype; a name or a torch dtype as given."""
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        return next(iter(state.values())).dtype
    if isinstance(dtype, str):
        if dtype not in DTYPE_NAMES:
            raise ConfigError(f"dtype must be None, 'auto', {', '.join(map(repr, DTYPE_NAMES))} or a torch dtype, "
                              f"got {dtype!r}")
        return DTYPE_NAMES[dtype]
    return dtype


def load_itemsize(dtype: torch.dtype | str | None) -> int:
    """Bytes per parameter once loaded with `dtype` (see `resolve_dtype`); for "auto", 2 (the
    smallest we read: a lower bound before the file's dtype is known)."""
    return 2 if dtype == "auto" else resolve_dtype(dtype, {}).itemsize


class HFConfig:
    """The base of a family's config dataclass (no fields of its own, so the family's field order,
    and the order of its config.json, stay its own). The dataclass defines `model_type`,
    `validate(source)`, `from_dict(d, source)` and the fields `num_labels` and `extra`."""

    model_type: ClassVar[str]            # config.json's "model_type" of the family ("gpt2", "qwen2")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_json(cls, path: str | os.PathLike):
        """Read a Hugging Face `config.json` (CheckpointError naming the file if it is not this family's)."""
        return cls.from_dict(read_config(path, cls.model_type), str(path))

    def to_dict(self) -> dict:
        """config.json's keys: the file's other keys (`extra`), then every field, and model_type."""
        d = dict(self.extra)
        d.update({k: v for k, v in asdict(self).items() if k != "extra"})
        d["model_type"] = self.model_type
        return d

    @classmethod
    def _from_known_keys(cls, d: dict, source: str):
        """The dataclass from a config.json dict: its fields taken by name, `num_labels` from `id2label`
        when absent, every other key kept in `extra` (written back when saving); a bad value is a
        CheckpointError naming `source`."""
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


class PretrainedModel(nn.Module):
    """A family's body (`transformer` for GPT-2, `model` for Qwen2) with a head, loaded from and saved
    to Hugging Face folders; what every family shares, written once.

    A family states what differs, as class attributes and small hooks:

        config_class            its config dataclass (from_json, to_dict, num_parameters)
        _architecture           config.json's "architectures" entry of this class
        _dtype_key              the key config.json names the weights' dtype by
        _layers_key             the checkpoint's name of the block list ("h", "layers")
        _body, _body_class      the body's attribute name ("transformer", "model"; also its key
                                prefix) and class (built from the config in __init__)
        _embedding              the token embedding's module path (the tied output layer, the heads' width)
        _attention_shape(config) -> (layers, key/value heads, head width): the KV cache's shape
        init_weights()          the family's initialisation of a model trained from scratch
        _from_hf(tensors, path, expected, other_heads)  the file's keys renamed to ours, checked
        _to_hf(state)           our state dict in the file's key layout (or `_to_file_keys()` itself)
    """

    config_class: type
    _architecture: str
    _dtype_key: str
    _layers_key: str
    _body: str
    _body_class: type
    _embedding: str
    _other_heads = ("lm_head.", "score.")    # heads' keys in a file, ignored when loading a class without them
    _head = "none"                           # config.num_parameters(_head): what this class holds (the body)
    _from_hf: Callable[..., dict[str, torch.Tensor]]
    _to_hf: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]

    # ---- the model ----------------------------------------------------------------------------
    def __init__(self, config):
        super().__init__()
        self.config = config
        setattr(self, self._body, self._body_class(config))

    @property
    def body(self) -> nn.Module:
        """The family's body: (input_ids, attention_mask, position_ids, cache) -> final hidden states (B, T, C)."""
        return getattr(self, self._body)

    def input_embedding(self) -> nn.Embedding:
        """The token embedding (V, C): the output layer when tied."""
        return self.get_submodule(self._embedding)

    def _init_unless_meta(self) -> None:
        """`init_weights`, except for a model built on the meta device (shapes only: `state_from`,
        `from_pretrained`), which has no memory to initialise."""
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for `batch` rows of up to `max_len` positions (the generation protocol);
        it holds the key/value heads once each (fewer than the query heads with grouped-query attention)."""
        layers, kv_heads, head_dim = self._attention_shape(self.config)
        p = next(self.parameters())
        return KVCache(layers, batch, kv_heads, max_len, head_dim, p.dtype, p.device)

    # ---- Hugging Face folders: writing, then reading (everything checked before a byte is read) --
    def save_pretrained(self, folder: str | os.PathLike, max_shard_bytes: int | None = None) -> None:
        """Write `config.json` and the weights (one `model.safetensors`, or shards of at most
        `max_shard_bytes` with an index) in the layout the reference library reads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        d = self.config.to_dict()
        d["architectures"] = [self._architecture]
        d[self._dtype_key] = str(next(self.parameters()).dtype).removeprefix("torch.")
        atomic_write_json(folder / "config.json", d)
        save_weights(self._to_file_keys(), folder, max_shard_bytes)

    def _to_file_keys(self) -> dict[str, torch.Tensor]:
        """Our state dict in the folder's key layout (what `save_pretrained` writes)."""
        return self._to_hf(self.state_dict())

    @classmethod
    def read_config(cls, folder: str | os.PathLike):
        """The folder's `config.json` as the family's config (CheckpointError naming the file if it is not one)."""
        return cls.config_class.from_json(Path(folder) / "config.json")

    @classmethod
    def state_from(cls, tensors: dict[str, torch.Tensor], path: Path, config) -> dict[str, torch.Tensor]:
        """A checkpoint's tensors (real or meta) renamed to our keys and checked against `config`'s shapes;
        other heads' weights (e.g. `score.` when loading the LM) are ignored. The layer count is
        checked from the names first: building the shapes of 10**6 layers would take minutes."""
        check_layer_count(tensors, path, cls._attention_shape(config)[0], cls._layers_key)
        with torch.device("meta"):
            model = cls(config)                                   # shapes only: no memory, no init
        expected = {k: v.shape for k, v in model.state_dict().items()}
        return cls._from_hf(tensors, path, expected, cls._other_heads)

    @classmethod
    def _read_checked_config(cls, folder: Path, dtype: torch.dtype | str | None):
        """config.json, and its weights' size checked against this machine's memory."""
        config = cls.read_config(folder)
        n, itemsize = config.num_parameters(cls._head), load_itemsize(dtype)
        check_fits_memory(n * itemsize, folder / "config.json", f"{cls.__name__}'s {n:,} parameters "
                                                                 f"({itemsize} bytes each)")
        return config

    @classmethod
    def check_pretrained(cls, folder: str | os.PathLike):
        """Every check of `from_pretrained` without reading the weights' bytes (milliseconds for a
        124M folder): config.json, each weight's name and shape from the file headers, and the
        tokenizer's ids against vocab_size. Raises CheckpointError; returns the config."""
        config = cls._read_checked_config(Path(folder), "auto")
        check_tokenizer_fits(folder, config.vocab_size)
        cls.state_from(*load_folder(folder, meta=True), config)
        return config

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        device: str | torch.device = "cpu"):
        """config.json + weights (safetensors, sharded safetensors or pytorch_model.bin) -> a model in
        eval mode. `dtype`: None loads float32, "auto" keeps the checkpoint's dtype, or a dtype."""
        folder = Path(folder)
        config = cls._read_checked_config(folder, dtype)
        check_tokenizer_fits(folder, config.vocab_size)
        tensors, path = load_folder(folder)
        state = cls.state_from(tensors, path, config)
        check_finite(state, path)
        dtype = resolve_dtype(dtype, state)
        with torch.device("meta"):
            model = cls(config)                                   # shapes only: no memory, no init
        model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()},
                              strict=True, assign=True)
        return model.eval()


class CausalLM(PretrainedModel):
    """A family's language model: the body's hidden states -> logits over the vocabulary, through the
    token embedding (tied, no parameter of its own, none saved) or a separate `lm_head`.

    `forward` is the generation protocol's (`lm.inference.protocol.GenerationModel`);
    `hidden_states` and `output_weight` let a loss apply the output layer only where it reads (SFT, GRPO).
    """

    _head = "lm"

    def __init__(self, config):
        super().__init__(config)                                   # the family's base: config, body
        width = self.input_embedding().embedding_dim
        self.lm_head = None if config.tie_word_embeddings else Linear(width, config.vocab_size, bias=False)
        self._init_unless_meta()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V); with `last_only` only the last position's (B, 1, V), all generation reads."""
        h = self.hidden_states(input_ids, attention_mask, position_ids, cache)  # (B, T, C)
        if last_only:
            h = h[:, -1:]                                                         # (B, 1, C)
        return linear(h, self.output_weight())                                    # (B, T, V)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, C), before the output layer (GRPO applies it only where it reads)."""
        return self.body(input_ids, attention_mask, position_ids, cache)

    def output_weight(self) -> torch.Tensor:
        """The output layer's weight (V, C): the token embedding's when tied, else `lm_head`'s."""
        return self.input_embedding().weight if self.lm_head is None else self.lm_head.weight


class SequenceClassifier(PretrainedModel):
    """A family's classifier: a linear `score` head (no bias) read at each row's last real token:
    the rightmost mask-1 position, else the rightmost token that is not `pad_token_id`, else the
    last column (`last_token_index`, the Hugging Face convention)."""

    _head = "classifier"

    def __init__(self, config):
        super().__init__(config)                                   # the family's base: config, body
        self.score = Linear(self.input_embedding().embedding_dim, config.num_labels, bias=False)
        self._init_unless_meta()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, num_labels)."""
        h = self.body(input_ids, attention_mask)                                 # (B, T, C)
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id)  # (B,)
        return self.score(h[torch.arange(h.shape[0], device=h.device), last])   # (B, num_labels)
