"""Group Relative Policy Optimization (GRPO), the book's from-scratch algorithm, single-process or data-parallel.

One step, for B prompts (shared among the ranks) and a group of G completions per prompt:

1. rollout: sample G completions of each prompt with the one batched KV-cache sampler
   (`lm.inference.generate`); a completion's mask runs up to and including its first EOS;
2. score each completion with the reward functions (`lm.rl.tasks`: correctness + format);
3. advantages, per group: A = (r - mean(r_group)) / (std(r_group) + 1e-4) (a group never spans ranks);
4. under no_grad: the log-probabilities of the completion tokens under the policy as it was
   ("old") and under the frozen reference model, both at the rollout's temperature;
5. mu times: the loss of `grpo_loss` (its docstring has the formula), backward, gradients
   averaged over the ranks, clipped to norm 0.1, one AdamW step.

The reference model is a frozen copy of the policy made at the start of each outer iteration
(with the optimizer re-initialised), as the book's DataParallel notebook does; with beta = 0 the
KL term is off and no copy is made. Per step,
`metrics.jsonl` gets the mean and std of the reward, each reward's mean, the KL, the fraction of
clipped tokens, the completion length and tokens/s. Checkpoints hold the policy, the reference,
the optimizer and the step; prompts and sampling seeds are derived from (seed, step, rank), so a
resumed run continues exactly as an uninterrupted one.

Where we differ from the book: the policy runs in eval mode (dropout off) so the old, new and
reference log-probabilities are deterministic; with mu = 1 the "old" log-probabilities are the
current ones detached (ratio exactly 1, as TRL does) instead of a second identical forward pass;
log-probabilities are taken at the sampling temperature (`lm.rl.objective.token_log_probs`).

`run_grpo` is the whole experiment (starting model, evaluation before, GRPO on 1 or N ranks,
evaluation after); `run_all.py --only grpo`, `python -m lm.rl.grpo` and `torchrun
--nproc_per_node=N -m lm.rl.grpo` all run it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from lm.data.download import model_folder as model_folder_of
from lm.errors import ConfigError, LMError
from lm.inference.generate import generate, left_pad
from lm.inference.sampling import SamplingConfig
from lm.models.auto import context_length, load_causal_lm
from lm.rl import distributed
from lm.rl.distributed import Dist, all_reduce_gradients, all_sum, broadcast_parameters, parameters_identical
from lm.rl.objective import completion_mask, group_advantages, grpo_loss, token_log_probs
from lm.rl.tasks import REWARDS, Problem, build_prompt, split_problems
from lm.rl.warmup import EvalConfig, InstructConfig, WarmupConfig, evaluate, instruction_tune, sft_warmup
from lm.training.engine import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import (MetricsLogger, Progress, add_config_flags, atomic_write_json, config_from_flags, seed_everything,
                      write_summary)

CHECKPOINT_NAME = "grpo_checkpoint.pt"


@dataclass
class GRPOConfig:
    prompts_per_step: int = 4      # B: prompts per step over all ranks (the book: 4 in GRPO.py, 7 in the DP notebook)
    group_size: int = 8            # G: completions per prompt, >= 2 (the book: 16 / 12)
    max_new_tokens: int = 64       # completion length cap (the book: 500 / 400)
    temperature: float = 1.0       # rollout sampling temperature (the book: 1.0)
    top_p: float = 1.0             # rollout nucleus sampling (1.0: off, as the book)
    beta: float = 0.04             # weight of the KL penalty (the book: 0.04)
    epsilon: float = 0.1           # ratio clip range (the book: 0.1)
    mu: int = 1                    # optimizer updates per rollout (the book: 1)
    iterations: int = 1            # outer iterations; each re-copies the reference and the optimizer
    steps: int = 100               # steps (rollouts) per iteration (the book: 500)
    lr: float = 5e-6               # AdamW learning rate (the book: 5e-6)
    weight_decay: float = 0.01     # AdamW weight decay (torch's default, as the book)
    clip_norm: float = 0.1         # gradient-norm clip (the book: 0.1)
    micro_batch: int = 0           # rows per forward/backward in an update (0: all at once); same result, less memory
    checkpoint_interval: int = 0   # steps between checkpoints (0: only at the end)
    seed: int = 0                  # prompts and sampling seeds derive from (seed, step, rank)

    def validate(self, world: int = 1) -> None:
        for name in ("prompts_per_step", "max_new_tokens", "mu", "iterations", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GRPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch < 0:
            raise ConfigError(f"GRPOConfig.micro_batch must be >= 0 (0: the whole batch), got {self.micro_batch}")
        if self.group_size < 2:
            raise ConfigError(f"GRPOConfig.group_size must be >= 2 (advantages compare completions of one "
                              f"prompt), got {self.group_size}")
        if self.prompts_per_step % world:
            raise ConfigError(f"prompts_per_step={self.prompts_per_step} must be divisible by the number of "
                              f"ranks ({world}): each rank takes whole groups")
        if not (self.temperature > 0 and 0 < self.top_p <= 1 and self.beta >= 0 and self.epsilon >= 0
                and self.lr > 0 and self.clip_norm > 0):
            raise ConfigError("GRPOConfig: temperature, lr and clip_norm must be > 0, top_p in (0, 1], "
                              "beta and epsilon >= 0")


# --------------------------------------------------------------------------------------------
# Rollouts and log-probabilities
# --------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    input_ids: torch.Tensor        # (N, T + K): left-padded prompts, then completions (padded after EOS)
    attention_mask: torch.Tensor   # (N, T + K): 1 on real prompt tokens and completion tokens up to the first EOS
    completion_mask: torch.Tensor  # (N, K): 1 up to and including the first EOS
    completions: list[str]         # the decoded completions (EOS not included)
    answers: list[str]             # each row's gold answer (a prompt's answer repeated G times)


@torch.no_grad()
def rollout(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: GRPOConfig, eos_id: int,
            generator: torch.Generator | None = None) -> Rollout:
    """G sampled completions for each problem, all B x G in one batched generation."""
    device = next(model.parameters()).device
    prompts = [tokenizer.encode(build_prompt(p.question)) for p in problems]
    rows = [ids for ids in prompts for _ in range(cfg.group_size)]              # repeat_interleave
    _, prompt_mask = left_pad(rows, eos_id)                                     # (N, T)
    out = generate(model, rows, cfg.max_new_tokens, stop_token_ids=[eos_id], pad_token_id=eos_id,
                   sampling=SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p), generator=generator,
                   vocab_limit=tokenizer.vocab_size)
    T = prompt_mask.shape[1]
    cmask = completion_mask(out[:, T:], eos_id)                                 # (N, K)
    texts = []
    for row, m in zip(out[:, T:].tolist(), cmask.tolist()):
        ids = row[:sum(m)]
        texts.append(tokenizer.decode(ids[:-1] if ids and ids[-1] == eos_id else ids))
    return Rollout(out, torch.cat([prompt_mask.to(device), cmask], dim=1), cmask, texts,
                   [p.answer for p in problems for _ in range(cfg.group_size)])


# --------------------------------------------------------------------------------------------
# One step and the loop
# --------------------------------------------------------------------------------------------

def step_problems(problems: Sequence[Problem], cfg: GRPOConfig, step: int, d: Dist) -> list[Problem]:
    """This rank's share of step `step`'s prompts: the same draw on every rank, then split by rank."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    chosen = [problems[i] for i in rng.sample(range(len(problems)), cfg.prompts_per_step)]
    share = cfg.prompts_per_step // d.world
    return chosen[d.rank * share:(d.rank + 1) * share]


