"""Before and around GRPO: the SFT warm-up on formatted solutions, and accuracy by greedy decoding.

The book's 0.5B notebook first fine-tunes the model on worked solutions in the answer format
(`<reasoning>...</reasoning><answer>...</answer>`), so that the format, and some answers, are
there for GRPO's rewards to find; then it measures accuracy on held-out problems before SFT,
after SFT and after GRPO. Both go through shared pieces: the warm-up is supervised fine-tuning
(`lm.finetune.sft`) on the one engine, and evaluation is greedy decoding through the one
generation path, judged by the book's rule (`lm.rl.tasks.is_correct`).

Where we differ: the book's warm-up text is a chain of thought written by another model
(`cot.tar.gz`, not available offline); ours is the problem's own worked solution
(`lm.rl.tasks.format_completion`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lm.finetune.sft import SFTExamples
from lm.inference.generate import generate
from lm.rl.tasks import Problem, accuracy, build_prompt, format_completion
from lm.training.engine import TrainConfig, train


@dataclass
class WarmupConfig:
    examples: int | None = 500     # training problems used, in order (the book: the first 500 with a CoT file)
    epochs: float = 1.0            # passes over them (the book: 1)
    batch_size: int = 2            # examples per step (the book: 2)
    lr: float = 5e-5               # peak learning rate (the book: 5e-5)
    warmup_steps: int = 0          # linear warm-up steps (the book: none)
    train_on_prompt: bool = True   # the book's labels = input_ids: the prompt is trained on too


def warmup_pairs(problems: Sequence[Problem]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs in the book's SFT text layout: prompt + "\\n" + formatted solution."""
    return [(build_prompt(p.question), "\n" + format_completion(p)) for p in problems]


def sft_warmup(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], cfg: WarmupConfig, eos_id: int,
               out_dir: str | Path | None, seed: int = 0, device: str | None = None) -> dict:
    """Fine-tune `model` in place on the first `cfg.examples` problems' formatted solutions (+ EOS)."""
    chosen = list(problems[:cfg.examples] if cfg.examples is not None else problems)
    context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    examples = SFTExamples(warmup_pairs(chosen), tokenizer, eos_id, context=context,
                           train_on_prompt=cfg.train_on_prompt)
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps,
                       weight_decay=0.0, device=device, seed=seed)
    metrics = train(model, examples, None, tcfg, out_dir, desc="sft warm-up")
    model.eval()
    return {"warmup_examples": len(examples), "warmup_steps": metrics["steps"],
            "warmup_loss": metrics["train_loss"], "warmup_seconds": metrics["seconds"]}


@torch.no_grad()
def greedy_completions(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], max_new_tokens: int,
                       eos_id: int, batch_size: int = 32) -> list[str]:
    """Greedy completions of the book's prompts, in batches, cut at the first EOS."""
    texts = []
    was_training = model.training
    model.eval()
    for i in range(0, len(problems), batch_size):
        prompts = [tokenizer.encode(build_prompt(p.question)) for p in problems[i:i + batch_size]]
        out = generate(model, prompts, max_new_tokens, stop_token_ids=[eos_id], pad_token_id=eos_id,
                       vocab_limit=tokenizer.vocab_size)
        T = max(len(p) for p in prompts)
        for row in out[:, T:].tolist():
            texts.append(tokenizer.decode(row[:row.index(eos_id)] if eos_id in row else row))
    model.train(was_training)
    return texts


def evaluate_accuracy(model: torch.nn.Module, tokenizer, problems: Sequence[Problem], max_new_tokens: int,
                      eos_id: int) -> tuple[float, list[str]]:
    """The book's correctness rule over greedy completions: (accuracy, completions)."""
    texts = greedy_completions(model, tokenizer, problems, max_new_tokens, eos_id)
    return accuracy(texts, [p.answer for p in problems]), texts
