"""Stage rnn_lm (book, chapter 3): the Elman RNN language model on the news corpus.

Trains `lm.rnn.RecurrentLanguageModel` (embedding 128, 2 layers) with the engine in `lm.train`,
reports validation perplexity and greedy continuations of the book's four prompts.
"""
from __future__ import annotations

from pathlib import Path

from lm.news_lm import news_lm_stage

KEY_METRICS = ["val_perplexity", "tokens", "tokens_per_s"]


def run(cfg, data_dir: Path, out_dir: Path) -> dict:
    return news_lm_stage("rnn", cfg, data_dir, out_dir)