def rewards_of(roll: Rollout, reward_fns: dict[str, Callable[[str, str], float]]) -> dict[str, torch.Tensor]:
    """Each reward function's score of every completion: {name: (N,)}."""
    return {name: torch.tensor([fn(c, a) for c, a in zip(roll.completions, roll.answers)], dtype=torch.float32)
            for name, fn in reward_fns.items()}


def grpo_update(model: torch.nn.Module, ref_model: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
                roll: Rollout, advantages: torch.Tensor, cfg: GRPOConfig, d: Dist) -> dict:
    """mu optimizer updates on one rollout; gradients averaged over the ranks before clipping.

    With `cfg.micro_batch` the rows go through the model that many at a time and their gradients
    add up (each chunk's loss weighted by its share of the rows), so the update is the same as
    on the whole batch at once (tested to 1e-6) while the activations held are a chunk's.
    """
    k = roll.completion_mask.shape[1]
    n = roll.input_ids.shape[0]
    adv = advantages.to(roll.input_ids.device)
    params = [p for p in model.parameters() if p.requires_grad]
    chunks = [slice(i, min(i + (cfg.micro_batch or n), n)) for i in range(0, n, cfg.micro_batch or n)]

    def log_probs(m: torch.nn.Module, c: slice) -> torch.Tensor:                # (rows of c, K); 0 after EOS
        return token_log_probs(m, roll.input_ids[c], roll.attention_mask[c], k, cfg.temperature,
                               where=roll.completion_mask[c])                   # only the tokens the loss reads

    with torch.no_grad():
        ref_logp = (torch.cat([log_probs(ref_model, c) for c in chunks])
                    if ref_model is not None and cfg.beta > 0 else None)        # (N, K)
        old_logp = torch.cat([log_probs(model, c) for c in chunks]) if cfg.mu > 1 else None
    stats: dict = {}
    for _ in range(cfg.mu):
        optimizer.zero_grad(set_to_none=True)
        total, kl, clipped, tokens = 0.0, 0.0, 0.0, 0.0
        for c in chunks:
            logp = log_probs(model, c)
            old = logp.detach() if old_logp is None else old_logp[c]
            ref = logp.detach() if ref_logp is None else ref_logp[c]
            loss, st = grpo_loss(logp, old, ref, adv[c], roll.completion_mask[c], cfg.beta, cfg.epsilon)
            share = (c.stop - c.start) / n
            (loss * share).backward()
            t = float(roll.completion_mask[c].sum())
            total, kl, clipped, tokens = total + float(loss.detach()) * share, kl + st["kl"] * t, \
                clipped + st["clip_fraction"] * t, tokens + t
        all_reduce_gradients(params, d)
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        optimizer.step()
        stats = {"loss": all_sum([total], d)[0] / d.world,                    # the mean of the ranks' losses
                 "kl": kl / max(tokens, 1), "clip_fraction": clipped / max(tokens, 1)}
    return stats


