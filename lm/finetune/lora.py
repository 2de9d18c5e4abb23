"""LoRA (5.5.2): fine-tune a frozen model through small low-rank updates of chosen projections.

A linear layer computes y = x W^T + b with W of shape (out, in). LoRA freezes W and learns
ΔW = (alpha / r) * B A, with A (r, in) and B (out, r) and r much smaller than in and out:

    y = x W^T + b + (alpha / r) * (dropout(x) A^T) B^T

A starts Kaiming-uniform and B at zero, so the wrapped model starts as exactly the base model and
the update grows from there. Only A and B are trained: for GPT-2 124M with r=16 on `c_attn`
(the book's setting, PEFT's default for GPT-2) that is 0.59 M of 124 M parameters, and AdamW's
two moment buffers shrink by the same factor. `merge()` adds ΔW into W (inference then costs
what the base model costs); `unmerge()` takes it out again.

Adapters are saved and loaded in PEFT's folder format, so they travel between this project and
`peft`: `adapter_config.json` (r, lora_alpha, target_modules, fan_in_fan_out, ...) and
`adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` (r, in) and
`...lora_B.weight` (out, r). Our module names are the Hugging Face ones for GPT-2 and Qwen2
(`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`,
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so the keys need no mapping.
GPT-2's checkpoints store projections as Conv1D (in, out), so PEFT needs `fan_in_fan_out: true`
to merge them; Qwen2's are nn.Linear (out, in): `false`. The A and B matrices are the same either
way (tests: fixture `gpt2_lora_peft`, made by PEFT, reproduces its logits here; with `peft`
installed, adapters go both ways). PEFT's default targets (`default_target_modules`): `c_attn`
for GPT-2, `q_proj` + `v_proj` for Qwen2.
`modules_to_save` (modules trained in full, e.g. a classifier's `score`) are saved as PEFT does;
names that match no module are skipped as PEFT skips them (PEFT lists both "classifier" and
"score" for every sequence classifier), but one must match.
A tied output layer is no module, so LoRA cannot wrap it; `untie_output_layer` makes it one.

`load_adapter` works out everything first (`plan_lora`: targets, shapes, keys) and changes the
model only once the adapter is known to fit, so a refused adapter leaves the model as it was.
`load_adapted(ADAPTER_DIR)` loads base and adapter in one call: the base from the adapter's
`base_model_name_or_path` (or a given folder), the kind of model from its `task_type`.

    >>> model = GPT2.from_pretrained("runs/x/pretrained/gpt2")                    # doctest: +SKIP
    >>> add_lora(model, LoRAConfig(r=16, alpha=32, target_modules=["c_attn"]))    # doctest: +SKIP
    >>> count_parameters(model)                                                   # doctest: +SKIP
    (16384, 685568)
    >>> save_adapter(model, "runs/adapter"); load_adapter(fresh_model, "runs/adapter")  # doctest: +SKIP
    >>> classifier = load_adapted("runs/x/emotion_lora/adapter")                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from lm.checkpoints.checks import check_finite, check_fits_memory
from lm.checkpoints.hf import load_torch_bin, read_config
from lm.checkpoints.safetensors import DTYPES, load_safetensors, read_safetensors_header, save_safetensors
from lm.data.download import model_folder
from lm.errors import CheckpointError, ConfigError
from lm.models.auto import load_causal_lm, load_sequence_classifier, model_type
from lm.models.fast_linear import linear
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2ForSequenceClassification
from lm.utils import atomic_write_json, show

CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_BIN = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PREFIX = "base_model.model."   # PEFT's key prefix: PeftModel.base_model (LoraModel).model (ours)
MAX_SCALING = 65504.0          # the largest float16: a bigger alpha / r overflows a half-precision update


@dataclass
class LoRAConfig:
    r: int = 16                                   # rank of the update B A (the book: 16)
    alpha: float = 32                             # scaling = alpha / r (the book: 32)
    dropout: float = 0.0                          # dropout on the input of A while training (PEFT's default 0)
    target_modules: list[str] | str = field(default_factory=lambda: ["c_attn"])  # names (a module whose name
    #   is one of them or ends in ".name") or one regex matching the whole name: PEFT's rules
    use_rslora: bool = False                      # scaling = alpha / sqrt(r) (rank-stabilised LoRA)
    rank_pattern: dict = field(default_factory=dict)    # {name regex: r} overriding r for some modules
    alpha_pattern: dict = field(default_factory=dict)   # {name regex: alpha} overriding alpha
    modules_to_save: list[str] | None = None      # modules trained in full and saved with the adapter ("score")
    fan_in_fan_out: bool | None = None            # written to adapter_config.json; None: True for GPT-2
    task_type: str = "CAUSAL_LM"                  # PEFT's task type ("SEQ_CLS" for a classifier)

    def validate(self, source: str = "LoRAConfig") -> None:
        """Each field's type and range, and every pattern a regex that compiles (as PEFT uses it)."""
        if not _is_int(self.r) or self.r <= 0:
            raise ConfigError(f"{source}: r must be a positive integer, got {show(self.r)}")
        if not _is_number(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"{source}: lora_alpha must be a positive number, got {show(self.alpha)}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError(f"{source}: lora_dropout must be in [0, 1), got {show(self.dropout)}")
        t = self.target_modules
        if not ((isinstance(t, str) and t) or (isinstance(t, list) and t and all(isinstance(x, str) and x for x in t))):
            raise ConfigError(f"{source}: target_modules must be a regex or a non-empty list of module names, "
                              f"got {show(t)}")
        if isinstance(t, str):
            _check_regex(source, "target_modules", t)
        for name, pattern, check in (("rank_pattern", self.rank_pattern, _is_int),
                                     ("alpha_pattern", self.alpha_pattern, _is_number)):
            if not isinstance(pattern, dict) or not all(isinstance(k, str) and check(v) and v > 0
                                                        for k, v in pattern.items()):
                raise ConfigError(f"{source}: {name} must map module-name patterns to positive numbers, "
                                  f"got {show(pattern)}")
            for k in pattern:
                _check_regex(source, f"{name} key", rf"(.*\.)?({k})$")
        m = self.modules_to_save
        if m is not None and not (isinstance(m, list) and all(isinstance(x, str) and x for x in m)):
            raise ConfigError(f"{source}: modules_to_save must be null or a list of module names, got {show(m)}")
        if not isinstance(self.use_rslora, bool) or self.fan_in_fan_out not in (None, True, False):
            raise ConfigError(f"{source}: use_rslora and fan_in_fan_out must be true or false")
        if not isinstance(self.task_type, str):
            raise ConfigError(f"{source}: task_type must be a string, got {show(self.task_type)}")
        # the largest alpha over the smallest r any module may get: the update must stay finite
        alpha, r = max([self.alpha, *self.alpha_pattern.values()]), min([self.r, *self.rank_pattern.values()])
        scaling = alpha / math.sqrt(r) if self.use_rslora else alpha / r
        if scaling > MAX_SCALING:
            raise ConfigError(f"{source}: lora_alpha {show(alpha)} / r {r} gives a scaling of {scaling:.4g}, above "
                              f"{MAX_SCALING:g} (the largest float16): the update would overflow")

    def targets(self, name: str) -> bool:
        """Does LoRA wrap the module called `name`? (PEFT's matching rule.)"""
        t = self.target_modules
        if isinstance(t, str):
            return re.fullmatch(t, name) is not None
        return any(name == x or name.endswith("." + x) for x in t)

    def rank_alpha(self, name: str) -> tuple[int, float]:
        """(r, alpha) for module `name`, after rank_pattern / alpha_pattern."""
        def lookup(pattern: dict, default):
            key = next((k for k in pattern if re.match(rf"(.*\.)?({k})$", name)), None)
            return pattern[key] if key is not None else default
        return lookup(self.rank_pattern, self.r), lookup(self.alpha_pattern, self.alpha)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_regex(source: str, name: str, pattern: str) -> None:
    """ConfigError (not re.error at load time) for a pattern that does not compile."""
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise ConfigError(f"{source}: {name} {show(pattern)} is not a valid regex: {e}") from None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus the trainable low-rank update (alpha / r) * B A."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))   # as nn.Linear and PEFT
        nn.init.zeros_(self.lora_B.weight)                               # the update starts at 0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)                                                  # (..., out)
        if self.merged:
            return y
        h = linear(self.dropout(x), self.lora_A.weight)                  # (..., r)
        return y + linear(h, self.lora_B.weight) * self.scaling          # (..., out)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight W + ΔW, for code that multiplies by `layer.weight` itself (GPT-2's
        untied output layer does); `forward` never builds it. Dropout does not apply here."""
        return self.base.weight if self.merged else self.base.weight + self.delta_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling * B A, shaped like the base weight (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


# --------------------------------------------------------------------------------------------
# Wrapping a model
# --------------------------------------------------------------------------------------------

def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


@dataclass
class LoRAPlan:
    """What `add_lora` will do to a model, worked out (and checked) before anything changes."""
    targets: dict[str, tuple[nn.Linear, int, float]]   # module name -> (the linear layer, r, alpha)
    saved: list[str]                                    # full names of the modules trained in full

    def shapes(self, model: nn.Module) -> dict[str, torch.Size]:
        """The adapter's tensors under PEFT's key names, with their shapes (what `adapter_state`
        will hold once the model is wrapped)."""
        out = {}
        for name, (layer, r, _) in self.targets.items():
            key = adapter_key(model, name)
            out[f"{key}.lora_A.weight"] = torch.Size([r, layer.in_features])
            out[f"{key}.lora_B.weight"] = torch.Size([layer.out_features, r])
        for name in self.saved:
            for pname, p in model.get_submodule(name).named_parameters():
                out[f"{adapter_key(model, name)}.{pname}"] = p.shape
        return out


def plan_lora(model: nn.Module, cfg: LoRAConfig) -> LoRAPlan:
    """Check that `cfg` fits `model` and say which layers it wraps, changing nothing (ConfigError).

    Targets are matched on the Hugging Face module names (`hf_name`), as PEFT matches them."""
    cfg.validate()
    if lora_layers(model):
        raise ConfigError("the model already has LoRA layers (merge_and_unload it first)")
    names = [n for n, _ in model.named_modules() if n and cfg.targets(hf_name(model, n))]
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ConfigError(f"target_modules {cfg.target_modules!r} match no module of {type(model).__name__} "
                          f"(its linear layers: {', '.join(linears[:6])}{', ...' if len(linears) > 6 else ''})")
    check_lora_fits(model, cfg, names)
    targets = {}
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"target module {name} is a {type(module).__name__}; LoRA wraps linear layers only")
        r, alpha = cfg.rank_alpha(hf_name(model, name))
        targets[name] = (module, r, alpha)
    return LoRAPlan(targets, saved_modules(model, cfg))


def add_lora(model: nn.Module, cfg: LoRAConfig | None = None) -> dict[str, LoRALinear]:
    """Freeze `model` and wrap every target projection in a LoRALinear (in place); return them.

    `cfg.modules_to_save` stay trainable in full. The config is kept as `model.lora_config`.
    Everything is checked first (`plan_lora`): a ConfigError leaves the model as it was.
    """
    cfg = cfg or LoRAConfig()
    return _apply(model, cfg, plan_lora(model, cfg))


def _apply(model: nn.Module, cfg: LoRAConfig, plan: LoRAPlan) -> dict[str, LoRALinear]:
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, (module, r, alpha) in plan.targets.items():
        parent_name, _, child = name.rpartition(".")
        wrapped[name] = LoRALinear(module, r, alpha, cfg.dropout, cfg.use_rslora)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped[name])
    for name in plan.saved:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    model.lora_config = cfg
    return wrapped


def check_lora_fits(model: nn.Module, cfg: LoRAConfig, names: list[str]) -> None:
    """ConfigError if the A and B matrices of modules `names` (r x (in + out) numbers each, in the
    base weight's dtype) would not fit in this machine's memory; checked before one is allocated."""
    nbytes = 0
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear):
            nbytes += cfg.rank_alpha(name)[0] * (module.in_features + module.out_features) * module.weight.element_size()
    try:
        check_fits_memory(nbytes, "adapter", f"the LoRA matrices of {len(names)} modules")
    except CheckpointError as e:
        raise ConfigError(str(e)) from None


def saved_modules(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Full names of the modules `cfg.modules_to_save` names, matched as PEFT matches them (the
    name itself or a module whose name ends in ".name"). A name that matches nothing is skipped,
    as PEFT skips it: a sequence-classification adapter lists both heads' names, "classifier" and
    "score", and a model has one of them. At least one must match (ConfigError otherwise)."""
    out, wanted = [], cfg.modules_to_save or []
    for short in wanted:
        out += [n for n, _ in model.named_modules() if n and (hf_name(model, n) == short
                                                              or hf_name(model, n).endswith("." + short))]
    if wanted and not out:
        raise ConfigError(f"modules_to_save: {type(model).__name__} has no module {' or '.join(map(repr, wanted))}")
    return out


def hf_name(model: nn.Module, name: str) -> str:
    """A module's name in the Hugging Face model PEFT wraps. Ours are the same, except for the bare
    GPT-2 (`GPT2Base`, PEFT's FEATURE_EXTRACTION task), whose blocks sit under `transformer.`
    here and at the top in `transformers`' GPT2Model."""
    return name.removeprefix("transformer.") if isinstance(model, GPT2Base) else name


def adapter_key(model: nn.Module, name: str) -> str:
    """The key prefix of module `name`'s tensors in an adapter file: `base_model.model.<HF name>`."""
    return PREFIX + hf_name(model, name)


def merge(model: nn.Module) -> None:
    """Add every LoRA update into its base weight (the forward pass then skips A and B)."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge(model: nn.Module) -> None:
    """Undo `merge`: subtract every update again."""
    for m in lora_layers(model).values():
        m.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge and put the plain base layers back: a model with the base's own structure and keys
    (so `save_pretrained` writes an ordinary checkpoint). Parameters stay frozen."""
    for name, m in lora_layers(model).items():
        m.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def untie_output_layer(model: GPT2) -> GPT2:
    """A copy of a tied GPT-2 whose output layer `lm_head` is its own matrix (a copy of `wte`):
    the same logits, but a module LoRA can wrap. The adapter's base is then this untied model
    (save it with `save_pretrained` next to the adapter)."""
    if model.lm_head is not None:
        return model
    config = GPT2Config.from_dict({**model.config.to_dict(), "tie_word_embeddings": False}, "untied config")
    untied = GPT2(config).to(next(model.parameters()).device)
    state = dict(model.state_dict())
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    untied.load_state_dict(state)
    return untied.train(model.training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters); a tied weight counts once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# --------------------------------------------------------------------------------------------
# PEFT's folder format
# --------------------------------------------------------------------------------------------

def _is_conv1d_model(model: nn.Module) -> bool:
    return isinstance(model, (GPT2, GPT2ForSequenceClassification, GPT2Base))


def default_target_modules(model: nn.Module) -> list[str]:
    """PEFT's default LoRA targets for the model's family: GPT-2's fused attention input `c_attn`
    (the book's setting), Qwen2's query and value projections `q_proj`, `v_proj`."""
    if _is_conv1d_model(model):
        return ["c_attn"]
    if isinstance(model, (Qwen2, Qwen2ForSequenceClassification)):
        return ["q_proj", "v_proj"]
    raise ConfigError(f"no default LoRA target modules for {type(model).__name__}; give target_modules")


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's key names (A, B, and modules_to_save in full)."""
    cfg: LoRAConfig = getattr(model, "lora_config", None)
    if cfg is None:
        raise ConfigError("the model has no LoRA adapter (call add_lora or load_adapter first)")
    out = {}
    for name, m in lora_layers(model).items():
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
    """From the weights' header (nothing allocated): each `...lora_A.weight` must be (r, in) and each
    `...lora_B.weight` (out, r) with the r `cfg` gives its module, and all of them must fit in
    memory; then no value may be NaN or infinite. No weights file: nothing to check here
    (load_adapter says so)."""
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
        m = re.fullmatch(re.escape(PREFIX) + r"(.+)\.lora_([AB])\.weight", key)
        if m is None:
            continue
        r = cfg.rank_alpha(m.group(1))[0]
        if len(shape) != 2 or shape[0 if m.group(2) == "A" else 1] != r:
            raise CheckpointError(config_path, f"r is {r:,} for {m.group(1)}, but {path.name} holds {key} of shape "
                                               f"{shape} (lora_A is (r, in), lora_B (out, r))")
    check_fits_memory(sum(math.prod(s) * n for s, n in shapes.values()), path, "the adapter's tensors")
    check_finite(tensors, path)


def load_adapter(model: nn.Module, folder: str | os.PathLike) -> LoRAConfig:
    """Wrap `model` as `folder`'s adapter says and load its weights (PEFT's format, or ours).

    Everything is checked before the model changes: the config (`read_adapter_config`), that its
    targets and modules_to_save fit the model (`plan_lora`), and that every expected tensor is in
    the file with its shape and a floating dtype, and nothing else. A refused adapter raises
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
    expected = plan.shapes(model)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(path, f"adapter keys do not fit the model: missing {missing[:4]}, "
                                    f"unexpected {unexpected[:4]}")
    bad = [f"{k} {list(tensors[k].shape)} (expected {list(s)})" for k, s in expected.items() if tensors[k].shape != s]
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
            else:
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
    classifier; FEATURE_EXTRACTION: the bare GPT-2), the adapter loaded, and with `merged`,
    merged into the weights (`merge_and_unload`)."""
    adapter = Path(adapter).expanduser()
    cfg = read_adapter_config(adapter / CONFIG_NAME)
    folder = adapter_base(adapter, base)
    kind = TASK_MODELS.get(cfg.task_type, "unknown")
    if kind == "causal_lm":
        model = load_causal_lm(folder, dtype=dtype, device=device)
    elif kind == "classifier":
        model = load_sequence_classifier(folder, dtype=dtype, device=device)
    elif kind == "base" and model_type(folder) == "gpt2":
        model = GPT2Base.from_pretrained(folder, dtype=dtype, device=device)
    else:
        raise CheckpointError(adapter / CONFIG_NAME, f"task_type {cfg.task_type!r} on a {model_type(folder)} model "
                                                     "is not implemented here (CAUSAL_LM, SEQ_CLS; FEATURE_EXTRACTION "
                                                     "for GPT-2)")
    load_adapter(model, adapter)
    return merge_and_unload(model) if merged else model
