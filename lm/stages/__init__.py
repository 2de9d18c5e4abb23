"""Stages: one small module per run_all.py stage, in book order (the glue of layer 5).

Every `lm/stages/<name>.py` follows one template:

    @dataclass
    class Settings:                                   # the stage's sizes, --quick and --full side by side
        steps: int = quick_full(500, 2_500)           # what it is
        ...

    KEY_METRICS = ["val_perplexity", ...]             # shown in run_all.py's table
    DATA_FILES = ["news/train.txt", "news/valid.txt"] # files it reads, relative to the data dir
    NEEDS_GPT2 = False                                # True if it calls pretrained_gpt2(cfg, data_dir)

    def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:   # metrics
        ...

`DATA_FILES` lists every file the stage reads (optional splits such as `emotion/test.jsonl` are
left out) and `NEEDS_GPT2` says whether it uses the chapter 5 GPT-2: run_all.py's pre-flight
(`lm/stages/preflight.py`) checks those files, the `--gpt2` folder, or, without `--gpt2`, the
files the small GPT-2 is trained on, before the first stage starts. Both default to nothing
(`data_files`, `needs_gpt2`).

run_all.py picks the quick or full values (`settings_for`), creates `out_dir`, seeds everything,
sets torch's CPU threads (`RunConfig.threads`; put back after the stage), calls `run`, and writes
the metrics it returns to `out_dir/summary.json` and the run's summary. A stage whose module does
not exist yet is reported as `not implemented` and skipped. Stages are thin glue: pick data,
tokenizer, model and algorithm, return metrics. A stage that needs the small pretrained GPT-2
gets its folder from `lm.stages.gpt2_pretrain.pretrained_gpt2(cfg, data_dir)`.

What a stage leaves for the report (`lm/report.py` draws it; stages draw nothing themselves):
the engine's `metrics.jsonl` anywhere under its out dir (loss curves; GRPO's reward, KL and
length), `confusion` and `accuracy_per_epoch` in a classifier's metrics, `perplexity_table` in
count_lm's, `demos.json` (sampling), `descent.json` (quadratic_loss).
"""
from __future__ import annotations

import importlib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

from lm.utils import seed_everything, torch_threads, write_summary

# The book's programs, in book order. These names are fixed: scripts outside the project use them.
STAGE_NAMES = [
    "quadratic_loss", "embedding_vs_linear", "bpe", "count_lm", "rnn_lm", "decoder_lm",
    "gpt2_pretrain", "sampling", "emotion_lr", "emotion_cnn", "emotion_sft", "emotion_lora",
    "emotion_classifier", "instruct_sft", "doc_labeling", "grpo", "grpo_ddp",
]


@dataclass
class RunConfig:
    quick: bool = True           # small sizes so the whole run fits in minutes on a laptop CPU; False = --full
    seed: int = 0                # seeds random, numpy and torch before each stage
    device: str | None = None    # "cpu", "cuda", "mps" or None for the best available
    quiet: bool = False          # no progress bars or per-stage chatter
    gpt2: str | None = None      # folder with real GPT-2 weights (HF layout), or a hub name to download
    model: str | None = None     # a Hugging Face model folder (GPT-2 or Qwen2) for the fine-tuning and GRPO stages
    threads: int | None = None   # torch CPU threads (None: torch's default)
    run_dir: Path | None = None  # the run's out dir (stages write into run_dir/<stage>); shared caches live here


def quick_full(quick: Any, full: Any):
    """A Settings field with its --quick value (the default) and its --full value side by side.

    >>> @dataclass
    ... class Settings:
    ...     steps: int = quick_full(500, 2_500)   # optimizer steps
    >>> settings_for(Settings, quick=False).steps
    2500
    """
    if isinstance(quick, (list, dict, set)):
        return field(default_factory=lambda: type(quick)(quick), metadata={"full": full})
    return field(default=quick, metadata={"full": full})


def settings_for(cls, quick: bool):
    """An instance of the stage's `Settings` with its quick or its full values."""
    if quick:
        return cls()
    values = {}
    for f in fields(cls):
        if "full" in f.metadata:
            full = f.metadata["full"]
            values[f.name] = type(full)(full) if isinstance(full, (list, dict, set)) else full
        elif f.default is MISSING and f.default_factory is MISSING:
            raise TypeError(f"{cls.__qualname__}.{f.name} has neither a default nor quick_full values")
    return cls(**values)


def load_stage(name: str) -> ModuleType | None:
    """The stage's module, or None if it is not implemented yet."""
    try:
        return importlib.import_module(f"lm.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"lm.stages.{name}":
            return None
        raise


def data_files(module: ModuleType) -> list[str]:
    """The stage's `DATA_FILES` (relative to the data dir); none if it declares none."""
    return list(getattr(module, "DATA_FILES", []))


def needs_gpt2(module: ModuleType) -> bool:
    """The stage's `NEEDS_GPT2`: does it use the chapter 5 GPT-2 (`pretrained_gpt2`)?"""
    return bool(getattr(module, "NEEDS_GPT2", False))


def uses_model(module: ModuleType) -> bool:
    """The stage's `USES_MODEL`: does it start from `--model FOLDER` (a GPT-2 or Qwen2 folder) when given?"""
    return bool(getattr(module, "USES_MODEL", False))


def run_stage(name: str, cfg: RunConfig, data_dir: Path, out_dir: Path, module: ModuleType | None = None) -> dict:
    """Run one stage the way run_all.py does: seed, set torch's threads (`cfg.threads`), pick its
    settings, make `out_dir`, run, and write the metrics to `out_dir/summary.json`. Returns the
    metrics. `module`: the stage's module if already loaded (default: `load_stage(name)`).

    torch's thread count is put back afterwards, whatever the stage did with it, so what runs next
    (the next stage, or the caller's own code) is not left on one thread."""
    module = module or load_stage(name)
    if module is None:
        raise NotImplementedError(f"stage {name} is not implemented")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.run_dir is None:
        cfg = RunConfig(**{**vars(cfg), "run_dir": out_dir.parent})
    with torch_threads(cfg.threads):
        seed_everything(cfg.seed)
        metrics = module.run(cfg, settings_for(module.Settings, cfg.quick), Path(data_dir), out_dir)
    write_summary(out_dir, metrics)
    return metrics
