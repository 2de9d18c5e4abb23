"""Classification metrics every emotion stage reports: accuracy and the confusion matrix.

    >>> confusion(["joy", "sadness", "joy"], ["joy", "joy", "joy"], ["joy", "sadness"])
    {'labels': ['joy', 'sadness'], 'matrix': [[2, 0], [1, 0]]}
    >>> confusion(["joy", "sadness"], ["joy", "happy!"], ["joy", "sadness"])    # a generated answer
    {'labels': ['joy', 'sadness', '(other)'], 'matrix': [[1, 0, 0], [0, 0, 1]]}
"""
from __future__ import annotations

from typing import Hashable, Sequence

from lm.errors import ConfigError

OTHER = "(other)"   # confusion-matrix column for a prediction that is none of the labels


def accuracy(true: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Fraction of positions where `pred` equals `true`."""
    if len(true) != len(pred):
        raise ConfigError(f"accuracy: {len(true)} true labels but {len(pred)} predictions")
    if not true:
        raise ConfigError("accuracy of no examples")
    return sum(t == p for t, p in zip(true, pred)) / len(true)


def confusion(true: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> dict:
    """{"labels", "matrix"}: matrix[i][j] = examples of true label i predicted as column j.

    The columns are `labels`, plus a last "(other)" column when some prediction is none of them
    (a generated answer can be anything): it counts as wrong, and every row sums to the examples
    of its label. A classifier that predicts only `labels` gets a square matrix.
    """
    if len(true) != len(pred):
        raise ConfigError(f"confusion: {len(true)} true labels but {len(pred)} predictions")
    rows = {label: i for i, label in enumerate(labels)}
    columns = list(labels) + ([OTHER] if any(p not in rows for p in pred) else [])
    matrix = [[0] * len(columns) for _ in labels]
    for t, p in zip(true, pred):
        if t not in rows:
            raise ConfigError(f"confusion: true label {t!r} is not one of {list(labels)}")
        matrix[rows[t]][rows.get(p, len(labels))] += 1
    return {"labels": columns, "matrix": matrix}
