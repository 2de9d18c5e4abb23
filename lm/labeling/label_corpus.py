"""The book's labelling workflow end to end, shared by the stage and the command line.

    docs, taxonomy, truth = load_corpus(data_dir)
    scores = label_cosines(TfidfVectorizer(), docs, taxonomy)       # (N, L) cosines
    run = label_corpus(docs, taxonomy, labellers, scores, k, cache, truth=truth)
    run.labels        # {doc id: majority qcode or None}
    run.metrics       # coverage, agreement, kappa, per-labeller coverage (+ accuracy on toy data)

1. candidates: the embedder (TF-IDF or GPT-2) keeps the k closest leaves per document;
2. every labeller answers every document (cached, resumable: `lm.labeling.ask_all.ask_all`);
3. a document's label is the majority answer with at least `min_votes` votes (default the book's
   n // 2 + 1), else None.

`local_labellers` builds the offline labellers by name:

    tfidf        nearest label by TF-IDF cosine (with TF-IDF candidates: the first candidate)
    gpt2_embed   nearest label by mean-pooled GPT-2 states (centered)
    lm_score     the (instruction-tuned) GPT-2 scoring each candidate's text after the document
    lm_generate  the (instruction-tuned) GPT-2 writing the ID after the book's prompt (3 attempts)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.labeling.answers import AnswerCache
from lm.labeling.ask_all import ask_all
from lm.labeling.candidates import candidate_lists, recall_report
from lm.labeling.documents import document_text
from lm.labeling.embeddings import GPT2Embedder
from lm.labeling.ensemble import agreement_report, book_min_votes, vote_all
from lm.labeling.labeller import Labeller, NearestLabel
from lm.labeling.lm_generate import LMGenerator
from lm.labeling.lm_score import LMScorer
from lm.labeling.taxonomy import Taxonomy
from lm.labeling.tfidf import TfidfVectorizer
from lm.models.auto import GPT2_FAMILY

LOCAL = ("tfidf", "gpt2_embed", "lm_score", "lm_generate")
NEEDS_MODEL = {"gpt2_embed", "lm_score", "lm_generate"}
GPT2_EMBEDDER = GPT2_FAMILY.model_type   # the GPT-2 embedder is named after its family (--candidates, metric keys)
EMBEDDERS = ("tfidf", GPT2_EMBEDDER)


def make_embedder(kind: str, model=None, tokenizer=None):
    """A fresh (unfitted) embedder: "tfidf" or GPT2_EMBEDDER (centered mean-pooled states of `model`)."""
    if kind == "tfidf":
        return TfidfVectorizer()
    if kind == GPT2_EMBEDDER:
        if model is None:
            raise ConfigError("the gpt2 embedder needs a GPT-2 model (--gpt2 FOLDER)")
        return GPT2Embedder(model, tokenizer, center=True)
    raise ConfigError(f"unknown embedder {kind!r} (known: {', '.join(EMBEDDERS)})")


def local_labellers(names: Sequence[str], taxonomy: Taxonomy, docs: Sequence[Abstract], model=None, tokenizer=None,
                    score_normalize: str = "sum", generate_template: str = "book", seed: int = 0,
                    embedders: dict | None = None, instruct_model=None) -> list[Labeller]:
    """The named offline labellers (see the module docstring).

    `instruct_model`: the model lm_score and lm_generate ask (the instruction-tuned labelling
    model, `lm.labeling.instruct`, with `tokenizer`); default `model`.
    The nearest-label labellers use `embedders["tfidf"]` / `embedders[GPT2_EMBEDDER]` when given (already
    fitted, e.g. those that picked the candidates), else new ones fitted on `docs` + label texts.
    """
    unknown = [n for n in names if n not in LOCAL]
    if unknown:
        raise ConfigError(f"unknown local labeller(s) {unknown} (known: {', '.join(LOCAL)})")
    if model is None and NEEDS_MODEL & set(names):
        raise ConfigError(f"labellers {sorted(NEEDS_MODEL & set(names))} need a GPT-2 model (--gpt2 FOLDER)")
    texts = [document_text(d) for d in docs] + taxonomy.texts
    asked = instruct_model if instruct_model is not None else model
    out: list[Labeller] = []
    for name in names:
        if name in ("tfidf", "gpt2_embed"):
            kind = "tfidf" if name == "tfidf" else GPT2_EMBEDDER
            emb = (embedders or {}).get(kind) or make_embedder(kind, model, tokenizer).fit(texts)
            out.append(NearestLabel(emb, taxonomy, name))
        elif name == "lm_score":
            out.append(LMScorer(asked, tokenizer, taxonomy, name, normalize=score_normalize))
        else:
            out.append(LMGenerator(asked, tokenizer, taxonomy, name, template=generate_template, seed=seed))
    return out


@dataclass
class LabelRun:
    candidates: list[list[str]]                   # per document, best first
    answers: dict[str, dict[str, str | None]]     # labeller -> doc id -> answer
    labels: dict[str, str | None]                 # doc id -> majority label
    min_votes: int                                # votes a label needed
    metrics: dict = field(default_factory=dict)   # see label_corpus


def label_corpus(docs: Sequence[Abstract], taxonomy: Taxonomy, labellers: Sequence[Labeller], scores: np.ndarray,
                 k: int, cache: AnswerCache, truth: dict[str, str] | None = None, min_votes: int | None = None,
                 quiet: bool | None = None) -> LabelRun:
    """Candidates (the k best leaves by `scores`, (N, L) from `label_cosines`), answers, votes, metrics.

    metrics: `coverage` (share of documents with a majority label), `agreement` and `kappa`
    (mean over labeller pairs), `labellers` ({name: {coverage[, accuracy_vs_truth]}}), `pairs`,
    `by_min_votes` (coverage [and accuracy] of the vote at every threshold), and with `truth`:
    `candidate_recall` (true leaf among the k candidates), `ensemble_accuracy_vs_truth` (on the
    documents with a label), `best_single_accuracy_vs_truth` (the best labeller's accuracy on those
    same documents: what the vote is for is beating it) and `best_single_labeller`.
    """
    if not labellers:
        raise ConfigError("give at least one labeller")
    min_votes = min_votes or book_min_votes(len(labellers))
    if min_votes > len(labellers):
        raise ConfigError(f"min_votes {min_votes} is more than the {len(labellers)} labellers")
    candidates = candidate_lists(scores, taxonomy, k)
    seconds: dict[str, float] = {}
    answers = ask_all(labellers, docs, candidates, cache, quiet=quiet, seconds=seconds)
    ids = [d.id for d in docs]
    labels = vote_all(answers, ids, min_votes)
    rep = agreement_report(answers, ids)
    metrics: dict = {
        "documents": len(docs), "k": min(k, len(taxonomy)), "min_votes": min_votes,
        "coverage": round(sum(v is not None for v in labels.values()) / len(ids), 4),
        "agreement": rep["mean_agreement"], "kappa": rep["mean_kappa"],
        "labellers": {name: {"coverage": c} for name, c in rep["coverage"].items()},
        "pairs": rep["pairs"], "seconds_per_labeller": seconds,
    }
    metrics["by_min_votes"] = {}                   # the trade-off the threshold makes: coverage vs precision
    for m in range(1, len(labellers) + 1):
        vm = labels if m == min_votes else vote_all(answers, ids, m)
        got = [d for d in ids if vm[d] is not None]
        row = {"coverage": round(len(got) / len(ids), 4)}
        if truth is not None:
            row["accuracy_vs_truth"] = round(float(np.mean([vm[d] == truth[d] for d in got])), 4) if got else None
        metrics["by_min_votes"][str(m)] = row
    if truth is not None:
        metrics["candidate_recall"] = recall_report(scores, taxonomy, docs, truth, [k])[f"recall@{k}"]
        for name, a in answers.items():
            metrics["labellers"][name]["accuracy_vs_truth"] = round(float(np.mean([a[d] == truth[d] for d in ids])), 4)
        labelled = [d for d in ids if labels[d] is not None]
        metrics["ensemble_accuracy_vs_truth"] = (
            round(float(np.mean([labels[d] == truth[d] for d in labelled])), 4) if labelled else None)
        if labelled:
            on_kept = {name: float(np.mean([a[d] == truth[d] for d in labelled])) for name, a in answers.items()}
            best = max(on_kept, key=lambda name: (on_kept[name], name))
            metrics["best_single_labeller"] = best
            metrics["best_single_accuracy_vs_truth"] = round(on_kept[best], 4)
            for name, acc in on_kept.items():
                metrics["labellers"][name]["accuracy_on_labelled"] = round(acc, 4)
    return LabelRun(candidates, answers, labels, min_votes, metrics)
