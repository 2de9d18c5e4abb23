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

Batched: each prompt is run once and its keys/values copied to one KV-cache row per candidate,
then all candidates go through the model in **one forward pass** over a right-padded batch;
`label_many` does this for several documents at once (about `rows` candidate rows per pass:
two forward passes per batch, `score_batch`). `score_reference` runs each full sequence on its
own, the slow reference that the tests hold it equal to. A document longer than the model's window keeps its first tokens,
leaving room for the taxonomy's longest label text (the prompt's "\\nTopic:" tail is always kept).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.inference.generate import left_pad
from lm.labeling.labeller import Labeller
from lm.labeling.taxonomy import Taxonomy
from lm.training.batches import pad_right

NORMALIZE = ("sum", "mean", "pmi")
TAIL = "\nTopic:"


class LMScorer(Labeller):
    """Pick the candidate whose label text the LM scores highest after the document."""

    def __init__(self, model: torch.nn.Module, tokenizer, taxonomy: Taxonomy, name: str = "lm_score",
                 normalize: str = "sum", rows: int = 64, max_logits: int = 2**25):
        if normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.model, self.tokenizer, self.taxonomy = model, tokenizer, taxonomy
        self.name, self.normalize = name, normalize
        self.rows = rows                              # (document, candidate) rows per forward pass
        self.max_logits = max_logits                  # ... and at most this many logits (memory)
        self.n_positions = model.config.n_positions
        self.tail = tokenizer.encode_ordinary(TAIL)
        self._cand: dict[str, list[int]] = {}        # qcode -> label-text token ids
        self._prior: dict[str, float] = {}           # qcode -> log p(text | TAIL), for "pmi"
        self._room: int | None = None

    # ---- token ids ---------------------------------------------------------------------------
    def candidate_ids(self, qcode: str) -> list[int]:
        """" " + label text, cut to half the window (long IPTC definitions)."""
        if qcode not in self._cand:
            ids = self.tokenizer.encode_ordinary(" " + self.taxonomy.leaf(qcode).text)
            self._cand[qcode] = ids[: self.n_positions // 2]
        return self._cand[qcode]

    @property
    def room(self) -> int:
        """Tokens kept free after every prompt: the longest label text of the taxonomy (so that
        any batch of prompts and candidates fits the window, whatever documents share it)."""
        if self._room is None:
            self._room = max(len(self.candidate_ids(q)) for q in self.taxonomy.qcodes)
        return self._room

    def prompt_ids(self, doc: Abstract) -> list[int]:
        """The prompt's ids, the document cut so that the longest label text still fits after it."""
        head = self.tokenizer.encode_ordinary(f"Title: {doc.title}\nAbstract: {doc.abstract}")
        keep = self.n_positions - self.room - len(self.tail)
        if keep < 1:
            raise ConfigError(f"{self.name}: a window of {self.n_positions} tokens has no room for the document")
        return head[:keep] + self.tail

    # ---- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def score_batch(self, prompts: Sequence[list[int]], cands: Sequence[Sequence[list[int]]]) -> list[np.ndarray]:
        """For each prompt, the (k_i,) sums of log p(candidate tokens | prompt).

        Two forward passes for the whole batch: the prompts, left-padded so that they all end in
        the same column (B, P); then every (prompt, candidate) row at once, the prompt's keys and
        values copied into its candidates' cache rows (R = sum k_i, C), right-padded.
        """
        model, device = self.model, next(self.model.parameters()).device
        B, P = len(prompts), max(len(p) for p in prompts)
        C = max(len(c) for cs in cands for c in cs)
        owner = torch.tensor([b for b, cs in enumerate(cands) for _ in cs], device=device)   # (R,) row -> prompt
        flat = [c for cs in cands for c in cs]
        R = len(flat)
        ids, pmask = (t.to(device) for t in left_pad(prompts, 0))             # (B, P) left-padded prompts; 1 = real
        one = model.new_cache(B, P)
        first = model(ids, attention_mask=pmask, cache=one, last_only=True)    # (B, 1, V)
        first = torch.log_softmax(first[:, -1].float(), -1)[owner]             # (R, V) after each row's prompt
        cache = model.new_cache(R, P + C)
        cache.k[:, :, :, :P] = one.k[:, owner, :, :P]    # (n_layer, R, H, P, D): each row gets its prompt's keys
        cache.v[:, :, :, :P] = one.v[:, owner, :, :P]
        cache.length = P
        cids, real = (t.to(device) for t in pad_right(flat, 0))                # (R, C) right-padded candidates
        mask = torch.cat([pmask[owner], real], 1)                              # (R, P + C)
        logits = model(cids, attention_mask=mask, cache=cache)[:, :-1].float()  # (R, C - 1, V)
        tok = torch.empty((R, C), device=device)                               # (R, C) log p of each token
        tok[:, 0] = first.gather(-1, cids[:, :1])[:, 0]                        # token 0 follows the prompt
        tok[:, 1:] = logits.gather(-1, cids[:, 1:, None])[..., 0] - logits.logsumexp(-1)   # token j follows j-1
        sums = (tok * real).sum(1).cpu().numpy()                               # (R,)
        bounds = np.cumsum([0] + [len(cs) for cs in cands])
        return [sums[bounds[b]:bounds[b + 1]] for b in range(B)]

    def score(self, prompt: list[int], cands: Sequence[list[int]]) -> np.ndarray:
        """(k,) sums of log p(candidate | prompt) for one prompt (`score_batch` of one)."""
        return self.score_batch([prompt], [cands])[0]

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

    def normalized(self, totals: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
        if self.normalize == "mean":
            return totals / np.array([len(self.candidate_ids(q)) for q in candidates])
        if self.normalize == "pmi":
            return totals - self.prior(candidates)
        return totals

    def scores(self, doc: Abstract, candidates: Sequence[str]) -> np.ndarray:
        """(k,) the normalised score of each candidate for this document."""
        cands = [self.candidate_ids(q) for q in candidates]
        return self.normalized(self.score(self.prompt_ids(doc), cands), candidates)

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        return next(self.label_many([document], [candidates]))[1]

    def label_many(self, documents, candidates):
        """Documents in batches (two forward passes each) of at most `rows` (document, candidate)
        rows and `max_logits` logits (rows x candidate length x vocabulary), one document at least."""
        V, i = self.model.config.vocab_size, 0
        while i < len(documents):
            batch, rows, longest = [], 0, 1
            while i < len(documents):
                lengths = [len(self.candidate_ids(q)) for q in candidates[i]] or [1]
                r, c = rows + len(lengths), max(longest, *lengths)
                if batch and (r > self.rows or r * c * V > self.max_logits):
                    break
                batch.append(i)
                rows, longest, i = r, c, i + 1
            todo = [j for j in batch if candidates[j]]
            cands = {j: [self.candidate_ids(q) for q in candidates[j]] for j in todo}
            prompts = [self.prompt_ids(documents[j]) for j in todo]
            totals = dict(zip(todo, self.score_batch(prompts, [cands[j] for j in todo]))) if todo else {}
            for j in batch:
                if j not in totals:
                    yield j, None
                else:
                    yield j, candidates[j][int(np.argmax(self.normalized(totals[j], candidates[j])))]
