"""The baseline text classifiers (book 5.3.1 and 5.3.2's baselines): bag of words + logistic regression, and a CNN.

Before fine-tuning a language model to classify emotions, the book sets two baselines:

1. `BagOfWords` + `LogisticRegression`, the book's scikit-learn pair rebuilt here: a text becomes a
   sparse vector of word (and word-pair) counts, and a multinomial logistic regression with an L2
   penalty is fitted by full-batch L-BFGS. The book's two settings: 10,000 binary unigrams
   (test accuracy 0.8855) and 20,000 unigram+bigram counts (0.8910).
2. `CNNClassifier`: word vectors -> two 1-D convolutions -> two linear layers (0.9055); its data
   (the book's whitespace tokeniser, examples and loss for the training engine) is in `cnn_data.py`.

    >>> bow = BagOfWords(max_features=10_000, binary=True)
    >>> X = bow.fit_transform(["I feel so happy today", "i feel sad and low"])   # (2, 7) sparse
    >>> clf = LogisticRegression().fit(X, ["joy", "sadness"])
    >>> clf.predict(bow.transform(["so happy"]))
    ['joy']
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.finetune.lbfgs import minimize_lbfgs
from lm.utils import torch_threads

# scikit-learn's CountVectorizer default: runs of 2 or more word characters ("I" and "a" are dropped).
TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")


def checked_texts(texts: Iterable[str]) -> list[str]:
    """`texts` as a list; ConfigError naming the first one that is not a string or is empty."""
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ConfigError(f"text #{i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise ConfigError(f"text #{i} is empty")
    return out


def _csr(crow: np.ndarray, col: np.ndarray, val: np.ndarray, shape: tuple[int, int],
         dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():  # torch calls its CSR support "beta"; it is all we need here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col),
                                       torch.from_numpy(val).to(dtype), size=shape)


# --------------------------------------------------------------------------------------------
# Bag of words
# --------------------------------------------------------------------------------------------

class BagOfWords:
    """scikit-learn's `CountVectorizer` for the settings the book uses, giving a torch sparse CSR matrix.

    analyze(text): lowercase, words = `TOKEN_PATTERN` matches, then the n-grams of `ngram_range`
    joined by one space ("i feel so happy" -> "feel", "so", "happy", "feel so", "so happy").
    fit(texts): the vocabulary. With `max_features`, the features with the highest totals over
    the training matrix are kept (document frequency when `binary`, else term counts, as
    scikit-learn's `_limit_features`); ties go to the alphabetically first feature. Kept features
    are numbered alphabetically, as in scikit-learn, so column j means the same in both.
    (scikit-learn breaks ties with numpy's default argsort, whose order among equal counts
    depends on the CPU's SIMD sort, so at the cut-off a few tied features can differ from it.)
    transform(texts): a (len(texts), n_features) CSR matrix of counts, or 1/0 when `binary`.

    >>> bow = BagOfWords(ngram_range=(1, 2)).fit(["I feel so happy"])
    >>> bow.features_
    ['feel', 'feel so', 'happy', 'so', 'so happy']
    """

    def __init__(self, max_features: int | None = None, binary: bool = False,
                 ngram_range: tuple[int, int] = (1, 1), lowercase: bool = True):
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise ConfigError(f"BagOfWords: ngram_range must be (lo, hi) with 1 <= lo <= hi, got {ngram_range}")
        if max_features is not None and max_features < 1:
            raise ConfigError(f"BagOfWords: max_features must be >= 1 or None, got {max_features}")
        self.max_features, self.binary = max_features, binary
        self.ngram_range, self.lowercase = (lo, hi), lowercase
        self.vocabulary_: dict[str, int] = {}
        self.features_: list[str] = []

    def analyze(self, text: str) -> list[str]:
        """The features of one text, in order, with repeats."""
        words = TOKEN_PATTERN.findall(text.lower() if self.lowercase else text)
        lo, hi = self.ngram_range
        out = list(words) if lo == 1 else []
        for n in range(max(lo, 2), hi + 1):
            out += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        return out

    def fit(self, texts: Iterable[str]) -> "BagOfWords":
        return self._fit([self.analyze(t) for t in checked_texts(texts)])

    def transform(self, texts: Iterable[str], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, n_features) sparse CSR: counts (or 1 where present, when binary). Unknown features are dropped."""
        if not self.vocabulary_:
            raise ConfigError("BagOfWords.transform before fit")
        return self._matrix([self.analyze(t) for t in checked_texts(texts)], dtype)

    def fit_transform(self, texts: Iterable[str], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        docs = [self.analyze(t) for t in checked_texts(texts)]   # analysed once for both steps
        return self._fit(docs)._matrix(docs, dtype)

    def _fit(self, docs: list[list[str]]) -> "BagOfWords":
        totals: Counter = Counter()
        for feats in docs:
            totals.update(set(feats) if self.binary else feats)
        if not totals:
            raise ConfigError("BagOfWords.fit: the texts have no words of 2 or more characters")
        terms = sorted(totals)
        if self.max_features is not None and len(terms) > self.max_features:
            counts = np.array([totals[t] for t in terms])
            top = np.argsort(-counts, kind="stable")[:self.max_features]  # ties: alphabetical order
            terms = [terms[j] for j in np.sort(top)]
        self.features_ = terms
        self.vocabulary_ = {t: j for j, t in enumerate(terms)}
        return self

    def _matrix(self, docs: list[list[str]], dtype: torch.dtype) -> torch.Tensor:
        V, voc = len(self.features_), self.vocabulary_
        keys: list[int] = []
        for i, feats in enumerate(docs):
            keys += [i * V + voc[f] for f in feats if f in voc]
        uniq, counts = np.unique(np.asarray(keys, dtype=np.int64), return_counts=True)  # sorted by (row, col)
        rows, cols = uniq // V, uniq % V
        crow = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(docs)), out=crow[1:])
        values = np.ones(len(uniq)) if self.binary else counts.astype(np.float64)
        return _csr(crow, cols, values, (len(docs), V), dtype)


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------

def label_ids(labels: Sequence[Hashable], classes: Sequence[Hashable], where: str = "labels") -> torch.Tensor:
    """Class indices of `labels` (N,), or ConfigError naming the first label not in `classes`."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, y in enumerate(labels):
        if y not in index:
            raise ConfigError(f"{where}: label {y!r} (example #{i}) is not one of {list(classes)}")
        out.append(index[y])
    return torch.tensor(out, dtype=torch.long)


def as_csr(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """X (dense, COO, CSR or CSC) as CSR of `dtype` with int32 indices (sparse @ dense is ~20% faster)."""
    if not isinstance(X, torch.Tensor) or X.dim() != 2:
        raise ConfigError(f"expected a 2-D (N, features) tensor, got {getattr(X, 'shape', type(X).__name__)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        X = X if X.layout == torch.sparse_csr else X.to_sparse_csr()
        small = X.values().numel() < 2 ** 31
        return torch.sparse_csr_tensor(X.crow_indices().to(torch.int32 if small else torch.int64),
                                       X.col_indices().to(torch.int32 if small else torch.int64),
                                       X.values().to(dtype), size=X.shape)


def multinomial_objective(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, Xt: torch.Tensor,
                          y: torch.Tensor, C: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's objective divided by N, its value and gradient (computed by hand, no autograd):

        f(W, b) = (1/N) sum_i -log softmax(x_i W + b)[y_i]  +  ||W||^2 / (2 C N)

    X (N, d) and Xt = X^T (d, N) sparse CSR; W (d, k); b (k,) not penalised; y (N,) class ids.
    The cross-entropy's gradient w.r.t. the logits is softmax - onehot, so
    dW = X^T (P - Y) / N + W / (C N) and db = sums of (P - Y) over examples / N.
    The logits are held classes-first, (k, N): torch's softmax over 6 classes runs ~8x faster
    along rows of N than along rows of 6. Returns (f, dW, db).
    """
    N = X.shape[0]
    logits = (X @ W).t().contiguous().add_(b[:, None])       # (k, N)
    logp = torch.log_softmax(logits, dim=0)                 # (k, N)
    pick = y * N + torch.arange(N, device=y.device)         # (N,) flat positions of (y_i, i)
    w = W.reshape(-1)
    f = -logp.view(-1)[pick].sum() / N + torch.dot(w, w) / (2 * C * N)
    G = logp.exp_()                                         # (k, N) softmax
    G.view(-1)[pick] -= 1.0                                 # softmax - onehot
    dW = torch.addmm(W, Xt, G.t(), beta=1.0 / (C * N), alpha=1.0 / N)   # (d, k)
    return f, dW, G.sum(1) / N                              # (), (d, k), (k,)


class LogisticRegression:
    """Multinomial logistic regression with an L2 penalty, scikit-learn's defaults (the book's settings).

    Minimises sum_i cross-entropy(x_i W + b, y_i) + ||W||^2 / (2C) (the intercept b is not
    penalised) by full-batch L-BFGS (`lm.finetune.lbfgs`) until the largest component of the
    gradient of that objective divided by N is at most `tol`: scikit-learn's stopping rule and
    default (1e-4). `history` = 30 (L-BFGS pairs kept; scipy's default is 10): on the book's
    emotion matrices it needs ~40 % fewer iterations than 10; the pairs are kept in float32
    (see `minimize_lbfgs`), the objective and its gradient in float64.
    Always softmax over the classes: with two classes this is not scikit-learn's binary logistic
    model (whose penalty differs). `threads` (default 1): torch CPU threads during fit; every
    operation here is small, and on a busy machine two threads waiting on each other made the
    fit up to 80x slower (None: leave torch's setting).

    After fit: classes_ (sorted labels, or those given), coef_ (k, d), intercept_ (k,), n_iter_,
    grad_norm_, converged_, objective_ (the objective / N at the solution).
    """

    def __init__(self, C: float = 1.0, tol: float = 1e-4, max_iter: int = 1000, history: int = 30,
                 dtype: torch.dtype = torch.float64, threads: int | None = 1):
        if not C > 0:
            raise ConfigError(f"LogisticRegression: C must be > 0, got {C}")
        self.C, self.tol, self.max_iter, self.history, self.dtype = C, tol, max_iter, history, dtype
        self.threads = threads

    def fit(self, X: torch.Tensor, y: Sequence[Hashable], classes: Sequence[Hashable] | None = None
            ) -> "LogisticRegression":
        """X (N, d) sparse or dense; y: N labels (strings or any hashables)."""
        if len(y) != X.shape[0]:
            raise ConfigError(f"LogisticRegression.fit: {X.shape[0]} rows but {len(y)} labels")
        self.classes_ = list(classes) if classes is not None else sorted(set(y))
        if len(self.classes_) < 2:
            raise ConfigError(f"LogisticRegression.fit needs at least 2 classes, got {self.classes_}")
        targets = label_ids(y, self.classes_, "LogisticRegression.fit")
        d, k = X.shape[1], len(self.classes_)
        X = as_csr(X, self.dtype)                          # (N, d)
        Xt = as_csr(X.t(), self.dtype)                     # (d, N)
        targets = targets.to(X.device)

        def fun(theta: torch.Tensor):
            W, b = theta[:d * k].view(d, k), theta[d * k:]
            f, gW, gb = multinomial_objective(W, b, X, Xt, targets, self.C)
            return float(f), torch.cat([gW.reshape(-1), gb])

        with torch_threads(self.threads):
            res = minimize_lbfgs(fun, torch.zeros(d * k + k, dtype=self.dtype, device=X.device), tol=self.tol,
                                 max_iter=self.max_iter, history=self.history, history_dtype=torch.float32)
        self.coef_ = res.x[:d * k].view(d, k).t().contiguous()   # (k, d), scikit-learn's layout
        self.intercept_ = res.x[d * k:].clone()                   # (k,)
        self.n_iter_, self.grad_norm_, self.converged_ = res.iterations, res.grad_norm, res.converged
        self.objective_ = res.f
        if not res.converged:
            warnings.warn(f"LogisticRegression did not converge ({res.message}): gradient "
                          f"{res.grad_norm:.2e} > tol {self.tol:g} after {res.iterations} iterations")
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Logits (N, k)."""
        if not hasattr(self, "coef_"):
            raise ConfigError("LogisticRegression: predict before fit")
        if X.shape[1] != self.coef_.shape[1]:
            raise ConfigError(f"LogisticRegression: X has {X.shape[1]} features, the model {self.coef_.shape[1]}")
        return as_csr(X, self.dtype) @ self.coef_.t() + self.intercept_

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.decision_function(X), dim=1)

    def predict(self, X: torch.Tensor) -> list:
        return [self.classes_[i] for i in self.decision_function(X).argmax(1).tolist()]


# --------------------------------------------------------------------------------------------
# CNN
# --------------------------------------------------------------------------------------------

@dataclass
class CNNConfig:
    vocab_size: int                  # embedding rows, id 0 = padding / unknown word (kept at zero)
    num_classes: int                 # output logits
    emb_dim: int = 300               # the book's word2vec dimension
    channels1: int = 512             # first Conv1d's output channels
    channels2: int = 256             # second Conv1d's output channels
    hidden: int = 128                # first Linear's width (no activation after it, as the book)
    seq_len: int = 100               # tokens per text, truncated or zero-padded
    freeze_embeddings: bool = False  # True with pretrained vectors: the book's are fixed inputs
    embed_std: float = 0.1           # learned embeddings start as N(0, embed_std^2), about word2vec's scale


class CNNClassifier(nn.Module):
    """The book's `CNNTextClassifier`: Embedding -> Conv1d(k3)+ReLU -> Conv1d(k3)+ReLU -> flatten -> Linear -> Linear.

    The book feeds fixed 300-d word2vec vectors; here the embedding is learned from scratch unless
    `vectors` (from `lm.finetune.word_vectors`) are given, then it is those, frozen. Learned
    embeddings start at word2vec's scale (std 0.1, not nn.Embedding's 1): AdamW moves a weight by
    about lr = 1e-3 per step, so unit-scale vectors change ten times more slowly relative to
    their size; on the real emotion data that made 2 epochs reach 0.74 instead of about 0.90.
    forward(input_ids (B, L)) -> logits (B, num_classes).
    """

    def __init__(self, cfg: CNNConfig, vectors: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=0)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, cfg.embed_std)
            self.embed.weight[0].zero_()
        if vectors is not None:
            if tuple(vectors.shape) != (cfg.vocab_size, cfg.emb_dim):
                raise ConfigError(f"CNNClassifier: vectors of shape {tuple(vectors.shape)}, "
                                  f"expected ({cfg.vocab_size}, {cfg.emb_dim})")
            with torch.no_grad():
                self.embed.weight.copy_(vectors)
                self.embed.weight[0].zero_()
        self.embed.weight.requires_grad_(not cfg.freeze_embeddings)
        self.conv1 = nn.Conv1d(cfg.emb_dim, cfg.channels1, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.channels1, cfg.channels2, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(cfg.channels2 * cfg.seq_len, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.cfg.seq_len:
            raise ConfigError(f"CNNClassifier: inputs of length {input_ids.shape[1]}, expected {self.cfg.seq_len}")
        x = self.embed(input_ids).transpose(1, 2)           # (B, E, L)
        x = F.relu(self.conv1(x))                           # (B, C1, L)
        x = F.relu(self.conv2(x))                           # (B, C2, L)
        return self.fc2(self.fc1(x.flatten(1)))             # (B, C2*L) -> (B, H) -> (B, K)
