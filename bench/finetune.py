#!/usr/bin/env python
"""Benchmark: the book's logistic-regression baselines (5.3.1), ours against scikit-learn's, same process.

For the book's two settings (10,000 binary unigrams; 20,000 unigram+bigram counts) it builds the
training matrix once with our `BagOfWords` and fits, in alternation, best of --repeat:

    ours        lm.finetune.baselines.LogisticRegression (our L-BFGS, hand-written gradient, torch CSR)
    torch       the same objective minimised by torch.optim.LBFGS (strong Wolfe line search)
    sklearn     sklearn.linear_model.LogisticRegression(random_state=42, max_iter=1000), the book's
                call, on the very same matrix (only when scikit-learn is importable: it is not a
                project dependency; install it elsewhere, e.g. `pip install --target /tmp/sk
                scikit-learn` and run with PYTHONPATH=$PWD:/tmp/sk)

and prints fit seconds, iterations, validation accuracy, and, as a common yardstick, our
objective (scikit-learn's / N) and its largest gradient component at each solution. Targets:
ours at most half scikit-learn's time, accuracy within 0.3 %. With scikit-learn it also times
CountVectorizer against BagOfWords and counts how many kept features the two share (they differ
only among features tied at the cut-off count; see BagOfWords).

    python bench/finetune.py --data-dir ../shared/data
    PYTHONPATH=$PWD:/tmp/sk python bench/finetune.py --data-dir ../shared/data --threads 1
"""
from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import torch

from lm.data.loaders import data_file, load_emotion, resolve_data_dir
from lm.finetune.baselines import BagOfWords, LogisticRegression, as_csr, label_ids, multinomial_objective

try:  # optional: the baseline we compare against, never a dependency
    import scipy.sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression as SKLogisticRegression
except ImportError:
    SKLogisticRegression = None
try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

SETTINGS = {"unigram": dict(max_features=10_000, binary=True),
            "bigram": dict(max_features=20_000, ngram_range=(1, 2))}


def check(X, y, classes, W, b, C=1.0):
    """Our objective / N and its largest gradient component at (W (d, k), b (k,))."""
    X64 = as_csr(X, torch.float64)
    f, gW, gb = multinomial_objective(W.double(), b.double(), X64, as_csr(X64.t(), torch.float64),
                                      label_ids(y, classes), C)
    return float(f), float(torch.cat([gW.reshape(-1), gb]).abs().max())


def fit_ours(X, y, tol):
    m = LogisticRegression(tol=tol).fit(X, y)
    return {"W": m.coef_.t(), "b": m.intercept_, "iters": m.n_iter_, "predict": m.predict}


