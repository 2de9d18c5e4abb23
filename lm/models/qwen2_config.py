"""Qwen2's configuration: the fields of a Hugging Face `config.json`, read as transformers reads them.

`Qwen2Config.from_dict` takes either layout (the hub's `rope_theta` / `torch_dtype` at the top, or
transformers 5's `rope_parameters` / `dtype`); a key the file leaves out takes transformers'
default (`TRANSFORMERS_DEFAULTS`), not this dataclass's (Qwen2.5-0.5B's shapes); what the model
does not implement (sliding windows, rope scaling, multimodal RoPE, quantized weights) is refused
by name. The model itself is lm/models/qwen2.py, which re-exports this module's names.

    >>> Qwen2Config().head_size                                  # Qwen2.5-0.5B: 896 / 14
    64
    >>> Qwen2Config.from_dict({"num_attention_heads": 4, "hidden_size": 64, "rope_scaling": {"type": "yarn"}})
    Traceback (most recent call last):
    ...
    lm.errors.CheckpointError: config: rope_scaling: rope_type 'yarn' is not implemented (only 'default', plain RoPE without scaling)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lm.checkpoints.checks import check_bool, check_int, check_label_maps, check_number, check_token_id
from lm.errors import CheckpointError, ConfigError
from lm.models.pretrained import HFConfig
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
class Qwen2Config(HFConfig):
    """Defaults are Qwen2.5-0.5B's shapes (the book's GRPO model); 1.5B: hidden 1536, 28 layers,
    12 heads, intermediate 8960."""
    model_type = "qwen2"                 # config.json's model_type (a class attribute, not a field)

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
        return cls._from_known_keys(d, source)

    def to_dict(self) -> dict:
        """The hub's layout (top-level rope_theta, no head_dim where it is derived), which transformers
        4 and 5 both read."""
        d = super().to_dict()
        if self.head_dim is None:
            del d["head_dim"]
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
