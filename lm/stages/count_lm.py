"""Stage count_lm (chapter 2.5): the book's count n-gram model and Kneser-Ney on brown/brown.txt.

Tokenize with the book's regex, train on the first 90 % of the tokens, report both models' test
perplexity for n = 1..N, save and reload the counts, and continue the book's three contexts.
Quick and full both use n = 5 (counting Brown takes about a second); --full also re-runs the
book's literal dict-of-dicts code and checks it gives the same perplexity.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lm.errors import LMError
from lm.data.loaders import book_split, data_file, read_text
from lm.ngram.kneser_ney import KneserNeyLM
from lm.ngram.backoff import BookReferenceLM, CountLM
from lm.ngram.counts import NGramCounts, tokenize
from lm.stages import RunConfig, quick_full
from lm.utils import atomic_write_json, say

KEY_METRICS = ["n", "perplexity_book", "perplexity_kn"]
DATA_FILES = ["brown/brown.txt"]
NEEDS_GPT2 = False
CONTEXTS = ["i will build a", "the best place to", "she was riding a"]   # the book's examples
NEW_TOKENS = 10                                                            # as in the book


@dataclass
class Settings:
    n: int = quick_full(5, 5)                           # the book's order (counting Brown takes a second)
    book_reference: bool = quick_full(False, True)      # also run the book's literal dict-of-dicts code


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    n = s.n
    tokens = tokenize(read_text(data_file(data_dir, "brown/brown.txt")))
    train, test = book_split(tokens, 0.9)
    if len(train) < n or not test:
        raise LMError(f"{data_dir / 'brown/brown.txt'}: only {len(tokens)} tokens, too few for a 90/10 split at n={n}")
    say(f"Brown: {len(tokens):,} tokens -> {len(train):,} train / {len(test):,} test, n = {n}")

    t0 = time.perf_counter()
    counts = NGramCounts.build(train, n)
    build_s = time.perf_counter() - t0
    say(f"counted n-grams of orders 1..{n} in {build_s:.2f} s: " +
        ", ".join(f"{counts.size(k):,}" for k in range(1, n + 1)) + f" (vocab {counts.V:,})")

    table = {"n": [], "book": [], "book_normalised": [], "kn": []}
    for k in range(1, n + 1):
        book, kn = CountLM(counts, k), KneserNeyLM(counts, k)
        table["n"].append(k)
        table["book"].append(round(book.perplexity(test), 4))
        table["book_normalised"].append(round(book.perplexity(test, normalised=True), 4))
        table["kn"].append(round(kn.perplexity(test), 4))
    say(" n   book   book/normalised   Kneser-Ney")
    for row in zip(*table.values()):
        say(f" {row[0]}  {row[1]:8.2f}  {row[2]:10.2f}  {row[3]:10.2f}")

    path = out_dir / "count_lm.npz"
    counts.save(path)
    loaded = NGramCounts.load(path)
    book, kn = CountLM(loaded), KneserNeyLM(loaded)
    ppl_book, ppl_kn = book.perplexity(test), kn.perplexity(test)
    if abs(ppl_book - table["book"][-1]) > 1e-3:
        raise LMError(f"{path}: reloaded model gives perplexity {ppl_book}, expected {table['book'][-1]}")
    say(f"saved and reloaded {path.name} ({path.stat().st_size / 2**20:.1f} MiB): book {ppl_book:.2f}, KN {ppl_kn:.2f}")

    rng = np.random.default_rng(cfg.seed)
    generations = {}
    for text in CONTEXTS:
        ctx = tokenize(text)
        generations[text] = {
            "book_next_token": book.predict_next_token(ctx),
            "book_greedy": " ".join(book.generate(ctx, NEW_TOKENS)),
            "book_sampled_t0.8_top20": " ".join(book.generate(ctx, NEW_TOKENS, 0.8, 20, rng)),
            "kn_greedy": " ".join(kn.generate(ctx, NEW_TOKENS)),
            "kn_sampled_t0.8_top20": " ".join(kn.generate(ctx, NEW_TOKENS, 0.8, 20, rng)),
            "book_probability_sum": round(book.probability_sum(ctx), 4),
            "kn_probability_sum": round(float(kn.distribution(ctx).sum()), 12),
        }
        say(f"\ncontext: {text}\n  book: {generations[text]['book_greedy']}\n  KN:   {generations[text]['kn_greedy']}"
            f"\n  sum of P(w | context) over the vocabulary: book {generations[text]['book_probability_sum']:.3f},"
            f" KN {generations[text]['kn_probability_sum']:.6f}")

    metrics = {
        "n": n, "perplexity_book": ppl_book, "perplexity_kn": ppl_kn,
        "perplexity_book_normalised": table["book_normalised"][-1],
        "perplexity_table": table, "train_tokens": len(train), "test_tokens": len(test),
        "vocab_size": counts.V, "ngrams_per_order": [counts.size(k) for k in range(1, n + 1)],
        "kn_discounts": [[round(d, 4) for d in kn.D[k][1:]] for k in range(1, n + 1)],
        "build_seconds": round(build_s, 3), "model_file": path.name, "generations": generations,
    }
    if s.book_reference:
        t0 = time.perf_counter()
        ref = BookReferenceLM(n)
        ref.train(train)
        metrics["perplexity_book_reference"] = ref.perplexity(test)
        metrics["reference_seconds"] = round(time.perf_counter() - t0, 2)
        say(f"\nthe book's literal dict-of-dicts code: perplexity {metrics['perplexity_book_reference']:.4f}"
            f" in {metrics['reference_seconds']:.1f} s")
    atomic_write_json(out_dir / "perplexity_table.json", table)
    return metrics
