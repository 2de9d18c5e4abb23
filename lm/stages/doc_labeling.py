"""Stage doc_labeling (the book's document_classifier_with_LLMs_as_labelers): label, vote, train.

The book labels 20,500 arXiv abstracts with IPTC leaves by asking five hosted LLMs (3 of 5 must
agree), folds rare labels into "Other" and trains a classifier on the result. Offline, with our
own models (`lm.labeling`):

1. candidates: TF-IDF and GPT-2 embeddings each rank the leaves for every document; on the toy
   data (which knows each abstract's true leaf) the recall of the truth among the k candidates
   is measured for both, and the configured one (TF-IDF, the better) picks the candidates;
2. the labelling model: the GPT-2 instruction-tuned on the labelled documents of
   `arxiv/instruct.jsonl` (never the documents labelled here; `lm.labeling.instruct`), once per
   run in RUN/pretrained/labeller; without that file (the real data) the base GPT-2 is asked;
3. three local labellers of three kinds answer every document: nearest label by TF-IDF
   (embedding), the labelling model scoring each candidate's label text (LM scoring), the
   labelling model writing the ID after the book's prompt (generation, 3 attempts); a label
   needs the book's n // 2 + 1 votes, more than half (`gpt2_embed`, nearest label by GPT-2
   states, can be added in `labellers`);
4. coverage, agreement and Cohen's kappa of the labellers; on the toy data their accuracy, the
   vote's accuracy and the best single labeller's on the same documents, and the trade-off
   every vote threshold makes between coverage and accuracy;
5. the labels (rare ones folded into "Other") train two classifiers on the training documents:
   bag-of-words logistic regression and GPT-2 with a classification head (the book: roberta-base;
   ours starts from the labelling model, as the book's LoRA classifier starts from an instruction
   model, `head_from`), scored on held-out documents against the ensemble's labels and, on the toy data, the true
   topics. The top-level accuracies are the GPT-2 head's (the book's kind of classifier); the
   regression's are in `classifiers`.

Every answer is cached in OUT/answers.jsonl, so rerunning the stage in the same folder resumes.
The GPT-2 is `choose_base(cfg, data_dir)`'s: a --model (or --gpt2) GPT-2 folder, used as it is with
the book's learning rate, or the small one of this run.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import book_shuffle, book_split, data_file, optional_file
from lm.labeling.answers import AnswerCache
from lm.labeling.candidates import label_cosines, recall_report
from lm.finetune.baselines import BagOfWords, LogisticRegression
from lm.finetune.classifier import ClassificationExamples, classification_loss, classifier_from_lm, predict
from lm.finetune.base_model import BaseModel, train_config
from lm.finetune.epochs import train_by_epoch
from lm.finetune.metrics import accuracy, confusion
from lm.labeling.documents import ABSTRACTS, TAXONOMY, document_text, load_corpus
from lm.labeling.ensemble import OTHER, fold_rare
from lm.labeling.instruct import INSTRUCT, LabelTuneConfig, load_instruct, tune_labeller
from lm.labeling.label_corpus import EMBEDDERS, label_corpus, local_labellers, make_embedder
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, for_base, quick_full
from lm.stages.gpt2_pretrain import choose_base
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.utils import atomic_write_json, choose_device, say, torch_threads

DATA_FILES = [ABSTRACTS, TAXONOMY]
NEEDS_GPT2 = True
KEY_METRICS = ["coverage", "ensemble_accuracy_vs_truth", "best_single_accuracy_vs_truth", "accuracy_vs_labels",
               "accuracy_vs_truth", "lm_generate_valid"]


@dataclass
class Settings:
    documents: int | None = quick_full(400, None)     # documents labelled, a seeded sample (None: all; toy: 400)
    candidate_share: float = 0.09                     # candidates per document as a share of the leaves (book: 100 of 1,136)
    max_candidates: int = quick_full(20, 100)         # ... at most (the book's 100)
    candidates: str = "tfidf"                         # embedder that picks the candidates (better recall on the toy data)
    labellers: list = quick_full(["tfidf", "lm_score", "lm_generate"],
                                 ["tfidf", "lm_score", "lm_generate"])   # local labellers (lm.labeling.label_corpus)
    min_votes: int | None = None                      # votes a label needs (None: the book's labellers // 2 + 1)
    score_normalize: str = "sum"                      # lm_score's comparison: sum | mean | pmi (sum: best on the toy data)
    # the labelling model (lm.labeling.instruct), when the data dir has arxiv/instruct.jsonl
    tune_examples: int | None = quick_full(2000, None)  # labelled documents it is tuned on (None: all)
    tune_epochs: float = 1.5                          # passes over them
    tune_lr: float = 3e-3                             # peak learning rate (our small GPT-2)
    tune_batch: int = 8                               # examples per step
    tune_score_share: float = 0.3                     # documents also taught as lm_score asks (label text after it)
    tune_positions: int | None = None                 # its window, stretched (lm.labeling.instruct.extend_positions; None: the base's)
    test_share: float = 0.25                          # held-out documents (the book: 500 of 20,500; ours more, to measure)
    min_docs: int = 3                                 # fold labels with fewer training documents into "Other" (book: 20 of 17,715)
    # classifier A: bag of words + logistic regression (lm.finetune.baselines)
    bow_features: int = 10_000                        # most frequent words kept (the book's emotion LR: 10,000)
    lr_C: float = 1.0                                 # inverse L2 strength (scikit-learn's default, the book's)
    # classifier B: GPT-2 with a classification head (lm.finetune.classifier; the book: roberta-base)
    head_from: str = "labeller"                       # its transformer: "labeller" (the labelling model, when tuned) or "base"
    head_epochs: int = quick_full(6, 20)              # passes over the labelled training documents (the book: 20)
    head_batch: int = 8                               # documents per step (the book: 32; ours has ~300 documents)
    head_lr: float = 2e-3                             # peak rate, cosine after warm-up (our small GPT-2)
    head_warmup: int = 10                             # warm-up steps
    head_threads: int | None = 1                      # torch threads while training our small GPT-2 (--threads overrides;
                                                      # its small steps ran 30x slower with 2 threads on a busy machine)
    # real weights (--model / --gpt2): in place of the fields above (`lm.stages.for_base`)
    real_head_lr: float = 5e-5                        # the book's rate, constant
    real_head_threads: int | None = None              # torch's choice


def n_candidates(s: Settings, n_leaves: int) -> int:
    """k: the book's share of the leaves (toy: 30 leaves -> 3), at least 2, at most max_candidates."""
    return max(2, min(s.max_candidates, round(s.candidate_share * n_leaves)))


