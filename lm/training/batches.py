"""Token data for language models: text files -> token ids -> examples -> padded batches.

The training engine (`lm.training.engine`) does not care where examples come from. It needs an object with

    len(examples)                    # how many examples one epoch has
    examples.collate(indices)        # -> {"input_ids": (B, T) long, "targets": (B, T) long, ...}

`targets` holds the next token at every position and `IGNORE_INDEX` (-100) where no loss is taken
(padding, or a prompt that SFT does not train on). Two kinds of examples serve the LM chapters:

- `SentenceExamples`: one example per line, cut to `context + 1` tokens, right-padded per batch.
  This is the book's set-up for chapters 3-4 (one news sentence = one training sequence).
- `PackedExamples`: one long token stream cut into windows of `context + 1` tokens, no padding
  (GPT-style pretraining).

Every right-padded batch of the project (these, SFT, the classification head, the labellers, the
CNN's rows) is made by one function, `pad_right`. Right padding needs no attention mask for a causal
model: a real token never looks at the padding to its right, and padded positions carry no loss.
That keeps the fast causal attention path.

Token ids are kept as compact int32 arrays. `lm/pretraining/corpus.py` turns a data dir's news
corpus into these examples.
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import numpy as np
import torch

from lm.errors import ConfigError

IGNORE_INDEX = -100  # targets with this value carry no loss (F.cross_entropy's ignore_index)


def pad_right(sequences: Sequence[Sequence[int] | np.ndarray | torch.Tensor], pad_id: int,
              length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token sequences -> (ids, mask), both (B, T) long, padded on the right.

    T is the longest sequence (or `length`, which none may exceed); ids holds `pad_id` after each
    sequence, mask is 1 on the real tokens and 0 on the padding. Every right-padded batch here is
    made by this function (LM sentences, SFT, the classification head, the labellers' embeddings
    and candidates, the CNN's fixed-length rows); `generate.left_pad` is its mirror for prompts.

    >>> ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)       # (B,)
    if length is None:
        if not len(sequences):
            raise ConfigError("pad_right needs at least one sequence (or a length)")
        length = int(lengths.max())
    elif len(sequences) and int(lengths.max()) > length:
        raise ConfigError(f"a sequence of {int(lengths.max())} tokens does not fit the length {length}")
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()            # (B, T)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)       # (B, T)
    if int(lengths.sum()):
        flat = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences])   # (sum of lengths,)
        ids[mask.bool()] = torch.from_numpy(flat)      # row by row, left to right: each sequence's place
    return ids, mask


class Tokenizer(Protocol):
    """What this module needs from a tokenizer (BPETokenizer and GPT2Tokenizer both fit)."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def encode_lines(lines: Iterable[str], tokenizer: Tokenizer, eos_id: int | None = None,
                 min_tokens: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Encode lines into one flat int32 array plus offsets (a ragged array without Python lists).

    Returns `(ids, offsets)` with line i = `ids[offsets[i]:offsets[i + 1]]`. `eos_id`, if given,
    ends every line. Lines shorter than `min_tokens` (nothing to predict) are dropped.
    """
    chunks: list[np.ndarray] = []
    lengths: list[int] = []
    for line in lines:
        ids = tokenizer.encode(line)
        if eos_id is not None:
            ids = list(ids) + [eos_id]
        if len(ids) < min_tokens:
            continue
        chunks.append(np.asarray(ids, dtype=np.int32))
        lengths.append(len(ids))
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return flat, offsets


class SentenceExamples:
    """One example per sentence: the first `context + 1` tokens, inputs = x[:-1], targets = x[1:].

    Batches are right-padded to the longest example in the batch: inputs with `pad_id`, targets
    with IGNORE_INDEX.

    >>> ex = SentenceExamples(np.array([5, 6, 7, 8, 9]), np.array([0, 3, 5]), context=4)
    >>> ex.collate([0, 1])["targets"].tolist()
    [[6, 7], [9, -100]]
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, context: int, pad_id: int = 0):
        if context < 1:
            raise ConfigError(f"context must be >= 1, got {context}")
        self.ids, self.offsets, self.context, self.pad_id = ids, offsets, context, pad_id
        lengths = np.minimum(np.diff(offsets), context + 1)
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def n_targets(self) -> int:
        """Predicted tokens in one epoch (the 'tokens' a budget counts)."""
        return int(np.maximum(self.lengths - 1, 0).sum())

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        seqs = [self.ids[self.offsets[i]:self.offsets[i] + int(self.lengths[i])] for i in indices]
        x, _ = pad_right([s[:-1] for s in seqs], self.pad_id)                    # (B, T)
        y, _ = pad_right([s[1:] for s in seqs], IGNORE_INDEX)                    # (B, T)
        return {"input_ids": x, "targets": y}


class PackedExamples:
    """A token stream cut into non-overlapping windows of `context + 1` tokens (no padding).

    >>> ex = PackedExamples(np.arange(10), context=4)
    >>> len(ex), ex.collate([1])["input_ids"].tolist()
    (2, [[4, 5, 6, 7]])
    """

    def __init__(self, tokens: np.ndarray | torch.Tensor, context: int):
        if context < 1:
            raise ConfigError(f"context must be >= 1, got {context}")
        t = tokens.numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if t.ndim != 1:
            raise ConfigError(f"a token stream must be 1-D, got shape {tuple(t.shape)}")
        if len(t) < context + 1:
            raise ConfigError(f"token stream of {len(t)} tokens is shorter than context + 1 = {context + 1}")
        self.tokens, self.context = t, context

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.context

    def n_targets(self) -> int:
        return len(self) * self.context

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        c = self.context
        rows = np.stack([self.tokens[i * c:i * c + c + 1] for i in indices]).astype(np.int64)
        t = torch.from_numpy(rows)                                             # (B, T+1)
        return {"input_ids": t[:, :-1].contiguous(), "targets": t[:, 1:].contiguous()}


def as_examples(data, context: int):
    """Accept an examples object, a 1-D token tensor/array (packed), or a list of token lists."""
    if hasattr(data, "collate") and hasattr(data, "__len__"):
        return data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return PackedExamples(data, context)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (list, tuple, np.ndarray)):
        lengths = [len(s) for s in data]
        flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in data])
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return SentenceExamples(flat, offsets, context)
    raise ConfigError(f"cannot make training examples from {type(data).__name__}: give a 1-D token "
                      "tensor, a list of token-id lists, or an object with __len__ and collate()")
