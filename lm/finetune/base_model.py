"""The base model a fine-tuning run starts from: whose weights, which family, its tokenizer and EOS,
and the engine settings that go with it.

Two kinds of base, told apart once here (`BaseModel.real`), not in each stage:

- our small GPT-2, pretrained by the run (`lm.stages.gpt2_pretrain`): fine-tuned with our
  settings (cosine decay after a warm-up, clipping), and its size and pretraining budget
  (`pretrain.json`) are reported with every result;
- real weights someone else trained (`--model FOLDER`, alias `--gpt2 FOLDER`: a Hugging Face GPT-2
  or Qwen2 folder): fine-tuned with the book's settings (AdamW, constant rate, no clipping).

Either way the folder is a Hugging Face folder, loaded the same way: the family from config.json's
`model_type` (`lm.models.auto`), the tokenizer by the generic reader, the EOS from the config.

    >>> base = base_model("runs/x/pretrained/emotion")                  # doctest: +SKIP
    >>> base.real                                                       # doctest: +SKIP
    False
    >>> model, tok, eos = load_lm(base, device="cpu")                   # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lm.checkpoints.hf import TOKENIZER_FILES
from lm.errors import ConfigError
from lm.models.auto import CAUSAL_LM, load_causal_lm, model_type
from lm.tokenizers.gpt2 import FILE_NAMES, GPT2Tokenizer
from lm.tokenizers.hf_json import TOKENIZER_CONFIG, tokenizer_from_dir
from lm.training.engine import TrainConfig


@dataclass(frozen=True)
class BaseModel:
    folder: Path          # the weights' folder (Hugging Face layout, with its tokenizer files)
    given: str | None     # the --model value it came from, as typed; None: our small GPT-2
    family: str           # config.json's model_type (a key of lm.models.auto.CAUSAL_LM)
    source: str           # where the weights came from, for every metric's `base_model`
    budget: dict | None   # our small GPT-2's size and pretraining budget (`base_budget`); None for real weights

    @property
    def real(self) -> bool:
        """Weights trained elsewhere (given with --model): fine-tuned with the book's settings."""
        return self.given is not None

    def require(self, model_class: type, why: str) -> "BaseModel":
        """This base, if it is of `model_class`'s family; else a ConfigError naming the folder
        (e.g. a Qwen2 folder for a stage that builds GPT-2)."""
        if CAUSAL_LM[self.family] is not model_class:
            raise ConfigError(f"--model {self.given or self.folder}: config.json says model_type "
                              f"{self.family!r}, but {why} (give a {family_name(model_class)} folder)")
        return self


def base_model(folder: str | os.PathLike, given: str | None = None) -> BaseModel:
    """The base in `folder`: real weights when `given` (the --model value it came from), else our
    small GPT-2 (its folder then holds `pretrain.json`)."""
    folder, family = Path(folder), model_type(folder)
    if given:
        return BaseModel(folder, given, family, f"{family} weights from --model {given}", None)
    info = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))
    return BaseModel(folder, None, family, describe_small_gpt2(folder, info), base_budget(info))


def family_name(model_class: type) -> str:
    """config.json's `model_type` of one of our model classes (its config class states it)."""
    return model_class.config_class.model_type


def describe_small_gpt2(folder: Path, info: dict) -> str:
    """Our small GPT-2 in words, for every metric's `base_model` (`info`: its pretrain.json)."""
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    corpus = "news" + (" and the tasks' training texts" if info.get("task_texts") else "")
    seconds = f", {info['seconds']:.0f} s" if info.get("seconds") is not None else ""
    size = f"{info['parameters'] / 1e6:.2f} M parameters: " if info.get("parameters") else ""
    return (f"small GPT-2 pretrained here on the data dir's {corpus} ({size}{cfg['n_layer']} layers, width "
            f"{cfg['n_embd']}, vocab {cfg['vocab_size']}; {info.get('steps')} steps, {info.get('tokens'):,} tokens{seconds})")


def base_budget(info: dict) -> dict:
    """Size and pretraining budget of a small GPT-2 pretrained by the run, from its pretrain.json
    (`info`): parameters, layers, width, vocabulary, context, steps, tokens, seconds, texts."""
    keys = ("parameters", "layers", "width", "vocab_size", "context", "steps", "tokens", "seconds", "pretraining_texts")
    return {k: info.get(k) for k in keys}


# --------------------------------------------------------------------------------------------
# Model, tokenizer and EOS; the tokenizer beside a saved model
# --------------------------------------------------------------------------------------------

def load_lm(base: BaseModel, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, GPT2Tokenizer, int]:
    """(language model, tokenizer, EOS id): the model of config.json's family, the tokenizer by the
    generic reader (tokenizer.json, or vocab.json + merges.txt with tokenizer_config.json: GPT-2's
    or Qwen2's), the EOS from the config (`eos_token_id`; Qwen2.5-Instruct: <|im_end|>), else
    <|endoftext|>."""
    tok = tokenizer_from_dir(base.folder)
    model = load_causal_lm(base.folder, device=device)
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tok.eot_id
    return model, tok, eos


def save_tokenizer(base: BaseModel, folder: str | os.PathLike) -> None:
    """The base's tokenizer files copied, as they are, next to a model saved in `folder` (a Qwen2
    tokenizer's pre-tokenizer, specials and chat template live in them)."""
    names = {*TOKENIZER_FILES, TOKENIZER_CONFIG, *(n for pair in FILE_NAMES for n in pair)}
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        if (base.folder / name).is_file():
            shutil.copyfile(base.folder / name, Path(folder) / name)


# --------------------------------------------------------------------------------------------
# The engine's settings for the base
# --------------------------------------------------------------------------------------------

def train_config(book: bool, lr: float, batch_size: int, warmup_steps: int, eval_batches: int | None,
                 device: str | None, seed: int, group_by_length: int = 0) -> TrainConfig:
    """The engine's settings for a fine-tuning run. `book`: the book's (AdamW, constant rate, no
    warm-up, no clipping), used with real weights; else cosine decay after a warm-up with
    clipping at 1.0, which trains our small GPT-2 faster. `group_by_length`: batches of similar
    lengths (TrainConfig's field; the emotion stages use it for our small GPT-2)."""
    if book:
        return TrainConfig(lr=lr, batch_size=batch_size, schedule="constant", warmup_steps=0, grad_clip=0.0,
                           eval_batches=eval_batches, log_interval=10, device=device, seed=seed)
    return TrainConfig(lr=lr, batch_size=batch_size, warmup_steps=warmup_steps, eval_batches=eval_batches,
                       log_interval=10, device=device, seed=seed, group_by_length=group_by_length)