def new_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the policy."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def reference_for(model: torch.nn.Module, cfg: GRPOConfig) -> torch.nn.Module | None:
    """The reference model of a new outer iteration: a frozen copy, or None when beta = 0 (no KL term)."""
    return new_reference(model) if cfg.beta > 0 else None


def train_grpo(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: GRPOConfig,
               out_dir: str | Path | None, eos_id: int, d: Dist | None = None, resume: bool = False,
               reward_fns: dict[str, Callable[[str, str], float]] | None = None,
               stop_after: int | None = None, desc: str = "grpo") -> dict:
    """Run GRPO on `problems`; every rank calls this with its own `Dist`. Returns the metrics.

    out_dir gets `metrics.jsonl` and `grpo_checkpoint.pt` (rank 0 writes them). `stop_after`
    ends the call after that many steps (for tests of resuming).
    """
    d = d or Dist(device=next(model.parameters()).device)
    cfg.validate(d.world)
    reward_fns = reward_fns or REWARDS
    model.to(d.device).eval()                                                   # dropout off (see above)
    broadcast_parameters(model, d)
    out = Path(out_dir) if out_dir is not None else None
    log = MetricsLogger(out / "metrics.jsonl" if out is not None and d.is_main else None)
    ckpt = out / CHECKPOINT_NAME if out is not None else None
    total = cfg.iterations * cfg.steps
    step, ref, optimizer = 0, None, None
    tcfg = TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    if resume and ckpt is not None and ckpt.is_file():
        ref, optimizer = reference_for(model, cfg), make_optimizer(model, tcfg)
        state = load_checkpoint(ckpt, model, optimizer, restore_rng=False)
        if state["config"] != _jsonable(cfg):
            raise ConfigError(f"cannot resume {ckpt}: it was written with another GRPOConfig")
        if ref is not None:
            ref.load_state_dict(state["reference"])
        step = state["step"]
    end = total if stop_after is None else min(total, step + stop_after)
    history: list[dict] = []
    bar = Progress(total=end - step, desc=desc, unit="step", quiet=None if d.is_main else True)
    while step < end:
        if step % cfg.steps == 0:                                               # a new outer iteration
            ref, optimizer = reference_for(model, cfg), make_optimizer(model, tcfg)
        t0 = time.perf_counter()
        mine = step_problems(problems, cfg, step, d)
        gen = torch.Generator(device=d.device).manual_seed((cfg.seed * 1_000_003 + step) * 1_009 + d.rank)
        roll = rollout(model, tokenizer, mine, cfg, eos_id, gen)
        scores = rewards_of(roll, reward_fns)
        reward = sum(scores.values())                                            # (N,)
        stats = grpo_update(model, ref, optimizer, roll, group_advantages(reward, cfg.group_size), cfg, d)
        step += 1
        n_tokens = float(roll.completion_mask.sum())
        sums = all_sum([len(reward), float(reward.sum()), float((reward ** 2).sum()), n_tokens,
                        stats["kl"] * n_tokens, stats["clip_fraction"] * n_tokens,
                        *[float(s.sum()) for s in scores.values()]], d)
        n, seconds = sums[0], time.perf_counter() - t0
        mean = sums[1] / n
        rec = {"step": step, "reward_mean": mean,
               "reward_std": max(sums[2] / n - mean ** 2, 0.0) ** 0.5 * (n / max(n - 1, 1)) ** 0.5,
               **{f"reward_{name}": s / n for name, s in zip(scores, sums[6:])},
               "kl": sums[4] / max(sums[3], 1), "clip_fraction": sums[5] / max(sums[3], 1),
               "completion_length": sums[3] / n, "loss": stats["loss"],
               "tokens_per_s": sums[3] / seconds, "seconds": round(seconds, 3)}
        history.append(rec)
        log.log(**rec)
        bar.update(1, reward=round(mean, 3))
        if step == 1 and not parameters_identical(model, d):
            raise RuntimeError("ranks hold different parameters after the first step")
        at_checkpoint = ckpt is not None and (step == end or (cfg.checkpoint_interval and
                                                              step % cfg.checkpoint_interval == 0))
        if at_checkpoint:
            if not parameters_identical(model, d):
                raise RuntimeError(f"ranks hold different parameters at step {step}")
            if d.is_main:
                save_checkpoint(ckpt, model, optimizer, {"step": step, "config": _jsonable(cfg),
                                                         "reference": None if ref is None else ref.state_dict()})
    bar.close()
    return summarise(history, step)


