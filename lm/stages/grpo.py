"""Stage grpo (the book's GRPO programs): GRPO on GSM8K-style word problems, from an instruction-tuned model.

    chapter 5 base -> instruction tuning (our stand-in for Qwen2.5-Instruct) -> accuracy_before
                   -> GRPO (rewards: correctness 2.0 / 1.5 / 0 + 0.2 per format tag) -> accuracy_after

As in the book's from-scratch run (Qwen2.5-1.5B-Instruct, 23.3 % -> 90.0 %), the model GRPO starts
from can solve most problems but rarely answers in the `<answer>` tags the book's rule needs; GRPO
makes it use them (`lm.rl.warmup` says how the starting model is made). The report shows accuracy,
the share of tagged answers and the accuracy whatever the format, before and after, and the reward
curve with its format and correctness parts apart.

The base (`choose_base`) is the small GPT-2 of this run, instruction-tuned once per run (cached
in `RUN/pretrained/gsm8k_instruct`, shared with grpo_ddp); or `--model FOLDER` (alias `--gpt2`), a
GPT-2 or Qwen2 folder used as it is (the book starts from an Instruct model) with the book's
learning rates (the `real_*` settings).
`sft_warmup = True` adds the book's TRL-notebook SFT step (reported as accuracy_after_sft).

Our small model's settings differ from the book's (which are for a 0.5-1.5 B model): a larger
learning rate, shorter completions, fewer steps, more prompts per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.rl.experiment import run_grpo
from lm.rl.grpo import GRPOConfig
from lm.rl.warmup import EvalConfig, InstructConfig, WarmupConfig
from lm.stages import RunConfig, for_base, quick_full
from lm.stages.gpt2_pretrain import choose_base

KEY_METRICS = ["accuracy_before", "accuracy_after", "format_rate_before", "format_rate_after",
               "reward_first", "reward_last"]
DATA_FILES = ["gsm8k/train.jsonl"]
NEEDS_GPT2 = True
USES_MODEL = True


@dataclass
class Settings:
    # GRPO (the book: B 4-7 prompts x G 12-16, 400-500 new tokens, 500 steps, lr 5e-6, beta 0.04, eps 0.1, mu 1)
    prompts_per_step: int = quick_full(8, 8)        # B: prompts per step (over all ranks)
    group_size: int = quick_full(8, 8)              # G: completions per prompt
    max_new_tokens: int = quick_full(64, 64)        # completion cap (our worked solutions: 30-55 tokens)
    temperature: float = quick_full(1.0, 1.0)       # rollout temperature (the book: 1.0)
    steps: int = quick_full(30, 150)                # GRPO steps
    lr: float = quick_full(1e-4, 1e-4)              # AdamW learning rate for our small model
    beta: float = quick_full(0.04, 0.04)            # KL weight
    epsilon: float = quick_full(0.1, 0.1)           # ratio clip range
    mu: int = quick_full(1, 1)                      # updates per rollout
    checkpoint_interval: int = quick_full(0, 50)    # steps between checkpoints (0: at the end)
    # the starting model made from our small base (lm.rl.warmup.instruction_tune)
    instruct_format_rate: float = quick_full(0.1, 0.1)     # book-prompt answers in the tags (the rest: "#### n")
    instruct_reworded_share: float = quick_full(0.4, 0.4)  # problems asked for the tags in other words
    instruct_epochs: float = quick_full(5.0, 5.0)          # passes over the training problems
    instruct_lr: float = quick_full(2e-3, 2e-3)            # its learning rate
    # the book's TRL-notebook SFT warm-up (worked solutions in the tags), off as in the from-scratch run
    sft_warmup: bool = quick_full(False, False)     # run it before GRPO (reported as accuracy_after_sft)
    warmup_epochs: float = quick_full(1.0, 1.0)     # passes over the training problems
    warmup_batch: int = quick_full(16, 16)          # examples per step
    warmup_lr: float = quick_full(2e-3, 2e-3)       # for our small model
    # evaluation
    eval_problems: int = quick_full(200, 200)       # held-out problems (the book: 30)
    eval_tokens: int = quick_full(64, 64)           # new tokens per answer
    # real weights (--model / --gpt2): the book's settings, in place of lr and warmup_lr (`for_base`)
    real_lr: float = quick_full(5e-6, 5e-6)         # GRPO (the book: 5e-6)
    real_warmup_lr: float = quick_full(5e-5, 5e-5)  # warm-up (the book: 5e-5)


def configs(cfg: RunConfig, s: Settings, real: bool) -> tuple[GRPOConfig, EvalConfig, InstructConfig | None,
                                                               WarmupConfig | None]:
    """The pipeline's configs from settings already run through `for_base`: our small base gets the
    instruction tuning; a --model folder (`real`) is used as it is, its warm-up trained on the
    prompts too."""
    grpo = GRPOConfig(prompts_per_step=s.prompts_per_step, group_size=s.group_size, max_new_tokens=s.max_new_tokens,
                      temperature=s.temperature, beta=s.beta, epsilon=s.epsilon, mu=s.mu, steps=s.steps,
                      lr=s.lr, checkpoint_interval=s.checkpoint_interval, seed=cfg.seed)
    instruct = None if real else InstructConfig(format_rate=s.instruct_format_rate,
                                                reworded_share=s.instruct_reworded_share, epochs=s.instruct_epochs,
                                                lr=s.instruct_lr)
    warmup = None if not s.sft_warmup else WarmupConfig(
        examples=None, epochs=s.warmup_epochs, batch_size=s.warmup_batch, lr=s.warmup_lr, train_on_prompt=real)
    return grpo, EvalConfig(problems=s.eval_problems, max_new_tokens=s.eval_tokens), instruct, warmup


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path, ranks: int = 1) -> dict:
    base = choose_base(cfg, data_dir)
    grpo, evaluation, instruct, warmup = configs(cfg, for_base(s, base.real), base.real)
    cache = Path(cfg.run_dir) / "pretrained" / "gsm8k_instruct" if cfg.run_dir is not None else None
    metrics = run_grpo(base.folder, data_dir, out_dir, grpo, evaluation, instruct, warmup, ranks=ranks,
                       device=cfg.device, instruct_cache=cache)
    metrics["base_model"] = str(base.folder)
    return metrics
