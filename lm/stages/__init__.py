"""Stages: one small module per run_all.py stage, in book order (the glue of layer 5).

Every `lm/stages/<name>.py` follows one template:

    @dataclass
    class Settings:                                   # the stage's sizes, --quick and --full side by side
        steps: int = quick_full(500, 2_500)           # what it is
        ...

    KEY_METRICS = ["val_perplexity", ...]             # shown in run_all.py's table
    DATA_FILES = ["news/train.txt", "news/valid.txt"] # files it reads, relative to the data dir
    NEEDS_GPT2 = False                                # True if it starts from the chapter 5 base model
    USES_MODEL = False                                # True if that base may be of any family (GPT-2, Qwen2)

    def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:   # metrics
        ...

`DATA_FILES` lists every file the stage reads (optional splits such as `emotion/test.jsonl` are
left out). `NEEDS_GPT2` says whether it starts from the chapter 5 base: the `--model` folder
(alias `--gpt2`), else the small GPT-2 the run pretrains (`lm.stages.gpt2_pretrain.choose_base`).
`USES_MODEL` says the `--model` folder may then be of any family we implement; a stage that
needs the base without it builds GPT-2 and takes GPT-2 folders only. run_all.py's pre-flight
(`lm/stages/preflight.py`) checks those files, the `--model` folder, or, without it, the files
the small GPT-2 is trained on, before the first stage starts. All three default to nothing
(`data_files`, `needs_gpt2`, `uses_model`).

run_all.py picks the quick or full values (`settings_for`), creates `out_dir`, seeds everything,
sets torch's CPU threads (`RunConfig.threads`; put back after the stage), calls `run`, and writes
the metrics it returns to `out_dir/summary.json` and the run's summary. A stage whose module does
not exist yet is reported as `not implemented` and skipped. Stages are thin glue: pick data,
tokenizer, model and algorithm, return metrics. A stage reads the base-model choice from
`choose_base(cfg, data_dir)` (ours or real weights, decided there once) and, for real weights,
the book's settings from its `real_*` fields (`for_base`). Settings several stages share
(`LMSettings`, `FinetuneSettings`, `EmotionSettings`) are defined here, not in one of them.

What a stage leaves for the report (`lm/report.py` draws it; stages draw nothing themselves):
the engine's `metrics.jsonl` anywhere under its out dir (loss curves; GRPO's reward, KL and
length), `confusion` and `accuracy_per_epoch` in a classifier's metrics, `perplexity_table` in
count_lm's, `demos.json` (sampling), `descent.json` (quadratic_loss).
"""
from __future__ import annotations

import importlib
from dataclasses import MISSING, InitVar, dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from lm.errors import ConfigError
from lm.finetune.base_model import train_config
from lm.pretraining.pretrain import train_language_model
from lm.training.engine import TrainConfig
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
    model: str | None = None     # real weights: a Hugging Face model folder (GPT-2 or Qwen2) or a hub name;
    #                              None: the small GPT-2s this run pretrains (`gpt2_pretrain.choose_base`)
    threads: int | None = None   # torch CPU threads (None: torch's default)
    run_dir: Path | None = None  # the run's out dir (stages write into run_dir/<stage>); shared caches live here
    gpt2: InitVar[str | None] = None   # another name for `model` (run_all.py's --gpt2), stored there

    def __post_init__(self, gpt2: str | None) -> None:
        if gpt2 is not None and self.model is not None and gpt2 != self.model:
            raise ConfigError(f"gpt2={gpt2!r} and model={self.model!r}: two names for one setting (the base "
                              "model's folder); give one")
        if gpt2 is not None:
            self.model = gpt2


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


def for_base(s, real: bool):
    """The settings `s` as a stage runs them on its base: for real weights (`BaseModel.real`) each
    `real_X` field's value in place of `X` (the book's settings for weights trained elsewhere),
    for our small GPT-2 `s` as it is. A `real_X` field without an `X` is a TypeError.

    >>> @dataclass
    ... class Settings:
    ...     lr: float = 2e-3          # our small GPT-2
    ...     real_lr: float = 5e-5     # real weights: the book's
    >>> for_base(Settings(), real=True).lr, for_base(Settings(), real=False).lr
    (5e-05, 0.002)
    """
    if not real:
        return s
    names = {f.name for f in fields(s)}
    swap = {}
    for name in sorted(names):
        if name.startswith("real_"):
            plain = name[len("real_"):]
            if plain not in names:
                raise TypeError(f"{type(s).__qualname__}.{name} stands in for no field {plain!r}")
            swap[plain] = getattr(s, name)
    return replace(s, **swap)


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
    """The stage's `NEEDS_GPT2`: does it start from the chapter 5 base (`gpt2_pretrain.choose_base`)?"""
    return bool(getattr(module, "NEEDS_GPT2", False))


def uses_model(module: ModuleType) -> bool:
    """The stage's `USES_MODEL`: may its base (`--model FOLDER`) be of any family (GPT-2 or Qwen2)?
    A stage that `NEEDS_GPT2` without it builds GPT-2, and takes GPT-2 folders only."""
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


