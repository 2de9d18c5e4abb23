"""Stage `bpe` (book 2.3): train the book's BPE tokenizer on the news corpus and use it.

The book trains on the first 500,000 words of its news corpus to a 5,000-token vocabulary and
tokenizes "Let's proceed to the language modeling part.". We do the same (the corpus split on
whitespace), measure characters per token on the held-out `news/valid.txt`, and also train a
byte-level (GPT-2 style) BPE of the same size on the same text, which later stages can use when
no GPT-2 files are given.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import data_file, read_lines
from lm.stages import RunConfig, quick_full
from lm.tokenizers.bpe import BPETokenizer
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.utils import say

BOOK_SENTENCE = "Let's proceed to the language modeling part."
KEY_METRICS = ["vocab_size", "chars_per_token", "train_seconds"]
DATA_FILES = ["news/train.txt", "news/valid.txt"]
NEEDS_GPT2 = False


@dataclass
class Settings:
    # The book's own sizes take about a second, so --quick keeps them; --full uses every word.
    max_words: int | None = quick_full(500_000, None)         # training words (the book's max_corpus_size)
    vocab_size: int = quick_full(5_000, 5_000)                # target vocabulary, counted as the book counts it
    bytelevel_lines: int | None = quick_full(20_000, None)    # lines for the byte-level tokenizer (None: all)
    bytelevel_vocab_size: int = quick_full(5_000, 5_000)      # its vocabulary (256 bytes + merges + <|endoftext|>)


def run(cfg: RunConfig, sc: Settings, data_dir: Path, out_dir: Path) -> dict:
    train_lines = read_lines(data_file(data_dir, "news/train.txt"))
    valid_text = "\n".join(read_lines(data_file(data_dir, "news/valid.txt")))
    words = [w for line in train_lines for w in line.split()]
    if sc.max_words is not None:
        words = words[:sc.max_words]

    start = time.perf_counter()
    tok = BPETokenizer.train(words, sc.vocab_size)
    train_seconds = time.perf_counter() - start
    tok.save(out_dir / "bpe.json")
    tokens = tok.tokenize(BOOK_SENTENCE)
    valid_ids = tok.encode(valid_text)
    say(f"  BPE: {len(words):,} words -> {tok.vocab_size:,} ids in {train_seconds:.2f}s")
    say(f"  {BOOK_SENTENCE!r} -> {tokens}")

    lines = train_lines if sc.bytelevel_lines is None else train_lines[:sc.bytelevel_lines]
    start = time.perf_counter()
    btok = GPT2Tokenizer.train(lines, sc.bytelevel_vocab_size)
    bytelevel_seconds = time.perf_counter() - start
    btok.save(out_dir / "bytelevel")
    bids = btok.encode(valid_text)

    metrics = {
        "train_words": len(words),
        "vocab_size": tok.vocab_size,            # characters + merged tokens + <UNK>
        "merges": len(tok.merges),
        "chars_per_token": round(len(valid_text) / max(1, len(valid_ids)), 4),
        "unk_rate": round(valid_ids.count(tok.unk_id) / max(1, len(valid_ids)), 6),
        "train_seconds": round(train_seconds, 3),
        "book_sentence_tokens": tokens,
        "bytelevel_vocab_size": btok.vocab_size,
        "bytelevel_chars_per_token": round(len(valid_text) / max(1, len(bids)), 4),
        "bytelevel_train_seconds": round(bytelevel_seconds, 3),
        "bytelevel_round_trip": btok.decode(bids) == valid_text,   # byte-level BPE loses nothing
        "book_sentence_bytelevel_tokens": [btok.decode([i]) for i in btok.encode(BOOK_SENTENCE)],
    }
    return metrics
