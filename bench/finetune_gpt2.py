#!/usr/bin/env python
"""Fine-tuning GPT-2: SFT training tokens/s, and LoRA against full fine-tuning at GPT-2 124M shapes.

1. SFT tokens/s: training steps (forward, backward, AdamW) of the engine's `lm_loss` on a
   right-padded prompt/completion batch (real tokens per second, padding not counted).
2. LoRA vs full fine-tuning, random weights at GPT-2 124M shapes (12 layers, width 768, vocab
   50,257): trainable parameters, gradient + AdamW state bytes (counted from the optimizer after a
   step), step time (alternating, median), and peak memory: on CUDA `max_memory_allocated`, on the
   CPU the peak resident size (VmHWM) of a fresh child process per mode, minus its size before
   training (not ru_maxrss: Linux carries that over from the parent across exec).
   Prints ratios LoRA / full; the target is trainable parameters + optimizer state under 5 %.
   Nothing is asserted: times on a shared machine move; ratios are what to read.

    python bench/finetune_gpt2.py                       # CPU, 124M shapes, batch 4 x 128 tokens
    python bench/finetune_gpt2.py --device cuda --batch 16 --seq 512
    python bench/finetune_gpt2.py --small               # a 2-layer model: seconds, for a smoke run
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm.finetune.lora import LoRAConfig, add_lora, count_parameters  # noqa: E402
from lm.finetune.sft import SFTExamples  # noqa: E402
from lm.models.gpt2 import GPT2, GPT2Config  # noqa: E402
from lm.training.engine import TrainConfig, lm_loss, make_optimizer  # noqa: E402
from lm.utils import choose_device  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_config(a) -> GPT2Config:
    if a.small:
        return GPT2Config(vocab_size=2000, n_positions=256, n_embd=128, n_layer=2, n_head=4)
    return GPT2Config()   # GPT-2 124M: 12 layers, width 768, vocab 50,257, 1,024 positions


def sft_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict:
    """Right-padded SFT batch: lengths between seq/2 and seq, the first third of each a prompt."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g).tolist()
    seqs = [torch.randint(0, vocab, (n + 1,), generator=g).tolist() for n in lengths]
    return SFTExamples.from_token_ids(seqs, [max(1, n // 3) for n in lengths], pad_id=0).collate(range(batch))


def alternate(steps: dict, repeat: int, warmup: int, device) -> dict:
    """Median seconds of each step function, called in alternation (A, B, A, B, ...)."""
    times: dict = {k: [] for k in steps}
    for i in range(warmup + repeat):
        for name, fn in steps.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def train_step(model, opt, loss_fn, batch):
    def step():
        loss, _ = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(mode: str, a, device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT2(model_config(a)).to(device).train()
    if mode == "lora":
        add_lora(model, LoRAConfig(r=a.r, alpha=2 * a.r, target_modules=a.targets.split(",")))
    return model, make_optimizer(model, TrainConfig())


def state_bytes(model, opt) -> dict:
    """Bytes of the gradients and of AdamW's state (after a step), and the trainable parameter count."""
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    optim = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)
    return {"trainable": count_parameters(model)[0], "total": count_parameters(model)[1], "grad_bytes": grads,
            "optimizer_bytes": optim}


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def child(mode: str, a) -> None:
    """Run in a fresh process: train `mode` a few steps and print its memory as JSON."""
    device = choose_device(a.device)
    model, opt = build(mode, a, device)
    batch = {k: v.to(device) for k, v in sft_batch(model.config.vocab_size, a.batch, a.seq).items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_rss()
    for _ in range(2):
        train_step(model, opt, lm_loss, batch)()
    sync(device)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else peak_rss())
    print(json.dumps({"peak_bytes": peak, "before_bytes": before, "training_bytes": peak - before,
                      **state_bytes(model, opt)}))


def main() -> None:
    p = argparse.ArgumentParser(description="SFT tokens/s, and LoRA vs full fine-tuning time and memory.")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--small", action="store_true", help="a 2-layer, width-128 model instead of GPT-2 124M shapes")
    p.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    p.add_argument("--seq", type=int, default=128, help="longest sequence in the batch (default 128)")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = 2r, as the book's 16/32)")
    p.add_argument("--targets", default="c_attn", help="LoRA target modules, comma-separated (default c_attn)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        return child(a.child, a)
    device = choose_device(a.device)
    cfg = model_config(a)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {a.batch} x up to {a.seq} tokens, "
          f"GPT-2 {'small (2 x 128)' if a.small else '124M shapes'}, random weights")

    # memory first, each mode in a fresh process
    mem = {}
    for mode in ("full", "lora"):
        args = [sys.executable, __file__, "--child", mode, "--device", a.device, "--batch", str(a.batch),
                "--seq", str(a.seq), "--r", str(a.r), "--targets", a.targets, "--threads", str(a.threads)]
        out = subprocess.run(args + (["--small"] if a.small else []), capture_output=True, text=True, check=True)
        mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])

    # 1. SFT training tokens/s (full fine-tuning)
    full, opt = build("full", a, device)
    batch = {k: v.to(device) for k, v in sft_batch(cfg.vocab_size, a.batch, a.seq).items()}
    tokens = int(batch["attention_mask"].sum())

    # 2. LoRA vs full fine-tuning: step time (same process, alternating)
    lora, lopt = build("lora", a, device)
    t = alternate({"full": train_step(full, opt, lm_loss, batch), "lora": train_step(lora, lopt, lm_loss, batch)},
                  a.steps, a.warmup, device)
    for mode in ("full", "lora"):
        print(f"SFT training, {mode:4s} fine-tuning: {tokens / t[mode]:10,.0f} real tokens/s ({t[mode] * 1000:.1f} ms/step)")
    sb = {"full": state_bytes(full, opt), "lora": state_bytes(lora, lopt)}
    del full, opt, lora, lopt
    mb = 2 ** 20
    for mode in ("full", "lora"):
        s, m = sb[mode], mem[mode]
        print(f"{mode:5s} trainable {s['trainable']:>12,} of {s['total']:,}  grads+AdamW "
              f"{(s['grad_bytes'] + s['optimizer_bytes']) / mb:8.1f} MB  step {t[mode] * 1000:8.1f} ms  "
              f"peak {m['peak_bytes'] / mb:8.1f} MB (training adds {m['training_bytes'] / mb:8.1f} MB)")
    state = {k: sb[k]["trainable"] * 4 + sb[k]["optimizer_bytes"] for k in sb}
    print(f"LoRA / full: trainable parameters {sb['lora']['trainable'] / sb['full']['trainable']:.2%}, "
          f"trainable + optimizer state {state['lora'] / state['full']:.2%} (target < 5%), "
          f"step time {t['lora'] / t['full']:.2f}x, peak memory {mem['lora']['peak_bytes'] / mem['full']['peak_bytes']:.2f}x, "
          f"memory added by training {mem['lora']['training_bytes'] / max(mem['full']['training_bytes'], 1):.2f}x")


if __name__ == "__main__":
    main()
