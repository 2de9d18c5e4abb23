"""LoRA layers (5.5.2): fine-tune a frozen model through small low-rank updates of chosen layers.

A linear layer computes y = x W^T + b with W of shape (out, in). LoRA freezes W and learns
ΔW = (alpha / r) * B A, with A (r, in) and B (out, r) and r much smaller than in and out:

    y = x W^T + b + (alpha / r) * (dropout(x) A^T) B^T

A starts Kaiming-uniform and B at zero, so the wrapped model starts as exactly the base model and
the update grows from there. Only A and B are trained: for GPT-2 124M with r=16 on `c_attn`
(the book's setting, PEFT's default for GPT-2) that is 0.59 M of 124 M parameters, and AdamW's
two moment buffers shrink by the same factor. `merge()` adds ΔW into W (inference then costs
what the base model costs); `unmerge()` takes it out again.

An embedding E (V, C) looks rows up; LoRA learns ΔE = (alpha / r) (B A)^T with A (r, V) at zero
and B (C, r) normal (PEFT's `lora.Embedding`, no dropout). A small model whose word embeddings
learned little can move thousands of them this way, which no update of the layers above can.
A tied output layer is no module, so LoRA cannot wrap it (`untie_output_layer` makes it one); LoRA
on a tied embedding changes the input side only, as in PEFT (and merging it is refused here).

`plan_lora` checks everything before the model changes. Adapters are saved and loaded in PEFT's
folder format by `lora.py`, from which everything here can be imported too.

    >>> model = GPT2.from_pretrained("runs/x/pretrained/gpt2")                    # doctest: +SKIP
    >>> add_lora(model, LoRAConfig(r=16, alpha=32, target_modules=["c_attn", "wte"]))  # doctest: +SKIP
    >>> save_adapter(model, "runs/adapter"); load_adapter(fresh_model, "runs/adapter")  # doctest: +SKIP
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.checkpoints.checks import check_fits_memory
from lm.errors import CheckpointError, ConfigError
from lm.models.fast_linear import linear
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config
from lm.utils import show

MAX_SCALING = 65504.0          # the largest float16: a bigger alpha / r overflows a half-precision update


@dataclass
class LoRAConfig:
    r: int = 16                                   # rank of the update B A (the book: 16)
    alpha: float = 32                             # scaling = alpha / r (the book: 32)
    dropout: float = 0.0                          # dropout on the input of A while training (PEFT's default 0;
    #   linear layers only: PEFT applies none to embeddings)
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


class LoRALayer(nn.Module):
    """What both wrapped layer types share: a frozen `base` layer, the update's `scaling`, and
    merging `delta_weight()` (shaped like the base weight) into the base weight and out again."""

    def __init__(self, base: nn.Linear | nn.Embedding, r: int, alpha: float, use_rslora: bool):
        super().__init__()
        self.base = base
        self.r = r
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.merged = False
        for p in self.base.parameters():
            p.requires_grad_(False)

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


class LoRALinear(LoRALayer):
    """A frozen `nn.Linear` plus the trainable low-rank update (alpha / r) * B A."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__(base, r, alpha, use_rslora)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))   # as nn.Linear and PEFT
        nn.init.zeros_(self.lora_B.weight)                               # the update starts at 0
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

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


class LoRAEmbedding(LoRALayer):
    """A frozen `nn.Embedding` plus the trainable update ΔE = (alpha / r) (B A)^T, as PEFT's
    `lora.Embedding`: A (r, V) starts at zero, B (C, r) standard normal; no dropout (PEFT has none)."""

    def __init__(self, base: nn.Embedding, r: int, alpha: float, use_rslora: bool = False):
        super().__init__(base, r, alpha, use_rslora)
        w = base.weight                                                   # (V, C)
        self.lora_embedding_A = nn.Parameter(torch.zeros(r, base.num_embeddings, device=w.device, dtype=w.dtype))
        self.lora_embedding_B = nn.Parameter(torch.empty(base.embedding_dim, r, device=w.device, dtype=w.dtype))
        nn.init.normal_(self.lora_embedding_B)                            # (C, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)                                                  # (..., C)
        if self.merged:
            return y
        b = self.base                                                     # its lookup options, as PEFT passes them
        h = F.embedding(x, self.lora_embedding_A.t(), b.padding_idx, b.max_norm, b.norm_type,
                        b.scale_grad_by_freq, b.sparse)                   # (..., r): A's column per token
        return y + (h @ self.lora_embedding_B.t()) * self.scaling         # (..., C)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (V, C) as PEFT's `layer.weight`, not W + ΔW as LoRALinear's: what reads
        `wte.weight` besides `forward` is a tied output layer, and PEFT's keeps the base weight."""
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def delta_weight(self) -> torch.Tensor:
        """ΔE = scaling * (B A)^T, shaped like the base weight (V, C)."""
        return (self.lora_embedding_B @ self.lora_embedding_A).t() * self.scaling    # (V, C)


