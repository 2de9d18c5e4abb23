"""GPT-2 as a classifier (5.6): a linear `score` head read at each text's last real token.

Instead of generating the label, put a small linear layer (`score`, n_embd -> number of labels,
no bias) on top of the transformer and read it at the last token of each text: in a causal model
that is the only position that has seen the whole text. Train everything with cross-entropy over
the labels; predict with argmax. The model is `lm.models.gpt2.GPT2ForSequenceClassification`, or
`lm.models.qwen2.Qwen2ForSequenceClassification` for a Qwen2 folder (the same head on Qwen2's
decoder; config.json's `model_type` decides).

Batches are padded on the right, and the last real token of each row is found from the
attention mask. (We differ from the book here: it pads with id 0 while its `pad_token_id` is
50256, so the library never finds a pad and scores padded rows at a pad position.) The label
names travel with the model: `id2label` / `label2id` in config.json.

    >>> model = classifier_from_lm("runs/x/pretrained/gpt2", EMOTION_LABELS, pad_token_id=eos)  # doctest: +SKIP
    >>> ex = ClassificationExamples(texts, labels, tok, model.config)                           # doctest: +SKIP
    >>> train(model, ex, val_ex, TrainConfig(lr=5e-5), "runs/cls", loss_fn=classification_loss)  # doctest: +SKIP
    >>> predict(model, test_ex)                                                                  # doctest: +SKIP
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.models.auto import context_length, family
from lm.models.gpt2 import GPT2Config, GPT2ForSequenceClassification
from lm.training.batches import pad_right


def with_labels(config: GPT2Config, labels: Sequence[str], pad_token_id: int | None) -> GPT2Config:
    """A copy of `config` (GPT-2's or Qwen2's) for a classifier over `labels` (id2label / label2id
    in its extra keys)."""
    if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError(f"labels must be distinct non-empty strings, got {list(labels)!r}")
    d = config.to_dict()
    d.update(num_labels=len(labels), pad_token_id=pad_token_id,
             id2label={str(i): name for i, name in enumerate(labels)},
             label2id={name: i for i, name in enumerate(labels)})
    d.pop("architectures", None)
    return type(config).from_dict(d, "classifier config")


def classifier_from_lm(folder: str | os.PathLike, labels: Sequence[str], pad_token_id: int | None = None,
                       device: str | torch.device = "cpu") -> GPT2ForSequenceClassification:
    """A GPT-2 or Qwen2 language model folder -> a classifier with the same decoder and a new
    `score` head, N(0, initializer_range) as the reference library initialises it. The decoder
    moves over as the family's `body` (`lm.models.auto.FAMILIES`)."""
    fam = family(folder)
    lm = fam.causal_lm.from_pretrained(folder, device=device)
    pad = pad_token_id if pad_token_id is not None else lm.config.eos_token_id
    model = fam.classifier(with_labels(lm.config, labels, pad)).to(device)
    getattr(model, fam.body).load_state_dict(getattr(lm, fam.body).state_dict())
    nn.init.normal_(model.score.weight, 0.0, model.config.initializer_range)
    return model


def labels_of(config: GPT2Config) -> list[str]:
    """The label names in id order (from config.json's id2label; "LABEL_i" when absent)."""
    id2label = config.extra.get("id2label") or {}
    return [id2label.get(str(i), f"LABEL_{i}") for i in range(config.num_labels)]


class ClassificationExamples:
    """Texts with label ids; `collate` pads on the right and gives the mask and (B,) targets.

    texts are encoded with `tokenizer.encode` (no special tokens added, as the book); a text longer
    than `context` keeps its last `context` tokens (left truncation, one warning for all);
    an empty text or a label outside `label2id` raises ConfigError naming it.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[str], tokenizer, config: GPT2Config):
        label2id = {name: i for i, name in enumerate(labels_of(config))}
        if len(texts) != len(labels) or not texts:
            raise ConfigError(f"need one label per text (> 0 texts), got {len(labels)} for {len(texts)}")
        # the pad goes through the embedding: the first of pad, eos that is in the vocabulary, else 0
        self.pad_id = next((t for t in (config.pad_token_id, config.eos_token_id)
                            if t is not None and 0 <= t < config.vocab_size), 0)
        context = context_length(config)
        self.seqs, self.targets, cut = [], np.zeros(len(texts), dtype=np.int64), 0
        for i, (text, label) in enumerate(zip(texts, labels)):
            if label not in label2id:
                raise ConfigError(f"example {i}: unknown label {label!r} (known: {', '.join(label2id)})")
            ids = list(tokenizer.encode(text))
            if not text.strip() or not ids:
                raise ConfigError(f"example {i}: the text is empty")
            cut += len(ids) > context
            self.seqs.append(np.asarray(ids[-context:], dtype=np.int64))
            self.targets[i] = label2id[label]
        self.truncated = cut
        if cut:
            warnings.warn(f"{cut} of {len(texts)} texts are longer than the model's context ({context} tokens): "
                          "cut from the left", stacklevel=2)

    def __len__(self) -> int:
        return len(self.seqs)

    def lengths(self) -> list[int]:
        """Tokens of each text (for batches of similar lengths: TrainConfig.group_by_length)."""
        return [len(s) for s in self.seqs]

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask"} (B, T) right-padded, and "targets" (B,) label ids."""
        x, mask = pad_right([self.seqs[i] for i in indices], self.pad_id)     # (B, T)
        return {"input_ids": x, "attention_mask": mask, "targets": torch.from_numpy(self.targets[list(indices)])}


def classification_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the head's logits against the label ids, and the number of examples."""
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])   # (B, num_labels)
    return F.cross_entropy(logits.float(), batch["targets"]), int(batch["targets"].numel())


@torch.no_grad()
def predict(model: nn.Module, examples: ClassificationExamples, batch_size: int = 64) -> list[int]:
    """Argmax label id of every example, in order (batches sorted by length: less padding)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(examples)), key=lambda i: len(examples.seqs[i]))
    device = next(model.parameters()).device
    out = [0] * len(examples)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            b = examples.collate(idx)
            logits = model(b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device))  # (b, L)
            for i, p in zip(idx, logits.argmax(-1).tolist()):
                out[i] = p
    finally:
        model.train(was_training)
    return out
