"""Interpolated modified Kneser-Ney smoothing (Chen & Goodman, 1998) on the book's n-gram counts.

The book's backoff model (lm/ngram/backoff.py) gives a seen n-gram its raw relative frequency and is not a
probability distribution. Kneser-Ney fixes both problems:

    P_k(w | h) = (max(c_k(h w) - D_k(c_k(h w)), 0) + gamma_k(h) * P_{k-1}(w | h')) / c_k(h)
    gamma_k(h) = D_k1 N1(h .) + D_k2 N2(h .) + D_k3+ N3+(h .)        (the mass taken by discounting)
    P_0(w)     = 1 / (V + 1)                                          (uniform over vocab + <unk>)

where h' is h without its first token, c_k(h) = sum_w c_k(h w), and N_r(h .) counts the words
seen after h with c_k = r (r >= 3 for N3+). At the top order c_k is the raw count; at lower orders
it is the *continuation count* N1+(. h w), the number of distinct tokens seen before h w, because
a lower order is only consulted for words the longer context did not explain. Where c_k(h) = 0
(an unseen context), P_k = P_{k-1}. Each order has three discounts estimated from its
count-of-counts n_r:  Y = n1 / (n1 + 2 n2),  D_r = r - (r + 1) Y n_{r+1} / n_r  (r = 1, 2, 3).

Summing P_k over w gives (c_k(h) - gamma_k(h) + gamma_k(h) * 1) / c_k(h) = 1 by induction, so
every context, seen or not, gets a distribution over the V words and <unk> that sums to 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lm.ngram.backoff import sample_index
from lm.ngram.counts import NGramCounts
from lm.errors import ConfigError


def estimate_discounts(cnt: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the count-of-counts of `cnt` (zeros ignored), each clipped
    to [0, r]. Where n1 or n2 is zero (a tiny corpus) it returns the defaults (0.5, 1.0, 1.5).

    >>> estimate_discounts(np.array([1] * 10 + [2] * 4 + [3] * 2 + [4]))   # n1..n4 = 10, 4, 2, 1
    (0.5555555555555556, 1.1666666666666665, 1.8888888888888888)
    """
    n = np.bincount(np.minimum(cnt[cnt > 0], 5), minlength=6).astype(np.float64)   # n[r], r = 1..4
    if n[1] == 0 or n[2] == 0:
        return 0.5, 1.0, 1.5
    y = n[1] / (n[1] + 2 * n[2])
    ds = []
    for r in (1, 2, 3):
        d = r - (r + 1) * y * n[r + 1] / n[r] if n[r] > 0 else r / 2
        ds.append(float(min(max(d, 0.0), r)))
    return ds[0], ds[1], ds[2]