def scores_of(name: str, pred: dict[str, str], test: dict[str, str], test_ids: list[str],
              truth: dict[str, str] | None, classes: list[str]) -> dict:
    """Accuracy of `pred` against the ensemble's labels (labelled test documents), against the truth
    (all test documents, when known), and the confusion matrix (rows = ensemble label)."""
    labelled = [d for d in test_ids if d in test]
    out: dict = {"classifier": name}
    if labelled:
        out["accuracy_vs_labels"] = round(accuracy([test[d] for d in labelled], [pred[d] for d in labelled]), 4)
        out["confusion"] = confusion([test[d] for d in labelled], [pred[d] for d in labelled], classes)
    if truth is not None:
        out["accuracy_vs_truth"] = round(accuracy([truth[d] for d in test_ids], [pred[d] for d in test_ids]), 4)
    return out


def bow_lr(train: dict[str, str], texts: dict[str, str], test_ids: list[str], s: Settings) -> dict[str, str]:
    """Classifier A: bag-of-words logistic regression on the labelled training documents."""
    bow = BagOfWords(max_features=s.bow_features)
    clf = LogisticRegression(C=s.lr_C).fit(bow.fit_transform([texts[d] for d in train]), list(train.values()))
    return dict(zip(test_ids, clf.predict(bow.transform([texts[d] for d in test_ids]))))


