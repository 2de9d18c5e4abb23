"""Text embeddings from our own GPT-2: the mean of its last hidden states over a text's tokens.

The book embeds documents and labels with `BAAI/bge-m3`, a model trained for exactly this. We
have no such model offline, so we use the GPT-2 of chapter 5 (`lm.models.gpt2`): run the text
through the transformer (no LM head) and average the final hidden states over the real tokens,

    e(text) = mean_t h_t,    h = GPT2Model(tokens) (T, C)

then scale to unit length so that a dot product is a cosine. A causal LM's states are not trained
to be compared this way, and they share a large common direction (every text looks alike); with
`center=True` the mean embedding of a reference set (the texts given to `fit`) is subtracted
before normalising, which removes that direction. The candidate step measures both against the
TF-IDF baseline (`lm.labeling.tfidf`) and keeps the better.

Texts are sorted by length and embedded in batches with right padding and an attention mask
(padding never enters the mean); a text longer than the model's window keeps its first tokens.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lm.errors import ConfigError
from lm.training.batches import pad_right


class GPT2Embedder:
    """Mean-pooled, unit-length hidden states of a `GPT2Model` (`GPT2(...).transformer` or `GPT2Base`)."""

    def __init__(self, transformer: torch.nn.Module, tokenizer, batch_size: int = 32, max_tokens: int | None = None,
                 center: bool = False):
        self.transformer = getattr(transformer, "transformer", transformer)   # accept GPT2 / GPT2Base too
        self.tokenizer = tokenizer
        self.batch_size = batch_size                                  # texts per forward pass
        n_pos = self.transformer.config.n_positions
        self.max_tokens = min(max_tokens or n_pos, n_pos)             # longer texts keep their first tokens
        self.center = center                                          # subtract the mean of `fit`'s texts
        self.mean: np.ndarray | None = None                           # (C,) set by fit when centering
        self.memo: dict[str, np.ndarray] = {}                         # text -> pooled state (fit, then embed)

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) mean hidden state of each text (not normalised); each distinct text is run once."""
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if new:
            self.memo.update(zip(new, self._pooled(new)))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.transformer.config.n_embd),
                                                                               dtype=np.float32)

    @torch.no_grad()
    def _pooled(self, texts: Sequence[str]) -> np.ndarray:
        ids = [self.tokenizer.encode_ordinary(t)[: self.max_tokens] or [0] for t in texts]
        device = next(self.transformer.parameters()).device
        out = np.zeros((len(texts), self.transformer.config.n_embd), dtype=np.float32)   # (N, C)
        order = np.argsort([len(x) for x in ids], kind="stable")      # similar lengths share a batch
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch, mask = pad_right([ids[i] for i in rows], 0)       # (B, T) right-padded; mask 1 = real token
            batch, mask = batch.to(device), mask.to(device)
            h = self.transformer(batch, attention_mask=mask).float()   # (B, T, C)
            m = mask[..., None].float()                                 # (B, T, 1)
            out[rows] = ((h * m).sum(1) / m.sum(1)).cpu().numpy()       # (B, C)
        return out

    def fit(self, texts: Sequence[str]) -> "GPT2Embedder":
        """Remember the mean embedding of `texts` (used when `center`)."""
        if not texts:
            raise ConfigError("GPT2Embedder.fit needs at least one text")
        self.mean = self.pooled(texts).mean(0) if self.center else None
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) unit-length embeddings (centered first when `center`)."""
        if self.center and self.mean is None:
            raise ConfigError("GPT2Embedder(center=True): call fit() on reference texts first")
        e = self.pooled(texts)
        if self.center:
            e = e - self.mean
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(len(a), len(b)) cosines of unit rows."""
        return a @ b.T