def fit_torch_lbfgs(X, y, tol):
    """The same objective through torch.optim.LBFGS: gradients set by hand, stopping on the gradient only."""
    classes = sorted(set(y))
    X64 = as_csr(X, torch.float64)
    Xt = as_csr(X64.t(), torch.float64)
    targets = label_ids(y, classes)
    W = torch.zeros(X.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=1000, max_eval=5000, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        f, gW, gb = multinomial_objective(W.detach(), b.detach(), X64, Xt, targets, 1.0)
        W.grad, b.grad = gW, gb
        return f

    opt.step(closure)
    iters = opt.state[opt._params[0]]["n_iter"]

    def predict(Xv):
        return [classes[i] for i in (as_csr(Xv, torch.float64) @ W.detach() + b.detach()).argmax(1).tolist()]
    return {"W": W.detach(), "b": b.detach(), "iters": iters, "predict": predict}


def to_scipy(X: torch.Tensor):
    X = X.to_sparse_csr()
    return scipy.sparse.csr_matrix((X.values().numpy(), X.col_indices().numpy(), X.crow_indices().numpy()),
                                   shape=tuple(X.shape))


def fit_sklearn(X, y, tol):
    """X: the scipy CSR copy of our matrix (converted outside the timed fit)."""
    m = SKLogisticRegression(random_state=42, max_iter=1000, tol=tol).fit(X, y)
    return {"W": torch.from_numpy(m.coef_.T.copy()), "b": torch.from_numpy(m.intercept_.copy()),
            "iters": int(m.n_iter_[0]), "predict": lambda Xv: list(m.predict(to_scipy(Xv)))}


def main() -> None:
    p = argparse.ArgumentParser(description="Logistic regression fit time: ours vs scikit-learn's, same matrix.")
    p.add_argument("--data-dir", default=None, help="data folder with emotion/train.jsonl and valid.jsonl "
                                                    "(default: $LM_DATA_DIR or the embedded data/)")
    p.add_argument("--repeat", type=int, default=3, help="timed fits per solver (best is reported)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and scikit-learn (default 1)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="gradient tolerance (largest component, objective / N) for every solver; default 1e-4, "
                        "scikit-learn's and ours")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if threadpool_limits is not None:   # scikit-learn's OpenMP loops: the same thread count
        threadpool_limits(args.threads)

    data_dir = resolve_data_dir(args.data_dir)
    train = load_emotion(data_file(data_dir, "emotion/train.jsonl"))
    valid = load_emotion(data_file(data_dir, "emotion/valid.jsonl"))
    texts, y = [e.text for e in train], [e.label for e in train]
    vtexts, vy = [e.text for e in valid], [e.label for e in valid]
    classes = sorted(set(y))
    print(f"data: {data_dir} ({len(train)} train, {len(valid)} valid); threads {args.threads}; "
          f"scikit-learn {'found' if SKLogisticRegression else 'not installed: comparing ours and torch only'}")

    solvers = {"ours": fit_ours, "torch": fit_torch_lbfgs}
    if SKLogisticRegression is not None:
        solvers["sklearn"] = fit_sklearn
    for name, kw in SETTINGS.items():
        t0 = time.perf_counter()
        bow = BagOfWords(**kw)
        X = bow.fit_transform(texts)
        Xv = bow.transform(vtexts)
        t_bow = time.perf_counter() - t0
        line = f"\n== {name}: {kw} -> X {tuple(X.shape)}, {X.values().numel():,} non-zeros; BagOfWords {t_bow:.2f} s"
        if SKLogisticRegression is not None:
            t0 = time.perf_counter()
            cv = CountVectorizer(**kw).fit(texts)
            cv.transform(vtexts)
            t_cv = time.perf_counter() - t0
            shared = len(set(cv.vocabulary_) & set(bow.features_))
            line += f", CountVectorizer {t_cv:.2f} s (ratio {t_bow / t_cv:.2f}); features shared {shared}/{len(bow.features_)}"
        print(line)
        X_scipy = to_scipy(X) if "sklearn" in solvers else None
        wall = {n: float("inf") for n in solvers}
        cpu = {n: float("inf") for n in solvers}
        results = {}
        for _ in range(args.repeat):
            for n, fn in solvers.items():   # in alternation: machine load hits every solver alike
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                results[n] = fn(X_scipy if n == "sklearn" else X, y, args.tol)
                wall[n] = min(wall[n], time.perf_counter() - t0)
                cpu[n] = min(cpu[n], time.process_time() - c0)
        print(f"tolerance {args.tol:g}; best of {args.repeat}: wall seconds, and CPU seconds (steadier on a busy machine)")
        print(f"{'solver':8s} {'wall s':>7s} {'cpu s':>7s} {'iters':>6s} {'objective/N':>14s} {'max|grad|':>10s} {'valid acc':>9s}")
        acc = {}
        for n, r in results.items():
            f, g = check(X, y, classes, r["W"], r["b"])
            acc[n] = float(np.mean(np.array(r["predict"](Xv)) == np.array(vy)))
            print(f"{n:8s} {wall[n]:7.3f} {cpu[n]:7.3f} {r['iters']:6d} {f:14.10f} {g:10.2e} {acc[n]:9.4f}")
        print(f"ours / torch.optim.LBFGS: wall {wall['ours'] / wall['torch']:.2f}, cpu {cpu['ours'] / cpu['torch']:.2f}")
        if "sklearn" in results:
            print(f"ours / sklearn: wall {wall['ours'] / wall['sklearn']:.2f}, cpu {cpu['ours'] / cpu['sklearn']:.2f} "
                  f"(target <= 0.5); accuracy ours - sklearn: {acc['ours'] - acc['sklearn']:+.4f} (target within 0.003)")


if __name__ == "__main__":
    main()