def gpt2_head(folder: Path, tok, train: dict[str, str], test: dict[str, str], texts: dict[str, str],
              test_ids: list[str], classes: list[str], s: Settings, cfg: RunConfig, out_dir: Path,
              real: bool) -> tuple[dict[str, str], dict]:
    """Classifier B: the GPT-2's transformer with a new `score` head, fine-tuned on the labelled
    training documents; predictions for every test document, and accuracy (against the ensemble's
    labels) after every epoch. `real`: real weights, trained at the book's constant rate."""
    device = choose_device(cfg.device)
    model = classifier_from_lm(folder, classes, pad_token_id=tok.eot_id, device=device)

    def examples(ids: list[str], labels: list[str]) -> ClassificationExamples:
        with warnings.catch_warnings():        # abstracts longer than the window keep their end (counted below)
            warnings.simplefilter("ignore")
            return ClassificationExamples([texts[d] for d in ids], labels, tok, model.config)
    train_ex = examples(list(train), list(train.values()))
    held = [d for d in test_ids if d in test]
    val_ex = examples(held, [test[d] for d in held]) if held else train_ex
    all_ex = examples(test_ids, [test.get(d, classes[0]) for d in test_ids])   # labels unused: prediction only
    last: dict = {}

    def score(m) -> dict:
        last["pred"] = dict(zip(test_ids, (classes[i] for i in predict(m, all_ex))))
        return {"accuracy": accuracy([test[d] for d in held], [last["pred"][d] for d in held]) if held else None}
    tcfg = train_config(real, s.head_lr, min(s.head_batch, len(train_ex)), s.head_warmup, None, cfg.device,
                        cfg.seed)
    with torch_threads(cfg.threads or s.head_threads):
        res = train_by_epoch(model, train_ex, val_ex, tcfg, s.head_epochs, out_dir / "gpt2_head",
                             loss_fn=classification_loss, score=score, desc="doc_labeling head")
    return last["pred"], {"accuracy_per_epoch": [e["accuracy"] for e in res["per_epoch"]],
                          "loss_per_epoch": res["loss_per_epoch"], "truncated_examples": train_ex.truncated,
                          "steps": res.get("steps")}


