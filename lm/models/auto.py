"""Load any supported causal language model folder, the family read from config.json's `model_type`.

    >>> model = load_causal_lm("runs/pretrained/gpt2")                               # doctest: +SKIP
    >>> model = load_causal_lm("~/.cache/lm/qwen/Qwen2.5-0.5B-Instruct", dtype="auto")  # doctest: +SKIP
    >>> classifier = load_sequence_classifier("runs/x/emotion_classifier/model")      # doctest: +SKIP

The tokenizer of the same folder: `lm.tokenizers.hf_json.tokenizer_from_dir(folder)`. Both kinds
of model speak the one generation protocol, so what follows (generate, SFT, GRPO) needs no branch;
`context_length(config)` reads either family's context.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lm.checkpoints.hf import read_config
from lm.errors import CheckpointError
from lm.models.gpt2 import GPT2, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2ForSequenceClassification
from lm.utils import show

CAUSAL_LM = {"gpt2": GPT2, "qwen2": Qwen2}                      # model_type -> language model class
CLASSIFIER = {"gpt2": GPT2ForSequenceClassification, "qwen2": Qwen2ForSequenceClassification}


def model_type(folder: str | os.PathLike) -> str:
    """config.json's `model_type`, checked to be one we implement (CheckpointError otherwise)."""
    path = Path(folder).expanduser() / "config.json"
    kind = read_config(path).get("model_type")
    if not isinstance(kind, str) or kind not in CAUSAL_LM:
        raise CheckpointError(path, f"model_type {show(kind)} is not supported (known: {', '.join(CAUSAL_LM)})")
    return kind


def load_causal_lm(folder: str | os.PathLike, dtype: torch.dtype | str | None = None,
                   device: str | torch.device = "cpu") -> torch.nn.Module:
    """The language model saved in `folder` (GPT-2 or Qwen2), in eval mode.

    `dtype`: None loads float32, "auto" keeps the checkpoint's dtype, or a torch dtype.
    """
    folder = Path(folder).expanduser()
    return CAUSAL_LM[model_type(folder)].from_pretrained(folder, dtype=dtype, device=device)


def load_sequence_classifier(folder: str | os.PathLike, dtype: torch.dtype | str | None = None,
                             device: str | torch.device = "cpu") -> torch.nn.Module:
    """The sequence classifier saved in `folder` (GPT-2's or Qwen2's, with its `score` head), in
    eval mode; `dtype` as for `load_causal_lm`."""
    folder = Path(folder).expanduser()
    return CLASSIFIER[model_type(folder)].from_pretrained(folder, dtype=dtype, device=device)


def context_length(config) -> int | None:
    """The longest sequence a config is made for: GPT-2's `n_positions` (a hard limit: its position
    table), Qwen2's `max_position_embeddings` (RoPE has no table; longer was never trained); None
    for a config with neither."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
