"""Fine-tuning by epochs on the one engine: a score after every epoch and the mean loss of each.

The book's fine-tuning programs loop over epochs and print, after each, the average training loss
and the test accuracy. The engine (`lm.training.engine.train`) counts optimizer steps, so this
thin wrapper turns epochs into steps (`epochs * (len(train) // (batch_size * grad_accum))`, the ragged tail of an
epoch dropped as the engine does), evaluates every `steps per epoch` through the engine's
`on_eval` hook, and records each batch's loss on its way through `loss_fn`. No second loop.

    >>> res = train_by_epoch(model, train_ex, val_ex, cfg, epochs=2, out_dir="runs/x",
    ...                      score=lambda m: {"accuracy": accuracy_of(m)})        # doctest: +SKIP
    >>> res["loss_per_epoch"], [e["accuracy"] for e in res["per_epoch"]]       # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from lm.errors import ConfigError
from lm.training.engine import TrainConfig, lm_loss, train


def train_by_epoch(model: torch.nn.Module, train_data, val_data, cfg: TrainConfig, epochs: int,
                   out_dir: str | Path | None, *, loss_fn: Callable | None = None,
                   score: Callable[[torch.nn.Module], dict] | None = None, desc: str = "finetune") -> dict:
    """Train for `epochs` full passes over `train_data`; return the engine's metrics plus

    loss_per_epoch: mean training loss of the batches of each epoch (the book's "average loss")
    per_epoch:      [{"epoch": e, **score(model)}] after each epoch (also logged, with the engine's
                    val_loss, in out_dir/metrics.jsonl)
    seconds_train / seconds_score: time in the engine's steps and in `score`

    `val_data` (needed: the engine evaluates only with held-out data) gives the logged `val_loss`
    on `cfg.eval_batches` batches; `score(model)` measures anything else (accuracy by generation...).
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if val_data is None:
        raise ConfigError("train_by_epoch needs held-out examples (val_data) to evaluate after each epoch")
    steps_per_epoch = len(train_data) // (cfg.batch_size * cfg.grad_accum)
    if steps_per_epoch < 1:
        raise ConfigError(f"{len(train_data)} training examples make no step of {cfg.batch_size} x "
                          f"{cfg.grad_accum} examples")
    cfg = replace(cfg, max_steps=epochs * steps_per_epoch, max_tokens=None, eval_interval=steps_per_epoch)
    base_loss = loss_fn or lm_loss
    batch_losses: list[float] = []
    per_epoch: list[dict] = []
    score_seconds = [0.0]

    def recording_loss(m, batch):
        loss, n = base_loss(m, batch)
        if m.training:   # the engine's evaluation runs in eval mode: not a training batch
            batch_losses.append(float(loss.detach()))
        return loss, n

    def on_eval(m, step):
        t0 = time.perf_counter()
        rec = {"epoch": step // steps_per_epoch}
        rec.update(score(m) if score is not None else {})
        score_seconds[0] += time.perf_counter() - t0
        per_epoch.append(dict(rec))
        return rec

    metrics = train(model, train_data, val_data, cfg, out_dir, loss_fn=recording_loss, on_eval=on_eval, desc=desc)
    n = steps_per_epoch * cfg.grad_accum            # batches per epoch: group the recorded losses
    metrics["loss_per_epoch"] = [round(sum(batch_losses[e * n:(e + 1) * n]) / n, 4)
                                 for e in range(len(batch_losses) // n)]
    metrics["per_epoch"] = per_epoch
    metrics["seconds_score"] = round(score_seconds[0], 2)
    metrics["seconds_train"] = round(metrics["seconds"] - score_seconds[0], 2)
    return metrics

