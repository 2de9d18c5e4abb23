#!/usr/bin/env python
"""Benchmark: KV-cache vs uncached generation, batch 1 and 8, against the memory-bandwidth limit.

Decoding one token at batch 1 must read every weight once, so its speed is bounded by memory
bandwidth: tokens/s <= bandwidth / weight bytes per token. We measure the bandwidth in the same
process (best of several full reads of a buffer much larger than the caches), before and after
every timing, because on a shared VM it changes by phases (we have seen 33 and 55 GB/s minutes
apart); the limit printed uses the highest bandwidth seen in the run, so a busy neighbour cannot
flatter the result. A batch of B rows reads the weights once for B tokens, so it should scale
almost linearly until compute, not memory, is the bottleneck.

Decode speed is measured as (time for 1 + N new tokens - time for 1 new token) / N steps, so the
prompt's forward pass (prefill) is not counted. Models have random weights; speed does not care.

Also: the load time of a 124M-parameter safetensors checkpoint by our reader vs `torch.load`
of the same tensors (both files are in the page cache after being written; "touch" = read every byte).

Targets (issue 6): batch-1 fp32 within 10 % of the bandwidth limit; batch 8 >= 5x batch 1.

    python bench/generate.py                         # CPU: GPT-2 124M, small, and Qwen2.5-0.5B's shapes
    python bench/generate.py --configs qwen2.5-0.5b --dtype bfloat16
    python bench/generate.py --device cuda --new-tokens 64
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lm.checkpoints.safetensors import load_safetensors
from lm.inference.generate import generate
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.fast_linear import linear
from lm.models.qwen2 import Qwen2, Qwen2Config

CONFIGS = {   # name -> (family, config arguments)
    "124M": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)),
    "small": ("gpt2", dict(vocab_size=8000, n_positions=256, n_embd=256, n_layer=4, n_head=4)),
    # Qwen2.5-0.5B: hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864, vocab 151936, tied
    "qwen2.5-0.5b": ("qwen2", dict()),
}


def build(name: str) -> torch.nn.Module:
    family, kwargs = CONFIGS[name]
    return GPT2(GPT2Config(**kwargs)) if family == "gpt2" else Qwen2(Qwen2Config(**kwargs))


def embedding(model) -> torch.Tensor:
    return model.transformer.wte.weight if isinstance(model, GPT2) else model.model.embed_tokens.weight


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeat: int) -> float:
    """The shortest of `repeat` timings of `fn()` (the device synchronised around each)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def measure_bandwidth(device: torch.device, mbytes: int, repeat: int = 5) -> float:
    """Read bandwidth in bytes/s: best time to sum a `mbytes` MB float32 buffer."""
    buf = torch.ones(mbytes * 2**20 // 4, dtype=torch.float32, device=device)
    buf.sum()                                                            # warm-up
    return buf.numel() * 4 / best_seconds(buf.sum, device, repeat)


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decoding step reads: every parameter once, except GPT-2's position
    table (one row is read) -- a tied embedding is read in full by the LM head."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if not isinstance(model, GPT2):
        return total
    wpe = model.transformer.wpe.weight
    return total - wpe.numel() * wpe.element_size()


class Bandwidth:
    """Memory read bandwidth, probed again and again during the run; `best` is the highest seen."""

    def __init__(self, device: torch.device, mbytes: int):
        self.device, self.mbytes, self.seen = device, mbytes, []

    def probe(self) -> float:
        self.seen.append(measure_bandwidth(self.device, self.mbytes))
        return self.seen[-1]

    @property
    def best(self) -> float:
        return max(self.seen)


def matmul_floor_tokens_per_s(model, device: torch.device, kernel, repeat: int = 5) -> float:
    """Batch-1 tokens/s if a decoding step were nothing but its matrix-vector products (`kernel` on
    every weight matrix, LM head included): what the matmul kernels alone allow, without attention,
    norms or Python glue. The gap between this and the bandwidth limit is the kernels' own."""
    mats = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if getattr(model, "lm_head", None) is None:
        mats.append(embedding(model))                                    # the tied LM head reads it
    xs = {w.shape[1]: torch.randn(1, 1, w.shape[1], device=device, dtype=w.dtype) for w in mats}

    def step():
        for w in mats:
            kernel(xs[w.shape[1]], w)
    step()                                                               # warm-up
    return 1.0 / best_seconds(step, device, repeat)


def decode_tokens_per_s(model, batch, prompt_len, new_tokens, use_cache, device, repeat) -> float:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    generate(model, prompt, 2, use_cache=use_cache)                     # warm-up
    t1 = best_seconds(lambda: generate(model, prompt, 1, use_cache=use_cache), device, repeat)
    tn = best_seconds(lambda: generate(model, prompt, 1 + new_tokens, use_cache=use_cache), device, repeat)
    return batch * new_tokens / max(tn - t1, 1e-9)


def bench_generation(args, device, bw: Bandwidth):
    dtype = getattr(torch, args.dtype)
    for name in args.configs.split(","):
        torch.manual_seed(0)
        model = build(name).to(device=device, dtype=dtype).eval()
        wb = weight_bytes_per_token(model)
        heads = "" if isinstance(model, GPT2) else \
            f", {model.config.num_attention_heads} query / {model.config.num_key_value_heads} key-value heads"
        print(f"\n{name}: {model.num_parameters() / 1e6:.1f} M parameters{heads}, {wb / 2**20:.0f} MiB of weights per "
              "decoding step")
        bw.probe()
        floors = {"F.linear": matmul_floor_tokens_per_s(model, device, torch.nn.functional.linear),
                  "lm.models.fast_linear (the model's)": matmul_floor_tokens_per_s(model, device, linear)}
        results = {}
        batches = [int(b) for b in args.batches.split(",")]
        for batch in batches:
            for cache in (True, False):
                n = args.new_tokens if cache else args.uncached_tokens
                bw.probe()
                tps = decode_tokens_per_s(model, batch, args.prompt_len, n, cache, device, args.repeat)
                bw.probe()
                results[(batch, cache)] = tps
                print(f"  batch {batch:2d} {'KV cache' if cache else 'uncached':9s} {tps:10,.1f} tokens/s")
        limit = bw.best / wb
        print(f"  bandwidth seen during the run {min(bw.seen) / 1e9:.1f}-{bw.best / 1e9:.1f} GB/s -> batch-1 limit "
              f"{limit:,.1f} tokens/s (from the highest)")
        for label, floor in floors.items():
            print(f"  matmuls alone, {label:24s} {floor:8,.1f} tokens/s = {floor / limit:5.1%} of the limit")
        if 1 in batches:
            print(f"  batch 1 KV cache {results[(1, True)]:,.1f} tokens/s = {results[(1, True)] / limit:5.1%} "
                  "of the limit (target >= 90%)")
        for batch in batches:
            print(f"  batch {batch}: KV cache / uncached = {results[(batch, True)] / results[(batch, False)]:.1f}x")
        if 1 in batches and len(batches) > 1:
            top = max(batches)
            print(f"  batch {top} / batch 1 (KV cache) = {results[(top, True)] / results[(1, True)]:.1f}x "
                  f"(target >= 5x)")
        del model


def bench_load(args):
    torch.manual_seed(0)
    model = build("124M")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model.save_pretrained(d / "ckpt")
        tensors = {k: v.contiguous() for k, v in model._to_file_keys().items()}
        torch.save(tensors, d / "same.pt")
        del model
        size = (d / "ckpt" / "model.safetensors").stat().st_size

        def touch(ts):
            return sum(float(t.float().sum()) for t in ts.values())

        rows = []
        for label, fn in [
            ("ours: load_safetensors (mmap, lazy)", lambda: load_safetensors(d / "ckpt" / "model.safetensors")),
            ("ours: load_safetensors + touch", lambda: touch(load_safetensors(d / "ckpt" / "model.safetensors"))),
            ("torch.load(weights_only=True)", lambda: torch.load(d / "same.pt", weights_only=True)),
            ("torch.load + touch", lambda: touch(torch.load(d / "same.pt", weights_only=True))),
            ("ours: GPT2.from_pretrained (whole model)", lambda: GPT2.from_pretrained(d / "ckpt")),
        ]:
            rows.append((label, best_seconds(fn, torch.device("cpu"), args.repeat)))
        print(f"\nload a 124M checkpoint ({size / 2**20:.0f} MiB, files in the page cache), best of {args.repeat}:")
        base = rows[2][1]
        for label, t in rows:
            print(f"  {label:42s} {t * 1e3:9.1f} ms   ({t / base:.2f}x torch.load)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Tokens/s of KV-cache vs uncached generation (GPT-2, Qwen2), and checkpoint load time.")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    p.add_argument("--configs", default="124M,small,qwen2.5-0.5b",
                   help=f"comma-separated model sizes: {', '.join(CONFIGS)}")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt tokens per row")
    p.add_argument("--new-tokens", type=int, default=32, help="decoding steps timed with the KV cache")
    p.add_argument("--uncached-tokens", type=int, default=16, help="decoding steps timed without the cache")
    p.add_argument("--repeat", type=int, default=2, help="timings per measurement; the best is kept")
    p.add_argument("--bandwidth-mb", type=int, default=1024, help="size of the buffer read to measure bandwidth")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-load", action="store_true", help="skip the checkpoint load-time benchmark")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bw = Bandwidth(device, args.bandwidth_mb)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, dtype {args.dtype}; "
          f"read bandwidth at the start {bw.probe() / 1e9:.1f} GB/s")
    with torch.inference_mode():
        bench_generation(args, device, bw)
    if not args.no_load:
        bench_load(args)


if __name__ == "__main__":
    main()
