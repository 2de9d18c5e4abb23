"""LoRA adapters (5.5.2) in PEFT's folder format: save, check and load them as `peft` does.

LoRA itself (the config, LoRALinear and LoRAEmbedding, add_lora, merge) is in `lora_layers.py`;
its names are importable from here too, so `lm.finetune.lora` is the one place to import LoRA from.

An adapter folder holds `adapter_config.json` (r, lora_alpha, target_modules, fan_in_fan_out, ...)
and `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` (r, in) and
`...lora_B.weight` (out, r) for a linear layer, `...lora_embedding_A` (r, V) and
`...lora_embedding_B` (C, r) for an embedding. Our module names are the Hugging Face ones for GPT-2
and Qwen2 (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`,
`base_model.model.model.embed_tokens.lora_embedding_A`), so the keys need no mapping.
GPT-2's checkpoints store projections as Conv1D (in, out), so PEFT needs `fan_in_fan_out: true`
to merge them; Qwen2's are nn.Linear (out, in): `false`. The A and B matrices are the same either
way (tests: fixture `gpt2_lora_peft`, made by PEFT, reproduces its logits here; with `peft`
installed, adapters go both ways). PEFT's default targets (`default_target_modules`): `c_attn`
for GPT-2, `q_proj` + `v_proj` for Qwen2.
PEFT also writes a targeted `embed_tokens` / `lm_head`'s whole base weight (`...base_layer.weight`,
its `save_embedding_layers="auto"`): we read it into the base weight as PEFT does, but do not write
it (the base model folder holds it).
`modules_to_save` (modules trained in full, e.g. a classifier's `score`) are saved as PEFT does;
names that match no module are skipped as PEFT skips them (PEFT lists both "classifier" and
"score" for every sequence classifier), but one must match.

`load_adapter` works out everything first (`plan_lora`: targets, shapes, keys) and changes the
model only once the adapter is known to fit, so a refused adapter leaves the model as it was.
`load_adapted(ADAPTER_DIR)` loads base and adapter in one call: the base from the adapter's
`base_model_name_or_path` (or a given folder), the kind of model from its `task_type`.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from lm.checkpoints.checks import check_finite, check_fits_memory
from lm.checkpoints.hf import load_torch_bin, read_config
from lm.checkpoints.safetensors import DTYPES, load_safetensors, read_safetensors_header, save_safetensors
from lm.data.download import model_folder
from lm.errors import CheckpointError, ConfigError
from lm.finetune.lora_layers import (MAX_SCALING, LoRAConfig, LoRAEmbedding, LoRALayer, LoRALinear, LoRAPlan, _apply,
                                     add_lora, check_lora_fits, count_parameters, hf_name, lora_layers, merge,
                                     merge_and_unload, plan_lora, saved_modules, unmerge, untie_output_layer)
from lm.models.auto import family, family_of, load_causal_lm, load_sequence_classifier, model_type
from lm.utils import atomic_write_json, show

CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_BIN = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PREFIX = "base_model.model."   # PEFT's key prefix: PeftModel.base_model (LoraModel).model (ours)

__all__ = [  # LoRA itself (lora_layers.py), then the folder format (here)
    "MAX_SCALING", "LoRAConfig", "LoRAEmbedding", "LoRALayer", "LoRALinear", "LoRAPlan", "add_lora", "check_lora_fits",
    "count_parameters", "hf_name", "lora_layers", "merge", "merge_and_unload", "plan_lora", "saved_modules", "unmerge",
    "untie_output_layer",
    "CONFIG_NAME", "WEIGHTS_NAME", "WEIGHTS_BIN", "PREFIX", "TASK_MODELS", "adapter_base", "adapter_key",
    "adapter_shapes", "adapter_state", "adapter_tensors", "default_target_modules", "load_adapted", "load_adapter",
    "read_adapter_config", "save_adapter"]


def adapter_key(model: nn.Module, name: str) -> str:
    """The key prefix of module `name`'s tensors in an adapter file: `base_model.model.<HF name>`."""
    return PREFIX + hf_name(model, name)




def adapter_shapes(model: nn.Module, plan: LoRAPlan) -> dict[str, torch.Size]:
    """The adapter's tensors under PEFT's key names, with their shapes (what `adapter_state` will
    hold once `plan` has wrapped the model)."""
    out = {}
    for name, (layer, r, _) in plan.targets.items():
        key = adapter_key(model, name)
        if isinstance(layer, nn.Embedding):
            out[f"{key}.lora_embedding_A"] = torch.Size([r, layer.num_embeddings])
            out[f"{key}.lora_embedding_B"] = torch.Size([layer.embedding_dim, r])
        else:
            out[f"{key}.lora_A.weight"] = torch.Size([r, layer.in_features])
            out[f"{key}.lora_B.weight"] = torch.Size([layer.out_features, r])
    for name in plan.saved:
        for pname, p in model.get_submodule(name).named_parameters():
            out[f"{adapter_key(model, name)}.{pname}"] = p.shape
    return out


