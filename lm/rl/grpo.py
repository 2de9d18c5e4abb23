"""Group Relative Policy Optimization (GRPO), the book's from-scratch algorithm, single-process or data-parallel.

One step, for B prompts (shared among the ranks) and a group of G completions per prompt:

1. rollout: sample G completions of each prompt with the one batched KV-cache sampler
   (`lm.inference.generate`); a completion's mask runs up to and including its first EOS;
2. score each completion with the reward functions (`lm.rl.tasks`: correctness + format);
3. advantages, per group: A = (r - mean(r_group)) / (std(r_group) + 1e-4) (a group never spans ranks);
4. under no_grad: the log-probabilities of the completion tokens under the policy as it was
   ("old") and under the frozen reference model;
5. mu times: the loss of `grpo_loss` (its docstring has the formula), backward, gradients
   averaged over the ranks, clipped to norm 0.1, one AdamW step.

The reference model is a frozen copy of the policy made at the start of each outer iteration
(with the optimizer re-initialised), as the book's DataParallel notebook does. Per step,
`metrics.jsonl` gets the mean and std of the reward, each reward's mean, the KL, the fraction of
clipped tokens, the completion length and tokens/s. Checkpoints hold the policy, the reference,
the optimizer and the step; prompts and sampling seeds are derived from (seed, step, rank), so a
resumed run continues exactly as an uninterrupted one.

Where we differ from the book: the policy runs in eval mode (dropout off) so the old, new and
reference log-probabilities are deterministic; with mu = 1 the "old" log-probabilities are the
current ones detached (ratio exactly 1, as TRL does) instead of a second identical forward pass.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
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
from lm.rl.objective import completion_mask, group_advantages, grpo_loss, token_log_probs
from lm.rl.distributed import Dist, all_reduce_gradients, all_sum, broadcast_parameters, parameters_identical
from lm.rl.tasks import REWARDS, Problem, build_prompt, split_problems
from lm.rl.warmup import WarmupConfig, evaluate_accuracy, sft_warmup
from lm.training.engine import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import MetricsLogger, Progress, atomic_write_json, seed_everything, write_summary

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

    def log_probs(m: torch.nn.Module, c: slice) -> torch.Tensor:                # (rows of c, K)
        return token_log_probs(m, roll.input_ids[c], roll.attention_mask[c], k)

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
        stats = {"loss": total, "kl": kl / max(tokens, 1), "clip_fraction": clipped / max(tokens, 1)}
    return stats


def new_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the policy."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def train_grpo(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: GRPOConfig,
               out_dir: str | Path | None, eos_id: int, d: Dist = Dist(), resume: bool = False,
               reward_fns: dict[str, Callable[[str, str], float]] | None = None,
               stop_after: int | None = None, desc: str = "grpo") -> dict:
    """Run GRPO on `problems`; every rank calls this with its own `Dist`. Returns the metrics.

    out_dir gets `metrics.jsonl` and `grpo_checkpoint.pt` (rank 0 writes them). `stop_after`
    ends the call after that many steps (for tests of resuming).
    """
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
        ref, optimizer = new_reference(model), make_optimizer(model, tcfg)
        state = load_checkpoint(ckpt, model, optimizer, restore_rng=False)
        if state["config"] != _jsonable(cfg):
            raise ConfigError(f"cannot resume {ckpt}: it was written with another GRPOConfig")
        ref.load_state_dict(state["reference"])
        step = state["step"]
    end = total if stop_after is None else min(total, step + stop_after)
    history: list[dict] = []
    bar = Progress(total=end - step, desc=desc, unit="step", quiet=None if d.is_main else True)
    while step < end:
        if step % cfg.steps == 0:                                               # a new outer iteration
            ref, optimizer = new_reference(model), make_optimizer(model, tcfg)
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
                                                         "reference": ref.state_dict()})
    bar.close()
    return summarise(history, step)


def summarise(history: list[dict], steps: int) -> dict:
    """The run's metrics: means over the first and last 10 % of steps, and the last record."""
    if not history:
        return {"steps": steps}
    k = max(1, len(history) // 10)
    first, last = history[:k], history[-k:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)
    return {"steps": steps, "reward_first": mean(first, "reward_mean"), "reward_last": mean(last, "reward_mean"),
            "kl_last": mean(last, "kl"), "completion_length_last": mean(last, "completion_length"),
            "tokens_per_s": mean(history, "tokens_per_s")}


def _jsonable(cfg: GRPOConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_interval", "micro_batch")}


# --------------------------------------------------------------------------------------------
# The whole experiment: evaluate, warm up, evaluate, GRPO (1 or N ranks), evaluate
# --------------------------------------------------------------------------------------------

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


def run_grpo(model_folder: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: GRPOConfig,
             warmup: WarmupConfig | None, eval_problems: int = 30, eval_tokens: int = 128, ranks: int = 1,
             device: str | None = None, resume: bool = False) -> dict:
    """The book's pipeline on a data dir's GSM8K: accuracy before SFT, after the SFT warm-up and
    after GRPO, on held-out problems (`split_problems`), plus the GRPO run's metrics.

    `model_folder`: a Hugging Face GPT-2 or Qwen2 folder (weights + tokenizer). With `ranks` > 1 the
    GRPO part runs data-parallel in `ranks` fresh processes (`distributed.spawn`) from the warmed-up
    model saved in out_dir/sft_model; rank 0 saves the result to out_dir/grpo_model.
    """
    out = Path(out_dir)
    model, tok = load_causal_lm(model_folder, device=device or "cpu"), tokenizer_from_dir(model_folder)
    eos_id = model.config.eos_token_id
    train_problems, eval_set = split_problems(data_dir)
    train_problems, skipped = fitting_problems(train_problems, tok, model.config, max(cfg.max_new_tokens, 1))
    eval_set, skipped_eval = fitting_problems(eval_set, tok, model.config, eval_tokens)
    eval_set = eval_set[:eval_problems]
    metrics: dict = {"eval_problems": len(eval_set), "train_problems": len(train_problems), "ranks": ranks,
                     "problems_too_long": skipped + skipped_eval}
    sft_folder = out / "sft_model"
    if resume and (sft_folder / "config.json").is_file():                   # warmed up before the stop
        model = load_causal_lm(sft_folder, device=device or "cpu")
    else:
        metrics["accuracy_before"] = evaluate_accuracy(model, tok, eval_set, eval_tokens, eos_id)[0]
        if warmup is not None:
            metrics.update(sft_warmup(model, tok, train_problems, warmup, eos_id, out / "sft", cfg.seed, device))
        if ranks > 1:
            model.save_pretrained(sft_folder)
    metrics["accuracy_after_sft"] = evaluate_accuracy(model, tok, eval_set, eval_tokens, eos_id)[0]
    if ranks == 1:
        metrics.update(train_grpo(model, tok, train_problems, cfg, out / "grpo", eos_id,
                                  Dist(device=next(model.parameters()).device), resume=resume))
    else:
        distributed.spawn(_rank_main, ranks, str(sft_folder), str(model_folder), str(data_dir), cfg,
                          str(out / "grpo"), device, resume)
        model = load_causal_lm(out / "grpo_model", device=device or "cpu")
        metrics.update(json.loads((out / "grpo" / "grpo_metrics.json").read_text(encoding="utf-8")))
    accuracy_after, texts = evaluate_accuracy(model, tok, eval_set, eval_tokens, eos_id)
    metrics["accuracy_after"] = accuracy_after
    metrics["samples"] = [{"question": p.question, "answer": p.answer, "completion": t}
                          for p, t in list(zip(eval_set, texts))[:3]]
    return metrics


def _rank_main(rank: int, world: int, model_folder: str, tokenizer_folder: str, data_dir: str, cfg: GRPOConfig,
               out: str, device: str | None, resume: bool) -> None:
    """One rank of a data-parallel GRPO run (started by `distributed.spawn` or by torchrun)."""
    d = distributed.init(rank, world, device)
    if d.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))         # the ranks share the cores
    model, tok = load_causal_lm(model_folder, device=d.device), tokenizer_from_dir(tokenizer_folder)
    train_problems, _ = fitting_problems(split_problems(data_dir)[0], tok, model.config, cfg.max_new_tokens)
    metrics = train_grpo(model, tok, train_problems, cfg, out, model.config.eos_token_id, d, resume=resume,
                         desc=f"grpo rank {rank}")
    if d.is_main:
        model.save_pretrained(Path(out).parent / "grpo_model")
        atomic_write_json(Path(out) / "grpo_metrics.json", metrics)
    distributed.shutdown(d)


