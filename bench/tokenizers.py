#!/usr/bin/env python
"""Tokenizer benchmarks on the real news corpus (a script, not a test).

    python bench/tokenizers.py                       # all three measurements
    python bench/tokenizers.py --skip-reference      # without the slow reference trainer

1. The book's reference BPE trainer vs the fast trainer, 50,000 words -> 2,000 vocabulary, in the
   same process: the speed ratio and whether the merge lists are identical. (target >= 300x)
2. The fast trainer on 500,000 words -> 5,000 vocabulary: seconds. (target <= 1.2 s)
3. GPT-2 encoding throughput on news/train.txt, one thread, warm piece cache. (target >= 7 MB/s)

Wall-clock times are the best of --repeats runs; CPU seconds of the same run are shown too,
because on a shared machine the wall clock also counts time spent waiting for a core.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lm.tokenizers.bpe import BPETokenizer  # noqa: E402
from lm.tokenizers.gpt2 import GPT2Tokenizer  # noqa: E402


def timed(fn, repeats: int):
    """(result, best wall seconds, CPU seconds of that run) over `repeats` calls."""
    best = None
    for _ in range(repeats):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if best is None or wall < best[0]:
            best = (wall, cpu)
    return out, best[0], best[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the BPE trainers and GPT-2 encoding on real news text.")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"),
                   help="data folder holding news/train.txt (default: ../shared/data)")
    p.add_argument("--gpt2-dir", default=str(REPO.parent / "shared" / "gpt2"),
                   help="folder with GPT-2's vocab.json + merges.txt (default: ../shared/gpt2)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each fast measurement; the best counts (default 5)")
    p.add_argument("--ref-words", type=int, default=50_000, help="words for the reference comparison (default 50000)")
    p.add_argument("--ref-vocab", type=int, default=2_000, help="vocabulary for the reference comparison (default 2000)")
    p.add_argument("--big-words", type=int, default=500_000, help="words for the fast-trainer timing (default 500000)")
    p.add_argument("--big-vocab", type=int, default=5_000, help="vocabulary for the fast-trainer timing (default 5000)")
    p.add_argument("--skip-reference", action="store_true", help="skip the slow reference trainer (minutes)")
    args = p.parse_args(argv)

    train_path = Path(args.data_dir) / "news" / "train.txt"
    if not train_path.is_file():
        p.error(f"{train_path} not found (use --data-dir)")
    text = train_path.read_text(encoding="utf-8")
    words = text.split()
    print(f"news/train.txt: {len(text.encode('utf-8')) / 1e6:.2f} MB, {len(words):,} words")

    # 1. reference vs fast
    if not args.skip_reference:
        small = words[:args.ref_words]
        fast, f_wall, f_cpu = timed(lambda: BPETokenizer.train(small, args.ref_vocab), args.repeats)
        ref, r_wall, r_cpu = timed(lambda: BPETokenizer.train_reference(small, args.ref_vocab), 1)
        print(f"[1] {len(small):,} words -> {args.ref_vocab:,} vocab: reference {r_wall:.1f}s (cpu {r_cpu:.1f}s), "
              f"fast {f_wall:.3f}s (cpu {f_cpu:.3f}s): {r_wall / f_wall:.0f}x wall, {r_cpu / f_cpu:.0f}x cpu; "
              f"merges identical: {fast.merges == ref.merges} ({len(fast.merges)} merges)   target >= 300x")

    # 2. fast trainer, big
    big = words[:args.big_words]
    tok, b_wall, b_cpu = timed(lambda: BPETokenizer.train(big, args.big_vocab), args.repeats)
    print(f"[2] fast trainer {len(big):,} words -> {args.big_vocab:,} vocab: {b_wall:.3f}s (cpu {b_cpu:.3f}s), "
          f"{len(tok.merges)} merges   target <= 1.2s")

    # 3. GPT-2 encoding throughput
    gpt2_dir = Path(args.gpt2_dir)
    if not (gpt2_dir / "vocab.json").is_file():
        print(f"[3] skipped: no GPT-2 files in {gpt2_dir}")
        return 0
    gpt2 = GPT2Tokenizer.from_dir(gpt2_dir)
    mb = len(text.encode("utf-8")) / 1e6
    cold, c_wall, c_cpu = timed(lambda: gpt2.encode(text), 1)
    ids, e_wall, e_cpu = timed(lambda: gpt2.encode(text), args.repeats)
    assert ids == cold and gpt2.decode(ids) == text
    print(f"[3] GPT-2 encode news/train.txt ({len(ids):,} tokens): cold {mb / c_wall:.1f} MB/s, "
          f"warm {mb / e_wall:.1f} MB/s wall ({mb / e_cpu:.1f} MB/s cpu)   target >= 7 MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
