"""The training engine: one loop that trains every neural model in this project.

Chapters 3-4 (the Elman RNN and the decoder transformer), GPT-2 pretraining and the fine-tuning
chapters all call `train`. It knows nothing of a model's insides; it needs

    examples:  len(examples) and examples.collate(indices) -> {"input_ids", "targets", ...}
               (see lm.training.batches; a 1-D token tensor is accepted and cut into windows)
    loss_fn:   loss_fn(model, batch) -> (mean loss over counted targets, number of counted targets)
               default `lm_loss`: next-token cross-entropy of model(input_ids) -> (B, T, V) logits.

What one optimizer step does (the book's loop plus the usual modern pieces):

    for each of grad_accum micro-batches:  loss = loss_fn(model, batch); backward(loss weighted by its tokens)
    clip the gradient norm; set the learning rate (linear warm-up, then cosine decay); AdamW step

Every `eval_interval` steps it measures loss and perplexity on held-out data; every
`checkpoint_interval` steps it writes `checkpoint.pt` atomically with the model, optimizer, step,
data position and RNG states, so `train(..., resume=True)` continues exactly where it stopped:
N steps, stop, resume N more gives the same weights as 2N straight (tests/training/test_train.py).

    >>> cfg = TrainConfig(max_steps=100, batch_size=32, context=30)      # doctest: +SKIP
    >>> metrics = train(model, train_tokens, val_tokens, cfg, "runs/x")  # doctest: +SKIP
    >>> metrics["val_perplexity"]                                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lm.training.batches import IGNORE_INDEX, as_examples
from lm.errors import ConfigError
from lm.utils import MetricsLogger, Progress, atomic_open, choose_device, say

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    lr: float = 1e-3               # peak learning rate (the book: 0.001 with AdamW)
    min_lr_ratio: float = 0.1      # cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 0          # linear warm-up from ~0 to lr over this many steps
    schedule: str = "cosine"       # "cosine" (after warm-up) or "constant"
    weight_decay: float = 0.01     # AdamW decoupled decay, applied to matrices only (not biases/norms)
    betas: tuple = (0.9, 0.999)    # AdamW moment decay rates
    grad_clip: float = 1.0         # max global gradient norm; 0 turns clipping off
    grad_accum: int = 1            # micro-batches per optimizer step
    batch_size: int = 32           # examples per micro-batch (one step sees batch_size * grad_accum)
    context: int = 30              # tokens per example (used when the data is a raw token stream)
    max_steps: int | None = None   # optimizer steps; None: derived from max_tokens or epochs
    max_tokens: int | None = None  # budget in input tokens (batch_size * grad_accum * context per step)
    epochs: float = 1.0            # used when neither max_steps nor max_tokens is given
    shuffle: bool = True           # a fresh seeded permutation of the examples every epoch
    group_by_length: int = 0       # k > 0: each run of k batches of that permutation sorted by length, so a
    #   batch holds similar lengths (less padding; the examples need `lengths()`), then the batches shuffled
    eval_interval: int = 0         # steps between evaluations; 0: only at the end
    eval_batches: int | None = 50  # batches of held-out data per evaluation; None: all of it
    checkpoint_interval: int = 0   # steps between checkpoints; 0: only at the end (and on stop)
    log_interval: int = 10         # steps between lines in metrics.jsonl
    device: str | None = None      # "cpu", "cuda", ...; None: the best available (lm.utils.choose_device)
    amp_dtype: str | None = None   # "bfloat16" runs forward passes under autocast; None: float32
    seed: int = 0                  # seeds data order and torch's RNG (the model is built by the caller)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        positive = ["lr", "batch_size", "grad_accum", "context"]
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ["warmup_steps", "weight_decay", "grad_clip", "eval_interval", "checkpoint_interval",
                     "group_by_length"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"TrainConfig.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise ConfigError(f"TrainConfig.amp_dtype must be None, 'bfloat16' or 'float16', got {self.amp_dtype!r}")

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps of the whole run, from max_steps, else max_tokens, else epochs."""
        per_step = self.batch_size * self.grad_accum
        if self.max_steps is not None:
            steps = self.max_steps
        elif self.max_tokens is not None:
            steps = math.ceil(self.max_tokens / (per_step * self.context))
        else:
            steps = int(self.epochs * n_examples) // per_step
        if steps < 1:
            raise ConfigError(f"the run has {steps} steps: raise max_steps/max_tokens/epochs or lower batch_size "
                              f"({n_examples} examples, {per_step} per step)")
        return steps


