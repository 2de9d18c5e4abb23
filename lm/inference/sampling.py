"""Sampling from a language model (5.4): temperature, top-k, top-p and repetition penalties.

Two implementations of the same rules:

* `sample_token` -- the book's NumPy function, one logits vector at a time, kept as the readable
  reference (validate inputs; penalties; temperature; top-k; top-p; softmax; draw).
* `process_logits` / `sample_next` -- the batched torch version that `lm/inference/generate.py` calls on a
  (B, V) logits tensor every step. Tests check both give the same distribution.

Order, as in the book (and the transformers library): repetition penalty, presence penalty,
frequency penalty, temperature, top-k, top-p.

Where we deliberately differ from the book's code:
* the book's `sample_token` accepts `repetition_penalty` but never applies it; we apply the usual
  rule (positive logits of seen tokens divided by it, negative ones multiplied);
* top-p keeps the smallest set of most probable tokens whose probability reaches `top_p` (the
  book's docstring; its code also drops the token that crosses the threshold, and when every
  token is above it, keeps the *least* probable one);
* `min_tokens_to_keep` is a parameter (the book fixes it at 1 inside `sample_token`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from lm.errors import SamplingError



@dataclass
class SamplingConfig:
    temperature: float = 1.0         # > 0; < 1 sharpens the distribution, > 1 flattens it
    top_k: int = 0                   # keep the k most probable tokens; 0 = off
    top_p: float = 1.0               # keep the smallest set reaching this probability mass; 1 = off
    repetition_penalty: float = 1.0  # > 0; seen tokens' logits: positive / penalty, negative * penalty
    presence_penalty: float = 0.0    # subtracted once from the logit of every token already seen
    frequency_penalty: float = 0.0   # subtracted count times (count = occurrences so far)
    min_tokens_to_keep: int = 1      # top-k and top-p never keep fewer candidates than this

    def validate(self, vocab_size: int | None = None) -> None:
        """The book's input checks, plus ours for the penalties; raise SamplingError naming the field."""
        if not self.temperature > 0:
            raise SamplingError(f"temperature must be positive, got {self.temperature}")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise SamplingError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if vocab_size is not None and self.top_k > vocab_size:
            raise SamplingError(f"top_k must be between 0 and the vocabulary size {vocab_size}, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in the range (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise SamplingError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if not isinstance(self.min_tokens_to_keep, (int, np.integer)) or self.min_tokens_to_keep < 1:
            raise SamplingError(f"min_tokens_to_keep must be an integer >= 1, got {self.min_tokens_to_keep!r}")


# --------------------------------------------------------------------------------------------
# The reference: the book's sample_token, in NumPy, one step at a time
# --------------------------------------------------------------------------------------------

def token_probabilities(logits, cfg: SamplingConfig, prev_tokens: Sequence[int] | None = None) -> np.ndarray:
    """The distribution `sample_token` draws from (float64, sums to 1).

    `prev_tokens` are token ids seen so far (they drive the penalties).
    """
    logits = np.array(logits, dtype=np.float64)                    # a copy: the caller's array is kept
    if logits.ndim != 1 or logits.size == 0:
        raise SamplingError(f"logits must be a non-empty 1-D vector, got shape {logits.shape}")
    cfg.validate(len(logits))
    if np.isnan(logits).any():
        raise SamplingError("logits contain NaN")

    # 1. Penalties for tokens already seen.
    counts = Counter(int(t) for t in prev_tokens) if prev_tokens is not None else Counter()
    for idx, count in counts.items():
        if not 0 <= idx < len(logits):
            raise SamplingError(f"previous token id {idx} is outside the vocabulary of {len(logits)}")
        if logits[idx] > 0:
            logits[idx] /= cfg.repetition_penalty
        else:
            logits[idx] *= cfg.repetition_penalty
        logits[idx] -= cfg.presence_penalty
        logits[idx] -= cfg.frequency_penalty * count

    # 2. Temperature (and subtract the max so exp() cannot overflow).
    logits = logits / cfg.temperature
    if not np.isfinite(logits).any():
        raise SamplingError("no candidate token left: every logit is -inf")
    logits = logits - logits.max()

    # 3. Top-k: everything below the k-th largest logit is removed.
    if cfg.top_k > 0:
        keep = max(cfg.top_k, cfg.min_tokens_to_keep)
        order = np.argsort(-logits, kind="stable")
        logits[order[keep:]] = -np.inf

    # 4. Top-p: walk tokens from most to least probable; keep each while the mass before it < top_p.
    if cfg.top_p < 1.0:
        probs = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-probs, kind="stable")
        mass_before = np.cumsum(probs[order]) - probs[order]
        remove = mass_before >= cfg.top_p
        remove[:cfg.min_tokens_to_keep] = False
        logits[order[remove]] = -np.inf

    # 5. Softmax.
    probs = np.exp(logits)
    return probs / probs.sum()


