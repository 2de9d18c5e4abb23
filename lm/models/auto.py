"""The model families, one table, and loading any supported folder by config.json's `model_type`.

    >>> model = load_causal_lm("runs/pretrained/gpt2")                               # doctest: +SKIP
    >>> model = load_causal_lm("~/.cache/lm/qwen/Qwen2.5-0.5B-Instruct", dtype="auto")  # doctest: +SKIP
    >>> classifier = load_sequence_classifier("runs/x/emotion_classifier/model")      # doctest: +SKIP
    >>> tok = load_tokenizer("runs/pretrained/gpt2")                                 # doctest: +SKIP
    >>> FAMILIES["qwen2"].lora_targets
    ('q_proj', 'v_proj')

A family is what config.json's `model_type` names (GPT-2, Qwen2). Everything the rest of `lm`
needs to know about one, outside its model file and its tokenizer, is one `ModelFamily` row of
`FAMILIES`: its classes, the tokenizer loader, the attribute holding the decoder that both heads
sit on, PEFT's default LoRA targets, and whether its checkpoints store linear layers as Conv1D.
The pre-flight, the classification head, LoRA's folder format and the stages read this table, so
adding a family touches its model file, its tokenizer and one row here.

Both kinds of model speak the one generation protocol, so what follows (generate, SFT, GRPO) needs
no branch; `context_length(config)` reads either family's context.

Imports: a row pairs a model with its tokenizer loader, so this table reaches down from the models
(layer 2) to `lm.tokenizers` (layer 1). That points down, as every import must; the model files
themselves still know nothing of tokenizers (only this table pairs the two).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lm.checkpoints.hf import read_config
from lm.errors import CheckpointError
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2Config, Qwen2ForSequenceClassification
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import show


@dataclass(frozen=True)
class ModelFamily:
    """One row of the table: what `lm` needs to know about a family outside its model file."""
    model_type: str                  # config.json's "model_type"
    config: type                     # its config dataclass (to_dict() writes model_type)
    causal_lm: type                  # the language model: read_config, state_from, from_pretrained
    classifier: type                 # the sequence classifier: the same decoder with a `score` head
    body: str                        # attribute of both classes holding that decoder (the head moves between them)
    tokenizer: Callable              # folder -> tokenizer with .vocab_size (TokenizerFileError if bad)
    lora_targets: tuple[str, ...]    # PEFT's default LoRA target_modules for the family
    conv1d: bool                     # checkpoints store linear weights as Conv1D (in, out): PEFT's fan_in_fan_out
    bare: type | None = None         # the bare decoder (PEFT's FEATURE_EXTRACTION adapters); None: none here

    @property
    def classes(self) -> tuple[type, ...]:
        """Every model class of the family (an instance of one of them is this family's model)."""
        return tuple(c for c in (self.causal_lm, self.classifier, self.bare) if c is not None)


GPT2_FAMILY = ModelFamily("gpt2", GPT2Config, GPT2, GPT2ForSequenceClassification, body="transformer",
                          tokenizer=GPT2Tokenizer.from_dir, lora_targets=("c_attn",), conv1d=True, bare=GPT2Base)
QWEN2_FAMILY = ModelFamily("qwen2", Qwen2Config, Qwen2, Qwen2ForSequenceClassification, body="model",
                           tokenizer=tokenizer_from_dir, lora_targets=("q_proj", "v_proj"), conv1d=False)

FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (GPT2_FAMILY, QWEN2_FAMILY)}   # model_type -> row
CAUSAL_LM = {kind: f.causal_lm for kind, f in FAMILIES.items()}       # model_type -> language model class
CLASSIFIER = {kind: f.classifier for kind, f in FAMILIES.items()}     # model_type -> sequence classifier class


def model_type(folder: str | os.PathLike) -> str:
    """config.json's `model_type`, checked to be one we implement (CheckpointError otherwise)."""
    path = Path(folder).expanduser() / "config.json"
    kind = read_config(path).get("model_type")
    if not isinstance(kind, str) or kind not in FAMILIES:
        raise CheckpointError(path, f"model_type {show(kind)} is not supported (known: {', '.join(FAMILIES)})")
    return kind


def family(folder: str | os.PathLike) -> ModelFamily:
    """The family of the model saved in `folder` (from config.json's `model_type`)."""
    return FAMILIES[model_type(folder)]


def family_of(model: torch.nn.Module) -> ModelFamily | None:
    """The family a model object belongs to (by its class), None for a model of no family here."""
    return next((f for f in FAMILIES.values() if isinstance(model, f.classes)), None)


def load_causal_lm(folder: str | os.PathLike, dtype: torch.dtype | str | None = None,
                   device: str | torch.device = "cpu") -> torch.nn.Module:
    """The language model saved in `folder` (GPT-2 or Qwen2), in eval mode.

    `dtype`: None loads float32, "auto" keeps the checkpoint's dtype, or a torch dtype.
    """
    folder = Path(folder).expanduser()
    return family(folder).causal_lm.from_pretrained(folder, dtype=dtype, device=device)


def load_sequence_classifier(folder: str | os.PathLike, dtype: torch.dtype | str | None = None,
                             device: str | torch.device = "cpu") -> torch.nn.Module:
    """The sequence classifier saved in `folder` (GPT-2's or Qwen2's, with its `score` head), in
    eval mode; `dtype` as for `load_causal_lm`."""
    folder = Path(folder).expanduser()
    return family(folder).classifier.from_pretrained(folder, dtype=dtype, device=device)


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer of the model saved in `folder`, by its family's loader."""
    folder = Path(folder).expanduser()
    return family(folder).tokenizer(folder)


def context_length(config) -> int | None:
    """The longest sequence a config is made for: GPT-2's `n_positions` (a hard limit: its position
    table), Qwen2's `max_position_embeddings` (RoPE has no table; longer was never trained); None
    for a config with neither."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
