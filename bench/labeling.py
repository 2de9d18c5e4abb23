#!/usr/bin/env python
"""Benchmark: the labelling hot paths against their plain versions, in one process.

1. LM scoring (`lm.labeling.lm_score.LMScorer`): documents batched (two forward passes per batch,
   the prompt's keys/values shared by its candidates) vs one document at a time (`score`) vs the
   reference (every prompt + candidate sequence run on its own, `score_reference`).
2. TF-IDF cosine (`lm.labeling.tfidf.cosine`): sparse rows restricted to the label words vs the
   dense (N, V) @ (V, L) product.

Models have random weights (speed does not care); the documents and taxonomy are the embedded
toy data. Prints seconds and ratios; checks the fast paths give the same numbers.

    python bench/labeling.py
    python bench/labeling.py --docs 200 --k 10 --n-embd 256 --n-layer 4
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lm.data.loaders import EMBEDDED_DIR
from lm.labeling.candidates import candidate_lists, label_cosines
from lm.labeling.documents import document_text, load_corpus
from lm.labeling.lm_score import LMScorer
from lm.labeling.tfidf import TfidfVectorizer, cosine
from lm.models.gpt2 import GPT2, GPT2Config
from lm.tokenizers.gpt2 import GPT2Tokenizer


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description="Labelling hot paths vs their plain versions.")
    p.add_argument("--docs", type=int, default=64, help="documents scored (default 64)")
    p.add_argument("--k", type=int, default=5, help="candidates per document (default 5)")
    p.add_argument("--n-embd", type=int, default=128, help="model width (default 128, the quick GPT-2)")
    p.add_argument("--n-layer", type=int, default=2, help="blocks (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="timings per variant; the best is kept (default 3)")
    a = p.parse_args()
    torch.manual_seed(0)
    docs, tax, _ = load_corpus(EMBEDDED_DIR)
    docs = docs[: a.docs]
    tok = GPT2Tokenizer.train([document_text(d) for d in docs] + tax.texts, 1000)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=a.n_embd, n_layer=a.n_layer,
                            n_head=4)).eval()
    cands = candidate_lists(label_cosines(TfidfVectorizer(), docs, tax), tax, a.k)
    sc = LMScorer(model, tok, tax)
    ids = [[sc.candidate_ids(q) for q in c] for c in cands]
    prompts = [sc.prompt_ids(d) for d in docs]

    batched = best(lambda: list(sc.label_many(docs, cands)), a.repeat)
    single = best(lambda: [sc.score(p, c) for p, c in zip(prompts, ids)], a.repeat)
    reference = best(lambda: [sc.score_reference(p, c) for p, c in zip(prompts, ids)], 1)
    diff = max(float(np.abs(x - sc.score_reference(p, c)).max())
               for x, p, c in zip(sc.score_batch(prompts[:8], ids[:8]), prompts[:8], ids[:8]))
    print(f"LM scoring, {len(docs)} documents x {a.k} candidates, width {a.n_embd}, {a.n_layer} layers:")
    print(f"  batched {batched:.3f} s | one document at a time {single:.3f} s ({single / batched:.1f}x) | "
          f"reference {reference:.3f} s ({reference / batched:.1f}x); max |diff| {diff:.2e}")

    v = TfidfVectorizer().fit([document_text(d) for d in docs] + tax.texts)
    A, B = v.transform([document_text(d) for d in docs] * 20), v.transform(tax.texts)
    sparse = best(lambda: cosine(A, B), a.repeat)
    dense = best(lambda: A.dense() @ B.dense().T, a.repeat)
    err = float(np.abs(cosine(A, B) - A.dense() @ B.dense().T).max())
    print(f"TF-IDF cosine, {len(A)} x {len(B)} over {A.n_cols} words: sparse {sparse * 1e3:.1f} ms | "
          f"dense {dense * 1e3:.1f} ms ({dense / sparse:.1f}x); max |diff| {err:.1e}")


if __name__ == "__main__":
    main()
