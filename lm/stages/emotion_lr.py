"""Stage emotion_lr (book 5.3.1, `emotion_classifier_LR.ipynb`): bag of words + logistic regression.

The book's baseline emotion classifier, in its two settings, trained on emotion/train.jsonl:

    accuracy         10,000 binary unigrams          (book: 0.8855 test, 0.9854 train)
    accuracy_bigram  20,000 unigram+bigram counts    (book: 0.8910 test, 0.9962 train)

both with a multinomial logistic regression, L2, C = 1 (scikit-learn's defaults, fitted here by
our L-BFGS: `lm.finetune.baselines`). `accuracy` is on `eval_split` (test.jsonl when the data dir
has one, else valid.jsonl; nothing is chosen on it), `accuracy_valid` always on valid.jsonl.
The sizes are the book's in --quick and --full alike: the fit takes about a second.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lm.finetune.baselines import BagOfWords, LogisticRegression
from lm.finetune.emotion import load_emotion_data
from lm.finetune.metrics import accuracy, confusion
from lm.stages import EMOTION_FILES, RunConfig
from lm.utils import say

DATA_FILES = EMOTION_FILES
NEEDS_GPT2 = False
KEY_METRICS = ["accuracy", "accuracy_bigram", "eval_split"]


@dataclass
class Settings:
    max_features: int = 10_000          # the book's baseline: the 10k most frequent unigrams, binary
    bigram_max_features: int = 20_000   # the book's second setting: 20k unigrams + bigrams, counts
    C: float = 1.0                      # inverse L2 strength (scikit-learn's default, the book's)
    tol: float = 1e-4                   # L-BFGS stops when max |gradient of objective / N| <= tol
    max_iter: int = 1000                # L-BFGS iteration cap (the book's max_iter)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    data = load_emotion_data(data_dir)
    train, valid, evaluation, split = data.train, data.valid, data.eval, data.eval_split
    texts, labels = [e.text for e in train], [e.label for e in train]
    labels_shown = sorted(set(labels) | {e.label for e in evaluation})
    majority = Counter(labels).most_common(1)[0][0]
    metrics: dict = {"eval_split": split, "train_examples": len(train), "eval_examples": len(evaluation),
                     "majority_accuracy": accuracy([e.label for e in evaluation], [majority] * len(evaluation))}
    settings = {"": dict(max_features=s.max_features, binary=True),
                "_bigram": dict(max_features=s.bigram_max_features, ngram_range=(1, 2))}
    for suffix, kw in settings.items():
        t0 = time.perf_counter()
        bow = BagOfWords(**kw)
        X = bow.fit_transform(texts)
        t1 = time.perf_counter()
        clf = LogisticRegression(C=s.C, tol=s.tol, max_iter=s.max_iter).fit(X, labels)
        t2 = time.perf_counter()
        pred = {name: clf.predict(bow.transform([e.text for e in data]))
                for name, data in [("train", train), ("eval", evaluation), ("valid", valid)]}
        true_eval = [e.label for e in evaluation]
        metrics.update({
            f"accuracy{suffix}": accuracy(true_eval, pred["eval"]),
            f"accuracy{suffix}_valid": accuracy([e.label for e in valid], pred["valid"]),
            f"accuracy{suffix}_train": accuracy(labels, pred["train"]),
            f"confusion{suffix}": confusion(true_eval, pred["eval"], labels_shown),
            f"features{suffix}": len(bow.features_),
            f"lbfgs_iterations{suffix}": clf.n_iter_,
            f"grad_norm{suffix}": clf.grad_norm_,
            f"vectorize_seconds{suffix}": round(t1 - t0, 3),
            f"fit_seconds{suffix}": round(t2 - t1, 3),
        })
        also = f", {metrics[f'accuracy{suffix}_valid']:.4f} on valid" if split != "valid" else ""
        say(f"emotion_lr{suffix or ' (unigram)'}: {kw} -> accuracy {metrics[f'accuracy{suffix}']:.4f} on {split}{also}; "
            f"fit {t2 - t1:.2f} s, {clf.n_iter_} L-BFGS iterations")
    return metrics