def sample_token(logits, vocabulary: Sequence | None = None, temperature: float = 0.7, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, prev_tokens: Sequence | None = None,
                 min_tokens_to_keep: int = 1, rng: np.random.Generator | None = None):
    """The book's sampler: returns a vocabulary entry (or a token id when `vocabulary` is None).

    `prev_tokens` are vocabulary entries (ids when no vocabulary is given).

    >>> sample_token([2.0, 1.0, -5.0], ["a", "b", "c"], temperature=0.01, rng=np.random.default_rng(0))
    'a'
    """
    if vocabulary is not None and len(logits) != len(vocabulary):
        raise SamplingError(f"mismatch between logits ({len(logits)}) and vocabulary ({len(vocabulary)}) sizes")
    if vocabulary is not None and prev_tokens is not None:
        index = {tok: i for i, tok in enumerate(vocabulary)}
        prev_tokens = [index[t] for t in prev_tokens if t in index]   # the book ignores unknown tokens
    cfg = SamplingConfig(temperature, top_k, top_p, repetition_penalty, presence_penalty,
                         frequency_penalty, min_tokens_to_keep)
    probs = token_probabilities(logits, cfg, prev_tokens)
    i = int((rng or np.random.default_rng()).choice(len(probs), p=probs))
    return vocabulary[i] if vocabulary is not None else i


# --------------------------------------------------------------------------------------------
# The batched torch processors used by generation
# --------------------------------------------------------------------------------------------

def token_counts(ids: torch.Tensor, vocab_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each token occurs in each row: (B, T) ids -> (B, V) counts; mask 0 = not counted."""
    weights = torch.ones_like(ids, dtype=torch.float32) if mask is None else mask.to(torch.float32)
    counts = torch.zeros(ids.size(0), vocab_size, dtype=torch.float32, device=ids.device)
    return counts.scatter_add_(1, ids, weights)                    # (B, V)


def process_logits(logits: torch.Tensor, cfg: SamplingConfig, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Apply penalties, temperature, top-k and top-p to (B, V) logits; removed tokens become -inf.

    Unlike the reference, top_k larger than the vocabulary is clamped to it (handy when a small
    model meets a config written for GPT-2). Rows where nothing is left raise SamplingError.
    """
    cfg.validate()
    if torch.isnan(logits).any():
        raise SamplingError("logits contain NaN")
    logits = logits.to(torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype)
    B, V = logits.shape
    if counts is not None and (cfg.repetition_penalty != 1.0 or cfg.presence_penalty or cfg.frequency_penalty):
        seen = counts > 0                                           # (B, V)
        penalised = torch.where(logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
        logits = logits - cfg.presence_penalty * seen - cfg.frequency_penalty * counts.to(logits.dtype)
    logits = logits / cfg.temperature                               # (B, V)
    if not torch.isfinite(logits).any(dim=-1).all():
        bad = (~torch.isfinite(logits).any(dim=-1)).nonzero()[0, 0].item()
        raise SamplingError(f"no candidate token left in row {bad}: every logit is -inf")

    if cfg.top_k > 0 and max(cfg.top_k, cfg.min_tokens_to_keep) < V:
        k = max(cfg.top_k, cfg.min_tokens_to_keep)
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))

    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)   # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs                  # (B, V)
        remove = mass_before >= cfg.top_p
        remove[:, :cfg.min_tokens_to_keep] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig | None, counts: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,): greedy argmax when `cfg` is None, else a draw from the processed logits."""
    if cfg is None:
        return logits.argmax(dim=-1)
    probs = process_logits(logits, cfg, counts).softmax(dim=-1)     # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
