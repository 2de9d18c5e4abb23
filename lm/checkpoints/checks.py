"""Checks made before anything is built from a model folder: each config.json field's type and
range, the size of the weights against this machine's memory, the layer count against the file.

    check_int / check_number / check_bool / check_token_id   one field (ConfigError naming it and its value)
    check_label_maps       a classifier's id2label / label2id name each class once
    check_fits_memory      bytes asked for <= physical memory (CheckpointError with the size asked for)
    check_layer_count      config.json's layers <= the layers the checkpoint's names hold
    check_finite           no NaN or infinity in the weights (a corrupted byte the header cannot show)

The model configs (lm/models) call the field checks in `validate`; `from_pretrained` calls the
others before the shapes-only model is built, `lm.finetune.lora` before LoRA matrices are.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from lm.errors import CheckpointError, ConfigError
from lm.utils import show

# --------------------------------------------------------------------------------------------
# config.json fields: type and range of each
# --------------------------------------------------------------------------------------------

MAX_TOKEN_ID = 2**63 - 1        # token ids become int64 tensors


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """An int or float that is finite (not bool, inf or nan)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_int(source: str, name: str, v: object, low: int = 1, none_ok: bool = False) -> None:
    """ConfigError unless `v` is an int >= `low` (or None when `none_ok`)."""
    if v is None and none_ok:
        return
    if not is_int(v) or v < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(f"{source}: {name} must be {what}{' or null' if none_ok else ''}, got {show(v)}")


def check_number(source: str, name: str, v: object, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False) -> None:
    """ConfigError unless `v` is a finite number in [low, high] ((low, high] with `low_open`)."""
    if not is_number(v) or v > high or v < low or (low_open and v == low):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high == math.inf else ']'}"
        raise ConfigError(f"{source}: {name} must be a finite number in {interval}, got {show(v)}")


def check_bool(source: str, name: str, v: object) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{source}: {name} must be true or false, got {show(v)}")


def check_token_id(source: str, name: str, v: object, vocab_size: int | None = None) -> None:
    """ConfigError unless `v` is None or a token id: an int >= 0, below `vocab_size` when given."""
    if v is None:
        return
    high = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
    if not is_int(v) or not 0 <= v <= high:
        where = f"an id of the vocabulary (0-{high})" if vocab_size is not None else "a token id (an integer >= 0)"
        raise ConfigError(f"{source}: {name} must be null or {where}, got {show(v)}")


def check_label_maps(source: str, extra: dict, num_labels: int) -> None:
    """A classifier config's `id2label` / `label2id` (when present) must name each of the
    `num_labels` classes once: id2label keys exactly "0".."n-1", values distinct non-empty strings,
    and label2id its exact inverse. The reference library would read keys "00" or "a" its own way
    (int(key), or fail), a gap or fewer entries as placeholder names: refused here by name."""
    id2label, label2id = extra.get("id2label"), extra.get("label2id")
    if id2label is None:
        if label2id is not None:
            raise ConfigError(f"{source}: label2id is given without id2label")
        return
    if not isinstance(id2label, dict):
        raise ConfigError(f"{source}: id2label must be an object {{\"0\": name, ...}}, got {show(id2label)}")
    want = [str(i) for i in range(num_labels)]
    if set(id2label) != set(want):
        raise ConfigError(f"{source}: id2label keys must be exactly \"0\"..\"{num_labels - 1}\" (num_labels is "
                          f"{num_labels}), got {show(list(id2label))}")
    names = [id2label[k] for k in want]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{source}: id2label values must be distinct non-empty strings, got {show(names)}")
    if label2id is not None and label2id != {n: i for i, n in enumerate(names)}:
        raise ConfigError(f"{source}: label2id {show(label2id)} is not the inverse of id2label {show(id2label)}")


# --------------------------------------------------------------------------------------------
# Before allocating: does it fit in memory? does config.json's layer count match the file?
# --------------------------------------------------------------------------------------------

def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_memory(nbytes: int, path: str | os.PathLike, what: str) -> None:
    """CheckpointError naming `path` if `nbytes` exceed this machine's physical memory: a config or
    adapter asking for more would only end in a MemoryError (or the OOM killer) partway through."""
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise CheckpointError(path, f"{what} need {nbytes:,} bytes ({nbytes / 2**30:,.1f} GiB), more than this "
                                    f"machine's {memory / 2**30:,.1f} GiB of memory")


def check_layer_count(tensors: dict, path: Path, n_layers: int, block: str) -> None:
    """config.json's layer count must not exceed the number of layers the checkpoint holds (names
    `...{block}.K....`): checked from the names alone, before a (shapes-only) model of n_layers
    layers is built to learn the expected shapes (10**6 layers would take minutes). Fewer layers
    in config.json than in the file are left to `match_state`, which lists the unexpected keys."""
    found = {int(m.group(1)) for k in tensors if (m := re.search(rf"(?:^|\.){block}\.(\d+)\.", k))}
    if n_layers > len(found):
        held = (f"{len(found)} layers ({min(found)}-{max(found)})" if len(found) > 1 else
                f"1 layer ({min(found)})" if found else "no layers")
        raise CheckpointError(path.parent / "config.json",
                              f"num_hidden_layers is {n_layers:,} but the weights in {path.name} hold {held}")


def check_finite(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """CheckpointError naming the first tensor that holds a NaN or an infinity. The safetensors
    format has no checksum of the tensor bytes, so a corrupted byte loads; when it makes a NaN or an
    infinity (never in trained weights), every output would silently be NaN."""
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(path, f"{name} holds {bad:,} values that are NaN or infinite: the weights are "
                                        "corrupted")
