"""Stages: one small module per run_all.py stage, in book order.

Each `lm/stages/<name>.py` defines

    def run(cfg: RunConfig, data_dir: Path, out_dir: Path) -> dict   # metrics

and may define `KEY_METRICS = [...]`, the metric names run_all.py shows in its table.
A stage whose module does not exist yet is reported as `not implemented` and skipped.
Stages are thin glue: pick data, tokenizer, model and algorithm, return metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

# The book's programs, in book order. These names are fixed: scripts outside the project use them.
STAGE_NAMES = [
    "quadratic_loss", "embedding_vs_linear", "bpe", "count_lm", "rnn_lm", "decoder_lm",
    "gpt2_pretrain", "sampling", "emotion_lr", "emotion_cnn", "emotion_sft", "emotion_lora",
    "emotion_classifier", "instruct_sft", "doc_labeling", "grpo", "grpo_ddp",
]


@dataclass
class RunConfig:
    quick: bool = True           # small sizes so the whole run fits in minutes on a laptop CPU; False = --full
    seed: int = 0                # seeds random, numpy and torch before each stage
    device: str | None = None    # "cpu", "cuda", "mps" or None for the best available
    quiet: bool = False          # no progress bars or per-stage chatter
    gpt2: str | None = None      # folder with real GPT-2 weights (HF layout), or a hub name to download