def summarise(history: list[dict], steps: int) -> dict:
    """The run's metrics: means over the first and last 10 % of steps, and the last record."""
    if not history:
        return {"steps": steps}
    k = max(1, len(history) // 10)
    first, last = history[:k], history[-k:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)
    parts = {f"{key}_{when}": mean(rs, key) for key in history[0] if key.startswith("reward_") and key != "reward_std"
             and key != "reward_mean" for when, rs in (("first", first), ("last", last))}
    return {"steps": steps, "reward_first": mean(first, "reward_mean"), "reward_last": mean(last, "reward_mean"),
            **parts, "kl_last": mean(last, "kl"), "completion_length_last": mean(last, "completion_length"),
            "tokens_per_s": mean(history, "tokens_per_s")}


def _jsonable(cfg: GRPOConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_interval", "micro_batch")}


# --------------------------------------------------------------------------------------------
# The whole experiment: the starting model, evaluation, GRPO on 1 or N ranks, evaluation
# --------------------------------------------------------------------------------------------

START_METRICS = "start_metrics.json"       # out_dir/: what was measured before GRPO (kept for --resume)


def fitting_problems(problems: Sequence[Problem], tokenizer, config, new_tokens: int) -> tuple[list[Problem], int]:
    """The problems whose prompt plus `new_tokens` fit the model's context, and how many did not.

    A small model (the quick GPT-2's 256 positions) cannot hold real GSM8K's longest prompts; they
    are left out with a warning rather than failing the run after the warm-up. None left is an error.
    """
    limit = context_length(config)
    if limit is None:
        return list(problems), 0
    kept = [p for p in problems if len(tokenizer.encode(build_prompt(p.question))) + new_tokens <= limit]
    if problems and not kept:
        raise ConfigError(f"no problem's prompt fits the model's context of {limit} tokens with {new_tokens} new "
                          f"tokens: use a model with a longer context (--model / --gpt2) or fewer new tokens")
    if len(kept) < len(problems):
        warnings.warn(f"{len(problems) - len(kept)} of {len(problems)} problems left out: prompt + {new_tokens} "
                      f"new tokens exceeds the model's context of {limit}")
    return kept, len(problems) - len(kept)


def problem_sets(data_dir: str | Path, tokenizer, config, cfg: GRPOConfig,
                 evaluation: EvalConfig) -> tuple[list[Problem], list[Problem], int]:
    """(training problems, held-out problems to evaluate, problems left out as too long): the same
    on every rank, for every launcher."""
    train, held_out = split_problems(data_dir)
    train, skipped = fitting_problems(train, tokenizer, config, cfg.max_new_tokens)
    held_out, skipped_eval = fitting_problems(held_out, tokenizer, config, evaluation.max_new_tokens)
    return train, held_out[:evaluation.problems], skipped + skipped_eval


def run_grpo(model_folder: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: GRPOConfig,
             evaluation: EvalConfig | None = None, instruct: InstructConfig | None = None,
             warmup: WarmupConfig | None = None, ranks: int = 1, device: str | None = None, resume: bool = False,
             instruct_cache: str | Path | None = None) -> dict:
    """The book's experiment on a data dir's GSM8K; every launcher runs this one function.

        model_folder -> [instruction tuning] -> evaluate (_before) -> [SFT warm-up -> evaluate (_after_sft)]
                     -> GRPO (1 or N ranks) -> evaluate (_after)

    `model_folder`: a Hugging Face GPT-2 or Qwen2 folder (weights + tokenizer). `instruct` makes
    our stand-in for an Instruct model first (`lm.rl.warmup.instruction_tune`; cached in
    `instruct_cache` when given, so grpo and grpo_ddp tune once); `warmup` is the book's TRL SFT step.
    Launchers: one process (`ranks` = 1); `ranks` > 1 from a plain process, GRPO then runs in
    that many fresh processes (`distributed.spawn`); under torchrun (WORLD_SIZE > 1) every process
    calls this, rank 0 prepares and evaluates, every rank trains. Evaluation is greedy on held-out
    problems (`split_problems`): accuracy (the book's rule), format_rate, accuracy_any_format.
    The metrics are complete on rank 0.
    """
    evaluation = evaluation or EvalConfig()
    out = Path(out_dir)
    rank, world = distributed.environment()
    d = distributed.init(rank, world, device, timeout_s=3600) if world > 1 else None   # rank 0 prepares meanwhile
    main = d is None or d.is_main
    tok = tokenizer_from_dir(model_folder)
    metrics: dict = {"ranks": world if d is not None else ranks}
    if main:
        model, start_metrics = prepare_start(model_folder, tok, data_dir, out, cfg, evaluation, instruct, warmup,
                                             device, resume, instruct_cache)
        metrics.update(start_metrics)
    if d is not None:                                              # torchrun: this process is one rank
        distributed.barrier(d)
        model, trained = _train_rank(d, out / "start_model", model_folder, data_dir, cfg, evaluation, out, resume)
        metrics.update(trained)
    elif ranks > 1:
        distributed.spawn(_rank_main, ranks, str(model_folder), str(data_dir), cfg, evaluation, str(out), device,
                          resume)
        model = load_causal_lm(out / "grpo_model", device=device or "cpu")
        metrics.update(json.loads((out / "grpo" / "grpo_metrics.json").read_text(encoding="utf-8")))
    else:
        train_problems, _, _ = problem_sets(data_dir, tok, model.config, cfg, evaluation)
        metrics.update(train_grpo(model, tok, train_problems, cfg, out / "grpo", model.config.eos_token_id,
                                  resume=resume))
    if main:
        _, eval_set, _ = problem_sets(data_dir, tok, model.config, cfg, evaluation)
        after, texts = evaluate(model, tok, eval_set, evaluation.max_new_tokens, model.config.eos_token_id)
        metrics.update({f"{k}_after": v for k, v in after.items()})
        metrics["what_changed"] = what_grpo_changed(metrics)
        metrics["samples"] = [{"question": p.question, "answer": p.answer, "completion": t}
                              for p, t in list(zip(eval_set, texts))[:3]]
    if d is not None:
        if d.is_main:
            model.save_pretrained(out / "grpo_model")
        distributed.shutdown(d)
    return metrics


def prepare_start(model_folder: str | Path, tok, data_dir: str | Path, out: Path, cfg: GRPOConfig,
                  evaluation: EvalConfig, instruct: InstructConfig | None, warmup: WarmupConfig | None,
                  device: str | None, resume: bool, instruct_cache: str | Path | None) -> tuple[torch.nn.Module, dict]:
    """The model GRPO starts from, saved to out/start_model, and what was measured on the way."""
    start, saved = out / "start_model", out / START_METRICS
    if resume and (start / "config.json").is_file() and saved.is_file():   # prepared before the stop
        return load_causal_lm(start, device=device or "cpu"), json.loads(saved.read_text(encoding="utf-8"))
    model = load_causal_lm(model_folder, device=device or "cpu")
    eos_id = model.config.eos_token_id
    train_problems, eval_set, skipped = problem_sets(data_dir, tok, model.config, cfg, evaluation)
    metrics: dict = {"eval_problems": len(eval_set), "train_problems": len(train_problems),
                     "problems_too_long": skipped}
    if instruct is not None:
        cache = Path(instruct_cache) if instruct_cache is not None else None
        if cache is not None and (cache / "instruct.json").is_file():
            model = load_causal_lm(cache, device=device or "cpu")
            metrics.update(json.loads((cache / "instruct.json").read_text(encoding="utf-8")))
        else:
            metrics.update(instruction_tune(model, tok, train_problems, instruct, eos_id, out / "instruct", cfg.seed,
                                            device))
            if cache is not None:
                _save_model(model, cache, {"instruct.json": metrics})
    before, _ = evaluate(model, tok, eval_set, evaluation.max_new_tokens, eos_id)
    metrics.update({f"{k}_before": v for k, v in before.items()})
    if warmup is not None:
        metrics.update(sft_warmup(model, tok, train_problems, warmup, eos_id, out / "sft", cfg.seed, device))
        after_sft, _ = evaluate(model, tok, eval_set, evaluation.max_new_tokens, eos_id)
        metrics.update({f"{k}_after_sft": v for k, v in after_sft.items()})
    _save_model(model, start)
    atomic_write_json(saved, metrics)
    return model, metrics


def _save_model(model: torch.nn.Module, folder: Path, extra: dict | None = None) -> None:
    """save_pretrained into a fresh folder, renamed into place only when complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    for name, obj in (extra or {}).items():
        atomic_write_json(partial / name, obj)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _train_rank(d: Dist, start: Path, tokenizer_folder: str | Path, data_dir: str | Path, cfg: GRPOConfig,
                evaluation: EvalConfig, out: Path, resume: bool) -> tuple[torch.nn.Module, dict]:
    """One rank's GRPO from the saved starting model (spawned workers and torchrun processes alike)."""
    if d.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))    # the ranks share the cores
    model, tok = load_causal_lm(start, device=d.device), tokenizer_from_dir(tokenizer_folder)
    train_problems, _, _ = problem_sets(data_dir, tok, model.config, cfg, evaluation)
    metrics = train_grpo(model, tok, train_problems, cfg, out / "grpo", model.config.eos_token_id, d, resume=resume,
                         desc=f"grpo rank {d.rank}")
    return model, metrics


