#!/usr/bin/env python
"""Training speed of the chapter-4 decoder LM: fast vs the book's literal attention, same run.

For each formulation it times full training steps (forward, backward, AdamW) on random tokens
(the two timed in alternation, so load from other processes hits both alike) and prints
tokens/s, the ratio fast / literal, and the achieved FLOP/s as a fraction of a matmul
peak measured in the same process (a large square matmul, same device and dtype). With --rnn it
also times the chapter-3 RNN, fast stack vs the book's loop.

FLOPs per token of a training step are counted the usual way: 6 x (matmul parameters: blocks and
output matrix; the embedding is a lookup) + 6 x blocks x context x width for the attention scores
and their weighted sums (counted as a full, not causal, square).

    python bench/train_speed.py --threads 1          # book shapes, 8k vocab, CPU (1 thread: steadiest on a busy box)
    python bench/train_speed.py --device cuda --batch 256
"""
from __future__ import annotations

import argparse
import time

import torch

from lm.models.rnn import RecurrentLanguageModel, RNNConfig
from lm.training.engine import TrainConfig, lm_loss, make_optimizer
from lm.models.transformer import DecoderConfig, DecoderLanguageModel
from lm.utils import choose_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """FLOP/s of an n x n @ n x n matmul, best of repeated timings."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        reps = 10 if device.type == "cuda" else 2
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def compare_steps_per_second(models: dict, batch: dict, steps: int, warmup: int, device, amp) -> dict:
    """Median training steps/s of each model, timed in alternation (A, B, A, B, ...).

    Alternating means a busy shared machine slows every model alike, so the ratio stays fair.
    """
    opts = {name: make_optimizer(m, TrainConfig()) for name, m in models.items()}
    timings: dict = {name: [] for name in models}
    for i in range(warmup + steps):
        for name, model in models.items():
            sync(device)
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, _ = lm_loss(model, batch)
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            sync(device)
            if i >= warmup:
                timings[name].append(time.perf_counter() - t)
    return {name: 1.0 / sorted(ts)[len(ts) // 2] for name, ts in timings.items()}


def decoder_flops_per_token(m: DecoderLanguageModel, context: int) -> float:
    matmul_params = sum(p.numel() for n, p in m.named_parameters() if p.dim() == 2 and not n.startswith("embedding"))
    return 6 * matmul_params + 6 * m.config.num_blocks * context * m.config.emb_dim


def main() -> None:
    p = argparse.ArgumentParser(description="Tokens/s of the decoder LM: fast vs literal attention, and FLOP/s vs a matmul peak.")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--vocab", type=int, default=8000, help="vocabulary size (default 8000)")
    p.add_argument("--emb-dim", type=int, default=128, help="embedding width (book: 128)")
    p.add_argument("--heads", type=int, default=8, help="attention heads (book: 8)")
    p.add_argument("--blocks", type=int, default=2, help="decoder blocks (book: 2)")
    p.add_argument("--context", type=int, default=30, help="tokens per sequence (book: 30)")
    p.add_argument("--batch", type=int, default=64, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul peak measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--bf16", action="store_true", help="autocast forward passes to bfloat16 (peak measured in bf16 too)")
    p.add_argument("--rnn", action="store_true", help="also time the chapter-3 RNN, fast stack vs the book's loop")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = choose_device(a.device)
    torch.manual_seed(0)
    x = torch.randint(0, a.vocab, (a.batch, a.context + 1), device=device)
    batch = {"input_ids": x[:, :-1], "targets": x[:, 1:]}
    tokens = a.batch * a.context

    ref = DecoderLanguageModel(DecoderConfig(a.vocab, a.emb_dim, a.heads, a.blocks, attention="reference")).to(device)
    fast = ref.converted("fast").to(device)
    with torch.no_grad():
        diff = (fast(batch["input_ids"]) - ref(batch["input_ids"])).abs().max().item()
    flops_tok = decoder_flops_per_token(fast, a.context)
    peak = matmul_peak(device, torch.bfloat16 if a.bf16 else torch.float32, a.peak_size, 2.0)

    print(f"device {device}, threads {torch.get_num_threads()}, batch {a.batch} x context {a.context}, "
          f"vocab {a.vocab}, width {a.emb_dim}, heads {a.heads}, blocks {a.blocks}{', bf16' if a.bf16 else ''}")
    print(f"fast vs literal logits: max |diff| {diff:.2e}")
    print(f"matmul peak ({a.peak_size}^2): {peak / 1e9:,.1f} GFLOP/s; model {flops_tok / 1e6:.2f} MFLOP per token (train step)")
    sps = compare_steps_per_second({"literal attention": ref, "fast attention": fast}, batch, a.steps, a.warmup,
                                   device, a.bf16)
    for name, s in sps.items():
        achieved = s * tokens * flops_tok
        print(f"{name:20s} {s * tokens:12,.0f} tokens/s  {achieved / 1e9:8.1f} GFLOP/s  "
              f"{achieved / peak:6.1%} of matmul peak")
    print(f"fast / literal: {sps['fast attention'] / sps['literal attention']:.2f}x")

    if a.rnn:
        book = RecurrentLanguageModel(RNNConfig(a.vocab, a.emb_dim, a.blocks)).to(device)
        book.reference = True
        quick = RecurrentLanguageModel(RNNConfig(a.vocab, a.emb_dim, a.blocks)).to(device)
        quick.load_state_dict(book.state_dict())
        out = compare_steps_per_second({"RNN book loop": book, "RNN fast stack": quick}, batch, a.steps, a.warmup,
                                       device, a.bf16)
        for name, s in out.items():
            print(f"{name:20s} {s * tokens:12,.0f} tokens/s")
        print(f"RNN fast / book loop: {out['RNN fast stack'] / out['RNN book loop']:.2f}x")


if __name__ == "__main__":
    main()
