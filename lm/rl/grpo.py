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

The whole experiment around it (starting model, evaluation before, GRPO on 1 or N ranks, evaluation
after) is `lm.rl.experiment.run_grpo`; `run_all.py --only grpo`, `python -m lm.rl.grpo` and
`torchrun --nproc_per_node=N -m lm.rl.grpo` all run it.
"""
from __future__ import annotations

import copy
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from lm.cli import option
from lm.errors import ConfigError
from lm.inference.generate import generate, left_pad
from lm.inference.sampling import SamplingConfig
from lm.inference.stops import decode_new
from lm.rl.distributed import Dist, all_reduce_gradients, all_sum, broadcast_parameters, parameters_identical
from lm.rl.objective import completion_mask, group_advantages, grpo_loss, token_log_probs
from lm.rl.tasks import REWARDS, Problem, build_prompt
from lm.training.engine import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint
from lm.utils import MetricsLogger, Progress

CHECKPOINT_NAME = "grpo_checkpoint.pt"


@dataclass
class GRPOConfig:
    prompts_per_step: int = option(4, "B: prompts per step over all ranks (the book: 4 in GRPO.py, 7 in the DP notebook)")
    group_size: int = option(8, "G: completions per prompt, >= 2 (the book: 16 / 12)")
    max_new_tokens: int = option(64, "completion length cap (the book: 500 / 400)")
    temperature: float = option(1.0, "rollout sampling temperature (the book: 1.0)")
    top_p: float = option(1.0, "rollout nucleus sampling (1.0: off, as the book)")
    beta: float = option(0.04, "weight of the KL penalty (the book: 0.04)")
    epsilon: float = option(0.1, "ratio clip range (the book: 0.1)")
    mu: int = option(1, "optimizer updates per rollout (the book: 1)")
    iterations: int = option(1, "outer iterations; each re-copies the reference and the optimizer")
    steps: int = option(100, "steps (rollouts) per iteration (the book: 500)")
    lr: float = option(5e-6, "AdamW learning rate (the book: 5e-6)")
    weight_decay: float = option(0.01, "AdamW weight decay (torch's default, as the book)")
    clip_norm: float = option(0.1, "gradient-norm clip (the book: 0.1)")
    micro_batch: int = option(0, "rows per forward/backward in an update (0: all at once); same result, less memory")
    checkpoint_interval: int = option(0, "steps between checkpoints (0: only at the end)")
    seed: int = option(0, "prompts and sampling seeds derive from (seed, step, rank)")

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
    texts = decode_new(tokenizer, out[:, T:].tolist(), [eos_id])                # cut before the first EOS
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
    parts = [key for key in history[0] if key.startswith("reward_") and key not in ("reward_mean", "reward_std")]
    parts = {f"{key}_{when}": mean(rs, key) for key in parts for when, rs in (("first", first), ("last", last))}
    return {"steps": steps, "reward_first": mean(first, "reward_mean"), "reward_last": mean(last, "reward_mean"),
            **parts, "kl_last": mean(last, "kl"), "completion_length_last": mean(last, "completion_length"),
            "tokens_per_s": mean(history, "tokens_per_s")}


def _jsonable(cfg: GRPOConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_interval", "micro_batch")}


if __name__ == "__main__":      # python -m lm.rl.grpo / torchrun -m lm.rl.grpo: the whole experiment
    from lm.rl.experiment import main
    sys.exit(main())
