"""The CNN classifier's data (book 5.3.1): the book's whitespace tokeniser, fixed-length id rows, the engine's pieces.

- `WordVocab`: split on whitespace, look a word up as it is, then lowercased, else id 0 (the book
  gives unknown words and padding a zero vector); truncate or zero-pad to `seq_len` ids;
- `vocab_from_vectors` / `lookup_words`: the vocabulary and embedding table of a word2vec file,
  read only for the words the texts can ask for;
- `ClassificationExamples` + `classification_loss`: what the one training engine needs
  (`collate(indices) -> {"input_ids", "targets"}` and `loss_fn(model, batch) -> (loss, n)`);
- `predict_classes`: argmax class ids, batch by batch, in eval mode.

    >>> vocab = WordVocab.from_texts(["i feel happy", "i feel sad"])
    >>> vocab.encode_batch(["I feel HAPPY today"], seq_len=5).tolist()
    [[1, 2, 3, 0, 0]]
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.finetune.baselines import checked_texts
from lm.finetune.word_vectors import WordVectors
from lm.training.batches import pad_right


class WordVocab:
    """The book's CNN tokeniser: split on whitespace; look a word up as it is, then lowercased.

    Id 0 is both padding and "unknown word" (the book gives both a zero vector); words[i] has id i + 1.
    encode(text, seq_len) truncates or zero-pads to exactly seq_len ids.

    >>> v = WordVocab(["happy", "I"])
    >>> v.encode("I am HAPPY", 5)
    [2, 0, 1, 0, 0]
    """

    def __init__(self, words: Sequence[str]):
        self.words = list(words)
        self.index = {w: i + 1 for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words) + 1   # with id 0

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> "WordVocab":
        """Every whitespace token seen at least `min_count` times (most frequent first)."""
        counts = Counter(w for t in checked_texts(texts) for w in t.split())
        return cls([w for w, c in counts.most_common() if c >= min_count])

    def lookup(self, word: str) -> int:
        return self.index.get(word) or self.index.get(word.lower(), 0)

    def word_ids(self, text: str, seq_len: int) -> list[int]:
        """The ids of the first `seq_len` words (no padding)."""
        return [self.lookup(w) for w in text.split()[:seq_len]]

    def encode(self, text: str, seq_len: int) -> list[int]:
        return pad_right([self.word_ids(text, seq_len)], 0, seq_len)[0][0].tolist()

    def encode_batch(self, texts: Iterable[str], seq_len: int) -> torch.Tensor:
        """(N, seq_len) long: each text's word ids, zero-padded on the right."""
        return pad_right([self.word_ids(t, seq_len) for t in checked_texts(texts)], 0, seq_len)[0]


def vocab_from_vectors(wv: WordVectors) -> tuple[WordVocab, torch.Tensor]:
    """A `WordVocab` of the file's words and its embedding table (len(vocab), dim), row 0 zeros."""
    table = torch.zeros(len(wv.words) + 1, wv.dim)                      # (V + 1, D)
    table[1:] = torch.from_numpy(wv.vectors)
    return WordVocab(wv.words), table


def lookup_words(texts: Iterable[str]) -> set[str]:
    """Every form `WordVocab.lookup` may ask for: the whitespace tokens of `texts`, as is and lowercased.

    Reading only these from a 3-million-word vector file gives the same lookups as the whole file."""
    words = {w for t in texts for w in t.split()}
    return words | {w.lower() for w in words}


class ClassificationExamples:
    """Fixed-length id rows and their class ids, for the training engine: collate -> input_ids, targets."""

    def __init__(self, input_ids: torch.Tensor, targets: torch.Tensor):
        if len(input_ids) != len(targets):
            raise ConfigError(f"{len(input_ids)} inputs but {len(targets)} labels")
        self.input_ids, self.targets = input_ids, targets   # (N, L), (N,)

    def __len__(self) -> int:
        return len(self.targets)

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"input_ids": self.input_ids[idx], "targets": self.targets[idx]}


def classification_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """The engine's loss_fn for a classifier: cross-entropy of model(input_ids) (B, K) against targets (B,)."""
    logits = model(batch["input_ids"])                      # (B, K)
    return F.cross_entropy(logits.float(), batch["targets"]), int(batch["targets"].numel())


@torch.no_grad()
def predict_classes(model: nn.Module, input_ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Argmax class ids (N,) of `model` over `input_ids` (N, L), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [model(input_ids[i:i + batch_size].to(device)).argmax(1).cpu()
               for i in range(0, len(input_ids), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