def _rank_main(rank: int, world: int, tokenizer_folder: str, data_dir: str, cfg: GRPOConfig, evaluation: EvalConfig,
               out: str, device: str | None, resume: bool) -> None:
    """A worker started by `distributed.spawn`: one rank's GRPO; rank 0 saves the model and metrics."""
    d = distributed.init(rank, world, device)
    model, metrics = _train_rank(d, Path(out) / "start_model", tokenizer_folder, data_dir, cfg, evaluation, Path(out),
                                 resume)
    if d.is_main:
        model.save_pretrained(Path(out) / "grpo_model")
        atomic_write_json(Path(out) / "grpo" / "grpo_metrics.json", metrics)
    distributed.shutdown(d)


def what_grpo_changed(m: dict) -> str:
    """One sentence on what GRPO changed in a run, from its before/after metrics."""
    pct = lambda x: f"{100 * x:.1f} %"
    start = "after_sft" if "accuracy_after_sft" in m else "before"
    acc0, acc1 = m.get(f"accuracy_{start}"), m.get("accuracy_after")
    fmt0, fmt1 = m.get(f"format_rate_{start}"), m.get("format_rate_after")
    any0, any1 = m.get(f"accuracy_any_format_{start}"), m.get("accuracy_any_format_after")
    if None in (acc0, acc1, fmt0, fmt1, any0, any1):
        return ""
    gain, fmt_gain, solve_gain = acc1 - acc0, fmt1 - fmt0, any1 - any0
    if abs(gain) < 0.02:
        why = "accuracy did not move"
    elif fmt_gain > solve_gain:
        why = "the gain is mostly the format: the model answers in the tags it rarely used"
    else:
        why = "the gain is mostly in solving: the model gets more answers right whatever the format"
    return (f"GRPO took accuracy (the book's rule) from {pct(acc0)} to {pct(acc1)}; tagged answers went from "
            f"{pct(fmt0)} to {pct(fmt1)} and answers right whatever the format from {pct(any0)} to {pct(any1)}, "
            f"so {why}.")


