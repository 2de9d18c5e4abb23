"""Loading a Hugging Face model folder into any of our model families, checked before a byte is read.

A family (GPT-2, Qwen2) says two things about its folders, as classmethods:

    read_config(folder) -> config              config.json, refused by name where we do not implement it
    state_from(tensors, path, config) -> state the file's tensors renamed to our keys, every name and
                                               shape checked against the config (CheckpointError)

and this mixin turns them into the same two entry points for every family:

    Model.check_pretrained(folder)   everything from_pretrained checks, from the file headers only
    Model.from_pretrained(folder, dtype=None | "auto" | torch dtype, device="cpu")

Both also refuse a tokenizer in the folder with more ids than config.json's vocab_size
(`lm.checkpoints.hf.check_tokenizer_fits`): such ids would index past the embedding matrix; and,
before a byte is allocated, a config.json whose weights would not fit in this machine's memory
(`config.num_parameters(...)` x the bytes of the dtype they load in; `check_fits_memory`).
`from_pretrained` also refuses weights holding a NaN or an infinity (`check_finite`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from lm.checkpoints.checks import check_finite, check_fits_memory
from lm.checkpoints.hf import check_tokenizer_fits, load_folder
from lm.errors import ConfigError

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


class HFPretrained:
    """`check_pretrained` / `from_pretrained` for a family defining `read_config` and `state_from`,
    and `_head`, the argument of `config.num_parameters` that counts this class's parameters."""

    _head = "lm"

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