class KneserNeyLM:
    """Interpolated modified Kneser-Ney of order n over shared `NGramCounts` (n <= counts.n).

    Per order k it keeps the counts it uses (raw at k = n, continuation below), and per context
    the normaliser c_k(h) and the back-off weight gamma_k(h); scoring is a few array lookups.
    """

    def __init__(self, counts: NGramCounts, n: int | None = None,
                 discounts: Sequence[tuple[float, float, float]] | None = None):
        self.c = counts
        self.n = counts.n if n is None else n
        if not 1 <= self.n <= counts.n:
            raise ConfigError(f"n must be in 1..{counts.n} for these counts, got {self.n}")
        if discounts is not None and len(discounts) != self.n:
            raise ConfigError(f"discounts: need one (D1, D2, D3+) per order 1..{self.n}, got {len(discounts)}")
        self.cnt, self.D, self.denom, self.gamma = [None], [None], [None], [None]
        for k in range(1, self.n + 1):
            cnt = counts.counts[k] if k == self.n else self.continuation_counts(k)
            D = discounts[k - 1] if discounts is not None else estimate_discounts(cnt)
            table = np.array([0.0, *D])                                  # discount by min(count, 3)
            taken = table[np.minimum(cnt, 3)]                            # (n_k,) D(c) for each n-gram
            if k == 1:
                denom, gnum = np.array([cnt.sum()], dtype=np.float64), np.array([taken.sum()])
            else:
                prefix = counts.keys[k] // counts.base                   # (n_k,) context of each n-gram
                size = counts.size(k - 1)
                denom = np.bincount(prefix, weights=cnt, minlength=size)  # (n_{k-1},) c_k(h)
                gnum = np.bincount(prefix, weights=taken, minlength=size)
            self.cnt.append(cnt)
            self.D.append(table)
            self.denom.append(denom)
            self.gamma.append(np.divide(gnum, denom, out=np.ones_like(gnum), where=denom > 0))
        # the unigram level interpolates with the uniform distribution over vocab + <unk>
        c1, V = self.cnt[1].astype(np.float64), counts.V
        top = np.maximum(c1 - self.D[1][np.minimum(self.cnt[1], 3)], 0) / max(self.denom[1][0], 1.0)
        g1 = self.gamma[1][0] if self.denom[1][0] > 0 else 1.0
        self.p1 = np.append(top, 0.0) + g1 / (V + 1)                     # (V+1,) last entry: <unk>

    def continuation_counts(self, k: int) -> np.ndarray:
        """N1+(. g): for each order-k n-gram g, how many distinct tokens precede it in training."""
        return np.bincount(self.c.suffix(k + 1), minlength=self.c.size(k)).astype(np.int32)

    # scoring ----------------------------------------------------------------------------------
    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """log P(ids[i] | ids[max(0, i-n+1):i]) for every position i, all positions at once."""
        ids = np.asarray(ids, dtype=np.int64)
        p = self.p1[ids].copy()                                          # (M,) order-1 estimate
        table = self.c.index_table(ids, self.n)
        for k in range(2, self.n + 1):                                   # raise the order one step
            g, m = table[k], len(table[k])
            ctx = table[k - 1][:m]                                       # (m,) context ids[s:s+k-1]
            ok = ctx >= 0
            ok[ok] = self.denom[k][ctx[ok]] > 0
            cnt = np.where(g >= 0, self.cnt[k][np.maximum(g, 0)], 0)     # (m,) count of ids[s:s+k]
            num = np.maximum(cnt - self.D[k][np.minimum(cnt, 3)], 0.0)
            h = ctx[ok]
            lower = p[k - 1:k - 1 + m]                                   # view: positions s+k-1
            lower[ok] = (num[ok] + self.gamma[k][h] * self.denom[k][h] * lower[ok]) / self.denom[k][h]
        return np.log(p)

    def perplexity(self, tokens: Sequence[str]) -> float:
        """exp(-mean log P) over `tokens`, each from up to n-1 previous tokens (as the book does)."""
        if len(tokens) == 0:
            return float("inf")
        return float(np.exp(-self.log_probs(self.c.ids(tokens)).mean()))

    def get_probability(self, token: str, context: Sequence[str]) -> float:
        tail = list(context)[-(self.n - 1):] if self.n > 1 else []
        return float(np.exp(self.log_probs(self.c.ids(tail + [token]))[-1]))

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """P(w | context) for every word and <unk> (last entry), shape (V+1,); sums to 1."""
        c, p = self.c, self.p1.copy()
        ids = c.ids(context)
        for k in range(2, min(self.n, len(ids) + 1) + 1):
            ctx = c.context_index(ids[len(ids) - (k - 1):])
            if ctx < 0 or self.denom[k][ctx] == 0:
                break                                                    # unseen: longer ones are too
            lo, hi = c.ptr[k][ctx], c.ptr[k][ctx + 1]
            words, cnt = c.keys[k][lo:hi] % c.base, self.cnt[k][lo:hi]
            p *= self.gamma[k][ctx]
            p[words] += np.maximum(cnt - self.D[k][np.minimum(cnt, 3)], 0) / self.denom[k][ctx]
        return p

    def predict_next_token(self, context: Sequence[str]) -> str:
        """The most probable next word (never <unk>)."""
        return self.c.vocab[int(np.argmax(self.distribution(context)[:-1]))]

    def generate(self, context: Sequence[str], num_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, rng: np.random.Generator | None = None) -> list[str]:
        """Context + `num_tokens` words: greedy at temperature 0, else sampled (top-k optional);
        <unk> is never produced."""
        out = list(context)
        for _ in range(num_tokens):
            tail = out[len(out) - (self.n - 1):] if self.n > 1 else []
            logp = np.log(np.maximum(self.distribution(tail)[:-1], 1e-300))
            out.append(self.c.vocab[sample_index(logp, temperature, top_k, rng)])
        return out
