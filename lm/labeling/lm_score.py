"""A local language model as a labeller, by scoring: which label text does it find most likely?

Instead of asking the model to *write* an ID (`lm.labeling.lm_generate`), ask it how probable each
candidate's label text is as a continuation of the document:

    prompt   = "Title: {title}\\nAbstract: {abstract}\\nTopic:"
    score(c) = log p(" " + text(c) | prompt) = sum_j log p(c_j | prompt, c_<j)

and answer with the best-scoring candidate. The model can only pick a candidate, so every
document gets an answer; the question is whether it is the right one. Raw sums favour short
label texts (fewer negative terms), so `normalize` picks the comparison:

    "sum"    the total log-likelihood
    "mean"   per token (length-normalised)
    "pmi"    sum minus log p(text(c) | "\\nTopic:"): how much *this document* raises the label's
             probability over its prior (pointwise mutual information; removes the length bias
             and the model's taste for some labels whatever the document)

Batched: the prompt is run once and its keys/values copied to one KV-cache row per candidate,
then all candidates go through the model in **one forward pass** over a right-padded (k, C)
batch (`score`); `score_reference` runs each full sequence on its own, the slow reference that
the tests hold it equal to. A document longer than the model's window keeps its first tokens
(the prompt's "\\nTopic:" tail is always kept).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.labeling.labeller import Labeller
from lm.labeling.taxonomy import Taxonomy

NORMALIZE = ("sum", "mean", "pmi")
TAIL = "\nTopic:"


class LMScorer(Labeller):
    """Pick the candidate whose label text the LM scores highest after the document."""

    def __init__(self, model: torch.nn.Module, tokenizer, taxonomy: Taxonomy, name: str = "lm_score",
                 normalize: str = "pmi"):
        if normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.model, self.tokenizer, self.taxonomy = model, tokenizer, taxonomy
        self.name, self.normalize = name, normalize
        self.n_positions = model.config.n_positions
        self.tail = tokenizer.encode_ordinary(TAIL)
        self._cand: dict[str, list[int]] = {}        # qcode -> label-text token ids
        self._prior: dict[str, float] = {}           # qcode -> log p(text | TAIL), for "pmi"

    # ---- token ids ---------------------------------------------------------------------------
    def candidate_ids(self, qcode: str) -> list[int]:
        """" " + label text, cut to half the window (long IPTC definitions)."""
        if qcode not in self._cand:
            ids = self.tokenizer.encode_ordinary(" " + self.taxonomy.leaf(qcode).text)
            self._cand[qcode] = ids[: self.n_positions // 2]
        return self._cand[qcode]

    def prompt_ids(self, doc: Abstract, room: int) -> list[int]:
        """The prompt's ids, the document cut so that `room` tokens still fit after it."""
        head = self.tokenizer.encode_ordinary(f"Title: {doc.title}\nAbstract: {doc.abstract}")
        keep = self.n_positions - room - len(self.tail)
        if keep < 1:
            raise ConfigError(f"{self.name}: a window of {self.n_positions} tokens has no room for the document")
        return head[:keep] + self.tail

    # ---- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompt: list[int], cands: Sequence[list[int]]) -> np.ndarray:
        """(k,) sum of log p(candidate tokens | prompt): one prompt pass, one batched candidate pass."""
        model, device = self.model, next(self.model.parameters()).device
        k, P, C = len(cands), len(prompt), max(len(c) for c in cands)
        one = model.new_cache(1, P)
        first = model(torch.tensor([prompt], device=device), cache=one, last_only=True)   # (1, 1, V)
        first = torch.log_softmax(first[0, -1].float(), -1)                                # (V,)
        cache = model.new_cache(k, P + C)
        cache.k[:, :, :, :P] = one.k[:, :, :, :P]       # (n_layer, 1 -> k, H, P, D): the prompt, copied per row
        cache.v[:, :, :, :P] = one.v[:, :, :, :P]
        cache.length = P
        ids = torch.zeros((k, C), dtype=torch.long, device=device)          # (k, C) right-padded
        real = torch.zeros((k, C), dtype=torch.bool, device=device)         # (k, C)
        for r, c in enumerate(cands):
            ids[r, :len(c)] = torch.tensor(c, device=device)
            real[r, :len(c)] = True
        mask = torch.cat([torch.ones((k, P), dtype=torch.long, device=device), real.long()], 1)   # (k, P + C)
        logits = model(ids, attention_mask=mask, cache=cache)              # (k, C, V)
        lp = torch.log_softmax(logits.float(), -1)                         # (k, C, V)
        tok = torch.empty((k, C), device=device)                           # (k, C) log p of each token
        tok[:, 0] = first[ids[:, 0]]                                       # token 0 follows the prompt
        tok[:, 1:] = lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]       # token j follows token j-1
        return (tok * real).sum(1).cpu().numpy()                           # (k,)

    @torch.no_grad()
    def score_reference(self, prompt: list[int], cands: Sequence[list[int]]) -> np.ndarray:
        """The same sums, one full sequence at a time, without a cache (slow; for the tests)."""
        device = next(self.model.parameters()).device
        out = []
        for c in cands:
            seq = torch.tensor([prompt + list(c)], device=device)          # (1, P + len(c))
            lp = torch.log_softmax(self.model(seq)[0].float(), -1)          # (P + len(c), V)
            pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(c), device=device)
            out.append(float(lp[pos, torch.tensor(c, device=device)].sum()))
        return np.array(out)

    def prior(self, qcodes: Sequence[str]) -> np.ndarray:
        """log p(label text | TAIL) of each qcode (cached; the "pmi" baseline)."""
        todo = [q for q in dict.fromkeys(qcodes) if q not in self._prior]
        for start in range(0, len(todo), 64):
            chunk = todo[start:start + 64]
            for q, s in zip(chunk, self.score(self.tail, [self.candidate_ids(q) for q in chunk])):
                self._prior[q] = float(s)
        return np.array([self._prior[q] for q in qcodes])

    def scores(self, doc: Abstract, candidates: Sequence[str]) -> np.ndarray:
        """(k,) the normalised score of each candidate for this document."""
        cands = [self.candidate_ids(q) for q in candidates]
        total = self.score(self.prompt_ids(doc, max(len(c) for c in cands)), cands)
        if self.normalize == "mean":
            return total / np.array([len(c) for c in cands])
        if self.normalize == "pmi":
            return total - self.prior(candidates)
        return total

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        if not candidates:
            return None
        return candidates[int(np.argmax(self.scores(document, candidates)))]