def build_parser() -> argparse.ArgumentParser:
    c, w = GRPOConfig(), WarmupConfig()
    p = argparse.ArgumentParser(prog="python -m lm.rl.grpo",
                                description="GRPO on a data dir's GSM8K: SFT warm-up, then GRPO; accuracy before and "
                                            "after. Data parallel: torchrun --nproc_per_node=N -m lm.rl.grpo ...")
    p.add_argument("--model", required=True, help="a Hugging Face GPT-2 or Qwen2 folder (weights and tokenizer)")
    p.add_argument("--data-dir", required=True, help="a data dir with gsm8k/train.jsonl (and gsm8k/test.jsonl)")
    p.add_argument("--out", required=True, help="output folder (metrics.jsonl, checkpoints, models, summary.json)")
    p.add_argument("--prompts-per-step", type=int, default=c.prompts_per_step, help="B: prompts per step, all ranks")
    p.add_argument("--group-size", type=int, default=c.group_size, help="G: completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=c.max_new_tokens, help="completion length cap")
    p.add_argument("--temperature", type=float, default=c.temperature, help="rollout sampling temperature")
    p.add_argument("--beta", type=float, default=c.beta, help="KL weight")
    p.add_argument("--epsilon", type=float, default=c.epsilon, help="ratio clip range")
    p.add_argument("--mu", type=int, default=c.mu, help="optimizer updates per rollout")
    p.add_argument("--iterations", type=int, default=c.iterations, help="outer iterations (reference re-copied)")
    p.add_argument("--steps", type=int, default=c.steps, help="steps per iteration")
    p.add_argument("--lr", type=float, default=c.lr, help="AdamW learning rate")
    p.add_argument("--micro-batch", type=int, default=c.micro_batch,
                   help="rows per forward/backward in an update (0: all at once); the same update in less memory")
    p.add_argument("--checkpoint-interval", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--warmup-examples", type=int, default=w.examples, help="SFT warm-up problems (0: no warm-up)")
    p.add_argument("--warmup-epochs", type=float, default=w.epochs, help="SFT warm-up passes")
    p.add_argument("--warmup-lr", type=float, default=w.lr, help="SFT warm-up learning rate")
    p.add_argument("--eval-problems", type=int, default=30, help="held-out problems to evaluate (the book: 30)")
    p.add_argument("--eval-tokens", type=int, default=256, help="new tokens per evaluation answer")
    p.add_argument("--resume", action="store_true", help="continue from OUT's warm-up model and GRPO checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def main(argv: list[str] | None = None) -> int:
    """Single process, or one rank of `torchrun --nproc_per_node=N -m lm.rl.grpo ...`."""
    a = build_parser().parse_args(argv)
    cfg = GRPOConfig(prompts_per_step=a.prompts_per_step, group_size=a.group_size, max_new_tokens=a.max_new_tokens,
                     temperature=a.temperature, beta=a.beta, epsilon=a.epsilon, mu=a.mu, iterations=a.iterations,
                     steps=a.steps, lr=a.lr, micro_batch=a.micro_batch, checkpoint_interval=a.checkpoint_interval,
                     seed=a.seed)
    warmup = (WarmupConfig(examples=a.warmup_examples, epochs=a.warmup_epochs, lr=a.warmup_lr)
              if a.warmup_examples else None)
    world = int(os.environ.get("WORLD_SIZE", 1))
    try:
        model_folder = model_folder_of(a.model)
        seed_everything(a.seed)
        if world == 1:
            metrics = run_grpo(model_folder, a.data_dir, a.out, cfg, warmup, a.eval_problems, a.eval_tokens,
                               device=a.device, resume=a.resume)
            write_summary(a.out, metrics)
            print(f"accuracy: before {metrics['accuracy_before']:.3f}, after SFT {metrics['accuracy_after_sft']:.3f}, "
                  f"after GRPO {metrics['accuracy_after']:.3f}; reward {metrics['reward_first']:.3f} -> "
                  f"{metrics['reward_last']:.3f}")
            return 0
        return _torchrun_main(a, cfg, warmup, model_folder, world)
    except LMError as e:
        print(f"lm.rl.grpo: error: {e}", file=sys.stderr)
        return 2


def _torchrun_main(a: argparse.Namespace, cfg: GRPOConfig, warmup: WarmupConfig | None, model_folder: Path,
                   world: int) -> int:
    """Under torchrun: rank 0 warms up and saves the model; every rank runs GRPO; rank 0 evaluates."""
    rank, out = int(os.environ["RANK"]), Path(a.out)
    d = distributed.init(rank, world, a.device, timeout_s=3600)               # rank 0's warm-up takes a while
    sft_folder, tok = out / "sft_model", tokenizer_from_dir(model_folder)
    train_problems, eval_set = split_problems(a.data_dir)
    eval_set = eval_set[:a.eval_problems]
    if d.is_main and not (a.resume and (sft_folder / "config.json").is_file()):
        model = load_causal_lm(model_folder, device=d.device)
        if warmup is not None:
            sft_warmup(model, tok, train_problems, warmup, model.config.eos_token_id, out / "sft", a.seed, a.device)
        model.save_pretrained(sft_folder)
    distributed.barrier(d)
    model = load_causal_lm(sft_folder, device=d.device)
    metrics = train_grpo(model, tok, train_problems, cfg, out / "grpo", model.config.eos_token_id, d,
                         resume=a.resume, desc=f"grpo rank {rank}")
    if d.is_main:
        model.save_pretrained(out / "grpo_model")
        metrics["accuracy_after"] = evaluate_accuracy(model, tok, eval_set, a.eval_tokens,
                                                      model.config.eos_token_id)[0]
        write_summary(out, metrics)
        print(f"accuracy after GRPO {metrics['accuracy_after']:.3f}; reward {metrics['reward_first']:.3f} -> "
              f"{metrics['reward_last']:.3f}")
    distributed.shutdown(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
