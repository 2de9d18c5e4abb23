"""Stage rnn_lm (book, chapter 3): the Elman RNN language model on the news corpus.

Trains `lm.models.rnn.RecurrentLanguageModel` (embedding 128, 2 layers) with the engine and
reports validation perplexity and greedy continuations of the book's four prompts. Stage
decoder_lm trains the chapter 4 decoder with the very same settings, data and token budget, so
the two perplexities compare directly.

--quick: the first 20,000 sentences, a 2,000-token BPE, 500 steps of 32 sentences (under 0.5 M
tokens). --full: the whole corpus, an 8,000-token BPE and a 2.4 M-token budget (about one epoch of
the real news data) = `python -m lm.pretraining --model rnn --data-dir DIR`. Small batches
on purpose: the RNN, initialised as the book does (Xavier also on the embedding), sits on a
unigram plateau for its first few hundred steps; more steps get it past that sooner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.stages import RunConfig, quick_full
from lm.training.engine import TrainConfig
from lm.pretraining.pretrain import train_language_model

KEY_METRICS = ["val_perplexity", "tokens", "tokens_per_s"]
DATA_FILES = ["news/train.txt", "news/valid.txt"]
NEEDS_GPT2 = False


@dataclass
class Settings:
    train_lines: int | None = quick_full(20_000, None)   # sentences of news/train.txt (None: all)
    valid_lines: int | None = quick_full(2_000, None)    # sentences of news/valid.txt (None: all)
    vocab_size: int = quick_full(2000, 8000)             # the book's BPE, trained on the train split
    steps: int | None = quick_full(500, None)            # optimizer steps (None: from max_tokens)
    max_tokens: int | None = quick_full(None, 2_400_000) # token budget when steps is None
    warmup_steps: int = quick_full(50, 100)              # linear warm-up
    eval_interval: int = quick_full(0, 500)              # steps between evaluations (0: at the end)
    eval_batches: int | None = quick_full(16, None)      # validation batches (None: all)
    checkpoint_interval: int = quick_full(0, 500)        # steps between checkpoints (0: at the end)
    lr: float = quick_full(3e-3, 3e-3)                   # peak learning rate
    batch_size: int = quick_full(32, 32)                 # sentences per step
    context: int = quick_full(30, 30)                    # tokens per sentence (the book's 30)


def train_stage(kind: str, cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    """rnn_lm and decoder_lm: the same settings for both model kinds."""
    tcfg = TrainConfig(lr=s.lr, warmup_steps=s.warmup_steps, batch_size=s.batch_size, context=s.context,
                       max_steps=s.steps, max_tokens=s.max_tokens, eval_interval=s.eval_interval,
                       eval_batches=s.eval_batches, checkpoint_interval=s.checkpoint_interval,
                       device=cfg.device, seed=cfg.seed)
    return train_language_model(kind, data_dir, out_dir, tcfg, vocab_size=s.vocab_size,
                                max_train_lines=s.train_lines, max_valid_lines=s.valid_lines)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    return train_stage("rnn", cfg, s, data_dir, out_dir)
