"""Stage emotion_sft (5.3.2): GPT-2 fine-tuned to *write* the emotion of a text.

Each training example is the book's prompt, "Predict the emotion for the following text:
{text}\\nEmotion:", with the label + EOS as the completion (loss on the completion only,
`lm.finetune.sft`). After every epoch the model answers every prompt of the eval split greedily
through the one generation path, and an answer counts when it equals the label after the book's
normalisation. The base is our small GPT-2 (`gpt2_pretrain`) unless `--gpt2 FOLDER` gives real
GPT-2 weights or `--model FOLDER` a GPT-2 or Qwen2 folder (config.json's `model_type` decides;
the answer then ends with the model's own EOS, `eos_token_id`), trained then with the book's
settings (AdamW 5e-5, batch 16, constant rate, no clipping; 2 epochs in --full). `--model` wins
over `--gpt2`. We differ from the book in one detail: at most `max_new_tokens` = 10 new tokens
(the book allows 50), since no label is longer.

`FinetuneSettings`, `setup` and `load_lm` / `load_tokenizer` are shared by the other fine-tuning stages.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lm.checkpoints.hf import TOKENIZER_FILES
from lm.finetune.emotion import (base_budget, describe_base, finetune_emotion_sft, load_emotion_data,
                                 train_config)
from lm.models.auto import load_causal_lm
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2
from lm.tokenizers.gpt2 import FILE_NAMES, GPT2Tokenizer
from lm.tokenizers.hf_json import TOKENIZER_CONFIG, tokenizer_from_dir
from lm.training.engine import TrainConfig
from lm.utils import choose_device

KEY_METRICS = ["accuracy", "accuracy_valid", "eval_split"]
DATA_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]
NEEDS_GPT2 = True
USES_MODEL = True


@dataclass
class FinetuneSettings:
    # our small GPT-2 (the offline default)
    epochs: int = quick_full(3, 4)                  # passes over the training data
    batch_size: int = quick_full(16, 16)            # examples per step
    lr: float = quick_full(1e-3, 5e-4)              # peak learning rate (cosine decay after warm-up)
    warmup_steps: int = quick_full(20, 100)         # linear warm-up steps
    group_by_length: int = quick_full(0, 0)         # k > 0: batches of similar lengths (TrainConfig's field)
    # real weights (--gpt2 or --model): the book's settings
    real_epochs: int = quick_full(1, 2)             # the book: 2 (emotion_sft)
    real_lr: float = quick_full(5e-5, 5e-5)         # the book: 5e-5, constant
    real_batch_size: int = quick_full(16, 16)       # the book: 16
    real_max_train: int | None = quick_full(1000, None)  # first training examples (None: all)
    eval_batch: int = quick_full(64, 64)            # examples scored (generated) together
    val_batches: int = quick_full(4, 20)            # held-out batches for the logged val_loss


@dataclass
class EmotionSettings(FinetuneSettings):
    """The three emotion stages' settings for our small GPT-2 (`gpt2_emotion`, 16,000 tokens):
    larger batches and more epochs than instruct_sft's, measured on the real emotion data."""
    epochs: int = quick_full(5, 5)                  # passes over train.jsonl (emotion_classifier's)
    batch_size: int = quick_full(64, 32)            # examples per step (quick: 64, fewer optimizer steps)
    lr: float = quick_full(2e-3, 1e-3)              # peak learning rate (cosine decay after warm-up)
    group_by_length: int = quick_full(50, 50)       # runs of 50 batches sorted by length: half the padding


@dataclass
class Settings(EmotionSettings):
    epochs: int = quick_full(5, 5)                  # passes over train.jsonl (real data, seeds 0 / 1:
    #   5 epochs 0.907 / 0.894, 3 epochs 0.904 / 0.8735)
    batch_size: int = quick_full(32, 32)            # examples per step (64 learns slower: 0.902 / 0.891)
    max_new_tokens: int = quick_full(10, 10)        # longest generated answer (a label is 1-5 tokens)


