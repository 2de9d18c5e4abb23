"""Stage grpo (the book's GRPO programs): SFT warm-up, then GRPO on GSM8K-style word problems.

    base model -> accuracy_before -> SFT warm-up on worked solutions -> accuracy_after_sft
               -> GRPO (rewards: correctness 2.0 / 1.5 / 0 + 0.2 per format tag) -> accuracy_after

The base is the small GPT-2 of this run (`pretrained_gpt2`), the `--gpt2` folder, or `--model
FOLDER` (a GPT-2 or Qwen2 folder, e.g. Qwen2.5-0.5B-Instruct as the book). Accuracy is the book's
rule over greedy answers to held-out problems (`lm.rl.tasks.split_problems`); `reward_first` and
`reward_last` are the mean rewards of the first and last 10 % of steps. `metrics.jsonl` (under
`grpo/`) has the per-step reward, KL, clip fraction and completion length for the report.

Our small model's settings differ from the book's (which are for a 0.5-1.5 B instruction-tuned
model): larger learning rates, shorter completions, fewer steps, the warm-up's loss on the
solution only, and rollouts at temperature 0.6 (at 1.0 GRPO spends its steps pruning the sampled
tails and greedy accuracy does not move). With `--model` or `--gpt2` the book's learning rates
and warm-up are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.rl.grpo import GRPOConfig, run_grpo
from lm.rl.warmup import WarmupConfig
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2

KEY_METRICS = ["accuracy_before", "accuracy_after_sft", "accuracy_after", "reward_first", "reward_last"]
DATA_FILES = ["gsm8k/train.jsonl"]
NEEDS_GPT2 = True
USES_MODEL = True


@dataclass
class Settings:
    # GRPO (the book: B 4-7 prompts x G 12-16, 400-500 new tokens, 500 steps, lr 5e-6, beta 0.04, eps 0.1, mu 1)
    prompts_per_step: int = quick_full(16, 16)      # B: prompts per step (over all ranks)
    group_size: int = quick_full(8, 8)              # G: completions per prompt
    max_new_tokens: int = quick_full(64, 64)        # completion cap (our worked solutions: 30-55 tokens)
    temperature: float = quick_full(0.6, 0.6)       # rollout temperature (the book: 1.0; see the module docstring)
    steps: int = quick_full(60, 300)                # GRPO steps
    lr: float = quick_full(1e-4, 1e-4)              # AdamW learning rate for our small model
    beta: float = quick_full(0.04, 0.04)            # KL weight
    epsilon: float = quick_full(0.1, 0.1)           # ratio clip range
    mu: int = quick_full(1, 1)                      # updates per rollout
    checkpoint_interval: int = quick_full(0, 50)    # steps between checkpoints (0: at the end)
    # SFT warm-up (the book's 0.5B notebook: 500 examples, 1 epoch, batch 2, lr 5e-5, prompt trained on)
    warmup_examples: int | None = quick_full(None, None)  # training problems in the warm-up (None: all 1,400)
    warmup_epochs: float = quick_full(1.0, 1.0)     # passes over them (more leaves GRPO little to improve)
    warmup_batch: int = quick_full(16, 16)          # examples per step
    warmup_lr: float = quick_full(2e-3, 2e-3)       # for our small model
    warmup_on_prompt: bool = quick_full(False, False)  # the book trains on the prompt too; ours learns faster without
    # evaluation
    eval_problems: int = quick_full(200, 200)       # held-out problems (the book: 30)
    eval_tokens: int = quick_full(64, 64)           # new tokens per answer
    # real weights (--model / --gpt2): the book's learning rates
    real_lr: float = quick_full(5e-6, 5e-6)         # GRPO (the book: 5e-6)
    real_warmup_lr: float = quick_full(5e-5, 5e-5)  # warm-up (the book: 5e-5)


def configs(cfg: RunConfig, s: Settings) -> tuple[GRPOConfig, WarmupConfig]:
    real = bool(cfg.model or cfg.gpt2)
    grpo = GRPOConfig(prompts_per_step=s.prompts_per_step, group_size=s.group_size, max_new_tokens=s.max_new_tokens,
                      temperature=1.0 if real else s.temperature, beta=s.beta, epsilon=s.epsilon, mu=s.mu, steps=s.steps,
                      lr=s.real_lr if real else s.lr, checkpoint_interval=s.checkpoint_interval, seed=cfg.seed)
    warmup = WarmupConfig(examples=s.warmup_examples, epochs=s.warmup_epochs, batch_size=s.warmup_batch,
                          lr=s.real_warmup_lr if real else s.warmup_lr,
                          train_on_prompt=True if real else s.warmup_on_prompt)
    return grpo, warmup


def base_model(cfg: RunConfig, data_dir: Path) -> Path:
    """`--model FOLDER` if given, else the chapter 5 GPT-2 (`--gpt2` or the small one of this run)."""
    return Path(cfg.model) if cfg.model else pretrained_gpt2(cfg, data_dir)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path, ranks: int = 1) -> dict:
    grpo, warmup = configs(cfg, s)
    folder = base_model(cfg, data_dir)
    metrics = run_grpo(folder, data_dir, out_dir, grpo, warmup, s.eval_problems, s.eval_tokens, ranks=ranks,
                       device=cfg.device)
    metrics["base_model"] = str(folder)
    return metrics
