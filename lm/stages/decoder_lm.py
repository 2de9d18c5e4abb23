"""Stage decoder_lm (book, chapter 4): the decoder transformer language model on the news corpus.

Trains `lm.models.transformer.DecoderLanguageModel` (embedding 128, 2 blocks, 8 heads, RoPE,
RMSNorm) with the same engine, data, tokenizer, settings and token budget as stage rnn_lm, so
the two validation perplexities compare directly.
"""
from __future__ import annotations

from pathlib import Path

from lm.stages import LMSettings, RunConfig
from lm.pretraining.pretrain import train_language_model

KEY_METRICS = ["val_perplexity", "tokens", "tokens_per_s"]
DATA_FILES = ["news/train.txt", "news/valid.txt"]
NEEDS_GPT2 = False
Settings = LMSettings    # the same settings as rnn_lm (`lm.stages.LMSettings`)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    return train_language_model("transformer", data_dir, out_dir, s.train_config(cfg), vocab_size=s.vocab_size,
                                max_train_lines=s.train_lines, max_valid_lines=s.valid_lines)
