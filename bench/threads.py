#!/usr/bin/env python
"""Is `run_all.py --threads 1` faster? Training-step speed of the quick models by torch CPU threads.

For each model of the quick stages (the chapter-3 RNN and chapter-4 decoder of rnn_lm / decoder_lm,
the small GPT-2 of gpt2_pretrain, at their --quick sizes) it times full training steps (forward,
backward, AdamW) on random tokens with 1, 2, ... threads up to torch's default, the thread counts
timed in alternation so load from other processes hits them alike, best of --rounds. It prints
tokens/s and the ratio against torch's default thread count, measured in the same process.

    python bench/threads.py                  # all three models, 1 .. default threads
    python bench/threads.py --models rnn --steps 20 --rounds 5
"""
from __future__ import annotations

import argparse
import time

import torch

from lm.models.gpt2 import GPT2, GPT2Config
from lm.training.engine import TrainConfig, lm_loss, make_optimizer
from lm.pretraining.pretrain import build_lm

# model -> (builder, batch, context): the --quick sizes of the stages
MODELS = {
    "rnn": (lambda: build_lm("rnn", 2000), 32, 30),
    "transformer": (lambda: build_lm("transformer", 2000), 32, 30),
    "gpt2": (lambda: GPT2(GPT2Config(vocab_size=2000, n_positions=128, n_embd=128, n_layer=2, n_head=4,
                                     embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)), 32, 64),
}


def step_seconds(model, opt, batch: dict, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = lm_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    default = torch.get_num_threads()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--threads", default=None, help=f"comma-separated thread counts (default: 1..{default})")
    p.add_argument("--steps", type=int, default=10, help="training steps per timing (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="timings per thread count; the best is kept (default 3)")
    args = p.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")] if args.threads else list(range(1, default + 1))
    print(f"torch default: {default} threads; timing {counts}, {args.steps} steps x best of {args.rounds}")
    for name in args.models.split(","):
        build, batch_size, context = MODELS[name]
        torch.manual_seed(0)
        model = build()
        opt = make_optimizer(model, TrainConfig())
        ids = torch.randint(0, 2000, (batch_size, context + 1))                # (B, T + 1)
        batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}
        best = {t: float("inf") for t in counts}
        step_seconds(model, opt, batch, 2)                                     # warm-up
        for _ in range(args.rounds):
            for t in counts:                                                   # alternate: same load for all
                torch.set_num_threads(t)
                best[t] = min(best[t], step_seconds(model, opt, batch, args.steps))
        torch.set_num_threads(default)
        base = best.get(default, best[counts[-1]])
        for t in counts:
            tok_s = batch_size * context / best[t]
            print(f"{name:12s} threads {t:2d}: {tok_s:9,.0f} tokens/s   {base / best[t]:5.2f}x the default's speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
