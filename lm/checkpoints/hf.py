"""Hugging Face model folders: config.json, weights in any of their layouts, and key names.

A folder written by `save_pretrained` holds `config.json` and the weights in one of four layouts,
looked for in this order:

    model.safetensors                     one safetensors file (lm/checkpoints/safetensors.py)
    model.safetensors.index.json          an index {"weight_map": {name: shard file}} + the shards
    pytorch_model.bin                     a torch zip archive, read with torch.load(weights_only=True)
    pytorch_model.bin.index.json          the same, sharded

`load_folder` returns every tensor by its file name (with `meta=True` only names, shapes and dtypes,
read from the headers without touching the data); `match_state` checks those names and shapes
against what a model expects and says, by name, what is missing, unexpected or of the wrong shape.
`check_tokenizer_fits` refuses a folder whose tokenizer has more ids than config.json's
`vocab_size` (those ids would index past the embedding matrix, an `IndexError` deep inside torch).
The checks of config.json fields, of sizes against memory and of the layer count, made before
anything is built, are in lm/checkpoints/checks.py.
How a model family renames keys (GPT-2's `transformer.` prefix and Conv1D transposes, Qwen2's
`model.` prefix) lives with the model in lm/models/.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

import torch

from lm.checkpoints.safetensors import DTYPES, load_safetensors, read_safetensors_header, save_safetensors
from lm.errors import CheckpointError, TokenizerFileError
from lm.tokenizers.hf_json import TOKENIZER_CONFIG, added_tokens_decoder, read_tokenizer_config
from lm.utils import atomic_write_json, no_duplicate_keys, show

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"


def read_config(path: str | os.PathLike, model_type: str | None = None) -> dict:
    """A `config.json` as a dict; CheckpointError if missing, not a JSON object, or of another model_type."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except FileNotFoundError:
        raise CheckpointError(path, "config.json is missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(path, f"cannot read config: {str(e)[:200]}") from None
    if not isinstance(d, dict):
        raise CheckpointError(path, "config is not a JSON object")
    if model_type is not None and d.get("model_type", model_type) != model_type:
        raise CheckpointError(path, f"model_type is {show(d['model_type'])}, not {model_type!r}")
    return d


# --------------------------------------------------------------------------------------------
# Sharded checkpoints, pytorch_model.bin, and "whatever is in this folder"
# --------------------------------------------------------------------------------------------

def _read_index(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(index_path, f"cannot read the shard index: {e}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(index_path, "no 'weight_map' object (tensor name -> shard file) in the index")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(index_path, f"tensor {name!r}: shard {shard!r} must be a file name in this folder")
    return weight_map


def load_sharded(index_path: str | os.PathLike, load_one=load_safetensors) -> dict[str, torch.Tensor]:
    """Load a sharded checkpoint: the index maps each tensor name to the shard file holding it."""
    index_path = Path(index_path)
    weight_map = _read_index(index_path)
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(index_path, f"shard {shard} listed in the index is missing")
        tensors = load_one(shard_path)
        listed = {n for n, s in weight_map.items() if s == shard}
        if listed - set(tensors):
            raise CheckpointError(shard_path, f"tensors listed in the index are not in this shard: "
                                              f"{_names(listed - set(tensors))}")
        if set(tensors) - listed:
            raise CheckpointError(shard_path, f"tensors in this shard are not listed for it in the index: "
                                              f"{_names(set(tensors) - listed)}")
        out.update(tensors)
    return out


def load_torch_bin(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load `pytorch_model.bin` with `weights_only=True`: tensors and plain containers only, no code runs."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        raise CheckpointError(path, f"cannot load with torch.load(weights_only=True): {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(path, "expected a dict of name -> tensor")
    return state


def meta_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a meta tensor (name, shape, dtype; no data), from the
    validated header alone: checks a multi-GB file in milliseconds."""
    entries, _, _ = read_safetensors_header(path)
    return {name: torch.empty(info["shape"], dtype=DTYPES[info["dtype"]][0], device="meta")
            for name, info in entries.items()}


def meta_torch_bin(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`pytorch_model.bin` as meta tensors: loaded memory-mapped (weights_only), data never read."""
    return {k: torch.empty_like(v, device="meta") for k, v in load_torch_bin(path).items()}


def checkpoint_file(folder: str | os.PathLike) -> Path:
    """The weights file of a Hugging Face-style folder, in order of preference."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "checkpoint folder does not exist")
    for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(folder, f"no weights found (expected one of {SAFETENSORS}, {SAFETENSORS_INDEX}, "
                                  f"{TORCH_BIN}, {TORCH_BIN_INDEX})")


def load_folder(folder: str | os.PathLike, meta: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
    """Every tensor of the checkpoint in `folder`, and the file it came from (for error messages).

    `meta=True`: meta tensors (names, shapes, dtypes) from the headers only, for checking a folder
    before anything is loaded (run_all's pre-flight).
    """
    path = checkpoint_file(folder)
    one_safetensors, one_bin = (meta_safetensors, meta_torch_bin) if meta else (load_safetensors, load_torch_bin)
    if path.name == SAFETENSORS:
        return one_safetensors(path), path
    if path.name == SAFETENSORS_INDEX:
        return load_sharded(path, one_safetensors), path
    if path.name == TORCH_BIN:
        return one_bin(path), path
    return load_sharded(path, one_bin), path


# --------------------------------------------------------------------------------------------
# The tokenizer beside the weights: its ids must fit the model's vocabulary
# --------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "encoder.json")   # HF fast, HF slow, OpenAI


def _vocab_ids(path: Path) -> list[int]:
    """The ids a tokenizer file assigns: vocab.json / encoder.json map token -> id; tokenizer.json
    has them in model.vocab plus added_tokens[].id."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TokenizerFileError(path, f"cannot read: {e}") from None
    if path.name == "tokenizer.json":
        if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
            raise TokenizerFileError(path, "expected a JSON object with a 'model' object")
        vocab = d["model"].get("vocab") or {}
        added = [t.get("id") for t in d.get("added_tokens") or [] if isinstance(t, dict)]
        ids = list(vocab.values()) if isinstance(vocab, dict) else []
        ids += added
    else:
        ids = list(d.values()) if isinstance(d, dict) else []
    if not ids or not all(type(i) is int and i >= 0 for i in ids):
        raise TokenizerFileError(path, "expected token -> id entries with integer ids >= 0")
    return ids


def tokenizer_size(folder: str | os.PathLike) -> tuple[int, Path] | None:
    """(number of ids = largest id + 1, the file) of the tokenizer files in a model folder, read
    without building the tokenizer; the largest over every tokenizer file present; None if none.

    >>> tokenizer_size("../shared/gpt2")          # doctest: +SKIP
    (50257, PosixPath('../shared/gpt2/vocab.json'))
    """
    best = None
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        if path.is_file():
            n = max(_vocab_ids(path)) + 1
            if best is None or n > best[0]:
                best = (n, path)
    if best is not None and (Path(folder) / TOKENIZER_CONFIG).is_file():   # its added tokens count too
        added = added_tokens_decoder(read_tokenizer_config(folder), Path(folder) / TOKENIZER_CONFIG)
        if added and max(added) + 1 > best[0]:
            best = (max(added) + 1, Path(folder) / TOKENIZER_CONFIG)
    return best


def check_tokenizer_fits(folder: str | os.PathLike, vocab_size: int) -> None:
    """CheckpointError if the folder's tokenizer has ids >= config.json's `vocab_size`.

    Such an id has no row in the embedding matrix: without this check it surfaces as torch's
    `IndexError: index out of range in self` at the first forward pass. Fewer tokenizer ids than
    `vocab_size` is fine (Qwen2 pads its embedding to a multiple of 128; unused rows are harmless).
    """
    found = tokenizer_size(folder)
    if found is not None and found[0] > vocab_size:
        n, path = found
        raise CheckpointError(path, f"the tokenizer has {n:,} ids (0-{n - 1}) but config.json's vocab_size is "
                                    f"{vocab_size:,}: ids {vocab_size}-{n - 1} have no embedding row, so this "
                                    f"tokenizer does not belong to this model")


def _names(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def match_state(state: dict[str, torch.Tensor], path: str | os.PathLike,
                expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Check `state` (already renamed to the model's names) against the model's `expected` shapes.

    Missing or unexpected names, a wrong shape or a non-float tensor raise CheckpointError naming
    the file and the keys. Returns `state` unchanged.
    """
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_names(missing, 10)}")
        if unexpected:
            parts.append(f"unexpected keys: {_names(unexpected, 10)}")
        raise CheckpointError(path, "; ".join(parts))
    for key, t in state.items():
        if t.shape != expected[key]:
            raise CheckpointError(path, f"{key}: shape {list(t.shape)} does not fit config.json "
                                        f"(expected {list(expected[key])})")
        if not t.is_floating_point():
            raise CheckpointError(path, f"{key}: dtype {t.dtype} is not a floating-point type")
    return state


# --------------------------------------------------------------------------------------------
# Key layouts: GPT-2
# --------------------------------------------------------------------------------------------

# Hugging Face stores these as Conv1D (in, out); nn.Linear wants (out, in).
GPT2_CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")


def gpt2_from_hf(tensors: dict[str, torch.Tensor], path: Path, expected: dict[str, torch.Size],
                 other_heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """GPT-2 checkpoint names -> our names, Conv1D weights transposed; checked against `expected`.

    Both layouts load: keys with `transformer.` (what GPT2LMHeadModel saves) and without (the
    public `gpt2` checkpoint). `attn.bias` / `attn.masked_bias` buffers are dropped, and other
    heads' weights (`other_heads`, e.g. `score.` when loading the LM) are ignored unless expected,
    so a tied model ignores a stored `lm_head.weight`.
    """
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}                                       # our key -> the file's key
    for key, t in tensors.items():
        original = key
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue                                                  # old causal-mask buffers
        if key.startswith(other_heads) and key not in expected:
            continue                                                  # e.g. score.weight when loading the LM
        if not key.startswith(("transformer.", "lm_head.", "score.")):
            key = "transformer." + key                                # the public `gpt2` layout
        if GPT2_CONV1D.search(key):
            if t.dim() != 2:
                raise CheckpointError(path, f"{key}: expected a 2-D Conv1D weight, got shape {list(t.shape)}")
            t = t.t().contiguous()
        _put(state, key, t, path, origin, original)
    return match_state(state, path, expected)


def _put(state: dict, key: str, t: torch.Tensor, path: Path, origin: dict, original: str) -> None:
    """state[key] = t, refusing a second tensor for the same key: a file holding a tensor under both
    layouts (`model.norm.weight` and `norm.weight`) has no one meaning (the later one would win)."""
    if key in state:
        raise CheckpointError(path, f"tensors {origin[key]!r} and {original!r} are both {key!r} "
                                    "(stored under both key layouts); keep one")
    state[key], origin[key] = t, original


def gpt2_to_hf(state: dict[str, torch.Tensor], keep_prefix: bool = True) -> dict[str, torch.Tensor]:
    """Our GPT-2 state dict in the Hugging Face layout: Conv1D weights transposed (and, for the bare
    model, no `transformer.` prefix). A tied head has no `lm_head` parameter, so none is written."""
    out = {}
    for name, t in state.items():
        key = name if keep_prefix else name.removeprefix("transformer.")
        out[key] = t.t() if GPT2_CONV1D.search(name) else t
    return out


# --------------------------------------------------------------------------------------------
# Key layouts: Qwen2
# --------------------------------------------------------------------------------------------

# Qwen2's names are ours, except that RMSNorm's `weight` is our `scale` (lm.models.transformer.RMSNorm).
QWEN2_NORM = re.compile(r"norm\.weight$")
QWEN2_SCALE = re.compile(r"norm\.scale$")


def qwen2_from_hf(tensors: dict[str, torch.Tensor], path: Path, expected: dict[str, torch.Size],
                  other_heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Qwen2 checkpoint names -> our names; checked against `expected`.

    Keys with `model.` (what Qwen2ForCausalLM saves) and without (a bare Qwen2Model) both load;
    old `rotary_emb.inv_freq` buffers are dropped; other heads' weights (`other_heads`, e.g.
    `score.` when loading the LM, or `lm_head.` when the head is tied) are ignored unless expected.
    """
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}                                       # our key -> the file's key
    for key, t in tensors.items():
        original = key
        if key.endswith("rotary_emb.inv_freq"):
            continue                                                  # recomputed, never learned
        if key.startswith(other_heads) and key not in expected:
            continue
        if not key.startswith(("model.", "lm_head.", "score.")):
            key = "model." + key                                      # a bare Qwen2Model's layout
        _put(state, QWEN2_NORM.sub("norm.scale", key), t, path, origin, original)
    return match_state(state, path, expected)


def qwen2_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our Qwen2 state dict in the Hugging Face layout (a tied head has no `lm_head`: none is written)."""
    return {QWEN2_SCALE.sub("norm.weight", name): t for name, t in state.items()}


# --------------------------------------------------------------------------------------------
# Writing weights: one file, or shards with an index
# --------------------------------------------------------------------------------------------

def save_weights(tensors: dict[str, torch.Tensor], folder: str | os.PathLike,
                 max_shard_bytes: int | None = None) -> list[Path]:
    """Write `tensors` into `folder` as `model.safetensors`, or, when they exceed `max_shard_bytes`,
    as `model-0000k-of-0000n.safetensors` shards (in name order) plus `model.safetensors.index.json`.

    Weight files of the other layout left in the folder by an earlier save are removed, so
    `load_folder` can never pick up stale weights. Returns the files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    shards: list[list[str]] = [[]]
    for name in sorted(tensors):
        if max_shard_bytes and shards[-1] and sum(sizes[k] for k in shards[-1]) + sizes[name] > max_shard_bytes:
            shards.append([])
        shards[-1].append(name)
    for old in [SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX, *folder.glob("model-*-of-*.safetensors")]:
        (folder / old).unlink(missing_ok=True)
    if len(shards) == 1:
        save_safetensors(tensors, folder / SAFETENSORS, {"format": "pt"})
        return [folder / SAFETENSORS]
    files, weight_map = [], {}
    for i, names in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors({k: tensors[k] for k in names}, folder / name, {"format": "pt"})
        weight_map.update({k: name for k in names})
        files.append(folder / name)
    atomic_write_json(folder / SAFETENSORS_INDEX, {"metadata": {"total_size": sum(sizes.values())},
                                                   "weight_map": weight_map})
    return files + [folder / SAFETENSORS_INDEX]