# --------------------------------------------------------------------------------------------
# The command line (python -m lm.rl.grpo, torchrun --nproc_per_node=N -m lm.rl.grpo)
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Flags for the files and the phases, then every field of GRPOConfig, EvalConfig (--eval-*),
    InstructConfig (--instruct-*) and WarmupConfig (--warmup-*), with their defaults and comments."""
    p = argparse.ArgumentParser(prog="python -m lm.rl.grpo",
                                description="GRPO on a data dir's GSM8K, with accuracy before and after, as the book's "
                                            "GRPO programs. Data parallel: torchrun --nproc_per_node=N -m lm.rl.grpo "
                                            "... or --ranks N.")
    p.add_argument("--model", required=True, help="a Hugging Face GPT-2 or Qwen2 folder (weights and tokenizer), "
                                                  "or a hub name to download when online")
    p.add_argument("--data-dir", required=True, help="a data dir with gsm8k/train.jsonl (and gsm8k/test.jsonl)")
    p.add_argument("--out", required=True, help="output folder (metrics.jsonl, checkpoints, models, summary.json)")
    p.add_argument("--instruct", action="store_true",
                   help="first instruction-tune the model on the training problems (our stand-in for an Instruct "
                        "model, lm.rl.warmup.instruction_tune); for a base model such as the run's small GPT-2")
    p.add_argument("--sft-warmup", action="store_true",
                   help="the book's TRL notebook: SFT on worked solutions in the tags before GRPO (accuracy_after_sft)")
    p.add_argument("--ranks", type=int, default=1, help="GRPO processes to start here (under torchrun: ignored)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's starting model and GRPO checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    add_config_flags(p, GRPOConfig)
    add_config_flags(p, EvalConfig, "eval_")
    add_config_flags(p, InstructConfig, "instruct_")
    add_config_flags(p, WarmupConfig, "warmup_")
    return p


def main(argv: list[str] | None = None) -> int:
    """One process, `--ranks N` processes, or one rank of `torchrun --nproc_per_node=N -m lm.rl.grpo ...`."""
    a = build_parser().parse_args(argv)
    try:
        cfg = config_from_flags(GRPOConfig, a)
        seed_everything(cfg.seed)
        metrics = run_grpo(model_folder_of(a.model), a.data_dir, a.out, cfg, config_from_flags(EvalConfig, a, "eval_"),
                           config_from_flags(InstructConfig, a, "instruct_") if a.instruct else None,
                           config_from_flags(WarmupConfig, a, "warmup_") if a.sft_warmup else None,
                           ranks=a.ranks, device=a.device, resume=a.resume)
    except LMError as e:
        print(f"lm.rl.grpo: error: {e}", file=sys.stderr)
        return 2
    if distributed.environment()[0] == 0:
        write_summary(a.out, metrics)
        print(f"accuracy {metrics['accuracy_before']:.3f} -> {metrics['accuracy_after']:.3f}; reward "
              f"{metrics['reward_first']:.3f} -> {metrics['reward_last']:.3f}\n{metrics['what_changed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
