"""Stage decoder_lm (book, chapter 4): the decoder transformer language model on the news corpus.

Trains `lm.models.transformer.DecoderLanguageModel` (embedding 128, 2 blocks, 8 heads, RoPE,
RMSNorm) with the same engine, data, tokenizer, settings and token budget as stage rnn_lm, so
the two validation perplexities compare directly.
"""
from __future__ import annotations

from pathlib import Path

from lm.stages import LM_DATA_FILES, LM_KEY_METRICS, LMSettings, RunConfig

KEY_METRICS, DATA_FILES = LM_KEY_METRICS, LM_DATA_FILES
NEEDS_GPT2 = False
Settings = LMSettings    # the same settings as rnn_lm (`lm.stages.LMSettings`)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    return s.train("transformer", cfg, data_dir, out_dir)