# --------------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule
# --------------------------------------------------------------------------------------------

def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only.

    We differ from the book here: it decays every parameter; decaying biases and RMSNorm scales
    only pulls them towards 0 for no benefit.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Warm-up: lr * (step + 1) / warmup_steps. Then cosine from lr down to lr * min_lr_ratio.

    >>> lr_at(0, TrainConfig(lr=1.0, warmup_steps=4), 10)
    0.25
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(total_steps - cfg.warmup_steps - 1, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# Loss and evaluation
# --------------------------------------------------------------------------------------------

def count_targets(batch: dict) -> int:
    """Targets that carry a loss (not IGNORE_INDEX)."""
    return int((batch["targets"] != IGNORE_INDEX).sum())


def lm_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy: mean over targets != IGNORE_INDEX, and how many there were.

    Calls `model(input_ids)`, or `model(input_ids, attention_mask=...)` when the batch has a mask.
    """
    kwargs = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {}
    logits = model(batch["input_ids"], **kwargs)                               # (B, T, V)
    targets = batch["targets"]                                                 # (B, T)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
    return loss, count_targets(batch)


def iter_batches(examples, batch_size: int, max_batches: int | None = None) -> Iterator[dict]:
    """Batches of `examples` in order (for evaluation): the first `max_batches` of them."""
    n = len(examples)
    for b, start in enumerate(range(0, n, batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        yield examples.collate(list(range(start, min(start + batch_size, n))))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _autocast(device: torch.device, amp_dtype: str | None):
    if amp_dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=getattr(torch, amp_dtype))


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[dict], loss_fn: Callable | None = None,
             device: torch.device | str | None = None, amp_dtype: str | None = None) -> dict:
    """Token-weighted mean loss over `batches`, and perplexity = exp(loss).

    Returns {"loss", "perplexity", "tokens"}. The model is put in eval mode and restored after.
    """
    loss_fn = loss_fn or lm_loss
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            with _autocast(device, amp_dtype):
                loss, n = loss_fn(model, _to(batch, device))
            total += float(loss) * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ConfigError("evaluation got no target tokens (empty held-out data?)")
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "tokens": count}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": [py[0], torch.tensor(py[1], dtype=torch.int64), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v, s, g = state["python"]
    random.setstate((v, tuple(int(x) for x in s.tolist()), g))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict) -> None:
    """Write model, optimizer, `state` (step, data position, config ...) and RNG states atomically.

    Only tensors, numbers, strings, lists and dicts go in, so `torch.load(weights_only=True)` reads
    it: loading a checkpoint never runs code from the file.
    """
    payload = {"format": "lm-train-checkpoint/1", "model": model.state_dict(),
               "optimizer": optimizer.state_dict() if optimizer is not None else None,
               "state": state, "rng": _rng_state()}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict:
    """Load a checkpoint written by `save_checkpoint` into `model` (and `optimizer`); return its state."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one
        raise ConfigError(f"checkpoint {path} cannot be read: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != "lm-train-checkpoint/1":
        raise ConfigError(f"checkpoint {path} is not an lm training checkpoint")
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise ConfigError(f"checkpoint {path} does not fit this model: {e}") from None
    if optimizer is not None and payload["optimizer"] is not None:
        optimizer.load_state_dict(payload["optimizer"])
    if restore_rng:
        _set_rng_state(payload["rng"])
    return payload["state"]


# Fields that change the training trajectory: a resumed run must use the same values.
_TRAJECTORY_FIELDS = ["lr", "min_lr_ratio", "warmup_steps", "schedule", "weight_decay", "betas", "grad_clip",
                      "grad_accum", "batch_size", "context", "shuffle", "group_by_length", "seed", "amp_dtype"]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

class _Order:
    """The data position: (epoch, offset) into a seeded per-epoch permutation of the examples.

    With `lengths` and `group` = k (TrainConfig.group_by_length), each run of k batches of the
    permutation is sorted by length before it is cut into batches, and the whole batches are then
    shuffled (the ragged tail, dropped, stays last): every epoch still visits each example at most
    once, in random batches of similar lengths, so right-padding wastes little."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, epoch: int = 0, offset: int = 0,
                 lengths: list[int] | None = None, group: int = 0):
        if n < batch_size:
            raise ConfigError(f"only {n} training examples, fewer than batch_size={batch_size}")
        self.n, self.bs, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.lengths = torch.as_tensor(lengths) if group > 0 else None      # (n,)
        self.group = group
        self.epoch, self.offset = epoch, offset
        self._perm = self._make_perm()

    def _make_perm(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)                          # (n,)
        if self.lengths is None:
            return perm
        chunk = self.bs * self.group
        grouped = torch.cat([p[torch.argsort(self.lengths[p], descending=True, stable=True)]
                             for p in perm.split(chunk)])                     # (n,)
        full = self.n // self.bs * self.bs
        batches = grouped[:full].view(-1, self.bs)                            # (n // bs, bs)
        batches = batches[torch.randperm(len(batches), generator=g)]
        return torch.cat([batches.reshape(-1), grouped[full:]])

    def next(self) -> list[int]:
        if self.offset + self.bs > self.n:  # drop the ragged tail, start the next epoch
            self.epoch, self.offset = self.epoch + 1, 0
            self._perm = self._make_perm()
        idx = self._perm[self.offset:self.offset + self.bs].tolist()
        self.offset += self.bs
        return idx


def train(model: torch.nn.Module, train_data, val_data, cfg: TrainConfig, out_dir: str | Path | None,
          resume: bool = False, loss_fn: Callable | None = None, on_eval: Callable | None = None,
          stop_after: int | None = None, desc: str = "train") -> dict:
    """Train `model` on `train_data`, evaluating on `val_data`; return the final metrics.

    train_data / val_data: examples (see lm.training.batches) or a 1-D token tensor (cut into windows of
        cfg.context + 1). val_data may be None (no evaluation).
    out_dir: gets metrics.jsonl and checkpoint.pt (None: write nothing).
    resume: continue from out_dir/checkpoint.pt if it exists (same config required).
    loss_fn(model, batch) -> (mean loss, n targets); default `lm_loss`.
    on_eval(model, step) -> dict: called at each evaluation (e.g. to generate samples); its dict
        is logged with the evaluation.
    stop_after: stop after this many optimizer steps in this call (with a checkpoint), as if the
        run were interrupted; `resume=True` later continues it.
    Returns {"steps", "tokens", "target_tokens", "train_loss", "val_loss", "val_perplexity", "seconds", "tokens_per_s"}.
    """
    cfg.validate()
    loss_fn = loss_fn or lm_loss
    device = choose_device(cfg.device)
    train_ex = as_examples(train_data, cfg.context)
    val_ex = as_examples(val_data, cfg.context) if val_data is not None else None
    total = cfg.total_steps(len(train_ex))
    out = Path(out_dir) if out_dir is not None else None
    log = MetricsLogger(out / "metrics.jsonl" if out else None)

    model.to(device)
    model.train()
    opt = make_optimizer(model, cfg)
    step, tokens, targets, epoch, offset = 0, 0, 0, 0, 0  # tokens: input positions; targets: with a loss
    ckpt = out / CHECKPOINT_NAME if out else None
    if resume and ckpt is not None and ckpt.is_file():
        st = load_checkpoint(ckpt, model, opt)
        saved = {**{f: _jsonable(getattr(TrainConfig(), f)) for f in _TRAJECTORY_FIELDS}, **st["config"]}  # older
        diff = [f for f in _TRAJECTORY_FIELDS if saved[f] != _jsonable(getattr(cfg, f))]          # files: defaults
        if diff:
            raise ConfigError(f"cannot resume {ckpt}: config differs in {', '.join(diff)}")
        step, tokens, targets, epoch, offset = st["step"], st["tokens"], st["targets"], st["epoch"], st["offset"]
        say(f"{desc}: resumed from {ckpt} at step {step}")
    else:
        torch.manual_seed(cfg.seed)
    lengths = None
    if cfg.group_by_length:
        if not hasattr(train_ex, "lengths"):
            raise ConfigError(f"group_by_length needs examples with lengths(); {type(train_ex).__name__} has none")
        lengths = train_ex.lengths()
    order = _Order(len(train_ex), cfg.batch_size, cfg.shuffle, cfg.seed, epoch, offset, lengths, cfg.group_by_length)

    def state() -> dict:
        return {"step": step, "tokens": tokens, "targets": targets, "epoch": order.epoch, "offset": order.offset,
                "config": {f.name: _jsonable(getattr(cfg, f.name)) for f in fields(cfg)}}

    def run_eval() -> dict:
        res = evaluate(model, iter_batches(val_ex, cfg.batch_size, cfg.eval_batches), loss_fn, device, cfg.amp_dtype)
        rec = {"step": step, "tokens": tokens, "val_loss": res["loss"], "val_perplexity": res["perplexity"]}
        if on_eval is not None:
            rec.update(on_eval(model, step) or {})
            model.train()
        log.log(**rec)
        return rec

    end = total if stop_after is None else min(total, step + stop_after)
    t0, start_tokens, last = time.perf_counter(), tokens, {}
    running, running_n = 0.0, 0
    bar = Progress(total=end - step, desc=desc, unit="step")
    while step < end:
        lr = lr_at(step, cfg, total)
        for g in opt.param_groups:
            g["lr"] = lr
        micro = [train_ex.collate(order.next()) for _ in range(cfg.grad_accum)]
        n_total = sum(count_targets(b) for b in micro)
        step_loss = 0.0
        for b in micro:
            with _autocast(device, cfg.amp_dtype):
                loss, n = loss_fn(model, _to(b, device))
            (loss * (n / max(n_total, 1))).backward()
            step_loss += float(loss.detach()) * n / max(n_total, 1)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += sum(int(b["input_ids"].numel()) for b in micro)
        targets += n_total
        running, running_n = running + step_loss, running_n + 1
        elapsed = time.perf_counter() - t0
        tps = (tokens - start_tokens) / max(elapsed, 1e-9)
        bar.update(1, loss=step_loss, tok_s=round(tps))
        if step % cfg.log_interval == 0 or step == end:
            log.log(step=step, tokens=tokens, loss=running / running_n, lr=lr, tokens_per_s=round(tps, 1),
                    grad_norm=float(gnorm) if gnorm is not None else None)
            last["train_loss"] = running / running_n
            running, running_n = 0.0, 0
        if val_ex is not None and cfg.eval_interval and step % cfg.eval_interval == 0 and step < total:
            run_eval()
        if ckpt is not None and cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0:
            save_checkpoint(ckpt, model, opt, state())
    bar.close()
    seconds = time.perf_counter() - t0
    if ckpt is not None and (step == end):
        save_checkpoint(ckpt, model, opt, state())
    metrics = {"steps": step, "tokens": tokens, "target_tokens": targets, "train_loss": last.get("train_loss"),
               "seconds": round(seconds, 2), "tokens_per_s": round((tokens - start_tokens) / max(seconds, 1e-9), 1)}
    if val_ex is not None and step == total:
        rec = run_eval()
        metrics.update({k: v for k, v in rec.items() if k not in ("step", "tokens")})
    return metrics


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v
