"""Count-based n-gram language model (book, section 2.5), stored compactly and evaluated in bulk.

The book's model, exactly:

* tokens: `re.findall(r"\\b[a-zA-Z0-9]+\\b|[.]", text.lower())` (words, numbers and periods);
* counts of every n-gram for n = 1..N, stored per context;
* `get_probability(w, ctx)`: for n = N down to 2, if the last n-1 tokens of `ctx` were seen as a
  context *and* `w` was seen after them, return count(ctx w) / count(ctx); otherwise back off to a
  shorter context. If no context works, fall back to the add-one unigram (c(w) + 1) / (T + V);
* `predict_next_token(ctx)`: the most frequent next token after the longest context that was seen
  (ties: the token seen first after it in training), else the most frequent token;
* perplexity over the test tokens, each predicted from up to N-1 previous *test* tokens;
* greedy generation; we add sampling with temperature and top-k.

`BookReferenceLM` is the book's dict-of-dicts algorithm, kept as the readable reference (and as
the baseline of `bench/ngram.py`). `NGramCounts` (in `lm/ngram/counts.py`, with `tokenize`) is the
same information in NumPy arrays: token ids, and for each order a sorted array of packed keys
`prefix_index * (V + 1) + word`, where `prefix_index` is the position of the (n-1)-gram in the
order below (a trie in flat arrays). Lookups are `np.searchsorted`, and `CountLM.log_probs`
scores every test position at once.

>>> from lm.ngram.counts import tokenize
>>> lm = CountLM(NGramCounts.build(tokenize("The cat sat. The cat ran."), n=3))
>>> lm.get_probability("sat", ["the", "cat"]), lm.predict_next_token(["the"])
(0.5, 'cat')
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np

from lm.ngram.counts import NGramCounts
from lm.errors import ConfigError


# --------------------------------------------------------------------------------------------
# The book's algorithm, literally (dicts of dicts of strings): the reference and the bench baseline
# --------------------------------------------------------------------------------------------

class BookReferenceLM:
    """The book's CountLanguageModel: `counts[n-1][context_tuple][token] -> count`. Slow but plain."""

    def __init__(self, n: int):
        self.n = n
        self.ngram_counts: list[dict] = [{} for _ in range(n)]
        self.total_unigrams = 0

    def train(self, tokens: Sequence[str]) -> None:
        for n in range(1, self.n + 1):
            table = self.ngram_counts[n - 1]
            for i in range(len(tokens) - n + 1):
                context, nxt = tuple(tokens[i:i + n - 1]), tokens[i + n - 1]
                if context not in table:
                    table[context] = defaultdict(int)
                table[context][nxt] += 1
        self.total_unigrams = len(tokens)

    def predict_next_token(self, context: Sequence[str]) -> str | None:
        for n in range(self.n, 1, -1):
            if len(context) >= n - 1:
                followers = self.ngram_counts[n - 1].get(tuple(context[-(n - 1):]))
                if followers:
                    return max(followers.items(), key=lambda kv: kv[1])[0]
        unigrams = self.ngram_counts[0].get(())
        return max(unigrams.items(), key=lambda kv: kv[1])[0] if unigrams else None

    def get_probability(self, token: str, context: Sequence[str]) -> float:
        for n in range(self.n, 1, -1):
            if len(context) >= n - 1:
                followers = self.ngram_counts[n - 1].get(tuple(context[-(n - 1):]))
                if followers and followers.get(token, 0) > 0:
                    return followers[token] / sum(followers.values())
        unigrams = self.ngram_counts[0].get((), {})
        return (unigrams.get(token, 0) + 1) / (self.total_unigrams + len(unigrams))

    def perplexity(self, tokens: Sequence[str]) -> float:
        if not tokens:
            return float("inf")
        total = 0.0
        for i in range(len(tokens)):
            total += math.log(self.get_probability(tokens[i], tokens[max(0, i - self.n):i]))
        return math.exp(-total / len(tokens))

    def generate_text(self, context: Sequence[str], num_tokens: int) -> str:
        out = list(context)
        while len(out) - len(context) < num_tokens:
            out.append(self.predict_next_token(out[-(self.n - 1):] if self.n > 1 else []))
        return " ".join(out)


