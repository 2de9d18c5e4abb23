"""A data dir's news corpus as language-model examples: lines -> tokenizer -> SentenceExamples.

Data preparation for pretraining (`lm.pretraining.pretrain`): the chapter 3-4 models read it as
one example per sentence, the small GPT-2 as the sentences themselves (`read_news`). The book's
news preprocessing masks every digit as '#'; each sentence ends with an end-of-sentence token, so a
model learns where sentences stop.

    >>> tok, train, valid = load_lm_corpus("data", context=30, vocab_size=500)   # doctest: +SKIP
"""
from __future__ import annotations

import os
import re
from typing import Sequence

from lm.data.loaders import data_file, iter_lines
from lm.errors import ConfigError
from lm.tokenizers.bpe import BPETokenizer
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.batches import PackedExamples, SentenceExamples, encode_lines

_DIGIT = re.compile(r"[0-9]")
TOKENIZERS = (BPETokenizer.NAME, GPT2Tokenizer.NAME)   # the book's BPE trained here, or GPT-2's from a folder


def read_news(data_dir, train_lines: int | None, valid_lines: int | None) -> tuple[list[str], list[str]]:
    """The first `train_lines` / `valid_lines` sentences of news/train.txt and news/valid.txt (None: all)."""
    return (list(iter_lines(data_file(data_dir, "news/train.txt"), max_lines=train_lines)),
            list(iter_lines(data_file(data_dir, "news/valid.txt"), max_lines=valid_lines)))


def mask_digits(text: str) -> str:
    """The book's news preprocessing: every digit becomes '#', so "12.5 mln" -> "##.# mln"."""
    return _DIGIT.sub("#", text)


class WithEOS:
    """Wrap a tokenizer that has no end-of-sentence token: id `vocab_size` becomes one.

    The model's vocabulary is then `tokenizer.vocab_size + 1`; decoding drops the extra id.
    """

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.eos_id = tokenizer.vocab_size
        self.vocab_size = tokenizer.vocab_size + 1

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode([int(i) for i in ids if int(i) != self.eos_id])


def load_lm_corpus(data_dir: str | os.PathLike, context: int, tokenizer: str = BPETokenizer.NAME,
                   vocab_size: int = 8000, digits_to_hash: bool = True, max_train_lines: int | None = None,
                   max_valid_lines: int | None = None, packed: bool = False, tokenizer_dir: str | None = None):
    """Read `news/train.txt` and `news/valid.txt`, build a tokenizer, return examples.

    tokenizer (one of TOKENIZERS): `BPETokenizer.NAME` trains the book's BPE (lm.tokenizers.bpe) on
    the training split's words with `vocab_size`; `GPT2Tokenizer.NAME` loads GPT-2's tokenizer from
    `tokenizer_dir` (vocab.json + merges.txt).
    Every sentence ends with an end-of-sentence token so a model learns where sentences stop.
    Returns `(tokenizer, train_examples, valid_examples)`; `tokenizer.vocab_size` sizes the model.
    """
    train_path, valid_path = data_file(data_dir, "news/train.txt"), data_file(data_dir, "news/valid.txt")
    prep = mask_digits if digits_to_hash else None

    def train_lines():  # streamed from disk twice (BPE training, then encoding), never held as text
        return iter_lines(train_path, prep, max_train_lines)

    if tokenizer == BPETokenizer.NAME:
        words = (w for line in train_lines() for w in line.split())
        tok = WithEOS(BPETokenizer.train(words, vocab_size))
        eos = tok.eos_id
    elif tokenizer == GPT2Tokenizer.NAME:
        if not tokenizer_dir:
            raise ConfigError(f"tokenizer {tokenizer!r} needs tokenizer_dir (a folder with vocab.json and merges.txt)")
        tok = GPT2Tokenizer.from_dir(tokenizer_dir)
        eos = tok.eot_id
    else:
        raise ConfigError(f"tokenizer must be one of {', '.join(map(repr, TOKENIZERS))}, got {tokenizer!r}")
    tr_ids, tr_off = encode_lines(train_lines(), tok, eos)
    va_ids, va_off = encode_lines(iter_lines(valid_path, prep, max_valid_lines), tok, eos)
    if packed:
        return tok, PackedExamples(tr_ids, context), PackedExamples(va_ids, context)
    return tok, SentenceExamples(tr_ids, tr_off, context, pad_id=eos), SentenceExamples(va_ids, va_off, context, pad_id=eos)