def labelling_model(cfg: RunConfig, s: Settings, base: BaseModel, data_dir: Path, out_dir: Path, docs, taxonomy,
                    k: int) -> tuple[Path, dict]:
    """The folder of the model lm_score and lm_generate ask, and what to report about it: the base
    instruction-tuned on arxiv/instruct.jsonl (cached in RUN/pretrained/labeller), or the base itself
    when the data dir has no instruction data or real weights were given (--model)."""
    if base.real or not optional_file(data_dir, INSTRUCT):
        why = "--model weights are used as they are" if base.real else f"no {INSTRUCT} in the data dir"
        return base.folder, {"tuned": False, "why": why}
    cache = (Path(cfg.run_dir) / "pretrained" if cfg.run_dir is not None else out_dir) / "labeller"
    t0 = time.perf_counter()
    ex_docs, ex_truth = load_instruct(data_file(data_dir, INSTRUCT), taxonomy, docs)
    tune = LabelTuneConfig(examples=s.tune_examples, epochs=s.tune_epochs, batch_size=s.tune_batch, lr=s.tune_lr,
                           score_share=s.tune_score_share, positions=s.tune_positions)
    with torch_threads(cfg.threads):     # larger steps than the head's: both cores help
        folder = tune_labeller(base.folder, ex_docs, ex_truth, taxonomy, k, cache, tune, seed=cfg.seed,
                               device=cfg.device)
    info = json.loads((folder / "labeller.json").read_text(encoding="utf-8"))
    return folder, {"tuned": True, "folder": str(folder), "documents": info["documents"], "steps": info["steps"],
                    "train_loss": round(info["train_loss"], 4), "seconds_tuning": info["seconds"],
                    "seconds": round(time.perf_counter() - t0, 2)}


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    device = choose_device(cfg.device)
    docs, taxonomy, truth = load_corpus(data_dir, s.documents)
    base = choose_base(cfg, data_dir, gpt2_only=True)
    s, folder = for_base(s, base.real), base.folder
    model, tok = GPT2.from_pretrained(folder, device=device), GPT2Tokenizer.from_dir(folder)
    k = n_candidates(s, len(taxonomy))
    say(f"doc_labeling: {len(docs)} documents, {len(taxonomy)} leaves ({taxonomy.prefix}:), {k} candidates each")

    # 1. candidates, and both embedders' recall of the truth where it is known
    t0 = time.perf_counter()
    embedders = {kind: make_embedder(kind, model, tok) for kind in EMBEDDERS}     # TF-IDF and the model's states
    scores = {kind: label_cosines(emb, docs, taxonomy) for kind, emb in embedders.items()}     # (N, L) each
    metrics: dict = {"seconds_candidates": round(time.perf_counter() - t0, 2), "base_model": str(folder)}
    if truth is not None:
        ks = sorted({1, k, 10})
        recall = {kind: recall_report(sc, taxonomy, docs, truth, ks) for kind, sc in scores.items()}
        metrics["candidate_recall_by_embedder"] = recall
        metrics["candidate_embedder_best"] = max(recall, key=lambda kind: recall[kind][f"recall@{k}"])

    # 2. the labelling model
    tuned_folder, metrics["labelling_model"] = labelling_model(cfg, s, base, data_dir, out_dir, docs, taxonomy, k)
    tuned = model if tuned_folder == folder else GPT2.from_pretrained(tuned_folder, device=device)

    # 3-4. labellers, vote, agreement
    t0 = time.perf_counter()
    labellers = local_labellers(s.labellers, taxonomy, docs, model, tok, s.score_normalize, seed=cfg.seed,
                                embedders=embedders, instruct_model=tuned)
    with AnswerCache(out_dir / "answers.jsonl") as cache:
        lab = label_corpus(docs, taxonomy, labellers, scores[s.candidates], k, cache, truth=truth,
                           min_votes=s.min_votes, quiet=cfg.quiet)
    metrics.update(lab.metrics, candidates=s.candidates, seconds_labelling=round(time.perf_counter() - t0, 2))
    if "lm_generate" in metrics["labellers"]:    # the share of documents given a valid ID (3 attempts)
        metrics["lm_generate_valid"] = metrics["labellers"]["lm_generate"]["coverage"]

    # 5. the classifier's data: train/test split, rare labels folded
    train_docs, test_docs = book_split(book_shuffle(docs), 1 - s.test_share)
    train = {d.id: lab.labels[d.id] for d in train_docs if lab.labels[d.id] is not None}
    test = {d.id: lab.labels[d.id] for d in test_docs if lab.labels[d.id] is not None}
    train, test, kept = fold_rare(train, test, s.min_docs)
    metrics.update(train_labelled=len(train), test_labelled=len(test), classes=len(kept) + (OTHER in train.values()),
                   other_share_train=round(sum(v == OTHER for v in train.values()) / max(len(train), 1), 4))
    atomic_write_json(out_dir / "labels.json", {"train": train, "test": test, "kept": kept})
    for name, m in metrics["labellers"].items():
        say(f"  {name:12s} " + " ".join(f"{key}={v}" for key, v in m.items()))

    # 6. classifiers trained on the ensemble's labels, scored on the held-out documents
    classes = kept + ([OTHER] if OTHER in train.values() or OTHER in test.values() else [])
    texts = {d.id: document_text(d) for d in docs}
    test_ids = [d.id for d in test_docs]
    if len(set(train.values())) < 2:
        metrics["note"] = (f"{len(train)} training documents with {len(set(train.values()))} label(s): too few "
                           "for a classifier (the labellers rarely agree on this data)")
        return metrics
    t0 = time.perf_counter()
    lr_result = scores_of("bow_lr", bow_lr(train, texts, test_ids, s), test, test_ids, truth, classes)
    lr_result["seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    backbone = tuned_folder if s.head_from == "labeller" else folder
    metrics["head_from"] = str(backbone)
    pred, extra = gpt2_head(backbone, tok, train, test, texts, test_ids, classes, s, cfg, out_dir, base.real)
    head = {**scores_of("gpt2_head", pred, test, test_ids, truth, classes), **extra,
            "seconds": round(time.perf_counter() - t0, 2)}
    metrics["classifiers"] = {"bow_lr": lr_result, "gpt2_head": head}
    metrics.update({k: v for k, v in head.items() if k not in ("seconds", "steps", "loss_per_epoch")})
    if "accuracy_vs_labels" in metrics:    # the book's figure (0.7931) is this one: against the LLMs' labels
        metrics["accuracy"] = metrics["accuracy_vs_labels"]
    return metrics
