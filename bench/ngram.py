#!/usr/bin/env python
"""Benchmark: the book's dict-of-dicts count model vs our NumPy counts, same data, same process.

Both train an order-n model on the first 90 % of the Brown tokens and compute the book's test
perplexity on the rest; both must print the same perplexity. We report the wall-clock ratio
(ours / book, best of --repeat runs) and the ratio of peak traced memory (tracemalloc, which sees
Python objects and NumPy buffers alike). Targets: time <= 1/3, peak memory <= 1/2.

    python bench/ngram.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

from lm.data.loaders import book_split, data_file, read_text
from lm.ngram.kneser_ney import KneserNeyLM
from lm.ngram.backoff import BookReferenceLM, CountLM
from lm.ngram.counts import NGramCounts, tokenize

REPO = Path(__file__).resolve().parents[1]


def run_book(train, test, n):
    """The book's algorithm: nested dicts of string tuples, a Python loop per token."""
    model = BookReferenceLM(n)
    model.train(train)
    return model.perplexity(test)


def run_ours(train, test, n):
    """Ours: integer ids, sorted packed keys, vectorised backoff."""
    return CountLM(NGramCounts.build(train, n)).perplexity(test)


def timed(fn, *args, repeat=1):
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, result


def peak_memory(fn, *args):
    """Peak bytes allocated while fn runs (tracemalloc), after freeing everything it returned."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    gc.collect()
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Time and peak memory of the book's n-gram model vs ours on Brown.")
    default_dir = REPO.parent / "shared" / "data"
    p.add_argument("--data-dir", default=str(default_dir if default_dir.is_dir() else REPO / "data"),
                   help="data folder holding brown/brown.txt (default ../shared/data, else the embedded data/)")
    p.add_argument("--n", type=int, default=5, help="n-gram order (default 5, as in the book)")
    p.add_argument("--repeat", type=int, default=1, help="timing runs per implementation; the best counts (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs (they are slow for the book's code)")
    args = p.parse_args(argv)

    tokens = tokenize(read_text(data_file(args.data_dir, "brown/brown.txt")))
    train, test = book_split(tokens, 0.9)
    print(f"Brown: {len(train):,} train / {len(test):,} test tokens, n = {args.n}")

    t_book, ppl_book = timed(run_book, train, test, args.n, repeat=args.repeat)
    t_ours, ppl_ours = timed(run_ours, train, test, args.n, repeat=args.repeat)
    counts = NGramCounts.build(train, args.n)
    t_kn, ppl_kn = timed(lambda: KneserNeyLM(counts).perplexity(test))
    print(f"book dict-of-dicts : {t_book:7.2f} s   perplexity {ppl_book:.4f}")
    print(f"ours (numpy)       : {t_ours:7.2f} s   perplexity {ppl_ours:.4f}")
    print(f"  + Kneser-Ney on the same counts: {t_kn:.2f} s, perplexity {ppl_kn:.2f}")
    same = abs(ppl_book - ppl_ours) <= 1e-9 * ppl_book
    print(f"same perplexity    : {same}")
    ratio_t = t_ours / t_book
    print(f"time ratio ours/book   : {ratio_t:.3f}  (target <= 0.333) {'ok' if ratio_t <= 1 / 3 else 'MISSED'}")
    ok = same and ratio_t <= 1 / 3
    if not args.no_memory:
        del counts
        m_book = peak_memory(run_book, train, test, args.n)
        m_ours = peak_memory(run_ours, train, test, args.n)
        ratio_m = m_ours / m_book
        print(f"peak memory book {m_book / 2**20:8.1f} MiB, ours {m_ours / 2**20:8.1f} MiB")
        print(f"memory ratio ours/book : {ratio_m:.3f}  (target <= 0.5) {'ok' if ratio_m <= 0.5 else 'MISSED'}")
        ok = ok and ratio_m <= 0.5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