@dataclass
class Setup:
    folder: Path          # the base model's folder (our GPT-2, --gpt2 or --model)
    real: bool            # real weights (--gpt2 or --model): the book's settings
    any_family: bool      # --model: a GPT-2 or Qwen2 folder, loaded by its config.json's model_type
    device: object        # torch device
    train: TrainConfig    # the engine's settings
    epochs: int           # passes over the training data
    max_train: int | None  # first training examples kept (None: all)
    base_model: str       # where the weights came from, for every metric
    base: dict | None     # our small GPT-2's size and pretraining budget (`base_budget`); None for real weights


def setup(cfg: RunConfig, s: FinetuneSettings, data_dir: Path, base: str = "gpt2") -> Setup:
    """The base model and the training settings that go with it (ours or the book's). `base`: which
    of our small GPT-2s (`lm.stages.gpt2_pretrain.BASES`) when neither --model nor --gpt2 is given."""
    folder = Path(cfg.model) if cfg.model else pretrained_gpt2(cfg, data_dir, base)
    real = bool(cfg.model or cfg.gpt2)
    tcfg = train_config(real, s.real_lr if real else s.lr, s.real_batch_size if real else s.batch_size,
                        s.warmup_steps, s.val_batches, cfg.device, cfg.seed, 0 if real else s.group_by_length)
    base = describe_base(folder, cfg.model, "--model") if cfg.model else describe_base(folder, cfg.gpt2)
    return Setup(folder, real, bool(cfg.model), choose_device(cfg.device), tcfg,
                 s.real_epochs if real else s.epochs, s.real_max_train if real else None, base,
                 None if real else base_budget(folder))


def load_tokenizer(st: Setup) -> GPT2Tokenizer:
    """The base's tokenizer: `--model`'s through the generic reader (tokenizer.json or vocab.json +
    merges.txt with tokenizer_config.json: GPT-2's or Qwen2's), else GPT-2's vocab.json + merges.txt."""
    return tokenizer_from_dir(st.folder) if st.any_family else GPT2Tokenizer.from_dir(st.folder)


def load_lm(st: Setup) -> tuple[torch.nn.Module, GPT2Tokenizer, int]:
    """(language model, tokenizer, EOS id). `--model`: GPT-2 or Qwen2 as config.json says, EOS from
    its config (`eos_token_id`; Qwen2.5-Instruct: <|im_end|>), else <|endoftext|>; without it the
    chapter 5 GPT-2 and <|endoftext|>, as always."""
    tok = load_tokenizer(st)
    if not st.any_family:
        return GPT2.from_pretrained(st.folder, device=st.device), tok, tok.eot_id
    model = load_causal_lm(st.folder, device=st.device)
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tok.eot_id
    return model, tok, eos


def save_tokenizer(st: Setup, tok: GPT2Tokenizer, folder: Path) -> None:
    """The tokenizer next to a saved model: `--model`'s own tokenizer files copied as they are (a
    Qwen2 tokenizer's pre-tokenizer, specials and chat template live in them), else `tok.save`."""
    if not st.any_family:
        tok.save(folder)
        return
    names = {*TOKENIZER_FILES, TOKENIZER_CONFIG, *(n for pair in FILE_NAMES for n in pair)}
    for name in sorted(names):
        if (st.folder / name).is_file():
            shutil.copyfile(st.folder / name, Path(folder) / name)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    st = setup(cfg, s, data_dir, "gpt2_emotion")
    model, tok, eos = load_lm(st)
    data = load_emotion_data(data_dir, st.max_train)
    metrics = finetune_emotion_sft(model, tok, data, eos, st.train, st.epochs, out_dir, s.max_new_tokens,
                                   s.eval_batch, desc="emotion_sft")
    metrics.update(base_model=st.base_model, base=st.base)
    return metrics
