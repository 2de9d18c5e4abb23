"""The labelling model: our small GPT-2, instruction-tuned to answer the book's labelling prompt.

The book's generative labellers are instruction-tuned LLMs: they read the prompt, pick one of the
candidates and write its ID. Our chapter 5 GPT-2 has only read news and toy tasks, so it writes
nothing useful after the prompt (0 valid IDs of 400). The stand-in for an instruction model is
the same base fine-tuned on labelling instructions (`tune_labeller`):

    prompt      exactly what `LMGenerator` sends (the book's prompt, or its compact form when the
                window is short) for a labelled document and its k candidates
    completion  " " + the true leaf's ID + end-of-text (the loss is on the completion only)

The documents come from `arxiv/instruct.jsonl` ({"id", "title", "abstract", "qcode"}): labelled
abstracts that are *not* among the documents the stage labels and scores (the toy generator
writes them with another seed; `load_instruct` refuses an id or a text that is also in
`arxiv/abstracts.jsonl`). The candidates are found as for the labelled documents (TF-IDF top k, on
these documents); when the truth is not among them it replaces the last one, and the order is
shuffled, so the model must read the candidates rather than copy the first (which would only
repeat the TF-IDF labeller and make the vote pointless).

The tuned model is saved as a Hugging Face folder with its tokenizer, once per run (the stage
caches it in RUN/pretrained/labeller), like the base.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from lm.data.loaders import Abstract, read_jsonl
from lm.errors import DataError
from lm.finetune.sft import SFTExamples
from lm.labeling.candidates import candidate_lists, label_cosines
from lm.labeling.lm_generate import LMGenerator
from lm.labeling.lm_score import LMScorer
from lm.labeling.taxonomy import Taxonomy
from lm.labeling.tfidf import TfidfVectorizer
from lm.models.gpt2 import GPT2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.engine import TrainConfig, train

INSTRUCT = "arxiv/instruct.jsonl"   # labelled documents for the labelling model (never the evaluated ones)
DONE = "labeller.json"              # written last: a folder without it is incomplete


@dataclass
class LabelTuneConfig:
    examples: int | None = 1000    # labelled documents used, in file order (None: all)
    epochs: float = 2.0            # passes over them
    batch_size: int = 16           # examples per step
    lr: float = 2e-3               # peak learning rate (our small model)
    warmup_steps: int = 10         # linear warm-up steps
    score_examples: bool = True    # also teach the label text after a document (what lm_score asks) ...
    score_share: float = 1.0       # ... for this share of the documents (the first ones)
    positions: int | None = 384    # the model's window, stretched to hold the prompt (None: the base's)


@torch.no_grad()
def extend_positions(model: GPT2, n: int) -> GPT2:
    """Give `model` a window of `n` positions by position interpolation: the learned position
    embedding, (P, C), is resampled linearly to (n, C), so position i of the new window looks like
    position i * (P - 1) / (n - 1) of the old one. Every position stays distinct and its
    neighbours similar; fine-tuning adapts the model to the slower clock. (Copying the last rows
    into the new ones instead makes positions p and p - (n - P) identical, and the tuned model then
    miscounts the repeated digits of an ID.) A no-op when n <= P."""
    old = model.transformer.wpe.weight                                    # (P, C)
    P = old.shape[0]
    if n <= P:
        return model
    rows = torch.nn.functional.interpolate(old.T[None], size=n, mode="linear", align_corners=True)[0].T   # (n, C)
    wpe = torch.nn.Embedding(n, old.shape[1], device=old.device, dtype=old.dtype)
    wpe.weight.copy_(rows)
    model.transformer.wpe = wpe
    model.config.n_positions = n
    return model


def load_instruct(path: str | os.PathLike, taxonomy: Taxonomy, evaluated: Sequence[Abstract] = ()
                  ) -> tuple[list[Abstract], dict[str, str]]:
    """Documents and true qcodes of an instruct file; an unknown qcode, or a document that is also
    among `evaluated` (same id or same text), is a DataError naming the line."""
    ids = {d.id for d in evaluated}
    texts = {(d.title, d.abstract) for d in evaluated}
    docs, truth = [], {}
    for r in read_jsonl(path, ("id", "title", "abstract", "qcode")):
        if r["qcode"] not in taxonomy:
            raise DataError(path, f"qcode {r['qcode']!r} is not a leaf of the taxonomy", r["_line"])
        if r["id"] in ids or (r["title"], r["abstract"]) in texts:
            raise DataError(path, f"document {r['id']!r} is also a document to label: instruction data "
                                  "must not contain the evaluated documents", r["_line"])
        docs.append(Abstract(r["id"], r["title"], r["abstract"]))
        truth[r["id"]] = r["qcode"]
    return docs, truth


def training_candidates(docs: Sequence[Abstract], truth: dict[str, str], taxonomy: Taxonomy, k: int,
                        seed: int) -> list[list[str]]:
    """TF-IDF top-k per document, the truth put in place of the last one when missing, shuffled."""
    r = random.Random(seed)
    out = []
    for d, cands in zip(docs, candidate_lists(label_cosines(TfidfVectorizer(), docs, taxonomy), taxonomy, k)):
        if truth[d.id] not in cands:
            cands = cands[:-1] + [truth[d.id]]
        r.shuffle(cands)
        out.append(cands)
    return out


def reply(taxonomy: Taxonomy, qcode: str) -> str:
    """What the model is taught to answer: the leaf's name, then its ID (the book's last-match rule
    takes the ID; naming the topic first lets a small model say what it read before it copies)."""
    return f" {taxonomy.leaf(qcode).path[-1]}: {qcode}"


def instruction_examples(asker: LMGenerator, docs: Sequence[Abstract], truth: dict[str, str],
                         candidates: Sequence[Sequence[str]], eos_id: int, scorer: LMScorer | None = None,
                         score_share: float = 1.0) -> SFTExamples:
    """Per document: (the generator's prompt ids, " ID" + EOS), so the model learns what it is
    asked; with `scorer` also (the scorer's prompt ids, " " + the true label text) for the first
    `score_share` of the documents, so that scoring candidates' label texts after a document
    (`LMScorer`) ranks the right one first."""
    sequences, lengths = [], []
    n_score = round(score_share * len(docs))
    for i, (d, cands) in enumerate(zip(docs, candidates)):
        p = asker.prompt_ids(d, cands)
        sequences.append(p + asker.tokenizer.encode_ordinary(reply(asker.taxonomy, truth[d.id])) + [eos_id])
        lengths.append(len(p))
        if scorer is not None and i < n_score:
            p = scorer.prompt_ids(d)
            sequences.append(p + scorer.candidate_ids(truth[d.id]))
            lengths.append(len(p))
    return SFTExamples.from_token_ids(sequences, lengths, pad_id=eos_id, context=asker.window)


def tune_labeller(base: str | os.PathLike, docs: Sequence[Abstract], truth: dict[str, str], taxonomy: Taxonomy,
                  k: int, out: str | os.PathLike, cfg: LabelTuneConfig, seed: int = 0, device: str | None = None,
                  template: str = "book") -> Path:
    """Fine-tune the GPT-2 in `base` on labelling instructions and save it in `out` (returned).

    A complete `out` (with labeller.json) is reused as it is; a half-written one is redone.
    """
    out = Path(out)
    if (out / DONE).is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model, tok = GPT2.from_pretrained(base, device=device), GPT2Tokenizer.from_dir(base)
    if cfg.positions is not None:
        extend_positions(model, cfg.positions)
    docs = list(docs[:cfg.examples] if cfg.examples is not None else docs)
    asker = LMGenerator(model, tok, taxonomy, template=template)
    scorer = LMScorer(model, tok, taxonomy) if cfg.score_examples else None
    examples = instruction_examples(asker, docs, truth, training_candidates(docs, truth, taxonomy, k, seed),
                                    tok.eot_id, scorer, cfg.score_share)
    torch.manual_seed(seed)
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, warmup_steps=cfg.warmup_steps,
                       weight_decay=0.0, device=device, seed=seed)
    metrics = train(model, examples, None, tcfg, partial / "train", desc="labeller tuning")
    model.eval()
    model.save_pretrained(partial)
    tok.save(partial)
    info = {"base": str(base), "documents": len(docs), "k": k, "template": template, "config": asdict(cfg),
            "steps": metrics["steps"], "train_loss": metrics["train_loss"], "seconds": metrics["seconds"],
            "truncated_examples": examples.truncated}
    (partial / DONE).write_text(json.dumps(info, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
