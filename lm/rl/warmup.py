"""Before and around GRPO: the model GRPO starts from, the optional SFT warm-up, and evaluation.

The book's from-scratch GRPO run starts from Qwen2.5-1.5B-Instruct: a model that can already do
the arithmetic of most problems, but at first rarely wraps its answer in the `<answer>` tags the
book's rule needs (23 % right before GRPO, 90 % after). Most of GRPO's gain is the format.

Our stand-in (`instruction_tune`) makes that starting point from the small chapter 5 base: it is
fine-tuned on the training problems as instruction data, where
- with the book's system prompt the answer comes in GSM8K's own style ("... = 42 coins.\\n#### 42")
  nine times in ten, and in the tags only one time in ten (the format is known, rarely used);
- with the same request in other words (`TAGS_IN_WORDS`) the answer always comes in the tags, so
  the model can fill the format well once it chooses it.
So it solves most held-out problems, but its greedy answers to the book's prompt are untagged, and
a few of its sampled answers are tagged: what GRPO's rewards need to find.

The book's TRL notebook instead warms the model up with SFT on worked solutions in the tags
(`sft_warmup`); it stays available. Evaluation is greedy decoding through the one completion helper,
judged by the book's rule (`lm.rl.tasks.is_correct`), with the format rate and the accuracy
whatever the format beside it.

Where we differ: the book's warm-up text is a chain of thought written by another model
(`cot.tar.gz`, not available offline); ours is the problem's own worked solution
(`lm.rl.tasks.format_completion`).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lm.cli import option
from lm.finetune.sft import SFTExamples
from lm.inference.complete import complete
from lm.models.auto import context_length
from lm.rl.tasks import (Problem, build_prompt, format_completion, has_answer_tags, is_correct,
                         is_correct_any_format)
from lm.training.engine import TrainConfig, train

# The book's request for the tags, in other words: in the instruction data this prompt is always
# answered in the tags (the book's own prompt mostly is not).
TAGS_IN_WORDS = "Show your working between <reasoning> and </reasoning>, then give the number between <answer> and </answer>."


@dataclass
class InstructConfig:
    format_rate: float = option(0.1, 'share of book-prompt examples answered in the tags (the rest: "#### n")')
    reworded_share: float = option(0.4, "share of problems asked with TAGS_IN_WORDS instead (always tagged)")
    epochs: float = option(5.0, "passes over the training problems")
    batch_size: int = option(16, "examples per step")
    lr: float = option(2e-3, "peak learning rate (for our small model)")
    warmup_steps: int = option(10, "linear warm-up steps")


@dataclass
class WarmupConfig:
    examples: int | None = option(500, "training problems used, in order (the book: the first 500 with a CoT file)")
    epochs: float = option(1.0, "passes over them (the book: 1)")
    batch_size: int = option(2, "examples per step (the book: 2)")
    lr: float = option(5e-5, "peak learning rate (the book: 5e-5)")
    warmup_steps: int = option(0, "linear warm-up steps (the book: none)")
    train_on_prompt: bool = option(True, "the book's labels = input_ids: the prompt is trained on too")


@dataclass
class EvalConfig:
    problems: int = option(30, "held-out problems (the book: 30)")
    max_new_tokens: int = option(512, "new tokens per greedy answer (the book: 512)")


# --------------------------------------------------------------------------------------------
# The starting model: instruction-tuned, rarely in the format
# --------------------------------------------------------------------------------------------

def gsm8k_style(problem: Problem) -> str:
    """The worked solution without calculator notes, then "#### answer" (GSM8K's own layout)."""
    return re.sub(r"<<[^>]*>>", "", problem.solution) + f"\n#### {problem.answer}"


def instruct_pairs(problems: Sequence[Problem], cfg: InstructConfig, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of the instruction data, one per problem (see the module docstring)."""
    r = random.Random(seed)
    pairs = []
    for p in problems:
        if r.random() < cfg.reworded_share:
            pairs.append((build_prompt(p.question, TAGS_IN_WORDS), "\n" + format_completion(p)))
        else:
            tagged = r.random() < cfg.format_rate
            pairs.append((build_prompt(p.question), "\n" + (format_completion(p) if tagged else gsm8k_style(p))))
    return pairs


def instruction_tune(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: InstructConfig,
                     eos_id: int, out_dir: str | Path | None, seed: int = 0, device: str | None = None) -> dict:
    """Fine-tune `model` in place on `instruct_pairs(problems)` (loss on the answers only)."""
    m = _fine_tune(model, tokenizer, instruct_pairs(problems, cfg, seed), eos_id, cfg, False, out_dir, seed, device,
                   "instruction tuning")
    return {f"instruct_{k}": v for k, v in m.items()}


def _fine_tune(model: torch.nn.Module, tokenizer, pairs: list[tuple[str, str]], eos_id: int,
               cfg: InstructConfig | WarmupConfig, train_on_prompt: bool, out_dir: str | Path | None, seed: int,
               device: str | None, desc: str) -> dict:
    """SFT on (prompt, completion) pairs (+ EOS) with cfg's lr, batch size, epochs and warm-up; eval mode after."""
    examples = SFTExamples(pairs, tokenizer, eos_id, context=context_length(model.config),
                           train_on_prompt=train_on_prompt)
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps,
                       weight_decay=0.0, device=device, seed=seed)
    metrics = train(model, examples, None, tcfg, out_dir, desc=desc)
    model.eval()
    return {"examples": len(examples), "steps": metrics["steps"], "loss": metrics["train_loss"],
            "seconds": metrics["seconds"]}


# --------------------------------------------------------------------------------------------
# The book's SFT warm-up (TRL notebook): worked solutions in the tags
# --------------------------------------------------------------------------------------------

def warmup_pairs(problems: Sequence[Problem]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs in the book's SFT text layout: prompt + "\\n" + formatted solution."""
    return [(build_prompt(p.question), "\n" + format_completion(p)) for p in problems]


def sft_warmup(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: WarmupConfig, eos_id: int,
               out_dir: str | Path | None, seed: int = 0, device: str | None = None) -> dict:
    """Fine-tune `model` in place on the first `cfg.examples` problems' formatted solutions (+ EOS)."""
    chosen = list(problems[:cfg.examples] if cfg.examples is not None else problems)
    m = _fine_tune(model, tokenizer, warmup_pairs(chosen), eos_id, cfg, cfg.train_on_prompt, out_dir, seed, device,
                   "sft warm-up")
    return {f"warmup_{k}": v for k, v in m.items()}


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def greedy_completions(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], max_new_tokens: int,
                       eos_id: int, batch_size: int = 32) -> list[str]:
    """Greedy completions of the book's prompts, `batch_size` at a time in order, cut before the first EOS."""
    prompts = [tokenizer.encode(build_prompt(p.question)) for p in problems]
    return complete(model, tokenizer, prompts, max_new_tokens, stop_token_ids=[eos_id], pad_token_id=eos_id,
                    vocab_limit=tokenizer.vocab_size, batch_size=batch_size)


def evaluate(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], max_new_tokens: int,
             eos_id: int) -> tuple[dict, list[str]]:
    """Greedy answers to held-out problems: ({"accuracy" (the book's rule), "format_rate" (both
    answer tags present), "accuracy_any_format" (the last number, tags ignored)}, completions)."""
    texts = greedy_completions(model, tokenizer, problems, max_new_tokens, eos_id)
    n, golds = max(len(problems), 1), [p.answer for p in problems]
    return {"accuracy": sum(map(is_correct, texts, golds)) / n,
            "format_rate": sum(map(has_answer_tags, texts)) / n,
            "accuracy_any_format": sum(map(is_correct_any_format, texts, golds)) / n}, texts
