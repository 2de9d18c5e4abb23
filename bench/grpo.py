#!/usr/bin/env python
"""Benchmark: GRPO rollouts batched vs one sequence at a time, and GRPO steps on 1 vs 2 ranks.

1. Rollouts: B x G completions sampled through the one generation path as one batch (what
   `lm.rl.grpo.rollout` does) against the same number of completions generated one sequence at
   a time (what a loop over `model.generate` per completion would do). Same model, same prompts,
   the same number of new tokens (no early stop), best of `--repeat`. Target: >= 5x at B x G = 32.
2. Data parallel: `train_grpo` steps at a fixed global batch on 1 process vs 2 processes
   (`lm.rl.distributed.spawn`, gloo on the CPU), each process with `--threads` threads; step time
   and completion tokens/s over all ranks, from the runs' own metrics.jsonl.

The model is a small GPT-2 of the shape the grpo stage uses (random weights: speed does not care).

    python bench/grpo.py                      # both parts
    python bench/grpo.py --skip-ranks         # rollouts only
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lm.inference.generate import generate
from lm.inference.sampling import SamplingConfig
from lm.models.gpt2 import GPT2, GPT2Config
from lm.rl import distributed
from lm.rl.grpo import GRPOConfig, train_grpo
from lm.rl.tasks import Problem

VOCAB = 2000


class DigitTok:
    """A stand-in tokenizer (characters -> ids) so the benchmark needs no trained tokenizer."""
    vocab_size, eot_id = VOCAB, VOCAB - 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(32 + i % 90) for i in ids)


def small_gpt2(seed: int = 0) -> GPT2:
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=128, n_layer=2, n_head=4,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()


def problems(n: int = 64) -> list[Problem]:
    return [Problem(f"Hale dipped {a} lamps and then {a + 7} more. How many lamps?", str(2 * a + 7), "")
            for a in range(n)]


def time_rollouts(model: GPT2, rows: int, prompt_len: int, new_tokens: int, repeat: int) -> tuple[float, float]:
    """(seconds batched, seconds one by one) to sample `rows` completions of `new_tokens` tokens."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, VOCAB - 1, (prompt_len,), generator=g).tolist() for _ in range(rows)]
    cfg = SamplingConfig(temperature=1.0)
    best_batched = best_single = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        generate(model, prompts, new_tokens, sampling=cfg, generator=g)
        best_batched = min(best_batched, time.perf_counter() - t)
        t = time.perf_counter()
        for p in prompts:
            generate(model, [p], new_tokens, sampling=cfg, generator=g)
        best_single = min(best_single, time.perf_counter() - t)
    return best_batched, best_single


def ranks_worker(rank: int, world: int, cfg_dict: dict, threads: int, out: str) -> None:
    torch.set_num_threads(threads)
    d = distributed.init(rank, world, "cpu")
    model = small_gpt2()
    train_grpo(model, DigitTok(), problems(), GRPOConfig(**cfg_dict), out, DigitTok.eot_id, d)
    distributed.shutdown(d)


def step_stats(folder: Path) -> tuple[float, float]:
    """Median step seconds and mean tokens/s of a run's metrics.jsonl (the first step is warm-up)."""
    recs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][1:]
    secs = sorted(r["seconds"] for r in recs)
    return secs[len(secs) // 2], sum(r["tokens_per_s"] for r in recs) / len(recs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="GRPO rollouts batched vs one at a time; 1 vs 2 ranks.")
    p.add_argument("--prompts", type=int, default=4, help="B: prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt (B x G rows)")
    p.add_argument("--prompt-len", type=int, default=48, help="prompt tokens")
    p.add_argument("--new-tokens", type=int, default=48, help="completion tokens")
    p.add_argument("--repeat", type=int, default=2, help="timings per measurement (best kept)")
    p.add_argument("--steps", type=int, default=6, help="GRPO steps per rank-count run")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process in the ranks part")
    p.add_argument("--skip-ranks", action="store_true", help="only the rollout part")
    a = p.parse_args(argv)

    rows = a.prompts * a.group
    model = small_gpt2()
    batched, single = time_rollouts(model, rows, a.prompt_len, a.new_tokens, a.repeat)
    tokens = rows * a.new_tokens
    print(f"rollouts, {rows} rows x {a.new_tokens} new tokens (prompt {a.prompt_len}), {torch.get_num_threads()} threads:")
    print(f"  batched       {batched:7.3f} s  {tokens / batched:9.0f} tokens/s")
    print(f"  one at a time {single:7.3f} s  {tokens / single:9.0f} tokens/s")
    print(f"  speed-up      {single / batched:7.1f}x   (target >= 5x)")
    if a.skip_ranks:
        return
    cfg = dict(prompts_per_step=a.prompts, group_size=a.group, max_new_tokens=a.new_tokens, steps=a.steps, lr=1e-5)
    print(f"GRPO steps, global batch {a.prompts} prompts x {a.group}, {a.threads} thread(s) per rank:")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = Path(tmp) / f"w{world}"
            t = time.perf_counter()
            distributed.spawn(ranks_worker, world, cfg, a.threads, str(out))
            wall = time.perf_counter() - t
            results[world] = step_stats(out)
            print(f"  {world} rank(s): step {results[world][0]:.3f} s (median), {results[world][1]:.0f} tokens/s, "
                  f"{wall:.1f} s wall incl. start-up")
    print(f"  2 ranks / 1 rank step time: {results[2][0] / results[1][0]:.2f}x")


if __name__ == "__main__":
    main()
