"""Combining labellers: a majority vote, how much they answer and agree, and rare labels as "Other".

The book asks five models and keeps a document's label only if at least `len(models) // 2 + 1`
(3 of 5) gave the same valid ID; otherwise the document has no label and is dropped. Different
labellers err differently, so an ID that several independent ones pick is likely right, and
documents on which they scatter are the doubtful ones.

    >>> majority_vote(["a", "a", "b", None, "a"], min_votes=3)
    'a'
    >>> majority_vote(["a", "a", "b", None, None], min_votes=3) is None   # 2 votes are not enough
    True
    >>> majority_vote(["a", "a", "b", "b"], min_votes=2) is None          # a tie at the top
    True

With the book's `min_votes = n // 2 + 1` two IDs can never both reach it; with a lower
threshold they can, and a tie gives no label (the book's `Counter.most_common` would keep the
first labeller's ID).

How the labellers behave, per labeller and per pair (over the documents both answered):
coverage (share of documents with a valid answer), agreement (share of identical answers) and
Cohen's kappa, agreement corrected for chance: kappa = (p_o - p_e) / (1 - p_e), where p_e is the
agreement two labellers with the same label frequencies would reach by luck.

The classifier cannot learn a class from a handful of documents: `fold_rare` maps every label
with fewer than `min_docs` training documents (the book: 20) to "Other", in training and test.
"""
from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Mapping, Sequence

from lm.errors import ConfigError

OTHER = "Other"


def book_min_votes(n_labellers: int) -> int:
    """The book's threshold: a strict majority, n // 2 + 1."""
    return n_labellers // 2 + 1


def majority_vote(answers: Sequence[str | None], min_votes: int) -> str | None:
    """The ID that at least `min_votes` answers agree on, or None (too few votes, or a tie)."""
    if min_votes < 1:
        raise ConfigError(f"min_votes must be >= 1, got {min_votes}")
    ranked = Counter(a for a in answers if a is not None).most_common(2)
    if not ranked or ranked[0][1] < min_votes:
        return None
    if len(ranked) > 1 and ranked[1][1] == ranked[0][1]:
        return None
    return ranked[0][0]


def vote_all(answers: Mapping[str, Mapping[str, str | None]], doc_ids: Sequence[str], min_votes: int
             ) -> dict[str, str | None]:
    """{doc: majority ID or None} from {labeller: {doc: answer}} (a missing answer abstains)."""
    return {d: majority_vote([a.get(d) for a in answers.values()], min_votes) for d in doc_ids}


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two equally long label sequences (1 = identical, 0 = chance level)."""
    n = len(a)
    if n == 0 or n != len(b):
        raise ConfigError(f"cohen_kappa needs two non-empty sequences of one length, got {len(a)} and {len(b)}")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e == 1.0:                 # both always say the same one label
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def agreement_report(answers: Mapping[str, Mapping[str, str | None]], doc_ids: Sequence[str]) -> dict:
    """Per-labeller coverage; per-pair agreement and kappa on the documents both answered; means."""
    coverage = {name: sum(a.get(d) is not None for d in doc_ids) / max(len(doc_ids), 1)
                for name, a in answers.items()}
    pairs = {}
    for x, y in combinations(answers, 2):
        both = [d for d in doc_ids if answers[x].get(d) is not None and answers[y].get(d) is not None]
        if not both:
            pairs[f"{x}|{y}"] = {"documents": 0, "agreement": None, "kappa": None}
            continue
        ax, ay = [answers[x][d] for d in both], [answers[y][d] for d in both]
        pairs[f"{x}|{y}"] = {"documents": len(both),
                             "agreement": round(sum(p == q for p, q in zip(ax, ay)) / len(both), 4),
                             "kappa": round(cohen_kappa(ax, ay), 4)}
    scored = [p for p in pairs.values() if p["agreement"] is not None]
    return {
        "coverage": {k: round(v, 4) for k, v in coverage.items()},
        "pairs": pairs,
        "mean_agreement": round(sum(p["agreement"] for p in scored) / len(scored), 4) if scored else None,
        "mean_kappa": round(sum(p["kappa"] for p in scored) / len(scored), 4) if scored else None,
    }


def fold_rare(train: Mapping[str, str], test: Mapping[str, str], min_docs: int = 20
              ) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Labels with fewer than `min_docs` training documents become "Other" (test: also labels
    unseen in training). Returns (train, test, kept labels sorted); min_docs <= 1 folds nothing."""
    counts = Counter(train.values())
    kept = sorted(lab for lab, n in counts.items() if n >= min_docs)
    keep = set(kept)
    fold = {d: (lab if lab in keep else OTHER) for d, lab in train.items()}
    return fold, {d: (lab if lab in keep else OTHER) for d, lab in test.items()}, kept