# --------------------------------------------------------------------------------------------
# Settings several stages share (quick and full values side by side, as every stage's own)
# --------------------------------------------------------------------------------------------

@dataclass
class LMSettings:
    """rnn_lm and decoder_lm (chapters 3-4): the very same data, tokenizer, settings and token budget
    for both models, so their validation perplexities compare directly."""
    train_lines: int | None = quick_full(20_000, None)   # sentences of news/train.txt (None: all)
    valid_lines: int | None = quick_full(2_000, None)    # sentences of news/valid.txt (None: all)
    vocab_size: int = quick_full(2000, 8000)             # the book's BPE, trained on the train split
    steps: int | None = quick_full(500, None)            # optimizer steps (None: from max_tokens)
    max_tokens: int | None = quick_full(None, 2_400_000) # token budget when steps is None
    warmup_steps: int = quick_full(50, 100)              # linear warm-up
    eval_interval: int = quick_full(0, 500)              # steps between evaluations (0: at the end)
    eval_batches: int | None = quick_full(16, None)      # validation batches (None: all)
    checkpoint_interval: int = quick_full(0, 500)        # steps between checkpoints (0: at the end)
    lr: float = quick_full(3e-3, 3e-3)                   # peak learning rate
    batch_size: int = quick_full(32, 32)                 # sentences per step
    context: int = quick_full(30, 30)                    # tokens per sentence (the book's 30)

    def train_config(self, cfg: RunConfig) -> TrainConfig:
        """The engine's settings for either model."""
        return TrainConfig(lr=self.lr, warmup_steps=self.warmup_steps, batch_size=self.batch_size,
                           context=self.context, max_steps=self.steps, max_tokens=self.max_tokens,
                           eval_interval=self.eval_interval, eval_batches=self.eval_batches,
                           checkpoint_interval=self.checkpoint_interval, device=cfg.device, seed=cfg.seed)

    def train(self, kind: str, cfg: RunConfig, data_dir: Path, out_dir: Path) -> dict:
        """Train the `kind` model ("rnn" or "transformer") on news with these settings: the whole
        of stage rnn_lm or decoder_lm. Returns its metrics."""
        return train_language_model(kind, data_dir, out_dir, self.train_config(cfg), vocab_size=self.vocab_size,
                                    max_train_lines=self.train_lines, max_valid_lines=self.valid_lines)


LM_KEY_METRICS = ["val_perplexity", "tokens", "tokens_per_s"]   # rnn_lm's and decoder_lm's
LM_DATA_FILES = ["news/train.txt", "news/valid.txt"]
EMOTION_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]  # the emotion stages' (test.jsonl optional)
EMOTION_KEY_METRICS = ["accuracy", "accuracy_valid", "eval_split"]  # emotion_sft's and emotion_classifier's


@dataclass
class FinetuneSettings:
    """The fine-tuning stages' common settings (emotion_sft, emotion_lora, emotion_classifier,
    instruct_sft). Run through `for_base`: with real weights the `real_*` fields take the place of
    the plain ones."""
    # our small GPT-2 (the offline default)
    epochs: int = quick_full(3, 4)                  # passes over the training data
    batch_size: int = quick_full(16, 16)            # examples per step
    lr: float = quick_full(1e-3, 5e-4)              # peak learning rate (cosine decay after warm-up)
    warmup_steps: int = quick_full(20, 100)         # linear warm-up steps
    group_by_length: int = quick_full(0, 0)         # k > 0: batches of similar lengths (TrainConfig's field)
    max_train: int | None = quick_full(None, None)  # first training examples (None: all)
    # real weights (--model or --gpt2): the book's settings
    real_epochs: int = quick_full(1, 2)             # the book: 2 (emotion_sft)
    real_lr: float = quick_full(5e-5, 5e-5)         # the book: 5e-5, constant
    real_batch_size: int = quick_full(16, 16)       # the book: 16
    real_max_train: int | None = quick_full(1000, None)  # first training examples (None: all)
    eval_batch: int = quick_full(64, 64)            # examples scored (generated) together
    val_batches: int = quick_full(4, 20)            # held-out batches for the logged val_loss

    def train_config(self, book: bool, cfg: RunConfig) -> TrainConfig:
        """The engine's settings (`lm.finetune.base_model.train_config`); `book`: real weights."""
        return train_config(book, self.lr, self.batch_size, self.warmup_steps, self.val_batches, cfg.device,
                            cfg.seed, self.group_by_length)


@dataclass
class EmotionSettings(FinetuneSettings):
    """The three emotion stages' settings for our small GPT-2 (the `emotion` base, 16,000 tokens):
    larger batches and more epochs than instruct_sft's, measured on the real emotion data."""
    epochs: int = quick_full(5, 5)                  # passes over train.jsonl (emotion_classifier's)
    batch_size: int = quick_full(64, 32)            # examples per step (quick: 64, fewer optimizer steps)
    lr: float = quick_full(2e-3, 1e-3)              # peak learning rate (cosine decay after warm-up)
    group_by_length: int = quick_full(50, 50)       # runs of 50 batches sorted by length: half the padding