# --------------------------------------------------------------------------------------------
# The book's model on compact counts
# --------------------------------------------------------------------------------------------

class CountLM:
    """The book's backoff model of order n (<= counts.n), vectorised. Not a normalised distribution:
    a word seen after a context gets its relative frequency there, and words never seen after it
    keep their lower-order probabilities, so `probability_sum(ctx)` is usually above 1."""

    def __init__(self, counts: NGramCounts, n: int | None = None):
        self.c = counts
        self.n = counts.n if n is None else n
        if not 1 <= self.n <= counts.n:
            raise ConfigError(f"n must be in 1..{counts.n} for these counts, got {self.n}")
        self._mass: dict[int, np.ndarray] = {}                            # cache of _overwritten_mass

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """log P(ids[i] | ids[max(0, i-n+1):i]) for every position i, by the book's backoff rule."""
        c, ids = self.c, np.asarray(ids, dtype=np.int64)
        uni = np.append(c.counts[1], 0)                                   # (V+1,) unknown id V counts 0
        logp = np.log((uni[ids] + 1.0) / (c.total + c.V))                # add-one unigram fallback
        done = np.zeros(len(ids), dtype=bool)
        table = c.index_table(ids, self.n)
        for k in range(self.n, 1, -1):                                    # longest context first
            g, m = table[k], len(table[k])
            hit = (g >= 0) & ~done[k - 1:k - 1 + m]                       # (m,) n-gram ids[s:s+k] seen
            ctx = table[k - 1][:m][hit]
            pos = np.nonzero(hit)[0] + k - 1
            logp[pos] = np.log(c.counts[k][g[hit]] / c.ctx_total[k][ctx])
            done[pos] = True
        return logp

    def perplexity(self, tokens: Sequence[str], normalised: bool = False) -> float:
        """exp(-mean log P) over `tokens`, each from up to n-1 previous tokens (as the book does).

        normalised=True divides each probability by the sum of the book's P over vocab + <unk> for
        that context (not in the book): the fair number to compare with a real distribution."""
        if len(tokens) == 0:
            return float("inf")
        ids = self.c.ids(tokens)
        logp = self.log_probs(ids)
        if normalised:
            logp = logp - np.log(self.normaliser(ids) + 1.0 / (self.c.total + self.c.V))
        return float(np.exp(-logp.mean()))

    def get_probability(self, token: str, context: Sequence[str]) -> float:
        tail = list(context)[-(self.n - 1):] if self.n > 1 else []
        return float(np.exp(self.log_probs(self.c.ids(tail + [token]))[-1]))

    def normaliser(self, ids: np.ndarray) -> np.ndarray:
        """Z[i] = sum over the vocabulary of the book's P(w | context of position i), all i at once.

        If suffixes h_1..h_K of the context have followers, each level contributes its full mass 1
        minus what the next level overwrites: Z = (K + 1) - sum_{j=1..K} A_{j+1}(h_j), where
        A_{j+1}(h_j) is the level-(j-1) probability of the words seen after h_j."""
        c, ids = self.c, np.asarray(ids, dtype=np.int64)
        Z, active = np.ones(len(ids)), np.ones(len(ids), dtype=bool)
        table = c.index_table(ids, self.n - 1)
        for j in range(1, self.n):                                        # context length j, order j+1
            h = table[j][:max(len(ids) - j, 0)]                           # (M-j,) context of position j..
            has = h >= 0
            has[has] = c.ctx_total[j + 1][h[has]] > 0
            active[:j] = False
            active[j:] &= has
            sel = np.nonzero(active[j:])[0]
            Z[sel + j] += 1.0 - self._overwritten_mass(j + 1)[h[sel]]
        return Z

    def _overwritten_mass(self, m: int) -> np.ndarray:
        """A_m[g] for every (m-1)-gram g: the order-(m-1) book probability of the words seen after g."""
        if m not in self._mass:
            c = self.c
            prefix, word = np.divmod(c.keys[m], c.base)
            if m == 2:
                w = (c.counts[1][word] + 1.0) / (c.total + c.V)           # add-one unigram of each follower
            else:
                s = c.suffix(m)                                           # (h_{j-1}, w) in order m-1
                w = c.counts[m - 1][s] / c.ctx_total[m - 1][c.keys[m - 1][s] // c.base]
            self._mass[m] = np.bincount(prefix, weights=w, minlength=c.size(m - 1))
        return self._mass[m]

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """get_probability(w, context) for every vocabulary word w at once, shape (V,)."""
        c = self.c
        p = (c.counts[1] + 1.0) / (c.total + c.V)
        ids = c.ids(context)
        for k in range(2, min(self.n, len(ids) + 1) + 1):                 # shortest first, longer overwrite
            ctx = c.context_index(ids[len(ids) - (k - 1):])
            if ctx < 0:
                break
            words, cnt = c.followers(k, ctx)
            if len(words):
                p[words] = cnt / c.ctx_total[k][ctx]
        return p

    def probability_sum(self, context: Sequence[str]) -> float:
        """Sum over the vocabulary of the book's P(w | context): 1 only for the empty context."""
        return float(self.distribution(context).sum())

    def _longest_context(self, ids: np.ndarray) -> tuple[int, int]:
        """(order k, context index) of the longest seen context with followers; (1, 0) if none."""
        for k in range(min(self.n, len(ids) + 1), 1, -1):
            ctx = self.c.context_index(ids[len(ids) - (k - 1):])
            if ctx >= 0 and self.c.ctx_total[k][ctx] > 0:
                return k, ctx
        return 1, 0

    def predict_next_token(self, context: Sequence[str]) -> str:
        """The book's greedy choice: the most frequent follower of the longest seen context."""
        k, ctx = self._longest_context(self.c.ids(context))
        return self.c.vocab[int(self.c.best[k][ctx])]

    def sample_next_token(self, context: Sequence[str], temperature: float = 1.0, top_k: int | None = None,
                          rng: np.random.Generator | None = None) -> str:
        """Sample a follower of the longest seen context with P ~ count^(1/temperature), top-k kept."""
        k, ctx = self._longest_context(self.c.ids(context))
        words, cnt = self.c.followers(k, ctx)
        return self.c.vocab[int(words[sample_index(np.log(cnt), temperature, top_k, rng)])]

    def generate(self, context: Sequence[str], num_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, rng: np.random.Generator | None = None) -> list[str]:
        """Context + `num_tokens` new tokens: greedy (the book) when temperature == 0, else sampled."""
        out = list(context)
        for _ in range(num_tokens):
            tail = out[len(out) - (self.n - 1):] if self.n > 1 else []
            out.append(self.predict_next_token(tail) if temperature == 0
                       else self.sample_next_token(tail, temperature, top_k, rng))
        return out


def sample_index(logits: np.ndarray, temperature: float, top_k: int | None = None,
                 rng: np.random.Generator | None = None) -> int:
    """Index drawn from softmax(logits / temperature) restricted to the top_k largest logits;
    temperature 0 is argmax."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature < 0 or (top_k is not None and top_k < 1):
        raise ConfigError(f"temperature must be >= 0 and top_k >= 1, got {temperature}, {top_k}")
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if top_k is not None and top_k < len(z):
        keep = np.argsort(-z, kind="stable")[:top_k]                   # exactly k; ties: lower index
        z = np.where(np.isin(np.arange(len(z)), keep), z, -np.inf)
    p = np.exp(z - z.max())
    return int((rng or np.random.default_rng()).choice(len(p), p=p / p.sum()))