def _is_conv1d_model(model: nn.Module) -> bool:
    """Does the model's family store linear weights as Conv1D (PEFT's `fan_in_fan_out`)?"""
    fam = family_of(model)
    return fam is not None and fam.conv1d


def default_target_modules(model: nn.Module) -> list[str]:
    """PEFT's default LoRA targets for the model's family (`lm.models.auto.FAMILIES`): GPT-2's
    fused attention input `c_attn` (the book's setting), Qwen2's query and value projections
    `q_proj`, `v_proj`."""
    fam = family_of(model)
    if fam is None:
        raise ConfigError(f"no default LoRA target modules for {type(model).__name__}; give target_modules")
    return list(fam.lora_targets)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's key names (A, B, and modules_to_save in full)."""
    cfg: LoRAConfig = getattr(model, "lora_config", None)
    if cfg is None:
        raise ConfigError("the model has no LoRA adapter (call add_lora or load_adapter first)")
    out = {}
    for name, m in lora_layers(model).items():
        if isinstance(m, LoRAEmbedding):                       # Parameters of their own: no ".weight"
            out[f"{adapter_key(model, name)}.lora_embedding_A"] = m.lora_embedding_A.detach().contiguous()
            out[f"{adapter_key(model, name)}.lora_embedding_B"] = m.lora_embedding_B.detach().contiguous()
        else:
            out[f"{adapter_key(model, name)}.lora_A.weight"] = m.lora_A.weight.detach().contiguous()
            out[f"{adapter_key(model, name)}.lora_B.weight"] = m.lora_B.weight.detach().contiguous()
    for name in saved_modules(model, cfg):
        for pname, p in model.get_submodule(name).named_parameters():
            out[f"{adapter_key(model, name)}.{pname}"] = p.detach().contiguous()
    return out


