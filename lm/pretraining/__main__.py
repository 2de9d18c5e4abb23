"""The chapter 3-4 language models on any data dir's news corpus, from the command line.

    python -m lm.pretraining --model rnn         --data-dir ../shared/data --tokens 2400000 --out runs/rnn_news
    python -m lm.pretraining --model transformer --data-dir ../shared/data --tokens 2400000 --out runs/decoder_news

The defaults are the book's full run (what stage rnn_lm / decoder_lm --full train). The model and
data flags are NewsLMConfig's fields, the training flags TrainFlags' (below): each default and its
help is written once, in its dataclass (lm.cli). Writes OUT/metrics.jsonl, OUT/checkpoint.pt and
OUT/summary.json; `--resume` continues from the checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

from lm.cli import add_dataclass_flags, dataclass_from_args, option
from lm.errors import LMError
from lm.pretraining.pretrain import KINDS, NewsLMConfig, train_language_model
from lm.training.engine import TrainConfig
from lm.utils import choose_device, write_summary

PROG = "python -m lm.pretraining"


@dataclass
class TrainFlags:
    """The engine's settings this command line sets (the rest keep TrainConfig's defaults)."""
    tokens: int = option(2_400_000, "token budget (input positions incl. padding)")
    batch_size: int = option(32, "sentences per step")
    context: int = option(30, "tokens per sentence (longer ones are cut)")
    lr: float = option(3e-3, "peak learning rate")
    warmup: int = option(100, "warm-up steps")
    eval_interval: int = option(500, "steps between evaluations (0: end only)")
    checkpoint_interval: int = option(500, "steps between checkpoints")
    seed: int = option(0, "random seed")

    def train_config(self, device: str | None) -> TrainConfig:
        """The TrainConfig of these flags; every evaluation reads the whole validation split."""
        return TrainConfig(lr=self.lr, warmup_steps=self.warmup, batch_size=self.batch_size, context=self.context,
                           max_tokens=self.tokens, eval_interval=self.eval_interval, eval_batches=None,
                           checkpoint_interval=self.checkpoint_interval, device=device, seed=self.seed)


def build_parser() -> argparse.ArgumentParser:
    """What to train, where, and on what device; then NewsLMConfig's and TrainFlags' fields."""
    p = argparse.ArgumentParser(prog=PROG, description="Train the book's RNN or decoder LM on a data dir's news "
                                                       "corpus.")
    p.add_argument("--model", choices=KINDS, required=True, help="chapter 3 RNN or chapter 4 decoder")
    p.add_argument("--data-dir", required=True, help="folder with news/train.txt and news/valid.txt")
    p.add_argument("--out", required=True, help="output folder (metrics.jsonl, checkpoint.pt, summary.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is often "
                   "fastest on a busy machine")
    add_dataclass_flags(p, NewsLMConfig)
    add_dataclass_flags(p, TrainFlags)
    return p


def main(argv: list[str] | None = None) -> int:
    """python -m lm.pretraining --model rnn|transformer --data-dir DIR --out DIR [flags]: 0, or 2 on an error."""
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = dataclass_from_args(TrainFlags, a).train_config(a.device)
    try:
        choose_device(a.device)
        m = train_language_model(a.model, a.data_dir, a.out, cfg, dataclass_from_args(NewsLMConfig, a),
                                 resume=a.resume)
    except LMError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    write_summary(a.out, m)
    print(f"{a.model}: val_perplexity {m['val_perplexity']:.2f} after {m['tokens']:,} tokens, {m['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
