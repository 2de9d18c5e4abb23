"""Classification metrics every emotion stage reports: accuracy and the confusion matrix.

    >>> confusion(["joy", "sadness", "joy"], ["joy", "joy", "joy"], ["joy", "sadness"])
    {'labels': ['joy', 'sadness'], 'matrix': [[2, 0], [1, 0]]}
"""
from __future__ import annotations

from typing import Hashable, Sequence

from lm.errors import ConfigError


def accuracy(true: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Fraction of positions where `pred` equals `true`."""
    if len(true) != len(pred):
        raise ConfigError(f"accuracy: {len(true)} true labels but {len(pred)} predictions")
    if not true:
        raise ConfigError("accuracy of no examples")
    return sum(t == p for t, p in zip(true, pred)) / len(true)


def confusion(true: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> dict:
    """{"labels", "matrix"}: matrix[i][j] = examples of true label i predicted as label j.

    A prediction outside `labels` (e.g. a generated answer that is no label) is not counted in
    any column, so a row can sum to less than its examples.
    """
    if len(true) != len(pred):
        raise ConfigError(f"confusion: {len(true)} true labels but {len(pred)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, pred):
        if t not in index:
            raise ConfigError(f"confusion: true label {t!r} is not one of {list(labels)}")
        if p in index:
            matrix[index[t]][index[p]] += 1
    return {"labels": list(labels), "matrix": matrix}
