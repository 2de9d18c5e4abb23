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

from pathlib import Path

from lm.stages import LM_DATA_FILES, LM_KEY_METRICS, LMSettings, RunConfig

KEY_METRICS, DATA_FILES = LM_KEY_METRICS, LM_DATA_FILES
NEEDS_GPT2 = False
Settings = LMSettings    # the same settings as decoder_lm (`lm.stages.LMSettings`)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    return s.train("rnn", cfg, data_dir, out_dir)