def save_adapter(model: nn.Module, folder: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` as PEFT's `save_pretrained` does."""
    folder = Path(folder)
    state = adapter_state(model)
    cfg: LoRAConfig = model.lora_config
    fan = _is_conv1d_model(model) if cfg.fan_in_fan_out is None else cfg.fan_in_fan_out
    config = {"peft_type": "LORA", "task_type": cfg.task_type, "r": cfg.r, "lora_alpha": cfg.alpha,
              "lora_dropout": cfg.dropout, "target_modules": cfg.target_modules, "fan_in_fan_out": fan,
              "bias": "none", "use_rslora": cfg.use_rslora, "use_dora": False, "modules_to_save": cfg.modules_to_save,
              "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None,
              "rank_pattern": cfg.rank_pattern, "alpha_pattern": cfg.alpha_pattern, "inference_mode": True,
              "base_model_name_or_path": base_model_name_or_path, "revision": None}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / CONFIG_NAME, config)
    save_safetensors(state, folder / WEIGHTS_NAME, {"format": "pt"})
    return folder


# adapter_config.json keys that change what the adapter computes and that we do not implement:
# a value other than the harmless one is refused rather than silently ignored.
_UNSUPPORTED = {"use_dora": (False, None), "bias": ("none",), "layers_to_transform": (None,),
                "layers_pattern": (None, [], ""), "lora_bias": (False, None), "target_parameters": (None, []),
                "trainable_token_indices": (None,), "layer_replication": (None,), "use_qalora": (False, None),
                "alora_invocation_tokens": (None,), "exclude_modules": (None, [], ""),
                "use_bdlora": (None, False), "arrow_config": (None,), "kasa_config": (None,),
                "monteclora_config": (None,), "velora_config": (None,)}


def read_adapter_config(path: str | os.PathLike) -> LoRAConfig:
    """Read PEFT's adapter_config.json; anything malformed or unsupported -> one CheckpointError.

    Every field is checked for its type and range and every pattern for a regex that compiles
    (`LoRAConfig.validate`); with the weights beside it, their ranks must be what the config
    gives each module, and their size must fit in memory (`_check_adapter_weights`), so a
    corrupted r (10**12) is refused before anything is allocated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "adapter_config.json is missing")
    d = read_config(path)                       # JSON object, no key twice, else CheckpointError
    if d.get("peft_type") != "LORA":
        raise CheckpointError(path, f"peft_type is {show(d.get('peft_type'))}; only LORA adapters can be loaded")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in d:
            raise CheckpointError(path, f"missing key {key!r}")
    for key, allowed in _UNSUPPORTED.items():
        if key in d and not any(d[key] is v or (type(d[key]) is type(v) and d[key] == v) for v in allowed):
            raise CheckpointError(path, f"{key}={show(d[key])} is not supported here (supported: {allowed[0]!r})")
    target = d["target_modules"]
    cfg = LoRAConfig(r=d["r"], alpha=d["lora_alpha"], dropout=d.get("lora_dropout", 0.0),
                     target_modules=sorted(target) if isinstance(target, list) and
                     all(isinstance(x, str) for x in target) else target,
                     use_rslora=d.get("use_rslora", False), rank_pattern=_or_empty(d.get("rank_pattern")),
                     alpha_pattern=_or_empty(d.get("alpha_pattern")), modules_to_save=d.get("modules_to_save"),
                     fan_in_fan_out=d.get("fan_in_fan_out", False), task_type=d.get("task_type") or "CAUSAL_LM")
    try:
        cfg.validate(source="adapter_config.json")
    except ConfigError as e:
        raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
    _check_adapter_weights(cfg, path)
    return cfg


def adapter_tensors(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path]:
    """The adapter's tensors (adapter_model.safetensors, else adapter_model.bin) and their file."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return load_safetensors(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME
    if (folder / WEIGHTS_BIN).is_file():
        return load_torch_bin(folder / WEIGHTS_BIN), folder / WEIGHTS_BIN
    raise CheckpointError(folder, f"no adapter weights (expected {WEIGHTS_NAME} or {WEIGHTS_BIN})")


def _or_empty(pattern: object) -> object:
    """rank_pattern / alpha_pattern: null means none (as PEFT writes `{}`); anything else is checked."""
    return {} if pattern is None else pattern


def _check_adapter_weights(cfg: LoRAConfig, config_path: Path) -> None:
    """From the weights' header (nothing allocated): each `...lora_A.weight` must be (r, in), each
    `...lora_B.weight` (out, r), each `...lora_embedding_A` (r, V) and `...lora_embedding_B` (C, r),
    with the r `cfg` gives its module, and all of them must fit in memory; then no value may be NaN
    or infinite. No weights file: nothing to check here (load_adapter says so)."""
    folder = config_path.parent
    if (folder / WEIGHTS_NAME).is_file():
        path = folder / WEIGHTS_NAME
        entries, _, _ = read_safetensors_header(path)
        shapes = {k: (v["shape"], DTYPES[v["dtype"]][1]) for k, v in entries.items()}
        tensors = load_safetensors(path)                                  # memory-mapped
    elif (folder / WEIGHTS_BIN).is_file():
        path = folder / WEIGHTS_BIN
        tensors = load_torch_bin(path)                                    # memory-mapped
        shapes = {k: (list(t.shape), t.element_size()) for k, t in tensors.items()}
    else:
        return
    for key, (shape, _) in shapes.items():
        m = re.fullmatch(re.escape(PREFIX) + r"(.+)\.(?:lora_([AB])\.weight|lora_embedding_([AB]))", key)
        if m is None:
            continue
        r, part = cfg.rank_alpha(m.group(1))[0], m.group(2) or m.group(3)
        if len(shape) != 2 or shape[0 if part == "A" else 1] != r:
            raise CheckpointError(config_path, f"r is {r:,} for {m.group(1)}, but {path.name} holds {key} of shape "
                                               f"{shape} (lora_A is (r, in), lora_B (out, r), lora_embedding_A "
                                               "(r, V), lora_embedding_B (C, r))")
    check_fits_memory(sum(math.prod(s) * n for s, n in shapes.values()), path, "the adapter's tensors")
    check_finite(tensors, path)


def load_adapter(model: nn.Module, folder: str | os.PathLike) -> LoRAConfig:
    """Wrap `model` as `folder`'s adapter says and load its weights (PEFT's format, or ours).

    Everything is checked before the model changes: the config (`read_adapter_config`), that its
    targets and modules_to_save fit the model (`plan_lora`), and that every expected tensor is in
    the file with its shape and a floating dtype, and nothing else but a target's optional
    `...base_layer.weight` (PEFT's copy of a targeted embedding, loaded into the base weight as
    PEFT loads it). A refused adapter raises
    CheckpointError naming the file and the keys, and leaves the model exactly as it was (so a
    second try, with a good adapter, works). Returns the adapter's config.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "adapter folder does not exist")
    cfg = read_adapter_config(folder / CONFIG_NAME)
    tensors, path = adapter_tensors(folder)
    try:
        plan = plan_lora(model, cfg)
    except ConfigError as e:
        raise CheckpointError(folder / CONFIG_NAME, str(e)) from None
    expected = adapter_shapes(model, plan)
    optional = {f"{adapter_key(model, name)}.base_layer.weight": layer.weight.shape    # PEFT's embed_tokens, lm_head
                for name, (layer, _, _) in plan.targets.items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected) - set(optional))
    if missing or unexpected:
        raise CheckpointError(path, f"adapter keys do not fit the model: missing {missing[:4]}, "
                                    f"unexpected {unexpected[:4]}")
    bad = [f"{k} {list(tensors[k].shape)} (expected {list(s)})" for k, s in {**expected, **optional}.items()
           if k in tensors and tensors[k].shape != s]
    if bad:
        raise CheckpointError(path, f"wrong shapes: {'; '.join(bad[:4])}")
    ints = [k for k, t in tensors.items() if not t.is_floating_point()]
    if ints:
        raise CheckpointError(path, f"not floating-point tensors: {', '.join(ints[:4])}")
    _apply(model, cfg, plan)                        # nothing can fail from here on
    by_key = {adapter_key(model, name): name for name, _ in model.named_modules() if name}
    layers = lora_layers(model)
    with torch.no_grad():
        for key, t in tensors.items():
            owner_key, _, pname = key.rpartition(".")            # ("...c_attn.lora_A", "weight")
            owner, _, part = owner_key.rpartition(".")
            if part in ("lora_A", "lora_B") and by_key.get(owner) in layers:
                getattr(layers[by_key[owner]], part).weight.copy_(t)
            elif part == "base_layer" and by_key.get(owner) in layers:   # PEFT's name for our `base`
                layers[by_key[owner]].base.get_parameter(pname).copy_(t)
            else:                                        # lora_embedding_A / _B, modules_to_save
                model.get_submodule(by_key[owner_key]).get_parameter(pname).copy_(t)
    return cfg


# --------------------------------------------------------------------------------------------
# Base model + adapter in one call
# --------------------------------------------------------------------------------------------

# PEFT's task types -> the kind of model its adapters go on (None: no such model here).
TASK_MODELS = {"CAUSAL_LM": "causal_lm", "SEQ_CLS": "classifier", "FEATURE_EXTRACTION": "base",
               "TOKEN_CLS": None, "QUESTION_ANS": None, "SEQ_2_SEQ_LM": None}


def adapter_base(adapter: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """The base model folder of an adapter: `base` if given, else adapter_config.json's
    `base_model_name_or_path`, a folder (as given, or relative to the adapter folder: PEFT
    writes what it was given) or a hub name we can fetch (`lm.data.download.model_folder`)."""
    adapter = Path(adapter).expanduser()
    config_path = adapter / CONFIG_NAME
    name = base if base is not None else read_config(config_path).get("base_model_name_or_path")
    if not name or not isinstance(name, (str, os.PathLike)):
        raise CheckpointError(config_path, "no base_model_name_or_path: give the base model's folder")
    for folder in (Path(name).expanduser(), adapter / name):
        if (folder / "config.json").is_file():
            return folder
    try:
        return model_folder(str(name))
    except ConfigError as e:
        raise CheckpointError(config_path, f"base model {str(name)!r} is no model folder here or next to the "
                                           f"adapter, nor a hub name we know ({e}); give the base model's folder") from None


def load_adapted(adapter: str | os.PathLike, base: str | os.PathLike | None = None, dtype=None,
                 device: str | torch.device = "cpu", merged: bool = False) -> nn.Module:
    """Base model plus adapter in one call: the base folder from `adapter_base`, the kind of model
    from the adapter's task_type (CAUSAL_LM: GPT-2 or Qwen2 as config.json says; SEQ_CLS: the
    classifier; FEATURE_EXTRACTION: the family's bare decoder, GPT-2's), the adapter loaded, and with `merged`,
    merged into the weights (`merge_and_unload`)."""
    adapter = Path(adapter).expanduser()
    cfg = read_adapter_config(adapter / CONFIG_NAME)
    folder = adapter_base(adapter, base)
    kind = TASK_MODELS.get(cfg.task_type, "unknown")
    if kind == "causal_lm":
        model = load_causal_lm(folder, dtype=dtype, device=device)
    elif kind == "classifier":
        model = load_sequence_classifier(folder, dtype=dtype, device=device)
    elif kind == "base" and family(folder).bare is not None:
        model = family(folder).bare.from_pretrained(folder, dtype=dtype, device=device)
    else:
        raise CheckpointError(adapter / CONFIG_NAME, f"task_type {cfg.task_type!r} on a {model_type(folder)} model "
                                                     "is not implemented here (CAUSAL_LM, SEQ_CLS; FEATURE_EXTRACTION "
                                                     "for GPT-2)")
    load_adapter(model, adapter)
    return merge_and_unload(model) if merged else model
