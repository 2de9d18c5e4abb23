"""The emotion task (5.3-5.6) as the fine-tuning stages share it (GPT-2 or Qwen2): splits, scores, the report.

Which split a number is on (the same rule for every emotion stage): train on `train.jsonl`,
choose nothing on the test split, report `accuracy` on `eval_split(data_dir, "emotion")` (the
test split when the data dir has one, else valid) and `accuracy_valid` always.

    >>> data = load_emotion_data("data")                                 # doctest: +SKIP
    >>> data.eval_split, len(data.train), len(data.eval)                  # doctest: +SKIP
    ('test', 4000, 500)
    >>> label_scores(["joy", "sadness"], ["joy", "joy"])["accuracy"]
    0.5
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from lm.data.loaders import EMOTION_LABELS, EmotionExample, data_file, eval_split, load_emotion
from lm.finetune.classifier import ClassificationExamples, classification_loss, labels_of, predict
from lm.finetune.epochs import train_by_epoch
from lm.finetune.metrics import accuracy, confusion
from lm.finetune.sft import (EMOTION_TEMPLATE, SFTExamples, completion_loss, emotion_pair, generate_completions,
                             normalize)
from lm.models.auto import context_length
from lm.models.gpt2 import GPT2ForSequenceClassification
from lm.training.engine import TrainConfig


@dataclass
class EmotionData:
    train: list[EmotionExample]   # emotion/train.jsonl: the only split trained on
    valid: list[EmotionExample]   # emotion/valid.jsonl: accuracy_valid
    eval: list[EmotionExample]    # the split `accuracy` is reported on (test.jsonl if present, else valid)
    eval_split: str               # "test" or "valid"


def load_emotion_data(data_dir: str | os.PathLike, max_train: int | None = None) -> EmotionData:
    """The three splits, checked (unknown label or empty text -> DataError naming file and line).
    Every emotion stage reads its data here.

    `max_train` keeps the first examples of train.jsonl only (quick runs)."""
    train = load_emotion(data_file(data_dir, "emotion/train.jsonl"))
    valid = load_emotion(data_file(data_dir, "emotion/valid.jsonl"))
    name, path = eval_split(data_dir, "emotion")
    evaluation = valid if name == "valid" else load_emotion(path)
    return EmotionData(train[:max_train] if max_train else train, valid, evaluation, name)


def label_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] = EMOTION_LABELS) -> dict:
    """{"accuracy" (4 digits), "confusion": {"labels", "matrix"}}: rows = true label, columns =
    predicted; a prediction outside `labels` (a generated answer can be anything) counts as wrong
    and goes to an extra "(other)" column (`lm.finetune.metrics.confusion`)."""
    return {"accuracy": round(accuracy(gold, predicted), 4), "confusion": confusion(gold, predicted, labels)}


# --------------------------------------------------------------------------------------------
# The shared run: train by epochs, score the eval split after each, report both splits
# --------------------------------------------------------------------------------------------

def finetune_and_score(model: torch.nn.Module, train_ex, val_ex, data: EmotionData, cfg: TrainConfig, epochs: int,
                       out_dir: str | os.PathLike | None, loss_fn: Callable, predict_eval: Callable,
                       predict_valid: Callable, labels: Sequence[str], desc: str) -> dict:
    """Fine-tune `model` by epochs (`train_by_epoch`), scoring the eval split after every epoch.

    `predict_eval(model)` / `predict_valid(model)`: the predicted label of each text of the eval
    split / of valid.jsonl. Returns the stage metrics: accuracy (eval split), accuracy_valid,
    confusion, accuracy_per_epoch, loss_per_epoch, eval_split and the engine's numbers.
    """
    gold, last = [e.label for e in data.eval], {}

    def score(m):   # after every epoch; the last one's predictions are the final ones
        last["pred"] = predict_eval(m)
        return {"accuracy": label_scores(gold, last["pred"], labels)["accuracy"]}

    res = train_by_epoch(model, train_ex, val_ex, cfg, epochs, out_dir, loss_fn=loss_fn, score=score, desc=desc)
    final = label_scores(gold, last["pred"], labels)
    if data.eval_split == "valid":
        accuracy_valid = final["accuracy"]
    else:
        accuracy_valid = label_scores([e.label for e in data.valid], predict_valid(model), labels)["accuracy"]
    return {"accuracy": final["accuracy"], "eval_split": data.eval_split, "accuracy_valid": accuracy_valid,
            "confusion": final["confusion"], "accuracy_per_epoch": [e["accuracy"] for e in res["per_epoch"]],
            "loss_per_epoch": res["loss_per_epoch"], "train_examples": len(train_ex),
            "truncated_examples": train_ex.truncated,
            **{k: res.get(k) for k in ("steps", "tokens", "val_loss", "seconds_train", "seconds_score",
                                       "tokens_per_s")}}


# --------------------------------------------------------------------------------------------
# Emotion as text generation (5.3.2, and 5.5.2 with LoRA)
# --------------------------------------------------------------------------------------------

def predict_sft(model: torch.nn.Module, tok, texts: Sequence[str], eos_id: int, max_new_tokens: int,
                batch_size: int) -> list[str]:
    """The generated label of each text (greedy, the book's template), normalised."""
    prompts = [EMOTION_TEMPLATE.format(text=t) for t in texts]
    out = generate_completions(model, tok, prompts, max_new_tokens, eos_id=eos_id, batch_size=batch_size)
    return [normalize(a) for a in out]


def finetune_emotion_sft(model: torch.nn.Module, tok, data: EmotionData, eos_id: int, cfg: TrainConfig,
                         epochs: int, out_dir: str | os.PathLike | None, max_new_tokens: int = 8,
                         eval_batch: int = 64, desc: str = "emotion_sft") -> dict:
    """Fine-tune `model` to write each text's label, scoring the eval split after every epoch.

    Returns the stage metrics (`finetune_and_score`).
    """
    context = context_length(model.config)
    train_ex = SFTExamples([emotion_pair(e.text, e.label) for e in data.train], tok, eos_id, context=context)
    val_ex = SFTExamples([emotion_pair(e.text, e.label) for e in data.valid], tok, eos_id, context=context)

    def predictions(split):
        return lambda m: predict_sft(m, tok, [e.text for e in split], eos_id, max_new_tokens, eval_batch)

    return finetune_and_score(model, train_ex, val_ex, data, cfg, epochs, out_dir, completion_loss,
                              predictions(data.eval), predictions(data.valid), EMOTION_LABELS, desc)


# --------------------------------------------------------------------------------------------
# Emotion with a classification head (5.6)
# --------------------------------------------------------------------------------------------

def finetune_emotion_classifier(model: GPT2ForSequenceClassification, tok, data: EmotionData, cfg: TrainConfig,
                                epochs: int, out_dir: str | os.PathLike | None, eval_batch: int = 64,
                                desc: str = "emotion_classifier") -> dict:
    """Fine-tune a GPT-2 or Qwen2 with a `score` head on the emotion labels, scoring after every epoch.

    Returns the same metrics as `finetune_emotion_sft`.
    """
    labels = labels_of(model.config)

    def examples(split):
        return ClassificationExamples([e.text for e in split], [e.label for e in split], tok, model.config)

    train_ex, val_ex = examples(data.train), examples(data.valid)
    eval_ex = val_ex if data.eval_split == "valid" else examples(data.eval)

    def predictions(ex):
        return lambda m: [labels[i] for i in predict(m, ex, eval_batch)]

    return finetune_and_score(model, train_ex, val_ex, data, cfg, epochs, out_dir, classification_loss,
                              predictions(eval_ex), predictions(val_ex), labels, desc)