# --------------------------------------------------------------------------------------------
# Wrapping a model
# --------------------------------------------------------------------------------------------

def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """The model's LoRA layers by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALayer)}


@dataclass
class LoRAPlan:
    """What `add_lora` will do to a model, worked out (and checked) before anything changes."""
    targets: dict[str, tuple[nn.Linear | nn.Embedding, int, float]]   # module name -> (the layer, r, alpha)
    saved: list[str]                                    # full names of the modules trained in full


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
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            raise ConfigError(f"target module {name} is a {type(module).__name__}; LoRA wraps linear and "
                              "embedding layers only")
        r, alpha = cfg.rank_alpha(hf_name(model, name))
        targets[name] = (module, r, alpha)
    return LoRAPlan(targets, saved_modules(model, cfg))


def add_lora(model: nn.Module, cfg: LoRAConfig | None = None) -> dict[str, LoRALayer]:
    """Freeze `model` and wrap every target layer in a LoRALinear or LoRAEmbedding (in place);
    return them. `cfg.modules_to_save` stay trainable in full. The config is kept as
    `model.lora_config`. Everything is checked first (`plan_lora`): a ConfigError leaves the model
    as it was."""
    cfg = cfg or LoRAConfig()
    return _apply(model, cfg, plan_lora(model, cfg))


def _apply(model: nn.Module, cfg: LoRAConfig, plan: LoRAPlan) -> dict[str, LoRALayer]:
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, (module, r, alpha) in plan.targets.items():
        parent_name, _, child = name.rpartition(".")
        wrapped[name] = (LoRAEmbedding(module, r, alpha, cfg.use_rslora) if isinstance(module, nn.Embedding)
                         else LoRALinear(module, r, alpha, cfg.dropout, cfg.use_rslora))
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped[name])
    for name in plan.saved:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    model.lora_config = cfg
    return wrapped


def check_lora_fits(model: nn.Module, cfg: LoRAConfig, names: list[str]) -> None:
    """ConfigError if the A and B matrices of modules `names` (r x (in + out) numbers each, r x (V + C)
    for an embedding, in the base weight's dtype) would not fit in this machine's memory; checked
    before one is allocated."""
    nbytes = 0
    for name in names:
        m = model.get_submodule(name)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            n = m.in_features + m.out_features if isinstance(m, nn.Linear) else m.num_embeddings + m.embedding_dim
            nbytes += cfg.rank_alpha(name)[0] * n * m.weight.element_size()
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


def merge(model: nn.Module) -> None:
    """Add every LoRA update into its base weight (the forward pass then skips A and B)."""
    _check_merge_allowed(model)
    for m in lora_layers(model).values():
        m.merge()


def unmerge(model: nn.Module) -> None:
    """Undo `merge`: subtract every update again."""
    for m in lora_layers(model).values():
        m.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge and put the plain base layers back: a model with the base's own structure and keys
    (so `save_pretrained` writes an ordinary checkpoint). Parameters stay frozen."""
    _check_merge_allowed(model)
    for name, m in lora_layers(model).items():
        m.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return model


def _check_merge_allowed(model: nn.Module) -> None:
    """ConfigError if an adapted embedding is also the (tied) output layer: merging would add its update
    to the output layer too, so the merged model would not compute what the adapted one does (PEFT
    merges anyway, with a warning)."""
    if getattr(model, "lm_head", False) is not None:               # untied, or no language-model head
        return
    tied = [n for n, m in lora_layers(model).items() if isinstance(m, LoRAEmbedding)
            and m.base.weight is model.output_weight()]
    if tied:
        raise ConfigError(f"cannot merge the LoRA update of {tied[0]}: it is tied to the output layer, which "
                          "would change too; use the adapted model unmerged, or untie_output_layer before add_lora")


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

